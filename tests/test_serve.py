"""``rtverify serve`` as a client sees it: real servers on loopback (a free port each), the shipped
model, the demo conversation. Every wait has a timeout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("starlette")
pytest.importorskip("websockets")

from serve_helpers import (DEMO, Server, WAIT_S, alice_store, cli, connect,  # noqa: E402
                           f32_bytes, receive_all, refusal, store_digest)

from rtverify.client import Client, ServerError  # noqa: E402
from rtverify.io.sources import FileSource  # noqa: E402

CHUNK = 1600  # 0.1 s at 16 kHz


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return alice_store(tmp_path_factory, "serve")


@pytest.fixture(scope="module")
def server(store):
    s = Server(store)
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def conversation16k() -> np.ndarray:
    return np.concatenate([c.samples for c in FileSource(DEMO / "conversation.flac")])


def stream(server, samples: np.ndarray, chunk: int = CHUNK, **params) -> list[dict]:
    with connect(server, format="f32", **params) as ws:
        for i in range(0, len(samples), chunk):
            ws.send(f32_bytes(samples[i:i + chunk]))
        ws.send(json.dumps({"type": "end"}))
        events = receive_all(ws)
        assert ws.close_code == 1000
    return events


def comparable(events: list[dict]) -> list[dict]:
    out = []
    for e in events:
        if e["event"] in ("ready",):
            continue
        e = dict(e)
        e.pop("decision_ms", None)
        out.append(e)
    return out


# -- the core promise -----------------------------------------------------------------------------
def test_socket_events_equal_listen_json(server, store, conversation16k):
    """The same audio over the socket and through `listen --input --realtime --json` (which,
    like the server, embeds each window as soon as it is complete) gives the same events, score
    for score; against `listen --input --json` (windows batched) the same decisions."""
    live = subprocess.Popen(
        [sys.executable, "-m", "rtverify", "--store", str(store), "listen", "--input",
         str(DEMO / "conversation.flac"), "--realtime", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    events = stream(server, conversation16k)
    fast = cli("listen", "--input", str(DEMO / "conversation.flac"), "--json", store=store)
    out, err = live.communicate(timeout=120)
    assert live.returncode == 0 and fast.returncode == 0, err + fast.stderr
    want = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "ready" and events[0]["voices"] == ["alice"]
    assert events[-1]["event"] == "summary"
    assert comparable(events) == comparable(want)
    decisions = [e for e in events if e["event"] == "decision"]
    batched = [json.loads(line) for line in fast.stdout.splitlines()]
    batched = [e for e in batched if e["event"] == "decision"]
    assert len(decisions) >= 4 and any(d["accepted"] for d in decisions) \
        and not all(d["accepted"] for d in decisions)
    key = ("start_s", "end_s", "speaker", "accepted", "reason", "n_windows")
    assert [[d[k] for k in key] for d in decisions] == [[d[k] for k in key] for d in batched]
    for a, b in zip(decisions, batched):
        assert abs(a["score"] - b["score"]) < 0.01


def test_chunk_size_rate_and_format_do_not_change_decisions(server, conversation16k):
    """s16 in odd-sized messages at 48 kHz stereo decides like f32 16 kHz mono in 0.1 s ones."""
    ref = [e for e in stream(server, conversation16k) if e["event"] == "decision"]
    from scipy.signal import resample_poly

    x48 = resample_poly(conversation16k, 3, 1).astype(np.float32)
    pcm = (np.clip(x48, -1, 1 - 1 / 32768) * 32768).astype("<i2")
    stereo = np.stack([pcm, pcm], axis=1).tobytes()
    frame = 4
    with connect(server, rate=48000, channels=2, format="s16") as ws:
        i = 0
        for size in [frame * 7, frame * 1111, frame * 4800, frame * 333] * 10000:
            if i >= len(stereo):
                break
            ws.send(stereo[i:i + size])
            i += size
        ws.send(json.dumps({"type": "end"}))
        got = [e for e in receive_all(ws) if e["event"] == "decision"]
    assert [(d["speaker"], d["accepted"]) for d in got] == [(d["speaker"], d["accepted"])
                                                          for d in ref]
    for a, b in zip(got, ref):
        assert abs(a["start_s"] - b["start_s"]) <= 0.06 and abs(a["score"] - b["score"]) < 0.05


def test_a_call_streamed_as_mulaw_decides_like_its_linear_pcm(server, conversation16k):
    """``format=ulaw&rate=8000``: what a telephone media stream sends, byte for byte; the same
    call as 8 kHz s16 (the samples mu-law's bytes stand for) decides the same."""
    import soundfile as sf
    from scipy.signal import resample_poly

    x8 = resample_poly(conversation16k, 1, 2).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x8, 8000, format="RAW", subtype="ULAW")
    ulaw = buf.getvalue()
    decoded, _ = sf.read(io.BytesIO(ulaw), format="RAW", subtype="ULAW", samplerate=8000,
                         channels=1, dtype="int16")
    runs = {}
    for fmt, data in (("ulaw", ulaw), ("s16", decoded.astype("<i2").tobytes())):
        step = 1600 * (1 if fmt == "ulaw" else 2)
        with connect(server, rate=8000, format=fmt) as ws:
            for i in range(0, len(data), step):
                ws.send(data[i:i + step])
            ws.send(json.dumps({"type": "end"}))
            runs[fmt] = [e for e in receive_all(ws) if e["event"] == "decision"]
            assert ws.close_code == 1000
    got, want = runs["ulaw"], runs["s16"]
    assert len(want) >= 4 and any(d["accepted"] for d in want)
    assert [(d["speaker"], d["accepted"], d["band"]) for d in got] == \
        [(d["speaker"], d["accepted"], d["band"]) for d in want]
    for a, b in zip(got, want):
        assert abs(a["score"] - b["score"]) < 1e-3


def test_name_and_threshold_parameters(server, conversation16k):
    events = stream(server, conversation16k[:16000 * 6], name="alice", threshold="0.99")
    ready, decisions = events[0], [e for e in events if e["event"] == "decision"]
    assert ready["voices"] == ["alice"] and ready["threshold"] == "0.99"
    assert decisions and all(d["threshold"] == 0.99 and not d["accepted"] for d in decisions)


