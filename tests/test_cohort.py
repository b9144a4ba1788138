"""The score-normalisation cohort a model ships (``python -m export.cohort``): its centre, its
file, the sidecar block that names it, and the scorer that block makes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DEMO

from rtverify.core.encoder import MODELS_DIR, EncoderSession
from rtverify.core.scoring import Scorer, load_cohort


def test_centre_leaves_each_rows_own_speaker_out():
    v = np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    spk = np.array(["a", "a", "b", "b"])
    from export.cohort import shift_constants

    def centre_of(v, spk, top_k):
        return shift_constants(v, spk, top_k)[0]

    # each row against the other speaker's rows only: row 0 and 1 (a) see 0.6 (row 2) and 0
    # (row 3); row 2 (b) sees 0.6 twice; row 3 (b) sees 0 twice
    assert centre_of(v, spk, top_k=1) == pytest.approx(np.median([0.6, 0.6, 0.6, 0.0]))
    assert centre_of(v, spk, top_k=2) == pytest.approx(np.median([0.3, 0.3, 0.6, 0.0]))
    # with its own speaker's rows it would be higher: row 0's top-1 would be row 1 (1.0)
    assert centre_of(v, np.array(["a", "b", "c", "d"]), top_k=1) > centre_of(v, spk, top_k=1)


def test_the_cohort_is_built_named_and_loaded(tmp_path):
    """From audio already laid out (the shared corpora are not needed), a cohort file beside a
    copy of a model, a ``score_norm`` block in its sidecar, and that model then scores with it."""
    from export.cohort import main

    audio = tmp_path / "audio"
    for i, name in enumerate(["enroll_1", "enroll_2", "conversation"]):
        (audio / "clean").mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / f"{name}.flac", audio / "clean" / f"spk{i}_0.flac")
    (audio / ".complete").write_text("")
    shutil.copy(MODELS_DIR / "default-short.onnx", tmp_path / "m.onnx")
    shutil.copy(MODELS_DIR / "default-short.json", tmp_path / "m.json")
    assert main(["--model", str(tmp_path / "m.onnx"), "--audio", str(audio), "--cache",
                 str(tmp_path / "cache"), "--top-k", "2", "--weight", "0.5",
                 "--write-sidecar"]) == 0
    vectors, speakers = load_cohort(tmp_path / "m-cohort.npz")
    assert vectors.shape == (3, 256) and list(speakers) == ["spk0", "spk1", "spk2"]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    block = json.loads((tmp_path / "m.json").read_text())["score_norm"]
    assert block["method"] == "probe_shift" and block["cohort"] == "m-cohort.npz"
    scorer = Scorer.for_model(EncoderSession(tmp_path / "m.onnx"))
    assert scorer.describe() == "probe_shift (cohort 3, top 2, weight 0.5)"
    assert scorer.centre == pytest.approx(block["centre"], abs=1e-4)
    assert list(scorer.without(["spk1"]).speakers) == ["spk0", "spk2"]


def test_a_model_without_an_expert_refuses_expert(tmp_path, capsys):
    from export.cohort import main

    shutil.copy(MODELS_DIR / "default-short.onnx", tmp_path / "m.onnx")
    shutil.copy(MODELS_DIR / "default-short.json", tmp_path / "m.json")
    with pytest.raises(SystemExit) as err:
        main(["--model", str(tmp_path / "m.onnx"), "--expert", "--audio", str(tmp_path)])
    assert err.value.code == 2 and "has no short expert" in capsys.readouterr().err


def test_the_sweep_reports_raw_and_shifted_eers(tmp_path, capsys):
    """tools.cohort_sweep on a made-up cohort and list: weight 0 is the plain cosine's EER."""
    from rtverify.core.encoder import EncoderSession
    from rtverify.evaluation import embed_files, read_trials, score_trials
    from rtverify.metrics import eer
    from tools.cohort_sweep import main

    audio = tmp_path / "audio"
    (audio / "clean").mkdir(parents=True)
    for i, name in enumerate(["enroll_1", "enroll_2", "conversation"]):
        shutil.copy(DEMO / f"{name}.flac", audio / "clean" / f"spk{i}_0.flac")
    (audio / ".complete").write_text("")
    trials = tmp_path / "t.txt"
    trials.write_text("1 enroll_1.flac enroll_2.flac\n0 enroll_1.flac conversation.flac\n"
                      "0 enroll_2.flac conversation.flac\n")
    assert main(["--model", "default-short", "--audio", str(audio), "--cache",
                 str(tmp_path / "cache"), "--top-k", "2", "--weights", "0,0.5",
                 "--list", f"{trials}={DEMO}"]) == 0
    out = capsys.readouterr().out
    assert "cohort: 3 embeddings of 3 speakers" in out and "top 2: centre" in out
    tr = read_trials(trials, DEMO)
    s = EncoderSession("default-short")
    vec = embed_files(s, [DEMO / f for f in tr.takes], cache_dir=tmp_path / "cache").vectors
    raw = score_trials(tr, vec)
    same = np.asarray(tr.labels) == 1
    line = next(x for x in out.splitlines() if x.strip().startswith("t "))
    assert f"w 0 {100 * eer(raw[same], raw[~same])[0]:5.2f}" in line
    assert "w 0.5" in line and "asnorm" in line
    # the enrolled side's shift moves the scores (on three trials the EER may not move: the
    # run must still go through and report every weight)
    assert main(["--model", "default-short", "--audio", str(audio), "--cache",
                 str(tmp_path / "cache"), "--top-k", "2", "--weights", "0", "--enrol-weight",
                 "0.5", "--list", f"{trials}={DEMO}"]) == 0
    assert "w 0 " in capsys.readouterr().out
    assert main(["--model", "default-short", "--audio", str(audio), "--cache",
                 str(tmp_path / "cache"), "--top-k", "2", "--weights", "0", "--enrol-weight",
                 "0.5", "--enrol-stat", "mean", "--list", f"{trials}={DEMO}"]) == 0
    assert "w 0 " in capsys.readouterr().out


