"""Events from a frame score curve: thresholds, hysteresis, merging, minimum duration."""

import numpy as np
import pytest

from vad.events import detect_events, smooth


def curve(n, spans, value=2.0):
    s = np.zeros(n)
    for a, b in spans:
        s[a:b] = value
    return s


def test_single_event_fields():
    s = curve(100, [(20, 40)])
    s[30] = 3.0
    (ev,) = detect_events(s, fps=10, threshold=1.0)
    assert (ev.start_frame, ev.end_frame, ev.peak_frame) == (20, 39, 30)
    assert (ev.start_s, ev.end_s) == (2.0, 4.0)
    assert ev.peak_score == 3.0
    assert ev.mean_score == pytest.approx((19 * 2 + 3) / 20)


def test_merge_gap_and_min_duration():
    s = curve(200, [(10, 20), (25, 35), (100, 103)])
    assert len(detect_events(s, fps=10, threshold=1.0)) == 3
    merged = detect_events(s, fps=10, threshold=1.0, merge_gap_s=0.5, min_duration_s=1.0)
    assert [(e.start_frame, e.end_frame) for e in merged] == [(10, 34)]


def test_hysteresis_extends_event():
    s = np.r_[np.zeros(10), np.full(5, 0.8), np.full(5, 2.0), np.full(5, 0.8), np.zeros(10)]
    (plain,) = detect_events(s, fps=1, threshold=1.0)
    (hyst,) = detect_events(s, fps=1, threshold=1.0, low_threshold=0.5)
    assert (plain.start_frame, plain.end_frame) == (15, 19)
    assert (hyst.start_frame, hyst.end_frame) == (10, 24)
    # A bump above low but never above high is not an event.
    assert detect_events(np.full(10, 0.8), fps=1, threshold=1.0, low_threshold=0.5) == []


def test_event_at_the_end_and_errors():
    (ev,) = detect_events(curve(50, [(45, 50)]), fps=5, threshold=1.0)
    assert ev.end_frame == 49 and ev.end_s == 10.0
    with pytest.raises(ValueError):
        detect_events(np.zeros(5), fps=0, threshold=1)
    with pytest.raises(ValueError):
        detect_events(np.zeros(5), fps=1, threshold=1, low_threshold=2)


def test_smooth_keeps_length_and_mean():
    s = np.r_[np.zeros(5), 10.0, np.zeros(5)]
    out = smooth(s, 5)
    assert len(out) == len(s) and out[5] == pytest.approx(2.0) and out.sum() == pytest.approx(10.0)