def test_margin_parameter_moves_the_models_thresholds(server, conversation16k):
    """?margin= (listen --margin): the same utterances, each threshold raised by it; with
    ?threshold= too, or out of range, the stream is refused (1008); /v1/verify takes it too."""
    x = conversation16k[:16000 * 6]
    base = [e for e in stream(server, x, name="alice") if e["event"] == "decision"]
    events = stream(server, x, name="alice", margin="0.2")
    high = [e for e in events if e["event"] == "decision"]
    assert events[0]["threshold"].startswith("margin +0.2 on 0.")
    assert any(d["accepted"] for d in base) and not any(d["accepted"] for d in high)
    assert [d["threshold"] for d in high] == pytest.approx([d["threshold"] + 0.2 for d in base],
                                                           abs=2e-4)
    for params, says in (({"margin": "0.5"}, "between -0.2 and 0.2"),
                         ({"margin": "x"}, "not a number"),
                         ({"margin": "0.01", "threshold": "0.7"}, "give one")):
        with connect(server, format="f32", **params) as ws:
            error = receive_all(ws)[0]
            assert ws.close_code == 1008 and says in error["error"], (params, error)
    c = Client(server.url)
    plain = c.verify("alice", DEMO / "enroll_2.flac")
    raised = c.verify("alice", DEMO / "enroll_2.flac", margin=0.2)
    assert plain["accepted"] and not raised["accepted"]
    assert raised["threshold"] == pytest.approx(plain["threshold"] + 0.2, abs=2e-4)
    with pytest.raises(ServerError) as exc:
        c.verify("alice", DEMO / "enroll_2.flac", margin=0.5)
    assert exc.value.code == 400 and "margin" in str(exc.value)
    # a margin sent as a form field is refused with the query's options, ?margin= among them
    body = (b'--x\r\nContent-Disposition: form-data; name="margin"\r\n\r\n0.05\r\n--x--\r\n')
    status, answer = _post(f"{server.url}/v1/verify/alice", body,
                           "multipart/form-data; boundary=x")
    assert status == 400 and "unknown form field 'margin'" in answer["error"] and \
        "?margin=" in answer["error"], answer


# -- HTTP -----------------------------------------------------------------------------------------
def test_http_health_voices_enrol_verify_delete(server, store):
    c = Client(server.url)
    health = c.health()
    assert health["status"] == "ok" and health["model_id"].startswith("default-")
    assert [v["name"] for v in c.voices()] == ["alice"]
    made = c.enroll("carol", [DEMO / "enroll_1.flac"])
    assert made["event"] == "enroll" and made["name"] == "carol" and made["takes"] == 1
    assert made["speech_s"] > 3
    with pytest.raises(ServerError) as exc:
        c.enroll("carol", [DEMO / "enroll_1.flac"])
    assert exc.value.code == 409 and "already enrolled" in str(exc.value)
    before = store_digest(store)
    assert c.enroll("carol", [DEMO / "enroll_2.flac"], force=True)["replaced"] is True
    assert store_digest(store)["carol.json"] != before["carol.json"]
    # verify answers what `verify --json` answers
    got = c.verify("alice", DEMO / "enroll_2.flac")
    want = json.loads(cli("verify", "--name", "alice", "--input", str(DEMO / "enroll_2.flac"),
                          "--json", store=store).stdout)
    assert got.pop("input") == "enroll_2.flac"
    want.pop("input")
    assert got == want and got["accepted"] is True
    clip = DEMO / "conversation.flac"  # the first 5 s are alice; the rest others too
    assert "accepted" in c.verify("carol", clip)
    assert c.delete("carol") == {"event": "removed", "name": "carol"}
    with pytest.raises(ServerError) as exc:
        c.delete("carol")
    assert exc.value.code == 404 and "not enrolled" in str(exc.value)
    assert [v["name"] for v in c.voices()] == ["alice"]


def _stranger(tmp_path):
    """Another speaker's line (8770 in the demo's script), as a file named other.wav."""
    other = tmp_path / "other.wav"
    sf.write(other, sf.read(DEMO / "conversation.flac", dtype="float32")[0][
        int(6.5 * 16000):int(11.3 * 16000)], 16000)
    return other


def test_http_enrol_add_takes_to_a_voice(server, store, tmp_path):
    """``?add=true`` adds the uploads as takes to an enrolled voice, as ``enroll --add`` does;
    a take of someone else, add with force, or a voice not enrolled change nothing."""
    c = Client(server.url)
    made = c.enroll("frank", [DEMO / "enroll_1.flac"])
    try:
        assert made["added"] is False and made["total_takes"] == 1
        before = store_digest(store)
        cases = [(lambda: c.enroll("frank", [_stranger(tmp_path)], add=True), 400,
                  "other.wav: does not sound like 'frank'"),
                 (lambda: c.enroll("frank", [_stranger(tmp_path)], add=True), 400,
                  "add it with vouch=true"),
                 (lambda: c.enroll("frank", [_stranger(tmp_path)], vouch=True), 400,
                  "vouch=true goes with add=true"),
                 (lambda: c.enroll("frank", [DEMO / "enroll_2.flac"], add=True, force=True),
                  400, "not both"),
                 (lambda: c.enroll("nobody", [DEMO / "enroll_2.flac"], add=True), 404,
                  "'nobody' is not enrolled")]
        for call, status, words in cases:
            with pytest.raises(ServerError) as exc:
                call()
            assert exc.value.code == status and words in str(exc.value), (words, exc.value)
            assert str(tmp_path) not in str(exc.value) and "rtverify-serve" not in str(exc.value)
        assert store_digest(store) == before
        added = c.enroll("frank", [DEMO / "enroll_2.flac"], add=True)
        assert added["event"] == "enroll" and added["added"] is True
        assert added["replaced"] is False and added["takes"] == 1
        assert added["total_takes"] == 2 and added["created"] == made["created"]
        assert abs(added["total_speech_s"] - made["speech_s"] - added["speech_s"]) < 0.05
        listed = {v["name"]: v for v in c.voices()}["frank"]
        assert listed["n_takes"] == 2 and abs(listed["speech_s"] - added["total_speech_s"]) < 0.05
        assert store_digest(store)["frank.json"] != before["frank.json"]
        assert c.verify("frank", DEMO / "enroll_2.flac")["accepted"] is True
        # vouched for (the same person in another mood, says the caller): kept
        vouched = c.enroll("frank", [_stranger(tmp_path)], add=True, vouch=True)
        assert vouched["added"] is True and vouched["total_takes"] == 3
    finally:
        c.delete("frank")


