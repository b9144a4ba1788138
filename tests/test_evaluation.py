"""Metrics against hand-computed cases, trials parsing, and a small end-to-end eval."""

import argparse
import json
import shutil

import numpy as np
import pytest

from rtverify import evaluation as ev
from rtverify.errors import InputError

from conftest import DEMO


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


def test_missing_trials_file_and_root(tmp_path, root):
    with pytest.raises(InputError, match="no such trials file"):
        ev.read_trials(tmp_path / "nope.txt", root)
    with pytest.raises(InputError, match="not a directory"):
        ev.read_trials(write(tmp_path, "1 a b\n"), tmp_path / "nodir")


# -- scoring shared by eval and the Verifier -------------------------------------------------

def test_asnorm_by_hand():
    from rtverify.scoring import Scorer

    cohort = np.eye(4, dtype=np.float32)  # cosines of a unit vector with the axes = its entries
    a = np.array([0.8, 0.6, 0.0, 0.0], dtype=np.float32)
    b = np.array([0.6, 0.0, 0.8, 0.0], dtype=np.float32)
    s = Scorer(cohort, top_k=2)
    # a's top-2 cohort cosines 0.8, 0.6 -> mean 0.7, sd 0.1; b's 0.8, 0.6 likewise; raw 0.48
    expected = 0.5 * ((0.48 - 0.7) / 0.1 + (0.48 - 0.7) / 0.1)
    assert s.pair_scores(a, b)[0] == pytest.approx(expected, rel=1e-5)
    assert s.scores(b, {"x": a})["x"] == pytest.approx(expected, rel=1e-5)
    assert Scorer(None).pair_scores(a, b)[0] == pytest.approx(0.48)


def test_verifier_uses_the_models_score_normalisation(tmp_path, session, demo, conversation,
                                                      alice_print):
    """A sidecar naming a cohort changes listen's scores exactly as it changes eval's."""
    from rtverify.encoder import EncoderSession
    from rtverify.pipeline import DecisionEvent, Verifier
    from rtverify.scoring import Scorer

    from conftest import chunks_of

    rng = np.random.default_rng(0)
    cohort = rng.standard_normal((50, session.dim)).astype(np.float32)
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    np.save(tmp_path / "m.cohort.npy", cohort)
    shutil.copy(session.path, tmp_path / "m.onnx")
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


def test_broken_cohort_is_a_model_error(tmp_path, session):
    from rtverify.encoder import EncoderSession
    from rtverify.errors import ModelError
    from rtverify.scoring import Scorer

    shutil.copy(session.path, tmp_path / "m.onnx")
    side = dict(session.info.raw, score_norm={"method": "asnorm", "cohort": "missing.npy"})
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="m.json: unusable score_norm cohort"):
        Scorer.for_model(EncoderSession(tmp_path / "m.onnx"))
