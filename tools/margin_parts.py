"""What a model's decision rule costs against its raw cosines, part by part, per trial list.

    OMP_NUM_THREADS=1 python -m tools.margin_parts --model default \\
        --lists runs/dev/babble5-vp3.txt runs/dev/reverb-vp3.txt ... [--root runs/dev]

A trial list's root is ``--root`` when given, else the shared data folder for its lists
(``.../shared/data/trials/*.txt``) and the list's own folder for the others. For each list:

* ``raw``: the EER of the model's own cosines (its scorer), no thresholds at all;
* ``margins``: the EER of the scores less each trial's own threshold, trials routed to the
  short expert as ``rtverify eval`` routes them (what ``eval`` reports for a model with one);
* ``no expert``: the same with every trial decided by the model itself;
* ``no length``: routed, but the model's threshold flat in the amount of speech (its nominal
  ``threshold``; the SNR, room and enrolment offsets kept);
* ``EER thr by speech``: the equal-error threshold of the raw cosines in each third of the
  trials by the test side's speech (does the right threshold move with speech on this list?),
  and the model's own length thresholds at the thirds' medians.

Embeddings are cached (``--cache``), so a second run only scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from rtverify.core.encoder import EncoderSession
from rtverify.core.scoring import Scorer
from rtverify.evaluation import (embed_files, expert_routed, model_thresholds, read_trials,
                                 score_trials)
from rtverify.metrics import eer


def _eer(m: np.ndarray, same: np.ndarray) -> float:
    return 100 * eer(m[same], m[~same])[0]


def parts(session: EncoderSession, trials_path: Path, root: Path, cache: Path | None) -> dict:
    """The figures above for one list (EERs in %)."""
    tr = read_trials(trials_path, root)
    paths = [root / f for f in tr.takes]
    emb = embed_files(session, paths, cache_dir=cache).voiceprints(tr.takes, tr.files)
    same = np.asarray(tr.labels) == 1
    raw = score_trials(tr, emb.vectors, Scorer.for_model(session))
    dec = session.info.decision
    own = raw - model_thresholds(tr, emb, dec, refuse=False)
    flat = raw - model_thresholds(tr, emb, dataclasses.replace(dec, thresholds_by_speech_s=()),
                                  refuse=False)
    speech = emb.speech_s[tr.b]
    routed = np.zeros(len(raw), dtype=bool)
    short = own
    if session.short_expert is not None:
        expert = session.short_expert[0]
        emb_s = embed_files(expert, paths, cache_dir=cache).voiceprints(tr.takes, tr.files)
        short = score_trials(tr, emb_s.vectors, Scorer.for_model(expert)) - model_thresholds(
            tr, emb_s, expert.info.decision, refuse=False)
        routed = expert_routed(session, tr, emb)
    out = {"raw": _eer(raw, same), "margins": _eer(np.where(routed, short, own), same),
           "no expert": _eer(own, same), "no length": _eer(np.where(routed, short, flat), same),
           "routed": int(routed.sum()), "thirds": []}
    ok = np.isfinite(raw)
    edges = np.quantile(speech, [0, 1 / 3, 2 / 3, 1])
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = ok & (speech >= lo) & (speech <= hi)
        thr = eer(raw[sel & same], raw[sel & ~same])[1] if (sel & same).any() else float("nan")
        mid = float(np.median(speech[sel]))
        out["thirds"].append((float(lo), float(hi), float(thr), dec.threshold_for(mid)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.margin_parts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="name or path (default: the shipped default)")
    ap.add_argument("--lists", type=Path, nargs="+", required=True)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    args = ap.parse_args(argv)
    session = EncoderSession(args.model, threads=1)
    print(f"{'list':22s} {'raw':>6} {'margins':>8} {'no expert':>10} {'no length':>10} "
          f"{'routed':>7}  EER thr by speech (model's own)")
    for path in args.lists:
        root = args.root or (path.parent.parent if path.parent.name == "trials" else path.parent)
        r = parts(session, path, root, args.cache)
        thirds = "  ".join(f"{lo:.2f}-{hi:.2f} s: {thr:.3f} ({own:.3f})"
                           for lo, hi, thr, own in r["thirds"])
        print(f"{path.stem:22s} {r['raw']:6.2f} {r['margins']:8.2f} {r['no expert']:10.2f} "
              f"{r['no length']:10.2f} {r['routed']:7d}  {thirds}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
