"""Label-free head: model normality from reference snippets of the same camera.

Two distances to the reference feature distribution, each calibrated on the reference itself
and averaged:

* ``mahalanobis`` - distance to a Gaussian fitted with a Ledoit-Wolf shrunk covariance (the
  sample covariance of a few dozen 1024-d snippets is singular; shrinkage makes it invertible
  and well conditioned).
* ``knn`` - mean Euclidean distance to the ``k`` nearest reference snippets.

Features are L2-normalised first (I3D/CLIP magnitudes vary with scene brightness and motion
energy; direction carries the content). Each distance is divided by the
``calibration_quantile`` of the same distance measured on held-out reference snippets
(cross-fitted for the Gaussian, leave-one-out for kNN), so a score of 1.0 means "as unusual as
the top 1 % of the reference footage" and scores from different cameras are comparable.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from vad.fsutil import atomic_path, write_json_atomic
from vad.heads.base import Head, HeadError, HeadInput, HeadScores, StreamingScorer, UnitTiming, write_head_meta

logger = logging.getLogger(__name__)

METHODS = ("mahalanobis", "knn")


@dataclass
class ReferenceHeadConfig:
    k: int = 5
    shrinkage: str | float = "ledoit-wolf"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    calibration_quantile: float = 0.99
    normalize: bool = True
    folds: int = 5  # cross-fitting folds for calibrating the Gaussian distance

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"head methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0.0 < self.calibration_quantile <= 1.0:
            raise ValueError(f"calibration_quantile must be in (0, 1], got {self.calibration_quantile}")
        if isinstance(self.shrinkage, str):
            if self.shrinkage != "ledoit-wolf":
                raise ValueError(f"shrinkage must be 'ledoit-wolf' or a number in [0, 1], got {self.shrinkage!r}")
        elif not 0.0 <= float(self.shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage}")


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of ``x`` (n, p) towards ``mu * I``; returns (cov, shrinkage).

    Uses the closed form of Ledoit & Wolf (2004) with the sample covariance normalised by n.
    """
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    xc = x - x.mean(axis=0)
    cov = xc.T @ xc / n
    mu = np.trace(cov) / p
    cov_sq = float(np.sum(cov * cov))
    d2 = cov_sq - p * mu * mu  # ||S - mu I||_F^2
    # sum_k ||x_k x_k^T - S||_F^2 = sum_k ||x_k||^4 - n ||S||_F^2
    b2_bar = (float(np.sum(np.sum(xc * xc, axis=1) ** 2)) - n * cov_sq) / (n * n)
    shrink = 1.0 if d2 <= 0 else float(min(b2_bar, d2) / d2)
    shrunk = (1.0 - shrink) * cov
    shrunk[np.diag_indices(p)] += shrink * mu
    return shrunk, shrink


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _pairwise_sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


@dataclass
class _Gaussian:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D) inverse of the shrunk covariance

    @classmethod
    def fit(cls, x: np.ndarray, shrinkage: str | float) -> "_Gaussian":
        if isinstance(shrinkage, str):
            cov, _ = ledoit_wolf(x)
        else:
            xc = x - x.mean(0)
            emp = xc.T @ xc / len(x)
            mu = np.trace(emp) / emp.shape[0]
            cov = (1 - float(shrinkage)) * emp + float(shrinkage) * mu * np.eye(emp.shape[0])
        # A tiny ridge keeps the inverse finite when the reference is constant (mu == 0).
        cov[np.diag_indices_from(cov)] += 1e-9
        return cls(mean=x.mean(0), precision=np.linalg.inv(cov))

    def distance(self, x: np.ndarray) -> np.ndarray:
        diff = x - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", diff, self.precision, diff), 0.0))


