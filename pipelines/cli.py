"""The ``vad`` command line.

Exit status: 0 success; 1 the job could not run (bad configuration, missing weights or
assets); 2 the job ran but some videos failed (see summary.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from vad.config import ConfigError, ScoreConfig, load_config, to_dict
from vad.console import setup_logging

logger = logging.getLogger("vad")

EXIT_OK, EXIT_JOB_ERROR, EXIT_SOME_FAILED = 0, 1, 2


def configs_dir() -> Path | None:
    """The shipped ``configs/`` folder (present in a source checkout / editable install)."""
    from vad.assets import repo_root

    root = repo_root()
    return root / "configs" if root and (root / "configs").is_dir() else None


def default_score_configs() -> list[Path]:
    d = configs_dir()
    default = d / "pipelines" / "score.yaml" if d else None
    return [default] if default and default.is_file() else []


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="YAML",
                   help="config file merged over the defaults (repeatable; later files win)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one setting, e.g. --set features.crop=10crop (repeatable)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad", description="Video anomaly detection pipeline")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score videos: per-frame scores, events and plots",
                           description="Score videos end to end. With no input, scores the sample video.")
    score.add_argument("inputs", nargs="*", help="video files, folders (recursive) or list files (.txt/.list)")
    score.add_argument("--out", type=Path, help="run directory (default: a new timestamped folder under runs/)")
    score.add_argument("--reference", help="normal footage of the same camera(s) to model normality "
                       "(video, folder or list); default: the first part of each video")
    score.add_argument("--head", help="a saved head directory: a trained MIL/GS-MoE/CT-D2GAN head (`vad train "
                       "--out`) or a fitted head (<run>/head); or anomalyruler / eventvad, the training-free heads")
    score.add_argument("--features", metavar="LIST", help="score precomputed features from a list file "
                       "(RTFM/UR-DMU/VadCLIP layout, or `vad cache export-list`) instead of videos")
    score.add_argument("--fps", type=float, default=30.0, help="frame rate for time stamps with --features (default 30)")
    score.add_argument("--dataset", help="dataset naming conventions of a --features list (ucf_crime, xd_violence, ...)")
    score.add_argument("--backend", choices=["auto", "decord", "pyav", "opencv"], help="decoder")
    score.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    score.add_argument("--crop", choices=["center", "5crop", "10crop"], help="crops per snippet")
    score.add_argument("--threshold", type=float, help="event threshold on the score")
    score.add_argument("--ground-truth", help="folder of <video_id>.npy frame labels to shade on plots")
    score.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    score.add_argument("--explain", action="store_true", help="add an explanation and its evidence to every event "
                       "(explain.backend; offline by default: motion figures against the camera's rules)")
    score.add_argument("--no-report", action="store_true", help="do not write <run>/report.html at the end")
    _add_run_args(score)

    rep = sub.add_parser("report", help="the HTML report of a run: summary, score curves, events, evaluation",
                         description="Write <run>/report.html (one self-contained file for a small run; an index "
                         "with a page per video under <run>/report/ for a large one). Opens from disk, no network. "
                         "An interrupted run, failed videos or missing plots still give a report that says so.")
    rep.add_argument("run", type=Path, help="a `vad score` (or `vad monitor`) output directory")
    rep.add_argument("--evaluation", type=Path, help="a `vad evaluate` output folder (default: <run>/evaluation)")
    rep.add_argument("--inline-videos", type=int, default=30, metavar="N",
                     help="up to N videos, everything goes into report.html (default 30); more get a page each")
    rep.add_argument("--max-points", type=int, default=6000, help="points per score chart (min/max envelope beyond)")
    rep.add_argument("--no-thumbnails", action="store_true", help="no event thumbnails (they decode each peak frame)")
    rep.add_argument("--no-progress", action="store_true")
    rep.add_argument("-v", "--verbose", action="count", default=0)

    ext = sub.add_parser("extract", help="feature extraction only: fill the feature cache (no head, no scores)",
                         description="Extract snippet features of videos into the feature cache, with the same "
                                     "pipeline, resume and failure handling as `vad score`.")
    ext.add_argument("inputs", nargs="+", help="video files, folders (recursive) or list files (.txt/.list)")
    ext.add_argument("--out", type=Path, help="run directory for summary/records (default: a new folder under runs/)")
    ext.add_argument("--cache", help="feature cache root (default: cache.root, feature_cache)")
    ext.add_argument("--list", type=Path, dest="list_out", help="also write an RTFM/UR-DMU-style list of the features")
    ext.add_argument("--backend", choices=["auto", "decord", "pyav", "opencv"], help="decoder")
    ext.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    ext.add_argument("--crop", choices=["center", "5crop", "10crop"], help="crops per snippet")
    _add_run_args(ext)

    mon = sub.add_parser("monitor", help="score live cameras in real time: events with snapshots and clips, "
                         "a live dashboard, /healthz and /metrics",
                         description="Score live streams (rtsp://, rtsps://, http(s)://, devices, or files with "
                         "--loop/--pace) with the same heads and events as `vad score`. Runs until SIGTERM/SIGINT "
                         "(or --duration).")
    mon.add_argument("cameras", nargs="*", metavar="[NAME=]URL",
                     help="streams; NAME= names the camera in outputs (default: its host and path, no credentials). "
                     "Or none, and a camera fleet file: --config cameras.yaml (a YAML with a top-level `cameras`: "
                     "per-camera settings, alert sinks, retention; SIGHUP reloads it)")
    mon.add_argument("--out", type=Path, help="output directory (default: a new timestamped folder under runs/)")
    mon.add_argument("--reference", help="normal footage of the camera(s) to fit the head on (default: learn "
                     "each camera's first monitor.reference_seconds, then freeze)")
    mon.add_argument("--head", help="a saved head directory (a fitted scene head, <run>/head, a trained head)")
    mon.add_argument("--http-port", type=int, help="serve the live dashboard (/), /healthz and /metrics on "
                     "HOST:PORT (0: any free port)")
    mon.add_argument("--http-host", help="address the HTTP server binds (default 127.0.0.1); any other than "
                     "loopback requires an access token (generated into <out>/http_token unless given)")
    mon.add_argument("--http-token", help="access token of the HTTP server (also $VAD_HTTP_TOKEN, which keeps it "
                     "out of the process list)")
    mon.add_argument("--analysis-fps", type=float, help="frames scored per second per camera (default 10)")
    mon.add_argument("--duration", type=float, help="stop after this many seconds (default: run until stopped)")
    mon.add_argument("--explain", action="store_true", help="explain every ended event (explain.backend) before "
                     "its end record is written")
    mon.add_argument("--ray-address", help="spread the cameras over this Ray cluster, one actor per camera "
                     "(restarted by Ray when it dies); --out must be on storage every node sees")
    mon.add_argument("--loop", action="store_true", help="file inputs: start again at the end")
    mon.add_argument("--pace", action="store_true", help="file inputs: play at their frame rate, as a camera")
    _add_config_args(mon)

    cfg = sub.add_parser("config", help="print the resolved configuration of `vad score` as YAML")
    _add_config_args(cfg)

    cache = sub.add_parser("cache", help="inspect the feature cache or export list files")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    c_list = cache_sub.add_parser("list", help="list cache entries")
    c_list.add_argument("--root", default="feature_cache", help="cache root (default: feature_cache)")
    c_exp = cache_sub.add_parser("export-list", help="write an RTFM/UR-DMU-style list of .npy feature files")
    c_exp.add_argument("--root", default="feature_cache", help="cache root (default: feature_cache)")
    c_exp.add_argument("--extractor", required=True, help="extractor key, e.g. i3d-1a2b3c4d5e (see `vad cache list`)")
    c_exp.add_argument("--out", required=True, type=Path, help="list file to write")
    c_exp.add_argument("--crops", choices=["all", "first"], default="all",
                       help="all crops (__0..__9 adjacent, UR-DMU style) or only crop 0")
    c_exp.add_argument("--relative", action="store_true", help="paths relative to the current directory")

    assets = sub.add_parser("assets", help="obtain the sample videos and the I3D weights (offline-safe)")
    assets.add_argument("action", choices=["fetch", "status"])

    info = sub.add_parser("info", help="print what each decoder backend reports for a video")
    info.add_argument("video")

    tr = sub.add_parser("train", help="train a head: weakly-supervised (MIL, GS-MoE) on snippet features, or the "
                        "CT-D2GAN frame predictor on normal footage",
                        description="Seeded, resumable training. MIL/GS-MoE: model selection on a validation split "
                        "carved from the training list (never the test set). ctd2gan: --normal footage only; its "
                        "held-out end calibrates the scores.")
    tr.add_argument("--head", choices=["mil", "gsmoe", "rtfm", "ctd2gan"],
                    help="head to train: mil, gsmoe, rtfm (whole-video, not for live streams) on snippet "
                    "features, or ctd2gan on frames (default: from the config, mil)")
    tr.add_argument("--normal", nargs="+", metavar="PATH", help="ctd2gan: normal footage (videos, folders, frame "
                    "folders as in UCSD Ped2 / Avenue / ShanghaiTech, list files)")
    tr.add_argument("--features", help="folder the list's feature paths are re-anchored to (basenames kept)")
    tr.add_argument("--train-list", help="mil/gsmoe/rtfm: list of training feature files (one .npy per line, crops adjacent)")
    tr.add_argument("--val-list", help="validation list (default: carve train.val_fraction from the training list)")
    tr.add_argument("--val-gt", help="folder of <video_id>.npy frame labels for the validation videos (frame AUC)")
    tr.add_argument("--dataset", help="naming conventions of the lists (ucf_crime, xd_violence, shanghaitech)")
    tr.add_argument("--out", required=True, type=Path, help="output directory (the trained head lands here)")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    tr.add_argument("--no-progress", action="store_true")
    _add_config_args(tr)

    ev = sub.add_parser("evaluate", help="benchmark metrics of scores against ground truth",
                        description="Frame AUC / AP (both definitions), anomalous-only metrics, FAR, per-class "
                        "and per-video tables, bootstrap CIs and event mAP; writes metrics.json, report.md, plots.")
    ev.add_argument("--scores", required=True, help="a `vad score` run directory or a folder of <id>.npy/.csv scores")
    ev.add_argument("--gt", required=True, help="folder of <id>.npy frame labels (vad gt build), or a dataset "
                    "name (ucf_crime, xd_violence, ped2, avenue, shanghaitech) together with --annotations")
    ev.add_argument("--annotations", help="annotation file when --gt is a dataset name")
    ev.add_argument("--convention", help="interval reading when building ground truth (see vad gt build)")
    ev.add_argument("--tail", choices=["drop", "pad", "none"], help="ground-truth tail policy when building it")
    ev.add_argument("--out", type=Path, help="output directory (default: <run>/evaluation when --scores is a "
                    "`vad score` run, where `vad report` finds it)")
    ev.add_argument("--threshold", type=float, default=0.5, help="threshold of the false-alarm rate and events")
    ev.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs (0 = off)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--snippet-length", type=int, default=16)
    ev.add_argument("--max-mismatch", type=int, default=16,
                    help="most frames scores and ground truth may differ by before a video is excluded")
    ev.add_argument("--max-video-plots", type=int, default=None, help="plot at most this many videos")
    ev.add_argument("-v", "--verbose", action="count", default=0)

    from vad.data import gt_cli

    gt_cli.register(sub)
    return parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `vad score` and `vad extract`: how the work is executed."""
    p.add_argument("--executor", choices=["auto", "ray", "local"],
                   help="auto (default: ray with --ray-address or --workers > 1, else local), ray (a local Ray "
                   "started for the job, or the cluster at --ray-address) or local (one process)")
    p.add_argument("--ray-address", help="join a running Ray cluster (auto, or ray://host:10001)")
    p.add_argument("--workers", type=int, help="feature-extractor actors (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per extractor (default: CPUs / workers)")
    p.add_argument("--batch-size", type=int, help="snippet crops (i3d) or frames (clip) per forward pass")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"],
                   help="inference precision (fp16: CUDA only; int8: I3D on CPU with OpenVINO, calibrated on "
                   "features.calibration or the job's own videos)")
    p.add_argument("--engine", choices=["auto", "torch", "openvino"],
                   help="I3D inference engine (auto: OpenVINO on CPU, PyTorch on CUDA)")
    p.add_argument("--retries", type=int, help="retries of a failed video before it is recorded as an error")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute videos already complete in --out (default: skip them)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_config_args(p)


