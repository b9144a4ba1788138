"""Decision latency of CAM++ (and of the fusion of both models) against the default LSTM, in the
same run, on one thread.

    OMP_NUM_THREADS=1 python -m benchmarks.campp_latency [--data ../shared/data] [--n 40]
        [--models campp,fusion]

Each probe is a held-out LibriSpeech utterance cut to 2..10 s (uniform, seeded), fed through a
``Verifier`` with one voiceprint in 0.1 s chunks (as from a microphone, windows embedded as soon
as they complete); ``decision_ms`` is the compute from the segment's end to its decision. The
models alternate probe by probe, so load on the machine affects all alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rtverify.core.encoder import EncoderSession
from rtverify.core.pipeline import DecisionEvent, Verifier
from rtverify.io.sources import Chunk, FileSource


def probes(data: Path, n: int, seed: int = 3) -> list[np.ndarray]:
    from training.dev_lists import LIBRI, heldout_speakers  # speaker list only (no torch)

    man = {ln.split("\t")[0]: ln.split("\t")[1] for ln in
           (data / LIBRI / "MANIFEST.tsv").read_text().splitlines()[1:] if ln}
    rng = np.random.default_rng(seed)
    out = []
    for s in heldout_speakers(data)[:n]:
        x = np.concatenate([c.samples for c in FileSource(data / LIBRI / man[s])])
        out.append(x[: int(rng.uniform(2, 10) * 16000)])
    return out


def latencies(session: EncoderSession, x: np.ndarray) -> list[float]:
    from rtverify.core.scoring import VoiceVector

    voice = VoiceVector(np.eye(session.dim, dtype=np.float32)[0])
    expert = session.short_expert  # a voice holds the short expert's vector too, as enroll makes it
    if expert is not None:
        voice.companions = {expert[0].model_id: VoiceVector(
            np.eye(expert[0].dim, dtype=np.float32)[0])}
    vp = {"someone": voice}
    v = Verifier(session, vp, provisional=False)
    chunks = (Chunk(x[a:a + 1600], a / 16000) for a in range(0, len(x), 1600))
    tail = [Chunk(np.zeros(16000, dtype=np.float32), len(x) / 16000)]
    return [e.decision_ms for e in v.process(list(chunks) + tail) if isinstance(e, DecisionEvent)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--models", default="campp", help="shipped models to time against the "
                                                      "default, comma-separated")
    args = ap.parse_args()
    models = {"default": EncoderSession(threads=1)}
    models.update({m: EncoderSession(m, threads=1) for m in args.models.split(",")})
    got: dict[str, list[float]] = {m: [] for m in models}
    for x in probes(args.data, args.n):
        for m, s in models.items():
            got[m] += latencies(s, x)
    res = {m: {"decisions": len(v), "p50_ms": float(np.percentile(v, 50)),
               "p95_ms": float(np.percentile(v, 95)), "max_ms": float(np.max(v))}
           for m, v in got.items()}
    for m in models:
        if m != "default":
            res[f"{m}_over_default_p95"] = res[m]["p95_ms"] / res["default"]["p95_ms"]
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
