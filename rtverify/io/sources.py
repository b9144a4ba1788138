"""Frame sources: recordings, raw PCM streams and the microphone, all as 16 kHz mono float32.

Every source is an iterable of :class:`Chunk` (samples plus the stream time of the first one),
resampled with :class:`~rtverify.io.resample.StreamingResampler` and mixed down to mono, so the rest
of the pipeline never sees anything else. Problems with the input raise
:class:`~rtverify.errors.InputError` or :class:`~rtverify.errors.DeviceError` with a one-line
message that names the input.
"""

from __future__ import annotations

import collections
import io
import logging
import numbers
import os
import queue
import select
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Generator, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from ..config import SAMPLE_RATE_HZ
from ..errors import DeviceError, InputError
from .resample import StreamingResampler
from .sniff import G711_FORMATS, MAX_STREAM_CHANNELS
from .stderr import native_stderr_muted, write_stderr  # noqa: F401  (their home: io.stderr)

logger = logging.getLogger(__name__)

MIN_RATE_HZ = 8000
"""Lowest input sample rate accepted (hertz); below it there is too little of the speech band."""
MAX_RATE_HZ = 192000
"""Highest input sample rate accepted (hertz)."""

OVERFLOW_LOG_S = 10.0
"""Input overflows are logged at most this often (seconds); they are all counted."""

OVER_FULL_SCALE = 64.0
"""Float samples beyond this magnitude (36 dB over full scale 1.0) are not audio at a sane level:
integer values written as floats, say. A recording is still read, with a warning; ``serve``'s
raw streams refuse them (:data:`rtverify.serve.pcm.MAX_F32_ABS` is this bar)."""

MAX_BLOCK_SAMPLES = 1 << 20
"""Most samples (frames times channels) read from a recording at a time: a block is a second
of frames (less when paced), but a second of a 1024-channel 192 kHz file is 786 MB of float32.
At 4 MiB, a second of up to 21 channels at 48 kHz is still one block."""

MAX_SAMPLE_ABS = 1e12
"""Float samples beyond this magnitude are refused: far past any integer scale stored as floats
(32-bit PCM reaches 2.1e9), and near where the level and spectrum arithmetic overflows (about
1e17: the speech was then measured as silence, with numpy's warnings on stderr)."""

