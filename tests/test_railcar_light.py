"""Railcar cues that read the light: a cylinder's sun-facing glow, paint too dark to be
ground under any mix of sun and skylight, a car's own shadow running along the track,
and a lit coupler gap between cars whose surroundings are half in shadow.

Synthetic strips with known answers (no simulator): each cue is checked on the case it
is for and on the look-alike it must reject.
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
LIT = np.array([0.12, 0.13, 0.14, 0.16])          # sunlit ballast, B G R NIR
SHADOW = LIT * np.array([0.32, 0.27, 0.24, 0.22])  # the same ballast lit by the sky only
REFS = {"lit": LIT, "lit_sd": np.maximum(0.004 + 0.03 * LIT, 0.0075), "shadow": SHADOW,
        "shadow_sd": 0.003 + 0.03 * SHADOW}


def _strip(values: np.ndarray) -> Strip:
    nb, na, nl = values.shape
    across = (np.arange(na) - na // 2) * STEP
    along = np.arange(nl) * STEP
    x, y = np.meshgrid(along, across)
    return Strip(values.astype("float32"), along, across, x, y, STEP)


def _ground(n_along: int, colour: np.ndarray, half_m: float = 2.6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    na = int(round(2 * half_m / STEP)) + 1
    tex = 1 + 0.05 * rng.standard_normal((1, na, n_along))
    return colour[:, None, None] * tex + 0.002 * rng.standard_normal((4, na, n_along))


def test_sun_side_glow_marks_a_lit_cylinder_not_a_cast_shadow_edge():
    n = 80
    across = (np.arange(11) - 5) * STEP
    sun_left = True   # the sun shines from the +across side
    # A black tank car (3 m cylinder) from 4 m to 16 m: Lambertian shading, bright towards the sun.
    cyl = _ground(n, SHADOW)
    v = np.clip(across / 1.5, -0.999, 0.999)
    shade = 0.35 + 0.75 * np.clip(np.sqrt(1 - v ** 2) * 0.4 + v * 0.9, 0, None)
    body = np.abs(across) <= 1.5
    cyl[:, body, 8:32] = 0.03 * shade[body][None, :, None]
    # A neighbour's shadow edge crossing an empty track: dark on the sun side, lit beyond.
    edge = _ground(n, LIT)
    edge[:, across > 0.2, :] = SHADOW[:, None, None]
    flat = _ground(n, SHADOW)   # shadowed ballast, no structure
    sd = float(np.mean(REFS["shadow_sd"]))
    glow = R._sun_side_glow(_strip(cyl), sun_left, sd, 3)
    assert glow[10:30].mean() > 0.9
    assert not glow[40:].any()
    assert not R._sun_side_glow(_strip(edge), sun_left, sd, 3).any()
    assert not R._sun_side_glow(_strip(flat), sun_left, sd, 3).any()
    # Seen with the sun on the other side, the same cylinder is a shading edge, not a glow.
    assert not R._sun_side_glow(_strip(cyl), not sun_left, sd, 3)[10:30].any()


def test_dark_paint_in_a_shaded_yard_is_occupied_and_shaded_ballast_is_not():
    n = 120
    vals = _ground(n, SHADOW, seed=1)      # the whole track lies in a neighbour's shadow
    across = (np.arange(vals.shape[1]) - vals.shape[1] // 2) * STEP
    body = np.abs(across) <= 1.4
    # An open car seen into, in the sun: sunlit-ballast spectrum at 45 % of its brightness
    # (about as bright as the shade around it, but not blue like skylight).
    vals[:, body, 20:48] = (0.45 * LIT)[:, None, None]
    occ, seen = R._occupancy(_strip(vals), REFS, min_contrast=4.0, vhr=True, sun_left=True)
    assert seen.all()
    assert occ[22:46].mean() > 0.9
    assert not occ[:16].any() and not occ[52:].any()
    # Sunlit ballast's colour in the same place, but as dark as the shade: the shade's
    # own colour (blue skylight) is ground; only the sunlit spectrum is too dark for it.
    vals[:, body, 20:48] = SHADOW[:, None, None]
    occ, _ = R._occupancy(_strip(vals), REFS, min_contrast=4.0, vhr=True, sun_left=True)
    assert not occ.any()


@pytest.mark.parametrize("azimuth, expected", [(180.0, 0.0), (135.0, -4.1), (225.0, 4.1), (157.0, -1.74)])
def test_shadow_tail_follows_the_sun_azimuth(azimuth, expected):
    # A track running east: the shadow of a car (pointing away from the sun) runs
    # along the track by tan(azimuth - 180) of its sideways reach.
    line = LineString([(0, 0), (100, 0)])
    assert R._shadow_tail(line, azimuth) == pytest.approx(expected, abs=0.02)
    assert R._shadow_tail(line, None) == 0.0
    # Traversed the other way, the tail is on the other end.
    assert R._shadow_tail(LineString([(100, 0), (0, 0)]), azimuth) == pytest.approx(-expected, abs=0.02)


def test_trim_tails_only_removes_shadow_evidence_at_the_shadow_end():
    occ = np.zeros(60, bool)
    occ[10:40] = True
    shade_only = np.zeros(60, bool)
    shade_only[10:16] = True     # before the car: its own shadow (tail towards low along)
    shade_only[36:40] = True     # after it: shadow evidence too, but on the sun's end
    out = R._trim_tails(occ, shade_only, -2.5, STEP)
    assert not out[10:16].any() and out[16:40].all()
    # The trim stops at the tail's length (plus blur): a longer shadow-only stretch keeps its rest.
    shade_only[10:25] = True
    out = R._trim_tails(occ, shade_only, -2.5, STEP)
    assert out[16:40].all() and not out[10:16].any()
    out = R._trim_tails(occ, shade_only, 2.5, STEP)
    assert not out[36:40].any() and out[10:36].all()


def test_lit_gap_between_shaded_cars_places_the_cut():
    # Two cars (15.7 m and 13.9 m bodies) with a lit 1.1 m gap; the ground beside the
    # track is lit on the sun side and in the cars' shadow on the other, as at a low sun.
    n = 80
    vals = _ground(n, LIT, seed=2)
    across = (np.arange(vals.shape[1]) - vals.shape[1] // 2) * STEP
    vals[:, across >= 1.95, :] = SHADOW[:, None, None]
    body = np.abs(across) <= 1.5
    a0, gap0, gap1, b1 = 3.0, 18.7, 19.8, 33.7   # metres along
    i = lambda m: int(round(m / STEP))
    vals[:, body, i(a0):i(gap0)] = np.array([0.07, 0.075, 0.08, 0.09])[:, None, None]
    vals[:, body, i(gap1):i(b1)] = (0.45 * LIT)[:, None, None]
    strip = _strip(vals)
    occ = np.zeros(n, bool)
    occ[i(a0):i(b1)] = True
    cars = R._split_cars(strip, occ, occ, REFS["lit_sd"], REFS["lit"], sun_left=False,
                         ground_sd=float(np.mean(REFS["shadow_sd"])))
    assert len(cars) == 2
    (s0, e0, t0, _), (s1, e1, t1, _) = cars
    assert e0 == pytest.approx(gap0, abs=0.6) and s1 == pytest.approx(gap1, abs=0.6)
    assert t0 == "boxcar"
