"""What a byte stream on standard input holds: raw PCM, or an audio container.

``--input -`` used to read everything as raw PCM, so a WAV, FLAC or MP3 file piped in was scored
as noise made of its own header and compressed bytes. :func:`sniff` looks at the first bytes:

- ``RIFF....WAVE`` (and ``RF64``): the header is parsed here (:func:`read_wav_header`) and the
  data chunk is then streamed as raw PCM, so an endless WAV stream from a recorder still works
  chunk by chunk;
- ``fLaC``, ``OggS``, ``ID3`` or two consecutive valid MPEG audio frame headers, AIFF/AIFC
  (``FORM....AIFF``/``AIFC``), CAF (``caff``), Sony Wave64 (its ``riff`` and ``wave`` GUIDs) and
  Sun AU (``.snd``): the stream is read to its end (up to :data:`MAX_CONTAINER_BYTES`) and
  decoded by libsndfile;
- MP4/M4A (``ftyp`` at byte 4), WebM/Matroska (EBML), AMR, MIDI and a RIFF file of another form
  than WAVE (AVI, WebP...): refused in one line (:func:`refuse_unsupported`); libsndfile cannot
  decode them, and read as raw PCM they were noise;
- anything else is raw PCM, as before.

A raw PCM stream cannot be mistaken for MP3 by accident: the frame-sync bytes ``FF Fx`` are what
a 16-bit sample of -1 looks like, so one header is not enough; the header's version, layer,
bitrate and rate fields must be valid and a second header must follow exactly one frame later.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from ..errors import InputError

SNIFF_BYTES = 4096
"""Bytes looked at before deciding (a WAV header with metadata chunks fits; an ID3 tag is
recognised by its first three bytes)."""
MAX_CONTAINER_BYTES = 1 << 30
"""A compressed stream (FLAC, OGG, MP3) is read whole before decoding; more than this is refused
(bytes)."""
MAX_WAV_HEADER_BYTES = 1 << 20
"""Chunks before ``data`` (LIST, fact, ...) larger than this mean it is not a WAV header (bytes)."""

# MPEG audio frame header tables (ISO 11172-3 / 13818-3): kbit/s by (version is MPEG-1, layer).
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mpeg_frame_length(header: bytes) -> int | None:
    """Length in bytes of the MPEG audio frame whose 4-byte header is ``header``, or None if
    those bytes are not a valid header (free-format and reserved values count as invalid)."""
    if len(header) < 4 or header[0] != 0xFF or (header[1] & 0xE0) != 0xE0:
        return None
    version = (header[1] >> 3) & 0x3  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5, 1 reserved
    layer = 4 - ((header[1] >> 1) & 0x3)  # bits 11 = layer I ... 01 = layer III, 00 reserved
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0x3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MPEG_RATES[version][rate_index]
    padding = (header[2] >> 1) & 0x1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    factor = 144 if (layer == 2 or mpeg1) else 72
    return factor * bitrate // rate + padding


def _looks_like_mpeg(head: bytes) -> bool:
    """Two consecutive valid frame headers at the start of ``head``."""
    n = mpeg_frame_length(head[:4])
    if n is None or n < 4:
        return False
    if len(head) < n + 4:  # a stream shorter than two frames: one valid header must do
        return len(head) <= n
    return mpeg_frame_length(head[n:n + 4]) is not None


_W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_W64_WAVE = b"wave\xf3\xac\xd3\x11\x8c\xd1\x00\xc0\x4f\x8e\xdb\x8a"
"""Sony Wave64: the GUIDs of its ``riff`` chunk and ``wave`` form (the first 16 and the 16 after
the 8-byte size)."""

DECODED_KINDS = ("flac", "ogg", "mp3", "aiff", "caf", "w64", "au")
"""Containers read whole and decoded by libsndfile (:func:`open_container`)."""

UNSUPPORTED = {
    "mp4": "an MP4/M4A/3GP file (ISO media: AAC, ALAC...)",
    "webm": "a WebM/Matroska file",
    "amr": "an AMR file",
    "midi": "a MIDI file (notes, not sound)",
}
"""Containers recognised on stdin that libsndfile cannot decode: refused in one line rather than
read as raw PCM (which ends in noise or "0.0 s of speech")."""


def sniff(head: bytes) -> str:
    """The kind of stream that starts with ``head``: ``wav``, one of :data:`DECODED_KINDS`,
    one of :data:`UNSUPPORTED`, ``riff`` (a RIFF file that is not WAVE) or ``raw``."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:8] == b"caff\x00\x01\x00\x00":  # CAF version 1, flags 0
        return "caf"
    if head[:16] == _W64_RIFF and head[24:40] == _W64_WAVE:
        return "w64"
    if head[:4] == b".snd" and len(head) >= 24 and struct.unpack(">I", head[4:8])[0] >= 24:
        return "au"
    if head[:3] == b"ID3" and len(head) >= 10 and head[3] in (2, 3, 4) and \
            all(b < 0x80 for b in head[6:10]):
        return "mp3"
    if _looks_like_mpeg(head):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML
        return "webm"
    if head[:6] == b"#!AMR\n" or head[:9] == b"#!AMR-WB\n":
        return "amr"
    if head[:8] == b"MThd\x00\x00\x00\x06":
        return "midi"
    if len(head) >= 12 and head[:4] == b"RIFF":
        return "riff"
    return "raw"


