"""The scene head (the label-free default) on synthetic scenes written by the test: walkers at
normal speed in lanes over a textured, noisy background; anomalies are a walker 5x too fast and
a block that appears and stays. Both must rank above normal frames (AUC >= 0.9) and be located;
streaming equals batch; saved heads score the same; bad input gives clear messages; and
`vad score` uses it by default (with --reference, or each video's own start)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.cli import main
from tests.videos import write_lossless_video
from vad.heads import HeadError, SceneConfig, SceneHead, load_head
from vad.heads.scene import iter_blocks

H, W = 96, 128
SMALL = SceneConfig(short_side=64, grid=(8, 6), max_bank=400, min_reference_frames=20)
LANES = (30, 58, 80)  # walker foot rows


def background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    import cv2

    tex = cv2.GaussianBlur(rng.uniform(60, 160, (H, W, 3)).astype(np.float32), (0, 0), 3)
    return tex


def scene(n: int, seed: int, *, fast: tuple[int, int] | None = None,
          block: tuple[int, int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frames, gt): three walkers (8x14 px) crossing lanes at 1-2 px/frame, sensor noise;
    ``fast=(t0, t1)``: one more walker at 9 px/frame over frames [t0, t1); ``block=(t0, x, y, w,
    h)``: a bright textured block appearing at t0 and staying."""
    rng = np.random.default_rng(seed)
    bg = background()
    frames = np.empty((n, H, W, 3), np.uint8)
    gt = np.zeros(n, np.uint8)
    starts = rng.integers(0, W, size=3)
    speeds = rng.choice([-2, -1, 1, 2], size=3)
    tex = rng.uniform(200, 250, (40, 40, 3)).astype(np.float32)
    for t in range(n):
        f = bg + rng.normal(0, 2.0, bg.shape).astype(np.float32)
        for lane, x0, v in zip(LANES, starts, speeds):
            x = int((x0 + v * t) % (W + 16)) - 8
            f[lane - 14:lane, max(0, x):max(0, x + 8)] = (30, 30, 40)
        if fast is not None and fast[0] <= t < fast[1]:
            x = -8 + 9 * (t - fast[0])
            if x < W:
                f[LANES[1] - 14:LANES[1], max(0, x):max(0, x + 8)] = (40, 20, 20)
                gt[t] = 1
        if block is not None and t >= block[0]:
            _, bx, by, bw, bh = block
            f[by:by + bh, bx:bx + bw] = tex[:bh, :bw] + rng.normal(0, 2.0, (bh, bw, 3))
            gt[t] = 1
        frames[t] = np.clip(f, 0, 255).astype(np.uint8)
    return frames, gt


@pytest.fixture(scope="module")
def fitted() -> SceneHead:
    ref, _ = scene(200, seed=1)
    return SceneHead(SMALL).fit_frames([iter_blocks(ref, 32)])


def test_fast_mover_and_static_block_rank_above_normal_and_are_located(fitted):
    normal, g0 = scene(90, seed=2)
    fast, g1 = scene(90, seed=3, fast=(30, 50))
    block, g2 = scene(90, seed=4, block=(40, 40, 40, 24, 20))
    s0, s1, s2 = (fitted.score_frame_blocks(iter_blocks(f, 32)) for f in (normal, fast, block))
    for s, g in ((s1, g1), (s2, g2)):
        auc = roc_auc_score(np.r_[g0, g], np.r_[s0.scores, s.scores])
        assert auc >= 0.9, auc
    # the block: the static channel decides, and the region covers the block's centre
    late = s2.channels[60:]
    assert (late == 1).mean() > 0.9
    x0, y0, x1, y1 = np.nanmedian(s2.regions[60:], axis=0)
    cx, cy = (40 + 12) / W, (40 + 10) / H
    assert x0 <= cx <= x1 and y0 <= cy <= y1, (x0, y0, x1, y1)
    # the fast walker: the speed channel decides, in its lane
    mid = np.arange(35, 45)
    assert (s1.channels[mid] == 0).all()
    ys = (s1.regions[mid, 1] + s1.regions[mid, 3]) / 2
    assert np.all(np.abs(ys * H - (LANES[1] - 7)) < H / 6 + 2), ys * H
    # normal footage sits around the calibration (1.0 = 99th percentile of held-out reference)
    assert np.quantile(s0.scores, 0.5) < 1.0


def test_streaming_equals_batch_and_reset_forgets_motion(fitted):
    frames, _ = scene(50, seed=5, fast=(10, 30))
    batch = fitted.score_frame_blocks(iter_blocks(frames, 16)).scores
    scorer = fitted.stream(None)
    streamed = np.concatenate([scorer.update(f) for f in frames] + [scorer.finish()])
    np.testing.assert_allclose(streamed, batch, rtol=1e-5, atol=1e-6)
    scorer.reset()
    assert scorer.update(frames[0])[0] == pytest.approx(batch[0], abs=1e-6)  # no motion before it


def test_saved_head_scores_identically_and_declares_its_input(fitted, tmp_path):
    frames, _ = scene(40, seed=6, block=(10, 20, 20, 30, 20))
    fitted.save(tmp_path / "h")
    meta = json.loads((tmp_path / "h" / "head.json").read_text())
    assert meta["type"] == "scene" and meta["consumes"]["kind"] == "frames" and meta["causal"]
    loaded = load_head(tmp_path / "h")
    np.testing.assert_array_equal(loaded.score_frame_blocks([frames]).scores,
                                  fitted.score_frame_blocks([frames]).scores)


