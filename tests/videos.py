"""Helpers for tests that need real video files.

``write_lossless_video`` encodes RGB frames so that every backend (decord's
FFmpeg 4.1, PyAV's and OpenCV's FFmpeg 8) decodes them back bit-exactly:

* ``.mkv`` / ``.avi``: FFV1 with pix_fmt ``bgr0`` (lossless RGB, intra-only;
  Matroska stores no frame count, so ``.mkv`` also exercises packet counting);
* ``.mp4``: libx264rgb with ``qp=0`` (lossless RGB H.264, with B-frames and a
  keyframe every ``gop`` frames, for seeking tests). ``codec="x264rgb"`` forces
  it for ``.avi``/``.mkv`` too (AVI + B-frames is the case decord cannot seek).

RGB -> bgr0/rgb24 and back are pure channel permutations, so no colour
conversion rounding is involved.

``find_sample(name)`` locates real sample videos (e.g. OpenCV's ``vtest.avi``)
without committing them; tests using it call :func:`skip_or_fail` when it returns None.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

#: The real annotation files laid beside the checkout (``../shared/data/annotations``).
ANNOTATIONS = Path(os.environ.get("VAD_ANNOTATIONS_DIR", REPO.parent / "shared" / "data" / "annotations"))


def skip_or_fail(reason: str) -> None:
    """A test's real asset is missing: skip on a developer's machine, but fail under CI
    (``CI`` set), where `make test` sets the assets up and ``../shared`` is laid beside the
    clone, so a missing asset is a broken set-up, not a reason to check less."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it: `make test` fetches the samples and weights; "
                    "the annotations are ../shared/data/annotations)")
    pytest.skip(reason)


def require_sample(name: str) -> Path:
    """The sample video ``name``, or skip/fail (see :func:`skip_or_fail`)."""
    path = find_sample(name)
    if path is None:
        skip_or_fail(f"sample video {name} not found (run `make test` / `vad assets fetch`, or set VAD_SAMPLE_VIDEO)")
    return path


def require_annotations() -> Path:
    """The real annotation folder, or skip/fail (see :func:`skip_or_fail`)."""
    if not (ANNOTATIONS / "README.md").is_file():
        skip_or_fail(f"annotation files not found at {ANNOTATIONS} (or set VAD_ANNOTATIONS_DIR)")
    return ANNOTATIONS

_SAMPLE_DIRS = (
    REPO / "data" / "samples",
    Path("/usr/share/doc/opencv-doc/examples/data"),
)


def find_sample(name: str) -> Path | None:
    """Path of sample video ``name``, or None.

    Looks at ``$VAD_SAMPLE_VIDEO`` (a file with that name, or a folder holding
    it), then ``<repo>/data/samples/``, then the opencv-doc examples folder.
    """
    env = os.environ.get("VAD_SAMPLE_VIDEO")
    candidates: list[Path] = []
    if env:
        p = Path(env)
        candidates += [p] if p.name == name else [p / name]
    candidates += [d / name for d in _SAMPLE_DIRS]
    for c in candidates:
        if c.is_file() and c.stat().st_size > 0:
            return c
    return None


def make_frames(n_frames: int = 40, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Distinct RGB uint8 frames (T, H, W, 3): a moving gradient, the frame index
    written in pixel (0, 0), and seeded noise, so any frame mix-up is visible."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for t in range(n_frames):
        frames[t, ..., 0] = (x * 4 + t * 5) % 256
        frames[t, ..., 1] = (y * 5 + t * 3) % 256
        frames[t, ..., 2] = ((x + y) * 2 + t * 11) % 256
    noise = rng.integers(0, 32, size=frames.shape, dtype=np.uint8)
    frames = frames ^ noise
    frames[:, 0, 0] = np.stack([np.arange(n_frames) % 256, np.arange(n_frames) // 256, np.zeros(n_frames)], 1)
    return frames


def write_lossless_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: float = 25,
    *,
    codec: str | None = None,
    gop: int = 12,
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB ``frames`` losslessly at ``fps``; returns the path.

    Codec by suffix unless given: FFV1/bgr0 for .mkv/.avi, libx264rgb qp=0 for
    .mp4 (``codec="x264rgb"`` or ``"ffv1"`` to force). H and W must be even for
    x264rgb.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if codec is None:
        codec = "x264rgb" if path.suffix.lower() == ".mp4" else "ffv1"
    if codec == "ffv1":
        name, pix_fmt, options = "ffv1", "bgr0", {}
    elif codec == "x264rgb":
        name, pix_fmt = "libx264rgb", "rgb24"
        options = {"qp": "0", "g": str(gop), "bf": "2"}
    else:
        raise ValueError(f"unknown codec {codec!r}; use 'ffv1' or 'x264rgb'")

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(name, rate=rate, options=options)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = pix_fmt
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
