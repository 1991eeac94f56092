"""Fixed-length snippets of a video and the mapping of snippet scores back to frames.

A snippet is ``length`` consecutive frames; snippet ``i`` starts at frame
``i * stride``. ``stride == length`` tiles the video (the usual 16-frame I3D
snippets), ``stride < length`` overlaps, ``stride > length`` leaves gaps.

Tail policy (``SnippetSpec.tail``):

* ``"drop"``: only full snippets; the last ``n_frames % stride``-ish frames
  that do not fill one are not fed to the model (their scores come from the
  last snippet, see :func:`expand_snippet_scores`).
* ``"pad"``: additionally one final partial snippet, if frames remain that no
  full snippet covers; its frames are padded to ``length`` by repeating its
  last real frame. A video shorter than ``length`` gives one padded snippet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vad.io.video import VideoReader

logger = logging.getLogger(__name__)

__all__ = ["SnippetSpec", "Snippet", "snippet_ranges", "iter_snippets", "expand_snippet_scores"]

_TAILS = ("drop", "pad")


@dataclass(frozen=True)
class SnippetSpec:
    """How a video is cut into snippets: ``length`` frames every ``stride`` frames."""

    length: int = 16
    stride: int = 16
    tail: str = "drop"  # "drop" | "pad"; see the module docstring

    def __post_init__(self) -> None:
        for name in ("length", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SnippetSpec.{name} must be an int, got {value!r}")
            if value <= 0:
                raise ValueError(f"SnippetSpec.{name} must be positive, got {value}")
        if self.tail not in _TAILS:
            raise ValueError(f"SnippetSpec.tail must be one of {_TAILS}, got {self.tail!r}")


@dataclass
class Snippet:
    """One snippet: real frames ``[start, stop)`` of the video, padded to the spec's length.

    ``frames`` has shape (length, H, W, 3), uint8 RGB; when ``stop - start <
    length`` the last real frame is repeated (tail="pad").
    """

    index: int
    start: int
    stop: int
    frames: np.ndarray  # (length, H, W, 3) uint8

    @property
    def n_real(self) -> int:
        """Number of real (not padded) frames."""
        return self.stop - self.start


def snippet_ranges(n_frames: int, spec: SnippetSpec) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of the real frames of each snippet of an ``n_frames`` video.

    >>> snippet_ranges(40, SnippetSpec(16, 16, "drop"))
    [(0, 16), (16, 32)]
    >>> snippet_ranges(40, SnippetSpec(16, 16, "pad"))
    [(0, 16), (16, 32), (32, 40)]
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    ranges: list[tuple[int, int]] = []
    start = 0
    while start + spec.length <= n_frames:
        ranges.append((start, start + spec.length))
        start += spec.stride
    covered = ranges[-1][1] if ranges else 0
    # One partial snippet, only if it covers frames no full snippet has (with
    # overlap, later partial starts would be inside the last full snippet).
    if spec.tail == "pad" and start < n_frames and covered < n_frames:
        ranges.append((start, n_frames))
    return ranges


def iter_snippets(
    reader: VideoReader,
    spec: SnippetSpec,
    *,
    start_snippet: int = 0,
    stop_snippet: int | None = None,
) -> Iterator[Snippet]:
    """Yield snippets ``start_snippet..stop_snippet-1`` of ``reader``'s video, in order.

    Frames are read sequentially and only once: with ``stride == length``
    each frame is decoded once; with overlap the shared frames are kept from the
    previous snippet instead of being read again; with gaps the reader decodes
    through them. ``stop_snippet`` past the end is clamped.
    """
    ranges = snippet_ranges(reader.info.n_frames, spec)
    if start_snippet < 0:
        raise ValueError(f"start_snippet must be >= 0, got {start_snippet}")
    stop = len(ranges) if stop_snippet is None else min(stop_snippet, len(ranges))
    prev: tuple[int, np.ndarray] | None = None  # (stop, real frames) of the previous snippet
    for index in range(start_snippet, stop):
        s0, s1 = ranges[index]
        if prev is not None and s0 < prev[0]:
            # Overlap: reuse frames [s0, prev_stop) and read only the new ones.
            prev_stop, prev_frames = prev
            kept = prev_frames[s0 - (prev_stop - prev_frames.shape[0]) :]
            real = np.concatenate([kept, reader.read(prev_stop, s1)], axis=0)
        else:
            real = reader.read(s0, s1)
        # With overlap, keep a private copy: the caller may modify the yielded frames.
        prev = (s1, real.copy()) if spec.stride < spec.length else (s1, real)
        yield Snippet(index=index, start=s0, stop=s1, frames=_pad(real, spec.length))


def _pad(frames: np.ndarray, length: int) -> np.ndarray:
    """Repeat the last frame so that ``frames`` has ``length`` frames."""
    n = frames.shape[0]
    if n == length:
        return frames
    if n == 0:
        raise ValueError("cannot pad an empty snippet")
    pad = np.repeat(frames[-1:], length - n, axis=0)
    return np.concatenate([frames, pad], axis=0)


def expand_snippet_scores(scores: np.ndarray, n_frames: int, spec: SnippetSpec) -> np.ndarray:
    """Per-frame scores (n_frames, ...) from per-snippet scores (S, ...).

    Snippet ``i`` covers frames ``[i*stride, min(i*stride + length, n_frames))``
    (the same ranges as :func:`snippet_ranges`; ``spec.tail`` does not matter
    here). A frame covered by several snippets (overlap) gets the mean of their
    scores; a frame covered by none (a gap, or the tail after the last
    snippet) gets the score of the nearest snippet starting before it. With
    ``stride == length`` this is ``np.repeat(scores, length)`` followed by the
    last score for the leftover frames.

    Fewer scores than snippets is allowed (the remaining frames take the last
    score); a score for a snippet starting at or after ``n_frames`` is a
    ``ValueError``, as are empty scores.
    """
    scores = np.asarray(scores)
    if scores.ndim == 0 or scores.shape[0] == 0:
        raise ValueError("scores is empty: need at least one snippet score")
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    n_snip = scores.shape[0]
    starts = np.arange(n_snip) * spec.stride
    if starts[-1] >= n_frames:
        max_snip = (n_frames - 1) // spec.stride + 1
        raise ValueError(
            f"{n_snip} snippet scores do not fit a {n_frames}-frame video "
            f"(at most {max_snip} snippets start inside it with stride {spec.stride})"
        )
    stops = np.minimum(starts + spec.length, n_frames)

    out_dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64
    total = np.zeros((n_frames, *scores.shape[1:]), dtype=np.float64)
    count = np.zeros(n_frames, dtype=np.int64)
    for i in range(n_snip):
        # A slice per snippet: O(S * length), exact for non-overlapping snippets.
        total[starts[i] : stops[i]] += scores[i]
        count[starts[i] : stops[i]] += 1

    covered = count > 0
    shape = (-1,) + (1,) * (scores.ndim - 1)
    out = np.where(covered.reshape(shape), total / np.maximum(count, 1).reshape(shape), 0.0)
    if not covered.all():
        # Nearest snippet starting at or before each uncovered frame.
        frames = np.nonzero(~covered)[0]
        owner = np.searchsorted(starts, frames, side="right") - 1
        out[frames] = scores[owner]
    return out.astype(out_dtype, copy=False)
