"""``vad train``: fit a weakly-supervised head (MIL, GS-MoE, RTFM) on snippet features.

Out directory::

    <out>/head.safetensors, head.json   the selected (best validation) model: `vad score --head <out>`
    <out>/checkpoints/epoch-NNNN/       head + optimizer/RNG state of recent epochs (resume)
    <out>/checkpoints/last.json         pointer to the newest complete checkpoint (written last)
    <out>/metrics.jsonl                 one line per epoch: losses, validation metric, time
    <out>/train_config.yaml             the resolved configuration
    <out>/summary.json                  best epoch and metric, data sizes, classes

Model selection uses a validation split carved from the *training* list (stratified by video
label), never the test set. With only video-level labels the validation metric is the video-level
ROC AUC of each video's top-k snippet score; with ``--val-gt`` (frame labels) it is frame AUC.

Subnormal floats: on a CPU, weights that a penalty shrinks towards zero become subnormal after
a thousand-odd steps (MIL's L2 on its 1024-d input layer: a fifth of the weights after 2,000
steps), and every operation on them takes a slow path. With ``train.flush_denormal`` (default
on) a run flushes them to zero (``torch.set_flush_denormal``) from before its first step to its
end, fresh or resumed alike, so a resumed run still computes what an uninterrupted one does;
the process's previous mode is restored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from vad.config import TrainConfig, to_dict
from vad.data.features import (
    FeatureDataError,
    FeatureStore,
    FeatureVideo,
    assign_classes,
    check_files,
    read_feature_list,
    stratified_split,
)
from vad.eval import roc_auc
from vad.fsutil import atomic_path, prune_checkpoints, write_json_atomic, write_text_atomic
from vad.heads.base import HeadError
from vad.heads.modules import FeatureBatch, build_module, load_module, save_module
from vad.heads.trained import score_snippets

logger = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """Training cannot start or continue (bad data, bad configuration, incompatible resume)."""


def flushing_denormals() -> bool:
    """Whether this thread flushes subnormal floats to zero now (torch has no getter: probe it)."""
    return float(torch.tensor([2e-38], dtype=torch.float32) * 0.25) == 0.0  # 5e-39 is subnormal


@contextlib.contextmanager
def denormals_flushed(on: bool = True):
    """Flush subnormal floats to zero inside the block (where the CPU can), then restore."""
    before = flushing_denormals()
    if on and not before and not torch.set_flush_denormal(True):
        logger.debug("this CPU cannot flush subnormal floats to zero")
    try:
        yield
    finally:
        if on and not before:
            torch.set_flush_denormal(False)


def _video_score(snippet_scores: np.ndarray, ratio: float = 1 / 16) -> float:
    k = max(1, math.ceil(len(snippet_scores) * ratio))
    return float(np.sort(snippet_scores)[-k:].mean())


class Trainer:
    """One training run; deterministic for a given seed, resumable from its checkpoints."""

    def __init__(self, cfg: TrainConfig, train_list: str | Path, out: str | Path, *,
                 val_list: str | Path | None = None, val_gt: str | Path | None = None,
                 dataset: str | None = None, root: str | Path | None = None, progress: bool = True) -> None:
        """``root``: re-anchor the lists' feature paths under this folder (basenames kept), for
        released lists that carry their authors' absolute paths."""
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        t = cfg.train
        if t.select not in ("best", "last"):
            raise TrainError(f"train.select must be 'best' or 'last', got {t.select!r}")
        if t.batch_size < 2:
            raise TrainError("train.batch_size must be >= 2 (pairs of normal and anomalous videos)")
        if t.classes not in ("names", "cluster"):
            raise TrainError(f"train.classes must be 'names' or 'cluster', got {t.classes!r}")
        try:
            videos = read_feature_list(train_list, dataset=dataset, root=root)
            if val_list:
                self.train_videos = videos
                self.val_videos = read_feature_list(val_list, dataset=dataset, root=root)
            else:
                self.train_videos, self.val_videos = stratified_split(videos, t.val_fraction, t.seed)
        except (FeatureDataError, ValueError) as err:
            raise TrainError(str(err)) from None
        self.normals = [v for v in self.train_videos if v.label == 0]
        self.anomalies = [v for v in self.train_videos if v.label == 1]
        if not self.normals or not self.anomalies:
            raise TrainError(f"{train_list}: training needs normal and anomalous videos "
                             f"(found {len(self.normals)} normal, {len(self.anomalies)} anomalous)")
        self.store = FeatureStore()
        self.val_store = FeatureStore(cache_raw=True)
        self.val_gt = self._load_val_gt(val_gt)
        try:
            self.dim = check_files(self.train_videos + self.val_videos, None)
        except FeatureDataError as err:
            raise TrainError(str(err)) from None
        self.val_store.dim = self.store.dim = self.dim
        self.class_names = self._classes()
        params = dict(cfg.head.params)
        params.setdefault("input_dim", self.dim)
        if cfg.head.name == "gsmoe":
            params.setdefault("n_classes", max(1, len(self.class_names)))
            params.setdefault("class_names", list(self.class_names))
        try:
            torch.manual_seed(t.seed)
            self.head = build_module(cfg.head.name, params).to(t.device)
        except (ValueError, TypeError) as err:
            raise TrainError(f"head: {err}") from None
        if getattr(self.head.config, "input_dim", self.dim) != self.dim:
            raise TrainError(f"head.params.input_dim={self.head.config.input_dim} but features are {self.dim}-d")
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.rng = np.random.default_rng(t.seed)
        self.queues: dict[str, list[int]] = {"anomalies": [], "normals": []}
        self.epoch = 0
        self.best: dict[str, Any] = {"epoch": None, "metric": -math.inf}

    # -- data -------------------------------------------------------------------------------
    def _load_val_gt(self, val_gt: str | Path | None) -> dict[str, np.ndarray] | None:
        if not val_gt:
            return None
        folder = Path(val_gt)
        if not folder.is_dir():
            raise TrainError(f"--val-gt {folder} is not a folder of <video_id>.npy frame labels")
        return {p.stem: np.load(p, allow_pickle=False) for p in folder.glob("*.npy")}

    def _classes(self) -> list[str]:
        t = self.cfg.train
        if t.classes == "cluster":
            from vad.heads.gsmoe import cluster_classes

            feats = [self.store.crop(v, 0) for v in self.train_videos]
            ids = cluster_classes(feats, np.array([v.label for v in self.train_videos]), t.n_clusters, t.seed)
            for v, c in zip(self.train_videos, ids):
                v.cls = int(c)
            for v in self.val_videos:
                v.cls = 0 if v.label == 0 else -1
            return [f"cluster{i + 1}" for i in range(t.n_clusters)]
        names = assign_classes(self.train_videos)
        assign_classes(self.val_videos, names)
        return names

    def _crop_index(self, video: FeatureVideo) -> int:
        crop = self.cfg.train.crop
        n = len(video.paths)
        if crop in ("random", "all"):  # "all" cycles through crops across steps
            return int(self.rng.integers(n))
        try:
            index = int(crop)
        except ValueError:
            raise TrainError(f"train.crop must be random, all or a crop index, got {crop!r}") from None
        if not 0 <= index < n:
            raise TrainError(f"train.crop={index} but {video.video_id} has {n} crop(s)")
        return index

    def _draw(self, which: str, n: int) -> list[FeatureVideo]:
        """``n`` videos from a shuffled queue (refilled with a new permutation when empty), so an
        epoch of ceil(anomalous / half-batch) steps sees every anomalous video once. The queues
        are part of the checkpoint, so a resumed run draws exactly what an uninterrupted one would."""
        pool = self.anomalies if which == "anomalies" else self.normals
        queue = self.queues[which]
        out = []
        while len(out) < n:
            if not queue:
                queue.extend(int(i) for i in self.rng.permutation(len(pool)))
            out.append(pool[queue.pop(0)])
        return out

    def _batch(self) -> FeatureBatch:
        half = self.cfg.train.batch_size // 2
        n_seg = self.head.config.n_segments
        pooling = getattr(self.head, "segment_pooling", {})  # how this core's training segments are pooled
        chosen = self._draw("anomalies", half) + self._draw("normals", half)
        # a sampling core draws from the checkpointed generator: a resumed run draws the same
        feats = np.stack([self.store.segments(v, self._crop_index(v), n_seg, rng=self.rng, **pooling) for v in chosen])
        return FeatureBatch(
            features=torch.from_numpy(feats),
            mask=torch.ones(feats.shape[:2], dtype=torch.bool),
            label=torch.tensor([float(v.label) for v in chosen]),
            cls=torch.tensor([v.cls for v in chosen], dtype=torch.long),
        ).to(self.cfg.train.device)

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        if not self.val_videos:
            return {}
        video_scores, video_labels, frame_scores, frame_labels = [], [], [], []
        for v in self.val_videos:
            s = score_snippets(self.head, self.val_store.crop(v, 0)[None], self.cfg.train.device)
            video_scores.append(_video_score(s))
            video_labels.append(v.label)
            if self.val_gt is not None and v.video_id in self.val_gt:
                gt = self.val_gt[v.video_id]
                frames = np.repeat(s, 16)
                frames = frames[: len(gt)] if len(frames) >= len(gt) else np.pad(frames, (0, len(gt) - len(frames)), mode="edge")
                frame_scores.append(frames)
                frame_labels.append(gt)
        out = {"val_video_auc": roc_auc(np.array(video_labels), np.array(video_scores))}
        if frame_scores:
            out["val_frame_auc"] = roc_auc(np.concatenate(frame_labels), np.concatenate(frame_scores))
        return out

    # -- checkpoints --------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        ckpt_dir = self.out / "checkpoints"
        directory = ckpt_dir / f"epoch-{self.epoch:04d}"
        save_module(self.head, directory, extra={"epoch": self.epoch})
        with atomic_path(directory / "state.pt") as tmp:
            torch.save({"optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp)
        write_json_atomic(directory / "state.json", {"epoch": self.epoch, "best": self.best,
                                                     "numpy_rng": self.rng.bit_generator.state,
                                                     "queues": self.queues})
        # The pointer is written last: a checkpoint is complete once last.json names it.
        write_json_atomic(ckpt_dir / "last.json", {"epoch": self.epoch, "dir": directory.name})
        prune_checkpoints(ckpt_dir, "epoch-*", self.cfg.train.keep_checkpoints)

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint in ``out``; False when there is none."""
        pointer = self.out / "checkpoints" / "last.json"
        if not pointer.is_file():
            return False
        directory = self.out / "checkpoints" / json.loads(pointer.read_text())["dir"]
        try:
            loaded = load_module(directory, self.cfg.train.device)
        except (HeadError, FileNotFoundError, ValueError, RuntimeError) as err:
            raise TrainError(f"cannot resume from {directory}: {err}") from None
        if asdict(loaded.config) != asdict(self.head.config):
            raise TrainError(f"cannot resume from {directory}: it was trained with a different head config")
        self.head.load_state_dict(loaded.state_dict())
        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        meta = json.loads((directory / "state.json").read_text())
        self.rng.bit_generator.state = meta["numpy_rng"]
        self.queues = {k: list(v) for k, v in meta["queues"].items()}
        self.epoch, self.best = int(meta["epoch"]), meta["best"]
        logger.info("resumed from %s (epoch %d)", directory, self.epoch)
        return True

    # -- the loop -----------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        t = self.cfg.train
        return t.steps_per_epoch or max(1, math.ceil(len(self.anomalies) / (t.batch_size // 2)))

    def run(self) -> dict[str, Any]:
        with denormals_flushed(self.cfg.train.flush_denormal):
            return self._run()

    def _run(self) -> dict[str, Any]:
        t = self.cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "train_config.yaml", yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        metrics_path = self.out / "metrics.jsonl"
        if self.epoch == 0 and metrics_path.exists():
            metrics_path.unlink()
        stale = 0
        bar = tqdm(total=t.epochs, initial=self.epoch, desc=f"train {self.cfg.head.name}", unit="epoch",
                   disable=not self.progress)
        while self.epoch < t.epochs:
            started = time.perf_counter()
            self.head.train()
            if hasattr(self.head, "set_epoch"):  # a core whose loss changes with the epoch (GS-MoE's TGS warm-up)
                self.head.set_epoch(self.epoch)
            parts_sum: dict[str, float] = {}
            n_steps = self.steps_per_epoch()
            for _ in range(n_steps):
                try:
                    batch = self._batch()
                except FeatureDataError as err:  # a crop beyond the up-front scan
                    raise TrainError(f"{err} (checkpoints up to epoch {self.epoch} are intact: fix the "
                                     "file and rerun with --resume)") from None
                loss, parts = self.head.loss(batch)
                if not torch.isfinite(loss):
                    raise TrainError(f"loss became {loss.item()} at epoch {self.epoch + 1}; lower train.lr")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                for k, v in {"loss": float(loss.detach()), **parts}.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
            self.epoch += 1
            train_s = time.perf_counter() - started
            val = self.validate()
            metric = val.get("val_frame_auc", val.get("val_video_auc", -self.epoch_loss(parts_sum, n_steps)))
            record = {"epoch": self.epoch, **{k: v / n_steps for k, v in parts_sum.items()}, **val,
                      "train_s": round(train_s, 3)}
            valid = metric is not None and not math.isnan(metric)
            # Ties go to the later epoch: a coarse validation metric (video AUC over a few
            # dozen videos) saturates early, while localisation keeps improving.
            stale = 0 if valid and metric > self.best["metric"] else stale + 1
            if t.select == "last":  # the epoch reached is the model (its metric is still logged)
                self.best = {"epoch": self.epoch, "metric": float(metric) if valid else -math.inf}
                save_module(self.head, self.out, extra=self._head_extra())
            elif valid and metric >= self.best["metric"]:
                self.best = {"epoch": self.epoch, "metric": float(metric)}
                save_module(self.head, self.out, extra=self._head_extra())
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            self._save_checkpoint()
            bar.set_postfix(loss=f"{record['loss']:.4f}", **{k: f"{v:.3f}" for k, v in val.items()}, refresh=False)
            bar.update(1)
            if t.patience and stale >= t.patience:
                logger.info("no better validation score for %d epochs: stopping", stale)
                break
        bar.close()
        if self.best["epoch"] is None:  # validation never defined: keep the last model
            save_module(self.head, self.out, extra=self._head_extra())
        summary = {"best": self.best, "epochs_run": self.epoch, "head": self.cfg.head.name,
                   "n_train": len(self.train_videos), "n_val": len(self.val_videos),
                   "n_normal": len(self.normals), "n_anomalous": len(self.anomalies),
                   "classes": self.class_names, "dim": self.dim,
                   "selection": "last epoch" if t.select == "last" else
                   "val_frame_auc" if self.val_gt else "val_video_auc (top-k of snippet scores)"}
        write_json_atomic(self.out / "summary.json", summary)
        return summary

    @staticmethod
    def epoch_loss(parts_sum: dict[str, float], n_steps: int) -> float:
        return parts_sum.get("loss", 0.0) / max(n_steps, 1)

    def _head_extra(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val_metric": self.best["metric"], "dim": self.dim,
                "classes": self.class_names,
                "input_normalization": getattr(self.head, "input_normalization", "l2")}
