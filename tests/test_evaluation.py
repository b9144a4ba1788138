"""Metrics against hand-computed cases, trials parsing, and a small end-to-end eval."""

import argparse
import json
import os
import shutil

import numpy as np
import pytest

from rtverify.cli import eval as eval_cli
from rtverify import evaluation as ev
from rtverify.errors import InputError

from conftest import DEMO, copy_model


# -- metrics ---------------------------------------------------------------------------------

def test_perfect_separation_has_zero_eer_and_zero_cost():
    tar = np.array([0.9, 0.8, 0.85])
    non = np.array([0.1, 0.2, 0.3, 0.5])
    rate, thr = ev.eer(tar, non)
    assert rate == 0.0
    assert thr == pytest.approx(0.65)  # the middle of the gap between the classes
    dcf, _ = ev.min_dcf(tar, non)
    assert dcf == 0.0
    labels = np.r_[np.ones(3), np.zeros(4)]
    assert ev.accuracy(np.r_[tar, non], labels, thr) == 1.0


def test_small_case_by_hand():
    # accept score >= t.  For 0.5 < t <= 0.6: misses {0.4} -> 1/4, false alarms {0.7} -> 1/4:
    # the curves are equal there, so EER = 25 % at 0.55; 6 of 8 trials are right at it.
    tar = np.array([0.4, 0.6, 0.8, 0.9])
    non = np.array([0.1, 0.3, 0.5, 0.7])
    rate, thr = ev.eer(tar, non)
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.55)
    m = ev.compute_metrics(np.r_[tar, non], np.r_[np.ones(4), np.zeros(4)])
    assert m.accuracy_at_eer == pytest.approx(0.75)
    # DCF/0.01 = P_miss + 99 P_fa; best at t=0.8: 0.5 + 0 (t=0.9: 0.75; t=inf: 1)
    dcf, t_dcf = ev.min_dcf(tar, non)
    assert dcf == pytest.approx(0.5)
    assert t_dcf == pytest.approx(0.8)


def test_eer_is_interpolated_between_operating_points():
    # a tie at 0.5 across the classes. t=0.5: P_miss 0, P_fa 1/2; t=0.7: P_miss 1/2, P_fa 0:
    # the curves cross half way, at 25 % and a threshold of 0.6
    rate, thr = ev.eer(np.array([0.5, 0.7]), np.array([0.4, 0.5]))
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.6)


def test_all_scores_equal_gives_half():
    rate, _ = ev.eer(np.full(5, 0.3), np.full(7, 0.3))
    assert rate == pytest.approx(0.5)
    dcf, _ = ev.min_dcf(np.full(5, 0.3), np.full(7, 0.3))
    assert dcf == pytest.approx(1.0)  # no better than rejecting everything


def test_random_scores_metrics_are_bounded_and_match_brute_force():
    rng = np.random.default_rng(1)
    tar = rng.normal(1.0, 1.0, 300)
    non = rng.normal(-1.0, 1.0, 900)
    rate, thr = ev.eer(tar, non)
    # brute force over a fine grid of thresholds
    grid = np.linspace(-5, 5, 20001)
    p_miss = (tar[None, :] < grid[:, None]).mean(1)
    p_fa = (non[None, :] >= grid[:, None]).mean(1)
    k = np.argmin(np.abs(p_miss - p_fa))
    assert rate == pytest.approx((p_miss[k] + p_fa[k]) / 2, abs=2e-3)
    assert 0.1 < rate < 0.2  # two unit normals 2 apart: 15.9 %
    dcf, _ = ev.min_dcf(tar, non)
    brute = np.min(p_miss + 99 * p_fa)
    assert dcf == pytest.approx(brute, abs=1e-9)
    assert 0.0 <= dcf <= 1.0


def test_infinite_scores_are_rejections():
    tar = np.array([-np.inf, 0.9, 0.8, 0.7])
    non = np.array([-np.inf, 0.1, 0.2, 0.3])
    rate, _ = ev.eer(tar, non)
    assert rate == pytest.approx(0.25)  # the -inf target is missed at every finite threshold


