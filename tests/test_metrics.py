"""vad.eval metrics against scikit-learn (test-only dependency) and hand-computed cases."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")
from sklearn.metrics import (  # noqa: E402
    auc as sk_auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from vad.eval import (  # noqa: E402
    VideoScores,
    average_precision_step,
    average_precision_trapezoid,
    bootstrap_ci,
    evaluate,
    event_map,
    events_from_scores,
    expand_to_frames,
    intervals_from_labels,
    pr_curve_points,
    roc_auc,
    roc_curve_points,
)
from vad.eval.metrics import _PooledIndex, _pool  # noqa: E402

TOL = 1e-10
CLASSES = ("Abuse", "Fighting", "Shooting")


def make_videos(n: int = 30, seed: int = 0, decimals: int | None = 2, dtype=np.float64) -> list[VideoScores]:
    """Realistic test set: lengths 200-5000, every third video all-normal, 1-2 planted intervals."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n):
        length = int(rng.integers(200, 5001))
        labels = np.zeros(length, dtype=np.uint8)
        normal = i % 3 == 0
        if not normal:
            for _ in range(int(rng.integers(1, 3))):
                start = int(rng.integers(0, length - 50))
                labels[start : start + int(rng.integers(20, max(21, length // 3)))] = 1
        scores = np.clip(rng.normal(0.35, 0.2, length) + 0.3 * labels, 0.0, 1.0)
        if decimals is not None:
            scores = np.round(scores, decimals)  # many ties
        videos.append(
            VideoScores(f"vid{i:03d}", scores.astype(dtype), labels, None if normal else CLASSES[(i // 3) % len(CLASSES)])
        )
    return videos


def concat(videos):
    return np.concatenate([v.labels for v in videos]), np.concatenate([v.scores for v in videos])


def sk_trapezoid_ap(y, s):
    p, r, _ = precision_recall_curve(y, s)
    return sk_auc(r, p)


@pytest.fixture(scope="module")
def videos():
    return make_videos()


@pytest.fixture(scope="module")
def result(videos):
    return evaluate(videos, n_boot=200, seed=0)


# ---------------------------------------------------------------- frame metrics vs sklearn


@pytest.mark.parametrize("decimals", [2, 1, None])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_frame_metrics_equal_sklearn(decimals, dtype):
    vids = make_videos(12, seed=3, decimals=decimals, dtype=dtype)
    y, s = concat(vids)
    assert abs(roc_auc(y, s) - roc_auc_score(y, s)) < TOL
    assert abs(average_precision_step(y, s) - average_precision_score(y, s)) < TOL
    assert abs(average_precision_trapezoid(y, s) - sk_trapezoid_ap(y, s)) < TOL
    r = evaluate(vids, n_boot=0, tious=None)
    assert abs(r.auc - roc_auc_score(y, s)) < TOL
    assert abs(r.ap_step - average_precision_score(y, s)) < TOL
    assert abs(r.ap_trapezoid - sk_trapezoid_ap(y, s)) < TOL


def test_tiny_ties_and_extremes():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    s = np.array([0.5, 0.5, 0.5, 0.9, 0.1, 0.1, 0.0, 0.9])
    for f, g in [(roc_auc, roc_auc_score), (average_precision_step, average_precision_score),
                 (average_precision_trapezoid, sk_trapezoid_ap)]:
        assert abs(f(y, s) - g(y, s)) < TOL
    # one constant score: ROC is the diagonal, AP step = prevalence, trapezoid adds the (0, 1) point
    c = np.full(8, 0.3)
    assert roc_auc(y, c) == pytest.approx(0.5)
    assert average_precision_step(y, c) == pytest.approx(0.5)
    assert average_precision_trapezoid(y, c) == pytest.approx(0.75) == sk_trapezoid_ap(y, c)
    # all positive: AP defined (1.0) as in sklearn
    assert average_precision_step(np.ones(4), [0.1, 0.2, 0.2, 0.9]) == 1.0


def test_pooled_matches_sklearn(videos, result):
    y, s = concat(videos)
    assert result.n_frames == len(y) and result.n_anomalous_frames == int(y.sum())
    assert abs(result.auc - roc_auc_score(y, s)) < TOL
    assert abs(result.ap_step - average_precision_score(y, s)) < TOL
    assert abs(result.ap_trapezoid - sk_trapezoid_ap(y, s)) < TOL
    # the two AP definitions genuinely differ
    assert result.ap_step != result.ap_trapezoid


def test_anomalous_videos_only(videos, result):
    y, s = concat([v for v in videos if v.labels.any()])
    assert abs(result.auc_anomalous - roc_auc_score(y, s)) < TOL
    assert abs(result.ap_anomalous - average_precision_score(y, s)) < TOL
    assert abs(result.ap_trapezoid_anomalous - sk_trapezoid_ap(y, s)) < TOL


def test_per_class_pools_class_with_all_normals(videos, result):
    assert sorted(result.per_class) == sorted(CLASSES)
    for c, m in result.per_class.items():
        subset = [v for v in videos if (v.cls == c and v.labels.any()) or not v.labels.any()]
        y, s = concat(subset)
        assert abs(m.auc - roc_auc_score(y, s)) < TOL
        assert abs(m.ap_step - average_precision_score(y, s)) < TOL
        assert m.n_videos == sum(v.cls == c for v in videos)


def test_per_video(videos, result):
    d = result.to_dict()["per_video"]
    assert [p["video_id"] for p in d] == [v.video_id for v in videos]
    for v, p in zip(videos, d):
        assert p["n_frames"] == len(v.scores) and p["n_anomalous"] == int(v.labels.sum())
        assert p["mean_score"] == pytest.approx(v.scores.mean()) and p["max_score"] == v.scores.max()
        if 0 < v.labels.sum() < len(v.labels):
            assert abs(p["auc"] - roc_auc_score(v.labels, v.scores)) < TOL
            assert abs(p["ap_step"] - average_precision_score(v.labels, v.scores)) < TOL
        else:
            assert p["auc"] is None
            if not v.labels.any():
                assert p["ap_step"] is None


def test_far_by_hand(videos):
    normal = np.concatenate([v.scores for v in videos if not v.labels.any()])
    for thr in (0.3, 0.5, 0.55):
        r = evaluate(videos, threshold=thr, n_boot=0, tious=None)
        assert r.far == np.count_nonzero(normal >= thr) / len(normal)
        assert r.threshold == thr


def test_curve_points_equal_sklearn(videos):
    y, s = concat(videos[:8])
    fpr, tpr, thr = roc_curve_points(y, s, with_thresholds=True)
    sf, st, sth = roc_curve(y, s)
    np.testing.assert_allclose(fpr, sf, atol=1e-12)
    np.testing.assert_allclose(tpr, st, atol=1e-12)
    np.testing.assert_array_equal(thr, sth)
    rec, prec, pthr = pr_curve_points(y, s, with_thresholds=True)
    sp, sr, spt = precision_recall_curve(y, s)
    np.testing.assert_allclose(rec, sr, atol=1e-12)
    np.testing.assert_allclose(prec, sp, atol=1e-12)
    np.testing.assert_array_equal(pthr, spt)
    assert rec[-1] == 0.0 and prec[-1] == 1.0


def test_weighted_index_equals_concatenation_of_resample():
    vids = make_videos(15, seed=5)
    index = _PooledIndex(*_pool(vids), len(vids))
    rng = np.random.default_rng(1)
    for _ in range(5):
        draw = rng.integers(0, len(vids), len(vids))
        y, s = concat([vids[i] for i in draw])
        w = np.bincount(draw, minlength=len(vids)).astype(np.int64)
        auc, ap, ap_t = index.metrics(w)
        assert abs(auc - roc_auc_score(y, s)) < TOL
        assert abs(ap - average_precision_score(y, s)) < TOL
        assert abs(ap_t - sk_trapezoid_ap(y, s)) < TOL


# ---------------------------------------------------------------- robustness


def test_single_class_gives_nan_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vad.eval.metrics"):
        assert math.isnan(roc_auc(np.zeros(10), np.linspace(0, 1, 10)))
        assert math.isnan(average_precision_step(np.zeros(10), np.linspace(0, 1, 10)))
    assert "only one class" in caplog.text
    normal = [VideoScores(f"n{i}", np.random.default_rng(i).random(300), np.zeros(300)) for i in range(3)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vad.eval.metrics"):
        r = evaluate(normal, n_boot=20)
    assert math.isnan(r.auc) and math.isnan(r.ap_step) and math.isnan(r.auc_anomalous)
    assert caplog.records
    d = r.to_dict()
    assert d["auc"] is None and d["far"] is not None and d["ci"]["auc"]["n_valid"] == 0
    json.dumps(d, allow_nan=False)


def test_mismatched_lengths_name_the_video():
    with pytest.raises(ValueError, match="bad_video"):
        VideoScores("bad_video", np.zeros(10), np.zeros(9))
    v = VideoScores("late_change", np.zeros(10), np.zeros(10))
    v.scores = np.zeros(11)
    with pytest.raises(ValueError, match="late_change"):
        evaluate([v], n_boot=0)
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="binary"):
        VideoScores("v", np.zeros(3), np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="non-finite"):
        VideoScores("v", np.array([0.1, np.nan]), np.array([0, 1]))


def test_to_dict_stable_keys_and_json(result):
    d = result.to_dict()
    assert list(d) == [
        "auc", "ap_step", "ap_trapezoid", "auc_anomalous", "ap_anomalous", "ap_trapezoid_anomalous",
        "far", "threshold", "n_videos", "n_frames", "n_anomalous_frames", "n_anomalous_videos",
        "n_normal_videos", "per_class", "per_video", "ci", "event_map",
    ]
    json.dumps(d, allow_nan=False)
    assert set(d["per_class"]["Abuse"]) == {"auc", "ap_step", "n_videos"}
    assert set(d["per_video"][0]) == {
        "video_id", "cls", "n_frames", "n_anomalous", "auc", "ap_step", "mean_score", "max_score"
    }


def test_library_does_not_import_sklearn():
    code = "import sys, vad.eval; assert not any(m.startswith('sklearn') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_contains_estimate_and_is_deterministic(videos, result):
    ci = result.ci
    assert ci["n_boot"] == 200 and ci["confidence"] == 0.95 and ci["seed"] == 0
    for name in ("auc", "ap_step", "ap_trapezoid"):
        assert ci[name].low <= getattr(result, name) <= ci[name].high
        assert ci[name].low < ci[name].high
    again = bootstrap_ci(videos, n_boot=200, seed=0)
    other = bootstrap_ci(videos, n_boot=200, seed=1)
    for name in ("auc", "ap_step", "ap_trapezoid"):
        assert again[name] == ci[name]
        assert other[name] != ci[name]


def test_bootstrap_narrows_with_more_videos():
    small = bootstrap_ci(make_videos(15, seed=7), n_boot=200)
    large = bootstrap_ci(make_videos(150, seed=7), n_boot=200)
    for name in ("auc", "ap_step"):
        assert large[name].high - large[name].low < small[name].high - small[name].low


# ---------------------------------------------------------------- snippet -> frame


def test_expand_to_frames():
    e = expand_to_frames(np.arange(100.0), 100)
    assert e.level == "frame" and e.adjustment == "none" and np.array_equal(e.scores, np.arange(100.0))
    e = expand_to_frames([1.0, 2.0, 3.0], 48)
    assert e.level == "snippet" and e.adjustment == "none" and np.array_equal(e.scores, np.repeat([1.0, 2, 3], 16))
    e = expand_to_frames(np.arange(7.0), 100)  # 112 repeated -> cut 12
    assert (e.adjustment, e.n_adjusted, len(e.scores)) == ("truncated", 12, 100)
    assert np.array_equal(e.scores, np.repeat(np.arange(7.0), 16)[:100])
    e = expand_to_frames(np.arange(6.0), 100)  # 96 repeated -> pad 4 with the last score
    assert (e.adjustment, e.n_adjusted) == ("padded", 4)
    assert np.array_equal(e.scores, np.concatenate([np.repeat(np.arange(6.0), 16), [5.0] * 4]))
    assert expand_to_frames(np.arange(6.0), 112).n_adjusted == 16  # one whole snippet of slack
    with pytest.raises(ValueError, match="clip7"):
        expand_to_frames(np.arange(6.0), 113, video_id="clip7")
    with pytest.raises(ValueError):
        expand_to_frames(np.arange(3.0), 100)
    assert expand_to_frames(np.arange(2.0), 10, snippet_length=4).adjustment == "padded"


# ---------------------------------------------------------------- events


def test_intervals_and_events_from_scores():
    assert intervals_from_labels([1, 1, 0, 0, 1, 0, 1]) == [(0, 2), (4, 5), (6, 7)]
    assert intervals_from_labels(np.zeros(5)) == []
    s = np.array([0.9, 0.7, 0.1, 0.6, 0.2, 0.55, 0.51, 1.0, 0.5])
    ev = events_from_scores(s, 0.5)
    # strictly above the threshold, as vad score's events: the final 0.5 is not in the event
    assert [e[:2] for e in ev] == [(0, 2), (3, 4), (5, 8)]
    assert [e[2] for e in ev] == pytest.approx([0.8, 0.6, (0.55 + 0.51 + 1.0) / 3])
    assert events_from_scores(s, 0.5, min_len=2, reduce="max") == [(0, 2, 0.9), (5, 8, 1.0)]
    assert events_from_scores(s, 1.1) == []
    assert events_from_scores(np.full(4, 0.5), 0.5) == []


def test_event_map_perfect():
    gt = [[(10, 50), (100, 120)], [], [(0, 30)]]
    pred = [[(10, 50, 0.9), (100, 120, 0.8)], [], [(0, 30, 0.7)]]
    r = event_map(pred, gt)
    assert r["map"] == 1.0 and all(v == 1.0 for v in r["ap"].values())
    assert list(r["ap"]) == ["0.1", "0.2", "0.3", "0.4", "0.5"] and r["n_gt"] == 3 and r["n_pred"] == 3


def test_event_map_tiou_03_counts_up_to_03():
    r = event_map([[(0, 30, 0.5)]], [[(0, 100)]])  # tIoU = 30 / 100
    assert r["ap"] == {"0.1": 1.0, "0.2": 1.0, "0.3": 1.0, "0.4": 0.0, "0.5": 0.0}
    assert r["map"] == pytest.approx(0.6)


def test_event_map_false_positive_ranked_first():
    # one GT: FP (0.9) then TP (0.8): precision 0, 1/2 at recall 0, 1 -> AP = 0.5
    r = event_map([[(200, 300, 0.9), (0, 100, 0.8)]], [[(0, 100)]], tious=(0.5,))
    assert r["map"] == pytest.approx(0.5)
    # two GTs: TP 0.9, FP 0.8, TP 0.7 -> P = 1, 1/2, 2/3 at R = .5, .5, 1; envelope -> .5*1 + .5*2/3
    r = event_map([[(0, 100, 0.9), (500, 600, 0.8)], [(0, 50, 0.7)]], [[(0, 100)], [(0, 50)]], tious=(0.5,))
    assert r["map"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a duplicate detection of a matched GT is a false positive; a prediction in another video never matches
    r = event_map([[(0, 100, 0.9), (0, 100, 0.8)], [(0, 100, 0.95)]], [[(0, 100)], []], tious=(0.5,))
    assert r["map"] == pytest.approx(0.5)


def test_event_map_picks_highest_unmatched_tiou():
    # the best-ranked prediction overlaps GT a (tIoU .6) and b (tIoU .8): it takes b, leaving a for the next
    gt = [[(0, 100), (60, 160)]]
    pred = [[(40, 140, 0.9), (0, 90, 0.8)]]
    assert event_map(pred, gt, tious=(0.5,))["map"] == 1.0


def test_event_map_without_gt_is_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="vad.eval.metrics"):
        r = event_map([[(0, 10, 0.5)]], [[]])
    assert math.isnan(r["map"]) and "no ground-truth" in caplog.text


def test_evaluate_event_map_from_scores():
    labels = np.zeros(400, dtype=np.uint8)
    labels[100:200] = 1
    scores = np.where(labels == 1, 0.9, 0.1)
    r = evaluate([VideoScores("a", scores, labels, "Fighting"), VideoScores("n", np.full(300, 0.1), np.zeros(300))],
                 n_boot=0)
    assert r.event_map["map"] == 1.0 and r.far == 0.0 and r.auc == 1.0
