"""Two shipped encoders as one model: score fusion (issue 11: "score fusion of the two models is
welcome if it pays").

A fusion model is a sidecar without an ONNX file of its own (``rtverify/models/fusion.json``):
its ``fusion.parts`` name the component models (shipped names or paths beside the sidecar) and
their weights. Everything downstream of the encoder sees one model:

* its front-end (:class:`ConcatFeatureConfig`, :class:`StreamingConcat`) runs every component's
  own front-end on the same audio and puts their rows side by side, aligned on the frames'
  centres (the LSTM's 40 mel power columns, then CAM++'s 80 fbank columns);
* a window of those rows (the sidecar's ``window``: CAM++'s 3 s, hop 1.5 s) is embedded by each
  component on its own columns (:meth:`FusionSession.embed`: a component whose own window is
  shorter embeds its windows across it and averages them; one whose window is longer takes the
  rows as a short segment, with its own ``short_views``), and the unit embeddings are joined as
  ``[sqrt(w_1) e_1, sqrt(w_2) e_2]``: a unit vector whose cosine with another such vector is
  ``w_1 cos_1 + w_2 cos_2``, the weighted sum of the components' cosines.

So segmentation, pooling, turns, band matching, calibration, enrolment and the store all work on
the fused vector as on any model's embedding, and a fused score is calibrated like any other
(``python -m export.calibrate --model fusion``). Its ``model_id`` is derived from the components'
ids and the weights: a voiceprint of the fusion is refused when a component changes, as any
voiceprint is under another model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config import FeatureConfig
from ..errors import ModelError
from .fbank import FbankConfig

FUSION_KEY = "fusion"
"""The sidecar block that makes a model a fusion of others."""


def feature_config(data: Mapping[str, Any]) -> "FeatureConfig | FbankConfig | ConcatFeatureConfig":
    """A front-end configuration from a sidecar's ``features`` block, by its ``kind``."""
    kind = data.get("kind")
    if kind == FbankConfig.KIND:
        return FbankConfig.from_dict(data)
    if kind == ConcatFeatureConfig.KIND:
        return ConcatFeatureConfig.from_dict(data)
    return FeatureConfig.from_dict(data)


def _centre_samples(cfg) -> float:
    """Where a front-end's first row is centred (samples after the signal's start): mel rows
    are centred on their hop (zero padding before the first sample), Kaldi's ``snip_edges``
    rows start at the first sample."""
    if isinstance(cfg, FbankConfig):
        return cfg.frame_length / 2.0
    return 0.0


