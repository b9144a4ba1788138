"""Where the streams' CPU work runs: worker processes (default) or threads of the server.

Most of a stream's work (VAD frames, the streaming front-end, the pipeline's bookkeeping) is Python
that holds the GIL, so threads of one process share one core however many there are; worker
*processes* are what let the service use the machine. Each worker loads the models once, holds the
state of the streams given to it (decoder, :class:`~rtverify.core.pipeline.Verifier`, tally), and
answers one job per stream at a time, so a stream's events stay in order and a stream that sends
faster than real time only delays itself. The event loop process keeps the sockets, the store and
the HTTP uploads.

Jobs (``op``, stream id, payload):

- ``open``: a :class:`StreamSpec` -> None
- ``push``: list of binary messages (whole sample frames) -> (JSON texts, decisions)
- ``finish``: interrupted flag -> (JSON texts, summary dict, decisions); the stream is forgotten
- ``drop``: -> None; the stream is forgotten (the client went away)

A job's :class:`~rtverify.errors.InputError` comes back as :class:`JobInputError` (bad audio:
the stream is refused); anything else as :class:`JobFailed` (a bug: logged, close 1011).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class JobInputError(Exception):
    """The audio of a stream is unusable (the message is the one-line reason)."""


class JobFailed(Exception):
    """A job failed for a reason that is rtverify's fault, or its worker died."""


@dataclass(frozen=True)
class StreamSpec:
    """Everything a worker needs to start a stream (picklable)."""

    model_id: str
    voices: dict = field(repr=False)
    """name -> unit embedding (float32 ``(dim,)``), loaded from the store by the server."""
    threshold: float | None
    status: bool
    rate_hz: int
    channels: int
    sample_format: str
    name: str
    margin: float | None = None
    """Added to the model's thresholds (``?margin=``; None: not given)."""


class StreamState:
    """One stream inside a worker: raw PCM in, ``listen --json`` texts out."""

    def __init__(self, spec: StreamSpec, session) -> None:
        from ..core.pipeline import Verifier
        from .pcm import PcmDecoder

        self.decoder = PcmDecoder(rate_hz=spec.rate_hz, channels=spec.channels,
                                  sample_format=spec.sample_format, name=spec.name)
        self.verifier = Verifier(session, spec.voices, threshold=spec.threshold,
                                 margin=spec.margin, max_pending=1,
                                 status_every_s=0.1 if spec.status else 0.0)
        self.status = spec.status

    def _texts(self, events) -> tuple[list[str], int]:
        from ..events import DecisionEvent, Status, event_dict

        out, decisions = [], 0
        for event in events:
            decisions += isinstance(event, DecisionEvent)
            if self.status or not isinstance(event, Status):
                out.append(json.dumps(event_dict(event), ensure_ascii=False))
        return out, decisions

    def push(self, messages: list[bytes]) -> tuple[list[str], int]:
        """Each message pushed as the chunk it was (so the provisional scores come when they
        would from ``listen``'s own chunks)."""
        events = []
        for data in messages:
            chunk = self.decoder.push(data)
            if chunk is not None:
                events += self.verifier.push(chunk)
        return self._texts(events)

    def finish(self, interrupted: bool) -> tuple[list[str], dict, int]:
        chunk = self.decoder.end()
        events = list(self.verifier.push(chunk)) if chunk is not None else []
        texts, decisions = self._texts(events + self.verifier.finish())
        summary = self.verifier.summary(interrupted=interrupted, source=self.decoder)
        return texts, summary.to_dict(), decisions


class _States:
    """The streams one worker holds, and the job dispatch (shared by both engines)."""

    def __init__(self, sessions: dict) -> None:
        self.sessions = sessions
        self.streams: dict[int, StreamState] = {}

    def handle(self, op: str, sid: int, payload):
        from ..errors import InputError

        try:
            if op == "open":
                self.streams[sid] = StreamState(payload, self.sessions[payload.model_id])
                return None
            if op == "drop":
                self.streams.pop(sid, None)
                return None
            state = self.streams[sid]
            if op == "push":
                return state.push(payload)
            if op == "finish":
                del self.streams[sid]
                return state.finish(payload)
            raise ValueError(f"unknown job {op!r}")
        except InputError as err:
            self.streams.pop(sid, None)
            raise JobInputError(str(err)) from None


