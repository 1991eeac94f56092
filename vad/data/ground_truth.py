"""Frame-level ground-truth vectors from annotation files and real frame counts.

A GT vector is one uint8 0/1 label per frame, built from a parsed annotation
(:mod:`vad.data.annotations`), the video's frame count ``N``, an *index convention* and a
*tail policy*. Both choices are explicit because published GT arrays differ on them and
bit-exact comparison with published numbers depends on them
(``shared/data/annotations/README.md``).

Conventions (how a pair ``(s, e)`` from a file maps to 0-based frames):

=========================  ======================  ==============================================
name                       frames set              used by
=========================  ======================  ==============================================
``half_open``              ``s .. e-1``            UCF-Crime Python GT (ekosman, PEL4VAD, UR-DMU);
                                                   XD-Violence standard GT
``one_based_inclusive``    ``s-1 .. e-1``          Ped2/Avenue ``.mat``; UCF authors' MATLAB
  (alias ``authors``)                              evaluation (``authors``)
``zero_based_inclusive``   ``s .. e``              RTFM ``make_gt_ucf.py``; the XD annotators'
  (alias ``inclusive``)                            apparent intent
``mask``                   per-frame mask as is    ShanghaiTech masks, per-frame CSVs
=========================  ======================  ==============================================

Intervals are clipped to ``[0, N)``; several intervals are OR-ed (so the XD-Violence
multi-class file yields the union of its class intervals).

Tail policies (the last ``N mod 16`` frames that do not fill a 16-frame snippet):

* ``drop``: length ``16*floor(N/16)``. What the published UCF-Crime / XD-Violence GT arrays
  do, and what lines up with features extracted with tail=drop.
* ``pad``: length ``16*ceil(N/16)``, repeating the last label (RTFM's ShanghaiTech GT).
* ``none``: length ``N``.

Defaults: UCF-Crime and XD-Violence ``half_open`` + ``drop``; Ped2/Avenue
``one_based_inclusive`` + ``none``; ShanghaiTech ``mask`` + ``none``.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from vad.data.annotations import (
    NORMAL,
    AnnotationError,
    AnnotationSet,
    VideoAnnotation,
    _csv_frame_rows,
    _is_int,
    _lines,
    check_dataset,
    load_annotations,
    normalize_video_id,
    shanghaitech_is_normal,
)
from vad.fsutil import save_npy_atomic, write_json_atomic

logger = logging.getLogger(__name__)

CONVENTIONS: tuple[str, ...] = ("half_open", "one_based_inclusive", "zero_based_inclusive", "mask")
CONVENTION_ALIASES: dict[str, str] = {
    "authors": "one_based_inclusive",
    "matlab": "one_based_inclusive",
    "one_based": "one_based_inclusive",
    "exclusive": "half_open",
    "zero_based_exclusive": "half_open",
    "inclusive": "zero_based_inclusive",
}
TAILS: tuple[str, ...] = ("drop", "pad", "none")

#: Per-dataset default (convention, tail).
DATASET_DEFAULTS: dict[str, tuple[str, str]] = {
    "ucf_crime": ("half_open", "drop"),
    "xd_violence": ("half_open", "drop"),
    "ped2": ("one_based_inclusive", "none"),
    "avenue": ("one_based_inclusive", "none"),
    "shanghaitech": ("mask", "none"),
}

MANIFEST_NAME = "gt_manifest.json"


# --------------------------------------------------------------------------- label vectors


def resolve_convention(name: str) -> str:
    """Canonical convention name (``authors`` -> ``one_based_inclusive``, ...)."""
    key = name.strip().lower().replace("-", "_")
    key = CONVENTION_ALIASES.get(key, key)
    if key not in CONVENTIONS:
        raise ValueError(
            f"unknown convention {name!r} (expected one of {', '.join(CONVENTIONS + tuple(CONVENTION_ALIASES))})"
        )
    return key


def _check_tail(tail: str) -> str:
    if tail not in TAILS:
        raise ValueError(f"unknown tail policy {tail!r} (expected one of {', '.join(TAILS)})")
    return tail


def tail_length(n_frames: int, tail: str, snippet_length: int = 16) -> int:
    """Length of the GT vector of an ``n_frames`` video under a tail policy."""
    _check_tail(tail)
    if tail == "drop":
        return snippet_length * (n_frames // snippet_length)
    if tail == "pad":
        return snippet_length * math.ceil(n_frames / snippet_length)
    return n_frames


def to_half_open(interval: tuple[int, int], convention: str) -> tuple[int, int]:
    """An interval as 0-based half-open ``[a, b)`` frame indices (not clipped)."""
    s, e = int(interval[0]), int(interval[1])
    conv = resolve_convention(convention)
    if conv == "half_open":
        return s, e
    if conv == "one_based_inclusive":
        return s - 1, e
    if conv == "zero_based_inclusive":
        return s, e + 1
    raise ValueError("intervals have no 'mask' reading; use the annotation's mask")


def interval_mask(intervals: Iterable[tuple[int, int]], n_frames: int, convention: str) -> np.ndarray:
    """0/1 uint8 vector of length ``n_frames``: the union of ``intervals`` read under
    ``convention`` and clipped to ``[0, n_frames)``."""
    out = np.zeros(int(n_frames), dtype=np.uint8)
    for iv in intervals:
        a, b = to_half_open(iv, convention)
        a, b = max(a, 0), min(b, n_frames)
        if a < b:
            out[a:b] = 1
    return out


def merge_intervals(intervals: Iterable[tuple[int, int]], convention: str) -> list[tuple[int, int]]:
    """Union of intervals, merged where they overlap or touch *under the convention*, returned
    in the same convention: ``(1,5),(6,9)`` merge when ends are inclusive, not when half-open."""
    conv = resolve_convention(convention)
    ho = sorted(to_half_open(iv, conv) for iv in intervals)
    merged: list[list[int]] = []
    for a, b in ho:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    shift = {"half_open": (0, 0), "one_based_inclusive": (1, 0), "zero_based_inclusive": (0, -1)}[conv]
    return [(a + shift[0], b + shift[1]) for a, b in merged]


def _full_mask(annotation: VideoAnnotation, n: int, conv: str) -> np.ndarray:
    """Labels over exactly ``n`` frames (no tail policy)."""
    if annotation.mask is not None:
        if conv not in ("mask", "half_open"):
            raise ValueError(
                f"{annotation.video_id}: the annotation is a per-frame mask; convention {conv!r} does not apply"
            )
        m = np.asarray(annotation.mask, dtype=np.uint8)
        if len(m) >= n:
            return m[:n].copy()
        return np.concatenate([m, np.zeros(n - len(m), np.uint8)])
    if conv == "mask":
        if annotation.intervals:
            raise ValueError(f"{annotation.video_id}: convention 'mask' needs a per-frame mask, "
                             "but the annotation has intervals; choose an interval convention")
        return np.zeros(n, np.uint8)
    return interval_mask(annotation.intervals, n, conv)


def apply_tail(labels: np.ndarray, tail: str, snippet_length: int = 16) -> np.ndarray:
    """Cut or pad a full-length label vector to whole snippets (see module doc)."""
    n = len(labels)
    length = tail_length(n, tail, snippet_length)
    if length <= n:
        return labels[:length]
    fill = labels[-1] if n else 0  # pad repeats the last label
    return np.concatenate([labels, np.full(length - n, fill, dtype=labels.dtype)])


def frame_labels(
    annotation: VideoAnnotation,
    n_frames: int | None = None,
    *,
    convention: str,
    tail: str = "drop",
    snippet_length: int = 16,
) -> np.ndarray:
    """Frame-level GT of one video: uint8 0/1 array of shape ``(L,)``.

    Args:
        annotation: the parsed annotation.
        n_frames: real frame count N; defaults to ``annotation.n_frames``.
        convention: see the module doc (aliases such as ``authors`` accepted).
        tail: ``drop`` (L = 16*floor(N/16)), ``pad`` (L = 16*ceil(N/16), last label repeated)
            or ``none`` (L = N).
        snippet_length: frames per snippet for the tail policy.

    Masks shorter than ``n_frames`` are zero-extended, longer ones truncated.
    """
    n = annotation.n_frames if n_frames is None else n_frames
    if n is None:
        raise ValueError(f"{annotation.video_id}: no frame count (give n_frames)")
    if n < 0:
        raise ValueError(f"{annotation.video_id}: negative frame count {n}")
    conv = resolve_convention(convention)
    return apply_tail(_full_mask(annotation, int(n), conv), _check_tail(tail), snippet_length)


def annotated_end(annotation: VideoAnnotation, convention: str) -> int:
    """One past the last annotated frame (0-based) under ``convention``; 0 if none."""
    if annotation.mask is not None:
        r = np.flatnonzero(annotation.mask)
        return int(r[-1]) + 1 if r.size else 0
    if not annotation.intervals:
        return 0
    return max(to_half_open(iv, convention)[1] for iv in annotation.intervals)


# --------------------------------------------------------------------------- frame counts


def read_frame_counts(path: str | Path, dataset: str | None = None) -> dict[str, int]:
    """Frame counts from a file: ``name N`` lines (whitespace- or comma-separated; extra
    columns ignored, so UCF ``Test_Annotation.txt``/``Train_Annotation.txt`` work), a JSON
    object ``{name: N}``, or a per-frame ``image_path,label`` CSV (frames counted per video)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame-count file not found: {path}")
    if path.suffix.lower() == ".json":
        import json

        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise AnnotationError(f"{path}: expected a JSON object {{video: n_frames}}")
        return {normalize_video_id(k, dataset): int(v) for k, v in data.items()}
    with open(path, encoding="utf-8-sig") as fh:
        first = fh.readline().strip().lower()
    if first.replace(" ", "").startswith("image_path,label"):
        return {normalize_video_id(v, dataset): len(rows) for v, rows in _csv_frame_rows(path).items()}
    counts: dict[str, int] = {}
    for lineno, line in _lines(path):
        toks = [t for t in re.split(r"[,\s]+", line) if t]
        if lineno == 1 and len(toks) >= 2 and not _is_int(toks[1]) and not _is_int(toks[0]):
            if toks[1].lower() in ("n_frames", "frames", "n", "num_frames", "length"):
                continue  # a header line
        if len(toks) < 2 or not _is_int(toks[1]):
            raise AnnotationError(
                f"{path}:{lineno}: not a frame-count line (expected '<video> <N> ...'), got {line[:80]!r}"
            )
        vid = normalize_video_id(toks[0], dataset)
        if vid in counts and counts[vid] != int(toks[1]):
            raise AnnotationError(f"{path}:{lineno}: {vid!r} listed twice with different counts")
        counts[vid] = int(toks[1])
    if not counts:
        raise AnnotationError(f"{path}: no frame counts found")
    return counts


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def frame_counts_from_videos(folder: str | Path, dataset: str | None = None) -> dict[str, int]:
    """Frame counts of the videos under ``folder`` (recursive), via :func:`vad.io.open_video`.

    A sub-folder of frame images (Ped2 ``Test001/001.tif``) counts as a video with one frame
    per image. Videos that cannot be opened are logged and left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"videos folder not found: {folder}")
    try:
        from vad.io import VIDEO_EXTENSIONS
    except ImportError:  # keep folder scanning usable while vad.io is unavailable
        VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
    counts: dict[str, int] = {}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    if videos:
        from vad.io import open_video  # lazy: decoding backends are heavy imports

        for p in videos:
            vid = normalize_video_id(p.name, dataset)
            try:
                with open_video(p) as reader:
                    n = int(reader.info.n_frames)
            except Exception as exc:  # a broken file should not stop the other 1,000
                logger.warning("cannot read frame count of %s: %s", p, exc)
                continue
            if vid in counts:
                logger.warning("video id %r found twice under %s; keeping the first", vid, folder)
                continue
            counts[vid] = n
    frame_dirs: dict[Path, int] = {}
    for p in files:
        if p.suffix.lower() in _IMAGE_SUFFIXES:
            frame_dirs[p.parent] = frame_dirs.get(p.parent, 0) + 1
    for d, n in sorted(frame_dirs.items()):
        vid = normalize_video_id(d.name, dataset)
        counts.setdefault(vid, n)
    if not counts:
        raise AnnotationError(f"{folder}: no videos or frame folders found")
    return counts


def _npy_shape(path: Path) -> tuple[int, ...]:
    """Shape from a .npy header without reading the data."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(s) for s in shape)


