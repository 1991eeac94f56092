"""Frame score curve -> anomalous events (intervals).

Everything runs one incremental :class:`EventTracker` (``vad.events.tracker``, where the rules and
the smoothing modes are described): batch scoring and evaluation through :func:`detect_events` /
:func:`detect_events_with`, the live monitor by feeding it chunk by chunk.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vad.events.tracker import SMOOTHING_MODES, Event, EventRules, EventTracker, EventUpdate

__all__ = [
    "SMOOTHING_MODES",
    "Event",
    "EventRules",
    "EventTracker",
    "EventUpdate",
    "detect_events",
    "detect_events_with",
    "smooth",
    "with_region",
    "with_regions",
]


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
    smoothing: str = "centred",
    source_id: str = "",
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
    rules = EventRules(
        threshold=threshold,
        low_threshold=low_threshold,
        min_duration_s=min_duration_s,
        merge_gap_s=merge_gap_s,
        smoothing_s=smoothing_s,
        smoothing=smoothing,
    )
    return detect_events_with(rules, raw, fps, source_id=source_id)


def detect_events_with(rules: EventRules, scores: np.ndarray, fps: float, source_id: str = "") -> list[Event]:
    """The events of a whole curve: one :class:`EventTracker` over it, its ended events.

    With the whole curve at hand, each event's mean is re-taken as ``raw[a:b].mean()``: numpy's
    pairwise sum, so batch outputs stay bit-identical to the batch code this replaced (the
    tracker's running compensated sum agrees to about one ulp, not always to the last bit).
    """
    raw = np.asarray(scores, dtype=np.float64)
    if raw.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {raw.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    tracker = EventTracker(rules, fps, source_id=source_id)
    updates = tracker.update(raw)
    updates += tracker.finish()
    events = []
    for u in updates:
        if u.kind == "end":
            ev = u.event
            events.append(replace(ev, mean_score=float(raw[ev.start_frame : ev.end_frame + 1].mean())))
    return events


def with_region(event: Event, box: np.ndarray | None) -> Event:
    """``event`` with ``box`` (x0, y0, x1, y1, fractions of the frame) as its region; unchanged
    when there is no box or it is NaN (the head located nothing)."""
    if box is None or not np.all(np.isfinite(box)):
        return event
    return replace(event, region=tuple(float(v) for v in box))


def with_regions(events: list[Event], regions: np.ndarray) -> list[Event]:
    """Events with the region of their peak frame, from a head's per-frame ``regions``."""
    return [with_region(e, regions[e.peak_frame] if 0 <= e.peak_frame < len(regions) else None) for e in events]
