"""The default's short expert: utterances with under a second of speech are decided by the LSTM the
room-trained default was distilled from (its vector of the voice, its thresholds), the rest by the
default itself; in ``listen``'s pipeline, ``verify`` and ``eval`` alike."""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import numpy as np
import pytest
from conftest import DEMO, copy_model, read16k

from rtverify.core.encoder import MODELS_DIR, EncoderSession
from rtverify.core.pipeline import Verifier, embed_recording
from rtverify.errors import ModelError
from rtverify.events import DecisionEvent
from rtverify.io.sources import Chunk

SR = 16000


@pytest.fixture(scope="module")
def routed():
    s = EncoderSession()
    assert s.short_expert is not None, "the shipped default names a short expert"
    return s


@pytest.fixture(scope="module")
def voice(routed):
    """alice as enrolment stores her: the default's vector, the short expert's as a companion."""
    from rtverify.apps.enroll import companion_sessions, enroll_files

    enrol = enroll_files(routed, [DEMO / "enroll_1.flac", DEMO / "enroll_2.flac"])
    vp = enrol.voiceprint("alice", routed.model_id, companion_sessions(routed))
    return vp


def _stream(x: np.ndarray) -> list[Chunk]:
    pad = np.zeros(SR, np.float32)
    y = np.concatenate([pad, x.astype(np.float32), pad])
    return [Chunk(y[i:i + 1600], i / SR) for i in range(0, len(y), 1600)]


def _decisions(session, voices, x) -> list[DecisionEvent]:
    v = Verifier(session, voices, max_pending=8, provisional=False)
    return [e for e in v.process(_stream(x)) if isinstance(e, DecisionEvent)]


def test_the_expert_reads_the_same_rows_and_is_a_shipped_model(routed):
    expert, below = routed.short_expert
    assert 0.5 <= below <= 1.0  # a word or two
    assert expert.features == routed.features and expert.window == routed.window
    assert expert.model_id != routed.model_id
    assert expert.model_id == json.loads((MODELS_DIR / "default-short.json").read_text())[
        "model_id"]


def test_short_utterances_are_decided_by_the_expert_long_ones_by_the_model(routed, voice, demo):
    expert, below = routed.short_expert
    conv = read16k(DEMO / demo["conversation"])
    turn = next(t for t in demo["script"] if t["speaker"] == demo["enrolled_speaker"])
    a = int(turn["start_s"] * SR)
    long_x = conv[a:int(turn["end_s"] * SR)]
    voices = {"alice": voice.vector(routed.companion_ids)}  # as listen loads it
    d_long = max(_decisions(routed, voices, long_x), key=lambda d: d.speech_s)
    assert d_long.speech_s >= below
    assert d_long.threshold == pytest.approx(
        routed.info.decision.threshold_for(d_long.speech_s, d_long.snr_db, None)
        + routed.info.decision.enrol_offset(voice.speech_s), abs=1e-6)
    # the same speaker's 0.8 s: under a second of speech, so the expert scores it
    short = [d for d in _decisions(routed, voices, long_x[:int(0.8 * SR)])]
    assert len(short) == 1 and short[0].speech_s < below
    d = short[0]
    # its score is the expert's cosine against the voice's vector for the expert
    rows_embed = embed_recording(expert, _stream(long_x[:int(0.8 * SR)]))
    companion = voices["alice"].companions[expert.model_id]
    assert d.score == pytest.approx(float(np.dot(rows_embed.vector, companion)), abs=2e-3)
    assert d.threshold == pytest.approx(
        expert.info.decision.threshold_for(d.speech_s, d.snr_db, None)
        + expert.info.decision.enrol_offset(voice.speech_s), abs=1e-6)
    # and not the model's own (the two models' thresholds differ there)
    assert abs(routed.info.decision.threshold_for(d.speech_s)
               - expert.info.decision.threshold_for(d.speech_s)) > 1e-3


