"""The optional explanation stage: perception backends, AnomalyRuler-style rules, EventVAD-style
event cuts, explanations for events, and the two training-free methods as heads.

* :mod:`vad.explain.perception`: the backend interface, result cache, timeouts and retries;
* :mod:`vad.explain.offline`, :mod:`vad.explain.backends`: the offline default (motion figures,
  optional I3D actions and a ``cv2.dnn`` object detector), transformers, OpenAI-compatible HTTP;
* :mod:`vad.explain.rules`: rule induction, aggregation, deduction, perception smoothing;
* :mod:`vad.explain.eventvad`: event boundaries from a time-decaying similarity graph;
* :mod:`vad.explain.explainer`: ``explanation`` / ``evidence`` for events;
* :mod:`vad.explain.detectors`: the ``anomalyruler`` and ``eventvad`` heads (registered with
  :func:`vad.heads.registry.register_head_type` on import).
"""

from vad.explain.detectors import AnomalyRulerHead, EventVADHead, RulerConfig
from vad.explain.explainer import EventExplainer, ExplainerConfig, explain_all
from vad.explain.perception import BackendError, Perception, PerceptionBackend, PerceptionRequest, ResilientBackend
from vad.explain.rules import RuleSet
from vad.heads.registry import register_head_type

register_head_type(AnomalyRulerHead)
register_head_type(EventVADHead)

__all__ = ["AnomalyRulerHead", "BackendError", "EventExplainer", "EventVADHead", "ExplainerConfig", "Perception",
           "PerceptionBackend", "PerceptionRequest", "ResilientBackend", "RuleSet", "RulerConfig", "explain_all"]
