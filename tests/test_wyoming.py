"""`rtverify wyoming` end to end: the real CLI as a Wyoming ASR service in front of a real Wyoming
STT stand-in (served by the wyoming library in this test), driven by a wyoming client as Home
Assistant would: the enrolled speaker's audio reaches the STT byte for byte and her transcript
comes back (tagged), a stranger's audio never leaves the gate and gets the refusal text."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import SR

wyoming = pytest.importorskip("wyoming", reason="the wyoming extra is not installed")

from wyoming.asr import Transcribe, Transcript  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncClient  # noqa: E402
from wyoming.error import Error  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.info import (AsrModel, AsrProgram, Attribution, Describe, Info)  # noqa: E402
from wyoming.server import AsyncEventHandler, AsyncServer  # noqa: E402

from rtverify.io.sources import StdinSource  # noqa: E402
from rtverify.serve.wyoming import PcmStream  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def closed_port():
    """A loopback port nobody listens on, held bound for the test so that nothing (the gate
    under test, or a connection's own ephemeral port) can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@contextlib.contextmanager
def deaf_port():
    """A loopback port that accepts connections and never reads from them (a hung service):
    its receive buffer is small, so a client writing to it soon blocks."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.1", 0))
        s.listen()
        held = []
        stop = threading.Event()

        def accept():
            s.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(s.accept()[0])
                except OSError:
                    pass

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        try:
            yield s.getsockname()[1]
        finally:
            stop.set()
            t.join(5)
            for c in held:
                c.close()


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def clip(conv, a, b):
    x = conv[int(a * SR):int(b * SR)]
    return (x * (0.3 / np.abs(x).max())).astype(np.float32)


# -- a real Wyoming STT service (the stand-in for faster-whisper) -------------------------------
class StandIn:
    """Answers 'heard <bytes> <sha1>' for the audio it receives; records every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict] = []
        self.describes = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        outer = self

        class Handler(AsyncEventHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self.audio, self.language, self.fmt = b"", None, None

            async def handle_event(self, event: Event) -> bool:
                if Describe.is_type(event.type):
                    outer.describes += 1
                    model = AsrModel(name="stand-in", attribution=Attribution("test", ""),
                                     installed=True, description=None, version="1",
                                     languages=["xx", "en"])
                    await self.write_event(Info(asr=[AsrProgram(
                        name="stand-in", attribution=Attribution("test", ""), installed=True,
                        description=None, version="1", models=[model])]).event())
                elif Transcribe.is_type(event.type):
                    self.language = Transcribe.from_event(event).language
                elif AudioStart.is_type(event.type):
                    s = AudioStart.from_event(event)
                    self.fmt = (s.rate, s.width, s.channels)
                elif AudioChunk.is_type(event.type):
                    self.audio += AudioChunk.from_event(event).audio
                elif AudioStop.is_type(event.type):
                    outer.requests.append({"language": self.language, "fmt": self.fmt,
                                           "audio": self.audio})
                    text = f"heard {len(self.audio)} {hashlib.sha1(self.audio).hexdigest()}"
                    await self.write_event(Transcript(text=text).event())
                    return False
                return True

        async def main():
            self.server = AsyncServer.from_uri(f"tcp://127.0.0.1:{self.port}")
            await self.server.start(Handler)
            ready.set()
            await asyncio.Event().wait()

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()),
                                       daemon=True)
        self.thread.start()
        assert ready.wait(10)

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


# -- the client side (what Home Assistant does) ------------------------------------------------
async def _request(uri, audio: bytes, rate=16000, width=2, channels=1, chunk_bytes=2048,
                   language="xx", before=(), until_error=False):
    async with AsyncClient.from_uri(uri, connect_timeout=10, read_timeout=60) as client:
        for ev in before:
            await client.write_event(ev)
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(audio), chunk_bytes):
            await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                audio=audio[i:i + chunk_bytes]).event())
        t0 = time.perf_counter()
        await client.write_event(AudioStop().event())
        got = []
        while True:
            ev = await client.read_event()
            assert ev is not None, "the gate closed the connection"
            got.append(ev)
            if until_error and Error.is_type(ev.type):
                return None, (time.perf_counter() - t0) * 1000, got
            if Transcript.is_type(ev.type):
                return Transcript.from_event(ev).text, (time.perf_counter() - t0) * 1000, got


