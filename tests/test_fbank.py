"""rtverify.core.fbank (numpy) against kaldi-native-fbank, the reference Kaldi front-end."""

from pathlib import Path

import numpy as np
import pytest

from rtverify.core.fbank import FbankConfig, cmn, fbank, kaldi_mel_banks, n_frames

knf = pytest.importorskip("kaldi_native_fbank")
DATA = Path(__file__).resolve().parent / "data"


def _knf(x: np.ndarray) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    f = knf.OnlineFbank(opts)
    f.accept_waveform(16000, (np.asarray(x, dtype=np.float64) * 32768.0).tolist())
    f.input_finished()
    return np.array([f.get_frame(i) for i in range(f.num_frames_ready)],
                    dtype=np.float32).reshape(-1, 80)


def _flac(name: str) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(str(DATA / name), dtype="float32")
    assert sr == 16000
    return x


@pytest.mark.parametrize("name", ["espeak_enroll_1.flac", "arabic_00000003_seven_02.flac"])
def test_matches_kaldi_native_fbank_on_speech(name):
    x = _flac(name)
    ref, got = _knf(x), fbank(x)
    assert got.shape == ref.shape == (n_frames(len(x)), 80)
    # both are float32 logs of energies around e^10..e^25: agree to float32 rounding
    assert np.abs(got - ref).max() < 2e-3


@pytest.mark.parametrize("n", [399, 400, 401, 559, 560, 561, 16000 + 37])
def test_frame_count_and_values_on_noise(n):
    x = np.random.default_rng(n).normal(0, 0.05, n).astype(np.float32)
    ref, got = _knf(x), fbank(x)
    assert got.shape == ref.shape
    if len(ref):
        assert np.abs(got - ref).max() < 2e-3


def test_silence_hits_the_log_floor_like_kaldi():
    x = np.zeros(4000, dtype=np.float32)
    np.testing.assert_allclose(fbank(x), _knf(x), atol=1e-4)


def test_mel_banks_are_kaldis_triangles():
    banks = kaldi_mel_banks(FbankConfig())
    assert banks.shape == (80, 257)
    assert np.all(banks[:, -1] == 0)  # Kaldi leaves the Nyquist bin out
    assert np.all(banks.max(axis=1) > 0) and np.all(banks <= 1.0)
    # centres rise with the band index
    assert np.all(np.diff(banks.argmax(axis=1)) >= 0)


def test_cmn_removes_band_means_and_rejects_stereo():
    rows = fbank(_flac("espeak_enroll_1.flac"))
    np.testing.assert_allclose(cmn(rows).mean(axis=0), 0, atol=1e-4)
    with pytest.raises(ValueError, match="mono"):
        fbank(np.zeros((100, 2)))


@pytest.mark.parametrize("chunk", [160, 480, 4096, 1])
def test_streaming_equals_whole_signal_for_any_chunking(chunk):
    from rtverify.core.fbank import StreamingFbank

    x = _flac("espeak_digits_31415.flac")[:24000] if chunk > 1 else _flac("espeak_digits_31415.flac")[:1300]
    s = StreamingFbank()
    rows = [s.push(x[a:a + chunk]) for a in range(0, len(x), chunk)]
    assert s.ready_rows(0) == 0 and s.n_rows == n_frames(len(x))
    rows.append(s.flush())
    np.testing.assert_array_equal(np.concatenate(rows), fbank(x))
    assert s.n_rows == 0 and s.n_samples == 0


def test_config_round_trip_and_bad_settings():
    cfg = FbankConfig()
    assert FbankConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="kind"):
        FbankConfig.from_dict({"kind": "mel"})
    with pytest.raises(ValueError, match="unknown"):
        FbankConfig.from_dict({"kind": "kaldi_fbank", "dither": 1.0})
