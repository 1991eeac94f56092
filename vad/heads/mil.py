"""MIL ranking head: Sultani, Chen & Shah, "Real-world Anomaly Detection in Surveillance Videos"
(CVPR 2018).

A video is a bag of ``n_segments`` segments (mean-pooled, L2-normalised snippet features, see
``segment_features``). A small MLP scores every segment; the ranking loss asks the highest
score of an anomalous bag to exceed the highest score of a normal bag by ``margin``, with a
temporal smoothness term and a sparsity term on the anomalous bag.

Choices, checked against the authors' released Keras code (``TrainingAnomalyDetector_public.py``):

* Scorer: FC 512 -> ReLU -> dropout -> FC 32 (*no* activation: the released model leaves this
  layer linear) -> dropout -> FC 1 -> sigmoid; dropout 0.6; Glorot-normal weights, zero biases.
* Weight decay: the release puts Keras ``l2(0.001)`` (``0.001 * sum(W**2)``) on each kernel,
  not on biases. Its hinge is summed over the 30 anomalous bags of a 60-video batch (and
  averaged over the 30 normal ones), while ours is averaged over pairs, so the same relative
  strength is ``0.001 / 30``; that is the default of ``l2``, added inside ``loss`` so the head
  trains the same whatever the optimiser. The release trains with Adagrad (lr 0.01, eps 1e-8),
  batches of 30 anomalous + 30 normal videos, for 20 000 iterations.
* Pairing: the release compares every normal bag with every anomalous bag of the batch; here
  the i-th anomalous bag is paired with the i-th normal bag (the trainer shuffles, so over an
  epoch this samples the same pairs). The smoothness and sparsity terms are per anomalous bag,
  averaged over pairs, which keeps their weight relative to the hinge the same as in the release.
* Inputs are L2-normalised inside ``forward``: training bags are normalised segments, and at
  inference the head scores a whole video's raw snippets, which must live on the same sphere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vad.heads.modules import FeatureBatch, register_module

logger = logging.getLogger(__name__)

__all__ = ["MILConfig", "MILHead", "mil_ranking_loss"]


@dataclass
class MILConfig:
    input_dim: int = 1024
    hidden: tuple[int, ...] = (512, 32)
    dropout: float = 0.6
    n_segments: int = 32  # bag size the trainer builds with segment_features
    lambda_smooth: float = 8e-5
    lambda_sparse: float = 8e-5
    margin: float = 1.0
    l2: float = 1e-3 / 30  # Keras l2(0.001) of the release, rescaled to a per-pair mean hinge

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)  # JSON gives a list back
        if self.input_dim < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"input_dim and hidden sizes must be positive, got {self.input_dim}, {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments}")
        if min(self.lambda_smooth, self.lambda_sparse, self.l2) < 0 or self.margin <= 0:
            raise ValueError("loss weights must be >= 0 and margin > 0")


def _valid_max(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~mask, float("-inf")).amax(dim=1)


def mil_ranking_loss(
    scores_anom: torch.Tensor,
    scores_norm: torch.Tensor,
    mask_a: torch.Tensor | None = None,
    mask_n: torch.Tensor | None = None,
    margin: float = 1.0,
    lambda_smooth: float = 8e-5,
    lambda_sparse: float = 8e-5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sultani's ranking loss over P (anomalous, normal) bag pairs.

    scores_anom, scores_norm: (P, T) segment scores in [0, 1]; masks (P, T) bool (None = all
    valid; every bag needs at least one valid segment). Per pair:
    ``max(0, margin - max(s_a) + max(s_n)) + lambda_smooth * sum_t (s_a[t] - s_a[t+1])^2
    + lambda_sparse * sum_t s_a[t]``, where the smoothness sum only takes neighbours that are
    both valid. Returns the mean over pairs and its parts (already weighted, summing to it).
    """
    if scores_anom.shape[0] != scores_norm.shape[0] or scores_anom.shape[0] == 0:
        raise ValueError(f"need the same non-zero number of anomalous and normal bags, "
                         f"got {scores_anom.shape[0]} and {scores_norm.shape[0]}")
    mask_a = torch.ones_like(scores_anom, dtype=torch.bool) if mask_a is None else mask_a.bool()
    mask_n = torch.ones_like(scores_norm, dtype=torch.bool) if mask_n is None else mask_n.bool()
    if not bool(mask_a.any(1).all() and mask_n.any(1).all()):
        raise ValueError("every bag needs at least one valid segment")

    hinge = torch.clamp(margin - _valid_max(scores_anom, mask_a) + _valid_max(scores_norm, mask_n), min=0.0)
    both = mask_a[:, 1:] & mask_a[:, :-1]
    diff = (scores_anom[:, 1:] - scores_anom[:, :-1]).masked_fill(~both, 0.0)
    smooth = lambda_smooth * (diff * diff).sum(1)
    sparse = lambda_sparse * scores_anom.masked_fill(~mask_a, 0.0).sum(1)
    parts = {"hinge": hinge.mean(), "smooth": smooth.mean(), "sparse": sparse.mean()}
    total = parts["hinge"] + parts["smooth"] + parts["sparse"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


@register_module("mil", MILConfig)
class MILHead(nn.Module):
    """Per-snippet anomaly scorer trained with the MIL ranking loss."""

    context = (0, 0)  # each snippet is scored on its own: causal, no look-ahead

    def __init__(self, config: MILConfig | None = None) -> None:
        super().__init__()
        self.config = config or MILConfig()
        cfg = self.config
        layers: list[nn.Module] = []
        dims = (cfg.input_dim, *cfg.hidden)
        for i in range(len(cfg.hidden)):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(cfg.hidden) - 1:  # the last hidden layer stays linear, as in the release
                layers.append(nn.ReLU())
            layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, D) -> scores (B, T) in [0, 1]; padded positions score 0."""
        x = F.normalize(features.float(), dim=-1)
        scores = torch.sigmoid(self.net(x).squeeze(-1))
        return scores if mask is None else scores.masked_fill(~mask.bool(), 0.0)

    def l2_penalty(self) -> torch.Tensor:
        return sum(m.weight.pow(2).sum() for m in self.net if isinstance(m, nn.Linear))

    def loss(self, batch: FeatureBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Ranking loss over (i-th anomalous, i-th normal) bag pairs of the batch, plus L2."""
        cfg = self.config
        scores = self(batch.features, batch.mask)
        anom = torch.nonzero(batch.label > 0.5).squeeze(1)
        norm = torch.nonzero(batch.label <= 0.5).squeeze(1)
        if len(anom) == 0 or len(norm) == 0:
            raise ValueError(f"a MIL batch needs anomalous and normal videos, got {len(anom)} and {len(norm)}")
        p = min(len(anom), len(norm))
        if len(anom) != len(norm):
            logger.debug("unbalanced MIL batch (%d anomalous, %d normal): using %d pairs", len(anom), len(norm), p)
        anom, norm = anom[:p], norm[:p]
        total, parts = mil_ranking_loss(
            scores[anom], scores[norm], batch.mask[anom], batch.mask[norm],
            cfg.margin, cfg.lambda_smooth, cfg.lambda_sparse,
        )
        if cfg.l2 > 0:
            l2 = cfg.l2 * self.l2_penalty()
            total = total + l2
            parts["l2"] = float(l2.detach())
        parts["loss"] = float(total.detach())
        return total, parts

