"""The rtverify command, run as a user runs it: a subprocess, exit codes, stdout/stderr."""

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtverify import cli

from conftest import DEMO, REPO, SR, interruptible, read16k
from rtverify.apps.demo import speaker_at

ENROLL = [str(DEMO / "enroll_1.flac"), str(DEMO / "enroll_2.flac")]
CONVERSATION = str(DEMO / "conversation.flac")


def rtv(*args, store, stdin=None, timeout=120):
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    return subprocess.run([sys.executable, "-m", "rtverify", *map(str, args)], cwd=REPO, env=env,
                          input=stdin, capture_output=True, timeout=timeout,
                          text=not isinstance(stdin, bytes))


def out(proc):
    return proc.stdout.decode() if isinstance(proc.stdout, bytes) else proc.stdout


def err(proc):
    return proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr


def one_line_error(proc, *words):
    text = err(proc).strip()
    assert text.startswith("rtverify: error: ") and "\n" not in text, text
    assert "Traceback" not in text
    for w in words:
        assert w in text, (w, text)


def json_lines(proc):
    return [json.loads(line) for line in out(proc).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, demo):
    """A stranger's line and a line of the enrolled speaker cut from the conversation, and
    silence."""
    d = tmp_path_factory.mktemp("clips")
    conv = read16k(DEMO / demo["conversation"])
    paths = {}
    for key, want in (("stranger", False), ("alice", True)):
        line = next(ln for ln in demo["script"]
                    if (ln["speaker"] == demo["enrolled_speaker"]) == want and ln["start_s"] > 10)
        cut = conv[int((line["start_s"] - 0.3) * SR):int((line["end_s"] + 0.3) * SR)]
        paths[key] = d / f"{key}.wav"
        sf.write(paths[key], cut, SR, subtype="PCM_16")
    paths["silence"] = d / "silence.wav"
    sf.write(paths["silence"], np.zeros(SR * 3, dtype=np.float32), SR)
    paths["short"] = d / "short.wav"  # about a second of speech: less than enrolment needs
    sf.write(paths["short"], read16k(ENROLL[0])[: int(1.6 * SR)], SR)
    return paths


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with 'alice' enrolled from the bundled takes (through the CLI)."""
    root = tmp_path_factory.mktemp("home") / "voices"
    proc = rtv("enroll", "--name", "alice", "--input", *ENROLL, store=root)
    assert proc.returncode == 0, err(proc)
    assert "enrolled 'alice'" in out(proc)
    return root


# -- basics ---------------------------------------------------------------------------------------
def test_help_version_and_usage_errors(tmp_path):
    proc = rtv("--help", store=tmp_path)
    assert proc.returncode == 0 and "examples:" in out(proc) and "exit codes" in out(proc)
    for command in ("enroll", "listen", "verify", "voices", "devices", "demo"):
        assert command in out(proc)
    proc = rtv("--version", store=tmp_path)
    assert proc.returncode == 0 and out(proc).startswith("rtverify ")
    assert rtv(store=tmp_path).returncode == 2
    proc = rtv("verify", "--input", "x.wav", store=tmp_path)  # --name missing
    assert proc.returncode == 2 and "--name" in err(proc)
    assert rtv("listen", "--bogus", store=tmp_path).returncode == 2


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_empty_store_is_a_usage_error_not_the_current_directory(tmp_path, capsys, where,
                                                                      monkeypatch):
    """`--store "$VOICES"` with the variable unset: the store was the current directory, which
    enrol filled with the voice and made private (chmod 0700)."""
    work = tmp_path / "project"
    work.mkdir(mode=0o755)
    os.chmod(work, 0o755)
    monkeypatch.chdir(work)
    argv = ["enroll", "--name", "alice", "--input", *ENROLL]
    argv = ["--store", "", *argv] if where == "before" else [*argv, "--store", " "]
    assert cli.main(argv) == 2
    text = capsys.readouterr().err.strip()
    assert text.startswith("rtverify: error: ") and "\n" not in text and "--store" in text, text
    assert list(work.iterdir()) == [] and stat.S_IMODE(work.stat().st_mode) == 0o755


def test_importing_the_cli_loads_nothing_heavy():
    code = ("import sys, rtverify.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'rich', 'scipy', 'soundfile', "
            "'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_eval_subcommand_is_registered():
    proc = rtv("eval", "--help", store=Path("/nonexistent-store"))
    assert proc.returncode == 0 and "--trials" in out(proc) and "--root" in out(proc)
    assert "eval" in cli.build_parser().format_help()


# -- enroll / verify ------------------------------------------------------------------------------
def test_store_is_private(store):
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store / "alice.json").st_mode) == 0o600
    data = json.loads((store / "alice.json").read_text())
    assert data["n_takes"] == 2 and data["model_id"].startswith("default-")


def test_verify_accepts_the_enrolled_speaker_and_rejects_a_stranger(store, clips):
    proc = rtv("verify", "--name", "alice", "--input", clips["alice"], store=store)
    assert proc.returncode == 0, err(proc)
    assert "ACCEPTED" in out(proc)
    proc = rtv("verify", "--name", "alice", "--input", clips["stranger"], "--json", store=store)
    assert proc.returncode == 1, err(proc)
    result = json.loads(out(proc))
    assert result["accepted"] is False and result["score"] < result["threshold"]
    assert result["name"] == "alice" and result["speech_s"] > 2


def test_verify_exit_codes_for_no_speech_and_bad_input(store, clips, tmp_path):
    proc = rtv("verify", "--name", "alice", "--input", clips["silence"], store=store)
    assert proc.returncode == 3
    one_line_error(proc, "silence.wav", "speech")
    proc = rtv("verify", "--name", "alice", "--input", tmp_path / "missing.wav", store=store)
    assert proc.returncode == 2
    one_line_error(proc, "missing.wav", "no such file")
    text = tmp_path / "text.wav"
    text.write_text("not audio at all")
    proc = rtv("verify", "--name", "alice", "--input", text, store=store)
    assert proc.returncode == 2
    one_line_error(proc, "text.wav")
    proc = rtv("verify", "--name", "nobody", "--input", clips["alice"], store=store)
    assert proc.returncode == 2
    one_line_error(proc, "'nobody'", "not enrolled")
    proc = rtv("verify", "--name", "alice", "--input", clips["alice"], "--rate", "8000",
               store=store)
    assert proc.returncode == 2
    one_line_error(proc, "--rate", "stdin")


def test_a_pipe_given_as_a_file_says_so_and_points_to_stdin(store, clips):
    """`cat door.wav | rtverify verify --input /dev/stdin` (or `--input <(sox ...)`): the pipe
    was called an 'empty file'; it is named for what it is, and `--input -` suggested."""
    wav = clips["alice"].read_bytes()
    for command in (["verify", "--name", "alice"], ["enroll", "--name", "bob"], ["listen"]):
        proc = rtv(*command, "--input", "/dev/stdin", store=store, stdin=wav)
        assert proc.returncode == 2, (command, err(proc))
        one_line_error(proc, "/dev/stdin", "pipe", "--input -")
    proc = rtv("verify", "--name", "alice", "--input", "-", store=store, stdin=wav)
    assert proc.returncode == 0, err(proc)  # what it points to works


def test_verify_reads_raw_pcm_from_stdin(store, clips):
    x = read16k(clips["alice"])
    pcm = (x * 32767).astype("<i2").tobytes()
    proc = rtv("verify", "--name", "alice", "--input", "-", store=store, stdin=pcm)
    assert proc.returncode == 0, err(proc)


def _verify_a_recorder(store, pcm: bytes, *extra, limit_s: float = 60.0):
    """`arecord ... | rtverify verify --input - --live`: stdin that never ends (``pcm``, then
    silence for as long as the command reads)."""
    env = {**os.environ, "RTVERIFY_HOME": str(store), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "verify", "--name", "alice",
                             "--input", "-", "--json", *extra], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        proc.stdin.write(pcm)
        zeros = bytes(3200)  # 0.1 s
        while proc.poll() is None and time.monotonic() - t0 < limit_s:
            proc.stdin.write(zeros)
            proc.stdin.flush()
            time.sleep(0.01)
    except BrokenPipeError:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate(timeout=10)
    return proc.returncode, stdout.decode(), stderr.decode(), time.monotonic() - t0


def test_verify_live_decides_a_recorder_on_stdin_after_the_pause(store, clips):
    """A recorder piped into verify never reaches an end: with --live the decision comes after
    the pause that follows the speech, as at the microphone (without it, verify read on for
    ever)."""
    pcm = (read16k(clips["alice"]) * 32767).astype("<i2").tobytes()
    code, stdout, stderr, took = _verify_a_recorder(store, pcm, "--live")
    assert code == 0, stderr
    assert json.loads(stdout)["accepted"] is True and took < 50, (stdout, took)
    code, _, stderr, took = _verify_a_recorder(store, b"", "--live", "--timeout", "2")
    assert code == 3 and "speech" in stderr and took < 50, (code, stderr, took)


def test_verify_live_is_only_for_stdin(store, clips):
    proc = rtv("verify", "--name", "alice", "--input", clips["alice"], "--live", store=store)
    assert proc.returncode == 2
    one_line_error(proc, "--live", "--input -")


def test_verify_reads_telephone_bytes_from_stdin(store, clips, tmp_path):
    """A call recording as a PBX hands it out: 8 kHz mu-law, raw or in a WAV."""
    import soundfile as sf

    from rtverify.io.resample import StreamingResampler

    x = StreamingResampler(16000, 8000).push(read16k(clips["alice"]))
    path = tmp_path / "call.wav"
    sf.write(path, x, 8000, subtype="ULAW")
    wav = path.read_bytes()
    raw = wav[wav.index(b"data") + 8:]
    proc = rtv("verify", "--name", "alice", "--input", "-", "--rate", "8000", "--format", "ulaw",
               store=store, stdin=raw)
    assert proc.returncode == 0, err(proc)
    proc = rtv("verify", "--name", "alice", "--input", "-", store=store, stdin=wav)
    assert proc.returncode == 0, err(proc)


def test_force_semantics(tmp_path, clips):
    root = tmp_path / "s"
    assert rtv("enroll", "--name", "bob", "--input", *ENROLL, store=root).returncode == 0
    before = (root / "bob.json").read_bytes()
    proc = rtv("enroll", "--name", "bob", "--input", ENROLL[1], clips["alice"], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "already enrolled", "--force")
    assert (root / "bob.json").read_bytes() == before
    proc = rtv("enroll", "--name", "bob", "--force", "--input", ENROLL[1], clips["alice"],
               store=root)
    assert proc.returncode == 0, err(proc)
    after = json.loads((root / "bob.json").read_text())
    assert after["embedding"] != json.loads(before)["embedding"]
    assert stat.S_IMODE(os.stat(root / "bob.json").st_mode) == 0o600
    assert sorted(p.name for p in root.iterdir()) == ["bob.json"]


def test_enroll_add(tmp_path, clips):
    """--add puts a recording's take into an enrolled voice: the voice it gives is the one the
    two recordings enrolled together give; a stranger's take, an unknown name and --force with
    it are refused and leave the voice as it was."""
    root = tmp_path / "s"
    assert rtv("enroll", "--name", "both", "--input", *ENROLL, store=root).returncode == 0
    assert rtv("enroll", "--name", "bob", "--input", ENROLL[0], store=root).returncode == 0
    proc = rtv("enroll", "--name", "bob", "--add", "--input", ENROLL[1], store=root)
    assert proc.returncode == 0, err(proc)
    assert "added 1 take" in out(proc) and "now 2 takes" in out(proc), out(proc)
    bob, both = (json.loads((root / f"{n}.json").read_text()) for n in ("bob", "both"))
    assert bob["n_takes"] == 2 and bob["speech_s"] == pytest.approx(both["speech_s"], abs=0.02)
    for key in ("embedding", "embedding_narrowband"):
        assert np.dot(bob[key], both[key]) > 0.99999, key
    assert set(bob["models"]) == set(both["models"])
    for mid in both["models"]:
        assert np.dot(bob["models"][mid]["embedding"], both["models"][mid]["embedding"]) > 0.99999
    before = (root / "bob.json").read_bytes()
    proc = rtv("enroll", "--name", "bob", "--add", "--input", clips["stranger"], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "does not sound like 'bob'", "nothing was added")
    proc = rtv("enroll", "--name", "nobody", "--add", "--input", ENROLL[1], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "'nobody' is not enrolled")
    proc = rtv("enroll", "--name", "bob", "--add", "--force", "--input", ENROLL[1], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "--force", "--add")
    proc = rtv("enroll", "--name", "bob", "--input", ENROLL[1], store=root)
    one_line_error(proc, "already enrolled", "--add")
    assert (root / "bob.json").read_bytes() == before
    assert not (root / "nobody.json").exists()


def test_enroll_add_vouch(tmp_path, clips):
    """--add --vouch: a take under the bar (the same person angry, hoarse...; here a stranger's
    line stands in for one) is added with a warning naming it, where --add alone refuses it and
    says --vouch exists; --vouch without --add is a usage error that changes nothing."""
    root = tmp_path / "s"
    assert rtv("enroll", "--name", "bob", "--input", *ENROLL, store=root).returncode == 0
    before = (root / "bob.json").read_bytes()
    proc = rtv("enroll", "--name", "bob", "--add", "--input", clips["stranger"], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "does not sound like 'bob'", "nothing was added", "--vouch")
    assert (root / "bob.json").read_bytes() == before
    proc = rtv("enroll", "--name", "bob", "--vouch", "--input", clips["stranger"], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "--vouch goes with --add")
    assert (root / "bob.json").read_bytes() == before
    proc = rtv("enroll", "--name", "bob", "--add", "--vouch", "--input", clips["stranger"],
               clips["alice"], store=root)
    assert proc.returncode == 0, err(proc)
    assert "added 2 takes" in out(proc) and "now 4 takes" in out(proc), out(proc)
    warned = [ln for ln in err(proc).splitlines() if "as you vouched" in ln]
    assert any("stranger.wav" in ln and "under the bar" in ln for ln in warned), err(proc)
    assert "Traceback" not in err(proc)
    after = json.loads((root / "bob.json").read_text())
    assert after["n_takes"] == 4 and after["embedding"] != json.loads(before)["embedding"]


def rtv_unprivileged(*args, store, **kw):
    """:func:`rtv` where file permissions hold: as root, without the capabilities that
    override them (setpriv), so an unreadable store is unreadable."""
    if os.geteuid() != 0:
        return rtv(*args, store=store, **kw)
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    return subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
                           sys.executable, "-m", "rtverify", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, timeout=120, text=True)


def test_a_store_that_cannot_be_read_is_one_line_never_an_internal_error(tmp_path, clips):
    """A store directory the user may not search (mode 000, or another user's): `verify` and
    `enroll` ended in 'internal error: PermissionError' (exit 4, from an existence check and
    from the symbolic-link check after a failed open); every command says it in one line, exit
    2, and the voice is untouched."""
    root = tmp_path / "s"
    assert rtv("enroll", "--name", "alice", "--input", *ENROLL, store=root).returncode == 0
    before = (root / "alice.json").read_bytes()
    os.chmod(root, 0)
    try:
        for args in (["verify", "--name", "alice", "--input", clips["alice"]],
                     ["enroll", "--name", "alice", "--input", *ENROLL],
                     ["enroll", "--name", "bob", "--force", "--input", *ENROLL],
                     ["listen", "--input", clips["alice"]], ["voices"],
                     ["voices", "remove", "alice"]):
            proc = rtv_unprivileged(*args, store=root)
            assert proc.returncode == 2, (args, err(proc))
            one_line_error(proc, str(root), "Permission denied")
    finally:
        os.chmod(root, 0o700)
    assert sorted(p.name for p in root.iterdir()) == ["alice.json"]
    assert (root / "alice.json").read_bytes() == before


def test_a_recording_that_cannot_be_opened_says_why(tmp_path, clips):
    """A recording the user may not read was 'not a readable audio file (System error.)',
    libsndfile's words, as if the file were damaged."""
    root = tmp_path / "s"
    assert rtv("enroll", "--name", "alice", "--input", *ENROLL, store=root).returncode == 0
    locked = tmp_path / "locked.wav"
    locked.write_bytes(clips["alice"].read_bytes())
    os.chmod(locked, 0)
    for args in (["verify", "--name", "alice"], ["enroll", "--name", "bob"], ["listen"]):
        proc = rtv_unprivileged(*args, "--input", locked, store=root)
        assert proc.returncode == 2, (args, err(proc))
        one_line_error(proc, "locked.wav", "cannot be opened (Permission denied)")


def test_failed_enrolment_writes_nothing(tmp_path, clips):
    root = tmp_path / "s"
    for args, code in ((["--input", clips["silence"]], 3), (["--input", clips["short"]], 3),
                       (["--input", ENROLL[0], clips["stranger"]], 2),
                       (["--input", tmp_path / "nope.wav"], 2)):
        proc = rtv("enroll", "--name", "carol", *args, store=root)
        assert proc.returncode == code, (args, err(proc))
        one_line_error(proc)
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "x\ty", "..", "/abs"])
def test_name_traversal_is_refused(tmp_path, name):
    root = tmp_path / "s"
    proc = rtv("enroll", "--name", name, "--input", *ENROLL, store=root)
    assert proc.returncode == 2
    one_line_error(proc, "voice name")
    assert list(tmp_path.iterdir()) == []  # no store, nothing beside it


