"""A small client for ``rtverify serve`` (needs the ``serve`` extra for :meth:`Client.listen`; the
HTTP calls use only the standard library). It talks only to the server whose address it is
given; it fetches nothing else (the models ship inside the package, on the server's side).

    from rtverify.client import Client

    c = Client("http://127.0.0.1:8765")            # token=... when the server has one
    for event in c.listen(pcm_chunks, rate=16000, format="s16"):
        if event["event"] == "decision":
            print(event["speaker"], event["score"])
    print(c.verify("alice", "door.wav")["accepted"])

``listen`` yields the same dicts as ``rtverify listen --json`` writes: ``ready``, ``speech_start``,
``provisional``, ``decision``, ``dropped`` and a final ``summary``. A refusal by the server (bad
token, bad input, a limit) raises :class:`ServerError` with the server's one-line message.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import RtverifyError, shown

TOKEN_ENV = "RTVERIFY_TOKEN"
"""Environment variable with the bearer token, when none is given."""


class ServerError(RtverifyError):
    """The server refused or failed a request; ``code`` is the HTTP status or close code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


MAX_ANSWER_BYTES = 64 << 20
"""The most an HTTP answer may hold (a fleet's voice list is a few MB); more is refused."""


def _answer(text, where: str) -> dict:
    """A server's answer or event as a dict, or a one-line :class:`ServerError` saying it was
    not one (a proxy's HTML page, a truncated body, a hostile server's nested brackets)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ServerError(f"{where}: the server's answer is not JSON (is this an rtverify "
                          f"server?)") from None
    if not isinstance(value, dict):
        raise ServerError(f"{where}: the server's answer is not a JSON object (is this an "
                          f"rtverify server?)")
    if _odd_text(value):
        raise ServerError(f"{where}: the server's answer holds text rtverify never sends (a NUL "
                          f"or a lone surrogate; is this an rtverify server?)")
    return value


def _one_line(message, default: str) -> str:
    """A server's error message as one short line, ``default`` when it is not text."""
    return " ".join(message.split())[:500] if isinstance(message, str) else default


def _odd_text(value) -> bool:
    """Whether a parsed answer holds a string with a NUL (no hook's environment takes it: a
    ValueError) or a lone surrogate (``\\ud800``: valid JSON, but no UTF-8 output takes it),
    which no rtverify server sends. Walked without recursion (an answer may nest deeply)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str):
            if "\0" in item:
                return True
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: the client talks to the server it was given and to nothing else
    (urllib would otherwise go wherever a ``Location`` points, the bearer token with it)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx status


def _base_urls(url: str) -> tuple[str, str]:
    """(http base, ws base) from either form of the server's address."""
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise RtverifyError(f"server address {url!r}: expected ws://HOST:PORT or http://HOST:PORT")
    path = parts.path.rstrip("/")
    for suffix in ("/v1/listen", "/v1"):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    http = f"{scheme}://{parts.netloc}{path}"
    return http, ("wss" if scheme == "https" else "ws") + http[len(scheme):]


def _pcm_bytes(chunk: Any, sample_format: str) -> bytes:
    """A chunk as the bytes to send: bytes as they are; a numpy array converted to the format."""
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    import numpy as np

    from .io.sniff import G711_FORMATS

    if sample_format in G711_FORMATS:
        raise RtverifyError(f"format {sample_format}: send the G.711 bytes themselves "
                            "(bytes), not samples")
    samples = getattr(chunk, "samples", chunk)  # an rtverify Chunk, or an array
    a = np.asarray(samples)
    if a.dtype.kind == "i" and a.dtype.itemsize in (2, 4):
        # int16 / int32 samples are full-scale integers (soundfile's dtype='int16'/'int32'):
        # as another format they keep their loudness, not their numbers
        full = "s16" if a.dtype.itemsize == 2 else "s32"
        if sample_format == full:
            return a.astype("<i2" if full == "s16" else "<i4").tobytes()
        a = a.astype(np.float64) / float(2 ** (a.dtype.itemsize * 8 - 1))
    if sample_format == "f32":
        return a.astype("<f4").tobytes()
    if a.dtype.kind == "f":
        bits = 16 if sample_format == "s16" else 32
        scale = float(2 ** (bits - 1))
        a = np.clip(np.round(a.astype(np.float64) * scale), -scale, scale - 1)
    return a.astype("<i2" if sample_format == "s16" else "<i4").tobytes()


