"""Raw PCM arriving in messages, turned into 16 kHz chunks by the same source as ``--input -``.

:class:`PcmDecoder` is :class:`~rtverify.io.sources.StdinSource` driven by pushes instead of reads:
the same format/rate/channel checks and messages, the same mono mixing and resampling, the same
stream time (samples received, at 16 kHz), so a socket stream and ``listen --input -`` decide alike.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import InputError
from ..io.sniff import SAMPLE_BYTES, pcm_to_float
from ..io.sources import OVER_FULL_SCALE, Chunk, StdinSource

CONTAINER_MAGIC = {b"RIFF": "a WAV file", b"RIFX": "a WAV file", b"fLaC": "a FLAC file",
                   b"OggS": "an Ogg file", b"ID3": "an MP3 file", b"FORM": "an AIFF file",
                   b"\x1aE\xdf\xa3": "a WebM/Matroska file", b"caff": "a CAF file"}
"""Starts of encoded files a client may send by mistake instead of raw samples."""

MAX_F32_ABS = OVER_FULL_SCALE
"""f32 samples beyond this magnitude are not audio (full scale is 1.0): a stream is refused,
where a recording is read with a warning (:data:`rtverify.io.sources.OVER_FULL_SCALE`)."""


class PcmDecoder(StdinSource):
    """Bytes of little-endian PCM in, :class:`Chunk` out.

    :param rate_hz: the sender's sample rate (hertz, 8000 to 192000).
    :param channels: interleaved channels (1 to 64).
    :param sample_format: ``s16``, ``s32`` or ``f32``, or ``ulaw`` / ``alaw`` (G.711 bytes, as
        telephone systems stream a call: 8 kHz mu-law from a media stream needs no conversion).
    :param name: how error messages name the stream.

    Every message must hold whole sample frames (``channels`` samples each); a message that
    does not, an encoded file's header in the first message, or f32 values that are not audio
    raise :class:`InputError`.
    """

    def __init__(self, *, rate_hz: int, channels: int, sample_format: str,
                 name: str = "stream") -> None:
        super().__init__(io.BytesIO(), rate_hz=rate_hz, channels=channels,
                         sample_format=sample_format, name=name)
        self.bytes_in = 0

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (all channels of one instant)."""
        return self._frame_bytes

    def check(self, data: bytes) -> None:
        """Refuse a message that cannot be raw PCM of this format (before it is queued)."""
        if len(data) % self._frame_bytes:
            raise InputError(f"{self.name}: binary message of {len(data)} bytes is not a whole "
                             f"number of {self._frame_bytes}-byte sample frames "
                             f"({SAMPLE_BYTES[self.sample_format] * 8}-bit x {self.channels} "
                             "channel(s))")
        if self.bytes_in == 0:
            for magic, what in CONTAINER_MAGIC.items():
                if data.startswith(magic):
                    raise InputError(f"{self.name}: the stream starts like {what}, not raw PCM; "
                                     "send the samples themselves (POST a file to /v1/verify "
                                     "instead)")
        self.bytes_in += len(data)

    def push(self, data: bytes) -> Chunk | None:
        """Whole sample frames (checked by :meth:`check`) -> a chunk (None while the resampler
        holds everything)."""
        block = pcm_to_float(data, self.sample_format, self.channels)  # as stdin reads them
        if self.sample_format == "f32" and block.size and np.isfinite(block).all() and \
                float(np.max(np.abs(block))) > MAX_F32_ABS:
            raise InputError(f"{self.name}: f32 sample values up to "
                             f"{float(np.max(np.abs(block))):.3g} are not audio (full scale "
                             "is 1.0); is the format right?")
        return self._convert(block)

    def end(self) -> Chunk | None:
        """The resampler's tail at the end of the stream."""
        return self._finish()
