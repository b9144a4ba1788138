"""``verify --challenge``: spoken digits checked by PocketSphinx (the ``liveness`` extra), on
committed clips (``tests/data/espeak_*.flac``, see its README) and through a fake microphone."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from rtverify import cli
from rtverify.apps import liveness
from rtverify.errors import InputError
from rtverify.apps.liveness import check_answer, edit_distance, make_challenge, parse_challenge

from conftest import DATA, REPO

DIGITS = DATA / "espeak_digits_31415.flac"
ENROLL = [DATA / "espeak_enroll_1.flac", DATA / "espeak_enroll_2.flac"]
needs_ps = pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None,
                              reason="pocketsphinx (the 'liveness' extra) is not installed")


def test_challenges_are_random_digits():
    seen = {make_challenge() for _ in range(50)}
    assert all(len(c) == 5 and c.isdigit() for c in seen) and len(seen) > 45
    assert parse_challenge("31 415") == parse_challenge("31-415") == "31415"
    for bad in ("12", "abc", "1" * 13, "٣١٤"):
        with pytest.raises(InputError, match="--challenge"):
            parse_challenge(bad)
    with pytest.raises(InputError) as err:  # 5000 digits were echoed whole on the error line
        parse_challenge("1" * 5000)
    assert len(str(err.value)) < 120


def test_edit_distance_and_tolerance():
    assert edit_distance("31415", "31415") == 0
    assert edit_distance("31415", "3145") == 1 and edit_distance("31415", "314159") == 1
    assert edit_distance("31415", "27182") == 5
    assert check_answer("31416", "31415") == (True, 1)
    assert check_answer("3141", "31495") == (True, 2)
    assert check_answer("27182", "31415") == (False, 5)


@needs_ps
def test_the_recogniser_hears_the_digits():
    x, rate = sf.read(DIGITS, dtype="float32")
    rec = liveness.DigitRecognizer()
    assert rate == 16000 and rec.recognise(x, 5) == "31415"
    assert rec.recognise(np.zeros(16000, np.float32), 5) != "31415"


def rtv(store, *args):
    return subprocess.run([sys.executable, "-m", "rtverify", "--store", str(store),
                           *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("live") / "voices"
    proc = rtv(root, "enroll", "--name", "robot", "--input", *ENROLL)
    assert proc.returncode == 0, proc.stderr
    return root


@needs_ps
def test_verify_with_the_right_and_the_wrong_digits(store):
    proc = rtv(store, "verify", "--name", "robot", "--input", DIGITS, "--challenge", "31415",
               "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["accepted"] and result["heard"] == "31415" and result["challenge_edits"] == 0
    proc = rtv(store, "verify", "--name", "robot", "--input", DIGITS, "--challenge", "86420")
    assert proc.returncode == 1, proc.stderr
    assert "REJECTED" in proc.stdout and "challenge 86420: heard 31415, WRONG" in proc.stdout
    # the voice alone still passes: it is the challenge that failed
    proc = rtv(store, "verify", "--name", "robot", "--input", DIGITS, "--challenge", "86420",
               "--json")
    result = json.loads(proc.stdout)
    assert result["voice_accepted"] and not result["accepted"]
    assert result["reason"] == "wrong_challenge"


def test_a_random_challenge_cannot_be_answered_by_a_recording(store):
    proc = rtv(store, "verify", "--name", "robot", "--input", DIGITS, "--challenge")
    assert proc.returncode == 2
    text = proc.stderr.strip()
    assert text.startswith("rtverify: error: --challenge") and "\n" not in text


def test_without_the_extra_it_says_how_to_install_it(store, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import fails
    code = cli.main(["--store", str(store), "verify", "--name", "robot", "--input", str(DIGITS),
                     "--challenge", "31415"])
    assert code == 2
    assert "pip install 'rtverify[liveness]'" in capsys.readouterr().err


@needs_ps
@pytest.mark.parametrize("challenge,code", [("31415", 0), ("86420", 1)])
def test_a_random_challenge_answered_at_the_microphone(store, monkeypatch, capsys, challenge,
                                                       code):
    """The prompt goes to stderr, the speaker answers into the (fake) microphone; capture ends
    at the pause after the answer."""
    spec = importlib.util.spec_from_file_location("sounddevice",
                                                  REPO / "tests" / "fakes" / "sounddevice.py")
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    x, _ = sf.read(DIGITS, dtype="float32")
    fake.speed = 4.0
    fake.script[:] = [{"audio": x, "then": "silence"}]
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    monkeypatch.setattr(liveness, "make_challenge", lambda n=5: challenge)
    assert cli.main(["--store", str(store), "verify", "--name", "robot", "--challenge"]) == code
    out = capsys.readouterr()
    assert f"Say these digits: {' '.join(challenge)}" in out.err
    assert ("ACCEPTED" if code == 0 else "WRONG") in out.out
