"""The one contract every head meets, and the one ``head.json`` schema they are saved under.

A head turns *units* into anomaly scores, one score per unit. A unit is what the head
consumes, declared by :class:`HeadInput`:

* ``kind="features"``: one snippet's features of a named extractor, shaped (n_crops, dim)
  (scores are averaged over crops); a whole video is (n_crops, n_snippets, dim).
* ``kind="frames"``: one clip of raw frames (``clip_length`` frames of ``size``, ``color``).

Every head offers

* :meth:`Head.score_video`: batch scoring of a whole video (:class:`HeadScores`);
* :meth:`Head.stream`: a :class:`StreamingScorer` whose ``update(unit)`` returns the scores of
  the units it can decide now (a head with ``lookahead`` k answers k units late), ``finish()``
  the rest at the end of the source, ``reset()`` after a gap;
* ``causal`` / ``lookahead``: whether a score depends on later units, and on how many;
* ``needs_fit``: the head models normality from reference footage of the camera (it is
  fitted with :meth:`Head.fit`; an unfitted one may fit itself on each video's start);
* :meth:`Head.save`; :func:`vad.heads.registry.load_head` reads any saved head.

Saved heads are a directory with ``head.json`` (this module's schema, below) and
``head.safetensors`` (arrays; nothing executes on load)::

    {"format": "vad-head", "version": 2, "type": "<registered name>",
     "consumes": {"kind": "features", "extractor": "i3d" | null, "dim": 1024, ...},
     "causal": true, "lookahead": 0, "needs_fit": false,
     "config": {...}, ...type-specific keys...}

Files written before the schema had a version (``{"type", "config", ...}``) load too.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np

from vad.fsutil import write_json_atomic

__all__ = [
    "HEAD_FORMAT",
    "Head",
    "HeadError",
    "HeadInput",
    "HeadScores",
    "StreamingScorer",
    "UnitTiming",
    "read_head_meta",
    "write_head_meta",
]

HEAD_FORMAT = "vad-head"
HEAD_VERSION = 2


class HeadError(ValueError):
    """A head cannot be built, loaded or applied to these inputs (the message says why)."""


@dataclass(frozen=True)
class HeadInput:
    """What a head consumes. ``extractor``/``dim`` for features; the rest for frames."""

    kind: str = "features"  # "features" | "frames"
    extractor: str | None = None  # extractor name ("i3d", "clip"), None = not recorded
    dim: int | None = None
    clip_length: int | None = None
    size: tuple[int, int] | None = None  # (width, height)
    color: str | None = None  # "rgb" | "gray"

    def __post_init__(self) -> None:
        if self.kind not in ("features", "frames"):
            raise HeadError(f"head input kind must be 'features' or 'frames', got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadInput:
        d = dict(d)
        if d.get("size") is not None:
            d["size"] = tuple(d["size"])
        return cls(**d)

    def check_features(self, dim: int, extractor: str | None = None) -> None:
        """Raise HeadError when features of ``dim`` (from ``extractor``) are not what it takes."""
        if self.kind != "features":
            raise HeadError("this head scores raw frames, not snippet features")
        if self.dim is not None and dim != self.dim:
            raise HeadError(f"features are {dim}-d but the head was made for {self.dim}-d features")
        if self.extractor and extractor and extractor != self.extractor:
            raise HeadError(f"the head was made for {self.extractor} features, these are {extractor} features")


@dataclass(frozen=True)
class UnitTiming:
    """How units map to time: the video's frame rate and the frames between unit starts."""

    fps: float
    stride: int = 16


@dataclass
class HeadScores:
    """Batch scores of one video: one float32 score per unit, and how many leading units served
    as the head's own reference (a self-fitted reference head; None otherwise)."""

    scores: np.ndarray
    reference_units: int | None = None
    #: frame heads that localise: per unit, where in the frame it was decided, (x0, y0, x1, y1)
    #: as fractions of the width and height (NaN rows: nowhere); and which channel decided it
    regions: np.ndarray | None = None
    channels: np.ndarray | None = None
    channel_names: tuple[str, ...] | None = None  # what the values of ``channels`` index