def test_enrol_add_refuses_a_voice_changed_meanwhile(tmp_path):
    """The server reads the voice before the upload and saves the merge only if the stored voice
    is still the one it read: another enrolment in between is not silently overwritten (409)."""
    import dataclasses
    import types

    from rtverify.core.encoder import EncoderSession
    from rtverify.errors import StoreError
    from rtverify.serve.server import _enroll_job, _status_for
    from rtverify.serve.settings import ServeSettings
    from rtverify.store.voiceprints import VoiceprintStore

    root = tmp_path / "voices"
    assert cli("enroll", "--name", "gina", "--input", str(DEMO / "enroll_1.flac"),
               store=root).returncode == 0
    store = VoiceprintStore(root)
    old = store.load("gina")
    store.save(dataclasses.replace(old, created="2001-01-01T00:00:00Z"), force=True)  # meanwhile
    changed = store_digest(root)
    service = types.SimpleNamespace(settings=ServeSettings(), store=store)
    upload = [("take.flac", (DEMO / "enroll_2.flac").read_bytes())]
    with pytest.raises(StoreError) as exc:
        _enroll_job(service, EncoderSession(None, threads=1), "gina", upload, False, old)
    assert _status_for(exc.value) == 409 and "was changed" in str(exc.value)
    assert store_digest(root) == changed


def test_store_errors_reach_clients_without_server_paths(server, store):
    """Remote clients get the store's errors without the server's paths and in the API's words
    (force=true, not --force): a voice not enrolled, a damaged voice, and an enrolment that loses
    the race to another (the store refuses the second: 409)."""
    import http.client

    c = Client(server.url)
    root = str(store)

    def clean(text: str) -> None:
        assert root not in text and "voices/" not in text and ".json" not in text, text
        assert "--force" not in text and "rtverify enroll" not in text, text

    cases = [(lambda: c.delete("nobody"), 404, "'nobody' is not enrolled"),
             (lambda: c.verify("nobody", DEMO / "enroll_1.flac"), 404, "not enrolled"),
             (lambda: c.enroll("nobody", [DEMO / "enroll_1.flac"], add=True), 404,
              "not enrolled"),
             (lambda: c.verify("broken", DEMO / "enroll_1.flac"), 409,
              "voice 'broken': damaged voiceprint"),
             (lambda: c.enroll("broken", [DEMO / "enroll_1.flac"], add=True), 409,
              "damaged voiceprint"),
             (lambda: c.enroll("alice", [DEMO / "enroll_1.flac"]), 409, "force=true")]
    (store / "broken.json").write_text("{not json")
    try:
        for call, status, words in cases:
            with pytest.raises(ServerError) as exc:
                call()
            assert exc.value.code == status and words in str(exc.value), (words, exc.value)
            clean(str(exc.value))
        problem = {v["name"]: v for v in c.voices()}["broken"]["problem"]
        assert "damaged voiceprint" in problem
        clean(problem)
        with connect(server, name="nobody") as ws:
            error, code = refusal(ws)
        assert code == 1008 and "not enrolled" in error["error"]
        clean(error["error"])
        # an enrolment that passed the "already enrolled?" check, and meanwhile the voice came
        body = b"".join(
            b'--x\r\nContent-Disposition: form-data; name="audio"; filename="' + n.encode() +
            b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + (DEMO / n).read_bytes() +
            b"\r\n" for n in ("enroll_1.flac", "enroll_2.flac")) + b"--x--\r\n"
        conn = http.client.HTTPConnection(server.url[len("http://"):], timeout=WAIT_S)
        conn.putrequest("POST", "/v1/voices/hank")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:-100])
        time.sleep(1.0)  # the server has checked that hank is not enrolled, and waits
        (store / "hank.json").write_text("{}")
        conn.send(body[-100:])
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
        assert resp.status == 409 and "'hank' is already enrolled" in answer["error"], answer
        assert "force=true" in answer["error"]
        clean(answer["error"])
    finally:
        for name in ("broken", "hank"):
            (store / f"{name}.json").unlink(missing_ok=True)


def test_cli_enrolment_is_seen_by_the_running_server(server, store, conversation16k):
    r = cli("enroll", "--name", "dave", "--input", str(DEMO / "enroll_2.flac"), store=store)
    assert r.returncode == 0, r.stderr
    try:
        assert "dave" in [v["name"] for v in Client(server.url).voices()]
        events = stream(server, conversation16k[:16000 * 6], name="dave")
        assert events[0]["voices"] == ["dave"]
    finally:
        cli("voices", "remove", "dave", store=store)


# -- bad input over the socket --------------------------------------------------------------------
WAV = io.BytesIO()
sf.write(WAV, np.zeros(1600, np.float32), 16000, format="WAV")

