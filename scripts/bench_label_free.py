#!/usr/bin/env python
"""Label-free, per-camera anomaly detection on real footage: frame AUC per anomaly kind.

What is measured
----------------
How well a method that sees only *normal footage of one camera* (no labels) separates planted
anomalies from normal frames of the same camera. The footage is the real sample camera
``vtest.avi`` (768x576, 10 fps, 795 frames: a fixed camera over a walkway with pedestrians).

* **Training part** (normal): source frames [0, 400), written as one video
  (``<out>/train/``). A method may model normality from it and nothing else.
* **Test clips**: cut from source frames [400, 795) only (clips of 120-160 frames; test clips
  may overlap each other in the source, never the training part). Every pixel pasted into a
  test clip also comes from [400, 795): the background model used for cut-outs and textures is
  the median of test-range frames, the pasted people are cut from test-range frames. Four
  normal clips and three clips of each anomaly kind, each with its own placement:

  - ``speed`` -- a time warp: over the anomalous range the footage plays 3x faster (every
    third source frame), then continues at 1x from where the warp left it, so there is no cut
    at either end; people simply move three times too fast. Ground truth: the warped frames.
  - ``appearance`` -- a real pedestrian cut out of another test-range moment (a tracked walker:
    8 consecutive frames of their silhouette with a soft alpha from the background difference,
    so the legs keep moving; mirrored to face the way it goes), scaled to the perspective size
    of its row, crossing the whole walkway left to right at 18-24 px/frame, about 4x walking
    speed and against the scene's mean (leftward) flow. It follows the scene's exposure. Ground
    truth: every frame in which any of it is in the picture.
  - ``intrusion`` -- a static, vehicle-sized object made of the scene's own texture (a
    rectangle of the building facade with its windows, or the parked white van's body, cut
    out by its outline and enlarged to the size a vehicle has on the walkway), shaded
    top-to-bottom with a dark base, feathered edges, a soft contact shadow, the frame's exposure
    and fresh per-frame sensor noise (sigma measured on the static background), appearing at
    one frame and STAYING until the clip's end (7-12 s). It hides walkers behind it; walkers
    whose feet are nearer the camera than its base pass in front of it. Placed on the walkway,
    inside I3D's centre crop, clear of the lamp post and the tripod. Ground truth: from its
    appearance to the clip's end.

  The plants are made to carry the footage's own statistics (real texture and grain, soft
  edges, exposure drift, noise, then the same libx264 crf 18 encode as the normal clips), so
  no trivial cue -- a flat colour, a hard edge, frozen noise -- gives them away; what is left
  is what a detector should find: wrong speed, a wrong mover, a thing that is not normally
  there. Frame ground truth: ``<out>/gt/<id>.npy`` (uint8 0/1, the layout ``vad evaluate
  --gt`` reads); ``<out>/manifest.json`` lists every clip's kind, source frames, anomalous
  ranges and placement.

Methods (``--methods``) and scoring
-----------------------------------
Each method gives one score per frame of every test clip:

* ``frame_diff`` (baseline, computed here): mean absolute difference between consecutive grey
  frames downscaled to a 160 px short side; the first frame copies the second's score.
* ``reference_head``: ``vad score <test> --reference <train> --set head.type=reference`` --
  Gaussian + kNN distances on I3D features of the training part (the label-free default until
  the scene head); scores from ``<run>/scores/<id>.csv``.
* ``motion_default``: plain ``vad score <test> --reference <train>`` -- the default head, the
  scene head (``vad/heads/scene.py``: per-region flow speed and static appearance novelty,
  calibrated on the training part).
* ``anomalyruler`` / ``eventvad``: ``vad score <test> --reference <train> --head anomalyruler|eventvad``
  -- the training-free heads of the explanation stage (``vad/explain/detectors.py``) with the
  offline perception (rules induced from the training part's motion figures).
* ``ctd2gan_minmax`` / ``ctd2gan_calibrated``: ``vad train --head ctd2gan --normal <train>``
  (its default configuration; the training runs once for both, ~20 min on 2 CPU cores) then
  ``vad score <test> --head <dir> --set head.score_mode=minmax|calibrated``.

A method is a Python function (frames -> scores) or a list of ``vad`` command templates (see
``METHODS``); one whose command fails (e.g. an option that does not exist yet) or whose scores
do not fit the clips is reported as ``not available: <reason>`` and the benchmark goes on.

**Frame AUC per kind**: that kind's anomalous clips pooled with all normal test clips, frames
concatenated, ``sklearn.metrics.roc_auc_score``; **overall**: all test clips. Caveat: I3D sees
the default 224 px centre crop of the 256 px-short-side frame, i.e. source x in [132, 636);
an appearance crossing is partly outside it (``center_crop_frames`` in the manifest counts
the anomalous frames with the plant inside that crop).

    .venv/bin/python scripts/bench_label_free.py --json runs/bench_label_free.json
    .venv/bin/python scripts/bench_label_free.py --methods frame_diff --keep
    .venv/bin/python scripts/bench_label_free.py --build-only --out /tmp/blf   # data only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: make `vad` importable without installing
    sys.path.insert(0, str(REPO))

from vad.io import open_video  # noqa: E402

FPS = 10
TRAIN = (0, 400)  # normal training part, source frames [0, 400)
TEST = (400, 795)  # every test pixel comes from here
KINDS = ("speed", "appearance", "intrusion")
BG_STEP = 6  # background median over every 6th test-range frame: enough to erase walkers
MARKER = ".bench_label_free"  # marks --out as ours, so a rerun may wipe it

# I3D's default view: short side 256, centre crop 224 -> source x in [132, 636), y in [36, 540)
CROP_X = (132, 636)
CROP_Y = (36, 540)


# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Clip:
    id: str
    kind: str | None  # None: normal
    start: int  # first source frame
    n: int  # frames in the clip
    place: dict[str, Any] = field(default_factory=dict)


# Placements differ per clip (range, row, speed, object, position) so a kind is not one event.
PLAN: tuple[Clip, ...] = (
    Clip("normal_1", None, 400, 140),
    Clip("normal_2", None, 530, 140),
    Clip("normal_3", None, 655, 140),
    Clip("normal_4", None, 460, 160),
    Clip("speed_1", "speed", 400, 140, {"warp": (50, 90), "factor": 3}),
    Clip("speed_2", "speed", 560, 130, {"warp": (20, 50), "factor": 3}),
    Clip("speed_3", "speed", 480, 150, {"warp": (95, 135), "factor": 3}),
    Clip("appearance_1", "appearance", 420, 140, {"enter": 30, "foot_y": 330, "speed": 20}),
    Clip("appearance_2", "appearance", 600, 150, {"enter": 80, "foot_y": 420, "speed": 24}),
    Clip("appearance_3", "appearance", 520, 130, {"enter": 55, "foot_y": 275, "speed": 18}),
    # boxes (x, y, w, h) on the walkway, inside I3D's centre crop, clear of the lamp post and the
    # tripod (an object behind them would have to be occluded by them)
    Clip("intrusion_1", "intrusion", 400, 150, {"appear": 40, "object": "facade", "box": (170, 160, 160, 90)}),
    Clip("intrusion_2", "intrusion", 560, 140, {"appear": 60, "object": "van", "box": (290, 205, 130, 116)}),
    Clip("intrusion_3", "intrusion", 640, 155, {"appear": 25, "object": "facade_left", "box": (480, 200, 150, 92)}),
)

# Intrusion textures: crop (y0, y1, x0, x1) of the background model, mirrored or not, outline
# ("box": the whole rectangle; "bright": the convex hull of the largest bright, grey blob -- the
# van's body, not the wall behind it -- extended down over the wheels), base darkening (the
# fraction of the height at the bottom darkened: a chassis / skirt).
OBJECTS: dict[str, dict[str, Any]] = {
    "facade": {"crop": (20, 100, 440, 575), "mirror": False, "outline": "box", "base": 0.12},
    "van": {"crop": (36, 106, 645, 724), "mirror": True, "outline": "bright", "base": 0.0},
    "facade_left": {"crop": (18, 100, 308, 395), "mirror": True, "outline": "box", "base": 0.14},
}


# --------------------------------------------------------------------------- video io

def read_frames(path: Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    with open_video(path) as reader:
        return reader.read(start, reader.info.n_frames if stop is None else stop)


def write_video(path: Path, frames: Iterable[np.ndarray], preset: str = "medium") -> int:
    """libx264 crf 18, 10 fps, original size; every clip (normal or not) goes through the same
    encode, so compression artefacts are no cue. Returns the number of frames written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": preset}
        for f in frames:
            if n == 0:
                stream.width, stream.height = f.shape[1], f.shape[0]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
            n += 1
        container.mux(stream.encode())
    return n


