"""Railcars, session 22 (issue 6): typing rules read from a top's width and its evenness
along the car.

1. A plain top of unread height shorter than a boxcar was always typed a flat wagon,
   even when it spans a walled or roofed body's full width (3.1-3.3 m; a flat wagon's
   deck is 2.87 m, an ISO container 2.44 m). On the altgen tuning scenes 0-15 (0.3-0.5 m
   pixels) such tops were 60 open wagons and hoppers against 15 flat wagons: it is now
   the gondola class, as a tall short top that wide already was. The width is read only
   at ``railcars._MAX_FULL_TOP_RES_M`` or finer, as before.
2. A top with relief across ("cylinder") of a boxcar's length below a locomotive's was
   a tank car (or fell to the length rules) even when it is even end to end: a cambered
   roof sheet blurred at 0.75-1 m pixels. A tank's top carries a dome, a manhole
   platform and a walkway at mid-length; even along (``railcars._EVEN_ALONG``) it is now
   a boxcar.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.25
LIT = np.array([0.14, 0.15, 0.16, 0.20])   # ballast B G R NIR
LIT_B = float(LIT[:3].mean())
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)


def _strip(values: np.ndarray) -> Strip:
    along = np.arange(values.shape[2]) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(values.astype("float32"), along, ACROSS, x, y, STEP)


def _cover(a: np.ndarray, half_width_m: float) -> np.ndarray:
    """Share of each sample's footprint within ``half_width_m`` of the centreline."""
    lo, hi = np.maximum(a - STEP / 2, -half_width_m), np.minimum(a + STEP / 2, half_width_m)
    return np.clip(hi - lo, 0, None) / STEP


def _sheet(half_width_m: float, n_along: int = 60, top: float = 0.22) -> Strip:
    """A plain grey top ``half_width_m`` either side of the centreline on ballast."""
    w = _cover(ACROSS, half_width_m)
    prof = w[None] * top + (1 - w)[None] * LIT[:, None]
    return _strip(np.repeat(prof[:, :, None], n_along, axis=2))


@pytest.mark.parametrize("sun_left", [None, True, False])
def test_a_short_plain_top_at_full_body_width_is_the_gondola_class(sun_left):
    kw = {"resolution_m": 0.5} if sun_left is None else {"sun_left": sun_left, "shading": 2.0, "resolution_m": 0.5}
    roof = _sheet(1.6)                                             # 3.2 m: a covered hopper's roof
    assert R._look(roof, 0, 60, LIT_B) == "plain"
    assert R._top_width(roof, 0, 60) >= R._MIN_FULL_TOP_M
    # The old code typed it a flat wagon.
    assert R._classify(roof, 0, 60, 12.5, LIT_B, tall=None, **kw) == "gondola"
    # At a boxcar's length it stays a boxcar's roof.
    assert R._classify(roof, 0, 60, 14.2, LIT_B, tall=None, **kw) == "boxcar"
    # A deck (13-401: 2.87 m) and a container (2.44 m) stay flat wagons.
    for half in (1.435, 1.22):
        deck = _sheet(half)
        assert R._top_width(deck, 0, 60) < R._MIN_FULL_TOP_M
        assert R._classify(deck, 0, 60, 12.5, LIT_B, tall=None, **kw) == "flatcar"
    # The shadow saying no wall stands there wins (lit ground where it would fall).
    assert R._classify(roof, 0, 60, 12.5, LIT_B, tall=False, **kw) == "flatcar"


@pytest.mark.parametrize("gsd", [0.75, 1.0])
def test_the_short_full_width_rule_is_not_applied_at_coarse_pixels(gsd):
    # The width is not read there: a 3.2 m roof is typed as a 2.87 m deck is (session 31:
    # both the commonest car of their length, see test_railcar_types_s31).
    roof = _sheet(1.6)
    assert (R._classify(roof, 0, 60, 12.5, LIT_B, tall=None, resolution_m=gsd)
            == R._classify(_sheet(1.435), 0, 60, 12.5, LIT_B, tall=None, resolution_m=gsd))


