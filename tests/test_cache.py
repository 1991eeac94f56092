"""Feature cache: reuse only on a full match, atomic writes, list export."""

import json
import os

import numpy as np
import pytest

from vad.cache import ExtractorSpec, FeatureCache, VideoFingerprint
from vad.clips import SnippetSpec


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "cam1.avi"
    path.write_bytes(b"not really a video, but a file with a fingerprint")
    return path


def _spec(**config):
    return ExtractorSpec("i3d", {"crop": "center", **config}, weights_sha256="ab" * 32)


def _save(cache, video, feats, spec=None, snippet=SnippetSpec()):
    return cache.save("cam1", VideoFingerprint.of(video), snippet, spec or _spec(), feats, fps=10.0, n_frames=100)


def test_roundtrip_and_layout(tmp_path, video):
    cache = FeatureCache(tmp_path / "cache")
    feats = np.random.default_rng(0).normal(size=(2, 6, 8)).astype(np.float32)
    _save(cache, video, feats)
    entry = cache.load("cam1", VideoFingerprint.of(video), SnippetSpec(), _spec())
    assert entry is not None
    np.testing.assert_array_equal(entry.features, feats)
    directory = cache.entry_dir(_spec())
    assert sorted(p.name for p in directory.iterdir()) == ["cam1.json", "cam1__0.npy", "cam1__1.npy"]
    manifest = json.loads((directory / "cam1.json").read_text())
    assert manifest["n_frames"] == 100 and manifest["fps"] == 10.0
    assert manifest["snippet"] == {"length": 16, "stride": 16, "tail": "drop"}
    assert manifest["extractor"]["weights_sha256"] == "ab" * 32
    assert manifest["video"]["size"] == video.stat().st_size
    assert np.load(directory / "cam1__1.npy").shape == (6, 8)


@pytest.mark.parametrize(
    "change",
    ["video_modified", "snippet_policy", "extractor_config", "weights"],
)
def test_stale_entries_are_not_reused(tmp_path, video, change):
    cache = FeatureCache(tmp_path / "cache")
    _save(cache, video, np.ones((1, 3, 4), np.float32))
    spec, snippet = _spec(), SnippetSpec()
    if change == "video_modified":
        video.write_bytes(b"a different file now")
        st = video.stat()
        os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "snippet_policy":
        snippet = SnippetSpec(tail="pad")
    elif change == "extractor_config":
        spec = _spec(crop_size=112)
        # A different config is a different entry directory altogether.
        assert spec.key != _spec().key
    else:
        spec = ExtractorSpec("i3d", {"crop": "center"}, weights_sha256="cd" * 32)
    assert cache.load("cam1", VideoFingerprint.of(video), snippet, spec) is None


def test_missing_crop_file_or_bad_shape_means_recompute(tmp_path, video):
    cache = FeatureCache(tmp_path / "cache")
    _save(cache, video, np.ones((2, 3, 4), np.float32))
    (cache.entry_dir(_spec()) / "cam1__1.npy").unlink()
    assert cache.load("cam1", VideoFingerprint.of(video), SnippetSpec(), _spec()) is None
    _save(cache, video, np.ones((2, 3, 4), np.float32))
    np.save(cache.entry_dir(_spec()) / "cam1__0.npy", np.ones((5, 4), np.float32))
    assert cache.load("cam1", VideoFingerprint.of(video), SnippetSpec(), _spec()) is None


def test_interrupted_write_leaves_no_entry(tmp_path, video, monkeypatch):
    """A crash between crop files must not leave a manifest (the completion marker)."""
    import vad.cache.feature_cache as fc

    cache = FeatureCache(tmp_path / "cache")
    _save(cache, video, np.ones((2, 3, 4), np.float32))  # an old complete entry
    calls = {"n": 0}
    real = fc.save_npy_atomic

    def dying(path, array):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        real(path, array)

    monkeypatch.setattr(fc, "save_npy_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        _save(cache, video, np.zeros((2, 3, 4), np.float32))
    directory = cache.entry_dir(_spec())
    assert not (directory / "cam1.json").exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
    assert cache.load("cam1", VideoFingerprint.of(video), SnippetSpec(), _spec()) is None


def test_export_list_urdmu_layout(tmp_path, video):
    cache = FeatureCache(tmp_path / "cache")
    _save(cache, video, np.ones((3, 2, 4), np.float32))
    out = tmp_path / "list.txt"
    n = cache.export_list(out, _spec().key)
    lines = out.read_text().splitlines()
    assert n == 3 and [l.rsplit("/", 1)[1] for l in lines] == ["cam1__0.npy", "cam1__1.npy", "cam1__2.npy"]
    assert all(os.path.isabs(l) and os.path.exists(l) for l in lines)
    assert cache.export_list(out, _spec().key, crops="first") == 1
    with pytest.raises(FileNotFoundError, match="no cache entries"):
        cache.export_list(out, "i3d-0000000000")
