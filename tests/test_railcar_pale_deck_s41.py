"""Railcar typing at coarse (1 m) pixels, session 41 (issue 6, helper BOXDECK2): the even
short top's width rule (``even_short_roof``) must not read a pale bare flat wagon's deck as a
boxcar's roof. At 1 m a 2.87 m deck reads about as wide as a 3.3 m roof, so the rule listens
to a one-sided shadow test (``_low_deck``): a deck 1.35 m high casts a short shadow, and the
ground a pixel past it on the anti-sun side is lit; a roof 4.0-4.7 m high shadows it.

The cross-sections are drawn, not typed in: a box of the stated width and brightness over
lit ground, its shadow (0.3 of the ground's light) ``p * h`` m past its anti-sun edge, blurred
by a Gaussian (sigma in pixels), averaged over 1 m pixels and sampled every 0.5 m across, out
to 8.1 m as the counter's wide height-cue strip (review RBOXDECK, L1).
"""

import numpy as np
import pytest
from scipy import ndimage

from changedet.objects import railcars as R
from changedet.objects.strips import Strip
from tests.test_railcar_types_coarse_s40 import _strip as _uniform_strip

_FINE = np.arange(-14.0, 14.0, 0.01)
_WIDE = np.round(np.arange(-8.1, 8.1 + 1e-9, 0.5), 2)
_NARROW = np.abs(_WIDE) <= 4.1 + 1e-9
_GROUND = 0.15


def _profile(width_m: float, top: float, height_m: float, p: float, psf_px: float,
             phase: float = 0.0) -> np.ndarray:
    """Reflectance across (at ``_WIDE``, m) of a body ``width_m`` wide, ``top`` bright and
    ``height_m`` high, sun on the positive side casting ``p`` m of shadow per m of height,
    seen through 1 m pixels (offset ``phase``, m) with a Gaussian spread of ``psf_px`` px."""
    f = np.full(_FINE.shape, _GROUND)
    edge = -width_m / 2
    f[(_FINE < edge) & (_FINE >= edge - p * height_m)] = 0.3 * _GROUND
    f[np.abs(_FINE) <= width_m / 2] = top
    f = ndimage.gaussian_filter1d(f, psf_px / 0.01)
    centres = np.arange(-11.0 + phase, 11.0, 1.0)
    pixels = np.array([f[(_FINE >= c - 0.5) & (_FINE < c + 0.5)].mean() for c in centres])
    return np.interp(_WIDE, centres, pixels)


def _strip(col: np.ndarray, across: np.ndarray) -> Strip:
    """A strip 48 samples (24 m) long whose brightness across (at ``across``, m) is ``col``."""
    return _uniform_strip(col, across=across)


def _read(width_m, top, height_m, p, psf_px, phase=0.0):
    """(top width read, low, (class, rule)) for a 12 m even "flat" top of unread height at 1 m."""
    col = _profile(width_m, top, height_m, p, psf_px, phase)
    narrow, wide = _strip(col[_NARROW], _WIDE[_NARROW]), _strip(col, _WIDE)
    low = R._low_deck(wide, 0, 48, True, p, resolution_m=1.0, lit_ground=np.full(3, _GROUND))
    rule = R._short_top_rule(narrow, 0, 48, 12.0, "flat", None, 0.005, 1.0, lit_b=_GROUND, low=low)
    return R._top_width(narrow, 0, 48), low, rule


@pytest.mark.parametrize("psf_px", [0.4, 0.6, 0.8])
@pytest.mark.parametrize("p", [0.5, 0.8])
def test_pale_bare_deck_read_as_wide_as_a_roof_stays_a_flat_wagon_at_1m(p, psf_px):
    # A 13-401 deck, 2.87 m wide, 1.35 m high, pale (0.40) over ballast of 0.15.
    width, low, rule = _read(2.87, 0.40, 1.35, p, psf_px)
    assert width >= R._MIN_ROOF_WIDTH_COARSE_M      # the width gate alone would say roof
    assert low is True                               # the lit ground past its short shadow
    assert rule == ("flatcar", "even_short_flat")


@pytest.mark.parametrize("psf_px", [0.4, 0.8])
@pytest.mark.parametrize("p", [0.5, 0.8])
def test_roof_shadowing_the_same_point_is_still_a_boxcar_at_1m(p, psf_px):
    # A boxcar's roof, 3.3 m wide, 4.7 m high, under the same sun: the point is shadowed.
    width, low, rule = _read(3.3, 0.30, 4.7, p, psf_px)
    assert width >= R._MIN_ROOF_WIDTH_COARSE_M
    assert low is False
    assert rule == ("boxcar", "even_short_roof")


def test_low_deck_says_nothing_where_a_roof_would_not_shadow_the_point():
    # p = 0.3: a 4.0 m roof's shadow ends 2.85 m out, inside the deck's point plus blur
    # (2.84-3.34 m): a lit point tells nothing, so the test does not speak.
    assert _read(2.87, 0.40, 1.35, 0.3, 0.6)[1] is None
    assert _read(3.3, 0.30, 4.7, 0.3, 0.6)[1] is None


def test_low_deck_point_on_another_tracks_cars_is_not_read():
    col = _profile(2.87, 0.40, 1.35, 0.8, 0.6)
    wide = _strip(col, _WIDE)
    wide.values[:, _WIDE < -2.5, :] = np.nan   # another track's cars or their shadow, masked
    assert R._low_deck(wide, 0, 48, True, 0.8, resolution_m=1.0, lit_ground=np.full(3, _GROUND)) is None


def test_low_deck_reads_the_anti_sun_side_of_either_sun():
    col = _profile(2.87, 0.40, 1.35, 0.8, 0.6)
    mirrored = _strip(col[::-1], _WIDE)        # the same scene, sun on the negative side
    assert R._low_deck(mirrored, 0, 48, False, 0.8, resolution_m=1.0,
                       lit_ground=np.full(3, _GROUND)) is True
    # Read on the wrong side (the sun side has no shadow at all, but the point test only
    # speaks of the anti-sun side): the roof's scene mirrored reads its shadow again.
    roof = _strip(_profile(3.3, 0.30, 4.7, 0.8, 0.6)[::-1], _WIDE)
    assert R._low_deck(roof, 0, 48, False, 0.8, resolution_m=1.0, lit_ground=np.full(3, _GROUND)) is False


def test_low_deck_point_far_brighter_than_lit_ground_is_not_read():
    # Past a roof's shadow edge a pale body (another track's car the mask missed) reads
    # far brighter than lit ground: not ground, so it says nothing (not "low").
    col = _profile(3.3, 0.30, 4.7, 0.8, 0.6)
    wide = _strip(col, _WIDE)
    wide.values[:, (_WIDE <= -2.5) & (_WIDE >= -5.0), :] = 0.45   # 3x the lit ground
    assert R._low_deck(wide, 0, 48, True, 0.8, resolution_m=1.0, lit_ground=np.full(3, _GROUND)) is None