def frame_counts_from_features(
    folder: str | Path, snippet_length: int = 16, dataset: str | None = None
) -> dict[str, int]:
    """Frame counts implied by snippet features: ``N = T * snippet_length``.

    Files are ``<id>__<crop>.npy`` shaped ``(T, D)`` (one per crop) or ``<id>.npy`` shaped
    ``(T, D)`` / ``(T, crops, D)`` (RTFM's ``<id>_i3d.npy`` too), searched recursively. These
    counts are already aligned to whole snippets (what ``tail=drop`` would produce from the
    real N, when the features were extracted with tail=drop), so the GT length equals the
    feature length times ``snippet_length`` under every tail policy.
    """
    from vad.data.lists import split_feature_name

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"features folder not found: {folder}")
    snippets: dict[str, dict[int, int]] = {}
    for p in sorted(folder.rglob("*.npy")):
        if p.name.startswith(".tmp-"):
            continue
        vid, crop = split_feature_name(p.name)
        vid = normalize_video_id(vid, dataset)
        try:
            shape = _npy_shape(p)
        except (ValueError, OSError) as exc:
            logger.warning("skipping unreadable feature file %s: %s", p, exc)
            continue
        if not shape:
            logger.warning("skipping scalar feature file %s", p)
            continue
        crops = snippets.setdefault(vid, {})
        key = -1 if crop is None else crop
        if key in crops:
            logger.warning("feature file for %r crop %s found twice under %s; keeping the first", vid, crop, folder)
            continue
        crops[key] = shape[0]
    if not snippets:
        raise AnnotationError(f"{folder}: no .npy feature files found")
    counts: dict[str, int] = {}
    for vid, crops in snippets.items():
        ts = set(crops.values())
        if len(ts) > 1:
            logger.warning("%s: crops disagree on the number of snippets %s; using the smallest", vid, sorted(ts))
        counts[vid] = min(ts) * snippet_length
    return counts


