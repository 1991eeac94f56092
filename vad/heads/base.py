"""What every trainable head shares: the batch container, segment pooling, save/load.

A trainable head is a plain ``nn.Module`` with

* ``config``: a dataclass (JSON-serialisable via ``dataclasses.asdict``) with ``input_dim``;
* ``forward(features, mask=None) -> scores``: features (B, T, D) float, mask (B, T) bool
  (True = a real snippet; padding is False), scores (B, T) in [0, 1];
* ``loss(batch: FeatureBatch) -> (loss tensor, {part name: float})``.

Heads are registered in ``HEADS`` by name; ``save_head``/``load_head`` write and read
``<dir>/head.safetensors`` + ``<dir>/head.json`` (no code runs on load).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vad.fsutil import atomic_path, write_json_atomic


@dataclass
class FeatureBatch:
    """A training batch of videos as snippet (or segment) feature sequences.

    features: (B, T, D) float32; mask: (B, T) bool, True where a real snippet is;
    label: (B,) float32 video label, 1 = anomalous, 0 = normal;
    cls: (B,) int64 class index: 0 = normal, 1..C = anomaly class, -1 = unknown.
    """

    features: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor
    cls: torch.Tensor

    def to(self, device: torch.device | str) -> "FeatureBatch":
        return FeatureBatch(*(t.to(device) for t in (self.features, self.mask, self.label, self.cls)))


def segment_features(features: np.ndarray, n_segments: int) -> np.ndarray:
    """(T, D) snippet features -> (n_segments, D): each segment is the mean of the snippets whose
    index falls in its share of the video (Sultani et al.'s 32-segment bags). Videos shorter than
    ``n_segments`` repeat snippets. Segments are L2-normalised, as in the paper."""
    features = np.asarray(features, dtype=np.float32)
    t = len(features)
    if t == 0:
        raise ValueError("cannot segment an empty feature sequence")
    edges = np.linspace(0, t, n_segments + 1)
    out = np.empty((n_segments, features.shape[1]), dtype=np.float32)
    for i in range(n_segments):
        a, b = int(np.floor(edges[i])), int(np.ceil(edges[i + 1]))
        b = max(b, a + 1)
        out[i] = features[min(a, t - 1):min(b, t)].mean(axis=0)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norm, 1e-12)


HEADS: dict[str, Callable[..., nn.Module]] = {}
CONFIGS: dict[str, type] = {}


def register_head(name: str, config_cls: type) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        HEADS[name] = cls
        CONFIGS[name] = config_cls
        cls.head_name = name
        return cls

    return wrap


def build_head(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (available: {', '.join(sorted(HEADS)) or 'none'})")
    cfg_cls = CONFIGS[name]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(config or {}) - fields)
    if unknown:
        raise ValueError(f"unknown {name} config key(s): {', '.join(unknown)}")
    return HEADS[name](cfg_cls(**(config or {})))


def save_head(head: nn.Module, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Weights as safetensors, config and metadata as JSON; both written atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_path(directory / "head.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {"type": head.head_name, "config": dataclasses.asdict(head.config), **(extra or {})}
    write_json_atomic(directory / "head.json", meta)
    return directory


def load_head(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A trained head in eval mode; raises FileNotFoundError/ValueError with the reason."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta_path, weights_path = directory / "head.json", directory / "head.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved head (needs head.json and head.safetensors)")
    meta = json.loads(meta_path.read_text())
    head = build_head(meta.get("type", ""), meta.get("config"))
    head.load_state_dict(load_file(str(weights_path)), strict=True)
    return head.to(device).eval()
