"""Long run: stream an hour (or more) of real recorded speech with pauses through
``rtverify listen --input FILE --json`` as fast as it goes; sample the process's resident memory
over time and check that every utterance got a decision.

    python -m benchmarks.long_run                   # >= 60 min from ../shared/data
    python -m benchmarks.long_run --minutes 5       # a shorter one
    python -m benchmarks.long_run --demo --minutes 3   # from the bundled demo recordings only

The recording is built deterministically (seeded) and cached in ``benchmarks/cache/long_run/``
(git-ignored): LibriSpeech utterances (``librispeech-clean100-251spk``, one per speaker, sorted)
and, after every second one, a sequence of three Arabic Speech Commands keywords of one speaker,
each such *unit* followed by a pause of 1.5-4 s, over a -65 dBFS white-noise bed, written as
16 kHz 16-bit WAV a unit at a time (never whole in memory). A JSON sidecar lists each unit's
start and end.

Figures (printed, and written with ``--json``):

* resident memory (VmRSS from ``/proc/PID/status``, sampled every 0.25 s, placed on the stream
  time of the latest event): at one minute of stream time, its maximum after that, at the end;
  *growth after the first minute* = maximum after it - value at it (target < 10 MB);
* units: how many got at least one decision overlapping them (target: all), decisions lying
  wholly in a pause, ``speech_start`` events without their ``decision``/``dropped``;
* wall time and the real-time factor (stream seconds per wall second) on this machine.

Nothing here is imported by the runtime or needs anything beyond it (no psutil).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
CACHE = Path(__file__).resolve().parent / "cache" / "long_run"
SR = 16000
RECIPE = {"version": 1, "seed": 7, "pause_s": [1.5, 4.0], "noise_dbfs": -65.0,
          "arabic_every": 2, "arabic_clips": 3}
GROWTH_TARGET_MB = 10.0


# -- the recording --------------------------------------------------------------------------------
def _read16k(path: Path) -> np.ndarray:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SR:
        raise ValueError(f"{path}: {rate} Hz, expected {SR}")
    return x.mean(axis=1)


def shared_units(data: Path) -> Iterator[tuple[str, np.ndarray]]:
    """LibriSpeech utterances, with an Arabic keyword sequence after every second one (cycling
    through the corpora when they run out)."""
    libri = sorted((data / "librispeech-clean100-251spk").glob("*/*.flac"))
    arabic_root = data / "arabic-speech-commands"
    speakers = sorted(p for p in arabic_root.iterdir() if p.is_dir()) if arabic_root.is_dir() else []
    if not libri:
        raise FileNotFoundError(f"{data}: no librispeech-clean100-251spk/*/*.flac")
    k = 0
    while True:
        for i, path in enumerate(libri):
            yield str(path.relative_to(data)), _read16k(path)
            if speakers and i % RECIPE["arabic_every"] == RECIPE["arabic_every"] - 1:
                spk = speakers[k % len(speakers)]
                clips = sorted(spk.glob("*.flac"))
                start = (k // len(speakers) * RECIPE["arabic_clips"]) % max(1, len(clips))
                pick = clips[start:start + RECIPE["arabic_clips"]]
                k += 1
                yield (f"arabic {spk.name}: " + ", ".join(p.stem for p in pick),
                       np.concatenate([_read16k(p) for p in pick]))


def demo_units() -> Iterator[tuple[str, np.ndarray]]:
    """The bundled demo's five script lines and two enrolment takes, cycled at varying gains."""
    demo = REPO / "rtverify" / "demo"
    meta = json.loads((demo / "conversation.json").read_text())
    conv = _read16k(demo / meta["conversation"])
    pieces = [(f"conversation {ln['speaker']} {ln['start_s']}",
               conv[int(ln["start_s"] * SR):int(ln["end_s"] * SR)]) for ln in meta["script"]]
    pieces += [(name, _read16k(demo / name)) for name in meta["enroll"]]
    gains = [1.0, 0.6, 1.4, 0.8]
    k = 0
    while True:
        for name, x in pieces:
            g = gains[k % len(gains)]
            k += 1
            yield f"{name} x{g}", (x * g).astype(np.float32)


