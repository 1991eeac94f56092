"""The CT-D2GAN frame-prediction head: raw frames in, one anomaly score per frame out.

Frame ``t`` is predicted from frames ``t - T .. t - 1`` (``T = past_frames``); the score is the
prediction error. The first ``T`` frames have no prediction and take the first computed score.

Two score modes (``score_mode``):

* ``calibrated`` (default; causal, streams): the mean squared prediction error divided by the
  ``calibration_quantile`` (0.99) of the same error on held-out normal training footage, so
  1.0 means "as badly predicted as the worst 1 % of normal footage", like the reference head.
* ``minmax`` (the one-class literature's protocol, for benchmark parity): per video,
  ``1 - (PSNR - min) / (max - min)``; it needs the whole video, so it does not stream.

Frames are resized to the trained ``size`` (with a warning once when the video's size differs
from the training footage's) and converted to grey for ``channels=1``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from vad.fsutil import atomic_path
from vad.heads.base import Head, HeadError, HeadInput, HeadScores, StreamingScorer, UnitTiming, write_head_meta
from vad.heads.ctd2gan import ConvTransformerGenerator, CTD2GANConfig, psnr

logger = logging.getLogger(__name__)

__all__ = ["SCORE_MODES", "FramePredictionHead", "prepare_frames"]

SCORE_MODES = ("calibrated", "minmax")


def prepare_frames(frames: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """uint8 RGB frames (N, H, W, 3) -> float32 (N, C, size, size) in [-1, 1]."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise HeadError(f"expected uint8 RGB frames (N, H, W, 3), got {frames.shape} {frames.dtype}")
    out = np.empty((len(frames), channels, size, size), np.float32)
    for i, f in enumerate(frames):
        if f.shape[:2] != (size, size):
            f = cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
        if channels == 1:
            out[i, 0] = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        else:
            out[i] = f.transpose(2, 0, 1)
    return torch.from_numpy(out).div_(127.5).sub_(1.0)


