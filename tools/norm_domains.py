"""Does score normalisation hold one false-accept rate across domains where raw cosines do not?

    OMP_NUM_THREADS=1 python -m tools.norm_domains --model default-short --speech-commands SC \\
        --fit runs/dev/clean1s-vp3.txt=runs/dev --list runs/sc/sc-1s-vp8.txt=SC \\
        --list ../shared/data/trials/arabic-test-1s.txt=../shared/data

For each scoring (raw cosine; AS-norm, top ``--top-k``, against a cohort of training
material: the first second of up to four 2 s pieces of speech of each LibriSpeech speaker
outside the dev lists, and every eighth keyword of the Arabic train12 speakers: the
``clean1s`` and ``arabic`` folders of ``export.cohort``'s audio, written once under
``--cohort-dir``; the same plus the Speech Commands words of the speakers
``training.data.extra_split`` keeps for training), one threshold is set at ``--far`` of the
``--fit`` list's different-speaker trials, and every list's strangers accepted and true speakers
refused at that threshold are printed, and each list's EER under that scoring. A measurement,
not a shipped setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rtverify.core.encoder import EncoderSession
from rtverify.core.scoring import Scorer
from rtverify.evaluation import embed_files, read_trials, score_trials
from rtverify.metrics import eer



def rates_at_one_threshold(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                           fit: str, far: float) -> dict[str, tuple[float, float]]:
    """The threshold passing ``far`` of ``fit``'s different-speaker scores; per list, (strangers
    accepted, true speakers refused) at it. Trials without a finite score are left out."""
    non = np.sort(scores[fit][~labels[fit] & np.isfinite(scores[fit])])
    thr = non[max(int(np.ceil((1 - far) * len(non))) - 1, 0)]
    out = {}
    for name, x in scores.items():
        ok, same = np.isfinite(x), labels[name]
        out[name] = (float((x[~same & ok] > thr).mean()), float((x[same & ok] <= thr).mean()))
    return out


def main(argv=None) -> int:
    from benchmarks.accuracy import parse_list
    from export.cohort import build_audio, embed_rows
    from training.data import extra_split, from_manifest

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default-short")
    ap.add_argument("--speech-commands", type=Path, required=True, metavar="SC")
    ap.add_argument("--fit", required=True, metavar="TRIALS=ROOT")
    ap.add_argument("--list", action="append", default=[], metavar="TRIALS=ROOT")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cohort-dir", type=Path, default=Path("runs/cohort"),
                    help="export.cohort's audio, written there once when missing (default "
                         "runs/cohort)")
    ap.add_argument("--far", type=float, default=0.005)
    ap.add_argument("--top-k", type=int, default=200)
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    args = ap.parse_args(argv)
    try:
        lists = [parse_list(args.fit)] + [parse_list(s) for s in args.list]
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(str(e)) from None
    if not (args.data / "librispeech-clean100-251spk" / "MANIFEST.tsv").is_file():
        raise SystemExit(f"{args.data}: not the shared data folder (no LibriSpeech manifest)")
    files = build_audio(args.data, args.cohort_dir)
    folders = [args.cohort_dir / d for d in ("clean1s", "arabic")]
    session = EncoderSession(args.model, threads=1)
    base = embed_rows(session, [f for f in files if f.parent in folders], args.cache)[0]
    kept = set(extra_split(args.speech_commands)["train"])
    words = embed_rows(session, [u.path for u in from_manifest(args.speech_commands)
                                 if u.speaker in kept], args.cache)[0]
    data = {}
    for name, trials, root in lists:
        t = read_trials(trials, root)
        emb = embed_files(session, [root / f for f in t.takes], cache_dir=args.cache
                          ).voiceprints(t.takes, t.files)
        data[name] = (t, emb, np.asarray(t.labels) == 1)
    print(f"cohort: {len(base)} embeddings of {', '.join(map(str, folders))}; "
          f"{len(words)} Speech Commands words of the kept speakers")
    for title, scorer in (("raw cosine", Scorer(None)),
                          ("AS-norm, cohort", Scorer(base, top_k=args.top_k)),
                          ("AS-norm, cohort + phone words",
                           Scorer(np.concatenate([base, words]), top_k=args.top_k))):
        scores = {n: score_trials(t, e.vectors, scorer) for n, (t, e, _) in data.items()}
        got = rates_at_one_threshold(scores, {n: v[2] for n, v in data.items()}, lists[0][0],
                                     args.far)
        print(f"{title:30s} " + " | ".join(f"{n}: accepted {100 * fa:.2f} %, refused "
                                           f"{100 * fr:.1f} %" for n, (fa, fr) in got.items()))
        print(f"{'':30s} EER " + " | ".join(
            f"{n}: {100 * eer(x[data[n][2]], x[~data[n][2]])[0]:.2f} %" for n, x in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