def build(units: Iterator[tuple[str, np.ndarray]], minutes: float, out: Path) -> dict:
    """Write units and pauses until ``minutes`` of audio; return (and save beside ``out``) the
    schedule ``{"duration_s", "units": [{"name", "start_s", "end_s"}]}``."""
    rng = np.random.default_rng(RECIPE["seed"])
    noise = 10 ** (RECIPE["noise_dbfs"] / 20)
    lo, hi = RECIPE["pause_s"]
    schedule, n = [], 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part.wav")
    with sf.SoundFile(tmp, "w", SR, 1, subtype="PCM_16") as f:
        def write(x: np.ndarray) -> None:
            nonlocal n
            y = x + rng.normal(0.0, noise, len(x)).astype(np.float32)
            f.write(np.clip(y, -1.0, 1.0))
            n += len(x)

        write(np.zeros(int(hi * SR), np.float32))
        for name, x in units:
            schedule.append({"name": name, "start_s": n / SR, "end_s": (n + len(x)) / SR})
            write(x)
            write(np.zeros(int(rng.uniform(lo, hi) * SR), np.float32))
            if n >= minutes * 60 * SR:
                break
    tmp.replace(out)
    meta = {"recipe": RECIPE, "duration_s": n / SR, "units": schedule}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=0))
    return meta


def cached_recording(minutes: float, demo: bool, data: Path = DATA, cache: Path = CACHE
                     ) -> tuple[Path, dict]:
    key = hashlib.sha256(json.dumps([RECIPE, minutes, demo]).encode()).hexdigest()[:10]
    out = cache / f"long_{'demo' if demo else 'shared'}_{minutes:g}min_{key}.wav"
    if out.is_file() and out.with_suffix(".json").is_file():
        return out, json.loads(out.with_suffix(".json").read_text())
    return out, build(demo_units() if demo else shared_units(data), minutes, out)


# -- running listen -------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _event_time(e: dict) -> float | None:
    for key in ("end_s", "t_s", "start_s", "stream_s"):
        if isinstance(e.get(key), (int, float)):
            return float(e[key])
    return None


