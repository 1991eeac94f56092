"""The scoring pipeline's stages, resume and kill-and-rerun (local executor; Ray: test_pipeline_ray.py).

Videos are tiny lossless files, so decoded frames, and therefore features, are exact; the
extractor is a random-weight I3D on 32x32 crops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.inputs import VideoItem
from pipelines.stages import assemble, decode_segment, plan_video
from tests.test_score_cli import SMALL, moving_square_video, run_cli
from tests.videos import make_frames, write_lossless_video
from pipelines.cli import main
from vad.clips import SnippetSpec, iter_snippets
from vad.config import ScoreConfig, load_config
from vad.features.extractor import build_extractor
from vad.io import open_video

REPO = Path(__file__).resolve().parents[1]


def small_cfg(weights: Path, *overrides: str) -> ScoreConfig:
    return load_config(ScoreConfig, [], [f"features.weights={weights}", *SMALL, *overrides])


def small_args(weights: Path, tmp_path: Path, *extra: str) -> list[str]:
    sets = [f"features.weights={weights}", f"cache.root={tmp_path / 'cache'}", *SMALL, *extra]
    return sum((["--set", s] for s in sets), [])


@pytest.mark.parametrize("backend", ["decord", "pyav", "opencv"])
def test_segments_decode_the_same_frames_as_one_sequential_pass(tmp_path, backend):
    """A decode task that starts mid-video (a seek) yields exactly the snippets a front-to-back
    read gives, chunked at chunk_snippets."""
    frames = make_frames(16 * 7 + 5, 48, 64, seed=4)
    path = write_lossless_video(tmp_path / "v.mkv", frames, 25.0)
    cfg = load_config(ScoreConfig, [], ["io.short_side=null", "features.crop_size=32",
                                        f"io.backend={backend}", "pipeline.chunk_snippets=2"])
    spec = SnippetSpec(16, 16, "drop")
    plan = plan_video(0, VideoItem(path, "v"), spec)
    assert plan.n_snippets == 7
    got = {}
    for seg in plan.segments(4):  # [0, 4) and [4, 7): the second one seeks
        for start, views, used, _, error, _ in decode_segment(seg, cfg, spec):
            assert error is None and used == backend
            for k, v in enumerate(views):
                got[start + k] = v
    assert sorted(got) == list(range(7))
    for i in range(7):  # center 32x32 crop of the 48x64 frames
        np.testing.assert_array_equal(got[i][0], frames[16 * i:16 * i + 16, 8:40, 16:48])
    chunks = [s for seg in plan.segments(4) for s, *_ in decode_segment(seg, cfg, spec)]
    assert chunks == [0, 2, 4, 6]


def test_chunked_extraction_equals_whole_video_extraction(tmp_path, random_i3d):
    frames = make_frames(16 * 9, 48, 64, seed=5)
    path = write_lossless_video(tmp_path / "v.mkv", frames, 25.0)
    cfg = small_cfg(random_i3d, "pipeline.chunk_snippets=4", "features.batch_size=4")
    spec = SnippetSpec(16, 16, "drop")
    extractor = build_extractor(cfg.features, short_side=cfg.io.short_side)
    with open_video(path, "pyav", short_side=32) as reader:
        whole = extractor.extract(iter_snippets(reader, spec))
    plan = plan_video(0, VideoItem(path, "v"), spec)
    from pipelines.executors import iter_local

    chunks = list(iter_local([plan], cfg, spec, extractor))
    assert [c.start for c in chunks] == [0, 4, 8] and [c.n for c in chunks] == [4, 4, 1]
    np.testing.assert_allclose(assemble(chunks, plan.n_snippets), whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cover 8 snippets of 9"):
        assemble(chunks[:2], 9)
    with pytest.raises(ValueError, match="starting at snippet 8 where 4 was expected"):
        assemble([chunks[0], chunks[2]], 9)


def test_pipeline_options_are_checked(tmp_path):
    video = moving_square_video(tmp_path / "v.mkv", 64)
    for bad in ("pipeline.executor=dask", "pipeline.workers=0", "pipeline.segment_snippets=12",
                "pipeline.retries=-1"):
        assert run_cli([str(video), "--out", str(tmp_path / "r"), "--set", bad]) == 1, bad


def read_outputs(run: Path) -> dict[str, object]:
    """Everything a run produced that must not depend on timing, interruption or resume."""
    summary = json.loads((run / "summary.json").read_text())
    videos = [{k: v for k, v in r.items() if k not in ("timings", "cache_hit")} for r in summary["videos"]]
    return {
        "videos": videos,
        "events": (run / "events.jsonl").read_text(),
        "scores": {p.name: p.read_bytes() for p in sorted((run / "scores").glob("*.csv"))},
        "n": (summary["n_videos"], summary["n_ok"], summary["n_failed"], summary["n_events"]),
    }


def make_archive(folder: Path) -> Path:
    folder.mkdir()
    for i, n in enumerate((96, 128, 80, 112)):
        moving_square_video(folder / f"cam{i}.mkv", n, anomaly=(40, 64) if i % 2 else None)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    return folder


def test_rerun_resumes_complete_videos_and_redoes_changed_ones(tmp_path, random_i3d):
    videos = make_archive(tmp_path / "videos")
    run = tmp_path / "run"
    args = [str(videos), "--out", str(run), *small_args(random_i3d, tmp_path)]
    assert run_cli(args) == 2  # broken.mp4 fails, the rest is scored
    first = read_outputs(run)
    assert first["n"][:3] == (5, 4, 1)
    assert run_cli(args) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_resumed"] == 4  # the failed video is tried again, the others are skipped
    assert "extract_s" not in summary["stages_s"]
    assert read_outputs(run) == first
    # A damaged output or a changed setting makes a video incomplete again.
    (run / "scores" / "cam1.csv").unlink()
    assert run_cli([*args, "--set", "events.threshold=0.9"]) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_resumed"] == 0
    assert (run / "scores" / "cam1.csv").is_file()
    assert run_cli([*args, "--no-resume"]) == 2
    assert json.loads((run / "summary.json").read_text())["n_resumed"] == 0


def test_summary_reports_stages_and_realtime_factor(tmp_path, random_i3d):
    video = moving_square_video(tmp_path / "cam.mkv", 96)
    run = tmp_path / "run"
    assert run_cli([str(video), "--out", str(run), "--no-cache", *small_args(random_i3d, tmp_path)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    for stage in ("plan_s", "decode_s", "extract_s", "head_s", "write_s", "pipeline_wall_s"):
        assert summary["stages_s"][stage] > 0, stage
    assert summary["video_s"] == pytest.approx(9.6)
    assert summary["realtime_factor"] == pytest.approx(summary["video_s"] / summary["wall_s"], rel=0.01)
    (video_rec,) = summary["videos"]
    assert video_rec["attempts"] == 1
    assert {"decode_s", "extract_s", "head_s", "write_s", "busy_s"} <= set(video_rec["timings"])
    record = json.loads((run / "records" / "cam.json").read_text())
    assert record["result"]["n_frames"] == 96
    assert record["events"] == [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def _score_cmd(videos: Path, run: Path, weights: Path, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "score", "--no-progress", "--executor", "local", str(videos),
            "--out", str(run), *small_args(weights, tmp_path, "pipeline.chunk_snippets=2")]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, random_i3d) -> tuple[Path, dict[str, object]]:
    """An archive and the outputs of scoring it without interruption (computed once)."""
    root = tmp_path_factory.mktemp("archive")
    videos = make_archive(root / "videos")
    done = subprocess.run(_score_cmd(videos, root / "run", random_i3d, root), env=_env(), cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    return videos, read_outputs(root / "run")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.mark.parametrize("kill_after_records", [0, 1, 3])
def test_killed_job_rerun_gives_the_same_outputs(tmp_path, random_i3d, uninterrupted, kill_after_records):
    """SIGKILL at different points (before any video is done, after one, after three), rerun
    the same command: every output equals an uninterrupted run's."""
    videos, reference = uninterrupted
    run = tmp_path / "run"
    cmd = _score_cmd(videos, run, random_i3d, tmp_path)
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = run / "records"
    if kill_after_records == 0:
        _kill_when(proc, lambda: (run / "config.yaml").is_file())
    else:
        _kill_when(proc, lambda: records.is_dir() and len(list(records.glob("*.json"))) >= kill_after_records)
    before = [json.loads(p.read_text()) for p in records.glob("*.json")] if records.is_dir() else []
    assert len(before) < 5, "the job finished before it could be killed; the test proves nothing"
    ok_before = sum(r["result"]["status"] == "ok" for r in before)
    again = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2, again.stderr[-2000:]
    assert read_outputs(run) == reference
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["n_resumed"] == ok_before


