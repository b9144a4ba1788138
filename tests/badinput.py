"""The bad-input table of issue 5: how each case is built and what each command must do with it.

Every case is fed to ``verify``, ``enroll --input`` and ``listen --input`` as a subprocess (the
way a user runs rtverify). Each must end in a correct result or a one-line error naming the input
with exit code 2 (3 for not enough speech): never a traceback, never a hang (every run has a
deadline), and the voice store byte-for-byte as it was (a successful enrolment adds exactly its
own file, which the check then removes again).

What the input holds decides what is correct:

``speech``   the enrolled speaker (two of her lines from the demo conversation, not the takes she
             was enrolled from): verify scores it as it scores the same audio as a plain 16-bit
             16 kHz WAV (within 0.03; 0.08 where the format itself loses information: 8-bit,
             8 kHz) and accepts it unless the format is lossy, enroll makes a voiceprint close to
             hers, listen accepts most of the speech as hers.
``error``    unusable input: exit 2 and one line naming it and the problem.
``nothing``  no speech at all: verify and enroll exit 3 naming the input, listen ends with no
             decision.
``noise``    sound that is not speech: never accepted; verify rejects (1) or finds too little
             speech (3); enroll writes nothing; listen accepts nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import DEMO, REPO, SR, read16k

COMMANDS = ("verify", "enroll", "listen")
VOICE = "alice"
PROBE = "probe"
"""The name a successful ``enroll`` case writes (and the check removes)."""


# -- running rtverify -----------------------------------------------------------------------------
@dataclass
class Run:
    argv: list
    returncode: int
    stdout: str
    stderr: str
    maxrss_mb: float
    """Peak resident memory of the rtverify process (MiB)."""
    wall_s: float


def rtverify(args, *, store: Path, workdir: Path, stdin: Path | None = None,
             timeout_s: float = 60.0) -> Run:
    """Run ``python -m rtverify ARGS`` with a deadline; output goes through files (no pipe can
    fill up) and ``wait4`` gives the peak memory of that one process."""
    argv = [sys.executable, "-m", "rtverify", *map(str, args)]
    env = {**os.environ, "RTVERIFY_HOME": str(store), "OMP_NUM_THREADS": "1"}
    workdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    t0 = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err, \
            open(stdin if stdin is not None else os.devnull, "rb") as inp:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=inp, stdout=out, stderr=err)
    deadline = t0 + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise AssertionError(f"hang: {' '.join(argv[2:])} still running after {timeout_s} s")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(argv[3:], proc.returncode, out_path.read_text(errors="replace"),
               err_path.read_text(errors="replace"), usage.ru_maxrss / 1024.0,
               time.monotonic() - t0)


def store_state(store: Path) -> dict:
    """Every file in the store: name -> (mode, sha256 of the bytes); plus the directory's mode."""
    state = {".": oct(os.stat(store).st_mode & 0o777)}
    for p in sorted(store.iterdir()):
        state[p.name] = (oct(os.stat(p).st_mode & 0o777), hashlib.sha256(p.read_bytes()).hexdigest())
    return state


def enroll_reference(store: Path, workdir: Path) -> np.ndarray:
    """Enroll the demo speaker into ``store``; return her voiceprint's embedding."""
    run = rtverify(["enroll", "--name", VOICE, "--input", DEMO / "enroll_1.flac",
                    DEMO / "enroll_2.flac"], store=store, workdir=workdir)
    assert run.returncode == 0, run.stderr
    return np.asarray(json.loads((store / f"{VOICE}.json").read_text())["embedding"])


# -- the audio --------------------------------------------------------------------------------
def verify_reference(speech: np.ndarray, store: Path, workdir: Path) -> dict:
    """``verify --json`` on ``speech`` as a plain 16-bit 16 kHz WAV: what every format of it
    should score."""
    workdir.mkdir(parents=True, exist_ok=True)
    sf.write(workdir / "plain.wav", speech, SR, subtype="PCM_16")
    run = rtverify(command_args("verify", workdir / "plain.wav", False), store=store,
                   workdir=workdir)
    assert run.returncode == 0, (run.stdout, run.stderr)  # she is accepted on the plain file
    return json.loads(run.stdout)