def _run_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, key in (("executor", "pipeline.executor"), ("ray_address", "pipeline.ray_address"),
                      ("workers", "pipeline.workers"), ("threads", "features.threads"),
                      ("batch_size", "features.batch_size"), ("precision", "features.precision"),
                      ("retries", "pipeline.retries"), ("backend", "io.backend"),
                      ("device", "features.device"), ("crop", "features.crop"), ("engine", "features.engine")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    if args.no_resume:
        out.append("pipeline.resume=false")
    return out + list(args.overrides)


def _version() -> str:
    import vad

    return f"vad {vad.__version__}"


def _score_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if args.reference:
        out.append(f"head.reference={json.dumps(args.reference)}")
    if args.head in ("anomalyruler", "eventvad") and not Path(args.head).exists():
        out.append(f"head.type={args.head}")  # the training-free heads, fitted like the default one
    elif args.head:
        out.append(f"head.load={json.dumps(args.head)}")
    if getattr(args, "explain", False):
        out.append("explain.enabled=true")
    if getattr(args, "no_report", False):
        out.append("output.report=false")
    for flag, key in (("threshold", "events.threshold"), ("ground_truth", "output.ground_truth")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    if args.no_cache:
        out.append("cache.enabled=false")
    # explicit --set overrides come last (inside _run_overrides) and win
    return out + _run_overrides(args)


def _load_job_config(args: argparse.Namespace, overrides: list[str]) -> tuple[ScoreConfig, Path] | None:
    """The resolved config and run directory of `vad score`/`vad extract`, with logging set up
    (into <run>/run.log); None after logging a configuration error."""
    from pipelines.score import default_run_dir

    try:
        cfg = load_config(ScoreConfig, default_score_configs() + args.config, overrides)
    except ConfigError as err:
        setup_logging(args.verbose)
        logger.error("configuration error: %s", err)
        return None
    out_dir = args.out or default_run_dir(cfg.output.root)
    setup_logging(args.verbose, out_dir / "run.log")
    return cfg, out_dir


def cmd_extract(args: argparse.Namespace) -> int:
    from pipelines.score import JobError, ScoreJob

    overrides = _run_overrides(args)
    if args.cache:
        overrides.insert(0, f"cache.root={json.dumps(args.cache)}")
    loaded = _load_job_config(args, overrides)
    if loaded is None:
        return EXIT_JOB_ERROR
    cfg, out_dir = loaded
    try:
        job = ScoreJob(cfg, out_dir, progress=not args.no_progress, extract_only=True)
        summary = job.run(args.inputs)
    except JobError as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR
    print(f"extracted {summary['n_ok']}/{summary['n_videos']} video(s) into {Path(cfg.cache.root).resolve()} "
          f"({summary['extractor']['key']}), {summary['realtime_factor']}x real time")
    for failure in summary["failed"]:
        print(f"  FAILED {failure['video']}: {failure['error']}")
    if args.list_out:
        from vad.cache import FeatureCache

        ids = {v["video_id"] for v in summary["videos"] if v["status"] == "ok"}
        n = FeatureCache(cfg.cache.root).export_list(args.list_out, summary["extractor"]["key"], video_ids=ids)
        print(f"list: {args.list_out} ({n} lines)")
    print(f"outputs: {out_dir.resolve()}")
    return EXIT_OK if summary["n_failed"] == 0 else EXIT_SOME_FAILED


def cmd_score(args: argparse.Namespace) -> int:
    from pipelines.score import JobError, ScoreJob
    from vad.assets import AssetError, sample_video

    loaded = _load_job_config(args, _score_overrides(args))
    if loaded is None:
        return EXIT_JOB_ERROR
    cfg, out_dir = loaded
    inputs = list(args.inputs)
    if args.features:
        if inputs:
            logger.error("give either videos or --features LIST, not both")
            return EXIT_JOB_ERROR
        try:
            job = ScoreJob(cfg, out_dir, progress=not args.no_progress, precomputed=True)
            summary = job.run_features(args.features, args.fps, args.dataset)
        except JobError as err:
            logger.error("%s", err)
            return EXIT_JOB_ERROR
        return _report_score(summary, out_dir, job.report_path)
    if not inputs:
        try:
            inputs = [str(sample_video())]
        except AssetError as err:
            logger.error("no input given and the sample video is unavailable: %s", err)
            return EXIT_JOB_ERROR
        logger.warning("no input given: scoring the sample video %s", inputs[0])
    try:
        job = ScoreJob(cfg, out_dir, progress=not args.no_progress)
        summary = job.run(inputs)
    except JobError as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR
    return _report_score(summary, out_dir, job.report_path)


def _split_fleet_config(files: list[str]) -> tuple[list[str], list[str]]:
    """``--config`` files of `vad monitor`: (score configs, camera fleets); a fleet file is a
    YAML whose top level has ``cameras`` (pipelines/cameras.py), which a score config never has."""
    import yaml

    score, fleets = [], []
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                top = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            top = None  # reported by the config loader, with the file's name
        (fleets if isinstance(top, dict) and "cameras" in top else score).append(path)
    return score, fleets


def cmd_monitor(args: argparse.Namespace) -> int:
    from pipelines.monitor import MonitorError, parse_camera, run_monitor

    args.config, fleets = _split_fleet_config(args.config)
    if len(fleets) > 1 or (fleets and args.cameras) or not (fleets or args.cameras):
        setup_logging(args.verbose)
        logger.error("give the cameras either as [NAME=]URL arguments or in one cameras.yaml (--config), "
                     "got %d URL(s) and %d camera file(s)", len(args.cameras), len(fleets))
        return EXIT_JOB_ERROR
    overrides = []
    if args.reference:
        overrides.append(f"head.reference={json.dumps(args.reference)}")
    if args.head:
        overrides.append(f"head.load={json.dumps(args.head)}")
    if args.http_port is not None:
        overrides.append(f"monitor.http_port={args.http_port}")
    if args.http_host is not None:
        overrides.append(f"monitor.http_host={json.dumps(args.http_host)}")
    if args.explain:
        overrides.append("explain.enabled=true")
    if args.ray_address:
        overrides.append(f"pipeline.ray_address={json.dumps(args.ray_address)}")
    stream = {}
    if args.analysis_fps is not None:
        stream["analysis_fps"] = args.analysis_fps
    if args.loop:
        stream["loop"] = True
    if args.pace:
        stream["pace"] = True
    loaded = _load_job_config(args, overrides + args.overrides)
    if loaded is None:
        return EXIT_JOB_ERROR
    cfg, out_dir = loaded
    cfg.monitor.stream = {**cfg.monitor.stream, **stream}
    if args.http_token:
        cfg.monitor.http_token = args.http_token  # set here, not as an override: overrides may be logged
    try:
        cameras = [parse_camera(c) for c in args.cameras]
        spread = None
        if cfg.pipeline.ray_address:
            from pipelines.monitor_ray import spread_monitor

            spread = spread_monitor(cameras)
        return run_monitor(cfg, cameras, out_dir, duration=args.duration, fleet_path=fleets[0] if fleets else None,
                           spread=spread)
    except MonitorError as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR


def _report_score(summary: dict, out_dir: Path, report: Path | None) -> int:
    print(f"scored {summary['n_ok']}/{summary['n_videos']} video(s), {summary['n_events']} event(s), "
          f"{summary['realtime_factor']}x real time")
    for failure in summary["failed"]:
        print(f"  FAILED {failure['video']}: {failure['error']}")
    explained = summary.get("explain")
    if explained:
        print(f"explained {explained['explained']} event(s), {explained['errors']} without explanation "
              "(see explanation_error in events.jsonl)" if explained["errors"] else
              f"explained {explained['explained']} event(s)")
    print(f"outputs: {out_dir.resolve()}")
    if report is not None:
        print(f"report: {report.resolve()}")
    failed = summary["n_failed"] or (explained or {}).get("errors", 0)
    return EXIT_OK if not failed else EXIT_SOME_FAILED


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    setup_logging(args.verbose)
    try:
        cfg = load_config(ScoreConfig, default_score_configs() + args.config, args.overrides)
    except ConfigError as err:
        logger.error("configuration error: %s", err)
        return EXIT_JOB_ERROR
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from vad.cache import FeatureCache

    setup_logging(0)
    cache = FeatureCache(args.root)
    if args.cache_command == "list":
        rows = [(p.parent.name, m.get("video_id", p.stem), m.get("n_snippets"), m.get("n_crops"),
                 m.get("video", {}).get("path")) for p, m in cache.entries()]
        if not rows:
            print(f"no cache entries under {args.root}")
        for row in rows:
            print("\t".join(str(x) for x in row))
        return EXIT_OK
    try:
        n = cache.export_list(args.out, args.extractor, crops=args.crops, absolute=not args.relative)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR
    print(f"wrote {n} line(s) to {args.out}")
    return EXIT_OK


def cmd_assets(args: argparse.Namespace) -> int:
    from vad.assets import AssetError, ensure_i3d_weights, ensure_samples

    setup_logging(1)
    try:
        if args.action == "fetch":
            for name, path in ensure_samples().items():
                print(f"{name}: {path}")
            print(f"i3d weights: {ensure_i3d_weights()}")
        else:
            from vad.assets import CORRUPT_VIDEO, I3D_WEIGHTS, SAMPLE_VIDEO, asset_path
            from vad.features.i3d_weights import find_default_i3d_weights

            for a in (SAMPLE_VIDEO, CORRUPT_VIDEO, I3D_WEIGHTS):
                p = asset_path(a)
                print(f"{a.name}: {p if p.is_file() else 'missing'}")
            print(f"i3d weights in use: {find_default_i3d_weights() or 'missing'}")
    except AssetError as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR
    return EXIT_OK


def default_train_configs(head: str) -> list[Path]:
    d = configs_dir()
    path = d / "train" / f"{head}.yaml" if d else None
    return [path] if path and path.is_file() else []


def cmd_train_frames(args: argparse.Namespace) -> int:
    from pipelines.train_frames import FrameTrainer, FrameTrainError, load_frame_train_config

    setup_logging(args.verbose, args.out / "train.log")
    if not args.normal:
        logger.error("--head ctd2gan needs --normal footage (videos or frame folders)")
        return EXIT_JOB_ERROR
    try:
        cfg = load_frame_train_config(default_train_configs("ctd2gan") + args.config, args.overrides)
        trainer = FrameTrainer(cfg, args.normal, args.out, progress=not args.no_progress)
        if args.resume and not trainer.resume():
            logger.warning("--resume: no checkpoint in %s; starting from scratch", args.out)
        summary = trainer.run()
    except (ConfigError, FrameTrainError) as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR
    print(f"trained ctd2gan for {summary['iterations']} iterations on {summary['n_train_frames']} frames of "
          f"{summary['n_clips']} clip(s); calibrated on {summary['n_calibration_frames']} held-out frames")
    print(f"head: {args.out.resolve()}  (use: vad score --head {args.out} ...)")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.train import TrainError, Trainer
    from vad.config import TrainConfig

    if args.head == "ctd2gan":
        return cmd_train_frames(args)
    if not args.train_list:
        setup_logging(args.verbose)
        logger.error("--train-list is required for mil/gsmoe/rtfm (--normal is for --head ctd2gan)")
        return EXIT_JOB_ERROR
    overrides = list(args.overrides)
    head = args.head
    if head is None:
        try:
            head = load_config(TrainConfig, args.config, args.overrides).head.name
        except ConfigError as err:
            setup_logging(args.verbose)
            logger.error("configuration error: %s", err)
            return EXIT_JOB_ERROR
    overrides.append(f"head.name={head}")
    setup_logging(args.verbose, args.out / "train.log")
    try:
        cfg = load_config(TrainConfig, default_train_configs(head) + args.config, overrides)
        trainer = Trainer(cfg, args.train_list, args.out, val_list=args.val_list, val_gt=args.val_gt,
                          dataset=args.dataset, root=args.features, progress=not args.no_progress)
        if args.resume and not trainer.resume():
            logger.warning("--resume: no checkpoint in %s; starting from scratch", args.out)
        summary = trainer.run()
    except (ConfigError, TrainError) as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR
    print(f"trained {head} for {summary['epochs_run']} epoch(s) on {summary['n_train']} videos; best epoch "
          f"{summary['best']['epoch']} ({summary['selection']} = {summary['best']['metric']:.4f})")
    print(f"head: {args.out.resolve()}  (use: vad score --head {args.out} ...)")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipelines.evaluate import EvaluateError, run_evaluate
    from vad.data.annotations import AnnotationError
    from vad.rundir import RunDir

    if args.out is None:
        if not RunDir.is_run(args.scores):
            print("vad evaluate: --out is needed when --scores is not a `vad score` run directory", file=sys.stderr)
            return EXIT_JOB_ERROR
        args.out = RunDir(args.scores).evaluation_dir
    setup_logging(args.verbose, args.out / "evaluate.log")
    try:
        m = run_evaluate(args.scores, args.gt, args.out, annotations=args.annotations, convention=args.convention,
                         tail=args.tail, threshold=args.threshold, n_boot=args.n_boot, seed=args.seed,
                         snippet_length=args.snippet_length, max_mismatch=args.max_mismatch,
                         max_video_plots=args.max_video_plots)
    except (EvaluateError, AnnotationError, FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    print(f"{m['n_videos']} videos, {m['n_frames']} frames: AUC {f(m['auc'])}  AP(step) {f(m['ap_step'])}  "
          f"AP(trapezoid) {f(m['ap_trapezoid'])}  AUC(anomalous) {f(m['auc_anomalous'])}  FAR {f(m['far'])}")
    for key in ("missing_scores", "missing_gt", "excluded"):
        if m[key]:
            print(f"  {key}: {len(m[key])} (see report)")
    print(f"report: {(args.out / 'report.md').resolve()}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from vad.report import ReportOptions, write_report

    setup_logging(args.verbose)
    if args.inline_videos < 0 or args.max_points < 10:
        logger.error("--inline-videos must be >= 0 and --max-points >= 10")
        return EXIT_JOB_ERROR
    opts = ReportOptions(inline_videos=args.inline_videos, max_points=args.max_points,
                         thumbnails=not args.no_thumbnails, evaluation=args.evaluation)
    try:
        r = write_report(args.run, opts, progress=not args.no_progress)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError) as err:
        logger.error("%s", err)
        return EXIT_JOB_ERROR
    print(f"report of {r.n_videos} video(s), {r.n_events} event(s)"
          + (f", {r.n_pages} video pages" if r.n_pages else " (one self-contained file)") + f" in {r.seconds:.1f} s")
    for note in r.notes:
        print(f"  note: {note}")
    print(f"report: {r.index.resolve()}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from vad.io import VideoError, open_video

    setup_logging(0)
    status = EXIT_OK
    for backend in ("decord", "pyav", "opencv"):
        try:
            with open_video(args.video, backend) as reader:
                i = reader.info
                print(f"{backend:7s} frames={i.n_frames} fps={i.fps:g} size={i.width}x{i.height} "
                      f"duration={i.duration_s:.2f}s")
        except VideoError as err:
            print(f"{backend:7s} cannot open: {err}")
            status = EXIT_SOME_FAILED
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vad.data import gt_cli

    handlers = {"score": cmd_score, "extract": cmd_extract, "config": cmd_config, "cache": cmd_cache,
                "assets": cmd_assets, "info": cmd_info, "gt": gt_cli.run,
                "evaluate": cmd_evaluate, "train": cmd_train, "monitor": cmd_monitor,
                "report": cmd_report}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
