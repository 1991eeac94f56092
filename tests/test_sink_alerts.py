"""Alert discipline (vad.sinks.alerts): minimum duration, cooldown, one degraded notice for a
flapping camera and one recovery summary, on an exact clock."""

from __future__ import annotations

import pytest

from vad.events import Event, EventUpdate
from vad.sinks import Sink
from vad.sinks.alerts import AlertGate, AlertRules


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder(Sink):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.notices: list[dict] = []

    def event(self, update: EventUpdate) -> None:
        self.events.append((update.kind, update.event.event_id))

    def notice(self, payload: dict) -> None:
        self.notices.append(payload)


def _ev(start_s: float, end_s: float) -> Event:
    fps = 10
    return Event(int(start_s * fps), int(end_s * fps) - 1, start_s, end_s, int(start_s * fps), 0.9, 0.8,
                 source_id="cam")


@pytest.fixture
def gate():
    clock, rec = Clock(), Recorder()
    g = AlertGate("cam", [rec], AlertRules(min_duration_s=2.0, cooldown_s=30.0, flap_changes=4,
                                          flap_window_s=60.0, recover_s=20.0), clock=clock)
    return g, rec, clock


def test_an_event_is_alerted_once_it_lasts_the_minimum_and_short_ones_never(gate):
    g, rec, clock = gate
    g.event(EventUpdate("new", _ev(10, 11)))  # 1 s: held back
    assert rec.events == []
    g.event(EventUpdate("update", _ev(10, 12.5)))  # 2.5 s: now it is an alert
    g.event(EventUpdate("update", _ev(10, 14)))
    g.event(EventUpdate("end", _ev(10, 15)))
    assert rec.events == [("new", "cam:100"), ("update", "cam:100"), ("end", "cam:100")]
    clock.t += 100  # past the cooldown
    g.event(EventUpdate("new", _ev(200, 201)))
    g.event(EventUpdate("end", _ev(200, 201.5)))  # ended before 2 s: never alerted
    assert len(rec.events) == 3 and g.counts["short"] == 1 and g.counts["alerted"] == 1


def test_the_cooldown_makes_a_repeating_incident_one_alert(gate):
    g, rec, clock = gate
    g.event(EventUpdate("new", _ev(10, 13)))
    g.event(EventUpdate("end", _ev(10, 14)))
    for i in range(5):  # the scene keeps tripping for 25 s after the first alert ended
        clock.t += 5
        g.event(EventUpdate("new", _ev(20 + i * 5, 23 + i * 5)))
        g.event(EventUpdate("update", _ev(20 + i * 5, 24 + i * 5)))
        g.event(EventUpdate("end", _ev(20 + i * 5, 24 + i * 5)))
    assert rec.events == [("new", "cam:100"), ("end", "cam:100")] and g.counts["cooled"] == 5
    clock.t += 31  # the cooldown ran out
    g.event(EventUpdate("new", _ev(100, 103)))
    assert rec.events[-1] == ("new", "cam:1000")


def test_a_flapping_camera_is_one_degraded_notice_then_one_recovery_summary(gate):
    g, rec, clock = gate
    g.camera_state("live")
    assert [n["type"] for n in rec.notices] == ["state"]  # came up
    for _ in range(10):  # 10 cycles of 3 s down, 2 s up
        clock.t += 2
        g.camera_state("reconnecting", "connection refused")
        clock.t += 3
        g.camera_state("live")
    kinds = [n["type"] for n in rec.notices]
    # the first loss and return are plain state notices; the 4th change in 60 s is "degraded"
    assert kinds == ["state", "state", "state", "state", "degraded"], kinds
    assert g.degraded and g.counts["suppressed_states"] == 20 - 4
    clock.t += 10
    g.tick()
    assert len(rec.notices) == 5  # live 10 s < recover_s
    clock.t += 15
    g.tick()
    summary = rec.notices[-1]
    assert summary["type"] == "recovered" and not g.degraded
    assert summary["changes"] == 20  # every change of the episode, from the first loss on
    assert summary["offline_s"] == pytest.approx(3 * 10)  # its 10 outages of 3 s
    assert summary["camera"] == "cam"


def test_a_plain_outage_is_a_notice_each_way_and_never_degraded(gate):
    g, rec, clock = gate
    g.camera_state("live")
    clock.t += 100
    g.camera_state("reconnecting")
    clock.t += 40
    g.camera_state("live")
    g.camera_state("live")  # repeated: nothing
    clock.t += 200
    g.tick()
    assert [(n["type"], n["state"]) for n in rec.notices] == [("state", "live"), ("state", "reconnecting"),
                                                            ("state", "live")]
    with pytest.raises(ValueError, match="unknown camera state"):
        g.camera_state("exploded")
    with pytest.raises(ValueError, match="flap_changes"):
        AlertRules(flap_changes=1)
