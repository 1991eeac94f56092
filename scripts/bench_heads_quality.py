#!/usr/bin/env python
"""Detection quality of the weakly-supervised heads side by side (``bench_heads.py --quality``).

Four synthetic UCF-Crime-like feature sets of the same kind as the side-by-side run of issue 15
(1024-d snippets, L2-normalised; one signature direction per anomaly class added inside one
contiguous interval of each anomalous video; video names in UCF-Crime's form so the 13 classes
reach the class experts):

* ``planted``     13 classes, 32-256 snippets, the interval 10-35 % of the video;
* ``multiclass``  the same, with the classes' signature strengths spread 0.45x-1.5x (some subtle);
* ``short``       the interval 2-5 % of the video (at least 2 snippets), 64-320 snippets;
* ``long-normal`` normal videos 4x longer (256-1024 snippets) than the anomalous ones.

Each set has ``--train`` training videos (half anomalous) and ``--test`` test videos of the same
task (same base pattern and signatures, new videos). Every head trains with its shipped
``configs/train/<head>.yaml`` (what ``vad train --head`` uses), once per ``--seeds`` training
seed, and is **selected on validation data only**: the trainer's validation split carved from the
training list, scored by frame AUC against its frame labels (``--val-gt``). The selected model is
scored on the test set: pooled frame ROC AUC and AP (each snippet's score repeated over its 16
frames, as ``vad evaluate``), reported as mean +- sd over seeds, with seconds per epoch.
``--oracle`` adds, per set, a probe *given* the true class signatures: the data's ceiling, to
tell a head that cannot learn the task from data that do not separate.

    .venv/bin/python scripts/bench_heads.py --quality --json runs/bench_quality.json
    .venv/bin/python scripts/bench_heads.py --quality --sets planted --seeds 1 --heads mil   # a quick look
    .venv/bin/python scripts/bench_heads.py --quality --heads mil --seeds 1 --epochs 1 --oracle   # the ceilings
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_heads import UCF_CLASSES, selected_model_frame_scores  # noqa: E402
from pipelines.cli import default_train_configs  # noqa: E402
from pipelines.train import Trainer  # noqa: E402
from vad.config import TrainConfig, load_config  # noqa: E402
from vad.eval import average_precision_step, roc_auc  # noqa: E402
from vad.utils import cpu_info  # noqa: E402

SETS = {
    "planted": {"lengths": (32, 256), "interval": (0.10, 0.35), "spread": (1.0, 1.0), "normal_scale": 1},
    "multiclass": {"lengths": (32, 256), "interval": (0.10, 0.35), "spread": (0.45, 1.5), "normal_scale": 1},
    "short": {"lengths": (64, 320), "interval": (0.02, 0.05), "spread": (1.0, 1.0), "normal_scale": 1},
    "long-normal": {"lengths": (32, 256), "interval": (0.10, 0.35), "spread": (1.0, 1.0), "normal_scale": 4},
}
HEADS = ("mil", "rtfm", "gsmoe")


def make_task(dim: int, seed: int, spread: tuple[float, float]) -> dict:
    """What defines the task: a base pattern, a unit signature per class and its strength."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=dim)
    sig = rng.normal(size=(len(UCF_CLASSES), dim))
    sig /= np.linalg.norm(sig, axis=1, keepdims=True)
    strength = np.linspace(spread[0], spread[1], len(UCF_CLASSES))
    rng.shuffle(strength)
    return {"base": base / np.linalg.norm(base), "sig": sig, "strength": strength}


