"""Faults at the sounddevice boundary: a microphone that is missing or will not open, one that
goes away during ``listen`` and comes back (or not), and input overflows.

A fake ``sounddevice`` module (``tests/fakes/sounddevice.py``) plays scripted audio through the
real MicrophoneSource callback machinery: in-process here, or in a subprocess through
``PYTHONPATH`` for the command itself. The same loss and return with a real PulseAudio device is
in ``test_device_loss.py``.
"""

import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from rich.console import Console

from rtverify.ui.console import ListenView
from rtverify.errors import DeviceError
from rtverify.apps.listen import run
from rtverify.core.pipeline import Verifier
from rtverify.events import InputLost, InputRestored
from rtverify.io.reconnect import ReconnectingMicrophone, backoff_delays
from rtverify.io.sources import MicrophoneSource

from conftest import DEMO, REPO, SR, read16k

FAKES = REPO / "tests" / "fakes"


@pytest.fixture
def fake_sd(monkeypatch):
    spec = importlib.util.spec_from_file_location("sounddevice", FAKES / "sounddevice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return module


@pytest.fixture(scope="module")
def lines(demo):
    """Alice's two lines in the demo conversation, each with a little silence around it."""
    conv = read16k(DEMO / demo["conversation"])
    ours = [ln for ln in demo["script"] if ln["speaker"] == demo["enrolled_speaker"]]
    return [conv[int((ln["start_s"] - 0.4) * SR):int((ln["end_s"] + 0.6) * SR)] for ln in ours]


class Collect:
    """A sink that keeps events and can stop the source once it has seen enough."""

    def __init__(self, source=None, until=None, slow_s=0.0):
        self.events, self.summary, self.source, self.until, self.slow_s = [], None, source, until, \
            slow_s

    def start(self, info):
        pass

    def handle(self, event):
        self.events.append(event)
        if self.slow_s and event.kind == "status":
            time.sleep(self.slow_s)
        if self.until is not None and self.until(self.events):
            self.source.close()

    def close(self, summary):
        self.summary = summary


def kinds(events):
    return [e.kind for e in events if e.kind != "status"]


def test_backoff_doubles_to_ten_seconds():
    gen = backoff_delays()
    assert [next(gen) for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_a_lost_microphone_is_reopened_and_the_open_utterance_ends_with_a_gap(
        fake_sd, session, alice_print, lines):
    first, second = lines
    cut = first[: len(first) // 2]  # the device dies in the middle of alice's first line
    fake_sd.speed = 4.0
    fake_sd.script[:] = [{"audio": cut, "then": "die"}, {"fail": "missing"}, {"fail": "open"},
                         {"audio": second, "then": "silence"}]
    waits = []
    source = ReconnectingMicrophone(None, sleep=lambda s: (waits.append(s), time.sleep(0.01)))
    sink = Collect(source, until=lambda ev: any(e.kind == "input_restored" for e in ev) and
                   ev[-1].kind == "decision")
    verifier = Verifier(session, {"alice": alice_print}, max_pending=1)
    summary = run(verifier, source, sink, {})

    assert waits == [0.5, 1.0, 2.0]  # two failed attempts, the third works
    seq = kinds(sink.events)
    lost = [e for e in sink.events if isinstance(e, InputLost)]
    assert [e.attempt for e in lost] == [0, 1, 2] and [e.retry_in_s for e in lost] == waits
    assert "stopped delivering audio" in lost[0].error
    assert "not found" in lost[1].error and "cannot open" in lost[2].error
    # the utterance open at the loss is decided at once (before any reopen), ending with a gap
    gap = next(e for e in sink.events if e.kind == "decision")
    assert gap.end_reason == "gap" and seq.index("decision") < seq.index("input_restored")
    assert gap.start_s < gap.end_s <= lost[0].t_s + 0.1
    restored = next(e for e in sink.events if isinstance(e, InputRestored))
    assert restored.attempts == 3 and restored.t_s >= lost[0].t_s + restored.gap_s - 0.01
    after = [e for e in sink.events if e.kind == "decision"][1:]
    assert after and all(d.start_s >= restored.t_s for d in after)  # time went on, not back
    assert after[-1].speaker == "alice" and after[-1].end_reason == "pause"
    assert summary["input_lost"] == 1 and "error" not in summary
    assert len(fake_sd.streams) == 2 and all(not s.active for s in fake_sd.streams)


def test_a_name_several_devices_match_is_said_to_be_ambiguous(fake_sd):
    """--device with part of a name that more than one input device has: not "not found" (it
    was found, twice), but a request for more of the name or the index."""
    from rtverify.io.sources import MicrophoneSource

    with pytest.raises(DeviceError, match="'ambiguous': names several input devices; give more"):
        MicrophoneSource("ambiguous")
    with pytest.raises(DeviceError, match="not found"):
        fake_sd.script[:] = [{"fail": "missing"}]
        MicrophoneSource("nosuch")


def test_giving_up_after_the_retry_limit(fake_sd, lines):
    fake_sd.speed = 8.0
    fake_sd.script[:] = [{"audio": lines[0][:SR], "then": "die"}] + [{"fail": "missing"}] * 5
    waits = []
    source = ReconnectingMicrophone(None, max_retries=2, sleep=waits.append)
    with pytest.raises(DeviceError, match="not found"):
        for _ in source:
            pass
    assert waits == [0.5, 1.0] and source.outages == 1


def test_a_view_shows_the_outage(fake_sd):
    view = ListenView("rtverify listen", "fake mic", ["alice"], "0.75")
    view.handle(InputLost(3.0, "fake mic (#0): stopped delivering audio", 2, 2.0))
    text = render(view)
    assert "NO INPUT" in text and "attempt 3" in text
    view.handle(InputRestored(9.0, 6.0, 3))
    assert "NO INPUT" not in render(view) and "listening" in render(view)


def render(view):
    console = Console(width=80, height=24, record=True, force_terminal=True, color_system=None,
                      file=io.StringIO())
    console.print(view)
    return console.export_text()


# -- overflows ----------------------------------------------------------------------------------
def test_overflows_are_counted_shown_and_processing_catches_up(fake_sd, session, alice_print,
                                                                lines, caplog):
    """The device delivers a line 20x faster than real time; the consumer is held up 20 ms on
    each status event (10 per second of audio: at most 5x real time), so blocks are dropped.
    Then the other line comes at real time, and must be decided as usual."""
    tail = np.concatenate([lines[1], np.zeros(SR // 2, np.float32)])
    audio = np.concatenate([lines[0], tail])
    fake_sd.speed = 20.0
    fake_sd.script[:] = [{"audio": lines[0], "tail": tail, "then": "silence"}]
    source = MicrophoneSource(None, queue_s=0.3)
    stream = fake_sd.streams[0]
    lags = []

    def enough(events):
        e = events[-1]
        if e.kind == "status":
            lags.append(stream.delivered / SR - e.t_s)  # device time not yet processed
            return e.t_s > len(audio) / SR + 0.5
        return False

    sink = Collect(source, until=enough, slow_s=0.02)
    verifier = Verifier(session, {"alice": alice_print}, max_pending=1, status_every_s=0.1)
    with caplog.at_level(logging.WARNING, logger="rtverify"):
        summary = run(verifier, source, sink, {})

    statuses = [e for e in sink.events if e.kind == "status"]
    counts = [s.overflows for s in statuses]
    assert summary["overflows"] == source.overflows > 0 and counts[-1] == source.overflows
    assert counts == sorted(counts)  # counted as they happen
    assert "input overflow" in caplog.text
    # Once the device is back to real time, processing catches up, and because dropped audio
    # moved the stream time on, stream time then matches the device's again (were the holes
    # spliced over, it would trail by all the audio dropped, over a second here).
    assert abs(lags[-1]) < 0.2 and max(lags) > 0.3, lags
    last = [e for e in sink.events if e.kind == "decision"][-1]
    assert last.speaker == "alice" and last.start_s > len(lines[0]) / SR - 0.5
    view = ListenView("rtverify listen", "fake mic", ["alice"], "0.75")
    for e in sink.events:
        view.handle(e)
    assert f"overflows {source.overflows}" in render(view)


def test_dropped_blocks_leave_a_gap_in_stream_time(fake_sd):
    """Blocks the callback cannot queue are skipped in stream time, not spliced over."""
    fake_sd.speed = 1.0
    fake_sd.script[:] = [{"audio": np.zeros(SR, np.float32), "then": "silence"}]
    source = MicrophoneSource(None, queue_s=0.06)  # room for 2 blocks of 30 ms
    time.sleep(0.5)  # nobody reads: the queue fills and later blocks are dropped
    chunks = []
    for chunk in source:
        chunks.append(chunk)
        if chunk.end_s > 0.8:
            break
    source.close()
    jumps = [b.start_s - a.end_s for a, b in zip(chunks, chunks[1:])]
    assert source.overflows >= 5
    assert max(jumps) > 0.2 and all(j > -1e-9 for j in jumps)
    assert chunks[-1].end_s == pytest.approx(fake_sd.streams[0].delivered / SR, abs=0.2)


def test_a_device_that_never_closes_does_not_hold_up_the_end(fake_sd, monkeypatch):
    """Stopping a stream can block in a sound server that stopped answering; closing the
    source gives up after a bound, so listen still writes its summary and exits."""
    fake_sd.speed = 1.0
    fake_sd.script[:] = [{"audio": np.zeros(SR // 10, np.float32), "then": "silence",
                          "close_hangs": True}]
    monkeypatch.setattr(MicrophoneSource, "CLOSE_TIMEOUT_S", 0.5)
    source = MicrophoneSource(None)
    next(iter(source))
    t0 = time.monotonic()
    source.close()
    assert time.monotonic() - t0 < 2.0


# -- the command, with the fake device in a subprocess -----------------------------------------
def rtv(tmp_path, script, *args, speed=4.0, timeout=60):
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"script": script, "speed": speed}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKES), str(REPO)]),
           "FAKE_SOUNDDEVICE_SCRIPT": str(path), "RTVERIFY_HOME": str(tmp_path / "voices")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rtverify", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    proc = subprocess.run([sys.executable, "-m", "rtverify", "--store", str(root / "voices"),
                           "enroll", "--name", "alice", "--input", DEMO / "enroll_1.flac",
                           DEMO / "enroll_2.flac"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root / "voices"


@pytest.mark.parametrize("script,words", [([], ["default input", "not found"]),
                                          ([{"fail": "open"}], ["fake mic", "cannot open"])])
@pytest.mark.parametrize("command", [["listen", "--json"], ["enroll", "--name", "bob"]])
def test_a_missing_or_broken_microphone_is_a_one_line_error_at_start(tmp_path, voices, script,
                                                                     words, command):
    import shutil

    shutil.copytree(voices, tmp_path / "voices")
    before = sorted(p.name for p in (tmp_path / "voices").iterdir())
    proc, wall_s = rtv(tmp_path, script, *command)
    assert proc.returncode == 2, proc.stderr
    text = proc.stderr.strip()
    assert text.startswith("rtverify: error: ") and "\n" not in text, text
    assert all(w in text for w in words), text
    assert "reopening" not in text and wall_s < 30  # not retried: there is nothing to return to
    assert sorted(p.name for p in (tmp_path / "voices").iterdir()) == before


def test_listen_gives_up_after_retries_with_a_summary(tmp_path, voices, lines):
    import shutil

    import soundfile as sf

    shutil.copytree(voices, tmp_path / "voices")
    wav = tmp_path / "line.wav"
    sf.write(wav, np.concatenate([lines[0], lines[1][: SR]]), SR)
    proc, wall_s = rtv(tmp_path, [{"audio": str(wav), "then": "die"}, {"fail": "missing"},
                                  {"fail": "open"}], "listen", "--json", "--retries", "2")
    assert proc.returncode == 2, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    seq = [e["event"] for e in events]
    assert seq[0] == "ready" and seq[-1] == "summary" and "Traceback" not in proc.stderr
    assert [e["attempt"] for e in events if e["event"] == "input_lost"] == [0, 1]
    decisions = [e for e in events if e["event"] == "decision"]
    assert decisions[0]["speaker"] == "alice" and decisions[-1]["end_reason"] == "gap"
    summary = events[-1]
    assert summary["input_lost"] == 1 and "cannot open" in summary["error"]
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("rtverify: error: fake mic") and "cannot open" in err[-1]
    assert sum("reopening it in" in line for line in err) == 2


def test_a_silent_device_is_given_longer_to_start_than_to_keep_going(fake_sd):
    fake_sd.speed = 1.0
    fake_sd.script[:] = [{"audio": np.zeros(0, np.float32), "then": "hang"},
                         {"audio": np.zeros(SR // 2, np.float32), "then": "hang"}]
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="delivered no audio for 1 s"):
        list(MicrophoneSource(None, start_timeout_s=1.0, stall_s=0.3))
    assert 0.9 < time.monotonic() - t0 < 3.0
    source = MicrophoneSource(None, start_timeout_s=1.0, stall_s=0.3)
    with pytest.raises(DeviceError, match="delivered no audio for 0.3 s"):
        for _ in source:
            pass
    assert source.position_s == pytest.approx(0.5, abs=0.05)


def test_listen_at_a_silent_microphone_ends_when_its_reader_goes_away(tmp_path, voices):
    """`rtverify listen --json | head -1` in a quiet room: nothing more is written, so no write
    ever met the closed pipe and listen (and the shell pipeline waiting on it) went on until
    somebody spoke. It ends, with 0, once the reader is gone."""
    import shutil

    shutil.copytree(voices, tmp_path / "voices")
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"script": [{"audio": [0.0] * 1600, "then": "silence"}],
                                "speed": 1.0}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAKES), str(REPO)]),
           "FAKE_SOUNDDEVICE_SCRIPT": str(path), "RTVERIFY_HOME": str(tmp_path / "voices")}
    for args in (["--json"], []):
        proc = subprocess.Popen([sys.executable, "-m", "rtverify", "listen", *args], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline(), proc.stderr.read()  # `ready`, or the console's title
            proc.stdout.close()  # head -1 has what it wanted
            t0 = time.monotonic()
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = proc.stderr.read().decode()
        assert proc.returncode == 0, stderr
        assert time.monotonic() - t0 < 5 and "Traceback" not in stderr and "error" not in stderr
