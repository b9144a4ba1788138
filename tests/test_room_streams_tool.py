"""``tools/room_streams.py`` draws its held-out streams only from speakers no model learnt from.

A small made-up corpus in the shared data's layout (a tone per speaker, so whose audio a stream
holds can be read back from it), not the shared data itself."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO, read16k

from tools import room_streams as rs
from training.dev_lists import heldout_speakers

SR = 16000
N_SPEAKERS = 20


def _tone(k: int, seconds: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (150 + 20 * k) * t) + 0.003 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def _who(x: np.ndarray) -> int:
    spec = np.abs(np.fft.rfft(x[:SR * 2] if len(x) >= 2 * SR else x))
    f = np.argmax(spec) * SR / (2 * (len(spec) - 1))
    return int(round((f - 150) / 20))


SPARSE = 0
"""A held-out speaker (every 5th in sorted order is) whose recording is real speech in short
bursts between long pauses: its first 5 s hold little of it."""


def _sparse_speech(rng) -> np.ndarray:
    x = np.concatenate([read16k(DEMO / "enroll_1.flac"), read16k(DEMO / "enroll_2.flac")])
    parts = []
    for i in range(0, len(x) - SR, SR):  # 1 s of speech, then 1.4 s of quiet
        parts += [x[i:i + SR], 0.0005 * rng.standard_normal(int(1.4 * SR)).astype(np.float32)]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    full, crops = root / "librispeech-clean100-251spk", root / "librispeech-clean100-251spk-3s"
    rows, crow = ["speaker\tpath\tduration_s\tsample_rate"], ["speaker\tpath\tduration_s\tsample_rate"]
    for k in range(N_SPEAKERS):
        spk = f"{1000 + k}"
        (full / spk).mkdir(parents=True)
        (crops / spk).mkdir(parents=True)
        audio = _sparse_speech(rng) if k == SPARSE else _tone(k, 12.0, rng)
        sf.write(full / spk / f"{spk}-a.flac", audio, SR)
        rows.append(f"{spk}\t{spk}/{spk}-a.flac\t{len(audio) / SR:.1f}\t16000")
        for c in range(2):
            sf.write(crops / spk / f"{spk}-a_c{c}.flac", _tone(k, 3.0, rng), SR)
            crow.append(f"{spk}\t{spk}/{spk}-a_c{c}.flac\t3.0\t16000")
    (full / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    (crops / "MANIFEST.tsv").write_text("\n".join(crow) + "\n")
    return root


def test_heldout_streams_use_only_heldout_speakers_and_never_the_targets_own(corpus):
    held = heldout_speakers(corpus)
    assert len(held) == N_SPEAKERS // 5
    targets, shared = rs.speakers(corpus, len(held), pool="heldout", nb_impostors=2)
    assert shared == []
    assert sorted(t.name for t in targets) == sorted(held)
    held_k = {int(s) - 1000 for s in held}
    for t in targets:
        own = int(t.name) - 1000
        if own == SPARSE:  # enrolled on enough speech, as `enroll` would take it
            assert rs._speech_s(t.enrol) >= rs.ENROL_SPEECH_S
            assert rs._speech_s(t.enrol[:5 * SR]) < rs.ENROL_SPEECH_S
            assert len(t.probes) == 2 and all(rs._speech_s(p) > 1.0 for p in t.probes)
            continue
        assert _who(t.enrol) == own and all(_who(p) == own for p in t.probes)
        whose = [_who(x) for x in t.impostors + t.nb_impostors]
        assert len(t.impostors) == 4 and len(t.nb_impostors) == 2
        assert own not in whose and set(whose) <= held_k


def test_the_default_pool_still_keeps_impostors_apart_from_every_target(corpus):
    targets, impostors = rs.speakers(corpus, 5)
    names = {int(t.name) - 1000 for t in targets}
    assert len(impostors) == 2 * (N_SPEAKERS - 5)
    assert not names & {_who(x) for x in impostors}
    assert all(t.impostors is None for t in targets)


def test_more_heldout_streams_than_speakers_is_refused(corpus):
    with pytest.raises(SystemExit, match="held-out speakers"):
        rs.speakers(corpus, N_SPEAKERS, pool="heldout")