SOCKET_CASES = {
    # name: (query parameters, messages to send, close code, words in the error)
    "wav file": ({}, [WAV.getvalue()], 1003, "like a WAV file"),
    "flac file": ({}, [(DEMO / "enroll_1.flac").read_bytes()[:8000]], 1003, "FLAC"),
    "odd byte count": ({}, [b"\x00\x01\x02"], 1003, "not a whole number"),
    "f32 nan": ({"format": "f32"}, [np.full(160, np.nan, "<f4").tobytes()], 1003, "NaN"),
    "f32 not audio": ({"format": "f32"}, [np.full(160, 1e6, "<f4").tobytes()], 1003,
                      "not audio"),
    "unknown format": ({"format": "u8"}, [], 1008, "unknown raw sample format"),
    "absurd rate": ({"rate": "1000000000"}, [], 1008, "not supported"),
    "rate not a number": ({"rate": "fast"}, [], 1008, "not a whole number"),
    "zero channels": ({"channels": "0"}, [], 1008, "channel count"),
    "threshold": ({"threshold": "7"}, [], 1008, "between -1 and 1"),
    "unknown voice": ({"name": "nobody"}, [], 1008, "not enrolled"),
    "bad voice name": ({"name": "../etc"}, [], 1008, "name"),
    "unknown model": ({"model": "other"}, [], 1008, "not loaded"),
    "unknown parameter": ({"rat": "16000"}, [], 1008, "unknown query parameter"),
    "text garbage": ({}, ["hello"], 1003, "unknown text message"),
    "wrong text json": ({}, ['{"type": "stop"}'], 1003, "unknown text message"),
    "too big": ({}, [b"\x00" * (70000)], 1009, "max_message_bytes"),
    "flood": ({}, [b"\x00\x00"] * 3000, 1008, "messages per second"),
}


@pytest.fixture(scope="module")
def strict(store):
    s = Server(store, "--max-message-bytes", "65536", "--idle-timeout-s", "2",
               "--max-stream-s", "3", "--max-streams", "6", "--max-messages-per-s", "50",
               "--max-upload-bytes", "1000000", "--max-concurrent-uploads", "1")
    yield s
    assert s.stop() == 0


def _good_stream(server, samples, result: list) -> None:
    """A well-behaved stream paced at 10x real time, beside the bad ones."""
    with connect(server, format="f32") as ws:
        for i in range(0, len(samples), CHUNK):
            ws.send(f32_bytes(samples[i:i + CHUNK]))
            time.sleep(0.01)
        ws.send(json.dumps({"type": "end"}))
        result.extend(receive_all(ws))
        result.append(ws.close_code)


def test_bad_socket_input_is_refused_without_disturbing_others(server, strict, store,
                                                               conversation16k):
    before = store_digest(store)
    ref = [e for e in stream(server, conversation16k) if e["event"] == "decision"]
    good: list = []
    # the good stream runs on the default server (its message rate is a live client's)
    t = threading.Thread(target=_good_stream, args=(server, conversation16k, good))
    t.start()
    try:
        for name, (params, messages, code, words) in SOCKET_CASES.items():
            target = strict if name in ("too big", "flood") else server
            with connect(target, **params) as ws:
                error, got = refusal(ws, *messages)
            assert got == code, name
            assert error is not None and words in error["error"], (name, error)
            assert "\n" not in error["error"] and "Traceback" not in error["error"]
    finally:
        t.join(WAIT_S * 4)
    assert good[-1] == 1000
    decisions = [e for e in good[:-1] if isinstance(e, dict) and e["event"] == "decision"]
    assert [(d["start_s"], d["speaker"], d["score"]) for d in decisions] == \
        [(d["start_s"], d["speaker"], d["score"]) for d in ref]
    assert store_digest(store) == before
    assert Client(server.url).health()["status"] == "ok"


def test_limits_idle_length_and_streams(strict, conversation16k):
    with connect(strict) as ws:  # idle: nothing sent for 2 s
        t0 = time.monotonic()
        error, code = refusal(ws)
        assert code == 1008 and "idle_timeout_s" in error["error"]
        assert time.monotonic() - t0 < 10
    with connect(strict, format="f32") as ws:  # longer than 3 s of audio
        error, code = refusal(ws, *[f32_bytes(conversation16k[i:i + 16000])
                                    for i in range(0, 16000 * 5, 16000)])
        assert code == 1008 and "max_stream_s" in error["error"]
    with contextlib.ExitStack() as stack:
        for _ in range(6):
            ws = stack.enter_context(connect(strict))
            assert json.loads(ws.recv(timeout=WAIT_S))["event"] == "ready"
        with connect(strict) as ws:
            error, code = refusal(ws)
            assert code == 1013 and "max_streams" in error["error"]


def _streams_left(url: str) -> int:
    """The server's open streams once they are gone (or after WAIT_S: how many are left)."""
    deadline = time.monotonic() + WAIT_S
    while Client(url).health()["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return Client(url).health()["streams"]


def test_dropped_connections_cost_nothing(server, conversation16k):
    """Clients that vanish mid-stream (mid-utterance) leave no stream behind."""
    import socket

    for i in range(30):
        with connect(server, format="f32") as ws:
            ws.recv(timeout=WAIT_S)
            ws.send(f32_bytes(conversation16k[16000:16000 * 3]))
            if i % 2:
                ws.socket.shutdown(socket.SHUT_RDWR)  # no close handshake at all
    assert _streams_left(server.url) == 0
    assert [e["speaker"] for e in stream(server, conversation16k[:16000 * 6])
            if e["event"] == "decision"] == ["alice", "alice"]


def test_deeply_nested_json_is_refused_not_left_hanging(server):
    """A text message of nested brackets makes json.loads raise RecursionError, not ValueError:
    it killed the stream's reader, and the stream hung with its max_streams slot held for ever,
    even after the client left."""
    with connect(server) as ws:
        assert json.loads(ws.recv(timeout=WAIT_S))["event"] == "ready"
        error, code = refusal(ws, "[" * 100000 + "]" * 100000, timeout=10)
    assert code == 1003 and "unknown text message" in error["error"], error
    assert _streams_left(server.url) == 0


def test_max_streams_holds_for_streams_opened_at_once(store):
    """max_streams was checked before the stream's voices were loaded and its worker set up, and
    counted it only after: 320 connections opened at once all got a stream past a cap of 256."""
    import asyncio

    import websockets

    s = Server(store, "--max-streams", "3", "--workers", "1")

    async def opening(answered: list, everyone: asyncio.Event, n: int):
        async with websockets.connect(f"{s.ws}/v1/listen", open_timeout=WAIT_S,
                                      max_size=None) as ws:
            answered.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)))
            if len(answered) == n:
                everyone.set()
            await asyncio.wait_for(everyone.wait(), WAIT_S)  # all still open until all answered

    async def burst(n: int) -> list:
        answered, everyone = [], asyncio.Event()
        await asyncio.gather(*[opening(answered, everyone, n) for _ in range(n)])
        return answered

    try:
        answers = asyncio.run(burst(30))
        assert len(answers) == 30
        refused = [a for a in answers if a["event"] == "error"]
        assert len(answers) - len(refused) == 3, [a["event"] for a in answers]
        assert all(a["code"] == 1013 and "max_streams" in a["error"] for a in refused)
        assert _streams_left(s.url) == 0
    finally:
        assert s.stop() == 0


