"""The service: WebSocket ``/v1/listen`` and the HTTP routes on one port (Starlette on uvicorn).

I/O runs on one asyncio loop; the CPU work of every stream (resampling, VAD, features, encoder) and
of every upload runs on a pool of worker threads sized to the cores, one job per stream at a time,
so a stream that sends faster than real time only delays itself. The encoder sessions are loaded
once and shared (onnxruntime's ``run`` is thread-safe); voices are read from the store for each
stream and request, so an ``enroll`` from the CLI is seen by the running server.

Close codes of ``/v1/listen`` (an ``{"event": "error", "error": ...}`` message comes first):

====  =======================================================================================
1000  ``{"type": "end"}`` received: the open utterance was decided, ``summary`` sent
1001  the server is shutting down (SIGTERM): ``summary`` with ``interrupted: true`` sent first
1003  data that is not raw PCM of the stream's format, or a text message other than ``end``
1008  missing/wrong token, bad query parameters, unknown voice or model, or a limit reached
      (stream length, idle time, message rate)
1009  a message larger than ``max_message_bytes``
1011  a bug in rtverify (logged with its traceback)
1013  ``max_streams`` streams already open
====  =======================================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import os
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import __version__
from ..errors import InputError, ModelError, NotEnoughSpeech, RtverifyError, StoreError, shown
from .engine import JobFailed, JobInputError, StreamSpec
from .pcm import PcmDecoder
from .settings import ServeSettings

logger = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_UNSUPPORTED = 1000, 1001, 1003
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1008, 1009, 1011, 1013

LISTEN_PARAMS = ("rate", "channels", "format", "name", "threshold", "margin", "model",
                 "status", "access_token")
"""Query parameters ``/v1/listen`` knows (``access_token``: for clients that cannot set headers)."""


class HttpError(Exception):
    """A client error with its HTTP status; ``str`` is the one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status


