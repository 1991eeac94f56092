"""Frame- and event-level metrics, computed exactly as the published VAD protocols compute them.

Everything here is numpy only (scikit-learn is a test dependency, used to prove equality).

Frame level
-----------
* ``roc_auc`` equals ``sklearn.metrics.roc_auc_score``: the ROC is built from the *distinct*
  score values (tied scores form one step, which the trapezoid then crosses diagonally),
  starting at (0, 0); area by the trapezoid rule. UCF-Crime's frame AUC.
* ``average_precision_step`` equals ``sklearn.metrics.average_precision_score``:
  ``sum_n (R_n - R_{n-1}) * P_n`` over distinct thresholds (VadCLIP's XD-Violence AP).
* ``average_precision_trapezoid`` equals ``sklearn.metrics.auc(recall, precision)`` on the output
  of ``precision_recall_curve`` (XDVioDet / RTFM / UR-DMU's XD-Violence AP). That curve ends
  with an artificial point (recall 0, precision 1), so the trapezoid from the highest threshold's
  point to (0, 1) is part of the area; it is reproduced here. Older scikit-learn releases cut
  the curve at the first threshold reaching full recall; the dropped points all have recall 1,
  add zero area, so both definitions are unaffected by that difference.

Pooled evaluation
-----------------
``evaluate`` concatenates the videos' frame scores in the given order and computes one pooled
curve (the protocol; not a mean of per-video AUCs). Because a tie-grouped ROC/PR curve depends
only on how many positive and negative frames sit at each distinct score, every subset of videos
(anomalous-only, per-class, bootstrap resamples with repeated videos) is evaluated from one
global sort by weighting videos (see ``_PooledIndex``), which keeps 1000 bootstrap resamples of
a million frames within seconds.

Event level
-----------
``event_map`` is the ActivityNet detection AP: predictions ranked by score over all videos,
greedily matched to the unmatched ground-truth interval of the same video with the highest tIoU
(when >= the threshold), AP = area under the precision envelope (precision made monotonically
non-increasing from the right, then summed over recall changes; VOC/ActivityNet all-points
interpolation). Intervals are ``(start, end_exclusive)`` frame indices.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from vad.events import detect_events

logger = logging.getLogger(__name__)

DEFAULT_TIOUS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)

# One line per reported number, for reports and JSON readers.
METRIC_DEFINITIONS: dict[str, str] = {
    "auc": "frame-level ROC AUC over all frames pooled in list order (= sklearn roc_auc_score)",
    "ap_step": "frame-level AP, step-wise sum (R_n - R_n-1) P_n (= sklearn average_precision_score; VadCLIP)",
    "ap_trapezoid": "frame-level AP, trapezoid area under precision_recall_curve incl. its (0, 1) end point "
    "(= sklearn auc(recall, precision); XDVioDet/RTFM/UR-DMU)",
    "auc_anomalous": "pooled ROC AUC over videos with >= 1 anomalous frame only (GS-MoE's 'AUC_A')",
    "ap_anomalous": "step-wise AP over videos with >= 1 anomalous frame only",
    "ap_trapezoid_anomalous": "trapezoid AP over videos with >= 1 anomalous frame only",
    "far": "false-alarm rate: fraction of frames of all-normal videos with score >= threshold",
    "per_class": "per class: that class's anomalous videos + ALL normal videos pooled (usual class-wise AUC)",
    "ci": "percentile bootstrap over videos resampled with replacement, pooled metrics recomputed",
    "event_map": "ActivityNet-style detection AP per tIoU and their mean; events from thresholded scores",
}


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _as_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """1-D uint8 array of 0/1; raises on anything else (sklearn would silently relabel)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        bad = np.unique(arr[(arr != 0) & (arr != 1)])[:5]
        raise ValueError(f"{name} must be binary 0/1, found values {bad.tolist()}")
    return arr.astype(np.uint8)