class ThreadEngine:
    """The work on threads of the server process (``--workers-kind thread``: one process to
    debug, or a machine where processes are scarce)."""

    def __init__(self, sessions: dict, threads: int) -> None:
        self._states = _States(sessions)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="rtverify-stream")
        self.size = threads
        self.alive = threads

    def _run(self, op, sid, payload):
        if op in ("open", "drop", "finish"):
            with self._lock:  # the dict of streams changes
                return self._states.handle(op, sid, payload)
        return self._states.handle(op, sid, payload)

    async def call(self, op: str, sid: int, payload=None):
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self._run, op, sid, payload)
        except (JobInputError, JobFailed):
            raise
        except Exception as err:
            logger.exception("stream job %s failed", op)
            raise JobFailed(f"{type(err).__name__}: {err}") from None

    def drop(self, sid: int) -> None:
        with self._lock:
            self._states.handle("drop", sid, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# -- worker processes ---------------------------------------------------------------------------
_HEADER = struct.Struct("<I")


def _write(fh, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _read_exactly(fh, n: int) -> bytes:
    """``n`` bytes (a pipe may hand them over in pieces); EOFError if it ends first."""
    parts, got = [], 0
    while got < n:
        piece = fh.read(n - got)
        if not piece:
            raise EOFError
        parts.append(piece)
        got += len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read(fh):
    n = _HEADER.unpack(_read_exactly(fh, _HEADER.size))[0]
    return pickle.loads(_read_exactly(fh, n))


class _Worker:
    """One worker process and the two threads that talk to it."""

    def __init__(self, index: int, model_paths: list[str | None], on_death=None) -> None:
        self.on_death = on_death
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        args = [sys.executable, "-m", "rtverify.serve.worker"] + [p or "-" for p in model_paths]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, bufsize=0)
        self.index = index
        self.streams = 0
        self.alive = True
        self._inbox = _read(self.proc.stdout)  # ("ready", model ids) or ("error", message)
        if self._inbox[0] != "ready":
            raise JobFailed(f"worker {index} did not start: {self._inbox[1]}")
        self.model_ids = self._inbox[1]
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()
        self._queue: "list" = []
        self._cv = threading.Condition()
        self._next = 0
        threading.Thread(target=self._send_loop, name=f"rtverify-worker{index}-send",
                         daemon=True).start()
        threading.Thread(target=self._recv_loop, name=f"rtverify-worker{index}-recv",
                         daemon=True).start()

    def submit(self, op: str, sid: int, payload) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if not self.alive:
                raise JobFailed(f"worker {self.index} is gone")
            self._next += 1
            job = self._next
            self._pending[job] = (loop, fut)
        with self._cv:
            self._queue.append((job, op, sid, payload))
            self._cv.notify()
        return fut

    def post(self, op: str, sid: int, payload=None) -> None:
        """A job whose answer nobody waits for (``drop``)."""
        with self._cv:
            self._queue.append((0, op, sid, payload))
            self._cv.notify()

    def _send_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                batch, self._queue = self._queue, []
            try:
                for item in batch:
                    if item is None:
                        self.proc.stdin.close()
                        return
                    _write(self.proc.stdin, item)
            except (OSError, ValueError):
                self._died()
                return

    def _recv_loop(self) -> None:
        while True:
            try:
                job, ok, result = _read(self.proc.stdout)
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                self._died()
                return
            with self._lock:
                entry = self._pending.pop(job, None)
            if entry is None:
                continue
            loop, fut = entry
            loop.call_soon_threadsafe(_settle, fut, ok, result)

    def _died(self) -> None:
        with self._lock:
            was_alive, self.alive = self.alive, False
            pending, self._pending = self._pending, {}
        if was_alive and pending:
            logger.error("worker %d (pid %d) died; its %d open job(s) fail", self.index,
                         self.proc.pid, len(pending))
        for loop, fut in pending.values():
            loop.call_soon_threadsafe(_settle, fut, "bug", f"worker {self.index} died")
        if was_alive and self.on_death is not None:
            self.on_death(self)

    def close(self, timeout_s: float = 5.0) -> None:
        with self._cv:
            self._queue.append(None)
            self._cv.notify()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)


