"""Benchmark of `vad report` on a large synthetic run, and of its index in a real browser.

Makes a run of ``--videos`` videos (``--frames`` frames each, synthetic scores with a few bumps,
0-3 events per video with explanations, 2 % failed videos) through :class:`vad.rundir.RunDir`,
then measures, in this one process:

* the report (index + a page per video), against the PNG plots the run writes per video
  (``vad.viz.plot_scores``, the baseline: what a user had before), per video;
* the index in headless chromium (Debian's, driven by Playwright), in a fresh browser: the
  ``load`` event (tables filled and usable), then the charts drawn (Plotly.js fetched after load),
  a filter typed into the videos table, and one video page.

    .venv/bin/python scripts/bench_report.py --videos 1000 --out runs/bench_report
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vad.report import ReportOptions, write_report  # noqa: E402
from vad.rundir import RunDir, RunRecord  # noqa: E402
from vad.utils import cpu_info  # noqa: E402
from vad.viz import plot_scores  # noqa: E402


def make_run(root: Path, n_videos: int, n_frames: int, fps: float = 30.0, seed: int = 0) -> RunDir:
    rng = np.random.default_rng(seed)
    run = RunDir(root)
    run.create()
    run.write_config({"head": {"type": "scene"}, "events": {"threshold": 1.5, "min_duration_s": 1.0},
                      "output": {"plots": False}})
    videos, events = [], []
    for i in range(n_videos):
        vid = f"cam{i // 100:02d}_{i:05d}"
        if i % 50 == 7:
            videos.append({"video": f"/archive/{vid}.mp4", "video_id": vid, "status": "error",
                           "error": "cannot open video: moov atom not found", "n_events": 0, "outputs": {}})
            continue
        s = rng.gamma(2.0, 0.3, n_frames)
        evs = []
        for k in range(rng.integers(0, 4)):
            a = int(rng.integers(0, n_frames - 200))
            b = a + int(rng.integers(40, 200))
            s[a:b] += 2.0
            evs.append({"video_id": vid, "event_id": f"{vid}:{a}", "start_frame": a, "end_frame": b - 1,
                        "start_s": a / fps, "end_s": b / fps, "peak_frame": (a + b) // 2,
                        "peak_score": float(s[a:b].max()), "mean_score": float(s[a:b].mean()),
                        "explanation": f"Fast motion in the centre region: {2 + k:.1f}x the fastest seen.",
                        "evidence": {"rules_broken": [f"speed centre <= {1.5 + k}"]}})
        run.write_scores(vid, s, fps)
        result = {"video": f"/archive/{vid}.mp4", "video_id": vid, "status": "ok", "n_frames": n_frames, "fps": fps,
                  "duration_s": n_frames / fps, "n_events": len(evs), "reference_frames": n_frames // 4,
                  "outputs": {"scores": f"scores/{vid}.csv"}}
        run.write_record(vid, RunRecord("synthetic", result, evs))
        videos.append(result)
        events += evs
    run.write_events(events)
    run.write_summary({"finished": True, "n_videos": n_videos, "n_ok": sum(v["status"] == "ok" for v in videos),
                       "n_failed": sum(v["status"] == "error" for v in videos), "n_events": len(events),
                       "wall_s": 1.0, "video_s": n_videos * n_frames / fps, "realtime_factor": 1.0,
                       "executor": "local", "failed": [v for v in videos if v["status"] == "error"], "videos": videos})
    return run


def browser_times(run: RunDir) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS, chromium_path

    out: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        t0 = time.perf_counter()
        page.goto(run.report_path.resolve().as_uri(), wait_until="load")
        out["index_load_s"] = time.perf_counter() - t0
        page.wait_for_selector("body[data-ready='1']")
        out["index_rows"] = page.locator("#videos-table tbody tr").count()
        page.wait_for_selector("body[data-charts='ready']", timeout=30000)
        page.wait_for_selector("#max-hist .main-svg")
        out["index_charts_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        page.fill("#videos-filter", "cam03_")
        page.wait_for_function("document.getElementById('videos-count').dataset.shown < 1000")
        out["filter_s"] = time.perf_counter() - t1
        first = page.locator("#videos-table tbody tr a").first
        t2 = time.perf_counter()
        first.click()
        page.wait_for_selector("[data-chart] .main-svg")
        out["video_page_s"] = time.perf_counter() - t2
        browser.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=3000, help="frames per video (100 s at 30 fps)")
    ap.add_argument("--baseline-videos", type=int, default=40, help="videos the PNG baseline plots (per-video time)")
    ap.add_argument("--out", type=Path, help="keep the run here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_report_"))
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    run = make_run(root, args.videos, args.frames)
    made_s = time.perf_counter() - t

    t = time.perf_counter()
    res = write_report(root, ReportOptions(thumbnails=True))
    report_s = time.perf_counter() - t
    k = min(args.baseline_videos, args.videos)
    ok = [v for v in run.ok_videos()][:k]
    t = time.perf_counter()
    for v in ok:
        plot_scores(root / "baseline_plots" / f"{v['video_id']}.png", run.read_scores(v["video_id"]), v["fps"],
                    title=v["video_id"], threshold=1.5)
    png_per_video = (time.perf_counter() - t) / max(1, len(ok))
    fig = {"machine": cpu_info(), "videos": args.videos, "frames": args.frames,
           "events": res.n_events, "pages": res.n_pages, "synthetic_run_s": round(made_s, 2),
           "report_s": round(report_s, 3), "report_per_video_ms": round(1000 * report_s / args.videos, 2),
           "png_plot_per_video_ms": round(1000 * png_per_video, 2),
           "report_vs_png_speedup": round(png_per_video * args.videos / report_s, 1),
           "index_bytes": run.report_path.stat().st_size}
    print(f"{args.videos} videos x {args.frames} frames, {res.n_events} events: report in {report_s:.2f} s "
          f"({fig['report_per_video_ms']} ms/video); PNG plots (baseline) {fig['png_plot_per_video_ms']} ms/video "
          f"-> report {fig['report_vs_png_speedup']}x faster than the per-video PNGs")
    if not args.no_browser:
        b = browser_times(run)
        fig.update({k2: round(v, 3) for k2, v in b.items()})
        print(f"browser (fresh chromium): index load {b['index_load_s']:.2f} s ({int(b['index_rows'])} rows shown), "
              f"charts drawn {b['index_charts_s']:.2f} s, filter {b['filter_s'] * 1000:.0f} ms, "
              f"video page {b['video_page_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
