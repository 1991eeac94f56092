"""The HTML run report: ``<run>/report.html`` and, for large runs, one page per video.

* A run of at most ``inline_videos`` videos gives **one self-contained file**: Plotly.js, the
  styles, every video's chart and the events' thumbnails (as data URIs) are inside it, so the
  file opens from disk with no network, and can be mailed as it is.
* A larger run gives an index (summary, sortable and filterable tables of videos and events,
  the evaluation) and a page per video under ``<run>/report/videos/``; all of them share one
  copy of Plotly.js in ``<run>/report/``. Pages open from disk with no network too.

Charts are drawn in the browser by Plotly.js from JSON embedded in the page (scores thinned to
``max_points`` by a min/max envelope that keeps every peak). Text from the run (video names,
explanations, errors) is escaped; JSON is embedded so that no value can close its script tag.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from vad.fsutil import write_bytes_atomic, write_text_atomic
from vad.report.assets import plotly_js, plotly_js_path, plotly_version, static_text
from vad.report.collect import RunView, VideoView, collect_run, envelope

logger = logging.getLogger(__name__)

__all__ = ["ReportOptions", "ReportResult", "write_report"]

PLOTLY_FILE = "plotly.min.js"


@dataclass
class ReportOptions:
    inline_videos: int = 30  # up to this many videos: one self-contained report.html
    max_points: int = 6000  # points per score chart (min/max envelope beyond)
    thumbnails: bool = True  # events' thumbnails from their snapshots or the source videos
    thumb_width: int = 240
    evaluation: str | Path | None = None  # a `vad evaluate` folder (default <run>/evaluation)


@dataclass
class ReportResult:
    index: Path
    n_videos: int
    n_events: int
    n_pages: int
    n_thumbnails: int
    seconds: float
    self_contained: bool
    notes: list[str] = field(default_factory=list)


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``</`` and ``<!--`` cannot end it."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=_json_default) \
        .replace("</", "<\\/").replace("<!--", "<\\!--")


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x) if np.isfinite(x) else None
    return str(x)


def _num(x: Any, digits: int = 4) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if np.isfinite(f) else None


# -- thumbnails --------------------------------------------------------------------------------
def _encode_thumb(image_rgb: np.ndarray, width: int, region: Iterable[float] | None) -> bytes:
    import cv2

    h, w = image_rgb.shape[:2]
    scale = width / float(w)
    small = cv2.resize(image_rgb, (width, max(1, int(round(h * scale)))), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    if region is not None:
        x0, y0, x1, y1 = (float(v) for v in region)
        sh, sw = bgr.shape[:2]
        cv2.rectangle(bgr, (int(x0 * sw), int(y0 * sh)), (int(x1 * sw) - 1, int(y1 * sh) - 1), (0, 0, 255), 2)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _thumbnails(view: RunView, opts: ReportOptions) -> tuple[set[str], dict[str, str]]:
    """The event ids that have a thumbnail JPEG under ``report/thumbs`` (made now, or kept from a
    previous report when newer than the event log), and why the others have none. A monitor
    event's snapshot already shows its region; an archive event's peak frame is decoded from the
    source video, one open per video."""
    import cv2

    run, have, why = view.run, set(), {}
    log_mtime = run.events_path.stat().st_mtime if run.events_path.is_file() else 0.0

    def keep(eid: str, jpg: bytes) -> None:
        path = run.report_thumb_path(eid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpg)
        have.add(eid)

    for v in view.videos:
        todo = []
        for e in v.events:
            eid = e["event_id"]
            path = run.report_thumb_path(eid)
            if path.is_file() and path.stat().st_mtime >= log_mtime:
                have.add(eid)
                continue
            snap = run.root / e["snapshot"] if e.get("snapshot") else None
            img = cv2.imread(str(snap), cv2.IMREAD_COLOR) if snap is not None and snap.is_file() else None
            if img is not None:
                keep(eid, _encode_thumb(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), opts.thumb_width, None))
            else:
                todo.append(e)
        if not todo:
            continue
        if not v.video or not Path(v.video).exists():
            for e in todo:
                why[e["event_id"]] = "no snapshot, and the source video is not at hand"
            continue
        from vad.io import VideoError, open_video

        try:
            with open_video(v.video) as reader:
                n = reader.info.n_frames
                for e in todo:
                    peak = min(max(0, int(e.get("peak_frame", 0))), max(0, n - 1))
                    keep(e["event_id"], _encode_thumb(reader.read(peak, peak + 1)[0], opts.thumb_width, e.get("region")))
        except (VideoError, ValueError, OSError) as err:
            for e in todo:
                if e["event_id"] not in have:
                    why[e["event_id"]] = f"peak frame not decodable: {err}"
    return have, why


# -- page data -----------------------------------------------------------------------------------
def _threshold(view: RunView) -> float | None:
    return _num((view.config.get("events") or {}).get("threshold"))


def _chart_data(v: VideoView, threshold: float | None, max_points: int) -> dict[str, Any] | None:
    if v.scores is None or not len(v.scores):
        return None
    fps = float(v.fps) if v.fps else None
    idx, s = envelope(np.asarray(v.scores, np.float64), max_points)
    to_x = (lambda f: round(f / fps, 4)) if fps else (lambda f: float(f))
    y = np.round(s, 5).tolist()
    if not np.isfinite(s).all():
        y = [b if np.isfinite(b) else None for b in y]
    return {
        "id": v.video_id,
        "unit": "s" if fps else "frame",
        "fps": fps,  # x = frame / fps, in the browser
        "frame": idx.tolist(),
        "y": y,
        "threshold": threshold,
        "events": [[_num(e.get("start_s")) if fps else e.get("start_frame"),
                    _num(e.get("end_s")) if fps else e.get("end_frame"), e["event_id"]] for e in v.events],
        "reference": [0.0, to_x(v.reference_frames)] if v.reference_frames else None,
        "gt": [[to_x(a), to_x(b)] for a, b in (v.ground_truth or [])],
        "thinned": len(idx) < len(v.scores),
        "n": int(len(v.scores)),
    }


def _event_row(e: dict[str, Any], v: VideoView, thumb_src: str | None, thumb_why: str | None,
               to_run: str, video_href: str | None) -> dict[str, Any]:
    clip = None
    if e.get("clip"):
        clip = {"href": to_run + e["clip"], "label": "clip"}
    elif v.video:
        # an archive event has no clip of its own: its place in the source video
        clip = {"href": Path(v.video).resolve().as_uri() + f"#t={_num(e.get('start_s'), 2)},{_num(e.get('end_s'), 2)}",
                "label": "source"}
    return {
        "id": e["event_id"], "video_id": v.video_id, "video_href": video_href,
        "start_s": _num(e.get("start_s"), 2), "end_s": _num(e.get("end_s"), 2),
        "duration_s": _num((e.get("end_s") or 0) - (e.get("start_s") or 0), 2),
        "peak_score": _num(e.get("peak_score")), "mean_score": _num(e.get("mean_score")),
        "peak_frame": e.get("peak_frame"), "update": e.get("update"),
        "start_wall": e.get("start_wall"),
        "explanation": e.get("explanation"), "explanation_error": e.get("explanation_error"),
        "evidence": e.get("evidence"), "thumb": thumb_src, "thumb_why": thumb_why, "clip": clip,
        "snapshot": (to_run + e["snapshot"]) if e.get("snapshot") else None,
    }


def _video_row(v: VideoView, href: str | None) -> dict[str, Any]:
    m = v.metrics or {}
    return {"id": v.video_id, "href": href, "status": v.status, "error": v.error, "video": v.video,
            "n_frames": v.n_frames, "fps": _num(v.fps, 3), "duration_s": _num(v.duration_s, 2),
            "n_events": len(v.events), "max_score": _num(v.max_score), "mean_score": _num(v.mean_score),
            "auc": _num(m.get("auc")), "cls": m.get("cls"), "missing": v.missing}


def _summary_cards(view: RunView) -> dict[str, Any]:
    s = view.summary
    n_unfinished = sum(1 for v in view.videos if v.status == "unfinished")
    explained = sum(1 for e in view.events if e.get("explanation"))
    return {
        "videos": len(view.videos), "ok": sum(1 for v in view.videos if v.status == "ok"),
        "failed": len(view.failed), "unfinished": n_unfinished, "events": len(view.events),
        "explained": explained, "explain_errors": sum(1 for e in view.events if e.get("explanation_error")),
        "wall_s": s.get("wall_s"), "video_s": s.get("video_s"), "realtime_factor": s.get("realtime_factor"),
        "executor": s.get("executor"), "finished": s.get("finished"), "resumed": s.get("n_resumed"),
        "extractor": s.get("extractor"), "stages_s": s.get("stages_s"),
    }


def _settings(view: RunView) -> dict[str, Any]:
    c = view.config
    head = c.get("head") or {}
    feats = c.get("features") or {}
    ev = c.get("events") or {}
    return {"head": head.get("load") or head.get("type"), "reference": head.get("reference"),
            "extractor": feats.get("name") if head.get("type") not in ("scene", "anomalyruler", "eventvad") else None,
            "threshold": ev.get("threshold"), "min_duration_s": ev.get("min_duration_s"),
            "merge_gap_s": ev.get("merge_gap_s"), "explain": (c.get("explain") or {}).get("enabled")}


def _evaluation(view: RunView) -> dict[str, Any] | None:
    m = view.evaluation
    if not m:
        return None
    keys = ("auc", "ap_step", "ap_trapezoid", "auc_anomalous", "ap_anomalous", "far", "threshold", "n_videos",
            "n_frames", "n_anomalous_videos", "n_normal_videos", "dataset")
    ci = m.get("ci") or {}
    return {"metrics": {k: m.get(k) for k in keys}, "definitions": m.get("definitions", {}),
            "ci": {k: v for k, v in ci.items() if isinstance(v, dict)},
            "per_class": m.get("per_class") or {}, "event_map": m.get("event_map"),
            "excluded": m.get("excluded") or [], "missing_scores": m.get("missing_scores") or [],
            "missing_gt": m.get("missing_gt") or [], "curves": view.curves,
            "dir": str(view.evaluation_dir) if view.evaluation_dir else None}


# -- pages ---------------------------------------------------------------------------------------
def _page(title: str, body: str, data: dict[str, Any], plotly: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{static_text('report.css')}</style>{plotly}</head>"
        f"<body>{body}<script type=\"application/json\" id=\"vad-data\">{_json_for_script(data)}</script>"
        f"<script>{static_text('report.js')}</script></body></html>\n"
    )


def _plotly_tag(inline: bool, src: str) -> str:
    """Plotly.js in the page itself (a self-contained report) or from the copy beside it."""
    if inline:
        return f"<script>{plotly_js()}</script>"
    return f"<script src=\"{_esc(src)}\"></script>"


def _index_body(view: RunView, data: dict[str, Any]) -> str:
    cards = data["summary"]
    run_name = view.run.root.resolve().name
    notes = "".join(f"<li>{_esc(n)}</li>" for n in view.notes)
    failures = "".join(f"<tr><td>{_esc(v.video_id)}</td><td class=\"path\">{_esc(v.video)}</td>"
                       f"<td>{_esc(v.error)}</td></tr>" for v in view.failed)
    config_text = yaml.safe_dump(view.config, sort_keys=False) if view.config else "(no config.yaml)"

    def card(key: str, label: str, value: Any, cls: str = "") -> str:
        return (f"<div class=\"card {cls}\"><div class=\"value\" id=\"n-{key}\">{_esc(value)}</div>"
                f"<div class=\"label\">{_esc(label)}</div></div>")

    rtf = cards.get("realtime_factor")
    parts = [
        f"<header><h1>vad run report: {_esc(run_name)}</h1>"
        f"<div class=\"sub\">{_esc(view.run.root.resolve())} · generated {_esc(data['run']['generated'])}"
        f" · vad {_esc(data['run']['vad_version'])}</div></header>",
        f"<section id=\"notes\" class=\"notes\"><h2>Missing or incomplete</h2><ul>{notes}</ul></section>" if notes else "",
        "<section class=\"cards\">",
        card("videos", "videos", cards["videos"]),
        card("ok", "scored", cards["ok"], "good"),
        card("failed", "failed", cards["failed"], "bad" if cards["failed"] else ""),
        card("unfinished", "unfinished", cards["unfinished"], "warn" if cards["unfinished"] else ""),
        card("events", "events", cards["events"]),
        card("explained", "explained", cards["explained"]),
        card("rtf", "× real time", rtf if rtf is not None else "n/a"),
        card("wall", "wall time (s)", cards["wall_s"] if cards["wall_s"] is not None else "n/a"),
        "</section>",
        "<section><h2>Settings</h2><table class=\"kv\" id=\"settings\"></table>"
        f"<details><summary>Full configuration (config.yaml)</summary><pre>{_esc(config_text)}</pre></details></section>",
    ]
    if view.failed:
        parts.append("<section id=\"failures\"><h2>Failures</h2><table class=\"grid\"><thead><tr><th>video</th>"
                     f"<th>path</th><th>reason</th></tr></thead><tbody>{failures}</tbody></table></section>")
    if data.get("evaluation"):
        parts.append("<section id=\"evaluation\"><h2>Evaluation</h2><table class=\"kv\" id=\"eval-metrics\"></table>"
                     "<div class=\"charts2\"><div id=\"roc\" class=\"chart small\"></div>"
                     "<div id=\"pr\" class=\"chart small\"></div></div>"
                     "<div id=\"per-class\"></div></section>")
    parts += [
        "<section id=\"videos\"><h2>Videos</h2><div class=\"toolbar\"><input type=\"search\" id=\"videos-filter\" "
        "placeholder=\"filter videos (name, status, error)\"><select id=\"videos-status\"><option value=\"\">any status"
        "</option><option>ok</option><option>error</option><option>unfinished</option><option>camera</option></select>"
        "<span class=\"count\" id=\"videos-count\"></span></div>"
        "<table class=\"grid sortable\" id=\"videos-table\"><thead></thead><tbody></tbody></table>"
        "<div class=\"pager\" id=\"videos-pager\"></div></section>",
        "<section id=\"events\"><h2>Events</h2><div class=\"toolbar\"><input type=\"search\" id=\"events-filter\" "
        "placeholder=\"filter events (video, explanation)\"><span class=\"count\" id=\"events-count\"></span></div>"
        "<table class=\"grid sortable\" id=\"events-table\"><thead></thead><tbody></tbody></table>"
        "<div class=\"pager\" id=\"events-pager\"></div></section>",
        "<section id=\"distribution\"><h2>Peak score per video</h2><div id=\"max-hist\" class=\"chart small\"></div></section>",
    ]
    if data.get("inline"):
        parts.append("<section id=\"video-charts\"><h2>Score curves</h2>" + "".join(
            f"<div class=\"video-block\" id=\"video-{_esc(c['id'])}\"><h3>{_esc(c['id'])}</h3>"
            f"<div class=\"chart\" data-chart=\"{i}\"></div><div class=\"video-events\" data-video=\"{_esc(c['id'])}\">"
            "</div></div>" for i, c in enumerate(data["inline"])) + "</section>")
    return "".join(parts)


def _video_body(v: VideoView, index_href: str) -> str:
    info = [("video", v.video), ("status", v.status), ("error", v.error), ("frames", v.n_frames),
            ("fps", v.fps), ("duration (s)", v.duration_s), ("events", len(v.events)),
            ("reference part", f"first {v.reference_frames} frames (the video's own start)" if v.reference_frames else None),
            ("ground truth", f"{len(v.ground_truth)} anomalous interval(s)" if v.ground_truth is not None else None),
            ("frame AUC", (v.metrics or {}).get("auc"))]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(val)}</td></tr>" for k, val in info if val is not None)
    missing = "".join(f"<li>{_esc(m)}</li>" for m in v.missing)
    return (f"<header><a href=\"{_esc(index_href)}\">← run report</a><h1>{_esc(v.video_id)}</h1></header>"
            + (f"<section class=\"notes\"><h2>Missing</h2><ul>{missing}</ul></section>" if missing else "")
            + f"<section><table class=\"kv\">{rows}</table></section>"
            "<section><h2>Score</h2><div class=\"chart\" data-chart=\"0\"></div></section>"
            f"<section><h2>Events</h2><div class=\"video-events\" data-video=\"{_esc(v.video_id)}\"></div></section>")


def write_report(root: str | Path, options: ReportOptions | None = None, *, progress: bool = False) -> ReportResult:
    """Write ``<run>/report.html`` (and the per-video pages of a large run); see the module doc."""
    opts = options or ReportOptions()
    t0 = time.perf_counter()
    view = collect_run(root, opts.evaluation)
    run = view.run
    inline = len(view.videos) <= opts.inline_videos
    thumbs, why = _thumbnails(view, opts) if opts.thumbnails else (set(), {})
    threshold = _threshold(view)
    from vad import __version__

    meta = {"generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "vad_version": __version__,
            "plotly": plotly_version(), "name": run.root.resolve().name}

    def thumb_src(eid: str, from_dir: str) -> str | None:
        if eid not in thumbs:
            return None
        if inline:
            return "data:image/jpeg;base64," + base64.b64encode(run.report_thumb_path(eid).read_bytes()).decode()
        return from_dir + run.relative(run.report_thumb_path(eid))

    def video_href(v: VideoView) -> str | None:
        if inline:
            return f"#video-{v.video_id}" if v.scores is not None else None
        return run.relative(run.report_video_path(v.video_id))

    index_data: dict[str, Any] = {
        "page": "index", "run": meta, "summary": _summary_cards(view), "settings": _settings(view),
        "videos": [_video_row(v, video_href(v)) for v in view.videos],
        "events": [_event_row(e, v, thumb_src(e["event_id"], ""), why.get(e["event_id"]), "", video_href(v))
                   for v in view.videos for e in v.events],
        "evaluation": _evaluation(view), "cameras": view.cameras, "inline": None,
    }
    if inline:
        index_data["inline"] = [c for v in view.videos if (c := _chart_data(v, threshold, opts.max_points))]
    body = _index_body(view, index_data)
    n_pages = 0
    if not inline:
        run.report_dir.mkdir(parents=True, exist_ok=True)
        plotly_path, source = run.report_dir / PLOTLY_FILE, plotly_js_path()
        if not plotly_path.is_file() or plotly_path.stat().st_size != source.stat().st_size:
            write_bytes_atomic(plotly_path, source.read_bytes())
        from tqdm import tqdm

        for v in tqdm(view.videos, desc="report", unit="video", disable=not progress):
            page = run.report_video_path(v.video_id)
            to_run = "../../"
            chart = _chart_data(v, threshold, opts.max_points)
            data = {"page": "video", "run": meta, "video": _video_row(v, None),
                    "events": [_event_row(e, v, thumb_src(e["event_id"], to_run), why.get(e["event_id"]), to_run, None)
                               for e in v.events],
                    "inline": [chart] if chart else []}
            write_text_atomic(page, _page(f"{v.video_id} · vad report", _video_body(v, to_run + "report.html"), data,
                                          _plotly_tag(False, "../" + PLOTLY_FILE)))
            n_pages += 1
    if not inline:
        index_data["plotly_src"] = run.relative(run.report_dir / PLOTLY_FILE)  # fetched after the page loaded
    write_text_atomic(run.report_path, _page(f"vad report · {meta['name']}", body, index_data,
                                             _plotly_tag(True, "") if inline else ""))
    seconds = time.perf_counter() - t0
    logger.info("report: %s (%d videos, %d events, %d pages, %.1f s)", run.report_path, len(view.videos),
                len(view.events), n_pages, seconds)
    return ReportResult(index=run.report_path, n_videos=len(view.videos), n_events=len(view.events), n_pages=n_pages,
                        n_thumbnails=len(thumbs), seconds=seconds, self_contained=inline, notes=view.notes)
