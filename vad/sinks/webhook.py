"""Webhook alert sink: each event update POSTed as JSON to a URL, off the scoring thread.

Why it is built this way: a receiver that hangs, refuses or answers 500 must never delay
scoring or another sink, and must not grow memory without bound. So :meth:`WebhookSink.event`
only puts the payload on a bounded queue (when it is full the *oldest* waiting alert is dropped
and counted: the newest says most about now) and returns; one worker thread sends, with a
per-request timeout and retries with capped exponential backoff on connection errors, timeouts
and 5xx/429 answers (a 4xx other than 429 is the receiver refusing this payload: not retried).
:meth:`close` waits up to ``flush_timeout_s`` for the queue to drain, then gives up on the rest
(counted as dropped).

The optional auth header is read from the environment at start-up (``auth_env``, e.g.
``VAD_WEBHOOK_TOKEN`` holding ``Bearer abc``), so a secret never sits in a config file, a log
line or the sink's ``repr``. The payload is :func:`vad.sinks.event_payload`; camera notices
(``degraded``, ``recovered``, ``state``: :mod:`vad.sinks.alerts`) go out as they come.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from vad.events import EventUpdate
from vad.sinks import ALERT_SCHEMA, Sink, event_payload

logger = logging.getLogger(__name__)

__all__ = ["WebhookSink", "WebhookStats"]


@dataclass
class WebhookStats:
    """What the sink did, for ``/metrics``: counts only grow."""

    queued: int = 0
    sent: int = 0
    retries: int = 0
    failed: int = 0  # gave up after the retries, or refused (4xx)
    dropped: int = 0  # pushed out of the full queue, or left when closing
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {k: getattr(self, k) for k in ("queued", "sent", "retries", "failed", "dropped", "last_error")}


class _Permanent(Exception):
    """A response that retrying will not change (4xx other than 429)."""


class WebhookSink(Sink):
    """POST each event update (``kinds``) as JSON to ``url``; never blocks the caller."""

    name = "webhook"

    def __init__(self, url: str, *, kinds: tuple[str, ...] = ("new", "end"), timeout_s: float = 5.0,
                 retries: int = 3, backoff_s: float = 0.5, backoff_max_s: float = 10.0, queue_size: int = 256,
                 auth_env: str | None = None, flush_timeout_s: float = 5.0, camera: str | None = None,
                 notices: bool = True) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http:// or https://, got {url.split('://', 1)[0]!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or queue_size < 1:
            raise ValueError("need timeout_s > 0, retries >= 0, backoff_s >= 0 and queue_size >= 1")
        self.url = url
        self.kinds = tuple(kinds)
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.flush_timeout_s = float(flush_timeout_s)
        self.camera = camera
        self.notices = notices
        self._headers = {"Content-Type": "application/json", "User-Agent": "vad-webhook"}
        if auth_env:
            secret = os.environ.get(auth_env)
            if not secret:
                raise ValueError(f"webhook auth_env {auth_env!r} is not set in the environment")
            self._headers["Authorization"] = secret
        self.stats = WebhookStats()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=int(queue_size))
        self._put_lock = threading.Lock()
        self._stop = threading.Event()
        self._flight_lock = threading.Lock()
        self._in_flight = self._abandoned = False
        self._worker = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._worker.start()

    def __repr__(self) -> str:  # never the auth header; the URL may carry a token in its query
        return f"WebhookSink({self.url.split('?', 1)[0]!r})"

    # ------------------------------------------------------------------ caller side (non-blocking)
    def event(self, update: EventUpdate) -> None:
        if update.kind in self.kinds:
            self.send(event_payload(update, camera=self.camera))

    def notice(self, payload: dict[str, Any]) -> None:
        if self.notices:
            self.send({"schema": ALERT_SCHEMA, **payload})

    def send(self, payload: dict[str, Any]) -> None:
        """Queue one JSON payload; drops the oldest waiting one when the queue is full."""
        with self._put_lock:
            while True:
                try:
                    self._queue.put_nowait(payload)
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self._queue.task_done()
                        self.stats.add(dropped=1)
                    except queue.Empty:
                        pass
        self.stats.add(queued=1)

    def counters(self) -> dict[str, int]:
        snap = self.stats.snapshot()
        return {k: snap[k] for k in ("sent", "dropped", "failed", "retries")}

    def close(self) -> None:
        if self._stop.is_set():
            return
        deadline = time.monotonic() + self.flush_timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            left += item is not None
        if left:
            logger.warning("webhook: %d alert(s) not sent within %.1f s of closing", left, self.flush_timeout_s)
            self.stats.add(dropped=left)
        # a request still in flight gets what is left of the flush time, not its own timeout:
        # the worker is a daemon, abandoned if the receiver hangs
        self._worker.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._flight_lock:
            if self._in_flight:  # given up on: counted now, and never again by the worker
                self._abandoned = True
                self.stats.add(dropped=1)
                logger.warning("webhook: the alert in flight was abandoned at close (receiver not answering)")

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                payload = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._flight_lock:
                self._in_flight = True
            try:
                self._deliver(payload)
            finally:
                with self._flight_lock:
                    self._in_flight = False
                self._queue.task_done()

    def _count(self, **counts: int) -> None:
        """Count an alert's outcome, unless close() already counted it as abandoned."""
        with self._flight_lock:
            if not self._abandoned:
                self.stats.add(**counts)

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.add(retries=1)
                if self._stop.wait(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))):
                    self._count(dropped=1)
                    return
            try:
                self._post(body)
                self._count(sent=1)
                return
            except _Permanent as err:
                self._fail(str(err))
                return
            except (OSError, urllib.error.URLError) as err:  # timeouts, refused, reset, 5xx
                self.stats.last_error = f"{type(err).__name__}: {err}"
                logger.debug("webhook attempt %d failed: %s", attempt + 1, self.stats.last_error)
        self._fail(self.stats.last_error)

    def _fail(self, reason: str) -> None:
        self._count(failed=1)
        self.stats.last_error = reason
        logger.warning("webhook %s: alert not delivered: %s", self.url.split("?", 1)[0], reason)

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code != 429:
                raise _Permanent(f"HTTP {err.code}") from None
            raise
