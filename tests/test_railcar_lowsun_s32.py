"""Cars wholly in a neighbour's shadow under a low sun are cars (session 32, issue 6).

Under a sun 20-28 degrees up a 4.5-5 m car throws a shadow 10-12 m long: where the sun is
oblique to the tracks it covers the next track over, both side bands and centre. A car
standing there, its top too low to rise into the sun, is lit by the sky alone; a grey or
dark-grey body then reads half-way between the lit and the shaded ground's colours (lit
share 0.2-0.45), which :func:`changedet.objects.railcars._occupancy` took for ground in
partial shade (lit share under 0.5), and the track was read empty there (altgen tuning
scenes 100-103, low sun at 0.75-1 m: 38 of the 82 cars missed lay wholly in a
neighbour's shadow, read unoccupied). A cast shadow is one band across the track: ground
between two shaded side bands lies in that shadow too, its lit share near 0 (a concrete
bed 1.6-1.8 times as bright as the side ground stays under 0.3). A centre lit well above
the shadow and the side bands is a body.

Synthetic strips with known answers (no generator); the altgen tuning scene is checked in
tests/test_railcar_risen_s30.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R

# The strip grid, references and painting helpers of the session-30 tests of lit tops in a
# neighbour's shadow (the same sunlit ballast and its skylit shadow).
from tests.test_railcar_risen_s30 import ACROSS, LIT, REFS, SHADOW, _ground, _occ, _paint

# A dark-grey tank's top lit by the sky only (altgen 6628-like: lit share ~0.33 between
# LIT and SHADOW, 2.5 times the shaded ground's brightness).
SKYLIT_GREY = np.array([0.075, 0.080, 0.083, 0.094])
# A darker body in skylight (lit share ~0.21, 1.9 times the shaded ground) is not found
# by this rule: it reads like a concrete bed in shade (see _BODY_IN_SHADE_LIT_SHARE).


def test_a_skylit_body_in_a_track_wide_shadow_is_a_car():
    colour = SKYLIT_GREY
    # The whole track in a neighbour's shadow; a 12 m tank, 3 m wide, lit by the sky only.
    vals = _paint(_ground(80, SHADOW), 34.0, 46.0, colour, np.abs(ACROSS) <= 1.5)
    occ, u = _occ(vals)
    assert occ[(u >= 35.0) & (u < 45.0)].all()
    assert not occ[(u < 32.0) | (u > 48.0)].any()


def test_an_empty_track_in_a_track_wide_shadow_is_empty():
    # Textured shaded ballast (5 % texture), several draws: no car.
    for seed in range(5):
        occ, _ = _occ(_ground(120, SHADOW, seed=seed))
        assert not occ.any(), seed


def test_a_slightly_brighter_centre_in_a_track_wide_shadow_is_no_car():
    # The bed a fifth brighter than the shaded ground beside it (cleaner ballast, concrete
    # sleepers) over 30 m: still ground, within the texture and wear of ballast.
    vals = _paint(_ground(80, SHADOW), 20.0, 50.0, 1.2 * SHADOW, np.abs(ACROSS) <= 1.0)
    occ, _ = _occ(vals)
    assert not occ.any()


def test_the_rule_needs_both_side_bands_shaded(monkeypatch):
    # Sun side dim but not shaded (0.65 of the lit ground: the ratio and lit-share gates
    # alone would pass), anti-sun side shaded, centre at lit share 0.45: only the
    # both-sides-shaded condition keeps the rule silent, so the reading must equal the
    # rule-off one (review RLOWSUN).
    vals = _ground(80, LIT * 0.65)
    vals = _paint(vals, 0.0, 80.0, SHADOW, ACROSS < -1.5)
    vals = _paint(vals, 20.0, 50.0, SHADOW + 0.45 * (LIT - SHADOW), np.abs(ACROSS) <= 1.0)
    occ, _ = _occ(vals)
    monkeypatch.setattr(R, "_BODY_IN_SHADE_LIT_SHARE", np.inf)
    occ_without, _ = _occ(vals)
    assert np.array_equal(occ, occ_without)


def test_a_uniform_partial_shade_is_empty():
    # A cloud's shadow over the whole track keeping 0.3 of the direct light: lit share
    # ~0.3 across, the centre as bright as its side bands: ground (the ratio gate).
    col = SHADOW + 0.3 * (LIT - SHADOW)
    for seed in range(3):
        occ, _ = _occ(_ground(120, col, seed=seed))
        assert not occ.any(), seed


@pytest.mark.parametrize("f", [1.6, 1.8])
def test_a_concrete_bed_in_a_track_wide_shadow_is_empty(f):
    # Concrete sleepers and clean ballast 1.6-1.8 times the shaded side ground (the ratio
    # gate passes; lit share 0.13-0.19, the 90th percentile of altgen empty beds in a low
    # sun reaching 0.23): empty (the lit-share gate).
    vals = _paint(_ground(80, SHADOW), 20.0, 50.0, f * SHADOW, np.abs(ACROSS) <= 1.375)
    occ, _ = _occ(vals)
    assert not occ.any()


@pytest.mark.parametrize("f", [1.1, 1.3, 1.5])
def test_a_skylit_body_on_a_track_with_a_bright_learnt_bed_is_a_car(f):
    # The track's own bed learnt f times as bright as the ground (concrete sleepers): a
    # sky-lit grey body in a track-wide shadow is still a car (review RFINAL: with the
    # ground's 0.3 gate on the bed's line every such body read as bed in shade).
    vals = _paint(_ground(80, SHADOW), 34.0, 46.0, SKYLIT_GREY, np.abs(ACROSS) <= 1.5)
    refs = dict(REFS, bed=f * LIT, bed_sd=f * REFS["lit_sd"], bed_shadow=f * SHADOW)
    occ, u = _occ(vals, refs)
    assert occ[(u >= 35.0) & (u < 45.0)].all()
    # And that bed in shade, textured, is not.
    for seed in range(3):
        occ, _ = _occ(_paint(_ground(80, SHADOW, seed=seed), 0.0, 80.0, f * SHADOW, np.abs(ACROSS) <= 1.0), refs)
        assert not occ.any(), seed


def test_the_tracks_own_bed_in_shade_is_ground():
    # A bed bright enough to pass both gates in shade (2.5 times the ground: lit share
    # ~0.36) is ground where the track's own bed was learnt with that colour; without the
    # learnt bed the same stretch reads as a body.
    vals = _paint(_ground(80, SHADOW), 20.0, 50.0, 2.5 * SHADOW, np.abs(ACROSS) <= 1.375)
    occ_unknown, u = _occ(vals)
    assert occ_unknown[(u >= 22.0) & (u < 48.0)].mean() > 0.8
    refs = dict(REFS, bed=2.5 * LIT, bed_sd=2.5 * REFS["lit_sd"], bed_shadow=2.5 * SHADOW)
    occ, _ = _occ(vals, refs)
    assert not occ.any()


# The altgen scene (6628, low sun, 0.75 m: T1's first cars wholly in T2's cars' shadow) is
# checked in tests/test_railcar_risen_s30.py::test_altgen_container_flats_in_a_neighbours_shadow.
