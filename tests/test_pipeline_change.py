"""The daily run's change magnitude (fused kernel) equals the kernels it stands for."""

import numpy as np
import pytest
import xarray as xr

from changedet.kernels import change_magnitude, robust_baseline
from changedet.pipeline import _change_magnitude


@pytest.mark.parametrize("n_dates", [3, 4, 6])
def test_change_magnitude_matches_robust_baseline_path(n_dates):
    rng = np.random.default_rng(n_dates)
    shape = (n_dates, 4, 37, 53)
    hist = rng.normal(0.2, 0.03, shape).astype("float32")
    hist[rng.random(shape) < 0.15] = np.nan           # clouds and nodata on some dates
    hist[:, :, 0, 0] = np.nan                          # a pixel never observed
    hist[:, :, 1, 1] = 0.25                            # a constant history (MAD 0: the floor)
    img = rng.normal(0.2, 0.05, shape[1:]).astype("float32")
    img[2, 5, 7] = np.nan                              # one band missing: unknown, not small
    coords = {"band": ["B02", "B03", "B04", "B08"], "y": np.arange(shape[2]) * -10.0,
              "x": np.arange(shape[3]) * 10.0}
    h = xr.DataArray(hist, dims=("time", "band", "y", "x"), coords={**coords, "time": np.arange(n_dates)})
    i = xr.DataArray(img, dims=("band", "y", "x"), coords=coords)
    from changedet.kernels.fast import HAVE_NUMBA

    assert HAVE_NUMBA  # the daily run's path; without numba both sides would be the same code
    want = change_magnitude(i, robust_baseline(h, dim="time"), mad_floor=0.01)
    got = _change_magnitude(h, i, mad_floor=0.01)
    assert got.dims == want.dims == ("y", "x")
    np.testing.assert_array_equal(got.values, want.values)
    assert np.isnan(got.values[0, 0]) and np.isnan(got.values[5, 7])
    # The cube decodes to float64: computed in float32, equal to float32 rounding.
    want64 = change_magnitude(i, robust_baseline(h.astype("float64"), dim="time"), mad_floor=0.01)
    np.testing.assert_array_equal(_change_magnitude(h.astype("float64"), i, mad_floor=0.01).values, want.values)
    np.testing.assert_allclose(got.values, want64.values, rtol=1e-5, atol=1e-5)
