"""Parsers for the ground-truth annotation files of the standard anomaly benchmarks.

Every parser returns an :class:`AnnotationSet`: an ordered mapping ``video_id ->
VideoAnnotation`` plus the dataset name, the file format and the *native index convention*
of the numbers in the file. The numbers are kept exactly as written; turning them into
per-frame label vectors (index base, inclusive/exclusive ends, 16-frame tails) is the job of
:mod:`vad.data.ground_truth`, so that one parsed file can be rendered under any convention.

Supported sources (see ``shared/data/annotations/README.md`` for the measured facts):

==================  ====================================================  ==============
dataset             file                                                  native conv.
==================  ====================================================  ==============
UCF-Crime           ``Temporal_Anomaly_Annotation.txt`` (Sultani)         ``half_open``*
UCF-Crime           ``Test_Annotation.txt`` / ``UCF_Annotation.txt``      ``half_open``*
                    (same, with a frame-count column)
XD-Violence         ``annotations.txt`` / ``XD_Annotation.txt`` (binary)  ``half_open``
XD-Violence         ``annotations_multiclasses.txt`` (labelled)           ``half_open``
Ped2 / Avenue       ``ped2.mat`` / ``avenue.mat``                         ``one_based_inclusive``
Ped2 / Avenue / SH  per-frame CSV ``image_path,label``                    ``mask``
ShanghaiTech        ``test_frame_mask/*.npy`` (+ ``SH_Test.txt``)         ``mask``
==================  ====================================================  ==============

(*) the convention the published Python GT arrays use; the UCF authors' MATLAB evaluation
reads the same numbers as 1-based inclusive (``authors``).
"""

from __future__ import annotations

import csv
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from vad.utils import runs

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("ucf_crime", "xd_violence", "ped2", "avenue", "shanghaitech")

#: Label used for videos without any anomaly.
NORMAL = "Normal"

# Extensions stripped from video names. Only these: XD-Violence names contain dots
# ("Bad.Boys.1995__#01-11-55_...") so a generic "strip the suffix" would mangle them.
_VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv")


class AnnotationError(ValueError):
    """An annotation, list or frame-count file could not be parsed; the message names the
    file and line."""


@dataclass
class VideoAnnotation:
    """Ground truth of one video as written in its source file.

    Attributes:
        video_id: name without directories and without ``.mp4`` (``Abuse028_x264``, ``01``,
            ``01_0014``, ``v=...__#1_label_B4-0-0``).
        label: ``"Normal"`` or the class name / code (``Abuse``, ``B4``, ``Anomaly``).
        intervals: raw ``(start, end)`` numbers from the file, in file order; their meaning
            depends on the set's convention. For mask sources they are the runs of ones as
            0-based half-open pairs (informative only; ``mask`` is authoritative).
        interval_labels: per-interval class codes (XD-Violence multi-class file) or None.
        n_frames: frame count given by the file (UCF N column, mask length) or None.
        mask: per-frame 0/1 labels, shape ``(n_frames,)`` uint8, for mask sources; else None.
    """

    video_id: str
    label: str
    intervals: list[tuple[int, int]] = field(default_factory=list)
    interval_labels: list[str] | None = None
    n_frames: int | None = None
    mask: np.ndarray | None = None

    @property
    def is_normal(self) -> bool:
        if self.mask is not None:
            return not bool(self.mask.any())
        return not self.intervals


@dataclass
class AnnotationSet:
    """An ordered collection of video annotations from one file (or folder).

    Attributes:
        dataset: one of :data:`DATASETS`.
        source: the file or folder parsed.
        format: the detected file format (``ucf_temporal``, ``ucf_with_counts``, ``xd_binary``,
            ``xd_multiclass``, ``mat``, ``frame_csv``, ``mask_dir``).
        convention: native convention of the numbers (``half_open``, ``one_based_inclusive``,
            ``mask``); see :mod:`vad.data.ground_truth`.
        videos: ``video_id -> VideoAnnotation`` in file order.
    """

    dataset: str
    source: Path | None
    format: str
    convention: str
    videos: "OrderedDict[str, VideoAnnotation]" = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[VideoAnnotation]:
        return iter(self.videos.values())

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.videos

    def __getitem__(self, video_id: str) -> VideoAnnotation:
        return self.videos[video_id]

    def ids(self) -> list[str]:
        return list(self.videos)

    def add(self, ann: VideoAnnotation, *, where: str = "") -> None:
        if ann.video_id in self.videos:
            raise AnnotationError(f"{where}: video {ann.video_id!r} appears twice")
        self.videos[ann.video_id] = ann

    @property
    def n_intervals(self) -> int:
        return sum(len(v.intervals) for v in self)


