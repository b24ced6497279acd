"""Railcars, sessions 41-42 (issue 6): low decks at 0.75-1 m pixels read against the lit flank ground.

At 0.75-1 m pixels a third of the container flats and flat wagons lay in no occupied run
(rail 120-123 and 210-213). The deck-shadow test (:func:`railcars._own_deck_shadow`)
needs every band three yard lit spreads under the lit colour, and at 1 m that spread is
30-50 % of the colour (tracks, lit and shaded stretches mixed), so it cannot fire; the
ballast colour itself may also be a quarter darker than the ground beside the track. The
deck's shadow falls on the flank ground, so at those pixels the band is also read against
that ground in the sun, learnt on the sun-side flanks of the whole scene
(:func:`railcars._flank_lit_reference`), leaving out flanks another track's cars could
shade (:func:`railcars._flank_shadable`): in a packed yard nearly all of them.
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.strips import Strip
from tests.test_railcars_s15 import BALLAST

# A packed yard at 1 m: the learnt lit colour's spread is 40 % of the colour.
# A shadow colour is learnt (the flank branch reads only where one is, review ROCCF H1).
WIDE = {"lit": BALLAST.copy(), "lit_sd": 0.4 * BALLAST, "shadow": 0.3 * BALLAST,
        "shadow_sd": 0.05 * BALLAST}
SIDE = 1.3 * BALLAST      # gravel beside the track, brighter than the centres' ballast


def _flank_strip(factor: float, n: int = 200, step: float = 0.5) -> Strip:
    """Ballast on the centre, ``SIDE`` ground beyond 1.435 m; on the +across side (the
    anti-sun side with the sun on the right) the ground 1.435-2.6 m out is ``factor`` of
    ``SIDE`` along samples 80-120 (a deck's shadow)."""
    across = np.arange(-2.6, 2.6 + 1e-9, 0.1)
    along = np.arange(n) * step
    b = np.broadcast_to(BALLAST[:, None, None], (4, across.size, n)).copy()
    b[:, np.abs(across) > 1.435, :] = SIDE[:, None, None]
    b[:, (across > 1.435), 80:120] *= factor
    x = np.broadcast_to(along[None], (across.size, n)).copy()
    y = np.broadcast_to(across[:, None], (across.size, n)).copy()
    return Strip(b.astype("float32"), along, across, x, y, step)


def test_a_deck_shadow_on_bright_side_ground_is_read_against_that_ground_at_1m():
    s = _flank_strip(0.7)
    flank = (SIDE, 0.03 * SIDE)
    # The yard's spread: 0.91 of the ballast is nowhere near three spreads under it.
    assert not R._own_deck_shadow(s, WIDE, False, 1.0, 3, blur_m=0.5).any()
    hit = R._own_deck_shadow(s, WIDE, False, 1.0, 3, blur_m=0.5, flank_lit=flank)
    assert hit[85:115].all() and not hit[:75].any() and not hit[125:].any()
    # The sun on the other side: the shaded side is the sun's, no deck shadow.
    assert not R._own_deck_shadow(s, WIDE, True, 1.0, 3, blur_m=0.5, flank_lit=flank).any()
    # Side ground only a little darker (0.95 of it) is the ground's own texture.
    assert not R._own_deck_shadow(_flank_strip(0.95), WIDE, False, 1.0, 3, blur_m=0.5, flank_lit=flank).any()
    # At fine pixels (blur 0.2 m) the flank reference is not read.
    assert not R._own_deck_shadow(s, WIDE, False, 1.0, 3, blur_m=0.2, flank_lit=flank).any()


def _track_strip(y0: float, sun_flank: np.ndarray, n: int = 200, step: float = 0.5,
                 lit_every: int = 0) -> tuple[LineString, Strip]:
    """An east-west track at northing ``y0``: +across is north (left of the line); the
    ground 1.95-2.6 m south (the sun side under a southern sun) is ``sun_flank``, except
    in the first ``lit_every`` % of the track where it is ``SIDE`` (lit)."""
    across = np.arange(-2.6, 2.6 + 1e-9, 0.1)
    along = np.arange(n) * step
    b = np.broadcast_to(SIDE[:, None, None], (4, across.size, n)).copy()
    b[:, across <= -1.95, :] = sun_flank[:, None, None]
    b[:, across <= -1.95, : n * lit_every // 100] = SIDE[:, None, None]
    x = np.broadcast_to(along[None], (across.size, n)).copy()
    y = np.broadcast_to((y0 + across)[:, None], (across.size, n)).copy()
    return LineString([(0.0, y0), (float(along[-1]), y0)]), Strip(b.astype("float32"), along, across, x, y, step)


def test_the_flank_reference_leaves_out_flanks_a_neighbours_cars_could_shade():
    # Two tracks 4.8 m apart, the sun due south 45 degrees high: the northern track's
    # sun-side flank lies 2.5 m from the southern track's axis, in its cars' shadow (dark
    # here, but for the 15 % of it no car stands beside), the southern track's sun-side
    # flank on open ground (lit). Without the exclusion the median would be the shade's.
    north, sn = _track_strip(0.0, 0.5 * SIDE, n=300, lit_every=15)
    south, ss = _track_strip(-4.8, SIDE, n=300)
    ss.values[:, :, 120:] = np.nan   # only 60 m of it seen (the rest beyond the image)
    tracks, strips = {"N": north, "S": south}, {"N": sn, "S": ss}
    assert R._sun_geometry(north, 180.0, 45.0)[0] is False   # the sun on the right: south
    a = -sn.across_m
    assert R._flank_shadable(sn, a, "N", tracks, 180.0, 45.0).all()
    assert not R._flank_shadable(ss, a, "S", tracks, 180.0, 45.0).any()
    med, sd = R._flank_lit_reference(strips, tracks, 180.0, 45.0)
    np.testing.assert_allclose(med, SIDE, rtol=1e-3)
    np.testing.assert_allclose(sd, 0.03 * SIDE, rtol=1e-3)
    # Without a known sun there is no reference.
    assert R._flank_lit_reference(strips, tracks, None, None) is None
