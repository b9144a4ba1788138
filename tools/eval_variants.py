"""EER/minDCF table of window, segmenter and scoring variants on several trial lists.

    OMP_NUM_THREADS=1 python -m tools.eval_variants --root ../shared/data \\
        --lists ../shared/data/trials/*.txt --variants before views views+hop160 ...

Every variant runs the runtime path of :mod:`rtverify.evaluation` with the shipped model's
weights and the settings named in ``VARIANTS`` below; embeddings are cached per settings in
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
from rtverify.core.encoder import EncoderSession
from rtverify.core.scoring import Scorer

TRAIN12 = ("00000001", "00000005", "00000006", "00000009", "00000011", "00000013", "00000015",
           "00000016", "00000017", "00000018", "00000019", "00000020")
CALIB6 = ("00000022", "00000023", "00000024", "00000027", "00000029", "00000030")
VIEWS = ("end", "start", "reflect")
BEFORE = dict(seg=dict(level_without_dc=False, post_roll_ms=90),
              window=dict(hop_frames=80, short_views=("end",)))
"""The settings before this evaluation work (commit 3a251df)."""


def _v(hop=160, views=VIEWS, dc=True, post_roll_ms=90, tail=40, **extra) -> dict:
    return dict(seg=dict(level_without_dc=dc, post_roll_ms=post_roll_ms),
                window=dict(hop_frames=hop, short_views=views, min_tail_frames=tail), **extra)


VARIANTS = {
    "before": BEFORE,
    "dc": _v(hop=80, views=("end",)),
    "dc+post180": _v(hop=80, views=("end",), post_roll_ms=180),
    "views": _v(hop=80),
    "views+post180": _v(hop=80, post_roll_ms=180),
    "views+hop160": _v(),  # the shipped settings
    "shipped+tail20": _v(tail=20),
    "shipped+tail80": _v(tail=80),
    "shipped+asnorm12": _v(asnorm=(TRAIN12, 100)),
    "shipped+asnorm18": _v(asnorm=(TRAIN12 + CALIB6, 100)),
}
"""Each: segmenter and window overrides, and optionally AS-norm (cohort speakers of the Arabic
corpus, top-k)."""


def run_variant(model, name: str, spec: dict, lists: list[Path], root: Path,
                cache: Path) -> dict:
    session = EncoderSession(model, threads=1)
    window = dataclasses.replace(session.info.window, **spec.get("window", {}))
    session.info = dataclasses.replace(session.info, window=window)
    segmenter = dataclasses.replace(SegmenterConfig(), **spec.get("seg", {}))
    scorer = Scorer(None)
    if spec.get("asnorm"):
        speakers, top_k = spec["asnorm"]
        files = [p for s in speakers
                 for p in sorted((root / "arabic-speech-commands" / s).glob("*.flac"))]
        emb = ev.embed_files(session, files, segmenter=segmenter, cache_dir=cache)
        scorer = Scorer(emb.vectors[emb.has_speech], top_k=top_k)
    row = {}
    for path in lists:
        trials = ev.read_trials(path, root)
        emb = ev.embed_files(session, [root / f for f in trials.files], segmenter=segmenter,
                             cache_dir=cache, progress=sys.stderr.isatty(),
                             label=f"{name} {path.stem}")
        m = ev.compute_metrics(ev.score_trials(trials, emb.vectors, scorer), trials.labels)
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
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()
    print(f"{'variant':<16}" + "".join(f"{p.stem[:22]:>24}" for p in args.lists))
    table = {}
    for name in args.variants:
        row = run_variant(args.model, name, VARIANTS[name], args.lists, args.root, args.cache)
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