def test_metrics_refuse_one_class_or_nan():
    with pytest.raises(ValueError):
        ev.eer(np.array([0.5]), np.array([]))
    with pytest.raises(ValueError):
        ev.min_dcf(np.array([np.nan]), np.array([0.1]))


# -- trials files ----------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path):
    for name in ("enroll_1.flac", "enroll_2.flac"):
        shutil.copy(DEMO / name, tmp_path / name)
    return tmp_path


def write(tmp_path, text):
    p = tmp_path / "trials.txt"
    p.write_text(text)
    return p


def test_trials_are_parsed_with_unique_files(tmp_path, root):
    t = ev.read_trials(write(tmp_path, "# comment\n1 enroll_1.flac enroll_2.flac\n\n"
                                       "0 enroll_2.flac enroll_1.flac\n"), root)
    assert list(t.labels) == [1, 0]
    assert t.files == ["enroll_1.flac", "enroll_2.flac"]
    assert list(t.a) == [0, 1] and list(t.b) == [1, 0]


@pytest.mark.parametrize("text, message", [
    ("1 enroll_1.flac\n", ":1: expected 'label path_a path_b', got 2 field(s)"),
    ("1 enroll_1.flac enroll_2.flac\nyes enroll_1.flac enroll_2.flac\n", ":2: label must be 1"),
    ("0 enroll_1.flac enroll_2.flac\n1 enroll_1.flac missing.flac\n",
     ":2: missing.flac: no such file"),
    ("1 enroll_1.flac enroll_2.flac\n", "needs both same-speaker (1) and different-speaker (0)"),
    ("", "needs both"),
])
def test_bad_trials_name_file_and_line(tmp_path, root, text, message):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        ev.read_trials(p, root)
    assert message in str(err.value)
    assert str(err.value).startswith(str(p))
    assert "\n" not in str(err.value)


def test_an_endless_trials_file_is_refused_at_its_first_long_line(root):
    """`--trials /dev/zero` (or /dev/urandom) had been read whole before a line was looked at:
    8.7 GB in 4 s, until the machine ran out. Here a pipe offers 64 MiB of NULs: refused at
    the first line, having read less than 1 MiB of it."""
    import threading

    r, w = os.pipe()
    written = [0]

    def writer():
        block = b"\0" * (1 << 16)
        try:
            while written[0] < 64 << 20:
                written[0] += os.write(w, block)
        except BrokenPipeError:
            pass
        finally:
            os.close(w)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        with pytest.raises(InputError, match=r":1: a line longer than 65536 characters"):
            ev.read_trials(f"/dev/fd/{r}", root)
        assert written[0] < 1 << 20, written[0]
    finally:
        os.close(r)
        t.join(10)


def test_a_voiceprint_of_several_takes_is_one_entry(tmp_path, root):
    t = ev.read_trials(write(tmp_path, "1 enroll_1.flac+enroll_2.flac enroll_2.flac\n"
                                       "0 enroll_1.flac enroll_2.flac\n"), root)
    assert t.files == ["enroll_1.flac+enroll_2.flac", "enroll_2.flac", "enroll_1.flac"]
    assert t.takes == ["enroll_1.flac", "enroll_2.flac"]