def chanmax(img: np.ndarray) -> np.ndarray:
    """Per-pixel max over the colour channels (cv2: ~15x faster than ndarray.max(-1))."""
    b, g, r = cv2.split(img)
    return cv2.max(cv2.max(b, g), r)


# --------------------------------------------------------------------------- the scene

@dataclass
class Person:
    """A tracked walker: per-frame RGB patches and soft alphas of the same size."""
    frames: tuple[int, int]  # source range [a, b) the cut-outs come from
    patches: np.ndarray  # (K, h, w, 3) float32
    alphas: np.ndarray  # (K, h, w) float32
    height: int  # the person's own height in px (bbox), for perspective scaling


class Scene:
    """What the plants need to know about the camera, all from test-range frames only."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.bg_frames = list(range(TEST[0], TEST[1], BG_STEP))
        # median over time erases walkers: the clean background for cut-outs and textures
        self.bg = np.median(frames[self.bg_frames], axis=0).astype(np.float32)
        self.bg_u8 = np.rint(self.bg).astype(np.uint8)
        # exposure drifts by ~5% over the video: measured on the facade (no walkers there)
        region = (slice(0, 100), slice(300, 600))
        # (indexed by source frame; the plants only read test-range entries)
        self.exposure = frames[:, region[0], region[1]].reshape(len(frames), -1).mean(1).astype(np.float32)
        self.bg_exposure = float(self.bg[region].mean())
        # sensor/codec temporal noise on static background: std of a frame-to-frame difference / sqrt 2
        pairs = np.arange(TEST[0], TEST[1] - 1, 8)  # consecutive pairs: no drift between them
        g0, g1 = (frames[pairs + k, ..., 1].astype(np.float32) for k in (0, 1))
        d = g1 - g0
        still = (np.abs(g1 - self.bg[..., 1]) < 8) & (np.abs(g0 - self.bg[..., 1]) < 8)
        self.noise_sigma = float(d[still].std() / np.sqrt(2))
        self._people: list[Person] | None = None

    # -- people

    def _components(self, t: int) -> list[dict[str, Any]]:
        diff = chanmax(cv2.absdiff(self.frames[t], self.bg_u8))
        mask = (diff > 30).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        n, labels, stats, cents = cv2.connectedComponentsWithStats(mask)
        comps = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            comps.append({"i": i, "x": x, "y": y, "w": w, "h": h, "area": area, "c": cents[i], "labels": labels})
        return comps

    @staticmethod
    def _walker_like(c: dict[str, Any], comps: list[dict[str, Any]], shape: tuple[int, int]) -> bool:
        """An upright, person-sized blob, away from the border and from every other blob (a
        clean cut-out: no tripod, no second person in the patch)."""
        H, W = shape
        if not (70 <= c["h"] <= 125 and 18 <= c["w"] <= 55 and 1.8 <= c["h"] / c["w"] <= 4.5):
            return False
        if c["area"] < 0.3 * c["w"] * c["h"]:
            return False
        m = 12
        if c["x"] < m or c["y"] < m or c["x"] + c["w"] > W - m or c["y"] + c["h"] > H - m:
            return False
        for o in comps:
            if o is c or o["area"] < 20:
                continue
            if (o["x"] < c["x"] + c["w"] + m and o["x"] + o["w"] > c["x"] - m
                    and o["y"] < c["y"] + c["h"] + m and o["y"] + o["h"] > c["y"] - m):
                return False
        return True

    def people(self) -> list[Person]:
        """Walkers tracked over 8 consecutive test-range frames, in time order, each from a
        different moment (their source ranges do not overlap)."""
        if self._people is not None:
            return self._people
        K, H, W = 8, self.frames.shape[1], self.frames.shape[2]
        found: list[Person] = []
        t = TEST[0]
        cache: dict[int, list[dict[str, Any]]] = {}

        def comps(u: int) -> list[dict[str, Any]]:
            if u not in cache:
                cache[u] = self._components(u)
            return cache[u]

        while t + K <= TEST[1] and len(found) < 8:
            track = None
            for c in comps(t):
                if not self._walker_like(c, comps(t), (H, W)):
                    continue
                seq = [c]
                for u in range(t + 1, t + K):
                    prev = seq[-1]
                    nxt = [o for o in comps(u) if self._walker_like(o, comps(u), (H, W))
                           and np.hypot(*(o["c"] - prev["c"])) < 10 and 0.7 < o["area"] / prev["area"] < 1.4]
                    if not nxt:
                        break
                    seq.append(min(nxt, key=lambda o: np.hypot(*(o["c"] - prev["c"]))))
                dx = seq[-1]["c"][0] - seq[0]["c"][0]
                if len(seq) == K and abs(dx) >= 3:  # a walker (legs move), not someone standing
                    track = seq
                    break
            if track is None:
                t += 4
                continue
            person = self._cut(track, t, mirror=dx < 0)
            if person is None:
                t += 3
                continue
            found.append(person)
            t += K + 10  # the next person from a later, separate moment
        self._people = found
        return found

    def _cut(self, track: list[dict[str, Any]], t0: int, mirror: bool) -> Person | None:
        """Fixed-size patches anchored at the feet (5 px above the patch bottom), so the
        cut-outs of the cycle stand on one line; None when a box leaves the frame."""
        H, W = self.frames.shape[1:3]
        bh = max(c["h"] for c in track) + 10
        bw = max(c["w"] for c in track) + 10
        patches, alphas = [], []
        for k, c in enumerate(track):
            y0 = c["y"] + c["h"] + 5 - bh
            x0 = c["x"] + c["w"] // 2 - bw // 2
            if y0 < 0 or x0 < 0 or y0 + bh > H or x0 + bw > W:
                return None
            patch = self.frames[t0 + k, y0:y0 + bh, x0:x0 + bw].astype(np.float32)
            diff = np.abs(patch - self.bg[y0:y0 + bh, x0:x0 + bw]).max(-1)
            # the blob was closed for labelling, which bridges the gap between the legs: keep only
            # what differs from the background near it (the road between the legs stays behind)
            near = cv2.dilate((c["labels"][y0:y0 + bh, x0:x0 + bw] == c["i"]).astype(np.uint8), np.ones((3, 3)))
            # the walker's own shadow on the road (a darker road, same hue) would paste as a grey
            # halo round the feet on grass: left out, in the bottom fifth of the patch only
            ratio = patch / (self.bg[y0:y0 + bh, x0:x0 + bw] + 1.0)
            shadow = (ratio.max(-1) < 0.97) & (ratio.min(-1) > 0.35) & (ratio.max(-1) - ratio.min(-1) < 0.12)
            shadow[: int(0.8 * bh)] = False
            near[shadow] = 0
            raw = cv2.morphologyEx(((diff > 30) & (near > 0)).astype(np.uint8), cv2.MORPH_CLOSE,
                                   np.ones((3, 3), np.uint8))
            # opaque core (no holes where a coat matches the road), soft rim from the difference,
            # feathered: no hard outline, no halo of the source background
            core = cv2.GaussianBlur(cv2.erode(raw, np.ones((3, 3), np.uint8)).astype(np.float32), (0, 0), 1.0)
            rim = np.clip((diff - 12.0) / 30.0, 0.0, 1.0) * near
            alpha = cv2.GaussianBlur(np.maximum(core, rim).astype(np.float32), (0, 0), 0.7)
            if mirror:  # face the way the paste will move (rightwards)
                patch, alpha = patch[:, ::-1], alpha[:, ::-1]
            patches.append(patch)
            alphas.append(alpha)
        height = int(np.median([c["h"] for c in track]))
        return Person((t0, t0 + len(track)), np.stack(patches), np.stack(alphas), height)

    # -- objects

    def object(self, name: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB float32 (h, w, 3), alpha (h, w)) of an intrusion object, shaded."""
        spec = OBJECTS[name]
        y0, y1, x0, x1 = spec["crop"]
        tex = self.bg[y0:y1, x0:x1]
        if spec["mirror"]:
            tex = tex[:, ::-1]
        tex = cv2.resize(np.ascontiguousarray(tex), (w, h), interpolation=cv2.INTER_CUBIC)
        # shading: lit from above, darker towards the ground, a dark base band, darker flanks
        yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        xx = np.abs(np.linspace(-1.0, 1.0, w, dtype=np.float32))[None, :]
        shade = (1.06 - 0.28 * yy) * (1.0 - 0.12 * xx ** 6)
        if spec["base"]:
            shade = shade * np.where(yy > 1.0 - spec["base"], 0.45, 1.0)
        obj = np.clip(tex * shade[..., None], 0, 255)
        alpha = np.ones((h, w), np.float32)
        if spec["outline"] == "bright":
            c = cv2.resize(np.ascontiguousarray(self.bg[y0:y1, x0:x1][:, ::-1] if spec["mirror"]
                                                else self.bg[y0:y1, x0:x1]), (w, h))
            body = ((c.mean(-1) > 140) & (c.max(-1) - c.min(-1) < 45)).astype(np.uint8)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(body)
            if n < 2:
                raise ValueError(f"object {name}: no bright body in the texture")
            blob = (labels == 1 + int(np.argmax(stats[1:, 4]))).astype(np.uint8)
            hull = np.zeros_like(blob)
            cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(blob)), 1)
            drop = int(0.14 * h)  # the wheels and the shade under the body
            alpha = np.maximum(hull, np.pad(hull, ((drop, 0), (0, 0)))[:h]).astype(np.float32)
            alpha = cv2.erode(alpha, np.ones((3, 3), np.uint8))
        # feather the outline over ~2 px
        pad = np.pad(alpha, 4)
        alpha = cv2.GaussianBlur(pad, (0, 0), 0.9)[4:-4, 4:-4]
        return obj.astype(np.float32), alpha.astype(np.float32)


