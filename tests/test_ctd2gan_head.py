"""The CT-D2GAN head end to end on tiny configs: `vad train --head ctd2gan` on normal footage
(videos or frame folders), bit-exact resume, `vad score --head` in both score modes, streaming
equals batch, and bad input handled with clear messages."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from safetensors.numpy import load_file

from pipelines.cli import main
from tests.videos import write_lossless_video
from vad.heads import UnitTiming, load_head

TINY = ["head.params.size=32", "head.params.past_frames=3", "head.params.width=8", "head.params.depth=2",
        "head.params.heads=2", "head.params.pe_dim=4", "head.params.disc_width=8", "head.params.disc_depth=2",
        "train.batch_size=4", "train.checkpoint_every=10", "train.log_every=10", "train.threads=1"]


def scene(n: int, speed: int = 1, seed: int = 0, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A bright block crossing a textured, noisy scene at ``speed`` px/frame."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = rng.integers(40, 80, size=(h, w, 3), dtype=np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    frames = np.clip(frames.astype(np.int16) + rng.integers(-3, 4, frames.shape), 0, 255).astype(np.uint8)
    for t in range(n):
        x = (5 + speed * t) % (w - 8)
        frames[t, h // 2 - 4:h // 2 + 4, x:x + 8] = (230, 220, 90)
    return frames


def train(out, normal, iterations: int, *extra: str, resume: bool = False) -> int:
    args = ["train", "--head", "ctd2gan", "--normal", *map(str, normal), "--out", str(out), "--no-progress",
            *sum((["--set", s] for s in [*TINY, f"train.iterations={iterations}", *extra]), [])]
    return main(args + (["--resume"] if resume else []))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctd2gan")
    (d / "normal").mkdir()
    for i in range(2):
        write_lossless_video(d / "normal" / f"n{i}.mkv", scene(60, seed=i), 10.0)
    out = d / "head"
    assert train(out, [d / "normal"], 30) == 0
    return d, out


def test_training_writes_a_calibrated_frames_head(trained):
    d, out = trained
    meta = json.loads((out / "head.json").read_text())
    assert meta["type"] == "ctd2gan" and meta["consumes"] == {"kind": "frames", "clip_length": 4, "size": [32, 32],
                                                              "color": "gray"}
    assert meta["causal"] and meta["calibration"]["scale"] > 0 and meta["train_size"] == [64, 48]
    summary = json.loads((out / "summary.json").read_text())
    # 2 clips of 60 frames, the last 6 of each held out
    assert (summary["n_train_frames"], summary["n_calibration_frames"]) == (108, 2 * (6 - 3))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [10, 20, 30]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(trained, tmp_path):
    d, full = trained
    part = tmp_path / "part"
    assert train(part, [d / "normal"], 20) == 0  # stops after its checkpoint at 20
    assert train(part, [d / "normal"], 30, resume=True) == 0
    a, b = load_file(str(full / "head.safetensors")), load_file(str(part / "head.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_frame_folders_train_too(tmp_path):
    clip = tmp_path / "Train" / "Train001"
    clip.mkdir(parents=True)
    for i, f in enumerate(scene(40)):
        cv2.imwrite(str(clip / f"{i:03d}.tif"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    assert train(tmp_path / "head", [tmp_path / "Train"], 4) == 0
    assert json.loads((tmp_path / "head" / "summary.json").read_text())["n_clips"] == 1


def test_score_with_the_head_in_both_modes_and_streaming_equals_batch(trained, tmp_path):
    d, out = trained
    test = write_lossless_video(tmp_path / "cam.mkv", scene(50, speed=1, seed=7), 10.0)
    args = ["score", str(test), "--head", str(out), "--executor", "local", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "cal")]) == 0
    summary = json.loads((tmp_path / "cal" / "summary.json").read_text())
    (video,) = summary["videos"]
    assert video["status"] == "ok" and video["n_frames"] == 50 and summary["extractor"] is None
    rows = (tmp_path / "cal" / "scores" / "cam.csv").read_text().splitlines()
    assert len(rows) == 51
    assert main([*args, "--out", str(tmp_path / "mm"), "--set", "head.score_mode=minmax"]) == 0
    mm = np.array([float(r.split(",")[2]) for r in (tmp_path / "mm" / "scores" / "cam.csv").read_text().splitlines()[1:]])
    assert mm.min() == 0.0 and mm.max() == 1.0

    head = load_head(out)
    with open_frames(test) as frames:
        batch = head.score_frames([frames])
        scorer = head.stream(UnitTiming(10.0, 1))
        streamed = np.concatenate([scorer.update(f) for f in frames] + [scorer.finish()])
    np.testing.assert_allclose(streamed, batch, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="whole video"):
        head.with_score_mode("minmax").stream(UnitTiming(10.0, 1))

    other = write_lossless_video(tmp_path / "big.mkv", scene(12, size=(64, 96)), 10.0)
    assert main(["score", str(other), "--head", str(out), "--executor", "local", "--no-progress",
                 "--out", str(tmp_path / "big")]) == 0
    assert "trained on 64x48 footage: resizing" in (tmp_path / "big" / "run.log").read_text()


class open_frames:
    def __init__(self, path):
        from vad.io import open_video

        self.reader = open_video(path)

    def __enter__(self):
        return self.reader.read(0, self.reader.info.n_frames)

    def __exit__(self, *exc):
        self.reader.close()


def test_bad_input_is_a_clear_message(trained, tmp_path, capsys):
    d, out = trained
    short = write_lossless_video(tmp_path / "short.mkv", scene(3), 10.0)  # fewer than past_frames + 1
    good = write_lossless_video(tmp_path / "good.mkv", scene(20), 10.0)
    assert main(["score", str(short), str(good), "--head", str(out), "--executor", "local", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 2
    by_id = {v["video_id"]: v for v in json.loads((tmp_path / "run" / "summary.json").read_text())["videos"]}
    assert by_id["short"]["status"] == "error" and "fewer than the 4 frames" in by_id["short"]["error"]
    assert by_id["good"]["status"] == "ok"
    # a reference too short to train on
    (tmp_path / "ref").mkdir()
    tiny = write_lossless_video(tmp_path / "ref" / "r.mkv", scene(5), 10.0)
    assert train(tmp_path / "bad", [tiny], 5) == 1
    assert "no usable normal footage" in capsys.readouterr().err
    assert main(["score", str(good), "--head", str(out), "--set", "head.score_mode=psnr", "--executor", "local",
                 "--out", str(tmp_path / "bad_mode")]) == 1


def test_frame_folders_are_scored_as_videos(trained, tmp_path, random_i3d):
    """The one-class benchmarks' layout: a folder of frame images per test clip."""
    d, out = trained
    root = tmp_path / "Test"
    for name, seed in (("Test001", 3), ("Test002", 4)):
        (root / name).mkdir(parents=True)
        for i, f in enumerate(scene(20, seed=seed)):
            cv2.imwrite(str(root / name / f"{i:03d}.tif"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    assert main(["score", str(root), "--head", str(out), "--executor", "local", "--no-progress",
                 "--out", str(tmp_path / "run"), "--set", "io.frame_folder_fps=10"]) == 0
    videos = json.loads((tmp_path / "run" / "summary.json").read_text())["videos"]
    assert [(v["video_id"], v["n_frames"], v["fps"], v["backend"]) for v in videos] == [
        ("Test001", 20, 10.0, "frames"), ("Test002", 20, 10.0, "frames")]
    # a feature head cannot read them: a clear per-video reason
    assert main(["score", str(root / "Test001"), "--executor", "local", "--no-progress",
                 "--out", str(tmp_path / "feat"), "--set", "head.type=reference", "--set", f"features.weights={random_i3d}",
                 "--set", "features.engine=torch"]) == 2
    (video,) = json.loads((tmp_path / "feat" / "summary.json").read_text())["videos"]
    assert "folder of frames: only frame-prediction heads" in video["error"]


def test_error_patch_scores_a_small_wrong_region_and_survives_save(tmp_path):
    import torch

    from vad.heads import FramePredictionHead, HeadError
    from vad.heads.ctd2gan import ConvTransformerGenerator, CTD2GANConfig

    gen = ConvTransformerGenerator(CTD2GANConfig(size=32, past_frames=2, width=4, depth=2, heads=2, pe_dim=4))
    whole = FramePredictionHead(gen, scale=1.0)
    patch = FramePredictionHead(gen, scale=1.0, error_patch=8)
    target = torch.zeros(2, 1, 32, 32)
    pred = target.clone()
    pred[0, :, 4:12, 4:12] = 0.5  # a small wrong region
    pred[1] += 0.5 / 8  # a small error everywhere
    w, p = whole._psnr(pred, target), patch._psnr(pred, target)
    assert w[0] > p[0] + 10  # whole-frame PSNR averages the small region away; the worst patch does not
    assert p[0] < p[1]
    patch.save(tmp_path / "h")
    assert load_head(tmp_path / "h").error_patch == 8
    assert load_head(tmp_path / "h").with_score_mode("minmax").error_patch == 8
    with pytest.raises(HeadError, match="error_patch"):
        FramePredictionHead(gen, scale=1.0, error_patch=64)