class Client:
    """One server.

    :param url: ``http://HOST:PORT`` or ``ws://HOST:PORT`` (a path prefix is kept, for proxies).
    :param token: the bearer token (default ``$RTVERIFY_TOKEN``, else none).
    :param timeout_s: how long any one request or receive may take (seconds).
    """

    def __init__(self, url: str = "http://127.0.0.1:8765", *, token: str | None = None,
                 timeout_s: float = 30.0) -> None:
        self.http_url, self.ws_url = _base_urls(url)
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # -- HTTP ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, query: dict | None = None,
                 files: list[tuple[str, bytes]] | None = None) -> dict:
        url = self.http_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = self._headers()
        body = None
        if files is not None:
            boundary = uuid.uuid4().hex
            parts = []
            for filename, data in files:
                safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; '
                             f'filename="{safe}"\r\nContent-Type: application/octet-stream'
                             f'\r\n\r\n'.encode("utf-8") + data + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                body = resp.read(MAX_ANSWER_BYTES + 1)
                if len(body) > MAX_ANSWER_BYTES:
                    raise ServerError(f"{self.http_url}: the server's answer is larger than "
                                      f"{MAX_ANSWER_BYTES >> 20} MiB")
                return _answer(body, self.http_url)
        except urllib.error.HTTPError as err:
            if 300 <= err.code < 400:
                raise ServerError(f"{self.http_url}: the server answered with a redirect (HTTP "
                                  f"{err.code}); the client follows none", err.code) from None
            try:
                message = json.loads(err.read(65536).decode("utf-8"))["error"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
                message = None
            message = _one_line(message, f"HTTP {err.code} {err.reason}")
            raise ServerError(message, err.code) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ServerError(f"{self.http_url}: cannot reach the server ({reason})") from None

    @staticmethod
    def _file(path) -> tuple[str, bytes]:
        p = Path(path)
        try:
            return p.name, p.read_bytes()
        except OSError as err:
            raise RtverifyError(f"{p}: cannot read ({err.strerror})") from None

    def health(self) -> dict:
        return self._request("GET", "/v1/health")

    def voices(self) -> list[dict]:
        return self._request("GET", "/v1/voices")["voices"]

    def enroll(self, name: str, paths: Iterable, *, force: bool = False,
               add: bool = False, vouch: bool = False) -> dict:
        """Enrol ``name`` from recordings (what ``enroll --input ...`` does); ``force``
        replaces an enrolled voice, ``add`` adds the recordings as takes to it (``enroll --add``;
        the answer then has ``added: true`` and the voice's ``total_takes`` and
        ``total_speech_s``); ``vouch`` with ``add`` keeps takes that do not sound like the
        voice as enrolled (``enroll --add --vouch``: the same person in another mood)."""
        return self._request("POST", f"/v1/voices/{urllib.parse.quote(name, safe='')}",
                             query={"force": "true" if force else None,
                                    "add": "true" if add else None,
                                    "vouch": "true" if vouch else None},
                             files=[self._file(p) for p in paths])

    def delete(self, name: str) -> dict:
        return self._request("DELETE", f"/v1/voices/{urllib.parse.quote(name, safe='')}")

    def verify(self, name: str, path, *, threshold: float | None = None,
               margin: float | None = None) -> dict:
        """Is the recording at ``path`` NAME? The dict ``verify --json`` prints. ``margin``:
        added to the model's thresholds, as ``verify --margin``."""
        return self._request("POST", f"/v1/verify/{urllib.parse.quote(name, safe='')}",
                             query={"threshold": threshold, "margin": margin or None},
                             files=[self._file(path)])

    # -- WebSocket ----------------------------------------------------------------------
    def listen(self, chunks: Iterable, *, rate: int = 16000, channels: int = 1,
               format: str = "s16", names: Iterable[str] | None = None,
               threshold: float | None = None, model: str | None = None,
               status: bool = False, interrupt: threading.Event | None = None,
               margin: float | None = None) -> Iterator[dict]:
        """Stream ``chunks`` (bytes of raw PCM, or numpy arrays / rtverify Chunks converted to
        ``format``: floats full scale at 1.0, int16 / int32 at their own full scale) and yield
        the server's events until its ``summary``. ``chunks`` are sent as they come (a
        microphone paces itself). Ctrl-C while listening ends the stream and still yields the
        summary, as does setting ``interrupt`` (checked at least once a second: what a signal
        handler can do without raising inside the connection's code). A server that owes
        something for longer than ``timeout_s`` (its ``ready``, the events after the end of the
        stream, or reading what is sent) raises :class:`ServerError`; time spent waiting for
        ``chunks`` does not count."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        query = [("rate", rate), ("channels", channels), ("format", format)]
        if isinstance(names, str):  # one name, not its characters
            names = [names]
        query += [("name", n) for n in (names or [])]
        if threshold is not None:
            query.append(("threshold", threshold))
        if margin:
            query.append(("margin", margin))
        if model is not None:
            query.append(("model", model))
        if status:
            query.append(("status", "true"))
        url = f"{self.ws_url}/v1/listen?{urllib.parse.urlencode(query)}"
        try:
            ws = connect(url, additional_headers=self._headers(), open_timeout=self.timeout_s,
                         max_size=None, compression=None).__enter__()
        except (OSError, TimeoutError) as err:
            raise ServerError(f"{self.ws_url}: cannot reach the server ({err})") from None
        except Exception as err:  # websockets' handshake errors (InvalidStatus, ...)
            raise ServerError(f"{self.ws_url}: WebSocket refused ({err})") from None
        stop = threading.Event()
        failure: list[BaseException] = []
        # what the server owes: an answer within timeout_s of the connection, of the last
        # message it sent, and of the end of the stream; and reading what is sent (a send that
        # blocks for timeout_s means it stopped). Waiting for the audio itself (a microphone, a
        # quiet room without status events) is not the server's to answer.
        clock = {"answer": time.monotonic(), "sending_since": None, "ended": None}

        def sent(data) -> None:
            clock["sending_since"] = time.monotonic()
            ws.send(data)
            clock["sending_since"] = None

        # Audio and the end of the stream go through one lock, so that nothing follows the
        # end: the sender ends it after its chunks, or the listening thread does on Ctrl-C /
        # SIGTERM while the sender waits for audio that does not come (a silent `--input -`).
        sending = threading.Lock()

        def send_audio(data) -> None:
            with sending:
                if clock["ended"] is None:
                    sent(data)

        def end_stream(wait_s: float | None = None) -> None:
            if not sending.acquire(timeout=-1 if wait_s is None else wait_s):
                return  # a send is under way: the sender ends the stream after it (stop is set)
            try:
                if clock["ended"] is None:
                    sent(json.dumps({"type": "end"}))
                    clock["ended"] = time.monotonic()
            finally:
                sending.release()

        def send() -> None:
            try:
                for chunk in chunks:
                    if stop.is_set():
                        break
                    data = _pcm_bytes(chunk, format)
                    if data:
                        send_audio(data)
                end_stream()
            except ConnectionClosed:
                pass
            except BaseException as err:  # the audio source failed: say so, end the stream
                failure.append(err)
                ws.close()

        def hung() -> float | None:
            """How long the server has owed an answer, if longer than timeout_s."""
            now = time.monotonic()
            owed = []
            if not started:
                owed.append(clock["answer"])
            if clock["sending_since"] is not None:
                owed.append(clock["sending_since"])
            if clock["ended"] is not None:
                owed.append(max(clock["ended"], clock["answer"]))
            waited = max((now - t for t in owed), default=0.0)
            return waited if waited > self.timeout_s else None

        sender = threading.Thread(target=send, name="rtverify-client-send", daemon=True)
        error: dict | None = None
        poll = min(1.0, self.timeout_s / 4)
        aborted = False
        try:
            started = False
            def end_now() -> None:
                stop.set()  # the stream ends now (or after the chunk being sent) and the
                if started:  # summary still comes
                    try:
                        end_stream(wait_s=1.0)
                    except ConnectionClosed:
                        pass

            while True:
                if interrupt is not None and interrupt.is_set() and not stop.is_set():
                    end_now()
                try:
                    message = ws.recv(timeout=poll)
                except KeyboardInterrupt:
                    end_now()
                    continue
                except ConnectionClosed:
                    break
                except TimeoutError:
                    if hung() is None:
                        continue
                    aborted = True
                    _abort(ws)
                    raise ServerError(f"{self.ws_url}: no answer from the server within "
                                      f"{self.timeout_s:g} s (timeout_s)") from None
                clock["answer"] = time.monotonic()
                if isinstance(message, bytes):
                    continue
                event = _answer(message, self.ws_url)
                if not isinstance(event.get("event"), str):
                    raise ServerError(f"{self.ws_url}: the server sent an event without its "
                                      f"name (is this an rtverify server?)")
                if event.get("event") == "error":
                    error = event
                    continue
                if event.get("event") == "ready" and not started:
                    started = True
                    sender.start()
                    if stop.is_set():  # interrupted before the stream opened: end it now, not
                        end_now()      # after a chunk that a silent source may never give
                yield event
        finally:
            stop.set()
            if not aborted:
                ws.close()
            if sender.is_alive():  # not for long if it only waits for audio after the end
                sender.join(timeout=0.2 if clock["ended"] is not None else 5.0)
        if failure:
            raise failure[0]
        if error is not None:
            code = error.get("code")
            raise ServerError(_one_line(error.get("error"), "refused"),
                              code if isinstance(code, int) else None)
        code = ws.close_code
        if code not in (1000, 1001, None):
            raise ServerError(f"{self.ws_url}: stream closed with code {code} "
                              f"({ws.close_reason or 'no reason given'})", code)


def _abort(ws) -> None:
    """Drop the connection at once: a server that does not answer would not complete a close
    handshake either, and a send blocked on it holds the connection's lock."""
    import socket

    try:
        ws.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    close_socket = getattr(ws, "close_socket", None)
    if close_socket is not None:
        close_socket()


def listen(url: str, chunks: Iterable, *, token: str | None = None, **params) -> Iterator[dict]:
    """:meth:`Client.listen` on the server at ``url``."""
    return Client(url, token=token).listen(chunks, **params)


def verify(url: str, name: str, path, *, token: str | None = None,
           threshold: float | None = None, margin: float | None = None) -> dict:
    """:meth:`Client.verify` on the server at ``url``."""
    return Client(url, token=token).verify(name, path, threshold=threshold, margin=margin)


def stream_to_server(url: str, source, *, names=None, threshold=None, model=None,
                     token: str | None = None, status: bool = False,
                     write=print, interrupt: threading.Event | None = None,
                     margin: float | None = None) -> dict:
    """``listen --server``: send ``source`` (16 kHz float32 chunks: the microphone, a recording
    or stdin) to the server and write every event it decides as one JSON line. Returns the
    summary. Setting ``interrupt`` ends the stream (the summary still comes)."""
    summary: dict = {}
    try:
        for event in Client(url, token=token).listen(source, rate=16000, format="f32",
                                                     names=names, threshold=threshold,
                                                     model=model, status=status,
                                                     interrupt=interrupt, margin=margin):
            write(json.dumps(event, ensure_ascii=False))
            if event.get("event") == "summary":
                summary = event
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return summary


def _plain(event: dict) -> str | None:
    """The line ``listen --server`` prints for a decision or the summary (None for others)."""
    if event["event"] == "decision":
        who = event["speaker"] or f"unknown (best {event['best']})"
        return (f"{event['start_s']:7.2f}-{event['end_s']:7.2f} s  {who}  score "
                f"{event['score']}  {event['reason']}")
    if event["event"] == "summary":
        return (f"{event['decisions']} decisions: {event['accepted']} accepted, "
                f"{event['rejected']} rejected, {event['too_short']} too short")
    return None


def listen_command(args, hooks=None) -> int:
    """``rtverify listen --server URL``: the microphone (or ``--input``) streamed to a server,
    its events written as ``listen`` writes them (JSON lines with ``--json``, else one line per
    decision and the summary)."""
    from .cli.commands import _input_spec
    from .errors import ExitCode, InputError

    if args.model is not None:
        raise InputError("--model: with --server the server's model decides")
    spec = _input_spec(args, args.input, realtime=args.realtime, retries=args.retries,
                       reconnect=True)
    threshold = args.threshold  # checked by the parser
    token = None
    if args.token_file:
        from .cli.serve import read_token

        token = read_token(args.token_file)

    def write(line: str) -> None:
        event = json.loads(line) if (hooks or not args.json) else None
        if args.json:
            print(line, flush=True)
            text = None
        else:
            try:
                text = _plain(event)
            except (KeyError, TypeError, ValueError):  # a field missing, or of another type
                raise ServerError(f"{args.server}: the server's {shown(event['event'])} event "
                                  f"is not as rtverify serve sends it (is this an rtverify "
                                  f"server?)") from None
        if text is not None:
            print(text, flush=True)
        if hooks and event["event"] == "decision":
            hooks.decision(event)

    # Ctrl-C and SIGTERM end the stream through an event the listening loop checks, never as
    # an exception raised wherever the main thread happens to be (inside the WebSocket's own
    # code, it left the client waiting); a second one ends at once.
    import signal

    interrupt = threading.Event()

    def on_signal(signum, frame) -> None:
        if interrupt.is_set():
            raise KeyboardInterrupt
        interrupt.set()

    try:
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (tests calling main() in-process)
        previous = {}
    try:
        source = spec.open()
        if hooks:  # what this machine listened to, not the server's name for the connection
            hooks.source = source.name
        stream_to_server(args.server, source, names=args.name, threshold=threshold,
                         token=token, status=args.status, write=write, interrupt=interrupt,
                         margin=args.margin)
    finally:
        if hooks:
            hooks.close(interrupted=interrupt.is_set())
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ExitCode.OK
