"""``rtverify.client`` and ``rtverify listen --server`` against a real server on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from rtverify.client import Client, ServerError, _base_urls, _pcm_bytes
from rtverify.io.sources import FileSource

from serve_helpers import DEMO, Server, alice_store, cli  # noqa: E402


def test_addresses():
    assert _base_urls("ws://h:1") == ("http://h:1", "ws://h:1")
    assert _base_urls("wss://h/rt/v1/listen") == ("https://h/rt", "wss://h/rt")
    assert _base_urls("h:8765") == ("http://h:8765", "ws://h:8765")
    with pytest.raises(Exception, match="expected ws://"):
        _base_urls("ftp://h")


def test_pcm_conversion():
    x = np.array([0.0, 0.5, -1.0, 1.0, 2.0], np.float32)
    s16 = np.frombuffer(_pcm_bytes(x, "s16"), "<i2")
    assert s16.tolist() == [0, 16384, -32768, 32767, 32767]
    s32 = np.frombuffer(_pcm_bytes(x[:3], "s32"), "<i4")
    assert s32.tolist() == [0, 2 ** 30, -2 ** 31]
    assert np.frombuffer(_pcm_bytes(x, "f32"), "<f4").tolist() == x.tolist()
    ints = np.array([1, -2, 3], np.int16)
    assert np.frombuffer(_pcm_bytes(ints, "s16"), "<i2").tolist() == [1, -2, 3]
    assert _pcm_bytes(b"\x01\x02", "s16") == b"\x01\x02"
    # G.711 (format=ulaw|alaw) goes as the telephone bytes themselves; samples are refused
    # rather than sent as 32-bit integers the server would read as four mu-law bytes each
    assert _pcm_bytes(b"\xff\x7f", "ulaw") == b"\xff\x7f"
    with pytest.raises(Exception, match="send the G.711 bytes"):
        _pcm_bytes(x, "ulaw")


def test_cli_parser_does_not_import_the_server():
    code = ("import sys; from rtverify.cli.entry import build_parser; build_parser(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'websockets', 'numpy', "
            "'rtverify.client', 'rtverify.serve.server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("starlette")
    store = alice_store(tmp_path_factory, "client")
    s = Server(store)
    yield s, store
    assert s.stop() == 0


def test_listen_server_decides_like_listen(served, tmp_path):
    server, store = served
    remote = cli("listen", "--server", server.ws, "--input", str(DEMO / "conversation.flac"),
                 "--json", store=tmp_path / "empty-store")  # the server's store decides
    local = cli("listen", "--input", str(DEMO / "conversation.flac"), "--json", store=store)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    got = [json.loads(line) for line in remote.stdout.splitlines()]
    want = [json.loads(line) for line in local.stdout.splitlines()]
    assert got[0]["event"] == "ready" and got[-1]["event"] == "summary"
    d_got = [e for e in got if e["event"] == "decision"]
    d_want = [e for e in want if e["event"] == "decision"]
    key = ("start_s", "end_s", "speaker", "accepted", "reason")
    assert [[d[k] for k in key] for d in d_got] == [[d[k] for k in key] for d in d_want]
    assert all(abs(a["score"] - b["score"]) < 0.01 for a, b in zip(d_got, d_want))
    assert got[-1]["accepted"] == want[-1]["accepted"] >= 1
    # plain lines without --json
    text = cli("listen", "--server", server.ws, "--input", str(DEMO / "conversation.flac"),
               store=store)
    assert text.returncode == 0 and "alice" in text.stdout and "decisions:" in text.stdout


def test_listen_server_passes_its_margin_to_the_server(served, tmp_path):
    """``listen --server URL --margin X`` decides as ``listen --margin X`` does here."""
    server, store = served
    runs = [cli("listen", *where, "--input", str(DEMO / "conversation.flac"), "--json",
                "--margin", "0.2", store=s)
            for where, s in (((), store), (("--server", server.ws), tmp_path / "empty"))]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    local, remote = ([e for e in map(json.loads, r.stdout.splitlines())
                      if e["event"] == "decision"] for r in runs)
    assert local and not any(d["accepted"] for d in local + remote)
    assert [d["threshold"] for d in remote] == pytest.approx([d["threshold"] for d in local],
                                                             abs=2e-4)


def test_listen_server_raw_stdin(served):
    server, store = served
    import soundfile as sf

    x, rate = sf.read(DEMO / "conversation.flac", dtype="int16")
    r = subprocess.run(
        [sys.executable, "-m", "rtverify", "listen", "--server", server.ws, "--input", "-",
         "--rate", str(rate), "--json"], input=x[: rate * 6].tobytes(), capture_output=True,
        timeout=120)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [e["speaker"] for e in events if e["event"] == "decision"] == ["alice", "alice"]


def test_listen_server_errors_are_one_line(served, tmp_path):
    server, store = served
    r = cli("listen", "--server", server.ws, "--input", str(DEMO / "conversation.flac"),
            "--name", "nobody", store=store)
    assert r.returncode == 2 and "not enrolled" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("listen", "--server", "ws://127.0.0.1:9", "--input",
            str(DEMO / "conversation.flac"), store=store)
    assert r.returncode == 2 and "cannot reach the server" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_client_calls(served):
    server, _ = served
    from rtverify import client

    c = Client(server.ws)
    assert c.health()["status"] == "ok"
    assert client.verify(server.url, "alice", DEMO / "enroll_1.flac")["accepted"] is True
    x = np.concatenate([ch.samples for ch in FileSource(DEMO / "conversation.flac")])[:16000 * 6]
    events = list(client.listen(server.ws, (x[i:i + 480] for i in range(0, len(x), 480)),
                                format="s16"))
    assert [e["speaker"] for e in events if e["event"] == "decision"] == ["alice", "alice"]
    with pytest.raises(ServerError) as exc:
        list(c.listen([x], format="f32", names=["nobody"]))
    assert exc.value.code == 1008 and "not enrolled" in str(exc.value)


def test_integer_samples_are_scaled_to_the_format(served):
    """int16 / int32 arrays (what soundfile reads with dtype='int16') are full-scale integers:
    converted to another format they keep their loudness. They used to be cast as numbers: as
    f32 the server refused them (values up to 32767 are not audio), as s32 they arrived 96 dB
    too quiet and nothing was heard, and int32 as s16 wrapped around."""
    server, _ = served
    import soundfile as sf

    x16, rate = sf.read(DEMO / "conversation.flac", dtype="int16")
    x16 = x16[:rate * 6]
    x32 = x16.astype(np.int32) << 16
    assert np.frombuffer(_pcm_bytes(x16, "f32"), "<f4").tolist() == (x16 / 32768).tolist()
    assert np.frombuffer(_pcm_bytes(x16, "s32"), "<i4").tolist() == x32.tolist()
    assert np.frombuffer(_pcm_bytes(x32, "s16"), "<i2").tolist() == x16.tolist()
    c = Client(server.ws)
    for samples in (x16, x32):
        for fmt in ("s16", "s32", "f32"):
            events = list(c.listen((samples[i:i + 1600] for i in range(0, len(samples), 1600)),
                                   rate=rate, format=fmt))
            assert [e["speaker"] for e in events if e["event"] == "decision"] == \
                ["alice", "alice"], (samples.dtype, fmt)


@pytest.mark.parametrize("audio_s", [1, 600])
def test_listen_gives_up_on_a_server_that_never_answers(audio_s):
    """A server that accepts the stream, says ready and then answers nothing: listen raises
    ServerError naming timeout_s, whether the end of the stream was sent (1 s of audio) or the
    server stopped reading while it was being sent (600 s sent at once). It used to wait for
    ever: after 'ready' the receives had no timeout."""
    from websockets.sync.server import serve

    release = threading.Event()

    def handler(ws):
        ws.send(json.dumps({"event": "ready"}))
        release.wait(60)  # never reads, never answers

    with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        chunk = np.zeros(16000, np.float32)
        outcome: list = []

        def run():
            try:
                outcome.append(list(Client(f"ws://127.0.0.1:{port}", timeout_s=1.0).listen(
                    (chunk for _ in range(audio_s)), format="f32")))
            except Exception as err:
                outcome.append(err)

        t0 = time.monotonic()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(30)
        elapsed = time.monotonic() - t0
        release.set()
        server.shutdown()
    assert not t.is_alive(), "listen hung on a server that never answers"
    err = outcome[0]
    assert isinstance(err, ServerError) and "within 1 s (timeout_s)" in str(err), err
    assert "\n" not in str(err) and elapsed < 10


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("after_s", [0.0, 0.3, 1.1])  # in and between the client's 1 s waits
def test_listen_server_ends_at_a_signal_while_stdin_is_silent(served, sig, after_s):
    """`listen --server --input -` with stdin open and silent (a pipe nobody writes yet):
    Ctrl-C or SIGTERM ends the stream at once, with the server's summary and exit 0, as local
    `listen` does. It used to wait, for ever, for audio to end the stream after."""
    import os
    import signal

    server, _ = served
    r_fd, w_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtverify", "listen", "--server", server.ws, "--input", "-",
         "--json"], stdin=r_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r_fd)
    try:
        first = proc.stdout.readline()  # the server's ready: the stream is open
        assert json.loads(first)["event"] == "ready", first
        time.sleep(after_s)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=15)
    finally:
        os.close(w_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert events and events[-1]["event"] == "summary", out
    assert b"Traceback" not in err


def test_listen_interrupted_before_ready_ends_the_stream(served):
    """`interrupt` set before the server's ``ready`` (a Ctrl-C or SIGTERM while connecting),
    with a source that gives no audio yet: the stream ends at once with the summary. It used
    to start the sender and wait, for ever, for a chunk to end the stream after."""
    server, _ = served
    released = threading.Event()

    def silent():
        released.wait(30.0)
        return
        yield b""

    interrupt = threading.Event()
    interrupt.set()
    got: list[str] = []

    def run() -> None:
        for event in Client(server.url, timeout_s=10).listen(silent(), interrupt=interrupt):
            got.append(event["event"])

    t = threading.Thread(target=run, daemon=True)
    try:
        t.start()
        t.join(8.0)
        alive = t.is_alive()
    finally:
        released.set()
        t.join(15.0)
    assert not alive, got
    assert got and got[0] == "ready" and got[-1] == "summary", got


def test_listen_takes_one_name_as_a_string(served):
    """Client.listen(names="alice") listens for alice; it used to ask for the voices 'a', 'l',
    'i', 'c', 'e' (the string iterated) and fail with "voice 'a' is not enrolled"."""
    server, _ = served
    chunks = [np.zeros(1600, np.float32)] * 5
    events = list(Client(server.url, timeout_s=20).listen(chunks, names="alice"))
    assert events[0]["event"] == "ready" and events[0]["voices"] == ["alice"], events[0]
    assert events[-1]["event"] == "summary", events[-1]


def _fake_ws_server(messages):
    """A WebSocket server that answers every stream with ``messages`` (text frames), then
    closes: what a proxy, another service on the port or a hostile server might send."""
    from websockets.sync.server import serve

    def handler(ws):
        for m in messages:
            ws.send(m)
        try:
            while True:
                ws.recv(timeout=0.5)
        except Exception:
            pass

    server = serve(handler, "127.0.0.1", 0, max_size=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


_NOT_RTVERIFY = [
    pytest.param(["<html>502 Bad Gateway</html>"], "is not JSON", id="html"),
    pytest.param(["[" * 100_000 + "]" * 100_000], "is not JSON", id="nested"),
    pytest.param(['[1, 2, 3]'], "not a JSON object", id="list"),
    pytest.param(['{"speaker": "alice"}'], "without its name", id="no-name"),
    pytest.param(['{"event": 7}'], "without its name", id="name-not-text"),
    pytest.param(['{"event": "error", "error": "bad \\ud800"}'], "lone surrogate",
                 id="lone-surrogate"),  # printing it was a UnicodeEncodeError, exit 4
    pytest.param(['{"event": "decision", "speaker": "a\\u0000b"}'], "a NUL", id="nul"),
]


@pytest.mark.parametrize("messages, says", _NOT_RTVERIFY)
def test_listen_refuses_what_is_not_an_rtverify_event_in_one_line(messages, says):
    """A server whose events are not rtverify's: Client.listen raises ServerError naming the
    fault, and ``listen --server`` says it in one line, exit 2 (it was an 'internal error:
    JSONDecodeError', AttributeError or RecursionError, as if rtverify had a bug)."""
    server = _fake_ws_server(messages)
    try:
        port = server.socket.getsockname()[1]
        with pytest.raises(ServerError) as exc:
            list(Client(f"ws://127.0.0.1:{port}", timeout_s=5.0).listen(
                [np.zeros(16000, np.float32)], format="f32"))
        assert says in str(exc.value) and "\n" not in str(exc.value)
        r = cli("listen", "--server", f"ws://127.0.0.1:{port}", "--input",
                str(DEMO / "conversation.flac"), store=DEMO / "no-store")
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and says in r.stderr and "internal" not in r.stderr
    finally:
        server.shutdown()


@pytest.mark.parametrize("event", [
    {"event": "decision", "speaker": "alice"},                      # fields missing
    {"event": "decision", "speaker": None, "best": "bob", "start_s": "soon", "end_s": 1,
     "score": 0.9, "reason": "below_threshold"},                    # a field of another type
    {"event": "summary", "decisions": 1},
])
def test_listen_server_names_an_event_it_cannot_print(event):
    """``listen --server`` without --json prints decisions and the summary: one whose fields
    are missing or of another type is a one-line error naming the event, not a KeyError."""
    server = _fake_ws_server([json.dumps({"event": "ready"}), json.dumps(event)])
    try:
        port = server.socket.getsockname()[1]
        r = cli("listen", "--server", f"ws://127.0.0.1:{port}", "--input",
                str(DEMO / "conversation.flac"), store=DEMO / "no-store")
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and f"'{event['event']}' event is not" in r.stderr
    finally:
        server.shutdown()


@pytest.mark.parametrize("odd", ["a\0b", "\ud800"])
def test_listen_server_hooks_and_json_refuse_text_no_rtverify_server_sends(odd):
    """A decision whose speaker holds a NUL ended listen --server --on-accept with 'internal
    error: ValueError: embedded null byte' (the hook's environment), one with a lone surrogate
    (valid JSON) with a UnicodeEncodeError writing --json; both exit 4, as if rtverify had a bug."""
    decision = {"event": "decision", "start_s": 0.0, "end_s": 1.0, "speech_s": 1.0,
                "speaker": odd, "best": odd, "score": 0.9, "accepted": True,
                "threshold": 0.8, "margin": 0.1, "reason": "accepted"}
    server = _fake_ws_server([json.dumps({"event": "ready"}), json.dumps(decision)])
    try:
        port = server.socket.getsockname()[1]
        r = cli("listen", "--server", f"ws://127.0.0.1:{port}", "--input",
                str(DEMO / "conversation.flac"), "--json", "--on-accept", "true",
                store=DEMO / "no-store")
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "is this an rtverify server" in r.stderr
    finally:
        server.shutdown()


def test_http_answers_that_are_not_rtverify_are_one_line_errors():
    """The HTTP calls against a server answering HTML, a JSON list, or an error body that is
    not rtverify's: ServerError in one line, never a JSONDecodeError or a TypeError."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = {"/html": (200, b"<html>hello</html>"), "/list": (200, b"[1]"),
              "/deep": (200, b"[" * 100_000),
              "/err": (500, json.dumps({"error": {"nested": "x\ny"}}).encode())}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            for prefix, (code, body) in bodies.items():
                if self.path.startswith(prefix):
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        for prefix, says in [("/html", "not JSON"), ("/list", "not a JSON object"),
                             ("/deep", "not JSON"), ("/err", "HTTP 500")]:
            with pytest.raises(ServerError) as exc:
                Client(f"http://127.0.0.1:{port}{prefix}").health()
            assert says in str(exc.value) and "\n" not in str(exc.value), (prefix, exc.value)
    finally:
        httpd.shutdown()
