"""Session 50: the masked least-squares refinement (``coreg._refine_masked``) with the
numba kernels gives the numpy code's numbers bit for bit, at about half its CPU.

The refinement runs whenever a window has masked pixels (the bench's real point 1: a
window with nodata; 60-70 % of that ``coregister_files`` call's CPU). With the kernels it
now works on the bounding box of the reference's clean pixels only, translates the
spline coefficients and the invalid mask in one pass, forms the clipped, normalised
gradients and their central differences where they are read (no whole-frame
``np.gradient``), and takes its order statistics (clip level, residual median) by radix
selection. Every step does the numpy code's arithmetic in the same order, so results
must be *equal*, not close. These tests check results, not time.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from changedet import coreg
from test_coreg_fast_numba import _both, _pair, _real_pair


def _masked_case(seed: int):
    """(ref, mov, ref_ok, mov_ok, start) frames as estimate_window hands them over: a
    fractal window pair, the reference padded with NaN to the moving window's lattice,
    a nodata edge and a cloud in the reference, holes in the moving window."""
    rng = np.random.default_rng(seed)
    shift = tuple(rng.uniform(-2.5, 2.5, 2))
    ref, mov, f, m = _pair(shift, 40 + seed)
    ref = ref.astype(np.float64)
    mov = mov.astype(np.float64) if seed % 2 else mov  # float32 frames are refined in double too
    ref[:, : int(rng.integers(0, ref.shape[1] // 2))] = np.nan  # nodata edge (the scene's border)
    ref[60:110, 150:230] = np.nan  # a cloud
    mov[ndimage.gaussian_filter(rng.standard_normal(mov.shape), 4) > 0.2] = np.nan
    ref_pad = np.full(mov.shape, np.nan)
    ref_pad[m:m + ref.shape[0], m:m + ref.shape[1]] = ref
    start = (-shift[0] + rng.uniform(-0.4, 0.4), -shift[1] + rng.uniform(-0.4, 0.4))
    return ref_pad, mov, np.isfinite(ref_pad), np.isfinite(mov), start, shift


def _numpy_and_kernels(monkeypatch, fn):
    """``fn()`` on the numpy path, then with the kernels twice: on fresh buffers filled
    with garbage (an output the compiled path left partly unwritten would show it) and
    on the reused per-thread buffers."""
    a, b = _both(monkeypatch, fn)
    c = fn()
    if isinstance(a, dict):
        for k in a:
            np.testing.assert_array_equal(c[k], b[k], err_msg=k)
    else:
        assert c == b
    return a, b


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_refinement_kernels_equal_numpy_on_masked_frames(monkeypatch, seed):
    ref, mov, ref_ok, mov_ok, start, shift = _masked_case(seed)
    want, got = _numpy_and_kernels(monkeypatch, lambda: coreg._refine_masked(ref, mov, ref_ok, mov_ok, start))
    assert want is not None
    assert got == want  # equal, not close
    assert abs(got[0] + shift[0]) < 0.1 and abs(got[1] + shift[1]) < 0.1


def test_refinement_kernels_equal_numpy_without_masks(monkeypatch):
    # All pixels valid: the box is the whole frame and no hole is filled.
    ref, mov, f, m = _pair((0.8, -1.6), 9)
    ref_pad = np.pad(ref.astype(np.float64), m, mode="reflect")
    ok = np.ones(mov.shape, bool)
    want, got = _numpy_and_kernels(monkeypatch, lambda: coreg._refine_masked(ref_pad, mov, ok, ok, (-0.6, 1.4)))
    assert got == want


def test_refinement_kernels_give_up_where_numpy_does(monkeypatch):
    # Too few clean reference pixels: None on both paths.
    ref, mov, ref_ok, mov_ok, start, _ = _masked_case(5)
    ref_ok = ref_ok.copy()
    ref_ok[:, 40:] = False
    want, got = _numpy_and_kernels(monkeypatch, lambda: coreg._refine_masked(ref, mov, ref_ok, mov_ok, start))
    assert want is None and got is None
    none = np.zeros(ref.shape, bool)
    want, got = _numpy_and_kernels(monkeypatch, lambda: coreg._refine_masked(ref, mov, none, mov_ok, start))
    assert want is None and got is None


def test_refinement_kernels_form_no_whole_frame_gradient(monkeypatch):
    # The kernels compute the central differences at the used pixels only: the numpy
    # np.gradient of two whole complex frames per step (a fifth of the old call) is gone.
    ref, mov, ref_ok, mov_ok, start, _ = _masked_case(1)
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    real_gradient = np.gradient

    def no_gradient(*a, **k):
        raise AssertionError("np.gradient called on the compiled path")

    monkeypatch.setattr(np, "gradient", no_gradient)
    got = coreg._refine_masked(ref, mov, ref_ok, mov_ok, start)
    monkeypatch.setattr(np, "gradient", real_gradient)
    assert got is not None


def test_bench_real_point_1_window_keeps_its_shift(monkeypatch, test_data):
    # The bench case whose window has nodata (the refinement runs): the shift recorded with
    # the code before the kernels, equal on both paths, and the kernel path was taken.
    ref, mov, f, m = _real_pair(test_data, 339611.0, 5856426.0)
    boxes = []
    real_box = coreg._refine_masked_box
    monkeypatch.setattr(coreg, "_refine_masked_box", lambda *a, **k: boxes.append(1) or real_box(*a, **k))
    want, got = _numpy_and_kernels(
        monkeypatch, lambda: coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m, max_shift_px=20))
    assert boxes == [1, 1]  # the two kernel runs (poisoned and reused buffers)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # Recorded before session 50 (base code, numpy and numba paths alike).
    assert got["shift_row"] == pytest.approx(1.9355442825699725, abs=1e-12)
    assert got["shift_col"] == pytest.approx(-0.6162425351704528, abs=1e-12)
    assert got["reliability"] == 1.0


@pytest.mark.parametrize("shift", [(0.0, 0.0), (1.0, -2.0), (0.37, -1.91), (-2.5, 0.5), (3.999, -0.001)])
def test_translate_pair_equals_translate_axis(monkeypatch, shift):
    # Integer shifts leave some taps at weight 0, which _translate_axis skips: so does the kernel.
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    nb = coreg._kernels()
    rng = np.random.default_rng(7)
    rows, cols, pad = 70, 53, 12
    coef = rng.standard_normal((rows + 2 * pad, cols + 2 * pad))
    outside = np.pad((rng.random((rows, cols)) < 0.05).astype(np.float64), pad, constant_values=1.0)
    w, ok = coreg._translate_pair(nb, coef, outside, np.array(shift), pad, rows, cols)

    def translate(arr, order):
        tmp = coreg._translate_axis(arr, shift[0], 0, order, pad, rows)
        return coreg._translate_axis(tmp, shift[1], 1, order, pad, cols)

    np.testing.assert_array_equal(w, translate(coef, 3))
    np.testing.assert_array_equal(ok, translate(outside, 1) < 1e-3)


def test_float64_radix_selection_and_median_equal_numpy(monkeypatch):
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    rng = np.random.default_rng(11)
    for trial in range(40):
        n = int(rng.integers(1024, 20000))
        v = np.abs(rng.standard_normal(n)) * 10.0 ** rng.uniform(-6, 6)
        if trial % 3 == 1:
            v = np.round(v, 1)  # many ties
        if trial % 3 == 2:
            v[rng.random(n) < 0.2] = 0.0
        k = int(rng.integers(0, n))
        assert coreg._kth(v, k) == np.partition(v, k)[k]
        assert coreg._median(v) == float(np.median(v))  # odd and even counts: equal, not close
    # Values the bits cannot order (a sign bit set), NaN, short arrays: numpy decides.
    v = rng.standard_normal(5000)
    assert coreg._kth(v, 1234) == np.partition(v, 1234)[1234]
    assert coreg._median(v) == float(np.median(v))
    v = np.abs(v)
    v[17] = np.nan
    assert np.isnan(coreg._median(v))
    assert coreg._median(v[20:120]) == float(np.median(v[20:120]))  # under 1024 values
