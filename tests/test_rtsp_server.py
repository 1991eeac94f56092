"""The tests' real RTSP server (``tests/rtsp.py`` + ``tests/rtsp_server.py``), seen from PyAV.

These pin down what the live-camera tests will rely on: a looping stream paced at the
file's frame rate, basic auth, a crash and restart on the same port, and a hung server
that makes a client with a read timeout fail instead of blocking. Every network read runs
in a thread with a deadline, so a hang fails the test instead of stalling pytest.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import av.error
import numpy as np
import pytest

from tests.rtsp import RTSPServer, free_port, rtsp_available, write_h264
from tests.videos import skip_or_fail

FPS = 10
H, W = 120, 160
T = 3 * FPS  # a 3 s file: shorter than what test_loops_at_file_frame_rate reads

R = TypeVar("R")


@functools.cache
def _rtsp_missing() -> str | None:
    return rtsp_available()


def need_rtsp() -> None:
    """Skip here, fail under CI (called in each test, so CI reports failures, not errors)."""
    reason = _rtsp_missing()
    if reason is not None:
        skip_or_fail(reason)


def moving_square(n: int = T) -> np.ndarray:
    """(n, H, W, 3) frames: a white square crossing a grey background, one step a frame."""
    frames = np.full((n, H, W, 3), 60, np.uint8)
    for t in range(n):
        x = 4 + t * (W - 28) // max(1, n - 1)
        frames[t, 50:70, x:x + 20] = 255
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_h264(tmp_path_factory.mktemp("rtsp") / "square.mp4", moving_square(), FPS)


@pytest.fixture(scope="module")
def clip_mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_h264(tmp_path_factory.mktemp("rtsp") / "square.mkv", moving_square(), FPS)


@dataclass
class Got:
    """One decoded frame as the client saw it."""

    arrival: float  # time.monotonic() when decoded
    time: float | None  # the frame's timestamp, seconds
    width: int
    height: int
    key: bool
    square_x: int  # column of the square's left edge: the picture really moves


def within(limit_s: float, fn: Callable[[], R]) -> R:
    """fn() in a daemon thread; fail the test if it takes longer than limit_s (a hang)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        pytest.fail(f"RTSP client still blocked after {limit_s:.0f} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def read_frames(url: str, n: int, timeout: tuple[float, float] = (10, 5)) -> tuple[float, list[Got]]:
    """(when av.open was called, the first n decoded frames), over RTSP/TCP."""
    t_open = time.monotonic()
    got: list[Got] = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=timeout) as container:
        for frame in container.decode(video=0):
            gray = frame.to_ndarray(format="gray")
            cols = np.flatnonzero(gray[60] > 160)
            got.append(Got(time.monotonic(), frame.time, frame.width, frame.height, frame.key_frame,
                           int(cols[0]) if cols.size else -1))
            if len(got) >= n:
                break
    return t_open, got


#: FFmpeg buffers the frames it reads while probing the stream in av.open (analyzeduration:
#: at most 5 s, about 2.7 s here) and then hands them over at once; only frames after that
#: burst show the server's pacing.
PROBE_MAX_S = 5
LIVE_TAIL = 2 * FPS  # frames measured, after the longest possible burst
N_READ = (PROBE_MAX_S + 2) * FPS  # 7 s of a 3 s file: it loops twice


def live_rate(got: list[Got]) -> float:
    """Frames per second over the last LIVE_TAIL frames, which arrived live whatever the
    probing burst was (N_READ leaves room for the longest one)."""
    tail = [g.arrival for g in got[-LIVE_TAIL:]]
    return (len(tail) - 1) / (tail[-1] - tail[0])


