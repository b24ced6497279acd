"""Railcars, session 51 (issue 6): a dark empty bed with the sun along the tracks.

With the sun along the tracks no car shades either side band, so no shadowed-ground colour
is learnt (``refs["shadow"]`` NaN) and no bed is learnt from lit flanks (:func:`railcars._with_bed`
needs a sun side). :func:`railcars._uniform_bed` refused any bed darker than the lit ground (a
string of dark cars, their coupler gaps in their own shade, is as uniform), so a creosoted
wooden-sleepered empty track read as cars end to end (altgen clear 0.5 m, tuning index 245,
seed 8907: 16 false cars on its empty track T1). With the sun along the track a dark bed is now
learnt where its colour is the lit ground's dimmed alike in every band (:func:`railcars._grey_bed`;
rusted steel, oxide paint and timber decks lose far more blue than near infrared) and no car's
shadow falls along the track (:func:`railcars._own_shadow_along`). With a sun side, or with the
sun's geometry not given, a dark uniform stretch is still not taken for a bed
(tests/test_railcar_uniform_bed_s37.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
ACROSS = np.arange(-2.5, 2.5 + 1e-9, STEP)
N = 400   # 200 m of track
GROUND = np.array([0.12, 0.136, 0.152, 0.192])   # yard gravel, lit
# The tallest car's shadow along the track (m): 5 m high, the sun 47 degrees up, along.
ALONG_M = 5.0 / np.tan(np.radians(47.0))


def _refs():
    """The yard's learnt ground colours with the sun along every track (no shadow colour)."""
    nan = np.full(4, np.nan)
    return {"lit": GROUND.copy(), "lit_sd": 0.065 * GROUND, "shadow": nan, "shadow_sd": nan}


def _strip(centre: np.ndarray, seed: int = 0) -> Strip:
    """``centre`` (band, along) over |across| <= 1.0 m, lit ground elsewhere; 2 % noise."""
    rng = np.random.default_rng(seed)
    v = np.broadcast_to(GROUND[:, None, None], (4, ACROSS.size, N)).copy()
    v[:, np.abs(ACROSS) <= 1.0, :] = centre[:, None, :]
    v = (v * (1.0 + 0.02 * rng.standard_normal(v.shape))).astype("float32")
    along = np.arange(N) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(v, along, ACROSS, x, y, STEP)


def _uniform(colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, dtype="float64")[:, None], (4, N)).copy()


# A wooden-sleepered bed: 0.6 of the side ground's light in every band (altgen 8907: 0.57-0.61).
WOODEN_BED = 0.6 * GROUND
# Rust-brown bodies (altgen uniform strings of dark cars: ratios to the ground rising from
# 0.3-0.5 in blue to 0.8 in near infrared).
RUSTY_TOPS = GROUND * np.array([0.35, 0.47, 0.6, 0.8])


def test_a_grey_dark_bed_with_the_sun_along_the_track_is_learnt():
    strip = _strip(_uniform(WOODEN_BED))
    refs = R._uniform_bed(strip, _refs(), sun_along_m=ALONG_M)
    assert "bed" in refs
    assert np.allclose(refs["bed"], WOODEN_BED, rtol=0.03)
    # The bed in shade stays unknown (no shadow colour is learnt with the sun along).
    assert not np.any(np.isfinite(refs["bed_shadow"]))
    kw = dict(min_contrast=3.0, vhr=True, sun_left=None)
    # Against the side ground alone the empty track is a dark car end to end.
    assert R._occupancy(strip, _refs(), **kw)[0].mean() > 0.9
    assert R._occupancy(strip, refs, **kw)[0].mean() < 0.05


def test_with_a_sun_side_or_no_sun_a_dark_bed_is_still_not_learnt():
    # Where the sun has a side, _with_bed learns the bed from lit flanks; a dark uniform
    # stretch may be a string of dark cars (session 37), as before.
    assert "bed" not in R._uniform_bed(_strip(_uniform(WOODEN_BED)), _refs())


def test_rusty_uniform_bodies_are_not_learnt_as_a_bed():
    assert "bed" not in R._uniform_bed(_strip(_uniform(RUSTY_TOPS)), _refs(), sun_along_m=ALONG_M)
    assert not R._grey_bed(RUSTY_TOPS, GROUND)
    assert R._grey_bed(WOODEN_BED, GROUND)


@pytest.mark.parametrize("shade_m", [1.5, 4.0])
def test_a_dark_string_that_shades_the_track_past_its_end_is_not_learnt(shade_m):
    # Grey dark bodies over most of the track; past their end away from the sun their
    # shadow lies on the bed (0.25 of its light) over ``shade_m``, then the bed.
    centre = _uniform(WOODEN_BED)
    a = 330
    centre[:, a:a + int(shade_m / STEP)] = 0.25 * WOODEN_BED[:, None]
    assert "bed" not in R._uniform_bed(_strip(centre), _refs(), sun_along_m=ALONG_M)


