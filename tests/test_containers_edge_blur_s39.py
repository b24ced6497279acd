"""At pixels too coarse to show the gaps between stacks, the half pixel of blurred outline
at each side of a block is not counted as boxes in its ground slots (session 39)."""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects.containers import EDGE_BLUR_PX, STACK_GAP_M, _ground_slots


def test_blurred_outline_is_not_a_row_at_coarse_pixels():
    # Three rows of boxes across (3 x 2.44 m + 2 x 0.35 m gaps = 8.02 m, 10.0 px) and
    # three 40 ft bays (3 x 12.19 + 2 x 0.45 = 37.47 m, 46.8 px) at 0.8 m pixels; the
    # outline, in the worst case, a pixel wider from the mixed pixels and the PSF (bright
    # paint; EDGE_BLUR_PX takes the mean, half a pixel) and the pixel grid's phase
    # another pixel across (12 px) and none along (48 px): 18 ground slots, not 24 (a
    # fourth row) as read before.
    res = 0.8
    assert res > 2.0 * STACK_GAP_M and EDGE_BLUR_PX > 0
    blob = np.zeros((40, 80), bool)
    blob[10:22, 10:58] = True   # 12 x 48 px: 9.6 x 38.4 m
    assert _ground_slots(blob, res) == pytest.approx(18.0, abs=1.0)


def test_blur_shortens_rows_along_at_coarse_pixels(monkeypatch):
    # One row of three 40 ft bays (2.44 x 37.47 m), its outline a pixel longer along and
    # across (4 x 48 px at 0.8 m: 3.2 x 38.4 m). The blur along the row is not read as
    # boxes: the row is shorter by exactly EDGE_BLUR_PX pixels (its two ends together)
    # than the count without the correction, which is the plain formula.
    import changedet.objects.containers as C

    res = 0.8
    blob = np.zeros((20, 80), bool)
    blob[8:12, 10:58] = True
    corrected = _ground_slots(blob, res)
    monkeypatch.setattr(C, "EDGE_BLUR_PX", 0.0)
    plain = _ground_slots(blob, res)
    assert plain == pytest.approx((48 * res + 0.45) / (6.06 + 0.45), rel=1e-6)
    assert plain - corrected == pytest.approx(EDGE_BLUR_PX * res / (6.06 + 0.45), rel=1e-6)
    # and the corrected row lies nearer the sharp outline (37.47 m over the 20 ft pitch)
    sharp = (37.47 + 0.45) / (6.06 + 0.45)
    assert abs(corrected - sharp) < abs(plain - sharp)


def test_fine_pixels_keep_the_outline():
    # At 0.5 m the gaps show (res <= 2 * STACK_GAP_M): nothing is subtracted, the
    # count is the one before (3 rows of 38 m: 18 slots within rounding).
    res = 0.5
    assert res <= 2.0 * STACK_GAP_M
    blob = np.zeros((60, 110), bool)
    blob[10:27, 10:86] = True   # 8.5 x 38 m
    before = (3 * 76 * res + 3 * 0.45) / (6.06 + 0.45)
    assert _ground_slots(blob, res) == pytest.approx(before, rel=1e-6)