def _raw_websocket(url: str, path: str, buffer_bytes: int):
    """A WebSocket opened by hand on a socket with small buffers (so that it can stop reading);
    returns it and a function framing one binary message as a client must (masked)."""
    import base64
    import socket
    import struct

    host, port = url[len("http://"):].rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
    sock.settimeout(WAIT_S)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                 f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head

    def binary(payload: bytes) -> bytes:
        mask = os.urandom(4)
        masked = (np.frombuffer(payload, np.uint8)
                  ^ np.resize(np.frombuffer(mask, np.uint8), len(payload))).tobytes()
        return struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload)) + mask + masked

    return sock, binary


def test_a_client_that_never_reads_is_dropped(store, conversation16k):
    """A client that streams audio but reads none of the events: once the socket's buffers were
    full, the server waited to send for ever, stopped reading (back-pressure), and its idle
    timeout never fired; the stream and its connection were held until the client went away.
    Now what is not taken within idle_timeout_s drops the connection."""
    import socket

    s = Server(store, "--idle-timeout-s", "2", "--workers", "1", sndbuf=4096)
    try:
        sock, binary = _raw_websocket(s.url, "/v1/listen?status=true", 4096)
        pcm = (np.clip(conversation16k, -1, 1) * 32767).astype("<i2").tobytes()
        sock.settimeout(2)
        sent_s = 0.0
        with contextlib.suppress(socket.timeout, OSError):  # until the server stops reading
            while sent_s < 3600:  # 10 status events a second: ample to fill the buffers
                sock.sendall(binary(pcm))
                sent_s += len(conversation16k) / 16000
        # from here the client reads nothing and sends nothing: the server must let it go
        sock.settimeout(0.5)
        dropped, deadline = False, time.monotonic() + WAIT_S
        while not dropped and time.monotonic() < deadline:
            try:
                sock.send(binary(b"\x00\x00"))  # refused by a reset connection
                time.sleep(0.2)
            except (ConnectionResetError, BrokenPipeError):
                dropped = True
            except (socket.timeout, BlockingIOError):
                pass
        sock.close()
        assert dropped, f"still connected after {WAIT_S} s (sent {sent_s:.0f} s of audio)"
        assert _streams_left(s.url) == 0
        assert Client(s.url).verify("alice", DEMO / "enroll_2.flac")["accepted"] is True
    finally:
        assert s.stop() == 0
    assert "Traceback" not in s.stderr, s.stderr


# -- bad input over HTTP --------------------------------------------------------------------------
def _post(url: str, body: bytes, ctype: str, method: str = "POST") -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=WAIT_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_bad_http_input(server, strict, store, tmp_path):
    before = store_digest(store)
    c = Client(server.url)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wav file" * 10)
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000 * 5, np.float32), 16000)
    other = tmp_path / "other.wav"  # another speaker (8770 in the demo's script)
    sf.write(other, sf.read(DEMO / "conversation.flac", dtype="float32")[0][
        int(6.5 * 16000):int(11.3 * 16000)], 16000)
    cases = [
        (lambda: c.enroll("eve", [junk]), 400, "junk.wav: not a readable audio file"),
        (lambda: c.enroll("eve", [silence]), 422, "no speech"),
        (lambda: c.verify("alice", junk), 400, "junk.wav"),
        (lambda: c.verify("alice", silence), 422, "speech"),
        (lambda: c.verify("nobody", DEMO / "enroll_1.flac"), 404, "not enrolled"),
        (lambda: c.enroll(".hidden", [DEMO / "enroll_1.flac"]), 400, "voice name"),
        (lambda: c.enroll("a..b", [DEMO / "enroll_1.flac"]), 400, "voice name"),
        (lambda: c.enroll("alice", [DEMO / "enroll_1.flac"]), 409, "already enrolled"),
        (lambda: c.enroll("eve", [DEMO / "enroll_1.flac", other]), 400,
         "do not sound like the same speaker"),
        (lambda: c._request("POST", "/v1/verify/alice", query={"threshold": "x"},
                            files=[c._file(DEMO / "enroll_1.flac")]), 400, "threshold"),
    ]
    for call, status, words in cases:
        with pytest.raises(ServerError) as exc:
            call()
        assert exc.value.code == status and words in str(exc.value), (words, exc.value)
        assert str(tmp_path) not in str(exc.value) and "/tmp/rtverify-serve" not in str(exc.value)
    # a body over max_upload_bytes is refused from its headers, before it is read
    import http.client

    conn = http.client.HTTPConnection(strict.url[len("http://"):], timeout=WAIT_S)
    conn.putrequest("POST", "/v1/voices/eve")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", "2000000")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "max_upload_bytes" in json.loads(resp.read())["error"]
    conn.close()
    status, body = _post(server.url + "/v1/verify/alice", b"hello", "text/plain")
    assert status == 415 and "multipart" in body["error"]
    status, body = _post(server.url + "/v1/verify/alice", b"--x--\r\n",
                         "multipart/form-data; boundary=x")
    assert status == 400 and "audio" in body["error"]
    assert store_digest(store) == before


