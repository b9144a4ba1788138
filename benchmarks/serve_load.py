"""Load on ``rtverify serve``: concurrent real-time streams, dropped connections, HTTP verify.

    .venv/bin/python -m benchmarks.serve_load                  # everything (~5 min)
    .venv/bin/python -m benchmarks.serve_load --streams 1,50,100 --skip-drops --skip-verify
    .venv/bin/python -m benchmarks.serve_load --out benchmarks/results/serve_load.json

The server is the real CLI (``python -m rtverify serve --port 0``) in a child process, so its RSS
and threads are read from /proc; the load comes from this process (one asyncio loop, the
``websockets`` client) on the same machine, so it competes with the server for the cores.

1. **Streams paced in real time.** For each N, N clients send the demo conversation (28.5 s, 6
   utterances) as s16 at 16 kHz in 100 ms messages, each message sent when its audio would have
   been recorded; their starts are spread uniformly over the conversation's length (``--spread-s``;
   0 starts them all at once, so that all their utterances end together: the worst burst). The
   decision lag of an utterance is the wall time its
   decision arrives minus the moment the stream passed the utterance's end (start + ``end_s``).
   Reported: p50/p95 lag, the p95 lag minus the one-stream p95 measured in the same run, the
   worst send slip (how late the client managed to send a message: the server reads with
   back-pressure, so audio it cannot take in time shows up here, never as a gap), and whether
   every stream got all its decisions and a summary covering all its audio. The target holds at N
   when nothing is lost and p95 <= one-stream p95 + 100 ms; the knee is the largest N tried where
   it holds, per core.
   CPU and RSS are the server's and its worker processes' together.
2. **Dropped connections.** 1000 connections each send 1.5 s of speech (so an utterance is open)
   and vanish, half with a close handshake and half by resetting the TCP connection. Server RSS
   and threads (server and workers) are read after the first 100 (warm) and after all 1000; ``/v1/health`` must then
   show no stream and as many asyncio tasks as before.
3. **HTTP verify** of a 5 s recording (``enroll_1.flac``, 4.96 s) on a warm server: 100 requests
   one after another, p50/p95 of the round trip, next to the same verification computed in this
   process (no HTTP) as the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "rtverify" / "demo"
SR = 16000
CHUNK_S = 0.1
TARGET_EXTRA_LAG_S = 0.100


def _p(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when ``pid`` is None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of the server and its worker processes."""
    return _cpu_s(pid) + sum(_cpu_s(c) for c in _children(pid))


