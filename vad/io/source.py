"""Frame sources: where frames come from, the same way for files, arrays and live streams.

A :class:`FrameSource` is an iterable of :class:`Frame` (RGB uint8 image, index, presentation
time, wall-clock time) and a context manager. It does not need to know how many frames it will
yield: ``n_frames`` is the probed count for a file and ``None`` for a stream, and ``len()``
works only when it is known (as supervision's frame generators). Snippets are cut from any
source by :class:`vad.clips.SnippetBuffer`, so the batch path and the live path share one
snippet builder.

* :class:`FileSource` reads a video file through a :class:`~vad.io.video.VideoReader` (exact
  seeking, probed frame count); ``start``/``stop`` select a frame range, read in blocks so only
  one block is decoded ahead.
* :class:`IterableSource` wraps frames from anything that yields them (arrays in tests, a stream
  reader's capture thread); its length is optional.

Indices are 0-based and count the frames this source has yielded from its start (for a file,
the frame number in the file). ``pts_s`` is the presentation time in seconds (``index / fps``
for files, the decoder's timestamp for streams where known); ``wall_time`` is ``time.time()``
when the frame was obtained.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from vad.io.video import DEFAULT_FALLBACK, VideoReader, open_video

__all__ = ["IMAGE_EXTENSIONS", "FileSource", "FolderSource", "Frame", "FrameSource", "IterableSource",
           "folder_images"]

#: Image files that make a folder a clip of frames (UCSD Ped2, CUHK Avenue, ShanghaiTech layouts).
IMAGE_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")


def folder_images(folder: str | os.PathLike[str]) -> list[str]:
    """The image files directly in ``folder``, sorted by name (the frame order)."""
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``image`` is (H, W, 3) uint8 RGB and must not be modified."""

    index: int
    pts_s: float | None
    wall_time: float
    image: np.ndarray
    #: which connection of a live stream it came from (0 for files); a new segment means a gap
    #: before it (a reconnect, a timestamp jump, a resolution change)
    segment: int = 0


class FrameSource(ABC):
    """Yields :class:`Frame` objects in order; see the module docstring."""

    #: Identifier of the source in outputs and logs (video id, camera name).
    source_id: str = ""

    @property
    @abstractmethod
    def fps(self) -> float | None:
        """Nominal frame rate, or None when the source does not say."""

    @property
    def n_frames(self) -> int | None:
        """Frames this source will yield when known in advance (a file), else None (a stream)."""
        return None

    def __len__(self) -> int:
        n = self.n_frames
        if n is None:
            raise TypeError(f"{type(self).__name__} {self.source_id!r} has no known length")
        return n

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Frames in order; ends at the end of the source."""

    def close(self) -> None:
        """Release what the source holds (decoder, socket); idempotent."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class FileSource(FrameSource):
    """Frames ``[start, stop)`` of a video file (``stop=None``: to the end)."""

    def __init__(self, path: str | os.PathLike[str] | VideoReader, *, backend: str = "auto",
                 short_side: int | None = None, fallback: Iterable[str] = DEFAULT_FALLBACK,
                 start: int = 0, stop: int | None = None, block: int = 16,
                 source_id: str | None = None) -> None:
        """``path`` may be an open reader (it is then closed with the source). ``block``: frames
        decoded per read; a larger block does not change the frames, only the read size."""
        if isinstance(path, VideoReader):
            self._reader = path
        else:
            self._reader = open_video(path, backend, short_side=short_side, fallback=tuple(fallback))
        total = self._reader.info.n_frames
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.start = start
        self.stop = total if stop is None else min(int(stop), total)
        self.block = block
        self.source_id = source_id if source_id is not None else os.path.splitext(os.path.basename(self._reader.path))[0]

    @property
    def reader(self) -> VideoReader:
        return self._reader

    @property
    def fps(self) -> float:
        return self._reader.info.fps

    @property
    def n_frames(self) -> int:
        return max(0, self.stop - self.start)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first index, frames (n, H, W, 3))`` in ``block``-frame reads: the fast path for
        consumers that take arrays (the snippet buffer); the same frames as iterating."""
        for a in range(self.start, self.stop, self.block):
            b = min(a + self.block, self.stop)
            yield a, self._reader.read(a, b)

    def __iter__(self) -> Iterator[Frame]:
        fps = self.fps
        for a, frames in self.blocks():
            now = time.time()
            for k in range(frames.shape[0]):
                i = a + k
                yield Frame(i, i / fps if fps else None, now, frames[k])

    def close(self) -> None:
        self._reader.close()


class FolderSource(FrameSource):
    """A folder of frame images (sorted by name) read as a video at ``fps``."""

    def __init__(self, folder: str | os.PathLike[str], fps: float, *, block: int = 16,
                 source_id: str | None = None, stop: int | None = None, start: int = 0) -> None:
        """``start``/``stop``: read only frames [start, stop)."""
        from vad.io.errors import VideoOpenError

        self.folder = str(folder)
        self.files = folder_images(folder)[start:stop]
        if not self.files:
            raise VideoOpenError(self.folder, "no image frames in this folder")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._fps = float(fps)
        self.block = block
        self.source_id = source_id if source_id is not None else os.path.basename(os.path.normpath(self.folder))
        self._shape: tuple[int, ...] | None = None

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def n_frames(self) -> int:
        return len(self.files)

    def _read(self, path: str) -> np.ndarray:
        import cv2

        from vad.io.errors import VideoReadError

        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise VideoReadError(self.folder, f"{os.path.basename(path)} is not a readable image")
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if self._shape is None:
            self._shape = rgb.shape
        elif rgb.shape != self._shape:
            raise VideoReadError(self.folder, f"{os.path.basename(path)} is {rgb.shape[1]}x{rgb.shape[0]}, the "
                                 f"first frame {self._shape[1]}x{self._shape[0]}")
        return rgb

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        for a in range(0, len(self.files), self.block):
            yield a, np.stack([self._read(f) for f in self.files[a:a + self.block]])

    def __iter__(self) -> Iterator[Frame]:
        for a, frames in self.blocks():
            now = time.time()
            for k in range(len(frames)):
                yield Frame(a + k, (a + k) / self._fps, now, frames[k])


class IterableSource(FrameSource):
    """Frames from any iterable of images ((H, W, 3) uint8 arrays) or :class:`Frame` objects."""

    def __init__(self, frames: Iterable[np.ndarray | Frame], fps: float | None, *,
                 n_frames: int | None = None, source_id: str = "stream") -> None:
        if n_frames is None and hasattr(frames, "__len__"):
            n_frames = len(frames)  # type: ignore[arg-type]
        self._frames = frames
        self._fps = fps
        self._n = n_frames
        self.source_id = source_id

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def n_frames(self) -> int | None:
        return self._n

    def __iter__(self) -> Iterator[Frame]:
        for i, item in enumerate(self._frames):
            if isinstance(item, Frame):
                yield item
                continue
            image = np.asarray(item)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"frame {i}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            yield Frame(i, i / self._fps if self._fps else None, time.time(), image)
