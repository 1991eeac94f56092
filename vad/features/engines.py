"""Inference engines behind the extractors: eager PyTorch, or OpenVINO on CPU.

For I3D both take what the extractor feeds, uint8 RGB views ``(B, T, S, S, 3)``, and return
float32 Mixed_5c features ``(B, 1024)``; for CLIP, normalised pixel values ``(B, 3, s, s)`` ->
image embeddings (pre-processing stays in PyTorch; int8 is I3D only).

* ``torch``: the optimised eager model (folded batch norm, channels-last); any device.
* ``openvino``: the same module, uint8 -> [-1, 1] pre-processing included, converted once to
  OpenVINO IR and compiled for the CPU with a static batch (a short last batch is padded).
  ``fp32`` gives the PyTorch features to ~1e-6 (so they share cache entries); ``int8`` is
  post-training quantised with NNCF on calibration snippets of the user's own footage.

Converted models are cached on disk under a key over everything they depend on: the weights'
sha256, the input shape, the precision, the calibration set, OpenVINO's version and this
module's graph version. Each entry has a manifest with the sha256 of its files; an entry whose
files do not match (half-written, edited, from another version) is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from vad.features.base import FeatureError
from vad.features.i3d import InceptionI3d, extract_i3d, preprocess_frames
from vad.utils import sha256_file

logger = logging.getLogger(__name__)

__all__ = ["ENGINES", "ImageEmbedGraph", "OpenVINOEngine", "TorchI3DEngine", "cached_openvino_model",
           "openvino_available", "openvino_i3d_model", "resolve_engine"]

ENGINES = ("auto", "torch", "openvino")

#: Bump when the exported graph changes (pre-processing, outputs), so old cache entries are not reused.
GRAPH_VERSION = 1


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def resolve_engine(engine: str, device: torch.device, precision: str) -> str:
    """``auto``: OpenVINO on CPU (measured faster, docs/benchmarks.md) when it is installed,
    PyTorch on CUDA. An explicit choice that cannot run is a FeatureError naming why."""
    if engine not in ENGINES:
        raise FeatureError(f"features.engine must be one of {ENGINES}, got {engine!r}")
    if precision == "int8":
        if device.type != "cpu":
            raise FeatureError("features.precision=int8 runs on the CPU (OpenVINO); use fp16/bf16 on CUDA")
        if engine == "torch":
            raise FeatureError("features.precision=int8 needs features.engine=openvino (or auto)")
        engine = "openvino"
    if engine == "auto":
        autocast = precision in ("bf16", "fp16")  # PyTorch autocast precisions
        engine = "openvino" if device.type == "cpu" and not autocast and openvino_available() else "torch"
    if engine == "openvino":
        if device.type != "cpu":
            raise FeatureError(f"features.engine=openvino runs on the CPU, not {device}; use engine torch on CUDA")
        if precision in ("bf16", "fp16"):
            raise FeatureError(f"features.engine=openvino takes precision fp32 or int8, got {precision}")
        if not openvino_available():
            raise FeatureError("features.engine=openvino but the openvino package is not installed "
                               "(pip install openvino)")
    return engine


class TorchI3DEngine:
    """Eager PyTorch on the model's device."""

    name = "torch"

    def __init__(self, model: InceptionI3d, precision: str = "fp32") -> None:
        self.model = model
        self.precision = precision
        self.device = next(model.parameters()).device

    def __call__(self, views: np.ndarray) -> np.ndarray:
        clips = preprocess_frames(views, channels_last=True).to(self.device)
        return extract_i3d(self.model, clips, precision=self.precision).features.float().cpu().numpy()


class _FeatureGraph(nn.Module):
    """uint8 views (B, T, S, S, 3) -> Mixed_5c average-pooled features (B, 1024): the whole
    extractor step in one graph, so OpenVINO fuses the pre-processing into the first layer."""

    def __init__(self, model: InceptionI3d) -> None:
        super().__init__()
        self.model = model

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        x = views.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
        return self.model.backbone(x).mean(dim=(2, 3, 4))


def _ov_version() -> str:
    import openvino as ov

    return ov.__version__