def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """1-D finite float64 array (float64 keeps float32 ties and order exactly as they were)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


def _check_pair(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(labels)
    s = _as_scores(scores)
    if len(y) != len(s):
        raise ValueError(f"labels ({len(y)}) and scores ({len(s)}) differ in length")
    if len(y) == 0:
        raise ValueError("labels and scores are empty")
    return y, s


# --------------------------------------------------------------------------------------------
# curve counts and the three frame metrics
# --------------------------------------------------------------------------------------------


def _counts_at_thresholds(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (tp, fp) at each distinct score, highest first, plus those scores.

    Same construction as sklearn's ``confusion_matrix_at_thresholds``: stable descending sort,
    one threshold per distinct value (the last index of each tie block). Integer counts, so
    no rounding enters before the metric formulas.
    """
    order = np.argsort(scores, kind="stable")[::-1]
    s = scores[order]
    y = labels[order].astype(np.int64)
    last = np.flatnonzero(s[1:] != s[:-1])
    idx = np.concatenate((last, [len(s) - 1]))
    tp = np.cumsum(y)[idx]
    fp = idx + 1 - tp
    return tp, fp, s[idx]


def _auc_from_counts(tp: np.ndarray, fp: np.ndarray) -> float:
    n_pos, n_neg = tp[-1], fp[-1]
    if n_pos == 0 or n_neg == 0:
        return math.nan
    tpr = tp / n_pos
    fpr = fp / n_neg
    # trapezoid from the (0, 0) start point, like sklearn's roc_curve + auc
    dx = np.diff(fpr, prepend=0.0)
    y_prev = np.concatenate(([0.0], tpr[:-1]))
    return float(np.sum(dx * (tpr + y_prev)) / 2.0)


def _ap_from_counts(tp: np.ndarray, fp: np.ndarray) -> tuple[float, float]:
    """(step AP, trapezoid AP); NaN when there is no positive."""
    n_pos = tp[-1]
    if n_pos == 0:
        return math.nan, math.nan
    recall = tp / n_pos
    precision = tp / (tp + fp)
    dr = np.diff(recall, prepend=0.0)
    step = float(np.sum(dr * precision))
    # precision_recall_curve ends at (recall 0, precision 1): the first segment starts there
    p_prev = np.concatenate(([1.0], precision[:-1]))
    trap = float(np.sum(dr * (precision + p_prev)) / 2.0)
    return max(0.0, step), trap


def _warn_single_class(what: str, labels: np.ndarray) -> None:
    n_pos = int(labels.sum())
    logger.warning(
        "%s undefined: only one class present (%d positive, %d negative frames); returning NaN",
        what,
        n_pos,
        len(labels) - n_pos,
    )


def roc_auc(labels: Any, scores: Any) -> float:
    """Frame-level ROC AUC, equal to ``sklearn.metrics.roc_auc_score``.

    labels: (N,) 0/1; scores: (N,) finite floats, higher = more anomalous. Ties form one ROC
    step. Returns NaN (and logs a warning) when only one class is present.
    """
    y, s = _check_pair(labels, scores)
    tp, fp, _ = _counts_at_thresholds(y, s)
    if tp[-1] == 0 or fp[-1] == 0:
        _warn_single_class("ROC AUC", y)
        return math.nan
    return _auc_from_counts(tp, fp)


def average_precision_step(labels: Any, scores: Any) -> float:
    """Step-wise AP ``sum_n (R_n - R_{n-1}) P_n``, equal to ``sklearn.metrics.average_precision_score``.

    VadCLIP's XD-Violence definition. NaN with a warning when there is no positive frame
    (sklearn returns 0.0 there, with a warning); 1.0 when every frame is positive (as sklearn).
    """
    y, s = _check_pair(labels, scores)
    tp, fp, _ = _counts_at_thresholds(y, s)
    if tp[-1] == 0:
        _warn_single_class("average precision", y)
        return math.nan
    return _ap_from_counts(tp, fp)[0]


def average_precision_trapezoid(labels: Any, scores: Any) -> float:
    """Trapezoid AP, equal to ``sklearn.metrics.auc(recall, precision)`` of ``precision_recall_curve``.

    XDVioDet / RTFM / UR-DMU's XD-Violence definition, including the curve's final
    (recall 0, precision 1) point. NaN with a warning when there is no positive frame (sklearn
    gives 0.5 there: recall is set to 1 everywhere).
    """
    y, s = _check_pair(labels, scores)
    tp, fp, _ = _counts_at_thresholds(y, s)
    if tp[-1] == 0:
        _warn_single_class("average precision", y)
        return math.nan
    return _ap_from_counts(tp, fp)[1]


