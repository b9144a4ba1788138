"""EER/minDCF table of window, segmenter and scoring variants on several trial lists.

    OMP_NUM_THREADS=1 python -m tools.eval_variants --root ../shared/data \\
        --lists ../shared/data/trials/*.txt --variants base views hop160 ...

Every variant runs the runtime path of :mod:`rtverify.evaluation` with the shipped model and
settings overridden as named in ``VARIANTS`` below; embeddings are cached per settings in
``runs/cache`` (git-ignored), so a second run only scores. Used to choose the settings in the
model card; see README "Model card".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rtverify import evaluation as ev
from rtverify.config import SegmenterConfig
from rtverify.encoder import EncoderSession
from rtverify.scoring import Scorer

OLD = dict(seg=dict(level_without_dc=False, post_roll_ms=90), window=dict(short_views=("end",)))
"""The settings before this evaluation work (commit 3a251df)."""

VARIANTS = {
    "before": OLD,
    "dc": dict(seg=dict(post_roll_ms=90), window=dict(short_views=("end",))),
    "dc+post180": dict(seg=dict(post_roll_ms=180), window=dict(short_views=("end",))),
    "views": dict(seg=dict(post_roll_ms=90), window=dict(short_views=("end", "start", "reflect"))),
    "views+post180": dict(window=dict(short_views=("end", "start", "reflect")),
                          seg=dict(post_roll_ms=180)),
    "shipped": dict(),
    "shipped+hop160": dict(window=dict(hop_frames=160)),
    "shipped+tail20": dict(window=dict(min_tail_frames=20)),
    "shipped+tail80": dict(window=dict(min_tail_frames=80)),
    "shipped+asnorm100": dict(asnorm=100),
}


def run_variant(model, name: str, spec: dict, lists: list[Path], root: Path, cache: Path,
                cohort: Path | None) -> dict:
    session = EncoderSession(model, threads=1)
    window = dataclasses.replace(session.info.window, **spec.get("window", {}))
    session.info = dataclasses.replace(session.info, window=window)
    segmenter = dataclasses.replace(SegmenterConfig(), **spec.get("seg", {}))
    scorer = Scorer(None)
    if spec.get("asnorm"):
        import numpy as np
        scorer = Scorer(np.load(cohort), top_k=spec["asnorm"])
    row = {}
    for path in lists:
        trials = ev.read_trials(path, root)
        emb = ev.embed_files(session, [root / f for f in trials.files], segmenter=segmenter,
                             cache_dir=cache, progress=sys.stderr.isatty(),
                             label=f"{name} {path.stem}")
        m = ev.compute_metrics(ev.score_trials(trials, emb, scorer), trials.labels)
        row[path.stem] = {"eer": m.eer, "min_dcf": m.min_dcf,
                          "no_speech": int((~emb.has_speech).sum()),
                          "short_only": int(emb.short_only.sum())}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--lists", type=Path, nargs="+", required=True)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--model", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    ap.add_argument("--cohort", type=Path, help=".npy cohort for asnorm variants")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()
    print(f"{'variant':<16}" + "".join(f"{p.stem[:22]:>24}" for p in args.lists))
    table = {}
    for name in args.variants:
        row = run_variant(args.model, name, VARIANTS[name], args.lists, args.root, args.cache,
                          args.cohort)
        table[name] = row
        print(f"{name:<16}" + "".join(
            f"{100 * row[p.stem]['eer']:>9.2f}% {row[p.stem]['min_dcf']:.3f} "
            f"({row[p.stem]['no_speech']}/{row[p.stem]['short_only']})".rjust(24)
            for p in args.lists), flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
