"""Event boundaries for EventVAD-style training-free anomaly detection (numpy + scipy only).

EventVAD first cuts a video into *events* from per-frame or per-snippet features and then
judges each event as a whole. This module is the cutting part: features in, sorted boundary
indices out. It follows the method of the EventVAD paper and its public code; where the text
below says "our choice", the behaviour is this module's own decision, not the reference's.

Pipeline (every number is a field of :class:`EventVADConfig`; defaults in brackets)
-----------------------------------------------------------------------------------
1. **Graph** (:func:`propagate`). Nodes are time steps; each node carries its feature row,
   L2-normalised (an all-zero row stays zero). The edge weight between steps ``i`` and ``j`` is
   ``w_ij = cos(f_i, f_j) / (1 + time_decay * |i - j|)`` [``time_decay`` = 0.05 per step], so
   similar *and* close steps bind most strongly. Each node keeps its ``top_k`` [5] largest
   weights (never itself, only weights > 0). Weights are compared rounded to 12 decimals and
   ties go to the neighbour nearer in time, then to the earlier one (our choice: otherwise
   rounding differences between block shapes of the matrix product could flip exact ties, as
   in noise-free input, and the result would depend on ``block``). The graph is symmetrised: an
   edge exists if either end chose it (``w_ij = w_ji``, so its weight does not depend on which
   end chose it). The weights are computed ``block`` [512] rows at a time against all ``n``
   rows, so memory is ``O(n * block)`` plus the kept edges in a sparse matrix: never a dense
   ``n x n`` matrix.
2. **Propagation**. ``iterations`` [1] rounds of ``f_i <- f_i + alpha * sum_j a_ij f_j``
   [``alpha`` = 0.5] over the node's neighbours, with ``a_ij`` the softmax over the neighbours of
   ``w_ij / temperature`` [``temperature`` = 0.1: our choice; the kept weights lie in ``(0, 1]``,
   and 0.1 makes the closest, most similar neighbours dominate without ignoring the others].
   The graph is built once from the input features and reused in every round (our choice).
   After the last round the mean over time is subtracted, so what all steps share does not
   dilute the change signal. The reference code uses attention with random projections here;
   this version is deterministic (same input, same output), which we prefer for tests and
   reproducibility. A node with no kept edge keeps its own feature.
3. **Change signal** (:func:`change_signal`) on the propagated features ``g``:
   ``c_t = ||g_{t+1} - g_t||^2 + (1 - cos(g_{t+1}, g_t))`` for ``t = 0 .. n-2`` (the cosine of a
   zero vector counts as 0).
4. **Ratio** (:func:`boundary_ratio`). ``c`` is smoothed with a Savitzky-Golay filter
   (:func:`scipy.signal.savgol_filter`, ``polyorder`` [2]) over a window of ``window_s`` [2.0 s]
   times ``rate`` (steps per second), rounded, made odd and at least ``polyorder + 2``, and
   clipped to the longest odd length the signal allows (no smoothing if that is not more than
   ``polyorder``: our choice). Each smoothed value is clipped to the range (min .. max) of the
   raw ``c`` inside its own window (our choice: the filter rings below the data on both sides
   of a spike; unclipped, or clipped at 0 or at the global minimum of ``c``, that dip deflated
   the trailing average and produced a false boundary about one window after true changes).
   Then ``r_t = s_t / (m_t + eps)`` [``eps`` = 1e-8], ``m_t`` the trailing moving average of
   ``s`` over the same window, ``s_{t-w+1} .. s_t``; for the first ``w - 1`` steps, which lack
   a full window, ``m_t`` is the mean of the first ``w`` values (our choice: an average of one
   or two values is too noisy a baseline and fired at the very start). ``r`` is aligned with
   ``c``: ``r_t`` is about the change between steps ``t`` and ``t + 1``.
5. **Boundaries** (:func:`find_boundaries`). Candidates are the ``t`` with
   ``r_t > median(r) + mad_k * max(mad_scale * MAD(r), mad_floor)`` [``mad_k`` = 3.0], MAD the
   median absolute deviation. Two choices here are ours:

   * ``mad_scale`` [1.4826] makes ``mad_scale * MAD`` the normal-consistent robust standard
     deviation, so ``mad_k`` counts robust sigmas. With the raw MAD (``mad_scale = 1``) the
     default threshold sits near 2 sigma, and on a single noisy 64-d segment it gave 5 to 15
     false boundaries per 400 steps (about 0.3 per 200 steps with the scale).
   * ``mad_floor`` [0.05] handles MAD = 0 (a flat ratio gives no boundary, a clear spike still
     does) and means that a rise of less than ``mad_k * mad_floor`` (15 %) over the trailing
     average never counts as a change.

   Candidates closer than ``min_gap_s`` [2.0 s] times ``rate`` steps to the previous candidate
   join its run (adjacent candidates always do, even for a gap under 2 steps); each run gives
   one boundary.

   *Where in a run* (our choice). The trailing average lags, so ``r`` peaks on the *rising edge*
   of a bump in ``s``: the maximum of ``r`` sat exactly one step before the true change on every
   change of our synthetic tests. We undo that shift: the run is extended to the right by the
   lag of the trailing window, ``(w - 1) // 2`` steps, and the boundary goes where the smoothed
   change ``s`` (zero-phase, so it peaks at the change itself) is largest in it; the ``t`` found
   is reported as ``t + 1``, the first step of the new event (ties: the earliest step). Finally a
   boundary nearer than the minimum gap to a stronger one (larger ``r`` in its run) is dropped,
   so any two reported boundaries are at least the gap apart.

Known limitations:

* The ratio reacts to *rises* of the change signal. A cut (features jump) is a spike in ``c``
  and is found and placed exactly. A sustained rise (e.g. motion speeding up) is a level
  shift: it is found only if its onset stands out from the ratio's spread, and it is placed
  at the largest smoothed change in its run, which on a plateau can be a few steps late. A fall
  (motion slowing down) gives no boundary.
* The first and last few nodes have one-sided neighbourhoods, so the propagation treats them
  differently; on noise-free, steadily changing input (a constant turn of the feature
  direction) this gives a spurious boundary within the first ``top_k`` or so steps. With
  realistic per-step noise it is drowned out and did not show in our tests.

Degenerate inputs: fewer than 2 steps, or steps that are all the same after L2 normalisation
(largest deviation from the first row at most 1e-9; otherwise rounding noise left after the
mean subtraction would feed the scale-free cosine term), give no boundaries; NaN or inf anywhere in the features raises :class:`ValueError`.

:func:`segments` turns boundaries into half-open ``[start, end)`` events covering ``0 .. n``,
and :func:`boundary_f1` scores predicted boundaries against true ones (one-to-one greedy
matching within a tolerance).
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from scipy.signal import savgol_filter

logger = logging.getLogger(__name__)

__all__ = [
    "EventVADConfig",
    "boundary_f1",
    "boundary_ratio",
    "change_signal",
    "find_boundaries",
    "propagate",
    "segments",
]

_NORM_FLOOR = 1e-12  # below this a row counts as zero (for normalising and for cosines)
_TIE_DECIMALS = 12  # top-k weights are compared at this precision (see _top_k)


@dataclass(frozen=True)
class EventVADConfig:
    """Every knob of the event cutting; see the module docstring for what each one does.

    Times (``window_s``, ``min_gap_s``) are in seconds and become steps through the ``rate``
    passed to :func:`find_boundaries`; ``time_decay`` is per step.
    """

    time_decay: float = 0.05
    top_k: int = 5
    block: int = 512
    iterations: int = 1
    alpha: float = 0.5
    temperature: float = 0.1
    window_s: float = 2.0
    polyorder: int = 2
    eps: float = 1e-8
    mad_k: float = 3.0
    mad_scale: float = 1.4826
    mad_floor: float = 0.05
    min_gap_s: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_decay) and self.time_decay >= 0):
            raise ValueError(f"time_decay must be finite and >= 0, got {self.time_decay}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be finite, got {self.alpha}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"window_s must be finite and > 0, got {self.window_s}")
        if self.polyorder < 0:
            raise ValueError(f"polyorder must be >= 0, got {self.polyorder}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be finite and > 0, got {self.eps}")
        if not (math.isfinite(self.mad_k) and self.mad_k >= 0):
            raise ValueError(f"mad_k must be finite and >= 0, got {self.mad_k}")
        if not (math.isfinite(self.mad_scale) and self.mad_scale > 0):
            raise ValueError(f"mad_scale must be finite and > 0, got {self.mad_scale}")
        if not (math.isfinite(self.mad_floor) and self.mad_floor > 0):
            raise ValueError(f"mad_floor must be finite and > 0, got {self.mad_floor}")
        if not (math.isfinite(self.min_gap_s) and self.min_gap_s >= 0):
            raise ValueError(f"min_gap_s must be finite and >= 0, got {self.min_gap_s}")


# --------------------------------------------------------------------------------------------
# Input checks and small helpers
# --------------------------------------------------------------------------------------------


def _as_features(features: np.ndarray) -> np.ndarray:
    """``features`` as a float64 (n, d) array; ValueError for another shape or non-finite values."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (time, dim), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf")
    return x


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate (steps per second) must be finite and > 0, got {rate}")
    return rate


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > _NORM_FLOOR, norms, 1.0)


