"""Cheap validation and metadata of a video file with PyAV, shared by all backends.

Every backend (decord, OpenCV, PyAV) starts from this probe:

* it turns the common failures into a clear :class:`VideoOpenError` before a
  native decoder sees the file (decord prints to stderr and, on some inputs,
  has been reported to crash the process; PyAV only raises exceptions);
* it fixes one ``n_frames``/``fps`` for the file, so all backends agree.

Frame-count policy:

1. the container's own count when it stores one (AVI header, MP4 sample
   table): PyAV ``stream.frames``;
2. otherwise (Matroska/WebM, MPEG-TS, FLV, ... keep no count) the video
   packets are counted by demuxing the whole file without decoding, the same
   thing decord does to build its index. Container durations times fps are
   *not* used: they are estimates (OpenCV's ``CAP_PROP_FRAME_COUNT`` is one)
   and are off by a frame or more on variable-rate or damaged files.

While counting, the end of the last packet is compared with the duration the
container declares: a file that stops well short of it was cut off (e.g. an
interrupted download) and is refused rather than silently reported shorter.
A declared count that is larger than what can be decoded (a truncated AVI still
declares its full length) is caught later, when a read runs out of frames.

fps is the stream's average frame rate (what decord reports), falling back to
the guessed (``r_frame_rate``) rate, then to ``n_frames / duration``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vad.io.errors import VideoOpenError

logger = logging.getLogger(__name__)

__all__ = ["StreamProbe", "check_path", "pick_video_stream", "probe_stream"]

# A container whose data ends this much before its declared duration is treated
# as truncated (seconds; the larger of the absolute and the relative slack).
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_REL = 0.02

# Demuxers that read single images; FFmpeg happily presents a .png renamed to
# .mp4 as a one-frame "video", which is not what a caller of open_video wants.
_IMAGE_FORMAT_SUFFIXES = ("_pipe",)
_IMAGE_FORMATS = {"image2", "image2pipe"}


@dataclass(frozen=True)
class StreamProbe:
    """What the probe learned about a file's first video stream (native size, before resize)."""

    path: str
    n_frames: int
    fps: float
    width: int
    height: int
    codec: str
    container: str
    frame_count_source: str  # "container" (declared count) or "packets" (demuxed and counted)
    duration_s: float | None  # declared by the container, None when unknown
    fps_rational: Fraction | None = None  # exact rate when the stream states one


def check_path(path: str | os.PathLike[str]) -> Path:
    """Raise :class:`VideoOpenError` unless ``path`` is an existing, non-empty, readable file."""
    p = Path(path)
    if not p.exists():
        raise VideoOpenError(str(p), "no such file")
    if p.is_dir():
        raise VideoOpenError(str(p), "is a directory, not a video file")
    if not p.is_file():
        raise VideoOpenError(str(p), "not a regular file")
    if p.stat().st_size == 0:
        raise VideoOpenError(str(p), "empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoOpenError(str(p), "permission denied")
    return p


def pick_video_stream(container):  # noqa: ANN001, ANN201 - av types
    """The first video stream that is not an attached cover picture, or None."""
    import av

    attached = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    for stream in container.streams.video:
        if attached is not None and stream.disposition & attached:
            continue
        return stream
    return None


def _ffmpeg_reason(exc: BaseException) -> str:
    # PyAV errors carry the file name in str(exc); strerror is the bare FFmpeg message.
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(msg)


def probe_stream(path: str | os.PathLike[str]) -> StreamProbe:
    """Validate ``path`` and return the metadata of its first video stream.

    Raises :class:`VideoOpenError` with a human-readable reason: no such file,
    a directory, an empty file, not a readable video, an image, no video
    stream, zero frames, unknown frame rate, or a truncated container.
    """
    p = check_path(path)
    spath = str(p)
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a hard dependency
        raise VideoOpenError(spath, f"PyAV is required to probe videos: {exc}") from exc

    try:
        container = av.open(spath, mode="r")
    except av.FFmpegError as exc:
        raise VideoOpenError(spath, f"not a readable video: {_ffmpeg_reason(exc)}") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise VideoOpenError(spath, f"not a readable video: {_ffmpeg_reason(exc)}") from exc

    try:
        fmt = container.format.name or ""
        if fmt in _IMAGE_FORMATS or fmt.endswith(_IMAGE_FORMAT_SUFFIXES):
            raise VideoOpenError(spath, f"not a video: looks like a single image ({fmt})")
        stream = pick_video_stream(container)
        if stream is None:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoOpenError(spath, f"no video stream (streams: {', '.join(kinds)})")
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise VideoOpenError(spath, f"video stream has no frame size ({width}x{height})")
        codec = cc.name or "unknown"
        duration_s = (
            float(container.duration) / av.time_base if container.duration is not None else None
        )

        n_frames = int(stream.frames or 0)
        source = "container"
        if n_frames <= 0:
            n_frames = _count_packets(container, stream, spath, duration_s)
            source = "packets"
        if n_frames <= 0:
            raise VideoOpenError(spath, "no frames: the video stream is empty")

        rate = stream.average_rate or stream.guessed_rate
        fps_rational: Fraction | None = Fraction(rate) if rate else None
        if fps_rational is not None and fps_rational > 0:
            fps = float(fps_rational)
        elif duration_s:
            fps_rational = None
            fps = n_frames / duration_s
        else:
            raise VideoOpenError(spath, "unknown frame rate (no rate and no duration in the file)")
        if source == "packets" and duration_s and fps_rational is not None:
            expected = duration_s * fps
            if abs(expected - n_frames) > max(2.0, 0.05 * expected):
                # Variable frame rate, or frames lost in a damaged region: not fatal.
                logger.warning(
                    "%s: %d video packets but duration x fps = %.1f (variable frame rate "
                    "or a damaged file?)",
                    spath,
                    n_frames,
                    expected,
                )
    finally:
        container.close()

    probe = StreamProbe(
        path=spath,
        n_frames=n_frames,
        fps=fps,
        width=width,
        height=height,
        codec=codec,
        container=fmt,
        frame_count_source=source,
        duration_s=duration_s,
        fps_rational=fps_rational,
    )
    logger.debug("probed %s", probe)
    return probe


def _count_packets(container, stream, spath: str, duration_s: float | None) -> int:  # noqa: ANN001
    """Count the video packets of ``stream`` by demuxing all streams (no decoding).

    All streams are demuxed so the end-of-data check also sees audio: a
    container's duration is the longest stream, often the audio.
    """
    import av

    count = 0
    end_s = None
    try:
        for packet in container.demux():
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:  # flush packet at EOF
                continue
            if packet.stream.index == stream.index and packet.size > 0:
                count += 1
            if packet.time_base is not None:
                t = float((ts + (packet.duration or 0)) * packet.time_base)
                end_s = t if end_s is None else max(end_s, t)
    except av.FFmpegError as exc:
        raise VideoOpenError(
            spath, f"damaged container: demuxing failed after {count} frames "
            f"({_ffmpeg_reason(exc)})"
        ) from exc

    if count and duration_s and end_s is not None:
        start_s = float(container.start_time) / av.time_base if container.start_time else 0.0
        data_s = end_s - start_s
        slack = max(_TRUNCATION_SLACK_S, _TRUNCATION_SLACK_REL * duration_s)
        if data_s < duration_s - slack:
            raise VideoOpenError(
                spath,
                f"file looks truncated: its data ends at {data_s:.2f} s ({count} frames) but "
                f"the container declares {duration_s:.2f} s",
            )
    return count