def request(uri, audio, **kw):
    return asyncio.run(_request(uri, audio, **kw))


async def _describe(uri):
    async with AsyncClient.from_uri(uri, connect_timeout=10, read_timeout=30) as client:
        await client.write_event(Describe().event())
        while True:
            ev = await client.read_event()
            if Info.is_type(ev.type):
                return Info.from_event(ev)


@pytest.fixture(scope="module")
def stt():
    return StandIn()


@pytest.fixture(scope="module")
def gate(tmp_path_factory, stt, alice_print, session):
    from rtverify.store.voiceprints import Voiceprint, VoiceprintStore

    store = tmp_path_factory.mktemp("wy") / "voices"
    VoiceprintStore(store).save(Voiceprint("alice", session.model_id, alice_print,
                                           "2025-01-01T00:00:00Z", 10.0, 2))
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(tmp_path_factory.mktemp("wylog") / "gate.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "-v", "--store", str(store),
                             "wyoming", "--uri", f"tcp://127.0.0.1:{port}", "--stt-uri", stt.uri,
                             "--tag-speaker", "--refusal-text", "sorry, I only answer people "
                             "I know"], stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    line = proc.stdout.readline()
    assert "serving" in line, (line, log.seek(0) or log.read())
    yield {"uri": f"tcp://127.0.0.1:{port}", "log": log, "proc": proc}
    proc.terminate()
    proc.wait(10)


def gate_log(gate) -> str:
    gate["log"].flush()
    gate["log"].seek(0)
    return gate["log"].read()


def test_pcm_stream_is_the_stdin_source_on_the_same_bytes():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((48000, 2)) * 0.1).astype(np.float32)
    raw = (x * 32767).astype("<i2").tobytes()
    ref = np.concatenate([c.samples for c in StdinSource(io.BytesIO(raw), rate_hz=48000,
                                                         channels=2)])
    s = PcmStream(48000, 2, 2)
    pieces = [s.push(raw[i:i + 1001]) for i in range(0, len(raw), 1001)] + [s.finish()]
    got = np.concatenate([c.samples for c in pieces if c is not None])
    assert np.allclose(got, ref, atol=1e-6) and len(got) == len(ref) == 16000


def test_pcm_stream_refuses_bad_formats():
    from rtverify.errors import InputError

    with pytest.raises(InputError, match="3-byte"):
        PcmStream(16000, 3, 1)
    with pytest.raises(InputError, match="sample rate"):
        PcmStream(4000, 2, 1)
    # a JSON integer beyond a float's range (an audio-start "rate" of 401 digits) was numpy's
    # TypeError from isfinite
    with pytest.raises(InputError, match="sample rate beyond 1e308 Hz"):
        PcmStream(10**400, 2, 1)


def test_describes_itself_as_the_stt_it_fronts(gate):
    info = asyncio.run(_describe(gate["uri"]))
    assert [p.name for p in info.asr] == ["rtverify-gate"]
    assert info.asr[0].models[0].languages == ["xx", "en"]


def test_the_enrolled_speaker_is_forwarded_byte_for_byte(gate, stt, conversation):
    audio = pcm16(clip(conversation, 0.9, 5.7))  # the enrolled speaker's first line
    n = len(stt.requests)
    text, ms, _ = request(gate["uri"], audio)
    assert len(stt.requests) == n + 1
    sent = stt.requests[-1]
    assert sent["audio"] == audio and sent["language"] == "xx" and sent["fmt"] == (16000, 2, 1)
    assert text == f"alice: heard {len(audio)} {hashlib.sha1(audio).hexdigest()}"
    logged = re.findall(r"decided ([0-9.]+) ms after audio-stop", gate_log(gate))
    assert logged, gate_log(gate)


def test_resampled_stereo_is_verified_too(gate, stt, conversation):
    from scipy.signal import resample_poly

    x = resample_poly(clip(conversation, 17.6, 22.2), 3, 1).astype(np.float32)  # 48 kHz
    stereo = np.stack([x, x], axis=1).ravel()
    audio = pcm16(stereo)
    text, _, _ = request(gate["uri"], audio, rate=48000, channels=2, chunk_bytes=3840)
    assert text.startswith("alice: heard ") and stt.requests[-1]["audio"] == audio


