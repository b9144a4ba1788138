"""A microphone that comes back: when the input device stops delivering audio during ``listen``,
log it, wait, and reopen it, with a growing delay between attempts (0.5 s doubling to 10 s by
default), forever or up to a limit, instead of ending the daemon.

The stream time keeps following the wall clock across the outage, so the pipeline sees a hole in
the stream: an utterance that was open when the device went away is closed at once with
``end_reason`` ``gap`` and still gets its decision. The outage itself is part of the stream: the
source yields :class:`~rtverify.events.InputLost` / :class:`~rtverify.events.InputRestored`
events between its chunks, and the pipeline passes them on in order (JSON lines
``input_lost``/``input_restored``).
A device that cannot be opened at the start is an error straight away (exit code 2): there is
nothing to come back to.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Generator, Iterator

import numpy as np

from ..errors import DeviceError
from ..events import Event, InputLost, InputRestored
from .sources import Chunk, MicrophoneSource

logger = logging.getLogger(__name__)


def backoff_delays(first_s: float = 0.5, max_s: float = 10.0) -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 10, 10, ... seconds."""
    delay = first_s
    while True:
        yield delay
        delay = min(max_s, delay * 2)


class ReconnectingMicrophone:
    """A :class:`~rtverify.io.sources.MicrophoneSource` that is reopened when it fails.

    :param device: as for MicrophoneSource (index, part of a name, or None for the default).
    :param max_retries: reopen attempts per outage before giving up (the DeviceError then ends
        the run); None retries forever.
    :param first_delay_s: wait before the first attempt (seconds); it doubles after each failure.
    :param max_delay_s: longest wait between attempts (seconds).
    :param open_source: how a source is opened (tests inject their own).
    :param sleep: how to wait (tests shorten it).
    """

    def __init__(self, device: int | str | None = None, *, max_retries: int | None = None,
                 first_delay_s: float = 0.5, max_delay_s: float = 10.0,
                 open_source: Callable[..., MicrophoneSource] = MicrophoneSource,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.device = device
        self.max_retries = max_retries
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._open = open_source
        self._sleep = sleep
        self._closed = False
        self._overflows_before = 0
        self._lost_at_s = 0.0
        self.outages = 0
        """Times the device was lost (count)."""
        self._source = self._open(device)  # a failure here is an error at start: not retried
        self.name = self._source.name

    @property
    def overflows(self) -> int:
        return self._overflows_before + (self._source.overflows if self._source else 0)

    @property
    def level_dbfs(self) -> float:
        return self._source.level_dbfs if self._source else -120.0

    @property
    def position_s(self) -> float:
        return self._source.position_s if self._source else self._lost_at_s

    def _lose(self, error: DeviceError) -> None:
        lost = self._source
        self._lost_at_s = lost.position_s
        self._overflows_before += lost.overflows
        lost.close()
        self._source = None
        self.outages += 1

    def _reopen(self, error: DeviceError) -> Generator[Event, None, bool]:
        """Wait and reopen until it works, yielding the outage's events; returns False when
        closed meanwhile. Raises the last error once ``max_retries`` attempts have failed."""
        t_lost = time.monotonic()
        attempt = 0
        for delay in backoff_delays(self.first_delay_s, self.max_delay_s):
            if self.max_retries is not None and attempt >= self.max_retries:
                raise error
            logger.warning("%s; reopening it in %.1f s%s", error, delay,
                           f" (attempt {attempt + 1})" if attempt else "")
            if attempt:  # the first InputLost went out before the gap was closed
                yield InputLost(round(self._lost_at_s, 3), str(error), attempt, delay)
            self._sleep(delay)
            if self._closed:
                return False
            attempt += 1
            gap_s = time.monotonic() - t_lost
            try:
                self._source = self._open(self.device, start_s=self._lost_at_s + gap_s)
            except DeviceError as err:
                error = err
                continue
            logger.warning("%s: audio is back after %.1f s (%d attempt(s))", self._source.name,
                           gap_s, attempt)
            self.name = self._source.name
            yield InputRestored(round(self._lost_at_s + gap_s, 3), round(gap_s, 3), attempt)
            return True
        return False  # unreachable: backoff_delays never ends

    def __iter__(self) -> Iterator[Chunk | Event]:
        while not self._closed:
            try:
                for chunk in self._source:
                    yield chunk
                return  # the source ended because it was closed
            except DeviceError as err:
                if self._closed:
                    return
                self._lose(err)
                if self.max_retries == 0:
                    raise
                yield InputLost(round(self._lost_at_s, 3), str(err), 0, self.first_delay_s)
                # An empty chunk a little later in stream time: the pipeline closes the open
                # utterance now (a jump in stream time is a gap), not when the device is back.
                yield Chunk(np.zeros(0, dtype=np.float32), self._lost_at_s + 0.1)
                if not (yield from self._reopen(err)):
                    return

    def close(self) -> None:
        self._closed = True
        if self._source is not None:
            self._source.close()
