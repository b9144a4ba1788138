"""Settings of each pipeline stage, as frozen dataclasses.

Every field carries its unit in its name or its docstring. The feature settings of the shipped
encoder live in its JSON sidecar and are read back with :meth:`FeatureConfig.from_dict`, so the
runtime and training always agree on them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import shown

SAMPLE_RATE_HZ = 16000
"""The one rate every stage after the source works at (hertz)."""
VERIFY_TIMEOUT_S = 20.0
"""``verify`` from the microphone gives up when nobody speaks for this long (seconds)."""


def check_threshold(value: float | None) -> float | None:
    """``value`` if it is a usable decision threshold (a cosine in [-1, 1]) or None; else
    ValueError naming it. The one rule for ``--threshold``, the server's ``threshold`` and
    :class:`~rtverify.core.scoring.DecisionPolicy`."""
    if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise ValueError(f"threshold {value}: must be a cosine between -1 and 1")
    return value


MAX_MARGIN = 0.2
"""The most ``--margin`` may move the model's thresholds, up or down (cosine)."""


def check_margin(value: float | None) -> float:
    """``value`` (0 for None) if it is a usable ``--margin``: a finite cosine offset within
    +-:data:`MAX_MARGIN`, added to every threshold the model calibrated; else ValueError naming
    it. The one rule for ``--margin``, the server's ``margin`` and
    :class:`~rtverify.core.scoring.DecisionPolicy`."""
    if value is None:
        return 0.0
    try:  # any real number (numpy's float32 too); an int too large for a float is out of range
        number = float(value) if isinstance(value, numbers.Real) and \
            not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and -MAX_MARGIN <= number <= MAX_MARGIN):
        raise ValueError(f"margin {shown(value)}: must be a number between -{MAX_MARGIN:g} and "
                         f"{MAX_MARGIN:g} (added to the model's thresholds)")
    return number


def check_decision(threshold: float | None, margin: float | None, flag: str = ""
                   ) -> tuple[float | None, float]:
    """``(threshold, margin)`` checked by their rules (:func:`check_threshold`,
    :func:`check_margin`; the margin 0 when None), and not both given: a threshold replaces the
    model's thresholds, a margin moves them. Else ValueError naming them (``flag``: ``"--"`` on
    a command line). The one rule of the CLI, the server, the Wyoming gate, the API and
    :class:`~rtverify.core.scoring.DecisionPolicy`."""
    try:
        threshold, moved = check_threshold(threshold), check_margin(margin)
    except ValueError as err:
        raise ValueError(f"{flag}{err}") from None
    if threshold is not None and margin is not None:
        raise ValueError(f"{flag}threshold and {flag}margin: a threshold replaces the model's "
                         "thresholds, a margin moves them; give one")
    return threshold, moved


def _from_dict(cls, data: Mapping[str, Any]):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys (they are typos or drift)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**dict(data))


