"""Worker threads for recordings read faster than real time (``Verifier(workers=N)``, which
``listen --input FILE`` uses when RTVERIFY_THREADS >= 2): the same events, in the same order."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import DEMO, REPO, chunks_of
from rtverify.core.pipeline import Verifier
from rtverify.events import DecisionEvent


def _plain(events):
    out = []
    for e in events:
        d = e.to_dict()
        d.pop("decision_ms", None)
        out.append(d)
    return out


@pytest.fixture(scope="module")
def long_stream(conversation):
    """The demo conversation three times: 15 utterances, so that several are in flight."""
    return np.concatenate([conversation] * 3)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_the_same_events_in_the_same_order(session, alice_print, long_stream,
                                                         workers):
    ref = Verifier(session, {"alice": alice_print}, max_pending=8)
    want = _plain(ref.process(chunks_of(long_stream, 4096)))
    par = Verifier(session, {"alice": alice_print}, max_pending=8, workers=workers)
    try:
        got = list(par.process(chunks_of(long_stream, 4096)))
    finally:
        par.close()
    assert sum(isinstance(e, DecisionEvent) for e in got) >= 15
    assert _plain(got) == want


def test_push_waits_for_its_decisions(session, alice_print, long_stream):
    ref = Verifier(session, {"alice": alice_print}, max_pending=8)
    par = Verifier(session, {"alice": alice_print}, max_pending=8, workers=2)
    want, got = [], []
    for chunk in chunks_of(long_stream, 1600):
        want += ref.push(chunk)
        got += par.push(chunk)
    want += ref.finish()
    got += par.finish()
    par.close()
    assert _plain(got) == _plain(want)


def test_an_interrupted_run_loses_no_decision(session, alice_print, long_stream):
    """Ctrl-C in listen: the generator is abandoned, finish() hands over what was queued."""
    ref = Verifier(session, {"alice": alice_print}, max_pending=8)
    cut = len(long_stream) // 2
    want = _plain(list(ref.process(chunks_of(long_stream[:cut], 4096))))
    par = Verifier(session, {"alice": alice_print}, max_pending=8, workers=2)
    got = []
    gen = par.process(chunks_of(long_stream, 4096))
    for chunk in chunks_of(long_stream[:cut], 4096):
        par._out.extend(par._push(chunk))  # what process() does per chunk, without waiting
    gen.close()
    got += par.finish()
    par.close()
    assert _plain(got) == want


def test_listen_with_two_threads_decides_as_with_one(tmp_path):
    store = tmp_path / "voices"
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    subprocess.run([sys.executable, "-m", "rtverify", "enroll", "--name", "alice", "--input",
                    str(DEMO / "enroll_1.flac"), str(DEMO / "enroll_2.flac")],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    runs = {}
    for threads in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "rtverify", "listen", "--input",
                               str(DEMO / "conversation.flac"), "--json"], cwd=REPO,
                              env={**env, "RTVERIFY_THREADS": threads}, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        runs[threads] = [{k: v for k, v in e.items() if k != "decision_ms"} for e in events
                         if e["event"] != "ready"]
    assert sum(e["event"] == "decision" for e in runs["1"]) >= 5
    assert runs["2"] == runs["1"]
