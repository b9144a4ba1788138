"""Descriptor 2 muted for native code's chatter, and Python's stderr written around it.

Kept apart from :mod:`rtverify.io.sources` (which mutes MP3 decoding and device opening) so
that the CLI's log handler can write through :func:`write_stderr` without importing numpy.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

_mute_lock = threading.Lock()
_mute_depth = 0
_mute_saved: int | None = None


@contextlib.contextmanager
def native_stderr_muted(on: bool = True) -> Iterator[None]:
    """While on, what native code writes to file descriptor 2 goes nowhere.

    libsndfile decodes MP3 with libmpg123, which prints its decoder's notes there ("[src/
    libmpg123/layer3.c:...] error: part2_3_length (864) too large for available bit count
    (760)", five to ten lines for a sound LAME file) and libsndfile offers no switch to quiet it
    (libsndfile issue 958); a user of ``verify --input talk.mp3`` saw them above the answer.
    Only the MP3 decoding calls (each a block long, milliseconds), the opening of a recording
    (libmpg123 prints there too) and the opening of an audio device (:class:`MicrophoneSource`:
    ALSA prints at every failed probe) are wrapped; an error still reaches the user as
    rtverify's own one-line error. Python's ``sys.stderr`` is flushed first, so nothing written
    before is lost; nested and concurrent uses share one mute (the descriptor is restored when
    the last one ends)."""
    global _mute_depth, _mute_saved
    if not on:
        yield
        return
    with _mute_lock:
        if _mute_depth == 0:
            try:
                sys.stderr.flush()
                saved = os.dup(2)
            except (OSError, ValueError, AttributeError):  # no descriptor 2 (a daemon)
                saved = None
            if saved is not None:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 2)
                os.close(null)
            _mute_saved = saved
        _mute_depth += 1
    try:
        yield
    finally:
        with _mute_lock:
            _mute_depth -= 1
            if _mute_depth == 0 and _mute_saved is not None:
                os.dup2(_mute_saved, 2)
                os.close(_mute_saved)
                _mute_saved = None


def write_stderr(text: str) -> None:
    """Write ``text`` to Python's stderr from any thread, even while :func:`native_stderr_muted`
    points descriptor 2 at /dev/null for a decoding call in another thread (it goes to the saved
    descriptor then, not nowhere)."""
    with _mute_lock:
        if _mute_saved is not None and sys.stderr is sys.__stderr__:
            os.write(_mute_saved, text.encode(sys.stderr.encoding or "utf-8", "replace"))
        else:
            sys.stderr.write(text)
            sys.stderr.flush()
