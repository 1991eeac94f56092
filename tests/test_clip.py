"""CLIP snippet features on a tiny random-weight CLIP vision model saved locally (no download)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.videos import make_frames, write_lossless_video
from vad.clips import Snippet
from vad.config import FeatureConfig
from vad.features.clip import CLIP_MEAN, CLIP_STD, CLIPExtractor
from vad.features.extractor import FeatureError, I3DExtractor, build_extractor

H, W, S = 40, 48, 32  # frame size and crop size (= the tiny model's image_size)
PROJ = 16


def tiny_config(**overrides):
    from transformers import CLIPVisionConfig

    kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              patch_size=8, image_size=32, projection_dim=PROJ)
    kw.update(overrides)
    return CLIPVisionConfig(**kw)


def save_tiny(path: Path, seed: int) -> Path:
    from transformers import CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(tiny_config()).eval().save_pretrained(path)
    return path


# The model is tiny: intra-op threads only add synchronisation (8 ms per linear on a busy box).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    from transformers import CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection.from_pretrained(tiny_dir, local_files_only=True).eval()


def snippets(n: int = 3, seed: int = 0) -> list[Snippet]:
    frames = make_frames(16 * n, H, W, seed=seed)
    return [Snippet(i, 16 * i, 16 * (i + 1), frames[16 * i:16 * (i + 1)]) for i in range(n)]


def extractor(weights: Path | str, short_side: int | None = H, **kw) -> CLIPExtractor:
    cfg = FeatureConfig(name="clip", weights=str(weights), crop_size=S, **kw)
    return CLIPExtractor(cfg, short_side=short_side)


def direct(model, crops: np.ndarray) -> np.ndarray:
    """Mean embedding of (T, S, S, 3) uint8 crops, normalised by hand and fed to the model."""
    x = torch.from_numpy(crops.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(pixel_values=x).image_embeds.mean(0).numpy()


def test_shape_and_mean_of_frame_embeddings(tiny_dir, tiny_model):
    ex = extractor(tiny_dir)
    assert ex.dim == PROJ and ex.n_crops == 1
    snips = snippets(3)
    seen: list[int] = []
    feats = ex.extract(snips, on_snippet=seen.append)
    assert feats.shape == (1, 3, PROJ) and feats.dtype == np.float32
    assert sum(seen) == 3
    top, left = (H - S) // 2, (W - S) // 2
    for i, sn in enumerate(snips):
        ref = direct(tiny_model, sn.frames[:, top:top + S, left:left + S])
        np.testing.assert_allclose(feats[0, i], ref, atol=1e-5, rtol=0)


def test_five_crops_in_torchvision_order(tiny_dir, tiny_model):
    feats = extractor(tiny_dir, crop="5crop").extract(snippets(1))
    assert feats.shape == (5, 1, PROJ)
    frames = snippets(1)[0].frames
    boxes = [(0, 0), (0, W - S), (H - S, 0), (H - S, W - S), ((H - S) // 2, (W - S) // 2)]
    for k, (t, l) in enumerate(boxes):
        np.testing.assert_allclose(feats[k, 0], direct(tiny_model, frames[:, t:t + S, l:l + S]), atol=1e-5)


def test_batching_does_not_change_the_numbers(tiny_dir):
    snips = snippets(3)
    small = extractor(tiny_dir, crop="5crop", batch_size=3).extract(snips)
    large = extractor(tiny_dir, crop="5crop", batch_size=64).extract(snips)
    np.testing.assert_allclose(small, large, atol=1e-5, rtol=0)
    assert extractor(tiny_dir).extract([]).shape == (1, 0, PROJ)


def test_frame_stride(tiny_dir, tiny_model):
    ex = extractor(tiny_dir, frame_stride=4)
    feats = ex.extract(snippets(2))
    top, left = (H - S) // 2, (W - S) // 2
    for i, sn in enumerate(snippets(2)):
        ref = direct(tiny_model, sn.frames[::4, top:top + S, left:left + S])
        np.testing.assert_allclose(feats[0, i], ref, atol=1e-5)
    assert ex.spec.key != extractor(tiny_dir).spec.key


def test_bf16_close_to_fp32(tiny_dir):
    snips = snippets(2)
    ref = extractor(tiny_dir).extract(snips)
    low = extractor(tiny_dir, precision="bf16").extract(snips)
    cos = torch.nn.functional.cosine_similarity(torch.from_numpy(low[0]), torch.from_numpy(ref[0]), dim=1)
    assert (cos > 0.99).all(), cos


def test_cache_key_follows_weights_and_settings(tiny_dir, tmp_path):
    key = extractor(tiny_dir).spec.key
    assert key.startswith("clip-")
    assert extractor(tiny_dir).spec.key == key
    # content-based: a copy of the same files is the same model
    assert extractor(shutil.copytree(tiny_dir, tmp_path / "copy")).spec.key == key
    other = extractor(save_tiny(tmp_path / "other", seed=1))
    assert other.weights_sha256 != extractor(tiny_dir).weights_sha256 and other.spec.key != key
    assert extractor(tiny_dir, crop="5crop").spec.key != key
    assert extractor(tiny_dir, short_side=64).spec.key != key
    # device and batch size do not change the numbers, so not the key either
    assert extractor(tiny_dir, batch_size=1, device="auto").spec.key == key


def test_preprocessor_config_mean_std(tiny_dir, tmp_path):
    d = shutil.copytree(tiny_dir, tmp_path / "with_proc")
    (d / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    ex = extractor(d)
    assert ex.preprocess.mean == (0.5, 0.5, 0.5) and ex.spec.config["std"] == [0.5] * 3
    assert ex.spec.key != extractor(tiny_dir).spec.key
    assert not np.allclose(ex.extract(snippets(1)), extractor(tiny_dir).extract(snippets(1)))


def test_crop_resized_to_model_size(tiny_dir):
    cfg = FeatureConfig(name="clip", weights=str(tiny_dir), crop_size=40)
    ex = CLIPExtractor(cfg, short_side=H)
    assert ex.extract(snippets(1)).shape == (1, 1, PROJ)
    assert ex.spec.config["resize"] == "bicubic-antialias" and ex.spec.config["image_size"] == S


def test_full_clip_checkpoint_loads_its_vision_tower(tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModelWithProjection

    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=99, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(2)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=tiny_config().to_dict(), projection_dim=PROJ))
    full.eval().save_pretrained(tmp_path / "full")
    feats = extractor(tmp_path / "full").extract(snippets(1))
    vision = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "full", local_files_only=True).eval()
    frames = snippets(1)[0].frames
    top, left = (H - S) // 2, (W - S) // 2
    np.testing.assert_allclose(feats[0, 0], direct(vision, frames[:, top:top + S, left:left + S]), atol=1e-5)


def test_checkpoint_without_projection_is_an_error(tmp_path):
    from transformers import CLIPVisionModel

    CLIPVisionModel(tiny_config()).save_pretrained(tmp_path / "noproj")
    ex = extractor(tmp_path / "noproj")  # loads lazily
    with pytest.raises(FeatureError, match="missing"):
        ex.extract(snippets(1))


def test_setup_errors(tiny_dir, tmp_path, monkeypatch):
    with pytest.raises(FeatureError, match="not found"):
        extractor(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureError, match="config.json"):
        extractor(tmp_path / "empty")
    with pytest.raises(FeatureError, match="model directory"):
        extractor(tiny_dir / "config.json")
    with pytest.raises(FeatureError, match="fp16"):
        extractor(tiny_dir, precision="fp16", device="cpu")
    with pytest.raises(FeatureError, match="frame_stride"):
        extractor(tiny_dir, frame_stride=0)
    # A hub id absent from the cache while offline: a clear error, and no network access.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FeatureError, match="local directory"):
        extractor("vad-tests/no-such-model")


def test_build_extractor_dispatch(tiny_dir):
    cfg = FeatureConfig(name="clip", weights=str(tiny_dir), crop_size=S)
    assert isinstance(build_extractor(cfg, short_side=H), CLIPExtractor)
    with pytest.raises(FeatureError, match="available: i3d, clip"):
        build_extractor(dataclasses.replace(cfg, name="c3d"), short_side=H)
    with pytest.raises(FeatureError, match="frame_stride"):
        I3DExtractor(FeatureConfig(frame_stride=2), short_side=256)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu(tiny_dir):
    snips = snippets(2)
    ref = extractor(tiny_dir, crop="5crop").extract(snips)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # compare true fp32 matmuls
    try:
        gpu = extractor(tiny_dir, crop="5crop", device="cuda")
        assert gpu.spec.key == extractor(tiny_dir, crop="5crop").spec.key
        np.testing.assert_allclose(gpu.extract(snips), ref, atol=1e-4, rtol=1e-3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    for precision in ("bf16", "fp16"):
        low = extractor(tiny_dir, crop="5crop", device="cuda", precision=precision).extract(snips)
        cos = torch.nn.functional.cosine_similarity(torch.from_numpy(low), torch.from_numpy(ref), dim=-1)
        assert (cos > 0.99).all(), (precision, cos)


def test_score_cli_with_clip(tiny_dir, tmp_path):
    from pipelines.cli import main

    video = write_lossless_video(tmp_path / "clip.mkv", make_frames(96, 48, 64, seed=3), 25.0)
    out = tmp_path / "run"
    code = main(["score", "--no-progress", "--executor", "local", str(video), "--out", str(out),
                 "--set", "head.type=reference", "--set", "features.name=clip", "--set", f"features.weights={tiny_dir}",
                 "--set", "io.short_side=32", "--set", "features.crop_size=32",
                 "--set", "head.min_reference_snippets=2", "--no-cache"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extractor"]["name"] == "clip"
    assert summary["videos"][0]["status"] == "ok", summary["videos"][0]
    with open(out / "scores" / "clip.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in rows] == list(range(96))
    assert all(np.isfinite(float(r["score"])) for r in rows)
