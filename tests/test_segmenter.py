import numpy as np
import pytest

from rtverify.config import SegmenterConfig
from rtverify.core.segmenter import Segmenter, SegmentEnd, SegmentStart

from conftest import DEMO, read16k, run_segmenter

SR = 16000


@pytest.fixture(scope="module")
def speech():
    return read16k(DEMO / "enroll_1.flac")


def run(x, cfg=SegmenterConfig()):
    return run_segmenter(x, cfg)


def noise(seconds, dbfs, seed=0):
    return np.random.default_rng(seed).normal(0, 10 ** (dbfs / 20), int(seconds * SR)).astype(np.float32)


def silence(seconds):
    return np.zeros(int(seconds * SR), dtype=np.float32)


def test_digital_silence_gives_nothing():
    ends, events = run(silence(10))
    assert events == []


def test_quiet_steady_noise_gives_no_segment_though_webrtcvad_alone_would():
    x = noise(20, -55)
    ungated = SegmenterConfig(aggressiveness=0, gate_margin_db=-200, gate_min_dbfs=-200)
    assert run(x, ungated)[0], "premise: webrtcvad alone finds 'speech' in -55 dBFS noise"
    for mode in range(4):
        ends, events = run(x, SegmenterConfig(aggressiveness=mode))
        assert events == [], f"mode {mode}"


def test_silence_between_utterances_is_not_speech(speech):
    """Speech, then quiet noise: the noise after the utterance never opens a segment."""
    x = np.concatenate([noise(2, -55, 1), speech[:3 * SR] + noise(3, -55, 2), noise(8, -55, 3)])
    ends, _ = run(x)
    assert len(ends) >= 1
    assert all(e.start_s >= 1.5 and e.end_s <= 5.6 for e in ends), [(e.start_s, e.end_s) for e in ends]


def test_speech_over_steady_noise_is_still_found(speech):
    rms = np.sqrt(np.mean(speech ** 2))
    snr_db = 10
    bg = noise(len(speech) / SR + 6, 20 * np.log10(rms) - snr_db, 4)
    x = bg.copy()
    x[3 * SR:3 * SR + len(speech)] += speech
    ends = [e for e in run(x)[0] if not e.dropped]
    clean = [e for e in run(np.concatenate([silence(3), speech]))[0] if not e.dropped]

    def covered(segs):
        t = np.arange(0, len(x) / SR, 0.01)
        return np.any([(t >= e.start_s) & (t < e.end_s) for e in segs], axis=0)

    both = covered(ends) & covered(clean)
    assert both.sum() > 0.75 * covered(clean).sum()  # the noisy run finds the same speech
    assert all(e.start_s > 2.5 for e in ends)  # and nothing in the noise before it


def test_clicks_do_not_start_a_segment():
    x = silence(10) + noise(10, -70)
    for t in np.arange(0.5, 10, 0.7):
        i = int(t * SR)
        x[i:i + 80] = np.hanning(80) * 0.9  # 5 ms click
    assert run(x)[0] == []


def test_short_pauses_stay_inside_long_pauses_split(speech):
    a, b = speech[: int(1.5 * SR)], speech[int(1.5 * SR): 3 * SR]
    short = np.concatenate([silence(0.5), a, silence(0.25), b, silence(1)])
    long = np.concatenate([silence(0.5), a, silence(1.2), b, silence(1)])
    assert len([e for e in run(short)[0] if not e.dropped]) == 1
    assert len([e for e in run(long)[0] if not e.dropped]) == 2


def test_long_speech_is_cut_at_max_segment_length(speech):
    cfg = SegmenterConfig(max_segment_s=3.0, pause_ms=2000)  # no pause in it ends a segment
    x = np.concatenate([speech] * 3)  # ~15 s of reading
    ends, _ = run(x, cfg)
    assert len(ends) >= 4
    assert all(e.end_s - e.start_s <= 3.0 + 1e-6 for e in ends)
    assert any(e.reason == "max_length" for e in ends)


def test_segments_carry_their_pre_roll_and_end_reason(speech):
    x = np.concatenate([silence(2), speech[:2 * SR], silence(2)])
    ends, events = run(x)
    starts = [e for e in events if isinstance(e, SegmentStart)]
    assert len(starts) == len(ends) >= 1
    assert 1.6 <= ends[0].start_s <= 2.2
    assert ends[-1].reason in ("pause", "end_of_stream")


def test_audio_events_are_exactly_the_segment(speech):
    from rtverify.core.segmenter import SegmentAudio

    x = np.concatenate([silence(1), speech[:2 * SR], silence(2)])
    ends, events = run(x)
    n = sum(len(e.samples) for e in events if isinstance(e, SegmentAudio))
    assert n == pytest.approx(sum(e.end_s - e.start_s for e in ends) * SR, abs=1)


def test_clipped_speech_is_flagged(speech):
    x = np.clip(np.concatenate([silence(1), speech[:3 * SR] * 30, silence(1)]), -1, 1)
    ends, _ = run(x)
    assert ends and all(e.clipped for e in ends if not e.dropped)
    clean, _ = run(np.concatenate([silence(1), speech[:3 * SR], silence(1)]))
    assert clean and not any(e.clipped for e in clean)


