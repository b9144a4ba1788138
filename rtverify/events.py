"""Every event that comes out of the pipeline, device events included.

Consumers (the live console, the JSON-lines writer, ``verify``, ``enroll``, the server, the tests)
tell events apart by their type (``isinstance``), never by a string; ``kind`` is only the name an
event has in its JSON-lines form (``to_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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

    def to_dict(self) -> dict:
        return {"event": "decision", "start_s": _r(self.start_s), "end_s": _r(self.end_s),
                "speech_s": _r(self.speech_s, 2), "speaker": self.speaker, "best": self.best,
                "score": _r(self.score, 4), "accepted": self.accepted,
                "scores": {k: _r(v, 4) for k, v in self.scores.items()},
                "threshold": _r(self.threshold, 4), "margin": _r(self.margin, 4),
                "reason": self.reason, "end_reason": self.end_reason, "clipped": self.clipped,
                "level_dbfs": _r(self.level_dbfs, 1), "n_windows": self.n_windows,
                "decision_ms": _r(self.decision_ms, 2), "band": self.band}


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
