"""Region motion statistics (vad.explain.motion) and the offline perception backend
(vad.explain.offline), on small synthetic clips made here: a static textured background and a
textured square moving at a known constant velocity."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from vad.explain.motion import COMPASS, REGIONS, MotionConfig, region_of_box, snippet_motion
from vad.explain.offline import DnnObjectDetector, OfflineBackend, describe_motion, parse_ssd_detections
from vad.explain.perception import BackendError, Perception, PerceptionRequest

H, W = 192, 256  # full size; the analysis size is 144 px high: scale 0.75
SHORT_SIDE = MotionConfig().short_side
SQUARE = 24  # px at full size (18 at the analysis size)


def texture(h: int, w: int, seed: int, sigma: float) -> np.ndarray:
    """Smooth random grey texture spanning 40..215 (no clipping when brightened by 30)."""
    r = np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32)
    r = cv2.GaussianBlur(r, (0, 0), sigma)
    return 40 + (r - r.min()) / (r.max() - r.min()) * 175


def moving_square(vx: int, vy: int, cx: float, cy: float, n_frames: int = 4, h: int = H, w: int = W,
                  size: int = SQUARE) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """(frames, path box): a static background with a square whose centre moves by (vx, vy) px a
    frame, the path centred on (cx, cy); the box (x0, y0, x1, y1) in px covers the whole path."""
    scale = w / W
    bg = texture(h, w, 0, 2.25 * scale)
    sq = texture(size, size, 1, 1.5 * scale)
    steps = n_frames - 1
    x0 = int(round(cx - size / 2 - vx * steps / 2))
    y0 = int(round(cy - size / 2 - vy * steps / 2))
    frames = []
    for t in range(n_frames):
        f = bg.copy()
        x, y = x0 + vx * t, y0 + vy * t
        assert 0 <= x and x + size <= w and 0 <= y and y + size <= h
        f[y:y + size, x:x + size] = sq
        frames.append(np.repeat(f.round().astype(np.uint8)[..., None], 3, axis=2))
    box = (min(x0, x0 + vx * steps), min(y0, y0 + vy * steps),
           max(x0, x0 + vx * steps) + size, max(y0, y0 + vy * steps) + size)
    return np.stack(frames), box


def region_rects(h: float, w: float) -> dict[str, tuple[float, float, float, float]]:
    """The 3 x 3 grid as (x0, y0, x1, y1), row by row."""
    return {REGIONS[3 * r + c]: (c * w / 3, r * h / 3, (c + 1) * w / 3, (r + 1) * h / 3)
            for r in range(3) for c in range(3)}


def gap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Distance between two boxes (0 when they overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return float(np.hypot(dx, dy))


def region_centre(name: str) -> tuple[float, float]:
    x0, y0, x1, y1 = region_rects(H, W)[name]
    return (x0 + x1) / 2, (y0 + y1) / 2


def static_clip(n_frames: int = 4) -> np.ndarray:
    f = np.repeat(texture(H, W, 0, 2.25).round().astype(np.uint8)[..., None], 3, axis=2)
    return np.stack([f] * n_frames)


# --- direction, speed, energy ----------------------------------------------------------------------

EXPECTED_DIRECTION = {(4, 0): "right", (-4, 0): "left", (0, -4): "up", (0, 4): "down",
                      (3, 3): "down-right", (-3, 3): "down-left", (3, -3): "up-right", (-3, -3): "up-left"}


@pytest.mark.parametrize(("vx", "vy"), list(EXPECTED_DIRECTION))
def test_direction_and_speed_of_a_moving_square(vx: int, vy: int) -> None:
    frames, _ = moving_square(vx, vy, *region_centre("centre"))
    m = snippet_motion(frames)
    scale = SHORT_SIDE / min(H, W)
    assert m["analysis_size"] == [round(W * scale), round(H * scale)]
    expected_speed = np.hypot(vx, vy) * scale  # px/frame at the analysis size
    centre = m["regions"]["centre"]
    assert centre["direction"] == EXPECTED_DIRECTION[(vx, vy)]
    assert m["frame"]["direction"] == EXPECTED_DIRECTION[(vx, vy)]
    assert centre["speed"] == pytest.approx(expected_speed, rel=0.25)
    assert m["frame"]["speed"] == pytest.approx(expected_speed, rel=0.25)
    assert centre["coherence"] > 0.8  # a rigid translation: all one way
    assert 0 < centre["energy"] <= 1
    # the frame's moving fraction is the centre's spread over nine regions
    assert m["frame"]["energy"] == pytest.approx(centre["energy"] / 9, rel=0.05)


@pytest.mark.parametrize("name", REGIONS)
def test_only_the_regions_the_square_passes_through_move(name: str) -> None:
    frames, box = moving_square(4, 0, *region_centre(name))
    m = snippet_motion(frames)
    scale = SHORT_SIDE / min(H, W)
    checked = 0
    for other, rect in region_rects(H, W).items():
        r = m["regions"][other]
        if other == name:
            assert r["energy"] > 0 and r["direction"] == "right"
            assert r["speed"] == pytest.approx(4 * scale, rel=0.25)
        elif gap(rect, box) * scale > 8:  # well away from the path (flow smooths over a few px)
            assert r == {"speed": 0.0, "energy": 0.0, "direction": None, "coherence": 0.0}, other
            checked += 1
    assert checked == 8  # the path lies well inside its region


def test_a_square_crossing_a_region_border_moves_both_regions() -> None:
    # from the left region into the centre region, along the middle row
    x_border = W / 3
    frames, box = moving_square(4, 0, x_border, H / 2, n_frames=8)
    assert box[0] < x_border < box[2]
    m = snippet_motion(frames)
    assert m["regions"]["left"]["direction"] == "right" and m["regions"]["left"]["energy"] > 0
    assert m["regions"]["centre"]["direction"] == "right" and m["regions"]["centre"]["energy"] > 0
    for other in set(REGIONS) - {"left", "centre"}:
        assert m["regions"][other]["energy"] == 0.0 and m["regions"][other]["direction"] is None


@pytest.mark.parametrize(("h", "w", "v"), [(144, 192, 4), (288, 384, 4), (288, 384, 8)])
def test_speed_is_in_analysis_size_pixels(h: int, w: int, v: int) -> None:
    # the same motion at another resolution: the figure scales with short_side / min(h, w)
    scale = SHORT_SIDE / min(h, w)
    frames, _ = moving_square(v, 0, w / 2, h / 2, h=h, w=w, size=int(round(SQUARE * w / W)))
    m = snippet_motion(frames)
    assert m["analysis_size"] == [round(w * scale), round(h * scale)]
    assert m["regions"]["centre"]["direction"] == "right"
    assert m["regions"]["centre"]["speed"] == pytest.approx(v * scale, rel=0.25)


def test_short_side_changes_the_speed_scale() -> None:
    frames, _ = moving_square(4, 0, *region_centre("centre"))
    full = snippet_motion(frames, MotionConfig(short_side=192))  # the clip's own size: scale 1
    assert full["analysis_size"] == [W, H]
    assert full["regions"]["centre"]["speed"] == pytest.approx(4.0, rel=0.25)


def test_moving_px_and_min_pixels_gate_the_statistics() -> None:
    frames, _ = moving_square(4, 0, *region_centre("centre"))
    # nothing moves faster than 10 px/frame
    assert snippet_motion(frames, MotionConfig(moving_px=10.0))["frame"]["direction"] is None
    # more moving pixels needed than the whole picture has: no direction, speed 0
    m = snippet_motion(frames, MotionConfig(min_pixels=10**7))
    assert m["frame"]["direction"] is None and m["frame"]["speed"] == 0.0
    assert m["regions"]["centre"]["energy"] > 0  # the moving fraction is still reported


def test_static_clip_has_no_motion() -> None:
    m = snippet_motion(static_clip())
    assert m["frame"] == {"speed": 0.0, "energy": 0.0, "direction": None, "coherence": 0.0}
    assert all(r["direction"] is None and r["speed"] == 0.0 for r in m["regions"].values())
    assert set(m["regions"]) == set(REGIONS)
    assert m["scene_change"] == 0.0
    assert describe_motion(m) == "Nothing moves."


def test_brightness_jump_is_a_scene_change() -> None:
    frames = static_clip(3).astype(np.int16)
    frames[-1] += 30  # the background spans 40..215: no clipping
    m = snippet_motion(frames.astype(np.uint8))
    static = snippet_motion(static_clip(3))
    assert m["scene_change"] > static["scene_change"]
    assert m["scene_change"] == pytest.approx(30.0, abs=1.0)  # mean |grey difference|


@pytest.mark.parametrize("frames", [
    np.zeros((1, 48, 64, 3), np.uint8),  # one frame
    np.zeros((0, 48, 64, 3), np.uint8),  # none
    np.zeros((3, 48, 64, 3), np.float32),  # wrong dtype
    np.zeros((3, 48, 64), np.uint8),  # grey
    np.zeros((3, 48, 64, 4), np.uint8),  # RGBA
    np.zeros((48, 64, 3), np.uint8),  # one frame without the time axis
])
def test_bad_frames_raise(frames: np.ndarray) -> None:
    with pytest.raises(ValueError):
        snippet_motion(frames)


@pytest.mark.parametrize("kwargs", [{"short_side": 8}, {"moving_px": 0}, {"min_pixels": 0}, {"quantile": 0},
                                    {"quantile": 1.5}])
def test_bad_motion_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MotionConfig(**kwargs)


def test_compass_covers_eight_directions() -> None:
    assert len(set(COMPASS)) == 8 and set(EXPECTED_DIRECTION.values()) == set(COMPASS)


@pytest.mark.parametrize(("box", "name"), [
    ((0.0, 0.0, 0.1, 0.1), "top-left"), ((0.9, 0.0, 1.0, 0.1), "top-right"),
    ((0.0, 0.9, 0.1, 1.0), "bottom-left"), ((0.9, 0.9, 1.0, 1.0), "bottom-right"),
    ((0.4, 0.4, 0.6, 0.6), "centre"), ((0.4, 0.0, 0.6, 0.2), "top"), ((0.4, 0.8, 0.6, 1.0), "bottom"),
    ((0.0, 0.4, 0.2, 0.6), "left"), ((0.8, 0.4, 1.0, 0.6), "right"),
    ((1.0, 1.0, 1.0, 1.0), "bottom-right"),  # on the far edge: clamped into the grid
    ((-0.2, -0.2, 0.0, 0.0), "top-left"),  # outside: clamped
    ((0.0, 0.0, 1.0, 1.0), "centre"),  # the whole picture: its centre
    ((0.1, 0.1, 0.8, 0.2), "top"),  # a wide box: the region of its centre (0.45, 0.15)
])
def test_region_of_box(box: tuple[float, float, float, float], name: str) -> None:
    assert region_of_box(box) == name


# --- the offline backend ---------------------------------------------------------------------------

def request(frames: np.ndarray, fps: float = 25.0, start: int = 10) -> PerceptionRequest:
    return PerceptionRequest("cam", start, start + len(frames) - 1, fps, frames)


def fastest_moving_region(motion: dict) -> tuple[str, dict]:
    moving = {name: r for name, r in motion["regions"].items() if r["direction"] is not None}
    name = max(moving, key=lambda n: moving[n]["speed"])
    return name, moving[name]


def test_offline_perceive_matches_snippet_motion() -> None:
    frames, _ = moving_square(-4, 0, *region_centre("top-right"))
    fps = 12.5
    p = OfflineBackend().perceive(request(frames, fps))
    assert isinstance(p, Perception)
    assert p.backend == "offline" and (p.start_frame, p.end_frame) == (10, 10 + len(frames) - 1)
    assert set(p.evidence) == {"motion"}
    assert p.evidence["motion"] == snippet_motion(frames)
    name, r = fastest_moving_region(p.evidence["motion"])
    assert name == "top-right" and r["direction"] == "left"
    speed = r["speed"]
    assert f"{speed:.2f} px/frame" in p.text
    assert f"at {p.evidence['motion']['analysis_size'][1]} px high" in p.text
    assert f"{100 * p.evidence['motion']['frame']['energy']:.0f}% of the picture moves" in p.text
    assert "top-right region" in p.text and "heading left" in p.text
    # px/frame, not px/s: a snippet's frames may be subsampled, so its fps says nothing of the flow
    assert OfflineBackend().perceive(request(frames, 2 * fps)).text == p.text


def test_offline_perceive_with_a_motion_config() -> None:
    frames, _ = moving_square(4, 0, *region_centre("centre"))
    cfg = MotionConfig(short_side=96)
    backend = OfflineBackend(cfg)
    assert backend.perceive(request(frames)).evidence["motion"] == snippet_motion(frames, cfg)
    assert backend.identity() != OfflineBackend().identity()  # cached answers must not be shared


def test_offline_perceive_static_clip() -> None:
    p = OfflineBackend().perceive(request(static_clip()))
    assert p.text == "Nothing moves."


def test_offline_perceive_with_actions_and_objects() -> None:
    frames, _ = moving_square(0, 4, *region_centre("centre"))
    seen: list[int] = []

    def actions(f: np.ndarray) -> list[dict]:
        seen.append(len(f))
        return [{"label": "walking", "p": 0.61}, {"label": "jogging", "p": 0.2}]

    def objects(f: np.ndarray) -> dict[str, int]:
        seen.append(len(f))
        return {"bicycle": 1, "person": 3}

    backend = OfflineBackend(actions=actions, objects=objects)
    p = backend.perceive(request(frames))
    assert seen == [len(frames), len(frames)]  # each callable gets the snippet's frames
    assert p.evidence["actions"] == actions(frames)
    assert p.evidence["objects"] == {"bicycle": 1, "person": 3}
    assert p.evidence["motion"] == snippet_motion(frames)
    assert "walking (0.61)" in p.text and "jogging (0.20)" in p.text
    assert "3 person" in p.text and "1 bicycle" in p.text
    assert p.text.startswith(describe_motion(p.evidence["motion"]))
    assert "i3d-actions" in backend.identity() and "objects" in backend.identity()


def test_offline_perceive_no_objects_detected() -> None:
    frames, _ = moving_square(4, 0, *region_centre("centre"))
    p = OfflineBackend(objects=lambda f: {}).perceive(request(frames))
    assert p.evidence["objects"] == {} and "No objects detected." in p.text


def test_offline_perceive_one_frame_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="at least 2"):
        OfflineBackend().perceive(request(static_clip(1)))


def test_describe_motion_uses_the_fastest_moving_region() -> None:
    still = {"speed": 0.0, "energy": 0.0, "direction": None, "coherence": 0.0}
    regions = {name: dict(still) for name in REGIONS}
    regions["left"] = {"speed": 1.25, "energy": 0.2, "direction": "up", "coherence": 0.9}
    regions["bottom"] = {"speed": 3.456, "energy": 0.1, "direction": "down-left", "coherence": 0.9}
    regions["top"] = {"speed": 9.0, "energy": 0.001, "direction": None, "coherence": 0.0}  # too few pixels
    motion = {"frame": {"speed": 3.4, "energy": 0.0333, "direction": "down", "coherence": 0.5},
              "regions": regions, "scene_change": 1.0, "analysis_size": [192, 144]}
    text = describe_motion(motion)
    assert text == ("3% of the picture moves; fastest in the bottom region at 3.46 px/frame "
                    "(at 144 px high), heading down-left.")


# --- SSD detections and the cv2.dnn detector ---------------------------------------------------

def test_parse_ssd_detections() -> None:
    classes = ["background", "person", "bicycle", "car"]
    rows = [
        # image, class id, confidence, box
        (0, 1, 0.9, 0.1, 0.1, 0.2, 0.3),
        (0, 1, 0.5, 0.3, 0.1, 0.4, 0.3),  # exactly at the threshold: kept
        (0, 1, 0.49, 0.5, 0.1, 0.6, 0.3),  # below: dropped
        (0, 2, 0.7, 0.1, 0.5, 0.2, 0.7),
        (0, 3, 0.1, 0.1, 0.5, 0.2, 0.7),  # below: no "car"
        (0, 7, 0.8, 0.0, 0.0, 0.1, 0.1),  # id past the list
        (0, 7, 0.95, 0.0, 0.0, 0.1, 0.1),
        (0, -1, 0.6, 0.0, 0.0, 0.1, 0.1),  # negative id
    ]
    out = np.asarray(rows, np.float32)[None, None]
    assert out.shape == (1, 1, len(rows), 7)
    counts = parse_ssd_detections(out, classes, 0.5)
    assert counts == {"person": 2, "bicycle": 1, "class_7": 2, "class_-1": 1}
    assert list(counts) == sorted(counts)
    assert parse_ssd_detections(out, classes, 0.96) == {}
    assert parse_ssd_detections(np.zeros((1, 1, 0, 7), np.float32), classes, 0.5) == {}
    # every id outside an empty list is a class_<id>
    assert parse_ssd_detections(out, [], 0.9) == {"class_1": 1, "class_7": 1}


@pytest.mark.parametrize("shape", [(5, 7), (1, 1, 5, 6), (1, 5, 7), (7,)])
def test_parse_ssd_detections_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(BackendError, match="expected SSD"):
        parse_ssd_detections(np.zeros(shape, np.float32), ["a"], 0.5)


def test_dnn_detector_missing_or_unreadable_model(tmp_path) -> None:
    with pytest.raises(BackendError, match="not found"):
        DnnObjectDetector(tmp_path / "missing.pb")
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(BackendError, match=re.escape(str(bad))):
        DnnObjectDetector(bad)
