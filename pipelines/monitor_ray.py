"""``vad monitor --ray-address``: the cameras spread over a Ray cluster, one actor per camera.

Each camera runs in a :class:`CameraActor`: a one-camera :class:`~pipelines.monitor.Monitor`
(the same source, scorer, events, clips, alert gate, sinks and retention as in one process),
writing into the shared run directory (``--out`` must be on storage every node sees). The
driver (:class:`RayMonitor`) only places, watches and reports:

* **Placement.** Actors ask for ``monitor.ray_cpus`` CPUs each (1) and are spread over the
  nodes (``SPREAD``), so a node takes as many cameras as its CPUs allow.
* **Restart.** An actor is created with ``max_restarts=-1``: when its process dies, Ray starts
  a new one (on any node with room), whose ``__init__`` starts the camera again: it resumes
  scoring; events of the dead process that had not ended are lost with it.
* **Never twice.** Each actor is *named* after its camera in a namespace derived from the run
  directory: Ray refuses a second actor of that name while one lives (a second driver on the same
  run directory fails at start), and restarts only after the process is gone.
* **One view.** The driver polls every actor once a second (health, counters, score history, the
  latest frame) and serves them through the usual dashboard, ``/healthz`` and ``/metrics``; an
  actor that does not answer (being restarted) shows as ``restarting``. It tails
  ``events.jsonl`` for the dashboard's feed, writes ``health.json`` and rotates the event log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from pipelines.cameras import CameraPlan, EventsLogSettings, Fleet, RetentionRules
from pipelines.dashboard import Dashboard, EventFeed, resolve_token
from pipelines.monitor import Camera, FleetHeads, Monitor, MonitorError, MonitorMetrics
from vad.config import ScoreConfig
from vad.fsutil import write_json_atomic
from vad.rundir import RunDir
from vad.sinks.alerts import AlertRules

logger = logging.getLogger(__name__)

__all__ = ["CameraActor", "RayMonitor", "fleet_of_cameras", "spread_monitor"]

#: what the driver copies from an actor's counters into its own metrics (health key -> metric)
_COUNTED = (("frames_in", "frames_in"), ("frames_scored", "frames_scored"), ("dropped", "dropped"),
            ("reconnects", "reconnects"), ("failures", "failures"), ("stalls", "stalls"), ("events", "events"))


def fleet_of_cameras(cameras: list[Camera], cfg: ScoreConfig, out: Path) -> Fleet:
    """Plain ``NAME=URL`` cameras as a fleet without sinks (every camera on the job's config)."""
    plans = {c.name: CameraPlan(c.name, c.url, cfg, (), AlertRules(), RetentionRules())
             for c in cameras}
    return Fleet(out / "cameras", plans, {}, EventsLogSettings(max_mb=None), 600.0)


class CameraActor:
    """One camera in its own Ray worker process (see the module docstring); made a Ray actor
    class by :meth:`RayMonitor.start`, so this module imports without Ray."""

    def __init__(self, plan: CameraPlan, sinks: dict[str, dict[str, Any]], retention_check_s: float,
                 cfg: ScoreConfig, out: str) -> None:
        cfg = replace(cfg, monitor=replace(cfg.monitor, http_port=None))  # the driver serves HTTP
        fleet = Fleet(Path(out) / "cameras", {plan.name: plan},
                      {n: s for n, s in sinks.items() if n in plan.sinks},
                      EventsLogSettings(max_mb=None),  # the driver alone rotates the shared log
                      retention_check_s)
        self.started = time.time()
        self.monitor = Monitor([], cfg, out, FleetHeads(fleet, Path(out)), fleet=fleet, health_file=False)
        self.monitor.start()
        self._loop = threading.Thread(target=self.monitor.wait, name="monitor-loop", daemon=True)
        self._loop.start()

    def snapshot(self) -> dict[str, Any]:
        import ray

        c = self.monitor.cameras[0]
        self.monitor.update_metrics()
        counts = dict(c.alerts.counts) if c.alerts is not None else {}
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "started": self.started,
                "health": c.health(), "history": c.score_history(), "frame": c.ring.latest(),
                "alerts": counts, "degraded": bool(c.alerts is not None and c.alerts.degraded),
                "retention_deleted": c.retention_deleted,
                "sinks": {n: s.counters() for n, s in self.monitor.alert_sinks.items()}}

    def stop(self) -> bool:
        self.monitor.stop()
        return True


class _Ring:
    """The latest frame an actor sent (the dashboard's ``ring.latest()``)."""

    def __init__(self) -> None:
        self.jpeg: bytes | None = None

    def latest(self) -> bytes | None:
        return self.jpeg