@dataclass(frozen=True)
class WavFormat:
    """What a WAV header says about the samples that follow it."""

    rate_hz: int
    channels: int
    sample_format: str
    """``u8``, ``s16``, ``s24``, ``s32``, ``f32`` or ``f64`` (little-endian), or ``alaw`` /
    ``ulaw`` (G.711 A-law / mu-law bytes: telephone recordings)."""
    data_bytes: int | None
    """Length of the data chunk (bytes); None when the header leaves it open (a live stream)."""


class WavNotStreamable(InputError):
    """A WAV header whose samples :func:`read_wav_header`'s caller cannot stream as PCM itself
    (a codec such as IMA ADPCM or GSM 6.10, or more than :data:`MAX_STREAM_CHANNELS`
    channels): decode the whole stream with libsndfile instead, as a file by path is."""


MAX_STREAM_CHANNELS = 64
"""Most channels of a stream read as PCM here (raw stdin's own limit)."""

_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT, _WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE
_WAVE_FORMAT_ALAW, _WAVE_FORMAT_MULAW = 6, 7


def read_wav_header(read, name: str) -> tuple[WavFormat, bytes]:
    """Parse a RIFF/WAVE header from ``read(n) -> bytes`` (the 12-byte RIFF header included).

    :return: the format, and the bytes already read past the start of the data chunk.
    :raises InputError: the header is truncated or describes samples that cannot be read;
        :class:`WavNotStreamable` when libsndfile may still decode them.
    """
    buf = b""

    def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            more = read(max(n - len(buf), 4096))
            if not more:
                raise InputError(f"{name}: WAV header ends after {len(buf)} bytes "
                                 "(a truncated file?)")
            buf += more
        out, buf = buf[:n], buf[n:]
        return out

    riff = need(12)
    if riff[8:12] != b"WAVE":
        raise InputError(f"{name}: not a WAV stream")
    fmt: tuple | None = None
    skipped = 0
    while True:
        cid, size = struct.unpack("<4sI", need(8))
        if cid == b"data":
            if fmt is None:
                raise InputError(f"{name}: WAV data comes before its 'fmt ' chunk")
            open_ended = size in (0, 0xFFFFFFFF) or riff[:4] == b"RF64"
            tag, channels, rate, bits = fmt
            kind = {(_WAVE_FORMAT_PCM, 8): "u8", (_WAVE_FORMAT_PCM, 16): "s16",
                    (_WAVE_FORMAT_PCM, 24): "s24", (_WAVE_FORMAT_PCM, 32): "s32",
                    (_WAVE_FORMAT_FLOAT, 32): "f32", (_WAVE_FORMAT_FLOAT, 64): "f64",
                    (_WAVE_FORMAT_ALAW, 8): "alaw", (_WAVE_FORMAT_MULAW, 8): "ulaw"}.get(
                (tag, bits))
            if kind is None:
                what = {_WAVE_FORMAT_PCM: "integer PCM", _WAVE_FORMAT_FLOAT: "float",
                        _WAVE_FORMAT_ALAW: "A-law", _WAVE_FORMAT_MULAW: "mu-law"}.get(
                    tag, f"format tag {tag:#x}")
                raise WavNotStreamable(f"{name}: WAV holds {bits}-bit {what} samples, which "
                                       "stdin cannot stream (use 8/16/24/32-bit PCM, 32/64-bit "
                                       "float or 8-bit A-law/mu-law)")
            if channels < 1:
                raise InputError(f"{name}: WAV header says {channels} channels")
            if channels > MAX_STREAM_CHANNELS:
                raise WavNotStreamable(f"{name}: WAV header says {channels} channels, more than "
                                       f"stdin streams ({MAX_STREAM_CHANNELS})")
            return WavFormat(rate, channels, kind, None if open_ended else size), buf
        body_size = size + (size & 1)  # chunks are padded to an even length
        skipped += body_size
        if skipped > MAX_WAV_HEADER_BYTES:
            raise InputError(f"{name}: WAV header chunks exceed {MAX_WAV_HEADER_BYTES} bytes "
                             "before any audio data")
        body = need(body_size)
        if cid == b"fmt ":
            if size < 16:
                raise InputError(f"{name}: WAV 'fmt ' chunk is {size} bytes, need 16")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)


