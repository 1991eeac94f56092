"""Heads turn snippet features into anomaly scores.

Importing this package registers the trainable heads (``mil``, ``gsmoe``) with ``build_head``.
"""

from vad.heads.base import FeatureBatch, build_head, load_head, save_head, segment_features
from vad.heads.gsmoe import GSMoEConfig, GSMoEHead, cluster_classes, gaussian_splat_targets, tgs_loss
from vad.heads.mil import MILConfig, MILHead, mil_ranking_loss
from vad.heads.reference import ReferenceHead, ReferenceHeadConfig, ledoit_wolf

__all__ = [
    "FeatureBatch",
    "GSMoEConfig",
    "GSMoEHead",
    "MILConfig",
    "MILHead",
    "ReferenceHead",
    "ReferenceHeadConfig",
    "build_head",
    "cluster_classes",
    "gaussian_splat_targets",
    "ledoit_wolf",
    "load_head",
    "mil_ranking_loss",
    "save_head",
    "segment_features",
    "tgs_loss",
]
