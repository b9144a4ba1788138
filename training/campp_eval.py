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

from rtverify.evaluation import entry_vectors, read_trials, score_trials
from rtverify.metrics import compute_metrics

from .campp import embed_utterance, load_campp
from .cli import user_errors


@user_errors("training.campp_eval")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=Path, required=True, nargs="+")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--decided-only", action="store_true",
                    help="also report the figures on the trials the runtime decides: a file in "
                         "which its segmenter finds no speech at all (a very quiet recording) "
                         "scores -inf there, as in `rtverify eval`, so the gap to the shipped "
                         "model is the model's, not the segmenter's")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from .data import load_audio

    model = load_campp()
    for t in args.trials:
        trials = read_trials(t, args.root)
        takes = trials.takes  # a several-take voiceprint (a+b+c) is the mean of its takes
        vecs, silent = [], []
        for f in takes:
            audio = load_audio(Path(args.root) / f)
            e = embed_utterance(model, audio).numpy()
            vecs.append(e / np.linalg.norm(e))
            silent.append(args.decided_only and not _has_speech(audio))
        v = np.stack(vecs).astype(np.float32)

        def scored(rows: np.ndarray) -> np.ndarray:
            return score_trials(trials, entry_vectors(trials, rows))

        m = compute_metrics(scored(v), trials.labels)
        out = {"trials": str(t), "eer": round(m.eer, 4), "min_dcf": round(m.min_dcf, 4),
               "n_files": len(takes)}
        if args.decided_only:
            silent_a = np.array(silent)
            d = compute_metrics(scored(np.where(silent_a[:, None], np.nan, v)), trials.labels)
            out.update({"files_without_speech": int(silent_a.sum()),
                        "eer_decided": round(d.eer, 4), "min_dcf_decided": round(d.min_dcf, 4)})
        print(json.dumps(out), flush=True)
    return 0


def _has_speech(audio: np.ndarray) -> bool:
    """Whether the runtime's segmenter finds any speech at all (eval's second look keeps even
    segments shorter than ``min_speech_ms``)."""
    import dataclasses

    from rtverify.config import SegmenterConfig

    from .data import speech_segments

    return bool(speech_segments(audio, dataclasses.replace(SegmenterConfig(), min_speech_ms=1)))


if __name__ == "__main__":
    raise SystemExit(main())
