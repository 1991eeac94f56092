#!/usr/bin/env python
"""Live monitoring under load: latency, sustained rate, drops and memory for 1, 2 and 4 streams.

Each stream is a 640x360 30 fps H.264 file played as a camera (``StreamSource`` with ``pace``:
frames are handed on at their presentation time, through the same reader thread, decoder,
latest-wins queue and scorer as an RTSP camera; the network hop is left out). All streams run
in one ``Monitor`` in this process, scored at ``--analysis-fps`` (10) with the chosen head:

* ``i3d``: the feature reference head (I3D on OpenVINO, 16-frame snippets, centre crop),
  fitted on reference footage first, so scoring starts at once;
* ``scene``: the default scene head, fitted on the same footage.

Per configuration, after ``--warmup`` seconds: frame-arrival-to-score latency p50/p95/p99 (a
snippet head answers a snippet's first frame one snippet later: 1.6 s at 10 fps is built in),
frames scored per second per stream, the share of analysed frames dropped by the latest-wins
queue (the scorer could not keep up), and this process's RSS at the start and end of the
measurement (RSS growth shows memory growing with time). Target (issue 12): one stream fully
real time at 10 fps with p95 under 2 s; more streams degrade by dropping frames, not by growing
latency or memory.

    .venv/bin/python scripts/bench_monitor.py --json runs/bench_monitor.json
    .venv/bin/python scripts/bench_monitor.py --heads scene --streams 1,2 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipelines.monitor import Camera, Monitor, build_heads  # noqa: E402
from vad.config import ScoreConfig, load_config  # noqa: E402
from pipelines.cli import default_score_configs  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_model() -> str:
    from vad.utils import cpu_info

    return str(cpu_info()["cpu_model"])


def write_stream_video(path: Path, seconds: float, seed: int) -> Path:
    """640x360 30 fps H.264 (keyframe every second): textured background, movers, noise."""
    import av
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.uniform(50, 200, (360, 640, 3)).astype(np.float32), (0, 0), 6)
    n = int(seconds * 30)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        s.options = {"g": "30", "bf": "0", "preset": "veryfast", "crf": "23"}
        for t in range(n):
            f = bg + rng.normal(0, 3, bg.shape).astype(np.float32)
            for k in range(4):
                x = int((60 + 157 * k + (2 + k) * t) % 700) - 30
                y = 80 + 60 * k
                f[y:y + 50, max(0, x):max(0, x + 20)] = (30 + 40 * k, 40, 60)
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.clip(f, 0, 255).astype(np.uint8), format="rgb24")))
        c.mux(s.encode())
    return path


def run_config(head: str, n_streams: int, videos: list[Path], reference: Path, seconds: float, warmup: float,
               fps: float, out: Path) -> dict[str, Any]:
    sets = [f"head.type={'reference' if head == 'i3d' else 'scene'}", f"head.reference={json.dumps(str(reference))}",
            "cache.enabled=false", "head.save=false", "monitor.post_s=0", "monitor.pre_s=0"]
    cfg: ScoreConfig = load_config(ScoreConfig, default_score_configs(), sets)
    cfg.monitor.stream = {"analysis_fps": fps, "loop": True, "pace": True}
    cameras = [Camera(str(videos[i % len(videos)]), f"cam{i}") for i in range(n_streams)]
    t_fit = time.perf_counter()
    monitor = Monitor(cameras, cfg, out, build_heads(cfg, out))
    fit_s = time.perf_counter() - t_fit
    monitor.start()
    try:
        time.sleep(warmup)
        for c in monitor.cameras:
            c.latencies.clear()
        start = {c.camera.name: (c.frames_scored, c.source.stats.frames_out, c.source.dropped) for c in monitor.cameras}
        rss0, t0 = rss_mb(), time.perf_counter()
        time.sleep(seconds)
        elapsed = time.perf_counter() - t0
        rss1 = rss_mb()
        per = {}
        for c in monitor.cameras:
            s0 = start[c.camera.name]
            lat = np.array(list(c.latencies)) if c.latencies else np.array([np.nan])
            scored, offered, dropped = (c.frames_scored - s0[0], c.source.stats.frames_out - s0[1],
                                        c.source.dropped - s0[2])
            per[c.camera.name] = {"fps_scored": scored / elapsed, "offered_fps": offered / elapsed,
                                  "dropped_ratio": dropped / max(1, offered),
                                  "latency_p50_s": float(np.nanpercentile(lat, 50)),
                                  "latency_p95_s": float(np.nanpercentile(lat, 95)),
                                  "latency_p99_s": float(np.nanpercentile(lat, 99)), "reconnects": c.source.stats.reconnects}
    finally:
        monitor.stop()
    agg = {k: float(np.mean([p[k] for p in per.values()])) for k in next(iter(per.values())) if k != "reconnects"}
    return {"head": head, "streams": n_streams, "seconds": round(elapsed, 1), "fit_s": round(fit_s, 1),
            "rss_start_mb": round(rss0, 1), "rss_end_mb": round(rss1, 1), **{k: round(v, 3) for k, v in agg.items()},
            "per_camera": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", default="i3d,scene", help="comma-separated: i3d, scene")
    ap.add_argument("--streams", default="1,2,4", help="comma-separated stream counts")
    ap.add_argument("--seconds", type=float, default=40.0, help="measured seconds per configuration")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (model load, first snippets)")
    ap.add_argument("--analysis-fps", type=float, default=10.0)
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_monitor_") as tmp:
        tmp_path = Path(tmp)
        videos = [write_stream_video(tmp_path / f"s{i}.mp4", 20, seed=i) for i in range(4)]
        reference = write_stream_video(tmp_path / "ref.mp4", 20, seed=9)
        for head in [h.strip() for h in args.heads.split(",") if h.strip()]:
            for n in [int(x) for x in args.streams.split(",")]:
                r = run_config(head, n, videos, reference, args.seconds, args.warmup, args.analysis_fps,
                               tmp_path / f"run_{head}_{n}")
                rows.append(r)
                print(f"{head:>5} x{n}: {r['fps_scored']:.1f} fps scored/stream of {r['offered_fps']:.1f} offered, "
                      f"dropped {100 * r['dropped_ratio']:.1f} %, latency p50 {r['latency_p50_s']:.2f} s "
                      f"p95 {r['latency_p95_s']:.2f} s p99 {r['latency_p99_s']:.2f} s, RSS {r['rss_start_mb']:.0f} -> "
                      f"{r['rss_end_mb']:.0f} MB", flush=True)
    machine = {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()}
    print(f"machine: {machine['cpu']}, {machine['cpus']} CPUs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
