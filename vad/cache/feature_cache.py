"""The feature cache (see :mod:`vad.cache` for the on-disk layout)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import vad
from vad.fsutil import save_npy_atomic, write_json_atomic, write_text_atomic

from vad.features.base import ExtractorSpec  # the cache keys its entries by it

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class VideoFingerprint:
    """Identity of a video file on disk: a changed size or mtime makes cached features stale."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> "VideoFingerprint":
        path = Path(path).resolve()
        st = path.stat()
        return cls(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns)


@dataclass(frozen=True)
class CacheEntry:
    """A complete cache entry: features shaped (n_crops, n_snippets, dim) and its manifest."""

    features: np.ndarray
    manifest: dict[str, Any]


def _snippet_dict(snippet: Any) -> dict[str, Any]:
    return asdict(snippet) if hasattr(snippet, "__dataclass_fields__") else dict(snippet)


class FeatureCache:
    """Reads and writes cache entries under ``root``; an entry is reused only when all of
    video fingerprint, snippet policy, extractor name, extractor config and weights hash match."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def entry_dir(self, extractor: ExtractorSpec) -> Path:
        return self.root / extractor.key

    def manifest_path(self, video_id: str, extractor: ExtractorSpec) -> Path:
        return self.entry_dir(extractor) / f"{video_id}.json"

    def feature_path(self, video_id: str, extractor: ExtractorSpec, crop: int) -> Path:
        return self.entry_dir(extractor) / f"{video_id}__{crop}.npy"

    def _expected(
        self, video: VideoFingerprint, snippet: Any, extractor: ExtractorSpec
    ) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "video": asdict(video),
            "snippet": _snippet_dict(snippet),
            "extractor": {
                "name": extractor.name,
                "config": extractor.config,
                "weights_sha256": extractor.weights_sha256,
            },
        }

    def load(
        self, video_id: str, video: VideoFingerprint, snippet: Any, extractor: ExtractorSpec
    ) -> CacheEntry | None:
        """The cached features, or None when absent, stale or damaged (never raises for those)."""
        manifest = self._matching_manifest(video_id, video, snippet, extractor)
        if manifest is None:
            return None
        manifest_path = self.manifest_path(video_id, extractor)
        try:
            crops = [
                np.load(self.feature_path(video_id, extractor, c), allow_pickle=False)
                for c in range(int(manifest["n_crops"]))
            ]
        except (OSError, ValueError, KeyError) as err:
            logger.warning("cache entry %s damaged (%s); recomputing", manifest_path, err)
            return None
        shape = (int(manifest["n_snippets"]), int(manifest["dim"]))
        if any(c.shape != shape for c in crops):
            logger.warning("cache entry %s has wrong shapes; recomputing", manifest_path)
            return None
        return CacheEntry(features=np.stack(crops), manifest=manifest)

    def has(self, video_id: str, video: VideoFingerprint, snippet: Any, extractor: ExtractorSpec) -> bool:
        """True when a complete, current entry exists (manifest matches, every crop file present);
        cheaper than :meth:`load` because no array is read."""
        manifest = self._matching_manifest(video_id, video, snippet, extractor)
        if manifest is None:
            return False
        try:
            return all(self.feature_path(video_id, extractor, c).is_file() for c in range(int(manifest["n_crops"])))
        except (KeyError, ValueError):
            return False

    def _matching_manifest(
        self, video_id: str, video: VideoFingerprint, snippet: Any, extractor: ExtractorSpec
    ) -> dict[str, Any] | None:
        manifest_path = self.manifest_path(video_id, extractor)
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("cache manifest %s unreadable (%s); recomputing", manifest_path, err)
            return None
        expected = self._expected(video, snippet, extractor)
        # Round-trip through JSON so tuples/lists compare equal to what was stored.
        expected = json.loads(json.dumps(expected))
        for key, value in expected.items():
            if manifest.get(key) != value:
                logger.info("cache entry %s is stale (%s changed); recomputing", manifest_path, key)
                return None
        return manifest

    def save(
        self,
        video_id: str,
        video: VideoFingerprint,
        snippet: Any,
        extractor: ExtractorSpec,
        features: np.ndarray,
        *,
        fps: float,
        n_frames: int,
        extra: dict[str, Any] | None = None,
    ) -> CacheEntry:
        """Write features (n_crops, n_snippets, dim); the manifest goes last and marks completion."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 3:
            raise ValueError(f"features must be (n_crops, n_snippets, dim), got {features.shape}")
        manifest_path = self.manifest_path(video_id, extractor)
        if manifest_path.exists():
            # Invalidate first: if we die between crops, no manifest points at mixed files.
            manifest_path.unlink()
        files = []
        for crop, array in enumerate(features):
            path = self.feature_path(video_id, extractor, crop)
            save_npy_atomic(path, array)
            files.append(path.name)
        manifest = self._expected(video, snippet, extractor)
        manifest.update(
            {
                "video_id": video_id,
                "fps": float(fps),
                "n_frames": int(n_frames),
                "n_snippets": int(features.shape[1]),
                "dim": int(features.shape[2]),
                "n_crops": int(features.shape[0]),
                "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "vad_version": vad.__version__,
                **(extra or {}),
            }
        )
        write_json_atomic(manifest_path, manifest)
        return CacheEntry(features=features, manifest=json.loads(json.dumps(manifest)))

    def entries(self, extractor_key: str | None = None) -> Iterable[tuple[Path, dict[str, Any]]]:
        """(manifest path, manifest) of every complete entry, optionally for one extractor key."""
        if extractor_key:
            dirs = [self.root / extractor_key]
        elif self.root.is_dir():
            dirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        else:
            dirs = []
        for directory in dirs:
            for manifest_path in sorted(directory.glob("*.json")):
                try:
                    yield manifest_path, json.loads(manifest_path.read_text())
                except (OSError, json.JSONDecodeError):
                    logger.warning("skipping unreadable manifest %s", manifest_path)

    def export_list(
        self, out: str | Path, extractor_key: str, crops: str = "all", absolute: bool = True,
        video_ids: set[str] | None = None,
    ) -> int:
        """Write an RTFM/UR-DMU-style list file: one ``.npy`` path per line, crops of a video
        adjacent (``__0`` .. ``__9``). ``crops`` = "all" or "first"; ``video_ids`` limits the list
        to those videos. Returns the number of lines."""
        if crops not in ("all", "first"):
            raise ValueError(f"crops must be 'all' or 'first', got {crops!r}")
        directory = self.root / extractor_key
        if not directory.is_dir():
            known = [p.name for p in self.root.iterdir() if p.is_dir()] if self.root.is_dir() else []
            raise FileNotFoundError(
                f"no cache entries for extractor {extractor_key!r} under {self.root} (have: {known or 'none'})"
            )
        lines = []
        for _, manifest in self.entries(extractor_key):
            if video_ids is not None and manifest.get("video_id") not in video_ids:
                continue
            names = manifest["files"] if crops == "all" else manifest["files"][:1]
            for name in names:
                path = directory / name
                lines.append(str(path.resolve() if absolute else path))
        write_text_atomic(out, "".join(f"{line}\n" for line in lines))
        return len(lines)


def default_cache_root() -> Path:
    """``$VAD_CACHE_DIR`` or ``feature_cache`` in the current directory."""
    return Path(os.environ.get("VAD_CACHE_DIR", "feature_cache"))
