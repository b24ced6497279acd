"""The weighted residual check (changedet.coreg_check: lk_window_fit, pool_windows,
stack_residuals(pooling="weighted")): small windows with Cramer-Rao covariances, a
random-effects biweight mean restarted to a fixed point, bootstrap over cells."""

from __future__ import annotations

import numpy as np
import pytest

from changedet.coreg import apply_shift
from changedet.coreg_check import lk_window_fit, pool_windows, split_half, stack_residuals
from changedet.coreg_network import checkerboard
from changedet.errors import CoregError
from test_coreg import fractal

CELL = 72


def test_pool_windows_weights_precise_windows_and_ignores_wrong_matches():
    rng = np.random.default_rng(5)
    truth = np.array([0.07, -0.12])
    n = 400
    sd = np.where(np.arange(n) % 2 == 0, 0.02, 0.4)  # half sharp windows, half blurred ones
    cov = sd[:, None, None] ** 2 * np.eye(2)
    d = truth + rng.normal(size=(n, 2)) * sd[:, None]
    wrong = rng.random(n) < 0.3  # wrong matches, all on one side: they would pull a mean
    d[wrong] = rng.uniform(0.5, 2.0, (wrong.sum(), 2))
    mu, se, tau = pool_windows(d, cov, n_boot=100)
    np.testing.assert_allclose(mu, truth, atol=0.006)
    assert np.abs(d.mean(axis=0) - truth).max() > 0.2  # an unweighted mean fails
    # Sharp windows dominate: the error is near that of ~140 windows of 0.02 px, not 0.4 px.
    assert np.all(se < 0.005)
    with pytest.raises(CoregError, match="pool_windows"):
        pool_windows(d[:, :1], cov)


def test_pool_windows_bootstrap_resamples_whole_cells():
    # Windows of one cell share an error: resampling windows would hide it, cells do not.
    rng = np.random.default_rng(1)
    cells = np.repeat(np.arange(40), 25)
    d = rng.normal(0, 0.2, (40, 2))[cells] + rng.normal(0, 0.01, (1000, 2))
    cov = np.broadcast_to(1e-4 * np.eye(2), (1000, 2, 2))
    _, se_win, _ = pool_windows(d, cov, n_boot=200)
    _, se_cell, _ = pool_windows(d, cov, groups=cells, n_boot=200)
    assert np.all(se_cell > 3 * se_win)
    assert np.all(np.abs(se_cell - 0.2 / np.sqrt(40)) < 0.015)


def test_lk_window_fit_tiles_cells_and_gives_edge_aware_covariances():
    img = fractal(288, beta=2.0, seed=3)
    mask = checkerboard(img.shape, CELL, parity=1)
    fit = lk_window_fit(img, apply_shift(img, 0.31, -0.17), cell_px=CELL, window_px=12, mask=mask)
    # 5 x 5 windows inside each of the 8 held-out cells, none crossing into the other colour.
    assert len(fit.shifts) == 8 * 25 and fit.reliable.all()
    r, c = fit.centres.T.astype(int)
    assert mask[r, c].all() and len(np.unique(fit.cell)) == 8
    err = np.abs(fit.shifts - [-0.31, 0.17])
    assert np.median(err) < 0.01 and err.max() < 0.1
    assert np.all(np.linalg.eigvalsh(fit.covariance)[:, 0] > 0)
    # Edges in one direction only (columns vary, rows do not): precise across, not along.
    stripes = np.tile(fractal(288, seed=4)[0], (288, 1))
    fs = lk_window_fit(stripes, apply_shift(stripes, 0.0, 0.2), cell_px=CELL, window_px=12)
    var = fs.covariance[:, [0, 1], [0, 1]]
    assert np.all(~np.isfinite(var[:, 0]) | (var[:, 0] > 100 * var[:, 1]))
    with pytest.raises(CoregError, match="cell_px"):
        lk_window_fit(img, img, cell_px=16, window_px=12)


def test_weighted_check_errors():
    arr = np.stack([fractal(144, seed=1)] * 2)[:, None]
    with pytest.raises(CoregError, match="pooling"):
        stack_residuals(arr, band=0, pooling="mean")
    with pytest.raises(CoregError, match="cell_px"):
        stack_residuals(arr, band=0, pooling="weighted")


def test_split_half_with_the_weighted_check_on_a_known_stack():
    rng = np.random.default_rng(2)
    base = fractal(288, beta=2.0, seed=21)
    truth = np.array([[0.0, 0.0], [0.2, -0.1], [-0.15, 0.25]])
    arr = np.stack([apply_shift(base, *t) + rng.normal(0, 5, base.shape) for t in truth])[:, None]
    out = split_half(arr, band=0, mask=np.ones((288, 288), bool), cell_px=CELL, n_boot=20, pooling="weighted")
    for h in out["halves"]:
        np.testing.assert_allclose(h, -(truth - truth[0]), atol=0.01)
    assert max(out["sigma_date_px"]) < 0.01


@pytest.fixture(scope="module")
def naip_nir3(test_data):
    """NIR of the 2010, 2015, 2017 and 2018 dates on the 2017 grid (edge cropped)."""
    from rasterio.enums import Resampling

    from changedet.io import read_raster

    das = [read_raster(test_data(f"naip_timeseries_nd/m_4709963_se_14_1_{d}.tif")).sel(band="b4")
           for d in ("20100629", "20150926", "20170827", "20180716")]
    ref = das[2]
    out = [d.rio.reproject_match(ref, resampling=Resampling.cubic).values for d in das]
    return np.stack(out)[:, 12:-12, 12:-12].astype("float64")


def test_weighted_check_recovers_a_known_shift_between_real_dates(naip_nir3):
    # A known shift added to one date of a real pair moves the measured residual by
    # exactly that shift: the check does not shrink towards 0 (the 64 px Huber check
    # recovered 0.5 px as 0.38-0.44 on the dissimilar June / September pair). Measured on
    # one checkerboard colour only, as the bench does.
    mask = checkerboard(naip_nir3.shape[-2:], CELL, parity=1)
    opts = {"pooling": "weighted", "window_px": 12, "cell_px": CELL, "mask": mask, "n_boot": 20}
    for i, j, t in ((0, 1, (0.5, 0.5)), (2, 3, (0.23, -0.41))):
        pair = naip_nir3[[i, j]][:, None]
        r0 = stack_residuals(pair, band=0, **opts)[0]
        r1 = stack_residuals(np.stack([pair[0], apply_shift(pair[1], *t)]), band=0, **opts)[0]
        assert r1.shift_row_px - r0.shift_row_px == pytest.approx(-t[0], abs=0.05), (i, j)
        assert r1.shift_col_px - r0.shift_col_px == pytest.approx(-t[1], abs=0.05), (i, j)
        assert r0.stderr_row_px < 0.1 and r0.stderr_col_px < 0.1  # one pair, before the network adjustment
