"""Thresholds that know the conditions (issue 11): the runtime's SNR estimate, threshold offsets
by SNR from the sidecar, and their calibration (synthetic: no data folder needed)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, chunks_of, copy_model, model_with_decision, run_segmenter
from rtverify.config import DecisionConfig
from rtverify.core.scoring import DecisionPolicy

LENGTH = ((0.7, 0.60), (1.4, 0.70), (5.0, 0.80))
OFFSETS = ((5.0, -0.20), (15.0, -0.05), (30.0, 0.0))


def reference_threshold(speech_s, snr_db):
    """The rule, written out independently: length curve plus SNR offset, both linear between
    their points and held beyond them."""
    xs, ys = zip(*LENGTH)
    base = float(np.interp(speech_s, xs, ys))
    if snr_db is None:
        return base
    ds, os_ = zip(*OFFSETS)
    return base + float(np.interp(snr_db, ds, os_))


@pytest.mark.parametrize("speech_s", [0.1, 0.7, 1.0, 3.3, 5.0, 40.0])
@pytest.mark.parametrize("snr_db", [None, -10.0, 5.0, 9.0, 15.0, 22.5, 30.0, 80.0])
def test_threshold_is_length_curve_plus_interpolated_offset(speech_s, snr_db):
    cfg = DecisionConfig(threshold=0.75, thresholds_by_speech_s=LENGTH,
                         threshold_offsets_by_snr_db=OFFSETS)
    assert cfg.threshold_for(speech_s, snr_db) == pytest.approx(
        reference_threshold(speech_s, snr_db), abs=1e-12)
    assert cfg.offset_for(snr_db) == pytest.approx(
        reference_threshold(speech_s, snr_db) - reference_threshold(speech_s, None), abs=1e-12)


def test_unknown_snr_gets_no_offset_and_the_override_ignores_offsets():
    cfg = DecisionConfig(threshold=0.75, thresholds_by_speech_s=LENGTH,
                         threshold_offsets_by_snr_db=OFFSETS)
    for bad in (None, math.nan, math.inf, -math.inf):
        assert cfg.offset_for(bad) == 0.0
        assert cfg.threshold_for(2.0, bad) == cfg.threshold_for(2.0)
    policy = DecisionPolicy(cfg, threshold=0.5)
    assert policy.threshold_for(2.0, 5.0) == 0.5
    d = policy.decide({"a": 0.55}, 2.0, snr_db=5.0)
    assert d.accepted and d.threshold == 0.5 and d.snr_db == 5.0
    # the model's own policy: the noisy utterance gets the lower threshold
    own = DecisionPolicy(cfg)
    noisy, clean = own.decide({"a": 0.70}, 3.0, snr_db=5.0), own.decide({"a": 0.70}, 3.0, 40.0)
    assert noisy.accepted and not clean.accepted
    assert noisy.threshold == pytest.approx(reference_threshold(3.0, 5.0))
    assert noisy.margin == pytest.approx(0.70 - noisy.threshold)


def test_without_offsets_every_threshold_is_what_it_was():
    """No offsets in the sidecar: the SNR changes nothing, bit for bit."""
    cfg = DecisionConfig(threshold=0.75, thresholds_by_speech_s=LENGTH)
    flat = DecisionConfig(threshold=0.66)
    for s in (0.0, 0.69, 1.0, 2.2, 5.0, 60.0, math.nan):
        for snr in (None, -5.0, 12.0, 70.0):
            got, want = cfg.threshold_for(s, snr), cfg.threshold_for(s)
            assert (got == want) or (math.isnan(got) and math.isnan(want))
            assert flat.threshold_for(s, snr) == 0.66
    xs, ys = zip(*LENGTH)
    assert cfg.threshold_for(3.0) == pytest.approx(float(np.interp(3.0, xs, ys)), abs=1e-15)
    assert cfg.threshold_for(math.nan) == 0.75  # as before: the flat threshold
    assert cfg.describe() == "0.60-0.80 by length" and flat.describe() == "0.66"


def test_shipped_sidecars_without_offsets_read_as_before(tmp_path):
    """An old sidecar (no threshold_offsets_by_snr_db) reads into the same thresholds; offsets
    must have rising decibels and finite values, or the sidecar is refused in one line."""
    from rtverify.core.encoder import ModelInfo
    from rtverify.errors import ModelError

    for name in ("default", "campp"):
        raw = json.loads((REPO / "rtverify" / "models" / f"{name}.json").read_text())
        old = dict(raw, decision={k: v for k, v in raw["decision"].items()
                                  if k != "threshold_offsets_by_snr_db"})
        info = ModelInfo.from_sidecar(old, "old.json")
        assert info.decision.threshold_offsets_by_snr_db == ()
        pts = old["decision"]["thresholds_by_speech_s"]
        for s in (0.3, 1.0, 2.5, 7.0, 20.0):
            want = float(np.interp(s, [p[0] for p in pts], [p[1] for p in pts]))
            for snr in (None, 0.0, 60.0):
                assert info.decision.threshold_for(s, snr) == pytest.approx(want, abs=1e-12)
        assert info.model_id == raw["model_id"]
        for bad in ([[10, -0.1], [5, 0.0]], [[10, -0.1], [10, 0.0]], [[10, float("nan")]],
                    [["x", 0]]):
            broken = dict(raw, decision=dict(raw["decision"], threshold_offsets_by_snr_db=bad))
            with pytest.raises(ModelError, match="invalid model sidecar"):
                ModelInfo.from_sidecar(broken, "bad.json")


def test_the_segmenters_snr_is_speech_level_over_the_background(conversation):
    """Speech over white noise at a known level: the floor is that level, the SNR the segment's
    level above it; more noise, lower SNR."""
    rng = np.random.default_rng(3)
    speech = conversation[16000 * 0:16000 * 6]
    got = []
    for noise_dbfs in (-55.0, -48.0, -42.0):  # above the recording's own background (~-64)
        noise = rng.standard_normal(len(speech) + 16000 * 2) * 10 ** (noise_dbfs / 20)
        x = noise.copy()
        x[16000 * 2:] += speech  # two seconds of background first
        ends, _ = run_segmenter(x.astype(np.float32))
        kept = [e for e in ends if not e.dropped]
        assert kept
        for e in kept:
            assert e.noise_floor_dbfs == pytest.approx(noise_dbfs, abs=1.5)
            assert e.snr_db == pytest.approx(e.level_dbfs - e.noise_floor_dbfs)
        got.append(np.mean([e.snr_db for e in kept]))
    assert got[0] - got[1] > 3 and got[1] - got[2] > 2


def _model_with_offsets(tmp_path, session, offsets):
    return model_with_decision(tmp_path, session, "threshold_offsets_by_snr_db", offsets)


def test_decision_events_carry_snr_and_noisy_speech_gets_the_offset_threshold(
        tmp_path, session, conversation, alice_print):
    from rtverify.core.pipeline import DecisionEvent, Verifier, embed_recording

    model = _model_with_offsets(tmp_path, session, [[10.0, -0.3], [35.0, 0.0]])
    cfg = model.info.decision
    rng = np.random.default_rng(0)
    x = conversation[:16000 * 8]
    noise = rng.standard_normal(len(x)).astype(np.float32)
    noisy = x + noise * np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2) / 10 ** (5 / 10))
    by_input = {}
    for name, audio in (("clean", x), ("noisy", noisy.astype(np.float32))):
        events = list(Verifier(model, {"alice": alice_print}).process(chunks_of(audio, 4096)))
        decs = [e for e in events if isinstance(e, DecisionEvent)]
        assert decs
        for d in decs:
            assert d.snr_db is not None and math.isfinite(d.snr_db)
            assert d.threshold == pytest.approx(cfg.threshold_for(d.speech_s, d.snr_db,
                                                                  d.fall_db))
            assert d.margin == pytest.approx(d.score - d.threshold)
            assert d.to_dict()["snr_db"] == round(d.snr_db, 1)
            assert d.accepted == (d.score >= d.threshold and d.speech_s >= cfg.min_speech_s)
        by_input[name] = decs
        rec = embed_recording(model, chunks_of(audio, 4096))  # verify's pooled recording
        weights = np.array([d.speech_s for d in rec.decisions])
        assert rec.snr_db == pytest.approx(
            float(np.dot([d.snr_db for d in rec.decisions], weights) / weights.sum()))
    clean_snr = np.mean([d.snr_db for d in by_input["clean"]])
    noisy_snr = np.mean([d.snr_db for d in by_input["noisy"]])
    assert noisy_snr < clean_snr - 10
    low = [d for d in by_input["noisy"] if d.snr_db < 30]
    assert low  # the noisy ones sit under the top point: their threshold is lowered
    for d in low:
        assert d.threshold < cfg.threshold_for(d.speech_s) - 1e-3
    # the same audio under a sidecar without offsets: the length threshold, as before
    (tmp_path / "old").mkdir()
    old = _model_with_offsets(tmp_path / "old", session, None)
    for d in Verifier(old, {"alice": alice_print}).process(chunks_of(noisy, 4096)):
        if isinstance(d, DecisionEvent):
            assert d.threshold == old.info.decision.threshold_for(d.speech_s, d.snr_db,
                                                                  d.fall_db)
            assert not old.info.decision.threshold_offsets_by_snr_db


def test_threshold_override_wins_over_offsets(tmp_path, session, conversation, alice_print):
    from rtverify.core.pipeline import DecisionEvent, Verifier

    model = _model_with_offsets(tmp_path, session, [[10.0, -0.3], [35.0, 0.0]])
    events = Verifier(model, {"alice": alice_print}, threshold=0.81).process(
        chunks_of(conversation[:16000 * 5], 4096))
    decs = [e for e in events if isinstance(e, DecisionEvent)]
    assert decs and all(d.threshold == 0.81 for d in decs)


def test_a_gate_request_is_judged_at_its_pooled_snr():
    from rtverify.core.pipeline import pooled_snr_db
    from rtverify.events import DecisionEvent

    def dec(speech_s, snr):
        return DecisionEvent(0.0, 1.0, speech_s, None, None, None, False, {}, 0.8, None, "",
                             "pause", False, -30.0, 1, 1.0, snr_db=snr)

    assert pooled_snr_db([dec(1.0, 10.0), dec(3.0, 30.0)]) == pytest.approx(25.0)
    assert pooled_snr_db([dec(1.0, None), dec(2.0, 12.0)]) == pytest.approx(12.0)
    assert pooled_snr_db([dec(1.0, None)]) is None and pooled_snr_db([]) is None


# -- calibration ------------------------------------------------------------------------------
def synthetic_noisy(seed=0, per=120, n_vps=6):
    """Recordings whose estimated SNR lowers target scores more than impostor scores, as
    noise does against a clean voiceprint: a known balanced threshold per SNR."""
    from export.calibrate import Scored

    rng = np.random.default_rng(seed)
    conds = {"clean": 45.0, "noise20": 25.0, "noise10": 15.0, "noise0": 6.0}
    rows, target, speech, group, snr, cond = [], [], [], [], [], []
    truth = {}
    for name, mu_snr in conds.items():
        drop = 0.012 * max(0.0, 45.0 - mu_snr)  # targets fall with noise
        tar_mu, non_mu = 0.80 - drop, 0.45 - drop / 3
        truth[name] = (tar_mu + non_mu) / 2
        for i in range(per):
            t = np.arange(n_vps) == (i % n_vps)
            rows.append(np.where(t, rng.normal(tar_mu, 0.05, n_vps),
                                 rng.normal(non_mu, 0.05, n_vps)))
            target.append(t)
            speech.append(2.0)
            group.append(2)
            snr.append(rng.normal(mu_snr, 1.0))
            cond.append(name)
    sc = Scored(np.array(rows), np.array(target), np.array(speech), np.array(group),
                np.array(snr), np.array(cond))
    return sc, truth, conds


def test_snr_offsets_balance_each_noise_level_relative_to_clean():
    from export.calibrate import offsets_by_snr

    sc, truth, conds = synthetic_noisy()
    length = DecisionConfig(threshold=0.62, min_speech_s=0.5,
                            thresholds_by_speech_s=((1.0, 0.6), (3.0, 0.64)))
    got = offsets_by_snr(sc, length, width_db=5.0, min_trials=50, max_far=1.0)  # no cap
    pts = got["points"]
    xs, offs = [p[0] for p in pts], [p[1] for p in pts]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    assert all(b >= a for a, b in zip(offs, offs[1:]))  # monotone: more noise, lower threshold
    assert max(offs) <= 0.0
    base = length.threshold_for(2.0)
    for name, mu in conds.items():  # each level's balanced threshold, relative to clean
        want = (truth[name] - base) - (truth["clean"] - base)
        assert float(np.interp(mu, xs, offs)) == pytest.approx(want, abs=0.03), name
    assert abs(float(np.interp(45.0, xs, offs))) < 0.02  # clean keeps its length threshold


def test_the_far_cap_keeps_noisy_impostors_out_without_refusing_everyone():
    from export.calibrate import condition_table, offsets_by_snr

    sc, truth, conds = synthetic_noisy()
    length = DecisionConfig(threshold=0.62, min_speech_s=0.5,
                            thresholds_by_speech_s=((1.0, 0.6), (3.0, 0.64)))
    capped = offsets_by_snr(sc, length, width_db=5.0, min_trials=50, max_far=0.10)
    free = offsets_by_snr(sc, length, width_db=5.0, min_trials=50, max_far=1.0)
    assert capped["points"][0][1] > free["points"][0][1] + 0.02  # the noisiest bin: raised

    def cfg(points):
        return DecisionConfig(threshold=0.62, min_speech_s=0.5,
                              thresholds_by_speech_s=length.thresholds_by_speech_s,
                              threshold_offsets_by_snr_db=tuple(map(tuple, points)))

    table = {r["condition"]: r for r in condition_table(sc, length, cfg(capped["points"]))}
    worst = table["noise0"]
    assert worst["frr_length"] > 0.9  # the clean thresholds refuse nearly every noisy target
    assert worst["far_snr"] <= 0.11  # at most the cap: it holds after the monotone fit too
    assert worst["frr_snr"] < worst["frr_length"] - 0.15  # and no longer always refused
    free_table = {r["condition"]: r for r in condition_table(sc, length, cfg(free["points"]))}
    assert free_table["noise0"]["far_snr"] > 0.2  # what the cap prevents here
    for name in ("noise20", "noise10"):  # separable enough: nearly balanced and low
        assert table[name]["frr_snr"] < 0.35 and table[name]["far_snr"] < 0.11, name
    assert table["clean"]["frr_snr"] == pytest.approx(table["clean"]["frr_length"], abs=0.05)


def test_snr_bins_hold_enough_trials_each():
    from export.calibrate import snr_bins

    rng = np.random.default_rng(1)
    snr = np.concatenate([rng.uniform(0, 40, 200), [90.0]])  # one outlier up high
    target = np.zeros((len(snr), 4), bool)
    target[:, 0] = True
    bins = snr_bins(snr, target, 5.0, 30)
    assert sorted(np.concatenate(bins).tolist()) == list(range(len(snr)))
    for b in bins:
        assert target[b].sum() >= 30 and (~target[b]).sum() >= 30
    tops = [snr[b].max() for b in bins]
    assert tops == sorted(tops) and len(bins) >= 4


def test_calibration_needs_no_torch():
    """export.calibrate (and the numpy/scipy degradations it mixes noise with) stay runtime
    only."""
    code = ("import sys, export.calibrate, training.degrade\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio')]\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_write_sidecar_keeps_the_model_id(tmp_path, session):
    from export.calibrate import write_sidecar
    from rtverify.core.encoder import EncoderSession

    copy_model(session.path, tmp_path)
    (tmp_path / "m.json").write_text(json.dumps(session.info.raw))
    decision = dict(session.info.raw["decision"], threshold_offsets_by_snr_db=[[5.0, -0.1],
                                                                               [30.0, 0.0]])
    write_sidecar(tmp_path / "m.onnx", decision, {"note": "test"})
    again = EncoderSession(tmp_path / "m.onnx")
    assert again.model_id == session.model_id
    assert again.info.decision.threshold_offsets_by_snr_db == ((5.0, -0.1), (30.0, 0.0))
    assert again.info.raw["calibration"] == {"note": "test"}
    assert {k: v for k, v in again.info.raw.items() if k not in ("decision", "calibration")} == \
        {k: v for k, v in session.info.raw.items() if k not in ("decision", "calibration")}


def test_dev_eval_into_the_sidecar_keeps_reference_figures_and_other_lists(tmp_path, session):
    from export.dev_eval import write_dev_eval
    from rtverify.core.encoder import EncoderSession

    copy_model(session.path, tmp_path)
    raw = dict(session.info.raw, dev_eval={"command": "old", "lists": {
        "a": {"eer": 0.2, "reference_torch_whole_file": {"eer": 0.1}},
        "b": {"eer": 0.3}}})
    (tmp_path / "m.json").write_text(json.dumps(raw))
    write_dev_eval(str(tmp_path / "m.onnx"), {"command": "new", "lists": {
        "a": {"eer": 0.15}, "c": {"eer": 0.05}}})
    again = EncoderSession(tmp_path / "m.onnx")
    assert again.model_id == session.model_id
    assert again.info.raw["dev_eval"] == {"command": "new", "lists": {
        "a": {"eer": 0.15, "reference_torch_whole_file": {"eer": 0.1}},
        "b": {"eer": 0.3}, "c": {"eer": 0.05}}}
    assert again.info.raw["decision"] == session.info.raw["decision"]


def test_eval_reports_false_accepts_and_rejects_at_the_models_threshold():
    from rtverify.evaluation import FileEmbeddings, Trials, model_threshold_rates

    trials = Trials(np.array([1, 1, 1, 0, 0, 0, 0], np.int8), np.zeros(7, int),
                    np.arange(1, 8), [f"f{i}" for i in range(8)])
    emb = FileEmbeddings(np.zeros((8, 2), np.float32), np.full(8, 2.0), np.zeros(8, bool),
                         np.array([40, 40, 40, 5, 5, 40, 40, 5.0]))
    scores = np.array([0.75, 0.65, 0.65, 0.65, 0.75, 0.5, 0.55])
    cfg = DecisionConfig(threshold=0.7)
    r = model_threshold_rates(trials, emb, scores, cfg)
    assert r == pytest.approx({"accuracy": 4 / 7, "far": 1 / 4, "frr": 2 / 3, "undecided": 0.0,
                               "far_decided": 1 / 4, "frr_decided": 2 / 3})
    offs = DecisionConfig(threshold=0.7, threshold_offsets_by_snr_db=((10.0, -0.1), (30.0, 0.0)))
    # f2 (SNR 40: no offset) stays refused; at SNR 5 the threshold is 0.6: target f3 and
    # impostor f4 (0.65) are accepted, impostor f7 (0.55) is not
    r = model_threshold_rates(trials, emb, scores, offs)
    assert r == pytest.approx({"accuracy": 4 / 7, "far": 2 / 4, "frr": 1 / 3, "undecided": 0.0,
                               "far_decided": 2 / 4, "frr_decided": 1 / 3})
    # trials with too little test speech (target f1, impostor f5 at 0.75: refused whatever the
    # score) are no verdict: counted as refused over all trials, left out of the decided rates
    short = FileEmbeddings(emb.vectors, np.array([2.0, 0.3, 2, 2, 2, 0.3, 2, 2]), emb.short_only,
                           emb.snr_db)
    r = model_threshold_rates(trials, short, scores, cfg)
    assert r == pytest.approx({"accuracy": 4 / 7, "far": 0 / 4, "frr": 3 / 3, "undecided": 2 / 7,
                               "far_decided": 0 / 3, "frr_decided": 2 / 2})


def test_the_default_cap_is_the_clean_false_accept_rate():
    """Without --snr-max-far, noise may not buy an impostor better odds than a clean utterance
    has: every bin's false-accept rate stays at (about) the clean recordings' own."""
    from export.calibrate import condition_table, offsets_by_snr

    sc, truth, conds = synthetic_noisy()
    length = DecisionConfig(threshold=0.62, min_speech_s=0.5,
                            thresholds_by_speech_s=((1.0, 0.6), (3.0, 0.64)))
    fit = offsets_by_snr(sc, length, width_db=5.0, min_trials=50)
    assert fit["max_far"] == pytest.approx(fit["clean_far"])
    cfg = DecisionConfig(threshold=0.62, min_speech_s=0.5,
                         thresholds_by_speech_s=length.thresholds_by_speech_s,
                         threshold_offsets_by_snr_db=tuple(map(tuple, fit["points"])))
    table = {r["condition"]: r for r in condition_table(sc, length, cfg)}
    for name, row in table.items():
        assert row["far_snr"] <= fit["clean_far"] + 0.02, name
    assert table["noise10"]["frr_snr"] < table["noise10"]["frr_length"]  # still forgives noise
