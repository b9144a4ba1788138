"""python -m export.fusion: write a fusion of shipped models as a model of its own
(``rtverify/models/fusion.json``; :mod:`rtverify.core.fusion` says how it runs).

    python -m export.fusion [--parts default-short:0.4,campp:0.6] [--out rtverify/models/fusion.json]
    OMP_NUM_THREADS=1 python -m export.calibrate --root ../shared/data --model fusion \\
        --out runs/calib-fusion --snr --enrol-takes 1,2 --write-sidecar

The weights are those ``python -m tools.fusion_eval`` measured (0.4 on the LSTM, scores
standardised by each model's calib6 impostor statistics, whose standard deviations are equal
within 2 %: 0.104 and 0.107, so plain cosines weighted 0.4 / 0.6 are the same fusion). The
window is CAM++'s (3 s every 1.5 s, a shorter segment embedded whole) and so is its segment
context; the LSTM embeds its own 1.6 s windows across each. Until ``export.calibrate`` writes
the fused thresholds, the decision, turn and enrolment settings are the parts' weighted means
(a fused cosine is the weighted mean of the parts' cosines); the builder keeps a calibrated
block when the parts and weights have not changed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from rtverify.core.encoder import MODELS_DIR, SIDECAR_FORMAT, EncoderSession
from rtverify.core.fusion import ConcatFeatureConfig, FUSION_KEY, fusion_model_id
from rtverify.core.turns import TurnConfig
from training.cli import user_errors

DEFAULT_PARTS = (("default-short", 0.4), ("campp", 0.6))
TURN_COSINES = ("suspect_cos", "restart_cos", "split_distance", "edge_cos")
"""Turn settings that are cosines (or differences of them): a fusion's are the parts' weighted
means until measured (``python -m tools.turn_bars --model fusion``)."""


def _mean_table(tables: list, weights: list[float]) -> list:
    """The weighted mean of several ``[[x, y], ...]`` tables, on the union of their ``x``
    (each interpolated, held at its ends)."""
    tables = [t for t in tables if t]
    if len(tables) != len(weights):
        return []
    xs = sorted({float(x) for t in tables for x, _ in t})
    ys = np.zeros(len(xs))
    for t, w in zip(tables, weights):
        ys += w * np.interp(xs, [p[0] for p in t], [p[1] for p in t])
    return [[x, round(float(y), 4)] for x, y in zip(xs, ys)]


def provisional_decision(infos: list[dict], weights: list[float]) -> dict:
    """Decision settings for a fusion before it is calibrated: the parts' weighted means."""
    decs = [i["decision"] for i in infos]
    out = {"threshold": round(sum(w * d["threshold"] for d, w in zip(decs, weights)), 4),
           "min_speech_s": max(d.get("min_speech_s", 0.5) for d in decs)}
    for key in ("thresholds_by_speech_s", "threshold_offsets_by_snr_db",
                "threshold_offsets_by_enrol_s"):
        table = _mean_table([d.get(key) for d in decs], weights)
        if table:
            out[key] = table
    return out


def build(parts: list[tuple[str, float]], out: Path) -> dict:
    """The fusion sidecar of ``parts`` (``(model, weight)``), written to ``out`` (calibrated
    blocks of an existing sidecar of the same parts and weights are kept)."""
    total = sum(w for _, w in parts)
    parts = [(m, w / total) for m, w in parts]
    sessions = [EncoderSession(m, threads=1) for m, _ in parts]
    weights = [w for _, w in parts]
    raws = [s.info.raw for s in sessions]
    feats = ConcatFeatureConfig(tuple(s.features for s in sessions))
    longest = max(sessions, key=lambda s: s.window.window_frames)
    turns = {}
    cfgs = [TurnConfig.for_model(r) for r in raws]
    for key in TURN_COSINES:
        vals = [getattr(c, key) for c in cfgs]
        if isinstance(vals[0], tuple):
            turns[key] = [round(sum(w * v[0] for v, w in zip(vals, weights)), 3)]
        else:
            turns[key] = round(sum(w * v for v, w in zip(vals, weights)), 3)
    bars = [r.get("enrolment", {}).get("consistency", 0.70) for r in raws]
    model_id = fusion_model_id([(s.model_id, w) for s, w in zip(sessions, weights)])
    data = {
        "format": SIDECAR_FORMAT,
        "name": out.stem,
        "model_id": model_id,
        FUSION_KEY: {"parts": [{"model": m, "model_id": s.model_id, "weight": round(w, 6)}
                               for (m, w), s in zip(parts, sessions)],
                     "how": "unit embeddings of the parts joined as [sqrt(w_i) e_i]: the cosine "
                            "of two such vectors is the weighted mean of the parts' cosines"},
        "input": {"name": "frames", "shape": ["batch", "time", feats.n_mels],
                  "dtype": "float32"},
        "output": {"name": "embedding", "shape": ["batch", sum(s.dim for s in sessions)],
                   "dtype": "float32", "l2_normalised": True},
        "embedding_dim": sum(s.dim for s in sessions),
        "features": feats.to_dict(),
        "window": longest.info.raw["window"],
        "segment_context_ms": {
            "pre": max(s.info.context_ms[0] for s in sessions),
            "post": max(s.info.context_ms[1] for s in sessions)},
        "turns": turns,
        "enrolment": {"consistency": round(sum(b * w for b, w in zip(bars, weights)), 3)},
        "decision": provisional_decision(raws, weights),
        "calibration": {"status": "provisional: the parts' weighted means, not calibrated"},
    }
    if out.is_file():
        old = json.loads(out.read_text(encoding="utf-8"))
        if old.get("model_id") == model_id:
            for key in ("decision", "calibration", "dev_eval", "turns", "enrolment"):
                if key in old:
                    data[key] = old[key]
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return data


def _parts(text: str) -> list[tuple[str, float]]:
    out = []
    for item in text.split(","):
        model, _, weight = item.rpartition(":")
        out.append((model, float(weight)))
    return out


@user_errors("export.fusion")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.fusion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=_parts, default=list(DEFAULT_PARTS),
                    help="model:weight,... (default default-short:0.4,campp:0.6)")
    ap.add_argument("--out", type=Path, default=MODELS_DIR / "fusion.json")
    args = ap.parse_args(argv)
    data = build(args.parts, args.out)
    print(f"{args.out}: {data['model_id']}, {data['embedding_dim']}-d, "
          f"{data['calibration'].get('status', 'calibrated')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
