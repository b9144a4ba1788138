"""Enrolment that forgives and warns (issue 12): live takes keep the consistent majority; a
recording of several voices is refused naming the file and the times; the odd file is named;
a WAV/FLAC piped into ``enroll --input -`` is decoded."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from conftest import DEMO, REPO, SR, chunks_of, read16k
from rtverify.apps.enroll import EnrollSettings, enroll_files, enroll_live
from rtverify.errors import InputError

SIL = np.zeros(SR, dtype=np.float32)


@pytest.fixture(scope="module")
def clips(demo):
    e1, e2 = (read16k(DEMO / f) for f in demo["enroll"])
    conv = read16k(DEMO / demo["conversation"])
    strangers = [conv[int((ln["start_s"] - 0.2) * SR):int((ln["end_s"] + 0.2) * SR)]
                 for ln in demo["script"] if ln["speaker"] != demo["enrolled_speaker"]]
    return {"e1": e1, "e2": e2, "strangers": strangers, "conv": conv}


class Recorder:
    def __init__(self):
        self.takes, self.aside = [], []

    def level(self, status):
        pass

    def speaking(self, start_s):
        pass

    def take(self, take, problem, enrol):
        self.takes.append((take, problem))

    def set_aside(self, take, note, enrol):
        self.aside.append((take, note))


BLAME = ("your usual voice", "you ", "wrong")


def test_first_take_of_someone_else_is_set_aside_and_enrolment_goes_on(session, clips,
                                                                       alice_print):
    x = np.concatenate([SIL, clips["strangers"][0], SIL, clips["e2"], SIL, clips["e1"], SIL])
    view = Recorder()
    enrol = enroll_live(session, chunks_of(x, 480), EnrollSettings(takes=2, min_speech_s=3.0),
                        view)
    assert enrol.done, [p for _, p in view.takes]
    # the stranger's take is out, and the voiceprint is alice's
    assert float(enrol.vector() @ alice_print) > 0.9
    assert len(enrol.set_aside) == 1 and len(view.aside) == 1
    stranger_take, note = view.aside[0]
    assert stranger_take.source == view.takes[0][0].source  # the first take
    assert stranger_take.source in note and "set aside" in note
    assert not any(b in note for b in BLAME), note
    # while two takes disagreed, the second waited with a sentence that asks for one more
    problems = [p for _, p in view.takes]
    assert problems[0] is None and "say it again" in problems[1]
    assert not any(b in problems[1] for b in BLAME), problems[1]


def test_one_odd_take_among_good_ones_is_set_aside(session, clips, alice_print):
    # e1 holds two utterances: alice's takes are e2, e1 (two), then a stranger, then e2 again
    x = np.concatenate([SIL, clips["e2"], SIL, clips["e1"], SIL, clips["strangers"][1], SIL,
                        clips["e2"], SIL])
    odd_from = (3 * SR + len(clips["e2"]) + len(clips["e1"])) / SR
    odd_to = odd_from + len(clips["strangers"][1]) / SR
    view = Recorder()
    enrol = enroll_live(session, chunks_of(x, 480), EnrollSettings(takes=4, min_speech_s=3.0),
                        view)
    aside = [(t, p) for t, p in view.takes if p is not None]
    assert len(aside) == 1 and "set aside" in aside[0][1], [p for _, p in view.takes]
    start = float(aside[0][0].source.split("-")[0])
    assert odd_from - 0.5 <= start <= odd_to
    assert not any(b in aside[0][1] for b in BLAME)
    assert enrol.done and len(enrol.takes) == 4
    assert float(enrol.vector() @ alice_print) > 0.9


def test_a_recording_of_several_voices_is_refused_with_the_times(tmp_path, session, clips):
    path = tmp_path / "meeting.wav"
    x = np.concatenate([clips["strangers"][0], SIL[:4000], clips["e2"], SIL[:4000],
                        clips["strangers"][1], SIL[:4000], clips["strangers"][2]])
    sf.write(path, x, SR)
    with pytest.raises(InputError) as err:
        enroll_files(session, [path])
    msg = str(err.value)
    assert msg.startswith(f"{path}: holds more than one voice") and "\n" not in msg
    assert " s" in msg and "-" in msg  # the times that disagree


def test_one_speaker_recording_is_accepted(session, demo):
    enrol = enroll_files(session, [DEMO / demo["enroll"][0]])
    assert len(enrol.takes) == 1


def test_the_odd_recording_is_named(tmp_path, session, demo, clips):
    odd = tmp_path / "cousin.wav"
    sf.write(odd, clips["strangers"][1], SR)
    paths = [DEMO / demo["enroll"][0], odd, DEMO / demo["enroll"][1]]
    with pytest.raises(InputError, match="cousin.wav: does not sound like the other"):
        enroll_files(session, paths)


def test_enroll_from_a_flac_on_stdin(tmp_path, clips):
    buf = io.BytesIO()
    x = np.concatenate([SIL, clips["e1"], SIL, clips["e2"], SIL])
    sf.write(buf, x, SR, format="FLAC")
    env = {**os.environ, "RTVERIFY_HOME": str(tmp_path / "store")}
    proc = subprocess.run([sys.executable, "-m", "rtverify", "enroll", "--name", "pipe",
                           "--input", "-", "--takes", "2", "--min-speech", "3"], cwd=REPO,
                          env=env, input=buf.getvalue(), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "store" / "pipe.json").exists()


def _voices(n_voices, parts_each, within, across, dim=64, seed=0):
    """Unit part embeddings: ``n_voices`` voices whose centres have cosine ``across``, each
    with ``parts_each`` parts at cosine ``within`` to their own centre; and the voice of each."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    shared, own = basis[0], basis[1:n_voices + 1]
    centres = np.sqrt(across) * shared + np.sqrt(1 - across) * own
    vecs, who = [], []
    for p in range(parts_each):
        for v in range(n_voices):
            noise = basis[n_voices + 1 + p * n_voices + v]
            vecs.append(within * centres[v] + np.sqrt(1 - within ** 2) * noise)
            who.append(v)
    return np.array(vecs), who


