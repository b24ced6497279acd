"""Memory layout of the history and the choice between the staging and the in-place
baseline + z-score kernels (changedet.kernels.fast): every layout gives the numpy path's
result bit for bit, and the layouts changedet makes are read in place."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from changedet.kernels import baseline_zscore, robust_baseline, zscore
from changedet.kernels import fast
from changedet.kernels.change import KernelError

pytestmark = pytest.mark.skipif(not fast.HAVE_NUMBA, reason="numba is pinned in constraints.txt")

FLOOR = 0.005


def _reference(h, img):
    with np.errstate(invalid="ignore", over="ignore"):  # numpy's inf - inf on +-inf dates
        return _zscore_np_path(h, img)


def _zscore_np_path(h, img):
    return zscore(xr.DataArray(np.asarray(img, np.float32), dims=("band", "y", "x")),
                  robust_baseline(xr.DataArray(np.asarray(h, np.float32), dims=("time", "band", "y", "x"))),
                  mad_floor=FLOOR).values


def _fused(h, img, **kw):
    return np.asarray(baseline_zscore(xr.DataArray(h, dims=("time", "band", "y", "x")),
                                      xr.DataArray(img, dims=("band", "y", "x")), mad_floor=FLOOR, **kw).values)


def _data(nt, nb=2, ny=4, nx=256, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.normal(0.2, 0.02, size=(nt, nb, ny, nx)).astype(np.float32)
    img = rng.normal(0.2, 0.05, size=(nb, ny, nx)).astype(np.float32)
    h[nt // 2, 0, 1, 40:90] = np.nan  # a cloud: general path
    h[:, -1, 2, 100:140] -= np.float32(0.3)  # negative values: float network
    h[1, -1, 3, 7] = np.inf
    return h, img


@pytest.fixture
def kernels_used(monkeypatch):
    """The (nt, inplace) kernels that baseline_zscore fetches."""
    used = []
    real = fast._unrolled

    def spy(nt, inplace=False):
        used.append((nt, inplace))
        return real(nt, inplace)

    monkeypatch.setattr(fast, "_unrolled", spy)
    return used


def test_empty_history_layout():
    h = fast.empty_history((19, 4, 64, 4096))
    assert h.shape == (19, 4, 64, 4096) and h.dtype == np.float32
    plane = 4 * 64 * 4096
    assert h.strides[1:] == (64 * 4096 * 4, 4096 * 4, 4)
    # Dates a few cache lines more than a plane apart: not a multiple of 4 KiB, so the
    # dates of a pixel do not share an L1 set, and each date starts on a cache line.
    assert h.strides[0] > plane * 4 and h.strides[0] % 64 == 0 and h.strides[0] % 4096 != 0
    assert h.ctypes.data % 64 == 0
    assert fast._aliases(plane * 4, 19) and not fast._aliases(h.strides[0], 19)
    h[...] = 1.5
    assert h.sum(dtype=np.float64) == 1.5 * h.size
    assert h[3:7].strides == h.strides  # a slice of dates keeps the layout
    with pytest.raises(KernelError, match="four non-negative sizes"):
        fast.empty_history((19, 4, 64))
    with pytest.raises(KernelError, match="use float32"):
        fast.empty_history((2, 1, 2, 2), dtype="V3")
    assert fast.empty_history((3, 1, 2, 2), dtype=np.float64).strides[3] == 8


def test_set_load_and_pad():
    (span1, ways1), (span2, ways2) = fast._cache_sets()
    # A power-of-two stride puts every date in the same sets; the pad spreads them.
    assert fast._set_load(256 << 20, 19, 256, span1) == 19
    for plane in (4 * 4096 * 4096 * 4, 3 * 512 * 512 * 4, 1000 * 1000 * 4):
        pad = fast._date_pad(plane, 19)
        assert pad % 64 == 0 and 0 <= pad < 128 * 64
        stride = plane + pad
        assert fast._set_load(stride, 19, 2 * fast._CHUNK * 4, span1) <= ways1 // 2
        assert not fast._aliases(stride, 19)
    # A plane that does not alias needs no pad.
    assert fast._date_pad(1000 * 1000 * 4 + 64, 2) == 0


def test_dispatch_by_layout(kernels_used):
    nt = 19
    # 1 x 4 x 256 floats a date: a 4 KiB date stride, which aliases.
    h, img = _data(nt, nb=1, ny=4, nx=256)
    ref = _reference(h, img)
    # Contiguous, aliasing: the staging kernel reads it without a copy.
    np.testing.assert_array_equal(_fused(h, img), ref)
    assert kernels_used[-1] == (nt, False)
    # The same values in changedet's layout: read in place.
    p = fast.empty_history(h.shape)
    p[...] = h
    assert fast._in_place(p) is not None
    np.testing.assert_array_equal(_fused(p, img), ref)
    assert kernels_used[-1] == (nt, True)
    # A layout that needs a copy anyway (float64) is copied into changedet's layout.
    np.testing.assert_array_equal(_fused(h.astype(np.float64), img, use_numba=True), ref)
    assert kernels_used[-1] == (nt, True)


@pytest.mark.parametrize("nt", [2, 5, 19])
def test_arbitrary_strides_equal_numpy(nt):
    h, img = _data(nt, nx=300)
    ref = _reference(h, img)
    wide = np.zeros((nt, 2, 4, 600), np.float32)
    wide[..., ::2] = h
    rev = np.ascontiguousarray(h[:, :, :, ::-1])[:, :, :, ::-1]
    bands_first = np.ascontiguousarray(h.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    layouts = {
        "contiguous": h,
        "padded": fast._padded(h),
        "fortran": np.asfortranarray(h),
        "x every second": wide[..., ::2],
        "x reversed": rev,
        "bands outermost": bands_first,
        "slice of a taller cube": np.concatenate([h, h], axis=2)[:, :, :4],
        "dates reversed twice": np.ascontiguousarray(h[::-1])[::-1],
    }
    for name, layout in layouts.items():
        np.testing.assert_array_equal(layout, h)
        got = _fused(layout, img)
        np.testing.assert_array_equal(got, ref, err_msg=name)
    # A band broadcast from one (stride 0): copied into the padded layout.
    one = np.ascontiguousarray(h[:, :1])
    b = np.broadcast_to(one, h.shape)
    np.testing.assert_array_equal(_fused(b, img), _reference(np.ascontiguousarray(b), img))


def test_in_place_chunks_fall_back_per_chunk():
    # The in-place kernel sorts each 32-pixel chunk as int32 first and redoes a chunk
    # whose sorted min / max show a sign bit or an off-path value; the chunks after it are
    # counted first until one is clean. Every kind of chunk, next to and after each other,
    # a row width with a short last chunk, and each pixel's z as when its chunk is clean.
    nt, nx = 19, 32 * 12 + 5
    rng = np.random.default_rng(3)
    h = rng.normal(0.2, 0.02, size=(nt, 1, 2, nx)).astype(np.float32)
    img = rng.normal(0.2, 0.05, size=(1, 2, nx)).astype(np.float32)
    clean = h.copy()
    h[4, 0, 0, 32 + 3] = np.nan  # chunk 1: NaN, sign-clear
    h[:, 0, 0, 64 + 5] -= np.float32(1.0)  # chunk 2: negatives, finite
    h[7, 0, 0, 96 + 9] = np.float32(3e38)  # chunk 3: huge
    h[2, 0, 0, 128 + 1] = -np.inf  # chunk 4: -inf
    h[3, 0, 0, 128 + 2] = np.nan  # and NaN
    h[:, 0, 0, 160 + 4] = np.float32(-0.0)  # chunk 5: -0.0
    h[5, 0, 0, 32 * 12 + 2] = np.nan  # the short last chunk
    h[6, 0, 1, 0] = np.nan  # the next row's first chunk
    ref = _reference(h, img)
    p = fast._padded(h)
    assert fast._in_place(p) is not None
    got = _fused(p, img)
    np.testing.assert_array_equal(got, ref)
    # Pixels whose own dates are clean get the z of the clean history.
    z_clean = _fused(fast._padded(clean), img)
    same = (h == clean).all(axis=0)
    np.testing.assert_array_equal(got[same], z_clean[same])


def test_dask_dates_in_chunks_are_joined_into_the_padded_layout(monkeypatch):
    nt = 19
    h, img = _data(nt, ny=20, nx=300, seed=4)
    ref = _reference(h, img)
    seen = []
    real = fast._np_block

    def spy(hist, im, **kw):
        seen.append(fast._in_place(hist) is not None)
        return real(hist, im, **kw)

    monkeypatch.setattr(fast, "_np_block", spy)
    # One chunk per date (as a cube read from its store), bands in two chunks.
    hd = xr.DataArray(da.from_array(h, chunks=(1, 1, 8, 128)), dims=("time", "band", "y", "x"))
    idd = xr.DataArray(da.from_array(img, chunks=(2, 8, 128)), dims=("band", "y", "x"))
    z = baseline_zscore(hd, idd, mad_floor=FLOOR)
    assert z.chunks is not None
    np.testing.assert_array_equal(z.values, ref)
    assert seen and all(seen)
    # Dates in uneven chunks, and the whole history in one time chunk.
    for tchunks in ((5, 9, 5), -1):
        hd = xr.DataArray(da.from_array(h, chunks=(tchunks, -1, 8, 128)), dims=("time", "band", "y", "x"))
        np.testing.assert_array_equal(baseline_zscore(hd, idd, mad_floor=FLOOR).values, ref)


def test_dask_long_history_in_date_chunks():
    nt = fast.MAX_UNROLLED + 2
    h, img = _data(nt, nx=40, seed=5)
    hd = xr.DataArray(da.from_array(h, chunks=(1, -1, 2, 40)), dims=("time", "band", "y", "x"))
    np.testing.assert_array_equal(_fused(hd, img), _reference(h, img))


def test_history_read_from_a_cube_store_is_read_in_place(tmp_path, monkeypatch):
    # What real histories look like: Cube.read gives a lazy array with one chunk per
    # date; as the pipeline calls it (float32, (time, band, y, x)) the kernel gets its
    # blocks joined into the padded layout and reads them in place, with numpy's result.
    from datetime import datetime, timedelta, timezone

    from shapely.geometry import box

    from changedet.cube import Cube
    from changedet.grid import GridSpec
    from changedet.sources.base import SceneRecord

    grid = GridSpec.from_bounds("EPSG:32652", (300000, 4100000, 300096, 4100064), 1.0)  # 64 x 96
    cube = Cube(tmp_path, "site", "vhr", grid)
    t0 = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)
    for i in range(8):
        rng = np.random.default_rng(i)
        data = rng.uniform(0.05, 0.4, (3,) + grid.shape).astype("float32")
        data[:, i * 5:i * 5 + 3, :20] = np.nan  # a cloud in each scene
        rec = SceneRecord(id=f"s{i}", source="test", aoi_id="site", sensor="vhr", time=t0 + timedelta(days=i),
                          platform="synthetic", cloud_cover=0.0, footprint=box(130.0, 42.0, 130.1, 42.1),
                          resolution_m=1.0)
        assert cube.append(rec, grid.attach(data, bands=["B02", "B03", "B04"]))
    stack = cube.read()
    assert stack.chunks is not None and set(stack.chunks[0]) == {1}
    history = stack.isel(time=slice(0, 7)).transpose("time", "band", "y", "x").astype("float32")
    image = stack.isel(time=7).transpose("band", "y", "x").astype("float32")
    seen = []
    real = fast._np_block

    def spy(hist, im, **kw):
        seen.append(fast._in_place(hist) is not None)
        return real(hist, im, **kw)

    monkeypatch.setattr(fast, "_np_block", spy)
    z = baseline_zscore(history, image, mad_floor=FLOOR).values
    assert seen and all(seen)
    np.testing.assert_array_equal(z, _reference(history.values, image.values))
