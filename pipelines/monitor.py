"""``vad monitor``: live cameras scored in real time with the same heads and event tracker as
``vad score``, events with a snapshot and a clip, health and Prometheus metrics.

Per camera (:class:`CameraMonitor`): a :class:`~vad.io.stream.StreamSource` (reader thread +
watchdog, latest-wins queue) and one scorer thread that

1. **learns** the camera when no fitted head is given: the default scene head is fitted on the
   first ``monitor.reference_seconds`` of analysed frames (reconnect gaps split them into
   separate pieces) and then frozen; a saved head (``--head``) or one fitted on ``--reference``
   footage is used as it is;
2. **scores** every analysed frame through :class:`vad.scoring.StreamScorer` (frames heads frame
   by frame; feature heads through the snippet buffer and the extractor), giving event updates
   ``new`` / ``update`` / ``end`` with wall-clock times;
3. keeps the last ``clip_buffer_s`` seconds of analysed frames as JPEG (bounded memory) for
   the **snapshot** (the peak frame with the event's region drawn, rewritten while the peak
   rises) and the **clip** (``pre_s`` before to ``post_s`` after the event, re-encoded with
   libx264 from the kept frames at the analysis rate: ``clip_mode: "reencoded"``). An event's
   ``end`` is written once its clip is (``post_s`` after it ended).

After a gap (a reconnect, a timestamp jump, a resolution change: a new ``segment`` of the
source) the scorer's temporal state is reset: the open event ends at the last frame before the
gap, the snippet buffer and smoothing start afresh; the fitted head stays. Shutdown (SIGTERM,
SIGINT, :meth:`Monitor.stop`) ends open events, writes their snapshots and clips with what was
buffered, flushes the event log and returns.

With ``monitor.http_port``, :class:`pipelines.dashboard.Dashboard` serves the live dashboard at
``/``, its JSON API and event stream, ``/healthz`` and ``/metrics`` (routes and the token rule:
that module's docstring).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from pipelines.dashboard import Dashboard, EventFeed, resolve_token
from pipelines.cameras import Fleet, RetentionRules, load_fleet
from vad.config import ConfigError, ScoreConfig, to_dict
from vad.events import EventRules, EventUpdate
from vad.explain import EventExplainer
from vad.fsutil import write_json_atomic
from vad.heads import Head, HeadError, SceneHead
from vad.io import resize_short_side
from vad.io.stream import StreamOptions, StreamSource, redact_url
from vad.rundir import RunDir
from vad.scoring import StreamScorer
from vad.sinks import EventLogSink, Sink, SinkSet
from vad.sinks.alerts import AlertGate

logger = logging.getLogger(__name__)

__all__ = ["Camera", "CameraMonitor", "Monitor", "MonitorError", "MonitorMetrics", "parse_camera"]


class MonitorError(RuntimeError):
    """The monitor cannot start (bad configuration, unusable reference or head)."""


@dataclass(frozen=True)
class Camera:
    """One stream: its URL (may hold credentials: never logged), its name in every output."""

    url: str
    name: str

    def __repr__(self) -> str:  # never the URL
        return f"Camera({self.name!r})"


def parse_camera(arg: str) -> Camera:
    """``NAME=URL`` or ``URL`` (named by its redacted host and path)."""
    if "=" in arg.split("://", 1)[0]:
        name, url = arg.split("=", 1)
    else:
        url = arg
        red = redact_url(url)
        name = red.split("://", 1)[-1].replace("***@", "")
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "camera"
    return Camera(url, name)


class MonitorMetrics:
    """Per-camera Prometheus metrics in one registry (served at ``/metrics``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        label = ["camera"]
        self.frames_in = Counter("vad_frames_in", "Frames decoded from the stream", label, registry=self.registry)
        self.frames_scored = Counter("vad_frames_scored", "Frames scored", label, registry=self.registry)
        self.dropped = Counter("vad_frames_dropped", "Analysed frames dropped by the latest-wins queue", label,
                               registry=self.registry)
        self.reconnects = Counter("vad_reconnects", "Successful reconnections after the first connection", label,
                                  registry=self.registry)
        self.failures = Counter("vad_connection_failures", "Connections that failed or ended (then retried)", label,
                                registry=self.registry)
        self.stalls = Counter("vad_stalls", "Stalls detected by the watchdog", label, registry=self.registry)
        self.events = Counter("vad_events", "Events ended", label, registry=self.registry)
        self.latency = Histogram("vad_inference_latency_seconds", "Frame arrival to score", label,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=self.registry)
        self.queue_depth = Gauge("vad_queue_depth", "Frames waiting for the scorer", label, registry=self.registry)
        self.last_score = Gauge("vad_last_score", "Last frame score", label, registry=self.registry)
        self.up = Gauge("vad_stream_live", "1 while the stream is live", label, registry=self.registry)
        sink = ["sink"]
        self.sink_sent = Counter("vad_sink_sent", "Alerts an alert sink delivered", sink, registry=self.registry)
        self.sink_dropped = Counter("vad_sink_dropped", "Alerts an alert sink dropped (queue full, or left at "
                                    "shutdown)", sink, registry=self.registry)
        self.sink_failed = Counter("vad_sink_failed", "Alerts an alert sink gave up on (retries spent, or refused)",
                                   sink, registry=self.registry)
        self.sink_retries = Counter("vad_sink_retries", "Delivery retries of an alert sink", sink,
                                    registry=self.registry)
        self.alerts = Counter("vad_alerts", "Alert gate outcomes: alerted, short (under min_duration_s), cooled "
                              "(in the cooldown), notices", ["camera", "outcome"], registry=self.registry)
        self.degraded = Gauge("vad_camera_degraded", "1 while a camera is reported degraded (flapping)", label,
                              registry=self.registry)
        self.retention_deleted = Counter("vad_retention_deleted_files", "Clips and snapshots deleted by retention",
                                         label, registry=self.registry)
        self._seen: dict[tuple[int, tuple[str, ...], int], float] = {}

    def count_to(self, counter: Any, labels: str | tuple[str, ...], total: float, source: Any = None) -> None:
        """Advance a counter to a running total kept elsewhere (the source's own counters);
        ``source`` is what keeps that total: one replaced by a new one (a camera restarted by a
        reload, a rebuilt sink) counts on from zero without the counter going back."""
        labels = (labels,) if isinstance(labels, str) else tuple(labels)
        key = (id(counter), labels, id(source))
        delta = total - self._seen.get(key, 0.0)
        if delta > 0:
            counter.labels(*labels).inc(delta)
            self._seen[key] = total

    def count_alerts(self, camera: str, counts: dict[str, int], degraded: bool, source: Any) -> None:
        """An alert gate's outcome counts (``AlertGate.counts``) and its degraded flag."""
        for outcome in ("alerted", "short", "cooled", "notices"):
            self.count_to(self.alerts, (camera, outcome), counts.get(outcome, 0), source)
        self.degraded.labels(camera).set(1.0 if degraded else 0.0)

    def count_sink(self, name: str, counts: dict[str, int], source: Any) -> None:
        """An alert sink's running totals (``Sink.counters()``); several holders of one sink
        name (camera actors) add up."""
        for key, counter in (("sent", self.sink_sent), ("dropped", self.sink_dropped),
                             ("failed", self.sink_failed), ("retries", self.sink_retries)):
            if key in counts:
                self.count_to(counter, name, counts[key], source)


class _FrameRing:
    """The last ``seconds`` of analysed frames as JPEG, by frame index (bounded memory)."""

    def __init__(self, seconds: float, quality: int) -> None:
        self.seconds, self.quality = seconds, quality
        self._items: deque[tuple[int, float, bytes]] = deque()
        self.size: tuple[int, int] | None = None

    def add(self, index: int, wall: float, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self._items.append((index, wall, buf.tobytes()))
            self.size = (image.shape[1], image.shape[0])
        while self._items and wall - self._items[0][1] > self.seconds:
            self._items.popleft()

    def frame(self, index: int) -> bytes | None:
        for i, _, jpg in reversed(self._items):
            if i == index:
                return jpg
            if i < index:
                return None
        return None

    def between(self, t0: float, t1: float) -> list[tuple[float, bytes]]:
        return [(w, j) for _, w, j in self._items if t0 <= w <= t1]

    def latest(self) -> bytes | None:
        """The newest frame's JPEG (read by the dashboard's threads while the scorer adds)."""
        try:
            return self._items[-1][2]
        except IndexError:
            return None


def decode_jpeg(jpg: bytes, rgb: bool = True) -> np.ndarray:
    """A buffered JPEG frame as an image array (RGB, or OpenCV's BGR)."""
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if rgb else img


def write_snapshot(path: Path, jpg: bytes, region: Sequence[float] | None) -> None:
    """The peak frame as JPEG, the event's region drawn when it has one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if region is None:
        path.write_bytes(jpg)
        return
    img = decode_jpeg(jpg, rgb=False)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = region
    cv2.rectangle(img, (int(x0 * w), int(y0 * h)), (int(x1 * w) - 1, int(y1 * h) - 1), (0, 0, 255), 2)
    cv2.imwrite(str(path), img)


def write_clip(path: Path, frames: list[tuple[float, bytes]], fps: float) -> int:
    """Re-encode buffered JPEG frames to an H.264 MP4 at ``fps``; returns the frames written."""
    import av

    if not frames:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    n = 0
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=max(1, int(round(fps))))
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for _, jpg in frames:
            img = decode_jpeg(jpg)
            h, w = img.shape[:2]
            if n == 0:
                stream.width, stream.height = w - w % 2, h - h % 2
            img = np.ascontiguousarray(cv2.resize(img, (stream.width, stream.height)) if (w, h) != (
                stream.width, stream.height) else img)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            n += 1
        out.mux(stream.encode())
    tmp.replace(path)
    return n


class CameraMonitor:
    """One camera: its source, its scorer thread, its outputs (see the module docstring)."""

    def __init__(self, camera: Camera, cfg: ScoreConfig, run: RunDir, sinks: SinkSet, sink_lock: threading.Lock,
                 head: Head, metrics: MonitorMetrics | None = None,
                 embed: Callable[[list[Any]], list[np.ndarray]] | None = None, spec: Any = None,
                 explainer: EventExplainer | None = None, explain_pool: Any = None,
                 alerts: AlertGate | None = None, retention: RetentionRules | None = None) -> None:
        """``explainer``: explains every ended event before its end record is written, on
        ``explain_pool`` (an executor shared by the cameras), never on the scorer thread.
        ``alerts``: the camera's alert gate (cameras.yaml ``sinks``/``alerts``), handed every
        event record and the stream's state; ``retention``: what :meth:`apply_retention` keeps."""
        self.camera, self.cfg, self.run, self.sinks, self.sink_lock = camera, cfg, run, sinks, sink_lock
        self.alerts, self.retention = alerts, retention
        self._alert_state: str | None = None
        self._failures_seen = 0
        self.retention_deleted = 0
        self.explainer, self.explain_pool = explainer, explain_pool
        self._rule_learner: Any = None
        m = cfg.monitor
        try:
            own = m.cameras.get(camera.name) or {}
            self.options = StreamOptions(**{**m.stream, **own})
        except (TypeError, ValueError) as err:
            raise MonitorError(f"monitor.stream / monitor.cameras.{camera.name}: {err}") from None
        self.source = StreamSource(camera.url, self.options, name=camera.name)
        self.head = head
        self.embed, self.spec = embed, spec
        self.metrics = metrics
        self.rules = EventRules.from_config(cfg.events)
        self.fps = self.options.analysis_fps or 25.0
        self.ring = _FrameRing(m.clip_buffer_s, m.clip_quality)
        self.state = "connecting"  # connecting | learning | live | stalled | reconnecting | stopped
        self.last_score: float | None = None
        self.frames_scored = 0
        self.events_ended = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[float, EventUpdate]] = []  # ended events waiting for their post_s
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=4096)  # (frame, wall) awaiting a score
        #: recent frame-arrival-to-score latencies (s), every scored frame (benchmarks read them)
        self.latencies: deque[float] = deque(maxlen=100_000)
        #: (wall time, score) of the last scored frames: the dashboard's sparkline
        self._history: deque[tuple[float, float]] = deque(maxlen=600)
        self._history_lock = threading.Lock()
        self._log = logging.getLogger(f"{__name__}.{camera.name}")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.source.start()
        self._thread = threading.Thread(target=self._run, name=f"scorer-{self.camera.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.source.stop()
        self.state = "stopped"

    def health(self) -> dict[str, Any]:
        s = self.source.stats
        if self.error:
            state = "error"
        elif self.state == "stopped" or (self.state == "learning" and self.source.state == "live"):
            state = self.state
        else:  # the stream's own state (connecting, live, stalled, reconnecting)
            state = self.source.state
        age = self.source.last_frame_age_s
        return {"state": state, "last_frame_age_s": None if age is None else round(age, 3),
                "frames_in": s.frames_in, "frames_scored": self.frames_scored, "dropped": self.source.dropped,
                "reconnects": s.reconnects, "failures": s.failures, "stalls": s.stalls, "discontinuities": s.discontinuities,
                "last_score": self.last_score, "events": self.events_ended, "last_error": self.error or s.last_error,
                "size": list(s.size) if s.size else None, "queue_depth": len(self.source.queue)}

    def score_history(self) -> list[tuple[float, float]]:
        """The last scored frames' (wall time, score), oldest first (at most 600)."""
        with self._history_lock:
            return list(self._history)

    def update_metrics(self) -> None:
        if self.metrics is None:
            return
        m, c, s = self.metrics, self.camera.name, self.source.stats
        m.count_to(m.frames_in, c, s.frames_in, self)
        m.count_to(m.frames_scored, c, self.frames_scored, self)
        m.count_to(m.dropped, c, self.source.dropped, self)
        m.count_to(m.reconnects, c, s.reconnects, self)
        m.count_to(m.failures, c, s.failures, self)
        m.count_to(m.stalls, c, s.stalls, self)
        m.count_to(m.events, c, self.events_ended, self)
        m.queue_depth.labels(c).set(len(self.source.queue))
        m.up.labels(c).set(1.0 if self.source.state == "live" else 0.0)
        if self.last_score is not None:
            m.last_score.labels(c).set(self.last_score)
        if self.alerts is not None:
            m.count_alerts(c, self.alerts.counts, self.alerts.degraded, self.alerts)
        m.count_to(m.retention_deleted, c, self.retention_deleted, self)

    # -- operations (called by the monitor's loop, not the scorer thread) -----------------------
    def poll_alerts(self) -> None:
        """Hand the stream's state to the alert gate (a flapping camera becomes one degraded
        notice there). Polled, so an outage shorter than a poll shows in the failure count
        rather than the state: that counts as a loss and a return."""
        if self.alerts is None:
            return
        state = {"live": "live", "stalled": "stalled", "reconnecting": "reconnecting",
                 "connecting": "offline" if self._alert_state in (None, "offline") else "reconnecting"}.get(
            self.source.state)
        failures = self.source.stats.failures
        with self.sink_lock:
            if state == "live" and self._alert_state == "live" and failures > self._failures_seen:
                self.alerts.camera_state("reconnecting", "a short outage between two polls")
            if state is not None:
                self.alerts.camera_state(state, self.source.stats.last_error or "")
                self._alert_state = state
            self.alerts.tick()
        self._failures_seen = failures

    def apply_retention(self, now: float | None = None) -> int:
        """Delete this camera's clips and snapshots past its retention rules; how many went."""
        r = self.retention
        if r is None or not r.active:
            return 0
        deleted = self.run.prune_media(self.camera.name, max_age_s=r.max_age_s, max_bytes=r.max_bytes, now=now)
        self.retention_deleted += len(deleted)
        return len(deleted)

    # -- the scorer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if isinstance(self.head, SceneHead) and not self.head.fitted:
                self.state = "learning"
                if self.explainer is not None and self.explainer.rules is None:
                    from pipelines.explain import RuleLearner

                    self._rule_learner = RuleLearner(self.cfg, self.explainer.backend, self.fps, self.camera.name)
                self.head = self._learn(self.head)
                if self.head is None:
                    return
                if self._rule_learner is not None:
                    self.explainer.rules = self._rule_learner.rules(self._log)
                    self._rule_learner = None
            self.state = "live"
            self._score()
        except (HeadError, ValueError) as err:
            self.error = str(err)
            self._log.error("camera stopped: %s", err)
        except Exception as err:  # noqa: BLE001 - one camera's bug must not take the others down
            self.error = f"unexpected {type(err).__name__}: {err}"
            self._log.error("camera stopped", exc_info=True)

    def _learn(self, head: SceneHead) -> SceneHead | None:
        """Fit the scene head on the first ``reference_seconds`` of analysed frames, as they
        come (the head keeps a bounded sample, never the frames), split at gaps."""
        want = int(round(self.cfg.monitor.reference_seconds * self.fps))
        state: dict[str, Any] = {"n": 0, "pending": None, "segment": None}
        self._log.info("learning the camera for %.0f s (%d frames)", self.cfg.monitor.reference_seconds, want)

        def piece() -> Iterator[np.ndarray]:
            while state["n"] < want and not self._stop.is_set():
                frame, state["pending"] = state["pending"] or self.source.get(0.25), None
                if frame is None:
                    continue
                if state["segment"] is not None and frame.segment != state["segment"]:
                    state["pending"], state["segment"] = frame, frame.segment
                    return  # a gap: the next piece starts with this frame
                state["segment"] = frame.segment
                state["n"] += 1
                if self._rule_learner is not None:
                    self._rule_learner.push(frame.image, frame.segment)
                yield frame.image[None]

        def pieces() -> Iterator[Iterator[np.ndarray]]:
            while state["n"] < want and not self._stop.is_set():
                yield piece()

        try:
            fitted = head.self_fitted_pieces(pieces())
        except HeadError:
            if self._stop.is_set():
                return None  # stopped while learning
            raise
        if self._stop.is_set() and state["n"] < want:
            return None
        if self.cfg.head.save:
            fitted.save(self.run.root / "heads" / self.camera.name)
        self._log.info("learned: scoring from now on")
        return fitted

    def _score(self) -> None:
        scorer = StreamScorer(self.head, self.spec, self.fps, self.rules, embed=self.embed, source_id=self.camera.name)
        segment: int | None = None
        while not self._stop.is_set():
            frame = self.source.get(0.25)
            self._flush_pending(time.time())
            self.update_metrics()
            if frame is None:
                continue
            if segment is not None and frame.segment != segment:
                self._log.info("gap in the stream (segment %d -> %d): events end, temporal state resets",
                               segment, frame.segment)
                self._handle(scorer.reset().updates)
            segment = frame.segment
            # the tracker counts the frames it scored (not the source's, which include drops)
            self.ring.add(scorer.frames_pushed, frame.wall_time, frame.image)
            self._arrivals.append((scorer.frames_pushed, frame.wall_time))
            image = frame.image
            if self.embed is not None and self.cfg.io.short_side:
                # feature heads see what batch scoring decodes: short side io.short_side
                image = resize_short_side(image[None], self.cfg.io.short_side)[0]
            step = scorer.push(image, wall_times=np.array([frame.wall_time]))
            self._scored(step)
            self._handle(step.updates)
        final = scorer.finish()
        self._scored(final)
        self._handle(final.updates)
        self._flush_pending(float("inf"))
        self.update_metrics()

    def _scored(self, step: Any) -> None:
        """Count a step's scores; each scored frame's latency is from its arrival to now (a
        snippet head answers a snippet's first frame a snippet later)."""
        n = len(step.frame_scores)
        if not n:
            return
        now = time.time()
        self.frames_scored += n
        self.last_score = float(step.frame_scores[-1])
        last = step.first_frame + n
        walls: dict[int, float] = {}
        while self._arrivals and self._arrivals[0][0] < last:
            idx, wall = self._arrivals.popleft()
            if idx >= step.first_frame:
                walls[idx] = wall
                lat = max(0.0, now - wall)
                self.latencies.append(lat)
                if self.metrics is not None:
                    self.metrics.latency.labels(self.camera.name).observe(lat)
        # a frame's score is plotted at its arrival (a snippet head answers 16 frames at once)
        points = [(walls.get(step.first_frame + k, now), float(v)) for k, v in enumerate(step.frame_scores)]
        with self._history_lock:
            self._history.extend(points)

    def _handle(self, updates: list[EventUpdate]) -> None:
        for u in updates:
            ev = u.event
            snap = self.run.snapshot_path(ev.event_id)
            jpg = self.ring.frame(ev.peak_frame)
            if jpg is not None and u.kind in ("new", "update", "end"):
                try:
                    write_snapshot(snap, jpg, ev.region)
                except OSError as err:
                    self._log.warning("snapshot not written: %s", err)
            if snap.is_file():
                u = replace(u, event=replace(ev, snapshot=self.run.relative(snap)))
            if u.kind == "end":
                self._pending.append(((ev.end_wall or time.time()) + self.cfg.monitor.post_s, u))
                continue
            self._emit(u)

    def _flush_pending(self, now: float) -> None:
        """Write the clips of ended events whose post_s has passed, then their end records."""
        due = [p for p in self._pending if p[0] <= now]
        self._pending = [p for p in self._pending if p[0] > now]
        for _, u in due:
            ev = u.event
            t0 = (ev.start_wall or 0.0) - self.cfg.monitor.pre_s
            t1 = (ev.end_wall or time.time()) + self.cfg.monitor.post_s
            clip = self.run.clip_path(ev.event_id)
            try:
                n = write_clip(clip, self.ring.between(t0, t1), self.fps)
            except Exception as err:  # noqa: BLE001 - a clip that cannot be written loses only the clip
                self._log.warning("clip not written: %s", err)
                n = 0
            if n:
                u = replace(u, event=replace(ev, clip=self.run.relative(clip),
                                             clip_info={"clip_mode": "reencoded", "clip_frames": n}))
            self.events_ended += 1
            if self.explainer is not None and self.explain_pool is not None:
                start, stop = self.explainer.window(u.event)
                frames = [(i, self.ring.frame(i)) for i in range(start, stop)]
                self.explain_pool.submit(self._explain_and_emit, u, [(i, j) for i, j in frames if j is not None])
            else:
                self._emit(u)

    def _explain_and_emit(self, u: EventUpdate, jpegs: list[tuple[int, bytes]]) -> None:
        """On the explain pool: the explanation, then the end record (an error never loses it)."""
        try:
            if not jpegs:
                raise ValueError("the event's frames are no longer buffered (monitor.clip_buffer_s)")
            frames = np.stack([decode_jpeg(j) for _, j in jpegs])
            u = replace(u, event=self.explainer.explain(u.event, frames, jpegs[0][0], self.fps, self.camera.name))
        except Exception as err:  # noqa: BLE001 - the event is written whatever the explanation did
            self.explainer.errors += 1
            self._log.warning("event %s: no explanation: %s", u.event.event_id, err)
            u = replace(u, event=replace(u.event, explanation_error=str(err)))
        self._emit(u)

    def _emit(self, u: EventUpdate) -> None:
        with self.sink_lock:
            self.sinks.event(u)
            if self.alerts is not None:  # only enqueues (webhook) or hands to paho's thread (MQTT)
                self.alerts.event(u)
        self._log.info("event %s %s (peak %.2f)", u.kind, u.event.event_id, u.event.peak_score)


class Monitor:
    """Several cameras in one process; one event log, one metrics registry, one HTTP server."""

    def __init__(self, cameras: Sequence[Camera], cfg: ScoreConfig, out: str | Path,
                 head_for: Callable[[Camera], tuple[Head, Any, Any]], explainer: EventExplainer | None = None,
                 fleet: Fleet | None = None, health_file: bool = True) -> None:
        """``explainer``: with ``--explain``, the shared backend and the job's rules (None: each
        camera induces its rules while it learns). ``fleet``: a cameras.yaml (its cameras
        replace ``cameras``; each runs with its own config, alert gate and retention).
        ``health_file``: write <out>/health.json (not in a camera actor: its driver does)."""
        if fleet is not None:
            cameras = [Camera(p.url, p.name) for p in fleet.cameras.values()]
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise MonitorError(f"camera names must be unique, got {names} (name them: NAME=URL)")
        unknown = sorted(set(cfg.monitor.cameras) - set(names))
        if unknown:
            raise MonitorError(f"monitor.cameras names {unknown}, which are not among the cameras {names}")
        self.cfg = cfg
        self.run = RunDir(out)
        self.run.create()
        self.metrics = MonitorMetrics()
        #: the records of events.jsonl, numbered, for the dashboard's feed and stream
        self.feed = EventFeed()
        self.sinks = SinkSet([EventLogSink(self.run.events_path, kinds=("new", "update", "end")), self.feed])
        self._lock = threading.Lock()
        self.explain_pool = None
        if explainer is not None:
            import concurrent.futures

            # one explanation at a time: backends (a model, a server) are shared by the cameras
            self.explain_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self.explainer = explainer
        self.head_for = head_for
        self.fleet = fleet
        #: the alert sinks of the fleet, by name (shared by the cameras that name them)
        self.alert_sinks: dict[str, Sink] = {}
        if fleet is not None:
            try:
                self.alert_sinks = fleet.build_sinks({n for p in fleet.cameras.values() for n in p.sinks})
            except ConfigError as err:
                raise MonitorError(str(err)) from None
        self.cameras: list[CameraMonitor] = []
        try:
            self.cameras = [self._camera(cam) for cam in cameras]
        except BaseException:
            self._close_alert_sinks(self.alert_sinks)
            raise
        self.dashboard: Dashboard | None = None
        self._stopped = threading.Event()
        self.health_file = health_file
        self._last_health = 0.0
        self._last_retention = 0.0

    def _camera(self, cam: Camera) -> CameraMonitor:
        """One camera's monitor (not started), with its fleet plan when there is one."""
        head, embed, spec = self.head_for(cam)
        ex = self.explainer
        own = None if ex is None else EventExplainer(ex.backend, ex.rules, ex.cfg, ex.offline)
        plan = None if self.fleet is None else self.fleet.cameras[cam.name]
        cfg, gate, retention = self.cfg, None, None
        if plan is not None:
            cfg, retention = plan.cfg, plan.retention
            gate = AlertGate(cam.name, [self.alert_sinks[n] for n in plan.sinks], plan.alerts)
        return CameraMonitor(cam, cfg, self.run, self.sinks, self._lock, head, self.metrics, embed=embed, spec=spec,
                             explainer=own, explain_pool=self.explain_pool, alerts=gate, retention=retention)

    # -- operations -----------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """The periodic work of the monitor's loop: camera states to the alert gates, sink
        counters to the metrics, retention every ``retention_check_s`` (fleet only)."""
        now = time.time() if now is None else now
        cameras = list(self.cameras)
        for c in cameras:
            c.poll_alerts()
        for name, sink in self.alert_sinks.items():
            self.metrics.count_sink(name, sink.counters(), sink)
        if self.fleet is not None and now - self._last_retention >= self.fleet.retention_check_s:
            self._last_retention = now
            self.apply_retention(now)

    def apply_retention(self, now: float | None = None) -> int:
        """Retention now: each camera's clips and snapshots, then the event log's rotation."""
        deleted = 0
        for c in list(self.cameras):
            try:
                deleted += c.apply_retention(now)
            except OSError as err:
                logger.warning("retention of %s failed: %s", c.camera.name, err)
        log = None if self.fleet is None else self.fleet.events_log
        if log is not None and log.max_mb is not None:
            with self._lock:  # not between two lines of one event
                try:
                    self.run.rotate_events(int(log.max_mb * 1024 * 1024), log.keep)
                except OSError as err:
                    logger.warning("events.jsonl not rotated: %s", err)
        return deleted

    def reload(self, fleet: Fleet) -> dict[str, list[str]]:
        """Apply a new cameras.yaml: cameras it removes or changes stop (their open events end,
        clips are written), new and changed ones start, the others keep running untouched.
        Changed sink definitions are rebuilt and every gate is pointed at the new ones."""
        if self.fleet is None:
            raise MonitorError("this monitor was not started from a cameras.yaml")
        old = self.fleet
        current = {c.camera.name: c for c in self.cameras}
        removed = [n for n in current if n not in fleet.cameras]
        changed = [n for n in current if n in fleet.cameras and
                   (fleet.cameras[n].written != old.cameras[n].written or fleet.cameras[n].url != old.cameras[n].url)]
        added = [n for n in fleet.cameras if n not in current]
        old_sinks = self.alert_sinks
        wanted = {n for p in fleet.cameras.values() for n in p.sinks}
        rebuild = {n for n in wanted if n not in old_sinks or fleet.sinks[n] != old.sinks.get(n)}
        try:
            fresh = fleet.build_sinks(rebuild)
        except ConfigError as err:
            raise MonitorError(str(err)) from None
        sinks = {**{n: s for n, s in old_sinks.items() if n in wanted and n not in rebuild}, **fresh}
        self.fleet, self.alert_sinks = fleet, sinks
        if isinstance(self.head_for, FleetHeads):
            self.head_for.fleet = fleet
        for name in removed + changed:
            current[name].stop()
        keep = [c for n, c in current.items() if n not in removed and n not in changed]
        for c in keep:  # unchanged cameras: same monitor, the (possibly rebuilt) sinks
            plan = fleet.cameras[c.camera.name]
            with self._lock:
                c.alerts.sinks = SinkSet([sinks[n] for n in plan.sinks])
        started = []
        for name in changed + added:
            try:
                cam = self._camera(Camera(fleet.cameras[name].url, name))
            except (MonitorError, HeadError, ValueError) as err:
                logger.error("reload: camera %s not started: %s", name, err)
                continue
            cam.start()
            started.append(cam)
        order = list(fleet.cameras)
        self.cameras = sorted(keep + started, key=lambda c: order.index(c.camera.name))
        self._close_alert_sinks({n: s for n, s in old_sinks.items() if sinks.get(n) is not s})
        summary = {"added": added, "removed": removed, "changed": changed,
                   "unchanged": [c.camera.name for c in keep], "sinks_rebuilt": sorted(rebuild)}
        logger.info("reloaded %s: %s", fleet.path, summary)
        return summary

    @staticmethod
    def _close_alert_sinks(sinks: dict[str, Sink]) -> None:
        for name, sink in sinks.items():
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001 - closing one sink never stops the others
                logger.warning("alert sink %s did not close cleanly: %s", name, err)

    @property
    def http_port(self) -> int | None:
        return None if self.dashboard is None else self.dashboard.port

    def health(self) -> dict[str, Any]:
        return {"cameras": {c.camera.name: c.health() for c in self.cameras}, "time": time.time()}

    def update_metrics(self) -> None:
        for c in self.cameras:
            c.update_metrics()

    def start(self) -> None:
        m = self.cfg.monitor
        if m.http_port is not None:  # bound first: a port in use stops the monitor before any camera
            try:
                token = resolve_token(m.http_host, m.http_token, self.run)
            except ValueError as err:
                raise MonitorError(str(err)) from None
            try:
                self.dashboard = Dashboard(self, m.http_host, m.http_port, token)
            except OSError as err:
                raise MonitorError(f"cannot serve HTTP on {m.http_host}:{m.http_port}: {err}") from None
        for c in self.cameras:
            c.start()
        if self.dashboard is not None:
            self.dashboard.start()

    def wait(self, until: Callable[[], bool] | None = None) -> None:
        """Block until :meth:`stop` (or ``until()`` is true), writing health.json as it goes."""
        every = self.cfg.monitor.health_every_s
        while not self._stopped.wait(min(every, 0.5)):
            if until is not None and until():
                break
            self.tick()
            self._write_health(every)

    def _write_health(self, every: float) -> None:
        now = time.time()
        if self.health_file and now - self._last_health >= every:
            self._last_health = now
            try:
                write_json_atomic(self.run.health_path, self.health())
            except OSError as err:
                logger.warning("health.json not written: %s", err)

    def stop(self) -> None:
        """End open events, write their snapshots and clips, flush the sinks, stop everything."""
        self._stopped.set()
        for c in self.cameras:
            c._stop.set()
        for c in self.cameras:
            c.stop()
        if self.explain_pool is not None:
            self.explain_pool.shutdown(wait=True)  # the last events' explanations, then their records
        if self.dashboard is not None:
            self.dashboard.stop()  # after the last records: the event streams deliver them, then end
        self._write_health(0.0)
        self.sinks.close()
        self._close_alert_sinks(self.alert_sinks)  # after the last events: they flush what is queued


def build_explainer_for(cfg: ScoreConfig, out: Path) -> EventExplainer | None:
    """With ``explain.enabled``: the explainer the cameras share (rules from ``explain.rules_file``
    or ``--reference``; None rules: each camera learns its own)."""
    from pipelines.explain import ExplainSetupError, build_explainer, load_rules
    from pipelines.score import reference_rules

    if not cfg.explain.enabled:
        return None
    run = RunDir(out)
    try:
        rules = load_rules(cfg) or reference_rules(cfg, run.explain_cache_dir, progress=False)
        explainer = build_explainer(cfg, rules, run.explain_cache_dir)
    except (ExplainSetupError, HeadError, ValueError) as err:
        raise MonitorError(f"explain: {err}") from None
    if rules is not None:
        rules.save(run.rules_path)
    return explainer


def build_heads(cfg: ScoreConfig, out: Path) -> Callable[[Camera], tuple[Head, Any, Any]]:
    """What each camera scores with: a saved head (``--head``) or one fitted on ``--reference``
    footage, shared by all cameras (frozen; scorers keep their own state), or, with neither, a
    fresh head per camera that learns that camera's first ``monitor.reference_seconds``."""
    from pipelines.score import JobError, ScoreJob, configured_head

    # a live scorer embeds one snippet at a time: a batch of one snippet's crops (the batch
    # default of 4 would make every call pay for 4: 1.0 s instead of 0.25 s for I3D on 2 cores)
    crops = {"center": 1, "5crop": 5, "10crop": 10}.get(cfg.features.crop, 1)
    if cfg.features.batch_size != crops:
        logger.info("features.batch_size %d -> %d (one snippet's crops) for live scoring", cfg.features.batch_size, crops)
        cfg.features.batch_size = crops
    if cfg.head.type == "reference" and not cfg.head.load and cfg.head.reference_seconds is None:
        cfg.head.reference_seconds = cfg.monitor.reference_seconds  # a stream has no "first 25 %"
    try:
        job = ScoreJob(cfg, out, progress=False)
        job.load_model()
        job.run_dir.create()
        job.prepare_head()
    except JobError as err:
        raise MonitorError(str(err)) from None
    head = job.head
    assert head is not None
    if not head.causal:
        raise MonitorError(f"the {head.type_name} head needs the whole video (look-ahead {head.lookahead}); "
                           "a live stream needs a causal head (ctd2gan: head.score_mode=calibrated)")
    embed: Callable[[list[Any]], list[np.ndarray]] | None = None
    if head.input.kind == "features":
        extractor = job.extractor
        model_lock = threading.Lock()  # one model for all cameras; an inference request is not re-entrant

        def embed_snippets(snippets: list[Any]) -> list[np.ndarray]:
            with model_lock:
                return list(extractor.extract(snippets).transpose(1, 0, 2))  # per snippet: (crops, dim)

        embed = embed_snippets

    shared = head.fitted or not head.needs_fit
    extractor_name = job.extractor.spec.name if job.extractor else None

    def head_for(camera: Camera) -> tuple[Head, Any, Any]:
        if shared:
            return head, embed, job.spec
        return configured_head(cfg, extractor_name, cfg.head.type), embed, job.spec

    return head_for


class FleetHeads:
    """``head_for`` of a fleet: :func:`build_heads` once per distinct head setting (saved head,
    reference footage, head and feature keys), shared by the cameras that have it."""

    def __init__(self, fleet: Fleet, out: Path) -> None:
        self.fleet, self.out = fleet, out
        self._built: dict[str, Callable[[Camera], tuple[Head, Any, Any]]] = {}

    def __call__(self, camera: Camera) -> tuple[Head, Any, Any]:
        cfg = self.fleet.cameras[camera.name].cfg
        key = json.dumps([to_dict(cfg.head), to_dict(cfg.features), to_dict(cfg.io), cfg.monitor.reference_seconds],
                         sort_keys=True, default=str)
        if key not in self._built:
            self._built[key] = build_heads(cfg, self.out)
        return self._built[key](camera)


def run_monitor(cfg: ScoreConfig, cameras: Sequence[Camera], out: str | Path, *, duration: float | None = None,
                fleet_path: str | Path | None = None, spread: Callable[[Fleet | None, ScoreConfig, Path], Any] | None = None
                ) -> int:
    """``vad monitor``: run until SIGTERM/SIGINT (or ``duration`` seconds); 0 after a clean stop.
    With ``fleet_path`` (a cameras.yaml) its cameras run, and SIGHUP reloads it: a file that no
    longer checks out is logged and the running cameras go on as they were. ``spread``: builds
    the monitor that spreads the cameras over Ray (``pipelines.monitor_ray.spread_monitor``;
    given by the caller, which keeps this module below that one)."""
    import signal

    out = Path(out)
    run = RunDir(out)
    run.create()
    config = to_dict(cfg)
    if config["monitor"].get("http_token"):
        config["monitor"]["http_token"] = "***"  # a secret: never in the run's files
    run.write_config(config)
    fleet = None
    if fleet_path is not None:
        try:
            fleet = load_fleet(fleet_path, cfg)
        except ConfigError as err:
            raise MonitorError(str(err)) from None
    monitor: Any
    if spread is not None:  # the cameras over a Ray cluster (pipelines.monitor_ray), one actor each
        if cfg.explain.enabled:
            raise MonitorError("--explain is not available with --ray-address yet (known limits)")
        monitor = spread(fleet, cfg, out)
    else:
        head_for = FleetHeads(fleet, out) if fleet is not None else build_heads(cfg, out)
        monitor = Monitor(cameras, cfg, out, head_for, build_explainer_for(cfg, out), fleet=fleet)
    stop, reload = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("signal %d: stopping (open events end, clips and logs are flushed)", signum)
        stop.set()

    def on_hangup(signum: int, _frame: Any) -> None:
        reload.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if fleet is not None:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    t_end = None if duration is None else time.time() + duration
    try:
        monitor.start()
        for s in (signal.SIGTERM, signal.SIGINT):  # again: ray.init (--ray-address) installs its own
            signal.signal(s, on_signal)
        names = ", ".join(c.camera.name for c in monitor.cameras)
        # the port is the text after the last ":" (tests and scripts parse it)
        web = monitor.dashboard
        print(f"monitoring {len(monitor.cameras)} camera(s): {names}; outputs: {out}"
              + (f"; {web.url('/healthz')}, dashboard {web.url('/')}" if web is not None else ""), flush=True)
        while True:
            monitor.wait(lambda: stop.is_set() or reload.is_set() or (t_end is not None and time.time() >= t_end))
            if not reload.is_set() or stop.is_set():
                break
            reload.clear()
            if not isinstance(monitor, Monitor):
                logger.error("reload refused: a monitor spread over Ray does not reload yet; restart it")
                continue
            try:
                summary = monitor.reload(load_fleet(fleet_path, cfg))
                print(f"reloaded {fleet_path}: " + "; ".join(f"{k}: {', '.join(v) or '-'}" for k, v in summary.items()),
                      flush=True)
            except (ConfigError, MonitorError) as err:
                logger.error("reload refused, cameras unchanged: %s", err)
    finally:
        monitor.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    health = monitor.health()["cameras"]
    print("stopped: " + "; ".join(f"{n}: {h['frames_scored']} frames scored, {h['events']} event(s), "
                                  f"{h['reconnects']} reconnect(s)" for n, h in health.items()), flush=True)
    return 0
