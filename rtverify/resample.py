"""Streaming polyphase resampling.

``StreamingResampler`` is a stateful twin of ``scipy.signal.resample_poly(x, up, down)``: the same
Kaiser-windowed FIR (designed by ``scipy.signal.firwin``), the same zero-phase alignment, the same
output length, but fed chunk by chunk with bounded memory, so an hour-long 44.1 kHz file or a live
48 kHz microphone is resampled without ever holding the whole signal.
"""

from __future__ import annotations

import functools
from math import gcd

import numpy as np


@functools.lru_cache(maxsize=16)
def _polyphase(up: int, down: int) -> tuple[np.ndarray, int]:
    """Polyphase matrix ``(up, taps_per_phase)`` of resample_poly's default filter, and its half
    length (in upsampled samples)."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up
    taps = -(-len(h) // up)
    h = np.concatenate([h, np.zeros(taps * up - len(h))])
    phases = h.reshape(taps, up).T.copy()  # phases[p, i] = h[p + i * up]
    phases.flags.writeable = False
    return phases, half_len


class StreamingResampler:
    """Resample a stream from ``rate_in_hz`` to ``rate_out_hz``.

    ``push(x)`` returns every output sample that the input so far fully determines; ``flush()``
    ends the stream (zeros beyond its end, as resample_poly assumes) and returns the rest. All of
    it concatenated equals ``resample_poly(whole_input, up, down)`` to float rounding, and has
    ``ceil(n_in * rate_out / rate_in)`` samples.
    """

    _BLOCK = 4096
    """Outputs computed per vectorised step (bounds temporary memory to ~BLOCK * taps floats)."""

    def __init__(self, rate_in_hz: int, rate_out_hz: int):
        if rate_in_hz <= 0 or rate_out_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in_hz} -> {rate_out_hz}")
        g = gcd(int(rate_in_hz), int(rate_out_hz))
        self.rate_in_hz = int(rate_in_hz)
        self.rate_out_hz = int(rate_out_hz)
        self.up = self.rate_out_hz // g
        self.down = self.rate_in_hz // g
        self.identity = self.up == self.down
        if not self.identity:
            self._phases, self._half_len = _polyphase(self.up, self.down)
            self._taps = self._phases.shape[1]
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self._n_in = 0  # input samples received
        self._n_out = 0  # output samples produced
        taps = 0 if self.identity else self._taps
        self._buf = np.zeros(taps)  # input history; _buf[0] is absolute input index _buf_start
        self._buf_start = -taps

    def _produce(self, last_out: int) -> np.ndarray:
        """Outputs with absolute indices ``_n_out .. last_out - 1``."""
        if last_out <= self._n_out:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(last_out - self._n_out)
        lag = np.arange(self._taps)
        for start in range(self._n_out, last_out, self._BLOCK):  # bounds the gather's memory
            m = np.arange(start, min(start + self._BLOCK, last_out), dtype=np.int64)
            centre = m * self.down + self._half_len
            q = centre // self.up  # newest input index each output needs
            idx = (q - self._buf_start)[:, None] - lag[None, :]
            out[start - self._n_out:start - self._n_out + len(m)] = np.einsum(
                "ij,ij->i", self._phases[centre % self.up], self._buf[idx])
        self._n_out = last_out
        # keep only the history the next output can still reach
        keep_from = (self._n_out * self.down + self._half_len) // self.up - self._taps + 1
        drop = max(0, min(keep_from - self._buf_start, len(self._buf)))
        if drop:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return out.astype(np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Add input samples (shape ``(n,)``); return the new output samples (float32)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.identity:
            self._n_in += len(x)
            self._n_out += len(x)
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        # output m is complete once input index (m*down + half_len) // up has arrived
        last = (self._n_in * self.up - 1 - self._half_len) // self.down + 1
        return self._produce(max(last, self._n_out))

    def flush(self) -> np.ndarray:
        """End the stream; return the remaining output and reset."""
        if self.identity:
            self.reset()
            return np.zeros(0, dtype=np.float32)
        total = -(-self._n_in * self.up // self.down)
        self._buf = np.concatenate([self._buf, np.zeros(self._taps + self._half_len // self.up + 1)])
        out = self._produce(total)
        self.reset()
        return out
