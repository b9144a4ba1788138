"""The JSON-lines writer: one object per event on a stream (``listen --json``)."""

from __future__ import annotations

import json
import sys
from typing import IO

from ..events import Event, Ready, Status, Summary, event_dict


class JsonSink:
    """One JSON object per line on ``stream``: ``ready``, then ``speech_start``, ``provisional``,
    ``decision``, ``dropped``, ``input_lost``/``input_restored`` (and ``status`` if asked), and a
    final ``summary``."""

    def __init__(self, stream: IO[str] | None = None, *, status: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.status = status

    def _write(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.stream.flush()

    def start(self, ready: Ready) -> None:
        self._write(event_dict(ready))

    def handle(self, event: Event) -> None:
        if self.status or not isinstance(event, Status):
            self._write(event_dict(event))

    def close(self, summary: Summary) -> None:
        self._write(summary.to_dict())
