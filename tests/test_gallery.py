"""The gallery: matrix scoring equal to the dict path, snapshots a change cannot disturb,
replacement/removal/compaction, score normalisation, and following a file or PostgreSQL store
(another instance's enrolment visible within a second)."""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import pytest

from rtverify.config import DecisionConfig
from rtverify.core.scoring import DecisionPolicy, Scorer, cosine_scores
from rtverify.store import open_store
from rtverify.store.gallery import Gallery
from rtverify.store.voiceprints import Voiceprint, VoiceprintStore

DIM = 16
MODEL = "model-a"


def unit(rng, n=None):
    x = rng.standard_normal((n or 1, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x if n else x[0]


def voices(n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"v{i}": v for i, v in enumerate(unit(rng, n))}


def vp(name, vec, model_id=MODEL):
    return Voiceprint(name, model_id, vec, "2025-01-01T00:00:00Z", 4.0, 2)


def test_top_scores_equal_the_dict_path():
    ref = voices(500)
    g = Gallery(None, MODEL, DIM)
    g.apply(list(ref.items()))
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = unit(rng)
        want = sorted(cosine_scores(q, ref).items(), key=lambda kv: -kv[1])[:5]
        got = list(g.scores(q, k=5).items())
        assert [n for n, _ in got] == [n for n, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    assert len(g) == 500 and "v3" in g


def test_decide_is_open_set():
    ref = voices(200)
    g = Gallery(None, MODEL, DIM)
    g.apply(list(ref.items()))
    policy = DecisionPolicy(DecisionConfig(), threshold=0.9)
    d = g.decide(ref["v17"], 3.0, policy)
    assert d.accepted and d.speaker == "v17" and d.score == pytest.approx(1.0, abs=1e-5)
    assert d.runner_up_gap is not None and len(d.scores) == 5
    stranger = unit(np.random.default_rng(99))
    d = g.decide(stranger, 3.0, policy)
    assert not d.accepted and d.speaker is None and d.reason == "below_threshold"
    assert Gallery(None, MODEL, DIM).decide(stranger, 3.0, policy).reason == "no_voices"


def test_each_voice_gets_the_threshold_of_the_speech_it_was_enrolled_on(tmp_path):
    """As listen does (issue 12's one-take voiceprints): a voice enrolled on little speech is
    judged against the model's lower threshold for that amount, from a file store too."""
    from rtverify.core.scoring import VoiceVector

    cfg = DecisionConfig(threshold=0.9, threshold_offsets_by_enrol_s=((3.0, -0.1), (10.0, 0.0)))
    policy = DecisionPolicy(cfg)
    rng = np.random.default_rng(3)
    a, b = unit(rng), unit(rng)
    orth = b - (b @ a) * a
    orth /= np.linalg.norm(orth)
    probe = (0.85 * a + np.sqrt(1 - 0.85 ** 2) * orth).astype(np.float32)
    score = float(probe @ a)
    assert float(probe @ b) < 0.8
    assert 0.8 < score < 0.9  # below the threshold, above it less the short enrolment's offset
    for amount, accepted in ((2.0, True), (12.0, False), (None, False)):
        g = Gallery(None, MODEL, DIM)
        g.apply([("a", VoiceVector(a, None, amount)), ("b", VoiceVector(b, None, 12.0))])
        d = g.decide(probe, 3.0, policy)
        assert d.accepted is accepted, (amount, d)
        assert d.threshold == pytest.approx(0.9 + cfg.enrol_offset(amount))
    # from a store: the voiceprint's speech_s travels into the gallery
    store = VoiceprintStore(tmp_path)
    store.save(Voiceprint("a", MODEL, a, "2025-01-01T00:00:00Z", 2.0, 1))
    g = Gallery(store, MODEL, DIM)
    g.refresh()
    assert g.decide(probe, 3.0, policy).accepted
    g.apply([], ["a"])
    assert g.decide(probe, 3.0, policy).reason == "no_voices"


def test_narrowband_input_is_scored_against_the_narrowband_voiceprints(tmp_path):
    """As listen and verify score an 8 kHz call (issue 12): the best voices by wideband score
    are scored again against their narrowband voiceprints, read from the store; an old voice
    without one keeps its wideband score."""
    from rtverify.core.scoring import VoiceVector

    rng = np.random.default_rng(5)
    a, a_nb, b, c = (unit(rng) for _ in range(4))
    store = VoiceprintStore(tmp_path)
    store.save(Voiceprint("a", MODEL, a, "2025-01-01T00:00:00Z", 4.0, 2, narrowband=a_nb))
    store.save(vp("b", b))  # enrolled before band matching
    g = Gallery(store, MODEL, DIM)
    g.refresh()
    probe = unit(rng)
    a_print = VoiceVector(a, a_nb).narrowband_print()
    wide = g.scores(probe)
    narrow = g.narrow_scores(probe)
    assert wide["a"] == pytest.approx(float(probe @ a), abs=1e-6)
    assert narrow["a"] == pytest.approx(float(probe @ a_print), abs=1e-6)
    assert narrow["b"] == pytest.approx(wide["b"], abs=1e-6)
    assert list(narrow) == sorted(narrow, key=lambda n: -narrow[n])
    policy = DecisionPolicy(DecisionConfig(threshold=-1.0))
    assert g.decide(probe, 3.0, policy, band="narrow").scores == narrow
    assert g.decide(probe, 3.0, policy).scores == wide
    # a voice removed from the store after the gallery last looked keeps its wideband score
    store.save(vp("c", c))
    g.refresh()
    store.remove("a")
    assert g.narrow_scores(probe)["a"] == pytest.approx(wide["a"], abs=1e-6)
    # a gallery without a store cannot read narrowband voiceprints: wideband scores
    bare = Gallery(None, MODEL, DIM)
    bare.apply([("a", VoiceVector(a, a_nb))])
    assert bare.narrow_scores(probe) == bare.scores(probe)


def test_replace_remove_and_compaction():
    ref = voices(100)
    g = Gallery(None, MODEL, DIM)
    g.apply(list(ref.items()))
    rng = np.random.default_rng(5)
    new = {f"v{i}": unit(rng) for i in range(0, 90)}  # > a quarter replaced: compacts
    g.apply(list(new.items()), removed=["v95", "v96"])
    assert len(g) == 98 and "v95" not in g and len(g.snapshot.dead) == 0  # compacted
    current = {**ref, **new}
    for n in ("v95", "v96"):
        current.pop(n)
    for name in ("v0", "v50", "v93"):
        top = g.scores(current[name], k=1)
        assert list(top) == [name] and top[name] == pytest.approx(1.0, abs=1e-5)
    assert "v95" not in g.scores(ref["v95"], k=98)
    g.apply([("v1", unit(rng))])  # one replacement: a dead row, no copy
    assert len(g.snapshot.dead) == 1 and len(g) == 98
    assert "v1" not in g.scores(new["v1"], k=1) or g.scores(new["v1"], k=1)["v1"] < 0.99


def test_a_snapshot_is_not_disturbed_by_later_changes():
    ref = voices(50)
    g = Gallery(None, MODEL, DIM)
    g.apply(list(ref.items()))
    old = g.snapshot
    before = g.scores(ref["v7"], k=3, snapshot=old)
    rng = np.random.default_rng(3)
    g.apply([(f"new{i}", unit(rng)) for i in range(500)] + [("v7", unit(rng))],
            removed=["v8"])
    assert g.scores(ref["v7"], k=3, snapshot=old) == before
    assert old.size == 50 and g.snapshot.size == 549


def test_decisions_stay_exact_while_voices_are_enrolled():
    """A decision in flight while another thread enrols and replaces voices always sees a whole
    gallery: the untouched voice scores exactly 1.0 against itself, every time."""
    ref = voices(2000)
    g = Gallery(None, MODEL, DIM)
    g.apply(list(ref.items()))
    stop = threading.Event()
    rng = np.random.default_rng(11)
    extra = unit(rng, 3000)

    def writer():
        i = 0
        while not stop.is_set() and i < len(extra):
            g.apply([(f"w{i}", extra[i]), (f"v{1 + i % 500}", extra[-1 - i])])
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    bad, n = 0, 0
    t_end = time.perf_counter() + 1.5
    while time.perf_counter() < t_end:
        top = g.scores(ref["v0"], k=1)
        n += 1
        if list(top) != ["v0"] or abs(top["v0"] - 1.0) > 1e-5:
            bad += 1
    stop.set()
    t.join()
    assert n > 50 and bad == 0
    assert len(g) >= 2000


@pytest.mark.parametrize("method", ["asnorm", "probe_shift"])
def test_score_normalisation_matches_the_scorer(method):
    rng = np.random.default_rng(2)
    cohort = unit(rng, 300)
    ref = voices(40, seed=4)
    scorer = Scorer(cohort, top_k=50, method=method, centre=-0.3)
    g = Gallery(None, MODEL, DIM, scorer=scorer)
    g.apply(list(ref.items())[:20])
    g.apply(list(ref.items())[20:])  # stats computed per batch, kept in step with the rows
    q = unit(rng)
    want = sorted(scorer.scores(q, ref).items(), key=lambda kv: -kv[1])[:5]
    got = list(g.scores(q, k=5).items())
    assert [n for n, _ in got] == [n for n, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)


def test_only_the_named_voices():
    ref = voices(30)
    g = Gallery(None, MODEL, DIM, names=["v1", "v2"])
    g.apply(list(ref.items()))
    assert len(g) == 2 and set(g.scores(ref["v5"], k=10)) == {"v1", "v2"}


def test_follows_a_file_store(tmp_path):
    store = VoiceprintStore(tmp_path / "voices")
    rng = np.random.default_rng(0)
    a, b = unit(rng), unit(rng)
    store.save(vp("alice", a))
    store.save(vp("old", a, model_id="model-b"))
    g = Gallery(store, MODEL, DIM).start(poll_s=0.05)
    try:
        assert len(g) == 1 and "alice" in g and len(g.problems) == 1
        store.save(vp("bob", b))
        assert g.wait_for(lambda g: "bob" in g, 2.0)
        store.remove("alice")
        assert g.wait_for(lambda g: "alice" not in g, 2.0)
        assert list(g.scores(b, k=1)) == ["bob"]
    finally:
        g.close()


def test_a_same_size_rewrite_in_the_same_timestamp_tick_is_seen(tmp_path):
    """A --force re-enrolment of the same size landing in the same timestamp tick as the last
    look leaves the directory's (mtime, inode, size) as they were: the gallery still sees it
    (the replaced file is a new inode), at once, not at the next write."""
    store = VoiceprintStore(tmp_path / "voices")
    rng = np.random.default_rng(4)
    a, c = unit(rng), unit(rng)
    b = a[::-1].copy()  # the same numbers in another order: a file of the same size
    store.save(vp("alice", a))
    store.save(vp("carol", c))
    g = Gallery(store, MODEL, DIM)
    assert g.refresh() and g.scores(a, k=2)["alice"] > 0.999
    path = store.path_for("alice")
    folder, before = os.stat(store.root), os.stat(path)
    store.save(vp("alice", b), force=True)
    os.utime(store.root, ns=(folder.st_atime_ns, folder.st_mtime_ns))  # the same tick
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(store.root)
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == \
        (folder.st_mtime_ns, folder.st_ino, folder.st_size)  # what the gallery used to compare
    assert os.stat(path).st_size == before.st_size
    assert g.refresh()
    assert g.scores(b, k=2)["alice"] > 0.999 and len(g) == 2
    assert not g.refresh()


def test_a_settled_file_store_costs_one_stat_and_a_change_reads_one_file(tmp_path, monkeypatch):
    """Thousands of voices polled every second: while the directory's stamp is unchanged (and
    old enough to trust) no voice file is looked at; a change reads only the file that changed."""
    store = VoiceprintStore(tmp_path / "voices")
    ref = voices(50, seed=6)
    for name, vec in ref.items():
        store.save(vp(name, vec))
    old = time.time_ns() - 10 * 10**9
    os.utime(store.root, ns=(old, old))  # written ten seconds ago
    g = Gallery(store, MODEL, DIM)
    assert g.refresh() and len(g) == 50
    scans, loads = [], []
    real_stamps, real_load = store.stamps, store.load
    monkeypatch.setattr(store, "stamps", lambda: scans.append(1) or real_stamps())
    monkeypatch.setattr(store, "load", lambda *a: loads.append(a[0]) or real_load(*a))
    assert not g.refresh() and not g.refresh()
    assert scans == [] and loads == []
    new = unit(np.random.default_rng(7))
    store.save(vp("v3", new), force=True)
    assert g.refresh() and loads == ["v3"] and len(scans) == 1
    assert list(g.scores(new, k=1)) == ["v3"] and len(g) == 50
    store.remove("v4")
    assert g.refresh() and "v4" not in g and loads == ["v3"]


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_the_watcher_survives_an_unexpected_error(tmp_path, monkeypatch, caplog, request, kind):
    """Not only a store error: any exception while following the store is logged (once, with
    its traceback) and the watcher goes on: a later enrolment is still seen."""
    caplog.set_level(logging.DEBUG, logger="rtverify.store.gallery")
    if kind == "file":
        writer = store = VoiceprintStore(tmp_path / "voices")
        read = "stamps"
    else:
        url = request.getfixturevalue("pg").new_database()
        writer, store = open_store(url), open_store(url)
        read = "changes"
    rng = np.random.default_rng(8)
    writer.save(vp("alice", unit(rng)))
    g = Gallery(store, MODEL, DIM).start(poll_s=0.05)
    try:
        assert "alice" in g
        failed = threading.Event()
        real = getattr(store, read)

        def flaky(*args, **kwargs):
            if not failed.is_set():
                failed.set()
                raise ValueError("injected")
            return real(*args, **kwargs)

        monkeypatch.setattr(store, read, flaky)
        writer.save(vp("bob", unit(rng)))
        assert failed.wait(5.0), "the watcher never read the store"
        assert g.wait_for(lambda g: "bob" in g, 5.0), "the watcher stopped following the store"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "ValueError: injected" in errors[0].getMessage()
        assert errors[0].exc_info is not None  # the traceback, for whoever debugs it
        deadline = time.monotonic() + 5.0  # logged just after the refresh that saw bob
        while not any("following the voice store again" in r.getMessage()
                      for r in caplog.records):
            assert time.monotonic() < deadline, "the recovery was not logged"
            time.sleep(0.01)
    finally:
        g.close()
        if kind != "file":
            writer.close()
            store.close()


@pytest.fixture(scope="module")
def pg():
    from pg_server import PgServer

    server = PgServer()
    yield server
    server.stop()


def test_an_enrolment_on_one_instance_is_usable_on_another_within_a_second(pg):
    url = pg.new_database()
    rng = np.random.default_rng(0)
    writer, reader = open_store(url), open_store(url)
    writer.save(vp("alice", unit(rng)))
    g = Gallery(reader, MODEL, DIM).start(poll_s=5.0)  # long poll: NOTIFY must wake it
    try:
        assert "alice" in g
        delays = []
        for i in range(5):
            vec = unit(rng)
            t0 = time.perf_counter()
            writer.save(vp(f"new{i}", vec))
            assert g.wait_for(lambda g: f"new{i}" in g, 1.0), f"new{i} not seen within 1 s"
            delays.append(time.perf_counter() - t0)
            assert list(g.scores(vec, k=1)) == [f"new{i}"]
        assert max(delays) < 1.0
        # --force on one instance: the other scores the new vector
        vec = unit(rng)
        writer.save(vp("alice", vec), force=True)
        assert g.wait_for(lambda g: g.scores(vec, k=1).get("alice", 0) > 0.999, 1.0)
        writer.remove("new0")
        assert g.wait_for(lambda g: "new0" not in g, 1.0)
        # a voice of another model is reported, not used
        writer.save(vp("other", unit(rng), model_id="model-b"))
        assert g.wait_for(lambda g: any("model-b" in p for p in g.problems), 1.0)
        assert "other" not in g and len(g) == 5
    finally:
        g.close()
        writer.close()
        reader.close()


def test_a_gallery_keeps_its_voices_while_the_database_is_down_and_catches_up(pg):
    url = pg.new_database()
    rng = np.random.default_rng(1)
    writer = open_store(url)
    a = unit(rng)
    writer.save(vp("alice", a))
    g = Gallery(open_store(url), MODEL, DIM).start(poll_s=0.2)
    try:
        assert "alice" in g
        pg.halt()
        time.sleep(1.0)  # the watcher meets the lost connection (and keeps retrying)
        assert list(g.scores(a, k=1)) == ["alice"]  # still deciding with what it has
        pg.start()
        b = unit(rng)
        writer.save(vp("bob", b))  # the writer reconnects by itself
        assert g.wait_for(lambda g: "bob" in g, 5.0), "the gallery did not catch up"
        assert list(g.scores(b, k=1)) == ["bob"]
    finally:
        g.close()
        writer.close()


def test_gallery_scores_are_the_matrix_product():
    from rtverify.core.scoring import GALLERY_BLOCK, gallery_scores

    rng = np.random.default_rng(5)
    m = rng.standard_normal((2 * GALLERY_BLOCK + 17, 64)).astype(np.float32)  # a ragged tail
    for k in (1, 2, 5):
        v = rng.standard_normal((k, 64)).astype(np.float32)
        got = gallery_scores(m, v)
        assert got.shape == (k, len(m))
        np.testing.assert_allclose(got, v @ m.T, rtol=1e-5, atol=1e-4)
