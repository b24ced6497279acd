"""Dark centres under a small soft cloud shadow (session 50, FALSE31).

A cloud shadow 15-25 m across with soft edges is not always found by ``cloud_shade`` (its
colour test needs shade over a 40 m window). Ground in it keeps 0.4-0.6 of the lit
ground's brightness, darker than any mix of the ground's lit and shadowed colours, and
was read as black paint: three false cars on the own simulator's partly cloudy seed 31.
On a track whose sun-side band no car can shade (no neighbour within the tallest car's
shadow on that side; a car never shades its own sun side), that band is lit ground
wherever only cars cast shadows: where it is not lit for 8 m or more, the track lies in a
cloud's shadow and the stretch is unobserved, as cloud_shade's are
(``railcars._sun_band_unshaded``, ``sun_band_lit`` of ``_occupancy``; only in an image
with a cloud in it).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.objects import railcars as R
from tests.test_railcar_light import LIT, REFS, SHADOW, STEP, _strip

N = 120                # 60 m of track
DIM = slice(40, 80)    # a 20 m stretch under a small cloud's shadow
ACROSS = (np.arange(11) - 5) * STEP
BODY = np.abs(ACROSS) <= 1.4


def _ground(colour: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = 1 + 0.05 * rng.standard_normal((1, 11, N))
    return colour[:, None, None] * tex + 0.002 * rng.standard_normal((4, 11, N))


def _occ(vals, *, sun_band_lit: bool):
    # Sun on the +across side, high enough that only a car's own shadow reaches the
    # anti-sun side; read in full light (no cloud found near the track).
    return R._occupancy(_strip(vals), REFS, min_contrast=4.0, vhr=True, sun_left=True,
                        anti_shadow_is_own=True, thin_cloud=False, sun_band_lit=sun_band_lit)


@pytest.mark.parametrize("share", [0.45, 0.6])
def test_empty_track_under_a_small_cloud_shadow_is_not_a_car(share):
    vals = _ground(LIT, seed=1)
    vals[:, :, DIM] *= share          # the whole width dimmed, sun side too
    # Premise: where the sun band might lie in a neighbour car's shadow, the stretch is
    # read as a dark car (as before session 50).
    occ, seen = _occ(vals, sun_band_lit=False)
    assert seen.all() and occ[DIM].mean() > 0.5
    occ, seen = _occ(vals, sun_band_lit=True)
    assert not occ.any()
    # The shaded stretch is unobserved (its soft edges, where the sun band is lit again,
    # stay observed); the track beyond it is seen.
    assert not seen[44:76].any()
    assert seen[:36].all() and seen[84:].all()


def test_a_short_shade_across_the_sun_band_is_not_a_cloud():
    # A mast's or a signal's shadow across the sun band, 2 m along: the track stays seen.
    vals = _ground(LIT, seed=2)
    vals[:, ACROSS >= 1.9, 60:64] *= 0.4
    occ, seen = _occ(vals, sun_band_lit=True)
    assert seen.all()


def test_dark_car_with_its_sun_side_lit_is_still_a_car():
    vals = _ground(LIT, seed=3)
    # An open car seen into, sunlit paint at 30 % of the ballast's brightness (grey, of
    # the ground's own spectral shape), and its own shadow on the anti-sun side.
    vals[:, ACROSS <= -1.9, 44:66] = SHADOW[:, None, None]
    vals[:, BODY, 44:66] = (0.3 * LIT)[:, None, None]
    occ, seen = _occ(vals, sun_band_lit=True)
    assert seen.all()
    assert occ[46:64].mean() > 0.9
    assert not occ[:36].any() and not occ[76:].any()


def test_sun_band_unshaded_reads_the_neighbours_on_the_sun_side():
    line = LineString([(0.0, 0.0), (0.0, 200.0)])      # drawn northwards; left is west
    west = LineString([(-5.0, 0.0), (-5.0, 200.0)])
    east = LineString([(5.0, 0.0), (5.0, 200.0)])
    # Sun in the west (azimuth 270), 63 degrees up: the tallest car's shadow reaches
    # 2.5 m sideways, so a neighbour 5 m to the west (body edge 3.5 m off, shadow to
    # 1.0 m off the centreline) can shade the sun band; one to the east cannot.
    assert not R._sun_band_unshaded(line, [west], 270.0, 63.0)
    assert R._sun_band_unshaded(line, [east], 270.0, 63.0)
    assert R._sun_band_unshaded(line, [], 270.0, 63.0)
    # Sun along the track, or unknown: no sun side, nothing vetoed.
    assert not R._sun_band_unshaded(line, [], 0.0, 63.0)
    assert not R._sun_band_unshaded(line, [], None, None)
    # A neighbour far off on the sun side (past the tallest car's shadow) does not count.
    far = LineString([(-15.0, 0.0), (-15.0, 200.0)])
    assert R._sun_band_unshaded(line, [far], 270.0, 63.0)



def test_sun_band_unshaded_sees_a_short_swing_in_and_follows_bends():
    """A neighbour that comes within reach on the sun side over a few metres only (a throat,
    a crossover) may shade the band there; sampling the neighbour at 41 points missed it on a
    1 km track (review of s50). The side is the local one on a bent track, and a track that
    meets this one at a switch on the anti-sun side does not count."""
    line = LineString([(0.0, 0.0), (0.0, 1000.0)])     # drawn northwards; left is west
    for y in (505.0, 517.0, 523.0):
        swing = LineString([(-20.0, 0.0), (-20.0, y - 6.0), (-3.0, y), (-20.0, y + 6.0), (-20.0, 1000.0)])
        assert not R._sun_band_unshaded(line, [swing], 270.0, 63.0), y
        assert R._sun_band_unshaded(line, [swing], 90.0, 63.0), y   # the swing is on the anti-sun side
    # A track bending east, drawn northwards then eastwards: a neighbour 5 m north of its
    # eastward leg lies on its left (sun) side there, though east of the chord's start.
    bent = LineString([(0.0, 0.0), (0.0, 100.0), (100.0, 100.0)])
    north = LineString([(20.0, 105.0), (100.0, 105.0)])
    assert not R._sun_band_unshaded(bent, [north], 315.0, 63.0)
    # A branch leaving at a switch on the anti-sun (east) side.
    branch = LineString([(0.0, 100.0), (30.0, 160.0)])
    assert R._sun_band_unshaded(line, [branch], 270.0, 63.0)

@pytest.mark.slow
def test_no_false_cars_on_the_small_cloud_shadows_of_seed_31():
    """Two of the three false cars of the matrix test's partly cloudy seed 31 (own
    simulator), on small soft cloud shadows that cloud_shade does not mark: T1 ~275-294.5 m
    and T4 ~630.5-639.5 m along the drawn lines, where the sun band is shaded, lie in
    stretches now unobserved. The third (T2 ~275.3-291 m) stays: there the sun band is
    lit and only the anti-sun side and the centre are dimmed (a known limit, session 50)."""
    from shapely.geometry import Point

    from changedet.aoi import load_aoi
    from changedet.simulate.render import render_scene
    from tests.test_objects_matrix import _on_grid

    aoi = load_aoi("tumangang_railyard")
    sc = render_scene(aoi, date(2023, 6, 15), "vhr", seed=31)
    image, valid = _on_grid(sc, aoi, "partly_cloudy", 31)
    tracks = {f.id: aoi.to_crs(f.geometry, sc.grid.crs) for f in aoi.features_by_role("track")}
    res = R.count_railcars(image, tracks, valid=valid, sun_azimuth_deg=sc.truth["sun"]["azimuth_deg"],
                           sun_elevation_deg=sc.truth["sun"]["elevation_deg"])
    stretches = {"T1": (270.0, 300.0), "T4": (625.0, 640.0)}
    on = []
    for d in res.detections:
        if d.feature_id in stretches:
            a, b = stretches[d.feature_id]
            s = tracks[d.feature_id].project(Point(d.polygon.centroid))
            if a <= s <= b:
                on.append((d.feature_id, round(s, 1), d.type))
    assert not on, on
    gaps = {p["id"]: p["unobserved_runs_m"] for p in res.per_feature}
    for tid, (a, b) in stretches.items():
        assert any(g0 < b and g1 > a for g0, g1 in gaps[tid]), (tid, gaps[tid])
