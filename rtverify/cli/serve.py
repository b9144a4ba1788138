"""The ``rtverify serve`` arguments and command. Building the parser imports nothing heavy; the
server (Starlette, uvicorn) is imported only when the command runs."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """\
examples:
  rtverify serve                                    loopback, port 8765, the default store
  rtverify serve --port 9000 --store /var/lib/rtverify
  rtverify serve --host 0.0.0.0 --token-file /etc/rtverify/token
                                                    reachable from the network: token required
  # stream raw 16 kHz s16 PCM, one JSON event per message back (same as listen --json):
  arecord -f S16_LE -r 16000 | rtverify listen --server ws://127.0.0.1:8765 --input - --json
  curl -s localhost:8765/v1/health
  curl -s -F audio=@a.wav -F audio=@b.wav localhost:8765/v1/voices/alice     enroll
  curl -s -F audio=@door.wav localhost:8765/v1/verify/alice                  verify
  curl -s -X DELETE localhost:8765/v1/voices/alice

WebSocket /v1/listen?rate=16000&channels=1&format=s16&name=alice&margin=0.02: binary messages of
raw little-endian PCM, then the text message {"type": "end"} (margin, or threshold: as listen's). TLS: put a reverse proxy in front
(README, "rtverify serve"). Logs go to stderr; SIGTERM gives open streams their summary first.
"""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
        return value
    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0 to 65535")
    return value


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to an argparse sub-parser collection."""
    from ..serve.settings import ServeSettings  # dataclass only: cheap

    d = ServeSettings()
    p = subparsers.add_parser(
        "serve", help="WebSocket + HTTP service: many streams, one loaded model",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Load the model once and serve, on one port, WebSocket /v1/listen (the "
        "events of `listen --json` for a stream of raw PCM) and HTTP /v1/health, /v1/voices, "
        "POST/DELETE /v1/voices/NAME, POST /v1/verify/NAME. Needs the 'serve' extra "
        "(pip install 'rtverify[serve]').")
    p.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}); any "
                   "non-loopback address requires --token-file")
    p.add_argument("--port", type=_port, default=d.port, help=f"TCP port (default {d.port}; 0: "
                   "any free port, printed on stderr)")
    p.add_argument("--token-file", metavar="F", help="file holding the bearer token clients "
                   "must send (Authorization: Bearer TOKEN)")
    p.add_argument("--model", metavar="NAME|PATH", action="append", help="a shipped model's name "
                   "(default, default-short, campp, fusion) or an encoder .onnx (repeatable; "
                   "the first is the default, clients choose with ?model=MODEL_ID)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-streams", type=_positive(int), default=d.max_streams, metavar="N",
                   help=f"concurrent streams (default {d.max_streams})")
    g.add_argument("--max-message-bytes", type=_positive(int), default=d.max_message_bytes,
                   metavar="B", help=f"largest WebSocket message (default {d.max_message_bytes})")
    g.add_argument("--max-stream-s", type=_positive(float), default=d.max_stream_s,
                   metavar="S", help=f"longest stream in seconds of audio (default "
                   f"{d.max_stream_s:g})")
    g.add_argument("--idle-timeout-s", type=_positive(float), default=d.idle_timeout_s,
                   metavar="S", help=f"close a stream silent (or not reading) for S seconds "
                   f"(default {d.idle_timeout_s:g})")
    g.add_argument("--request-timeout-s", type=_positive(float), default=d.request_timeout_s,
                   metavar="S", help=f"close a connection that sends no whole request (HTTP or "
                   f"WebSocket handshake) within S seconds (default {d.request_timeout_s:g})")
    g.add_argument("--min-body-bytes-per-s", type=_positive(float),
                   default=d.min_body_bytes_per_s, metavar="R",
                   help=f"an HTTP request body must arrive at R bytes/s on average after the "
                   f"first --request-timeout-s, or it is answered 408 (default "
                   f"{d.min_body_bytes_per_s:g})")
    g.add_argument("--max-body-s", type=_positive(float), default=d.max_body_s, metavar="S",
                   help=f"an HTTP request body must arrive whole within S seconds of its "
                   f"headers, whatever its rate, or it is answered 408 (default "
                   f"{d.max_body_s:g})")
    g.add_argument("--max-messages-per-s", type=_positive(float),
                   default=d.max_messages_per_s, metavar="R",
                   help=f"sustained messages per second per stream (default "
                   f"{d.max_messages_per_s:g}, bursts of {d.message_burst})")
    g.add_argument("--max-upload-bytes", type=_positive(int), default=d.max_upload_bytes,
                   metavar="B", help=f"largest HTTP upload (default {d.max_upload_bytes})")
    g.add_argument("--max-concurrent-uploads", type=_positive(int),
                   default=d.max_concurrent_uploads, metavar="N",
                   help=f"HTTP uploads received or processed at once; one more is answered 503 "
                   f"(default {d.max_concurrent_uploads})")
    g.add_argument("--max-upload-s", type=_positive(float), default=d.max_upload_s, metavar="S",
                   help=f"longest uploaded recording in seconds of audio (default "
                   f"{d.max_upload_s:g})")
    g.add_argument("--workers", type=_positive(int), metavar="N",
                   help="worker processes for the streams' CPU work (default: one per core)")
    g.add_argument("--worker-kind", choices=["process", "thread"], default=d.worker_kind,
                   help="process (default: uses every core) or thread (one process, about "
                   "one core's worth)")
    p.set_defaults(func=cmd_serve)
    return p


