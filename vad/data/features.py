"""Training data: per-video snippet features from a list file (RTFM/UR-DMU/VadCLIP layouts or
``vad cache export-list``), with video-level labels and anomaly classes from the names.

Features are validated on load (dimension, NaN/inf, shape) and every error names the file.
Segments for training are cached in memory per (video, crop), so an epoch touches the disk once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vad.data.lists import read_list

logger = logging.getLogger(__name__)


class FeatureDataError(ValueError):
    """A feature file or list that cannot be used (the message names the file)."""


@dataclass
class FeatureVideo:
    """One video of a feature set: one ``.npy`` per crop, each (snippets, dim)."""

    video_id: str
    paths: list[Path]
    label: int  # 1 anomalous, 0 normal
    cls_name: str | None = None
    cls: int = 0  # 0 normal, 1..C anomaly class, -1 anomalous with unknown class


def load_crop(path: Path, dim: int | None = None) -> np.ndarray:
    """(snippets, dim) float32 from one feature file; raises FeatureDataError naming the file."""
    arr = _open_checked(path, dim, mmap=False)
    if not np.isfinite(arr).all():
        raise FeatureDataError(f"{path}: features contain NaN or inf")
    return arr.astype(np.float32, copy=False)


def _open_checked(path: Path, dim: int | None, mmap: bool) -> np.ndarray:
    """The (snippets, dim) array of a feature file (memory-mapped if ``mmap``), shape-checked."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise FeatureDataError(f"{path}: feature file not found") from None
    except (OSError, ValueError) as err:
        raise FeatureDataError(f"{path}: not a readable .npy feature file ({err})") from None
    if arr.ndim == 3 and arr.shape[1] <= 10:  # (T, crops, D) files: RTFM's layout; take crop 0
        arr = arr[:, 0]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise FeatureDataError(f"{path}: expected features shaped (snippets, dim), got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise FeatureDataError(f"{path}: feature dimension {arr.shape[1]}, expected {dim}")
    return arr


def check_files(videos: list[FeatureVideo], dim: int | None, full_scan_bytes: int = 2 << 30) -> int:
    """Validate every feature file before training starts, so a bad file fails the run at once
    (naming the file) instead of after hours. Shapes and dimensions are always checked (header
    only); values are scanned for NaN/inf too when the whole set is under ``full_scan_bytes``
    (larger sets: crop 0 of each video; other crops are checked when first loaded).
    Returns the feature dimension."""
    total = sum(p.stat().st_size for v in videos for p in v.paths if p.is_file())
    full = total <= full_scan_bytes
    for v in videos:
        lengths = set()
        for c, path in enumerate(v.paths):
            arr = _open_checked(path, dim, mmap=True)
            dim = int(arr.shape[1])
            if (full or c == 0) and not np.isfinite(arr).all():
                raise FeatureDataError(f"{path}: features contain NaN or inf")
            lengths.add(arr.shape[0])
        if len(lengths) > 1:
            raise FeatureDataError(f"{v.video_id}: crops have different lengths {sorted(lengths)}")
    if dim is None:
        raise FeatureDataError("no feature files to check")
    return dim


def read_feature_list(path: str | Path, *, dataset: str | None = None, root: str | Path | None = None,
                      check_files: bool = True) -> list[FeatureVideo]:
    """Videos of a feature list in list order; classes numbered 1..C by sorted class name."""
    path = Path(path)
    try:
        entries = read_list(path, dataset=dataset, root=root)
    except FileNotFoundError:
        raise FeatureDataError(f"{path}: list file not found") from None
    except ValueError as err:
        raise FeatureDataError(str(err)) from None
    if not entries:
        raise FeatureDataError(f"{path}: the list names no videos")
    if check_files:
        missing = [str(p) for e in entries for p in e.paths if not Path(p).is_file()]
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise FeatureDataError(f"{path}: {len(missing)} listed feature file(s) missing: "
                                   f"{', '.join(missing[:5])}{more}")
    return [FeatureVideo(e.video_id, [Path(p) for p in e.paths], 0 if e.is_normal else 1, e.cls) for e in entries]


def assign_classes(videos: list[FeatureVideo], class_names: list[str] | None = None) -> list[str]:
    """Set ``cls`` from ``cls_name`` (1-based, sorted names; -1 when an anomalous video has none)."""
    if class_names is None:
        class_names = sorted({v.cls_name for v in videos if v.label == 1 and v.cls_name})
    index = {name: i + 1 for i, name in enumerate(class_names)}
    for v in videos:
        v.cls = 0 if v.label == 0 else index.get(v.cls_name or "", -1)
    return class_names


def stratified_split(videos: list[FeatureVideo], fraction: float, seed: int) -> tuple[list[FeatureVideo], list[FeatureVideo]]:
    """(train, validation): ``fraction`` of each label group, chosen with a seeded RNG."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in (0, 1):
        group = [v for v in videos if v.label == label]
        order = rng.permutation(len(group))
        n_val = int(round(fraction * len(group)))
        val += [group[i] for i in sorted(order[:n_val])]
        train += [group[i] for i in sorted(order[n_val:])]
    return train, val


@dataclass
class FeatureStore:
    """Loads crops on demand. Raw features are cached only when ``cache_raw`` (a 10-crop
    UCF-Crime training set is tens of GB); fixed-length segments are always cached (small)."""

    dim: int | None = None
    cache_raw: bool = False
    _raw: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    _segments: dict[tuple[str, int, int, bool, bool], np.ndarray] = field(default_factory=dict)

    def crop(self, video: FeatureVideo, crop: int) -> np.ndarray:
        key = (video.video_id, crop)
        if key in self._raw:
            return self._raw[key]
        arr = load_crop(video.paths[crop], self.dim)
        if self.dim is None:
            self.dim = int(arr.shape[1])
        if self.cache_raw:
            self._raw[key] = arr
        return arr

    def segments(self, video: FeatureVideo, crop: int, n_segments: int, *, normalize: bool = True,
                 overlap: bool = True, sample: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n_segments, dim) mean-pooled segments of one crop (cached); L2-normalised unless
        ``normalize=False``; ``sample``: one snippet drawn from each segment with ``rng`` (unused
        otherwise), new at every call (not cached); see :func:`vad.heads.modules.segment_features`."""
        from vad.heads.modules import segment_features

        if sample:
            return segment_features(self.crop(video, crop), n_segments, normalize=normalize,
                                    overlap=overlap, sample=True, rng=rng)
        key = (video.video_id, crop, n_segments, bool(normalize), bool(overlap))
        if key not in self._segments:
            self._segments[key] = segment_features(self.crop(video, crop), n_segments,
                                                   normalize=normalize, overlap=overlap)
        return self._segments[key]

    def all_crops(self, video: FeatureVideo) -> np.ndarray:
        """(n_crops, snippets, dim); crops of one video must have equal lengths."""
        crops = [self.crop(video, c) for c in range(len(video.paths))]
        lengths = {len(c) for c in crops}
        if len(lengths) != 1:
            raise FeatureDataError(f"{video.video_id}: crops have different lengths {sorted(lengths)}")
        return np.stack(crops)
