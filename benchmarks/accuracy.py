"""EER and minDCF on every trial list, for rtverify's models (through the runtime path) and for
resemblyzer (its own ``preprocess_wav`` + ``embed_utterance``), scored the same way.

rtverify goes through :func:`rtverify.evaluation.evaluate` (what ``rtverify eval`` reports) when
that module is in the checkout; until then through :func:`rtverify.core.pipeline.embed_recording`
with the same rules (a file whose only speech is shorter than the segmenter's minimum is embedded
from it anyway; a file with no speech at all scores -inf in every trial). Embeddings are cached
per model and file under ``benchmarks/cache/embeddings``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import CACHE
from .runner import env_for, run

EMB_CACHE = CACHE / "embeddings"


def have_evaluation() -> bool:
    return importlib.util.find_spec("rtverify.evaluation") is not None


def read_trials(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    labels, a, b = [], [], []
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) == 3 and not f[0].startswith("#"):
            labels.append(int(f[0]))
            a.append(f[1])
            b.append(f[2])
    return np.asarray(labels), a, b


def metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """EER and minDCF (p_target 0.01, C_miss = C_fa = 1), as ``rtverify eval`` computes them."""
    if have_evaluation():
        from rtverify.evaluation import compute_metrics

        m = compute_metrics(scores, labels)
        return {"eer": m.eer, "min_dcf": m.min_dcf, "trials": m.trials}
    # Stand-in until rtverify.evaluation is merged: same definitions (accept when score >= t).
    tar = np.sort(scores[labels == 1])
    non = np.sort(scores[labels == 0])
    thr = np.append(np.unique(np.concatenate([tar, non])), np.inf)
    p_miss = np.searchsorted(tar, thr, side="left") / len(tar)
    p_fa = 1.0 - np.searchsorted(non, thr, side="left") / len(non)
    i = int(np.argmax(p_miss >= p_fa))
    if i == 0:
        eer = p_miss[0]
    else:
        d0, d1 = p_fa[i - 1] - p_miss[i - 1], p_fa[i] - p_miss[i]
        eer = p_miss[i - 1] + d0 / (d0 - d1) * (p_miss[i] - p_miss[i - 1])
    dcf = (0.01 * p_miss + 0.99 * p_fa) / 0.01
    return {"eer": float(eer), "min_dcf": float(dcf.min()), "trials": len(scores)}


def _cosine(vectors: dict[str, np.ndarray], a: list[str], b: list[str]) -> np.ndarray:
    va = np.stack([vectors[x] for x in a])
    vb = np.stack([vectors[x] for x in b])
    s = np.sum(va * vb, axis=1, dtype=np.float64)
    return np.where(np.isnan(s), -np.inf, s)


def _embed_rtverify_fallback(session, root: Path, files: list[str]) -> dict[str, np.ndarray]:
    from rtverify.config import SegmenterConfig
    from rtverify.core.pipeline import embed_recording
    from rtverify.io.sources import FileSource

    from .store import EmbeddingStore

    seg = SegmenterConfig()
    key = hashlib.sha256(Path(session.path).read_bytes() + json.dumps(
        [dataclasses.asdict(session.window), dataclasses.asdict(seg)]).encode()).hexdigest()[:16]
    store = EmbeddingStore(EMB_CACHE, f"rtverify-{key}")
    out = {}
    for i, rel in enumerate(files):
        path = root / rel
        hit = store.get(path)
        if hit is None:
            rec = embed_recording(session, FileSource(path), segmenter=seg)
            note = ""
            if rec.vector is None:  # only speech shorter than min_speech_ms: embed it anyway
                rec = embed_recording(session, FileSource(path),
                                      segmenter=dataclasses.replace(seg, min_speech_ms=1))
                note = "short_only" if rec.vector is not None else "no_speech"
            vec = rec.vector if rec.vector is not None else np.full(session.dim, np.nan)
            store.put(path, vec, note)
            hit = (vec, note)
            if i % 500 == 499:
                store.save()
        out[rel] = hit[0]
    store.save()
    return out


def rtverify_list(model: Path, trials: Path, root: Path) -> dict:
    from rtverify.core.encoder import EncoderSession

    session = EncoderSession(model, threads=1)
    if have_evaluation():
        from rtverify.evaluation import evaluate

        r = evaluate(trials, root, session, cache_dir=EMB_CACHE)
        return {k: v for k, v in r.items() if not k.startswith("_")} | {"via": "rtverify.evaluation"}
    labels, a, b = read_trials(trials)
    vectors = _embed_rtverify_fallback(session, root, sorted(set(a) | set(b)))
    scores = _cosine(vectors, a, b)
    return metrics(scores, labels) | {"via": "rtverify.core.pipeline.embed_recording",
                                      "trials_without_speech": int(np.isinf(scores).sum())}


def resemblyzer_list(trials: Path, root: Path) -> dict:
    labels, a, b = read_trials(trials)
    files = sorted(set(a) | set(b))
    with tempfile.TemporaryDirectory() as tmp:
        lst, npz = Path(tmp) / "files.txt", Path(tmp) / "emb.npz"
        lst.write_text("\n".join(files) + "\n")
        r = run([sys.executable, "-m", "benchmarks.reference", "embed", "--root", str(root),
                 "--files", str(lst), "--out", str(npz), "--cache", str(EMB_CACHE)],
                env=env_for(1), timeout_s=7200).check()
        info = json.loads(r.lines[-1][1])
        with np.load(npz) as z:
            vectors = dict(zip(z["files"].tolist(), z["vectors"]))
    return metrics(_cosine(vectors, a, b), labels) | {
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