def test_a_noisy_short_utterance_is_decided_by_the_model(routed, voice, demo):
    """The expert learnt on clean close-talk words; under its SNR bar (30 dB for the default)
    the room-trained model decides even a short utterance, in listen, verify and eval alike."""
    bar = routed.info.short_expert_min_snr_db
    assert bar is not None and 10.0 <= bar <= 40.0
    expert, below = routed.short_expert
    conv = read16k(DEMO / demo["conversation"])
    turn = next(t for t in demo["script"] if t["speaker"] == demo["enrolled_speaker"])
    a = int(turn["start_s"] * SR)
    x = conv[a:a + int(0.8 * SR)].astype(np.float64)
    rng = np.random.default_rng(0)
    voices = {"alice": voice.vector(routed.companion_ids)}
    pad = SR  # _stream pads a second each side: the noise runs through it, as a room's does
    seen = {}
    for name, level_db in (("clean", None), ("noisy", -15.0)):
        y = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
        if level_db is not None:  # noise about 15 dB under the speech's level
            rms = np.sqrt(np.mean(x ** 2))
            y = y + rng.standard_normal(len(y)) * rms * 10 ** (level_db / 20)
        v = Verifier(routed, voices, max_pending=8, provisional=False)
        chunks = [Chunk(y[i:i + 1600].astype(np.float32), i / SR)
                  for i in range(0, len(y), 1600)]
        (d,) = [e for e in v.process(chunks) if isinstance(e, DecisionEvent)]
        assert d.speech_s < below
        seen[name] = d
    noisy, clean = seen["noisy"], seen["clean"]
    assert noisy.snr_db is not None and noisy.snr_db < bar
    assert not routed.expert_decides(noisy.speech_s, noisy.snr_db)
    assert noisy.threshold == pytest.approx(
        routed.info.decision.threshold_for(noisy.speech_s, noisy.snr_db, None)
        + routed.info.decision.enrol_offset(voice.speech_s), abs=1e-6)
    assert clean.snr_db is None or clean.snr_db >= bar
    assert routed.expert_decides(clean.speech_s, clean.snr_db)
    assert clean.threshold == pytest.approx(
        expert.info.decision.threshold_for(clean.speech_s, clean.snr_db, None)
        + expert.info.decision.enrol_offset(voice.speech_s), abs=1e-6)


def test_expert_decides_by_speech_and_snr(routed):
    expert, below = routed.short_expert
    bar = routed.info.short_expert_min_snr_db
    assert routed.expert_decides(below - 0.1, bar + 1)
    assert routed.expert_decides(below - 0.1, None)  # unknown SNR: taken as clean
    assert routed.expert_decides(below - 0.1, float("nan"))
    assert not routed.expert_decides(below - 0.1, bar - 1)
    assert not routed.expert_decides(below + 0.1, bar + 1)
    assert not expert.expert_decides(0.1, None)  # no expert of its own


def test_a_voice_without_the_experts_vector_is_decided_by_the_model(routed, voice, demo,
                                                                     caplog):
    import dataclasses

    old = dataclasses.replace(voice, models=None)  # as a voice enrolled with the model alone
    conv = read16k(DEMO / demo["conversation"])
    turn = demo["script"][0]
    x = conv[int(turn["start_s"] * SR):int(turn["start_s"] * SR) + int(0.8 * SR)]
    with caplog.at_level(logging.WARNING):
        (d,) = _decisions(routed, {"alice": old.vector(routed.companion_ids)}, x)
    assert "holds no embedding for" in caplog.text and "re-enroll" in caplog.text
    assert d.threshold == pytest.approx(
        routed.info.decision.threshold_for(d.speech_s, d.snr_db, None)
        + routed.info.decision.enrol_offset(voice.speech_s), abs=1e-6)


def test_voice_vectors_keep_their_companions_through_pickling(routed, voice):
    v = voice.vector(routed.companion_ids)
    assert v.companions  # the expert's
    back = pickle.loads(pickle.dumps(v))
    assert set(back.companions) == set(v.companions)
    for k in v.companions:
        assert np.array_equal(back.companions[k], v.companions[k])


