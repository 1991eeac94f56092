"""Benchmark ground truth and dataset lists.

* :mod:`vad.data.annotations`: parsers for the UCF-Crime, XD-Violence, Ped2, Avenue and
  ShanghaiTech annotation files into one typed form.
* :mod:`vad.data.ground_truth`: per-frame label vectors under explicit index conventions
  and tail policies; ``build_ground_truth`` writes them per video with a manifest.
* :mod:`vad.data.lists`: readers for RTFM/UR-DMU/XDVioDet feature lists, VadCLIP CSVs and
  plain name lists.
"""

from vad.data.annotations import (
    DATASETS,
    NORMAL,
    AnnotationError,
    AnnotationSet,
    VideoAnnotation,
    load_annotations,
    normalize_video_id,
    parse_frame_csv,
    parse_mat,
    parse_shanghaitech,
    parse_ucf_crime,
    parse_xd_violence,
    read_id_list,
    xd_codes,
)
from vad.data.ground_truth import (
    CONVENTIONS,
    DATASET_DEFAULTS,
    TAILS,
    GTSummary,
    GTVideo,
    build_ground_truth,
    frame_counts_from_features,
    frame_counts_from_videos,
    frame_labels,
    interval_mask,
    load_ground_truth,
    merge_intervals,
    read_frame_counts,
    resolve_convention,
    tail_length,
)
from vad.data.lists import ListEntry, class_from_name, is_normal_name, read_list, split_feature_name

__all__ = [
    "CONVENTIONS",
    "DATASETS",
    "DATASET_DEFAULTS",
    "NORMAL",
    "TAILS",
    "AnnotationError",
    "AnnotationSet",
    "GTSummary",
    "GTVideo",
    "ListEntry",
    "VideoAnnotation",
    "build_ground_truth",
    "class_from_name",
    "frame_counts_from_features",
    "frame_counts_from_videos",
    "frame_labels",
    "interval_mask",
    "is_normal_name",
    "load_annotations",
    "load_ground_truth",
    "merge_intervals",
    "normalize_video_id",
    "parse_frame_csv",
    "parse_mat",
    "parse_shanghaitech",
    "parse_ucf_crime",
    "parse_xd_violence",
    "read_frame_counts",
    "read_id_list",
    "read_list",
    "resolve_convention",
    "split_feature_name",
    "tail_length",
    "xd_codes",
]
