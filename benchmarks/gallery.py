"""Open-set identification over a large gallery, on one core (issue 14, part 3).

    .venv/bin/python -m benchmarks.gallery                  # 100 000 voices, dim 256
    .venv/bin/python -m benchmarks.gallery --pg             # + cross-instance visibility (PostgreSQL)

The process is pinned to one CPU and BLAS to one thread. Measured in the same run:

* ``gallery``: :meth:`rtverify.store.gallery.Gallery.decide` (one matrix product over the
  normalised ``(n, dim)`` float32 matrix, top-k by ``argpartition``, the model's
  ``DecisionPolicy``) per query: p50/p95/p99/max milliseconds; the target is p95 <= 20 ms;
* ``reference``: the path ``listen`` takes today for a dict of voiceprints
  (``Scorer.scores`` -> ``cosine_scores``: stack the dict, score every voice into a dict, then
  ``DecisionPolicy.decide`` sorting all of them), on the same gallery and queries;
* ``floor``: the bare ``matrix @ query`` (memory bandwidth: what any exact method pays);
* ``gallery_while_enrolling``: the same decisions while another thread enrols a voice every
  ``--enrol-every-ms`` and replaces one (``--force``) every tenth time;
* with ``--pg``: a throwaway PostgreSQL server (tests/pg_server.py) with two store instances:
  the time from ``save`` on one to the voice being scorable in the other's watching gallery
  (LISTEN/NOTIFY), and the time a fresh instance takes to load ``--pg-voices`` voices.

Queries are noisy copies of enrolled voices (targets, cosine ~0.9) and random strangers; the
identification rate is printed as a sanity check. Results go to ``--out`` (JSON).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rtverify.config import DecisionConfig  # noqa: E402
from rtverify.core.scoring import DecisionPolicy, Scorer  # noqa: E402
from rtverify.store.gallery import Gallery  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def pct(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p95_ms": round(float(np.percentile(a, 95)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3)}


def units(rng, n, dim):
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def queries(rng, matrix, n):
    """Half noisy copies of enrolled voices (cosine ~0.9 to them), half strangers."""
    n_t = n // 2
    idx = rng.integers(0, len(matrix), n_t)
    noise = units(rng, n_t, matrix.shape[1])
    targets = 0.9 * matrix[idx] + np.sqrt(1 - 0.81) * noise
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    strangers = units(rng, n - n_t, matrix.shape[1])
    return np.concatenate([targets, strangers]).astype(np.float32), idx


def time_decisions(gallery, policy, qs):
    out, results = [], []
    for q in qs:
        t0 = time.perf_counter()
        d = gallery.decide(q, 3.0, policy)
        out.append((time.perf_counter() - t0) * 1000)
        results.append(d)
    return out, results


def bench_memory(args) -> dict:
    rng = np.random.default_rng(args.seed)
    n, dim = args.voices, args.dim
    matrix = units(rng, n, dim)
    names = [f"voice{i:06d}" for i in range(n)]
    # a threshold that separates the noisy copies (~0.9) from strangers (~0 +- 0.06) in dim 256
    policy = DecisionPolicy(DecisionConfig(), threshold=0.5)
    t0 = time.perf_counter()
    g = Gallery(None, "bench", dim)
    for i in range(0, n, 10000):
        g.apply(list(zip(names[i:i + 10000], matrix[i:i + 10000])))
    build_s = time.perf_counter() - t0
    qs, idx = queries(rng, matrix, args.queries)
    time_decisions(g, policy, qs[:10])  # warm-up
    ref_voices = dict(zip(names, matrix))
    scorer = Scorer(None)
    # interleaved, query by query, so that all three see the same load on a shared machine
    gal_ms, res, floor, ref = [], [], [], []
    every = max(1, len(qs) // max(1, args.reference_queries))
    for j, q in enumerate(qs):
        t0 = time.perf_counter()
        res.append(g.decide(q, 3.0, policy))
        t1 = time.perf_counter()
        matrix @ q
        t2 = time.perf_counter()
        gal_ms.append((t1 - t0) * 1000)
        floor.append((t2 - t1) * 1000)
        if j % every == 0:
            t0 = time.perf_counter()
            d = policy.decide(scorer.scores(q, ref_voices), 3.0)
            ref.append((time.perf_counter() - t0) * 1000)
            assert d.best == res[-1].best  # the same answer both ways
    n_t = len(idx)
    ident = sum(d.speaker == names[i] for d, i in zip(res[:n_t], idx)) / n_t
    false_acc = sum(d.accepted for d in res[n_t:]) / (len(res) - n_t)

    # decisions while another thread enrols (append) and replaces (--force) voices
    stop = threading.Event()
    enrolled = {"new": 0, "replaced": 0, "apply_ms": []}

    def writer():
        wrng = np.random.default_rng(args.seed + 1)
        i = 0
        while not stop.is_set():
            batch = [(f"new{i:06d}", units(wrng, 1, dim)[0])]
            if i % 10 == 9:
                batch.append((names[int(wrng.integers(0, n))], units(wrng, 1, dim)[0]))
                enrolled["replaced"] += 1
            t0 = time.perf_counter()
            g.apply(batch)
            enrolled["apply_ms"].append((time.perf_counter() - t0) * 1000)
            enrolled["new"] += 1
            i += 1
            stop.wait(args.enrol_every_ms / 1000)

    t = threading.Thread(target=writer)
    t.start()
    busy_ms, _ = time_decisions(g, policy, qs)
    stop.set()
    t.join()

    out = {
        "voices": n, "dim": dim, "matrix_mb": round(matrix.nbytes / 2**20, 1),
        "build_s": round(build_s, 2),
        "gallery": pct(gal_ms), "reference": pct(ref), "floor": pct(floor),
        "gallery_while_enrolling": pct(busy_ms),
        "enrolments_during": enrolled["new"], "replacements_during": enrolled["replaced"],
        "enrol_apply": pct(enrolled["apply_ms"]),
        "identification_rate": round(ident, 4), "stranger_false_accept": round(false_acc, 4),
    }
    out["reference_over_gallery_p95"] = round(out["reference"]["p95_ms"] /
                                              out["gallery"]["p95_ms"], 1)
    out["gallery_over_floor_p95"] = round(out["gallery"]["p95_ms"] / out["floor"]["p95_ms"], 2)
    out["target_p95_le_20ms"] = out["gallery"]["p95_ms"] <= 20.0 and \
        out["gallery_while_enrolling"]["p95_ms"] <= 20.0
    return out


def bench_pg(args) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from pg_server import PgServer

    from rtverify.store import open_store
    from rtverify.store.voiceprints import Voiceprint, to_json

    server = PgServer()
    try:
        url = server.new_database()
        rng = np.random.default_rng(args.seed)
        dim = args.dim
        writer, reader = open_store(url), open_store(url)
        writer.ensure_dir()
        # bulk-load the fleet's voices (the documents save() writes, in one transaction)
        import psycopg

        vecs = units(rng, args.pg_voices, dim)
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            rows = []
            for i, v in enumerate(vecs):
                vp = Voiceprint(f"voice{i:06d}", "bench", v, "2026-01-01T00:00:00Z", 10.0, 3)
                rows.append((vp.name, "bench", dim, to_json(vp), 1))
            cur.executemany("INSERT INTO rtverify_voiceprints (name, model_id, embedding_dim, "
                            "doc, version) VALUES (%s, %s, %s, %s, %s)", rows)
            cur.execute("UPDATE rtverify_store_meta SET version = 1")
        t0 = time.perf_counter()
        g = Gallery(reader, "bench", dim).start(poll_s=5.0)  # NOTIFY, not the poll, wakes it
        load_s = time.perf_counter() - t0
        assert len(g) == args.pg_voices
        delays = []
        for i in range(args.pg_enrolments):
            v = units(rng, 1, dim)[0]
            name = f"fresh{i:04d}"
            t0 = time.perf_counter()
            writer.save(Voiceprint(name, "bench", v, "2026-01-01T00:00:00Z", 10.0, 3))
            if not g.wait_for(lambda g: name in g, 5.0):
                raise RuntimeError(f"{name} not visible after 5 s")
            delays.append((time.perf_counter() - t0) * 1000)
            assert list(g.scores(v, k=1)) == [name]
        g.close()
        writer.close()
        reader.close()
        return {"pg_voices": args.pg_voices, "initial_load_s": round(load_s, 2),
                "save_to_visible": pct(delays),
                "target_visible_within_1s": max(delays) < 1000.0}
    finally:
        server.stop()


def bench_gate(args) -> dict:
    """The Wyoming gate's work at ``audio-stop`` (finish the streaming Verifier, pool, identify
    among ``--voices`` random voices plus the demo speaker): what a request waits for after its
    audio ends, before any STT. The audio is pushed as Home Assistant sends it (16 kHz s16, 64 ms
    chunks) through the gate's own PcmStream."""
    from rtverify.core.encoder import EncoderSession, l2_normalize
    from rtverify.core.pipeline import Verifier, embed_recording
    from rtverify.io.sources import FileSource
    from rtverify.serve.wyoming import Gate, GateSettings, PcmStream

    demo = REPO / "rtverify" / "demo"
    session = EncoderSession(threads=1)
    alice = l2_normalize(sum(embed_recording(session, FileSource(demo / n)).vector
                             for n in ("enroll_1.flac", "enroll_2.flac")))
    rng = np.random.default_rng(args.seed)
    g = Gallery(None, session.model_id, session.dim, scorer=Scorer.for_model(session))
    g.apply([(f"voice{i:06d}", v) for i, v in enumerate(units(rng, args.voices, session.dim))])
    g.apply([("alice", alice)])
    gate = Gate(session, g, DecisionPolicy(session.info.decision), GateSettings("tcp://x:1"))
    conv = np.concatenate([c.samples for c in FileSource(demo / "conversation.flac")])
    clips = {"alice": [(0.9, 5.7), (17.6, 22.2)], "others": [(6.3, 11.5), (12.0, 17.0),
                                                             (22.8, 27.6)]}
    stop_ms, outcome = [], {}
    for rep in range(args.gate_reps):
        for who, spans in clips.items():
            for a, b in spans:
                x = conv[int(a * 16000):int(b * 16000)]
                pcm = (np.clip(x * (0.3 / np.abs(x).max()), -1, 1) * 32767).astype("<i2")
                raw = pcm.tobytes()
                stream, ver, decisions = PcmStream(16000, 2, 1), Verifier(session, {},
                                                                          provisional=False), []
                for i in range(0, len(raw), 2048):
                    c = stream.push(raw[i:i + 2048])
                    if c is not None:
                        decisions += [e for e in ver.push(c) if hasattr(e, "window_sum")]
                t0 = time.perf_counter()
                c = stream.finish()
                if c is not None:
                    decisions += [e for e in ver.push(c) if hasattr(e, "window_sum")]
                decisions += [e for e in ver.finish() if hasattr(e, "window_sum")]
                d, _ = gate.decide(decisions)
                stop_ms.append((time.perf_counter() - t0) * 1000)
                outcome.setdefault(who, []).append(d.speaker)
    gate.executor.shutdown()
    return {"gallery_voices": len(g), "after_audio_stop": pct(stop_ms),
            "alice_accepted": sum(s == "alice" for s in outcome["alice"]) / len(outcome["alice"]),
            "others_accepted": sum(s is not None for s in outcome["others"]) /
            len(outcome["others"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voices", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--reference-queries", type=int, default=20)
    ap.add_argument("--enrol-every-ms", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pg", action="store_true", help="also measure the PostgreSQL store")
    ap.add_argument("--pg-voices", type=int, default=20_000)
    ap.add_argument("--pg-enrolments", type=int, default=20)
    ap.add_argument("--gate", action="store_true", help="also time the Wyoming gate's "
                    "decision after audio-stop, with the shipped encoder, over the gallery")
    ap.add_argument("--gate-reps", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the "
                    "last one allowed)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gallery.json"))
    args = ap.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    cpu = args.cpu if args.cpu is not None else cpus[-1]
    os.sched_setaffinity(0, {cpu})
    res = {"command": "python -m benchmarks.gallery " + " ".join(argv or sys.argv[1:]),
           "cpu": cpu, "numpy": np.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                      time.gmtime())}
    res.update(bench_memory(args))
    if args.pg:
        res["postgresql"] = bench_pg(args)
    if args.gate:
        res["wyoming_gate"] = bench_gate(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for key in ("gallery", "gallery_while_enrolling", "floor", "reference", "enrol_apply"):
        r = res[key]
        print(f"{key:<24} p50 {r['p50_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms  "
              f"p99 {r['p99_ms']:8.2f} ms  max {r['max_ms']:8.2f} ms  (n={r['n']})")
    print(f"reference/gallery p95: {res['reference_over_gallery_p95']}x; gallery/floor p95: "
          f"{res['gallery_over_floor_p95']}x; identification {res['identification_rate']:.3f}, "
          f"stranger false accepts {res['stranger_false_accept']:.3f}; "
          f"{res['enrolments_during']} enrolments + {res['replacements_during']} replacements "
          f"during the busy run; target met: {res['target_p95_le_20ms']}")
    if "postgresql" in res:
        p = res["postgresql"]
        v = p["save_to_visible"]
        print(f"postgresql: {p['pg_voices']} voices loaded in {p['initial_load_s']} s; "
              f"save -> visible on another instance p50 {v['p50_ms']:.1f} ms, max "
              f"{v['max_ms']:.1f} ms (n={v['n']})")
    if "wyoming_gate" in res:
        w = res["wyoming_gate"]
        a = w["after_audio_stop"]
        print(f"wyoming gate over {w['gallery_voices']} voices: audio-stop -> decision p50 "
              f"{a['p50_ms']:.1f} ms, p95 {a['p95_ms']:.1f} ms, max {a['max_ms']:.1f} ms "
              f"(n={a['n']}); enrolled speaker accepted {w['alice_accepted']:.0%}, others "
              f"accepted {w['others_accepted']:.0%}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