def blend(frame: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> bool:
    """Alpha-blend float ``patch`` onto the uint8 ``frame`` in place, top-left at (x, y),
    clipped to the frame (only the covered region is touched: whole float clips are slow);
    True when any of it landed in the frame."""
    H, W = frame.shape[:2]
    h, w = alpha.shape
    fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if fx0 >= fx1 or fy0 >= fy1:
        return False
    a = alpha[fy0 - y:fy1 - y, fx0 - x:fx1 - x, None]
    if a.max() < 0.05:
        return False
    p = patch[fy0 - y:fy1 - y, fx0 - x:fx1 - x]
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.clip(np.rint(a * p + (1 - a) * region), 0, 255).astype(np.uint8)
    return True


def person_height(foot_y: int) -> int:
    """Perspective: walkers measured in vtest are ~72 px tall with feet at y 260, ~104 at 420."""
    return int(round(20 + 0.2 * foot_y))


# --------------------------------------------------------------------------- plants

@dataclass
class Planted:
    """A clip's frames (lazy: planted one at a time while the encoder takes them, so no
    clip-sized copy is made), its ground truth, the source frames its pixels come from, and
    facts for the manifest (filled in while the frames are produced)."""
    frames: Iterator[np.ndarray]
    gt: np.ndarray
    sources: list[list[int]]
    extra: dict[str, Any]


def plant_normal(scene: Scene, clip: Clip) -> Planted:
    return Planted(iter(scene.frames[clip.start:clip.start + clip.n]), np.zeros(clip.n, np.uint8),
                   [[clip.start, clip.start + clip.n]], {})


def plant_speed(scene: Scene, clip: Clip) -> Planted:
    a, b = clip.place["warp"]
    f = clip.place["factor"]
    # 1x up to a, every f-th frame over [a, b), then 1x again from where the warp left off
    src = [clip.start + t if t < a else clip.start + a + f * (t - a) if t < b
           else clip.start + a + f * (b - a) + (t - b) for t in range(clip.n)]
    gt = np.zeros(clip.n, np.uint8)
    gt[a:b] = 1
    return Planted((scene.frames[i] for i in src), gt, [[src[0], src[-1] + 1]], {"center_crop_frames": int(b - a)})


def plant_appearance(scene: Scene, clip: Clip, person: Person) -> Planted:
    H, W = scene.frames.shape[1:3]
    p = clip.place
    scale = person_height(p["foot_y"]) / person.height
    K, ph, pw = person.alphas.shape
    h, w = max(1, int(round(ph * scale))), max(1, int(round(pw * scale)))
    patches = [cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in person.patches]
    alphas = [cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in person.alphas]
    y = int(p["foot_y"] - h + 5 * scale)  # the feet sit 5 (scaled) px above the patch bottom
    cycle = list(range(K)) + list(range(K - 2, 0, -1))  # ping-pong walking cycle
    steps: dict[int, tuple[int, int]] = {}  # frame -> (cut-out, x)
    gt = np.zeros(clip.n, np.uint8)
    in_crop = 0
    for t in range(p["enter"], clip.n):
        x = -w + p["speed"] * (t - p["enter"])
        if x >= W:
            break
        k = cycle[(2 * (t - p["enter"])) % len(cycle)]  # steps at twice the rate: running
        c0, c1 = max(0, -x), min(w, W - x)
        if c0 < c1 and alphas[k][:, c0:c1].max() >= 0.05:  # any of it in the picture
            steps[t] = (k, x)
            gt[t] = 1
            in_crop += int(x < CROP_X[1] and x + w > CROP_X[0])
    else:
        raise ValueError(f"{clip.id}: the crossing does not end within the clip")
    src_exposure = float(scene.exposure[person.frames[0]:person.frames[1]].mean())

    def frames() -> Iterator[np.ndarray]:
        for t in range(clip.n):
            frame = scene.frames[clip.start + t]
            if t in steps:
                k, x = steps[t]
                frame = frame.copy()
                blend(frame, patches[k] * (scene.exposure[clip.start + t] / src_exposure), alphas[k], x, y)
            yield frame

    return Planted(frames(), gt, [[clip.start, clip.start + clip.n], list(person.frames)],
                   {"center_crop_frames": in_crop, "person_frames": list(person.frames), "size": [w, h]})


def plant_intrusion(scene: Scene, clip: Clip, seed: int) -> Planted:
    p = clip.place
    x, y, w, h = p["box"]
    obj, alpha = scene.object(p["object"], w, h)
    H, W = scene.frames.shape[1:3]
    # a soft contact shadow on the ground under (and slightly right of) the object's footprint
    rows, cols = np.nonzero(alpha > 0.5)
    bottom, left, right = y + int(rows.max()), x + int(cols.min()), x + int(cols.max())
    sy0, sy1, sx0, sx1 = max(0, bottom - 20), min(H, bottom + 22), max(0, left - 16), min(W, right + 26)
    shadow = np.zeros((sy1 - sy0, sx1 - sx0), np.float32)
    shadow[bottom - 6 - sy0:bottom + 8 - sy0, left - 4 - sx0:right + 14 - sx0] = 1.0
    shadow = (1.0 - 0.45 * cv2.GaussianBlur(shadow, (0, 0), 4.0))[..., None]
    # walkers whose feet are below the object's base are nearer the camera: they pass in front
    ry0, ry1, rx0, rx1 = max(0, y - 10), min(H, bottom + 140), max(0, x - 40), min(W, x + w + 40)
    gt = np.zeros(clip.n, np.uint8)
    gt[p["appear"]:] = 1
    visible = x < CROP_X[1] and x + w > CROP_X[0] and y < CROP_Y[1] and y + h > CROP_Y[0]
    extra = {"center_crop_frames": int(gt.sum()) if visible else 0, "texture": list(OBJECTS[p["object"]]["crop"]),
             "frames_with_walkers_in_front": 0}

    def frames() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for t in range(clip.n):
            src = scene.frames[clip.start + t]
            if t < p["appear"]:
                yield src
                continue
            frame = src.copy()
            gain = scene.exposure[clip.start + t] / scene.bg_exposure
            frame[sy0:sy1, sx0:sx1] = np.rint(frame[sy0:sy1, sx0:sx1] * shadow).astype(np.uint8)
            noisy = obj * gain + rng.normal(0.0, scene.noise_sigma, obj.shape).astype(np.float32)
            blend(frame, noisy, alpha, x, y)
            region = src[ry0:ry1, rx0:rx1]
            fg = (chanmax(cv2.absdiff(region, scene.bg_u8[ry0:ry1, rx0:rx1])) > 30).astype(np.uint8)
            fg = cv2.morphologyEx(cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)),
                                  cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
            n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
            near = np.zeros_like(fg)
            for i in range(1, n):
                cx, cy, cw, ch, area = (int(v) for v in stats[i])
                overlaps = rx0 + cx < x + w and rx0 + cx + cw > x and ry0 + cy < y + h
                if area >= 150 and overlaps and ry0 + cy + ch > bottom + 3:
                    near[labels == i] = 1
            if near.any():
                extra["frames_with_walkers_in_front"] += 1
                blend(frame[ry0:ry1, rx0:rx1], region.astype(np.float32),
                      cv2.GaussianBlur(near.astype(np.float32), (0, 0), 0.8), 0, 0)
            yield frame

    return Planted(frames(), gt, [[clip.start, clip.start + clip.n]], extra)