def roc_curve_points(
    labels: Any, scores: Any, *, drop_intermediate: bool = True, with_thresholds: bool = False
) -> tuple[np.ndarray, ...]:
    """ROC points for plotting: ``(fpr, tpr)`` (or ``(fpr, tpr, thresholds)``), each (K,).

    Identical to ``sklearn.metrics.roc_curve``: starts at (0, 0) with threshold +inf, and with
    ``drop_intermediate`` collinear points (no corner in fp or tp) are removed. Needs both classes.
    """
    y, s = _check_pair(labels, scores)
    tp, fp, thr = _counts_at_thresholds(y, s)
    if tp[-1] == 0 or fp[-1] == 0:
        raise ValueError("ROC curve needs both positive and negative labels")
    if drop_intermediate and len(tp) > 2:
        corner = np.logical_or(np.diff(fp, 2) != 0, np.diff(tp, 2) != 0)
        keep = np.concatenate(([True], corner, [True]))
        tp, fp, thr = tp[keep], fp[keep], thr[keep]
    fpr = np.concatenate(([0.0], fp / fp[-1]))
    tpr = np.concatenate(([0.0], tp / tp[-1]))
    if with_thresholds:
        return fpr, tpr, np.concatenate(([np.inf], thr))
    return fpr, tpr


def pr_curve_points(labels: Any, scores: Any, *, with_thresholds: bool = False) -> tuple[np.ndarray, ...]:
    """Precision-recall points for plotting: ``(recall, precision)`` (or with thresholds).

    Identical to ``sklearn.metrics.precision_recall_curve`` (order reversed: recall decreasing
    from 1, ending with the extra point recall 0, precision 1, which has no threshold).
    Needs at least one positive.
    """
    y, s = _check_pair(labels, scores)
    tp, fp, thr = _counts_at_thresholds(y, s)
    if tp[-1] == 0:
        raise ValueError("PR curve needs at least one positive label")
    precision = np.concatenate(((tp / (tp + fp))[::-1], [1.0]))
    recall = np.concatenate(((tp / tp[-1])[::-1], [0.0]))
    if with_thresholds:
        return recall, precision, thr[::-1].copy()
    return recall, precision


# --------------------------------------------------------------------------------------------
# snippet -> frame
# --------------------------------------------------------------------------------------------


@dataclass
class FrameExpansion:
    """Result of ``expand_to_frames``.

    scores: (n_frames,) float64 frame scores.
    level: "frame" when the input already had one score per frame, "snippet" when repeated.
    adjustment: "none", "truncated" (repeated scores longer than the video: tail cut) or
        "padded" (shorter: the last score repeated), with ``n_adjusted`` frames cut or added.
    """

    scores: np.ndarray
    level: Literal["frame", "snippet"]
    adjustment: Literal["none", "truncated", "padded"]
    n_adjusted: int


def expand_to_frames(
    scores: Any,
    n_frames: int,
    snippet_length: int = 16,
    *,
    tolerance: int | None = None,
    video_id: str | None = None,
) -> FrameExpansion:
    """Snippet scores (S,) -> frame scores (n_frames,) by repeating each ``snippet_length`` times.

    If ``S == n_frames`` the scores are taken as frame-level already. Otherwise, if
    ``|S * snippet_length - n_frames| <= tolerance`` (default ``snippet_length``: covers the
    ``drop`` tail policy, which leaves up to 15 frames unscored, and ``pad``, which scores up to
    15 frames that do not exist, plus one whole snippet of slack) the repeated scores are
    truncated or padded with the last score. Anything else is a mismatch: ValueError.
    """
    s = _as_scores(scores)
    where = f" for video {video_id!r}" if video_id is not None else ""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}{where}")
    if len(s) == n_frames:
        return FrameExpansion(s.copy(), "frame", "none", 0)
    tol = snippet_length if tolerance is None else tolerance
    expanded_len = len(s) * snippet_length
    if len(s) == 0 or abs(expanded_len - n_frames) > tol:
        raise ValueError(
            f"{len(s)} scores fit neither {n_frames} frames nor {n_frames} / {snippet_length} snippets{where} "
            f"({len(s)} x {snippet_length} = {expanded_len}, tolerance {tol})"
        )
    frames = np.repeat(s, snippet_length)
    if expanded_len > n_frames:
        logger.debug("truncated %d repeated frame scores%s", expanded_len - n_frames, where)
        return FrameExpansion(frames[:n_frames], "snippet", "truncated", expanded_len - n_frames)
    if expanded_len < n_frames:
        logger.debug("padded %d frame scores with the last score%s", n_frames - expanded_len, where)
        pad = np.full(n_frames - expanded_len, s[-1])
        return FrameExpansion(np.concatenate((frames, pad)), "snippet", "padded", n_frames - expanded_len)
    return FrameExpansion(frames, "snippet", "none", 0)


