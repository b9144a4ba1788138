"""Every event that comes out of the pipeline, device events included.

Consumers (the live console, the JSON-lines writer, ``verify``, ``enroll``, the server, the tests)
tell events apart by their type (``isinstance``), never by a string; ``kind`` is only the name an
event has in its JSON-lines form (``to_dict``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


@dataclass(frozen=True)
class Event:
    """Base of everything the pipeline emits; ``to_dict`` gives the JSON-lines form."""

    def to_dict(self) -> dict:
        d = {"event": self.kind}
        d.update(asdict(self))
        return d

    kind = "event"


@dataclass(frozen=True)
class Status(Event):
    """Periodic state for meters (every ``status_every_s`` of stream time)."""

    kind = "status"
    t_s: float
    level_dbfs: float
    noise_floor_dbfs: float
    in_speech: bool
    overflows: int


@dataclass(frozen=True)
class SpeechStarted(Event):
    kind = "speech_start"
    start_s: float


@dataclass(frozen=True)
class Provisional(Event):
    """A running score while the speaker is still talking."""

    kind = "provisional"
    start_s: float
    t_s: float
    speech_s: float
    speaker: str | None
    score: float | None
    scores: dict[str, float]
    turn_start_s: float | None = None
    """Where the current speaker's turn began, when a change of speaker was suspected inside
    the segment (the score then pools only the turn's windows); None otherwise (seconds)."""


@dataclass(frozen=True)
class SegmentDropped(Event):
    """A segment that is not an utterance: never a decision."""

    kind = "dropped"
    start_s: float
    end_s: float
    speech_s: float
    reason: str = "too_short"
    """``too_short`` (too little voiced audio: a click, a cough) or ``not_speech`` (the neural
    VAD heard no speech: a hum, knocks, music, steady noise)."""


@dataclass(frozen=True)
class DecisionEvent(Event):
    """The verdict on one utterance."""

    kind = "decision"
    start_s: float
    end_s: float
    speech_s: float
    speaker: str | None
    """Accepted voice or None."""
    best: str | None
    """Best-scoring voice, accepted or not."""
    score: float | None
    accepted: bool
    scores: dict[str, float]
    threshold: float
    margin: float | None
    reason: str
    """``accepted``, ``below_threshold``, ``too_short`` or ``no_voices``."""
    end_reason: str
    """Why the segment ended: ``pause``, ``max_length``, ``end_of_stream``, ``gap``."""
    clipped: bool
    level_dbfs: float
    n_windows: int
    decision_ms: float
    """Compute time from the segment's end event to this decision (milliseconds)."""
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The utterance embedding (not serialised)."""
    window_sum: np.ndarray | None = field(default=None, repr=False, compare=False)
    band: str = "wide"
    """The input's effective band: ``wide``, or ``narrow`` (nothing above 4 kHz: a telephone or
    8 kHz recording at any sample rate), scored against the voiceprints' narrowband embeddings."""
    snr_db: float | None = None
    """Estimated signal-to-noise ratio (decibels): ``level_dbfs`` minus the background noise
    floor the segmenter measured before the utterance (or during it, if lower). The threshold
    includes the model's offset for it (``decision.threshold_offsets_by_snr_db``)."""
    fall_db: float | None = None
    """How steeply the speech falls silent (dB per 10 ms, :func:`rtverify.core.scoring.fall_db`:
    lower in a reverberant room); the threshold includes the model's offset for it
    (``decision.threshold_offsets_by_fall_change_db``, by the change from the voice's
    enrolment) when that is lower than the SNR's. None for less than 1 s of speech, and when a
    model without room offsets listens for enrolled voices (recordings and enrolment always
    measure it)."""

    def to_dict(self) -> dict:
        return {"event": "decision", "start_s": _r(self.start_s), "end_s": _r(self.end_s),
                "speech_s": _r(self.speech_s, 2), "speaker": self.speaker, "best": self.best,
                "score": _r(self.score, 4), "accepted": self.accepted,
                "scores": {k: _r(v, 4) for k, v in self.scores.items()},
                "threshold": _r(self.threshold, 4), "margin": _r(self.margin, 4),
                "reason": self.reason, "end_reason": self.end_reason, "clipped": self.clipped,
                "level_dbfs": _r(self.level_dbfs, 1), "n_windows": self.n_windows,
                "decision_ms": _r(self.decision_ms, 2), "band": self.band,
                "snr_db": _r(self.snr_db, 1), "fall_db": _r(self.fall_db, 2)}


