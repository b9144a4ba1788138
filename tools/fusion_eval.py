"""Score fusion of the two shipped models at several weights, measured on every dev list (issue
11: "score fusion of the two models is welcome if it pays"). How the shipped fusion's weight
was chosen (stop 19); the shipped fusion itself (``--model fusion``, :mod:`rtverify.core.fusion`)
is measured like any model, by ``python -m export.dev_eval --model fusion``.

    .venv/bin/python -m tools.fusion_eval --weights 0.3,0.4,0.5 [--emodb DIR]

Each model's cosine is made comparable by its own impostor statistics on the calib6 speakers
(mean and standard deviation of the different-speaker scores of ``python -m export.calibrate``,
read from ``--calib-default``/``--calib-campp`` ``scores.npz``: no reported list is involved),
then ``w * z_default + (1 - w) * z_campp``. Embeddings come from ``rtverify eval``'s path and
cache (``--cache``), so both models' figures are exactly ``export.dev_eval``'s; a trial either
model cannot score (no speech) scores ``-inf``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def impostor_stats(scores_npz: Path) -> tuple[float, float]:
    with np.load(scores_npz) as z:
        non = z["length_scores"][~z["length_target"].astype(bool)]
    return float(non.mean()), float(non.std())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dev", type=Path, default=Path("runs/dev"))
    ap.add_argument("--emodb", type=Path, help="folder of EmoDB .wav files, with the list "
                                               "runs/emodb/emodb-all.txt (tools.emodb_trials)")
    ap.add_argument("--calib-default", type=Path, default=Path("runs/calib-default/scores.npz"))
    ap.add_argument("--calib-campp", type=Path, default=Path("runs/calib-campp/scores.npz"))
    ap.add_argument("--weights", default="0.3,0.4,0.5", help="weights of the default model")
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    args = ap.parse_args(argv)

    from export.dev_eval import lists
    from rtverify.core.encoder import EncoderSession
    from rtverify.evaluation import embed_files, read_trials, score_trials
    from rtverify.metrics import compute_metrics

    stats = {"default": impostor_stats(args.calib_default),
             "campp": impostor_stats(args.calib_campp)}
    weights = [float(w) for w in args.weights.split(",")]
    sessions = {m: EncoderSession(m, threads=1) for m in stats}
    todo = list(lists(args.data, args.dev))
    if args.emodb:
        todo.append(("emodb-all", Path("runs/emodb/emodb-all.txt"), args.emodb))
    print("impostor mean / std on calib6:", {m: tuple(round(x, 4) for x in s)
                                             for m, s in stats.items()})
    print("list", "default", "campp", *(f"fused w={w:g}" for w in weights))
    for name, trials, root in todo:
        t = read_trials(trials, root)
        z = {}
        row = [name]
        for m, session in sessions.items():
            emb = embed_files(session, [Path(root) / f for f in t.takes],
                              cache_dir=args.cache).voiceprints(t.takes, t.files)
            s = score_trials(t, emb.vectors)
            row.append(f"{100 * compute_metrics(s, t.labels).eer:.2f}")
            z[m] = (s - stats[m][0]) / stats[m][1]
        ok = np.isfinite(z["default"]) & np.isfinite(z["campp"])
        for w in weights:
            fused = np.where(ok, w * z["default"] + (1 - w) * z["campp"], -np.inf)
            row.append(f"{100 * compute_metrics(fused, t.labels).eer:.2f}")
        print(*row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
