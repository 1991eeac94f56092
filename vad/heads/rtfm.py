"""RTFM head: Tian, Pang, Chen, Singh, Verjans & Carneiro, "Weakly-supervised Video Anomaly
Detection with Robust Temporal Feature Magnitude Learning" (ICCV 2021, arXiv 2101.10030).

A multi-scale temporal network (MTN) turns a video's snippet features into temporally
contextualised features of the same size; a small MLP scores each snippet. Training picks, in
each video, the k snippets with the largest feature *magnitude* (L2 norm of the MTN output) and
(i) asks the mean of their features to have a magnitude of at least ``margin`` in anomalous
videos and 0 in normal ones, (ii) trains the video score (the mean score of those k snippets)
with BCE against the video label; temporal smoothness and sparsity terms act on the anomalous
videos' scores.

Facts, and where they come from. "Release": the authors' code, github.com/tianyu0207/RTFM at
commit cf938f4 (``model.py``, ``train.py``, ``main.py``, ``option.py``, ``dataset.py``,
``utils.py``, ``test_10crop.py``, ``README.md``); only the paper's abstract could be read here,
so every number below is the release's.

=====================================  ==========================================================
MTN, dilated branches                  three Conv1d, kernel 3, dilation 1 / 2 / 4 (padding = the
                                       dilation), D -> 512 each, bias, ReLU then BatchNorm1d
                                       (``model.py``, ``Aggregate.conv_1..3``)
MTN, non-local branch                  Conv1d 1x1 D -> 512 without bias, ReLU, then a 1-D
                                       non-local block (embedded dot product, no softmax: the
                                       affinity is divided by the number of snippets), inner
                                       width 512 / 2, no sub-sampling, output 1x1 conv + BatchNorm
                                       initialised to zero, added to its input (``conv_4``,
                                       ``NONLocalBlock1D``)
MTN, fusion                            concatenate the four branches (4 x 512 = 2048), Conv1d
                                       kernel 3, no bias, ReLU, BatchNorm1d, plus the input
                                       (residual). No LayerNorm anywhere (``conv_5``)
score head                             dropout 0.7 on the MTN output (these dropped-out features
                                       are the ones whose magnitudes are used); FC D -> 512, ReLU,
                                       dropout 0.7, FC 512 -> 128, ReLU, dropout 0.7, FC 128 -> 1,
                                       sigmoid (``Model.forward``)
initialisation                         Xavier-uniform weights and zero biases on every Conv and
                                       Linear; the non-local output BatchNorm zero (``weight_init``)
top-k                                  k = 32 // 10 = 3 of the 32 segments, by feature magnitude;
                                       in training the candidates are thinned first by dropout
                                       (p 0.7) on a mask of ones, so about 30 % of the segments
                                       compete (``Model.forward``)
feature-magnitude loss                 per (normal, anomalous) pair:
                                       ``(|m - ||mean_k f_a||| + ||mean_k f_n||)^2``, mean over
                                       pairs, m = 100, weight alpha = 1e-4 (``RTFM_loss``;
                                       ``RTFM_loss(0.0001, 100)`` in ``train.py``). The norm is of
                                       the mean of the k selected features, and the abnormal term
                                       is an absolute value, not the paper's hinge
classification loss                    BCE of the mean score of the k selected snippets against
                                       the video label, mean over the 2 x 32 videos
smoothness                             ``8e-4 * sum_t (s[t+1] - s[t])^2`` over the anomalous
                                       videos' scores, summed over the batch (``smooth``)
sparsity                               ``8e-3 * ||s||_2``: the L2 norm of all the batch's anomalous
                                       snippet scores as one vector (``sparsity``: ``torch.norm``
                                       of the flat vector, not an L1 sum)
optimiser                              Adam, lr 1e-3 (``--lr '[0.001]*15000'``), weight decay 5e-3
                                       (``main.py``); 15 000 iterations (``--max-epoch``)
batch                                  32 normal + 32 anomalous videos per step (two loaders of
                                       ``--batch-size 32``)
segments                               32 per video: segment i is the mean of snippets
                                       ``floor(e_i) .. floor(e_{i+1}) - 1``, ``e = linspace(0, T,
                                       33)``, or snippet ``floor(e_i)`` when that is empty; no
                                       normalisation (``utils.process_feat``)
input features                         2048-d ResNet-50 I3D, 10 crops (``--feature-size 2048``;
                                       ``README.md``); training feeds all 10 crops of a video,
                                       averages scores and magnitudes over crops, and applies the
                                       magnitude loss per crop
test-time scores                       the whole video at once (every snippet, no 32-segment
                                       pooling), the 10 crops' sigmoid scores averaged, each
                                       snippet's score repeated 16 times, one pooled frame ROC AUC
                                       (``test_10crop.py``)
model selection                        every 5 iterations after the 200th the release scores the
                                       *test* set and keeps the checkpoint with the best test AUC
                                       (``main.py``); ``vad train`` selects on a validation split
                                       carved from the training list
=====================================  ==========================================================

Our choices:

* **Widths.** The release is built for D = 2048: branches of 512 (D / 4), a score head of 512
  and 128. ``RTFMConfig``'s own defaults scale with ``input_dim`` (256 and (256, 64) at 1024-d);
  the shipped ``configs/train/rtfm.yaml`` sets the release's 512 and (512, 128) for any input,
  which on the 1024-d ``planted`` quality set gave 0.855 frame AUC against 0.818 for the scaled
  widths (200 epochs, one seed; docs/benchmarks.md). The non-local inner width is
  ``branch_dim // 2``, as in the release; the fusion conv maps the concatenation back to
  ``width`` for the residual: ``input_dim`` by default; ``width: 2048`` zero-pads smaller
  features to the release's 2048 inside the head, as the public code sees padded files (on
  ``planted`` it overfitted: docs/benchmarks.md, so it is not shipped).
* **No input normalisation**: magnitudes carry the signal, so training segments are raw means
  (``segment_pooling``) and inference sees raw snippets, as in the release.
* **One crop per draw.** ``vad train`` feeds one crop of each video per step (``train.crop``)
  where the release stacks all 10; scoring still averages the crops' scores, as the release's
  test does.
* **Smoothness per video**: the release runs its smoothness sum over the batch's scores laid end
  to end, so each pair of consecutive videos adds one cross-video term; we sum within videos.
* **Pairs**: the magnitude loss pairs the i-th anomalous with the i-th normal video of the batch
  (the release pairs by position too); an unbalanced batch uses the first min(#a, #n) of each.
* **Linear-cost non-local block.** Without a softmax, ``(theta phi^T / N) g = theta (phi^T g) / N``;
  we compute the right-hand side, which is the same number without the T x T affinity matrix, so
  hours-long videos score in linear time and memory.
* **Masks**: padded snippets are zeroed before every convolution and left out of the non-local
  sums and of N, so a padded video scores exactly as it does alone (in eval mode; in training
  mode BatchNorm's batch statistics would include padding, which the trainer never builds).
* **Non-causal.** The non-local block makes every score depend on the whole video:
  ``context = (-1, -1)``, ``head.json`` says ``causal: false, lookahead: -1``, and the streaming
  scorer (``vad monitor``) refuses the head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vad.heads.modules import FeatureBatch, register_module

logger = logging.getLogger(__name__)

__all__ = ["RTFMConfig", "RTFMHead", "RTFMOutput", "rtfm_loss", "top_k_by_magnitude"]


@dataclass
class RTFMConfig:
    input_dim: int = 1024
    width: int | None = None  # MTN width; the input is zero-padded to it (None: input_dim; the release: 2048)
    branch_dim: int | None = None  # channels of each MTN branch; None: input_dim // 4 (512 at 2048-d)
    hidden: tuple[int, ...] | None = None  # score head FC widths; None: (input_dim // 4, input_dim // 16)
    dilations: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.7
    n_segments: int = 32  # training sequence length the trainer builds with segment_features
    k: int = 3  # snippets selected by feature magnitude (32 // 10 in the release)
    select_dropout: float = 0.7  # training: dropout on the top-k candidates' mask
    margin: float = 100.0
    alpha: float = 1e-4  # weight of the feature-magnitude loss
    lambda_smooth: float = 8e-4
    lambda_sparse: float = 8e-3

    def __post_init__(self) -> None:
        if self.input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {self.input_dim}")
        if self.width is None:
            self.width = self.input_dim
        self.width = int(self.width)
        if self.width < self.input_dim:
            raise ValueError(f"width must be >= input_dim ({self.input_dim}), got {self.width}")
        if self.branch_dim is None:
            self.branch_dim = max(1, self.input_dim // 4)
        if self.hidden is None:
            self.hidden = (max(1, self.input_dim // 4), max(1, self.input_dim // 16))
        self.branch_dim = int(self.branch_dim)
        self.hidden = tuple(int(h) for h in self.hidden)  # JSON gives lists back
        self.dilations = tuple(int(d) for d in self.dilations)
        if self.branch_dim < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"branch_dim and hidden sizes must be positive, got {self.branch_dim}, {self.hidden}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"dilations must be positive, got {self.dilations}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.select_dropout < 1.0:
            raise ValueError(f"dropout and select_dropout must be in [0, 1), got {self.dropout}, {self.select_dropout}")
        if self.n_segments < 1 or self.k < 1:
            raise ValueError(f"n_segments and k must be >= 1, got {self.n_segments}, {self.k}")
        if min(self.alpha, self.lambda_smooth, self.lambda_sparse, self.margin) < 0:
            raise ValueError("margin and loss weights must be >= 0")


class RTFMOutput(NamedTuple):
    score: torch.Tensor  # (B, T) snippet scores in [0, 1], 0 at padding
    features: torch.Tensor  # (B, T, width) MTN output (after dropout in training), 0 at padding
    magnitude: torch.Tensor  # (B, T) L2 norm of ``features``


def top_k_by_magnitude(magnitude: torch.Tensor, mask: torch.Tensor, k: int,
                       keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (B, k') of each video's k largest magnitudes, k' = min(k, T), and which of them
    count (B, k') bool: a video with fewer than k valid snippets uses all of them.

    ``keep`` (B, T) bool thins the candidates (training's selection dropout): dropped snippets
    rank below every kept one and are picked only when fewer than k are kept; padding ranks last
    and is never counted. Ties go to the earlier snippet."""
    mask = mask.bool()
    key = magnitude.detach().float().clamp(min=0.0)
    if keep is not None:
        key = key.masked_fill(~keep.bool(), -1.0)
    key = key.masked_fill(~mask, -2.0)
    kk = min(int(k), key.shape[1])
    idx = key.argsort(dim=1, descending=True, stable=True)[:, :kk]
    n_valid = mask.sum(1).clamp(max=kk)
    counted = torch.arange(kk, device=key.device)[None, :] < n_valid[:, None]
    return idx, counted


