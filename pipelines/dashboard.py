"""The HTTP side of ``vad monitor --http-port N``: a live dashboard, its JSON API, health and
Prometheus metrics, from one :class:`Dashboard` (a threaded ``http.server``) per monitor.

Routes (all GET; everything the page needs is served from here, no CDN, no external font):

``/``                               the dashboard page (``vad/report/static/dashboard.*``)
``/assets/dashboard.js|.css``       its script and style
``/assets/plotly.min.js``           Plotly.js from the installed ``plotly`` package (cached, gzip)
``/api/cameras``                    per camera: name, state, fps in / scored (counter deltas over
                                    the last seconds), dropped, reconnects, last score, events,
                                    last error, recent ``[wall_time, score]`` pairs (sparkline)
``/api/cameras/<name>/frame.jpg``   the camera's latest analysed frame (404 before the first)
``/api/events``                     the latest record of each of the last 200 events, with its id
``/api/events/stream``              Server-Sent Events: every event record as it is emitted
                                    (``id:`` = sequence number; ``Last-Event-ID`` or ``?after=N``
                                    resumes; a keep-alive comment every ``keepalive_s``)
``/files/snapshots/<file>``         an event's snapshot JPEG (``<run>/snapshots``)
``/files/clips/<file>``             an event's clip MP4 (``<run>/clips``, byte ranges served)
``/healthz``                        the monitor's health (200 when every camera is live or learning,
                                    else 503)
``/metrics``                        Prometheus metrics

Event records are the dicts ``events.jsonl`` gets: ``{"video_id", **Event.to_dict(), "update"}``.

Auth: a token is in force when one is configured (``monitor.http_token``, ``--http-token`` or
``$VAD_HTTP_TOKEN``) or the server binds a non-loopback address (then one is generated and written
to ``<run>/http_token``, mode 0600; only the file's path is logged). With a token, every route
needs it (``Authorization: Bearer <token>``, ``?token=<token>``, or the ``vad_token`` cookie that
``/?token=<token>`` sets before redirecting to ``/``), except ``/healthz``, which without it
answers only ``{"ok": bool}``; anything else is 401. On loopback without a token, all is open.

Camera URLs are never served (names only), and every string served goes through
:func:`vad.io.stream.redact_text` plus the cameras' own passwords scrubbed, so stream
credentials reach neither the page nor the API.
"""

from __future__ import annotations

import gzip
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from vad.events import EventUpdate
from vad.io.stream import redact_text
from vad.rundir import RunDir
from vad.sinks import Sink

if TYPE_CHECKING:
    from pipelines.monitor import Monitor

logger = logging.getLogger(__name__)

__all__ = ["Dashboard", "EventFeed", "is_loopback", "resolve_token"]

COOKIE = "vad_token"
TOKEN_FILE = "http_token"

# security headers on every answer: nothing from elsewhere, never framed, no referrer
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'none'")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
_STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
_FILES = {"snapshots": (".jpg", "image/jpeg"), "clips": (".mp4", "video/mp4")}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")
_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s]*")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")


