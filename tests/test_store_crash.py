"""The voice store under SIGKILL and concurrent enrolments, with the real command.

``enroll --force`` is killed at random moments, and (every other time) the instant its temporary
file appears, i.e. while the new voiceprint is being written; after every kill the store must
hold a complete voiceprint, the old or the new one, never a partial file. Two enrolments of
different names at once both persist; of the same name, one wins cleanly.
"""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from rtverify.store.voiceprints import VoiceprintStore

from conftest import DEMO, REPO, SR, read16k

pytestmark = pytest.mark.slow

KILLS = 24


def enroll(store, name, inputs, *extra):
    return subprocess.Popen([sys.executable, "-m", "rtverify", "--store", str(store), "enroll",
                             "--name", name, "--input", *map(str, inputs), *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def takes(tmp_path_factory, demo):
    """Two different sets of recordings of alice (so the old and new voiceprints differ)."""
    d = tmp_path_factory.mktemp("takes")
    conv = read16k(DEMO / demo["conversation"])
    line = [ln for ln in demo["script"] if ln["speaker"] == demo["enrolled_speaker"]][-1]
    sf.write(d / "line.wav", conv[int((line["start_s"] - 0.3) * SR):int((line["end_s"] + 0.3) * SR)],
             SR)
    return {"a": [DEMO / "enroll_1.flac", DEMO / "enroll_2.flac"],
            "b": [DEMO / "enroll_2.flac", d / "line.wav"]}


def test_sigkill_at_any_moment_leaves_the_old_or_the_new_voiceprint(tmp_path, takes):
    store = tmp_path / "voices"
    known = {}
    for key in ("a", "b"):
        code, _, err = finish(enroll(store, "alice", takes[key], "--force"))
        assert code == 0, err
        known[key] = VoiceprintStore(store).load("alice").embedding
    assert float(np.dot(known["a"], known["b"])) < 0.9999  # distinguishable
    rng = random.Random(5)
    during_write = finished = 0
    for i in range(KILLS):
        proc = enroll(store, "alice", takes["ab"[i % 2]], "--force")
        if i % 2:  # at a random moment
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # the instant the new voiceprint's temporary file exists
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if any(n.startswith(".alice.") for n in os.listdir(store)):
                    break
        proc.send_signal(signal.SIGKILL)
        code, _, err = finish(proc)
        if code == 0:
            finished += 1
        else:
            assert code == -signal.SIGKILL, err
        temps = [n for n in os.listdir(store) if n.startswith(".")]
        during_write += bool(temps)
        vp = VoiceprintStore(store).load("alice")  # raises if partial or damaged
        assert any(np.allclose(vp.embedding, v, atol=1e-6) for v in known.values())
        assert VoiceprintStore(store).names() == ["alice"]  # temporary files are not voices
        for t in temps:  # what a later enrolment would clean up as stale
            os.unlink(store / t)
    print(f"{KILLS} kills: {during_write} while the temporary file existed, "
          f"{finished} after the enrolment had finished")
    assert during_write >= 1  # the dangerous window itself was hit


def test_two_enrolments_of_different_names_at_once_both_persist(tmp_path, takes):
    store = tmp_path / "voices"
    procs = [enroll(store, name, takes[key]) for name, key in (("bob", "a"), ("carol", "b"))]
    results = [finish(p) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    s = VoiceprintStore(store)
    assert s.names() == ["bob", "carol"] and s.load("bob").name == "bob"
    assert s.load("carol").name == "carol"


@pytest.fixture(scope="module")
def vectors(session, takes):
    """The voiceprint each set of takes makes."""
    from rtverify.apps.enroll import enroll_files

    return {key: enroll_files(session, paths).vector() for key, paths in takes.items()}


@pytest.mark.parametrize("force", [False, True])
def test_two_enrolments_of_one_name_at_once_one_wins_cleanly(tmp_path, takes, vectors, force):
    for attempt in range(3):
        store = tmp_path / f"voices{attempt}"
        extra = ["--force"] if force else []
        procs = [enroll(store, "dave", takes[key], *extra) for key in ("a", "b")]
        results = [finish(p) for p in procs]
        codes = sorted(r[0] for r in results)
        vp = VoiceprintStore(store).load("dave")  # complete, whoever won
        assert VoiceprintStore(store).names() == ["dave"]
        assert sorted(os.listdir(store)) == ["dave.json"]
        assert any(np.allclose(vp.embedding, v, atol=1e-6) for v in vectors.values())
        if force:
            assert codes == [0, 0], results
            continue
        assert codes == [0, 2], results
        loser = next(r for r in results if r[0] == 2)
        text = loser[2].strip()
        assert text.startswith("rtverify: error: ") and "\n" not in text
        assert "already enrolled" in text and "--force" in text
        winner = next(key for key, r in zip("ab", results) if r[0] == 0)
        assert "enrolled 'dave'" in next(r for r in results if r[0] == 0)[1]
        assert np.allclose(vp.embedding, vectors[winner], atol=1e-6)  # the winner's, whole
