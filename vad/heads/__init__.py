"""Heads turn units (snippet features, or frames) into anomaly scores, behind one contract.

* :mod:`vad.heads.base`: the :class:`Head` contract, what a head consumes, streaming scorers,
  the ``head.json`` schema.
* :mod:`vad.heads.registry`: the list of head types and :func:`load_head`.
* :mod:`vad.heads.scene`: the label-free default: per-region speed and static-appearance
  channels calibrated on the camera's normal footage (frames in).
* :mod:`vad.heads.reference`: the label-free per-camera reference head on features (numpy core + head).
* :mod:`vad.heads.modules`, :mod:`vad.heads.mil`, :mod:`vad.heads.gsmoe`, :mod:`vad.heads.rtfm`:
  trainable torch cores;
  :mod:`vad.heads.trained`: the head contract around a trained core.
"""

from vad.heads.base import Head, HeadError, HeadInput, HeadScores, StreamingScorer, UnitTiming
from vad.heads.frame_predictor import FramePredictionHead
from vad.heads.gsmoe import GSMoEConfig, GSMoEHead, cluster_classes, gaussian_splat_targets, tgs_loss
from vad.heads.mil import MILConfig, MILHead, mil_ranking_loss
from vad.heads.modules import FeatureBatch, build_module, load_module, save_module, segment_features
from vad.heads.reference import ReferenceFeatureHead, ReferenceHead, ReferenceHeadConfig, SelfReference, ledoit_wolf
from vad.heads.registry import HEAD_TYPES, load_head
from vad.heads.rtfm import RTFMConfig, RTFMHead, rtfm_loss
from vad.heads.scene import SceneConfig, SceneHead
from vad.heads.trained import TrainedHead, score_snippets

__all__ = [
    "HEAD_TYPES",
    "FeatureBatch",
    "FramePredictionHead",
    "GSMoEConfig",
    "GSMoEHead",
    "Head",
    "HeadError",
    "HeadInput",
    "HeadScores",
    "MILConfig",
    "MILHead",
    "RTFMConfig",
    "RTFMHead",
    "ReferenceFeatureHead",
    "ReferenceHead",
    "ReferenceHeadConfig",
    "SceneConfig",
    "SceneHead",
    "SelfReference",
    "StreamingScorer",
    "TrainedHead",
    "UnitTiming",
    "build_module",
    "cluster_classes",
    "gaussian_splat_targets",
    "ledoit_wolf",
    "load_head",
    "load_module",
    "mil_ranking_loss",
    "rtfm_loss",
    "save_module",
    "score_snippets",
    "segment_features",
    "tgs_loss",
]
