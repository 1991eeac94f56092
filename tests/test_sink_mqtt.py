"""MQTT sink against Debian's mosquitto broker on 127.0.0.1 (scripts/install_system_deps.sh):
availability online then offline by last will when the publisher is killed -9, event topics,
camera notices and the retained state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.alert_receivers import Subscriber, mosquitto
from vad.events import Event, EventUpdate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path):
    with mosquitto(tmp_path) as port:
        yield port


def _update(kind: str) -> EventUpdate:
    return EventUpdate(kind, Event(40, 79, 4.0, 8.0, 60, 0.93, 0.71, source_id="gate"))


def test_events_notices_and_retained_state_reach_the_broker(broker):
    from vad.sinks.mqtt import MQTTSink

    sub = Subscriber(broker)
    sink = MQTTSink("127.0.0.1", broker, prefix="site1", camera="gate", client_id="vad-test")
    try:
        assert sink.wait_connected(10)
        sub.wait_for("site1/available", "online")
        for kind in ("new", "update", "end"):
            sink.event(_update(kind))
        sink.notice({"camera": "gate", "type": "degraded", "state": "reconnecting", "changes": 4, "time": 1.0})
        sub.wait_for("site1/gate/events/end")
        sub.wait_for("site1/gate/notices")
        assert [json.loads(p)["type"] for p in sub.on("site1/events")] == ["new", "update", "end"]
        new = json.loads(sub.on("site1/gate/events/new")[0])
        assert new["camera"] == "gate" and new["event"]["start_frame"] == 40 and new["event"]["peak_score"] == 0.93
        assert json.loads(sub.on("site1/gate/notices")[0])["type"] == "degraded"
        assert sink.stats["dropped"] == 0 and sink.stats["published"] == 3 * 2 + 2
    finally:
        sink.close()
        sub.stop()
    # a subscriber arriving later gets the retained availability and camera state
    late = Subscriber(broker, "site1/#")
    try:
        topic, payload, retained = late.wait_for("site1/gate/state")
        assert retained and json.loads(payload)["state"] == "reconnecting" and json.loads(payload)["degraded"]
        assert late.wait_for("site1/available")[1:] == ("offline", True)  # closed cleanly: offline
    finally:
        late.stop()


def test_a_publisher_killed_with_sigkill_reads_as_offline_by_its_last_will(broker):
    sub = Subscriber(broker, "site2/available")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from vad.sinks.mqtt import MQTTSink
        sink = MQTTSink("127.0.0.1", {broker}, prefix="site2", client_id="doomed", keepalive_s=5)
        assert sink.wait_connected(10)
        print("ready", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sub.wait_for("site2/available", "online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        started = time.monotonic()
        sub.wait_for("site2/available", "offline", timeout=15)
        assert time.monotonic() - started < 15
        assert sub.on("site2/available") == ["online", "offline"]
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.stop()
