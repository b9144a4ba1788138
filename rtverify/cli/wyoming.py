"""``rtverify wyoming``: the Home Assistant speaker gate (see :mod:`rtverify.serve.wyoming`)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from urllib.parse import urlsplit

from ..errors import InputError

logger = logging.getLogger(__name__)


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``wyoming`` subcommand to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "wyoming", help="Home Assistant speaker gate: a Wyoming ASR proxy for enrolled voices",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the Wyoming protocol as a speech-to-text service. Each request's "
                    "audio is verified as it arrives; when it stops, an enrolled speaker's "
                    "audio is forwarded to the real STT (--stt-uri) and its transcript "
                    "returned, anyone else's gets an empty transcript (or --refusal-text).",
        epilog="example: rtverify wyoming --stt-uri tcp://127.0.0.1:10300 --tag-speaker\n"
               "Home Assistant: Settings > Devices & services > Add integration > Wyoming "
               "Protocol,\nhost of this machine, port 10350; then pick it as the pipeline's "
               "speech-to-text.")
    p.add_argument("--uri", default="tcp://127.0.0.1:10350",
                   help="where to listen (tcp://HOST:PORT or unix://PATH; default "
                        "tcp://127.0.0.1:10350)")
    p.add_argument("--allow-network", action="store_true",
                   help="allow a --uri that is not loopback (the Wyoming protocol has no "
                        "authentication: expose it only to Home Assistant's network)")
    p.add_argument("--stt-uri", required=True, help="the real Wyoming STT service, e.g. "
                   "tcp://127.0.0.1:10300 (faster-whisper)")
    p.add_argument("--name", action="extend", nargs="+", metavar="NAME",
                   help="only these voices (default: every enrolled voice)")
    p.add_argument("--tag-speaker", action="store_true",
                   help="prefix the transcript with the speaker's name ('alice: ...')")
    p.add_argument("--tag-format", default="{speaker}: {text}",
                   help="the tagged transcript (default '{speaker}: {text}')")
    p.add_argument("--refusal-text", default="",
                   help="transcript for a speaker who is not accepted (default: empty)")
    p.add_argument("--threshold", type=float, help="override the model's threshold")
    p.add_argument("--margin", type=float, metavar="X",
                   help="raise (negative: lower) every threshold the model calibrated by X "
                        "(-0.2 to 0.2; 0.02: fewer strangers let through, the enrolled voice "
                        "asked again more often)")
    p.add_argument("--language", action="extend", nargs="+", metavar="LANG",
                   help="languages announced when the STT cannot be asked (default en)")
    p.add_argument("--stt-timeout", type=float, default=30.0, metavar="S",
                   help="seconds the STT gets for a whole request, connecting and sending "
                        "included (default 30)")
    p.add_argument("--model", metavar="NAME|PATH", help="a shipped model's name (default, "
                   "default-short, campp, fusion) or an encoder .onnx (default: the shipped "
                   "default)")
    p.add_argument("--workers", type=int, default=2, help="threads that run the verifier "
                   "(default 2)")
    p.set_defaults(func=cmd_wyoming)
    return p


def _check_uri(uri: str, allow_network: bool, what: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme not in ("tcp", "unix"):
        raise InputError(f"{what} {uri!r}: use tcp://HOST:PORT or unix://PATH")
    if parts.scheme == "unix":
        if parts.netloc or not parts.path:  # unix://gate.sock: the name went to the host part
            raise InputError(f"{what} {uri!r}: use unix:///absolute/path (three slashes)")
        return
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise InputError(f"{what} {uri!r}: needs a host and a port (tcp://HOST:PORT)")
    if what != "--uri" or allow_network:
        return
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(parts.hostname, port)}
    except socket.gaierror as err:
        raise InputError(f"{what} {uri!r}: unknown host ({err.strerror})") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise InputError(f"--uri {uri!r} is not loopback; the Wyoming protocol has no "
                         "authentication, so add --allow-network to serve Home Assistant on "
                         "another machine (and keep the port off untrusted networks)")


def _addresses(host: str, port: int) -> set:
    """``host``'s addresses, IPv4-mapped IPv6 ones as IPv4 (empty when it does not resolve)."""
    try:
        found = {ipaddress.ip_address(ai[4][0].split("%")[0])
                 for ai in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError):
        return set()
    return {getattr(a, "ipv4_mapped", None) or a for a in found}


