"""Commands run on decisions: ``listen --on-accept CMD`` and ``--on-reject CMD``.

A voice lock opens the door when its owner speaks, an assistant wakes, a meeting tool logs who
said what: each is one shell command run on each decision, without a line of JSON parsing. The
command runs through ``/bin/sh -c`` (so ``$RTVERIFY_SPEAKER``, pipes and redirections work) with

* ``RTVERIFY_EVENT`` (``accept`` or ``reject``), ``RTVERIFY_SPEAKER`` (the accepted voice; empty
  on a rejection), ``RTVERIFY_BEST``, ``RTVERIFY_SCORE``, ``RTVERIFY_THRESHOLD``,
  ``RTVERIFY_MARGIN``, ``RTVERIFY_START_S``, ``RTVERIFY_END_S``, ``RTVERIFY_SPEECH_S`` and
  ``RTVERIFY_SOURCE`` in its environment,
* the decision's JSON object (``listen --json``'s line) on its standard input,
* its standard output and error relayed, line by line, to listen's standard error, so
  ``--json``'s lines stay clean and the live console prints them above its view.

Commands run beside listening, never in its way: listen does not wait for one to finish before
hearing the next utterance. At most :data:`MAX_RUNNING` run at once (a decision that finds that
many still running is skipped, with a warning); one that fails (exit status not 0) is a warning
naming the command's option and the decision; at the end listen waits up to :data:`WAIT_S` for
those still running (:data:`INTERRUPTED_WAIT_S` after Ctrl-C or SIGTERM), then leaves them to
finish. ``--on-reject`` runs for utterances heard and refused (``below_threshold``), not for
sounds dropped or utterances too short to decide.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

from .errors import InputError
from .io.stderr import write_stderr

logger = logging.getLogger(__name__)

MAX_RUNNING = 8
"""Hook commands running at once; a decision that finds this many still running is skipped."""
WAIT_S = 10.0
"""At the end, how long listen waits for hook commands still running."""
INTERRUPTED_WAIT_S = 1.0
"""The same after Ctrl-C or SIGTERM."""

_SHELL_WORDS = {"if", "for", "while", "until", "case", "alias", "type", "hash", "times", "shift",
                "return", "exec", "cd", "export", "set", "test", "echo", "printf", "true",
                "false", ".", "eval", "read", "trap", "umask", "ulimit", "command", "exit", "wait"}
"""Shell keywords and builtins a command may begin with (not looked up on PATH; syntax such as
``(``, ``{``, ``!`` or ``[`` is no plain word, see :data:`_PLAIN_WORD`)."""
_PLAIN_WORD = re.compile(r"[\w.,+@%/-]+")
"""A first word looked up before listening: nothing in it the shell would expand or treat as
syntax (``$HOME/bin/x``, ``~/x``, ``(cmd)``, ``>file cmd``, ``VAR=1 cmd`` are left to it)."""


def check_command(cmd: str | None, option: str) -> str | None:
    """``cmd`` if it can run, else an :class:`InputError` naming ``option``: empty, unbalanced
    quotes, or a first word that is neither a shell builtin nor found (on PATH, or as a path to
    an executable file)."""
    if cmd is None:
        return None
    try:
        words = shlex.split(cmd)
    except ValueError as err:
        raise InputError(f"{option} {cmd!r}: {err}") from None
    if not words:
        raise InputError(f"{option} is empty: give a command to run")
    first = words[0]
    if first in _SHELL_WORDS or not _PLAIN_WORD.fullmatch(first):
        return cmd  # syntax, a builtin, or a word the shell expands ($HOME/..., ~/...): its own
    if "/" in first:
        if not (os.path.isfile(first) and os.access(first, os.X_OK)):
            raise InputError(f"{option} {cmd!r}: {first} is not an executable file")
    elif shutil.which(first) is None:
        raise InputError(f"{option} {cmd!r}: command {first!r} not found")
    return cmd


class Hooks:
    """The commands given for accepted and rejected decisions, and those still running."""

    def __init__(self, on_accept: str | None = None, on_reject: str | None = None,
                 source: str = "") -> None:
        self.commands = {"accept": check_command(on_accept, "--on-accept"),
                         "reject": check_command(on_reject, "--on-reject")}
        self.source = source
        self.running: list[tuple[subprocess.Popen, str, str]] = []
        """(process, its option, the decision it was run for) for each command not yet
        reaped."""
        self.relays: list[threading.Thread] = []
        self.started = 0
        self.failed = 0
        self.skipped = 0

    def __bool__(self) -> bool:
        return any(self.commands.values())

    def decision(self, event: dict) -> None:
        """Run the command for one decision (``listen --json``'s object), if one is given."""
        self._reap()
        if event.get("accepted"):
            kind = "accept"
        elif event.get("reason") == "below_threshold":
            kind = "reject"
        else:
            return
        cmd = self.commands[kind]
        if cmd is None:
            return
        option, what = f"--on-{kind}", _what(event)
        if len(self.running) >= MAX_RUNNING:
            self.skipped += 1
            logger.warning("%s: %d commands still running; not run for %s", option,
                           len(self.running), what)
            return
        env = dict(os.environ, RTVERIFY_EVENT=kind, RTVERIFY_SOURCE=self.source,
                   **{f"RTVERIFY_{key.upper()}": _text(event.get(key))
                      for key in ("speaker", "best", "score", "threshold", "margin", "start_s",
                                  "end_s", "speech_s")})
        proc = None
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", cmd], env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as err:
            self.failed += 1
            logger.warning("%s: cannot run %r for %s (%s)", option, cmd, what,
                           err.strerror or err)
            return
        finally:  # tracked at once: Ctrl-C or SIGTERM may end listen on the next line
            if proc is not None:
                self.running.append((proc, option, what))
                self.started += 1
                relay = threading.Thread(target=_relay, args=(proc,), daemon=True,
                                         name="rtverify-hook-output")
                relay.start()
                self.relays = [t for t in self.relays if t.is_alive()] + [relay]
        try:
            proc.stdin.write((json.dumps(event, ensure_ascii=False) + "\n").encode())
        except OSError:  # it did not read its input (and may have exited already)
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def _reap(self) -> None:
        still = []
        for proc, option, what in self.running:
            code = proc.poll()
            if code is None:
                still.append((proc, option, what))
            elif code != 0:
                self.failed += 1
                logger.warning("%s exited with status %d for %s", option, code, what)
        self.running = still

    def close(self, wait_s: float | None = None, *, interrupted: bool = False) -> None:
        """Wait up to ``wait_s`` (default :data:`WAIT_S`, :data:`INTERRUPTED_WAIT_S` when listen
        was ``interrupted`` by Ctrl-C or SIGTERM) for the commands still running (reporting
        those that failed), then leave the rest to finish on their own."""
        if wait_s is None:
            wait_s = INTERRUPTED_WAIT_S if interrupted else WAIT_S
        self._reap()
        if self.running and wait_s > 0:
            logger.warning("waiting up to %g s for %d hook command(s) still running "
                           "(Ctrl-C leaves them)", wait_s, len(self.running))
        deadline = time.monotonic() + wait_s
        while self.running and time.monotonic() < deadline:
            self._reap()
            if self.running:
                time.sleep(0.02)
        self._reap()
        for relay in self.relays:  # what the finished ones wrote, before listen's last words
            relay.join(0.5)
        if self.running:
            logger.warning("%d hook command(s) still running after %g s; left to finish",
                           len(self.running), wait_s)


class HookSink:
    """A listen sink (see :mod:`rtverify.apps.listen`) that hands every event to ``inner`` and
    then runs ``hooks`` for each decision; closing closes ``inner``, then waits for the
    hooks."""

    def __init__(self, inner, hooks: Hooks) -> None:
        from .events import DecisionEvent, event_dict

        self.inner, self.hooks = inner, hooks
        self._decision, self._as_dict = DecisionEvent, event_dict  # imported once, not per event

    def start(self, ready) -> None:
        self.hooks.source = ready.source
        self.inner.start(ready)

    def handle(self, event) -> None:
        self.inner.handle(event)
        if isinstance(event, self._decision):
            self.hooks.decision(self._as_dict(event))

    def close(self, summary) -> None:
        try:
            self.inner.close(summary)
        finally:  # after Ctrl-C or SIGTERM, whoever stops listen does not wait 10 s more
            self.hooks.close(interrupted=summary.interrupted)


def _what(event: dict) -> str:
    who = event.get("speaker") or f"unknown (best {event.get('best')})"
    start = event.get("start_s")
    return f"{who} at {start:.2f} s" if isinstance(start, (int, float)) else who


def _text(value) -> str:
    return "" if value is None else str(value)


RELAY_BYTES = 65536
"""The longest piece of a hook's output relayed at once (a line, or this much of a longer one)."""


def _relay(proc: subprocess.Popen) -> None:
    """A hook's output, line by line, to ``sys.stderr`` (through Python, so that the live
    console's redirection prints it above the view instead of across it, and never lost to an
    MP3 decoder's muted descriptor 2); output that does not end a line gets one, so listen's
    own messages start on their own. Reaps the command when its output ends."""
    last = b"\n"
    try:
        with proc.stdout as pipe:
            for piece in iter(lambda: pipe.readline(RELAY_BYTES), b""):
                write_stderr(piece.decode(errors="replace"))
                last = piece
            if not last.endswith(b"\n"):
                write_stderr("\n")
    except (OSError, ValueError):  # stderr closed under us: nothing left to tell
        pass
    try:
        proc.wait()  # no zombie until the next decision
    except OSError:
        pass