def run_listen(path: Path, store: Path, every_s: float = 0.25, timeout_s: float = 7200.0
               ) -> dict:
    """Run ``listen --input PATH --json`` to the end; return its events, RSS samples
    ``[(wall_s, stream_s, rss_mb)]``, exit code, stderr and wall time."""
    env = {**os.environ, "RTVERIFY_HOME": str(store)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "rtverify", "listen", "--input", str(path),
                             "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    events: list[dict] = []
    stream_s = [0.0]

    def read() -> None:
        for line in proc.stdout:
            e = json.loads(line)
            events.append(e)
            t = _event_time(e)
            if t is not None and e["event"] != "summary":
                stream_s[0] = max(stream_s[0], t)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    err: list[str] = []
    err_reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    err_reader.start()
    samples = []
    while proc.poll() is None:
        rss = _rss_mb(proc.pid)
        if rss is not None:
            samples.append((time.monotonic() - t0, stream_s[0], rss))
        if time.monotonic() - t0 > timeout_s:
            proc.kill()
            raise TimeoutError(f"listen still running after {timeout_s} s")
        time.sleep(every_s)
    reader.join(timeout=30)
    err_reader.join(timeout=30)
    return {"events": events, "rss": samples, "returncode": proc.returncode,
            "stderr": "".join(err), "wall_s": time.monotonic() - t0}


def enroll_demo_voice(store: Path) -> None:
    demo = REPO / "rtverify" / "demo"
    proc = subprocess.run([sys.executable, "-m", "rtverify", "--store", str(store), "enroll",
                           "--name", "alice", "--input", str(demo / "enroll_1.flac"),
                           str(demo / "enroll_2.flac")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"enrolment failed: {proc.stderr.strip()}")


# -- the figures ----------------------------------------------------------------------------------
def analyse(run: dict, meta: dict, settle_s: float = 60.0) -> dict:
    events, units = run["events"], meta["units"]
    decisions = [e for e in events if e["event"] == "decision"]
    starts = [e["start_s"] for e in events if e["event"] == "speech_start"]
    closed = {round(e["start_s"], 2) for e in events if e["event"] in ("decision", "dropped")}
    unclosed = [s for s in starts if round(s, 2) not in closed]
    missed = [u for u in units if not any(d["start_s"] < u["end_s"] and d["end_s"] > u["start_s"]
                                          for d in decisions)]
    in_pause = [d for d in decisions if not any(d["start_s"] < u["end_s"] + 0.5 and
                                                d["end_s"] > u["start_s"] - 0.5 for u in units)]
    rss = run["rss"]
    at_settle = next((r for _, t, r in rss if t >= settle_s), None)
    after = [r for _, t, r in rss if t >= settle_s]
    summary = events[-1] if events and events[-1]["event"] == "summary" else {}
    wall = run["wall_s"]
    return {
        "stream_s": round(meta["duration_s"], 1), "wall_s": round(wall, 1),
        "realtime_factor": round(meta["duration_s"] / wall, 1) if wall else None,
        "returncode": run["returncode"], "summary": summary,
        "units": len(units), "units_with_a_decision": len(units) - len(missed),
        "missed_units": [u["name"] for u in missed][:20],
        "decisions": len(decisions), "speech_starts": len(starts),
        "speech_starts_without_decision": len(unclosed),
        "decisions_in_pauses": len(in_pause),
        "rss_samples": len(rss),
        "rss_start_mb": round(rss[0][2], 1) if rss else None,
        "rss_at_settle_mb": None if at_settle is None else round(at_settle, 1),
        "rss_max_after_settle_mb": round(max(after), 1) if after else None,
        "rss_end_mb": round(rss[-1][2], 1) if rss else None,
        "rss_growth_after_settle_mb": (round(max(after) - at_settle, 1)
                                       if after and at_settle is not None else None),
        "settle_s": settle_s,
    }


def report(fig: dict) -> str:
    ok = lambda c: "ok" if c else "FAIL"  # noqa: E731
    g = fig["rss_growth_after_settle_mb"]
    lines = [
        f"stream {fig['stream_s'] / 60:.1f} min in {fig['wall_s']:.0f} s wall "
        f"({fig['realtime_factor']}x real time), exit {fig['returncode']}",
        f"RSS: {fig['rss_start_mb']} MB at start, {fig['rss_at_settle_mb']} MB at "
        f"{fig['settle_s']:g} s of stream, max {fig['rss_max_after_settle_mb']} MB after, "
        f"{fig['rss_end_mb']} MB at the end; growth after the first minute {g} MB "
        f"[{ok(g is not None and g < GROWTH_TARGET_MB)}: < {GROWTH_TARGET_MB:g} MB]",
        f"units: {fig['units_with_a_decision']}/{fig['units']} got a decision "
        f"[{ok(fig['units_with_a_decision'] == fig['units'])}]; {fig['decisions']} decisions, "
        f"{fig['speech_starts']} speech starts, {fig['speech_starts_without_decision']} without "
        f"a decision [{ok(fig['speech_starts_without_decision'] == 0)}], "
        f"{fig['decisions_in_pauses']} decisions in pauses",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.long_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="audio to stream (default 60)")
    ap.add_argument("--demo", action="store_true", help="build it from the bundled demo audio")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--every", type=float, default=0.25, help="RSS sampling period (s)")
    args = ap.parse_args(argv)
    path, meta = cached_recording(args.minutes, args.demo, args.data)
    print(f"{path.name}: {meta['duration_s'] / 60:.1f} min, {len(meta['units'])} units",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "voices"
        enroll_demo_voice(store)
        run = run_listen(path, store, every_s=args.every)
    fig = analyse(run, meta)
    fig["recording"] = path.name
    fig["command"] = "python -m benchmarks.long_run " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv)
    print(report(fig))
    if run["returncode"] != 0:
        print(run["stderr"], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))
    good = (run["returncode"] == 0 and fig["units_with_a_decision"] == fig["units"]
            and fig["speech_starts_without_decision"] == 0
            and (fig["rss_growth_after_settle_mb"] or 0) < GROWTH_TARGET_MB)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
