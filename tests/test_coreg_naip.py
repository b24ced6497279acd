"""Residual misregistration of the NAIP series, measured on held-out pixels with a bootstrap
standard error (changedet.coreg_check), and the windowed per-band network registration
(changedet.coreg_network).

The issue's target (at most 0.1 px between any two dates) is not asserted: measured on
held-out cells it is not reached (see bench/bench_naip.py); the real-data test below
asserts what holds - the registration reduces the independently measured residual.
"""

from __future__ import annotations

import glob
import itertools

import numpy as np
import pytest
import xarray as xr

from changedet.coreg import apply_shift, coregister_stack
from changedet.coreg_check import BandResidual, adjust_residuals, lk_window_shifts, robust_mean, stack_residuals
from changedet.coreg_network import checkerboard, coregister_stack_windows, network_shifts
from changedet.errors import CoregError

CELL = 72


@pytest.fixture(scope="module")
def naip_nir(test_data):
    """The 10 NAIP dates' NIR band on the first date's grid (edge cropped), as (time, 1, y, x)."""
    from rasterio.enums import Resampling

    from changedet.io import read_raster

    first = test_data("naip_timeseries_nd/m_4709963_se_14_1_20090818.tif")
    files = sorted(glob.glob(str(first.parent / "*.tif")))
    assert len(files) == 10
    das = [read_raster(f).sel(band=["b4"]) for f in files]
    ref = das[0]
    stack = xr.concat([d.rio.reproject_match(ref, resampling=Resampling.cubic).assign_coords(x=ref.x, y=ref.y)
                       for d in das], dim="time").assign_coords(time=np.arange(10))
    return stack.isel(y=slice(12, -12), x=slice(12, -12)).astype("float64")


def test_lk_measurement_recovers_known_shifts_on_real_naip(naip_nir):
    a = naip_nir.values[:, 0]
    # Same date, known spline shift: the estimator itself is exact.
    _, d, ok = lk_window_shifts(a[6], apply_shift(a[6], 0.37, -0.61), window_px=64)
    assert ok.sum() >= 100
    np.testing.assert_allclose(robust_mean(d[ok]), [-0.37, 0.61], atol=0.005)
    # Two real dates (2017, 2018): a known shift added to one moves the measured pair
    # residual by exactly that shift, within a small fraction of 0.1 px.
    pair = a[[6, 7]][:, None]
    r0 = stack_residuals(pair, band=0, n_boot=100)[0]
    shifted = np.stack([a[6], apply_shift(a[7], -0.23, 0.41)])[:, None]
    r1 = stack_residuals(shifted, band=0, n_boot=100)[0]
    assert r0.windows >= 80 and r0.stderr_row_px < 0.04 and r0.stderr_col_px < 0.04, r0
    assert r1.shift_row_px - r0.shift_row_px == pytest.approx(0.23, abs=0.03)
    assert r1.shift_col_px - r0.shift_col_px == pytest.approx(-0.41, abs=0.03)
    # Unrelated content is not measured.
    _, _, ok2 = lk_window_shifts(a[6, :300, :300], a[6, 350:650, 500:800], window_px=64)
    assert ok2.sum() <= 1


def test_adjust_residuals_recovers_per_date_translations():
    rng = np.random.default_rng(4)
    n = 6
    e = np.vstack([[0, 0], rng.uniform(-0.3, 0.3, (n - 1, 2))])
    se = 0.05
    res = []
    for i, j in itertools.combinations(range(n), 2):
        r, c = e[j] - e[i] + rng.normal(0, se, 2)
        res.append(BandResidual(i, j, 0, r, c, se, se, float(np.hypot(r, c)), se, 50, 60, 0.3))
    adj = adjust_residuals(res, n)
    assert np.abs(adj.per_date - e).max() < 3 * adj.stderr.max()
    # Every pair's adjusted error is smaller than its own measurement's.
    assert adj.stderr.max() < se
    assert 0.3 < adj.chi2_dof < 2.0
    truth = np.array([e[j] - e[i] for i, j in adj.pairs])
    assert np.sqrt(np.mean((adj.residual - truth) ** 2)) < se
    # A wrong premise shows: a pair off by 0.5 px inflates chi2.
    bad = list(res)
    bad[3] = BandResidual(bad[3].i, bad[3].j, 0, bad[3].shift_row_px + 0.5, bad[3].shift_col_px, se, se,
                          1.0, se, 50, 60, 0.3)
    assert adjust_residuals(bad, n).chi2_dof > 3
    with pytest.raises(CoregError, match="do not link"):
        adjust_residuals([r for r in res if 5 not in (r.i, r.j)], n)


