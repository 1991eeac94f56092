"""Incremental event tracking: raw frame scores in, anomalous events out, chunk by chunk.

One :class:`EventTracker` turns a frame score curve into :class:`Event` s. Batch scoring
(:func:`vad.events.detect_events`), evaluation and the live monitor all run it; the batch path
feeds the whole curve in one :meth:`EventTracker.update` and calls :meth:`EventTracker.finish`.

Rules (:class:`EventRules`, durations converted to frames with ``int(round(x * fps))``):

* **smoothing** of the raw curve over ``w = round(smoothing_s * fps)`` frames (``w <= 1``: none).
* **hysteresis**: an event is a run of frames whose smoothed score is ``> low_threshold``
  (default: ``threshold``) that contains at least one frame ``> threshold``. It starts where the
  run started, even if the run only qualified later (the start is then in the past).
* **merging**: a qualifying run that starts at most ``merge_gap`` frames after the previous
  event's exclusive end joins it (``start - end <= gap``); the gap frames become part of it.
* **minimum duration**: an event shorter than ``max(min_duration, 1)`` frames (after merging) is
  never reported.
* peak and mean are taken over the **raw** scores of ``[start, end]``, gap frames included.

What a caller sees (:class:`EventUpdate`): ``"new"`` when an event first reaches the minimum
duration, ``"update"`` (at most once per event per :meth:`~EventTracker.update` call, at the
call's end, and not when the event also ended in that call) when it grew and its peak rose since
the last report, ``"end"`` with the final event as soon as nothing can extend it any more: on the
frame ``merge_gap`` frames after its exclusive end (the last one where a merging run could
start) if that frame is below low, or later while a run that started inside the gap may still
qualify. Each reported event carries its extent at that moment (``end_frame`` = the last frame
known to be in it).
Frame numbers are absolute since the tracker was built (they keep counting across
:meth:`~EventTracker.reset`), so ``event_id = f"{source_id}:{start_frame}"`` is unique.

Smoothing modes:

``"centred"`` (default, what batch scoring always did)
    Centred moving average with the edges replicated, identical bit for bit to
    ``vad.events.smooth``: frame ``i`` is the mean of raw frames ``i - w//2 .. i + L`` with
    ``L = w - 1 - w//2``. Streaming, it is a trailing mean delayed by ``L`` frames: a frame's
    smoothed value is known ``L`` frames after it arrived (:attr:`~EventTracker.latency_frames`);
    :meth:`~EventTracker.finish` replicates the last raw value for the missing ``L`` frames, as
    the batch code pads the right edge.
``"trailing"``
    Mean of the last ``w`` raw frames (the first raw value stands for frames before 0); no
    latency. Its curve is the centred curve shifted ``L`` frames later exactly
    (``trailing[i] == centred[i - L]``), so away from the curve's ends its events are the centred
    events moved ``L = w - 1 - w//2`` (about ``w/2``) frames later, start and end alike; peak and
    mean then cover the moved interval. Near the end the last ``L`` centred frames have no
    counterpart (the trailing curve is not padded on the right).
``"ema"``
    Exponential moving average ``s[i] = alpha*x[i] + (1-alpha)*s[i-1]``, ``alpha = 2/(w+1)``,
    ``s[0] = x[0]``; no latency. Its mean lag equals the trailing mean's ``(w-1)/2`` frames, but
    the lag at a threshold depends on where the threshold sits. On a step of height ``h`` from a
    settled baseline ``b``, the curve first exceeds ``b + q*h`` ``floor(log(1-q) / log(1-alpha))``
    frames after the step (about ``0.35 * (w+1)`` frames for ``q = 1/2``), and after a long
    plateau it is back at or below ``b + q*h`` ``floor(log(q) / log(1-alpha))`` frames after the
    drop. An event therefore starts that first lag after the raw rise and its exclusive end
    falls the second lag after the raw drop, ``q`` being the low threshold's place on the step
    (the event starts where the run above low started). The centred mean straddles a step
    symmetrically (it is half-way at the step itself), so trailing and EMA events both come
    later than centred ones.

A short spike is attenuated by every mode: a ``k``-frame spike of height ``h`` (``k < w``) peaks
at ``h*k/w`` in the centred and trailing curves and at ``h*(1 - (1-alpha)**k)`` (about
``2*h*k/(w+1)``) in the EMA, so a spike the raw curve would report can stay below threshold.

State is O(1) per event plus the O(w) smoothing buffer: peak (first maximum, like ``np.argmax``)
and a compensated sum are accumulated frame by frame, for the open event and for the frames
since its end (gap and a not-yet-qualifying run), never a buffer of the event's scores.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Sequence

import numpy as np

__all__ = ["SMOOTHING_MODES", "Event", "EventRules", "EventTracker", "EventUpdate"]

SMOOTHING_MODES = ("centred", "trailing", "ema")

# Tracker states.
_IDLE = 0  # below low, no event open
_RUN = 1  # in a run above low that has not exceeded threshold yet, no event open
_EVRUN = 2  # an event is open and growing: in its qualifying run
_GAP = 3  # an event is open but its last run ended: waiting up to merge_gap frames for the next


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")


@dataclass(frozen=True)
class EventRules:
    """How a score curve becomes events; durations in seconds (see the module docstring)."""

    threshold: float
    low_threshold: float | None = None  # hysteresis: a run ends at or below this (None: threshold)
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    smoothing_s: float = 0.0  # moving-average window (0 = off)
    smoothing: str = "centred"  # centred | trailing | ema

    def __post_init__(self) -> None:
        _check_number("threshold", self.threshold)
        if self.low_threshold is not None:
            _check_number("low_threshold", self.low_threshold)
            if self.low_threshold > self.threshold:
                raise ValueError(f"low_threshold {self.low_threshold} must not exceed threshold {self.threshold}")
        for name in ("min_duration_s", "merge_gap_s", "smoothing_s"):
            value = getattr(self, name)
            _check_number(name, value)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING_MODES)}, got {self.smoothing!r}")

    @property
    def low(self) -> float:
        """The effective low (hysteresis) threshold."""
        return self.threshold if self.low_threshold is None else self.low_threshold

    @classmethod
    def from_config(cls, cfg: Any) -> "EventRules":
        """From any object with these attribute names (e.g. ``vad.config.EventConfig``);
        ``smoothing`` is optional (default ``"centred"``)."""
        return cls(
            threshold=cfg.threshold,
            low_threshold=cfg.low_threshold,
            min_duration_s=cfg.min_duration_s,
            merge_gap_s=cfg.merge_gap_s,
            smoothing_s=cfg.smoothing_s,
            smoothing=getattr(cfg, "smoothing", "centred"),
        )

    def in_frames(self, fps: float) -> tuple[int, int, int]:
        """``(smoothing window, minimum duration >= 1, merge gap)`` in frames at ``fps``."""
        return (
            int(round(self.smoothing_s * fps)),
            max(int(round(self.min_duration_s * fps)), 1),
            int(round(self.merge_gap_s * fps)),
        )


_OPTIONAL_KEYS = ("start_wall", "end_wall", "snapshot", "clip", "clip_info", "region", "explanation", "evidence",
                  "explanation_error")
_DICT_KEYS = ("clip_info", "evidence")


@dataclass(frozen=True)
class Event:
    """An interval of frames whose score stayed above the threshold. ``end_frame`` is inclusive;
    ``end_s`` is the exclusive end frame over fps. ``event_id`` defaults to
    ``f"{source_id}:{start_frame}"``; ``start_wall``/``end_wall`` are the wall-clock times (epoch
    seconds) of the first and last frame when the caller supplied them."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    peak_frame: int
    peak_score: float
    mean_score: float
    event_id: str = ""
    source_id: str = ""
    start_wall: float | None = None
    end_wall: float | None = None
    snapshot: str | None = None
    clip: str | None = None
    #: how the clip was made (``{"clip_mode": "reencoded", "clip_frames": n}``)
    clip_info: dict[str, Any] | None = field(default=None, hash=False)
    #: where in the frame, at the peak: (x0, y0, x1, y1) as fractions of width and height
    region: tuple[float, float, float, float] | None = None
    #: the explanation stage (:mod:`vad.explain`): one or two sentences, what they rest on
    #: (rules broken, motion figures, actions, objects, frames used), or why there is none
    explanation: str | None = None
    evidence: dict[str, Any] | None = field(default=None, hash=False)
    explanation_error: str | None = None

    def __post_init__(self) -> None:
        if not self.event_id:
            object.__setattr__(self, "event_id", f"{self.source_id}:{self.start_frame}")

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the optional fields only when set. ``source_id`` is left out (the archive
        writer adds ``video_id``)."""
        d: dict[str, Any] = {
            "event_id": self.event_id,
            "start_frame": int(self.start_frame),
            "end_frame": int(self.end_frame),
            "start_s": float(self.start_s),
            "end_s": float(self.end_s),
            "peak_frame": int(self.peak_frame),
            "peak_score": float(self.peak_score),
            "mean_score": float(self.mean_score),
        }
        for key in _OPTIONAL_KEYS:
            value = getattr(self, key)
            if value is not None:
                d[key] = dict(value) if key in _DICT_KEYS else [round(float(v), 4) for v in value] \
                    if key == "region" else value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source_id: str = "") -> "Event":
        """Inverse of :meth:`to_dict`. Keys that are not event fields are ignored: the ``video_id``
        the archive writer adds, an event log's ``update`` kind, annotations of later writers
        (``source_id`` comes from the argument, never from ``d``). Missing fields raise ValueError."""
        known = {f.name for f in fields(cls)} - {"source_id"}
        missing = [f.name for f in fields(cls)[:7] if f.name not in d]
        if missing:
            raise ValueError(f"event dict lacks {', '.join(missing)}")
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("region") is not None:
            kw["region"] = tuple(float(v) for v in kw["region"])
        return cls(**kw, source_id=source_id)


@dataclass(frozen=True)
class EventUpdate:
    """``"new"``: an event reached the minimum duration; ``"update"``: it grew and its peak rose;
    ``"end"``: it is over, ``event`` is final."""

    kind: Literal["new", "update", "end"]
    event: Event


def _kahan_add(total: float, carry: float, x: float) -> tuple[float, float]:
    """Neumaier-compensated running sum: an event's mean stays exact to ~1e-16 over hours."""
    t = total + x
    if abs(total) >= abs(x):
        carry += (total - t) + x
    else:
        carry += (x - t) + total
    return t, carry