def test_live_enrolment_from_a_raw_stream(tmp_path):
    sil = np.zeros(SR, dtype=np.float32)
    first = read16k(ENROLL[0])
    blip = first[int(0.9 * SR):int(1.6 * SR)]  # a take with well under a second of speech
    x = np.concatenate([sil, blip, sil, first, sil, read16k(ENROLL[1]), sil])
    pcm = (x * 32767).astype("<i2").tobytes()
    root = tmp_path / "s"
    proc = rtv("enroll", "--name", "dave", "--input", "-", "--takes", "2", "--min-speech", "3",
               store=root, stdin=pcm)
    assert proc.returncode == 0, err(proc)
    assert "refused: too short" in err(proc) and err(proc).count(": ok") == 2
    proc = rtv("enroll", "--name", "erin", "--input", "-", store=root, stdin=pcm)  # defaults: 10 s
    assert proc.returncode == 3
    assert "nothing was saved" in err(proc) and not (root / "erin.json").exists()


# -- voices ---------------------------------------------------------------------------------------
def test_voices_list_and_remove(tmp_path):
    root = tmp_path / "s"
    proc = rtv("voices", store=root)
    assert proc.returncode == 0 and "no voices" in out(proc)
    for name in ("alice", "bob"):
        assert rtv("enroll", "--name", name, "--input", *ENROLL, store=root).returncode == 0
    proc = rtv("voices", store=root)
    lines = out(proc).splitlines()
    assert proc.returncode == 0 and str(root) in lines[0]
    assert [ln.split()[0] for ln in lines[2:]] == ["alice", "bob"]
    listed = json_lines(rtv("voices", "--json", store=root))
    assert "default-" in lines[2] and f"{listed[0]['speech_s']:.1f}s" in lines[2]
    assert [v["name"] for v in listed] == ["alice", "bob"] and all(v["usable"] for v in listed)
    proc = rtv("voices", "remove", "alice", store=root)
    assert proc.returncode == 0 and "removed 'alice'" in out(proc)
    assert [v["name"] for v in json_lines(rtv("voices", "--json", store=root))] == ["bob"]
    proc = rtv("voices", "remove", "alice", store=root)
    assert proc.returncode == 2
    one_line_error(proc, "'alice'", "not enrolled")
    proc = rtv("voices", "remove", "../bob", store=root)
    assert proc.returncode == 2 and (root / "bob.json").exists()