class FramePredictionHead(Head):
    """A trained CT-D2GAN generator as a head (``vad train --head ctd2gan``)."""

    type_name = "ctd2gan"

    def __init__(self, generator: ConvTransformerGenerator, *, scale: float | None = None,
                 score_mode: str = "calibrated", calibration_quantile: float = 0.99,
                 train_size: tuple[int, int] | None = None, batch_size: int = 16,
                 error_patch: int = 0, extra: dict[str, Any] | None = None) -> None:
        if score_mode not in SCORE_MODES:
            raise HeadError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
        if score_mode == "calibrated" and not scale:
            raise HeadError("score_mode calibrated needs a calibration scale (train the head on normal footage)")
        self.generator = generator.eval()
        self.config: CTD2GANConfig = generator.cfg
        self.scale = scale
        self.score_mode = score_mode
        self.calibration_quantile = calibration_quantile
        self.train_size = train_size  # (width, height) of the training footage, for the warning
        self.batch_size = batch_size
        if error_patch < 0 or error_patch > generator.cfg.size:
            raise HeadError(f"error_patch must be in [0, {generator.cfg.size}], got {error_patch}")
        self.error_patch = error_patch
        self.extra = dict(extra or {})
        self._warned: set[tuple[int, int]] = set()

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def input(self) -> HeadInput:
        c = self.config
        return HeadInput("frames", clip_length=c.past_frames + 1, size=(c.size, c.size),
                         color="gray" if c.channels == 1 else "rgb")

    @property
    def lookahead(self) -> int:
        """0: causal; -1: the whole video (per-video min-max)."""
        return 0 if self.score_mode == "calibrated" else -1

    @property
    def causal(self) -> bool:
        return self.score_mode == "calibrated"

    def with_score_mode(self, score_mode: str) -> FramePredictionHead:
        """The same generator scoring in ``score_mode``."""
        return FramePredictionHead(self.generator, scale=self.scale, score_mode=score_mode,
                                   calibration_quantile=self.calibration_quantile, train_size=self.train_size,
                                   batch_size=self.batch_size, error_patch=self.error_patch, extra=self.extra)

    # -- scoring -----------------------------------------------------------------------------
    def _check_size(self, frames: np.ndarray) -> None:
        hw = tuple(int(v) for v in frames.shape[1:3])
        if self.train_size and (hw[1], hw[0]) != tuple(self.train_size) and hw not in self._warned:
            self._warned.add(hw)
            logger.warning("frames are %dx%d but the head was trained on %dx%d footage: resizing to %dx%d",
                           hw[1], hw[0], *self.train_size, self.config.size, self.config.size)

    def prepare(self, block: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames (N, H, W, 3) -> model input (N, C, size, size) on the head's device."""
        self._check_size(block)
        return prepare_frames(block, self.config.size, self.config.channels).to(self.device)

    def errors(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """Per-frame PSNR (dB) of the predictions, NaN for the first ``past_frames`` frames,
        from blocks of uint8 RGB frames in order (a file's or a stream's)."""
        return self.prepared_errors(self.prepare(b) for b in blocks if len(b))

    @torch.inference_mode()
    def prepared_errors(self, blocks: Iterable[torch.Tensor]) -> np.ndarray:
        """:meth:`errors` of blocks already prepared (``prepare``): frames (N, C, size, size)."""
        t = self.config.past_frames
        carry: torch.Tensor | None = None  # the last T frames seen (fewer at the start)
        out: list[np.ndarray] = []
        for block in blocks:
            x = torch.cat([carry, block]) if carry is not None else block
            first = len(x) - len(block)  # index in x of the block's first frame
            # x starts at the video's frame 0 until T frames were seen, so j < t means "no past"
            out.append(np.full(max(0, min(t, len(x)) - first), np.nan, np.float32))
            targets = list(range(max(first, t), len(x)))
            for a in range(0, len(targets), self.batch_size):
                idx = targets[a:a + self.batch_size]
                clips = torch.stack([x[i - t:i] for i in idx])
                out.append(self._psnr(self.generator(clips), x[idx]).float().cpu().numpy())
            carry = x[-t:]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _psnr(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-frame PSNR; with ``error_patch`` k, of the worst k x k patch (mean squared error
        pooled over patches at stride k/2, then the maximum), so a small wrong region is not
        averaged away by a well-predicted rest of the frame."""
        if not self.error_patch:
            return psnr(pred, target)
        k = self.error_patch
        err = ((pred - target) / 2.0).pow(2).mean(dim=1, keepdim=True)
        pooled = torch.nn.functional.avg_pool2d(err, k, stride=max(1, k // 2))
        return 10.0 * torch.log10(1.0 / (pooled.flatten(1).amax(dim=1) + 1e-10))

    def _to_scores(self, p: np.ndarray) -> np.ndarray:
        if np.isnan(p).all():
            raise HeadError(f"only {len(p)} frame(s): fewer than the {self.config.past_frames + 1} frames "
                            "one prediction needs")
        first = p[~np.isnan(p)][0]
        p = np.where(np.isnan(p), first, p)
        if self.score_mode == "minmax":
            lo, hi = float(p.min()), float(p.max())
            return (1.0 - (p - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(p, np.float32)
        mse = np.power(10.0, -p / 10.0)  # PSNR on [0, 1] -> mean squared error
        return (mse / self.scale).astype(np.float32)

    def score_frames(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """Scores (N,) of all frames of a video given as blocks of uint8 RGB frames."""
        return self._to_scores(self.errors(blocks))

    def score_frame_blocks(self, blocks: Iterable[np.ndarray]) -> HeadScores:
        return HeadScores(self.score_frames(blocks))

    def score_video(self, units: np.ndarray, timing: UnitTiming) -> HeadScores:
        return HeadScores(self.score_frames([np.asarray(units)]))

    def stream(self, timing: UnitTiming, n_units: int | None = None) -> StreamingScorer:
        if self.score_mode != "calibrated":
            raise HeadError("score_mode minmax needs the whole video; use score_mode calibrated for streams")
        return _FrameScorer(self)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.generator.state_dict().items()}
        with atomic_path(directory / "head.safetensors") as tmp:
            save_file(state, str(tmp))
        meta = self.meta(asdict(self.config), score_mode=self.score_mode,
                         calibration={"quantile": self.calibration_quantile, "scale": self.scale},
                         train_size=list(self.train_size) if self.train_size else None,
                         error_patch=self.error_patch, **self.extra)
        write_head_meta(directory, meta)
        return directory

    @classmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any], device: str = "cpu") -> FramePredictionHead:
        from safetensors.torch import load_file

        cfg = CTD2GANConfig(**meta["config"])
        generator = ConvTransformerGenerator(cfg)
        generator.load_state_dict(load_file(str(directory / "head.safetensors")), strict=True)
        calib = meta.get("calibration") or {}
        train_size = tuple(meta["train_size"]) if meta.get("train_size") else None
        known = {"format", "version", "type", "consumes", "causal", "lookahead", "needs_fit", "config",
                 "score_mode", "calibration", "train_size", "error_patch"}
        return cls(generator.to(device), scale=calib.get("scale"), score_mode=meta.get("score_mode", "calibrated"),
                   calibration_quantile=calib.get("quantile", 0.99), train_size=train_size,
                   error_patch=int(meta.get("error_patch", 0)), extra={k: v for k, v in meta.items() if k not in known})


class _FrameScorer(StreamingScorer):
    """Causal per-frame scoring; the first ``past_frames`` scores come with the first prediction."""

    def __init__(self, head: FramePredictionHead) -> None:
        self.head = head
        self.reset()

    def reset(self) -> None:
        # prepared past frames: each frame is resized and converted once, not once per prediction
        self._recent: deque[torch.Tensor] = deque(maxlen=self.head.config.past_frames)
        self._held = 0  # frames seen before the first prediction

    def update(self, unit: np.ndarray) -> np.ndarray:
        frame = self.head.prepare(np.asarray(unit)[None])
        if len(self._recent) < self.head.config.past_frames:
            self._recent.append(frame)
            self._held += 1
            return np.zeros(0, np.float32)
        p = self.head.prepared_errors([torch.cat([*self._recent, frame])])[-1:]
        self._recent.append(frame)
        scores = self.head._to_scores(p)
        if self._held:  # the first frames take the first computed score, as in batch scoring
            scores = np.full(self._held + 1, scores[0], np.float32)
            self._held = 0
        return scores

    def finish(self) -> np.ndarray:
        if self._held:
            raise HeadError(f"only {self._held} frame(s): fewer than the {self.head.config.past_frames + 1} "
                            "frames one prediction needs")
        return np.zeros(0, np.float32)