# -- the event feed ----------------------------------------------------------------------------
class EventFeed(Sink):
    """The monitor's event records, numbered, for ``/api/events`` and its SSE stream.

    A sink in the monitor's :class:`~vad.sinks.SinkSet` (called from the scorer threads and the
    explain pool); handler threads wait on a condition for records after the last one they sent.
    :meth:`close` wakes them for good so they end promptly when the monitor stops."""

    name = "dashboard-feed"

    def __init__(self, keep_records: int = 1000, keep_events: int = 200) -> None:
        self._cond = threading.Condition()
        self._log: deque[tuple[int, dict[str, Any]]] = deque(maxlen=keep_records)  # for resuming streams
        self._latest: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()  # per event, newest last
        self._keep_events = keep_events
        self._seq = 0
        self._closed = False

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._seq

    @property
    def closed(self) -> bool:
        return self._closed

    def event(self, update: EventUpdate) -> None:
        self.add_record({"video_id": update.event.source_id, **update.event.to_dict(), "update": update.kind})

    def add_record(self, record: dict[str, Any]) -> None:
        """One events.jsonl record (a monitor spread over Ray feeds the lines its actors wrote)."""
        with self._cond:
            self._seq += 1
            self._log.append((self._seq, record))
            key = str(record.get("event_id"))
            self._latest.pop(key, None)
            self._latest[key] = (self._seq, record)
            while len(self._latest) > self._keep_events:
                self._latest.popitem(last=False)
            self._cond.notify_all()

    def latest(self) -> list[tuple[int, dict[str, Any]]]:
        """The latest record of each kept event, oldest first."""
        with self._cond:
            return list(self._latest.values())

    def wait_after(self, seq: int, timeout: float) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """The records after ``seq`` (waiting up to ``timeout`` s for one), and whether the feed
        is closed. An id from before a restart (beyond the last one) replays what is kept."""
        with self._cond:
            if seq > self._seq:
                seq = 0
            if not self._closed and (not self._log or self._log[-1][0] <= seq):
                self._cond.wait(timeout)
            return [(s, r) for s, r in self._log if s > seq], self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# -- auth ----------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, localhost); "" (all) is not."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, configured: str | None, run: RunDir) -> str | None:
    """The token the server requires, or None (loopback and none configured).

    ``configured`` (``monitor.http_token``), else ``$VAD_HTTP_TOKEN``; on a non-loopback host
    without either, a new one written to ``<run>/http_token`` (0600). Never logged. ValueError
    for a token with characters a header or cookie cannot carry."""
    token = configured or os.environ.get("VAD_HTTP_TOKEN") or None
    if token is not None and not _TOKEN_CHARS.fullmatch(token):
        # it travels in a header, a query and a cookie: RFC 6750's token characters only
        raise ValueError("monitor.http_token may hold only letters, digits and -._~+/=")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
        path = run.root / TOKEN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
            os.write(fd, (token + "\n").encode())
        finally:
            os.close(fd)
        logger.warning("the dashboard listens on %s: it needs the access token in %s "
                       "(open http://HOST:PORT/?token=<token>)", host or "all interfaces", path)
    elif token is not None and len(token) < 16:
        logger.warning("monitor.http_token is short (%d characters): use 16 or more", len(token))
    if token is not None and not is_loopback(host):
        logger.info("the dashboard is plain HTTP: beyond a trusted network put it behind TLS (a reverse proxy)")
    return token


# -- what is served ------------------------------------------------------------------------------
def _known_secrets(urls: Iterable[str]) -> list[str]:
    """The passwords (and user:password) in the camera URLs, raw and decoded, to scrub from any
    string served, in case a library quoted one without its URL (redact_text covers URLs)."""
    out: set[str] = set()
    for url in urls:
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            continue
        if not password:
            continue
        userinfo = parts.netloc.rsplit("@", 1)[0]
        for s in (password, unquote(password), userinfo, unquote(userinfo)):
            if len(s) >= 4:  # a shorter one would garble the text and protects little
                out.add(s)
    return sorted(out, key=len, reverse=True)


def scrub(obj: Any, known: Sequence[str] = ()) -> Any:
    """JSON-ready ``obj`` with credentials redacted from every string and non-finite numbers as
    None (the page's JSON.parse rejects NaN)."""
    if isinstance(obj, str):
        s = redact_text(obj)
        for k in known:
            s = s.replace(k, "***")
        return s
    if isinstance(obj, dict):
        return {scrub(str(k), known): scrub(v, known) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, known) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int)):
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        return scrub(obj.item(), known)
    return scrub(str(obj), known)


