"""What every trainable head's torch core shares: the batch container, segment pooling, the
registry of cores, and saving/loading a core's weights.

A trainable core is a plain ``nn.Module`` with

* ``config``: a dataclass (JSON-serialisable via ``dataclasses.asdict``) with ``input_dim``;
* ``forward(features, mask=None) -> scores``: features (B, T, D) float, mask (B, T) bool
  (True = a real snippet; padding is False), scores (B, T) in [0, 1];
* ``context``: ``(left, right)`` snippets a score depends on (a temporal convolution of
  kernel 3 is ``(1, 1)``; a per-snippet MLP ``(0, 0)``; ``-1``: the whole video, e.g. a
  non-local block), used for streaming;
* ``loss(batch: FeatureBatch) -> (loss tensor, {part name: float})``;
* optionally ``segment_pooling``: keyword arguments of :func:`segment_features` the trainer
  builds its training segments with (default: overlapping, L2-normalised segments; it passes its
  checkpointed generator as ``rng``, which ``sample: True`` draws from), and
  ``input_normalization``: what the core does to its input (``"l2"`` or ``"none"``), noted in
  ``head.json``.

Cores are registered in ``MODULES`` by name. ``save_module``/``load_module`` write and read
``<dir>/head.safetensors`` + ``<dir>/head.json`` in the schema of :mod:`vad.heads.base` (no
code runs on load); :class:`vad.heads.trained.TrainedHead` is the head contract around a core.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from vad.fsutil import atomic_path
from vad.heads.base import HEAD_FORMAT, HEAD_VERSION, HeadError, HeadInput, read_head_meta, write_head_meta


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


def segment_features(features: np.ndarray, n_segments: int, *, normalize: bool = True,
                     overlap: bool = True, sample: bool = False,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """(T, D) snippet features -> (n_segments, D): each segment is the mean of the snippets whose
    index falls in its share of the video (Sultani et al.'s 32-segment bags). Videos shorter than
    ``n_segments`` repeat snippets.

    With edges ``e = linspace(0, T, n_segments + 1)``, segment i averages snippets
    ``floor(e[i]) .. ceil(e[i+1]) - 1`` when ``overlap`` (a snippet cut by an edge counts in both
    neighbours), else ``floor(e[i]) .. floor(e[i+1]) - 1`` (disjoint, as RTFM's release pools);
    a segment that covers no whole snippet takes snippet ``floor(e[i])``. ``normalize``:
    L2-normalise each segment, as in the MIL paper (RTFM keeps the raw mean: its loss works on
    feature magnitudes). ``sample``: each segment is instead one snippet drawn uniformly from its
    span with ``rng`` (a fresh draw per call; ``rng`` is unused otherwise), so training sees single
    snippets, the statistics a model scores at test time, rather than their means."""
    features = np.asarray(features, dtype=np.float32)
    t = len(features)
    if t == 0:
        raise ValueError("cannot segment an empty feature sequence")
    edges = np.linspace(0, t, n_segments + 1)
    starts = np.floor(edges[:-1]).astype(np.int64)
    ends = np.ceil(edges[1:]) if overlap else np.floor(edges[1:])
    ends = np.maximum(ends.astype(np.int64), starts + 1)  # every span lies in [0, t): e[i] < t, e[n] = t
    if sample:
        if rng is None:
            raise ValueError("sample=True needs an rng")
        out = features[rng.integers(starts, ends)]
    else:
        out = np.empty((n_segments, features.shape[1]), dtype=np.float32)
        for i, (a, b) in enumerate(zip(starts, ends)):
            out[i] = features[a:b].mean(axis=0)
    if not normalize:
        return out
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norm, 1e-12)


MODULES: dict[str, Callable[..., nn.Module]] = {}
CONFIGS: dict[str, type] = {}


def register_module(name: str, config_cls: type) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        MODULES[name] = cls
        CONFIGS[name] = config_cls
        cls.head_name = name
        return cls

    return wrap


def build_module(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A registered core with random weights from a (partial) config dict."""
    if name not in MODULES:
        raise ValueError(f"unknown head {name!r} (available: {', '.join(sorted(MODULES)) or 'none'})")
    cfg_cls = CONFIGS[name]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(config or {}) - fields)
    if unknown:
        raise ValueError(f"unknown {name} config key(s): {', '.join(unknown)}")
    return MODULES[name](cfg_cls(**(config or {})))


def module_context(module: nn.Module) -> tuple[int, int]:
    """``(left, right)`` snippets of context a core's score depends on (-1: the whole video)."""
    left, right = getattr(module, "context", (0, 0))
    return int(left), int(right)


def save_module(module: nn.Module, directory: str | Path, extra: dict[str, Any] | None = None,
                extractor: str | None = None) -> Path:
    """Weights as safetensors, ``head.json`` in the one head schema; both written atomically.
    ``extractor``: the name of the extractor whose features it takes, when known."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(directory / "head.safetensors") as tmp:
        save_file(state, str(tmp))
    right = module_context(module)[1]
    meta = {"format": HEAD_FORMAT, "version": HEAD_VERSION, "type": module.head_name,
            "consumes": HeadInput("features", extractor=extractor, dim=int(module.config.input_dim)).to_dict(),
            "causal": right == 0, "lookahead": right, "needs_fit": False,
            "config": dataclasses.asdict(module.config), **(extra or {})}
    write_head_meta(directory, meta)
    return directory


def load_module(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A saved core in eval mode; raises HeadError with the reason."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_head_meta(directory)
    try:
        module = build_module(meta.get("type", ""), meta.get("config"))
        module.load_state_dict(load_file(str(directory / "head.safetensors")), strict=True)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        raise HeadError(f"cannot load the head in {directory}: {err}") from None
    return module.to(device).eval()
