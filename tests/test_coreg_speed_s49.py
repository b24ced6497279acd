"""Session 49 savings in ``estimate_window`` (the window match of ``coregister_files``).

* The Newton steps on the cross-power spectrum start from the vertex of a parabola
  through the correlation surface's integer peak (:func:`coreg._parabolic_offset`)
  instead of the integer peak itself: the same converged shift (to ~1e-8 px) in one or
  two steps fewer.
* The share of valid pixels is counted once (``np.count_nonzero / size``), which equals
  the boolean mean it replaces bit for bit.

These test results, not time.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet import coreg
from test_coreg_fast_numba import _pair  # a fractal scene and its shifted copy, cut as window + margins


@pytest.mark.parametrize("vertex", [(0.3, -0.2), (-0.45, 0.1), (0.0, 0.0)])
def test_parabolic_offset_finds_the_vertex_of_a_sampled_parabola(vertex):
    rows, cols = np.indices((16, 16), dtype=float)
    peak = (5, 9)
    surface = 10.0 - (rows - peak[0] - vertex[0]) ** 2 - 2.0 * (cols - peak[1] - vertex[1]) ** 2
    np.testing.assert_allclose(coreg._parabolic_offset(surface.astype(np.float32), peak), vertex, atol=1e-5)


def test_parabolic_offset_wraps_and_stays_within_half_a_pixel():
    # Peak in the corner of a correlation surface: its neighbours are across the edges.
    n = 32
    d = (np.arange(n) + n // 2) % n - n // 2  # signed lag of each index
    rr, cc = np.meshgrid(d, d, indexing="ij")
    surface = np.exp(-0.5 * ((rr - 0.2) ** 2 + (cc + 0.3) ** 2) / 2.0 ** 2)
    off = coreg._parabolic_offset(surface, (0, 0))
    assert 0.1 < off[0] < 0.3 and -0.4 < off[1] < -0.2  # towards the true vertex, across the wrap
    flat = np.ones((8, 8))
    np.testing.assert_array_equal(coreg._parabolic_offset(flat, (3, 3)), [0.0, 0.0])  # no maximum: no offset
    spike = np.zeros((8, 8))
    spike[3, 3], spike[3, 4] = 1.0, 1.0  # two equal samples: the vertex is half-way, never beyond
    assert coreg._parabolic_offset(spike, (3, 3))[1] == pytest.approx(0.5)


@pytest.mark.parametrize("shift,seed", [((2.37, -1.61), 1), ((-4.52, 0.48), 2), ((0.21, 0.33), 3)])
def test_newton_from_the_parabola_vertex_converges_to_the_same_shift(monkeypatch, shift, seed):
    ref, mov, f, m = _pair(shift, seed)
    starts = []
    newton = coreg._newton_peak_one

    def record(cross, start, **kw):
        starts.append(np.array(start, float))
        return newton(cross, start, **kw)

    monkeypatch.setattr(coreg, "_newton_peak_one", record)
    new = coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m, max_shift_px=20)
    # The start is off the integer lattice (the change) and near the converged peak.
    assert len(starts) == 1 and not np.allclose(starts[0], np.round(starts[0]))
    monkeypatch.setattr(coreg, "_parabolic_offset", lambda surface, peak: np.zeros(2))
    starts.clear()
    old = coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m, max_shift_px=20)
    np.testing.assert_array_equal(starts[0], np.round(starts[0]))  # the integer start, as before
    assert abs(new["shift_row"] - old["shift_row"]) < 1e-6
    assert abs(new["shift_col"] - old["shift_col"]) < 1e-6
    for k in ("reliability", "similarity_before", "valid_fraction"):
        assert new[k] == old[k]
    assert new["similarity_after"] == pytest.approx(old["similarity_after"], abs=1e-5)
    # And both are the displacement (content moved by +shift: the correction is -shift).
    assert abs(new["shift_row"] + shift[0]) < 0.05 and abs(new["shift_col"] + shift[1]) < 0.05


def test_newton_needs_fewer_steps_from_the_parabola_vertex():
    ref, mov, f, m = _pair((1.43, -2.71), 4)
    seen = {}
    impl = coreg._newton_peak_one_impl

    def keep(cross, start, *, iterations):
        seen["cross"], seen["start"] = cross.copy(), np.array(start, float)
        return impl(cross, start, iterations=iterations)

    coreg_impl = coreg._newton_peak_one_impl
    try:
        coreg._newton_peak_one_impl = keep
        coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m, max_shift_px=20)
    finally:
        coreg._newton_peak_one_impl = coreg_impl

    def steps(start):
        full = impl(seen["cross"], start, iterations=8)
        return next(k for k in range(1, 9) if np.array_equal(impl(seen["cross"], start, iterations=k), full))

    assert steps(seen["start"]) < steps(np.round(seen["start"]))


def test_valid_fraction_is_the_share_of_good_pixels_exactly():
    ref, mov, f, m = _pair((1.2, 0.7), 5)
    ref[40:90, 60:140] = np.nan  # a cloud in the reference
    mov[150:170, 20:300] = np.nan  # and a strip of no data in the moving window
    out = coreg.estimate_window(ref, mov, filter_margin=f, search_margin=m, max_shift_px=20)
    ws = ref.shape[0] - 2 * f
    g_ref, gr = coreg._window_gradient(ref, "t.ref")
    g_mov, gm = coreg._window_gradient(mov, "t.mov")
    good = gr[f:f + ws, f:f + ws] & gm[f + m:f + m + ws, f + m:f + m + ws]
    assert 0.5 < good.mean() < 0.99
    assert out["valid_fraction"] == float(good.mean())  # equal, not close
    full = coreg.estimate_window(*_pair((1.2, 0.7), 5)[:2], filter_margin=f, search_margin=m, max_shift_px=20)
    assert full["valid_fraction"] == 1.0


class _NoNdimage:
    """Stands in for scipy.ndimage inside changedet.coreg: the passes the numba kernels
    now do must not reach ndimage (anything else is passed through)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        if name in ("correlate1d", "binary_dilation", "binary_erosion"):
            raise AssertionError(f"ndimage.{name} called: the numba kernel was not used")
        return getattr(self._real, name)


