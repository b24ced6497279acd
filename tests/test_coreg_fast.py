"""The lean window path of ``coregister_files``: same numbers as the general helpers.

``estimate_window`` uses its own gradient (separable slices on the window interior),
per-thread work buffers, a one-window Newton peak and a raw read with the nodata test
done here. Each must agree with the general code it replaces, and the buffers must not
leak between calls or threads.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from scipy import fft as sfft
from scipy import ndimage

from changedet import coreg
from changedet.io import open_raster, read_raster
from test_coreg import fractal


def _smooth(shape, seed):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 2.0).astype(np.float32) * 100 + 500


@pytest.mark.parametrize("holes", [False, True])
def test_window_gradient_matches_gradient(holes):
    img = _smooth((90, 110), 1)
    if holes:
        rng = np.random.default_rng(2)
        img[rng.random(img.shape) < 0.01] = np.nan
        img[20:35, 40:70] = np.nan
    grad, good = coreg._window_gradient(img, "test")
    ref_grad, ref_good = coreg._gradient(img, np.isfinite(img))
    inner = np.s_[5:-5, 5:-5]  # the ring is filter context: zero and not good
    np.testing.assert_array_equal(good[inner], ref_good[inner])
    assert not good[:5].any() and not good[:, -5:].any()
    ok = good[inner]
    assert ok.sum() > 3000
    err = np.abs(grad[inner][ok] - ref_grad[inner][ok]).max()
    assert err < 1e-5 * np.abs(ref_grad[inner][ok]).max()


def test_dilate_cross_matches_binary_dilation():
    mask = np.random.default_rng(4).random((40, 57)) < 0.03
    mask[0, 10] = mask[-1, -1] = True  # edges: nothing beyond them
    for it in (1, 4):
        np.testing.assert_array_equal(coreg._dilate_cross(mask, it), ndimage.binary_dilation(mask, iterations=it))


def test_newton_peak_one_matches_batched():
    rng = np.random.default_rng(6)
    a = (rng.standard_normal((64, 64)) + 1j * rng.standard_normal((64, 64))).astype(np.complex64)
    radius = np.hypot(*np.meshgrid(sfft.fftfreq(64), sfft.fftfreq(64)))
    a = sfft.ifft2(sfft.fft2(a) * np.exp(-0.5 * (radius / 0.1) ** 2))  # smooth: a single clear peak
    b = ndimage.shift(a.real, (1.3, -0.6), order=3) + 1j * ndimage.shift(a.imag, (1.3, -0.6), order=3)
    cross = (sfft.fft2(a) * np.conj(sfft.fft2(b))).astype(np.complex64)
    one = coreg._newton_peak_one(cross, np.array([-1.0, 1.0]))
    batch = coreg._newton_peak(cross[None], np.array([[-1.0, 1.0]]))[0]
    np.testing.assert_allclose(one, batch, atol=1e-6)
    assert abs(one[0] + 1.3) < 0.1 and abs(one[1] - 0.6) < 0.1


def _pair(shift, seed, size=316 + 40):
    scene = fractal(size, seed=seed).astype(np.float64)
    mov = ndimage.shift(scene, shift, order=3, mode="reflect")
    f, m, ws = coreg._FILTER_MARGIN, 22, 256
    c = 20
    ref = scene[c + m:c + m + ws + 2 * f, c + m:c + m + ws + 2 * f].astype(np.float32)
    mv = mov[c:c + ws + 2 * (f + m), c:c + ws + 2 * (f + m)].astype(np.float32)
    return ref, mv, f, m


def test_estimate_window_buffers_do_not_leak_between_calls_or_threads():
    pairs = [_pair((2.4, -3.7), 11), _pair((-5.2, 0.8), 12), _pair((0.3, 6.1), 13)]
    pairs[2][0][100:140, 60:200] = np.nan  # one window with a hole: the masked path
    first = [coreg.estimate_window(a, b, filter_margin=f, search_margin=m) for a, b, f, m in pairs]
    # Interleaved calls give the same answers (nothing carried over in the buffers) ...
    again = [coreg.estimate_window(a, b, filter_margin=f, search_margin=m) for a, b, f, m in pairs[::-1]][::-1]
    assert again == first
    # ... and so do concurrent calls on other threads (each thread has its own buffers).
    out = {}

    def work(i):
        a, b, f, m = pairs[i % 3]
        out[i] = [coreg.estimate_window(a, b, filter_margin=f, search_margin=m) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, res in out.items():
        assert all(r == first[i % 3] for r in res)
    # The answers are right: content displaced by +shift comes back by -shift.
    for (dr, dc), r in zip([(2.4, -3.7), (-5.2, 0.8), (0.3, 6.1)], first):
        assert abs(r["shift_row"] + dr) < 0.05 and abs(r["shift_col"] + dc) < 0.05
        assert r["reliability"] > 0.7 and r["similarity_after"] > r["similarity_before"]


def _write(path, arr, *, dtype, nodata, mask=None):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=dtype,
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4200000), nodata=nodata) as dst:
        dst.write(arr.astype(dtype), 1)
        if mask is not None:
            dst.write_mask(mask)
    return path


@pytest.mark.parametrize("case", ["float_nodata", "uint16_zero", "nan_nodata", "none", "internal_mask"])
def test_read_box_matches_masked_read(tmp_path, case):
    rng = np.random.default_rng(8)
    arr = rng.integers(1, 4000, (70, 90)).astype(np.float64)
    holes = rng.random(arr.shape) < 0.1
    mask = None
    if case == "float_nodata":
        dtype, nodata, arr[holes] = "float32", -9999.0, -9999.0
    elif case == "uint16_zero":
        dtype, nodata, arr[holes] = "uint16", 0, 0
    elif case == "nan_nodata":
        dtype, nodata, arr[holes] = "float32", float("nan"), np.nan
    elif case == "none":
        dtype, nodata = "int16", None
    else:
        dtype, nodata, mask = "uint16", None, np.where(holes, 0, 255).astype("uint8")
    path = _write(tmp_path / f"{case}.tif", arr, dtype=dtype, nodata=nodata, mask=mask)
    with open_raster(path) as src:
        info = coreg._raster_info(src, path)
        # A box reaching past the top-left corner: NaN outside the file.
        got = coreg._read_box(src, info, [1], -3, 5, 40, 50)
        want = np.ma.filled(src.read(1, window=Window(5, 0, 50, 37), masked=True).astype(np.float32), np.nan)
    assert np.isnan(got[:3]).all()
    np.testing.assert_array_equal(got[3:], want)
    np.testing.assert_array_equal(np.isnan(got[3:]), np.isnan(read_raster(path).values[0, 0:37, 5:55]))
    if case == "none":
        assert np.isfinite(got[3:]).all()
    else:
        assert np.isnan(got[3:]).sum() == holes[0:37, 5:55].sum()


@pytest.mark.parametrize("case", ["float_nodata", "nan_nodata", "none", "internal_mask", "uint16_zero"])
def test_read_box_inside_the_file_matches_masked_read(tmp_path, case):
    # A box wholly inside the file: one float32 band is read straight into the result;
    # every other kind of file takes the general path. Both must give the masked read.
    rng = np.random.default_rng(9)
    arr = rng.uniform(1, 4000, (70, 90))
    holes = rng.random(arr.shape) < 0.1
    mask = None
    dtype = "float32"
    if case == "float_nodata":
        nodata, arr[holes] = -9999.0, -9999.0
    elif case == "nan_nodata":
        nodata, arr[holes] = float("nan"), np.nan
    elif case == "none":
        nodata = None
    elif case == "internal_mask":
        nodata, mask = None, np.where(holes, 0, 255).astype("uint8")
    else:
        dtype, nodata, arr[holes] = "uint16", 0, 0
    path = _write(tmp_path / f"{case}.tif", arr, dtype=dtype, nodata=nodata, mask=mask)
    with open_raster(path) as src:
        info = coreg._raster_info(src, path)
        got = coreg._read_box(src, info, [1], 4, 7, 50, 60)
        want = np.ma.filled(src.read(1, window=Window(7, 4, 60, 50), masked=True).astype(np.float32), np.nan)
    assert got.shape == (50, 60) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(read_raster(path).values[0, 4:54, 7:67]))
    if case == "none":
        assert np.isfinite(got).all()
    else:
        assert np.isnan(got).sum() == holes[4:54, 7:67].sum()


def test_usable_window_matches_masked_test():
    rng = np.random.default_rng(10)
    cases = [rng.random((40, 40)).astype(np.float32), np.full((40, 40), 3.0, np.float32)]
    for share in (0.3, 0.49, 0.5, 0.51, 0.9):
        a = rng.random((40, 40)).astype(np.float32)
        a.ravel()[rng.permutation(a.size)[:int(round((1 - share) * a.size))]] = np.nan
        cases.append(a)
    b = rng.random((40, 40)).astype(np.float32)
    b[0, 0] = np.inf  # infinite pixels are not valid either
    c = np.full((40, 40), 2.0, np.float32)
    c[:10] = np.nan  # constant where valid
    d = np.full((40, 40), np.nan, np.float32)
    d[0, :3] = (1, 2, 3)  # too few valid pixels
    cases += [b, c, d]
    for win in cases:
        with np.errstate(invalid="ignore"):
            want = bool(np.isfinite(win).mean() >= coreg._MIN_WINDOW_VALID and np.nanmax(win) > np.nanmin(win))
        assert coreg._usable_window(win) is want
    assert [coreg._usable_window(w) for w in cases[:2]] == [True, False]


def test_estimate_window_with_thin_filter_margin():
    # Margins thinner than the filter: the edge is reflected (the general gradient), and
    # the answer is still right.
    ref, mov, f, m = _pair((1.7, -2.2), 14)
    thin = 3
    est = coreg.estimate_window(ref[f - thin:ref.shape[0] - f + thin, f - thin:ref.shape[1] - f + thin],
                                mov[f - thin:mov.shape[0] - f + thin, f - thin:mov.shape[1] - f + thin],
                                filter_margin=thin, search_margin=m)
    assert abs(est["shift_row"] + 1.7) < 0.05 and abs(est["shift_col"] - 2.2) < 0.05


def test_read_box_uses_each_bands_own_nodata(tmp_path):
    """A VRT whose bands have different nodata values: each band is masked with its own."""
    rng = np.random.default_rng(3)
    paths = []
    for k, nd in enumerate((5, 7)):
        a = rng.integers(10, 100, (20, 30)).astype(np.float64)
        a[k, :] = nd  # band 1: row 0 is nodata; band 2: row 1
        paths.append(_write(tmp_path / f"b{k}.tif", a, dtype="uint16", nodata=nd))
    vrt = tmp_path / "two.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{k + 1}"><NoDataValue>{nd}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="1">{p.name}</SourceFilename><SourceBand>1</SourceBand>'
        f'</SimpleSource></VRTRasterBand>' for k, (nd, p) in enumerate(zip((5, 7), paths)))
    with rasterio.open(paths[0]) as src:
        gt = ", ".join(str(v) for v in src.transform.to_gdal())
        srs = src.crs.to_wkt()
    vrt.write_text(f'<VRTDataset rasterXSize="30" rasterYSize="20"><SRS>{srs}</SRS>'
                   f'<GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>')
    with open_raster(vrt) as src:
        info = coreg._raster_info(src, vrt)
        got = coreg._read_box(src, info, [1, 2], 0, 0, 20, 30)
        want = np.ma.filled(src.read([1, 2], masked=True).astype(np.float32), np.nan).mean(axis=0)
    assert np.isnan(got[0]).all() and np.isnan(got[1]).all()
    np.testing.assert_array_equal(got, want)


def test_blas_limit_is_shared_by_overlapping_threads_and_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    with coreg._blas_single_thread():
        pass  # the controller knows the BLAS libraries loaded when it was made
    known = {lib.filepath for lib in coreg._BLAS_CONTROLLER.lib_controllers if lib.user_api == "blas"}

    def blas():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["filepath"] in known]

    before = blas()
    inside_a, a_left = threading.Event(), threading.Event()
    seen = {}

    def a():
        with coreg._blas_single_thread():
            inside_a.set()
            a_left.wait(10)

    def b():
        inside_a.wait(10)
        with coreg._blas_single_thread():
            a_left.set()
            t.join(10)  # a has left; b is still inside
            seen["b_after_a"] = coreg._BLAS_USERS

    t = threading.Thread(target=a)
    u = threading.Thread(target=b)
    t.start()
    u.start()
    u.join(20)
    # (Whether OpenBLAS honours a limit set from a secondary thread depends on its
    # version; what must hold is that a's exit did not end b's block, and that the
    # user's setting is back when both have left.)
    assert known and seen["b_after_a"] == 1
    assert coreg._BLAS_USERS == 0 and coreg._BLAS_LIMIT is None
    assert blas() == before
    with coreg._blas_single_thread():  # and in the calling thread the limit holds
        assert all(n == 1 for n in blas())
    assert blas() == before


def test_grid_checks_cache_the_crs_not_the_transform():
    from pyproj import CRS

    wkt = CRS.from_epsg(32633).to_wkt()
    coreg._pyproj_crs.cache_clear()
    # Scenes of one CRS with other origins: one CRS build, every transform still checked.
    for x0 in (500000.0, 500010.0, 612345.0):
        assert coreg._grid_checks(wkt, (10.0, 0.0, x0, 0.0, -10.0, 4200000.0)) == 1.0
    assert coreg._pyproj_crs.cache_info().misses == 1
    with pytest.raises(coreg.CoregError, match="rotated"):
        coreg._grid_checks(wkt, (10.0, 1.0, 500000.0, 0.0, -10.0, 4200000.0))
    with pytest.raises(coreg.CoregError, match="north-up"):
        coreg._grid_checks(wkt, (10.0, 0.0, 500000.0, 0.0, 10.0, 4200000.0))
    with pytest.raises(coreg.CoregError, match="no units of length"):
        coreg._grid_checks(CRS.from_epsg(4326).to_wkt(), (0.1, 0.0, 10.0, 0.0, -0.1, 50.0))
    feet = coreg._grid_checks(CRS.from_epsg(2263).to_wkt(), (10.0, 0.0, 9e5, 0.0, -10.0, 2e5))
    assert feet == pytest.approx(0.3048006096)


def test_lattice_offset_compares_crs_not_wkt_text():
    from pyproj import CRS

    def info(crs_wkt, x0):
        return coreg._RasterInfo("f.tif", crs_wkt, Affine(10, 0, x0, 0, -10, 4200000), (50, 60), None, ("b1",))

    wkt2, wkt1 = CRS.from_epsg(32633).to_wkt(), CRS.from_epsg(32633).to_wkt("WKT1_GDAL")
    assert wkt1 != wkt2
    # The same CRS written two ways: same lattice, 3 columns apart; another zone: none.
    assert coreg._lattice_offset(info(wkt2, 500030.0), info(wkt1, 500000.0)) == (0, 3)
    assert coreg._lattice_offset(info(wkt2, 500030.0), info(CRS.from_epsg(32634).to_wkt(), 500000.0)) is None
