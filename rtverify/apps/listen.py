"""``listen`` without the user interface: open the input, run the verifier, hand every event to a
sink (the live console, JSON lines, or plain lines), count decisions, end cleanly.

Sinks have ``start(info)``, ``handle(event)`` and ``close(summary)``; the console lives in
:mod:`rtverify.ui.console`, the JSON-lines writer here. Keeping the loop apart from both is what lets
the demo, the tests and a future device-retry wrapper reuse it unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Protocol

from ..errors import InputError
from ..core.pipeline import Verifier
from ..events import DecisionEvent, Event, SegmentDropped
from ..io.sources import Chunk, FileSource, StdinSource

logger = logging.getLogger(__name__)


class Stop(Exception):
    """Raised by the SIGTERM handler: end like Ctrl-C does."""


@dataclass
class InputSpec:
    """Where ``listen``/``verify`` read audio from."""

    path: str | None = None
    """A recording, ``-`` for raw PCM on stdin, or None for the microphone."""
    device: str | None = None
    """Microphone: index or (part of a) name; None for the default input."""
    realtime: bool = False
    """Pace a recording or stdin at real time (as a microphone would deliver it)."""
    rate_hz: int = 16000
    channels: int = 1
    sample_format: str = "s16"
    reconnect: bool = False
    """Microphone: reopen the device when it stops delivering audio (``listen``)."""
    retries: int | None = None
    """With ``reconnect``: attempts per outage before giving up (None: forever)."""

    @property
    def live(self) -> bool:
        """Whether audio arrives in real time (so windows are embedded one by one)."""
        return self.path is None or self.realtime

    def open(self):
        """The chunk source (it may raise InputError/DeviceError with a one-line message)."""
        if self.path is None:
            if self.reconnect:
                from ..io.reconnect import ReconnectingMicrophone

                return ReconnectingMicrophone(self.device, max_retries=self.retries)
            from ..io.sources import MicrophoneSource

            return MicrophoneSource(self.device)
        if self.path == "-":
            return StdinSource(rate_hz=self.rate_hz, channels=self.channels,
                               sample_format=self.sample_format, realtime=self.realtime)
        return FileSource(self.path, realtime=self.realtime)


@dataclass
class Tally:
    """Running counts of what ``listen`` decided."""

    decisions: int = 0
    accepted: int = 0
    rejected: int = 0
    too_short: int = 0
    dropped: int = 0
    by_speaker: Counter = field(default_factory=Counter)
    stream_s: float = 0.0
    overflows: int = 0
    input_lost: int = 0
    """Times the input device was lost (and reopened, or given up)."""

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
        elif event.kind == "input_lost" and getattr(event, "attempt", 0) == 0:
            self.input_lost += 1
        overflows = getattr(event, "overflows", None)
        if overflows is not None:
            self.overflows = overflows

    def to_dict(self, interrupted: bool = False) -> dict:
        return {"event": "summary", "decisions": self.decisions, "accepted": self.accepted,
                "rejected": self.rejected, "too_short": self.too_short, "dropped": self.dropped,
                "by_speaker": dict(self.by_speaker), "stream_s": round(self.stream_s, 3),
                "overflows": self.overflows, "input_lost": self.input_lost,
                "interrupted": interrupted}

    def line(self) -> str:
        who = ", ".join(f"{n} {c}" for n, c in self.by_speaker.most_common())
        return (f"{self.decisions} decisions: {self.accepted} accepted"
                + (f" ({who})" if who else "") + f", {self.rejected} rejected, "
                f"{self.too_short} too short, {self.overflows} overflows"
                + (f", input lost {self.input_lost} time(s)" if self.input_lost else ""))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def event_dict(event: Event) -> dict:
    """The JSON-lines form of any pipeline event."""
    return event.to_dict() if isinstance(event, DecisionEvent) else _rounded(event.to_dict())


class Sink(Protocol):
    def start(self, info: dict) -> None: ...

    def handle(self, event: Event) -> None: ...

    def close(self, summary: dict) -> None: ...


class JsonSink:
    """One JSON object per line on ``stream``: ``ready``, then ``speech_start``, ``provisional``,
    ``decision``, ``dropped`` (and ``status`` if asked), and a final ``summary``."""

    def __init__(self, stream: IO[str] | None = None, *, status: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.status = status

    def _write(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.stream.flush()

    def start(self, info: dict) -> None:
        self._write({"event": "ready", **info})

    def handle(self, event: Event) -> None:
        if event.kind != "status" or self.status:
            self._write(event_dict(event))

    def close(self, summary: dict) -> None:
        self._write(summary)


def _raise_stop(signum, frame) -> None:
    raise Stop()


def run(verifier: Verifier, source: Iterable[Chunk], sink: Sink, info: dict) -> dict:
    """Feed ``source`` through ``verifier`` into ``sink`` until the source ends, Ctrl-C or
    SIGTERM. An utterance still open at an interruption gets its decision. The sink is closed
    with the summary in every case (with ``error`` set when an exception ends the run, which
    then propagates), so a live display never stays on screen. Returns the summary."""
    tally = Tally()
    interrupted = False
    error: str | None = None
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_stop)
    except ValueError:  # not the main thread (tests driving this in-process)
        pass
    sink.start(info)

    def emit(event: Event) -> None:
        tally.add(event)
        sink.handle(event)

    if hasattr(source, "notify"):  # a source with news of its own (device lost/restored)
        source.notify = emit
    try:
        try:
            for event in verifier.process(source):
                emit(event)
        except (KeyboardInterrupt, Stop):
            interrupted = True
            logger.debug("interrupted; closing the open utterance")
            for event in verifier.finish():
                emit(event)
    except BaseException as err:
        error = str(err) or type(err).__name__
        raise
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        tally.overflows = max(tally.overflows, getattr(source, "overflows", 0))
        tally.stream_s = max(tally.stream_s, getattr(source, "position_s", 0.0))
        summary = tally.to_dict(interrupted)
        if error is not None:
            summary["error"] = error
        sink.close(summary)
    return summary


def check_threshold(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise InputError(f"--threshold {value}: must be a cosine between -1 and 1")
    return value


# -- the demo's ground truth ---------------------------------------------------------------------
def speaker_at(script: list[dict], start_s: float, end_s: float) -> str | None:
    """Who talks during most of [start_s, end_s] according to a script (None: nobody)."""
    best, overlap = None, 0.0
    for line in script:
        o = min(end_s, line["end_s"]) - max(start_s, line["start_s"])
        if o > overlap:
            best, overlap = line["speaker"], o
    return best


def grade(decisions: list[DecisionEvent], script: list[dict], enrolled: str, voice: str) -> dict:
    """Right and wrong decisions against the script: an utterance by ``enrolled`` must be
    accepted as ``voice``, anyone else's rejected; a decision on silence is wrong; too-short
    utterances are counted apart; script lines that got no decision are ``missed``."""
    right, wrong, short, lines = [], [], [], []
    for d in decisions:
        truth = speaker_at(script, d.start_s, d.end_s)
        if d.reason == "too_short":
            short.append((d, truth))
            continue
        ok = (d.speaker == voice) if truth == enrolled else (truth is not None and d.speaker is None)
        (right if ok else wrong).append((d, truth))
    for line in script:
        if not any(d.start_s < line["end_s"] and d.end_s > line["start_s"] for d in decisions):
            lines.append(line)
    return {"right": right, "wrong": wrong, "too_short": short, "missed": lines}