# --------------------------------------------------------------------------- names


def normalize_video_id(name: str, dataset: str | None = None) -> str:
    """Strip directories and a video extension: ``Arson/Arson022_x264.mp4`` -> ``Arson022_x264``.

    For Ped2/Avenue, names ending in a number are reduced to that number with two digits
    (``Test001`` -> ``01``, ``05.avi`` -> ``05``), the ids the ``.mat`` files and the per-frame
    CSVs use.
    """
    base = name.strip().replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    low = base.lower()
    for suf in _VIDEO_SUFFIXES:
        if low.endswith(suf):
            base = base[: -len(suf)]
            break
    if dataset in ("ped2", "avenue"):
        m = re.search(r"(\d+)$", base)
        if m:
            base = f"{int(m.group(1)):02d}"
    return base


def check_dataset(dataset: str) -> str:
    d = dataset.strip().lower().replace("-", "_")
    aliases = {"ucf": "ucf_crime", "ucfcrime": "ucf_crime", "xd": "xd_violence", "xdviolence": "xd_violence",
               "sh": "shanghaitech", "shtech": "shanghaitech", "shanghai": "shanghaitech", "ucsd_ped2": "ped2"}
    d = aliases.get(d, d)
    if d not in DATASETS:
        raise AnnotationError(f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    return d


def _is_int(tok: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", tok) is not None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-empty lines with 1-based line numbers; tolerates a missing final newline,
    trailing spaces, a BOM and CRLF."""
    with open(path, "r", encoding="utf-8-sig") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield i, line


def _require_file(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return path


# --------------------------------------------------------------------------- UCF-Crime


def parse_ucf_crime(path: str | Path) -> AnnotationSet:
    """Parse UCF-Crime test annotations; the layout is detected from the first line.

    * ``Temporal_Anomaly_Annotation.txt``: ``<Video>.mp4  <Class>  s1  e1  s2  e2``
      (double spaces; ``-1 -1`` = no interval).
    * ``Test_Annotation.txt`` / ``UCF_Annotation.txt``:
      ``<ClassDir>/<Video>.mp4 <N> <Class> s1 e1 s2 e2`` -> ``n_frames = N``.

    Normal test videos are included with label ``Normal`` and no intervals.
    """
    path = _require_file(Path(path))
    out: AnnotationSet | None = None
    for lineno, line in _lines(path):
        toks = line.split()
        where = f"{path}:{lineno}"
        if len(toks) < 2:
            raise AnnotationError(f"{where}: expected '<video> [N] <class> s1 e1 ...', got {line!r}")
        with_counts = _is_int(toks[1])
        fmt = "ucf_with_counts" if with_counts else "ucf_temporal"
        if out is None:
            out = AnnotationSet("ucf_crime", path, fmt, "half_open")
        elif out.format != fmt:
            raise AnnotationError(f"{where}: line layout differs from the first line ({out.format})")
        head = 3 if with_counts else 2
        if len(toks) < head:
            raise AnnotationError(f"{where}: missing class column in {line!r}")
        nums = toks[head:]
        if len(nums) % 2 or not all(_is_int(t) for t in nums):
            raise AnnotationError(f"{where}: interval columns must be integer pairs, got {' '.join(nums)!r}")
        intervals = []
        for s, e in zip(nums[0::2], nums[1::2]):
            s_i, e_i = int(s), int(e)
            if s_i < 0 or e_i < 0:  # -1 -1 pads the fixed two-interval layout
                continue
            if e_i < s_i:
                raise AnnotationError(f"{where}: interval end {e_i} before start {s_i}")
            intervals.append((s_i, e_i))
        cls = toks[head - 1]
        vid = normalize_video_id(toks[0])
        n = int(toks[1]) if with_counts else None
        out.add(VideoAnnotation(vid, NORMAL if cls.lower() == "normal" else cls, intervals, None, n), where=where)
    if out is None:
        raise AnnotationError(f"{path}: empty annotation file")
    return out


# --------------------------------------------------------------------------- XD-Violence


_XD_LABEL = re.compile(r"_label_([A-Za-z0-9-]+)$")


def xd_codes(name: str) -> list[str]:
    """Class codes in an XD-Violence name: ``..._label_B4-G-0`` -> ``['B4', 'G']``; ``A`` = normal."""
    m = _XD_LABEL.search(normalize_video_id(name))
    if not m:
        return []
    return [c for c in m.group(1).split("-") if c and c != "0"]


def parse_xd_violence(path: str | Path) -> AnnotationSet:
    """Parse XD-Violence test annotations; binary vs multi-class is detected from the first line.

    * binary (``annotations.txt``, ``XD_Annotation.txt``): ``<name> s1 e1 s2 e2 ...``
    * multi-class (``annotations_multiclasses.txt``): ``<name> L1 s1 e1 L2 s2 e2 ...``;
      ``interval_labels`` keeps the per-interval codes, which may overlap. The binary
      ground truth is their union (:func:`vad.data.ground_truth.frame_labels` ORs intervals).

    Only the 500 violent test videos are listed; the 300 non-violent (``_label_A``) test
    videos have no line. The video label is the first class code of the name.
    """
    path = _require_file(Path(path))
    out: AnnotationSet | None = None
    for lineno, line in _lines(path):
        toks = line.split()
        where = f"{path}:{lineno}"
        rest = toks[1:]
        multi = bool(rest) and not _is_int(rest[0])
        fmt = "xd_multiclass" if multi else "xd_binary"
        if out is None:
            out = AnnotationSet("xd_violence", path, fmt, "half_open")
        elif out.format != fmt:
            raise AnnotationError(f"{where}: line layout differs from the first line ({out.format})")
        intervals: list[tuple[int, int]] = []
        labels: list[str] | None = [] if multi else None
        step = 3 if multi else 2
        if len(rest) % step:
            raise AnnotationError(f"{where}: expected groups of {step} columns after the name, got {len(rest)}")
        for i in range(0, len(rest), step):
            grp = rest[i : i + step]
            s, e = grp[-2], grp[-1]
            if not (_is_int(s) and _is_int(e)):
                raise AnnotationError(f"{where}: non-integer interval {s!r} {e!r}")
            s_i, e_i = int(s), int(e)
            if s_i < 0 or e_i < s_i:
                raise AnnotationError(f"{where}: bad interval {s_i}-{e_i}")
            intervals.append((s_i, e_i))
            if labels is not None:
                labels.append(grp[0])
        vid = normalize_video_id(toks[0])
        codes = xd_codes(vid)
        label = codes[0] if codes and codes[0] != "A" else ("Violence" if intervals else NORMAL)
        out.add(VideoAnnotation(vid, label, intervals, labels, None), where=where)
    if out is None:
        raise AnnotationError(f"{path}: empty annotation file")
    return out


# --------------------------------------------------------------------------- Ped2 / Avenue .mat


def parse_mat(path: str | Path, dataset: str) -> AnnotationSet:
    """Parse a Ped2/Avenue ``.mat`` file: variable ``gt``, a 1xV cell of 2xK arrays
    (row 0 starts, row 1 ends), 1-based inclusive frame numbers. Ids are ``01`` .. ``VV``."""
    import scipy.io

    path = _require_file(Path(path))
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a bad file
        raise AnnotationError(f"{path}: not a readable MATLAB file ({exc})") from exc
    keys = [k for k in mat if not k.startswith("__")]
    key = "gt" if "gt" in mat else (keys[0] if len(keys) == 1 else None)
    if key is None:
        raise AnnotationError(f"{path}: no 'gt' variable (found {keys})")
    cells = np.asarray(mat[key], dtype=object).ravel()
    out = AnnotationSet(dataset, path, "mat", "one_based_inclusive")
    for i, cell in enumerate(cells):
        # uint8/uint16 in the files: widen to signed before any arithmetic (s - 1 underflows).
        arr = np.asarray(cell).astype(np.int64)
        if arr.size == 0:
            intervals: list[tuple[int, int]] = []
        else:
            if arr.ndim == 1 and arr.size == 2:
                arr = arr.reshape(2, 1)
            if arr.ndim != 2 or arr.shape[0] != 2:
                raise AnnotationError(f"{path}: cell {i + 1} has shape {arr.shape}, expected (2, K)")
            intervals = [(int(s), int(e)) for s, e in zip(arr[0], arr[1])]
        vid = f"{i + 1:02d}"
        out.add(VideoAnnotation(vid, "Anomaly" if intervals else NORMAL, intervals), where=str(path))
    return out


# --------------------------------------------------------------------------- per-frame CSV


def _csv_frame_rows(path: Path) -> "OrderedDict[str, list[tuple[int, int]]]":
    """``video -> [(frame_number, label)]`` from an ``image_path,label`` CSV, in file order of
    first appearance."""
    groups: OrderedDict[str, list[tuple[int, int]]] = OrderedDict()
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or [h.strip().lower() for h in header[:2]] != ["image_path", "label"]:
            raise AnnotationError(f"{path}: expected header 'image_path,label', got {header}")
        for lineno, row in enumerate(reader, 2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise AnnotationError(f"{path}:{lineno}: expected 'image_path,label'")
            p = row[0].strip().replace("\\", "/")
            parts = p.split("/")
            stem = parts[-1].rsplit(".", 1)[0]
            if len(parts) < 2 or not stem.isdigit():
                raise AnnotationError(f"{path}:{lineno}: expected '<...>/<video>/<frame>.jpg', got {p!r}")
            try:
                lab = int(float(row[1]))
            except ValueError:
                raise AnnotationError(f"{path}:{lineno}: label {row[1]!r} is not 0/1") from None
            groups.setdefault(parts[-2], []).append((int(stem), lab))
    return groups


def parse_frame_csv(path: str | Path, dataset: str | None = None) -> AnnotationSet:
    """Parse a per-frame CSV (``image_path,label``; rows ``<ds>/test/<VV>/<frame>.jpg,<0|1>``).

    Frame numbers are 0-based file names whose zero-padding varies between videos, so they
    are sorted numerically. Gaps or duplicates in the numbering are errors.
    """
    path = _require_file(Path(path))
    groups = _csv_frame_rows(path)
    if dataset is None:
        first = ""
        with open(path, encoding="utf-8-sig") as fh:
            next(fh, None)
            first = (next(fh, "") or "").split("/", 1)[0].lower()
        dataset = {"shtech": "shanghaitech"}.get(first, first if first in DATASETS else "unknown")
    out = AnnotationSet(dataset, path, "frame_csv", "mask")
    for video, rows in groups.items():
        rows.sort()
        frames = np.array([r[0] for r in rows])
        if frames[0] != 0 or np.any(np.diff(frames) != 1):
            raise AnnotationError(
                f"{path}: frames of video {video!r} are not numbered 0..{len(frames) - 1} without gaps"
            )
        mask = (np.array([r[1] for r in rows]) > 0).astype(np.uint8)
        vid = normalize_video_id(video, dataset)
        out.add(VideoAnnotation(vid, "Anomaly" if mask.any() else NORMAL, runs(mask), None, len(mask), mask),
                where=str(path))
    return out


# --------------------------------------------------------------------------- ShanghaiTech masks


_SH_ID = re.compile(r"^(\d{2})_(\d{3,4})$")


def shanghaitech_is_normal(video_id: str) -> bool | None:
    """True for ids of original *training* videos (3-digit suffix, ``01_001``), which are all
    normal; False for original test videos (4-digit, ``01_0014``); None if not an SH id."""
    m = _SH_ID.match(video_id)
    if not m:
        return None
    return len(m.group(2)) == 3


def read_id_list(path: str | Path) -> list[str]:
    """One id per line (first whitespace-separated token), e.g. ``SH_Test.txt``."""
    path = _require_file(Path(path))
    return [normalize_video_id(line.split()[0]) for _, line in _lines(path)]


def parse_shanghaitech(masks: str | Path, id_list: str | Path | None = None) -> AnnotationSet:
    """Parse ShanghaiTech per-frame masks (``test_frame_mask/<id>.npy``, uint8 0/1, index =
    0-based frame image).

    ``masks`` may be the mask folder or a folder containing ``test_frame_mask``. With
    ``id_list`` (``SH_Test.txt``), the set follows that list: ids with a 3-digit suffix are
    original training videos and get a normal entry without frame count (their GT is all
    zeros over the real length, which must come from a frame-count source); a 4-digit id
    without a mask is an error.
    """
    masks = Path(masks)
    if not masks.exists():
        raise FileNotFoundError(f"annotation folder not found: {masks}")
    if masks.is_dir() and (masks / "test_frame_mask").is_dir():
        masks = masks / "test_frame_mask"
    if not masks.is_dir():
        raise AnnotationError(f"{masks}: expected a folder of per-video .npy masks")
    files = sorted(masks.glob("*.npy"))
    if not files:
        raise AnnotationError(f"{masks}: no .npy masks found")
    loaded: OrderedDict[str, VideoAnnotation] = OrderedDict()
    for f in files:
        arr = np.load(f, allow_pickle=False)
        if arr.ndim != 1:
            raise AnnotationError(f"{f}: mask must be 1-D, got shape {arr.shape}")
        mask = (arr > 0).astype(np.uint8)
        loaded[f.stem] = VideoAnnotation(f.stem, "Anomaly" if mask.any() else NORMAL, runs(mask), None,
                                         len(mask), mask)
    out = AnnotationSet("shanghaitech", masks, "mask_dir", "mask")
    if id_list is None:
        out.videos = loaded
        return out
    for vid in read_id_list(id_list):
        if vid in loaded:
            out.add(loaded[vid], where=str(id_list))
        elif shanghaitech_is_normal(vid):
            out.add(VideoAnnotation(vid, NORMAL), where=str(id_list))
        else:
            raise AnnotationError(f"{id_list}: video {vid!r} is an original test video but has no mask in {masks}")
    return out


def parse_mask_dir(path: str | Path, dataset: str) -> AnnotationSet:
    """Any folder of per-video 1-D 0/1 ``.npy`` masks (e.g. GT written by ``vad gt build``)."""
    ann = parse_shanghaitech(path)
    ann.dataset = dataset
    return ann


# --------------------------------------------------------------------------- dispatch


def load_annotations(dataset: str, path: str | Path, *, id_list: str | Path | None = None) -> AnnotationSet:
    """Parse ``path`` with the parser that fits ``dataset`` and the file type.

    ``ucf_crime`` -> :func:`parse_ucf_crime`; ``xd_violence`` -> :func:`parse_xd_violence`;
    ``ped2``/``avenue`` -> :func:`parse_mat` (``.mat``) or :func:`parse_frame_csv` (``.csv``);
    ``shanghaitech`` -> :func:`parse_shanghaitech` (folder) or :func:`parse_frame_csv` (``.csv``).
    A folder of ``.npy`` masks is accepted for any dataset.
    """
    dataset = check_dataset(dataset)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    if path.is_dir():
        if dataset == "shanghaitech":
            return parse_shanghaitech(path, id_list)
        return parse_mask_dir(path, dataset)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_frame_csv(path, dataset)
    if dataset == "ucf_crime":
        return parse_ucf_crime(path)
    if dataset == "xd_violence":
        return parse_xd_violence(path)
    if dataset in ("ped2", "avenue"):
        if suffix == ".mat":
            return parse_mat(path, dataset)
        raise AnnotationError(f"{path}: {dataset} annotations must be a .mat or a per-frame .csv")
    raise AnnotationError(
        f"{path}: shanghaitech annotations must be the test_frame_mask folder or a per-frame .csv"
    )
