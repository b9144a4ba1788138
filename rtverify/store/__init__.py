"""Where enrolled voices live: :func:`open_store` picks the store a ``--store`` value names.

* a directory (or nothing: ``$RTVERIFY_HOME``...) -> the embedded file store,
  :class:`~rtverify.store.voiceprints.VoiceprintStore`, the default;
* ``postgresql://...`` (or ``postgres://...``) -> a store shared by a fleet of instances,
  :class:`~rtverify.store.postgres.PostgresVoiceprintStore` (the ``postgres`` extra).

Both have the same interface (``save``/``load``/``remove``/``names``/``exists``/``entries``/
``load_usable``, ``root`` naming the store in messages) and the same guarantees.
"""

from __future__ import annotations

import os

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(spec) -> bool:
    return isinstance(spec, str) and spec.lower().startswith(POSTGRES_SCHEMES)


def open_store(spec: str | os.PathLike | None = None):
    """The voiceprint store ``spec`` names (see the module docstring)."""
    if is_postgres(spec):
        from .postgres import PostgresVoiceprintStore

        return PostgresVoiceprintStore(spec)
    from .voiceprints import VoiceprintStore

    return VoiceprintStore(spec)
