"""python -m benchmarks run|events|long-recording|variant (see benchmarks/README.md)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from training.cli import user_errors

from . import CACHE, DATA, REPO



def cmd_run(args) -> int:
    from . import report
    from .audio import build_long_recording, ten_second_file
    from .runner import have_cli
    from .variants import default_variants, make_variant

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    # where the results go, before minutes of measuring (not after)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.is_dir():
        raise ValueError(f"--out {args.out}: a folder (give the results file, e.g. latest.json)")
    variants = args.variants.split(",") if args.variants else (
        ["default"] if args.quick else default_variants())
    models = {v: make_variant(v, CACHE / "models") for v in variants}
    threads = [int(t) for t in args.threads.split(",")]
    reps = args.reps or (1 if args.quick else 3)
    res = {"command": "python -m benchmarks " + " ".join(map(shlex.quote, sys.argv[1:] if args.argv is None else args.argv)),
           "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": report.machine(),
           "git": report.git_state(), "cli": have_cli(), "models": {k: str(v) for k, v in models.items()},
           "primary": args.primary}
    t0 = time.perf_counter()
    if not args.skip_accuracy:
        from .accuracy import accuracy

        log("accuracy ...")
        data = args.data
        res["accuracy"] = accuracy({v: models[v] for v in (["default"] if args.quick else variants)},
                                   data, log=log, only=["librispeech-251-3s"] if args.quick else None,
                                   dev=args.dev, extra_lists=args.list)
    if not args.skip_speed:
        from . import speed

        minutes = args.minutes or (3 if args.quick else None)
        long = build_long_recording(args.data, CACHE, minutes)
        log(f"throughput on {long.name} ...")
        res["throughput"] = speed.throughput(models, long, threads, reps,
                                             ten_second_file(args.data, CACHE), log=log)
        short = (REPO / "rtverify" / "demo" / "conversation.flac" if args.quick
                 else build_long_recording(args.data, CACHE, 1.0))
        log(f"real-time run on {short.name} ...")
        res["realtime"] = speed.realtime(models, short, log=log)
        if not args.skip_levers:
            from .levers import levers

            log("levers ...")
            res["levers"] = levers(long, speed.audio_seconds(long), reps, args.baseline, log=log)
        log("start-up and imports ...")
        res["startup"] = speed.startup()
        log("encoder ...")
        res["encoder"] = speed.encoder(models, ten_second_file(args.data, CACHE), threads)
    res["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    res["seconds"] = time.perf_counter() - t0
    res["targets"] = report.check_targets(res, args.primary)
    print(report.table(res))
    report.write(res, args.out)
    print(f"\nwrote {args.out}")
    return 0


def _count(text: str) -> int:
    """``--reps``, one of ``--threads``: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _counts(text: str) -> str:
    """``--threads``: whole numbers >= 1, comma-separated (kept as the text)."""
    for t in text.split(","):
        _count(t)
    return text


def _extra_list(spec: str):
    from .accuracy import parse_list

    try:
        return parse_list(spec)
    except (ValueError, FileNotFoundError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@user_errors("benchmarks")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="accuracy and speed, side by side with resemblyzer")
    r.add_argument("--quick", action="store_true", help="one rep, a 3-minute recording, the "
                   "default model only, accuracy on the LibriSpeech list only")
    r.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latest.json")
    r.add_argument("--data", type=Path, default=DATA, help=f"speech corpora (default {DATA})")
    r.add_argument("--skip-accuracy", action="store_true")
    r.add_argument("--dev", type=Path, help="also the dev lists built there by python -m "
                   "training.dev_lists (babble, reverberation, telephone band, held-out "
                   "LibriSpeech), e.g. runs/dev")
    r.add_argument("--list", action="append", default=[], metavar="TRIALS=ROOT",
                   type=_extra_list, help="also this trials list, its paths relative to ROOT "
                   "(corpora outside the shared data: tools.emodb_trials, tools.sc_trials); "
                   "repeatable")
    r.add_argument("--skip-speed", action="store_true")
    r.add_argument("--variants", help="models to measure, e.g. default,int8,hop80,campp (default: "
                   "the shipped model, the other hop of 80/160, int8, int8 with the other hop; "
                   "a shipped model's name, e.g. campp, is that model)")
    r.add_argument("--primary", default="default", help="model the targets are checked on")
    r.add_argument("--threads", default="1,2", type=_counts,
                   help="thread counts (default 1,2)")
    r.add_argument("--reps", type=_count,
                   help="interleaved repetitions (default 3; --quick 1)")
    r.add_argument("--minutes", type=float, help="speech in the long recording (default 10)")
    r.add_argument("--skip-levers", action="store_true", help="skip the in-process lever runs")
    r.add_argument("--baseline", default=None, help="commit to compare the pipeline code with "
                   "(default: the one before the speed work, if this repository has it; "
                   "'none' to skip)")

    e = sub.add_parser("events", help="dump pipeline events / compare with an earlier dump")
    e.add_argument("--input", type=Path, help="recording (default: the demo conversation)")
    e.add_argument("--out", type=Path, help="write the dump here")
    e.add_argument("--compare", type=Path, help="compare with this earlier dump (exit 1 if not same)")
    e.add_argument("--tol", type=float, default=1e-5, help="score tolerance (default 1e-5)")

    lr = sub.add_parser("long-recording", help="build the long recording, print its path")
    lr.add_argument("--data", type=Path, default=DATA)
    lr.add_argument("--minutes", type=float)

    v = sub.add_parser("variant", help="build a model variant (int8, hopN, int8-hopN) under "
                       "--out-dir, print its path")
    v.add_argument("name")
    v.add_argument("--out-dir", type=Path, default=CACHE / "models")

    args = p.parse_args(argv)
    args.argv = argv
    if args.cmd == "run" and args.baseline is None:
        from .levers import BASELINE_DEFAULT

        args.baseline = BASELINE_DEFAULT
    if getattr(args, "baseline", None) == "none":
        args.baseline = None
    if args.cmd == "run":
        return cmd_run(args)
    if args.cmd == "events":
        from . import events

        return events.main(args)
    if args.cmd == "long-recording":
        from .audio import build_long_recording

        print(build_long_recording(args.data, CACHE, args.minutes))
        return 0
    if args.cmd == "variant":
        from .variants import make_variant

        print(make_variant(args.name, args.out_dir))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
