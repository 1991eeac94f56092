"""The stages both executors run: plan a video -> decode its snippets into chunks -> extract.

A video is cut into *chunks* of ``pipeline.chunk_snippets`` consecutive snippets (the unit handed
to an extractor) and, for the Ray executor, into *segments* of ``pipeline.segment_snippets``
snippets (the unit of one decode task: one seek, then sequential decoding). Chunk boundaries
depend only on the video and the configuration, never on the executor or on timing, and each
chunk is extracted on its own, so a chunk's features are the same whichever executor, worker or
attempt computed them. That is what makes kill-and-rerun reproduce an uninterrupted run.

Failures are data, not exceptions: a chunk that cannot be decoded or extracted comes back as a
:class:`ChunkResult` with ``error`` set, so one bad file never stops a stream of thousands.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from vad.cache import VideoFingerprint
from vad.clips import SnippetSpec, iter_snippets, snippet_ranges
from vad.config import ScoreConfig
from vad.features.extractor import FeatureExtractor, snippet_views
from vad.io import VideoError, VideoOpenError, open_video, probe_video
from pipelines.inputs import VideoItem

logger = logging.getLogger(__name__)

# Test-only fault injection: "exit:<text>" makes the decode of any video whose path contains
# <text> kill its process (as a segfaulting decoder or the OOM killer would).
FAULT_ENV = "VAD_FAULT_INJECT"


class VideoSkipped(Exception):
    """An expected, explainable per-video failure (the message is the reason shown to users)."""


@dataclass(frozen=True)
class Segment:
    """Snippets ``[start, stop)`` of one video: the work of one decode task."""

    video_index: int  # position of the video in the job (orders outputs)
    video_id: str
    path: str
    start: int
    stop: int


@dataclass
class VideoPlan:
    """A video probed and cut into snippets, before any frame is decoded."""

    index: int
    item: VideoItem
    n_frames: int
    fps: float
    n_snippets: int
    fingerprint: VideoFingerprint | None

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps if self.fps else 0.0

    def chunk_starts(self, chunk_snippets: int) -> list[int]:
        return list(range(0, self.n_snippets, chunk_snippets))

    def segments(self, segment_snippets: int) -> list[Segment]:
        return [
            Segment(self.index, self.item.video_id, str(self.item.path), s, min(s + segment_snippets, self.n_snippets))
            for s in range(0, self.n_snippets, segment_snippets)
        ]


@dataclass
class ChunkResult:
    """Features of snippets ``[start, start + n)`` of one video, or why there are none."""

    video_index: int
    video_id: str
    start: int
    n: int
    features: np.ndarray | None = None  # (n_crops, n, dim) float32
    error: str | None = None
    permanent: bool = False  # retrying cannot help (the file is unreadable), as opposed to a crash
    backend: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # decode_s, extract_s
    nodes: tuple[str, ...] = ()  # Ray node ids that decoded and extracted it (empty: local)


def check_pipeline_config(cfg: ScoreConfig) -> None:
    """Ranges the schema cannot express; raises ValueError naming the key."""
    p = cfg.pipeline
    if p.executor not in ("auto", "ray", "local"):
        raise ValueError(f"pipeline.executor must be auto, ray or local, got {p.executor!r}")
    for key in ("workers", "chunk_snippets", "segment_snippets"):
        if getattr(p, key) < 1:
            raise ValueError(f"pipeline.{key} must be >= 1, got {getattr(p, key)}")
    if p.prefetch_chunks < 0:
        raise ValueError(f"pipeline.prefetch_chunks must be >= 0 (0: no decode thread), got {p.prefetch_chunks}")
    if p.segment_snippets % p.chunk_snippets:
        raise ValueError(
            f"pipeline.segment_snippets ({p.segment_snippets}) must be a multiple of "
            f"pipeline.chunk_snippets ({p.chunk_snippets}) so chunks never straddle two decode tasks"
        )
    if p.retries < 0:
        raise ValueError(f"pipeline.retries must be >= 0, got {p.retries}")
    if p.decode_workers is not None and p.decode_workers < 1:
        raise ValueError(f"pipeline.decode_workers must be >= 1 or null, got {p.decode_workers}")
    if p.gpus_per_worker <= 0:
        raise ValueError(f"pipeline.gpus_per_worker must be > 0, got {p.gpus_per_worker}")


def resolve_executor(cfg: ScoreConfig) -> str:
    """``auto``: Ray where it can help (a cluster address, or several extractor workers), else
    the local executor: on one machine with one extractor, Ray's start-up (about 5 s of the
    job, measured in docs/benchmarks.md) buys nothing the local decode thread does not."""
    p = cfg.pipeline
    if p.executor != "auto":
        return p.executor
    return "ray" if p.ray_address or p.workers > 1 else "local"


def plan_video(index: int, item: VideoItem, spec: SnippetSpec) -> VideoPlan:
    """Probe ``item`` (container headers only) and count its snippets.

    Raises VideoSkipped or VideoError (both permanent) for files that cannot be scored."""
    path = item.path
    if not path.exists():
        raise VideoSkipped(f"no such file: {path}")
    if path.is_dir():
        raise VideoSkipped(f"{path} is a folder of frames: only frame-prediction heads read those "
                           "(vad train --head ctd2gan, then vad score --head DIR)")
    if not path.is_file():
        raise VideoSkipped(f"not a file: {path}")
    info = probe_video(path)
    n_snippets = len(snippet_ranges(info.n_frames, spec))
    if n_snippets == 0:
        raise VideoSkipped(
            f"video has {info.n_frames} frames, fewer than one {spec.length}-frame snippet "
            "(snippets.tail=pad scores such videos)"
        )
    return VideoPlan(index, item, info.n_frames, info.fps, n_snippets, VideoFingerprint.of(path))


def _maybe_inject_fault(path: str) -> None:
    fault = os.environ.get(FAULT_ENV, "")
    if fault.startswith("exit:") and fault[5:] and fault[5:] in path:
        logger.error("fault injection: killing decode process on %s", path)
        os._exit(13)


def decode_segment(
    segment: Segment, cfg: ScoreConfig, spec: SnippetSpec
) -> Iterator[tuple[int, np.ndarray | None, str, float, str | None, bool]]:
    """Decode a segment and yield its chunks: ``(start, views, backend, decode_s, error, permanent)``.

    ``views`` is (n, n_crops, T', s, s, 3) uint8 (the extractor's input, see
    :func:`snippet_views`); on failure it is None and ``error`` says why; the rest of the
    segment is then abandoned (its video has failed)."""
    _maybe_inject_fault(segment.path)
    chunk = cfg.pipeline.chunk_snippets
    t0 = time.perf_counter()
    start = segment.start
    pending: list[np.ndarray] = []
    backend = ""
    try:
        with open_video(segment.path, cfg.io.backend, short_side=cfg.io.short_side,
                        fallback=cfg.io.fallback) as reader:
            backend = reader.info.backend
            for snippet in iter_snippets(reader, spec, start_snippet=segment.start, stop_snippet=segment.stop):
                pending.append(snippet_views(snippet.frames, cfg.features))
                if len(pending) == chunk or snippet.index + 1 == segment.stop:
                    views = np.stack(pending)
                    now = time.perf_counter()
                    yield start, views, backend, now - t0, None, False
                    pending, start = [], snippet.index + 1
                    t0 = time.perf_counter()
    except VideoOpenError as err:
        yield start, None, backend, time.perf_counter() - t0, str(err), True
    except VideoError as err:
        # A read error mid-file (truncated/corrupt data) is as permanent as an open error for
        # this file, but decoders occasionally fail transiently (I/O hiccups on network storage).
        yield start, None, backend, time.perf_counter() - t0, str(err), False
    except Exception as err:  # noqa: BLE001 - any decoder bug becomes this video's error
        logger.debug("decode of %s failed", segment.path, exc_info=True)
        yield start, None, backend, time.perf_counter() - t0, f"decode failed: {type(err).__name__}: {err}", False


def extract_chunk(extractor: FeatureExtractor, views: np.ndarray) -> tuple[np.ndarray, float]:
    """(n, n_crops, T', s, s, 3) uint8 -> ((n_crops, n, dim) float32, seconds)."""
    t0 = time.perf_counter()
    feats = extractor.extract_views(list(views))
    return feats, time.perf_counter() - t0


def assemble(chunks: list[ChunkResult], n_snippets: int) -> np.ndarray:
    """Concatenate a video's chunks in snippet order; checks nothing is missing or doubled."""
    ordered = sorted(chunks, key=lambda c: c.start)
    expected = 0
    for c in ordered:
        if c.start != expected:
            raise ValueError(f"chunk starting at snippet {c.start} where {expected} was expected")
        expected += c.n
    if expected != n_snippets:
        raise ValueError(f"chunks cover {expected} snippets of {n_snippets}")
    return np.concatenate([c.features for c in ordered], axis=1)


