#!/usr/bin/env python
"""Worked example of `vad score` -> `vad evaluate`, reproducible offline in about a minute.

Writes three short synthetic "camera" videos (a walkway with a walker; in two of them a bright
flickering block appears in one, a person running the wrong way in the other: the planted
anomalies), a UCF-Crime-format annotation file
for them, scores them with the real I3D weights against normal reference footage of the same
scene, and evaluates the run. The outputs are what the README's evaluation section shows.

    .venv/bin/python scripts/example_evaluate.py --out runs/example
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import av
import numpy as np

from pipelines.cli import main as vad


def write_video(path: Path, n_frames: int, anomaly: tuple[int, int] | None, seed: int, fps: int = 10,
                kind: str = "flash") -> Path:
    """``kind``: "flash" (a large flickering block: easy) or "runner" (a second person running
    the wrong way, five times faster than walkers: subtle)."""
    rng = np.random.default_rng(seed)
    h, w = 256, 320
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
        for t in range(n_frames):
            frame = np.full((h, w, 3), 95, np.uint8)
            frame[180:, :] = 120  # the walkway
            frame += rng.integers(0, 8, size=frame.shape, dtype=np.uint8)
            x = (4 * t + 13 * seed) % (w - 24)
            frame[150:200, x:x + 24] = (60, 70, 160)  # a walker
            if anomaly and anomaly[0] <= t < anomaly[1]:
                if kind == "flash":
                    frame[40:220, 60:260] = (255, 255, 255) if t % 2 else (255, 40, 0)
                else:
                    rx = w - 24 - (20 * (t - anomaly[0])) % (w - 24)
                    frame[140:200, rx:rx + 24] = (160, 60, 60)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    args = parser.parse_args()
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    videos = out / "videos"
    write_video(out / "reference" / "walkway_normal.mkv", 320, None, seed=1)
    write_video(videos / "Abuse901_x264.mkv", 480, (208, 304), seed=2)
    write_video(videos / "Arson901_x264.mkv", 400, (96, 160), seed=3, kind="runner")
    write_video(videos / "Normal_Videos_901_x264.mkv", 400, None, seed=4)
    ann = out / "Temporal_Anomaly_Annotation.txt"
    ann.write_text(
        "Abuse901_x264.mp4  Abuse  208  304  -1  -1  \n"
        "Arson901_x264.mp4  Arson  96  160  -1  -1  \n"
        "Normal_Videos_901_x264.mp4  Normal  -1  -1  -1  -1  \n"
    )
    code = vad(["score", str(videos), "--reference", str(out / "reference"), "--out", str(out / "run"),
                "--set", f"cache.root={out / 'cache'}"])
    if code != 0:
        return code
    return vad(["evaluate", "--scores", str(out / "run"), "--gt", "ucf_crime", "--annotations", str(ann),
                "--out", str(out / "eval"), "--threshold", "1.5"])


if __name__ == "__main__":
    sys.exit(main())
