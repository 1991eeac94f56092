"""Synthetic snippet-feature sets with planted anomalies, for training and benchmarking heads.

A normal snippet is a fixed base pattern, plus a per-video scene offset and a slow drift that
live in "nuisance" dimensions (large normal variation), plus white noise everywhere. An
anomalous video has one contiguous run of planted snippets: anomaly class c adds its own
signature, a signed shift on its own random subset of "signature" dimensions, whose size
(``amplitudes``) can differ per class so that some classes are subtle.

Everything that defines the *task* (base pattern, nuisance and signature dimensions, signs)
comes from ``pattern_seed``; ``seed`` only draws the videos. So a training set and a held-out
test set of the same task differ only in ``seed``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["FeatureVideo", "make_feature_set", "snippet_auc_inputs"]

# (features (T, D) float32, snippet_labels (T,) uint8, video_label, cls, video_id)
FeatureVideo = tuple[np.ndarray, np.ndarray, int, int, str]


def _task(dim: int, n_classes: int, dims_per_class: int, n_nuisance: int, pattern_seed: int):
    rng = np.random.default_rng(pattern_seed)
    if n_nuisance + dims_per_class > dim:
        raise ValueError(f"dim {dim} too small for {n_nuisance} nuisance + {dims_per_class} signature dims")
    order = rng.permutation(dim)
    nuisance, rest = order[:n_nuisance], order[n_nuisance:]
    # Each class draws its own subset of the non-nuisance dims (classes may share some dims).
    signatures = []
    for _ in range(n_classes):
        idx = rng.choice(rest, size=dims_per_class, replace=False)
        signs = rng.choice([-1.0, 1.0], size=dims_per_class)
        signatures.append((idx, signs))
    base = rng.normal(size=dim)
    return base, nuisance, signatures


def make_feature_set(
    n_videos: int,
    dim: int = 64,
    n_classes: int = 1,
    lengths: tuple[int, int] = (40, 120),
    seed: int = 0,
    *,
    anomaly_fraction: float = 0.5,
    run_fraction: tuple[float, float] = (0.1, 0.35),
    amplitudes: float | Sequence[float] = 1.5,
    dims_per_class: int = 8,
    n_nuisance: int | None = None,
    nuisance_scale: float = 2.0,
    noise: float = 0.5,
    pattern_seed: int = 1234,
) -> list[FeatureVideo]:
    """``n_videos`` videos of ``lengths[0]..lengths[1]`` snippets (inclusive), ``dim``-d features.

    ``anomaly_fraction`` of the videos are anomalous, their classes cycling through
    1..``n_classes``; each has one run covering ``run_fraction`` of the video (at least 2
    snippets). ``amplitudes`` is one shift size for every class or one per class, in units of
    the white-noise level 1. Normal videos' ``cls`` is 0; ids are ``"{seed}_{i:04d}"``.
    """
    amps = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), (n_classes,))
    n_nuisance = dim // 2 if n_nuisance is None else n_nuisance
    base, nuisance, signatures = _task(dim, n_classes, dims_per_class, n_nuisance, pattern_seed)
    rng = np.random.default_rng(seed)
    n_anom = int(round(n_videos * anomaly_fraction))
    is_anom = np.zeros(n_videos, dtype=bool)
    is_anom[rng.choice(n_videos, size=n_anom, replace=False)] = True
    videos: list[FeatureVideo] = []
    k = 0
    for i in range(n_videos):
        t = int(rng.integers(lengths[0], lengths[1] + 1))
        x = np.tile(base, (t, 1)) + rng.normal(scale=noise, size=(t, dim))
        # Normal variation: a per-video scene offset and a slow random-walk drift, nuisance dims only.
        drift = np.cumsum(rng.normal(scale=0.3, size=(t, n_nuisance)), axis=0)
        x[:, nuisance] += nuisance_scale * (rng.normal(size=n_nuisance) + drift / np.sqrt(t))
        labels = np.zeros(t, dtype=np.uint8)
        cls = 0
        if is_anom[i]:
            cls = k % n_classes + 1
            k += 1
            length = max(2, int(round(rng.uniform(*run_fraction) * t)))
            start = int(rng.integers(0, t - length + 1))
            idx, signs = signatures[cls - 1]
            x[start:start + length, idx] += amps[cls - 1] * signs
            labels[start:start + length] = 1
        videos.append((x.astype(np.float32), labels, int(is_anom[i]), cls, f"{seed}_{i:04d}"))
    return videos


def snippet_auc_inputs(videos: Sequence[FeatureVideo], scores: Sequence[np.ndarray], frames_per_snippet: int = 16):
    """(frame labels, frame scores) concatenated in list order: snippet values repeated 16x."""
    labels = np.concatenate([np.repeat(v[1], frames_per_snippet) for v in videos])
    values = np.concatenate([np.repeat(np.asarray(s, dtype=np.float64), frames_per_snippet) for s in scores])
    return labels, values
