"""``vad evaluate``: per-video scores + ground truth -> metrics.json, curves.json, report.md, ROC/PR and
video plots (layout: :mod:`vad.eval.output`).

Scores come from a ``vad score`` run directory (read through :class:`vad.rundir.RunDir`) or a folder of
per-video ``.npy``/``.csv`` files (frame-level, or snippet-level when about 16x shorter than the
ground truth). Ground truth is a folder of ``<id>.npy`` (``vad gt build``; its manifest fixes the
video order) or is built on the fly from a dataset's annotation file.

Alignment is explicit: scores are expanded (snippet-level) and then truncated or padded with the
last score to the ground-truth length; every video where that changed anything is listed in
``metrics.json["alignment"]`` and the report. Videos present on one side only are listed too.

Event mAP ranks predicted events: for a run, exactly the events ``vad score`` wrote
(``events.jsonl``, made by :class:`vad.events.EventTracker` with the run's event settings);
for a folder of scores, the same tracker at ``--threshold`` (no merge, no minimum duration).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vad.data.lists import class_from_name, guess_dataset
from vad.eval import VideoScores, evaluate, expand_to_frames, pr_curve_points, roc_curve_points
from vad.eval.metrics import METRIC_DEFINITIONS, EvalResult
from vad.eval.output import EvalDir
from vad.events import Event
from vad.fsutil import write_json_atomic, write_text_atomic
from vad.rundir import RunDir, read_scores_csv
from vad.viz import plot_curve, plot_scores

logger = logging.getLogger(__name__)


class EvaluateError(RuntimeError):
    """The evaluation cannot run (no scores, no ground truth, nothing in common)."""


@dataclass
class ScoreSource:
    """Per-video score arrays plus what the source says about frame rates."""

    scores: dict[str, np.ndarray]
    fps: dict[str, float] = field(default_factory=dict)
    kind: str = "folder"
    events: dict[str, list[Event]] | None = None  # a run's events, by video (None: not a run)


def _read_score_npy(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False).astype(np.float64)
    if arr.ndim == 2:  # (snippets, crops): average over crops, the published recipe
        arr = arr.mean(axis=1)
    if arr.ndim != 1:
        raise ValueError(f"{path}: scores must be 1-D (or snippets x crops), got shape {arr.shape}")
    return arr


def load_scores(path: str | Path) -> ScoreSource:
    """A ``vad score`` run directory or a folder of ``<id>.npy`` / ``<id>.csv`` score files."""
    path = Path(path)
    if not path.is_dir():
        raise EvaluateError(f"scores: {path} is not a directory")
    if RunDir.is_run(path):
        run = RunDir(path)
        scores, fps = {}, {}
        for v in run.ok_videos():
            if run.scores_path(v["video_id"]).is_file():
                scores[v["video_id"]] = run.read_scores(v["video_id"])
                fps[v["video_id"]] = float(v["fps"])
        events = run.read_events()
        return ScoreSource(scores, fps, kind="vad-score-run", events={k: events.get(k, []) for k in scores})
    scores = {}
    for f in sorted(path.iterdir()):
        if f.suffix == ".npy":
            scores[f.stem] = _read_score_npy(f)
        elif f.suffix == ".csv":
            scores[f.stem] = read_scores_csv(f)
    return ScoreSource(scores)


def load_gt_folder(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    from vad.data.ground_truth import load_ground_truth

    path = Path(path)
    if not path.is_dir():
        raise EvaluateError(f"ground truth: {path} is not a directory")
    order, gt = load_ground_truth(path)
    if not order:
        raise EvaluateError(f"ground truth: no <video_id>.npy files in {path}")
    return order, gt


def build_gt_from_annotations(
    dataset: str, annotations: str | Path, scores: ScoreSource, out: Path,
    convention: str | None, tail: str | None,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Ground truth from an annotation file; frame counts from the file's N column when it has
    one, else from the frame-level score lengths (a ``vad score`` run scores every frame)."""
    from vad.data.annotations import load_annotations
    from vad.data.ground_truth import build_ground_truth

    ann = load_annotations(dataset, annotations)
    counts_file = None
    if not all(a.n_frames for a in ann.videos.values()):
        if scores.kind != "vad-score-run":
            raise EvaluateError(
                f"{annotations} has no frame counts: build ground truth with `vad gt build ... "
                "--frame-counts/--videos/--features` and pass that folder to --gt"
            )
        counts_file = out / "frame_counts.json"
        write_json_atomic(counts_file, {k: int(len(v)) for k, v in scores.scores.items()})
    build_ground_truth(dataset, Path(annotations), frame_counts=counts_file, videos=None, features=None,
                       out=out, convention=convention, tail=tail)
    return load_gt_folder(out)


