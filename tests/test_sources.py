"""Frame sources and the snippet ring buffer: a file read as a stream gives the file's
snippets bit for bit, whatever the block size, stride and tail policy."""

from __future__ import annotations

import numpy as np
import pytest

from tests.videos import make_frames, write_lossless_video
from vad.clips import SnippetBuffer, SnippetSpec, iter_snippets, snippet_ranges, snippets_from_source
from vad.io import FileSource, IterableSource, open_video

SPECS = [SnippetSpec(16, 16, "drop"), SnippetSpec(16, 16, "pad"), SnippetSpec(16, 8, "pad"),
         SnippetSpec(8, 12, "drop"), SnippetSpec(8, 12, "pad"), SnippetSpec(4, 3, "drop")]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = make_frames(45, 24, 32, seed=5)  # 45 frames: every spec above leaves a tail
    path = write_lossless_video(tmp_path_factory.mktemp("src") / "v.mkv", frames, 10.0)
    return path, frames


def _expected(frames: np.ndarray, spec: SnippetSpec) -> list[tuple[int, int, int, np.ndarray]]:
    out = []
    for i, (a, b) in enumerate(snippet_ranges(len(frames), spec)):
        real = frames[a:b]
        pad = np.repeat(real[-1:], spec.length - len(real), axis=0)
        out.append((i, a, b, np.concatenate([real, pad])))
    return out


def _as_tuples(snippets) -> list[tuple[int, int, int, np.ndarray]]:
    return [(s.index, s.start, s.stop, s.frames) for s in snippets]


def _same(got, want) -> None:
    assert [g[:3] for g in got] == [w[:3] for w in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g[3], w[3])


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_file_source_snippets_equal_the_file_snippets(video, spec):
    path, frames = video
    want = _expected(frames, spec)
    with open_video(path) as reader:
        _same(_as_tuples(iter_snippets(reader, spec)), want)
    for block in (1, 5, 16, 64):
        with FileSource(path, block=block) as source:
            assert source.n_frames == len(source) == 45 and source.fps == 10.0
            _same(_as_tuples(snippets_from_source(source, spec)), want)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_frames_pushed_one_by_one_give_the_same_snippets(video, spec):
    """A stream (no frame count) pushes frames one at a time; the snippets are the file's."""
    _, frames = video
    source = IterableSource(iter(list(frames)), fps=10.0, source_id="cam")
    assert source.n_frames is None
    with pytest.raises(TypeError, match="no known length"):
        len(source)
    got = _as_tuples(snippets_from_source(source, spec))
    _same(got, _expected(frames, spec))


def test_segments_seeked_into_a_file_continue_its_numbering(video):
    path, frames = video
    spec = SnippetSpec(8, 8, "pad")
    want = _expected(frames, spec)
    with open_video(path) as reader:
        _same(_as_tuples(iter_snippets(reader, spec, start_snippet=2, stop_snippet=4)), want[2:4])
        _same(_as_tuples(iter_snippets(reader, spec, start_snippet=4)), want[4:])


def test_frame_source_frames_carry_index_and_times(video):
    path, frames = video
    with FileSource(path, start=10, stop=14) as source:
        got = list(source)
    assert [f.index for f in got] == [10, 11, 12, 13]
    assert [f.pts_s for f in got] == pytest.approx([1.0, 1.1, 1.2, 1.3])
    assert all(f.wall_time > 0 for f in got)
    np.testing.assert_array_equal(np.stack([f.image for f in got]), frames[10:14])


def test_buffer_reset_and_resolution_change():
    spec = SnippetSpec(4, 4, "drop")
    buf = SnippetBuffer(spec)
    assert buf.push(np.zeros((3, 8, 8, 3), np.uint8)) == []
    with pytest.raises(ValueError, match="frame shape changed"):
        buf.push(np.zeros((8, 10, 3), np.uint8))
    buf.reset()  # after a reconnect at another resolution
    (snippet,) = buf.push(np.ones((4, 8, 10, 3), np.uint8))
    assert (snippet.index, snippet.start, snippet.frames.shape) == (0, 0, (4, 8, 10, 3))


def test_iterable_source_rejects_frames_that_are_not_rgb_uint8():
    source = IterableSource([np.zeros((4, 4), np.uint8)], fps=None)
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\) uint8 RGB"):
        list(source)
