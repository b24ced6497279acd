"""Local mode's leaner passes give the same numbers as before (issue 4, session 16).

``estimate_local`` now keeps float32 frames in float32 (the hole fill averaged in double
precision, :func:`changedet.coreg._gradient`'s ``mean64``), clips the frame gradients
with the window path's numba loop, fuses the window stacks' mean / feather / taper passes
(numba), and reuses its stack-sized buffers for the second surface and the re-cut windows.
These tests pin each of those against the plain numpy computation and the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from changedet import coreg
from test_coreg import fractal


def _both(monkeypatch, fn):
    """``fn()`` on the numpy path and on the numba path."""
    monkeypatch.setattr(coreg, "_USE_NUMBA", False)
    a = fn()
    monkeypatch.setattr(coreg, "_USE_NUMBA", True)
    if coreg._kernels() is None:
        pytest.skip("numba is not installed")
    b = fn()
    return a, b


def _holes(img: np.ndarray, seed: int) -> np.ndarray:
    out = img.copy()
    out[40:90, 100:180] = np.nan  # a cloud
    out[np.random.default_rng(seed).random(out.shape) < 0.005] = np.nan  # scattered nodata
    return out


def test_gradient_mean64_equals_float64_frame():
    img = _holes(fractal(160, seed=3), 1).astype(np.float32)
    valid = np.isfinite(img)
    g32, ok32 = coreg._gradient(img, valid, np.float32, mean64=True)
    g64, ok64 = coreg._gradient(img.astype(np.float64), valid, np.float32)
    np.testing.assert_array_equal(g32, g64)
    np.testing.assert_array_equal(ok32, ok64)
    # Without it a float32 frame is still filled with its float32 mean (estimate_window's
    # thin-margin path keeps its numbers).
    want = np.where(valid, img, img[valid].mean()).astype(np.float32)
    g_default, _ = coreg._gradient(img, valid, np.float32)
    g_want, _ = coreg._gradient(want, np.ones(img.shape, bool), np.float32)
    np.testing.assert_array_equal(g_default, g_want)


@pytest.mark.parametrize("holes", [False, True])
def test_full_gradient_numba_clip_equals_numpy(monkeypatch, holes):
    img = fractal(200, seed=4).astype(np.float32)
    if holes:
        img = _holes(img, 2)
    valid = np.isfinite(img)
    (ga, wa), (gb, wb) = _both(monkeypatch, lambda: coreg._full_gradient(img, valid))
    np.testing.assert_array_equal(gb, ga)
    assert (wa is None) == (wb is None) == (not holes)
    if holes:
        np.testing.assert_array_equal(wb, wa)


def test_cut_into_a_buffer_zeroes_what_lies_outside():
    arr = (np.arange(40 * 50).reshape(40, 50) + 1j).astype(np.complex64)
    r0, c0 = np.array([-5, 0, 20, 30]), np.array([3, -7, 10, 35])
    want = coreg._cut(arr, r0, c0, 16)
    buf = np.full(6 * 16 * 16, np.nan + 1j * np.nan, np.complex64)  # larger than needed, garbage-filled
    got = coreg._cut(arr, r0, c0, 16, out=buf)
    np.testing.assert_array_equal(got, want)
    assert np.shares_memory(got, buf)
    # A buffer it cannot use (too small, another dtype, not contiguous) is left alone.
    for bad in (np.zeros(10, np.complex64), np.zeros(6 * 16 * 16, np.complex128),
                np.zeros((2, 6 * 16 * 16), np.complex64)[:, ::2]):
        got = coreg._cut(arr, r0, c0, 16, out=bad)
        np.testing.assert_array_equal(got, want)
        assert not np.shares_memory(got, bad)


@pytest.mark.parametrize("weighted", [False, True])
def test_window_stack_fused_passes_equal_numpy(monkeypatch, weighted):
    img = fractal(300, seed=6).astype(np.float32)
    if weighted:
        img = _holes(img, 3)
    grad, weight = coreg._full_gradient(img, np.isfinite(img))
    taper = coreg._tukey2d((64, 64)).astype("float32")
    r0, c0 = np.array([0, 100, 236, -3]), np.array([10, 120, 200, 240])  # the last two reach outside
    a, b = _both(monkeypatch, lambda: coreg._window_stack(grad, weight, r0, c0, 64, taper))
    np.testing.assert_array_equal(b[0], a[0])
    np.testing.assert_array_equal(b[1], a[1])
    # Every window inside and no holes: the unweighted branch, also fused.
    r0, c0 = np.array([0, 50, 200]), np.array([0, 80, 230])
    a, b = _both(monkeypatch, lambda: coreg._window_stack(grad, None, r0, c0, 64, taper))
    np.testing.assert_array_equal(b[0], a[0])
    if coreg._kernels() is not None:
        # ... and they are the stacks the three numpy passes give.
        g = coreg._cut(grad, r0, c0, 64)
        g -= g.mean(axis=(1, 2), keepdims=True)
        g *= taper
        np.testing.assert_array_equal(b[0], g)


def _warped(n: int, field, seed: int):
    """A fractal scene and its copy warped by ``field(rr, cc) -> (dr, dc)`` (content at r
    moves to r + d), with a cloud in the reference."""
    scene = fractal(n, seed=seed)
    rr, cc = np.indices((n, n), dtype=float)
    dr, dc = field(rr, cc)
    mov = ndimage.map_coordinates(scene, [rr - dr, cc - dc], order=3, mode="reflect")
    return _holes(scene, seed).astype(np.float32), mov.astype(np.float32), dr, dc


@pytest.mark.parametrize("case", ["none moved", "some moved", "all moved"])
def test_estimate_local_buffers_reused_results_right(monkeypatch, case):
    # Windows whose integer shift is 0 (no re-cut), some of each, and all re-cut: the
    # second surface and the re-cut windows use the first surface's buffers.
    n = 384
    field = {"none moved": lambda r, c: (0.3 + 0 * r, -0.2 + 0 * c),
             "some moved": lambda r, c: (0.1 + 1.6 * c / n, -0.3 + 0 * r),
             "all moved": lambda r, c: (2.3 + 0 * r, -1.6 + 0 * c)}[case]
    ref, mov, dr, dc = _warped(n, field, seed=31)
    a, b = _both(monkeypatch, lambda: coreg.estimate_local(ref, mov, window_px=128, step_px=64))
    for k in ("row", "col", "shift_row", "shift_col", "reliability", "kept"):
        np.testing.assert_array_equal(getattr(b, k), getattr(a, k), err_msg=k)
    # float64 copies of the frames: the same numbers.
    c = coreg.estimate_local(ref.astype(np.float64), mov.astype(np.float64), window_px=128, step_px=64)
    for k in ("shift_row", "shift_col", "reliability", "kept"):
        np.testing.assert_array_equal(getattr(c, k), getattr(b, k), err_msg=k)
    k = b.kept
    assert k.sum() >= 0.8 * k.size
    ri, ci = b.row[k].astype(int), b.col[k].astype(int)
    # The estimate moves the moving content back: minus the displacement at the point.
    err = np.hypot(b.shift_row[k] + dr[ri, ci], b.shift_col[k] + dc[ri, ci])
    assert np.median(err) < 0.05 and err.max() < 0.25
