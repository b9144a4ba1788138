"""The fusion of the two shipped encoders as a model of its own (issue 11, score fusion): its
front-end, its embedding, its sidecar's checks, and ``--model fusion`` end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtverify.core.encoder import (MODELS_DIR, EncoderSession, FusedEncoderSession,
                                   resolve_model, shipped_models)
from rtverify.core.fbank import fbank
from rtverify.core.features import mel_spectrogram
from rtverify.core.fusion import ConcatFeatureConfig, StreamingConcat
from rtverify.core.pipeline import embed_recording
from rtverify.errors import ModelError
from rtverify.io.sources import Chunk, FileSource

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def fusion():
    return EncoderSession("fusion", threads=1)


def _audio(name):
    return np.concatenate([c.samples for c in FileSource(DATA / name)])


def test_fusion_is_a_shipped_model_opened_by_name(fusion):
    assert "fusion" in shipped_models()
    assert resolve_model("fusion") == MODELS_DIR / "fusion.json"
    assert isinstance(fusion, FusedEncoderSession)
    assert [p.model_id.rsplit("-", 1)[0] for p in fusion.parts] == ["default", "campp"]
    assert fusion.dim == 256 + 192 and fusion.model_id.startswith("fusion-")
    assert isinstance(EncoderSession("campp"), EncoderSession)
    assert not isinstance(EncoderSession("campp"), FusedEncoderSession)


@pytest.mark.parametrize("chunk", [160, 333, 4800])
def test_front_end_puts_the_parts_rows_side_by_side_aligned(fusion, chunk):
    x = _audio("espeak_enroll_1.flac")[:40000]
    front = StreamingConcat(fusion.features)
    got = [front.push(x[a:a + chunk]) for a in range(0, len(x), chunk)] + [front.flush()]
    rows = np.concatenate(got)
    mel, fb = mel_spectrogram(x), fbank(x)
    # mel rows are centred on their hop, Kaldi's start at the first sample: one mel row later
    k = min(len(mel) - 1, len(fb))
    assert len(rows) == k
    np.testing.assert_allclose(rows[:, :40], mel[1:k + 1], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(rows[:, 40:], fb[:k], rtol=1e-5, atol=1e-4)


def test_a_fused_cosine_is_the_weighted_mean_of_the_parts_cosines(fusion):
    x = _audio("espeak_enroll_1.flac")
    y = _audio("arabic_00000003_seven_02.flac")
    front = StreamingConcat(fusion.features)
    a = np.concatenate([front.push(x), front.flush()])[:300]
    b = np.concatenate([front.push(np.tile(y, 4)), front.flush()])[:300]
    fa, fb_ = fusion.embed(np.stack([a, b]))
    np.testing.assert_allclose(np.linalg.norm([fa, fb_], axis=1), 1.0, atol=1e-5)
    lstm, campp = fusion.parts
    w_l, w_c = fusion.weights
    # the LSTM embeds its own 1.6 s windows across the 3 s window and averages them
    la = lstm.embed(np.stack([a[:160, :40], a[140:, :40]])).sum(0)
    lb = lstm.embed(np.stack([b[:160, :40], b[140:, :40]])).sum(0)
    cos_l = float(la @ lb / np.linalg.norm(la) / np.linalg.norm(lb))
    ca, cb = campp.embed(np.stack([a[:, 40:], b[:, 40:]]))
    cos_c = float(ca @ cb)
    # (1e-3: the int8 LSTM quantises its activations per batch, and the fusion batches the
    # windows of both rows together)
    assert float(fa @ fb_) == pytest.approx(w_l * cos_l + w_c * cos_c, abs=1e-3)
    assert (w_l, w_c) == pytest.approx((0.4, 0.6))


def test_short_rows_use_each_parts_short_segment_rule(fusion):
    x = _audio("fsdd_jackson_7_3.flac")
    front = StreamingConcat(fusion.features)
    rows = np.concatenate([front.push(x), front.flush()])[:120]
    got = fusion.embed(rows[None])[0]
    lstm, campp = fusion.parts
    from rtverify.core.encoder import short_view_inputs
    views = short_view_inputs(rows[:, :40], 160, lstm.window.short_views)
    want_l = lstm.embed(np.stack(views)).sum(0)
    want_l /= np.linalg.norm(want_l)
    want_c = campp.embed(rows[None, :, 40:])[0]
    np.testing.assert_allclose(got[:256], np.sqrt(0.4) * want_l, atol=1e-5)
    np.testing.assert_allclose(got[256:], np.sqrt(0.6) * want_c, atol=1e-5)


def test_live_path_separates_voices_and_is_chunk_invariant(fusion):
    def emb(name, chunk=None):
        x = _audio(name)
        if chunk is None:
            return embed_recording(fusion, [Chunk(x, 0.0)]).vector
        return embed_recording(fusion, [Chunk(x[a:a + chunk], a / 16000)
                                        for a in range(0, len(x), chunk)]).vector

    a, b = emb("espeak_enroll_1.flac"), emb("espeak_enroll_2.flac")
    other = emb("arabic_00000003_seven_02.flac")
    assert a.shape == (448,)
    assert float(a @ b) > 0.7 > 0.4 > float(a @ other)
    np.testing.assert_allclose(emb("espeak_enroll_1.flac", 480), a, atol=1e-5)


def _copy_models(tmp_path):
    for name in ("default-short.onnx", "default-short.json", "campp.onnx", "campp.json",
                 "fusion.json"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    side = json.loads((tmp_path / "fusion.json").read_text())
    for part in side["fusion"]["parts"]:
        part["model"] = part["model"] + ".onnx"  # the copies beside the sidecar
    (tmp_path / "fusion.json").write_text(json.dumps(side))
    return side


def test_parts_are_found_beside_the_sidecar_and_changes_are_refused(tmp_path):
    side = _copy_models(tmp_path)
    s = EncoderSession(tmp_path / "fusion.json")
    assert s.model_id == side["model_id"]
    assert all(p.path.parent == tmp_path for p in s.parts)
    side["fusion"]["parts"][0]["weight"] = 0.5  # another fusion: another id
    (tmp_path / "fusion.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="does not match its parts"):
        EncoderSession(tmp_path / "fusion.json")
    side["fusion"]["parts"][0]["model"] = "gone.onnx"
    (tmp_path / "fusion.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="gone.onnx.*not found"):
        EncoderSession(tmp_path / "fusion.json")
    del side["fusion"]
    (tmp_path / "fusion.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="invalid fusion block"):
        EncoderSession(tmp_path / "fusion.json")


def test_cli_enrols_and_verifies_with_the_fusion(tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rtverify", "--store", str(tmp_path / "s"),
                               *args], capture_output=True, text=True, timeout=180, env=env)

    demo = MODELS_DIR.parent / "demo"
    r = cli("enroll", "--name", "alice", "--input", str(demo / "enroll_1.flac"),
            str(demo / "enroll_2.flac"))  # the default model; the fusion is a companion
    assert r.returncode == 0, r.stderr
    held = json.loads((tmp_path / "s" / "alice.json").read_text())["models"]
    assert any(k.startswith("fusion-") for k in held)
    same = cli("verify", "--model", "fusion", "--name", "alice", "--input",
               str(demo / "enroll_2.flac"), "--json")
    assert same.returncode == 0, same.stderr
    out = json.loads(same.stdout)
    assert out["accepted"] is True
    other = cli("verify", "--model", "fusion", "--name", "alice", "--input",
                str(DATA / "arabic_00000003_seven_02.flac"), "--json")
    assert json.loads(other.stdout)["accepted"] is False
    tamper = tmp_path / "m"
    tamper.mkdir()
    side = _copy_models(tamper)
    side["model_id"] = "fusion-000000000000"
    (tamper / "fusion.json").write_text(json.dumps(side))
    bad = cli("verify", "--model", str(tamper / "fusion.json"), "--name", "alice", "--input",
              str(demo / "enroll_2.flac"))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "does not match" in bad.stderr


def test_narrowband_speech_is_told_from_the_fusions_rows(fusion):
    from rtverify.core.scoring import narrowband_audio

    x = _audio("espeak_enroll_1.flac")
    assert embed_recording(fusion, [Chunk(x, 0.0)]).band == "wide"
    assert embed_recording(fusion, [Chunk(narrowband_audio(x), 0.0)]).band == "narrow"


def test_the_service_serves_the_fusion_beside_the_default(tmp_path):
    pytest.importorskip("starlette")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_helpers import DEMO, Server, cli

    from rtverify.client import Client

    store = tmp_path / "store"
    r = cli("enroll", "--name", "alice", "--input", str(DEMO / "enroll_1.flac"),
            str(DEMO / "enroll_2.flac"), store=store)
    assert r.returncode == 0, r.stderr
    server = Server(store, "--model", "fusion", "--model", "default", "--workers", "1")
    try:
        c = Client(server.url)
        ids = c.health()["models"]
        assert ids[0].startswith("fusion-") and ids[1].startswith("default-")
        same = c.verify("alice", DEMO / "enroll_2.flac")
        assert same["model_id"] == ids[0] and same["accepted"] is True
        other = c.verify("alice", DATA / "arabic_00000003_seven_02.flac")
        assert other["accepted"] is False
    finally:
        server.stop()
