"""The voiceprint store: names, atomic private files, model ids, damaged files."""

import dataclasses
import json
import multiprocessing
import os
import stat
import threading

import numpy as np
import pytest

from rtverify.errors import InputError, StoreError
from rtverify.store.voiceprints import (FORMAT, Voiceprint, VoiceprintStore, default_store_dir,
                                  validate_name)

MODEL = "model-a"


def vp(name="alice", seed=0, model_id=MODEL, dim=8):
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return Voiceprint(name, model_id, v / np.linalg.norm(v), "2025-01-01T00:00:00Z", 4.0, 2)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("name", ["alice", "Bob Smith", "josé", "O'Brien", "x" * 64, "a.b",
                                  "李雷", "user_1-2"])
def test_good_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name,why", [
    ("", "empty"), ("../evil", "/"), ("a/b", "/"), ("a\\b", "\\"), ("..", "'..'"),
    (".hidden", "start"), ("-rf", "start"), (" lead", "start"), ("trail ", "end"),
    ("a\nb", "control"), ("a\x00b", "control"), ("a\x1bb", "control"), ("x" * 65, "longer"),
    ("a:b", ":"), ("/etc/passwd", "/")])
def test_bad_names_are_refused_with_the_reason(name, why):
    with pytest.raises(InputError) as err:
        validate_name(name)
    assert why in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("char,most", [("x", 64), ("é", 64), ("李", 64), ("😀", 60)])
def test_every_valid_name_fits_the_store_as_a_file_name(tmp_path, char, most):
    """A name the checks let through is one the file store can hold (its file and its temporary
    file, within a file system's 255 bytes), so a voice enrolled in PostgreSQL can always be
    copied to a directory; a longer one is refused as a name, not blamed on the store."""
    store = VoiceprintStore(tmp_path)
    name = char * most
    store.save(vp(name))
    assert store.load(name).name == name and store.names() == [name]
    if most < 64:
        with pytest.raises(InputError, match="bytes"):
            validate_name(char * (most + 1))


def test_unicode_names_are_canonical():
    decomposed = "jose\u0301"
    assert validate_name(decomposed) == "josé"


def test_save_load_roundtrip_and_permissions(tmp_path):
    store = VoiceprintStore(tmp_path / "store")
    path = store.save(vp())
    assert path == tmp_path / "store" / "alice.json"
    assert mode(tmp_path / "store") == 0o700 and mode(path) == 0o600
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["name"] == "alice" and data["model_id"] == MODEL
    assert data["n_takes"] == 2 and data["speech_s"] == 4.0 and len(data["embedding"]) == 8
    assert data["created"].endswith("Z") and data["rtverify_version"]
    got = store.load("alice", MODEL)
    assert np.allclose(got.embedding, vp().embedding, atol=1e-7)
    assert store.names() == ["alice"]
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["alice.json"]  # no temp left


def test_a_loose_existing_store_is_tightened(tmp_path):
    root = tmp_path / "store"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    VoiceprintStore(root).save(vp())
    assert mode(root) == 0o700


def test_existing_name_is_refused_without_force_and_replaced_with_it(tmp_path):
    store = VoiceprintStore(tmp_path)
    store.save(vp(seed=0))
    before = (tmp_path / "alice.json").read_bytes()
    with pytest.raises(StoreError, match="already enrolled.*--force"):
        store.save(vp(seed=1))
    assert (tmp_path / "alice.json").read_bytes() == before
    store.save(vp(seed=1), force=True)
    assert np.allclose(store.load("alice").embedding, vp(seed=1).embedding, atol=1e-7)
    assert mode(tmp_path / "alice.json") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.json"]