def _mean(s: float, c: float, n: int) -> float:
    return (s + c) / n if math.isfinite(s) else s / n


class EventTracker:
    """Incremental events of one source (see the module docstring for the rules).

    ``update(scores)`` takes the next frames' raw scores and returns what changed; ``finish()``
    ends the source; ``reset()`` ends the open event and starts a fresh curve (after a gap in a
    stream), frame numbers continuing.
    """

    def __init__(self, rules: EventRules, fps: float, source_id: str = "") -> None:
        if not isinstance(rules, EventRules):
            raise TypeError(f"rules must be an EventRules, got {type(rules).__name__}")
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps}")
        self.rules = rules
        self.fps = fps
        self.source_id = source_id
        self._low = float(rules.low)
        self._thr = float(rules.threshold)
        w, self._min_frames, self._gap = rules.in_frames(fps)
        self._window = w
        self._mode = rules.smoothing if w > 1 else "none"
        self._pad_left = {"centred": w // 2, "trailing": w - 1}.get(self._mode, 0)
        self._latency = w - 1 - w // 2 if self._mode == "centred" else 0
        self._kernel = np.ones(w) / w if self._mode in ("centred", "trailing") else None
        self._alpha = 2.0 / (w + 1)
        self._frames_seen = 0
        self._finished = False
        self._clear()

    # ------------------------------------------------------------------ public

    @property
    def latency_frames(self) -> int:
        """Frames of look-ahead the smoothing needs: frame ``i`` is judged once ``i + latency``
        has arrived."""
        return self._latency

    @property
    def frames_seen(self) -> int:
        """Raw frames passed to :meth:`update` since construction (across resets)."""
        return self._frames_seen

    def update(
        self,
        scores: Sequence[float] | np.ndarray,
        wall_times: Sequence[float] | np.ndarray | None = None,
    ) -> list[EventUpdate]:
        """Feed the next frames' raw scores (1-D, any length) and optionally their wall-clock
        times (same length, epoch seconds)."""
        if self._finished:
            raise RuntimeError("the tracker is finished; call reset() to start a new curve")
        raw = np.asarray(scores, dtype=np.float64)
        if raw.ndim != 1:
            raise ValueError(f"scores must be 1-D, got shape {raw.shape}")
        n = len(raw)
        if wall_times is None:
            walls: list = [None] * n
        else:
            wt = np.asarray(wall_times, dtype=np.float64)
            if wt.shape != raw.shape:
                raise ValueError(f"wall_times must match scores' shape {raw.shape}, got {wt.shape}")
            walls = wt.tolist()
        out: list[EventUpdate] = []
        if n:
            self._frames_seen += n
            self._process(*self._smooth(raw, walls), out)
            self._report_growth(out)
        return out

    def finish(self) -> list[EventUpdate]:
        """End of the source: judge the frames the smoothing still held back (right edge
        replicated) and end the open event. Further updates need :meth:`reset` first."""
        if self._finished:
            return []
        out = self._close()
        self._finished = True
        return out

    def reset(self) -> list[EventUpdate]:
        """A gap in the stream: end the open event as :meth:`finish` does, then forget the curve
        (the next update starts a fresh smoothing window). Frame numbers keep counting."""
        out = [] if self._finished else self._close()
        self._finished = False
        return out

    # ---------------------------------------------------------------- internals

    def _clear(self) -> None:
        self._tail: np.ndarray | None = None  # last w-1 padded raw values (convolution modes)
        self._ema: float | None = None
        self._pending_walls: list = []  # wall times of frames held back by the latency
        self._next = self._frames_seen  # absolute index of the next frame to judge
        self._state = _IDLE
        self._run_a = 0
        self._run_wall: float | None = None
        self._p = (0.0, 0.0, 0.0, 0)  # frames not (yet) in the event: sum, compensation, peak, peak frame
        self._ev_a = self._ev_b = 0  # open event [a, b)
        self._ev_w0 = self._ev_w1 = None
        self._e = (0.0, 0.0, 0.0, 0)  # open event: sum, compensation, peak, peak frame
        self._emitted = False
        self._last_b = 0
        self._last_pi = -1

    def _close(self) -> list[EventUpdate]:
        out: list[EventUpdate] = []
        if self._latency and self._tail is not None:
            buf = np.concatenate((self._tail, np.full(self._latency, self._tail[-1])))
            vs = np.convolve(buf, self._kernel, mode="valid").tolist()
            xs = buf[self._pad_left : self._pad_left + len(vs)].tolist()
            ws = self._pending_walls
            self._pending_walls = []
            self._process(vs, xs, ws, out)
        if self._state in (_EVRUN, _GAP) and self._emitted:
            s, c, pk, pi = self._e
            out.append(EventUpdate("end", self._event(self._ev_a, self._ev_b, pk, pi, s, c, self._ev_w0, self._ev_w1)))
        self._clear()
        return out

    def _smooth(self, raw: np.ndarray, walls: list) -> tuple[list, list, list]:
        """Smoothed values, raw values and wall times of the frames that can be judged now."""
        mode = self._mode
        if mode == "none":
            xs = raw.tolist()
            return xs, xs, walls
        if mode == "ema":
            xs = raw.tolist()
            a, b = self._alpha, 1.0 - self._alpha
            s = xs[0] if self._ema is None else self._ema
            vs = []
            for x in xs:
                s = a * x + b * s
                vs.append(s)
            self._ema = s
            return vs, xs, walls
        # Convolution modes: the same np.convolve over the same window values as the batch code,
        # so every smoothed value is bit-identical however the curve is chunked.
        if self._tail is None:
            self._tail = np.full(self._pad_left, raw[0])
        buf = np.concatenate((self._tail, raw))
        w = self._window
        self._tail = buf[-(w - 1) :].copy()
        n_out = len(buf) - w + 1
        if n_out <= 0:
            self._pending_walls += walls
            return [], [], []
        vs = np.convolve(buf, self._kernel, mode="valid").tolist()
        xs = buf[self._pad_left : self._pad_left + n_out].tolist()
        if self._pending_walls:
            walls = self._pending_walls + walls
        self._pending_walls = walls[n_out:]
        return vs, xs, walls[:n_out]

    def _event(self, a: int, b: int, pk: float, pi: int, s: float, c: float, w0: Any, w1: Any) -> Event:
        fps = self.fps
        return Event(
            start_frame=a,
            end_frame=b - 1,
            start_s=a / fps,
            end_s=b / fps,
            peak_frame=pi,
            peak_score=pk,
            mean_score=_mean(s, c, b - a),
            event_id=f"{self.source_id}:{a}",
            source_id=self.source_id,
            start_wall=w0,
            end_wall=w1,
        )

    def _report_growth(self, out: list[EventUpdate]) -> None:
        if self._emitted and self._state in (_EVRUN, _GAP):
            s, c, pk, pi = self._e
            if self._ev_b > self._last_b and pi != self._last_pi:
                self._last_b, self._last_pi = self._ev_b, pi
                ev = self._event(self._ev_a, self._ev_b, pk, pi, s, c, self._ev_w0, self._ev_w1)
                out.append(EventUpdate("update", ev))

    def _process(self, vs: list, xs: list, ws: list, out: list[EventUpdate]) -> None:
        """The hysteresis / merge / duration state machine over judged frames (hot loop: state in
        locals; sums are Neumaier-compensated; peaks keep the first maximum, NaN winning like
        ``np.argmax``)."""
        low, thr, gap, minf = self._low, self._thr, self._gap, self._min_frames
        state = self._state
        f = self._next
        run_a, run_w = self._run_a, self._run_wall
        ps, pc, ppk, ppi = self._p
        ev_a, ev_b, ev_w0, ev_w1 = self._ev_a, self._ev_b, self._ev_w0, self._ev_w1
        es, ec, epk, epi = self._e
        emitted = self._emitted
        make = self._event
        for v, x, w in zip(vs, xs, ws):
            if state == _IDLE:
                if v > low:
                    run_a, run_w = f, w
                    ps, pc, ppk, ppi = x, 0.0, x, f
                    if v > thr:  # a one-frame run already qualifies: open the event
                        ev_a, ev_w0, ev_b, ev_w1 = f, w, f + 1, w
                        es, ec, epk, epi = ps, pc, ppk, ppi
                        emitted = False
                        state = _EVRUN
                        if 1 >= minf:
                            emitted = True
                            self._last_b, self._last_pi = ev_b, epi
                            out.append(EventUpdate("new", make(ev_a, ev_b, epk, epi, es, ec, ev_w0, ev_w1)))
                    else:
                        state = _RUN
            elif state == _EVRUN:
                if v > low:
                    es, ec = _kahan_add(es, ec, x)
                    if x > epk or (x != x and epk == epk):
                        epk, epi = x, f
                    ev_b, ev_w1 = f + 1, w
                    if not emitted and ev_b - ev_a >= minf:
                        emitted = True
                        self._last_b, self._last_pi = ev_b, epi
                        out.append(EventUpdate("new", make(ev_a, ev_b, epk, epi, es, ec, ev_w0, ev_w1)))
                else:  # the run ended at f == ev_b: start collecting gap frames
                    ps, pc, ppk, ppi = x, 0.0, x, f
                    state = _GAP
                    if gap <= 0:
                        if emitted:
                            out.append(EventUpdate("end", make(ev_a, ev_b, epk, epi, es, ec, ev_w0, ev_w1)))
                        state = _IDLE
            elif state == _GAP:
                ps, pc = _kahan_add(ps, pc, x)
                if x > ppk or (x != x and ppk == ppk):
                    ppk, ppi = x, f
                if v > low:
                    # A run inside the gap (a run starting after it is impossible: the event
                    # would have ended on the frame before). It merges once it qualifies.
                    if v > thr:
                        es, ec = _kahan_add(es, ec, ps)
                        ec += pc
                        if ppk > epk or (ppk != ppk and epk == epk):
                            epk, epi = ppk, ppi
                        ev_b, ev_w1 = f + 1, w
                        state = _EVRUN
                        if not emitted and ev_b - ev_a >= minf:
                            emitted = True
                            self._last_b, self._last_pi = ev_b, epi
                            out.append(EventUpdate("new", make(ev_a, ev_b, epk, epi, es, ec, ev_w0, ev_w1)))
                elif f - ev_b >= gap:  # the next run would start beyond the gap
                    if emitted:
                        out.append(EventUpdate("end", make(ev_a, ev_b, epk, epi, es, ec, ev_w0, ev_w1)))
                    state = _IDLE
            else:  # _RUN
                if v > low:
                    ps, pc = _kahan_add(ps, pc, x)
                    if x > ppk or (x != x and ppk == ppk):
                        ppk, ppi = x, f
                    if v > thr:  # the run qualifies: the event starts where the run started
                        ev_a, ev_w0, ev_b, ev_w1 = run_a, run_w, f + 1, w
                        es, ec, epk, epi = ps, pc, ppk, ppi
                        emitted = False
                        state = _EVRUN
                        if ev_b - ev_a >= minf:
                            emitted = True
                            self._last_b, self._last_pi = ev_b, epi
                            out.append(EventUpdate("new", make(ev_a, ev_b, epk, epi, es, ec, ev_w0, ev_w1)))
                else:
                    state = _IDLE
            f += 1
        self._state, self._next = state, f
        self._run_a, self._run_wall = run_a, run_w
        self._p = (ps, pc, ppk, ppi)
        self._ev_a, self._ev_b, self._ev_w0, self._ev_w1 = ev_a, ev_b, ev_w0, ev_w1
        self._e = (es, ec, epk, epi)
        self._emitted = emitted
