"""cameras.yaml (pipelines/cameras.py): defaults and per-camera keys resolve into each camera's
own config; unknown keys, bad values, unknown sinks and missing secrets fail with one error
naming the file and the key; `vad monitor --config bad.yaml` exits 1 with that one error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.cameras import load_fleet
from vad.config import ConfigError, ScoreConfig

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "cameras.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
    defaults:
      analysis_fps: 5
      threshold: 1.2
      events: {min_duration_s: 2.0}
      stream: {stall_timeout_s: 7}
      clip: {pre_s: 3}
      sinks: [ops]
      alerts: {cooldown_s: 30}
      retention: {max_mb: 1}
    sinks:
      ops: {type: webhook, url: "http://127.0.0.1:9/hook", kinds: [new, end], retries: 1}
    cameras:
      gate:
        url: "rtsp://${CAM_USER}:${CAM_PASS}@10.0.0.5/s1"
        threshold: 0.9
        stream: {transport: udp}
        clip: {post_s: 8}
      lobby:
        url: rtsp://10.0.0.6/live
        sinks: []
        retention: {max_age_days: 2, max_mb: null}
      yard: {url: rtsp://10.0.0.7/live, enabled: false}
"""


def test_defaults_and_camera_keys_resolve_into_each_cameras_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CAM_USER", "op")
    monkeypatch.setenv("CAM_PASS", "pw-from-env")
    base = ScoreConfig()
    base.monitor.stream = {"read_timeout_s": 3.0}
    fleet = load_fleet(_write(tmp_path, GOOD), base)
    assert list(fleet.cameras) == ["gate", "lobby"] and fleet.disabled == ["yard"]
    gate, lobby = fleet.cameras["gate"], fleet.cameras["lobby"]
    assert gate.url == "rtsp://op:pw-from-env@10.0.0.5/s1"
    assert "pw-from-env" not in repr(gate) and "pw-from-env" not in repr(fleet)
    # the camera's own keys win over the defaults, mappings merge, the job's config is the base
    assert gate.cfg.events.threshold == 0.9 and lobby.cfg.events.threshold == 1.2
    assert gate.cfg.events.min_duration_s == 2.0
    assert gate.cfg.monitor.stream == {"read_timeout_s": 3.0, "stall_timeout_s": 7, "transport": "udp",
                                       "analysis_fps": 5.0}
    assert (gate.cfg.monitor.pre_s, gate.cfg.monitor.post_s) == (3.0, 8.0)
    assert (lobby.cfg.monitor.pre_s, lobby.cfg.monitor.post_s) == (3.0, base.monitor.post_s)
    assert gate.sinks == ("ops",) and lobby.sinks == ()  # a list replaces the defaults' list
    assert gate.alerts.cooldown_s == 30.0
    assert gate.retention.max_bytes == 1024 * 1024 and gate.retention.max_age_s is None
    assert lobby.retention.max_bytes is None and lobby.retention.max_age_s == 2 * 86400
    assert base.events.threshold == ScoreConfig().events.threshold  # the base is not modified
    assert fleet.sinks["ops"] == {"type": "webhook", "url": "http://127.0.0.1:9/hook", "kinds": ("new", "end"),
                                  "retries": 1}


def test_secrets_file_fills_what_the_environment_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("CAM_USER", "op")
    monkeypatch.delenv("CAM_PASS", raising=False)
    secrets = _write(tmp_path, "CAM_PASS: pw-from-file\nCAM_USER: ignored\n", "secrets.yaml")
    secrets.chmod(0o600)
    path = _write(tmp_path, "secrets_file: secrets.yaml\n" + textwrap.dedent(GOOD))
    fleet = load_fleet(path, ScoreConfig())
    assert fleet.cameras["gate"].url == "rtsp://op:pw-from-file@10.0.0.5/s1"  # the environment first


def test_a_missing_secret_names_the_camera_and_the_variable_never_a_value(tmp_path, monkeypatch):
    monkeypatch.setenv("CAM_USER", "op-user-value")
    monkeypatch.delenv("CAM_PASS", raising=False)
    path = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as err:
        load_fleet(path, ScoreConfig())
    text = str(err.value)
    assert text.startswith(str(path)) and "cameras.gate.url" in text and "${CAM_PASS}" in text
    assert "op-user-value" not in text


@pytest.mark.parametrize("edit, key", [
    (("threshold: 0.9", "treshold: 0.9"), "treshold in cameras.gate"),
    (("stall_timeout_s: 7", "stall_timeout_s: -1"), "defaults.stream"),
    (("transport: udp", "transport: sctp"), "cameras.gate.stream"),
    (("cooldown_s: 30", "cooldown_s: soon"), "defaults.alerts.cooldown_s"),
    (("sinks: []", "sinks: [pager]"), "cameras.lobby.sinks names pager"),
    (("retries: 1", "retires: 1"), "retires in sinks.ops"),
    (("type: webhook", "type: email"), "sinks.ops.type"),
    (("max_age_days: 2", "max_age_days: 0"), "cameras.lobby.retention.max_age_days"),
    (("url: rtsp://10.0.0.6/live", "uri: rtsp://10.0.0.6/live"), "uri in cameras.lobby"),
    (("gate:", "gate cam:"), "cameras.gate cam"),
])
def test_bad_keys_and_values_fail_naming_file_and_key(tmp_path, monkeypatch, edit, key):
    monkeypatch.setenv("CAM_USER", "op")
    monkeypatch.setenv("CAM_PASS", "pw")
    old, new = edit
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_fleet(path, ScoreConfig())
    assert str(err.value).startswith(f"{path}: ") and key in str(err.value), str(err.value)


def test_a_camera_without_url_and_a_fleet_without_cameras_fail(tmp_path):
    with pytest.raises(ConfigError, match=r"cameras.gate.url is required"):
        load_fleet(_write(tmp_path, "cameras:\n  gate: {threshold: 1}\n"), ScoreConfig())
    with pytest.raises(ConfigError, match="every camera is disabled"):
        load_fleet(_write(tmp_path, "cameras:\n  gate: {url: rtsp://x/y, enabled: false}\n"), ScoreConfig())
    with pytest.raises(ConfigError, match=r"defaults.url"):
        load_fleet(_write(tmp_path, "defaults: {url: rtsp://x/y}\ncameras:\n  gate: {url: rtsp://x/z}\n"),
                   ScoreConfig())


def test_vad_monitor_with_a_bad_camera_file_exits_1_with_one_error_naming_the_key(tmp_path):
    path = _write(tmp_path, """
        cameras:
          gate:
            url: rtsp://127.0.0.1:9/x
            stream: {stall_timeout: 5}
    """)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "monitor", "--config", str(path),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, proc.stderr
    assert str(path) in errors[0] and "stall_timeout" in errors[0] and "cameras.gate.stream" in errors[0]
    assert "Traceback" not in proc.stderr


def test_vad_monitor_refuses_urls_and_a_camera_file_together(tmp_path):
    path = _write(tmp_path, "cameras:\n  gate: {url: rtsp://127.0.0.1:9/x}\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "monitor", "rtsp://127.0.0.1:9/y", "--config",
                           str(path), "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 1 and "either as [NAME=]URL arguments or in one cameras.yaml" in proc.stderr


def test_the_readme_shows_the_shipped_example_as_it_is():
    example = (REPO / "configs" / "monitor" / "cameras.example.yaml").read_text()
    assert f"```yaml\n{example}```" in (REPO / "README.md").read_text()