def test_extract_fills_the_cache_that_score_then_uses(tmp_path, random_i3d):
    videos = make_archive(tmp_path / "videos")
    listing = tmp_path / "features.list"
    code = main(["extract", "--no-progress", "--executor", "local", str(videos), "--out", str(tmp_path / "x"),
                 "--list", str(listing), *small_args(random_i3d, tmp_path)])
    assert code == 2  # broken.mp4
    lines = listing.read_text().split()
    assert sorted(Path(p).name for p in lines) == [f"cam{i}__0.npy" for i in range(4)]
    assert np.load(lines[0]).shape[1] == 1024
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert summary["n_ok"] == 4 and not (tmp_path / "x" / "scores").exists()
    run = tmp_path / "run"
    assert run_cli([str(videos / "cam1.mkv"), "--out", str(run), *small_args(random_i3d, tmp_path)]) == 0
    (rec,) = json.loads((run / "summary.json").read_text())["videos"]
    assert rec["cache_hit"] and rec["status"] == "ok"
    assert main(["extract", "--no-progress", str(videos), "--out", str(tmp_path / "y"), "--no-resume", "--set", "cache.enabled=false"]) == 1


def test_an_executor_failure_fails_the_videos_not_the_job(tmp_path, random_i3d, monkeypatch):
    """If the executor itself breaks (e.g. Ray cannot start an actor), the incomplete videos are
    retried and then recorded with the reason; the job still writes its summary."""
    import pipelines.score as score_mod

    calls = []

    def broken(plans, *args, **kwargs):
        calls.append([p.item.video_id for p in plans])
        raise RuntimeError("actor could not be created")
        yield  # pragma: no cover - makes this a generator like the real executors

    monkeypatch.setattr(score_mod, "iter_local", broken)
    video = moving_square_video(tmp_path / "cam.mkv", 64)
    run = tmp_path / "run"
    assert run_cli([str(video), "--out", str(run), "--retries", "2", *small_args(random_i3d, tmp_path)]) == 2
    (rec,) = json.loads((run / "summary.json").read_text())["videos"]
    assert rec["status"] == "error" and rec["attempts"] == 3
    assert rec["error"] == "executor failed: RuntimeError: actor could not be created"
    assert calls == [["cam"]] * 3


def test_rerun_after_a_video_was_deleted_records_it_as_missing(tmp_path, random_i3d):
    videos = tmp_path / "videos"
    videos.mkdir()
    keep, gone = moving_square_video(videos / "keep.mkv", 64), moving_square_video(videos / "gone.mkv", 64)
    run = tmp_path / "run"
    args = ["--out", str(run), *small_args(random_i3d, tmp_path)]
    assert run_cli([str(keep), str(gone), *args]) == 0
    gone.unlink()
    assert run_cli([str(keep), str(gone), *args]) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_resumed"] == 1
    assert [v["status"] for v in summary["videos"]] == ["ok", "error"]
    assert "no such file" in summary["videos"][1]["error"]
