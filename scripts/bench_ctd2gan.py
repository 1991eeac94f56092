#!/usr/bin/env python
"""Benchmark the CT-D2GAN torch core (``vad.heads.ctd2gan``) against a plain convolutional
autoencoder measured in the same run, on random clips.

Measured, per device (CPU always; CUDA too with ``--device cuda`` when it is available):

* **Training iterations/s.** CT-D2GAN: ``adversarial_step`` (generator, then image and video
  discriminators, three Adam optimisers) at ``--batch-size`` clips of ``--past-frames`` past
  frames + one target frame. Baseline: the autoencoder trained with plain MSE + Adam at the same
  batch. Both after warm-up iterations; inputs are generated before timing and cycled.
* **Scoring frames/s.** Generator (or autoencoder) forward + per-frame ``psnr`` against the real
  next frame, under ``torch.inference_mode`` in eval mode: one clip at a time (batch 1, the live
  case; ``--frames`` forwards) and batched (batch 16, the archive case; ``ceil(frames / 16)``
  batches of 16, so at least 16 frames).

Timing: every model is warmed up (``--warmup`` calls), then the timed calls are split into
``--rounds`` rounds that alternate CT-D2GAN and the baseline, so load from other processes hits
both sides of a ratio. Rates are the medians of the per-round rates; ratios are the medians of
the per-round ratios (paired, so they need not equal the quotient of the two medians). All
rounds go to ``--json``. CUDA timings synchronise the device around every round.

The baseline takes the same past frames stacked on the channel axis (``past_frames * channels``
input channels); its encoder has ``depth`` stride-2 blocks of two 3x3 convolutions, its decoder
bilinear upsampling + two 3x3 convolutions per stage, no skips, ``tanh`` output. Its base width
is the integer whose parameter count is closest to the CT-D2GAN generator's (must be within
+-25 %; both counts are printed). Ratios are CT-D2GAN / baseline, so < 1 means CT-D2GAN is
slower; the training ratio includes the cost of CT-D2GAN's two discriminators, which is the
point: that is what the adversarial objective costs over plain reconstruction.

Also printed: whether batch-1 scoring keeps up with 10 fps analysis (>= 10 frames/s) on this
machine, the torch thread count, the CPU model and whether it has avx512f. Seeds are fixed
(``--seed``); rates still vary with machine load, so compare ratios, not absolute rates.

    .venv/bin/python scripts/bench_ctd2gan.py --json runs/bench_ctd2gan.json
    .venv/bin/python scripts/bench_ctd2gan.py --quick                    # size 64, a quick look
    .venv/bin/python scripts/bench_ctd2gan.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere: make `vad` importable
    sys.path.insert(0, str(REPO))

from vad.heads.ctd2gan import CTD2GAN, CTD2GANConfig, adversarial_step, psnr  # noqa: E402

LIVE_FPS = 10.0  # the analysis rate batch-1 scoring must sustain
ARCHIVE_BATCH = 16
PARAM_TOLERANCE = 0.25  # the baseline's parameter count must be within +-25 % of the generator's
DEFAULT_SIZE = CTD2GANConfig().size


# --------------------------------------------------------------------------- the baseline


def _conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # Same block as the CT-D2GAN generator's (conv-BN-LeakyReLU twice), so the comparison is
    # about architecture and objective, not about layer choices.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
    )


class ConvAutoencoder(nn.Module):
    """Past frames (B, T, C, H, W) stacked on channels -> next frame (B, C, H, W) in [-1, 1]."""

    def __init__(self, channels: int, past_frames: int, width: int, depth: int) -> None:
        super().__init__()
        widths = [width * 2 ** i for i in range(depth)]
        ins = [channels * past_frames, *widths[:-1]]
        self.encoder = nn.Sequential(*(_conv_block(i, o, stride=2) for i, o in zip(ins, widths)))
        outs = [widths[0], *widths[:-1]]  # decoder stage i maps widths[i] -> outs[i]
        self.decoder = nn.Sequential(*(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                          _conv_block(widths[i], outs[i]))
            for i in reversed(range(depth))
        ))
        self.out = nn.Conv2d(widths[0], channels, 1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = clip.shape
        return torch.tanh(self.out(self.decoder(self.encoder(clip.reshape(b, t * c, h, w)))))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matched_baseline_width(cfg: CTD2GANConfig, target: int) -> int:
    """The base width whose autoencoder parameter count is closest to ``target``."""
    best_w, best_gap = 1, math.inf
    w = 1
    while True:  # the count grows with w, so stop once past the target
        n = count_params(ConvAutoencoder(cfg.channels, cfg.past_frames, w, cfg.depth))
        if abs(n - target) < best_gap:
            best_w, best_gap = w, abs(n - target)
        if n > target:
            return best_w
        w += 1


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _split(n: int, rounds: int) -> list[int]:
    """``n`` calls spread over ``min(rounds, n)`` rounds as evenly as possible."""
    r = max(1, min(rounds, n))
    return [n // r + (i < n % r) for i in range(r)]


def interleaved_rates(fns: dict[str, Callable[[int], None]], n: int, units_per_call: int, warmup: int,
                      rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Per-round rates (units/s) of each ``fns[name](i)``, ``n`` timed calls each.

    Every function is warmed up first (allocator, oneDNN/cuDNN kernel choice settle there), then
    the timed calls alternate between the functions round by round, so a burst of load from
    other processes hits both sides of a ratio instead of one."""
    calls = dict.fromkeys(fns, 0)
    for name, fn in fns.items():
        for _ in range(warmup):
            fn(calls[name])
            calls[name] += 1
    _sync(device)
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for chunk in _split(n, rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(chunk):
                fn(calls[name])
                calls[name] += 1
            _sync(device)
            rates[name].append(chunk * units_per_call / (time.perf_counter() - t0))
    return rates


def summarise(rates: dict[str, list[float]]) -> dict[str, Any]:
    """Median per-round rate of each model (robust to a stray slow round) and the paired ratio:
    the median of the per-round CT-D2GAN / baseline ratios, each from back-to-back timings, so
    load that comes and goes between rounds cancels out of it."""
    out: dict[str, Any] = {name: statistics.median(r) for name, r in rates.items()}
    out["ratio"] = statistics.median(a / b for a, b in zip(rates["ctd2gan"], rates["baseline"]))
    out["rounds"] = rates
    return out


def random_clips(n: int, batch: int, cfg: CTD2GANConfig, device: torch.device,
                 seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` (clip (B, T, C, H, W), target (B, C, H, W)) pairs in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)  # on the CPU, so CPU and CUDA runs see the same data
    shape = (batch, cfg.past_frames + 1, cfg.channels, cfg.size, cfg.size)
    out = []
    for _ in range(n):
        x = (torch.rand(shape, generator=g) * 2 - 1).to(device)
        out.append((x[:, :-1].contiguous(), x[:, -1].contiguous()))
    return out


def bench_training(cfg: CTD2GANConfig, base_width: int, device: torch.device,
                   args: argparse.Namespace) -> dict[str, Any]:
    data = random_clips(4, args.batch_size, cfg, device, args.seed)  # a few distinct batches, cycled

    torch.manual_seed(args.seed)
    gan = CTD2GAN(cfg).to(device)
    # Adam with beta1 0.5 is the usual GAN setting; the rate does not affect the speed.
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_img = torch.optim.Adam(gan.image_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_vid = torch.optim.Adam(gan.video_d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def gan_step(i: int) -> None:
        clip, target = data[i % len(data)]
        adversarial_step(gan, clip, target, opt_g, opt_img, opt_vid)

    torch.manual_seed(args.seed)
    ae = ConvAutoencoder(cfg.channels, cfg.past_frames, base_width, cfg.depth).to(device).train()
    opt = torch.optim.Adam(ae.parameters(), lr=2e-4)

    def ae_step(i: int) -> None:
        clip, target = data[i % len(data)]
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(ae(clip), target)
        loss.backward()
        opt.step()
        float(loss.detach())  # adversarial_step returns floats (a host sync); match it

    rates = interleaved_rates({"ctd2gan": gan_step, "baseline": ae_step}, args.iters, 1, args.warmup,
                              args.rounds, device)
    return summarise(rates)


def bench_scoring(models: dict[str, nn.Module], cfg: CTD2GANConfig, device: torch.device, batch: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Frames/s of forward + psnr at ``batch`` clips per call, ``ceil(frames / batch)`` calls."""
    calls = max(1, math.ceil(args.frames / batch))
    data = random_clips(min(calls, 16), batch, cfg, device, args.seed + 1)  # cycled: bounds memory, not work

    def scorer(model: nn.Module) -> Callable[[int], None]:
        def score(i: int) -> None:
            clip, target = data[i % len(data)]
            psnr(model(clip), target).cpu()  # the scores leave the device, as they would in use
        return score

    with torch.inference_mode():
        rates = interleaved_rates({name: scorer(m) for name, m in models.items()}, calls, batch, args.warmup,
                                  args.rounds, device)
    return summarise(rates)


def bench_device(cfg: CTD2GANConfig, base_width: int, device: torch.device, args: argparse.Namespace) -> dict:
    out: dict[str, Any] = {"train_it_s": bench_training(cfg, base_width, device, args)}
    torch.manual_seed(args.seed)
    gen = CTD2GAN(cfg).generator.to(device).eval()
    torch.manual_seed(args.seed)
    ae = ConvAutoencoder(cfg.channels, cfg.past_frames, base_width, cfg.depth).to(device).eval()
    for key, batch in (("score_fps_batch1", 1), ("score_fps_batch16", ARCHIVE_BATCH)):
        out[key] = bench_scoring({"ctd2gan": gen, "baseline": ae}, cfg, device, batch, args)
    return out


# --------------------------------------------------------------------------- machine / report


def machine() -> dict[str, Any]:
    from vad.utils import cpu_info

    info = cpu_info()
    return {"cpu_model": info["cpu_model"], "avx512f": info["avx512f"], "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def report(results: dict) -> str:
    c, m, p, r = results["config"], results["machine"], results["params"], results["run"]
    lines = [
        f"CT-D2GAN vs conv autoencoder: size {c['size']}, channels {c['channels']}, past_frames {c['past_frames']}, "
        f"width {c['width']}, depth {c['depth']}",
        f"training: batch {r['batch_size']}, {r['iters']} timed iterations after {r['warmup']} warm-up; "
        f"scoring: {r['frames']} frames at batch 1, {r['archive_frames']} at batch {ARCHIVE_BATCH}; "
        f"timed in up to {r['rounds']} rounds alternating the two models: median round rates, median round ratios",
        f"machine: CPU {m['cpu_model']} (avx512f: {'yes' if m['avx512f'] else 'no'}), torch {m['torch']}, "
        f"{m['torch_threads']} torch threads" + (f", GPU {m['gpu']}" if m["gpu"] else ""),
        f"parameters: CT-D2GAN generator {p['ctd2gan_generator']:,} (with both discriminators "
        f"{p['ctd2gan_total']:,}); baseline autoencoder (width {p['baseline_width']}) {p['baseline']:,} "
        f"= {p['baseline_over_generator']:.2f}x the generator",
    ]
    rows = (("train_it_s", f"train iterations/s (batch {r['batch_size']})"),
            ("score_fps_batch1", "score frames/s, batch 1 (live)"),
            ("score_fps_batch16", f"score frames/s, batch {ARCHIVE_BATCH} (archive)"))
    for dev, numbers in results["devices"].items():
        lines += ["", f"[{dev}]", f"{'':36s}{'CT-D2GAN':>10s}{'baseline':>10s}{'CT-D2GAN/baseline':>19s}"]
        for key, label in rows:
            n = numbers[key]
            lines.append(f"{label:36s}{n['ctd2gan']:10.2f}{n['baseline']:10.2f}{n['ratio']:18.2f}x")
    lines.append("")
    size_note = "" if c["size"] == DEFAULT_SIZE else f" (measured at size {c['size']}, not the default {DEFAULT_SIZE})"
    for dev, live in results["keeps_up_10fps"].items():
        fps = results["devices"][dev]["score_fps_batch1"]["ctd2gan"]
        verdict = "keeps up" if live else "does NOT keep up"
        lines.append(f"10 fps analysis on {dev}{size_note}: CT-D2GAN batch-1 scoring {verdict} "
                     f"({fps:.1f} frames/s vs {LIVE_FPS:.0f} needed)")
    for note in results["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: measure CUDA as well as the CPU (when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    # None = take the --quick or the full default, so explicit values win over --quick.
    ap.add_argument("--iters", type=int, default=None, help="timed training iterations (default 20; quick 5)")
    ap.add_argument("--frames", type=int, default=None, help="scored frames (default 64; quick 16)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 3; quick 1)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timed rounds the calls are split into, alternating the two models (default 8; quick 2)")
    ap.add_argument("--batch-size", type=int, default=8, help="training batch (clips)")
    ap.add_argument("--size", type=int, default=None, help=f"frame side (default {DEFAULT_SIZE}; quick 64)")
    ap.add_argument("--past-frames", type=int, default=CTD2GANConfig.past_frames)
    ap.add_argument("--width", type=int, default=CTD2GANConfig.width)
    ap.add_argument("--channels", type=int, choices=(1, 3), default=CTD2GANConfig.channels)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="size 64, fewer iterations and frames")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    args = ap.parse_args(argv)
    defaults = (("iters", 20, 5), ("frames", 64, 16), ("warmup", 3, 1), ("rounds", 8, 2), ("size", DEFAULT_SIZE, 64))
    for name, full, quick in defaults:
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    for name in ("iters", "frames", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = CTD2GANConfig(size=args.size, channels=args.channels, past_frames=args.past_frames, width=args.width)

    gen_params = count_params(CTD2GAN(cfg).generator)
    base_width = matched_baseline_width(cfg, gen_params)
    base_params = count_params(ConvAutoencoder(cfg.channels, cfg.past_frames, base_width, cfg.depth))
    if abs(base_params / gen_params - 1) > PARAM_TOLERANCE:
        print(f"error: no baseline width within +-{PARAM_TOLERANCE:.0%} of the generator's {gen_params:,} "
              f"parameters (closest: width {base_width}, {base_params:,})", file=sys.stderr)
        return 2

    notes: list[str] = []
    devices = [torch.device("cpu")]
    if args.device == "cuda":
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        else:
            notes.append("--device cuda asked for, but CUDA is not available: CPU only")

    results: dict[str, Any] = {
        "config": asdict(cfg),
        "run": {"batch_size": args.batch_size, "iters": args.iters, "warmup": args.warmup, "rounds": args.rounds,
                "frames": args.frames,
                "archive_frames": max(1, math.ceil(args.frames / ARCHIVE_BATCH)) * ARCHIVE_BATCH,
                "archive_batch": ARCHIVE_BATCH, "seed": args.seed, "quick": args.quick},
        "machine": machine(),
        "params": {"ctd2gan_generator": gen_params, "ctd2gan_total": count_params(CTD2GAN(cfg)),
                   "baseline": base_params, "baseline_width": base_width,
                   "baseline_over_generator": base_params / gen_params},
        "devices": {},
        "notes": notes,
    }
    for device in devices:
        results["devices"][device.type] = bench_device(cfg, base_width, device, args)
    results["keeps_up_10fps"] = {dev: n["score_fps_batch1"]["ctd2gan"] >= LIVE_FPS
                                 for dev, n in results["devices"].items()}
    results["measured_at_default_size"] = cfg.size == DEFAULT_SIZE  # the 10 fps verdict is about that size

    print(report(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
