"""Detection metrics for verification scores: miss/false-alarm rates, EER, minDCF, accuracy, and
a DET plot (matplotlib, imported only there). numpy only otherwise.

Convention: a trial is accepted when ``score >= threshold``; label 1 is a target (same speaker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import InputError

P_TARGET = 0.01
"""Prior of a target trial in the detection cost function."""
C_MISS = 1.0
C_FA = 1.0


def error_rates(target: np.ndarray, nontarget: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """Miss and false-alarm rates at every distinct threshold (accept when ``score >= t``).

    :return: ``(thresholds, p_miss, p_fa)``, float64 arrays of equal length; the thresholds are
        the sorted distinct scores followed by ``+inf`` (accept nothing: ``p_miss = 1``,
        ``p_fa = 0``). ``p_miss`` rises and ``p_fa`` falls along them.
    """
    tar = np.sort(np.asarray(target, dtype=np.float64))
    non = np.sort(np.asarray(nontarget, dtype=np.float64))
    if len(tar) == 0 or len(non) == 0:
        raise ValueError("need at least one target and one non-target score")
    if np.isnan(tar).any() or np.isnan(non).any():
        raise ValueError("scores contain NaN")
    thresholds = np.append(np.unique(np.concatenate([tar, non])), np.inf)
    p_miss = np.searchsorted(tar, thresholds, side="left") / len(tar)
    p_fa = 1.0 - np.searchsorted(non, thresholds, side="left") / len(non)
    return thresholds, p_miss, p_fa


def eer(target: np.ndarray, nontarget: np.ndarray) -> tuple[float, float]:
    """Equal error rate (0..1) and the threshold at which it is reached.

    Where the miss and false-alarm curves cross between two operating points, the rate and the
    threshold are interpolated linearly between them. Where they are equal over a range of
    thresholds (classes separated by a gap, or tied rates), the threshold is the middle of it.
    """
    thr, p_miss, p_fa = error_rates(target, nontarget)
    i = int(np.argmax(p_miss >= p_fa))  # first point where misses catch up (the last is 1 >= 0)
    if i == 0:  # cannot happen (p_fa[0] = 1 > p_miss[0] = 0); kept for safety
        return float(p_miss[0]), float(thr[0])
    if p_miss[i] == p_fa[i]:
        k = i
        while k + 1 < len(thr) and p_miss[k + 1] == p_fa[k + 1]:
            k += 1
        return float(p_miss[i]), float((thr[i - 1] + thr[k]) / 2)
    d0 = p_fa[i - 1] - p_miss[i - 1]  # > 0
    d1 = p_fa[i] - p_miss[i]  # < 0
    alpha = d0 / (d0 - d1)
    rate = p_miss[i - 1] + alpha * (p_miss[i] - p_miss[i - 1])
    t = thr[i - 1] + alpha * (thr[i] - thr[i - 1]) if np.isfinite(thr[i]) else thr[i - 1]
    return float(rate), float(t)


def min_dcf(target: np.ndarray, nontarget: np.ndarray, p_target: float = P_TARGET,
            c_miss: float = C_MISS, c_fa: float = C_FA) -> tuple[float, float]:
    """Minimum normalised detection cost and its threshold.

    ``DCF(t) = c_miss * p_target * P_miss(t) + c_fa * (1 - p_target) * P_fa(t)``, divided by the
    cost of the better trivial system, ``min(c_miss * p_target, c_fa * (1 - p_target))``; so the
    result lies in 0..1 (accepting nothing costs at most 1).
    """
    thr, p_miss, p_fa = error_rates(target, nontarget)
    dcf = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    dcf /= min(c_miss * p_target, c_fa * (1 - p_target))
    i = int(np.argmin(dcf))
    return float(dcf[i]), float(thr[i])


def accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float | np.ndarray) -> float:
    """Fraction of trials decided right when accepting ``score >= threshold`` (per trial if an
    array)."""
    scores = np.asarray(scores, dtype=np.float64)
    accepted = scores >= np.asarray(threshold, dtype=np.float64)
    return float(np.mean(accepted == (np.asarray(labels) == 1)))


@dataclass(frozen=True)
class Metrics:
    trials: int
    n_target: int
    n_nontarget: int
    eer: float
    """Equal error rate, 0..1."""
    threshold_eer: float
    min_dcf: float
    """Normalised minimum detection cost at ``p_target`` 0.01, C_miss = C_fa = 1."""
    threshold_min_dcf: float
    accuracy_at_eer: float
    """Fraction of trials right at the EER threshold."""


def compute_metrics(scores: np.ndarray, labels: np.ndarray) -> Metrics:
    """EER, minDCF and accuracy at the EER threshold for scores with labels 1/0."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    tar, non = scores[labels == 1], scores[labels == 0]
    rate, t_eer = eer(tar, non)
    dcf, t_dcf = min_dcf(tar, non)
    return Metrics(trials=len(scores), n_target=len(tar), n_nontarget=len(non), eer=rate,
                   threshold_eer=t_eer, min_dcf=dcf, threshold_min_dcf=t_dcf,
                   accuracy_at_eer=accuracy(scores, labels, t_eer))


# ------------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'rtverify[plot]'") from None
    return plt


def check_plot_path(out: str | os.PathLike) -> None:
    """Refuse, before an evaluation's embedding, a ``--plot`` that :func:`plot_det` could not
    write after it (``det.xyz`` was matplotlib's ValueError, and the report lost; a directory
    became ``DIR.png`` beside it)."""
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    if os.path.isdir(out):
        raise InputError(f"{out}: is a directory; --plot wants an image file (DET.png)")
    kind = os.path.splitext(os.fspath(out))[1][1:].lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if kind and kind not in known:
        raise InputError(f"{out}: --plot cannot write .{kind} images (it writes "
                         f"{', '.join(sorted(known))})")


def plot_det(scores: np.ndarray, labels: np.ndarray, out: str | os.PathLike, title: str) -> None:
    """A DET curve (probit axes) to ``out``; needs matplotlib (the ``plot`` extra)."""
    plt = _pyplot()
    from scipy.stats import norm

    _, p_miss, p_fa = error_rates(scores[labels == 1], scores[labels == 0])
    clip = lambda p: norm.ppf(np.clip(p, 1e-4, 1 - 1e-4))  # noqa: E731
    rate, _ = eer(scores[labels == 1], scores[labels == 0])
    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(clip(p_fa), clip(p_miss), label=f"EER {100 * rate:.2f} %")
    ax.plot(clip(ticks), clip(ticks), ":", color="grey", linewidth=0.8)
    ax.set_xticks(clip(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(clip(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(clip(0.0005), clip(0.5))
    ax.set_ylim(clip(0.0005), clip(0.5))
    ax.set_xlabel("false acceptance (%)")
    ax.set_ylabel("false rejection (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=120)
    except OSError as err:
        raise InputError(f"{out}: cannot write the plot ({err.strerror or err})") from None
    finally:
        plt.close(fig)