def test_a_shade_longer_than_any_cars_is_a_clouds_and_does_not_veto_the_bed():
    # 30 m of shade, longer than the tallest car's shadow along the track: a cloud's.
    centre = _uniform(WOODEN_BED)
    centre[:, 300:360] = 0.25 * WOODEN_BED[:, None]
    assert "bed" in R._uniform_bed(_strip(centre), _refs(), sun_along_m=ALONG_M)


def test_an_oil_stain_between_the_rails_does_not_veto_the_bed():
    # A 2 m oil stain (0.55 of the bed's reflectance over 1.4 of the centre's 2 m).
    centre = _uniform(WOODEN_BED)
    centre[:, 200:204] = (WOODEN_BED * (1 - 0.45 * 0.7))[:, None]
    assert "bed" in R._uniform_bed(_strip(centre), _refs(), sun_along_m=ALONG_M)


@pytest.mark.slow
def test_an_empty_wooden_sleepered_track_with_the_sun_along_the_yard_holds_no_cars():
    # The altgen tuning scene (clear, 0.5 m, index 245, seed 8907): the sun 2 degrees off
    # the tracks' axis, 47 degrees up, gravel yard, wooden sleepers. Its empty track T1
    # read as 16 cars end to end; the busy tracks beside it keep their counts.
    from tests.altgen.railyard import make_railyard

    sc = make_railyard(8907, gsd_m=0.5, condition="clear")
    res = R.count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                           sun_elevation_deg=sc.sun_elevation_deg)
    est = {p["id"]: p["count"] for p in res.per_feature}
    truth = {t: sum(1 for c in sc.cars if c.track_id == t) for t in sc.tracks}
    assert truth["T1"] == 0
    assert est["T1"] <= 1
    for tid in ("T2", "T3", "T4"):
        assert abs(est[tid] - truth[tid]) <= 3


# Black tank cars: paint of reflectance 0.036-0.058, 0.3 of the yard gravel's light in every
# band (as grey, relative to the ground, as the wooden bed).
BLACK_TOPS = 0.3 * GROUND


def test_a_string_of_black_cars_filling_the_track_is_not_learnt_as_a_bed():
    # Grey as a bed (dimmed alike in every band) and uniform end to end, with no shadow of
    # its own in view (the gaps in the bodies' shade read as dark as they do): only its
    # darkness against the gravel beside the track tells it from a bed.
    assert not R._grey_bed(BLACK_TOPS, GROUND)
    assert R._grey_bed(0.5 * GROUND, GROUND)
    strip = _strip(_uniform(BLACK_TOPS))
    refs = R._uniform_bed(strip, _refs(), sun_along_m=ALONG_M)
    assert "bed" not in refs
    kw = dict(min_contrast=3.0, vhr=True, sun_left=None)
    assert R._occupancy(strip, refs, **kw)[0].mean() > 0.9


@pytest.mark.parametrize("top_share, gap_m, gap_share", [
    (0.45, 1.0, 0.3), (0.5, 1.0, 0.25), (0.5, 1.3, 0.25), (0.6, 1.0, 0.3), (0.7, 1.0, 0.35)])
def test_a_string_of_grey_cars_with_shaded_coupler_gaps_is_not_learnt(top_share, gap_m, gap_share):
    # Review of session 51 (H1): 14 m grey tops at 0.45-0.7 of the ground's light, their 1-1.3 m
    # coupler gaps in their shade (a quarter to a third of the ground's). Smoothed over 1 m a gap
    # is no shade of half the tops' light, and the uniformity windows drop it; two gaps a car's
    # length apart tell the string from a bed.
    pos = np.arange(N) * STEP
    centre = _uniform(top_share * GROUND)
    centre[:, (pos % (14.0 + gap_m)) >= 14.0] = (gap_share * GROUND)[:, None]
    strip = _strip(centre)
    refs = R._uniform_bed(strip, _refs(), sun_along_m=ALONG_M)
    assert "bed" not in refs
    assert R._occupancy(strip, refs, min_contrast=3.0, vhr=True, sun_left=None)[0].mean() > 0.9


def test_two_stains_closer_than_a_car_do_not_veto_the_bed():
    # Two 1 m oil stains 4 m apart (and a third 60 m on): no two a car's length apart.
    centre = _uniform(WOODEN_BED)
    for a in (100, 108, 228):
        centre[:, a:a + 2] = (WOODEN_BED * 0.6)[:, None]
    assert "bed" in R._uniform_bed(_strip(centre), _refs(), sun_along_m=ALONG_M)


def test_a_path_radiance_does_not_make_rusty_tops_grey():
    # Review of session 51 (M2): 0.08 of haze or thin cloud added over every pixel brings the
    # rusty tops' band ratios to the ground within 1.45 of each other; read with the path taken
    # off (as the thin-cloud pass gives it), they are no bed.
    path = np.full(4, 0.08)
    strip = _strip(_uniform(RUSTY_TOPS + path))
    refs = _refs()
    refs["lit"] = GROUND + path
    assert R._grey_bed(RUSTY_TOPS + path, GROUND + path)
    assert "bed" not in R._uniform_bed(strip, refs, sun_along_m=ALONG_M, path=path)
