"""Voiceprints in PostgreSQL, shared by a fleet of rtverify instances (``--store postgresql://...``).

The same interface and guarantees as the file store (:class:`~rtverify.store.voiceprints.
VoiceprintStore`):

* a voiceprint is the same JSON document the file store writes (``to_json``; never pickle), checked
  field by field when it is read (a damaged row is reported by name and skipped, never used in part);
* a write is one transaction: the voice is there whole or not at all;
* without ``force`` an existing voice is refused, decided by the database itself (``INSERT ... ON
  CONFLICT``), so two instances enrolling the same name cannot both win;
* the model id and the dimension are checked on every read.

For other instances to see a change at once, every write bumps one store ``version`` (the row
``rtverify_store_meta``, locked for the length of the write, so versions commit in order) and sends
``NOTIFY rtverify_voiceprints``. :meth:`PostgresVoiceprintStore.changes` returns what changed after
a version, :meth:`PostgresVoiceprintStore.wait_for_change` blocks on LISTEN until there is
something (see :class:`~rtverify.store.gallery.Gallery`). A removed voice stays as a tombstone row
(``deleted``) so that others learn it went away.

Needs the ``postgres`` extra (``pip install 'rtverify[postgres]'``: psycopg 3).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..errors import InputError, StoreError
from .voiceprints import (MAX_FILE_BYTES, StoreEntry, Voiceprint, VoiceprintStore,
                          _not_enrolled, check_voiceprint, names_to_remove, same_voiceprint,
                          to_json, validate_name)

logger = logging.getLogger(__name__)

CHANNEL = "rtverify_voiceprints"
"""The NOTIFY channel every write signals (payload: the new store version)."""
CONNECT_TIMEOUT_S = 10

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rtverify_store_meta (
    id integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO rtverify_store_meta (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS rtverify_voiceprints (
    name text PRIMARY KEY,
    model_id text NOT NULL,
    embedding_dim integer NOT NULL,
    doc text NOT NULL CHECK (octet_length(doc) <= {MAX_FILE_BYTES}),
    version bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rtverify_voiceprints_version ON rtverify_voiceprints (version);
"""
_SCHEMA_LOCK = 0x72747672  # pg_advisory_xact_lock key: two instances creating the schema at once


def redact(url: str) -> str:
    """The URL without its password (for messages): neither ``user:password@`` nor libpq's
    ``?password=`` query parameter."""
    try:
        base, sep, query = url.partition("?")
        parts = urlsplit(base)
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)
            base = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc[-1]}"))
        return base + sep + re.sub(r"(?i)(^|&)(password=)[^&#]*", r"\1\2***", query)
    except ValueError:
        return "postgresql://(unparsable URL)"


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise StoreError("a postgresql:// store needs psycopg 3: pip install "
                         "'rtverify[postgres]'") from None
    return psycopg


@dataclass(frozen=True)
class StoreChanges:
    """What changed in a store after some version."""

    version: int
    """The store's version now."""
    changed: list[StoreEntry]
    """Voices added or replaced (with their voiceprint, or why it is unusable)."""
    removed: list[str]
    """Names of voices removed."""
    full: bool = False
    """True when ``changed`` is every voice (the caller should forget what it had)."""