def align(
    video_id: str, scores: np.ndarray, n_frames: int, snippet_length: int, max_mismatch: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores -> exactly ``n_frames`` frame scores; returns them and an alignment record."""
    n = len(scores)
    record: dict[str, Any] = {"video_id": video_id, "scores_len": n, "gt_len": n_frames}
    frame_gap = abs(n - n_frames)
    snippet_gap = abs(n * snippet_length - n_frames)
    if frame_gap <= snippet_gap:
        if frame_gap > max_mismatch:
            raise ValueError(f"{n} frame scores vs {n_frames} ground-truth frames (more than {max_mismatch} apart)")
        if n > n_frames:
            out, adjustment = scores[:n_frames], "truncated"
        elif n < n_frames:
            out, adjustment = np.concatenate([scores, np.full(n_frames - n, scores[-1])]), "padded"
        else:
            out, adjustment = scores, "none"
        record.update(level="frame", adjustment=adjustment, n_adjusted=frame_gap)
        return out, record
    exp = expand_to_frames(scores, n_frames, snippet_length, tolerance=max_mismatch, video_id=video_id)
    record.update(level=exp.level, adjustment=exp.adjustment, n_adjusted=exp.n_adjusted)
    return exp.scores, record


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def write_report(path: Path, metrics: dict[str, Any], title: str) -> None:
    """Markdown: headline metrics with definitions and CIs, per-class and per-video tables."""
    ci = metrics.get("ci") or {}
    lines = [f"# {title}", "", f"{metrics['n_videos']} videos, {metrics['n_frames']:,} frames "
             f"({metrics['n_anomalous_frames']:,} anomalous), {metrics['n_anomalous_videos']} anomalous "
             f"and {metrics['n_normal_videos']} normal videos.", "",
             "| metric | value | 95% CI | definition |", "|---|---|---|---|"]
    for key in ("auc", "ap_step", "ap_trapezoid", "auc_anomalous", "ap_anomalous", "ap_trapezoid_anomalous", "far"):
        interval = ci.get(key)
        ci_text = f"{_fmt(interval['low'])} – {_fmt(interval['high'])}" if interval else ""
        definition = METRIC_DEFINITIONS.get(key, "")
        if key == "far":
            definition += f" (threshold {metrics['threshold']:g})"
        lines.append(f"| `{key}` | {_fmt(metrics[key])} | {ci_text} | {definition} |")
    if ci:
        lines += ["", f"Confidence intervals: {ci.get('method', 'bootstrap')}, {ci.get('n_boot')} resamples of "
                  f"videos, seed {ci.get('seed')}."]
    ev = metrics.get("event_map")
    if ev and ev.get("map") is not None:
        aps = ", ".join(f"{k}: {_fmt(v)}" for k, v in ev["ap"].items())
        lines += ["", f"Event-level mAP (tIoU {ev['tious'][0]}–{ev['tious'][-1]}): **{_fmt(ev['map'])}** ({aps}); "
                  f"events: {ev.get('source')}."]
    lines += ["", "![ROC](plots/roc.png) ![PR](plots/pr.png)", ""]
    if metrics["per_class"]:
        lines += ["## Per class", "", METRIC_DEFINITIONS["per_class"], "", "| class | videos | AUC | AP |", "|---|---|---|---|"]
        for c, m in metrics["per_class"].items():
            lines.append(f"| {c} | {m['n_videos']} | {_fmt(m['auc'])} | {_fmt(m['ap_step'])} |")
        lines.append("")
    lines += ["## Per video", "", "| video | class | frames | anomalous | AUC | AP | mean score | max score |",
              "|---|---|---|---|---|---|---|---|"]
    for v in metrics["per_video"]:
        lines.append(f"| [{v['video_id']}](plots/videos/{v['video_id']}.png) | {v['cls'] or ''} | {v['n_frames']} | "
                     f"{v['n_anomalous']} | {_fmt(v['auc'])} | {_fmt(v['ap_step'])} | {_fmt(v['mean_score'])} | "
                     f"{_fmt(v['max_score'])} |")
    adjusted = [a for a in metrics["alignment"]["videos"] if a["adjustment"] != "none" or a["level"] != "frame"]
    lines += ["", "## Alignment of scores to ground truth", "",
              f"Policy: {metrics['alignment']['policy']}", ""]
    if adjusted:
        lines += ["| video | scores | ground truth | level | adjustment | frames |", "|---|---|---|---|---|---|"]
        lines += [f"| {a['video_id']} | {a['scores_len']} | {a['gt_len']} | {a['level']} | {a['adjustment']} | "
                  f"{a['n_adjusted']} |" for a in adjusted]
    else:
        lines.append("Every video's scores matched its ground truth frame for frame.")
    for key, what in (("missing_scores", "In the ground truth but without scores (not evaluated)"),
                      ("missing_gt", "Scored but without ground truth (not evaluated)"),
                      ("excluded", "Excluded (lengths could not be aligned)")):
        items = metrics[key]
        if items:
            lines += ["", f"**{what}:** " + ", ".join(
                (f"{i['video_id']} ({i['reason']})" if isinstance(i, dict) else str(i)) for i in items)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def run_evaluate(
    scores_path: str | Path,
    gt: str | Path,
    out: str | Path,
    *,
    annotations: str | Path | None = None,
    convention: str | None = None,
    tail: str | None = None,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    snippet_length: int = 16,
    max_mismatch: int = 16,
    max_video_plots: int | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Evaluate and write ``metrics.json``, ``report.md`` and plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = load_scores(scores_path)
    if not source.scores:
        raise EvaluateError(f"no per-video scores found in {scores_path}")
    if Path(gt).is_dir():
        order, gt_arrays = load_gt_folder(gt)
    else:
        dataset = str(gt)
        if annotations is None:
            raise EvaluateError(f"--gt {gt} is not a folder; as a dataset name it needs --annotations FILE")
        order, gt_arrays = build_gt_from_annotations(dataset, annotations, source, out / "gt", convention, tail)
    missing_scores = [v for v in order if v not in source.scores]
    missing_gt = sorted(set(source.scores) - set(gt_arrays))
    dataset = dataset or guess_dataset(order)
    videos, alignment, excluded = [], [], []
    preds: list[list[tuple[int, int, float]]] = []
    for vid in order:
        if vid not in source.scores:
            continue
        labels = gt_arrays[vid]
        try:
            frame_scores, record = align(vid, source.scores[vid], len(labels), snippet_length, max_mismatch)
        except ValueError as err:
            excluded.append({"video_id": vid, "reason": str(err)})
            logger.warning("excluded %s: %s", vid, err)
            continue
        alignment.append(record)
        videos.append(VideoScores(vid, frame_scores, labels, class_from_name(vid, dataset)[0]))
        if source.events is not None:
            # the run's own events, clipped to the ground truth's length like the scores
            n = len(labels)
            preds.append([(e.start_frame, min(e.end_frame + 1, n), e.mean_score)
                          for e in source.events.get(vid, []) if e.start_frame < n])
    if not videos:
        raise EvaluateError(
            f"no video has both scores and ground truth ({len(source.scores)} scored, {len(order)} in the ground truth)"
        )
    for what, items in (("without scores", missing_scores), ("without ground truth", missing_gt)):
        if items:
            logger.warning("%d video(s) %s: %s", len(items), what, ", ".join(items[:10]) + (" ..." if len(items) > 10 else ""))
    result: EvalResult = evaluate(videos, threshold=threshold, n_boot=n_boot, seed=seed,
                                  pred_events=preds if source.events is not None else None)
    if result.event_map is not None:
        result.event_map["source"] = (
            "the run's events (events.jsonl)" if source.events is not None else
            f"the event tracker at threshold {threshold:g} (score above it, no merge, no minimum duration)")
    metrics = result.to_dict()
    metrics.update(
        dataset=dataset,
        scores=str(scores_path),
        ground_truth=str(gt),
        missing_scores=missing_scores,
        missing_gt=missing_gt,
        excluded=excluded,
        alignment={"policy": "snippet scores repeated x%d; then scores longer than the ground truth are "
                             "truncated, shorter ones padded with the last score (at most %d frames)"
                             % (snippet_length, max_mismatch), "videos": alignment},
        definitions=METRIC_DEFINITIONS,
    )
    evdir = EvalDir(out)
    evdir.write_metrics(metrics)
    labels_all = np.concatenate([v.labels for v in videos])
    scores_all = np.concatenate([v.scores for v in videos])
    evdir.curves_path.unlink(missing_ok=True)  # a re-evaluation with a single class has no curves
    if 0 < labels_all.sum() < len(labels_all):
        fpr, tpr = roc_curve_points(labels_all, scores_all)
        plot_curve(out / "plots" / "roc.png", fpr, tpr, kind="roc", label=f"AUC {_fmt(metrics['auc'])}",
                   title="frame-level ROC (pooled)")
        recall, precision = pr_curve_points(labels_all, scores_all)
        evdir.write_curves(fpr, tpr, recall, precision)
        plot_curve(out / "plots" / "pr.png", recall, precision, kind="pr",
                   label=f"AP {_fmt(metrics['ap_step'])} (step) / {_fmt(metrics['ap_trapezoid'])} (trapezoid)",
                   title="frame-level precision-recall (pooled)")
    for v in videos[:max_video_plots]:
        plot_scores(out / "plots" / "videos" / f"{v.video_id}.png", v.scores, source.fps.get(v.video_id),
                    title=f"{v.video_id}" + (f" ({v.cls})" if v.cls else ""), threshold=threshold,
                    ground_truth=v.labels)
    write_report(out / "report.md", metrics, f"Evaluation of {Path(scores_path).name}")
    return metrics
