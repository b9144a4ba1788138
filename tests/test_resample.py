import numpy as np
import pytest
from scipy.signal import resample_poly

from rtverify.io.resample import StreamingResampler


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 16000])
@pytest.mark.parametrize("chunk", [13, 480, 4096, 10**6])
def test_streaming_equals_resample_poly(rate, chunk):
    x = np.random.default_rng(rate).standard_normal(int(rate * 0.7) + 5)
    r = StreamingResampler(rate, 16000)
    out = np.concatenate([r.push(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [r.flush()])
    ref = resample_poly(x, r.up, r.down)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-6


def test_a_tone_survives_and_is_not_aliased():
    rate = 44100
    t = np.arange(rate) / rate
    r = StreamingResampler(rate, 16000)
    y = np.concatenate([r.push(np.sin(2 * np.pi * 440 * t)), r.flush()])
    assert len(y) == 16000
    spec = np.abs(np.fft.rfft(y[2000:14000]))
    assert abs(np.argmax(spec) * 16000 / 12000 - 440) < 2
    # a 12 kHz tone is above the new Nyquist: the filter removes it instead of folding it to 4 kHz
    r2 = StreamingResampler(rate, 16000)
    z = np.concatenate([r2.push(np.sin(2 * np.pi * 12000 * t)), r2.flush()])
    assert np.sqrt(np.mean(z[2000:14000] ** 2)) < 0.01


def test_memory_is_bounded_while_streaming():
    r = StreamingResampler(48000, 16000)
    for _ in range(200):
        r.push(np.zeros(4800))
    assert len(r._buf) < 4800 + 200


def test_resampling_a_recording_does_not_import_scipy(tmp_path):
    """scipy.signal alone costs a command about a second of start-up and 70 MB of memory."""
    import subprocess
    import sys

    import soundfile as sf

    from conftest import REPO

    path = tmp_path / "x.wav"
    sf.write(path, np.zeros(4800), 48000)
    code = ("import sys; from rtverify.io.sources import FileSource; "
            f"n = sum(len(c.samples) for c in FileSource({str(path)!r})); "
            "print(n, sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(None, 1) == ["1600", "[]\n"]
