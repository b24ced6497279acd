"""Railcars, session 19 (issue 6): typing where the height is not read.

1. A plain roof sheet of a boxcar's length whose height was not read was typed a flat
   wagon (the altgen tuning scenes: a boxcar in seven went to the flatcar class that
   way). A boxcar's roof spans its body, 3.1-3.3 m; a flat wagon's deck is 2.87 m wide
   and an ISO container 2.44 m: a plain top of 2.95 m or more is a roof
   (:data:`railcars._MIN_FULL_TOP_M`, read by :func:`railcars._top_width`).
2. The height cue (:func:`railcars._tall`) compared the anti-sun band with the sun band;
   in a packed yard the sun band mostly lies under the sun-side neighbour's cars or
   their shadows (masked), and four cars in five got no height. Where the same track
   stands empty nearby, the anti-sun band there is the reference and the sun band is not
   needed.

Review of that change: the width reads 0.1-0.3 m off at 0.75-1.0 m pixels and widens with
a ballast shoulder beside a deck, so both width rules apply only at 0.5 m pixels or finer
(``railcars._MAX_FULL_TOP_RES_M``); the empty stretch's reference must be read from
``_MIN_BAND_SHARE`` of its band, and the sun band beside the car is required again (grass
beside the car or a dark car missed on the anti-sun neighbour read as a shadow without it)
and must match the sun band at the empty stretch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.25
LIT = np.array([0.14, 0.15, 0.16, 0.20])   # ballast B G R NIR
LIT_B = float(LIT[:3].mean())


def _strip(profile: np.ndarray, n_along: int = 60, half: float = 2.6) -> Strip:
    """A strip whose samples follow ``profile`` (band, across) at every along position."""
    across = np.arange(-half, half + 1e-9, STEP)
    values = np.repeat(profile[:, :, None], n_along, axis=2).astype("float32")
    along = np.arange(n_along) * STEP
    x = np.broadcast_to(along[None], (across.size, n_along)).copy()
    y = np.broadcast_to(across[:, None], (across.size, n_along)).copy()
    return Strip(values, along, across, x, y, STEP)


def _cover(a: np.ndarray, half_width_m: float) -> np.ndarray:
    """Share of each sample's footprint (``STEP`` wide, as a pixel integrates) within
    ``half_width_m`` of the centreline."""
    lo, hi = np.maximum(a - STEP / 2, -half_width_m), np.minimum(a + STEP / 2, half_width_m)
    return np.clip(hi - lo, 0, None) / STEP


def _sheet(half_width_m: float, *, top: float = 0.22, beside: float | None = None,
           beside_to_m: float = 1.6) -> np.ndarray:
    """(band, across) profile of a plain grey top ``half_width_m`` either side of the
    centreline on ballast, each sample the mean over its footprint; with ``beside``, a
    band of that brightness out to ``beside_to_m`` (a hood unit's walkways)."""
    a = np.arange(-2.6, 2.6 + 1e-9, STEP)
    w_top = _cover(a, half_width_m)
    w_beside = (_cover(a, beside_to_m) - w_top) if beside is not None else np.zeros_like(a)
    b = w_top * top + w_beside * (beside or 0.0)
    return b[None] + (1 - w_top - w_beside)[None] * LIT[:, None]


@pytest.mark.parametrize("sun_left", [None, True, False])
def test_a_plain_top_as_wide_as_a_boxcar_roof_is_a_boxcar(sun_left):
    roof = _strip(_sheet(1.65))                                    # 3.3 m: 11-217's body
    assert R._look(roof, 0, 60, LIT_B) == "plain"
    assert R._top_width(roof, 0, 60) >= R._MIN_FULL_TOP_M
    kw = {"resolution_m": 0.5} if sun_left is None else {"sun_left": sun_left, "shading": 2.0, "resolution_m": 0.5}
    # The old code typed it a flat wagon (a plain sheet of unread height).
    assert R._classify(roof, 0, 60, 14.2, LIT_B, tall=None, **kw) == "boxcar"
    # Shorter than any boxcar body and as wide as a walled body: a covered hopper's roof
    # or an open wagon's even load (session 22 measured 60 such tops against 15 flat
    # wagons read that wide; see test_railcar_type_s22).
    assert R._classify(roof, 0, 60, 12.5, LIT_B, tall=None, **kw) == "gondola"
    # A deck (13-401: 2.87 m) and a container (2.44 m) of the same length stay flat wagons.
    for half in (1.435, 1.22):
        deck = _strip(_sheet(half))
        assert R._top_width(deck, 0, 60) < R._MIN_FULL_TOP_M
        assert R._classify(deck, 0, 60, 14.2, LIT_B, tall=None, **kw) == "flatcar"


def test_a_tall_short_plain_top_as_wide_as_a_walled_car_is_the_gondola_class():
    roof = _strip(_sheet(1.6))
    # Old code: a tall short even top was a container on a flat wagon whatever its width.
    assert R._classify(roof, 0, 60, 12.5, LIT_B, tall=True, resolution_m=0.5) == "gondola"
    container = _strip(_sheet(1.22))
    assert R._classify(container, 0, 60, 12.5, LIT_B, tall=True, resolution_m=0.5) == "flatcar"


@pytest.mark.parametrize("gsd", [0.75, 1.0])
def test_the_width_rules_are_not_applied_at_coarse_pixels(gsd):
    # Review, finding 1: a 3.3 m roof reads 3.27/3.17/3.04 m at 0.5/0.75/1.0 m pixels and
    # a deck beside a ballast shoulder reads wider than it is; at 0.75 m and coarser
    # neither width rule speaks (TYPE2's version typed these boxcar and gondola).
    roof = _strip(_sheet(1.65))
    assert R._top_width(roof, 0, 60) >= R._MIN_FULL_TOP_M      # the width itself is read
    # Session 31: a plain top of unread height there takes the commonest car of its
    # length whatever its width; the width decides nothing (a deck is typed the same).
    deck = _strip(_sheet(1.435))
    assert (R._classify(roof, 0, 60, 14.2, LIT_B, tall=None, resolution_m=gsd)
            == R._classify(deck, 0, 60, 14.2, LIT_B, tall=None, resolution_m=gsd))
    assert R._classify(roof, 0, 60, 12.5, LIT_B, tall=True, resolution_m=gsd) == "flatcar"
    # Resolution unknown (NaN): not applied either.
    assert R._classify(roof, 0, 60, 14.2, LIT_B, tall=None) == "flatcar"


def _pixel_profile(edges: list[tuple[float, np.ndarray]], gsd: float, step: float = 0.5,
                   half: float = 2.6) -> Strip:
    """A strip sampled every ``step`` across (as the counter samples at ``gsd``), each
    sample the mean over a ``gsd``-wide pixel of a symmetric scene: ``edges`` lists
    (outer half-width m, colour (4,)) from the centre out, the last reaching the strip's
    edge."""
    a = np.arange(-half, half + 1e-9, step)
    fine = np.linspace(-gsd / 2, gsd / 2, 41)
    x = np.abs(a[:, None] + fine[None, :])                     # (across, sub-samples)
    out = np.zeros((4, a.size))
    inner = 0.0
    for outer, colour in edges:
        share = ((x >= inner) & (x < outer)).mean(axis=1)
        out += share[None] * np.asarray(colour)[:, None]
        inner = outer
    values = np.repeat(out[:, :, None], 60, axis=2).astype("float32")
    along = np.arange(60) * step
    return Strip(values, along, a, np.broadcast_to(along[None], (a.size, 60)).copy(),
                 np.broadcast_to(a[:, None], (a.size, 60)).copy(), step)


def test_a_flat_deck_misread_wide_at_075_m_is_typed_as_a_deck_read_narrow():
    # Review, finding 1: a galvanised 2.87 m deck, ballast out to 2.3 m, asphalt beyond;
    # at 0.75 m pixels its width reads as a roof's (the half-way point towards the dark
    # asphalt lies out in the ballast), and TYPE2's version typed it a boxcar.
    deck = _pixel_profile([(1.435, [0.26, 0.27, 0.28, 0.29]), (2.3, LIT), (9.0, [0.07, 0.08, 0.09, 0.11])], 0.75)
    assert R._look(deck, 0, 60, LIT_B) == "plain"
    assert R._top_width(deck, 0, 60) >= R._MIN_FULL_TOP_M        # misread, so the gate matters
    # Session 31: at 0.75 m a plain top of unread height takes the commonest car of its
    # length; the misread width must not decide it (typed as a deck read narrow is).
    narrow = _pixel_profile([(1.435, [0.26, 0.27, 0.28, 0.29]), (9.0, LIT)], 0.75)
    for sun in ({}, {"sun_left": True, "shading": 1.0}):
        assert (R._classify(deck, 0, 60, 14.0, LIT_B, tall=None, resolution_m=0.75, **sun)
                == R._classify(narrow, 0, 60, 14.0, LIT_B, tall=None, resolution_m=0.75, **sun))
        # A shadow saying no walls keeps it a flat wagon.
        assert R._classify(deck, 0, 60, 14.0, LIT_B, tall=False, resolution_m=0.75, **sun) == "flatcar"


@pytest.mark.parametrize("sun_left", [True, False])
def test_a_hood_unit_is_not_read_as_a_full_width_roof(sun_left, monkeypatch):
    # A shunter's hood (1.9 m wide) with dark walkways out to the body's edge: the top
    # read is the hood, narrower than a roof, so the width rule leaves its type as it was
    # (whatever the other rules make of it), for either sun side and height.
    hood = _strip(_sheet(0.95, top=0.2, beside=0.08))
    assert R._top_width(hood, 0, 60) < R._MIN_FULL_TOP_M
    kw = {"sun_left": sun_left, "shading": 2.0, "resolution_m": 0.5}
    cases = [(body, tall) for body in (12.5, 14.2) for tall in (None, True)]
    got = {c: R._classify(hood, 0, 60, c[0], LIT_B, tall=c[1], **kw) for c in cases}
    # Its walkways give it relief across ("flat"): the width rules (plain tops only)
    # are not reached, and the types are those the look and length give.
    assert got == {(12.5, None): "gondola", (12.5, True): "gondola",
                   (14.2, None): "boxcar", (14.2, True): "boxcar"}
    # A hood with walkways the ground's colour is a plain top 1.9 m wide: its width is
    # read as such and keeps it a flat wagon's top at a boxcar's length. (Review finding
    # 4: the old comparison with the rule switched off could not fail; here the width
    # decides: taken as a roof's, the same strip is a boxcar.)
    bare = _strip(_sheet(0.95, top=0.2))
    assert R._look(bare, 0, 60, LIT_B) == "plain"
    assert R._classify(bare, 0, 60, 14.2, LIT_B, tall=None, **kw) == "flatcar"
    monkeypatch.setattr(R, "_MIN_FULL_TOP_M", 0.0)
    assert R._classify(bare, 0, 60, 14.2, LIT_B, tall=None, **kw) == "boxcar"


def _packed(anti_beside_car: float, per_m: float, *, empty_stretch: bool = True, n: int = 200) -> tuple:
    """A wide strip, sun on the left, its sun side masked (NaN: the sun-side neighbour's
    cars and their shadows) and lit ground (0.15) on the anti-sun side except beside a
    car on samples 80-110, where the band a wall's shadow covers is ``anti_beside_car``."""
    half = R._height_band(per_m)
    a = np.arange(-half, half + 1e-9, 0.5)
    v = np.where(a[None, :, None] > 0, np.nan, 0.15) * np.ones((4, 1, n))
    v[:, np.abs(a) <= 1.5, :] = 0.2
    band = a <= -(1.5 + 1.6 * per_m + 0.4)
    v[:, band, 80:110] = anti_beside_car
    s = Strip(v.astype("float32"), np.arange(n) * 0.5, a, np.zeros((a.size, n)), np.zeros((a.size, n)), 0.5)
    empty = np.zeros(n, bool)
    if empty_stretch:
        empty[40:76] = True                       # 18 m of the same track seen empty
    return s, empty


def _probe(anti_car, anti_ref, per_m: float, *, sun=np.nan, sun_ref=None, n: int = 200):
    """The review's probe_tall strip: sun on the left, the sun band ``sun`` (NaN: masked),
    the anti-sun band ``anti_ref`` on samples 0-70 and ``anti_car`` from 70 on (the car on
    90-120), the same track empty on samples 20-56 (18 m, 17 m before the car); with
    ``sun_ref`` the sun band on samples 0-70 is that."""
    half = R._height_band(per_m)
    a = np.arange(-half, half + 1e-9, 0.5)
    v = np.where(a[None, :, None] > 0, sun, 0.15) * np.ones((4, 1, n))
    if sun_ref is not None:
        v[:, a > 1.5, :70] = sun_ref
    v[:, np.abs(a) <= 1.5, :] = 0.2
    band = a <= -1.6
    v[:, band, :] = anti_ref
    v[:, band, 70:] = anti_car
    e = np.zeros(n, bool)
    e[20:56] = True
    return Strip(v.astype("float32"), np.arange(n) * 0.5, a, np.zeros((a.size, n)), np.zeros((a.size, n)), 0.5), e


GRASS = np.array([0.035, 0.07, 0.045, 0.36])[:, None, None]
GRAVEL = np.array([0.15, 0.17, 0.19, 0.24])[:, None, None]


def test_without_the_sun_band_an_empty_stretch_is_no_reference():
    # Review, finding 2 (probe_tall): with the sun band masked, TYPE2's version read
    # each of these flat wagons as tall against the empty stretch's anti-sun band.
    per_m = 1.0 / math.tan(math.radians(40.0))
    grass, e = _probe(GRASS, GRAVEL, per_m)           # grass beside the car, gravel where empty
    assert R._tall(grass, 90, 120, True, per_m, lit_ground=LIT, empty=e) is not True
    missed, e = _probe(0.04, 0.15, per_m)             # a dark car missed on the anti-sun neighbour
    assert R._tall(missed, 90, 120, True, per_m, lit_ground=LIT, empty=e) is not True
    # A walled car's shadow with the sun band masked: unread now (it was True), as at HEAD.
    tall, e = _probe(0.3 * 0.15, 0.15, per_m)
    assert R._tall(tall, 90, 120, True, per_m, lit_ground=LIT, empty=e) is None


def test_the_empty_stretch_reference_needs_its_band_read():
    # Review, finding 2: the empty stretch's anti-sun band masked but for 2 samples of
    # lit roof edge (0.3): a reference from a sliver. With the sun band read (lit
    # ballast, 0.15) the sun band is the reference and a flat wagon's lit band is not a
    # shadow; TYPE2's version and HEAD took 0.3 and read it tall.
    per_m = 1.0 / math.tan(math.radians(40.0))
    s, e = _probe(0.15, np.nan, per_m, sun=0.15)
    v = s.values.copy()
    band = s.across_m <= -1.6
    for k in (30, 31):
        v[:, band, k] = 0.3
    s = Strip(v, s.along_m, s.across_m, s.x, s.y, s.step_m)
    assert R._tall(s, 90, 120, True, per_m, lit_ground=LIT, empty=e) is False
    # The same with the sun band masked (the review's case): not tall.
    s2, e = _probe(0.15, np.nan, per_m)
    v = s2.values.copy()
    for k in (30, 31):
        v[:, band, k] = 0.3
    s2 = Strip(v, s2.along_m, s2.across_m, s2.x, s2.y, s2.step_m)
    assert R._tall(s2, 90, 120, True, per_m, lit_ground=LIT, empty=e) is not True


def test_the_empty_stretch_must_be_the_same_ground_as_beside_the_car():
    # Grass on both sides beside the car, gravel on both sides at the empty stretch: the
    # sun bands (0.05 vs 0.17) say the ground changed along the track, so the gravel is
    # not this flat wagon's reference (TYPE2's version and HEAD read it tall).
    per_m = 1.0 / math.tan(math.radians(40.0))
    s, e = _probe(GRASS, GRAVEL, per_m, sun=GRASS, sun_ref=GRAVEL)
    assert R._tall(s, 90, 120, True, per_m, lit_ground=LIT, empty=e) is None
    # The same ground along the track (gravel everywhere on the sun side, grass beside
    # the car and at the empty stretch on the anti-sun side): a shadow is still read.
    tall, e = _probe(0.3 * GRASS, GRASS, per_m, sun=GRAVEL)
    v = tall.values.copy()
    v[:, tall.across_m <= -1.6, :70] = GRASS
    tall = Strip(v, tall.along_m, tall.across_m, tall.x, tall.y, tall.step_m)
    assert R._tall(tall, 90, 120, True, per_m, lit_ground=LIT, empty=e) is True
    flat, e = _probe(GRASS, GRASS, per_m, sun=GRAVEL)
    assert R._tall(flat, 90, 120, True, per_m, lit_ground=LIT, empty=e) is not True