class RemoteCamera:
    """The driver's view of one camera actor: what the dashboard reads of a CameraMonitor, from
    the actor's last snapshot."""

    def __init__(self, plan: CameraPlan, actor: Any) -> None:
        self.camera = Camera(plan.url, plan.name)
        self.actor = actor
        self.source = SimpleNamespace(stats=SimpleNamespace(frames_in=0))  # what the dashboard samples
        self.ring = _Ring()
        self.frames_scored = 0
        self.last: dict[str, Any] | None = None
        self.reachable = False
        self.restarts = 0  # new processes seen after the first
        self._incarnation: object = object()  # counters of one actor process (count_to's source)
        self._pid: int | None = None
        self._history: deque[tuple[float, float]] = deque(maxlen=600)

    def update(self, snap: dict[str, Any] | None) -> None:
        if snap is None:
            self.reachable = False
            return
        if self._pid is not None and snap["pid"] != self._pid:
            self.restarts += 1
            self._incarnation = object()
            logger.warning("camera %s: its actor was restarted (pid %s -> %s)", self.camera.name, self._pid,
                           snap["pid"])
        self._pid = snap["pid"]
        self.reachable, self.last = True, snap
        self.source.stats.frames_in = snap["health"]["frames_in"]
        self.frames_scored = snap["health"]["frames_scored"]
        self.ring.jpeg = snap["frame"] or self.ring.jpeg
        self._history = deque(snap["history"], maxlen=600)

    def health(self) -> dict[str, Any]:
        if self.last is None:
            return {"state": "starting" if not self.reachable else "connecting", "last_frame_age_s": None,
                    "frames_in": 0, "frames_scored": 0, "dropped": 0, "reconnects": 0, "failures": 0, "stalls": 0,
                    "discontinuities": 0, "last_score": None, "events": 0, "last_error": None, "size": None,
                    "queue_depth": 0, "node": None, "pid": None, "restarts": self.restarts}
        h = dict(self.last["health"])
        if not self.reachable:
            h["state"] = "restarting"
        h.update(node=self.last["node"], pid=self.last["pid"], restarts=self.restarts)
        return h

    def score_history(self) -> list[tuple[float, float]]:
        return list(self._history)

    def update_metrics(self, m: MonitorMetrics) -> None:
        if self.last is None:
            return
        c, h, src = self.camera.name, self.last["health"], self._incarnation
        for key, name in _COUNTED:
            m.count_to(getattr(m, name), c, h[key], src)
        m.count_alerts(c, self.last["alerts"], self.last["degraded"], src)
        m.count_to(m.retention_deleted, c, self.last["retention_deleted"], src)
        m.up.labels(c).set(1.0 if self.reachable and h["state"] == "live" else 0.0)
        m.queue_depth.labels(c).set(h["queue_depth"])
        if h["last_score"] is not None:
            m.last_score.labels(c).set(h["last_score"])
        for sink, counts in self.last["sinks"].items():
            m.count_sink(sink, counts, src)