def test_concurrent_creates_of_one_name_have_exactly_one_winner(tmp_path):
    store = VoiceprintStore(tmp_path)
    results = []
    barrier = threading.Barrier(8)

    def enroll(seed):
        barrier.wait()
        try:
            store.save(vp(seed=seed))
            results.append(seed)
        except StoreError:
            results.append(None)

    threads = [threading.Thread(target=enroll, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    winners = [r for r in results if r is not None]
    assert len(results) == 8 and len(winners) == 1
    assert np.allclose(store.load("alice").embedding, vp(seed=winners[0]).embedding, atol=1e-7)


def _add_takes_at_once(spec, k, barrier, results):
    """One process of ``enroll --add``: read the voice, wait for the other, save the takes."""
    from rtverify.apps.enroll import save_added
    from rtverify.store import open_store

    store = open_store(spec)
    old = store.load("alice")
    added = dataclasses.replace(vp("alice", seed=100 + k), n_takes=old.n_takes + 1)
    barrier.wait(timeout=60)
    try:
        save_added(store, old, added)
        results.put((k, "ok"))
    except StoreError as err:
        results.put((k, str(err)))


def adds_at_once(spec, rounds=4):
    """Two processes add takes to one voice at the same moment, ``rounds`` times: each time one
    must win and the other be refused, never both "succeed" with one add silently lost."""
    from rtverify.store import open_store

    # Not "fork": the test process runs threads (a fork of it can inherit a held lock, and
    # Python 3.12 warns of it); "forkserver" starts the two writers clean, as two commands.
    ctx = multiprocessing.get_context("forkserver")
    for r in range(rounds):
        store = open_store(spec)
        store.save(vp("alice", seed=r), force=True)
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_add_takes_at_once, args=(spec, k, barrier, results))
                 for k in (1, 2)]
        for p in procs:
            p.start()
        got = sorted(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        winners = [k for k, res in got if res == "ok"]
        assert len(winners) == 1, got
        assert all("changed while takes were being added" in res for _, res in got
                   if res != "ok"), got
        stored = store.load("alice")
        assert stored.n_takes == 3
        assert np.allclose(stored.embedding, vp("alice", seed=100 + winners[0]).embedding,
                           atol=1e-7)
        if hasattr(store, "close"):
            store.close()


def test_two_processes_adding_to_one_voice_at_once_never_lose_an_add(tmp_path):
    """``enroll --add`` twice at once (two processes): the second saw the voice as it was before
    the first saved, so saving it would silently drop the first one's takes; the check and the
    write are one step under the store's lock, so it is refused instead."""
    adds_at_once(str(tmp_path / "voices"))


def test_remove(tmp_path):
    store = VoiceprintStore(tmp_path)
    store.save(vp("alice"))
    store.save(vp("bob", 1))
    store.remove("alice")
    assert store.names() == ["bob"]
    with pytest.raises(StoreError, match="not enrolled"):
        store.remove("alice")
    with pytest.raises(InputError):
        store.remove("../bob")
    assert store.names() == ["bob"]


def test_traversal_never_touches_files_outside(tmp_path):
    store = VoiceprintStore(tmp_path / "store")
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    for name in ("../secret", "..", "/tmp/x", "a/../../secret"):
        with pytest.raises(InputError):
            store.save(vp(name))
        with pytest.raises(InputError):
            store.load(name)
    assert outside.read_text() == "{}"


def test_foreign_model_is_refused_with_a_re_enroll_hint(tmp_path):
    store = VoiceprintStore(tmp_path)
    store.save(vp(model_id="old-model"))
    with pytest.raises(StoreError, match="old-model.*re-enroll"):
        store.load("alice", MODEL)
    voices, problems = store.load_usable(MODEL)
    assert voices == {} and len(problems) == 1 and "re-enroll" in problems[0]


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def _good_dict(name="bad"):
    return vp(name).to_dict()


def _damaged_cases():
    d = _good_dict
    return {
        "not json": "{not json",
        "truncated": json.dumps(d())[:60],
        "list": [1, 2, 3],
        "wrong format": {**d(), "format": "pickle"},
        "no embedding": {k: v for k, v in d().items() if k != "embedding"},
        "wrong dims": {**d(), "embedding_dim": 9},
        "empty": {**d(), "embedding": [], "embedding_dim": 0},
        "nan": '{"format": "%s", "name": "bad", "model_id": "%s", "embedding_dim": 2, '
               '"embedding": [NaN, 1.0], "created": "x", "n_takes": 1, "speech_s": 1}'
               % (FORMAT, MODEL),
        "inf": '{"format": "%s", "name": "bad", "model_id": "%s", "embedding_dim": 2, '
               '"embedding": [Infinity, 1.0], "created": "x", "n_takes": 1, "speech_s": 1}'
               % (FORMAT, MODEL),
        "zero vector": {**d(), "embedding": [0.0] * 8},
        "strings": {**d(), "embedding": ["0.1"] * 8},
        "bools": {**d(), "embedding": [True] * 8},
        "other name": {**d(), "name": "alice"},
        "binary": "\xff\xfe\x00garbage",
        # an integer too large for a float: json reads it, numpy and math cannot convert it
        "huge int": {**d(), "embedding": [10 ** 400] + d()["embedding"][1:]},
        "huge speech_s": {**d(), "speech_s": 10 ** 400},
        "huge fall_db": {**d(), "fall_db": {MODEL: 10 ** 400}},
        "huge narrowband": {**d(), "embedding_narrowband": [10 ** 400] * 8},
        # nesting deeper than Python's recursion limit: json's RecursionError, which had ended
        # `rtverify voices` and `listen` as an internal error (exit 4)
        "deep nesting": '{"embedding": ' + "[" * 10000 + "]" * 10000 + "}",
    }


@pytest.mark.parametrize("case", list(_damaged_cases()))
def test_damaged_file_is_reported_by_name_and_the_others_keep_working(tmp_path, case):
    store = VoiceprintStore(tmp_path)
    store.save(vp("alice"))
    obj = _damaged_cases()[case]
    if case == "binary":
        (tmp_path / "bad.json").write_bytes(b"\xff\xfe\x00garbage")
    else:
        _write(tmp_path / "bad.json", obj)
    with pytest.raises(StoreError, match="bad.json: damaged voiceprint"):
        store.load("bad", MODEL)
    voices, problems = store.load_usable(MODEL)
    assert list(voices) == ["alice"]
    assert len(problems) == 1 and "bad.json" in problems[0] and "\n" not in problems[0]


def test_a_voice_of_a_newer_rtverify_says_so_and_is_left_alone(tmp_path):
    """A store shared with a newer rtverify (a fleet upgraded one machine first): its voices
    are not called damaged, the message says to upgrade, and nothing here touches the file."""
    store = VoiceprintStore(tmp_path)
    store.save(vp("alice"))
    newer = FORMAT.rsplit("/", 1)[0] + "/2"
    _write(tmp_path / "bad.json", {**_good_dict(), "format": newer})
    before = (tmp_path / "bad.json").read_bytes()
    with pytest.raises(StoreError, match=r"bad.json: a voiceprint in a newer rtverify's "
                                         r"format \(rtverify-voiceprint/2; .*upgrade rtverify"):
        store.load("bad", MODEL)
    voices, problems = store.load_usable(MODEL)
    assert list(voices) == ["alice"] and len(problems) == 1 and "damaged" not in problems[0]
    assert (tmp_path / "bad.json").read_bytes() == before


def test_huge_file_is_not_read_whole(tmp_path):
    store = VoiceprintStore(tmp_path)
    (tmp_path / "big.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(StoreError, match="larger than"):
        store.load("big")


def test_scores_depend_only_on_the_embedding(tmp_path):
    """Metadata (speech_s, n_takes, created, version, extra keys) never changes the vector."""
    store = VoiceprintStore(tmp_path)
    path = store.save(vp())
    ref = store.load("alice", MODEL).embedding
    data = json.loads(path.read_text())
    data.update(speech_s=999.0, n_takes=77, created="1970", rtverify_version="x", note="hi")
    path.write_text(json.dumps(data))
    assert np.array_equal(store.load("alice", MODEL).embedding, ref)


def test_temp_files_and_other_files_are_not_voices(tmp_path):
    store = VoiceprintStore(tmp_path)
    store.save(vp())
    (tmp_path / ".alice.abc.tmp").write_text("partial")
    (tmp_path / "notes.txt").write_text("x")
    assert store.names() == ["alice"]


def test_store_location(tmp_path, monkeypatch):
    assert default_store_dir({"RTVERIFY_HOME": str(tmp_path)}) == tmp_path
    assert default_store_dir({"XDG_DATA_HOME": "/x/data"}) == \
        default_store_dir({"XDG_DATA_HOME": "/x/data", "RTVERIFY_HOME": ""}) == \
        __import__("pathlib").Path("/x/data/rtverify")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_dir({"XDG_DATA_HOME": "relative"}) == \
        tmp_path / ".local" / "share" / "rtverify"
    assert default_store_dir({}) == tmp_path / ".local" / "share" / "rtverify"


def test_stale_temp_files_of_killed_writers_are_cleaned_fresh_ones_kept(tmp_path):
    store = VoiceprintStore(tmp_path)
    store.save(vp("alice"))
    stale, fresh = tmp_path / ".bob.old.tmp", tmp_path / ".carol.new.tmp"
    stale.write_text("partial")
    fresh.write_text("being written")
    os.utime(stale, (0, 0))
    store.save(vp("dave", 3))
    assert not stale.exists() and fresh.exists()
    assert store.names() == ["alice", "dave"]


def test_links_fifos_and_directories_in_the_store_are_refused_not_followed(tmp_path):
    """A planted symbolic link is not followed (it could point anywhere), and a FIFO neither
    blocks the reader nor is read; each is reported by name and the other voices still work."""
    store = VoiceprintStore(tmp_path / "store")
    store.save(vp("alice"))
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(vp("linked").to_dict()))
    os.symlink(outside, tmp_path / "store" / "linked.json")
    os.mkfifo(tmp_path / "store" / "pipe.json")
    (tmp_path / "store" / "dir.json").mkdir()
    with pytest.raises(StoreError, match="linked.json: not a voiceprint .a symbolic link"):
        store.load("linked", MODEL)
    with pytest.raises(StoreError, match="pipe.json: not a voiceprint .not a regular file"):
        store.load("pipe", MODEL)
    with pytest.raises(StoreError, match="dir.json: "):
        store.load("dir", MODEL)
    voices, problems = store.load_usable(MODEL)
    assert list(voices) == ["alice"] and len(problems) == 3


def test_a_directory_in_the_way_is_a_store_error_with_force_too(tmp_path):
    """`enroll --force` over a NAME.json that is a directory was an internal error (exit 4:
    IsADirectoryError from the rename); it is a store problem named by its path, and neither
    the directory nor a temporary file is left changed or behind."""
    store = VoiceprintStore(tmp_path)
    (tmp_path / "alice.json").mkdir()
    (tmp_path / "alice.json" / "keep").write_text("x")
    for force in (False, True):
        with pytest.raises(StoreError, match="alice.json") as err:
            store.save(vp(), force=force)
        assert "already enrolled" in str(err.value) or "Is a directory" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.json"]
    assert (tmp_path / "alice.json" / "keep").read_text() == "x"
