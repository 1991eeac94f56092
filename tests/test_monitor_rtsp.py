"""`vad monitor` against a real RTSP server (GStreamer's, tests/rtsp.py) streaming footage made
from the sample camera: scoring at the analysis rate, one event with a snapshot and a playable
clip for a planted intrusion, reconnect after the server is killed and restarted, a stall
detected when the server freezes (SIGSTOP) and recovered after SIGCONT, wrong credentials and
a dead URL reported while the good camera keeps running, and no credentials in any output."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import av
import cv2
import pytest

from pipelines.cli import default_score_configs
from pipelines.monitor import Camera, Monitor, build_heads
from tests.rtsp import PLANTED_SIZE as SIZE
from tests.rtsp import RTSPServer, free_port
from vad.config import ScoreConfig, load_config

pytestmark = pytest.mark.slow

FAST = {"open_timeout_s": 4.0, "read_timeout_s": 2.0, "stall_timeout_s": 2.0, "backoff_initial_s": 0.3,
        "backoff_max_s": 1.0, "healthy_after_s": 1.0, "analysis_fps": 10}


def _cfg(reference: Path, **monitor: object) -> ScoreConfig:
    sets = [f"head.reference={json.dumps(str(reference))}", "events.min_duration_s=1.0", "monitor.pre_s=1",
            "monitor.post_s=1", "head.save=false"]
    cfg = load_config(ScoreConfig, default_score_configs(), sets)
    cfg.monitor.stream = dict(FAST)
    for k, v in monitor.items():
        setattr(cfg.monitor, k, v)
    return cfg


def _wait(cond, timeout: float, step: float = 0.1) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(step)
    return False


@contextmanager
def _one_camera(footage: dict[str, Path], tmp_path: Path, served: str = "reference"):
    """A looping server of ``footage[served]`` and a monitor (fitted on the reference footage)
    that has started scoring it."""
    with RTSPServer(footage[served], loop=True) as server:
        cfg = _cfg(footage["reference"])
        mon = Monitor([Camera(server.url, "cam")], cfg, tmp_path / "mon", build_heads(cfg, tmp_path / "mon"))
        mon.start()
        try:
            cam = mon.cameras[0]
            assert _wait(lambda: cam.frames_scored > 20, 20), cam.health()
            yield server, cam
        finally:
            mon.stop()


def test_planted_intrusion_gives_one_event_with_snapshot_and_clip(footage, tmp_path):
    with _one_camera(footage, tmp_path, "camera") as (_, cam):
        t0, n0 = time.time(), cam.frames_scored
        # the block is on screen from 8 s to 16 s of each 20 s loop: wait for its end record
        assert _wait(lambda: (tmp_path / "mon" / "events.jsonl").is_file() and
                     '"end"' in (tmp_path / "mon" / "events.jsonl").read_text(), 45)
        rate = (cam.frames_scored - n0) / (time.time() - t0)
    assert 8.0 <= rate <= 11.0, rate  # scored at the analysis rate, in real time
    records = [json.loads(line) for line in (tmp_path / "mon" / "events.jsonl").read_text().splitlines()]
    ended = [r for r in records if r["update"] == "end"]
    assert len(ended) == 1, ended
    e = ended[0]
    assert 7 <= e["end_s"] - e["start_s"] <= 10, e  # the block's 8 s (smoothing, min duration)
    x0, y0, x1, y1 = e["region"]
    assert x0 <= 160 / SIZE[0] <= x1 and y0 <= 107 / SIZE[1] <= y1, e["region"]
    snap = cv2.imread(str(tmp_path / "mon" / e["snapshot"]))
    assert snap is not None and snap.shape[:2] == (SIZE[1], SIZE[0])
    with av.open(str(tmp_path / "mon" / e["clip"])) as clip:
        n = sum(1 for _ in clip.decode(video=0))
    # the clip covers the event and its 1 s before and after
    assert n >= 10 * (e["end_s"] - e["start_s"] + 1.5)


def test_killed_and_restarted_server_reconnects_and_scoring_resumes(footage, tmp_path):
    with _one_camera(footage, tmp_path) as (server, cam):
        server.kill()
        assert _wait(lambda: cam.health()["state"] in ("reconnecting", "connecting", "stalled"), 10), cam.health()
        time.sleep(2)
        server.restart()
        before = cam.frames_scored
        assert _wait(lambda: cam.frames_scored > before + 20, 30), cam.health()
        h = cam.health()
    assert h["state"] == "live" and h["reconnects"] >= 1


def test_frozen_server_is_a_stall_and_recovers_after_sigcont(footage, tmp_path):
    with _one_camera(footage, tmp_path) as (server, cam):
        server.freeze()
        t0 = time.time()
        # stall_timeout_s 2 s (or the 2 s read timeout, whichever fires first) + the watchdog's period
        assert _wait(lambda: cam.source.stats.stalls + cam.source.stats.failures >= 1, 8), cam.health()
        detected = time.time() - t0
        time.sleep(1)
        server.thaw()
        before = cam.frames_scored
        assert _wait(lambda: cam.frames_scored > before + 20, 30), cam.health()
    assert detected <= 5.0


def test_wrong_credentials_and_a_dead_url_do_not_stop_the_good_camera(footage, tmp_path):
    with RTSPServer(footage["reference"], loop=True, user="op", password="s3cret-pw") as server:
        port = server.url.rsplit(":", 1)[1].split("/")[0]
        bad_auth = f"rtsp://op:wrong-pw@127.0.0.1:{port}/cam"
        dead = f"rtsp://127.0.0.1:{free_port()}/nothing"
        cfg = _cfg(footage["reference"], http_port=0)
        cams = [Camera(server.url, "good"), Camera(bad_auth, "badauth"), Camera(dead, "dead")]
        out = tmp_path / "mon"
        mon = Monitor(cams, cfg, out, build_heads(cfg, out))
        mon.start()
        try:
            good, bad, gone = mon.cameras
            assert _wait(lambda: good.frames_scored > 30 and bad.health()["last_error"] and gone.health()["last_error"],
                         30), mon.health()
            import urllib.request

            health = urllib.request.urlopen(f"http://127.0.0.1:{mon.http_port}/healthz", timeout=5)
            body = health.read().decode()
        except urllib.error.HTTPError as err:  # 503: not every camera is live
            body = err.read().decode()
            assert err.code == 503
        finally:
            mon.stop()
    h = json.loads(body)["cameras"]
    assert h["good"]["state"] == "live"
    assert "401" in h["badauth"]["last_error"] or "nauthorized" in h["badauth"]["last_error"]
    assert h["dead"]["state"] in ("reconnecting", "connecting") and h["dead"]["frames_scored"] == 0
    # no credentials anywhere the operator reads
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".log", ".yaml", ""):
            text = path.read_text(errors="replace")
            assert "s3cret-pw" not in text and "wrong-pw" not in text, path
    assert "s3cret-pw" not in body and "wrong-pw" not in body
