"""Railcar typing, session 49 (issue 6): a plain top read 18 m or longer is an 80 ft flat
wagon's deck (2.87 m) or its containers (2.44 m) only where it reads narrower than a roofed
body; a plain sheet read as wide as a boxcar's roof (3.25-3.3 m) at 0.5 m pixels or finer
is a boxcar read long (its cut misplaced), unless its shadow reads a bare deck.
"""

from math import erf, sqrt

import numpy as np
import pytest

from changedet.objects import railcars as R
from tests.test_railcar_types_coarse_s40 import _strip as _uniform_strip

# Offsets across (m) sampled every 0.3 m out to 4.2 m: the ground beyond a top is read on
# both sides.
_ACROSS = np.round(np.arange(-4.2, 4.2 + 1e-9, 0.3), 2)
_N = 130            # samples along (0.5 m apart): 65 m, the body read 18.5 m
_BODY_M = 18.5


def _top(half_width_m: float, top: float = 0.40, ground: float = 0.30, sigma_m: float = 0.15) -> list[float]:
    """Reflectance across a plain top ``half_width_m`` half-wide over lit ground, its edges
    blurred by a Gaussian of ``sigma_m`` (a 0.3 m pixel's spread)."""
    s = sqrt(2) * sigma_m
    return [ground + (top - ground) * 0.5 * (erf((half_width_m - a) / s) + erf((half_width_m + a) / s))
            for a in _ACROSS]


def _strip(half_width_m: float):
    return _uniform_strip(_top(half_width_m), _N, across=_ACROSS)


def _rule(strip, res: float, **kw):
    return R._classify_rule(strip, 0, _N, _BODY_M, 0.30, resolution_m=res, **kw)


@pytest.mark.parametrize("res", [0.3, 0.5])
def test_long_plain_top_as_wide_as_a_roof_is_a_boxcar(res):
    roof = _strip(1.65)          # a boxcar's roof, 3.3 m
    assert R._look(roof, 0, _N, 0.30, resolution_m=res) == "plain"
    assert R._top_width(roof, 0, _N) >= R._MIN_FULL_TOP_M
    assert _rule(roof, res) == ("boxcar", "long_roof_width")
    assert _rule(roof, res, tall=True) == ("boxcar", "long_roof_width")
    assert "long_roof_width" not in R._WEAK_RULES


@pytest.mark.parametrize("half", [1.435, 1.22])
def test_long_plain_deck_or_container_stays_a_flat_wagon(half):
    # A 2.87 m deck and a 2.44 m container read narrower than _MIN_FULL_TOP_M.
    top = _strip(half)
    assert R._top_width(top, 0, _N) < R._MIN_FULL_TOP_M
    assert _rule(top, 0.3) == ("flatcar", "long_flat_wagon")


def test_long_roof_width_stands_down_where_it_cannot_be_read_or_the_shadow_says_deck():
    roof = _strip(1.65)
    # Coarser than _MAX_FULL_TOP_RES_M the width does not part a deck from a roof.
    assert _rule(roof, 0.75) == ("flatcar", "long_flat_wagon")
    assert _rule(roof, float("nan")) == ("flatcar", "long_flat_wagon")
    # The shadow reads a bare deck: no roof stands there.
    assert _rule(roof, 0.3, low=True) == ("flatcar", "long_flat_wagon")
    assert _rule(roof, 0.3, tall=False) == ("flatcar", "long_flat_wagon")
    # Shorter than an 80 ft flat wagon's body the rule is not reached.
    assert R._classify_rule(roof, 0, _N, 17.5, 0.30, resolution_m=0.3)[1] != "long_roof_width"
