"""Railcars, session 51 (issue 6): bright (concrete-sleepered) empty beds at 0.75-1 m.

Two gates kept such a bed unlearnt, so the empty track was measured only against the
ground beside it and read as a string of pale cars (altgen clear, session 50's `colourful`
false cars, 35 at 0.75 m and 16 at 1 m on tuning 200-211 and 240-251):

* :func:`railcars._flanked_mask` asked for lit ground on both sides, and the sun side of
  an empty track beside a busy one lies in the neighbour's cars' shadow: altgen clear
  0.75 m seed 8941, track T2 (empty), 7 of 413 centres seen empty and 7 false cars. A car
  on the track shades only its anti-sun side, so the sun side's shade is no evidence of
  one (the anti-sun side then speaks alone, where any car would shade it);
* at 1 m no bed was learnt (``_BED_MAX_RES_M``): the blur may carry a bright body's light
  into the side band. There a bed is now learnt where the lit flanks and the track's
  uniformity along its length agree (:func:`railcars._learnt_bed`): altgen clear 1 m seed
  8270, track T1 (empty), 5 false cars.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.strips import Strip
from tests.altgen.railyard import make_railyard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_altgen_rail import scene_seed  # noqa: E402

STEP = 0.5
ACROSS = np.arange(-2.5, 2.5 + 1e-9, STEP)
EAST = LineString([(0.0, 0.0), (200.0, 0.0)])
N = 300
GROUND = np.array([0.14, 0.15, 0.16, 0.20])   # the yard's lit ground: clean ballast
SHADOW = 0.3 * GROUND
CONCRETE_BED = 1.35 * GROUND
PALE_TOP = np.array([0.20, 0.21, 0.22, 0.26])


def _refs():
    return {"lit": GROUND.copy(), "lit_sd": 0.08 * GROUND, "shadow": SHADOW.copy(), "shadow_sd": 0.08 * SHADOW}


def _strip(centre: np.ndarray, side: np.ndarray, seed: int = 0) -> Strip:
    """A track running east under a sun from the south (the sun side is the negative
    across side, south): ``centre`` (band, along) over |across| <= 1.0 m, ``side``
    (band, along) elsewhere; 2 % noise."""
    rng = np.random.default_rng(seed)
    v = np.broadcast_to(side[:, None, :], (4, ACROSS.size, N)).copy()
    v[:, np.abs(ACROSS) <= 1.0, :] = centre[:, None, :]
    v = (v * (1.0 + 0.02 * rng.standard_normal(v.shape))).astype("float32")
    along = np.arange(N) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(v, along, ACROSS, x, y, STEP)


def _const(colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(colour[:, None], (4, N)).copy()


def _per_m(elevation: float = 40.0) -> float:
    return R._shadow_across(EAST, 180.0, elevation)


def _shade(strip: Strip, rows: np.ndarray, where: np.ndarray | None = None) -> Strip:
    cols = np.ones(N, bool) if where is None else where
    for band in range(4):
        strip.values[band][rows[:, None] & cols[None, :]] = SHADOW[band]
    return strip


def test_sun_left_of_the_test_track_is_false():
    # The synthetic track's sun side is south, the negative across side.
    assert R._sun_geometry(EAST, 180.0, 40.0)[0] is False


def test_an_empty_bed_beside_a_neighbours_shadow_on_its_sun_side_is_learnt():
    # The ground between this track and a busy one to the south lies in that track's cars'
    # shadow; this track's own anti-sun side (north) is lit all along.
    strip = _shade(_strip(_const(CONCRETE_BED), _const(GROUND)), ACROSS <= -1.5)
    # Both sides asked to be lit (sun side unknown): never seen empty, as before.
    assert not R._flanked_mask(strip, _refs(), _per_m())[1].any()
    # With the sun side known, its shade is not this track's car's.
    assert R._flanked_mask(strip, _refs(), _per_m(), sun_left=False)[1].mean() > 0.9
    refs = R._with_bed(strip, _refs(), per_m=_per_m(), sun_left=False)
    assert "bed" in refs
    assert np.allclose(refs["bed"], CONCRETE_BED, rtol=0.03)
    kw = dict(min_contrast=3.0, vhr=True, sun_left=False, shadow_across_m=_per_m())
    assert R._occupancy(strip, refs, **kw)[0].mean() < 0.05


def test_cars_with_their_anti_sun_side_shaded_are_not_a_bed_whatever_the_sun_side():
    # Pale tops along the track, each shading its anti-sun side (north); the sun side in a
    # neighbour's shadow too, or lit.
    for sun_rows in (ACROSS <= -1.5, np.zeros(ACROSS.size, bool)):
        strip = _shade(_shade(_strip(_const(PALE_TOP), _const(GROUND)), ACROSS >= 1.5), sun_rows)
        assert not R._flanked_mask(strip, _refs(), _per_m(), sun_left=False)[1].any()
        assert "bed" not in R._with_bed(strip, _refs(), per_m=_per_m(), sun_left=False)


def test_a_flat_deck_shading_only_the_inner_anti_sun_band_is_not_a_bed_beside_a_shaded_sun_side():
    # Snow-like ground: a wide lit spread and a bright shade (0.6 of the light). A string of
    # flat decks under a 53-degree sun shades its anti-sun side (north) only out to 2.4 m:
    # the side band (2.0-2.6 m) is half shaded and its mean passes as lit ground. With the
    # sun side in a neighbour's shadow the anti-sun side is the one witness, and every
    # sample from the deck's edge outwards must be lit (altgen clear 0.5 m seed 8939:
    # 8 flat wagons lost without it).
    refs = {"lit": GROUND.copy(), "lit_sd": 0.25 * GROUND, "shadow": 0.6 * GROUND, "shadow_sd": 0.1 * GROUND}
    strip = _strip(_const(0.5 * GROUND), _const(GROUND))
    per_m = _per_m(53.0)
    assert R._deck_shadow_bands(strip, per_m)[0].all()
    rows = ((ACROSS >= 1.5) & (ACROSS <= 2.0)) | (ACROSS <= -1.5)
    for band in range(4):
        strip.values[band][rows, :] = 0.6 * GROUND[band]
    every, seen = R._flanked_mask(strip, refs, per_m, sun_left=False)
    assert not seen.any()
    assert "bed" not in R._with_bed(strip, refs, per_m=per_m, sun_left=False)


def test_the_shaded_sun_side_needs_the_deck_shadow_to_reach_the_anti_sun_band():
    # Under a high sun the lowest deck's shadow stops short of the side band (the deck band
    # is read by the mirror test instead, which needs both sides lit): the sun side's shade
    # is then not passed over.
    strip = _shade(_strip(_const(CONCRETE_BED), _const(GROUND)), ACROSS <= -1.5)
    per_m = _per_m(60.0)
    casts, _, _, _ = R._deck_shadow_bands(strip, per_m)
    assert not casts.any()
    assert not R._flanked_mask(strip, _refs(), per_m, sun_left=False)[1].any()


def _train(top: np.ndarray, car_m: float = 14.0, gap_m: float = 1.0) -> np.ndarray:
    """Centre colours (band, along) of a string of cars with ``top``, their coupler gaps
    showing the concrete bed in the deck ahead's shadow."""
    centre = _const(top)
    pos = np.arange(N) * STEP
    gaps = (pos % (car_m + gap_m)) >= car_m
    centre[:, gaps] = (CONCRETE_BED * 0.3)[:, None]
    return centre