class ReferenceHead:
    """The numpy model: fitted on reference snippet features (N, D), scores any (S, D).
    :class:`ReferenceFeatureHead` is the head contract around it."""

    def __init__(self, config: ReferenceHeadConfig | None = None) -> None:
        self.config = config or ReferenceHeadConfig()
        self._gaussian: _Gaussian | None = None
        self._bank: np.ndarray | None = None
        self.scales: dict[str, float] = {}
        self.n_reference = 0
        # Calibrated held-out score of each reference row (set by fit): how the reference itself
        # scores when it is not part of the model, comparable with scores of new footage.
        self.reference_scores: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self._bank is not None

    def _prep(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (snippets, dim), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        return _l2_normalize(x) if self.config.normalize else x

    def fit(self, reference: np.ndarray, groups: np.ndarray | None = None) -> "ReferenceHead":
        """Fit on reference rows (N, D). ``groups`` (N,) marks rows that are not independent
        (the crops of one snippet): held-out distances never use a row of the same group."""
        x = self._prep(reference)
        n = len(x)
        groups = np.arange(n) if groups is None else np.asarray(groups)
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} reference rows")
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise ValueError(f"need at least 2 reference snippets to model normality, got {n_groups}")
        cfg = self.config
        self._bank = x
        self.n_reference = n
        self.scales = {}
        held_out: dict[str, np.ndarray] = {}
        if "mahalanobis" in cfg.methods:
            self._gaussian = _Gaussian.fit(x, cfg.shrinkage)
            held_out["mahalanobis"] = self._cross_fitted_gaussian_distances(x, groups)
        if "knn" in cfg.methods:
            held_out["knn"] = self._knn_distance(x, exclude_groups=groups)
        self.scales = {m: self._scale(d) for m, d in held_out.items()}
        self.reference_scores = np.mean(
            [held_out[m] / self.scales[m] for m in cfg.methods], axis=0
        ).astype(np.float32)
        logger.info("reference head fitted on %d rows (%d groups); scales %s", n, n_groups, self.scales)
        return self

    def _cross_fitted_gaussian_distances(self, x: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Each row's distance under a Gaussian fitted without its fold (folds split by group)."""
        unique = np.unique(groups)
        folds = min(self.config.folds, len(unique))
        fold_of_group = {g: i % folds for i, g in enumerate(unique)}
        fold = np.array([fold_of_group[g] for g in groups])
        out = np.empty(len(x))
        for f in range(folds):
            test, train = fold == f, fold != f
            if train.sum() < 2:  # too few to refit: fall back to the in-sample model
                out[test] = self._gaussian.distance(x[test])
                continue
            out[test] = _Gaussian.fit(x[train], self.config.shrinkage).distance(x[test])
        return out

    def _scale(self, distances: np.ndarray) -> float:
        scale = float(np.quantile(distances, self.config.calibration_quantile))
        return scale if scale > 1e-12 else 1.0

    def _knn_distance(self, x: np.ndarray, exclude_groups: np.ndarray | None = None) -> np.ndarray:
        """Mean distance to the k nearest bank rows; with ``exclude_groups`` (x is the bank),
        rows of the same group are not neighbours (leave-one-group-out)."""
        assert self._bank is not None
        d = _pairwise_sq_dist(x, self._bank)
        available = self._bank.shape[0]
        if exclude_groups is not None:
            same = exclude_groups[:, None] == exclude_groups[None, :]
            d[same] = np.inf
            available -= int(same.sum(axis=1).max())
        k = max(1, min(self.config.k, available))
        nearest = np.partition(d, k - 1, axis=1)[:, :k]
        return np.sqrt(nearest).mean(axis=1)

    def distances(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Raw (uncalibrated) distance per method, each shaped (S,)."""
        if not self.fitted:
            raise RuntimeError("head is not fitted")
        x = self._prep(features)
        out = {}
        if "mahalanobis" in self.config.methods:
            out["mahalanobis"] = self._gaussian.distance(x)
        if "knn" in self.config.methods:
            out["knn"] = self._knn_distance(x)
        return out

    def score(self, features: np.ndarray) -> np.ndarray:
        """Calibrated anomaly score per snippet (S,), float32: 1.0 = reference's calibration quantile."""
        dists = self.distances(features)
        calibrated = [dists[m] / self.scales[m] for m in self.config.methods]
        return np.mean(calibrated, axis=0).astype(np.float32)

    # -- persistence: safetensors for arrays (no code execution on load), JSON for the rest --
    def save(self, directory: str | Path) -> Path:
        if not self.fitted:
            raise RuntimeError("cannot save an unfitted head")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"bank": self._bank}
        if self._gaussian is not None:
            tensors["mean"] = self._gaussian.mean
            tensors["precision"] = self._gaussian.precision
        with atomic_path(directory / "head.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
        write_json_atomic(
            directory / "head.json",
            {"type": "reference", "config": asdict(self.config), "scales": self.scales,
             "n_reference": self.n_reference},
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ReferenceHead":
        directory = Path(directory)
        meta_path, weights_path = directory / "head.json", directory / "head.safetensors"
        if not meta_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(f"{directory} is not a saved head (needs head.json and head.safetensors)")
        meta = json.loads(meta_path.read_text())
        if meta.get("type") != "reference":
            raise ValueError(f"{directory}: head type {meta.get('type')!r} is not 'reference'")
        head = cls(ReferenceHeadConfig(**meta["config"]))
        tensors = load_file(str(weights_path))
        head._bank = tensors["bank"]
        if "mean" in tensors:
            head._gaussian = _Gaussian(mean=tensors["mean"], precision=tensors["precision"])
        head.scales = {k: float(v) for k, v in meta["scales"].items()}
        head.n_reference = int(meta["n_reference"])
        return head


@dataclass(frozen=True)
class SelfReference:
    """How an unfitted reference head takes its reference from each video's own start."""

    fraction: float = 0.25  # share of the video's snippets
    seconds: float | None = None  # seconds of the video's start (overrides the fraction)
    min_snippets: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"reference_fraction must be in (0, 1], got {self.fraction}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"reference_seconds must be positive, got {self.seconds}")
        if self.min_snippets < 2:
            raise ValueError("min_reference_snippets must be >= 2")

    def wanted(self, timing: UnitTiming, n_units: int | None) -> int:
        """Leading units that form the reference (before capping at the video's length)."""
        if self.seconds is not None:
            wanted = math.ceil(self.seconds * timing.fps / timing.stride)
        elif n_units is None:
            raise HeadError("a stream of unknown length needs head.reference_seconds (or a fitted head) "
                            "to take its reference from its own start")
        else:
            wanted = math.ceil(self.fraction * n_units)
        return max(self.min_snippets, wanted)

    def count(self, n_units: int, timing: UnitTiming) -> int:
        return min(n_units, self.wanted(timing, n_units))

    def frames(self, fps: float, n_frames: int | None, minimum: int) -> int:
        """Leading frames of a video (``n_frames``, None: a stream) that form its own reference
        for a frames head that needs at least ``minimum`` of them."""
        n = max(self.wanted(UnitTiming(fps, 1), n_frames), minimum)
        return n if n_frames is None else min(n, n_frames)


def _too_short(n: int) -> HeadError:
    return HeadError(f"only {n} snippet(s): too short to model normality from the video itself "
                     "(give --reference footage of this camera)")


def _crop_groups(n_crops: int, n_units: int) -> np.ndarray:
    # Rows are crop-major; the crops of one snippet form a group (not independent samples).
    return np.tile(np.arange(n_units), n_crops)


def _mean_over_crops(model: ReferenceHead, units: np.ndarray) -> np.ndarray:
    return np.mean([model.score(units[c]) for c in range(units.shape[0])], axis=0)


@dataclass
class _Fit:
    model: ReferenceHead
    scores: np.ndarray  # held-out scores of the reference units, averaged over crops


def _self_fit(config: ReferenceHeadConfig, reference: np.ndarray) -> _Fit:
    n_crops, n_ref, dim = reference.shape
    model = ReferenceHead(config).fit(reference.reshape(-1, dim), _crop_groups(n_crops, n_ref))
    return _Fit(model, model.reference_scores.reshape(n_crops, n_ref).mean(axis=0))


class ReferenceFeatureHead(Head):
    """The label-free head: normality of this camera's footage, from reference snippets.

    Fitted (``fit`` on reference footage, or a saved head) it scores every snippet against
    that reference. Unfitted, it fits itself on each video's first snippets
    (:class:`SelfReference`) and scores that reference part held-out, as if it were new
    footage, so the curve has no artificial step where the reference ends; a stream's scorer
    holds back scores until it has seen its reference part.
    """

    type_name = "reference"

    def __init__(self, config: ReferenceHeadConfig | None = None, self_reference: SelfReference | None = None,
                 *, model: ReferenceHead | None = None, extractor: str | None = None) -> None:
        self.config = config or ReferenceHeadConfig()
        self.self_reference = self_reference or SelfReference()
        self.model = model
        self.extractor = extractor

    @property
    def input(self) -> HeadInput:
        dim = int(self.model._bank.shape[1]) if self.fitted else None
        return HeadInput("features", extractor=self.extractor, dim=dim)

    @property
    def needs_fit(self) -> bool:
        return True

    @property
    def fitted(self) -> bool:
        return self.model is not None and self.model.fitted

    def fit(self, reference: np.ndarray) -> ReferenceFeatureHead:
        """Fit on reference units (n_crops, n, dim) or a list of such arrays (several videos);
        crops of one snippet are one group, so held-out calibration never sees their twins."""
        parts = [reference] if isinstance(reference, np.ndarray) else list(reference)
        rows, groups, offset = [], [], 0
        for part in parts:
            n_crops, n, dim = part.shape
            rows.append(part.reshape(-1, dim))
            groups.append(_crop_groups(n_crops, n) + offset)
            offset += n
        self.model = ReferenceHead(self.config).fit(np.concatenate(rows), np.concatenate(groups))
        return self

    def score_video(self, units: np.ndarray, timing: UnitTiming) -> HeadScores:
        units = np.asarray(units)
        if units.ndim != 3:
            raise HeadError(f"features must be (crops, snippets, dim), got shape {units.shape}")
        if self.fitted:
            self.input.check_features(units.shape[2])
            return HeadScores(_mean_over_crops(self.model, units))
        n_units = units.shape[1]
        n_ref = self.self_reference.count(n_units, timing)
        if n_ref < 2:
            raise _too_short(n_units)
        fitted = _self_fit(self.config, units[:, :n_ref])
        scores = _mean_over_crops(fitted.model, units)
        scores[:n_ref] = fitted.scores
        return HeadScores(scores, reference_units=n_ref)

    def stream(self, timing: UnitTiming, n_units: int | None = None) -> StreamingScorer:
        return _ReferenceScorer(self, timing, n_units)

    def save(self, directory: str | Path) -> Path:
        if not self.fitted:
            raise HeadError("cannot save a reference head that has not been fitted on reference footage")
        directory = self.model.save(directory)
        meta = self.meta(asdict(self.config), scales=self.model.scales, n_reference=self.model.n_reference)
        write_head_meta(directory, meta)
        return directory

    @classmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any], device: str = "cpu") -> ReferenceFeatureHead:
        model = ReferenceHead.load(directory)
        extractor = (meta.get("consumes") or {}).get("extractor")
        return cls(model.config, model=model, extractor=extractor)


class _ReferenceScorer(StreamingScorer):
    def __init__(self, head: ReferenceFeatureHead, timing: UnitTiming, n_units: int | None) -> None:
        self.head, self.timing, self.n_units = head, timing, n_units
        self.reset()

    def reset(self) -> None:
        self._model = self.head.model if self.head.fitted else None
        self._pending: list[np.ndarray] = []  # the reference part, until it is complete
        self._n_ref = None if self._model is not None else self.head.self_reference.wanted(self.timing, self.n_units)
        if self._n_ref is not None and self.n_units is not None:
            self._n_ref = min(self._n_ref, self.n_units)

    def _fit_pending(self) -> np.ndarray:
        if len(self._pending) < 2:
            raise _too_short(len(self._pending))
        fitted = _self_fit(self.head.config, np.stack(self._pending, axis=1))
        self._model, self._pending = fitted.model, []
        return fitted.scores.astype(np.float32)

    def update(self, unit: np.ndarray) -> np.ndarray:
        unit = np.asarray(unit)
        if unit.ndim == 1:
            unit = unit[None]
        if self._model is not None:
            return _mean_over_crops(self._model, unit[:, None, :]).astype(np.float32)
        self._pending.append(unit)
        if len(self._pending) < self._n_ref:
            return np.zeros(0, np.float32)
        return self._fit_pending()

    def finish(self) -> np.ndarray:
        if self._model is not None or not self._pending:
            return np.zeros(0, np.float32)
        return self._fit_pending()  # the source ended inside its reference part
