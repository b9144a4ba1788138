"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl on temporary directories, a Unix
socket only (no TCP port opened), run as the ``postgres`` user when the tests run as root (the
server refuses root).

``RTVERIFY_REQUIRE_POSTGRES=1`` (set by .ci/run, which installs Debian's postgresql) turns a
missing server into a failure instead of a skip."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest


def _bindir() -> str | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(cand, "initdb")):
            return cand
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _skip_or_fail(reason: str):
    if os.environ.get("RTVERIFY_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (RTVERIFY_REQUIRE_POSTGRES=1: PostgreSQL should be installed)")
    pytest.skip(reason)


class PgServer:
    def __init__(self) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _skip_or_fail("psycopg is not installed (the postgres extra)")
        bindir = _bindir()
        if bindir is None:
            _skip_or_fail("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bindir = bindir
        self.base = tempfile.mkdtemp(prefix="rtverify-pg-")
        self.data = os.path.join(self.base, "data")
        self.sock = os.path.join(self.base, "sock")
        os.makedirs(self.sock)
        self.port = 5432
        self.user = "postgres"
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sock, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        env = dict(os.environ, LC_ALL="C")
        subprocess.run(self._as + [os.path.join(bindir, "initdb"), "-D", self.data, "-U",
                                   self.user, "-A", "trust", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True, env=env)
        self.start()

    def start(self) -> None:
        opts = f"-k {self.sock} -p {self.port} -c listen_addresses='' -c fsync=off"
        subprocess.run(self._as + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o",
                                   opts, "-l", os.path.join(self.base, "log"), "-w", "start"],
                       check=True, capture_output=True, env=dict(os.environ, LC_ALL="C"))

    def halt(self) -> None:
        """Stop the server, keeping its data (``start`` brings it back)."""
        subprocess.run(self._as + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m",
                                   "fast", "-w", "stop"], check=True, capture_output=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{db}?host={self.sock}&port={self.port}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(self._as + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m",
                                   "immediate", "stop"], capture_output=True)
        for _ in range(50):
            if not os.path.exists(os.path.join(self.data, "postmaster.pid")):
                break
            time.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)