def test_a_stranger_gets_the_refusal_and_the_audio_never_leaves(gate, stt, conversation):
    n = len(stt.requests)
    for a, b in ((6.3, 11.5), (12.0, 17.0), (22.8, 27.6)):  # three other speakers
        text, ms, _ = request(gate["uri"], pcm16(clip(conversation, a, b)))
        assert text == "sorry, I only answer people I know"
    silence = pcm16(np.zeros(SR, dtype=np.float32))
    text, _, _ = request(gate["uri"], silence)
    assert text == "sorry, I only answer people I know"
    assert len(stt.requests) == n


def test_a_gate_with_a_margin_refuses_what_the_default_gate_forwards(alice_voices, stt,
                                                                      conversation):
    """``wyoming --margin 0.2``: the enrolled speaker's line, which the default gate forwards
    (test above), gets the refusal and never reaches the STT."""
    with _gate_running(alice_voices, stt.port, "--margin", "0.2", "--refusal-text", "no") as gate:
        n = len(stt.requests)
        text, _, _ = request(gate["uri"], pcm16(clip(conversation, 0.9, 5.7)))
        assert text == "no" and len(stt.requests) == n


def test_protocol_errors_are_one_line_and_the_connection_survives(gate, stt, conversation):
    bad = AudioChunk(rate=16000, width=2, channels=1, audio=b"\0\0" * 100).event()
    audio = pcm16(clip(conversation, 0.9, 5.7))
    text, _, events = request(gate["uri"], audio, before=[bad])
    errors = [Error.from_event(e).text for e in events if Error.is_type(e.type)]
    assert errors == ["audio-chunk before audio-start"]
    assert text.startswith("alice: heard")
    text, _, events = request(gate["uri"], b"\0\0\0" * 100, width=3, until_error=True)
    errors = [Error.from_event(e).text for e in events if Error.is_type(e.type)]
    assert len(errors) == 1 and "3-byte samples are not supported" in errors[0]
    text, _, _ = request(gate["uri"], audio)  # and the next request is served
    assert text.startswith("alice: heard")
    assert gate["proc"].poll() is None and "Traceback" not in gate_log(gate)


def test_decisions_are_logged_with_their_time_after_audio_stop(gate):
    lines = [l for l in gate_log(gate).splitlines() if "after audio-stop" in l]
    assert len(lines) >= 6
    print("\n".join(lines))


def test_a_fleet_gate_uses_a_voice_enrolled_on_another_instance(tmp_path, stt, alice_print,
                                                               session, conversation):
    """Two gates on one PostgreSQL store: a voice enrolled through one store instance after
    both started is accepted by the other within a second."""
    from pg_server import PgServer

    from rtverify.store import open_store
    from rtverify.store.voiceprints import Voiceprint

    pg = PgServer()
    proc = None
    try:
        url = pg.new_database()
        other = open_store(url)
        rng = np.random.default_rng(0)
        v = rng.standard_normal(session.dim).astype(np.float32)
        other.save(Voiceprint("bob", session.model_id, v / np.linalg.norm(v), "2025", 5.0, 1))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "rtverify", "--store", url, "wyoming",
                                 "--uri", f"tcp://127.0.0.1:{port}", "--stt-uri", stt.uri],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert "serving" in proc.stdout.readline(), proc.stderr.read()
        uri = f"tcp://127.0.0.1:{port}"
        audio = pcm16(clip(conversation, 0.9, 5.7))
        assert request(uri, audio)[0] == ""  # alice is not enrolled yet: empty transcript
        other.save(Voiceprint("alice", session.model_id, alice_print, "2025", 10.0, 2))
        time.sleep(1.0)  # the bound: usable on the other instances within a second
        text, _, _ = request(uri, audio)
        assert text.startswith("heard "), text  # accepted, untagged
        other.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        pg.stop()


