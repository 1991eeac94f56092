"""What a scoring run has done, video by video: results, events, stage timings; the records
that make a rerun resume; the summary and the run's event list rebuilt from them.

A video's record (``records/<id>.json``, written through :class:`vad.rundir.RunDir` after its
other outputs) carries a key over the video file (path, size, mtime) and every job-wide
setting its outputs depend on, so a rerun skips a video only when nothing it depends on moved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import vad
from vad.cache import VideoFingerprint
from vad.rundir import RunDir, RunRecord
from pipelines.inputs import VideoItem

logger = logging.getLogger(__name__)

__all__ = ["RunLedger", "VideoResult"]


@dataclass
class VideoResult:
    video: str
    video_id: str
    status: str = "ok"
    error: str | None = None
    n_frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    n_snippets: int | None = None
    n_events: int = 0
    reference_frames: int | None = None  # the video's own start that fitted its head (none: a fitted head)
    backend: str | None = None
    cache_hit: bool = False
    attempts: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)  # Ray nodes that decoded/extracted it


class RunLedger:
    """Results and events by input position, stage timings, records, summary.

    ``settings()``: the job-wide part of every record key (asked once, at the first key). ``still_valid(item)``: a job-specific
    check of a resumed video beyond its record (e.g. its cache entry still exists).
    ``summary_extra()``: job-level fields of ``summary.json`` (executor, extractor)."""

    FLUSH_INTERVAL_S = 2.0  # bounds rewriting summary/events: O(videos) per flush, not per video

    def __init__(self, run_dir: RunDir, settings: Callable[[], dict[str, Any]], *, with_events: bool = True,
                 still_valid: Callable[[VideoItem], bool] | None = None,
                 summary_extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.run_dir = run_dir
        self._settings_of = settings  # evaluated on first use: the job may still resolve settings
        self._settings: str | None = None
        self.with_events = with_events
        self.still_valid = still_valid
        self.summary_extra = summary_extra or dict
        self.results: dict[int, VideoResult] = {}
        self.video_events: dict[int, list[dict[str, Any]]] = {}
        self.stage_s: dict[str, float] = {}
        self.n_resumed = 0
        self._last_flush = -float("inf")
        self.started = time.perf_counter()

    def time(self, stage: str, seconds: float) -> None:
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds

    def record_key(self, item: VideoItem) -> str:
        """Everything a video's outputs depend on: the file and the job's settings."""
        try:
            fingerprint = asdict(VideoFingerprint.of(item.path))
        except OSError:
            fingerprint = {"path": str(item.path)}
        if self._settings is None:
            self._settings = json.dumps(self._settings_of(), sort_keys=True, default=str)
        blob = json.dumps({"video": fingerprint, "settings": self._settings}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def complete(self, index: int, item: VideoItem, result: VideoResult,
                 events: list[dict[str, Any]] | None = None) -> None:
        """Record a finished (or failed) video: its record last, then a throttled flush."""
        events = events or []
        self.results[index] = result
        self.video_events[index] = events
        self.run_dir.write_record(item.video_id, RunRecord(self.record_key(item), asdict(result), events))
        self.flush(finished=False, force=False)

    def resume(self, index: int, item: VideoItem) -> VideoResult | None:
        """Take a previous run's record of ``item`` if it is complete and still valid."""
        rec = self.run_dir.read_record(item.video_id)
        if rec is None:
            return None
        try:
            result = VideoResult(**rec.result)
        except TypeError as err:
            logger.warning("ignoring record of %s from another vad version: %s", item.video_id, err)
            return None
        if rec.key != self.record_key(item) or result.status != "ok":
            return None
        if any(not (self.run_dir.root / rel).is_file() for rel in result.outputs.values()):
            return None
        if self.still_valid is not None and not self.still_valid(item):
            return None
        self.results[index], self.video_events[index] = result, rec.events
        self.n_resumed += 1
        return result

    def summary(self, finished: bool) -> dict[str, Any]:
        results = [self.results[i] for i in sorted(self.results)]
        ok = [r for r in results if r.status == "ok"]
        failed = [r for r in results if r.status != "ok"]
        wall = time.perf_counter() - self.started
        video_s = sum(r.duration_s or 0 for r in ok)
        extra = self.summary_extra()
        return {
            "vad_version": vad.__version__,
            "finished": finished,
            "n_videos": len(results),
            "n_ok": len(ok),
            "n_failed": len(failed),
            "n_resumed": self.n_resumed,
            "failed": [{"video": r.video, "error": r.error} for r in failed],
            "n_events": sum(len(self.video_events.get(i, [])) for i in self.results),
            "wall_s": round(wall, 3),
            "video_s": round(video_s, 3),
            "realtime_factor": round(video_s / wall, 3) if wall > 0 else None,
            "executor": extra.get("executor"),
            "stages_s": {k: round(v, 3) for k, v in sorted(self.stage_s.items())},
            "extractor": extra.get("extractor"),
            **({"explain": extra["explain"]} if "explain" in extra else {}),
            "videos": [asdict(r) for r in results],
        }

    def flush(self, finished: bool, *, force: bool = True) -> dict[str, Any] | None:
        """Rewrite summary.json and events.jsonl atomically (input order); with ``force=False``
        only if the last write is older than FLUSH_INTERVAL_S (an archive of 10k videos would
        otherwise rewrite its whole summary 10k times). Per-video files are written as each
        video finishes."""
        now = time.perf_counter()
        if not force and now - self._last_flush < self.FLUSH_INTERVAL_S:
            return None
        self._last_flush = now
        summary = self.summary(finished)
        self.run_dir.write_summary(summary)
        if self.with_events:
            self.run_dir.write_events(e for i in sorted(self.video_events) for e in self.video_events[i])
        return summary
