"""Real ``rtverify serve`` processes on loopback for the serve/client tests."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "rtverify" / "demo"
WAIT_S = 30.0
"""Longest any single wait in these tests (seconds)."""


def cli(*args, store: Path, timeout: float = 120.0, env_extra: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "rtverify", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, **kw)


def alice_store(tmp_path_factory, label: str) -> Path:
    """A fresh store with the demo's alice enrolled from both her takes (module fixtures)."""
    store = tmp_path_factory.mktemp(label) / "voices"
    r = cli("enroll", "--name", "alice", "--input", str(DEMO / "enroll_1.flac"),
            str(DEMO / "enroll_2.flac"), store=store)
    assert r.returncode == 0, r.stderr
    return store


_SMALL_SNDBUF = """
import os, runpy, socket
create = socket.create_server
def small(*args, **kwargs):
    sock = create(*args, **kwargs)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(os.environ["SERVE_TEST_SNDBUF"]))
    return sock
socket.create_server = small
runpy.run_module("rtverify", run_name="__main__", alter_sys=True)
"""
"""``python -m rtverify`` whose listening socket (so every connection it accepts) has a send
buffer of $SERVE_TEST_SNDBUF bytes: a client that reads nothing fills it with a few kilobytes
of events, where the kernel's own tuning lets megabytes through first."""


class Server:
    """``rtverify serve --port 0`` in a child process; ``url``/``ws`` once it listens.
    ``sndbuf``: the send buffer of its sockets (bytes; default: the kernel's)."""

    def __init__(self, store: Path, *args: str, sndbuf: int | None = None) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        main = ["-m", "rtverify"]
        if sndbuf is not None:
            env["SERVE_TEST_SNDBUF"] = str(sndbuf)
            main = ["-c", _SMALL_SNDBUF]
        self.proc = subprocess.Popen(
            [sys.executable, *main, "--store", str(store), "serve", "--port", "0",
             *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if any("serving on http://" in line for line in self.lines):
                break
            if self.proc.poll() is not None:
                self._reader.join(WAIT_S)
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.stderr}")
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"serve did not start within {WAIT_S} s: {self.stderr}")
        line = next(line for line in self.lines if "serving on http://" in line)
        hostport = line.split("serving on http://", 1)[1].split(" ", 1)[0]
        self.url = f"http://{hostport}"
        self.ws = f"ws://{hostport}"

    def _collect(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(WAIT_S)
        self._reader.join(WAIT_S)
        return code


def connect(server: Server, headers=None, **params):
    """A raw WebSocket to /v1/listen with query ``params`` (lists repeat a key)."""
    import urllib.parse

    from websockets.sync.client import connect as ws_connect

    query = urllib.parse.urlencode([(k, v) for k, vs in params.items()
                                    for v in (vs if isinstance(vs, list) else [vs])])
    return ws_connect(f"{server.ws}/v1/listen?{query}", additional_headers=headers or {},
                      open_timeout=WAIT_S, max_size=None, compression=None)


def receive_all(ws, timeout: float = WAIT_S) -> list[dict]:
    """Every event until the server closes (each receive bounded by ``timeout``)."""
    from websockets.exceptions import ConnectionClosed

    out = []
    while True:
        try:
            msg = ws.recv(timeout=timeout)
        except ConnectionClosed:
            return out
        out.append(json.loads(msg))


def refusal(ws, *messages, timeout: float = WAIT_S) -> tuple[dict | None, int | None]:
    """Send ``messages`` (ignoring a close mid-way), then (the error event, the close code)."""
    from websockets.exceptions import ConnectionClosed

    try:
        for m in messages:
            ws.send(m)
    except ConnectionClosed:
        pass
    events = receive_all(ws, timeout)
    errors = [e for e in events if e.get("event") == "error"]
    return (errors[-1] if errors else None), ws.close_code


def f32_bytes(samples: np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<f4").tobytes()


def store_digest(store: Path) -> dict[str, str]:
    """name -> sha256 of every file in the store (to show a request left it untouched)."""
    if not store.exists():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.iterdir()) if p.is_file()}