def test_at_1m_a_uniform_bed_with_lit_flanks_is_learnt():
    strip = _strip(_const(CONCRETE_BED), _const(GROUND))
    # At 0.75 m as before (lit flanks alone).
    assert "bed" in R._learnt_bed(strip, _refs(), resolution_m=0.75, per_m=_per_m(), blur_m=0.375,
                                  sun_left=False)
    refs = R._learnt_bed(strip, _refs(), resolution_m=1.0, per_m=_per_m(), blur_m=0.5, sun_left=False)
    assert "bed" in refs
    assert np.allclose(refs["bed"], CONCRETE_BED, rtol=0.03)
    # Coarser than measured: nothing learnt.
    assert "bed" not in R._learnt_bed(strip, _refs(), resolution_m=1.2, per_m=_per_m(), blur_m=0.6,
                                      sun_left=False)


def test_at_1m_lit_flanks_beside_a_string_of_pale_cars_are_not_a_bed():
    # The blur of a bright body over its own shadow reads as lit ground beside the track
    # (the reason no bed was learnt at 1 m): the flanks alone would take the tops for the
    # bed, but the coupler gaps break the track's uniformity.
    strip = _strip(_train(PALE_TOP), _const(GROUND))
    assert "bed" in R._with_bed(strip, _refs(), per_m=_per_m(), blur_m=0.5, sun_left=False)
    assert "bed" not in R._uniform_bed(strip, _refs())
    assert "bed" not in R._learnt_bed(strip, _refs(), resolution_m=1.0, per_m=_per_m(), blur_m=0.5,
                                      sun_left=False)


