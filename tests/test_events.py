"""Events from a frame score curve: thresholds, hysteresis, merging, minimum duration, and the
incremental tracker that batch scoring, evaluation and the live monitor share."""

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from tests import legacy_events
from vad.events import (
    Event,
    EventRules,
    EventTracker,
    EventUpdate,
    detect_events,
    detect_events_with,
    smooth,
)

LEGACY_FIELDS = ("start_frame", "end_frame", "start_s", "end_s", "peak_frame", "peak_score", "mean_score")


def curve(n, spans, value=2.0):
    s = np.zeros(n)
    for a, b in spans:
        s[a:b] = value
    return s


def fields_of(ev):
    return tuple(getattr(ev, k) for k in LEGACY_FIELDS)


def run_tracker(rules, fps, scores, chunks=None, wall_times=None, source_id="cam"):
    """All updates of one tracker fed ``scores`` in pieces of the sizes ``chunks`` yields."""
    tracker = EventTracker(rules, fps, source_id=source_id)
    ups, i = [], 0
    sizes = chunks if chunks is not None else iter([len(scores)])
    while i < len(scores):
        k = next(sizes)
        wt = None if wall_times is None else wall_times[i : i + k]
        ups += tracker.update(scores[i : i + k], wt)
        i += k
    ups += tracker.finish()
    return ups


def ended(ups):
    return [u.event for u in ups if u.kind == "end"]


# ---------------------------------------------------------------- the rules, on hand-made curves


def test_single_event_fields():
    s = curve(100, [(20, 40)])
    s[30] = 3.0
    (ev,) = detect_events(s, fps=10, threshold=1.0)
    assert (ev.start_frame, ev.end_frame, ev.peak_frame) == (20, 39, 30)
    assert (ev.start_s, ev.end_s) == (2.0, 4.0)
    assert ev.peak_score == 3.0
    assert ev.mean_score == pytest.approx((19 * 2 + 3) / 20)
    assert (ev.event_id, ev.source_id, ev.start_wall, ev.end_wall) == (":20", "", None, None)
    assert detect_events(s, fps=10, threshold=1.0, source_id="v1")[0].event_id == "v1:20"


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
    with pytest.raises(ValueError, match="1-D"):
        detect_events(np.zeros((2, 3)), fps=1, threshold=1)
    assert detect_events(np.zeros(0), fps=1, threshold=1) == []


def test_smooth_keeps_length_and_mean():
    s = np.r_[np.zeros(5), 10.0, np.zeros(5)]
    out = smooth(s, 5)
    assert len(out) == len(s) and out[5] == pytest.approx(2.0) and out.sum() == pytest.approx(10.0)
    np.testing.assert_array_equal(smooth(s, 7), legacy_events.smooth(s, 7))


def test_peak_is_first_maximum_and_nan_wins_like_argmax():
    s = np.array([0, 2, 3, 3, 2, 0, 2, np.nan, 5, 2, 0.0])
    evs = detect_events(s, fps=1, threshold=1.0)
    old = legacy_events.detect_events(s, fps=1, threshold=1.0)
    assert [(e.start_frame, e.end_frame, e.peak_frame) for e in evs] == [(1, 4, 2), (6, 6, 6), (8, 9, 8)]
    assert [(e.start_frame, e.end_frame, e.peak_frame) for e in old] == [(1, 4, 2), (6, 6, 6), (8, 9, 8)]
    # NaN is below every threshold but, inside a merged event, it is the peak as for np.argmax.
    (merged,) = detect_events(s[:10], fps=1, threshold=1.0, merge_gap_s=1)
    (old,) = legacy_events.detect_events(s[:10], fps=1, threshold=1.0, merge_gap_s=1)
    assert merged.peak_frame == old.peak_frame == 7 and math.isnan(merged.peak_score) and math.isnan(merged.mean_score)


# ---------------------------------------------------------------- exact equality with the old batch code