@pytest.mark.parametrize("text, message", [
    ("1 enroll_1.flac enroll_1.flac+enroll_2.flac\n0 enroll_1.flac enroll_2.flac\n",
     ":1: only path_a (the enrolled side) may join takes"),
    ("1 enroll_1.flac+enroll_2.flac enroll_2.flac\n"
     "0 enroll_2.flac enroll_1.flac+enroll_2.flac\n", ":2: only path_a (the enrolled side)"),
    ("1 enroll_1.flac+missing.flac enroll_2.flac\n0 enroll_1.flac enroll_2.flac\n",
     ":1: missing.flac: no such file"),
    ("1 enroll_1.flac+ enroll_2.flac\n0 enroll_1.flac enroll_2.flac\n", ":1: : no such file"),
    ("1 enroll_1.flac+enroll_1.flac enroll_2.flac\n0 enroll_1.flac enroll_2.flac\n",
     ":1: a voiceprint joins 1 to 20 different takes"),
])
def test_bad_voiceprint_entries_name_file_and_line(tmp_path, root, text, message):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        ev.read_trials(p, root)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_voiceprint_rows_are_the_normalised_mean_of_their_takes():
    vec = np.array([[1, 0, 0], [0, 1, 0], [np.nan] * 3], np.float32)
    emb = ev.FileEmbeddings(vec, np.array([1.0, 2.0, 0.0]), np.array([False, True, False]),
                            np.array([20.0, 30.0, np.nan]))
    out = emb.voiceprints(["a", "b", "c"], ["a+b", "b", "a+c", "c"])
    np.testing.assert_allclose(out.vectors[0], [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)
    assert out.speech_s[0] == 3.0 and not out.short_only[0] and np.isnan(out.snr_db[0])
    assert out.short_only[1] and out.speech_s[1] == 2.0 and out.snr_db[1] == 30.0
    np.testing.assert_allclose(out.vectors[2], [1, 0, 0])  # a take without speech is left out
    assert out.speech_s[2] == 1.0
    assert np.isnan(out.vectors[3]).all() and not out.has_speech[3]


def test_missing_trials_file_and_root(tmp_path, root):
    with pytest.raises(InputError, match="no such trials file"):
        ev.read_trials(tmp_path / "nope.txt", root)
    with pytest.raises(InputError, match="not a directory"):
        ev.read_trials(write(tmp_path, "1 a b\n"), tmp_path / "nodir")


# -- scoring shared by eval and the Verifier -------------------------------------------------

def test_asnorm_by_hand():
    from rtverify.core.scoring import Scorer

    cohort = np.eye(4, dtype=np.float32)  # cosines of a unit vector with the axes = its entries
    a = np.array([0.8, 0.6, 0.0, 0.0], dtype=np.float32)
    b = np.array([0.6, 0.0, 0.8, 0.0], dtype=np.float32)
    s = Scorer(cohort, top_k=2)
    # a's top-2 cohort cosines 0.8, 0.6 -> mean 0.7, sd 0.1; b's 0.8, 0.6 likewise; raw 0.48
    expected = 0.5 * ((0.48 - 0.7) / 0.1 + (0.48 - 0.7) / 0.1)
    assert s.pair_scores(a, b)[0] == pytest.approx(expected, rel=1e-5)
    assert s.scores(b, {"x": a})["x"] == pytest.approx(expected, rel=1e-5)
    assert Scorer(None).pair_scores(a, b)[0] == pytest.approx(0.48)


def test_probe_shift_by_hand():
    """probe_shift takes weight * (mu - centre) of the heard side off the cosine, the
    enrolled side does not matter, and every way of scoring agrees."""
    from rtverify.core.scoring import Scorer

    cohort = np.eye(4, dtype=np.float32)
    a = np.array([0.8, 0.6, 0.0, 0.0], dtype=np.float32)
    b = np.array([0.6, 0.0, 0.8, 0.0], dtype=np.float32)
    s = Scorer(cohort, top_k=2, method="probe_shift", weight=0.5, centre=0.5)
    # b's top-2 cohort cosines 0.8, 0.6 -> mu 0.7: the score 0.48 - 0.5 * (0.7 - 0.5)
    assert s.pair_scores(a, b)[0] == pytest.approx(0.38, rel=1e-5)
    assert s.scores(b, {"x": a})["x"] == pytest.approx(0.38, rel=1e-5)
    assert s.matrix_scores(b, a[None])[0] == pytest.approx(0.38, rel=1e-5)
    assert s.probe_scores(a[None], b)[0] == pytest.approx(0.38, rel=1e-5)
    # the other way round only the heard side's mu counts: a's is 0.7 too, so the same
    assert s.pair_scores(b, a)[0] == pytest.approx(0.38, rel=1e-5)
    c = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)  # mu 0.5: no shift
    assert s.pair_scores(a, c)[0] == pytest.approx(0.8, rel=1e-5)
    assert not s.per_voice_stats and Scorer(cohort, top_k=2).per_voice_stats
    assert list(s.shift(np.stack([b, c]))) == pytest.approx([0.1, 0.0], abs=1e-6)


