"""Locomotives cut at their roof equipment (session 24, issue 6: locomotive types).

A locomotive's roof carries radiator fans, exhausts and a cab: dark patches down the
middle of the roof, each about as long as a coupler gap. The splitter read a patch like
that as a gap between two cars and cut the body there (independent generator, tuning
0-15: locomotive bodies read a median 0.45 m short, a quarter by 2 m or more, mostly at
the fan end), so the body was typed by its shorter piece and the rest went to the next
car. A coupler gap opens across the whole body, so the body's shoulders change with its
middle; roof equipment leaves them as they are.

Synthetic strips with known answers (no generator), sampled across as the counter
samples a track (:func:`changedet.objects.strips.sample_strip`: from -2.6 m at the
sample step).
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

LIT = np.array([0.12, 0.13, 0.14, 0.16])          # sunlit ballast, B G R NIR
SHADOW = LIT * np.array([0.32, 0.27, 0.24, 0.22])  # the same ballast lit by the sky only
REFS = {"lit": LIT, "lit_sd": np.maximum(0.004 + 0.03 * LIT, 0.0075), "shadow": SHADOW,
        "shadow_sd": 0.003 + 0.03 * SHADOW}
ROOF = np.array([0.27, 0.28, 0.29, 0.31])          # a light grey roof
FAN = np.array([0.03, 0.03, 0.03, 0.04])           # a black radiator fan grille


def _strip(values: np.ndarray, step: float) -> Strip:
    nb, na, nl = values.shape
    across = np.arange(-2.6, 2.6 + 1e-9, step)[:na]
    along = np.arange(nl) * step
    x, y = np.meshgrid(along, across)
    return Strip(values.astype("float32"), along, across, x, y, step)


def _scene(step: float, bodies: list[tuple[float, float]], fans: list[float], fan_r: float = 0.7,
           seed: int = 0) -> np.ndarray:
    """Lit ballast with roofs over ``bodies`` ((start, end) m) and black discs of radius
    ``fan_r`` (m) centred on the track at ``fans`` (m along)."""
    rng = np.random.default_rng(seed)
    across = np.arange(-2.6, 2.6 + 1e-9, step)
    n = int(round(60.0 / step))
    along = np.arange(n) * step
    vals = LIT[:, None, None] * (1 + 0.05 * rng.standard_normal((1, across.size, n)))
    vals = vals + 0.002 * rng.standard_normal((4, across.size, n))
    body_rows = np.abs(across) <= 1.6
    for a, b in bodies:
        cols = (along >= a) & (along < b)
        tex = 1 + 0.02 * rng.standard_normal((1, int(body_rows.sum()), int(cols.sum())))
        vals[:, np.ix_(body_rows, cols)[0], np.ix_(body_rows, cols)[1]] = ROOF[:, None, None] * tex
    for f in fans:
        disc = np.hypot(along[None, :] - f, across[:, None]) <= fan_r
        vals[:, disc] = FAN[:, None]
    return vals


def _cars(vals: np.ndarray, step: float, bodies: list[tuple[float, float]]) -> list:
    # Occupancy as read over a consist (coupler gaps too short to break the run): the
    # splitter alone is under test.
    strip = _strip(vals, step)
    occ = (strip.along_m >= bodies[0][0]) & (strip.along_m < bodies[-1][1])
    return R._split_cars(strip, occ, np.ones_like(occ), REFS["lit_sd"], REFS["lit"])


@pytest.mark.parametrize("step", [0.3, 0.5])
def test_a_locomotive_is_not_cut_at_its_roof_fans(step):
    # Two 16 m sections (2TE10) coupled back to back with a 1 m gap, fans in the rear
    # half of each, the last 3.9 m from the end: cut at the coupler gap only.
    a0, a1 = 5.0, 21.0
    b0, b1 = 22.0, 38.0
    fans = [a0 + 8.8, a0 + 10.5, a0 + 12.1, b1 - 8.8, b1 - 10.5, b1 - 12.1]
    cars = _cars(_scene(step, [(a0, a1), (b0, b1)], fans), step, [(a0, a1), (b0, b1)])
    assert len(cars) == 2
    (s0, e0, _, _), (s1, e1, _, _) = cars
    # Each body read to within a metre of its ends: the cut lies in the coupler gap.
    assert abs(s0 - a0) <= 1.0 and abs(e0 - a1) <= 1.0
    assert abs(s1 - b0) <= 1.0 and abs(e1 - b1) <= 1.0
    assert e0 - s0 >= 15.0 and e1 - s1 >= 15.0


@pytest.mark.parametrize("step", [0.3, 0.5])
def test_coupler_gaps_across_the_whole_body_are_still_cut(step):
    # Three 13.9 m cars (open wagons' length) with 1 m gaps: the gap opens across the
    # whole body, shoulders included, and is cut whatever the roof carries.
    bodies = [(4.0, 17.9), (18.9, 32.8), (33.8, 47.7)]
    cars = _cars(_scene(step, bodies, [11.0, 25.8, 40.8], fan_r=0.4), step, bodies)
    assert len(cars) == 3
    for (s, e, _, _), (a, b) in zip(cars, bodies):
        assert abs(s - a) <= 1.0 and abs(e - b) <= 1.0


def test_gap_evidence_needs_the_shoulders_to_change():
    # The same dark band, 1.2 m long, across the middle metre only (a fan) and across
    # the whole body (a coupler gap in shadow): only the second is evidence of a gap.
    step = 0.3
    across = np.arange(-2.6, 2.6 + 1e-9, step)
    n = 100
    vals = np.broadcast_to(ROOF[:, None, None], (4, across.size, n)).copy()
    vals[:, np.abs(across) > 1.6] = LIT[:, None, None]
    fan, gap = vals.copy(), vals.copy()
    band = slice(45, 49)
    fan[:, np.abs(across) <= 0.7, band] = FAN[:, None, None]
    gap[:, np.abs(across) <= 1.6, band] = SHADOW[:, None, None]
    strip_fan, strip_gap = _strip(fan, step), _strip(gap, step)
    centre, side = R._zones(strip_fan)
    for s in (strip_fan, strip_gap):
        assert np.nanmax(R._gap_evidence(np.nanmean(s.values[:, centre], axis=1),
                                         np.nanmean(s.values[:, side], axis=1), step)) > 0.2
    shoulders = (np.abs(across) > 1.0) & (np.abs(across) <= R._SHOULDER_M)
    assert shoulders.any()
    ev_fan = R._gap_evidence(np.nanmean(strip_fan.values[:, shoulders], axis=1),
                             np.nanmean(strip_fan.values[:, side], axis=1), step)
    ev_gap = R._gap_evidence(np.nanmean(strip_gap.values[:, shoulders], axis=1),
                             np.nanmean(strip_gap.values[:, side], axis=1), step)
    assert np.nanmax(ev_fan) < 0.01 < 0.2 < np.nanmax(ev_gap)



@pytest.mark.parametrize("step", [0.3, 0.5])
def test_a_gap_blurred_on_the_shoulders_is_still_cut(step):
    # Lengths with no common pitch (13.9, 16.4, 12.1 m), so the length prior alone cannot
    # place the cuts; in each 1 m gap the middle shows the shadowed ground while the
    # shoulder rows, which mix the body's edge and the ground beside it, change by only
    # 45 % as much: still a gap (the veto asks for _GAP_SHOULDER_SHARE of the middle's).
    bodies = [(4.0, 17.9), (18.9, 35.3), (36.3, 48.4)]
    vals = _scene(step, bodies, [])
    across = np.arange(-2.6, 2.6 + 1e-9, step)
    along = np.arange(vals.shape[2]) * step
    middle = np.abs(across) <= 1.0
    shoulder = (np.abs(across) > 1.0) & (np.abs(across) <= 1.6)
    for (_, b), (a, _) in zip(bodies[:-1], bodies[1:]):
        cols = (along >= b) & (along < a)
        vals[:, np.ix_(middle, cols)[0], np.ix_(middle, cols)[1]] = SHADOW[:, None, None]
        vals[:, np.ix_(shoulder, cols)[0], np.ix_(shoulder, cols)[1]] = (ROOF + 0.45 * (SHADOW - ROOF))[:, None, None]
    cars = _cars(vals, step, bodies)
    assert len(cars) == 3
    for (s, e, _, _), (a, b) in zip(cars, bodies):
        assert abs(s - a) <= 0.6 and abs(e - b) <= 0.6