class StreamingScorer(ABC):
    """Scores units as they arrive. Concatenating every ``update`` and ``finish`` result gives
    the batch scores of the same units (to float rounding)."""

    @abstractmethod
    def update(self, unit: np.ndarray) -> np.ndarray:
        """Take the next unit; return the scores (float32, possibly empty) of the units that
        can now be decided, oldest first."""

    @abstractmethod
    def finish(self) -> np.ndarray:
        """End of the source: scores of every unit still undecided."""

    @abstractmethod
    def reset(self) -> None:
        """Forget temporal state (after a gap in a stream); pending units are dropped."""


class Head(ABC):
    """See the module docstring. Shipped heads are listed in :mod:`vad.heads.registry`."""

    #: Registered type name, written to ``head.json``.
    type_name: ClassVar[str] = ""

    @property
    @abstractmethod
    def input(self) -> HeadInput:
        """What the head consumes."""

    @property
    def causal(self) -> bool:
        return self.lookahead == 0

    @property
    def lookahead(self) -> int:
        """Later units a unit's score depends on (-1: the whole video)."""
        return 0

    @property
    def needs_fit(self) -> bool:
        """True for heads that model normality from reference footage."""
        return False

    @property
    def fitted(self) -> bool:
        return not self.needs_fit

    def with_score_mode(self, score_mode: str) -> Head:
        """The same head scoring in another mode (heads that have modes override this)."""
        raise HeadError(f"the {self.type_name} head has no score modes")

    def fit(self, reference: np.ndarray) -> Head:
        """Fit on reference units (n_crops, n_units, dim); only for ``needs_fit`` heads."""
        raise HeadError(f"the {self.type_name} head is not fitted on reference footage")

    @abstractmethod
    def score_video(self, units: np.ndarray, timing: UnitTiming) -> HeadScores:
        """Score a whole video's units."""

    def score_frame_blocks(self, blocks: Iterable[np.ndarray]) -> HeadScores:
        """Frame heads: score a whole video given as blocks of uint8 RGB frames (N, H, W, 3),
        one score per frame."""
        raise HeadError(f"the {self.type_name} head scores snippet features, not frames")

    @abstractmethod
    def stream(self, timing: UnitTiming, n_units: int | None = None) -> StreamingScorer:
        """A streaming scorer; ``n_units``: the source's unit count when known (a file)."""

    @abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write ``head.json`` + ``head.safetensors`` into ``directory``."""

    @classmethod
    @abstractmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any], device: str = "cpu") -> Head:
        """Rebuild from a saved directory whose ``head.json`` is ``meta``."""

    def meta(self, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """The ``head.json`` content for this head."""
        return {"format": HEAD_FORMAT, "version": HEAD_VERSION, "type": self.type_name,
                "consumes": self.input.to_dict(), "causal": self.causal, "lookahead": self.lookahead,
                "needs_fit": self.needs_fit, "config": config, **extra}


def write_head_meta(directory: str | Path, meta: dict[str, Any]) -> None:
    write_json_atomic(Path(directory) / "head.json", meta)


def read_head_meta(directory: str | Path) -> dict[str, Any]:
    """``head.json`` of a saved head; HeadError when the directory is not one."""
    directory = Path(directory)
    meta_path, weights_path = directory / "head.json", directory / "head.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise HeadError(f"{directory} is not a saved head (needs head.json and head.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise HeadError(f"{meta_path}: unreadable: {err}") from None
    if not isinstance(meta, dict) or "type" not in meta:
        raise HeadError(f"{meta_path}: no head type")
    if meta.get("format", HEAD_FORMAT) != HEAD_FORMAT or int(meta.get("version", 1)) > HEAD_VERSION:
        raise HeadError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')} "
                        f"is not one this vad reads ({HEAD_FORMAT} <= {HEAD_VERSION})")
    return meta
