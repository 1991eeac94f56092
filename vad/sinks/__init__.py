"""Sinks: where frame scores and events go, the same for ``vad score`` and a live monitor.

A sink is a context manager that receives, per source (a video or a camera):

* ``begin(meta)`` when the source starts;
* ``scores(source_id, first_frame, scores)`` as frame scores become known (in order);
* ``event(update)`` for each event lifecycle update (new / update / end);
* ``end(source_id, info)`` when the source is done; returns the files it wrote, by name;
* ``notice(payload)`` for a live camera's state notices (``vad.sinks.alerts``).

:class:`SinkSet` fans out to several sinks and isolates them: a sink that raises is logged and
recorded in ``errors`` and never stops scoring or another sink. A job decides what a failed
sink means (``vad score`` fails the video when its score file could not be written).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

import numpy as np

from vad.events import Event, EventUpdate
from vad.rundir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["EventLogSink", "PlotSink", "ScoreCSVSink", "Sink", "SinkError", "SinkSet", "SourceMeta",
           "event_payload"]

ALERT_SCHEMA = 1  # bump when event_payload's fields change meaning


def event_payload(update: EventUpdate, camera: str | None = None) -> dict[str, Any]:
    """The one JSON form of an event update that alert sinks (webhook, MQTT) send: the update's
    kind, the source (``camera``: the camera's name; defaults to the event's source id), and the
    event as :meth:`Event.to_dict` writes it."""
    return {"schema": ALERT_SCHEMA, "type": update.kind, "camera": camera or update.event.source_id,
            "event": update.event.to_dict()}


@dataclass(frozen=True)
class SourceMeta:
    """What a sink knows about a source when it starts."""

    source_id: str
    fps: float
    n_frames: int | None = None
    title: str | None = None


@dataclass(frozen=True)
class SinkError:
    sink: str
    source_id: str
    stage: str
    message: str


class Sink:
    """Base sink: every hook is optional; see the module docstring."""

    name: str = "sink"

    def begin(self, meta: SourceMeta) -> None:
        pass

    def scores(self, source_id: str, first_frame: int, scores: np.ndarray) -> None:
        pass

    def event(self, update: EventUpdate) -> None:
        pass

    def end(self, source_id: str, info: dict[str, Any]) -> dict[str, Path]:
        return {}

    def notice(self, payload: dict[str, Any]) -> None:
        """A camera notice (``type``: state / degraded / recovered; see vad.sinks.alerts)."""

    def counters(self) -> dict[str, int]:
        """Running totals for ``/metrics`` (``sent``, ``dropped``, ``failed``, ``retries``)."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Curves:
    """Per-source frame scores collected in order (for sinks that need the whole curve)."""

    def __init__(self) -> None:
        self.meta: dict[str, SourceMeta] = {}
        self.parts: dict[str, list[np.ndarray]] = {}
        self.next_frame: dict[str, int] = {}

    def begin(self, meta: SourceMeta) -> None:
        self.meta[meta.source_id] = meta
        self.parts[meta.source_id] = []
        self.next_frame[meta.source_id] = 0

    def add(self, source_id: str, first_frame: int, scores: np.ndarray) -> None:
        expected = self.next_frame[source_id]
        if first_frame != expected:
            raise ValueError(f"{source_id}: scores from frame {first_frame}, expected frame {expected}")
        scores = np.asarray(scores)
        self.parts[source_id].append(scores)
        self.next_frame[source_id] = expected + len(scores)

    def pop(self, source_id: str) -> tuple[SourceMeta, np.ndarray]:
        parts = self.parts.pop(source_id)
        self.next_frame.pop(source_id)
        curve = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return self.meta.pop(source_id), curve


class ScoreCSVSink(Sink):
    """``<run>/scores/<id>.csv`` for each source, written atomically when the source ends."""

    name = "scores"

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._curves = _Curves()

    def begin(self, meta: SourceMeta) -> None:
        self._curves.begin(meta)

    def scores(self, source_id: str, first_frame: int, scores: np.ndarray) -> None:
        self._curves.add(source_id, first_frame, scores)

    def end(self, source_id: str, info: dict[str, Any]) -> dict[str, Path]:
        meta, curve = self._curves.pop(source_id)
        return {"scores": self.run.write_scores(source_id, curve, meta.fps)}