def write_split(folder: Path, name: str, n: int, kind: dict, task: dict, dim: int, amplitude: float,
                rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """``n`` videos (half anomalous, classes cycling) as ``<id>__0.npy``, a list, snippet labels.

    A snippet is ``base + scene offset + slow drift + noise`` (the scene offset and drift differ
    per video: normal variation the heads must ignore), plus ``amplitude * strength_c *
    signature_c`` inside the anomalous interval, then L2-normalised."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, labels, per_class = [], {}, {}
    lo, hi = kind["lengths"]
    for i in range(n):
        anomalous = i % 2 == 1
        if anomalous:
            c = (i // 2) % len(UCF_CLASSES)
            per_class[c] = per_class.get(c, 0) + 1
            vid = f"{UCF_CLASSES[c]}{per_class[c]:03d}_x264" if name == "train" else \
                f"{UCF_CLASSES[c]}{500 + per_class[c]:03d}_x264"
            t = int(rng.integers(lo, hi + 1))
        else:
            vid = f"Normal_Videos_{(i // 2) + (1 if name == 'train' else 700):03d}_x264"
            t = int(rng.integers(lo * kind["normal_scale"], hi * kind["normal_scale"] + 1))
        scene = rng.normal(size=dim) * (0.6 / np.sqrt(dim))
        drift = np.cumsum(rng.normal(size=(t, dim)) * (0.05 / np.sqrt(dim)), axis=0)
        x = task["base"] + scene + drift + rng.normal(size=(t, dim)) * (1.0 / np.sqrt(dim))
        y = np.zeros(t, np.uint8)
        if anomalous:
            run = max(2, int(round(t * rng.uniform(*kind["interval"]))))
            start = int(rng.integers(0, t - run + 1))
            x[start:start + run] += amplitude * task["strength"][c] * task["sig"][c]
            y[start:start + run] = 1
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        path = folder / f"{vid}__0.npy"
        np.save(path, x.astype(np.float32))
        lines.append(str(path))
        labels[vid] = y
    lst = folder / f"{name}.list"
    lst.write_text("\n".join(lines) + "\n")
    return lst, labels


def set_task(name: str, args: argparse.Namespace) -> dict:
    """The task (base pattern, class signatures and strengths) behind set ``name``."""
    return make_task(args.dim, 10_000 + list(SETS).index(name), SETS[name]["spread"])


def write_set(folder: Path, name: str, args: argparse.Namespace) -> tuple[Path, dict, Path, dict]:
    """Set ``name``'s training and test splits under ``folder`` (lists and snippet labels); the
    one owner of which data a set is, shared with ``check_public_rtfm.py``."""
    set_i = list(SETS).index(name)
    kind = SETS[name]
    rng = np.random.default_rng(args.data_seed * 1000 + set_i)
    task = set_task(name, args)
    train_lst, train_labels = write_split(folder / "train", "train", args.train, kind, task, args.dim,
                                          args.amplitude, rng)
    test_lst, test_labels = write_split(folder / "test", "test", args.test, kind, task, args.dim, args.amplitude, rng)
    return train_lst, train_labels, test_lst, test_labels


def write_gt(folder: Path, labels: dict[str, np.ndarray]) -> Path:
    """Frame labels (each snippet's label over its 16 frames) for validation-based selection."""
    folder.mkdir(parents=True, exist_ok=True)
    for vid, y in labels.items():
        np.save(folder / f"{vid}.npy", np.repeat(y, 16))
    return folder


HIGH_SCORE = 0.5  # a score users read as "anomalous": the calibration measure


def normal_high_share(lst: Path, labels: dict[str, np.ndarray], frame_scores: np.ndarray) -> float:
    """Share of the normal videos' frames scoring >= 0.5 (frame scores pooled in list order, x16):
    how often a head would raise a false alarm at the natural threshold, which AUC does not see."""
    mask = np.concatenate([np.full(16 * len(labels[vid]), vid.startswith("Normal"))
                           for vid in (Path(line).name.rsplit("__", 1)[0] for line in lst.read_text().splitlines() if line)])
    return float((frame_scores[mask] >= HIGH_SCORE).mean())


def test_scores(out: Path, lst: Path, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Test frame AUC, AP and the normal frames' share scoring >= 0.5 of the selected model."""
    y, s = selected_model_frame_scores(out, lst, labels)
    return {"auc": float(roc_auc(y, s)), "ap": float(average_precision_step(y, s)),
            "normal_high": normal_high_share(lst, labels, s)}


def oracle_scores(task: dict, train_lst: Path, test_lst: Path, test_labels: dict[str, np.ndarray]) -> tuple[float, float]:
    """Test frame AUC and AP of a probe that is *given* the class signatures (``--oracle``).

    Each snippet scores ``max_c (x . sig_c - mu_c) / sd_c``, with ``mu_c``, ``sd_c`` the
    projection's mean and sd over the training list's normal snippets: how well the data
    separates when the signatures need not be learned. A ceiling for the heads, which must find
    the signatures from video labels alone; no head uses it."""
    sig = task["sig"].T.astype(np.float64)  # (dim, classes)

    def project(lst: Path):
        for path in (Path(line) for line in lst.read_text().splitlines() if line):
            yield path.name.rsplit("__", 1)[0], np.load(path).astype(np.float64) @ sig

    normal = np.concatenate([p for vid, p in project(train_lst) if vid.startswith("Normal")])
    mu, sd = normal.mean(axis=0), normal.std(axis=0) + 1e-12
    ys, ss = [], []
    for vid, p in project(test_lst):
        ys.append(np.repeat(test_labels[vid], 16))
        ss.append(np.repeat(((p - mu) / sd).max(axis=1), 16))
    y, s = np.concatenate(ys), np.concatenate(ss)
    return float(roc_auc(y, s)), float(average_precision_step(y, s))


def test_curve(out: Path, lst: Path, labels: dict[str, np.ndarray]) -> list[float]:
    """Test frame AUC of every epoch's checkpoint: a diagnosis of how a head's test score moves
    while it trains (``--test-curve``), never used to select anything."""
    return [round(float(roc_auc(*selected_model_frame_scores(d, lst, labels))), 4)
            for d in sorted((out / "checkpoints").glob("epoch-*"))]


def selection_name(cfg: TrainConfig) -> str:
    """How the trainer picked the model it leaves, in the report's words."""
    if cfg.train.select == "last":
        return "the last epoch"
    return "validation frame AUC" if cfg.train.val_fraction > 0 else "lowest training loss (no validation split)"


def train_one(head: str, lst: Path, gt: Path, out: Path, seed: int, args: argparse.Namespace) -> dict:
    keep = (args.epochs or 100_000) if args.test_curve else 1
    sets = [f"train.seed={seed}", f"train.keep_checkpoints={keep}"]
    sets += [f"train.threads={args.threads}"] if args.threads else []
    sets += [f"train.epochs={args.epochs}"] if args.epochs else []
    cfg = load_config(TrainConfig, default_train_configs(head), sets + list(args.set or []))
    trainer = Trainer(cfg, lst, out, val_gt=gt, progress=False)
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"epochs": len(records), "epoch_s": float(np.mean([r["train_s"] for r in records])), "train_s": wall,
            "best_epoch": trainer.best.get("epoch"), "val_metric": trainer.best.get("metric"),
            "selection": selection_name(cfg),
            "val_curve": [round(r.get("val_frame_auc", float("nan")), 4) for r in records]}


def report(results: dict) -> str:
    heads = results["heads"]
    picks = sorted({r.get("selection", "validation frame AUC") for per_head in results["sets"].values()
                    for cell in per_head.values() for r in cell["runs"]})
    lines = [f"Frame AUC / AP on the test split, mean +- sd over {len(results['seeds'])} training seed(s); "
             f"model selected by {' / '.join(picks)}",
             f"{'set':<13}" + "".join(f"{h + ' AUC':>20}{h + ' AP':>18}" for h in heads)]
    for name, per_head in results["sets"].items():
        row = f"{name:<13}"
        for h in heads:
            r = per_head[h]
            row += f"{r['auc_mean']:>12.4f} +- {r['auc_sd']:.4f}{r['ap_mean']:>10.4f} +- {r['ap_sd']:.4f}"
        lines.append(row)
        fewer = [f"{h} over {len(per_head[h]['runs'])}" for h in heads
                 if len(per_head[h]["runs"]) != len(results["seeds"])]
        if fewer:
            lines.append(f"{'':<13}(seeds: {', '.join(fewer)})")
    oracle = results.get("oracle") or {}
    if oracle:
        lines.append("")
        lines.append("oracle: a probe given the true class signatures (the data's ceiling; no head sees them)")
        for name, r in oracle.items():
            lines.append(f"{name:<13}{r['auc']:>12.4f}{'':>8}{r['ap']:>10.4f}")
    lines.append("")
    lines.append(f"normal videos' frames scoring >= {HIGH_SCORE} (false alarms at the natural threshold), mean over seeds")
    lines.append(f"{'set':<13}" + "".join(f"{h:>16}" for h in heads))
    for name, per_head in results["sets"].items():
        cells = [per_head[h].get("normal_high_mean") for h in heads]
        lines.append(f"{name:<13}" + "".join(f"{'-' if c is None else f'{100 * c:.2f} %':>16}" for c in cells))
    lines.append("")
    lines.append(f"{'set':<13}" + "".join(f"{h + ' s/epoch':>16}" for h in heads))
    for name, per_head in results["sets"].items():
        lines.append(f"{name:<13}" + "".join(f"{per_head[h]['epoch_s']:>16.3f}" for h in heads))
    for source in results.get("merged_from", []):
        lines.append(f"from {source['file']}: {source['command']}")
    return "\n".join(lines)


def summarize(runs: list[dict]) -> dict:
    """One (set, head) cell: its runs and their mean +- sd (sample sd; 0 for a single seed)."""
    aucs, aps = np.array([r["auc"] for r in runs]), np.array([r["ap"] for r in runs])
    return {"runs": runs, "auc_mean": float(aucs.mean()), "auc_sd": float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0,
            "ap_mean": float(aps.mean()), "ap_sd": float(aps.std(ddof=1)) if len(aps) > 1 else 0.0,
            "epoch_s": float(np.mean([r["epoch_s"] for r in runs])),
            # runs written before it was measured have none
            "normal_high_mean": float(np.mean(high)) if (high := [r["normal_high"] for r in runs if "normal_high" in r])
            else None}


def merge(paths: list[Path]) -> dict:
    """Several --json results (e.g. seeds or heads run as parallel invocations) as one table.

    Runs are matched by (set, head, seed); the same seed twice must have the same AUC, else the
    files come from different code or settings and are refused. Cells keep the seeds they have:
    a head with fewer seeds than another is reported over its own."""
    cells: dict[str, dict[str, dict[int, dict]]] = {}
    heads: list[str] = []
    sources = []
    amplitudes = set()
    oracle: dict[str, dict] = {}
    for path in paths:
        part = json.loads(Path(path).read_text())
        for name, r in (part.get("oracle") or {}).items():
            if name in oracle and abs(oracle[name]["auc"] - r["auc"]) > 1e-9:
                raise SystemExit(f"{path}: the oracle on {name} differs from another file's (other data)")
            oracle[name] = r
        amplitudes.add(part.get("amplitude"))
        if len(amplitudes) > 1:
            raise SystemExit(f"{path}: amplitude {part.get('amplitude')} differs from the other files' (other sets)")
        sources.append({"file": str(path), "command": part.get("command"), "date": part.get("date"),
                        "machine": part.get("machine")})
        for name, per_head in part["sets"].items():
            for head, cell in per_head.items():
                heads += [head] if head not in heads else []
                for i, run in enumerate(cell["runs"]):
                    seed = int(run.get("seed", part["seeds"][i]))  # files written before runs carried their seed
                    have = cells.setdefault(name, {}).setdefault(head, {})
                    if seed in have and abs(have[seed]["auc"] - run["auc"]) > 1e-9:
                        raise SystemExit(f"{path}: {name}/{head} seed {seed} has AUC {run['auc']:.6f}, another file "
                                         f"{have[seed]['auc']:.6f}: results of different runs cannot be merged")
                    have[seed] = {**run, "seed": seed}
    order = [name for name in SETS if name in cells]
    merged: dict = {"merged_from": sources, "heads": heads, "amplitude": amplitudes.pop(),
                    "seeds": sorted({s for per_head in cells.values() for runs in per_head.values() for s in runs}),
                    "sets": {}}
    if oracle:
        merged["oracle"] = {name: oracle[name] for name in SETS if name in oracle}
    for name in order:
        missing = [h for h in heads if h not in cells[name]]
        if missing:
            raise SystemExit(f"set {name} has no runs of {', '.join(missing)}: merge files that cover every head")
        merged["sets"][name] = {h: summarize([cells[name][h][s] for s in sorted(cells[name][h])]) for h in heads}
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quality", action="store_true", help=argparse.SUPPRESS)  # bench_heads.py's switch
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per head and set (default 3)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="train seeds first-seed .. first-seed + seeds - 1 (default 0)")
    ap.add_argument("--train", type=int, default=300, help="training videos per set (default 300)")
    ap.add_argument("--test", type=int, default=100, help="test videos per set (default 100)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--amplitude", type=float, default=0.35, help="signature strength (default 0.35)")
    ap.add_argument("--epochs", type=int, default=None, help="override every head's configured epochs")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra config override for every head")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--test-curve", action="store_true",
                    help="also score every epoch's checkpoint on the test split (diagnosis only; "
                         "selection stays on validation data)")
    ap.add_argument("--oracle", action="store_true",
                    help="also score each test split with a probe given the true class signatures (the "
                         "data's ceiling, for reading the heads' numbers)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON", default=None,
                    help="train nothing: combine earlier --json results (parallel invocations) into one "
                         "table, printed and written to --json")
    args = ap.parse_args(argv)
    if args.merge:
        results = merge(args.merge)
        results["report"] = report(results)
        print(results["report"])
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_quality_", dir=args.workdir))
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "command": " ".join(["bench_heads.py", *(sys.argv[1:] if argv is None else argv)]),
                     "machine": {**cpu_info(), "torch": torch.__version__}, "heads": args.heads,
                     "seeds": seeds, "amplitude": args.amplitude, "sets": {}}
    try:
        for name in args.sets:
            folder = work / name
            train_lst, train_labels, test_lst, test_labels = write_set(folder, name, args)
            gt = write_gt(folder / "gt", train_labels)
            if args.oracle:
                auc, ap_ = oracle_scores(set_task(name, args), train_lst, test_lst, test_labels)
                results.setdefault("oracle", {})[name] = {"auc": auc, "ap": ap_}
                print(f"{name:<12} oracle: AUC {auc:.4f} AP {ap_:.4f}", flush=True)
            per_head: dict = {}
            for head in args.heads:
                runs = []
                for seed in seeds:
                    out = folder / f"{head}_{seed}"
                    r = {"seed": seed, **train_one(head, train_lst, gt, out, seed, args)}
                    r.update(test_scores(out, test_lst, test_labels))
                    if args.test_curve:
                        r["test_curve"] = test_curve(out, test_lst, test_labels)
                        print(f"{name:<12} {head:<6} seed {seed}: test AUC by epoch (diagnosis) "
                              f"{r['test_curve']}", flush=True)
                    runs.append(r)
                    print(f"{name:<12} {head:<6} seed {seed}: AUC {r['auc']:.4f} AP {r['ap']:.4f} "
                          f"normal >= {HIGH_SCORE}: {100 * r['normal_high']:.2f} % (best epoch {r['best_epoch']}, {r['epoch_s']:.2f} s/epoch)", flush=True)
                    shutil.rmtree(out / "checkpoints", ignore_errors=True)
                per_head[head] = summarize(runs)
            results["sets"][name] = per_head
        text = report(results)
        print(text)
        results["report"] = text
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
