"""`vad evaluate`: numbers equal sklearn on the same concatenated arrays; alignment and missing
videos are reported; works on a real `vad score` run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from pipelines.cli import main
from tests.videos import ANNOTATIONS, require_annotations

UCF_TEST = ANNOTATIONS / "ucf_crime" / "Test_Annotation.txt"


@pytest.fixture(scope="module")
def ucf_gt(tmp_path_factory) -> Path:
    require_annotations()
    out = tmp_path_factory.mktemp("gt_ucf")
    assert main(["gt", "build", "--dataset", "ucf_crime", "--annotations", str(UCF_TEST), "--out", str(out)]) == 0
    return out


def _snippet_scores(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Snippet scores that weakly follow the labels, rounded so ties occur (as real scores do)."""
    n = len(labels) // 16
    snippet_labels = labels[: n * 16].reshape(n, 16).max(axis=1) if n else np.zeros(0)
    return np.round(np.clip(rng.normal(0.3 + 0.3 * snippet_labels, 0.2), 0, 1), 2)


def test_ucf_metrics_equal_sklearn_on_concatenated_arrays(tmp_path, ucf_gt):
    rng = np.random.default_rng(0)
    manifest = json.loads((ucf_gt / "gt_manifest.json").read_text())
    order = [v["video_id"] for v in manifest["videos"]]
    assert len(order) == 290
    scores_dir = tmp_path / "scores"
    scores_dir.mkdir()
    all_scores, all_labels, anomalous, normal_scores = [], [], [], []
    for vid in order:
        labels = np.load(ucf_gt / f"{vid}.npy")
        s = _snippet_scores(labels, rng)
        np.save(scores_dir / f"{vid}.npy", s)
        frames = np.repeat(s, 16)[: len(labels)]
        all_scores.append(frames)
        all_labels.append(labels)
        (anomalous if labels.any() else normal_scores).append((frames, labels) if labels.any() else frames)
    out = tmp_path / "eval"
    code = main(["evaluate", "--scores", str(scores_dir), "--gt", str(ucf_gt), "--out", str(out),
                 "--n-boot", "20", "--max-video-plots", "3"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    y, p = np.concatenate(all_labels), np.concatenate(all_scores)
    assert m["n_videos"] == 290 and m["n_frames"] == len(y) == 1_109_824
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-10)
    assert m["ap_step"] == pytest.approx(average_precision_score(y, p), abs=1e-10)
    precision, recall, _ = precision_recall_curve(y, p)
    assert m["ap_trapezoid"] == pytest.approx(auc(recall, precision), abs=1e-10)
    ya = np.concatenate([l for _, l in anomalous])
    pa = np.concatenate([s for s, _ in anomalous])
    assert m["auc_anomalous"] == pytest.approx(roc_auc_score(ya, pa), abs=1e-10)
    assert m["ap_anomalous"] == pytest.approx(average_precision_score(ya, pa), abs=1e-10)
    pn = np.concatenate(normal_scores)
    assert m["far"] == pytest.approx(np.mean(pn >= 0.5), abs=1e-12)
    assert set(m["per_class"]) == {"Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting",
                                   "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism"}
    # Snippet-level input: every video expanded x16; the tail of each is truncated to the drop-aligned GT.
    assert all(a["level"] == "snippet" for a in m["alignment"]["videos"])
    assert m["ci"]["auc"]["low"] <= m["auc"] <= m["ci"]["auc"]["high"]
    assert not m["missing_scores"] and not m["missing_gt"] and not m["excluded"]
    report = (out / "report.md").read_text()
    assert "| `auc` |" in report and "## Per class" in report and "## Per video" in report
    assert (out / "plots" / "roc.png").is_file() and (out / "plots" / "pr.png").is_file()
    assert len(list((out / "plots" / "videos").glob("*.png"))) == 3


def test_missing_and_misaligned_videos_are_listed(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    np.save(gt / "a.npy", np.r_[np.zeros(50), np.ones(30), np.zeros(20)].astype(np.uint8))
    np.save(gt / "b.npy", np.zeros(64, np.uint8))
    np.save(gt / "c.npy", np.zeros(64, np.uint8))
    scores = tmp_path / "scores"
    scores.mkdir()
    rng = np.random.default_rng(1)
    (scores / "a.csv").write_text("frame,time_s,score\n" + "".join(f"{i},{i/10},{rng.random():.3f}\n" for i in range(103)))
    np.save(scores / "b.npy", rng.random(4))           # 4 snippets = 64 frames: snippet level
    np.save(scores / "c.npy", rng.random(300))         # fits neither: excluded
    np.save(scores / "extra.npy", rng.random(10))      # no ground truth
    out = tmp_path / "eval"
    assert main(["evaluate", "--scores", str(scores), "--gt", str(gt), "--out", str(out), "--n-boot", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_videos"] == 2 and m["missing_gt"] == ["extra"]
    assert [e["video_id"] for e in m["excluded"]] == ["c"]
    records = {a["video_id"]: a for a in m["alignment"]["videos"]}
    assert records["a"] == {"video_id": "a", "scores_len": 103, "gt_len": 100, "level": "frame",
                            "adjustment": "truncated", "n_adjusted": 3}
    assert records["b"]["level"] == "snippet" and records["b"]["adjustment"] == "none"
    report = (out / "report.md").read_text()
    assert "truncated" in report and "extra" in report and "Excluded" in report


def test_evaluate_a_vad_score_run_with_dataset_annotations(tmp_path):
    """`vad score` output (frame-level CSVs, full length) against a UCF-format annotation file
    without frame counts: counts come from the run, the GT drops the tail, truncation is reported."""
    import torch

    from tests.test_score_cli import SMALL, moving_square_video
    from vad.features.i3d import InceptionI3d

    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(InceptionI3d().state_dict(), weights)
    videos = tmp_path / "videos"
    videos.mkdir()
    moving_square_video(videos / "Abuse901_x264.mkv", 100, anomaly=(48, 80))
    moving_square_video(videos / "Normal_Videos_901_x264.mkv", 90)
    run = tmp_path / "run"
    args = ["score", "--no-progress", "--executor", "local", str(videos), "--out", str(run), "--no-cache",
            "--set", f"features.weights={weights}", *sum((["--set", s] for s in SMALL), [])]
    assert main(args) == 0
    ann = tmp_path / "Temporal_Anomaly_Annotation.txt"
    ann.write_text("Abuse901_x264.mp4  Abuse  48  80  -1  -1  \nNormal_Videos_901_x264.mp4  Normal  -1  -1  -1  -1  \n")
    out = tmp_path / "eval"
    assert main(["evaluate", "--scores", str(run), "--gt", "ucf_crime", "--annotations", str(ann),
                 "--out", str(out), "--n-boot", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_videos"] == 2 and m["n_frames"] == 96 + 80
    records = {a["video_id"]: a for a in m["alignment"]["videos"]}
    assert records["Abuse901_x264"]["adjustment"] == "truncated" and records["Abuse901_x264"]["n_adjusted"] == 4
    assert np.load(out / "gt" / "Abuse901_x264.npy")[48:80].all()
    assert (out / "plots" / "videos" / "Abuse901_x264.png").is_file()


def test_bad_inputs_exit_1(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--scores", str(tmp_path / "empty"), "--gt", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert main(["evaluate", "--scores", str(tmp_path / "nope"), "--gt", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    np.save(tmp_path / "empty" / "x.npy", np.zeros(3))
    assert main(["evaluate", "--scores", str(tmp_path / "empty"), "--gt", "ucf_crime", "--out", str(tmp_path / "o")]) == 1
