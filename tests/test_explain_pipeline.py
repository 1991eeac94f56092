"""The explanation stage through `vad score` and `vad monitor`, and the training-free heads
through `vad score --head anomalyruler|eventvad`: on the real sample video with a planted
fast-motion segment (the evidence is checked against the frames), on tiny lossless scenes, and
with a backend that is down (events survive with an explanation_error, exit status 2)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipelines.cli import main
from tests.rtsp import write_h264
from tests.test_monitor import MON_SETS, walkway
from tests.videos import require_sample, write_lossless_video
from vad.explain.motion import snippet_motion
from vad.io import open_video

OFFLINE = ["--set", "explain.options={actions: false}"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple[int, int]]:
    """The sample video at half size: frames 0-239 as reference; a test clip of frames 240-389
    whose frames 60-99 are a 3x time warp (people suddenly three times as fast)."""
    path = require_sample("vtest.avi")
    with open_video(str(path)) as reader:
        frames = reader.read(0, len(reader))
    frames = np.stack([cv2.resize(f, (384, 288), interpolation=cv2.INTER_AREA) for f in frames])
    root = tmp_path_factory.mktemp("planted")
    ref = write_lossless_video(root / "reference.mkv", frames[:240], fps=10)
    test = np.concatenate([frames[240:300], frames[300:420:3], frames[420:470]])
    cam = write_lossless_video(root / "walkway.mkv", test, fps=10)
    return ref, cam, (60, 100)


def read(path: Path) -> np.ndarray:
    with open_video(str(path)) as reader:
        return reader.read(0, len(reader))


def test_explain_a_planted_fast_segment_by_its_motion_figures(planted, tmp_path):
    ref, cam, (a, b) = planted
    out = tmp_path / "run"
    assert main(["score", str(cam), "--reference", str(ref), "--explain", "--out", str(out), "--no-progress",
                 *OFFLINE]) == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    warped = [e for e in events if e["start_frame"] < b and e["end_frame"] >= a]
    assert warped, events
    e = max(warped, key=lambda e: e["peak_score"])
    assert "explanation_error" not in e
    assert e["explanation"].startswith("Fast motion in"), e["explanation"]
    ev = e["evidence"]
    top = ev["rules_broken"][0]
    assert top["field"].endswith(".speed") and top["ratio"] > 1.2
    # the figures are the frames' own: recompute the snippet's motion from the decoded video
    s0, s1 = top["frames"]
    assert [s0, s1] in ev["frames"] and a - 12 <= s0 <= b
    measured = snippet_motion(read(cam)[s0:s1 + 1])
    keys = top["field"].split(".")[1:]
    node = measured
    for k in keys:
        node = node[k]
    assert top["observed"] == pytest.approx(node, abs=1e-3)
    # the limit is the one in the run's rules file, and the sentence quotes both numbers
    rules = yaml.safe_load((out / "rules.yaml").read_text())
    limit = {r["id"]: r["check"]["limit"] for r in rules["anomaly"] if r["check"]["op"] == "above"}[top["rule_id"]]
    assert top["limit"] == pytest.approx(limit) and top["ratio"] == pytest.approx(top["observed"] / limit, rel=1e-3)
    assert f"{top['observed']:.2f} px/frame" in e["explanation"] and f"({limit:.2f} px/frame)" in e["explanation"]
    assert ev["channel"] == "speed" and ev["backend"].startswith("offline")
    # normal stretches of the same camera got no speed explanation of this strength
    summary = json.loads((out / "summary.json").read_text())
    assert summary["explain"] == {"explained": len(events), "errors": 0}
    assert (out / "plots" / "walkway.png").is_file()


def test_training_free_heads_score_the_planted_segment_higher(planted, tmp_path):
    ref, cam, (a, b) = planted
    for head in ("anomalyruler", "eventvad"):
        out = tmp_path / head
        assert main(["score", str(cam), "--reference", str(ref), "--head", head, "--out", str(out),
                     "--no-progress", *OFFLINE]) == 0
        scores = np.loadtxt(out / "scores" / "walkway.csv", delimiter=",", skiprows=1, usecols=2)
        assert len(scores) == 150
        inside, outside = scores[a:b].mean(), np.r_[scores[:a], scores[b:]].mean()
        assert inside > 1.5 * outside, (head, inside, outside)
        meta = json.loads((out / "head" / "head.json").read_text())
        assert meta["type"] == head and (out / "head" / "rules.yaml").is_file()
        again = tmp_path / f"{head}-again"
        assert main(["score", str(cam), "--head", str(out / "head"), "--out", str(again), "--no-progress",
                     *OFFLINE]) == 0
        assert (again / "scores" / "walkway.csv").read_text() == (out / "scores" / "walkway.csv").read_text()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_backend_that_is_down_leaves_events_with_an_error_and_exit_status_2(tmp_path):
    from tests.test_scene_head import scene

    ref, _ = scene(200, seed=1)
    test, _ = scene(90, seed=4, block=(30, 40, 40, 24, 20))
    write_lossless_video(tmp_path / "ref.mkv", ref, fps=10)
    write_lossless_video(tmp_path / "cam.mkv", test, fps=10)
    sets = ["--set", "head.scene={short_side: 64, grid: [8, 6], max_bank: 400, min_reference_frames: 20}",
            "--set", "explain.backend=openai", "--set",
            f"explain.options={{base_url: 'http://127.0.0.1:{closed_port()}/v1', model: tiny}}",
            "--set", "explain.retries=0", "--set", "explain.timeout_s=5"]
    out = tmp_path / "run"
    code = main(["score", str(tmp_path / "cam.mkv"), "--reference", str(tmp_path / "ref.mkv"), "--explain",
                 "--out", str(out), "--no-progress", *sets])
    assert code == 2
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == 1 and 30 <= events[0]["start_frame"] <= 35  # the event itself is intact
    assert "explanation" not in events[0] and "openai backend" in events[0]["explanation_error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_failed"] == 0 and summary["explain"]["errors"] == 1
    assert (out / "scores" / "cam.csv").is_file()


def test_bad_explain_settings_are_one_clear_error(tmp_path, capsys):
    from tests.test_scene_head import scene

    write_lossless_video(tmp_path / "cam.mkv", scene(40, seed=4)[0], fps=10)
    assert main(["score", str(tmp_path / "cam.mkv"), "--explain", "--out", str(tmp_path / "a"), "--no-progress",
                 "--set", "explain.backend=nope"]) == 1
    assert "unknown perception backend 'nope'" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("format: vad-rules\nanomaly:\n  - {text: t, check: {op: above}}\n")
    assert main(["score", str(tmp_path / "cam.mkv"), "--explain", "--out", str(tmp_path / "b"), "--no-progress",
                 "--set", f"explain.rules_file={tmp_path / 'bad.yaml'}"]) == 1
    assert "above needs a field" in capsys.readouterr().err


def test_monitor_explains_an_ended_event_before_writing_it(tmp_path):
    ref = write_h264(tmp_path / "ref.mp4", walkway(200, seed=1), 10)
    cam = write_h264(tmp_path / "cam.mp4", np.concatenate([walkway(40, seed=2), walkway(80, seed=3, block_from=40)[40:]]), 10)
    out = tmp_path / "mon"
    code = main(["monitor", f"door={cam}", "--reference", str(ref), "--pace", "--explain", "--out", str(out),
                 "--duration", "9", *MON_SETS, *OFFLINE, "--set", "explain.rules=['skateboards are anomalous']"])
    assert code == 0
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    ended = [r for r in records if r["update"] == "end"]
    assert len(ended) == 1
    e = ended[0]
    assert isinstance(e.get("explanation"), str) and e["explanation"], e
    assert e["evidence"]["frames"] and e["evidence"]["backend"].startswith("offline")
    # the block stays still: the static channel decided, and the explanation says so or names a rule
    rules = yaml.safe_load((out / "rules.yaml").read_text())
    assert any(r["source"] == "user" and r["text"] == "skateboards are anomalous" for r in rules["anomaly"])
    assert all("explanation" not in r for r in records if r["update"] != "end")


def test_monitor_without_reference_learns_rules_with_the_head_and_explains(tmp_path):
    cam = write_h264(tmp_path / "cam.mp4", np.concatenate([walkway(60, seed=2), walkway(120, seed=3, block_from=60)[60:]]), 10)
    out = tmp_path / "mon"
    code = main(["monitor", f"door={cam}", "--pace", "--explain", "--out", str(out), "--duration", "13", *MON_SETS,
                 *OFFLINE, "--set", "monitor.reference_seconds=4"])
    assert code == 0
    ended = [r for r in map(json.loads, (out / "events.jsonl").read_text().splitlines()) if r["update"] == "end"]
    assert len(ended) == 1, ended
    ev = ended[0]["evidence"]
    # rules were learned from the 40 learning frames (5 snippets): the evidence was checked against them
    assert "strength" in ev and isinstance(ev["rules_broken"], list)
    assert ev["frames"][0][0] <= ended[0]["peak_frame"] <= ev["frames"][-1][1]
    assert not (out / "rules.yaml").exists()  # per-camera rules, not the job's
