"""The numba kernels of the window match give the numpy path's numbers bit for bit.

``estimate_window`` (the core of ``coregister_files``) runs its gradient, clip/taper and
cubic resampling passes as numba loops once a process has matched a few windows (or
numba is already imported); those loops do the numpy code's float32 arithmetic in the
same order, so every result field must be *equal*, not close. Also: the numpy path is
used without numba, the switching rule, and the bounds guard of the compiled resampler.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import rioxarray
from scipy import ndimage

from changedet import coreg
from test_coreg import fractal


def _poisoned_scratch(name, shape, dtype, *, zero=False):
    """A new buffer per request, filled with garbage unless ``zero``: a compiled loop that
    left part of its output unwritten would otherwise show the numpy run's values, still
    sitting in the shared per-thread buffer, and compare equal."""
    if zero:
        return np.zeros(shape, dtype)
    kind = np.dtype(dtype).kind
    return np.full(shape, np.nan if kind in "fc" else 1, dtype)


def _both(monkeypatch, fn):
    """``fn()`` on the numpy path and on the numba path (on fresh, poisoned buffers)."""
    monkeypatch.setattr(coreg, "_USE_NUMBA", False)
    a = fn()
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    assert coreg._kernels() is not None
    with monkeypatch.context() as mp:
        mp.setattr(coreg, "_scratch", _poisoned_scratch)
        b = fn()
    return a, b


def _pair(shift, seed, *, ws=256, m=22, size=400):
    f = coreg._FILTER_MARGIN
    scene = fractal(size, seed=seed)
    mov = ndimage.shift(scene, shift, order=3, mode="reflect")
    c = (size - ws - 2 * (f + m)) // 2
    ref = scene[c + m:c + m + ws + 2 * f, c + m:c + m + ws + 2 * f].astype(np.float32)
    mv = mov[c:c + ws + 2 * (f + m), c:c + ws + 2 * (f + m)].astype(np.float32)
    return ref, mv, f, m


def _real_pair(test_data, x, y, *, ws=256, m=22):
    """Reference / moving windows of the real Sentinel-2 pair around (x, y) (bench cases)."""
    f = coreg._FILTER_MARGIN
    out = []
    for name, half in (("ref_S2A_20160608T153121_T33UUU_sub.jp2", ws // 2 + f),
                       ("tgt_S2A_20160529T153631_T33UUU_sub.jp2", ws // 2 + f + m)):
        da = rioxarray.open_rasterio(test_data("arosics_s2_pair/" + name)).squeeze("band", drop=True)
        # Nearest pixel, moved inwards where the window would cross the image edge.
        r = int(np.clip(np.argmin(np.abs(da.y.values - y)), half, da.sizes["y"] - half))
        c = int(np.clip(np.argmin(np.abs(da.x.values - x)), half, da.sizes["x"] - half))
        win = da.isel(y=slice(r - half, r + half), x=slice(c - half, c + half)).values.astype(np.float32)
        out.append(np.where(win == 0, np.nan, win))
    return out[0], out[1], f, m


def _cases(test_data):
    clean = _pair((2.4, -3.7), 21)
    holes = _pair((-5.2, 0.8), 22)
    holes[0][100:140, 60:200] = np.nan  # a cloud in the reference
    holes[1][np.random.default_rng(3).random(holes[1].shape) < 0.01] = np.nan  # scattered nodata
    small = _pair((0.6, 1.3), 23, ws=64, m=6, size=120)
    odd = _pair((-1.25, 4.5), 24, ws=98, m=9, size=170)
    return {"clean": clean, "holes": holes, "small": small, "odd": odd,
            "real1": _real_pair(test_data, 339611.0, 5856426.0),
            "real2": _real_pair(test_data, 353810.0, 5840516.0)}


def test_estimate_window_numba_equals_numpy(monkeypatch, test_data):
    for name, (ref, mov, f, m) in _cases(test_data).items():
        numpy_path, numba_path = _both(
            monkeypatch, lambda: coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m, max_shift_px=20))
        assert numba_path.keys() == numpy_path.keys()
        for k in numpy_path:  # equal, NaN (no similarity after) included
            np.testing.assert_array_equal(numba_path[k], numpy_path[k], err_msg=f"{name} {k}")
    # ... and the answers are right (content displaced by +shift comes back by -shift).
    ref, mov, f, m = _pair((2.4, -3.7), 21)
    est = coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m)
    assert abs(est["shift_row"] + 2.4) < 0.05 and abs(est["shift_col"] - 3.7) < 0.05


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("shape", [(90, 110), (57, 64)])
def test_window_gradient_kernel_equals_numpy(monkeypatch, holes, shape):
    img = fractal(128, seed=5)[:shape[0], :shape[1]].astype(np.float32)
    if holes:
        img[np.random.default_rng(2).random(img.shape) < 0.02] = np.nan
        img[20:35, 30:50] = np.nan
    (g0, ok0), (g1, ok1) = _both(monkeypatch, lambda: tuple(x.copy() for x in coreg._window_gradient(img, "t")))
    np.testing.assert_array_equal(g1, g0)
    np.testing.assert_array_equal(ok1, ok0)
    assert np.abs(g0).max() > 0


@pytest.mark.parametrize("shift", [(0.0, 0.0), (1.37, -2.81), (-3.5, 3.25), (2.999, -0.001)])
def test_keys_resample_kernel_equals_numpy(monkeypatch, shift):
    rng = np.random.default_rng(7)
    g = (rng.standard_normal((80, 80)) + 1j * rng.standard_normal((80, 80))).astype(np.complex64)
    good = rng.random(g.shape) > 0.01
    (o0, k0), (o1, k1) = _both(monkeypatch, lambda: tuple(
        x.copy() for x in coreg._keys_resample(g, good, *shift, 8, 60, scratch=True)))
    np.testing.assert_array_equal(o1, o0)
    np.testing.assert_array_equal(k1, k0)


@pytest.mark.parametrize("all_good", [True, False])
def test_window_condition_kernel_equals_numpy(monkeypatch, all_good):
    rng = np.random.default_rng(9)
    big = (rng.standard_normal((70, 70)) + 1j * rng.standard_normal((70, 70))).astype(np.complex64)
    grad = big[3:67, 5:69]  # a view with row gaps, as the windows cut from the margins
    good = np.ones(grad.shape, bool)
    if not all_good:
        good[10:20, 30:50] = False
    mag = np.abs(grad)

    def run():
        out, clip, weight = coreg._window_condition(grad, good, mag, all_good, "t.cond")
        again, _, _ = coreg._window_condition(grad, good, mag, all_good, "t.cond2", clip=0.5 * clip, weight=weight)
        return out.copy(), clip, weight.copy(), again.copy()

    a, b = _both(monkeypatch, run)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(mag, np.abs(grad))  # the magnitudes are left unchanged


def test_numpy_path_without_numba(monkeypatch):
    ref, mov, f, m = _pair((1.1, -0.4), 25)
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    with_numba = coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m)
    monkeypatch.setattr(coreg, "_nb", lambda: None)  # numba not installed
    assert coreg._kernels() is None
    assert coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m) == with_numba


def test_numba_is_used_after_a_few_windows_unless_already_imported(monkeypatch):
    ref, mov, f, m = _pair((0.7, 2.2), 26, ws=64, m=6, size=120)
    monkeypatch.setattr(coreg, "_USE_NUMBA", None)
    monkeypatch.setattr(coreg, "_WINDOWS_MATCHED", 0)
    monkeypatch.setattr(coreg, "sys", SimpleNamespace(modules={}))  # a process that has not imported numba
    seen = []
    for _ in range(coreg._NUMBA_AFTER + 2):
        coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m)
        seen.append(coreg._kernels() is not None)
    # checked after each window: the next one (the 4th on) is matched with the kernels
    assert seen == [False] * coreg._NUMBA_AFTER + [True] * 2
    monkeypatch.setattr(coreg, "_WINDOWS_MATCHED", 0)
    monkeypatch.setattr(coreg, "sys", SimpleNamespace(modules={"numba": object()}))
    assert coreg._kernels() is not None  # numba already paid for: used from the first window
    monkeypatch.setattr(coreg, "_USE_NUMBA", False)
    assert coreg._kernels() is None


def test_compiled_resampler_refuses_a_shift_outside_the_source(monkeypatch):
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    g = np.ones((40, 40), np.complex64)
    good = np.ones(g.shape, bool)
    with pytest.raises(ValueError, match="outside"):
        coreg._keys_resample(g, good, -6.5, 0.0, 4, 32)  # would read rows 40-42 of a 40-row array


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    # A read-only install and home: numba refuses cache=True at decoration; the kernels
    # must still compile (uncached) rather than fail every window after the third.
    import numba

    real = numba.njit

    def njit(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", njit)
    coreg._nb.cache_clear()
    try:
        nb = coreg._nb()
        assert nb is not None
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        out = np.ones((3, 8), np.float32)
        nb.taper(out, np.float32(0.5), np.float32(0.0), a)
        assert out[1, 2] == np.float32(0.5) * a[1, 1] and out[1, 3] == a[1, 1]
    finally:
        monkeypatch.undo()
        coreg._nb.cache_clear()


@pytest.mark.parametrize("shape", [(256, 256), (64, 98), (17, 23)])
def test_feather_kernel_equals_gaussian_filter(monkeypatch, shape):
    # The soft mask edge of a window with holes: ndimage.gaussian_filter's numbers, bit
    # for bit (its double sums in its order), also on a frame barely wider than the filter.
    rng = np.random.default_rng(11)
    good = rng.random(shape) > 0.05
    good[shape[0] // 3:shape[0] // 2, 2:shape[1] // 2] = False
    good[:, -1] = False  # the mirrored edge
    want = ndimage.gaussian_filter(good.astype(np.float32), coreg._FEATHER_SIGMA)
    a, b = _both(monkeypatch, lambda: coreg._feather(good, "t.fe").copy())
    np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(b, want)
    assert ((want > 0.01) & (want < 0.95)).sum() > 2 * shape[0]  # a soft edge, not a copy of the mask
    # Any float32 input, not just 0/1 (whose double sums are exact in any order).
    img = rng.random(shape).astype(np.float32)
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    out = np.full(shape, np.nan, np.float32)
    coreg._kernels().feather(img, coreg._FEATHER_W, np.full(shape, np.nan, np.float32), out)
    np.testing.assert_array_equal(out, ndimage.gaussian_filter(img, coreg._FEATHER_SIGMA))


@pytest.mark.parametrize("iterations", [0, 1, 4, 5])
def test_dilate_kernel_equals_dilate_cross(monkeypatch, iterations):
    mask = np.random.default_rng(12).random((41, 57)) < 0.02
    mask[0, 10] = mask[-1, -1] = mask[20, 0] = True  # edges: nothing beyond them
    want = coreg._dilate_cross(mask, iterations)
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    out = np.full(mask.shape, True)  # garbage a kernel that skipped a pixel would leave
    coreg._kernels().dilate(mask, iterations, out, np.full(mask.shape, True))
    np.testing.assert_array_equal(out, want)
    if iterations:
        np.testing.assert_array_equal(want, ndimage.binary_dilation(mask, iterations=iterations))


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("shape", [(120, 97), (6, 9), (5, 40)])
def test_full_frame_gradient_kernel_equals_ndimage(monkeypatch, holes, shape):
    # _gradient (local mode's frame, estimate_shift): ndimage's four correlate1d passes
    # (an antisymmetric and a near-symmetric kernel, reflect edges) bit for bit; frames
    # as narrow as the filter's half-width use ndimage itself.
    img = (fractal(128, seed=8)[:shape[0], :shape[1]] * 50 + 300).astype(np.float32)
    if holes:
        img[np.random.default_rng(4).random(img.shape) < 0.03] = np.nan
    valid = np.isfinite(img)
    a, b = _both(monkeypatch, lambda: tuple(x.copy() for x in coreg._gradient(img, valid)))
    np.testing.assert_array_equal(b[0], a[0])
    np.testing.assert_array_equal(b[1], a[1])
    assert np.abs(a[0]).max() > 0


def test_radix_quantile_equals_partition(monkeypatch):
    rng = np.random.default_rng(13)
    cases = [np.abs(rng.standard_normal(40_000)).astype(np.float32),
             (np.round(np.abs(rng.standard_normal(5000)) * 4) / 4).astype(np.float32),  # ties
             np.concatenate([np.zeros(3000), rng.random(2000) * 1e-30]).astype(np.float32),  # zeros, subnormals
             np.concatenate([rng.random(3000), [np.inf, np.nan]]).astype(np.float32),
             rng.standard_normal(4000).astype(np.float32)]  # negative values: the sort decides
    for v in cases:
        for q in (0.0, 50.0, 90.0, 100.0):
            k = min(int(q / 100.0 * (v.size - 1) + 0.5), v.size - 1)
            want = float(np.partition(v, k)[k])
            a, b = _both(monkeypatch, lambda: coreg._quantile(v, q))
            assert a == b == want or (np.isnan(want) and np.isnan(a) and np.isnan(b))


def test_estimate_local_numba_equals_numpy(monkeypatch):
    scene = fractal(400, seed=14)
    mov = ndimage.shift(scene, (1.3, -2.2), order=3, mode="reflect")
    ref, mov = scene[20:340, 30:350].copy(), mov[20:340, 30:350].copy()
    ref[40:90, 100:180] = np.nan  # a cloud: feathered weights, masked clip level
    a, b = _both(monkeypatch, lambda: coreg.estimate_local(ref, mov, window_px=128, step_px=64))
    for k in ("row", "col", "shift_row", "shift_col", "reliability", "kept"):
        np.testing.assert_array_equal(getattr(b, k), getattr(a, k), err_msg=k)
    k = a.kept
    assert k.sum() >= 0.8 * k.size
    assert np.abs(np.median(a.shift_row[k]) + 1.3) < 0.05 and np.abs(np.median(a.shift_col[k]) - 2.2) < 0.05
