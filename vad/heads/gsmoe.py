"""GS-MoE head: class experts, a gate, and a temporal Gaussian splatting loss.

After D'Amicantonio, Majhi et al., "Mixture of Experts Guided by Gaussian Splatters Matters: A
new Approach to Weakly-Supervised Video Anomaly Detection" (ICCV 2025, arXiv 2508.06318). The
authors' code was not available and only the paper's abstract could be read here, so the
abstract's three ideas are the spec and every detail below is our choice:

1. *Class experts.* One expert per anomaly class, each a weakly supervised scorer of its class
   against normal video.
2. *A gate* that fuses the experts' scores.
3. *Temporal Gaussian splatting (TGS)*: Gaussians placed at the peaks of a video's score curve
   form a soft snippet-level target, trained with BCE next to top-k MIL.

Architecture (one ``nn.Module``; it scores each snippet, so inference runs on a whole video):

* Inputs are L2-normalised (training sequences are normalised segments from
  ``segment_features``; inference sees raw snippets, which must live on the same sphere).
* Shared temporal encoder: Linear(D, hidden) -> GELU -> dropout, then a residual 1-D
  convolution over time (kernel 3, GELU) and LayerNorm. Padded positions are zeroed before the
  convolution, so padding is exactly the convolution's own zero border and never changes a
  valid snippet's score.
* C experts: Linear(hidden, expert_hidden) -> GELU -> dropout -> Linear(expert_hidden, 1) ->
  sigmoid, all C computed in one matmul. Expert c is trained on class c + 1 vs normal.
* Gate: Linear(hidden, expert_hidden) -> GELU -> Linear(expert_hidden, C), softmax over the
  experts, **per snippet**: a video may mix activities, and no whole-video statistic is needed
  (on a live stream the encoder's kernel-3 convolution still needs one snippet of lookahead:
  scoring snippets one at a time without it gives different scores). Fused score
  ``s = sum_c g_c * s_c`` stays in [0, 1].

Loss = ``mil + lambda_expert * expert + lambda_gate * gate + lambda_tgs * tgs``:

* ``mil``: top-k MIL BCE of the fused score for every video; the video score is the mean of
  its k highest valid snippet scores, ``k = max(1, ceil(T_valid * topk_ratio))``.
* ``expert``: for expert c, the same top-k BCE over normal videos (target 0) and anomalous
  videos of class c + 1 (target 1); other anomalous videos and those with unknown class
  (cls = -1) are left out. Positives and negatives are weighted equally (a batch holds many more
  normal videos than videos of one class), and only experts with at least one positive video in
  the batch contribute; the mean over those experts is the term.
* ``gate``: cross-entropy between the gate logits averaged over a video's valid snippets and
  its class, for anomalous videos with a known class (cls >= 1).
* ``tgs``: see ``gaussian_splat_targets``: on the *detached* fused curve of each anomalous
  video, every snippet that is the maximum of its +-``tgs_window`` neighbourhood (ties count,
  so a plateau is all peaks) and reaches ``tgs_peak_threshold`` x the curve's maximum gets a
  Gaussian centred on it, amplitude = its score, sigma = max(``tgs_min_sigma``, the
  score-weighted standard deviation of the positions in its window). The target is the
  element-wise **max** of the Gaussians (a clipped sum would saturate at 1 on every plateau
  and inflate long anomalies; the max never exceeds the peak it came from, so a flat curve
  is its own target). Normal videos' target is all zeros. BCE is averaged over each video's
  valid snippets, then over videos.

For data without class labels, ``cluster_classes`` derives pseudo-classes by k-means on the
anomalous videos' mean features; use its ids as ``cls`` and ``n_classes = n_clusters``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad.heads.modules import FeatureBatch, register_module

logger = logging.getLogger(__name__)

__all__ = [
    "GSMoEConfig",
    "GSMoEHead",
    "GSMoEOutput",
    "cluster_classes",
    "gaussian_splat_targets",
    "tgs_loss",
    "topk_mean",
]

_EPS = 1e-6


@dataclass
class GSMoEConfig:
    input_dim: int = 1024
    n_classes: int = 13  # experts; UCF-Crime has 13 anomaly classes
    hidden: int = 512
    expert_hidden: int = 128
    dropout: float = 0.3
    n_segments: int = 64  # training sequence length the trainer builds with segment_features
    topk_ratio: float = 1 / 16
    lambda_expert: float = 1.0
    lambda_gate: float = 1.0
    lambda_tgs: float = 1.0
    tgs_window: int = 5
    tgs_min_sigma: float = 1.0
    tgs_peak_threshold: float = 0.5  # relative to the curve's maximum
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        if min(self.input_dim, self.n_classes, self.hidden, self.expert_hidden, self.n_segments) < 1:
            raise ValueError("input_dim, n_classes, hidden, expert_hidden and n_segments must be >= 1")
        if self.class_names and len(self.class_names) != self.n_classes:
            raise ValueError(f"{len(self.class_names)} class_names for {self.n_classes} classes")
        if not 0.0 < self.topk_ratio <= 1.0:
            raise ValueError(f"topk_ratio must be in (0, 1], got {self.topk_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if min(self.lambda_expert, self.lambda_gate, self.lambda_tgs) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.tgs_window < 1 or self.tgs_min_sigma <= 0 or not 0.0 <= self.tgs_peak_threshold <= 1.0:
            raise ValueError("need tgs_window >= 1, tgs_min_sigma > 0 and tgs_peak_threshold in [0, 1]")


class GSMoEOutput(NamedTuple):
    score: torch.Tensor  # (B, T) fused score, 0 at padding
    expert_scores: torch.Tensor  # (B, T, C) each expert's score
    gate_logits: torch.Tensor  # (B, T, C) before the softmax


def _n_top(n_valid: torch.Tensor, ratio: float) -> torch.Tensor:
    # The epsilon keeps ceil(30 * 0.1) at 3, not 4 from float round-off.
    return torch.clamp(torch.ceil(n_valid.double() * ratio - 1e-9), min=1).long()


def topk_mean(scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Mean of each video's k highest valid scores, k = max(1, ceil(T_valid * ratio)).

    scores (B, T) or (B, T, C) in [0, 1]; mask (B, T) bool. Returns (B,) or (B, C).
    """
    m = mask.bool() if scores.dim() == 2 else mask.bool().unsqueeze(-1)
    k = _n_top(mask.bool().sum(1), ratio)  # (B,)
    ranked = scores.masked_fill(~m, -1.0).sort(dim=1, descending=True).values  # padding sorts last
    csum = ranked.cumsum(dim=1)
    idx = (k - 1).view(-1, *([1] * (scores.dim() - 1))).expand(-1, 1, *scores.shape[2:])
    top_sum = csum.gather(1, idx).squeeze(1)
    return top_sum / k.view(-1, *([1] * (scores.dim() - 2))).to(scores.dtype)


