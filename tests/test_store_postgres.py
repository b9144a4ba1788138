"""The PostgreSQL voiceprint store against a real server (started by the fixture): the file
store's guarantees (whole or nothing, --force, model id and dimension checks, JSON only), the
factory behind --store, and the CLI on a postgresql:// store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pg_server import PgServer
from rtverify.errors import InputError, StoreError
from rtverify.store import open_store
from rtverify.store.voiceprints import Voiceprint, VoiceprintStore

MODEL = "model-a"


def vp(name="alice", seed=0, model_id=MODEL, dim=8):
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return Voiceprint(name, model_id, v / np.linalg.norm(v), "2025-01-01T00:00:00Z", 4.0, 2)


@pytest.fixture(scope="module")
def pg():
    server = PgServer()
    yield server
    server.stop()


@pytest.fixture
def url(pg):
    return pg.new_database()


@pytest.fixture
def store(url):
    s = open_store(url)
    yield s
    s.close()


def raw(url, sql, params=()):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def test_factory_picks_the_store_from_the_spec(tmp_path, url):
    from rtverify.store.postgres import PostgresVoiceprintStore

    assert isinstance(open_store(str(tmp_path)), VoiceprintStore)
    assert isinstance(open_store(None), VoiceprintStore)
    assert isinstance(open_store(url), PostgresVoiceprintStore)
    secret = open_store("postgresql://bob:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in secret.root and "bob" in secret.root


def test_roundtrip_names_entries_and_the_json_document(store, url):
    store.save(vp("alice"))
    store.save(vp("bob", seed=1))
    got = store.load("alice", MODEL, 8)
    assert np.allclose(got.embedding, vp("alice").embedding, atol=1e-7)
    assert got.n_takes == 2 and got.speech_s == 4.0
    assert store.names() == ["alice", "bob"] and store.exists("bob") and not store.exists("carol")
    usable, problems = store.load_usable(MODEL, dim=8)
    assert sorted(usable) == ["alice", "bob"] and problems == []
    # the row holds the same JSON document the file store writes, nothing binary
    (doc,), = raw(url, "SELECT doc FROM rtverify_voiceprints WHERE name = 'alice'")
    data = json.loads(doc)
    assert data["format"] == "rtverify-voiceprint/1" and len(data["embedding"]) == 8


def test_force_semantics(store):
    store.save(vp("alice", seed=0))
    with pytest.raises(StoreError, match="already enrolled.*--force"):
        store.save(vp("alice", seed=1))
    assert np.allclose(store.load("alice").embedding, vp("alice", seed=0).embedding, atol=1e-7)
    store.save(vp("alice", seed=1), force=True)
    assert np.allclose(store.load("alice").embedding, vp("alice", seed=1).embedding, atol=1e-7)
    store.remove("alice")
    assert store.names() == [] and not store.exists("alice")
    with pytest.raises(StoreError, match="not enrolled"):
        store.load("alice")
    with pytest.raises(StoreError, match="not enrolled"):
        store.remove("alice")
    store.save(vp("alice", seed=2))  # a removed name is free again, without --force
    assert np.allclose(store.load("alice").embedding, vp("alice", seed=2).embedding, atol=1e-7)


def test_two_instances_enrolling_one_name_cannot_both_win(url):
    stores = [open_store(url) for _ in range(4)]
    for s in stores:
        s.ensure_dir()
    results = []
    barrier = threading.Barrier(len(stores))

    def enroll(i, s):
        barrier.wait()
        try:
            s.save(vp("alice", seed=i))
            results.append(("ok", i))
        except StoreError as err:
            results.append(("refused", str(err)))

    threads = [threading.Thread(target=enroll, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r[0] == "ok"]
    assert len(winners) == 1, results
    assert all("already enrolled" in r[1] for r in results if r[0] == "refused")
    stored = stores[0].load("alice").embedding
    assert np.allclose(stored, vp("alice", seed=winners[0][1]).embedding, atol=1e-7)
    for s in stores:
        s.close()


def test_two_instances_adding_to_one_voice_at_once_never_lose_an_add(url):
    """Two instances of a fleet adding takes to one voice at once: one wins, the other is
    refused (the check and the write are one transaction), never both with one add lost."""
    from test_voiceprints import adds_at_once

    adds_at_once(url)


def test_model_and_dimension_checks(store):
    store.save(vp("old", model_id="model-b"))
    store.save(vp("small", dim=4))
    store.save(vp("good"))
    with pytest.raises(StoreError, match="enrolled with model model-b.*re-enroll"):
        store.load("old", MODEL, 8)
    with pytest.raises(StoreError, match="has 4 values, model model-a makes 8"):
        store.load("small", MODEL, 8)
    usable, problems = store.load_usable(MODEL, dim=8)
    assert list(usable) == ["good"] and len(problems) == 2
    with pytest.raises(StoreError, match="model-b"):
        store.load_usable(MODEL, ["old", "good"], 8)


@pytest.mark.parametrize("doc,why", [
    ("{not json", "not valid JSON"),
    ('{"format": "rtverify-voiceprint/1"}', "missing"),
    ("[1, 2]", "not a JSON object"),
    # a number json reads but no float holds (numpy and math raise OverflowError on it)
    (json.dumps({**vp("bad").to_dict(), "embedding": [10 ** 400] + [0.5] * 7}), "out of range"),
    # nesting deeper than Python's recursion limit: json's RecursionError before
    ('{"embedding": ' + "[" * 10000 + "]" * 10000 + "}", "not valid JSON"),
])
def test_a_damaged_row_is_reported_by_name_and_skipped(store, url, doc, why):
    store.save(vp("good"))
    store.save(vp("bad", seed=3))
    raw(url, "UPDATE rtverify_voiceprints SET doc = %s WHERE name = 'bad'", (doc,))
    with pytest.raises(StoreError, match=why) as err:
        store.load("bad")
    assert "#bad" in str(err.value) and "\n" not in str(err.value)
    usable, problems = store.load_usable(MODEL, dim=8)
    assert list(usable) == ["good"] and len(problems) == 1 and "bad" in problems[0]


def test_a_row_for_another_name_is_refused(store, url):
    store.save(vp("alice"))
    doc = raw(url, "SELECT doc FROM rtverify_voiceprints WHERE name = 'alice'")[0][0]
    raw(url, "INSERT INTO rtverify_voiceprints (name, model_id, embedding_dim, doc, version) "
             "VALUES ('mallory', 'model-a', 8, %s, 0)", (doc,))
    with pytest.raises(StoreError, match="it is for 'alice'"):
        store.load("mallory")


def test_a_bad_voiceprint_is_never_written(store):
    bad = Voiceprint("alice", MODEL, np.full(8, np.nan, dtype=np.float32), "2025", 1.0, 1)
    with pytest.raises(StoreError, match="non-finite"):
        store.save(bad)
    with pytest.raises(InputError, match="must not contain"):
        store.save(vp("../evil"))
    assert store.names() == []


def test_a_write_is_whole_or_not_at_all(store, url):
    """A write killed mid-way (the server terminates the session) leaves the old voice."""
    store.save(vp("alice", seed=0))
    # block the meta row from another connection, start a forced write, kill its session
    import psycopg

    blocker = psycopg.connect(url)
    blocker.execute("SELECT version FROM rtverify_store_meta FOR UPDATE")
    errors = []

    def write():
        try:
            store.save(vp("alice", seed=9), force=True)
        except StoreError as err:
            errors.append(str(err))

    t = threading.Thread(target=write)
    t.start()
    for _ in range(100):
        pids = raw(url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'rtverify' "
                        "AND wait_event_type = 'Lock'")
        if pids:
            break
        time.sleep(0.05)
    assert pids, "the write never waited for the lock"
    raw(url, "SELECT pg_terminate_backend(%s)", (pids[0][0],))
    blocker.rollback()
    blocker.close()
    t.join(10)
    assert not t.is_alive()
    # the killed write reconnected and succeeded whole, or failed whole: never a mixture
    got = open_store(url).load("alice", MODEL, 8).embedding
    assert (np.allclose(got, vp("alice", seed=0).embedding, atol=1e-7) and errors) or \
        (np.allclose(got, vp("alice", seed=9).embedding, atol=1e-7) and not errors)
    assert all("\n" not in e for e in errors)


def test_versions_changes_and_notify(url):
    a, b = open_store(url), open_store(url)
    v0 = b.version()
    full = b.changes(None, MODEL, 8)
    assert full.full and full.changed == [] and full.version == v0
    got = {}

    def watch():
        t0 = time.perf_counter()
        got["changed"] = b.wait_for_change(v0, timeout_s=5)
        got["s"] = time.perf_counter() - t0

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    a.save(vp("alice"))
    t.join(10)
    assert got["changed"] and got["s"] < 2
    ch = b.changes(v0, MODEL, 8)
    assert ch.version > v0 and [e.name for e in ch.changed] == ["alice"] and ch.removed == []
    a.remove("alice")
    ch2 = b.changes(ch.version, MODEL, 8)
    assert ch2.removed == ["alice"] and ch2.changed == []
    assert not b.wait_for_change(ch2.version, timeout_s=0.3)
    a.close()
    b.close()


def test_unreachable_server_is_one_line(tmp_path):
    s = open_store(f"postgresql://nobody:secret@/x?host={tmp_path}&port=1")
    with pytest.raises(StoreError) as err:
        s.names()
    msg = str(err.value)
    assert "cannot connect" in msg and "secret" not in msg and "\n" not in msg


def test_cli_on_a_postgresql_store(url, tmp_path, demo):
    """enroll, voices, verify through --store postgresql://... (the real CLI)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = lambda *a: subprocess.run([sys.executable, "-m", "rtverify", "--store", url, *a],
                                    capture_output=True, text=True, env=env, timeout=120)
    takes = [str(demo["dir"] / n) for n in demo["enroll"]]
    r = run("enroll", "--name", "alice", "--input", *takes)
    assert r.returncode == 0, r.stderr
    r = run("enroll", "--name", "alice", "--input", *takes)
    assert r.returncode == 2 and "already enrolled" in r.stderr and "Traceback" not in r.stderr
    r = run("voices", "--json")
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["name"] == "alice"
    r = run("verify", "--name", "alice", "--input", takes[0])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("enroll", "--name", "alice", "--add", "--input", takes[1])
    assert r.returncode == 0 and "now 3 takes" in r.stdout, r.stdout + r.stderr
    assert open_store(url).load("alice").n_takes == 3
    r = run("voices", "remove", "alice")
    assert r.returncode == 0
    assert open_store(url).names() == []


@pytest.mark.parametrize("url", [
    "postgresql://nobody@/x?host={d}&port=1&password=hunter2",
    "postgresql://nobody@/x?password=hunter2&host={d}&port=1",
    "postgres://nobody:hunter2@/x?host={d}&port=1",
    "postgresql://nobody@/x?host={d}&port=1&PASSWORD=hunter2",
])
def test_a_password_in_the_query_string_is_never_shown(tmp_path, url):
    """libpq takes the password as a query parameter too; messages (and the line a service
    prints when it starts, which names ``store.root``) must not show it there either."""
    s = open_store(url.format(d=tmp_path))
    assert "hunter2" not in s.root and "x" in s.root
    with pytest.raises(StoreError) as err:
        s.names()
    assert "cannot connect" in str(err.value) and "hunter2" not in str(err.value)
