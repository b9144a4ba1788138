"""Neural confirmation of speech: Silero VAD (MIT, the Silero Team) on onnxruntime.

webrtcvad calls many non-speech sounds speech (a hum, knocks, chords, keyboard clicks), and a
decision on them reads as "a stranger spoke". The segmenter therefore asks this second stage to
*confirm* each segment webrtcvad opened: the segment's audio is run through Silero VAD from its
start until ``confirm_ms`` of it has a speech probability of at least ``threshold``; a segment
that ends unconfirmed is dropped (``reason: "not_speech"``). Silero runs only inside segments
and only until they are confirmed, a fraction of a second of each utterance, so it costs little
of the pipeline's throughput.

The model is ``silero_vad_16k_sequence.onnx`` from the ``silero-vad`` 6.2.3 wheel, shipped as
``rtverify/models/silero_vad.onnx`` (licence: ``rtverify/models/SILERO_VAD_LICENSE``). It is
the streaming model's computation over a block of 32 ms frames in one call (per-frame
probabilities bit-identical to the streaming model's, measured), which halves the cost of the
per-frame calls: input ``input`` float32 ``(n_frames, 64 + 512)`` (each frame preceded by the
last 64 samples of the frame before), states ``h`` and ``c`` float32 ``(1, 1, 128)``; outputs
``speech_probs`` ``(n_frames,)``, ``hn``, ``cn``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "silero_vad.onnx"
FRAME_SAMPLES = 512
"""Samples per Silero frame at 16 kHz (32 ms)."""
CONTEXT_SAMPLES = 64
"""Samples of the previous frame prepended to each frame."""



@dataclass(frozen=True)
class ConfirmConfig:
    """The neural confirmation of webrtcvad's segments."""

    confirm_ms: float = 96.0
    """Silero speech needed in a segment for it to count as speech (milliseconds, in 32 ms
    frames); never more than the segmenter's ``min_speech_ms``. Measured on synthetic sounds
    (-38 to -26 dBFS): hum, noise, clicks and chords reach no frame at 0.4, knocks at most 2."""
    threshold: float = 0.4
    """Silero speech probability at which a frame counts as speech (0..1)."""
    batch_frames: int = 4
    """32 ms frames gathered per model call while a segment is unconfirmed (count)."""
    steady_db: float = 1.5
    """A segment whose voiced frames' levels have a standard deviation below this is a steady
    sound (mains hum, a fan, a drone) whatever the neural VAD says (decibels). Measured: the
    hums Silero let through in tools/room_streams.py 0.66 and 0.79 dB; 905 confirmed speech
    segments of the LibriSpeech 3 s crops and Arabic keywords at least 2.05 dB (3.0 at the
    0.5th percentile); 3 dB dropped two LibriSpeech crops."""


_sessions: dict[str, object] = {}
_lock = threading.Lock()


def _session(path: Path):
    """One onnxruntime session per model file for the process, made on first use (one intra-op
    thread: the model is tiny, and the encoder owns the other threads)."""
    key = str(path)
    with _lock:
        sess = _sessions.get(key)
        if sess is None:
            import onnxruntime as ort

            from ..errors import ModelError

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            try:
                sess = ort.InferenceSession(key, opts, providers=["CPUExecutionProvider"])
            except Exception as err:  # onnxruntime raises its own exception types
                raise ModelError(f"{path}: cannot load the speech-confirmation model "
                                 f"({type(err).__name__}: {err})") from None
            _sessions[key] = sess
        return sess


class SileroVAD:
    """Streaming speech probabilities of 16 kHz audio, 32 ms frame by frame.

    Feed audio with :meth:`push` (any length); it returns the probabilities of the frames it
    completed. State (LSTM state, context, the unfinished frame) is explicit; :meth:`reset`
    starts a new stream.
    """

    def __init__(self, path: str | Path = MODEL_PATH) -> None:
        self.path = Path(path)
        self._sess = _session(self.path)
        self.frames_run = 0
        """Frames run through the model since construction (count; for measurements)."""
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    @property
    def buffered(self) -> int:
        """Samples waiting for a whole frame (count)."""
        return len(self._rest)

    def push(self, samples: np.ndarray, *, pad: bool = False) -> np.ndarray:
        """Add float32 samples; return the speech probability of each completed frame,
        float32 ``(k,)``. ``pad``: also complete a last partial frame with zeros."""
        x = np.concatenate([self._rest, np.asarray(samples, dtype=np.float32)])
        n = len(x) // FRAME_SAMPLES
        if pad and len(x) % FRAME_SAMPLES:
            x = np.concatenate([x, np.zeros(FRAME_SAMPLES - len(x) % FRAME_SAMPLES, np.float32)])
            n += 1
        if n == 0:
            self._rest = x
            return np.zeros(0, dtype=np.float32)
        frames = x[:n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        self._rest = x[n * FRAME_SAMPLES:]
        contexts = np.empty((n, CONTEXT_SAMPLES), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = frames[:-1, -CONTEXT_SAMPLES:]
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        probs, self._h, self._c = self._sess.run(
            None, {"input": np.ascontiguousarray(np.concatenate([contexts, frames], axis=1)),
                   "h": self._h, "c": self._c})
        self.frames_run += n
        return np.asarray(probs, dtype=np.float32).reshape(-1)


class SpeechConfirmer:
    """Decides, as a segment's audio arrives, whether it holds speech.

    :param confirm_ms: speech (frames at or above ``threshold``) needed to confirm (ms).
    :param threshold: Silero speech probability that counts as speech (0..1).
    :param batch_frames: frames gathered before a model call (one call per ``32 * batch_frames``
        ms while unconfirmed); at the segment's end the rest is run at once.
    """

    def __init__(self, confirm_ms: float = 160.0, threshold: float = 0.5,
                 batch_frames: int = 6, vad: SileroVAD | None = None) -> None:
        self.vad = vad if vad is not None else SileroVAD()
        self.need = max(1, int(round(confirm_ms / 32.0)))
        self.threshold = threshold
        self.batch = batch_frames * FRAME_SAMPLES
        self.reset()

    def reset(self) -> None:
        """A new segment begins."""
        self.vad.reset()
        self.confirmed = False
        self.speech_frames = 0
        self._queued: list[np.ndarray] = []
        self._queued_n = 0

    def _run(self, audio: np.ndarray, pad: bool) -> None:
        probs = self.vad.push(audio, pad=pad)
        self.speech_frames += int(np.count_nonzero(probs >= self.threshold))
        if self.speech_frames >= self.need:
            self.confirmed = True
            self._queued, self._queued_n = [], 0

    def push(self, samples: np.ndarray) -> bool:
        """More of the segment's audio; returns whether the segment is confirmed so far."""
        if self.confirmed:
            return True
        self._queued.append(samples)
        self._queued_n += len(samples)
        if self._queued_n + self.vad.buffered >= self.batch:
            audio = np.concatenate(self._queued)
            self._queued, self._queued_n = [], 0
            self._run(audio, pad=False)
        return self.confirmed

    def finish(self) -> bool:
        """The segment ended: run what is left; whether it was speech."""
        if not self.confirmed and (self._queued or self.vad.buffered):
            audio = np.concatenate(self._queued) if self._queued else np.zeros(0, np.float32)
            self._queued, self._queued_n = [], 0
            self._run(audio, pad=True)
        return self.confirmed
