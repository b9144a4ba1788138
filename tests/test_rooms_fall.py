"""Thresholds that know the room (issue 11, point 4): each decision's ``fall_db`` (how steeply its
speech falls silent; a room's reverberation makes it shallow), each voiceprint's own (its
enrolment's room), the models' offsets by the change from one to the other, and the rule that
a decision gets the lower of its SNR and reverberation offsets."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, chunks_of, model_with_decision
from rtverify.config import DecisionConfig
from rtverify.core.fbank import FbankConfig, fbank
from rtverify.core.features import FeatureConfig, mel_spectrogram
from rtverify.core.scoring import DecisionPolicy, fall_db
from rtverify.errors import ModelError

DEMO = REPO / "rtverify" / "demo"


def _reverberant(x, seed=0, rt60_s=0.7):
    from training import degrade  # numpy/scipy only

    return degrade.reverb(x, np.random.default_rng(seed), rt60_s=(rt60_s, rt60_s),
                          drr_db=(-3.0, -3.0)).astype(np.float32)


@pytest.fixture(scope="module")
def speech(conversation):
    return conversation[:16000 * 6]


def test_reverberation_makes_speech_fall_slowly_on_every_front_end(speech):
    wet = _reverberant(speech)
    mel = FeatureConfig()
    dry_mel, wet_mel = fall_db(mel_spectrogram(speech), mel), fall_db(mel_spectrogram(wet), mel)
    dry_fb, wet_fb = (fall_db(fbank(speech), FbankConfig()), fall_db(fbank(wet), FbankConfig()))
    assert dry_mel - wet_mel > 1.5 and dry_fb - wet_fb > 1.0
    assert 8.0 < dry_mel < 14.0 and 5.0 < wet_mel < 8.5
    # a longer room falls slower still
    assert fall_db(mel_spectrogram(_reverberant(speech, rt60_s=1.2)), mel) < wet_mel
    # loudness does not matter (levels are differences), too few rows give no estimate
    assert fall_db(mel_spectrogram(speech * 0.1), mel) == pytest.approx(dry_mel, abs=0.05)
    assert fall_db(mel_spectrogram(speech[:4000]), mel) is None


def test_a_fusion_reads_its_first_parts_columns(speech):
    from rtverify.core.encoder import EncoderSession
    from rtverify.core.fusion import StreamingConcat

    fusion = EncoderSession("fusion", threads=1)
    front = StreamingConcat(fusion.features)
    rows = np.concatenate([front.push(speech), front.flush()])
    assert fall_db(rows, fusion.features) == pytest.approx(
        fall_db(rows[:, :40], fusion.features.parts[0]))


CFG = DecisionConfig(threshold=0.8,
                     threshold_offsets_by_snr_db=((5.0, -0.10), (10.0, -0.08), (30.0, 0.0)),
                     threshold_offsets_by_fall_change_db=((-3.0, -0.12), (0.0, 0.0)))


@pytest.mark.parametrize("snr_db,change,want", [
    (None, None, 0.0), (40.0, 1.0, 0.0),         # clean, as reverberant as the enrolment: 0
    (10.0, 0.0, -0.08), (40.0, -3.0, -0.12),     # noisy, or in a wetter room: that offset
    (10.0, -3.0, -0.12), (5.0, -1.5, -0.10),     # both: the lower one, never their sum
    (math.nan, -3.0, -0.12), (10.0, math.inf, -0.08)])
def test_a_decision_gets_the_lower_of_its_snr_and_room_offsets(snr_db, change, want):
    assert CFG.threshold_for(2.0, snr_db, change) == pytest.approx(0.8 + want)
    assert DecisionPolicy(CFG, threshold=0.81).threshold_for(2.0, snr_db, change) == 0.81


def test_each_voice_is_judged_by_the_change_from_its_own_enrolment():
    from rtverify.core.scoring import VoiceVector

    vec = np.eye(4, dtype=np.float32)[0]
    voices = {"dry": VoiceVector(vec, enrol_fall_db=10.0), "wet": VoiceVector(vec, None, None, 7.0),
              "old": VoiceVector(vec)}
    policy = DecisionPolicy(CFG)
    falls = policy.falls_for(voices)
    assert falls == {"dry": 10.0, "wet": 7.0}  # a voiceprint from before: no figure, no offset
    for name, want in (("dry", 0.8 - 0.12), ("wet", 0.8), ("old", 0.8)):
        d = policy.decide({name: 0.7}, 2.0, 40.0, fall_db=7.0, enrol_falls=falls)
        assert d.threshold == pytest.approx(want) and d.accepted == (0.7 >= want)
    # the best voice is the one with the largest margin over its own threshold
    d = policy.decide({"dry": 0.70, "wet": 0.75}, 2.0, 40.0, fall_db=7.0, enrol_falls=falls)
    assert d.best == "dry" and d.accepted
    assert DecisionPolicy(CFG, threshold=0.79).falls_for(voices) == {}
    import pickle  # the server hands voices to its workers pickled
    assert pickle.loads(pickle.dumps(voices["wet"])).enrol_fall_db == 7.0


def test_the_sidecar_table_is_checked(tmp_path, session):
    with pytest.raises(ModelError,
                       match="threshold_offsets_by_fall_change_db must have increasing"):
        model_with_decision(tmp_path, session, "threshold_offsets_by_fall_change_db",
                            [[9.0, -0.1], [7.0, 0.0]])


def test_reverberant_speech_is_judged_at_the_rooms_threshold(tmp_path, session, speech,
                                                             alice_print):
    from rtverify.core.pipeline import DecisionEvent, Verifier, embed_recording
    from rtverify.core.scoring import VoiceVector

    model = model_with_decision(tmp_path, session, "threshold_offsets_by_fall_change_db",
                                [[-3.0, -0.2], [-1.0, 0.0]])
    cfg = model.info.decision
    enrolled = embed_recording(model, chunks_of(speech, 4096)).fall_db  # a dry enrolment
    alice = VoiceVector(alice_print, enrol_fall_db=enrolled)
    got = {}
    for name, audio in (("dry", speech), ("wet", _reverberant(speech))):
        decs = [e for e in Verifier(model, {"alice": alice}).process(
            chunks_of(audio, 4096)) if isinstance(e, DecisionEvent)]
        assert decs and all(d.fall_db is not None for d in decs)
        for d in decs:
            assert d.threshold == pytest.approx(cfg.threshold_for(d.speech_s, d.snr_db,
                                                                  d.fall_db - enrolled))
            assert d.to_dict()["fall_db"] == round(d.fall_db, 2)
        got[name] = decs
        rec = embed_recording(model, chunks_of(audio, 4096))
        weights = np.array([d.speech_s for d in rec.decisions])
        assert rec.fall_db == pytest.approx(
            float(np.dot([d.fall_db for d in rec.decisions], weights) / weights.sum()))
    assert max(d.fall_db for d in got["wet"]) < min(d.fall_db for d in got["dry"])
    for d in got["wet"]:  # lowered by the room (the SNR offset alone would not reach it)
        assert d.threshold < cfg.threshold_for(d.speech_s, d.snr_db) - 0.02


def test_verify_reports_the_fall_and_lowers_its_threshold_in_a_room(tmp_path):
    import soundfile as sf

    store = tmp_path / "store"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rtverify", "--store", str(store), *args],
                              capture_output=True, text=True, timeout=180, env=env)

    r = cli("enroll", "--name", "alice", "--input", str(DEMO / "enroll_1.flac"))
    assert r.returncode == 0, r.stderr
    x, rate = sf.read(DEMO / "enroll_2.flac", dtype="float32")
    sf.write(tmp_path / "wet.wav", _reverberant(x), rate)
    out = {}
    for name, path in (("dry", DEMO / "enroll_2.flac"), ("wet", tmp_path / "wet.wav")):
        # the fusion ships offsets by the room (the default does not: see the README)
        r = cli("verify", "--model", "fusion", "--name", "alice", "--input", str(path), "--json")
        assert r.returncode in (0, 1), r.stderr
        out[name] = json.loads(r.stdout)
    assert out["wet"]["fall_db"] < out["dry"]["fall_db"] - 1.0
    assert out["wet"]["threshold"] < out["dry"]["threshold"]
    held = json.loads((store / "alice.json").read_text())
    ids = {held["model_id"], *held["models"]}
    assert set(held["fall_db"]) == ids  # each model's front-end reads its own figure
    assert all(5.0 < v < 15.0 for v in held["fall_db"].values())


def test_campp_and_the_fusion_carry_room_offsets_that_only_lower_and_the_default_none():
    default = json.loads((REPO / "rtverify" / "models" / "default.json").read_text())
    assert "threshold_offsets_by_fall_change_db" not in default["decision"]
    for name in ("campp", "fusion"):
        raw = json.loads((REPO / "rtverify" / "models" / f"{name}.json").read_text())
        pts = raw["decision"]["threshold_offsets_by_fall_change_db"]
        assert pts and all(o <= 0 for _, o in pts) and pts[-1][1] == 0.0
        assert [o for _, o in pts] == sorted(o for _, o in pts)  # drier: never stricter
        assert raw["calibration"]["fall"]["by_condition"]
        assert pts[-1][0] < 0  # dry speech (no change from its enrolment) keeps its threshold


def test_clean_far_is_read_from_the_snr_calibration():
    from export.calibrate_fall import clean_far

    raw = {"calibration": {"snr": {"by_condition": [{"condition": "babble0", "far_length": 0.5},
                                                    {"condition": "clean",
                                                     "far_length": 0.0123}]}}}
    assert clean_far(raw) == 0.0123
    assert clean_far({}) is None


def test_a_voiceprints_rooms_survive_the_store_and_damage_is_named(tmp_path):
    from rtverify.errors import StoreError
    from rtverify.store.voiceprints import Voiceprint

    vp = Voiceprint(name="a", model_id="m-1", embedding=np.eye(3, dtype=np.float32)[0],
                    created="2026-01-01T00:00:00Z", speech_s=5.0, n_takes=2,
                    fall_db={"m-1": 9.5, "other-2": 10.25})
    back = Voiceprint.from_dict(json.loads(json.dumps(vp.to_dict())), "a.json")
    assert back.fall_db == {"m-1": 9.5, "other-2": 10.25}
    assert back.vector().enrol_fall_db == 9.5
    old = vp.to_dict()
    del old["fall_db"]
    assert Voiceprint.from_dict(old, "a.json").vector().enrol_fall_db is None
    for bad in ({"m-1": "wet"}, [9.5], {"m-1": float("inf")}, {"m-1": -3.0}):
        d = vp.to_dict()
        d["fall_db"] = bad
        with pytest.raises(StoreError, match="a.json: damaged voiceprint .*fall_db"):
            Voiceprint.from_dict(json.loads(json.dumps(d, allow_nan=True)), "a.json")
