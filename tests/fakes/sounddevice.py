"""A stand-in for the ``sounddevice`` module: one fake microphone driven by a script.

Used in-process (``monkeypatch.setitem(sys.modules, "sounddevice", fake)``) and by subprocesses
(``PYTHONPATH=tests/fakes``, script in the JSON file named by ``$FAKE_SOUNDDEVICE_SCRIPT``).

The script is a list of steps, one consumed per attempt to open the device:

``{"fail": "missing"}``   the device is not there (query_devices raises)
``{"fail": "open"}``      it is listed but cannot be opened (InputStream raises)
``{"audio": X, "then": T}`` it opens and delivers X (a WAV path or a float array at 16 kHz) in
                          30 ms blocks, ``speed`` times faster than real time, then: ``die``
                          (the stream stops and reports inactive), ``hang`` (no more callbacks,
                          still "active"), or ``silence`` (zeros at real time until closed);
                          an optional ``"tail"`` (same kinds as X) comes at real time between;
                          ``"close_hangs": true``: stopping the stream never returns.

With the script exhausted, the device is missing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from types import SimpleNamespace

import numpy as np

RATE_HZ = 16000
DEVICE = {"name": "fake mic", "index": 0, "max_input_channels": 1,
          "default_samplerate": float(RATE_HZ), "hostapi": 0}


class PortAudioError(Exception):
    pass


default = SimpleNamespace(device=(0, None))
script: list[dict] = []
speed = 1.0
streams: list["InputStream"] = []
"""Every stream opened, in order (for tests)."""


def load(path: str) -> None:
    global speed
    with open(path) as f:
        cfg = json.load(f)
    script[:] = cfg["script"]
    speed = float(cfg.get("speed", 1.0))


if os.environ.get("FAKE_SOUNDDEVICE_SCRIPT"):
    load(os.environ["FAKE_SOUNDDEVICE_SCRIPT"])


def _missing() -> bool:
    if not script:
        return True
    if script[0].get("fail") == "missing":
        script.pop(0)
        return True
    return False


def query_devices(device=None, kind=None):
    if device is None and kind is None:
        return [dict(DEVICE)]
    if device == "ambiguous":  # what sounddevice raises for a name that several devices match
        raise ValueError("Multiple input devices found for 'ambiguous':\n"
                         "[0] ambiguous one\n[1] ambiguous two")
    if _missing():
        raise PortAudioError(f"No input device matching {device!r}")
    return dict(DEVICE)


def check_input_settings(device=None, samplerate=None, channels=None, dtype=None):
    if samplerate != RATE_HZ:
        raise PortAudioError("Invalid sample rate")


class InputStream:
    def __init__(self, device, channels, samplerate, dtype, blocksize, callback):
        step = script.pop(0) if script else {"fail": "open"}
        if step.get("fail"):
            raise PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode "
                                 "-9985]")
        self.audio = self._samples(step["audio"])
        self.tail = self._samples(step.get("tail", []))
        self.then = step.get("then", "die")
        self.close_hangs = bool(step.get("close_hangs"))
        self.blocksize = blocksize
        self.callback = callback
        self.active = False
        self.delivered = 0
        """Samples handed to the callback."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        streams.append(self)

    @staticmethod
    def _samples(audio) -> np.ndarray:
        if isinstance(audio, str):
            import soundfile as sf

            audio, rate = sf.read(audio, dtype="float32")
            assert rate == RATE_HZ, rate
        return np.asarray(audio, dtype=np.float32)

    def _deliver(self, block: np.ndarray, pace_s: float) -> None:
        self.callback(block[:, None].copy(), len(block), None,
                      SimpleNamespace(input_overflow=False))
        self.delivered += len(block)
        time.sleep(pace_s)

    def _run(self) -> None:
        step_s = self.blocksize / RATE_HZ
        for i in range(0, len(self.audio), self.blocksize):
            if self._stop.is_set():
                return
            self._deliver(self.audio[i:i + self.blocksize], step_s / speed)
        for i in range(0, len(self.tail), self.blocksize):
            if self._stop.is_set():
                return
            self._deliver(self.tail[i:i + self.blocksize], step_s)
        if self.then == "die":
            self.active = False
        elif self.then == "silence":
            while not self._stop.is_set():
                self._deliver(np.zeros(self.blocksize, np.float32), step_s)

    def start(self):
        self.active = True
        self._thread.start()

    def stop(self):
        if self.close_hangs:
            threading.Event().wait()  # a sound server that never answers
        self._stop.set()
        self.active = False

    abort = stop

    def close(self):
        self._stop.set()
