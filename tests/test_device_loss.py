"""The microphone going away under ``listen`` and coming back, for real: the PulseAudio null sink
behind the virtual microphone of ``test_device.py`` is unloaded and loaded again (same fixture,
same skip rules; a file of its own to keep each test file short)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import DEMO, REPO
from test_device import play, pulse  # noqa: F401  (pulse is the fixture)

pytestmark = [pytest.mark.device, pytest.mark.slow]


def test_listen_survives_the_microphone_going_away_and_coming_back(pulse, tmp_path):
    """Unload the null sink (the virtual microphone vanishes) while listen runs, load it again:
    listen reports the loss, keeps retrying, reopens the device and goes on deciding."""
    import queue
    import threading

    env = {**pulse, "RTVERIFY_HOME": str(tmp_path / "voices")}
    enroll = subprocess.run([sys.executable, "-m", "rtverify", "enroll", "--name", "alice",
                             "--input", DEMO / "enroll_1.flac", DEMO / "enroll_2.flac"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert enroll.returncode == 0, enroll.stderr

    def null_sink_module():
        mods = subprocess.run(["pactl", "list", "short", "modules"], env=env, capture_output=True,
                              text=True, timeout=10).stdout.splitlines()
        return next((m.split()[0] for m in mods if "module-null-sink" in m), None)

    listen = subprocess.Popen(
        [sys.executable, "-m", "rtverify", "listen", "--device", "pulse", "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in listen.stdout],
                     daemon=True).start()
    events = []

    def until(kind, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                events.append(lines.get(timeout=0.2))
            except queue.Empty:
                continue
            if events[-1]["event"] == kind:
                return events[-1]
        raise AssertionError(f"no {kind} within {timeout_s} s: {events[-5:]}")

    try:
        until("ready", 60)
        play(env, "enroll_1.flac")
        first = until("decision", 20)
        module = null_sink_module()
        subprocess.run(["pactl", "unload-module", module], env=env, check=True, timeout=10)
        lost = until("input_lost", 20)
        time.sleep(2.0)  # a few failed attempts while it is gone
        subprocess.run(["pactl", "load-module", "module-null-sink", "sink_name=vmic"], env=env,
                       check=True, timeout=10, capture_output=True)
        restored = until("input_restored", 30)  # its monitor is the only source: the default
        # A stream opened through the ALSA pulse plugin may take seconds to deliver its first
        # audio (or, on a sink just created, be reopened once), so keep playing until a decision.
        deadline = time.monotonic() + 60
        while True:
            play(env, "enroll_2.flac")
            try:
                after = until("decision", 3)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        listen.send_signal(signal.SIGTERM)
        listen.wait(timeout=30)
        while True:
            try:
                events.append(lines.get(timeout=2))
            except queue.Empty:
                break
    finally:
        if listen.poll() is None:
            listen.kill()
    stderr = listen.stderr.read()
    assert listen.returncode == 0, stderr
    assert first["speaker"] == "alice" and after["speaker"] == "alice"
    assert "stopped delivering audio" in lost["error"] or "delivered no audio" in lost["error"]
    assert restored["t_s"] > lost["t_s"] and after["start_s"] >= restored["t_s"]
    outages = sum(e["event"] == "input_lost" and e["attempt"] == 0 for e in events)
    assert events[-1]["event"] == "summary" and events[-1]["input_lost"] == outages >= 1
    assert "reopening it in" in stderr and "audio is back" in stderr and "Traceback" not in stderr
    # the attempts to reopen it print only rtverify's lines: ALSA's and PortAudio's own (8-10
    # an attempt) are muted; the few PortAudio's thread prints as the device goes are not ours
    said = stderr.splitlines()
    first_ours = next(i for i, line in enumerate(said) if line.startswith("rtverify:"))
    assert all(line.startswith("rtverify:") for line in said[first_ours:]), stderr