def _window_steps(rate: float, cfg: EventVADConfig) -> int:
    """The unclipped smoothing window in steps: odd and at least ``polyorder + 2``."""
    w = max(int(round(cfg.window_s * rate)), cfg.polyorder + 2)
    return w if w % 2 == 1 else w + 1


def _gap_steps(rate: float, cfg: EventVADConfig) -> int:
    return int(round(cfg.min_gap_s * rate))


# --------------------------------------------------------------------------------------------
# 1-2. Graph and propagation
# --------------------------------------------------------------------------------------------


def _knn_graph(f: np.ndarray, cfg: EventVADConfig) -> sparse.csr_matrix:
    """Symmetrised top-k graph of the decayed cosine weights; ``f`` rows already L2-normalised."""
    n = f.shape[0]
    k = min(cfg.top_k, n - 1)
    if k < 1:
        return sparse.csr_matrix((n, n))
    cols_all = np.arange(n, dtype=np.float64)
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n, cfg.block):
        stop = min(start + cfg.block, n)
        b = stop - start
        weights = f[start:stop] @ f.T  # (b, n) cosines
        denom = np.subtract.outer(np.arange(start, stop, dtype=np.float64), cols_all)
        np.abs(denom, out=denom)
        denom *= cfg.time_decay
        denom += 1.0
        weights /= denom
        del denom
        local = np.arange(b)
        weights[local, start + local] = -np.inf  # never its own neighbour
        rows, cols = _top_k(weights, start, k)
        vals = weights[rows - start, cols]
        rows_out.append(rows)
        cols_out.append(cols)
        vals_out.append(vals)
    rows = np.concatenate(rows_out)
    cols = np.concatenate(cols_out)
    vals = np.concatenate(vals_out)
    chosen = sparse.csr_matrix((vals, (rows, cols)), shape=(n, n))
    # Either end chose it. w_ij = w_ji up to rounding, so the maximum is that weight.
    return chosen.maximum(chosen.T).tocsr()


