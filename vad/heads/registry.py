"""The list of head types and the one loader of saved heads."""

from __future__ import annotations

from pathlib import Path

from vad.heads.base import Head, HeadError, read_head_meta
from vad.heads.frame_predictor import FramePredictionHead
from vad.heads.reference import ReferenceFeatureHead
from vad.heads.scene import SceneHead
from vad.heads.trained import TrainedHead

__all__ = ["HEAD_TYPES", "load_head", "register_head_type"]

#: ``head.json`` type -> the class that rebuilds it. Trained heads share one adapter over
#: their registered ``nn.Module`` (:mod:`vad.heads.modules`).
HEAD_TYPES: dict[str, type[Head]] = {
    "reference": ReferenceFeatureHead,
    "mil": TrainedHead,
    "gsmoe": TrainedHead,
    "rtfm": TrainedHead,
    "ctd2gan": FramePredictionHead,
    "scene": SceneHead,
}


def register_head_type(cls: type[Head]) -> type[Head]:
    """Add a head type defined in a later layer (the explanation stage's training-free heads,
    :mod:`vad.explain.detectors`, register themselves when :mod:`vad.explain` is imported)."""
    if not cls.type_name:
        raise HeadError(f"{cls.__name__} has no type_name")
    HEAD_TYPES[cls.type_name] = cls
    return cls


def load_head(directory: str | Path, device: str = "cpu") -> Head:
    """Any saved head, whatever its type; HeadError says why one cannot be loaded."""
    meta = read_head_meta(directory)
    kind = meta["type"]
    cls = HEAD_TYPES.get(kind)
    if cls is None:
        hint = " (import vad.explain first)" if kind in ("anomalyruler", "eventvad") else ""
        raise HeadError(f"{directory}: unknown head type {kind!r}{hint} (known: {', '.join(sorted(HEAD_TYPES))})")
    try:
        return cls.from_saved(Path(directory), meta, device)
    except HeadError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as err:
        raise HeadError(f"cannot load the {kind} head from {directory}: {type(err).__name__}: {err}") from None