def random_curve(rng, i):
    """A mix of shapes around threshold 1.0 / low 0.5, some sitting exactly on those values."""
    n = int(rng.choice([1, 2, 5, 17, 60, 150, 400, 1200], p=[0.03, 0.03, 0.06, 0.1, 0.22, 0.26, 0.22, 0.08]))
    kind = i % 6
    if kind == 0:  # smooth noise
        k = int(rng.integers(1, 25))
        s = 1.6 * np.convolve(rng.normal(size=n + k), np.ones(k) / np.sqrt(k), "valid")[:n]
    elif kind == 1:  # sparse spikes on a low floor
        s = 0.2 * rng.random(n) + (rng.random(n) < 0.05) * rng.uniform(0.5, 4, n)
    elif kind == 2:  # plateaus exactly at the thresholds
        s = np.repeat(rng.choice([0.0, 0.5, 1.0, 1.5, 2.0], size=n), rng.integers(1, 12))[:n]
    elif kind == 3:  # white noise
        s = rng.normal(0.6, 0.6, size=n)
    elif kind == 4:  # flicker around threshold
        s = np.where(rng.random(n) < 0.5, 1.0, np.nextafter(1.0, 2.0)) * rng.choice([0.5, 1.0], size=n)
    else:  # long calm stretches, occasional bursts
        s = np.zeros(n)
        for _ in range(int(rng.integers(0, 6))):
            a = int(rng.integers(0, n))
            s[a : a + int(rng.integers(1, 40))] = rng.uniform(0.6, 3)
    return np.asarray(s, dtype=np.float64)


GRID = list(
    itertools.product(
        (None, 0.5),  # low threshold
        (0.0, 0.5, 1.0),  # min duration
        (0.0, 0.3, 1.0),  # merge gap
        (0.0, 0.3, 1.0),  # smoothing
    )
)


def test_centred_reproduces_legacy_exactly():
    rng = np.random.default_rng(20240601)
    n_events = 0
    for i in range(320):
        s = random_curve(rng, i)
        fps = (10, 25, 30)[i % 3]
        for low, md, mg, sm in GRID:
            kw = dict(low_threshold=low, min_duration_s=md, merge_gap_s=mg, smoothing_s=sm)
            old = [fields_of(e) for e in legacy_events.detect_events(s, fps, 1.0, **kw)]
            new = detect_events(s, fps, 1.0, **kw)
            assert [fields_of(e) for e in new] == old, (i, fps, kw)
            n_events += len(old)
    assert n_events > 10_000  # the grid exercised plenty of events


def test_tracker_itself_matches_legacy_peak_exactly_and_mean_to_an_ulp():
    rng = np.random.default_rng(7)
    for i in range(60):
        s = random_curve(rng, i)
        fps = (10, 25, 30)[i % 3]
        for low, md, mg, sm in GRID[::5]:
            rules = EventRules(1.0, low, md, mg, sm)
            kw = dict(low_threshold=low, min_duration_s=md, merge_gap_s=mg, smoothing_s=sm)
            old = legacy_events.detect_events(s, fps, 1.0, **kw)
            evs = ended(run_tracker(rules, fps, s))
            assert [fields_of(e)[:-1] for e in evs] == [fields_of(e)[:-1] for e in old]
            for e, o in zip(evs, old):
                assert e.mean_score == pytest.approx(o.mean_score, rel=1e-13, abs=1e-15)


def test_detect_events_with_rules_and_config():
    class Cfg:  # shaped like vad.config.EventConfig (no smoothing attribute)
        threshold, low_threshold, min_duration_s, merge_gap_s, smoothing_s = 1.0, 0.5, 0.5, 0.3, 0.3

    rules = EventRules.from_config(Cfg)
    assert rules == EventRules(1.0, 0.5, 0.5, 0.3, 0.3, "centred")
    s = random_curve(np.random.default_rng(3), 0)
    kw = dict(low_threshold=0.5, min_duration_s=0.5, merge_gap_s=0.3, smoothing_s=0.3)
    assert detect_events_with(rules, s, 25, source_id="x") == detect_events(s, 25, 1.0, source_id="x", **kw)
    Cfg.smoothing = "ema"
    assert EventRules.from_config(Cfg).smoothing == "ema"


# ---------------------------------------------------------------- streaming


def chunkings(rng):
    return {
        "one": None,
        "1": itertools.repeat(1),
        "7": itertools.repeat(7),
        "random": (int(k) for k in rng.choice([0, 1, 2, 3, 5, 13, 40, 200], size=100_000)),
    }


