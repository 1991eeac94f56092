"""`vad train` -> `vad score --head --features` -> `vad evaluate` on a synthetic feature set
written as a released-style list; reproducibility, resume, and bad feature files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from pipelines.cli import main

DIM = 32


def write_feature_set(root: Path, n_normal: int, n_anomalous: int, seed: int, crops: int = 2,
                      prefix: str = "") -> tuple[Path, dict[str, np.ndarray]]:
    """UCF-style names (Normal_Videos_N_x264 / AbuseN_x264), `<id>__<crop>.npy` files, a list file
    with crops adjacent, and per-frame ground truth (planted snippets x16)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=DIM).astype(np.float32)
    signature = np.random.default_rng(99).normal(size=DIM).astype(np.float32)
    feats_dir = root / "features"
    feats_dir.mkdir(parents=True, exist_ok=True)
    lines, gt = [], {}
    for i in range(n_normal + n_anomalous):
        anomalous = i >= n_normal
        vid = f"{prefix}Abuse{i:03d}_x264" if anomalous else f"{prefix}Normal_Videos_{i:03d}_x264"
        t = int(rng.integers(30, 90))
        labels = np.zeros(t, np.uint8)
        if anomalous:
            a = int(rng.integers(0, t - 10))
            labels[a:a + int(rng.integers(4, 10))] = 1
        for c in range(crops):
            x = base + 0.6 * rng.normal(size=(t, DIM)).astype(np.float32)
            x[labels == 1] += 2.0 * signature
            path = feats_dir / f"{vid}__{c}.npy"
            np.save(path, np.abs(x).astype(np.float32))  # I3D-like: non-negative
            lines.append(str(path))
        gt[vid] = np.repeat(labels, 16)
    lst = root / f"{prefix or 'set'}.list"
    lst.write_text("\n".join(lines) + "\n")
    return lst, gt


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("feats")
    train_list, _ = write_feature_set(root / "train", 60, 60, seed=0, prefix="tr")
    test_list, test_gt = write_feature_set(root / "test", 20, 20, seed=1, prefix="te")
    gt_dir = root / "gt"
    gt_dir.mkdir()
    for vid, labels in test_gt.items():
        np.save(gt_dir / f"{vid}.npy", labels)
    return train_list, test_list, gt_dir


def train(out: Path, train_list: Path, head: str, *extra: str) -> int:
    return main(["train", "--head", head, "--train-list", str(train_list), "--out", str(out), "--no-progress",
                 "--set", "train.batch_size=16", "--set", "train.lr=0.001", *extra])


# Heads small enough for 32-d features (RTFM's widths would be 8 and (8, 2) at D = 32).
SMALL = {"mil": [], "gsmoe": ["--set", "head.params.hidden=64", "--set", "head.params.expert_hidden=16"],
         "rtfm": ["--set", "head.params.branch_dim=16", "--set", "head.params.hidden=[32,16]"]}


