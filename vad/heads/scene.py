"""The label-free default head: per-camera motion and appearance statistics, per region.

It needs no labels and no training, only normal footage of the camera (``--reference``, or each
video's own start), and fits in seconds on a CPU. Two channels, each calibrated so that 1.0 is
the ``calibration_quantile`` (0.99) of the channel on held-out reference footage; the frame's
score is the larger of the two, and every frame also gets the region that decided it.

* **speed** -- how fast the fastest things move, relative to how fast things move *at that
  height in the picture* in the reference. Dense optical flow (Farneback) between consecutive
  frames at ``short_side`` px; pixels moving more than ``moving_px`` px/frame are divided by
  the reference's ``row_quantile`` (0.95) of moving speeds in their band of rows (perspective:
  far walkers move fewer pixels); the frame statistic is the ``speed_quantile`` (0.9) of these
  ratios, averaged causally over ``speed_window`` frames. Unlike frame differencing it does not
  grow with the number of people, and it sees one runner among walkers.
* **static** -- something that is not normally there and does not move: per grid cell, the
  distance of the cell's appearance (mean colour of ``subcells`` x ``subcells`` sub-cells,
  after the frame's exposure gain is divided out) to its nearest neighbour among the reference
  appearances *of the same cell*, divided by that cell's held-out quantile, counted only while
  the cell is still (its mean frame difference stayed below ``still_factor`` times the
  reference's median over the last ``still_frames`` frames). Walkers passing through a cell
  are not still; a parked vehicle, a dropped object or a closed gate is, so it scores for as
  long as it stays, where frame differencing only sees its arrival.

Held-out calibration: the reference frames are split into ``folds`` contiguous blocks and each
block's appearance distances are measured against the others'; the speed statistic is measured
on every reference frame. Memory stays bounded for any reference length (a seeded reservoir of
at most ``max_bank`` reference frames). Causal, no look-ahead: it streams frame by frame.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np

from vad.fsutil import atomic_path
from vad.heads.base import Head, HeadError, HeadInput, HeadScores, StreamingScorer, UnitTiming, write_head_meta

logger = logging.getLogger(__name__)

__all__ = ["CHANNELS", "SceneConfig", "SceneHead", "SceneFeaturizer", "FrameStats"]

CHANNELS = ("speed", "static")
# Farneback parameters (pyramid scale, levels, window, iterations, poly_n, poly_sigma): OpenCV's
# documented "typical" values; 3 levels follow a walker's 1-12 px per frame at 144 px.
FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)
_SPEED_SAMPLE = 2048  # moving pixels kept per reference frame for the speed calibration


@dataclass(frozen=True)
class SceneConfig:
    """Parameters of the scene head (``head.scene`` in the score config); see the module doc."""

    short_side: int = 144  # analysis size: frames are resized so their short side is this
    grid: tuple[int, int] = (16, 12)  # (columns, rows) of cells over the whole frame
    subcells: int = 2  # appearance: mean colour of subcells x subcells per cell
    moving_px: float = 0.5  # flow (px/frame at short_side) above which a pixel moves
    row_quantile: float = 0.95  # reference speed per band of rows: this quantile of moving pixels
    speed_quantile: float = 0.9  # frame statistic: this quantile of speed ratios of moving pixels
    min_moving_px: int = 30  # fewer moving pixels: the speed channel says 0
    speed_window: int = 3  # causal mean of the speed statistic over this many frames
    still_factor: float = 3.0  # a cell is still while its frame difference < this x reference median
    still_frames: int = 3  # ... over the last this many frames
    still_stat: str = "peak"  # cell motion for stillness: peak (largest local change) | mean
    bank_stride: int = 2  # every k-th reference frame enters the appearance bank
    max_bank: int = 1500  # at most this many reference frames are kept (seeded reservoir)
    folds: int = 4  # held-out calibration blocks
    calibration_quantile: float = 0.99
    channels: tuple[str, ...] = CHANNELS
    min_reference_frames: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if self.short_side < 32:
            raise HeadError(f"scene.short_side must be >= 32, got {self.short_side}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise HeadError(f"scene.grid must be [columns, rows] >= 1, got {self.grid}")
        if self.grid[0] * self.subcells > self.short_side * 4 or self.grid[1] * self.subcells > self.short_side:
            raise HeadError(f"scene.grid {self.grid} x subcells {self.subcells} is finer than the "
                            f"{self.short_side} px analysis size")
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or not self.channels:
            raise HeadError(f"scene.channels must be a non-empty subset of {CHANNELS}, got {list(self.channels)}")
        for name in ("row_quantile", "speed_quantile", "calibration_quantile"):
            if not 0 < getattr(self, name) <= 1:
                raise HeadError(f"scene.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("subcells", "speed_window", "still_frames", "bank_stride", "folds", "min_reference_frames"):
            if getattr(self, name) < 1:
                raise HeadError(f"scene.{name} must be >= 1, got {getattr(self, name)}")
        if self.folds < 2:
            raise HeadError("scene.folds must be >= 2 (held-out calibration)")
        if self.max_bank < 2 * self.folds:
            raise HeadError(f"scene.max_bank must be >= {2 * self.folds}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SceneConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HeadError(f"unknown head.scene key(s) {unknown}; known: {sorted(known)}")
        for key in ("grid", "channels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @property
    def n_cells(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class FrameStats:
    """What one frame contributes: flow speed (h, w), per cell: appearance (cells, D), luma
    (cells,), mean frame difference (cells,) and its largest value over the last
    ``still_frames`` frames (cells,)."""

    flow: np.ndarray
    appearance: np.ndarray
    luma: np.ndarray
    motion: np.ndarray
    recent_motion: np.ndarray


class SceneFeaturizer:
    """Frames in order -> :class:`FrameStats` (stateful: flow and motion need the last frames).

    ``size``: (width, height) to analyse at; None takes it from the first frame (short side
    ``cfg.short_side``). The first frame after a start or :meth:`reset` has no motion (zeros)."""

    def __init__(self, cfg: SceneConfig, size: tuple[int, int] | None = None) -> None:
        self.cfg = cfg
        self.size = size
        self.reset()

    def reset(self) -> None:
        self._prev: np.ndarray | None = None
        self._motion: deque[np.ndarray] = deque(maxlen=self.cfg.still_frames)

    def size_for(self, frame: np.ndarray) -> tuple[int, int]:
        h, w = frame.shape[:2]
        s = self.cfg.short_side / min(h, w)
        return max(self.cfg.grid[0] * self.cfg.subcells, int(round(w * s))), max(
            self.cfg.grid[1] * self.cfg.subcells, int(round(h * s)))

    def push(self, frame: np.ndarray) -> FrameStats:
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=-1)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise HeadError(f"expected a uint8 RGB frame (H, W, 3), got {frame.shape} {frame.dtype}")
        if self.size is None:
            self.size = self.size_for(frame)
        w, h = self.size
        small = frame if frame.shape[:2] == (h, w) else cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        cols, rows = self.cfg.grid
        if self._prev is None:  # no motion known yet: nothing moves, and nothing counts as still
            flow = np.zeros((h, w), np.float32)
            motion = np.full(rows * cols, np.inf, np.float32)
        else:
            f = cv2.calcOpticalFlowFarneback(self._prev, grey, None, *FARNEBACK_PARAMS)
            flow = cv2.magnitude(f[..., 0], f[..., 1])
            diff = cv2.absdiff(grey, self._prev).astype(np.float32)
            if self.cfg.still_stat == "peak":
                # the largest local (4x4-averaged) change in the cell: a person standing still
                # still moves somewhere (a hand, the head); a parked object only shows noise
                fine = cv2.resize(diff, (cols * 4, rows * 4), interpolation=cv2.INTER_AREA)
                motion = fine.reshape(rows, 4, cols, 4).max(axis=(1, 3)).reshape(-1)
            else:
                motion = cv2.resize(diff, (cols, rows), interpolation=cv2.INTER_AREA).reshape(-1)
        self._prev = grey
        self._motion.append(motion)
        sub = self.cfg.subcells
        colour = cv2.resize(small.astype(np.float32), (cols * sub, rows * sub), interpolation=cv2.INTER_AREA)
        appearance = colour.reshape(rows, sub, cols, sub, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, -1)
        luma = appearance.mean(axis=1)
        return FrameStats(flow, appearance, luma, motion, np.max(np.stack(self._motion), axis=0))


def _band_of_rows(height: int, bands: int) -> np.ndarray:
    return (np.arange(height) * bands // height).astype(np.intp)


@dataclass
class _Record:
    """One reference frame kept for fitting."""

    order: int  # position in the reference (for contiguous folds)
    appearance: np.ndarray  # (cells, D)
    luma: np.ndarray  # (cells,)
    recent_motion: np.ndarray  # (cells,)
    speeds: np.ndarray  # (k,) float16 moving-pixel speeds
    bands: np.ndarray  # (k,) uint8 their band of rows


@dataclass
class SceneModel:
    """The fitted arrays (saved in ``head.safetensors``)."""

    size: tuple[int, int]  # (width, height) analysed
    band_speed: np.ndarray  # (bands,) reference speed per band of rows
    bank: np.ndarray  # (cells, N, D) reference appearances, exposure-normalised
    ref_luma: np.ndarray  # (cells,) median luma of the reference per cell
    cell_scale: np.ndarray  # (cells,) held-out appearance-distance quantile per cell
    motion_noise: float  # median cell frame difference of the reference
    speed_scale: float  # frame-level calibration of each channel
    static_scale: float
    n_reference_frames: int = 0

    def arrays(self) -> dict[str, np.ndarray]:
        return {"band_speed": self.band_speed, "bank": self.bank, "ref_luma": self.ref_luma,
                "cell_scale": self.cell_scale}


class SceneHead(Head):
    """See the module docstring. Unfitted, it fits itself on each video's start (``policy``)."""

    type_name = "scene"

    def __init__(self, cfg: SceneConfig | None = None, policy: Any = None, model: SceneModel | None = None) -> None:
        self.cfg = cfg or SceneConfig()
        self.policy = policy  # vad.heads.reference.SelfReference, for unfitted use
        self.model = model
        self._warned: set[tuple[int, int]] = set()
        if model is not None:
            self._prepare_model()

    # -- contract ------------------------------------------------------------------------------
    @property
    def input(self) -> HeadInput:
        size = self.model.size if self.model else None
        return HeadInput("frames", clip_length=1, size=size, color="rgb")

    @property
    def needs_fit(self) -> bool:
        return True

    @property
    def fitted(self) -> bool:
        return self.model is not None

    # -- fitting -------------------------------------------------------------------------------
    def fit_frames(self, videos: Iterable[Iterable[np.ndarray]]) -> SceneHead:
        """Fit on normal footage: ``videos`` yields, per reference video, its blocks of uint8
        RGB frames (N, H, W, 3) in order. Returns self."""
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        kept: list[_Record] = []
        seen = 0  # frames offered to the reservoir
        n_frames = 0
        size: tuple[int, int] | None = self.model.size if self.model else None
        motions: list[np.ndarray] = []  # a sample of cell motions, for the noise level
        for blocks in videos:
            feat = SceneFeaturizer(cfg, size)
            first = True
            for block in blocks:
                for frame in np.asarray(block):
                    if size is not None:
                        self._check_size(frame, size)
                    stats = feat.push(frame)
                    size = feat.size
                    n_frames += 1
                    if first:  # no motion yet: neither still nor moving
                        first = False
                        continue
                    if (len(motions) < 4096 or rng.random() < 0.05) and np.isfinite(stats.recent_motion).all():
                        motions.append(stats.motion)
                    if (n_frames - 1) % cfg.bank_stride:
                        continue
                    moving = stats.flow > cfg.moving_px
                    speeds = stats.flow[moving]
                    bands = np.broadcast_to(_band_of_rows(stats.flow.shape[0], cfg.grid[1])[:, None],
                                            stats.flow.shape)[moving]
                    if len(speeds) > _SPEED_SAMPLE:
                        pick = rng.choice(len(speeds), _SPEED_SAMPLE, replace=False)
                        speeds, bands = speeds[pick], bands[pick]
                    rec = _Record(seen, stats.appearance, stats.luma, stats.recent_motion,
                                  speeds.astype(np.float16), bands.astype(np.uint8))
                    seen += 1
                    if len(kept) < cfg.max_bank:
                        kept.append(rec)
                    else:  # reservoir: every offered frame equally likely to stay
                        j = int(rng.integers(seen))
                        if j < cfg.max_bank:
                            kept[j] = rec
        if n_frames < cfg.min_reference_frames or len(kept) < 2 * cfg.folds:
            raise HeadError(f"the reference has {n_frames} frame(s); the scene head needs at least "
                            f"{max(cfg.min_reference_frames, 2 * cfg.folds * cfg.bank_stride + 1)} frames of normal "
                            "footage (give longer --reference footage, or a longer video)")
        assert size is not None
        kept.sort(key=lambda r: r.order)
        self.model = self._fit(kept, size, np.stack(motions), n_frames)
        self._prepare_model()
        logger.info("scene head fitted on %d reference frames (%d kept): speed scale %.3g, static scale %.3g",
                    n_frames, len(kept), self.model.speed_scale, self.model.static_scale)
        return self

    def _fit(self, kept: list[_Record], size: tuple[int, int], motions: np.ndarray, n_frames: int) -> SceneModel:
        cfg = self.cfg
        bands = cfg.grid[1]
        # speed per band of rows, at least the overall median; bands the reference rarely saw
        # move take the overall quantile (a walker where none walked is not fast for that)
        all_speeds = np.concatenate([r.speeds for r in kept]).astype(np.float32)
        all_bands = np.concatenate([r.bands for r in kept])
        floor = max(float(np.median(all_speeds)) if len(all_speeds) else 1.0, cfg.moving_px)
        overall = max(float(np.quantile(all_speeds, cfg.row_quantile)) if len(all_speeds) else 1.0, floor)
        band_speed = np.full(bands, overall, np.float32)
        for b in range(bands):
            s = all_speeds[all_bands == b]
            if len(s) >= 200:
                band_speed[b] = max(float(np.quantile(s, cfg.row_quantile)), floor)
        motion_noise = max(float(np.median(motions)), 1e-3)
        # exposure: per-frame gain against the reference's median luma per cell
        lumas = np.stack([r.luma for r in kept])
        ref_luma = np.maximum(np.median(lumas, axis=0), 1.0).astype(np.float32)
        apps = np.stack([r.appearance for r in kept])  # (N, cells, D)
        gains = self._gain(lumas, ref_luma)
        apps = apps / gains[:, None, None]
        still = np.stack([r.recent_motion for r in kept]) < cfg.still_factor * motion_noise  # (N, cells)
        # held-out appearance distances: contiguous folds against the rest
        folds = np.arange(len(kept)) * cfg.folds // len(kept)
        held = np.empty(still.shape, np.float32)
        for k in range(cfg.folds):
            inside = folds == k
            bank = apps[~inside].transpose(1, 0, 2).astype(np.float64)
            held[inside] = _nearest(apps[inside].transpose(1, 0, 2), bank, (bank ** 2).sum(-1)).T
        static = held * still
        q = cfg.calibration_quantile
        cell_scale = np.maximum(np.quantile(static, q, axis=0), max(float(np.quantile(static, q)), 1e-3))
        static_frame = (static / cell_scale).max(axis=1)
        speed_frame = np.array([self._speed_stat(r.speeds.astype(np.float32) / band_speed[r.bands]) for r in kept])
        speed_frame = _causal_mean(speed_frame, cfg.speed_window)
        return SceneModel(
            size=size, band_speed=band_speed, bank=apps.transpose(1, 0, 2).astype(np.float32).copy(),
            ref_luma=ref_luma, cell_scale=cell_scale.astype(np.float32), motion_noise=motion_noise,
            speed_scale=max(float(np.quantile(speed_frame, q)), 1e-3),
            static_scale=max(float(np.quantile(static_frame, q)), 1e-3), n_reference_frames=n_frames)

    def _prepare_model(self) -> None:
        m = self.model
        assert m is not None
        self._bank = m.bank.astype(np.float64)
        self._bank_sq = (self._bank ** 2).sum(-1)  # (cells, N)
        self._band_map = m.band_speed[_band_of_rows(m.size[1], self.cfg.grid[1])][:, None]  # (h, 1)

    @staticmethod
    def _gain(lumas: np.ndarray, ref_luma: np.ndarray) -> np.ndarray:
        """(N, cells) luma -> (N,) exposure gain (median ratio over cells: robust to movers)."""
        return np.clip(np.median(lumas / ref_luma, axis=-1), 0.2, 5.0).astype(np.float32)

    def _speed_stat(self, ratios: np.ndarray) -> float:
        if len(ratios) < self.cfg.min_moving_px:
            return 0.0
        return float(np.quantile(ratios, self.cfg.speed_quantile))

    def _check_size(self, frame: np.ndarray, size: tuple[int, int]) -> None:
        h, w = frame.shape[:2]
        if abs(w / h - size[0] / size[1]) > 0.02 and (w, h) not in self._warned:
            self._warned.add((w, h))
            logger.warning("frames are %dx%d, a different shape from the reference footage (%dx%d at analysis "
                           "size): resizing; regions are approximate", w, h, *size)

    # -- scoring -------------------------------------------------------------------------------
    def self_fitted(self, blocks: Iterable[np.ndarray]) -> SceneHead:
        """A fitted copy, fitted on ``blocks`` (a video's own start)."""
        return self.self_fitted_pieces([blocks])

    def self_fitted_pieces(self, pieces: Iterable[Iterable[np.ndarray]]) -> SceneHead:
        """A fitted copy, fitted on several pieces of footage (a stream's start, split at gaps)."""
        return SceneHead(self.cfg, self.policy).fit_frames(pieces)

    def reference_frames(self, n_frames: int | None, fps: float) -> int:
        """Leading frames of a video that form its own reference (unfitted use)."""
        if self.policy is None:
            raise HeadError("the scene head is not fitted: give --reference footage of this camera")
        return self.policy.frames(fps, n_frames, self.cfg.min_reference_frames)

    def scorer(self) -> _SceneScorer:
        if self.model is None:
            raise HeadError("the scene head is not fitted (give --reference footage or fit it on the video's start)")
        return _SceneScorer(self)

    def score_frame_blocks(self, blocks: Iterable[np.ndarray]) -> HeadScores:
        scorer = self.scorer()
        scores, regions, channels = [], [], []
        for block in blocks:
            block = np.asarray(block)
            if len(block):
                s, r, c = scorer.score_block(block)
                scores.append(s)
                regions.append(r)
                channels.append(c)
        if not scores:
            raise HeadError("no frames to score")
        return HeadScores(np.concatenate(scores), regions=np.concatenate(regions),
                          channels=np.concatenate(channels), channel_names=CHANNELS)

    def score_frames(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        return self.score_frame_blocks(blocks).scores

    def score_video(self, units: np.ndarray, timing: UnitTiming) -> HeadScores:
        return self.score_frame_blocks([np.asarray(units)])

    def stream(self, timing: UnitTiming, n_units: int | None = None) -> StreamingScorer:
        return self.scorer()

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.numpy import save_file

        if self.model is None:
            raise HeadError("an unfitted scene head has nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "head.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.model.arrays().items()}, str(tmp))
        m = self.model
        cfg = asdict(self.cfg)
        cfg["grid"], cfg["channels"] = list(self.cfg.grid), list(self.cfg.channels)
        write_head_meta(directory, self.meta(cfg, model={
            "size": list(m.size), "motion_noise": m.motion_noise, "speed_scale": m.speed_scale,
            "static_scale": m.static_scale, "n_reference_frames": m.n_reference_frames}))
        return directory

    @classmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any], device: str = "cpu") -> SceneHead:
        from safetensors.numpy import load_file

        arrays = load_file(str(directory / "head.safetensors"))
        info = meta["model"]
        model = SceneModel(size=tuple(info["size"]), motion_noise=float(info["motion_noise"]),
                           speed_scale=float(info["speed_scale"]), static_scale=float(info["static_scale"]),
                           n_reference_frames=int(info.get("n_reference_frames", 0)), **arrays)
        return cls(SceneConfig.from_dict(meta["config"]), model=model)


