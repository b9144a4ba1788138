"""`rtverify voices remove A B ...` is all or nothing: every name is checked (valid, enrolled)
before any voice is removed. It used to remove 'alice' and then fail on 'nobody' (exit 2 after a
partial removal), on the file store and on PostgreSQL alike."""

from __future__ import annotations

import numpy as np
import pytest

from test_cli import err, one_line_error, out, rtv
from rtverify.errors import InputError, StoreError
from rtverify.store import open_store
from rtverify.store.voiceprints import Voiceprint, VoiceprintStore


def vp(name, seed=0):
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return Voiceprint(name, "model-a", v / np.linalg.norm(v), "2025-01-01T00:00:00Z", 4.0, 2)


def filled(store, names=("alice", "bob", "carol")):
    for i, name in enumerate(names):
        store.save(vp(name, i))
    return store


def test_cli_removes_nothing_when_one_name_is_not_enrolled(tmp_path):
    root = tmp_path / "s"
    filled(VoiceprintStore(root))
    proc = rtv("voices", "remove", "alice", "nobody", "bob", "zed", store=root)
    assert proc.returncode == 2
    one_line_error(proc, "'nobody'", "'zed'", "not enrolled", "nothing was removed")
    assert "alice" not in err(proc) and out(proc) == ""
    assert VoiceprintStore(root).names() == ["alice", "bob", "carol"]
    # an invalid name is refused before anything is removed, too
    proc = rtv("voices", "remove", "alice", "../bob", store=root)
    assert proc.returncode == 2
    one_line_error(proc, "'../bob'", "nothing was removed")
    assert VoiceprintStore(root).names() == ["alice", "bob", "carol"]
    # all present: all removed; a name given twice is removed once, not an error
    proc = rtv("voices", "remove", "alice", "carol", "alice", store=root)
    assert proc.returncode == 0, err(proc)
    assert out(proc).count("removed 'alice'") == 1 and "removed 'carol'" in out(proc)
    assert VoiceprintStore(root).names() == ["bob"]


def test_file_store_remove_all(tmp_path):
    store = filled(VoiceprintStore(tmp_path / "s"))
    with pytest.raises(StoreError, match="voice 'nobody' is not enrolled.*nothing was removed"):
        store.remove_all(["alice", "nobody"])
    with pytest.raises(InputError):
        store.remove_all(["alice", "a/b"])
    assert store.names() == ["alice", "bob", "carol"]
    assert [p.name for p in store.remove_all(["bob", "alice"])] == ["bob.json", "alice.json"]
    assert store.names() == ["carol"]


@pytest.fixture(scope="module")
def pg():
    from pg_server import PgServer

    server = PgServer()
    yield server
    server.stop()


def test_postgres_store_remove_all_and_the_cli(pg):
    url = pg.new_database()
    store = filled(open_store(url))
    try:
        with pytest.raises(StoreError, match="voices 'nobody', 'zed' are not enrolled.*"
                                             "nothing was removed"):
            store.remove_all(["alice", "nobody", "bob", "zed"])
        assert store.names() == ["alice", "bob", "carol"]
        proc = rtv("--store", url, "voices", "remove", "carol", "nobody", store="/nonexistent")
        assert proc.returncode == 2
        one_line_error(proc, "'nobody'", "not enrolled", "nothing was removed")
        assert store.names() == ["alice", "bob", "carol"]
        proc = rtv("--store", url, "voices", "remove", "carol", "alice", store="/nonexistent")
        assert proc.returncode == 0, err(proc)
        assert "removed 'carol'" in out(proc) and "removed 'alice'" in out(proc)
        assert store.names() == ["bob"]
    finally:
        store.close()
