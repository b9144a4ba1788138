"""The torch reference for the shipped CAM++: whole-file embeddings, cosine scores, EER.

    python -m training.campp_eval --trials ../shared/data/trials/X.txt --root ../shared/data

Each file is embedded whole (no VAD, no windows) by the torch model on the numpy Kaldi fbank with
utterance mean normalisation (:func:`training.campp.embed_utterance`); trials are read and scored
with the runtime's own reader and metrics (:mod:`rtverify.evaluation`, :mod:`rtverify.metrics`).
The shipped ``--model campp`` must stay within 0.3 EER points of this on every list.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rtverify.evaluation import read_trials
from rtverify.metrics import compute_metrics

from .campp import embed_utterance, load_campp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=Path, required=True, nargs="+")
    ap.add_argument("--root", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from .data import load_audio

    model = load_campp()
    for t in args.trials:
        trials = read_trials(t, args.root)
        vecs = []
        for f in trials.files:
            e = embed_utterance(model, load_audio(Path(args.root) / f)).numpy()
            vecs.append(e / np.linalg.norm(e))
        v = np.stack(vecs)
        scores = (v[trials.a] * v[trials.b]).sum(axis=1)
        m = compute_metrics(scores, trials.labels)
        print(json.dumps({"trials": str(t), "eer": round(m.eer, 4), "min_dcf": round(m.min_dcf, 4),
                          "n_files": len(trials.files)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
