"""``vad gt``: build frame-level ground truth from benchmark annotation files.

Wired into :mod:`pipelines.cli` with::

    from vad.data import gt_cli
    gt_cli.register(sub)               # adds the "gt" command
    handlers["gt"] = gt_cli.run
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from vad.data.annotations import DATASETS
from vad.data.ground_truth import CONVENTION_ALIASES, CONVENTIONS, MANIFEST_NAME, TAILS, build_ground_truth

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``gt`` command (subcommand ``build``) to an argparse subparsers object."""
    gt = subparsers.add_parser("gt", help="build frame-level ground truth from annotation files",
                               description="Ground-truth tools for the standard benchmarks.")
    gt_sub = gt.add_subparsers(dest="gt_command", required=True)
    b = gt_sub.add_parser(
        "build",
        help="write <out>/<video_id>.npy (uint8 per-frame labels) and gt_manifest.json",
        description="Build per-video frame labels from an annotation file and real frame counts. "
        "Defaults: ucf_crime/xd_violence half_open + drop; ped2/avenue one_based_inclusive + none; "
        "shanghaitech masks + none.",
    )
    b.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    b.add_argument("--annotations", required=True, type=Path, metavar="FILE_OR_DIR",
                   help="annotation file (.txt/.mat/.csv) or ShanghaiTech test_frame_mask folder")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--frame-counts", type=Path, metavar="FILE",
                     help="'<video> <N>' lines (e.g. UCF Test_Annotation.txt), JSON or per-frame CSV")
    src.add_argument("--videos", type=Path, metavar="DIR", help="folder of the videos (frame counts are read)")
    src.add_argument("--features", type=Path, metavar="DIR",
                     help="folder of snippet features <id>__<crop>.npy / <id>.npy: N = snippets x 16")
    b.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    b.add_argument("--convention", metavar="NAME",
                   help=f"interval reading: {', '.join(CONVENTIONS)} (aliases: {', '.join(CONVENTION_ALIASES)})")
    b.add_argument("--tail", choices=TAILS, help="frames past the last whole 16-frame snippet")
    b.add_argument("--include-normal-from", type=Path, metavar="LIST",
                   help="test list (SH_Test.txt, rgb_test.list, VadCLIP csv): adds its normal videos as "
                   "all-zero GT and fixes the output set and order")
    b.add_argument("--snippet-length", type=int, default=16, help="frames per snippet (default 16)")
    b.add_argument("--strict", action="store_true", help="fail if any video has no frame count")
    b.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    b.set_defaults(handler=run)


def _setup_logging(verbose: int) -> None:
    try:
        from vad.console import setup_logging  # same console format as the other commands
    except Exception:  # pragma: no cover - cli being rewritten; fall back to basic logging
        logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2))
        return
    setup_logging(verbose)


def run(args: argparse.Namespace) -> int:
    """Run ``vad gt <subcommand>``; 0 on success, 1 with a one-line message on error."""
    if getattr(args, "gt_command", None) != "build":
        print(f"error: unknown gt subcommand {getattr(args, 'gt_command', None)!r}", file=sys.stderr)
        return 1
    _setup_logging(getattr(args, "verbose", 0))
    try:
        s = build_ground_truth(
            args.dataset,
            args.annotations,
            frame_counts=args.frame_counts,
            videos=args.videos,
            features=args.features,
            out=args.out,
            convention=args.convention,
            tail=args.tail,
            include_normal_from=args.include_normal_from,
            snippet_length=args.snippet_length,
            strict=args.strict,
        )
    except Exception as exc:  # one line for the user; the traceback only with -v
        logger.debug("gt build failed", exc_info=True)
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(
        f"{s.n_videos} videos ({s.n_normal} normal) -> {args.out}: {s.total_length} frames, "
        f"{s.total_positives} anomalous ({s.convention}, tail={s.tail}); "
        f"{len(s.skipped)} skipped; manifest {args.out / MANIFEST_NAME}"
    )
    return 0