def _settle(fut: asyncio.Future, ok, result) -> None:
    if fut.done():
        return
    if ok is True:
        fut.set_result(result)
    elif ok == "input":
        fut.set_exception(JobInputError(result))
    else:
        fut.set_exception(JobFailed(result))


class ProcessEngine:
    """The work in ``processes`` worker processes; each stream lives in the least busy one."""

    RESTART_WAIT_S = 10.0
    """How long a new stream waits for a worker when every one is being restarted (seconds)."""

    def __init__(self, model_paths: list[str | None], processes: int) -> None:
        self._paths = model_paths
        self._closing = False
        self.workers = [_Worker(i, model_paths, self._replace) for i in range(processes)]
        self.size = processes
        self._where: dict[int, _Worker] = {}
        self.restarts = 0

    def _replace(self, dead: _Worker) -> None:
        """A worker died (its streams were told): start another in its place."""
        if self._closing:
            return
        dead.proc.wait()
        logger.error("worker %d (pid %d) exited with %s; starting a new one", dead.index,
                     dead.proc.pid, dead.proc.returncode)
        try:
            self.workers[dead.index] = _Worker(dead.index, self._paths, self._replace)
            self.restarts += 1
        except Exception as err:
            logger.error("cannot restart worker %d: %s", dead.index, err)

    async def call(self, op: str, sid: int, payload=None):
        if op == "open":
            deadline = asyncio.get_running_loop().time() + self.RESTART_WAIT_S
            while True:  # all workers may be restarting (each takes about a second)
                worker = min((w for w in self.workers if w.alive), key=lambda w: w.streams,
                             default=None)
                if worker is not None or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
            if worker is None:
                raise JobFailed("no worker process is running")
            self._where[sid] = worker
            worker.streams += 1
        worker = self._where.get(sid)
        if worker is None:
            raise JobFailed(f"stream {sid} has no worker")
        try:
            return await worker.submit(op, sid, payload)
        except JobInputError:
            self._forget(sid)
            raise
        finally:
            if op == "finish":
                self._forget(sid)

    @property
    def alive(self) -> int:
        """Worker processes running now."""
        return sum(w.alive for w in self.workers)

    def _forget(self, sid: int) -> None:
        worker = self._where.pop(sid, None)
        if worker is not None:
            worker.streams -= 1

    def drop(self, sid: int) -> None:
        worker = self._where.get(sid)
        if worker is not None:
            worker.post("drop", sid)
            self._forget(sid)

    def close(self) -> None:
        self._closing = True
        for w in self.workers:
            w.close()


def worker_main(model_paths: list[str]) -> int:
    """A worker process: jobs on stdin, answers on stdout (length-prefixed pickles between this
    process and the server that started it; never from anyone else)."""
    import signal

    # SIGTERM/SIGINT reach the whole process group (systemd, Ctrl-C); the server decides when
    # the streams end, and a worker ends when the server closes its pipe (or dies)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    infile = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    outfile = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the answers
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        from ..core.encoder import EncoderSession

        sessions = {}
        for path in model_paths:
            s = EncoderSession(None if path == "-" else path, threads=1)
            sessions[s.model_id] = s
    except Exception as err:
        _write(outfile, ("error", str(err)))
        return 1
    _write(outfile, ("ready", list(sessions)))
    states = _States(sessions)
    while True:
        try:
            job, op, sid, payload = _read(infile)
        except EOFError:
            return 0
        try:
            answer = (job, True, states.handle(op, sid, payload))
        except JobInputError as err:
            answer = (job, "input", str(err))
        except Exception as err:  # a bug: log it here, fail this stream, keep the others
            logging.getLogger("rtverify").exception("stream job %s failed", op)
            states.streams.pop(sid, None)
            answer = (job, "bug", f"{type(err).__name__}: {err}")
        if job:
            _write(outfile, answer)

