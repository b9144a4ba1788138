"""Training objectives.

``pairs``: the seed system's Siamese objective. Both sides of a pair go through the same encoder
(shared weights), the two embeddings' dot product is squashed by a sigmoid and compared with the
label (1 = same speaker) by binary cross-entropy. As in the seed, the dot product is taken between
the raw (unnormalised) embeddings with no learned scale or offset; a pair is called "same" when
the sigmoid exceeds 0.5, i.e. when the dot product, and so the cosine, is positive.

``ge2e``: the generalised end-to-end loss (Wan et al., ICASSP 2018, softmax variant) over a batch
of N speakers x M utterances: each embedding is scored against every speaker centroid (its own
speaker's centroid without itself) by ``w * cos + b`` and must pick its own speaker. It is the
production objective because the pretrained encoder was trained with exactly this loss, and its
checkpoint carries the learned ``w`` and ``b`` (:func:`training.transfer.resemblyzer_ge2e_scale`):
fine-tuning continues the same objective from where it stopped, rather than bolting a freshly
initialised classification head (AM-softmax) onto an encoder it never shaped, which for the few
speakers available here would mostly teach the head.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PairLoss(nn.Module):
    """Binary cross-entropy of ``sigmoid(a . b)`` against same/different labels."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """:param a, b: raw embeddings ``(batch, dim)``; :param same: 1/0 floats ``(batch,)``."""
        return F.binary_cross_entropy_with_logits(self.logits(a, b), same)

    @staticmethod
    def logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=1)


class GE2ELoss(nn.Module):
    """Softmax GE2E loss with a learned similarity scale ``w`` (kept positive) and bias ``b``.

    :param init_w, init_b: starting values (10 and -5 in the paper; the pretrained encoder's own
        when fine-tuning it).
    """

    def __init__(self, init_w: float = 10.0, init_b: float = -5.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def similarity(self, emb: torch.Tensor) -> torch.Tensor:
        """Scaled cosine of every utterance with every centroid: ``(N, M, N)``.

        :param emb: unit embeddings ``(N speakers, M utterances, dim)``, M >= 2.
        """
        n, m, _ = emb.shape
        if n < 2 or m < 2:
            raise ValueError(f"GE2E needs at least 2 speakers x 2 utterances, got {n} x {m}")
        total = emb.sum(dim=1)  # (N, D)
        centroids = F.normalize(total / m, dim=1)
        excl = F.normalize((total[:, None, :] - emb) / (m - 1), dim=2)  # (N, M, D)
        sim = torch.einsum("jmd,kd->jmk", emb, centroids)
        own = (emb * excl).sum(dim=2)  # (N, M)
        eye = torch.eye(n, dtype=torch.bool, device=emb.device)[:, None, :].expand(n, m, n)
        sim = torch.where(eye, own[:, :, None].expand(n, m, n), sim)
        return self.w.clamp_min(1e-6) * sim + self.b

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        n, m, _ = emb.shape
        logits = self.similarity(emb).reshape(n * m, n)
        target = torch.arange(n, device=emb.device).repeat_interleave(m)
        return F.cross_entropy(logits, target)
