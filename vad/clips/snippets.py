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

from vad.io.source import FrameSource
from vad.io.video import VideoReader

logger = logging.getLogger(__name__)

__all__ = [
    "Snippet",
    "SnippetBuffer",
    "SnippetSpec",
    "expand_snippet_scores",
    "iter_snippets",
    "snippet_ranges",
    "snippets_from_source",
]

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

    Frames are read sequentially, once, in blocks of ``spec.length`` and cut by a
    :class:`SnippetBuffer` (the same builder a live stream uses): shared frames of overlapping
    snippets are kept, gaps are decoded through. ``stop_snippet`` past the end is clamped.
    """
    ranges = snippet_ranges(reader.info.n_frames, spec)
    if start_snippet < 0:
        raise ValueError(f"start_snippet must be >= 0, got {start_snippet}")
    stop = len(ranges) if stop_snippet is None else min(stop_snippet, len(ranges))
    if start_snippet >= stop:
        return
    first, last = ranges[start_snippet][0], ranges[stop - 1][1]
    buffer = SnippetBuffer(spec, first_snippet=start_snippet)
    for a in range(first, last, spec.length):
        yield from buffer.push(reader.read(a, min(a + spec.length, last)))
    yield from buffer.flush()


class SnippetBuffer:
    """Cuts snippets out of frames pushed in order, holding at most ``spec.length`` frames.

    Snippet ``i`` covers frames ``[i * stride, i * stride + length)`` counted from frame 0 of
    the source; ``first_snippet`` starts the count there (the first pushed frame is frame
    ``first_snippet * stride``), which is how a decode task that seeked into a file continues
    the file's numbering. ``push`` returns the snippets that the new frames complete;
    ``flush`` at the end of the source returns the padded partial snippet (``tail="pad"``).
    On a file this yields exactly the snippets of :func:`snippet_ranges`, frame for frame.
    """

    def __init__(self, spec: SnippetSpec, *, first_snippet: int = 0) -> None:
        if first_snippet < 0:
            raise ValueError(f"first_snippet must be >= 0, got {first_snippet}")
        self.spec = spec
        self._first_snippet = first_snippet
        self.reset()

    def reset(self, first_snippet: int | None = None) -> None:
        """Forget held frames (after a gap in a stream); numbering restarts at ``first_snippet``
        (default: where this buffer started)."""
        start = self._first_snippet if first_snippet is None else first_snippet
        self._next = start  # index of the next snippet to complete
        self._frame = start * self.spec.stride  # index of the next frame pushed
        self._ring: np.ndarray | None = None  # frame f lives at _ring[f % length]

    @property
    def next_frame(self) -> int:
        """Index of the next frame to push."""
        return self._frame

    @property
    def next_snippet(self) -> int:
        """Index of the next snippet to complete."""
        return self._next

    def _start(self, index: int) -> int:
        return index * self.spec.stride

    def push(self, frames: np.ndarray) -> list[Snippet]:
        """Add one frame (H, W, 3) or a block (n, H, W, 3); returns the snippets completed."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4:
            raise ValueError(f"frames must be (H, W, C) or (n, H, W, C), got shape {frames.shape}")
        length = self.spec.length
        if self._ring is None and frames.shape[0]:
            self._ring = np.empty((length, *frames.shape[1:]), dtype=frames.dtype)
        elif self._ring is not None and frames.shape[1:] != self._ring.shape[1:]:
            raise ValueError(f"frame shape changed from {self._ring.shape[1:]} to {frames.shape[1:]} "
                             "(reset the buffer after a resolution change)")
        done: list[Snippet] = []
        if self.spec.stride >= length:
            # Fast path: a block that holds whole snippets from a snippet's first frame on
            # (a file read snippet by snippet) yields views of itself, no copy into the ring.
            while len(frames) >= length and self._frame == self._start(self._next):
                s0 = self._frame
                done.append(Snippet(index=self._next, start=s0, stop=s0 + length, frames=frames[:length]))
                self._next += 1
                self._frame += length
                frames = frames[length:]
        for frame in frames:
            f = self._frame
            self._frame += 1
            if f < self._start(self._next):
                continue  # a gap between snippets (stride > length)
            self._ring[f % length] = frame
            s0 = self._start(self._next)
            if f == s0 + length - 1:
                order = [(s0 + k) % length for k in range(length)]
                done.append(Snippet(index=self._next, start=s0, stop=s0 + length, frames=self._ring[order]))
                self._next += 1
        return done

    def flush(self) -> list[Snippet]:
        """At the end of the source: the final partial snippet (padded by repeating its last
        frame) when ``tail="pad"`` and frames remain that no full snippet covers."""
        s0, end = self._start(self._next), self._frame
        covered = self._start(self._next - 1) + self.spec.length if self._next > 0 else 0
        if self.spec.tail != "pad" or self._ring is None or not (s0 < end and covered < end):
            return []
        length = self.spec.length
        real = self._ring[[f % length for f in range(s0, end)]]
        snippet = Snippet(index=self._next, start=s0, stop=end, frames=_pad(real, length))
        self._next += 1
        return [snippet]


def snippets_from_source(source: FrameSource, spec: SnippetSpec) -> Iterator[Snippet]:
    """All snippets of a frame source, in order (ends with the padded tail for ``tail="pad"``)."""
    buffer = SnippetBuffer(spec)
    blocks = getattr(source, "blocks", None)
    if blocks is not None:  # a file: push whole decoded blocks (no per-frame objects)
        for _, frames in blocks():
            yield from buffer.push(frames)
    else:
        for frame in source:
            yield from buffer.push(frame.image)
    yield from buffer.flush()


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