@pytest.mark.parametrize("mode", ["centred", "trailing", "ema"])
def test_chunking_changes_nothing(mode):
    rng = np.random.default_rng({"centred": 1, "trailing": 2, "ema": 3}[mode])
    settings = [
        (None, 0.0, 0.0, 0.3),
        (0.5, 0.5, 0.3, 0.3),
        (0.5, 1.0, 1.0, 1.0),
        (None, 0.0, 1.0, 0.0),
        (0.5, 0.5, 0.3, 0.0),
    ]
    for i in range(36):
        s = random_curve(rng, i)
        fps = (10, 25, 30)[i % 3]
        for low, md, mg, sm in settings:
            rules = EventRules(1.0, low, md, mg, sm, smoothing=mode)
            reference = None
            for name, chunks in chunkings(rng).items():
                ups = run_tracker(rules, fps, s, chunks)
                # new/end are tied to frames, not to call boundaries (update is: at most one per call)
                lifecycle = [(u.kind, u.event) for u in ups if u.kind != "update"]
                if reference is None:
                    reference = lifecycle
                    if mode == "centred":
                        kw = dict(low_threshold=low, min_duration_s=md, merge_gap_s=mg, smoothing_s=sm)
                        batch = detect_events(s, fps, 1.0, **kw)
                        assert [fields_of(e)[:-1] for e in ended(ups)] == [fields_of(e)[:-1] for e in batch]
                assert lifecycle == reference, (name, i, rules)
                check_lifecycle(ups, rules.in_frames(fps)[1])


def check_lifecycle(ups, min_frames):
    """new before end, once each; ids unique; updates only grow an open event with a higher peak."""
    open_ev, ids = None, set()
    for u in ups:
        e = u.event
        assert e.event_id == f"{e.source_id}:{e.start_frame}"
        if u.kind == "new":
            assert open_ev is None and e.event_id not in ids
            assert e.n_frames >= min_frames
            ids.add(e.event_id)
            open_ev = e
        else:
            assert open_ev is not None and e.event_id == open_ev.event_id
            assert e.start_frame == open_ev.start_frame and e.end_frame >= open_ev.end_frame
            if u.kind == "update":
                assert e.end_frame > open_ev.end_frame and e.peak_score > open_ev.peak_score
                open_ev = e
            else:
                open_ev = None
    assert open_ev is None


def test_end_is_reported_as_soon_as_no_merge_can_happen():
    rules = EventRules(1.0, low_threshold=0.5, merge_gap_s=0.5)  # gap = 5 frames at 10 fps
    s = curve(60, [(10, 20)])
    s[32:36] = 0.8  # a run above low that never qualifies
    tracker = EventTracker(rules, fps=10)
    kinds = {f: [u.kind for u in tracker.update(s[f : f + 1])] for f in range(len(s))}
    assert kinds[10] == ["new"]
    # A run starting at frame 25 = exclusive end 20 + gap 5 could still merge: the end is known
    # once frame 25 turns out below low.
    assert [f for f, k in kinds.items() if "end" in k] == [25]
    # ... but a run that starts inside the gap keeps the event pending until it ends or qualifies.
    s[22:30] = 0.8
    tracker = EventTracker(rules, fps=10)
    kinds = {f: [u.kind for u in tracker.update(s[f : f + 1])] for f in range(len(s))}
    assert [f for f, k in kinds.items() if "end" in k] == [30]
    s[29] = 2.0  # now it qualifies late and merges, its frames and the gap included
    ups = run_tracker(rules, 10, s, itertools.repeat(1))
    assert [(e.start_frame, e.end_frame) for e in ended(ups)] == [(10, 29)]
    assert ended(ups)[0].mean_score == pytest.approx(s[10:30].mean())


def test_min_duration_new_only_when_reached_and_short_events_never_reported():
    rules = EventRules(1.0, min_duration_s=1.0, merge_gap_s=0.3)  # 10 frames, gap 3
    s = curve(80, [(5, 9), (20, 26), (28, 32)])
    ups = run_tracker(rules, 10, s, itertools.repeat(1))
    assert [(u.kind, u.event.start_frame, u.event.end_frame) for u in ups] == [("new", 20, 29), ("end", 20, 31)]
    # The "new" arrives with the frame that makes the event long enough.
    tracker = EventTracker(rules, 10)
    assert [u.kind for u in tracker.update(s[:29])] == []
    assert [u.kind for u in tracker.update(s[29:30])] == ["new"]


