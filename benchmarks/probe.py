"""Runtime measurements that need a process of their own (so thread settings and imports start
clean). Each prints one JSON line.

    python -m benchmarks.probe window --model M --threads N   one 1.6 s window through onnxruntime
    python -m benchmarks.probe file --input F --model M       a whole recording end to end
    python -m benchmarks.probe imports                        every rtverify module imported:
                                                              torch/librosa/resemblyzer present?
"""

from __future__ import annotations

import argparse
import json
import sys
import time

FORBIDDEN = ("torch", "librosa", "resemblyzer", "onnx", "sklearn", "matplotlib")
"""Never loaded by importing the runtime (matplotlib only inside ``eval --plot``)."""


def _stats(ms: list[float]) -> dict:
    import numpy as np

    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "min_ms": float(a.min()), "n": len(a)}


def cmd_window(args) -> dict:
    import numpy as np

    from rtverify.encoder import EncoderSession

    session = EncoderSession(args.model, threads=args.threads)
    rng = np.random.default_rng(0)
    # a window of real-looking mel power: speech-like levels, not zeros (the LSTM's cost does not
    # depend on values, but its level normalisation should see ordinary input)
    x = (rng.gamma(0.5, 1e-3, (8, session.window.window_frames, session.features.n_mels))
         .astype(np.float32))
    for _ in range(5):
        session.embed(x[:1])
        session.embed(x)
    one, eight = [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        session.embed(x[:1])
        one.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        session.embed(x)
        eight.append((time.perf_counter() - t) * 1000 / 8)
    return {"threads": args.threads, "batch1": _stats(one), "batch8_per_window": _stats(eight)}


def cmd_file(args) -> dict:
    from rtverify.encoder import EncoderSession
    from rtverify.pipeline import embed_recording
    from rtverify.sources import FileSource

    t = time.perf_counter()
    session = EncoderSession(args.model, threads=args.threads)
    t_session = time.perf_counter() - t
    embed_recording(session, FileSource(args.input))  # warm-up
    ms = []
    for _ in range(args.reps):
        t = time.perf_counter()
        rec = embed_recording(session, FileSource(args.input))
        ms.append((time.perf_counter() - t) * 1000)
    return {"threads": args.threads, "session_s": t_session, "speech_s": rec.speech_s,
            "n_windows": rec.n_windows, **_stats(ms)}


def cmd_imports(args) -> dict:
    import importlib
    import pkgutil

    t = time.perf_counter()
    import rtverify

    names = []
    for m in pkgutil.walk_packages(rtverify.__path__, "rtverify."):
        if m.name != "rtverify.__main__":
            importlib.import_module(m.name)
            names.append(m.name)
    return {"modules": names, "seconds": time.perf_counter() - t,
            "forbidden_loaded": sorted(m for m in FORBIDDEN if m in sys.modules)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("window")
    w.add_argument("--model")
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--reps", type=int, default=50)
    f = sub.add_parser("file")
    f.add_argument("--input", required=True)
    f.add_argument("--model")
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--reps", type=int, default=5)
    sub.add_parser("imports")
    args = p.parse_args(argv)
    result = {"window": cmd_window, "file": cmd_file, "imports": cmd_imports}[args.cmd](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
