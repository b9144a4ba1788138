"""The segmenter knows speech from sound (issue 12): non-speech sounds between utterances become
``dropped`` events with a reason, never decisions; speech is still decided as before."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import chunks_of
from rtverify.core.pipeline import Verifier
from rtverify.events import DecisionEvent, SegmentDropped
from tools.room_streams import SOUND_KINDS, make_sound

SR = 16000


def utterances(demo, conversation):
    """The demo conversation's turns as separate arrays, with their speakers."""
    out = []
    for turn in demo["script"]:
        a, b = int(turn["start_s"] * SR), int(turn["end_s"] * SR)
        out.append((turn["speaker"], conversation[a:b]))
    return out


@pytest.fixture(scope="module")
def sound_stream(demo, conversation):
    """Utterances with two sounds of each kind in the gaps, over a -65 dBFS bed."""
    rng = np.random.default_rng(5)
    utts = utterances(demo, conversation)
    parts, truth, pos = [], {"utt": [], "snd": []}, 0

    def add(x):
        nonlocal pos
        parts.append(x + (10 ** (-65 / 20) * rng.standard_normal(len(x))).astype(np.float32))
        pos += len(x)

    add(np.zeros(SR, np.float32))
    kinds = [k for k in SOUND_KINDS for _ in range(2)]
    for i, kind in enumerate(kinds):
        spk, x = utts[i % len(utts)]
        truth["utt"].append((pos / SR, (pos + len(x)) / SR, spk))
        add(x)
        add(np.zeros(int(0.8 * SR), np.float32))
        snd = make_sound(kind, rng, float(rng.uniform(-38, -26)))
        truth["snd"].append((pos / SR, (pos + len(snd)) / SR, kind))
        add(snd)
        add(np.zeros(int(0.8 * SR), np.float32))
    return np.concatenate(parts), truth


def run(session, voiceprints, x, chunk=1600, **kw):
    v = Verifier(session, voiceprints, **kw)
    return list(v.process(chunks_of(x, chunk))), v


def overlaps(e, span):
    return min(e.end_s, span[1]) - max(e.start_s, span[0]) > 0.05


def test_sounds_in_the_gaps_are_dropped_not_decided(session, alice_print, demo, sound_stream):
    x, truth = sound_stream
    events, _ = run(session, {"alice": alice_print}, x)
    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    dropped = [e for e in events if isinstance(e, SegmentDropped)]
    on_sounds = [s for s in truth["snd"] if any(overlaps(d, s) for d in decisions)]
    assert not on_sounds, on_sounds
    # each sound that made a segment at all is reported as dropped, with a reason
    for e in dropped:
        assert e.reason in ("not_speech", "too_short")
    assert sum(e.reason == "not_speech" for e in dropped) >= 5
    assert {e.to_dict()["reason"] for e in dropped} <= {"not_speech", "too_short"}
    # every utterance still gets its decision, and the enrolled speaker is accepted
    for a, b, spk in truth["utt"]:
        mine = [d for d in decisions if overlaps(d, (a, b))]
        assert mine, (a, b, spk)
        if spk == demo["enrolled_speaker"]:
            assert any(d.accepted for d in mine), (a, b)
        else:
            assert not any(d.accepted for d in mine), (a, b, spk)


def test_without_confirmation_the_sounds_were_decided(session, alice_print, sound_stream):
    """The same stream through webrtcvad alone (what listen did before): the test above can
    fail, the sounds do make decisions without the neural stage."""
    from rtverify.core.segmenter import Segmenter

    x, truth = sound_stream
    v = Verifier(session, {"alice": alice_print})
    v.segmenter = Segmenter(v.segmenter.cfg, confirm=None)
    decisions = [e for e in v.process(chunks_of(x, 1600)) if isinstance(e, DecisionEvent)]
    on_sounds = [s for s in truth["snd"] if any(overlaps(d, s) for d in decisions)]
    assert len(on_sounds) >= 4


def test_confirmation_is_chunk_size_invariant(session, alice_print, sound_stream):
    x, _ = sound_stream
    x = x[:20 * SR]
    ref = None
    for chunk in (160, 480, 4096):
        events, _ = run(session, {"alice": alice_print}, x, chunk=chunk)
        got = [(type(e).__name__, round(e.start_s, 3), getattr(e, "reason", None),
                round(getattr(e, "score", 0) or 0, 5))
               for e in events if isinstance(e, (DecisionEvent, SegmentDropped))]
        if ref is None:
            ref = got
        assert got == ref, chunk


def test_silero_runs_only_until_confirmed(session, conversation):
    events, v = run(session, {}, conversation)
    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    speech_s = sum(d.speech_s for d in decisions)
    assert len(decisions) >= 6
    run_s = v.segmenter._confirmer.vad.frames_run * 0.032
    assert run_s < 0.25 * speech_s, (run_s, speech_s)


def test_streaming_silero_equals_one_call(conversation):
    from rtverify.core.vad import SileroVAD

    x = conversation[:5 * SR]
    whole = SileroVAD().push(x, pad=True)
    v = SileroVAD()
    pieces = [v.push(x[i:i + 700]) for i in range(0, len(x), 700)]
    pieces.append(v.push(np.zeros(0, np.float32), pad=True))
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)
    assert (whole >= 0.5).mean() > 0.4  # speech is heard as speech


def test_quiet_white_noise_is_no_utterance(session, alice_print):
    rng = np.random.default_rng(9)
    x = make_sound("quiet_noise", rng, -55.0, 6.0)
    x = np.concatenate([(1e-4 * rng.standard_normal(2 * SR)).astype(np.float32), x])
    events, _ = run(session, {"alice": alice_print}, x)
    assert not [e for e in events if isinstance(e, DecisionEvent)]


def test_keep_everything_settings_have_no_neural_veto(sound_stream):
    """eval's second look at a recording listen finds nothing in uses min_speech_ms=1: "nothing
    dropped" holds for the neural stage too."""
    from conftest import run_segmenter
    from rtverify.config import SegmenterConfig

    x, _ = sound_stream
    ends, _ = run_segmenter(x[:30 * SR])
    assert any(e.drop_reason == "not_speech" for e in ends)
    ends, _ = run_segmenter(x[:30 * SR], SegmenterConfig(min_speech_ms=1))
    assert ends and not any(e.dropped for e in ends)
