"""The live path without a network server: the stream source on files played as a camera
(paced, looped), its watchdog, backoff and latest-wins queue, a port that accepts and never
answers, a resolution change mid-stream, and `vad monitor` end to end (one event with a
snapshot and a playable clip, a bad camera beside a good one, SIGTERM flushes everything).
The same against a real RTSP server: tests/test_monitor_rtsp.py."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.cli import main
from tests.rtsp import write_h264
from vad.io.stream import Backoff, LatestQueue, StreamOptions, StreamSource, redact_text, redact_url

REPO = Path(__file__).resolve().parents[1]
H, W = 96, 128


def walkway(n: int, seed: int = 0, block_from: int | None = None) -> np.ndarray:
    """Walkers at 1-2 px/frame over a textured background; a bright block from ``block_from`` on."""
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(np.random.default_rng(0).uniform(60, 160, (H, W, 3)).astype(np.float32), (0, 0), 3)
    tex = np.random.default_rng(1).uniform(200, 250, (20, 24, 3)).astype(np.float32)
    out = np.empty((n, H, W, 3), np.uint8)
    for t in range(n):
        f = bg + rng.normal(0, 2.0, bg.shape).astype(np.float32)
        for lane, x0, v in ((30, 10, 1), (58, 90, -2), (80, 40, 2)):
            x = int((x0 + v * t) % (W + 16)) - 8
            f[lane - 14:lane, max(0, x):max(0, x + 8)] = (30, 30, 40)
        if block_from is not None and t >= block_from:
            f[40:60, 40:64] = tex
        out[t] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def test_redaction_never_shows_credentials():
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://***@10.0.0.5:554/live"
    assert redact_url("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert "s3cret" not in redact_text("HTTPError: rtsp://admin:s3cret@10.0.0.5/x: 401 Unauthorized")


def test_backoff_is_capped_jittered_and_resets_only_when_healthy():
    b = Backoff(1.0, 8.0, 0.25, healthy_after_s=30.0, rng=random.Random(0))
    waits = [b.next_wait() for _ in range(6)]
    for w, base in zip(waits, (1, 2, 4, 8, 8, 8)):
        assert 0.75 * base <= w <= 1.25 * base
    b.healthy(5.0)  # up for 5 s: not healthy yet, the backoff stays long
    assert b.next_wait() >= 6.0
    b.healthy(31.0)
    assert b.next_wait() <= 1.25


def test_latest_wins_queue_drops_the_oldest_and_counts():
    q = LatestQueue(2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and [q.get(0.01), q.get(0.01), q.get(0.01)] == [3, 4, None]


def test_paced_looped_file_comes_at_the_analysis_rate_and_loops(tmp_path):
    video = write_h264(tmp_path / "cam.mp4", walkway(30), 30)  # 1 s of 30 fps footage
    opts = StreamOptions(analysis_fps=10, loop=True, pace=True, queue_size=64)
    with StreamSource(str(video), opts, name="cam") as src:
        t0 = time.time()
        frames = []
        while len(frames) < 25 and time.time() - t0 < 10:
            f = src.get(0.5)
            if f is not None:
                frames.append(f)
        elapsed = time.time() - t0
    assert len(frames) == 25, len(frames)
    assert 1.8 < elapsed < 4.0, elapsed  # 25 frames at 10 fps: about 2.4 s, through two loops
    pts = np.array([f.pts_s for f in frames])
    assert np.all(np.diff(pts) > 0) and np.allclose(np.diff(pts), 0.1, atol=0.02)
    assert {f.segment for f in frames} == {0} and src.stats.failures == 0
    assert frames[0].image.shape == (H, W, 3)


def test_a_port_that_accepts_and_never_answers_does_not_hang(tmp_path):
    """The open times out (open_timeout_s), the source goes on retrying with backoff, stop()
    returns promptly, and the error names the camera without credentials."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(server.accept()[0])  # accept, then never say anything
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    opts = StreamOptions(open_timeout_s=1.5, read_timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=0.5)
    src = StreamSource(f"rtsp://user:pw@127.0.0.1:{port}/cam", opts)
    try:
        src.start()
        t0 = time.time()
        while src.stats.last_error is None and time.time() - t0 < 10:
            time.sleep(0.1)
        assert src.stats.last_error is not None, "the open must time out"
        assert time.time() - t0 < 6
        assert "pw" not in src.stats.last_error and "pw" not in src.source_id
        time.sleep(1.5)
        assert src.stats.failures >= 1 and src.stats.connects == 0 and src.stats.reconnects == 0
    finally:
        t1 = time.time()
        src.stop()
        assert time.time() - t1 < 5
        done.set()
        for s in held:
            s.close()
        server.close()


