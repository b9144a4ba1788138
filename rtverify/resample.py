"""Streaming polyphase resampling.

``StreamingResampler`` is a stateful twin of ``scipy.signal.resample_poly(x, up, down)``: the same
Kaiser-windowed FIR (designed by ``scipy.signal.firwin``), the same zero-phase alignment, the same
output length, but fed chunk by chunk with bounded memory, so an hour-long 44.1 kHz file or a live
48 kHz microphone is resampled without ever holding the whole signal.

Each step runs ``scipy.signal.upfirdn`` (compiled polyphase filtering) over the input the new
outputs need, starting at an input index whose phase lines its output grid up with the stream's.
"""

from __future__ import annotations

import functools
from math import gcd

import numpy as np


@functools.lru_cache(maxsize=16)
def _filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """resample_poly's default filter (float64, length ``2 * half_len + 1``) and ``half_len``
    (in upsampled samples)."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up
    h.flags.writeable = False
    return h, half_len


class StreamingResampler:
    """Resample a stream from ``rate_in_hz`` to ``rate_out_hz``.

    ``push(x)`` returns every output sample that the input so far fully determines; ``flush()``
    ends the stream (zeros beyond its end, as resample_poly assumes) and returns the rest. All of
    it concatenated equals ``resample_poly(whole_input, up, down)`` to float rounding, and has
    ``ceil(n_in * rate_out / rate_in)`` samples.
    """

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
            self._h, self._half_len = _filter(self.up, self.down)
            # Output m is sample m*down + half_len of (h * upsampled input). Filtering from input
            # index s puts it at m*down + half_len - s*up, a multiple of down (which upfirdn
            # returns) exactly when s*up = half_len (mod down): s = _phase0 (mod down).
            self._phase0 = (self._half_len * pow(self.up, -1, self.down)) % self.down \
                if self.down > 1 else 0
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self._n_in = 0  # input samples received
        self._n_out = 0  # output samples produced
        self._buf = np.zeros(0)  # input history; _buf[0] is absolute input index _buf_start
        self._buf_start = 0
        if not self.identity:
            self._trim()

    def _first_input(self, m: int) -> int:
        """The aligned input index to filter from so that output ``m`` onwards can be made."""
        lo = -((self._half_len - m * self.down) // self.up)  # ceil((m*down - half_len) / up)
        return lo - (lo - self._phase0) % self.down

    def _trim(self) -> None:
        """Keep only the history from the next output's aligned start (zeros before 0)."""
        s = self._first_input(self._n_out)
        if s < self._buf_start:  # the start of the stream: history is zeros
            self._buf = np.concatenate([np.zeros(self._buf_start - s), self._buf])
        else:
            self._buf = self._buf[s - self._buf_start:]
        self._buf_start = s

    def _produce(self, last_out: int) -> np.ndarray:
        """Outputs with absolute indices ``_n_out .. last_out - 1``."""
        from scipy.signal import upfirdn

        n = last_out - self._n_out
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        hi = ((last_out - 1) * self.down + self._half_len) // self.up  # newest input needed
        seg = self._buf[:hi + 1 - self._buf_start]
        first = (self._n_out * self.down + self._half_len - self._buf_start * self.up) // self.down
        out = upfirdn(self._h, seg, self.up, self.down)[first:first + n]
        self._n_out = last_out
        self._trim()
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
        self._buf = np.concatenate([self._buf, np.zeros(len(self._h) // self.up + 2)])
        out = self._produce(total)
        self.reset()
        return out
