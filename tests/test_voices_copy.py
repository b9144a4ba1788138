"""`rtverify voices copy --to STORE [NAME ...]`: a fleet moving from one machine's file store to
a shared PostgreSQL store (or back, or to a directory as a backup) keeps the voices people
enrolled, every model's vectors with them, without hearing them again. All or nothing where it
can be checked first: a missing, invalid or damaged voice, or a name taken in the destination
(without --force), copies nothing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from test_cli import err, one_line_error, out, rtv
from rtverify.errors import InputError, StoreError
from rtverify.store import open_store
from rtverify.store.transfer import copy_voices
from rtverify.store.voiceprints import Voiceprint, VoiceprintStore


def unit(seed, dim):
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def vp(name, seed=0):
    """A voice as enrolment writes it today: the main model's vectors (wide and narrow band),
    another model's, the takes' fall."""
    return Voiceprint(name, "model-a", unit(seed, 8), "2025-01-02T03:04:05Z", 6.5, 3,
                      narrowband=unit(seed + 100, 8),
                      models={"model-b": (unit(seed + 200, 5), unit(seed + 300, 5))},
                      fall_db={"model-a": 1.25, "model-b": 0.5})


def filled(store, names=("alice", "bob", "carol")):
    for i, name in enumerate(names):
        store.save(vp(name, i))
    return store


def same_voice(a: Voiceprint, b: Voiceprint) -> None:
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d.pop("rtverify_version")
    vectors = lambda d: [d["embedding"], d["embedding_narrowband"],  # noqa: E731
                         d["models"]["model-b"]["embedding"],
                         d["models"]["model-b"]["embedding_narrowband"]]
    for x, y in zip(vectors(da), vectors(db)):
        assert np.allclose(x, y, atol=1e-7)
    for d in (da, db):
        d.pop("embedding"), d.pop("embedding_narrowband"), d.pop("models")
    assert da == db


def test_cli_copies_every_voice_and_refuses_to_overwrite(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    filled(VoiceprintStore(src))
    proc = rtv("voices", "copy", "--to", dst, store=src)
    assert proc.returncode == 0, err(proc)
    assert "copied 3 voices" in out(proc) and "copied 'bob'" in out(proc)
    got = VoiceprintStore(dst)
    assert got.names() == ["alice", "bob", "carol"]
    for name in got.names():
        same_voice(VoiceprintStore(src).load(name), got.load(name))
    # the model checks of every read hold on the copy: model-b's view is there
    assert got.load("alice", "model-b", 5).embedding.shape == (5,)

    # again: every name is taken there now, so nothing is written (and nothing changes)
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    VoiceprintStore(src).save(vp("alice", 7), force=True)
    proc = rtv("voices", "copy", "--to", dst, store=src)
    assert proc.returncode == 2
    one_line_error(proc, "'alice', 'bob', 'carol' are already enrolled", "nothing was copied",
                   "--force")
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    # --force replaces only the voice named (names may follow the options)
    proc = rtv("voices", "copy", "--to", dst, "alice", store=src)  # one name taken: "it"
    assert proc.returncode == 2
    one_line_error(proc, "'alice' is already enrolled", "use --force to replace it there")
    proc = rtv("voices", "copy", "--to", dst, "--force", "alice", store=src)
    assert proc.returncode == 0, err(proc)
    assert "copied 1 voice from" in out(proc)
    same_voice(VoiceprintStore(src).load("alice"), VoiceprintStore(dst).load("alice"))
    assert (dst / "bob.json").read_bytes() == before["bob.json"]


def test_cli_copies_nothing_on_a_bad_name_or_a_damaged_voice(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    filled(VoiceprintStore(src))
    proc = rtv("voices", "copy", "alice", "nobody", "--to", dst, store=src)
    assert proc.returncode == 2
    one_line_error(proc, "'nobody' is not enrolled", "nothing was copied")
    proc = rtv("voices", "copy", "--to", dst, "alice", "../x", store=src)
    assert proc.returncode == 2
    one_line_error(proc, "'../x'", "nothing was copied")
    (src / "bob.json").write_text('{"format": "rtverify-voiceprint/1", "name": "bob"')
    proc = rtv("voices", "copy", "--to", dst, store=src)
    assert proc.returncode == 2
    one_line_error(proc, "bob.json", "damaged", "nothing was copied")
    assert not dst.exists() or VoiceprintStore(dst).names() == []
    # naming the others copies them
    proc = rtv("voices", "copy", "alice", "carol", "--to", dst, store=src)
    assert proc.returncode == 0, err(proc)
    assert VoiceprintStore(dst).names() == ["alice", "carol"]


def test_cli_usage_errors(tmp_path):
    src = tmp_path / "src"
    filled(VoiceprintStore(src))
    cases = [
        (("voices", "copy"), ["--to DIR"]),
        (("voices", "copy", "--to", src), ["the store the voices are in"]),
        (("voices", "copy", "--to", str(src) + "/."), ["the store the voices are in"]),
        (("voices", "copy", "--to", ""), ["--to", "empty", "copy the voices into"]),
        (("voices", "--to", tmp_path / "x"), ["--to only go with `voices copy"]),
        (("voices", "remove", "alice", "--force"), ["--force only go with"]),
        (("voices", "copy", "--to", tmp_path / "x", "--bogus"), ["unrecognized arguments: --bogus"]),
    ]
    for args, words in cases:
        proc = rtv(*args, store=src)
        assert proc.returncode == 2, (args, err(proc))
        one_line_error(proc, *words)
    assert VoiceprintStore(src).names() == ["alice", "bob", "carol"]  # nothing removed either
    proc = rtv("voices", "copy", "--to", tmp_path / "y", store=tmp_path / "empty")
    assert proc.returncode == 2
    one_line_error(proc, "no voices enrolled", "nothing to copy")


def test_copy_names_what_was_copied_when_a_write_fails(tmp_path):
    src = filled(VoiceprintStore(tmp_path / "src"))

    class Flaky(VoiceprintStore):
        def save(self, v, *, force=False):
            if v.name == "bob":
                raise StoreError("disk full")
            return super().save(v, force=force)

    dst = Flaky(tmp_path / "dst")
    with pytest.raises(StoreError, match=r"disk full; 'alice' copied before that"):
        copy_voices(src, dst)
    assert dst.names() == ["alice"]
    with pytest.raises(InputError, match="the store the voices are in"):
        copy_voices(src, VoiceprintStore(tmp_path / "src"))


@pytest.fixture(scope="module")
def pg():
    from pg_server import PgServer

    server = PgServer()
    yield server
    server.stop()


def test_file_store_to_postgres_and_back(pg, tmp_path):
    url = pg.new_database()
    src = filled(VoiceprintStore(tmp_path / "src"))
    proc = rtv("voices", "copy", "--to", url, store=tmp_path / "src")
    assert proc.returncode == 0, err(proc)
    db = open_store(url)
    try:
        assert db.names() == ["alice", "bob", "carol"]
        for name in db.names():
            same_voice(src.load(name), db.load(name))
        # a taken name in the database: nothing written, the database's rows unchanged
        src.save(vp("bob", 9), force=True)
        docs = {n: db.load(n).to_dict() for n in db.names()}
        proc = rtv("voices", "copy", "bob", "--to", url, store=tmp_path / "src")
        assert proc.returncode == 2
        one_line_error(proc, "'bob' is already enrolled", "nothing was copied")
        assert {n: db.load(n).to_dict() for n in db.names()} == docs
        # back out of the database into a directory: a backup a file store can use
        proc = rtv("--store", url, "voices", "copy", "--to", tmp_path / "backup",
                   store="/nonexistent")
        assert proc.returncode == 0, err(proc)
        back = VoiceprintStore(tmp_path / "backup")
        assert back.names() == ["alice", "bob", "carol"]
        same_voice(db.load("carol"), back.load("carol"))
        listed = rtv("voices", "--json", "--model", "default", store=tmp_path / "backup")
        assert len([json.loads(line) for line in out(listed).splitlines()]) == 3
    finally:
        db.close()


def test_file_store_never_writes_a_voiceprint_its_readers_refuse(tmp_path):
    """As the PostgreSQL store: a voiceprint every read would call damaged (here a fall out of
    range) is refused at the save, and nothing is put in place."""
    store = VoiceprintStore(tmp_path / "s")
    bad = dataclasses.replace(vp("alice"), fall_db={"model-a": -3.0})
    with pytest.raises(StoreError, match="alice.json: damaged voiceprint .*fall_db"):
        store.save(bad)
    assert store.names() == [] and not list((tmp_path / "s").glob(".*.tmp"))
