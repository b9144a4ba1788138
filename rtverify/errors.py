"""Errors a user can cause and fix; the CLI prints their message on one line and exits non-zero.

Anything else that escapes is a bug in rtverify and is reported as such.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The one table of ``rtverify``'s exit codes."""

    OK = 0
    """Done; ``verify``: accepted."""
    REJECTED = 1
    """``verify``: the voice (or the challenge) was not accepted."""
    USAGE = 2
    """A usage or input error: a bad argument, an unreadable input, a device, the store."""
    NOT_ENOUGH_SPEECH = 3
    """Too little speech to decide or to enrol."""
    BUG = 4
    """An internal error (a bug in rtverify)."""
    INTERRUPTED = 130
    """Ctrl-C or SIGTERM before the command could finish."""



def shown(value, limit: int = 40) -> str:
    """``value`` as an error line quotes it, cut to ``limit`` characters: a bad argument of
    thousands of characters (or an int of more digits than Python prints) stays one short line."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return "of thousands of digits"
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text


class RtverifyError(Exception):
    """Base class: ``str(err)`` is a complete one-line message naming the thing and the problem."""

    exit_code = ExitCode.USAGE

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

    exit_code = ExitCode.NOT_ENOUGH_SPEECH
