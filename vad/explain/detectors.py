"""The two training-free methods as heads: ``anomalyruler`` and ``eventvad`` (frames in, one
score per frame out), behind the one head contract, so ``vad score --head anomalyruler`` and
``vad evaluate`` treat them like any head.

* :class:`AnomalyRulerHead`: the video is cut into snippets of ``snippet`` frames; each is
  perceived (:mod:`vad.explain.perception`, the offline backend by default), checked against
  the rules induced from the reference footage (:mod:`vad.explain.rules`), and the per-snippet
  decisions are smoothed as in the paper. ``score``: ``strength`` (default) gives each snippet
  how far it broke its strongest rule (observed/limit, below 1 when no rule broke: how close it
  came), EMA-smoothed, zeroed where robust reasoning rejected the anomaly; ``paper`` gives the
  paper's score, the second EMA of the voted 0/1 decisions (coarse: few distinct values).
* :class:`EventVADHead`: per-frame descriptors (a small grey thumbnail and the motion energy
  of the 3 x 3 regions) are cut into events by :func:`vad.explain.eventvad.find_boundaries`;
  each event is judged by its snippets' perceptions under the same rules (describe: the
  perceptions; decide: the strongest broken rule; explain: the violations), and every frame
  of the event gets the event's score.

Both need normal reference footage for their rules: ``--reference``, or the video's own start
(``head.reference_fraction`` / ``reference_seconds``, as the scene head). Both score a whole
video at once (``paper`` smoothing and event cuts need the whole curve), so they do not stream;
for live cameras the rules explain the monitor's events instead (``monitor`` with ``--explain``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from vad.explain.eventvad import EventVADConfig, find_boundaries, segments
from vad.explain.motion import MotionConfig
from vad.explain.offline import OfflineBackend
from vad.explain.perception import BackendError, Perception, PerceptionBackend, PerceptionRequest
from vad.explain.rules import InductionConfig, RuleSet, SmoothingConfig, deduce, ema, induce, smooth_decisions
from vad.fsutil import atomic_path
from vad.heads.base import Head, HeadError, HeadInput, HeadScores, StreamingScorer, UnitTiming, write_head_meta
from vad.heads.reference import SelfReference

logger = logging.getLogger(__name__)

__all__ = ["AnomalyRulerHead", "EventVADHead", "RulerConfig", "iter_snippets_of_blocks"]

SCORES = ("strength", "paper")


@dataclass(frozen=True)
class RulerConfig:
    snippet: int = 8  # frames per perceived snippet: 0.8 s at 10 fps
    score: str = "strength"
    recheck: bool = True
    user_rules: tuple[str, ...] = ()
    induction: InductionConfig = field(default_factory=InductionConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    eventvad: EventVADConfig = field(default_factory=lambda: EventVADConfig(window_s=1.0))
    both_directions: bool = True  # eventvad: also cut where a sustained change ends (see event_cuts)
    min_reference_snippets: int = 4

    def __post_init__(self) -> None:
        if self.snippet < 2:
            raise HeadError("snippet must be >= 2 frames")
        if self.score not in SCORES:
            raise HeadError(f"score must be one of {SCORES}, got {self.score!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RulerConfig:
        d = dict(d or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise HeadError(f"unknown explain head keys {sorted(unknown)} (known: {sorted(known)})")
        try:
            for key, sub in (("induction", InductionConfig), ("smoothing", SmoothingConfig), ("motion", MotionConfig),
                             ("eventvad", EventVADConfig)):
                if isinstance(d.get(key), dict):
                    value = dict(d[key])
                    if key == "induction" and "fields" in value:
                        value["fields"] = tuple(value["fields"])
                    d[key] = sub(**value)
            if "user_rules" in d:
                d["user_rules"] = tuple(d["user_rules"] or ())
            return cls(**d)
        except (TypeError, ValueError) as err:
            raise HeadError(f"explain head config: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["user_rules"] = list(self.user_rules)
        d["induction"]["fields"] = list(self.induction.fields)
        return d


def iter_snippets_of_blocks(blocks: Iterable[np.ndarray], length: int) -> Iterator[tuple[int, np.ndarray]]:
    """Consecutive non-overlapping snippets (start frame, frames) of ``length`` frames from blocks
    of frames; the last, shorter one is kept when it has at least 2 frames (it is scored too)."""
    buf: list[np.ndarray] = []
    start = 0
    for block in blocks:
        for frame in np.asarray(block):
            buf.append(frame)
            if len(buf) == length:
                yield start, np.stack(buf)
                start += length
                buf = []
    if buf:  # a single trailing frame is too few to perceive: perceive_blocks gives it no evidence
        yield start, np.stack(buf)


class AnomalyRulerHead(Head):
    """See the module docstring."""

    type_name = "anomalyruler"

    def __init__(self, cfg: RulerConfig | None = None, policy: SelfReference | None = None,
                 rules: RuleSet | None = None, backend: PerceptionBackend | None = None) -> None:
        self.cfg = cfg or RulerConfig()
        self.policy = policy
        self.rules = rules
        self.backend = backend or OfflineBackend(self.cfg.motion)

    @property
    def input(self) -> HeadInput:
        return HeadInput(kind="frames", clip_length=self.cfg.snippet, color="rgb")

    @property
    def lookahead(self) -> int:
        return -1

    @property
    def needs_fit(self) -> bool:
        return True

    @property
    def fitted(self) -> bool:
        return self.rules is not None

    # -- perception ------------------------------------------------------------------------
    def perceive_blocks(self, blocks: Iterable[np.ndarray], fps: float, source_id: str) -> list[Perception]:
        out = []
        for start, frames in iter_snippets_of_blocks(blocks, self.cfg.snippet):
            if len(frames) < 2:
                out.append(Perception("", {}, self.backend.name, start, start))
                continue
            out.append(self.backend.perceive(PerceptionRequest(source_id, start, start + len(frames) - 1, fps, frames)))
        return out

    # -- fitting ---------------------------------------------------------------------------
    def fit_frames(self, videos: Iterable[Iterable[np.ndarray]], fps: float = 10.0) -> AnomalyRulerHead:
        """Induce the rules from normal footage (per video, its blocks of frames)."""
        perceptions: list[Perception] = []
        try:
            for v, blocks in enumerate(videos):
                perceptions += [p for p in self.perceive_blocks(blocks, fps, f"reference-{v}") if p.evidence]
        except BackendError as err:
            raise HeadError(f"perceiving the reference failed: {err}") from None
        if len(perceptions) < self.cfg.min_reference_snippets:
            raise HeadError(f"the reference has {len(perceptions)} snippet(s) of {self.cfg.snippet} frames; the "
                            f"{self.type_name} head needs at least {self.cfg.min_reference_snippets} "
                            "(give longer --reference footage)")
        try:
            self.rules = induce(perceptions, self.cfg.induction, self.backend, self.cfg.user_rules)
        except BackendError as err:
            raise HeadError(f"rule induction failed: {err}") from None
        logger.info("%s: %d normal and %d anomaly rules induced from %d reference snippets", self.type_name,
                    len(self.rules.normal), len(self.rules.anomaly), len(perceptions))
        return self

    def self_fitted(self, blocks: Iterable[np.ndarray], fps: float = 10.0) -> AnomalyRulerHead:
        return type(self)(self.cfg, self.policy, None, self.backend).fit_frames([blocks], fps)

    def reference_frames(self, n_frames: int | None, fps: float) -> int:
        if self.policy is None:
            raise HeadError(f"the {self.type_name} head has no rules: give --reference footage of this camera")
        return self.policy.frames(fps, n_frames, self.cfg.min_reference_snippets * self.cfg.snippet)

    # -- scoring ---------------------------------------------------------------------------
    def _snippet_scores(self, perceptions: list[Perception]) -> np.ndarray:
        assert self.rules is not None
        decided = [deduce(p, self.rules) if p.evidence else ([], 0.0) for p in perceptions]
        strength = np.array([s for _, s in decided])
        decisions = np.array([1.0 if v else 0.0 for v, _ in decided])

        def recheck(i: int) -> bool:
            # robust reasoning, offline: a provisional anomaly stands when its own snippet or a
            # neighbour broke a rule (a vote that only spread from elsewhere is dropped)
            if not self.cfg.recheck:
                return True
            lo, hi = max(0, i - 1), min(len(decisions), i + 2)
            return bool(decisions[lo:hi].any())

        voted, paper, _ = smooth_decisions(decisions, self.cfg.smoothing, recheck)
        if self.cfg.score == "paper":
            return paper
        rejected = (decisions > 0) & (voted == 0)
        return ema(np.where(rejected, np.minimum(strength, 1.0), strength), self.cfg.smoothing.ema_alpha)

    def _frame_scores(self, perceptions: list[Perception], per_snippet: np.ndarray) -> np.ndarray:
        n = perceptions[-1].end_frame + 1 if perceptions else 0
        out = np.zeros(n, np.float32)
        for p, s in zip(perceptions, per_snippet):
            out[p.start_frame:p.end_frame + 1] = s
        return out

    def _perceive_video(self, blocks: Iterable[np.ndarray], fps: float, source_id: str) -> list[Perception]:
        """Every snippet of a video perceived; HeadError without rules, frames or a working backend."""
        if self.rules is None:
            raise HeadError(f"the {self.type_name} head has no rules (give --reference footage or fit it on the "
                            "video's start)")
        try:
            perceptions = self.perceive_blocks(blocks, fps, source_id)
        except BackendError as err:
            raise HeadError(f"perception failed: {err}") from None
        if not perceptions:
            raise HeadError("no frames to score")
        return perceptions

    def score_frame_blocks(self, blocks: Iterable[np.ndarray], fps: float = 10.0, source_id: str = "video"
                           ) -> HeadScores:
        perceptions = self._perceive_video(blocks, fps, source_id)
        return HeadScores(self._frame_scores(perceptions, self._snippet_scores(perceptions)))

    def score_video(self, units: np.ndarray, timing: UnitTiming) -> HeadScores:
        return self.score_frame_blocks([np.asarray(units)], timing.fps)

    def stream(self, timing: UnitTiming, n_units: int | None = None) -> StreamingScorer:
        raise HeadError(f"the {self.type_name} head scores whole videos (its smoothing needs the whole curve); "
                        "for live cameras use the default head and `explain` for the events")

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from safetensors.numpy import save_file

        if self.rules is None:
            raise HeadError(f"an unfitted {self.type_name} head has nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "head.safetensors") as tmp:  # the schema's file; rules are text
            save_file({"version": np.zeros(1, np.int8)}, str(tmp))
        self.rules.save(directory / "rules.yaml")
        write_head_meta(directory, self.meta(self.cfg.to_dict(), rules="rules.yaml", backend=self.backend.identity()))
        return directory

    @classmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any], device: str = "cpu") -> AnomalyRulerHead:
        cfg = RulerConfig.from_dict(meta["config"])
        try:
            rules = RuleSet.load(Path(directory) / meta.get("rules", "rules.yaml"))
        except ValueError as err:
            raise HeadError(str(err)) from None
        return cls(cfg, None, rules)


class FrameDescriptors:
    """Per frame: a z-normalised grey thumbnail and the 3 x 3 regions' mean frame difference
    (scaled to the thumbnail's spread), the cheap stand-in for EventVAD's CLIP + flow features.
    Blocks are pushed as they are decoded; only the small descriptors are kept."""

    def __init__(self, thumb: tuple[int, int] = (16, 12)) -> None:
        self.thumb = thumb
        self.rows: list[np.ndarray] = []
        self._prev: np.ndarray | None = None

    def push(self, block: np.ndarray) -> None:
        w, h = self.thumb
        for frame in np.asarray(block):
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            small = cv2.resize(grey, (w * 3, h * 3), interpolation=cv2.INTER_AREA).astype(np.float32)
            t = cv2.resize(small, self.thumb, interpolation=cv2.INTER_AREA).reshape(-1)
            t = (t - t.mean()) / (t.std() + 1e-3)
            diff = np.zeros(9, np.float32) if self._prev is None else cv2.resize(
                np.abs(small - self._prev), (3, 3), interpolation=cv2.INTER_AREA).reshape(-1) / 8.0
            self._prev = small
            self.rows.append(np.concatenate([t, diff]))

    def array(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, self.thumb[0] * self.thumb[1] + 9), np.float32)


def frame_descriptors(blocks: Iterable[np.ndarray], thumb: tuple[int, int] = (16, 12)) -> np.ndarray:
    """:class:`FrameDescriptors` of a whole video's blocks."""
    desc = FrameDescriptors(thumb)
    for block in blocks:
        desc.push(block)
    return desc.array()


def event_cuts(desc: np.ndarray, fps: float, cfg: EventVADConfig, both_directions: bool = True) -> np.ndarray:
    """Event boundaries of per-frame descriptors. The change ratio reacts to *rises* of the change
    signal, so a sustained change (people speeding up) gets a cut where it starts but none where
    it ends; ``both_directions`` (our addition) also cuts the time-reversed sequence, where that
    end is a rise, and keeps both sets of cuts (closer than ``min_gap_s``: the earlier one)."""
    n = len(desc)
    if n < 2:
        return np.zeros(0, np.int64)
    cuts = list(find_boundaries(desc, fps, cfg))
    if both_directions:
        cuts += [n - int(b) for b in find_boundaries(np.ascontiguousarray(desc[::-1]), fps, cfg)]
    gap = max(1, int(round(cfg.min_gap_s * fps)))
    kept: list[int] = []
    for c in sorted(set(int(c) for c in cuts if 0 < c < n)):
        if not kept or c - kept[-1] >= gap:
            kept.append(c)
    return np.asarray(kept, np.int64)


class EventVADHead(AnomalyRulerHead):
    """See the module docstring."""

    type_name = "eventvad"

    def score_frame_blocks(self, blocks: Iterable[np.ndarray], fps: float = 10.0, source_id: str = "video"
                           ) -> HeadScores:
        desc = FrameDescriptors()

        def described() -> Iterator[np.ndarray]:  # one decoding pass feeds both (no frames kept)
            for block in blocks:
                desc.push(block)
                yield block

        perceptions = self._perceive_video(described(), fps, source_id)
        d = desc.array()
        n = len(d)
        cuts = event_cuts(d, fps, self.cfg.eventvad, self.cfg.both_directions)
        strength = np.array([deduce(p, self.rules)[1] if p.evidence else 0.0 for p in perceptions])
        out = np.zeros(n, np.float32)
        snip = self.cfg.snippet  # perceptions are consecutive snippets of this many frames from frame 0
        for a, b in segments(cuts, n):
            out[a:b] = float(strength[a // snip:(b - 1) // snip + 1].max())
        return HeadScores(out)
