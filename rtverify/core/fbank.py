"""Kaldi log-mel filterbank ("fbank") in numpy: the input CAM++ was trained on.

Reproduces ``kaldi-native-fbank`` / Kaldi's ``compute-fbank-feats`` with the options 3D-Speaker's
CAM++ uses: 16 kHz, 25 ms frames every 10 ms without padding (``snip_edges``), samples scaled to
the 16-bit integer range, no dither, DC offset removed per frame, pre-emphasis 0.97, Povey window,
512-point FFT, power spectrum, 80 triangular filters evenly spaced on Kaldi's mel scale
(``1127 ln(1 + f / 700)``) from 20 Hz to the Nyquist frequency, natural log floored at float32
epsilon. ``fbank(x)`` is checked against ``kaldi-native-fbank`` in ``tests/test_fbank.py``.

``cmn`` removes each band's mean over the utterance (what CAM++ expects). No torch here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

INT16_SCALE = 32768.0
"""Samples at full scale 1.0 are multiplied by this (Kaldi works on 16-bit integer values)."""
_EPS = float(np.finfo(np.float32).eps)
_PRODUCT_ROWS = 12
"""Rows per filterbank product: 12 x 80 x 257 stays under OpenBLAS's single-thread limit (262144),
as in :mod:`rtverify.core.features`; a row's value does not depend on the grouping."""


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank options (the defaults are CAM++'s)."""

    sample_rate_hz: int = 16000
    """Rate of the input samples (hertz)."""
    frame_ms: float = 25.0
    """Frame length (milliseconds): 400 samples at 16 kHz."""
    hop_ms: float = 10.0
    """Frame shift (milliseconds): 160 samples at 16 kHz."""
    n_mels: int = 80
    """Number of mel filters (columns of a row)."""
    low_hz: float = 20.0
    """Lowest filter edge (hertz)."""
    high_hz: float = 0.0
    """Highest filter edge (hertz); 0 or less means the Nyquist frequency plus this offset."""
    preemph: float = 0.97
    """Pre-emphasis coefficient."""

    KIND = "kaldi_fbank"
    """``features.kind`` in a model sidecar that selects this front-end."""

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.frame_length < 16 or self.hop_length < 1:
            raise ValueError(f"sample_rate_hz={self.sample_rate_hz}, frame_ms={self.frame_ms}, "
                             f"hop_ms={self.hop_ms}: frames of {self.frame_length} samples every "
                             f"{self.hop_length} are too small")
        if self.n_mels < 1:
            raise ValueError(f"n_mels must be positive, got {self.n_mels}")

    def to_dict(self) -> dict:
        return {"kind": self.KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FbankConfig":
        data = dict(data)
        kind = data.pop("kind", cls.KIND)
        if kind != cls.KIND:
            raise ValueError(f"features.kind is {kind!r}, expected {cls.KIND!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fbank setting(s) {unknown}")
        return cls(**data)

    @property
    def frame_length(self) -> int:
        """Frame length (samples)."""
        return int(round(self.sample_rate_hz * self.frame_ms / 1000))

    @property
    def hop_length(self) -> int:
        """Frame shift (samples)."""
        return int(round(self.sample_rate_hz * self.hop_ms / 1000))

    @property
    def n_fft(self) -> int:
        """FFT size: the frame length rounded up to a power of two (samples)."""
        return 1 << (self.frame_length - 1).bit_length()


@functools.lru_cache(maxsize=4)
def kaldi_mel_banks(cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """Kaldi's mel filters, float64 ``(n_mels, n_fft // 2 + 1)`` (the Nyquist column is zero)."""
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    nyquist = 0.5 * cfg.sample_rate_hz
    high = cfg.high_hz if cfg.high_hz > 0 else nyquist + cfg.high_hz
    if not 0 <= cfg.low_hz < high <= nyquist:
        raise ValueError(f"need 0 <= low_hz < high_hz <= {nyquist}, got {cfg.low_hz}, {high}")
    n_bins = cfg.n_fft // 2
    lo, hi = mel(cfg.low_hz), mel(high)
    delta = (hi - lo) / (cfg.n_mels + 1)
    left = lo + delta * np.arange(cfg.n_mels)[:, None]
    centre, right = left + delta, left + 2 * delta
    m = mel(np.arange(n_bins) * cfg.sample_rate_hz / cfg.n_fft)[None, :]
    up = (m - left) / (centre - left)
    down = (right - m) / (right - centre)
    w = np.where((m > left) & (m < right), np.where(m <= centre, up, down), 0.0)
    out = np.zeros((cfg.n_mels, n_bins + 1))
    out[:, :n_bins] = w
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=4)
def _povey(n: int) -> np.ndarray:
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / (n - 1))) ** 0.85
    w.flags.writeable = False
    return w


