import numpy as np
import pytest

from rtverify.config import FeatureConfig
from rtverify.core.features import StreamingFeatures, mel_filterbank, mel_spectrogram

from conftest import DEMO, read16k


@pytest.fixture(scope="module")
def speech():
    return read16k(DEMO / "enroll_1.flac")


def stream(x, sizes, cfg=FeatureConfig()):
    s = StreamingFeatures(cfg)
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(s.push(x[i:i + n]))
        i += n
        k += 1
    out.append(s.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("sizes", [[1], [7], [160], [480], [4096], [10**7], [3, 500, 1, 1024, 161]])
def test_streaming_equals_batch_for_any_chunking(speech, sizes):
    x = speech[: 16000 * 2 + 123] if sizes == [1] else speech
    batch = mel_spectrogram(x)
    rows = stream(x, sizes)
    assert rows.shape == batch.shape == (1 + len(x) // 160, 40)
    assert np.abs(rows - batch).max() <= 1e-5 * max(1.0, np.abs(batch).max())


def test_streaming_log_variant_matches_batch(speech):
    cfg = FeatureConfig(log=True)
    batch = mel_spectrogram(speech, cfg)
    assert np.abs(stream(speech, [333], cfg) - batch).max() <= 1e-5


@pytest.mark.parametrize("n", [0, 1, 159, 160, 399, 400, 401, 4000])
def test_short_signals_have_the_documented_row_count(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    assert mel_spectrogram(x).shape == (1 + n // 160, 40)
    assert np.array_equal(stream(x, [97]) if n else stream(x, [1]), mel_spectrogram(x))


def test_reset_starts_a_new_signal(speech):
    s = StreamingFeatures()
    s.push(speech[:5000])
    s.reset()
    rows = np.concatenate([s.push(speech[:8000]), s.flush()])
    assert np.array_equal(rows, mel_spectrogram(speech[:8000]))


def test_matches_librosa_melspectrogram(speech):
    """The shipped encoder was trained on librosa's melspectrogram: reproduce it."""
    librosa = pytest.importorskip("librosa")
    ref = librosa.feature.melspectrogram(y=speech, sr=16000, n_fft=400, hop_length=160,
                                         n_mels=40).T
    ours = mel_spectrogram(speech)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    fb = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)
    assert np.abs(mel_filterbank() - fb).max() < 1e-7


def test_a_tone_lands_in_the_right_band():
    t = np.arange(16000) / 16000
    rows = mel_spectrogram(0.5 * np.sin(2 * np.pi * 1000 * t))
    centres = np.argmax(mel_filterbank(), axis=1) * 40.0  # bin width 40 Hz
    assert abs(centres[np.argmax(rows[50])] - 1000) < 120


def test_rejects_multichannel_input():
    with pytest.raises(ValueError, match="mono"):
        mel_spectrogram(np.zeros((100, 2)))
