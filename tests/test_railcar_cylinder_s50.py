"""Railcars, session 50 (RCYL): a long unvetted "cylinder" textured along is a tank car.

From a locomotive's length (``railcars._MIN_LOCOMOTIVE_BODY_M``, 16.9 m) a top with relief
across ("cylinder") that its sun-lit half does not vet (the sun along the track, too high,
or unknown) was a locomotive by length (tag ``"cylinder_by_length"``). Where it varies
along as a barrel does (a dome, a manhole platform and a walkway at mid-length, from
``railcars._TEXTURED_ALONG``) it is now a tank car read long (a cut misplaced, or run into
its neighbour): tank cars are the commonest cars, a locomotive one or two in a train, and
a locomotive's cooling section reads "flat" far more often (altgen tuning 204-211 and
240-247, base code: such tops typed locomotives were 17 tank cars, 13 other cars and 2
locomotives). Relief even along (no dome: a hood, a fan band down the whole roof) keeps
the length rule; vetted barrels were tank cars at any length already (session 23).

Synthetic strips with known answers (no generator), 0.25 m samples across and along.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from changedet.objects import railcars as R

sys.path.insert(0, str(Path(__file__).parent))
from test_railcar_type_s22 import LIT_B, STEP, _ridged  # noqa: E402  (0.25 m samples)
from test_railcar_type_s23b import _barrel  # noqa: E402


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("body_m", [17.0, 18.5, 21.0, 24.0])
@pytest.mark.parametrize("gsd", [0.3, 0.75, 1.0])
def test_a_long_unvetted_barrel_with_its_dome_is_a_tank_car(body_m, gsd):
    # Base (session 49) typed these locomotives by length.
    n = int(round(body_m / STEP))
    for tank in (_barrel(n), _ridged(n, dome=True)):
        assert R._look(tank, 0, n, LIT_B) == "cylinder"                 # no sun given: unvetted
        assert R._along_texture(tank, 0, n) >= R._TEXTURED_ALONG
        assert R._classify_rule(tank, 0, n, body_m, LIT_B, resolution_m=gsd) == ("tank", "cylinder_by_length")
        # The sun along the track (no shading predicted) does not vet it either.
        assert R._classify(tank, 0, n, body_m, LIT_B, sun_left=None, shading=float("nan"),
                           resolution_m=gsd) == "tank"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("body_m", [17.0, 18.0, 21.0])
def test_long_unvetted_relief_even_along_keeps_the_length_rule(body_m):
    # No dome, platform or walkway: a hood or a fan band down the whole roof (session 22).
    n = int(round(body_m / STEP))
    even = _ridged(n, dome=False)
    assert R._look(even, 0, n, LIT_B) == "cylinder"
    assert R._along_texture(even, 0, n) < R._TEXTURED_ALONG
    assert R._classify_rule(even, 0, n, body_m, LIT_B, resolution_m=0.75) == ("locomotive", "cylinder_by_length")


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_the_rule_starts_at_a_locomotives_length():
    # Below _MIN_LOCOMOTIVE_BODY_M the rules for shorter bodies stand unchanged: a tank
    # car below 14.8 m, a boxcar by length from there (session 13).
    for body_m, expected in ((12.0, "tank"), (15.5, "boxcar"), (16.5, "boxcar")):
        n = int(round(body_m / STEP))
        assert R._classify(_barrel(n), 0, n, body_m, LIT_B, resolution_m=0.75) == expected


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_vetted_barrel_stays_a_tank_car_by_its_own_rule():
    n = int(round(18.5 / STEP))
    kw = {"sun_left": True, "shading": 2.0, "resolution_m": 0.75}
    assert R._classify_rule(_barrel(n), 0, n, 18.5, LIT_B, **kw) == ("tank", "barrel")


@pytest.mark.parametrize("step", [0.3, 0.5])
def test_a_long_roof_with_fans_over_one_half_stays_a_locomotive(step):
    # A 2TE10 section's roof (tests/test_railcar_types_s30.py): four dark fans down the
    # middle of its rear half read "cylinder" and textured along, but its middle is darker
    # than its shoulders, as no barrel's crest is.
    from test_railcar_types_s30 import LIT, _strip as roof_strip
    strip, s0, s1 = roof_strip(step, 17.5, 0.0, fans=[10.0, 11.8, 13.6, 15.4])
    lit_b = float(LIT.mean())
    assert R._look(strip, s0, s1, lit_b) == "cylinder"
    assert R._along_texture(strip, s0, s1) >= R._TEXTURED_ALONG
    assert R._crest_relief(strip, s0, s1) < R._MIN_BARREL_CREST
    assert R._classify_rule(strip, s0, s1, (s1 - s0) * step, lit_b) == ("locomotive", "cylinder_by_length")


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_crest_relief_reads_a_barrel_bright_and_a_fan_band_dark():
    n = int(round(18.5 / STEP))
    assert R._crest_relief(_barrel(n), 0, n) > 0.2
    assert R._crest_relief(_ridged(n, dome=True), 0, n) > 0.2
    band = _barrel(n)
    off = np.abs(band.across_m)
    band.values[:, off <= 0.6, :] = 0.03                       # a dark fan band down the middle
    assert R._crest_relief(band, 0, n) < R._MIN_BARREL_CREST
    # The path radiance is taken off: haze does not move the sign.
    assert R._crest_relief(band, 0, n, path=np.full(4, 0.01)) < R._MIN_BARREL_CREST
    # Not read where the middle or the shoulders have no finite sample.
    band.values[:, off <= 0.5, :] = np.nan
    assert np.isnan(R._crest_relief(band, 0, n))
