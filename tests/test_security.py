"""What a tampered voiceprint file can and cannot do, through the real command.

Only the embedding (and the model id, to refuse another encoder's vectors) may affect a score or
a decision: metadata edited or added (a "threshold" of -1, a bigger speech_s, a newer version)
changes nothing, and a file that does not parse completely is refused as a whole, reported by
name, while the other voices keep working.
"""

import json
import os
import stat
import subprocess
import sys

import pytest
import soundfile as sf

from conftest import DEMO, REPO, SR, read16k


def rtv(store, *args):
    proc = subprocess.run([sys.executable, "-m", "rtverify", "--store", str(store), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo):
    d = tmp_path_factory.mktemp("sec")
    store = d / "voices"
    proc = rtv(store, "enroll", "--name", "alice", "--input", DEMO / "enroll_1.flac",
               DEMO / "enroll_2.flac")
    assert proc.returncode == 0, proc.stderr
    conv = read16k(DEMO / demo["conversation"])
    line = next(ln for ln in demo["script"] if ln["speaker"] != demo["enrolled_speaker"])
    sf.write(d / "stranger.wav", conv[int(line["start_s"] * SR):int(line["end_s"] * SR)], SR)
    good = json.loads((store / "alice.json").read_text())
    baseline = json.loads(rtv(store, "verify", "--name", "alice", "--input", d / "stranger.wav",
                              "--json").stdout)
    assert baseline["accepted"] is False
    return d, good, baseline


def with_voice(tmp_path, data, name="alice"):
    store = tmp_path / "voices"
    store.mkdir(mode=0o700)
    path = store / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    os.chmod(path, 0o600)
    return store


@pytest.mark.parametrize("edit", [
    {"threshold": -1.0}, {"accept": True}, {"decision": {"threshold": -1.0}},
    {"n_takes": 99}, {"created": "2999-01-01T00:00:00Z"},
    {"rtverify_version": "99.0"}, {"score_offset": 1.0, "calibration": {"a": 10, "b": 5}}])
def test_metadata_never_changes_a_score_or_a_decision(setup, tmp_path, edit):
    d, good, baseline = setup
    store = with_voice(tmp_path, {**good, **edit})
    proc = rtv(store, "verify", "--name", "alice", "--input", d / "stranger.wav", "--json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("score", "threshold", "accepted", "margin"):
        assert result[key] == baseline[key], (key, edit)


@pytest.mark.parametrize("speech_s", [9999.0, 0.01, 7.0])
def test_the_enrolled_amount_moves_a_threshold_only_within_the_calibrated_offsets(
        setup, tmp_path, speech_s):
    """A voiceprint's ``speech_s`` (the speech it was enrolled on) picks its threshold offset
    from the model's calibrated table (issue 12's one-take voiceprints); edited, it can move
    the threshold no further than that table allows: never below the offset for the least
    enrolment the table knows, never above the calibration's own threshold."""
    from rtverify.core.encoder import load_model_info

    d, good, baseline = setup
    cfg = load_model_info("default").decision
    store = with_voice(tmp_path, {**good, "speech_s": speech_s})
    proc = rtv(store, "verify", "--name", "alice", "--input", d / "stranger.wav", "--json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["score"] == baseline["score"]
    shift = cfg.enrol_offset(speech_s) - cfg.enrol_offset(good["speech_s"])
    assert result["threshold"] == pytest.approx(baseline["threshold"] + shift, abs=1e-4)
    lowest = min(o for _, o in cfg.threshold_offsets_by_enrol_s)
    assert lowest <= cfg.enrol_offset(speech_s) <= 0.0


@pytest.mark.parametrize("edit,words", [
    ({"name": "bob"}, ["not the name of its file"]),
    ({"model_id": "other-model-1"}, ["other-model-1", "re-enroll"]),
    ({"embedding_dim": 255}, ["embedding has 256 values"]),
    ({"format": "rtverify-voiceprint/2"}, ["format"]),
    ({"embedding": "0.1 0.2"}, ["embedding"]),
    ({"n_takes": "2"}, ["n_takes"]),
])
def test_a_tampered_file_is_refused_whole_and_named(setup, tmp_path, edit, words):
    d, good, _ = setup
    store = with_voice(tmp_path, {**good, **edit})
    bob = {**good, "name": "bob"}
    (store / "bob.json").write_text(json.dumps(bob))
    proc = rtv(store, "verify", "--name", "alice", "--input", DEMO / "enroll_1.flac")
    assert proc.returncode == 2
    text = proc.stderr.strip()
    assert text.startswith("rtverify: error: ") and "\n" not in text and "alice.json" in text
    assert all(w in text for w in words), text
    # listen skips it with a warning naming it and keeps working with the others
    proc = rtv(store, "listen", "--input", DEMO / "enroll_1.flac", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "alice.json" in proc.stderr and "skipped" in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["voices"] == ["bob"]
    assert all(set(e["scores"]) == {"bob"} for e in events if e["event"] == "decision")


def test_a_truncated_embedding_is_not_used_in_part(setup, tmp_path):
    d, good, _ = setup
    text = json.dumps(good)
    cut = text[: text.index('"embedding": [') + 400]  # the first values of the vector only
    store = with_voice(tmp_path, cut)
    proc = rtv(store, "verify", "--name", "alice", "--input", DEMO / "enroll_1.flac")
    assert proc.returncode == 2 and "damaged voiceprint" in proc.stderr
    short = {**good, "embedding": good["embedding"][:128], "embedding_dim": 128}
    (tmp_path / "x").mkdir()
    store2 = with_voice(tmp_path / "x", short)
    proc = rtv(store2, "verify", "--name", "alice", "--input", DEMO / "enroll_1.flac")
    assert proc.returncode == 2 and "alice.json" in proc.stderr  # not scored against 128 values


def test_store_permissions_and_no_escape(setup, tmp_path, capsys):
    from rtverify import cli

    store = tmp_path / "deep" / "voices"
    proc = rtv(store, "enroll", "--name", "alice", "--input", DEMO / "enroll_1.flac",
               DEMO / "enroll_2.flac")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store / "alice.json").st_mode) == 0o600
    for name in ("../alice", "..", "a/../../x", "/tmp/evil", "..\\x", ".alice"):
        for args in (["enroll", "--name", name, "--input", DEMO / "enroll_1.flac",
                      DEMO / "enroll_2.flac"], ["verify", "--name", name, "--input",
                                                 DEMO / "enroll_1.flac"],
                     ["voices", "remove", name]):
            assert cli.main(["--store", str(store), *map(str, args)]) == 2
            assert "voice name" in capsys.readouterr().err, args
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["alice.json", "deep", "voices"]