@pytest.mark.parametrize("head", ["mil", "gsmoe", "rtfm"])
def test_train_score_evaluate_end_to_end(tmp_path, dataset, head):
    train_list, test_list, gt_dir = dataset
    out = tmp_path / head
    assert train(out, train_list, head, "--set", "train.epochs=12", *SMALL[head]) == 0
    meta = json.loads((out / "head.json").read_text())
    assert meta["type"] == head and meta["dim"] == DIM
    # RTFM learns from feature magnitudes and GS-MoE from raw snippets: only MIL L2-normalises.
    assert meta["input_normalization"] == ("l2" if head == "mil" else "none")
    if head != "gsmoe":
        assert (meta["causal"], meta["lookahead"]) == {"mil": (True, 0), "rtfm": (False, -1)}[head]
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 13)) and "val_video_auc" in records[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_val"] == 12 and summary["n_train"] == 108  # 10 % of each label carved out
    run = tmp_path / f"{head}-run"
    assert main(["score", "--no-progress", "--head", str(out), "--features", str(test_list), "--fps", "30",
                 "--out", str(run)]) == 0
    rows = (run / "scores" / "teAbuse020_x264.csv").read_text().splitlines()
    assert rows[0] == "frame,time_s,score" and len(rows) - 1 == len(np.load(gt_dir / "teAbuse020_x264.npy"))
    ev = tmp_path / f"{head}-eval"
    assert main(["evaluate", "--scores", str(run), "--gt", str(gt_dir), "--out", str(ev), "--n-boot", "0"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n_videos"] == 40 and metrics["auc"] >= 0.9, metrics["auc"]


# rtfm: dropout-thinned top-k and BatchNorm statistics too; gsmoe: segments sampled from the run's generator
@pytest.mark.parametrize("head", ["mil", "rtfm", "gsmoe"])
def test_training_is_reproducible_and_resume_matches(tmp_path, dataset, head):
    train_list = dataset[0]
    common = ("--set", "train.val_fraction=0", "--set", "train.steps_per_epoch=3", *SMALL[head])
    assert train(tmp_path / "a", train_list, head, "--set", "train.epochs=4", *common) == 0
    assert train(tmp_path / "b", train_list, head, "--set", "train.epochs=4", *common) == 0
    # interrupted after 2 epochs, then resumed to 4
    assert train(tmp_path / "c", train_list, head, "--set", "train.epochs=2", *common) == 0
    assert train(tmp_path / "c", train_list, head, "--set", "train.epochs=4", "--resume", *common) == 0

    def last_weights(d: Path) -> dict[str, np.ndarray]:
        ptr = json.loads((d / "checkpoints" / "last.json").read_text())
        return load_file(str(d / "checkpoints" / ptr["dir"] / "head.safetensors"))

    a, b, c = last_weights(tmp_path / "a"), last_weights(tmp_path / "b"), last_weights(tmp_path / "c")
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_bad_feature_files_are_named_and_leave_no_checkpoint(tmp_path, dataset):
    train_list = dataset[0]
    lines = train_list.read_text().splitlines()
    cases = {}
    wrong_dim = tmp_path / "trAbuse900_x264__0.npy"
    np.save(wrong_dim, np.ones((20, DIM + 1), np.float32))
    cases["dimension"] = (lines + [str(wrong_dim)], wrong_dim.name)
    nan = tmp_path / "trAbuse901_x264__0.npy"
    arr = np.ones((20, DIM), np.float32)
    arr[3, 4] = np.nan
    np.save(nan, arr)
    cases["NaN"] = (lines + [str(nan)], nan.name)
    cases["missing"] = (lines + [str(tmp_path / "trAbuse902_x264__0.npy")], "trAbuse902_x264__0.npy")
    cases["empty"] = ([], "empty")
    for name, (content, expected) in cases.items():
        lst = tmp_path / f"{name}.list"
        lst.write_text("\n".join(content) + "\n")
        out = tmp_path / f"out-{name}"
        messages = []
        import logging

        class Grab(logging.Handler):
            def emit(self, record):
                messages.append(record.getMessage())

        handler = Grab()
        # the CLI resets root handlers at start; attach to the named logger it reports through
        logging.getLogger("vad").addHandler(handler)
        try:
            code = train(out, lst, "mil", "--set", "train.epochs=2")
        finally:
            logging.getLogger("vad").removeHandler(handler)
        assert code == 1, name
        assert any(expected in m for m in messages), (name, messages)
        assert not (out / "head.json").exists() and not (out / "checkpoints").exists(), name


def test_training_flushes_subnormals_only_while_it_runs(tmp_path, dataset, monkeypatch):
    """Subnormal floats are flushed to zero during a run (they slow CPU training down) and the
    process's mode is restored afterwards; ``train.flush_denormal=false`` leaves it alone."""
    from pipelines.train import Trainer, denormals_flushed, flushing_denormals

    assert not flushing_denormals()
    seen = []
    real = Trainer.validate

    def spy(self):
        seen.append(flushing_denormals())
        return real(self)

    monkeypatch.setattr(Trainer, "validate", spy)
    common = ("--set", "train.epochs=1", "--set", "train.steps_per_epoch=1")
    assert train(tmp_path / "on", dataset[0], "mil", *common) == 0
    assert train(tmp_path / "off", dataset[0], "mil", *common, "--set", "train.flush_denormal=false") == 0
    assert seen == [True, False] and not flushing_denormals()
    with denormals_flushed():
        with denormals_flushed():  # nested: the inner block leaves the outer one's mode on
            pass
        assert flushing_denormals()
    assert not flushing_denormals()


def test_select_last_keeps_the_last_epoch_not_the_best(tmp_path, dataset):
    train_list = dataset[0]
    out = tmp_path / "last"
    assert train(out, train_list, "mil", "--set", "train.epochs=5", "--set", "train.select=last",
                 "--set", "train.keep_checkpoints=5") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["epoch"] == 5 and summary["selection"] == "last epoch"
    saved = load_file(str(out / "head.safetensors"))
    last = load_file(str(out / "checkpoints" / "epoch-0005" / "head.safetensors"))
    for k in saved:
        np.testing.assert_array_equal(saved[k], last[k])
    assert train(tmp_path / "bad", train_list, "mil", "--set", "train.select=newest") != 0
