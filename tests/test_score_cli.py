"""`vad score` end to end on tiny lossless videos (random-weight I3D saved as a PyTorch
checkpoint, so no download is involved) and on the real sample video with the real weights."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.videos import require_sample, skip_or_fail, write_lossless_video
from pipelines.cli import main

# the feature path (I3D + the reference head); the default head reads frames (test_scene_head.py)
SMALL = ["head.type=reference", "io.short_side=32", "features.crop_size=32", "features.batch_size=4", "head.min_reference_snippets=2"]


def moving_square_video(path: Path, n_frames: int, fps: float = 10.0, anomaly: tuple[int, int] | None = None) -> Path:
    """A grey scene with a small square walking across; inside ``anomaly`` frames it turns
    into a large bright flickering block, which the reference head should flag."""
    rng = np.random.default_rng(n_frames)
    frames = np.full((n_frames, 48, 64, 3), 90, np.uint8)
    frames += rng.integers(0, 6, size=frames.shape, dtype=np.uint8)
    for t in range(n_frames):
        x = (2 * t) % 56
        frames[t, 20:28, x:x + 8] = (200, 180, 60)
        if anomaly and anomaly[0] <= t < anomaly[1]:
            frames[t, 4:44, 10:54] = (255, 255, 255) if t % 2 else (255, 0, 0)
    return write_lossless_video(path, frames, fps)


def run_cli(args: list[str], executor: str = "local") -> int:
    """`vad score` in-process; the Ray executor has its own tests (test_pipeline_ray.py)."""
    return main(["score", "--no-progress", "--executor", executor, *args])


def read_scores(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_good_and_bad_files_in_one_batch(tmp_path, random_i3d):
    videos = tmp_path / "videos"
    videos.mkdir()
    moving_square_video(videos / "good.mkv", 100, anomaly=(64, 96))
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.mp4").write_text("this is a text file, not a video\n")
    truncated = videos / "truncated.mkv"
    data = moving_square_video(tmp_path / "full.mkv", 60).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    moving_square_video(videos / "short.mkv", 10)
    inputs = [str(videos), str(tmp_path / "missing.mp4")]
    shutil.copy(require_sample("Megamind_bugy.avi"), videos / "Megamind_bugy.avi")
    out = tmp_path / "run"
    code = run_cli([*inputs, "--out", str(out), "--set", f"features.weights={random_i3d}",
                    "--set", f"cache.root={tmp_path / 'cache'}", *sum((["--set", s] for s in SMALL), [])])
    assert code == 2
    summary = json.loads((out / "summary.json").read_text())
    by_id = {v["video_id"]: v for v in summary["videos"]}
    assert by_id["good"]["status"] == "ok"
    for vid, reason in [("empty", "empty"), ("notes", "not a readable video"), ("missing", "no such file"),
                        ("short", "fewer than one 16-frame snippet")]:
        assert by_id[vid]["status"] == "error", vid
        assert reason in by_id[vid]["error"].lower(), (vid, by_id[vid]["error"])
    # The probe sees that the data ends long before the declared duration: one clear reason.
    assert by_id["truncated"]["status"] == "error"
    assert "truncated" in by_id["truncated"]["error"] and "19 frames" in by_id["truncated"]["error"]
    # OpenCV's "bugy" sample is an intact file whose pictures carry drawn artefacts: all 270
    # frames decode (tests/test_io.py), so it is scored like any video.
    rec = by_id["Megamind_bugy"]
    assert (rec["status"], rec["error"], rec["n_frames"], rec["n_snippets"]) == ("ok", None, 270, 16)
    assert (out / rec["outputs"]["scores"]).is_file()
    assert summary["finished"] and summary["n_failed"] == sum(v["status"] == "error" for v in summary["videos"])
    assert {f["video"] for f in summary["failed"]} == {v["video"] for v in summary["videos"] if v["status"] == "error"}
    # Nothing of the good video is lost: a row per frame, plot, events with the video id.
    rows = read_scores(out / "scores" / "good.csv")
    assert [int(r["frame"]) for r in rows] == list(range(100))
    assert float(rows[10]["time_s"]) == pytest.approx(1.0)
    assert (out / "plots" / "good.png").stat().st_size > 1000
    assert (out / "config.yaml").is_file()
    for line in (out / "events.jsonl").read_text().splitlines():
        assert json.loads(line)["video_id"] == "good"


def test_tail_frames_scored_and_cache_reused(tmp_path, random_i3d):
    video = moving_square_video(tmp_path / "cam.mkv", 77)  # 4 full snippets + 13-frame tail
    common = ["--set", f"features.weights={random_i3d}", "--set", f"cache.root={tmp_path / 'cache'}",
              *sum((["--set", s] for s in SMALL), [])]
    assert run_cli([str(video), "--out", str(tmp_path / "a"), *common]) == 0
    assert run_cli([str(video), "--out", str(tmp_path / "b"), *common]) == 0
    a = read_scores(tmp_path / "a" / "scores" / "cam.csv")
    b = read_scores(tmp_path / "b" / "scores" / "cam.csv")
    assert len(a) == 77 and a == b
    # Each 16-frame snippet's score is repeated; the tail takes the last snippet's score.
    scores = [r["score"] for r in a]
    assert len(set(scores[:16])) == 1 and scores[63:] == [scores[63]] * 14
    first = json.loads((tmp_path / "a" / "summary.json").read_text())["videos"][0]
    second = json.loads((tmp_path / "b" / "summary.json").read_text())["videos"][0]
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert first["n_snippets"] == 4 and first["n_frames"] == 77


def test_reference_footage_flags_the_anomaly_and_head_is_reusable(tmp_path, random_i3d):
    normal = moving_square_video(tmp_path / "normal.mkv", 160)
    test = moving_square_video(tmp_path / "test.mkv", 160, anomaly=(96, 128))
    common = ["--set", f"features.weights={random_i3d}", "--no-cache", *sum((["--set", s] for s in SMALL), [])]
    out = tmp_path / "run"
    assert run_cli([str(test), "--reference", str(normal), "--out", str(out), *common]) == 0
    scores = np.array([float(r["score"]) for r in read_scores(out / "scores" / "test.csv")])
    assert scores[96:128].min() > scores[:96].max(), "the planted anomaly must score above the normal part"
    assert (out / "head" / "head.safetensors").is_file()
    out2 = tmp_path / "run2"
    assert run_cli([str(test), "--head", str(out / "head"), "--out", str(out2), *common]) == 0
    again = np.array([float(r["score"]) for r in read_scores(out2 / "scores" / "test.csv")])
    np.testing.assert_allclose(again, scores, atol=1e-5)


def test_config_error_is_exit_1_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "score", "--set", "features.crops=10crop", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "unknown key(s) crops" in proc.stderr and "Traceback" not in proc.stderr


def test_list_file_input_and_missing_weights(tmp_path, random_i3d):
    video = moving_square_video(tmp_path / "v.mkv", 40)
    lst = tmp_path / "videos.txt"
    lst.write_text("# my cameras\nv.mkv\n\n")
    common = ["--no-cache", *sum((["--set", s] for s in SMALL), [])]
    assert run_cli([str(lst), "--out", str(tmp_path / "r"), "--set", f"features.weights={random_i3d}", *common]) == 0
    assert len(read_scores(tmp_path / "r" / "scores" / "v.csv")) == 40
    assert run_cli([str(video), "--out", str(tmp_path / "r2"), "--set", "features.weights=/nope.pt", *common]) == 1


@pytest.mark.slow
def test_sample_video_end_to_end_with_real_weights(tmp_path):
    """No input -> vtest.avi, real I3D Kinetics-400 weights, the feature reference head, 795 rows."""
    from vad.features.i3d_weights import find_default_i3d_weights

    require_sample("vtest.avi")
    if find_default_i3d_weights() is None:
        skip_or_fail("the I3D weights are not set up (run `make test` / `vad assets fetch`)")
    out = tmp_path / "demo"
    # the default executor (auto: one worker on one machine -> local; Ray has its own tests)
    assert run_cli(["--out", str(out), "--set", f"cache.root={tmp_path / 'cache'}", "--set", "head.type=reference"],
                   executor="auto") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "local" and summary["extractor"]["engine"] == "openvino"
    (video,) = summary["videos"]
    assert video["video_id"] == "vtest" and video["status"] == "ok"
    assert (video["n_frames"], video["fps"], video["n_snippets"]) == (795, 10.0, 49)
    rows = read_scores(out / "scores" / "vtest.csv")
    assert len(rows) == 795
    scores = np.array([float(r["score"]) for r in rows])
    assert np.isfinite(scores).all() and scores.std() > 0
    assert (out / "plots" / "vtest.png").is_file() and (out / "events.jsonl").is_file()
    # The same as the golden copy written before the scoring path was redesigned (bit for bit
    # on the machine that wrote it; other CPUs' float kernels move I3D features by ~1e-6).
    golden = Path(__file__).resolve().parent / "golden" / "vtest.csv"
    want = np.array([float(r["score"]) for r in read_scores(golden)])
    np.testing.assert_allclose(scores, want, atol=1e-4, rtol=0)


def test_demo_scores_the_sample_video_with_the_default_scene_head(tmp_path):
    """The demo exactly as `make demo` runs it: no input -> vtest.avi, the default head (scene),
    every frame scored, events located in the frame, no feature extractor loaded."""
    require_sample("vtest.avi")
    out = tmp_path / "demo"
    assert run_cli(["--out", str(out)], executor="auto") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extractor"] is None
    (video,) = summary["videos"]
    assert (video["video_id"], video["status"], video["n_frames"]) == ("vtest", "ok", 795)
    scores = np.array([float(r["score"]) for r in read_scores(out / "scores" / "vtest.csv")])
    assert len(scores) == 795 and np.isfinite(scores).all()
    # normal footage: the reference part (first 25 %) sits below the calibration point
    assert np.median(scores[:199]) < 1.0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for e in events:
        x0, y0, x1, y1 = e["region"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert not (out / "head").exists()  # fitted per video on its own start: nothing to reuse