@pytest.mark.parametrize("shape", [(316, 316), (40, 57), (12, 300)])
def test_double_precision_gradient_runs_in_the_kernel_bit_for_bit(monkeypatch, shape):
    # The masked refinement's frames are float64: the compiled four-pass filter and the
    # cross dilation now serve them too, with ndimage's numbers exactly.
    rng = np.random.default_rng(sum(shape))
    img = rng.standard_normal(shape) * 300.0
    valid = rng.random(shape) > 0.03
    valid[:4] = False
    src = np.where(valid, img, np.nan)
    monkeypatch.setattr(coreg, "_USE_NUMBA", False)
    want, want_ok = coreg._gradient(src, valid, np.float64)
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    assert coreg._kernels() is not None
    monkeypatch.setattr(coreg, "ndimage", _NoNdimage(coreg.ndimage))
    got, got_ok = coreg._gradient(src, valid, np.float64)
    assert got.dtype == np.complex128
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_ok, want_ok)
    # float32 frames keep their numbers too (the kernel stores each pass in the output's precision).
    monkeypatch.setattr(coreg, "ndimage", coreg.ndimage._real)
    monkeypatch.setattr(coreg, "_USE_NUMBA", False)
    w32, k32 = coreg._gradient(src.astype(np.float32), valid, np.float32)
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    g32, j32 = coreg._gradient(src.astype(np.float32), valid, np.float32)
    np.testing.assert_array_equal(g32, w32)
    np.testing.assert_array_equal(j32, k32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_erode_cross_equals_ndimage_erosion(monkeypatch, seed):
    from scipy import ndimage as real_ndimage

    rng = np.random.default_rng(seed)
    mask = rng.random((61, 47)) > 0.15 * (seed + 1)
    mask[:, 0] = True  # an all-True edge column is still eroded (outside counts as False)
    want = real_ndimage.binary_erosion(mask, iterations=1, border_value=0)
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    monkeypatch.setattr(coreg, "ndimage", _NoNdimage(real_ndimage))
    np.testing.assert_array_equal(coreg._erode_cross(mask), want)
    monkeypatch.setattr(coreg, "ndimage", real_ndimage)
    monkeypatch.setattr(coreg, "_USE_NUMBA", False)
    np.testing.assert_array_equal(coreg._erode_cross(mask), want)


def test_masked_refinement_same_shift_with_and_without_kernels(monkeypatch):
    ref, mov, f, m = _pair((1.37, -0.82), 6)
    ref = ref.astype(np.float64)
    mov = mov.astype(np.float64)
    ref[30:120, 40:100] = np.nan  # cloud in the reference
    ref_pad = np.full(mov.shape, np.nan)
    ref_pad[m:m + ref.shape[0], m:m + ref.shape[1]] = ref
    start = (-1.3, 0.8)
    out = {}
    for use in (False, True):
        monkeypatch.setattr(coreg, "_USE_NUMBA", use)
        out[use] = coreg._refine_masked(ref_pad, mov, np.isfinite(ref_pad), np.isfinite(mov), start)
    assert out[True] is not None
    assert out[True] == out[False]  # equal, not close
    assert abs(out[True][0] + 1.37) < 0.05 and abs(out[True][1] - 0.82) < 0.05
