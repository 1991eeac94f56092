"""PyAV (FFmpeg) backend.

Decodes forward with one demux/decode generator and counts frames, so the
frame index of a sequential read never depends on timestamps.

Seeking (backward jumps, forward jumps > ``FORWARD_SEEK_GAP``) uses timestamps
only when they are trustworthy: while decoding, every frame's pts is checked
against ``index = round((pts - pts_of_frame_0) * time_base * fps)``. If all
checked frames agree (constant frame rate, sane timestamps), a seek goes to the
keyframe before the target time and decodes forward, identifying frames by
pts; a seek that lands after the target is retried further back. If the
timestamps disagree with the count anywhere (variable frame rate, or AVI with
packed B-frames such as OpenCV's ``Megamind_bugy.avi``, whose pts run
1, 2, 3, 5, 4, ...), seeking is switched off and a backward jump re-opens the
file and decodes forward from frame 0: slow, but the right frames.

Limitation: the judgement rests on the frames decoded so far (at least the
first 32). A file that is constant-rate at the start and variable-rate later
can mislead a seek into that later region before sequential decoding has seen
it; sequential reads (the snippet pipeline) are never affected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vad.io.errors import VideoOpenError, VideoReadError
from vad.io.probe import pick_video_stream
from vad.io.video import FORWARD_SEEK_GAP, VideoReader

logger = logging.getLogger(__name__)

__all__ = ["PyAVReader"]

# Frames decoded from the start to judge the timestamps before the first seek.
_CALIBRATION_FRAMES = 32
# Seek attempts (each further back) before giving up and decoding from frame 0.
_SEEK_RETRIES = 3


class PyAVReader(VideoReader):
    """Video reader on PyAV; see the module docstring for the seeking policy."""

    backend_name = "pyav"

    def _open(self) -> None:
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._pending: av.VideoFrame | None = None  # decoded but not yet consumed
        self._next = 0  # index of the frame the iterator yields next
        self._origin_pts: int | None = None  # pts of frame 0
        self._ts_ok: bool | None = None  # None: not judged yet
        self._ts_checked = 0
        # One reformatter for the reader's lifetime: frame.to_ndarray() builds a new
        # swscale context per frame, which costs more than decoding small frames.
        self._reformatter = VideoReformatter()
        fps = self._probe.fps_rational
        self._fps = fps if fps else Fraction(self._probe.fps).limit_denominator(1001000)
        try:
            self._reopen()
        except (av.FFmpegError, OSError) as exc:
            raise VideoOpenError(self.path, f"PyAV cannot open it: {exc}") from exc

    # -- decoder plumbing -----------------------------------------------------

    def _reopen(self) -> None:
        """(Re)open the container positioned at frame 0."""
        self._close()
        container = av.open(self.path, mode="r")
        stream = pick_video_stream(container)
        assert stream is not None  # the probe found one
        stream.thread_type = "AUTO"  # frame+slice threads; output is bit-identical
        self._container = container
        self._stream = stream
        self._time_base = stream.time_base
        self._frames = self._decode_gen()
        self._pending = None
        self._next = 0

    def _decode_gen(self) -> Iterator[av.VideoFrame]:
        assert self._container is not None
        for packet in self._container.demux(self._stream):
            yield from packet.decode()

    def _pull(self) -> av.VideoFrame | None:
        """Next decoded frame (display order), or None at end of stream."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        assert self._frames is not None
        return next(self._frames, None)

    def _pts_index(self, pts: int | None) -> int | None:
        if pts is None or self._origin_pts is None:
            return None
        return round((pts - self._origin_pts) * self._time_base * self._fps)

    def _observe(self, frame: av.VideoFrame, index: int) -> None:
        """Check that a frame's pts agrees with its counted index (see module doc)."""
        if self._ts_ok is False:
            return
        if index == 0 and self._origin_pts is None:
            self._origin_pts = frame.pts
        if self._pts_index(frame.pts) != index:
            self._ts_ok = False
            logger.info(
                "%s: frame %d has pts %s, inconsistent with a constant frame rate; "
                "PyAV will re-decode from the start instead of seeking",
                self.path, index, frame.pts,
            )
            return
        self._ts_checked += 1
        if self._ts_checked >= _CALIBRATION_FRAMES or index == self._info.n_frames - 1:
            self._ts_ok = True

    def _advance(self, start: int, stop: int) -> av.VideoFrame:
        """Decode the frame at ``self._next`` and move on; raise when the stream ends."""
        frame = self._pull()
        if frame is None:
            raise self._ran_out(self._next, start, stop)
        self._observe(frame, self._next)
        self._next += 1
        return frame

    # -- seeking ------------------------------------------------------------------

    def _calibrate(self, start: int, stop: int) -> None:
        """Decode the first frames from the start to judge the timestamps."""
        self._reopen()
        limit = min(_CALIBRATION_FRAMES, self._info.n_frames)
        while self._ts_ok is None and self._next < limit:
            self._advance(start, stop)

    def _seek(self, target: int, start: int, stop: int) -> None:
        """Position the decoder so that the next frame it yields is ``target``."""
        if self._ts_ok is None:
            self._calibrate(start, stop)
            if self._next <= target <= self._next + FORWARD_SEEK_GAP:
                return  # calibration already brought us close enough
        if not self._ts_ok or self._origin_pts is None:
            if target < self._next:
                self._reopen()
            return  # decode forward from here
        assert self._container is not None
        back_s = Fraction(0)
        for _ in range(_SEEK_RETRIES):
            t = Fraction(target) / self._fps - back_s
            ts = self._origin_pts + int(max(t, Fraction(0)) / self._time_base)
            try:
                self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
            except av.FFmpegError as exc:  # e.g. a container without seek support
                logger.info("%s: seek failed (%s); decoding from the start", self.path, exc)
                self._ts_ok = False
                break
            self._frames = self._decode_gen()
            self._pending = None
            frame = next(self._frames, None)
            while frame is not None:
                idx = self._pts_index(frame.pts)
                if idx is None or idx >= target:
                    break
                frame = next(self._frames, None)
            idx = self._pts_index(frame.pts) if frame is not None else None
            if idx == target:
                self._pending = frame
                self._next = target
                return
            # Landed after the target (keyframe index coarser than asked) or lost
            # the timestamps: retry from further back.
            back_s = back_s * 2 + 2
        logger.info("%s: seek to frame %d failed; decoding from the start", self.path, target)
        self._reopen()

    # -- VideoReader hooks --------------------------------------------------------

    def _read_into(self, start: int, stop: int, out: np.ndarray) -> None:
        try:
            if self._frames is None:
                self._reopen()
            if start < self._next or start - self._next > FORWARD_SEEK_GAP:
                self._seek(start, start, stop)
            while self._next < start:
                self._advance(start, stop)  # decoded, not converted
            for k in range(stop - start):
                index = self._next
                frame = self._advance(start, stop)
                rgb = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
                self._store(out, k, rgb, index)
        except av.FFmpegError as exc:
            at = self._next
            self._reset()
            raise VideoReadError(
                self.path, f"decoding failed at frame {at}: {exc}", start=start, stop=stop
            ) from exc
        except VideoReadError:
            self._reset()
            raise

    def _reset(self) -> None:
        self._close()

    def _close(self) -> None:
        frames = getattr(self, "_frames", None)
        if frames is not None:
            frames.close()
        self._frames = None
        self._pending = None
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
        self._container = None
