"""Subprocesses with timings: every stdout line stamped as it arrives, and the child's own
resource usage (CPU seconds, peak resident memory) from ``os.wait4``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import CACHE, REPO

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RTVERIFY_THREADS")


def env_for(threads: int | None) -> dict:
    """The current environment with every thread variable set to ``threads`` (or all removed)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if threads is not None:
        env.update({k: str(threads) for k in THREAD_VARS})
    return env


@dataclass
class Run:
    cmd: list[str]
    returncode: int
    wall_s: float
    """Spawn to exit."""
    user_s: float
    sys_s: float
    max_rss_mb: float
    """Peak resident memory of the child (MiB)."""
    lines: list[tuple[float, str]] = field(default_factory=list)
    """(seconds since spawn, text) of each stdout line."""
    stderr: str = ""

    def events(self) -> list[tuple[float, dict]]:
        out = []
        for t, line in self.lines:
            try:
                out.append((t, json.loads(line)))
            except ValueError:
                pass
        return out

    def check(self) -> "Run":
        if self.returncode != 0:
            raise RuntimeError(f"{' '.join(self.cmd)} exited {self.returncode}: "
                               f"{self.stderr.strip()[-800:]}")
        return self


GNU_TIME = "/usr/bin/time"


def run(cmd: list[str], *, env: dict | None = None, timeout_s: float = 900,
        cwd: Path = REPO) -> Run:
    """Run ``cmd`` (in the repository root), stamping stdout lines; stderr kept for messages.

    Peak memory comes from GNU time's ``%M`` (the command is started by ``/usr/bin/time``): a
    process's own ``ru_maxrss`` also counts the memory of the process that forked it (Linux keeps
    the pre-exec high-water mark, and Python forks with vfork), which would charge the driver's
    size to the command. Without GNU time, ``wait4``'s figure is kept as an upper bound.
    """
    with tempfile.TemporaryFile("w+") as err, tempfile.NamedTemporaryFile("r") as mem:
        timed = os.access(GNU_TIME, os.X_OK)
        full = [GNU_TIME, "-f", "%M", "-o", mem.name, *cmd] if timed else cmd
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True, bufsize=1)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        lines = []
        try:
            for line in proc.stdout:
                lines.append((time.perf_counter() - t0, line.rstrip("\n")))
            _, status, ru = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        rss_kb = ru.ru_maxrss
        if timed:
            text = mem.read().strip().splitlines()
            if text and text[-1].strip().isdigit():
                rss_kb = int(text[-1])
        return Run(cmd, proc.returncode, wall, ru.ru_utime, ru.ru_stime, rss_kb / 1024.0,
                   lines, err.read())


def have_cli() -> bool:
    """Whether this checkout has the real ``rtverify`` command (else a stand-in is driven)."""
    return importlib.util.find_spec("rtverify.cli") is not None


ENROLL = [REPO / "rtverify" / "demo" / "enroll_1.flac", REPO / "rtverify" / "demo" / "enroll_2.flac"]


def enrolled_store(model: Path) -> Path:
    """A voiceprint store holding ``bench`` (the demo's enrolled speaker) under ``model``."""
    from rtverify.core.encoder import load_model_info

    store = CACHE / "stores" / model.stem
    marker = store / ".bench-enrolled"
    model_id = load_model_info(model).model_id
    if not marker.is_file() or model_id not in marker.read_text():  # (again for a new model)
        store.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "rtverify", "--store", str(store), "enroll", "--name", "bench",
             "--force", "--input", *map(str, ENROLL), "--model", str(model)],
            env=env_for(1), timeout_s=300).check()
        marker.write_text(f"enrolled from the demo's two takes with {model_id}\n")
    return store


def listen_cmd(model: Path, audio: Path, *, realtime: bool = False) -> list[str]:
    """``rtverify listen --input FILE --json`` (or its stand-in without the CLI)."""
    if have_cli():
        cmd = [sys.executable, "-m", "rtverify", "--store", str(enrolled_store(model)), "listen",
               "--input", str(audio), "--json", "--model", str(model)]
    else:
        cmd = [sys.executable, "-m", "benchmarks.listen_driver", "--input", str(audio),
               "--model", str(model), "--enroll", *map(str, ENROLL)]
    return cmd + (["--realtime"] if realtime else [])
