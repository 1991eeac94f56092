"""The one resize used by every backend (and by :mod:`vad.clips`).

Backends decode at the native resolution and resize here, never inside the
decoder (decord/PyAV/OpenCV each use different swscale flags), so that the
same video gives bit-identical frames whichever backend decoded it.

Interpolation: ``cv2.INTER_AREA`` when the frame shrinks in both dimensions
(area averaging is anti-aliased, close to PIL's anti-aliased bilinear that
torchvision uses on PIL images), ``cv2.INTER_LINEAR`` otherwise (upscaling or
mixed), as OpenCV recommends.

Short-side sizing follows torchvision's ``Resize(int)`` convention: the short
side becomes exactly ``short_side`` and the long side is ``int(short_side *
long / short)`` (truncated, not rounded); e.g. 768x576 -> 341x256.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["short_side_size", "resize_image", "resize_frames", "resize_short_side"]


def short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling so the shorter side equals ``short_side``."""
    if short_side <= 0:
        raise ValueError(f"short_side must be positive, got {short_side}")
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one (H, W, 3) uint8 image to ``size`` = (width, height)."""
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrink = width <= w and height <= h
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames to ``size`` = (width, height) -> (T, height, width, 3)."""
    if frames.ndim != 4:
        raise ValueError(f"expected frames of shape (T, H, W, C), got {frames.shape}")
    width, height = size
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((frames.shape[0], height, width, frames.shape[3]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        out[i] = resize_image(frame, size)
    return out


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (T, H, W, 3) frames so min(H, W) == ``short_side``, keeping the aspect ratio."""
    if frames.ndim != 4:
        raise ValueError(f"expected frames of shape (T, H, W, C), got {frames.shape}")
    h, w = frames.shape[1:3]
    return resize_frames(frames, short_side_size(w, h, short_side))
