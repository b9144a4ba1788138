"""Scores and decisions: cosine similarity against each voiceprint, then a policy that accepts the
best voice only if it clears the (length-dependent) threshold, and otherwise rejects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .config import DecisionConfig


def cosine_scores(embedding: np.ndarray, voiceprints: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Cosine similarity of a unit embedding with each unit voiceprint, by name."""
    if not voiceprints:
        return {}
    names = list(voiceprints)
    matrix = np.stack([np.asarray(voiceprints[n], dtype=np.float32) for n in names])
    sims = matrix @ np.asarray(embedding, dtype=np.float32)
    return {n: float(s) for n, s in zip(names, sims)}


@dataclass(frozen=True)
class Decision:
    """The verdict on one piece of speech."""

    speaker: str | None
    """The accepted voice, or None (nobody passed, too little speech, nobody enrolled)."""
    best: str | None
    """The best-scoring voice whether accepted or not (None if nobody is enrolled)."""
    score: float | None
    """The best score."""
    scores: dict[str, float] = field(default_factory=dict)
    """Every voice's score."""
    accepted: bool = False
    threshold: float = 0.0
    """The threshold that applied (it may depend on the amount of speech)."""
    margin: float | None = None
    """Best score minus the threshold (positive: accepted by that much)."""
    runner_up_gap: float | None = None
    """Best score minus the second best (None with one voice)."""
    reason: str = ""
    """``accepted``, ``below_threshold``, ``too_short`` or ``no_voices``."""


class DecisionPolicy:
    """Threshold from the model's sidecar (optionally by amount of speech), overridable.

    :param cfg: the model's decision settings.
    :param threshold: if given, replaces the model's threshold at every length.
    """

    def __init__(self, cfg: DecisionConfig, threshold: float | None = None) -> None:
        if threshold is not None and not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        self.cfg = cfg
        self.override = threshold

    def threshold_for(self, speech_s: float) -> float:
        return self.override if self.override is not None else self.cfg.threshold_for(speech_s)

    def decide(self, scores: Mapping[str, float], speech_s: float) -> Decision:
        threshold = self.threshold_for(speech_s)
        if not scores:
            return Decision(None, None, None, {}, False, threshold, None, None, "no_voices")
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        best, score = ranked[0]
        gap = score - ranked[1][1] if len(ranked) > 1 else None
        margin = score - threshold
        if speech_s < self.cfg.min_speech_s:
            return Decision(None, best, score, dict(scores), False, threshold, margin, gap,
                            "too_short")
        accepted = score >= threshold
        return Decision(best if accepted else None, best, score, dict(scores), accepted, threshold,
                        margin, gap, "accepted" if accepted else "below_threshold")