# --------------------------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and exclusive ends of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def intervals_from_labels(labels: Any) -> list[tuple[int, int]]:
    """Runs of anomalous frames as ``(start, end_exclusive)`` frame indices."""
    y = _as_labels(labels)
    starts, ends = _runs(y.astype(bool))
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def events_from_scores(
    frame_scores: Any,
    threshold: float,
    min_len: int = 1,
    *,
    reduce: Literal["mean", "max"] = "mean",
) -> list[tuple[int, int, float]]:
    """Predicted events ``(start, end_exclusive, score)`` of a frame score curve: the events of
    :class:`vad.events.EventTracker` (frames with score above ``threshold``, runs of at least
    ``min_len`` frames, no merge or smoothing), scored by their ``mean`` (default: an event's
    confidence reflects its whole extent, so a long weak run does not outrank a short strong
    one merely by containing one spike) or ``max`` frame score. One event definition serves
    ``vad score``, the monitor and this metric."""
    s = _as_scores(frame_scores, "frame_scores")
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    # fps 1: durations in frames
    events = detect_events(s, 1.0, float(threshold), min_duration_s=float(max(1, int(min_len))))
    return [(e.start_frame, e.end_frame + 1, e.mean_score if reduce == "mean" else e.peak_score) for e in events]


def _tiou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P, G) temporal IoU between (P, 2) and (G, 2) [start, end_exclusive) intervals."""
    inter = np.clip(
        np.minimum(pred[:, None, 1], gt[None, :, 1]) - np.maximum(pred[:, None, 0], gt[None, :, 0]), 0, None
    )
    union = (pred[:, 1] - pred[:, 0])[:, None] + (gt[:, 1] - gt[:, 0])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _interpolated_ap(tp: np.ndarray, n_gt: int) -> float:
    """ActivityNet/VOC all-points AP from a ranked tp (0/1) vector."""
    if len(tp) == 0:
        return 0.0
    tp_c = np.cumsum(tp)
    fp_c = np.cumsum(1 - tp)
    recall = tp_c / n_gt
    precision = tp_c / (tp_c + fp_c)
    mprec = np.concatenate(([0.0], precision, [0.0]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    # envelope: precision at recall r = best precision at any recall >= r
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def event_map(
    pred_events: Sequence[Sequence[tuple[int, int, float]]],
    gt_intervals: Sequence[Sequence[tuple[int, int]]],
    tious: Sequence[float] = DEFAULT_TIOUS,
) -> dict[str, Any]:
    """Detection AP per temporal-IoU threshold and their mean (ActivityNet protocol).

    pred_events[v]: video v's predictions ``(start, end_exclusive, score)``; gt_intervals[v]:
    its ground truth ``(start, end_exclusive)``; both lists aligned by video. Predictions of all
    videos are ranked by score (stable: ties keep video order, then within-video order); each
    takes the unmatched ground truth of its own video with the highest tIoU if that is >= the
    threshold, else it is a false positive. Returns ``{"map", "ap": {"0.1": ...}, "tious",
    "n_gt", "n_pred"}``; AP is NaN (with a warning) when there is no ground-truth interval.
    """
    if len(pred_events) != len(gt_intervals):
        raise ValueError(f"pred_events ({len(pred_events)} videos) and gt_intervals ({len(gt_intervals)}) differ")
    tious = [float(t) for t in tious]
    preds = [np.asarray(evs, dtype=np.float64).reshape(-1, 3) for evs in pred_events]
    gts = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in gt_intervals]
    for v, (p, g) in enumerate(zip(preds, gts)):
        if np.any(p[:, 1] <= p[:, 0]) or np.any(g[:, 1] <= g[:, 0]):
            raise ValueError(f"empty or reversed interval in video index {v}")
    n_gt = int(sum(len(g) for g in gts))
    n_pred = int(sum(len(p) for p in preds))
    out: dict[str, Any] = {"map": math.nan, "ap": {}, "tious": tious, "n_gt": n_gt, "n_pred": n_pred}
    if n_gt == 0:
        logger.warning("event mAP undefined: no ground-truth intervals; returning NaN")
        out["ap"] = {f"{t:g}": math.nan for t in tious}
        return out
    offsets = np.concatenate(([0], np.cumsum([len(p) for p in preds])))
    all_scores = np.concatenate([p[:, 2] for p in preds]) if n_pred else np.zeros(0)
    order = np.argsort(-all_scores, kind="stable")
    rank = np.empty(n_pred, dtype=np.int64)
    rank[order] = np.arange(n_pred)
    # only predictions overlapping some ground truth at tIoU >= the smallest threshold can ever
    # match; all others are false positives at every threshold (keeps noisy curves fast)
    t_min = min(tious) if tious else 1.0
    cand: list[tuple[int, int, np.ndarray]] = []  # (rank, video, tIoU row)
    for v, (p, g) in enumerate(zip(preds, gts)):
        if len(p) == 0 or len(g) == 0:
            continue
        ious = _tiou(p[:, :2], g)
        for i in np.flatnonzero(ious.max(axis=1) >= t_min):
            cand.append((int(rank[offsets[v] + i]), v, ious[i]))
    cand.sort(key=lambda c: c[0])
    aps = []
    for t in tious:
        matched = [np.zeros(len(g), dtype=bool) for g in gts]
        tp = np.zeros(n_pred, dtype=np.float64)
        for r, v, row in cand:
            m = matched[v]
            masked = np.where(m, -1.0, row)
            j = int(masked.argmax())
            if masked[j] >= t:
                m[j] = True
                tp[r] = 1.0
        ap = _interpolated_ap(tp, n_gt)
        out["ap"][f"{t:g}"] = ap
        aps.append(ap)
    out["map"] = float(np.mean(aps)) if aps else math.nan
    return out


# --------------------------------------------------------------------------------------------
# pooled evaluation over videos
# --------------------------------------------------------------------------------------------


@dataclass
class VideoScores:
    """One test video's frame-level scores and ground truth.

    scores: (T,) float, higher = more anomalous; labels: (T,) uint8 0/1 (1 = anomalous frame);
    cls: anomaly class name (None or anything for normal videos: a video is *normal* iff it has
    no anomalous frame).
    """

    video_id: str
    scores: np.ndarray
    labels: np.ndarray
    cls: str | None = None

    def __post_init__(self) -> None:
        self.scores = _as_scores(self.scores, f"scores of video {self.video_id!r}")
        self.labels = _as_labels(self.labels, f"labels of video {self.video_id!r}")
        if len(self.scores) != len(self.labels):
            raise ValueError(
                f"video {self.video_id!r}: {len(self.scores)} scores but {len(self.labels)} labels"
            )

    @property
    def n_anomalous(self) -> int:
        return int(self.labels.sum())


@dataclass
class ClassMetrics:
    """Class-wise metrics: that class's anomalous videos pooled with all normal videos."""

    auc: float
    ap_step: float
    n_videos: int  # videos of this class (the normal videos pooled with them are not counted)