class PostgresVoiceprintStore:
    """Voiceprints in a PostgreSQL database (tables created on first use).

    :param url: a libpq connection URL, ``postgresql://user:password@host:5432/db`` (or
        ``postgresql:///db?host=/run/postgresql`` for a local socket).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = redact(url)
        """How messages name the store (never with the password)."""
        self._conn = None
        self._lock = threading.RLock()
        self._schema_ready = False
        self._listener = None

    # -- connection -------------------------------------------------------------------
    def _error(self, err: Exception, doing: str) -> StoreError:
        detail = " ".join(str(err).split()) or type(err).__name__
        if self.url and self.url in detail:
            detail = detail.replace(self.url, self.root)
        return StoreError(f"{self.root}: cannot {doing} ({detail})")

    def _connect(self, autocommit: bool = False):
        psycopg = _psycopg()
        try:
            return psycopg.connect(self.url, autocommit=autocommit,
                                   connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="rtverify")
        except psycopg.Error as err:
            raise self._error(err, "connect to the voice store") from None
        except ValueError as err:  # a URL psycopg cannot parse
            raise StoreError(f"{self.root}: not a usable PostgreSQL URL ({err})") from None

    def _run(self, doing: str, fn):
        """``fn(conn)`` in one transaction, reconnecting once if the connection was lost."""
        psycopg = _psycopg()
        with self._lock:
            for attempt in (0, 1):
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                    self._schema_ready = False
                try:
                    if not self._schema_ready:
                        with self._conn.transaction():
                            self._conn.execute("SELECT pg_advisory_xact_lock(%s)",
                                               (_SCHEMA_LOCK,))
                            self._conn.execute(_SCHEMA)
                        self._schema_ready = True
                    with self._conn.transaction():
                        return fn(self._conn)
                except psycopg.OperationalError as err:
                    broken = self._conn.closed or self._conn.broken
                    if broken and attempt == 0:
                        logger.warning("%s: connection lost (%s); reconnecting", self.root,
                                       " ".join(str(err).split()))
                        self._conn = None
                        continue
                    raise self._error(err, doing) from None
                except psycopg.Error as err:
                    raise self._error(err, doing) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._listener):
                if conn is not None:
                    conn.close()
            self._conn = self._listener = None

    # -- the file store's interface ----------------------------------------------------
    def path_for(self, name: str) -> str:
        """Where a voice lives, for messages (the file store's path)."""
        return f"{self.root}#{validate_name(name)}"

    def ensure_dir(self) -> str:
        """Connect and create the tables if needed."""
        self._run("open the voice store", lambda conn: None)
        return self.root

    def save(self, vp: Voiceprint, *, force: bool = False,
             replacing: Voiceprint | None = None) -> str:
        """Write ``vp`` in one transaction. Without ``force`` an existing voice of that name is
        refused (by the database's unique key, so two instances cannot both win). With
        ``replacing`` (and ``force``), only if the stored voice still is ``replacing``, checked
        in the same transaction (:class:`~rtverify.store.voiceprints.VoiceChanged` if not)."""
        name = validate_name(vp.name)
        doc = to_json(vp)
        # what is written must read back: never store a voiceprint the readers would refuse
        Voiceprint.from_dict(json.loads(doc), self.path_for(name))
        if len(doc.encode("utf-8")) > MAX_FILE_BYTES:
            raise StoreError(f"{self.path_for(name)}: voiceprint larger than {MAX_FILE_BYTES} "
                             "bytes")

        def write(conn):
            version = conn.execute("UPDATE rtverify_store_meta SET version = version + 1 "
                                   "WHERE id = 1 RETURNING version").fetchone()[0]
            if replacing is not None:
                # every writer holds the meta row until it commits, so this reads the voice as
                # the last write left it, and none can change it before this one commits
                row = conn.execute("SELECT doc FROM rtverify_voiceprints WHERE name = %s AND "
                                   "NOT deleted", (name,)).fetchone()
                now = None
                if row is not None:
                    try:
                        now = self._parse(name, row[0], None, None)
                    except (StoreError, InputError):
                        pass
                same_voiceprint(now, replacing, name)
            sql = ("INSERT INTO rtverify_voiceprints (name, model_id, embedding_dim, doc, version)"
                   " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                   " model_id = EXCLUDED.model_id, embedding_dim = EXCLUDED.embedding_dim,"
                   " doc = EXCLUDED.doc, version = EXCLUDED.version, deleted = false,"
                   " updated = now()")
            if not force:
                sql += " WHERE rtverify_voiceprints.deleted"
            row = conn.execute(sql + " RETURNING version",
                               (name, vp.model_id, int(vp.embedding.shape[0]), doc,
                                version)).fetchone()
            if row is None:
                return None  # rolled back by the caller's error below
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
            return version

        exists = StoreError(f"voice {name!r} is already enrolled ({self.path_for(name)}); "
                            "use --force to replace it")

        def write_or_refuse(conn):
            if write(conn) is None:
                raise _Refused()
            return True

        try:
            self._run("write to the voice store", write_or_refuse)
        except _Refused:
            raise exists from None
        return self.path_for(name)

    def _delete(self, names: list[str]) -> list[str]:
        """Mark ``names`` deleted in one transaction, all of them or none: the ones not enrolled
        (then nothing changed), or ``[]``."""

        def delete(conn):
            found = {r[0] for r in conn.execute(
                "SELECT name FROM rtverify_voiceprints WHERE name = ANY(%s) AND NOT deleted "
                "FOR UPDATE", (names,)).fetchall()}
            missing = [n for n in names if n not in found]
            if missing:
                return missing
            version = conn.execute("UPDATE rtverify_store_meta SET version = version + 1 "
                                   "WHERE id = 1 RETURNING version").fetchone()[0]
            conn.execute("UPDATE rtverify_voiceprints SET deleted = true, doc = '', version = %s,"
                         " updated = now() WHERE name = ANY(%s)", (version, names))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
            return []

        return self._run("remove from the voice store", delete)

    def remove(self, name: str) -> str:
        name = validate_name(name)
        if self._delete([name]):
            raise StoreError(f"voice {name!r} is not enrolled (store: {self.root})")
        return self.path_for(name)

    def remove_all(self, names: list[str]) -> list[str]:
        """Remove several voices in one transaction: all of them, or none when one is not
        enrolled (naming every missing one)."""
        names = names_to_remove(names)
        missing = self._delete(names)
        if missing:
            raise StoreError(f"{_not_enrolled(missing)} (store: {self.root}); "
                             "nothing was removed")
        return [self.path_for(n) for n in names]

    def names(self) -> list[str]:
        rows = self._run("read the voice store", lambda conn: conn.execute(
            "SELECT name FROM rtverify_voiceprints WHERE NOT deleted").fetchall())
        return sorted(r[0] for r in rows)

    def exists(self, name: str) -> bool:
        name = validate_name(name)
        return self._run("read the voice store", lambda conn: conn.execute(
            "SELECT 1 FROM rtverify_voiceprints WHERE name = %s AND NOT deleted",
            (name,)).fetchone()) is not None

    def _parse(self, name: str, doc: str, model_id: str | None, dim: int | None) -> Voiceprint:
        where = f"{self.root}#{name}"
        if len(doc.encode("utf-8")) > MAX_FILE_BYTES:
            raise StoreError(f"{where}: damaged voiceprint (larger than {MAX_FILE_BYTES} bytes)")
        try:
            data = json.loads(doc)
        except (ValueError, RecursionError) as err:  # (deep nesting: RecursionError)
            raise StoreError(f"{where}: damaged voiceprint (not valid JSON: {err})") from None
        vp = Voiceprint.from_dict(data, where)
        if unicodedata.normalize("NFC", vp.name) != name:
            raise StoreError(f"{where}: damaged voiceprint (it is for {vp.name!r}, "
                             "not the name of its row)")
        return check_voiceprint(vp, where, model_id, dim)

    def _entry(self, name: str, doc: str, model_id, dim) -> StoreEntry:
        try:
            return StoreEntry(name, self.path_for(name), self._parse(name, doc, model_id, dim),
                              None)
        except (StoreError, InputError) as err:
            return StoreEntry(name, f"{self.root}#{name}", None, str(err))

    def load(self, name: str, model_id: str | None = None, dim: int | None = None) -> Voiceprint:
        name = validate_name(name)
        row = self._run("read the voice store", lambda conn: conn.execute(
            "SELECT doc FROM rtverify_voiceprints WHERE name = %s AND NOT deleted",
            (name,)).fetchone())
        if row is None:
            raise StoreError(f"voice {name!r} is not enrolled (store: {self.root}); "
                             "`rtverify voices` lists the enrolled ones")
        return self._parse(name, row[0], model_id, dim)

    def entries(self, model_id: str | None = None, dim: int | None = None) -> list[StoreEntry]:
        rows = self._run("read the voice store", lambda conn: conn.execute(
            "SELECT name, doc FROM rtverify_voiceprints WHERE NOT deleted ORDER BY name"
        ).fetchall())
        return [self._entry(name, doc, model_id, dim) for name, doc in rows]

    load_usable = VoiceprintStore.load_usable
    """The file store's: built on :meth:`load` and :meth:`entries`, so both stores answer alike."""

    # -- what the fleet needs -------------------------------------------------------------
    def version(self) -> int:
        """The store's version: it grows with every write, on every instance."""
        return int(self._run("read the voice store", lambda conn: conn.execute(
            "SELECT version FROM rtverify_store_meta WHERE id = 1").fetchone()[0]))

    def changes(self, since: int | None, model_id: str | None = None,
                dim: int | None = None) -> StoreChanges:
        """Voices written or removed after version ``since`` (``None``: every voice), read in one
        statement (one snapshot), with the version they bring the store to."""
        after = -1 if since is None else int(since)

        def read(conn):
            return conn.execute(
                "SELECT m.version, v.name, v.doc, v.deleted FROM rtverify_store_meta m "
                "LEFT JOIN rtverify_voiceprints v ON v.version > %s AND v.version <= m.version "
                "AND (%s >= 0 OR NOT v.deleted) WHERE m.id = 1 ORDER BY v.version",
                (after, after)).fetchall()

        rows = self._run("read the voice store", read)
        version = int(rows[0][0])
        changed, removed = [], []
        for _, name, doc, deleted in rows:
            if name is None:
                continue
            if deleted:
                removed.append(name)
            else:
                changed.append(self._entry(name, doc, model_id, dim))
        return StoreChanges(version, changed, removed, full=since is None)

    def wait_for_change(self, since: int, timeout_s: float) -> bool:
        """Block until the store's version passes ``since`` (NOTIFY from any instance) or
        ``timeout_s`` passes; True if it changed. Call from one thread (a watcher)."""
        psycopg = _psycopg()
        try:
            if self._listener is None or self._listener.closed:
                self._listener = self._connect(autocommit=True)
                self._listener.execute(f"LISTEN {CHANNEL}")
            # a write committed before LISTEN took effect sent its NOTIFY to nobody: look first
            if self.version() > since:
                return True
            for note in self._listener.notifies(timeout=timeout_s, stop_after=1):
                try:
                    if int(note.payload) > since:
                        return True
                except ValueError:
                    return True
            return self.version() > since
        except psycopg.Error as err:
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            raise self._error(err, "listen for voice store changes") from None


class _Refused(Exception):
    """Internal: the insert found a live voice of that name (the transaction is rolled back)."""
