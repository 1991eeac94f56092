"""The one scoring path: golden outputs of the code before the redesign, streaming equals batch,
every head through the one loader, evaluation's events are the run's events.

``tests/golden/`` was written by the pre-redesign code (commit 7f5f044) from stored features:
``vtest_i3d.npy`` (the sample video, real I3D weights, centre crop), ``square_i3d.npy`` and
``normal_i3d.npy`` (tiny lossless videos through the seeded random-weight I3D of conftest),
two tiny trained-head checkpoints, and for each case in ``cases.json`` the settings, the
per-frame score CSV and the events that ``vad score`` wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_score_cli import SMALL, moving_square_video
from tests.videos import require_sample, skip_or_fail
from vad.cache import FeatureCache, VideoFingerprint
from vad.clips import SnippetSpec, iter_snippets
from vad.config import ScoreConfig, load_config
from vad.events import EventRules, detect_events_with
from vad.features.extractor import build_extractor
from vad.heads import (HEAD_TYPES, FramePredictionHead, ReferenceFeatureHead, SceneConfig, SceneHead, TrainedHead,
                       UnitTiming, build_module, load_head)
from vad.heads.ctd2gan import ConvTransformerGenerator, CTD2GANConfig
from vad.io import FileSource, open_video
from vad.rundir import RunDir
from vad.scoring import SnippetFrameScores, StreamScorer, score_video
from pipelines.cli import default_score_configs, main
from pipelines.evaluate import run_evaluate
from pipelines.score import configured_head

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = json.loads((GOLDEN / "cases.json").read_text())
LEGACY_EVENT_KEYS = ("video_id", "start_frame", "end_frame", "start_s", "end_s", "peak_frame", "peak_score", "mean_score")


def _cfg(sets: list[str]) -> ScoreConfig:
    return load_config(ScoreConfig, default_score_configs(), ["head.type=reference", *sets])


def _legacy(events: list[dict]) -> list[dict]:
    return [{k: e[k] for k in LEGACY_EVENT_KEYS} for e in events]


def _head(case: dict, cfg: ScoreConfig):
    if case["head"]:
        return load_head(GOLDEN / case["head"])
    head = configured_head(cfg)
    if case["reference"]:
        head.fit(np.load(GOLDEN / "normal_i3d.npy"))
    return head


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_scores_and_events_from_features(tmp_path, name):
    """Features -> head -> frame scores -> CSV is byte-identical to the pre-redesign output,
    and the tracker's events equal the old events, for every head kind and event setting."""
    case = CASES[name]
    cfg = _cfg(case["sets"])
    spec = SnippetSpec(cfg.snippets.length, cfg.snippets.stride, cfg.snippets.tail)
    feats = np.load(GOLDEN / case["features"])
    scored = score_video(_head(case, cfg), feats, n_frames=case["n_frames"], fps=case["fps"], spec=spec,
                         rules=EventRules.from_config(cfg.events), source_id=name)
    written = RunDir(tmp_path).write_scores(name, scored.frame_scores, case["fps"])
    assert written.read_bytes() == (GOLDEN / f"{name}.csv").read_bytes()
    events = [{"video_id": name, **e.to_dict()} for e in scored.events]
    assert _legacy(events) == case["events"]
    assert [e["event_id"] for e in events] == [f"{name}:{e['start_frame']}" for e in events]


def _require_sample_and_weights() -> Path:
    from vad.features.i3d_weights import find_default_i3d_weights

    sample = require_sample("vtest.avi")
    if find_default_i3d_weights() is None:
        skip_or_fail("the I3D weights are not set up (run `make test` / `vad assets fetch`)")
    return sample