# --------------------------------------------------------------------------- build


@dataclass
class GTVideo:
    """One written GT vector.

    Attributes:
        video_id: file stem of ``<out>/<video_id>.npy``.
        label: ``Normal`` or the class label from the annotation.
        n_frames: frame count N used (mask length for mask sources).
        length: GT length L after the tail policy.
        positives: number of ones in the vector.
        clipped_frames: annotated frames that fell outside the vector (past N, or in the
            dropped tail).
        n_frames_source: where N came from (``annotation``, ``mask``, ``frame_counts``,
            ``videos``, ``features``).
    """

    video_id: str
    label: str
    n_frames: int
    length: int
    positives: int
    clipped_frames: int
    n_frames_source: str


@dataclass
class GTSummary:
    """Result of :func:`build_ground_truth`; also written as ``gt_manifest.json``.

    Attributes:
        videos: written videos in output order (the order to concatenate them in).
        skipped: ``video_id -> reason`` for annotated/listed videos without output.
        unmatched: ids in the frame-count source that are neither annotated nor known normal.
        n_frames_mismatch: ``{video_id, annotation, source}`` where the annotation's N and an
            explicit frame-count source disagree (the source wins).
    """

    dataset: str
    source: str
    format: str
    convention: str
    tail: str
    snippet_length: int
    out: Path
    frame_count_source: dict[str, Any]
    videos: list[GTVideo] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    n_frames_mismatch: list[dict[str, Any]] = field(default_factory=list)
    not_in_list: list[str] = field(default_factory=list)

    @property
    def n_videos(self) -> int:
        return len(self.videos)

    @property
    def n_normal(self) -> int:
        return sum(v.positives == 0 for v in self.videos)

    @property
    def total_frames(self) -> int:
        return sum(v.n_frames for v in self.videos)

    @property
    def total_length(self) -> int:
        return sum(v.length for v in self.videos)

    @property
    def total_positives(self) -> int:
        return sum(v.positives for v in self.videos)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "format": self.format,
            "convention": self.convention,
            "tail": self.tail,
            "snippet_length": self.snippet_length,
            "frame_count_source": self.frame_count_source,
            "totals": {
                "videos": self.n_videos,
                "normal_videos": self.n_normal,
                "anomalous_videos": self.n_videos - self.n_normal,
                "n_frames": self.total_frames,
                "length": self.total_length,
                "positives": self.total_positives,
                "skipped": len(self.skipped),
            },
            "videos": [asdict(v) for v in self.videos],
            "skipped": [{"video_id": k, "reason": r} for k, r in self.skipped.items()],
            "unmatched_in_frame_count_source": self.unmatched,
            "n_frames_mismatch": self.n_frames_mismatch,
            "not_in_list": self.not_in_list,
        }