def _bce(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(p.clamp(_EPS, 1 - _EPS), target, reduction="none")


def gaussian_splat_targets(
    scores: torch.Tensor, window: int = 5, min_sigma: float = 1.0, peak_threshold: float = 0.5
) -> torch.Tensor:
    """Soft snippet target (T,) from one video's score curve (T,) (valid snippets only).

    Peaks: ``s[t] == max(s[t-window : t+window+1])`` and ``s[t] >= peak_threshold * max(s)`` and
    ``s[t] > 0``. Each peak p adds ``s[p] * exp(-(t - p)^2 / (2 sigma_p^2))`` with
    ``sigma_p = max(min_sigma, std)``, std being the standard deviation of the positions in
    p's window (clipped to the video) weighted by their scores. Target = element-wise max.
    """
    s = scores.detach().float().reshape(-1)
    t_len = s.numel()
    if t_len == 0 or float(s.max()) <= 0.0:
        return torch.zeros_like(s)
    w = int(window)
    local_max = F.max_pool1d(s.view(1, 1, -1), 2 * w + 1, stride=1, padding=w).view(-1)
    peaks = torch.nonzero((s >= local_max) & (s >= peak_threshold * s.max()) & (s > 0)).squeeze(1)
    # Score-weighted spread of positions around each peak; zero padding = clipping to the video.
    win = F.pad(s, (w, w)).unfold(0, 2 * w + 1, 1)[peaks]  # (P, 2w+1)
    offsets = torch.arange(-w, w + 1, dtype=s.dtype, device=s.device)
    mass = win.sum(1)
    mean = (win * offsets).sum(1) / mass
    var = (win * (offsets - mean[:, None]) ** 2).sum(1) / mass
    sigma = var.clamp(min=0).sqrt().clamp(min=min_sigma)
    pos = torch.arange(t_len, dtype=s.dtype, device=s.device)
    bumps = s[peaks, None] * torch.exp(-((pos[None, :] - peaks[:, None].to(s.dtype)) ** 2) / (2 * sigma[:, None] ** 2))
    return bumps.amax(0).to(scores.dtype)


def tgs_loss(
    scores: torch.Tensor,
    mask: torch.Tensor | None,
    labels: torch.Tensor,
    window: int = 5,
    min_sigma: float = 1.0,
    peak_threshold: float = 0.5,
) -> torch.Tensor:
    """BCE between scores (B, T) and their Gaussian splat targets (anomalous videos) or zeros
    (normal videos), averaged over each video's valid snippets, then over videos."""
    mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
    target = torch.zeros_like(scores)
    with torch.no_grad():  # targets come from the detached curve; the loop touches no graph
        for b in torch.nonzero(labels > 0.5).squeeze(1).tolist():
            if bool(mask[b].any()):
                target[b, mask[b]] = gaussian_splat_targets(scores[b][mask[b]], window, min_sigma, peak_threshold)
    m = mask.to(scores.dtype)
    n_valid = m.sum(1)
    per_video = (_bce(scores, target) * m).sum(1) / n_valid.clamp(min=1)
    has_valid = n_valid > 0
    if not bool(has_valid.any()):
        return scores.sum() * 0.0
    return per_video[has_valid].mean()


@register_module("gsmoe", GSMoEConfig)
class GSMoEHead(nn.Module):
    """Class experts over a shared temporal encoder, fused by a per-snippet gate."""

    def __init__(self, config: GSMoEConfig | None = None) -> None:
        super().__init__()
        self.config = config or GSMoEConfig()
        cfg = self.config
        c, h, eh = cfg.n_classes, cfg.hidden, cfg.expert_hidden
        self.proj = nn.Linear(cfg.input_dim, h)
        self.temporal = nn.Conv1d(h, h, kernel_size=3, padding=1)
        self.norm = nn.LayerNorm(h)
        self.drop = nn.Dropout(cfg.dropout)
        # All experts' hidden layers in one Linear; their output layers as a (C, eh) weight.
        self.expert_in = nn.Linear(h, c * eh)
        self.expert_out_w = nn.Parameter(torch.empty(c, eh).uniform_(-1 / math.sqrt(eh), 1 / math.sqrt(eh)))
        self.expert_out_b = nn.Parameter(torch.zeros(c))
        self.gate = nn.Sequential(nn.Linear(h, eh), nn.GELU(), nn.Linear(eh, c))

    @property
    def context(self) -> tuple[int, int]:
        """Snippets a score depends on: the temporal convolution's half-width on each side."""
        half = self.temporal.kernel_size[0] // 2
        return (half, half)

    def encode(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features.float(), dim=-1)
        h = self.drop(F.gelu(self.proj(x))) * mask.unsqueeze(-1)  # padding never reaches the conv
        h = h + F.gelu(self.temporal(h.transpose(1, 2)).transpose(1, 2))
        return self.norm(h)

    def components(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> GSMoEOutput:
        b, t, _ = features.shape
        mask = torch.ones(b, t, dtype=torch.bool, device=features.device) if mask is None else mask.bool()
        z = self.encode(features, mask)
        e = self.drop(F.gelu(self.expert_in(z))).view(b, t, self.config.n_classes, -1)
        expert_scores = torch.sigmoid((e * self.expert_out_w).sum(-1) + self.expert_out_b)
        gate_logits = self.gate(z)
        fused = (gate_logits.softmax(-1) * expert_scores).sum(-1).masked_fill(~mask, 0.0)
        return GSMoEOutput(fused, expert_scores, gate_logits)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, D) -> fused scores (B, T) in [0, 1]; padded positions score 0."""
        return self.components(features, mask).score

    def loss(self, batch: FeatureBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        mask, label, cls = batch.mask.bool(), batch.label.float(), batch.cls.long()
        if int(cls.max()) > cfg.n_classes:
            raise ValueError(f"class id {int(cls.max())} but the head has {cfg.n_classes} experts")
        out = self.components(batch.features, mask)

        mil = _bce(topk_mean(out.score, mask, cfg.topk_ratio), label).mean()

        # Experts: class c + 1 videos (target 1) vs normal videos (target 0), balanced.
        normal = label <= 0.5
        expert_video = topk_mean(out.expert_scores, mask, cfg.topk_ratio)  # (B, C)
        expert_terms = []
        for c in range(cfg.n_classes):
            pos = (label > 0.5) & (cls == c + 1)
            if not bool(pos.any()):
                continue
            term = _bce(expert_video[pos, c], torch.ones_like(expert_video[pos, c])).mean()
            if bool(normal.any()):
                neg = _bce(expert_video[normal, c], torch.zeros_like(expert_video[normal, c])).mean()
                term = 0.5 * (term + neg)
            expert_terms.append(term)
        expert = torch.stack(expert_terms).mean() if expert_terms else out.score.sum() * 0.0

        known = (label > 0.5) & (cls >= 1)
        if bool(known.any()):
            m = mask.unsqueeze(-1).to(out.gate_logits.dtype)
            video_logits = (out.gate_logits * m).sum(1) / m.sum(1).clamp(min=1)
            gate = F.cross_entropy(video_logits[known], cls[known] - 1)
        else:
            gate = out.score.sum() * 0.0

        tgs = tgs_loss(out.score, mask, label, cfg.tgs_window, cfg.tgs_min_sigma, cfg.tgs_peak_threshold)

        total = mil + cfg.lambda_expert * expert + cfg.lambda_gate * gate + cfg.lambda_tgs * tgs
        parts = {"mil": mil, "expert": expert, "gate": gate, "tgs": tgs, "loss": total}
        return total, {k: float(v.detach()) for k, v in parts.items()}


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=d2 / total)
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.stack(centres)


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, max_iter: int) -> tuple[np.ndarray, float]:
    centres = _kmeans_pp(x, k, rng)
    assign = np.full(len(x), -1)
    for _ in range(max_iter):
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = members.mean(0)
            else:  # an emptied cluster restarts at the point worst served by its centre
                worst = d2[np.arange(len(x)), assign].argmax()
                centres[j] = x[worst]
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    assign = d2.argmin(1)
    return assign, float(d2[np.arange(len(x)), assign].sum())


def cluster_classes(
    video_features: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    n_clusters: int,
    seed: int = 0,
    n_init: int = 4,
    max_iter: int = 100,
) -> np.ndarray:
    """Pseudo-class ids for the cluster-expert variant: 0 for normal videos, 1..K for anomalous.

    Each anomalous video (label > 0) is its mean-pooled (T, D) features, L2-normalised; k-means++
    (best inertia of ``n_init`` runs, seeded) groups them. Ids are numbered in order of first
    appearance in the list, so the result does not depend on cluster numbering inside k-means.
    """
    labels = np.asarray(labels)
    if len(labels) != len(video_features):
        raise ValueError(f"{len(labels)} labels for {len(video_features)} videos")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    out = np.zeros(len(labels), dtype=np.int64)
    anom = np.flatnonzero(labels > 0)
    if len(anom) == 0:
        return out
    x = np.stack([np.asarray(video_features[i], dtype=np.float64).mean(0) for i in anom])
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(n_clusters, len(anom))
    if k < n_clusters:
        logger.warning("only %d anomalous videos for %d clusters: using %d", len(anom), n_clusters, k)
    rng = np.random.default_rng(seed)
    runs = [_kmeans(x, k, rng, max_iter) for _ in range(max(1, n_init))]
    assign, inertia = min(runs, key=lambda r: r[1])
    first_seen: dict[int, int] = {}
    for a in assign.tolist():
        first_seen.setdefault(a, len(first_seen) + 1)
    out[anom] = [first_seen[a] for a in assign.tolist()]
    logger.info("clustered %d anomalous videos into %d pseudo-classes (inertia %.4g)", len(anom), k, inertia)
    return out
