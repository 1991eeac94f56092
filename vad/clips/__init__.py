"""Snippets (fixed-length frame windows) and spatial crops of decoded video."""

from vad.clips.crops import N_CROPS, crop_boxes, crop_views
from vad.clips.snippets import (
    Snippet,
    SnippetSpec,
    expand_snippet_scores,
    iter_snippets,
    snippet_ranges,
)
from vad.io.resize import resize_short_side

__all__ = [
    "N_CROPS",
    "Snippet",
    "SnippetSpec",
    "crop_boxes",
    "crop_views",
    "expand_snippet_scores",
    "iter_snippets",
    "resize_short_side",
    "snippet_ranges",
]
