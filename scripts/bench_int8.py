#!/usr/bin/env python
"""What int8 I3D costs downstream: frame AUC with fp32 vs int8 features on real footage.

The footage is the real sample camera (``vtest.avi``: a fixed camera over a walkway, 10 fps).
From it the script cuts clips and plants anomalies of four kinds into some of them, each over a
known frame range (the ground truth):

* ``flash``   a large flickering bright block (an easy, appearance anomaly);
* ``runner``  a person-sized patch crossing the walkway five times faster than the walkers;
* ``speed``   the footage itself played four times faster for a while (a motion anomaly);
* ``freeze``  the picture frozen on one frame (a camera fault).

Then, for each precision (fp32 on OpenVINO, int8 on OpenVINO calibrated on the reference
footage), with the same settings otherwise:

1. the label-free **reference head** fitted on the camera's normal reference footage
   (``vad score --reference``) scores the test clips; ``vad evaluate`` gives frame AUC;
2. a **MIL head** trained with ``vad train`` on the fp32 features of separate training clips
   (other segments, other anomaly placements) scores the test clips' features of that
   precision; frame AUC again (so int8 is judged on a head that never saw int8 features).

Printed: both AUCs per precision and their difference, plus the per-snippet cosine between the
two precisions' test features. ``--json`` keeps every number.

    .venv/bin/python scripts/bench_int8.py --out runs/bench_int8 --json runs/bench_int8.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import av
import numpy as np

from pipelines.cli import main as vad
from vad.io import open_video

REPO = Path(__file__).resolve().parents[1]
FPS = 10


def sample_frames() -> np.ndarray:
    path = REPO / "data" / "samples" / "vtest.avi"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `vad assets fetch`")
    with open_video(path) as reader:
        return reader.read(0, reader.info.n_frames)  # 795 x 576 x 768 x 3, about 1 GB


def write(path: Path, frames: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "g": "30"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


def plant(frames: np.ndarray, kind: str, a: int, b: int, source: np.ndarray, start: int) -> np.ndarray:
    out = frames.copy()
    h, w = out.shape[1:3]
    for t in range(a, b):
        if kind == "flash":
            out[t, h // 5:h // 5 * 4, w // 4:w // 4 * 3] = (255, 255, 255) if t % 2 else (255, 40, 0)
        elif kind == "runner":
            x = int((w - 40) * ((t - a) * 0.08 % 1.0))
            out[t, h // 2:h // 2 + 90, x:x + 40] = (150, 40, 40)
        elif kind == "speed":
            out[t] = source[min(len(source) - 1, start + a + 4 * (t - a))]
        elif kind == "freeze":
            out[t] = out[a]
    return out


def build(out: Path, frames: np.ndarray) -> dict[str, dict]:
    """Reference, training and test clips (UCF-style names: Normal_Videos_* are normal)."""
    n = 160  # 16 s clips
    videos: dict[str, dict] = {}
    write(out / "reference" / "cam_reference.mp4", frames[:320])
    kinds = ["flash", "runner", "speed", "freeze"]
    plan = [  # (split, name, start frame in the sample, anomaly kind or None, anomaly range in the clip)
        ("train", "Normal_Videos_801_x264", 320, None, None), ("train", "Normal_Videos_802_x264", 400, None, None),
        ("train", "Normal_Videos_803_x264", 480, None, None), ("train", "Normal_Videos_804_x264", 560, None, None),
        ("train", "Abuse801_x264", 330, "flash", (40, 90)), ("train", "Arson801_x264", 410, "runner", (80, 130)),
        ("train", "Assault801_x264", 490, "speed", (20, 60)), ("train", "Burglary801_x264", 570, "freeze", (60, 120)),
        ("test", "Normal_Videos_901_x264", 600, None, None), ("test", "Normal_Videos_902_x264", 635, None, None),
        ("test", "Abuse901_x264", 620, "flash", (90, 140)), ("test", "Arson901_x264", 600, "runner", (30, 90)),
        ("test", "Assault901_x264", 500, "speed", (70, 110)), ("test", "Burglary901_x264", 630, "freeze", (40, 110)),
    ]
    assert {k for *_, k, _ in plan if k} == set(kinds)
    for split, name, start, kind, rng in plan:
        clip = frames[start:start + n]
        if kind:
            clip = plant(clip, kind, rng[0], rng[1], frames, start)
        write(out / split / f"{name}.mp4", clip)
        gt = np.zeros(len(clip), np.uint8)
        if rng:
            gt[rng[0]:rng[1]] = 1
        videos[name] = {"split": split, "kind": kind, "range": rng, "n_frames": len(clip)}
        if split == "test":
            (out / "gt").mkdir(parents=True, exist_ok=True)
            np.save(out / "gt" / f"{name}.npy", gt)
    return videos


def run(args: list[str]) -> None:
    code = vad(args)
    if code != 0:
        raise SystemExit(f"vad {' '.join(args)} exited {code}")


def auc(eval_dir: Path) -> float:
    return float(json.loads((eval_dir / "metrics.json").read_text())["auc"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_int8"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args()
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    videos = build(out, sample_frames())
    common = ["--no-progress", "--executor", "local", "--set", "features.engine=openvino",
              "--set", f"cache.root={out / 'cache'}"]
    results: dict[str, dict] = {}
    for precision in ("fp32", "int8"):
        prec = ["--precision", precision, "--set", f"features.calibration={out / 'reference'}"]
        run(["score", str(out / "test"), "--reference", str(out / "reference"), "--out", str(out / f"ref_{precision}"),
             *common, *prec])
        run(["evaluate", "--scores", str(out / f"ref_{precision}"), "--gt", str(out / "gt"),
             "--out", str(out / f"ref_{precision}_eval"), "--n-boot", "0"])
        run(["extract", str(out / "train"), str(out / "test"), "--out", str(out / f"extract_{precision}"),
             *common, *prec])
        results[precision] = {"reference_auc": auc(out / f"ref_{precision}_eval")}
    # the cache holds both precisions under their own extractor keys
    keys = sorted(p.name for p in (out / "cache").iterdir() if p.is_dir() and p.name.startswith("i3d-"))
    lists = {}
    for key in keys:
        lst = out / f"{key}.list"
        run(["cache", "export-list", "--extractor", key, "--out", str(lst), "--root", str(out / "cache")])
        lists[key] = lst
    manifest = {k: json.loads(next((out / "cache" / k).glob("*.json")).read_text()) for k in keys}
    by_precision = {m["extractor"]["config"]["precision"]: k for k, m in manifest.items()}
    fp32_list, int8_list = lists[by_precision["fp32"]], lists[by_precision["int8"]]
    def split_lines(lst: Path, split: str) -> str:
        # list lines name <video_id>__<crop>.npy files
        keep = {n for n, v in videos.items() if v["split"] == split}
        return "".join(ln + "\n" for ln in lst.read_text().splitlines()
                       if ln.strip() and Path(ln.split()[0]).stem.rsplit("__", 1)[0] in keep)

    train = out / "train.list"
    train.write_text(split_lines(fp32_list, "train"))
    run(["train", "--head", "mil", "--train-list", str(train), "--dataset", "ucf_crime", "--out", str(out / "mil"),
         "--no-progress", "--set", f"train.epochs={args.epochs}", "--set", "train.batch_size=4"])
    for precision, lst in (("fp32", fp32_list), ("int8", int8_list)):
        test = out / f"test_{precision}.list"
        test.write_text(split_lines(lst, "test"))
        run(["score", "--head", str(out / "mil"), "--features", str(test), "--dataset", "ucf_crime", "--fps", str(FPS),
             "--out", str(out / f"mil_{precision}"), "--no-progress"])
        run(["evaluate", "--scores", str(out / f"mil_{precision}"), "--gt", str(out / "gt"),
             "--out", str(out / f"mil_{precision}_eval"), "--n-boot", "0"])
        results[precision]["mil_auc"] = auc(out / f"mil_{precision}_eval")
    feats = {p: np.concatenate([np.load(f) for f in sorted((out / "cache" / by_precision[p]).glob("*901*__0.npy"))])
             for p in ("fp32", "int8")}
    a, b = feats["fp32"], feats["int8"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    summary = {"results": results, "test_cosine_min": float(cos.min()), "test_cosine_mean": float(cos.mean()),
               "reference_auc_drop": results["fp32"]["reference_auc"] - results["int8"]["reference_auc"],
               "mil_auc_drop": results["fp32"]["mil_auc"] - results["int8"]["mil_auc"],
               "videos": videos, "wall_s": round(time.perf_counter() - t0, 1)}
    print(f"reference head frame AUC: fp32 {results['fp32']['reference_auc']:.4f}, int8 "
          f"{results['int8']['reference_auc']:.4f} (drop {summary['reference_auc_drop']:+.4f})")
    print(f"MIL head (trained on fp32) frame AUC: fp32 {results['fp32']['mil_auc']:.4f}, int8 "
          f"{results['int8']['mil_auc']:.4f} (drop {summary['mil_auc_drop']:+.4f})")
    print(f"int8 vs fp32 test features: cosine min {cos.min():.4f}, mean {cos.mean():.4f} over {len(cos)} snippets")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
