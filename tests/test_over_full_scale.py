"""A float recording whose samples are far beyond full scale (1000x: integer values stored as
floats) was read without a word; it is still read (the decision stands), with one warning line
per input, however many times enrolment reads the file."""

from __future__ import annotations

import collections
import io
import logging

import numpy as np
import pytest
import soundfile as sf

from conftest import DEMO, read16k
from rtverify.io import sources
from rtverify.io.sources import FileSource, StdinSource
from test_cli import ENROLL, err, out, rtv

WARNING = "sample values exceed 64"


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(sources, "_over_warned", collections.deque(maxlen=32), raising=False)


@pytest.fixture(scope="module")
def speech():
    return read16k(DEMO / "enroll_1.flac")


def drain(source):
    return np.concatenate([c.samples for c in source])


def test_the_sources_warn_once_per_input(tmp_path, speech, caplog):
    loud, fine = tmp_path / "loud.wav", tmp_path / "fine.wav"
    sf.write(loud, speech * 1000, 16000, subtype="FLOAT")
    sf.write(fine, speech * 3.9, 16000, subtype="FLOAT")  # a little over 1.0: no warning
    with caplog.at_level(logging.WARNING, logger="rtverify.io.sources"):
        got = drain(FileSource(loud))
        drain(FileSource(loud))  # enrolment replays a file: still one line
        drain(FileSource(fine))
        drain(StdinSource(io.BytesIO(loud.read_bytes())))
    np.testing.assert_allclose(got, speech * 1000, rtol=1e-5, atol=1e-3)  # read as it is
    lines = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    assert len(lines) == 2 and lines[0].startswith(str(loud)) and lines[1].startswith("stdin")


def test_cli_verify_warns_in_one_line_and_decides(tmp_path, speech):
    store = tmp_path / "s"
    assert rtv("enroll", "--name", "alice", "--input", *ENROLL, store=store).returncode == 0
    loud = tmp_path / "loud.wav"
    sf.write(loud, sf.read(ENROLL[0], dtype="float32")[0] * 1000, 16000, subtype="FLOAT")
    proc = rtv("verify", "--name", "alice", "--input", loud, store=store)
    assert proc.returncode == 0 and "ACCEPTED" in out(proc), err(proc)
    warned = [ln for ln in err(proc).splitlines() if WARNING in ln]
    assert len(warned) == 1 and warned[0].startswith("rtverify: warning: ")
    assert "Traceback" not in err(proc)
