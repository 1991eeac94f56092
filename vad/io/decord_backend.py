"""decord backend.

decord 0.6 bundles its own FFmpeg 4.1 (PyAV and OpenCV bundle FFmpeg 8), so
on some lossy codecs its pixels differ slightly from theirs (msmpeg4
``vtest.avi``: max |diff| 2, 0.02 % of values); lossless sources match
exactly.

Known decord pitfalls handled here:

* Random access is wrong on AVI files with B-frames (AVI stores no pts, so
  decord's pts-sorted frame index is scrambled): on OpenCV's
  ``Megamind_bugy.avi`` ``vr[100]`` returns frame 0 and a backward
  ``get_batch`` is off by one. Such files are recognised by decord's own frame
  timestamps not increasing strictly; for them this reader only ever asks
  decord for the frame right after the previous one (consecutive
  ``get_batch`` calls, which decode forward and are correct), decodes and
  drops the frames of a forward gap, and re-opens for backward jumps.
  ``skip_frames`` is never used: it is off by one on a fresh reader and wrong
  across keyframes on such files.
* On files whose timestamps are fine, ``get_batch`` seeks by itself (to the
  keyframe before, then decoding forward); that matched PyAV on every file
  tried (MP4/MKV with B-frames, VP9, FFV1, msmpeg4 AVI).
* decord counts the packets it can index; if that is fewer than the probe's
  frame count (a truncated AVI still declares its full length) the file is
  refused at open, so ``auto`` falls back to PyAV.
* Decode errors arrive as ``DECORDError`` (no crash seen on the corrupt
  inputs tried: truncated/garbled AVI, MKV, MP4; text files never reach
  decord thanks to the PyAV probe); they become :class:`VideoReadError`.
* decord's FFmpeg logs to stderr; they are silenced (``decord.logging.QUIET``)
  because the errors are reported as exceptions instead.
"""

from __future__ import annotations

import logging
import re

import decord
import numpy as np

from vad.io.errors import VideoOpenError, VideoReadError
from vad.io.video import VideoReader

logger = logging.getLogger(__name__)

__all__ = ["DecordReader"]

decord.logging.set_level(decord.logging.QUIET)

# Frames per get_batch when decoding through a gap on files decord cannot seek.
_DISCARD_CHUNK = 32

# decord raises DECORDError (a RuntimeError subclass in recent releases) and
# plain RuntimeError/IndexError from its C++ checks.
_DECORD_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, IndexError, ValueError)
_DecordError = getattr(getattr(decord, "_ffi", None), "base", None)
if _DecordError is not None and hasattr(_DecordError, "DECORDError"):
    _DECORD_ERRORS = (_DecordError.DECORDError, *_DECORD_ERRORS)


_LOG_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+?:\d+: ")
_FFMPEG_CODES = {
    "-1094995529": "FFmpeg: invalid data found",  # AVERROR_INVALIDDATA
    "-541478725": "FFmpeg: end of file",  # AVERROR_EOF
}


def _short(exc: BaseException, limit: int = 240) -> str:
    """decord's message without its C++ log prefixes, FFmpeg codes spelled out."""
    msg = _LOG_PREFIX.sub("", " ".join(str(exc).split()))
    for code, text in _FFMPEG_CODES.items():
        msg = msg.replace(f"({code} vs. 0)", f"({text})")
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


class DecordReader(VideoReader):
    """Video reader on decord (CPU); see the module docstring for its pitfalls."""

    backend_name = "decord"

    def _open(self) -> None:
        self._vr: decord.VideoReader | None = None
        self._next = 0
        self._vr = self._make_reader()
        count = len(self._vr)
        n = self._info.n_frames
        if count == 0:
            raise VideoOpenError(self.path, "decord found zero frames")
        if count < n:
            raise VideoOpenError(
                self.path,
                f"decord indexes only {count} of the {n} frames the container declares "
                f"(truncated or damaged file)",
            )
        if count > n:
            logger.debug("%s: decord indexes %d frames, probe %d; using %d", self.path, count, n, n)
        try:
            ts = np.asarray(self._vr.get_frame_timestamp(list(range(count))))[:, 0]
        except _DECORD_ERRORS as exc:
            raise VideoOpenError(self.path, f"decord cannot index it: {_short(exc)}") from exc
        self._can_seek = bool(np.all(np.diff(ts) > 0))
        if not self._can_seek:
            logger.info(
                "%s: decord frame timestamps are not increasing (e.g. AVI with B-frames); "
                "decoding forward only, no decord seeks",
                self.path,
            )

    def _make_reader(self) -> decord.VideoReader:
        try:
            return decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=0)
        except _DECORD_ERRORS as exc:
            raise VideoOpenError(self.path, f"decord cannot open it: {_short(exc)}") from exc

    def _read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        try:
            if self._vr is None:  # after an error: start over
                self._vr = self._make_reader()
                self._next = 0
            if not self._can_seek:
                if start < self._next:
                    self._vr = self._make_reader()
                    self._next = 0
                # decord's skip_frames() and any non-consecutive get_batch() go through
                # its (here scrambled) index, so decode the gap with consecutive
                # get_batch calls and drop it.
                while self._next < start:
                    step = min(_DISCARD_CHUNK, start - self._next)
                    self._vr.get_batch(list(range(self._next, self._next + step)))
                    self._next += step
            # else: decord seeks/skips by itself (decoding within the GOP).
            batch = self._vr.get_batch(list(range(start, stop))).asnumpy()
        except VideoOpenError as exc:
            self._reset()
            raise VideoReadError(self.path, exc.reason, start=start, stop=stop) from exc
        except _DECORD_ERRORS as exc:
            self._reset()
            raise VideoReadError(
                self.path, f"decord failed to decode: {_short(exc)}", start=start, stop=stop
            ) from exc
        if batch.shape[0] != stop - start:
            self._reset()
            raise self._ran_out(start + batch.shape[0], start, stop)
        self._next = stop
        self._store_batch(out, batch, start)

    def _reset(self) -> None:
        self._vr = None
        self._next = 0

    def _close(self) -> None:
        self._vr = None
