"""MQTT sink against Debian's mosquitto broker on 127.0.0.1 (scripts/install_system_deps.sh):
availability online then offline by last will when the publisher is killed -9, event topics,
camera notices and the retained state."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt  # in the test extra: missing means a broken setup, not a skip
import pytest

from vad.events import Event, EventUpdate

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is missing: run `make sysdeps` (scripts/install_system_deps.sh)")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(5)


class Subscriber:
    def __init__(self, port: int, topic: str = "#") -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe(topic, qos=1), self._ready.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(5)
        time.sleep(0.2)  # the SUBACK

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def wait_for(self, topic: str, payload: str | None = None, timeout: float = 10.0) -> tuple[str, str, bool]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for m in self.messages:
                    if m[0] == topic and (payload is None or m[1] == payload):
                        return m
            time.sleep(0.02)
        raise AssertionError(f"no {payload or 'message'} on {topic}; got {self.messages}")

    def on(self, topic: str) -> list[str]:
        with self._lock:
            return [m[1] for m in self.messages if m[0] == topic]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


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
