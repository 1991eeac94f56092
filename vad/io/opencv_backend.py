"""OpenCV (``cv2.VideoCapture`` with the FFmpeg backend) reader.

* Always the FFmpeg capture backend (``CAP_FFMPEG``), software decoding
  (``VIDEO_ACCELERATION_NONE``) and no auto-rotation, so its frames match
  PyAV's bit for bit (same FFmpeg generation, same swscale BGR conversion).
* ``n_frames``/``fps`` come from the shared PyAV probe: OpenCV's
  ``CAP_PROP_FRAME_COUNT`` is ``duration x fps`` for containers without a
  stored count (it says 40 for a Matroska file cut after 19 frames).
* ``read()`` returning ``False`` is OpenCV's only signal for both end of
  stream and a decode error; either becomes :class:`VideoReadError` naming the
  frame where decoding stopped. (OpenCV also opens AV1 files it cannot decode:
  it reports their frame count and then reads nothing.)
* Backward and far-forward jumps use ``CAP_PROP_POS_FRAMES``, whose FFmpeg
  implementation seeks to a keyframe and decodes forward, counting frames; it
  returned the right frames on every file tested, including AVI with packed
  B-frames. OpenCV maps frame numbers to times with the nominal fps, so on
  variable-frame-rate files only sequential reads are exact. If the seek is
  refused or reports another position, the reader decodes forward from frame 0.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from vad.io.errors import VideoOpenError, VideoReadError
from vad.io.video import FORWARD_SEEK_GAP, VideoReader

logger = logging.getLogger(__name__)

__all__ = ["OpenCVReader"]


class OpenCVReader(VideoReader):
    """Video reader on ``cv2.VideoCapture``; see the module docstring."""

    backend_name = "opencv"

    def _open(self) -> None:
        self._cap: cv2.VideoCapture | None = None
        self._next = 0
        self._cap = self._make_capture()
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if count != self._info.n_frames:
            logger.debug(
                "%s: OpenCV estimates %s frames, probe counted %d; using the probe",
                self.path, count, self._info.n_frames,
            )

    def _make_capture(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_HW_ACCELERATION, cv2.VIDEO_ACCELERATION_NONE]
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise VideoOpenError(self.path, "OpenCV (FFmpeg backend) cannot open it")
        # Frames as stored, like decord and PyAV (no display-matrix rotation).
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        return cap

    def _read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        try:
            self._read_range(start, stop, out)
        except cv2.error as exc:
            self._reset()
            raise VideoReadError(self.path, f"OpenCV error: {exc}", start=start, stop=stop) from exc
        except VideoReadError:
            self._reset()
            raise

    def _read_range(self, start: int, stop: int, out: np.ndarray) -> None:
        if self._cap is None:
            self._cap = self._make_capture_for_read(start, stop)
            self._next = 0
        cap = self._cap
        if start < self._next or start - self._next > FORWARD_SEEK_GAP:
            if cap.set(cv2.CAP_PROP_POS_FRAMES, start) and cap.get(cv2.CAP_PROP_POS_FRAMES) == start:
                self._next = start
            else:
                # Seek refused or landed elsewhere: decode forward from frame 0 instead.
                logger.info("%s: OpenCV seek to frame %d failed; decoding from the start",
                            self.path, start)
                self._close()
                self._cap = cap = self._make_capture_for_read(start, stop)
                self._next = 0
        while self._next < start:
            if not cap.grab():  # decode only, no colour conversion
                raise self._stopped(start, stop)
            self._next += 1
        for k in range(stop - start):
            ok, bgr = cap.read()
            if not ok or bgr is None:
                raise self._stopped(start, stop)
            self._store(out, k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._next)
            self._next += 1

    def _make_capture_for_read(self, start: int, stop: int) -> cv2.VideoCapture:
        try:
            return self._make_capture()
        except VideoOpenError as exc:
            raise VideoReadError(self.path, exc.reason, start=start, stop=stop) from exc

    def _stopped(self, start: int, stop: int) -> VideoReadError:
        return VideoReadError(
            self.path,
            f"OpenCV stopped decoding at frame {self._next} of {self._info.n_frames} "
            f"(file truncated, damaged, or a codec OpenCV cannot decode)",
            start=start, stop=stop,
        )

    def _reset(self) -> None:
        self._close()
        self._next = 0

    def _close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
        self._cap = None
