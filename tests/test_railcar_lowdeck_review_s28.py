"""Review of the s28 low-deck block rule: bands across a whole grassed bed are not gaps.

:func:`changedet.objects.railcars._coupled_block` takes a band that moves the colour
towards the empty track's as the ground showing between two low decks, and for such bands
lifts the sun-side "crossing" veto where that ground stays lit (the decks' blurred edges
dim the 1.95-2.6 m rows at 0.75-1 m pixels). A grassed-over siding crossed by boarded
walkways or bare strips at a regular spacing shows the same bands towards ballast colour,
but across the whole bed: in the sun-side ground as strongly as on the axis, where a deck's
blurred edge carries only part of its contrast. Review REVIEW1 (session 28): 10 and 5
phantom cars on 120 m of such bed in altgen tuning scenes 5645 / 5647 (base: 0).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_railcar_lowdeck_s28 import (GAP, PITCH, STEP, _ballast, _block, _blurred_into_sun_side,
                                            _deck_samples, _run)

GRASS = np.array([0.04, 0.07, 0.05, 0.30])   # green vegetation, B G R NIR (NDVI ~0.7 pure)


def _grassed_bed(length_m, cover=0.45, seed=0):
    """A disused siding grassed over across the whole formation (NDVI about 0.35)."""
    rng = np.random.default_rng(seed + 7)
    vals = _ballast(length_m, seed)
    w = cover * (1 + 0.2 * rng.standard_normal(vals.shape[1:]))
    return (1 - w)[None] * vals + w[None] * GRASS[:, None, None]


@pytest.mark.parametrize("spacing_m, width_m", [(20.0, 1.5), (12.5, 1.2), (18.0, 2.0)])
@pytest.mark.parametrize("sun_left", [False, True])
def test_ballast_coloured_bands_across_a_grassed_bed_are_not_gaps(spacing_m, width_m, sun_left):
    # Boarded walkways (weathered grey wood, about ballast colour) or bare ballast strips
    # across the whole bed at a regular spacing; a car found elsewhere on the track.
    vals = _grassed_bed(160)
    u = np.arange(vals.shape[2]) * STEP
    for c in np.arange(15.0, 140.0, spacing_m):
        band = (u >= c) & (u < c + width_m)
        vals[:, :, band] = _ballast(160, 3)[:, :, band]
    assert not _run(vals, sun_left=sun_left).any()


def test_decks_blurred_into_the_sun_side_ground_at_0_66_still_a_block():
    # The strongest deck blur seen in the sun-side rows (altgen 6636: 0.61-0.66 of the
    # band's ridge) keeps the block.
    vals = _block(_ballast(160), 20.0, 6)
    vals = _blurred_into_sun_side(vals, _deck_samples(vals.shape[2], 20.0, 6), share=0.66)
    add = _run(vals)
    u = np.arange(add.size) * STEP
    for i in range(1, 5):
        u0, u1 = 20.0 + i * PITCH, 20.0 + (i + 1) * PITCH - GAP
        assert add[(u >= u0 + 1.0) & (u < u1 - 1.0)].mean() > 0.9, i
