"""``listen`` without the user interface: run a source through the verifier, hand every event to
a sink (the live console, JSON lines, the server), end cleanly, whatever ends the stream.

A sink has ``start(ready)``, ``handle(event)`` and ``close(summary)``; the console lives in
:mod:`rtverify.ui.console`, the JSON-lines writer in :mod:`rtverify.ui.jsonl`. Keeping the loop
apart from both is what lets the demo, the tests and the server reuse it unchanged.
"""

from __future__ import annotations

import logging
import signal
from typing import Protocol

from ..core.pipeline import Verifier
from ..events import Event, Ready, Summary
from ..io.sources import FrameSource

logger = logging.getLogger(__name__)


class Stop(Exception):
    """Raised by the SIGTERM handler: end like Ctrl-C does."""


class Sink(Protocol):
    def start(self, ready: Ready) -> None: ...

    def handle(self, event: Event) -> None: ...

    def close(self, summary: Summary) -> None: ...


def _raise_stop(signum, frame) -> None:
    raise Stop()


def run(verifier: Verifier, source: FrameSource, sink: Sink, ready: Ready) -> dict:
    """Feed ``source`` through ``verifier`` into ``sink`` until the source ends, Ctrl-C or
    SIGTERM. An utterance still open at an interruption gets its decision. The sink is closed
    with the verifier's summary in every case (with ``error`` set when an exception ends the
    run, which then propagates), so a live display never stays on screen. Returns the summary's
    JSON form."""
    interrupted = False
    error: str | None = None
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_stop)
    except ValueError:  # not the main thread (tests driving this in-process)
        pass
    sink.start(ready)
    summary: Summary | None = None
    try:
        try:
            for event in verifier.process(source):
                sink.handle(event)
        except (KeyboardInterrupt, Stop):
            interrupted = True
            logger.debug("interrupted; closing the open utterance")
            for event in verifier.finish():
                sink.handle(event)
    except BaseException as err:
        error = str(err) or type(err).__name__
        raise
    finally:
        source.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        summary = verifier.summary(interrupted=interrupted, error=error, source=source)
        sink.close(summary)
    return summary.to_dict()
