"""``vad score``: videos -> features (cached) -> head -> frame scores, events, plots.

This module orchestrates; the parts it composes each have one owner:

* the run directory's layout and formats: :mod:`vad.rundir`;
* head -> frame scores -> events: :func:`vad.scoring.score_video` (heads behind the one
  contract of :mod:`vad.heads.base`, events from :class:`vad.events.EventTracker`);
* output files: sinks (:mod:`vad.sinks`), the same ones a live monitor uses;
* decoding and extraction, spread by an executor: :mod:`pipelines.stages`,
  :mod:`pipelines.executors`.

A failing video never stops the job: it is retried ``pipeline.retries`` times, then becomes an
error record. ``summary.json`` and ``events.jsonl`` are rebuilt from the records atomically at
most every FLUSH_INTERVAL_S seconds and at the end, in input order, so a killed job leaves
valid outputs, and rerunning it into the same directory (``pipeline.resume``) skips complete
videos and ends with the same outputs as an uninterrupted run.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from vad.cache import FeatureCache, VideoFingerprint
from vad.clips import SnippetSpec
from vad.config import ScoreConfig, to_dict
from vad.events import EventRules, EventUpdate, detect_events_with, with_regions
from vad.features.extractor import FeatureError, FeatureExtractor, build_extractor
from vad.explain import EventExplainer, RuleSet, explain_all
from vad.heads import Head, HeadError, HeadScores, ReferenceFeatureHead, ReferenceHeadConfig, load_head
from vad.heads.base import read_head_meta
from vad.heads.scene import scene_head_from_config
from vad.io import FileSource, FolderSource, FrameSource, VideoError
from vad.rundir import RunDir
from vad.scoring import score_video
from vad.sinks import PlotSink, ScoreCSVSink, SinkSet, SourceMeta
from pipelines.executors import RayUnavailable, ensure_ray, iter_local, iter_ray
from pipelines.explain import (EXPLAIN_HEADS, ExplainSetupError, build_explainer, induce_rules, load_rules, ruler_config,
                               ruler_head, self_reference)
from pipelines.inputs import VideoItem, assign_ids, expand_inputs
from pipelines.ledger import RunLedger, VideoResult
from pipelines.progress import JobProgress
from pipelines.stages import (ChunkResult, VideoPlan, VideoSkipped, assemble, check_pipeline_config, plan_video,
                              resolve_executor)

logger = logging.getLogger(__name__)


class JobError(RuntimeError):
    """The job as a whole cannot run (bad configuration, unusable reference footage)."""


@dataclass
class VideoFeatures:
    features: np.ndarray  # (n_crops, n_snippets, dim)
    n_frames: int
    fps: float
    backend: str
    cache_hit: bool


HEAD_CHOICES = ("scene", "reference", *EXPLAIN_HEADS)  # head.type: what configured_head builds
FRAMES_HEADS = ("scene", *EXPLAIN_HEADS)  # configured heads that read frames (no feature extractor)


def configured_head(cfg: ScoreConfig, extractor: str | None = None, head_type: str | None = None,
                    cache_dir: Path | None = None) -> Head:
    """The (unfitted) head ``head:`` describes when no saved head is given: ``scene`` (frames),
    ``reference`` (features), or a training-free ``anomalyruler`` / ``eventvad`` head (frames,
    :mod:`vad.explain`). All take each video's start as reference until fitted."""
    h = cfg.head
    policy = self_reference(cfg)
    if (head_type or h.type) in EXPLAIN_HEADS:
        try:
            return ruler_head(cfg, head_type or h.type, cache_dir)
        except ExplainSetupError as err:
            raise HeadError(str(err)) from None
    if (head_type or h.type) == "scene":
        return scene_head_from_config(h.scene, h.calibration_quantile, policy)
    core = ReferenceHeadConfig(k=h.k, shrinkage=h.shrinkage, methods=list(h.methods),
                               calibration_quantile=h.calibration_quantile)
    return ReferenceFeatureHead(core, policy, extractor=extractor)