class _Bucket:
    """Token bucket: ``rate_per_s`` sustained, ``burst`` at once."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.burst = rate_per_s, float(burst)
        self.tokens, self.t = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Counters:
    """What the server did since it started (logged at shutdown, shown by /v1/health)."""

    streams: int = 0
    decisions: int = 0
    refused: int = 0
    """Streams closed for bad input, auth or limits."""
    requests: int = 0


class Service:
    """The state one server shares between its connections.

    :param sessions: model_id -> loaded :class:`~rtverify.core.encoder.EncoderSession`; the first
        is the default.
    :param store: a voiceprint store (anything with VoiceprintStore's interface).
    """

    def __init__(self, settings: ServeSettings, sessions: Mapping[str, Any], store,
                 engine=None) -> None:
        from .engine import ProcessEngine, ThreadEngine

        if not sessions:
            raise ModelError("serve: no model loaded")
        self.settings = settings
        self.sessions = dict(sessions)
        self.default_model = next(iter(self.sessions))
        self.store = store
        if engine is None:
            if settings.worker_kind == "thread":
                engine = ThreadEngine(self.sessions, settings.worker_count)
            else:
                engine = ProcessEngine([str(s.path) for s in self.sessions.values()],
                                       settings.worker_count)
        self.engine = engine
        """Where the streams' CPU work runs (see :mod:`rtverify.serve.engine`)."""
        self._sids = itertools.count(1)
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="rtverify-serve")  # store reads
        # uploads (enrol, verify) have threads of their own: a long recording must not queue
        # the streams' work behind it
        self.upload_pool = ThreadPoolExecutor(max(1, settings.worker_count // 2),
                                              thread_name_prefix="rtverify-upload")
        self.uploading = 0
        """HTTP uploads being received or processed (see :meth:`upload_slot`)."""
        self.streams: set[_Stream] = set()
        self.draining = False
        self.counters = Counters()

    # -- shared helpers -----------------------------------------------------------------
    def authorized(self, headers, query) -> bool:
        token = self.settings.token
        if token is None:
            return True
        given = ""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        elif "access_token" in query:
            given = query.get("access_token", "")
        return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))

    def session_for(self, model: str | None):
        if model is None or model == "":
            return self.sessions[self.default_model]
        if model not in self.sessions:
            raise ModelError(f"model {model!r} is not loaded by this server (it has: "
                             f"{', '.join(self.sessions)})")
        return self.sessions[model]

    def public(self, message: str, names=()) -> str:
        """``message`` as a remote client gets it: the store's own paths (or database address)
        taken out, the CLI's options in the API's words (``--force`` -> ``force=true``)."""
        out = message
        root = str(getattr(self.store, "root", "") or "")
        for name in names:
            try:
                where = str(self.store.path_for(name))
            except Exception:  # not a valid name: it names no path
                continue
            out = out.replace(f" ({where})", "").replace(f"{where}:", f"voice {name!r}:")
            out = out.replace(where, f"voice {name!r}")
        if root:
            out = out.replace(f" (store: {root})", "").replace(root, "the voice store")
        out = re.sub(r" ?\(rtverify enroll --name .*? --force \.\.\.\)", " with force=true", out)
        out = re.sub(r"--(force|add|vouch)\b", r"\1=true", out)
        if "use force=true to replace it" in out and "add=true" not in out:
            out = out.replace("use force=true to replace it", "use force=true to replace it, "
                              "or add=true to add takes to it")
        out = out.replace("`rtverify voices` lists the enrolled ones",
                          "GET /v1/voices lists the enrolled ones")
        out = out.replace(" (--min-speech)", "").replace("(run the command again)",
                                                         "(send the request again)")
        return out

    @contextlib.contextmanager
    def upload_slot(self):
        """One of ``max_concurrent_uploads``, held while an upload is received and processed
        (each is held in memory whole); none free: 503. Used on the event loop only."""
        most = self.settings.max_concurrent_uploads
        if self.uploading >= most:
            raise HttpError(503, f"server busy: {most} uploads being received or processed "
                            "(max_concurrent_uploads); try again later")
        self.uploading += 1
        try:
            yield
        finally:
            self.uploading -= 1

    async def run(self, func, *args):
        """``func(*args)`` on a helper thread (store reads)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    async def run_upload(self, func, *args):
        """``func(*args)`` on an upload worker."""
        return await asyncio.get_running_loop().run_in_executor(self.upload_pool, func, *args)

    async def drain(self) -> None:
        """SIGTERM: every open stream decides its open utterance, gets its summary and is closed
        (1001); waits up to ``shutdown_grace_s``."""
        self.draining = True
        streams = list(self.streams)
        for s in streams:
            s.wake.set()
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while self.streams and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.streams:
            logger.warning("%d stream(s) did not finish within %g s", len(self.streams),
                           self.settings.shutdown_grace_s)

    def close(self) -> None:
        self.engine.close()
        self.pool.shutdown(wait=True)
        self.upload_pool.shutdown(wait=True)


# -- query parameters ---------------------------------------------------------------------------
def _int_param(query, key: str, default: int) -> int:
    text = query.get(key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{key} {text!r}: not a whole number") from None


def _decision_params(query) -> tuple[float | None, float | None]:
    """``?threshold=`` and ``?margin=`` (as ``--threshold`` and ``--margin``; None when absent),
    by the one rule (:func:`rtverify.config.check_decision`)."""
    from ..config import check_decision

    values = {}
    for key in ("threshold", "margin"):
        text = query.get(key)
        try:
            values[key] = None if text is None else float(text)
        except ValueError:
            raise InputError(f"{key} {shown(text)}: not a number") from None
    try:
        check_decision(values["threshold"], values["margin"])
    except ValueError as err:
        raise InputError(str(err)) from None
    return values["threshold"], values["margin"]


def _bool_param(query, key: str) -> bool:
    """``key``'s value: true/1/yes or false/0/no (absent: false). A key without a value
    (``?force``) is refused rather than read as false, which its sender hardly meant."""
    text = query.get(key, "false").lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise InputError(f"{key} {query.get(key)!r}: must be true or false"
                         + (f" (?{key}=true)" if not text else ""))
    return text in ("true", "1", "yes")


def load_voices(store, session, names: list[str] | None) -> dict:
    """The voices to score against (every usable one without ``names``), as ``listen`` does."""
    voices, problems = store.load_usable(session.model_id, names or None, session.dim,
                                         session.companion_ids)
    for problem in problems:
        logger.warning("%s; skipped", problem)
    if not voices:
        raise StoreError("no usable voice enrolled; enroll one first (POST /v1/voices/NAME, "
                         "or rtverify enroll --name NAME --input FILE ...)")
    return voices


async def _within(awaitable, timeout_s: float):
    """``await awaitable`` for at most ``timeout_s``: a timer (Python 3.11+), not the task per
    call that ``wait_for`` makes."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(timeout_s):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout_s)


# -- /v1/listen ---------------------------------------------------------------------------------
class _Stream:
    """One WebSocket stream: a reader task receives, this object's :meth:`run` processes."""

    def __init__(self, service: Service, ws: WebSocket) -> None:
        self.service = service
        self.ws = ws
        client = ws.client
        self.name = f"ws {client.host}:{client.port}" if client else "ws"
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.inbox: list[bytes] = []
        self.inbox_bytes = 0
        self.ended = False
        self.gone = False
        self.error: tuple[int, str] | None = None
        self.decoder: PcmDecoder | None = None
        """Checks messages here; the worker has its own to convert them."""
        self.sid = 0
        self._reader: asyncio.Task | None = None

    # -- sending ----------------------------------------------------------------------
    async def _send(self, obj_or_text) -> None:
        if self.gone:
            return
        text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text,
                                                                           ensure_ascii=False)
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.gone = True

    async def _close(self, code: int, reason: str = "") -> None:
        if self.gone:
            return
        try:
            await self.ws.close(code, reason.encode("utf-8")[:120].decode("utf-8", "ignore"))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def _refuse(self, code: int, message: str, shown: str | None = None) -> None:
        """Log ``message``, tell the client ``shown`` (default: the same) and close."""
        self.service.counters.refused += 1
        logger.info("%s: closed %d: %s", self.name, code, message)
        shown = message if shown is None else shown
        await self._send({"event": "error", "error": shown, "code": code})
        await self._close(code, shown)

    # -- receiving --------------------------------------------------------------------
    def _fail(self, code: int, message: str) -> None:
        if self.error is None:
            self.error = (code, message)
        self.wake.set()

    async def _read(self) -> None:
        try:
            await self._receive()
        except Exception:  # a bug: the stream must not wait for a reader that is gone
            logger.exception("%s: internal error reading the stream", self.name)
            self._fail(CLOSE_INTERNAL, "internal error (logged by the server)")

    async def _receive(self) -> None:
        s = self.service.settings
        bucket = _Bucket(s.max_messages_per_s, s.message_burst)
        rate = self.decoder.rate_in_hz
        frame_bytes = self.decoder.frame_bytes
        max_buffer = int(s.max_buffered_s * rate) * frame_bytes
        received_frames = 0
        while True:
            try:
                msg = await _within(self.ws.receive(), s.idle_timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                return self._fail(CLOSE_POLICY, f"{self.name}: nothing received for "
                                  f"{s.idle_timeout_s:g} s (idle_timeout_s)")
            except (WebSocketDisconnect, RuntimeError, OSError):
                msg = {"type": "websocket.disconnect"}
            if msg["type"] == "websocket.disconnect":
                self.gone = True
                self.wake.set()
                return
            if not bucket.take():
                return self._fail(CLOSE_POLICY, f"{self.name}: more than "
                                  f"{s.max_messages_per_s:g} messages per second "
                                  "(max_messages_per_s); send larger chunks")
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None:
                if len(data) > s.max_message_bytes:
                    return self._fail(CLOSE_TOO_BIG, f"{self.name}: binary message of "
                                      f"{len(data)} bytes is larger than {s.max_message_bytes} "
                                      "(max_message_bytes)")
                if not data:
                    continue
                try:
                    self.decoder.check(data)
                except InputError as err:
                    return self._fail(CLOSE_UNSUPPORTED, str(err))
                received_frames += len(data) // frame_bytes
                if received_frames / rate > s.max_stream_s:
                    return self._fail(CLOSE_POLICY, f"{self.name}: stream longer than "
                                      f"{s.max_stream_s:g} s (max_stream_s)")
                self.inbox.append(data)
                self.inbox_bytes += len(data)
                self.wake.set()
                while self.inbox_bytes > max_buffer and self.error is None:
                    self.room.clear()  # back-pressure: stop reading until the work catches up
                    await self.room.wait()
            elif text is not None:
                if len(text) > s.max_message_bytes:
                    return self._fail(CLOSE_TOO_BIG, f"{self.name}: text message larger than "
                                      f"{s.max_message_bytes} bytes (max_message_bytes)")
                try:
                    obj = json.loads(text)
                except (ValueError, RecursionError):  # deep nesting: RecursionError
                    obj = None
                if isinstance(obj, dict) and obj.get("type") == "end" and len(obj) == 1:
                    self.ended = True
                    self.wake.set()
                    return
                shown = text[:40] + ("..." if len(text) > 40 else "")
                return self._fail(CLOSE_UNSUPPORTED, f"{self.name}: unknown text message "
                                  f"{shown!r}; send raw PCM as binary messages and "
                                  '{"type": "end"} at the end')

    # -- the stream ---------------------------------------------------------------------
    async def _open(self) -> bool:
        """Check the request and set the stream up; False if it was refused."""
        svc, q = self.service, self.ws.query_params
        if not svc.authorized(self.ws.headers, q):
            await self._refuse(CLOSE_POLICY, "missing or wrong token (Authorization: Bearer ...)")
            return False
        if len(svc.streams) >= svc.settings.max_streams:
            await self._refuse(CLOSE_TRY_LATER, f"server busy: {svc.settings.max_streams} "
                               "streams open (max_streams); try again later")
            return False
        # counted from here (run() lets it go): streams opened at once, each checked before
        # the others had loaded their voices, all got past the cap
        svc.streams.add(self)
        try:
            unknown = sorted(set(q.keys()) - set(LISTEN_PARAMS))
            if unknown:
                raise InputError(f"unknown query parameter {unknown[0]!r} (known: "
                                 f"{', '.join(LISTEN_PARAMS[:-1])})")
            for key in ("rate", "channels", "format", "threshold", "margin", "model",
                        "status"):
                if len(q.getlist(key)) > 1:
                    raise InputError(f"{key}: given {len(q.getlist(key))} times")
            fmt = q.get("format", "s16")
            self.decoder = PcmDecoder(rate_hz=_int_param(q, "rate", 16000),
                                      channels=_int_param(q, "channels", 1),
                                      sample_format=fmt, name=self.name)
            threshold, margin = _decision_params(q)
            self.status = _bool_param(q, "status")
            session = svc.session_for(q.get("model"))
            voices = await svc.run(load_voices, svc.store, session, q.getlist("name"))
        except RtverifyError as err:  # the log has the store's paths, the client not
            await self._refuse(CLOSE_POLICY, str(err), svc.public(str(err), q.getlist("name")))
            return False
        self.sid = next(svc._sids)
        spec = StreamSpec(session.model_id, voices, threshold, self.status,
                          self.decoder.rate_in_hz, self.decoder.channels, fmt, self.name,
                          margin)
        try:
            await svc.engine.call("open", self.sid, spec)
        except (JobFailed, JobInputError) as err:
            logger.error("%s: cannot start the stream: %s", self.name, err)
            await self._refuse(CLOSE_INTERNAL, "internal error: cannot start the stream")
            return False
        from ..events import Ready, event_dict

        from ..core.scoring import DecisionPolicy

        threshold_text = DecisionPolicy(session.info.decision, threshold, margin).describe()
        await self._send(event_dict(Ready(self.name, session.model_id, sorted(voices),
                                          threshold_text, True)))
        return True

    async def run(self) -> None:
        svc = self.service
        await self.ws.accept()
        opened = False
        try:
            opened = await self._open()
        finally:
            if not opened:  # refused (or failed) while opening: its slot is free again
                svc.streams.discard(self)
        if not opened:
            return
        svc.counters.streams += 1
        reader = self._reader = asyncio.create_task(self._read())
        self._finished = False
        try:
            await self._loop()
        finally:
            reader.cancel()
            svc.streams.discard(self)
            if not self._finished:
                svc.engine.drop(self.sid)
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass

    async def _loop(self) -> None:
        svc = self.service
        while True:
            if not (self.inbox or self.error or self.gone or self.ended or svc.draining):
                self.wake.clear()
                await self.wake.wait()
                continue
            if self.gone:  # the client went away: its stream costs nothing more
                logger.debug("%s: disconnected", self.name)
                return
            if self.error is not None:
                code, message = self.error
                await self._refuse(code, message)
                return
            if svc.draining and not self._reader.done():
                self._reader.cancel()  # shutting down: what came so far is decided, no more
            try:
                if self.inbox:
                    data, self.inbox = self.inbox, []
                    self.inbox_bytes = 0
                    self.room.set()
                    texts, decisions = await svc.engine.call("push", self.sid, data)
                    svc.counters.decisions += decisions
                    for text in texts:
                        await self._send(text)
                    continue
                interrupted = not self.ended
                self._finished = True
                texts, summary, decisions = await svc.engine.call("finish", self.sid,
                                                                  interrupted)
                svc.counters.decisions += decisions
                for text in texts:
                    await self._send(text)
            except JobInputError as err:
                self._finished = True  # the worker forgot the stream
                self._fail(CLOSE_UNSUPPORTED, str(err))
                continue
            except Exception as err:  # a bug: log it, close this stream, keep the others
                logger.error("%s: internal error: %s", self.name, err)
                await self._refuse(CLOSE_INTERNAL, "internal error (logged by the server)")
                return
            await self._send(summary)
            await self._close(CLOSE_GOING_AWAY if interrupted else CLOSE_NORMAL,
                              "server shutting down" if interrupted else "")
            return


# -- HTTP ---------------------------------------------------------------------------------------
def _status_for(err: RtverifyError) -> int:
    if isinstance(err, NotEnoughSpeech):
        return 422
    if isinstance(err, StoreError):
        return 404 if "is not enrolled" in str(err) else 409
    return 400


def _label(filename: str | None, i: int) -> str:
    name = " ".join((filename or "").split())[:100]
    return name or f"audio[{i}]"


async def _uploads(request: Request, settings: ServeSettings, most: int) -> list[tuple[str, bytes]]:
    """The ``audio`` parts of a multipart body: (label, bytes) each, within the size limits."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise HttpError(415, "expected multipart/form-data with the recording in field 'audio'")
    limit = settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise HttpError(413, f"upload of {length} bytes is larger than {limit} "
                        "(max_upload_bytes)")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise HttpError(413, f"upload larger than {limit} bytes (max_upload_bytes)")

    async def stream():
        yield bytes(body)

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=most, max_fields=16,
                                     max_part_size=limit).parse()
    except MultiPartException as err:
        raise HttpError(400, f"bad multipart body: {err.message}") from None
    out = []
    try:
        unknown = sorted(set(form.keys()) - {"audio"})
        if unknown:
            raise HttpError(400, f"unknown form field {unknown[0]!r}: the body holds only "
                            "'audio' recordings; options go in the query (?threshold=, "
                            "?margin=, ?force=true, ?add=true, ?vouch=true, ?model=)")
        for i, item in enumerate(form.getlist("audio"), 1):
            if isinstance(item, str):
                raise HttpError(400, "field 'audio' must be an uploaded file, not text")
            out.append((_label(item.filename, i), await item.read()))
    finally:
        await form.close()
    if not out:
        raise HttpError(400, "no recording: upload it in multipart field 'audio'")
    if len(out) > most:
        raise HttpError(400, f"{len(out)} recordings: at most {most} (max_uploads)")
    return out


class _TempFiles:
    """Uploaded recordings as files (the sources read paths), with messages that name the
    upload, never the temporary path."""

    def __init__(self, uploads: list[tuple[str, bytes]]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="rtverify-serve-")
        self.paths, self.labels = [], []
        for i, (label, data) in enumerate(uploads, 1):
            path = os.path.join(self._dir.name, f"upload-{i}")
            with open(path, "wb") as fh:
                fh.write(data)
            self.paths.append(path)
            self.labels.append(label)

    def check_lengths(self, max_s: float) -> None:
        """Refuse (413) a recording longer than ``max_s`` seconds of audio, counting what it
        decodes to (not what its header claims) and reading no further than the limit: a few
        kilobytes of compressed silence can hold hours, gigabytes once decoded whole. A file
        that is not audio is left to the sources, which say so in their words."""
        import soundfile as sf

        for path, label in zip(self.paths, self.labels):
            try:
                fh = sf.SoundFile(path)
            except Exception:  # not audio: FileSource reports it in its words
                continue
            with fh:
                rate, channels = fh.samplerate, max(1, fh.channels)
                if rate <= 0:
                    continue
                limit = int(max_s * rate)
                block = max(1, min(rate * 10, (1 << 22) // channels))  # at most 16 MB a read
                frames = 0
                while frames <= limit:
                    try:
                        n = len(fh.read(block, dtype="float32", always_2d=True))
                    except Exception:  # a damaged file: FileSource reports it
                        break
                    if n == 0:
                        break
                    frames += n
                if frames > limit:
                    raise HttpError(413, f"{label}: longer than {max_s:g} s of audio "
                                    "(max_upload_s)")

    def renamed(self, err: RtverifyError) -> RtverifyError:
        msg = str(err)
        # longest first: upload-1 is the start of upload-10
        for path, label in sorted(zip(self.paths, self.labels), key=lambda p: -len(p[0])):
            msg = msg.replace(path, label)
        return type(err)(msg)

    def close(self) -> None:
        self._dir.cleanup()


def _enroll_job(service: Service, session, name: str, uploads, force: bool,
                old=None, vouched: bool = False) -> dict:
    """Enrol ``name`` from ``uploads``; with ``old`` (the stored voice, read before the upload),
    add them to it as ``enroll --add`` does (``vouched``: as ``--add --vouch``)."""
    from ..apps.enroll import ADD_MIN_SPEECH_S, enroll_files, save_enrolment

    files = _TempFiles(uploads)
    try:
        files.check_lengths(service.settings.max_upload_s)
        try:
            if old is None:
                enrol = enroll_files(session, files.paths)
            else:
                enrol = enroll_files(session, files.paths, min_speech_s=ADD_MIN_SPEECH_S,
                                     vouched=vouched)
            vp, _ = save_enrolment(service.store, session, name, enrol, old=old, force=force,
                                   vouched=vouched)
        except RtverifyError as err:
            raise files.renamed(err) from None
    finally:
        files.close()
    return {"event": "enroll", "name": name, "takes": len(enrol.takes),
            "speech_s": round(enrol.speech_s, 2), "model_id": session.model_id,
            "created": vp.created, "replaced": force, "added": old is not None,
            "total_takes": int(vp.n_takes), "total_speech_s": round(float(vp.speech_s), 2)}


def verify_file(session, store, name: str, path: str, where: str,
                threshold: float | None = None, margin: float | None = None) -> dict:
    """``verify --input FILE --json`` for one recording: the same fields, the same errors."""
    from ..apps.verify import verify
    from ..io.sources import FileSource

    vp = store.load(name, session.model_id, session.dim)
    result = verify(session, vp, FileSource(path), where, live=False, threshold=threshold,
                    margin=margin)
    return result.to_dict(where, vp.name, session.model_id)


def _verify_job(service: Service, session, name: str, uploads, threshold,
                margin: float | None = None) -> dict:
    files = _TempFiles(uploads)
    try:
        files.check_lengths(service.settings.max_upload_s)
        return verify_file(session, service.store, name, files.paths[0], files.labels[0],
                           threshold, margin)
    except RtverifyError as err:
        raise files.renamed(err) from None
    finally:
        files.close()


def build_app(service: Service) -> Starlette:
    """The ASGI app over ``service``."""
    from ..store.voiceprints import validate_name

    def guarded(handler, known: tuple[str, ...] = ()):
        """``handler`` behind the token check, refusing query parameters other than ``known``
        (a misspelt ``threshold`` must not go unnoticed); ``access_token`` is always allowed
        (and ignored: HTTP clients send the header)."""
        async def endpoint(request: Request):
            service.counters.requests += 1
            try:
                if not service.authorized(request.headers, {}):
                    raise HttpError(401, "missing or wrong token (Authorization: Bearer ...)")
                unknown = sorted(set(request.query_params.keys()) - set(known)
                                 - {"access_token"})
                if unknown:
                    raise HttpError(400, f"unknown query parameter {unknown[0]!r} on "
                                    f"{request.method} {request.url.path} (known: "
                                    f"{', '.join(known) or 'none'})")
                for key in known:
                    if len(request.query_params.getlist(key)) > 1:
                        raise HttpError(400, f"{key}: given "
                                        f"{len(request.query_params.getlist(key))} times")
                return await handler(request)
            except HttpError as err:
                return JSONResponse({"error": str(err)}, status_code=err.status,
                                    headers={401: {"WWW-Authenticate": "Bearer"},
                                             503: {"Retry-After": "1"}}.get(err.status))
            except ClientDisconnect:  # went away mid-upload: nobody to answer, nothing to log
                logger.debug("%s %s: the client went away", request.method, request.url.path)
                return Response(status_code=400)
            except RtverifyError as err:
                # the client gets the meaning without the server's paths, in the API's words;
                # the log keeps the store's own message
                name = request.path_params.get("name")
                message = service.public(str(err), [name] if name else [])
                if message != str(err):
                    logger.info("%s %s: %s", request.method, request.url.path, err)
                return JSONResponse({"error": message}, status_code=_status_for(err))
            except Exception as err:
                logger.exception("%s %s: internal error", request.method, request.url.path)
                return JSONResponse({"error": f"internal error: {type(err).__name__}"},
                                    status_code=500)
        return endpoint

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model_id": service.default_model,
                             "models": list(service.sessions), "version": __version__,
                             "streams": len(service.streams),
                             "workers": service.engine.alive,
                             "tasks": len(asyncio.all_tasks()),
                             "threads": threading.active_count()})

    def _name(request: Request) -> str:
        return validate_name(request.path_params["name"])

    async def voices(request: Request):
        session = service.session_for(request.query_params.get("model"))
        entries = await service.run(service.store.entries, session.model_id, session.dim)
        out = []
        for e in entries:
            vp = e.voiceprint
            problem = None if e.problem is None else service.public(e.problem, [e.name])
            out.append({"name": e.name, "usable": vp is not None, "problem": problem,
                        **({"created": vp.created, "model_id": vp.model_id,
                            "speech_s": vp.speech_s, "n_takes": vp.n_takes} if vp else {})})
        return JSONResponse({"voices": out})

    async def enroll(request: Request):
        from ..apps.enroll import voice_to_add_to, voice_to_enrol

        name = _name(request)
        force = _bool_param(request.query_params, "force")
        add = _bool_param(request.query_params, "add")
        vouch = _bool_param(request.query_params, "vouch")
        if vouch and not add:
            raise HttpError(400, "vouch=true goes with add=true: it keeps added takes that do "
                            "not sound like the voice as enrolled")
        if add and force:
            raise HttpError(400, "add=true and force=true: add takes to the enrolled voice, or "
                            "replace it, not both")
        session = service.session_for(request.query_params.get("model"))
        # refused before the upload is read: not enrolled (404), enrolled (409), no vector (409)
        old = await service.run(lambda: voice_to_enrol(service.store, name, force=force,
                                                        add=add))
        if old is not None:
            voice_to_add_to(old, session)
        with service.upload_slot():
            uploads = await _uploads(request, service.settings, service.settings.max_uploads)
            return JSONResponse(await service.run_upload(_enroll_job, service, session, name,
                                                         uploads, force, old, vouch))

    async def delete(request: Request):
        name = _name(request)
        await service.run(service.store.remove, name)
        return JSONResponse({"event": "removed", "name": name})

    async def verify(request: Request):
        name = _name(request)
        threshold, margin = _decision_params(request.query_params)
        session = service.session_for(request.query_params.get("model"))
        if not await service.run(service.store.exists, name):
            raise StoreError(f"voice {name!r} is not enrolled")
        with service.upload_slot():
            uploads = await _uploads(request, service.settings, 1)
            return JSONResponse(await service.run_upload(_verify_job, service, session, name,
                                                         uploads, threshold, margin))

    async def listen(ws: WebSocket):
        try:
            await _Stream(service, ws).run()
        except Exception:  # never let one stream take anything else down
            logger.exception("/v1/listen: internal error")

    routes = [
        Route("/v1/health", guarded(health), methods=["GET"]),
        Route("/v1/voices", guarded(voices, ("model",)), methods=["GET"]),
        # {name:path}: a name with a slash, or none, reaches validate_name and is refused as a
        # voice name (400 saying why), not as an unknown endpoint or with a bare redirect
        Route("/v1/voices/{name:path}", guarded(enroll, ("force", "add", "vouch", "model")),
              methods=["POST"]),
        Route("/v1/voices/{name:path}", guarded(delete), methods=["DELETE"]),
        Route("/v1/verify/{name:path}", guarded(verify, ("threshold", "margin", "model")),
              methods=["POST"]),
        WebSocketRoute("/v1/listen", listen),
    ]
    async def not_found(request: Request, exc):
        status = getattr(exc, "status_code", 404)
        words = {404: f"no such endpoint {request.url.path!r} (see rtverify serve --help)",
                 405: f"method {request.method} not allowed on {request.url.path}"}
        return JSONResponse({"error": words.get(status, "bad request")}, status_code=status)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


# -- running --------------------------------------------------------------------------------------
def run_server(service: Service, *, ready=None, sock=None) -> Counters:
    """Serve until SIGTERM/SIGINT (or ``stop()`` on the returned server from another thread via
    ``ready``). ``ready(server)`` is called once listening. Returns the counters."""
    import uvicorn

    s = service.settings
    config = uvicorn.Config(
        build_app(service), host=s.host, port=s.port, log_level="warning", access_log=False,
        http=_request_deadline_protocol(s.request_timeout_s, s.min_body_bytes_per_s,
                                        s.max_body_s),
        ws=_stream_protocol(s.idle_timeout_s), ws_max_size=max(s.max_message_bytes * 4, 1 << 16),
        ws_per_message_deflate=False, lifespan="off", limit_concurrency=s.max_streams + 64,
        timeout_graceful_shutdown=int(s.shutdown_grace_s) + 1, log_config=None)
    server = _Server(config, service, ready)
    server.run(sockets=[sock] if sock is not None else None)
    c = service.counters
    logger.warning("stopped: %d stream(s), %d decision(s), %d refused, %d HTTP request(s)",
                   c.streams, c.decisions, c.refused, c.requests)
    service.close()
    return c


def _request_deadline_protocol(timeout_s: float, min_body_rate: float, max_body_s: float):
    """uvicorn's h11 protocol, with a deadline for each request head, and a minimum rate and a
    time limit for each request body.

    uvicorn times a connection out only between requests, and any byte received restarts that
    timer; a connection that sends nothing (half-open) or drips a request head a byte at a time
    lives for ever, holding one of ``limit_concurrency`` slots: enough of them and every HTTP
    request is answered 503. Here a connection must send a whole request head within
    ``timeout_s`` of opening or of its previous answer, whatever it sends meanwhile; a WebSocket
    stream, once upgraded, has its own limits (idle_timeout_s).

    A body, likewise, could come a byte at a time after a quick head, holding an upload slot (or
    a connection) for ever. Its bytes must come at ``min_body_rate`` bytes/s on average, counted
    from ``timeout_s`` after its head: ``t`` seconds after the head, at least
    ``(t - timeout_s) * min_body_rate`` of them, or the whole body; else it is answered 408
    (JSON) and the connection closed. A slow honest upload only needs to keep that average; a
    body of N bytes sent at an even pace has ``timeout_s + N / min_body_rate`` seconds. However
    steady, a body must also be whole within ``max_body_s`` of its head, or it is answered 408
    the same way: at the minimum rate alone, an upload at the size cap held its slot for over
    an hour. While the server itself is not reading (its buffer is full, or the app has not asked
    for the body of a request that expects 100-continue) the client's clock starts again."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _body_cycle = None
        """The request whose body is being timed."""
        _body_t0 = 0.0
        _body_bytes = 0

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn answers a request over limit_concurrency with a plain-text 503; the same
            # check made here answers it as every other error is answered, {"error": ...}
            self._cap, self.limit_concurrency = self.limit_concurrency, None
            app = self.app

            async def capped(scope, receive, send) -> None:
                cap = self._cap  # this request's task is in self.tasks already: > not >=
                if cap is not None and (len(self.connections) >= cap or len(self.tasks) > cap):
                    logger.warning("%d connections open (the limit, max_streams + 64); "
                                   "a request was answered 503", cap)
                    busy = JSONResponse(
                        {"error": f"server busy: {cap} connections open (max_streams + 64); "
                                  "try again later"}, status_code=503,
                        headers={"Connection": "close", "Retry-After": "1"})
                    return await busy(scope, receive, send)
                return await app(scope, receive, send)

            self.app = capped

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being answered; the next head gets a new deadline
            if not self.transport.is_closing():
                logger.info("%s: no whole request within %g s (request_timeout_s); closed",
                            _peer(self.client), timeout_s)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._stop_body_clock()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)  # may complete a head, which starts its body's clock
            # counted raw (framing included; the head's bytes too when a body follows them in
            # the same read): at most a head's worth in the client's favour
            self._body_bytes += len(data)

        def handle_events(self) -> None:
            super().handle_events()
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                self._disarm()  # a whole request head came
                if cycle.more_body and cycle is not self._body_cycle:
                    self._stop_body_clock()
                    self._body_cycle = cycle
                    self._start_body_clock()

        def _start_body_clock(self) -> None:
            self._body_t0, self._body_bytes = self.loop.time(), 0
            self._body_timer = self.loop.call_later(min(timeout_s, max_body_s),
                                                    self._body_check)

        def _stop_body_clock(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _body_check(self) -> None:
            self._body_timer = None
            cycle = self._body_cycle
            if (cycle is not self.cycle or not cycle.more_body or cycle.response_complete
                    or cycle.disconnected or self.transport.is_closing()):
                return  # whole, answered, or gone (the head deadline covers what follows)
            if self.flow.read_paused or cycle.waiting_for_100_continue:
                self._start_body_clock()  # the server is not reading: not the client's delay
                return
            now, whole_by = self.loop.time(), self._body_t0 + max_body_s
            due = self._body_t0 + timeout_s + self._body_bytes / min_body_rate
            if now >= whole_by:
                why, setting = f"not whole within {max_body_s:g} s", "max_body_s"
                message = f"request body {why} ({setting}); send it faster, or a shorter recording"
            elif now < due:
                self._body_timer = self.loop.call_at(min(due, whole_by), self._body_check)
                return
            else:
                why, setting = f"slower than {min_body_rate:g} bytes/s", "min_body_bytes_per_s"
                message = (f"request body {why} on average after {timeout_s:g} s ({setting}); "
                           "send it faster")
            logger.info("%s: %s %s: %d body bytes in %.1f s, %s (%s); answered 408 and closed",
                        _peer(self.client),
                        cycle.scope["method"], cycle.scope["path"], self._body_bytes,
                        now - self._body_t0, why, setting)
            self._answer_408(cycle, message)

        def _answer_408(self, cycle, message: str) -> None:
            """Answer ``message`` as a JSON 408 (unless the app has begun its answer) and close."""
            if not cycle.response_started:
                body = json.dumps({"error": message}).encode()
                with contextlib.suppress(h11.LocalProtocolError):
                    out = self.conn.send(h11.Response(
                        status_code=408, reason=b"Request Timeout",
                        headers=[(b"content-type", b"application/json"),
                                 (b"content-length", str(len(body)).encode()),
                                 (b"connection", b"close")]))
                    out += self.conn.send(h11.Data(data=body))
                    out += self.conn.send(h11.EndOfMessage())
                    self.transport.write(out)
            # the app, waiting for the body, is told the client went away (its later answer,
            # if any, is dropped), as when the connection is lost
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.close()

        def handle_websocket_upgrade(self, event) -> None:
            self._disarm()  # the stream's own limits apply from here
            super().handle_websocket_upgrade(event)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

    return Protocol


def _peer(client) -> str:
    """A uvicorn protocol's client, ``host:port``, for the log."""
    return "%s:%d" % client if client else "connection"


def _stream_protocol(unread_s: float):
    """uvicorn's WebSocket protocol (websockets-sansio), dropping a client that reads nothing.

    uvicorn's send waits until the client has taken what was written before it writes more, for
    ever, and its close waits for written data to go out: a client that streamed audio but read
    none of the events held its stream and connection for as long as it stayed connected (once
    the socket's buffers were full the stream waited to send, so it stopped reading its audio,
    and its idle timeout never fired). Here a send that cannot go out within ``unread_s``
    (``idle_timeout_s``) drops the connection, and so does a close whose data is still unread
    that long after."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class Transport:
        """The connection's transport, whose close gives up on data the client does not read."""

        def __init__(self, transport, loop) -> None:
            self._transport, self._loop = transport, loop

        def __getattr__(self, name):
            return getattr(self._transport, name)

        def close(self) -> None:
            self._transport.close()
            if self._transport.get_write_buffer_size():
                self._loop.call_later(unread_s, self._transport.abort)  # no-op once closed

    class Protocol(WebSocketsSansIOProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(Transport(transport, self.loop))

        async def send(self, message) -> None:
            # ``writable`` is uvicorn's write flow control (0.52.1 on); an older uvicorn has
            # none to wait on here
            writable = getattr(self, "writable", None)
            if writable is not None and not writable.is_set():
                try:
                    await _within(writable.wait(), unread_s)
                except (TimeoutError, asyncio.TimeoutError):
                    logger.info("%s: read nothing of what was sent to it for %g s "
                                "(idle_timeout_s); dropped",
                                _peer(self.client), unread_s)
                    self.transport.abort()  # the app's send then fails: the client is gone
            await super().send(message)

    return Protocol


class _Server:
    """uvicorn.Server whose SIGTERM first lets open streams finish (summary, close 1001), and
    which does not re-raise the signal afterwards (the process exits 0)."""

    def __new__(cls, config, service: Service, ready):
        import contextlib
        import signal

        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                loop = asyncio.get_event_loop()
                main = threading.current_thread() is threading.main_thread()
                if main:
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        loop.add_signal_handler(sig, self.stop)
                try:
                    yield
                finally:
                    if main:
                        for sig in (signal.SIGTERM, signal.SIGINT):
                            loop.remove_signal_handler(sig)

            def stop(self) -> None:
                """Drain the streams, then exit (a second call forces the exit)."""
                if service.draining:
                    self.force_exit = True
                    self.should_exit = True
                    return
                logger.warning("shutting down: %d open stream(s) get their summary",
                               len(service.streams))

                async def drain_then_exit():
                    await service.drain()
                    self.should_exit = True

                self._drain_task = asyncio.ensure_future(drain_then_exit())

            async def startup(self, sockets=None):
                await super().startup(sockets=sockets)
                if ready is not None and self.started:
                    ready(self)

        return Server(config)