class _Rates:
    """Per-camera frames in / scored per second from counter samples over the last ``window`` s."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}
        self._lock = threading.Lock()

    def sample(self, name: str, frames_in: int, frames_scored: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._samples.setdefault(name, deque())
            q.append((now, frames_in, frames_scored))
            while len(q) > 2 and now - q[1][0] >= self.window:
                q.popleft()

    def rates(self, name: str, frames_in: int, frames_scored: int) -> tuple[float | None, float | None]:
        now = time.monotonic()
        with self._lock:
            q = self._samples.get(name)
            if not q or now - q[0][0] < 0.5:
                return None, None
            t0, i0, s0 = q[0]
        dt = now - t0
        return round(max(0, frames_in - i0) / dt, 2), round(max(0, frames_scored - s0) / dt, 2)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler never keeps the process alive

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), handler)


class Dashboard:
    """The monitor's HTTP server (see the module docstring); :meth:`start` / :meth:`stop`."""

    #: seconds between SSE keep-alive comments (proxies close idle connections)
    keepalive_s: float = 10.0
    #: concurrent SSE streams at most (each holds a thread)
    max_streams: int = 32

    def __init__(self, monitor: Monitor, host: str, port: int, token: str | None) -> None:
        self.monitor, self.host, self.token = monitor, host, token
        self.feed: EventFeed = monitor.feed
        self.rates = _Rates()
        self.known_secrets = _known_secrets(c.camera.url for c in monitor.cameras)
        self._streams = threading.BoundedSemaphore(self.max_streams)
        self._stop = threading.Event()
        self._gzip_lock = threading.Lock()
        self._plotly: tuple[bytes, bytes] | None = None
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self.server = _Server(host, port, handler)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def start(self) -> None:
        self._threads = [threading.Thread(target=self.server.serve_forever, name="http", daemon=True),
                         threading.Thread(target=self._sample, name="http-rates", daemon=True)]
        for t in self._threads:
            t.start()
        logger.info("dashboard on %s (health /healthz, metrics /metrics)%s", self.url(),
                    "; access token required" if self.token else "")

    def stop(self) -> None:
        self._stop.set()
        self.feed.close()  # SSE handlers see it and return
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(5)

    def _sample(self) -> None:
        while True:
            for c in self.monitor.cameras:
                self.rates.sample(c.camera.name, c.source.stats.frames_in, c.frames_scored)
            if self._stop.wait(1.0):
                return

    # -- payloads ------------------------------------------------------------------------------
    def cameras(self) -> dict[str, Any]:
        out = []
        for c in self.monitor.cameras:
            h = c.health()
            fps_in, fps_scored = self.rates.rates(c.camera.name, h["frames_in"], h["frames_scored"])
            out.append({
                "name": c.camera.name, "state": h["state"], "fps_in": fps_in, "fps_scored": fps_scored,
                "frames_in": h["frames_in"], "frames_scored": h["frames_scored"], "dropped": h["dropped"],
                "reconnects": h["reconnects"], "failures": h["failures"], "stalls": h["stalls"],
                "last_score": h["last_score"], "events": h["events"], "last_error": h["last_error"],
                "last_frame_age_s": h["last_frame_age_s"], "size": h["size"],
                "has_frame": c.ring.latest() is not None,
                "scores": [[round(t, 3), round(s, 4)] for t, s in c.score_history()],
            })
        return {"time": time.time(), "threshold": self.monitor.cfg.events.threshold, "cameras": out}

    def events(self) -> dict[str, Any]:
        return {"last_id": self.feed.last_id,
                "events": [{"id": seq, "record": rec} for seq, rec in self.feed.latest()]}

    def plotly(self) -> tuple[bytes, bytes]:
        """Plotly.js, raw and gzipped (compressed once, on first use)."""
        with self._gzip_lock:
            if self._plotly is None:
                from vad.report.assets import plotly_js

                raw = plotly_js().encode("utf-8")
                self._plotly = (raw, gzip.compress(raw, 6))
            return self._plotly

    def camera(self, name: str) -> Any:
        for c in self.monitor.cameras:
            if c.camera.name == name:
                return c
        return None

    def authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        offered = list(query.get("token", []))
        auth = headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        try:
            morsel = SimpleCookie(headers.get("Cookie") or "").get(COOKIE)
        except CookieError:
            morsel = None
        if morsel is not None:
            offered.append(morsel.value)
        want = self.token.encode()
        return any(hmac.compare_digest(o.encode("utf-8", "replace"), want) for o in offered)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    timeout = 60  # a client that stops reading (or never sends) frees its thread
    server_version = "vad-monitor"
    sys_version = ""

    # -- plumbing --------------------------------------------------------------------------------
    def _head(self, code: int, ctype: str, length: int | None, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in {**_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self._head(code, ctype, len(body), {"Cache-Control": "no-store", **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        body = json.dumps(scrub(obj, self.dashboard.known_secrets), allow_nan=False).encode()
        self._send(code, body, "application/json")

    def _text(self, code: int, text: str) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")

    def log_message(self, fmt: str, *args: Any) -> None:
        # the request line may hold ?token=: never in a log
        logger.debug("http %s: %s", self.address_string(), _TOKEN_IN_QUERY.sub(r"\1***", fmt % args))

    # -- routing ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the client went away
        except Exception:  # noqa: BLE001 - a bug in one answer must not kill the server
            logger.error("http: %s failed", _TOKEN_IN_QUERY.sub(r"\1***", self.path), exc_info=True)
            try:
                self._text(500, "internal error")
            except OSError:
                pass

    def _route(self) -> None:
        d = self.dashboard
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        if path == "/healthz":
            return self._healthz(d.authorized(self.headers, query))
        if not d.authorized(self.headers, query):
            return self._unauthorized(path)
        if path == "/" and "token" in query and d.token is not None:
            # the token leaves the address bar (and the history) for a cookie
            cookie = f"{COOKIE}={d.token}; Path=/; HttpOnly; SameSite=Strict"
            self._head(303, "text/plain", 0, {"Location": "/", "Set-Cookie": cookie, "Cache-Control": "no-store"})
            return None
        if path == "/":
            from vad.report.assets import static_text

            return self._send(200, static_text("dashboard.html").encode(), "text/html; charset=utf-8",
                              {"Content-Security-Policy": _CSP})
        if path.startswith("/assets/"):
            return self._asset(path[len("/assets/"):])
        if path == "/api/cameras":
            return self._json(d.cameras())
        if path == "/api/events":
            return self._json(d.events())
        if path == "/api/events/stream":
            return self._stream(query)
        if path.startswith("/api/cameras/") and path.endswith("/frame.jpg"):
            return self._frame(unquote(path[len("/api/cameras/"):-len("/frame.jpg")]))
        if path.startswith("/files/"):
            return self._file(path[len("/files/"):])
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            d.monitor.update_metrics()
            return self._send(200, generate_latest(d.monitor.metrics.registry), CONTENT_TYPE_LATEST)
        return self._text(404, "not found")

    def _healthz(self, full: bool) -> None:
        health = self.dashboard.monitor.health()
        ok = all(c["state"] in ("live", "learning") for c in health["cameras"].values())
        self._json(health if full else {"ok": ok}, 200 if ok else 503)

    def _unauthorized(self, path: str) -> None:
        if path == "/":
            body = ("<!doctype html><meta charset=utf-8><title>vad monitor</title><p>This dashboard needs its "
                    "access token: open <code>/?token=&lt;token&gt;</code>. The monitor wrote it to the "
                    "<code>http_token</code> file of its output folder (or it was set with --http-token / "
                    "VAD_HTTP_TOKEN).</p>").encode()
            return self._send(401, body, "text/html; charset=utf-8", {"WWW-Authenticate": 'Bearer realm="vad"'})
        return self._send(401, b'{"error": "unauthorized"}', "application/json",
                          {"WWW-Authenticate": 'Bearer realm="vad"'})

    def _asset(self, name: str) -> None:
        if name == "plotly.min.js":
            raw, packed = self.dashboard.plotly()
            gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
            body = packed if gz else raw
            headers = {"Cache-Control": "private, max-age=86400", "Vary": "Accept-Encoding"}
            if gz:
                headers["Content-Encoding"] = "gzip"
            self._head(200, "text/javascript; charset=utf-8", len(body), headers)
            if self.command != "HEAD":
                self.wfile.write(body)
            return None
        if name in _STATIC:
            from vad.report.assets import static_text

            return self._send(200, static_text(name).encode(), _STATIC[name], {"Cache-Control": "no-cache"})
        return self._text(404, "not found")

    def _frame(self, name: str) -> None:
        cam = self.dashboard.camera(name)
        jpg = None if cam is None else cam.ring.latest()
        if jpg is None:
            return self._text(404, "no frame yet" if cam is not None else "no such camera")
        return self._send(200, jpg, "image/jpeg")

    def _file(self, rest: str) -> None:
        """A plain file name inside <run>/snapshots or <run>/clips, nothing else."""
        kind, _, name = rest.partition("/")
        name = unquote(name)
        if kind not in _FILES or not _SAFE_NAME.fullmatch(name) or not name.endswith(_FILES[kind][0]):
            return self._text(404, "not found")
        folder = (self.dashboard.monitor.run.root / kind).resolve()
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_file():
            return self._text(404, "not found")
        self._send_file(path, _FILES[kind][1])

    def _send_file(self, path: Path, ctype: str) -> None:
        data = path.read_bytes()
        n = len(data)
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", (self.headers.get("Range") or "").strip())
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=60"}
        if rng and (rng.group(1) or rng.group(2)):
            if rng.group(1):
                start = int(rng.group(1))
                end = min(int(rng.group(2)), n - 1) if rng.group(2) else n - 1
            else:  # the last N bytes
                start, end = max(0, n - int(rng.group(2))), n - 1
            if start >= n or start > end:
                return self._send(416, b"", ctype, {"Content-Range": f"bytes */{n}"})
            part = data[start:end + 1]
            self._head(206, ctype, len(part), {**headers, "Content-Range": f"bytes {start}-{end}/{n}"})
            if self.command != "HEAD":
                self.wfile.write(part)
            return None
        self._head(200, ctype, n, headers)
        if self.command != "HEAD":
            self.wfile.write(data)
        return None

    def _stream(self, query: dict[str, list[str]]) -> None:
        d = self.dashboard
        since = self.headers.get("Last-Event-ID") or (query.get("after") or ["0"])[0]
        try:
            last = max(0, int(since))
        except ValueError:
            last = 0
        if not d._streams.acquire(blocking=False):
            return self._text(503, "too many event streams")
        self.close_connection = True  # the stream ends with the connection (HTTP/1.0, no length)
        try:
            if self.command == "HEAD":
                return self._head(200, "text/event-stream; charset=utf-8", None, {"Cache-Control": "no-store"})
            self._head(200, "text/event-stream; charset=utf-8", None,
                       {"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
            self.wfile.write(b"retry: 2000\n\n")  # a dropped stream comes back within 2 s
            self.wfile.flush()
            while True:
                items, closed = d.feed.wait_after(last, d.keepalive_s)
                out = []
                for seq, rec in items:
                    data = json.dumps(scrub(rec, d.known_secrets), allow_nan=False)
                    out.append(f"id: {seq}\nevent: event\ndata: {data}\n\n")
                    last = seq
                if not items and not closed:
                    out.append(": keep-alive\n\n")
                if out:
                    self.wfile.write("".join(out).encode())
                    self.wfile.flush()
                if closed:
                    return None
        finally:
            d._streams.release()
