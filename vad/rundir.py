"""The run directory: the one owner of its layout and file formats, writers and readers.

Layout of a ``vad score`` run::

    <run>/summary.json          run totals + one entry per input video (status ok|error, reason)
    <run>/scores/<id>.csv       frame,time_s,score - one row for every frame of the video
    <run>/events.jsonl          one JSON object per event (video_id + Event fields)
    <run>/plots/<id>.png        score over time, events, reference part, ground truth
    <run>/records/<id>.json     a video's result + events, written last: marks the video complete
    <run>/config.yaml           the resolved configuration
    <run>/head/                 the fitted head when --reference was given (reusable: --head)
    <run>/run.log               the job's log, including tracebacks of unexpected failures
    <run>/snapshots/<event>.jpg the live monitor: each event's peak frame (its region drawn)
    <run>/clips/<event>.mp4     the live monitor: each event with its pre/post seconds
                                (both kept for N days / under a size cap per camera: prune_media)
    <run>/events.jsonl.<n>      rotated parts of events.jsonl (rotate_events), .1 the newest
    <run>/health.json           the live monitor: last per-camera state (as /healthz)
    <run>/report.html           the HTML report (`vad report`): summary, videos, events, evaluation
    <run>/report/               its per-video pages, thumbnails and the one Plotly.js they share
    <run>/evaluation/           `vad evaluate`'s default output for a run (vad.eval.EvalDir)

Every write is atomic (temporary file + rename), so a killed job never leaves half a file.
Evaluation and reports read runs only through :class:`RunDir`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from vad.events import Event
from vad.fsutil import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["RunDir", "RunRecord", "read_scores_csv", "write_scores_csv"]


def write_scores_csv(path: str | Path, scores: np.ndarray, fps: float) -> Path:
    """``frame,time_s,score``: one row per frame, time to 0.1 ms, score to 6 decimals."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["frame", "time_s", "score"])
    for i, s in enumerate(scores):
        writer.writerow([i, f"{i / fps:.4f}", f"{float(s):.6f}"])
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def read_scores_csv(path: str | Path) -> np.ndarray:
    """Scores of a CSV: the ``score`` column of a headed file (ours, or another tool's), or the
    last column of a file without a header."""
    path = Path(path)
    text = path.read_text()
    first, _, body_text = text.partition("\n")
    if first.strip().lower().split(",")[-1] == "score" and '"' not in text:
        # our own layout (score last, nothing quoted): numpy parses the column without the csv module
        lines = body_text.split()
        return np.array([line[line.rfind(",") + 1:] for line in lines], dtype=np.float64)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise ValueError(f"{path}: empty score file")
    header = [h.strip().lower() for h in rows[0]]
    try:
        float(rows[0][-1])
        body, col = rows, len(rows[0]) - 1  # no header: last column is the score
    except ValueError:
        if "score" not in header:
            raise ValueError(f"{path}: CSV needs a 'score' column (header: {rows[0]})") from None
        body, col = rows[1:], header.index("score")
    return np.array([float(r[col]) for r in body if r], dtype=np.float64)


@dataclass
class RunRecord:
    """A video's record: the settings key it was made under, its result and its events."""

    key: str
    result: dict[str, Any]
    events: list[dict[str, Any]]


