"""Evaluation on verification trials: the one trials reader, the one way a file becomes an
embedding (and the cache that keeps it), the one scoring of trials and the one set of metrics
(:mod:`rtverify.metrics`). ``rtverify eval`` reports them; training's model selection
(``training.train.Validator``, ``training.evaluate``), the benchmarks, ``export.calibrate`` and
``tools/`` call the same functions, so every figure means the same thing.

A trials file has one trial per line, ``label path_a path_b`` (label 1: same speaker, 0:
different speakers), paths relative to ``--root``; ``path_a`` may also be several paths joined
by ``+`` (``a.flac+b.flac+c.flac``): a voiceprint of that many takes, made as ``enroll`` makes
one (the normalised mean of the takes' embeddings, their speech summed). Every unique file is
embedded once through the runtime path, :func:`rtverify.core.pipeline.embed_recording`
(segmenter, streaming features, encoder windows, pooling), as ``verify`` and ``enroll`` embed a
recording: ``listen``'s path, except that only pauses of ``recording_pause_ms`` split it. ``path_a`` plays
the enrolled voice (its embedding is the voiceprint, as a one-take enrolment) and ``path_b`` the
utterance heard; scores go through the same :class:`~rtverify.core.scoring.Scorer` as in ``listen``.

Files without a usable utterance (the one rule, :func:`embed_chunks`): a file whose only speech is
shorter than the segmenter's ``min_speech_ms`` (``listen`` drops it as a noise burst; FSDD's 0.3 s
digits) is embedded from that short speech anyway and counted as ``files_short_speech_only``, so
the EER still measures the encoder on it, while the accuracy at the model's own threshold rejects
it as ``listen`` would. A file in which the segmenter finds nothing at all gives no embedding (a
row of NaN): every trial that uses it scores ``-inf`` and is rejected at every threshold (a miss
for a same-speaker trial, a correct rejection otherwise); such files are counted
(``files_without_speech``), never dropped, and never replaced by an embedding of the silence.

numpy only (no torch); rich for the progress bar, matplotlib for ``--plot`` alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .config import SegmenterConfig
from .errors import InputError
from .metrics import (P_TARGET, Metrics, accuracy, compute_metrics, eer,  # noqa: F401
                      check_plot_path, error_rates, min_dcf, plot_det)

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
    """Unique entries as written in the trials file (relative to the root): a path, or paths
    joined by ``+`` (a voiceprint of several takes, enrolment side only)."""

    @property
    def takes(self) -> list[str]:
        """Every unique audio file the entries name, in order of first appearance."""
        return list(dict.fromkeys(p for f in self.files for p in f.split(TAKE_SEP)))


TAKE_SEP = "+"
"""Joins the takes of a several-take voiceprint in a trials file's ``path_a``."""
MAX_TAKES = 20


MAX_LINE_CHARS = 1 << 16
"""The longest line of a trials file: 20 takes of long paths fit; /dev/zero, or a recording
given as the list, does not (read whole, /dev/zero had taken 8.7 GB in 4 s)."""


