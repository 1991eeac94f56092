"""Shared fixtures. Keep this small; helpers live in ``tests/videos.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.videos import make_frames, write_lossless_video

LOSSLESS_FPS = 25.0


@pytest.fixture(scope="session")
def lossless_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, float]:
    """(path, frames, fps): 40 distinct 64x48 frames at 25 fps, FFV1 in .mkv.

    Decodes bit-exactly with every backend. Session-scoped: do not modify the file.
    """
    frames = make_frames(40, 48, 64, seed=0)
    path = write_lossless_video(tmp_path_factory.mktemp("lossless") / "clip.mkv", frames, LOSSLESS_FPS)
    frames.setflags(write=False)
    return path, frames, LOSSLESS_FPS


@pytest.fixture(scope="session")
def random_i3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight I3D saved in the pytorch-i3d state-dict layout."""
    import torch

    from vad.features.i3d import InceptionI3d

    torch.manual_seed(0)
    model = InceptionI3d().eval()  # its parameter names are the pytorch-i3d checkpoint names
    path = tmp_path_factory.mktemp("weights") / "random_i3d.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one torch thread is faster than two fighting over a loaded CI machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict[str, Path]:
    """tests/rtsp.py's planted walkway: normal reference footage, and the block from 8 s to 16 s
    (the live-monitor and dashboard tests; skips or fails without the RTSP server)."""
    from tests.rtsp import planted_walkway_footage, rtsp_available
    from tests.videos import skip_or_fail

    reason = rtsp_available()
    if reason:
        skip_or_fail(reason)
    return planted_walkway_footage(tmp_path_factory.mktemp("footage"))
