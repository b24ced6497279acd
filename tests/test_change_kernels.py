"""New change kernels: CVA direction, index change, IR-MAD, KI / chi2 thresholds, components."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy.ndimage import label as nd_label
from scipy.stats import chi2 as chi2_dist

from changedet.errors import GridError
from changedet.grid import GridSpec
from changedet.kernels import (
    KernelError,
    band_diff,
    change_mask,
    chi2_threshold,
    cva,
    cva_direction,
    index_change,
    irmad,
    kittler_illingworth,
    label_components,
    otsu,
    spectral_index,
)

RES = 10.0
ROWS, COLS = 61, 47
GRID = GridSpec.from_bounds("EPSG:32633", (500000.0, 4000000.0, 500000.0 + COLS * RES, 4000000.0 + ROWS * RES), RES)
BANDS = ["B02", "B03", "B04", "B08", "B11"]


def _img(data, bands=BANDS):
    return GRID.attach(np.asarray(data), bands=bands)


def _chunked(x, y=16, xx=13):
    return x.chunk({"y": y, "x": xx})


def _pair(seed=0, change=True):
    rng = np.random.default_rng(seed)
    before = rng.uniform(0.05, 0.4, size=(len(BANDS), ROWS, COLS)).astype("float32")
    # Different gain/offset per band (another season or calibration) plus noise.
    gain = np.array([1.2, 0.9, 1.1, 0.8, 1.3], dtype="float32")[:, None, None]
    after = (gain * before + 0.02 + rng.normal(0, 0.01, before.shape)).astype("float32")
    if change:
        after[:, 10:20, 10:22] = rng.uniform(0.05, 0.4, size=(len(BANDS), 10, 12))
    return _img(before), _img(after)


# --- CVA direction -------------------------------------------------------------------
def test_cva_direction_known():
    b = _img(np.zeros((2, ROWS, COLS), "float32"), ["R", "NIR"])
    a = b.copy(data=np.zeros((2, ROWS, COLS), "float32"))
    a[:, 0, 0] = [1, 1]  # brighter in both bands: along the diagonal
    a[:, 0, 1] = [-1, -1]  # darker: against it
    a[:, 0, 2] = [1, -1]  # spectral shape change, no net brightness
    a[:, 0, 3] = [np.nan, 1]
    d = cva_direction(b, a).values
    assert d[0, 0] == pytest.approx(0.0, abs=1e-3)
    assert d[0, 1] == pytest.approx(180.0, abs=1e-3)
    assert d[0, 2] == pytest.approx(90.0, abs=1e-3)
    assert np.isnan(d[0, 3])  # nodata propagates
    assert np.isnan(d[1, 1])  # zero change vector: no direction
    m = cva(b, a).values
    assert m[0, 2] == pytest.approx(np.sqrt(2))


def test_cva_direction_numpy_equals_dask():
    b, a = _pair()
    ref = cva_direction(b, a)
    lazy = cva_direction(_chunked(b).chunk({"band": 2}), _chunked(a))
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, ref.values)


# --- index change --------------------------------------------------------------------
def test_index_change_known_and_lazy():
    b, a = _pair(change=False)
    exp = spectral_index(a, "ndvi").values - spectral_index(b, "ndvi").values
    got = index_change(b, a, "ndvi")
    np.testing.assert_allclose(got.values, exp, rtol=0, atol=1e-6)
    assert got.name == "ndvi_change"
    lazy = index_change(_chunked(b), _chunked(a), "ndbi")
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, index_change(b, a, "ndbi").values)
    with pytest.raises(KernelError, match="unknown spectral index"):
        index_change(b, a, "evi")


# --- uint16 and nodata -----------------------------------------------------------------
def test_uint16_never_overflows():
    b = _img(np.full((2, ROWS, COLS), 60000, np.uint16), ["R", "NIR"])
    a = _img(np.full((2, ROWS, COLS), 100, np.uint16), ["R", "NIR"])
    assert float(band_diff(b, a)[0, 0, 0]) == -59900.0
    assert float(cva(b, a)[0, 0]) == pytest.approx(59900.0 * np.sqrt(2), rel=1e-6)
    assert float(band_diff(a, b)[0, 0, 0]) == 59900.0
    c = _pair()[0]
    res = irmad((c * 10000).astype(np.uint16), (c * 10000 + 7).astype(np.uint16))
    assert np.all(np.isfinite(res.chi2.values))


def test_nodata_is_never_change():
    b, a = _pair()
    a = a.copy()
    a[:, 12, 12] = np.nan  # inside the change
    b = b.copy()
    b[2, 40, 40] = np.nan  # one band missing in one date
    for mag in (cva(b, a), irmad(b, a).chi2):
        assert np.isnan(mag.values[12, 12]) and np.isnan(mag.values[40, 40])
        mask = change_mask(mag, threshold=float(np.nanpercentile(mag.values, 50)), min_area_px=1,
                           opening_radius_px=0)
        assert not mask.values[12, 12] and not mask.values[40, 40]


# --- IR-MAD ----------------------------------------------------------------------------
def test_irmad_finds_change_despite_radiometric_difference():
    b, a = _pair()
    res = irmad(b, a)
    assert res.converged and res.bands == len(BANDS)
    assert np.all(np.diff(res.rho) >= 0) and np.all(res.rho <= 1)
    thr = chi2_threshold(res.bands, alpha=0.01)
    flagged = res.chi2.values > thr
    truth = np.zeros((ROWS, COLS), bool)
    truth[10:20, 10:22] = True
    assert flagged[truth].mean() > 0.95
    # Calibrated: about alpha of the unchanged pixels exceed the 1 % quantile.
    assert flagged[~truth].mean() < 0.03
    p = res.p_nochange.values
    np.testing.assert_allclose(p, chi2_dist.sf(res.chi2.values, res.bands), rtol=1e-4, atol=1e-6)
    # A plain CVA is fooled by the gain change; IR-MAD is not.
    assert res.mad.dims == ("mad", "y", "x") and res.mad.sizes["mad"] == len(BANDS)
    assert res.chi2.rio.crs == b.rio.crs


def test_irmad_no_change_is_chi2_distributed():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 200, 200))
    y = 0.5 * x + rng.normal(scale=0.3, size=x.shape) + 4
    res = irmad(xr.DataArray(x, dims=("band", "y", "x")), xr.DataArray(y, dims=("band", "y", "x")))
    c = res.chi2.values.ravel()
    # Quantiles of the statistic match chi2(3) within a few percent.
    for q in (0.5, 0.9, 0.99):
        assert np.quantile(c, q) == pytest.approx(chi2_dist.ppf(q, 3), rel=0.06)


def test_irmad_heavy_tailed_no_change_stays_calibrated():
    # Student-t(3) no-change noise (urban scenes are heavier-tailed than Gaussian) and a
    # changed block. Weighting with the uncalibrated sqrt(2 (1 - rho)) spread inflated
    # chi2 here (median 1.14x chi2(4)'s) and collapsed outright on OSCD (tests/test_oscd.py).
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 150, 150))
    y = 0.6 * x + 0.4 * rng.standard_t(3, size=x.shape) + 2
    changed = np.zeros((150, 150), bool)
    changed[20:50, 30:60] = True
    y[:, changed] = rng.normal(3, 2, size=(4, changed.sum()))
    res = irmad(xr.DataArray(x, dims=("band", "y", "x")), xr.DataArray(y, dims=("band", "y", "x")))
    assert res.converged
    ratio = np.median(res.chi2.values[~changed]) / chi2_dist.ppf(0.5, 4)
    assert 0.92 < ratio < 1.08, ratio
    assert np.mean(res.p_nochange.values[changed] < 0.01) > 0.9


@pytest.mark.parametrize("chunks", [(16, 13), (61, 47), (7, 30)])
def test_irmad_numpy_equals_dask(chunks):
    b, a = _pair()
    ref = irmad(b, a)
    lazy = irmad(_chunked(b, *chunks), _chunked(a, *chunks))
    assert isinstance(lazy.chi2.data, da.Array)  # maps stay lazy; only statistics computed
    assert lazy.iterations == ref.iterations
    np.testing.assert_allclose(lazy.rho, ref.rho, rtol=1e-10)
    np.testing.assert_allclose(lazy.chi2.values, ref.chi2.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lazy.mad.values, ref.mad.values, rtol=1e-5, atol=1e-5)


def test_irmad_bad_input():
    b, a = _pair()
    with pytest.raises(KernelError, match="at least 2 bands"):
        irmad(b.isel(band=[0]), a.isel(band=[0]))
    with pytest.raises(KernelError, match="valid pixels"):
        irmad(b * np.nan, a)
    shifted = a.assign_coords(x=a.x + 5.0)
    with pytest.raises(GridError):
        irmad(b, shifted)


# --- thresholds -------------------------------------------------------------------------
def test_kittler_illingworth_unequal_classes():
    rng = np.random.default_rng(1)
    # 95 % narrow no-change around 1, 5 % wide change around 6: Otsu is pulled towards the
    # big class's tail less well than the minimum-error threshold.
    v = np.concatenate([rng.normal(1, 0.3, 95000), rng.normal(6, 1.0, 5000)])
    t = kittler_illingworth(v)
    assert 2.0 < t < 4.0
    err = np.mean((v > t) != (np.arange(v.size) >= 95000))
    assert err < 0.01
    t_dask = kittler_illingworth(da.from_array(v, chunks=7000))
    assert t_dask == t
    assert otsu(v) > 0  # still defined
    with pytest.raises(KernelError):
        kittler_illingworth(np.full(10, np.nan))


def test_chi2_threshold_known():
    assert chi2_threshold(1, alpha=0.05) == pytest.approx(3.841459, rel=1e-6)
    assert chi2_threshold(10, alpha=0.01) == pytest.approx(23.209251, rel=1e-6)
    with pytest.raises(KernelError):
        chi2_threshold(0)
    with pytest.raises(KernelError):
        chi2_threshold(3, alpha=1.5)


# --- connected components ------------------------------------------------------------------
def _same_partition(a, b):
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    assert np.array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]], axis=1), axis=0)
    return len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("chunks", [(5, 7), (16, 13), (1, 47), (61, 3)])
def test_components_whole_across_chunks(connectivity, chunks):
    rng = np.random.default_rng(7)
    m = rng.random((ROWS, COLS)) > 0.5
    m[:, 20] = True  # one component spanning every row chunk
    ref, n = label_components(m, connectivity=connectivity)
    exp, n_exp = nd_label(m, structure=np.ones((3, 3)) if connectivity == 2 else None)
    assert n == n_exp and np.array_equal(ref, exp)
    lab, n2 = label_components(da.from_array(m, chunks=chunks), connectivity=connectivity)
    assert isinstance(lab, da.Array) and n2 == n
    assert _same_partition(lab.compute(), ref)


def test_components_spiral_crossing_many_chunks():
    # A snake that crosses chunk faces repeatedly must come out as one component.
    m = np.zeros((40, 40), bool)
    for r in range(0, 40, 4):
        m[r, :] = True
        m[r : r + 4, 39 if (r // 4) % 2 == 0 else 0] = True
    lab, n = label_components(da.from_array(m, chunks=(3, 5)))
    assert n == 1 and set(np.unique(lab.compute())) == {0, 1}


# --- fused numba baseline + z-score ------------------------------------------------------
def test_sorting_network_sorts():
    from changedet.kernels.fast import sorting_network

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 19, 20, 33):
        net = sorting_network(n)
        for _ in range(30):
            v = rng.random(n)
            for i, j in net:
                if v[i] > v[j]:
                    v[i], v[j] = v[j], v[i]
            assert np.all(np.diff(v) >= 0), n


@pytest.mark.parametrize("lazy", [False, True])
def test_baseline_zscore_fused_equals_numpy(lazy):
    from changedet.kernels import baseline_zscore, robust_baseline, zscore
    from changedet.kernels.fast import HAVE_NUMBA

    assert HAVE_NUMBA  # pinned: numba==0.68.1
    rng = np.random.default_rng(5)
    hist = rng.normal(0.2, 0.02, size=(19, 3, 21, 33)).astype("float32")
    hist[3, :, 5:9] = np.nan  # cloud on one date
    hist[:, 1, 0, 0] = np.nan  # never observed
    hist[:18, 2, 1, 1] = np.nan  # one valid date
    new = rng.normal(0.2, 0.05, size=(3, 21, 33)).astype("float32")
    new[0, 2, 2] = np.nan
    h = xr.DataArray(hist, dims=("time", "band", "y", "x"))
    n = xr.DataArray(new, dims=("band", "y", "x"))
    ref = zscore(n, robust_baseline(h), mad_floor=0.005).values
    if lazy:
        h, n = h.chunk({"y": 8, "x": 10, "time": 5}), n.chunk({"y": 8, "x": 10})
    got = baseline_zscore(h, n, mad_floor=0.005)
    assert isinstance(got.data, da.Array) == lazy
    np.testing.assert_array_equal(got.values, ref)
    assert np.isnan(got.values[1, 0, 0]) and np.isnan(got.values[0, 2, 2])


# --- box mean (spatial context) -------------------------------------------------------
def test_box_mean_known_answer():
    from changedet.kernels.change import box_mean

    x = np.zeros((1, 5, 6), "float32")
    x[0, 2, 2] = 9.0
    x[0, 0, 5] = np.nan
    out = box_mean(xr.DataArray(x, dims=("band", "y", "x")), size=3).values[0]
    expect = np.zeros((5, 6))
    expect[1:4, 1:4] = 1.0  # 9 spread over each 3x3 window that holds it
    expect[0, 5] = np.nan  # nodata stays nodata ...
    np.testing.assert_array_equal(out, expect)  # ... and is left out of its neighbours' means
    const = np.full((2, 7, 4), 5.0)
    const[1, 3, 2] = np.nan
    # Edges and NaN neighbours do not bias the mean: a constant stays that constant.
    got = box_mean(xr.DataArray(const, dims=("band", "y", "x")), size=5).values
    np.testing.assert_array_equal(got, const)
    np.testing.assert_array_equal(box_mean(xr.DataArray(x, dims=("band", "y", "x")), size=1).values, x)


@pytest.mark.parametrize("chunks", [(16, 13), (5, 7), (61, 3)])
def test_box_mean_numpy_equals_dask(chunks):
    from changedet.kernels.change import box_mean

    b, _ = _pair()
    b = b.where(~((b.y == b.y[30]) & (b.x == b.x[12])))  # one nodata pixel
    ref = box_mean(b, size=3)
    lazy = box_mean(_chunked(b, *chunks), size=3)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, ref.values)  # bit-identical, NaN in place
    assert ref.dtype == np.float32 and GridSpec.of(ref).same_as(GRID)
    assert np.isnan(ref.values[:, 30, 12]).all() and np.isfinite(ref.values[:, 29, 12]).all()


def test_box_mean_bad_size():
    from changedet.kernels.change import box_mean

    b, _ = _pair()
    for size in (0, 2, 2.5, -3):
        with pytest.raises(KernelError, match="odd"):
            box_mean(b, size=size)

