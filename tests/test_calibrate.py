"""Threshold calibration by amount of speech, on synthetic scores (no data folder needed)."""

import numpy as np
import pytest

from export.calibrate import Scored, isotonic, monotone_fit, thresholds_by_length
from rtverify.config import DecisionConfig


def test_isotonic_pools_violators():
    np.testing.assert_allclose(isotonic([1, 3, 2, 4], [1, 1, 1, 1]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(isotonic([3, 1], [1, 3]), [1.5, 1.5])  # weighted mean
    np.testing.assert_allclose(isotonic([4, 3, 5, 1], [1, 1, 1, 1], increasing=False),
                               [4, 4, 4, 1])
    np.testing.assert_allclose(monotone_fit(np.array([5.0, 4, 4.5, 2]), np.ones(4)),
                               [5, 4.25, 4.25, 2])


def synthetic(seed=0, n_tests=400, n_vps=6):
    """Scores whose impostor and target means both rise with speech length (as with a
    3-take voiceprint), with known balanced thresholds."""
    rng = np.random.default_rng(seed)
    groups = (1, 2, 4, 8)
    speech = {1: 0.6, 2: 1.2, 4: 2.5, 8: 5.0}
    rows, target, sp, grp = [], [], [], []
    for g in groups:
        non_mu, tar_mu = 0.40 + 0.05 * np.log2(g), 0.75 + 0.03 * np.log2(g)
        sd = 0.08 / np.sqrt(g)
        for i in range(n_tests):
            t = np.arange(n_vps) == (i % n_vps)
            rows.append(np.where(t, rng.normal(tar_mu, sd, n_vps), rng.normal(non_mu, sd, n_vps)))
            target.append(t)
            sp.append(speech[g] * rng.uniform(0.9, 1.1))
            grp.append(g)
    return Scored(np.array(rows), np.array(target), np.array(sp), np.array(grp))


def test_thresholds_rise_with_length_and_sit_between_the_classes():
    result = thresholds_by_length(synthetic(), max_eer=0.15)
    points = result["decision"]["thresholds_by_speech_s"]
    secs = [p[0] for p in points]
    thr = [p[1] for p in points]
    assert secs == sorted(secs) and len(set(secs)) == len(secs)
    assert all(b >= a for a, b in zip(thr, thr[1:]))  # monotone
    assert thr[-1] > thr[0] + 0.05  # and really rising here
    for row in result["table"]:
        assert row["nontarget_mean"] < row["threshold_fit"] < row["target_mean"]
        # the midpoint of two equal-spread normals is the balanced threshold
        assert row["threshold_eer"] == pytest.approx(
            (row["nontarget_mean"] + row["target_mean"]) / 2, abs=0.03)
    # the decision block is what the sidecar reader and DecisionConfig take
    cfg = DecisionConfig(threshold=result["decision"]["threshold"],
                         min_speech_s=result["decision"]["min_speech_s"],
                         thresholds_by_speech_s=tuple(map(tuple, points)))
    assert cfg.threshold_for(0.1) == thr[0] and cfg.threshold_for(60) == thr[-1]
    assert thr[0] <= cfg.threshold_for(2.0) <= thr[-1]


def test_min_speech_comes_from_the_shortest_group_with_acceptable_eer():
    sc = synthetic()
    table = thresholds_by_length(sc, max_eer=1.0)["table"]
    by_len = sorted((r["speech_s"], r["eer"], r["keywords"]) for r in table)
    assert by_len[0][1] > by_len[-1][1]  # shorter speech, more errors
    decile = {g: np.quantile(sc.speech_s[sc.group == g], 0.1) for g in np.unique(sc.group)}
    limit = (by_len[0][1] + by_len[1][1]) / 2  # between the two shortest groups' EERs
    got = thresholds_by_length(sc, max_eer=limit)["decision"]["min_speech_s"]
    assert got == pytest.approx(round(decile[by_len[1][2]], 2))
    got = thresholds_by_length(sc, max_eer=1.0)["decision"]["min_speech_s"]
    assert got == pytest.approx(round(decile[by_len[0][2]], 2))
    assert got < by_len[0][0]  # below the group's median: most of its recordings are decided


def test_recordings_listen_decides_nothing_on_are_left_out(session, conversation):
    """calibrate embeds through rtverify.evaluation.embed_chunks; a recording with no speech, or
    only speech listen drops as too short (a 0.2 s blip), gets no vector (no decision to
    calibrate), speech gets the runtime's unit vector and its speech seconds."""
    from export.calibrate import embed
    from rtverify.config import SegmenterConfig
    from rtverify.core.pipeline import embed_recording

    from conftest import chunks_of

    seg = SegmenterConfig()
    pad = np.zeros(4000, np.float32)
    blip = np.concatenate([pad, conversation[24000:27200], pad])
    assert embed(session, blip, seg)[0] is None
    assert embed(session, np.zeros(16000, np.float32), seg)[0] is None
    speech = conversation[:16000 * 6]
    vec, speech_s = embed(session, speech, seg)
    ref = embed_recording(session, chunks_of(speech, 1600), segmenter=seg)
    np.testing.assert_allclose(vec, ref.vector, atol=1e-6)
    assert speech_s == pytest.approx(ref.speech_s) and speech_s > 1.0


def _like_scores(seed: int, n_probes: int, n_vps: int = 60):
    """Synthetic calibrate_like data: probes at 8 amounts of speech scored against voiceprints
    enrolled on 6 s, by a reference and by a new model on another scale (neither moving with
    speech): ``speech, enrol, target, ref, new``."""
    rng = np.random.default_rng(seed)
    speech = np.repeat(np.linspace(0.6, 5.0, 8), n_probes // 8)
    enrol = np.full(n_vps, 6.0)
    target = np.zeros((n_probes, n_vps), dtype=bool)
    target[np.arange(n_probes), np.arange(n_probes) % n_vps] = True
    ref = rng.normal(0.55, 0.1, (n_probes, n_vps)) + 0.3 * target
    new = rng.normal(0.70, 0.06, (n_probes, n_vps)) + 0.25 * target  # another scale
    return speech, enrol, target, ref, new


def test_calibrate_like_gives_the_new_model_the_references_false_accepts():
    """Per speech group the new model's threshold lets through the share of impostors that the
    reference's own threshold does (its enrolment offsets taken out on both sides), and the
    table rises with speech as the reference's does."""
    from export.calibrate_like import like_thresholds

    speech, enrol, target, ref, new = _like_scores(seed=0, n_probes=400)
    reference = DecisionConfig(threshold=0.75, thresholds_by_speech_s=((0.6, 0.70), (5.0, 0.80)),
                               threshold_offsets_by_enrol_s=((3.0, -0.02), (6.0, -0.01),
                                                             (10.0, 0.0)))
    model = DecisionConfig(threshold=0.8, threshold_offsets_by_enrol_s=((6.0, -0.03),
                                                                       (10.0, 0.0)))
    fit = like_thresholds({"scores": [new, ref], "target": target, "speech_s": speech,
                           "enrol_s": enrol}, reference, model, n_groups=8)
    for row in fit["table"]:
        sel = np.abs(speech - row["speech_s"]) < 1e-9
        imp_ref = (ref[sel] - reference.threshold_for(row["speech_s"])
                   - reference.enrol_offset(6.0))[~target[sel]]
        far = (imp_ref >= 0).mean()
        assert row["far_reference"] == pytest.approx(far)
        imp_new = (new[sel] - model.enrol_offset(6.0))[~target[sel]]
        assert (imp_new >= row["threshold"]).mean() == pytest.approx(far, abs=2 / len(imp_new))
    ys = [p[1] for p in fit["points"]]
    assert ys == sorted(ys) and ys[-1] > ys[0]  # stricter for longer speech, as the reference


def test_calibrate_like_pooled_lets_through_one_share_at_every_length():
    """``--far pooled``: every speech group lets through the reference's share of impostors
    over all groups (not its own group's), so a table whose impostor scores do not move with
    speech comes out flat, where the per-length one would follow the reference's slope."""
    from export.calibrate_like import like_thresholds

    speech, enrol, target, ref, new = _like_scores(seed=1, n_probes=800)
    reference = DecisionConfig(threshold=0.75, thresholds_by_speech_s=((0.6, 0.70), (5.0, 0.80)))
    model = DecisionConfig(threshold=0.8)
    data = {"scores": [new, ref], "target": target, "speech_s": speech, "enrol_s": enrol}
    thr_ref = np.array([reference.threshold_for(x) for x in speech])[:, None]
    pooled_far = ((ref - thr_ref)[~target] >= 0).mean()
    per = like_thresholds(data, reference, model, n_groups=8)
    flat = like_thresholds(data, reference, model, n_groups=8, pooled=True)
    for row in flat["table"]:
        assert row["far"] == pytest.approx(pooled_far)
        sel = np.abs(speech - row["speech_s"]) < 1e-9
        imp_new = new[sel][~target[sel]]
        assert (imp_new >= row["threshold"]).mean() == pytest.approx(pooled_far,
                                                                     abs=2 / len(imp_new))
    spread = lambda fit: fit["points"][-1][1] - fit["points"][0][1]  # noqa: E731
    assert spread(per) > 0.05 and abs(spread(flat)) < 0.02


def test_short_expert_thresholds_let_through_the_models_rate_under_its_bar():
    """``calibrate_like --short-expert``: the expert's threshold for each group of probes with
    less speech than its bar lets through the given share of impostors (its own offset for the
    enrolled speech taken out); probes over the bar are not used."""
    from export.calibrate_like import expert_thresholds

    speech, enrol, target, ref, _ = _like_scores(seed=2, n_probes=800)
    expert = DecisionConfig(threshold=0.7, threshold_offsets_by_enrol_s=((6.0, -0.02),
                                                                        (10.0, 0.0)))
    data = {"scores": [ref], "target": target, "speech_s": speech, "enrol_s": enrol}
    fit = expert_thresholds(data, expert, below_s=2.0, far=0.01, n_groups=3)
    assert fit["table"] and all(r["speech_s"] < 2.0 for r in fit["table"])
    assert sum(r["n_probes"] for r in fit["table"]) == int((speech < 2.0).sum())
    for row in fit["table"]:
        sel = np.abs(speech - row["speech_s"]) < 1e-9
        imp = (ref[sel] - expert.enrol_offset(6.0))[~target[sel]]
        assert (imp >= row["threshold"]).mean() == pytest.approx(0.01, abs=2 / len(imp))
        own = (ref[sel] - 0.7 - expert.enrol_offset(6.0))[~target[sel]]
        assert row["far_own"] == pytest.approx((own >= 0).mean())
    with pytest.raises(ValueError, match="less than 0.5 s"):
        expert_thresholds(data, expert, below_s=0.5, far=0.01)


def test_rates_at_thresholds_count_each_models_own_margins():
    """``calibrate_like --heldout-check``: false accepts and rejects of one model of the
    collected scores at its own thresholds (length and enrolled speech), by hand."""
    from export.calibrate_like import rates_at_thresholds

    speech, enrol, target, ref, new = _like_scores(seed=3, n_probes=80, n_vps=20)
    dec = DecisionConfig(threshold=0.8, thresholds_by_speech_s=((0.6, 0.75), (5.0, 0.85)),
                         threshold_offsets_by_enrol_s=((6.0, -0.01), (10.0, 0.0)))
    data = {"scores": [new, ref], "target": target, "speech_s": speech, "enrol_s": enrol}
    far, frr = rates_at_thresholds(data, 1, dec)
    thr = np.array([dec.threshold_for(x) for x in speech])[:, None] + dec.enrol_offset(6.0)
    assert far == pytest.approx(((ref - thr)[~target] >= 0).mean())
    assert frr == pytest.approx(((ref - thr)[target] < 0).mean())
    assert 0 < far < 0.5 and rates_at_thresholds(data, 0, dec) != (far, frr)


def test_calibration_and_heldout_speakers_do_not_overlap(tmp_path):
    """The calibration speakers are every LibriSpeech speaker but the dev lists' held-out ones
    (every 5th), which ``held_out=True`` gives instead, for measuring only."""
    from export.calibrate_fall import LIBRI, speakers

    corpus = tmp_path / LIBRI
    corpus.mkdir()
    rows = ["speaker\tpath\tduration_s\tsample_rate"] + [
        f"{100 + k}\t{100 + k}/a.flac\t12.0\t16000" for k in range(12)]
    (corpus / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    calib, held = speakers(tmp_path), speakers(tmp_path, held_out=True)
    assert sorted(held) == ["100", "105", "110"]
    assert not set(calib) & set(held) and len(calib) + len(held) == 12


@pytest.mark.parametrize("sidecar", [False, True], ids=["alone", "with-a-sidecar"])
@pytest.mark.parametrize("module", ["export.calibrate", "export.calibrate_like",
                                    "export.calibrate_fall", "export.cohort"])
def test_calibrating_a_model_that_is_not_onnx_is_a_one_line_error(module, sidecar, tmp_path,
                                                                  capsys):
    """A training checkpoint given as --model (with or without a sidecar copied beside it): one
    line naming the file, exit code 2, nothing written."""
    import importlib
    import shutil

    from rtverify.core.encoder import MODELS_DIR

    model = tmp_path / "best.pt"
    model.write_bytes(b"PK\x03\x04 not an ONNX graph")
    if sidecar:
        shutil.copy(MODELS_DIR / "default.json", tmp_path / "best.json")
    out = tmp_path / "out"
    rc = importlib.import_module(module).main(["--root", str(tmp_path), "--model", str(model),
                                               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "best." in err, err
    assert not out.exists()


def test_refitting_from_a_file_that_is_not_a_scores_npz_is_a_one_line_error(tmp_path, capsys):
    from export.calibrate import main

    empty, text, other = tmp_path / "empty.npz", tmp_path / "text.npz", tmp_path / "other.npz"
    empty.write_bytes(b"")
    text.write_text("not numpy\n")
    np.savez(other, wins=np.zeros(3))
    for path, says in ((empty, "not a readable .npz"), (text, "not a readable .npz"),
                       (other, "no length scores")):
        assert main(["--root", str(tmp_path), "--from-scores", str(path), "--out",
                     str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"--from-scores {path}: {says}" in err
    assert not (tmp_path / "out").exists()
