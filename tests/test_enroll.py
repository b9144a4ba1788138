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
    from rtverify.core.scoring import narrowband_audio, narrowband_chunks

    enrol = enroll_files(session, [DEMO / f for f in demo["enroll"]])
    assert all(t.audio is None and t.replay is not None for t in enrol.takes)
    x = clips["e1"]
    whole = narrowband_audio(x)
    for size in (480, 7777, len(x)):  # streamed, the telephone band is the same samples
        got = list(narrowband_chunks(chunks_of(x, size)))
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


def test_one_recording_given_twice_is_refused_not_counted_twice(tmp_path, session, clips):
    """2.2 s of speech given twice (the same path, another path to it, or a copy) had been
    enrolled as two takes and 4.4 s, past the 3 s --min-speech."""
    import shutil

    short = tmp_path / "short.wav"
    sf.write(short, clips["e1"][: int(2.6 * SR)], SR)
    with pytest.raises(NotEnoughSpeech, match="3.0 s are needed"):
        enroll_files(session, [short])
    shutil.copy(short, tmp_path / "copy.wav")
    for again in (short, tmp_path / "." / "short.wav", tmp_path / "copy.wav"):
        with pytest.raises(InputError, match=f"{again.name}: the same recording as "
                           f".*short.wav; give each take once"):
            enroll_files(session, [short, again])


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


def _voice(name, model_id, vec, *, n_takes=2, narrowband=None, models=None, speech_s=6.0):
    from rtverify.store.voiceprints import Voiceprint

    return Voiceprint(name=name, model_id=model_id, embedding=l2_normalize(vec).astype(np.float32),
                      created="2026-01-01T00:00:00Z", speech_s=speech_s, n_takes=n_takes,
                      narrowband=narrowband, models=models)


def test_add_keeps_what_only_the_old_voice_lacks_or_has(session, clips):
    """Adding to a voiceprint made before band-matched scoring (no narrowband vector) leaves it
    without one (the new takes alone are not the voice), keeps another model's vector that the
    new takes give none of, and leaves the first enrolment's date; a voice that holds nothing
    for the session's model is refused."""
    from rtverify.apps.enroll import add_to_voiceprint
    from rtverify.errors import StoreError

    enrol = enroll_files(session, [DEMO / "enroll_2.flac"], min_speech_s=1.0)
    first = embed_recording(session, FileSource(DEMO / "enroll_1.flac")).vector
    other = l2_normalize(np.arange(1, 9, dtype=np.float32))
    old = _voice("bob", session.model_id, first, n_takes=1, models={"other-1": (other, None)})
    new = add_to_voiceprint(old, enrol, session)
    assert new.narrowband is None and new.created == old.created and new.n_takes == 2
    assert np.array_equal(new.models["other-1"][0], other)
    want = l2_normalize(first + enrol.takes[0].vector)
    assert float(np.dot(new.embedding, want)) > 0.99999
    # enrolled with another model, viewed from it: the file keeps its own model first
    flipped = _voice("bob", "other-1", other, n_takes=1, models={session.model_id: (first, None)})
    new = add_to_voiceprint(flipped, enrol, session)
    assert new.model_id == "other-1" and np.array_equal(new.embedding, other)
    assert float(np.dot(new.models[session.model_id][0], want)) > 0.99999
    with pytest.raises(StoreError, match="re-enroll"):
        add_to_voiceprint(_voice("bob", "other-1", other), enrol, session)


def test_add_is_refused_when_the_voice_changed_meanwhile(tmp_path):
    """Two writers adding to one voice at once: the later one's save would drop the other's
    takes, so it is refused and says so; a voice removed meanwhile is not brought back."""
    from rtverify.apps.enroll import save_added
    from rtverify.errors import StoreError
    from rtverify.store.voiceprints import VoiceprintStore

    store = VoiceprintStore(tmp_path)
    old = _voice("bob", "m-1", np.ones(4))
    store.save(old)
    read = store.load("bob")
    store.save(_voice("bob", "m-1", np.arange(4.0) + 1, n_takes=3), force=True)  # the other add
    with pytest.raises(StoreError, match="changed while takes were being added"):
        save_added(store, read, _voice("bob", "m-1", np.ones(4), n_takes=3))
    assert store.load("bob").n_takes == 3
    read = store.load("bob")
    assert save_added(store, read, _voice("bob", "m-1", np.ones(4), n_takes=4))
    assert store.load("bob").n_takes == 4
    store.remove("bob")
    with pytest.raises(StoreError, match="removed while"):
        save_added(store, read, _voice("bob", "m-1", np.ones(4), n_takes=5))
    assert not store.exists("bob")


def test_live_add_refuses_a_take_unlike_the_voice_as_it_comes(session, clips):
    """enroll --add from a live input: a stranger's take is refused with the reason at once,
    and the next take of the enrolled voice is kept."""
    first = embed_recording(session, FileSource(DEMO / "enroll_1.flac")).vector
    voice = _voice("bob", session.model_id, first, n_takes=1)
    x = np.concatenate([SIL, clips["stranger"], SIL, clips["e2"], SIL])
    view = Recorder()
    enrol = enroll_live(session, chunks_of(x.astype(np.float32), 480),
                        EnrollSettings(takes=1, min_speech_s=1.0), view, voice=voice)
    assert enrol.done and len(enrol.takes) == 1
    said = problems(view.takes)
    assert said[-1] is None and any(p and "does not sound like 'bob' as enrolled" in p
                                    for p in said[:-1]), said
    assert float(np.dot(enrol.takes[0].vector, first)) >= enrol.settings.consistency


def test_live_add_vouched_keeps_a_take_unlike_the_voice(session, clips, caplog):
    """enroll --add --vouch from a live input: the take under the bar is kept (the person
    vouched for it), with a warning that names it and its similarity."""
    first = embed_recording(session, FileSource(DEMO / "enroll_1.flac")).vector
    voice = _voice("bob", session.model_id, first, n_takes=1)
    x = np.concatenate([SIL, clips["stranger"], SIL])
    with caplog.at_level("WARNING", logger="rtverify"):
        enrol = enroll_live(session, chunks_of(x.astype(np.float32), 480),
                            EnrollSettings(takes=1, min_speech_s=1.0), Recorder(), voice=voice,
                            vouched=True)
    assert enrol.done and len(enrol.takes) == 1
    cos = float(np.dot(enrol.takes[0].vector, first))
    assert cos < enrol.settings.consistency
    assert any("as you vouched" in r.getMessage() and f"{cos:.2f}" in r.getMessage()
               for r in caplog.records), caplog.text