# --------------------------------------------------------------------------- build

def build(out: Path, video: Path, preset: str = "medium") -> dict[str, Any]:
    """Write the training part, the test clips, their ground truth and the manifest."""
    t0 = time.perf_counter()
    frames = read_frames(video)
    if frames.shape[0] < TEST[1]:
        raise SystemExit(f"{video}: {frames.shape[0]} frames, the benchmark needs {TEST[1]} (is it vtest.avi?)")
    scene = Scene(frames)
    train_path = out / "train" / f"cam_normal_{TRAIN[0]:04d}_{TRAIN[1]:04d}.mp4"
    write_video(train_path, frames[TRAIN[0]:TRAIN[1]], preset)
    people = scene.people()
    used_people: set[int] = set()
    clips: list[dict[str, Any]] = []
    (out / "gt").mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(PLAN):
        if clip.kind is None:
            planted = plant_normal(scene, clip)
        elif clip.kind == "speed":
            planted = plant_speed(scene, clip)
        elif clip.kind == "appearance":
            # a walker from a moment outside this clip, and not one already used
            choice = [j for j, p in enumerate(people) if j not in used_people
                      and (p.frames[1] <= clip.start or p.frames[0] >= clip.start + clip.n)]
            choice = choice or [j for j in range(len(people)) if j not in used_people] or list(range(len(people)))
            if not choice:
                raise SystemExit("no walker could be cut out of the test range (is the video vtest.avi?)")
            used_people.add(choice[0])
            planted = plant_appearance(scene, clip, people[choice[0]])
        elif clip.kind == "intrusion":
            planted = plant_intrusion(scene, clip, seed=i)
        else:
            raise ValueError(clip.kind)
        gt, sources, extra = planted.gt, planted.sources, planted.extra
        n_written = write_video(out / "test" / f"{clip.id}.mp4", planted.frames, preset)
        assert n_written == len(gt) == clip.n, (clip.id, n_written, len(gt))
        np.save(out / "gt" / f"{clip.id}.npy", gt)
        runs = np.flatnonzero(np.diff(np.r_[0, gt, 0]))
        clips.append({
            "id": clip.id, "kind": clip.kind or "normal", "video": f"test/{clip.id}.mp4", "gt": f"gt/{clip.id}.npy",
            "n_frames": clip.n, "source_start": clip.start, "source_frames": sources,
            "anomalous_ranges": runs.reshape(-1, 2).tolist(), "n_anomalous": int(gt.sum()),
            "placement": {k: list(v) if isinstance(v, tuple) else v for k, v in clip.place.items()}, **extra,
        })
    manifest = {
        "video": str(video), "fps": FPS, "frame_size": [int(frames.shape[2]), int(frames.shape[1])],
        "train": {"dir": "train", "videos": [train_path.relative_to(out).as_posix()], "source_frames": [list(TRAIN)]},
        "test": {"dir": "test", "source_range": list(TEST)},
        # the median background (cut-outs, intrusion textures) is made of these test-range frames
        "background_frames": scene.bg_frames,
        "noise_sigma": round(scene.noise_sigma, 3),
        "kinds": {
            "speed": "the footage played 3x faster over the range (time warp, no cut at either end)",
            "appearance": "a real walker cut from another test-range moment, crossing left to right at ~4x "
                          "walking speed against the mean flow; gt: frames where it is in the picture",
            "intrusion": "a vehicle-sized object of the scene's own texture, shaded, with a shadow and noise, "
                         "appearing at a frame and staying; gt: from its appearance to the clip's end",
        },
        "center_crop_x": list(CROP_X),
        "clips": clips,
        "build_s": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# --------------------------------------------------------------------------- methods

def frame_diff(frames: np.ndarray, short_side: int = 160) -> np.ndarray:
    """Mean |grey[t] - grey[t-1]| at a 160 px short side; frame 0 copies frame 1's score."""
    h, w = frames.shape[1:3]
    s = short_side / min(h, w)
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    grey = np.stack([cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), size,
                                interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32)
    if len(grey) < 2:
        return np.zeros(len(grey), np.float32)
    d = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))
    return np.concatenate([d[:1], d]).astype(np.float32)


