#!/usr/bin/env python
"""Run the public RTFM code (Tian et al., ICCV 2021) on the sets of ``bench_heads.py --quality``.

The check behind issue 15's "the RTFM-style head within 0.01 of what the public RTFM reaches on
the same kind of data": the authors' ``model.py``/``train.py``/``test_10crop.py`` are imported
*unmodified* from the user's own clone (``--rtfm-repo``; nothing of it is copied into vad) and
driven the way their ``main.py`` drives them: Adam (lr 1e-3, weight decay 5e-3), 32 normal + 32
anomalous videos per step, 32 segments by their ``process_feat``, ``--steps`` iterations (800
as in the issue's side-by-side run), then their ``test()`` on the test split (pooled frame ROC
AUC, scores repeated x16). What this harness changes around their code, and why:

* Their model hard-codes 10 crops in one place (``features[0:self.batch_size*10]``, where the
  normal videos' crops end) and 2048-d features (the aggregator's fusing convolutions and its
  residual); the bench's features are one 1024-d crop, zero-padded to 2048-d (the same vectors,
  embedded). With ``--crops 1`` (the default, the issue's single-crop run) the model gets a
  ``batch_size`` whose product with 10 is itself, so that split falls after the normal videos'
  one crop; every other use of ``batch_size`` is unchanged. ``--crops 10`` instead repeats the
  crop 10 times (their crop mean of equal crops is the crop; only the dropout masks differ per
  copy), 10x the work.
* ``torch.Tensor.cuda`` is the identity (their loss calls ``label.cuda()``), ``visdom`` is a
  stand-in that draws nothing, ``np.int`` is ``int`` (removed from numpy).
* Their test loads ``list/gt-ucf.npy`` from the working directory: it runs in a scratch
  directory holding the test split's frame labels there.

It prints their last-iteration AUC (and, with ``--eval-every``, the best over the evaluations
after step 200, their test-set checkpoint pick) per set and seed, and the share of the normal
test videos' frames their last evaluation scored >= 0.5 (recorded from the scores their ``test()``
passes to ``roc_curve``); compare with the ``rtfm`` row of
``bench_heads.py --quality`` on the same ``--sets``/``--train``/``--test``/``--data-seed``:

    git clone https://github.com/tianyu0207/RTFM /tmp/RTFM
    .venv/bin/python scripts/check_public_rtfm.py --rtfm-repo /tmp/RTFM --json runs/public_rtfm.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_heads_quality import HIGH_SCORE, SETS, write_set  # noqa: E402

CROPS, WIDTH = 10, 2048  # what their model hard-codes


class OneCropBatch(int):
    """A batch size whose product with their hard-coded 10 crops is itself (``--crops 1``)."""

    def __mul__(self, other):
        return int(self) if other == CROPS else int(self) * other

    __rmul__ = __mul__


def load_rtfm(repo: Path) -> types.SimpleNamespace:
    """Import the authors' modules from ``repo`` with the shims the module docstring lists."""
    if not (repo / "model.py").is_file() or not (repo / "train.py").is_file():
        raise SystemExit(f"{repo} is not a clone of tianyu0207/RTFM (no model.py/train.py)")
    viz = types.ModuleType("visdom")

    class _Visdom:
        def __init__(self, *a, **k) -> None: ...

        def __getattr__(self, name):
            return lambda *a, **k: None

    viz.Visdom = _Visdom
    sys.modules["visdom"] = viz
    if not hasattr(np, "int"):
        np.int = int  # type: ignore[attr-defined]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    sys.path.insert(0, str(repo))
    model, train, test, utils = (importlib.import_module(m) for m in ("model", "train", "test_10crop", "utils"))
    evaluated: dict = {}
    roc_curve = test.roc_curve

    def recording_roc_curve(y, pred, *a, **k):  # keeps the frame scores their test() evaluated
        evaluated["pred"] = np.asarray(pred, dtype=np.float64)
        return roc_curve(y, pred, *a, **k)

    test.roc_curve = recording_roc_curve
    return types.SimpleNamespace(model=model, train=train, test=test.test, process_feat=utils.process_feat,
                                 evaluated=evaluated)


def crops(x: np.ndarray, n: int) -> np.ndarray:
    """(T, F) one crop -> (T, n, 2048), their feature file layout (zero-padded to their width)."""
    x = np.pad(x, ((0, 0), (0, WIDTH - x.shape[1])))
    return np.repeat(x[:, None, :], n, axis=1)


def train_batches(paths: list[Path], label: float, rtfm, batch: int, n_crops: int, rng: np.random.Generator):
    """Endless shuffled batches of (B, crops, 32, F) segment features as their Dataset/DataLoader
    yields (drop_last, reshuffled at each pass)."""
    segs = [np.stack([rtfm.process_feat(c, 32) for c in crops(np.load(p), n_crops).transpose(1, 0, 2)]) for p in paths]
    while True:
        order = rng.permutation(len(segs))
        for i in range(0, len(order) - batch + 1, batch):
            yield torch.from_numpy(np.stack([segs[j] for j in order[i:i + batch]])), torch.full((batch,), label)


