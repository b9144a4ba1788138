"""Open-set identification over large galleries: every enrolled voice as one row of a normalised
``(n, dim)`` float32 matrix, scored with one matrix product, kept in step with the store.

* Decisions read an immutable :class:`Snapshot` (one attribute read), so a change to the gallery
  never blocks or disturbs a decision in flight.
* Rows are append-only: a new voice is written into spare capacity past the rows any snapshot can
  see, then a new snapshot is published. A replaced (``--force``) or removed voice only adds its
  old row to the snapshot's ``dead`` rows (scored ``-inf``) and, when replaced, appends the new
  one. When dead rows pass a quarter of the matrix it is compacted into a fresh one (a copy, in the
  writer's thread; old snapshots keep the old matrix).
* :meth:`Gallery.start` watches the store: a PostgreSQL store wakes it through LISTEN/NOTIFY and
  hands over only what changed since its version; a file store is polled (the directory's
  stamp; each voice file's inode, modification time and size when the directory changed, or
  changed too recently to be trusted) and only the files that changed are read again.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..core.scoring import Decision, DecisionPolicy, Scorer, top_scores, voiceprints_for_band
from ..errors import InputError, RtverifyError, StoreError
from .voiceprints import SUFFIX

logger = logging.getLogger(__name__)

TOP_K = 5
"""Voices a decision reports scores for (the best first); all are scored."""
NARROW_CANDIDATES = 10
"""Narrowband input: the best voices by wideband score that are scored again against their
narrowband voiceprints (count)."""
SETTLED_NS = 1_000_000_000
"""A file store's directory stamp is trusted (its files are not looked at one by one) once it is
this much older than the look (nanoseconds): any later save or removal then lands in a later
timestamp tick, so it changes the stamp. A younger one could still be joined by a write in the
same tick, of the same size, that leaves it unchanged."""


@dataclass(frozen=True)
class Snapshot:
    """The gallery as it stood at one moment (never modified afterwards)."""

    matrix: np.ndarray
    """``(rows, dim)`` float32 unit vectors (dead rows included)."""
    names: Sequence[str]
    """``names[i]`` is row ``i``'s voice (for ``i < rows``)."""
    dead: np.ndarray
    """Rows that no longer count (replaced or removed voices)."""
    stats: tuple[np.ndarray, np.ndarray] | None
    """Cached cohort statistics of the rows (score normalisation), else None."""
    version: object
    """The store version it reflects."""

    @property
    def size(self) -> int:
        """Live voices."""
        return len(self.matrix) - len(self.dead)


