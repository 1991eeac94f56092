"""The live dashboard of `vad monitor --http-port` (pipelines/dashboard.py), over real HTTP with a
real Monitor: a looped, paced H.264 file as the camera (an event every loop) beside a dead RTSP
URL with credentials. The page and its local assets, the camera API, the latest frame, the event
list and its SSE stream (resumed by Last-Event-ID), snapshot and clip files (no path traversal),
the access token off loopback (401, cookie flow, Bearer, minimal /healthz), and no stream
credentials in anything served. The slow tests drive Debian's chromium (tests/browser.py) on a
real RTSP server: an event in the feed seconds after the planted anomaly, a killed server seen
as "reconnecting" on the camera's tile."""

from __future__ import annotations

import http.client
import json
import logging
import os
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest

from pipelines.cli import default_score_configs
from pipelines.monitor import Camera, Monitor, build_heads
from tests.rtsp import PLANTED_SIZE as SIZE
from tests.rtsp import free_port, write_h264
from tests.test_monitor import walkway
from vad.config import ScoreConfig, load_config
from vad.heads import SceneHead

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cret"
STREAM = {"loop": True, "pace": True, "analysis_fps": 10, "open_timeout_s": 2.0, "read_timeout_s": 2.0,
          "backoff_initial_s": 0.2, "backoff_max_s": 0.5, "healthy_after_s": 1.0}


