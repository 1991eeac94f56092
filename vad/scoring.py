"""Head -> frame scores -> events: the one scoring path, in batch and streaming form.

* :func:`score_video` scores a whole video's units (the archive path): the head's batch
  scores, each snippet's score spread over its frames (:func:`vad.clips.expand_snippet_scores`),
  events from the one :class:`~vad.events.EventTracker`.
* :class:`StreamScorer` does the same causally, frame block by frame block (the live path, and
  a file read as a stream): a :class:`~vad.clips.SnippetBuffer` cuts snippets, ``embed`` turns
  a snippet into the head's unit (features), the head's streaming scorer scores units as soon as
  its look-ahead allows, :class:`SnippetFrameScores` turns unit scores into frame scores, and
  the tracker turns those into event updates. On a file it gives the batch scores (to float
  rounding) and the batch events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from vad.clips import Snippet, SnippetBuffer, SnippetSpec, expand_snippet_scores, snippet_ranges
from vad.events import Event, EventRules, EventTracker, EventUpdate, detect_events_with, with_region
from vad.heads.base import Head, UnitTiming

__all__ = ["ScoredVideo", "SnippetFrameScores", "StreamScorer", "StreamStep", "score_video"]


@dataclass
class ScoredVideo:
    """A video's scores: per unit, per frame, its events, and the frames [0, reference_frames)
    that served as its own reference (None when the head was fitted elsewhere)."""

    unit_scores: np.ndarray
    frame_scores: np.ndarray
    events: list[Event]
    reference_frames: int | None = None


def score_video(head: Head, units: np.ndarray, *, n_frames: int, fps: float, spec: SnippetSpec,
                rules: EventRules, source_id: str = "") -> ScoredVideo:
    """Batch scoring of one video whose units (features (n_crops, S, D)) are complete."""
    result = head.score_video(units, UnitTiming(fps, spec.stride))
    frame_scores = expand_snippet_scores(result.scores, n_frames, spec)
    events = detect_events_with(rules, frame_scores, fps, source_id=source_id)
    ref_frames = None
    if result.reference_units:
        ref_frames = snippet_ranges(n_frames, spec)[result.reference_units - 1][1]
    return ScoredVideo(result.scores, frame_scores, events, ref_frames)


class SnippetFrameScores:
    """Snippet scores -> frame scores as they arrive, equal to :func:`expand_snippet_scores`.

    Once snippet ``k - 1`` is scored, every frame before snippet ``k``'s start is decided: a
    frame takes the mean of the snippets covering it, or, uncovered (a gap, the tail), the
    score of the last snippet starting at or before it.
    """

    def __init__(self, spec: SnippetSpec) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        keep = -(-self.spec.length // self.spec.stride) + 1  # snippets that can cover one frame
        self._recent: deque[tuple[int, float]] = deque(maxlen=keep)
        self._n_scored = 0
        self._emitted = 0

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    def push(self, unit_scores: np.ndarray) -> np.ndarray:
        parts = [np.zeros(0, np.float32)]
        for s in np.asarray(unit_scores, dtype=np.float32).reshape(-1):
            self._recent.append((self._n_scored, s))
            self._n_scored += 1
            # emit per snippet: the frames it decides only need the last few snippets
            parts.append(self._emit(self._n_scored * self.spec.stride))
        return np.concatenate(parts)

    def finish(self, n_frames: int | None = None) -> np.ndarray:
        """The remaining frames, up to ``n_frames`` (default: the end of the last snippet)."""
        if self._n_scored == 0:
            return np.zeros(0, np.float32)
        last_end = (self._n_scored - 1) * self.spec.stride + self.spec.length
        return self._emit(last_end if n_frames is None else n_frames)

    def _emit(self, upto: int) -> np.ndarray:
        length, stride = self.spec.length, self.spec.stride
        out = np.empty(max(0, upto - self._emitted), np.float32)
        for k, f in enumerate(range(self._emitted, upto)):
            covering = [s for j, s in self._recent if j * stride <= f < j * stride + length]
            if covering:
                total = 0.0
                for s in covering:  # float64 in snippet order, as the batch expansion sums
                    total += float(s)
                out[k] = total / len(covering)
            else:
                owner = min(f // stride, self._n_scored - 1)
                out[k] = next(s for j, s in self._recent if j == owner)
        self._emitted = max(self._emitted, upto)
        return out


@dataclass
class StreamStep:
    """What one push decided: frame scores from ``first_frame`` on, and event updates."""

    first_frame: int
    frame_scores: np.ndarray
    updates: list[EventUpdate] = field(default_factory=list)


class StreamScorer:
    """Frames in, frame scores and event updates out, causally (see the module docstring).

    ``embed(snippets) -> units`` turns snippets into the head's units: features
    (n_snippets, n_crops, dim) for a features head. A frames head (``head.input.kind ==
    "frames"``, ``embed=None``) takes every pushed frame as its unit and gives one score per
    frame (no snippets); when its scorer localises (``last_regions``), event updates carry the
    region of their peak frame.
    """

    def __init__(self, head: Head, spec: SnippetSpec | None, fps: float, rules: EventRules, *,
                 embed: Callable[[list[Snippet]], np.ndarray] | None = None, source_id: str = "",
                 n_units: int | None = None) -> None:
        if head.input.kind == "features" and embed is None:
            raise ValueError("a features head needs embed (snippets -> features)")
        if spec is None:  # frames heads take frames, not snippets: a one-frame "snippet"
            spec = SnippetSpec(1, 1)
        self.head, self.spec, self.fps, self.embed = head, spec, fps, embed
        self.source_id = source_id
        self.per_frame = head.input.kind == "frames"
        self._regions: deque[tuple[int, np.ndarray]] = deque(maxlen=4096)  # (frame, box), frames heads
        self._frames_seen = 0  # frames pushed to a frames head, gaps included
        self.buffer = SnippetBuffer(spec)
        self.scorer = head.stream(UnitTiming(fps, spec.stride), n_units)
        self.frames = SnippetFrameScores(spec)
        self.tracker = EventTracker(rules, fps, source_id=source_id)
        self._first_frame = 0  # absolute index of the buffer's frame 0
        self._walls: deque[float] | None = None  # wall times of pushed, undecided frames

    @property
    def frames_pushed(self) -> int:
        if self.per_frame:
            return self._frames_seen
        return self._first_frame + self.buffer.next_frame

    def _frame_step(self, frames: np.ndarray, final: bool = False, closing: bool = False) -> StreamStep:
        """A frames head: every frame is a unit, scored as it comes."""
        first = self._frames_seen
        parts = [np.zeros(0, np.float32)]
        for f in frames:
            parts.append(np.asarray(self.scorer.update(f), np.float32).reshape(-1))
            boxes = getattr(self.scorer, "last_regions", None)
            if boxes is not None and len(boxes):
                self._regions.append((self._frames_seen, boxes[-1]))
            self._frames_seen += 1
        if final or closing:
            parts.append(np.asarray(self.scorer.finish(), np.float32).reshape(-1))
        return self._tracked(first, np.concatenate(parts), final)

    def _tracked(self, first: int, scores: np.ndarray, final: bool) -> StreamStep:
        """Frame scores from ``first`` on -> event updates (with wall times when given)."""
        walls = None
        if self._walls is not None:
            walls = np.array([self._walls.popleft() for _ in range(len(scores))], dtype=np.float64)
        updates = self.tracker.update(scores, walls)
        if final:
            updates += self.tracker.finish()
        return StreamStep(first, scores, self._located(updates))

    def _located(self, updates: list[EventUpdate]) -> list[EventUpdate]:
        """Updates whose event gets the region its head gave its peak frame (frames heads)."""
        if not self._regions:
            return updates
        boxes = dict(self._regions)
        return [replace(u, event=with_region(u.event, boxes.get(u.event.peak_frame))) for u in updates]

    def _step(self, unit_scores: list[np.ndarray], final: bool, closing: bool = False) -> StreamStep:
        first = self._first_frame + self.frames.frames_emitted
        parts = [self.frames.push(s) for s in unit_scores]
        if final or closing:
            parts.append(self.frames.finish(self.buffer.next_frame))
        return self._tracked(first, np.concatenate(parts) if parts else np.zeros(0, np.float32), final)

    def _units(self, snippets: list[Snippet]) -> list[np.ndarray]:
        if not snippets:
            return []
        units = self.embed(snippets) if self.embed is not None else [s.frames for s in snippets]
        return [self.scorer.update(u) for u in units]

    def push(self, frames: np.ndarray, wall_times: np.ndarray | None = None) -> StreamStep:
        """Frames (n, H, W, 3) or one frame (H, W, 3), in order; ``wall_times`` (one per frame,
        epoch seconds) give events their wall-clock times; give them always or never."""
        if wall_times is not None:
            if self._walls is None:
                if self.frames_pushed:
                    raise ValueError("wall_times must be given from the first push on")
                self._walls = deque()
            self._walls.extend(np.atleast_1d(np.asarray(wall_times, dtype=np.float64)).tolist())
        if self.per_frame:
            frames = np.asarray(frames)
            return self._frame_step(frames[None] if frames.ndim == 3 else frames)
        return self._step(self._units(self.buffer.push(frames)), False)

    def finish(self) -> StreamStep:
        """End of the source: the tail snippet, the head's look-ahead, the open event."""
        if self.per_frame:
            return self._frame_step(np.zeros((0, 1, 1, 3), np.uint8), final=True)
        scores = self._units(self.buffer.flush())
        scores.append(self.scorer.finish())
        return self._step(scores, True)

    def reset(self) -> StreamStep:
        """A gap in the stream (a reconnect, dropped frames): what was pushed is scored as if
        the source ended there, the open event ends, and temporal state starts afresh (the
        snippet buffer, the head's window or self-reference, smoothing). Frame indices go on
        counting, so events of the next segment never reuse an id."""
        if self.per_frame:
            step = self._frame_step(np.zeros((0, 1, 1, 3), np.uint8), closing=True)
            step.updates += self._located(self.tracker.reset())
            self.scorer.reset()
            return step
        scores = self._units(self.buffer.flush())
        scores.append(self.scorer.finish())
        step = self._step(scores, False, closing=True)
        step.updates += self.tracker.reset()
        self._first_frame = self.frames_pushed
        self.buffer.reset()
        self.scorer.reset()
        self.frames.reset()
        return step
