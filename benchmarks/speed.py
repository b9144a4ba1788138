"""Throughput, latency, start-up, memory and the encoder's own speed, measured through the real
``rtverify listen --input FILE --json`` in subprocesses (or its stand-in without the CLI), with
resemblyzer's embedding of the same audio interleaved in the same run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from .runner import Run, env_for, have_cli, listen_cmd, run


FIRST_BLOCK_S = 0.1
"""Length of the blocks FileSource reads (its default ``block_ms``)."""


def _pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _summary(values) -> dict:
    v = [float(x) for x in values]
    return {"p50": _pct(v, 50), "p95": _pct(v, 95), "max": max(v) if v else None, "n": len(v)}


def audio_seconds(path: Path) -> float:
    return sf.info(str(path)).duration


def listen_stats(r: Run, audio_s: float) -> dict:
    """What one ``listen`` run shows: processing time (first line ``ready`` to the ``summary``),
    decision latencies, time to the first provisional score of each utterance."""
    events = r.events()
    t_ready = next(t for t, e in events if e.get("event") == "ready")
    t_end = next(t for t, e in reversed(events) if e.get("event") == "summary")
    decision_ms, first_stream, first_wall = [], [], []
    start = None
    for t, e in events:
        kind = e.get("event")
        if kind == "speech_start":
            start = e["start_s"]
        elif kind == "provisional" and start is not None:
            first_stream.append(e["t_s"] - start)
            # wall time since the speech start was heard. A paced file source starts its clock
            # when it reads its first block (right after `ready`) as if that block had just been
            # recorded, so stream time s was heard at about t_ready - FIRST_BLOCK_S + s.
            first_wall.append(t - (t_ready - FIRST_BLOCK_S + start))
            start = None
        elif kind in ("decision", "dropped"):
            start = None
            if kind == "decision":
                decision_ms.append(e["decision_ms"])
    processing = t_end - t_ready
    return {"processing_s": processing, "x_realtime": audio_s / processing,
            "compute_s_per_audio_s": processing / audio_s, "ready_s": t_ready,
            "wall_s": r.wall_s, "cpu_s": r.user_s + r.sys_s, "max_rss_mb": r.max_rss_mb,
            "decisions": len(decision_ms), "decision_ms": decision_ms,
            "first_provisional_stream_s": first_stream, "first_provisional_wall_s": first_wall}


def reference_time(audio: Path, threads: int) -> dict:
    r = run([sys.executable, "-m", "benchmarks.reference", "time", "--audio", str(audio),
             "--threads", str(threads)], env=env_for(threads)).check()
    return json.loads(r.lines[-1][1])


def throughput(models: dict[str, Path], audio: Path, threads: list[int], reps: int,
               short: Path, log=print) -> dict:
    """Every model on every thread count, ``reps`` times, resemblyzer on the same audio in
    between; ratios are taken within a repetition (same moment, same load), then their median.

    Besides wall time, CPU time: the listen process's CPU seconds on the long recording minus
    those on ``short`` (the same start-up, so it cancels), per second of the audio in between,
    against resemblyzer's CPU seconds for its embedding. On a machine with other load, CPU time
    moves far less than wall time (a preempted process is not charged), so at one thread it is
    the steadier comparison; with two threads only wall time shows what the second one buys.
    """
    audio_s = audio_seconds(audio)
    short_s = audio_seconds(short)
    ours: dict[str, dict[int, list[dict]]] = {m: {t: [] for t in threads} for m in models}
    ref: dict[int, list[dict]] = {t: [] for t in threads}
    for rep in range(reps):
        order = list(models.items())
        if rep % 2:
            order.reverse()  # alternate, so slow drift in the machine's load favours no one
        for th in threads:
            for name, model in order:
                r = run(listen_cmd(model, audio), env=env_for(th)).check()
                s = listen_stats(r, audio_s)
                r0 = run(listen_cmd(model, short), env=env_for(th)).check()
                s["processing_cpu_s"] = (r.user_s + r.sys_s) - (r0.user_s + r0.sys_s)
                s["cpu_audio_s"] = audio_s - short_s
                ours[name][th].append(s)
                log(f"  rep {rep + 1}/{reps} {th} thread(s) rtverify {name}: "
                    f"{s['x_realtime']:.0f}x real time, {s['max_rss_mb']:.0f} MiB")
            ref[th].append(reference_time(audio, th))
            x = ref[th][-1]
            log(f"  rep {rep + 1}/{reps} {th} thread(s) resemblyzer: embed raw "
                f"{audio_s / x['embed_raw_s']:.0f}x, trimmed {audio_s / x['embed_trimmed_s']:.0f}x "
                f"(of the untrimmed audio)")
    out = {"audio": str(audio), "audio_s": audio_s, "reps": reps, "threads": threads,
           "rtverify": {}, "resemblyzer": {}}
    for th in threads:
        rs = ref[th]
        out["resemblyzer"][str(th)] = {
            k: float(np.median([x[k] for x in rs]))
            for k in ("preprocess_s", "embed_trimmed_s", "embed_raw_s", "trimmed_audio_s",
                      "preprocess_cpu_s", "embed_trimmed_cpu_s", "embed_raw_cpu_s")}
        out["resemblyzer"][str(th)]["raw"] = rs
        for name in models:
            runs = ours[name][th]
            proc = [s["processing_s"] for s in runs]
            entry = {
                "processing_s": float(np.median(proc)),
                "x_realtime": audio_s / float(np.median(proc)),
                "compute_s_per_audio_s": float(np.median(proc)) / audio_s,
                "cpu_s": float(np.median([s["cpu_s"] for s in runs])),
                "ready_s": float(np.median([s["ready_s"] for s in runs])),
                "max_rss_mb": max(s["max_rss_mb"] for s in runs),
                "decisions": runs[0]["decisions"],
                "decision_ms": _summary([m for s in runs for m in s["decision_ms"]]),
                "first_provisional_stream_s": _summary(runs[0]["first_provisional_stream_s"]),
                # per repetition: resemblyzer's time / ours, on the same audio
                "ratio_vs_embed_raw": float(np.median([x["embed_raw_s"] / s["processing_s"]
                                                       for x, s in zip(rs, runs)])),
                "ratio_vs_embed_trimmed": float(np.median(
                    [x["embed_trimmed_s"] / s["processing_s"] for x, s in zip(rs, runs)])),
                "ratio_vs_preprocess_and_embed": float(np.median(
                    [(x["preprocess_s"] + x["embed_trimmed_s"]) / s["processing_s"]
                     for x, s in zip(rs, runs)])),
                "cpu_s_per_audio_s": float(np.median([s["processing_cpu_s"] / s["cpu_audio_s"]
                                                      for s in runs])),
                # CPU seconds per audio second, resemblyzer's embedding over ours
                "cpu_ratio_vs_embed_raw": float(np.median(
                    [(x["embed_raw_cpu_s"] / audio_s) / (s["processing_cpu_s"] / s["cpu_audio_s"])
                     for x, s in zip(rs, runs)])),
                "cpu_ratio_vs_embed_trimmed": float(np.median(
                    [(x["embed_trimmed_cpu_s"] / audio_s) / (s["processing_cpu_s"] / s["cpu_audio_s"])
                     for x, s in zip(rs, runs)])),
                "processing_s_each": proc,
            }
            out["rtverify"].setdefault(name, {})[str(th)] = entry
    return out


def realtime(models: dict[str, Path], audio: Path, log=print) -> dict:
    """One real-time-paced ``listen --realtime`` per model (windows embedded one by one, as from
    a microphone): decision latency and time to the first provisional score."""
    audio_s = audio_seconds(audio)
    out = {"audio": str(audio), "audio_s": audio_s, "models": {}}
    for name, model in models.items():
        r = run(listen_cmd(model, audio, realtime=True), env=env_for(1),
                timeout_s=audio_s * 2 + 120).check()
        s = listen_stats(r, audio_s)
        out["models"][name] = {
            "decisions": s["decisions"], "decision_ms": _summary(s["decision_ms"]),
            "first_provisional_stream_s": _summary(s["first_provisional_stream_s"]),
            "first_provisional_wall_s": _summary(s["first_provisional_wall_s"]),
            "cpu_s_per_audio_s": s["cpu_s"] / audio_s, "max_rss_mb": s["max_rss_mb"]}
        log(f"  real time, {name}: decision p95 {out['models'][name]['decision_ms']['p95']:.1f} ms, "
            f"first provisional p50 {out['models'][name]['first_provisional_wall_s']['p50']:.2f} s")
    return out


def startup(reps: int = 7) -> dict:
    """``rtverify --help`` wall time (or, without the CLI, importing the pipeline), and whether
    importing every runtime module loads torch or its kin."""
    if have_cli():
        cmd, what = [sys.executable, "-m", "rtverify", "--help"], "python -m rtverify --help"
    else:
        cmd = [sys.executable, "-c", "import rtverify.core.pipeline, rtverify.io.sources"]
        what = "python -c 'import rtverify.core.pipeline, rtverify.io.sources' (no CLI in this checkout)"
    walls = [run(cmd, env=env_for(1)).check().wall_s for _ in range(reps)]
    imports = json.loads(run([sys.executable, "-m", "benchmarks.probe", "imports"],
                             env=env_for(1)).check().lines[-1][1])
    return {"help_cmd": what, "help_s": _summary(walls) | {"min": min(walls)},
            "imports": imports}


def encoder(models: dict[str, Path], ten_s: Path, threads: list[int]) -> dict:
    """The issue-3 figures: one 1.6 s window through onnxruntime (batch 1, and per window in a
    batch of 8), and a whole 10 s recording end to end, per model and thread count."""
    out = {}
    for name, model in models.items():
        for th in threads:
            w = json.loads(run([sys.executable, "-m", "benchmarks.probe", "window", "--model",
                                str(model), "--threads", str(th)], env=env_for(th))
                           .check().lines[-1][1])
            f = json.loads(run([sys.executable, "-m", "benchmarks.probe", "file", "--input",
                                str(ten_s), "--model", str(model), "--threads", str(th)],
                               env=env_for(th)).check().lines[-1][1])
            out.setdefault(name, {})[str(th)] = {"window": w, "file_10s": f}
    return out