def alice_speech() -> np.ndarray:
    """The enrolled speaker's two lines of the demo conversation (9.3 s, 16 kHz), peak 0.3.

    Not louder: the shipped encoder's scores fall with level above about -25 dBFS of speech
    (alice 0.93 at peak 0.3, 0.78 at peak 0.7; reported to the model's owners)."""
    conv = read16k(DEMO / "conversation.flac")
    x = np.concatenate([conv[int(0.9 * SR):int(5.7 * SR)], conv[int(17.6 * SR):int(22.2 * SR)]])
    return (x * (0.3 / np.abs(x).max())).astype(np.float32)


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = np.gcd(rate, SR)
    return resample_poly(x, rate // g, SR // g).astype(np.float32)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    """``speech``, ``error``, ``nothing`` or ``noise`` (see the module docstring)."""
    words: tuple = ()
    """For errors: what the message must say besides the input's name."""
    stdin: bool = False
    """Fed as raw s16 PCM on standard input (``--input -``)."""
    lossy: bool = False
    """The format itself degrades the speech (8-bit, 8 kHz): scores may move more."""


def build(case: str, d: Path, speech: np.ndarray) -> Path:
    """Write case ``case`` under ``d``; return the path given to ``--input`` (or fed on stdin)."""
    p = d / f"{case}.wav"
    if case == "missing":
        return d / "missing.wav"
    if case == "directory":
        p = d / "a_directory.wav"
        p.mkdir()
    elif case == "empty":
        p.write_bytes(b"")
    elif case in ("truncated_header", "header_claims_more"):
        full = d / "full.wav"
        sf.write(full, speech, SR, subtype="PCM_16")
        data = full.read_bytes()
        # 30 bytes: inside the fmt chunk; 7 s of the 9.3 s: the data chunk's size still says 9.3 s
        p.write_bytes(data[:30] if case == "truncated_header" else data[:44 + 2 * 7 * SR])
    elif case == "text_named_wav":
        p.write_text("RIFF? no: these are the minutes of the meeting.\n" * 20)
    elif case in ("pcm_u8", "pcm_24", "float32"):
        sf.write(p, speech, SR, subtype={"pcm_u8": "PCM_U8", "pcm_24": "PCM_24",
                                         "float32": "FLOAT"}[case])
    elif case == "float_absurd":  # finite, but squares overflow: not audio at any scale
        sf.write(p, speech * 1e20, SR, subtype="FLOAT")
    elif case in ("mp3_cut_short", "stdin_mp3_cut_short"):
        # the first 200 bytes of an MP3 (a download cut short): libmpg123 prints its own note
        # ("a one-frame stream? Duh...") while libsndfile opens it
        full = d / "full.mp3"
        sf.write(full, speech, SR, format="MP3")
        p = d / f"{case}.mp3"
        p.write_bytes(full.read_bytes()[:200])
    elif case in ("float_nan", "float_inf"):
        x = speech.copy()
        x[int(2.5 * SR)] = np.nan if case == "float_nan" else np.inf
        sf.write(p, x, SR, subtype="FLOAT")
    elif case.startswith("rate_"):
        rate = int(case[5:])
        sf.write(p, _resample(speech, rate), rate, subtype="PCM_16")
    elif case == "six_channels":
        # different gains whose mean, the mono mix, is the original level (scores depend on it)
        sf.write(p, np.stack([speech * g for g in (1.2, 0.8, 1.0, 1.1, 0.9, 1.0)], 1), SR,
                 subtype="PCM_16")
    elif case == "ten_ms":
        sf.write(p, speech[int(1.5 * SR):int(1.5 * SR) + SR // 100], SR, subtype="PCM_16")
    elif case == "clipped_square":
        t = np.arange(3 * SR) / SR
        sf.write(p, np.where(np.sin(2 * np.pi * 150 * t) >= 0, 1.0, -1.0), SR, subtype="PCM_16")
    elif case == "stdin_mid_sample":
        p = d / "stdin_mid_sample.raw"
        p.write_bytes((speech * 32767).astype("<i2").tobytes() + b"\x7f")
    elif case == "stdin_one_byte":
        p = d / "stdin_one_byte.raw"
        p.write_bytes(b"\x01")
    elif case == "stdin_empty":
        p = d / "stdin_empty.raw"
        p.write_bytes(b"")
    else:
        raise KeyError(case)
    return p


CASES = [
    Case("missing", "error", ("no such file",)),
    Case("directory", "error", ("directory",)),
    Case("empty", "error", ("empty",)),
    Case("truncated_header", "error", ("not a readable audio file",)),
    Case("header_claims_more", "speech"),
    Case("text_named_wav", "error", ("not a readable audio file",)),
    Case("pcm_u8", "speech", lossy=True),
    Case("pcm_24", "speech"),
    Case("float32", "speech"),
    Case("float_nan", "error", ("NaN",)),
    Case("float_inf", "error", ("infinite",)),
    Case("float_absurd", "error", ("sample values", "not audio")),
    Case("mp3_cut_short", "error", ("not a readable audio file",)),
    Case("stdin_mp3_cut_short", "error", ("MP3", "cannot be decoded"), stdin=True),
    Case("rate_8000", "speech", lossy=True),
    Case("rate_11025", "speech"),
    Case("rate_44100", "speech"),
    Case("rate_48000", "speech"),
    Case("rate_96000", "speech"),
    Case("six_channels", "speech"),
    Case("ten_ms", "nothing"),
    Case("clipped_square", "noise"),
    Case("stdin_mid_sample", "speech", stdin=True),
    Case("stdin_one_byte", "error", ("no audio", "less than one"), stdin=True),
    Case("stdin_empty", "error", ("no audio",), stdin=True),
]


# -- what is correct --------------------------------------------------------------------------
def command_args(command: str, path: Path, stdin: bool) -> list:
    where = "-" if stdin else path
    if command == "verify":
        return ["verify", "--name", VOICE, "--input", where, "--json"]
    if command == "enroll":
        live = ["--takes", "2", "--min-speech", "3"] if stdin else []  # a stream: live takes
        return ["enroll", "--name", PROBE, "--input", where, *live]
    return ["listen", "--input", where, "--json"]


def _one_line_error(run: Run, label: str, words=()) -> None:
    text = run.stderr.strip()
    assert text.startswith("rtverify: error: ") and "\n" not in text, (run.argv, run.stderr)
    assert label in text, (label, text)
    for w in words:
        assert w in text, (w, text)


def _events(run: Run) -> list[dict]:
    events = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert events and events[0]["event"] == "ready" and events[-1]["event"] == "summary", \
        run.stdout[-2000:]
    return events


def check(case: Case, command: str, run: Run, path: Path, store: Path, before: dict,
          alice: np.ndarray, reference: dict | None = None) -> None:
    """Assert that ``run`` (``command`` on ``case``) did a correct thing; restore the store after
    a successful enrolment. ``reference``: ``verify --json`` on the plain WAV of the speech."""
    label = "stdin" if case.stdin else path.name
    assert "Traceback" not in run.stderr, run.stderr
    # every line on stderr is rtverify's own (not a decoder's notes, not a Python warning);
    # a live enrolment from stdin reports its takes
    foreign = [ln for ln in run.stderr.splitlines() if ln.strip() and not ln.startswith(
        ("rtverify: ", "recording from ", "take at "))]
    assert not foreign, run.stderr
    assert run.returncode != 4, run.stderr  # an internal error is a bug, whatever the input
    enrolled = store / f"{PROBE}.json"
    if command == "enroll" and run.returncode == 0:
        assert case.kind == "speech", (case, run.stdout, run.stderr)
        data = json.loads(enrolled.read_text())
        assert data["name"] == PROBE and (os.stat(enrolled).st_mode & 0o777) == 0o600
        cos = float(np.dot(np.asarray(data["embedding"]), alice))
        assert cos > 0.8, f"{case.name}: the voiceprint is not alice's (cosine {cos:.2f})"
        enrolled.unlink()
    assert store_state(store) == before, f"{command} {case.name} changed the store"

    if case.kind == "error":
        assert run.returncode == 2, (run.returncode, run.stderr)
        _one_line_error(run, label, case.words)
        if command == "listen" and run.stdout.strip():  # failed mid-stream: summary says so
            assert "error" in _events(run)[-1]
        return
    if case.kind == "speech":
        assert run.returncode == 0 or (command == "verify" and case.lossy), \
            (run.returncode, run.stderr)
        if command == "verify":
            assert run.returncode in (0, 1), (run.returncode, run.stderr)
            result = json.loads(run.stdout)
            assert abs(result["score"] - reference["score"]) <= (0.08 if case.lossy else 0.03), \
                (result, reference)
            assert result["accepted"] or case.lossy, (result, reference)
        elif command == "listen":
            # Per utterance (under 2 s of speech each here) a piece may score just under the
            # threshold; most of the speech must be accepted as hers.
            events = _events(run)
            decisions = [e for e in events if e["event"] == "decision"]
            assert len(decisions) >= 2, decisions
            accepted_s = sum(d["speech_s"] for d in decisions if d["accepted"])
            assert accepted_s >= 0.6 * sum(d["speech_s"] for d in decisions), decisions
            assert events[-1]["stream_s"] >= decisions[-1]["end_s"] and "error" not in events[-1]
        return
    if case.kind == "nothing":
        if command == "listen":
            assert run.returncode == 0, run.stderr
            assert not [e for e in _events(run) if e["event"] == "decision"]
        else:
            assert run.returncode == 3, (run.returncode, run.stderr)
            _one_line_error(run, label, ("speech",))
        return
    assert case.kind == "noise", case
    if command == "verify":
        assert run.returncode in (1, 3), (run.returncode, run.stderr)
        if run.returncode == 1:
            assert json.loads(run.stdout)["accepted"] is False, run.stdout
        else:
            _one_line_error(run, label, ("speech",))
    elif command == "enroll":
        assert run.returncode in (2, 3), (run.returncode, run.stdout, run.stderr)
        _one_line_error(run, label)
    else:
        assert run.returncode == 0, run.stderr
        assert not [e for e in _events(run) if e["event"] == "decision" and e["accepted"]]
