"""Decision time of the streaming Verifier (what listen, serve and the Wyoming gate run) with
N enrolled voices, against the same run with one voice, on the demo conversation and on two of
its turns joined 50 ms apart (alice, then a stranger: one segment that is split at the change of
speaker, the costliest decision).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python -m benchmarks.many_voices --voices 100000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from . import REPO


def run(voices: int, reps: int) -> dict:
    from rtverify.core.encoder import EncoderSession, l2_normalize
    from rtverify.core.pipeline import Verifier, embed_recording
    from rtverify.events import DecisionEvent
    from rtverify.io.sources import Chunk, FileSource

    demo = REPO / "rtverify" / "demo"
    session = EncoderSession(threads=1)
    alice = l2_normalize(sum(embed_recording(session, FileSource(demo / f)).vector
                             for f in ("enroll_1.flac", "enroll_2.flac")))
    rng = np.random.default_rng(0)
    m = rng.standard_normal((voices, session.dim)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    gallery = {f"v{i:06d}": m[i] for i in range(voices)}
    gallery["alice"] = alice
    x = np.concatenate([c.samples for c in FileSource(demo / "conversation.flac")])
    script = json.loads((demo / "conversation.json").read_text())["script"]
    turn = [x[int(t["start_s"] * 16000):int(t["end_s"] * 16000)] for t in script[:2]]
    bed = lambda n: (10 ** (-65 / 20) * rng.standard_normal(n)).astype(np.float32)  # noqa: E731
    joined = np.concatenate([bed(16000), turn[0], bed(800), turn[1][:48000], bed(16000)])
    out = {}
    for label, vp in (("one voice", {"alice": alice}), (f"{voices + 1} voices", gallery)):
        ms = {"conversation": [], "split segment": []}
        accepted = 0
        for _ in range(reps):
            for kind, stream in (("conversation", x), ("split segment", joined)):
                v = Verifier(session, vp, max_pending=1)
                events = [e for i in range(0, len(stream), 480)
                          for e in v.push(Chunk(stream[i:i + 480], i / 16000))] + v.finish()
                ds = [e for e in events if isinstance(e, DecisionEvent)]
                ms[kind] += [d.decision_ms for d in ds]
                accepted += sum(d.speaker == "alice" for d in ds)
        every = ms["conversation"] + ms["split segment"]
        out[label] = {"alice_accepted": accepted, **{
            kind: {"n": len(v), "p50_ms": round(float(np.percentile(v, 50)), 2),
                   "p95_ms": round(float(np.percentile(v, 95)), 2),
                   "max_ms": round(float(np.max(v)), 2)}
            for kind, v in (*ms.items(), ("all", every))}}
    one, many = out["one voice"], out[f"{voices + 1} voices"]
    out["p95_ratio"] = {k: round(many[k]["p95_ms"] / one[k]["p95_ms"], 2)
                        for k in ("conversation", "split segment", "all")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.many_voices")
    p.add_argument("--voices", type=int, default=100000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", help="also write the result to this JSON file")
    args = p.parse_args(argv)
    res = run(args.voices, args.reps)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