@pytest.mark.parametrize("name", ["vtest", "vtest_events_a", "vtest_events_b", "vtest_seconds"])
def test_golden_vad_score_on_the_sample_video(tmp_path, name):
    """`vad score vtest.avi` (the job, its sinks and run directory) with the golden features in
    its cache writes the pre-redesign CSV byte for byte, and the same events."""
    sample = _require_sample_and_weights()
    case = CASES[name]
    cache_root = tmp_path / "cache"
    sets = [*case["sets"], f"cache.root={cache_root}"]
    cfg = _cfg(sets)
    spec = SnippetSpec(cfg.snippets.length, cfg.snippets.stride, cfg.snippets.tail)
    extractor = build_extractor(cfg.features, short_side=cfg.io.short_side)
    FeatureCache(cache_root).save("vtest", VideoFingerprint.of(sample), spec, extractor.spec,
                                  np.load(GOLDEN / case["features"]), fps=10.0, n_frames=795)
    out = tmp_path / "run"
    args = ["score", "--no-progress", "--executor", "local", str(sample), "--out", str(out), "--set", "head.type=reference"]
    assert main([*args, *sum((["--set", s] for s in sets), [])]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"][0]["cache_hit"] is True
    assert (out / "scores" / "vtest.csv").read_bytes() == (GOLDEN / f"{name}.csv").read_bytes()
    written = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert _legacy(written) == [{**e, "video_id": "vtest"} for e in case["events"]]


# -- streaming equals batch -------------------------------------------------------------------


@pytest.fixture(scope="module")
def square(tmp_path_factory, random_i3d):
    """A tiny camera video with a planted anomaly, its normal reference, and the extractor."""
    d = tmp_path_factory.mktemp("stream")
    test = moving_square_video(d / "square.mkv", 170, anomaly=(96, 128))
    normal = moving_square_video(d / "normal.mkv", 160)
    # Batch size 1 in both paths: I3D's CPU convolutions differ by ~5e-6 between batch sizes,
    # a property of the extractor that this test of the scoring path must not measure.
    cfg = _cfg([*SMALL, f"features.weights={random_i3d}", "features.batch_size=1"])
    extractor = build_extractor(cfg.features, short_side=cfg.io.short_side)
    spec = SnippetSpec(16, 16, "drop")

    def features(path: Path) -> np.ndarray:
        with open_video(path, short_side=32) as reader:
            return extractor.extract(iter_snippets(reader, spec))

    return {"test": test, "normal": normal, "cfg": cfg, "extractor": extractor, "spec": spec,
            "test_feats": features(test), "normal_feats": features(normal)}


def _stream_heads(square) -> dict[str, object]:
    cfg = square["cfg"]
    fitted = configured_head(cfg).fit(square["normal_feats"])
    self_ref = configured_head(_cfg([*SMALL, "head.reference_seconds=4"]))
    return {"reference-fitted": fitted, "reference-self": self_ref,
            "mil": load_head(GOLDEN / "head_mil"), "gsmoe": load_head(GOLDEN / "head_gsmoe")}


@pytest.mark.parametrize("kind", ["reference-fitted", "reference-self", "mil", "gsmoe"])
def test_stream_through_source_scorer_and_tracker_equals_batch(square, kind):
    """A file read as a stream (frame source -> snippet ring buffer -> extractor -> the head's
    streaming scorer -> frame scores -> event tracker), pushed in uneven blocks, gives the
    batch scores to 1e-6 and the batch events: the same frames, peaks and ids exactly, scores
    to the same 1e-6 (GS-MoE's layers run on a 3-snippet window instead of the whole video,
    so its float sums differ in the last bits)."""
    head = _stream_heads(square)[kind]
    spec, extractor = square["spec"], square["extractor"]
    with open_video(square["test"]) as reader:
        n_frames, fps = reader.info.n_frames, reader.info.fps
    # thresholds inside this head's own score range, so that events exist to compare
    unit = head.score_video(square["test_feats"], UnitTiming(fps, 16)).scores
    lo, hi = float(np.median(unit)), float(unit.max())
    rules = EventRules(threshold=lo + 0.6 * (hi - lo), low_threshold=lo + 0.3 * (hi - lo),
                       min_duration_s=0.5, merge_gap_s=0.5)
    batch = score_video(head, square["test_feats"], n_frames=n_frames, fps=fps, spec=spec, rules=rules,
                        source_id="square")
    assert batch.events, "the planted anomaly must give an event for this comparison to mean something"

    def embed(snippets):
        return list(extractor.extract(snippets).transpose(1, 0, 2))  # per snippet: (crops, dim)

    scorer = StreamScorer(head, spec, fps, rules, embed=embed, source_id="square")
    scores, updates, next_frame = [], [], 0
    rng = np.random.default_rng(0)
    with FileSource(square["test"], short_side=32) as source:
        assert source.n_frames == n_frames
        frames = [f.image for f in source]
    i = 0
    while i < len(frames):
        n = int(rng.integers(1, 12))
        step = scorer.push(np.stack(frames[i:i + n]))
        i += n
        assert step.first_frame == next_frame
        next_frame += len(step.frame_scores)
        scores.append(step.frame_scores)
        updates += step.updates
    step = scorer.finish()
    scores.append(step.frame_scores)
    updates += step.updates
    streamed = np.concatenate(scores)
    assert len(streamed) == n_frames
    np.testing.assert_allclose(streamed, batch.frame_scores, atol=1e-6, rtol=0)
    ended = [u.event for u in updates if u.kind == "end"]

    def exact(e):
        return {k: v for k, v in e.to_dict().items() if k not in ("peak_score", "mean_score")}

    assert [exact(e) for e in ended] == [exact(e) for e in batch.events]
    for got, want in zip(ended, batch.events):
        assert got.peak_score == pytest.approx(want.peak_score, abs=1e-6)
        assert got.mean_score == pytest.approx(want.mean_score, abs=1e-6)
    assert [u.kind for u in updates if u.kind != "update"] == ["new", "end"] * len(ended)
    if kind == "gsmoe":
        assert head.lookahead == 1 and not head.causal


def test_reset_after_a_gap_scores_each_segment_on_its_own(square):
    """Two files pushed into one stream with a reset between them (a camera that reconnected):
    each part gets that file's batch scores and events; ids keep counting frames."""
    head = load_head(GOLDEN / "head_mil")
    spec, extractor = square["spec"], square["extractor"]
    rules = EventRules(threshold=0.45, low_threshold=0.4, min_duration_s=0.5, merge_gap_s=0.5)
    parts = []
    for key in ("test", "normal"):
        with FileSource(square[key], short_side=32) as source:
            frames = np.stack([f.image for f in source])
        batch = score_video(head, square[f"{key}_feats"], n_frames=len(frames), fps=10.0, spec=spec,
                            rules=rules, source_id="cam")
        parts.append((frames, batch))
    assert parts[0][1].events and parts[1][1].events

    scorer = StreamScorer(head, spec, 10.0, rules, source_id="cam",
                          embed=lambda sn: list(extractor.extract(sn).transpose(1, 0, 2)))
    first = scorer.push(parts[0][0])
    gap = scorer.reset()
    second = scorer.push(parts[1][0])
    last = scorer.finish()
    n0 = len(parts[0][0])
    np.testing.assert_allclose(np.concatenate([first.frame_scores, gap.frame_scores]), parts[0][1].frame_scores,
                               atol=1e-6)
    assert second.first_frame == n0
    np.testing.assert_allclose(np.concatenate([second.frame_scores, last.frame_scores]), parts[1][1].frame_scores,
                               atol=1e-6)
    ended = [u.event for u in first.updates + gap.updates + second.updates + last.updates if u.kind == "end"]
    want = [(e.start_frame, e.end_frame) for e in parts[0][1].events]
    want += [(e.start_frame + n0, e.end_frame + n0) for e in parts[1][1].events]
    assert [(e.start_frame, e.end_frame) for e in ended] == want
    assert len({e.event_id for e in ended}) == len(ended)


def test_snippet_frame_scores_equal_the_batch_expansion():
    from vad.clips import expand_snippet_scores

    rng = np.random.default_rng(3)
    for length, stride, n_frames in [(16, 16, 77), (16, 8, 70), (8, 12, 61), (16, 16, 64)]:
        spec = SnippetSpec(length, stride, "drop")
        n_snip = (n_frames - length) // stride + 1
        s = rng.random(n_snip).astype(np.float32)
        expander = SnippetFrameScores(spec)
        parts = [expander.push(s[i:i + 2]) for i in range(0, n_snip, 2)] + [expander.finish(n_frames)]
        np.testing.assert_array_equal(np.concatenate(parts), expand_snippet_scores(s, n_frames, spec))


# -- one loader for every head ---------------------------------------------------------------


def _example_heads() -> dict[str, object]:
    rng = np.random.default_rng(0)
    ref = ReferenceFeatureHead(extractor="i3d").fit(rng.normal(size=(2, 12, 16)).astype(np.float32))
    mil = TrainedHead(build_module("mil", {"input_dim": 16, "hidden": [8, 4]}), extractor="i3d")
    gs = TrainedHead(build_module("gsmoe", {"input_dim": 16, "n_classes": 2, "hidden": 8, "expert_hidden": 4}))
    rtfm = TrainedHead(build_module("rtfm", {"input_dim": 16, "branch_dim": 4, "hidden": [8, 4]}), extractor="i3d")
    cfg = CTD2GANConfig(size=16, past_frames=2, width=4, depth=1, heads=2, disc_width=4, disc_depth=1)
    frames = FramePredictionHead(ConvTransformerGenerator(cfg), scale=0.01, train_size=(24, 20))
    normal = rng.integers(0, 255, size=(40, 20, 24, 3), dtype=np.uint8)
    scene = SceneHead(SceneConfig(short_side=32, grid=(4, 4), min_reference_frames=20)).fit_frames([[normal]])
    from vad.explain import AnomalyRulerHead, EventVADHead, RulerConfig  # registers both head types

    rcfg = RulerConfig(snippet=4, min_reference_snippets=2)
    ruler = AnomalyRulerHead(rcfg).fit_frames([[normal]])
    eventvad = EventVADHead(rcfg).fit_frames([[normal]])
    return {"reference": ref, "mil": mil, "gsmoe": gs, "rtfm": rtfm, "ctd2gan": frames, "scene": scene, "anomalyruler": ruler,
            "eventvad": eventvad}


def test_every_registered_head_saves_and_loads_through_load_head(tmp_path):
    examples = _example_heads()  # imports vad.explain, which registers its heads
    assert set(examples) == set(HEAD_TYPES), "add an example for every registered head type"
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 9, 16)).astype(np.float32)
    frames = rng.integers(0, 255, size=(7, 20, 24, 3), dtype=np.uint8)
    timing = UnitTiming(10.0, 16)
    for name, head in examples.items():
        head.save(tmp_path / name)
        meta = json.loads((tmp_path / name / "head.json").read_text())
        assert meta["format"] == "vad-head" and meta["type"] == name
        if head.input.kind == "features":
            assert meta["consumes"]["kind"] == "features" and meta["consumes"]["dim"] == 16
            units = features
        else:
            want = {"kind": "frames", "clip_length": 3, "size": [16, 16], "color": "gray"} if name == "ctd2gan" \
                else {"kind": "frames", "clip_length": 4, "color": "rgb"} if name in ("anomalyruler", "eventvad") \
                else {"kind": "frames", "clip_length": 1, "size": [38, 32], "color": "rgb"}
            assert meta["consumes"] == want
            units = frames
        assert meta["lookahead"] == head.lookahead and meta["needs_fit"] == head.needs_fit
        loaded = load_head(tmp_path / name)
        assert type(loaded) is type(head) and loaded.input == head.input
        np.testing.assert_allclose(loaded.score_video(units, timing).scores, head.score_video(units, timing).scores,
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="8-d but the head was made for 16-d"):
        examples["mil"].score_video(features[..., :8], timing)