@dataclass
class Answer:
    status: int
    headers: Any  # http.client.HTTPMessage (case-insensitive)
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Answer:
    """One request with the path sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return Answer(r.status, r.headers, r.read())
    finally:
        conn.close()


def wait_for(cond, timeout: float, step: float = 0.1) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(step)
    return False


class SSE:
    """A raw Server-Sent Events reader: ``next()`` gives {"id", "event", "data"} or {"comment"}."""

    def __init__(self, port: int, path: str = "/api/events/stream", headers: dict[str, str] | None = None,
                 timeout: float = 15) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.resp = self.conn.getresponse()
        self.raw: list[bytes] = []

    def next(self) -> dict[str, str] | None:
        msg: dict[str, str] = {}
        while True:
            line = self.resp.readline()
            self.raw.append(line)
            if not line:
                return None  # the server ended the stream
            text = line.decode().rstrip("\r\n")
            if text.startswith(":"):
                return {"comment": text[1:].strip()}
            if not text:
                if msg:
                    return msg
                continue
            key, _, value = text.partition(":")
            msg[key] = msg.get(key, "") + value.removeprefix(" ")

    def records(self, until, timeout: float) -> list[dict[str, Any]]:
        """Event messages (id + record) until ``until(records)`` is true."""
        out: list[dict[str, Any]] = []
        t0 = time.time()
        while time.time() - t0 < timeout:
            m = self.next()
            if m is None:
                break
            if m.get("event") == "event":
                out.append({"id": int(m["id"]), "record": json.loads(m["data"])})
                if until(out):
                    break
        return out

    def close(self) -> None:
        self.conn.close()


def _cfg(ref: Path | None, **monitor: Any) -> ScoreConfig:
    sets = ["head.scene={short_side: 64, grid: [8, 6], max_bank: 400, min_reference_frames: 20}",
            "monitor.pre_s=1", "monitor.post_s=1", "events.min_duration_s=0.5", "head.save=false"]
    if ref is not None:
        sets.append(f"head.reference={json.dumps(str(ref))}")
    cfg = load_config(ScoreConfig, default_score_configs(), sets)
    cfg.monitor.stream = dict(STREAM)
    cfg.monitor.http_port = 0
    for k, v in monitor.items():
        setattr(cfg.monitor, k, v)
    return cfg


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Monitor]:
    """A monitor on 127.0.0.1 (no token): "door" loops 2.5 s normal + 2.5 s of a planted block
    (an event each loop), "bad" is a dead RTSP URL with credentials. Yields once door's first
    event has ended (its snapshot and clip written)."""
    d = tmp_path_factory.mktemp("dash")
    ref = write_h264(d / "ref.mp4", walkway(200, seed=1), 10)
    cam = write_h264(d / "cam.mp4", np.concatenate([walkway(25, seed=2), walkway(50, seed=3, block_from=25)[25:]]), 10)
    cfg = _cfg(ref)
    out = d / "mon"
    bad = f"rtsp://user:{SECRET}@127.0.0.1:{free_port()}/x"
    mon = Monitor([Camera(str(cam), "door"), Camera(bad, "bad")], cfg, out, build_heads(cfg, out))
    mon.start()
    try:
        assert wait_for(lambda: any(r["update"] == "end" for _, r in mon.feed.latest())
                        and mon.cameras[1].health()["last_error"], 30), mon.health()
        yield mon
    finally:
        mon.stop()


def test_page_and_its_assets_are_served_locally(live):
    port = live.http_port
    page = get(port, "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    for asset in ("/assets/plotly.min.js", "/assets/dashboard.js", "/assets/dashboard.css"):
        assert asset in html
        a = get(port, asset)
        assert a.status == 200 and len(a.body) > 1000, asset
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    js = get(port, "/assets/dashboard.js").body.decode()
    assert "EventSource" in js and "http://" not in js and "https://" not in js
    plotly = get(port, "/assets/plotly.min.js")
    assert b"plotly.js" in plotly.body[:300] and "max-age" in plotly.headers["Cache-Control"]
    packed = get(port, "/assets/plotly.min.js", {"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and len(packed.body) < len(plotly.body) / 2
    assert get(port, "/assets/nope.js").status == 404 and get(port, "/nope").status == 404


def test_api_cameras_gives_state_rates_counters_and_a_score_history(live):
    port = live.http_port
    data = get(port, "/api/cameras").json()
    assert data["threshold"] == live.cfg.events.threshold and abs(data["time"] - time.time()) < 5
    cams = {c["name"]: c for c in data["cameras"]}
    assert list(cams) == ["door", "bad"]
    door, bad = cams["door"], cams["bad"]
    for key in ("state", "fps_in", "fps_scored", "dropped", "reconnects", "last_score", "events", "last_error",
                "scores", "has_frame"):
        assert key in door and key in bad, key
    assert door["state"] == "live" and door["has_frame"] and door["events"] >= 1
    # 10 fps analysed; over a 5 s window scoring may catch up on frames queued before it, so
    # the scored rate can briefly exceed the arrival rate by a frame or two per window
    assert 6 <= door["fps_scored"] <= 13 and door["fps_in"] >= door["fps_scored"] - 1.0, door
    assert door["reconnects"] == 0 and door["dropped"] >= 0
    times = [t for t, _ in door["scores"]]
    assert 20 <= len(times) <= 600 and times == sorted(times) and time.time() - times[-1] < 3
    assert max(s for _, s in door["scores"]) > data["threshold"]  # the block is in the history
    assert bad["state"] in ("connecting", "reconnecting") and not bad["has_frame"] and bad["scores"] == []
    assert bad["fps_scored"] == 0 and bad["last_error"]
    assert "url" not in json.dumps(data).lower().replace("last_error", "")


def test_frame_jpg_is_the_latest_analysed_frame(live):
    port = live.http_port
    r = get(port, "/api/cameras/door/frame.jpg")
    assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg" and r.body[:2] == b"\xff\xd8"
    img = cv2.imdecode(np.frombuffer(r.body, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (96, 128, 3)
    assert get(port, "/api/cameras/bad/frame.jpg").status == 404  # no frame yet
    assert get(port, "/api/cameras/nobody/frame.jpg").status == 404


def test_sse_delivers_event_records_and_resumes_after_last_event_id(live):
    port = live.http_port
    listed = get(port, "/api/events").json()
    assert listed["last_id"] >= 2 and listed["events"]
    ended = [e for e in listed["events"] if e["record"]["update"] == "end"]
    assert ended and ended[0]["record"]["video_id"] == "door"
    # the records are those of events.jsonl
    logged = [json.loads(line) for line in live.run.events_path.read_text().splitlines()]
    assert ended[0]["record"] in logged

    # a new stream replays what is kept, then goes on live: wait for a record emitted after connecting
    stream = SSE(port)
    try:
        assert stream.resp.headers["Content-Type"].startswith("text/event-stream")
        start = listed["last_id"]
        got = stream.records(lambda rs: rs[-1]["id"] > start, 20)
        assert got and [g["id"] for g in got] == sorted(g["id"] for g in got)
        assert got[0]["id"] == 1  # everything kept, from the first record
        fresh = got[-1]
        assert fresh["id"] > start and fresh["record"]["video_id"] == "door"
        assert {"event_id", "start_s", "peak_score", "update"} <= set(fresh["record"])
    finally:
        stream.close()
    # reconnecting with Last-Event-ID gives only what came after it
    resumed = SSE(port, headers={"Last-Event-ID": str(fresh["id"])})
    try:
        later = resumed.records(lambda rs: True, 20)
        assert later and later[0]["id"] == fresh["id"] + 1
    finally:
        resumed.close()


def test_sse_sends_keep_alive_comments(live):
    dash = live.dashboard
    saved = dash.keepalive_s
    dash.keepalive_s = 0.3
    stream = SSE(live.http_port, f"/api/events/stream?after={live.feed.last_id + 10**6}")
    try:
        comments = []
        t0 = time.time()
        while not comments and time.time() - t0 < 10:
            m = stream.next()
            assert m is not None
            if "comment" in m:
                comments.append(m["comment"])
        assert comments == ["keep-alive"]
    finally:
        stream.close()
        dash.keepalive_s = saved


def test_snapshot_and_clip_files_are_served_and_paths_cannot_escape(live):
    port = live.http_port
    rec = next(r for _, r in live.feed.latest() if r["update"] == "end")
    snap = get(port, "/files/" + rec["snapshot"])
    assert snap.status == 200 and snap.headers["Content-Type"] == "image/jpeg" and snap.body[:2] == b"\xff\xd8"
    clip = get(port, "/files/" + rec["clip"])
    assert clip.status == 200 and clip.headers["Content-Type"] == "video/mp4" and clip.body[4:8] == b"ftyp"
    part = get(port, "/files/" + rec["clip"], {"Range": "bytes=0-99"})
    assert part.status == 206 and len(part.body) == 100 and part.body == clip.body[:100]
    assert part.headers["Content-Range"] == f"bytes 0-99/{len(clip.body)}"
    (live.run.root / "snapshots" / ".hidden.jpg").write_bytes(b"x")
    for bad in ("/files/snapshots/../config.yaml", "/files/snapshots/..%2fconfig.yaml",
                "/files/snapshots/%2e%2e%2fevents.jsonl", "/files/clips/../../../../etc/passwd",
                "/files/clips/%2e%2e/%2e%2e/etc/passwd", "/files/snapshots/", "/files/snapshots/.",
                "/files/snapshots/..", "/files/snapshots/.hidden.jpg", "/files/events.jsonl",
                "/files/health.json", "/files/clips/" + Path(rec["snapshot"]).name,
                "/files/snapshots//etc/passwd", "/files/snapshots/%2fetc%2fpasswd",
                "/files/snapshots/" + Path(rec["snapshot"]).name + "%00.jpg",
                "/files/snapshots\\..\\config.yaml"):
        r = get(port, bad)
        assert r.status == 404, (bad, r.status)
        assert b"vad" not in r.body and b"root:" not in r.body


def test_no_stream_credentials_in_anything_served(live):
    port = live.http_port
    assert SECRET in live.cameras[1].camera.url  # the URL the monitor was given holds them
    rec = next(r for _, r in live.feed.latest() if r["update"] == "end")
    bodies = [get(port, p) for p in ("/", "/assets/dashboard.js", "/api/cameras", "/api/events", "/healthz",
                                     "/metrics", "/api/cameras/bad/frame.jpg", "/nope", "/files/" + rec["snapshot"])]
    stream = SSE(port)
    try:
        stream.records(lambda rs: len(rs) >= 2, 10)
    finally:
        stream.close()
    served = b"".join(a.body + str(a.headers).encode() for a in bodies) + b"".join(stream.raw)
    assert SECRET.encode() not in served and b"user:" not in served
    bad = next(c for c in get(port, "/api/cameras").json()["cameras"] if c["name"] == "bad")
    assert bad["last_error"]  # an error was served, without what the URL held


def test_startup_line_points_at_the_dashboard_and_keeps_the_port_parseable(tmp_path, capsys):
    from pipelines.monitor import run_monitor

    cfg = _cfg(None, http_token="a-token-given-on-the-command-line")
    cfg.monitor.stream = {**STREAM, "open_timeout_s": 1.0}
    cfg.monitor.reference_seconds = 60
    dead = f"rtsp://127.0.0.1:{free_port()}/x"
    assert run_monitor(cfg, [Camera(dead, "cam")], tmp_path / "mon", duration=0.5) == 0
    line = capsys.readouterr().out.splitlines()[0]
    port = line.rsplit(":", 1)[1].split("/")[0]
    assert port.isdigit() and line.endswith(f"dashboard http://127.0.0.1:{port}/"), line
    assert "a-token-given" not in (tmp_path / "mon" / "config.yaml").read_text()


def test_a_port_in_use_is_one_clear_error(tmp_path, capsys):
    import socket

    from pipelines.cli import main

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            code = main(["monitor", f"cam=rtsp://127.0.0.1:{free_port()}/x", "--out", str(tmp_path / "mon"),
                         "--http-port", str(port), "--duration", "5"])
    finally:  # main() logs to this test's captured stderr: later tests' threads must not
        root.handlers[:], root.level = saved[0], saved[1]
    assert code == 1 and f"cannot serve HTTP on 127.0.0.1:{port}" in capsys.readouterr().err


# -- the access token ------------------------------------------------------------------------------
@contextmanager
def _monitor_at(tmp_path: Path, host: str, **monitor: Any) -> Iterator[Monitor]:
    """A monitor of one dead camera (nothing to score: only the HTTP side matters)."""
    cfg = _cfg(None, http_host=host, **monitor)
    mon = Monitor([Camera(f"rtsp://127.0.0.1:{free_port()}/x", "cam")], cfg, tmp_path / "mon",
                  lambda cam: (SceneHead(), None, None))
    mon.start()
    try:
        yield mon
    finally:
        mon.stop()


def test_a_non_loopback_bind_requires_the_generated_token(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("VAD_HTTP_TOKEN", raising=False)
    caplog.set_level("DEBUG")
    with _monitor_at(tmp_path, "0.0.0.0") as mon:
        port = mon.http_port
        token_file = mon.run.root / "http_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        # without it: 401 everywhere but a minimal /healthz
        for path in ("/", "/api/cameras", "/api/events", "/api/events/stream", "/api/cameras/cam/frame.jpg",
                     "/metrics", "/assets/dashboard.js", "/assets/plotly.min.js", "/files/snapshots/a.jpg", "/nope"):
            assert get(port, path).status == 401, path
        health = get(port, "/healthz")
        assert health.status == 503 and health.json() == {"ok": False}  # the camera is not live
        assert get(port, "/", {"Authorization": "Bearer wrong"}).status == 401
        assert get(port, "/?token=wrong").status == 401
        assert get(port, "/", {"Cookie": "vad_token=wrong"}).status == 401
        # ?token= on / becomes a cookie and leaves the address bar
        r = get(port, f"/?token={token}")
        assert r.status == 303 and r.headers["Location"] == "/"
        cookie = r.headers["Set-Cookie"]
        assert cookie.startswith(f"vad_token={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": f"vad_token={token}"}
        assert get(port, "/", jar).status == 200 and get(port, "/api/cameras", jar).status == 200
        assert token.encode() not in get(port, "/", jar).body
        # Bearer (a scraper), and ?token= on any route
        metrics = get(port, "/metrics", {"Authorization": f"Bearer {token}"})
        assert metrics.status == 200 and b'vad_stream_live{camera="cam"} 0.0' in metrics.body
        assert get(port, f"/api/events?token={token}").status == 200
        full = get(port, "/healthz", {"Authorization": f"Bearer {token}"})
        assert full.status == 503 and "cam" in full.json()["cameras"]
        # an authorised event stream ends promptly when the monitor stops
        stream = SSE(port, headers=jar)
        assert stream.resp.status == 200
        stopper = threading.Thread(target=mon.stop)
        t0 = time.time()
        stopper.start()
        while stream.next() is not None:
            pass
        assert time.time() - t0 < 8
        stopper.join(30)
        stream.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert str(token_file) in logged and token not in logged


def test_a_token_a_header_or_cookie_cannot_carry_is_refused(tmp_path):
    from pipelines.monitor import MonitorError

    cfg = _cfg(None, http_token="two words;")
    mon = Monitor([Camera(f"rtsp://127.0.0.1:{free_port()}/x", "cam")], cfg, tmp_path / "mon",
                  lambda cam: (SceneHead(), None, None))
    try:
        with pytest.raises(MonitorError, match="http_token may hold only"):
            mon.start()
    finally:
        mon.stop()


@pytest.mark.parametrize("source", ["config", "env"])
def test_a_configured_token_is_enforced_on_loopback_too(tmp_path, monkeypatch, source):
    token = "configured-token-0123456789"
    monitor: dict[str, Any] = {}
    if source == "config":
        monkeypatch.delenv("VAD_HTTP_TOKEN", raising=False)
        monitor["http_token"] = token
    else:
        monkeypatch.setenv("VAD_HTTP_TOKEN", token)
    with _monitor_at(tmp_path, "127.0.0.1", **monitor) as mon:
        port = mon.http_port
        assert not (mon.run.root / "http_token").exists()  # nothing generated
        assert get(port, "/api/cameras").status == 401 and get(port, "/healthz").json() == {"ok": False}
        assert get(port, "/api/cameras", {"Authorization": f"Bearer {token}"}).status == 200


def test_loopback_without_a_token_is_open(tmp_path, monkeypatch):
    monkeypatch.delenv("VAD_HTTP_TOKEN", raising=False)
    with _monitor_at(tmp_path, "127.0.0.1") as mon:
        assert get(mon.http_port, "/api/cameras").status == 200
        assert "cameras" in get(mon.http_port, "/healthz").json()
        assert not (mon.run.root / "http_token").exists()


# -- in a real browser, on a real RTSP server (slow) ------------------------------------------------
RTSP_STREAM = {"open_timeout_s": 4.0, "read_timeout_s": 2.0, "stall_timeout_s": 2.0, "backoff_initial_s": 0.3,
               "backoff_max_s": 1.0, "healthy_after_s": 1.0, "analysis_fps": 10}
BLOCK_S = (8.0, 16.0)  # the planted block is on screen from 8 s to 16 s of each 20 s loop
DOCS_SHOT = REPO / "docs" / "img" / "dashboard.png"


def _rtsp_cfg(reference: Path, explain: bool = False) -> ScoreConfig:
    sets = [f"head.reference={json.dumps(str(reference))}", "events.min_duration_s=1.0", "monitor.pre_s=1",
            "monitor.post_s=1", "head.save=false", "monitor.http_port=0"]
    if explain:
        sets += ["explain.enabled=true", "explain.options={actions: false}"]
    cfg = load_config(ScoreConfig, default_score_configs(), sets)
    cfg.monitor.stream = dict(RTSP_STREAM)
    return cfg


def _dashboard_page(browser: Any, port: int) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.errors = []  # what the page reported: script errors, refused resources (CSP)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: page.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"http://127.0.0.1:{port}/")
    return page


def _save_screenshot(page: Any, name: str) -> Path:
    from tests.browser import artifact_dir

    path = artifact_dir() / name
    page.screenshot(path=str(path))
    return path


def _docs_screenshot(page: Any) -> None:
    """docs/img/dashboard.png (VAD_SCREENSHOT_DOCS=1): a 1280x800 PNG kept under 400 KB."""
    from PIL import Image

    DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_SHOT))
    if DOCS_SHOT.stat().st_size > 400_000:  # photos in the tiles: a 256-colour palette keeps it small
        Image.open(DOCS_SHOT).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(DOCS_SHOT, optimize=True)
    assert DOCS_SHOT.stat().st_size <= 400_000


@pytest.mark.slow
def test_browser_shows_the_event_seconds_after_the_planted_anomaly(footage, tmp_path):
    """Two cameras on two RTSP servers; the planted block's event is in the feed within seconds
    of the block's first frame on air, with its snapshot; then it ends with a clip and its
    explanation. The sparkline is drawn by Plotly."""
    from pipelines.monitor import build_explainer_for
    from tests.browser import open_browser
    from tests.rtsp import RTSPServer

    cfg = _rtsp_cfg(footage["reference"], explain=True)
    out = tmp_path / "mon"
    walkway_cam, lobby_cam = RTSPServer(footage["camera"], loop=True), RTSPServer(footage["reference"], loop=True)
    # fitting the head and inducing the rules first: the anomaly's time counts from the server's start
    mon = Monitor([Camera(walkway_cam.url, "walkway"), Camera(lobby_cam.url, "lobby")], cfg, out,
                  build_heads(cfg, out), build_explainer_for(cfg, out))
    with lobby_cam, open_browser() as browser:
        mon.start()  # walkway's server is not up yet: its camera retries (backoff <= 1 s)
        try:
            page = _dashboard_page(browser, mon.http_port)
            page.wait_for_selector('.camera-tile[data-camera="lobby"][data-state="live"]', timeout=15_000)
            # the server plays the file from its start-up, watched or not: the block goes on air
            # between the server's launch and its READY line (about a second). Launching it only
            # now keeps the browser's and the monitor's start-up out of the seconds before the block.
            launched = time.time()
            with walkway_cam:
                ready = time.time()
                tile = '.camera-tile[data-camera="walkway"]'
                page.wait_for_selector(f'{tile}[data-state="live"]', timeout=15_000)
                page.wait_for_function(f"""() => {{
                    const p = document.querySelector('{tile} .sparkline .main-svg path.js-line');
                    return p && (p.getAttribute('d') || '').length > 20; }}""", timeout=10_000)
                assert time.time() < launched + BLOCK_S[0], "the monitor must be scoring before the anomaly starts"
                ev = '.event[data-camera="walkway"]'
                page.wait_for_selector(ev, timeout=int((ready + BLOCK_S[0] + 10 - time.time()) * 1000))
                shown = time.time()
                # at most (from the earliest the block can be on air), and at least (from the latest)
                late, early = shown - (launched + BLOCK_S[0]), shown - (ready + BLOCK_S[0])
                print(f"the event showed {early:.2f}-{late:.2f} s after the anomaly started")
                assert late > 0, "an event before the anomaly: a false alarm"
                assert late < 5, f"the event showed up to {late:.1f} s after the anomaly started"
                page.wait_for_function(f"""() => {{ const i = document.querySelector('{ev} img.event-snapshot');
                    return i && i.complete && i.naturalWidth === {SIZE[0]}; }}""", timeout=5_000)
                assert page.locator(ev).get_attribute("data-status") == "open"
                assert page.locator(f"{ev} .event-status").inner_text().lower() == "open"
                assert page.locator(f"{ev} .event-peak").inner_text().startswith("peak ")
                assert page.locator('.camera-tile[data-camera="lobby"] .state-badge').inner_text().lower() == "live"
                page.wait_for_function("""() => [...document.querySelectorAll('.camera-frame')]
                    .every(i => i.complete && i.naturalWidth > 0)""", timeout=5_000)
                _save_screenshot(page, "dashboard.png")
                # the end: after the block (16 s), post_s, the clip and the explanation
                page.wait_for_selector(f'{ev}[data-status="ended"] a.event-clip:not([hidden])',
                                       timeout=int((ready + BLOCK_S[1] + 12 - time.time()) * 1000))
                explanation = page.locator(f"{ev} .event-explanation")
                assert explanation.is_visible() and len(explanation.inner_text()) > 20
                clip = page.request.get(page.locator(f"{ev} a.event-clip").evaluate("a => a.href"))
                assert clip.status == 200 and clip.headers["content-type"] == "video/mp4"
                assert page.locator(".event").count() == 1  # one event, its records merged
                assert page.locator("#stream-status").get_attribute("data-status") == "live"
                _save_screenshot(page, "dashboard-ended.png")
                if os.environ.get("VAD_SCREENSHOT_DOCS") == "1":
                    _docs_screenshot(page)
                assert not page.errors, page.errors
        finally:
            mon.stop()


@pytest.mark.slow
def test_browser_shows_reconnecting_when_the_server_is_killed(footage, tmp_path):
    from tests.browser import open_browser
    from tests.rtsp import RTSPServer

    cfg = _rtsp_cfg(footage["reference"])
    out = tmp_path / "mon"
    server = RTSPServer(footage["reference"], loop=True)
    mon = Monitor([Camera(server.url, "cam")], cfg, out, build_heads(cfg, out))
    with server, open_browser() as browser:
        mon.start()
        try:
            page = _dashboard_page(browser, mon.http_port)
            tile = '.camera-tile[data-camera="cam"]'
            page.wait_for_selector(f'{tile}[data-state="live"] .frame-box.has-frame', timeout=15_000)
            server.kill()
            t0 = time.time()
            page.wait_for_selector(f'{tile}[data-state="reconnecting"]', timeout=10_000)
            assert time.time() - t0 < 8
            badge = page.locator(f"{tile} .state-badge")
            assert badge.inner_text().lower() == "reconnecting" and badge.get_attribute("data-state") == "reconnecting"
            assert badge.is_visible()
            _save_screenshot(page, "dashboard-reconnecting.png")
            server.restart()
            page.wait_for_selector(f'{tile}[data-state="live"]', timeout=20_000)
            page.wait_for_function(f"() => Number(document.querySelector('{tile} .reconnects').textContent) >= 1",
                                   timeout=5_000)
            assert not page.errors, page.errors
        finally:
            mon.stop()
