"""Motion statistics of a snippet, per named region of the frame: the offline perception's
motion evidence, and what the offline rules compare with the reference footage.

Dense optical flow (Farneback, the scene head's parameters) between consecutive frames at
``short_side`` px. A pixel *moves* when its flow exceeds ``moving_px`` px/frame. Per region of a
3 x 3 grid (:data:`REGIONS`: ``top-left`` .. ``bottom-right``) and for the whole ``frame``:

* ``speed``: the 0.9 quantile of moving pixels' speeds, px/frame at the analysis size (0 when
  fewer than ``min_pixels`` moved) -- the fastest things, not the average;
* ``energy``: the fraction of the region's pixels that moved, averaged over the snippet;
* ``direction``: the compass direction of the moving pixels' mean flow (image axes: ``up`` is
  towards the top of the picture), None when nothing moved; ``coherence`` in [0, 1]: how much of
  the motion agrees with that direction (1: all one way, 0: as much each way).

``scene_change``: the mean absolute grey difference between the snippet's first and last frame
(0-255 scale): large when the camera moved, lights changed, or the view was blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from vad.heads.scene import FARNEBACK_PARAMS

__all__ = ["COMPASS", "REGIONS", "MotionConfig", "snippet_motion", "region_of_box"]

REGIONS = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")
COMPASS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")


@dataclass(frozen=True)
class MotionConfig:
    short_side: int = 144
    moving_px: float = 0.5
    min_pixels: int = 20
    quantile: float = 0.9

    def __post_init__(self) -> None:
        if self.short_side < 16 or self.moving_px <= 0 or self.min_pixels < 1 or not 0 < self.quantile <= 1:
            raise ValueError("motion: short_side >= 16, moving_px > 0, min_pixels >= 1, 0 < quantile <= 1")


def _compass(dx: float, dy: float) -> str:
    angle = np.degrees(np.arctan2(dy, dx)) % 360.0  # y grows downwards: 90 deg is "down"
    return COMPASS[int(((angle + 22.5) % 360.0) // 45.0)]


def _region_slices(h: int, w: int) -> dict[str, tuple[slice, slice]]:
    ys, xs = np.linspace(0, h, 4).astype(int), np.linspace(0, w, 4).astype(int)
    return {REGIONS[3 * r + c]: (slice(ys[r], ys[r + 1]), slice(xs[c], xs[c + 1])) for r in range(3) for c in range(3)}


def region_of_box(box: tuple[float, float, float, float]) -> str:
    """The region name holding the centre of a box given as fractions (x0, y0, x1, y1)."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    c, r = min(2, max(0, int(cx * 3))), min(2, max(0, int(cy * 3)))
    return REGIONS[3 * r + c]


def _stats(mag: np.ndarray, fx: np.ndarray, fy: np.ndarray, cfg: MotionConfig) -> dict[str, Any]:
    moving = mag > cfg.moving_px
    n = int(moving.sum())
    energy = n / max(1, mag.size)
    if n < cfg.min_pixels:
        return {"speed": 0.0, "energy": round(float(energy), 4), "direction": None, "coherence": 0.0}
    speeds = mag[moving]
    mx, my = float(fx[moving].mean()), float(fy[moving].mean())
    coherence = float(np.hypot(mx, my) / max(1e-6, float(speeds.mean())))
    return {"speed": round(float(np.quantile(speeds, cfg.quantile)), 3), "energy": round(float(energy), 4),
            "direction": _compass(mx, my), "coherence": round(min(1.0, coherence), 3)}


def snippet_motion(frames: np.ndarray, cfg: MotionConfig = MotionConfig()) -> dict[str, Any]:
    """Motion statistics of consecutive uint8 RGB frames (T, H, W, 3), T >= 2 (see the module
    doc): ``{"frame": {...}, "regions": {name: {...}}, "scene_change": x, "analysis_size": [w, h]}``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames (T, H, W, 3), got {frames.shape} {frames.dtype}")
    if len(frames) < 2:
        raise ValueError(f"motion needs at least 2 frames, got {len(frames)}")
    h, w = frames.shape[1:3]
    s = cfg.short_side / min(h, w)
    size = (max(3, int(round(w * s))), max(3, int(round(h * s))))
    greys = [cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, *FARNEBACK_PARAMS) for a, b in zip(greys[:-1], greys[1:])]
    fx = np.stack([f[..., 0] for f in flows])
    fy = np.stack([f[..., 1] for f in flows])
    mag = np.hypot(fx, fy)
    regions = {name: _stats(mag[:, ys, xs], fx[:, ys, xs], fy[:, ys, xs], cfg)
               for name, (ys, xs) in _region_slices(size[1], size[0]).items()}
    change = float(np.abs(greys[-1].astype(np.float32) - greys[0].astype(np.float32)).mean())
    return {"frame": _stats(mag, fx, fy, cfg), "regions": regions, "scene_change": round(change, 3),
            "analysis_size": [size[0], size[1]]}