def test_at_1m_a_uniform_track_with_shaded_flanks_is_not_a_bed():
    # Uniform along its length but with its anti-sun side shaded all along: a string of
    # pale cars whose gaps do not read, not an empty bed.
    strip = _shade(_strip(_const(CONCRETE_BED), _const(GROUND)), ACROSS >= 1.5)
    assert "bed" in R._uniform_bed(strip, _refs())
    assert "bed" not in R._learnt_bed(strip, _refs(), resolution_m=1.0, per_m=_per_m(), blur_m=0.5,
                                      sun_left=False)


def _count(cell: int, index: int, gsd: float) -> dict[str, tuple[int, int]]:
    sc = make_railyard(scene_seed(cell, index), gsd_m=gsd, condition="clear")
    res = R.count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                           sun_elevation_deg=sc.sun_elevation_deg)
    return {p["id"]: (p["count"], sum(c.track_id == p["id"] for c in sc.cars)) for p in res.per_feature}


def test_altgen_empty_concrete_track_beside_a_busy_one_holds_no_cars_at_075m():
    # Tuning index 247, clear 0.75 m (cell 2): seed 8941, gravel, concrete sleepers, sun at
    # 50 degrees across the tracks; T2 is empty, T1 beside it on its sun side carries 14 cars.
    assert scene_seed(2, 247) == 8941
    got = _count(2, 247, 0.75)
    assert got["T2"] == (0, 0)
    assert got["T1"] == (14, 14)


def test_altgen_empty_concrete_track_holds_at_most_one_car_at_1m():
    # Tuning index 204, clear 1 m (cell 3): seed 8270, gravel, concrete sleepers; T1 is
    # empty (5 cars read on it before), T2 carries 13.
    assert scene_seed(3, 204) == 8270
    got = _count(3, 204, 1.0)
    assert got["T1"][1] == 0 and got["T1"][0] <= 1
    assert got["T2"] == (13, 13)


def test_altgen_flat_wagons_beside_a_busy_track_keep_their_cars_at_05m():
    # Tuning index 247, clear 0.5 m (cell 1): seed 8939, snow, wooden sleepers; T1 carries
    # 12 cars (8 flat wagons), its sun side in T2's cars' shadow (base: 14 read).
    assert scene_seed(1, 247) == 8939
    got = _count(1, 247, 0.5)
    assert got["T1"][1] == 12 and got["T1"][0] >= 12


def _unrolled(line):
    from changedet.grid import GridSpec
    from changedet.objects.strips import sample_strip

    grid = GridSpec.from_bounds(32633, (-50.0, -250.0, 250.0, 250.0), 0.5)
    image = np.zeros((4, *grid.shape), "float32")
    x0, y0 = grid.transform.c, grid.transform.f
    line = LineString([(x0 + 50.0 + x, y0 - 250.0 + y) for x, y in line.coords])
    return sample_strip(image, grid, line, half_width_m=3.0), line


@pytest.mark.parametrize("heading_deg", [0.0, 35.0, 90.0, 160.0, 250.0, 300.0])
@pytest.mark.parametrize("azimuth_deg", [20.0, 135.0, 200.0, 290.0])
def test_a_straight_tracks_sun_side_is_its_chords(heading_deg, azimuth_deg):
    # Review of session 51 (M1): the one-sided flank witness takes the sun side from the chord
    # (_sun_geometry); on a straight track every stretch agrees, and _steady_sun_side keeps it.
    h = np.radians(heading_deg)
    strip, line = _unrolled(LineString([(0.0, 0.0), (150.0 * np.sin(h), 150.0 * np.cos(h))]))
    side = R._sun_geometry(line, azimuth_deg, 40.0)[0]
    assert R._steady_sun_side(strip, azimuth_deg, side) is side


def test_a_curve_turning_the_sun_to_its_other_side_gives_no_sun_side():
    # Chord heading east, sun from 120 degrees (south-east: on the right of the chord), a leg
    # heading 150 degrees on the way (the sun on its left): the anti-sun side of that leg is the
    # chord's sun side, where a car on the track casts its shadow, so no side is trusted.
    pts = [(0.0, 0.0), (60.0, 0.0)]
    x, y = 60.0, 0.0
    for _ in range(6):   # 60 m heading 150 degrees
        x, y = x + 10.0 * np.sin(np.radians(150.0)), y + 10.0 * np.cos(np.radians(150.0))
        pts.append((x, y))
    pts.append((x + 120.0, y))
    strip, line = _unrolled(LineString(pts))
    side = R._sun_geometry(line, 120.0, 40.0)[0]
    assert side is False
    assert R._steady_sun_side(strip, 120.0, side) is None
    assert R._steady_sun_side(strip, 120.0, None) is None