def _parts(vecs, speech_s=3.0):
    """Decisions as ``several_voices`` reads them: 3 s parts, 4 s apart."""
    return [SimpleNamespace(start_s=4.0 * i, end_s=4.0 * i + 3.0, speech_s=speech_s,
                            embedding=v.astype(np.float32)) for i, v in enumerate(vecs)]


def test_several_voices_in_turn_each_in_several_parts_are_refused():
    """Three people in turn, each cut into two parts by pauses: every part resembles the mean
    of all the others (a blend holding its own voice) well over the bar, as one voice's parts
    do; grouped into voices, three groups. The rule before stop 27 (each part against the mean
    of the rest) enrolled such a recording."""
    from rtverify.apps.enroll import several_voices, voice_groups

    # as measured on three LibriSpeech speakers in turn: parts of one voice 0.86-0.91 apart
    # (cosine), of two voices 0.56-0.69
    vecs, who = _voices(3, 2, within=0.95, across=0.7)
    rest = [float(vecs[i] @ (m := np.delete(vecs, i, 0).sum(0)) / np.linalg.norm(m))
            for i in range(len(vecs))]
    assert min(rest) > 0.75  # what the old rule compared: all of it looked like one voice
    groups = voice_groups(vecs, np.ones(len(vecs)), 0.75)
    assert sorted(sorted(who[i] for i in g) for g in groups) == [[0, 0], [1, 1], [2, 2]]
    msg = several_voices(_parts(vecs), 0.75)
    assert msg is not None and "unlike the rest" in msg
    assert len(re.findall(r"\d-\d+\.\d s", msg)) == 4  # the four parts outside one group


def test_one_voice_in_many_parts_is_one_group():
    from rtverify.apps.enroll import several_voices, voice_groups

    vecs, _ = _voices(1, 8, within=0.9, across=0.55)
    assert len(voice_groups(vecs, np.ones(len(vecs)), 0.75)) == 1
    assert several_voices(_parts(vecs), 0.75) is None


