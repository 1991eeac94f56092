"""CLIP image features per snippet: per-frame projected image embeddings, averaged per snippet.

Convention (VadCLIP, Wu et al., AAAI 2024): CLIP ViT-B/16's image encoder applied to every frame,
its 512-d projected embedding (``encode_image``; here ``image_embeds`` of
``transformers.CLIPVisionModelWithProjection``, the same tensor) averaged over the 16 frames of a
snippet. VadCLIP's authors state "standard CLIP (ViT-B/16), 10-crop" without releasing the
extraction code; their feature files have ``n_frames / 16`` rows of 512, which is what this
per-snippet mean reproduces. The embeddings are **not** L2-normalised before averaging, as
``encode_image`` returns them (VadCLIP normalises only inside its own model, after its temporal
layers); ``l2_normalize=True`` gives the unit-sphere variant. VadCLIP's released features are 10-crop; note that their crop index
puts the center crop first (``__0``), while :func:`vad.clips.crop_views` follows torchvision
(center is ``__4``), so crop files are not interchangeable index-for-index.

Preprocessing (the contract of the cache entries this extractor writes):

1. RGB uint8 frames, resized at decode time so the short side is ``io.short_side`` (bilinear),
   cropped to ``crop_size`` by ``crop`` (center | 5crop | 10crop, torchvision order). With
   ``short_side == crop_size == 224`` and ``crop: center`` this is CLIP's own geometry (resize the
   short side to 224, center-crop 224), up to the resize filter (CLIP's processor uses bicubic).
2. Every ``frame_stride``-th frame of the snippet (frames 0, k, 2k, ...; default 1: all frames).
3. ``x / 255`` (float32 in [0, 1]); if ``crop_size`` differs from the model's ``image_size``, a
   bicubic, antialiased resize to ``image_size`` and a clamp to [0, 1] (the processor resizes
   uint8 images, whose values cannot overshoot).
4. ``(x - mean) / std`` per channel, mean/std from the model directory's
   ``preprocessor_config.json`` (``image_mean``/``image_std``) when present, else CLIP's
   (0.48145466, 0.4578275, 0.40821073) / (0.26862954, 0.26130258, 0.27577711).

A snippet padded by ``snippets.tail=pad`` is averaged over its padded frames too, as I3D sees them.
Everything above that changes the numbers (frame_stride, crop, sizes, mean/std, precision,
normalisation, the weights' hash) is in :attr:`CLIPExtractor.spec`, hence in the cache key.

Weights: ``features.weights`` is a local model directory (``save_pretrained`` layout: a
``config.json`` of a CLIP or CLIP-vision model plus ``*.safetensors`` or ``pytorch_model*.bin``;
never touches the network) or a Hugging Face hub id, optionally ``id@revision`` (``auto`` =
``openai/clip-vit-base-patch16``), looked up in the local hub cache first and downloaded only when
missing and not offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vad.features.base import ExtractorSpec
from vad.clips import N_CROPS
from vad.config import FeatureConfig
from vad.features.base import FeatureError, check_feature_config
from vad.features.engines import ImageEmbedGraph, OpenVINOEngine, cached_openvino_model, resolve_engine
from vad.paths import data_dir
from vad.features.views import ViewsExtractor

if TYPE_CHECKING:
    from transformers import CLIPVisionModelWithProjection

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch16"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# "org/name" or a legacy bare "name", optionally "@revision"; anything else can only be a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?$")


# ------------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CLIPPreprocess:
    """Pixel normalisation and the model's input size (see the module docstring)."""

    image_size: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_model_dir(cls, directory: Path | None, image_size: int) -> "CLIPPreprocess":
        """mean/std from ``preprocessor_config.json`` when the directory has one, else CLIP's."""
        path = directory / "preprocessor_config.json" if directory is not None else None
        if path is None or not path.is_file():
            return cls(image_size)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise FeatureError(f"cannot read {path}: {err}") from None
        mean = tuple(float(v) for v in data.get("image_mean", CLIP_MEAN))
        std = tuple(float(v) for v in data.get("image_std", CLIP_STD))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise FeatureError(f"{path}: image_mean/image_std must be 3 numbers (std > 0)")
        return cls(image_size, mean, std)


def preprocess_frames(frames: np.ndarray | torch.Tensor, pre: CLIPPreprocess,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, s, s, 3) uint8 RGB -> (N, 3, image_size, image_size) float32, normalised, on ``device``."""
    x = torch.as_tensor(frames).to(device)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (N, H, W, 3), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (pre.image_size, pre.image_size):
        x = F.interpolate(x, size=(pre.image_size, pre.image_size), mode="bicubic",
                          align_corners=False, antialias=True).clamp_(0.0, 1.0)
    mean = torch.tensor(pre.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def embed_frames(model: torch.nn.Module, pixel_values: torch.Tensor, precision: str = "fp32",
                 *, l2_normalize: bool = False) -> torch.Tensor:
    """Projected image embeddings (N, dim) float32 of preprocessed frames, on the model's device.

    Runs under ``torch.inference_mode()``; ``bf16``/``fp16`` use autocast (fp16 on CUDA only).
    """
    if precision not in _AUTOCAST:
        raise ValueError(f"precision must be one of {sorted(_AUTOCAST)}, got {precision!r}")
    device = next(model.parameters()).device
    amp_dtype = _AUTOCAST[precision]
    if amp_dtype is torch.float16 and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; use precision='bf16' or 'fp32'")
    with torch.inference_mode():
        x = pixel_values.to(device=device, dtype=torch.float32, non_blocking=True)
        if amp_dtype is None:
            out = model(pixel_values=x).image_embeds
        else:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                out = model(pixel_values=x).image_embeds
        out = out.float()
        if l2_normalize:
            out = F.normalize(out, dim=-1)
    return out


# ------------------------------------------------------------------------------------------------
# Weights: local directory or hub id
# ------------------------------------------------------------------------------------------------


def model_files(directory: Path) -> list[Path]:
    """``config.json`` and the weight files transformers loads from ``directory`` (safetensors
    when there are any, else ``pytorch_model*.bin``), sorted; FeatureError when either is missing."""
    config = directory / "config.json"
    if not config.is_file():
        raise FeatureError(f"{directory} has no config.json: not a Hugging Face model directory")
    weights = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.safetensors.index.json"))
    if not weights:
        weights = sorted(directory.glob("pytorch_model*.bin")) + sorted(directory.glob("pytorch_model*.bin.index.json"))
    if not weights:
        raise FeatureError(f"{directory} has no weight files (*.safetensors or pytorch_model*.bin)")
    return sorted([config, *weights], key=lambda p: p.name)


def hash_model_dir(directory: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 over the names and contents of :func:`model_files`, streamed. Content-based, so a
    local copy and the hub cache snapshot of the same model hash alike."""
    digest = hashlib.sha256()
    for path in model_files(directory):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:  # hub cache files are symlinks into blobs/: open follows them
            while chunk := f.read(chunk_size):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSource:
    """Where the CLIP weights come from: ``directory`` holds the files (a local directory or the
    hub cache snapshot); ``repo_id`` is set for hub models."""

    ref: str
    directory: Path | None
    repo_id: str | None = None
    revision: str | None = None


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The hub cache's snapshot directory of ``repo_id`` if it holds a loadable model, else None."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
        model_files(path)
        return path
    except Exception:  # noqa: BLE001 - any failure of a cache-only lookup means "not cached"
        return None


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def resolve_model_source(weights: str) -> ModelSource:
    """Local directory, or hub id (cache-resolved when possible); never downloads."""
    ref = DEFAULT_MODEL if weights == "auto" else weights
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FeatureError(f"CLIP weights must be a model directory (config.json + weights), got the file {path}")
        model_files(path)  # fail early with a clear message
        return ModelSource(ref=str(path), directory=path)
    if ref.startswith((".", "/", "~")) or not _HUB_ID.match(ref):
        raise FeatureError(f"CLIP model directory not found: {path}")
    repo_id, _, revision = ref.partition("@")
    return ModelSource(ref=ref, directory=_cached_snapshot(repo_id, revision or None),
                       repo_id=repo_id, revision=revision or None)


