"""vad.clips: snippet ranges, snippet iteration over real decoded videos, score expansion,
and the torchvision-ordered crops."""

from __future__ import annotations

import numpy as np
import pytest

from tests.videos import make_frames, write_lossless_video
from vad.clips import (
    N_CROPS,
    SnippetSpec,
    crop_views,
    expand_snippet_scores,
    iter_snippets,
    resize_short_side,
    snippet_ranges,
)
from vad.io import open_video

# -- SnippetSpec / snippet_ranges ---------------------------------------------------------


def test_spec_validation():
    assert SnippetSpec() == SnippetSpec(16, 16, "drop")
    for bad in [dict(length=0), dict(stride=-1), dict(tail="repeat"), dict(length=2.5), dict(stride=True)]:
        with pytest.raises(ValueError, match="SnippetSpec"):
            SnippetSpec(**bad)


def test_ranges_drop_and_pad():
    assert snippet_ranges(40, SnippetSpec(16, 16, "drop")) == [(0, 16), (16, 32)]
    assert snippet_ranges(40, SnippetSpec(16, 16, "pad")) == [(0, 16), (16, 32), (32, 40)]
    assert snippet_ranges(32, SnippetSpec(16, 16, "pad")) == [(0, 16), (16, 32)]
    assert snippet_ranges(10, SnippetSpec(16, 16, "drop")) == []
    assert snippet_ranges(10, SnippetSpec(16, 16, "pad")) == [(0, 10)]
    assert snippet_ranges(0, SnippetSpec(16, 16, "pad")) == []
    assert snippet_ranges(16, SnippetSpec(16, 16, "drop")) == [(0, 16)]


def test_ranges_overlap_and_gaps():
    assert snippet_ranges(40, SnippetSpec(16, 8, "drop")) == [(0, 16), (8, 24), (16, 32), (24, 40)]
    # Frames 32..39 are already in (24, 40): no extra partial snippet.
    assert snippet_ranges(40, SnippetSpec(16, 8, "pad")) == [(0, 16), (8, 24), (16, 32), (24, 40)]
    assert snippet_ranges(44, SnippetSpec(16, 8, "pad")) == [(0, 16), (8, 24), (16, 32), (24, 40), (32, 44)]
    assert snippet_ranges(50, SnippetSpec(16, 20, "drop")) == [(0, 16), (20, 36)]
    assert snippet_ranges(50, SnippetSpec(16, 20, "pad")) == [(0, 16), (20, 36), (40, 50)]
    assert snippet_ranges(38, SnippetSpec(16, 20, "pad")) == [(0, 16), (20, 36)]  # next start 40 >= 38


# -- iter_snippets -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video45(tmp_path_factory):
    frames = make_frames(45, 48, 64, seed=7)
    path = write_lossless_video(tmp_path_factory.mktemp("snip") / "v45.mkv", frames, 25)
    return path, frames


@pytest.mark.parametrize("backend", ["decord", "pyav", "opencv"])
def test_iter_snippets_tiling_reads_each_frame_once(video45, backend):
    path, frames = video45
    spec = SnippetSpec(16, 16, "pad")
    with open_video(path, backend) as reader:
        calls = []
        read = reader.read
        reader.read = lambda a, b: (calls.append((a, b)), read(a, b))[1]
        snippets = list(iter_snippets(reader, spec))
    assert calls == [(0, 16), (16, 32), (32, 45)]
    assert [(s.index, s.start, s.stop, s.n_real) for s in snippets] == [
        (0, 0, 16, 16), (1, 16, 32, 16), (2, 32, 45, 13)]
    for s in snippets:
        assert s.frames.shape == (16, 48, 64, 3) and s.frames.dtype == np.uint8
        np.testing.assert_array_equal(s.frames[: s.n_real], frames[s.start : s.stop])
    # The padded tail repeats the last real frame.
    last = snippets[-1].frames
    np.testing.assert_array_equal(last[13:], np.repeat(frames[44:45], 3, axis=0))


def test_iter_snippets_drop_and_window(video45):
    path, frames = video45
    with open_video(path, "pyav") as reader:
        got = list(iter_snippets(reader, SnippetSpec(16, 16, "drop")))
        assert [(s.start, s.stop) for s in got] == [(0, 16), (16, 32)]
        part = list(iter_snippets(reader, SnippetSpec(8, 8), start_snippet=2, stop_snippet=4))
        assert [(s.index, s.start, s.stop) for s in part] == [(2, 16, 24), (3, 24, 32)]
        np.testing.assert_array_equal(part[1].frames, frames[24:32])
        assert list(iter_snippets(reader, SnippetSpec(8, 8), start_snippet=9)) == []
        assert len(list(iter_snippets(reader, SnippetSpec(8, 8), stop_snippet=100))) == 5


def test_iter_snippets_overlap_reads_new_frames_only(video45):
    path, frames = video45
    spec = SnippetSpec(16, 4, "pad")
    with open_video(path, "pyav") as reader:
        calls = []
        read = reader.read
        reader.read = lambda a, b: (calls.append((a, b)), read(a, b))[1]
        snippets = []
        for s in iter_snippets(reader, spec):
            snippets.append((s.start, s.stop, s.frames.copy()))
            s.frames[:] = 0  # a consumer scribbling on its snippet must not affect the next
    assert [(a, b) for a, b, _ in snippets] == snippet_ranges(45, spec)
    total = sum(b - a for a, b in calls)
    assert total == 45  # every frame decoded exactly once
    for a, b, f in snippets:
        np.testing.assert_array_equal(f[: b - a], frames[a:b])
        assert f.shape[0] == 16


