"""GS-MoE head: a temporal backbone, class experts, a gate that scores, and a temporal Gaussian
splatting loss.

After D'Amicantonio, Majhi et al., "Mixture of Experts Guided by Gaussian Splatters Matters: A
new Approach to Weakly-Supervised Video Anomaly Detection" (ICCV 2025, arXiv 2508.06318). The
authors' code and the paper's method section could not be read here; the design follows what
could be established (README "Training" lists the sources): GS-MoE is built on UR-DMU's
backbone (global + local temporal attention over the video, a class-agnostic anomaly score,
"task-aware" features); one expert per anomaly class, trained on that class's videos against
normal ones; a gate *network* that produces the final score from the experts' scores and the
backbone's features (better than a soft mixture in the paper's ablation); temporal Gaussian
splatting (TGS): Gaussians fitted to the prominent peaks of an anomalous video's score curve
form a dense pseudo-label, trained with BCE beside top-k MIL.

Architecture (one ``nn.Module``):

* Input: raw snippets (``input_normalization: none``, the default, as UR-DMU keeps them;
  ``l2`` L2-normalises each). A training sequence is ``n_segments`` segments of the video, each
  one snippet drawn at random from its span, afresh in every batch (``train_segments: sample``,
  the default), so training sees the single snippets the head scores at test time; ``mean``
  pools each segment instead, as MIL and RTFM train. On the ``planted`` quality set (seed 0,
  validation-selected) L2 + mean gave 0.845 frame AUC, raw + mean 0.876, raw + sample 0.900
  (docs/benchmarks.md, issue 15).
* Backbone: Linear(D, hidden) -> GELU -> dropout, a residual sum of kernel-3 convolutions over
  time, one per ``dilations`` entry (local context of +-max(dilations) snippets; RTFM's
  multi-scale idea) and LayerNorm, then ``layers`` pre-norm transformer layers (``heads``
  heads, global self-attention over the valid snippets: padding is masked out of every
  attention). ``layers: 0`` leaves a streamable encoder (max(dilations) snippets of
  look-ahead);
  ``layers >= 1`` needs the whole video (not causal, like RTFM). The backbone's own score
  head, Linear -> GELU -> Linear -> sigmoid, is the class-agnostic anomaly score.
* C experts on the backbone features: Linear(hidden, expert_hidden) -> GELU -> dropout ->
  Linear(expert_hidden, 1) -> sigmoid, all C in one matmul. Expert c learns class c + 1 vs
  normal.
* Gate (``gate: scorer``, the default): an MLP on [backbone features, the C expert scores, the
  backbone score] -> sigmoid: the final score. It can fall back on the class-agnostic path
  when no expert knows a snippet. ``gate: softmax`` is the earlier soft mixture
  ``sum_c softmax(g)_c * s_c`` (kept for ablations and saved heads), with an optional
  cross-entropy of the video-mean gate logits against the class (``lambda_gate``; no source in
  the paper, off by default).

Loss = ``mil + lambda_backbone * backbone + lambda_expert * expert + lambda_gate * gate +
lambda_tgs * tgs``:

* ``mil``: top-k BCE of the final score for every video: video score = the mean of its k highest
  valid snippet scores, ``k = max(1, ceil(T_valid * topk_ratio))``.
* ``backbone``: the same top-k BCE, and its TGS term, on the backbone score (scorer gate only).
* ``expert``: for expert c, top-k BCE over normal videos (target 0) and anomalous videos of class
  c + 1 (target 1), positives and negatives weighted equally; the mean over the experts with a
  positive in the batch.
* ``tgs`` (:func:`gaussian_splat_targets`), from epoch ``tgs_warmup_epochs`` on (a random
  curve's peaks say nothing): on the *detached* final (and backbone) curve of each anomalous
  video, the peaks of prominence >= ``tgs_prominence`` (scipy's ``find_peaks``); each gives a
  height-1 Gaussian centred on it with sigma from its width at half prominence
  (FWHM / 2.355, at least ``tgs_min_sigma``); the pseudo-label is their sum clipped to [0, 1];
  BCE against it over the video's valid snippets. A curve with no prominent peak gives no
  target; normal videos' target is all zeros. Only the ``tgs_max_peaks`` most prominent peaks
  are splatted (default 1: a weakly-labelled anomalous video holds one incident, as nearly all
  of UCF-Crime's do): with every peak splatted, the model's own noise peaks in anomalous
  training videos were reinforced epoch after epoch, and validation frame AUC fell from 0.88 at
  epoch 4 to 0.72 by epoch 50 on the ``planted`` quality set (with one peak it held 0.91-0.92
  from epoch 10 to 30; without TGS it plateaued at 0.88). ``tgs_support`` > 0 restricts an
  anomalous video's term to the splats' extent (it did not stop that drift).

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
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class GSMoEConfig:
    input_dim: int = 1024
    n_classes: int = 13  # experts; UCF-Crime has 13 anomaly classes
    hidden: int = 512
    expert_hidden: int = 128
    dilations: tuple[int, ...] = (1,)  # local encoder: one kernel-3 convolution per dilation, summed
    layers: int = 0  # global self-attention layers (0: local only, streamable; >= 1 sees the whole video)
    heads: int = 4
    gate: str = "scorer"  # scorer: an MLP gives the final score | softmax: soft mixture of the experts
    dropout: float = 0.3
    n_segments: int = 64  # training sequence length the trainer builds with segment_features
    train_segments: str = "sample"  # sample: one random snippet per segment | mean: the segment's mean
    input_normalization: str = "none"  # none | l2
    topk_ratio: float = 1 / 16
    lambda_backbone: float = 1.0
    lambda_expert: float = 1.0
    lambda_gate: float = 0.0  # softmax gate only: video-mean gate logits vs the class
    lambda_tgs: float = 1.0
    tgs_prominence: float = 0.2
    tgs_min_sigma: float = 1.0
    tgs_warmup_epochs: int = 1
    tgs_support: float = 0.0  # > 0: anomalous videos' TGS term only where the pseudo-label >= this
    tgs_max_peaks: int = 1  # splat only the most prominent peak(s) of each curve (0: all)
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.class_names = [str(c) for c in self.class_names]
        self.dilations = tuple(int(d) for d in self.dilations)  # JSON gives lists back
        if not self.dilations or min(self.dilations) < 1 or len(set(self.dilations)) != len(self.dilations):
            raise ValueError(f"dilations must be distinct positive integers, got {self.dilations}")
        if min(self.input_dim, self.n_classes, self.hidden, self.expert_hidden, self.n_segments, self.heads) < 1:
            raise ValueError("input_dim, n_classes, hidden, expert_hidden, heads and n_segments must be >= 1")
        if self.layers < 0 or (self.layers and self.hidden % self.heads):
            raise ValueError(f"layers must be >= 0 and hidden ({self.hidden}) a multiple of heads ({self.heads})")
        if self.gate not in ("scorer", "softmax"):
            raise ValueError(f"gate must be scorer or softmax, got {self.gate!r}")
        if self.train_segments not in ("sample", "mean"):
            raise ValueError(f"train_segments must be sample or mean, got {self.train_segments!r}")
        if self.input_normalization not in ("l2", "none"):
            raise ValueError(f"input_normalization must be l2 or none, got {self.input_normalization!r}")
        if self.class_names and len(self.class_names) != self.n_classes:
            raise ValueError(f"{len(self.class_names)} class_names for {self.n_classes} classes")
        if not 0.0 < self.topk_ratio <= 1.0:
            raise ValueError(f"topk_ratio must be in (0, 1], got {self.topk_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if min(self.lambda_backbone, self.lambda_expert, self.lambda_gate, self.lambda_tgs) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.tgs_min_sigma <= 0 or not 0.0 <= self.tgs_prominence <= 1.0 or self.tgs_warmup_epochs < 0 \
                or not 0.0 <= self.tgs_support <= 1.0 or self.tgs_max_peaks < 0:
            raise ValueError("need tgs_min_sigma > 0, tgs_prominence and tgs_support in [0, 1], "
                             "tgs_warmup_epochs >= 0 and tgs_max_peaks >= 0")


class GSMoEOutput(NamedTuple):
    score: torch.Tensor  # (B, T) final score, 0 at padding
    expert_scores: torch.Tensor  # (B, T, C) each expert's score
    gate_logits: torch.Tensor  # (B, T, C) softmax gate: before the softmax; scorer gate: empty (B, T, 0)
    backbone_score: torch.Tensor  # (B, T) the class-agnostic score (scorer gate; = score for softmax)


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


def gaussian_splat_targets(scores: torch.Tensor | np.ndarray, prominence: float = 0.2,
                           min_sigma: float = 1.0, max_peaks: int = 0) -> np.ndarray | None:
    """Dense pseudo-label (T,) from one video's score curve (T,) (valid snippets only), or None
    when the curve has no peak of ``prominence``.

    Peaks and their widths at half prominence come from ``scipy.signal.find_peaks`` /
    ``peak_widths`` (a plateau is one peak, at its middle; a curve's ends are never peaks). Each
    peak p adds ``exp(-(t - p)^2 / (2 sigma_p^2))`` with ``sigma_p = max(min_sigma, width_p /
    2.355)``; the label is the sum clipped to [0, 1].
    """
    from scipy.signal import find_peaks, peak_widths

    s = scores.detach().double().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, np.float64)
    s = s.reshape(-1)
    if s.size < 3:
        return None
    peaks, props = find_peaks(s, prominence=prominence)
    if not len(peaks):
        return None
    if max_peaks and len(peaks) > max_peaks:  # the most prominent ones, in time order
        peaks = np.sort(peaks[np.argsort(-props["prominences"], kind="stable")[:max_peaks]])
    widths = peak_widths(s, peaks, rel_height=0.5)[0]
    sigma = np.maximum(min_sigma, widths / _FWHM_PER_SIGMA)
    pos = np.arange(s.size, dtype=np.float64)
    bumps = np.exp(-((pos[None, :] - peaks[:, None]) ** 2) / (2.0 * sigma[:, None] ** 2))
    return np.clip(bumps.sum(0), 0.0, 1.0)


def tgs_loss(scores: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor, prominence: float = 0.2,
             min_sigma: float = 1.0, support: float = 0.0, max_peaks: int = 0) -> torch.Tensor:
    """BCE between scores (B, T) and their Gaussian splat pseudo-labels (anomalous videos with a
    prominent peak) or zeros (normal videos), averaged over each video's valid snippets, then
    over the videos that have a target.

    ``support`` > 0: in an anomalous video only the snippets whose pseudo-label is at least
    ``support`` count (the splats' own extent), so the curve's low parts are not pushed to 0 on
    the strength of the model's own peaks; normal videos keep their all-zero target."""
    mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
    target = torch.zeros_like(scores)
    weight = mask.clone()
    use = (labels <= 0.5) & mask.any(1)
    with torch.no_grad():  # targets come from the detached curve
        for b in torch.nonzero(labels > 0.5).squeeze(1).tolist():
            if bool(mask[b].any()):
                t = gaussian_splat_targets(scores[b][mask[b]], prominence, min_sigma, max_peaks)
                if t is not None:
                    target[b, mask[b]] = torch.from_numpy(t).to(scores.dtype)
                    use[b] = True
                    if support > 0:
                        weight[b] = mask[b] & (target[b] >= support)
    if not bool(use.any()):
        return scores.sum() * 0.0
    m = weight.to(scores.dtype)
    per_video = (_bce(scores, target) * m).sum(1) / m.sum(1).clamp(min=1)
    return per_video[use].mean()


@register_module("gsmoe", GSMoEConfig)
class GSMoEHead(nn.Module):
    """A temporal backbone, class experts, and a gate that gives the final score."""

    def __init__(self, config: GSMoEConfig | None = None) -> None:
        super().__init__()
        self.config = config or GSMoEConfig()
        cfg = self.config
        c, h, eh = cfg.n_classes, cfg.hidden, cfg.expert_hidden
        self.proj = nn.Linear(cfg.input_dim, h)
        # The first dilation's convolution keeps its old name, so heads saved before
        # ``dilations`` existed load unchanged.
        d0, *more = cfg.dilations
        self.temporal = nn.Conv1d(h, h, kernel_size=3, padding=d0, dilation=d0)
        self.temporal_more = nn.ModuleList(nn.Conv1d(h, h, 3, padding=d, dilation=d, bias=False) for d in more)
        self.norm = nn.LayerNorm(h)
        self.drop = nn.Dropout(cfg.dropout)
        self.attention = nn.ModuleList(
            nn.TransformerEncoderLayer(h, cfg.heads, dim_feedforward=2 * h, dropout=cfg.dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.layers))
        # All experts' hidden layers in one Linear; their output layers as a (C, eh) weight.
        self.expert_in = nn.Linear(h, c * eh)
        self.expert_out_w = nn.Parameter(torch.empty(c, eh).uniform_(-1 / math.sqrt(eh), 1 / math.sqrt(eh)))
        self.expert_out_b = nn.Parameter(torch.zeros(c))
        if cfg.gate == "softmax":
            self.gate = nn.Sequential(nn.Linear(h, eh), nn.GELU(), nn.Linear(eh, c))
        else:
            self.backbone_head = nn.Sequential(nn.Linear(h, eh), nn.GELU(), nn.Linear(eh, 1))
            self.gate = nn.Sequential(nn.Linear(h + c + 1, eh), nn.GELU(), nn.Linear(eh, 1))
        self.epoch = 0  # set by the trainer (set_epoch): TGS starts after its warm-up

    # the trainer reads these: how training segments are pooled, what the input goes through
    @property
    def segment_pooling(self) -> dict[str, bool]:
        return {"normalize": self.config.input_normalization == "l2",
                "sample": self.config.train_segments == "sample"}

    @property
    def input_normalization(self) -> str:
        return self.config.input_normalization

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def context(self) -> tuple[int, int]:
        """Snippets a score depends on: the convolution's half-width, or the whole video (-1)."""
        if self.config.layers:
            return (-1, -1)
        half = max(self.config.dilations)
        return (half, half)

    def encode(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = features.float()
        if self.config.input_normalization == "l2":
            x = F.normalize(x, dim=-1)
        valid = mask.unsqueeze(-1)
        h = self.drop(F.gelu(self.proj(x))) * valid  # padding never reaches the conv
        ht = h.transpose(1, 2)
        local = self.temporal(ht)
        for conv in self.temporal_more:
            local = local + conv(ht)
        h = h + F.gelu(local.transpose(1, 2))
        h = self.norm(h)
        for layer in self.attention:
            h = layer(h, src_key_padding_mask=~mask) * valid
        return h

    def components(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> GSMoEOutput:
        b, t, _ = features.shape
        mask = torch.ones(b, t, dtype=torch.bool, device=features.device) if mask is None else mask.bool()
        z = self.encode(features, mask)
        e = self.drop(F.gelu(self.expert_in(z))).view(b, t, self.config.n_classes, -1)
        expert_scores = torch.sigmoid((e * self.expert_out_w).sum(-1) + self.expert_out_b)
        if self.config.gate == "softmax":
            gate_logits = self.gate(z)
            fused = (gate_logits.softmax(-1) * expert_scores).sum(-1).masked_fill(~mask, 0.0)
            return GSMoEOutput(fused, expert_scores, gate_logits, fused)
        backbone = torch.sigmoid(self.backbone_head(z)).squeeze(-1)
        final = torch.sigmoid(self.gate(torch.cat([z, expert_scores, backbone.unsqueeze(-1)], -1))).squeeze(-1)
        return GSMoEOutput(final.masked_fill(~mask, 0.0), expert_scores, z.new_zeros(b, t, 0),
                           backbone.masked_fill(~mask, 0.0))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, D) -> final scores (B, T) in [0, 1]; padded positions score 0."""
        return self.components(features, mask).score

    def loss(self, batch: FeatureBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        mask, label, cls = batch.mask.bool(), batch.label.float(), batch.cls.long()
        if int(cls.max()) > cfg.n_classes:
            raise ValueError(f"class id {int(cls.max())} but the head has {cfg.n_classes} experts")
        out = self.components(batch.features, mask)
        zero = out.score.sum() * 0.0

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
        expert = torch.stack(expert_terms).mean() if expert_terms else zero

        gate = zero
        known = (label > 0.5) & (cls >= 1)
        if cfg.gate == "softmax" and cfg.lambda_gate > 0 and bool(known.any()):
            m = mask.unsqueeze(-1).to(out.gate_logits.dtype)
            video_logits = (out.gate_logits * m).sum(1) / m.sum(1).clamp(min=1)
            gate = F.cross_entropy(video_logits[known], cls[known] - 1)

        tgs_on = cfg.lambda_tgs > 0 and self.epoch >= cfg.tgs_warmup_epochs
        tgs_args = (cfg.tgs_prominence, cfg.tgs_min_sigma, cfg.tgs_support, cfg.tgs_max_peaks)
        tgs = tgs_loss(out.score, mask, label, *tgs_args) if tgs_on else zero

        backbone = zero
        if cfg.gate == "scorer":
            backbone = _bce(topk_mean(out.backbone_score, mask, cfg.topk_ratio), label).mean()
            if tgs_on:
                backbone = backbone + cfg.lambda_tgs * tgs_loss(out.backbone_score, mask, label, *tgs_args)

        total = (mil + cfg.lambda_backbone * backbone + cfg.lambda_expert * expert + cfg.lambda_gate * gate
                 + cfg.lambda_tgs * tgs)
        parts = {"mil": mil, "backbone": backbone, "expert": expert, "gate": gate, "tgs": tgs, "loss": total}
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
