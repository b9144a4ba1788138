"""Which input to open, as one frozen setting, and opening it as a :class:`FrameSource`."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SAMPLE_RATE_HZ
from .sources import FileSource, FrameSource, StdinSource


@dataclass(frozen=True)
class InputSpec:
    """Where ``listen``, ``verify`` and ``enroll`` read audio from."""

    path: str | None = None
    """A recording, ``-`` for raw PCM on stdin, or None for the microphone."""
    device: str | None = None
    """Microphone: index or (part of a) name; None for the default input."""
    realtime: bool = False
    """Pace a recording or stdin at real time (as a microphone would deliver it)."""
    rate_hz: int = SAMPLE_RATE_HZ
    """Raw PCM on stdin: sample rate (hertz)."""
    channels: int = 1
    """Raw PCM on stdin: interleaved channels."""
    sample_format: str = "s16"
    """Raw PCM on stdin: ``s16``, ``s32`` or ``f32``, little-endian."""
    reconnect: bool = False
    """Microphone: reopen the device when it stops delivering audio (``listen``)."""
    retries: int | None = None
    """With ``reconnect``: attempts per outage before giving up (None: forever)."""
    stall_s: float | None = None
    """Stdin: give up with a one-line error when no byte arrives for this long (a recorder on
    a pipe that stalls without closing; None: wait for the pipe's end)."""

    @property
    def live(self) -> bool:
        """Whether audio arrives in real time (so windows are embedded one by one)."""
        return self.path is None or self.realtime

    def open(self) -> FrameSource:
        """The source (it may raise InputError/DeviceError with a one-line message)."""
        if self.path is None:
            if self.reconnect:
                from .reconnect import ReconnectingMicrophone

                return ReconnectingMicrophone(self.device, max_retries=self.retries)
            from .sources import MicrophoneSource

            return MicrophoneSource(self.device)
        if self.path == "-":
            return StdinSource(rate_hz=self.rate_hz, channels=self.channels,
                               sample_format=self.sample_format, realtime=self.realtime,
                               stall_s=self.stall_s)
        return FileSource(self.path, realtime=self.realtime)
