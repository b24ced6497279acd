"""Railcars, session 31 (issue 6): a plain top of unread height at coarse pixels.

Where the shadow does not tell a deck from a walled or roofed body (``tall`` None) and
the pixels are too coarse to read the top's width (a 2.87 m deck against a 3.1-3.3 m
roof: coarser than ``railcars._MAX_FULL_TOP_RES_M``), a top even to a tenth across was
always typed a flat wagon. It now takes the commonest car of its length, as a textured
top of unread height already did: a boxcar from a boxcar's length, the gondola class (a
covered hopper's roof, an open wagon's even load) below it (flat wagons are about 8 % of
the 1520 mm fleet; session 31, altgen tuning 100-103 and 0-3 at 0.75-1 m: 110 such tops
were hoppers, boxcars and open wagons, 11 flat wagons). Finer pixels keep the width
rules; a shadow saying no walls (``tall`` False) keeps a flat wagon.
"""

from __future__ import annotations

import pytest

from changedet.objects import railcars as R
# The ballast, strip builder and plain sheet of the session-22 width tests.
from tests.test_railcar_type_s22 import LIT_B, _sheet


@pytest.mark.parametrize("gsd", [0.75, 1.0])
@pytest.mark.parametrize("sun_left", [None, True])
def test_a_plain_top_of_unread_height_at_coarse_pixels_takes_the_commonest_car_of_its_length(sun_left, gsd):
    kw = {"resolution_m": gsd} if sun_left is None else {"sun_left": sun_left, "shading": 2.0, "resolution_m": gsd}
    roof = _sheet(1.6)
    assert R._look(roof, 0, 60, LIT_B) == "plain"
    # The base code typed both flat wagons.
    assert R._classify(roof, 0, 60, 12.5, LIT_B, tall=None, **kw) == "gondola"
    assert R._classify(roof, 0, 60, 14.2, LIT_B, tall=None, **kw) == "boxcar"
    # A shadow that says no walls (tall False) still makes it a flat wagon.
    assert R._classify(roof, 0, 60, 12.5, LIT_B, tall=False, **kw) == "flatcar"


@pytest.mark.parametrize("gsd", [0.3, 0.5])
def test_finer_pixels_keep_a_plain_deck_a_flat_wagon(gsd):
    deck = _sheet(1.435)                                           # 13-401: 2.87 m
    assert R._classify(deck, 0, 60, 12.5, LIT_B, tall=None, resolution_m=gsd) == "flatcar"


def test_unknown_resolution_keeps_the_old_rule():
    assert R._classify(_sheet(1.6), 0, 60, 12.5, LIT_B, tall=None) == "flatcar"