SAMPLE_BYTES = {"u8": 1, "s16": 2, "s24": 3, "s32": 4, "f32": 4, "f64": 8, "alaw": 1, "ulaw": 1}
"""Bytes per sample of each sample format."""


G711_FORMATS = ("alaw", "ulaw")
"""Telephone codes (G.711 A-law, mu-law: a byte a sample), read wherever raw PCM is: a WAV on
stdin, raw stdin, ``serve``'s streams."""


@functools.cache
def _g711_tables():
    """The 256 values of each G.711 code (ITU-T G.711's decoding, as 16-bit integers), float32
    at full scale 1.0: ``(alaw, ulaw)``."""
    import numpy as np

    code = np.arange(256)
    a = code ^ 0x55
    exp, man = (a >> 4) & 7, a & 0x0F
    mag = np.where(exp == 0, (man << 4) + 8, ((man << 4) + 0x108) << np.maximum(exp - 1, 0))
    alaw = np.where(a & 0x80, mag, -mag)
    u = ~code & 0xFF
    exp, man = (u >> 4) & 7, u & 0x0F
    mag = (((man << 3) + 0x84) << exp) - 0x84
    ulaw = np.where(u & 0x80, -mag, mag)
    return (alaw / 32768.0).astype(np.float32), (ulaw / 32768.0).astype(np.float32)



def pcm_to_float(data: bytes, sample_format: str, channels: int):
    """Little-endian PCM bytes (a whole number of sample frames) as float32 ``(n, channels)``,
    full scale 1.0."""
    import numpy as np

    if sample_format == "u8":
        x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif sample_format in G711_FORMATS:
        x = _g711_tables()[sample_format == "ulaw"][np.frombuffer(data, dtype=np.uint8)]
    elif sample_format == "s24":
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif sample_format in ("s16", "s32"):
        dt = np.dtype("<i2") if sample_format == "s16" else np.dtype("<i4")
        x = np.frombuffer(data, dtype=dt).astype(np.float32) / float(2 ** (8 * dt.itemsize - 1))
    elif sample_format in ("f32", "f64"):
        x = np.frombuffer(data, dtype="<f4" if sample_format == "f32" else "<f8").astype(
            np.float32)
    else:
        raise ValueError(f"unknown sample format {sample_format!r}")
    return x.reshape(-1, channels)


def open_container(data: bytes, kind: str, name: str):
    """A libsndfile reader (``soundfile.SoundFile``) over a whole compressed stream in memory.

    :raises InputError: libsndfile cannot decode it (one line naming the input and the kind).
    """
    import io

    import soundfile as sf

    label = kind.upper()
    try:
        return sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = str(err).split(":")[-1].strip() or type(err).__name__
        raise InputError(f"{name}: looks like {label} audio but cannot be decoded ({detail})"
                         ) from None


def refuse_unsupported(head: bytes, kind: str, name: str) -> None:
    """Raise the one-line :class:`InputError` for a container stdin recognises but cannot decode
    (``kind`` from :func:`sniff`); return if ``kind`` is not one."""
    if kind == "riff":
        form = head[8:12].decode("latin-1")
        what = f"a RIFF {form!r} file, not WAV audio" if form.isprintable() else \
            "a RIFF file, not WAV audio"
    elif kind in UNSUPPORTED:
        what = UNSUPPORTED[kind]
    else:
        return
    raise InputError(f"{name}: looks like {what}, which rtverify cannot decode; convert it to "
                     "WAV or FLAC first (e.g. ffmpeg -i IN -f wav -)")
