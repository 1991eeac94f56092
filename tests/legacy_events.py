"""Today's batch implementation, kept to prove the tracker reproduces it.

A frozen copy of ``vad.events`` (``Event``, ``smooth``, ``detect_events``) and ``vad.utils.runs``
as they were before the incremental ``EventTracker`` replaced them. Do not edit: the tests compare
the new code against this file bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def runs(mask: "np.ndarray") -> list[tuple[int, int]]:
    """``(start, end_exclusive)`` of every run of non-zero values in a 1-D array."""
    import numpy as np

    edges = np.diff(np.concatenate(([0], np.asarray(mask).astype(bool).astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


@dataclass(frozen=True)
class Event:
    """An interval of frames whose score stayed above the threshold. ``end_frame`` is inclusive."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    peak_frame: int
    peak_score: float
    mean_score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average with edge replication; window <= 1 returns the input."""
    scores = np.asarray(scores, dtype=np.float64)
    if window <= 1 or len(scores) == 0:
        return scores
    pad_left = window // 2
    padded = np.pad(scores, (pad_left, window - 1 - pad_left), mode="edge")
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def detect_events(
    scores: np.ndarray,
    fps: float,
    threshold: float,
    *,
    low_threshold: float | None = None,
    min_duration_s: float = 0.0,
    merge_gap_s: float = 0.0,
    smoothing_s: float = 0.0,
) -> list[Event]:
    """Intervals where the (optionally smoothed) frame score exceeds ``threshold``.

    Hysteresis: an event starts where the score rises above ``threshold`` and extends in both
    directions while it stays above ``low_threshold`` (default: ``threshold``). Events separated
    by at most ``merge_gap_s`` merge; events shorter than ``min_duration_s`` are dropped (after
    merging, so a flickering anomaly counts as one event). Peak and mean use the raw scores.
    """
    raw = np.asarray(scores, dtype=np.float64)
    if raw.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {raw.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    low = threshold if low_threshold is None else low_threshold
    if low > threshold:
        raise ValueError(f"low_threshold {low} must not exceed threshold {threshold}")
    curve = smooth(raw, int(round(smoothing_s * fps)))
    intervals = [(a, b) for a, b in runs(curve > low) if (curve[a:b] > threshold).any()]
    merged: list[list[int]] = []
    gap = int(round(merge_gap_s * fps))
    for a, b in intervals:
        if merged and a - merged[-1][1] <= gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    min_frames = int(round(min_duration_s * fps))
    events = []
    for a, b in merged:
        if b - a < max(min_frames, 1):
            continue
        peak = a + int(np.argmax(raw[a:b]))
        events.append(
            Event(
                start_frame=a,
                end_frame=b - 1,
                start_s=a / fps,
                end_s=b / fps,
                peak_frame=peak,
                peak_score=float(raw[peak]),
                mean_score=float(raw[a:b].mean()),
            )
        )
    return events
