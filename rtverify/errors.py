"""Errors a user can cause and fix; the CLI prints their message on one line and exits non-zero.

Anything else that escapes is a bug in rtverify and is reported as such.
"""

from __future__ import annotations


class RtverifyError(Exception):
    """Base class: ``str(err)`` is a complete one-line message naming the thing and the problem."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, always


class InputError(RtverifyError):
    """A recording, a raw stream or an argument is missing, unreadable or unusable."""


class DeviceError(RtverifyError):
    """An audio device is missing, cannot be opened, or stopped delivering audio."""


class ModelError(RtverifyError):
    """The encoder model or its sidecar is missing or inconsistent."""


class StoreError(RtverifyError):
    """The voiceprint store cannot be read or written, or a voiceprint is unusable."""


class NotEnoughSpeech(RtverifyError):
    """A recording held too little speech to decide (exit code 3)."""

    exit_code = 3