@dataclass(frozen=True)
class FeatureConfig:
    """The spectrogram front-end. Defaults reproduce the pretrained GE2E encoder's input
    (Resemblyzer: librosa ``melspectrogram`` power, Slaney mel scale and area normalisation)."""

    sample_rate_hz: int = SAMPLE_RATE_HZ
    """Rate of the audio the features are computed from (hertz)."""
    window_ms: float = 25.0
    """STFT window (and FFT) length (milliseconds): 400 samples at 16 kHz."""
    hop_ms: float = 10.0
    """STFT hop between spectrogram rows (milliseconds): 160 samples at 16 kHz."""
    n_mels: int = 40
    """Number of mel bands (rows have this many columns)."""
    fmin_hz: float = 0.0
    """Lowest mel filter edge (hertz)."""
    fmax_hz: float = 8000.0
    """Highest mel filter edge (hertz); at most half the sample rate."""
    mel_scale: str = "slaney"
    """``"slaney"`` (linear below 1 kHz, log above; librosa's default) or ``"htk"``."""
    mel_norm: str = "slaney"
    """``"slaney"`` (each triangle has unit area over hertz) or ``"none"``."""
    power: float = 2.0
    """Exponent of the STFT magnitude: 2 for a power spectrogram."""
    log: bool = False
    """If true, rows are ``log(mel + log_floor)``; the shipped encoder takes linear mel power."""
    log_floor: float = 1e-6
    """Added before the logarithm when ``log`` is true (same unit as the mel power)."""

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.n_fft < 16 or self.hop_length < 1:
            raise ValueError(f"window_ms={self.window_ms} / hop_ms={self.hop_ms} give a window of "
                             f"{self.n_fft} and a hop of {self.hop_length} samples: too small")
        if not 0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ValueError(f"need 0 <= fmin_hz < fmax_hz <= {self.sample_rate_hz / 2}, "
                             f"got {self.fmin_hz}, {self.fmax_hz}")
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.mel_norm not in ("slaney", "none"):
            raise ValueError(f"mel_norm must be 'slaney' or 'none', got {self.mel_norm!r}")

    @property
    def n_fft(self) -> int:
        """Window and FFT length (samples)."""
        return int(round(self.sample_rate_hz * self.window_ms / 1000))

    @property
    def hop_length(self) -> int:
        """Hop between rows (samples)."""
        return int(round(self.sample_rate_hz * self.hop_ms / 1000))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class SegmenterConfig:
    """Voice activity detection and utterance segmentation."""

    frame_ms: int = 30
    """webrtcvad frame length (milliseconds): 10, 20 or 30."""
    aggressiveness: int = 2
    """webrtcvad mode, 0 (least) to 3 (most aggressive in calling frames non-speech)."""
    start_window_ms: int = 150
    """Speech starts when ``start_voiced_ms`` of the last ``start_window_ms`` are voiced (ms)."""
    start_voiced_ms: int = 90
    """Voiced time needed inside the start window (milliseconds); a lone click never reaches it."""
    pre_roll_ms: int = 150
    """Audio kept before the detected start and given to the segment (milliseconds)."""
    pause_ms: int = 450
    """A segment ends after this much unvoiced audio (milliseconds); shorter pauses do not cut it."""
    post_roll_ms: int = 90
    """Audio after the last voiced frame that stays in the segment (milliseconds)."""
    min_speech_ms: int = 240
    """Segments with less voiced audio than this are dropped as noise bursts (milliseconds)."""
    max_segment_s: float = 6.0
    """A segment longer than this is closed and a new one opened at once (seconds), so long
    speech yields a decision at least this often."""
    recording_pause_ms: int = 2000
    """Where a whole recording is pooled into one embedding (enrolment, ``verify`` of a file,
    ``eval``, calibration: :meth:`for_recording`), a pause must be this long to end a segment
    (milliseconds). Nobody waits there for a decision after each utterance, and speech on both
    sides of a short pause embeds better as one stretch than as two short ones averaged (dev
    clean 2 s, default model: 4.62 -> 3.72 % EER, docs/history.md)."""
    level_without_dc: bool = True
    """Frame levels (gate, noise floor, segment level) are measured after removing the frame's
    mean: a DC offset is not sound, and a recording with a large one (some LibriSpeech files sit
    at -12 dBFS of pure offset) would otherwise look like steady loud noise and hide its speech."""
    gate_margin_db: float = 6.0
    """A frame is voiced only if its level is this far above the noise floor (decibels)."""
    gate_min_dbfs: float = -65.0
    """Frames quieter than this are never voiced (dB relative to full scale)."""
    floor_window_s: float = 3.0
    """History over which the noise floor is estimated (seconds)."""
    floor_quantile: float = 0.1
    """The noise floor is this quantile of frame levels over the history (0..1)."""
    floor_prior_dbfs: float = -60.0
    """Assumed floor before any history exists (dB relative to full scale)."""
    floor_prior_frames: int = 2
    """How many frames of the prior seed the history; they age out like real frames."""
    clip_level: float = 0.999
    """Absolute sample value at or above which a sample counts as clipped (full scale = 1)."""
    clipped_fraction: float = 0.01
    """A segment with more clipped samples than this fraction is flagged ``clipped`` (0..1)."""

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30 (webrtcvad), got {self.frame_ms}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, got {self.aggressiveness}")
        if not 0 < self.start_voiced_ms <= self.start_window_ms:
            raise ValueError("need 0 < start_voiced_ms <= start_window_ms, got "
                             f"{self.start_voiced_ms} and {self.start_window_ms}")
        if self.max_segment_s * 1000 < 2 * self.start_window_ms:
            raise ValueError(f"max_segment_s={self.max_segment_s} is too short")
        if not 0 < self.floor_quantile < 1:
            raise ValueError(f"floor_quantile must be in (0, 1), got {self.floor_quantile}")

    def for_recording(self) -> "SegmenterConfig":
        """These settings for a recording pooled into one embedding: pauses shorter than
        ``recording_pause_ms`` do not end a segment (speaker changes inside one still do)."""
        if self.pause_ms >= self.recording_pause_ms:
            return self
        return dataclasses.replace(self, pause_ms=self.recording_pause_ms)

    def frames(self, ms: float) -> int:
        """How many whole VAD frames cover ``ms`` milliseconds (at least one)."""
        return max(1, int(round(ms / self.frame_ms)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SegmenterConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class WindowConfig:
    """How a segment's spectrogram is cut into encoder windows."""

    window_frames: int = 160
    """Spectrogram rows per encoder window (rows; 160 = 1.6 s at a 10 ms hop)."""
    hop_frames: int = 160
    """Rows between the starts of consecutive windows while speech goes on. 160 (no overlap)
    measured as accurate as 80 (docs/history.md, "Runtime-path choices") for half the encoder work; a segment's
    end-aligned tail window still covers its last rows."""
    min_tail_frames: int = 40
    """At the end of a segment, a last window aligned to the end is added if at least this many
    rows were not covered by a full window yet (rows)."""
    short_views: tuple[str, ...] = ("end", "start", "reflect")
    """How a segment shorter than one window is embedded: once per view, and the views'
    embeddings averaged (counting as one window). ``"end"``: zero rows appended up to
    ``window_frames`` (how the pretrained encoder was used); ``"start"``: zero rows put before
    it; ``"none"``: its own rows, unpadded; ``"reflect"``: its rows, then reversed, repeated up to
    a window. The LSTM's final state depends on what surrounds short speech, so averaging a few
    views steadies the embedding of short utterances (chosen on a non-reported Arabic list:
    docs/history.md, "Runtime-path choices")."""

    SHORT_VIEWS = ("end", "start", "none", "reflect")

    def __post_init__(self) -> None:
        if self.window_frames < 10 or not 0 < self.hop_frames <= self.window_frames:
            raise ValueError(f"need window_frames >= 10 and 0 < hop_frames <= window_frames, got "
                             f"{self.window_frames}, {self.hop_frames}")
        views = tuple(self.short_views)
        object.__setattr__(self, "short_views", views)
        bad = [v for v in views if v not in self.SHORT_VIEWS]
        if not views or bad or len(set(views)) != len(views):
            raise ValueError(f"short_views must be distinct values of {self.SHORT_VIEWS}, got "
                             f"{list(views)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WindowConfig":
        data = dict(data)
        if "pad_short" in data:  # sidecars before short_views: pad_short true/false
            data.setdefault("short_views", ("end",) if data.pop("pad_short") else ("none",))
        return _from_dict(cls, data)


def interpolate(points: tuple[tuple[float, float], ...], x: float, default: float) -> float:
    """``y`` at ``x`` on the polyline through ``points`` (``(x, y)`` pairs, ``x`` increasing),
    linear between them and held at the end values beyond them; ``default`` where ``x`` is NaN."""
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return default  # NaN x (or x not increasing, which the sidecar reader refuses)


@dataclass(frozen=True)
class DecisionConfig:
    """How scores become decisions."""

    threshold: float = 0.75
    """Cosine (or normalised score) at or above which a voice is accepted."""
    min_speech_s: float = 0.5
    """Less voiced speech than this in a segment gives no accept (``too_short``) (seconds)."""
    thresholds_by_speech_s: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    """Optional (speech seconds, threshold) points; the threshold for a segment is interpolated
    linearly in them (clamped at the ends). Empty: ``threshold`` at every length."""
    threshold_offsets_by_snr_db: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    """Optional (estimated SNR in decibels, offset) points, added to the length threshold: the
    offset for an utterance is interpolated linearly in them (clamped at the ends). The SNR is
    the one the pipeline reports as ``snr_db`` (speech level over the background noise floor);
    an utterance without one (None) gets no offset. Empty: no offset, the length threshold
    alone."""
    threshold_offsets_by_enrol_s: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    """Optional (voiced seconds a voiceprint was enrolled on, offset) points, added to the
    threshold for that voice: a voiceprint made from less speech varies more with its takes, so
    its true speaker scores lower against it (and so do strangers); the offset is interpolated
    linearly (held at the ends; the calibration's own enrolment amount gets 0). A voice whose
    amount is unknown (None) gets no offset. Empty: no offset."""
    threshold_offsets_by_fall_change_db: tuple[tuple[float, float], ...] = \
        field(default_factory=tuple)
    """Optional (change in how steeply speech falls silent from the voice's enrolment to the
    utterance, dB per 10 ms, offset) points (:func:`rtverify.core.scoring.fall_db`: a room's
    reverberation makes speech fall slowly, so an utterance in a more reverberant room than the
    enrolment has a negative change): interpolated as the SNR offsets are. A decision gets the
    lower of its SNR offset and this one (reverberation and noise are not added up); without
    both estimates (None), no offset. Empty: none."""

    def describe(self) -> str:
        """The threshold for people: ``0.84``, ``0.77-0.89 by length``, or ``0.77-0.89 by
        length, -0.05..0 by SNR``."""
        if self.thresholds_by_speech_s:
            ys = [t for _, t in self.thresholds_by_speech_s]
            text = f"{min(ys):.2f}-{max(ys):.2f} by length"
        else:
            text = f"{self.threshold:.2f}"
        if self.threshold_offsets_by_snr_db:
            offs = [o for _, o in self.threshold_offsets_by_snr_db]
            text += f", {min(offs):+.2f}..{max(offs):+.2f} by SNR"
        if self.threshold_offsets_by_fall_change_db:
            offs = [o for _, o in self.threshold_offsets_by_fall_change_db]
            text += f", {min(offs):+.2f}..{max(offs):+.2f} by reverberation"
        if self.threshold_offsets_by_enrol_s:
            offs = [o for _, o in self.threshold_offsets_by_enrol_s]
            text += f", {min(offs):+.2f}..{max(offs):+.2f} by enrolment"
        return text

    def offset_for(self, snr_db: float | None, fall_change_db: float | None = None) -> float:
        """The threshold offset for an utterance whose estimated SNR is ``snr_db`` (decibels)
        and whose speech falls ``fall_change_db`` dB per 10 ms more steeply than the voice's
        enrolment did: the lower of the two tables' offsets (0 without offsets, or for an
        unknown estimate: None or not finite)."""
        out = 0.0
        for pts, x in ((self.threshold_offsets_by_snr_db, snr_db),
                       (self.threshold_offsets_by_fall_change_db, fall_change_db)):
            if pts and x is not None and math.isfinite(x):
                out = min(out, interpolate(pts, x, 0.0))
        return out

    def enrol_offset(self, enrol_s: float | None) -> float:
        """The threshold offset for a voice enrolled on ``enrol_s`` voiced seconds (0 without
        offsets, or when the amount is unknown: None, not finite or not positive)."""
        pts = self.threshold_offsets_by_enrol_s
        if not pts or enrol_s is None or not math.isfinite(enrol_s) or enrol_s <= 0:
            return 0.0
        return interpolate(pts, enrol_s, 0.0)

    def threshold_for(self, speech_s: float, snr_db: float | None = None,
                      fall_change_db: float | None = None) -> float:
        """The acceptance threshold for a segment with ``speech_s`` seconds of speech, an
        estimated SNR of ``snr_db`` decibels and a change of ``fall_change_db`` dB per 10 ms in
        its steepest fall from the enrolment's (None: unknown, no offset for it)."""
        pts = self.thresholds_by_speech_s
        base = interpolate(pts, speech_s, self.threshold) if pts else self.threshold
        return base + self.offset_for(snr_db, fall_change_db)
