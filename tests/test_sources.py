import io
import os
import time

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from rtverify.errors import InputError
from rtverify.io.sources import FileSource, StdinSource

from conftest import DEMO, read16k


@pytest.fixture(scope="module")
def speech():
    return read16k(DEMO / "enroll_2.flac")[: 16000 * 2]


def read_all(src):
    chunks = list(src)
    for a, b in zip(chunks, chunks[1:]):  # timestamps are contiguous
        assert abs(a.end_s - b.start_s) < 1e-9
    return np.concatenate([c.samples for c in chunks])


@pytest.mark.parametrize("fmt,subtype,tol", [
    ("WAV", "PCM_16", 1e-4), ("WAV", "PCM_24", 1e-6), ("WAV", "PCM_32", 1e-6),
    ("WAV", "FLOAT", 1e-7), ("WAV", "PCM_U8", 1e-2), ("FLAC", "PCM_16", 1e-4)])
def test_lossless_formats_read_back_faithfully(tmp_path, speech, fmt, subtype, tol):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, speech, 16000, format=fmt, subtype=subtype)
    got = read_all(FileSource(path))
    assert got.dtype == np.float32 and got.shape == speech.shape
    assert np.abs(got - speech).max() <= tol + np.abs(speech).max() * tol


def test_ogg_vorbis_reads(tmp_path, speech):
    path = tmp_path / "x.ogg"
    sf.write(path, speech, 16000, format="OGG", subtype="VORBIS")
    got = read_all(FileSource(path))
    n = min(len(got), len(speech))
    assert abs(len(got) - len(speech)) < 1600
    assert np.corrcoef(got[:n], speech[:n])[0, 1] > 0.9


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_any_rate_is_resampled_to_16k(tmp_path, speech, rate):
    g = np.gcd(rate, 16000)
    x = resample_poly(speech, rate // g, 16000 // g)
    path = tmp_path / "x.wav"
    sf.write(path, x.astype(np.float32), rate, subtype="FLOAT")
    got = read_all(FileSource(path, block_ms=37))
    assert abs(len(got) - len(x) * 16000 / rate) <= 1
    if rate >= 16000:  # nothing of the speech band was lost on the way: close to the original
        n = min(len(got), len(speech))
        assert np.corrcoef(got[:n], speech[:n])[0, 1] > 0.99


def test_channels_are_mixed_to_mono(tmp_path, speech):
    six = np.stack([speech * g for g in (1, 0.5, 0, 0, 0.5, 1)], axis=1)
    path = tmp_path / "six.wav"
    sf.write(path, six, 16000, subtype="FLOAT")
    got = read_all(FileSource(path))
    assert np.allclose(got, speech * 0.5, atol=1e-6)


def test_raw_pcm_stream(speech):
    pcm = (speech * 32767).astype("<i2").tobytes()
    got = read_all(StdinSource(io.BytesIO(pcm)))
    assert np.abs(got - speech).max() < 1e-3
    f32 = np.stack([speech, speech], 1).astype("<f4").tobytes()
    got = read_all(StdinSource(io.BufferedReader(io.BytesIO(f32)), channels=2, sample_format="f32",
                               rate_hz=16000))
    assert np.allclose(got, speech, atol=1e-6)


@pytest.mark.parametrize("stall_s", [0.5, 1e10, 1e300])
def test_a_pipe_read_with_any_stall_limit_gives_its_audio(speech, stall_s):
    """stall_s is --timeout: one past the platform's time_t (--timeout 1e10) was handed to
    select whole, an OverflowError (exit 4) at the first read of a pipe."""
    pcm = (speech[:16000] * 32767).astype("<i2").tobytes()
    r, w = os.pipe()
    os.write(w, pcm)  # 32 kB: within a pipe's buffer
    os.close(w)
    with open(r, "rb", buffering=0) as stream:
        got = read_all(StdinSource(stream, stall_s=stall_s))
    assert len(got) == 16000


def test_a_stalled_pipe_ends_at_stall_s():
    r, w = os.pipe()
    try:
        with open(r, "rb", buffering=0) as stream:
            t = time.monotonic()
            with pytest.raises(InputError, match="no audio arrived for 0.3 s"):
                read_all(StdinSource(stream, stall_s=0.3))
            assert 0.25 < time.monotonic() - t < 5
    finally:
        os.close(w)


def test_raw_stream_cut_mid_sample_keeps_the_whole_samples(speech):
    pcm = (speech * 32767).astype("<i2").tobytes()[:-1]
    got = read_all(StdinSource(io.BytesIO(pcm)))
    assert len(got) == len(speech) - 1


def test_realtime_pacing_takes_real_time(tmp_path, speech):
    path = tmp_path / "x.wav"
    sf.write(path, speech[:8000], 16000)
    t = time.monotonic()
    read_all(FileSource(path, realtime=True, block_ms=50))
    assert time.monotonic() - t >= 0.4


@pytest.mark.parametrize("make,message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "is a directory"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
    (lambda p: (os.mkfifo(p), p)[1], "is a pipe or device"),  # was "empty file", unopened
    (lambda p: (p.write_text("hello, I am text\n" * 20), p)[1], "not a readable audio file"),
])
def test_bad_files_give_one_line_errors(tmp_path, make, message):
    path = make(tmp_path / "bad.wav")
    with pytest.raises(InputError, match=message) as err:
        list(FileSource(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_nan_samples_are_refused(tmp_path, speech):
    x = speech.copy()
    x[1000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        list(FileSource(path))


def test_absurd_sample_rate_is_refused(tmp_path, speech):
    path = tmp_path / "slow.wav"
    sf.write(path, speech[:1000], 1000)
    with pytest.raises(InputError, match="sample rate 1000 Hz"):
        FileSource(path)


def test_native_stderr_muted_hides_descriptor_2_and_restores_it(capfd):
    from rtverify.io.sources import native_stderr_muted

    os.write(2, b"before\n")
    with native_stderr_muted():
        os.write(2, b"decoder chatter\n")
        with native_stderr_muted():  # nested: still muted, and restored only at the end
            os.write(2, b"more chatter\n")
        os.write(2, b"still muted\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err == "before\nafter\n", err


def test_native_stderr_muted_from_two_threads_restores_the_real_descriptor(capfd):
    """Two requests of a server decoding MP3 at once: the one that entered second must not
    save the first one's /dev/null as "the" stderr and put it back last."""
    import threading

    from rtverify.io.sources import native_stderr_muted

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with native_stderr_muted():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with native_stderr_muted():
            second_in.set()
            first_out.wait(5)

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    os.write(2, b"heard\n")
    assert capfd.readouterr().err == "heard\n"


def test_a_file_of_many_channels_is_read_in_bounded_blocks(tmp_path, speech):
    """A block was a second of frames whatever the channel count: a 1024-channel 192 kHz file
    took 786 MB of float32 per read (900 MB resident for a 400 MB file; 195 MB for a 64-channel
    one against 85 MB for a mono one). Blocks now hold at most MAX_BLOCK_SAMPLES samples."""
    from rtverify.io.resample import StreamingResampler
    from rtverify.io.sources import MAX_BLOCK_SAMPLES

    x = StreamingResampler(16000, 48000).push(speech[:4000])  # 0.25 s at 48 kHz
    path = tmp_path / "many.wav"
    sf.write(path, np.stack([x] * 256, 1), 48000, subtype="PCM_16")  # 3.1 M samples
    src = FileSource(path)
    blocks = []
    convert = src._convert
    src._convert = lambda block: (blocks.append(block.size), convert(block))[1]
    got = read_all(src)
    assert max(blocks) <= MAX_BLOCK_SAMPLES and sum(blocks) == x.size * 256
    want = StreamingResampler(48000, 16000)
    want = np.concatenate([want.push(x), want.flush()])
    np.testing.assert_allclose(got, want, atol=2e-4)
