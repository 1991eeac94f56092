"""Explanations for events: a few snippets around an event's peak are perceived, checked
against the camera's rules, and the event gets ``explanation`` (one or two sentences),
``evidence`` (rules broken, motion figures, actions, objects, frames used) or, when the backend
fails, ``explanation_error`` -- the event itself is never lost or changed otherwise.

With the offline backend the sentences are composed from the strongest broken rule and its
measured figures ("Fast motion in the centre region: 7.1 px/frame, 1.9x the fastest seen in the
reference (3.8 px/frame), heading left."). With a language-model backend the model decides and
explains (:func:`vad.explain.rules.deduce_text`, with its recheck), and the offline figures of
the same snippets are kept in the evidence when they were computed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from vad.events.tracker import Event
from vad.explain.motion import region_of_box
from vad.explain.perception import BackendError, Perception, PerceptionBackend, PerceptionRequest
from vad.explain.rules import RuleSet, Violation, deduce, deduce_text

logger = logging.getLogger(__name__)

__all__ = ["EventExplainer", "ExplainerConfig", "describe_violation", "explain_all"]


@dataclass(frozen=True)
class ExplainerConfig:
    snippets: int = 3  # snippets perceived per event, centred on its peak
    snippet: int = 8  # frames per snippet
    recheck: bool = True  # language-model backends: re-ask about a provisional anomaly

    def __post_init__(self) -> None:
        if self.snippets < 1 or self.snippet < 2:
            raise ValueError("explain: snippets >= 1 and snippet >= 2 frames")


_PLACE = {"frame": "the whole picture"}


def _place(field: str) -> str:
    parts = field.split(".")
    if len(parts) >= 3 and parts[1] == "regions":
        return f"the {parts[2]} region"
    return _PLACE.get(parts[1] if len(parts) > 1 else "", "the picture")


def describe_violation(v: Violation, p: Perception) -> str:
    """One sentence about a broken rule with its figures."""
    f = v.field
    if f.endswith(".speed"):
        region = p.evidence.get("motion", {}).get("regions", {}).get(f.split(".")[2], {}) if ".regions." in f \
            else p.evidence.get("motion", {}).get("frame", {})
        heading = f", heading {region['direction']}" if region.get("direction") else ""
        return (f"Fast motion in {_place(f)}: {float(v.observed):.2f} px/frame, {v.ratio:.1f}x the fastest seen in "
                f"the reference ({float(v.limit):.2f} px/frame){heading}.")
    if f.endswith(".energy"):
        return (f"Unusually much motion in {_place(f)}: {100 * float(v.observed):.0f}% of it moving, {v.ratio:.1f}x "
                f"the reference's most ({100 * float(v.limit):.0f}%).")
    if f.endswith(".direction"):
        allowed = " or ".join(v.limit) if v.limit else "not at all"
        return f"Motion heading {v.observed} in {_place(f)}, where the reference only moved {allowed}."
    if f.endswith("scene_change"):
        return (f"The picture changed by {float(v.observed):.1f} grey levels within {p.end_frame - p.start_frame + 1} "
                f"frames, {v.ratio:.1f}x the most seen in the reference ({float(v.limit):.1f}): the camera moved, the "
                "light changed or the view was blocked.")
    if f == "actions.top":
        acts = p.evidence.get("actions") or [{}]
        return (f"The activity looks like '{v.observed}' (p {acts[0].get('p', 0):.2f}), never the main activity in "
                "the reference.")
    if f.startswith("objects."):
        return (f"{float(v.observed):.0f} {f.split('.', 1)[1]} in view, more than the reference's most "
                f"({float(v.limit):.0f}).")
    if f == "objects":
        return f"Objects never seen in the reference: {', '.join(v.observed)}."
    return f"It matches the rule '{v.text}' ({', '.join(map(str, v.observed))})."


class EventExplainer:
    """Explains events of one camera (see the module doc). ``rules``: the camera's rules (None:
    the explanation reports the figures without rule checks). ``backend`` should be a
    :class:`~vad.explain.perception.ResilientBackend` (timeouts, retries, cache)."""

    def __init__(self, backend: PerceptionBackend, rules: RuleSet | None, cfg: ExplainerConfig = ExplainerConfig(),
                 offline: PerceptionBackend | None = None) -> None:
        self.backend, self.rules, self.cfg = backend, rules, cfg
        # offline figures beside a language model's words (None: only the backend's own evidence)
        self.offline = offline
        self.errors = 0
        self.explained = 0

    def window(self, event: Event, n_frames: int | None = None) -> tuple[int, int]:
        """Frames [start, stop) to read for ``event``: ``snippets`` snippets centred on its peak,
        inside the video."""
        span = self.cfg.snippets * self.cfg.snippet
        start = max(0, event.peak_frame - span // 2)
        stop = start + span
        if n_frames is not None and stop > n_frames:
            stop = n_frames
            start = max(0, stop - span)
        return start, stop

    def _perceive(self, backend: PerceptionBackend, frames: np.ndarray, first: int, fps: float,
                  source_id: str) -> list[Perception]:
        out = []
        for a in range(0, len(frames), self.cfg.snippet):
            chunk = frames[a:a + self.cfg.snippet]
            if len(chunk) < 2:
                continue
            out.append(backend.perceive(PerceptionRequest(source_id, first + a, first + a + len(chunk) - 1, fps, chunk)))
        if not out:
            raise BackendError(f"{len(frames)} frame(s) around the event: too few to perceive")
        return out

    def explain(self, event: Event, frames: np.ndarray, first_frame: int, fps: float, source_id: str = "",
                context: dict[str, Any] | None = None) -> Event:
        """``event`` with its explanation; ``frames``: uint8 RGB frames from ``first_frame`` on
        (:meth:`window`); ``context``: what the head said (e.g. ``{"channel": "speed"}``), added to
        the evidence. Never raises for a backend failure: it becomes ``explanation_error``."""
        try:
            return self._explain(event, np.asarray(frames), first_frame, fps, source_id or event.source_id,
                                 dict(context or {}))
        except BackendError as err:
            self.errors += 1
            logger.warning("event %s: no explanation: %s", event.event_id, err)
            return replace(event, explanation_error=str(err))

    def _explain(self, event: Event, frames: np.ndarray, first: int, fps: float, source_id: str,
                 context: dict[str, Any]) -> Event:
        perceptions = self._perceive(self.backend, frames, first, fps, source_id)
        figures = perceptions
        if self.offline is not None and self.backend.reasons_in_text:
            figures = self._perceive(self.offline, frames, first, fps, source_id)
        peak = min(range(len(figures)), key=lambda i: abs((figures[i].start_frame + figures[i].end_frame) / 2
                                                              - event.peak_frame))
        evidence: dict[str, Any] = {**context, "backend": self.backend.identity(),
                                    "frames": [[p.start_frame, p.end_frame] for p in perceptions],
                                    "peak_score": round(float(event.peak_score), 4)}
        if event.region is not None:
            evidence["region_name"] = region_of_box(event.region)
        broken: list[tuple[Violation, Perception]] = []
        strength = 0.0
        if self.rules is not None and figures[peak].evidence.get("motion") is not None:
            for p in figures:
                vs, s = deduce(p, self.rules)
                strength = max(strength, s)
                broken += [(v, p) for v in vs]
            broken.sort(key=lambda vp: -vp[0].ratio)
            evidence["rules_broken"] = [{**v.to_dict(), "frames": [p.start_frame, p.end_frame]} for v, p in broken[:5]]
            evidence["strength"] = round(strength, 4)
        fp = figures[peak].evidence
        if "motion" in fp:
            evidence["motion"] = {"frame": fp["motion"]["frame"], "scene_change": fp["motion"]["scene_change"],
                                  "analysis_size": fp["motion"]["analysis_size"],
                                  "regions": {k: r for k, r in fp["motion"]["regions"].items() if r["direction"]}}
        for key in ("actions", "objects"):
            if key in fp:
                evidence[key] = fp[key]
        if self.backend.reasons_in_text:
            evidence["descriptions"] = [p.text for p in perceptions]
            text = perceptions[min(peak, len(perceptions) - 1)].text
            if self.rules is not None:
                anomalous, reason = deduce_text(perceptions[min(peak, len(perceptions) - 1)], self.rules, self.backend,
                                                [frames[len(frames) // 2]], self.cfg.recheck)
                evidence["decision"] = "anomaly" if anomalous else "normal"
                text = f"{reason} {text}".strip() if anomalous else f"Judged normal by the model: {reason}"
        elif broken:
            seen: set[str] = set()
            sentences = []
            for v, p in broken:
                if v.rule_id in seen:
                    continue
                seen.add(v.rule_id)
                sentences.append(describe_violation(v, p))
                if len(sentences) == 2:
                    break
            text = " ".join(sentences)
        else:
            text = self._unexplained(figures[peak], strength, context, event)
        self.explained += 1
        return replace(event, explanation=text, evidence=evidence)

    @staticmethod
    def _unexplained(p: Perception, strength: float, context: dict[str, Any], event: Event) -> str:
        channel = context.get("channel")
        lead = {"static": "Something stayed still where the reference footage had no such still appearance "
                          "(static channel)",
                "speed": "Motion faster than at this height in the reference (speed channel)"}.get(
            str(channel), f"The score peaked at {event.peak_score:.2f}")
        motion = p.evidence.get("motion")
        if motion is None:
            return f"{lead}. {p.text}".strip()
        frame = motion["frame"]
        rule = (f", the closest any rule came to breaking was {strength:.2f}x its limit" if strength else "")
        if frame["direction"] is None:
            return f"{lead}; nothing moved around the peak{rule}."
        return (f"{lead}; no rule of the reference was broken{rule}. Around the peak {100 * frame['energy']:.0f}% of "
                f"the picture moved, fastest at {frame['speed']:.2f} px/frame.")

    def summary(self) -> dict[str, int]:
        return {"explained": self.explained, "errors": self.errors}


def explain_all(explainer: EventExplainer, events: Sequence[Event], read: Any, fps: float, n_frames: int | None,
                source_id: str, contexts: Sequence[dict[str, Any]] | None = None) -> list[Event]:
    """Explain ``events`` of one video; ``read(start, stop)`` returns its frames [start, stop).
    A failed read becomes the event's ``explanation_error`` too."""
    out = []
    for i, ev in enumerate(events):
        start, stop = explainer.window(ev, n_frames)
        try:
            frames = read(start, stop)
        except Exception as err:  # noqa: BLE001 - an unreadable window loses only the explanation
            explainer.errors += 1
            out.append(replace(ev, explanation_error=f"cannot read frames {start}-{stop}: {err}"))
            continue
        out.append(explainer.explain(ev, frames, start, fps, source_id, contexts[i] if contexts else None))
    return out