def test_probe_scores_leave_the_probes_speaker_out():
    """A calibration scoring a cohort speaker's own audio leaves that speaker's rows out, as
    the cohort holds nobody heard at run time."""
    from rtverify.core.scoring import Scorer

    rng = np.random.default_rng(3)
    cohort = rng.standard_normal((60, 8)).astype(np.float32)
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    speakers = np.repeat(["s1", "s2", "s3"], 20)
    s = Scorer(cohort, top_k=10, method="probe_shift", weight=0.5, centre=0.2,
               speakers=speakers)
    probe, vps = cohort[0] + 0.1 * cohort[1], cohort[[30, 45]]
    probe /= np.linalg.norm(probe)
    alone = Scorer(cohort[20:], top_k=10, method="probe_shift", weight=0.5, centre=0.2)
    assert np.allclose(s.probe_scores(vps, probe, "s1"), alone.pair_scores(vps, probe[None]))
    assert not np.allclose(s.probe_scores(vps, probe, "s1"), s.probe_scores(vps, probe))
    assert s.without(["nobody"]) is s and len(s.without(["s2", "s3"]).cohort) == 20
    with pytest.raises(ValueError, match="cohort speakers"):
        Scorer(cohort, speakers=speakers[:10])


def test_verifier_uses_the_models_score_normalisation(tmp_path, session, demo, conversation,
                                                      alice_print):
    """A sidecar naming a cohort changes listen's scores exactly as it changes eval's."""
    from rtverify.core.encoder import EncoderSession
    from rtverify.core.pipeline import DecisionEvent, Verifier
    from rtverify.core.scoring import Scorer

    from conftest import chunks_of

    rng = np.random.default_rng(0)
    cohort = rng.standard_normal((50, session.dim)).astype(np.float32)
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    np.save(tmp_path / "m.cohort.npy", cohort)
    copy_model(session.path, tmp_path)
    side = dict(session.info.raw, score_norm={"method": "asnorm", "cohort": "m.cohort.npy",
                                              "top_k": 10})
    (tmp_path / "m.json").write_text(json.dumps(side))
    normed = EncoderSession(tmp_path / "m.onnx")
    assert Scorer.for_model(normed).describe() == "asnorm (cohort 50, top 10)"
    events = Verifier(normed, {"alice": alice_print}).process(chunks_of(conversation[:16000 * 8],
                                                                        4096))
    decs = [e for e in events if isinstance(e, DecisionEvent)]
    assert decs
    ref = Scorer(cohort, top_k=10)
    for d in decs:
        assert d.scores["alice"] == pytest.approx(
            float(ref.pair_scores(alice_print, d.embedding)[0]), abs=1e-4)
        assert d.scores["alice"] != pytest.approx(float(alice_print @ d.embedding), abs=1e-3)


