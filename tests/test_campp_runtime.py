"""The shipped CAM++ in the runtime (onnxruntime + numpy fbank, no torch): name resolution,
agreement with the committed torch reference, the live path and chunk-size invariance."""

from pathlib import Path

import numpy as np
import pytest

from rtverify.core.encoder import (DEFAULT_MODEL, MODELS_DIR, EncoderSession, load_model_info,
                                   resolve_model)
from rtverify.core.fbank import FbankConfig, StreamingFbank, cmn, fbank
from rtverify.core.features import StreamingFeatures
from rtverify.core.pipeline import embed_recording
from rtverify.errors import ModelError
from rtverify.io.sources import Chunk, FileSource

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def campp():
    return EncoderSession("campp")


def _audio(name):
    return np.concatenate([c.samples for c in FileSource(DATA / name)])


def test_names_resolve_to_shipped_models_and_paths_still_work(tmp_path):
    assert resolve_model(None) == DEFAULT_MODEL
    assert resolve_model("campp") == MODELS_DIR / "campp.onnx"
    assert resolve_model("default") == DEFAULT_MODEL
    assert resolve_model(str(DEFAULT_MODEL)) == DEFAULT_MODEL
    with pytest.raises(ModelError, match="no shipped model.*campp"):
        resolve_model("campq")
    for empty in ("", " "):  # "" was the path "." (".: model file not found")
        with pytest.raises(ModelError, match="give a shipped model's name .*default"):
            resolve_model(empty)
    with pytest.raises(ModelError, match="not found"):
        EncoderSession(tmp_path / "missing.onnx")
    assert load_model_info("campp").embedding_dim == 192


def test_front_end_follows_the_sidecar(campp):
    assert isinstance(campp.features, FbankConfig)
    assert isinstance(campp.streaming_features(), StreamingFbank)
    assert isinstance(EncoderSession().streaming_features(), StreamingFeatures)


def test_shipped_graph_reproduces_the_torch_reference(campp):
    rows = fbank(_audio("espeak_enroll_1.flac"))
    ref = np.load(DATA / "campp_ref_espeak_enroll_1.npy")
    # the graph removes the mean itself: raw rows and mean-normalised rows give the same vector
    for x in (rows, cmn(rows)):
        assert float(campp.embed(x[None])[0] @ ref) > 0.999


def test_live_path_separates_voices(campp):
    def emb(name):
        return embed_recording(campp, FileSource(DATA / name)).vector

    a, b = emb("espeak_enroll_1.flac"), emb("espeak_enroll_2.flac")
    other = emb("arabic_00000003_seven_02.flac")
    assert a.shape == (192,)
    assert float(a @ b) > 0.7 > 0.3 > float(a @ other)


@pytest.mark.parametrize("chunk", [160, 480, 4096])
def test_chunk_size_invariance(campp, chunk):
    x = _audio("espeak_enroll_1.flac")
    ref = embed_recording(campp, [Chunk(x, 0.0)]).vector

    def chunks():
        for a in range(0, len(x), chunk):
            yield Chunk(x[a:a + chunk], a / 16000)

    got = embed_recording(campp, chunks()).vector
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_campp_runtime_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from rtverify.core.encoder import EncoderSession\n"
            "from rtverify.core.pipeline import embed_recording\n"
            "from rtverify.io.sources import Chunk\n"
            "s = EncoderSession('campp')\n"
            "x = np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32)\n"
            "embed_recording(s, [Chunk(x, 0.0)])\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_demo_runs_with_campp(tmp_path):
    """The whole listen path with CAM++ and an enrolled voice (band detection, speaker-change
    checks and scoring all see its fbank rows)."""
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "rtverify", "demo", "--fast", "--model", "campp"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Demo result: 6 right, 0 wrong out of 6 decisions" in proc.stdout


def _sidecar_with_context(ctx):
    import json

    raw = json.loads((MODELS_DIR / "default.json").read_text())
    if ctx is None:
        raw.pop("segment_context_ms", None)
    else:
        raw["segment_context_ms"] = ctx
    from rtverify.core.encoder import ModelInfo

    return ModelInfo.from_sidecar(raw, "test sidecar")


def test_segment_context_widens_the_segmenter_only_as_asked():
    import dataclasses

    from rtverify.config import SegmenterConfig

    base = SegmenterConfig()
    assert _sidecar_with_context(None).segmenter_config(base) is base
    info = _sidecar_with_context({"pre": 500, "post": 450})
    cfg = info.segmenter_config(base)
    assert (cfg.pre_roll_ms, cfg.post_roll_ms) == (500, 450)
    assert dataclasses.replace(cfg, pre_roll_ms=base.pre_roll_ms,
                               post_roll_ms=base.post_roll_ms) == base  # nothing else changes
    wide = dataclasses.replace(base, pre_roll_ms=900)
    assert info.segmenter_config(wide).pre_roll_ms == 900  # a wider setting is kept
    for bad in ({"pre": -1}, {"post": 5000}, {"pre": "x"}, [1, 2]):
        with pytest.raises(ModelError, match="invalid model sidecar"):
            _sidecar_with_context(bad)


def test_campp_embeds_its_context_around_the_speech(campp):
    """The shipped CAM++ asks for audio around the speech: the verifier's segmenter gets it, and
    the utterance embedded differs from the tight cut (same speech seconds)."""
    import dataclasses

    from rtverify.config import SegmenterConfig
    from rtverify.core.pipeline import Verifier

    pre, post = campp.info.context_ms
    assert pre > SegmenterConfig().pre_roll_ms and post > SegmenterConfig().post_roll_ms
    v = Verifier(campp, {})
    assert v.segmenter.cfg.pre_roll_ms == pre and v.segmenter.cfg.post_roll_ms == post
    x = np.concatenate([np.zeros(16000, np.float32), _audio("espeak_enroll_1.flac"),
                        np.zeros(16000, np.float32)])
    chunks = [Chunk(x[i:i + 1600], i / 16000) for i in range(0, len(x), 1600)]
    wide = embed_recording(campp, chunks)
    bare = EncoderSession("campp")
    bare.info = dataclasses.replace(bare.info, context_ms=(0, 0))
    tight = embed_recording(bare, chunks)
    # the context is silence here: it adds no voiced seconds (a tight cut loses at most the few
    # voiced frames webrtcvad saw before it declared speech)
    assert abs(wide.speech_s - tight.speech_s) < 0.15
    assert float(np.dot(wide.vector, tight.vector)) < 0.9999
