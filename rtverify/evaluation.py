"""``rtverify eval``: equal error rate, minDCF and accuracy on a list of verification trials.

A trials file has one trial per line, ``label path_a path_b`` (label 1: same speaker, 0:
different speakers), paths relative to ``--root``. Every unique file is embedded once through the
runtime path, :func:`rtverify.core.pipeline.embed_recording` (segmenter, streaming features, encoder
windows, pooling of all utterances), so the figures measure what ``listen`` does. ``path_a`` plays
the enrolled voice (its embedding is the voiceprint, as a one-take enrolment) and ``path_b`` the
utterance heard; scores go through the same :class:`~rtverify.core.scoring.Scorer` as in ``listen``.

Files without a usable utterance: a file whose only speech is shorter than the segmenter's
``min_speech_ms`` (``listen`` drops it as a noise burst; FSDD's 0.3 s digits) is embedded from that
short speech anyway and counted as ``files_short_speech_only``, so the EER still measures the
encoder on it, while the accuracy at the model's own threshold rejects it as ``listen`` would. A
file in which the segmenter finds nothing at all gives no embedding: every trial that uses it
scores ``-inf`` and is rejected at every threshold (a miss for a same-speaker trial, a correct
rejection otherwise); such files are counted (``files_without_speech``), never dropped.

numpy only; matplotlib is imported for ``--plot`` alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .config import SegmenterConfig
from .errors import InputError, RtverifyError
from .metrics import (P_TARGET, Metrics, accuracy, compute_metrics, eer,  # noqa: F401
                      error_rates, min_dcf, plot_det)

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# trials
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trials:
    labels: np.ndarray
    """int8 ``(n,)``: 1 same speaker, 0 different."""
    a: np.ndarray
    """int ``(n,)``: index into ``files`` of the enrolment side."""
    b: np.ndarray
    """int ``(n,)``: index into ``files`` of the test side."""
    files: list[str]
    """Unique paths as written in the trials file (relative to the root)."""


def read_trials(path: str | os.PathLike, root: str | os.PathLike) -> Trials:
    """Parse and check a trials file; every audio file must exist under ``root``.

    Blank lines and lines starting with ``#`` are skipped. Problems raise :class:`InputError`
    naming ``file:line``.
    """
    path = Path(path)
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: trials root is not a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such trials file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: unreadable trials file ({err})") from None
    index: dict[str, int] = {}
    labels: list[int] = []
    a: list[int] = []
    b: list[int] = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3:
            raise InputError(f"{path}:{n}: expected 'label path_a path_b', got {len(fields)} "
                            f"field(s): {line.strip()[:80]!r}")
        if fields[0] not in ("0", "1"):
            raise InputError(f"{path}:{n}: label must be 1 (same speaker) or 0 (different), "
                            f"got {fields[0][:20]!r}")
        ids = []
        for rel in fields[1:]:
            if rel not in index:
                if not (root / rel).is_file():
                    raise InputError(f"{path}:{n}: {rel}: no such file under {root}")
                index[rel] = len(index)
            ids.append(index[rel])
        labels.append(int(fields[0]))
        a.append(ids[0])
        b.append(ids[1])
    lab = np.asarray(labels, dtype=np.int8)
    if not (lab == 1).any() or not (lab == 0).any():
        raise InputError(f"{path}: needs both same-speaker (1) and different-speaker (0) trials, "
                        f"has {int((lab == 1).sum())} and {int((lab == 0).sum())}")
    return Trials(lab, np.asarray(a), np.asarray(b), list(index))


# ------------------------------------------------------------------------------------------
# embeddings
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileEmbeddings:
    vectors: np.ndarray
    """float32 ``(n_files, dim)`` unit vectors; rows of files without speech are NaN."""
    speech_s: np.ndarray
    """float64 ``(n_files,)`` voiced seconds pooled per file (0 without speech)."""
    short_only: np.ndarray
    """bool ``(n_files,)``: embedded from speech ``listen`` would drop as too short."""

    @property
    def has_speech(self) -> np.ndarray:
        return ~np.isnan(self.vectors[:, 0])


def settings_key(session, segmenter: SegmenterConfig) -> str:
    """What an embedding depends on besides the audio: the model, its windowing, the segmenter."""
    h = hashlib.sha256()
    h.update(Path(session.path).read_bytes())
    h.update(json.dumps({"window": asdict(session.window), "features": session.features.to_dict(),
                         "segmenter": asdict(segmenter)}, sort_keys=True).encode())
    return h.hexdigest()[:20]


class EmbeddingCache:
    """Embeddings of files under one settings key, in ``<dir>/<key>.npz`` (a file is re-embedded
    when its size or modification time changed)."""

    def __init__(self, directory: str | os.PathLike, key: str) -> None:
        self.path = Path(directory) / f"{key}.npz"
        self.entries: dict[str, tuple[np.ndarray, float, bool, str]] = {}
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    for row in zip(z["paths"], z["vectors"], z["speech_s"], z["short_only"],
                                   z["stamps"]):
                        self.entries[str(row[0])] = (row[1], float(row[2]), bool(row[3]),
                                                     str(row[4]))
            except (OSError, ValueError, KeyError) as err:
                logger.warning("%s: ignoring unreadable embedding cache (%s)", self.path, err)
        self.dirty = False

    @staticmethod
    def stamp(path: Path) -> str:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    def get(self, path: Path) -> tuple[np.ndarray, float, bool] | None:
        hit = self.entries.get(str(path.resolve()))
        if hit is None or hit[3] != self.stamp(path):
            return None
        return hit[:3]

    def put(self, path: Path, vector: np.ndarray, speech_s: float, short_only: bool) -> None:
        self.entries[str(path.resolve())] = (vector, speech_s, short_only, self.stamp(path))
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.entries)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, paths=np.array(keys), vectors=np.stack([self.entries[k][0] for k in keys]),
                 speech_s=np.array([self.entries[k][1] for k in keys]),
                 short_only=np.array([self.entries[k][2] for k in keys]),
                 stamps=np.array([self.entries[k][3] for k in keys]))
        os.replace(tmp, self.path)
        self.dirty = False


def embed_file(session, path: Path, segmenter: SegmenterConfig) -> tuple[np.ndarray, float, bool]:
    """``(unit vector or NaNs, speech seconds, short_only)`` of one file.

    If the segmenter finds only speech shorter than ``min_speech_ms`` (which ``listen`` drops as a
    noise burst: FSDD's 0.3 s digits, a clipped keyword), the file is embedded from those short
    segments anyway (the same segmentation, nothing dropped) and flagged ``short_only``: the EER
    then measures the encoder on it, while the model's own decisions still reject it.
    """
    from .core.pipeline import embed_recording
    from .io.sources import FileSource

    rec = embed_recording(session, FileSource(path), segmenter=segmenter)
    short_only = False
    if rec.vector is None:
        rec = embed_recording(session, FileSource(path),
                              segmenter=dataclasses.replace(segmenter, min_speech_ms=1))
        short_only = rec.vector is not None
    vec = rec.vector if rec.vector is not None else np.full(session.dim, np.nan, np.float32)
    return vec, rec.speech_s, short_only


def embed_files(session, paths: Sequence[Path], *, segmenter: SegmenterConfig = SegmenterConfig(),
                cache_dir: str | os.PathLike | None = None, progress: bool = False,
                label: str = "embedding") -> FileEmbeddings:
    """One embedding per file through :func:`rtverify.core.pipeline.embed_recording` (see
    :func:`embed_file`).

    :param paths: audio files (any format :class:`~rtverify.io.sources.FileSource` reads).
    :param cache_dir: keep embeddings in ``<cache_dir>/<settings key>.npz`` between runs.
    :param progress: show a rich progress bar on stderr.
    """
    cache = EmbeddingCache(cache_dir, settings_key(session, segmenter)) if cache_dir else None
    vectors = np.full((len(paths), session.dim), np.nan, dtype=np.float32)
    speech = np.zeros(len(paths))
    short = np.zeros(len(paths), dtype=bool)
    with _progress(progress, label, len(paths)) as advance:
        for i, p in enumerate(paths):
            hit = cache.get(p) if cache else None
            if hit is None:
                hit = embed_file(session, p, segmenter)
                if cache:
                    cache.put(p, *hit)
                    if i % 500 == 499:
                        cache.save()
            vectors[i], speech[i], short[i] = hit
            advance()
    if cache:
        cache.save()
    return FileEmbeddings(vectors, speech, short)


class _progress:
    """A rich progress bar on stderr (or nothing); the context value advances it by one."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._p.__enter__()
        task = self._p.add_task(self.label, total=self.total)
        return lambda: self._p.advance(task)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._p.__exit__(*exc)


# ------------------------------------------------------------------------------------------
# scoring the trials
# ------------------------------------------------------------------------------------------

def score_trials(trials: Trials, emb: FileEmbeddings, scorer) -> np.ndarray:
    """Score of every trial (``-inf`` where a side has no speech): ``scorer`` is a
    :class:`~rtverify.core.scoring.Scorer`, ``path_a`` the enrolled side."""
    ok = emb.has_speech
    scores = np.full(len(trials.labels), -np.inf)
    use = ok[trials.a] & ok[trials.b]
    if use.any():
        scores[use] = scorer.pair_scores(emb.vectors[trials.a[use]], emb.vectors[trials.b[use]])
    return scores


def model_threshold_accuracy(trials: Trials, emb: FileEmbeddings, scores: np.ndarray,
                             decision) -> float:
    """Accuracy of the model's own decisions: the threshold for the test side's amount of speech,
    and no accept below ``min_speech_s`` (as ``listen`` says ``too_short``) nor on a file whose
    speech ``listen`` would drop (``short_only``)."""
    speech_b = emb.speech_s[trials.b]
    thr = np.array([decision.threshold_for(s) for s in speech_b])
    thr[speech_b < decision.min_speech_s] = np.inf
    thr[emb.short_only[trials.a] | emb.short_only[trials.b]] = np.inf  # no enrolment, dropped
    return accuracy(scores, trials.labels, thr)


def evaluate(trials_path, root, session, *, segmenter: SegmenterConfig = SegmenterConfig(),
             scorer=None, cache_dir=None, progress: bool = False) -> dict:
    """The whole evaluation; returns the ``--json`` object (plus ``scores``/``labels`` arrays
    under ``_scores``/``_labels`` for plotting)."""
    from .core.scoring import Scorer

    t0 = time.perf_counter()
    trials = read_trials(trials_path, root)
    scorer = scorer or Scorer.for_model(session)
    paths = [Path(root) / f for f in trials.files]
    emb = embed_files(session, paths, segmenter=segmenter, cache_dir=cache_dir,
                      progress=progress, label=f"embedding {Path(trials_path).name}")
    t_embed = time.perf_counter() - t0
    scores = score_trials(trials, emb, scorer)
    m = compute_metrics(scores, trials.labels)
    no_speech = [trials.files[i] for i in np.flatnonzero(~emb.has_speech)]
    result = {
        "trials_file": str(trials_path),
        "trials": m.trials, "target_trials": m.n_target, "nontarget_trials": m.n_nontarget,
        "eer": m.eer, "threshold_eer": m.threshold_eer,
        "min_dcf": m.min_dcf, "threshold_min_dcf": m.threshold_min_dcf, "p_target": P_TARGET,
        "accuracy_at_eer": m.accuracy_at_eer,
        "accuracy_at_model_threshold": model_threshold_accuracy(trials, emb, scores,
                                                                session.info.decision),
        "n_files": len(trials.files), "files_without_speech": len(no_speech),
        "files_short_speech_only": int(emb.short_only.sum()),
        "trials_without_speech": int(np.isinf(scores).sum()),
        "files_without_speech_examples": no_speech[:5],
        "model_id": session.model_id, "score_norm": scorer.describe(),
        "window": asdict(session.window),
        "seconds": round(time.perf_counter() - t0, 2), "seconds_embedding": round(t_embed, 2),
        "_scores": scores, "_labels": trials.labels,
    }
    return result


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------

def format_report(r: dict) -> str:
    rows = [
        ("trials", f"{r['trials']} ({r['target_trials']} same, {r['nontarget_trials']} "
                   f"different) over {r['n_files']} files"),
        ("no speech", f"{r['files_without_speech']} files, {r['trials_without_speech']} trials "
                      "(scored -inf: rejected)"),
        ("short only", f"{r['files_short_speech_only']} files with only speech listen drops "
                       "as too short (embedded; rejected at the model's threshold)"),
        ("EER", f"{100 * r['eer']:.2f} %  at score {r['threshold_eer']:.4f}"),
        ("minDCF", f"{r['min_dcf']:.3f}  (p_target {r['p_target']}, at score "
                   f"{r['threshold_min_dcf']:.4f})"),
        ("accuracy", f"{100 * r['accuracy_at_eer']:.2f} % at the EER threshold, "
                     f"{100 * r['accuracy_at_model_threshold']:.2f} % at the model's own"),
        ("model", f"{r['model_id']}  scores: {r['score_norm']}"),
        ("time", f"{r['seconds']:.1f} s ({r['seconds_embedding']:.1f} s embedding)"),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows)


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``rtverify eval`` (arguments from :mod:`rtverify.cli.eval`); returns the exit code
    (0). Problems raise :class:`RtverifyError`."""
    from .core.encoder import EncoderSession
    from .core.scoring import Scorer

    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    trials = read_trials(args.trials, args.root)  # fail fast, before loading the model
    del trials
    session = EncoderSession(args.model, threads=args.threads)
    scorer = Scorer(None) if getattr(args, "no_norm", False) else Scorer.for_model(session)
    r = evaluate(args.trials, args.root, session, scorer=scorer,
                 cache_dir=getattr(args, "cache", None), progress=sys.stderr.isatty())
    scores, labels = r.pop("_scores"), r.pop("_labels")
    if args.plot:
        plot_det(scores, labels, args.plot, f"{args.trials.name} — {r['model_id']}")
    if args.json:
        print(json.dumps(r))
    else:
        print(format_report(r))
    return 0
