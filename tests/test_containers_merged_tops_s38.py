"""A top larger than any one stack's holds several stacks where pixels blur the gaps (session 38)."""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects.containers import _block_tiers, _edge_pieces, _stack_tiers, _walk_to_tiers


def test_merged_top_reads_each_stack_along_its_edge():
    # One paint over 10 x 24 px at 0.8 m (154 m^2: several 40 ft tops whose 0.2-0.4 m gaps
    # blurred away in 0.8 m pixels). Sun in the south (azimuth 180), 45 degrees: walks run
    # north from the north edge. The western 12 px are four-tier stacks, the eastern 12 px
    # one-tier stacks. Read as one stack, the low quantile of the mixture makes all of it
    # one tier; read piece by piece, half is four and half one.
    res = 0.8
    blob = np.zeros((40, 44), bool)
    blob[20:30, 10:34] = True
    pix = np.where(blob[None], np.array([0.3, 0.2, 0.1, 0.4], "float32")[:, None, None], 0.25)
    c0 = np.arange(10, 34)
    r0 = np.full(c0.size, 20)
    to_tiers = _walk_to_tiers(res, 180.0, 45.0)
    lengths = np.where(c0 < 22, 4.0, 1.0) / to_tiers - 0.5
    walks = (lengths, np.zeros(c0.size, bool), r0, c0)
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