def test_bad_input_messages(fitted, caplog):
    with pytest.raises(HeadError, match="at least"):
        SceneHead(SMALL).fit_frames([iter_blocks(scene(10, seed=0)[0])])
    with pytest.raises(HeadError, match="unknown head.scene key"):
        SceneConfig.from_dict({"grdi": [4, 4]})
    with pytest.raises(HeadError, match="channels"):
        SceneConfig(channels=("colour",))
    with pytest.raises(HeadError, match="not fitted"):
        SceneHead(SMALL).score_frame_blocks([scene(5, seed=0)[0]])
    # grey frames are taken as RGB; another aspect ratio is resized with one warning
    frames, _ = scene(12, seed=7)
    grey = frames.mean(-1).astype(np.uint8)
    assert np.isfinite(fitted.score_frames([grey])).all()
    wide = np.concatenate([frames, frames], axis=2)
    with caplog.at_level(logging.WARNING, logger="vad.heads.scene"):
        assert len(fitted.score_frames([wide, wide])) == 24
    assert sum("different shape" in r.message for r in caplog.records) == 1


def test_vad_score_default_is_the_scene_head(tmp_path):
    ref, _ = scene(200, seed=1)
    test, gt = scene(90, seed=4, block=(30, 40, 40, 24, 20))
    write_lossless_video(tmp_path / "ref.mkv", ref, fps=10)
    write_lossless_video(tmp_path / "cam.mkv", test, fps=10)
    scene_sets = ["--set", "head.scene={short_side: 64, grid: [8, 6], max_bank: 400, min_reference_frames: 20}"]
    out = tmp_path / "run"
    assert main(["score", str(tmp_path / "cam.mkv"), "--reference", str(tmp_path / "ref.mkv"), "--out", str(out),
                 "--no-progress", *scene_sets]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extractor"] is None  # no I3D: the scene head reads frames
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == 1 and 30 <= events[0]["start_frame"] <= 35 and events[0]["end_frame"] == 89
    x0, y0, x1, y1 = events[0]["region"]
    assert x0 <= 52 / W <= x1 and y0 <= 50 / H <= y1
    # the fitted head in <run>/head scores the same video identically
    again = tmp_path / "again"
    assert main(["score", str(tmp_path / "cam.mkv"), "--head", str(out / "head"), "--out", str(again),
                 "--no-progress"]) == 0
    assert (again / "scores" / "cam.csv").read_text() == (out / "scores" / "cam.csv").read_text()

    # no --reference: the video's own first part is its reference; a too-short video fails alone
    long = np.concatenate([ref[:120], test[30:]])
    write_lossless_video(tmp_path / "self.mkv", long, fps=10)
    write_lossless_video(tmp_path / "short.mkv", ref[:8], fps=10)
    self_run = tmp_path / "self_run"
    assert main(["score", str(tmp_path / "self.mkv"), str(tmp_path / "short.mkv"), "--out", str(self_run),
                 "--no-progress", *scene_sets, "--set", "head.reference_seconds=10"]) == 2  # 2: some videos failed
    summary = json.loads((self_run / "summary.json").read_text())
    status = {v["video_id"]: v for v in summary["videos"]}
    assert status["self"]["status"] == "ok"
    assert status["short"]["status"] == "error" and "at least" in status["short"]["error"]
    events = [json.loads(line) for line in (self_run / "events.jsonl").read_text().splitlines()]
    assert any(e["start_frame"] >= 118 and "region" in e for e in events)


def test_stream_scorer_with_the_scene_head_equals_batch_scores_and_events(fitted):
    """The live path (StreamScorer: frame by frame, uneven pushes) gives the batch scores and
    the batch events, regions included; reset() ends the open event and forgets motion."""
    from vad.events import EventRules, detect_events_with, with_regions
    from vad.scoring import StreamScorer

    frames, _ = scene(90, seed=4, block=(40, 40, 40, 24, 20))
    rules = EventRules(threshold=1.5, min_duration_s=0.5, merge_gap_s=0.5)
    batch = fitted.score_frame_blocks(iter_blocks(frames, 32))
    want = with_regions(detect_events_with(rules, batch.scores, 10.0, source_id="cam"), batch.regions)
    assert want and want[0].region is not None
    stream = StreamScorer(fitted, None, 10.0, rules, source_id="cam")
    rng = np.random.default_rng(0)
    scores, ended, i = [], [], 0
    while i < len(frames):
        n = int(rng.integers(1, 9))
        step = stream.push(frames[i:i + n])
        scores.append(step.frame_scores)
        ended += [u.event for u in step.updates if u.kind == "end"]
        i += n
    step = stream.finish()
    ended += [u.event for u in step.updates if u.kind == "end"]
    np.testing.assert_allclose(np.concatenate(scores + [step.frame_scores]), batch.scores, rtol=1e-5, atol=1e-6)
    assert [(e.start_frame, e.end_frame, e.peak_frame, e.region) for e in ended] == \
        [(e.start_frame, e.end_frame, e.peak_frame, e.region) for e in want]
    # a gap: the open event ends at once, the frame count goes on
    stream = StreamScorer(fitted, None, 10.0, rules, source_id="cam")
    stream.push(frames[:70])
    gap = stream.reset()
    assert [u.kind for u in gap.updates][-1] == "end" and stream.frames_pushed == 70
    assert stream.push(frames[70:71]).first_frame == 70