def _tree_rss_mb(pid: int) -> float:
    return _rss_mb(pid) + sum(_rss_mb(c) for c in _children(pid))


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class ServerProcess:
    def __init__(self, store: Path, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "rtverify", "--store", str(store),
                                      "serve", "--port", "0", *args],
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()
        deadline = time.monotonic() + 60
        while not any("serving on" in line for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("server did not start: " + "".join(self.lines))
            time.sleep(0.05)
        line = next(line for line in self.lines if "serving on" in line)
        hostport = line.split("http://", 1)[1].split(" ", 1)[0]
        self.http, self.ws = f"http://{hostport}", f"ws://{hostport}"

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def _health(http: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(http + "/v1/health", timeout=30) as r:
        return json.loads(r.read())


# -- 1. real-time streams ---------------------------------------------------------------------
async def _one_stream(ws_url: str, pcm: bytes, start_at: float, result: dict) -> None:
    from websockets.asyncio.client import connect

    step = int(SR * CHUNK_S) * 2
    loop = asyncio.get_running_loop()
    delay = start_at - 2.0 - loop.time()  # connect shortly before the stream's first audio
    if delay > 0:
        await asyncio.sleep(delay)
    async with connect(ws_url + "/v1/listen?rate=16000&format=s16", max_size=None,
                       compression=None, open_timeout=60, ping_interval=None) as ws:
        ready = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert ready["event"] == "ready", ready
        delay = start_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = loop.time()  # stream time 0; message k is due at t0 + (k + 1) * CHUNK_S
        result["t0"] = t0
        lags, slips = [], []

        async def receive():
            async for message in ws:
                event = json.loads(message)
                if event["event"] == "decision":
                    lags.append(loop.time() - (t0 + event["end_s"]))
                elif event["event"] == "summary":
                    result["summary"] = event
                elif event["event"] == "error":
                    result["error"] = event["error"]

        receiver = asyncio.create_task(receive())
        for k, i in enumerate(range(0, len(pcm), step)):
            due = t0 + (k + 1) * CHUNK_S
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await ws.send(pcm[i:i + step])
            slips.append(loop.time() - due)
        await ws.send(json.dumps({"type": "end"}))
        await asyncio.wait_for(receiver, 120)
        result["lags"], result["slips"] = lags, slips


async def _streams(ws_url: str, pcm: bytes, n: int, spread_s: float) -> list[dict]:
    loop = asyncio.get_running_loop()
    start = loop.time() + 2.0 + n * 0.01
    results = [{} for _ in range(n)]
    rng = np.random.default_rng(n)
    await asyncio.gather(*[_one_stream(ws_url, pcm, start + float(rng.uniform(0, spread_s)),
                                       r) for r in results], return_exceptions=False)
    return results


def run_streams(server: ServerProcess, levels: list[int], pcm: bytes, audio_s: float,
                expect_decisions: int, spread_s: float) -> list[dict]:
    rows = []
    base_p95 = None
    for n in levels:
        cpu0, mine0, wall0 = _tree_cpu_s(server.proc.pid), _cpu_s(), time.monotonic()
        results = asyncio.run(_streams(server.ws, pcm, n, spread_s))
        wall = time.monotonic() - wall0
        server_cores = (_tree_cpu_s(server.proc.pid) - cpu0) / wall
        client_cores = (_cpu_s() - mine0) / wall
        lags = [lag for r in results for lag in r.get("lags", [])]
        slips = [s for r in results for s in r.get("slips", [])]
        complete = sum(1 for r in results if "summary" in r and "error" not in r
                       and len(r["lags"]) == expect_decisions
                       and abs(r["summary"]["stream_s"] - audio_s) < 0.05)
        p95 = _p(lags, 95)
        if base_p95 is None:
            base_p95 = p95
        row = {"streams": n, "complete": complete, "decisions": len(lags),
               "lag_p50_ms": round(_p(lags, 50) * 1000, 1), "lag_p95_ms": round(p95 * 1000, 1),
               "lag_max_ms": round(max(lags) * 1000, 1) if lags else None,
               "p95_over_one_stream_ms": round((p95 - base_p95) * 1000, 1),
               "send_slip_max_ms": round(max(slips) * 1000, 1) if slips else None,
               "server_rss_mb": round(_tree_rss_mb(server.proc.pid), 1),
               "server_cores_used": round(server_cores, 3),
               "client_cores_used": round(client_cores, 3),
               "load_avg_1min": round(os.getloadavg()[0], 2)}
        row["ok"] = bool(complete == n and p95 - base_p95 <= TARGET_EXTRA_LAG_S)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# -- 2. dropped connections -------------------------------------------------------------------
async def _drop_one(ws_url: str, pcm: bytes, abrupt: bool) -> None:
    from websockets.asyncio.client import connect

    ws = await connect(ws_url + "/v1/listen?rate=16000&format=s16", max_size=None,
                       compression=None, open_timeout=60, ping_interval=None)
    await asyncio.wait_for(ws.recv(), 60)
    step = int(SR * CHUNK_S) * 2
    for i in range(0, len(pcm), step):
        await ws.send(pcm[i:i + step])
    if abrupt:
        ws.transport.abort()  # TCP reset, no close handshake
    else:
        await ws.close()


async def _drops(ws_url: str, pcm: bytes, n: int, parallel: int = 20) -> None:
    for i in range(0, n, parallel):
        await asyncio.gather(*[_drop_one(ws_url, pcm, abrupt=(i + j) % 2 == 1)
                               for j in range(min(parallel, n - i))])


def run_drops(server: ServerProcess, pcm_speech: bytes, n: int) -> dict:
    pid = server.proc.pid
    asyncio.run(_drops(server.ws, pcm_speech, 100))
    time.sleep(1.0)
    def threads() -> int:
        return _threads(pid) + sum(_threads(c) for c in _children(pid))

    warm = {"rss_mb": _tree_rss_mb(pid), "threads": threads(), "health": _health(server.http)}
    asyncio.run(_drops(server.ws, pcm_speech, n - 100))
    deadline = time.monotonic() + 30
    while _health(server.http)["streams"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    end = {"rss_mb": _tree_rss_mb(pid), "threads": threads(), "health": _health(server.http)}
    row = {"connections": n, "rss_after_100_mb": round(warm["rss_mb"], 1),
           "rss_after_all_mb": round(end["rss_mb"], 1),
           "rss_growth_mb": round(end["rss_mb"] - warm["rss_mb"], 1),
           "threads_after_100": warm["threads"], "threads_after_all": end["threads"],
           "tasks_after_100": warm["health"]["tasks"], "tasks_after_all": end["health"]["tasks"],
           "open_streams_after": end["health"]["streams"]}
    row["ok"] = bool(row["rss_growth_mb"] < 10 and row["threads_after_all"] <=
                     row["threads_after_100"] and row["tasks_after_all"] <= row["tasks_after_100"]
                     and row["open_streams_after"] == 0)
    print(json.dumps(row), flush=True)
    return row


# -- 3. HTTP verify ---------------------------------------------------------------------------
def run_verify(server: ServerProcess, store: Path, reps: int) -> dict:
    from rtverify.client import Client
    from rtverify.core.encoder import EncoderSession
    from rtverify.serve.server import verify_file
    from rtverify.store.voiceprints import VoiceprintStore

    path = DEMO / "enroll_1.flac"
    c = Client(server.http)
    for _ in range(10):
        c.verify("alice", path)
    http_ms = []
    for _ in range(reps):
        t = time.perf_counter()
        got = c.verify("alice", path)
        http_ms.append((time.perf_counter() - t) * 1000)
    session, vs = EncoderSession(threads=1), VoiceprintStore(store)
    for _ in range(5):
        verify_file(session, vs, "alice", str(path), "ref")
    local_ms = []
    for _ in range(reps):
        t = time.perf_counter()
        verify_file(session, vs, "alice", str(path), "ref")
        local_ms.append((time.perf_counter() - t) * 1000)
    row = {"recording_s": 4.955, "requests": reps, "accepted": got["accepted"],
           "http_p50_ms": round(_p(http_ms, 50), 1), "http_p95_ms": round(_p(http_ms, 95), 1),
           "in_process_p50_ms": round(_p(local_ms, 50), 1),
           "in_process_p95_ms": round(_p(local_ms, 95), 1)}
    row["http_over_in_process"] = round(row["http_p95_ms"] / row["in_process_p95_ms"], 2)
    row["ok"] = bool(row["http_p95_ms"] <= 50)
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="1,25,50,100,150,200",
                    help="concurrent stream counts to try (the first is the reference; 1)")
    ap.add_argument("--spread-s", type=float, default=None,
                    help="stream starts spread uniformly over this many seconds (default: the "
                    "conversation's length, so utterance ends are not synchronised; 0: all at "
                    "once, the worst burst)")
    ap.add_argument("--drops", type=int, default=1000)
    ap.add_argument("--verify-reps", type=int, default=100)
    ap.add_argument("--skip-streams", action="store_true")
    ap.add_argument("--skip-drops", action="store_true")
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    from rtverify.io.sources import FileSource

    x = np.concatenate([c.samples for c in FileSource(DEMO / "conversation.flac")])
    pcm = (np.clip(x, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "voices"
        r = subprocess.run([sys.executable, "-m", "rtverify", "--store", str(store), "enroll",
                            "--name", "alice", "--input", str(DEMO / "enroll_1.flac"),
                            str(DEMO / "enroll_2.flac")], capture_output=True, text=True)
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return 1
        results: dict = {"cores": cores, "load_avg_at_start": os.getloadavg()}
        server = ServerProcess(store, "--max-streams", "1000")
        try:
            if not args.skip_streams:
                levels = [int(v) for v in args.streams.split(",")]
                # one stream first (also warms the server): the decisions every stream must get
                probe = asyncio.run(_streams(server.ws, pcm, 1, 0.0))[0]
                expect = len(probe["lags"])
                spread = len(x) / SR if args.spread_s is None else args.spread_s
                results["spread_s"] = spread
                rows = run_streams(server, levels, pcm, len(x) / SR, expect, spread)
                results["streams"] = rows
                first_bad = next((row["streams"] for row in rows if not row["ok"]), None)
                # the knee: the largest count before the first that fails (a later level that
                # passes again, on a machine whose other load varies, does not move it)
                knee = max((row["streams"] for row in rows if row["ok"]
                            and (first_bad is None or row["streams"] < first_bad)), default=0)
                results["knee_streams"] = knee
                results["knee_streams_per_core"] = knee / cores
                results["first_failing_streams"] = first_bad
            if not args.skip_drops:
                speech = pcm[int(1.1 * SR) * 2:int(2.6 * SR) * 2]  # alice mid-utterance
                results["drops"] = run_drops(server, speech, args.drops)
            if not args.skip_verify:
                results["verify"] = run_verify(server, store, args.verify_reps)
        finally:
            results["server_exit"] = server.stop()
    results["load_avg_at_end"] = os.getloadavg()
    print(json.dumps({k: v for k, v in results.items() if k not in ("streams",)}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
