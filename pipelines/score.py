"""``vad score``: videos -> features (cached) -> head -> frame scores, events, plots.

Run directory layout::

    <out>/summary.json          one entry per input video (status ok|error, reason, timings)
    <out>/scores/<id>.csv       frame,time_s,score - one row for every frame of the video
    <out>/events.jsonl          one JSON object per detected event (video_id + Event fields)
    <out>/plots/<id>.png        score over time, events, reference part, ground truth
    <out>/records/<id>.json     a video's result + events, written last: marks the video complete
    <out>/config.yaml           the resolved configuration
    <out>/head/                 the fitted head when --reference was given (reusable: --head)
    <out>/run.log               the job's log, including tracebacks of unexpected failures

A failing video never stops the job: it is retried ``pipeline.retries`` times, then becomes an
error record. ``summary.json`` and ``events.jsonl`` are rebuilt from the records atomically at
most every FLUSH_INTERVAL_S seconds and at the end, in input order, so a killed job leaves
valid outputs, and rerunning it into the same directory (``pipeline.resume``) skips complete
videos and ends with the same outputs as an uninterrupted run.

Work is spread by an executor (:mod:`pipelines.executors`): Ray (default) or one local process.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

import vad
from vad.cache import FeatureCache, VideoFingerprint
from vad.clips import SnippetSpec, expand_snippet_scores, snippet_ranges
from vad.config import ScoreConfig, to_dict
from vad.events import Event, detect_events
from vad.features.extractor import FeatureError, FeatureExtractor, build_extractor
from vad.fsutil import write_json_atomic, write_text_atomic
from vad.heads import ReferenceHead, ReferenceHeadConfig
from vad.heads.base import load_head
from vad.io import VideoError
from vad.viz import plot_scores
from pipelines.executors import RayUnavailable, ensure_ray, iter_local, iter_ray
from pipelines.inputs import VideoItem, assign_ids, expand_inputs
from pipelines.stages import ChunkResult, VideoPlan, VideoSkipped, assemble, check_pipeline_config, plan_video
from pipelines.train import score_snippets

logger = logging.getLogger(__name__)


class JobError(RuntimeError):
    """The job as a whole cannot run (bad configuration, unusable reference footage)."""


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
    backend: str | None = None
    cache_hit: bool = False
    attempts: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class VideoFeatures:
    features: np.ndarray  # (n_crops, n_snippets, dim)
    n_frames: int
    fps: float
    backend: str
    cache_hit: bool


def _head_config(cfg: ScoreConfig) -> ReferenceHeadConfig:
    h = cfg.head
    return ReferenceHeadConfig(k=h.k, shrinkage=h.shrinkage, methods=list(h.methods),
                               calibration_quantile=h.calibration_quantile)


def reference_snippet_count(n_snippets: int, fps: float, cfg: ScoreConfig) -> int:
    """How many leading snippets of a video serve as its own reference."""
    h = cfg.head
    if h.reference_seconds is not None:
        wanted = math.ceil(h.reference_seconds * fps / cfg.snippets.stride)
    else:
        wanted = math.ceil(h.reference_fraction * n_snippets)
    return min(n_snippets, max(h.min_reference_snippets, wanted))


def write_scores_csv(path: Path, scores: np.ndarray, fps: float) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["frame", "time_s", "score"])
    for i, s in enumerate(scores):
        writer.writerow([i, f"{i / fps:.4f}", f"{float(s):.6f}"])
    write_text_atomic(path, buf.getvalue())


def validate(cfg: ScoreConfig) -> SnippetSpec:
    """Checks that the schema cannot express (choices, ranges); returns the snippet spec."""
    try:
        spec = SnippetSpec(cfg.snippets.length, cfg.snippets.stride, cfg.snippets.tail)
    except ValueError as err:
        raise JobError(f"snippets: {err}") from None
    if cfg.head.type != "reference":
        raise JobError(f"head.type {cfg.head.type!r} is not available (available: reference)")
    if not 0 < cfg.head.reference_fraction <= 1:
        raise JobError(f"head.reference_fraction must be in (0, 1], got {cfg.head.reference_fraction}")
    if cfg.head.min_reference_snippets < 2:
        raise JobError("head.min_reference_snippets must be >= 2")
    if cfg.head.reference and cfg.head.load:
        raise JobError("give either head.reference (fit on footage) or head.load (a saved head), not both")
    try:
        _head_config(cfg)
    except ValueError as err:
        raise JobError(f"head: {err}") from None
    try:
        check_pipeline_config(cfg)
    except ValueError as err:
        raise JobError(str(err)) from None
    if cfg.io.short_side is not None and cfg.io.short_side < cfg.features.crop_size:
        raise JobError(f"io.short_side ({cfg.io.short_side}) must be >= features.crop_size ({cfg.features.crop_size})")
    return spec


class _Progress:
    """One progress view over the job: snippets (rate, ETA) plus videos done/failed and RTF."""

    def __init__(self, n_videos: int, enabled: bool) -> None:
        self.started = time.perf_counter()
        self.n_videos = n_videos
        self.ok = self.failed = 0
        self.video_s = 0.0
        self.bar = tqdm(total=0, desc="snippets", unit="snip", disable=not enabled, dynamic_ncols=True)

    def add_snippets(self, n: int) -> None:
        self.bar.total += n
        self.bar.refresh()

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def video_done(self, ok: bool, video_s: float = 0.0) -> None:
        self.ok += ok
        self.failed += not ok
        self.video_s += video_s
        wall = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(
            f"videos {self.ok + self.failed}/{self.n_videos} (failed {self.failed}), "
            f"{self.video_s / wall:.2f}x real time", refresh=True)

    def close(self) -> None:
        self.bar.close()


@dataclass
class _Pending:
    """A video being extracted: its plan, the chunks received so far and their timings."""

    plan: VideoPlan
    chunks: list[ChunkResult] = field(default_factory=list)
    received: int = 0
    error: ChunkResult | None = None
    backend: str = ""


class ScoreJob:
    """One ``vad score`` (or, with ``extract_only``, ``vad extract``) run writing into ``out_dir``."""

    def __init__(self, cfg: ScoreConfig, out_dir: str | Path, *, progress: bool = True,
                 precomputed: bool = False, extract_only: bool = False) -> None:
        """``precomputed``: score feature files (``run_features``), so no extractor is built.
        ``extract_only``: fill the feature cache and write records, no head and no scores."""
        self.cfg = cfg
        self.spec = validate(cfg)
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.extract_only = extract_only
        self.extractor: FeatureExtractor | None = None
        if extract_only and not cfg.cache.enabled:
            raise JobError("feature extraction writes into the feature cache; do not disable it (--no-cache)")
        if not precomputed:
            try:
                self.extractor = build_extractor(cfg.features, short_side=cfg.io.short_side)
            except FeatureError as err:
                raise JobError(str(err)) from None
        self.cache = FeatureCache(cfg.cache.root) if cfg.cache.enabled else None
        self.results: dict[int, VideoResult] = {}
        self.video_events: dict[int, list[dict[str, Any]]] = {}
        self.stage_s: dict[str, float] = {}
        self.n_resumed = 0
        self.shared_head: ReferenceHead | None = None
        self.trained_head: torch.nn.Module | None = None
        self._last_flush = -float("inf")
        self._started = time.perf_counter()
        self.ground_truth_dir = Path(cfg.output.ground_truth) if cfg.output.ground_truth else None

    def _time(self, stage: str, seconds: float) -> None:
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds

    # -- features of one video (reference footage; sequential) ------------------------------
    def video_features(self, item: VideoItem) -> VideoFeatures:
        """Decode + extract one video in this process (with the cache)."""
        plan = plan_video(0, item, self.spec)
        cached = self._cached(plan)
        if cached is not None:
            return cached
        pending = _Pending(plan)
        for chunk in iter_local([plan], self.cfg, self.spec, self.extractor):
            if chunk.error:
                raise VideoSkipped(chunk.error)
            pending.chunks.append(chunk)
            pending.backend = chunk.backend
        return self._assembled(pending)

    def _cached(self, plan: VideoPlan) -> VideoFeatures | None:
        if self.cache is None or plan.fingerprint is None:
            return None
        t0 = time.perf_counter()
        entry = self.cache.load(plan.item.video_id, plan.fingerprint, self.spec, self.extractor.spec)
        self._time("cache_load_s", time.perf_counter() - t0)
        if entry is None:
            return None
        m = entry.manifest
        return VideoFeatures(entry.features, m["n_frames"], m["fps"], m.get("backend", "cache"), True)

    def _assembled(self, pending: _Pending) -> VideoFeatures:
        plan = pending.plan
        feats = assemble(pending.chunks, plan.n_snippets)
        if self.cache is not None and plan.fingerprint is not None:
            t0 = time.perf_counter()
            self.cache.save(plan.item.video_id, plan.fingerprint, self.spec, self.extractor.spec, feats,
                            fps=plan.fps, n_frames=plan.n_frames, extra={"backend": pending.backend})
            self._time("cache_write_s", time.perf_counter() - t0)
        return VideoFeatures(feats, plan.n_frames, plan.fps, pending.backend, False)

    # -- heads ------------------------------------------------------------------------------
    def prepare_shared_head(self) -> None:
        """Load a saved head, or fit one on the user's reference footage (once per job)."""
        h = self.cfg.head
        if self.extract_only:
            return
        if h.load:
            meta_path = Path(h.load) / "head.json"
            try:
                kind = json.loads(meta_path.read_text()).get("type") if meta_path.is_file() else None
                if kind in (None, "reference"):
                    self.shared_head = ReferenceHead.load(h.load)
                else:
                    self.trained_head = load_head(h.load, self.extractor.device if self.extractor else "cpu")
            except (OSError, ValueError, KeyError, RuntimeError) as err:
                raise JobError(f"cannot load head from {h.load}: {err}") from None
            return
        if not h.reference:
            return
        items = assign_ids(expand_inputs([h.reference], self.cfg.io.extensions))
        if not items:
            raise JobError(f"reference {h.reference} holds no videos")
        bank, groups, problems = [], [], []
        for item in tqdm(items, desc="reference", unit="video", disable=not self.progress):
            try:
                vf = self.video_features(item)
            except (VideoError, VideoSkipped, ValueError) as err:
                problems.append(f"{item.path}: {err}")
                continue
            n_crops, n_snippets, dim = vf.features.shape
            bank.append(vf.features.reshape(-1, dim))
            # crops of one snippet are one group; snippet ids are unique across reference videos
            groups.append(np.tile(np.arange(n_snippets), n_crops) + sum(len(g) for g in groups))
        for p in problems:
            logger.warning("reference video skipped: %s", p)
        if not bank:
            raise JobError("no usable reference video: " + "; ".join(problems))
        reference = np.concatenate(bank)
        try:
            self.shared_head = ReferenceHead(_head_config(self.cfg)).fit(reference, np.concatenate(groups))
        except ValueError as err:
            raise JobError(f"cannot fit the reference head: {err}") from None
        if h.save:
            self.shared_head.save(self.out_dir / "head")

    def score_features(self, feats: np.ndarray, fps: float) -> tuple[np.ndarray, int | None]:
        """(snippet scores averaged over crops, number of leading reference snippets or None)."""
        n_crops, n_snippets, dim = feats.shape
        if self.trained_head is not None:
            expected = self.trained_head.config.input_dim
            if dim != expected:
                raise VideoSkipped(f"features are {dim}-d but the head was trained on {expected}-d features")
            return score_snippets(self.trained_head, feats, next(self.trained_head.parameters()).device), None
        if self.shared_head is not None:
            head, n_ref = self.shared_head, None
        else:
            n_ref = reference_snippet_count(n_snippets, fps, self.cfg)
            if n_ref < 2:
                raise VideoSkipped(
                    f"only {n_snippets} snippet(s): too short to model normality from the video itself "
                    "(give --reference footage of this camera)"
                )
            # Rows are crop-major; the crops of one snippet form a group (not independent samples).
            groups = np.tile(np.arange(n_ref), n_crops)
            head = ReferenceHead(_head_config(self.cfg)).fit(feats[:, :n_ref].reshape(-1, dim), groups)
        scores = np.mean([head.score(feats[c]) for c in range(n_crops)], axis=0)
        if n_ref:
            # The reference part is scored held-out (as if it were new footage), not in-sample,
            # so the curve has no artificial step where the reference ends.
            scores[:n_ref] = head.reference_scores.reshape(n_crops, n_ref).mean(axis=0)
        return scores, n_ref

    # -- one video --------------------------------------------------------------------------
    def score_video(self, item: VideoItem, get_features: Callable[[VideoItem], VideoFeatures]
                    ) -> tuple[VideoResult, list[dict[str, Any]]]:
        """Score one video whose features ``get_features`` provides (precomputed feature files)."""
        result = VideoResult(video=str(item.path), video_id=item.video_id)
        t0 = time.perf_counter()
        try:
            vf = get_features(item)
        except (VideoError, VideoSkipped) as err:
            self._fail(result, str(err))
            return result, []
        except (ValueError, OSError) as err:  # includes FeatureDataError (bad feature files)
            self._fail(result, f"{type(err).__name__}: {err}")
            return result, []
        events = self.finish_video(item, result, vf, {"features_s": round(time.perf_counter() - t0, 4)})
        return result, events

    def finish_video(self, item: VideoItem, result: VideoResult, vf: VideoFeatures,
                     timings: dict[str, float]) -> list[dict[str, Any]]:
        """Head -> frame scores -> events -> files, for a video whose features are complete;
        fills ``result`` and returns the event records. Never raises for a per-video problem:
        it becomes the result's error."""
        t0 = time.perf_counter()
        events: list[Event] = []
        try:
            result.n_frames, result.fps, result.backend = vf.n_frames, vf.fps, vf.backend
            result.duration_s = vf.n_frames / vf.fps
            result.n_snippets, result.cache_hit = int(vf.features.shape[1]), vf.cache_hit
            if not self.extract_only:
                snippet_scores, n_ref = self.score_features(vf.features, vf.fps)
                frame_scores = expand_snippet_scores(snippet_scores, vf.n_frames, self.spec)
                ev_cfg = self.cfg.events
                events = detect_events(
                    frame_scores, vf.fps, ev_cfg.threshold, low_threshold=ev_cfg.low_threshold,
                    min_duration_s=ev_cfg.min_duration_s, merge_gap_s=ev_cfg.merge_gap_s,
                    smoothing_s=ev_cfg.smoothing_s,
                )
                t1 = time.perf_counter()
                self.write_video_outputs(item, result, frame_scores, events, vf, n_ref)
                t2 = time.perf_counter()
                timings = {**timings, "head_s": round(t1 - t0, 4), "write_s": round(t2 - t1, 4)}
                self._time("head_s", t1 - t0)
                self._time("write_s", t2 - t1)
            result.n_events = len(events)
        except (VideoError, VideoSkipped) as err:
            self._fail(result, str(err))
        except (ValueError, OSError) as err:
            logger.debug("video %s failed", item.path, exc_info=True)
            self._fail(result, f"{type(err).__name__}: {err}")
        except Exception as err:  # noqa: BLE001 - one bad video must never stop the batch
            logger.error("unexpected failure on %s", item.path, exc_info=True)
            self._fail(result, f"unexpected {type(err).__name__}: {err}")
        # Busy time of this video's stages, summed over workers; stages of different videos (and
        # decode/extract of one video) overlap, so the job's real-time factor is in the summary.
        timings["busy_s"] = round(sum(v for k, v in timings.items() if k.endswith("_s")), 4)
        result.timings = timings
        if result.status != "ok":
            return []
        return [{"video_id": item.video_id, **e.to_dict()} for e in events]

    @staticmethod
    def _fail(result: VideoResult, reason: str) -> None:
        result.status, result.error = "error", reason
        logger.warning("%s: %s", result.video, reason)

    def write_video_outputs(
        self, item: VideoItem, result: VideoResult, frame_scores: np.ndarray,
        events: Sequence[Event], vf: VideoFeatures, n_ref: int | None,
    ) -> None:
        scores_path = self.out_dir / "scores" / f"{item.video_id}.csv"
        write_scores_csv(scores_path, frame_scores, vf.fps)
        result.outputs["scores"] = str(scores_path.relative_to(self.out_dir))
        if self.cfg.output.plots:
            gt = None
            if self.ground_truth_dir is not None:
                gt_path = self.ground_truth_dir / f"{item.video_id}.npy"
                if gt_path.is_file():
                    gt = np.load(gt_path, allow_pickle=False)
            ref_frames = None
            if n_ref:
                ref_frames = snippet_ranges(vf.n_frames, self.spec)[n_ref - 1][1]
            plot_path = plot_scores(
                self.out_dir / "plots" / f"{item.video_id}.png", frame_scores, vf.fps,
                title=f"{item.video_id} ({vf.n_frames} frames, {vf.fps:g} fps)",
                threshold=self.cfg.events.threshold, events=events, ground_truth=gt,
                reference_frames=ref_frames,
            )
            result.outputs["plot"] = str(plot_path.relative_to(self.out_dir))

    # -- records: what makes a video complete, and resume ----------------------------------
    def record_key(self, item: VideoItem) -> str:
        """Everything a video's outputs depend on: the file, the features, head and events settings."""
        try:
            fingerprint = asdict(VideoFingerprint.of(item.path))
        except OSError:
            fingerprint = {"path": str(item.path)}
        blob = json.dumps({"video": fingerprint, "settings": self._settings_key}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    @functools.cached_property
    def _settings_key(self) -> str:
        """The job-wide part of every record key (computed once, not per video)."""
        cfg = to_dict(self.cfg)
        return json.dumps({
            "extractor": self.extractor.spec.key if self.extractor else None,
            "snippets": asdict(self.spec),
            "head": cfg["head"],
            "events": cfg["events"],
            "plots": self.cfg.output.plots,
            "ground_truth": self.cfg.output.ground_truth,
            "extract_only": self.extract_only,
        }, sort_keys=True, default=str)

    def record_path(self, item: VideoItem) -> Path:
        return self.out_dir / "records" / f"{item.video_id}.json"

    def write_record(self, index: int, item: VideoItem, result: VideoResult, events: list[dict[str, Any]]) -> None:
        """Written after every other output of the video: its presence marks the video complete."""
        self.results[index] = result
        self.video_events[index] = events
        write_json_atomic(self.record_path(item), {
            "key": self.record_key(item), "result": asdict(result), "events": events})

    def load_record(self, item: VideoItem) -> tuple[VideoResult, list[dict[str, Any]]] | None:
        """A previous run's record of ``item`` if it is complete and still valid, else None."""
        path = self.record_path(item)
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text())
            result = VideoResult(**rec["result"])
            events = list(rec["events"])
        except (OSError, ValueError, TypeError, KeyError) as err:
            logger.warning("ignoring unreadable record %s: %s", path, err)
            return None
        if rec.get("key") != self.record_key(item) or result.status != "ok":
            return None
        if any(not (self.out_dir / rel).is_file() for rel in result.outputs.values()):
            return None
        if self.cache is not None and self.extractor is not None:
            try:
                fingerprint = VideoFingerprint.of(item.path)
            except OSError:
                return None  # the video is gone: it fails again, with its reason
            if not self.cache.has(item.video_id, fingerprint, self.spec, self.extractor.spec):
                return None  # outputs exist but the cache entry does not: redo so both are complete
        return result, events

    # -- the job ----------------------------------------------------------------------------
    def summary(self, finished: bool) -> dict[str, Any]:
        results = [self.results[i] for i in sorted(self.results)]
        ok = [r for r in results if r.status == "ok"]
        failed = [r for r in results if r.status != "ok"]
        wall = time.perf_counter() - self._started
        video_s = sum(r.duration_s or 0 for r in ok)
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
            "executor": self.cfg.pipeline.executor,
            "stages_s": {k: round(v, 3) for k, v in sorted(self.stage_s.items())},
            "extractor": None if self.extractor is None else {
                "name": self.extractor.spec.name, "key": self.extractor.spec.key,
                "weights": str(self.extractor.weights_path)},
            "videos": [asdict(r) for r in results],
        }

    FLUSH_INTERVAL_S = 2.0  # bounds rewriting summary/events: O(videos) per flush, not per video

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
        write_json_atomic(self.out_dir / "summary.json", summary)
        if not self.extract_only:
            lines = (json.dumps(e) + "\n" for i in sorted(self.video_events) for e in self.video_events[i])
            write_text_atomic(self.out_dir / "events.jsonl", "".join(lines))
        return summary

    def _start(self) -> None:
        self._started = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out_dir / "config.yaml", yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        self.prepare_shared_head()
        self.flush(finished=False)

    def _complete(self, index: int, item: VideoItem, result: VideoResult,
                  events: list[dict[str, Any]] | None = None) -> None:
        self.write_record(index, item, result, events or [])
        self.flush(finished=False, force=False)

    def run(self, inputs: Sequence[str | Path]) -> dict[str, Any]:
        items = assign_ids(expand_inputs(inputs, self.cfg.io.extensions))
        if not items:
            raise JobError(f"no videos found in {list(map(str, inputs))}")
        self._start()
        progress = _Progress(len(items), self.progress)
        try:
            plans = self._prepare(items, progress)
            self._extract_all(plans, progress)
        finally:
            progress.close()
        return self.flush(finished=True)

    def _prepare(self, items: list[VideoItem], progress: _Progress) -> list[VideoPlan]:
        """Resume complete videos, score cache hits, probe the rest; returns what needs extraction."""
        t0 = time.perf_counter()
        plans = []
        for index, item in enumerate(items):
            if self.cfg.pipeline.resume:
                found = self.load_record(item)
                if found is not None:
                    self.results[index], self.video_events[index] = found
                    self.n_resumed += 1
                    progress.video_done(True, found[0].duration_s or 0.0)
                    continue
            result = VideoResult(video=str(item.path), video_id=item.video_id)
            try:
                plan = plan_video(index, item, self.spec)
            except (VideoError, VideoSkipped) as err:
                self._fail(result, str(err))
                self._complete(index, item, result)
                progress.video_done(False)
                continue
            cached = self._cached(plan)
            if cached is not None:
                self._complete(index, item, result, self.finish_video(item, result, cached, {}))
                progress.video_done(result.status == "ok", plan.duration_s)
                continue
            plans.append(plan)
            progress.add_snippets(plan.n_snippets)
        self._time("plan_s", time.perf_counter() - t0)
        return plans

    def _stream(self, plans: list[VideoPlan]) -> Iterator[ChunkResult]:
        if self.cfg.pipeline.executor == "local":
            return iter_local(plans, self.cfg, self.spec, self.extractor)
        return iter_ray(plans, self.cfg, self.spec, self.extractor.n_crops, self.extractor.device.type)

    def _extract_all(self, plans: list[VideoPlan], progress: _Progress) -> None:
        """Run the executor, finishing videos as their last chunk arrives; retry failed videos."""
        if not plans:
            return
        started_ray = False
        if self.cfg.pipeline.executor == "ray":
            t0 = time.perf_counter()
            try:
                started_ray = ensure_ray(self.cfg)
            except RayUnavailable as err:
                raise JobError(f"{err} (or run with --executor local)") from None
            self._time("ray_start_s", time.perf_counter() - t0)
        try:
            attempt, todo, isolate = 0, plans, False
            while todo:
                if isolate:
                    # The executor itself failed (a crash Ray did not contain): run each video
                    # on its own, so a video that kills its worker cannot take others with it.
                    failed = {}
                    for plan in todo:
                        failed.update(self._extract_pass([plan], progress, attempt)[0])
                else:
                    failed, broke = self._extract_pass(todo, progress, attempt)
                    isolate = broke and len(todo) > 1
                retry = [p for p in todo if p.index in failed and not failed[p.index].permanent]
                final = [p for p in todo if p.index in failed and (failed[p.index].permanent or attempt >= self.cfg.pipeline.retries)]
                for plan in final:
                    chunk = failed[plan.index]
                    result = VideoResult(video=str(plan.item.path), video_id=plan.item.video_id, attempts=attempt + 1)
                    self._fail(result, chunk.error or "failed")
                    self._complete(plan.index, plan.item, result)
                    progress.video_done(False)
                todo = [p for p in retry if p not in final]
                if todo:
                    attempt += 1
                    logger.warning("retrying %d video(s) (attempt %d of %d)", len(todo), attempt + 1,
                                   self.cfg.pipeline.retries + 1)
                    for p in todo:
                        progress.add_snippets(p.n_snippets)
        finally:
            if started_ray:
                import ray

                ray.shutdown()

    def _extract_pass(self, plans: list[VideoPlan], progress: _Progress, attempt: int
                      ) -> tuple[dict[int, ChunkResult], bool]:
        """One pass of the executor over ``plans``: the failed videos (index -> why), and whether
        the executor itself broke down."""
        pending = {p.index: _Pending(p) for p in plans}
        failed: dict[int, ChunkResult] = {}
        t0 = time.perf_counter()
        lost_reason = "lost: the worker processing this video crashed or was killed (see run.log)"
        broke = False
        try:
            self._consume(self._stream(plans), pending, failed, progress, attempt, t0)
        except (KeyboardInterrupt, JobError):
            raise
        except Exception as err:  # noqa: BLE001 - e.g. Ray cannot start an actor; videos fail, not the job
            logger.error("the %s executor failed", self.cfg.pipeline.executor, exc_info=True)
            lost_reason = f"executor failed: {type(err).__name__}: {str(err)[:300]}"
            broke = True
        self._time("pipeline_wall_s", time.perf_counter() - t0)
        for index, state in pending.items():
            # Chunks that never came back: their worker crashed or was killed (Ray dropped the
            # block), or the executor itself failed.
            failed[index] = ChunkResult(index, state.plan.item.video_id, 0, state.plan.n_snippets, error=lost_reason)
            progress.advance(state.plan.n_snippets - state.received)
        return failed, broke

    def _consume(self, stream: Iterator[ChunkResult], pending: dict[int, _Pending], failed: dict[int, ChunkResult],
                 progress: _Progress, attempt: int, t0: float) -> None:
        first = True
        for chunk in stream:
            if first:
                # Start-up latency of the stream (worker processes, model loading, first decode):
                # throughput after it is the steady state a long archive sees.
                self._time("first_chunk_s", time.perf_counter() - t0)
                first = False
            state = pending.get(chunk.video_index)
            if state is None or state.error is not None:
                continue  # a video already failed (its later chunks are moot)
            progress.advance(chunk.n)
            if chunk.error:
                state.error = chunk
                failed[chunk.video_index] = chunk
                progress.advance(state.plan.n_snippets - state.received - chunk.n)
                del pending[chunk.video_index]
                continue
            for key, value in chunk.timings.items():
                self._time(key, value)
            state.chunks.append(chunk)
            state.received += chunk.n
            state.backend = chunk.backend or state.backend
            if state.received == state.plan.n_snippets:
                del pending[chunk.video_index]
                self._finish_extracted(state, progress, attempt)

    def _finish_extracted(self, state: _Pending, progress: _Progress, attempt: int) -> None:
        plan = state.plan
        timings = {k: round(sum(c.timings.get(k, 0.0) for c in state.chunks), 4) for k in ("decode_s", "extract_s")}
        result = VideoResult(video=str(plan.item.path), video_id=plan.item.video_id, attempts=attempt + 1)
        try:
            vf = self._assembled(state)
        except (ValueError, OSError) as err:
            self._fail(result, f"{type(err).__name__}: {err}")
            self._complete(plan.index, plan.item, result)
            progress.video_done(False)
            return
        events = self.finish_video(plan.item, result, vf, timings)
        self._complete(plan.index, plan.item, result, events)
        progress.video_done(result.status == "ok", plan.duration_s)

    def run_features(self, feature_list: str | Path, fps: float, dataset: str | None = None) -> dict[str, Any]:
        """Score precomputed features (a released feature set's list) without the videos.
        Frame counts are snippets x stride (the drop-aligned length); time uses ``fps``."""
        from vad.data.features import FeatureDataError, FeatureStore, read_feature_list

        if fps <= 0:
            raise JobError(f"--fps must be positive, got {fps}")
        if self.cfg.head.reference:
            raise JobError("--reference needs videos; with --features give a saved head (--head DIR) "
                           "or let each video's first part be its reference")
        try:
            videos = {v.video_id: v for v in read_feature_list(feature_list, dataset=dataset)}
        except FeatureDataError as err:
            raise JobError(str(err)) from None
        store = FeatureStore()

        def features_of(item: VideoItem) -> VideoFeatures:
            feats = store.all_crops(videos[item.video_id])
            return VideoFeatures(feats, feats.shape[1] * self.spec.stride, fps, "features", True)

        items = [VideoItem(path=v.paths[0], video_id=v.video_id) for v in videos.values()]
        self._start()
        bar = tqdm(total=len(items), desc="videos", unit="video", disable=not self.progress)
        for index, item in enumerate(items):
            self._complete(index, item, *self.score_video(item, features_of))
            bar.update(1)
        bar.close()
        return self.flush(finished=True)


def default_run_dir(root: str | Path) -> Path:
    """A new timestamped directory under ``root`` (suffixed when two runs start in one second)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate
