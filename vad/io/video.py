"""One video-reader interface over three decoders (decord, PyAV, OpenCV).

Usage::

    with open_video("clip.mp4", short_side=256) as reader:
        print(reader.info)                      # VideoInfo(n_frames=..., fps=..., ...)
        frames = reader.read(0, 16)             # (16, H, W, 3) uint8 RGB

Contract shared by every backend:

* ``read(start, stop)`` returns frames ``[start, stop)`` as a C-contiguous
  RGB uint8 array of shape ``(stop - start, H, W, 3)`` (H, W after the optional
  resize), or raises :class:`VideoReadError`; it never returns fewer frames.
* Reads are forward-decoding: consecutive ranges (``read(0, 16)``,
  ``read(16, 32)``, ...) continue from the decoder's position; small forward
  gaps are decoded and dropped; only a backward jump or a forward jump of more
  than :data:`FORWARD_SEEK_GAP` frames seeks. Only the frames asked for are
  held in memory.
* Frame count and fps come from one PyAV probe (:mod:`vad.io.probe`), so all
  backends report the same ``n_frames``/``fps``; a backend that can decode
  fewer frames than that raises :class:`VideoReadError` when it runs out.
* Frames are returned as stored: no rotation from display-matrix metadata
  (OpenCV's auto-rotation is switched off to match decord and PyAV).
* Resizing happens after decoding with :func:`vad.io.resize.resize_image`, the
  same function for all backends, so on a lossless source every backend
  returns identical frames.

Readers are not thread-safe; open one per worker.
"""

from __future__ import annotations

import importlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from vad.io.errors import VideoError, VideoOpenError, VideoReadError
from vad.io.probe import StreamProbe, probe_stream
from vad.io.resize import resize_image, short_side_size

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "DEFAULT_FALLBACK",
    "FORWARD_SEEK_GAP",
    "VideoInfo",
    "VideoReader",
    "open_video",
    "probe_video",
]

#: Forward jumps up to this many frames are decoded through instead of seeking:
#: a seek lands on the previous keyframe anyway, and GOPs are often ~250 frames.
FORWARD_SEEK_GAP = 128

#: Backend name -> "module:class"; imported lazily so a missing decoder only
#: matters when it is asked for.
BACKENDS: dict[str, str] = {
    "decord": "vad.io.decord_backend:DecordReader",
    "pyav": "vad.io.pyav_backend:PyAVReader",
    "opencv": "vad.io.opencv_backend:OpenCVReader",
}

# PyAV first: it decodes as fast as decord here and its memory stays flat on long videos,
# while decord keeps decoded frames buffered and grows with the length of the read.
DEFAULT_FALLBACK: tuple[str, ...] = ("pyav", "decord", "opencv")


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of an opened video.

    ``width``/``height`` are the size of the frames ``read()`` returns (after
    resize); ``source_width``/``source_height`` the size stored in the file.
    """

    path: str
    n_frames: int
    fps: float
    width: int
    height: int
    backend: str
    source_width: int | None = None
    source_height: int | None = None
    codec: str | None = None

    @property
    def duration_s(self) -> float:
        """Duration in seconds, ``n_frames / fps``."""
        return self.n_frames / self.fps if self.fps > 0 else 0.0


def _output_size(
    width: int,
    height: int,
    resize: tuple[int, int] | None,
    short_side: int | None,
) -> tuple[int, int] | None:
    if resize is not None and short_side is not None:
        raise ValueError("give either resize=(width, height) or short_side, not both")
    if resize is not None:
        w, h = (int(v) for v in resize)
        if w <= 0 or h <= 0:
            raise ValueError(f"resize must be a positive (width, height), got {resize}")
        return (w, h)
    if short_side is not None:
        return short_side_size(width, height, int(short_side))
    return None


class VideoReader(ABC):
    """Reads RGB uint8 frame ranges from one video file; see the module docstring.

    Subclasses implement :meth:`_open`, :meth:`_read_into` and :meth:`_close`;
    range checks, resizing and error wrapping live here.
    """

    #: Registry name of the backend ("decord", "pyav", "opencv").
    backend_name: str = ""

    def __init__(
        self,
        source: StreamProbe | str | os.PathLike[str],
        *,
        resize: tuple[int, int] | None = None,
        short_side: int | None = None,
    ) -> None:
        # open_video() passes the probe it already made; direct use passes a path.
        probe = source if isinstance(source, StreamProbe) else probe_stream(source)
        self._probe = probe
        self.path = probe.path
        self._src_size = (probe.width, probe.height)
        self._out_size = _output_size(probe.width, probe.height, resize, short_side)
        out_w, out_h = self._out_size or self._src_size
        self._info = VideoInfo(
            path=probe.path,
            n_frames=probe.n_frames,
            fps=probe.fps,
            width=out_w,
            height=out_h,
            backend=self.backend_name,
            source_width=probe.width,
            source_height=probe.height,
            codec=probe.codec,
        )
        self._closed = False
        self._open()

    # -- public API ---------------------------------------------------------

    @property
    def info(self) -> VideoInfo:
        """Frame count, fps, output size and backend of this reader."""
        return self._info

    def __len__(self) -> int:
        return self._info.n_frames

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as RGB uint8, shape ``(stop - start, H, W, 3)``.

        Raises ``ValueError`` for a negative or inverted range and
        :class:`VideoReadError` when ``stop > n_frames`` or the frames cannot be
        decoded (truncated/corrupt data).
        """
        start, stop = int(start), int(stop)
        if start < 0 or stop < start:
            raise ValueError(f"invalid frame range [{start}, {stop})")
        if self._closed:
            raise VideoReadError(self.path, "reader is closed", start=start, stop=stop)
        n = self._info.n_frames
        if stop > n:
            raise VideoReadError(
                self.path, f"range ends past the last frame (video has {n} frames)",
                start=start, stop=stop,
            )
        out = np.empty((stop - start, self._info.height, self._info.width, 3), dtype=np.uint8)
        if stop == start:
            return out
        try:
            self._read_into(start, stop, out)
        except VideoError:
            raise
        except Exception as exc:  # a backend bug or an unexpected decoder error
            self._reset()
            raise VideoReadError(
                self.path, f"{self.backend_name} failed: {type(exc).__name__}: {exc}",
                start=start, stop=stop,
            ) from exc
        return out

    def close(self) -> None:
        """Release the decoder; further reads raise :class:`VideoReadError`."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self._info
        return (
            f"{type(self).__name__}({i.path!r}, n_frames={i.n_frames}, fps={i.fps:g}, "
            f"size={i.width}x{i.height})"
        )

    # -- helpers for backends -----------------------------------------------

    def _store(self, out: np.ndarray, k: int, rgb: np.ndarray, index: int) -> None:
        """Check one decoded native RGB frame, resize it and put it at ``out[k]``."""
        w, h = self._src_size
        if rgb.shape != (h, w, 3):
            raise VideoReadError(
                self.path,
                f"frame {index} decoded as {rgb.shape[1]}x{rgb.shape[0]}, but the stream "
                f"declares {w}x{h} (resolution change mid-stream is not supported)",
                start=index, stop=index + 1,
            )
        out[k] = resize_image(rgb, self._out_size) if self._out_size else rgb

    def _store_batch(self, out: np.ndarray, rgb: np.ndarray, start: int) -> None:
        for k in range(rgb.shape[0]):
            self._store(out, k, rgb[k], start + k)

    def _ran_out(self, decoded: int, start: int, stop: int) -> VideoReadError:
        """The error for a decoder that stopped after ``decoded`` frames."""
        return VideoReadError(
            self.path,
            f"the stream ended after {decoded} of the {self._info.n_frames} frames the "
            f"container declares (file truncated or damaged)",
            start=start, stop=stop,
        )

    # -- backend hooks --------------------------------------------------------

    @abstractmethod
    def _open(self) -> None:
        """Open the decoder; raise :class:`VideoOpenError` if it cannot handle the file."""

    @abstractmethod
    def _read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Decode frames ``[start, stop)`` into ``out`` via :meth:`_store`."""

    @abstractmethod
    def _close(self) -> None:
        """Release native resources."""

    def _reset(self) -> None:
        """Forget the decoder position after an error (the next read reopens)."""