@dataclass
class VideoMetrics:
    """One video's own metrics (auc / ap_step NaN when the video has a single class)."""

    video_id: str
    cls: str | None
    n_frames: int
    n_anomalous: int
    auc: float
    ap_step: float
    mean_score: float
    max_score: float


@dataclass
class ConfidenceInterval:
    """Percentile bootstrap interval; ``n_valid`` resamples were defined (had both classes)."""

    low: float
    high: float
    std: float
    n_valid: int


@dataclass
class EvalResult:
    """Pooled benchmark metrics; see ``METRIC_DEFINITIONS`` for each key's exact meaning.

    NaN marks an undefined metric (e.g. AUC without normal frames); ``to_dict`` writes it as None.
    """

    auc: float
    ap_step: float
    ap_trapezoid: float
    auc_anomalous: float
    ap_anomalous: float
    ap_trapezoid_anomalous: float
    far: float
    threshold: float
    n_videos: int
    n_frames: int
    n_anomalous_frames: int
    n_anomalous_videos: int
    n_normal_videos: int
    per_class: dict[str, ClassMetrics] = field(default_factory=dict)
    per_video: list[VideoMetrics] = field(default_factory=list)
    ci: dict[str, Any] | None = None  # {"n_boot", "confidence", "seed", "method", metric: CI}
    event_map: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with stable top-level keys (NaN -> None)."""
        ci: dict[str, Any] | None = None
        if self.ci is not None:
            ci = {k: (v.__dict__.copy() if isinstance(v, ConfidenceInterval) else v) for k, v in self.ci.items()}
        d = {
            "auc": self.auc,
            "ap_step": self.ap_step,
            "ap_trapezoid": self.ap_trapezoid,
            "auc_anomalous": self.auc_anomalous,
            "ap_anomalous": self.ap_anomalous,
            "ap_trapezoid_anomalous": self.ap_trapezoid_anomalous,
            "far": self.far,
            "threshold": self.threshold,
            "n_videos": self.n_videos,
            "n_frames": self.n_frames,
            "n_anomalous_frames": self.n_anomalous_frames,
            "n_anomalous_videos": self.n_anomalous_videos,
            "n_normal_videos": self.n_normal_videos,
            "per_class": {c: m.__dict__.copy() for c, m in self.per_class.items()},
            "per_video": [m.__dict__.copy() for m in self.per_video],
            "ci": ci,
            "event_map": self.event_map,
        }
        return _jsonable(d)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    return x


class _PooledIndex:
    """All frames sorted once; any weighting of videos gives the pooled metrics without re-sorting.

    A tie-grouped ROC/PR curve depends only on the positive and negative counts at each distinct
    score. Frames are reduced to (distinct-score group, video) pairs with those counts. For a
    video weight vector w (V,) -- 0/1 for a subset, multiplicities for a bootstrap resample --
    the weighted counts equal those of concatenating the chosen videos (a video drawn twice
    counts its frames twice), so the metrics equal sklearn's on that concatenation.

    Only groups holding positive frames move recall, so the three metrics are sums over those
    groups of terms in the cumulative (tp, fp) just before and at the group; fp needs one
    cumulative sum over negative pairs per weighting, tp one over positive pairs. Groups that
    end up empty under w contribute nothing, so no curve points need filtering.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray, video: np.ndarray, n_videos: int) -> None:
        order = np.argsort(scores, kind="stable")[::-1]
        s = scores[order]
        group = np.zeros(len(s), dtype=np.int64)
        np.cumsum(s[1:] != s[:-1], out=group[1:])  # 0 = highest score
        key = group * n_videos + video[order]
        uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        pos = np.bincount(inv, weights=labels[order], minlength=len(uniq)).astype(np.int64)
        neg = cnt.astype(np.int64) - pos
        pair_video = (uniq % n_videos).astype(np.intp)
        pair_group = uniq // n_videos
        has_pos, has_neg = pos > 0, neg > 0
        self.pos_video, self.pos_cnt = pair_video[has_pos], pos[has_pos]
        self.neg_video, self.neg_cnt = pair_video[has_neg], neg[has_neg]
        pos_group = pair_group[has_pos]
        neg_group = pair_group[has_neg]
        # positive groups, as index ranges into the positive / negative pair lists
        first = np.concatenate(([True], pos_group[1:] != pos_group[:-1])) if len(pos_group) else np.zeros(0, bool)
        self.pos_start = np.flatnonzero(first)
        self.pos_stop = np.concatenate((self.pos_start[1:], [len(pos_group)])).astype(np.intp)
        g = pos_group[self.pos_start]
        self.neg_before = np.searchsorted(neg_group, g, side="left")
        self.neg_upto = np.searchsorted(neg_group, g, side="right")
        self.n_videos = n_videos

    def metrics(self, w: np.ndarray) -> tuple[float, float, float]:
        """(auc, ap_step, ap_trapezoid) of the pooled frames of the weighted videos (int64 w)."""
        cp = np.zeros(len(self.pos_cnt) + 1, dtype=np.int64)
        np.cumsum(self.pos_cnt * w[self.pos_video], out=cp[1:])
        cn = np.zeros(len(self.neg_cnt) + 1, dtype=np.int64)
        np.cumsum(self.neg_cnt * w[self.neg_video], out=cn[1:])
        n_pos, n_neg = int(cp[-1]), int(cn[-1])
        if n_pos == 0:
            return math.nan, math.nan, math.nan
        tp_before, tp_at = cp[self.pos_start], cp[self.pos_stop]
        fp_before, fp_at = cn[self.neg_before], cn[self.neg_upto]
        d_tp = tp_at - tp_before  # positives in each group (0 if its videos are not drawn)
        # ROC trapezoid over a tie group = its positives times (the negatives ranked below + half
        # of the tied ones) = d_tp * (2N - fp_before - fp_at) / 2; exact in integers
        auc = float(np.sum(d_tp * (2 * n_neg - fp_before - fp_at))) / (2.0 * n_pos * n_neg) if n_neg > 0 else math.nan
        tot_at = tp_at + fp_at
        tot_before = tp_before + fp_before
        with np.errstate(divide="ignore", invalid="ignore"):
            p_at = np.where(tot_at > 0, tp_at / tot_at, 0.0)
            # precision of the previous curve point; the curve starts at precision 1
            p_before = np.where(tot_before > 0, tp_before / tot_before, 1.0)
        ap_step = float(np.sum(d_tp * p_at)) / n_pos
        ap_trap = float(np.sum(d_tp * (p_at + p_before))) / (2.0 * n_pos)
        return auc, max(0.0, ap_step), ap_trap


