"""Feature cache: one ``.npy`` per video per crop plus a manifest that decides reuse.

Layout under the cache root (default ``feature_cache/``)::

    <extractor>-<config hash>/
        <video_id>__0.npy      # float32 (snippets, dim), crop 0
        <video_id>__1.npy      # ... one file per crop (10crop: __0 .. __9)
        <video_id>.json        # manifest, written last: its presence marks a complete entry

The ``<video_id>__<crop>.npy`` naming is the one the UR-DMU/RTFM-style list files use, so
``vad cache export-list`` can hand the files straight to those codebases.
"""

from vad.cache.feature_cache import (
    CacheEntry,
    ExtractorSpec,
    FeatureCache,
    VideoFingerprint,
)

__all__ = ["CacheEntry", "ExtractorSpec", "FeatureCache", "VideoFingerprint"]