def _trial_lines(path: Path) -> Iterator[str]:
    """The lines of a trials file, read one at a time, each at most :data:`MAX_LINE_CHARS`."""
    with open(path, encoding="utf-8", newline=None) as f:
        for n, line in enumerate(iter(lambda: f.readline(MAX_LINE_CHARS + 1), ""), 1):
            if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                raise InputError(f"{path}:{n}: a line longer than {MAX_LINE_CHARS} characters: "
                                 "not a trials file")
            yield line


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
        lines = list(_trial_lines(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such trials file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: unreadable trials file ({err})") from None
    index: dict[str, int] = {}
    labels: list[int] = []
    a: list[int] = []
    b: list[int] = []
    for n, line in enumerate(lines, 1):
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
        for side, rel in enumerate(fields[1:]):
            if rel not in index:
                parts = rel.split(TAKE_SEP)  # (a file whose name holds a '+' must be renamed)
                if len(parts) > MAX_TAKES or len(set(parts)) != len(parts):
                    raise InputError(f"{path}:{n}: a voiceprint joins 1 to {MAX_TAKES} "
                                     f"different takes: {rel[:80]!r}")
                for part in parts:
                    if not part or not (root / part).is_file():
                        raise InputError(f"{path}:{n}: {part}: no such file under {root}")
                index[rel] = len(index)
            if side == 1 and TAKE_SEP in rel:
                raise InputError(f"{path}:{n}: only path_a (the enrolled side) may join "
                                 f"takes with {TAKE_SEP!r}: {rel[:80]!r}")
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
    snr_db: np.ndarray | None = None
    """float64 ``(n_files,)`` estimated SNR of the pooled speech (decibels, as the decision
    events report it; NaN where unknown: no speech). None: not measured (no SNR offsets)."""
    fall_db: np.ndarray | None = None
    """float64 ``(n_files,)`` steepest fall of the pooled speech (dB per 10 ms, as the decision
    events report it; NaN where unknown). None: not measured (no reverberation offsets)."""

    @property
    def has_speech(self) -> np.ndarray:
        return ~np.isnan(self.vectors[:, 0])

    def voiceprints(self, takes: Sequence[str], entries: Sequence[str]) -> "FileEmbeddings":
        """One row per trials entry from these rows of ``takes``: a single file's row as it
        is, a several-take voiceprint (``a+b+c``) as ``enroll`` makes it: the normalised mean of
        the takes' vectors (takes without speech are left out, as enrolment refuses them; none
        with speech: NaN), their speech summed, ``short_only`` if every take with speech is."""
        from .core.pipeline import speech_weighted

        row = {t: i for i, t in enumerate(takes)}
        vectors = np.full((len(entries), self.vectors.shape[1]), np.nan, np.float32)
        speech = np.zeros(len(entries))
        short = np.zeros(len(entries), dtype=bool)
        snr = np.full(len(entries), np.nan)
        fall = np.full(len(entries), np.nan)
        for i, entry in enumerate(entries):
            rows = [row[p] for p in entry.split(TAKE_SEP)]
            if len(rows) == 1:
                vectors[i], speech[i], short[i] = (self.vectors[rows[0]], self.speech_s[rows[0]],
                                                   self.short_only[rows[0]])
                if self.snr_db is not None:
                    snr[i] = self.snr_db[rows[0]]
                if self.fall_db is not None:
                    fall[i] = self.fall_db[rows[0]]
                continue
            ok = [r for r in rows if not np.isnan(self.vectors[r, 0])]
            if ok:
                total = self.vectors[ok].astype(np.float64).sum(axis=0)
                vectors[i] = total / np.linalg.norm(total)
                speech[i] = float(self.speech_s[ok].sum())
                short[i] = bool(self.short_only[ok].all())
                if self.fall_db is not None:  # as enrolment pools its takes' falls
                    pooled = speech_weighted(zip(self.fall_db[ok], self.speech_s[ok]))
                    fall[i] = np.nan if pooled is None else pooled
        return FileEmbeddings(vectors, speech, short, snr if self.snr_db is not None else None,
                              fall if self.fall_db is not None else None)


def settings_key(session, segmenter: SegmenterConfig) -> str:
    """What an embedding depends on besides the audio: the model, its windowing, the segmenter."""
    h = hashlib.sha256()
    # the weights (a fusion's: its parts', and its id, which names them and their weights; not
    # its sidecar, whose calibration changes no embedding)
    for part in getattr(session, "parts", None) or [session]:
        h.update(Path(part.path).read_bytes())
    if getattr(session, "parts", None):
        h.update(session.model_id.encode())
    h.update(json.dumps({"window": asdict(session.window), "features": session.features.to_dict(),
                         "segmenter": asdict(session.info.segmenter_config(segmenter)),
                         "record": "snr_db,fall_db from 1.0 s"},
                        sort_keys=True).encode())
    return h.hexdigest()[:20]


class EmbeddingCache:
    """The embedding cache: one vector, its speech seconds, its ``short_only`` flag, its
    estimated SNR and steepest fall (NaN where unknown) per file, under one key, in ``<dir>/<key>.npz`` (no
    pickle; an entry is stale, and the file re-embedded, when the file's size or modification
    time changed). :func:`embed_files` keys it by
    :func:`settings_key`; the benchmarks keep the reference encoder's embeddings in it too."""

    def __init__(self, directory: str | os.PathLike, key: str) -> None:
        if Path(directory).exists() and not Path(directory).is_dir():
            raise InputError(f"{directory}: embedding cache is not a directory")
        self.path = Path(directory) / f"{key}.npz"
        self.entries: dict[str, tuple[np.ndarray, float, bool, float, float, str]] = {}
        self.unwritable = False
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    nan = np.full(len(z["paths"]), np.nan)
                    snr = z["snr_db"] if "snr_db" in z.files else nan
                    fall = z["fall_db"] if "fall_db" in z.files else nan
                    for row in zip(z["paths"], z["vectors"], z["speech_s"], z["short_only"],
                                   snr, fall, z["stamps"]):
                        self.entries[str(row[0])] = (row[1], float(row[2]), bool(row[3]),
                                                     float(row[4]), float(row[5]), str(row[6]))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                    zlib.error) as err:  # (a truncated or damaged file: BadZipFile, zlib.error)
                logger.warning("%s: ignoring unreadable embedding cache (%s)", self.path, err)
        self.dirty = False

    @staticmethod
    def stamp(path: Path) -> str:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    def get(self, path: Path) -> "Embedded | None":
        hit = self.entries.get(str(path.resolve()))
        if hit is None or hit[5] != self.stamp(path):
            return None
        return Embedded(*hit[:5])

    def put(self, path: Path, vector: np.ndarray, speech_s: float, short_only: bool,
            snr_db: float | None = None, fall_db: float | None = None) -> None:
        snr = np.nan if snr_db is None else float(snr_db)
        fall = np.nan if fall_db is None else float(fall_db)
        self.entries[str(path.resolve())] = (vector, speech_s, short_only, snr, fall,
                                             self.stamp(path))
        self.dirty = True

    def save(self) -> None:
        """Write the entries; a cache that cannot be written is a warning (once), not the end
        of the run whose embeddings it was to keep."""
        if not self.dirty or self.unwritable:
            return
        keys = sorted(self.entries)
        tmp = self.path.with_suffix(".tmp.npz")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, paths=np.array(keys),
                     vectors=np.stack([self.entries[k][0] for k in keys]),
                     speech_s=np.array([self.entries[k][1] for k in keys]),
                     short_only=np.array([self.entries[k][2] for k in keys]),
                     snr_db=np.array([self.entries[k][3] for k in keys], dtype=np.float64),
                     fall_db=np.array([self.entries[k][4] for k in keys], dtype=np.float64),
                     stamps=np.array([self.entries[k][5] for k in keys]))
            os.replace(tmp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # (a disk that filled up: not its part-file too)
            self.unwritable = True
            logger.warning("%s: cannot write the embedding cache (%s); this run's embeddings "
                           "are not kept", err.filename or self.path, err.strerror or err)
            return
        self.dirty = False


class Embedded(NamedTuple):
    """What one recording contributes to an evaluation."""

    vector: np.ndarray
    """float32 ``(dim,)`` unit vector, or NaNs (no speech)."""
    speech_s: float
    """Voiced seconds pooled."""
    short_only: bool
    """Embedded from speech ``listen`` would drop as too short."""
    snr_db: float = float("nan")
    """Estimated SNR of the pooled speech (decibels; NaN where unknown)."""
    fall_db: float = float("nan")
    """Steepest fall of the pooled speech (dB per 10 ms; NaN where unknown)."""


def embed_chunks(session, source: Callable[[], Iterable], segmenter: SegmenterConfig
                 ) -> Embedded:
    """``(unit vector or NaNs, speech seconds, short_only, snr_db, fall_db)`` of one recording: the one
    rule for what a recording contributes to an evaluation.

    :param session: an :class:`~rtverify.core.encoder.EncoderSession` (or anything with its
        ``embed``/``features``/``window``/``dim``/``info``, such as training's window recorder).
    :param source: called once per pass, returns the recording's
        :class:`~rtverify.io.sources.Chunk` s afresh (e.g. ``lambda: FileSource(path)``).

    If the segmenter finds only speech shorter than ``min_speech_ms`` (which ``listen`` drops as a
    noise burst: FSDD's 0.3 s digits, a clipped keyword), the recording is embedded from those
    short segments anyway (a second pass with the same segmentation, nothing dropped) and flagged
    ``short_only``: the EER then measures the encoder on it, while the model's own decisions still
    reject it. With no speech at all the vector is NaN (trials using it score ``-inf``).
    """
    from .core.pipeline import embed_recording

    rec = embed_recording(session, source(), segmenter=segmenter)
    short_only = False
    if rec.vector is None:
        rec = embed_recording(session, source(),
                              segmenter=dataclasses.replace(segmenter, min_speech_ms=1))
        short_only = rec.vector is not None
    vec = rec.vector if rec.vector is not None else np.full(session.dim, np.nan, np.float32)
    return Embedded(vec, rec.speech_s, short_only,
                    np.nan if rec.snr_db is None else float(rec.snr_db),
                    np.nan if rec.fall_db is None else float(rec.fall_db))


def embed_file(session, path: Path, segmenter: SegmenterConfig) -> Embedded:
    """:func:`embed_chunks` of an audio file (any format :class:`~rtverify.io.sources.FileSource`
    reads)."""
    from .io.sources import FileSource

    return embed_chunks(session, lambda: FileSource(path), segmenter)


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
    snr = np.full(len(paths), np.nan)
    fall = np.full(len(paths), np.nan)
    with progress_bar(progress, label, len(paths)) as advance:
        for i, p in enumerate(paths):
            hit = cache.get(p) if cache else None
            if hit is None:
                hit = embed_file(session, p, segmenter)
                if cache:
                    cache.put(p, *hit)
                    if i % 500 == 499:
                        cache.save()
            vectors[i], speech[i], short[i], snr[i], fall[i] = hit
            advance()
    if cache:
        cache.save()
    return FileEmbeddings(vectors, speech, short, snr, fall)


class progress_bar:
    """A rich progress bar on stderr (or nothing, when ``enabled`` is false); the context value
    advances it by one."""

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


def entry_vectors(trials: Trials, take_vectors: np.ndarray) -> np.ndarray:
    """The unit vectors of ``trials.files`` (float32 ``(n_entries, dim)``) from those of its
    takes (rows in the order of ``trials.takes``; a NaN row: no speech), for embeddings made
    outside :func:`embed_files` (a reference model): a several-take voiceprint is made as
    :meth:`FileEmbeddings.voiceprints` makes it."""
    n = len(trials.takes)
    takes = FileEmbeddings(np.asarray(take_vectors, np.float32), np.ones(n),
                           np.zeros(n, dtype=bool))
    return takes.voiceprints(trials.takes, trials.files).vectors


# ------------------------------------------------------------------------------------------
# scoring the trials
# ------------------------------------------------------------------------------------------

def score_trials(trials: Trials, vectors: np.ndarray, scorer=None) -> np.ndarray:
    """Score of every trial, float64 ``(n_trials,)``: ``-inf`` where a side has no embedding (a
    NaN row of ``vectors``, float ``(n_files, dim)`` in the order of ``trials.files``).

    :param scorer: a :class:`~rtverify.core.scoring.Scorer` (``path_a`` is the enrolled side);
        None: plain cosine, ``Scorer(None)``.
    """
    if scorer is None:
        from .core.scoring import Scorer

        scorer = Scorer(None)
    vectors = np.asarray(vectors)
    ok = ~np.isnan(vectors).any(axis=1)
    scores = np.full(len(trials.labels), -np.inf)
    use = ok[trials.a] & ok[trials.b]
    if use.any():
        scores[use] = scorer.pair_scores(vectors[trials.a[use]], vectors[trials.b[use]])
    return scores


def model_thresholds(trials: Trials, emb: FileEmbeddings, decision, refuse: bool = True
                     ) -> np.ndarray:
    """The model's own threshold for each trial, float64 ``(n_trials,)``: the one for the test
    side's amount of speech, estimated SNR and the change in steepest fall from the enrolled
    side's (``emb.snr_db``, ``emb.fall_db``; no offset for an estimate where it is unknown) plus
    the offset for the speech the enrolled side holds (as ``listen`` judges a voice enrolled on
    that much), and (with ``refuse``) ``inf`` (no accept) below ``min_speech_s`` (as ``listen``
    says ``too_short``) or on a file whose speech ``listen`` would drop (``short_only``)."""
    speech_b = emb.speech_s[trials.b]
    nan = np.full(len(speech_b), np.nan)
    snr_b = emb.snr_db[trials.b] if emb.snr_db is not None else nan
    # how much more slowly the test side's speech falls silent than the enrolled side's
    change = emb.fall_db[trials.b] - emb.fall_db[trials.a] if emb.fall_db is not None else nan
    known = lambda x: None if np.isnan(x) else float(x)  # noqa: E731
    thr = np.array([decision.threshold_for(s, known(q), known(f))
                    + decision.enrol_offset(float(e))
                    for s, q, f, e in zip(speech_b, snr_b, change, emb.speech_s[trials.a])])
    return np.where(refused(trials, emb, decision), np.inf, thr) if refuse else thr


def refused(trials: Trials, emb: FileEmbeddings, decision) -> np.ndarray:
    """Which trials the model refuses whatever the score, bool ``(n_trials,)``: less test
    speech than ``min_speech_s`` (``listen`` says ``too_short``), or a side whose speech
    ``listen`` would drop (``short_only``: no enrolment, a dropped segment)."""
    return ((emb.speech_s[trials.b] < decision.min_speech_s)
            | emb.short_only[trials.a] | emb.short_only[trials.b])


def model_threshold_rates(trials: Trials, emb: FileEmbeddings, scores: np.ndarray,
                          decision, thresholds: np.ndarray | None = None) -> dict[str, float]:
    """The model's own decisions (:func:`model_thresholds`, or ``thresholds`` given) as rates:
    ``accuracy`` (over all trials), ``far`` (different-speaker trials accepted, over those
    trials) and ``frr`` (same-speaker trials refused, over those trials); and, since a refusal
    for too little speech (an infinite threshold: ``listen`` says ``too_short``) is no verdict
    on the voice, ``undecided`` (share of all trials so refused) and ``far_decided`` /
    ``frr_decided`` (the same rates over the trials the model does decide; NaN where none)."""
    if thresholds is None:
        thresholds = model_thresholds(trials, emb, decision)
    accepted = np.asarray(scores, np.float64) >= thresholds
    same = np.asarray(trials.labels) == 1
    decided = np.isfinite(thresholds)

    def share(x: np.ndarray) -> float:
        return float(x.mean()) if len(x) else float("nan")

    return {"accuracy": float(np.mean(accepted == same)),
            "far": float(accepted[~same].mean()), "frr": float((~accepted[same]).mean()),
            "undecided": float((~decided).mean()),
            "far_decided": share(accepted[~same & decided]),
            "frr_decided": share(~accepted[same & decided])}


def expert_routed(session, trials: Trials, emb: FileEmbeddings) -> np.ndarray:
    """Which trials the model's short expert decides, bool ``(n_trials,)``: the test side's
    speech and SNR as ``listen`` judges an utterance's
    (:meth:`~rtverify.core.encoder.EncoderSession.expert_decides`), once per file."""
    snr = emb.snr_db if emb.snr_db is not None else np.full(len(emb.speech_s), np.nan)
    per_file = np.array([session.expert_decides(float(s), float(q))
                         for s, q in zip(emb.speech_s, snr)], dtype=bool)
    return per_file[trials.b]


def _routed_scores(trials: Trials, root, emb: FileEmbeddings, session, scorer, expert,
                   segmenter: SegmenterConfig, cache_dir, progress: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A model with a ``short_expert`` decides as ``listen`` does: a trial whose test side holds
    less speech than ``below`` (at an SNR clean enough for the expert, where the sidecar sets
    one: :meth:`~rtverify.core.encoder.EncoderSession.expert_decides`) is scored by the expert (its vectors of both sides, its
    thresholds), the others by the model. The two models' cosines are on different scales, so
    a trial's score is its margin over the deciding model's own threshold for it (speech, SNR,
    room, enrolled speech: what ``listen`` compares with 0; see ``eer_margin``). Returns
    ``(scores, thresholds, routed)``: the margins, 0 or ``inf`` where the deciding model
    refuses (too little speech), which trials the expert decides."""
    from .core.scoring import Scorer

    short = expert[0]
    emb_s = embed_files(short, [Path(root) / f for f in trials.takes], segmenter=segmenter,
                        cache_dir=cache_dir, progress=progress,
                        label=f"embedding for {short.model_id}").voiceprints(trials.takes,
                                                                             trials.files)
    routed = expert_routed(session, trials, emb)
    scores = np.where(routed, score_trials(trials, emb_s.vectors, Scorer.for_model(short))
                      - model_thresholds(trials, emb_s, short.info.decision, refuse=False),
                      score_trials(trials, emb.vectors, scorer)
                      - model_thresholds(trials, emb, session.info.decision, refuse=False))
    refuse = np.where(routed, refused(trials, emb_s, short.info.decision),
                      refused(trials, emb, session.info.decision))
    return scores, np.where(refuse, np.inf, 0.0), routed


def decision_scores(trials: Trials, root, emb: FileEmbeddings, session, scorer,
                    segmenter: SegmenterConfig = SegmenterConfig(), cache_dir=None,
                    progress: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """How the model decides each trial, as ``listen`` would: ``(scores, thresholds, margins,
    routed)``, accepted where ``scores >= thresholds`` (``inf``: refused whatever the score, too
    little speech); ``margins`` the scores less each trial's own threshold whatever the
    refusals (their EER is the model's decisions with every threshold moved together);
    ``routed`` which trials the short expert decides (None without one). Without an expert the
    scores are the model's own (``scorer``); with one they are margins already
    (:func:`_routed_scores`)."""
    expert = session.short_expert
    if expert is not None:
        scores, thresholds, routed = _routed_scores(trials, root, emb, session, scorer, expert,
                                                    segmenter, cache_dir, progress)
        return scores, thresholds, scores, routed
    scores = score_trials(trials, emb.vectors, scorer)
    own = model_thresholds(trials, emb, session.info.decision, refuse=False)
    thresholds = np.where(refused(trials, emb, session.info.decision), np.inf, own)
    return scores, thresholds, scores - own, None


def evaluate(trials_path, root, session, *, segmenter: SegmenterConfig = SegmenterConfig(),
             scorer=None, cache_dir=None, progress: bool = False, margin: float = 0.0) -> dict:
    """The whole evaluation; returns the ``--json`` object (plus ``scores``/``labels`` arrays
    under ``_scores``/``_labels`` for plotting). ``margin`` raises every threshold of the
    model's (``listen --margin``) for the rates at its thresholds; the EER and minDCF do not
    depend on it."""
    from .core.scoring import Scorer

    t0 = time.perf_counter()
    trials = read_trials(trials_path, root)
    scorer = scorer or Scorer.for_model(session)
    takes = trials.takes
    emb = embed_files(session, [Path(root) / f for f in takes], segmenter=segmenter,
                      cache_dir=cache_dir, progress=progress,
                      label=f"embedding {Path(trials_path).name}")
    emb = emb.voiceprints(takes, trials.files)
    expert = session.short_expert
    t_embed = time.perf_counter() - t0  # an expert embeds its own vectors of the files too
    scores, thresholds, margins, routed = decision_scores(trials, root, emb, session, scorer,
                                                          segmenter, cache_dir, progress)
    if expert is not None:
        t_embed = time.perf_counter() - t0
    thresholds = thresholds + float(margin or 0.0)  # inf (no decision) stays inf
    rates = model_threshold_rates(trials, emb, scores, session.info.decision, thresholds)
    m = compute_metrics(scores, trials.labels)
    same = np.asarray(trials.labels) == 1
    eer_margin = eer(margins[same], margins[~same])[0]
    no_speech = [trials.files[i] for i in np.flatnonzero(~emb.has_speech)]
    result = {
        "trials_file": str(trials_path),
        "trials": m.trials, "target_trials": m.n_target, "nontarget_trials": m.n_nontarget,
        "eer": m.eer, "threshold_eer": m.threshold_eer, "eer_margin": eer_margin,
        "min_dcf": m.min_dcf, "threshold_min_dcf": m.threshold_min_dcf, "p_target": P_TARGET,
        "accuracy_at_eer": m.accuracy_at_eer,
        "accuracy_at_model_threshold": rates["accuracy"], "margin": float(margin or 0.0),
        "far_at_model_threshold": rates["far"], "frr_at_model_threshold": rates["frr"],
        "trials_not_decided": round(rates["undecided"] * m.trials),
        "far_at_model_threshold_decided": _finite_or_none(rates["far_decided"]),
        "frr_at_model_threshold_decided": _finite_or_none(rates["frr_decided"]),
        "snr_db_median": (float(np.nanmedian(emb.snr_db[trials.b]))
                          if np.isfinite(emb.snr_db[trials.b]).any() else None),
        "fall_db_median": (float(np.nanmedian(emb.fall_db[trials.b]))
                           if emb.fall_db is not None and np.isfinite(emb.fall_db[trials.b]).any()
                           else None),
        "n_files": len(trials.files), "files_without_speech": len(no_speech),
        "files_short_speech_only": int(emb.short_only.sum()),
        "trials_without_speech": int(np.isinf(scores).sum()),
        "files_without_speech_examples": no_speech[:5],
        "model_id": session.model_id, "score_norm": scorer.describe(),
        **({} if routed is None else {
            "short_expert": expert[0].model_id, "short_expert_below_s": expert[1],
            "short_expert_min_snr_db": session.info.short_expert_min_snr_db,
            "trials_by_short_expert": int(routed.sum()),
            "scores": "margins over the deciding model's thresholds"}),
        "window": asdict(session.window),
        "seconds": round(time.perf_counter() - t0, 2), "seconds_embedding": round(t_embed, 2),
        "_scores": scores, "_labels": trials.labels,
    }
    return result


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------

def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


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
                     f"{100 * r['accuracy_at_model_threshold']:.2f} % at the model's own "
                     + (f"raised by {r['margin']:+.3f} " if r.get("margin") else "")
                     + f"(false accepts {100 * r['far_at_model_threshold']:.2f} %, false "
                     f"rejects {100 * r['frr_at_model_threshold']:.2f} %)"),
        ("decided", f"{r['trials'] - r['trials_not_decided']} trials (the rest have too little "
                    "speech to decide, as listen says too_short: no verdict on the voice); of "
                    "those, "
                    + (f"false accepts {100 * r['far_at_model_threshold_decided']:.2f} %"
                       if r["far_at_model_threshold_decided"] is not None else "no different")
                    + ", "
                    + (f"false rejects {100 * r['frr_at_model_threshold_decided']:.2f} %"
                       if r["frr_at_model_threshold_decided"] is not None else "no same")),
        ("EER margin", f"{100 * r['eer_margin']:.2f} %  (of the scores less each trial's own "
                       "threshold: the model's decisions with all thresholds moved together)"),
        ("model", f"{r['model_id']}  scores: {r['score_norm']}"
                  + (f"; {r['trials_by_short_expert']} trials with under "
                     f"{r['short_expert_below_s']:g} s of test speech"
                     + (f" at an SNR of {r['short_expert_min_snr_db']:g} dB or more"
                        if r.get("short_expert_min_snr_db") is not None else "")
                     + " decided by "
                     f"{r['short_expert']} (scores are margins over the deciding model's "
                     "thresholds)" if r.get("short_expert") else "")),
        ("time", f"{r['seconds']:.1f} s ({r['seconds_embedding']:.1f} s embedding)"),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows)


def run_eval(trials: Path, root: Path, *, model: Path | None = None, threads: int = 1,
             cache_dir: Path | None = None, score_norm: bool = True, plot: Path | None = None,
             as_json: bool = False, progress: bool = False, margin: float | None = None
             ) -> str:
    """Everything ``rtverify eval`` does once its arguments are parsed (by
    :mod:`rtverify.cli.eval`): returns the text to print, one JSON object with ``as_json``, else
    the report. Problems raise :class:`~rtverify.errors.RtverifyError` (one line).

    :param model: an ``.onnx`` encoder with its sidecar (None: the shipped model).
    :param threads: onnxruntime threads (at least 1).
    :param cache_dir: keep embeddings there between runs (see :class:`EmbeddingCache`).
    :param score_norm: use the score normalisation the model's sidecar names (False: plain
        cosine).
    :param plot: also draw a DET curve to this image file (matplotlib).
    :param progress: show a progress bar on stderr.
    :param margin: raise the model's thresholds by this much for the rates at them (as
        ``listen --margin``).
    """
    from .core.encoder import EncoderSession
    from .core.scoring import Scorer

    read_trials(trials, root)  # fail fast, before loading the model
    if plot:
        check_plot_path(plot)
    session = EncoderSession(model, threads=threads)
    scorer = Scorer.for_model(session) if score_norm else Scorer(None)
    r = evaluate(trials, root, session, scorer=scorer, cache_dir=cache_dir, progress=progress,
                 margin=margin or 0.0)
    scores, labels = r.pop("_scores"), r.pop("_labels")
    if plot:
        plot_det(scores, labels, plot, f"{Path(trials).name} — {r['model_id']}")
    return json.dumps(r) if as_json else format_report(r)