def test_per_band_network_recovers_band_offsets_on_real_texture(naip_nir):
    # Three real dates (real year-to-year change), two "bands": the second band of each
    # date is the first with its own extra offset, as NAIP's NIR is offset from red.
    a = naip_nir.values[[5, 6, 7], 0]
    extra = np.array([[0.0, 0.0], [0.3, -0.2], [-0.25, 0.15]])
    moves = np.array([[0.0, 0.0], [0.8, -0.5], [-0.6, 1.1]])
    b0 = np.stack([apply_shift(x, *m) for x, m in zip(a, moves)])
    b1 = np.stack([apply_shift(x, *(m + o)) for x, m, o in zip(a, moves, extra)])
    # The phase-correlation network on its own (the default refines it with Lucas-Kanade,
    # tested in test_coreg_network.py and by the held-out check below).
    plain = network_shifts(None, a, estimator="pc")
    s0 = network_shifts(None, b0, estimator="pc")
    s1 = network_shifts(None, b1, estimator="pc")
    # The known moves (relative to date 0) come back on top of the real residuals, within
    # the pairs' standard errors: moving real imagery by a sub-pixel amount re-draws
    # each window's error (the 5 m frames are aliased), so the recovery is no better
    # than the measurement noise of the pairs (0.03-0.05 px here).
    assert np.nanmax(s0.pair_stderr) < 0.06
    np.testing.assert_allclose(s0.shifts - plain.shifts, -(moves - moves[0]), atol=0.06)
    np.testing.assert_allclose(s1.shifts - plain.shifts, -((moves + extra) - (moves + extra)[0]), atol=0.06)
    assert s0.kept.all() and np.all(s0.support == 2)
    # Through the DataArray API: per band, each band gets its own shift.
    grid = naip_nir.isel(time=[5, 6, 7])
    da = xr.concat([grid.copy(data=b0[:, None]).assign_coords(band=["red"]),
                    grid.copy(data=b1[:, None]).assign_coords(band=["nir"])], dim="band")
    aligned, shifts, sols = coregister_stack_windows(da, per_band=True, estimator="pc")
    assert aligned.dims == ("time", "band", "y", "x") and set(sols) == {"red", "nir"}
    np.testing.assert_allclose(shifts[:, 0], s0.shifts, atol=1e-9)
    np.testing.assert_allclose(shifts[:, 1], s1.shifts, atol=1e-9)
    np.testing.assert_allclose(aligned.values[2, 1], apply_shift(b1[2], *s1.shifts[2]), atol=1e-9)
    _, one, _ = coregister_stack_windows(da, per_band=False, band="nir", estimator="pc")
    np.testing.assert_allclose(one[:, 0], one[:, 1])
    with pytest.raises(CoregError, match="time, band, y, x"):
        coregister_stack_windows(da.isel(band=0))


@pytest.mark.slow
def test_naip_registration_reduces_held_out_residual(naip_nir):
    """Register NIR on one colour of a 72 px checkerboard, measure on the other."""
    reg = checkerboard(naip_nir.shape[-2:], CELL, parity=0)

    def measured(arr):
        res = stack_residuals(arr, band=0, mask=~reg, window_px=CELL - 8, step_px=CELL, n_boot=50)
        return adjust_residuals(res, arr.shape[0])

    before = measured(naip_nir.values)
    # Through the stack API (coregister_stack's windowed per-band mode), registration
    # restricted to the registration colour.
    valid = xr.DataArray(np.broadcast_to(reg, (naip_nir.sizes["time"],) + reg.shape).copy(), dims=("time", "y", "x"),
                         coords={"y": naip_nir.y, "x": naip_nir.x}).rio.write_crs(naip_nir.rio.crs)
    aligned, results = coregister_stack(naip_nir, naip_nir.isel(time=0, drop=True), network="windows",
                                        per_band=True, valid=valid)
    assert all(r["b4"].applied and r["b4"].mode == "windows" for r in results), [r["b4"].reason for r in results]
    shifts = np.array([[r["b4"].shift_row_px, r["b4"].shift_col_px] for r in results])
    after = measured(aligned.values)
    i = int(np.argmax(after.magnitude_px))
    msg = (f"held-out NIR residual (adjusted over 45 pairs): median {np.median(before.magnitude_px):.3f} -> "
           f"{np.median(after.magnitude_px):.3f} px, max {before.magnitude_px.max():.3f} -> "
           f"{after.magnitude_px[i]:.3f} +- {after.stderr[i].max():.3f} px (pair {tuple(int(v) for v in after.pairs[i])}), "
           f"chi2/dof {after.chi2_dof:.2f}")
    print("\n" + msg)
    assert np.isfinite(shifts).all()
    assert np.median(after.magnitude_px) < 0.75 * np.median(before.magnitude_px), msg
    assert after.magnitude_px.max() < 0.75 * before.magnitude_px.max(), msg
    assert np.median(after.stderr.max(axis=1)) < 0.08, msg
