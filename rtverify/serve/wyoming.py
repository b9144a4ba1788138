"""A Home Assistant speaker gate: a Wyoming ASR service in front of the real speech-to-text.

Home Assistant (or any Wyoming client) sends ``transcribe``, ``audio-start``, ``audio-chunk``...
``audio-stop``. The gate feeds the audio, as it arrives, to a streaming
:class:`~rtverify.core.pipeline.Verifier` (raw PCM -> 16 kHz float through the same resampling
source code as ``listen --input -``), so that when ``audio-stop`` comes only the last utterance's
last window is left to embed. Every utterance of the request is pooled into one embedding
(as ``enroll``/``verify`` do with a recording) and identified against the enrolled voices
(:class:`~rtverify.store.gallery.Gallery`, which follows the store: a voice enrolled on any
instance is used at once). Accepted: the buffered audio is forwarded unchanged to the real STT
(``--stt-uri``) and its transcript returned, optionally prefixed with the speaker's name. Not
accepted: an empty transcript (or the configured refusal text), and the audio never leaves.

Needs the ``wyoming`` extra (``pip install 'rtverify[wyoming]'``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..config import SegmenterConfig
from ..core.pipeline import Verifier, pooled_band, pooled_fall_db, pooled_snr_db
from ..core.scoring import Decision, DecisionPolicy
from ..errors import InputError, RtverifyError
from ..events import DecisionEvent
from ..io.sniff import pcm_to_float
from ..io.sources import Chunk, _check_rate, _ResamplingSource

logger = logging.getLogger(__name__)

PROGRAM = "rtverify-gate"
MAX_AUDIO_S = 60.0
"""A request holding more audio than this (seconds) is refused: a voice command is short, and
the audio is buffered for the STT."""


MAX_DATA_BYTES = 1 << 20
"""An event's JSON data larger than this is refused (it is a few fields)."""


INTERNAL_ERROR = "internal error; see the gate's log"
"""What a client is told when a bug ends its connection (the log has the traceback)."""


MAX_PAYLOAD_BYTES = 64 << 20
"""No payload larger than this is read, whatever the format (a minute of 48 kHz stereo 32-bit
audio is 23 MB)."""


VIA_KEY = "rtverify_gates"
"""The data field in which a gate passes on, with the ``describe`` and ``transcribe`` it forwards,
the ids of the gates the request has been through (its own last). Other Wyoming services ignore
an unknown field; a gate that finds its own id there is in a loop of gates."""

MAX_GATES = 8
"""A request that has been through this many gates is refused (a chain that long is a loop the
ids did not reveal, e.g. through a proxy that drops the field)."""

DESCRIPTION_TTL_S = 60.0
"""How long the STT service's description is reused: every ``describe`` in that time is answered
from it, and concurrent ones share one question to the service."""


class BadEvent(InputError):
    """An event the gate cannot read: its header, data or payload is malformed (the connection is
    closed after one error, since the stream cannot be trusted to be in step any more)."""


def audio_format(event, what: str) -> tuple[int | float, int, int]:
    """``rate``, ``width``, ``channels`` of an audio-start or audio-chunk, checked as far as their
    types (:class:`PcmStream` checks their values): :class:`InputError` naming the field."""
    data = event.data
    if not isinstance(data, dict):
        raise InputError(f"{what}: its data is not an object")
    out = []
    for key, kinds in (("rate", (int, float)), ("width", int), ("channels", int)):
        value = data.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise InputError(f"{what}: field {key!r} missing or not a number"
                             if key == "rate" else
                             f"{what}: field {key!r} missing or not an integer")
        out.append(value)
    return tuple(out)


def wyoming_modules():
    try:
        import wyoming  # noqa: F401
    except ImportError:
        raise InputError("rtverify wyoming needs the wyoming package: pip install "
                         "'rtverify[wyoming]'") from None


class PcmStream(_ResamplingSource):
    """Wyoming audio chunks (little-endian PCM of ``width`` bytes, interleaved ``channels``) as
    16 kHz mono :class:`Chunk` s: the resampling, mixing and checks of the other sources."""

    def __init__(self, rate: int, width: int, channels: int, name: str = "wyoming audio"):
        fmt = {2: "s16", 4: "s32"}.get(width)
        if fmt is None:
            raise InputError(f"{name}: {width}-byte samples are not supported (2 or 4)")
        if not 1 <= channels <= 64:
            raise InputError(f"{name}: channel count {channels} is not supported (1 to 64)")
        super().__init__(name, _check_rate(rate, name), realtime=False)
        self._fmt = fmt
        self.channels = channels
        self._frame_bytes = width * channels
        self._pending = b""
        self.n_in = 0

    def push(self, data: bytes) -> Chunk | None:
        data = self._pending + data
        usable = len(data) - len(data) % self._frame_bytes
        self._pending = data[usable:]
        if usable == 0:
            return None
        block = pcm_to_float(data[:usable], self._fmt, self.channels)  # as stdin reads it
        self.n_in += len(block)
        return self._convert(block)

    def finish(self) -> Chunk | None:
        return self._finish()

    @property
    def seconds_in(self) -> float:
        return self.n_in / self.rate_in_hz