def _load_counts(
    frame_counts: Path | None, videos: Path | None, features: Path | None, dataset: str, snippet_length: int
) -> tuple[dict[str, int], dict[str, Any]]:
    given = [(k, p) for k, p in (("frame_counts", frame_counts), ("videos", videos), ("features", features)) if p]
    if len(given) > 1:
        raise ValueError("give at most one frame-count source (frame_counts, videos or features)")
    if not given:
        return {}, {"kind": "annotation", "path": None}
    kind, p = given[0]
    if kind == "frame_counts":
        counts = read_frame_counts(p, dataset)
    elif kind == "videos":
        counts = frame_counts_from_videos(p, dataset)
    else:
        counts = frame_counts_from_features(p, snippet_length, dataset)
    return counts, {"kind": kind, "path": str(p), "videos": len(counts)}


def _align_ids(counts: dict[str, int], wanted: set[str]) -> dict[str, int]:
    """Map source ids onto annotation ids where they differ only by case."""
    lower = {w.lower(): w for w in wanted}
    out: dict[str, int] = {}
    for k, n in counts.items():
        if k not in wanted and k.lower() in lower:
            k = lower[k.lower()]
        out.setdefault(k, n)
    return out


def _normal_by_name(video_id: str, dataset: str) -> bool:
    if dataset == "xd_violence":
        return "_label_A" in video_id
    if dataset == "shanghaitech":
        return bool(shanghaitech_is_normal(video_id))
    if dataset == "ucf_crime":
        return "Normal_Videos" in video_id
    return False