def _pool(videos: Sequence[VideoScores]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate in list order; re-validate (fields may have been reassigned after init)."""
    if len(videos) == 0:
        raise ValueError("no videos to evaluate")
    for v in videos:
        if len(v.scores) != len(v.labels):
            raise ValueError(f"video {v.video_id!r}: {len(v.scores)} scores but {len(v.labels)} labels")
    scores = np.concatenate([_as_scores(v.scores, f"scores of video {v.video_id!r}") for v in videos])
    labels = np.concatenate([_as_labels(v.labels, f"labels of video {v.video_id!r}") for v in videos])
    lengths = np.array([len(v.scores) for v in videos])
    video = np.repeat(np.arange(len(videos), dtype=np.int64), lengths)
    return scores, labels, video


def _bootstrap(
    index: _PooledIndex, n_boot: int, confidence: float, seed: int
) -> dict[str, Any]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    V = index.n_videos
    vals = np.full((n_boot, 3), np.nan)
    t0 = time.perf_counter()
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, V, size=V), minlength=V).astype(np.int64)
        vals[b] = index.metrics(w)
    seconds = time.perf_counter() - t0
    lo_q, hi_q = 50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)
    out: dict[str, Any] = {
        "n_boot": n_boot,
        "confidence": confidence,
        "seed": seed,
        "method": "percentile; videos resampled with replacement; pooled metrics recomputed",
    }
    for j, name in enumerate(("auc", "ap_step", "ap_trapezoid")):
        col = vals[:, j][np.isfinite(vals[:, j])]
        if len(col) == 0:
            out[name] = ConfidenceInterval(math.nan, math.nan, math.nan, 0)
            continue
        if len(col) < n_boot:
            logger.warning("bootstrap %s: %d of %d resamples undefined (one class only)", name, n_boot - len(col), n_boot)
        lo, hi = np.percentile(col, [lo_q, hi_q])
        out[name] = ConfidenceInterval(float(lo), float(hi), float(np.std(col, ddof=1)) if len(col) > 1 else 0.0, len(col))
    logger.info("bootstrap: %d resamples of %d videos in %.2f s", n_boot, V, seconds)
    return out


def bootstrap_ci(
    videos: Sequence[VideoScores], *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Percentile bootstrap CIs of the pooled auc / ap_step / ap_trapezoid, resampling videos.

    Each resample draws len(videos) videos with replacement (seeded ``np.random.default_rng``)
    and recomputes the pooled metrics exactly (a repeated video counts its frames twice).
    Returns ``{"n_boot", "confidence", "seed", "method", "auc": ConfidenceInterval, ...}``
    (also for "ap_step" and "ap_trapezoid"). Deterministic for a given seed (no timing inside).
    """
    scores, labels, video = _pool(videos)
    return _bootstrap(_PooledIndex(scores, labels, video, len(videos)), n_boot, confidence, seed)


def _video_metrics(v: VideoScores) -> VideoMetrics:
    tp, fp, _ = _counts_at_thresholds(v.labels, v.scores) if len(v.scores) else (np.zeros(1), np.zeros(1), None)
    auc = _auc_from_counts(tp, fp)
    ap = _ap_from_counts(tp, fp)[0]
    return VideoMetrics(
        video_id=v.video_id,
        cls=v.cls,
        n_frames=len(v.scores),
        n_anomalous=v.n_anomalous,
        auc=auc,
        ap_step=ap,
        mean_score=float(v.scores.mean()) if len(v.scores) else math.nan,
        max_score=float(v.scores.max()) if len(v.scores) else math.nan,
    )


def false_alarm_rate(videos: Sequence[VideoScores], threshold: float = 0.5) -> float:
    """Fraction of the frames of all-normal videos whose score is >= ``threshold`` (NaN if none)."""
    normal = [v.scores for v in videos if v.n_anomalous == 0]
    n = sum(len(s) for s in normal)
    if n == 0:
        logger.warning("false-alarm rate undefined: no normal video; returning NaN")
        return math.nan
    return float(sum(int(np.count_nonzero(s >= threshold)) for s in normal) / n)


def evaluate(
    videos: Sequence[VideoScores],
    *,
    threshold: float = 0.5,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    tious: Sequence[float] | None = DEFAULT_TIOUS,
    event_threshold: float | None = None,
    event_min_len: int = 1,
    event_score: Literal["mean", "max"] = "mean",
    pred_events: Sequence[Sequence[tuple[int, int, float]]] | None = None,
) -> EvalResult:
    """Evaluate frame-level scores of a test set the way UCF-Crime / XD-Violence papers do.

    videos: frame-level scores and labels per video, pooled in the given order into one curve.
    threshold: score threshold of the false-alarm rate (and of event extraction unless
        ``event_threshold`` is given).
    n_boot: bootstrap resamples for ``ci`` (0 disables it). confidence, seed: interval level, RNG.
    tious: tIoU thresholds of the event mAP (None skips it); predictions are ``pred_events``
        (per video ``(start, end_exclusive, score)``, e.g. the events a run wrote) or else
        :func:`events_from_scores` at the event threshold, ``event_min_len``, ``event_score``.

    Subsets: *anomalous* videos have >= 1 anomalous frame (GS-MoE reports AUC on these only);
    *normal* videos have none (``far`` and the normal side of ``per_class``). ``per_class[c]``
    pools class c's anomalous videos with ALL normal videos, the usual class-wise AUC.
    """
    scores, labels, video = _pool(videos)
    V = len(videos)
    n_anom_v = np.array([v.n_anomalous for v in videos])
    is_anom = n_anom_v > 0
    index = _PooledIndex(scores, labels, video, V)

    auc, ap_step, ap_trap = index.metrics(np.ones(V, dtype=np.int64))
    if not math.isfinite(auc):
        _warn_single_class("pooled ROC AUC", labels)
    if is_anom.any():
        auc_a, ap_a, ap_trap_a = index.metrics(is_anom.astype(np.int64))
        if not math.isfinite(auc_a):
            logger.warning("AUC on anomalous videos undefined: their frames are all anomalous")
    else:
        logger.warning("no anomalous video: anomalous-only metrics are NaN")
        auc_a = ap_a = ap_trap_a = math.nan

    per_class: dict[str, ClassMetrics] = {}
    classes = sorted({v.cls for v in videos if v.n_anomalous > 0 and v.cls is not None})
    if any(v.n_anomalous > 0 and v.cls is None for v in videos):
        logger.warning("anomalous videos without a class are left out of per_class")
    for c in classes:
        members = np.array([v.n_anomalous > 0 and v.cls == c for v in videos])
        w = (members | ~is_anom).astype(np.int64)
        c_auc, c_ap, _ = index.metrics(w)
        per_class[c] = ClassMetrics(auc=c_auc, ap_step=c_ap, n_videos=int(members.sum()))

    per_video = [_video_metrics(v) for v in videos]

    ev: dict[str, Any] | None = None
    if tious is not None:
        thr = threshold if event_threshold is None else event_threshold
        if pred_events is not None:
            if len(pred_events) != len(videos):
                raise ValueError(f"pred_events has {len(pred_events)} videos, scores {len(videos)}")
            preds = [list(p) for p in pred_events]
        else:
            preds = [events_from_scores(v.scores, thr, event_min_len, reduce=event_score) for v in videos]
        gts = [intervals_from_labels(v.labels) for v in videos]
        ev = event_map(preds, gts, tious)
        ev.update(threshold=float(thr), min_len=int(event_min_len), event_score=event_score)

    ci = _bootstrap(index, n_boot, confidence, seed) if n_boot > 0 else None

    return EvalResult(
        auc=auc,
        ap_step=ap_step,
        ap_trapezoid=ap_trap,
        auc_anomalous=auc_a,
        ap_anomalous=ap_a,
        ap_trapezoid_anomalous=ap_trap_a,
        far=false_alarm_rate(videos, threshold),
        threshold=float(threshold),
        n_videos=V,
        n_frames=int(len(scores)),
        n_anomalous_frames=int(labels.sum()),
        n_anomalous_videos=int(is_anom.sum()),
        n_normal_videos=int((~is_anom).sum()),
        per_class=per_class,
        per_video=per_video,
        ci=ci,
        event_map=ev,
    )