def test_hours_of_audio_in_a_small_upload_are_refused_by_length(server, store, tmp_path):
    """A few kilobytes of FLAC can hold hours of silence: decoded whole (16 kHz float32) they
    would take gigabytes and minutes of a worker. Uploads are refused past max_upload_s of audio
    (413), before they are decoded whole."""
    before = store_digest(store)
    bomb = tmp_path / "quiet.flac"
    with sf.SoundFile(bomb, "w", 16000, 1, format="FLAC", subtype="PCM_16") as fh:
        for _ in range(15):  # 15 minutes of digital silence: about 40 kB
            fh.write(np.zeros(16000 * 60, np.int16))
    assert bomb.stat().st_size < 100_000
    c = Client(server.url)
    for call in (lambda: c.enroll("eve", [DEMO / "enroll_1.flac", bomb]),
                 lambda: c.verify("alice", bomb)):
        t0 = time.monotonic()
        with pytest.raises(ServerError) as exc:
            call()
        assert exc.value.code == 413, exc.value
        assert "quiet.flac" in str(exc.value) and "max_upload_s" in str(exc.value)
        assert time.monotonic() - t0 < 10
    assert store_digest(store) == before
    assert c.verify("alice", DEMO / "enroll_2.flac")["accepted"]


def test_connections_that_send_no_request_are_closed(strict, conversation16k):
    """Connections that never send a whole request (half-open, or a request head dripped a byte
    at a time) are closed after request_timeout_s, so they cannot hold the server's connection
    slots: max_streams + 64 of them used to answer every HTTP request 503 until they went."""
    import socket

    host, port = strict.url[len("http://"):].rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=WAIT_S) for _ in range(80)]
    drip = socket.create_connection((host, int(port)), timeout=WAIT_S)
    try:
        with connect(strict, format="f32") as ws:  # a stream open past the timeout lives on
            assert json.loads(ws.recv(timeout=WAIT_S))["event"] == "ready"
            t0 = time.monotonic()
            while time.monotonic() - t0 < 12:  # default request_timeout_s: 10 s
                ws.send(f32_bytes(conversation16k[:1600]))
                with contextlib.suppress(OSError):  # once closed by the server
                    drip.send(b"G")
                time.sleep(0.5)
            for s in idle + [drip]:
                assert s.recv(100) == b""  # closed by the server
            ws.send(json.dumps({"type": "end"}))
            assert receive_all(ws)[-1]["event"] == "summary" and ws.close_code == 1000
        assert Client(strict.url).health()["status"] == "ok"
    finally:
        for s in idle + [drip]:
            s.close()

