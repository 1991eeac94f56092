"""The Ray executor: same results as the local one, long videos split over workers, and a
crashing worker costs only its own video. Ray runs on this host only (the suite runs inside
``unshare -n`` with loopback up, see scripts/run_tests.sh)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.stages import FAULT_ENV
from tests.test_pipeline import small_args
from tests.test_score_cli import moving_square_video, read_scores, run_cli

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (a job joins a running Ray instead of starting its own).
    The fault-injection variable reaches the workers through the job's environment."""
    os.environ[FAULT_ENV] = "exit:crashme"
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()
    os.environ.pop(FAULT_ENV, None)


def scores_of(run: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.array([float(r["score"]) for r in read_scores(p)]) for p in sorted((run / "scores").glob("*.csv"))}


def test_ray_matches_local_with_long_videos_split_over_two_workers(tmp_path, random_i3d, ray_cluster):
    videos = tmp_path / "videos"
    videos.mkdir()
    moving_square_video(videos / "long.mkv", 16 * 23 + 7, anomaly=(200, 260))  # 23 snippets: 6 segments
    moving_square_video(videos / "short.mkv", 80)
    opts = small_args(random_i3d, tmp_path, "pipeline.chunk_snippets=2", "pipeline.segment_snippets=4",
                      "features.threads=1", "cache.enabled=false")
    assert run_cli([str(videos), "--out", str(tmp_path / "local"), *opts], executor="local") == 0
    assert run_cli([str(videos), "--out", str(tmp_path / "ray"), "--workers", "2", *opts], executor="ray") == 0
    local, remote = scores_of(tmp_path / "local"), scores_of(tmp_path / "ray")
    assert local.keys() == remote.keys() == {"long", "short"}
    for key in local:
        assert len(remote[key]) == len(local[key])
        np.testing.assert_allclose(remote[key], local[key], atol=1e-5)
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["executor"] == "ray" and summary["n_ok"] == 2
    assert summary["stages_s"]["extract_s"] > 0 and summary["stages_s"]["decode_s"] > 0
    assert [v["video_id"] for v in summary["videos"]] == ["long", "short"]  # input order, not finish order
