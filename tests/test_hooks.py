"""``listen --on-accept CMD`` / ``--on-reject CMD``: a shell command per decision, with the
decision in its environment and on its stdin, never in the way of listening or of ``--json``."""

from __future__ import annotations

import json
import logging

import pytest

from rtverify.errors import InputError
from rtverify.hooks import Hooks, check_command

from serve_helpers import DEMO, Server, cli  # noqa: E402

ON_ACCEPT = 'cat > "$OUT/accept-$RTVERIFY_START_S.json"; echo noise-on-stdout'
ON_REJECT = ('echo "$RTVERIFY_EVENT|$RTVERIFY_SPEAKER|$RTVERIFY_BEST|$RTVERIFY_SCORE|'
             '$RTVERIFY_THRESHOLD|$RTVERIFY_SOURCE" > "$OUT/reject-$RTVERIFY_START_S.txt"; exit 3')


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = tmp_path_factory.mktemp("hooks") / "voices"
    r = cli("enroll", "--name", "alice", "--input", str(DEMO / "enroll_1.flac"),
            str(DEMO / "enroll_2.flac"), store=store)
    assert r.returncode == 0, r.stderr
    return store


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
        r = cli("listen", "--server", server.ws, "--input", str(DEMO / "conversation.flac"),
                "--json", "--on-accept", ON_ACCEPT, "--on-reject", ON_REJECT, store=store,
                env_extra={"OUT": str(tmp_path)})
        ready = json.loads(r.stdout.splitlines()[0])
        _check_hooks_ran(r, tmp_path, ready["source"])
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
    for cmd in ("FOO=1 env", "if true; then echo x; fi", "echo $RTVERIFY_SPEAKER", "sh -c true"):
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
