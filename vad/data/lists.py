"""Readers for the video/feature list files that released feature sets ship with.

Three layouts are recognised (auto-detected from the first line):

* ``features`` (RTFM / UR-DMU / XDVioDet): one feature ``.npy`` path per line. Multi-crop
  features carry a ``__<crop>`` suffix before ``.npy`` and the crops of one video sit on
  consecutive lines (``rgb_test.list``: 800 videos x 5 crops). RTFM-style single files
  (``Abuse028_x264_i3d.npy``, crops inside the array) are one line per video.
* ``csv`` (VadCLIP): header ``path,label``; ``label`` is the UCF class name (``Normal`` for
  normal videos) or the XD code string (``A``, ``B2-0-0``). Training lists give every crop
  on its own line, test lists one crop per video.
* ``names``: one video name or path per line (``Anomaly_Train.txt``, ``SH_Test.txt``); extra
  columns (``name N`` frame-count files) are ignored.

Paths in these files are absolute paths on the authors' machines: only basenames mean
anything, so ``root=`` re-anchors them under a local folder.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Mapping

import numpy as np

from vad.data.annotations import (
    AnnotationError,
    check_dataset,
    normalize_video_id,
    shanghaitech_is_normal,
    xd_codes,
)

logger = logging.getLogger(__name__)

NORMAL_LABEL = "normal"
ANOMALOUS_LABEL = "anomalous"

_CROP = re.compile(r"^(.*)__(\d+)$")
_UCF_CLASS = re.compile(r"^([A-Za-z]+?)\d+_x264$")


@dataclass
class ListEntry:
    """One video of a list file.

    Attributes:
        video_id: video name without directories, ``.npy``/``.mp4``, crop suffix or ``_i3d``.
        paths: the files of this video in list order (one per crop for multi-crop lists).
        label: ``"normal"`` or ``"anomalous"``.
        cls: class name (UCF ``Abuse``) or first class code (XD ``B4``); None for normal videos
            or when unknown.
        codes: all XD class codes of the name (``('B4', 'G')``); empty elsewhere.
    """

    video_id: str
    paths: list[Path]
    label: str
    cls: str | None
    codes: tuple[str, ...] = ()

    @property
    def is_normal(self) -> bool:
        return self.label == NORMAL_LABEL


# --------------------------------------------------------------------------- names


def split_feature_name(path: str | PurePath) -> tuple[str, int | None]:
    """``.../Abuse028_x264__5.npy`` -> ``('Abuse028_x264', 5)``;
    ``.../01_0015_i3d.npy`` -> ``('01_0015', None)``."""
    base = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    if base.lower().endswith(".npy"):
        base = base[:-4]
    crop = None
    m = _CROP.match(base)
    if m:
        base, crop = m.group(1), int(m.group(2))
    if base.endswith("_i3d"):  # RTFM naming: <video>_i3d.npy
        base = base[: -len("_i3d")]
    return normalize_video_id(base), crop


def guess_dataset(names: list[str]) -> str | None:
    """Guess the benchmark from video names (first few suffice)."""
    sample = names[:50]
    if any("_label_" in n for n in sample):
        return "xd_violence"
    if any(n.endswith("_x264") or "Normal_Videos" in n for n in sample):
        return "ucf_crime"
    if sample and all(shanghaitech_is_normal(n) is not None for n in sample):
        return "shanghaitech"
    return None


def is_normal_name(video_id: str, dataset: str | None) -> bool | None:
    """Normal/anomalous from the name alone; None when the name does not tell.

    UCF-Crime: ``Normal_Videos`` in the name. XD-Violence: ``_label_A``. ShanghaiTech:
    3-digit suffix (original training videos, all normal) vs 4-digit (original test videos,
    all contain anomalies in the weakly-supervised split).
    """
    if dataset == "ucf_crime":
        return "Normal_Videos" in video_id
    if dataset == "xd_violence":
        codes = xd_codes(video_id)
        return codes == ["A"] if codes else None
    if dataset == "shanghaitech":
        return shanghaitech_is_normal(video_id)
    return None


def class_from_name(video_id: str, dataset: str | None) -> tuple[str | None, tuple[str, ...]]:
    """``Abuse028_x264`` -> ``('Abuse', ())``; ``..._label_B4-G-0`` -> ``('B4', ('B4', 'G'))``."""
    if dataset == "ucf_crime":
        if "Normal_Videos" in video_id:
            return None, ()
        m = _UCF_CLASS.match(video_id)
        return (m.group(1) if m else None), ()
    if dataset == "xd_violence":
        codes = tuple(xd_codes(video_id))
        if not codes or codes == ("A",):
            return None, codes
        return codes[0], codes
    return None, ()


def remap_path(path: str, root: str | Path | None, keep_parents: int = 0) -> Path:
    """Re-anchor an author's path under ``root``, keeping the basename and ``keep_parents``
    parent folders (e.g. 1 for UCF's per-class folders)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if root is None:
        return Path(path)
    return Path(root).joinpath(*parts[-(keep_parents + 1):])


# --------------------------------------------------------------------------- reading


def _detect_format(first_line: str) -> str:
    low = first_line.strip().lower()
    if low.startswith("path,") or low.replace(" ", "") in ("path,label", "image_path,label"):
        return "csv"
    tok = first_line.split()[0] if first_line.split() else ""
    if tok.lower().endswith(".npy") or tok.lower().split(",")[0].endswith(".npy"):
        return "features"
    return "names"


def _label_from_csv(value: str, dataset: str | None) -> tuple[bool | None, str | None, tuple[str, ...]]:
    """(is_normal, cls, codes) from a VadCLIP label column."""
    v = value.strip()
    if v == "":
        return None, None, ()
    low = v.lower()
    if low in ("normal", "a", "0"):
        return True, None, (("A",) if low == "a" else ())
    if low == "1":
        return False, None, ()
    if dataset == "xd_violence" or re.fullmatch(r"[A-Z]\d?(-[A-Z0-9]+)*", v):
        codes = tuple(c for c in v.split("-") if c and c != "0")
        if codes == ("A",):
            return True, None, codes
        return False, (codes[0] if codes else None), codes
    return False, v, ()


def _load_gt(gt: Mapping[str, np.ndarray] | str | Path | None) -> Mapping[str, np.ndarray] | None:
    if gt is None or isinstance(gt, Mapping):
        return gt
    folder = Path(gt)
    if not folder.is_dir():
        raise FileNotFoundError(f"GT folder not found: {folder}")
    return {p.stem: np.load(p, allow_pickle=False) for p in folder.glob("*.npy")}


def read_list(
    path: str | Path,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    keep_parents: int = 0,
    gt: Mapping[str, np.ndarray] | str | Path | None = None,
    known_normal: Mapping[str, bool] | None = None,
) -> list[ListEntry]:
    """Read a feature/video list into one :class:`ListEntry` per video, in list order.

    Args:
        path: the list file (``.list``/``.txt``/``.csv``).
        dataset: ``ucf_crime``, ``xd_violence``, ``shanghaitech``...; guessed from names if None.
        root: re-anchor every path under this folder (see :func:`remap_path`).
        keep_parents: parent folders kept when re-anchoring.
        gt: per-video frame labels (``{id: array}`` or a folder of ``<id>.npy``); when given,
            a video is anomalous iff its GT has a positive frame (wins over names).
        known_normal: ``{id: is_normal}`` for videos whose status is already known (e.g. from
            an annotation file); wins over names, CSV labels and ``gt``.

    Crops of one video are expected on consecutive lines; a video that reappears later is
    merged into its first entry with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {path}")
    with open(path, encoding="utf-8-sig") as fh:
        lines = [ln.rstrip("\r\n") for ln in fh]
    nonempty = [ln for ln in lines if ln.strip()]
    if not nonempty:
        raise AnnotationError(f"{path}: empty list file")
    fmt = _detect_format(nonempty[0])

    rows: list[tuple[str, str, str | None]] = []  # (raw path, video_id, csv label)
    if fmt == "csv":
        reader = csv.reader(nonempty)
        header = [h.strip().lower() for h in next(reader)]
        pcol = header.index("path") if "path" in header else 0
        lcol = header.index("label") if "label" in header else None
        for row in reader:
            if not row:
                continue
            raw = row[pcol].strip()
            rows.append((raw, split_feature_name(raw)[0], row[lcol] if lcol is not None and lcol < len(row) else None))
    else:
        for ln in nonempty:
            raw = ln.split()[0] if fmt == "names" else ln.strip()
            vid = split_feature_name(raw)[0] if fmt == "features" else normalize_video_id(raw)
            rows.append((raw, vid, None))

    ds = check_dataset(dataset) if dataset else guess_dataset([r[1] for r in rows])
    gt_map = _load_gt(gt)

    entries: list[ListEntry] = []
    index: dict[str, int] = {}
    reappeared: set[str] = set()
    for raw, vid, csv_label in rows:
        p = remap_path(raw, root, keep_parents)
        if entries and entries[-1].video_id == vid:
            entries[-1].paths.append(p)
            continue
        if vid in index:
            reappeared.add(vid)
            entries[index[vid]].paths.append(p)
            continue
        cls, codes = class_from_name(vid, ds)
        normal = is_normal_name(vid, ds)
        if csv_label is not None:
            c_normal, c_cls, c_codes = _label_from_csv(csv_label, ds)
            if c_normal is not None:
                normal = c_normal
                cls, codes = (c_cls or cls, c_codes or codes) if not c_normal else (None, c_codes or codes)
        if gt_map is not None and vid in gt_map:
            normal = not bool(np.asarray(gt_map[vid]).any())
        if known_normal is not None and vid in known_normal:
            normal = bool(known_normal[vid])
        if normal is None:
            raise AnnotationError(
                f"{path}: cannot tell whether {vid!r} is normal (dataset {ds!r}); pass dataset=, gt= or known_normal="
            )
        if normal:
            cls = None
        index[vid] = len(entries)
        entries.append(ListEntry(vid, [p], NORMAL_LABEL if normal else ANOMALOUS_LABEL, cls, tuple(codes)))
    if reappeared:
        logger.warning("%s: %d video(s) appear on non-consecutive lines and were merged (e.g. %s)",
                       path, len(reappeared), sorted(reappeared)[0])
    crops = {len(e.paths) for e in entries}
    if len(crops) > 1 and fmt != "names":
        logger.warning("%s: videos have different numbers of files: %s", path, sorted(crops))
    logger.debug("%s: %d videos (%s list, dataset %s)", path, len(entries), fmt, ds)
    return entries


def list_format(path: str | Path) -> str:
    """The detected layout of a list file: ``features``, ``csv`` or ``names``."""
    with open(path, encoding="utf-8-sig") as fh:
        for ln in fh:
            if ln.strip():
                return _detect_format(ln)
    raise AnnotationError(f"{path}: empty list file")