def validate(cfg: ScoreConfig) -> SnippetSpec:
    """Checks that the schema cannot express (choices, ranges); returns the snippet spec."""
    try:
        spec = SnippetSpec(cfg.snippets.length, cfg.snippets.stride, cfg.snippets.tail)
    except ValueError as err:
        raise JobError(f"snippets: {err}") from None
    if cfg.head.type not in HEAD_CHOICES:
        raise JobError(f"head.type {cfg.head.type!r} is not available (available: {', '.join(HEAD_CHOICES)})")
    if cfg.head.reference and cfg.head.load:
        raise JobError("give either head.reference (fit on footage) or head.load (a saved head), not both")
    try:
        if cfg.head.type in EXPLAIN_HEADS:
            ruler_config(cfg)  # the backend itself is built once, by the job
        else:
            configured_head(cfg)
        if cfg.explain.enabled:
            ruler_config(cfg)
            load_rules(cfg)
    except ValueError as err:  # includes HeadError (a bad head.scene key), ExplainSetupError
        raise JobError(f"{'explain' if isinstance(err, ExplainSetupError) else 'head'}: {err}") from None
    try:
        EventRules.from_config(cfg.events)
    except ValueError as err:
        raise JobError(f"events: {err}") from None
    try:
        check_pipeline_config(cfg)
    except ValueError as err:
        raise JobError(str(err)) from None
    if cfg.io.short_side is not None and cfg.io.short_side < cfg.features.crop_size:
        raise JobError(f"io.short_side ({cfg.io.short_side}) must be >= features.crop_size ({cfg.features.crop_size})")
    return spec


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
        self.precomputed = precomputed
        self.report_path: Path | None = None  # report.html once the job wrote it
        self.extractor: FeatureExtractor | None = None
        if extract_only and not cfg.cache.enabled:
            raise JobError("feature extraction writes into the feature cache; do not disable it (--no-cache)")
        if not precomputed and not (self.frames_head_given(cfg) and not extract_only):
            try:
                self.extractor = build_extractor(cfg.features, short_side=cfg.io.short_side)
            except FeatureError as err:
                raise JobError(str(err)) from None
        self.cache = FeatureCache(cfg.cache.root) if cfg.cache.enabled else None
        self.executor = resolve_executor(cfg)
        self.run_dir = RunDir(self.out_dir)
        self.rules = EventRules.from_config(cfg.events)
        self.head: Head | None = None
        self.explainer: EventExplainer | None = None
        self.explain_rules: RuleSet | None = None  # job-wide rules (None: each video's own start)
        self.ground_truth_dir = Path(cfg.output.ground_truth) if cfg.output.ground_truth else None
        self.ledger = RunLedger(
            self.run_dir, self._settings, with_events=not extract_only, still_valid=self._cache_complete,
            summary_extra=self._summary_extra)
        self._time = self.ledger.time

    @staticmethod
    def frames_head_given(cfg: ScoreConfig) -> bool:
        """Whether the head reads raw frames (no feature extractor needed): a saved frames head
        (``head.load``), or the configured scene head."""
        if not cfg.head.load:
            return cfg.head.type in FRAMES_HEADS
        try:
            return (read_head_meta(cfg.head.load).get("consumes") or {}).get("kind") == "frames"
        except HeadError as err:
            raise JobError(f"cannot load head from {cfg.head.load}: {err}") from None

    def _settings(self) -> dict[str, Any]:
        """The job-wide part of every record key: what a video's outputs depend on besides the file."""
        cfg = to_dict(self.cfg)
        return {
            "extractor": self.extractor.spec.key if self.extractor else None,
            "snippets": asdict(self.spec),
            "head": cfg["head"],
            "events": cfg["events"],
            "plots": self.cfg.output.plots,
            "ground_truth": self.cfg.output.ground_truth,
            "extract_only": self.extract_only,
        }

    def _summary_extra(self) -> dict[str, Any]:
        x = self.extractor
        explain = {}
        if self.cfg.explain.enabled and not self.extract_only:
            # counted from the event records, so a resumed run counts its earlier videos too
            records = [e for evs in self.ledger.video_events.values() for e in evs]
            explain = {"explain": {"explained": sum("explanation" in e for e in records),
                                   "errors": sum("explanation_error" in e for e in records)}}
        return {"executor": self.executor, **explain,
                "extractor": None if x is None else {
            "name": x.spec.name, "key": x.spec.key, "weights": str(x.weights_path),
            "engine": getattr(x, "engine_name", "torch"), "precision": self.cfg.features.precision}}

    def _cache_complete(self, item: VideoItem) -> bool:
        """A resumed video needs its cache entry too, so outputs and cache stay complete together."""
        if self.cache is None or self.extractor is None:
            return True
        try:
            fingerprint = VideoFingerprint.of(item.path)
        except OSError:
            return False  # the video is gone: it fails again, with its reason
        return self.cache.has(item.video_id, fingerprint, self.spec, self.extractor.spec)

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

    # -- the head ---------------------------------------------------------------------------
    def prepare_head(self) -> None:
        """Load a saved head, or build the configured one and fit it on the user's reference
        footage when given (once per job). A head that needs fitting and has no reference
        fits itself on each video's start (see :class:`vad.heads.ReferenceFeatureHead`)."""
        h = self.cfg.head
        if self.extract_only:
            return
        extractor = self.extractor.spec.name if self.extractor else None
        if h.load:
            try:
                self.head = load_head(h.load, str(self.extractor.device) if self.extractor else "cpu")
            except HeadError as err:
                raise JobError(f"cannot load head from {h.load}: {err}") from None
            if self.extractor is not None and self.head.input.extractor not in (None, extractor):
                raise JobError(f"the head in {h.load} takes {self.head.input.extractor} features, "
                               f"but features.name is {extractor}")
            if h.score_mode:
                try:
                    self.head = self.head.with_score_mode(h.score_mode)
                except HeadError as err:
                    raise JobError(f"head.score_mode: {err}") from None
            return
        if h.score_mode:
            raise JobError("head.score_mode applies to a saved frame-prediction head (--head DIR)")
        head_type = h.type
        if self.precomputed and h.type == "scene":
            logger.info("--features: scoring with the reference head (the scene head reads frames)")
            head_type = "reference"
        try:
            self.head = configured_head(self.cfg, extractor, head_type, self.explain_cache)
        except HeadError as err:
            raise JobError(f"head: {err}") from None
        if not h.reference:
            return
        items = assign_ids(expand_inputs([h.reference], self.cfg.io.extensions))
        if not items:
            raise JobError(f"reference {h.reference} holds no videos")
        if self.head.input.kind == "frames":
            fit_frames_head(self.head, items, self.cfg, self.progress)
        else:
            bank, problems = [], []
            for item in tqdm(items, desc="reference", unit="video", disable=not self.progress):
                try:
                    bank.append(self.video_features(item).features)
                except (VideoError, VideoSkipped, ValueError) as err:
                    problems.append(f"{item.path}: {err}")
            for p in problems:
                logger.warning("reference video skipped: %s", p)
            if not bank:
                raise JobError("no usable reference video: " + "; ".join(problems))
            try:
                self.head.fit(bank)
            except ValueError as err:
                raise JobError(f"cannot fit the reference head: {err}") from None
        if h.save:
            self.head.save(self.run_dir.head_dir)

    # -- explanations -----------------------------------------------------------------------
    @property
    def explain_cache(self) -> Path:
        return self.run_dir.explain_cache_dir

    def prepare_explainer(self) -> None:
        """With ``explain.enabled``: the explainer and the camera's rules (``explain.rules_file``,
        a fitted anomalyruler/eventvad head's own, or induced from ``--reference``; without any,
        each video's own start, like the self-fitted heads)."""
        cfg = self.cfg
        if not cfg.explain.enabled or self.extract_only:
            return
        try:
            rules = load_rules(cfg)
            if rules is None:
                rules = getattr(self.head, "rules", None)
            if rules is None:
                try:
                    rules = reference_rules(cfg, self.explain_cache, self.progress)
                except HeadError as err:  # e.g. the backend is down: events are still scored and written
                    logger.warning("no rules from the reference (%s): explanations give figures only", err)
            self.explainer = build_explainer(cfg, rules, self.explain_cache)
        except (ExplainSetupError, HeadError) as err:
            raise JobError(f"explain: {err}") from None
        self.explain_rules = rules
        if rules is not None:
            rules.save(self.run_dir.rules_path)
            logger.info("explanations: %d anomaly rules (%s)", len(rules.anomaly), self.run_dir.rules_path)

    def read_frames(self, item: VideoItem, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of a video (decoded again: the scoring pass keeps no frames)."""
        source, _ = open_item_source(item, self.cfg, stop=stop, start=start)
        with source:
            blocks = [frames for _, frames in source.blocks()]
        if not blocks:
            raise VideoSkipped(f"no frames in [{start}, {stop})")
        return np.concatenate(blocks)

    def explain_events(self, item: VideoItem, events: list[Any], fps: float, n_frames: int,
                       scored: HeadScores | None) -> list[Any]:
        """``events`` with explanations (unchanged without ``--explain``)."""
        if self.explainer is None or not events:
            return events
        if self.explain_rules is None:
            n_ref = self_reference(self.cfg).frames(fps, n_frames, 4 * self.cfg.explain.snippet)
            try:
                self.explainer.rules = induce_rules(self.cfg, [[self.read_frames(item, 0, n_ref)]], fps,
                                                    self.explain_cache)
            except (HeadError, VideoError, VideoSkipped) as err:
                self.explainer.rules = None
                logger.warning("%s: no rules from the video's start (%s): explanations give figures only",
                               item.video_id, err)
        contexts = None
        if scored is not None and scored.channels is not None and scored.channel_names:
            names = scored.channel_names
            contexts = [{"channel": names[int(scored.channels[min(e.peak_frame, len(scored.channels) - 1)])]}
                        for e in events]
        return explain_all(self.explainer, events, lambda a, b: self.read_frames(item, a, b), fps, n_frames,
                           item.video_id, contexts)

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
        events = []
        try:
            result.n_frames, result.fps, result.backend = vf.n_frames, vf.fps, vf.backend
            result.duration_s = vf.n_frames / vf.fps
            result.n_snippets, result.cache_hit = int(vf.features.shape[1]), vf.cache_hit
            if not self.extract_only:
                scored = score_video(self.head, vf.features, n_frames=vf.n_frames, fps=vf.fps, spec=self.spec,
                                     rules=self.rules, source_id=item.video_id)
                events = self.explain_events(item, scored.events, vf.fps, vf.n_frames, None)
                t1 = time.perf_counter()
                self.write_video_outputs(item, result, scored.frame_scores, events, vf.fps, vf.n_frames,
                                         scored.reference_frames)
                t2 = time.perf_counter()
                timings = {**timings, "head_s": round(t1 - t0, 4), "write_s": round(t2 - t1, 4)}
                self._time("head_s", t1 - t0)
                self._time("write_s", t2 - t1)
            result.n_events = len(events)
        except (VideoError, VideoSkipped) as err:
            self._fail(result, str(err))
        except (ValueError, OSError) as err:  # includes HeadError (wrong features for the head)
            logger.debug("video %s failed", item.path, exc_info=True)
            self._fail(result, str(err) if isinstance(err, HeadError) else f"{type(err).__name__}: {err}")
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

    def _sinks(self) -> SinkSet:
        sinks = [ScoreCSVSink(self.run_dir)]
        if self.cfg.output.plots:
            sinks.append(PlotSink(self.run_dir, threshold=self.cfg.events.threshold))
        return SinkSet(sinks)

    def write_video_outputs(self, item: VideoItem, result: VideoResult, frame_scores: np.ndarray,
                            events: Sequence[Any], fps: float, n_frames: int, reference_frames: int | None) -> None:
        """Every output file of the video, through the sinks; a sink that failed fails the video
        (its outputs would be incomplete)."""
        gt = None
        if self.ground_truth_dir is not None:
            gt_path = self.ground_truth_dir / f"{item.video_id}.npy"
            if gt_path.is_file():
                gt = np.load(gt_path, allow_pickle=False)
        vid = item.video_id
        result.reference_frames = reference_frames
        with self._sinks() as sinks:
            sinks.begin(SourceMeta(vid, fps, n_frames, title=f"{vid} ({n_frames} frames, {fps:g} fps)"))
            sinks.scores(vid, 0, frame_scores)
            for ev in events:
                sinks.event(EventUpdate("end", ev))
            outputs = sinks.end(vid, {"ground_truth": gt, "reference_frames": reference_frames})
        if sinks.errors:
            raise OSError("; ".join(f"writing {e.sink} failed: {e.message}" for e in sinks.errors))
        result.outputs.update({name: self.run_dir.relative(path) for name, path in outputs.items()})

    def _start(self) -> None:
        self.run_dir.create()
        self.run_dir.write_config(to_dict(self.cfg))
        self.prepare_head()
        self.prepare_explainer()
        self.ledger.flush(finished=False)

    def load_model(self, items: Sequence[VideoItem] = ()) -> None:
        """Load the extractor's model (converting it for its engine) before any video is decoded:
        weights that cannot be loaded are one job error, not a failure of every video. For int8
        without ``features.calibration`` the job's own videos calibrate it."""
        if self.extractor is None:
            return
        f = self.cfg.features
        if f.precision == "int8" and not f.calibration and items:
            # up to 8 of the job's videos, spread over the inputs: this camera's own footage
            picks = [items[int(i)] for i in np.unique(np.linspace(0, len(items) - 1, num=min(8, len(items))).astype(int))]
            listing = self.out_dir / "calibration.list"
            self.run_dir.create()
            listing.write_text("".join(f"{Path(it.path).resolve()}\n" for it in picks))
            f.calibration = str(listing)
        t0 = time.perf_counter()
        try:
            self.extractor.load()
        except FeatureError as err:
            raise JobError(str(err)) from None
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
            raise JobError(f"cannot load the {f.name} model ({self.extractor.weights_path}): "
                           f"{type(err).__name__}: {err}") from None
        self._time("model_load_s", time.perf_counter() - t0)

    def run(self, inputs: Sequence[str | Path]) -> dict[str, Any]:
        items = assign_ids(expand_inputs(inputs, self.cfg.io.extensions))
        if not items:
            raise JobError(f"no videos found in {list(map(str, inputs))}")
        self.load_model(items)
        self._start()
        progress = JobProgress(len(items), self.progress)
        try:
            if self.head is not None and self.head.input.kind == "frames":
                self._score_frames(items, progress)
            else:
                plans = self._prepare(items, progress)
                self._extract_all(plans, progress)
        finally:
            progress.close()
        summary = self.ledger.flush(finished=True)
        self.write_report()
        return summary

    def write_report(self) -> Path | None:
        """``<run>/report.html`` at the end of the job (``output.report``). A report that cannot be
        made is logged and never fails the job: the scores and events are already written."""
        if not self.cfg.output.report or self.extract_only:
            return None
        from vad.report import write_report

        try:
            self.report_path = write_report(self.run_dir.root, progress=self.progress).index
        except Exception as err:  # noqa: BLE001 - the report is a view of outputs that are safe on disk
            logger.warning("report not written (vad report %s makes it later): %s", self.run_dir.root, err,
                           exc_info=logger.isEnabledFor(logging.DEBUG))
        return self.report_path

    def _score_frames(self, items: list[VideoItem], progress: JobProgress) -> None:
        """A head that reads raw frames: each video is decoded front to back in this process
        (no feature cache) and scored as it decodes."""
        if self.executor == "ray":
            logger.info("the %s head reads frames: scoring in this process (the Ray executor extracts "
                        "features only)", self.head.type_name)
        for index, item in enumerate(items):
            if self.cfg.pipeline.resume and (found := self.ledger.resume(index, item)) is not None:
                progress.video_done(True, found.duration_s or 0.0)
                continue
            result = VideoResult(video=str(item.path), video_id=item.video_id)
            t0 = time.perf_counter()
            try:
                head, ref_frames = self.head, None
                source, backend = open_item_source(item, self.cfg)
                with source:
                    n, fps = source.n_frames, source.fps
                    result.n_frames, result.fps, result.backend = n, fps, backend
                    result.duration_s = n / fps
                    if head.needs_fit and not head.fitted:
                        # no --reference: the video's own start is its reference
                        ref_frames = head.reference_frames(n, fps)
                        first, _ = open_item_source(item, self.cfg, stop=ref_frames)
                        with first:
                            head = head.self_fitted(frames for _, frames in first.blocks())
                    progress.add_snippets(n)

                    def blocks() -> Iterator[np.ndarray]:
                        for _, frames in source.blocks():
                            progress.advance(len(frames))
                            yield frames

                    scored = head.score_frame_blocks(blocks())
                scores = scored.scores
                t1 = time.perf_counter()
                events = detect_events_with(self.rules, scores, fps, source_id=item.video_id)
                if scored.regions is not None:
                    events = with_regions(events, scored.regions)
                events = self.explain_events(item, events, fps, n, scored)
                self.write_video_outputs(item, result, scores, events, fps, n, ref_frames)
                t2 = time.perf_counter()
                result.n_events = len(events)
                result.timings = {"head_s": round(t1 - t0, 4), "write_s": round(t2 - t1, 4),
                                  "busy_s": round(t2 - t0, 4)}
                self._time("head_s", t1 - t0)
                self._time("write_s", t2 - t1)
                records = [{"video_id": item.video_id, **e.to_dict()} for e in events]
            except (VideoError, VideoSkipped, HeadError) as err:
                self._fail(result, str(err))
                records = []
            except (ValueError, OSError) as err:
                self._fail(result, f"{type(err).__name__}: {err}")
                records = []
            self.ledger.complete(index, item, result, records)
            progress.video_done(result.status == "ok", result.duration_s or 0.0)

    def _prepare(self, items: list[VideoItem], progress: JobProgress) -> list[VideoPlan]:
        """Resume complete videos, score cache hits, probe the rest; returns what needs extraction."""
        t0 = time.perf_counter()
        plans = []
        for index, item in enumerate(items):
            if self.cfg.pipeline.resume:
                found = self.ledger.resume(index, item)
                if found is not None:
                    progress.video_done(True, found.duration_s or 0.0)
                    continue
            result = VideoResult(video=str(item.path), video_id=item.video_id)
            try:
                plan = plan_video(index, item, self.spec)
            except (VideoError, VideoSkipped) as err:
                self._fail(result, str(err))
                self.ledger.complete(index, item, result)
                progress.video_done(False)
                continue
            cached = self._cached(plan)
            if cached is not None:
                self.ledger.complete(index, item, result, self.finish_video(item, result, cached, {}))
                progress.video_done(result.status == "ok", plan.duration_s)
                continue
            plans.append(plan)
            progress.add_snippets(plan.n_snippets)
        self._time("plan_s", time.perf_counter() - t0)
        return plans

    def _stream(self, plans: list[VideoPlan]) -> Iterator[ChunkResult]:
        if self.executor == "local":
            return iter_local(plans, self.cfg, self.spec, self.extractor)
        return iter_ray(plans, self.cfg, self.spec, self.extractor.n_crops, self.extractor.device.type)

    def _extract_all(self, plans: list[VideoPlan], progress: JobProgress) -> None:
        """Run the executor, finishing videos as their last chunk arrives; retry failed videos."""
        if not plans:
            return
        started_ray = False
        if self.executor == "ray":
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
                    self.ledger.complete(plan.index, plan.item, result)
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

    def _extract_pass(self, plans: list[VideoPlan], progress: JobProgress, attempt: int
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
            logger.error("the %s executor failed", self.executor, exc_info=True)
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
                 progress: JobProgress, attempt: int, t0: float) -> None:
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

    def _finish_extracted(self, state: _Pending, progress: JobProgress, attempt: int) -> None:
        plan = state.plan
        timings = {k: round(sum(c.timings.get(k, 0.0) for c in state.chunks), 4) for k in ("decode_s", "extract_s")}
        result = VideoResult(video=str(plan.item.path), video_id=plan.item.video_id, attempts=attempt + 1,
                             nodes=sorted({n for c in state.chunks for n in c.nodes}))
        try:
            vf = self._assembled(state)
        except (ValueError, OSError) as err:
            self._fail(result, f"{type(err).__name__}: {err}")
            self.ledger.complete(plan.index, plan.item, result)
            progress.video_done(False)
            return
        events = self.finish_video(plan.item, result, vf, timings)
        self.ledger.complete(plan.index, plan.item, result, events)
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
            self.ledger.complete(index, item, *self.score_video(item, features_of))
            bar.update(1)
        bar.close()
        summary = self.ledger.flush(finished=True)
        self.write_report()
        return summary


def open_item_source(item: VideoItem, cfg: ScoreConfig, stop: int | None = None,
                     start: int = 0) -> tuple[FrameSource, str]:
    """A video file or a folder of frame images as a frame source (frames [start, stop)), and
    its backend name."""
    if item.path.is_dir():
        source: FrameSource = FolderSource(item.path, cfg.io.frame_folder_fps, block=64,
                                           source_id=item.video_id, stop=stop, start=start)
        return source, "frames"
    if item.path.is_file():
        source = FileSource(item.path, backend=cfg.io.backend, fallback=cfg.io.fallback,
                            block=64, source_id=item.video_id, stop=stop, start=start)
        return source, source.reader.info.backend
    raise VideoSkipped(f"no such file: {item.path}")


def reference_videos(items: Sequence[VideoItem], cfg: ScoreConfig, problems: list[str],
                     progress: bool = True) -> Iterator[Iterator[np.ndarray]]:
    """Per reference video, its blocks of frames (one pass each); unreadable ones go to ``problems``."""
    for item in tqdm(items, desc="reference", unit="video", disable=not progress):
        try:
            source, _ = open_item_source(item, cfg)
        except (VideoError, VideoSkipped) as err:
            problems.append(f"{item.path}: {err}")
            continue
        with source:
            yield (frames for _, frames in source.blocks())


def reference_rules(cfg: ScoreConfig, cache_dir: Path | None, progress: bool = True) -> RuleSet | None:
    """Rules induced from ``head.reference`` footage (None without one)."""
    if not cfg.head.reference:
        return None
    items = assign_ids(expand_inputs([cfg.head.reference], cfg.io.extensions))
    problems: list[str] = []
    rules = induce_rules(cfg, reference_videos(items, cfg, problems, progress), cfg.io.frame_folder_fps, cache_dir)
    for p in problems:
        logger.warning("reference video skipped for the rules: %s", p)
    return rules


def fit_frames_head(head: Head, items: Sequence[VideoItem], cfg: ScoreConfig, progress: bool = True) -> None:
    """Fit a frames head (scene, anomalyruler, eventvad) on reference videos' frames (one pass
    each); JobError when it cannot."""
    problems: list[str] = []
    try:
        head.fit_frames(reference_videos(items, cfg, problems, progress))
    except VideoError as err:
        raise JobError(f"cannot read the reference footage: {err}") from None
    except HeadError as err:
        raise JobError(f"cannot fit the {head.type_name} head: {err}"
                       + (f" (skipped: {'; '.join(problems)})" if problems else "")) from None
    for p in problems:
        logger.warning("reference video skipped: %s", p)


def default_run_dir(root: str | Path) -> Path:
    """A new timestamped directory under ``root`` (suffixed when two runs start in one second)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    candidate, n = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate
