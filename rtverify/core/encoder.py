"""The speaker encoder at run time: an ONNX model plus its JSON sidecar, run by onnxruntime.

The model takes ``frames``, float32 ``[batch, time, n_mels]`` spectrogram rows as made by
:mod:`rtverify.core.features` with the sidecar's feature settings, and returns ``embedding``, float32
``[batch, dim]``, L2-normalised. :class:`SegmentEmbedder` cuts a growing segment into windows and
embeds each one as soon as it is complete, so a decision at the end of an utterance costs only
its last window.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DecisionConfig, FeatureConfig, SegmenterConfig, WindowConfig
from ..errors import InputError, ModelError
from .fbank import FbankConfig, StreamingFbank
from .fusion import (ConcatFeatureConfig, FusionSession, StreamingConcat, feature_config,
                     is_fusion_sidecar)

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "rtverify-encoder/1"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "default.onnx"


THREADS_ENV = "RTVERIFY_THREADS"
"""Environment variable with the default number of onnxruntime intra-op threads."""
MAX_THREADS = 64


def default_threads() -> int:
    """onnxruntime intra-op threads when a session is not told: ``$RTVERIFY_THREADS`` or 1.

    Read when a session is created, never at import; nothing in rtverify sets thread variables
    (``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` are left to the user: numpy's only matrix
    product here, the mel filterbank, is too small to use a second thread).
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or not 1 <= int(value) <= MAX_THREADS:
        raise ModelError(f"{THREADS_ENV}={value!r}: must be a whole number from 1 to {MAX_THREADS}")
    return int(value)


def check_threads(threads, what: str = "threads") -> int:
    """``threads`` as an int from 1 to :data:`MAX_THREADS`, else an :class:`InputError` (a
    million had onnxruntime start a million threads: 24 GB, for minutes)."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or \
            not 1 <= threads <= MAX_THREADS:
        raise InputError(f"{what} {threads!r}: must be a whole number from 1 to {MAX_THREADS}")
    return int(threads)


def shipped_models() -> list[str]:
    """Names of the models shipped in the package (``rtverify/models/<name>.onnx`` with its
    sidecar, and fusions of them: ``rtverify/models/<name>.json`` with a ``fusion`` block)."""
    names = {p.stem for p in MODELS_DIR.glob("*.onnx") if sidecar_path(p).is_file()}
    names |= {p.stem for p in MODELS_DIR.glob("*.json") if is_fusion_sidecar(p)}
    return sorted(names)


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The ``.onnx`` file for ``--model``: ``None`` is the shipped default, a bare name such as
    ``campp`` (no directory, no ``.onnx``) a shipped model, anything else a path. A fusion of
    models has no ``.onnx`` file: its sidecar (``fusion.json``) is the model's path."""
    if model is None:
        return DEFAULT_MODEL
    text = os.fspath(model)
    if not text.strip():  # Path("") is "." (".: model file not found")
        raise ModelError(f"--model {text!r}: give a shipped model's name "
                         f"({', '.join(shipped_models())}) or a file")
    if os.sep not in text and "/" not in text and not text.endswith((".onnx", ".json")):
        shipped = MODELS_DIR / f"{text}.onnx"
        if shipped.is_file():
            return shipped
        if is_fusion_sidecar(MODELS_DIR / f"{text}.json"):
            return MODELS_DIR / f"{text}.json"
        if not Path(text).exists():
            raise ModelError(f"--model {text!r}: no shipped model of that name (shipped: "
                             f"{', '.join(shipped_models())}) and no such file")
    return Path(text)


def streaming_features(cfg: "FeatureConfig | FbankConfig | ConcatFeatureConfig"):
    """The streaming front-end for a model's feature settings: :class:`StreamingFeatures` for mel
    power rows, :class:`~rtverify.core.fbank.StreamingFbank` for Kaldi fbank (CAM++),
    :class:`~rtverify.core.fusion.StreamingConcat` for a fusion's."""
    if isinstance(cfg, FbankConfig):
        return StreamingFbank(cfg)
    if isinstance(cfg, ConcatFeatureConfig):
        return StreamingConcat(cfg)
    from .features import StreamingFeatures

    return StreamingFeatures(cfg)


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return Path(model_path).with_suffix(".json")


@dataclass(frozen=True)
class ModelInfo:
    """What the sidecar says about a model."""

    model_id: str
    """Identifies the weights; voiceprints record it and are refused under another model."""
    features: "FeatureConfig | FbankConfig | ConcatFeatureConfig"
    """The front-end: mel power rows (the LSTM) or, when the sidecar's ``features.kind`` is
    ``"kaldi_fbank"``, Kaldi log-mel fbank rows (CAM++); ``"concat"``: a fusion's parts' rows
    side by side (:mod:`rtverify.core.fusion`)."""
    window: WindowConfig
    decision: DecisionConfig
    embedding_dim: int
    raw: dict
    """The whole sidecar (training data, measured figures, attribution)."""
    context_ms: tuple[int, int] = (0, 0)
    """``(pre, post)``: audio the model wants around each utterance's speech, at least (sidecar
    ``segment_context_ms``); see :meth:`segmenter_config`."""
    short_expert: tuple[str, float] | None = None
    """``(model, below_speech_s)`` from the sidecar's ``short_expert`` block: utterances with
    less speech than that are decided by that model (a shipped model's name, or a path beside
    the sidecar) with its own voiceprint vectors and thresholds (or the tables this sidecar sets
    for it: :attr:`short_expert_decision`, and the scoring it sets for it: ``score_norm``,
    as a sidecar's own, with the cohort file beside the expert); it must read the same rows.
    The default pairs an LSTM trained for noisy and reverberant rooms with the LSTM it was
    distilled from, which is better on words under a second (see :class:`EncoderSession`)."""
    short_expert_min_snr_db: float | None = None
    """The sidecar's ``short_expert.min_snr_db``: the expert decides a short utterance only
    where its estimated SNR is at least this (an unknown SNR counts as clean); below it, the
    model itself does. The default's expert was trained on clean close-talk keywords: in babble
    and rooms the room-trained model is better even on short speech. None: at any SNR."""
    short_expert_decision: dict | None = None
    """The sidecar's ``short_expert.decision``: entries of the expert's own decision block
    (``thresholds_by_speech_s``, ``threshold_offsets_by_snr_db``, parsed as there) that replace
    its own when it decides for this model (:attr:`EncoderSession.short_expert`): the default
    lets through the same share of strangers on short speech as on long
    (``python -m export.calibrate_like --short-expert``), where the expert's own thresholds,
    balanced for keywords, let through 2-6 times more. None: the expert's own."""

    def segmenter_config(self, cfg: SegmenterConfig) -> SegmenterConfig:
        """``cfg`` with at least the model's pre- and post-roll. CAM++ was trained on whole
        recordings, silences included, and scores better with some audio around the speech; the
        post-roll comes out of the pause that already ended the utterance (the segmenter caps it
        there), so it costs no latency."""
        pre, post = self.context_ms
        if pre <= cfg.pre_roll_ms and post <= cfg.post_roll_ms:
            return cfg
        return replace(cfg, pre_roll_ms=max(pre, cfg.pre_roll_ms),
                       post_roll_ms=max(post, cfg.post_roll_ms))

    @classmethod
    def from_sidecar(cls, data: dict[str, Any], where: str) -> "ModelInfo":
        try:
            if data.get("format") != SIDECAR_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {SIDECAR_FORMAT!r}")
            dec = dict(data["decision"])
            points = _table(dec, "thresholds_by_speech_s", "seconds")
            offsets = _table(dec, "threshold_offsets_by_snr_db", "decibels")
            by_enrol = _table(dec, "threshold_offsets_by_enrol_s", "seconds")
            by_fall = _table(dec, "threshold_offsets_by_fall_change_db", "decibels")
            decision = DecisionConfig(threshold=float(dec.pop("threshold")),
                                      min_speech_s=float(dec.pop("min_speech_s", 0.5)),
                                      thresholds_by_speech_s=points,
                                      threshold_offsets_by_snr_db=offsets,
                                      threshold_offsets_by_enrol_s=by_enrol,
                                      threshold_offsets_by_fall_change_db=by_fall)
            features = feature_config(data["features"])
            ctx = data.get("segment_context_ms", {})
            context = (int(ctx.get("pre", 0)), int(ctx.get("post", 0)))
            if not all(0 <= c <= 2000 for c in context):
                raise ValueError(f"segment_context_ms must be 0-2000 ms, got {ctx}")
            expert = data.get("short_expert")
            min_snr = expert_decision = None
            if expert is not None:
                if not isinstance(expert, dict) or \
                        not {"model", "below_speech_s"} <= set(expert) <= \
                        {"model", "below_speech_s", "min_snr_db", "decision", "score_norm"} \
                        or not isinstance(expert["model"], str) or not expert["model"]:
                    raise ValueError("short_expert must be {\"model\": NAME, "
                                     "\"below_speech_s\": SECONDS[, \"min_snr_db\": DB]"
                                     "[, \"decision\": {...}][, \"score_norm\": {...}]}")
                if expert.get("decision") is not None:
                    over = expert["decision"]
                    if not isinstance(over, dict) or not set(over) <= set(EXPERT_OVERRIDES):
                        raise ValueError("short_expert.decision may hold only "
                                         + ", ".join(EXPERT_OVERRIDES))
                    over = dict(over)
                    expert_decision = {k: _table(over, k, unit) for k, unit in
                                       EXPERT_OVERRIDES.items() if k in over}
                below = float(expert["below_speech_s"])
                if not 0.0 < below <= 10.0:
                    raise ValueError(f"short_expert.below_speech_s must be 0-10 s, got {below}")
                if expert.get("min_snr_db") is not None:
                    min_snr = float(expert["min_snr_db"])
                    if not -20.0 <= min_snr <= 100.0:
                        raise ValueError("short_expert.min_snr_db must be -20-100 dB, "
                                         f"got {min_snr}")
                expert = (expert["model"], below)
            return cls(model_id=str(data["model_id"]), features=features,
                       window=WindowConfig.from_dict(data["window"]),
                       decision=decision, embedding_dim=int(data["embedding_dim"]), raw=data,
                       context_ms=context, short_expert=expert,
                       short_expert_min_snr_db=min_snr, short_expert_decision=expert_decision)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"{where}: invalid model sidecar ({type(err).__name__}: {err})") from None


EXPERT_OVERRIDES = {"thresholds_by_speech_s": "seconds", "threshold_offsets_by_snr_db": "decibels"}
"""The decision tables a model's ``short_expert.decision`` may set for its expert (unit of x)."""


def _table(decision: dict, key: str, unit: str) -> tuple[tuple[float, float], ...]:
    """``decision[key]`` (popped): ``(x, y)`` points with increasing, finite ``x`` (in
    ``unit``) and finite ``y``; empty when absent. Raises ValueError naming the key."""
    points = tuple((float(x), float(y)) for x, y in decision.pop(key, None) or [])
    if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
        raise ValueError(f"decision.{key} must have increasing {unit}")
    if not all(math.isfinite(v) for p in points for v in p):
        raise ValueError(f"decision.{key} must hold finite numbers")
    return points


def load_model_info(model_path: str | os.PathLike) -> ModelInfo:
    """Read and check a model's sidecar (without loading the model); ``model_path`` may be a
    shipped model's name (see :func:`resolve_model`)."""
    side = sidecar_path(resolve_model(model_path))
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{side}: model sidecar not found (it must sit beside the .onnx file)") from None
    except (OSError, ValueError) as err:
        raise ModelError(f"{side}: unreadable model sidecar ({err})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{side}: model sidecar is not a JSON object")
    return ModelInfo.from_sidecar(data, str(side))


class EncoderSession:
    """onnxruntime over an encoder model.

    :param model_path: the ``.onnx`` file; its sidecar is the ``.json`` beside it. ``None`` means
        the shipped default model, a bare name (``"campp"``) a shipped model.
    :param threads: onnxruntime intra-op threads; ``None`` means :func:`default_threads` (1
        unless ``$RTVERIFY_THREADS`` says otherwise). One is the default: a live window at batch 1
        gains little from a second thread, and the other core stays free for audio capture, the
        console and whatever else the machine runs (see the README's benchmark section).
    """

    def __new__(cls, model_path: str | os.PathLike | None = None, *,
                threads: int | None = None):
        # a fusion's sidecar opens as a FusedEncoderSession (same interface, two encoders)
        if cls is EncoderSession and resolve_model(model_path).suffix == ".json":
            cls = FusedEncoderSession
        return super().__new__(cls)

    def _locate(self, model_path, threads: int | None, what: str) -> Path:
        """Set :attr:`path` (the model's file, which must exist: ``what`` names it in the
        error) and :attr:`threads`; return the path."""
        path = resolve_model(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: {what} not found")
        self.path = path
        self.threads = default_threads() if threads is None else check_threads(threads)
        return path

    def __init__(self, model_path: str | os.PathLike | None = None, *,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        path = self._locate(model_path, threads, "model file")
        self.info = load_model_info(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: cannot load ONNX model ({str(err).splitlines()[0]})") from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if "frames" not in inputs or "embedding" not in outputs:
            raise ModelError(f"{path}: model must have input 'frames' and output 'embedding', has "
                             f"{sorted(inputs)} -> {sorted(outputs)}")

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def companion_ids(self) -> tuple[str, ...]:
        """Ids of the other models whose vectors of a voice this model scores with (its short
        expert's): what :meth:`~rtverify.store.voiceprints.VoiceprintStore.load_usable` keeps."""
        expert = self.short_expert
        return () if expert is None else (expert[0].model_id,)

    @property
    def short_expert(self) -> "tuple[EncoderSession, float] | None":
        """``(session, below_speech_s)`` of the model that decides utterances with less speech
        than that (sidecar ``short_expert``; loaded on first use), or None. It must read the
        same rows (features and window) as this model: a short utterance's rows are embedded
        again by it, nothing else."""
        spec = self.info.short_expert
        if spec is None:
            return None
        cached = getattr(self, "_short_expert", None)
        if cached is None:
            name, below = spec
            where = name if os.sep not in name and "/" not in name else self.path.parent / name
            expert = EncoderSession(where, threads=self.threads)
            if expert.info.short_expert is not None or expert.features != self.features or \
                    expert.window != self.window:
                raise ModelError(f"{sidecar_path(self.path)}: short_expert {name!r} must read "
                                 "the same rows (features, window) and have no expert of its own")
            if self.info.short_expert_decision:  # this model's thresholds for it (its own
                # session: the expert loaded by name elsewhere keeps its own)
                expert.info = replace(expert.info, decision=replace(
                    expert.info.decision, **self.info.short_expert_decision))
            norm = self.info.raw["short_expert"].get("score_norm")
            if norm:  # and this model's scoring of it (a cohort file beside the expert)
                expert.info = replace(expert.info, raw={**expert.info.raw, "score_norm": norm})
            cached = self._short_expert = (expert, below)
        return cached

    def expert_decides(self, speech_s: float, snr_db: float | None) -> bool:
        """Whether the short expert (if any) decides an utterance of ``speech_s`` voiced seconds
        at an estimated SNR of ``snr_db`` dB (None or not finite: unknown, taken as clean): less
        speech than its bar, and (``short_expert_min_snr_db``) clean enough for it."""
        spec = self.info.short_expert
        if spec is None or not speech_s < spec[1]:
            return False
        bar = self.info.short_expert_min_snr_db
        return bar is None or snr_db is None or not math.isfinite(snr_db) or snr_db >= bar

    @property
    def features(self) -> FeatureConfig | FbankConfig:
        return self.info.features

    def streaming_features(self):
        """A new streaming front-end for this model (see :func:`streaming_features`)."""
        return streaming_features(self.features)

    @property
    def window(self) -> WindowConfig:
        return self.info.window

    @property
    def dim(self) -> int:
        return self.info.embedding_dim

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Embed windows.

        :param frames: float32 ``(batch, time, n_mels)`` spectrogram rows.
        :return: float32 ``(batch, dim)`` unit vectors.
        """
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if frames.ndim != 3 or frames.shape[2] != self.features.n_mels:
            raise ValueError(f"expected frames of shape (batch, time, {self.features.n_mels}), "
                             f"got {frames.shape}")
        (emb,) = self._session.run(["embedding"], {"frames": frames})
        return emb


class FusedEncoderSession(FusionSession, EncoderSession):
    """An :class:`EncoderSession` over a fusion of encoders (:mod:`rtverify.core.fusion`);
    ``EncoderSession("fusion")`` makes one."""

    def __init__(self, model_path: str | os.PathLike | None = None, *,
                 threads: int | None = None) -> None:
        self._open_fusion(self._locate(model_path, threads, "model sidecar"), self.threads)


def l2_normalize(v: np.ndarray) -> np.ndarray:
    """Unit vector(s) along the last axis (zero vectors stay zero)."""
    v = np.asarray(v, dtype=np.float32)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def short_view_inputs(rows: np.ndarray, window_frames: int, views) -> list[np.ndarray]:
    """The encoder inputs for a segment of fewer than ``window_frames`` rows, one per view
    (float32 ``(time, n_mels)`` each; see :attr:`rtverify.config.WindowConfig.short_views`)."""
    rows = np.asarray(rows, dtype=np.float32)
    pad = np.zeros((window_frames - len(rows), rows.shape[1]), dtype=np.float32)
    out = []
    for view in views:
        if view == "end":
            out.append(np.concatenate([rows, pad]))
        elif view == "start":
            out.append(np.concatenate([pad, rows]))
        elif view == "none":
            out.append(rows)
        elif view == "reflect":
            cycle = np.concatenate([rows, rows[::-1]])
            reps = -(-window_frames // len(cycle))
            out.append(np.tile(cycle, (reps, 1))[:window_frames])
        else:
            raise ValueError(f"unknown short view {view!r}")
    return out


def embed_short(session: "EncoderSession", rows: np.ndarray) -> np.ndarray:
    """Mean embedding, float64 ``(dim,)``, of the ``short_views`` of a segment shorter than the
    session's window (float32 ``(time, n_mels)`` rows; see
    :class:`~rtverify.config.WindowConfig`): the padded views embedded as one batch."""
    w = session.window.window_frames
    views = short_view_inputs(rows, w, session.window.short_views)
    padded = [v for v in views if len(v) == w]
    total = np.zeros(session.dim, dtype=np.float64)
    if padded:
        total += session.embed(np.stack(padded)).sum(axis=0, dtype=np.float64)
    for v in views:
        if len(v) != w:
            total += session.embed(v[None])[0]
    return total / len(views)


@dataclass(frozen=True)
class SegmentEmbedding:
    """What a finished segment gives."""

    vector: np.ndarray
    """Unit embedding, float32 ``(dim,)``: the normalised mean of the window embeddings."""
    window_sum: np.ndarray
    """Sum of the window embeddings, float64 ``(dim,)``, to pool several segments."""
    n_windows: int
    """How many windows were embedded."""


class SegmentEmbedder:
    """Embeds one segment window by window while it grows.

    :meth:`push_rows` takes spectrogram rows as they come; every ``window_frames`` rows (stepping
    ``hop_frames``) make a window, embedded at once (or, with ``max_pending > 1``, in small
    batches, which is faster when a recording is processed faster than real time). :meth:`finish`
    adds a last window aligned to the segment's end (or a padded one for a segment shorter than a
    window) and returns the segment embedding: the normalised mean of its window embeddings.
    """

    def __init__(self, session: EncoderSession, *, max_pending: int = 1) -> None:
        self.session = session
        self.window = session.window
        self.max_pending = max(1, int(max_pending))
        self.reset()

    def reset(self) -> None:
        w = self.window
        self._rows = np.zeros((0, self.session.features.n_mels), dtype=np.float32)
        self._rows_start = 0  # absolute row index of self._rows[0]
        self.n_rows = 0
        self._next_start = 0
        self._last_end = 0  # end row of the last full window queued
        self._pending: list[np.ndarray] = []
        self._sum = np.zeros(self.session.dim, dtype=np.float64)
        self.n_windows = 0
        self._w = w.window_frames

    def _flush_pending(self) -> bool:
        if not self._pending:
            return False
        emb = self.session.embed(np.stack(self._pending))
        self._sum += emb.sum(axis=0, dtype=np.float64)
        self.n_windows += len(emb)
        self._pending = []
        self._embedded(emb)
        return True

    def _embedded(self, emb: np.ndarray) -> None:
        """Hook: windows just embedded, float32 ``(n, dim)``, in order (a subclass keeps them)."""

    def push_rows(self, rows: np.ndarray) -> bool:
        """Add rows (float32 ``(k, n_mels)``); returns True if new window embeddings arrived."""
        if len(rows):
            self._rows = np.concatenate([self._rows, rows]) if len(self._rows) else rows
            self.n_rows += len(rows)
        updated = False
        while self._next_start + self._w <= self.n_rows:
            a = self._next_start - self._rows_start
            self._pending.append(self._rows[a:a + self._w])
            self._last_end = self._next_start + self._w
            self._next_start += self.window.hop_frames
            if len(self._pending) >= self.max_pending:
                updated |= self._flush_pending()
        # keep only rows a later window (or the end-aligned tail window) can use
        keep_from = min(self._next_start, self.n_rows - self._w)
        if keep_from > self._rows_start:
            self._rows = self._rows[keep_from - self._rows_start:]
            self._rows_start = keep_from
        return updated

    @property
    def rows_needed(self) -> int:
        """Rows still to come before the next full window is complete (count)."""
        return max(0, self._next_start + self._w - self.n_rows)

    def current(self) -> np.ndarray | None:
        """Unit embedding of the windows embedded so far, or None."""
        if self.n_windows == 0:
            return None
        return l2_normalize(self._sum)

    def finish(self) -> SegmentEmbedding | None:
        """Close the segment; return its embedding (None if it had no rows). Resets."""
        w = self.window
        if self.n_rows == 0:
            self.reset()
            return None
        if self.n_rows < self._w:
            self._flush_pending()
            self._sum += embed_short(self.session, self._rows[-self.n_rows:])
            self.n_windows += 1
        else:
            if self.n_rows - self._last_end >= w.min_tail_frames:
                self._pending.append(self._rows[-self._w:])
            self._flush_pending()
        out = SegmentEmbedding(self.current(), self._sum.copy(), self.n_windows)
        self.reset()
        return out


def embed_segment(session: EncoderSession, rows: np.ndarray) -> SegmentEmbedding | None:
    """One utterance's rows, float32 ``(n, n_mels)``, embedded as a segment of its own (its
    windows in one batch), or None when there are none: a turn split off a segment, or a short
    utterance that a model's short expert decides."""
    emb = SegmentEmbedder(session, max_pending=8)
    emb.push_rows(rows)
    return emb.finish()
