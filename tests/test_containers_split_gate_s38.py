"""The merged-top split is gated on pixels too coarse to show the gaps between stacks (session 38)."""

from __future__ import annotations

import numpy as np

from changedet.objects.containers import STACK_GAP_M, _stack_tiers, _walk_to_tiers


def _wide_top(res: float):
    # One paint over 10 x 40 px (100 m^2 at 0.5 m), sun in the south at 45 degrees. At
    # 0.5 m the 0.2-0.4 m gaps between stacks still show, so a top this large is tops of
    # one paint joined across rows: the west half of the edge casts four-tier shadows,
    # the east half one-tier shadows.
    blob = np.zeros((40, 60), bool)
    blob[20:30, 10:50] = True
    pix = np.where(blob[None], np.array([0.3, 0.2, 0.1, 0.4], "float32")[:, None, None], 0.25)
    c0 = np.arange(10, 50)
    r0 = np.full(c0.size, 20)
    to_tiers = _walk_to_tiers(res, 180.0, 45.0)
    lengths = np.where(c0 < 30, 4.0, 1.0) / to_tiers - 0.5
    return blob, pix, (lengths, np.zeros(c0.size, bool), r0, c0), to_tiers


def test_gap_resolving_pixels_leave_a_large_top_whole():
    # 0.5 m pixels resolve a 0.3 m gap (0.6 px): the top is read as before, one stack.
    res = 0.5
    assert res <= 2.0 * STACK_GAP_M
    blob, pix, walks, to_tiers = _wide_top(res)
    plain = _stack_tiers(blob, pix, walks, res * res, to_tiers)
    gated = _stack_tiers(blob, pix, walks, res * res, to_tiers, azimuth=180.0, res=res)
    assert gated == plain
    assert len(gated[0]) + len(gated[2]) == 1


def test_coarse_pixels_split_the_same_top():
    # The same top with 0.8 m pixels (gaps of 0.3 m are under half a pixel) is split.
    res = 0.8
    blob, pix, walks, to_tiers = _wide_top(res)
    gated = _stack_tiers(blob, pix, walks, res * res, to_tiers, azimuth=180.0, res=res)
    assert len(gated[0]) + len(gated[2]) > 2
