"""One-line errors for the developer command lines (``python -m training``, ``training.distill``,
``export``, ``export.calibrate``, ``benchmarks``, ...).

The project's rule for bad input: one line that names the thing and the problem, and a non-zero
exit code, never a traceback. What a user gets wrong (a missing or unreadable file or folder, a
recording that is not audio, a malformed list, manifest or checkpoint, a model that is not one)
reaches a command's top as an :class:`rtverify.errors.RtverifyError`, an ``OSError`` or a
``ValueError`` (or a ``BadZipFile`` from a truncated ``.npz``); :func:`user_errors` prints it as
``<prog>: <message>`` on stderr and makes the command return 2. Anything else still escapes with
its traceback: that is a bug. No torch here (``--help`` stays fast).
"""

from __future__ import annotations

import functools
import json
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from rtverify.errors import RtverifyError

USER_ERRORS = (RtverifyError, OSError, ValueError, zipfile.BadZipFile)


def message(err: BaseException) -> str:
    """``err`` as one line; an ``OSError`` as ``<file>: <what>``."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def user_errors(prog: str) -> Callable:
    """Decorate a command's ``main``: a user's error becomes ``prog: message`` and exit code 2."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except USER_ERRORS as err:
                print(f"{prog}: {message(err)}", file=sys.stderr, flush=True)
                return 2

        return run

    return wrap


def read_json(path: Path, what: str) -> Any:
    """The JSON file an option names (``what``: the option); a malformed one is a ValueError
    that names it (``json`` alone names only the line and column)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{what} {path}: not valid JSON ({err})") from None
