"""Railcar typing, session 51 (issue 6, helper RTYPE): a flat wagon's dark bare deck read
"open" (darker than the lit ground blurred beside it, or than half the lit ballast) must not
be typed an open wagon where its shadow says no walls stand there (rule ``open_low_deck``).

A deck 1.35 m high casts a short shadow: the ground a pixel past it on the anti-sun side is
lit, where an open wagon's walls (3.5-3.7 m; the lowest ``_LOW_TALL_M``) shadow it. The test
(:func:`_low_deck`) is read against the walls (``top_m``, ``half_m``): where the sun puts that
point outside the lowest walls' shadow it does not speak, and the open look stands.

The cross-sections are drawn, not typed in, as in ``test_railcar_pale_deck_s41``: a box of the
stated width, brightness and height over lit ground, its shadow (0.3 of the ground's light)
``p * h`` m past its anti-sun edge, blurred by a Gaussian (sigma in pixels), averaged over
pixels of ``res`` m and sampled every 0.25 m across out to 8.1 m (finer than the pixels: the point
read past the deck's shadow is a quarter of a metre wide at 0.5 m pixels).
"""

import numpy as np
import pytest
from scipy import ndimage

from changedet.objects import railcars as R
from tests.test_railcar_types_coarse_s40 import _strip

_FINE = np.arange(-14.0, 14.0, 0.01)
_WIDE = np.round(np.arange(-8.1, 8.1 + 1e-9, 0.25), 2)
_NARROW = np.abs(_WIDE) <= 4.1 + 1e-9
_GROUND = 0.15
# A dark wooden deck or a coal load: darker than half the lit ballast.
_DARK = 0.05


def _profile(width_m: float, top: float, height_m: float, p: float, psf_px: float, res_m: float) -> np.ndarray:
    """Reflectance across (at ``_WIDE``, m) of a body ``width_m`` wide, ``top`` bright and
    ``height_m`` high, sun on the positive side casting ``p`` m of shadow per m of height,
    seen through pixels of ``res_m`` m with a Gaussian spread of ``psf_px`` px."""
    f = np.full(_FINE.shape, _GROUND)
    edge = -width_m / 2
    f[(_FINE < edge) & (_FINE >= edge - p * height_m)] = 0.3 * _GROUND
    f[np.abs(_FINE) <= width_m / 2] = top
    f = ndimage.gaussian_filter1d(f, psf_px * res_m / 0.01)
    centres = np.arange(-11.0, 11.0, res_m)
    pixels = np.array([f[(_FINE >= c - res_m / 2) & (_FINE < c + res_m / 2)].mean() for c in centres])
    return np.interp(_WIDE, centres, pixels)


def _read(width_m, top, height_m, p, psf_px, res_m):
    """(low against a roof, low against walls, (class, rule)) for a 12 m even top of unread height."""
    col = _profile(width_m, top, height_m, p, psf_px, res_m)
    narrow, wide = _strip(col[_NARROW], across=_WIDE[_NARROW]), _strip(col, across=_WIDE)
    ground = np.full(3, _GROUND)
    low = R._low_deck(wide, 0, 48, True, p, resolution_m=res_m, lit_ground=ground)
    walls = R._low_deck(wide, 0, 48, True, p, resolution_m=res_m, lit_ground=ground,
                        top_m=R._LOW_TALL_M, half_m=R._OPEN_WAGON_HALF_M)
    rule = R._classify_rule(narrow, 0, 48, 12.0, _GROUND, tall=None, low=low, low_walls=walls,
                            sun_left=True, resolution_m=res_m)
    return low, walls, rule


@pytest.mark.parametrize("psf_px", [0.4, 0.8])
@pytest.mark.parametrize("p", [0.5, 0.8, 1.2])
def test_dark_bare_deck_read_open_is_a_flat_wagon(p, psf_px):
    # A 13-401 deck, 2.87 m wide and 1.35 m high, dark (0.05) over ballast of 0.15, at
    # 0.5 m pixels (coarser, the blurred dark top reads with relief and other rules decide).
    low, walls, rule = _read(2.87, _DARK, 1.35, p, psf_px, 0.5)
    assert walls is True                  # lit ground past its short shadow
    assert rule == ("flatcar", "open_low_deck")


@pytest.mark.parametrize("res_m", [0.5, 1.0])
@pytest.mark.parametrize("psf_px", [0.4, 0.8])
@pytest.mark.parametrize("p", [0.8, 1.2])
def test_open_wagons_walls_shadow_the_point(p, psf_px, res_m):
    # An open wagon with a coal load, 3.2 m wide over its walls, 3.5 m high: the point lies
    # in its shadow, and at 0.5 m the open look stands.
    low, walls, rule = _read(3.2, _DARK, 3.5, p, psf_px, res_m)
    assert walls is False
    if res_m == 0.5:
        assert rule == ("gondola", "open")


@pytest.mark.parametrize("psf_px", [0.4, 0.8])
def test_walls_test_is_silent_where_only_a_roof_would_shadow_the_point(psf_px):
    # p = 0.25 at 0.5 m pixels: the point read is 2.28-2.53 m out (past the deck's 0.34 m
    # of shadow, and a pixel); a 4.0 m roof's shadow reaches 2.65 m, the lowest walls'
    # only 1.55 + 3.4 * 0.25 = 2.40 m. The roof's test reads the deck low, but a lit
    # point there does not tell a deck from an open wagon: the walls' test is silent and
    # the open look stands.
    low, walls, rule = _read(2.87, _DARK, 1.35, 0.25, psf_px, 0.5)
    assert low is True and walls is None
    assert rule == ("gondola", "open")
    low, walls, rule = _read(3.2, _DARK, 3.5, 0.25, psf_px, 0.5)
    assert walls is None
    assert rule == ("gondola", "open")


@pytest.mark.parametrize("top", [_DARK, 0.15, 0.3])
@pytest.mark.parametrize("width_m, height_m", [(2.87, 1.35), (3.2, 3.5), (3.1, 4.3)])
@pytest.mark.parametrize("p", [0.25, 0.5, 0.8, 1.2])
@pytest.mark.parametrize("res_m", [0.5, 1.0])
def test_the_walls_reading_is_the_roofs_with_the_walls_gate(top, width_m, height_m, p, res_m):
    # _split_cars does not read the point twice: the walls' reading is the roof's where the
    # walls' shadow would cover the point (_low_deck_reads), the same light read against a
    # lower body, and nothing else.
    low, walls, _ = _read(width_m, top, height_m, p, 0.6, res_m)
    shortcut = True if low is True and R._low_deck_reads(p, res_m, top_m=R._LOW_TALL_M,
                                                         half_m=R._OPEN_WAGON_HALF_M) else None
    assert shortcut == (True if walls is True else None)
