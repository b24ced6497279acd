"""A top larger than any one stack's holds several stacks where pixels blur the gaps between
them: its edge is read piece by piece, only at pixels too coarse to show the gaps (session 38)."""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects.containers import STACK_GAP_M, _block_tiers, _edge_pieces, _stack_tiers, _walk_to_tiers


def _wide_top(res: float, width: int = 40):
    # One paint over 10 x ``width`` px (100 m^2 at 0.5 m for 40 px), sun in the south at
    # 45 degrees: walks run north from the north edge. The west half of the edge casts
    # four-tier shadows, the east half one-tier shadows. At 0.5 m the 0.2-0.4 m gaps
    # between stacks still show, so a top this large is tops of one paint joined across
    # rows; at 0.8 m it is several stacks' tops whose gaps blurred away.
    blob = np.zeros((40, width + 20), bool)
    blob[20:30, 10:10 + width] = True
    pix = np.where(blob[None], np.array([0.3, 0.2, 0.1, 0.4], "float32")[:, None, None], 0.25)
    c0 = np.arange(10, 10 + width)
    r0 = np.full(c0.size, 20)
    to_tiers = _walk_to_tiers(res, 180.0, 45.0)
    lengths = np.where(c0 < 10 + width // 2, 4.0, 1.0) / to_tiers - 0.5
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


def test_merged_top_reads_each_stack_along_its_edge():
    # 10 x 24 px at 0.8 m (154 m^2: several 40 ft tops whose gaps blurred away), the
    # western 12 px four-tier stacks, the eastern 12 px one-tier. Read as one stack, the
    # low quantile of the mixture makes all of it one tier; read piece by piece, half is
    # four and half one.
    res = 0.8
    blob, pix, walks, to_tiers = _wide_top(res, width=24)
    stacks = _stack_tiers(blob, pix, walks, res * res, to_tiers, azimuth=180.0, res=res)
    mean, n, _ = _block_tiers(stacks, 1.0)
    assert n > 2
    assert mean == pytest.approx(2.5, abs=0.3)


def test_edge_pieces_are_at_least_one_box_wide():
    c0 = np.arange(0, 30)
    r0 = np.zeros(c0.size, int)
    pieces = _edge_pieces(r0, c0, 180.0, 0.5)
    assert sum(p.sum() for p in pieces) == c0.size
    for p in pieces:
        span = (c0[p].max() - c0[p].min()) * 0.5
        assert p.sum() >= 3 and span >= 2.0