# vad score options every scoring command shares: one process, a feature cache inside --out
# (the run's clips are new files every build: no point filling the repo's cache with them)
COMMON = ("--no-progress", "--executor", "local", "--set", "cache.root={cache}", "--ground-truth", "{gt}")


@dataclass(frozen=True)
class Method:
    """A python function (frames -> per-frame scores), or ``vad`` argument templates run in
    order, the scores read from ``<scores>/scores/<id>.csv``. Placeholders: {train} {test} {gt}
    {cache} {run} (this method's folder) {runs} (all methods' folders, to share a trained head)."""
    name: str
    about: str
    fn: Callable[[np.ndarray], np.ndarray] | None = None
    steps: tuple[tuple[str, ...], ...] = ()
    scores: str = "{run}"
    same_as: str | None = None  # report "identical to X" when the scores equal that method's
    same_note: str = ""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("frame_diff", "mean |grey diff| of consecutive frames (160 px short side)", fn=frame_diff),
    Method("reference_head", "vad score --reference <train> --set head.type=reference: the I3D feature "
           "normality head (the default before the scene head)",
           steps=(("score", "{test}", "--reference", "{train}", "--out", "{run}", "--set", "head.type=reference",
                   *COMMON),)),
    Method("motion_default", "plain vad score --reference <train>: the default scene head (per-region speed "
           "+ static appearance)",
           steps=(("score", "{test}", "--reference", "{train}", "--out", "{run}", *COMMON),),
           same_as="reference_head", same_note="the default head is still the reference head"),
    Method("anomalyruler", "vad score --reference <train> --head anomalyruler: training-free AnomalyRuler-style rules "
           "(offline perception: per-region motion figures)",
           steps=(("score", "{test}", "--reference", "{train}", "--head", "anomalyruler", "--out", "{run}",
                   "--set", "explain.options={{actions: false}}", *COMMON),)),
    Method("eventvad", "vad score --reference <train> --head eventvad: training-free EventVAD-style event cuts, each "
           "event judged under the same rules",
           steps=(("score", "{test}", "--reference", "{train}", "--head", "eventvad", "--out", "{run}",
                   "--set", "explain.options={{actions: false}}", *COMMON),)),
    Method("ctd2gan_minmax", "vad train --head ctd2gan --normal <train>; score_mode=minmax",
           steps=(("train", "--head", "ctd2gan", "--normal", "{train}", "--out", "{runs}/ctd2gan_head",
                   "--no-progress"),
                  ("score", "{test}", "--head", "{runs}/ctd2gan_head", "--out", "{run}",
                   "--set", "head.score_mode=minmax", *COMMON))),
    Method("ctd2gan_calibrated", "vad train --head ctd2gan --normal <train>; score_mode=calibrated",
           steps=(("train", "--head", "ctd2gan", "--normal", "{train}", "--out", "{runs}/ctd2gan_head",
                   "--no-progress"),
                  ("score", "{test}", "--head", "{runs}/ctd2gan_head", "--out", "{run}",
                   "--set", "head.score_mode=calibrated", *COMMON))),
)}


