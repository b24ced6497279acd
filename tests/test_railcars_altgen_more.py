"""Railcar fixes from the independent generator's failures (issue 6, bench_altgen_rail).

1. The empty-track colour in a busy yard whose cars are close to the ballast's colour.
Under haze (transmission 0.6-0.8 plus path radiance) a grey or brown car differs from
ballast by two spreads of the ballast's colour or less, and in a busy yard most track
centres carry such cars: the mode of the centres near the side band's lit colour is
then the cars', and a lit reference learnt from it makes every car "empty track"
(recall 0.47 under haze and at 1 m). Empty track is lit ground on both sides (a car
shades its anti-sun side): only those centres refine the lit colour. Where the side
band itself is off (bright cars' blurred edges in a packed yard at 1 m), the flanked
centres mix cars and ground, and the mode of all centres is kept. The synthetic
strips guard both branches (the old code passes them too); the two generator scenes
(seeds not looked at while tuning) are what the old code fails.

2. A cylinder's shading: a lit barrel is brighter on its sun-facing half by a ratio the
sun's position predicts, an open wagon's load on its other half (the sun-side wall's
shadow); relief alone called both, and containers' and heaps' relief, a tank car.
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

from tests.test_railcar_light import STEP, _strip  # noqa: E402  (band, across, along) strips at 0.5 m
BALLAST = np.array([0.20, 0.19, 0.18, 0.19])    # hazy lit ballast, B G R NIR
CAR = BALLAST * 0.8                              # a grey car, about two ballast spreads darker
SHADOW = BALLAST * 0.5                           # haze's path radiance keeps shadows bright (5014: 0.57)



def _busy_track(seed: int, occupied_share: float = 0.8, n_along: int = 320, car=CAR,
                sun_side_colour=BALLAST) -> tuple[Strip, np.ndarray]:
    """A strip (sun on the left) with cars on ``occupied_share`` of it, each shading the
    anti-sun side band; the empty stretches are lit ballast across the whole width."""
    rng = np.random.default_rng(seed)
    across = (np.arange(int(round(2 * 2.6 / STEP)) + 1) - int(round(2.6 / STEP))) * STEP
    occ = np.zeros(n_along, bool)
    pos = 0
    while pos < n_along:
        body = int(14.0 / STEP)
        if rng.random() < occupied_share:
            occ[pos:pos + body] = True
        pos += body + int(1.0 / STEP)
    v = np.empty((4, across.size, n_along))
    for i, a in enumerate(across):
        colour = np.where(occ[None], car[:, None], BALLAST[:, None])
        # At 1 m the body's blurred edge reaches the sun-side band (part car, part
        # ballast) and the shadow's the anti-sun band (part shadow, part ballast).
        w = rng.uniform(0.0, 0.7, n_along)
        if a >= 1.95:
            colour = np.where(occ[None], car[:, None] * w + sun_side_colour[:, None] * (1 - w), sun_side_colour[:, None])
        elif a <= -1.95:
            colour = np.where(occ[None], SHADOW[:, None] * (0.3 + w) + BALLAST[:, None] * (0.7 - w), BALLAST[:, None])
        elif abs(a) > 1.6:
            colour = np.broadcast_to(BALLAST[:, None], (4, n_along))
        v[:, i, :] = colour
    tex = 1 + 0.05 * rng.standard_normal((1,) + v.shape[1:])
    v = v * tex + 0.002 * rng.standard_normal(v.shape)
    return _strip(v), occ


def test_lit_ground_in_a_busy_hazy_yard_is_learnt_from_centres_flanked_by_lit_ground():
    strips = {f"T{i}": _busy_track(i)[0] for i in range(4)}
    refs = R._empty_track_reference(strips)
    sd = refs["lit_sd"]
    # The ballast, not the cars that fill 80 % of the centres.
    assert np.all(np.abs(refs["lit"] - BALLAST) < 1.0 * sd), (refs["lit"], BALLAST, sd)
    assert np.all(np.abs(refs["lit"] - CAR) > 1.5 * sd)


def test_an_empty_yard_keeps_its_ballast_colour():
    strips = {f"T{i}": _busy_track(10 + i, occupied_share=0.0)[0] for i in range(3)}
    refs = R._empty_track_reference(strips)
    assert np.all(np.abs(refs["lit"] - BALLAST) < 0.5 * refs["lit_sd"])


def test_flanked_centres_that_mix_cars_and_ground_give_way_to_the_centres_mode():
    # A packed yard at 1 m: bright cars' blurred edges reach both side bands, so the side
    # band's lit colour is off the ballast's and broad, and centres of cars of many
    # colours sit "flanked by lit ground". The centres' mode (empty track, a quarter of
    # them) is the tighter colour and is kept.
    rng = np.random.default_rng(7)
    strips = {}
    for i in range(4):
        s, occ = _busy_track(20 + i, occupied_share=0.7)
        v = s.values.copy()
        centre = np.abs(s.across_m) <= 1.6
        sides = np.abs(s.across_m) >= 1.95
        starts = np.flatnonzero(np.diff(np.concatenate([[0], occ.astype(int)])) == 1)
        for p in starts:
            end = min(p + int(14.0 / STEP), occ.size)
            k = rng.uniform(0.6, 2.4, 4)     # each car its own colour
            v[:, centre, p:end] = (BALLAST * k)[:, None, None] * (1 + 0.04 * rng.standard_normal((1, centre.sum(), end - p)))
            # its blurred edge in both side bands: between ballast and the car's colour
            w = rng.uniform(0.3, 1.0, (1, sides.sum(), end - p))
            v[:, sides, p:end] = BALLAST[:, None, None] * (1 - w) + (BALLAST * k)[:, None, None] * w
        strips[f"T{i}"] = Strip(v.astype("float32"), s.along_m, s.across_m, s.x, s.y, s.step_m)
    refs = R._empty_track_reference(strips)
    assert np.all(np.abs(refs["lit"] - BALLAST) < 1.0 * refs["lit_sd"]), (refs["lit"], refs["lit_sd"])


@pytest.mark.parametrize("seed, floor", [(31, 0.6), (32, 0.5)])
def test_busy_hazy_yards_at_1m_are_counted(seed, floor):
    # Independent generator, seeds not looked at while tuning: busy yards of 4 and 6
    # tracks under haze at 1 m. With the lit colour learnt from the cars' mode, 3 of 51
    # and 10 of 34 cars were found (recall 0.06 and 0.29); now 32 and 26.
    from tests.altgen.railyard import make_railyard, score

    sc = make_railyard(seed, gsd_m=1.0, condition="hazy", yard_length_m=150)
    res = R.count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                           sun_elevation_deg=sc.sun_elevation_deg)
    s = score(sc, res)
    assert s["n_truth"] >= 30
    assert s["tp"] >= floor * s["n_truth"], s["tp"]
    assert s["fp"] <= 0.1 * s["n_truth"]


# ------------------------------------------------------------------ a cylinder's shading
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)


def _body(profile, n_along: int = 40, path: float = 0.0, seed: int = 0) -> Strip:
    """A strip whose positions 4..n-4 carry a 3 m body with visible brightness
    ``profile(across)`` (across positive: the left, here the sun side), on lit ballast,
    plus ``path`` (haze's path radiance) everywhere."""
    rng = np.random.default_rng(seed)
    v = BALLAST[:, None, None] * (1 + 0.04 * rng.standard_normal((1, ACROSS.size, n_along)))
    body = np.abs(ACROSS) <= 1.5
    level = np.array([profile(a) for a in ACROSS[body]])
    v[:, body, 4:n_along - 4] = level[None, :, None] * (1 + 0.01 * rng.standard_normal((4, body.sum(), n_along - 8)))
    v = v + path
    x, y = np.meshgrid(np.arange(n_along) * STEP, ACROSS)
    return Strip(v.astype("float32"), np.arange(n_along) * STEP, ACROSS, x, y, STEP)


def _lambert_cylinder(albedo: float, elevation_deg: float, sky: float = 0.3):
    e = np.radians(elevation_deg)

    def profile(a):
        s = np.clip(a / 1.5, -0.99, 0.99)
        direct = max(0.0, s * np.cos(e) + np.sqrt(1 - s * s) * np.sin(e)) / np.sin(e)
        return albedo * ((1 - sky) * direct + sky)
    return profile


EAST = LineString([(0, 0), (100, 0)])   # sun due south (azimuth 180): it shines across, from the right


@pytest.mark.parametrize("elevation", [25.0, 45.0, 62.0])
def test_cylinder_shading_is_predicted_from_the_sun(elevation):
    r = R._cylinder_shading(EAST, 180.0, elevation)
    # brighter on the sun half by more than a cambered roof (a tenth to three) ...
    assert r > 1.4
    # ... and more so under a lower sun; none with the sun along the track.
    assert r > R._cylinder_shading(EAST, 180.0, elevation + 10)
    assert np.isnan(R._cylinder_shading(EAST, 90.0, elevation))
    assert np.isnan(R._cylinder_shading(EAST, None, elevation))


@pytest.mark.parametrize("albedo, path", [(0.035, 0.0), (0.035, 0.06), (0.3, 0.0)])
@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_lit_cylinder_is_a_tank_and_its_mirror_an_open_car(albedo, path):
    # A black (or white) barrel under a 45 degree sun, clear or under haze (path radiance
    # 0.06, more than the black paint reflects), with the sun on the left.
    shading = R._cylinder_shading(EAST, 180.0, 45.0)
    cyl = _lambert_cylinder(albedo, 45.0)
    p = np.full(4, path)
    strip = _body(cyl, path=path)
    assert R._look(strip, 4, 36, float(BALLAST.mean()), sun_left=True, shading=shading, path=p) == "cylinder"
    assert R._classify(strip, 4, 36, 11.0, float(BALLAST.mean()), sun_left=True, shading=shading, path=p) == "tank"
    # The same relief darker on the sun side: an open wagon's load, shaded beside the
    # sun-side wall. Not a cylinder, which the relief alone used to call it.
    mirrored = _body(lambda a: cyl(-a), path=path)
    assert R._look(mirrored, 4, 36, float(BALLAST.mean()), sun_left=True, shading=shading, path=p) == "open"
    assert R._look(mirrored, 4, 36, float(BALLAST.mean())) == "cylinder"   # without the sun's side


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_even_relief_on_both_halves_is_a_textured_top_not_a_cylinder():
    # Heaps along a load or hatches along a roof: bright and dark in the middle, the same
    # on both halves: not a cylinder. A short car with such a top is typed in the gondola
    # class when its shadow shows a tall body, else a flat wagon (a deck with a load).
    heaps = lambda a: 0.16 if abs(a) < 0.5 else 0.10
    strip = _body(heaps)
    shading = R._cylinder_shading(EAST, 180.0, 45.0)
    assert R._look(strip, 4, 36, float(BALLAST.mean()), sun_left=True, shading=shading) == "flat"
    kw = dict(sun_left=True, shading=shading)
    assert R._classify(strip, 4, 36, 12.5, float(BALLAST.mean()), tall=True, **kw) == "gondola"
    assert R._classify(strip, 4, 36, 12.5, float(BALLAST.mean()), tall=False, **kw) == "flatcar"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_dark_load_is_no_cylinder_once_the_path_radiance_is_taken_off():
    # A coal load (top 0.043-0.046) where the darkest samples, and so the path radiance
    # estimate, are 0.034: above the path the top varies by a third of its level, but
    # by 0.003 in reflectance, a DN or two: sensor noise, not a barrel's shading.
    coal = lambda a: 0.046 if abs(a) < 0.4 else 0.043
    strip = _body(coal)
    path = np.full(4, 0.034)
    shading = R._cylinder_shading(EAST, 180.0, 53.0)
    look = R._look(strip, 4, 36, float(BALLAST.mean()), sun_left=True, shading=shading, path=path)
    assert look == "open"    # too dark for a roof or a deck
