"""``io.read_raster`` masks nodata-only bands itself (speed): the result must equal GDAL's masks.

A regression guard: the behaviour is unchanged, so these tests pass on the code before
the fast path too (they do not import it); they fail if the fast path masks differently
from ``DatasetReader.read(masked=True)`` for any nodata layout below.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from changedet.io import read_raster

CASES = [("float32", -9999.0), ("float32", None), ("float32", float("nan")), ("float64", -1e30),
         ("uint16", 0), ("int16", -32768), ("uint8", 255), ("uint8", 0.5), ("float32", 0.1),
         ("float32", -3.4e38), ("int32", 7), ("float32", 1e-30)]


def _write(path, dtype, nodata, *, mask=False):
    rng = np.random.default_rng(7)
    if dtype.startswith("float"):
        a = rng.normal(0, 1, (2, 48, 40)).astype(dtype)
        a[1, 10:12, 10:12] = np.nan  # NaN that is not the nodata value stays NaN
    else:
        info = np.iinfo(dtype)
        a = rng.integers(max(info.min, -50), min(info.max, 300), (2, 48, 40)).astype(dtype)
    if nodata is not None:
        a[:, :5, :5] = np.nan if np.isnan(nodata) else np.array(nodata).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", driver="GTiff", height=48, width=40, count=2, dtype=dtype, crs="EPSG:32633",
                           transform=from_origin(500000, 4000048, 1, 1), nodata=nodata) as dst:
            dst.write(a)
            if mask:
                m = np.full((48, 40), 255, np.uint8)
                m[20:30, 20:30] = 0
                dst.write_mask(m)


def _gdal(path):
    with rasterio.open(path) as src:
        return np.ma.filled(src.read(masked=True).astype("float32"), np.float32(np.nan))


@pytest.mark.parametrize("dtype,nodata", CASES, ids=[f"{d}-{n}" for d, n in CASES])
def test_nodata_masks_equal_gdal(tmp_path, dtype, nodata):
    path = tmp_path / "a.tif"
    _write(path, dtype, nodata)
    got = read_raster(path).values
    want = _gdal(path)
    assert np.array_equal(got, want, equal_nan=True)
    if nodata is not None:
        assert np.isnan(got[:, :5, :5]).all()


def test_internal_mask_still_applies(tmp_path):
    path = tmp_path / "m.tif"
    _write(path, "float32", -9999.0, mask=True)
    got = read_raster(path).values
    assert np.isnan(got[:, 20:30, 20:30]).all()
    assert np.array_equal(got, _gdal(path), equal_nan=True)


def test_as_stored_band_keeps_raw_values(tmp_path):
    path = tmp_path / "c.tif"
    _write(path, "uint16", 0)
    with rasterio.open(path) as src:
        raw = src.read()
    da = read_raster(path, bands=["B04", "CLM"], as_stored=["clm"])
    assert np.array_equal(da.sel(band="CLM").values, raw[1].astype("float32"))
    assert np.isnan(da.sel(band="B04").values[:5, :5]).all()


NEAR = [("float32", -9999.0), ("float32", 0.1), ("float32", -3.4028230607370965e+38), ("float64", -1e30),
        ("float64", 12.5), ("float32", 1e-30)]


@pytest.mark.parametrize("dtype,nodata", NEAR, ids=[f"{d}-{n}" for d, n in NEAR])
def test_pixels_a_few_ulps_from_the_nodata_tag_are_masked_as_gdal_masks_them(tmp_path, dtype, nodata):
    # GDAL's nodata mask takes floats within ~2 float32 epsilons (relative) of the tag as
    # no data (an ESRI file's -FLT_MAX pixels under a tag rounded to -3.402823e+38; LERC).
    n = np.array(nodata, dtype)
    vals = [n]
    for direction in (np.inf, -np.inf):
        x = n.copy()
        for _ in range(12):
            x = np.nextafter(x, np.array(direction, dtype))
            vals.append(x.copy())
    if nodata == -3.4028230607370965e+38:
        vals.append(np.array(-np.finfo(np.float32).max, dtype))  # the ESRI layout
    vals = np.array(vals, dtype)
    path = tmp_path / "near.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", driver="GTiff", height=1, width=vals.size, count=1, dtype=dtype,
                           crs="EPSG:32633", transform=from_origin(500000, 4000001, 1, 1), nodata=nodata) as dst:
            dst.write(vals.reshape(1, 1, -1))
    got, want = read_raster(path).values, _gdal(path)
    assert np.isnan(want).sum() > 1  # GDAL does merge near neighbours: the case is live
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got, want, equal_nan=True)
