"""Thresholds that know how much speech a voiceprint was enrolled on (issue 11 point 4, issue
12's one-take voiceprints): sidecar ``decision.threshold_offsets_by_enrol_s``, carried per voice
from the store to every decision."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import chunks_of, model_with_decision
from rtverify.config import DecisionConfig
from rtverify.core.scoring import DecisionPolicy, VoiceVector

BY_ENROL = ((3.5, -0.04), (10.0, 0.0))


def test_offset_is_interpolated_held_at_the_ends_and_zero_when_unknown():
    cfg = DecisionConfig(threshold=0.8, threshold_offsets_by_enrol_s=BY_ENROL)
    assert cfg.enrol_offset(2.0) == pytest.approx(-0.04)
    assert cfg.enrol_offset(6.75) == pytest.approx(-0.02)
    assert cfg.enrol_offset(30.0) == pytest.approx(0.0)
    for unknown in (None, float("nan"), 0.0, -1.0):
        assert cfg.enrol_offset(unknown) == 0.0
    assert DecisionConfig(threshold=0.8).enrol_offset(2.0) == 0.0  # no table: no offset


def test_each_voice_is_judged_against_its_own_threshold():
    cfg = DecisionConfig(threshold=0.8, threshold_offsets_by_enrol_s=BY_ENROL)
    policy = DecisionPolicy(cfg)
    voices = {"short": VoiceVector(np.ones(4), None, 3.0),
              "long": VoiceVector(np.ones(4), None, 12.0),
              "old": VoiceVector(np.ones(4))}  # enrolled before: amount unknown
    offsets = policy.offsets_for(voices)
    assert offsets == {"short": pytest.approx(-0.04)}
    # "long" scores higher, but only "short" clears its own (lower) threshold
    d = policy.decide({"short": 0.78, "long": 0.79, "old": 0.5}, 3.0, None, offsets)
    assert d.accepted and d.speaker == "short"
    assert d.threshold == pytest.approx(0.76) and d.margin == pytest.approx(0.02)
    # without the offsets the same scores are a rejection of "long"
    d0 = policy.decide({"short": 0.78, "long": 0.79, "old": 0.5}, 3.0)
    assert not d0.accepted and d0.best == "long"
    # a threshold set by hand overrides every offset
    assert DecisionPolicy(cfg, 0.7).offsets_for(voices) == {}


def test_the_store_hands_out_the_enrolled_amount(tmp_path):
    from rtverify.store.voiceprints import Voiceprint, VoiceprintStore

    store = VoiceprintStore(tmp_path)
    vp = Voiceprint(name="bob", model_id="m-1", embedding=np.ones(4, np.float32) / 2,
                    created="2026-01-01T00:00:00Z", speech_s=4.2, n_takes=1)
    store.save(vp)
    vec = store.load("bob").vector()
    assert isinstance(vec, VoiceVector) and vec.enrol_speech_s == pytest.approx(4.2)


def _model_with(tmp_path, session, by_enrol):
    return model_with_decision(tmp_path, session, "threshold_offsets_by_enrol_s", by_enrol)


def test_decisions_use_the_voices_offset(tmp_path, session, conversation, alice_print):
    from rtverify.core.pipeline import DecisionEvent, Verifier

    model = _model_with(tmp_path, session, [[3.0, -0.05], [10.0, 0.0]])
    cfg = model.info.decision
    x = conversation[:16000 * 8]
    for enrol_s, offset in ((2.0, -0.05), (6.5, -0.025), (None, 0.0)):
        voice = VoiceVector(alice_print, None, enrol_s)
        decs = [e for e in Verifier(model, {"alice": voice}).process(chunks_of(x, 4096))
                if isinstance(e, DecisionEvent)]
        assert decs
        for d in decs:
            assert d.threshold == pytest.approx(
                cfg.threshold_for(d.speech_s, d.snr_db, d.fall_db) + offset)
            assert d.accepted == (d.score >= d.threshold and d.speech_s >= cfg.min_speech_s)


@pytest.mark.parametrize("bad", [[[5.0, -0.1], [3.0, 0.0]], [[3.0, "x"]], [[3.0, float("nan")]]])
def test_a_bad_table_is_a_model_error(tmp_path, session, bad):
    from rtverify.errors import ModelError

    with pytest.raises(ModelError, match="invalid model sidecar"):
        _model_with(tmp_path, session, bad)


def test_a_voice_survives_pickling_whole():
    """The server hands voices to its worker processes pickled: the narrowband embedding and
    the enrolled amount must arrive too (before, both were dropped there)."""
    import pickle

    v = VoiceVector(np.ones(4, np.float32) / 2, np.array([1, 0, 0, 0], np.float32), 4.2)
    w = pickle.loads(pickle.dumps({"a": v}, protocol=pickle.HIGHEST_PROTOCOL))["a"]
    assert isinstance(w, VoiceVector) and w.enrol_speech_s == 4.2
    np.testing.assert_array_equal(w, v)
    np.testing.assert_array_equal(w.narrowband, v.narrowband)
    np.testing.assert_allclose(w.narrowband_print(), v.narrowband_print())
