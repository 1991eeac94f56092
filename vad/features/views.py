"""The CPU half of snippet feature extraction, shared by every extractor.

Decode workers turn a snippet's frames into the crops a model sees (:func:`snippet_views`);
extractor workers embed those (``extract_views``). :class:`ViewsExtractor` gives every
extractor the whole-snippet ``extract`` on top of its own ``extract_views``.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from vad.clips import Snippet, crop_views
from vad.config import FeatureConfig


def snippet_views(frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """A snippet's frames (T, H, W, 3) uint8 -> the crops the model sees,
    (n_crops, T', crop_size, crop_size, 3) uint8 with T' = T / frame_stride. Decode workers run
    this, so only crops travel to the model."""
    return crop_views(frames[:: cfg.frame_stride], cfg.crop_size, cfg.crop)


class ViewsExtractor:
    """Base of the extractors: ``extract`` = :func:`snippet_views` + the subclass's ``extract_views``."""

    cfg: FeatureConfig

    def extract_views(
        self, views: Iterable[np.ndarray], on_snippet: Callable[[int], None] | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def extract(
        self, snippets: Iterable[Snippet], on_snippet: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Features for every snippet, shaped (n_crops, n_snippets, dim) float32."""
        return self.extract_views((snippet_views(s.frames, self.cfg) for s in snippets), on_snippet)
