#!/usr/bin/env python
"""Benchmark the trainable heads (``mil``, ``gsmoe``, ``rtfm``) on a UCF-Crime-sized synthetic feature set.

Measures, for each head, against a naive baseline run on the same data in the same process:

* **Training seconds per epoch.** Product path: ``Trainer(...).run()`` on a feature list, as
  ``vad train`` runs it (list reading and up-front file checks timed as setup; the first epoch
  loads and segments files, later epochs hit the per-(video, crop) segment cache). Naive: one
  (anomalous, normal) pair per optimizer step, the raw features re-loaded from disk and
  re-segmented every step, no cache, the same number of videos per epoch.
* **Inference snippets/s.** Product path: ``score_snippets(head, feats[None])`` per whole video
  (batched over snippets, ``torch.inference_mode``). Naive: one snippet per forward call under
  ``torch.no_grad``, on a random sample of the same videos' snippets (``--naive-snippets``),
  its per-snippet rate standing for the whole set.

The synthetic set: 1,610 videos (800 normal ``Normal_Videos_NNN_x264``, 810 anomalous in the 13
UCF classes, ``Abuse001_x264``...), 1024-d float32, one crop (``<id>__0.npy``), one planted run
of anomalous snippets per anomalous video. Snippet counts (and classes) are those of the real
training videos, ``N // 16`` from ``Train_Annotation.txt`` (normal lengths for normal videos,
each class's lengths for its videos; sampled without replacement, so the full-size set has the
real 790,271 snippets); without that file, lengths are drawn from a lognormal fitted to it
(``log(snippets)``: mean 5.07, sd 1.19, clipped to 6..61,031) and classes cycle. ``--scale``
multiplies every length (at least 1 snippet) for quick runs. The full set is about 3.2 GB.

Detection (``--test-videos N``): a held-out set of N videos of the same task (the same base
pattern and class signatures; lengths and classes from ``Test_Annotation.txt`` when it is there,
150 normal of 290 as in UCF-Crime's test split) is scored by each head's *selected* model (the
one ``vad train`` leaves in its out directory, chosen on the validation split): pooled frame ROC
AUC over the list, each snippet's score repeated 16 times, as ``vad evaluate`` computes it.
``--train-configs`` trains each head with its shipped ``configs/train/<head>.yaml`` (what
``vad train --head <head>`` uses) instead of the loop's defaults; ``--epochs``/``--batch-size``
still override it when given.

    .venv/bin/python scripts/bench_heads.py --json runs/bench_heads.json
    .venv/bin/python scripts/bench_heads.py --scale 0.25 --epochs 2      # a quick look
    .venv/bin/python scripts/bench_heads.py --scale 0.1 --train-configs --test-videos 290 --heads mil gsmoe rtfm
    .venv/bin/python scripts/bench_heads.py --quality --json runs/bench_quality.json   # AUC/AP side by side
                                                                 # (scripts/bench_heads_quality.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from pipelines.cli import default_train_configs
from pipelines.train import Trainer
from vad.heads.trained import score_snippets
from vad.config import TrainConfig, TrainHeadConfig, TrainLoopConfig, load_config
from vad.data.features import load_crop
from vad.data.ground_truth import read_frame_counts
from vad.data.lists import class_from_name, is_normal_name
from vad.eval import roc_auc
from vad.heads.modules import FeatureBatch, load_module, segment_features

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ANNOTATIONS = REPO.parent / "shared" / "data" / "annotations" / "ucf_crime" / "Train_Annotation.txt"
DEFAULT_TEST_ANNOTATIONS = DEFAULT_ANNOTATIONS.with_name("Test_Annotation.txt")
UCF_CLASSES = ["Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
               "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism"]
LOGNORMAL = {"mu": 5.07, "sigma": 1.19, "min": 6, "max": 61031}  # fitted to Train_Annotation.txt
HEAD_NAMES = ("mil", "gsmoe", "rtfm")
DEFAULT_HEADS = ("mil", "gsmoe")


# --------------------------------------------------------------------------- the synthetic set


def plan_videos(n_videos: int, n_normal: int, scale: float, annotations: Path | None,
                rng: np.random.Generator) -> tuple[list[tuple[str, int]], str]:
    """[(video_id, snippets)] for ``n_normal`` normal and ``n_videos - n_normal`` anomalous
    videos, and where the lengths came from."""
    n_anom = n_videos - n_normal
    if annotations is not None and annotations.is_file():
        real = read_frame_counts(annotations, "ucf_crime")
        normal = [n // 16 for v, n in real.items() if is_normal_name(v, "ucf_crime")]
        anom = [(class_from_name(v, "ucf_crime")[0], n // 16) for v, n in real.items()
                if not is_normal_name(v, "ucf_crime")]
        normal_len = rng.choice(normal, size=n_normal, replace=n_normal > len(normal))
        picked = rng.choice(len(anom), size=n_anom, replace=n_anom > len(anom))
        anom_cls = [anom[i][0] for i in picked]
        anom_len = [anom[i][1] for i in picked]
        source = f"{annotations} (N // 16 of the frame counts listed there)"
    else:
        def draw(k: int) -> np.ndarray:
            x = rng.lognormal(LOGNORMAL["mu"], LOGNORMAL["sigma"], size=k)
            return np.clip(np.round(x), LOGNORMAL["min"], LOGNORMAL["max"]).astype(int)

        normal_len, anom_len = draw(n_normal), draw(n_anom)
        anom_cls = [UCF_CLASSES[i % len(UCF_CLASSES)] for i in range(n_anom)]
        source = "lognormal(mu={mu}, sigma={sigma}) clipped to {min}..{max} (no annotation file)".format(**LOGNORMAL)
    plan = [(f"Normal_Videos_{i + 1:03d}_x264", int(n)) for i, n in enumerate(normal_len)]
    per_class: dict[str, int] = {}
    for cls, n in zip(anom_cls, anom_len):
        per_class[cls] = per_class.get(cls, 0) + 1
        plan.append((f"{cls}{per_class[cls]:03d}_x264", int(n)))
    order = rng.permutation(len(plan))  # interleave normal and anomalous videos in the list
    return [(plan[i][0], max(1, round(plan[i][1] * scale))) for i in order], source


def write_set(plan: list[tuple[str, int]], folder: Path, dim: int, rng: np.random.Generator,
              task: dict | None = None, name: str = "train") -> tuple[Path, dict[str, np.ndarray], dict]:
    """One ``<id>__0.npy`` per video (non-negative, I3D-like) and a feature list naming them.
    Anomalous videos get one contiguous run (10-35% of the video) shifted by their class's
    signature on 32 dimensions. Returns the list, each video's snippet labels, and the task (base
    pattern and class signatures): pass it back to write a held-out set of the same task."""
    if task is None:
        task = {"base": rng.normal(size=dim).astype(np.float32), "signatures": {}}
    base, signatures = task["base"], task["signatures"]
    folder.mkdir(parents=True, exist_ok=True)
    lines, labels = [], {}
    for vid, t in plan:
        x = rng.standard_normal((t, dim), dtype=np.float32)
        x *= 0.5
        x += base
        cls = class_from_name(vid, "ucf_crime")[0]
        if cls is not None:
            if cls not in signatures:
                signatures[cls] = np.zeros(dim, np.float32)
                signatures[cls][rng.choice(dim, 32, replace=False)] = rng.choice([-2.0, 2.0], 32)
            run = max(1, round(t * rng.uniform(0.1, 0.35)))
            start = int(rng.integers(0, t - run + 1))
            x[start:start + run] += signatures[cls]
        y = np.zeros(t, np.uint8)
        if cls is not None:
            y[start:start + run] = 1
        labels[vid] = y
        np.abs(x, out=x)
        path = folder / f"{vid}__0.npy"
        np.save(path, x)
        lines.append(str(path))
    lst = folder / f"{name}.list"
    lst.write_text("\n".join(lines) + "\n")
    return lst, labels, task


# --------------------------------------------------------------------------- training


def train_config(head: str, args: argparse.Namespace) -> TrainConfig:
    if args.train_configs:  # the head's shipped configs/train/<head>.yaml, as `vad train --head` reads it
        sets = [f"train.seed={args.seed}", "train.keep_checkpoints=1"]
        sets += [f"train.epochs={args.epochs}"] if args.epochs is not None else []
        sets += [f"train.batch_size={args.batch_size}"] if args.batch_size is not None else []
        sets += [f"train.threads={args.threads}"] if args.threads else []
        return load_config(TrainConfig, default_train_configs(head), sets)
    return TrainConfig(head=TrainHeadConfig(name=head),
                       train=TrainLoopConfig(epochs=4 if args.epochs is None else args.epochs,
                                             batch_size=args.batch_size or TrainLoopConfig.batch_size,
                                             seed=args.seed, threads=args.threads, keep_checkpoints=1))


def bench_product_training(head: str, lst: Path, out: Path, args: argparse.Namespace) -> tuple[Trainer, dict]:
    started = time.perf_counter()
    trainer = Trainer(train_config(head, args), lst, out, progress=False)
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    trainer.run()
    run_s = time.perf_counter() - started
    epochs = [json.loads(line)["train_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = epochs[1:]
    batch_size = trainer.cfg.train.batch_size
    # The Trainer draws each label group from a shuffled queue (a permutation per pass), so the
    # first n draws of a group touch all n videos: the share of an epoch's draws that load a
    # file for the first time (not yet in the segment cache), per epoch.
    draws = trainer.steps_per_epoch() * (batch_size // 2)  # per label group
    groups = (len(trainer.anomalies), len(trainer.normals))
    first_loads = [sum(min((k + 1) * draws, n) - min(k * draws, n) for n in groups) / (2 * draws)
                   for k in range(len(epochs))]
    return trainer, {
        "setup_s": setup_s,  # list reading + up-front file checks + head construction
        "epoch_s": epochs,  # the Trainer's own per-epoch training time (validation excluded)
        "cold_epoch_s": epochs[0],
        "later_epoch_s": float(np.mean(later)) if later else None,
        "expected_first_load_share": first_loads,
        "run_s": run_s,  # run() in all: epochs, validation, checkpoints
        "n_train": len(trainer.train_videos),
        "steps_per_epoch": trainer.steps_per_epoch(),
        "batch_size": batch_size,
        "epochs": trainer.cfg.train.epochs,
        "videos_per_epoch": trainer.steps_per_epoch() * 2 * (batch_size // 2),
        "best": trainer.best,
    }


def bench_naive_training(head: str, lst: Path, out: Path, args: argparse.Namespace) -> dict:
    """One (anomalous, normal) pair per step, loaded and segmented from disk every step."""
    trainer = Trainer(train_config(head, args), lst, out, progress=False)  # same split, head, optimiser
    net, opt, n_seg = trainer.head, trainer.optimizer, trainer.head.config.n_segments
    pooling = getattr(net, "segment_pooling", {})
    rng = np.random.default_rng(args.seed)
    pairs = trainer.steps_per_epoch() * (trainer.cfg.train.batch_size // 2)
    mask = torch.ones(2, n_seg, dtype=torch.bool)
    label = torch.tensor([1.0, 0.0])
    epochs = []
    net.train()
    for _ in range(args.naive_epochs):
        started = time.perf_counter()
        for _ in range(pairs):
            pair = (trainer.anomalies[rng.integers(len(trainer.anomalies))],
                    trainer.normals[rng.integers(len(trainer.normals))])
            feats = np.stack([segment_features(load_crop(v.paths[0], trainer.dim), n_seg, rng=rng, **pooling)
                              for v in pair])
            batch = FeatureBatch(torch.from_numpy(feats), mask, label, torch.tensor([v.cls for v in pair]))
            loss, _ = net.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epochs.append(time.perf_counter() - started)
    return {"epoch_s": epochs, "mean_epoch_s": float(np.mean(epochs)), "steps_per_epoch": pairs}


# --------------------------------------------------------------------------- inference


def bench_inference(heads: dict[str, torch.nn.Module], lst: Path, dim: int, n_naive: int,
                    rng: np.random.Generator) -> dict:
    """Every video of the list through ``score_snippets`` for each head (file loading not
    timed); then ``n_naive`` snippets sampled uniformly from them, one forward call each."""
    paths = [Path(line) for line in lst.read_text().splitlines() if line]
    lengths = [int(np.load(p, mmap_mode="r").shape[0]) for p in paths]
    total = sum(lengths)
    n_naive = min(n_naive, total)
    picked = np.sort(rng.choice(total, size=n_naive, replace=False))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for net in heads.values():  # warm-up: first calls pay one-off allocation costs
        score_snippets(net, np.ones((1, 8, dim), np.float32))
    product_s = dict.fromkeys(heads, 0.0)
    sample = []
    for i, path in enumerate(paths):
        feats = load_crop(path)
        for name, net in heads.items():
            started = time.perf_counter()
            score_snippets(net, feats[None])
            product_s[name] += time.perf_counter() - started
        lo, hi = np.searchsorted(picked, [starts[i], starts[i + 1]])
        sample.append(feats[picked[lo:hi] - starts[i]])
    sample_arr = np.concatenate(sample)
    out = {}
    for name, net in heads.items():
        net.eval()
        with torch.no_grad():
            started = time.perf_counter()
            for x in sample_arr:
                net(torch.from_numpy(x[None, None]))  # the head normalises its input, as in score_snippets
            naive_s = time.perf_counter() - started
        out[name] = {"snippets": total, "product_s": product_s[name], "product_snippets_per_s": total / product_s[name],
                     "naive_snippets": n_naive, "naive_s": naive_s, "naive_snippets_per_s": n_naive / naive_s}
        out[name]["speedup"] = out[name]["product_snippets_per_s"] / out[name]["naive_snippets_per_s"]
    return out


# --------------------------------------------------------------------------- report


def load() -> dict:
    """Load average and, where the kernel has it, CPU pressure (share of time runnable tasks waited)."""
    out: dict = {"load_avg": [round(x, 2) for x in os.getloadavg()]}
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:]
        out["cpu_pressure_some"] = {k: float(v) for k, v in (kv.split("=") for kv in some) if k != "total"}
    except (OSError, IndexError, ValueError):
        pass
    return out


def load_text(x: dict) -> str:
    text = f"load average {x['load_avg']}"
    if "cpu_pressure_some" in x:
        text += f", CPU pressure avg60 {x['cpu_pressure_some']['avg60']}%"
    return text


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "python": platform.python_version()}


def report(results: dict) -> str:
    m, s = results["machine"], results["set"]
    lines = [
        f"machine: {m['cpu']}, {m['usable_cores']}/{m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads)",
        f"load: at start {load_text(results['load_start'])}; at end {load_text(results['load_end'])}",
        f"set: {s['videos']} videos ({s['normal']} normal), {s['snippets']:,} snippets x {s['dim']}-d "
        f"({s['bytes'] / 1e9:.2f} GB), scale {s['scale']}; lengths: {s['lengths_from']}",
        f"generation {s['write_s']:.1f} s",
        "",
    ]
    tr = results["training"]
    any_head = next(iter(tr.values()))
    steps = ", ".join(f"{name} {r['product']['steps_per_epoch']} steps of {r['product']['batch_size']} videos"
                      for name, r in tr.items())
    naive_steps = (f"{any_head['naive']['steps_per_epoch']} steps of 1 pair" if any_head["naive"]
                   else "not run (--naive-epochs 0)")
    lines += [
        f"Training: seconds per epoch ({any_head['product']['n_train']} training videos; product: {steps}; "
        f"naive: {naive_steps})",
        f"{'head':<7}{'setup s':>9}{'naive s/ep':>12}{'epoch 1 s':>11}{'epochs 2+ s':>13}"
        f"{'speedup ep1':>13}{'speedup ep2+':>14}",
    ]

    def num(x, fmt: str, suffix: str = "") -> str:
        return "-" if x is None else f"{x:{fmt}}{suffix}"

    for name, r in tr.items():
        p, n = r["product"], r["naive"]
        lines.append(f"{name:<7}{p['setup_s']:>9.2f}{num(n and n['mean_epoch_s'], '.2f'):>12}"
                     f"{p['cold_epoch_s']:>11.2f}{num(p['later_epoch_s'], '.2f'):>13}"
                     f"{num(r['speedup_cold'], '.1f', 'x'):>13}{num(r['speedup_later'], '.1f', 'x'):>14}")
    for name, r in tr.items():
        p = r["product"]
        lines.append(f"  {name} product epochs: " + ", ".join(
            f"{s:.2f} s ({share:.0%} first loads)" for s, share in zip(p["epoch_s"], p["expected_first_load_share"])))
    lines.append("  (first loads: expected share of an epoch's draws whose file is not in the segment cache yet)")
    inf = results["inference"]
    any_inf = next(iter(inf.values()))
    sampled = ("all" if any_inf["naive_snippets"] == any_inf["snippets"]
               else f"a random {any_inf['naive_snippets']:,} of {any_inf['snippets']:,}, rate extrapolated")
    lines += [
        "",
        f"Inference: snippets/s (product: score_snippets per whole video, {any_inf['snippets']:,} snippets; "
        f"naive: one snippet per call, {sampled})",
        f"{'head':<7}{'product':>12}{'naive':>12}{'speedup':>10}",
    ]
    for name, r in inf.items():
        lines.append(f"{name:<7}{r['product_snippets_per_s']:>12,.0f}{r['naive_snippets_per_s']:>12,.0f}"
                     f"{r['speedup']:>9.1f}x")
    det = results.get("detection")
    if det:
        t = results["test_set"]
        lines += [
            "",
            f"Detection: pooled frame ROC AUC on a held-out set of the same task ({t['videos']} videos, "
            f"{t['normal']} normal, {t['snippets']:,} snippets; lengths: {t['lengths_from']}), selected model",
            f"{'head':<7}{'frame AUC':>11}{'epochs':>8}{'best epoch':>12}{'val metric':>12}",
        ]
        for name, r in det.items():
            lines.append(f"{name:<7}{r['frame_auc']:>11.4f}{r['epochs']:>8}{num(r['best_epoch'], 'd'):>12}"
                         f"{num(r['val_metric'], '.4f'):>12}")
    return "\n".join(lines)


def selected_model_frame_scores(out: Path, lst: Path, labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Frame labels and scores of the selected head in ``out`` over a test list, pooled in list
    order (each snippet repeated x16, as ``vad evaluate``)."""
    net = load_module(out)
    ys, ss = [], []
    for path in (Path(line) for line in lst.read_text().splitlines() if line):
        vid = path.name.rsplit("__", 1)[0]
        s = score_snippets(net, load_crop(path)[None])
        ys.append(np.repeat(labels[vid], 16))
        ss.append(np.repeat(s.astype(np.float64), 16))
    return np.concatenate(ys), np.concatenate(ss)


