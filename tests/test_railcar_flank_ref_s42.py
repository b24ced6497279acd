"""Railcars, session 42 (issue 6, review ROCCF H1/H2): the lit flank reference for low decks.

Session 41 read a bare deck's shadow at 0.75-1 m pixels against the lit ground on the
sun-side flanks no other track's car can shade (:func:`railcars._flank_lit_reference`). In
a packed yard those are the outermost track's, ground outside the yard, and the review
found two ways it put false cars on empty tracks:

* H2: a paved apron (or snow, a road) beyond the outermost track, brighter than the
  ground between the tracks: plain lit inter-track ground was then "three spreads under"
  the reference. The reference is now kept only where the between-track flanks' lit part
  is as bright (band-mean ratio within ``_FLANK_INSIDE_TOL``).
* H1: a neighbour's low-sun shadow across an empty track, where no shadow colour was
  learnt (the centre then reads lit). The flank branch now reads only where a shadow
  colour was learnt (the lit-centre test then sees a neighbour's shadow over the centre),
  and one darker than the lit colour (review ROCCF2 L4).

Review ROCCF2 H1: the between-track lit level was the 97.5th percentile of those flank
samples, so a few per cent of bright ground inside the yard (a level crossing, a service
lane, snow or litter patches) set it, and the bright outside reference was read again
(probe scene 5526: 1 -> 8 false cars on an empty track). The level is now the upper part
of the brighter class of a two-class split of those samples (:func:`railcars._inside_lit_level`).
"""

from __future__ import annotations

import numpy as np

from changedet.objects import railcars as R
from tests.test_railcar_flank_lit_s41 import SIDE, WIDE, _flank_strip, _track_strip

FLANK = (SIDE, 0.03 * SIDE)


def _yard(outside: float):
    """Two east-west tracks 4.8 m apart under a southern sun 45 degrees high: the southern
    (outermost sun-side) track's flank is ``outside`` x SIDE (ground outside the yard),
    the northern track's flank is between the tracks: SIDE where lit (40 %), half of it in
    its neighbour's cars' shadow."""
    north, sn = _track_strip(0.0, 0.5 * SIDE, n=300, lit_every=40)
    south, ss = _track_strip(-4.8, outside * SIDE, n=300)
    return {"N": north, "S": south}, {"N": sn, "S": ss}


def test_a_reference_from_brighter_ground_outside_the_yard_is_not_used():
    # A paved apron 1.5 x the ground between the tracks: no reference (session 41: 7 false
    # cars on an empty track in such a probe scene).
    tracks, strips = _yard(1.5)
    assert R._flank_lit_reference(strips, tracks, 180.0, 45.0) is None
    # 1.25 x (ROCCF's milder probe) is still another ground: no reference.
    tracks, strips = _yard(1.25)
    assert R._flank_lit_reference(strips, tracks, 180.0, 45.0) is None
    # The same ground outside and inside: the reference is that ground.
    tracks, strips = _yard(1.0)
    med, _ = R._flank_lit_reference(strips, tracks, 180.0, 45.0)
    np.testing.assert_allclose(med, SIDE, rtol=1e-3)
    # Darker ground outside only makes the test more cautious: kept.
    tracks, strips = _yard(0.9)
    med, _ = R._flank_lit_reference(strips, tracks, 180.0, 45.0)
    np.testing.assert_allclose(med, 0.9 * SIDE, rtol=1e-3)


def test_no_flank_reading_where_no_shadow_colour_was_learnt():
    # Without a learnt shadow colour the lit-centre test cannot see a neighbour's shadow
    # over the centre (rail seed 6502, snow, low sun: an empty track filled with cars).
    s = _flank_strip(0.7)
    assert R._own_deck_shadow(s, WIDE, False, 1.0, 3, blur_m=0.5, flank_lit=FLANK)[85:115].all()
    no_shadow = {**WIDE, "shadow": np.full(4, np.nan), "shadow_sd": np.full(4, np.nan)}
    assert not R._own_deck_shadow(s, no_shadow, False, 1.0, 3, blur_m=0.5, flank_lit=FLANK).any()


def test_a_little_bright_ground_inside_the_yard_does_not_readmit_a_bright_outside_reference():
    # Review ROCCF2 H1: the _yard(1.5) apron plus 5 % of the between-track flank at the
    # apron's brightness, as one level crossing (8 m across the yard) or as scattered
    # patches (snow, litter): still no reference.
    for where in (slice(200, 215), slice(150, 300, 10)):
        tracks, strips = _yard(1.5)
        sn = strips["N"]
        sn.values[:, sn.across_m <= -1.95, where] = (1.5 * SIDE)[:, None, None]
        assert R._flank_lit_reference(strips, tracks, 180.0, 45.0) is None
        # The same bright share inside with the outside the yard's own ground: kept.
        strips["S"] = _yard(1.0)[1]["S"]
        med, _ = R._flank_lit_reference(strips, tracks, 180.0, 45.0)
        np.testing.assert_allclose(med, SIDE, rtol=1e-3)
    # A low sun: the neighbours' trains shade 95 % of the ground between the tracks; its
    # lit 5 % still gives the lit level, and the same ground outside is kept (rail seed
    # 5991, 21 degrees: a 90th percentile was still shade).
    north, sn = _track_strip(0.0, 0.5 * SIDE, n=300, lit_every=5)
    south, ss = _track_strip(-4.8, SIDE, n=300)
    med, _ = R._flank_lit_reference({"N": sn, "S": ss}, {"N": north, "S": south}, 180.0, 45.0)
    np.testing.assert_allclose(med, SIDE, rtol=1e-3)


def test_no_flank_reading_where_the_shadow_colour_is_not_the_darker():
    # Review ROCCF2 L4: a "shadow" colour brighter than the lit one is no shadow model for
    # the lit-centre test (it splits the lit-shadow mix at half way): no flank reading.
    s = _flank_strip(0.7)
    odd = {**WIDE, "shadow": 1.2 * WIDE["lit"]}
    assert not R._own_deck_shadow(s, odd, False, 1.0, 3, blur_m=0.5, flank_lit=FLANK).any()
    # A shadow colour darker over the bands but as bright in blue (sky-lit shadows on snow,
    # rail seed 5005) is one: the flank branch reads.
    blue = {**WIDE, "shadow": WIDE["shadow"].copy()}
    blue["shadow"][0] = 1.02 * WIDE["lit"][0]
    assert R._own_deck_shadow(s, blue, False, 1.0, 3, blur_m=0.5, flank_lit=FLANK)[85:115].all()