def test_foreign_and_damaged_voiceprints(tmp_path, store):
    root = tmp_path / "s"
    root.mkdir(mode=0o700)
    good = json.loads((store / "alice.json").read_text())
    (root / "alice.json").write_text(json.dumps(good))
    (root / "old.json").write_text(json.dumps({**good, "name": "old", "model_id": "ancient-1"}))
    (root / "broken.json").write_text('{"format": "rtverify-voiceprint/1", "embedd')
    proc = rtv("verify", "--name", "old", "--input", ENROLL[1], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "old.json", "ancient-1", "re-enroll")
    proc = rtv("verify", "--name", "broken", "--input", ENROLL[1], store=root)
    assert proc.returncode == 2
    one_line_error(proc, "broken.json", "damaged")
    proc = rtv("verify", "--name", "alice", "--input", ENROLL[1], store=root)
    assert proc.returncode == 0, err(proc)
    proc = rtv("listen", "--input", CONVERSATION, "--json", store=root)
    assert proc.returncode == 0, err(proc)
    assert "broken.json" in err(proc) and "old.json" in err(proc) and "re-enroll" in err(proc)
    ready = json_lines(proc)[0]
    assert ready["event"] == "ready" and ready["voices"] == ["alice"]
    listed = {v["name"]: v for v in json_lines(rtv("voices", "--json", store=root))}
    assert listed["alice"]["usable"] and not listed["old"]["usable"]
    assert "damaged" in listed["broken"]["problem"]