@dataclass(frozen=True)
class ConcatFeatureConfig:
    """Several front-ends side by side (a fusion model's input). Every part must have the same
    sample rate and hop."""

    parts: tuple

    KIND = "concat"

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise ValueError("a concatenated front-end needs at least two parts")
        rates = {p.sample_rate_hz for p in self.parts}
        hops = {p.hop_length for p in self.parts}
        if len(rates) != 1 or len(hops) != 1:
            raise ValueError(f"the parts' sample rates {sorted(rates)} and hops {sorted(hops)} "
                             "must agree")

    @property
    def n_mels(self) -> int:
        """Columns of a row: the parts' columns together."""
        return sum(p.n_mels for p in self.parts)

    @property
    def sample_rate_hz(self) -> int:
        return self.parts[0].sample_rate_hz

    @property
    def hop_length(self) -> int:
        return self.parts[0].hop_length

    @property
    def columns(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of each part's columns in a row."""
        out, at = [], 0
        for p in self.parts:
            out.append((at, at + p.n_mels))
            at += p.n_mels
        return out

    @property
    def skips(self) -> list[int]:
        """Leading rows each part drops so that row ``i`` of every part is centred within half
        a hop of the others (count)."""
        centres = [_centre_samples(p) for p in self.parts]
        late = max(centres)
        return [int(round((late - c) / self.hop_length)) for c in centres]

    def to_dict(self) -> dict:
        return {"kind": self.KIND, "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConcatFeatureConfig":
        data = dict(data)
        if data.pop("kind", cls.KIND) != cls.KIND:
            raise ValueError(f"features.kind must be {cls.KIND!r}")
        parts = data.pop("parts")
        if data:
            raise ValueError(f"unknown concatenated feature settings {sorted(data)}")
        return cls(tuple(feature_config(p) for p in parts))


class StreamingConcat:
    """The streaming front-end of :class:`ConcatFeatureConfig`: every part's streaming front-end
    on the same samples, rows emitted when every part has them (the interface of
    :class:`~rtverify.core.features.StreamingFeatures`). A part with rows the others have not
    reached yet keeps them for the next call; at :meth:`flush` the rows some part lacks are
    dropped (Kaldi keeps no partial frame, the centred mel rows end with padding)."""

    def __init__(self, cfg: ConcatFeatureConfig) -> None:
        from .encoder import streaming_features

        self.cfg = cfg
        self._fronts = [streaming_features(p) for p in cfg.parts]
        self.reset()

    def reset(self) -> None:
        for f in self._fronts:
            f.reset()
        self._queued = [np.zeros((0, p.n_mels), np.float32) for p in self.cfg.parts]
        self._skip = list(self.cfg.skips)

    def ready_rows(self, n_more: int) -> int:
        """How many rows a :meth:`push` of ``n_more`` further samples would return (count)."""
        return max(0, min(len(q) + f.ready_rows(n_more) - s
                          for q, f, s in zip(self._queued, self._fronts, self._skip)))

    def _take(self, new: list[np.ndarray]) -> np.ndarray:
        for i, rows in enumerate(new):
            if self._skip[i] and len(rows):
                drop = min(self._skip[i], len(rows))
                rows, self._skip[i] = rows[drop:], self._skip[i] - drop
            q = self._queued[i]
            self._queued[i] = np.concatenate([q, rows]) if len(q) else rows
        k = min(len(q) for q in self._queued)
        out = np.concatenate([q[:k] for q in self._queued], axis=1).astype(np.float32, copy=False)
        self._queued = [q[k:] for q in self._queued]
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; return the rows every part has completed, float32 ``(k, n_mels)``."""
        return self._take([f.push(samples) for f in self._fronts])

    def flush(self) -> np.ndarray:
        """End the signal: the last rows every part has, then reset."""
        rows = self._take([f.flush() for f in self._fronts])
        self.reset()
        return rows


def is_fusion_sidecar(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a fusion model's sidecar (a ``.json`` file with a ``fusion`` block)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and FUSION_KEY in data


def fusion_model_id(parts: list[tuple[str, float]]) -> str:
    """The id of a fusion of models ``(model_id, weight)``: changes with either."""
    text = json.dumps([[m, round(float(w), 6)] for m, w in parts])
    return "fusion-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def read_parts(data: Mapping[str, Any], where: Path) -> list[tuple[str, float]]:
    """The ``(model, weight)`` pairs of a fusion sidecar, weights scaled to sum to 1. A model is
    a shipped model's name or a path relative to the sidecar's folder."""
    try:
        parts = [(str(p["model"]), float(p["weight"])) for p in data[FUSION_KEY]["parts"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{where}: invalid fusion block ({type(err).__name__}: {err})") from None
    if len(parts) < 2 or not all(math.isfinite(w) and w > 0 for _, w in parts):
        raise ModelError(f"{where}: a fusion needs two or more parts with positive weights")
    total = sum(w for _, w in parts)
    return [(m, w / total) for m, w in parts]


def part_path(model: str, where: Path) -> str:
    """A part's model as :func:`~rtverify.core.encoder.resolve_model` takes it: a shipped name
    stays a name, a relative path is taken from the sidecar's folder."""
    if os.sep in model or "/" in model or model.endswith(".onnx") or model.endswith(".json"):
        p = Path(model)
        return os.fspath(p if p.is_absolute() else where.parent / p)
    return model


class FusionSession:
    """Mixin of :class:`~rtverify.core.encoder.EncoderSession` for a fusion sidecar (the class
    is made in :mod:`rtverify.core.encoder`): the component sessions, and :meth:`embed` over
    concatenated rows."""

    parts: list
    weights: np.ndarray

    def _open_fusion(self, path: Path, threads: int) -> None:
        from .encoder import EncoderSession, ModelInfo

        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = read_parts(data, path)
        self.parts = [EncoderSession(part_path(m, path), threads=threads) for m, _ in pairs]
        if any(isinstance(p, FusionSession) for p in self.parts):
            raise ModelError(f"{path}: a fusion's parts must be encoders, not fusions")
        self.weights = np.array([w for _, w in pairs])
        expect_id = fusion_model_id([(p.model_id, w) for p, (_, w) in zip(self.parts, pairs)])
        feats = ConcatFeatureConfig(tuple(p.features for p in self.parts))
        dim = sum(p.dim for p in self.parts)
        if data.get("model_id") != expect_id:
            raise ModelError(f"{path}: model_id {data.get('model_id')!r} does not match its parts "
                             f"(expected {expect_id!r}; a part changed: rebuild and recalibrate "
                             "with python -m export.fusion)")
        if data.get("features") != json.loads(json.dumps(feats.to_dict())) or \
                data.get("embedding_dim") != dim:
            raise ModelError(f"{path}: features or embedding_dim do not match its parts "
                             "(rebuild with python -m export.fusion)")
        self.info = ModelInfo.from_sidecar(data, str(path))
        self._scale = np.sqrt(self.weights).astype(np.float32)
        self._columns = feats.columns

    def _embed_part(self, part, rows: np.ndarray) -> np.ndarray:
        """Unit embeddings ``(batch, dim)`` of one part for rows ``(batch, time, n_mels)``: its
        own windows across them (averaged) when they are longer than its window, its short
        views when shorter."""
        from .encoder import embed_short, l2_normalize

        b, t, _ = rows.shape
        w = part.window.window_frames
        if t == w:
            return part.embed(rows)
        if t > w:
            n = -(-t // w)
            starts = np.linspace(0, t - w, n).round().astype(int)
            windows = np.concatenate([rows[:, s:s + w] for s in starts])  # (n * b, w, m)
            emb = part.embed(windows).reshape(n, b, -1)
            return l2_normalize(emb.sum(axis=0))
        # as SegmentEmbedder embeds a segment shorter than the part's window
        return l2_normalize(np.stack([embed_short(part, r) for r in rows]))

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Embed windows of concatenated rows: float32 ``(batch, time, n_mels)`` -> unit
        ``(batch, dim)``, the parts' unit embeddings scaled by the square roots of their
        weights."""
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if frames.ndim != 3 or frames.shape[2] != self.features.n_mels:
            raise ValueError(f"expected frames of shape (batch, time, {self.features.n_mels}), "
                             f"got {frames.shape}")
        out = [s * self._embed_part(p, frames[:, :, a:b])
               for p, s, (a, b) in zip(self.parts, self._scale, self._columns)]
        return np.concatenate(out, axis=1).astype(np.float32)
