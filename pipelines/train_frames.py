"""``vad train --head ctd2gan``: train the CT-D2GAN frame-prediction head on normal footage.

Normal footage is videos (files, folders, list files) or frame folders (the UCSD Ped2, CUHK
Avenue and ShanghaiTech layouts: a folder of image files per clip, e.g. ``Train/Train001/*.tif``).
Frames are resized to ``size`` x ``size`` (grey for ``channels: 1``) once, when loaded.

The last ``holdout_fraction`` of every clip is held out: it calibrates the head (score 1.0 =
the ``calibration_quantile`` of its prediction error) and is never trained on. Training draws
random clips of ``past_frames + 1`` frames (a clip weighted by its length), alternating the
generator's and the two discriminators' Adam steps. Seeded; ``--resume`` continues from the
newest complete checkpoint and ends with the same weights as an uninterrupted run.

Out directory::

    <out>/head.safetensors, head.json   the generator and its calibration: `vad score --head <out>`
    <out>/checkpoints/iter-NNNNNNN/      all three networks, optimisers, RNG states
    <out>/checkpoints/last.json          pointer to the newest complete checkpoint (written last)
    <out>/metrics.jsonl                  losses every `log_every` iterations
    <out>/summary.json                   data sizes, iterations, calibration, timings
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vad.config import load_config
from vad.fsutil import atomic_path, prune_checkpoints, write_json_atomic
from vad.heads.ctd2gan import CTD2GAN, CTD2GANConfig, adversarial_step
from vad.heads.frame_predictor import FramePredictionHead, prepare_frames
from vad.io import VIDEO_EXTENSIONS, FileSource, FolderSource, VideoError, folder_images

logger = logging.getLogger(__name__)

class FrameTrainError(RuntimeError):
    """Training cannot start or continue (no usable footage, bad configuration, bad resume)."""


@dataclass
class FrameHeadConfig:
    name: str = "ctd2gan"
    params: dict[str, Any] = field(default_factory=dict)  # CTD2GANConfig fields


@dataclass
class FrameTrainLoop:
    iterations: int = 400
    batch_size: int = 8
    lr_g: float = 2e-4
    lr_d: float = 2e-5
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    log_every: int = 50
    holdout_fraction: float = 0.1  # end of every clip: calibration, never trained on
    max_frames: int = 20000  # per clip, taken evenly spaced in runs of contiguous frames beyond this
    calibration_quantile: float = 0.99
    error_patch: int = 0  # score: 0 = whole-frame PSNR (the paper); k = PSNR of the worst k x k patch
    device: str = "cpu"
    threads: int | None = None


@dataclass
class FrameTrainConfig:
    head: FrameHeadConfig = field(default_factory=FrameHeadConfig)
    train: FrameTrainLoop = field(default_factory=FrameTrainLoop)


def load_frame_train_config(files: Sequence[str | Path], overrides: Sequence[str]) -> FrameTrainConfig:
    return load_config(FrameTrainConfig, files, overrides)


def find_clips(inputs: Sequence[str | Path]) -> list[Path]:
    """Videos and frame folders under ``inputs`` (files, folders, list files), in order."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_file() and p.suffix.lower() in (".txt", ".list", ".lst"):
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            out += find_clips([q if (q := Path(ln)).is_absolute() else p.parent / q for ln in lines])
        elif p.is_file():
            out.append(p)
        elif p.is_dir():
            if folder_images(p):
                out.append(p)  # a frame folder
                continue
            for sub in sorted(p.rglob("*")):
                if sub.is_dir() and folder_images(sub):
                    out.append(sub)
                elif sub.is_file() and sub.suffix.lower() in VIDEO_EXTENSIONS:
                    out.append(sub)
        else:
            raise FrameTrainError(f"normal footage {p}: no such file or folder")
    return out