# -- listen ---------------------------------------------------------------------------------------
def test_listen_json_decisions_follow_the_script(store, demo):
    proc = rtv("listen", "--input", CONVERSATION, "--json", store=store)
    assert proc.returncode == 0, err(proc)
    events = json_lines(proc)
    assert events[0]["event"] == "ready" and events[-1]["event"] == "summary"
    kinds = {e["event"] for e in events}
    assert {"speech_start", "decision"} <= kinds
    decisions = [e for e in events if e["event"] == "decision" and e["reason"] != "too_short"]
    assert len(decisions) >= len(demo["script"])
    for d in decisions:
        for key in ("start_s", "end_s", "speech_s", "speaker", "score", "accepted", "scores"):
            assert key in d
        truth = speaker_at(demo["script"], d["start_s"], d["end_s"])
        assert truth is not None
        assert d["accepted"] == (truth == demo["enrolled_speaker"]), (truth, d)
        assert d["speaker"] == ("alice" if d["accepted"] else None)
    assert events[-1]["decisions"] == len([e for e in events if e["event"] == "decision"])
    assert events[-1]["accepted"] == sum(d["accepted"] for d in decisions)


def test_listen_realtime_gives_provisional_scores_while_speech_goes_on(store, clips):
    t0 = time.monotonic()
    proc = rtv("listen", "--input", clips["alice"], "--realtime", "--json", store=store)
    wall_s = time.monotonic() - t0
    assert proc.returncode == 0, err(proc)
    events = json_lines(proc)
    assert events[0]["realtime"] is True
    duration_s = sf.info(str(clips["alice"])).duration
    assert wall_s >= duration_s - 0.5  # paced, not as fast as possible
    prov = [e for e in events if e["event"] == "provisional"]
    decision = next(e for e in events if e["event"] == "decision")
    assert prov and all(p["t_s"] <= decision["end_s"] for p in prov)
    assert events.index(prov[0]) < events.index(decision)
    assert prov[-1]["speaker"] == "alice" and set(prov[-1]["scores"]) == {"alice"}