class RayMonitor:
    """The driver of a monitor spread over Ray (see the module docstring); the same surface as
    :class:`~pipelines.monitor.Monitor` for ``run_monitor`` and the dashboard."""

    def __init__(self, fleet: Fleet, cfg: ScoreConfig, out: str | Path, poll_s: float = 1.0) -> None:
        self.fleet, self.cfg, self.out, self.poll_s = fleet, cfg, Path(out), poll_s
        self.run = RunDir(out)
        self.run.create()
        self.metrics = MonitorMetrics()
        self.feed = EventFeed()
        self.cameras: list[RemoteCamera] = []
        self.dashboard: Dashboard | None = None
        self.namespace = "vad-monitor-" + hashlib.sha1(str(self.out.resolve()).encode()).hexdigest()[:12]
        self._stopped = threading.Event()
        self._poller: threading.Thread | None = None
        self._events_pos = (0, 0)  # (inode, offset) read of events.jsonl
        self._last_health = self._last_rotate = 0.0

    @property
    def http_port(self) -> int | None:
        return None if self.dashboard is None else self.dashboard.port

    def start(self) -> None:
        import ray

        from pipelines.executors import RayUnavailable, ensure_ray

        try:
            ensure_ray(self.cfg)
        except RayUnavailable as err:
            raise MonitorError(str(err)) from None
        m = self.cfg.monitor
        remote = ray.remote(CameraActor)
        for plan in self.fleet.cameras.values():
            try:
                actor = remote.options(name=plan.name, namespace=self.namespace, max_restarts=-1,
                                       max_task_retries=0, num_cpus=m.ray_cpus,
                                       scheduling_strategy="SPREAD").remote(
                    plan, self.fleet.sinks, self.fleet.retention_check_s, self.cfg, str(self.out))
            except ValueError as err:  # the name is taken: that camera runs already
                self.stop()
                raise MonitorError(f"camera {plan.name} already runs in this cluster for {self.out} ({err})") from None
            self.cameras.append(RemoteCamera(plan, actor))
        logger.info("%d camera actor(s) created in namespace %s", len(self.cameras), self.namespace)
        if m.http_port is not None:  # after the cameras: the dashboard learns their URLs to scrub
            try:
                token = resolve_token(m.http_host, m.http_token, self.run)
                self.dashboard = Dashboard(self, m.http_host, m.http_port, token)
            except (ValueError, OSError) as err:
                self.stop()
                raise MonitorError(f"cannot serve HTTP on {m.http_host}:{m.http_port}: {err}") from None
        self._poller = threading.Thread(target=self._poll_loop, name="ray-poller", daemon=True)
        self._poller.start()
        if self.dashboard is not None:
            self.dashboard.start()

    # -- the driver's loop ----------------------------------------------------------------------
    def poll(self) -> None:
        """One round: every actor's snapshot (those that do not answer in time show as
        restarting), the event log's new lines into the feed, health.json, rotation."""
        import ray

        refs = {c.camera.name: c.actor.snapshot.remote() for c in self.cameras}
        for c in self.cameras:
            try:
                c.update(ray.get(refs[c.camera.name], timeout=max(2.0, 3 * self.poll_s)))
            except Exception as err:  # noqa: BLE001 - RayActorError, GetTimeoutError, ...: being restarted
                logger.debug("camera %s: no snapshot: %s", c.camera.name, err)
                c.update(None)
        self._tail_events()
        now = time.time()
        if now - self._last_health >= self.cfg.monitor.health_every_s:
            self._last_health = now
            try:
                write_json_atomic(self.run.health_path, self.health())
            except OSError as err:
                logger.warning("health.json not written: %s", err)
        log = self.fleet.events_log
        if log.max_mb is not None and now - self._last_rotate >= self.fleet.retention_check_s:
            self._last_rotate = now
            try:
                self.run.rotate_events(int(log.max_mb * 1024 * 1024), log.keep)
            except OSError as err:
                logger.warning("events.jsonl not rotated: %s", err)

    def _poll_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the driver's view must outlive one bad round
                logger.warning("poll round failed", exc_info=True)
            self._stopped.wait(self.poll_s)

    def _tail_events(self) -> None:
        path = self.run.events_path
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        inode, offset = self._events_pos
        if st.st_ino != inode or st.st_size < offset:
            offset = 0  # rotated: the new file from its start
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # whole lines only: a writer may be mid-line
        for line in data[:end].splitlines():
            try:
                self.feed.add_record(json.loads(line))
            except ValueError:
                logger.warning("events.jsonl: an unreadable line skipped")
        self._events_pos = (st.st_ino, offset + end)

    # -- the Monitor surface ----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {"cameras": {c.camera.name: c.health() for c in self.cameras}, "time": time.time()}

    def update_metrics(self) -> None:
        for c in self.cameras:
            c.update_metrics(self.metrics)

    def wait(self, until: Callable[[], bool] | None = None) -> None:
        while not self._stopped.wait(0.5):
            if until is not None and until():
                break

    def stop(self) -> None:
        import ray

        self._stopped.set()
        if self._poller is not None:
            self._poller.join(10)
        refs = []
        for c in self.cameras:
            try:
                refs.append(c.actor.stop.remote())
            except Exception as err:  # noqa: BLE001 - a dead actor has nothing to flush
                logger.debug("camera %s: stop not sent: %s", c.camera.name, err)
        try:
            ray.wait(refs, num_returns=len(refs), timeout=60)
        except Exception as err:  # noqa: BLE001
            logger.warning("not every camera actor confirmed its stop: %s", err)
        for c in self.cameras:
            try:
                ray.kill(c.actor, no_restart=True)
            except Exception as err:  # noqa: BLE001
                logger.debug("camera %s: actor not killed: %s", c.camera.name, err)
        self._tail_events()
        if self.dashboard is not None:
            self.dashboard.stop()
        try:
            write_json_atomic(self.run.health_path, self.health())
        except OSError as err:
            logger.warning("health.json not written: %s", err)


def spread_monitor(cameras: list[Camera]) -> Callable[[Fleet | None, ScoreConfig, Path], RayMonitor]:
    """``run_monitor``'s ``spread``: a RayMonitor of the fleet, or of plain ``cameras``."""

    def build(fleet: Fleet | None, cfg: ScoreConfig, out: Path) -> RayMonitor:
        return RayMonitor(fleet or fleet_of_cameras(cameras, cfg, out), cfg, out)

    return build
