"""``vad score``: videos -> features (cached) -> head -> frame scores, events, plots.

Run directory layout::

    <out>/summary.json          one entry per input video (status ok|error, reason, timings)
    <out>/scores/<id>.csv       frame,time_s,score - one row for every frame of the video
    <out>/events.jsonl          one JSON object per detected event (video_id + Event fields)
    <out>/plots/<id>.png        score over time, events, reference part, ground truth
    <out>/config.yaml           the resolved configuration
    <out>/head/                 the fitted head when --reference was given (reusable: --head)
    <out>/run.log               the job's log, including tracebacks of unexpected failures

A failing video never stops the job: it becomes an error record. ``summary.json`` and
``events.jsonl`` are rewritten atomically at most every FLUSH_INTERVAL_S seconds and at the
end, so a killed job leaves valid outputs; every finished video's scores CSV is already on disk.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

import vad
from vad.cache import FeatureCache, VideoFingerprint
from vad.clips import SnippetSpec, expand_snippet_scores, iter_snippets, snippet_ranges
from vad.config import ScoreConfig, to_dict
from vad.events import Event, detect_events
from vad.features.extractor import FeatureError, FeatureExtractor, build_extractor
from vad.fsutil import write_json_atomic, write_text_atomic
from vad.heads import ReferenceHead, ReferenceHeadConfig
from vad.heads.base import load_head
from vad.io import VideoError, open_video
from vad.viz import plot_scores
from pipelines.inputs import VideoItem, assign_ids, expand_inputs
from pipelines.train import score_snippets

logger = logging.getLogger(__name__)


class JobError(RuntimeError):
    """The job as a whole cannot run (bad configuration, unusable reference footage)."""


class VideoSkipped(Exception):
    """An expected, explainable per-video failure (the message is the reason shown to users)."""


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
    if cfg.io.short_side is not None and cfg.io.short_side < cfg.features.crop_size:
        raise JobError(f"io.short_side ({cfg.io.short_side}) must be >= features.crop_size ({cfg.features.crop_size})")
    return spec


class ScoreJob:
    """One ``vad score`` run writing into ``out_dir``."""

    def __init__(self, cfg: ScoreConfig, out_dir: str | Path, *, progress: bool = True,
                 precomputed: bool = False) -> None:
        """``precomputed``: score feature files (``run_features``), so no extractor is built."""
        self.cfg = cfg
        self.spec = validate(cfg)
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.extractor: FeatureExtractor | None = None
        if not precomputed:
            try:
                self.extractor = build_extractor(cfg.features, short_side=cfg.io.short_side)
            except FeatureError as err:
                raise JobError(str(err)) from None
        self.cache = FeatureCache(cfg.cache.root) if cfg.cache.enabled else None
        self.results: list[VideoResult] = []
        self.events: list[dict[str, Any]] = []
        self.shared_head: ReferenceHead | None = None
        self.trained_head: torch.nn.Module | None = None
        self._last_flush = -float("inf")
        self.ground_truth_dir = Path(cfg.output.ground_truth) if cfg.output.ground_truth else None

    # -- features ---------------------------------------------------------------------------
    def video_features(self, item: VideoItem, bar_position: int = 1) -> VideoFeatures:
        path = item.path
        if not path.exists():
            raise VideoSkipped(f"no such file: {path}")
        fingerprint = VideoFingerprint.of(path) if path.is_file() else None
        extractor_spec = self.extractor.spec
        if self.cache is not None and fingerprint is not None:
            entry = self.cache.load(item.video_id, fingerprint, self.spec, extractor_spec)
            if entry is not None:
                m = entry.manifest
                return VideoFeatures(entry.features, m["n_frames"], m["fps"], m.get("backend", "cache"), True)
        with open_video(path, self.cfg.io.backend, short_side=self.cfg.io.short_side,
                        fallback=self.cfg.io.fallback) as reader:
            info = reader.info
            ranges = snippet_ranges(info.n_frames, self.spec)
            if not ranges:
                raise VideoSkipped(
                    f"video has {info.n_frames} frames, fewer than one {self.spec.length}-frame snippet "
                    "(snippets.tail=pad scores such videos)"
                )
            bar = tqdm(total=len(ranges), desc=f"  {item.video_id}", unit="snip", leave=False,
                       position=bar_position, disable=not self.progress)
            try:
                feats = self.extractor.extract(iter_snippets(reader, self.spec), on_snippet=bar.update)
            finally:
                bar.close()
        if self.cache is not None and fingerprint is not None:
            self.cache.save(item.video_id, fingerprint, self.spec, extractor_spec, feats,
                            fps=info.fps, n_frames=info.n_frames, extra={"backend": info.backend})
        return VideoFeatures(feats, info.n_frames, info.fps, info.backend, False)

    # -- heads ------------------------------------------------------------------------------
    def prepare_shared_head(self) -> None:
        """Load a saved head, or fit one on the user's reference footage (once per job)."""
        h = self.cfg.head
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
    def score_video(self, item: VideoItem, get_features: Callable[[VideoItem], VideoFeatures] | None = None) -> VideoResult:
        """Score one video; ``get_features`` defaults to decoding + extraction (with the cache)."""
        result = VideoResult(video=str(item.path), video_id=item.video_id)
        t0 = time.perf_counter()
        try:
            vf = (get_features or self.video_features)(item)
            t1 = time.perf_counter()
            result.n_frames, result.fps, result.backend = vf.n_frames, vf.fps, vf.backend
            result.duration_s = vf.n_frames / vf.fps
            result.n_snippets, result.cache_hit = int(vf.features.shape[1]), vf.cache_hit
            snippet_scores, n_ref = self.score_features(vf.features, vf.fps)
            frame_scores = expand_snippet_scores(snippet_scores, vf.n_frames, self.spec)
            ev_cfg = self.cfg.events
            events = detect_events(
                frame_scores, vf.fps, ev_cfg.threshold, low_threshold=ev_cfg.low_threshold,
                min_duration_s=ev_cfg.min_duration_s, merge_gap_s=ev_cfg.merge_gap_s,
                smoothing_s=ev_cfg.smoothing_s,
            )
            t2 = time.perf_counter()
            self.write_video_outputs(item, result, frame_scores, events, vf, n_ref)
            t3 = time.perf_counter()
            result.n_events = len(events)
            result.timings = {
                "features_s": round(t1 - t0, 4),
                "head_s": round(t2 - t1, 4),
                "write_s": round(t3 - t2, 4),
                "total_s": round(t3 - t0, 4),
                "realtime_factor": round(result.duration_s / max(t3 - t0, 1e-9), 3),
            }
            self.events.extend({"video_id": item.video_id, **e.to_dict()} for e in events)
        except (VideoError, VideoSkipped) as err:
            self._fail(result, str(err))
        except (ValueError, OSError) as err:  # includes FeatureDataError (bad feature files)
            logger.debug("video %s failed", item.path, exc_info=True)
            self._fail(result, f"{type(err).__name__}: {err}")
        except Exception as err:  # noqa: BLE001 - one bad video must never stop the batch
            logger.error("unexpected failure on %s", item.path, exc_info=True)
            self._fail(result, f"unexpected {type(err).__name__}: {err}")
        result.timings.setdefault("total_s", round(time.perf_counter() - t0, 4))
        return result

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

    # -- the job ----------------------------------------------------------------------------
    def summary(self, started: float, finished: bool) -> dict[str, Any]:
        ok = [r for r in self.results if r.status == "ok"]
        failed = [r for r in self.results if r.status != "ok"]
        wall = time.perf_counter() - started
        video_s = sum(r.duration_s or 0 for r in ok)
        return {
            "vad_version": vad.__version__,
            "finished": finished,
            "n_videos": len(self.results),
            "n_ok": len(ok),
            "n_failed": len(failed),
            "failed": [{"video": r.video, "error": r.error} for r in failed],
            "n_events": len(self.events),
            "wall_s": round(wall, 3),
            "video_s": round(video_s, 3),
            "realtime_factor": round(video_s / wall, 3) if wall > 0 else None,
            "extractor": None if self.extractor is None else {
                "name": self.extractor.spec.name, "key": self.extractor.spec.key,
                "weights": str(self.extractor.weights_path)},
            "videos": [asdict(r) for r in self.results],
        }

    FLUSH_INTERVAL_S = 2.0  # bounds rewriting summary/events: O(videos) per flush, not per video

    def flush(self, started: float, finished: bool, *, force: bool = True) -> dict[str, Any] | None:
        """Rewrite summary.json and events.jsonl atomically; with ``force=False`` only if the last
        write is older than FLUSH_INTERVAL_S (an archive of 10k videos would otherwise rewrite
        its whole summary 10k times). Per-video score files are written as each video finishes."""
        now = time.perf_counter()
        if not force and now - self._last_flush < self.FLUSH_INTERVAL_S:
            return None
        self._last_flush = now
        summary = self.summary(started, finished)
        write_json_atomic(self.out_dir / "summary.json", summary)
        write_text_atomic(self.out_dir / "events.jsonl",
                          "".join(json.dumps(e) + "\n" for e in self.events))
        return summary

    def run(self, inputs: Sequence[str | Path]) -> dict[str, Any]:
        items = assign_ids(expand_inputs(inputs, self.cfg.io.extensions))
        if not items:
            raise JobError(f"no videos found in {list(map(str, inputs))}")
        return self._run(items, self.video_features)

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
        return self._run(items, features_of)

    def _run(self, items: list[VideoItem], get_features: Callable[[VideoItem], VideoFeatures]) -> dict[str, Any]:
        started = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out_dir / "config.yaml", yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        self.prepare_shared_head()
        self.flush(started, finished=False)
        bar = tqdm(total=len(items), desc="videos", unit="video", disable=not self.progress, position=0)
        for item in items:
            result = self.score_video(item, get_features)
            self.results.append(result)
            n_failed = sum(r.status != "ok" for r in self.results)
            bar.set_postfix(ok=len(self.results) - n_failed, failed=n_failed, refresh=False)
            bar.update(1)
            self.flush(started, finished=False, force=False)
        bar.close()
        return self.flush(started, finished=True)


def default_run_dir(root: str | Path) -> Path:
    """A new timestamped directory under ``root`` (suffixed when two runs start in one second)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate
