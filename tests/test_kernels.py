"""Tests for changedet.kernels: known answers, numpy == dask, laziness, CRS/coords."""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

import changedet.kernels.threshold as threshold_mod
from changedet.errors import ChangedetError, GridError
from changedet.grid import GridSpec
from changedet.kernels import (
    MAD_SCALE,
    KernelError,
    band_diff,
    change_magnitude,
    change_mask,
    changed_area_m2,
    cva,
    k_mad,
    log_ratio,
    normalized_diff,
    otsu,
    robust_baseline,
    spectral_index,
    zscore,
)

RES = 10.0
ROWS, COLS = 23, 17  # deliberately not divisible by the chunk sizes below
GRID = GridSpec.from_bounds("EPSG:32633", (500000.0, 4000000.0, 500000.0 + COLS * RES, 4000000.0 + ROWS * RES), RES)
BANDS = ["B02", "B03", "B04", "B08", "B11"]
CHUNKINGS = [
    {"y": 3, "x": 5},
    {"y": 7, "x": 4},
    {"y": -1, "x": 6},
    {"y": 10, "x": -1, "band": 2},
]


class ComputeCounter(Callback):
    """Counts dask computations started while active."""

    def __init__(self):
        super().__init__()
        self.starts = 0

    def _start(self, dsk):
        self.starts += 1


def _image(data, bands=BANDS):
    return GRID.attach(np.asarray(data), bands=bands if np.ndim(data) == 3 else None)


def _random_image(seed, nan_frac=0.1, bands=BANDS, offset=0.2):
    rng = np.random.default_rng(seed)
    data = offset + 0.05 * rng.standard_normal((len(bands), ROWS, COLS))
    data[rng.random(data.shape) < nan_frac] = np.nan
    return _image(data, bands)


def _random_stack(seed, n_time=9, nan_frac=0.15):
    rng = np.random.default_rng(seed)
    data = 0.2 + 0.01 * rng.standard_normal((n_time, len(BANDS), ROWS, COLS))
    data[rng.random(data.shape) < nan_frac] = np.nan
    times = np.array([f"2024-01-{d + 1:02d}" for d in range(n_time)], dtype="datetime64[ns]")
    planes = [_image(data[t]).expand_dims(time=[times[t]]) for t in range(n_time)]
    return xr.concat(planes, dim="time")


def _chunk(arr: xr.DataArray, chunks: dict) -> xr.DataArray:
    return arr.chunk({d: c for d, c in chunks.items() if d in arr.dims})


def _assert_same(numpy_result, dask_result):
    assert isinstance(dask_result.data, da.Array), "dask input must give a lazy dask result"
    assert not isinstance(numpy_result.data, da.Array)
    computed = dask_result.compute()
    assert computed.dims == numpy_result.dims
    if numpy_result.dtype == bool:
        np.testing.assert_array_equal(computed.values, numpy_result.values)
    else:
        assert computed.dtype == numpy_result.dtype
        np.testing.assert_allclose(computed.values, numpy_result.values, rtol=1e-12, atol=0, equal_nan=True)
    xr.testing.assert_identical(computed.coords.to_dataset(), numpy_result.coords.to_dataset())


def _assert_georef(result: xr.DataArray, ref: xr.DataArray):
    np.testing.assert_array_equal(result["x"].values, ref["x"].values)
    np.testing.assert_array_equal(result["y"].values, ref["y"].values)
    assert "spatial_ref" in result.coords
    assert result["spatial_ref"].attrs["crs_wkt"] == ref["spatial_ref"].attrs["crs_wkt"]
    assert result.rio.crs == ref.rio.crs
    assert GridSpec.of(result).same_as(GridSpec.of(ref))


# ---------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------
def _pair_2x2():
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 20, 20), 10)
    before = g.attach(np.array([[1.0, 2.0], [0.0, np.nan]]))
    after = g.attach(np.array([[3.0, 1.0], [0.0, 5.0]]))
    return before, after


def test_band_diff_known():
    before, after = _pair_2x2()
    np.testing.assert_array_equal(band_diff(before, after).values, [[2.0, -1.0], [0.0, np.nan]])


def test_normalized_diff_known():
    before, after = _pair_2x2()
    out = normalized_diff(before, after).values
    np.testing.assert_allclose(out, [[0.5, -1.0 / 3.0], [np.nan, np.nan]])  # 0/0 and NaN -> NaN


def test_log_ratio_known():
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 20, 20), 10)
    before = g.attach(np.array([[1.0, 2.0], [0.0, np.nan]]))
    after = g.attach(np.array([[10.0, 1.0], [1e-6, 1.0]]))
    out = log_ratio(before, after).values
    np.testing.assert_allclose(out, [[10.0, -10 * math.log10(2)], [0.0, np.nan]], atol=1e-12)
    assert np.isfinite(log_ratio(before, after * 0).values[0, 0])  # zero power is floored, not -inf


def test_cva_known():
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 20, 20), 10)
    before = g.attach(np.zeros((2, 2, 2)), bands=["R", "NIR"])
    after_data = np.zeros((2, 2, 2))
    after_data[:, 0, 0] = [3.0, 4.0]
    after_data[:, 1, 1] = [1.0, np.nan]
    after = g.attach(after_data, bands=["R", "NIR"])
    out = cva(before, after)
    assert out.dims == ("y", "x")
    np.testing.assert_array_equal(out.values, [[5.0, 0.0], [0.0, np.nan]])


@pytest.mark.parametrize(
    "bands, index, band_map, expected",
    [
        (["R", "G", "B", "NIR"], "ndvi", None, (0.4 - 0.1) / (0.4 + 0.1)),
        (["B02", "B03", "B04", "B08"], "ndvi", None, (0.4 - 0.1) / (0.4 + 0.1)),
        (["R", "G", "B", "NIR"], "ndwi", None, (0.2 - 0.4) / (0.2 + 0.4)),
        (["B02", "B03", "B04", "B08"], "NDWI", None, (0.2 - 0.4) / (0.2 + 0.4)),
        (["red", "green", "blue", "nir"], "ndvi", None, (0.4 - 0.1) / (0.4 + 0.1)),
        (["b1", "b2", "b3", "b4"], "ndvi", {"red": "b1", "nir": "b4"}, (0.4 - 0.1) / (0.4 + 0.1)),
    ],
)
def test_spectral_index_known(bands, index, band_map, expected):
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 20, 20), 10)
    # red-ish band at position 0/2 depends on naming; fill by role instead
    role_values = {"R": 0.1, "B04": 0.1, "red": 0.1, "b1": 0.1,
                   "G": 0.2, "B03": 0.2, "green": 0.2, "b2": 0.2,
                   "B": 0.05, "B02": 0.05, "blue": 0.05, "b3": 0.05,
                   "NIR": 0.4, "B08": 0.4, "nir": 0.4, "b4": 0.4}
    data = np.stack([np.full((2, 2), role_values[b]) for b in bands])
    out = spectral_index(g.attach(data, bands=bands), index, band_map=band_map)
    assert out.dims == ("y", "x") and "band" not in out.coords
    np.testing.assert_allclose(out.values, expected)


def test_ndbi_needs_swir():
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 20, 20), 10)
    data = np.stack([np.full((2, 2), v) for v in (0.1, 0.2, 0.3, 0.25, 0.35)])
    img = g.attach(data, bands=["B02", "B03", "B04", "B08", "B11"])
    np.testing.assert_allclose(spectral_index(img, "ndbi").values, (0.35 - 0.25) / (0.35 + 0.25))
    vhr = g.attach(data[:4], bands=["B", "G", "R", "NIR"])
    with pytest.raises(KernelError, match="swir1"):
        spectral_index(vhr, "ndbi")
    with pytest.raises(KernelError, match="unknown spectral index"):
        spectral_index(img, "evi")


