"""Clouds and cloud shadows in pixel change: ``unobserved_mask`` and ``unobserved=``.

Synthetic cases check the contract: hidden pixels are nodata for the statistics, NaN in
the magnitude, never change. The masks themselves are checked on real OSCD Paris in
tests/test_oscd.py (which shares its s2cloudless runs with the accuracy guard).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from changedet.change import ChangeError, change_score, detect_change, unobserved_mask


def _pair(seed=0, shape=(60, 70)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = np.stack([1000 + 300 * np.sin(xx / (6 + b)) + 200 * np.cos(yy / (4 + b)) for b in range(4)])
    before = base + rng.normal(0, 20, base.shape)
    after = 1.1 * base + 30 + rng.normal(0, 20, base.shape)
    after[:, 10:20, 10:22] += np.array([900, 700, 1200, -300])[:, None, None]  # real change
    after[:, 35:55, 40:65] = 6000.0  # a "cloud": huge, would dominate the statistics
    coords = {"band": ["B02", "B03", "B04", "B08"], "y": 5e6 - 10.0 * np.arange(shape[0]),
              "x": 4e5 + 10.0 * np.arange(shape[1])}
    da = lambda v: xr.DataArray(v.astype("float32"), dims=("band", "y", "x"), coords=coords)  # noqa: E731
    hidden = np.zeros(shape, bool)
    hidden[33:57, 38:67] = True
    return da(before), da(after), hidden


@pytest.mark.parametrize("method", ["irmad", "zscore", "diff"])
def test_hidden_pixels_are_nodata_and_out_of_the_statistics(method):
    before, after, hidden = _pair()
    res = detect_change(before, after, method=method, threshold="kilog", unobserved=hidden)
    mag = res.magnitude.values
    assert np.all(np.isnan(mag[hidden])) and np.all(np.isfinite(mag[~hidden]))
    assert not res.mask.values[hidden].any()
    # The real change is found, and nothing much else.
    assert res.mask.values[12:18, 12:20].all()
    assert res.mask.values.sum() < 2 * 10 * 12
    # Same magnitude as with the hidden pixels set to NaN by hand: they took no part in
    # the scene statistics (IR-MAD correlations, z-score scales).
    keep = xr.DataArray(~hidden, dims=("y", "x"))
    ref, _ = change_score(before.where(keep), after.where(keep), method)
    np.testing.assert_allclose(mag, ref.values, rtol=1e-5, equal_nan=True)
    # Without the mask the "cloud" is change.
    plain = detect_change(before, after, method=method, threshold="kilog")
    assert plain.mask.values[hidden].mean() > 0.5


def test_hidden_pixels_stay_nodata_after_smoothing_and_with_dask():
    before, after, hidden = _pair(1)
    res = detect_change(before, after, method="irmad", threshold="kilog", smooth=3, unobserved=hidden)
    assert np.all(np.isnan(res.magnitude.values[hidden]))
    lazy = detect_change(before.chunk({"y": 30, "x": 35}), after.chunk({"y": 30, "x": 35}), method="irmad",
                         threshold="kilog", smooth=3, unobserved=hidden)
    np.testing.assert_allclose(lazy.magnitude.values, res.magnitude.values, rtol=1e-4, equal_nan=True)
    np.testing.assert_array_equal(lazy.mask.values, res.mask.values)


def test_bad_unobserved_inputs():
    before, after, hidden = _pair()
    with pytest.raises(ChangeError, match="unobserved mask shape"):
        detect_change(before, after, unobserved=hidden[:-1])
    with pytest.raises(ChangeError, match="B01"):
        unobserved_mask(before)