def run_once(rtfm, train_lst: Path, test_lst: Path, test_labels: dict, steps: int, seed: int, batch: int,
             n_crops: int, eval_every: int, scratch: Path) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    paths = [Path(line) for line in train_lst.read_text().splitlines() if line]
    normal = [p for p in paths if p.name.startswith("Normal")]
    anomalous = [p for p in paths if not p.name.startswith("Normal")]
    nload, aload = (train_batches(normal, 0.0, rtfm, batch, n_crops, rng),
                    train_batches(anomalous, 1.0, rtfm, batch, n_crops, rng))
    net = rtfm.model.Model(WIDTH, OneCropBatch(batch) if n_crops == 1 else batch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=0.005)
    test_paths = [Path(line) for line in test_lst.read_text().splitlines() if line]
    test_feats = [torch.from_numpy(crops(np.load(p), n_crops)) for p in test_paths]
    (scratch / "list").mkdir(parents=True, exist_ok=True)
    np.save(scratch / "list" / "gt-ucf.npy",
            np.concatenate([np.repeat(test_labels[p.name.rsplit("__", 1)[0]], 16) for p in test_paths]))
    args = types.SimpleNamespace(dataset="ucf")
    viz = sys.modules["visdom"].Visdom()
    aucs = {}
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            for step in range(1, steps + 1):
                rtfm.train.train(nload, aload, net, batch, opt, viz, torch.device("cpu"))
                if (eval_every and step % eval_every == 0 and step > 200) or step == steps:
                    aucs[step] = float(rtfm.test([f[None] for f in test_feats], net, args, viz, torch.device("cpu")))
    finally:
        os.chdir(cwd)
    normal = np.concatenate([np.full(16 * len(test_labels[p.name.rsplit("__", 1)[0]]), p.name.startswith("Normal"))
                             for p in test_paths])
    return {"last": aucs[steps], "best_on_test": max(aucs.values()), "evaluations": len(aucs),
            # the last evaluation's normal-video frames scoring >= 0.5 (the quality bench's calibration measure)
            "normal_high": float((rtfm.evaluated["pred"][normal] >= HIGH_SCORE).mean()),
            "auc_by_step": {str(k): v for k, v in aucs.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtfm-repo", type=Path, required=True, help="a clone of github.com/tianyu0207/RTFM")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed + seeds - 1")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32, help="videos of each kind per step (theirs: 32)")
    ap.add_argument("--crops", type=int, default=1, choices=(1, CROPS), help="crops per video (default 1)")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="also test every N steps after step 200, for their test-set pick (default: last only)")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--amplitude", type=float, default=0.35)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.dim > WIDTH:
        raise SystemExit(f"--dim {args.dim} > {WIDTH}, the width their model is built for")
    torch.set_flush_denormal(True)  # their CPU training slows ~4x on denormals after ~200 steps (issue 15)
    rtfm = load_rtfm(args.rtfm_repo.resolve())
    work = Path(tempfile.mkdtemp(prefix="public_rtfm_"))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results: dict = {"steps": args.steps, "seeds": seeds, "amplitude": args.amplitude, "sets": {}}
    try:
        for name in args.sets:
            train_lst, _, test_lst, test_labels = write_set(work / name, name, args)  # bench_heads_quality's data
            runs = []
            for s in seeds:
                runs.append({"seed": s, **run_once(rtfm, train_lst, test_lst, test_labels, args.steps, s, args.batch,
                                                   args.crops, args.eval_every, work / name / f"run{s}")})
                print(f"{name:<12} public RTFM seed {s}: AUC {runs[-1]['last']:.4f} at step {args.steps} (best on "
                      f"test {runs[-1]['best_on_test']:.4f}); normal frames >= {HIGH_SCORE}: "
                      f"{100 * runs[-1]['normal_high']:.2f} %", flush=True)
            last = np.array([r["last"] for r in runs])
            results["sets"][name] = {"runs": runs, "last_mean": float(last.mean()),
                                     "last_sd": float(last.std(ddof=1)) if len(last) > 1 else 0.0,
                                     "normal_high_mean": float(np.mean([r["normal_high"] for r in runs]))}
            print(f"{name:<12} public RTFM, step {args.steps}: AUC {last.mean():.4f} +- "
                  f"{results['sets'][name]['last_sd']:.4f} (best on test {np.mean([r['best_on_test'] for r in runs]):.4f}); "
                  f"normal frames >= {HIGH_SCORE}: {100 * results['sets'][name]['normal_high_mean']:.2f} %", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
