"""Wiring of the explanation stage into jobs: backends, rules and explainers built from the
``explain:`` config section (:class:`vad.config.ExplainConfig`); the parts are in :mod:`vad.explain`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from vad.config import ScoreConfig
from vad.explain import AnomalyRulerHead, EventExplainer, ExplainerConfig, ResilientBackend, RuleSet, RulerConfig
from vad.explain.backends import build_backend
from vad.heads import HeadError
from vad.heads.reference import SelfReference

logger = logging.getLogger(__name__)

EXPLAIN_HEADS = ("anomalyruler", "eventvad")


class ExplainSetupError(ValueError):
    """The explain section cannot be built (bad backend options, unreadable rules file)."""


def ruler_config(cfg: ScoreConfig) -> RulerConfig:
    """The rule and head parameters: ``explain.ruler`` plus the user's plain-language rules."""
    e = cfg.explain
    d = dict(e.ruler)
    d.setdefault("snippet", e.snippet)
    d["user_rules"] = list(d.get("user_rules") or []) + list(e.rules)
    try:
        return RulerConfig.from_dict(d)
    except HeadError as err:
        raise ExplainSetupError(f"explain.ruler: {err}") from None


def build_perception(cfg: ScoreConfig, cache_dir: Path | None, *, backend: str | None = None,
                     for_explanations: bool = True) -> ResilientBackend:
    """The configured backend behind the cache, timeout and retries. For explanations the
    offline backend's ``actions: auto`` turns I3D actions on when the weights are found; heads
    perceive every snippet, so there ``auto`` means off (set ``actions: true`` to use them)."""
    e = cfg.explain
    kind = backend or e.backend
    options = dict(e.options) if kind == e.backend else {}
    if kind == "offline" and not for_explanations and options.get("actions", False) == "auto":
        options["actions"] = False
    if kind == "offline" and for_explanations:
        options.setdefault("actions", "auto")
    try:
        inner = build_backend(kind, options)
        return ResilientBackend(inner, cache_dir=cache_dir if e.cache else None, timeout_s=e.timeout_s,
                                retries=e.retries, backoff_s=min(2.0, e.timeout_s / 10))
    except (ValueError, TypeError, OSError) as err:
        raise ExplainSetupError(f"explain backend {kind}: {err}") from None


def self_reference(cfg: ScoreConfig) -> SelfReference:
    """How a head without ``--reference`` takes its reference from each video's start (``head:``)."""
    h = cfg.head
    return SelfReference(h.reference_fraction, h.reference_seconds, h.min_reference_snippets)


def ruler_head(cfg: ScoreConfig, head_type: str, cache_dir: Path | None) -> AnomalyRulerHead:
    """An unfitted anomalyruler / eventvad head (its rules come from the reference)."""
    from vad.explain import EventVADHead

    cls = EventVADHead if head_type == "eventvad" else AnomalyRulerHead
    return cls(ruler_config(cfg), self_reference(cfg), None, build_perception(cfg, cache_dir, for_explanations=False))


def load_rules(cfg: ScoreConfig) -> RuleSet | None:
    """``explain.rules_file`` (with ``explain.rules`` added), or None to induce rules."""
    if not cfg.explain.rules_file:
        return None
    try:
        return RuleSet.load(cfg.explain.rules_file).with_user_rules(cfg.explain.rules)
    except ValueError as err:
        raise ExplainSetupError(f"explain.rules_file: {err}") from None


def induce_rules(cfg: ScoreConfig, videos: Iterable[Iterable[np.ndarray]], fps: float,
                 cache_dir: Path | None) -> RuleSet:
    """Rules induced from normal footage (per video, its blocks of frames) with the configured
    backend (a language model induces text rules; the offline backend structured ones)."""
    head = AnomalyRulerHead(ruler_config(cfg), None, None, build_perception(cfg, cache_dir))
    return head.fit_frames(videos, fps).rules  # type: ignore[return-value]


def build_explainer(cfg: ScoreConfig, rules: RuleSet | None, cache_dir: Path | None) -> EventExplainer:
    e = cfg.explain
    try:
        ecfg = ExplainerConfig(snippets=e.snippets, snippet=e.snippet)
    except ValueError as err:
        raise ExplainSetupError(str(err)) from None
    backend = build_perception(cfg, cache_dir)
    offline = build_perception(cfg, cache_dir, backend="offline") if backend.reasons_in_text else None
    return EventExplainer(backend, rules, ecfg, offline)


class RuleLearner:
    """Rules of a live camera induced from the frames it learns on: frames are pushed as they
    arrive, perceived snippet by snippet (only the perceptions are kept), and :meth:`rules`
    induces the rules once learning ends. A gap in the stream (a new ``segment``) starts a new
    snippet."""

    def __init__(self, cfg: ScoreConfig, backend: ResilientBackend, fps: float, name: str) -> None:
        self.cfg, self.backend, self.fps, self.name = cfg, backend, fps, name
        self.snippet = ruler_config(cfg).snippet
        self._frames: list[np.ndarray] = []
        self._segment: int | None = None
        self._start = 0
        self._n = 0
        self.perceptions: list = []

    def push(self, image: np.ndarray, segment: int = 0) -> None:
        from vad.explain import BackendError, PerceptionRequest

        if self._segment is not None and segment != self._segment:
            self._frames = []
        if not self._frames:
            self._start = self._n
        self._segment = segment
        self._frames.append(image)
        self._n += 1
        if len(self._frames) == self.snippet:
            frames, self._frames = np.stack(self._frames), []
            try:
                self.perceptions.append(self.backend.perceive(
                    PerceptionRequest(f"{self.name}-learning", self._start, self._start + len(frames) - 1,
                                      self.fps, frames)))
            except BackendError as err:
                logger.warning("%s: a learning snippet was not perceived: %s", self.name, err)

    def rules(self, log: logging.Logger = logger) -> RuleSet | None:
        from vad.explain.rules import induce

        cfg = ruler_config(self.cfg)
        try:
            rules = induce(self.perceptions, cfg.induction, self.backend, cfg.user_rules)
        except Exception as err:  # noqa: BLE001 - no rules: explanations give the figures only
            log.warning("no rules learned (%s): explanations give the figures only", err)
            return None
        log.info("learned %d anomaly rules from %d snippets", len(rules.anomaly), len(self.perceptions))
        return rules
