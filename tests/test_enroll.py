"""Enrolment: the voiceprint definition, per-take feedback on a live stream, recordings."""

import numpy as np
import pytest
import soundfile as sf

from rtverify.core.encoder import l2_normalize
from rtverify.apps.enroll import Enrolment, EnrollSettings, Take, enroll_files, enroll_live
from rtverify.errors import InputError, NotEnoughSpeech
from rtverify.core.pipeline import embed_recording
from rtverify.io.sources import FileSource

from conftest import DEMO, SR, chunks_of, copy_model, read16k

SIL = np.zeros(SR, dtype=np.float32)


@pytest.fixture(scope="module")
def clips(demo):
    e1, e2 = (read16k(DEMO / f) for f in demo["enroll"])
    conv = read16k(DEMO / demo["conversation"])
    line = next(ln for ln in demo["script"] if ln["speaker"] != demo["enrolled_speaker"])
    stranger = conv[int((line["start_s"] - 0.2) * SR):int((line["end_s"] + 0.2) * SR)]
    return {"e1": e1, "e2": e2, "stranger": stranger}


class Recorder:
    """An EnrollView that keeps what it was told."""

    def __init__(self):
        self.levels, self.starts, self.takes = 0, 0, []

    def level(self, status):
        self.levels += 1

    def speaking(self, start_s):
        self.starts += 1

    def take(self, take, problem, enrol):
        self.takes.append((take, problem, len(enrol.takes)))


def live(session, x, **kw):
    view = Recorder()
    settings = EnrollSettings(**{"takes": 3, "min_speech_s": 30.0, **kw})
    enrol = enroll_live(session, chunks_of(x.astype(np.float32), 480), settings, view)
    return enrol, view.takes, view


def problems(takes):
    return [p for _, p, _ in takes]


def test_live_takes_make_the_voiceprint_and_stop_when_enough(session, clips):
    blip = clips["e1"][int(0.9 * SR):int(1.6 * SR)]  # well under a second of speech
    x = np.concatenate([SIL, clips["e2"], SIL, blip, SIL, clips["e1"][: int(3.3 * SR)], SIL,
                        clips["e2"], SIL])
    enrol, takes, view = live(session, x, takes=2, min_speech_s=4.0)
    assert enrol.done and len(enrol.takes) == 2 and enrol.speech_s >= 4.0
    # the blip between the two good takes is refused with the reason
    assert problems(takes)[0] is None and "too short" in problems(takes)[1]
    assert problems(takes)[2] is None and len(takes) == 3  # stopped as soon as it was enough
    kept = [t for t, p, _ in takes if p is None]
    assert np.allclose(enrol.vector(), l2_normalize(np.mean([t.vector for t in kept], axis=0)))
    assert view.levels > 50 and view.starts >= 3


def test_clipped_take_is_refused(session, clips):
    _, takes, _ = live(session, np.concatenate([SIL, np.clip(clips["e2"] * 40, -1, 1), SIL]))
    assert "clipped" in problems(takes)[0]


def test_quiet_take_is_refused(session, clips):
    quiet = clips["e2"] * 10 ** (-18 / 20)  # speech near -50 dBFS: heard, but too quiet
    _, takes, _ = live(session, np.concatenate([SIL, quiet, SIL]))
    assert "too quiet" in problems(takes)[0]


def test_noisy_take_is_refused(session, clips):
    x = np.concatenate([SIL, SIL, clips["e2"], SIL])
    x = x + np.random.default_rng(0).normal(0, 10 ** (-42 / 20), len(x))
    _, takes, _ = live(session, x)
    assert "noisy" in problems(takes)[0]
    # the same speech over a quiet background passes
    quiet = np.concatenate([SIL, SIL, clips["e2"], SIL])
    quiet = quiet + np.random.default_rng(0).normal(0, 10 ** (-70 / 20), len(quiet))
    _, takes, _ = live(session, quiet)
    assert problems(takes)[0] is None


def test_inconsistent_take_asks_to_say_it_again(session, clips):
    x = np.concatenate([SIL, clips["e2"], SIL, clips["stranger"], SIL])
    enrol, takes, _ = live(session, x)
    assert problems(takes)[0] is None
    assert "not consistent" in problems(takes)[1] and "again" in problems(takes)[1]
    assert len(enrol.takes) == 1 and enrol.refused == 1 and not enrol.done


def test_live_enrolment_times_out(session, clips):
    ticks = iter(range(10 ** 6))
    view = Recorder()
    x = np.concatenate([SIL, clips["e2"], SIL] * 3)
    enrol = enroll_live(session, chunks_of(x, 480), EnrollSettings(timeout_s=50), view,
                        clock=lambda: next(ticks))
    assert not enrol.done and "of 3 takes" in enrol.shortfall()


