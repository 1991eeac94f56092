"""Exceptions raised by :mod:`vad.io`.

Every backend translates its own failures (PyAV ``FFmpegError``, decord's
``DECORDError``, OpenCV's silent ``False`` returns) into these, so callers can
handle one set of errors whatever decoder is in use.
"""

from __future__ import annotations

__all__ = ["VideoError", "VideoOpenError", "VideoReadError"]


class VideoError(Exception):
    """Base class for video I/O errors; ``path`` names the offending file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(self._format())

    def _format(self) -> str:
        return f"{self.path}: {self.reason}"


class VideoOpenError(VideoError):
    """The file cannot be opened as a video (missing, empty, not a video, no frames, ...)."""

    def _format(self) -> str:
        return f"cannot open video {self.path}: {self.reason}"


class VideoReadError(VideoError):
    """Frames ``[start, stop)`` cannot be delivered (corrupt data, truncated file, out of range).

    ``start``/``stop`` are the requested range when known.
    """

    def __init__(
        self, path: str, reason: str, *, start: int | None = None, stop: int | None = None
    ) -> None:
        self.start = start
        self.stop = stop
        super().__init__(path, reason)

    def _format(self) -> str:
        where = f" frames [{self.start}, {self.stop})" if self.start is not None else ""
        return f"cannot read{where} from video {self.path}: {self.reason}"
