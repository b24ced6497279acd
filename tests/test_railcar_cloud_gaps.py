"""Railcars at the edge of an unobserved stretch (cloud, cloud shadow).

A car cut by the stretch is counted where its centre lies (so each car is counted once,
whichever side of the gap it sits on).
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)
LIT = np.array([0.12, 0.13, 0.14, 0.16])          # sunlit ballast, B G R NIR
PLAIN_ROOF = 0.11                                   # one painted sheet


def _i(m: float) -> int:
    return int(round(m / STEP))


def test_a_run_cut_by_a_gap_may_start_with_part_of_a_car():
    # 6 m of a car reaching out of the gap, a coupler, a 13.9 m gondola.
    n = _i(6.0 + 1.1 + 13.9)
    evidence = np.full(n, 0.5)
    cut = _i(6.0 + 0.55)
    evidence[cut - 1:cut + 2] = [6.0, 12.0, 6.0]
    assert R._best_cuts(evidence, STEP, open_start=True) == [pytest.approx(cut, abs=1)]
    # A run with two seen ends holds whole cars only: no 6 m car.
    assert all(abs(c - cut) > _i(3.0) for c in R._best_cuts(evidence, STEP))


def _gap_then_car(visible_m: float, n_along: int = 120, seed: int = 0):
    """Strip: an unobserved stretch over the first 20 m, then ``visible_m`` of a plain-roofed
    car, then empty lit ballast."""
    rng = np.random.default_rng(seed)
    vals = LIT[:, None, None] * (1 + 0.04 * rng.standard_normal((1, ACROSS.size, n_along)))
    vals = vals + 0.002 * rng.standard_normal(vals.shape)
    gap, end = _i(20.0), _i(20.0 + visible_m)
    body = np.abs(ACROSS) <= 1.6
    vals[:, body, gap:end] = PLAIN_ROOF * np.array([0.95, 1.0, 1.02, 1.1])[:, None, None]
    vals[:, :, :gap] = np.nan
    along = np.arange(n_along) * STEP
    x, y = np.meshgrid(along, ACROSS)
    strip = Strip(vals.astype("float32"), along, ACROSS, x, y, STEP)
    seen = np.arange(n_along) >= gap
    occ = seen & (np.arange(n_along) < end)
    return strip, occ, seen


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_a_car_cut_by_a_gap_counts_where_its_centre_is_seen():
    sd = LIT * 0.04
    # 7 m seen of a plain-roofed car: it may be a 15.7 m boxcar centred in the gap.
    strip, occ, seen = _gap_then_car(7.0)
    assert R._split_cars(strip, occ, seen, sd, LIT) == []
    # 11 m seen: its centre is seen whatever the car; its hidden end is placed at its length.
    strip, occ, seen = _gap_then_car(11.0)
    cars = R._split_cars(strip, occ, seen, sd, LIT)
    assert len(cars) == 1
    a_m, b_m, ctype, _ = cars[0]
    assert ctype == "boxcar"
    assert b_m == pytest.approx(20.0 + 11.0, abs=0.6)
    assert b_m - a_m == pytest.approx(R.CAR_LENGTHS_M["boxcar"], abs=0.01)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
@pytest.mark.parametrize("relief, length", [(None, 15.7), (0.3, 18.0)])
def test_a_long_car_split_by_a_narrow_stretch_is_not_counted_twice(relief, length):
    # A plain roof as long as a boxcar, or a top with relief as long as a locomotive
    # (the longest cars of those looks), with 1 m unobserved in its middle: each side
    # shows less than half of the longest car its look allows and the centre is hidden,
    # so neither side counts it (at most one side ever may).
    n_along = 160
    rng = np.random.default_rng(0)
    vals = LIT[:, None, None] * (1 + 0.04 * rng.standard_normal((1, ACROSS.size, n_along)))
    vals = vals + 0.002 * rng.standard_normal(vals.shape)
    body = np.abs(ACROSS) <= 1.6
    prof = np.ones(ACROSS.size) if relief is None else 1 + relief * (np.arange(ACROSS.size) % 2)
    mid = 20.0 + length / 2
    vals[:, body, _i(20.0):_i(20.0 + length)] = (PLAIN_ROOF * np.array([0.95, 1.0, 1.02, 1.1]))[:, None, None] \
        * prof[body][None, :, None]
    vals[:, :, _i(mid - 0.5):_i(mid + 0.5)] = np.nan
    seen = np.all(np.isfinite(vals[:, np.abs(ACROSS) <= 1.0, :]), axis=(0, 1))
    occ = seen & (np.arange(n_along) >= _i(20.0)) & (np.arange(n_along) < _i(20.0 + length))
    along = np.arange(n_along) * STEP
    x, y = np.meshgrid(along, ACROSS)
    strip = Strip(vals.astype("float32"), along, ACROSS, x, y, STEP)
    cars = R._split_cars(strip, occ, seen, LIT * 0.04, LIT)
    assert len(cars) <= 1, cars
