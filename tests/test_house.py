"""The seams of issue 10: one typed event stream, provisional lengths, the CLI boundary, and the
small things a user sees. Each test here fails on the code as it was before."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from rich.console import Console

from conftest import DEMO, REPO, chunks_of
from rtverify.core.pipeline import Verifier
from rtverify.events import (DecisionEvent, InputLost, InputRestored, Provisional, Ready, Status,
                             Tally, plural)
from rtverify.io.sources import Chunk, IterableSource
from rtverify.ui.console import ConsoleSink, ListenView, decision_line


def rtv(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "rtverify", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# -- 1. provisional scores are judged by voiced seconds, like decisions ---------------------------
def test_provisional_speech_is_voiced_seconds_not_rows(session, conversation, alice_print):
    verifier = Verifier(session, {"alice": alice_print}, max_pending=1)
    events = list(verifier.process(chunks_of(conversation, 480)))
    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    provisionals = [e for e in events if isinstance(e, Provisional)]
    assert provisionals and decisions
    for p in provisionals:
        d = next(d for d in decisions if d.start_s == p.start_s)
        elapsed = p.t_s + 0.03 - p.start_s
        # voiced seconds never exceed the time the segment has lasted, nor the final count
        assert 0.0 < p.speech_s <= elapsed + 1e-6, (p, elapsed)
        assert p.speech_s <= d.speech_s + 1e-6, (p, d)
    # ...and are close to it at the last provisional score of a long utterance
    longest = max(decisions, key=lambda d: d.speech_s)
    last = [p for p in provisionals if p.start_s == longest.start_s][-1]
    assert last.speech_s >= 0.5 * longest.speech_s


# -- 3. one typed stream, device events included ---------------------------------------------------
class _DeviceLikeSource(IterableSource):
    """Chunks with a lost/restored device between them, as the reconnecting microphone yields."""

    def __init__(self, samples):
        half = len(samples) // 2
        t_half = half / 16000
        items = list(chunks_of(samples[:half], 1600))
        items += [InputLost(t_half, "gone", 0, 0.5), InputRestored(t_half + 2.0, 2.0, 1)]
        items += [Chunk(c.samples, c.start_s + t_half + 2.0)
                  for c in chunks_of(samples[half:], 1600)]
        super().__init__(items, name="device-like")
        self.overflows = 7


def test_source_events_come_out_of_the_pipeline_in_order_and_are_counted(session, conversation,
                                                                          alice_print):
    verifier = Verifier(session, {"alice": alice_print}, status_every_s=0.5)
    events = list(verifier.process(_DeviceLikeSource(conversation)))
    kinds = [type(e) for e in events]
    assert kinds.count(InputLost) == 1 and kinds.count(InputRestored) == 1
    assert kinds.index(InputLost) < kinds.index(InputRestored)
    summary = verifier.summary()
    assert summary.input_lost == 1 and summary.overflows == 7  # the source's own count
    assert summary.decisions == kinds.count(DecisionEvent) > 0
    assert any(isinstance(e, Status) and e.overflows == 7 for e in events)


def test_the_console_shows_the_verifiers_own_tally(session, conversation, alice_print):
    verifier = Verifier(session, {"alice": alice_print})
    view = ListenView("rtverify listen", "x", ["alice"], "0.8", tally=verifier.tally)
    for e in verifier.process(chunks_of(conversation, 4096)):
        view.handle(e)
    assert view.tally is verifier.tally and view.tally.decisions == verifier.summary().decisions
    assert verifier.summary().decisions == 6  # counted once, not once per consumer


# -- 5. the CLI boundary --------------------------------------------------------------------------
def test_global_options_work_after_the_subcommand(tmp_path):
    store = tmp_path / "voices"
    enroll = rtv("enroll", "--name", "alice", "--input", DEMO / "enroll_1.flac",
                 DEMO / "enroll_2.flac", "--store", store)
    assert enroll.returncode == 0, enroll.stderr
    assert (store / "alice.json").exists()
    voices = rtv("voices", "--store", store, "--json")
    assert voices.returncode == 0, voices.stderr
    assert [json.loads(x)["name"] for x in voices.stdout.splitlines()] == ["alice"]
    verify = rtv("verify", "--name", "alice", "--input", DEMO / "enroll_2.flac", "-v",
                 "--store", store)
    assert verify.returncode == 0, verify.stderr
    assert "DEBUG" in verify.stderr  # -v after the subcommand turns debug logs on
    # before the subcommand still works, and is not undone by leaving it out after it
    before = rtv("--store", store, "voices", "--json")
    assert [json.loads(x)["name"] for x in before.stdout.splitlines()] == ["alice"]


def test_every_usage_error_is_one_line():
    for args in (["listen", "--threshold", "7"], ["listen", "--threshold", "nan"],
                 ["enroll"], ["frobnicate"]):
        proc = rtv(*args)
        text = proc.stderr.strip()
        assert proc.returncode == 2 and "\n" not in text and text.startswith("rtverify: error: "), \
            (args, text)


def test_threshold_rule_is_the_same_in_the_cli_and_the_core(session):
    from rtverify.core.scoring import DecisionPolicy

    with pytest.raises(ValueError, match="cosine between -1 and 1"):
        DecisionPolicy(session.info.decision, 1.5)
    assert rtv("listen", "--threshold", "1.5").returncode == 2


def test_exit_codes_have_one_table():
    from rtverify.errors import ExitCode, InputError, NotEnoughSpeech

    assert InputError("x").exit_code == ExitCode.USAGE == 2
    assert NotEnoughSpeech("x").exit_code == ExitCode.NOT_ENOUGH_SPEECH == 3
    src = (REPO / "rtverify" / "cli" / "commands.py").read_text()
    assert "EXIT_" not in src and "getattr(args" not in src


# -- 7. small things a user sees -------------------------------------------------------------------
def _fake_sounddevice(tmp_path, body: str):
    (tmp_path / "sounddevice.py").write_text(textwrap.dedent(body))
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}


def test_devices_json_is_an_array_even_when_empty(tmp_path):
    env = _fake_sounddevice(tmp_path, """
        from types import SimpleNamespace
        default = SimpleNamespace(device=(-1, -1))
        def query_devices(device=None, kind=None):
            return []
    """)
    proc = rtv("devices", "--json", env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stdout + proc.stderr


def test_device_errors_are_plain_words_with_portaudio_detail_at_v(tmp_path):
    env = _fake_sounddevice(tmp_path, """
        from types import SimpleNamespace
        default = SimpleNamespace(device=(-1, -1))
        class PortAudioError(Exception):
            pass
        def query_devices(device=None, kind=None):
            raise PortAudioError("Error querying device -1")
    """)
    proc = rtv("--store", tmp_path / "v", "enroll", "--name", "bob", env=env)
    assert proc.returncode == 2
    assert "querying" not in proc.stderr and "no default input device" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    verbose = rtv("--store", tmp_path / "v", "enroll", "--name", "bob", "-v", env=env)
    assert "Error querying device -1" in verbose.stderr


def _decision(start, end, speech, accepted=True):
    return DecisionEvent(start_s=start, end_s=end, speech_s=speech,
                         speaker="alice" if accepted else None, best="alice", score=0.9,
                         accepted=accepted, scores={"alice": 0.9}, threshold=0.8, margin=0.1,
                         reason="accepted", end_reason="pause", clipped=False, level_dbfs=-20.0,
                         n_windows=1, decision_ms=1.0)


def test_console_footer_on_the_last_line_singulars_and_one_length(tmp_path):
    buf = io.StringIO()
    console = Console(width=80, height=24, force_terminal=False, color_system=None, file=buf)
    view = ListenView("rtverify listen", "x", ["alice"], "0.8")
    d = _decision(1.0, 3.1, 1.7)
    view.handle(d)
    console.print(view)
    lines = buf.getvalue().rstrip("\n").split("\n")
    assert len(lines) == 23 and "1 decision " in lines[-1] and "Ctrl-C" in lines[-1], lines
    row = next(ln for ln in lines if "alice" in ln and "0.90" in ln)
    assert "1.7 s" in row and "2.1" not in row  # the same length as the line output's
    assert "1.7 s speech" in decision_line(d)
    t = Tally()
    t.add(d)
    assert t.summary().line().startswith("1 decision: 1 accepted")
    assert plural(1, "time") == "1 time" and plural(2, "time") == "2 times"


def test_device_lost_says_when_the_next_try_is():
    view = ListenView("rtverify listen", "x", ["alice"], "0.8")
    view.handle(InputLost(3.0, "gone", 2, 4.0))
    text = view._state().plain
    assert "attempt 3 in 4 s" in text and "every" not in text


def test_json_sink_writes_ready_and_summary_from_typed_events():
    from rtverify.ui.jsonl import JsonSink

    out = io.StringIO()
    sink = JsonSink(out)
    sink.start(Ready("x.wav", "m", ["alice"], "0.80", False))
    sink.handle(_decision(0.0, 1.0, 1.0))
    sink.close(Tally().summary(interrupted=True))
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["event"] for r in rows] == ["ready", "decision", "summary"]
    assert rows[0]["voices"] == ["alice"] and rows[2]["interrupted"] is True
    assert "error" not in rows[2]
