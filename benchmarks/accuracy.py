"""EER and minDCF on every trial list, for rtverify's models (through the runtime path) and for
resemblyzer (its own ``preprocess_wav`` + ``embed_utterance``), scored the same way.

Both go through :mod:`rtverify.evaluation`: rtverify's models through
:func:`~rtverify.evaluation.evaluate` (exactly what ``rtverify eval`` reports), resemblyzer's
embeddings through the same trials reader, :func:`~rtverify.evaluation.score_trials` (plain
cosine) and :func:`~rtverify.metrics.compute_metrics`. Embeddings are cached per model and file
under ``benchmarks/cache/embeddings`` (:class:`~rtverify.evaluation.EmbeddingCache`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from rtverify import evaluation as ev
from rtverify.metrics import compute_metrics

from . import CACHE
from .runner import env_for, run

EMB_CACHE = CACHE / "embeddings"


def rtverify_list(model: Path, trials: Path, root: Path) -> dict:
    """``rtverify eval --json`` of ``model`` on one list (plus ``via``)."""
    from rtverify.core.encoder import EncoderSession

    session = EncoderSession(model, threads=1)
    r = ev.evaluate(trials, root, session, cache_dir=EMB_CACHE)
    return {k: v for k, v in r.items() if not k.startswith("_")} | {"via": "rtverify.evaluation"}


def resemblyzer_list(trials: Path, root: Path) -> dict:
    t = ev.read_trials(trials, root)
    with tempfile.TemporaryDirectory() as tmp:
        lst, npz = Path(tmp) / "files.txt", Path(tmp) / "emb.npz"
        lst.write_text("\n".join(t.files) + "\n")
        r = run([sys.executable, "-m", "benchmarks.reference", "embed", "--root", str(root),
                 "--files", str(lst), "--out", str(npz), "--cache", str(EMB_CACHE)],
                env=env_for(1), timeout_s=7200).check()
        info = json.loads(r.lines[-1][1])
        with np.load(npz) as z:
            by_file = dict(zip(z["files"].tolist(), z["vectors"]))
    scores = ev.score_trials(t, np.stack([by_file[f] for f in t.files]))
    m = compute_metrics(scores, t.labels)
    return {"eer": m.eer, "min_dcf": m.min_dcf, "trials": m.trials,
            "files": info["files"], "files_untrimmed": info["untrimmed"],
            "via": "resemblyzer preprocess_wav + embed_utterance"}


def accuracy(models: dict[str, Path], data: Path, log=print, only: list[str] | None = None) -> dict:
    out = {}
    lists = [t for t in sorted((data / "trials").glob("*.txt")) if not only or t.stem in only]
    if not lists:
        raise FileNotFoundError(f"{data / 'trials'}: no trial lists (*.txt) to evaluate")
    for trials in lists:
        row = {}
        for name, model in models.items():
            row[f"rtverify:{name}"] = rtverify_list(model, trials, data)
            log(f"  {trials.name} rtverify {name}: EER {100 * row[f'rtverify:{name}']['eer']:.2f} %")
        row["resemblyzer"] = resemblyzer_list(trials, data)
        log(f"  {trials.name} resemblyzer: EER {100 * row['resemblyzer']['eer']:.2f} %")
        out[trials.stem] = row
    return out