def test_judge_order_and_consistency_bar():
    s = EnrollSettings()
    enrol = Enrolment(s, 3, 10.0)
    v = l2_normalize(np.ones(4))
    ok = Take(v, 2.0, -30.0, False, "a", 40.0)
    assert enrol.offer(ok) is None
    orth = Take(l2_normalize(np.array([1.0, -1, 1, -1])), 2.0, -30.0, False, "b", 40.0)
    assert "consistent" in enrol.offer(orth)
    assert "too short" in enrol.judge(Take(v, 0.5, -80.0, True, "c", 1.0))  # first reason wins
    assert "clipped" in enrol.judge(Take(v, 2.0, -80.0, True, "c", 1.0))
    assert "quiet" in enrol.judge(Take(v, 2.0, -80.0, False, "c", 1.0))
    assert "noisy" in enrol.judge(Take(v, 2.0, -30.0, False, "c", 1.0))
    assert enrol.judge(Take(v, 2.0, -30.0, False, "c", None)) is None  # recordings: no SNR


def test_files_are_takes_averaged(session, demo):
    paths = [DEMO / f for f in demo["enroll"]]
    enrol = enroll_files(session, paths)
    takes = [embed_recording(session, FileSource(p)).vector for p in paths]
    assert np.allclose(enrol.vector(), l2_normalize(np.mean(takes, axis=0)), atol=1e-6)
    assert len(enrol.takes) == 2 and 3.0 <= enrol.speech_s < 9.0
    assert enrol.speech_s == pytest.approx(sum(t.speech_s for t in enrol.takes))


def test_recordings_are_streamed_again_not_held_whole(session, demo, clips):
    """Each pass over a recording (the several-voices check, the telephone band, the other
    shipped models) reads the file afresh: a take keeps no audio. Holding the file's chunks
    made ``enroll --input`` of an hour at 8 kHz peak at 300 MB (tests/test_bad_input_hour.py
    allows 40 MB more than for 10 ms of the same file)."""
    from rtverify.apps.enroll import _narrowband_chunks
    from rtverify.core.scoring import narrowband_audio

    enrol = enroll_files(session, [DEMO / f for f in demo["enroll"]])
    assert all(t.audio is None and t.replay is not None for t in enrol.takes)
    x = clips["e1"]
    whole = narrowband_audio(x)
    for size in (480, 7777, len(x)):  # streamed, the telephone band is the same samples
        got = list(_narrowband_chunks(chunks_of(x, size)))
        assert np.allclose(np.concatenate([c.samples for c in got]), whole, atol=1e-6)
        assert len(np.concatenate([c.samples for c in got])) == len(x)
        assert [c.start_s for c in got] == pytest.approx(
            np.cumsum([0] + [len(c.samples) for c in got[:-1]]) / SR)


def test_a_file_of_another_speaker_is_refused(tmp_path, session, demo, clips):
    wrong = tmp_path / "wrong.wav"
    sf.write(wrong, clips["stranger"], SR)
    paths = [DEMO / f for f in demo["enroll"]] + [wrong]
    with pytest.raises(InputError, match="wrong.wav: does not sound like the other"):
        enroll_files(session, paths)


def test_too_little_speech_in_files(tmp_path, session, demo, clips):
    short = tmp_path / "short.wav"
    sf.write(short, clips["e1"][: int(1.6 * SR)], SR)
    with pytest.raises(NotEnoughSpeech, match=r"short.wav: holds \d\.\d s of speech, 3.0 s are "
                       "needed"):  # the error names the file: it is all the user sees
        enroll_files(session, [short])
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR * 2, dtype=np.float32), SR)
    with pytest.raises(NotEnoughSpeech, match="silent.wav: no speech"):
        enroll_files(session, [DEMO / demo["enroll"][0], silent])


def test_the_consistency_bar_is_the_models_own(tmp_path, session):
    """Cosines are each model's own scale: a sidecar's ``enrolment.consistency`` is the bar for
    that model (CAM++ ships 0.40), the default LSTM's is 0.70, a bar given explicitly wins, and a
    broken block is a one-line model error."""
    import json
    import shutil

    from rtverify.apps.enroll import CONSISTENCY
    from rtverify.core.encoder import EncoderSession
    from rtverify.errors import ModelError

    # the LSTM without its own bar: 0.70; the room-trained default carries 0.75 (tools.enrol_bars)
    assert EnrollSettings().for_model(EncoderSession("default-short")).consistency == \
        CONSISTENCY == 0.70
    assert EnrollSettings().for_model(session).consistency == \
        session.info.raw["enrolment"]["consistency"] == 0.75
    assert EnrollSettings().for_model(EncoderSession("campp")).consistency == 0.40
    copy_model(session.path, tmp_path)
    for block, want in (({"consistency": 0.55}, 0.55), ({"consistency": "high"}, None),
                        ({"consistency": 1.5}, None), ("oops", None)):
        (tmp_path / "m.json").write_text(json.dumps(dict(session.info.raw, enrolment=block)))
        other = EncoderSession(tmp_path / "m.onnx")
        if want is None:
            with pytest.raises(ModelError, match="invalid enrolment block") as err:
                EnrollSettings().for_model(other)
            assert "\n" not in str(err.value)
        else:
            assert EnrollSettings().for_model(other).consistency == want
            assert EnrollSettings(consistency=0.6).for_model(other).consistency == 0.6