def test_own_means_leave_each_rows_own_speaker_out():
    """The centre of ``--enrol-stat mean``: each row's mean cosine with other speakers' rows."""
    from export.cohort import own_means

    v = np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    got = own_means(v, np.array(["a", "a", "b", "b"]))
    np.testing.assert_allclose(got, [0.3, 0.3, 0.6, 0.0], atol=1e-6)


def test_the_package_ships_every_file_a_shipped_sidecar_names():
    """A wheel holds rtverify/models' files by pattern (pyproject's package-data): each model
    file, and each cohort a shipped sidecar names, must match one (an installed package without
    its cohort could not score)."""
    import fnmatch
    import tomllib

    from conftest import REPO

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["rtverify.models"]
    named = set()
    for side in MODELS_DIR.glob("*.json"):
        raw = json.loads(side.read_text())
        for block in (raw.get("score_norm"), (raw.get("short_expert") or {}).get("score_norm")):
            if block:
                named.add(block["cohort"])
    assert "default-cohort.npz" in named
    for name in named | {p.name for p in MODELS_DIR.iterdir() if p.is_file()
                         and p.suffix in (".onnx", ".json", ".npz")}:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
        assert (MODELS_DIR / name).is_file(), name


def test_verify_scores_as_listen_does():
    """``verify`` (and ``serve``'s verify, which shares it) scores through the model's own
    Scorer: for the shipped default, the cosine less the recording's cohort pull (it used to
    take the plain cosine, which the default's thresholds no longer assume)."""
    from rtverify.apps.enroll import companion_sessions, enroll_files
    from rtverify.apps.verify import verify
    from rtverify.io.sources import FileSource

    session = EncoderSession()
    vp = enroll_files(session, [DEMO / "enroll_1.flac"]).voiceprint(
        "alice", session.model_id, companion_sessions(session))
    got = verify(session, vp, FileSource(DEMO / "enroll_2.flac"), "enroll_2.flac", live=False)
    assert got.recording.speech_s >= 0.8  # decided by the default itself, not its expert
    want = Scorer.for_model(session).scores(got.recording.vector, {"alice": vp.vector()})
    assert got.decision.score == pytest.approx(want["alice"], abs=1e-6)
    raw = float(got.recording.vector @ vp.vector())
    assert abs(got.decision.score - raw) > 1e-3 and got.accepted


def test_a_sessions_scorer_is_made_once():
    """Loading the cohort costs ~16 ms: a session keeps its scorer (a server's every verify
    asks for it), and makes a new one when its sidecar contents are replaced."""
    from dataclasses import replace

    session = EncoderSession()
    first = Scorer.for_model(session)
    assert Scorer.for_model(session) is first and first.method == "probe_shift"
    session.info = replace(session.info, raw={k: v for k, v in session.info.raw.items()
                                              if k != "score_norm"})
    assert Scorer.for_model(session).cohort is None