def test_robust_baseline_known_and_ignores_nan_dates():
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 20, 20), 10)
    series = np.array([1.0, 2.0, np.nan, 4.0, 100.0])
    data = np.zeros((5, 2, 2))
    data[:, 0, 0] = series
    data[:, 0, 1] = np.nan  # never clear
    data[:, 1, 0] = [5.0, np.nan, np.nan, np.nan, np.nan]  # one clear date
    data[:, 1, 1] = [1.0, 1.0, 1.0, 1.0, 1.0]
    stack = xr.concat([g.attach(d) for d in data], dim="time")
    base = robust_baseline(stack)
    assert set(base.data_vars) == {"median", "mad", "count"}
    # finite: 1, 2, 4, 100 -> median 3; |dev| 2, 1, 1, 97 -> median 1.5
    assert base["median"].values[0, 0] == 3.0
    assert base["mad"].values[0, 0] == pytest.approx(MAD_SCALE * 1.5)
    np.testing.assert_array_equal(base["count"].values, [[4, 0], [1, 5]])
    assert np.isnan(base["median"].values[0, 1]) and np.isnan(base["mad"].values[0, 1])
    assert base["median"].values[1, 0] == 5.0 and base["mad"].values[1, 0] == 0.0
    assert base["mad"].values[1, 1] == 0.0


def test_robust_baseline_ignores_cloudy_dates():
    stack = _random_stack(3, nan_frac=0.0)
    cloudy = stack.copy()
    cloudy[2] = np.nan  # a fully clouded date
    cloudy[5, :, :10, :] = np.nan  # a half-clouded date
    with_clouds = robust_baseline(cloudy)
    # pixels of the half-clouded date: baseline equals that of the stack without it
    clear = robust_baseline(stack.drop_isel(time=[2, 5]))
    partial = robust_baseline(stack.drop_isel(time=[2]))
    np.testing.assert_array_equal(with_clouds["median"].values[:, :10], clear["median"].values[:, :10])
    np.testing.assert_array_equal(with_clouds["mad"].values[:, :10], clear["mad"].values[:, :10])
    np.testing.assert_array_equal(with_clouds["median"].values[:, 10:], partial["median"].values[:, 10:])
    np.testing.assert_array_equal(with_clouds["mad"].values[:, 10:], partial["mad"].values[:, 10:])


def test_zscore_and_change_magnitude_known():
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 20, 20), 10)
    base = xr.Dataset(
        {
            "median": g.attach(np.full((2, 2, 2), 3.0), bands=["R", "NIR"]),
            "mad": g.attach(np.stack([np.full((2, 2), 2.0), np.full((2, 2), 0.0)]), bands=["R", "NIR"]),
        }
    )
    img = g.attach(np.stack([np.full((2, 2), 9.0), np.full((2, 2), 3.5)]), bands=["R", "NIR"])
    z = zscore(img, base, mad_floor=0.125)
    np.testing.assert_allclose(z.sel(band="R").values, 3.0)  # (9 - 3) / 2
    np.testing.assert_allclose(z.sel(band="NIR").values, 4.0)  # (3.5 - 3) / floor 0.125
    mag = change_magnitude(img, base, mad_floor=0.125)
    assert mag.dims == ("y", "x")
    np.testing.assert_allclose(mag.values, math.sqrt((9 + 16) / 2))
    with pytest.raises(KernelError, match="mad_floor"):
        zscore(img, base, mad_floor=0.0)


def test_k_mad_known():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan, np.inf, -np.inf])
    assert k_mad(values) == pytest.approx(3.0 + 3.0 * MAD_SCALE * 1.0)
    assert k_mad(values, k=2.0) == pytest.approx(3.0 + 2.0 * MAD_SCALE * 1.0)
    assert k_mad(np.array([5.0, 5.0, np.nan])) == 5.0
    with pytest.raises(KernelError, match="no finite values"):
        k_mad(np.array([np.nan, np.inf]))