@pytest.mark.parametrize("args,why", [
    (["--uri", "tcp://0.0.0.0:10350"], "is not loopback"),
    (["--uri", "http://127.0.0.1:1"], "use tcp://HOST:PORT"),
    (["--name", "nobody"], "voice 'nobody' is not enrolled"),
    (["--tag-format", "{who}"], "--tag-format"),
    (["--threshold", "nan"], "--threshold"),
    (["--uri", "tcp://127.0.0.1:1"], "this gate's own address"),
    (["--uri", "tcp://localhost:1"], "this gate's own address"),
    (["--uri", "tcp://0.0.0.0:1", "--allow-network"], "this gate's own address"),
    (["--uri", "unix://gate.sock"], "use unix:///absolute/path"),
])
def test_bad_arguments_are_one_line(tmp_path, args, why):
    r = subprocess.run([sys.executable, "-m", "rtverify", "--store", str(tmp_path / "none"),
                        "wyoming", "--stt-uri", "tcp://127.0.0.1:1", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("gate,stt,itself", [
    ("tcp://127.0.0.1:7", "tcp://127.0.0.1:7", True),
    ("tcp://127.0.0.1:7", "tcp://localhost:7", True),
    ("tcp://127.0.0.1:7", "tcp://0.0.0.0:7", True),  # connecting to 0.0.0.0 reaches this host
    ("tcp://127.0.0.1:7", "tcp://[::ffff:127.0.0.1]:7", True),  # IPv4-mapped
    ("tcp://0.0.0.0:7", "tcp://127.0.0.1:7", True),
    ("tcp://[::]:7", "tcp://[::1]:7", True),
    ("tcp://[::]:7", "tcp://127.0.0.1:7", False),  # an IPv6 listener is IPv6-only
    ("tcp://0.0.0.0:7", "tcp://[::1]:7", False),
    ("tcp://127.0.0.1:7", "tcp://127.0.0.1:8", False),
    ("tcp://0.0.0.0:7", "tcp://192.0.2.77:7", False),  # another machine (TEST-NET-1)
    ("tcp://127.0.0.1:7", "tcp://no-such-host.invalid:7", False),
    ("unix:///tmp/rtv-gate.sock", "unix:///tmp/../tmp/rtv-gate.sock", True),
    ("unix:///tmp/rtv-gate.sock", "unix:///tmp/rtv-stt.sock", False),
    ("unix:///tmp/rtv-gate.sock", "tcp://127.0.0.1:7", False),
])
def test_the_gate_refuses_an_stt_address_that_reaches_itself(gate, stt, itself):
    from rtverify.cli.wyoming import _check_not_itself
    from rtverify.errors import InputError

    if itself:
        with pytest.raises(InputError, match="this gate's own address"):
            _check_not_itself(gate, stt)
    else:
        _check_not_itself(gate, stt)


def test_the_gate_counts_its_machines_own_address_as_itself():
    """A gate on 0.0.0.0 is reached through every address of the machine's interfaces."""
    from rtverify.cli.wyoming import _check_not_itself
    from rtverify.errors import InputError

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
        except OSError:
            pytest.skip("no IPv4 route off loopback on this machine")
        own = s.getsockname()[0]
    with pytest.raises(InputError, match="this gate's own address"):
        _check_not_itself("tcp://0.0.0.0:7", f"tcp://{own}:7")
    _check_not_itself("tcp://127.0.0.1:7", f"tcp://{own}:7")  # not if it listens on loopback


@pytest.fixture
def alice_voices(tmp_path, alice_print, session):
    """A store holding one voice, alice (the demo's voiceprint)."""
    from rtverify.store.voiceprints import Voiceprint, VoiceprintStore

    store = tmp_path / "voices"
    VoiceprintStore(store).save(Voiceprint("alice", session.model_id, alice_print, "2025", 10.0,
                                           2))
    return store


@contextlib.contextmanager
def _gate_running(store, stt_port, *extra, port=None):
    """The CLI's gate on ``port`` (a free one by default) in front of ``tcp://127.0.0.1:
    stt_port``; yields ``{"uri", "port"}``, given its ``stderr`` once it has stopped, which must
    hold no traceback."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "--store", str(store), "wyoming",
                             "--uri", f"tcp://127.0.0.1:{port}", "--stt-uri",
                             f"tcp://127.0.0.1:{stt_port}", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    gate = {"uri": f"tcp://127.0.0.1:{port}", "port": port}
    try:
        assert "serving" in proc.stdout.readline()
        yield gate
    finally:
        proc.terminate()
        gate["stderr"] = proc.communicate(timeout=10)[1]
    assert "Traceback" not in gate["stderr"]


def test_an_unreachable_stt_is_a_protocol_error(alice_voices, conversation):
    with closed_port() as dead, _gate_running(alice_voices, dead) as gate:
        info = asyncio.run(_describe(gate["uri"]))  # falls back to --language
        assert info.asr[0].models[0].languages == ["en"]
        _, _, events = request(gate["uri"], pcm16(clip(conversation, 0.9, 5.7)),
                               until_error=True)
        errors = [Error.from_event(e).text for e in events if Error.is_type(e.type)]
        assert len(errors) == 1 and "cannot reach the STT service" in errors[0]


def test_a_hung_stt_is_one_error_within_the_timeout(alice_voices, conversation):
    """An STT service that accepts the connection and never reads the audio: the gate's writes
    block, and --stt-timeout still bounds the whole exchange (the client hears one error)."""
    with deaf_port() as deaf, _gate_running(alice_voices, deaf, "--stt-timeout", "2") as gate:
        # 38 s of alice at 48 kHz, stereo, 32-bit (14.6 MB, forwarded as it came): more than
        # the sockets between the gate and the deaf service can buffer
        x = np.repeat(np.tile(clip(conversation, 0.9, 5.7), 8), 3)
        pcm = (np.clip(x, -1, 1) * 2**31 * 0.99).astype("<i4").repeat(2).tobytes()
        _, ms, events = request(gate["uri"], pcm, rate=48000, width=4, channels=2,
                                chunk_bytes=48000, until_error=True)
        errors = [Error.from_event(e).text for e in events if Error.is_type(e.type)]
        assert len(errors) == 1 and "no transcript within 2 s" in errors[0], errors
        assert ms < 20000, ms


def _established(*ports: int, remote_only: bool = False) -> int:
    """TCP connections in the established state with either end (``remote_only``: the far end)
    on one of ``ports`` (Linux's /proc tables)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, remote, state = row.split()[1:4]
            ends = {int(remote.rsplit(":", 1)[1], 16)}
            if not remote_only:
                ends.add(int(local.rsplit(":", 1)[1], 16))
            n += state == "01" and bool(ends & set(ports))
    return n


def test_two_gates_pointed_at_each_other_refuse_the_loop(alice_voices, conversation):
    """A misconfiguration a fleet can make: gate A's --stt-uri is gate B and B's is A. A describe
    is answered at once (not after the description deadline), an enrolled speaker's request
    gets one error naming the loop (not the STT deadline), and afterwards nothing goes on
    asking in circles (before: thousands of connections a second, for ever)."""
    pa, pb = free_port(), free_port()
    with _gate_running(alice_voices, pb, "--stt-timeout", "8", port=pa) as a, \
            _gate_running(alice_voices, pa, "--stt-timeout", "8", port=pb) as b:
        t0 = time.perf_counter()
        info = asyncio.run(_describe(a["uri"]))
        describe_s = time.perf_counter() - t0
        assert info.asr[0].models[0].languages == ["en"]  # nobody real to ask: the fallback
        _, ms, events = request(a["uri"], pcm16(clip(conversation, 0.9, 5.7)),
                                until_error=True)
        errors = [Error.from_event(e).text for e in events if Error.is_type(e.type)]
        assert len(errors) == 1 and "a loop of speaker gates" in errors[0], errors
        time.sleep(1.0)
        assert _established(pa, pb) == 0
    assert describe_s < 2.5 and ms < 6000, (describe_s, ms)
    errs = [a["stderr"], b["stderr"]]
    assert sum(e.count("a loop of speaker gates") for e in errs) >= 1, errs


def test_a_client_that_leaves_ends_the_gates_question_to_the_stt(alice_voices, conversation):
    """Home Assistant gives up on a slow STT and closes the connection: the gate stops asking
    the STT on its behalf then, not at --stt-timeout."""
    audio = pcm16(clip(conversation, 0.9, 5.7))

    async def ask_then_leave(uri, deaf):
        async with AsyncClient.from_uri(uri, connect_timeout=10, read_timeout=60) as client:
            await client.write_event(Transcribe(language="xx").event())
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1,
                                                audio=audio).event())
            await client.write_event(AudioStop().event())
            for _ in range(300):  # until the gate has accepted her and asks the STT
                if _established(deaf, remote_only=True) == 1:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the gate never asked the STT")
        for k in range(100):  # gone: the gate's question must end too (its end of it)
            if _established(deaf, remote_only=True) == 0:
                return k * 0.1
            await asyncio.sleep(0.1)
        raise AssertionError("the gate still asks the STT 10 s after its client left")

    with deaf_port() as deaf, _gate_running(alice_voices, deaf, "--stt-timeout", "60") as gate:
        asyncio.run(ask_then_leave(gate["uri"], deaf))
        info = asyncio.run(_describe(gate["uri"]))  # and it serves on
        assert info.asr[0].models


def test_a_burst_of_describes_asks_the_stt_once(alice_voices):
    """Describes are answered from one question to the STT (concurrent ones wait for it, later
    ones reuse it): a burst of clients, or a loop of gates, never multiplies the questions."""
    stt = StandIn()
    with _gate_running(alice_voices, stt.port) as gate:
        async def burst():
            return await asyncio.gather(*(_describe(gate["uri"]) for _ in range(6)))

        infos = asyncio.run(burst()) + [asyncio.run(_describe(gate["uri"])) for _ in range(2)]
        assert all(i.asr[0].models[0].name == "stand-in" for i in infos)
        assert stt.describes == 1, stt.describes


# -- hostile clients ---------------------------------------------------------------------------
def _frame(etype, data=None, payload=b"", **header) -> bytes:
    """One Wyoming event as raw bytes (a header line, its data, its payload), to send what the
    wyoming client library would never produce."""
    head = {"type": etype, "version": "1.0.0", **header}
    body = b""
    if data is not None:
        body = json.dumps(data).encode()
        head.setdefault("data_length", len(body))
    if payload:
        head.setdefault("payload_length", len(payload))
    return json.dumps(head).encode() + b"\n" + body + payload


def _exchange(uri, frames, until=("transcript",), timeout=30.0):
    """Send raw frames on one connection; the events that come back until one of type ``until``
    (or the gate closes the connection: ``closed``)."""
    host, port = uri[len("tcp://"):].rsplit(":", 1)
    got, buf = [], b""
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        for f in frames:
            s.sendall(f)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n" in buf:
                line, rest = buf.split(b"\n", 1)
                head = json.loads(line)
                n = head.get("data_length") or 0
                if len(rest) < n:
                    break
                data = json.loads(rest[:n]) if n else head.get("data", {})
                buf = rest[n:]
                got.append((head["type"], data))
                if head["type"] in until:
                    return got, False
            else:
                d = s.recv(65536)
                if not d:
                    return got, True
                buf += d
                continue
            d = s.recv(65536)
            if not d:
                return got, True
            buf += d
    raise AssertionError(f"no {until} within {timeout} s: {got}")


FMT = {"rate": 16000, "width": 2, "channels": 1}


@pytest.mark.parametrize("start,why", [
    ({"width": 2, "channels": 1}, "'rate'"),
    ({"rate": "16000", "width": 2, "channels": 1}, "'rate'"),
    ({"rate": None, "width": 2, "channels": 1}, "'rate'"),
    ({"rate": 16000, "width": "2", "channels": 1}, "'width'"),
    ({"rate": 16000, "width": 2, "channels": 1.5}, "'channels'"),
])
def test_malformed_audio_start_is_a_protocol_error(gate, conversation, start, why):
    """Fields missing or of the wrong type: one error naming the field, no traceback, and the
    same connection serves the next request."""
    audio = pcm16(clip(conversation, 0.9, 5.7))
    got, closed = _exchange(gate["uri"], [
        _frame("audio-start", start), _frame("audio-chunk", FMT, b"\0\0" * 100),
        _frame("audio-stop", {}),
        _frame("transcribe", {"language": "xx"}), _frame("audio-start", FMT),
        _frame("audio-chunk", FMT, audio), _frame("audio-stop", {})])
    assert not closed, got
    errors = [d["text"] for t, d in got if t == "error"]
    assert len(errors) == 1 and "audio-start" in errors[0] and why in errors[0], errors
    assert got[-1][0] == "transcript" and got[-1][1]["text"].startswith("alice: heard")
    assert gate["proc"].poll() is None and "Traceback" not in gate_log(gate)


@pytest.mark.parametrize("chunk,why", [
    ({"width": 2, "channels": 1}, "'rate'"),
    ({"rate": 16000, "width": 2, "channels": [1]}, "'channels'"),
])
def test_malformed_audio_chunk_is_a_protocol_error(gate, chunk, why):
    got, closed = _exchange(gate["uri"], [
        _frame("audio-start", FMT), _frame("audio-chunk", chunk, b"\0\0" * 100),
        _frame("audio-stop", {}), _frame("describe")], until=("info",))
    assert not closed, got
    errors = [d["text"] for t, d in got if t == "error"]
    assert len(errors) == 1 and "audio-chunk" in errors[0] and why in errors[0], errors
    assert "Traceback" not in gate_log(gate)


@pytest.mark.parametrize("frame,why", [
    (b'{"data": {}}\n', "'type'"),
    (b'{"type": 5}\n', "'type'"),
    (b"hello\n", "not JSON"),
    # nested deeper than Python's recursion limit: json's RecursionError, an internal error
    (b"[" * 20000 + b"\n", "header is not JSON"),
    (b'{"type": "audio-start", "data_length": 20000}\n' + b"[" * 20000, "data is not JSON"),
    (b'{"type": "audio-chunk", "payload_length": "5"}\n', "payload_length '5'"),
    (b'{"type": "audio-chunk", "payload_length": -5}\n', "payload_length -5"),
    (b'{"type": "audio-start", "data_length": 2}\n[]', "not an object"),
    (b'{"type": "audio-start", "data": [1]}\n', "not an object"),
    (b'{"type": "audio-start", "data_length": 99999999999}\n', "more than"),
    (b'{"type": "audio-chunk", "payload_length": 99999999999}\n', "more than"),
])
def test_a_malformed_event_is_one_error_then_the_connection_closes(gate, conversation, frame,
                                                                   why):
    """A header the gate cannot read (or a length it will not buffer) is answered at once, not
    waited for: one error, the connection closed, the gate serving the next client."""
    t0 = time.monotonic()
    got, closed = _exchange(gate["uri"], [frame], until=())
    assert closed and time.monotonic() - t0 < 10
    assert [t for t, _ in got] == ["error"] and why in got[0][1]["text"], got
    assert request(gate["uri"], pcm16(clip(conversation, 0.9, 5.7)))[0].startswith("alice: ")
    assert gate["proc"].poll() is None and "Traceback" not in gate_log(gate)


def test_one_chunk_of_more_than_a_minute_is_refused_and_never_forwarded(gate, stt, conversation):
    """The 60 s bound holds for one large chunk as for many small ones: nothing verified or
    forwarded. A chunk that alone holds more is not even read (an error, the connection
    closed); one that crosses the bound is refused at audio-stop, the connection usable."""
    audio = pcm16(clip(conversation, 0.9, 5.7))
    n = len(stt.requests)
    head = _frame("audio-chunk", FMT, audio * 13)  # 62 s: answered before its payload comes
    got, closed = _exchange(gate["uri"], [
        _frame("audio-start", FMT), head[:head.index(b"}\n") + 2 + len(json.dumps(FMT))]],
        until=())
    assert closed and [t for t, _ in got] == ["error"], got
    assert "60 s of audio" in got[0][1]["text"]
    big = audio * 13
    got, closed = _exchange(gate["uri"], [  # 58 s, then one chunk of 4.8 s
        _frame("audio-start", FMT), _frame("audio-chunk", FMT, big[:58 * 32000]),
        _frame("audio-chunk", FMT, audio), _frame("audio-stop", {}), _frame("describe")],
        until=("info",))
    assert not closed and [t for t, _ in got] == ["error", "info"], got
    assert "more than 60 s of audio" in got[0][1]["text"]
    assert len(stt.requests) == n
    assert gate["proc"].poll() is None and "Traceback" not in gate_log(gate)


def test_name_is_matched_in_any_unicode_form(tmp_path, stt, alice_print, session, conversation):
    """``--name`` typed in decomposed form (what some keyboards and macOS file names give: 'e' +
    a combining accent) names the same voice as the store's composed one, as ``verify --name``
    does: the gate serves it instead of starting with no voice."""
    from rtverify.store.voiceprints import Voiceprint, VoiceprintStore

    store = tmp_path / "voices"
    VoiceprintStore(store).save(Voiceprint("jos\u00e9", session.model_id, alice_print, "2025",
                                           10.0, 2))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "--store", str(store), "wyoming",
                             "--uri", f"tcp://127.0.0.1:{port}", "--stt-uri", stt.uri,
                             "--tag-speaker", "--name", "jose\u0301"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        line = proc.stdout.readline()
        assert "serving" in line and "1 voice(s)" in line, proc.stderr.read()
        text, _, _ = request(f"tcp://127.0.0.1:{port}", pcm16(clip(conversation, 0.9, 5.7)))
        assert text.startswith("jos\u00e9: heard"), text
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("failing", ["too_long", "stop_before_start"])
def test_a_failed_request_does_not_pass_its_transcribe_settings_on(gate, stt, conversation,
                                                                  failing):
    """A request that ends in an error at audio-stop (more than 60 s of audio; an audio-stop
    with no audio-start) drops its ``transcribe`` (its language) with the rest of its state: the
    next request on the same connection, sending no ``transcribe``, reaches the STT without it."""
    audio = pcm16(clip(conversation, 0.9, 5.7))
    if failing == "too_long":
        big = audio * 13
        bad = [_frame("audio-start", FMT), _frame("audio-chunk", FMT, big[:58 * 32000]),
               _frame("audio-chunk", FMT, audio), _frame("audio-stop", {})]
    else:
        bad = [_frame("audio-stop", {})]
    n = len(stt.requests)
    got, closed = _exchange(gate["uri"], [
        _frame("transcribe", {"language": "xx"}), *bad,
        _frame("audio-start", FMT), _frame("audio-chunk", FMT, audio), _frame("audio-stop", {})])
    assert not closed and [t for t, _ in got] == ["error", "transcript"], got
    assert got[-1][1]["text"].startswith("alice: heard")
    assert len(stt.requests) == n + 1 and stt.requests[-1]["language"] is None
    assert gate["proc"].poll() is None and "Traceback" not in gate_log(gate)


def test_a_bug_is_one_error_event_logged_once_and_the_gate_serves_on(tmp_path, stt, alice_print,
                                                                    session, conversation):
    """An exception that is not an rtverify error (a bug) inside a request: the client gets one
    Wyoming error event and its connection closes, the gate logs it once with its traceback
    naming the connection, and the next connection is served (an in-process gate, so that its
    decision can be made to fail)."""
    import contextlib
    import logging

    from rtverify.core.scoring import DecisionPolicy, Scorer
    from rtverify.serve.wyoming import Gate, GateSettings, serve
    from rtverify.store import open_store
    from rtverify.store.gallery import Gallery
    from rtverify.store.voiceprints import Voiceprint

    store = open_store(str(tmp_path / "voices"))
    store.save(Voiceprint("alice", session.model_id, alice_print, "2025", 10.0, 2))
    gallery = Gallery(store, session.model_id, session.dim,
                      scorer=Scorer.for_model(session)).start()
    gate = Gate(session, gallery, DecisionPolicy(session.info.decision, None),
                GateSettings(stt_uri=stt.uri, tag_speaker=True), workers=1)
    decide, calls = gate.decide, []

    def buggy(decisions):  # the first request's decision meets a bug
        calls.append(1)
        if len(calls) == 1:
            return 1 / 0
        return decide(decisions)

    gate.decide = buggy
    records: list[logging.LogRecord] = []
    collect = logging.Handler(logging.DEBUG)
    collect.emit = records.append
    log = logging.getLogger("rtverify.serve.wyoming")
    log.addHandler(collect)
    port = free_port()
    uri = f"tcp://127.0.0.1:{port}"
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def main():
        with contextlib.suppress(asyncio.CancelledError):
            await serve(gate, uri, lambda server: ready.set())

    task = loop.create_task(main())
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        audio = pcm16(clip(conversation, 0.9, 5.7))
        got, closed = _exchange(uri, [_frame("transcribe", {"language": "xx"}),
                                      _frame("audio-start", FMT),
                                      _frame("audio-chunk", FMT, audio),
                                      _frame("audio-stop", {})], until=())
        assert closed and [t for t, _ in got] == ["error"], got
        assert got[0][1]["text"] == "internal error; see the gate's log", got
        assert got[0][1]["code"] == "rtverify"
        bugs = [r for r in records if "internal error" in r.getMessage()]
        assert len(bugs) == 1 and bugs[0].levelno == logging.ERROR, records
        assert bugs[0].getMessage().startswith("127.0.0.1:")
        assert bugs[0].exc_info and bugs[0].exc_info[0] is ZeroDivisionError
        text, _, _ = request(uri, audio)  # a second connection is served
        assert text.startswith("alice: heard"), text
        assert len([r for r in records if r.levelno >= logging.ERROR]) == 1, records
    finally:
        log.removeHandler(collect)
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()
        gallery.close()
        gate.executor.shutdown(wait=False)