def _top_k(weights: np.ndarray, start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each row's ``k`` largest weights that are > 0, rows offset by ``start``.

    Weights are compared rounded to ``_TIE_DECIMALS`` decimals, so rounding differences between
    block shapes of the matrix product cannot change the choice; ties go to the neighbour
    nearer in time, then to the earlier one. Memory: O(size of ``weights``).
    """
    b, n = weights.shape
    key = np.round(weights, _TIE_DECIMALS)
    kth = np.partition(key, n - k, axis=1)[:, n - k]  # the k-th largest key of each row
    r, c = np.nonzero((key >= kth[:, None]) & (key > 0))  # all candidates, ties included
    kv = key[r, c]
    order = np.lexsort((c, np.abs(c - (r + start)), -kv, r))
    r, c = r[order], c[order]
    first = np.searchsorted(r, np.arange(b))  # r is sorted: where each row's candidates start
    rank = np.arange(r.size) - first[r]
    keep = rank < k
    return r[keep] + start, c[keep]


def _row_softmax(graph: sparse.csr_matrix, temperature: float) -> sparse.csr_matrix:
    """Softmax of ``weight / temperature`` over each row's stored edges (empty rows stay empty)."""
    graph = graph.tocsr()
    graph.sort_indices()
    n = graph.shape[0]
    counts = np.diff(graph.indptr)
    if graph.nnz == 0:
        return graph.copy()
    row_of = np.repeat(np.arange(n), counts)
    nonempty = counts > 0
    starts = graph.indptr[:-1][nonempty]
    row_max = np.zeros(n)
    row_max[nonempty] = np.maximum.reduceat(graph.data, starts)
    e = np.exp((graph.data - row_max[row_of]) / temperature)
    row_sum = np.ones(n)
    row_sum[nonempty] = np.add.reduceat(e, starts)
    return sparse.csr_matrix((e / row_sum[row_of], graph.indices.copy(), graph.indptr.copy()), shape=(n, n))


def propagate(features: np.ndarray, cfg: EventVADConfig = EventVADConfig()) -> np.ndarray:
    """Graph-propagated, mean-centred features, shape (n, d), float64.

    Rows are L2-normalised, the top-k time-decayed cosine graph is built ``cfg.block`` rows at a
    time, and ``cfg.iterations`` rounds of ``f + alpha * A f`` (``A`` the row softmax of the
    edge weights over ``cfg.temperature``) are applied; then the mean over time is subtracted.
    Raises ValueError for a non-2-D input or NaN/inf.
    """
    f = _l2_normalise(_as_features(features))
    n = f.shape[0]
    if n == 0:
        return f
    if n >= 2 and cfg.iterations > 0:
        attention = _row_softmax(_knn_graph(f, cfg), cfg.temperature)
        logger.debug("eventvad graph: %d steps, %d stored edges", n, attention.nnz)
        g = f
        for _ in range(cfg.iterations):
            g = g + cfg.alpha * (attention @ g)
    else:
        g = f.copy()
    return g - g.mean(axis=0, keepdims=True)


# --------------------------------------------------------------------------------------------
# 3-4. Change signal and ratio
# --------------------------------------------------------------------------------------------


def change_signal(features: np.ndarray) -> np.ndarray:
    """``c_t = ||g_{t+1} - g_t||^2 + 1 - cos(g_{t+1}, g_t)`` for ``t = 0 .. n-2``.

    ``features`` are the propagated features ``g`` (see :func:`propagate`), used as given.
    Returns shape (max(n - 1, 0),). The cosine with a zero vector counts as 0.
    """
    g = _as_features(features)
    if g.shape[0] < 2:
        return np.zeros(0)
    a, b = g[:-1], g[1:]
    diff = b - a
    sq = np.einsum("ij,ij->i", diff, diff)
    norm_prod = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    cos = np.where(norm_prod > _NORM_FLOOR**2, dots / np.where(norm_prod > 0, norm_prod, 1.0), 0.0)
    return sq + (1.0 - cos)


def _smoothed(change: np.ndarray, rate: float, cfg: EventVADConfig) -> tuple[np.ndarray, int]:
    """(Savitzky-Golay smoothed change clipped to the raw range, the window used in steps)."""
    c = np.asarray(change, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"change must be 1-D, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("change contains NaN or inf")
    m = c.shape[0]
    w = _window_steps(_check_rate(rate), cfg)
    if w > m:
        w = m if m % 2 == 1 else m - 1
    if m == 0:
        return c.copy(), max(w, 1)
    if w <= cfg.polyorder:  # too short to fit the polynomial: no smoothing
        return c.copy(), max(w, 1)
    # A smoother should stay within the values it averages: clip to the local range of c.
    lo = minimum_filter1d(c, w, mode="nearest")
    hi = maximum_filter1d(c, w, mode="nearest")
    return np.clip(savgol_filter(c, w, cfg.polyorder), lo, hi), w


def _trailing_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean of ``x[t-w+1 .. t]`` for every ``t`` (same length as ``x``); for the first ``w - 1``
    steps, which lack a full trailing window, the mean of the first ``w`` values (all of ``x``
    if it is shorter)."""
    m = x.shape[0]
    if m == 0:
        return x.copy()
    w = min(w, m)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    t = np.arange(m)
    out = np.empty(m)
    full = t >= w - 1
    out[full] = (csum[t[full] + 1] - csum[t[full] + 1 - w]) / w
    out[~full] = csum[w] / w
    return out


def boundary_ratio(change: np.ndarray, rate: float, cfg: EventVADConfig = EventVADConfig()) -> np.ndarray:
    """``r_t = s_t / (trailing mean of s over the window + eps)``, ``s`` the smoothed ``change``.

    ``change`` is the output of :func:`change_signal` (length n - 1), ``rate`` steps per second.
    The result has the same length and alignment as ``change``: ``r_t`` concerns the change
    between steps ``t`` and ``t + 1``.
    """
    s, w = _smoothed(change, rate, cfg)
    if s.shape[0] == 0:
        return s
    return s / (_trailing_mean(s, w) + cfg.eps)


# --------------------------------------------------------------------------------------------
# 5. Boundaries
# --------------------------------------------------------------------------------------------


def _threshold(r: np.ndarray, cfg: EventVADConfig) -> float:
    med = float(np.median(r))
    mad = float(np.median(np.abs(r - med)))
    return med + cfg.mad_k * max(cfg.mad_scale * mad, cfg.mad_floor)


def find_boundaries(
    features: np.ndarray, rate: float, cfg: EventVADConfig = EventVADConfig()
) -> np.ndarray:
    """Sorted int64 indices of the first step of each new event (never 0 or n).

    ``features``: (n, d) per-step features; ``rate``: steps per second (turns ``window_s`` and
    ``min_gap_s`` into steps). Fewer than 2 steps or a constant sequence give no boundaries;
    NaN/inf raise ValueError. See the module docstring for the method.
    """
    x = _as_features(features)
    rate = _check_rate(rate)
    n = x.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty
    f = _l2_normalise(x)
    if float(np.max(np.abs(f - f[0]))) <= 1e-9:
        logger.debug("eventvad: constant sequence of %d steps, no boundaries", n)
        return empty
    change = change_signal(propagate(f, cfg))
    s, w = _smoothed(change, rate, cfg)
    r = s / (_trailing_mean(s, w) + cfg.eps)
    thr = _threshold(r, cfg)
    cand = np.flatnonzero(r > thr)
    if cand.size == 0:
        return empty
    gap = _gap_steps(rate, cfg)
    lag = (w - 1) // 2
    # Runs: a candidate closer than the gap to the previous one joins its run; adjacent
    # candidates are one excursion of r and always share a run, whatever the gap.
    breaks = np.flatnonzero(np.diff(cand) >= max(gap, 2)) + 1
    runs = np.split(cand, breaks)
    positions, strengths = [], []
    for run in runs:
        lo, hi = int(run[0]), min(int(run[-1]) + lag, s.shape[0] - 1)
        t = lo + int(np.argmax(s[lo : hi + 1]))
        positions.append(t + 1)
        strengths.append(float(r[run].max()))
    # Keep boundaries at least the gap apart, strongest first (kept: sorted positions).
    order = sorted(range(len(positions)), key=lambda i: (-strengths[i], positions[i]))
    kept: list[int] = []
    for i in order:
        p = positions[i]
        at = bisect.bisect_left(kept, p)
        if (at == len(kept) or kept[at] - p >= gap) and (at == 0 or p - kept[at - 1] >= gap):
            kept.insert(at, p)
    out = np.array(kept, dtype=np.int64)
    logger.debug(
        "eventvad: %d steps, threshold %.4g, %d candidates, %d runs, %d boundaries",
        n, thr, cand.size, len(runs), out.size,
    )
    return out


# --------------------------------------------------------------------------------------------
# Segments and scoring
# --------------------------------------------------------------------------------------------


def segments(boundaries: np.ndarray, n: int) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` events that cover ``0 .. n`` exactly, cut at ``boundaries``.

    Boundaries are sorted and deduplicated; 0 and ``n`` are allowed and ignored (they cut
    nothing). A boundary outside ``0 .. n`` or a negative ``n`` raises ValueError. ``n = 0``
    gives no segments.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    b = np.asarray(boundaries).reshape(-1)
    if b.size and not np.issubdtype(b.dtype, np.integer):
        if not np.all(np.isfinite(b)) or not np.all(b == np.round(b)):
            raise ValueError("boundaries must be whole numbers")
    b = np.unique(b.astype(np.int64))
    if b.size and (b[0] < 0 or b[-1] > n):
        raise ValueError(f"boundaries must lie in 0..{n}, got {b[0]}..{b[-1]}")
    if n == 0:
        return []
    cuts = [0] + [int(v) for v in b if 0 < v < n] + [n]
    return list(zip(cuts[:-1], cuts[1:]))


def boundary_f1(
    predicted: np.ndarray, truth: np.ndarray, tolerance: float
) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``predicted`` boundaries against ``truth``.

    A predicted and a true boundary match when ``|p - t| <= tolerance``; each is used at most
    once. Matching is greedy: all admissible pairs by increasing distance (ties: smaller
    predicted, then smaller true index first). Conventions for empty inputs: no predictions
    give precision 1.0, no true boundaries give recall 1.0 (nothing missed / nothing wrong);
    both empty is (1.0, 1.0, 1.0); F1 is 0 when precision + recall is 0.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")
    p = np.sort(np.asarray(predicted, dtype=np.float64).reshape(-1))
    t = np.sort(np.asarray(truth, dtype=np.float64).reshape(-1))
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("boundaries must be finite")
    pairs = []
    for i, pv in enumerate(p):
        lo = np.searchsorted(t, pv - tolerance, side="left")
        hi = np.searchsorted(t, pv + tolerance, side="right")
        for j in range(lo, hi):
            pairs.append((abs(pv - t[j]), i, j))
    pairs.sort()
    used_p: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    matched = len(used_p)
    precision = matched / p.size if p.size else 1.0
    recall = matched / t.size if t.size else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1
