"""Car tops lit in a neighbour's shadow are cars, not shadow tails (session 30).

Under a low sun a tall car's shadow covers the next track over, both sides of it. A car
standing there rises into the sun: its top is lit while the ground on both its sides is
shaded. :func:`changedet.objects.railcars._occupancy` found such a top by the anti-sun
rule (a lit centre beside a shaded anti-sun side), but counted it among the stretches a
car's own shadow makes past its end under an oblique sun, and :func:`_trim_tails` cut up
to 6.5 m of it away: a 6 m container on a flat wagon, grey like the lit ballast, vanished
(altgen tuning scene 6628, low sun, 0.75 m: 4 of the 6 container flats on track T4 without
any detection).
A shadow tail leaves the sun side lit; a stretch lit between two shaded sides is not one,
unless the sun side is shaded by something else (a neighbour's shadow edge between the
centre and the band, a mast's shadow; review RRISEN): a body in a track-wide shadow ends
on shaded track, a shadow tail (or dark ground beside an empty track) on lit track.

Synthetic strips with known answers (no generator), and the altgen tuning scene.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.railcars import Strip

STEP = 0.5
LIT = np.array([0.153, 0.174, 0.187, 0.223])       # sunlit ballast, B G R NIR
SHADOW = np.array([0.038, 0.035, 0.030, 0.031])    # the same ground lit by the sky only
GREY = np.array([0.205, 0.207, 0.206, 0.221])      # a grey container roof in the sun
REFS = {"lit": LIT, "lit_sd": np.array([0.017, 0.019, 0.024, 0.030]), "shadow": SHADOW,
        "shadow_sd": np.array([0.013, 0.014, 0.015, 0.018])}
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)         # as sample_strip's grid at VHR
KW = dict(min_contrast=4.0, vhr=True, sun_left=True, shadow_tail_m=6.0, shadow_across_m=1.12, blur_m=0.375)


def _ground(length_m: float, colour, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(length_m / STEP)
    tex = 1 + 0.05 * rng.standard_normal((1, ACROSS.size, n))
    return colour[:, None, None] * tex + 0.002 * rng.standard_normal((4, ACROSS.size, n))


def _paint(vals, u0, u1, colour, rows):
    u = np.arange(vals.shape[2]) * STEP
    out = vals.copy()
    m = rows[:, None] & ((u >= u0) & (u < u1))[None, :]
    out[:, m] = colour[:, None]
    return out


def _occ(vals, refs=REFS):
    n = vals.shape[2]
    x, y = np.meshgrid(np.arange(n) * STEP, ACROSS)
    strip = Strip(vals.astype("float32"), np.arange(n) * STEP, ACROSS, x, y, STEP)
    occ, seen = R._occupancy(strip, refs, **KW)
    return occ, np.arange(n) * STEP


def test_a_lit_top_in_a_neighbours_shadow_is_a_car():
    # The whole track in a neighbour's shadow; a 6 m grey container top, 2.44 m wide, lit.
    vals = _paint(_ground(80, SHADOW), 40.0, 46.0, GREY, np.abs(ACROSS) <= 1.22)
    occ, u = _occ(vals)
    assert occ[(u >= 41.0) & (u < 45.0)].all()
    assert not occ[(u < 38.0) | (u > 48.0)].any()


def test_a_shadow_tail_past_a_cars_end_is_still_trimmed():
    # Lit ballast; a dark car 40-55 m whose own shadow runs on the anti-sun side (right,
    # across < 0) 6 m past its high end: the sun side stays lit there, the tail is not a car.
    vals = _ground(90, LIT)
    vals = _paint(vals, 40.0, 55.0, np.array([0.02, 0.02, 0.02, 0.03]), np.abs(ACROSS) <= 1.5)
    vals = _paint(vals, 40.0, 61.0, SHADOW, ACROSS < -1.5)
    occ, u = _occ(vals)
    assert occ[(u >= 42.0) & (u < 53.0)].all()
    assert not occ[u >= 56.5].any()


DARK = np.array([0.02, 0.02, 0.02, 0.03])


@pytest.mark.parametrize("body", ["dark", "grey"])
def test_a_tail_beside_a_neighbours_shadow_is_still_trimmed(body):
    # A neighbour's shadow edge lies on the sun-side band (1.6 m out) all along; the car's
    # own shadow runs 6 m past its high end on the anti-sun side.
    vals = _paint(_ground(90, LIT), 40.0, 55.0, DARK if body == "dark" else GREY, np.abs(ACROSS) <= 1.5)
    vals = _paint(vals, 40.0, 61.0, SHADOW, ACROSS < -1.5)
    vals = _paint(vals, 0.0, 90.0, SHADOW, ACROSS > 1.6)
    occ, u = _occ(vals)
    assert occ[(u >= 42.0) & (u < 53.0)].all()
    assert not occ[u >= 56.5].any()


def test_dark_ground_beside_an_empty_track_in_a_neighbours_shadow_edge_is_no_car():
    vals = _paint(_ground(90, LIT), 0.0, 90.0, SHADOW, ACROSS > 1.6)
    vals = _paint(vals, 40.0, 45.0, SHADOW * 1.2, ACROSS < -1.6)
    occ, u = _occ(vals)
    assert not occ.any()


@pytest.mark.slow
def test_altgen_container_flats_in_a_neighbours_shadow():
    from tests.altgen.railyard import make_railyard, score

    sc = make_railyard(6628, gsd_m=0.75, condition="low_sun")
    res = R.count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                           sun_elevation_deg=sc.sun_elevation_deg)
    s = score(sc, res)
    from shapely.affinity import translate

    mdx, mdy = sc.params.get("misregistration_xy_m", (0.0, 0.0))
    flats = [c for c in sc.cars if c.track_id == "T4" and c.type == "container_flat" and c.observed]
    found = 0
    for car in flats:
        t = translate(car.polygon, mdx, mdy)
        ious = [t.intersection(d.polygon).area / t.union(d.polygon).area for d in res.detections
                if d.feature_id == "T4" and d.polygon.intersects(t)]
        found += bool(ious) and max(ious) >= 0.5
    # Before: 2 of the 6 found at IoU 0.5 (TP 49, FP 3 in the scene); with the rule 3 (TP 52, FP 4).
    # Session 32's sky-lit bodies in a neighbour's shadow (_BODY_IN_SHADE_LIT_SHARE; track
    # T1's first cars stand wholly in T2's cars' shadow): TP 52 -> 56, FP 4 -> 6 (two cars
    # re-cut into an extra piece). A lit-share gate of 0.2 found 64 but let bright concrete
    # beds in shade through.
    assert found >= 3, (found, len(flats))
    assert s["tp"] >= 55 and s["fp"] <= 6, (s["tp"], s["fp"])
