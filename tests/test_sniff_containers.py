"""AIFF/AIFC, CAF, Sony Wave64 and Sun AU on stdin are decoded as by path (they were read as raw
PCM: "0.0 s of speech", exit 3); containers libsndfile cannot decode (MP4/M4A, WebM, AMR, MIDI, a
RIFF that is not WAVE) are one line, not noise."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import soundfile as sf

from conftest import DEMO, read16k
from rtverify.errors import InputError
from rtverify.io.resample import StreamingResampler
from rtverify.io.sniff import sniff
from rtverify.io.sources import StdinSource
from test_cli import ENROLL, err, one_line_error, out, rtv
from test_rooms_sniff import Trickle, samples

SR = 16000
DECODED = [("AIFF", "PCM_16", "aiff"), ("AIFF", "FLOAT", "aiff"), ("AIFF", "PCM_24", "aiff"),
           ("CAF", "PCM_16", "caf"), ("CAF", "ALAW", "caf"), ("W64", "PCM_16", "w64"),
           ("W64", "FLOAT", "w64"), ("AU", "ULAW", "au"), ("AU", "PCM_16", "au")]
UNDECODABLE = {
    "m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + b"\x00" * 500,
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + b"\x00" * 500,
    "amr": b"#!AMR\n" + b"\x3c\x55" * 300,
    "midi": b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk" + b"\x00" * 100,
    "avi": b"RIFF\x00\x10\x00\x00AVI LIST" + b"\x00" * 500,
}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read16k(DEMO / "enroll_1.flac")


@pytest.mark.parametrize("fmt,subtype,kind", DECODED)
def test_container_on_stdin_equals_the_file(tmp_path, speech, fmt, subtype, kind):
    rate = 8000 if subtype in ("ULAW", "ALAW") else 22050
    x = StreamingResampler(SR, rate).push(speech)
    x = np.stack([x * 0.9, x * 0.7], 1)
    path = tmp_path / f"a.{kind}"
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    data = path.read_bytes()
    assert sniff(data[:4096]) == kind
    src = StdinSource(Trickle(data, 1000))  # defaults say 16 kHz mono s16: the header wins
    got = samples(src)
    want = read16k(path)
    assert src.container == kind
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("subtype", ["IMA_ADPCM", "MS_ADPCM", "GSM610"])
def test_compressed_wav_on_stdin_equals_the_file(tmp_path, speech, subtype):
    """A WAV of a codec the streaming header reader cannot turn into PCM (IMA ADPCM from voice
    recorders, MS ADPCM, GSM 6.10) was refused on stdin ("WAV holds 4-bit format tag 0x11
    samples, which stdin cannot read") while the same file by path was read: it is decoded
    whole by libsndfile, as by path."""
    rate = 8000 if subtype == "GSM610" else 22050
    path = tmp_path / "a.wav"
    sf.write(path, StreamingResampler(SR, rate).push(speech), rate, format="WAV",
             subtype=subtype)
    src = StdinSource(Trickle(path.read_bytes(), 1000))
    got = samples(src)
    want = read16k(path)
    assert src.container == "wav"
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_wav_with_more_channels_than_a_stream_takes_is_decoded_whole(tmp_path, speech):
    """A WAV header on stdin saying 65535 channels was streamed as such (a 3 GB read asked for
    each block, "0.0 s of speech" at the end); over 64 channels it goes to libsndfile, which
    reads what it can (up to 1024) and refuses the rest in one line, as by path."""
    x = StreamingResampler(SR, 8000).push(speech)[:8000]
    path = tmp_path / "many.wav"
    sf.write(path, np.stack([x] * 100, 1), 8000, subtype="PCM_16")
    got = samples(StdinSource(io.BytesIO(path.read_bytes())))
    np.testing.assert_allclose(got, read16k(path), atol=1e-6)
    data = bytearray(path.read_bytes())
    data[22:24] = struct.pack("<H", 65535)
    with pytest.raises(InputError) as caught:
        samples(StdinSource(io.BytesIO(bytes(data))))
    msg = str(caught.value)
    assert msg.startswith("stdin: ") and "WAV" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_container_is_refused_in_one_line(name):
    with pytest.raises(InputError) as caught:
        samples(StdinSource(io.BytesIO(UNDECODABLE[name])))
    msg = str(caught.value)
    assert msg.startswith("stdin: looks like ") and "cannot decode" in msg and "\n" not in msg
    # --format/--rate do not matter: they describe raw PCM, and this is not
    with pytest.raises(InputError, match="cannot decode"):
        samples(StdinSource(io.BytesIO(UNDECODABLE[name]), rate_hz=8000, sample_format="ulaw"))


def test_raw_pcm_is_still_raw(speech):
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    assert sniff(pcm[:4096]) == "raw"
    assert sniff(b"RIFF") == "raw" and sniff(b"FORM\x00\x00\x00\x10") == "raw"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("home") / "voices"
    proc = rtv("enroll", "--name", "alice", "--input", *ENROLL, store=root)
    assert proc.returncode == 0, err(proc)
    return root


def test_cli_verify_by_path_and_on_stdin_agree(store, tmp_path, speech):
    for fmt, subtype, kind in (("AIFF", "PCM_16", "aiff"), ("CAF", "PCM_16", "caf"),
                               ("W64", "PCM_16", "w64")):
        path = tmp_path / f"take.{kind}"
        sf.write(path, StreamingResampler(SR, 44100).push(speech), 44100, format=fmt,
                 subtype=subtype)
        by_path = rtv("verify", "--json", "--name", "alice", "--input", path, store=store)
        piped = rtv("verify", "--json", "--name", "alice", "--input", "-", store=store,
                    stdin=path.read_bytes())
        assert by_path.returncode == 0 and piped.returncode == 0, (kind, err(piped))
        a, b = json.loads(out(by_path)), json.loads(out(piped))
        assert a["accepted"] is True and b["accepted"] is True, kind
        assert a["score"] == pytest.approx(b["score"], abs=1e-4), kind


def test_cli_refuses_an_m4a_on_stdin_in_one_line(store):
    proc = rtv("verify", "--name", "alice", "--input", "-", store=store,
               stdin=UNDECODABLE["m4a"])
    assert proc.returncode == 2
    one_line_error(proc, "stdin", "MP4/M4A", "cannot decode")
