"""``listen --on-accept CMD`` / ``--on-reject CMD``: a shell command per decision, with the
decision in its environment and on its stdin, never in the way of listening or of ``--json``."""

from __future__ import annotations

import json
import logging

import pytest

from rtverify.errors import InputError
from rtverify.hooks import Hooks, check_command

from serve_helpers import DEMO, Server, alice_store, cli  # noqa: E402

ON_ACCEPT = 'cat > "$OUT/accept-$RTVERIFY_START_S.json"; echo noise-on-stdout'
ON_REJECT = ('echo "$RTVERIFY_EVENT|$RTVERIFY_SPEAKER|$RTVERIFY_BEST|$RTVERIFY_SCORE|'
             '$RTVERIFY_THRESHOLD|$RTVERIFY_SOURCE" > "$OUT/reject-$RTVERIFY_START_S.txt"; exit 3')


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return alice_store(tmp_path_factory, "hooks")


def _check_hooks_ran(r, out, source):
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]  # the hooks' output is not here
    decisions = [e for e in events if e["event"] == "decision"]
    accepted = [e for e in decisions if e["accepted"]]
    refused = [e for e in decisions if e["reason"] == "below_threshold"]
    assert accepted and refused  # the demo conversation has both
    # each accepted decision's JSON reached its command's stdin, whole
    got = {p.name: json.loads(p.read_text()) for p in out.glob("accept-*.json")}
    assert got == {f"accept-{e['start_s']}.json": e for e in accepted}
    # each refusal ran the other command, with the decision in its environment
    for e in refused:
        line = (out / f"reject-{e['start_s']}.txt").read_text().strip()
        assert line == (f"reject||{e['best']}|{e['score']}|{e['threshold']}|{source}")
    assert len(list(out.glob("reject-*"))) == len(refused)
    # the hooks' stdout went to stderr; a failing one is a warning naming it and the decision
    assert r.stderr.count("noise-on-stdout") == len(accepted)
    failed = [ln for ln in r.stderr.splitlines() if "--on-reject exited with status 3" in ln]
    assert len(failed) == len(refused)
    assert "Traceback" not in r.stderr


def test_listen_runs_a_command_per_decision(store, tmp_path):
    conv = str(DEMO / "conversation.flac")
    r = cli("listen", "--input", conv, "--json", "--on-accept", ON_ACCEPT, "--on-reject",
            ON_REJECT, store=store, env_extra={"OUT": str(tmp_path)})
    _check_hooks_ran(r, tmp_path, conv)


def test_listen_at_a_server_runs_the_commands_here(store, tmp_path):
    pytest.importorskip("starlette")
    server = Server(store)
    try:
        conv = str(DEMO / "conversation.flac")
        r = cli("listen", "--server", server.ws, "--input", conv, "--json", "--on-accept",
                ON_ACCEPT, "--on-reject", ON_REJECT, store=store,
                env_extra={"OUT": str(tmp_path)})
        _check_hooks_ran(r, tmp_path, conv)  # the source listened to here, not the connection
    finally:
        server.stop()


@pytest.mark.parametrize("cmd,why", [
    ("unlokk.sh --now", "command 'unlokk.sh' not found"),
    ("'abc", "No closing quotation"),
    ("", "is empty"),
    ("./no-such-hook.sh", "is not an executable file"),
])
def test_a_command_that_cannot_run_is_one_line_before_listening(store, cmd, why):
    r = cli("listen", "--input", str(DEMO / "enroll_1.flac"), "--on-reject", cmd, store=store)
    assert r.returncode == 2 and why in r.stderr and "--on-reject" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def test_shell_forms_are_taken_as_they_are():
    for cmd in ("FOO=1 env", "if true; then echo x; fi", "echo $RTVERIFY_SPEAKER", "sh -c true",
                "$HOME/bin/unlock.sh", '"$SCRIPT" --now', "~/bin/unlock.sh", "(sleep 1; true) &",
                ">/tmp/x echo hi", "# nothing", "alias x=y"):
        assert check_command(cmd, "--on-accept") == cmd
    with pytest.raises(InputError, match="--on-accept"):
        check_command("no-such-command-anywhere", "--on-accept")