class Gallery:
    """Enrolled voices as a matrix, scored against an utterance embedding.

    :param store: a voiceprint store (:func:`~rtverify.store.open_store`), or None for a gallery
        filled only through :meth:`apply`.
    :param model_id: the encoder; voices of another model are skipped (and reported).
    :param dim: the embedding dimension.
    :param names: only these voices (default: every usable one).
    :param scorer: the model's scorer (:meth:`Scorer.for_model`); plain cosine by default.
    """

    def __init__(self, store, model_id: str, dim: int, *, names: Iterable[str] | None = None,
                 scorer: Scorer | None = None) -> None:
        self.store = store
        self.model_id = model_id
        self.dim = int(dim)
        # as the stores name voices (NFC): a name typed in another Unicode form is the same voice
        self.only = {unicodedata.normalize("NFC", n) for n in names} if names else None
        self.scorer = scorer or Scorer(None)
        self._write = threading.Lock()
        self._buf = np.zeros((0, self.dim), dtype=np.float32)
        self._mu = np.zeros(0)
        self._sd = np.ones(0)
        self._names: list[str] = []
        self._rows: dict[str, int] = {}
        self._enrol: dict[str, float | None] = {}  # seconds each voice was enrolled on
        self._falls: dict[str, float | None] = {}  # how steeply its enrolment fell silent
        self._dead: list[int] = []
        self._n = 0
        self._version = None
        self._stamps: dict | None = None  # a file store: its files' stamps when last read,
        self._folder = None  # its directory's stamp then,
        self._settled = False  # and whether that was old enough to be trusted
        self._generation = itertools.count(1)  # a file store's versions
        self._snap = self._publish()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.problems: list[str] = []
        """Voices met that could not be used (one line each), from the last refresh."""
        self.changed = threading.Condition()
        """Notified after every refresh that changed something (tests, metrics)."""

    # -- reading (any thread, never blocks) --------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snap

    def __len__(self) -> int:
        return self._snap.size

    def __contains__(self, name: str) -> bool:
        return name in self._rows

    def scores(self, embedding: np.ndarray, k: int = TOP_K,
               snapshot: Snapshot | None = None) -> dict[str, float]:
        """The ``k`` best scores, by name, best first."""
        snap = snapshot or self._snap
        if snap.size == 0:
            return {}
        scores = self.scorer.matrix_scores(embedding, snap.matrix, snap.stats)
        if len(snap.dead):
            scores[snap.dead] = -np.inf
        return top_scores(scores, snap.names, k)

    def decide(self, embedding: np.ndarray, speech_s: float, policy: DecisionPolicy,
               k: int = TOP_K, *, snr_db: float | None = None, band: str = "wide",
               fall_db: float | None = None) -> Decision:
        """Open-set identification: the best voice if it clears its threshold (for ``speech_s``
        voiced seconds at an estimated SNR of ``snr_db`` decibels and a steepest fall of
        ``fall_db``, and the speech the voice was enrolled on), else nobody. ``band="narrow"`` (an 8 kHz call): see
        :meth:`narrow_scores`."""
        if band == "narrow":
            scores = self.narrow_scores(embedding, k)
        else:
            scores = self.scores(embedding, k)
        offsets = policy.offsets_by_amount({n: self._enrol.get(n) for n in scores})
        falls = policy.falls_by_value({n: self._falls.get(n) for n in scores})
        return policy.decide(scores, speech_s, snr_db, offsets, fall_db=fall_db,
                             enrol_falls=falls)

    def narrow_scores(self, embedding: np.ndarray, k: int = TOP_K) -> dict[str, float]:
        """The ``k`` best scores of narrowband input, as ``listen`` scores it: the
        :data:`NARROW_CANDIDATES` best voices by wideband score, scored again against their
        narrowband voiceprints, read from the store (narrowband requests are rare, and keeping
        every voice's second embedding in memory would double the gallery). A voice without a
        narrowband embedding (enrolled before band matching), one gone from the store
        meanwhile, or a gallery without a store keeps its wideband score."""
        wide = self.scores(embedding, max(k, NARROW_CANDIDATES))
        if self.store is None or not wide:
            return dict(list(wide.items())[:k])
        voices = {}
        for name in wide:
            try:
                voices[name] = self.store.load(name, self.model_id, self.dim).vector()
            except RtverifyError:
                continue
        prints, _ = voiceprints_for_band(voices, "narrow")
        narrow = self.scorer.scores(embedding, prints)
        scores = {**wide, **narrow}
        return dict(sorted(scores.items(), key=lambda item: -item[1])[:k])

    # -- writing (one writer at a time; readers are never held up) -----------------------
    def _publish(self) -> Snapshot:
        n = self._n
        stats = (self._mu[:n], self._sd[:n]) if self.scorer.per_voice_stats else None
        self._snap = Snapshot(self._buf[:n], self._names, np.array(self._dead, dtype=np.int64),
                              stats, self._version)
        return self._snap

    def _grow(self, extra: int) -> None:
        need = self._n + extra
        if need <= len(self._buf):
            return
        cap = max(need, 2 * len(self._buf), 64)
        buf = np.zeros((cap, self.dim), dtype=np.float32)
        buf[:self._n] = self._buf[:self._n]
        self._buf = buf
        if self.scorer.per_voice_stats:
            self._mu = np.concatenate([self._mu[:self._n], np.zeros(cap - self._n)])
            self._sd = np.concatenate([self._sd[:self._n], np.ones(cap - self._n)])

    def _compact(self) -> None:
        keep = np.setdiff1d(np.arange(self._n), np.array(self._dead, dtype=np.int64))
        self._buf = np.ascontiguousarray(self._buf[keep])
        if self.scorer.per_voice_stats:
            self._mu, self._sd = self._mu[keep], self._sd[keep]
        self._names = [self._names[i] for i in keep]
        self._rows = {name: i for i, name in enumerate(self._names)}
        self._dead, self._n = [], len(keep)

    def apply(self, changed: Sequence[tuple[str, np.ndarray]], removed: Iterable[str] = (),
              *, full: bool = False, version=None) -> None:
        """Add or replace ``(name, unit embedding)`` voices and remove others; ``full``: the
        gallery becomes exactly ``changed``. Publishes one new snapshot."""
        with self._write:
            if full:
                self._buf = np.zeros((0, self.dim), dtype=np.float32)
                self._mu, self._sd = np.zeros(0), np.ones(0)
                self._names, self._rows, self._dead, self._n = [], {}, [], 0
                self._enrol = {}
                self._falls = {}
            if self.only is not None:
                changed = [(n, v) for n, v in changed if n in self.only]
            for name in removed:
                self._enrol.pop(name, None)
                self._falls.pop(name, None)
                row = self._rows.pop(name, None)
                if row is not None:
                    self._dead.append(row)
            if changed:
                vecs = np.asarray(np.stack([np.asarray(v, dtype=np.float32) for _, v in changed]),
                                  dtype=np.float32)
                if vecs.shape[1] != self.dim:
                    raise ValueError(f"embeddings of {vecs.shape[1]} values, gallery is {self.dim}")
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                self._grow(len(changed))
                start = self._n
                self._buf[start:start + len(changed)] = vecs  # rows no snapshot can see yet
                if self.scorer.per_voice_stats:
                    mu, sd = self.scorer.cohort_stats(vecs)
                    self._mu[start:start + len(changed)] = mu
                    self._sd[start:start + len(changed)] = sd
                for i, (name, v) in enumerate(changed):
                    self._enrol[name] = getattr(v, "enrol_speech_s", None)
                    self._falls[name] = getattr(v, "enrol_fall_db", None)
                    old = self._rows.get(name)
                    if old is not None:
                        self._dead.append(old)
                    self._rows[name] = start + i
                    self._names.append(name)  # past every snapshot's rows
                self._n = start + len(changed)
            if len(self._dead) > max(64, self._n // 4):
                self._compact()
            self._version = version if version is not None else self._version
            self._publish()
        with self.changed:
            self.changed.notify_all()

    # -- keeping up with the store ---------------------------------------------------------
    def refresh(self) -> bool:
        """Bring the gallery up to the store's version; True if anything changed."""
        if self.store is None:
            return False
        if hasattr(self.store, "changes"):
            ch = self.store.changes(self._version, self.model_id, self.dim)
            if ch.version == self._version and not ch.full:
                return False
            good = [(e.name, e.voiceprint.vector()) for e in ch.changed if e.voiceprint]
            bad = [e for e in ch.changed if e.voiceprint is None]
            self.problems = [e.problem for e in bad]
            for problem in self.problems:
                logger.warning("%s; skipped", problem)
            self.apply(good, list(ch.removed) + [e.name for e in bad], full=ch.full,
                       version=ch.version)
            return True
        return self._refresh_files()

    def _refresh_files(self) -> bool:
        """A file store: each voice file's stamp (:meth:`VoiceprintStore.stamps`) against the
        one it had when last read; only the voices whose files changed are read again.

        Every save or removal changes the directory's stamp, so the files are only looked at
        when it changed, or when it was too recent to be trusted: a ``--force`` re-enrolment
        landing in the same timestamp tick as the last look, of the same size, leaves the
        directory's stamp as it was (:data:`SETTLED_NS`)."""
        try:
            st = os.stat(self.store.root)
            folder = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:  # missing, or unreadable: stamps() says which
            folder = None
        now_ns = time.time_ns()
        if self._stamps is not None and folder == self._folder and self._settled:
            return False
        stamps = self.store.stamps()  # taken before the files are read: a later write is seen
        settled = folder is not None and now_ns - folder[0] > SETTLED_NS
        if stamps == self._stamps:
            self._folder, self._settled = folder, settled
            return False
        old = self._stamps or {}
        changed = sorted(n for n, st in stamps.items() if old.get(n) != st)
        removed = [n for n in old if n not in stamps]
        good, problems = [], []
        for name in changed:
            try:
                good.append((name, self.store.load(name, self.model_id, self.dim).vector()))
            except (StoreError, InputError) as err:
                removed.append(name)
                if os.path.lexists(self.store.root / (name + SUFFIX)):  # else: removed meanwhile
                    problems.append(str(err))
        self.problems = problems
        for problem in problems:
            logger.warning("%s; skipped", problem)
        self.apply(good, removed, full=self._stamps is None, version=next(self._generation))
        # only now: if anything above failed, the next look reads these files again
        self._stamps, self._folder, self._settled = stamps, folder, settled
        return True

    def _wait(self, poll_s: float) -> None:
        if hasattr(self.store, "wait_for_change"):
            self.store.wait_for_change(-1 if self._version is None else self._version, poll_s)
        else:
            self._stop.wait(poll_s)

    def start(self, poll_s: float = 0.5) -> "Gallery":
        """Load the store now, then follow it from a background thread."""
        self.refresh()

        def watch():
            failing = None  # the unexpected failure last reported (each is logged once)
            while not self._stop.is_set():
                try:
                    self._wait(poll_s)
                    if not self._stop.is_set():
                        self.refresh()
                    if failing is not None:
                        logger.warning("%s: following the voice store again", self.store.root)
                        failing = None
                except RtverifyError as err:  # the store went away for a while: keep serving
                    logger.warning("%s; retrying", err)
                    self._stop.wait(min(5.0, 4 * poll_s))
                except Exception as err:  # a bug must not stop the gallery following the store
                    problem = f"{type(err).__name__}: {err}"
                    if problem != failing:
                        logger.exception("%s: unexpected error while following the voice store "
                                         "(%s); still serving the voices loaded, retrying",
                                         self.store.root, problem)
                    else:
                        logger.debug("%s: %s again; retrying", self.store.root, problem)
                    failing = problem
                    self._stop.wait(min(5.0, 4 * poll_s))

        self._thread = threading.Thread(target=watch, name="rtverify-gallery", daemon=True)
        self._thread.start()
        return self

    def wait_for(self, predicate, timeout_s: float) -> bool:
        """Wait until ``predicate(gallery)`` holds (tests and benchmarks)."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