def _ridged(n_along: int, *, dome: bool, seed: int = 0) -> Strip:
    """A top 3.2 m wide, brightest along its crest and darker towards its flanks (relief
    across, read "cylinder"), on lit ballast; with ``dome``, a dark dome and a bright
    walkway along the middle third, as on a tank car's barrel."""
    rng = np.random.default_rng(seed)
    vals = LIT[:, None, None] * (1 + 0.04 * rng.standard_normal((1, ACROSS.size, n_along)))
    a = np.abs(ACROSS)
    body = a <= 1.6
    level = np.clip(0.13 - 0.06 * a[body] ** 2, 0.04, None)
    colour = np.array([0.95, 1.0, 1.02, 1.1])
    top = level[None, :, None] * colour[:, None, None] * (1 + 0.01 * rng.standard_normal((4, body.sum(), n_along)))
    if dome:
        mid = n_along // 2
        third = n_along // 6
        inner = a[body] < 0.6
        top[:, inner, mid - third:mid + third] = 0.25          # galvanised walkway
        top[:, inner, mid - 3:mid + 3] = 0.03                  # the dome
    vals[:, body, :] = top
    return _strip(vals)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("body_m", [14.2, 15.5])
def test_relief_across_even_along_a_boxcar_length_is_a_boxcar(body_m):
    n = int(round(body_m / STEP))
    even = _ridged(n, dome=False)
    assert R._look(even, 0, n, LIT_B) == "cylinder"
    assert R._along_texture(even, 0, n) < R._EVEN_ALONG
    # The old code typed it a tank car (unvetted relief below 14.8 m) or fell to the
    # length rules (a locomotive's or a flat top's).
    assert R._classify(even, 0, n, body_m, LIT_B, resolution_m=0.75) == "boxcar"
    # With a dome and a walkway along its middle it stays a tank car (below 14.8 m,
    # where unvetted relief is a tank).
    tank = _ridged(n, dome=True)
    assert R._look(tank, 0, n, LIT_B) == "cylinder"
    assert R._along_texture(tank, 0, n) >= R._TEXTURED_ALONG
    if body_m < R._MIN_LONG_BODY_M:
        assert R._classify(tank, 0, n, body_m, LIT_B, resolution_m=0.75) == "tank"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("body_m, expected", [(12.0, "tank"), (18.0, "locomotive")])
def test_even_relief_outside_boxcar_lengths_keeps_the_old_rules(body_m, expected):
    # Shorter than any boxcar: a tank car; from a locomotive's length: a hood or fan band.
    n = int(round(body_m / STEP))
    even = _ridged(n, dome=False)
    assert R._classify(even, 0, n, body_m, LIT_B, resolution_m=0.75) == expected


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_long_vetted_barrel_is_a_tank_car_when_it_carries_its_dome():
    # The 15-150 and LPG cars (15.5 m bodies): a cylinder brighter on its sun-facing half
    # is still a tank car at that length when its top varies along as a barrel's does
    # (a dome, a manhole platform, a walkway); perfectly even along, the same relief is a
    # cambered roof sheet (tuning 0-15: 57 boxcars against 13 tank cars so read).
    n = 62                                           # 15.5 m at 0.25 m
    b = 0.04 + 0.16 * np.cos(np.clip(ACROSS / 1.5, -1, 1) * np.pi / 2) * np.where(ACROSS > 0, 1.0, 0.5)
    body = np.abs(ACROSS) <= 1.5
    prof = np.where(body[None], b[None] * np.ones((4, 1)), LIT[:, None])
    vals = np.repeat(prof[:, :, None], n, axis=2)
    even = _strip(vals)
    kw = {"sun_left": True, "shading": 2.0, "resolution_m": 0.75}
    assert R._look(even, 0, n, LIT_B, sun_left=True, shading=2.0) == "cylinder"
    assert R._classify(even, 0, n, 15.5, LIT_B, **kw) == "boxcar"
    domed = vals.copy()
    crest = np.abs(ACROSS) < 0.3
    domed[:, crest, 20:42] = 0.18                    # walkway along the middle third
    domed[:, crest, 29:33] = 0.03                    # the dome
    tank = _strip(domed)
    assert R._look(tank, 0, n, LIT_B, sun_left=True, shading=2.0) == "cylinder"
    assert R._along_texture(tank, 0, n) >= R._EVEN_ALONG
    assert R._classify(tank, 0, n, 15.5, LIT_B, **kw) == "tank"