def _block_frames(frames: int, channels: int) -> int:
    """``frames`` per read, fewer if that many of ``channels`` would pass
    :data:`MAX_BLOCK_SAMPLES`."""
    return max(1, min(frames, MAX_BLOCK_SAMPLES // channels))


_over_warned: "collections.deque[str]" = collections.deque(maxlen=32)
"""Inputs recently warned about being over full scale (enrolment reads each file several times;
one warning is enough)."""

RAW_FORMATS = ("s16", "s32", "f32", *G711_FORMATS)
"""Raw sample formats of stdin and the service streams: little-endian PCM and the G.711 codes,
all read by :func:`rtverify.io.sniff.pcm_to_float`."""


@dataclass(frozen=True)
class Chunk:
    """A piece of a stream."""

    samples: np.ndarray
    """float32 mono samples at 16 kHz, shape ``(n,)``, full scale 1.0."""
    start_s: float
    """Stream time of the first sample (seconds since the stream began)."""

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / SAMPLE_RATE_HZ


@runtime_checkable
class FrameSource(Protocol):
    """What the pipeline consumes: every source here (recordings, stdin, the microphone, the
    reconnecting microphone) is one, and :func:`as_source` makes one of any iterable of chunks.

    Iterating yields :class:`Chunk` objects in stream order; a source with news of its own (the
    reconnecting microphone) yields :class:`~rtverify.events.Event` objects between them, which
    the pipeline passes on in order."""

    name: str
    """How messages refer to the source (a path, ``stdin``, a device name)."""
    overflows: int
    """Blocks of input lost because the consumer fell behind (count)."""

    @property
    def position_s(self) -> float:
        """Stream time delivered so far (seconds)."""
        ...

    def __iter__(self) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


class IterableSource:
    """A :class:`FrameSource` over chunks that are already at hand (tests, a server's stream)."""

    def __init__(self, chunks: Iterable[Chunk], name: str = "chunks") -> None:
        self._chunks = chunks
        self.name = name
        self.overflows = 0
        self.position_s = 0.0

    def __iter__(self) -> Iterator[Chunk]:
        for chunk in self._chunks:
            if isinstance(chunk, Chunk):
                self.position_s = max(self.position_s, chunk.end_s)
            yield chunk

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)  # a generator: let it clean up now
        if close is not None:
            close()


def as_source(chunks: "FrameSource | Iterable[Chunk]") -> FrameSource:
    """``chunks`` itself if it is a :class:`FrameSource`, else an :class:`IterableSource` of it."""
    return chunks if isinstance(chunks, FrameSource) else IterableSource(chunks)


def _check_rate(rate_hz: float, name: str) -> int:
    if not isinstance(rate_hz, numbers.Real):  # a caller's "16000" or None (rtverify.api)
        raise InputError(f"{name}: sample rate {rate_hz!r} is not a number (need an integer "
                         f"rate from {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz)")
    # the range first: NaN and infinities fail it, and an int too big for a float (10**400:
    # numpy's TypeError in isfinite) never reaches the arithmetic
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ or rate_hz != int(rate_hz):
        try:
            shown = f"{rate_hz:g}"
        except OverflowError:
            shown = "beyond 1e308"
        raise InputError(f"{name}: sample rate {shown} Hz is not supported "
                         f"(need an integer rate from {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz)")
    return int(rate_hz)


class _Pacer:
    """Sleeps so that chunks are released no faster than real time."""

    def __init__(self) -> None:
        self._t0: float | None = None

    def wait_until(self, stream_s: float) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now - stream_s
        delay = self._t0 + stream_s - now
        if delay > 0:
            time.sleep(delay)


class _ResamplingSource:
    """Shared machinery: mono mixing, resampling to 16 kHz, timestamps, optional pacing."""

    def __init__(self, name: str, rate_in_hz: int, realtime: bool) -> None:
        self.name = name
        self.rate_in_hz = rate_in_hz
        self.overflows = 0
        self._resampler = StreamingResampler(rate_in_hz, SAMPLE_RATE_HZ)
        self._n_out = 0
        self._over_seen = False
        self._pacer = _Pacer() if realtime else None

    @property
    def position_s(self) -> float:
        """Stream time delivered so far (seconds at 16 kHz)."""
        return self._n_out / SAMPLE_RATE_HZ

    def _chunk(self, samples: np.ndarray) -> Chunk | None:
        if len(samples) == 0:
            return None
        chunk = Chunk(samples, self._n_out / SAMPLE_RATE_HZ)
        self._n_out += len(samples)
        if self._pacer is not None:
            self._pacer.wait_until(chunk.end_s)
        return chunk

    def _check(self, block: np.ndarray, at_s: float) -> float:
        """``block``'s peak, or an InputError for NaN, infinities or values that are not audio
        (``at_s``: where the block starts, in stream seconds)."""
        if not np.isfinite(block).all():
            bad = "NaN" if np.isnan(block).any() else "infinite"
            raise InputError(f"{self.name}: contains {bad} sample values (around {at_s:.2f} s)")
        peak = float(np.max(np.abs(block))) if block.size else 0.0
        if peak > MAX_SAMPLE_ABS:
            raise InputError(f"{self.name}: sample values reach {peak:.3g} (around "
                             f"{at_s:.2f} s), beyond {MAX_SAMPLE_ABS:g} "
                             "times full scale: not audio (a damaged or mislabelled file?)")
        return peak

    def _convert(self, block: np.ndarray) -> Chunk | None:
        """``block``: float array ``(n, channels)`` at the input rate."""
        peak = self._check(block, self._n_out / SAMPLE_RATE_HZ)
        if not self._over_seen and peak > OVER_FULL_SCALE:
            self._over_seen = True
            if self.name not in _over_warned:
                _over_warned.append(self.name)
                logger.warning("%s: sample values exceed %g (%.0f dB over full scale 1.0); read "
                               "as they are, but the recording is probably scaled wrong (integer "
                               "values stored as floats?)", self.name, OVER_FULL_SCALE,
                               20 * np.log10(OVER_FULL_SCALE))
        mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
        return self._chunk(self._resampler.push(mono))

    def _finish(self) -> Chunk | None:
        return self._chunk(self._resampler.flush())

    def _read_sound(self, f, block_frames: int, what: str) -> Generator[Chunk, None, int]:
        """The chunks of an open ``soundfile.SoundFile``, ``block_frames`` at a time (not the
        resampler's tail); returns the frames read. A decoding error is an InputError saying
        how far it got."""
        import soundfile as sf

        n_read = 0
        quiet = MUTE_DECODER_NOTES and getattr(f, "format", None) == "MP3"
        while True:
            try:
                with native_stderr_muted(quiet):
                    block = f.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise InputError(f"{self.name}: unreadable {what} data after "
                                 f"{n_read / self.rate_in_hz:.2f} s ({err})") from None
            if len(block) == 0:
                return n_read
            n_read += len(block)
            chunk = self._convert(block)
            if chunk is not None:
                yield chunk


MUTE_DECODER_NOTES = False
"""Whether MP3 decoding, opening a recording, and opening an audio input device, run with file
descriptor 2 muted (:func:`native_stderr_muted`): libmpg123's decoder notes, and ALSA's and
PortAudio's lines at each attempt to open a device (8-10 of them every 10 s while a lost
microphone stays gone).
The CLI sets it for the commands a person reads on a terminal (not ``-v``, not the services,
whose other threads' log lines must not be lost while a request decodes an upload)."""

class FileSource(_ResamplingSource):
    """A recording in any format libsndfile reads (WAV, FLAC, OGG/Vorbis, ...), any rate from 8 to
    192 kHz, any channel count and sample format.

    :param block_ms: how much input is read at a time (milliseconds of audio); default 100 ms
        when paced at real time, else 1 s (fewer, larger steps: results do not depend on it).
    :param realtime: release chunks no faster than real time (as a microphone would).
    """

    def __init__(self, path: str | os.PathLike, *, block_ms: float | None = None,
                 realtime: bool = False) -> None:
        import soundfile as sf

        name = os.fspath(path)
        if not os.path.exists(name):
            raise InputError(f"{name}: no such file")
        if os.path.isdir(name):
            raise InputError(f"{name}: is a directory, not an audio file")
        if not stat.S_ISREG(os.stat(name).st_mode):
            # a pipe (`--input <(sox ...)`, /dev/stdin from `cat x.wav |`) or a device: its size
            # is 0, and it was called an empty file; libsndfile cannot read one anyway
            raise InputError(f"{name}: is a pipe or device, not an audio file; send a stream to "
                             "standard input with --input - instead")
        if os.path.getsize(name) == 0:
            raise InputError(f"{name}: empty file")
        try:  # libsndfile says only "System error." for a file it may not open
            with open(name, "rb"):
                pass
        except OSError as err:
            raise InputError(f"{name}: cannot be opened ({err.strerror})") from None
        try:
            # libmpg123 prints at the opening too ("a one-frame stream? Duh...", "Xing stream
            # size off"), before the format is known: every opening is muted (milliseconds)
            with native_stderr_muted(MUTE_DECODER_NOTES):
                self._file = sf.SoundFile(name)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
            detail = str(err).split(":")[-1].strip() or type(err).__name__
            raise InputError(f"{name}: not a readable audio file ({detail})") from None
        try:
            rate = _check_rate(self._file.samplerate, name)
            if self._file.channels < 1:
                raise InputError(f"{name}: has no audio channels")
        except InputError:
            self._file.close()
            raise
        super().__init__(name, rate, realtime)
        self.channels = self._file.channels
        self.duration_s = self._file.frames / rate if self._file.frames > 0 else 0.0
        """Duration the header claims (seconds); a truncated file may hold less."""
        if block_ms is None:
            block_ms = 100.0 if realtime else 1000.0
        self._block = _block_frames(int(rate * block_ms / 1000), self.channels)

    def __iter__(self) -> Iterator[Chunk]:
        try:
            n_read = yield from self._read_sound(self._file, self._block, "audio")
            if n_read == 0:
                raise InputError(f"{self.name}: holds no audio samples")
            if self._file.frames > 0 and n_read < self._file.frames:
                logger.warning("%s: header promises %.2f s but only %.2f s could be read",
                               self.name, self._file.frames / self.rate_in_hz,
                               n_read / self.rate_in_hz)
            chunk = self._finish()
            if chunk is not None:
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


def _raw_stdin() -> BinaryIO:
    """Standard input as an unbuffered reader of descriptor 0 that never closes it. Not
    ``sys.stdin.buffer``: a thread blocked reading that (``listen --server --input -`` while
    stdin is silent, ended by Ctrl-C) holds its lock, and the interpreter then aborts at exit
    ("could not acquire lock for <stdin> at interpreter shutdown"). Falls back to
    ``sys.stdin.buffer`` when standard input has no descriptor (tests that replace it)."""
    if sys.stdin is None:  # started with descriptor 0 closed (`<&-`): it was an AttributeError
        raise InputError("stdin: standard input is closed; give it audio (a pipe or "
                         "`< file`), or --input FILE")
    try:
        return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return sys.stdin.buffer


def _pollable_fd(stream) -> int | None:
    """The descriptor of an unbuffered stream that ``select`` can wait on (a pipe, a terminal, a
    socket), else None: a regular file never stalls, and a buffered reader may hold bytes that
    its descriptor no longer shows."""
    if not isinstance(stream, io.FileIO):
        return None
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode) else None


