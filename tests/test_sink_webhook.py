"""Webhook sink against a real HTTP server on 127.0.0.1: delivery, auth from the environment,
retries on 500, no retry on 400, and a hanging receiver that never delays the caller."""

from __future__ import annotations

import time

import pytest

from tests.alert_receivers import Receiver
from vad.events import Event, EventUpdate
from vad.sinks import SinkSet, event_payload
from vad.sinks.webhook import WebhookSink


@pytest.fixture
def receiver_factory():
    made: list[Receiver] = []

    def make(mode: str = "ok", fail_first: int = 0) -> Receiver:
        made.append(Receiver(mode, fail_first))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def _update(kind: str = "new", start: int = 30, source: str = "lobby") -> EventUpdate:
    ev = Event(start, start + 20, start / 10, (start + 21) / 10, start + 5, 0.9, 0.7, source_id=source)
    return EventUpdate(kind, ev)


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_delivers_the_event_json_with_the_auth_header_from_the_environment(receiver_factory, monkeypatch):
    rx = receiver_factory()
    monkeypatch.setenv("VAD_TEST_HOOK_AUTH", "Bearer s3cret")
    sink = WebhookSink(rx.url, auth_env="VAD_TEST_HOOK_AUTH", camera="lobby-cam")
    assert "s3cret" not in repr(sink)
    with SinkSet([sink]) as sinks:
        sinks.event(_update("new"))
        sinks.event(_update("update"))  # not in the default kinds
        sinks.event(_update("end"))
    assert [body["type"] for _, body in rx.requests] == ["new", "end"]
    headers, body = rx.requests[0]
    assert headers["Authorization"] == "Bearer s3cret" and headers["Content-Type"] == "application/json"
    assert body == event_payload(_update("new"), camera="lobby-cam")
    assert body["camera"] == "lobby-cam" and body["event"]["start_frame"] == 30 and body["event"]["peak_score"] == 0.9
    assert sink.stats.snapshot()["sent"] == 2 and sink.stats.snapshot()["failed"] == 0


def test_missing_auth_variable_is_a_clear_error(receiver_factory, monkeypatch):
    monkeypatch.delenv("VAD_TEST_HOOK_AUTH", raising=False)
    with pytest.raises(ValueError, match="VAD_TEST_HOOK_AUTH"):
        WebhookSink(receiver_factory().url, auth_env="VAD_TEST_HOOK_AUTH")
    with pytest.raises(ValueError, match="http"):
        WebhookSink("ftp://127.0.0.1/x")


def test_retries_a_500_with_backoff_and_does_not_retry_a_400(receiver_factory):
    rx = receiver_factory("fail500", fail_first=2)
    sink = WebhookSink(rx.url, retries=3, backoff_s=0.05)
    sink.event(_update("new"))
    assert _wait(lambda: sink.stats.snapshot()["sent"] == 1)
    sink.close()
    assert rx.attempts == 3 and sink.stats.snapshot()["retries"] == 2 and len(rx.requests) == 1

    refusing = receiver_factory("refuse400")
    sink = WebhookSink(refusing.url, retries=3, backoff_s=0.05)
    sink.event(_update("new"))
    assert _wait(lambda: sink.stats.snapshot()["failed"] == 1)
    sink.close()
    assert refusing.attempts == 1 and sink.stats.snapshot()["retries"] == 0
    assert "400" in sink.stats.snapshot()["last_error"]


def test_a_dead_receiver_is_given_up_on_after_the_retries(receiver_factory):
    rx = receiver_factory()
    url = rx.url
    rx.stop()  # nothing listens there any more: connection refused
    sink = WebhookSink(url, retries=2, backoff_s=0.02)
    sink.event(_update("new"))
    assert _wait(lambda: sink.stats.snapshot()["failed"] == 1)
    sink.close()
    assert sink.stats.snapshot()["retries"] == 2 and sink.stats.snapshot()["sent"] == 0


def test_a_hanging_receiver_never_delays_the_caller_and_the_queue_stays_bounded(receiver_factory):
    rx = receiver_factory("hang")
    sink = WebhookSink(rx.url, timeout_s=0.5, retries=0, queue_size=4, flush_timeout_s=0.2)
    slowest = 0.0
    for i in range(200):  # 200 alerts while the receiver sits on the first
        started = time.perf_counter()
        sink.event(_update("new", start=i * 30))
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.05, f"an alert blocked the caller for {slowest:.3f} s"
    assert sink._queue.qsize() <= 4
    stats = sink.stats.snapshot()
    assert stats["queued"] == 200 and stats["dropped"] >= 195
    started = time.perf_counter()
    sink.close()
    assert time.perf_counter() - started < 3.0  # flush timeout + the one request's timeout
    final = sink.stats.snapshot()
    assert final["sent"] == 0 and final["sent"] + final["failed"] + final["dropped"] == 200
