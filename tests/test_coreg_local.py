"""Local (tie-point grid) co-registration: warp recovery, outliers, the real Sentinel-2 pair."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from changedet.coreg import apply_shift, apply_warp, coregister, fit_warp, estimate_local
from test_coreg import RES, _s2_window, fractal, grid_at


def _bent(n: int, seed: int):
    base = fractal(n, beta=2.2, seed=seed)
    rr, cc = np.indices((n, n), dtype=float)
    dr = -1.8 + 1.2 * np.sin(np.pi * rr / n) * (cc / n)
    dc = 2.4 - 1.0 * (rr / n) ** 2
    mov = ndimage.map_coordinates(base, [rr - dr, cc - dc], order=5, mode="reflect")
    return base, mov, dr, dc


def test_local_mode_removes_non_rigid_distortion():
    n = 640
    base, mov, dr, dc = _bent(n, 17)
    grid = grid_at((n, n))
    out_g, res_g = coregister(grid.attach(base), grid.attach(mov))
    out_l, res_l = coregister(grid.attach(base), grid.attach(mov), local=True, window_px=128, step_px=64)
    inner = np.s_[24:-24, 24:-24]
    err_g = np.sqrt(np.nanmean((out_g.values - base)[inner] ** 2)) / base.std()
    err_l = np.sqrt(np.nanmean((out_l.values - base)[inner] ** 2)) / base.std()
    print(f"\nbent frame: global residual {err_g:.3f} sd (shift {res_g.shift_row_px:+.2f}, {res_g.shift_col_px:+.2f}); "
          f"local {err_l:.3f} sd, {res_l.tie_points}/{res_l.tie_points_total} tie points, tie-point residual "
          f"{res_l.residual_rmse_px:.3f} px, reliability {res_l.reliability:.2f}")
    assert res_l.applied and res_l.mode == "local"
    assert res_l.tie_points >= 0.9 * res_l.tie_points_total and res_l.tie_points >= 50
    assert len(res_l.tie_point_table) == res_l.tie_points_total
    assert sum(1 for t in res_l.tie_point_table if t[5]) == res_l.tie_points
    assert res_l.residual_rmse_px < 0.05
    assert err_l < 0.5 * err_g  # the warp does what one translation cannot
    # Floor: the true correction field applied the same way (two resamplings of a rough
    # texture); the fitted warp must come within 10 % of it.
    floor = np.sqrt(np.nanmean((apply_warp(mov, -dr, -dc) - base)[inner] ** 2)) / base.std()
    assert err_l < 1.1 * floor, (err_l, floor)
    assert res_l.similarity_after > res_l.similarity_before
    assert res_l.shift_x_m == pytest.approx(res_l.shift_col_px * RES)
    # The mean field is the summary shift; it matches the mean of the true correction.
    assert res_l.shift_row_px == pytest.approx(-dr.mean(), abs=0.05)
    assert res_l.shift_col_px == pytest.approx(-dc.mean(), abs=0.05)


@pytest.mark.parametrize("warp", ["affine", "translation"])
def test_other_warp_models(warp):
    n = 384
    base = fractal(n, seed=23)
    rr, cc = np.indices((n, n), dtype=float)
    dr = 1.0 + 0.004 * cc  # affine: a shear of 1.5 px over the frame
    dc = -0.5 + 0.0 * rr
    if warp == "translation":
        dr = np.full_like(rr, 1.0)
    mov = ndimage.map_coordinates(base, [rr - dr, cc - dc], order=5, mode="reflect")
    tp = estimate_local(base, mov, window_px=128, step_px=64)
    fr, fc, rmse = fit_warp(tp, (n, n), warp=warp)
    inner = np.s_[32:-32, 32:-32]
    assert np.abs(fr + dr)[inner].max() < 0.06 and np.abs(fc + dc)[inner].max() < 0.06
    assert rmse < 0.05


def test_apply_warp_constant_field_equals_apply_shift():
    img = fractal(128, seed=3)
    img[40:44, 50:60] = np.nan
    f = np.ones_like(img)
    a = apply_warp(img, 1.3 * f, -2.6 * f)
    b = apply_shift(img, 1.3, -2.6)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=1e-9)


def test_local_noise_is_not_applied():
    rng = np.random.default_rng(9)
    grid = grid_at((384, 384))
    ref = grid.attach(rng.normal(1000, 50, grid.shape))
    mov = grid.attach(rng.normal(1000, 50, grid.shape))
    out, res = coregister(ref, mov, local=True, window_px=128)
    print(f"\nlocal noise vs noise: {res.tie_points}/{res.tie_points_total} kept, reliability {res.reliability:.2f}, "
          f"reason {res.reason!r}")
    assert not res.applied and res.reliability < 0.5
    np.testing.assert_array_equal(out.values, mov.values)


# AROSICS' recorded map shifts (see test_coreg.test_real_pair_matches_arosics).
@pytest.mark.parametrize(
    ("x", "y", "expect_x", "expect_y"),
    [(339611.0, 5856426.0, -7.19, -18.90), (353810.0, 5840516.0, -6.56, -16.80)],
)
def test_real_pair_local_field_at_recorded_points(test_data, x, y, expect_x, expect_y):
    # A 512 px reference window around the point (clipped by the image edge at the second
    # point), local mode with AROSICS' 256 px windows; the warp evaluated at the point.
    ref = _s2_window(test_data, "ref", x, y, 256)
    tgt = _s2_window(test_data, "tgt", x, y, 288)
    out, res = coregister(ref, tgt, local=True, window_px=256, step_px=64)
    assert res.applied, res.reason
    col = int(np.argmin(np.abs(ref.x.values - x)))
    row = int(np.argmin(np.abs(ref.y.values - y)))
    pts = np.array([t for t in res.tie_point_table if t[5]])
    # Field at the point: inverse-distance mean of the nearest kept tie points.
    d = np.hypot(pts[:, 0] - row, pts[:, 1] - col)
    near = np.argsort(d)[:4]
    w = 1.0 / np.maximum(d[near], 1.0)
    dr = float(np.sum(w * pts[near, 2]) / w.sum())
    dc = float(np.sum(w * pts[near, 3]) / w.sum())
    sx, sy = dc * RES, -dr * RES
    print(f"\nS2 local at ({x:.0f}, {y:.0f}) {ref.shape}: {res.tie_points}/{res.tie_points_total} tie points, "
          f"shift X {sx:+.2f} Y {sy:+.2f} m (AROSICS {expect_x:+.2f} {expect_y:+.2f}), "
          f"mean of warp X {res.shift_x_m:+.2f} Y {res.shift_y_m:+.2f} m, tie-point residual "
          f"{res.residual_rmse_px:.3f} px")
    assert abs(sx - expect_x) <= 2.0 and abs(sy - expect_y) <= 2.0  # 0.2 px
    assert res.similarity_after > res.similarity_before
    assert out.shape == ref.shape and out.rio.crs == ref.rio.crs