class StdinSource(_ResamplingSource):
    """Raw little-endian PCM from a binary stream (standard input by default), or an audio
    container piped in: the first bytes are sniffed (:mod:`rtverify.io.sniff`); a WAV stream's
    own header sets the rate, channels and sample format (its data is then streamed as PCM; a
    codec such as IMA ADPCM, or over 64 channels, is decoded whole instead),
    FLAC, OGG, MP3, AIFF, CAF, W64 and AU are decoded whole; a container libsndfile cannot
    decode (MP4/M4A, WebM...) is refused; anything else is raw PCM as given here.

    :param rate_hz: the raw stream's sample rate (hertz).
    :param channels: interleaved channels in the raw stream.
    :param sample_format: ``s16``, ``s32`` or ``f32``, or ``alaw`` / ``ulaw`` (G.711 bytes).
    :param sniff: look for a container first (False: always raw PCM).
    :param stall_s: give up (:class:`InputError`) when no byte arrives for this many seconds
        (a recorder whose pipe stalls without closing); None waits for the stream's end. Only
        for a stream with a descriptor that can be polled (a pipe, a terminal, a socket).
    """

    def __init__(self, stream: BinaryIO | None = None, *, rate_hz: int = SAMPLE_RATE_HZ,
                 channels: int = 1, sample_format: str = "s16", block_ms: float = 30.0,
                 realtime: bool = False, name: str = "stdin", sniff: bool = True,
                 stall_s: float | None = None) -> None:
        if sample_format not in RAW_FORMATS:
            raise InputError(f"{name}: unknown raw sample format {sample_format!r} "
                             f"(use one of {', '.join(RAW_FORMATS)})")
        if not 1 <= channels <= MAX_STREAM_CHANNELS:
            raise InputError(f"{name}: channel count {channels} is not supported (1 to "
                             f"{MAX_STREAM_CHANNELS})")
        super().__init__(name, _check_rate(rate_hz, name), realtime)
        self._stream = stream if stream is not None else _raw_stdin()
        self._stall_s = stall_s
        self._poll_fd = _pollable_fd(self._stream) if stall_s is not None else None
        self._block_ms = block_ms
        self._sniff = sniff
        self.container = "raw"
        """What the stream turned out to be: ``raw``, ``wav``, or one of
        :data:`~rtverify.io.sniff.DECODED_KINDS`."""
        self._set_format(self.rate_in_hz, channels, sample_format)

    def _set_format(self, rate_hz: int, channels: int, sample_format: str) -> None:
        from .sniff import SAMPLE_BYTES

        if rate_hz != self.rate_in_hz:
            self.rate_in_hz = _check_rate(rate_hz, self.name)
            self._resampler = StreamingResampler(self.rate_in_hz, SAMPLE_RATE_HZ)
        self.channels = channels
        self.sample_format = sample_format
        self._frame_bytes = SAMPLE_BYTES[sample_format] * channels
        self._block_bytes = max(1, int(self.rate_in_hz * self._block_ms / 1000)) * \
            self._frame_bytes

    def _read(self, n: int | None = None) -> bytes:
        n = self._block_bytes if n is None else n
        if self._poll_fd is not None:
            # waited a day at a time: select refuses a timeout past the platform's time_t
            # (--timeout 1e10 was an OverflowError, exit 4)
            deadline = time.monotonic() + self._stall_s
            while True:
                left = max(0.0, deadline - time.monotonic())
                ready = select.select([self._poll_fd], [], [], min(left, 86400.0))[0]
                if ready or left <= 86400.0:
                    break
            if not ready:
                raise InputError(f"{self.name}: no audio arrived for {self._stall_s:g} s (the "
                                 "pipe stalled without closing; --timeout)")
        read1 = getattr(self._stream, "read1", None)
        return read1(n) if read1 else self._stream.read(n)

    def _head(self) -> bytes:
        """The first bytes of the stream (up to SNIFF_BYTES; fewer only at its end)."""
        from .sniff import SNIFF_BYTES

        head = b""
        while len(head) < SNIFF_BYTES:
            data = self._read(SNIFF_BYTES - len(head))
            if not data:
                break
            head += data
        return head

    def __iter__(self) -> Iterator[Chunk]:
        from . import sniff

        head = self._head() if self._sniff else b""
        kind = sniff.sniff(head) if head else "raw"
        self.container = kind
        if kind == "wav":
            pos = 0
            more: list[bytes] = []  # read past the head: all of it, should libsndfile decode it

            def read(n: int) -> bytes:
                nonlocal pos
                if pos < len(head):
                    out = head[pos:pos + n]
                    pos += len(out)
                    return out
                more.append(self._read(n))
                return more[-1]

            try:
                fmt, rest = sniff.read_wav_header(read, self.name)
            except sniff.WavNotStreamable as err:  # ADPCM, GSM...: as a file by path is read
                logger.info("%s; decoding it whole", err)
                yield from self._decoded(head + b"".join(more), "wav")
                return
            self._set_format(fmt.rate_hz, fmt.channels, fmt.sample_format)
            logger.info("%s: WAV stream, %d Hz, %d channel(s), %s", self.name, fmt.rate_hz,
                        fmt.channels, fmt.sample_format)
            yield from self._pcm(rest + head[pos:], fmt.data_bytes)
        elif kind in sniff.DECODED_KINDS:
            yield from self._decoded(head, kind)
        else:
            sniff.refuse_unsupported(head, kind, self.name)
            yield from self._pcm(head, None)

    def _decoded(self, head: bytes, kind: str) -> Iterator[Chunk]:
        from .sniff import MAX_CONTAINER_BYTES, open_container

        parts, total = [head], len(head)
        while True:
            data = self._read(1 << 16)
            if not data:
                break
            total += len(data)
            if total > MAX_CONTAINER_BYTES:
                raise InputError(f"{self.name}: {kind.upper()} stream larger than "
                                 f"{MAX_CONTAINER_BYTES >> 20} MiB; give it as a file instead")
            parts.append(data)
        with native_stderr_muted(MUTE_DECODER_NOTES and kind == "mp3"):  # as FileSource's
            f = open_container(b"".join(parts), kind, self.name)
        with f:
            self._set_format(_check_rate(f.samplerate, self.name), f.channels, "f32")
            logger.info("%s: %s stream, %d Hz, %d channel(s)", self.name, kind.upper(),
                        f.samplerate, f.channels)
            n_read = yield from self._read_sound(f, _block_frames(self.rate_in_hz, f.channels),
                                                 kind.upper())
        if n_read == 0:
            raise InputError(f"{self.name}: {kind.upper()} stream holds no audio samples")
        chunk = self._finish()
        if chunk is not None:
            yield chunk

    def _pcm(self, pending: bytes, limit: int | None) -> Iterator[Chunk]:
        """Stream PCM in the current format, starting with the bytes already read; ``limit``:
        bytes of audio data (a WAV data chunk's length), None for up to the end."""
        from .sniff import pcm_to_float

        total = 0
        data, pending = pending, b""
        while limit is None or total < limit:
            if not data:
                data = self._read()
                if not data:
                    break
            if limit is not None:
                data = data[:limit - total]
            total += len(data)
            pending += data
            data = b""
            usable = len(pending) - len(pending) % self._frame_bytes
            if usable == 0:
                continue
            block = pcm_to_float(pending[:usable], self.sample_format, self.channels)
            pending = pending[usable:]
            chunk = self._convert(block)
            if chunk is not None:
                yield chunk
        if total == 0:
            raise InputError(f"{self.name}: no audio data (the stream was empty)")
        if total < self._frame_bytes:
            raise InputError(f"{self.name}: no audio data (the stream ended after {total} "
                             f"byte(s), less than one {self._frame_bytes}-byte sample frame)")
        if pending:  # a pipe cut mid-sample (e.g. the recorder was killed): harmless
            logger.info("%s: stream ended inside a sample frame; dropped its last %d bytes",
                        self.name, len(pending))
        chunk = self._finish()
        if chunk is not None:
            yield chunk

    def close(self) -> None:
        pass