def test_verify_routes_a_short_recording_to_the_expert(routed, voice, demo, tmp_path):
    import soundfile as sf

    from rtverify.apps.verify import verify
    from rtverify.io.sources import FileSource

    expert, below = routed.short_expert
    conv = read16k(DEMO / demo["conversation"])
    turn = demo["script"][0]
    a = int(turn["start_s"] * SR)
    path = tmp_path / "short.wav"  # with quiet around it: clean enough for the expert
    quiet = np.zeros(SR // 2, np.float32)
    sf.write(path, np.concatenate([quiet, conv[a:a + int(0.8 * SR)], quiet]), SR)
    r = verify(routed, voice, FileSource(path), str(path), live=False)
    assert r.recording.speech_s < below
    assert r.decision.threshold == pytest.approx(
        expert.info.decision.threshold_for(r.recording.speech_s, r.recording.snr_db, None)
        + expert.info.decision.enrol_offset(voice.speech_s), abs=1e-6)
    path2 = tmp_path / "long.wav"
    sf.write(path2, conv[a:int(turn["end_s"] * SR)], SR)
    r2 = verify(routed, voice, FileSource(path2), str(path2), live=False)
    assert r2.recording.speech_s >= below
    assert r2.decision.threshold == pytest.approx(
        routed.info.decision.threshold_for(r2.recording.speech_s, r2.recording.snr_db,
                                           None) + routed.info.decision.enrol_offset(
            voice.speech_s), abs=1e-6)


@pytest.fixture(scope="module")
def demo_trials(tmp_path_factory, demo):
    """Trials between the demo's lines: whole lines, their first 0.7 s in quiet (for the expert)
    and the same 0.7 s in noise (under its SNR bar). Returns ``(folder, lines)``."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("demo_trials")
    conv = read16k(DEMO / demo["conversation"])
    rng = np.random.default_rng(1)
    lines = []
    for i, t in enumerate(demo["script"]):
        a, b = int(t["start_s"] * SR), int(t["end_s"] * SR)
        sf.write(root / f"u{i}_long.wav", conv[a:b], SR)
        quiet = np.zeros(SR // 2, np.float32)
        short = np.concatenate([quiet, conv[a:a + int(0.7 * SR)], quiet])
        sf.write(root / f"u{i}_short.wav", short, SR)
        noise = rng.standard_normal(len(short)) * np.sqrt(np.mean(short ** 2)) * 0.3
        sf.write(root / f"u{i}_noisy.wav", (short + noise).astype(np.float32), SR)
    script = demo["script"]
    for i, t in enumerate(script):
        for j, u in enumerate(script):
            if i < j:
                lab = int(t["speaker"] == u["speaker"])
                lines.append(f"{lab} u{i}_long.wav u{j}_long.wav")
                lines.append(f"{lab} u{i}_long.wav u{j}_short.wav")
                lines.append(f"{lab} u{i}_long.wav u{j}_noisy.wav")
    (root / "trials.txt").write_text("\n".join(lines) + "\n")
    return root, lines


def test_eval_scores_each_trial_with_the_model_that_decides_it(routed, demo_trials):
    from rtverify.evaluation import evaluate

    root, lines = demo_trials
    r = evaluate(root / "trials.txt", root, routed)
    expert, below = routed.short_expert
    assert r["short_expert"] == expert.model_id
    assert 0 < r["trials_by_short_expert"] < r["trials"]
    # the short clips in quiet, not the same clips in noise (under the expert's SNR bar)
    assert r["trials_by_short_expert"] == sum("short" in ln.split()[2] for ln in lines)
    assert r["short_expert_min_snr_db"] == routed.info.short_expert_min_snr_db
    assert 0.0 <= r["eer"] <= 0.5 and r["eer"] == pytest.approx(r["eer_margin"])


def test_margin_parts_reports_what_eval_does(routed, demo_trials):
    """tools.margin_parts' "margins" is eval's EER for a routed model, and it routes the same
    trials; "no expert" decides every trial by the model."""
    from rtverify.evaluation import evaluate
    from tools.margin_parts import parts

    root, lines = demo_trials
    r = evaluate(root / "trials.txt", root, routed)
    p = parts(routed, root / "trials.txt", root, None)
    assert p["routed"] == r["trials_by_short_expert"]
    assert p["margins"] == pytest.approx(100 * r["eer"])
    assert len(p["thirds"]) == 3 and all(lo <= hi for lo, hi, _, _ in p["thirds"])


@pytest.mark.parametrize("block, problem", [
    ({"model": "default-short"}, "short_expert must be"),
    ({"model": "default-short", "below_speech_s": 0}, "below_speech_s"),
    ({"model": "default-short", "below_speech_s": 0.8, "min_snr_db": 500}, "min_snr_db"),
    ({"model": "default-short", "below_speech_s": 0.8, "other": 1}, "short_expert must be"),
    ("default-short", "short_expert must be"),
])
def test_a_bad_short_expert_block_is_one_line(tmp_path, block, problem):
    copy_model(MODELS_DIR / "default.onnx", tmp_path)
    raw = json.loads((MODELS_DIR / "default.json").read_text())
    raw["short_expert"] = block
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=problem) as err:
        EncoderSession(tmp_path / "m.onnx")
    assert "\n" not in str(err.value)


def test_an_expert_that_reads_other_rows_is_refused(tmp_path):
    copy_model(MODELS_DIR / "default.onnx", tmp_path)
    raw = json.loads((MODELS_DIR / "default.json").read_text())
    raw["short_expert"] = {"model": "campp", "below_speech_s": 1.0}
    (tmp_path / "m.json").write_text(json.dumps(raw))
    s = EncoderSession(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="must read the same rows"):
        s.short_expert


def test_the_expert_is_loaded_once_per_session(routed):
    assert routed.short_expert[0] is routed.short_expert[0]


def test_a_voice_carries_only_the_companions_asked_for(routed, voice):
    """A large gallery keeps one vector per voice and model it scores with, not every shipped
    model's."""
    assert set(voice.models) > set(routed.companion_ids)  # enrolment stored them all
    assert set(voice.vector(routed.companion_ids).companions) == set(routed.companion_ids)
    assert voice.vector().companions == {}


def test_the_model_sets_its_experts_thresholds(routed):
    """The default's sidecar gives its expert the thresholds calibrated at the default's own
    false-accept rate (``short_expert.decision``), without SNR offsets; the expert loaded as a
    model of its own keeps its own."""
    expert, below = routed.short_expert
    block = routed.info.raw["short_expert"]["decision"]
    assert expert.info.decision.thresholds_by_speech_s == tuple(
        tuple(p) for p in block["thresholds_by_speech_s"])
    assert expert.info.decision.threshold_offsets_by_snr_db == ()
    alone = EncoderSession("default-short")
    assert alone.model_id == expert.model_id
    assert alone.info.decision.threshold_offsets_by_snr_db != ()
    assert alone.info.decision.thresholds_by_speech_s != expert.info.decision.thresholds_by_speech_s
    # stricter than the expert's own keyword-balanced thresholds at every SNR it decides
    for speech_s in (0.55, 0.65, 0.75):
        for snr in (30.0, 40.0, 60.0):
            assert expert.info.decision.threshold_for(speech_s, snr) > \
                alone.info.decision.threshold_for(speech_s, snr)


def test_the_model_sets_its_experts_scoring(tmp_path, routed):
    """A model's sidecar may give its expert a scoring of its own (``short_expert.score_norm``,
    the cohort beside the expert): the expert scores with it when it decides for that model,
    and plain cosines when loaded as a model of its own. (The shipped default scores its own
    utterances with a probe shift and leaves its expert's cosines as they are.)"""
    from rtverify.core.scoring import Scorer

    assert Scorer.for_model(routed).method == "probe_shift"
    assert Scorer.for_model(routed.short_expert[0]).cohort is None
    for name in ("default.onnx", "default-cohort.npz"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    shutil.copy(MODELS_DIR / "default-short.onnx", tmp_path / "ex.onnx")
    shutil.copy(MODELS_DIR / "default-short.json", tmp_path / "ex.json")
    rng = np.random.default_rng(0)
    cohort = rng.standard_normal((30, 256)).astype(np.float32)
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    np.savez(tmp_path / "ex-cohort.npz", vectors=cohort)
    raw = json.loads((MODELS_DIR / "default.json").read_text())
    raw["short_expert"] = dict(raw["short_expert"], model="./ex.onnx", score_norm={
        "method": "probe_shift", "cohort": "ex-cohort.npz", "top_k": 5, "centre": 0.1})
    (tmp_path / "default.json").write_text(json.dumps(raw))
    expert = EncoderSession(tmp_path / "default.onnx").short_expert[0]
    for_default = Scorer.for_model(expert)
    alone = Scorer.for_model(EncoderSession(tmp_path / "ex.onnx"))
    assert for_default.describe() == "probe_shift (cohort 30, top 5, weight 0.5)"
    assert alone.cohort is None
    a, b = (v / np.linalg.norm(v) for v in rng.standard_normal((2, 256)))
    assert for_default.pair_scores(a, b)[0] != pytest.approx(alone.pair_scores(a, b)[0])


@pytest.mark.parametrize("decision, problem", [
    ({"threshold": 0.9}, "short_expert.decision may hold only"),
    ({"thresholds_by_speech_s": [[0.7, 0.8], [0.5, 0.8]]}, "increasing seconds"),
    ("strict", "short_expert.decision may hold only"),
])
def test_a_bad_expert_decision_block_is_one_line(tmp_path, decision, problem):
    copy_model(MODELS_DIR / "default.onnx", tmp_path)
    raw = json.loads((MODELS_DIR / "default.json").read_text())
    raw["short_expert"] = {"model": "default-short", "below_speech_s": 0.8, "decision": decision}
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=problem) as err:
        EncoderSession(tmp_path / "m.onnx")
    assert "\n" not in str(err.value)