def load_clip(path: Path, cfg: CTD2GANConfig, max_frames: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A clip's frames prepared for the model: uint8 (N, C, size, size), and its (width, height)."""
    parts: list[np.ndarray] = []
    size = (0, 0)
    # the fps of a frame folder does not matter for training
    source = FolderSource(path, 25.0, block=64) if path.is_dir() else FileSource(path, stop=max_frames, block=64)
    with source:
        for a, frames in source.blocks():
            if a >= max_frames:
                break
            frames = frames[:max_frames - a]
            size = (frames.shape[2], frames.shape[1])
            x = prepare_frames(frames, cfg.size, cfg.channels)
            parts.append(((x.numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8))
    if not parts:
        return np.zeros((0, cfg.channels, cfg.size, cfg.size), np.uint8), size
    return np.concatenate(parts), size


def _to_model(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32)).div_(127.5).sub_(1.0)


class FrameTrainer:
    """One training run of the frame-prediction head; deterministic for a seed, resumable."""

    def __init__(self, cfg: FrameTrainConfig, normal: Sequence[str | Path], out: str | Path, *,
                 progress: bool = True) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        t = cfg.train
        if cfg.head.name != "ctd2gan":
            raise FrameTrainError(f"frame-prediction training supports head ctd2gan, got {cfg.head.name!r}")
        if t.iterations < 1 or t.batch_size < 1 or t.checkpoint_every < 1:
            raise FrameTrainError("train.iterations, batch_size and checkpoint_every must be >= 1")
        if not 0 < t.holdout_fraction < 1:
            raise FrameTrainError(f"train.holdout_fraction must be in (0, 1), got {t.holdout_fraction}")
        try:
            self.model_cfg = CTD2GANConfig(**cfg.head.params)
        except (TypeError, ValueError) as err:
            raise FrameTrainError(f"head.params: {err}") from None
        if t.threads:
            torch.set_num_threads(t.threads)
        self.train_clips, self.held_clips, self.sizes = self._load(normal)
        torch.manual_seed(t.seed)
        self.model = CTD2GAN(self.model_cfg).to(t.device)
        self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=t.lr_g, betas=(0.5, 0.999))
        self.opt_img = torch.optim.Adam(self.model.image_d.parameters(), lr=t.lr_d, betas=(0.5, 0.999))
        self.opt_vid = torch.optim.Adam(self.model.video_d.parameters(), lr=t.lr_d, betas=(0.5, 0.999))
        self.rng = np.random.default_rng(t.seed)
        self.iteration = 0

    # -- data ------------------------------------------------------------------------------
    def _load(self, normal: Sequence[str | Path]) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]]:
        need = self.model_cfg.past_frames + 1
        clips = find_clips(normal)
        if not clips:
            raise FrameTrainError(f"no videos or frame folders in {[str(p) for p in normal]}")
        train, held, sizes, problems = [], [], [], []
        for path in tqdm(clips, desc="loading", unit="clip", disable=not self.progress):
            try:
                frames, size = load_clip(path, self.model_cfg, self.cfg.train.max_frames)
            except (VideoError, FrameTrainError, OSError) as err:
                problems.append(f"{path}: {err}")
                continue
            n_held = max(need, int(math.ceil(len(frames) * self.cfg.train.holdout_fraction)))
            if len(frames) < need + n_held:
                problems.append(f"{path}: {len(frames)} frames, fewer than the {need + n_held} needed "
                                f"({need} to train on and {n_held} held out)")
                continue
            train.append(frames[:-n_held])
            held.append(frames[-n_held:])
            sizes.append(size)
        for p in problems:
            logger.warning("normal footage skipped: %s", p)
        if not train:
            raise FrameTrainError("no usable normal footage (too short or unreadable): " + "; ".join(problems))
        if len(set(sizes)) > 1:
            logger.warning("normal footage has several frame sizes %s: all are resized to %d x %d",
                           sorted(set(sizes)), self.model_cfg.size, self.model_cfg.size)
        logger.info("training on %d clip(s), %d frames (%d held out for calibration)", len(train),
                    sum(map(len, train)), sum(map(len, held)))
        return train, held, sizes

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.model_cfg.past_frames
        lengths = np.array([len(c) - t for c in self.train_clips], dtype=np.float64)
        which = self.rng.choice(len(self.train_clips), size=self.cfg.train.batch_size, p=lengths / lengths.sum())
        clips, targets = [], []
        for w in which:
            s = int(self.rng.integers(0, len(self.train_clips[w]) - t))
            clips.append(self.train_clips[w][s:s + t])
            targets.append(self.train_clips[w][s + t])
        dev = self.cfg.train.device
        return _to_model(np.stack(clips)).to(dev), _to_model(np.stack(targets)).to(dev)

    # -- checkpoints -----------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        from safetensors.torch import save_file

        root = self.out / "checkpoints"
        directory = root / f"iter-{self.iteration:07d}"
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        with atomic_path(directory / "state.pt") as tmp:
            torch.save({"opt_g": self.opt_g.state_dict(), "opt_img": self.opt_img.state_dict(),
                        "opt_vid": self.opt_vid.state_dict(), "torch_rng": torch.get_rng_state()}, tmp)
        write_json_atomic(directory / "state.json", {"iteration": self.iteration,
                                                     "numpy_rng": self.rng.bit_generator.state,
                                                     "config": asdict(self.model_cfg)})
        write_json_atomic(root / "last.json", {"iteration": self.iteration, "dir": directory.name})
        prune_checkpoints(root, "iter-*", self.cfg.train.keep_checkpoints)

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint in ``out``; False when there is none."""
        from safetensors.torch import load_file

        pointer = self.out / "checkpoints" / "last.json"
        if not pointer.is_file():
            return False
        directory = self.out / "checkpoints" / json.loads(pointer.read_text())["dir"]
        try:
            meta = json.loads((directory / "state.json").read_text())
            if meta["config"] != asdict(self.model_cfg):
                raise FrameTrainError(f"cannot resume from {directory}: it was trained with a different head config")
            self.model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
            state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise FrameTrainError(f"cannot resume from {directory}: {err}") from None
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_vid.load_state_dict(state["opt_vid"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = meta["numpy_rng"]
        self.iteration = int(meta["iteration"])
        logger.info("resumed from %s (iteration %d)", directory, self.iteration)
        return True

    # -- the run ---------------------------------------------------------------------------
    @torch.inference_mode()
    def calibration_scale(self, head: FramePredictionHead) -> tuple[float, int]:
        """The calibration quantile of the held-out frames' prediction error (MSE on [0, 1])."""
        errors = []
        for clip in self.held_clips:  # already prepared at training size: no second resize
            p = head.prepared_errors([_to_model(clip).to(head.device)])
            errors.append(np.power(10.0, -p[~np.isnan(p)] / 10.0))
        e = np.concatenate(errors)
        scale = float(np.quantile(e, self.cfg.train.calibration_quantile))
        return (scale if scale > 1e-12 else 1e-12), len(e)

    def run(self) -> dict[str, Any]:
        t = self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out / "metrics.jsonl"
        started = time.perf_counter()
        bar = tqdm(total=t.iterations, initial=self.iteration, desc="ctd2gan", unit="it", disable=not self.progress)
        sums: dict[str, float] = {}
        while self.iteration < t.iterations:
            clip, target = self._batch()
            parts = adversarial_step(self.model, clip, target, self.opt_g, self.opt_img, self.opt_vid)
            self.iteration += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.iteration % t.log_every == 0 or self.iteration == t.iterations:
                n = t.log_every if self.iteration % t.log_every == 0 else self.iteration % t.log_every
                record = {"iteration": self.iteration, **{k: v / n for k, v in sums.items()}}
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                bar.set_postfix(mse=f"{record['intensity']:.4f}", refresh=False)
                sums = {}
            if self.iteration % t.checkpoint_every == 0 or self.iteration == t.iterations:
                self._save_checkpoint()
            bar.update(1)
        bar.close()
        train_s = time.perf_counter() - started
        self.model.eval()
        sizes = sorted(set(self.sizes))
        head = FramePredictionHead(self.model.generator, scale=1.0, calibration_quantile=t.calibration_quantile,
                                   train_size=sizes[0] if len(sizes) == 1 else None, error_patch=t.error_patch)
        scale, n_held = self.calibration_scale(head)
        head = FramePredictionHead(self.model.generator, scale=scale, calibration_quantile=t.calibration_quantile,
                                   train_size=head.train_size, error_patch=t.error_patch,
                                   extra={"iterations": self.iteration, "n_train_frames": sum(map(len, self.train_clips)),
                                          "n_calibration_frames": n_held})
        head.save(self.out)
        summary = {"iterations": self.iteration, "n_clips": len(self.train_clips),
                   "n_train_frames": sum(map(len, self.train_clips)), "n_calibration_frames": n_held,
                   "calibration": {"quantile": t.calibration_quantile, "scale": scale},
                   "train_s": round(train_s, 2), "head": asdict(self.model_cfg)}
        write_json_atomic(self.out / "summary.json", summary)
        return summary
