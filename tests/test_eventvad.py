"""EventVAD event boundaries on synthetic feature sequences with known change points."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from vad.explain.eventvad import (
    EventVADConfig,
    boundary_f1,
    boundary_ratio,
    change_signal,
    find_boundaries,
    propagate,
    segments,
)

RATE = 2.0  # steps per second: min_gap_s = 2 s is 4 steps, window_s = 2 s is 5 steps (odd)
SEEDS = range(8)


def unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim)
    return v / np.linalg.norm(v)


def piecewise(
    seed: int,
    n_segments: int = 8,
    noise: float = 0.3,
    drift: float = 0.0,
    shared: float = 0.0,
    lengths: tuple[int, int] = (20, 80),
) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, d), true boundaries): segments of random length, each a random unit
    direction in a random dimension 64..512, plus per-dimension Gaussian noise of ``noise``
    times the signal's per-dimension RMS (so the noise norm is about ``noise``: per-step
    cosines around 0.9). ``drift`` (radians per step) rotates the direction inside each
    segment; ``shared`` mixes a common direction into every segment (correlated scenes)."""
    rng = np.random.default_rng(seed)
    dim = int(rng.integers(64, 513))
    common = unit(rng, dim)
    rows, truth, pos = [], [], 0
    for _ in range(n_segments):
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        u = shared * common + np.sqrt(1 - shared**2) * unit(rng, dim)
        u /= np.linalg.norm(u)
        v = rng.normal(size=dim)
        v -= (v @ u) * u
        v /= np.linalg.norm(v)
        angle = drift * np.arange(length)
        signal = np.cos(angle)[:, None] * u + np.sin(angle)[:, None] * v
        rows.append(signal + rng.normal(scale=noise / np.sqrt(dim), size=(length, dim)))
        pos += length
        truth.append(pos)
    return np.concatenate(rows).astype(np.float32), np.array(truth[:-1])


