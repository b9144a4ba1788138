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
        lst.write_text("\n".join(t.takes) + "\n")
        r = run([sys.executable, "-m", "benchmarks.reference", "embed", "--root", str(root),
                 "--files", str(lst), "--out", str(npz), "--cache", str(EMB_CACHE)],
                env=env_for(1), timeout_s=7200).check()
        info = json.loads(r.lines[-1][1])
        with np.load(npz) as z:
            by_file = dict(zip(z["files"].tolist(), z["vectors"]))
    scores = ev.score_trials(t, ev.entry_vectors(t, np.stack([by_file[f] for f in t.takes])))
    m = compute_metrics(scores, t.labels)
    return {"eer": m.eer, "min_dcf": m.min_dcf, "trials": m.trials,
            "files": info["files"], "files_untrimmed": info["untrimmed"],
            "via": "resemblyzer preprocess_wav + embed_utterance"}


def parse_list(spec: str) -> tuple[str, Path, Path]:
    """``TRIALS=ROOT`` (``--list``): a trials file outside the shared data and the folder its
    paths are relative to, e.g. ``runs/sc/sc-1s-vp3.txt=/data/speechcommands`` (tools.sc_trials)
    or ``runs/emodb/emodb-all.txt=/data/emodb/wav`` (tools.emodb_trials). Named by the file."""
    trials, sep, root = spec.partition("=")
    if not sep or not trials or not root:
        raise ValueError(f"--list {spec!r}: expected TRIALS=ROOT")
    trials_p, root_p = Path(trials), Path(root)
    if not trials_p.is_file():
        raise FileNotFoundError(f"{trials_p}: trials list not found")
    if not root_p.is_dir():
        raise FileNotFoundError(f"{root_p}: audio folder not found")
    return trials_p.stem, trials_p, root_p


def accuracy(models: dict[str, Path], data: Path, log=print, only: list[str] | None = None,
             dev: Path | None = None, extra_lists: list[tuple[str, Path, Path]] = ()) -> dict:
    """Every list of ``data/trials`` (or those named in ``only``), then, with ``dev``, the noisy,
    reverberant and telephone-band dev lists that ``python -m training.dev_lists`` built there
    (named ``dev-<list>``; see :func:`export.dev_eval.lists`), then ``extra_lists``
    (:func:`parse_list`: corpora outside the shared data, such as EmoDB and Speech Commands)."""
    from export.dev_eval import SHARED, lists as all_lists

    out = {}
    lists = [(t.stem, t, data) for t in sorted((data / "trials").glob("*.txt"))
             if not only or t.stem in only]
    if not lists:
        raise FileNotFoundError(f"{data / 'trials'}: no trial lists (*.txt) to evaluate")
    if dev is not None:
        extra = [(n, t, r) for n, t, r in all_lists(data, dev) if n not in SHARED]
        missing = [str(t) for _, t, _ in extra if not t.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: dev list missing (build the lists with "
                                    f"python -m training.dev_lists --root {data} --out {dev})")
        lists += extra
    lists += list(extra_lists)
    for stem, trials, root in lists:
        row = {}
        for name, model in models.items():
            row[f"rtverify:{name}"] = rtverify_list(model, trials, root)
            log(f"  {stem} rtverify {name}: EER {100 * row[f'rtverify:{name}']['eer']:.2f} %")
        row["resemblyzer"] = resemblyzer_list(trials, root)
        log(f"  {stem} resemblyzer: EER {100 * row['resemblyzer']['eer']:.2f} %")
        out[stem] = row
    return out
