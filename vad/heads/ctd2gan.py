"""CT-D2GAN torch core: future-frame prediction with a convolutional transformer generator and
two discriminators (Feng et al., "Convolutional Transformer based Dual Discriminator Generative
Adversarial Networks for Video Anomaly Detection", ACM MM 2021, arXiv 2107.13720).

No code was published; the paper's description is the spec. What the paper fixes, and what
this module chooses where it leaves things open (every choice is a config field):

* **Input.** ``past_frames`` consecutive frames (default 4) resized to ``size`` x ``size``
  (default 128, small enough to train on a CPU in minutes), ``channels`` 1 (grey, default) or 3,
  values in [-1, 1]. The generator predicts the next frame.
* **Convolutional encoder** (paper: per input frame). Chosen: ``depth`` stride-2 stages of two
  3x3 convolutions with batch norm and LeakyReLU(0.2), widths ``width * 2**i``; the same
  weights for every frame (frames are folded into the batch).
* **Temporal self-attention** (paper: multi-head; per head, the feature maps are transformed by a
  convolution, globally average-pooled to a vector, concatenated with a positional encoding,
  and compared to give attention weights over time; the attended maps are aggregated).
  Chosen: query, key and value per head are 1x1 convolutions of the deepest maps; the query is
  the most recent frame's; weights = softmax over frames of the scaled dot product of the
  pooled query and keys (each with a sinusoidal positional encoding of ``pe_dim`` appended);
  each head's output is the weighted sum of its value maps; heads are concatenated, mixed by a
  1x1 convolution and added to the most recent frame's maps (residual).
* **Convolutional decoder** (paper: integrates the spatio-temporal features and predicts the
  frame). Chosen: a U-Net decoder, bilinear upsampling + two 3x3 convolutions per stage, with
  skip connections from the encoder maps of the most recent frame; ``tanh`` output. With
  ``residual`` (the shipped config's choice; the paper does not say how the frame is
  parameterised) the decoder's output is instead *added to the newest past frame* (clamped to
  [-1, 1]) and its last layer starts at zero: the untrained generator copies the last frame and
  training only has to learn the motion. Without it, a generator trained for the few minutes a
  CPU allows predicted normal frames *worse* than copying the last frame (1.1-1.5x its error on
  the label-free benchmark), i.e. it had learned a blur, not the motion.
* **Image discriminator** (paper: local, frame-level consistency). Chosen: a PatchGAN of
  ``disc_depth`` stride-2 4x4 convolutions (no normalisation on the first), one logit per patch.
* **Video discriminator** (paper: temporal coherence of the clip ending in the real or the
  predicted frame). Chosen: the same structure with 3D convolutions over the
  ``past_frames + 1`` frames, stride 2 in space and 1 in time (kernel 3 in time).
* **Losses.** Intensity (mean squared error) and gradient loss (L1 between the absolute image
  gradients of prediction and target, as in Liu et al.'s future-frame prediction, on which the
  paper builds), plus both adversarial terms. Chosen: least-squares GAN objectives (stable on
  small data); weights ``lambda_int`` 1, ``lambda_grad`` 1, ``lambda_img`` 0.05,
  ``lambda_vid`` 0.05. The discriminators are trained on detached predictions with their own
  optimisers, alternating with the generator (see :func:`adversarial_step`).
* **Score.** PSNR between the predicted and the real frame on the [0, 1] intensity scale;
  low PSNR = anomalous (see :func:`psnr`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CTD2GAN",
    "CTD2GANConfig",
    "ConvTransformerGenerator",
    "ImageDiscriminator",
    "TemporalSelfAttention",
    "VideoDiscriminator",
    "adversarial_step",
    "gradient_loss",
    "psnr",
]


@dataclass
class CTD2GANConfig:
    size: int = 128  # frames are size x size
    channels: int = 1  # 1 = grey, 3 = RGB
    past_frames: int = 4  # frames the generator sees; it predicts the next one
    width: int = 32  # channels of the first encoder stage (doubling per stage)
    depth: int = 3  # stride-2 encoder stages: 128 -> 16
    heads: int = 4  # temporal attention heads
    pe_dim: int = 8  # positional encoding appended to the pooled query and keys
    disc_width: int = 32
    disc_depth: int = 3
    lambda_int: float = 1.0
    lambda_grad: float = 1.0
    lambda_img: float = 0.05
    lambda_vid: float = 0.05
    # the decoder predicts the change from the newest past frame (not the frame itself); False
    # for heads saved before this option existed
    residual: bool = False

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.past_frames < 1:
            raise ValueError(f"past_frames must be >= 1, got {self.past_frames}")
        if min(self.width, self.depth, self.heads, self.disc_width, self.disc_depth) < 1 or self.pe_dim < 0:
            raise ValueError("width, depth, heads, disc_width and disc_depth must be >= 1, pe_dim >= 0")
        if self.size % (2 ** max(self.depth, self.disc_depth)):
            raise ValueError(f"size {self.size} must be divisible by 2**depth ({2 ** max(self.depth, self.disc_depth)})")
        deepest = self.width * 2 ** (self.depth - 1)
        if deepest % self.heads:
            raise ValueError(f"the deepest encoder width ({deepest}) must be divisible by heads ({self.heads})")
        if min(self.lambda_int, self.lambda_grad, self.lambda_img, self.lambda_vid) < 0:
            raise ValueError("loss weights must be >= 0")


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
    )


def positional_encoding(n: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Sinusoidal encoding (n, dim) of positions 0..n-1 (Vaswani et al.)."""
    if dim == 0:
        return torch.zeros(n, 0, device=device)
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    i = torch.arange(dim, dtype=torch.float32, device=device)[None, :]
    angle = pos / torch.pow(10000.0, (2 * (i // 2)) / dim)
    return torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))


class TemporalSelfAttention(nn.Module):
    """Attention of the most recent frame over all past frames' maps (see the module docstring)."""

    def __init__(self, channels: int, heads: int, pe_dim: int) -> None:
        super().__init__()
        self.heads, self.pe_dim = heads, pe_dim
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.mix = nn.Conv2d(channels, channels, 1)
        self.weights: torch.Tensor | None = None  # (B, heads, T) of the last forward, for inspection

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps (B, T, C, h, w) -> (B, C, h, w)."""
        b, t, c, h, w = maps.shape
        flat = maps.reshape(b * t, c, h, w)
        d = c // self.heads
        q = self.q(maps[:, -1]).mean(dim=(2, 3)).view(b, self.heads, d)  # pooled query of the newest frame
        k = self.k(flat).mean(dim=(2, 3)).view(b, t, self.heads, d).transpose(1, 2)  # (B, heads, T, d)
        v = self.v(flat).view(b, t, self.heads, d, h, w)
        pe = positional_encoding(t, self.pe_dim, maps.device)  # (T, pe)
        q = torch.cat([q, pe[-1].expand(b, self.heads, -1)], dim=-1)
        k = torch.cat([k, pe.expand(b, self.heads, t, -1)], dim=-1)
        att = torch.softmax((k @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, heads, T)
        self.weights = att.detach()
        out = torch.einsum("bnt,btndhw->bndhw", att, v).reshape(b, c, h, w)
        return maps[:, -1] + self.mix(out)


class ConvTransformerGenerator(nn.Module):
    """Past frames (B, T, C, H, W) in [-1, 1] -> the predicted next frame (B, C, H, W)."""

    def __init__(self, cfg: CTD2GANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.width * 2 ** i for i in range(cfg.depth)]
        self.stem = _block(cfg.channels, cfg.width // 2 or 1)
        ins = [cfg.width // 2 or 1, *widths[:-1]]
        self.down = nn.ModuleList(_block(i, o, stride=2) for i, o in zip(ins, widths))
        self.attention = TemporalSelfAttention(widths[-1], cfg.heads, cfg.pe_dim)
        skips = [cfg.width // 2 or 1, *widths[:-1]]  # encoder maps at each decoder resolution
        self.up = nn.ModuleList(_block(widths[i] + skips[i], skips[i]) for i in reversed(range(cfg.depth)))
        self.out = nn.Conv2d(skips[0], cfg.channels, 1)
        if cfg.residual:  # an untrained residual generator copies the newest frame
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        x = self.stem(clip.reshape(b * t, c, h, w))
        skips = [x]
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        deepest = skips.pop()
        y = self.attention(deepest.view(b, t, *deepest.shape[1:]))
        newest = [s.view(b, t, *s.shape[1:])[:, -1] for s in skips]  # skip maps of the newest frame
        for stage, skip in zip(self.up, reversed(newest)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = stage(torch.cat([y, skip], dim=1))
        if self.cfg.residual:
            return (clip[:, -1] + self.out(y)).clamp(-1.0, 1.0)
        return torch.tanh(self.out(y))


def _patch_layers(cfg: CTD2GANConfig, conv: type, norm: type, kernel: Any, stride: Any, padding: Any,
                  head_kernel: int) -> nn.Sequential:
    """A PatchGAN: ``disc_depth`` strided convolutions (no normalisation on the first), one logit per patch."""
    layers: list[nn.Module] = []
    cin = cfg.channels
    for i in range(cfg.disc_depth):
        cout = cfg.disc_width * 2 ** i
        layers.append(conv(cin, cout, kernel, stride=stride, padding=padding))
        if i:
            layers.append(norm(cout))
        layers.append(nn.LeakyReLU(0.2, True))
        cin = cout
    layers.append(conv(cin, 1, head_kernel, padding=1))
    return nn.Sequential(*layers)


class ImageDiscriminator(nn.Module):
    """PatchGAN on single frames (B, C, H, W) -> patch logits (B, 1, h, w)."""

    def __init__(self, cfg: CTD2GANConfig) -> None:
        super().__init__()
        self.net = _patch_layers(cfg, nn.Conv2d, nn.BatchNorm2d, 4, 2, 1, 3)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.net(frame)


class VideoDiscriminator(nn.Module):
    """3D PatchGAN on clips (B, T+1, C, H, W) -> patch logits (B, 1, t, h, w): stride 2 in
    space, 1 in time (kernel 3 in time)."""

    def __init__(self, cfg: CTD2GANConfig) -> None:
        super().__init__()
        self.net = _patch_layers(cfg, nn.Conv3d, nn.BatchNorm3d, (3, 4, 4), (1, 2, 2), (1, 1, 1), 3)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.net(clip.transpose(1, 2))  # (B, C, T, H, W) for Conv3d


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 difference of the absolute horizontal and vertical image gradients."""
    def grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()

    (px, py), (tx, ty) = grads(pred), grads(target)
    return (px - tx).abs().mean() + (py - ty).abs().mean()


def psnr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-frame PSNR (dB) of frames in [-1, 1], on the [0, 1] intensity scale: (B,)."""
    mse = ((pred - target) / 2.0).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / (mse + eps))


class CTD2GAN(nn.Module):
    """Generator and both discriminators, with the losses of one adversarial step."""

    def __init__(self, config: CTD2GANConfig | None = None) -> None:
        super().__init__()
        self.config = config or CTD2GANConfig()
        self.generator = ConvTransformerGenerator(self.config)
        self.image_d = ImageDiscriminator(self.config)
        self.video_d = VideoDiscriminator(self.config)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Past frames (B, T, C, H, W) -> predicted next frame (B, C, H, W)."""
        return self.generator(clip)

    def generator_loss(self, clip: torch.Tensor, target: torch.Tensor,
                       pred: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """Reconstruction + adversarial terms for the generator; returns (loss, parts, prediction)."""
        cfg = self.config
        pred = self.generator(clip) if pred is None else pred
        intensity = F.mse_loss(pred, target)
        grad = gradient_loss(pred, target)
        fake_clip = torch.cat([clip, pred.unsqueeze(1)], dim=1)
        adv_img = (self.image_d(pred) - 1).pow(2).mean()
        adv_vid = (self.video_d(fake_clip) - 1).pow(2).mean()
        loss = cfg.lambda_int * intensity + cfg.lambda_grad * grad + cfg.lambda_img * adv_img + cfg.lambda_vid * adv_vid
        parts = {"intensity": float(intensity.detach()), "gradient": float(grad.detach()),
                 "adv_image": float(adv_img.detach()), "adv_video": float(adv_vid.detach())}
        return loss, parts, pred

    def discriminator_loss(self, clip: torch.Tensor, target: torch.Tensor,
                           pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Least-squares losses of the image and video discriminators (prediction detached)."""
        fake = pred.detach()
        d_img = 0.5 * ((self.image_d(target) - 1).pow(2).mean() + self.image_d(fake).pow(2).mean())
        real_clip = torch.cat([clip, target.unsqueeze(1)], dim=1)
        fake_clip = torch.cat([clip, fake.unsqueeze(1)], dim=1)
        d_vid = 0.5 * ((self.video_d(real_clip) - 1).pow(2).mean() + self.video_d(fake_clip).pow(2).mean())
        return d_img, d_vid


def adversarial_step(model: CTD2GAN, clip: torch.Tensor, target: torch.Tensor,
                     opt_g: torch.optim.Optimizer, opt_img: torch.optim.Optimizer,
                     opt_vid: torch.optim.Optimizer) -> dict[str, float]:
    """One alternating step: the generator (discriminators fixed), then each discriminator on
    the detached prediction. Returns the loss parts."""
    model.train()
    for d in (model.image_d, model.video_d):
        d.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    loss_g, parts, pred = model.generator_loss(clip, target)
    loss_g.backward()
    opt_g.step()
    for d in (model.image_d, model.video_d):
        d.requires_grad_(True)
    opt_img.zero_grad(set_to_none=True)
    opt_vid.zero_grad(set_to_none=True)
    d_img, d_vid = model.discriminator_loss(clip, target, pred)
    (d_img + d_vid).backward()
    opt_img.step()
    opt_vid.step()
    return {**parts, "generator": float(loss_g.detach()), "d_image": float(d_img.detach()),
            "d_video": float(d_vid.detach())}