def test_commands_never_pile_up_and_the_end_waits_a_bounded_time(monkeypatch, caplog, tmp_path):
    import rtverify.hooks as hooks_mod

    monkeypatch.setattr(hooks_mod, "MAX_RUNNING", 2)
    hooks = Hooks(on_accept="sleep 30", on_reject=f"touch {tmp_path}/rejected")
    accept = {"accepted": True, "reason": "accepted", "speaker": "alice", "start_s": 1.0}
    with caplog.at_level(logging.WARNING, logger="rtverify.hooks"):
        for i in range(3):
            hooks.decision({**accept, "start_s": float(i)})
        assert hooks.started == 2 and hooks.skipped == 1
        assert "2 commands still running; not run for alice at 2.00 s" in caplog.text
        # too short to decide, or a sound: no command
        hooks.decision({"accepted": False, "reason": "too_short", "start_s": 5.0})
        assert hooks.started == 2 and not (tmp_path / "rejected").exists()
        procs = [p for p, _, _ in hooks.running]
        try:
            hooks.close(wait_s=0.2)
            assert "2 hook command(s) still running after 0.2 s; left to finish" in caplog.text
        finally:
            for p in procs:
                p.kill()
                p.wait()
    # a refusal with no --on-accept slot free is still run: the limit counts running ones
    hooks.decision({"accepted": False, "reason": "below_threshold", "best": "bob",
                    "start_s": 6.0})
    hooks.close()
    assert (tmp_path / "rejected").exists() and hooks.started == 3


def test_output_is_relayed_in_bounded_pieces_each_ending_a_line(monkeypatch):
    """A command printing megabytes without a newline is relayed in pieces of at most
    RELAY_BYTES (it was read whole, as one line, into memory), and output that does not end a
    line gets a newline so listen's own messages start on their own."""
    import rtverify.hooks as hooks_mod
    pieces = []  # what the relay writes (listen's own log lines go their way)
    monkeypatch.setattr(hooks_mod, "write_stderr", pieces.append)
    hooks = Hooks(on_accept="head -c 200000 /dev/zero | tr '\\0' x; printf '\\nlast'")
    hooks.decision({"accepted": True, "reason": "accepted", "speaker": "alice", "start_s": 0.0})
    hooks.close()
    assert hooks.failed == 0
    assert max(map(len, pieces)) <= hooks_mod.RELAY_BYTES
    assert "".join(pieces) == "x" * 200000 + "\nlast\n"


def test_no_line_is_lost_while_an_mp3_is_decoded(store, tmp_path):
    """Decoding an MP3 points descriptor 2 at /dev/null for each block (libmpg123's chatter);
    a command's output relayed meanwhile from another thread went there too."""
    import numpy as np
    import soundfile as sf

    from conftest import SR, read16k

    mp3 = tmp_path / "conversation.mp3"
    sf.write(mp3, read16k(DEMO / "conversation.flac"), SR, format="MP3")
    cmd = 'i=0; while [ $i -lt 1500 ]; do echo "line-$i"; i=$((i+1)); done'
    r = cli("listen", "--input", str(mp3), "--json", "--on-accept", cmd, store=store)
    assert r.returncode == 0, r.stderr
    accepted = sum(1 for line in r.stdout.splitlines()
                   if json.loads(line)["event"] == "decision" and json.loads(line)["accepted"])
    assert accepted >= 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("line-")]
    assert len(lines) == 1500 * accepted, (len(lines), accepted)
    assert np.all([f"line-{i}" in lines for i in (0, 749, 1499)])


def test_sigterm_does_not_wait_out_the_commands(store, tmp_path):
    """After SIGTERM (or Ctrl-C) listen waits 1 s for commands still running, not 10, and says
    it is waiting; the commands are left to finish."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "--store", str(store), "listen",
                             "--input", str(DEMO / "conversation.flac"), "--realtime", "--json",
                             "--on-accept", f"touch {tmp_path}/started; sleep 20"],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in proc.stdout:  # the first accepted decision has started a command
            event = json.loads(line)
            if event["event"] == "decision" and event["accepted"]:
                break
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "waiting up to 1 s for 1 hook command(s) still running" in err, err
    assert took < 6, took  # was 10 s and more
    assert json.loads(out.splitlines()[-1])["interrupted"] is True
