"""A real RTSP server for tests, run as a subprocess of the *system* Python.

GStreamer's RTSP server comes from Debian (``scripts/install_system_deps.sh``, run by
``make test``), not PyPI, so ``tests/rtsp_server.py`` runs under ``/usr/bin/python3`` and
the tests talk to it only over RTSP, exactly like a camera. :class:`RTSPServer` adds what
camera-failure tests need: kill and restart on the same port, freeze (SIGSTOP) and thaw.
Tests call :func:`rtsp_available` and ``tests.videos.skip_or_fail`` when it gives a reason.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import quote

import numpy as np

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
READY_TIMEOUT_S = 20.0

_PROBE = "import gi; gi.require_version('GstRtspServer','1.0'); from gi.repository import GstRtspServer"


def rtsp_available() -> str | None:
    """None if the system Python can import GstRtspServer, else why not (for skip_or_fail)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (needed for the GStreamer RTSP test server)"
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "importing GstRtspServer in the system Python timed out"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server unavailable ({last}); run `make sysdeps`"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free just now (the server binds it by number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RTSPServer:
    """``tests/rtsp_server.py`` as a context manager; the process never outlives it.

    ``url`` embeds the credentials (what a client is configured with); ``plain_url`` has
    none (for asserting a 401, or for passing credentials separately).
    """

    def __init__(
        self,
        file: str | os.PathLike[str],
        *,
        port: int | None = None,
        path: str = "/cam",
        user: str | None = None,
        password: str | None = None,
        loop: bool = True,
    ) -> None:
        self.file = Path(file)
        self.port = port if port is not None else free_port()
        self.path = path if path.startswith("/") else "/" + path
        self.user = user
        self.password = password
        self.loop = loop
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._stderr: IO[bytes] | None = None

    # --- URLs -------------------------------------------------------------------------
    @property
    def plain_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    @property
    def url(self) -> str:
        if self.user is None:
            return self.plain_url
        cred = f"{quote(self.user, safe='')}:{quote(self.password or '', safe='')}"
        return f"rtsp://{cred}@127.0.0.1:{self.port}{self.path}"

    # --- life cycle -------------------------------------------------------------------
    def _command(self) -> list[str]:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--file", str(self.file), "--port", str(self.port),
               "--path", self.path]
        if self.user is not None:
            cmd += ["--user", self.user, "--password", self.password or ""]
        if self.loop:
            cmd.append("--loop")
        return cmd

    def start(self) -> RTSPServer:
        """Launch the server and wait for its READY line; RuntimeError (with its stderr) if it
        dies or is not ready within 20 s."""
        if self.proc is not None:
            if self.proc.poll() is None:
                raise RuntimeError("RTSP server already running")
            if self.proc.stdout is not None:
                self.proc.stdout.close()  # it died by itself: release its pipe
        self._close_stderr()
        # stderr to a file, not a pipe: nobody drains it while the tests run, and a full
        # pipe would block the server.
        self._stderr = tempfile.TemporaryFile()
        self.frozen = False
        self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self._fail("was not READY within %.0f s" % READY_TIMEOUT_S)
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self._fail(f"exited with code {self.proc.wait()} before READY")
                line += chunk
        expected = f"READY {self.plain_url}"
        if line.decode(errors="replace").strip() != expected:
            self._fail(f"printed {line!r}, expected {expected!r}")
        return self

    def _fail(self, what: str) -> None:
        self._terminate(signal.SIGKILL, 0)
        raise RuntimeError(f"RTSP server {what}; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        """What the server wrote on stderr so far (for failure messages)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def restart(self, retry_s: float = 5.0) -> RTSPServer:
        """Start again on the same port, retrying while the port is still busy (TIME_WAIT,
        or the old process's socket not yet released)."""
        self.stop()
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.25)

    def kill(self) -> None:
        """Crash the camera: SIGKILL, no goodbye to the clients."""
        self._terminate(signal.SIGKILL, 0)

    def freeze(self) -> None:
        """Hang the camera: SIGSTOP, so its TCP connections stay open but go silent."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("RTSP server is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """Undo :meth:`freeze` (SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        """SIGTERM, up to 5 s to exit cleanly, then SIGKILL."""
        self._terminate(signal.SIGTERM, 5.0)

    def _terminate(self, sig: int, grace_s: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self.frozen:
                self.thaw()  # a stopped process does not act on SIGTERM
            try:
                proc.send_signal(sig)
                proc.wait(timeout=grace_s or None)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.frozen = False
        if proc.stdout is not None:
            proc.stdout.close()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> RTSPServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._close_stderr()


def write_h264(path: str | os.PathLike[str], frames: np.ndarray, fps: int, *, fmt: str | None = None,
               first: int = 0) -> Path:
    """Encode (T, H, W, 3) uint8 RGB ``frames`` as H.264 (libx264, yuv420p) at ``fps``;
    ``fmt``: the container (default: by suffix); ``first``: the first frame's timestamp, in
    frames (so that files concatenated byte-wise, e.g. MPEG-TS, keep counting).

    Camera-like: a keyframe every second (gop = fps), no B-frames, ultrafast/zerolatency,
    so an RTSP client that joins mid-stream waits at most a second for a decodable frame.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    gop = max(1, round(fps))
    options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(gop), "keyint_min": str(gop),
               "bf": "0", "sc_threshold": "0", "threads": "1"}  # threads=1: one slice per frame
    with av.open(str(path), mode="w", format=fmt) as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = first + i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


PLANTED_SIZE = (384, 288)


def planted_walkway_footage(d: Path) -> dict[str, Path]:
    """From vtest.avi (10 fps) at 384×288: 20 s of normal reference footage (``reference``), and
    the same 20 s with a facade-textured block planted on the walkway from 8 s to 16 s
    (``camera``; a looping stream repeats it every 20 s). Skips/fails without the sample."""
    import cv2

    from tests.videos import require_sample
    from vad.io import open_video

    sample = require_sample("vtest.avi")
    with open_video(sample) as r:
        frames = r.read(0, 200)
    small = np.stack([cv2.resize(f, PLANTED_SIZE, interpolation=cv2.INTER_AREA) for f in frames])
    write_h264(d / "reference.mp4", small, 10)
    planted = small.copy()
    block = cv2.resize(small[0, 10:50, 150:290], (80, 45), interpolation=cv2.INTER_CUBIC)  # the facade
    planted[80:160, 85:130, 120:200] = block
    write_h264(d / "camera.mp4", planted, 10)
    return {"reference": d / "reference.mp4", "camera": d / "camera.mp4"}
