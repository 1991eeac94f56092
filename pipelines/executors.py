"""Executors: turn video plans into a stream of :class:`ChunkResult` (features per chunk).

``local``  one process. A decode thread reads each video front to back (a fresh reader per
           segment bounds decoder memory) and keeps at most
           ``pipeline.prefetch_chunks`` chunks ahead of the extractor in a bounded queue, so
           decoding overlaps inference (decoders release the GIL) and memory stays bounded.
``ray``    Ray Data. Segments of videos -> decode tasks on CPUs (each yields chunks as it goes)
           -> an actor pool of extractors (``ActorPoolStrategy``; CPU threads or a GPU share
           each) -> results streamed back to the driver, which reassembles videos in order.
           Ray is started for the job unless ``pipeline.ray_address`` names a running cluster.

Both yield chunks in no particular order across videos; the job reassembles them. Neither
raises for a bad video: failures come back as ChunkResults with ``error`` set. A chunk lost to
a crashed worker is simply missing from the stream; the job notices the incomplete video.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vad.clips import SnippetSpec
from vad.config import ScoreConfig
from vad.features.extractor import FeatureExtractor, build_extractor
from pipelines.stages import ChunkResult, Segment, VideoPlan, decode_segment, extract_chunk

logger = logging.getLogger(__name__)

_DONE = object()


def _chunk_result(plan_index: int, video_id: str, start: int, n: int, **kw: Any) -> ChunkResult:
    return ChunkResult(video_index=plan_index, video_id=video_id, start=start, n=n, **kw)


# ----------------------------------------------------------------------------------------------
# local
# ----------------------------------------------------------------------------------------------


def iter_local(
    plans: Sequence[VideoPlan], cfg: ScoreConfig, spec: SnippetSpec, extractor: FeatureExtractor
) -> Iterator[ChunkResult]:
    """Decode in a background thread, extract in this one; yields chunks video by video.
    ``pipeline.prefetch_chunks = 0`` decodes inline instead (no overlap)."""
    if cfg.pipeline.prefetch_chunks == 0:
        yield from _iter_local_inline(plans, cfg, spec, extractor)
        return
    chunks: queue.Queue = queue.Queue(maxsize=cfg.pipeline.prefetch_chunks)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for plan in plans:
                # Segment by segment, as the Ray executor does: a fresh reader per segment keeps
                # decoder buffers bounded however long the video is.
                for segment in plan.segments(cfg.pipeline.segment_snippets):
                    failed = False
                    for out in decode_segment(segment, cfg, spec):
                        if not put((plan, *out)):
                            return
                        failed = out[4] is not None
                        if failed:  # error: the rest of this video is abandoned
                            break
                    if failed:
                        break
        except BaseException as err:  # noqa: BLE001 - surface producer bugs in the consumer
            put(err)
        put(_DONE)

    thread = threading.Thread(target=produce, name="vad-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield _extracted(extractor, *item)
    finally:
        stop.set()
        thread.join(timeout=30)


def _iter_local_inline(
    plans: Sequence[VideoPlan], cfg: ScoreConfig, spec: SnippetSpec, extractor: FeatureExtractor
) -> Iterator[ChunkResult]:
    for plan in plans:
        for segment in plan.segments(cfg.pipeline.segment_snippets):
            for out in decode_segment(segment, cfg, spec):
                result = _extracted(extractor, plan, *out)
                yield result
                if result.error:
                    break
            else:
                continue
            break


def _extracted(extractor: FeatureExtractor, plan: VideoPlan, start: int, views: np.ndarray | None,
               backend: str, decode_s: float, error: str | None, permanent: bool) -> ChunkResult:
    """A decoded chunk (or its decode error) -> its features (or the error)."""
    if error is not None:
        return _chunk_result(plan.index, plan.item.video_id, start, plan.n_snippets - start,
                             error=error, permanent=permanent, backend=backend)
    try:
        feats, extract_s = extract_chunk(extractor, views)
    except Exception as err:  # noqa: BLE001 - e.g. CUDA out of memory on one chunk
        logger.debug("extraction failed on %s", plan.item.path, exc_info=True)
        return _chunk_result(plan.index, plan.item.video_id, start, len(views),
                             error=f"extraction failed: {type(err).__name__}: {err}", backend=backend)
    return _chunk_result(plan.index, plan.item.video_id, start, len(views), features=feats,
                         backend=backend, timings={"decode_s": decode_s, "extract_s": extract_s})


# ----------------------------------------------------------------------------------------------
# ray
# ----------------------------------------------------------------------------------------------


def _row(segment: Segment, start: int, views: np.ndarray | None, backend: str, decode_s: float,
         error: str | None, permanent: bool, n_crops: int) -> dict[str, np.ndarray]:
    n = len(views) if views is not None else segment.stop - start
    if views is None:
        views = np.zeros((0, n_crops, 1, 1, 1, 3), dtype=np.uint8)
    return {
        "video_index": np.array([segment.video_index]),
        "video_id": np.array([segment.video_id]),
        "start": np.array([start]),
        "n": np.array([n]),
        "views": views[None],
        "backend": np.array([backend]),
        "decode_s": np.array([decode_s]),
        "error": np.array([error or ""]),
        "permanent": np.array([permanent]),
        "decode_node": np.array([_node_id()]),
    }


def _node_id() -> str:
    """The Ray node this runs on (recorded per chunk, so a job shows where its work ran)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _decode_batch(batch: dict[str, np.ndarray], cfg: ScoreConfig, spec: SnippetSpec,
                  n_crops: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task: one segment in, its chunks out (yielded as decoded, not all at once)."""
    for i in range(len(batch["video_index"])):
        segment = Segment(int(batch["video_index"][i]), str(batch["video_id"][i]), str(batch["path"][i]),
                          int(batch["start"][i]), int(batch["stop"][i]))
        for start, views, backend, decode_s, error, permanent in decode_segment(segment, cfg, spec):
            yield _row(segment, start, views, backend, decode_s, error, permanent, n_crops)


class _ExtractActor:
    """Ray Data actor: holds one extractor (model loaded once) and its own torch thread count."""

    def __init__(self, cfg: ScoreConfig, threads: int) -> None:
        # Ray sets OMP_NUM_THREADS=1 in workers; torch must be told how many threads it owns.
        torch.set_num_threads(threads)
        self.extractor = build_extractor(cfg.features, short_side=cfg.io.short_side)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "views"}
        feats, extract_s, errors = [], [], list(batch["error"])
        for i, views in enumerate(batch["views"]):
            if errors[i]:
                feats.append(np.zeros((self.extractor.n_crops, 0, self.extractor.dim), np.float32))
                extract_s.append(0.0)
                continue
            try:
                f, dt = extract_chunk(self.extractor, np.asarray(views))
            except Exception as err:  # noqa: BLE001 - one chunk's failure is that video's error
                f, dt = np.zeros((self.extractor.n_crops, 0, self.extractor.dim), np.float32), 0.0
                errors[i] = f"extraction failed: {type(err).__name__}: {err}"
            feats.append(f)
            extract_s.append(dt)
        out["features"] = np.array(feats, dtype=object) if len({f.shape for f in feats}) > 1 else np.stack(feats)
        out["extract_s"] = np.array(extract_s)
        out["extract_node"] = np.array([_node_id()] * len(feats))
        out["error"] = np.array(errors)
        return out


def default_worker_threads(cfg: ScoreConfig, cpus: int) -> int:
    """Torch threads per extractor actor: features.threads, else the CPUs split over workers."""
    if cfg.features.threads:
        return cfg.features.threads
    return max(1, cpus // cfg.pipeline.workers)


class RayUnavailable(RuntimeError):
    """Ray cannot be imported or started (the message says how to fix it)."""


def ensure_ray(cfg: ScoreConfig) -> bool:
    """Connect to ``pipeline.ray_address`` or start a local Ray; True if this call started it."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is a core dependency
        raise RayUnavailable(f"ray is not installed ({err}); use --executor local") from None
    if ray.is_initialized():
        return False
    # Ray's own INFO chatter would bury the job's progress view.
    quiet_ray_logging()
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False,
                              "log_to_driver": _console_shows_debug()}
    if cfg.pipeline.ray_address:
        kwargs["address"] = cfg.pipeline.ray_address
    else:
        kwargs["num_cpus"] = os.cpu_count() or 1
    try:
        ray.init(**kwargs)
    except Exception as err:  # noqa: BLE001 - ConnectionError, RuntimeError, ... all mean "no Ray"
        where = cfg.pipeline.ray_address or "a local Ray"
        raise RayUnavailable(f"cannot start/join {where}: {type(err).__name__}: {err}") from None
    return True