@contextmanager
def _quiet_transformers(progress: bool) -> Iterator[None]:
    """Silence transformers' load report while loading: a full CLIP checkpoint's text-tower weights
    are reported as unexpected, which is expected here (missing weights are checked instead)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars and not progress:
            hf_logging.enable_progress_bar()


def load_clip_vision(name_or_path: str | Path, *, local_files_only: bool,
                     revision: str | None = None) -> "CLIPVisionModelWithProjection":
    """CLIPVisionModelWithProjection in fp32 eval mode; a checkpoint lacking any of its weights (e.g.
    a vision tower without the projection) is an error, not a silent random init."""
    from transformers import CLIPVisionModelWithProjection

    with _quiet_transformers(progress=not local_files_only):
        model, info = CLIPVisionModelWithProjection.from_pretrained(
            name_or_path, local_files_only=local_files_only, revision=revision, output_loading_info=True
        )
    missing = sorted(set(info.get("missing_keys") or ()) | {str(k[0]) for k in info.get("mismatched_keys") or ()})
    if missing:
        raise FeatureError(
            f"{name_or_path}: {len(missing)} weight(s) of CLIPVisionModelWithProjection missing or mismatched "
            f"(e.g. {missing[0]}); is it a CLIP model with its visual projection?"
        )
    return model.float().eval()


def _not_available(source: ModelSource, why: str) -> FeatureError:
    return FeatureError(
        f"CLIP model {source.ref!r} is neither a local directory nor in the local Hugging Face cache, "
        f"and {why}. Download it once "
        f"with network access (e.g. `huggingface-cli download {source.repo_id}`), or save it with "
        "save_pretrained and pass features.weights=/path/to/local/model_dir"
    )


# ------------------------------------------------------------------------------------------------
# The extractor
# ------------------------------------------------------------------------------------------------


class CLIPExtractor(ViewsExtractor):
    """Mean per-frame CLIP image embeddings of 16-frame snippets (see the module docstring).

    Same contract as :class:`vad.features.extractor.I3DExtractor`: ``spec``, ``n_crops``, ``dim``,
    ``weights_path``, ``weights_sha256``, ``extract``. ``features.batch_size`` counts frames per
    forward pass. Local models load lazily on first use; a hub model missing from the cache is
    downloaded here, since its hash (needed for the cache key) needs the files.
    """

    def __init__(self, cfg: FeatureConfig, *, short_side: int | None, l2_normalize: bool = False) -> None:
        if cfg.name != "clip":
            raise FeatureError(f"CLIPExtractor needs features.name=clip, got {cfg.name!r}")
        self.device = check_feature_config(cfg)
        if cfg.precision == "int8":
            raise FeatureError("features.precision=int8 is built for I3D only; CLIP takes fp32 (PyTorch or "
                               "OpenVINO), bf16 or fp16 (PyTorch)")
        self.engine_name = resolve_engine(cfg.engine, self.device, cfg.precision)
        self.engine_dir = Path(cfg.engine_cache).expanduser() if cfg.engine_cache else data_dir() / "engines"
        self._ov: OpenVINOEngine | None = None
        self.cfg = cfg
        self.short_side = short_side
        self.l2_normalize = l2_normalize
        self._model: torch.nn.Module | None = None
        self.source = resolve_model_source(cfg.weights)
        if self.source.directory is None:
            self._download()
        directory = self.source.directory
        if directory is not None:
            self.weights_path: Path | str = directory
            self.weights_sha256 = hash_model_dir(directory)
            self.weights_hash = "files"
            from transformers import CLIPVisionConfig

            with _quiet_transformers(progress=False):
                vision = CLIPVisionConfig.from_pretrained(directory, local_files_only=True)
        else:
            # Loaded, but the hub cache does not expose the files: identify the weights by name.
            self.weights_path = self.source.ref
            ident = f"{self.source.repo_id}@{self.source.revision or 'main'}"
            self.weights_sha256 = hashlib.sha256(ident.encode()).hexdigest()
            self.weights_hash = "hub-id+revision"
            logger.warning("no files found for %s in the hub cache; its cache key uses the id and revision", ident)
            assert self._model is not None
            vision = self._model.config
        self.dim = int(vision.projection_dim)
        self.preprocess = CLIPPreprocess.from_model_dir(directory, int(vision.image_size))

    def _download(self) -> None:
        """Load a hub model that is not cached yet (downloading it), then find its snapshot."""
        source = self.source
        assert source.repo_id is not None
        if _hub_offline():
            raise _not_available(source, "the hub is offline (HF_HUB_OFFLINE)")
        self._set_threads()
        try:
            self._model = load_clip_vision(source.repo_id, local_files_only=False, revision=source.revision)
        except OSError as err:
            raise _not_available(source, f"could not be downloaded ({err})") from None
        try:  # the processor config is optional (defaults are CLIP's); fetch it next to the weights
            from huggingface_hub import hf_hub_download

            hf_hub_download(source.repo_id, "preprocessor_config.json", revision=source.revision)
        except Exception as err:  # noqa: BLE001 - absent or unreachable: CLIP's mean/std apply
            logger.debug("no preprocessor_config.json for %s: %s", source.ref, err)
        self.source = ModelSource(source.ref, _cached_snapshot(source.repo_id, source.revision),
                                  source.repo_id, source.revision)

    def _set_threads(self) -> None:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)

    @property
    def n_crops(self) -> int:
        return N_CROPS[self.cfg.crop]

    @property
    def spec(self) -> ExtractorSpec:
        """Everything that changes the numbers goes into the cache key (not device or batch size)."""
        pre = self.preprocess
        config: dict[str, Any] = {
            "model": "CLIPVisionModelWithProjection",
            "output": "image_embeds",
            "frame_pool": "mean",
            "l2_normalize": self.l2_normalize,
            "frame_stride": self.cfg.frame_stride,
            "crop": self.cfg.crop,
            "crop_size": self.cfg.crop_size,
            "short_side": self.short_side,
            "image_size": pre.image_size,
            "resize": "none" if self.cfg.crop_size == pre.image_size else "bicubic-antialias",
            "input_range": "[0,1]",
            "mean": list(pre.mean),
            "std": list(pre.std),
            "precision": self.cfg.precision,
            "weights_hash": self.weights_hash,
        }
        if self.weights_hash != "files":
            config["weights_ref"] = f"{self.source.repo_id}@{self.source.revision or 'main'}"
        return ExtractorSpec(name="clip", config=config, weights_sha256=self.weights_sha256)

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            assert self.source.directory is not None
            self._set_threads()
            self._model = load_clip_vision(self.source.directory, local_files_only=True)
            logger.info("loaded CLIP %s (%s) on %s", self.source.ref, self.source.directory, self.device)
        if next(self._model.parameters()).device != self.device:
            self._model = self._model.to(self.device)
        return self._model

    def load(self) -> "CLIPExtractor":
        """Load the model now (before any video is decoded), so a bad model is one clear error;
        for OpenVINO convert it once (cached) and compile it."""
        if self.engine_name == "torch":
            self.model  # noqa: B018 - loads it
        elif self._ov is None:
            size = self.preprocess.image_size
            example = np.zeros((self.cfg.batch_size, 3, size, size), np.float32)
            xml = cached_openvino_model("clip", lambda: ImageEmbedGraph(self.model), example, self.engine_dir,
                                        key_parts={"extractor_key": self.spec.key})
            self._ov = OpenVINOEngine(xml, threads=self.cfg.threads or torch.get_num_threads())
            self._model = None  # the PyTorch copy was only needed for the conversion
        return self

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(N, s, s, 3) uint8 cropped frames -> (N, dim) float32 per-frame embeddings."""
        pixels = preprocess_frames(frames, self.preprocess, "cpu" if self.engine_name == "openvino" else self.device)
        if self.engine_name == "openvino":
            out = torch.from_numpy(self.load()._ov(pixels.numpy()))
            return (F.normalize(out, dim=-1) if self.l2_normalize else out).numpy()
        out = embed_frames(self.model, pixels, self.cfg.precision, l2_normalize=self.l2_normalize)
        return out.cpu().numpy()

    def extract_views(
        self, views: Iterable[np.ndarray], on_snippet: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Features from :func:`vad.features.extractor.snippet_views` output, one array per snippet.

        Frames of consecutive snippets are pooled into forward passes of exactly
        ``batch_size`` frames (the last one may be smaller), so memory stays bounded on long
        videos and the numbers do not depend on how snippets fall into batches.
        """
        batch, n_crops = self.cfg.batch_size, self.n_crops
        queued: list[np.ndarray] = []  # cropped frames waiting for a forward pass
        n_queued = 0
        done: list[np.ndarray] = []  # embeddings not yet assigned to a snippet
        n_done = 0
        sizes: deque[int] = deque()  # frames (crops x sampled frames) of each unfinished snippet
        feats: list[np.ndarray] = []  # (n_crops, dim) per finished snippet

        def forward(n: int) -> None:
            nonlocal queued, n_queued, n_done
            flat = np.concatenate(queued) if len(queued) > 1 else queued[0]
            done.append(self.embed(flat[:n]))
            n_done += n
            queued = [flat[n:]] if n < len(flat) else []
            n_queued -= n

        def finish() -> None:
            nonlocal done, n_done
            finished = 0
            while sizes and n_done >= sizes[0]:
                size = sizes.popleft()
                emb = np.concatenate(done) if len(done) > 1 else done[0]
                feats.append(emb[:size].reshape(n_crops, size // n_crops, -1).mean(axis=1))
                done = [emb[size:]] if size < len(emb) else []
                n_done -= size
                finished += 1
            if finished and on_snippet:
                on_snippet(finished)

        for snippet_crops in views:
            frames = snippet_crops.reshape(-1, *snippet_crops.shape[2:])  # crop-major: (n_crops * T', s, s, 3)
            queued.append(frames)
            n_queued += len(frames)
            sizes.append(len(frames))
            while n_queued >= batch:
                forward(batch)
            finish()
        if n_queued:
            forward(n_queued)
            finish()
        if not feats:
            return np.zeros((n_crops, 0, self.dim), dtype=np.float32)
        out = np.stack(feats, axis=1)  # (n_crops, S, dim)
        return np.ascontiguousarray(out, dtype=np.float32)
