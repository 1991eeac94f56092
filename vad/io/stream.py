"""Live streams as a frame source that never gets stuck: RTSP/HTTP cameras, devices, files.

:class:`StreamSource` runs one **reader thread** per stream. Only that thread opens, reads and
closes the PyAV container (closing it from another thread while it demuxes can crash FFmpeg).
Every blocking call is bounded: ``av.open(..., timeout=(open_timeout_s, read_timeout_s))``
installs FFmpeg's interrupt callback, and the protocol's own ``timeout``/``rw_timeout`` options
are set too, so a dead socket, a camera that accepts and never answers, or a frozen server ends
the call with an error instead of hanging.

A **watchdog thread** (apart from the reader, as Frigate does) checks the age of the last frame:
no frame for ``stall_timeout_s`` marks the stream *stalled* and asks the reader to reconnect.
The reader reconnects on any error, on end of stream, on a stall, and on timestamps that jump
forward by more than ``max_pts_jump_s`` or go backwards. Reconnects wait a capped exponential
backoff with jitter (``backoff_initial_s`` doubling up to ``backoff_max_s``); the backoff
resets only after the stream was live for ``healthy_after_s``, so a camera that connects and
drops at once is not hammered. Every timeout is an option of :class:`StreamOptions`, per stream.

Frames are decimated to ``analysis_fps`` (by presentation time) and handed to the consumer
through a **latest-wins** bounded queue (:class:`LatestQueue`): when the consumer is slow the
oldest frame is dropped and counted, so the consumer never falls behind real time and memory
stays bounded. Iterating the source yields :class:`~vad.io.source.Frame` objects; ``segment``
grows by one after every reconnect, timestamp discontinuity and resolution change, which is how
the consumer knows there was a gap (the monitor then resets the scorer's temporal state: the
snippet buffer, smoothing, the open event; the head's fitted model is kept).

States (``state``): ``connecting`` -> ``live`` -> (``stalled`` | ``reconnecting``) ->
``connecting`` ..., and ``stopped`` at the end. A stream that can never work (a malformed URL,
wrong credentials) keeps retrying at the capped backoff and reports ``last_error``, so one bad
camera never stops the others. Credentials never appear in logs or names: see
:func:`redact_url`.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from vad.io.source import Frame, FrameSource

logger = logging.getLogger(__name__)

__all__ = ["redact_text", "LatestQueue", "StreamOptions", "StreamSource", "StreamStats", "Backoff", "redact_url", "STATES"]

STATES = ("connecting", "live", "stalled", "reconnecting", "stopped")


def redact_url(url: str) -> str:
    """The URL without user name and password (``rtsp://***@host/path``): the only form of a
    camera URL that vad writes to logs, metrics, events or health reports."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact_text(text: str) -> str:
    """``text`` with the credentials of any URL in it replaced by ``***`` (error messages)."""
    return _CREDENTIALS.sub("***@", text)


@dataclass(frozen=True)
class StreamOptions:
    """Per-stream settings (``monitor.stream`` in the config; every key per camera)."""

    transport: str = "tcp"  # RTSP transport: tcp (default; survives NAT and loss) | udp
    open_timeout_s: float = 20.0  # connecting (and the first packet) may take this long
    read_timeout_s: float = 10.0  # one blocking read may take this long
    stall_timeout_s: float = 20.0  # no frame for this long while live: stalled -> reconnect
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_jitter: float = 0.25  # +- this fraction of each wait, so cameras do not retry in step
    healthy_after_s: float = 30.0  # the backoff resets only after this long live
    max_pts_jump_s: float = 10.0  # a forward timestamp jump larger than this is a discontinuity
    analysis_fps: float | None = 10.0  # frames handed on per second (None: every frame)
    queue_size: int = 2  # latest-wins queue between the reader and the scorer
    loop: bool = False  # files: start again at the end (demos, tests)
    pace: bool = False  # files: hand frames on at their presentation time, as a camera would
    options: dict[str, str] = field(default_factory=dict)  # extra FFmpeg options
    format: str | None = None  # FFmpeg input format, e.g. v4l2 for /dev/video0 (None: probe)

    def __post_init__(self) -> None:
        for name in ("open_timeout_s", "read_timeout_s", "stall_timeout_s", "backoff_initial_s", "backoff_max_s",
                     "healthy_after_s", "max_pts_jump_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"stream.{name} must be positive, got {getattr(self, name)}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("stream.backoff_max_s must be >= backoff_initial_s")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError(f"stream.backoff_jitter must be in [0, 1), got {self.backoff_jitter}")
        if self.analysis_fps is not None and self.analysis_fps <= 0:
            raise ValueError(f"stream.analysis_fps must be positive or null, got {self.analysis_fps}")
        if self.queue_size < 1:
            raise ValueError("stream.queue_size must be >= 1")
        if self.transport not in ("tcp", "udp"):
            raise ValueError(f"stream.transport must be tcp or udp, got {self.transport!r}")


class Backoff:
    """Capped exponential backoff with jitter; :meth:`healthy` resets it once the stream has
    been up long enough."""

    def __init__(self, initial_s: float, max_s: float, jitter: float, healthy_after_s: float,
                 rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s, self.jitter, self.healthy_after_s = initial_s, max_s, jitter, healthy_after_s
        self.rng = rng or random.Random()
        self.failures = 0

    def next_wait(self) -> float:
        base = min(self.max_s, self.initial_s * (2 ** self.failures))
        self.failures += 1
        return base * (1 + self.rng.uniform(-self.jitter, self.jitter))

    def healthy(self, up_s: float) -> None:
        if up_s >= self.healthy_after_s:
            self.failures = 0


class LatestQueue:
    """A bounded queue whose ``put`` never blocks: when full the oldest item is dropped (and
    counted in ``dropped``). ``get`` waits up to ``timeout`` seconds, None when nothing came."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._cond:
            while len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float) -> Any:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class StreamStats:
    """Counters of one stream (read by metrics and the health endpoint)."""

    frames_in: int = 0  # decoded frames
    frames_out: int = 0  # frames handed to the queue (after decimation)
    connects: int = 0  # successful opens
    reconnects: int = 0  # successful opens after the first (after errors, stalls, discontinuities)
    failures: int = 0  # connections that failed or ended (each is followed by a backoff and a retry)
    stalls: int = 0
    discontinuities: int = 0  # timestamp jumps / resolution changes (a new segment)
    last_frame_wall: float | None = None
    last_error: str | None = None
    size: tuple[int, int] | None = None  # (width, height) of the last frame


class _Reconnect(Exception):
    """Raised inside the reader loop to leave the current connection."""


class StreamSource(FrameSource):
    """A live stream (or a looped file) as a frame source; see the module docstring.

    ``url``: ``rtsp://``, ``rtsps://``, ``http(s)://``, a file path, or a device (``/dev/video0``
    with ``format="v4l2"``). ``name``: the camera's name in outputs (default: the redacted URL).
    Start with ``with source:`` (or :meth:`start`); iterate to get frames until :meth:`stop`."""

    def __init__(self, url: str, options: StreamOptions | None = None, *, name: str | None = None,
                 format: str | None = None, clock: Any = time) -> None:
        self.url = url
        self.options = options or StreamOptions()
        self.source_id = name or redact_url(url)
        self.format = format
        self.queue = LatestQueue(self.options.queue_size)
        self.stats = StreamStats()
        self.state = "connecting"
        self.segment = 0
        self._clock = clock
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._reader: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._index = 0
        self._log = logging.getLogger(f"{__name__}.{self.source_id}")
        self._backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s,
                                self.options.backoff_jitter, self.options.healthy_after_s)
        self._live_since: float | None = None

    # -- FrameSource ---------------------------------------------------------------------------
    @property
    def fps(self) -> float | None:
        return self.options.analysis_fps

    @property
    def n_frames(self) -> int | None:
        return None

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def __iter__(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            frame = self.queue.get(timeout=0.25)
            if frame is not None:
                yield frame

    def get(self, timeout: float = 0.25) -> Frame | None:
        """The next frame, or None after ``timeout`` seconds without one."""
        return self.queue.get(timeout)

    def __enter__(self) -> StreamSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def close(self) -> None:
        self.stop()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._reader is not None:
            return
        self._reader = threading.Thread(target=self._read_loop, name=f"reader-{self.source_id}", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.source_id}", daemon=True)
        self._reader.start()
        self._watchdog.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop both threads; waits for the reader (at most one read timeout) to close the container."""
        self._stop.set()
        wait = timeout if timeout is not None else self.options.read_timeout_s + self.options.open_timeout_s + 2
        for t in (self._reader, self._watchdog):
            if t is not None:
                t.join(wait)
                if t.is_alive():
                    self._log.warning("%s did not stop within %.0f s", t.name, wait)
        self.state = "stopped"

    @property
    def last_frame_age_s(self) -> float | None:
        last = self.stats.last_frame_wall
        return None if last is None else max(0.0, self._clock.time() - last)

    # -- the watchdog --------------------------------------------------------------------------
    def _watch(self) -> None:
        period = min(1.0, self.options.stall_timeout_s / 4)
        while not self._stop.wait(period):
            if self.state != "live":
                continue
            # quiet since the later of the last frame and this connection's start (a frame from
            # before a reconnect says nothing about this connection)
            now = self._clock.time()
            since = max(self.stats.last_frame_wall or 0.0, self._live_since or now)
            quiet = now - since
            if quiet >= self.options.stall_timeout_s:
                self.state = "stalled"
                self.stats.stalls += 1
                self._log.warning("stalled: no frame for %.1f s (stall_timeout_s %.0f); reconnecting",
                                  quiet, self.options.stall_timeout_s)
                self._reconnect.set()

    # -- the reader ----------------------------------------------------------------------------
    def _av_options(self) -> dict[str, str]:
        o = self.options
        opts: dict[str, str] = {}
        scheme = urlsplit(self.url).scheme.lower() if "://" in self.url else ""
        if scheme in ("rtsp", "rtsps"):
            # FFmpeg's socket timeout (microseconds) for RTSP; rtsp_transport as configured
            opts.update({"rtsp_transport": o.transport, "timeout": str(int(o.read_timeout_s * 1e6)),
                         # probe 1 s, not FFmpeg's default ~3 s that then arrives as one burst
                         "analyzeduration": "1000000", "fflags": "nobuffer"})
        elif scheme in ("http", "https", "tcp"):
            opts.update({"rw_timeout": str(int(o.read_timeout_s * 1e6)), "timeout": str(int(o.open_timeout_s * 1e6))})
        opts.update(o.options)
        return opts

    def _read_loop(self) -> None:
        first = True
        while not self._stop.is_set():
            self.state = "connecting" if first else "reconnecting"
            if not first:
                wait = self._backoff.next_wait()
                self._log.info("reconnecting in %.1f s", wait)
                if self._stop.wait(wait):
                    break
                self.state = "connecting"
            first = False
            self._reconnect.clear()
            try:
                self._session()
            except _Reconnect as why:
                self._log.info("%s", why)
            except Exception as err:  # noqa: BLE001 - any failure of one connection: retry
                msg = redact_text(f"{type(err).__name__}: {err}")
                self.stats.last_error = msg
                self._log.warning("stream error: %s", msg)
            finally:
                if self._live_since is not None:
                    self._backoff.healthy(self._clock.time() - self._live_since)
                    self._live_since = None
            if not self._stop.is_set():
                self.stats.failures += 1
                self.segment += 1
        self.state = "stopped"

    def _session(self) -> None:
        """One connection: open, read until an error, a stall, a discontinuity or stop; the
        container is closed here, in the reader thread, whatever happens."""
        import av

        o = self.options
        container = av.open(self.url, format=self.format or o.format, options=self._av_options(),
                            timeout=(o.open_timeout_s, o.read_timeout_s))
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self.stats.connects += 1
            self.stats.reconnects = self.stats.connects - 1
            self.stats.last_error = None
            self._live_since = self._clock.time()
            self.state = "live"
            self._log.info("connected (%s)", stream.codec_context.name)
            period = None if o.analysis_fps is None else 1.0 / o.analysis_fps
            next_due: dict[str, float] = {}
            last_pts: float | None = None
            offset = 0.0  # added to pts after a loop of a file, so time keeps growing
            size: tuple[int, int] | None = None
            paced: tuple[float, float] | None = None  # (wall, pts) of the first frame, with pace
            while not self._stop.is_set():
                got = False
                for frame in container.decode(stream):
                    got = True
                    if self._stop.is_set():
                        return
                    if self._reconnect.is_set():
                        raise _Reconnect("reconnect requested by the watchdog")
                    now = self._clock.time()
                    pts = float(frame.time) + offset if frame.time is not None else None
                    if pts is not None and last_pts is not None:
                        if pts < last_pts - 1e-3 or pts - last_pts > o.max_pts_jump_s:
                            self.stats.discontinuities += 1
                            raise _Reconnect(f"timestamp discontinuity ({last_pts:.3f} s -> {pts:.3f} s)")
                    self.stats.frames_in += 1
                    self.stats.last_frame_wall = now
                    if self.state == "stalled":
                        self.state = "live"
                    last_pts = pts if pts is not None else last_pts
                    if o.pace and pts is not None:
                        if paced is None:
                            paced = (now, pts)
                        ahead = paced[0] + (pts - paced[1]) - now
                        if ahead > 0 and self._stop.wait(ahead):
                            return
                        now = self._clock.time()
                        self.stats.last_frame_wall = now
                    # decimate to analysis_fps by presentation time; frames without one (often the
                    # first after connecting) by wall time, on their own schedule
                    clock, t = ("pts", pts) if pts is not None else ("wall", now)
                    if period is not None:
                        due = next_due.get(clock)
                        if due is not None and t < due - 1e-6:
                            continue
                        # on schedule: the next slot; late by more than a period: resync
                        next_due[clock] = due + period if due is not None and t - due < period else t + period
                    image = frame.to_ndarray(format="rgb24")
                    this_size = (image.shape[1], image.shape[0])
                    if size is not None and this_size != size:
                        self.stats.discontinuities += 1
                        self.segment += 1
                        self._log.warning("resolution changed %dx%d -> %dx%d", *size, *this_size)
                    size = this_size
                    self.stats.size = size
                    self.queue.put(Frame(self._index, pts, now, np.ascontiguousarray(image), self.segment))
                    self._index += 1
                    self.stats.frames_out += 1
                if self._stop.is_set():
                    return
                if o.loop and got:  # a file: start again, timestamps keep growing
                    container.seek(0)
                    rate = float(stream.average_rate) if stream.average_rate else 0.0
                    offset = (last_pts or 0.0) + (1.0 / rate if rate > 0 else (period or 0.04))
                    last_pts = None
                    continue
                raise _Reconnect("end of stream")
        finally:
            container.close()
