"""What every snippet feature extractor shares: the interface, the setup error and the checks
of the settings common to all of them.

A leaf of :mod:`vad.features` (it imports no extractor), so each extractor module and the
factory in :mod:`vad.features.extractor` can import it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch

from vad.clips import N_CROPS, Snippet
from vad.config import FeatureConfig

logger = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "ExtractorSpec", "FeatureError", "FeatureExtractor", "check_feature_config", "resolve_device"]

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class ExtractorSpec:
    """What produced the features: name, every setting that changes the numbers, and the weights."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""

    @property
    def key(self) -> str:
        """Directory name: readable name plus a hash of everything that changes the features."""
        blob = json.dumps(
            {"name": self.name, "config": self.config, "weights_sha256": self.weights_sha256},
            sort_keys=True,
        )
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


class FeatureError(RuntimeError):
    """The extractor cannot be set up (missing weights, bad device or precision)."""


class FeatureExtractor(Protocol):
    """What the pipeline needs from an extractor (I3D, CLIP, ...)."""

    dim: int
    weights_path: Path | str
    weights_sha256: str

    @property
    def n_crops(self) -> int: ...

    @property
    def spec(self) -> ExtractorSpec: ...

    def load(self) -> "FeatureExtractor":
        """Load the model now; raises FeatureError naming what cannot be loaded."""
        ...

    def extract(
        self, snippets: Iterable[Snippet], on_snippet: Callable[[int], None] | None = None
    ) -> np.ndarray: ...

    def extract_views(
        self, views: Iterable[np.ndarray], on_snippet: Callable[[int], None] | None = None
    ) -> np.ndarray: ...


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FeatureError(f"device {device!r} requested but CUDA is not available")
    return dev


def check_feature_config(cfg: FeatureConfig) -> torch.device:
    """Checks every extractor shares (crop, precision, batch size, frame stride, device);
    returns the resolved device. Extractor-specific checks stay in each extractor."""
    if cfg.crop not in N_CROPS:
        raise FeatureError(f"features.crop must be one of {sorted(N_CROPS)}, got {cfg.crop!r}")
    if cfg.precision not in PRECISIONS:
        raise FeatureError(f"features.precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    if cfg.batch_size < 1:
        raise FeatureError(f"features.batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.frame_stride < 1:
        raise FeatureError(f"features.frame_stride must be >= 1, got {cfg.frame_stride}")
    device = resolve_device(cfg.device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise FeatureError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return device
