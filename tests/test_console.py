"""The live console: what it shows, that it fits 80x24, and how it looks in a real terminal."""

import dataclasses
import io
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from rtverify.core.pipeline import Verifier
from rtverify.events import DecisionEvent, Tally
from rtverify.ui.console import ConsoleSink, ListenView, clock, meter

from conftest import DEMO, REPO, SR, chunks_of, read16k


@pytest.fixture(scope="module")
def events(session, conversation, alice_print):
    verifier = Verifier(session, {"alice": alice_print}, max_pending=1, status_every_s=0.1)
    return list(verifier.process(chunks_of(conversation, 1600)))


def render(view, width=80, height=24):
    console = Console(width=width, height=height, record=True, force_terminal=True,
                      color_system=None, file=io.StringIO())
    console.print(view)
    return console.export_text().rstrip("\n").split("\n")


def test_view_shows_state_level_rows_and_counts_within_80x24(events):
    view = ListenView("rtverify listen", "conversation.flac", ["alice"], "0.75")
    mid = next(i for i, e in enumerate(events) if e.kind == "provisional")
    for e in events[:mid + 1]:
        view.handle(e)
    lines = render(view)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert "● SPEECH" in text and "(provisional)" in text and "dBFS" in text
    for e in events[mid + 1:]:
        view.handle(e)
    lines = render(view)
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert "○ listening" in text
    assert text.count("✔ alice") == 3 and text.count("✘ rejected") == 3
    assert "6 decisions" in text and "overflows 0" in text
    row = next(ln for ln in lines if "✔ alice" in ln)
    assert row.split()[0] == clock(next(e for e in events if e.kind == "decision").start_s)


def test_many_decisions_keep_the_latest_and_still_fit(events):
    view = ListenView("rtverify listen", "x", ["alice", "bob"], "0.75")
    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    for k in range(5):
        for d in decisions:
            view.handle(d)
    for height in (24, 16):
        lines = render(view, height=height)
        assert len(lines) <= height and max(map(len, lines)) <= 80
    assert "30 decisions" in "\n".join(lines)


def test_meter_scale():
    assert meter(0.0, None, 10).plain == "█" * 10
    assert meter(-60.0, None, 10).plain == "·" * 10
    assert meter(-30.0, None, 10).plain == "█" * 5 + "·" * 5
    assert meter(-120.0, -30.0, 10).plain == "·" * 5 + "|" + "·" * 4  # noise floor mark


def test_sink_on_a_terminal_redraws_and_ends_with_the_summary(events):
    buf = io.StringIO()
    console = Console(width=80, height=24, force_terminal=True, color_system=None, file=buf)
    sink = ConsoleSink(ListenView("rtverify listen", "x", ["alice"], "0.75"), console,
                       refresh_s=0.0)
    sink.start({})
    for e in events:
        sink.handle(e)
    sink.close(dataclasses.replace(Tally().summary(interrupted=True), overflows=2))
    out = buf.getvalue()
    assert out.count("\x1b[") > 100  # redrawn in place many times
    assert "stopped." in out
    assert "6 decisions: 3 accepted (alice 3), 3 rejected, 0 too short, 2 overflows" in out


HOOKS = ("--on-accept 'echo hook-ran-for-$RTVERIFY_SPEAKER' "
         "--on-reject 'echo hook-refused-$RTVERIFY_BEST >&2; exit 4'")


