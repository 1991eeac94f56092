#!/usr/bin/python3
"""A real RTSP "camera" for the tests: serves an H.264 .mp4/.mkv file over RTSP, live.

Run by the *system* Python (``/usr/bin/python3``: PyGObject and GStreamer come from Debian,
see ``scripts/install_system_deps.sh``), never by the venv; ``tests/rtsp.py`` drives it.

Design, so that it behaves like an IP camera rather than a file server:

* one *producer* pipeline (``filesrc ! demux ! h264parse ! appsink sync=true``) plays the
  file at its own frame rate from start-up, whether or not anyone watches; ``--loop`` loops
  it with segment seeks (non-flushing, so running time and timestamps keep increasing and
  the stream never ends); without ``--loop`` the clients get EOS at the file's end;
* the RTSP media is ``appsrc is-live=true ! rtph264pay``, shared by all clients: each
  media joins the producer at its next keyframe and gets the producer's buffers re-stamped
  on its own clock, so the file's H.264 is never decoded or re-encoded, and a client that
  reconnects sees the same "live" picture, not the file from its start;
* after the process was stopped (SIGSTOP) and continued, the frames it is late for are
  dropped and the media re-joins at the next on-time keyframe, as a camera would.

Prints ``READY rtsp://127.0.0.1:PORT/PATH`` on stdout once the server listens; exits 0 on
SIGTERM/SIGINT (or when its parent process dies), 1 with a message on stderr if the file
or the port is unusable.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

#: A producer buffer later than this (after SIGSTOP/SIGCONT) is dropped, not burst out.
MAX_LATENESS = int(0.5 * Gst.SECOND)

DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".m4v": "qtdemux", ".mkv": "matroskademux"}


@dataclass
class Consumer:
    """One RTSP media's appsrc and how the producer's running time maps onto its clock."""

    appsrc: Gst.Element
    offset: int | None = None  # media running time - producer running time; None: wait for a keyframe


class Producer:
    """Plays the file in real time (appsink sync=true) and feeds every consumer's appsrc."""

    def __init__(self, path: str, loop: bool) -> None:
        ext = path[path.rfind("."):].lower() if "." in path else ""
        demux = DEMUXERS.get(ext)
        if demux is None:
            raise SystemExit(f"rtsp_server: unsupported container {ext!r} (want one of {sorted(DEMUXERS)})")
        self.loop = loop
        self.pipeline = Gst.parse_launch(
            f"filesrc name=src ! {demux} ! h264parse name=parse config-interval=-1 "
            "! video/x-h264,stream-format=byte-stream,alignment=au "
            "! appsink name=sink sync=true emit-signals=true max-buffers=4 drop=false"
        )
        self.pipeline.get_by_name("src").set_property("location", path)
        self.sink = self.pipeline.get_by_name("sink")
        self.sink.connect("new-sample", self._on_sample)
        self.caps: Gst.Caps | None = None
        self.ended = False
        self.on_end: Callable[[], None] | None = None
        self.consumers: dict[int, Consumer] = {}
        self.lock = threading.Lock()
        # Loop bookkeeping (streaming thread only), see _fix_loop_base.
        self.duration = 0
        self._parse_src = self.pipeline.get_by_name("parse").get_static_pad("src")
        self._base = 0
        self._first_segment = True
        self._max_end = 0
        if loop:
            self.pipeline.get_by_name("parse").get_static_pad("sink").add_probe(
                Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM | Gst.PadProbeType.EVENT_FLUSH,
                self._fix_loop_base)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def start(self) -> None:
        """Preroll (fails fast on a bad file), arm the looping segment seek, and play."""
        self.pipeline.set_state(Gst.State.PAUSED)
        ret, _, _ = self.pipeline.get_state(10 * Gst.SECOND)
        if ret == Gst.StateChangeReturn.FAILURE or ret == Gst.StateChangeReturn.ASYNC:
            raise SystemExit(f"rtsp_server: cannot play the file ({self._error_text() or ret.value_nick})")
        if self.loop:
            ok, duration = self.pipeline.query_duration(Gst.Format.TIME)
            self.duration = duration if ok and duration > 0 else 0
            if not self._seek(Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT):
                raise SystemExit("rtsp_server: the file's demuxer cannot seek, so --loop is impossible")
            self.pipeline.get_state(10 * Gst.SECOND)
        self.pipeline.set_state(Gst.State.PLAYING)

    def _seek(self, flags: Gst.SeekFlags) -> bool:
        return self.pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)

    def _fix_loop_base(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        """Make each loop start one file length after the previous one, in running time.

        After a non-flushing segment seek, qtdemux and matroskademux start the new
        segment's running time at the *last frame's pts*, not at its end, so the first frame
        of a loop would repeat the last frame's timestamp: a frame of drift per loop, and two
        frames sent at once. The h264parse src pad's offset corrects the segment's base.
        """
        if info.type & Gst.PadProbeType.BUFFER:
            buf = info.get_buffer()
            if buf.pts != Gst.CLOCK_TIME_NONE:
                dur = buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0
                self._max_end = max(self._max_end, buf.pts + dur)
            return Gst.PadProbeReturn.OK
        event = info.get_event()
        if event.type == Gst.EventType.FLUSH_STOP:
            self._first_segment = True
            self._parse_src.set_offset(0)
        elif event.type == Gst.EventType.SEGMENT:
            segment = event.parse_segment()
            if self._first_segment:
                self._first_segment = False
                self._base = segment.base
            else:
                self._base += max(self.duration, self._max_end - segment.start)
            self._parse_src.set_offset(self._base - segment.base)
        return Gst.PadProbeReturn.OK

    def stop(self) -> None:
        """Release the file and the pipeline's threads."""
        self.pipeline.set_state(Gst.State.NULL)

    def _error_text(self) -> str | None:
        msg = self.pipeline.get_bus().timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
        if msg is None:
            return None
        err, debug = msg.parse_error()
        return f"{err.message}; {debug}"

    def _on_message(self, _bus: Gst.Bus, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.SEGMENT_DONE:
            # Non-flushing: the new segment's running time continues where the last one ended.
            self._seek(Gst.SeekFlags.SEGMENT)
        elif msg.type == Gst.MessageType.EOS:
            self._end()
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            sys.stderr.write(f"rtsp_server: producer error: {err.message} ({debug})\n")
            self._end()

    def _end(self) -> None:
        """The file is over (no --loop): EOS to the watching clients, then the mount point
        goes away so that later clients get 404 at once instead of waiting for data."""
        with self.lock:
            self.ended = True
            for c in self.consumers.values():
                c.appsrc.emit("end-of-stream")
        if self.on_end is not None:
            self.on_end()

    def add(self, key: int, appsrc: Gst.Element) -> None:
        with self.lock:
            if self.caps is not None:
                appsrc.set_property("caps", self.caps)
            if self.ended:
                appsrc.emit("end-of-stream")
            self.consumers[key] = Consumer(appsrc)

    def remove(self, key: int) -> None:
        with self.lock:
            self.consumers.pop(key, None)

    def _on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.EOS
        buf = sample.get_buffer()
        segment = sample.get_segment()
        pts_rt = segment.to_running_time(Gst.Format.TIME, buf.pts)
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts
        dts_rt = segment.to_running_time(Gst.Format.TIME, dts)
        if pts_rt == Gst.CLOCK_TIME_NONE or dts_rt == Gst.CLOCK_TIME_NONE:
            return Gst.FlowReturn.OK  # outside the segment: nothing to show
        keyframe = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        clock = sink.get_clock()
        late = clock is not None and clock.get_time() - sink.get_base_time() - dts_rt > MAX_LATENESS
        caps = sample.get_caps()
        with self.lock:
            if caps is not None and (self.caps is None or not caps.is_equal(self.caps)):
                self.caps = caps
                for c in self.consumers.values():
                    c.appsrc.set_property("caps", caps)
            for c in list(self.consumers.values()):
                if late:
                    c.offset = None  # re-join at the next keyframe that is on time
                    continue
                if c.offset is None:
                    now = _running_time(c.appsrc)
                    if not keyframe or now is None:
                        continue
                    c.offset = now - dts_rt
                out = buf.copy()  # shares the data; only the timestamps change
                out.pts = pts_rt + c.offset
                out.dts = dts_rt + c.offset
                c.appsrc.emit("push-buffer", out)
        return Gst.FlowReturn.OK


def _running_time(element: Gst.Element) -> int | None:
    """The element's pipeline running time now, or None before it has a clock."""
    clock = element.get_clock()
    if clock is None:
        return None
    return max(0, clock.get_time() - element.get_base_time())


def build_server(args: argparse.Namespace, producer: Producer) -> GstRtspServer.RTSPServer:
    """The RTSP server on 127.0.0.1:PORT with one shared, live mount fed by ``producer``."""
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src is-live=true format=time do-timestamp=false min-latency=0 "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)
    # RTP/RTCP over UDP too (FFmpeg's default transport), on loopback only: without a
    # pool, rtsp-stream binds its UDP ports on the wildcard address.
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range("127.0.0.1", "127.0.0.1", 32768, 60999, 0)
    factory.set_address_pool(pool)

    def on_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        key = id(media)
        producer.add(key, appsrc)
        media.connect("unprepared", lambda _m: producer.remove(key))

    factory.connect("media-configure", on_configure)

    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)  # no default token: anonymous or wrong credentials get 401
        factory.add_role_from_structure(Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))

    mounts = server.get_mount_points()
    mounts.add_factory(args.path, factory)
    producer.on_end = lambda: mounts.remove_factory(args.path)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="H.264 .mp4 or .mkv file to serve")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (not 0)")
    parser.add_argument("--path", default="/cam", help="mount point, e.g. /cam")
    parser.add_argument("--user", help="require RTSP basic auth with this user")
    parser.add_argument("--password", help="the --user's password")
    parser.add_argument("--loop", action="store_true", help="loop the file forever")
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error("--port must be in 1..65535 (the caller picks a free one)")
    if not args.path.startswith("/"):
        args.path = "/" + args.path

    Gst.init(None)
    producer = Producer(args.file, args.loop)
    producer.start()
    server = build_server(args, producer)
    if server.attach(None) == 0:
        sys.stderr.write(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}\n")
        producer.stop()
        return 1

    loop = GLib.MainLoop()
    parent = os.getppid()

    def orphaned() -> bool:
        # Re-parented: whoever started us (e.g. a killed pytest) is gone; do not linger.
        if os.getppid() != parent:
            loop.quit()
            return False
        return True

    def quit_on_signal(*_: object) -> bool:
        loop.quit()
        return False

    GLib.timeout_add(500, orphaned)
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, quit_on_signal)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    try:
        loop.run()
    finally:
        server.client_filter(lambda *_: GstRtspServer.RTSPFilterResult.REMOVE)
        producer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