def test_loops_at_file_frame_rate(clip: Path) -> None:
    need_rtsp()
    with RTSPServer(clip, loop=True) as server:
        t_open, got = within(30, lambda: read_frames(server.url, N_READ))
    assert server.proc is not None and server.proc.poll() is not None, "server left running"

    assert len(got) == N_READ  # more than the 3 s file: it looped
    assert {(g.width, g.height) for g in got} == {(W, H)}
    assert got[0].key, "a client joining mid-stream starts at a keyframe"
    # Timestamps: the file's frame rate, increasing straight across the loop boundaries.
    # (FFmpeg gives the very first RTP frame no pts: it has no RTCP sender report yet.)
    times = [g.time for g in got if g.time is not None]
    assert len(times) >= len(got) - 1
    np.testing.assert_allclose(np.diff(times), 1 / FPS, atol=0.011)
    # The picture is the file's, looping: the square jumps back to the left.
    xs = [g.square_x for g in got]
    assert min(xs) >= 0 and sum(b < a for a, b in zip(xs, xs[1:])) >= 2
    # Paced like a camera, not served as fast as the file can be read.
    rate = live_rate(got)
    assert 6 <= rate <= 14, f"{rate:.1f} fps over the last {LIVE_TAIL} frames"
    overall = (len(got) - 1) / (got[-1].arrival - t_open)
    assert overall <= 14, f"{overall:.1f} fps from av.open on: frames not paced"


def test_basic_auth(clip: Path) -> None:
    need_rtsp()
    with RTSPServer(clip, user="alice", password="s3cr:t@x") as server:
        assert server.url == f"rtsp://alice:s3cr%3At%40x@127.0.0.1:{server.port}/cam"
        _, got = within(20, lambda: read_frames(server.url, 5))
        assert len(got) == 5 and (got[0].width, got[0].height) == (W, H)

        wrong = f"rtsp://alice:nope@127.0.0.1:{server.port}/cam"
        for url in (wrong, server.plain_url):
            t0 = time.monotonic()
            with pytest.raises(av.error.HTTPUnauthorizedError, match="401 Unauthorized"):
                within(15, lambda url=url: read_frames(url, 1))
            assert time.monotonic() - t0 < 10


def test_kill_then_restart_on_same_port(clip_mkv: Path) -> None:
    need_rtsp()
    port = free_port()
    with RTSPServer(clip_mkv, port=port) as server:
        _, got = within(20, lambda: read_frames(server.url, 5))
        assert len(got) == 5

        server.kill()
        assert not server.running
        with pytest.raises(av.error.ConnectionRefusedError):
            within(15, lambda: read_frames(server.url, 1))

        server.restart()
        assert server.port == port and server.running
        _, got = within(20, lambda: read_frames(server.url, 5))
        assert len(got) == 5 and (got[0].width, got[0].height) == (W, H)
    assert not server.running


def test_frozen_server_times_out_reader(clip: Path) -> None:
    need_rtsp()
    with RTSPServer(clip) as server:
        frozen_at: list[float] = []

        def read_through_freeze() -> None:
            # Demux only: SIGSTOP can land mid-frame, and decoding the truncated packet the
            # interrupted read hands back would fail with InvalidDataError instead (seen in CI).
            # What this test pins down is the blocked read itself failing.
            n = 0
            with av.open(server.url, options={"rtsp_transport": "tcp"}, timeout=(5, 2)) as container:
                for packet in container.demux(video=0):
                    n += packet.size > 0
                    if n == 5 and not frozen_at:
                        server.freeze()
                        frozen_at.append(time.monotonic())
            raise AssertionError(f"stream ended without an error after {n} packets")

        try:
            # PyAV's read timeout (2 s) interrupts the blocked read: FFmpeg's AVERROR_EXIT.
            with pytest.raises(av.error.ExitError, match="Immediate exit requested"):
                within(20, read_through_freeze)
            failed_after = time.monotonic() - frozen_at[0]
        finally:
            server.thaw()
        assert failed_after < 10, f"the reader failed {failed_after:.1f} s after the freeze"

        # Thawed, it serves new clients again.
        _, got = within(20, lambda: read_frames(server.url, 5))
        assert len(got) == 5
    assert not server.running


def test_without_loop_stream_ends(clip: Path) -> None:
    need_rtsp()
    with RTSPServer(clip, loop=False) as server:
        def read_all() -> int:
            with av.open(server.url, options={"rtsp_transport": "tcp"}, timeout=(10, 5)) as container:
                return sum(1 for _ in container.decode(video=0))

        n = within(15, read_all)
        assert 0 < n <= T  # joined mid-file, then EOS at its end
        # The file is over: later clients are told so at once.
        with pytest.raises(av.error.HTTPNotFoundError):
            within(10, lambda: read_frames(server.url, 1))