@dataclass
class GateSettings:
    stt_uri: str
    refusal_text: str = ""
    tag_speaker: bool = False
    tag_format: str = "{speaker}: {text}"
    languages: list[str] = field(default_factory=lambda: ["en"])
    stt_timeout_s: float = 30.0


@dataclass(frozen=True)
class GateResult:
    """What the gate decided on one request (logged, and kept for tests/metrics)."""

    decision: Decision
    speech_s: float
    audio_s: float
    decision_ms: float
    """From ``audio-stop`` to the decision (milliseconds)."""
    forwarded: bool
    text: str


def pooled(decisions: list[DecisionEvent]) -> tuple[np.ndarray | None, float]:
    """One unit embedding for all the request's utterances (window by window, as
    :func:`~rtverify.core.pipeline.embed_recording` pools a recording) and their speech (their
    SNR: :func:`~rtverify.core.pipeline.pooled_snr_db`)."""
    n = sum(d.n_windows for d in decisions)
    if not n:
        return None, sum(d.speech_s for d in decisions)
    total = np.sum([d.window_sum for d in decisions], axis=0, dtype=np.float64)
    return (total / np.linalg.norm(total)).astype(np.float32), sum(d.speech_s for d in decisions)


class Gate:
    """What every connection shares: the encoder, the gallery, the policy, the settings."""

    def __init__(self, session, gallery, policy: DecisionPolicy, settings: GateSettings,
                 workers: int = 2) -> None:
        self.session = session
        self.gallery = gallery
        self.policy = policy
        self.settings = settings
        self.executor = ThreadPoolExecutor(max(1, workers), thread_name_prefix="rtverify-gate")
        self.results: list[GateResult] = []
        self.gate_id = uuid.uuid4().hex[:16]
        """This process's id in :data:`VIA_KEY` (random: two gates never share one)."""
        self._describing: asyncio.Future | None = None  # the last question (its Info, or None)
        self._described_at = 0.0  # when the last question was answered with a description
        self._loop_warned = False

    def via(self, event) -> list[str]:
        """The gates ``event`` (a received ``describe`` or ``transcribe``) has been through."""
        got = (event.data or {}).get(VIA_KEY) if event is not None else None
        return [str(g) for g in got] if isinstance(got, list) else []

    def loop_error(self, via: Sequence[str]) -> str | None:
        """Why a request that came through ``via`` must not be forwarded again, or None."""
        if self.gate_id in via:
            text = (f"a loop of speaker gates: the STT service at {self.settings.stt_uri} "
                    f"leads back to this gate (point --stt-uri at the real speech-to-text)")
        elif len(via) >= MAX_GATES:
            text = f"a request through {len(via)} speaker gates: a loop? (at most {MAX_GATES})"
        else:
            return None
        if not self._loop_warned:  # once: every request through the loop would repeat it
            self._loop_warned = True
            logger.warning("%s", text)
        return text

    def forwarded(self, event, via: Sequence[str]):
        """``event`` (a wyoming Event) with this gate appended to the gates it went through."""
        from wyoming.event import Event

        return Event(type=event.type, data={**(event.data or {}), VIA_KEY: [*via, self.gate_id]},
                     payload=event.payload)

    def decide(self, decisions: list[DecisionEvent]) -> tuple[Decision, float]:
        vector, speech_s = pooled(decisions)
        snr_db, fall = pooled_snr_db(decisions), pooled_fall_db(decisions)
        if vector is None:
            threshold = self.policy.threshold_for(speech_s, snr_db)
            return Decision(None, None, None, {}, False, threshold, None, None, "too_short",
                            snr_db), speech_s
        return self.gallery.decide(vector, speech_s, self.policy, snr_db=snr_db,
                                   band=pooled_band(decisions), fall_db=fall), speech_s

    async def describe_upstream(self, via: Sequence[str] = ()):
        """The real STT's models (so Home Assistant offers its languages), or None. A description
        is reused for :data:`DESCRIPTION_TTL_S`, and describes that come while one is asked wait
        for that one (a burst of clients, or a loop of gates, asks the service once)."""
        asked = self._describing
        if asked is not None and asked.done() and asked.result() is not None and \
                asyncio.get_running_loop().time() - self._described_at < DESCRIPTION_TTL_S:
            return asked.result()
        if asked is None or asked.done():
            self._describing = asyncio.ensure_future(self._ask_description(via))
        # shielded: a waiter that goes away does not cancel the others' question
        return await asyncio.shield(self._describing)

    async def _ask_description(self, via: Sequence[str]):
        from wyoming.info import Describe, Info

        try:
            info = Info.from_event(await self.ask_stt(
                [self.forwarded(Describe().event(), via)], Info, "description", timeout_s=3))
        except (RtverifyError, ValueError) as err:
            logger.warning("cannot describe the STT service (%s)", err)
            return None
        self._described_at = asyncio.get_running_loop().time()
        return info

    async def info_event(self, via: Sequence[str] = ()):
        """This gate's description: the STT service's models behind this program (its own
        fallback model when the service cannot be asked, or when asking it would be a loop)."""
        from wyoming.info import AsrModel, AsrProgram, Attribution, Info

        from .. import __version__

        upstream = None if self.loop_error(via) else await self.describe_upstream(via)
        models = []
        if upstream is not None:
            for prog in upstream.asr:
                models.extend(prog.models)
        if not models:
            models = [AsrModel(name="rtverify-gate", attribution=Attribution("rtverify", ""),
                               installed=True, description="speaker gate", version=__version__,
                               languages=list(self.settings.languages))]
        prog = AsrProgram(name=PROGRAM, attribution=Attribution("rtverify", ""),
                          installed=True, version=__version__,
                          description=f"speaker-verified speech-to-text (forwards to "
                                      f"{self.settings.stt_uri})", models=models)
        return Info(asr=[prog]).event()

    async def transcribe_upstream(self, transcribe_event, audio_events) -> str:
        from wyoming.asr import Transcript

        via = self.via(transcribe_event)
        if (loop := self.loop_error(via)) is not None:
            raise RtverifyError(loop)
        answer = await self.ask_stt([self.forwarded(transcribe_event, via), *audio_events],
                                    Transcript, "transcript",
                                    timeout_s=self.settings.stt_timeout_s)
        return Transcript.from_event(answer).text

    async def ask_stt(self, events, answer, what: str, timeout_s: float):
        """Send ``events`` to the STT service and return its first event of type ``answer`` (a
        wyoming message class; ``what`` names it in errors), all within one deadline,
        connecting included: a service that accepts the connection but never reads (the socket
        fills) or never answers cannot hold the client. Anything else (unreachable, closed
        without an answer, an error event, the deadline) is one :class:`RtverifyError` naming
        the service. A connection left with data unsent is aborted, not closed (closing would
        wait for the service to read it)."""
        from urllib.parse import urlsplit

        from wyoming.error import Error
        from wyoming.event import async_read_event, async_write_event

        uri = self.settings.stt_uri
        writer = None

        async def exchange():
            nonlocal writer
            parts = urlsplit(uri)
            if parts.scheme == "unix":
                reader, writer = await asyncio.open_unix_connection(parts.path)
            else:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            for event in events:
                await async_write_event(event, writer)
            while True:
                event = await async_read_event(reader)
                if event is None:
                    raise RtverifyError(f"{uri}: the STT service closed the connection without "
                                        f"a {what}")
                if answer.is_type(event.type):
                    return event
                if Error.is_type(event.type):
                    raise RtverifyError(f"{uri}: the STT service failed: "
                                        f"{Error.from_event(event).text}")

        done = False
        try:
            event = await asyncio.wait_for(exchange(), timeout_s)
            done = True
            return event
        except asyncio.TimeoutError:
            raise RtverifyError(f"{uri}: no {what} within {timeout_s:g} s") from None
        except OSError as err:
            raise RtverifyError(f"{uri}: cannot reach the STT service "
                                f"({err.strerror or err})") from None
        finally:
            if writer is not None and done:
                writer.close()
            elif writer is not None:
                writer.transport.abort()