def _nearest(queries: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray) -> np.ndarray:
    """Per cell: distance of each query to its nearest bank entry. queries (cells, M, D), bank
    (cells, N, D), bank_sq (cells, N) -> (cells, M)."""
    # float64: |q|^2 + |b|^2 - 2 q.b cancels badly in float32 for near neighbours (0-255 colours)
    q = queries.astype(np.float64)
    d2 = (q ** 2).sum(-1)[..., None] + bank_sq[:, None, :] - 2.0 * np.matmul(q, bank.transpose(0, 2, 1))
    return np.sqrt(np.maximum(d2.min(axis=-1), 0.0)).astype(np.float32)


def _causal_mean(x: np.ndarray, k: int) -> np.ndarray:
    c = np.cumsum(np.r_[0.0, x])
    i = np.arange(len(x))
    lo = np.maximum(0, i - k + 1)
    return ((c[i + 1] - c[lo]) / (i + 1 - lo)).astype(np.float32)


def _cells_box(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1 in [0, 1]) of the True cells of a (cells,) mask."""
    cols, rows = grid
    idx = np.flatnonzero(mask)
    r, c = idx // cols, idx % cols
    return np.array([c.min() / cols, r.min() / rows, (c.max() + 1) / cols, (r.max() + 1) / rows], np.float32)


class _SceneScorer(StreamingScorer):
    """Frame by frame (``update``) or block by block (``score_block``); causal."""

    def __init__(self, head: SceneHead) -> None:
        self.head = head
        self.reset()

    def reset(self) -> None:
        self.featurizer = SceneFeaturizer(self.head.cfg, self.head.model.size)
        self._recent_speed: deque[float] = deque(maxlen=self.head.cfg.speed_window)
        self.last_regions = np.zeros((0, 4), np.float32)
        self.last_channels = np.zeros(0, np.int8)

    def score_block(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, H, W, 3) uint8 -> scores (N,), regions (N, 4) (NaN: nowhere), winning channel
        index into :data:`CHANNELS` (N,)."""
        head, cfg, m = self.head, self.head.cfg, self.head.model
        stats = []
        for f in frames:
            head._check_size(f, m.size)
            stats.append(self.featurizer.push(f))
        n = len(stats)
        speed = np.zeros(n, np.float32)
        speed_box = np.full((n, 4), np.nan, np.float32)
        if "speed" in cfg.channels:
            for i, s in enumerate(stats):
                ratio = s.flow / head._band_map
                moving = s.flow > cfg.moving_px
                stat = head._speed_stat(ratio[moving])
                self._recent_speed.append(stat)
                speed[i] = sum(self._recent_speed) / len(self._recent_speed) / m.speed_scale
                if stat > 0:
                    fast = (ratio >= stat) & moving
                    per_cell = cv2.resize(fast.astype(np.float32), cfg.grid, interpolation=cv2.INTER_AREA).reshape(-1)
                    best = int(np.argmax(per_cell))
                    near = np.zeros_like(per_cell, bool)
                    r, c = divmod(best, cfg.grid[0])
                    for dr in (-1, 0, 1):
                        for dc in (-1, 0, 1):
                            rr, cc = r + dr, c + dc
                            if 0 <= rr < cfg.grid[1] and 0 <= cc < cfg.grid[0] and per_cell[rr * cfg.grid[0] + cc] > 0:
                                near[rr * cfg.grid[0] + cc] = True
                    speed_box[i] = _cells_box(near, cfg.grid)
        static = np.zeros(n, np.float32)
        static_box = np.full((n, 4), np.nan, np.float32)
        if "static" in cfg.channels:
            apps = np.stack([s.appearance for s in stats])  # (n, cells, D)
            gains = head._gain(np.stack([s.luma for s in stats]), m.ref_luma)
            dist = _nearest((apps / gains[:, None, None]).transpose(1, 0, 2), head._bank, head._bank_sq).T  # (n, cells)
            still = np.stack([s.recent_motion for s in stats]) < cfg.still_factor * m.motion_noise
            cell = dist * still / m.cell_scale
            static = cell.max(axis=1) / m.static_scale
            for i in range(n):
                if static[i] > 0:
                    static_box[i] = _cells_box(cell[i] >= 0.5 * cell[i].max(), cfg.grid)
        channel = (static > speed).astype(np.int8)
        scores = np.maximum(speed, static).astype(np.float32)
        regions = np.where(channel[:, None] == 1, static_box, speed_box)
        self.last_regions, self.last_channels = regions, channel
        return scores, regions, channel

    def update(self, unit: np.ndarray) -> np.ndarray:
        return self.score_block(np.asarray(unit)[None])[0]

    def finish(self) -> np.ndarray:
        return np.zeros(0, np.float32)


def scene_head_from_config(scene: dict[str, Any] | None, calibration_quantile: float | None = None,
                           policy: Any = None) -> SceneHead:
    """The configured (unfitted) scene head; ``calibration_quantile`` from ``head:``."""
    d = dict(scene or {})
    if calibration_quantile is not None:
        d.setdefault("calibration_quantile", calibration_quantile)
    return SceneHead(SceneConfig.from_dict(d), policy)


def iter_blocks(frames: Sequence[np.ndarray] | np.ndarray, block: int = 64) -> Iterator[np.ndarray]:
    """A frame array as blocks (tests and scripts)."""
    for a in range(0, len(frames), block):
        yield np.asarray(frames[a:a + block])