def read_token(path: str) -> str:
    from ..errors import InputError

    try:
        with open(path, "rb") as fh:
            raw = fh.read(4097)
    except OSError as err:
        raise InputError(f"--token-file {path}: cannot read ({err.strerror})") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"--token-file {path}: not UTF-8 text") from None
    if len(raw) > 4096 or not token or any(c.isspace() for c in token):
        raise InputError(f"--token-file {path}: must hold one token (1 to 4096 characters, "
                         "no spaces)")
    if len(token) < 16:
        raise InputError(f"--token-file {path}: the token is {len(token)} characters; use at "
                         "least 16 (e.g. `openssl rand -hex 32`)")
    return token


def cmd_serve(args) -> int:
    from ..errors import ExitCode, InputError
    from ..serve.settings import ServeSettings, is_loopback

    token = read_token(args.token_file) if args.token_file else None
    if token is None and not is_loopback(args.host):
        raise InputError(f"--host {args.host}: binding an address other than loopback "
                         "requires --token-file (clients then send Authorization: Bearer TOKEN)")
    try:
        from ..serve.server import Service, run_server
    except ImportError as err:
        raise InputError(f"serve needs the 'serve' extra: pip install 'rtverify[serve]' "
                         f"({err})") from None
    from .commands import _session, _store

    settings = ServeSettings(host=args.host, port=args.port, token=token,
                             max_streams=args.max_streams,
                             max_message_bytes=args.max_message_bytes,
                             max_stream_s=args.max_stream_s, idle_timeout_s=args.idle_timeout_s,
                             request_timeout_s=args.request_timeout_s,
                             min_body_bytes_per_s=args.min_body_bytes_per_s,
                             max_body_s=args.max_body_s,
                             max_messages_per_s=args.max_messages_per_s,
                             max_upload_bytes=args.max_upload_bytes,
                             max_upload_s=args.max_upload_s,
                             max_concurrent_uploads=args.max_concurrent_uploads,
                             workers=args.workers or 0,
                             worker_kind=args.worker_kind)
    sessions = {}
    for path in args.model or [None]:
        args.model = path
        session = _session(args, threads=1)  # parallelism comes from the worker threads
        sessions.setdefault(session.model_id, session)
    service = Service(settings, sessions, _store(args))

    def ready(server) -> None:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        where = f"[{host}]" if ":" in host else host
        print(f"rtverify: serving on http://{where}:{port} (ws://{where}:{port}/v1/listen), "
              f"model {service.default_model}, {settings.worker_count} worker "
              + ("processes" if settings.worker_kind == "process" else "threads")
              + (", token required" if token else ""), file=sys.stderr, flush=True)

    run_server(service, ready=ready, sock=bind(settings.host, settings.port))
    return ExitCode.OK


def bind(host: str, port: int):
    """The listening socket (so that a taken port is a one-line error, not a log line)."""
    import socket

    from ..errors import InputError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as err:
        raise InputError(f"--host {host} --port {port}: cannot listen there "
                         f"({err.strerror or err})") from None
