"""A real two-node Ray cluster: a head and a second node started with ``ray start`` on
127.0.0.1 (separate raylet processes, separate resources), ``vad score --ray-address`` run
against it as its own process; work runs on both nodes and the outputs equal the local
executor's. The suite runs inside ``unshare -n`` with only loopback (scripts/run_tests.sh)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_pipeline import small_args
from tests.test_pipeline_ray import scores_of
from tests.test_score_cli import moving_square_video, run_cli

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (2 CPUs) + worker node (2 CPUs) on loopback; stopped at the end."""
    if not RAY.is_file():
        pytest.fail(f"the ray command is missing next to {sys.executable}")
    port = _free_port()
    temp = Path("/tmp") / f"vadray{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    # Token authentication, as on a real cluster: every node and the driver share the token.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"]
    head = _ray("start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
                '--resources={"vad_head": 1}', *common, env=env)
    assert head.returncode == 0, head.stdout + head.stderr
    address = f"127.0.0.1:{port}"
    try:
        node = _ray("start", f"--address={address}", '--resources={"vad_second": 1}', *common, env=env)
        assert node.returncode == 0, node.stdout + node.stderr
        deadline = time.time() + 60
        while True:  # both raylets registered
            status = _ray("status", f"--address={address}", env=env, timeout=60)
            if status.stdout.count("vad_") >= 2 or time.time() > deadline:
                break
            time.sleep(1)
        assert "vad_head" in status.stdout and "vad_second" in status.stdout, status.stdout + status.stderr
        yield address, env
    finally:
        _ray("stop", "--force", env=env, timeout=120)


def test_vad_score_on_a_two_node_cluster_uses_both_nodes_and_equals_local(tmp_path, random_i3d, cluster):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        moving_square_video(videos / f"cam{i}.mkv", 16 * 12 + 5, anomaly=(60 + 20 * i, 100 + 20 * i))
    opts = small_args(random_i3d, tmp_path, "pipeline.chunk_snippets=2", "pipeline.segment_snippets=4",
                      "features.threads=1", "cache.enabled=false")
    assert run_cli([str(videos), "--out", str(tmp_path / "local"), *opts], executor="local") == 0

    out = tmp_path / "cluster"
    cmd = [sys.executable, "-m", "pipelines.cli", "score", str(videos), "--out", str(out), "--no-progress",
           "--ray-address", cluster[0], "--workers", "2", *opts]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=cluster[1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "ray" and summary["n_ok"] == 3
    nodes = {n for v in summary["videos"] for n in v["nodes"]}
    assert len(nodes) == 2, f"work ran on {nodes}"
    local, remote = scores_of(tmp_path / "local"), scores_of(out)
    assert local.keys() == remote.keys() == {"cam0", "cam1", "cam2"}
    for key in local:
        np.testing.assert_allclose(remote[key], local[key], atol=1e-5)
    assert (out / "events.jsonl").read_text() == (tmp_path / "local" / "events.jsonl").read_text()


def _get_json(url: str) -> dict:
    import urllib.error
    import urllib.request

    try:
        return json.loads(urllib.request.urlopen(url, timeout=10).read())
    except urllib.error.HTTPError as err:  # 503 while a camera is not live: the body still tells
        return json.loads(err.read())


def test_vad_monitor_spreads_cameras_over_both_nodes_and_ray_restarts_a_killed_one(tmp_path, cluster):
    """Two cameras, one actor each, on the two nodes; the driver's /healthz and /metrics cover
    both; SIGKILL of one actor's process: Ray restarts it and its camera scores again, while the
    other camera's actor is untouched and kept scoring."""
    import signal
    import textwrap
    import threading
    import urllib.request

    from tests.rtsp import write_h264
    from tests.test_monitor import MON_SETS, walkway

    ref = write_h264(tmp_path / "ref.mp4", walkway(200, seed=1), 10)
    plain = write_h264(tmp_path / "plain.mp4", walkway(120, seed=4), 10)
    path = tmp_path / "cameras.yaml"
    path.write_text(textwrap.dedent(f"""
        defaults: {{stream: {{loop: true, pace: true, analysis_fps: 10}}}}
        cameras:
          east: {{url: "{plain}"}}
          west: {{url: "{plain}"}}
    """))
    out = tmp_path / "mon"
    cmd = [sys.executable, "-m", "pipelines.cli", "monitor", "--config", str(path), "--ray-address", cluster[0],
           "--http-port", "0", "--reference", str(ref), "--out", str(out), *MON_SETS, "--set", "head.save=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster[1])
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
    try:
        deadline = time.time() + 120
        while not any("monitoring 2 camera(s)" in x for x in lines):
            assert proc.poll() is None and time.time() < deadline, "".join(lines) + proc.stderr.read()
            time.sleep(0.2)
        line = [x for x in lines if "monitoring" in x][0]
        port = line.split("/healthz")[0].rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"

        def cams() -> dict:
            return _get_json(base + "/healthz")["cameras"]

        def until(cond, timeout: float) -> bool:
            end = time.time() + timeout
            while time.time() < end:
                if cond():
                    return True
                time.sleep(0.5)
            return False

        assert until(lambda: all(h["state"] == "live" and h["frames_scored"] > 20 for h in cams().values()), 180), cams()
        first = cams()
        assert len({h["node"] for h in first.values()}) == 2, first  # one camera on each node
        metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        assert 'vad_frames_scored_total{camera="east"}' in metrics and 'vad_frames_scored_total{camera="west"}' in metrics
        os.kill(first["east"]["pid"], signal.SIGKILL)
        t_kill = time.time()
        assert until(lambda: cams()["east"]["pid"] not in (None, first["east"]["pid"]), 120), cams()
        assert until(lambda: cams()["east"]["state"] == "live" and cams()["east"]["frames_scored"] > 20, 120), cams()
        after = cams()
        assert after["east"]["restarts"] == 1
        # the other camera: the same process all along, and it kept scoring (10/s) meanwhile
        assert after["west"]["pid"] == first["west"]["pid"] and after["west"]["restarts"] == 0
        assert after["west"]["frames_scored"] - first["west"]["frames_scored"] >= 5 * (time.time() - t_kill)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    health = json.loads((out / "health.json").read_text())["cameras"]
    assert set(health) == {"east", "west"}
