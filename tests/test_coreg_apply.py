"""apply_shift's separable resampler against scipy.ndimage, the definition it replaces.

``apply_shift`` resamples a translation as two 1-D passes of B-spline taps (one set of
weights per axis) on the spline coefficients of the edge-padded image. It must give the
same values as ``ndimage.shift(order, mode="nearest")`` of the nearest-filled image, and
the same NaN pixels as the rule "NaN when any source pixel the bilinear kernel touches
is NaN or outside" (``ndimage.shift(~finite, order=1, mode="constant", cval=1) > 1e-6``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from changedet.coreg import apply_shift


def reference_shift(plane: np.ndarray, shift, order: int) -> np.ndarray:
    """The definition: nearest-valid fill, ndimage.shift, NaN where a source pixel is invalid."""
    data = np.asarray(plane, dtype="float64")
    finite = np.isfinite(data)
    if finite.any() and not finite.all():
        idx = ndimage.distance_transform_edt(~finite, return_distances=False, return_indices=True)
        data = data[tuple(idx)]
    out = ndimage.shift(data, shift, order=order, mode="nearest")
    invalid = ndimage.shift((~finite).astype(float), shift, order=1, mode="constant", cval=1.0)
    out[invalid > 1e-6] = np.nan
    return out


def scene(rng, shape, holes: bool):
    img = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 800 + 2500
    if holes:
        r, c = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 9)
        img[r : r + 5, c : c + 8] = np.nan  # a cloud
        img[:, :2] = np.nan  # a nodata strip at the frame edge
    return img


SHIFTS = [(0.0, 0.0), (1.0, -3.0), (0.37, -0.61), (-2.5, 4.25), (7.9, -13.3), (-18.2, 21.7), (0.5, 0.5)]


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("holes", [False, True])
def test_float64_equals_ndimage_definition(order, holes):
    rng = np.random.default_rng(11)
    for k, shift in enumerate(SHIFTS):
        img = scene(rng, (61 + 7 * k, 90 - 5 * k), holes)
        want = reference_shift(img, shift, order)
        got = apply_shift(img, *shift, order=order)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN mask, shift {shift}")
        ok = np.isfinite(want)
        assert ok.sum() > 0.3 * ok.size or abs(shift[0]) > 15
        np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=1e-8, err_msg=f"shift {shift}")


def test_float32_stays_float32_within_rounding():
    rng = np.random.default_rng(12)
    img = scene(rng, (128, 96), holes=True)
    for shift in SHIFTS:
        want = reference_shift(img.astype(np.float32), shift, 3)
        got = apply_shift(img.astype(np.float32), *shift)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        # A few float32 ulps of values ~2500 (ulp 2.4e-4): computed in float32 throughout.
        assert np.abs(got[ok].astype(float) - want[ok]).max() < 5e-3


def test_multiband_and_all_nan_planes():
    rng = np.random.default_rng(13)
    a = scene(rng, (40, 50), holes=True)
    stack = np.stack([a, 2 * a + 1, np.full_like(a, np.nan)])
    out = apply_shift(stack, 1.3, -2.6)
    np.testing.assert_allclose(out[1], 2 * out[0] + 1, rtol=1e-12, equal_nan=True)
    assert np.isnan(out[2]).all()


def test_hole_fill_uses_nearest_valid_pixel_anywhere():
    # Holes whose nearest valid pixel lies on the grown bounding box edge and beyond a
    # concave corner: the filled values decide the spline coefficients next to the hole.
    rng = np.random.default_rng(14)
    img = scene(rng, (80, 80), holes=False)
    img[10:50, 10:20] = np.nan
    img[40:50, 10:60] = np.nan  # an L-shaped hole
    img[70:, 75:] = np.nan      # a corner hole
    for shift in [(0.4, 0.3), (-3.7, 2.2)]:
        want = reference_shift(img, shift, 3)
        got = apply_shift(img, *shift)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=0, atol=1e-8)