def bench_detection(out: Path, lst: Path, labels: dict[str, np.ndarray]) -> float:
    """Pooled frame AUC of the selected head in ``out`` on a test list (scores repeated x16)."""
    return float(roc_auc(*selected_model_frame_scores(out, lst, labels)))


def main(argv: list[str] | None = None) -> int:
    if "--quality" in (sys.argv[1:] if argv is None else argv):  # detection quality side by side
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_heads_quality import main as quality_main

        return quality_main(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every video's snippet count (default 1.0)")
    ap.add_argument("--n-videos", type=int, default=1610, help="videos in the set (default 1610, as UCF-Crime train)")
    ap.add_argument("--n-normal", type=int, default=None, help="normal videos (default 800/1610 of --n-videos)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--heads", nargs="+", default=list(DEFAULT_HEADS), choices=HEAD_NAMES,
                    help="heads to train (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="product training epochs, first = cold (default 4; with --train-configs: the config's)")
    ap.add_argument("--naive-epochs", type=int, default=1, help="naive baseline epochs (0: skip the baseline)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"videos per step (default {TrainLoopConfig.batch_size}; with --train-configs: the config's)")
    ap.add_argument("--train-configs", action="store_true",
                    help="train each head with its configs/train/<head>.yaml, as `vad train --head` does")
    ap.add_argument("--test-videos", type=int, default=0,
                    help="also write a held-out set of this many videos and report each head's frame AUC on it")
    ap.add_argument("--test-annotations", type=Path, default=DEFAULT_TEST_ANNOTATIONS,
                    help="UCF-Crime Test_Annotation.txt for the held-out set's lengths (default: %(default)s)")
    ap.add_argument("--naive-snippets", type=int, default=5000, help="snippets scored one by one (naive inference)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS,
                    help="UCF-Crime Train_Annotation.txt for the real lengths (default: %(default)s)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the set (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    n_normal = round(args.n_videos * 800 / 1610) if args.n_normal is None else args.n_normal
    if not 0 < n_normal < args.n_videos or args.scale <= 0:
        ap.error("need normal and anomalous videos and a positive --scale")
    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
                     "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "machine": machine(), "load_start": load()}
    rng = np.random.default_rng(args.seed)
    plan, source = plan_videos(args.n_videos, n_normal, args.scale, args.annotations, rng)
    snippets = sum(t for _, t in plan)
    need = snippets * args.dim * 4
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_heads_", dir=args.workdir))
    if shutil.disk_usage(work).free < need * 1.2 + (1 << 30):
        shutil.rmtree(work)
        print(f"not enough disk space under {work.parent} for {need / 1e9:.1f} GB of features; "
              "lower --scale or pick --workdir", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` removes the set
    try:
        started = time.perf_counter()
        lst, _, task = write_set(plan, work / "features", args.dim, rng)
        results["set"] = {"videos": len(plan), "normal": n_normal, "snippets": snippets, "dim": args.dim,
                          "bytes": need, "scale": args.scale, "lengths_from": source,
                          "write_s": time.perf_counter() - started}
        print(f"wrote {len(plan)} videos, {snippets:,} snippets ({need / 1e9:.2f} GB) in "
              f"{results['set']['write_s']:.1f} s", file=sys.stderr)
        if args.test_videos:
            # its own generator: the training set and the inference sample stay those of the seed
            test_rng = np.random.default_rng([args.seed, 1])
            n_test_normal = round(args.test_videos * 150 / 290)
            test_plan, test_source = plan_videos(args.test_videos, n_test_normal, args.scale,
                                                 args.test_annotations, test_rng)
            test_list, test_labels, _ = write_set(test_plan, work / "test", args.dim, test_rng, task=task, name="test")
            results["test_set"] = {"videos": len(test_plan), "normal": n_test_normal,
                                   "snippets": sum(t for _, t in test_plan), "lengths_from": test_source}

        results["training"], trained = {}, {}
        if args.test_videos:
            results["detection"] = {}
        for name in args.heads:
            naive = None
            if args.naive_epochs > 0:
                naive = bench_naive_training(name, lst, work / f"naive-{name}", args)
                print(f"{name}: naive epoch {naive['mean_epoch_s']:.2f} s", file=sys.stderr)
            trainer, product = bench_product_training(name, lst, work / f"run-{name}", args)
            print(f"{name}: product epochs {[round(x, 2) for x in product['epoch_s']]} s", file=sys.stderr)
            trained[name] = trainer.head
            del trainer  # its stores hold segments and the raw validation features
            later = product["later_epoch_s"]
            results["training"][name] = {
                "product": product, "naive": naive,
                "speedup_cold": naive["mean_epoch_s"] / product["cold_epoch_s"] if naive else None,
                "speedup_later": naive["mean_epoch_s"] / later if naive and later else None,
            }
            if args.test_videos:
                auc = bench_detection(work / f"run-{name}", test_list, test_labels)
                print(f"{name}: frame AUC {auc:.4f} on the held-out set", file=sys.stderr)
                results["detection"][name] = {"frame_auc": auc, "epochs": len(product["epoch_s"]),
                                              "best_epoch": product["best"]["epoch"],
                                              "val_metric": product["best"]["metric"]}
        results["inference"] = bench_inference(trained, lst, args.dim, args.naive_snippets, rng)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = load()
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
