"""Inference engines behind the I3D extractor: OpenVINO fp32 gives the PyTorch features (and
shares their cache entries), converted models are cached and rebuilt when damaged, int8 has
its own key and calibrates on the footage it is given, and a model that cannot be loaded is
one job error before any video is decoded."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch

from tests.test_score_cli import SMALL, moving_square_video, run_cli
from tests.videos import require_sample, skip_or_fail
from vad.clips import SnippetSpec, iter_snippets
from vad.config import FeatureConfig
from vad.features.base import FeatureError
from vad.features.engines import resolve_engine
from vad.features.extractor import build_extractor
from vad.io import open_video

TINY = dict(crop_size=32, batch_size=2)


def _snippets(path, short_side, n=None):
    with open_video(path, short_side=short_side) as reader:
        out = list(iter_snippets(reader, SnippetSpec()))
    return out[:n] if n else out


def _cfg(weights, tmp_path, **kw) -> FeatureConfig:
    return FeatureConfig(weights=str(weights), engine_cache=str(tmp_path / "engines"), **{**TINY, **kw})


@pytest.fixture(scope="module")
def square(tmp_path_factory):
    d = tmp_path_factory.mktemp("eng")
    return moving_square_video(d / "a.mkv", 96), moving_square_video(d / "b.mkv", 80, anomaly=(30, 60))


def test_engine_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_engine("auto", cpu, "fp32") == "openvino"
    assert resolve_engine("auto", cuda, "fp16") == "torch"
    assert resolve_engine("auto", cpu, "int8") == "openvino"
    with pytest.raises(FeatureError, match="int8 needs features.engine=openvino"):
        resolve_engine("torch", cpu, "int8")
    with pytest.raises(FeatureError, match="runs on the CPU"):
        resolve_engine("openvino", cuda, "fp32")
    with pytest.raises(FeatureError, match="precision fp32 or int8"):
        resolve_engine("openvino", cpu, "bf16")
    with pytest.raises(FeatureError, match="features.engine must be one of"):
        resolve_engine("tensorrt", cpu, "fp32")


def test_openvino_fp32_equals_torch_and_shares_cache_entries(tmp_path, random_i3d, square):
    snippets = _snippets(square[0], 32)
    torch_x = build_extractor(_cfg(random_i3d, tmp_path, engine="torch"), short_side=32)
    ov_x = build_extractor(_cfg(random_i3d, tmp_path, engine="openvino"), short_side=32)
    assert (torch_x.engine_name, ov_x.engine_name) == ("torch", "openvino")
    assert torch_x.spec.key == ov_x.spec.key  # same features, same cache entries
    a, b = torch_x.extract(snippets), ov_x.extract(snippets)  # 6 snippets, batches of 2
    assert a.shape == b.shape == (1, 6, 1024)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_converted_model_is_cached_and_rebuilt_when_damaged(tmp_path, random_i3d, square, caplog):
    cfg = _cfg(random_i3d, tmp_path, engine="openvino")
    first = build_extractor(cfg, short_side=32).load()
    (entry,) = (tmp_path / "engines").iterdir()
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["input"] == [2, 16, 32, 32, 3] and manifest["precision"] == "fp32"
    stamp = (entry / "model.bin").stat().st_mtime_ns
    snippets = _snippets(square[0], 32, 2)
    want = first.extract(snippets)

    build_extractor(cfg, short_side=32).load()  # reused: no second conversion
    assert (entry / "model.bin").stat().st_mtime_ns == stamp

    data = (entry / "model.bin").read_bytes()
    (entry / "model.bin").write_bytes(data[: len(data) // 2])  # a half-written or damaged file
    with caplog.at_level("WARNING", logger="vad.features.engines"):
        again = build_extractor(cfg, short_side=32).load()
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(again.extract(snippets), want)

    # another input shape is another entry
    build_extractor(dataclasses.replace(cfg, batch_size=1), short_side=32).load()
    assert len(list((tmp_path / "engines").iterdir())) == 2


def test_int8_has_its_own_key_and_calibrates_on_the_given_footage(tmp_path, random_i3d, square):
    a, b = square
    fp32 = build_extractor(_cfg(random_i3d, tmp_path), short_side=32)
    int8 = build_extractor(_cfg(random_i3d, tmp_path, precision="int8", calibration=str(a),
                                calibration_snippets=4), short_side=32)
    other = build_extractor(_cfg(random_i3d, tmp_path, precision="int8", calibration=str(b),
                                 calibration_snippets=4), short_side=32)
    assert len({fp32.spec.key, int8.spec.key, other.spec.key}) == 3
    assert int8.spec.config["calibration"] == int8.calibration_id != other.calibration_id
    assert len(int8.calibration_batches()) == 2  # 4 snippets in batches of 2
    snippets = _snippets(b, 32)
    x, y = fp32.extract(snippets)[0], int8.extract(snippets)[0]
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert cos.min() > 0.95, cos
    assert not np.array_equal(x, y)  # it is quantised
    with pytest.raises(FeatureError, match="needs calibration footage"):
        build_extractor(_cfg(random_i3d, tmp_path, precision="int8"), short_side=32).load()


def test_int8_calibrates_on_the_jobs_own_videos_when_none_is_given(tmp_path, random_i3d, square):
    out = tmp_path / "run"
    sets = [*SMALL, f"features.weights={random_i3d}", f"features.engine_cache={tmp_path / 'engines'}",
            "features.precision=int8", "features.calibration_snippets=4", "features.batch_size=2",
            f"cache.root={tmp_path / 'cache'}"]
    assert run_cli([str(square[0]), str(square[1]), "--out", str(out), *sum((["--set", s] for s in sets), [])]) == 0
    listed = (out / "calibration.list").read_text().split()
    assert sorted(listed) == sorted(str(p.resolve()) for p in square)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_ok"] == 2
    assert (summary["extractor"]["engine"], summary["extractor"]["precision"]) == ("openvino", "int8")
    assert (out / "config.yaml").read_text().count("calibration.list") == 1


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_unloadable_weights_fail_the_job_before_any_decoding(tmp_path, square, capsys):
    bad = tmp_path / "i3d-kinetics-400.ckpt"
    bad.write_bytes(pickle.dumps({"params": _Evil()}))
    out = tmp_path / "run"
    code = run_cli([str(square[0]), str(square[1]), "--out", str(out), "--set", f"features.weights={bad}",
                    *sum((["--set", s] for s in SMALL), [])])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot load the i3d model" in err and str(bad) in err and "Traceback" not in err
    assert not (out / "records").exists() and not (out / "summary.json").exists()


@pytest.mark.slow
def test_openvino_fp32_equals_torch_on_the_real_weights_and_sample_video(tmp_path):
    from vad.features.i3d_weights import find_default_i3d_weights

    sample = require_sample("vtest.avi")
    if find_default_i3d_weights() is None:
        skip_or_fail("the I3D weights are not set up (run `make test` / `vad assets fetch`)")
    snippets = _snippets(sample, 256, 8)
    cfg = FeatureConfig(engine_cache=str(tmp_path / "engines"))
    a = build_extractor(dataclasses.replace(cfg, engine="torch"), short_side=256).extract(snippets)
    b = build_extractor(dataclasses.replace(cfg, engine="openvino"), short_side=256).extract(snippets)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_clip_on_openvino_equals_pytorch_and_shares_cache_entries(tmp_path):
    from tests.test_clip import S, save_tiny, snippets
    from vad.features.clip import CLIPExtractor

    tiny = save_tiny(tmp_path / "tiny", seed=0)

    def clip(engine: str) -> CLIPExtractor:
        cfg = FeatureConfig(name="clip", weights=str(tiny), crop_size=S, engine=engine,
                            engine_cache=str(tmp_path / "engines"))
        return CLIPExtractor(cfg, short_side=None)

    ov_x, torch_x = clip("openvino"), clip("torch")
    assert (ov_x.engine_name, torch_x.engine_name, clip("auto").engine_name) == ("openvino", "torch", "openvino")
    assert ov_x.spec.key == torch_x.spec.key
    batch = snippets(3)
    np.testing.assert_allclose(ov_x.extract(batch), torch_x.extract(batch), atol=1e-4, rtol=0)
    (entry,) = (tmp_path / "engines").iterdir()
    assert entry.name.startswith("clip-openvino-fp32-")
    with pytest.raises(FeatureError, match="int8 is built for I3D only"):
        CLIPExtractor(FeatureConfig(name="clip", weights=str(tiny), precision="int8"), short_side=None)