class NotAvailable(Exception):
    pass


def vad_command() -> list[str]:
    exe = Path(sys.executable).with_name("vad")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("vad")
    return [found] if found else [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())"]


class Runner:
    """Runs vad commands; an identical command (e.g. the ctd2gan training both score modes
    share) runs once and later calls reuse its outcome. ``log``: the commands run; ``calls``:
    every call, reused ones marked, for per-method timings."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.done: dict[tuple[str, ...], tuple[int, str, float]] = {}
        self.log: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []

    def __call__(self, argv: list[str]) -> None:
        key = tuple(argv)
        shown = "vad " + shlex.join(argv)
        reused = key in self.done
        if not reused:
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([*vad_command(), *argv], capture_output=True, text=True,
                                      timeout=self.timeout_s, cwd=REPO)
                rc, err = proc.returncode, (proc.stderr.strip() or proc.stdout.strip())
            except subprocess.TimeoutExpired:
                rc, err = -1, f"timed out after {self.timeout_s:g} s"
            except OSError as e:  # no vad executable
                rc, err = -1, f"{type(e).__name__}: {e}"
            self.done[key] = (rc, err, time.perf_counter() - t0)
            self.log.append({"command": shown, "rc": rc, "seconds": round(self.done[key][2], 1)})
        rc, err, seconds = self.done[key]
        self.calls.append({"command": shown, "rc": rc, "seconds": round(seconds, 1), "reused": reused})
        if rc != 0:
            last = next((ln.strip() for ln in reversed(err.splitlines()) if ln.strip()), "")
            raise NotAvailable(f"`{shown}` exited {rc}: {last[:300]}")


def read_scores_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as fh:
        return np.array([float(row["score"]) for row in csv.DictReader(fh)], np.float32)


def write_scores_csv(path: Path, scores: np.ndarray) -> None:
    """The `vad score` layout, so `vad evaluate --scores <run>` reads python methods too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time_s", "score"])
        for i, s in enumerate(scores):
            w.writerow([i, f"{i / FPS:.4f}", f"{float(s):.6f}"])


