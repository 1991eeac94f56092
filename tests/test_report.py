"""`vad report`: the HTML report of a run.

Fast tests build runs through :class:`RunDir` and check the written pages (self-contained small
reports, per-video pages of large ones, incomplete runs, escaping, the evaluation). The browser
tests (slow) open the report of a real `vad score` run (two videos, one corrupt file, offline
explanations) in Debian's chromium and check what a person sees; screenshots are kept in
``build/test-artifacts``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from tests.browser import artifact_dir, open_browser
from tests.rtsp import write_h264
from tests.test_monitor import walkway
from vad.report import ReportOptions, collect_run, write_report
from vad.report.collect import envelope
from vad.rundir import RunDir, RunRecord

SCENE = "head.scene={short_side: 64, grid: [8, 6], max_bank: 400, min_reference_frames: 20}"


def synthetic_run(root: Path, n: int = 4, frames: int = 200, fps: float = 10.0, *, finished: bool = True,
                  failed: int = 1, explanation: str = "Fast motion in the centre region.") -> RunDir:
    """``n`` videos (the last ``failed`` of them errors), one event in each scored one."""
    run = RunDir(root)
    run.create()
    run.write_config({"head": {"type": "scene"}, "events": {"threshold": 1.5}, "output": {"plots": True}})
    videos, events = [], []
    for i in range(n):
        vid = f"v{i}"
        if i >= n - failed:
            videos.append({"video": f"/x/{vid}.mp4", "video_id": vid, "status": "error",
                           "error": "cannot open video: moov atom not found", "outputs": {}})
            continue
        s = np.full(frames, 0.5)
        s[50:80] = 3.0 + i
        ev = {"video_id": vid, "event_id": f"{vid}:50", "start_frame": 50, "end_frame": 79, "start_s": 5.0,
              "end_s": 8.0, "peak_frame": 60, "peak_score": 3.0 + i, "mean_score": 3.0 + i,
              "explanation": explanation, "evidence": {"rules_broken": ["speed centre <= 2.0"]}}
        run.write_scores(vid, s, fps)
        result = {"video": f"/x/{vid}.mp4", "video_id": vid, "status": "ok", "n_frames": frames, "fps": fps,
                  "duration_s": frames / fps, "n_events": 1, "reference_frames": 40,
                  "outputs": {"scores": f"scores/{vid}.csv", "plot": f"plots/{vid}.png"}}
        run.write_record(vid, RunRecord("k", result, [ev]))
        videos.append(result)
        events.append(ev)
    run.write_events(events)
    run.write_summary({"finished": finished, "n_videos": n, "videos": videos, "wall_s": 1.0, "video_s": 60.0,
                       "realtime_factor": 60.0, "executor": "local"})
    return run


def embedded_data(page: Path) -> dict:
    text = page.read_text()
    m = re.search(r'<script type="application/json" id="vad-data">(.*?)</script>', text, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1))


def test_envelope_keeps_every_peak_and_dip():
    rng = np.random.default_rng(0)
    s = rng.normal(size=100_000)
    s[12_345], s[67_890] = 50.0, -50.0
    idx, y = envelope(s, 2000)
    assert len(idx) <= 2000 and np.all(np.diff(idx) > 0)
    assert 12_345 in idx and 67_890 in idx
    assert y.max() == 50.0 and y.min() == -50.0
    small = np.arange(10.0)
    assert envelope(small, 2000)[0].tolist() == list(range(10))


def test_small_run_is_one_self_contained_file(tmp_path):
    run = synthetic_run(tmp_path / "run")
    r = write_report(run.root)
    assert r.self_contained and r.n_pages == 0 and r.index == run.report_path
    html = run.report_path.read_text()
    # nothing fetched: no external script, stylesheet or image; Plotly.js is inside the page
    assert not re.search(r'<script[^>]+src=', html) and not re.search(r'<link[^>]+href=', html)
    assert "Plotly" in html and len(html) > 3_000_000
    data = embedded_data(run.report_path)
    assert [v["id"] for v in data["videos"]] == ["v0", "v1", "v2", "v3"]
    assert [v["status"] for v in data["videos"]] == ["ok", "ok", "ok", "error"]
    assert len(data["events"]) == 3 and data["summary"]["failed"] == 1
    chart = data["inline"][0]
    assert chart["reference"] == [0.0, 4.0] and chart["threshold"] == 1.5
    assert chart["events"] == [[5.0, 8.0, "v0:50"]] and max(chart["y"]) == 3.0
    assert "cannot open video: moov atom not found" in html


def test_large_run_gets_an_index_and_a_page_per_video(tmp_path):
    run = synthetic_run(tmp_path / "run", n=6, failed=2)
    r = write_report(run.root, ReportOptions(inline_videos=3))
    assert not r.self_contained and r.n_pages == 6
    assert (run.report_dir / "plotly.min.js").stat().st_size > 3_000_000
    index = run.report_path.read_text()
    assert len(index) < 200_000  # the index does not carry Plotly.js nor the curves
    data = embedded_data(run.report_path)
    assert data["plotly_src"] == "report/plotly.min.js" and data["inline"] is None
    assert data["videos"][0]["href"] == "report/videos/v0.html"
    page = run.report_video_path("v1")
    assert page.is_file() and '<script src="../plotly.min.js">' in page.read_text()
    vdata = embedded_data(page)
    assert vdata["page"] == "video" and len(vdata["inline"]) == 1 and vdata["events"][0]["id"] == "v1:50"


def test_interrupted_run_renders_and_says_what_is_missing(tmp_path):
    run = synthetic_run(tmp_path / "run", n=4, failed=0, finished=False)
    run.record_path("v3").unlink()  # the job was killed before v3 was complete
    (run.root / "plots").mkdir(exist_ok=True)  # no PNG was written
    with open(run.events_path, "a") as fh:
        fh.write('{"video_id": "v0", "start_fr')  # a torn last line
    view = collect_run(run.root)
    status = {v.video_id: v.status for v in view.videos}
    assert status == {"v0": "ok", "v1": "ok", "v2": "ok", "v3": "unfinished"}
    joined = " | ".join(view.notes)
    assert "did not finish" in joined and "unreadable line" in joined and "no PNG plot" in joined
    write_report(run.root)
    html = run.report_path.read_text()
    assert "Missing or incomplete" in html and "did not finish" in html

    # no summary at all (killed before the first one): listed from records and score files
    run.summary_path.unlink()
    view = collect_run(run.root)
    assert {v.video_id for v in view.videos} == {"v0", "v1", "v2", "v3"}
    assert any("no summary.json" in n for n in view.notes)
    assert write_report(run.root).n_videos == 4


def test_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "not a run directory" in capsys.readouterr().err


def test_text_from_the_run_cannot_break_out_of_the_page(tmp_path):
    evil = "</script><script>window.pwned=1</script><img src=x onerror=alert(1)>"
    run = synthetic_run(tmp_path / "run", n=2, failed=1, explanation=evil)
    write_report(run.root)
    html = run.report_path.read_text()
    assert evil not in html  # neither in the embedded JSON nor as markup
    assert embedded_data(run.report_path)["events"][0]["explanation"] == evil


def test_evaluation_of_the_run_is_in_the_report(tmp_path):
    run = synthetic_run(tmp_path / "run", n=3, failed=0)
    gt = tmp_path / "gt"
    gt.mkdir()
    for i in range(3):
        labels = np.zeros(200, np.uint8)
        labels[55:85] = 1
        np.save(gt / f"v{i}.npy", labels)
    # no --out: a run's evaluation goes to <run>/evaluation, where the report finds it
    assert main(["evaluate", "--scores", str(run.root), "--gt", str(gt), "--n-boot", "0"]) == 0
    assert (run.evaluation_dir / "metrics.json").is_file() and (run.evaluation_dir / "curves.json").is_file()
    write_report(run.root)
    data = embedded_data(run.report_path)
    ev = data["evaluation"]
    metrics = json.loads((run.evaluation_dir / "metrics.json").read_text())
    assert ev["metrics"]["auc"] == metrics["auc"] and 0.9 < ev["metrics"]["auc"] <= 1.0
    assert ev["curves"]["roc"]["fpr"][0] == 0.0 and ev["curves"]["roc"]["tpr"][-1] == 1.0
    assert {v["id"]: v["auc"] for v in data["videos"]}["v0"] is not None
    assert data["inline"][0]["gt"] == [[5.5, 8.5]]  # shaded from the evaluation's ground truth


def test_bench_report_smoke(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_report.py"
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(script), "--videos", "60", "--frames", "300", "--baseline-videos", "3",
                           "--no-browser", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(out.read_text())
    assert fig["videos"] == 60 and fig["pages"] == 60 and fig["report_vs_png_speedup"] > 0
    assert "faster than the per-video PNGs" in proc.stdout


# -- a real `vad score` run in a real browser --------------------------------------------------
@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> Path:
    """Two walkway videos (one with a block that appears at 6 s), one corrupt file; scene head,
    offline explanations; the report is written by `vad score` itself."""
    d = tmp_path_factory.mktemp("report_run")
    inputs = d / "in"
    inputs.mkdir()
    write_h264(inputs / "door.mp4", np.concatenate([walkway(60, seed=2), walkway(120, seed=3, block_from=60)[60:]]), 10)
    write_h264(inputs / "hall.mp4", walkway(120, seed=4), 10)
    (inputs / "broken.mp4").write_bytes(b"\x00" * 1000)
    out = d / "run"
    code = main(["score", str(inputs), "--out", str(out), "--explain", "--no-progress", "--set", SCENE])
    assert code == 2  # one video failed
    assert RunDir(out).report_path.is_file()
    return out


def open_report(browser, run: RunDir):
    """The run's report.html from disk, once its script ran; and the page's JavaScript errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(run.report_path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


@pytest.mark.slow
def test_report_of_a_real_run_in_a_browser(scored_run):
    run = RunDir(scored_run)
    events = [json.loads(line) for line in run.events_path.read_text().splitlines()]
    assert len(events) >= 1 and all(e["video_id"] == "door" for e in events)
    with open_browser() as browser:
        page, errors = open_report(browser, run)
        assert page.inner_text("#n-videos") == "3"
        assert page.inner_text("#n-failed") == "1"
        assert page.inner_text("#n-events") == str(len(events))
        assert page.locator("#failures tbody tr").count() == 1
        assert "broken" in page.inner_text("#failures")
        assert page.locator("#videos-table tbody tr").count() == 3
        assert page.locator("#events-table tbody tr").count() == len(events)
        # the chart rendered: Plotly's SVG with a drawn score line, the event shaded
        page.wait_for_selector("[data-chart] .main-svg")
        line = page.locator("[data-chart] .scatterlayer path.js-line").first
        assert len(line.get_attribute("d") or "") > 100
        assert page.locator("[data-chart] .shapelayer path").count() >= 2  # reference part + event
        # explanation and thumbnail of the event are visible
        expl = page.locator("#events-table .explanation").first
        assert expl.is_visible() and "motion" in expl.inner_text().lower()
        thumb = page.locator("#events-table img.thumb").first
        assert thumb.evaluate("img => img.complete && img.naturalWidth") > 0
        # filtering the videos table
        page.fill("#videos-filter", "hall")
        assert page.inner_text("#videos-count").startswith("1 of 3")
        page.fill("#videos-filter", "")
        page.screenshot(path=str(artifact_dir() / "report.png"), full_page=True)
        assert not errors, errors


@pytest.mark.slow
def test_large_and_incomplete_reports_in_a_browser(scored_run, tmp_path):
    import shutil

    run = RunDir(tmp_path / "copy")
    shutil.copytree(scored_run, run.root)
    shutil.rmtree(run.root / "plots")
    run.record_path("hall").unlink()
    summary = json.loads(run.summary_path.read_text())
    summary["finished"] = False
    run.summary_path.write_text(json.dumps(summary))
    assert main(["report", str(run.root), "--inline-videos", "0", "--no-progress"]) == 0
    with open_browser() as browser:
        page, errors = open_report(browser, run)
        assert "did not finish" in page.inner_text("#notes")
        assert page.inner_text("#n-unfinished") == "1"
        page.wait_for_selector("body[data-charts='ready']")
        page.wait_for_selector("#max-hist .main-svg")
        page.click("#videos-table a:text-is('door')")
        page.wait_for_selector("[data-chart] .main-svg")
        assert page.url.endswith("report/videos/door.html")
        assert page.locator(".event-card .explanation").first.is_visible()
        page.screenshot(path=str(artifact_dir() / "report_video_page.png"), full_page=True)
        assert not errors, errors


def test_a_monitor_output_is_reported_by_camera_with_one_row_per_event(tmp_path):
    run = RunDir(tmp_path / "mon")
    run.create()
    run.write_config({"events": {"threshold": 1.5}})
    base = {"video_id": "door", "event_id": "door:20", "start_frame": 20, "start_s": 2.0, "peak_frame": 25,
            "mean_score": 3.0}
    records = [{**base, "update": "new", "end_frame": 30, "end_s": 3.1, "peak_score": 3.0},
               {**base, "update": "update", "end_frame": 40, "end_s": 4.1, "peak_score": 5.0},
               {**base, "update": "end", "end_frame": 50, "end_s": 5.1, "peak_score": 5.0, "clip": "clips/door_20.mp4"}]
    run.events_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    run.health_path.write_text(json.dumps({"cameras": {"door": {"state": "stopped", "frames_scored": 101}}}))
    view = collect_run(run.root)
    assert not view.notes  # a monitor has no summary.json, and that is not a defect
    (cam,) = view.videos
    assert cam.status == "camera" and len(cam.events) == 1
    assert cam.events[0]["update"] == "end" and cam.events[0]["end_frame"] == 50  # the last record wins
    write_report(run.root)
    data = embedded_data(run.report_path)
    assert data["cameras"]["door"]["frames_scored"] == 101
    assert data["events"][0]["clip"] == {"href": "clips/door_20.mp4", "label": "clip"}
