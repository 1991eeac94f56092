"""Video input: one reader interface over decord, PyAV and OpenCV.

See :mod:`vad.io.video` for the reading contract, :mod:`vad.io.probe` for how
the frame count is established and validated, and :mod:`vad.io.resize` for the
resize shared by all backends.
"""

from vad.io.errors import VideoError, VideoOpenError, VideoReadError
from vad.io.probe import StreamProbe, probe_stream
from vad.io.source import IMAGE_EXTENSIONS, FileSource, FolderSource, Frame, FrameSource, IterableSource, folder_images
from vad.io.resize import resize_frames, resize_image, resize_short_side, short_side_size
from vad.io.video import (
    BACKENDS,
    DEFAULT_FALLBACK,
    FORWARD_SEEK_GAP,
    VideoInfo,
    VideoReader,
    open_video,
    probe_video,
)

#: File extensions treated as videos when scanning folders.
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ts", ".flv", ".wmv",
)

__all__ = [
    "BACKENDS",
    "DEFAULT_FALLBACK",
    "FORWARD_SEEK_GAP",
    "FileSource",
    "FolderSource",
    "IMAGE_EXTENSIONS",
    "folder_images",
    "Frame",
    "FrameSource",
    "IterableSource",
    "VIDEO_EXTENSIONS",
    "StreamProbe",
    "VideoError",
    "VideoInfo",
    "VideoOpenError",
    "VideoReadError",
    "VideoReader",
    "open_video",
    "probe_stream",
    "probe_video",
    "resize_frames",
    "resize_image",
    "resize_short_side",
    "short_side_size",
]