def _is_local(addr) -> bool:
    """Whether a connection to ``addr`` reaches this machine: loopback, unspecified (0.0.0.0
    and :: connect to the machine itself) or an address of one of its interfaces (one a socket
    can bind)."""
    if addr.is_loopback or addr.is_unspecified:
        return True
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((str(addr), 0))
        return True
    except OSError:
        return False


def _reaches(stt, gate) -> bool:
    """Whether connecting to ``stt`` (an address) reaches a listener bound to ``gate``, on the
    same port. A listener on an unspecified address takes its family's local addresses (an
    IPv6 one only IPv6: asyncio binds it IPv6-only); a connection to an unspecified address
    goes to the machine itself."""
    if stt.version != gate.version:
        return False
    if stt == gate or stt.is_unspecified:
        return True
    return gate.is_unspecified and _is_local(stt)


def _check_not_itself(uri: str, stt_uri: str) -> None:
    """``--stt-uri`` reaching the gate itself would forward every accepted request back to the
    gate, which forwards it again: each client would wait out the timeout for nothing."""
    gate, stt = urlsplit(uri), urlsplit(stt_uri)
    if gate.scheme != stt.scheme:
        return
    if gate.scheme == "unix":
        same = os.path.realpath(gate.path) == os.path.realpath(stt.path)
    else:
        if gate.port != stt.port:
            return
        mine, theirs = _addresses(gate.hostname, gate.port), _addresses(stt.hostname, stt.port)
        same = any(_reaches(b, a) for a in mine for b in theirs)
    if same:
        raise InputError(f"--stt-uri {stt_uri!r} is this gate's own address (--uri {uri!r}); "
                         "name the speech-to-text service the gate forwards to")


def cmd_wyoming(args) -> int:
    import asyncio

    from ..config import check_decision
    from ..core.encoder import EncoderSession
    from ..errors import ExitCode
    from ..core.scoring import DecisionPolicy, Scorer
    from ..errors import StoreError
    from ..serve.wyoming import Gate, GateSettings, serve, wyoming_modules
    from ..store import open_store
    from ..store.gallery import Gallery

    wyoming_modules()
    _check_uri(args.uri, args.allow_network, "--uri")
    _check_uri(args.stt_uri, True, "--stt-uri")
    _check_not_itself(args.uri, args.stt_uri)
    try:
        check_decision(args.threshold, args.margin, flag="--")
    except ValueError as err:
        raise InputError(str(err)) from None
    if args.stt_timeout <= 0 or args.workers < 1:
        raise InputError("--stt-timeout and --workers must be positive")
    try:
        args.tag_format.format(speaker="x", text="y")
    except (KeyError, IndexError, ValueError) as err:
        raise InputError(f"--tag-format {args.tag_format!r}: only {{speaker}} and {{text}} "
                         f"may appear ({err})") from None
    session = EncoderSession(args.model, threads=1)
    store = open_store(args.store)
    if args.name:
        for name in args.name:  # each named voice must be usable now
            store.load(name, session.model_id, session.dim)
    gallery = Gallery(store, session.model_id, session.dim, names=args.name,
                      scorer=Scorer.for_model(session)).start()
    if not len(gallery):
        raise StoreError(f"no usable voice enrolled in {store.root}; enroll one first "
                         "(rtverify enroll --name NAME [--input FILE ...])")
    settings = GateSettings(stt_uri=args.stt_uri, refusal_text=args.refusal_text,
                            tag_speaker=args.tag_speaker, tag_format=args.tag_format,
                            languages=args.language or ["en"], stt_timeout_s=args.stt_timeout)
    gate = Gate(session, gallery, DecisionPolicy(session.info.decision, args.threshold,
                                                   args.margin),
                settings, workers=args.workers)

    def ready(server):
        print(f"rtverify wyoming: serving {args.uri} for {len(gallery)} voice(s) from "
              f"{store.root}; accepted audio goes to {args.stt_uri}", flush=True)

    try:
        asyncio.run(serve(gate, args.uri, ready))
    except KeyboardInterrupt:
        pass
    except OSError as err:
        raise InputError(f"--uri {args.uri}: cannot listen ({err.strerror or err})") from None
    finally:
        gallery.close()
        gate.executor.shutdown(wait=False)
    return ExitCode.OK
