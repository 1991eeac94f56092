"""RTFM head: the multi-scale temporal network's layout, top-k by feature magnitude and the loss
terms against hand-computed values, persistence, and that it is refused where a causal head is
needed (streaming, `vad monitor`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vad.heads import FeatureBatch, HeadError, RTFMConfig, RTFMHead, build_module, load_head, load_module, save_module
from vad.heads.base import UnitTiming
from vad.heads.modules import segment_features
from vad.heads.rtfm import RTFMOutput, _NonLocal1d, rtfm_loss, top_k_by_magnitude
from vad.heads.trained import TrainedHead, score_snippets


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


TINY = {"input_dim": 16, "branch_dim": 4, "hidden": (8, 4)}


# --------------------------------------------------------------------------- the network


def test_widths_scale_with_the_input_dimension():
    release = RTFMConfig(input_dim=2048)  # the authors' 2048-d I3D: 512-wide branches, FC 512-128
    assert release.branch_dim == 512 and release.hidden == (512, 128)
    assert (RTFMConfig(input_dim=1024).branch_dim, RTFMConfig(input_dim=1024).hidden) == (256, (256, 64))
    assert (RTFMConfig(input_dim=512).branch_dim, RTFMConfig(input_dim=512).hidden) == (128, (128, 32))
    cfg = RTFMConfig()
    assert (cfg.dilations, cfg.k, cfg.n_segments, cfg.margin, cfg.alpha) == ((1, 2, 4), 3, 32, 100.0, 1e-4)
    assert (cfg.dropout, cfg.lambda_smooth, cfg.lambda_sparse) == (0.7, 8e-4, 8e-3)
    with pytest.raises(ValueError):
        RTFMConfig(dilations=())
    with pytest.raises(ValueError):
        build_module("rtfm", {"n_experts": 2})


def test_core_layout_and_shapes():
    head = RTFMHead(RTFMConfig(**TINY))
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.dilation[0], c.padding[0]) for c in head.dilated] == [
        (16, 4, 3, 1, 1), (16, 4, 3, 2, 2), (16, 4, 3, 4, 4)]
    assert head.local.kernel_size == (1,) and head.local.bias is None
    assert head.non_local.theta.out_channels == 2  # inner width = branch // 2
    assert (head.fuse.in_channels, head.fuse.out_channels, head.fuse.kernel_size, head.fuse.bias) == (16, 16, (3,), None)
    assert [(fc.in_features, fc.out_features) for fc in head.fc] + [(head.fc_out.in_features, 1)] == [(16, 8), (8, 4), (4, 1)]
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in head.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 5  # 3 branches, non-local, fusion
    assert float(head.non_local.out_norm.weight.detach().abs().sum()) == 0.0  # the non-local block starts as the identity
    assert head.context == (-1, -1)
    head.eval()
    x = torch.rand(3, 7, 16)
    out = head.components(x)
    assert out.score.shape == (3, 7) and out.features.shape == (3, 7, 16) and out.magnitude.shape == (3, 7)
    assert bool(((out.score >= 0) & (out.score <= 1)).all())
    torch.testing.assert_close(out.magnitude, out.features.norm(dim=-1))
    torch.testing.assert_close(head(x), out.score)
    assert head(torch.rand(1, 1, 16)).shape == (1, 1)  # a one-snippet video
    # Whole-video context once the non-local block is on: the last of 12 snippets, beyond the
    # convolutions' reach (+-5), changes the first one's score.
    x = torch.rand(1, 12, 16)
    y = x.clone()
    y[:, -1] += 5.0
    with torch.no_grad():
        assert torch.equal(head(y)[:, 0], head(x)[:, 0])  # at initialisation the block is the identity
        head.non_local.out_norm.weight.fill_(1.0)
        assert not torch.allclose(head(y)[:, 0], head(x)[:, 0])


def test_non_local_block_equals_the_explicit_affinity_matrix():
    torch.manual_seed(0)
    block = _NonLocal1d(6, 3).eval()
    torch.nn.init.normal_(block.out_norm.weight)  # not the identity, so the test means something
    x = torch.randn(2, 6, 9)
    m = torch.ones(2, 1, 9)
    m[1, :, 6:] = 0.0
    got = block(x, m)
    for b, t in ((0, 9), (1, 6)):
        xb = x[b:b + 1, :, :t]
        theta, phi, g = block.theta(xb)[0], block.phi(xb)[0], block.g(xb)[0]  # (C', T)
        affinity = theta.T @ phi / t  # (T, T): the release's f / N
        y = (affinity @ g.T).T[None]  # (1, C', T)
        want = xb + block.out_norm(block.out(y))
        torch.testing.assert_close(got[b:b + 1, :, :t], want, rtol=1e-5, atol=1e-5)


def test_segments_are_raw_disjoint_means():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)  # snippet i = (2i, 2i + 1)
    # edges 0, 2.5, 5: disjoint -> snippets [0, 1] and [2, 3, 4]; overlapping -> [0, 1, 2] and [2, 3, 4]
    np.testing.assert_allclose(segment_features(x, 2, normalize=False, overlap=False), [[1, 2], [6, 7]])
    np.testing.assert_allclose(segment_features(x, 2, normalize=False), [[2, 3], [6, 7]])
    # A video shorter than the segment count repeats snippets: edges 0, .75, 1.5, 2.25, 3.
    short = np.array([[1.0], [2.0], [3.0]], np.float32)
    np.testing.assert_allclose(segment_features(short, 4, normalize=False, overlap=False), [[1], [1], [2], [3]])
    assert RTFMHead.segment_pooling == {"normalize": False, "overlap": False}


# --------------------------------------------------------------------------- selection and loss


def test_top_k_by_magnitude():
    mag = _t([[5, 1, 10, 0, 2]])
    full = torch.ones(1, 5, dtype=torch.bool)
    idx, counted = top_k_by_magnitude(mag, full, 3)
    assert idx.tolist() == [[2, 0, 4]] and counted.all()
    keep = torch.tensor([[False, True, True, True, True]])  # snippet 0 dropped from the candidates
    assert top_k_by_magnitude(mag, full, 3, keep)[0].tolist() == [[2, 4, 1]]
    keep = torch.tensor([[False, False, True, False, True]])  # fewer kept than k: dropped ones fill in
    assert top_k_by_magnitude(mag, full, 3, keep)[0].tolist() == [[2, 4, 0]]
    padded = torch.tensor([[True, True, False, False, False]])  # two valid snippets, k = 3
    idx, counted = top_k_by_magnitude(mag, padded, 3)
    assert idx[0, :2].tolist() == [0, 1] and counted.tolist() == [[True, True, False]]
    assert top_k_by_magnitude(_t([[1, 3, 3]]), torch.ones(1, 3, dtype=torch.bool), 2)[0].tolist() == [[1, 2]]  # ties: earlier


def _hand_example() -> tuple[RTFMOutput, torch.Tensor, torch.Tensor]:
    """One anomalous and one normal video, T = 4, D = 2."""
    feats = _t([[[3, 4], [0, 1], [6, 8], [0, 0]],  # magnitudes 5, 1, 10, 0
                [[1, 0], [0, 2], [0, 0], [2, 0]]])  # magnitudes 1, 2, 0, 2
    scores = _t([[0.6, 0.1, 0.8, 0.3],
                 [0.2, 0.4, 0.9, 0.1]])
    return RTFMOutput(scores, feats, feats.norm(dim=-1)), torch.ones(2, 4, dtype=torch.bool), _t([1, 0])


def test_rtfm_loss_hand_computed():
    out, mask, label = _hand_example()
    total, parts = rtfm_loss(out, mask, label, k=2, margin=10.0, alpha=0.01, lambda_smooth=0.1, lambda_sparse=0.2)
    # Top-2 by magnitude: anomalous snippets 2, 0 (10, 5); normal snippets 1, 3 (2, 2: the tie keeps
    # both). The normal video's highest *score* (0.9 at snippet 2) is not selected: magnitude 0.
    # Video scores: (0.8 + 0.6) / 2 = 0.7 and (0.4 + 0.1) / 2 = 0.25.
    assert parts["bce"] == pytest.approx((-math.log(0.7) - math.log(0.75)) / 2, rel=1e-6)
    # Selected feature means: (4.5, 6) -> norm 7.5; (1, 1) -> sqrt(2). (|10 - 7.5| + sqrt 2)^2.
    assert parts["magnitude"] == pytest.approx(0.01 * (2.5 + math.sqrt(2)) ** 2, rel=1e-6)
    # Anomalous video only: diffs -0.5, 0.7, -0.5; ||(0.6, 0.1, 0.8, 0.3)||_2 = sqrt(1.1).
    assert parts["smooth"] == pytest.approx(0.1 * 0.99, rel=1e-6)
    assert parts["sparse"] == pytest.approx(0.2 * math.sqrt(1.1), rel=1e-6)
    assert parts["loss"] == pytest.approx(sum(parts[k] for k in ("bce", "magnitude", "smooth", "sparse")), rel=1e-6)
    assert float(total.detach()) == pytest.approx(parts["loss"])
    # Past the margin the abnormal term grows again: the release's |m - ||f_a|||, not a hinge.
    _, parts = rtfm_loss(out, mask, label, k=2, margin=5.0, alpha=1.0, lambda_smooth=0.0, lambda_sparse=0.0)
    assert parts["magnitude"] == pytest.approx((2.5 + math.sqrt(2)) ** 2, rel=1e-6)


def test_rtfm_loss_selection_dropout_padding_and_pairs():
    out, mask, label = _hand_example()
    # The selection mask drops anomalous snippet 2: the top 2 are now 0 and 1 (5, 1).
    keep = torch.tensor([[True, True, False, True], [True, True, True, True]])
    _, parts = rtfm_loss(out, mask, label, k=2, margin=10.0, alpha=0.01, lambda_smooth=0.0, lambda_sparse=0.0, keep=keep)
    norm_a = float(torch.tensor([1.5, 2.5]).norm())  # mean of (3, 4) and (0, 1)
    assert parts["bce"] == pytest.approx((-math.log(0.35) - math.log(0.75)) / 2, rel=1e-6)
    assert parts["magnitude"] == pytest.approx(0.01 * (10 - norm_a + math.sqrt(2)) ** 2, rel=1e-6)
    # Padding never counts: the normal video's last snippet padded leaves snippets 1, 0 (2, 1).
    pad = mask.clone()
    pad[1, 3] = False
    _, parts = rtfm_loss(out, pad, label, k=2, margin=10.0, alpha=0.01, lambda_smooth=0.0, lambda_sparse=0.0)
    assert parts["bce"] == pytest.approx((-math.log(0.7) - math.log(1 - 0.3)) / 2, rel=1e-6)
    assert parts["magnitude"] == pytest.approx(0.01 * (2.5 + math.hypot(0.5, 1.0)) ** 2, rel=1e-6)
    # Unbalanced: two anomalous, one normal -> one pair (the first anomalous video with the normal one).
    out3 = RTFMOutput(*(torch.cat([t, t[:1]]) for t in out))
    _, p3 = rtfm_loss(out3, torch.ones(3, 4, dtype=torch.bool), _t([1, 0, 1]), k=2, margin=10.0, alpha=0.01,
                      lambda_smooth=0.1, lambda_sparse=0.0)
    assert p3["magnitude"] == pytest.approx(0.01 * (2.5 + math.sqrt(2)) ** 2, rel=1e-6)
    assert p3["smooth"] == pytest.approx(2 * 0.1 * 0.99, rel=1e-6)  # summed over both anomalous videos
    with pytest.raises(ValueError, match="anomalous and normal"):
        rtfm_loss(out, mask, _t([1, 1]))


def test_head_loss_is_rtfm_loss_of_its_outputs():
    torch.manual_seed(0)
    head = RTFMHead(RTFMConfig(**TINY, k=2)).eval()
    x, mask = torch.rand(4, 6, 16), torch.ones(4, 6, dtype=torch.bool)
    label = _t([1, 0, 1, 0])
    total, parts = head.loss(FeatureBatch(x, mask, label, torch.zeros(4, dtype=torch.long)))
    with torch.no_grad():
        _, ref = rtfm_loss(head.components(x, mask), mask, label, k=2)
    assert parts == pytest.approx(ref, rel=1e-6)
    total.backward()
    assert all(p.grad is not None for p in head.parameters())
    # In training mode the selection dropout draws from torch's RNG: seeded, it repeats.
    head.train()
    torch.manual_seed(1)
    a = head.loss(FeatureBatch(x, mask, label, torch.zeros(4, dtype=torch.long)))[1]
    torch.manual_seed(1)
    b = head.loss(FeatureBatch(x, mask, label, torch.zeros(4, dtype=torch.long)))[1]
    assert a == b


# --------------------------------------------------------------------------- persistence and contract


def _trained_tiny() -> RTFMHead:
    """A tiny head after a few training steps, so BatchNorm's running statistics are not the defaults."""
    torch.manual_seed(0)
    head = RTFMHead(RTFMConfig(**TINY))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(3):
        x = torch.rand(8, 32, 16) * 3
        loss, _ = head.loss(FeatureBatch(x, torch.ones(8, 32, dtype=torch.bool), _t([1] * 4 + [0] * 4),
                                         torch.zeros(8, dtype=torch.long)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    head = _trained_tiny()
    assert float(head.fuse_norm.running_mean.abs().sum()) > 0
    save_module(head, tmp_path / "rtfm", extra={"input_normalization": "none"}, extractor="i3d")
    meta = json.loads((tmp_path / "rtfm" / "head.json").read_text())
    assert meta["type"] == "rtfm" and meta["causal"] is False and meta["lookahead"] == -1
    assert meta["consumes"] == {"kind": "features", "extractor": "i3d", "dim": 16}
    loaded = load_module(tmp_path / "rtfm")
    assert isinstance(loaded, RTFMHead) and loaded.config == head.config and not loaded.training
    for k, v in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    feats = np.random.default_rng(0).random((3, 50, 16)).astype(np.float32)  # 3 crops, 50 snippets
    np.testing.assert_array_equal(score_snippets(loaded, feats), score_snippets(head, feats))
    wrapped = load_head(tmp_path / "rtfm")
    assert isinstance(wrapped, TrainedHead) and wrapped.type_name == "rtfm"
    np.testing.assert_array_equal(wrapped.score_video(feats, UnitTiming(30.0)).scores, score_snippets(head, feats))
    # Scores are the mean of the crops' scores, each crop scored as a whole video.
    per_crop = np.stack([score_snippets(head, feats[c:c + 1]) for c in range(3)])
    np.testing.assert_allclose(score_snippets(head, feats), per_crop.mean(0), rtol=1e-6)


def test_whole_video_head_is_not_streamed(tmp_path):
    head = TrainedHead(_trained_tiny())
    assert not head.causal and head.lookahead == -1
    with pytest.raises(HeadError, match="whole videos"):
        head.stream(UnitTiming(30.0))


def test_monitor_refuses_rtfm(tmp_path, random_i3d):
    from pipelines.cli import default_score_configs
    from pipelines.monitor import MonitorError, build_heads
    from vad.config import ScoreConfig, load_config

    save_module(RTFMHead(RTFMConfig(input_dim=1024, branch_dim=4, hidden=(4,))), tmp_path / "head", extractor="i3d")
    cfg = load_config(ScoreConfig, default_score_configs(),
                      [f"head.load={tmp_path / 'head'}", f"features.weights={random_i3d}", "features.engine=torch"])
    with pytest.raises(MonitorError, match="needs the whole video"):
        build_heads(cfg, tmp_path / "mon")


def test_a_wider_mtn_is_the_same_as_zero_padded_input():
    """``width``: features zero-padded to the MTN's width inside the head, as the release's
    2048-wide network sees 1024-d features padded in the files."""
    torch.manual_seed(0)
    wide = RTFMHead(RTFMConfig(input_dim=12, width=20, branch_dim=8, hidden=(8, 4))).eval()
    padded = RTFMHead(RTFMConfig(input_dim=20, branch_dim=8, hidden=(8, 4))).eval()
    padded.load_state_dict(wide.state_dict())
    x = torch.randn(2, 9, 12)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), padded(torch.nn.functional.pad(x, (0, 8))), rtol=0, atol=1e-6)
        assert wide.encode(x, torch.ones(2, 9, dtype=torch.bool)).shape == (2, 9, 20)
    with pytest.raises(ValueError, match="width must be >= input_dim"):
        RTFMConfig(input_dim=12, width=8)
