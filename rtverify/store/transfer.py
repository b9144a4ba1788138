"""Copying voices from one store to another (``rtverify voices copy --to STORE``).

What a fleet needs the day it moves from one machine's file store to a shared PostgreSQL store
(or back, or to a directory as a backup): the voices people enrolled, moved without their
voices being heard again. A voiceprint is copied as the document it is (every model's vectors,
wideband and narrowband, its takes, speech and enrolment date), validated as every read is.

All or nothing where it can be checked first: every name must be enrolled and readable in the
source, and (without ``force``) free in the destination, before anything is written. Each voice
is then written atomically; a write that fails after others names those already copied.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError, StoreError
from .voiceprints import Voiceprint, names_to_remove, voices_are


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def same_store(a, b) -> bool:
    """Whether two opened stores are the same one (a directory by its resolved path, a database
    by its URL)."""
    url_a, url_b = getattr(a, "url", None), getattr(b, "url", None)
    if url_a is not None or url_b is not None:
        return url_a == url_b
    try:
        return Path(os.path.realpath(a.root)) == Path(os.path.realpath(b.root))
    except OSError:
        return False


def copy_voices(source, dest, names: Iterable[str] | None = None, *, force: bool = False
                ) -> list[tuple[str, object]]:
    """Copy voices (``names``, or all) from ``source`` to ``dest``; returns ``(name, where)`` for
    each voice written, in order.

    :raises InputError: an invalid name, or ``dest`` is ``source``.
    :raises StoreError: a name not enrolled, a voice that cannot be read (damaged: nothing is
        copied, the message names it), a name already in ``dest`` without ``force`` (nothing is
        copied), or a store that cannot be read or written.
    """
    if same_store(source, dest):
        raise InputError(f"--to names the store the voices are in ({dest.root}); "
                         "give another directory or database")
    if names:
        wanted = names_to_remove(names, "nothing was copied")
        missing = [n for n in wanted if not source.exists(n)]
        if missing:
            raise StoreError(f"{voices_are(missing, 'not enrolled')} (store: {source.root}); "
                             "nothing was copied")
    else:
        wanted = source.names()
        if not wanted:
            raise StoreError(f"no voices enrolled (store: {source.root}): nothing to copy")
    voices: list[Voiceprint] = []
    unreadable: list[str] = []
    for name in wanted:
        try:
            voices.append(source.load(name))  # every model's vectors: no model check here
        except StoreError as err:
            unreadable.append(str(err))  # it names the voice and where it lives
    if unreadable:
        raise StoreError(f"{'; '.join(unreadable)}; nothing was copied (name the other voices "
                         "to copy them)")
    if not force:
        taken = [vp.name for vp in voices if dest.exists(vp.name)]
        if taken:
            them = "it" if len(taken) == 1 else "them"
            raise StoreError(f"{voices_are(taken, f'already enrolled in {dest.root}')}; "
                             f"nothing was copied (use --force to replace {them} there)")
    done: list[tuple[str, object]] = []
    for vp in voices:
        try:
            done.append((vp.name, dest.save(vp, force=force)))
        except StoreError as err:
            if not done:
                raise
            raise StoreError(f"{err}; {_quoted(n for n, _ in done)} copied before that") from None
    return done
