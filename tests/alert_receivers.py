"""Receivers of alerts for the tests: a local HTTP server (webhooks) and Debian's mosquitto
broker with a subscriber, all on 127.0.0.1 and free ports, stopped by the tests."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as mqtt  # in the test extra: missing means a broken setup, not a skip
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
_IDS = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A local HTTP server whose behaviour the test sets: ``ok``, ``fail500`` (then ok after
    ``fail_first`` requests), ``refuse400`` or ``hang`` (until released)."""

    def __init__(self, mode: str = "ok", fail_first: int = 0) -> None:
        self.mode, self.fail_first = mode, fail_first
        self.requests: list[tuple[dict, dict]] = []  # (headers, body)
        self.attempts = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts += 1
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                if receiver.mode == "refuse400":
                    self.send_response(400)
                elif receiver.mode == "fail500" and receiver.attempts <= receiver.fail_first:
                    self.send_response(500)
                else:
                    receiver.requests.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def mosquitto(folder: Path) -> Iterator[int]:
    """Debian's broker on a free 127.0.0.1 port (yields the port), terminated afterwards."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is missing: run `make sysdeps` (scripts/install_system_deps.sh)")
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
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
    finally:
        proc.terminate()
        proc.wait(5)


class Subscriber:
    def __init__(self, port: int, topic: str = "#") -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{next(_IDS)}")
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
