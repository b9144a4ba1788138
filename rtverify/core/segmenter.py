"""Speech segmentation: webrtcvad on fixed frames, gated by the signal's own noise floor, with a
padded ring buffer and hysteresis.

A frame counts as voiced only if webrtcvad says so *and* its level is ``gate_margin_db`` above an
adaptive noise floor (a low quantile of the recent frame levels). webrtcvad alone calls a large
share of steady low-level noise speech; the gate removes that while speech over steady background
noise, which rises above the floor, still passes.

Speech starts when enough of the last few frames are voiced (a lone click does not start it) and
the segment is given some pre-roll; it ends after a pause longer than ``pause_ms`` (shorter pauses
stay inside), keeping a little post-roll, or when it reaches ``max_segment_s``, in which case the
next segment starts at once. Frames after the last voiced one are held back until it is known
whether speech resumes, so a segment's audio never carries its trailing pause.

webrtcvad takes many sounds for speech; each segment is therefore confirmed by a neural VAD
(:class:`~rtverify.core.vad.SpeechConfirmer`, Silero) run on the segment's audio only until it is
confirmed. A segment that ends unconfirmed is dropped with ``drop_reason="not_speech"``.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..config import SAMPLE_RATE_HZ, SegmenterConfig
from .vad import ConfirmConfig

_DEFAULT_CONFIRM = ConfirmConfig()


@dataclass(frozen=True)
class SegmentStart:
    """Speech began; ``start_s`` includes the pre-roll (seconds of stream time)."""

    start_s: float


@dataclass(frozen=True)
class SegmentAudio:
    """Audio that belongs to the open segment, in order (float32 ``(n,)`` at 16 kHz)."""

    samples: np.ndarray


@dataclass(frozen=True)
class SegmentEnd:
    """The open segment is complete."""

    start_s: float
    """Stream time of the segment's first sample (seconds)."""
    end_s: float
    """Stream time just after its last sample (seconds)."""
    speech_s: float
    """Voiced audio inside it (seconds)."""
    reason: str
    """``pause``, ``max_length`` or ``end_of_stream``."""
    clipped: bool
    """More than ``clipped_fraction`` of its samples were at full scale."""
    level_dbfs: float
    """Mean level of its voiced frames (dB relative to full scale)."""
    dropped: bool
    """Not an utterance: see ``drop_reason``."""
    drop_reason: str | None = None
    """Why it was dropped: ``too_short`` (less voiced audio than ``min_speech_ms``: a click, a
    cough) or ``not_speech`` (the neural VAD heard no speech in it: a hum, knocks, music);
    None when it was not dropped."""
    noise_floor_dbfs: float | None = None
    """The background level the segment's speech stood over (dB relative to full scale): the
    lower of the noise floor when it opened (the background before it, once the floor has been
    measured on enough audio) and the floor when it closed. None only if never measured."""
    continues: bool = False
    """A ``max_length`` cut in the middle of speech: the next segment opens with the very next
    frame (no pause between them)."""

    @property
    def snr_db(self) -> float | None:
        """Estimated signal-to-noise ratio of the segment (decibels): :attr:`level_dbfs` (the
        mean power of its voiced frames, i.e. speech plus noise) minus
        :attr:`noise_floor_dbfs`. A rough figure, biased where the speech never pauses (the
        floor then rises toward quiet speech) and where the noise fluctuates (babble's floor is
        its quieter moments), but monotone in the true SNR for a given kind of noise: the
        decision thresholds are calibrated on this estimate, not on the true SNR."""
        if self.noise_floor_dbfs is None:
            return None
        return float(self.level_dbfs - self.noise_floor_dbfs)


def background_dbfs(floor_at_open: float | None, floor_now: float) -> float:
    """The background level an utterance stands over (dB relative to full scale): the floor
    measured before it began, unless the floor now is lower (it had not settled then). The
    floor is a low quantile of the last few seconds, so it creeps up during long speech; the
    floor at the start does not (as ``enroll`` judges its takes)."""
    return floor_now if floor_at_open is None else min(floor_at_open, floor_now)


@dataclass(slots=True)
class _Frame:
    samples: np.ndarray
    start_s: float
    voiced: bool
    level_db: float
    n_clipped: int


class _FloorTracker:
    """The last ``maxlen`` frame levels, kept sorted as well, so that their quantile costs an
    index instead of a sort. :meth:`quantile` equals ``np.quantile(levels, q)`` (numpy's default
    ``linear`` method) exactly, to the last bit."""

    def __init__(self, prior: list[float], maxlen: int) -> None:
        self._fifo: collections.deque[float] = collections.deque(maxlen=maxlen)
        self._sorted: list[float] = []
        for level in prior:
            self.add(level)

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, level: float) -> None:
        if len(self._fifo) == self._fifo.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._fifo[0])]
        self._fifo.append(level)
        bisect.insort(self._sorted, level)

    def quantile(self, q: float) -> float:
        # numpy's "linear" method: virtual index (n - 1) * q, then numpy's _lerp, whose two
        # branches (by gamma < 0.5 or not) round differently; same IEEE operations here.
        values = self._sorted
        n = len(values)
        virtual = (n - 1) * q
        lo = math.floor(virtual)
        if virtual >= n - 1:
            return float(values[-1])
        a, b = values[lo], values[lo + 1]
        gamma = virtual - lo
        diff = b - a
        return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


