"""Network stack registration (all-pairs matches solved by robust least squares) and the
independent residual check of :mod:`changedet.coreg_check`."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from changedet.coreg import apply_shift, coregister_stack, solve_network
from changedet.coreg_check import pairwise_residuals, window_shifts
from changedet.errors import CoregError
from test_coreg import fractal, grid_at, spline_shift


def test_solve_network_recovers_shifts_despite_noise_and_an_outlier():
    rng = np.random.default_rng(3)
    t = rng.uniform(-2, 2, (6, 2))
    pairs = [(-1, j) for j in range(6)] + [(i, j) for i in range(6) for j in range(i + 1, 6)]
    obs = np.array([t[j] - (0 if i < 0 else t[i]) for i, j in pairs]) + rng.normal(0, 0.05, (len(pairs), 2))
    w = np.ones(len(pairs))
    obs[3] += (4.0, -3.0)  # a wrong match of date 3 against the reference
    w[:6] = 0.3            # the reference matches are the weak ones (other season)
    est, support, kept = solve_network(6, pairs, obs, w)
    assert not kept[3] and kept.sum() >= len(pairs) - 2
    assert np.abs(est - t).max() < 0.08
    # Without the date-to-date matches the outlier date would be off by metres.
    direct, _, _ = solve_network(6, pairs[:6], obs[:6], w[:6])
    assert np.abs(direct[3] - t[3]).max() > 2
    # A date tied to nothing of weight > 0 gets no shift rather than a guess.
    w2 = w.copy()
    w2[[k for k, (i, j) in enumerate(pairs) if 5 in (i, j)]] = 0.0
    est2, support2, _ = solve_network(6, pairs, obs, w2)
    assert np.isnan(est2[5]).all() and support2[5] == 0
    assert np.isfinite(est2[:5]).all()


@pytest.fixture(scope="module")
def seasonal_stack():
    """Five dates of one terrain, shifted; contrast drifts from date to date ("seasons")."""
    grid = grid_at((192, 192))
    base = fractal(192, beta=2.3, seed=5)
    other = fractal(192, beta=2.3, seed=6)
    shifts = [(0.0, 0.0), (0.4, -0.7), (-1.3, 0.5), (0.8, 1.6), (-0.6, -1.1)]
    frames = []
    for k, sh in enumerate(shifts):
        # Content drifts away from the reference season step by step.
        img = (1 - 0.12 * k) * base + 0.12 * k * other
        frames.append(spline_shift(img, sh))
    ref = grid.attach(base[None], bands=["nir"])
    stack = xr.concat([grid.attach(f[None], bands=["nir"]) for f in frames], dim="time")
    return stack.assign_coords(time=np.arange(len(shifts))), ref, shifts


def test_network_stack_matches_known_shifts(seasonal_stack):
    stack, ref, shifts = seasonal_stack
    aligned, results = coregister_stack(stack, ref, network=True, scheduler="synchronous")
    assert aligned.dims == ("time", "band", "y", "x")
    for sh, res in zip(shifts, results):
        assert res.mode == "network" and res.applied, res.reason
        assert res.shift_row_px == pytest.approx(-sh[0], abs=0.05)
        assert res.shift_col_px == pytest.approx(-sh[1], abs=0.05)
        assert res.tie_points >= 4 and res.tie_points_total == 5
    # Applied like apply_shift of the same shift.
    np.testing.assert_allclose(aligned.isel(time=3).values,
                               apply_shift(stack.isel(time=3, drop=True), results[3].shift_row_px,
                                           results[3].shift_col_px).values, atol=1e-5, equal_nan=True)
    with pytest.raises(CoregError, match="local"):
        coregister_stack(stack, ref, network=True, local=True)


def test_window_shifts_is_accurate_on_real_naip_and_filters_bad_windows(test_data):
    from changedet.io import read_raster

    img = read_raster(test_data("naip_timeseries_nd/m_4709963_se_14_1_20140720.tif")).values.astype(float)
    a = img[:2, 100:420, 100:420]
    b = apply_shift(a, 0.37, -0.61)
    sh, ok = window_shifts(a, b, window_px=96, step_px=96)
    assert ok.sum() >= 3
    np.testing.assert_allclose(sh[ok], np.broadcast_to([-0.37, 0.61], sh[ok].shape), atol=0.01)
    # Unrelated content: bands disagree, no window counts as reliable.
    c = img[:2, 400:720, 500:820]
    _, ok2 = window_shifts(a, c, window_px=96, step_px=96)
    assert ok2.sum() == 0
    res = pairwise_residuals(np.stack([a, b]), window_px=96, step_px=96)
    assert len(res) == 1 and res[0].magnitude_px == pytest.approx(np.hypot(0.37, 0.61), abs=0.01)