def test_a_resolution_change_mid_stream_starts_a_new_segment(tmp_path):
    # MPEG-TS files concatenate byte-wise into one stream whose SPS changes in the middle
    a = write_h264(tmp_path / "a.ts", walkway(20), 10, fmt="mpegts")
    small = walkway(20)[:, ::2, ::2].copy()
    b = write_h264(tmp_path / "b.ts", small, 10, fmt="mpegts", first=20)  # timestamps go on
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    opts = StreamOptions(analysis_fps=None, queue_size=128, max_pts_jump_s=100)
    with StreamSource(str(joined), opts, name="cam") as src:
        frames = []
        t0 = time.time()
        while len(frames) < 40 and time.time() - t0 < 10:
            f = src.get(0.5)
            if f is not None:
                frames.append(f)
    sizes = [f.image.shape[:2] for f in frames[:40]]
    assert (H, W) in sizes and (H // 2, W // 2) in sizes
    first_small = sizes.index((H // 2, W // 2))
    assert frames[first_small].segment == frames[0].segment + 1
    assert src.stats.discontinuities >= 1


MON_SETS = ["--set", "head.scene={short_side: 64, grid: [8, 6], max_bank: 400, min_reference_frames: 20}",
            "--set", "monitor.pre_s=1", "--set", "monitor.post_s=1", "--set", "events.min_duration_s=0.5"]


def test_vad_monitor_one_event_with_snapshot_and_clip_and_a_bad_camera_beside(tmp_path):
    ref = write_h264(tmp_path / "ref.mp4", walkway(200, seed=1), 10)
    # 4 s normal, then a block that stays 4 s; then the file loops (normal again)
    cam = write_h264(tmp_path / "cam.mp4", np.concatenate([walkway(40, seed=2), walkway(80, seed=3, block_from=40)[40:]]), 10)
    out = tmp_path / "mon"
    code = main(["monitor", f"door={cam}", "bad=/nonexistent/cam.mp4", "--reference", str(ref), "--pace",
                 "--out", str(out), "--duration", "9", *MON_SETS])
    assert code == 0
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    ended = [r for r in records if r["update"] == "end"]
    assert len(ended) == 1 and ended[0]["video_id"] == "door"
    e = ended[0]
    assert 3.5 <= e["start_s"] <= 4.6 and e["end_s"] >= 7.5
    assert e["start_wall"] < e["end_wall"]
    x0, y0, x1, y1 = e["region"]
    assert x0 <= 52 / W <= x1 and y0 <= 50 / H <= y1
    assert (out / e["snapshot"]).is_file() and (out / e["snapshot"]).stat().st_size > 500
    assert e["clip_info"]["clip_mode"] == "reencoded"
    with av.open(str(out / e["clip"])) as clip:
        n = sum(1 for _ in clip.decode(video=0))
    assert n >= 10 * (e["end_s"] - e["start_s"]) and n == e["clip_info"]["clip_frames"]
    health = json.loads((out / "health.json").read_text())["cameras"]
    # the file (8 s) ended once: a reconnect, a new segment, the event ended at the gap
    assert health["door"]["frames_scored"] >= 70 and health["door"]["reconnects"] == 1
    assert health["bad"]["frames_scored"] == 0 and health["bad"]["failures"] >= 1 and health["bad"]["reconnects"] == 0
    assert "No such file" in health["bad"]["last_error"] or "nonexistent" in health["bad"]["last_error"]


def test_sigterm_ends_the_open_event_and_exits_zero(tmp_path):
    ref = write_h264(tmp_path / "ref.mp4", walkway(200, seed=1), 10)
    cam = write_h264(tmp_path / "cam.mp4", walkway(300, seed=3, block_from=30), 10)
    out = tmp_path / "mon"
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "monitor", f"door={cam}", "--reference", str(ref),
                             "--pace", "--out", str(out), "--http-port", "0", *MON_SETS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert "monitoring 1 camera(s)" in line, line + proc.stderr.read()
        port_file.write_text(line.rsplit(":", 1)[1].split("/")[0])
        url = f"http://127.0.0.1:{port_file.read_text()}"
        t0 = time.time()
        while time.time() - t0 < 20:
            if (out / "events.jsonl").is_file() and '"new"' in (out / "events.jsonl").read_text():
                break
            time.sleep(0.2)
        import urllib.request

        health = json.loads(urllib.request.urlopen(url + "/healthz", timeout=5).read())
        assert health["cameras"]["door"]["state"] == "live"
        metrics = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert 'vad_frames_scored_total{camera="door"}' in metrics and "vad_inference_latency_seconds" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    kinds = [r["update"] for r in records]
    assert kinds[0] == "new" and kinds[-1] == "end"  # the open event was ended at shutdown
    assert (out / records[-1]["clip"]).is_file() and (out / records[-1]["snapshot"]).is_file()


def test_per_camera_stream_options_override_the_shared_ones(tmp_path):
    from pipelines.cli import default_score_configs
    from pipelines.monitor import Camera, Monitor, MonitorError
    from vad.config import ScoreConfig, load_config
    from vad.heads import SceneHead

    cfg = load_config(ScoreConfig, default_score_configs(),
                      ["monitor.stream={open_timeout_s: 10}", "monitor.cameras={door: {open_timeout_s: 45}}"])
    cams = [Camera("rtsp://a/1", "door"), Camera("rtsp://b/2", "yard")]
    mon = Monitor(cams, cfg, tmp_path / "m", lambda cam: (SceneHead(), None, None))
    assert [c.options.open_timeout_s for c in mon.cameras] == [45, 10]
    cfg.monitor.cameras = {"gate": {"open_timeout_s": 5}}
    with pytest.raises(MonitorError, match="gate"):
        Monitor(cams, cfg, tmp_path / "m2", lambda cam: (SceneHead(), None, None))
    cfg.monitor.cameras = {"door": {"open_timeout_s": -1}}
    with pytest.raises(MonitorError, match="open_timeout_s must be positive"):
        Monitor(cams, cfg, tmp_path / "m3", lambda cam: (SceneHead(), None, None))


def test_without_reference_each_camera_learns_its_start_then_scores_with_a_frozen_head(tmp_path):
    """No --reference/--head: the scene head learns the first monitor.reference_seconds of the
    stream (as frames arrive, never holding them), is saved, then scores; a block that appears
    later is one event."""
    cam = write_h264(tmp_path / "cam.mp4", np.concatenate([walkway(60, seed=2), walkway(120, seed=3, block_from=60)[60:]]), 10)
    out = tmp_path / "mon"
    code = main(["monitor", f"door={cam}", "--pace", "--out", str(out), "--duration", "13", *MON_SETS,
                 "--set", "monitor.reference_seconds=4"])
    assert code == 0
    meta = json.loads((out / "heads" / "door" / "head.json").read_text())
    assert meta["type"] == "scene" and meta["model"]["n_reference_frames"] == 40
    ended = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    ended = [r for r in ended if r["update"] == "end"]
    # frames count from the first scored one: the block (stream frame 60) is scored frame ~20
    assert len(ended) == 1 and 18 <= ended[0]["start_frame"] <= 26, ended
    health = json.loads((out / "health.json").read_text())["cameras"]["door"]
    assert health["frames_scored"] >= 60  # everything after the 40 learned frames