def rtfm_loss(
    out: RTFMOutput,
    mask: torch.Tensor,
    label: torch.Tensor,
    *,
    k: int = 3,
    margin: float = 100.0,
    alpha: float = 1e-4,
    lambda_smooth: float = 8e-4,
    lambda_sparse: float = 8e-3,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RTFM's loss on one batch (see the module docstring); returns the total and its parts
    (``bce``, ``magnitude`` and ``smooth``/``sparse`` already weighted, summing to ``loss``).

    Per video, the top-k snippets by magnitude (thinned by ``keep``) give the video score (mean
    of their scores) and the selected feature mean; BCE of the video scores against ``label``
    is averaged over all videos; the magnitude term ``alpha * mean_i (|margin - ||f_a_i||| +
    ||f_n_i||)^2`` pairs the i-th anomalous with the i-th normal video; smoothness
    ``lambda_smooth * sum (s[t+1] - s[t])^2`` (valid neighbours, within each anomalous video)
    and sparsity ``lambda_sparse * ||s||_2`` (all valid anomalous scores as one vector) are
    batch sums."""
    mask = mask.bool()
    label = label.float()
    anom = torch.nonzero(label > 0.5).squeeze(1)
    norm = torch.nonzero(label <= 0.5).squeeze(1)
    if len(anom) == 0 or len(norm) == 0:
        raise ValueError(f"an RTFM batch needs anomalous and normal videos, got {len(anom)} and {len(norm)}")
    if not bool(mask.any(1).all()):
        raise ValueError("every video needs at least one valid snippet")

    idx, counted = top_k_by_magnitude(out.magnitude, mask, k, keep)
    w = counted.to(out.score.dtype)
    n_sel = w.sum(1)
    video_score = (out.score.gather(1, idx) * w).sum(1) / n_sel
    bce = F.binary_cross_entropy(video_score, label)

    d = out.features.shape[-1]
    selected = out.features.gather(1, idx.unsqueeze(-1).expand(-1, -1, d))
    mean_feat = (selected * w.unsqueeze(-1)).sum(1) / n_sel.unsqueeze(-1)
    feat_norm = torch.linalg.vector_norm(mean_feat, dim=1)
    p = min(len(anom), len(norm))
    if len(anom) != len(norm):
        logger.debug("unbalanced RTFM batch (%d anomalous, %d normal): %d pairs", len(anom), len(norm), p)
    separation = ((margin - feat_norm[anom[:p]]).abs() + feat_norm[norm[:p]]) ** 2
    magnitude = alpha * separation.mean()

    s_a, m_a = out.score[anom], mask[anom]
    both = m_a[:, 1:] & m_a[:, :-1]
    diff = (s_a[:, 1:] - s_a[:, :-1]).masked_fill(~both, 0.0)
    smooth = lambda_smooth * (diff * diff).sum()
    sparse = lambda_sparse * torch.linalg.vector_norm(s_a.masked_fill(~m_a, 0.0).reshape(-1))

    total = bce + magnitude + smooth + sparse
    parts = {"bce": bce, "magnitude": magnitude, "smooth": smooth, "sparse": sparse, "loss": total}
    return total, {name: float(v.detach()) for name, v in parts.items()}


class _NonLocal1d(nn.Module):
    """Embedded-dot-product non-local block over time, computed as ``theta (phi^T g) / N``."""

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__()
        self.theta = nn.Conv1d(channels, inner, 1)
        self.phi = nn.Conv1d(channels, inner, 1)
        self.g = nn.Conv1d(channels, inner, 1)
        self.out = nn.Conv1d(inner, channels, 1)
        self.out_norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), m (B, 1, T) float (1 = valid) -> (B, C, T)."""
        n = m.sum(-1, keepdim=True).clamp(min=1.0)  # (B, 1, 1) valid snippets
        phi, g = self.phi(x) * m, self.g(x) * m
        summary = torch.bmm(phi, g.transpose(1, 2)) / n  # (B, C', C'): sum_t phi_t g_t^T / N
        y = torch.bmm(summary.transpose(1, 2), self.theta(x))  # (B, C', T)
        return x + self.out_norm(self.out(y))


@register_module("rtfm", RTFMConfig)
class RTFMHead(nn.Module):
    """Multi-scale temporal network + snippet scorer, trained with RTFM's magnitude loss."""

    context = (-1, -1)  # the non-local block sees the whole video
    segment_pooling = {"normalize": False, "overlap": False}  # raw disjoint means, as the release pools
    input_normalization = "none"

    def __init__(self, config: RTFMConfig | None = None) -> None:
        super().__init__()
        self.config = config or RTFMConfig()
        cfg = self.config
        d, b = cfg.width, cfg.branch_dim
        self.dilated = nn.ModuleList(nn.Conv1d(d, b, 3, padding=r, dilation=r) for r in cfg.dilations)
        self.dilated_norm = nn.ModuleList(nn.BatchNorm1d(b) for _ in cfg.dilations)
        self.local = nn.Conv1d(d, b, 1, bias=False)
        self.non_local = _NonLocal1d(b, max(1, b // 2))
        self.fuse = nn.Conv1d(b * (len(cfg.dilations) + 1), d, 3, padding=1, bias=False)
        self.fuse_norm = nn.BatchNorm1d(d)
        self.drop = nn.Dropout(cfg.dropout)
        dims = (d, *cfg.hidden)
        self.fc = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(cfg.hidden)))
        self.fc_out = nn.Linear(dims[-1], 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.non_local.out_norm.weight)  # the block starts as the identity
        nn.init.zeros_(self.non_local.out_norm.bias)

    def encode(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The MTN: (B, T, D) -> (B, T, width), before the dropout; padded positions are 0."""
        m = mask.unsqueeze(1).to(torch.float32)  # (B, 1, T)
        x = features.float().transpose(1, 2) * m
        if self.config.width > x.shape[1]:  # zero channels: the release's 2048-wide MTN on smaller features
            x = F.pad(x, (0, 0, 0, self.config.width - x.shape[1]))
        branches = [norm(F.relu(conv(x))) for conv, norm in zip(self.dilated, self.dilated_norm)]
        branches.append(self.non_local(F.relu(self.local(x)), m))
        h = torch.cat(branches, dim=1) * m  # padding never reaches the fusion conv
        h = self.fuse_norm(F.relu(self.fuse(h))) + x
        return (h * m).transpose(1, 2)

    def components(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> RTFMOutput:
        b, t, _ = features.shape
        mask = torch.ones(b, t, dtype=torch.bool, device=features.device) if mask is None else mask.bool()
        feats = self.drop(self.encode(features, mask))
        h = feats
        for fc in self.fc:
            h = self.drop(F.relu(fc(h)))
        score = torch.sigmoid(self.fc_out(h).squeeze(-1)).masked_fill(~mask, 0.0)
        return RTFMOutput(score, feats, torch.linalg.vector_norm(feats, dim=-1))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, D) -> scores (B, T) in [0, 1]; padded positions score 0."""
        return self.components(features, mask).score

    def loss(self, batch: FeatureBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        mask = batch.mask.bool()
        out = self.components(batch.features, mask)
        keep = None
        if self.training and cfg.select_dropout > 0:
            keep = torch.rand(mask.shape, device=mask.device) >= cfg.select_dropout
        return rtfm_loss(out, mask, batch.label, k=cfg.k, margin=cfg.margin, alpha=cfg.alpha,
                         lambda_smooth=cfg.lambda_smooth, lambda_sparse=cfg.lambda_sparse, keep=keep)
