"""What a report shows, gathered from a run directory (and its evaluation) without trusting it
to be complete: an interrupted job, failed videos, missing plots or scores all still give a
:class:`RunView`, with a note for each thing that is missing.

Reads only through :class:`vad.rundir.RunDir` and :class:`vad.eval.output.EvalDir`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vad.eval.metrics import intervals_from_labels
from vad.eval.output import EvalDir
from vad.rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["RunView", "VideoView", "collect_run", "envelope"]


@dataclass
class VideoView:
    """One input video (or camera) as the report shows it."""

    video_id: str
    video: str | None
    status: str  # ok | error | unfinished (no record yet: the job stopped before it) | camera (live)
    error: str | None = None
    n_frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    reference_frames: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    scores: np.ndarray | None = None
    ground_truth: list[tuple[int, int]] | None = None  # anomalous (start, end_exclusive) frames
    metrics: dict[str, Any] | None = None  # the evaluation's per-video row
    plot: str | None = None  # the PNG plot, relative to the run
    missing: list[str] = field(default_factory=list)

    @property
    def max_score(self) -> float | None:
        return None if self.scores is None or not len(self.scores) else float(np.max(self.scores))

    @property
    def mean_score(self) -> float | None:
        return None if self.scores is None or not len(self.scores) else float(np.mean(self.scores))


@dataclass
class RunView:
    run: RunDir
    summary: dict[str, Any]
    config: dict[str, Any]
    videos: list[VideoView]
    notes: list[str]  # what is missing or suspicious, shown at the top of the report
    evaluation: dict[str, Any] | None = None
    curves: dict[str, Any] | None = None
    evaluation_dir: Path | None = None
    cameras: dict[str, Any] | None = None  # a monitor run's last health report

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for v in self.videos for e in v.events]

    @property
    def failed(self) -> list[VideoView]:
        return [v for v in self.videos if v.status == "error"]


def envelope(scores: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and scores thinned to at most ``max_points`` by keeping each bucket's
    minimum and maximum in frame order: the chart keeps every peak and dip a user would look
    for, which plain subsampling loses."""
    n = len(scores)
    if n <= max_points:
        return np.arange(n), scores
    bucket = int(np.ceil(n / max(1, max_points // 2)))
    pad = (-n) % bucket
    padded = np.concatenate([scores, np.full(pad, scores[-1])]).reshape(-1, bucket)
    lo, hi = padded.argmin(1), padded.argmax(1)
    base = np.arange(len(padded)) * bucket
    idx = np.stack([base + np.minimum(lo, hi), base + np.maximum(lo, hi)], 1).ravel()
    idx = np.unique(np.minimum(idx, n - 1))
    return idx, scores[idx]


def _events_by_video(run: RunDir, notes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each event once (a live run's log has its new/update/end records: the last one wins)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if not run.events_path.is_file():
        return {}
    bad = 0
    for line in run.events_path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            vid, eid = str(rec["video_id"]), str(rec.get("event_id") or f"{rec['video_id']}:{rec['start_frame']}")
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        out.setdefault(vid, {})[eid] = rec
    if bad:
        notes.append(f"events.jsonl: {bad} unreadable line(s) skipped (a job killed while writing?)")
    return {vid: list(evs.values()) for vid, evs in out.items()}


def _entries(run: RunDir, notes: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and its per-video entries, or what the records and score files say when the
    summary is missing or the job never finished."""
    summary: dict[str, Any] = {}
    if run.summary_path.is_file():
        try:
            summary = run.read_summary()
        except (OSError, ValueError) as err:
            notes.append(f"summary.json is unreadable ({err}): videos are listed from their records")
    elif not run.health_path.is_file():  # a live monitor's output has no summary, only health.json
        notes.append("no summary.json: the job stopped before its first summary; videos are listed from "
                     "their records and score files")
    if summary and not summary.get("finished", True):
        notes.append("the job did not finish (summary.json says finished: false): videos without a record "
                     "are listed as unfinished; rerun the same command to resume")
    entries = [dict(v) for v in summary.get("videos", [])]
    known = {e.get("video_id") for e in entries}
    records = sorted((run.root / "records").glob("*.json")) if (run.root / "records").is_dir() else []
    for path in records:
        rec = run.read_record(path.stem)
        if rec is not None and rec.result.get("video_id", path.stem) not in known:
            entries.append(dict(rec.result))
            known.add(rec.result.get("video_id", path.stem))
    if (run.root / "scores").is_dir():
        for path in sorted((run.root / "scores").glob("*.csv")):
            if path.stem not in known:
                entries.append({"video_id": path.stem, "status": "ok"})
                known.add(path.stem)
    return summary, entries


def _ground_truth(folder: Path | None, video_id: str) -> list[tuple[int, int]] | None:
    if folder is None:
        return None
    path = folder / f"{video_id}.npy"
    if not path.is_file():
        return None
    try:
        return intervals_from_labels(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        logger.warning("ground truth %s unreadable: %s", path, err)
        return None


def collect_run(root: str | Path, evaluation: str | Path | None = None) -> RunView:
    """Everything the report shows. ``evaluation``: a ``vad evaluate`` output folder (default:
    ``<run>/evaluation`` when it has one). Raises FileNotFoundError when ``root`` holds nothing a
    run writes."""
    run = RunDir(root)
    if not run.root.is_dir():
        raise FileNotFoundError(f"{run.root}: no such run directory")
    notes: list[str] = []
    summary, entries = _entries(run, notes)
    events = _events_by_video(run, notes)
    if not entries and not events and not run.health_path.is_file():
        raise FileNotFoundError(f"{run.root} is not a run directory: no summary.json, records, scores or events")
    config: dict[str, Any] = {}
    if run.config_path.is_file():
        try:
            config = run.read_config()
        except (OSError, ValueError) as err:
            notes.append(f"config.yaml unreadable: {err}")
    else:
        notes.append("no config.yaml: the run's settings are unknown")

    eval_dir = EvalDir(evaluation) if evaluation is not None else EvalDir(run.evaluation_dir)
    metrics = curves = None
    if eval_dir.exists():
        try:
            metrics, curves = eval_dir.read_metrics(), eval_dir.read_curves()
        except (OSError, ValueError) as err:
            notes.append(f"evaluation {eval_dir.root} unreadable: {err}")
    elif evaluation is not None:
        notes.append(f"no evaluation in {eval_dir.root} (metrics.json missing)")
    per_video = {r["video_id"]: r for r in (metrics or {}).get("per_video", [])}
    gt_dir = eval_dir.ground_truth_dir(metrics) if metrics else None
    if gt_dir is None and (config.get("output") or {}).get("ground_truth"):
        gt_dir = Path(config["output"]["ground_truth"])
        gt_dir = gt_dir if gt_dir.is_dir() else None

    want_plots = bool((config.get("output") or {}).get("plots", True))
    videos: list[VideoView] = []
    for e in entries:
        vid = str(e.get("video_id"))
        has_record = run.record_path(vid).is_file()
        status = e.get("status", "ok")
        if summary and not summary.get("finished", True) and not has_record and status == "ok":
            status = "unfinished"
        v = VideoView(video_id=vid, video=e.get("video"), status=status, error=e.get("error"),
                      n_frames=e.get("n_frames"), fps=e.get("fps"), duration_s=e.get("duration_s"),
                      reference_frames=e.get("reference_frames"), events=events.pop(vid, []),
                      metrics=per_video.get(vid), ground_truth=_ground_truth(gt_dir, vid))
        if v.status == "ok":
            path = run.scores_path(vid)
            if path.is_file():
                try:
                    v.scores = run.read_scores(vid)
                except (OSError, ValueError) as err:
                    v.missing.append(f"scores unreadable: {err}")
            else:
                v.missing.append("no scores file")
            plot = (e.get("outputs") or {}).get("plot")
            if plot and (run.root / plot).is_file():
                v.plot = plot
            elif want_plots and e.get("outputs") is not None:
                v.missing.append("no plot (PNG)")
            if v.n_frames is None and v.scores is not None:
                v.n_frames = len(v.scores)
        videos.append(v)
    live = run.health_path.is_file() and not summary
    for vid, evs in events.items():  # a live camera, or a video whose entry is gone
        videos.append(VideoView(video_id=vid, video=None, status="camera" if live else "ok", events=evs,
                                missing=["a live camera: its scores are not kept"] if live else
                                ["no scores: the video's entry is missing from summary.json and records"]))
    cameras = None
    if run.health_path.is_file():
        try:
            cameras = json.loads(run.health_path.read_text()).get("cameras")
        except (OSError, ValueError) as err:
            notes.append(f"health.json unreadable: {err}")
    no_plot = sum(1 for v in videos if "no plot (PNG)" in v.missing)
    if no_plot:
        notes.append(f"{no_plot} video(s) have no PNG plot (the report's charts do not need them)")
    no_scores = sum(1 for v in videos if v.status == "ok" and v.scores is None and v.video is not None)
    if no_scores:
        notes.append(f"{no_scores} video(s) have no readable scores: their charts are missing")
    return RunView(run=run, summary=summary, config=config, videos=videos, notes=notes, evaluation=metrics,
                   curves=curves, evaluation_dir=eval_dir.root if metrics else None, cameras=cameras)