def test_otsu_known():
    values = np.concatenate([np.zeros(100), np.full(50, 10.0), [np.nan, np.inf]])
    assert otsu(values) == pytest.approx(5.0)  # mid-gap, not hugging the lower class
    values = np.concatenate([np.random.default_rng(0).normal(0, 1, 2000), np.random.default_rng(1).normal(20, 1, 500)])
    t = otsu(values)
    assert 4.0 < t < 16.0
    assert otsu(np.array([2.0, 2.0])) == 2.0
    with pytest.raises(KernelError):
        otsu(np.array([np.nan]))


def test_change_mask_known():
    mag = np.zeros((12, 12))
    mag[2:7, 2:7] = 5.0  # 5x5 block
    mag[10, 10] = 5.0  # speck: removed by the opening
    mag[9:12, 0:3] = 5.0  # 3x3 block: opening leaves a 5-px cross, min area removes it
    mag[0, 11] = np.nan  # never change
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, 120, 120), 10)
    mask = change_mask(g.attach(mag), threshold=1.0, min_area_px=9, opening_radius_px=1)
    assert mask.dtype == bool
    expected = np.zeros((12, 12), bool)
    expected[2:7, 2:7] = True
    for r, c in [(2, 2), (2, 6), (6, 2), (6, 6)]:  # a cross footprint cuts the corners
        expected[r, c] = False
    np.testing.assert_array_equal(mask.values, expected)
    assert changed_area_m2(mask) == 21 * RES * RES
    # without cleaning the mask is the plain threshold
    raw = change_mask(g.attach(mag), threshold=1.0, min_area_px=0, opening_radius_px=0)
    np.testing.assert_array_equal(raw.values, mag > 1.0)


def test_changed_area_needs_projected_crs():
    g = GridSpec.from_bounds("EPSG:4326", (10.0, 45.0, 10.02, 45.02), 0.01)
    mask = g.attach(np.ones((2, 2), bool))
    with pytest.raises(GridError, match="projected"):
        changed_area_m2(mask)
    with pytest.raises(KernelError):
        changed_area_m2(np.ones((2, 2), bool))


def test_grid_mismatch_is_refused():
    before = _random_image(0)
    shifted = before.assign_coords(x=before["x"] + RES / 2)
    with pytest.raises(GridError, match="different x coordinates"):
        band_diff(before, shifted)
    with pytest.raises(GridError):
        band_diff(before, before.isel(x=slice(1, None)))
    other_crs = before.rio.write_crs("EPSG:32634")
    with pytest.raises(GridError, match="CRS"):
        cva(before, other_crs)
    with pytest.raises(ChangedetError):
        band_diff(before, before.isel(band=[0, 1]))
    # same bands in another order are matched by name
    reordered = before.isel(band=[4, 3, 2, 1, 0])
    np.testing.assert_array_equal(band_diff(before, reordered).values, np.where(np.isnan(before), np.nan, 0.0))


def test_bare_arrays_supported():
    a = np.array([[1.0, 2.0], [3.0, np.nan]])
    b = np.array([[2.0, 2.0], [6.0, 1.0]])
    out = band_diff(a, b)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [[1.0, 0.0], [3.0, np.nan]])
    lazy = band_diff(da.from_array(a, chunks=1), da.from_array(b, chunks=1))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), out)
    assert isinstance(change_mask(np.eye(4), threshold=0.5, min_area_px=0, opening_radius_px=0), np.ndarray)


# ---------------------------------------------------------------------------------------
# numpy == dask
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_pairwise_numpy_equals_dask(chunks):
    before, after = _random_image(1), _random_image(2, offset=0.25)
    b, a = _chunk(before, chunks), _chunk(after, chunks)
    _assert_same(band_diff(before, after), band_diff(b, a))
    _assert_same(normalized_diff(before, after), normalized_diff(b, a))
    _assert_same(log_ratio(before, after), log_ratio(b, a))
    _assert_same(cva(before, after), cva(b, a))
    for index in ("ndvi", "ndwi", "ndbi"):
        _assert_same(spectral_index(after, index), spectral_index(a, index))
    # mixed numpy / dask inputs are lazy too
    _assert_same(band_diff(before, after), band_diff(before, a))