class RunDir:
    """One run directory; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------
    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def head_dir(self) -> Path:
        return self.root / "head"

    @property
    def log_path(self) -> Path:
        return self.root / "run.log"

    def scores_path(self, video_id: str) -> Path:
        return self.root / "scores" / f"{video_id}.csv"

    def plot_path(self, video_id: str) -> Path:
        return self.root / "plots" / f"{video_id}.png"

    def record_path(self, video_id: str) -> Path:
        return self.root / "records" / f"{video_id}.json"

    @staticmethod
    def _file_id(event_id: str) -> str:
        # event ids are "<source>:<frame>"; file names keep only safe characters
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in event_id)

    def snapshot_path(self, event_id: str) -> Path:
        """JPEG of an event's peak frame (live monitor)."""
        return self.root / "snapshots" / f"{self._file_id(event_id)}.jpg"

    def clip_path(self, event_id: str) -> Path:
        """MP4 clip of an event with its pre/post seconds (live monitor)."""
        return self.root / "clips" / f"{self._file_id(event_id)}.mp4"

    def camera_media(self, camera: str) -> list[Path]:
        """One camera's clips and snapshots (files named ``<camera>_<frame>``), oldest first."""
        return [f for f, _ in self._camera_media_stats(camera)]

    def _camera_media_stats(self, camera: str) -> list[tuple[Path, os.stat_result]]:
        pattern = re.compile(re.escape(self._file_id(camera)) + r"_\d+\.(mp4|jpg)")
        found = [(f, f.stat()) for d in ("clips", "snapshots") if (self.root / d).is_dir()
                 for f in (self.root / d).iterdir() if pattern.fullmatch(f.name) and f.is_file()]
        return sorted(found, key=lambda fs: (fs[1].st_mtime, fs[0].name))

    def prune_media(self, camera: str, *, max_age_s: float | None = None, max_bytes: int | None = None,
                    now: float | None = None) -> list[Path]:
        """Retention for one camera: delete its clips and snapshots older than ``max_age_s``,
        then the oldest until the rest fit in ``max_bytes``; returns what was deleted (logged)."""
        now = time.time() if now is None else now
        files = self._camera_media_stats(camera)  # one stat per file
        deleted: list[Path] = []
        total = sum(st.st_size for _, st in files)
        for f, st in files:  # oldest first
            too_old = max_age_s is not None and now - st.st_mtime > max_age_s
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                continue
            try:
                f.unlink()
            except FileNotFoundError:
                pass
            total -= st.st_size
            deleted.append(f)
        if deleted:
            logger.info("retention %s: deleted %d file(s) (%s ... %s), %d bytes kept", camera, len(deleted),
                        deleted[0].name, deleted[-1].name, total)
        return deleted

    def rotate_events(self, max_bytes: int, keep: int = 5) -> Path | None:
        """Rotate ``events.jsonl`` once it exceeds ``max_bytes``: ``events.jsonl.1`` is the
        newest old part, ``.<keep>`` the oldest kept (older parts are deleted). Returns the
        new ``.1`` or None when no rotation was due. The writer reopens the file after this."""
        path = self.events_path
        if not path.exists() or path.stat().st_size <= max_bytes:
            return None
        oldest = path.with_name(f"{path.name}.{keep}")
        if oldest.exists():
            oldest.unlink()
            logger.info("retention: deleted %s", oldest.name)
        for i in range(keep - 1, 0, -1):
            part = path.with_name(f"{path.name}.{i}")
            if part.exists():
                part.replace(path.with_name(f"{path.name}.{i + 1}"))
        first = path.with_name(f"{path.name}.1")
        path.replace(first)
        logger.info("retention: rotated %s (over %d bytes)", path.name, max_bytes)
        return first

    @property
    def rules_path(self) -> Path:
        """The camera's rules the explanations used (``explain``), editable YAML."""
        return self.root / "rules.yaml"

    @property
    def explain_cache_dir(self) -> Path:
        return self.root / "explain_cache"

    @property
    def health_path(self) -> Path:
        """The live monitor's last per-camera state (also served at /healthz)."""
        return self.root / "health.json"

    @property
    def report_path(self) -> Path:
        """The HTML report's index page (``vad report``)."""
        return self.root / "report.html"

    @property
    def report_dir(self) -> Path:
        """The report's per-video pages, thumbnails and shared scripts."""
        return self.root / "report"

    def report_video_path(self, video_id: str) -> Path:
        """A video's page of the report."""
        return self.report_dir / "videos" / f"{self._file_id(video_id)}.html"

    def report_thumb_path(self, event_id: str) -> Path:
        """An event's thumbnail in the report (its snapshot, or its peak frame, made small)."""
        return self.report_dir / "thumbs" / f"{self._file_id(event_id)}.jpg"

    @property
    def evaluation_dir(self) -> Path:
        """Where ``vad evaluate`` writes by default when its scores are this run."""
        return self.root / "evaluation"

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    @classmethod
    def is_run(cls, path: str | Path) -> bool:
        """Whether ``path`` looks like a ``vad score`` run (a summary and a scores folder)."""
        p = Path(path)
        return (p / "summary.json").is_file() and (p / "scores").is_dir()

    # -- writers -------------------------------------------------------------------------
    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        write_text_atomic(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def write_scores(self, video_id: str, scores: np.ndarray, fps: float) -> Path:
        return write_scores_csv(self.scores_path(video_id), scores, fps)

    def write_record(self, video_id: str, record: RunRecord) -> None:
        """Written after every other output of the video: its presence marks it complete."""
        write_json_atomic(self.record_path(video_id),
                          {"key": record.key, "result": record.result, "events": record.events})

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_path, summary)

    def write_events(self, events: Iterable[dict[str, Any]]) -> None:
        write_text_atomic(self.events_path, "".join(json.dumps(e) + "\n" for e in events))

    # -- readers -------------------------------------------------------------------------
    def read_record(self, video_id: str) -> RunRecord | None:
        """The record of ``video_id``; None when there is none or it is unreadable (logged)."""
        path = self.record_path(video_id)
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text())
            return RunRecord(str(rec["key"]), dict(rec["result"]), list(rec["events"]))
        except (OSError, ValueError, TypeError, KeyError) as err:
            logger.warning("ignoring unreadable record %s: %s", path, err)
            return None

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text())

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text()) or {}

    def read_scores(self, video_id: str) -> np.ndarray:
        return read_scores_csv(self.scores_path(video_id))

    def read_events(self) -> dict[str, list[Event]]:
        """Events of every video, by video id, in file order."""
        out: dict[str, list[Event]] = {}
        if not self.events_path.is_file():
            return out
        for n, line in enumerate(self.events_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.setdefault(d["video_id"], []).append(Event.from_dict(d, d["video_id"]))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{self.events_path}:{n}: not an event: {err}") from None
        return out

    def ok_videos(self) -> list[dict[str, Any]]:
        """Summary entries of the videos that were scored, in input order."""
        return [v for v in self.read_summary().get("videos", []) if v.get("status") == "ok"]
