"""Snippets (fixed-length frame windows) and spatial crops of decoded video."""

from vad.clips.crops import N_CROPS, crop_boxes, crop_views
from vad.clips.snippets import (
    Snippet,
    SnippetBuffer,
    SnippetSpec,
    expand_snippet_scores,
    iter_snippets,
    snippet_ranges,
    snippets_from_source,
)
from vad.io.resize import resize_short_side

__all__ = [
    "N_CROPS",
    "Snippet",
    "SnippetBuffer",
    "SnippetSpec",
    "crop_boxes",
    "crop_views",
    "expand_snippet_scores",
    "iter_snippets",
    "resize_short_side",
    "snippet_ranges",
    "snippets_from_source",
]
