"""Railcar typing and cutting cues that do not rest on length alone: the look of a
car's top (an open car's dark interior, a boxcar's plain roof, a locomotive's roof
equipment), the shadowed-ground colour learnt where cars cast their shadows, and a
car's own shadow lying on the track ahead of it.

Synthetic strips with known answers (no simulator), sampled across the track as
:func:`changedet.objects.strips.sample_strip` does (0.5 m steps from -2.6 m).
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)
LIT = np.array([0.12, 0.13, 0.14, 0.16])          # sunlit ballast, B G R NIR
SHADOW = LIT * np.array([0.40, 0.34, 0.30, 0.26])  # the same ballast lit by the sky only
LIT_B = float(LIT.mean())


def _strip(values: np.ndarray) -> Strip:
    along = np.arange(values.shape[2]) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(values.astype("float32"), along, ACROSS, x, y, STEP)


def _ground(n_along: int, colour: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = 1 + 0.04 * rng.standard_normal((1, ACROSS.size, n_along))
    return colour[:, None, None] * tex + 0.002 * rng.standard_normal((4, ACROSS.size, n_along))


def _car(n_along: int, profile, seed: int = 0) -> Strip:
    """A strip whose positions 4..n-4 carry a body with brightness ``profile(|across|)``
    (grey paint) over 3.2 m, on lit ballast."""
    vals = _ground(n_along, LIT, seed)
    a = np.abs(ACROSS)
    body = a <= 1.6
    level = np.array([profile(v) for v in a[body]])
    rng = np.random.default_rng(seed + 1)
    vals[:, body, 4:n_along - 4] = (level[None, :, None] * np.array([0.95, 1.0, 1.02, 1.1])[:, None, None]
                                   * (1 + 0.01 * rng.standard_normal((4, body.sum(), n_along - 8))))
    return _strip(vals)


PLAIN_ROOF = lambda a: 0.11                                  # one painted sheet
OPEN_CAR = lambda a: 0.13 if a > 1.15 else 0.045             # rims above a coal load
LOCO_ROOF = lambda a: 0.06 if a < 0.5 else 0.12              # fans along the roof's middle


# The strip's 0.5 m samples from -2.6 m miss the wall band on one side (reported NaN).
@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("profile, body_m, expected", [
    (OPEN_CAR, 13.9, "gondola"),
    (OPEN_CAR, 15.5, "gondola"),       # a cut a metre and a half too far: still open
    (OPEN_CAR, 17.8, "gondola"),
    (PLAIN_ROOF, 15.7, "boxcar"),
    (PLAIN_ROOF, 17.8, "boxcar"),      # too long for a boxcar, but its roof has nothing on it
    (LOCO_ROOF, 18.0, "locomotive"),
    (PLAIN_ROOF, 13.4, "flatcar"),
])
def test_look_overrides_length_where_it_is_unambiguous(profile, body_m, expected):
    n = int(round(body_m / STEP)) + 8
    strip = _car(n, profile)
    assert R._classify(strip, 4, n - 4, body_m, LIT_B) == expected


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_look_names_what_it_sees():
    n = 40
    assert R._look(_car(n, PLAIN_ROOF), 4, n - 4, LIT_B) == "plain"
    assert R._look(_car(n, OPEN_CAR), 4, n - 4, LIT_B) == "open"
    assert R._look(_car(n, LOCO_ROOF), 4, n - 4, LIT_B) == "cylinder"   # relief, like a cylinder
    vals = np.full((4, ACROSS.size, n), np.nan)
    assert R._look(_strip(vals), 4, n - 4, LIT_B) is None


def _side_strips(shadow_side: str, n_along: int = 2000) -> dict[str, Strip]:
    # One 1 km track running east; a few cars' shadows (40 m) on one side band only.
    vals = _ground(n_along, LIT, seed=3)
    band = (ACROSS >= 1.95) if shadow_side == "left" else (ACROSS <= -1.95)
    vals[:, band, 100:180] = _ground(80, SHADOW, seed=4)[:, band, :]
    return {"T1": _strip(vals)}


def test_shadow_colour_is_learnt_on_the_anti_sun_side():
    track = {"T1": LineString([(0, 0), (1000, 0)])}
    strips = _side_strips("left")          # north of an eastbound track: the anti-sun side at noon
    refs = R._empty_track_reference(strips)
    # Too few among all the ground beside the track for the generic ground model.
    assert not np.all(np.isfinite(refs["shadow"]))
    learnt = R._shadow_from_anti_sun_sides(strips, track, refs, 180.0)
    assert learnt["shadow"] == pytest.approx(SHADOW, rel=0.08)
    assert np.all(learnt["shadow_sd"] > 0)
    np.testing.assert_array_equal(learnt["lit"], refs["lit"])
    # Without the sun's azimuth nothing is assumed.
    assert not np.all(np.isfinite(R._shadow_from_anti_sun_sides(strips, track, refs, None)["shadow"]))
    # Dark ground on the sun side is not a car's shadow (a car cannot shade towards the sun).
    south = _side_strips("right")
    refs_s = R._empty_track_reference(south)
    assert not np.all(np.isfinite(refs_s["shadow"]))
    assert not np.all(np.isfinite(R._shadow_from_anti_sun_sides(south, track, refs_s, 180.0)["shadow"]))


@pytest.mark.parametrize("azimuth, elevation, expected", [
    (135.0, 45.0, -3.54),     # sun in the south-east: shadows run west, behind an eastbound car
    (225.0, 45.0, 3.54),
    (180.0, 45.0, 0.0),       # sun square to the track: shadow beside it, none ahead
    (135.0, 10.0, -6.0),      # very low sun: bounded like the shadow tail
])
def test_shadow_reach_from_sun_geometry(azimuth, elevation, expected):
    line = LineString([(0, 0), (100, 0)])
    assert R._shadow_reach(line, azimuth, elevation) == pytest.approx(expected, abs=0.02)
    assert R._shadow_reach(LineString([(100, 0), (0, 0)]), azimuth, elevation) == pytest.approx(-expected, abs=0.02)
    assert R._shadow_reach(line, azimuth, None) == 0.0
    assert R._shadow_reach(line, None, elevation) == 0.0


def test_shadow_lead_is_the_dark_stretch_before_a_bright_body():
    dim = np.zeros(60, bool)
    dim[1:5] = True                        # blurred edge, then 2 m of shadow, then a bright body
    assert R._shadow_lead(dim, -2.5, STEP) == (2.5, 0.0)
    assert R._shadow_lead(dim, 0.0, STEP) == (0.0, 0.0)
    assert R._shadow_lead(dim[::-1].copy(), 2.5, STEP) == (0.0, 2.5)
    # Dark as far as a shadow could reach: a black body, not a shadow.
    assert R._shadow_lead(np.ones(60, bool), -2.5, STEP) == (0.0, 0.0)
    # Bright from the start: no shadow there.
    assert R._shadow_lead(np.zeros(60, bool), -2.5, STEP) == (0.0, 0.0)


def test_a_locomotive_with_its_shadow_ahead_is_not_cut_in_two():
    # 2.5 m of the locomotive's shadow, the 18 m locomotive, a 1.1 m gap, a 15.7 m boxcar.
    i = lambda m: int(round(m / STEP))
    n = i(2.5 + 18.0 + 1.1 + 15.7)
    evidence = np.full(n, 0.5)
    gap = i(2.5 + 18.0 + 0.55)
    evidence[gap - 1:gap + 2] = [6.0, 12.0, 6.0]
    with_lead = R._best_cuts(evidence, STEP, lead_m=2.5)
    assert with_lead == [pytest.approx(gap, abs=1)]
    # Without the allowance the first car is too long for any pitch and is cut again.
    assert R._best_cuts(evidence, STEP) != with_lead
