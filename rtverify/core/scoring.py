"""Scores and decisions: cosine similarity against each voiceprint, then a policy that accepts the
best voice only if it clears the (length-dependent) threshold, and otherwise rejects."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..config import DecisionConfig, FeatureConfig, check_decision


def cosine_scores(embedding: np.ndarray, voiceprints: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Cosine similarity of a unit embedding with each unit voiceprint, by name."""
    if not voiceprints:
        return {}
    names = list(voiceprints)
    matrix = np.stack([np.asarray(voiceprints[n], dtype=np.float32) for n in names])
    sims = matrix @ np.asarray(embedding, dtype=np.float32)
    return {n: float(s) for n, s in zip(names, sims)}


def top_scores(scores: np.ndarray, names: Sequence[str], k: int) -> dict[str, float]:
    """The ``k`` best of an array of scores (row ``i`` is ``names[i]``), by name, best first.
    O(n) (``argpartition``), for galleries too large to score into a dict."""
    n = len(scores)
    if n == 0 or k <= 0:
        return {}
    idx = np.arange(n) if n <= k else np.argpartition(scores, n - k)[n - k:]
    idx = idx[np.argsort(scores[idx])[::-1]]
    return {names[i]: float(scores[i]) for i in idx if np.isfinite(scores[i])}


GALLERY_BLOCK = 2048
"""Rows of a gallery matrix scored at a time by :func:`gallery_scores` (2 MB of float32 at 256
dimensions: it stays in cache while every vector is scored against it)."""


