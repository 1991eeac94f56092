#!/usr/bin/env python
"""Soak test of the live monitor (not in CI): a camera that is killed every few minutes and
frozen once, for half an hour. Reports memory at the start and end, reconnects expected vs
seen, and events lost.

A GStreamer RTSP server (tests/rtsp.py; `make sysdeps` installs it) loops 20 s of the sample
camera with a planted block on screen from 8 s to 16 s of every loop, so an uninterrupted loop
makes exactly one event. The monitor (the default scene head, fitted on the same footage
without the block) runs in this process. Every ``--kill-every`` seconds the server is killed
and restarted ``--down`` seconds later; once, halfway, it is frozen (SIGSTOP) for ``--freeze``
seconds. Measured:

* RSS after ``--warmup`` and at the end (growth should be <= 10 %);
* reconnects: at least one per kill and per freeze expected, and seen (``reconnects``);
* events lost: events that were opened (``new``) and never ended with their clip written
  (must be 0), and the events per uninterrupted loop (loops whose block period the server
  served without a kill or a freeze, against events that ended).

    .venv/bin/python scripts/soak_monitor.py --minutes 30 --json runs/soak_monitor.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_monitor import rss_mb  # noqa: E402  (scripts/ is on sys.path when run as a file)
from pipelines.cli import default_score_configs  # noqa: E402
from pipelines.monitor import Camera, Monitor, build_heads  # noqa: E402
from tests.rtsp import RTSPServer, rtsp_available, write_h264  # noqa: E402
from vad.config import ScoreConfig, load_config  # noqa: E402
from vad.io import open_video  # noqa: E402

LOOP_S, BLOCK = 20.0, (8.0, 16.0)


def footage(d: Path, video: Path) -> tuple[Path, Path]:
    with open_video(video) as r:
        frames = r.read(0, int(LOOP_S * 10))
    small = np.stack([cv2.resize(f, (384, 288), interpolation=cv2.INTER_AREA) for f in frames])
    ref = write_h264(d / "reference.mp4", small, 10)
    planted = small.copy()
    block = cv2.resize(small[0, 10:50, 150:290], (80, 45), interpolation=cv2.INTER_CUBIC)
    planted[int(BLOCK[0] * 10):int(BLOCK[1] * 10), 85:130, 120:200] = block
    return ref, write_h264(d / "camera.mp4", planted, 10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--kill-every", type=float, default=240.0, help="seconds between server kills")
    ap.add_argument("--down", type=float, default=5.0, help="seconds the killed server stays down")
    ap.add_argument("--freeze", type=float, default=15.0, help="seconds of the one SIGSTOP, halfway")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the first RSS reading")
    ap.add_argument("--video", type=Path, default=REPO / "data" / "samples" / "vtest.avi")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    reason = rtsp_available()
    if reason:
        raise SystemExit(reason)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    total = args.minutes * 60
    disruptions: list[tuple[float, float, str]] = []  # (start, end) seconds since start, kind
    with tempfile.TemporaryDirectory(prefix="soak_monitor_") as tmp:
        d = Path(tmp)
        ref, cam_file = footage(d, args.video)
        cfg = load_config(ScoreConfig, default_score_configs(),
                          [f"head.reference={json.dumps(str(ref))}", "head.save=false", "monitor.pre_s=1",
                           "monitor.post_s=1", "events.min_duration_s=1"])
        cfg.monitor.stream = {"open_timeout_s": 5, "read_timeout_s": 3, "stall_timeout_s": 5, "backoff_max_s": 10,
                              "healthy_after_s": 10}
        out = d / "mon"
        with RTSPServer(cam_file, loop=True) as server:
            mon = Monitor([Camera(server.url, "soak")], cfg, out, build_heads(cfg, out))
            t0 = time.time()
            mon.start()
            cam = mon.cameras[0]
            rss0 = None
            next_kill, froze = args.kill_every, False
            try:
                while (now := time.time() - t0) < total:
                    if rss0 is None and now >= args.warmup:
                        rss0 = rss_mb()
                    if not froze and now >= total / 2:
                        server.freeze()
                        time.sleep(args.freeze)
                        server.thaw()
                        disruptions.append((now, time.time() - t0, "freeze"))
                        froze = True
                    elif now >= next_kill:
                        server.kill()
                        time.sleep(args.down)
                        server.restart()
                        disruptions.append((now, time.time() - t0, "kill"))
                        next_kill = now + args.kill_every
                    time.sleep(0.5)
                rss1 = rss_mb()
                health = cam.health()
            finally:
                mon.stop()
        records = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()] if (
            out / "events.jsonl").is_file() else []
        opened = {r["event_id"] for r in records if r["update"] == "new"}
        ended = {r["event_id"]: r for r in records if r["update"] == "end"}
        lost = sorted(opened - set(ended))
        no_clip = sorted(e for e, r in ended.items() if not r.get("clip") or not (out / r["clip"]).is_file())
    # loops whose block period was served without a disruption (the server's loop phase is
    # unknown to us, so count block-period windows anywhere: a lower bound on events expected)
    clean_loops = int(total // LOOP_S) - 2 * len(disruptions) - 1
    result = {"minutes": args.minutes, "rss_start_mb": round(rss0 or float("nan"), 1), "rss_end_mb": round(rss1, 1),
              "rss_growth_pct": round(100 * (rss1 - (rss0 or rss1)) / (rss0 or rss1), 2),
              "disruptions": [{"start_s": round(a, 1), "end_s": round(b, 1), "kind": k} for a, b, k in disruptions],
              "reconnects_expected": len(disruptions), "reconnects_seen": health["reconnects"], "failures_seen": health["failures"],
              "stalls_seen": health["stalls"], "frames_scored": health["frames_scored"], "dropped": health["dropped"],
              "events_opened": len(opened), "events_ended": len(ended), "events_lost": len(lost),
              "ended_without_clip": len(no_clip), "uninterrupted_loops_at_least": clean_loops}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if not lost and not no_clip else 1


if __name__ == "__main__":
    sys.exit(main())