# -- the input device ---------------------------------------------------------------------------
@dataclass(frozen=True)
class InputLost(Event):
    """The input device stopped delivering audio; a reopen is attempted after ``retry_in_s``."""

    kind = "input_lost"
    t_s: float
    """Stream time of the last audio received (seconds)."""
    error: str
    attempt: int
    """Attempts to reopen made so far in this outage (0 when it has just begun)."""
    retry_in_s: float


@dataclass(frozen=True)
class InputRestored(Event):
    """The device delivers audio again."""

    kind = "input_restored"
    t_s: float
    """Stream time at which audio resumes (seconds)."""
    gap_s: float
    """Length of the outage (seconds)."""
    attempts: int


# -- the stream as a whole ------------------------------------------------------------------------
def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def event_dict(event: Event) -> dict:
    """The JSON-lines form of any event (floats rounded, non-finite ones as null)."""
    return event.to_dict() if isinstance(event, DecisionEvent) else _rounded(event.to_dict())


@dataclass(frozen=True)
class Ready(Event):
    """The stream is open and the model loaded: what is listened to, for whom, at what threshold."""

    kind = "ready"
    source: str
    model_id: str
    voices: list[str]
    threshold: str
    """The threshold as a person reads it (one value, or the range over utterance lengths)."""
    realtime: bool
    """Audio arrives in real time (microphone, or paced input)."""


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 decision``, ``2 decisions``, ``1 time``, ``0 times``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


@dataclass(frozen=True)
class Summary(Event):
    """The last event of a stream: what was decided."""

    kind = "summary"
    decisions: int
    accepted: int
    rejected: int
    too_short: int
    dropped: int
    by_speaker: dict[str, int]
    stream_s: float
    """Stream time covered (seconds)."""
    overflows: int
    """Blocks of input lost because the consumer fell behind (count)."""
    input_lost: int
    """Times the input device was lost (and reopened, or given up)."""
    interrupted: bool
    """Ended by Ctrl-C or SIGTERM rather than by the end of the input."""
    error: str | None = None
    """Set when an error ended the stream."""

    def to_dict(self) -> dict:
        d = _rounded(super().to_dict())
        if self.error is None:
            del d["error"]
        return d

    def line(self) -> str:
        """One line for a person."""
        who = ", ".join(f"{n} {c}" for n, c in Counter(self.by_speaker).most_common())
        return (f"{plural(self.decisions, 'decision')}: {self.accepted} accepted"
                + (f" ({who})" if who else "") + f", {self.rejected} rejected, "
                f"{self.too_short} too short, {plural(self.overflows, 'overflow')}"
                + (f", input lost {plural(self.input_lost, 'time')}" if self.input_lost else ""))


class Tally:
    """Running counts of a stream's events (one per stream; the console shows the same one)."""

    def __init__(self) -> None:
        self.decisions = self.accepted = self.rejected = self.too_short = self.dropped = 0
        self.by_speaker: Counter = Counter()
        self.stream_s = 0.0
        self.overflows = 0
        self.input_lost = 0

    def add(self, event: Event) -> None:
        if isinstance(event, DecisionEvent):
            self.decisions += 1
            self.stream_s = max(self.stream_s, event.end_s)
            if event.reason == "too_short":
                self.too_short += 1
            elif event.accepted:
                self.accepted += 1
                self.by_speaker[event.speaker] += 1
            else:
                self.rejected += 1
        elif isinstance(event, SegmentDropped):
            self.dropped += 1
        elif isinstance(event, InputLost):
            if event.attempt == 0:
                self.input_lost += 1
        elif isinstance(event, Status):
            self.overflows = max(self.overflows, event.overflows)

    def summary(self, *, interrupted: bool = False, error: str | None = None) -> Summary:
        return Summary(self.decisions, self.accepted, self.rejected, self.too_short, self.dropped,
                       dict(self.by_speaker), round(self.stream_s, 3), self.overflows,
                       self.input_lost, interrupted, error)
