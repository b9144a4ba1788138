"""Transfer learning: Resemblyzer's pretrained weights in our encoder class, fed by our numpy
front-end, reproduce ``resemblyzer.VoiceEncoder.embed_utterance`` on real recordings.

Both sides get the same ``resemblyzer.preprocess_wav`` output and the same partial slices; only
the spectrogram (ours: :func:`rtverify.core.features.mel_spectrogram`; theirs: librosa) and the network
code (ours: :class:`training.model.SpeakerEncoder` loaded strictly by
:func:`training.transfer.load_resemblyzer`) differ.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="transfer learning needs torch (the `train` extra)")
resemblyzer = pytest.importorskip("resemblyzer",
                                  reason="needs resemblyzer (pip install --no-deps resemblyzer)")
pytestmark = pytest.mark.train

import soundfile as sf  # noqa: E402

from conftest import DATA, DEMO  # noqa: E402
from rtverify.core.features import mel_spectrogram  # noqa: E402
from training.transfer import load_resemblyzer, resemblyzer_ge2e_scale  # noqa: E402

RECORDINGS = [DEMO / "enroll_1.flac", DEMO / "enroll_2.flac",
              DATA / "arabic_00000003_seven_02.flac",  # 1 s keyword: a single padded partial
              DATA / "fsdd_jackson_7_3.flac"]           # 8 kHz digit: resampled by resemblyzer


@pytest.fixture(scope="module")
def theirs():
    torch.set_num_threads(1)
    return resemblyzer.VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def ours():
    return load_resemblyzer(input_transform="none")


def our_embed_utterance(model, wav: np.ndarray) -> np.ndarray:
    """``VoiceEncoder.embed_utterance`` with our front-end and our model."""
    wav_slices, mel_slices = resemblyzer.VoiceEncoder.compute_partial_slices(len(wav), 1.3, 0.75)
    if wav_slices[-1].stop >= len(wav):
        wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
    mel = mel_spectrogram(wav)
    mels = np.stack([mel[s] for s in mel_slices])
    with torch.no_grad():
        partials = model(torch.from_numpy(mels)).numpy()
    e = partials.mean(axis=0)
    return e / np.linalg.norm(e)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_our_encoder_reproduces_resemblyzer(theirs, ours, path):
    audio, rate = sf.read(path, dtype="float32")
    wav = resemblyzer.preprocess_wav(audio, rate)
    assert len(wav) > 0
    ref = theirs.embed_utterance(wav)
    got = our_embed_utterance(ours, wav)
    cosine = float(np.dot(ref, got))
    assert cosine >= 0.999, f"{path.name}: cosine {cosine:.6f}"


def test_level_transform_stands_in_for_resemblyzer_volume_normalisation(ours):
    """The runtime model ("level") fed the raw quiet recording behaves as Resemblyzer's model
    fed the waveform normalised to -30 dBFS."""
    audio, rate = sf.read(DEMO / "enroll_2.flac", dtype="float32")
    quiet = audio * 0.05  # about -26 dB lower
    rms_db = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2))
    loud = audio * 10 ** ((-30 - rms_db) / 20)
    level = load_resemblyzer(input_transform="level")
    window = slice(0, 160)
    with torch.no_grad():
        a = level(torch.from_numpy(mel_spectrogram(quiet)[window][None]))[0].numpy()
        b = ours(torch.from_numpy(mel_spectrogram(loud)[window][None]))[0].numpy()
    assert float(np.dot(a, b)) >= 0.99


def test_pretrained_ge2e_scale_is_read_from_the_checkpoint():
    w, b = resemblyzer_ge2e_scale()
    assert w > 1.0 and np.isfinite(b)
