"""scripts/bench_label_free.py: the benchmark data it builds from the real sample camera is sound.

Builds the data only (``--build-only``, the fastest x264 preset: about 20 s on 2 cores) and
checks what the benchmark's honesty rests on: no test pixel comes from the training part,
every kind has several differently placed clips, the ground truth fits the written videos, and
the frame-difference baseline gives one score per frame.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.videos import require_sample
from vad.io import probe_video

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_label_free.py"
KINDS = ("speed", "appearance", "intrusion")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_label_free", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def frames_of(ranges: list[list[int]]) -> set[int]:
    return {f for a, b in ranges for f in range(a, b)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    video = require_sample("vtest.avi")
    out = tmp_path_factory.mktemp("bench_label_free") / "bench"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--build-only", "--out", str(out), "--video", str(video),
         "--preset", "ultrafast"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "manifest.json").read_text())


def test_training_and_test_share_no_source_frame(built: tuple[Path, dict]) -> None:
    out, manifest = built
    train = frames_of(manifest["train"]["source_frames"])
    assert train == set(range(0, 400))
    test: set[int] = set(manifest["background_frames"])  # pasted textures come from these
    for clip in manifest["clips"]:
        test |= frames_of(clip["source_frames"])
    assert not train & test
    assert min(test) >= 400 and max(test) < 795
    assert probe_video(out / manifest["train"]["videos"][0]).n_frames == 400


def test_kinds_have_several_differently_placed_clips(built: tuple[Path, dict]) -> None:
    _, manifest = built
    clips = manifest["clips"]
    assert sum(c["kind"] == "normal" for c in clips) >= 2
    for kind in KINDS:
        of_kind = [c for c in clips if c["kind"] == kind]
        assert len(of_kind) >= 2, kind
        placements = {json.dumps(c["placement"], sort_keys=True) for c in of_kind}
        assert len(placements) == len(of_kind), f"{kind}: two clips share a placement"
        assert all(c["n_anomalous"] > 0 for c in of_kind)
    assert set(manifest["kinds"]) == set(KINDS)


def test_ground_truth_fits_the_clips(built: tuple[Path, dict]) -> None:
    out, manifest = built
    for clip in manifest["clips"]:
        gt = np.load(out / "gt" / f"{clip['id']}.npy")  # the `vad evaluate --gt` layout
        assert gt.dtype == np.uint8 and set(np.unique(gt)) <= {0, 1}
        assert len(gt) == clip["n_frames"] == probe_video(out / clip["video"]).n_frames, clip["id"]
        assert 120 <= clip["n_frames"] <= 160
        assert int(gt.sum()) == clip["n_anomalous"]
        if clip["kind"] == "normal":
            assert not gt.any()
        if clip["kind"] == "intrusion":  # it appears and stays: gt runs to the clip's end
            appear = clip["placement"]["appear"]
            assert not gt[:appear].any() and gt[appear:].all() and gt[-1] == 1


def test_frame_diff_gives_one_score_per_frame(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, manifest = built
    bench = load_script()
    frames = bench.read_frames(out / manifest["clips"][0]["video"], 0, 12)
    tiny = tmp_path / "tiny.mp4"
    assert bench.write_video(tiny, frames, "ultrafast") == 12
    scores = bench.python_scores(bench.METHODS["frame_diff"], tiny)
    assert scores.shape == (12,) and np.isfinite(scores).all()
    assert scores[0] == scores[1]  # the first frame copies the second's score
    assert (scores >= 0).all()


def test_a_failing_method_is_not_available_not_a_crash(built: tuple[Path, dict]) -> None:
    out, manifest = built
    bench = load_script()
    gts = {c["id"]: np.load(out / c["gt"]) for c in manifest["clips"]}
    runner = bench.Runner(timeout_s=60)
    missing_option = bench.Method("future_cli", "an option vad does not have",
                                  steps=(("score", "{test}", "--no-such-option", "--out", "{run}"),))
    r = bench.score_method(missing_option, out, manifest, gts, runner, {})
    assert r["status"] == "not available" and "exited 2" in r["reason"] and "--no-such-option" in r["reason"]

    def broken(frames: np.ndarray) -> np.ndarray:
        return np.zeros(3)  # the wrong length

    r = bench.score_method(bench.Method("broken", "wrong length", fn=broken), out, manifest, gts, runner, {})
    assert r["status"] == "not available" and "scores for" in r["reason"]