def test_update_only_when_grown_with_a_higher_peak_once_per_call():
    s = np.r_[0, 2, 2, 3, 3, 4, 4, 4, 1, 5, 0, 0.0]
    tracker = EventTracker(EventRules(0.5), fps=1)
    assert [u.kind for u in tracker.update(s[:2])] == ["new"]
    assert tracker.update(s[2:3]) == []  # grew, same peak
    ups = tracker.update(s[3:8])  # grew twice with higher peaks: one update, the latest state
    assert [u.kind for u in ups] == ["update"] and (ups[0].event.end_frame, ups[0].event.peak_frame) == (7, 5)
    assert [u.kind for u in tracker.update(s[8:9])] == []
    # Grew with a higher peak but also ended in this call: the "end" alone carries the final state.
    assert [(u.kind, u.event.peak_frame, u.event.end_frame) for u in tracker.update(s[9:])] == [("end", 9, 9)]
    assert tracker.update(np.zeros(0)) == []


def test_reset_ends_the_event_and_starts_a_fresh_curve():
    rules = EventRules(1.0, merge_gap_s=1.0, smoothing_s=0.5)  # w = 5 at 10 fps, latency 2
    a = curve(40, [(30, 40)])
    b = np.r_[np.full(15, 3.0), np.zeros(25)]
    tracker = EventTracker(rules, fps=10, source_id="cam")
    assert tracker.latency_frames == 2
    ups = tracker.update(a)
    assert tracker.frames_seen == 40
    tail = tracker.reset()
    assert [u.kind for u in ups + tail] == ["new", "end"]
    (ev_a,) = detect_events(a, 10, 1.0, merge_gap_s=1.0, smoothing_s=0.5)
    assert fields_of(tail[0].event)[:-1] == fields_of(ev_a)[:-1]  # right edge replicated, as at finish
    assert tracker.reset() == []
    ups = tracker.update(b) + tracker.finish()
    (ev_b,) = detect_events(b, 10, 1.0, merge_gap_s=1.0, smoothing_s=0.5)
    (got,) = ended(ups)
    # Numbering continues; the smoothing does not see the first curve (left edge = b[0]), and the
    # gap does not merge across the reset.
    a0, b1 = ev_b.start_frame + 40, ev_b.end_frame + 40
    assert (got.start_frame, got.end_frame, got.peak_frame) == (a0, b1, ev_b.peak_frame + 40)
    assert (got.start_s, got.end_s, got.event_id) == (a0 / 10, (b1 + 1) / 10, f"cam:{a0}")
    assert tracker.frames_seen == 80
    with pytest.raises(RuntimeError):
        tracker.update([1.0])
    assert tracker.finish() == []
    tracker.reset()
    assert tracker.update([0.0]) == [] and tracker.frames_seen == 81


def test_wall_times():
    fps, t0 = 25, 1_700_000_000.0
    rng = np.random.default_rng(11)
    s = random_curve(rng, 0)
    while len(s) < 300:
        s = random_curve(rng, 0)
    walls = t0 + np.arange(len(s)) / fps + rng.uniform(0, 0.01, len(s))  # jittery clock
    rules = EventRules(1.0, 0.5, 0.2, 0.3, 0.4)
    ups = run_tracker(rules, fps, s, (int(k) for k in rng.integers(0, 9, 10_000)), wall_times=walls)
    assert any(u.kind == "end" for u in ups)
    for u in ups:
        assert (u.event.start_wall, u.event.end_wall) == (walls[u.event.start_frame], walls[u.event.end_frame])
        assert {"start_wall", "end_wall"} <= set(u.event.to_dict())
    for u in run_tracker(rules, fps, s):
        assert u.event.start_wall is None and "start_wall" not in u.event.to_dict()
    with pytest.raises(ValueError, match="wall_times"):
        EventTracker(rules, fps).update([1.0, 2.0], [t0])


def test_trailing_and_ema_are_later_than_centred_by_the_documented_amount():
    fps, sm = 10, 1.0  # w = 10
    w = 10
    step_up, step_down = 100, 300
    s = np.r_[np.zeros(step_up), np.full(step_down - step_up, 1.0), np.zeros(200)]
    thr, low = 0.55, 0.3  # q = 0.55 going up, 0.3 coming down

    def one(mode):
        (ev,) = detect_events(s, fps, thr, low_threshold=low, smoothing_s=sm, smoothing=mode)
        return ev

    centred, trailing, ema = one("centred"), one("trailing"), one("ema")
    lag = w - 1 - w // 2
    assert EventTracker(EventRules(thr, smoothing_s=sm), fps).latency_frames == lag == 4
    assert (trailing.start_frame, trailing.end_frame) == (centred.start_frame + lag, centred.end_frame + lag)
    alpha = 2 / (w + 1)
    # With hysteresis the event starts where the curve rose above low (the run's start).
    k_up = math.floor(math.log(1 - low) / math.log(1 - alpha))
    k_down = math.floor(math.log(low) / math.log(1 - alpha))
    assert (ema.start_frame, ema.end_frame + 1) == (step_up + k_up, step_down + k_down)
    assert ema.start_frame > centred.start_frame and ema.end_frame > centred.end_frame
    # The centred curve straddles the step: its event starts before it is half-way and ends after.
    assert centred.start_frame <= step_up + 1 and centred.end_frame >= step_down - 5
    # Trailing/ema need no look-ahead.
    for mode in ("trailing", "ema"):
        assert EventTracker(EventRules(thr, smoothing_s=sm, smoothing=mode), fps).latency_frames == 0


