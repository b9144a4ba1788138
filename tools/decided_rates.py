"""A model's own decisions on trial lists, taken apart: how many trials it does not decide
(``too_short``), and, of those it decides, strangers accepted and true speakers refused per
deciding model (the short expert or the model itself) and amount of test speech; with
``--raise``, what raising every short-expert threshold by each amount would do.

    OMP_NUM_THREADS=1 python -m tools.decided_rates --model default \\
        --list runs/sc/sc-1s-vp3.txt=SC --list runs/dev/clean1s-vp3.txt=runs/dev --raise 0.02,0.03,0.04

Scores and thresholds exactly as ``rtverify eval`` decides (embeddings cached under ``--cache``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rtverify import evaluation as ev
from rtverify.core.encoder import EncoderSession
from rtverify.core.scoring import Scorer

BINS_S = ((0.0, 0.7), (0.7, 0.8), (0.8, 1.0), (1.0, 2.0), (2.0, float("inf")))


def _rate(x: np.ndarray) -> str:
    return f"{100 * x.mean():5.2f} %" if len(x) else "    - "


def rates(session: EncoderSession, trials_path: Path, root: Path, cache: Path,
          raises: tuple[float, ...] = ()) -> dict:
    trials = ev.read_trials(trials_path, root)
    emb = ev.embed_files(session, [root / f for f in trials.takes],
                         cache_dir=cache).voiceprints(trials.takes, trials.files)
    scores, thr, margins, routed = ev.decision_scores(trials, root, emb, session,
                                                      Scorer.for_model(session), cache_dir=cache)
    if routed is None:
        routed = np.zeros(len(margins), bool)
    same = np.asarray(trials.labels) == 1
    decided = np.isfinite(thr)
    speech = emb.speech_s[trials.b]
    totals = ev.model_threshold_rates(trials, emb, scores, session.info.decision, thr)
    out = {"list": trials_path.stem, "same": int(same.sum()), "different": int((~same).sum()),
           "undecided_same": float((~decided[same]).mean()),
           "far_decided": totals["far_decided"], "frr_decided": totals["frr_decided"],
           "parts": [], "raise": []}
    for name, by in (("expert", routed), ("model", ~routed)):
        for lo, hi in BINS_S:
            part = decided & by & (speech >= lo) & (speech < hi)
            if part.any():
                out["parts"].append((name, lo, hi, margins[part & ~same] >= 0,
                                     margins[part & same] < 0))
    for d in raises:
        m = margins - np.where(routed, d, 0.0)
        part = decided & routed
        out["raise"].append((d, m[part & ~same] >= 0, m[part & same] < 0))
    return out


def main(argv=None) -> int:
    from benchmarks.accuracy import parse_list

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="name or path (default: the default)")
    ap.add_argument("--list", action="append", required=True, metavar="TRIALS=ROOT")
    ap.add_argument("--raise", dest="raises", default="",
                    help="comma-separated raises of every short-expert threshold to try")
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    args = ap.parse_args(argv)
    try:
        lists = [parse_list(spec) for spec in args.list]
        raises = tuple(float(v) for v in args.raises.split(",") if v)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(str(e)) from None
    session = EncoderSession(args.model)
    for _, trials, root in lists:
        r = rates(session, trials, root, args.cache, raises)
        print(f"{r['list']}: {r['same']} same / {r['different']} different; not decided "
              f"(too little speech) {100 * r['undecided_same']:.1f} % of the same; of the "
              f"decided: strangers accepted {100 * r['far_decided']:.2f} %, true speakers "
              f"refused {100 * r['frr_decided']:.1f} %")
        for name, lo, hi, fa, fr in r["parts"]:
            print(f"  {name:6s} speech {lo:.1f}-{hi:.1f} s: strangers {len(fa):5d} accepted "
                  f"{_rate(fa)}   true {len(fr):5d} refused {_rate(fr)}")
        for d, fa, fr in r["raise"]:
            print(f"  expert thresholds +{d:.2f}: strangers accepted {_rate(fa)}, true refused "
                  f"{_rate(fr)} (of the {len(fa)} / {len(fr)} the expert decides)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