@pytest.mark.slow
@pytest.mark.parametrize("hooks", ["", HOOKS], ids=["plain", "hooks"])
def test_listen_under_tmux_is_readable_at_80x24(tmp_path, hooks):
    """The real thing in a real terminal: tmux 80x24, screen read back with capture-pane. With
    --on-accept/--on-reject, what the commands print (and the warning for the one that fails)
    comes above the view, never across it."""
    if shutil.which("tmux") is None:
        if os.environ.get("RTVERIFY_REQUIRE_DEVICE_TEST") == "1":
            pytest.fail("tmux is required (RTVERIFY_REQUIRE_DEVICE_TEST=1) but not installed")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    store = tmp_path / "voices"
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    enroll = [str(DEMO / "enroll_1.flac"), str(DEMO / "enroll_2.flac")]
    subprocess.run([sys.executable, "-m", "rtverify", "enroll", "--name", "alice", "--input",
                    *enroll], cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    clip = tmp_path / "clip.wav"  # the first two lines of the conversation: alice, then a stranger
    sf.write(clip, read16k(DEMO / "conversation.flac")[: int(11.8 * SR)], SR)
    sock = str(tmp_path / "tmux.sock")
    done = tmp_path / "done"
    cmd = (f"RTVERIFY_HOME={store} {sys.executable} -m rtverify listen --input {clip} --realtime {hooks};"
           f" touch {done}; sleep 30")
    tmux = ["tmux", "-S", sock]
    subprocess.run(tmux + ["new-session", "-d", "-x", "80", "-y", "24", "-c", str(REPO), cmd],
                   check=True, timeout=30, env={**env, "TERM": "xterm-256color"})
    try:
        def screen(*scrollback):
            return subprocess.run(tmux + ["capture-pane", "-p", *scrollback],
                                  capture_output=True, text=True, timeout=10).stdout

        deadline = time.monotonic() + 60
        during = ""
        while time.monotonic() < deadline and not done.exists():
            text = screen()
            if "(provisional)" in text and "✔ alice" in text:
                during = text
            time.sleep(0.2)
        final = screen()
        above = screen("-S", "-100")
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True, timeout=10)
    assert done.exists(), final
    assert during, "never saw a provisional score next to a decision row:\n" + final
    for text in (during, final):
        lines = text.rstrip("\n").split("\n")
        assert len(lines) <= 24 and max(map(len, lines)) <= 80
        top = next(i for i, line in enumerate(lines) if "rtverify listen" in line)
        assert top == 0 or hooks, text  # the commands' lines may stand above the view ...
        assert not any(c in "".join(lines[:top]) for c in "╭╰│─"), text  # ... never pieces of it
        assert text.count("rtverify listen") == 1 and "level" in text, text  # one view
    assert "✔ alice" in final and "✘ rejected" in final
    assert "3 decisions: 2 accepted (alice 2), 1 rejected" in final
    assert "Traceback" not in final
    if hooks:
        head = above[:above.index("rtverify listen")]  # printed above the view
        assert head.count("hook-ran-for-alice") == 2 and "hook-refused-alice" in head, above
        # the failure is reaped when the stream has ended: its warning follows the summary
        assert "--on-reject exited with status 4 for unknown (best alice)" in above, above


def test_an_error_mid_stream_still_closes_the_live_view(events):
    from rtverify.errors import DeviceError
    from rtverify.apps.listen import run

    class FailingSource:
        overflows = 3
        closed = False

        def __iter__(self):
            yield from chunks_of(read16k(DEMO / "enroll_2.flac"), 1600)
            raise DeviceError("pulse (#0): stopped delivering audio")

        def close(self):
            FailingSource.closed = True

    class FakeVerifier:
        def process(self, source):
            for chunk in source:
                yield from events[:1]

        def finish(self):
            return []

        def summary(self, *, interrupted=False, error=None, source=None):
            return Tally().summary(interrupted=interrupted, error=error)

    buf = io.StringIO()
    console = Console(width=80, height=24, force_terminal=True, color_system=None, file=buf)
    sink = ConsoleSink(ListenView("rtverify listen", "x", ["alice"], "0.75"), console)
    with pytest.raises(DeviceError):
        run(FakeVerifier(), FailingSource(), sink, {})
    assert FailingSource.closed and sink.live is not None and not sink.live.is_started
    assert "\x1b[?25h" in buf.getvalue()  # the cursor is shown again