@pytest.mark.parametrize("chunks", CHUNKINGS + [{"time": 2, "y": 6, "x": 5}])
def test_baseline_numpy_equals_dask(chunks):
    stack = _random_stack(4)
    image = _random_image(5)
    base_np = robust_baseline(stack)
    base_dk = robust_baseline(_chunk(stack, chunks))
    for var in ("median", "mad", "count"):
        _assert_same(base_np[var], base_dk[var])
    img_dk = _chunk(image, chunks)
    _assert_same(zscore(image, base_np, mad_floor=0.005), zscore(img_dk, base_dk, mad_floor=0.005))
    _assert_same(zscore(image, base_np, mad_floor=0.005), zscore(img_dk, base_np, mad_floor=0.005))
    _assert_same(
        change_magnitude(image, base_np, mad_floor=0.005),
        change_magnitude(img_dk, base_dk, mad_floor=0.005),
    )


def _blobby_field(seed, shape=(61, 47)):
    """Smoothed noise: thresholds give blobs of many sizes, thin necks and edge touches."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal(shape), 1.2)
    field[rng.random(shape) < 0.03] = np.nan
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, shape[1] * RES, shape[0] * RES), RES)
    return g.attach(field)


@pytest.mark.parametrize(
    "radius, min_area, connectivity",
    [(0, 0, 1), (2, 0, 1), (1, 9, 1), (2, 15, 1), (1, 20, 2), (0, 7, 2)],
)
@pytest.mark.parametrize("chunks", [{"y": 5, "x": 7}, {"y": 13, "x": 11}, {"y": -1, "x": 20}])
def test_change_mask_numpy_equals_dask(radius, min_area, connectivity, chunks):
    for seed in range(2):
        mag = _blobby_field(seed)
        kw = dict(threshold=0.1, min_area_px=min_area, opening_radius_px=radius, connectivity=connectivity)
        expected = change_mask(mag, **kw)
        assert 0 < int(expected.sum()) < expected.size
        _assert_same(expected, change_mask(mag.chunk(chunks), **kw))


def _segments(seed, shape, lengths, width):
    """Straight bars of given lengths (and width) at random places: objects whose area
    sits right at the min-area limit, crossing chunk edges at every offset."""
    rng = np.random.default_rng(seed)
    mag = np.zeros(shape)
    for _ in range(40):
        length = int(rng.choice(lengths))
        r0, c0 = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
        if rng.random() < 0.5:
            mag[r0 : r0 + width, c0 : c0 + length] = 1.0
        else:
            mag[r0 : r0 + length, c0 : c0 + width] = 1.0
    g = GridSpec.from_bounds("EPSG:32633", (0, 0, shape[1] * RES, shape[0] * RES), RES)
    return g.attach(mag)


@pytest.mark.parametrize("radius, width", [(0, 1), (1, 3)])
@pytest.mark.parametrize("chunks", [{"y": 16, "x": 16}, {"y": 23, "x": 19}])
def test_change_mask_min_area_exact_across_chunk_edges(radius, width, chunks):
    # Bars of area min_area_px +- a few: the filter decides on objects that are cut by a
    # chunk edge, so an overlap one pixel too shallow would show up here.
    min_area = 12
    lengths = [(min_area + d) // width for d in range(-3, 4)] + [min_area // width + 1]
    for seed in range(3):
        mag = _segments(seed, (70, 64), lengths, width)
        kw = dict(threshold=0.5, min_area_px=min_area, opening_radius_px=radius)
        expected = change_mask(mag, **kw)
        assert 0 < int(expected.sum()) < int((mag > 0.5).sum())
        _assert_same(expected, change_mask(mag.chunk(chunks), **kw))


def test_change_mask_stack_numpy_equals_dask():
    mag = xr.concat([_blobby_field(s) for s in range(3)], dim="time")
    kw = dict(threshold=0.2, min_area_px=10)
    _assert_same(change_mask(mag, **kw), change_mask(mag.chunk({"time": 2, "y": 9, "x": 8}), **kw))


@pytest.mark.parametrize(
    "chunks, small_limits", [(97, False), (4096, False), (333, True)]
)
def test_thresholds_numpy_equals_dask(chunks, small_limits, monkeypatch):
    if small_limits:
        # force the multi-pass histogram refinement instead of one gather
        monkeypatch.setattr(threshold_mod, "_EXTRACT_LIMIT", 17)
        monkeypatch.setattr(threshold_mod, "_SELECT_BINS", 8)
    rng = np.random.default_rng(7)
    values = np.abs(rng.standard_normal(4000)) ** 2
    values[rng.random(4000) < 0.1] = np.nan
    values[:5] = np.inf
    values[10:20] = 1.5  # ties
    lazy = da.from_array(values, chunks=chunks)
    assert k_mad(lazy) == k_mad(values)
    assert k_mad(lazy, k=4.5) == k_mad(values, k=4.5)
    assert otsu(lazy) == otsu(values)


def test_thresholds_accept_dataarrays():
    field = _blobby_field(1)
    lazy = field.chunk({"y": 7, "x": 9})
    assert k_mad(lazy) == k_mad(field) == k_mad(field.values)
    assert otsu(lazy) == otsu(field) == otsu(field.values)


def test_k_mad_matches_numpy_reference():
    rng = np.random.default_rng(11)
    values = rng.standard_normal(5001)
    med = np.median(values)
    mad = np.median(np.abs(values - med))
    expected = med + 3.0 * MAD_SCALE * mad
    assert k_mad(values) == pytest.approx(expected, rel=1e-12)
    assert k_mad(da.from_array(values, chunks=700)) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------
# Laziness
# ---------------------------------------------------------------------------------------
def test_counter_sees_computes():
    with dask.config.set(scheduler="sync"), ComputeCounter() as counter:
        da.ones(4, chunks=2).sum().compute()
    assert counter.starts >= 1


def test_lazy_kernels_do_not_compute():
    before = _random_image(1).chunk({"y": 5, "x": 4})
    after = _random_image(2).chunk({"y": 5, "x": 4})
    stack = _random_stack(3).chunk({"time": 3, "y": 5, "x": 4})
    with dask.config.set(scheduler="sync"), ComputeCounter() as counter:
        results = [
            band_diff(before, after),
            normalized_diff(before, after),
            log_ratio(before, after),
            cva(before, after),
            spectral_index(after, "ndvi"),
        ]
        base = robust_baseline(stack)
        results += [base["median"], base["mad"], base["count"]]
        results.append(zscore(after, base, mad_floor=0.005))
        mag = change_magnitude(after, base, mad_floor=0.005)
        results.append(mag)
        results.append(change_mask(mag, threshold=3.0, min_area_px=9, opening_radius_px=1))
    assert counter.starts == 0
    for r in results:
        assert isinstance(r.data, da.Array)


def test_thresholds_compute_without_loading_everything():
    """Thresholds do compute, but through reductions: no gather of the full array."""
    field = _blobby_field(2)
    lazy = field.chunk({"y": 10, "x": 10})
    with dask.config.set(scheduler="sync"), ComputeCounter() as counter:
        k_mad(lazy)
        otsu(lazy)
    assert 1 <= counter.starts <= 8


# ---------------------------------------------------------------------------------------
# End to end: baseline -> magnitude -> threshold -> mask
# ---------------------------------------------------------------------------------------
def _scenario():
    rng = np.random.default_rng(42)
    sigma = 0.01
    n_time = 12
    data = 0.2 + sigma * rng.standard_normal((n_time, len(BANDS), ROWS, COLS))
    data[3] = np.nan  # fully cloudy date
    data[7, :, 5:15, :] = np.nan  # partly cloudy date
    data[9, :, 0:4, 0:4] = 5.0  # wild values in one date: the median shrugs them off
    times = np.array([f"2024-{m + 1:02d}-01" for m in range(n_time)], dtype="datetime64[ns]")
    stack = xr.concat([_image(d).expand_dims(time=[t]) for d, t in zip(data, times)], dim="time")
    unchanged = 0.2 + sigma * rng.standard_normal((len(BANDS), ROWS, COLS))
    changed = unchanged.copy()
    block = (slice(8, 16), slice(4, 12))
    return stack, _image(unchanged), changed, block, sigma


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("method", ["k_mad", "otsu"])
def test_inserted_change_is_flagged(lazy, method):
    stack, unchanged, changed_data, block, sigma = _scenario()
    base = robust_baseline(stack.chunk({"time": 4, "y": 8, "x": 8}) if lazy else stack)
    # the MAD recovers the noise level despite the cloudy and wild dates
    np.testing.assert_allclose(float(base["mad"].compute().median()), sigma, rtol=0.25)

    z_quiet = zscore(unchanged, base, mad_floor=0.005).compute()
    assert float(np.abs(z_quiet).median()) < 1.0
    assert float(np.abs(z_quiet).max()) < 8.0

    mad = base["mad"].values
    changed_data[(slice(None),) + block] += 10.0 * mad[(slice(None),) + block]  # +10 MAD
    changed = _image(changed_data)
    if lazy:
        changed = changed.chunk({"y": 8, "x": 8})
    mag = change_magnitude(changed, base, mad_floor=0.005)
    thr = k_mad(mag) if method == "k_mad" else otsu(mag)
    assert 1.5 < thr < 9.0
    mask = change_mask(mag, threshold=thr, min_area_px=9, opening_radius_px=1)
    truth = np.zeros((ROWS, COLS), bool)
    truth[block] = True
    m = mask.values
    assert not (m & ~truth).any(), "false alarms outside the changed block"
    assert (m & truth).sum() >= truth.sum() - 4  # only the corners may be opened away
    assert changed_area_m2(mask) == pytest.approx(m.sum() * RES * RES)
    # no change, no mask
    quiet_mag = change_magnitude(unchanged, base, mad_floor=0.005)
    quiet = change_mask(quiet_mag, threshold=thr, min_area_px=9, opening_radius_px=1)
    assert not quiet.values.any()


# ---------------------------------------------------------------------------------------
# CRS and coordinates
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("lazy", [False, True])
def test_crs_and_coords_preserved(lazy):
    before, after = _random_image(1), _random_image(2)
    stack = _random_stack(3)
    # a scalar time coord that differs between the two dates must not drop spatial_ref
    before = before.assign_coords(time=np.datetime64("2024-01-01", "ns"))
    after = after.assign_coords(time=np.datetime64("2024-02-01", "ns"))
    if lazy:
        before, after, stack = before.chunk({"y": 7}), after.chunk({"y": 7}), stack.chunk({"y": 7})
    base = robust_baseline(stack)
    mag = change_magnitude(after, base, mad_floor=0.005)
    outputs = [
        band_diff(before, after),
        normalized_diff(before, after),
        log_ratio(before, after),
        cva(before, after),
        spectral_index(after, "ndvi"),
        base["median"],
        base["mad"],
        zscore(after, base, mad_floor=0.005),
        mag,
        change_mask(mag, threshold=2.0),
    ]
    for out in outputs:
        _assert_georef(out, before)
        assert out.attrs == {}
    assert band_diff(before, after).dims == ("band", "y", "x")
    assert zscore(after, base, mad_floor=0.005).dims == ("band", "y", "x")
    assert mag.dims == ("y", "x")