def noise_only(seed: int, n: int, dim: int, noise: float = 0.3, drift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    u = unit(rng, dim)
    v = rng.normal(size=dim)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    angle = drift * np.arange(n)
    signal = np.cos(angle)[:, None] * u + np.sin(angle)[:, None] * v
    return signal + rng.normal(scale=noise / np.sqrt(dim), size=(n, dim))


def rotation(n: int, step: float, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Noise-free direction turning at a constant ``step`` radians per step: full of exact ties
    (steps i - d and i + d are equally similar to step i)."""
    rng = np.random.default_rng(seed)
    u = unit(rng, dim)
    v = rng.normal(size=dim)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    angle = step * np.arange(n)
    return np.cos(angle)[:, None] * u + np.sin(angle)[:, None] * v


def near(pred: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return pred[(pred >= lo) & (pred <= hi)]


def f1_per_seed(**kwargs) -> list[float]:
    scores = []
    for seed in SEEDS:
        x, truth = piecewise(seed, **kwargs)
        pred = find_boundaries(x, RATE)
        scores.append(boundary_f1(pred, truth, tolerance=1)[2])
    return scores


# --------------------------------------------------------------------------------------------
# Detection quality
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="orthogonal-scenes"),
        pytest.param({"shared": 0.7}, id="correlated-scenes"),
        pytest.param({"drift": 0.02}, id="drift-inside-segments"),
        pytest.param({"drift": 0.03, "shared": 0.5}, id="drift-correlated"),
    ],
)
def test_piecewise_f1_at_one_step(kwargs):
    scores = f1_per_seed(**kwargs)
    assert np.mean(scores) >= 0.9, scores
    assert min(scores) >= 0.9, scores


def test_step_change_at_k_is_reported_at_k():
    """One change at k, segments of very unequal length included (k = 17 of 200: the longer
    segment sits near the mean, so its centred features are small and its change signal is
    noisier than the other's)."""
    exact = extra = runs = 0
    for k in (17, 40, 63, 101, 150, 183):
        for seed in range(5):
            rng = np.random.default_rng(seed)
            dim = 128
            a, b = unit(rng, dim), unit(rng, dim)
            n = 200
            x = np.where(np.arange(n)[:, None] < k, a, b) + rng.normal(scale=0.3 / np.sqrt(dim), size=(n, dim))
            pred = find_boundaries(x, RATE)
            near = pred[np.abs(pred - k) <= 10]
            assert near.size == 1, (k, seed, pred)  # found once, no echo shortly after
            assert abs(int(near[0]) - k) <= 1, (k, seed, pred)
            exact += int(near[0]) == k
            extra += pred.size - 1
            runs += 1
    # No systematic shift: the trailing average's lag is undone (the peak of r is 1 step early).
    assert exact >= 0.9 * runs, (exact, runs)
    assert extra <= runs * 200 / 200 / 5, extra  # stray noise boundaries elsewhere: rare


def test_weak_changes_are_localised_exactly():
    """Scenes with cosine 0.95 (about the size of the per-step noise): not every change passes
    the threshold, but those that do are placed at the change, not on the ratio's rising edge
    one step early (for a weak change the run of candidates may end before the peak of the
    change signal)."""
    found = exact = early = late = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        dim = 128
        a, b = unit(rng, dim), unit(rng, dim)
        b = 0.95 * a + np.sqrt(1 - 0.95**2) * b
        b /= np.linalg.norm(b)
        x = np.where(np.arange(200)[:, None] < 100, a, b) + rng.normal(scale=0.3 / np.sqrt(dim), size=(200, dim))
        got = near(find_boundaries(x, RATE), 95, 105)
        assert np.all(np.abs(got - 100) <= 1), (seed, got)
        found += got.size
        exact += int(np.sum(got == 100))
        early += int(np.sum(got < 100))
        late += int(np.sum(got > 100))
    assert found >= 45, found
    assert exact >= 0.9 * found, (exact, found)
    # Noise may move a weak change by a step either way, but not systematically early.
    assert early <= late + 1, (early, late)


def test_noise_free_step_with_flat_ratio():
    """Exactly constant segments: the ratio is flat (MAD = 0) except at the change."""
    rng = np.random.default_rng(3)
    a, b = unit(rng, 64), unit(rng, 64)
    x = np.concatenate([np.tile(a, (100, 1)), np.tile(b, (90, 1))])
    np.testing.assert_array_equal(find_boundaries(x, RATE), [100])


@pytest.mark.parametrize("dim", [64, 256, 512])
def test_pure_noise_gives_almost_no_boundaries(dim):
    n, total = 400, 0
    for seed in range(6):
        pred = find_boundaries(noise_only(seed, n, dim), RATE)
        assert pred.size <= n // 200, (seed, pred)
        total += pred.size
    assert total <= 6 * n / 200 / 2, total  # well under 1 per 200 steps on average


def test_slow_drift_of_one_segment_does_not_fire():
    # Half a turn over 400 steps: the direction changes completely, but never abruptly.
    n, total = 400, 0
    for seed in range(6):
        pred = find_boundaries(noise_only(seed, n, 128, drift=np.pi / n), RATE)
        assert pred.size <= n // 200, (seed, pred)
        total += pred.size
    assert total <= 6 * n / 200 / 2, total


def test_steady_noise_free_drift_gives_no_boundary_past_the_start():
    """A perfectly steady turn makes the ratio flat (MAD about 0 away from the ends), so only
    the floor on the MAD keeps rounding-level wobbles from firing. The first few nodes have
    one-sided neighbourhoods and may give one boundary within the first steps (documented)."""
    for step in (0.01, 0.02, 0.05):
        for seed in (0, 1):
            pred = find_boundaries(rotation(400, step, seed=seed), RATE)
            assert pred.size <= 1 and np.all(pred <= 2 * EventVADConfig().top_k), (step, seed, pred)


def test_close_changes_merge_into_one_boundary():
    """Changes at 100 and 100 + gap; only the neighbourhood of the changes is checked (a rare
    stray noise boundary elsewhere is the business of the pure-noise test)."""
    strays = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        dim = 128
        a, b, c = unit(rng, dim), unit(rng, dim), unit(rng, dim)
        noise = rng.normal(scale=0.3 / np.sqrt(dim), size=(230, dim))
        idx = np.arange(230)[:, None]

        def run(gap: int, cfg: EventVADConfig = EventVADConfig()) -> np.ndarray:
            x = np.where(idx < 100, a, np.where(idx < 100 + gap, b, c)) + noise
            return find_boundaries(x, RATE, cfg)

        # 2 steps apart: closer than min_gap (4 steps) -> one boundary, between them.
        pred = run(2)
        got = near(pred, 90, 112)
        assert got.size == 1 and 99 <= got[0] <= 103, (seed, pred)
        strays += pred.size - got.size
        # 20 steps apart -> two boundaries (the merge is not unconditional).
        pred = run(20)
        got = near(pred, 90, 130)
        assert got.size == 2 and abs(got[0] - 100) <= 1 and abs(got[1] - 120) <= 1, (seed, pred)
        # 6 steps apart: kept apart with the default 2 s gap, merged with a 4 s gap.
        assert near(run(6), 90, 116).size == 2, seed
        assert near(run(6, EventVADConfig(min_gap_s=4.0)), 90, 116).size == 1, seed
    assert strays <= 2, strays


def test_boundaries_are_sorted_ints_inside_and_gap_apart():
    x, _ = piecewise(11, n_segments=12, lengths=(6, 30))
    cfg = EventVADConfig()
    pred = find_boundaries(x, RATE, cfg)
    assert pred.dtype.kind == "i"
    assert np.all(np.diff(pred) >= cfg.min_gap_s * RATE)
    assert pred.size and pred[0] >= 1 and pred[-1] <= len(x) - 1


# --------------------------------------------------------------------------------------------
# Degenerate inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 9])
def test_short_inputs(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 16))
    pred = find_boundaries(x, RATE)
    assert pred.dtype.kind == "i" and pred.ndim == 1
    assert np.all((pred >= 1) & (pred <= max(n - 1, 0)))
    if n < 2:
        assert pred.size == 0
    assert propagate(x, EventVADConfig()).shape == (n, 16)
    assert change_signal(propagate(x)).shape == (max(n - 1, 0),)
    assert boundary_ratio(change_signal(propagate(x)), RATE).shape == (max(n - 1, 0),)


def test_constant_sequences_have_no_boundaries():
    rng = np.random.default_rng(0)
    row = rng.normal(size=32)
    assert find_boundaries(np.tile(row, (300, 1)), RATE).size == 0
    scaled = row[None, :] * rng.uniform(0.5, 2.0, size=(300, 1))  # same after L2 normalisation
    assert find_boundaries(scaled, RATE).size == 0
    assert find_boundaries(np.zeros((50, 8)), RATE).size == 0
    # Constant up to 1e-11: the cosine term is scale-free, so the jitter left after centring
    # would otherwise act like real noise and fire now and then over 2000 steps.
    jitter = row + 1e-11 * rng.normal(size=(2000, 32))
    assert find_boundaries(jitter, RATE).size == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_raise(bad):
    x = np.random.default_rng(0).normal(size=(50, 8))
    x[17, 3] = bad
    with pytest.raises(ValueError):
        find_boundaries(x, RATE)
    with pytest.raises(ValueError):
        propagate(x, EventVADConfig())
    with pytest.raises(ValueError):
        change_signal(x)


def test_bad_shapes_rates_and_configs_raise():
    x = np.random.default_rng(0).normal(size=(50, 8))
    with pytest.raises(ValueError):
        find_boundaries(x[:, 0], RATE)
    for rate in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            find_boundaries(x, rate)
    with pytest.raises(ValueError):
        boundary_ratio(np.array([1.0, np.nan, 1.0]), RATE)
    for field, value in [("top_k", 0), ("block", 0), ("temperature", 0.0), ("window_s", 0.0), ("mad_floor", 0.0)]:
        with pytest.raises(ValueError):
            EventVADConfig(**{field: value})
    with pytest.raises(dataclasses.FrozenInstanceError):
        EventVADConfig().alpha = 1.0  # type: ignore[misc]


def test_config_defaults():
    cfg = EventVADConfig()
    assert (cfg.time_decay, cfg.top_k, cfg.block, cfg.iterations, cfg.alpha, cfg.temperature) == (
        0.05, 5, 512, 1, 0.5, 0.1,
    )
    assert (cfg.window_s, cfg.polyorder, cfg.mad_k, cfg.min_gap_s) == (2.0, 2, 3.0, 2.0)


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------


def dense_reference(x: np.ndarray, cfg: EventVADConfig) -> np.ndarray:
    """The propagation written densely and naively, for small n."""
    f = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(f)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    w = (f @ f.T) / (1 + cfg.time_decay * np.abs(i - j))
    np.fill_diagonal(w, -np.inf)
    chosen = np.zeros((n, n), dtype=bool)
    for row in range(n):
        # Largest first (compared at 12 decimals); ties: nearer in time, then earlier.
        cols = np.arange(n)
        best = np.lexsort((cols, np.abs(cols - row), -np.round(w[row], 12)))[: cfg.top_k]
        chosen[row, best[w[row, best] > 0]] = True
    edges = chosen | chosen.T
    a = np.zeros((n, n))
    for row in range(n):
        nbrs = np.flatnonzero(edges[row])
        if nbrs.size:
            e = np.exp(w[row, nbrs] / cfg.temperature)
            a[row, nbrs] = e / e.sum()
    g = f
    for _ in range(cfg.iterations):
        g = g + cfg.alpha * (a @ g)
    return g - g.mean(axis=0)


@pytest.mark.parametrize("cfg", [EventVADConfig(), EventVADConfig(top_k=3, iterations=2, block=5, alpha=0.8)])
def test_propagate_matches_dense_reference(cfg):
    x, _ = piecewise(5, n_segments=3, lengths=(15, 25))
    np.testing.assert_allclose(propagate(x, cfg), dense_reference(x.astype(np.float64), cfg), atol=1e-10)


def test_ties_at_different_distances_go_to_the_nearer_neighbour():
    """40 distinct directions with one common cosine between any two (a common part plus an
    axis of their own) and no time decay: every neighbour choice is a tie between different
    vectors. The nearest steps must win (i - 1, i + 1, i - 2, ...), not the earliest ones."""
    x = np.ones((40, 40)) + np.eye(40)
    f = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = f @ f.T
    # Ties up to rounding (which the 12-decimal comparison absorbs).
    assert np.allclose(cos[~np.eye(40, dtype=bool)], cos[0, 1], rtol=0, atol=1e-14)
    cfg = EventVADConfig(time_decay=0.0, block=7)
    np.testing.assert_allclose(propagate(x, cfg), dense_reference(x, cfg), atol=1e-12)


def test_propagation_denoises_within_segments():
    x, truth = piecewise(2, n_segments=4)
    g = propagate(x)
    centred = x - x.mean(axis=0)
    # Step-to-step change inside segments shrinks relative to the jumps at the boundaries.
    inside = np.setdiff1d(np.arange(len(x) - 1), truth - 1)
    raw, prop = change_signal(centred), change_signal(g)
    assert prop[inside].mean() / prop[truth - 1].mean() < 0.8 * raw[inside].mean() / raw[truth - 1].mean()


def test_block_size_does_not_change_the_result():
    x, _ = piecewise(4, n_segments=10)  # length not a multiple of 7
    small, big = EventVADConfig(block=7), EventVADConfig(block=512)
    np.testing.assert_allclose(propagate(x, small), propagate(x, big), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(find_boundaries(x, RATE, small), find_boundaries(x, RATE, big))


@pytest.mark.parametrize("step", [0.01, 0.05, 0.1])
def test_block_size_does_not_change_the_result_with_exact_ties(step):
    x = rotation(237, step)
    ref = propagate(x, EventVADConfig(block=512))
    for block in (1, 7, 64):
        np.testing.assert_allclose(propagate(x, EventVADConfig(block=block)), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ref, dense_reference(x, EventVADConfig()), rtol=0, atol=1e-10)


def test_graph_memory_grows_with_block_not_n_squared():
    n, dim = 4000, 16
    x = np.random.default_rng(0).normal(size=(n, dim))
    tracemalloc.start()
    try:
        find_boundaries(x, RATE, EventVADConfig(block=64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * n * n * 8, peak  # a dense float64 n x n matrix would be 128 MB


def test_change_signal_formula():
    g = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    # ||d||^2 + 1 - cos: orthogonal 2 + 1; parallel 1 + 0; to a zero vector 4 + (1 - 0)
    np.testing.assert_allclose(change_signal(g), [3.0, 1.0, 5.0])


def test_boundary_ratio_is_aligned_with_change():
    change = np.ones(60)
    change[30] = 10.0
    r = boundary_ratio(change, RATE)
    assert r.shape == change.shape
    np.testing.assert_allclose(r[:25], 1.0, atol=1e-6)
    assert r[26:31].max() > 2.0  # the rising edge, within one window before the spike
    assert np.all(r >= 0)


# --------------------------------------------------------------------------------------------
# segments() and boundary_f1()
# --------------------------------------------------------------------------------------------


def test_segments_cover_exactly():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 300))
        b = rng.integers(0, n + 1, size=int(rng.integers(0, 12)))
        segs = segments(b, n)
        assert segs[0][0] == 0 and segs[-1][1] == n
        assert all(s < e for s, e in segs)
        assert all(e == s2 for (_, e), (s2, _) in zip(segs[:-1], segs[1:]))
        assert sum(e - s for s, e in segs) == n
        assert [s for s, _ in segs[1:]] == sorted(set(int(v) for v in b) - {0, n})


def test_segments_hand_cases():
    assert segments(np.array([], dtype=int), 10) == [(0, 10)]
    assert segments([7, 3, 3, 0, 10], 10) == [(0, 3), (3, 7), (7, 10)]
    assert segments([], 0) == []
    with pytest.raises(ValueError):
        segments([11], 10)
    with pytest.raises(ValueError):
        segments([-1], 10)
    with pytest.raises(ValueError):
        segments([2.5], 10)


def test_boundary_f1_hand_cases():
    assert boundary_f1([10, 20, 30], [10, 20, 30], 0) == (1.0, 1.0, 1.0)
    p, r, f = boundary_f1([10, 20, 30], [11, 25, 30], 1)
    assert (p, r) == pytest.approx((2 / 3, 2 / 3)) and f == pytest.approx(2 / 3)
    # One-to-one: two predictions near one true boundary count once.
    assert boundary_f1([10, 11], [10], 1) == pytest.approx((0.5, 1.0, 2 / 3))
    # Outside the tolerance nothing matches.
    assert boundary_f1([10], [12], 1) == (0.0, 0.0, 0.0)
    # Closest pair first: 10 takes 10, not 9.
    assert boundary_f1([10], [9, 10], 1) == pytest.approx((1.0, 0.5, 2 / 3))
    # Greedy, not optimal: 6-6 (distance 0) goes first and leaves 5 and 7 unmatched.
    assert boundary_f1([5, 6], [6, 7], 1) == pytest.approx((0.5, 0.5, 0.5))
    # Ties at equal distance: both pairs get matched.
    assert boundary_f1([10, 12], [11, 13], 1) == (1.0, 1.0, 1.0)
    # Empty conventions.
    assert boundary_f1([], [], 1) == (1.0, 1.0, 1.0)
    assert boundary_f1([], [5], 1) == (1.0, 0.0, 0.0)
    assert boundary_f1([5], [], 1) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        boundary_f1([1], [1], -1)
