"""stdin sniffing (issue 12): a WAV, FLAC, OGG or MP3 file piped into ``--input -`` is decoded,
not read as raw PCM; raw PCM keeps working; a container that cannot be decoded is one error."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from conftest import DEMO, read16k
from rtverify.errors import InputError
from rtverify.io.sniff import mpeg_frame_length, sniff
from rtverify.io.resample import StreamingResampler
from rtverify.io.sources import StdinSource

SR = 16000


def encoded(x: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def samples(source) -> np.ndarray:
    return np.concatenate([c.samples for c in source])


class Trickle(io.RawIOBase):
    """A pipe that hands out at most ``n`` bytes per read (as a slow recorder would)."""

    def __init__(self, data: bytes, n: int) -> None:
        self._data, self._n, self._pos = data, n, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._n if size is None or size < 0 else min(size, self._n)
        out = self._data[self._pos:self._pos + size]
        self._pos += len(out)
        return out


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read16k(DEMO / "enroll_1.flac")


def test_sniff_kinds(speech):
    assert sniff(encoded(speech, SR, "WAV", "PCM_16")[:4096]) == "wav"
    assert sniff(encoded(speech, SR, "FLAC", "PCM_16")[:4096]) == "flac"
    assert sniff(encoded(speech, SR, "OGG", "VORBIS")[:4096]) == "ogg"
    assert sniff(encoded(speech, SR, "MP3", "MPEG_LAYER_III")[:4096]) == "mp3"
    assert sniff(b"ID3\x04\x00\x00\x00\x00\x10\x00" + b"\x00" * 100) == "mp3"
    assert sniff((speech * 32767).astype("<i2").tobytes()[:4096]) == "raw"


def test_raw_pcm_that_starts_like_an_mpeg_frame_stays_raw():
    # -1 is FF FF in s16: frame sync. Near-silent raw PCM is full of it.
    rng = np.random.default_rng(0)
    quiet = rng.integers(-2, 1, 8000).astype("<i2")
    quiet[:2] = -1
    data = quiet.tobytes()
    assert data[:2] == b"\xff\xff"
    assert sniff(data[:4096]) == "raw"
    # a header that is valid on its own, but no second frame where the first ends
    one = bytes([0xFF, 0xFB, 0x90, 0x64])
    assert mpeg_frame_length(one) == 417
    assert sniff(one + b"\x00" * 4000) == "raw"


@pytest.mark.parametrize("fmt,subtype,rate,channels", [
    ("WAV", "PCM_16", 44100, 2), ("WAV", "FLOAT", 16000, 1), ("WAV", "PCM_24", 48000, 1),
    ("WAV", "PCM_U8", 16000, 1), ("FLAC", "PCM_16", 22050, 1),
    ("WAV", "ULAW", 8000, 1), ("WAV", "ALAW", 8000, 2)])
def test_lossless_container_on_stdin_equals_the_file(tmp_path, speech, fmt, subtype, rate,
                                                     channels):
    from rtverify.io.resample import StreamingResampler

    x = StreamingResampler(SR, rate).push(speech) if rate != SR else speech
    x = np.stack([x * 0.9, x * 1.1], 1) if channels == 2 else x
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    src = StdinSource(Trickle(path.read_bytes(), 1000))  # defaults say 16 kHz mono s16
    got = samples(src)
    want = read16k(path)
    assert src.container == fmt.lower()
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("subtype", ["ALAW", "ULAW"])
def test_every_g711_code_decodes_as_libsndfile_does(tmp_path, subtype):
    """Telephone WAVs (G.711) on stdin: each of the 256 codes gives libsndfile's value."""
    from rtverify.io.sniff import pcm_to_float

    path = tmp_path / "codes.wav"
    sf.write(path, np.zeros(256), 8000, subtype=subtype)
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 8
    data[at:at + 256] = bytes(range(256))  # every code once, in order
    path.write_bytes(bytes(data))
    want, _ = sf.read(path, dtype="float32")
    got = pcm_to_float(bytes(range(256)), subtype.lower(), 1)[:, 0]
    np.testing.assert_array_equal(got, want)
    assert len(set(got.tolist())) >= 255  # (mu-law has a +0 and a -0)


def test_raw_g711_on_stdin(speech, tmp_path):
    """``--input - --rate 8000 --format ulaw``: raw telephone bytes (what a PBX hands out)."""
    path = tmp_path / "a.wav"
    sf.write(path, StreamingResampler(SR, 8000).push(speech), 8000, subtype="ULAW")
    data = path.read_bytes()
    raw = data[data.index(b"data") + 8:]
    got = samples(StdinSource(Trickle(raw, 333), rate_hz=8000, sample_format="ulaw",
                              sniff=False))
    np.testing.assert_allclose(got, read16k(path), atol=1e-6)
    with pytest.raises(InputError, match="unknown raw sample format 'vox'"):
        StdinSource(io.BytesIO(raw), sample_format="vox")


def test_wav_stream_with_open_length_is_streamed(speech, tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, speech, SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"
    struct.pack_into("<I", data, 40, 0xFFFFFFFF)  # a recorder that does not know the length
    got = samples(StdinSource(Trickle(bytes(data), 500)))
    np.testing.assert_allclose(got, read16k(path), atol=1e-6)


def test_lossy_containers_score_like_the_file(session, speech, tmp_path):
    from rtverify.core.pipeline import embed_recording
    from rtverify.io.sources import FileSource

    ref = embed_recording(session, FileSource(DEMO / "enroll_1.flac")).vector
    for fmt, subtype in (("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")):
        data = encoded(speech, SR, fmt, subtype)
        raw_read = embed_recording(session, StdinSource(io.BytesIO(data), sniff=False)).vector
        got = embed_recording(session, StdinSource(io.BytesIO(data))).vector
        assert float(got @ ref) > 0.95, fmt
        # read as raw PCM (what stdin did before) the same bytes are garbage
        assert raw_read is None or float(raw_read @ ref) < float(got @ ref) - 0.1, fmt


def test_raw_pcm_keeps_working(speech):
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    got = samples(StdinSource(Trickle(pcm, 777)))
    np.testing.assert_allclose(got, speech, atol=1.0 / 32767 + 1e-6)


@pytest.mark.parametrize("head", [b"fLaC" + b"\x00" * 200, b"OggS" + b"\x13" * 300,
                                  b"ID3\x03\x00\x00\x00\x00\x00\x05garbage" * 10])
def test_undecodable_container_is_one_line(head):
    with pytest.raises(InputError) as err:
        samples(StdinSource(io.BytesIO(head)))
    msg = str(err.value)
    assert msg.startswith("stdin: ") and "\n" not in msg
    assert "cannot be decoded" in msg or "no audio" in msg


def test_truncated_wav_header_is_one_line(speech):
    data = encoded(speech, SR, "WAV", "PCM_16")[:30]
    with pytest.raises(InputError, match="stdin: WAV header ends"):
        samples(StdinSource(io.BytesIO(data)))