def _console_shows_debug() -> bool:
    """True when the user asked for debug output (``vad -vv``): a console handler at DEBUG.
    (The root logger itself is at DEBUG whenever run.log is written, so it cannot tell.)"""
    return any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               and h.level <= logging.DEBUG for h in logging.getLogger().handlers)


def quiet_ray_logging() -> None:
    """Ray logs at INFO to the console through its own handlers; raise those console handlers to
    WARNING unless we are debugging (Ray Data's session log files keep everything)."""
    if _console_shows_debug():
        return
    # Ray Data re-creates its handlers when a dataset starts; this variable is what it reads then.
    # Our own log reports every lost or failed video, so Ray Data's errors are not needed twice.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            # console handlers only (Ray's PlainRayHandler is a StreamHandler); file handlers
            # write to Ray's session logs and keep INFO
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)


def iter_ray(plans: Sequence[VideoPlan], cfg: ScoreConfig, spec: SnippetSpec, n_crops: int,
             device_type: str) -> Iterator[ChunkResult]:
    """Run decode tasks and extractor actors on Ray; yields chunks as they finish."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    p = cfg.pipeline
    segments = [s for plan in plans for s in plan.segments(p.segment_snippets)]
    if not segments:
        return
    quiet_ray_logging()  # ray.data installs its handlers on import
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the job shows one progress view of its own
    ctx.max_errored_blocks = -1  # a crashed decode task costs its video, not the whole stream
    ctx.execution_options.preserve_order = False
    # Smaller blocks: Ray Data would otherwise pack a decode task's chunks into blocks of up to
    # 128 MB (6 centre-crop chunks), so the extractor and the progress view would get them in
    # bursts. Not below Ray's minimum block size (1 MB): at that value the stream stalls.
    ctx.target_max_block_size = max(16 << 20, 2 * getattr(ctx, "target_min_block_size", 1 << 20))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    rows = [{"video_index": s.video_index, "video_id": s.video_id, "path": s.path,
             "start": s.start, "stop": s.stop} for s in segments]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    decode_args: dict[str, Any] = {"num_cpus": 0.5 if cpus <= 1 else 1, "max_retries": p.retries}
    if p.decode_workers:
        decode_args["concurrency"] = p.decode_workers
    # Logical CPUs: each actor takes one, but never all of them, or no decode task could ever
    # be scheduled and the stream would stall (e.g. 2 workers on a 2-CPU machine).
    actor_cpus = 1.0 if cpus - p.workers >= 1 else max(0.01, (cpus - 1) / p.workers) if cpus > 1 else 0.5
    # SPREAD: on a cluster, extractor actors go to different nodes (on one machine: no effect).
    actor_args: dict[str, Any] = {"num_cpus": actor_cpus, "max_restarts": p.retries, "max_task_retries": p.retries,
                                  "scheduling_strategy": "SPREAD"}
    if device_type == "cuda":
        actor_args["num_gpus"] = p.gpus_per_worker
    with warnings.catch_warnings():
        # max_retries/max_restarts have no named parameter in Ray Data yet.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(_decode_batch, batch_size=1, fn_kwargs={"cfg": cfg, "spec": spec, "n_crops": n_crops},
                            **decode_args)
        ds = ds.map_batches(
            _ExtractActor, batch_size=1, compute=ActorPoolStrategy(size=p.workers),
            fn_constructor_kwargs={"cfg": cfg, "threads": default_worker_threads(cfg, cpus)}, **actor_args,
        )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        for i in range(len(batch["video_index"])):
            error = str(batch["error"][i]) or None
            feats = None if error else np.asarray(batch["features"][i], dtype=np.float32)
            yield _chunk_result(
                int(batch["video_index"][i]), str(batch["video_id"][i]), int(batch["start"][i]),
                int(batch["n"][i]), features=feats, error=error, permanent=bool(batch["permanent"][i]),
                backend=str(batch["backend"][i]),
                timings={"decode_s": float(batch["decode_s"][i]), "extract_s": float(batch["extract_s"][i])},
                nodes=(str(batch["decode_node"][i]), str(batch["extract_node"][i])),
            )
