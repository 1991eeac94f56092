"""The Ray executor when a worker dies: only the video whose decode kills its process fails.
Its own module, hence its own Ray instance (see test_pipeline_ray.py for the fixture)."""

from __future__ import annotations

import json

from tests.test_pipeline import read_outputs, small_args
from tests.test_pipeline_ray import ray_cluster, scores_of  # noqa: F401 - ray_cluster is a fixture
from tests.test_score_cli import moving_square_video, run_cli


def test_a_crashing_worker_costs_only_its_video(tmp_path, random_i3d, ray_cluster):
    """The decode process of one video dies (as with a segfaulting decoder): Ray retries it,
    the job retries the video once more, then records it; every other video is complete."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "crashme", "b"):
        moving_square_video(videos / f"{name}.mkv", 96, anomaly=(40, 64) if name == "b" else None)
    run = tmp_path / "run"
    opts = small_args(random_i3d, tmp_path, "pipeline.chunk_snippets=2", "cache.enabled=false")
    assert run_cli([str(videos), "--out", str(run), "--retries", "1", *opts], executor="ray") == 2
    summary = json.loads((run / "summary.json").read_text())
    by_id = {v["video_id"]: v for v in summary["videos"]}
    assert by_id["a"]["status"] == by_id["b"]["status"] == "ok"
    bad = by_id["crashme"]
    # Ray either drops the dead task's block ("lost") or, depending on timing, fails the stream
    # ("executor failed"; the videos are then retried one by one): both end here.
    assert bad["status"] == "error" and bad["attempts"] == 2
    assert "crashed or was killed" in bad["error"] or "executor failed" in bad["error"], bad["error"]
    assert set(scores_of(run)) == {"a", "b"}
    first = read_outputs(run)
    # Rerun: the good videos are resumed, only the bad one is tried again (and fails again).
    assert run_cli([str(videos), "--out", str(run), "--retries", "0", *opts], executor="ray") == 2
    again = json.loads((run / "summary.json").read_text())
    assert again["n_resumed"] == 2
    assert read_outputs(run)["scores"] == first["scores"]
    assert [v["status"] for v in again["videos"]] == ["ok", "ok", "error"]  # sorted: a, b, crashme