class PlotSink(Sink):
    """``<run>/plots/<id>.png``: the score curve with threshold, events, the reference part
    (``info["reference_frames"]``) and ground truth (``info["ground_truth"]``)."""

    name = "plot"

    def __init__(self, run: RunDir, threshold: float | None = None) -> None:
        self.run = run
        self.threshold = threshold
        self._curves = _Curves()
        self._events: dict[str, list[Event]] = {}

    def begin(self, meta: SourceMeta) -> None:
        self._curves.begin(meta)
        self._events[meta.source_id] = []

    def scores(self, source_id: str, first_frame: int, scores: np.ndarray) -> None:
        self._curves.add(source_id, first_frame, scores)

    def event(self, update: EventUpdate) -> None:
        if update.kind == "end":
            self._events[update.event.source_id].append(update.event)

    def end(self, source_id: str, info: dict[str, Any]) -> dict[str, Path]:
        from vad.viz import plot_scores  # matplotlib only when plotting

        meta, curve = self._curves.pop(source_id)
        events = self._events.pop(source_id)
        n = len(curve)
        title = meta.title or f"{source_id} ({n} frames, {meta.fps:g} fps)"
        path = plot_scores(self.run.plot_path(source_id), curve, meta.fps, title=title,
                           threshold=self.threshold, events=events, ground_truth=info.get("ground_truth"),
                           reference_frames=info.get("reference_frames"))
        return {"plot": Path(path)}


class EventLogSink(Sink):
    """Appends every ended event as one JSON line (``video_id`` + the event) to ``path``,
    flushed per line, so a live log survives a crash up to its last event."""

    name = "event-log"

    def __init__(self, path: str | Path, kinds: Sequence[str] = ("end",)) -> None:
        self.path = Path(path)
        self.kinds = tuple(kinds)
        self._fh = None

    def event(self, update: EventUpdate) -> None:
        if update.kind not in self.kinds:
            return
        if self._fh is not None and self._rotated():
            self._fh.close()
            self._fh = None
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        record = {"video_id": update.event.source_id, **update.event.to_dict()}
        if len(self.kinds) > 1:
            record["update"] = update.kind
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _rotated(self) -> bool:
        """The file was moved away (``RunDir.rotate_events``): the next line starts a new one."""
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:
            return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class SinkSet:
    """Several sinks behind one interface; one failing never stops another (see ``errors``)."""

    sinks: list[Sink]
    errors: list[SinkError] = field(default_factory=list)

    def _call(self, sink: Sink, stage: str, source_id: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - a sink's failure is recorded, never propagated
            logger.error("sink %s failed at %s of %s: %s: %s", sink.name, stage, source_id,
                         type(err).__name__, err, exc_info=logger.isEnabledFor(logging.DEBUG))
            self.errors.append(SinkError(sink.name, source_id, stage, f"{type(err).__name__}: {err}"))
            return None

    def begin(self, meta: SourceMeta) -> None:
        for s in self.sinks:
            self._call(s, "begin", meta.source_id, s.begin, meta)

    def scores(self, source_id: str, first_frame: int, scores: np.ndarray) -> None:
        for s in self.sinks:
            self._call(s, "scores", source_id, s.scores, source_id, first_frame, scores)

    def event(self, update: EventUpdate) -> None:
        for s in self.sinks:
            self._call(s, "event", update.event.source_id, s.event, update)

    def end(self, source_id: str, info: dict[str, Any] | None = None) -> dict[str, Path]:
        outputs: dict[str, Path] = {}
        for s in self.sinks:
            outputs.update(self._call(s, "end", source_id, s.end, source_id, info or {}) or {})
        return outputs

    def notice(self, payload: dict[str, Any]) -> None:
        for s in self.sinks:
            self._call(s, "notice", str(payload.get("camera", "")), s.notice, payload)

    def errors_of(self, source_id: str) -> list[SinkError]:
        return [e for e in self.errors if e.source_id == source_id]

    def close(self) -> None:
        for s in self.sinks:
            self._call(s, "close", "", s.close)

    def __enter__(self) -> SinkSet:
        for s in self.sinks:
            s.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