def _backend_class(name: str) -> type[VideoReader]:
    """Import and return the reader class of backend ``name`` (ImportError if not installed)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown video backend {name!r}; choose from {sorted(BACKENDS)} or 'auto'"
        ) from None
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Validate ``path`` and return its metadata without opening a decoder.

    Same ``n_frames``/``fps`` as every reader would report; ``backend`` is
    ``"probe"``. Raises :class:`VideoOpenError`.
    """
    p = probe_stream(path)
    return VideoInfo(
        path=p.path, n_frames=p.n_frames, fps=p.fps, width=p.width, height=p.height,
        backend="probe", source_width=p.width, source_height=p.height, codec=p.codec,
    )


def open_video(
    path: str | os.PathLike[str],
    backend: str = "auto",
    *,
    resize: tuple[int, int] | None = None,
    short_side: int | None = None,
    fallback: Sequence[str] = DEFAULT_FALLBACK,
) -> VideoReader:
    """Open ``path`` for reading RGB frames.

    ``backend`` is "decord", "pyav", "opencv" or "auto"; "auto" tries the
    backends in ``fallback`` order (default pyav -> decord -> opencv) and moves
    on, logging why, when one is not installed, cannot open the file or finds
    no frames. The file is validated once up front (see :mod:`vad.io.probe`),
    so a missing/empty/non-video file fails with one clear
    :class:`VideoOpenError` whatever the backend.

    ``resize=(width, height)`` or ``short_side=N`` (aspect kept, torchvision
    rounding) resize every frame after decoding; see :mod:`vad.io.resize`.
    """
    if resize is not None and short_side is not None:
        raise ValueError("give either resize=(width, height) or short_side, not both")
    names = list(fallback) if backend == "auto" else [backend]
    if not names:
        raise ValueError("fallback must name at least one backend")
    for name in names:
        if name not in BACKENDS:
            raise ValueError(
                f"unknown video backend {name!r}; choose from {sorted(BACKENDS)} or 'auto'"
            )
    probe = probe_stream(path)

    failures: list[str] = []
    for name in names:
        try:
            try:
                cls = _backend_class(name)
            except ImportError as exc:  # the decoder library itself is missing
                raise VideoOpenError(probe.path, f"backend {name!r} is not available: {exc}") from exc
            reader = cls(probe, resize=resize, short_side=short_side)
        except VideoOpenError as exc:
            if backend != "auto":
                raise
            failures.append(f"{name}: {exc.reason}")
            logger.warning("%s: backend %s cannot open it (%s)", probe.path, name, exc.reason)
            continue
        if failures:
            logger.info("%s: opened with fallback backend %s", probe.path, name)
        return reader
    raise VideoOpenError(probe.path, "no backend could open it: " + "; ".join(failures))
