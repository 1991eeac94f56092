"""Alert discipline: one incident is one alert, a flapping camera is one degraded notice.

:class:`AlertGate` sits between a camera's event tracker and its alert sinks (webhook, MQTT).
It is a :class:`~vad.sinks.Sink` itself, so the monitor hands it event updates as it hands them
to any sink; it forwards only what a person should be told:

* **Minimum duration.** An event's ``new`` is held back until the event has lasted
  ``min_duration_s``; an event that ends sooner is never alerted (counted as ``short``).
* **Cooldown.** After an alerted event ends, the camera's next event within ``cooldown_s`` is
  not alerted (counted as ``cooled``): the same incident seen twice, or a scene that keeps
  tripping, pages once. The cooldown is per gate, i.e. per camera.
* ``update`` and ``end`` of an alerted event go through (receivers close what they opened);
  those of a held-back or cooled event do not.
* **Flapping.** :meth:`camera_state` takes the stream's state (``live`` / ``reconnecting`` /
  ``stalled`` / ``offline``). The first loss of a live stream is one ``state`` notice; if the
  camera then changes state ``flap_changes`` times within ``flap_window_s`` it is reported once as
  ``degraded`` and further changes are silent. Once it has stayed live for ``recover_s`` one
  ``recovered`` notice says how many changes the episode had (those that made it degraded
  included) and how long the camera was off-line during it. A plain
  outage (lost, back, stable) is a ``state`` notice each way.

Time comes from ``clock`` (``time.time`` by default) so the rules are testable exactly.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from vad.events import EventUpdate
from vad.sinks import Sink, SinkSet

logger = logging.getLogger(__name__)

__all__ = ["AlertGate", "AlertRules", "STATES"]

STATES = ("live", "reconnecting", "stalled", "offline")


@dataclass(frozen=True)
class AlertRules:
    min_duration_s: float = 0.0
    cooldown_s: float = 60.0
    flap_changes: int = 4  # state changes within flap_window_s that make a camera "degraded"
    flap_window_s: float = 300.0
    recover_s: float = 120.0  # live this long ends a degraded episode

    def __post_init__(self) -> None:
        if min(self.min_duration_s, self.cooldown_s, self.flap_window_s, self.recover_s) < 0:
            raise ValueError("alert durations must be >= 0")
        if self.flap_changes < 2:
            raise ValueError(f"flap_changes must be >= 2, got {self.flap_changes}")


class AlertGate(Sink):
    """Filters one camera's event updates and state changes into alerts for ``sinks``."""

    name = "alerts"

    def __init__(self, camera: str, sinks: SinkSet | list[Sink], rules: AlertRules | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.camera = camera
        self.sinks = sinks if isinstance(sinks, SinkSet) else SinkSet(list(sinks))
        self.rules = rules or AlertRules()
        self.clock = clock
        self.counts = {"alerted": 0, "short": 0, "cooled": 0, "notices": 0, "suppressed_states": 0}
        self._alerted: set[str] = set()
        self._dropped: set[str] = set()  # cooled events: their later updates are dropped too
        self._cooldown_until = float("-inf")
        # state
        self._state = "offline"
        self._ever_live = False
        self._changes: deque[float] = deque()
        self._degraded_since: float | None = None
        self._episode_changes = 0
        self._episode_down_s = 0.0
        self._down_since: float | None = None
        self._outages: deque[tuple[float, float]] = deque()  # (lost, back) within the flap window
        self._live_since: float | None = None

    # ------------------------------------------------------------------ events
    def event(self, update: EventUpdate) -> None:
        ev, now = update.event, self.clock()
        eid = ev.event_id
        if eid in self._dropped:
            if update.kind == "end":
                self._dropped.discard(eid)
            return
        if eid in self._alerted:
            self.sinks.event(update)
            if update.kind == "end":
                self._alerted.discard(eid)
                self._cooldown_until = now + self.rules.cooldown_s
            return
        # not alerted yet
        if update.kind == "new" and now < self._cooldown_until:
            self.counts["cooled"] += 1
            self._dropped.add(eid)
            logger.info("%s: event %s in the cooldown: not alerted", self.camera, eid)
            return
        if ev.end_s - ev.start_s >= self.rules.min_duration_s:
            self._alerted.add(eid)
            self.counts["alerted"] += 1
            self.sinks.event(EventUpdate("new", ev))
            if update.kind == "end":
                self.sinks.event(update)
                self._alerted.discard(eid)
                self._cooldown_until = now + self.rules.cooldown_s
            return
        if update.kind == "end":  # ended before it lasted min_duration_s
            self.counts["short"] += 1

    # ------------------------------------------------------------------ camera state
    def camera_state(self, state: str, detail: str = "") -> None:
        """The stream's state now; repeated states are ignored."""
        if state not in STATES:
            raise ValueError(f"unknown camera state {state!r} (one of {', '.join(STATES)})")
        if state == self._state:
            self._maybe_recovered()
            return
        now = self.clock()
        previous, self._state = self._state, state
        if state == "live":
            self._live_since = now
            if self._down_since is not None:
                self._outages.append((self._down_since, now))
                if self._degraded_since is not None:
                    self._episode_down_s += now - self._down_since
                self._down_since = None
        elif previous == "live" or self._down_since is None:
            self._down_since = now
        first_live = state == "live" and not self._ever_live
        self._ever_live |= state == "live"
        if first_live:  # start-up is not a change worth a notice
            self._notice({"type": "state", "state": state, "detail": detail})
            return
        self._changes.append(now)
        while self._changes and self._changes[0] < now - self.rules.flap_window_s:
            self._changes.popleft()
        while self._outages and self._outages[0][1] < now - self.rules.flap_window_s:
            self._outages.popleft()
        if self._degraded_since is not None:
            self._episode_changes += 1
            self.counts["suppressed_states"] += 1
            return
        if len(self._changes) >= self.rules.flap_changes:
            self._degraded_since = self._changes[0]
            self._episode_changes = len(self._changes)
            self._episode_down_s = sum(b - a for a, b in self._outages if a >= self._degraded_since)
            self._notice({"type": "degraded", "state": state, "changes": len(self._changes),
                          "window_s": self.rules.flap_window_s, "detail": detail})
            return
        self._notice({"type": "state", "state": state, "detail": detail})

    def tick(self) -> None:
        """Call now and then (the monitor's metrics loop): ends a degraded episode on time."""
        self._maybe_recovered()

    def _maybe_recovered(self) -> None:
        if self._degraded_since is None or self._state != "live" or self._live_since is None:
            return
        now = self.clock()
        if now - self._live_since < self.rules.recover_s:
            return
        self._notice({"type": "recovered", "state": "live", "changes": self._episode_changes,
                      "degraded_s": round(self._live_since - self._degraded_since, 3),
                      "offline_s": round(self._episode_down_s, 3)})
        self._degraded_since = None
        self._episode_changes = 0
        self._episode_down_s = 0.0
        self._changes.clear()
        self._outages.clear()

    def _notice(self, payload: dict[str, Any]) -> None:
        self.counts["notices"] += 1
        payload = {"camera": self.camera, "time": self.clock(), **payload}
        logger.info("%s: %s", self.camera, payload["type"] if payload["type"] != "state" else payload["state"])
        self.sinks.notice(payload)

    @property
    def degraded(self) -> bool:
        return self._degraded_since is not None

    def close(self) -> None:
        self.sinks.close()
