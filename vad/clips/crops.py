"""Spatial crops of snippets: center, 5-crop and 10-crop views.

Crop ORDER follows torchvision's ``FiveCrop`` / ``TenCrop`` because the
released VAD feature sets (RTFM / UR-DMU I3D features, files suffixed
``__0`` .. ``__9``) were extracted with it; crop ``k`` here is their ``__k``:

* ``"center"``: ``[center]``
* ``"5crop"``:  ``[top-left, top-right, bottom-left, bottom-right, center]``
* ``"10crop"``: the 5 crops above, then the same 5 crops of the horizontally
  flipped frames (``[flip-tl, flip-tr, flip-bl, flip-br, flip-center]``, where
  e.g. flip-tl is the mirror image of the original top-right corner).

Offsets, with ``H, W`` the frame size and ``s`` the crop size: corners at rows
``0`` / ``H - s`` and columns ``0`` / ``W - s``; the center crop at
``top = int(round((H - s) / 2))``, ``left = int(round((W - s) / 2))`` (Python
round, half to even, as torchvision's ``center_crop``).

Frames smaller than the crop are an error: resize first (e.g.
:func:`resize_short_side` to 256, then crop 224).
"""

from __future__ import annotations

import numpy as np

from vad.io.resize import resize_short_side

__all__ = ["N_CROPS", "crop_views", "crop_boxes", "resize_short_side"]

#: Number of views each mode produces.
N_CROPS: dict[str, int] = {"center": 1, "5crop": 5, "10crop": 10}


def crop_boxes(height: int, width: int, size: int, mode: str = "center") -> list[tuple[int, int, bool]]:
    """``(top, left, hflip)`` of each view, in the documented order.

    For flipped views, ``top``/``left`` are positions in the flipped frame.
    """
    if mode not in N_CROPS:
        raise ValueError(f"unknown crop mode {mode!r}; choose from {list(N_CROPS)}")
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if height < size or width < size:
        raise ValueError(
            f"frames of {width}x{height} are smaller than the {size}x{size} crop; "
            f"resize them first (e.g. resize_short_side(frames, {max(size, 256)}))"
        )
    center = (int(round((height - size) / 2.0)), int(round((width - size) / 2.0)))
    if mode == "center":
        return [(*center, False)]
    five = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), center]
    boxes = [(t, left, False) for t, left in five]
    if mode == "10crop":
        boxes += [(t, left, True) for t, left in five]
    return boxes


def crop_views(frames: np.ndarray, size: int = 224, mode: str = "center") -> np.ndarray:
    """Crop (T, H, W, C) frames into views: returns (n_crops, T, size, size, C), same dtype.

    ``n_crops = N_CROPS[mode]``; order as in the module docstring (torchvision
    FiveCrop/TenCrop). Raises ``ValueError`` if H or W < ``size``.
    """
    if frames.ndim != 4:
        raise ValueError(f"expected frames of shape (T, H, W, C), got {frames.shape}")
    _, height, width, _ = frames.shape
    boxes = crop_boxes(height, width, size, mode)
    flipped = frames[:, :, ::-1] if any(flip for _, _, flip in boxes) else None
    views = []
    for top, left, flip in boxes:
        src = flipped if flip else frames
        views.append(src[:, top : top + size, left : left + size])
    return np.stack(views)