def test_a_stranger_in_two_parts_between_takes_is_named_twice(tmp_path, session, clips):
    """alice, a stranger's first half, alice, the stranger's second half: both of the
    stranger's parts are named (the old rule named one of them)."""
    b = clips["strangers"][1]
    half = len(b) // 2
    gap = SIL[:SR // 2]
    x = np.concatenate([clips["e1"], gap, b[:half], gap, clips["e2"], gap, b[half:]])
    path = tmp_path / "takes.wav"
    sf.write(path, x, SR)
    with pytest.raises(InputError) as err:
        enroll_files(session, [path])
    msg = str(err.value)
    first = (len(clips["e1"]) + len(gap)) / SR
    second = (len(clips["e1"]) + 3 * len(gap) + half + len(clips["e2"])) / SR
    named = [float(a) for a, _ in re.findall(r"(\d+\.\d)-(\d+\.\d) s", msg)]
    assert len(named) == 2, msg
    assert abs(named[0] - first) < 0.5 and abs(named[1] - second) < 0.5, msg


def test_an_mp3_is_decoded_without_the_decoders_chatter(tmp_path, clips):
    """libmpg123 (inside libsndfile) prints its notes on the process's stderr, five to ten
    lines of "error: part2_3_length ... too large" for a sound file: verify of an MP3, by path
    and on stdin, prints the answer and nothing on stderr."""
    mp3 = tmp_path / "probe.mp3"
    sf.write(mp3, np.concatenate([SIL, clips["e2"], SIL]), SR, format="MP3")
    enrol = tmp_path / "enrol.flac"
    sf.write(enrol, clips["e1"], SR)
    env = {**os.environ, "RTVERIFY_HOME": str(tmp_path / "store")}
    cli = [sys.executable, "-m", "rtverify"]
    subprocess.run(cli + ["enroll", "--name", "alice", "--input", str(enrol), "--min-speech",
                          "2"], cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    for args, stdin in ((["--input", str(mp3)], None), (["--input", "-"], mp3.read_bytes())):
        proc = subprocess.run(cli + ["verify", "--name", "alice"] + args, cwd=REPO, env=env,
                              input=stdin, capture_output=True, timeout=120)
        assert proc.returncode in (0, 1), proc.stderr.decode()
        assert proc.stdout.decode().startswith("alice: "), proc.stdout.decode()
        assert proc.stderr.decode() == "", proc.stderr.decode()


def test_two_files_of_each_of_two_people_are_refused_naming_the_others(tmp_path, session,
                                                                     demo, clips):
    """alice's two enrolment files and two halves of one stranger's line: each file had been
    compared with the mean of the other three, a blend holding its own voice."""
    b = clips["strangers"][1]
    half = len(b) // 2
    paths = [DEMO / demo["enroll"][0], tmp_path / "bob1.wav", DEMO / demo["enroll"][1],
             tmp_path / "bob2.wav"]
    sf.write(paths[1], b[:half], SR)
    sf.write(paths[3], b[half:], SR)
    with pytest.raises(InputError) as err:
        enroll_files(session, paths, min_speech_s=2.0)
    msg = str(err.value)
    assert "bob1.wav" in msg and "bob2.wav" in msg and "enroll_" not in msg, msg
    assert "do not sound like the other recordings" in msg and "\n" not in msg


def test_takes_of_one_voice_that_agree_only_on_average_are_still_one_voice():
    """Three takes 0.72 apart pairwise, 0.78 from the mean of the other two: no two of them
    join (0.72 < 0.75), yet each agrees with the rest, as the rule before stop 27 judged it."""
    from rtverify.apps.enroll import unlike_the_rest, voice_groups

    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    c = np.sqrt(0.72)
    vecs = np.array([c * basis[0] + np.sqrt(1 - 0.72) * basis[k] for k in (1, 2, 3)])
    assert np.allclose((vecs @ vecs.T)[np.triu_indices(3, 1)], 0.72)
    assert len(voice_groups(vecs, np.ones(3), 0.75)) == 3
    assert unlike_the_rest(vecs, np.ones(3), 0.75) is None
    far = np.vstack([vecs, basis[4]])  # and a fourth voice unlike all of them is named
    assert unlike_the_rest(far, np.ones(4), 0.75)[0] == [3]


def test_two_people_taking_turns_at_a_live_enrolment_do_not_make_one_voiceprint(
        session, clips, alice_print):
    """alice, a stranger, alice, the stranger again: each take had been weighed against the
    mean of the others (a blend holding its own voice), so all four counted as one voice. Now
    the stranger's two takes are a voice of their own: whatever enrolment keeps is alice."""
    b = clips["strangers"][2]
    half = len(b) // 2
    first = clips["e1"][:int(3.9 * SR)]  # e1's first utterance: one take
    x = np.concatenate([SIL, clips["e2"], SIL, b[:half], SIL, first, SIL, b[half:], SIL])
    view = Recorder()
    enrol = enroll_live(session, chunks_of(x, 480), EnrollSettings(takes=4, min_speech_s=3.0),
                        view)
    assert len(view.takes) >= 4
    kept = enrol.takes
    assert all(float(t.vector @ alice_print) > 0.8 for t in kept), \
        [round(float(t.vector @ alice_print), 2) for t in kept]
    assert not enrol.done or float(enrol.vector() @ alice_print) > 0.9


def test_verify_refuses_a_recording_where_strangers_speak_too(tmp_path, clips):
    """alice's two enrolment sentences and a stranger's line in one file: pooled, it scores
    over alice's threshold (before stop 27: ACCEPTED); now REJECTED with reason
    ``several_voices`` and the stranger's times. alice's own two sentences still pass."""
    env = {**os.environ, "RTVERIFY_HOME": str(tmp_path / "store")}
    cli = [sys.executable, "-m", "rtverify"]
    subprocess.run(cli + ["enroll", "--name", "alice", "--input", str(DEMO / "enroll_1.flac"),
                          str(DEMO / "enroll_2.flac")], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    gap = SIL[:SR // 2]
    mixed, own = tmp_path / "mixed.wav", tmp_path / "own.wav"
    sf.write(mixed, np.concatenate([clips["e1"], gap, clips["e2"], gap, clips["strangers"][0]]),
             SR)
    sf.write(own, np.concatenate([clips["e1"], gap, clips["e2"]]), SR)
    stranger_from = (len(clips["e1"]) + len(clips["e2"]) + 2 * len(gap)) / SR
    out = {}
    for path in (mixed, own):
        proc = subprocess.run(cli + ["verify", "--name", "alice", "--input", str(path),
                                     "--json"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        out[path.name] = (proc.returncode, json.loads(proc.stdout))
    rc, ans = out["mixed.wav"]
    assert rc == 1 and not ans["accepted"] and ans["reason"] == "several_voices", ans
    assert ans["voice_accepted"]  # the pooled score alone would have let it through
    named = [float(a) for a in re.findall(r"(\d+\.\d)-\d+\.\d s", ans["several_voices"])]
    assert named and all(abs(t - stranger_from) < 0.6 for t in named), (ans, stranger_from)
    rc, ans = out["own.wav"]
    assert rc == 0 and ans["accepted"] and "several_voices" not in ans, ans


def test_three_takes_of_one_voice_outweigh_two_unlike_takes_of_two_others():
    """alice three times (0.9 apart) and two strangers 0.61 apart (not one voice): alice's
    group sits furthest from the rest (the strangers' blend), yet it is the strangers who are
    set aside, as the rule before stop 27 set them aside one by one."""
    from rtverify.apps.enroll import unlike_the_rest

    rng = np.random.default_rng(0)
    b = np.linalg.qr(rng.standard_normal((32, 32)))[0]

    def unit(v):
        return v / np.linalg.norm(v)

    alice, pair = unit(0.6 * b[0] + 0.8 * b[1]), unit(0.6 * b[0] + 0.8 * b[2])
    takes = [unit(0.95 * alice + 0.31 * b[4 + i]) for i in range(3)]
    takes += [unit(0.9 * pair + 0.44 * b[3]), unit(0.9 * pair - 0.44 * b[3])]
    odd, worst = unlike_the_rest(np.array(takes), np.ones(5), 0.75)
    assert odd == [3, 4] and worst < 0.75


def test_two_files_each_of_two_alike_voices_are_refused(tmp_path, session, demo, clips):
    """The voices' means of a file set are held to the model's bar for voices (0.80 for the
    default since stop 28), not to the 0.75 a single live take must reach: alice's two files
    and the same two files 1.5 times faster (7 semitones up: another, higher voice to the ear)
    are 0.77 apart as voices, and were enrolled as one."""
    from scipy.signal import resample_poly

    settings = EnrollSettings().for_model(session)
    assert settings.voices_bar > settings.consistency
    paths = [DEMO / demo["enroll"][0], tmp_path / "fast1.wav", DEMO / demo["enroll"][1],
             tmp_path / "fast2.wav"]
    sf.write(paths[1], resample_poly(clips["e1"], 2, 3), SR)
    sf.write(paths[3], resample_poly(clips["e2"], 2, 3), SR)
    with pytest.raises(InputError) as err:
        enroll_files(session, paths, min_speech_s=2.0)
    msg = str(err.value)
    assert "fast1.wav" in msg and "fast2.wav" in msg and "enroll_" not in msg, msg
    assert f"need {settings.voices_bar:.2f}" in msg and "\n" not in msg
    # at the live take's bar the two voices pass as one: what this check did before
    old = EnrollSettings(consistency=settings.consistency, voices_bar=settings.consistency)
    enrol = enroll_files(session, paths, old, min_speech_s=2.0)
    assert len(enrol.takes) == 4
    # alice's own files still make one voice
    assert len(enroll_files(session, paths[::2], min_speech_s=2.0).takes) == 2
