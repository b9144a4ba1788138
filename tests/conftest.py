"""Shared fixtures: the bundled recordings, the shipped encoder, and audio helpers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtverify.io.sources import Chunk, FileSource

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "rtverify" / "demo"
DATA = Path(__file__).resolve().parent / "data"
SR = 16000


def read16k(path) -> np.ndarray:
    """A recording as 16 kHz mono float32, through the runtime's own source."""
    return np.concatenate([c.samples for c in FileSource(path)])


def chunks_of(samples: np.ndarray, size: int, rate: int = SR):
    """Split 16 kHz samples into Chunks of ``size`` samples."""
    for i in range(0, len(samples), size):
        yield Chunk(samples[i:i + size].astype(np.float32), i / rate)


def run_segmenter(x: np.ndarray, cfg=None):
    """A signal through a fresh Segmenter one VAD frame at a time: (segment ends, all events)."""
    from rtverify.config import SegmenterConfig
    from rtverify.core.segmenter import Segmenter, SegmentEnd

    seg = Segmenter(cfg or SegmenterConfig())
    n = seg.frame_samples
    events = []
    for i in range(0, len(x) - n + 1, n):
        events += seg.push(x[i:i + n].astype(np.float32), i / SR)
    events += seg.flush()
    return [e for e in events if isinstance(e, SegmentEnd)], events


def interruptible() -> None:
    """``preexec_fn`` for a child a test will send SIGINT (Ctrl-C). A shell that runs the tests
    in the background without job control (``./.ci/run &``) ignores SIGINT, children inherit
    that, and Python then installs no KeyboardInterrupt handler; restore the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def synthetic_teachers(out: Path, n: int = 24) -> None:
    """A tiny ``teachers.npz`` in ``out`` so that ``training.distill`` needs neither the corpus
    nor CAM++: noisy tones of 6 "speakers", random CAM++ targets."""
    g = np.random.default_rng(0)
    from training.distill import WINDOW

    t = np.arange(WINDOW) / 16000
    wins = np.stack([0.3 * np.sin(2 * np.pi * (100 + 40 * (i % 6)) * t)
                     + 0.05 * g.standard_normal(WINDOW) for i in range(n)])
    wins = np.round(wins * 32767).astype(np.int16)
    ids = np.arange(n) % 6
    cam = g.standard_normal((n, 192)).astype(np.float32)
    cam /= np.linalg.norm(cam, axis=1, keepdims=True)
    out.mkdir(parents=True)
    np.savez(out / "teachers.npz", wins=wins, ids=ids, old=np.zeros((n, 256), np.float32),
             campp=cam)


def fsync_log(monkeypatch) -> list:
    """Records ``os.fsync`` (of which file) and ``os.replace`` (onto which), in order."""
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def write_audio(path: Path, samples: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    sf.write(path, samples, rate, subtype=subtype)
    return path


def copy_model(model_path, directory: Path, stem: str = "m") -> Path:
    """A copy of a model's ONNX file as ``directory/<stem>.onnx``, with the score-normalisation
    cohort its sidecar names beside it (the sidecar is the caller's to write); its path."""
    import shutil

    model_path = Path(model_path)
    shutil.copy(model_path, directory / f"{stem}.onnx")
    raw = json.loads(model_path.with_suffix(".json").read_text())
    cohort = (raw.get("score_norm") or {}).get("cohort")
    if cohort:
        shutil.copy(model_path.parent / cohort, directory / cohort)
    return directory / f"{stem}.onnx"


def model_with_decision(directory: Path, session, key: str, table):
    """A copy of ``session``'s model in ``directory`` whose sidecar's ``decision[key]`` is
    ``table`` (None: without that key), loaded."""
    import shutil

    from rtverify.core.encoder import EncoderSession

    copy_model(session.path, directory)
    raw = json.loads(json.dumps(session.info.raw))
    raw["decision"].pop(key, None)
    if table is not None:
        raw["decision"][key] = table
    (directory / "m.json").write_text(json.dumps(raw))
    return EncoderSession(directory / "m.onnx")


@pytest.fixture(scope="session")
def demo():
    meta = json.loads((DEMO / "conversation.json").read_text())
    meta["dir"] = DEMO
    return meta


@pytest.fixture(scope="session")
def session():
    from rtverify.core.encoder import EncoderSession

    return EncoderSession()


@pytest.fixture(scope="session")
def conversation(demo) -> np.ndarray:
    return read16k(DEMO / demo["conversation"])


@pytest.fixture(scope="session")
def alice_print(session, demo) -> np.ndarray:
    """Voiceprint of the demo's enrolled speaker from the two enrolment takes."""
    from rtverify.core.encoder import l2_normalize
    from rtverify.core.pipeline import embed_recording

    total = np.zeros(session.dim)
    for name in demo["enroll"]:
        rec = embed_recording(session, FileSource(DEMO / name))
        assert rec.vector is not None
        total += rec.vector
    return l2_normalize(total)