def gallery_scores(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Raw scores ``(k, n)`` of ``k`` vectors against the ``n`` rows of a gallery matrix in one
    pass over it. BLAS multiplies a tall matrix by a few vectors slower than it runs as many
    matrix-vector products (12.4 against 9.4 ms for two vectors at 100 000 voices, one core);
    scoring each cache-sized block of rows against every vector reads the matrix from memory
    once (7.4 ms)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if len(vectors) == 1:
        return (matrix @ vectors[0])[None]
    out = np.empty((len(vectors), len(matrix)), dtype=np.float32)
    for s in range(0, len(matrix), GALLERY_BLOCK):
        block = matrix[s:s + GALLERY_BLOCK]
        for j, v in enumerate(vectors):
            np.dot(block, v, out=out[j, s:s + GALLERY_BLOCK])
    return out


@dataclass(frozen=True)
class Decision:
    """The verdict on one piece of speech."""

    speaker: str | None
    """The accepted voice, or None (nobody passed, too little speech, nobody enrolled)."""
    best: str | None
    """The best-scoring voice whether accepted or not (None if nobody is enrolled)."""
    score: float | None
    """The best score."""
    scores: dict[str, float] = field(default_factory=dict)
    """Every voice's score."""
    accepted: bool = False
    threshold: float = 0.0
    """The threshold that applied (it may depend on the amount of speech)."""
    margin: float | None = None
    """Best score minus the threshold (positive: accepted by that much)."""
    runner_up_gap: float | None = None
    """Best score minus the second best (None with one voice)."""
    reason: str = ""
    """``accepted``, ``below_threshold``, ``too_short`` or ``no_voices``."""
    snr_db: float | None = None
    """The estimated SNR the threshold was set for (decibels; None: unknown, no SNR offset)."""


class DecisionPolicy:
    """Threshold from the model's sidecar (optionally by amount of speech and by estimated SNR),
    overridable.

    :param cfg: the model's decision settings.
    :param threshold: if given, replaces the model's threshold at every length and SNR.
    :param margin: added to every threshold the model calibrated (by length, SNR, room and
        enrolled speech): positive lets fewer strangers in and asks the enrolled voice again
        more often, negative the reverse. Not with ``threshold``.
    """

    def __init__(self, cfg: DecisionConfig, threshold: float | None = None,
                 margin: float | None = None) -> None:
        threshold, margin = check_decision(threshold, margin)
        self.cfg = cfg
        self.override = threshold
        self.margin = margin

    def describe(self) -> str:
        """The thresholds for people (the ready event, the console): ``0.60`` set by hand,
        ``0.82-0.84 by length, ...``, or ``margin +0.02 on 0.82-0.84 by length, ...`` (the
        margin first: a narrow console cuts the end)."""
        if self.override is not None:
            return f"{self.override:.2f}"
        return (f"margin {self.margin:+g} on " if self.margin else "") + self.cfg.describe()

    def threshold_for(self, speech_s: float, snr_db: float | None = None,
                      fall_change_db: float | None = None) -> float:
        """The threshold for ``speech_s`` voiced seconds at an estimated SNR of ``snr_db``
        decibels and a change of ``fall_change_db`` in the steepest fall from the enrolment's
        (None: unknown), the margin included."""
        return self.override if self.override is not None else \
            self.cfg.threshold_for(speech_s, snr_db, fall_change_db) + self.margin

    def falls_for(self, voiceprints: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Each voice's enrolment fall (:attr:`VoiceVector.enrol_fall_db`; only the known ones,
        none without the model's table or under an overriding threshold)."""
        return self.falls_by_value({n: getattr(v, "enrol_fall_db", None)
                                    for n, v in voiceprints.items()})

    def falls_by_value(self, falls: Mapping[str, float | None]) -> dict[str, float]:
        """:meth:`falls_for`, given each voice's enrolment fall (None: unknown)."""
        if self.override is not None or not self.cfg.threshold_offsets_by_fall_change_db:
            return {}
        return {n: f for n, f in falls.items() if f is not None and math.isfinite(f)}

    def offsets_for(self, voiceprints: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Each voice's threshold offset for the speech it was enrolled on (only the nonzero
        ones; none under an overriding threshold)."""
        return self.offsets_by_amount({n: getattr(v, "enrol_speech_s", None)
                                       for n, v in voiceprints.items()})

    def offsets_by_amount(self, amounts: Mapping[str, float | None]) -> dict[str, float]:
        """:meth:`offsets_for`, given each voice's enrolled seconds (None: unknown)."""
        if self.override is not None or not self.cfg.threshold_offsets_by_enrol_s:
            return {}
        out = {n: self.cfg.enrol_offset(a) for n, a in amounts.items()}
        return {n: o for n, o in out.items() if o}

    def decide(self, scores: Mapping[str, float], speech_s: float,
               snr_db: float | None = None,
               offsets: Mapping[str, float] | None = None, *,
               fall_db: float | None = None,
               enrol_falls: Mapping[str, float] | None = None) -> Decision:
        """The decision on one utterance's ``scores``. ``offsets``: per-voice threshold offsets
        (:meth:`offsets_for`); the voice with the largest margin over its own threshold is then
        the best (with none, simply the highest score). ``fall_db`` (the utterance's steepest
        fall, :func:`fall_db`) and ``enrol_falls`` (each voice's, :meth:`falls_for`): a voice
        heard in a more reverberant room than it was enrolled in gets the model's offset for
        that change where it is lower than the SNR's."""
        threshold = self.threshold_for(speech_s, snr_db)
        if enrol_falls and fall_db is not None and math.isfinite(fall_db) and \
                self.override is None:
            snr_off = self.cfg.offset_for(snr_db)
            room = {n: self.cfg.offset_for(snr_db, fall_db - enrol_falls[n]) - snr_off
                    for n in scores if n in enrol_falls}
            room = {n: o for n, o in room.items() if o}
            if room:
                offsets = {n: (offsets or {}).get(n, 0.0) + room.get(n, 0.0)
                           for n in set(room) | set(offsets or {})}
        if not scores:
            return Decision(None, None, None, {}, False, threshold, None, None, "no_voices",
                            snr_db)
        if offsets:
            ranked = sorted(scores.items(), key=lambda kv: kv[1] - offsets.get(kv[0], 0.0),
                            reverse=True)
            threshold += offsets.get(ranked[0][0], 0.0)
        else:
            ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        best, score = ranked[0]
        gap = score - ranked[1][1] if len(ranked) > 1 else None
        margin = score - threshold
        if speech_s < self.cfg.min_speech_s:
            return Decision(None, best, score, dict(scores), False, threshold, margin, gap,
                            "too_short", snr_db)
        accepted = score >= threshold
        return Decision(best if accepted else None, best, score, dict(scores), accepted, threshold,
                        margin, gap, "accepted" if accepted else "below_threshold", snr_db)


class Scorer:
    """Turns embeddings into scores: cosine similarity, optionally normalised against a cohort.

    Two normalisations, named by the sidecar's ``score_norm.method``:

    * ``"probe_shift"`` (the shipped default's since stop 26): the cosine ``s`` less
      ``weight * (mu_t - centre)``, where ``mu_t`` is the mean of the utterance's ``top_k``
      cohort cosines: an utterance that sounds like many voices (a condition that draws
      every voice together: a room, babble, a narrow band) scores lower against every
      voiceprint, one that sounds like few scores higher. Scores stay cosines in units
      (``centre`` is the cohort's own typical ``mu``), voiceprints need no statistics, and
      window cosines can still be compared with the thresholds. ``mu`` counts no lower than
      ``lowest`` (the cohort's own 5th percentile): an utterance unlike any voice the cohort
      holds (another language, acted emotion, an unusual microphone) is not raised without
      bound.
    * ``"asnorm"`` (adaptive symmetric normalisation): each side of a comparison is set
      against the ``top_k`` cohort embeddings most similar to it, and ``s`` becomes
      ``0.5 * ((s - mu_a) / sd_a + (s - mu_b) / sd_b)``: other units than a cosine.

    The same scorer is used by ``listen``/``verify`` (through
    :class:`~rtverify.core.pipeline.Verifier`), by ``eval`` and by the calibrations.

    :param cohort: float32 ``(n, dim)`` unit embeddings of speakers outside every reported list,
        or None for plain cosine.
    :param top_k: cohort members per side.
    :param speakers: the cohort rows' speakers (``(n,)`` strings), so that a calibration can
        leave a speaker's own rows out (:meth:`without`); optional.
    """

    METHODS = ("asnorm", "probe_shift")

    def __init__(self, cohort: np.ndarray | None, *, top_k: int = 100,
                 method: str = "asnorm", weight: float = 0.5, centre: float = 0.0,
                 lowest: float | None = None, speakers: Sequence[str] | None = None) -> None:
        if method not in self.METHODS:
            raise ValueError(f"unknown score normalisation {method!r}")
        self.method = method
        self.cohort = None if cohort is None else np.ascontiguousarray(cohort, dtype=np.float32)
        if self.cohort is not None:
            if self.cohort.ndim != 2 or len(self.cohort) < 2:
                raise ValueError(f"cohort must be (n >= 2, dim), got {self.cohort.shape}")
            top_k = min(int(top_k), len(self.cohort))
        self.top_k = max(2, int(top_k))
        self.weight = float(weight)
        self.centre = float(centre)
        self.lowest = -math.inf if lowest is None else float(lowest)
        if not (math.isfinite(self.weight) and math.isfinite(self.centre)) or \
                math.isnan(self.lowest) or self.lowest > self.centre:
            raise ValueError("score_norm weight and centre must be finite numbers, lowest at "
                             "most the centre")
        self.speakers = None if speakers is None else np.asarray(speakers).astype(str)
        if self.speakers is not None and self.cohort is not None and \
                len(self.speakers) != len(self.cohort):
            raise ValueError(f"{len(self.speakers)} cohort speakers for {len(self.cohort)} rows")
        self._vp_stats: dict[str, tuple[bytes, float, float]] = {}

    @property
    def per_voice_stats(self) -> bool:
        """Whether voiceprints carry cohort statistics and scores are not cosines (AS-norm):
        then matrix shortcuts over raw cosines do not apply."""
        return self.cohort is not None and self.method == "asnorm"

    @classmethod
    def for_model(cls, session) -> "Scorer":
        """The scorer a model's sidecar asks for (``score_norm``; plain cosine without one),
        made once per session and sidecar contents (loading a cohort takes ~16 ms: not on every
        ``verify`` a server answers)."""
        raw = session.info.raw
        cached = getattr(session, "_scorer", None)
        if cached is not None and cached[0] is raw:
            return cached[1]
        scorer = cls.from_sidecar(raw, session.path)
        session._scorer = (raw, scorer)
        return scorer

    @classmethod
    def from_sidecar(cls, raw: Mapping, model_path) -> "Scorer":
        from pathlib import Path

        from ..errors import ModelError

        spec = raw.get("score_norm")
        if not spec:
            return cls(None)
        where = Path(model_path).with_suffix(".json")
        try:
            cohort_path = Path(model_path).parent / spec["cohort"]
            cohort, speakers = load_cohort(cohort_path)
            dim = raw.get("embedding_dim")
            if cohort.ndim != 2 or (dim is not None and cohort.shape[1] != dim):
                raise ValueError(f"{cohort_path.name} has shape {cohort.shape}, "
                                 f"expected (n, {dim})")
            if not np.isfinite(cohort).all():
                raise ValueError(f"{cohort_path.name} holds non-finite values")
            return cls(cohort, top_k=int(spec.get("top_k", 100)),
                       method=str(spec.get("method", "asnorm")),
                       weight=float(spec.get("weight", 0.5)),
                       centre=float(spec.get("centre", 0.0)),
                       lowest=None if spec.get("lowest") is None else float(spec["lowest"]),
                       speakers=speakers)
        except (KeyError, TypeError, ValueError, OSError) as err:
            raise ModelError(f"{where}: unusable score_norm cohort ({type(err).__name__}: "
                             f"{err})") from None

    def describe(self) -> str:
        if self.cohort is None:
            return "cosine"
        if self.method == "probe_shift":
            return (f"probe_shift (cohort {len(self.cohort)}, top {self.top_k}, "
                    f"weight {self.weight:g})")
        return f"{self.method} (cohort {len(self.cohort)}, top {self.top_k})"

    def without(self, speakers: Sequence[str]) -> "Scorer":
        """This scorer with the cohort rows of ``speakers`` left out (a calibration scoring a
        speaker the cohort holds: at run time nobody heard is in the cohort). Itself when the
        cohort has no speaker labels or none of them."""
        if self.cohort is None or self.speakers is None:
            return self
        keep = ~np.isin(self.speakers, np.asarray(list(speakers)).astype(str))
        if keep.all():
            return self
        return Scorer(self.cohort[keep], top_k=self.top_k, method=self.method,
                      weight=self.weight, centre=self.centre, lowest=self.lowest,
                      speakers=self.speakers[keep])

    def _top(self, embeddings: np.ndarray) -> np.ndarray:
        """The top-k cohort cosines of each row, ``(n, top_k)`` (in no order)."""
        sims = np.atleast_2d(np.asarray(embeddings, dtype=np.float32)) @ self.cohort.T
        return np.partition(sims, len(self.cohort) - self.top_k, axis=1)[:, -self.top_k:]

    def cohort_stats(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the top-k cohort cosines of each row, ``(n,)`` each."""
        top = self._top(embeddings)
        return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-4)

    def shift(self, embeddings: np.ndarray) -> np.ndarray:
        """What ``probe_shift`` takes off the scores of each row (utterance embeddings),
        ``(n,)``; zeros for other scorings."""
        n = len(np.atleast_2d(embeddings))
        if self.cohort is None or self.method != "probe_shift":
            return np.zeros(n)
        mu = self._top(embeddings).mean(axis=1)  # (what cohort_stats gives, without the sd)
        return self.weight * (np.maximum(mu.astype(np.float64), self.lowest) - self.centre)

    def shift_cosines(self, raw: np.ndarray, heard: np.ndarray) -> np.ndarray:
        """Scores from cosines already computed against the voices (a large gallery's matrix
        product): ``raw`` ``(n,)`` of one heard embedding ``(dim,)``, or ``(m, n)`` of ``m``
        heard rows ``(m, dim)``; the cosines themselves unless ``probe_shift``. Not for
        AS-norm, which needs the voices' statistics (:meth:`matrix_scores`)."""
        if self.cohort is None or self.method != "probe_shift":
            return raw
        shift = self.shift(heard)
        return raw - (shift[0] if np.ndim(raw) == 1 else shift[:, None]).astype(raw.dtype)

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Scores of row ``i`` of ``a`` (enrolled side) against row ``i`` of ``b`` (heard)."""
        a = np.atleast_2d(np.asarray(a, dtype=np.float32))
        b = np.atleast_2d(np.asarray(b, dtype=np.float32))
        raw = np.einsum("ij,ij->i", a, b).astype(np.float64)
        if self.cohort is None:
            return raw
        if self.method == "probe_shift":
            return raw - self.shift(b)
        mu_a, sd_a = self.cohort_stats(a)
        mu_b, sd_b = self.cohort_stats(b)
        return 0.5 * ((raw - mu_a) / sd_a + (raw - mu_b) / sd_b)

    def probe_scores(self, voiceprints: np.ndarray, probe: np.ndarray,
                     speaker: str | None = None) -> np.ndarray:
        """Scores of one heard embedding against every row of ``voiceprints`` (unit
        ``(n, dim)``), as a calibration needs them: with ``speaker``, the probe's speaker's own
        cohort rows are left out (:meth:`without`), as they are for anyone at run time."""
        sc = self if speaker is None else self.without([speaker])
        vps = np.atleast_2d(np.asarray(voiceprints, dtype=np.float32))
        return sc.pair_scores(vps, np.repeat(np.asarray(probe, np.float32)[None], len(vps), 0))

    def scores(self, embedding: np.ndarray,
               voiceprints: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Score of one utterance embedding against each voiceprint, by name."""
        raw = cosine_scores(embedding, voiceprints)
        if self.cohort is None or not raw:
            return raw
        if self.method == "probe_shift":
            off = float(self.shift(embedding)[0])
            return {name: s - off for name, s in raw.items()}
        mu_t, sd_t = (float(x[0]) for x in self.cohort_stats(embedding))
        out = {}
        for name, s in raw.items():
            mu_v, sd_v = self._voiceprint_stats(name, voiceprints[name])
            out[name] = 0.5 * ((s - mu_v) / sd_v + (s - mu_t) / sd_t)
        return out

    def matrix_scores(self, embedding: np.ndarray, matrix: np.ndarray,
                      stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Scores of one embedding against every row of a unit ``(n, dim)`` float32 matrix (a
        gallery): one matrix product. With AS-norm, ``stats`` are the rows' cached
        :meth:`cohort_stats` (computed here when not given)."""
        raw = matrix @ np.asarray(embedding, dtype=np.float32)
        if self.cohort is None or len(raw) == 0:
            return raw
        if self.method == "probe_shift":
            return self.shift_cosines(raw, embedding)
        mu_v, sd_v = stats if stats is not None else self.cohort_stats(matrix)
        mu_t, sd_t = (float(x[0]) for x in self.cohort_stats(embedding))
        return 0.5 * ((raw - mu_v) / sd_v + (raw - mu_t) / sd_t)

    def _voiceprint_stats(self, name: str, vec: np.ndarray) -> tuple[float, float]:
        key = np.asarray(vec, dtype=np.float32).tobytes()
        hit = self._vp_stats.get(name)
        if hit is None or hit[0] != key:
            mu, sd = self.cohort_stats(vec)
            hit = (key, float(mu[0]), float(sd[0]))
            self._vp_stats[name] = hit
        return hit[1], hit[2]


def load_cohort(path) -> tuple[np.ndarray, np.ndarray | None]:
    """A cohort file: ``.npy`` (the embeddings) or ``.npz`` (``vectors``, and ``speakers``
    when known); float32 embeddings, speakers as strings or None."""
    from pathlib import Path

    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data.astype(np.float32), None
    with data:
        if "vectors" not in data.files:
            raise ValueError(f"{Path(path).name} holds no 'vectors'")
        speakers = data["speakers"].astype(str) if "speakers" in data.files else None
        return data["vectors"].astype(np.float32), speakers


# -- band-matched scoring (issue 12) -------------------------------------------------------------
NARROW_CLIFF_DB = 15.0
"""Input is narrowband when the energy at 3.0-3.8 kHz exceeds that at 4.3-5.5 kHz by more than
this (decibels): band-limited audio falls off a cliff at its edge, wideband speech slopes off
gently; a noise bed added after the band limit does not fill the cliff. Measured in
tools/room_streams.py-style material: see the README section "Real rooms"."""


def _centres_hz(feature_cfg) -> np.ndarray:
    """The centre frequency of each column of a front-end's rows (hertz)."""
    from .fbank import FbankConfig, kaldi_mel_banks
    from .features import mel_filterbank

    if isinstance(feature_cfg, FbankConfig):
        fb = kaldi_mel_banks(feature_cfg)  # (n_mels, n_fft // 2 + 1)
        freqs = np.arange(fb.shape[1]) * feature_cfg.sample_rate_hz / feature_cfg.n_fft
    else:
        fb = mel_filterbank(feature_cfg)  # (n_mels, n_bins)
        freqs = np.linspace(0, feature_cfg.sample_rate_hz / 2, fb.shape[1])
    return (fb * freqs).sum(axis=1) / np.maximum(fb.sum(axis=1), 1e-12)


def _band_masks(feature_cfg) -> tuple[np.ndarray, np.ndarray]:
    """Which rows' columns are filters centred at 3.0-3.8 kHz, and which at 4.3-5.5 kHz."""
    centres = _centres_hz(feature_cfg)
    below = (centres >= 3000.0) & (centres <= 3800.0)
    above = (centres >= 4300.0) & (centres <= 5500.0)
    return below, above


_MASKS: dict = {}


def band_cliff_db(rows: np.ndarray, feature_cfg) -> float:
    """Energy at 3.0-3.8 kHz over energy at 4.3-5.5 kHz in the rows of a front-end, float32
    ``(n, n_mels)`` made with ``feature_cfg`` (decibels; per band, averaged over the rows):
    mel power rows (the LSTM's :class:`FeatureConfig`, power or log) or Kaldi log fbank rows
    (CAM++'s :class:`~rtverify.core.fbank.FbankConfig`, natural log, before mean
    normalisation)."""
    masks = _MASKS.get(feature_cfg)
    if masks is None:
        masks = _MASKS[feature_cfg] = _band_masks(feature_cfg)
    below, above = masks
    power = np.exp(rows.astype(np.float64)) if getattr(feature_cfg, "log", True) else rows
    total = power.sum(axis=0, dtype=np.float64)
    return float(10 * np.log10((total[below].mean() + 1e-20) / (total[above].mean() + 1e-20)))


def effective_band(rows: np.ndarray, feature_cfg) -> str:
    """``"narrow"`` when the rows fall off a cliff at 4 kHz, else ``"wide"``. Works on either
    front-end's rows (see :func:`band_cliff_db`); a front-end that does not reach 5.5 kHz is
    always ``wide`` (there is no cliff to see). A fusion's rows are judged by its first part's
    columns (the parts hear the same audio)."""
    from .fbank import FbankConfig
    from .fusion import ConcatFeatureConfig

    if len(rows) == 0:
        return "wide"
    if isinstance(feature_cfg, ConcatFeatureConfig):
        a, b = feature_cfg.columns[0]
        return effective_band(rows[:, a:b], feature_cfg.parts[0])
    if isinstance(feature_cfg, FbankConfig):
        top = feature_cfg.high_hz if feature_cfg.high_hz > 0 else \
            feature_cfg.sample_rate_hz / 2 + feature_cfg.high_hz
    elif isinstance(feature_cfg, FeatureConfig):
        top = feature_cfg.fmax_hz
    else:
        return "wide"
    if top < 5500.0:
        return "wide"
    return "narrow" if band_cliff_db(rows, feature_cfg) > NARROW_CLIFF_DB else "wide"


FALL_BAND_HZ = (250.0, 3800.0)
"""Columns whose filters are centred in this range are read by :func:`fall_db` (inside the
telephone band, so a narrowband call is judged on the same bands as wideband speech)."""
FALL_MIN_ROWS = 50
"""Fewer rows than this (half a second) give no estimate (count)."""
FALL_MIN_SPEECH_S = 1.0
"""Decisions on less voiced speech than this carry no estimate (seconds): from fewer falls the
estimate reads shorter speech as more reverberant (a 1 s keyword about 0.8 dB per 10 ms lower
than two), and an offset for the change from the enrolment then let 1.6 points more of the
default's impostors through on dev clean 1 s voiceprint trials, for no fewer misses."""
FALL_PERCENTILE = 3.0
_FALL_COLUMNS: dict = {}


def fall_db(rows: np.ndarray, feature_cfg) -> float | None:
    """How steeply the speech in ``rows`` falls silent: per band, the level change per row (10
    ms) from the rows louder than the band's median, its 3rd percentile (the steepest falls);
    the median over the bands between FALL_BAND_HZ, sign turned (decibels per 10 ms, positive;
    None for fewer than FALL_MIN_ROWS rows). A room's reverberation bounds how fast a band can
    fall (60 dB per RT60), dry speech stops abruptly: dry LibriSpeech reads about 10, the same
    speech in a reverberant room about 7 (``python -m tools.reverb_probe``); noise lowers it
    too, less. Reads mel power rows (the LSTM's), Kaldi log fbank rows (CAM++'s) and a fusion's
    first part."""
    from .fbank import FbankConfig
    from .fusion import ConcatFeatureConfig

    if isinstance(feature_cfg, ConcatFeatureConfig):
        a, b = feature_cfg.columns[0]
        return fall_db(rows[:, a:b], feature_cfg.parts[0])
    if len(rows) < FALL_MIN_ROWS:
        return None
    cols = _FALL_COLUMNS.get(feature_cfg)
    if cols is None:
        centres = _centres_hz(feature_cfg)
        cols = _FALL_COLUMNS[feature_cfg] = np.flatnonzero(
            (centres >= FALL_BAND_HZ[0]) & (centres <= FALL_BAND_HZ[1]))
    x = np.asarray(rows, dtype=np.float64)[:, cols]
    if isinstance(feature_cfg, FbankConfig) or getattr(feature_cfg, "log", False):
        levels = x * (10.0 / np.log(10.0))  # natural log -> decibels
    else:
        levels = 10.0 * np.log10(x + 1e-10)
    step = np.diff(levels, axis=0)
    loud = levels[:-1] > np.median(levels, axis=0)
    counts = loud.sum(axis=0)
    use = counts >= 10
    if not use.any():
        return None
    # per band, the FALL_PERCENTILE-th percentile of the loud rows' steps (np.percentile's
    # linear rule), all bands at once: the other rows sorted to the end
    ranked = np.sort(np.where(loud[:, use], step[:, use], np.inf), axis=0)
    pos = FALL_PERCENTILE / 100.0 * (counts[use] - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, counts[use] - 1)
    cols = np.arange(ranked.shape[1])
    falls = ranked[lo, cols] + (pos - lo) * (ranked[hi, cols] - ranked[lo, cols])
    return float(-np.median(falls))


class VoiceVector(np.ndarray):
    """A voiceprint embedding (float32 ``(dim,)``) that also carries the embedding made at
    enrolment for narrowband input (``narrowband``: the same takes low-passed at 4 kHz, or None
    for a voiceprint enrolled before band matching). It is what the store hands out, so every
    mapping of voiceprints a :class:`~rtverify.core.pipeline.Verifier` is given carries its
    bands without a change of signature."""

    narrowband: np.ndarray | None
    enrol_speech_s: float | None
    """Voiced seconds the voiceprint was enrolled on (None: unknown), for the model's
    ``threshold_offsets_by_enrol_s``."""
    enrol_fall_db: float | None
    """How steeply the enrolment's speech fell silent (:func:`fall_db`; None: unknown), for
    the model's ``threshold_offsets_by_fall_change_db``."""
    companions: "Mapping[str, VoiceVector]"
    """The same voice as other models embedded it, by model id (the voiceprint's ``models``):
    a model with a ``short_expert`` scores short utterances against that model's vector."""

    def __new__(cls, wide: np.ndarray, narrowband: np.ndarray | None = None,
                enrol_speech_s: float | None = None,
                enrol_fall_db: float | None = None) -> "VoiceVector":
        obj = np.asarray(wide, dtype=np.float32).view(cls)
        obj._carry(narrowband, enrol_speech_s, enrol_fall_db)
        return obj

    def _carry(self, narrowband: np.ndarray | None, enrol_speech_s: float | None,
               enrol_fall_db: float | None = None) -> None:
        self.enrol_speech_s = enrol_speech_s
        self.enrol_fall_db = enrol_fall_db
        self.companions = {}
        self.narrowband = None if narrowband is None else np.asarray(narrowband, np.float32)
        self._narrowband_print = None
        if self.narrowband is not None:  # made here, once: scoring a large gallery only looks it up
            mean = np.asarray(self) + self.narrowband
            self._narrowband_print = mean / max(float(np.sqrt(mean @ mean)), 1e-12)

    def __array_finalize__(self, obj) -> None:
        self.narrowband = getattr(obj, "narrowband", None)
        self.enrol_speech_s = getattr(obj, "enrol_speech_s", None)
        self.enrol_fall_db = getattr(obj, "enrol_fall_db", None)
        self.companions = getattr(obj, "companions", {})
        self._narrowband_print = getattr(obj, "_narrowband_print", None)

    # A pickled ndarray subclass keeps only the array: the server hands voices to its worker
    # processes pickled, and without these the narrowband embedding and the enrolled amount
    # were lost there (its streams scored narrowband input against the wideband embedding).
    def __reduce__(self):
        ctor, args, state = super().__reduce__()
        return ctor, args, (state, self.narrowband, self.enrol_speech_s, self.enrol_fall_db,
                            dict(self.companions))

    def __setstate__(self, state) -> None:
        base, narrowband, enrol_speech_s, enrol_fall_db, companions = state
        super().__setstate__(base)
        self._carry(narrowband, enrol_speech_s, enrol_fall_db)
        self.companions = companions

    def narrowband_print(self) -> np.ndarray | None:
        """What narrowband input is scored against: the normalised mean of the narrowband and
        the wideband embeddings of the same takes (None without a narrowband one).

        Both are views of the same few seconds of enrolment: the narrowband one matches the
        band of the input, the wideband one holds what the band limit blurs, and their mean
        varies less with the takes than either. Measured with ``tools/room_streams.py
        --nb-impostors 300`` (10 voices): their 8 kHz probes accepted 18 of 20 (17 against the
        narrowband embedding alone; their 16 kHz originals 18), 8 kHz impostor utterances
        accepted 6 of 3000 (8 against the narrowband embedding alone; at 16 kHz 3 of 3000).
        Made when the voiceprint is."""
        return self._narrowband_print


def voiceprints_for_band(voiceprints: Mapping[str, np.ndarray], band: str
                         ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The voiceprints to score input of ``band`` against, and the names that have no
    embedding for that band (they are scored with their wideband one). Narrowband input is
    scored against :meth:`VoiceVector.narrowband_print`."""
    if band != "narrow":
        return dict(voiceprints), []
    out, missing = {}, []
    for name, vec in voiceprints.items():
        nb = getattr(vec, "_narrowband_print", None)
        if nb is None:
            missing.append(name)
            out[name] = vec
        else:
            out[name] = nb
    return out, missing


def warn_no_narrowband(name: str) -> None:
    """Say (log) that voice ``name`` has no narrowband voiceprint, so narrowband input is
    scored against its wideband one (a voice enrolled before band matching)."""
    logging.getLogger(__name__).warning(
        "voice %r has no narrowband voiceprint (enrolled before band-matched scoring): "
        "narrowband speech is scored against its wideband one; re-enroll it to score such "
        "input better", name)


def narrowband_audio(samples: np.ndarray, rate_hz: int = 16000) -> np.ndarray:
    """``samples`` (float32 ``(n,)`` at ``rate_hz``) as an 8 kHz telephone-band recording would
    carry them: resampled to 8 kHz and back, the same path an 8 kHz input takes (float32
    ``(n,)``): :func:`narrowband_chunks` of them whole."""
    from ..io.sources import Chunk

    out = [c.samples for c in narrowband_chunks([Chunk(np.asarray(samples, np.float32), 0.0)],
                                                rate_hz)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def narrowband_chunks(chunks, rate_hz: int = 16000):
    """:func:`narrowband_audio` of a stream of chunks (``Chunk``), chunk by chunk, so that a
    recording is never held whole: resampled to 8 kHz and back, cut or padded to the input's
    length, each piece stamped with its stream time."""
    from ..io.resample import StreamingResampler
    from ..io.sources import Chunk

    down = StreamingResampler(rate_hz, 8000)
    up = StreamingResampler(8000, rate_hz)
    n_in = n_out = 0

    def piece(samples: np.ndarray):
        nonlocal n_out
        samples = np.asarray(samples, np.float32)[:max(0, n_in - n_out)]
        if len(samples) == 0:
            return None
        chunk = Chunk(samples, n_out / rate_hz)
        n_out += len(samples)
        return chunk

    for chunk in chunks:
        n_in += len(chunk.samples)
        out = piece(up.push(down.push(np.asarray(chunk.samples, np.float32))))
        if out is not None:
            yield out
    for tail in (up.push(down.flush()), up.flush(), np.zeros(max(0, n_in - n_out), np.float32)):
        out = piece(tail)
        if out is not None:
            yield out