def python_scores(method: Method, video: Path) -> np.ndarray:
    assert method.fn is not None
    frames = read_frames(video)
    scores = np.asarray(method.fn(frames), np.float32).reshape(-1)
    if len(scores) != len(frames):
        raise NotAvailable(f"{method.name} gave {len(scores)} scores for {len(frames)} frames")
    return scores


def run_method(method: Method, out: Path, manifest: dict[str, Any], runner: Runner) -> dict[str, np.ndarray]:
    run = out / "runs" / method.name
    clips = manifest["clips"]
    if method.fn is not None:
        scores = {c["id"]: python_scores(method, out / c["video"]) for c in clips}
        for cid, s in scores.items():
            write_scores_csv(run / "scores" / f"{cid}.csv", s)
        return scores
    values = {"train": str(out / "train"), "test": str(out / "test"), "gt": str(out / "gt"),
              "cache": str(out / "cache"), "run": str(run), "runs": str(out / "runs")}
    for step in method.steps:
        runner([a.format(**values) for a in step])
    folder = Path(method.scores.format(**values)) / "scores"
    scores = {}
    for c in clips:
        path = folder / f"{c['id']}.csv"
        if not path.is_file():
            raise NotAvailable(f"no scores for {c['id']} in {folder}")
        s = read_scores_csv(path)
        if len(s) != c["n_frames"]:
            raise NotAvailable(f"{path.name} has {len(s)} scores, the clip {c['n_frames']} frames")
        scores[c["id"]] = s
    return scores


# --------------------------------------------------------------------------- evaluation

def evaluate(scores: dict[str, np.ndarray], manifest: dict[str, Any], gts: dict[str, np.ndarray]) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    clips = manifest["clips"]
    normal = [c["id"] for c in clips if c["kind"] == "normal"]
    groups = {k: [c["id"] for c in clips if c["kind"] == k] + normal for k in KINDS}
    groups["overall"] = [c["id"] for c in clips]
    auc = {}
    for name, ids in groups.items():
        y = np.concatenate([gts[i] for i in ids])
        s = np.concatenate([scores[i] for i in ids])
        auc[name] = float(roc_auc_score(y, s))
    per_clip = {}
    for c in clips:
        s, g = scores[c["id"]], gts[c["id"]].astype(bool)
        per_clip[c["id"]] = {"mean": float(s.mean()), "mean_anomalous": float(s[g].mean()) if g.any() else None,
                             "mean_normal": float(s[~g].mean()) if (~g).any() else None}
    return {"auc": auc, "per_clip": per_clip}


