"""CT-D2GAN torch core on tiny configs: shapes, losses, one optimiser step of each network, and a
short training on a synthetic scene that learns to predict it and flags unusual motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vad.heads.ctd2gan import CTD2GAN, CTD2GANConfig, ConvTransformerGenerator, adversarial_step, gradient_loss, psnr

TINY = CTD2GANConfig(size=32, channels=1, past_frames=3, width=8, depth=2, heads=2, pe_dim=4,
                     disc_width=8, disc_depth=2)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_shapes_and_attention_weights():
    model = CTD2GAN(TINY).eval()
    clip = torch.rand(2, 3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        pred = model(clip)
        assert pred.shape == (2, 1, 32, 32) and pred.abs().max() <= 1
        att = model.generator.attention.weights
        assert att.shape == (2, 2, 3)  # batch, heads, past frames
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 2))
        assert model.image_d(pred).shape == (2, 1, 8, 8)
        assert model.video_d(torch.cat([clip, pred[:, None]], 1)).shape == (2, 1, 4, 8, 8)
    rgb = CTD2GAN(CTD2GANConfig(size=32, channels=3, past_frames=2, width=8, depth=2, heads=2,
                                disc_width=8, disc_depth=2)).eval()
    with torch.no_grad():
        assert rgb(torch.zeros(1, 2, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_config_is_validated():
    with pytest.raises(ValueError, match="channels"):
        CTD2GANConfig(channels=2)
    with pytest.raises(ValueError, match="divisible by 2"):
        CTD2GANConfig(size=100, depth=3)
    with pytest.raises(ValueError, match="divisible by heads"):
        CTD2GANConfig(width=6, depth=1, heads=4)


def test_losses_and_psnr():
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert float(gradient_loss(x, x)) == 0.0
    assert float(gradient_loss(x, x + 0.3)) == pytest.approx(0.0, abs=1e-6)  # a constant shift has no gradient
    target = torch.zeros(2, 1, 8, 8)
    # 0.2 on the [-1, 1] scale is 0.1 on [0, 1]: mse 0.01 -> 20 dB
    assert psnr(target + 0.2, target).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert (psnr(target, target) > 90).all()


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_one_adversarial_step_updates_each_network():
    model = CTD2GAN(TINY)
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    opt_i = torch.optim.Adam(model.image_d.parameters(), lr=1e-3)
    opt_v = torch.optim.Adam(model.video_d.parameters(), lr=1e-3)
    clip, target = torch.rand(2, 3, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    g, i, v = _params(model.generator), _params(model.image_d), _params(model.video_d)
    parts = adversarial_step(model, clip, target, opt_g, opt_i, opt_v)
    assert _changed(g, model.generator) and _changed(i, model.image_d) and _changed(v, model.video_d)
    assert set(parts) == {"intensity", "gradient", "adv_image", "adv_video", "generator", "d_image", "d_video"}
    assert all(np.isfinite(list(parts.values())))
    # the generator's loss never reaches the discriminators' weights
    i, v = _params(model.image_d), _params(model.video_d)
    for opt in (opt_g, opt_i, opt_v):
        opt.zero_grad(set_to_none=True)
    model.image_d.requires_grad_(False)
    model.video_d.requires_grad_(False)
    model.generator_loss(clip, target)[0].backward()
    assert all(p.grad is None for p in model.image_d.parameters())
    opt_g.step()
    assert not _changed(i, model.image_d) and not _changed(v, model.video_d)


def _scene(n: int, speed: int, rng: np.random.Generator, extra: bool = False) -> torch.Tensor:
    """Frames (n, 1, 32, 32) in [-1, 1]: a bright square crossing a dark, noisy scene at
    ``speed`` px/frame (wrapping); ``extra`` adds a second square that appears and stays."""
    frames = np.full((n, 1, 32, 32), -0.8, np.float32) + rng.normal(0, 0.02, (n, 1, 32, 32)).astype(np.float32)
    x0 = int(rng.integers(0, 32))
    for t in range(n):
        x = (x0 + speed * t) % 28
        frames[t, 0, 12:18, x:x + 4] = 0.9
        if extra:
            frames[t, 0, 2:8, 20:26] = 0.6
    return torch.from_numpy(frames)


def _clips(frames: torch.Tensor, past: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = range(len(frames) - past)
    return (torch.stack([frames[i:i + past] for i in idx]), torch.stack([frames[i + past] for i in idx]))


def test_short_training_learns_the_scene_and_flags_unusual_motion():
    rng = np.random.default_rng(0)
    cfg = TINY
    model = CTD2GAN(cfg)
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_i = torch.optim.Adam(model.image_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_v = torch.optim.Adam(model.video_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    train_clips, train_targets = _clips(torch.cat([_scene(40, 1, rng) for _ in range(6)]), cfg.past_frames)
    held_clips, held_targets = _clips(_scene(40, 1, rng), cfg.past_frames)

    def error() -> float:
        model.eval()
        with torch.no_grad():
            return float(((model(held_clips) - held_targets) ** 2).mean())

    before = error()
    for step in range(250):
        pick = torch.from_numpy(rng.integers(0, len(train_clips), 16))
        adversarial_step(model, train_clips[pick], train_targets[pick], opt_g, opt_i, opt_v)
    after = error()
    assert after < 0.25 * before, (before, after)

    model.eval()
    with torch.no_grad():
        normal = [psnr(model(c), t) for c, t in [_clips(_scene(24, 1, rng), cfg.past_frames) for _ in range(3)]]
        fast = [psnr(model(c), t) for c, t in [_clips(_scene(24, 4, rng), cfg.past_frames) for _ in range(3)]]
        new = [psnr(model(c), t) for c, t in [_clips(_scene(24, 1, rng, extra=True), cfg.past_frames) for _ in range(3)]]
    normal_s = -torch.cat(normal).numpy()  # anomaly score = -PSNR
    for name, anomalous in (("fast motion", fast), ("appearing object", new)):
        scores = np.concatenate([normal_s, -torch.cat(anomalous).numpy()])
        labels = np.r_[np.zeros(len(normal_s)), np.ones(len(scores) - len(normal_s))]
        assert roc_auc_score(labels, scores) >= 0.9, name


def test_residual_generator_starts_as_copy_last_frame_and_learns():
    cfg = CTD2GANConfig(size=16, past_frames=3, width=4, depth=1, heads=2, disc_width=4, disc_depth=1, residual=True)
    torch.manual_seed(0)
    g = ConvTransformerGenerator(cfg)
    clip = torch.rand(2, 3, 1, 16, 16) * 2 - 1
    out = g(clip)
    assert torch.equal(out, clip[:, -1])  # the untrained residual generator copies the newest frame
    target = torch.roll(clip[:, -1], 1, dims=-1)  # the scene moved one pixel
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    before = float(((g(clip) - target) ** 2).mean())
    for _ in range(30):
        opt.zero_grad()
        loss = ((g(clip) - target) ** 2).mean()
        loss.backward()
        opt.step()
    assert float(((g(clip) - target) ** 2).mean()) < 0.8 * before
    # heads saved before the option existed have no "residual" key: they load as non-residual
    assert CTD2GANConfig(**{k: v for k, v in vars(cfg).items() if k != "residual"}).residual is False