def _sounddevice():
    """Import sounddevice, turning a missing PortAudio into a DeviceError."""
    try:
        with native_stderr_muted(MUTE_DECODER_NOTES):  # PortAudio's start-up probes ALSA
            import sounddevice as sd
    except OSError as err:  # PortAudio library not found
        raise DeviceError(f"audio devices unavailable: {err} "
                          "(install PortAudio, e.g. apt-get install libportaudio2)") from None
    return sd


def _portaudio_said(err: Exception) -> None:
    """PortAudio's own words (``Error querying device -1``, ``[PaErrorCode -9993]``) are for
    ``-v``; the user's message says what it means."""
    logger.debug("PortAudio: %s", " ".join(str(err).split()) or type(err).__name__)


def list_input_devices() -> list[dict]:
    """Input devices as dicts with ``index``, ``name``, ``channels``, ``default_rate_hz``,
    ``default`` (bool)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except Exception as err:  # PortAudio errors have no common base class worth naming
        _portaudio_said(err)
        raise DeviceError("cannot list audio devices: the sound system did not answer "
                          "(run with -v for details)") from None
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "default_rate_hz": int(d["default_samplerate"]), "default": i == default_in}
            for i, d in enumerate(devices) if d["max_input_channels"] > 0]


class MicrophoneSource(_ResamplingSource):
    """Live audio from an input device through a sounddevice ``InputStream``.

    The PortAudio callback only copies each block into a bounded queue; when the queue is full
    the block is dropped and counted in ``overflows`` (as are PortAudio's own input overflows),
    the stream time skips over it (the pipeline sees a gap, not spliced audio), a warning is
    logged (at most every 10 s), and processing catches up. The device is opened at 16 kHz if it supports it, otherwise at its
    default rate, and resampled.

    :param device: index or (part of a) name, ``None`` for the default input.
    :param block_ms: audio per callback (milliseconds).
    :param queue_s: audio the queue can hold before blocks are dropped (seconds).
    :param stall_s: no audio for this long means the device is gone (seconds).
    :param start_timeout_s: how long the first block may take (seconds); PulseAudio's ALSA
        plugin takes about 2 s to deliver it.
    :param start_s: stream time of the first sample (seconds), to continue after a reopen.
    """

    def __init__(self, device: int | str | None = None, *, block_ms: float = 30.0,
                 queue_s: float = 5.0, stall_s: float = 3.0, start_timeout_s: float = 10.0,
                 start_s: float = 0.0) -> None:
        sd = _sounddevice()
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        label = "default input" if device is None else f"input device {device!r}"
        try:
            with native_stderr_muted(MUTE_DECODER_NOTES):
                info = sd.query_devices(device, "input")
        except Exception as err:
            _portaudio_said(err)
            if device is None:
                raise DeviceError("no default input device: not found; connect a microphone or "
                                  "pick one with --device (`rtverify devices` lists them)") from None
            if isinstance(device, str) and str(err).startswith("Multiple"):
                raise DeviceError(f"{label}: names several input devices; give more of the "
                                  "name, or its index (`rtverify devices` lists them)") from None
            raise DeviceError(f"{label}: not found, or it is not an input; `rtverify devices` "
                              "lists them") from None
        name = f"{info['name']} (#{info['index']})"
        rate = SAMPLE_RATE_HZ
        channels = 1
        try:
            with native_stderr_muted(MUTE_DECODER_NOTES):
                sd.check_input_settings(device=info["index"], samplerate=rate, channels=1,
                                        dtype="float32")
        except Exception:
            rate = int(info["default_samplerate"])
            channels = 1 if info["max_input_channels"] >= 1 else 0
        if channels == 0:
            raise DeviceError(f"{name}: has no input channels")
        super().__init__(name, _check_rate(rate, name), realtime=False)
        self.device_index = int(info["index"])
        self._n_out = int(round(start_s * SAMPLE_RATE_HZ))
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, int(queue_s * 1000 / block_ms)))
        self._stall_s = stall_s
        self._start_timeout_s = start_timeout_s
        self._dropped_frames = 0  # input frames the callback could not queue since the last
        self._overflow_logged_at = -OVERFLOW_LOG_S
        self._closed = threading.Event()
        self.level_dbfs = -120.0
        """Level of the most recent block (dB relative to full scale), for meters."""
        try:
            with native_stderr_muted(MUTE_DECODER_NOTES):  # ALSA's lines at a failed open
                self._stream = sd.InputStream(device=self.device_index, channels=channels,
                                              samplerate=rate, dtype="float32",
                                              blocksize=max(1, int(rate * block_ms / 1000)),
                                              callback=self._callback)
                self._stream.start()
        except Exception as err:
            _portaudio_said(err)
            raise DeviceError(f"{name}: cannot open for recording at {rate} Hz (is it in use, "
                              "or gone? run with -v for details)") from None
        logger.info("recording from %s at %d Hz", name, rate)

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread
        if status.input_overflow:
            self.overflows += 1
        try:  # each block carries the number of input frames dropped just before it
            self._queue.put_nowait((self._dropped_frames, indata.copy()))
            self._dropped_frames = 0
        except queue.Full:
            self.overflows += 1
            self._dropped_frames += frames  # only this thread touches it

    def _catch_up(self, dropped: int) -> Iterator[Chunk]:
        """Blocks were dropped before the next one: end the audio before the hole and move the
        stream time past it, so the pipeline sees a gap instead of audio spliced across it."""
        chunk = self._finish()  # the resampler's tail of the audio before the hole
        if chunk is not None:
            yield chunk
        self._n_out += int(round(dropped * SAMPLE_RATE_HZ / self.rate_in_hz))
        now = time.monotonic()
        if now - self._overflow_logged_at >= OVERFLOW_LOG_S:
            self._overflow_logged_at = now
            logger.warning("%s: input overflow, %d block(s) of audio lost so far (the machine "
                           "is too slow or too busy to keep up)", self.name, self.overflows)

    def __iter__(self) -> Iterator[Chunk]:
        last = time.monotonic()
        limit = self._start_timeout_s  # the first block may be slow to come
        while not self._closed.is_set():
            try:
                dropped, block = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closed.is_set():
                    break
                if not self._stream.active:
                    raise DeviceError(f"{self.name}: stopped delivering audio (stream ended)")
                if time.monotonic() - last >= limit:
                    raise DeviceError(f"{self.name}: delivered no audio for {limit:g} s")
                continue
            last = time.monotonic()
            limit = self._stall_s
            if dropped:
                yield from self._catch_up(dropped)
            rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64)))) if block.size else 0.0
            self.level_dbfs = 20 * np.log10(max(rms, 1e-6))
            chunk = self._convert(block)
            if chunk is not None:
                yield chunk

    CLOSE_TIMEOUT_S = 3.0
    """How long closing the device may take before it is left behind (seconds)."""

    def close(self) -> None:
        """Stop recording. Input is aborted rather than drained (nothing waits for the last
        block), on a helper thread: a device or sound server that stops answering must not keep
        listen from ending (its summary is written after this)."""
        self._closed.set()

        def shut() -> None:
            try:
                self._stream.abort()
                self._stream.close()
            except Exception:  # closing a vanished device may fail; nothing left to do about it
                logger.debug("closing %s failed", self.name, exc_info=True)

        closer = threading.Thread(target=shut, name="rtverify-close", daemon=True)
        closer.start()
        closer.join(self.CLOSE_TIMEOUT_S)
        if closer.is_alive():
            logger.warning("%s: the device did not close within %g s; leaving it", self.name,
                           self.CLOSE_TIMEOUT_S)