def _model_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({**parts, "openvino": _ov_version(), "graph": GRAPH_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _entry_is_valid(directory: Path) -> bool:
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        return bool(files) and all(sha256_file(directory / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_openvino_model(
    name: str,
    load_module: Callable[[], nn.Module],
    example: np.ndarray,
    cache_dir: str | Path,
    *,
    key_parts: dict[str, Any],
    precision: str = "fp32",
    calibration: Callable[[], list[np.ndarray]] | None = None,
    calibration_id: str | None = None,
) -> Path:
    """The cached OpenVINO IR (``model.xml``) of ``load_module()`` for inputs shaped and typed
    like ``example`` (its first axis is the static batch), converted when missing or invalid;
    for ``int8`` quantised on ``calibration()`` batches first. ``key_parts``: what else the
    model depends on (weights digest, model name)."""
    import openvino as ov

    if precision not in ("fp32", "int8"):
        raise FeatureError(f"OpenVINO precision must be fp32 or int8, got {precision!r}")
    if precision == "int8" and (calibration is None or not calibration_id):
        raise FeatureError("int8 needs calibration snippets (features.calibration)")
    shape = list(map(int, example.shape))
    key = _model_key({**key_parts, "model": name, "input": shape, "dtype": str(example.dtype),
                      "precision": precision, "calibration": calibration_id if precision == "int8" else None})
    directory = Path(cache_dir) / f"{name}-openvino-{precision}-{key}"
    if directory.is_dir():
        if _entry_is_valid(directory):
            return directory / "model.xml"
        logger.warning("converted model %s is incomplete or damaged: rebuilding it", directory)
        shutil.rmtree(directory, ignore_errors=True)
    t0 = time.perf_counter()
    example_t = torch.from_numpy(np.ascontiguousarray(example))
    with torch.inference_mode(), warnings.catch_warnings():
        # Shape-derived values (I3D's SAME padding, CLIP's size checks) are constants for this
        # static input shape, which is what the tracer warns about (and its checker reports as
        # differences between invocations).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated; OpenVINO still takes it
        traced = torch.jit.trace(load_module().eval(), example_t, check_trace=False)
        model = ov.convert_model(traced, example_input=example_t)
    model.inputs[0].get_node().set_partial_shape(ov.PartialShape(shape))
    model.validate_nodes_and_infer_types()
    if precision == "int8":
        import nncf

        batches = calibration()
        if not batches:
            raise FeatureError("no calibration snippets could be decoded (features.calibration)")
        logger.info("quantising %s to int8 on %d calibration batches", name, len(batches))
        model = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches), fast_bias_correction=True)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=cache_dir))
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        files = {f: sha256_file(tmp / f) for f in ("model.xml", "model.bin")}
        (tmp / "manifest.json").write_text(json.dumps({
            "key": key, "model": name, "precision": precision, "input": shape, "dtype": str(example.dtype),
            **key_parts, "calibration": calibration_id, "openvino": _ov_version(), "graph": GRAPH_VERSION,
            "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
        try:
            os.rename(tmp, directory)  # atomic: a concurrent builder's entry wins, ours is dropped
        except OSError:
            if not _entry_is_valid(directory):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s to OpenVINO %s (%s) in %.1f s: %s", name, precision, shape, time.perf_counter() - t0,
                directory)
    return directory / "model.xml"


def openvino_i3d_model(
    load_model: Callable[[], InceptionI3d],
    cache_dir: str | Path,
    *,
    weights_sha256: str,
    batch: int,
    clip_shape: Sequence[int],
    precision: str = "fp32",
    calibration: Callable[[], list[np.ndarray]] | None = None,
    calibration_id: str | None = None,
) -> Path:
    """I3D (uint8 views ``(batch, *clip_shape)`` -> Mixed_5c features) as cached OpenVINO IR."""
    example = np.zeros([int(batch), *map(int, clip_shape)], np.uint8)
    return cached_openvino_model("i3d", lambda: _FeatureGraph(load_model()), example, cache_dir,
                                 key_parts={"weights_sha256": weights_sha256}, precision=precision,
                                 calibration=calibration, calibration_id=calibration_id)


class ImageEmbedGraph(nn.Module):
    """A CLIP vision model with projection as a graph: pixel values -> ``image_embeds``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).image_embeds


class OpenVINOEngine:
    """A compiled OpenVINO model with a static batch; shorter batches are padded."""

    name = "openvino"

    def __init__(self, xml_path: str | Path, *, threads: int | None = None, precision: str = "fp32") -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision == "fp32":
            # keep f32 arithmetic where the CPU has bf16 units (AMX, AVX512-BF16): features must
            # match PyTorch's to share cache entries
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            self.compiled = core.compile_model(str(xml_path), "CPU", config)
        except RuntimeError as err:
            raise FeatureError(f"OpenVINO cannot compile {xml_path}: {err}") from None
        self.batch = int(self.compiled.inputs[0].get_partial_shape()[0].get_length())
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def __call__(self, views: np.ndarray) -> np.ndarray:
        views = np.ascontiguousarray(views)
        out = []
        for a in range(0, len(views), self.batch):
            part = views[a:a + self.batch]
            n = len(part)
            if n < self.batch:
                part = np.concatenate([part, np.repeat(part[-1:], self.batch - n, axis=0)])
            result = self.request.infer({0: part})
            out.append(np.array(result[self.compiled.outputs[0]][:n], dtype=np.float32))
        if out:
            return np.concatenate(out)
        return np.zeros((0, int(self.compiled.outputs[0].get_partial_shape()[1].get_length())), np.float32)