def test_heads_saved_before_the_schema_still_load():
    """head.json files without a format/version (written by earlier vad) load unchanged."""
    assert "format" not in json.loads((GOLDEN / "head_mil" / "head.json").read_text())
    head = load_head(GOLDEN / "head_mil")
    assert head.type_name == "mil" and head.input.dim == 1024 and head.causal


# -- evaluation reads the run's events --------------------------------------------------------


def test_event_map_is_computed_from_the_events_vad_score_wrote(tmp_path):
    """One score curve -> the events a run writes (the tracker with the run's rules, here with
    hysteresis and merging) -> vad evaluate ranks exactly those events."""
    from vad.eval.metrics import event_map

    fps, n = 10.0, 400
    t = np.arange(n)
    curve = 0.2 + 1.5 * np.exp(-0.5 * ((t - 120) / 8) ** 2) + 1.2 * np.exp(-0.5 * ((t - 150) / 6) ** 2)
    curve += 1.4 * np.exp(-0.5 * ((t - 300) / 10) ** 2)
    rules = EventRules(threshold=1.0, low_threshold=0.6, merge_gap_s=1.5, min_duration_s=0.5)
    events = detect_events_with(rules, curve, fps, source_id="cam")
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_scores("cam", curve, fps)
    run.write_events({"video_id": "cam", **e.to_dict()} for e in events)
    run.write_summary({"videos": [{"video_id": "cam", "status": "ok", "fps": fps}]})
    gt = np.zeros(n, np.uint8)
    gt[105:165] = 1
    gt[290:320] = 1
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "gt" / "cam.npy", gt)
    metrics = run_evaluate(tmp_path / "run", tmp_path / "gt", tmp_path / "eval", n_boot=0, threshold=1.0)
    ev = metrics["event_map"]
    # the run's merged, hysteresis-extended events (2), not runs of frames above 1.0 (3)
    assert len(events) == 2 and ev["n_pred"] == 2 and ev["source"].startswith("the run's events")
    expected = event_map([[(e.start_frame, e.end_frame + 1, e.mean_score) for e in events]],
                         [[(105, 165), (290, 320)]])
    assert ev["map"] == pytest.approx(expected["map"]) and ev["ap"] == pytest.approx(expected["ap"])