def test_verifier_shifts_scores_as_the_scorer_does(tmp_path, session, conversation,
                                                   alice_print):
    """A probe_shift cohort (an .npz with speakers) shifts listen's scores as eval's, on the
    few-voices path and on the matrix path of a large gallery alike."""
    from rtverify.core.encoder import EncoderSession
    from rtverify.core.pipeline import DecisionEvent, Verifier
    from rtverify.core.scoring import Scorer

    from conftest import chunks_of

    rng = np.random.default_rng(1)
    cohort = rng.standard_normal((50, session.dim)).astype(np.float32)
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    cohort[:10] = alice_print  # a cohort that sounds like the speaker: a visible shift
    np.savez(tmp_path / "m-cohort.npz", vectors=cohort, speakers=np.array(["x"] * 50))
    copy_model(session.path, tmp_path)
    side = dict(session.info.raw, score_norm={"method": "probe_shift", "cohort": "m-cohort.npz",
                                              "top_k": 10, "weight": 0.5, "centre": 0.1})
    (tmp_path / "m.json").write_text(json.dumps(side))
    normed = EncoderSession(tmp_path / "m.onnx")
    assert Scorer.for_model(normed).describe() == "probe_shift (cohort 50, top 10, weight 0.5)"
    ref = Scorer(cohort, top_k=10, method="probe_shift", weight=0.5, centre=0.1)
    others = rng.standard_normal((Verifier.MATRIX_MIN_VOICES, session.dim)).astype(np.float32)
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    for voices in ({"alice": alice_print},
                   {"alice": alice_print, **{f"v{i}": v for i, v in enumerate(others)}}):
        events = Verifier(normed, voices).process(chunks_of(conversation[:16000 * 8], 4096))
        decs = [e for e in events if isinstance(e, DecisionEvent)]
        assert decs
        for d in decs:
            assert d.scores["alice"] == pytest.approx(
                float(ref.pair_scores(alice_print, d.embedding)[0]), abs=1e-4)
            assert d.scores["alice"] < float(alice_print @ d.embedding) - 0.01


def test_broken_cohort_is_a_model_error(tmp_path, session):
    from rtverify.core.encoder import EncoderSession
    from rtverify.errors import ModelError
    from rtverify.core.scoring import Scorer

    copy_model(session.path, tmp_path)
    side = dict(session.info.raw, score_norm={"method": "asnorm", "cohort": "missing.npy"})
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="m.json: unusable score_norm cohort"):
        Scorer.for_model(EncoderSession(tmp_path / "m.onnx"))


# -- end to end on the bundled recordings ----------------------------------------------------