def _verify_request(path) -> tuple[bytes, bytes]:
    """The head and the multipart body of ``POST /v1/verify/alice`` with the recording at
    ``path``, for tests that send them by hand (slowly)."""
    data = path.read_bytes()
    body = (b'--x\r\nContent-Disposition: form-data; name="audio"; filename="a.flac"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--x--\r\n")
    head = (b"POST /v1/verify/alice HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    return head, body


def _send_until_answered(sock, pieces, every_s: float = 0.2) -> tuple[bytes, float]:
    """Send ``pieces`` one each ``every_s`` until the server answers (or closes), then read the
    whole answer; returns it and the seconds it took."""
    import contextlib
    import socket

    t0, answer = time.monotonic(), b""
    with contextlib.suppress(OSError):  # once closed by the server
        for piece in pieces:
            sock.sendall(piece)
            sock.settimeout(every_s)
            with contextlib.suppress(socket.timeout):
                answer = sock.recv(65536)
                break
    sock.settimeout(WAIT_S)
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - t0



def test_a_dripped_body_is_answered_408_and_a_slow_honest_one_is_not(store):
    """A body sent a few bytes a second after a quick head used to hold its upload slot (and
    connection) for ever: it must come at min_body_bytes_per_s on average once
    request_timeout_s has passed (2000 bytes/s after 1 s here), or it is answered 408 (JSON)
    and closed, and the slot is free again. An upload slower than request_timeout_s but
    above that rate is answered as usual."""
    import http.client
    import socket

    head, body = _verify_request(DEMO / "enroll_2.flac")
    s = Server(store, "-v", "--request-timeout-s", "1", "--min-body-bytes-per-s", "2000",
               "--max-concurrent-uploads", "1")
    try:
        host, port = s.url[len("http://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as drip:
            drip.sendall(head + body[:100])
            # 5 bytes/s for up to 20 s
            answer, elapsed = _send_until_answered(drip, [body[i:i + 1] for i in range(100, 200)])
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert "min_body_bytes_per_s" in error, error
        assert 0.9 < elapsed < 4, elapsed
        # its slot is free, and an upload at 20 kB/s (over 3 s, three times
        # request_timeout_s) is answered
        conn = http.client.HTTPConnection(s.url[len("http://"):], timeout=WAIT_S)
        t0 = time.monotonic()
        conn.putrequest("POST", "/v1/verify/alice")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        for i in range(0, len(body), 4000):
            conn.send(body[i:i + 4000])
            time.sleep(0.2)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert json.loads(resp.read())["accepted"] is True
        assert time.monotonic() - t0 > 3
        conn.close()
        assert Client(s.url).health()["status"] == "ok"
    finally:
        assert s.stop() == 0
    assert "slower than 2000 bytes/s (min_body_bytes_per_s); answered 408" in s.stderr, s.stderr
    assert "Traceback" not in s.stderr


def test_a_steady_body_longer_than_max_body_s_is_answered_408(store):
    """A body that keeps min_body_bytes_per_s could still take as long as its size allows: an
    upload at the 32 MiB cap sent at exactly 8192 bytes/s held its upload slot for over an hour.
    Whatever its rate, a body must be whole within max_body_s of its head (2 s here), or it is
    answered 408 (JSON, naming the setting) and closed, and its slot is free again. Sent at about
    20 kB/s (well above the minimum rate, whose first check is only due after the default 10 s
    request_timeout_s), the 484 kB body would take some 24 s."""
    import socket

    head, body = _verify_request(DEMO / "conversation.flac")
    s = Server(store, "-v", "--max-body-s", "2", "--max-concurrent-uploads", "1")
    try:
        host, port = s.url[len("http://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as steady:
            steady.sendall(head)
            # 4000 bytes each 0.2 s: about 20 kB/s
            answer, elapsed = _send_until_answered(
                steady, [body[i:i + 4000] for i in range(0, len(body), 4000)])
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert "max_body_s" in error, error
        assert 1.9 < elapsed < 8, elapsed
        # its slot is free again: a quick upload is answered
        assert Client(s.url).verify("alice", DEMO / "enroll_2.flac")["accepted"] is True
    finally:
        assert s.stop() == 0
    assert "not whole within 2 s (max_body_s); answered 408" in s.stderr, s.stderr
    assert "Traceback" not in s.stderr


def test_a_full_server_answers_503_as_json(strict):
    """With max_streams + 64 connections open, a request gets 503 with the JSON error body every
    other error has (uvicorn's own answer was the plain text 'Service Unavailable')."""
    import socket
    import urllib.error
    import urllib.request

    host, port = strict.url[len("http://"):].rsplit(":", 1)
    held = [socket.create_connection((host, int(port)), timeout=WAIT_S) for _ in range(70)]
    try:
        time.sleep(0.5)  # every one accepted by the server
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(strict.url + "/v1/health", timeout=WAIT_S)
        assert exc.value.code == 503
        assert exc.value.headers["Content-Type"] == "application/json"
        assert "server busy" in json.loads(exc.value.read())["error"]
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            assert Client(strict.url).health()["status"] == "ok"
            break
        except ServerError:
            time.sleep(0.1)
    assert Client(strict.url).health()["status"] == "ok"


def test_concurrent_uploads_are_capped(strict, store):
    """Uploads are held in memory whole: beyond max_concurrent_uploads at once (1 here) one more
    is answered 503 (JSON), and a slot comes back when its upload is answered or its client goes
    away mid-body. Without the cap, hundreds of 32 MiB uploads at once took gigabytes."""
    import http.client

    before = store_digest(store)
    data = (DEMO / "enroll_2.flac").read_bytes()
    body = (b'--x\r\nContent-Disposition: form-data; name="audio"; filename="a.flac"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--x--\r\n")

    def start() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(strict.url[len("http://"):], timeout=WAIT_S)
        conn.putrequest("POST", "/v1/verify/alice")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:1000])
        time.sleep(0.5)  # the server holds a slot while it waits for the rest
        return conn

    c = Client(strict.url)
    conn = start()
    with pytest.raises(ServerError) as exc:
        c.verify("alice", DEMO / "enroll_2.flac")
    assert exc.value.code == 503 and "max_concurrent_uploads" in str(exc.value)
    assert c.health()["status"] == "ok"
    conn.send(body[1000:])
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["accepted"] is True
    conn.close()
    assert c.verify("alice", DEMO / "enroll_2.flac")["accepted"] is True
    start().close()  # gone mid-body: its slot comes back
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            assert c.verify("alice", DEMO / "enroll_2.flac")["accepted"] is True
            break
        except ServerError as err:
            assert err.code == 503 and time.monotonic() < deadline, err
            time.sleep(0.2)
    assert "Traceback" not in strict.stderr
    assert store_digest(store) == before


def test_unknown_http_parameters_and_fields_are_refused(server, store):
    """A misspelt option (``?treshold=0.95``) or an option sent as a form field (``-F
    threshold=0.95``) is refused, as /v1/listen refuses an unknown parameter: ignored, the
    request ran with the default threshold and said nothing."""
    before = store_digest(store)
    c = Client(server.url)
    recording = c._file(DEMO / "enroll_2.flac")
    for method, path, query in [("POST", "/v1/verify/alice", {"treshold": "0.95"}),
                                ("POST", "/v1/voices/eve", {"forse": "true"}),
                                ("GET", "/v1/voices", {"name": "alice"}),
                                ("DELETE", "/v1/voices/alice", {"force": "true"}),
                                ("GET", "/v1/health", {"verbose": "1"})]:
        with pytest.raises(ServerError) as exc:
            c._request(method, path, query=query,
                       files=[recording] if method == "POST" else None)
        assert exc.value.code == 400, (path, exc.value)
        assert "unknown query parameter" in str(exc.value) and \
            repr(next(iter(query))) in str(exc.value), (path, exc.value)
    body = (b"--x\r\nContent-Disposition: form-data; name=\"threshold\"\r\n\r\n0.95\r\n"
            b"--x\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.flac\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + recording[1] + b"\r\n--x--\r\n")
    status, answer = _post(server.url + "/v1/verify/alice", body,
                           "multipart/form-data; boundary=x")
    assert status == 400 and "form field 'threshold'" in answer["error"], answer
    assert "?threshold=" in answer["error"]
    assert store_digest(store) == before
    assert c.verify("alice", DEMO / "enroll_2.flac", threshold=0.5)["threshold"] == 0.5


@pytest.mark.parametrize("flag", ["force", "add", "vouch"])
def test_a_flag_without_a_value_is_refused_not_read_as_false(server, store, flag):
    """``POST /v1/voices/alice?force`` (a flag written as on a command line) was read as
    ``force=false``: the sender meant the opposite. It is a 400 saying how to write it, and the
    store is untouched."""
    before = store_digest(store)
    c = Client(server.url)
    recording = c._file(DEMO / "enroll_2.flac")
    with pytest.raises(ServerError) as exc:
        c._request("POST", "/v1/voices/alice", query={flag: ""}, files=[recording])
    assert exc.value.code == 400 and f"?{flag}=true" in str(exc.value), exc.value
    assert store_digest(store) == before


def test_names_with_path_characters_are_refused_by_name(server, store):
    """A name with a slash (sent encoded, as the client does), or none at all, is a bad voice
    name (400 saying why), not 'no such endpoint' (404) or a bare redirect (307)."""
    before = store_digest(store)
    c = Client(server.url)
    cases = [(lambda: c.enroll("a/b", [DEMO / "enroll_1.flac"]), "must not contain /"),
             (lambda: c.enroll("../alice", [DEMO / "enroll_1.flac"]), "must not contain /"),
             (lambda: c.enroll("", [DEMO / "enroll_1.flac"]), "voice name is empty"),
             (lambda: c.verify("x/../alice", DEMO / "enroll_1.flac"), "must not contain /"),
             (lambda: c.delete("alice/"), "must not contain /"),
             (lambda: c.delete(""), "voice name is empty")]
    for call, words in cases:
        with pytest.raises(ServerError) as exc:
            call()
        assert exc.value.code == 400 and words in str(exc.value), (words, exc.value)
    assert store_digest(store) == before


# -- exposure -------------------------------------------------------------------------------------
def test_token_required_and_checked(store, tmp_path, conversation16k):
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789\n")
    s = Server(store, "--token-file", str(token))
    try:
        with pytest.raises(ServerError) as exc:
            Client(s.url).health()
        assert exc.value.code == 401
        with pytest.raises(ServerError) as exc:
            Client(s.url, token="wrong-token-0123456789").voices()
        assert exc.value.code == 401
        assert Client(s.url, token="s3cret-token-0123456789").health()["status"] == "ok"
        with connect(s) as ws:
            error, code = refusal(ws)
        assert code == 1008 and "token" in error["error"]
        with connect(s, headers={"Authorization": "Bearer nope"}) as ws:
            assert refusal(ws)[1] == 1008
        events = list(Client(s.ws, token="s3cret-token-0123456789").listen(
            conversation16k[:16000 * 6].reshape(-1, 1600), format="f32"))
        assert events[-1]["event"] == "summary" and events[-1]["decisions"] == 2
    finally:
        assert s.stop() == 0


def test_non_loopback_needs_a_token(store, tmp_path):
    r = cli("serve", "--host", "0.0.0.0", "--port", "0", store=store, timeout=30)
    assert r.returncode == 2 and "requires --token-file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    short = tmp_path / "short"
    short.write_text("abc")
    r = cli("serve", "--token-file", str(short), "--port", "0", store=store, timeout=30)
    assert r.returncode == 2 and "at least 16" in r.stderr


def test_port_in_use_is_one_line(server, store):
    port = server.url.rsplit(":", 1)[1]
    r = cli("serve", "--port", port, store=store, timeout=30)
    assert r.returncode == 2 and "cannot listen there" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_sigterm_gives_open_streams_their_summary(store, conversation16k):
    s = Server(store)
    try:
        with connect(s, format="f32") as ws:
            assert json.loads(ws.recv(timeout=WAIT_S))["event"] == "ready"
            ws.send(f32_bytes(conversation16k[:int(16000 * 2.5)]))  # alice talks at 2.5 s
            time.sleep(0.5)
            s.proc.send_signal(signal.SIGTERM)
            events = receive_all(ws)
            assert ws.close_code == 1001
    finally:
        code = s.stop()
    assert code == 0
    assert events[-1]["event"] == "summary" and events[-1]["interrupted"] is True
    decisions = [e for e in events if e["event"] == "decision"]
    assert decisions and decisions[-1]["end_reason"] == "end_of_stream"
    assert events[-1]["decisions"] == len(decisions)
    assert "stopped: 1 stream(s)" in s.stderr


def _workers_of(pid: int) -> list[int]:
    from pathlib import Path

    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()]


def test_a_dying_worker_fails_only_its_streams(store, conversation16k):
    """SIGKILL every worker process: the open stream is closed 1011 with an error, the server
    stays up, starts new workers, and the next stream decides as before."""
    s = Server(store, "--workers", "2")
    try:
        with connect(s, format="f32") as ws:
            assert json.loads(ws.recv(timeout=WAIT_S))["event"] == "ready"
            ws.send(f32_bytes(conversation16k[:16000]))
            workers = _workers_of(s.proc.pid)
            assert len(workers) == 2
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
            error, code = refusal(ws, *[f32_bytes(conversation16k[i:i + CHUNK])
                                        for i in range(16000, 16000 * 3, CHUNK)])
        assert code == 1011 and "internal error" in error["error"]
        deadline = time.monotonic() + WAIT_S
        while Client(s.url).health()["workers"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Client(s.url).health()["workers"] == 2
        assert not set(_workers_of(s.proc.pid)) & set(workers)
        events = stream(s, conversation16k[:16000 * 6])
        assert [e["speaker"] for e in events if e["event"] == "decision"] == ["alice", "alice"]
    finally:
        assert s.stop() == 0
    assert "starting a new one" in s.stderr


def test_thread_workers_decide_alike(server, store, conversation16k):
    s = Server(store, "--worker-kind", "thread")
    try:
        got = comparable(stream(s, conversation16k))
    finally:
        assert s.stop() == 0
    assert got == comparable(stream(server, conversation16k))


def test_second_model_by_id(store, conversation16k, tmp_path):
    """--model twice: streams choose with ?model=ID. A voice enrolled now holds both models'
    embeddings and is scored under either; a voiceprint from before (its own model only) is
    refused with the CLI's words, not scored."""
    from rtverify.core.encoder import MODELS_DIR, load_model_info

    fp32 = MODELS_DIR / "default-short-fp32.onnx"
    other = load_model_info(fp32).model_id
    old = tmp_path / "old"
    old.mkdir(mode=0o700)
    doc = json.loads((store / "alice.json").read_text())
    assert other in doc.pop("models")
    (old / "alice.json").write_text(json.dumps(doc))
    (old / "alice.json").chmod(0o600)
    for where, usable in ((store, True), (old, False)):
        s = Server(where, "--model", str(MODELS_DIR / "default.onnx"), "--model", str(fp32))
        try:
            assert Client(s.url).health()["models"][1] == other
            if usable:
                events = stream(s, conversation16k[:16000 * 6], model=other, name="alice")
                assert events[0]["model_id"] == other
                assert any(e["event"] == "decision" and e["accepted"] for e in events)
            else:
                with connect(s, model=other) as ws:
                    error, code = refusal(ws)
                assert code == 1008 and "no usable voice" in error["error"]
                with connect(s, model=other, name="alice") as ws:
                    error, code = refusal(ws)
                assert code == 1008 and "enrolled with model" in error["error"]
            assert stream(s, conversation16k[:16000 * 6])[0]["model_id"] != other
        finally:
            assert s.stop() == 0