def test_full_scale_square_wave_is_flagged_or_ignored():
    t = np.arange(5 * SR) / SR
    x = np.sign(np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    ends, _ = run(x)
    assert all(e.clipped for e in ends)


def test_frame_size_is_checked():
    with pytest.raises(ValueError, match="480"):
        Segmenter().push(np.zeros(100, dtype=np.float32), 0.0)


def test_floor_quantile_is_numpys_to_the_bit():
    from rtverify.core.segmenter import _FloorTracker

    rng = np.random.default_rng(5)
    for maxlen in (10, 37, 100):
        levels = list(rng.normal(-50, 12, 400)) + [-60.0] * 20 + list(rng.integers(-70, -20, 200) * 1.0)
        tracker, window = _FloorTracker([-60.0, -60.0], maxlen), [-60.0, -60.0]
        for level in levels:
            tracker.add(float(level))
            window = (window + [float(level)])[-maxlen:]
            for q in (0.1, 0.25, 0.5, 0.9):
                assert tracker.quantile(q) == float(np.quantile(window, q))


def test_frames_in_blocks_give_the_same_events_and_state_as_one_by_one(speech):
    x = np.concatenate([silence(1), speech[:3 * SR], noise(2, -50, 7), speech[3 * SR:]])
    one, block = Segmenter(), Segmenter()
    n = one.frame_samples
    x = x[:len(x) // n * n].astype(np.float32)
    frames = x.reshape(-1, n)
    ev1, st1 = [], []
    for i, f in enumerate(frames):
        ev1.append(one.push(f, i * n / SR))
        st1.append((one.in_speech, one.noise_floor_dbfs))
    ev2, st2 = [], []
    for a in range(0, len(frames), 17):  # blocks of 17 frames, the last one shorter
        blk = frames[a:a + 17]
        for ev in block.push_frames(blk, [(a + i) * n / SR for i in range(len(blk))]):
            ev2.append(ev)
            st2.append((block.in_speech, block.noise_floor_dbfs))
    assert st1 == st2

    def plain(evs):
        return [[(type(e).__name__, e.samples.tolist() if isinstance(e, SegmentAudio) else e)
                 for e in fr] for fr in evs]

    from rtverify.core.segmenter import SegmentAudio

    assert plain(ev1) == plain(ev2)
    assert any(isinstance(e, SegmentEnd) for fr in ev1 for e in fr)


def _flush_with_tail(x, cfg=SegmenterConfig()):
    """``x`` through a Segmenter whole frames at a time, its last partial frame given to flush."""
    from rtverify.core.segmenter import SegmentAudio

    seg = Segmenter(cfg)
    n = seg.frame_samples
    whole = len(x) // n * n
    events = []
    for i in range(0, whole, n):
        events += seg.push(x[i:i + n].astype(np.float32), i / SR)
    events += seg.flush(x[whole:].astype(np.float32))
    ends = [e for e in events if isinstance(e, SegmentEnd)]
    audio = np.concatenate([e.samples for e in events if isinstance(e, SegmentAudio)])
    return ends, audio


def test_a_recording_that_ends_in_speech_keeps_its_last_partial_frame(speech):
    """A 0.3 s spoken digit loses nothing of its end: the samples after the last whole frame
    belong to a segment still open when the stream ends."""
    x = np.concatenate([silence(0.3), speech[:int(1.2 * SR) + 237]])  # ends mid-frame, in speech
    ends, audio = _flush_with_tail(x)
    assert len(ends) == 1 and not ends[0].dropped
    assert ends[0].end_s == pytest.approx(len(x) / SR, abs=1e-6)
    assert np.array_equal(audio[-237:], x[-237:])
    assert len(audio) == round((ends[0].end_s - ends[0].start_s) * SR)


def test_a_partial_frame_after_the_post_roll_is_not_kept(speech):
    x = np.concatenate([silence(0.3), speech[:int(1.2 * SR)], silence(0.3), np.zeros(237, np.float32)])
    ends, audio = _flush_with_tail(x)
    assert len(ends) == 1
    assert ends[0].end_s < len(x) / SR - 0.1  # the segment ended its post-roll before
    assert len(audio) == round((ends[0].end_s - ends[0].start_s) * SR)


def test_a_recording_is_not_split_at_short_pauses_but_live_audio_is(speech):
    """``for_recording``: where a whole recording is pooled into one embedding, a pause under
    ``recording_pause_ms`` does not end the segment; live settings (``pause_ms``) still do, and
    a longer pause splits a recording too."""
    a, b = speech[: int(1.5 * SR)], speech[int(1.5 * SR): 3 * SR]
    one_s = np.concatenate([silence(0.5), a, silence(1.0), b, silence(1)])
    three_s = np.concatenate([silence(0.5), a, silence(3.0), b, silence(1)])
    live, rec = SegmenterConfig(), SegmenterConfig().for_recording()
    kept = lambda x, cfg: [e for e in run(x, cfg)[0] if not e.dropped]  # noqa: E731
    assert rec.pause_ms == live.recording_pause_ms > live.pause_ms
    assert len(kept(one_s, live)) == 2
    assert len(kept(one_s, rec)) == 1
    assert len(kept(three_s, rec)) == 2
    assert SegmenterConfig(pause_ms=2500).for_recording().pause_ms == 2500