def test_iter_snippets_gaps(video45):
    path, frames = video45
    spec = SnippetSpec(8, 12, "pad")
    with open_video(path, "opencv") as reader:
        snippets = list(iter_snippets(reader, spec))
    assert [(s.start, s.stop) for s in snippets] == [(0, 8), (12, 20), (24, 32), (36, 44)]
    for s in snippets:
        np.testing.assert_array_equal(s.frames, frames[s.start : s.stop])


# -- expand_snippet_scores -------------------------------------------------------------------


def test_expand_tiling_with_drop_tail():
    scores = np.array([0.1, 0.5, 0.9], np.float32)
    out = expand_snippet_scores(scores, 50, SnippetSpec(16, 16, "drop"))
    assert out.shape == (50,) and out.dtype == np.float32
    expected = np.concatenate([np.repeat(scores, 16), np.full(2, 0.9, np.float32)])
    np.testing.assert_array_equal(out, expected)


def test_expand_pad_tail_covers_everything():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    out = expand_snippet_scores(scores, 50, SnippetSpec(16, 16, "pad"))
    np.testing.assert_array_equal(out, np.repeat(scores, [16, 16, 16, 2]))


def test_expand_overlap_averages():
    # length 4, stride 2 over 9 frames: snippets [0,4) [2,6) [4,8) -> frame 8 uncovered.
    scores = np.array([1.0, 3.0, 5.0])
    out = expand_snippet_scores(scores, 9, SnippetSpec(4, 2))
    np.testing.assert_array_equal(out, [1, 1, 2, 2, 4, 4, 5, 5, 5])


def test_expand_gaps_take_previous_snippet():
    # length 2, stride 4 over 10 frames: [0,2) [4,6) [8,10); frames 2,3 and 6,7 uncovered.
    out = expand_snippet_scores(np.array([1.0, 2.0, 3.0]), 10, SnippetSpec(2, 4))
    np.testing.assert_array_equal(out, [1, 1, 1, 1, 2, 2, 2, 2, 3, 3])


def test_expand_multi_dim_and_fewer_scores():
    scores = np.arange(6, dtype=np.float64).reshape(2, 3)
    out = expand_snippet_scores(scores, 40, SnippetSpec(16, 16))
    assert out.shape == (40, 3)
    np.testing.assert_array_equal(out[:16], np.tile(scores[0], (16, 1)))
    np.testing.assert_array_equal(out[16:], np.tile(scores[1], (24, 1)))  # tail takes the last


def test_expand_errors():
    with pytest.raises(ValueError, match="empty"):
        expand_snippet_scores(np.array([]), 10, SnippetSpec())
    with pytest.raises(ValueError, match="do not fit"):
        expand_snippet_scores(np.ones(4), 40, SnippetSpec(16, 16))
    with pytest.raises(ValueError):
        expand_snippet_scores(np.ones(1), 0, SnippetSpec())


def test_expand_int_scores_become_float():
    out = expand_snippet_scores(np.array([0, 1]), 4, SnippetSpec(2, 2))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [0, 0, 1, 1])


# -- crops -------------------------------------------------------------------------------------


def _frames(t=3, h=9, w=12):
    return np.random.default_rng(0).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_center_crop_matches_torchvision_rounding():
    f = _frames(h=9, w=12)
    out = crop_views(f, 4, "center")
    assert out.shape == (1, 3, 4, 4, 3)
    # top = round(5 / 2) = 2 (half to even), left = round(8 / 2) = 4
    np.testing.assert_array_equal(out[0], f[:, 2:6, 4:8])
    g = _frames(h=10, w=11)
    # top = round(2.0) = 2, left = round(2.5) = 2
    np.testing.assert_array_equal(crop_views(g, 6, "center")[0], g[:, 2:8, 2:8])
    assert N_CROPS == {"center": 1, "5crop": 5, "10crop": 10}


def test_ten_crop_positions_and_order():
    f = _frames(h=9, w=12)
    s = 5
    out = crop_views(f, s, "10crop")
    assert out.shape == (10, 3, s, s, 3) and out.dtype == np.uint8
    ct, cl = 2, 4  # round((9-5)/2)=2, round((12-5)/2)=round(3.5)=4
    five = [f[:, :s, :s], f[:, :s, -s:], f[:, -s:, :s], f[:, -s:, -s:], f[:, ct:ct + s, cl:cl + s]]
    flipped = f[:, :, ::-1]
    five_flipped = [flipped[:, :s, :s], flipped[:, :s, -s:], flipped[:, -s:, :s], flipped[:, -s:, -s:],
                    flipped[:, ct:ct + s, cl:cl + s]]
    for k, view in enumerate(five + five_flipped):
        np.testing.assert_array_equal(out[k], view, err_msg=f"crop {k}")
    # Flipped top-left is the mirror of the original top-right corner.
    np.testing.assert_array_equal(out[5], f[:, :s, -s:][:, :, ::-1])
    np.testing.assert_array_equal(crop_views(f, s, "5crop"), out[:5])


def test_crop_224_on_256_resized_frames():
    frames = make_frames(2, 48, 64, seed=1)
    big = resize_short_side(frames, 256)
    assert big.shape == (2, 256, 341, 3)
    out = crop_views(big, 224, "10crop")
    assert out.shape == (10, 2, 224, 224, 3)
    np.testing.assert_array_equal(out[4], big[:, 16:240, 58:282])  # round(117/2)=58 (half to even)


def test_crop_errors():
    f = _frames(h=9, w=12)
    with pytest.raises(ValueError, match="smaller than"):
        crop_views(f, 10, "center")
    with pytest.raises(ValueError, match="unknown crop mode"):
        crop_views(f, 4, "3crop")
    with pytest.raises(ValueError):
        crop_views(f[0], 4)
