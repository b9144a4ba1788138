"""How much does a cohort shift of the heard side (``probe_shift``) change a model's raw EER?

    OMP_NUM_THREADS=1 python -m tools.cohort_sweep --model default --top-k 100,200,400 \\
        --weights 0,0.25,0.5,0.75 --list runs/dev/clean-vp3.txt=runs/dev \\
        --list ../shared/data/trials/arabic-test-1s.txt=../shared/data

The cohort is ``export.cohort``'s audio (``--audio``, built there when missing; ``--conditions``
picks its folders), embedded by the model through the runtime path. For each ``top_k`` and
weight, every list's EER of ``cos - weight * (max(mu, lowest) - centre)``, with the centre and
lowest made as ``export.cohort`` makes them (``--lowest none``: no floor), and of AS-norm
against the same cohort for comparison; ``--enrol-weight`` also shifts the enrolled side by its
own ``mu``. Raw scores of the model alone (no thresholds, no short expert): a screen before
calibrating, not the model's decisions (``rtverify eval``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from benchmarks.accuracy import parse_list
    from export.cohort import (CONDITIONS, LOWEST_QUANTILE, build_audio, embed_rows,
                               own_means, shift_constants, speaker_of)
    from rtverify.core.encoder import EncoderSession, resolve_model
    from rtverify.core.scoring import Scorer
    from rtverify.evaluation import embed_files, read_trials, score_trials
    from rtverify.metrics import eer, min_dcf

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--audio", type=Path, default=Path("runs/cohort"))
    ap.add_argument("--conditions", default=",".join((*CONDITIONS, "arabic")),
                    help="the cohort's folders to use (default: all)")
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    ap.add_argument("--top-k", default="100")
    ap.add_argument("--weights", default="0,0.25,0.5,0.75")
    ap.add_argument("--lowest", default=str(LOWEST_QUANTILE),
                    help="quantile of the cohort's own mu below which mu is not counted, or "
                         "'none'")
    ap.add_argument("--enrol-weight", type=float, default=0.0,
                    help="also shift by this weight of the enrolled side's own mu (a voiceprint "
                         "that sounds like many voices scores lower; not what the runtime does)")
    ap.add_argument("--enrol-stat", choices=("top", "mean"), default="top",
                    help="what --enrol-weight shifts the enrolled side by: its own mu (top, the "
                         "mean of its top-k cohort cosines) or the mean of its cosines with the "
                         "whole cohort (mean: a Z-norm's mean, how close a voiceprint sits to "
                         "strangers in general), each less the cohort's own median")
    ap.add_argument("--list", action="append", required=True, metavar="TRIALS=ROOT")
    args = ap.parse_args(argv)
    try:
        lists = [parse_list(x) for x in args.list]
        top_ks = [int(k) for k in args.top_k.split(",")]
        weights = [float(w) for w in args.weights.split(",")]
        lowest_q = None if args.lowest == "none" else float(args.lowest)
    except (ValueError, FileNotFoundError) as err:
        ap.error(str(err))
    session = EncoderSession(resolve_model(args.model), threads=1)
    keep = set(args.conditions.split(","))
    files = [f for f in build_audio(args.root, args.audio) if f.parent.name in keep]
    if not files:
        ap.error(f"no cohort audio in {args.audio} for {args.conditions}")
    cohort, kept = embed_rows(session, files, args.cache)
    speakers = np.array([speaker_of(f) for f in kept])
    print(f"cohort: {len(cohort)} embeddings of {len(set(speakers))} speakers", flush=True)
    data = []
    for name, trials_path, root in lists:
        tr = read_trials(trials_path, root)
        vec = embed_files(session, [Path(root) / f for f in tr.takes],
                          cache_dir=args.cache).voiceprints(tr.takes, tr.files).vectors
        data.append((name, tr, vec, np.asarray(tr.labels) == 1))
    mean_centre = float(np.median(own_means(cohort, speakers)))
    cohort_mean = cohort.mean(axis=0)  # a voiceprint's mean cosine with the cohort: v . this
    for k in top_ks:
        centre, lowest = shift_constants(cohort, speakers, k, lowest_q)
        print(f"top {k}: centre {centre:.4f}, lowest {'-' if lowest is None else f'{lowest:.4f}'}")
        for name, tr, vec, same in data:
            cells = []
            enrol = 0.0
            if args.enrol_weight:  # a shift of the enrolled side, the same cohort
                ok_rows = np.isfinite(vec).all(axis=1)
                per_entry = np.zeros(len(vec))
                if args.enrol_stat == "mean":
                    per_entry[ok_rows] = args.enrol_weight * (
                        vec[ok_rows] @ cohort_mean - mean_centre)
                else:
                    shift = Scorer(cohort, top_k=k, method="probe_shift",
                                   weight=args.enrol_weight, centre=centre, lowest=lowest)
                    per_entry[ok_rows] = shift.shift(vec[ok_rows])
                enrol = per_entry[tr.a]
            for w in weights:
                sc = score_trials(tr, vec, Scorer(cohort, top_k=k, method="probe_shift",
                                                  weight=w, centre=centre, lowest=lowest))
                sc = sc - enrol
                cells.append(f"w {w:g} {100 * eer(sc[same], sc[~same])[0]:5.2f} "
                             f"(minDCF {min_dcf(sc[same], sc[~same])[0]:.3f})")
            asn = score_trials(tr, vec, Scorer(cohort, top_k=k))
            cells.append(f"asnorm {100 * eer(asn[same], asn[~same])[0]:5.2f}")
            print(f"  {name:22s} " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