def test_listen_console_without_a_terminal_prints_a_line_per_decision(store):
    proc = rtv("listen", "--input", CONVERSATION, store=store)
    assert proc.returncode == 0, err(proc)
    lines = out(proc).splitlines()
    assert sum("ACCEPTED alice" in ln for ln in lines) == 3
    assert sum("rejected (best alice)" in ln for ln in lines) == 3
    assert lines[-1].startswith("6 decisions: 3 accepted (alice 3), 3 rejected")


@pytest.mark.parametrize("json_lines", [False, True])
def test_listen_whose_reader_goes_away_ends_with_0_either_way(store, json_lines):
    """`rtverify listen --input F | head -1`: with --json it ended 0, in the plain console with
    1 (rich's broken-pipe handling exits 1), which the exit-code table keeps for 'rejected'."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    try:
        proc = subprocess.run([sys.executable, "-m", "rtverify", "listen", "--input", CONVERSATION,
                               *(["--json"] if json_lines else [])], cwd=REPO, env=env,
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr, proc.stderr


def test_listen_threshold_override_and_name_selection(store):
    proc = rtv("listen", "--input", CONVERSATION, "--json", "--threshold", "0.3", store=store)
    decisions = [e for e in json_lines(proc) if e["event"] == "decision"]
    assert decisions and all(d["accepted"] and d["threshold"] == 0.3 for d in decisions)
    proc = rtv("listen", "--input", CONVERSATION, "--json", "--threshold", "7", store=store)
    assert proc.returncode == 2
    one_line_error(proc, "--threshold")
    proc = rtv("listen", "--input", CONVERSATION, "--name", "zed", store=store)
    assert proc.returncode == 2
    one_line_error(proc, "'zed'", "not enrolled")


def test_listen_with_no_voices_says_how_to_enroll(tmp_path):
    proc = rtv("listen", "--input", CONVERSATION, store=tmp_path / "empty")
    assert proc.returncode == 2
    one_line_error(proc, "no usable voice", "rtverify enroll")


def signalled(proc, sig):
    """Send ``sig``, wait for the process to end, then read the rest of its output. Its stdin
    stays open until it has exited: closing it first could end the stream before the signal is
    handled (a race on a busy machine), which is not what is tested."""
    proc.send_signal(sig)
    proc.wait(timeout=30)
    return proc.communicate(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_enroll_ends_cleanly_on_ctrl_c_or_sigterm(tmp_path, sig):
    """A live enrolment from a pipe that stays open, stopped by Ctrl-C or SIGTERM (a service
    manager, `timeout`): one line saying nothing was saved, exit 130, nothing written."""
    root = tmp_path / "s"
    env = {**os.environ, "RTVERIFY_HOME": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "enroll", "--name", "dora",
                             "--input", "-"], cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=interruptible)
    try:
        proc.stdin.write((read16k(ENROLL[0]) * 32767).astype("<i2").tobytes())
        proc.stdin.flush()
        line = proc.stderr.readline()  # the first take's feedback: it is running
        assert b"recording from stdin" in line or b"take" in line, line
        _, stderr = signalled(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr.decode()
    assert "interrupted; nothing was saved" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_listen_ends_cleanly_on_ctrl_c_or_sigterm(store, sig):
    """Raw PCM on a pipe that stays open, cut in the middle of the second utterance: the first
    decision arrives, then the signal ends listen; the open utterance still gets its decision,
    then comes the summary, and the exit code is 0."""
    x = read16k(CONVERSATION)[: int(4.9 * SR)]
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "listen", "--input", "-", "--json"],
                            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=interruptible)
    try:
        proc.stdin.write((x * 32767).astype("<i2").tobytes())
        proc.stdin.flush()
        events = []
        while not any(e["event"] == "decision" for e in events):
            line = proc.stdout.readline()  # bounded by the test timeout
            assert line, proc.stderr.read().decode()
            events.append(json.loads(line))
        time.sleep(1.5)  # let it take in the rest of what was written
        rest, stderr = signalled(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.decode().splitlines()]
    assert proc.returncode == 0, stderr.decode()
    decisions = [e for e in events if e["event"] == "decision"]
    assert len(decisions) == 2 and decisions[1]["end_reason"] == "end_of_stream"
    assert all(d["speaker"] == "alice" for d in decisions)
    assert events[-1]["event"] == "summary" and events[-1]["interrupted"] is True
    assert b"Traceback" not in stderr


def _pending(pid: int, sig: int) -> bool:
    """Whether ``sig``, sent to the running process ``pid``, is still waiting to be delivered."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone
        return False
    masks = [line.split()[1] for line in status.splitlines()
             if line.startswith(("ShdPnd:", "SigPnd:"))]
    return any(int(mask, 16) >> (sig - 1) & 1 for mask in masks)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("argv", [["listen", "--input", "-"], ["demo", "--fast"]],
                         ids=["listen", "demo"])
