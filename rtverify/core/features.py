"""The one spectrogram front-end, shared by the runtime, training and export.

``mel_spectrogram(signal)`` computes a whole signal at once; ``StreamingFeatures`` takes chunks
of any size and emits the same rows incrementally, never recomputing past audio. Both produce
float32 arrays of shape ``(n_frames, n_mels)`` and agree to float32 rounding for any chunking.

With the default :class:`~rtverify.config.FeatureConfig` the rows reproduce
``librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)`` (centred
frames with zero padding, periodic Hann window, Slaney mel scale and area normalisation, power
2), which is what the pretrained GE2E encoder of Resemblyzer was trained on. The number of rows
for ``n`` samples is ``1 + n // hop_length``.
"""

from __future__ import annotations

import functools

import numpy as np

from ..config import FeatureConfig

_DEFAULT = FeatureConfig()

_PRODUCT_ROWS = 24
"""Rows per filterbank product. OpenBLAS runs a matrix product on one thread only while
rows x n_mels x bins stays under 262144 (24 x 40 x 201 does); a larger one wakes its other threads
(one per core unless OPENBLAS_NUM_THREADS says otherwise), which for products this small costs
several times the arithmetic. Each row's value does not depend on how rows are grouped."""


def _hz_to_mel(hz: np.ndarray, scale: str) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz,
                    min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray, scale: str) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel,
                    min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@functools.lru_cache(maxsize=8)
def mel_filterbank(cfg: FeatureConfig = _DEFAULT) -> np.ndarray:
    """Triangular mel filters, float64 array of shape ``(n_mels, n_fft // 2 + 1)``.

    Same construction as ``librosa.filters.mel`` (band edges evenly spaced on the mel scale,
    triangles over linear frequency, optional Slaney area normalisation).
    """
    fft_hz = np.fft.rfftfreq(cfg.n_fft, d=1.0 / cfg.sample_rate_hz)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin_hz, cfg.mel_scale),
                                      _hz_to_mel(cfg.fmax_hz, cfg.mel_scale), cfg.n_mels + 2),
                          cfg.mel_scale)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if cfg.mel_norm == "slaney":
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (as ``scipy.signal.get_window('hann', n, fftbins=True)``)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    w.flags.writeable = False
    return w


def _frames_to_rows(frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """float64 frames ``(n, n_fft)`` -> float32 rows ``(n, n_mels)``."""
    if len(frames) == 0:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    spectrum = np.abs(np.fft.rfft(frames * _window(cfg.n_fft), axis=1))
    if cfg.power == 2.0:
        spectrum = spectrum * spectrum
    elif cfg.power != 1.0:
        spectrum = spectrum ** cfg.power
    mel_t = mel_filterbank(cfg).T
    if len(spectrum) <= _PRODUCT_ROWS:
        rows = spectrum @ mel_t
    else:
        rows = np.empty((len(spectrum), cfg.n_mels))
        for a in range(0, len(spectrum), _PRODUCT_ROWS):
            np.matmul(spectrum[a:a + _PRODUCT_ROWS], mel_t, out=rows[a:a + _PRODUCT_ROWS])
    if cfg.log:
        rows = np.log(rows + cfg.log_floor)
    return rows.astype(np.float32)


def _as_signal(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def mel_spectrogram(signal: np.ndarray, cfg: FeatureConfig = _DEFAULT) -> np.ndarray:
    """Rows of a whole signal.

    :param signal: mono samples at ``cfg.sample_rate_hz``, shape ``(n,)``, full scale 1.0.
    :return: float32 array of shape ``(1 + n // hop_length, n_mels)``.
    """
    x = _as_signal(signal)
    half = cfg.n_fft // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(cfg.n_fft - half)])
    n_frames = 1 + len(x) // cfg.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[::cfg.hop_length]
    return _frames_to_rows(frames[:n_frames], cfg)


class StreamingFeatures:
    """Incremental twin of :func:`mel_spectrogram`.

    ``push`` accepts any number of samples and returns the rows whose windows are complete;
    ``flush`` ends the signal (zero padding, as the batch function does) and returns the last rows,
    then the object is ready for a new signal. Concatenating everything ``push`` and ``flush``
    returned equals ``mel_spectrogram`` of the concatenated samples.
    """

    def __init__(self, cfg: FeatureConfig = _DEFAULT):
        self.cfg = cfg
        self._pending = np.zeros(0)
        self.n_samples = 0
        """Samples pushed since the last reset (count)."""
        self.n_rows = 0
        """Rows emitted since the last reset (count)."""
        self.reset()

    def reset(self) -> None:
        """Forget the current signal; the next ``push`` starts a new one."""
        self._pending = np.zeros(self.cfg.n_fft // 2)  # the centring pad before the first sample
        self.n_samples = 0
        self.n_rows = 0

    def _emit(self, buf: np.ndarray, limit: int | None = None) -> np.ndarray:
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        n = 0 if len(buf) < n_fft else 1 + (len(buf) - n_fft) // hop
        if limit is not None:
            n = min(n, limit)
        frames = np.lib.stride_tricks.sliding_window_view(buf, n_fft)[::hop][:n] if n else buf[:0]
        self._pending = buf[n * hop:].copy()
        self.n_rows += n
        return _frames_to_rows(frames.reshape(n, n_fft), self.cfg)

    def ready_rows(self, n_more: int) -> int:
        """How many rows a :meth:`push` of ``n_more`` further samples would return (count)."""
        n = len(self._pending) + n_more
        return 0 if n < self.cfg.n_fft else 1 + (n - self.cfg.n_fft) // self.cfg.hop_length

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; return the newly complete rows, float32 ``(k, n_mels)`` (k may be 0)."""
        x = _as_signal(samples)
        self.n_samples += len(x)
        return self._emit(np.concatenate([self._pending, x]))

    def flush(self) -> np.ndarray:
        """End the signal: return its remaining rows and reset for the next one."""
        total = 1 + self.n_samples // self.cfg.hop_length
        tail = np.zeros(self.cfg.n_fft - self.cfg.n_fft // 2)
        rows = self._emit(np.concatenate([self._pending, tail]), limit=total - self.n_rows)
        self.reset()
        return rows