def n_frames(n_samples: int, cfg: FbankConfig = FbankConfig()) -> int:
    """Rows for ``n_samples`` samples (Kaldi ``snip_edges``: only whole frames)."""
    if n_samples < cfg.frame_length:
        return 0
    return 1 + (n_samples - cfg.frame_length) // cfg.hop_length


def fbank(samples: np.ndarray, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """Log mel filterbank of a whole signal.

    :param samples: mono samples at ``cfg.sample_rate_hz``, shape ``(n,)``, full scale 1.0.
    :return: float32 ``(n_frames(n), n_mels)``.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got shape {x.shape}")
    x = x.astype(np.float64)
    n = n_frames(len(x), cfg)
    if n == 0:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.frame_length)[::cfg.hop_length][:n]
    return _frames_to_rows(frames, cfg)


def _frames_to_rows(frames: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """float64 frames ``(n, frame_length)`` at full scale 1.0 -> float32 rows ``(n, n_mels)``."""
    if len(frames) == 0:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    frames = frames * INT16_SCALE
    frames = frames - frames.mean(axis=1, keepdims=True)
    emph = np.empty_like(frames)
    emph[:, 1:] = frames[:, 1:] - cfg.preemph * frames[:, :-1]
    emph[:, 0] = frames[:, 0] * (1.0 - cfg.preemph)
    spec = np.fft.rfft(emph * _povey(cfg.frame_length), n=cfg.n_fft, axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    banks_t = kaldi_mel_banks(cfg).T
    energies = np.empty((len(power), cfg.n_mels))
    for a in range(0, len(power), _PRODUCT_ROWS):  # see _PRODUCT_ROWS
        np.matmul(power[a:a + _PRODUCT_ROWS], banks_t, out=energies[a:a + _PRODUCT_ROWS])
    return np.log(np.maximum(energies, _EPS)).astype(np.float32)


class StreamingFbank:
    """Incremental twin of :func:`fbank`, with the interface of
    :class:`rtverify.core.features.StreamingFeatures`: ``push`` takes any number of samples and
    returns the rows whose frames are complete, ``flush`` ends the signal (Kaldi keeps no partial
    frame, so it returns no further row) and resets. Concatenating what ``push`` returned equals
    ``fbank`` of the concatenated samples, whatever the chunking (every row depends on its own
    frame only)."""

    def __init__(self, cfg: FbankConfig = FbankConfig()) -> None:
        self.cfg = cfg
        self._pending = np.zeros(0)
        self.n_samples = 0
        """Samples pushed since the last reset (count)."""
        self.n_rows = 0
        """Rows emitted since the last reset (count)."""
        self.reset()

    def reset(self) -> None:
        """Forget the current signal; the next ``push`` starts a new one."""
        self._pending = np.zeros(0)
        self.n_samples = 0
        self.n_rows = 0

    def ready_rows(self, n_more: int) -> int:
        """How many rows a :meth:`push` of ``n_more`` further samples would return (count)."""
        return n_frames(len(self._pending) + n_more, self.cfg)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; return the newly complete rows, float32 ``(k, n_mels)`` (k may be 0)."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"expected mono samples of shape (n,), got shape {x.shape}")
        self.n_samples += len(x)
        buf = np.concatenate([self._pending, x.astype(np.float64)])
        n = n_frames(len(buf), self.cfg)
        hop = self.cfg.hop_length
        frames = (np.lib.stride_tricks.sliding_window_view(buf, self.cfg.frame_length)[::hop][:n]
                  if n else buf[:0].reshape(0, self.cfg.frame_length))
        self._pending = buf[n * hop:].copy()
        self.n_rows += n
        return _frames_to_rows(frames, self.cfg)

    def flush(self) -> np.ndarray:
        """End the signal (no partial frame is kept) and reset; returns no rows."""
        self.reset()
        return np.zeros((0, self.cfg.n_mels), dtype=np.float32)


def cmn(rows: np.ndarray) -> np.ndarray:
    """Rows with each band's mean over the rows removed (float32, same shape)."""
    rows = np.asarray(rows, dtype=np.float32)
    if len(rows) == 0:
        return rows
    return rows - rows.mean(axis=0, keepdims=True)