def test_a_signal_while_the_model_loads_ends_like_ctrl_c(tmp_path, argv, sig):
    """SIGTERM (a service manager, `timeout`) while listen or demo was still loading the model,
    before their own handler was installed, killed them silently with exit 143; Ctrl-C there
    said 'interrupted' and exited 130. SIGTERM now does what Ctrl-C does.

    The model's sidecar is a FIFO: once the test's open of it for writing succeeds, the command
    is reading it, in the middle of loading the model, whatever the machine's load. The signal
    goes then; once it has been delivered the real sidecar is written, so that a read the signal
    did not interrupt (it may be handled just before the read, or by another thread) returns
    and the command, running Python again, acts on it."""
    import errno

    from rtverify.core.encoder import DEFAULT_MODEL, sidecar_path

    model, sidecar = tmp_path / "m.onnx", tmp_path / "m.json"
    model.symlink_to(DEFAULT_MODEL)
    os.mkfifo(sidecar)
    env = {**os.environ, "RTVERIFY_HOME": str(tmp_path / "store")}
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", argv[0], "--model", str(model),
                             *argv[1:]], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=interruptible)
    writer = None
    try:
        deadline = time.monotonic() + 60
        while writer is None:
            try:  # succeeds only once the command has the FIFO open for reading
                writer = os.open(sidecar, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                assert error.errno == errno.ENXIO, error
                assert proc.poll() is None, proc.communicate(timeout=30)
                assert time.monotonic() < deadline, "the model's sidecar was never opened"
                time.sleep(0.05)
        proc.send_signal(sig)
        deadline = time.monotonic() + 30
        while proc.poll() is None and _pending(proc.pid, sig) and time.monotonic() < deadline:
            time.sleep(0.01)
        text = sidecar_path(DEFAULT_MODEL).read_bytes()
        assert len(text) < 65536  # fits in the FIFO whether or not it is read
        with contextlib.suppress(BrokenPipeError):  # the command has closed it, or is gone
            assert os.write(writer, text) == len(text)
        os.close(writer)
        writer = None
        proc.wait(timeout=30)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if writer is not None:
            os.close(writer)
    assert proc.returncode == 130, (proc.returncode, stderr.decode())
    assert stderr.decode().splitlines() == ["rtverify: interrupted"], stderr.decode()


def test_demo_runs_to_the_end_and_grades_itself():
    proc = subprocess.run([sys.executable, "-m", "rtverify", "demo", "--fast"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Enrolled alice" in proc.stdout
    assert "Demo result: 6 right, 0 wrong out of 6 decisions" in proc.stdout
    assert "5 of the script's 5 lines got a decision" in proc.stdout
    assert "Playing conversation.flac, 5 lines: alice, speaker" in proc.stdout
    # the demo's voice holds the short expert's vector, as an enrolled one does: no warning
    assert "holds no embedding" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("argv,words", [
    (["listen", "--realtime"], ["--realtime", "--input"]),
    (["listen", "--input", CONVERSATION, "--device", "1"], ["--device", "microphone"]),
    (["enroll", "--name", "x", "--input", ENROLL[0], "--device", "1"], ["--device"]),
    (["enroll", "--name", "x", "--input", "-", ENROLL[0]], ["stdin", "mixed"]),
    (["listen", "--input", CONVERSATION, "--format", "f32"], ["--format", "stdin"]),
])
def test_options_that_do_not_apply_are_refused(tmp_path, capsys, argv, words):
    assert cli.main(["--store", str(tmp_path), *argv]) == 2
    text = capsys.readouterr().err.strip()
    assert text.startswith("rtverify: error: ") and "\n" not in text
    assert all(w in text for w in words), text


@pytest.mark.parametrize("argv", [[], ["-v"]])
def test_no_command_is_a_one_line_usage_error(tmp_path, capsys, argv):
    assert cli.main(["--store", str(tmp_path), *argv]) == 2
    text = capsys.readouterr().err.strip()
    assert text == "rtverify: error: a command is required (rtverify --help lists them)", text


@pytest.mark.parametrize("command", [["enroll", "--name", "bob", "--input", "-"],
                                     ["verify", "--name", "alice", "--input", "-", "--live"]])
def test_a_stdin_pipe_that_stalls_without_closing_ends_at_the_timeout(store, command):
    """A recorder on a pipe that stops sending without closing it: enroll --input - and
    verify --input - --live waited for the pipe's end for ever (the timeout was checked only as
    audio arrived); now a one-line error at --timeout, exit 2, and nothing is enrolled."""
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", *command, "--timeout", "2"],
                            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"\0" * 32000)  # a second of silence, then nothing
        proc.stdin.flush()
        t0 = time.monotonic()
        code = proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
        stderr = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    assert code == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == "rtverify: error: stdin: no audio arrived for 2 s (the pipe stalled without " \
        "closing; --timeout)", stderr
    assert "Traceback" not in stderr and elapsed < 25
    assert not (store / "bob.json").exists()


@pytest.mark.parametrize("command", [["enroll", "--name", "bob", "--input", "-"],
                                     ["verify", "--name", "alice", "--input", "-"],
                                     ["listen", "--input", "-", "--json"]])
def test_input_stdin_with_standard_input_closed_is_one_line(store, command):
    """Started with descriptor 0 closed (`<&-`, a service manager): Python's sys.stdin is None,
    and --input - was 'internal error: AttributeError', exit 4."""
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    proc = subprocess.run([sys.executable, "-m", "rtverify", *command], cwd=REPO, env=env,
                          preexec_fn=lambda: os.close(0), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "rtverify: error: stdin: standard input is closed; give it audio " \
        "(a pipe or `< file`), or --input FILE\n", proc.stderr
    assert not (store / "bob.json").exists()


@pytest.mark.parametrize("extra", [[], ["--server", "ws://127.0.0.1:9"]])
def test_listen_status_without_json_is_a_usage_error_not_ignored(tmp_path, capsys, extra):
    """--status adds status events to --json; without --json it did nothing, silently."""
    assert cli.main(["--store", str(tmp_path), "listen", "--input", CONVERSATION, "--status",
                     *extra]) == 2
    text = capsys.readouterr().err.strip()
    assert text.startswith("rtverify: error: --status goes with --json") and "\n" not in text


def test_enrolment_feedback_counts_one_take_in_the_singular(capsys):
    from rtverify.cli.commands import _LineView

    _LineView("stdin", 1, 1.0)
    _LineView("stdin", 3, 10.0)
    assert capsys.readouterr().err.splitlines() == [
        "recording from stdin: 1 take and 1 s of speech needed",
        "recording from stdin: 3 takes and 10 s of speech needed"]


@pytest.mark.parametrize("argv", [["enroll", "--name", "x", "--takes", "0"],
                                  ["enroll", "--name", "x", "--timeout", "nan"],
                                  ["listen", "--input", "-", "--rate", "-5"]])
def test_bad_numbers_are_usage_errors(tmp_path, capsys, argv):
    assert cli.main(["--store", str(tmp_path), *argv]) == 2
    assert "must be >" in capsys.readouterr().err


def test_an_unexpected_exception_is_one_line_and_traceback_only_with_v(tmp_path, monkeypatch,
                                                                       capsys):
    def boom(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli.entry, "cmd_voices", boom)
    assert cli.main(["--store", str(tmp_path), "voices"]) == 4
    text = capsys.readouterr().err.strip()
    assert text == ("rtverify: internal error: RuntimeError: boom second line "
                    "(run with -v for the traceback)")
    assert cli.main(["-v", "--store", str(tmp_path), "voices"]) == 4
    assert "Traceback" in capsys.readouterr().err


def _subparsers(parser):
    import argparse
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_help_says_what_the_options_take():
    """README: `rtverify listen --model default-short` and `rtverify eval --model fusion` work
    (every command resolves a shipped model's name), and `devices --json` prints one JSON
    array (`[]` when there are none); `--help` said fewer names, 'an .onnx encoder' for eval
    and wyoming, and 'one JSON object per device'."""
    subs = _subparsers(cli.build_parser())
    for command in ("enroll", "listen", "verify", "voices", "demo", "eval", "serve", "wyoming"):
        text = " ".join(subs[command].format_help().split())
        assert "default-short" in text and "fusion" in text, (command, text)
    devices = " ".join(subs["devices"].format_help().split())
    assert "JSON array" in devices and "object per device" not in devices