class Segmenter:
    """Turns consecutive frames of ``frame_ms`` into segment events.

    Feed it with :meth:`push` (exactly ``frame_samples`` samples each, consecutive in time) and
    end the stream with :meth:`flush`. Each returns a list of :class:`SegmentStart`,
    :class:`SegmentAudio` and :class:`SegmentEnd` events.

    :param confirm: the neural confirmation of segments (None: webrtcvad and the gate alone;
        also when ``cfg.min_speech_ms`` is under one frame, i.e. nothing is to be dropped).
    """

    def __init__(self, cfg: SegmenterConfig = SegmenterConfig(),
                 sample_rate_hz: int = SAMPLE_RATE_HZ,
                 confirm: ConfirmConfig | None = _DEFAULT_CONFIRM) -> None:
        import webrtcvad  # optional at import time of the package (GUIDE: import where used)

        self.cfg = cfg
        self.sample_rate_hz = sample_rate_hz
        self.frame_samples = sample_rate_hz * cfg.frame_ms // 1000
        self._frame_s = cfg.frame_ms / 1000
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self._start_window = cfg.frames(cfg.start_window_ms)
        self._start_voiced = cfg.frames(cfg.start_voiced_ms)
        self._pre_roll = cfg.frames(cfg.pre_roll_ms) if cfg.pre_roll_ms > 0 else 0
        self._pause = cfg.frames(cfg.pause_ms)
        self._post_roll = min(cfg.frames(cfg.post_roll_ms) if cfg.post_roll_ms > 0 else 0,
                              self._pause)
        self._max_frames = max(self._start_window + 1, int(cfg.max_segment_s / self._frame_s))
        self._min_voiced = cfg.frames(cfg.min_speech_ms)
        self._floor_len = max(10, int(cfg.floor_window_s / self._frame_s))
        # the floor is a measurement (not the prior) once the quantile's index lies beyond the
        # prior frames: (n_prior + n - 1) * q >= n_prior
        self._floor_settle = int(math.ceil(cfg.floor_prior_frames / cfg.floor_quantile
                                           - cfg.floor_prior_frames + 1))
        self._confirmer = None
        if cfg.min_speech_ms < cfg.frame_ms:
            # "keep any segment at all" (eval's second look at recordings in which listen finds
            # nothing): no neural veto either
            confirm = None
        self._steady_db = confirm.steady_db if confirm is not None else 0.0
        if confirm is not None:
            from .vad import SpeechConfirmer

            self._confirmer = SpeechConfirmer(min(confirm.confirm_ms, float(cfg.min_speech_ms)),
                                              confirm.threshold, confirm.batch_frames)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next frame starts a new stream."""
        self._ring: collections.deque[_Frame] = collections.deque(
            maxlen=self._start_window + self._pre_roll)
        self._levels = _FloorTracker([self.cfg.floor_prior_dbfs] * self.cfg.floor_prior_frames,
                                     self._floor_len)
        self._floor_db = self.cfg.floor_prior_dbfs
        self._since_floor = 0
        self._n_levels = 0  # frame levels seen since reset (to tell a measured floor from the prior)
        self._seg_floor_db: float | None = None  # the floor when the open segment began
        self._in_speech = False
        self._continue = False  # open a new segment with the next frame (after max_length)
        self._held: list[_Frame] = []  # unvoiced frames after the last voiced one
        self._seg_start_s = 0.0
        self._seg_end_s = 0.0
        self._seg_frames = 0
        self._seg_voiced = 0
        self._seg_clipped = 0
        self._seg_samples = 0
        self._seg_voiced_power = 0.0
        self._seg_levels: list[float] = []  # levels of the segment's voiced frames (dBFS)
        self._carry_confirmed = False  # a max_length cut inside confirmed speech
        self._seg_continued = False  # the open segment continues confirmed speech
        if self._confirmer is not None:
            self._confirmer.reset()

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def speech_s(self) -> float:
        """Voiced audio in the open segment so far (seconds; 0 when no segment is open)."""
        return self._seg_voiced * self._frame_s if self._in_speech else 0.0

    @property
    def noise_floor_dbfs(self) -> float:
        """Current noise-floor estimate (dB relative to full scale)."""
        return self._floor_db

    def _floor_measured(self) -> bool:
        return self._n_levels >= self._floor_settle

    @property
    def snr_db(self) -> float | None:
        """Estimated SNR of the open segment so far (decibels; see :attr:`SegmentEnd.snr_db`);
        None when no segment is open or nothing in it is voiced yet."""
        if not self._in_speech or self._seg_voiced == 0:
            return None
        level = 10.0 * np.log10(self._seg_voiced_power / self._seg_voiced + 1e-12)
        return float(level - background_dbfs(self._seg_floor_db, self._floor_db))

    # -- frame classification -------------------------------------------------------------
    def _classify(self, frames: np.ndarray, starts: Sequence[float]) -> Iterator[_Frame]:
        """Classify consecutive frames, float ``(n, frame_samples)``, lazily and in order.

        The per-sample work (levels, int16 conversion for webrtcvad, clipping counts) is done for
        the whole block at once; the noise floor, whose history each frame extends, and the
        webrtcvad call stay per frame, done when the frame is taken from the iterator.
        """
        cfg = self.cfg
        n_samples = frames.shape[1]
        # np.dot per frame (not one vectorised sum): the same float32 accumulation as a frame
        # pushed alone, so levels do not depend on how frames are grouped.
        centred = frames - frames.mean(axis=1, keepdims=True) if cfg.level_without_dc else frames
        power = np.array([float(np.dot(f, f)) for f in centred]) / n_samples
        levels = 10.0 * np.log10(power + 1e-12)
        loud = levels >= cfg.gate_min_dbfs
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype(np.int16) if loud.any() else None
        n_clipped = (np.abs(frames) >= cfg.clip_level).sum(axis=1).tolist()
        for i, start_s in enumerate(starts):
            level_db = levels[i]
            self._levels.add(float(level_db))
            self._n_levels += 1
            self._since_floor += 1
            if self._since_floor >= 5:  # a quantile every 150 ms is plenty for a floor
                self._floor_db = self._levels.quantile(cfg.floor_quantile)
                self._since_floor = 0
            voiced = False
            if loud[i] and level_db >= self._floor_db + cfg.gate_margin_db:
                voiced = self._vad.is_speech(pcm[i].tobytes(), self.sample_rate_hz)
            yield _Frame(frames[i], start_s, voiced, level_db, n_clipped[i])

    # -- segment bookkeeping --------------------------------------------------------------
    def _take(self, frames: Sequence[_Frame], events: list, confirm: bool = True) -> None:
        """Append frames to the open segment (and, with ``confirm``, give them to the neural
        VAD while the segment is unconfirmed)."""
        if not frames:
            return
        for f in frames:
            self._seg_frames += 1
            self._seg_samples += len(f.samples)
            self._seg_clipped += f.n_clipped
            if f.voiced:
                self._seg_voiced += 1
                self._seg_voiced_power += 10.0 ** (f.level_db / 10.0)
                self._seg_levels.append(f.level_db)
        self._seg_end_s = frames[-1].start_s + len(frames[-1].samples) / self.sample_rate_hz
        audio = frames[0].samples if len(frames) == 1 else np.concatenate([f.samples for f in frames])
        if self._confirmer is not None and confirm:
            self._confirmer.push(audio)
        events.append(SegmentAudio(audio))

    def _open(self, frames: list[_Frame], events: list) -> None:
        self._in_speech = True
        self._held = []
        self._seg_start_s = frames[0].start_s
        self._seg_frames = self._seg_voiced = self._seg_clipped = self._seg_samples = 0
        self._seg_voiced_power = 0.0
        self._seg_levels = []
        self._seg_floor_db = self._floor_db if self._floor_measured() else None
        if self._confirmer is not None:
            carry = self._carry_confirmed
            self._confirmer.reset()
            self._confirmer.confirmed = carry
            self._carry_confirmed = False
            self._seg_continued = carry
        events.append(SegmentStart(self._seg_start_s))
        # the neural VAD starts at the first voiced frame: the pre-roll before it is the
        # quiet that made webrtcvad's start, and would only cost model calls
        first = next((i for i, f in enumerate(frames) if f.voiced), 0)
        self._take(frames[:first], events, confirm=False)
        self._take(frames[first:], events)

    def _steady(self) -> bool:
        """The voiced frames' levels hardly move: a hum or a drone, not a voice (syllables
        modulate the level by more than ``steady_db``, see
        :class:`~rtverify.core.vad.ConfirmConfig`; a max_length continuation of confirmed
        speech is not judged again)."""
        if self._seg_continued or len(self._seg_levels) < 4:
            return False
        return float(np.std(self._seg_levels)) < self._steady_db

    def _close(self, reason: str, events: list, continues: bool = False) -> list[_Frame]:
        """End the open segment; returns the held frames it did not keep."""
        keep, rest = self._held[:self._post_roll], self._held[self._post_roll:]
        self._take(keep, events)
        voiced_power = self._seg_voiced_power / max(self._seg_voiced, 1)
        drop_reason = "too_short" if self._seg_voiced < self._min_voiced else None
        if drop_reason is None and self._confirmer is not None:
            if not self._confirmer.finish() or self._steady():
                drop_reason = "not_speech"
        events.append(SegmentEnd(
            start_s=self._seg_start_s, end_s=self._seg_end_s,
            speech_s=self._seg_voiced * self._frame_s, reason=reason,
            clipped=self._seg_clipped > self.cfg.clipped_fraction * max(self._seg_samples, 1),
            level_dbfs=10.0 * np.log10(voiced_power + 1e-12),
            dropped=drop_reason is not None, drop_reason=drop_reason,
            noise_floor_dbfs=background_dbfs(self._seg_floor_db, self._floor_db),
            continues=continues))
        self._in_speech = False
        self._held = []
        return rest

    # -- public ---------------------------------------------------------------------------
    def push(self, samples: np.ndarray, start_s: float) -> list:
        """Process one frame of ``frame_samples`` samples starting at stream time ``start_s``."""
        if len(samples) != self.frame_samples:
            raise ValueError(f"Segmenter.push takes frames of {self.frame_samples} samples, "
                             f"got {len(samples)}")
        return self._step(next(self._classify(np.asarray(samples)[None], (start_s,))))

    def push_frames(self, frames: np.ndarray, starts: Sequence[float]) -> Iterator[list]:
        """Process consecutive frames at once: the same events as :meth:`push` on each in turn.

        :param frames: float array ``(n, frame_samples)``.
        :param starts: stream time of each frame's first sample (seconds), ``n`` of them.
        :return: an iterator of each frame's event list, in order; the segmenter's state
            (:attr:`in_speech`, :attr:`noise_floor_dbfs`) is that after the frame just yielded.
        """
        if frames.ndim != 2 or frames.shape[1] != self.frame_samples or len(starts) != len(frames):
            raise ValueError(f"Segmenter.push_frames takes (n, {self.frame_samples}) frames and n "
                             f"start times, got {frames.shape} and {len(starts)}")
        for frame in self._classify(frames, starts):
            yield self._step(frame)

    def _step(self, frame: _Frame) -> list:
        events: list = []
        if self._continue:  # the last segment hit max_segment_s mid-speech: go straight on
            self._continue = False
            self._open([frame], events)
            return events
        if not self._in_speech:
            self._ring.append(frame)
            # Speech starts when the last frames hold enough voiced ones. Only a voiced frame can
            # raise that count: the ring holds no voiced frame the check has not already seen
            # (it is cleared when a segment opens and refilled with unvoiced held frames only).
            if not frame.voiced:
                return events
            recent = list(self._ring)[-self._start_window:]
            if sum(f.voiced for f in recent) >= self._start_voiced:
                ring = list(self._ring)
                first_voiced = next(i for i in range(len(ring) - len(recent), len(ring))
                                    if ring[i].voiced)
                self._open(ring[max(0, first_voiced - self._pre_roll):], events)
                self._ring.clear()
            return events
        if frame.voiced:
            if self._held:
                self._held.append(frame)
                self._take(self._held, events)
                self._held = []
            else:
                self._take((frame,), events)
        else:
            self._held.append(frame)
            if len(self._held) >= self._pause:
                self._ring.extend(self._close("pause", events))
                return events
        if self._seg_frames + len(self._held) >= self._max_frames:
            if self._held:  # a short pause right at the limit: end there, as after a pause
                self._ring.extend(self._close("max_length", events))
            else:
                self._close("max_length", events, continues=True)
                self._continue = True
                # the speech goes straight on: its next part needs no new confirmation
                self._carry_confirmed = self._confirmer is not None and self._confirmer.confirmed
        return events

    def flush(self, tail: np.ndarray | None = None) -> list:
        """End of stream: close an open segment. The segmenter is then reset.

        :param tail: the stream's last samples, fewer than a frame (float32, right after the
            last frame pushed). An open segment that keeps every frame up to the end of the
            stream keeps them too (unvoiced, no VAD on a partial frame): a recording that ends
            in speech loses nothing of it, which matters for a 0.3 s clip (a spoken digit, a
            keyword) whose last frame is up to 29 ms of its speech."""
        events: list = []
        if self._in_speech:
            if (tail is not None and 0 < len(tail) < self.frame_samples
                    and len(self._held) < self._post_roll):
                end = self._seg_end_s if not self._held else (
                    self._held[-1].start_s + self._frame_s)
                self._held.append(_Frame(np.asarray(tail, np.float32), end, False, -120.0,
                                         int((np.abs(tail) >= self.cfg.clip_level).sum())))
            self._close("end_of_stream", events)
        self.reset()
        return events