def build_ground_truth(
    dataset: str,
    annotations: Path,
    *,
    frame_counts: Path | None = None,
    videos: Path | None = None,
    features: Path | None = None,
    out: Path,
    convention: str | None = None,
    tail: str | None = None,
    include_normal_from: Path | None = None,
    snippet_length: int = 16,
    strict: bool = False,
) -> GTSummary:
    """Write one GT vector per video, ``<out>/<video_id>.npy`` (uint8), plus ``gt_manifest.json``.

    Frame counts N come from one explicit source if given (``frame_counts`` file,
    ``videos`` folder, or ``features`` folder giving ``N = T*snippet_length``), else from the
    annotation itself (UCF ``Test_Annotation.txt`` N column, mask lengths). Mask sources
    always use the mask length. A video without a frame count is skipped with a warning
    (``strict=True``: an error).

    Normal videos:

    * UCF-Crime: the test annotation lists its 150 normal videos (label ``Normal``).
    * XD-Violence: the annotation lists only the 500 violent test videos. Every video of
      the frame-count source that is not annotated and has ``_label_A`` in its name is
      written as all zeros (so point the source at *test* videos only, or pass
      ``include_normal_from``).
    * ShanghaiTech: the masks cover the 107 original test videos; the 3-digit-suffix normal
      videos of the weakly-supervised split come only from ``include_normal_from``
      (``SH_Test.txt``) and need N from a frame-count source.
    * ``include_normal_from``: a list file (:func:`vad.data.lists.read_list`: ``SH_Test.txt``,
      ``rgb_test.list``, a VadCLIP CSV, plain names). Listed videos that are not annotated
      and are normal (by name or CSV label) become all-zero GT. The list then defines the
      set and the order: annotated videos missing from it are left out (``not_in_list`` in
      the manifest; for ShanghaiTech that drops the 63 masked videos of ``SH_Train.txt``).

    Output order (the order in the manifest, for concatenation): the list order if given,
    else annotation order followed by added normal videos in source order. Files already in
    ``out`` that this build does not write are left alone.
    """
    dataset = check_dataset(dataset)
    annotations = Path(annotations)
    ann: AnnotationSet = load_annotations(dataset, annotations)
    def_conv, def_tail = DATASET_DEFAULTS[dataset]
    if ann.convention == "mask":
        conv = resolve_convention(convention) if convention else "mask"
        if conv not in ("mask", "half_open"):
            raise ValueError(f"{annotations} holds per-frame masks; convention {convention!r} does not apply")
        conv = "mask"
    else:
        conv = resolve_convention(convention or def_conv)
        if conv == "mask":
            raise ValueError(f"{annotations} holds intervals, not masks; choose an interval convention")
    tail = _check_tail(tail or def_tail)

    counts, count_info = _load_counts(frame_counts, videos, features, dataset, snippet_length)
    counts = _align_ids(counts, set(ann.ids()))

    # Decide the set and order of videos.
    entries: dict[str, VideoAnnotation] = {}
    summary_skipped: dict[str, str] = {}
    if include_normal_from is not None:
        from vad.data.lists import read_list

        listed = read_list(include_normal_from, dataset=dataset,
                           known_normal={v.video_id: v.is_normal for v in ann})
        for e in listed:
            if e.video_id in ann:
                entries[e.video_id] = ann[e.video_id]
            elif e.is_normal:
                entries[e.video_id] = VideoAnnotation(e.video_id, NORMAL)
            else:
                summary_skipped[e.video_id] = "listed as anomalous but not in the annotation file"
        not_listed = [v for v in ann.ids() if v not in entries]
        if not_listed:
            # Expected for ShanghaiTech (63 masked videos belong to SH_Train); suspicious elsewhere.
            log = logger.info if dataset == "shanghaitech" else logger.warning
            log("%d annotated video(s) are not in %s and were left out (e.g. %s)",
                len(not_listed), include_normal_from, not_listed[0])
    else:
        entries = dict(ann.videos)
    unmatched: list[str] = []
    for vid in counts:
        if vid in entries or vid in summary_skipped or vid in ann:
            continue
        if include_normal_from is None and dataset == "xd_violence" and _normal_by_name(vid, dataset):
            entries[vid] = VideoAnnotation(vid, NORMAL)
        else:
            unmatched.append(vid)

    summary = GTSummary(dataset, str(annotations), ann.format, conv, tail, snippet_length, Path(out),
                        count_info, skipped=summary_skipped, unmatched=unmatched,
                        not_in_list=[v for v in ann.ids() if v not in entries])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lower_counts = {k.lower(): k for k in unmatched}
    for vid, a in entries.items():
        src_n = counts.get(vid)
        if a.mask is not None:
            n, n_src = len(a.mask), "mask"
            if src_n is not None and src_n != n:
                summary.n_frames_mismatch.append({"video_id": vid, "annotation": n, "source": src_n})
        elif src_n is not None:
            n, n_src = src_n, count_info["kind"]
            if a.n_frames is not None and a.n_frames != src_n:
                summary.n_frames_mismatch.append({"video_id": vid, "annotation": a.n_frames, "source": src_n})
        elif a.n_frames is not None:
            n, n_src = a.n_frames, "annotation"
        else:
            reason = "no frame count"
            if count_info["kind"] != "annotation":
                reason += f" in {count_info['kind']} source"
            near = lower_counts.get(vid.lower())
            if near:
                reason += f" (similar name there: {near!r})"
            summary.skipped[vid] = reason
            continue
        labels = frame_labels(a, n, convention=conv, tail=tail, snippet_length=snippet_length)
        end = annotated_end(a, conv) if conv != "mask" else 0
        full = _full_mask(a, max(n, end), conv) if conv != "mask" else _full_mask(a, n, conv)
        clipped = int(full[min(n, len(labels)):].sum())
        save_npy_atomic(out / f"{vid}.npy", labels.astype(np.uint8, copy=False))
        summary.videos.append(GTVideo(vid, a.label, int(n), int(len(labels)), int(labels.sum()), clipped, n_src))

    if not summary.videos and entries:
        hint = "" if count_info["kind"] != "annotation" else "; give --frame-counts, --videos or --features"
        raise AnnotationError(f"no GT written: none of the {len(entries)} videos has a frame count{hint}")
    if summary.skipped:
        sample = ", ".join(list(summary.skipped)[:5])
        msg = f"{len(summary.skipped)} video(s) have no GT written: {sample}" + (
            " ..." if len(summary.skipped) > 5 else "")
        if strict:
            raise AnnotationError(msg + " (strict mode)")
        logger.warning("%s (see %s)", msg, out / MANIFEST_NAME)
    if unmatched:
        logger.warning("%d video(s) in the frame-count source are not annotated and were ignored (e.g. %s)",
                       len(unmatched), unmatched[0])
    if summary.n_frames_mismatch:
        logger.warning("%d video(s): frame count of the source differs from the annotation's",
                       len(summary.n_frames_mismatch))
    write_json_atomic(out / MANIFEST_NAME, summary.to_dict())
    logger.info("wrote %d GT vectors to %s (%d frames, %d positive)", summary.n_videos, out,
                summary.total_length, summary.total_positives)
    return summary


def load_ground_truth(folder: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read a folder written by :func:`build_ground_truth`: (ids in manifest order, arrays)."""
    import json

    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        ids = [v["video_id"] for v in json.loads(manifest.read_text())["videos"]]
    else:
        ids = sorted(p.stem for p in folder.glob("*.npy"))
    return ids, {i: np.load(folder / f"{i}.npy", allow_pickle=False) for i in ids}
