"""Railcars, session 16 (issue 6): cars not found at all on the independent generator.

Error analysis on the altgen tuning scenes (0-17): of 2239 true cars missed, 1280 had no
detection over them, and 995 of those were not read as occupied anywhere along their
middle. Flat wagons were the worst (315 of 947 missed): a bare deck 1.3 m up, often the
colour of ballast, shades the ground beside the track only out to 1.435 + 1.3 p metres
(p: metres a shadow falls sideways per metre of height). Under a sun 45-70 degrees
high across the track that shadow covers a third of the 1.95-2.6 m band the counter
read for a car's own shadow, and the band's mean stayed above the shadow threshold.
The counter now also reads the band where that shadow falls, against the learnt lit
ground on all four bands in the light as recorded (:func:`railcars._own_deck_shadow`),
and adds the stretches it finds where no other rule found a car that survives (it does
not lengthen or join runs: under an oblique sun a tall car's shadow runs along that
band past the car's end).

A first version (3b5523c, reverted) took the band's own 90th percentile as its lit
level, read blue, green and red only, above the darkest light, and trimmed the decks it
added as shadow tails; the guards below are the review's cases (review of 3b5523c,
findings 1-5): each read a false car on an empty track or cut a wagon with that version.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip
from tests.test_railcars_s15 import BALLAST, _yard

# The learnt ground colours of a yard that shows too few shadows for a shadow colour.
LIT_ONLY = {"lit": BALLAST.copy(), "lit_sd": 0.02 * BALLAST, "shadow": np.full(4, np.nan),
            "shadow_sd": np.full(4, np.nan)}

# A weathered deck about the colour of the ballast (0.93 of it), 2.87 m wide, 1.1-1.3 m up.
DECK = list(0.93 * BALLAST)


def _elevation(per_m: float) -> float:
    """Sun elevation (degrees) that casts a shadow ``per_m`` m sideways per metre of height,
    with the sun due south of an east-west track."""
    return math.degrees(math.atan(1.0 / per_m))


@pytest.mark.parametrize("per_m,gsd", [
    (0.5, 0.3),
    # At 0.5 m the deck's 0.7 m-wide shadow, blurred over 0.6 m, keeps 0.75 of the lit
    # ground's light as recorded; with no shadow colour learnt (this yard) the band must
    # fall under 0.6 of it, so this wagon is missed (3b5523c found it above the darkest
    # light, where noise alone passes the ratio: review finding 4).
    pytest.param(0.55, 0.5, marks=pytest.mark.xfail(strict=True, reason="blurred deck shadow, no learnt shadow")),
    (0.6, 0.3)])
def test_a_bare_flat_wagon_the_colour_of_ballast_is_found_by_its_narrow_shadow(per_m, gsd):
    # Two bare flat wagons (13-401: 13.4 m deck) on the middle track. Their decks are
    # ballast-coloured; only their shadows, out to 1.435 + 1.3 p m, say they stand there.
    # HEAD read 1.95-2.6 m, most of it lit: 0 cars. (The yard shows too few shadows for a
    # shadowed-ground colour to be learnt: the centre is judged lit against the lit colour.)
    elevation = _elevation(per_m)
    cars = [(20.0, 33.4, 1.435, 1.3, DECK, 1.1), (60.0, 73.4, 1.435, 1.3, DECK, 1.1)]
    image, tracks = _yard(elevation, gsd, cars)
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=elevation)
    on = sorted((d.polygon.bounds[0], d.polygon.bounds[2]) for d in res.detections if d.feature_id == "T1")
    assert len(on) == 2, on
    for (x0, x1), (t0, t1) in zip(on, [(20.0, 33.4), (60.0, 73.4)]):
        assert abs(x0 - t0) < 1.5 and abs(x1 - t1) < 1.5, on
    # The empty tracks beside it stay empty.
    assert not [d for d in res.detections if d.feature_id != "T1"]


def test_an_empty_yard_shows_no_deck_shadow(monkeypatch):
    # Same sun, no car: no sample of any track's band is read as shadow on the path the
    # counter takes (above the darkest light, where 3b5523c flagged 50-79 samples per
    # track on noise and counted on _drop_short to remove them), and nothing is found.
    elevation = _elevation(0.6)
    image, tracks = _yard(elevation, 0.3, [])
    flagged = []
    real = R._own_deck_shadow

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        flagged.append(int(out.sum()))
        return out

    monkeypatch.setattr(R, "_own_deck_shadow", spy)
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=elevation)
    assert res.total == 0
    assert flagged and not any(flagged), flagged


def _band_strip(shade_from_m: float, shade_to_m: float, factor: float = 0.35, n: int = 200,
                step: float = 0.5, half: float = 2.6) -> Strip:
    """Lit ballast across a track, the anti-sun side (+across: sun on the right) darkened
    to ``factor`` between ``shade_from_m`` and ``shade_to_m`` off the centreline along
    samples 80-120."""
    across = np.arange(-half, half + 1e-9, 0.1)
    along = np.arange(n) * step
    b = np.broadcast_to(BALLAST[:, None, None], (4, across.size, n)).copy()
    sel = (across >= shade_from_m) & (across <= shade_to_m)
    b[:, sel, 80:120] *= factor
    x = np.broadcast_to(along[None], (across.size, n)).copy()
    y = np.broadcast_to(across[:, None], (across.size, n)).copy()
    return Strip(b.astype("float32"), along, across, x, y, step)


def test_the_deck_shadow_band_follows_the_sun():
    # A shadow 1.4-2.2 m out covers the band read at p = 0.6 and the default blur (0.4 m):
    # 1.435 + 0.2 to 1.435 + 0.78 - 0.2, i.e. 1.635-2.015 m.
    s = _band_strip(1.4, 2.2)
    hit = R._own_deck_shadow(s, LIT_ONLY, False, 0.6, 3)
    assert hit[85:115].all() and not hit[:75].any() and not hit[125:].any()
    # The same shadow read with the sun on the other side: the shaded side is the sun's.
    assert not R._own_deck_shadow(s, LIT_ONLY, True, 0.6, 3).any()
    # A sun high or along the track (p 0.3: the deck's shadow ends 1.83 m out, its blurred
    # edge reaching the deck's) or unknown: the band is not read.
    assert not R._own_deck_shadow(s, LIT_ONLY, False, 0.3, 3).any()
    assert not R._own_deck_shadow(s, LIT_ONLY, False, float("nan"), 3).any()
    # Ground only a little darker (0.8 of lit) is no shadow.
    assert not R._own_deck_shadow(_band_strip(1.4, 2.6, factor=0.8), LIT_ONLY, False, 0.6, 3).any()
    # The lit level is the learnt lit colour, not the band's own: concrete twice as
    # bright as the ballast beside 20 % of the track (samples 0-40) does not turn the
    # ballast beside the rest into shadow (3b5523c's 90th percentile did).
    apron = _band_strip(1.4, 2.2, factor=1.0)
    apron.values[:, apron.across_m >= 1.4, :40] *= 2.0
    assert not R._own_deck_shadow(apron, LIT_ONLY, False, 0.6, 3).any()
    # Read above the darkest light (``dark_light``): the ratio is taken on the light as
    # recorded, so ground 0.9 of lit, 0.01 above a darkest light of 0.9 of it, is no shadow.
    lift = 0.89 * BALLAST
    s_above = _band_strip(1.4, 2.2, factor=0.9)
    s_above = Strip(s_above.values - lift[:, None, None].astype("float32"), s_above.along_m, s_above.across_m,
                    s_above.x, s_above.y, s_above.step_m)
    above = {**LIT_ONLY, "lit": BALLAST - lift, "lit_sd": 0.02 * BALLAST}
    assert not R._own_deck_shadow(s_above, above, False, 0.6, 3, dark_light=lift).any()
    # The same shadow (0.35 of lit) read that way is one.
    s_deep = _band_strip(1.4, 2.2)
    s_deep = Strip(s_deep.values - 0.3 * BALLAST[:, None, None].astype("float32"), s_deep.along_m,
                   s_deep.across_m, s_deep.x, s_deep.y, s_deep.step_m)
    hit = R._own_deck_shadow(s_deep, {**LIT_ONLY, "lit": 0.7 * BALLAST}, False, 0.6, 3, dark_light=0.3 * BALLAST)
    assert hit[85:115].all() and not hit[:75].any()


@pytest.mark.parametrize("per_m", [0.5, 0.6])
def test_a_neighbours_shadow_over_an_empty_track_is_not_a_car(per_m):
    # A boxcar (4.9 m) and an open wagon (3.6 m) on the middle track shade the next track
    # north (the anti-sun side) from its sun side in: that track's centre darkens before
    # its anti-sun band could, so no car is read there (guard for _own_deck_shadow).
    # (Under a lower sun, p 0.75-0.9, the boxcar's shadow covers that track's centre and
    # sun side but not its anti-sun side; HEAD and this code alike read 1-2 cars there.
    # Not addressed here.)
    from tests.test_railcars_s15 import ON_BOGIES

    elevation = _elevation(per_m)
    image, tracks = _yard(elevation, 0.3, [ON_BOGIES[1], ON_BOGIES[3]])
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=elevation)
    per = {p["id"]: p["count"] for p in res.per_feature}
    assert per == {"T0": 0, "T1": 2, "T2": 0}, per


def _occupancy_strip(n: int = 200, step: float = 0.5) -> Strip:
    """Lit ballast across a track (sun on the right: the anti-sun side is +across), with
    a red car body (|across| <= 1.5 m) on samples 40-70 whose deck-band shadow (1.5-2.2 m
    out) runs on to samples 30-80 (a tall car's shadow cast along the track by an
    oblique sun), and a ballast-coloured deck on samples 120-150 seen only by its shadow."""
    rng = np.random.default_rng(5)
    across = np.arange(-2.6, 2.6 + 1e-9, 0.1)
    along = np.arange(n) * step
    v = np.broadcast_to(BALLAST[:, None, None], (4, across.size, n)).copy()
    v *= 1 + 0.02 * rng.standard_normal(v.shape)
    body = np.abs(across) <= 1.5
    v[:, body, 40:70] = np.array([0.30, 0.05, 0.05, 0.36])[:, None, None]
    band = (across >= 1.5) & (across <= 2.2)
    v[:, band, 30:80] *= 0.35
    v[:, band, 120:150] *= 0.35
    v[:, body, 120:150] *= 0.93
    x = np.broadcast_to(along[None], (across.size, n)).copy()
    y = np.broadcast_to(across[:, None], (across.size, n)).copy()
    return Strip(v.astype("float32"), along, across, x, y, step)


def test_the_deck_shadow_adds_unseen_cars_not_ends_to_seen_ones():
    s = _occupancy_strip()
    refs = {"lit": BALLAST.copy(), "lit_sd": 0.02 * BALLAST, "shadow": 0.3 * BALLAST, "shadow_sd": 0.02 * BALLAST}
    occ, seen = R._occupancy(s, refs, min_contrast=4.0, vhr=True, sun_left=False, shadow_across_m=0.6, blur_m=0.2)
    assert seen.all()
    # The red car: its extent is its colour's, not the shadow's run along the band
    # (an earlier version of this change grew it to samples 30-80, and cars in a consist
    # were cut at other lengths: own simulator, 3 cars typed otherwise).
    assert occ[42:68].all() and not occ[30:38].any() and not occ[72:80].any()
    # The ballast-coloured deck: found by its shadow alone (HEAD: not found).
    assert occ[122:148].all()
    assert not occ[:28].any() and not occ[85:118].any() and not occ[152:].any()


def _paint(image, x0, x1, y0, y1, colour):
    """``image`` with the ground in x0-x1, y0-y1 (m) set to ``colour`` (per band)."""
    img = image.copy(deep=True)
    xs = img.coords[img.dims[-1]].values
    ys = img.coords[img.dims[-2]].values
    x, y = np.meshgrid(xs, ys)
    m = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    v = img.values
    for b in range(v.shape[0]):
        v[b][m] = colour[b]
    img.values = v
    return img


def _counts(image, tracks, elevation, azimuth=180.0):
    res = R.count_railcars(image, tracks, sun_azimuth_deg=azimuth, sun_elevation_deg=elevation)
    return {p["id"]: p["count"] for p in res.per_feature}, res


@pytest.mark.parametrize("per_m,gsd", [(0.5, 0.5), (0.6, 0.3)])
def test_a_bright_apron_beside_part_of_an_empty_track_is_no_deck_shadow(per_m, gsd):
    # Review finding 1: a concrete apron 1.5-2.6 m out on T0's anti-sun side (north)
    # along its first 15 m set the band's 90th percentile; plain ballast then read as
    # shadow over the rest of the empty track (3b5523c: 7 cars on T0 at p 0.5, 0.5 m).
    from tests.test_railcars_s15 import ON_BOGIES

    elevation = _elevation(per_m)
    image, tracks = _yard(elevation, gsd, [ON_BOGIES[2]])      # a dark box on T1: a real darkest light
    per, _ = _counts(_paint(image, 0, 15, 8.5, 9.6, [0.30, 0.31, 0.32, 0.33]), tracks, elevation)
    assert per["T0"] == 0, per


@pytest.mark.parametrize("per_m,gsd", [(0.5, 0.5), (0.6, 0.3)])
@pytest.mark.parametrize("ground", ["weeds", "fouled"])
def test_dark_ground_on_an_empty_tracks_shoulder_is_no_deck_shadow(ground, per_m, gsd):
    # Review finding 2: 12 m of weeds (dark in visible light, bright in near infrared) or
    # of fouled ballast (0.55 of clean, grey) on T0's shoulder 1.5-2.3 m out, north.
    # 3b5523c read one car on the empty T0 in all four cases.
    from tests.test_railcars_s15 import ON_BOGIES

    colour = [0.05, 0.08, 0.04, 0.35] if ground == "weeds" else list(0.55 * BALLAST)
    elevation = _elevation(per_m)
    image, tracks = _yard(elevation, gsd, [ON_BOGIES[2]])
    per, _ = _counts(_paint(image, 50, 62, 8.5, 9.3, colour), tracks, elevation)
    assert per["T0"] == 0, per


@pytest.mark.parametrize("per_m,gsd,factor", [(0.6, 0.3, 0.9), (0.5, 0.5, 0.93)])
def test_a_slightly_darker_shoulder_in_an_empty_yard_is_no_deck_shadow(per_m, gsd, factor):
    # Review finding 4: in an empty yard the darkest light is about the ballast itself,
    # and above it a shoulder 7-10 % darker over 8 m passed the ratio (3b5523c: 1 car).
    elevation = _elevation(per_m)
    image, tracks = _yard(elevation, gsd, [])
    per, _ = _counts(_paint(image, 50, 58, 8.5, 9.3, list(factor * BALLAST)), tracks, elevation)
    assert per == {"T0": 0, "T1": 0, "T2": 0}, per


@pytest.mark.parametrize("off_deg", [20.0, -40.0, 55.0])
def test_a_deck_found_by_its_shadow_keeps_its_length_under_an_oblique_sun(off_deg):
    # Review finding 3: the sun turned off the track's normal, with the same across reach
    # (p 0.6). The decks added were trimmed as shadow tails (3b5523c: 13.4 m wagons cut
    # to 11.4, 9.6 and 7.2 m at 20, 40 and 55 degrees off).
    across = math.cos(math.radians(off_deg))
    elevation = math.degrees(math.atan(across / 0.6))
    cars = [(20.0, 33.4, 1.435, 1.3, DECK, 1.1), (60.0, 73.4, 1.435, 1.3, DECK, 1.1)]
    image, tracks = _yard(_elevation(0.6), 0.3, cars)
    _, res = _counts(image, tracks, elevation, azimuth=180.0 + off_deg)
    on = sorted((d.polygon.bounds[0], d.polygon.bounds[2]) for d in res.detections if d.feature_id == "T1")
    assert len(on) == 2, on
    for (x0, x1), (t0, t1) in zip(on, [(20.0, 33.4), (60.0, 73.4)]):
        assert abs(x0 - t0) < 1.5 and abs(x1 - t1) < 1.5, on


def test_a_small_coloured_item_on_an_unseen_deck_does_not_remove_it():
    # Review finding 5: a 1 m red item on the deck (a lashed crate, a glint) is a run of
    # its own, dropped later as under 4 m; it must not count as "found by another rule"
    # for the deck around it (3b5523c: the whole deck, 30 samples, was lost).
    s = _occupancy_strip()
    v = s.values.copy()
    v[:, np.abs(s.across_m) <= 1.0, 135:137] = np.array([0.30, 0.05, 0.05, 0.36])[:, None, None]
    s = Strip(v, s.along_m, s.across_m, s.x, s.y, s.step_m)
    refs = {"lit": BALLAST.copy(), "lit_sd": 0.02 * BALLAST, "shadow": 0.3 * BALLAST, "shadow_sd": 0.02 * BALLAST}
    occ, _ = R._occupancy(s, refs, min_contrast=4.0, vhr=True, sun_left=False, shadow_across_m=0.6, blur_m=0.2)
    assert occ[122:148].all()
