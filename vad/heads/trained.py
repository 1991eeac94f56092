"""The head contract around a trained torch core (MIL ranking, GS-MoE, RTFM).

Batch scoring runs the core over the whole video at once; streaming runs it over a sliding
window of ``left + 1 + right`` snippets (the core's ``context``), so a snippet's streamed score
sees exactly the neighbours its batch score sees, including the zero padding at the two ends
of the video: the scores agree to float rounding. A core whose scores depend on the whole video
(``context`` -1, RTFM's non-local block) is not causal and has no streaming scorer.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vad.heads.base import Head, HeadError, HeadInput, HeadScores, StreamingScorer, UnitTiming
from vad.heads.gsmoe import GSMoEHead
from vad.heads.mil import MILHead
from vad.heads.modules import load_module, module_context, save_module
from vad.heads.rtfm import RTFMHead

__all__ = ["TrainedHead", "score_snippets"]

#: The trainable cores (importing them registers them with vad.heads.modules).
CORES = (MILHead, GSMoEHead, RTFMHead)

# head.json keys that belong to the schema, not to the training run's own notes
_SCHEMA_KEYS = {"format", "version", "type", "consumes", "causal", "lookahead", "needs_fit", "config"}


@torch.inference_mode()
def score_snippets(module: nn.Module, features: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Snippet scores (S,) of a trained core for features (n_crops, S, D), averaged over crops."""
    # Cores normalise their input themselves where they need it (MIL, GS-MoE: L2, as their
    # training segments are; RTFM takes raw features, as its training segments are raw means).
    x = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(device)
    module.eval()
    return module(x).float().mean(dim=0).cpu().numpy()


class TrainedHead(Head):
    """A trained core (``vad train``) as a head: features in, one score per snippet."""

    def __init__(self, module: nn.Module, *, extractor: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.module = module.eval()
        self.type_name = module.head_name
        self.extractor = extractor
        self.extra = dict(extra or {})

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def input(self) -> HeadInput:
        return HeadInput("features", extractor=self.extractor, dim=int(self.module.config.input_dim))

    @property
    def context(self) -> tuple[int, int]:
        return module_context(self.module)

    @property
    def lookahead(self) -> int:
        return self.context[1]

    def score_video(self, units: np.ndarray, timing: UnitTiming) -> HeadScores:
        units = np.asarray(units)
        if units.ndim != 3:
            raise HeadError(f"features must be (crops, snippets, dim), got shape {units.shape}")
        self.input.check_features(units.shape[2])
        return HeadScores(score_snippets(self.module, units, self.device))

    def stream(self, timing: UnitTiming, n_units: int | None = None) -> StreamingScorer:
        if self.lookahead < 0:
            raise HeadError(f"the {self.type_name} head scores whole videos (each score depends on every "
                            "snippet of the video), so it has no streaming scorer; for live cameras use a "
                            "causal head (mil, or the default)")
        return _WindowScorer(self)

    def save(self, directory: str | Path) -> Path:
        return save_module(self.module, directory, extra=self.extra, extractor=self.extractor)

    @classmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any], device: str = "cpu") -> TrainedHead:
        module = load_module(directory, device)
        extractor = (meta.get("consumes") or {}).get("extractor")
        return cls(module, extractor=extractor, extra={k: v for k, v in meta.items() if k not in _SCHEMA_KEYS})


class _WindowScorer(StreamingScorer):
    def __init__(self, head: TrainedHead) -> None:
        self.head = head
        self.left, self.right = head.context
        self.reset()

    def reset(self) -> None:
        self._window: deque[np.ndarray] = deque(maxlen=self.left + 1 + self.right)
        self._seen = 0  # units received since the last reset
        self._done = 0  # units scored

    def _score(self, index: int, end: int) -> float:
        """Score of unit ``index`` given units up to ``end`` (exclusive) are in the window."""
        first = end - len(self._window)
        lo = max(first, index - self.left)
        hi = min(end, index + self.right + 1)
        window = np.stack([self._window[k - first] for k in range(lo, hi)], axis=1)  # (crops, W, D)
        return float(score_snippets(self.head.module, window, self.head.device)[index - lo])

    def update(self, unit: np.ndarray) -> np.ndarray:
        unit = np.asarray(unit, dtype=np.float32)
        if unit.ndim == 1:
            unit = unit[None]
        self.head.input.check_features(unit.shape[-1])
        self._window.append(unit)
        self._seen += 1
        out = []
        while self._done + self.right < self._seen:
            out.append(self._score(self._done, self._seen))
            self._done += 1
        return np.asarray(out, dtype=np.float32)

    def finish(self) -> np.ndarray:
        out = []
        while self._done < self._seen:
            out.append(self._score(self._done, self._seen))
            self._done += 1
        return np.asarray(out, dtype=np.float32)
