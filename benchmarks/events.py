"""Proof that speed work changed no output: dump every pipeline event of a recording, and compare
two dumps.

    python -m benchmarks events --out before.json [--input FILE]   # on the old code
    python -m benchmarks events --compare before.json [--input FILE]  # on the new code

Each dump holds the events of several runs (chunk sizes 160, 1600 and 4096 samples, windows
embedded one by one and in batches of 8), scored against a voiceprint of the demo's enrolled
speaker. Compared: every event's kind, times, reasons, counts and flags exactly, and every score
and level to ``--tol`` (float rounding; default 1e-5). ``decision_ms`` is a timing, never compared.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from . import REPO

RUNS = [(160, 1), (1600, 1), (4096, 1), (1600, 8)]
"""(chunk samples, max_pending) of each run."""
_SKIP = {"decision_ms", "embedding", "window_sum"}


def _plain(value):
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def event_record(event) -> dict:
    """An event as a plain dict at full float precision (no rounding, no timings)."""
    d = {"event": event.kind}
    for f in dataclasses.fields(event):
        if f.name not in _SKIP:
            d[f.name] = _plain(getattr(event, f.name))
    return d


def voiceprint(session) -> np.ndarray:
    """The demo's enrolled speaker, from its two bundled takes (as the tests build it)."""
    from rtverify.core.encoder import l2_normalize
    from rtverify.core.pipeline import embed_recording
    from rtverify.io.sources import FileSource

    demo = REPO / "rtverify" / "demo"
    total = np.zeros(session.dim)
    for name in ("enroll_1.flac", "enroll_2.flac"):
        total += embed_recording(session, FileSource(demo / name)).vector
    return l2_normalize(total)


def dump(path: Path | None = None) -> dict:
    """Events of every run in :data:`RUNS` on ``path`` (default: the demo conversation)."""
    from rtverify.core.encoder import EncoderSession
    from rtverify.core.pipeline import Verifier
    from rtverify.io.sources import Chunk, FileSource

    path = Path(path) if path else REPO / "rtverify" / "demo" / "conversation.flac"
    session = EncoderSession(threads=1)
    voices = {"alice": voiceprint(session)}
    x = np.concatenate([c.samples for c in FileSource(path)])
    runs = {}
    for size, pending in RUNS:
        v = Verifier(session, voices, max_pending=pending, status_every_s=0.5)
        chunks = (Chunk(x[i:i + size], i / 16000) for i in range(0, len(x), size))
        runs[f"chunk{size}_pending{pending}"] = [event_record(e) for e in v.process(chunks)]
    return {"input": str(path), "model_id": session.model_id,
            "voiceprint": [float(v) for v in voices["alice"]], "runs": runs}


def _diff(a, b, tol: float, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            out.append(f"{where}: keys {sorted(a)} != {sorted(b)}")
            return
        for k in a:
            _diff(a[k], b[k], tol, f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, tol, f"{where}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        if not (a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol)):
            out.append(f"{where}: {a!r} != {b!r}")
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def compare(before: dict, after: dict, tol: float = 1e-5) -> list[str]:
    """Differences between two dumps (empty: the same output)."""
    out: list[str] = []
    if before["model_id"] != after["model_id"]:
        out.append(f"model_id {before['model_id']} != {after['model_id']}")
    _diff(before["voiceprint"], after["voiceprint"], tol, "voiceprint", out)
    _diff(before["runs"], after["runs"], tol, "runs", out)
    return out


def main(args) -> int:
    got = dump(args.input)
    n = {k: len(v) for k, v in got["runs"].items()}
    if args.out:
        Path(args.out).write_text(json.dumps(got))
        print(f"wrote {args.out}: events per run {n}")
    if args.compare:
        diffs = compare(json.loads(Path(args.compare).read_text()), got, args.tol)
        kinds = sorted({e["event"] for r in got["runs"].values() for e in r})
        if diffs:
            print(f"DIFFERENT from {args.compare}: {len(diffs)} difference(s)")
            for d in diffs[:30]:
                print("  " + d)
            return 1
        print(f"SAME as {args.compare}: events per run {n}, kinds {kinds}, tol {args.tol}")
    return 0