@pytest.fixture(scope="module")
def clip_root(tmp_path_factory, demo, conversation):
    """Enrolment takes, the conversation's lines as files, a silent file and a 0.2 s blip."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("clips")
    for name in demo["enroll"]:
        shutil.copy(DEMO / name, root / name)
    for i, line in enumerate(demo["script"]):
        x = conversation[int(line["start_s"] * 16000):int(line["end_s"] * 16000)]
        sf.write(root / f"line{i}_{line['speaker']}.flac", x, 16000)
    sf.write(root / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    x = conversation[int(1.5 * 16000):int(1.5 * 16000) + 3200]  # 0.2 s of speech
    pad = np.zeros(4000, dtype=np.float32)
    sf.write(root / "blip.wav", np.concatenate([pad, x, pad]), 16000)
    return root


def trials_text(demo, blip=True):
    lines = [f"line{i}_{d['speaker']}.flac" for i, d in enumerate(demo["script"])]
    same = [("enroll_1.flac", "enroll_2.flac"), ("enroll_1.flac", lines[0]),
            ("enroll_2.flac", lines[3]), (lines[0], lines[3])]
    diff = [(e, lines[i]) for e in demo["enroll"] for i in (1, 2, 4)] + [(lines[1], lines[2])]
    rows = [f"1 {a} {b}" for a, b in same] + [f"0 {a} {b}" for a, b in diff]
    rows += ["0 silence.wav enroll_1.flac"]
    if blip:
        rows += ["1 enroll_1.flac blip.wav"]
    return "\n".join(rows) + "\n"


def run_cli(argv, capsys):
    ap = argparse.ArgumentParser()
    eval_cli.register_cli(ap.add_subparsers(dest="command"))
    args = ap.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr()


def test_eval_json_on_bundled_speech(tmp_path, clip_root, demo, capsys):
    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=False))
    code, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root), "--json"],
                        capsys)
    assert code == 0
    r = json.loads(out.out)
    for key in ("trials", "eer", "min_dcf", "accuracy_at_eer", "threshold_eer",
                "accuracy_at_model_threshold", "n_files", "files_without_speech", "model_id"):
        assert key in r, key
    assert r["trials"] == 12 and r["target_trials"] == 4 and r["n_files"] == 8
    assert r["files_without_speech"] == 1 and r["trials_without_speech"] == 1
    # four different LibriSpeech speakers: the shipped model separates them completely
    assert r["eer"] == 0.0 and r["min_dcf"] == 0.0 and r["accuracy_at_eer"] == 1.0
    assert r["accuracy_at_model_threshold"] == 1.0  # the calibrated thresholds get them all
    assert out.err == ""  # no progress bar when stderr is not a terminal


def test_eval_enrols_a_several_take_voiceprint_as_enroll_does(tmp_path, clip_root, demo,
                                                              capsys, session):
    from rtverify.core.encoder import l2_normalize
    from rtverify.evaluation import embed_file

    lines = [f"line{i}_{d['speaker']}.flac" for i, d in enumerate(demo["script"])]
    both = "+".join(demo["enroll"])
    trials = tmp_path / "t.txt"
    trials.write_text(f"1 {both} {lines[0]}\n0 {both} {lines[1]}\n")
    _, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root), "--json",
                      "--no-norm"], capsys)
    r = json.loads(out.out)
    assert r["n_files"] == 3 and r["trials"] == 2
    # raw cosines from a model without a short expert (the default's eval scores are margins
    # over the deciding model's thresholds: tests/test_short_expert.py)
    from rtverify.core.encoder import EncoderSession

    session = EncoderSession("default-short")
    takes = [embed_file(session, clip_root / f, ev.SegmenterConfig()).vector
             for f in demo["enroll"]]
    probe = embed_file(session, clip_root / lines[0], ev.SegmenterConfig()).vector
    t = ev.read_trials(trials, clip_root)
    from rtverify.core.scoring import Scorer

    got = ev.evaluate(trials, clip_root, session, scorer=Scorer(None))["_scores"]
    assert t.files[0] == both
    want = float(l2_normalize(np.sum(takes, axis=0)) @ probe)
    assert got[0] == pytest.approx(want, abs=1e-5)


def test_short_only_speech_is_scored_but_never_accepted(tmp_path, clip_root, demo, capsys):
    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=True))
    _, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root), "--json"],
                     capsys)
    r = json.loads(out.out)
    assert r["files_short_speech_only"] == 1 and r["files_without_speech"] == 1
    assert r["trials_without_speech"] == 1  # the blip got an embedding and a finite score
    assert r["accuracy_at_model_threshold"] == pytest.approx(12 / 13)  # the blip is rejected


def test_eval_text_report_and_plot(tmp_path, clip_root, demo, capsys):
    pytest.importorskip("matplotlib")
    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo))
    png = tmp_path / "det.png"
    code, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root),
                         "--plot", str(png)], capsys)
    assert code == 0
    assert "EER" in out.out and "minDCF" in out.out and "no speech" in out.out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_that_cannot_be_written_is_refused_before_the_embedding(tmp_path, clip_root,
                                                                       demo, capsys):
    """--plot det.xyz had been matplotlib's ValueError after the whole evaluation (exit 4, the
    report lost); --plot DIR wrote DIR.png beside the directory."""
    pytest.importorskip("matplotlib")
    from rtverify.cli.entry import main

    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=False))
    argv = ["eval", "--trials", str(trials), "--root", str(clip_root), "--plot"]
    plots = tmp_path / "plots"
    plots.mkdir()
    assert main(argv + [str(plots / "det.xyz")]) == 2
    assert "det.xyz: --plot cannot write .xyz images (it writes" in capsys.readouterr().err
    assert main(argv + [str(plots)]) == 2
    assert "plots: is a directory" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png")) and not list(plots.iterdir())


def test_eval_errors_are_one_line(tmp_path, clip_root):
    trials = tmp_path / "t.txt"
    trials.write_text("1 enroll_1.flac enroll_2.flac\n0 enroll_1.flac nothere.flac\n")
    proc = __import__("subprocess").run(
        [__import__("sys").executable, "-m", "rtverify", "eval", "--trials",
         str(trials), "--root", str(clip_root)], capture_output=True, text=True,
        cwd=str(DEMO.parent.parent), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert f"{trials}:2: nothere.flac: no such file under" in proc.stderr


# -- one evaluation path: what the other callers report ------------------------------------

def test_eer_where_the_miss_rate_jumps_over_the_false_alarms():
    # accept score >= t. 0.3 < t <= 0.6: no miss, 1/4 false alarms; 0.6 < t <= 0.7: 1/3 misses,
    # still 1/4 false alarms: the curves cross at 1/4, 3/4 of the way from 0.6 to 0.7
    # (a nearest-point rule says (1/3 + 1/4) / 2 = 7/24)
    rate, thr = ev.eer(np.array([0.6, 0.8, 0.9]), np.array([0.1, 0.2, 0.3, 0.7]))
    assert rate == pytest.approx(0.25)
    assert thr == pytest.approx(0.675)


def test_training_report_is_what_rtverify_eval_reports(tmp_path, clip_root, demo, capsys):
    """training.evaluate (the training report) goes through rtverify.evaluation: per list, the
    `rtverify eval --json` object, silent file (-inf) and short-only blip included."""
    from training.evaluate import evaluate_model

    (clip_root / "trials").mkdir(exist_ok=True)
    trials = clip_root / "trials" / "bundled.txt"
    trials.write_text(trials_text(demo, blip=True))
    _, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root), "--json"],
                     capsys)
    cli = json.loads(out.out)
    r = evaluate_model(None, ["bundled"], root=clip_root, show_progress=False)
    got = json.loads(json.dumps(r["lists"]["bundled"]))  # as written to the report file
    timing = ("seconds", "seconds_embedding")
    assert {k: v for k, v in got.items() if k not in timing + ("accuracy_at_0",)} == \
        {k: v for k, v in cli.items() if k not in timing}
    assert r["files_without_speech"] == 1 and r["files_short_speech_only"] == 1
    assert 0.0 <= got["accuracy_at_0"] <= 1.0


def test_eval_takes_plain_values(tmp_path, clip_root, demo, capsys):
    """The CLI parses, evaluation.run_eval takes plain values: the same JSON either way."""
    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=False))
    _, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root), "--json",
                      "--no-norm"], capsys)
    direct = json.loads(ev.run_eval(trials, clip_root, score_norm=False, as_json=True))
    cli = json.loads(out.out)
    for r in (direct, cli):
        r.pop("seconds"), r.pop("seconds_embedding")
    assert direct == cli
    assert not hasattr(ev, "cmd_eval")


def test_eval_refuses_zero_threads_in_one_line(tmp_path, clip_root, demo):
    from rtverify.cli.entry import main

    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=False))
    assert main(["eval", "--trials", str(trials), "--root", str(clip_root), "--threads",
                 "0"]) == 2
    # nor more than MAX_THREADS (--threads 1000000 had onnxruntime start a million threads: 24 GB
    # resident and 7 minutes until the kernel killed it; 65 is enough to show it is refused)
    assert main(["eval", "--trials", str(trials), "--root", str(clip_root), "--threads",
                 "65"]) == 2


def test_a_damaged_or_unwritable_cache_costs_the_cache_not_the_run(tmp_path, clip_root, demo,
                                                                  capsys):
    """--cache: a damaged file (cut short, as by a copy or a full disk) had ended the run with
    `internal error: BadZipFile` (exit 4); a cache that cannot be written (read-only, or a
    directory in the way) with PermissionError / IsADirectoryError after all the embedding; a
    --cache that is a file with FileExistsError. Now the first two are a warning and the same
    report, the last a one-line error before anything is embedded."""
    from rtverify.cli.entry import main

    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=False))
    argv = ["eval", "--trials", str(trials), "--root", str(clip_root), "--json", "--cache"]
    cache = tmp_path / "cache"

    def report():
        out, err = capsys.readouterr()
        r = json.loads(out)
        r.pop("seconds"), r.pop("seconds_embedding")
        return r, err

    assert main(argv + [str(cache)]) == 0
    fresh, _ = report()
    saved = sorted(cache.glob("*.npz"))
    assert saved
    for f in saved:
        f.write_bytes(f.read_bytes()[:300])
    assert main(argv + [str(cache)]) == 0
    r, err = report()
    assert r == fresh and "ignoring unreadable embedding cache (File is not a zip" in err
    for f in saved:  # rewritten whole
        assert np.load(f)["vectors"].shape[0] > 0
        f.unlink()
        f.mkdir()
    assert main(argv + [str(cache)]) == 0
    r, err = report()
    assert r == fresh and "cannot write the embedding cache (Is a directory)" in err
    not_dir = tmp_path / "file"
    not_dir.write_text("")
    assert main(argv + [str(not_dir)]) == 2
    assert "embedding cache is not a directory" in capsys.readouterr().err


def test_eval_tells_trials_too_short_to_decide_from_refused_ones(tmp_path, clip_root, demo,
                                                                 capsys):
    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=True))
    _, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root), "--json"],
                     capsys)
    r = json.loads(out.out)
    # the 0.2 s blip's trial is refused for too little speech: a false reject over all trials,
    # none among the trials the model decides (and the silent file's, scored -inf, is decided)
    assert r["trials_not_decided"] == 1
    assert r["frr_at_model_threshold"] == pytest.approx(1 / 5)
    assert r["frr_at_model_threshold_decided"] == 0.0
    assert r["far_at_model_threshold_decided"] == 0.0
    _, out = run_cli(["eval", "--trials", str(trials), "--root", str(clip_root)], capsys)
    assert "decided    12 trials" in out.out and "false rejects 0.00 %" in out.out


def test_decided_rates_tell_undecided_trials_from_refused_ones(tmp_path, clip_root, demo,
                                                              capsys):
    from tools.decided_rates import main, rates

    import soundfile as sf

    root = tmp_path / "root"
    shutil.copytree(clip_root, root)
    take, rate = sf.read(root / demo["enroll"][1], dtype="float32")
    mid = len(take) // 2  # 0.75 s of the enrolled voice: the short expert decides it
    quiet = np.zeros(rate // 2, np.float32)  # silence around it: a clean, measurable SNR
    sf.write(root / "short.wav", np.concatenate(
        [quiet, take[mid - int(0.375 * rate):mid + int(0.375 * rate)], quiet]), rate)
    trials = tmp_path / "t.txt"
    trials.write_text(trials_text(demo, blip=True) + f"1 {demo['enroll'][0]} short.wav\n")
    r = rates(ev_session_default(), trials, root, tmp_path / "cache", raises=(0.0, 1.0))
    assert r["same"] == 6 and r["different"] == 8
    assert r["undecided_same"] == pytest.approx(1 / 6)  # the 0.2 s blip: too little speech
    assert r["far_decided"] == 0.0  # no stranger accepted
    by = {name: (sum(len(fa) for n, *_, fa, fr in r["parts"] if n == name),
                 sum(len(fr) for n, *_, fa, fr in r["parts"] if n == name))
          for name in ("expert", "model")}
    assert by["expert"] == (0, 1) and by["model"][1] == 4  # the short clip; the four lines
    (d0, fa0, fr0), (d1, fa1, fr1) = r["raise"]
    assert len(fr0) == len(fr1) == 1 and fr1.all()  # +1 on the expert's thresholds: refused
    assert main(["--model", "default", "--list", f"{trials}={root}",
                 "--cache", str(tmp_path / "cache")]) == 0
    assert "not decided (too little speech) 16.7 % of the same" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="trials list not found"):
        main(["--list", f"{tmp_path / 'none.txt'}={root}"])


def ev_session_default():
    from rtverify.core.encoder import EncoderSession

    return EncoderSession("default")
