"""MQTT alert sink (``pip install vad[mqtt]``: paho-mqtt 2, callback API version 2).

Topics, with ``prefix`` (default ``vad``) and each camera's name:

=====================================  ======================================================
``<prefix>/available``                 ``online`` / ``offline``, retained; ``offline`` is also
                                       the last will, so a killed monitor reads as offline
``<prefix>/events``                    every event update, JSON (:func:`vad.sinks.event_payload`:
                                       ``type`` new / update / end, ``camera``, ``event``)
``<prefix>/<camera>/events/<type>``    the same, per camera and type
``<prefix>/<camera>/state``            the camera's last state notice, retained (JSON:
                                       ``state``, ``degraded``)
``<prefix>/<camera>/notices``          state / degraded / recovered notices (vad.sinks.alerts)
=====================================  ======================================================

Publishing never blocks scoring: paho queues messages and its network thread sends them; the
queue is bounded (``queue_size``) and what it refused is counted (``stats["dropped"]``). The
broker's password is read from the environment (``password_env``), never from a file or a log.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from vad.events import EventUpdate
from vad.sinks import Sink, event_payload

logger = logging.getLogger(__name__)

__all__ = ["MQTTSink"]


class MQTTSink(Sink):
    """Event updates and camera notices to an MQTT broker; see the module docstring."""

    name = "mqtt"

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, prefix: str = "vad",
                 client_id: str | None = None, username: str | None = None, password_env: str | None = None,
                 qos: int = 1, keepalive_s: int = 30, queue_size: int = 1000, camera: str | None = None,
                 kinds: tuple[str, ...] = ("new", "update", "end")) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ValueError("the MQTT sink needs paho-mqtt: pip install 'vad[mqtt]'") from None
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        if not prefix or any(c in prefix for c in "#+") or prefix.endswith("/"):
            raise ValueError(f"bad MQTT topic prefix {prefix!r}")
        self.prefix, self.qos, self.camera, self.kinds = prefix, qos, camera, tuple(kinds)
        self.stats = {"published": 0, "dropped": 0, "connects": 0, "disconnects": 0}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "")
        if username:
            password = os.environ.get(password_env) if password_env else None
            if password_env and password is None:
                raise ValueError(f"MQTT password_env {password_env!r} is not set in the environment")
            self.client.username_pw_set(username, password)
        self.client.max_queued_messages_set(int(queue_size))
        self.client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.connect_async(host, int(port), keepalive=int(keepalive_s))
        self.client.loop_start()

    def __repr__(self) -> str:
        return f"MQTTSink(prefix={self.prefix!r})"

    def topic(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # paho's network thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            logger.warning("MQTT broker refused the connection: %s", reason_code)
            return
        self.stats["connects"] += 1
        client.publish(self.topic("available"), "online", qos=1, retain=True)
        self._connected.set()
        logger.info("MQTT connected")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        self.stats["disconnects"] += 1
        logger.info("MQTT disconnected: %s", reason_code)

    def _publish(self, topic: str, payload: dict[str, Any] | str, retain: bool = False) -> None:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        info = self.client.publish(topic, body, qos=self.qos, retain=retain)
        with self._lock:
            if info.rc == self._mqtt.MQTT_ERR_SUCCESS or info.rc == self._mqtt.MQTT_ERR_NO_CONN:
                self.stats["published"] += 1  # NO_CONN: queued, sent when the broker is back
            else:
                self.stats["dropped"] += 1

    # the sink interface
    def event(self, update: EventUpdate) -> None:
        if update.kind not in self.kinds:
            return
        payload = event_payload(update, camera=self.camera)
        self._publish(self.topic("events"), payload)
        self._publish(self.topic(payload["camera"], "events", update.kind), payload)

    def notice(self, payload: dict[str, Any]) -> None:
        camera = str(payload.get("camera") or self.camera or "camera")
        self._publish(self.topic(camera, "notices"), payload)
        if "state" in payload:
            state = {"state": payload["state"], "degraded": payload.get("type") == "degraded",
                     "time": payload.get("time")}
            self._publish(self.topic(camera, "state"), state, retain=True)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"sent": self.stats["published"], "dropped": self.stats["dropped"]}

    def close(self) -> None:
        if self.client is None:
            return
        try:
            if self._connected.is_set():
                self.client.publish(self.topic("available"), "offline", qos=1, retain=True).wait_for_publish(2.0)
        except (RuntimeError, ValueError) as err:  # not connected any more
            logger.debug("MQTT offline message not sent: %s", err)
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None
