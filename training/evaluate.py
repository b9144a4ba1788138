"""Accuracy of an encoder through the runtime path, for model selection and the training report.

Every file of a trial list is embedded once with :func:`rtverify.core.pipeline.embed_recording` (the
same VAD, streaming features and window averaging as ``rtverify listen``), trials are scored by
cosine, and the EER and the pair accuracy at a fixed threshold are computed. This is a small
stand-in used while training; ``rtverify eval`` is the command that reports the model card.

A file in which the segmenter finds no utterance (very short digits) falls back to one window of
its whole spectrogram (zero-padded as the runtime pads short segments); how often that happened
is reported as ``fallback_files``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rtverify.core.encoder import EncoderSession, l2_normalize
from rtverify.core.features import mel_spectrogram
from rtverify.core.pipeline import embed_recording
from rtverify.io.sources import FileSource

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO.parent / "shared" / "data"
TRIAL_LISTS = ("librispeech-251-3s", "arabic-test-1s", "arabic-val-1s", "fsdd-8k")


@dataclass(frozen=True)
class Trial:
    label: int
    """1 = same speaker, 0 = different speakers."""
    a: str
    b: str


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Lines ``label path_a path_b``; blank lines and ``#`` comments are skipped."""
    trials = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected 'label path_a path_b', got {line!r}")
        trials.append(Trial(int(parts[0]), parts[1], parts[2]))
    return trials


def eer(labels: Sequence[int], scores: Sequence[float]) -> tuple[float, float]:
    """Equal error rate (fraction) and the score threshold where it is reached.

    Miss and false-alarm rates are swept over every distinct score; the EER is the mean of the two
    where they are closest.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need both same-speaker and different-speaker trials")
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    # accept everything scoring >= s[i]; only cut between distinct scores
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(lab)[last]
    fp = np.cumsum(1 - lab)[last]
    fnr = np.r_[1.0, 1.0 - tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thr = np.r_[np.inf, s[last]]
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fnr[i] + fpr[i]) / 2), float(thr[i])


def accuracy(labels: Sequence[int], scores: Sequence[float], threshold: float) -> float:
    """Fraction of trials decided right when ``score >= threshold`` means same speaker."""
    labels = np.asarray(labels)
    return float(np.mean((np.asarray(scores) >= threshold) == (labels == 1)))


def embed_file(session: EncoderSession, path: Path) -> tuple[np.ndarray, bool]:
    """Unit embedding of a recording through the runtime path; True if the fallback was used."""
    rec = embed_recording(session, FileSource(path))
    if rec.vector is not None:
        return rec.vector, False
    audio = np.concatenate([c.samples for c in FileSource(path)])
    mel = mel_spectrogram(audio, session.features)
    w = session.window.window_frames
    if len(mel) < w:
        mel = np.concatenate([mel, np.zeros((w - len(mel), mel.shape[1]), np.float32)])
    return l2_normalize(session.embed(mel[None, :w])[0]), True


def embed_files(session: EncoderSession, files: Iterable[str], root: Path,
                cache: dict[str, np.ndarray] | None = None,
                progress=None) -> tuple[dict[str, np.ndarray], int]:
    """Embeddings by relative path (reusing ``cache``) and the number of fallbacks."""
    out = dict(cache or {})
    fallbacks = 0
    for f in files:
        if f not in out:
            out[f], fell = embed_file(session, root / f)
            fallbacks += fell
        if progress is not None:
            progress()
    return out, fallbacks


def score_list(emb: dict[str, np.ndarray], trials: list[Trial]) -> dict:
    labels = [t.label for t in trials]
    scores = [float(np.dot(emb[t.a], emb[t.b])) for t in trials]
    e, thr = eer(labels, scores)
    return {"trials": len(trials), "eer": e, "threshold_eer": thr,
            "accuracy_at_eer": accuracy(labels, scores, thr),
            # cosine > 0 <=> dot product of the raw embeddings > 0 <=> sigmoid(dot) > 0.5
            "accuracy_at_0": accuracy(labels, scores, 0.0)}


def evaluate_model(model_path: Path, lists: Sequence[str] = TRIAL_LISTS, *,
                   root: Path = DATA_ROOT, threads: int = 1, show_progress: bool = True) -> dict:
    """EER etc. of an ONNX model (with sidecar) on named trial lists under ``root/trials``."""
    session = EncoderSession(model_path, threads=threads)
    trials = {name: read_trials(root / "trials" / f"{name}.txt") for name in lists}
    files = sorted({f for ts in trials.values() for t in ts for f in (t.a, t.b)})
    t0 = time.perf_counter()
    if show_progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"embedding {len(files)} files", total=len(files))
            emb, fallbacks = embed_files(session, files, root,
                                         progress=lambda: bar.advance(task))
    else:
        emb, fallbacks = embed_files(session, files, root)
    result = {"model_id": session.model_id, "files": len(files), "fallback_files": fallbacks,
              "embed_s": round(time.perf_counter() - t0, 1), "lists": {}}
    for name, ts in trials.items():
        result["lists"][name] = score_list(emb, ts)
    return result


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
