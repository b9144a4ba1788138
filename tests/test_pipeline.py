"""The streaming core end to end on recorded streams: a two-speaker conversation with pauses."""

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from rtverify.core.pipeline import Verifier, embed_recording
from rtverify.events import DecisionEvent, Provisional, SegmentDropped, SpeechStarted
from rtverify.io.sources import FileSource

from conftest import DEMO, chunks_of
from rtverify.apps.demo import speaker_at

SR = 16000


def decisions(session, voiceprints, chunks, **kw):
    events = list(Verifier(session, voiceprints, **kw).process(chunks))
    return [e for e in events if isinstance(e, DecisionEvent)], events


def test_enrolled_speaker_accepted_others_rejected(session, demo, conversation, alice_print):
    decs, events = decisions(session, {"alice": alice_print}, chunks_of(conversation, 4096))
    decs = [d for d in decs if d.reason != "too_short"]
    assert len(decs) >= len(demo["script"])
    for d in decs:
        truth = speaker_at(demo["script"], d.start_s, d.end_s)
        assert truth is not None, f"decision in silence at {d.start_s}-{d.end_s}"
        want = truth == demo["enrolled_speaker"]
        assert d.accepted == want, (truth, d.to_dict())
        assert (d.speaker == "alice") == want
    # every line of the script got at least one decision
    for line in demo["script"]:
        assert any(speaker_at(demo["script"], d.start_s, d.end_s) == line["speaker"]
                   and d.start_s < line["end_s"] and d.end_s > line["start_s"] for d in decs)


def test_identification_says_unknown_for_strangers(session, demo, conversation, alice_print):
    rng = np.random.default_rng(0)
    other = rng.standard_normal(session.dim).astype(np.float32)
    other /= np.linalg.norm(other)
    decs, _ = decisions(session, {"alice": alice_print, "bob": other}, chunks_of(conversation, 4096))
    strangers = [d for d in decs if speaker_at(demo["script"], d.start_s, d.end_s)
                 != demo["enrolled_speaker"]]
    assert strangers and all(d.speaker is None for d in strangers)
    assert all(set(d.scores) == {"alice", "bob"} for d in decs)


def test_events_come_in_order(session, conversation, alice_print):
    _, events = decisions(session, {"alice": alice_print}, chunks_of(conversation, 4096))
    open_seg = False
    for e in events:
        if isinstance(e, SpeechStarted):
            assert not open_seg
            open_seg = True
        elif isinstance(e, Provisional):
            assert open_seg and e.t_s >= e.start_s
        elif isinstance(e, (DecisionEvent, SegmentDropped)):
            assert open_seg
            open_seg = False
    assert not open_seg
    assert any(isinstance(e, Provisional) for e in events)


@pytest.fixture(scope="module")
def by_chunk(session, conversation, alice_print):
    return {size: decisions(session, {"alice": alice_print}, chunks_of(conversation, size))[0]
            for size in (160, 480, 4096)}


@pytest.mark.parametrize("size", [160, 480])
def test_chunk_size_does_not_change_segments_or_scores(by_chunk, size):
    ref, got = by_chunk[4096], by_chunk[size]
    assert [(d.start_s, d.end_s, d.speech_s) for d in got] == \
        [(d.start_s, d.end_s, d.speech_s) for d in ref]
    for a, b in zip(got, ref):
        assert a.scores["alice"] == pytest.approx(b.scores["alice"], abs=1e-5)
        assert a.accepted == b.accepted


def boundaries(session, path):
    decs, _ = decisions(session, {}, FileSource(path))
    return [(d.start_s, d.end_s) for d in decs]


@pytest.mark.parametrize("rate,channels", [(44100, 2), (8000, 1)])
def test_other_rates_and_channels_give_the_same_boundaries(tmp_path, session, conversation,
                                                           rate, channels):
    g = np.gcd(rate, SR)
    x = resample_poly(conversation, rate // g, SR // g).astype(np.float32)
    if channels == 2:
        x = np.stack([x, 0.8 * x], axis=1)
    path = tmp_path / f"conv_{rate}_{channels}.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    ref = boundaries(session, DEMO / "conversation.flac")
    got = boundaries(session, path)
    assert len(got) == len(ref), (got, ref)
    for (a0, a1), (b0, b1) in zip(got, ref):
        assert abs(a0 - b0) <= 0.030 + 1e-9 and abs(a1 - b1) <= 0.030 + 1e-9, (got, ref)


def test_silence_and_noise_give_no_decisions(session, alice_print):
    silence = np.zeros(SR * 20, dtype=np.float32)
    noise = np.random.default_rng(1).normal(0, 10 ** (-55 / 20), SR * 20).astype(np.float32)
    for x in (silence, noise):
        decs, events = decisions(session, {"alice": alice_print}, chunks_of(x, 4096))
        assert decs == [] and not any(isinstance(e, SpeechStarted) for e in events)


def test_clipped_speech_decisions_are_flagged(session, demo, alice_print):
    x = np.concatenate([c.samples for c in FileSource(DEMO / demo["enroll"][0])])
    loud = np.clip(x * 40, -1, 1)
    decs, _ = decisions(session, {"alice": alice_print}, chunks_of(loud, 4096))
    assert decs and all(d.clipped for d in decs if d.reason != "too_short")


def test_embed_recording_pools_every_utterance(session, demo):
    rec = embed_recording(session, FileSource(DEMO / demo["enroll"][0]))
    assert rec.vector is not None and abs(np.linalg.norm(rec.vector) - 1) < 1e-5
    assert rec.n_windows == sum(d.n_windows for d in rec.decisions) >= 2
    assert 1.0 < rec.speech_s < 5.0


def test_a_recording_ending_in_speech_is_decided_to_its_last_sample(session, demo):
    """The samples after the last whole VAD frame are part of an utterance the stream ends in."""
    from conftest import read16k

    x = read16k(DEMO / demo["enroll"][0])
    x = x[:int(1.6 * SR) + 301]  # cut mid-word, mid-frame
    events = list(Verifier(session, {}, provisional=False).process(chunks_of(x, 1000)))
    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    assert decisions and decisions[-1].end_s == pytest.approx(len(x) / SR, abs=1e-4)


def test_a_recording_is_embedded_across_its_short_pauses(session, demo):
    """``listen`` decides each utterance after a 450 ms pause; a recording pooled into one
    embedding (enrolment, verify, eval) is embedded across pauses under 2 s, as one stretch."""
    from conftest import read16k

    x = read16k(DEMO / demo["enroll"][0])[:3 * SR]
    gap = np.zeros(SR, dtype=np.float32)
    x = np.concatenate([gap, x[:int(1.5 * SR)], gap, x[int(1.5 * SR):], gap])
    live = [e for e in Verifier(session, {}, provisional=False).process(chunks_of(x, 1600))
            if isinstance(e, DecisionEvent)]
    rec = embed_recording(session, chunks_of(x, 1600))
    assert len(live) == 2
    assert len(rec.decisions) == 1
    assert rec.decisions[0].start_s < live[0].end_s < live[1].start_s < rec.decisions[0].end_s


def test_json_form_of_a_decision(session, conversation, alice_print):
    decs, _ = decisions(session, {"alice": alice_print}, chunks_of(conversation, 4096))
    d = decs[0].to_dict()
    for key in ("event", "start_s", "end_s", "speech_s", "speaker", "score", "accepted", "scores"):
        assert key in d
    assert d["event"] == "decision"
    import json

    json.dumps(d)  # serialisable
