"""A reference window inside a larger moving scene on the same pixel lattice.

``coregister`` cuts such a moving image with a slice (no resampling, converted after
cutting, so a lazily opened file reads only the window). The result must be the same
as registering the moving image already cut to the reference grid.
"""

from __future__ import annotations

import numpy as np
import rioxarray
import xarray as xr
from affine import Affine

from changedet.coreg import coregister
from changedet.grid import GridSpec
from test_coreg import fractal, grid_at, spline_shift


def _scene_pair():
    base = fractal(320, seed=21) * 1000 + 3000
    grid = grid_at((320, 320))
    moving = grid.attach(spline_shift(base, (2.3, -1.6))[None], bands=["nir"])
    # The reference: a 160 px window of the unshifted scene, 70 rows and 90 columns in.
    ref_grid = GridSpec(grid.crs, grid.transform @ Affine.translation(90, 70), (160, 160))
    reference = ref_grid.attach(base[70:230, 90:250][None], bands=["nir"])
    return reference, moving


def test_window_inside_moving_scene_equals_precut_moving(tmp_path):
    reference, moving = _scene_pair()
    pre_cut = moving.isel(y=slice(70, 230), x=slice(90, 250))
    out_a, res_a = coregister(reference, moving)
    out_b, res_b = coregister(reference, pre_cut)
    assert res_a == res_b
    assert res_a.applied and abs(res_a.shift_row_px + 2.3) < 0.05 and abs(res_a.shift_col_px - 1.6) < 0.05
    np.testing.assert_array_equal(out_a.values, out_b.values)
    for c in ("x", "y"):
        np.testing.assert_array_equal(out_a[c].values, reference[c].values)
    assert GridSpec.of(out_a).same_as(GridSpec.of(reference))

    # The same from a lazily opened GeoTIFF with an integer nodata value.
    path = tmp_path / "moving.tif"
    scaled = xr.where(np.isfinite(moving), moving, -9999).astype("float32")
    scaled.rio.write_nodata(-9999, encoded=False, inplace=True)
    scaled.rio.to_raster(path)
    lazy = rioxarray.open_rasterio(path).assign_coords(band=["nir"])
    assert lazy.rio.nodata == -9999
    out_c, res_c = coregister(reference, lazy)
    assert abs(res_c.shift_row_px - res_a.shift_row_px) < 0.02
    assert abs(res_c.shift_col_px - res_a.shift_col_px) < 0.02
    assert out_c.rio.nodata is None or np.isnan(out_c.rio.nodata)


def test_window_partly_outside_moving_scene_is_filled_with_nan():
    reference, moving = _scene_pair()
    # Moving covers only its first 200 columns: the reference's last 50 lie outside it.
    part = moving.isel(x=slice(0, 200))
    out, res = coregister(reference, part, min_reliability=0.0)
    assert out.shape == reference.shape
    np.testing.assert_array_equal(out.x.values, reference.x.values)
    # The shift moves the content 1.6 columns right, into the first outside column.
    assert res.applied and abs(res.shift_col_px - 1.6) < 0.05
    assert np.isnan(out.values[0, :, -49:]).all()
    assert np.isfinite(out.values[0, 10:-10, 10:-50]).all()
