"""Runtime measurements that need a process of their own (so thread settings and imports start
clean). Each prints one JSON line.

    python -m benchmarks.probe window --model M --threads N   one 1.6 s window through onnxruntime
    python -m benchmarks.probe file --input F --model M       a whole recording end to end
    python -m benchmarks.probe imports                        every rtverify module imported:
                                                              torch/librosa/resemblyzer present?
    python -m benchmarks.probe pipeline --input F [--no-encoder] [--block-ms B]
                                                              FileSource -> Verifier in-process
    python -m benchmarks.probe ort-options --input F          onnxruntime session options
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

    from rtverify.core.encoder import EncoderSession

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
    from rtverify.core.encoder import EncoderSession
    from rtverify.core.pipeline import embed_recording
    from rtverify.io.sources import FileSource

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


class _NoEncoder:
    """Stands in for the encoder (unit vectors at no cost): what is left is the pipeline's own
    overhead (reading, VAD, features, windows, scoring)."""

    short_expert = None  # its windows would be the real encoder's cost again
    companion_ids: tuple[str, ...] = ()

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):  # the rest as the session has it (features, window, ...)
        return getattr(self._real, name)

    def expert_decides(self, speech_s, snr_db) -> bool:
        return False

    def embed(self, frames):
        import numpy as np

        v = np.zeros((len(frames), self.dim), np.float32)
        v[:, 0] = 1.0
        return v


def _pipeline_parts():
    """``EncoderSession``, ``Verifier``, ``FileSource`` of the runtime this probe runs against:
    the levers' baseline (``benchmarks.levers``, a commit before the layout of 2 December) has
    them at the package's top level, this checkout under ``core``/``io``. Which one is told by
    the package's own folder: an editable install would otherwise lend the old tree this
    checkout's ``rtverify.core``, which cannot import the old ``rtverify.config``."""
    from pathlib import Path

    import rtverify

    if (Path(rtverify.__file__).parent / "core").is_dir():
        from rtverify.core.encoder import EncoderSession
        from rtverify.core.pipeline import Verifier
        from rtverify.io.sources import FileSource
    else:  # the layout before 2 December
        from rtverify.encoder import EncoderSession
        from rtverify.pipeline import Verifier
        from rtverify.sources import FileSource
    return EncoderSession, Verifier, FileSource


def cmd_pipeline(args) -> dict:
    """FileSource -> Verifier in this process, as fast as possible (what listen does without the
    process start and the JSON output)."""
    import numpy as np

    EncoderSession, Verifier, FileSource = _pipeline_parts()
    session = EncoderSession(args.model, threads=args.threads)
    if args.no_encoder:
        session = _NoEncoder(session)
    voices = {"x": np.full(session.dim, session.dim ** -0.5, np.float32)}
    seconds, decisions = [], 0
    for _ in range(args.reps):
        v = Verifier(session, voices, max_pending=args.max_pending)
        t = time.perf_counter()
        decisions = sum(e.kind == "decision"
                        for e in v.process(FileSource(args.input, block_ms=args.block_ms)))
        seconds.append(time.perf_counter() - t)
    return {"seconds": float(np.median(seconds)), "each": seconds, "decisions": decisions,
            "block_ms": args.block_ms, "max_pending": args.max_pending,
            "no_encoder": args.no_encoder}


def cmd_ort_options(args) -> dict:
    """Per-window onnxruntime time under session options the runtime does not set (denormals as
    zero, spinning threads), interleaved, on windows of real speech."""
    import numpy as np
    import onnxruntime as ort

    from rtverify.core.encoder import DEFAULT_MODEL
    from rtverify.core.features import mel_spectrogram
    from rtverify.io.sources import FileSource

    x = np.concatenate([c.samples for c in FileSource(args.input)])[:16000 * 60]
    m = mel_spectrogram(x)
    windows = np.stack([m[i:i + 160] for i in range(0, len(m) - 160, 160)][:32]).astype(np.float32)

    def session(threads, **entries):
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        o.log_severity_level = 3
        entries.setdefault("session.intra_op.allow_spinning", "0")
        for k, v in entries.items():
            o.add_session_config_entry(k, v)
        return ort.InferenceSession(str(args.model or DEFAULT_MODEL), o,
                                    providers=["CPUExecutionProvider"])

    daz = {"session.set_denormal_as_zero": "1"}
    spin = {"session.intra_op.allow_spinning": "1"}
    sessions = {"runtime (1 thread)": session(1), "denormals as zero": session(1, **daz),
                "2 threads": session(2), "2 threads, spinning": session(2, **spin)}
    ref = sessions["runtime (1 thread)"].run(None, {"frames": windows})[0]
    out = {}
    times: dict = {}
    for name, s in sessions.items():
        out[name] = {"max_abs_diff": float(np.abs(s.run(None, {"frames": windows})[0] - ref).max())}
    for _ in range(args.reps):
        for batch in (1, 8):
            for name, s in sessions.items():
                t = time.perf_counter()
                for a in range(0, len(windows), batch):
                    s.run(None, {"frames": windows[a:a + batch]})
                times.setdefault((name, batch), []).append(
                    (time.perf_counter() - t) * 1000 / len(windows))
    for (name, batch), ms in times.items():
        out[name][f"batch{batch}_ms_per_window"] = float(np.median(ms))
    return out


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
    q = sub.add_parser("pipeline")
    q.add_argument("--input", required=True)
    q.add_argument("--model")
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--block-ms", type=float, default=100.0)
    q.add_argument("--max-pending", type=int, default=8)
    q.add_argument("--no-encoder", action="store_true")
    q.add_argument("--reps", type=int, default=1)
    o = sub.add_parser("ort-options")
    o.add_argument("--input", required=True)
    o.add_argument("--model")
    o.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    result = {"window": cmd_window, "file": cmd_file, "imports": cmd_imports,
              "pipeline": cmd_pipeline, "ort-options": cmd_ort_options}[args.cmd](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
