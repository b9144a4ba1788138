"""Accuracy of an encoder through the runtime path, for model selection and the training report.

Nothing is computed here: every list goes through :func:`rtverify.evaluation.evaluate`, so each
figure is exactly what ``rtverify eval --trials LIST --root ROOT --json`` reports for the same
model (the same trials reader, embedding rule, scoring and EER/minDCF definitions; see
:mod:`rtverify.evaluation` for what a file without usable speech scores). The only addition is
``accuracy_at_0``, the accuracy with the threshold at a score of 0 (for the ``pairs`` objective,
``sigmoid(dot) > 0.5``), from :func:`rtverify.metrics.accuracy`.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from rtverify import evaluation as ev
from rtverify.metrics import accuracy

from .cli import user_errors

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO.parent / "shared" / "data"
TRIAL_LISTS = ("librispeech-251-3s", "arabic-test-1s", "arabic-val-1s", "fsdd-8k")


def list_result(r: dict) -> dict:
    """One list's entry in a training report: the ``rtverify eval --json`` object ``r`` (from
    :func:`rtverify.evaluation.evaluate`) without its private arrays, plus ``accuracy_at_0``."""
    out = {k: v for k, v in r.items() if not k.startswith("_")}
    out["accuracy_at_0"] = accuracy(r["_scores"], r["_labels"], 0.0)
    return out


def evaluate_model(model_path: Path, lists: Sequence[str] = TRIAL_LISTS, *,
                   root: Path = DATA_ROOT, threads: int = 1, show_progress: bool = True,
                   cache_dir: Path | None = None) -> dict:
    """``rtverify eval`` of an ONNX model (with sidecar) on named trial lists under
    ``root/trials``: ``{"model_id", "files", "files_without_speech",
    "files_short_speech_only", "embed_s", "lists": {name: eval JSON + accuracy_at_0}}``."""
    from rtverify.core.encoder import EncoderSession

    session = EncoderSession(model_path, threads=threads)
    for name in lists:  # fail fast on a bad list, before embedding anything
        ev.read_trials(root / "trials" / f"{name}.txt", root)
    t0 = time.perf_counter()
    per_list = {name: list_result(ev.evaluate(root / "trials" / f"{name}.txt", root, session,
                                              cache_dir=cache_dir,
                                              progress=show_progress and sys.stderr.isatty()))
                for name in lists}
    total = lambda key: sum(r[key] for r in per_list.values())  # noqa: E731
    return {"model_id": session.model_id, "files": total("n_files"),
            "files_without_speech": total("files_without_speech"),
            "files_short_speech_only": total("files_short_speech_only"),
            "embed_s": round(time.perf_counter() - t0, 1), "lists": per_list}


def evaluate_torch_model(model, lists: Sequence[str] = TRIAL_LISTS, *, work_dir: Path | None = None,
                         show_progress: bool = True) -> dict:
    """Export ``model`` to a temporary ONNX file (parity-checked) and evaluate it."""
    from export.onnx_export import DEFAULT_PARITY_AUDIO, write_model
    from rtverify.config import FeatureConfig, WindowConfig

    work_dir = Path(work_dir or REPO / "runs" / "tmp")
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        path, _ = write_model(model, Path(tmp), "candidate", features=FeatureConfig(),
                              window=WindowConfig(), decision={"threshold": 0.75},
                              extra={}, audio_files=DEFAULT_PARITY_AUDIO)
        return evaluate_model(path, lists, show_progress=show_progress)


def format_table(results: dict[str, dict]) -> str:
    """Markdown table of EERs (percent) with one column per trial list."""
    lists = list(next(iter(results.values()))["lists"])
    lines = ["| model | " + " | ".join(lists) + " |", "|---" * (len(lists) + 1) + "|"]
    for name, r in results.items():
        cells = [f"{100 * r['lists'][n]['eer']:.2f} %" for n in lists]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@user_errors("training.evaluate")
def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.evaluate",
                                 description="EER of ONNX models through the runtime path")
    ap.add_argument("models", type=Path, nargs="+", help=".onnx files (sidecar beside each)")
    ap.add_argument("--lists", nargs="+", default=list(TRIAL_LISTS))
    ap.add_argument("--root", type=Path, default=DATA_ROOT)
    ap.add_argument("--json", type=Path, help="write all results to this file")
    args = ap.parse_args(argv)
    results = {}
    for m in args.models:
        results[m.stem] = evaluate_model(m, args.lists, root=args.root)
        print(json.dumps(results[m.stem]), flush=True)
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
