"""Railcars, session 34 (issue 6): a barrel is told by its shaded anti-sun flank.

At 0.5-1 m pixels the blur (a pixel and the PSF) carries the lit ground beside a dark
top (coal, ore, a black open wagon) into its sun-facing half band, which then passes for
a barrel's glow: open wagons were typed tank cars (altgen tuning 100-103: 66 at
0.5-1 m). A barrel's plate 1.0 m off its axis faces 42 degrees away from its crest and
keeps a fraction of the crest's light on the anti-sun side; a flat top keeps nearly all
of it. That share (:func:`railcars._anti_flank_share`) vetoes a glow without a shaded
flank, and types as a barrel a top with relief whose halves a bright walkway evened, a
black barrel's faint relief, and a long barrel under a sun at a slant to the track
(not vetted by the sun-half ratio).

Mended after review (RTYPE): the share is read only where the crest is clearly brighter
than the shadowed ground beside the body (``_CREST_OVER_SHADOW``; a black barrel beside
its shadow fell to the gondola class), each threshold only under suns where it parts a
barrel from an arched roof (:func:`railcars._anti_flank_limits`), and the lit-ground
guard holds visible light against visible light.

The strips are sampled on the counter's own across grid at 0.5 m (-2.6 ... 2.4 m, not
symmetric about the centreline) from a profile drawn on a fine grid and blurred.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)   # as sample_strip draws it
FINE = np.arange(-6.0, 6.0 + 1e-9, 0.05)
EAST = LineString([(0.0, 0.0), (200.0, 0.0)])
N = 40
LIT_B = 0.18
GROUND = 0.20


def _strip(fine_profile: np.ndarray, blur_m: float, across: np.ndarray = ACROSS) -> Strip:
    prof = np.interp(across, FINE, ndimage.gaussian_filter1d(fine_profile, blur_m / 0.05))
    v = np.broadcast_to(prof[None, :, None] * np.array([1.0, 1.0, 1.0, 1.2])[:, None, None],
                        (4, across.size, N)).astype("float32").copy()
    along = np.arange(N) * STEP
    x, y = np.meshgrid(along, across)
    return Strip(v, along, across, x, y, STEP)


def _sun(azimuth: float, elevation: float) -> dict:
    sun_left, _ = R._sun_geometry(EAST, azimuth, elevation)
    return dict(sun_left=sun_left, shading=R._cylinder_shading(EAST, azimuth, elevation),
                flank_glow=R._flank_glow(EAST, azimuth, elevation))


def _dark_load(elevation: float = 45.0, load: float = 0.04, blur_m: float = 0.8, shadow: float = 0.12) -> Strip:
    """An open wagon loaded with coal, 3.2 m wide, under a sun due south (on the track's
    right, negative across): lit ground on the sun side, the car's shadow (``shadow`` of
    the ground's light: the sky's share, 0.1-0.2 in clear air) out to a 3.6 m wall's reach
    on the other."""
    reach = 1.6 + 3.6 / math.tan(math.radians(elevation))
    f = np.full(FINE.shape, GROUND)
    f = np.where((FINE > 1.6) & (FINE <= reach), shadow * GROUND, f)
    return _strip(np.where(np.abs(FINE) <= 1.6, load, f), blur_m)


def _barrel(azimuth: float = 180.0, elevation: float = 45.0, albedo: float = 0.035,
            walkway: float | None = None, blur_m: float = 0.5, sky: float = 0.25, ground: float = GROUND,
            radius: float = 1.5, half_width: float = 1.5) -> Strip:
    """A Lambertian barrel of ``radius`` (m) along the track (with ``radius`` 4.4 m and
    ``half_width`` 1.6 m: an arched boxcar roof), with a walkway of reflectance
    ``walkway`` 0.5 m wide down its crest, on lit ground (``ground``) with its shadow
    beside it (its sky-lit share, 0.3)."""
    e = math.radians(elevation)
    square = math.sin(math.radians(azimuth - 90.0))   # share of the sun's azimuth across the track
    sin_tilt = np.clip(-FINE / radius, -1, 1)         # positive towards the sun (right)
    cos_i = np.clip(np.sqrt(1 - sin_tilt ** 2) * math.sin(e) + sin_tilt * math.cos(e) * square, 0, None) / math.sin(e)
    light = (1 - sky) * cos_i + sky
    top = albedo * light
    if walkway is not None:
        top = np.where(np.abs(FINE) <= 0.25, walkway * light, top)
    f = np.where(FINE < -half_width, ground, 0.3 * ground)
    f = np.where(FINE > 5.0, ground, f)
    return _strip(np.where(np.abs(FINE) <= half_width, top, f), blur_m)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_dark_load_beside_lit_ground_is_no_barrel_at_coarse_pixels():
    kw = _sun(180.0, 45.0)
    strip = _dark_load()
    # The lit ground blurred into the sun-facing half makes it glow as a barrel's would ...
    assert R._sun_asymmetry(strip, slice(0, N), kw["sun_left"], None) > 1.5
    # ... but the anti-sun flank keeps all the crest's light: no barrel there.
    assert R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 1.0) >= R._FLAT_ANTI_FLANK
    assert R._look(strip, 0, N, LIT_B, resolution_m=1.0, **kw) == "flat"
    assert R._classify(strip, 0, N, 12.5, LIT_B, resolution_m=1.0, **kw) == "gondola"
    # Not read at 0.3 m pixels (nor where the pixel size is not given): the rules as before.
    assert R._look(strip, 0, N, LIT_B, resolution_m=0.3, **kw) == "cylinder"
    assert R._look(strip, 0, N, LIT_B, **kw) == "cylinder"
    # Nor where its shadow is about as bright as the coal (a quarter of the ground's
    # light): the flank then reads the ground's albedo, not the top's shape, and a black
    # barrel reads alike (see the next test). The rules as before.
    dim = _dark_load(shadow=0.25)
    assert np.isnan(R._anti_flank_share(dim, slice(0, N), kw["sun_left"], None, 1.0))
    assert R._look(dim, 0, N, LIT_B, resolution_m=1.0, **kw) == R._look(dim, 0, N, LIT_B, **kw) == "cylinder"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("ground", [0.2, 0.3, 0.86])     # ballast, sand, snow
@pytest.mark.parametrize("elevation", [45.0, 55.0])
@pytest.mark.parametrize("res", [0.75, 1.0])
def test_a_black_barrel_beside_its_shadow_falls_back_to_the_rules_before(ground, elevation, res):
    # Review RTYPE H1: a black barrel (3.5 %, no walkway) beside its own shadow on ground
    # of 0.2-0.3 (or snow): at 0.75-1 m pixels the sample a metre out is mostly the
    # blurred shadow, as bright as the crest or brighter, and the share (0.71-0.87) read
    # as a coal load's; the barrel was typed a gondola. It is not read there now.
    kw = _sun(180.0, elevation)
    strip = _barrel(elevation=elevation, albedo=0.035, blur_m=0.8 * res, ground=ground)
    assert np.isnan(R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, res))
    base = R._classify(strip, 0, N, 12.0, LIT_B, **kw)
    assert R._classify(strip, 0, N, 12.0, LIT_B, resolution_m=res, **kw) == base
    if ground < 0.5:
        assert base == "tank"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("albedo, walkway", [(0.035, 0.20)])
def test_a_long_barrel_under_a_slanting_sun_is_a_tank_car(albedo, walkway):
    # The sun 25 degrees off the track's line: the sun-half ratio predicted for a barrel
    # (under _MIN_SHADING) does not vet it, and a 15.5 m body (15-150, 16.6 m over
    # couplers) even along was typed a boxcar. Its anti-sun flank is a barrel's.
    kw = _sun(115.0, 55.0)
    assert kw["shading"] < R._MIN_SHADING
    strip = _barrel(azimuth=115.0, elevation=55.0, albedo=albedo, walkway=walkway, blur_m=0.3)
    assert R._look(strip, 0, N, LIT_B, resolution_m=0.5, **kw) == "cylinder"
    assert R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 0.5) < R._BARREL_ANTI_FLANK
    assert R._classify(strip, 0, N, 15.5, LIT_B, resolution_m=0.5, **kw) == "tank"
    # Without the flank read (pixel size not given) the length rule types it a boxcar.
    assert R._classify(strip, 0, N, 15.5, LIT_B, **kw) == "boxcar"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_top_whose_halves_a_walkway_evens_is_a_barrel_by_its_dark_flank():
    # A black barrel (4 %) with a bright walkway (galvanised, 20 %) down its crest, seen
    # at 0.75 m through the blur: the walkway's light, spread alike over both halves,
    # evens the half bands, and with the relief that leaves the top read "flat" (relief
    # on both halves) and a short car took the gondola class. Its flanks, a metre out,
    # keep a fifth of the crest's light: a barrel's. (Between tall cars on both
    # neighbouring tracks, the ground either side lies in their shade.)
    kw = _sun(180.0, 55.0)
    f = np.where(np.abs(FINE) <= 1.5, 0.04 + 0.16 * np.exp(-(FINE / 0.4) ** 2), 0.25 * GROUND)
    strip = _strip(f, 0.5)
    asym = R._sun_asymmetry(strip, slice(0, N), kw["sun_left"], None)
    glow_min = 1.0 + 0.5 * (min(kw["shading"], R._MAX_SEEN_SHADING) - 1.0)
    assert 1.0 / glow_min < asym < glow_min
    assert R._look(strip, 0, N, LIT_B, **kw) == "flat"
    assert R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 0.75) < R._BARREL_ANTI_FLANK
    assert R._look(strip, 0, N, LIT_B, resolution_m=0.75, **kw) == "cylinder"
    assert R._classify(strip, 0, N, 11.5, LIT_B, resolution_m=0.75, **kw) == "tank"
    assert R._classify(strip, 0, N, 11.5, LIT_B, **kw) == "gondola"


def test_the_flank_share_does_not_depend_on_the_grid_phase_nor_the_sun_side():
    # The same barrel sampled on the counter's asymmetric grid with the sun on either
    # side, and on a grid symmetric about the centreline: the share is read alike.
    # (Shadowed ground either side, darker than the crest: see _CREST_OVER_SHADOW.)
    profile = lambda x: np.where(np.abs(x) <= 1.5, 0.05 + 0.1 * np.clip(1 - (x + 1.5) / 3.0, 0, 1) ** 2,
                                 0.1 * GROUND)
    f = profile(FINE)
    right = _strip(f, 0.5)                    # brighter towards negative across
    left = _strip(f[::-1].copy(), 0.5)        # mirrored: brighter towards positive across
    sym = _strip(f, 0.5, across=np.arange(-2.5, 2.5 + 1e-9, STEP))
    core = slice(0, N)
    a = R._anti_flank_share(right, core, False, None, 0.5)
    b = R._anti_flank_share(left, core, True, None, 0.5)
    c = R._anti_flank_share(sym, core, False, None, 0.5)
    assert np.isfinite(a)
    assert a == pytest.approx(b, abs=0.03)
    assert a == pytest.approx(c, abs=0.03)
    # Not read without the sun's side or at pixels finer than _CREST_BLUR_RES_M.
    assert np.isnan(R._anti_flank_share(right, core, None, None, 0.5))
    assert np.isnan(R._anti_flank_share(right, core, False, None, 0.3))


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_black_barrel_too_dark_for_its_relief_step_is_promoted_by_its_flank():
    # A black barrel whose relief above the path radiance is under _MIN_RELIEF_STEP, on
    # dark ground (its shadow darker still): too dark for a roof, it was read "open";
    # its anti-sun flank keeps a barrel's share of its crest's light. A dark load heaped
    # in the middle, as dark and with as much relief, keeps its flank's light: still open.
    kw = _sun(180.0, 35.0)
    strip = _barrel(elevation=35.0, albedo=0.007, blur_m=0.8, ground=0.01)
    assert R._look(strip, 0, N, LIT_B, **kw) == "open"
    assert R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 1.0) < R._BARREL_ANTI_FLANK
    assert R._look(strip, 0, N, LIT_B, resolution_m=1.0, **kw) == "cylinder"
    heap = np.where(np.abs(FINE) <= 1.6, 0.005 + 0.006 * np.exp(-(FINE / 0.5) ** 2), 0.3 * 0.015)
    heap = np.where(FINE < -1.6, 0.015, heap)
    load = _strip(heap, 0.8)
    assert R._look(load, 0, N, LIT_B, **kw) == "open"
    assert R._anti_flank_share(load, slice(0, N), kw["sun_left"], None, 1.0) >= R._BARREL_ANTI_FLANK
    assert R._look(load, 0, N, LIT_B, resolution_m=1.0, **kw) == "open"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_no_veto_without_the_sun_half_ratio():
    # With the sun at a slant to the track the sun-half ratio is not read (shading under
    # _MIN_SHADING): a barrel's flanks are then lit nearly alike, and a flank keeping its
    # crest's light is no sign of a flat top. The glowless relief stays a cylinder.
    kw = _sun(115.0, 55.0)
    assert kw["shading"] < R._MIN_SHADING
    strip = _dark_load()
    assert R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 1.0) >= R._FLAT_ANTI_FLANK
    assert R._look(strip, 0, N, LIT_B, resolution_m=1.0, **kw) == "cylinder"


def test_the_flank_thresholds_follow_the_sun_across_the_track():
    # Elevation in the plane across the track: tan(e) / |sin| of the sun's azimuth off it.
    nan = float("nan")
    lim = lambda az, el: R._anti_flank_limits(EAST, az, el)
    # Square to the track: the barrel share read from about 31 degrees (an arched roof's
    # flank keeps _FLAT_ANTI_FLANK), the flat share up to about 67 (a barrel's keeps
    # under _BARREL_ANTI_FLANK).
    assert lim(180.0, 20.0) == pytest.approx((nan, 0.7), nan_ok=True)
    assert lim(180.0, 28.0) == pytest.approx((nan, 0.7), nan_ok=True)
    assert lim(180.0, 45.0) == pytest.approx((R._BARREL_ANTI_FLANK, R._FLAT_ANTI_FLANK))
    assert lim(180.0, 65.0) == pytest.approx((0.6, 0.7))
    assert lim(180.0, 72.0) == pytest.approx((0.6, nan), nan_ok=True)
    # At a slant the sun stands higher across the track: a 25 degree sun 60 degrees off
    # square lights both flanks of a roof; a 60 degree one both of a barrel.
    assert lim(120.0, 25.0) == pytest.approx((0.6, 0.7))
    assert lim(135.0, 60.0) == pytest.approx((0.6, nan), nan_ok=True)
    assert lim(180.0, None) == pytest.approx((nan, nan), nan_ok=True)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_an_arched_roof_under_a_low_sun_stays_a_boxcar():
    # Review RTYPE H2: under a sun of 20 degrees square to the track an arched boxcar roof
    # (4.4 m radius, galvanised) beside its shadow keeps about half its crest's light on
    # its anti-sun flank, a barrel's share; with the threshold read whatever the sun, a
    # 15.5 m boxcar even along became a tank car. Under that sun it is not read.
    kw = _sun(180.0, 20.0)
    strip = _barrel(elevation=20.0, albedo=0.25, blur_m=0.5, radius=4.4, half_width=1.6)
    assert R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 0.75) < R._BARREL_ANTI_FLANK
    assert R._classify(strip, 0, N, 15.5, LIT_B, **kw) == "boxcar"
    limits = R._anti_flank_limits(EAST, 180.0, 20.0)
    assert R._classify(strip, 0, N, 15.5, LIT_B, resolution_m=0.75, anti_flank=limits, **kw) == "boxcar"
    assert R._classify(strip, 0, N, 15.5, LIT_B, resolution_m=0.75, **kw) == "tank"   # ungated
    # Under a 45 degree sun the same roof keeps more than a barrel's share: a boxcar still.
    kw = _sun(180.0, 45.0)
    high = _barrel(elevation=45.0, albedo=0.25, blur_m=0.5, radius=4.4, half_width=1.6)
    assert R._anti_flank_share(high, slice(0, N), kw["sun_left"], None, 0.75) >= R._BARREL_ANTI_FLANK
    assert R._classify(high, 0, N, 15.5, LIT_B, **kw) == "boxcar"
    assert R._classify(high, 0, N, 15.5, LIT_B, resolution_m=0.75,
                       anti_flank=R._anti_flank_limits(EAST, 180.0, 45.0), **kw) == "boxcar"


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_the_lit_ground_guard_compares_visible_light():
    # Review RTYPE M1. Lit grass beside the anti-sun flank: dark in the visible (0.05),
    # bright in NIR (0.4). Held against the four-band lit level (0.14) it read as the
    # car's shadow and the share was read (the walkway barrel of the test above typed a
    # tank car by it); against the visible lit level (0.05) it is lit ground, the share
    # is not read and the rules before decide.
    kw = _sun(180.0, 55.0)
    f = np.where(np.abs(FINE) <= 1.5, 0.04 + 0.16 * np.exp(-(FINE / 0.4) ** 2), 0.25 * GROUND)
    strip = _strip(f, 0.5)
    strip.values[:, strip.across_m >= 1.9, :] = np.array([0.045, 0.05, 0.055, 0.4])[:, None, None]
    four, vis = float(np.mean([0.045, 0.05, 0.055, 0.4])), 0.05
    assert R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 0.75, four) < R._BARREL_ANTI_FLANK
    assert np.isnan(R._anti_flank_share(strip, slice(0, N), kw["sun_left"], None, 0.75, vis))
    before = R._classify(strip, 0, N, 11.5, four, **kw)
    assert before == "gondola"
    assert R._classify(strip, 0, N, 11.5, four, resolution_m=0.75, lit_visible=vis, **kw) == before


@pytest.mark.parametrize("res", [0.5, 0.75])
def test_a_brown_arched_roof_is_not_vetoed_as_a_flat_top(res):
    # Review RTYPEM H1: a brown (0.1) arched boxcar roof under a 30 degree sun square to
    # the track glows on its sun half and keeps its far flank light; the veto meant for a
    # dark load beside lit ground read it as a flat top. Only a top under half the lit
    # ground's light is vetoed, so the roof is read as the rules without the reading read it.
    kw = _sun(180.0, 30.0)
    roof = _barrel(elevation=30.0, albedo=0.1, blur_m=res, radius=4.4, half_width=1.6)
    limits = R._anti_flank_limits(EAST, 180.0, 30.0)
    off = (float("nan"), float("nan"))
    read = R._look(roof, 0, N, LIT_B, resolution_m=res, anti_flank=limits, **kw)
    assert read != "flat"
    assert read == R._look(roof, 0, N, LIT_B, resolution_m=res, anti_flank=off, **kw)
    # The dark load the veto is for is still vetoed.
    assert R._look(_dark_load(), 0, N, LIT_B, resolution_m=1.0, **_sun(180.0, 45.0)) == "flat"


def test_the_counter_passes_the_flank_limits_down(monkeypatch):
    """Wiring (review RTYPEM M1): ``count_railcars`` hands each track's sun limits to the
    classifier (``_split_cars`` defaults to none, which leaves the reading off). On the
    independent generator's hazy 0.5 m scene of tuning index 54, with the flank glow left
    unread so that the anti-sun flank types the barrels alone."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_altgen_rail import scene_seed
    from tests.altgen.railyard import make_railyard, score

    scene = make_railyard(scene_seed(1 * 4 + 1, 54), gsd_m=0.5, condition="hazy")
    monkeypatch.setattr(R, "_flank_glow", lambda *a, **k: float("nan"))

    from tests.test_railcar_flank_s25 import tanks_typed_tank

    def tanks_typed_right():
        return tanks_typed_tank(scene, score)

    with_limits = tanks_typed_right()
    monkeypatch.setattr(R, "_anti_flank_limits", lambda *a, **k: (float("nan"), float("nan")))
    without = tanks_typed_right()
    # Measured by the review: 23 tank cars typed tank with the limits passed, 10 without.
    assert with_limits >= without + 8, (with_limits, without)
