"""A camera fleet (cameras.yaml) through the live monitor, with real parts: webhook receivers on
127.0.0.1 (one that answers, one that hangs, one that answers 500) while scoring keeps its
latency; a flapping RTSP server (killed and restarted again and again) giving one degraded
notice and one recovery summary; retention deleting the oldest clips past the cap and rotating
the event log; a reload that leaves the unchanged cameras running; and `vad monitor --config`
publishing to Debian's mosquitto: availability online, events, a SIGHUP-added camera, and
offline by the last will when the process is killed -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from pipelines.cameras import load_fleet
from pipelines.cli import default_score_configs
from pipelines.monitor import FleetHeads, Monitor
from tests.alert_receivers import Receiver, Subscriber, mosquitto
from tests.rtsp import write_h264
from tests.test_monitor import MON_SETS, walkway
from vad.config import ScoreConfig, load_config
from vad.events import Event, EventUpdate
from vad.heads import SceneHead

REPO = Path(__file__).resolve().parents[1]
PACED = "{loop: true, pace: true, analysis_fps: 10, open_timeout_s: 5, read_timeout_s: 3, stall_timeout_s: 3}"


def _sets(ref: Path) -> list[str]:
    """MON_SETS as overrides, fitted on ``ref``."""
    pairs = [MON_SETS[i + 1] for i in range(0, len(MON_SETS), 2)]
    return [*pairs, f"head.reference={json.dumps(str(ref))}", "head.save=false"]


def _base(ref: Path) -> ScoreConfig:
    return load_config(ScoreConfig, default_score_configs(), _sets(ref))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fleet")
    return {"ref": write_h264(d / "ref.mp4", walkway(200, seed=1), 10),
            # 4 s normal, then a block for 8 s; looped, so an event every 12 s
            "cam": write_h264(d / "cam.mp4", np.concatenate([walkway(40, seed=2),
                                                             walkway(120, seed=3, block_from=40)[40:]]), 10),
            "plain": write_h264(d / "plain.mp4", walkway(120, seed=4), 10)}


def _metric(mon: Monitor, name: str, **labels: str) -> float:
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in generate_latest(mon.metrics.registry).decode().splitlines():
        if line.startswith(name + want):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _until(cond, timeout: float, step: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _started(path: Path, ref: Path, out: Path) -> tuple[Monitor, ScoreConfig]:
    """A monitor of the fleet in ``path`` (fitted on ``ref``), started, with its own loop (alert
    states, sink counters, retention) running in the background as `vad monitor` runs it."""
    base = _base(ref)
    fleet = load_fleet(path, base)
    mon = Monitor([], base, out, FleetHeads(fleet, out), fleet=fleet)
    mon.start()
    threading.Thread(target=mon.wait, daemon=True).start()
    return mon, base


@pytest.mark.slow
def test_alerts_reach_the_webhook_while_a_hanging_and_a_failing_one_never_delay_scoring(files, tmp_path):
    good, hanging, failing = Receiver("ok"), Receiver("hang"), Receiver("fail500", fail_first=10**6)
    try:
        path = tmp_path / "cameras.yaml"
        path.write_text(textwrap.dedent(f"""
            defaults:
              stream: {PACED}
              sinks: [good, hanging, failing]
              alerts: {{min_duration_s: 1, cooldown_s: 0}}
            sinks:
              good: {{type: webhook, url: "{good.url}"}}
              hanging: {{type: webhook, url: "{hanging.url}", timeout_s: 30, retries: 0, queue_size: 1,
                        flush_timeout_s: 1}}
              failing: {{type: webhook, url: "{failing.url}", retries: 3, backoff_s: 0.05, backoff_max_s: 0.1}}
            cameras:
              door: {{url: "{files['cam']}"}}
        """))
        mon, _ = _started(path, files["ref"], tmp_path / "mon")
        cam = mon.cameras[0]
        t0, n0 = time.time(), 0
        try:
            assert _until(lambda: cam.frames_scored > 0, 20), cam.health()
            t0, n0 = time.time(), cam.frames_scored
            assert _until(lambda: any(b.get("type") == "end" for _, b in good.requests), 30), good.requests
            elapsed, scored = time.time() - t0, cam.frames_scored - n0
            assert _until(lambda: _metric(mon, "vad_sink_failed_total", sink="failing") >= 1 and
                          _metric(mon, "vad_sink_dropped_total", sink="hanging") >= 1, 10)
            mon.update_metrics()
            metrics = {name: _metric(mon, f"vad_sink_{name}_total", sink=sink)
                       for name, sink in (("sent", "good"), ("retries", "failing"), ("dropped", "hanging"))}
            alerted = _metric(mon, "vad_alerts_total", camera="door", outcome="alerted")
        finally:
            t_stop = time.time()
            mon.stop()
            stop_s = time.time() - t_stop
    finally:
        for r in (good, hanging, failing):
            r.stop()
    kinds = [(b["type"], b.get("event", {}).get("event_id")) for _, b in good.requests]
    events = [k for k in kinds if k[0] in ("new", "end")]
    assert events[0][0] == "new" and ("end", events[0][1]) in events, kinds  # one incident: its new, its end
    assert any(t == "state" for t, _ in kinds)  # the camera's first "live"
    # scoring kept the analysis rate and its latency while one receiver hung and one failed
    lat = np.array(cam.latencies)
    assert scored / elapsed >= 8.0, (scored, elapsed)
    assert np.percentile(lat, 99) < 0.5 and lat.max() < 1.5, (np.percentile(lat, 99), lat.max())
    assert hanging.attempts >= 1 and failing.attempts >= 4  # the first try and 3 retries, at least
    assert metrics["sent"] >= 3 and metrics["retries"] >= 3 and metrics["dropped"] >= 1, metrics
    assert alerted >= 1
    assert stop_s < 15  # a hanging receiver delays shutdown only by its flush timeout


@pytest.mark.slow
def test_a_flapping_rtsp_camera_is_one_degraded_notice_then_one_recovery_summary(footage, tmp_path):
    from tests.rtsp import RTSPServer

    hook = Receiver("ok")
    flaps = 5
    with RTSPServer(footage["reference"], loop=True) as server:
        path = tmp_path / "cameras.yaml"
        path.write_text(textwrap.dedent(f"""
            defaults:
              stream: {{open_timeout_s: 4, read_timeout_s: 2, stall_timeout_s: 2, backoff_initial_s: 0.3,
                       backoff_max_s: 1.0, healthy_after_s: 1.0, analysis_fps: 10}}
              sinks: [hook]
              alerts: {{flap_changes: 4, flap_window_s: 300, recover_s: 5}}
            sinks:
              hook: {{type: webhook, url: "{hook.url}"}}
            cameras:
              gate: {{url: "{server.url}"}}
        """))
        mon, _ = _started(path, footage["reference"], tmp_path / "mon")
        cam = mon.cameras[0]
        try:
            assert _until(lambda: cam.frames_scored > 10, 30), cam.health()
            for _ in range(flaps):
                server.kill()
                assert _until(lambda: cam.source.state != "live", 10), cam.health()
                time.sleep(1.0)
                server.restart()
                before = cam.frames_scored
                assert _until(lambda: cam.source.state == "live" and cam.frames_scored > before + 5, 30), cam.health()
            notices = lambda: [b for _, b in hook.requests if b["type"] in ("state", "degraded", "recovered")]  # noqa: E731
            assert _until(lambda: any(n["type"] == "recovered" for n in notices()), 20), notices()
            mon.update_metrics()
            degraded_gauge = _metric(mon, "vad_camera_degraded", camera="gate")
        finally:
            mon.stop()
            hook.stop()
    got = notices()
    types = [n["type"] for n in got]
    assert types.count("degraded") == 1, types
    assert types.count("recovered") == 1 and types[-1] == "recovered", types
    # before the degraded notice: the first live and at most flap_changes - 1 plain state changes;
    # after it, silence until the summary: never one notice per flap
    assert types.index("degraded") <= 4 and types[types.index("degraded") + 1:] == ["recovered"], types
    summary = got[-1]
    assert summary["camera"] == "gate" and summary["changes"] >= 2 * flaps - 1 and summary["offline_s"] > flaps * 0.5
    assert degraded_gauge == 0.0  # recovered
    assert cam.source.stats.failures >= flaps


def _ended(camera: str, frame: int) -> EventUpdate:
    ev = Event(frame, frame + 20, frame / 10, (frame + 21) / 10, frame + 5, 0.9, 0.7, source_id=camera)
    return EventUpdate("end", ev)


def test_retention_deletes_the_oldest_clips_past_the_cap_and_rotates_the_event_log(tmp_path, caplog):
    path = tmp_path / "cameras.yaml"
    path.write_text(textwrap.dedent("""
        defaults: {retention: {max_mb: 0.004}}
        events_log: {max_mb: 0.002, keep: 2}
        retention_check_s: 3600
        cameras:
          door: {url: "rtsp://127.0.0.1:9/door"}
          door_2: {url: "rtsp://127.0.0.1:9/door2", retention: {max_mb: null}}
    """))
    base = ScoreConfig()
    fleet = load_fleet(path, base)
    mon = Monitor([], base, tmp_path / "mon", lambda cam: (SceneHead(), None, None), fleet=fleet)
    run = mon.run
    made = {}
    for cam in ("door", "door_2"):
        made[cam] = []
        for i in range(8):  # 8 clips of 1 KiB, oldest first
            clip = run.clip_path(f"{cam}:{100 * i}")
            clip.parent.mkdir(parents=True, exist_ok=True)
            clip.write_bytes(b"x" * 1024)
            os.utime(clip, (1_000_000 + i, 1_000_000 + i))
            made[cam].append(clip)
    for i in range(40):  # ~11 KiB of event records
        mon.sinks.event(_ended("door", 100 * i))
    with caplog.at_level("INFO", logger="vad.rundir"):
        mon.tick(now=2_000_000.0)  # the first tick runs retention
    assert [p.exists() for p in made["door"]] == [False] * 4 + [True] * 4  # 4 KiB kept: the newest
    assert all(p.exists() for p in made["door_2"])  # no cap for this camera
    assert "retention door: deleted 4 file(s)" in caplog.text
    assert (run.root / "events.jsonl.1").is_file() and not run.events_path.exists()
    mon.sinks.event(_ended("door", 9999))  # the log writer starts a fresh file after the rotation
    assert [json.loads(x)["start_frame"] for x in run.events_path.read_text().splitlines()] == [9999]
    mon.tick(now=2_000_001.0)  # within retention_check_s: nothing runs
    mon.update_metrics()
    assert _metric(mon, "vad_retention_deleted_files_total", camera="door") == 4
    mon.stop()


@pytest.mark.slow
def test_reload_restarts_only_changed_cameras_and_keeps_the_others_running(files, tmp_path):
    def fleet_text(cameras: str) -> str:
        return textwrap.dedent(f"""
            defaults: {{stream: {PACED}}}
            cameras:
        """) + textwrap.indent(textwrap.dedent(cameras), "  ")

    path = tmp_path / "cameras.yaml"
    path.write_text(fleet_text(f"""
        steady: {{url: "{files['plain']}"}}
        tuned: {{url: "{files['plain']}", threshold: 1.5}}
        leaving: {{url: "{files['plain']}"}}
    """))
    mon, base = _started(path, files["ref"], tmp_path / "mon")
    try:
        steady, tuned, leaving = mon.cameras
        assert _until(lambda: all(c.frames_scored > 10 for c in mon.cameras), 30), mon.health()
        path.write_text(fleet_text(f"""
            steady: {{url: "{files['plain']}"}}
            tuned: {{url: "{files['plain']}", threshold: 2.5}}
            arriving: {{url: "{files['plain']}"}}
        """))
        before = steady.frames_scored
        summary = mon.reload(load_fleet(path, base))
        assert summary == {"added": ["arriving"], "removed": ["leaving"], "changed": ["tuned"],
                           "unchanged": ["steady"], "sinks_rebuilt": []}
        names = [c.camera.name for c in mon.cameras]
        assert names == ["steady", "tuned", "arriving"]
        assert mon.cameras[0] is steady and mon.cameras[1] is not tuned
        assert mon.cameras[1].rules.threshold == 2.5 and leaving.state == "stopped"
        assert _until(lambda: all(c.frames_scored > 10 for c in mon.cameras[1:]), 30), mon.health()
        # the unchanged camera never stopped: one connection, its count went on
        assert steady.source.stats.connects == 1 and steady.frames_scored > before + 10
    finally:
        mon.stop()


def _reader(stream, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: [lines.append(line) for line in stream], daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_vad_monitor_publishes_to_mosquitto_reloads_on_sighup_and_reads_offline_after_kill_9(files, tmp_path):
    with mosquitto(tmp_path) as port:
        sub = Subscriber(port, "site/#")
        path = tmp_path / "cameras.yaml"
        head = textwrap.dedent(f"""
            defaults:
              stream: {PACED}
              sinks: [broker]
              alerts: {{min_duration_s: 1, cooldown_s: 0}}
            sinks:
              broker: {{type: mqtt, host: 127.0.0.1, port: {port}, prefix: site, keepalive_s: 5}}
            cameras:
              door: {{url: "{files['cam']}"}}
        """)
        path.write_text(head)
        out = tmp_path / "mon"
        sets = [x for s in _sets(files["ref"]) for x in ("--set", s)]
        cmd = [sys.executable, "-m", "pipelines.cli", "monitor", "--config", str(path), "--out", str(out), *sets]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout: list[str] = []
        _reader(proc.stdout, stdout)
        try:
            sub.wait_for("site/available", "online", timeout=60)
            new = json.loads(sub.wait_for("site/door/events/new", timeout=40)[1])
            assert new["camera"] == "door" and new["type"] == "new" and new["schema"] == 1
            assert json.loads(sub.wait_for("site/door/state", timeout=5)[1])["state"] == "live"
            assert json.loads(sub.wait_for("site/events", timeout=5)[1])["event"]["event_id"] == new["event"]["event_id"]
            # SIGHUP: a second camera joins, the first keeps running
            path.write_text(head + f'  hall: {{url: "{files["plain"]}"}}\n')
            proc.send_signal(signal.SIGHUP)
            assert _until(lambda: any("reloaded" in line for line in stdout), 30), stdout
            assert "added: hall" in [line for line in stdout if "reloaded" in line][0]
            assert json.loads(sub.wait_for("site/hall/state", timeout=30)[1])["state"] == "live"
            # a broken file on SIGHUP is refused; the cameras go on
            path.write_text(head.replace("cooldown_s", "cooldown"))
            proc.send_signal(signal.SIGHUP)
            assert _until(lambda: "reload refused" in (out / "run.log").read_text(), 20)
            assert "alerts" in (out / "run.log").read_text().split("reload refused", 1)[1].splitlines()[0]
            scored = json.loads((out / "health.json").read_text())["cameras"]["door"]["frames_scored"]
            assert _until(lambda: json.loads((out / "health.json").read_text())["cameras"]["door"]["frames_scored"]
                          > scored + 10, 20)
            assert proc.poll() is None
            proc.kill()  # SIGKILL: no clean shutdown, the broker tells the last will
            proc.wait(10)
            sub.wait_for("site/available", "offline", timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            sub.stop()
    assert [m[1] for m in sub.messages if m[0] == "site/available"][-1] == "offline"

