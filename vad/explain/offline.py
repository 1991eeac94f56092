"""The offline perception backend: deterministic, no language model, built from what the
pipeline can compute on a CPU.

Evidence per snippet (``Perception.evidence``):

* ``motion``: per-region speed, energy and direction (:mod:`vad.explain.motion`), always;
* ``actions``: the top Kinetics-400 actions of the snippet with their probabilities, when an
  :class:`I3DActions` recogniser is given (the same DeepMind I3D the feature path runs);
* ``objects``: counts per class from a user-supplied detector model that ``cv2.dnn`` reads
  (:class:`DnnObjectDetector`, SSD-style output), when given.

``text`` renders the same figures in one or two sentences; the rules (:mod:`vad.explain.rules`)
work on the evidence, not on the text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from vad.explain.motion import MotionConfig, snippet_motion
from vad.explain.perception import BackendError, Perception, PerceptionBackend, PerceptionRequest

logger = logging.getLogger(__name__)

__all__ = ["DnnObjectDetector", "I3DActions", "OfflineBackend", "describe_motion", "parse_ssd_detections"]


class I3DActions:
    """Top Kinetics-400 actions of a snippet with an I3D model (``vad.features.i3d.InceptionI3d``).

    Frames are sampled to 16 (evenly; repeated when the snippet is shorter), resized so the short
    side is 224 and centre-cropped to 224 x 224 with the feature path's own resize and crop."""

    def __init__(self, model: Any, class_names: Sequence[str] | None = None, top_k: int = 3) -> None:
        from vad.features.i3d import KINETICS400_CLASSES

        self.model = model.eval()
        self.class_names = list(class_names or KINETICS400_CLASSES)
        self.top_k = top_k

    def __call__(self, frames: np.ndarray) -> list[dict[str, Any]]:
        import torch

        from vad.clips.crops import crop_views
        from vad.features.i3d import preprocess_frames
        from vad.io import resize_short_side

        idx = np.linspace(0, len(frames) - 1, 16).round().astype(int)
        clip = crop_views(resize_short_side(np.asarray(frames)[idx], 224), 224, "center")[0]
        x = preprocess_frames(np.ascontiguousarray(clip))[None]
        with torch.inference_mode():
            p = torch.softmax(self.model(x).logits.float()[0], dim=0).numpy()
        top = np.argsort(-p)[:self.top_k]
        return [{"label": self.class_names[i], "p": round(float(p[i]), 4)} for i in top]


def parse_ssd_detections(out: np.ndarray, classes: Sequence[str], threshold: float) -> dict[str, int]:
    """Counts per class from an SSD ``DetectionOutput`` blob (1, 1, N, 7): rows of
    (image, class id, confidence, x0, y0, x1, y1); ids outside ``classes`` count as ``class_<id>``."""
    out = np.asarray(out, np.float32)
    if out.ndim != 4 or out.shape[-1] != 7:
        raise BackendError(f"object detector output is {out.shape}, expected SSD detections (1, 1, N, 7)")
    counts: dict[str, int] = {}
    for row in out.reshape(-1, 7):
        if row[2] < threshold:
            continue
        cid = int(row[1])
        name = classes[cid] if 0 <= cid < len(classes) else f"class_{cid}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


class DnnObjectDetector:
    """Object counts from a detector that ``cv2.dnn.readNet`` loads (e.g. an SSD-MobileNet COCO
    graph the user provides: ``model`` + optional ``config``), run on the snippet's middle frame.
    ``classes``: the label list (a file with one name per line, or a list), index = class id."""

    def __init__(self, model: str | Path, config: str | Path | None = None, classes: str | Path | Sequence[str] = (),
                 input_size: tuple[int, int] = (300, 300), threshold: float = 0.5, scale: float = 1.0 / 127.5,
                 mean: tuple[float, float, float] = (127.5, 127.5, 127.5), swap_rb: bool = False) -> None:
        model = Path(model)
        if not model.is_file():
            raise BackendError(f"object detector model {model} not found")
        try:
            self.net = cv2.dnn.readNet(str(model), str(config) if config else "")
        except cv2.error as err:
            raise BackendError(f"cv2.dnn cannot read the object detector {model}: {err}") from None
        if isinstance(classes, (str, Path)):
            classes = [c.strip() for c in Path(classes).read_text().splitlines()]
        self.classes = list(classes)
        self.input_size, self.threshold, self.scale, self.mean, self.swap_rb = input_size, threshold, scale, mean, swap_rb

    def __call__(self, frames: np.ndarray) -> dict[str, int]:
        frame = np.asarray(frames)[len(frames) // 2]
        # frames are RGB; swap_rb=False feeds them as RGB, which TF-trained SSDs expect
        blob = cv2.dnn.blobFromImage(frame, self.scale, self.input_size, self.mean, swapRB=self.swap_rb)
        self.net.setInput(blob)
        return parse_ssd_detections(self.net.forward(), self.classes, self.threshold)


def describe_motion(motion: dict[str, Any]) -> str:
    """One sentence about a snippet's motion figures (speeds in px/frame at the analysis size)."""
    frame = motion["frame"]
    if frame["direction"] is None:
        return "Nothing moves."
    moving = sorted(((r["speed"], name, r) for name, r in motion["regions"].items() if r["direction"]), reverse=True)
    speed, name, r = moving[0] if moving else (frame["speed"], "frame", frame)
    return (f"{100 * frame['energy']:.0f}% of the picture moves; fastest in the {name} region at "
            f"{speed:.2f} px/frame (at {motion['analysis_size'][1]} px high), heading {r['direction']}.")


class OfflineBackend(PerceptionBackend):
    """See the module docstring. ``actions``/``objects``: optional callables frames -> evidence
    (:class:`I3DActions`, :class:`DnnObjectDetector`)."""

    name = "offline"

    def __init__(self, motion: MotionConfig = MotionConfig(), actions: Any = None, objects: Any = None) -> None:
        self.motion_cfg, self.actions, self.objects = motion, actions, objects

    def identity(self) -> str:
        m = self.motion_cfg
        parts = [self.name, f"motion-{m.short_side}-{m.moving_px:g}-{m.min_pixels}-{m.quantile:g}"]
        if self.actions is not None:
            parts.append("i3d-actions")
        if self.objects is not None:
            parts.append("objects")
        return ":".join(parts)

    def perceive(self, request: PerceptionRequest) -> Perception:
        frames = np.asarray(request.frames)
        if len(frames) < 2:
            raise BackendError(f"{request.key}: {len(frames)} frame(s); perception needs at least 2")
        evidence: dict[str, Any] = {"motion": snippet_motion(frames, self.motion_cfg)}
        text = [describe_motion(evidence["motion"])]
        if self.actions is not None:
            evidence["actions"] = self.actions(frames)
            text.append("Looks like " + ", ".join(f"{a['label']} ({a['p']:.2f})" for a in evidence["actions"]) + ".")
        if self.objects is not None:
            evidence["objects"] = self.objects(frames)
            seen = ", ".join(f"{n} {c}" for c, n in evidence["objects"].items())
            text.append(f"Objects: {seen}." if seen else "No objects detected.")
        return Perception(" ".join(text), evidence, self.name, request.start_frame, request.end_frame)