def score_method(method: Method, out: Path, manifest: dict[str, Any], gts: dict[str, np.ndarray],
                 runner: Runner, done: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """One method's result; never raises: a failure is reported as "not available". ``done``
    holds earlier methods' scores (for ``same_as``) and receives this one's."""
    n_calls = len(runner.calls)
    t = time.perf_counter()
    try:
        scores = run_method(method, out, manifest, runner)
        r: dict[str, Any] = {"status": "ok", **evaluate(scores, manifest, gts)}
        done[method.name] = scores
        twin = done.get(method.same_as or "")
        if twin is not None and all(np.allclose(scores[i], twin[i], atol=1e-6) for i in scores):
            r["note"] = f"identical to {method.same_as}: {method.same_note}"
    except NotAvailable as e:
        r = {"status": "not available", "reason": str(e)}
    except Exception as e:  # a method's own bug must not take the other methods down
        r = {"status": "not available", "reason": f"{type(e).__name__}: {e}"}
    calls = runner.calls[n_calls:]
    r["seconds"] = round(time.perf_counter() - t, 1)
    # what the method costs on its own: a command reused from an earlier method counts too
    r["standalone_s"] = round(r["seconds"] + sum(c["seconds"] for c in calls if c["reused"]), 1)
    r["about"] = method.about
    r["commands"] = calls if method.steps else ["(python, in this script)"]
    return r


def table(results: dict[str, dict[str, Any]]) -> str:
    cols = [*KINDS, "overall"]
    lines = [f"{'frame AUC':<20}" + "".join(f"{c:>12}" for c in cols) + f"{'time':>9}"]  # time: standalone
    for name, r in results.items():
        head = f"{name:<20}"
        if r["status"] != "ok":
            lines.append(head + f"not available: {r['reason']}")
            continue
        shared = any(isinstance(c, dict) and c["reused"] for c in r["commands"])
        row = head + "".join(f"{r['auc'][c]:>12.3f}" for c in cols) + f"{r['standalone_s']:>8.1f}s"
        row += "*" if shared else ""
        if r.get("note"):
            row += f"  ({r['note']})"
        lines.append(row)
    if any(isinstance(c, dict) and c["reused"] for r in results.values() for c in r["commands"]):
        lines.append("* includes a command shared with a method above (run once; its time counted for both)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def prepare_out(out: Path) -> None:
    """Start from an empty --out: stale clips or runs would mix into the numbers. Only a folder
    this script made (its marker) or an empty one is ever wiped."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise SystemExit(f"refusing to empty {out}: not made by this script (no {MARKER}); pick another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by scripts/bench_label_free.py; rerunning it wipes this folder\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_label_free",
                    help="benchmark folder (wiped and rebuilt)")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of: {', '.join(METHODS)}")
    ap.add_argument("--keep", action="store_true",
                    help="keep the videos and the feature cache (default: delete them at the end; "
                         "manifest, gt and the methods' scores stay)")
    ap.add_argument("--build-only", action="store_true", help="build the benchmark data, score nothing")
    ap.add_argument("--video", type=Path, default=REPO / "data" / "samples" / "vtest.avi",
                    help="the real sample footage (default: data/samples/vtest.avi)")
    ap.add_argument("--preset", default="medium", help="libx264 preset (crf 18 either way; faster for tests)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per vad command")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not args.video.is_file():
        raise SystemExit(f"{args.video} is missing: run `vad assets fetch`")
    out = args.out.resolve()
    prepare_out(out)
    t0 = time.perf_counter()
    manifest = build(out, args.video.resolve(), args.preset)
    kinds = {k: sum(c["kind"] == k for c in manifest["clips"]) for k in ("normal", *KINDS)}
    print(f"built {out}: training part frames [{TRAIN[0]}, {TRAIN[1]}), {len(manifest['clips'])} test clips "
          f"({', '.join(f'{v} {k}' for k, v in kinds.items())}) in {manifest['build_s']:.1f} s")
    if args.build_only:
        return 0

    gts = {c["id"]: np.load(out / c["gt"]) for c in manifest["clips"]}
    runner = Runner(args.timeout)
    results: dict[str, dict[str, Any]] = {}
    all_scores: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        results[name] = score_method(METHODS[name], out, manifest, gts, runner, all_scores)
        print(f"  {name}: {results[name]['status']} in {results[name]['seconds']:.1f} s", flush=True)

    print()
    print(table(results))
    print(f"\nnormal test clips: {kinds['normal']}; anomalous clips per kind: "
          + ", ".join(f"{k} {kinds[k]}" for k in KINDS))
    print("\ncommands:")
    for entry in runner.log:
        print(f"  [{entry['seconds']:>6.1f} s, rc {entry['rc']}] {entry['command']}")
    wall = round(time.perf_counter() - t0, 1)
    print(f"\nbuild {manifest['build_s']:.1f} s, total {wall:.1f} s; benchmark in {out}")
    if not args.keep:  # the bulky parts; manifest, gt, every method's scores and fitted heads stay
        for sub in ("train", "test", "cache", *(str(d.relative_to(out)) for d in out.glob("runs/*/checkpoints"))):
            shutil.rmtree(out / sub, ignore_errors=True)
    if args.json:
        summary = {"methods": results, "commands": runner.log, "build_s": manifest["build_s"], "wall_s": wall,
                   "clip_counts": kinds, "manifest": manifest, "out": str(out),
                   "cpu_count": os.cpu_count()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1, default=str) + "\n")
        print(f"numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