def handler_factory(gate: Gate):
    """The wyoming ``AsyncEventHandler`` class bound to ``gate`` (wyoming imported only here)."""
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.error import Error
    from wyoming.event import Event
    from wyoming.info import Describe
    from wyoming.server import AsyncEventHandler

    class GateHandler(AsyncEventHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.transcribe: Event | None = None
            self.failed = False
            """A request went wrong (one Error sent): its remaining audio is ignored."""
            self._reset()

        def _reset(self) -> None:
            self.audio: list[Event] = []
            self.stream: PcmStream | None = None
            self.verifier: Verifier | None = None
            self.decisions: list[DecisionEvent] = []
            self.refused: str | None = None

        async def _run(self, fn, *args):
            return await asyncio.get_running_loop().run_in_executor(gate.executor, fn, *args)

        async def _while_client_waits(self, coro):
            """``coro``'s result; cancelled if the client goes away meanwhile (its connection
            reaches end of file), so that a question to the STT service on behalf of nobody
            (e.g. of a gate whose own deadline passed) ends with its asker."""
            task = asyncio.ensure_future(coro)
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.2)
                if done:
                    return task.result()
                if self.reader.at_eof():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise ConnectionResetError("the client went away")

        def _feed(self, chunk: Chunk | None, final: bool = False) -> None:
            if chunk is not None:
                self.decisions += [e for e in self.verifier.push(chunk)
                                   if isinstance(e, DecisionEvent)]
            if final:
                self.decisions += [e for e in self.verifier.finish()
                                   if isinstance(e, DecisionEvent)]

        async def _error(self, text: str) -> None:
            logger.warning("%s", text)
            await self.write_event(Error(text=text, code="rtverify").event())

        @property
        def name(self) -> str:
            """The connection, for the log: ``host:port`` of the client, else ``connection``."""
            peer = self.writer.get_extra_info("peername")
            if isinstance(peer, tuple) and len(peer) >= 2:
                return f"{peer[0]}:{peer[1]}"
            return "connection"

        async def run(self) -> None:
            """The library's loop, reading events with :meth:`read_event`: a malformed one is
            one error event, then the connection closes (never a traceback). A bug (any other
            exception) is logged once with its traceback, answered with one error event, and
            closes this connection only; the gate serves the others."""
            self._is_running = True
            try:
                while self._is_running:
                    try:
                        event = await self.read_event()
                    except BadEvent as err:
                        await self._error(str(err))
                        break
                    if event is None or not await self.handle_event(event):
                        break
            except ConnectionError:
                pass  # the client went away
            except Exception:  # a bug: log it, close this connection, keep the others
                logger.exception("%s: internal error", self.name)
                try:
                    await self.write_event(Error(text=INTERNAL_ERROR, code="rtverify").event())
                except Exception:  # noqa: BLE001 - the client may be gone; it is logged
                    pass
            finally:
                await self.disconnect()
                self.writer.close()

        async def read_event(self) -> Event | None:
            """One event (the wyoming library's framing: a JSON header line, then
            ``data_length`` bytes of JSON data, then ``payload_length`` bytes of payload), each
            part checked; None when the client closed the connection."""
            try:
                line = await self.reader.readline()
            except ValueError:  # longer than the reader's limit (64 KiB)
                raise BadEvent("bad Wyoming event: header line too long") from None
            if not line.endswith(b"\n"):
                return None  # closed, or gone in the middle of a header
            try:
                head = json.loads(line)
            except (ValueError, RecursionError):  # deep nesting: RecursionError
                raise BadEvent("bad Wyoming event: header is not JSON") from None
            if not isinstance(head, dict) or not isinstance(head.get("type"), str):
                raise BadEvent("bad Wyoming event: header is not an object with a 'type'")
            data = head.get("data")
            data = {} if data is None else data
            if not isinstance(data, dict):
                raise BadEvent(f"bad Wyoming event {head['type']!r}: its data is not an object")
            sizes = []
            for key, limit in (("data_length", MAX_DATA_BYTES),
                               ("payload_length", self._payload_limit())):
                n = head.get(key)
                n = 0 if n is None else n
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise BadEvent(f"bad Wyoming event {head['type']!r}: {key} {n!r} is not "
                                   "a byte count")
                if n > limit:
                    raise BadEvent(f"bad Wyoming event {head['type']!r}: {key} {n} is more "
                                   f"than {limit} bytes"
                                   + (f" ({MAX_AUDIO_S:g} s of audio)"
                                      if key == "payload_length" else ""))
                sizes.append(n)
            try:
                if sizes[0]:
                    try:
                        more = json.loads(await self.reader.readexactly(sizes[0]))
                    except (ValueError, RecursionError):
                        raise BadEvent(f"bad Wyoming event {head['type']!r}: its data is not "
                                       "JSON") from None
                    if not isinstance(more, dict):
                        raise BadEvent(f"bad Wyoming event {head['type']!r}: its data is not "
                                       "an object")
                    data = {**data, **more}
                payload = await self.reader.readexactly(sizes[1]) if sizes[1] else None
            except asyncio.IncompleteReadError:
                return None  # the client went away mid-event
            return Event(type=head["type"], data=data, payload=payload)

        def _payload_limit(self) -> int:
            """The largest payload read: :data:`MAX_AUDIO_S` of audio in the request's format
            (at most :data:`MAX_PAYLOAD_BYTES`), else that much at 16 kHz, 16-bit mono."""
            if self.stream is None:
                return int(MAX_AUDIO_S * 16000) * 2
            return min(MAX_PAYLOAD_BYTES,
                       int(MAX_AUDIO_S * self.stream.rate_in_hz) * self.stream._frame_bytes)

        async def handle_event(self, event: Event) -> bool:
            try:
                return await self._handle(event)
            except RtverifyError as err:
                # an error ends the request: none of its state (its transcribe settings
                # included) may carry over to the next request on this connection
                self._reset()
                self.transcribe = None
                self.failed = True
                await self._error(str(err))
                return True

        async def _handle(self, event: Event) -> bool:
            if Describe.is_type(event.type):
                info = await self._while_client_waits(gate.info_event(gate.via(event)))
                await self.write_event(info)
            elif Transcribe.is_type(event.type):
                self.transcribe = event
            elif AudioStart.is_type(event.type):
                self._reset()
                self.failed = False
                self.stream = PcmStream(*audio_format(event, "audio-start"))
                # one request, one decision at audio-stop: its short pauses do not split it
                self.verifier = Verifier(gate.session, {}, provisional=False, bands=True,
                                         segmenter=SegmenterConfig().for_recording())
                self.audio.append(event)
            elif AudioChunk.is_type(event.type):
                if self.failed:
                    return True
                if self.stream is None:
                    raise InputError("audio-chunk before audio-start")
                if self.refused:
                    return True
                if audio_format(event, "audio-chunk") != (
                        self.stream.rate_in_hz, self.stream._frame_bytes // self.stream.channels,
                        self.stream.channels):
                    raise InputError("audio-chunk format differs from its audio-start")
                # counted before it is kept or verified: one large chunk is refused as well
                frames = len(event.payload or b"") // self.stream._frame_bytes
                if self.stream.seconds_in + frames / self.stream.rate_in_hz > MAX_AUDIO_S:
                    self.refused = f"more than {MAX_AUDIO_S:g} s of audio in one request"
                    return True
                self.audio.append(event)
                await self._run(self._feed, self.stream.push(event.payload or b""))
            elif AudioStop.is_type(event.type):
                if self.failed:
                    self.failed = False
                    return True
                if self.stream is None:
                    raise InputError("audio-stop before audio-start")
                await self._stop(event)
            return True

        async def _stop(self, stop_event: Event) -> None:
            t0 = time.perf_counter()
            if self.refused:
                raise InputError(self.refused)
            await self._run(self._feed, self.stream.finish(), True)
            decision, speech_s = await self._run(gate.decide, self.decisions)
            decision_ms = (time.perf_counter() - t0) * 1000
            audio_s = self.stream.seconds_in
            text, forwarded = gate.settings.refusal_text, False
            if decision.accepted:
                transcribe = self.transcribe or Transcribe().event()
                text = await self._while_client_waits(
                    gate.transcribe_upstream(transcribe, self.audio + [stop_event]))
                forwarded = True
                if gate.settings.tag_speaker:
                    text = gate.settings.tag_format.format(speaker=decision.speaker, text=text)
            result = GateResult(decision, speech_s, audio_s, decision_ms, forwarded, text)
            gate.results.append(result)
            logger.info("request: %.2f s of audio, %.2f s of speech -> %s (best %s, score %s, "
                        "%s), decided %.1f ms after audio-stop%s", audio_s, speech_s,
                        decision.speaker or "nobody", decision.best,
                        "-" if decision.score is None else f"{decision.score:.3f}",
                        decision.reason, decision_ms, ", forwarded" if forwarded else "")
            await self.write_event(Transcript(text=text).event())
            self.transcribe = None
            self._reset()

    return GateHandler


async def serve(gate: Gate, uri: str, ready=None) -> None:
    """Serve until cancelled. ``ready(server)`` is called once it listens."""
    from functools import partial

    from wyoming.server import AsyncServer

    server = AsyncServer.from_uri(uri)
    handler = handler_factory(gate)
    await server.start(partial(handler))
    if ready is not None:
        ready(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