def test_short_spike_is_attenuated_by_smoothing():
    s = np.r_[np.zeros(50), np.full(2, 4.0), np.zeros(50)]
    assert len(detect_events(s, 10, 1.0)) == 1
    for mode in ("centred", "trailing"):  # peak 4 * 2/10 = 0.8
        assert detect_events(s, 10, 1.0, smoothing_s=1.0, smoothing=mode) == []
    assert len(detect_events(s, 10, 1.0, smoothing_s=1.0, smoothing="ema")) == 1  # 4*(1-(9/11)**2) = 1.32
    assert detect_events(s, 10, 1.5, smoothing_s=1.0, smoothing="ema") == []


# ---------------------------------------------------------------- validation, serialisation


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(threshold=1.0, low_threshold=2.0), "low_threshold"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(threshold="1"), "threshold"),
        (dict(threshold=1.0, min_duration_s=-1), "min_duration_s"),
        (dict(threshold=1.0, merge_gap_s=-0.1), "merge_gap_s"),
        (dict(threshold=1.0, smoothing_s=float("inf")), "smoothing_s"),
        (dict(threshold=1.0, smoothing="gaussian"), "smoothing"),
    ],
)
def test_rules_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EventRules(**kwargs)


def test_tracker_validation():
    rules = EventRules(1.0)
    for fps in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            EventTracker(rules, fps)
    with pytest.raises(TypeError):
        EventTracker({"threshold": 1.0}, 10)
    with pytest.raises(ValueError, match="1-D"):
        EventTracker(rules, 10).update(np.zeros((3, 1)))
    assert EventRules(1.0, smoothing_s=0.3).in_frames(30) == (9, 1, 0)


def test_to_dict_from_dict_round_trip():
    (ev,) = detect_events(curve(30, [(5, 12)]), fps=10, threshold=1.0, source_id="cam7")
    d = ev.to_dict()
    assert list(d) == ["event_id", *LEGACY_FIELDS]
    assert d["event_id"] == "cam7:5" and "source_id" not in d
    assert Event.from_dict(json.loads(json.dumps(d)), "cam7") == ev
    full = replace(
        ev,
        start_wall=1.5e9,
        end_wall=1.5e9 + 0.7,
        snapshot="snap/cam7_5.jpg",
        clip="clips/cam7_5.mp4",
        clip_info={"clip_mode": "reencoded"},
        explanation="Fast motion in the centre region.",
        evidence={"top": ["fight"], "score": 0.9},
        explanation_error="offline backend: timed out",
    )
    d = full.to_dict()
    assert list(d)[8:] == ["start_wall", "end_wall", "snapshot", "clip", "clip_info", "explanation", "evidence",
                           "explanation_error"]
    back = Event.from_dict(json.loads(json.dumps({**d, "video_id": "cam7"})), source_id="cam7")
    assert back == full and back.to_dict() == d
    hash(full)  # explanation is left out of the hash
    # Without an event_id the deterministic one is derived.
    legacy_dict = legacy_events.detect_events(curve(30, [(5, 12)]), fps=10, threshold=1.0)[0].to_dict()
    assert Event.from_dict(legacy_dict, "v").event_id == "v:5"
    # Annotations of the writers (an event log's kind, a source_id key) do not leak in.
    assert Event.from_dict({**d, "video_id": "x", "update": "new", "source_id": "y"}, "cam7") == full
    with pytest.raises(ValueError, match="peak_frame"):
        Event.from_dict({k: v for k, v in d.items() if k != "peak_frame"})
    assert isinstance(EventUpdate("end", ev).event, Event)
