"""Session 38 (MSHADOW): the response bench for the medium-resolution optical railcar estimate.

``bench/bench_altgen_rail_medium_response.py`` renders a bench scene full, with every other
car wiped and with every car wiped, the generator's random stream unchanged, so an
estimate's response to the number of cars can be measured (issue 6, section 1; review RMED).
These tests check the harness itself (the yard stays the same yard, only cars change) and
state the landing criteria that today's estimate does not meet as strict xfails: when an
estimator that responds lands, they XPASS and must be turned into plain tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import shapely

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_altgen_rail_medium_response as resp  # noqa: E402

from changedet.grid import GridSpec  # noqa: E402
from changedet.objects.railcars import count_railcars  # noqa: E402
from tests.altgen.railyard import CONDITIONS  # noqa: E402

# A tuning index of the medium bench (0-47 may be used; 200-215 are held out) with
# four tracks and several strings of cars in clear weather.
_INDEX, _COND = 0, "clear"
_SEED = resp.SEED0 + 16 * _INDEX + CONDITIONS.index(_COND)


@pytest.fixture(scope="module")
def scenes():
    return {m: resp.render(_SEED, _COND, m) for m in ("full", "halved", "emptied")}


def test_halved_and_emptied_yards_are_the_same_yard(scenes):
    full, half, empty = scenes["full"], scenes["halved"], scenes["emptied"]
    # Same tracks, sun and sensor draws: the random stream was consumed as for the full scene.
    assert list(full.tracks) == list(half.tracks) == list(empty.tracks)
    for t in full.tracks:
        assert full.tracks[t].equals(half.tracks[t]) and full.tracks[t].equals(empty.tracks[t])
    assert full.sun_azimuth_deg == half.sun_azimuth_deg == empty.sun_azimuth_deg
    assert full.params == half.params == empty.params
    # Every other car is kept (drawing order); none in the emptied yard.
    assert len(empty.cars) == 0
    assert len(half.cars) == (len(full.cars) + 1) // 2
    kept = {(c.track_id, round(c.u0_m, 3)) for c in half.cars}
    assert kept == {(c.track_id, round(c.u0_m, 3)) for k, c in enumerate(full.cars) if k % 2 == 0}


def test_wiping_cars_changes_only_the_cars_and_their_shadows(scenes):
    full = np.asarray(scenes["full"].image.values, float)
    empty = np.asarray(scenes["emptied"].image.values, float)
    changed = np.abs(full - empty).max(axis=0) > 0.02
    assert changed.any()
    # Cars (about 3 m x 12-20 m) and their shadows cover a part of the yard; ground beyond
    # a shadow's reach from any track (more than 12 m from every track) is unchanged but for
    # the haze's adjacency blur and sensor noise.
    grid = GridSpec.of(scenes["full"].image)
    rows, cols = np.mgrid[0:grid.shape[0], 0:grid.shape[1]]
    t = grid.transform
    pts = shapely.points(t.c + (cols.ravel() + 0.5) * t.a, t.f + (rows.ravel() + 0.5) * t.e)
    dist = np.min([shapely.distance(pts, ln) for ln in scenes["full"].true_tracks.values()], axis=0)
    far = (dist > 12.0).reshape(grid.shape)
    assert far.any()
    assert changed[far].mean() < 0.01


def test_held_out_indices_are_refused():
    with pytest.raises(SystemExit):
        resp.main(["--first-seed", "198", "--seeds", "4", "--out", "/dev/null"])


@pytest.mark.xfail(strict=True, reason=(
    "issue 6 section 1, not met by today's estimate (session 38, MSHADOW): at 3 and 5 m the base reads "
    "about 0 on full yards (MAPE 0.93-0.99) and more on halved ones; the s37 departure estimate "
    "read x0.8-0.9 when half the cars were removed (review RMED). Landing criterion: a halved yard reads "
    "0.4-0.65 of the full one."))
@pytest.mark.parametrize("gsd", [3, 5])
def test_halved_yard_reads_about_half(scenes, gsd):
    est = {}
    for m in ("full", "halved"):
        sc = scenes[m]
        image, valid = resp.coarsen(sc, gsd)
        est[m] = count_railcars(image, sc.tracks, valid=valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                                sun_elevation_deg=sc.sun_elevation_deg).total
    assert est["full"] > 0.5 * len(scenes["full"].cars)
    assert 0.4 <= est["halved"] / est["full"] <= 0.65


@pytest.mark.parametrize("gsd", [3, 5, 10])
def test_emptied_yard_reads_few_cars(scenes, gsd):
    # Today's estimate reads about 0 everywhere, so it passes this one; kept as a gate for
    # the next estimator: an empty yard must read fewer than 5 cars per km of track (a
    # full track holds about 67 per km at a 15 m pitch).
    sc = scenes["emptied"]
    image, valid = resp.coarsen(sc, gsd)
    res = count_railcars(image, sc.tracks, valid=valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                         sun_elevation_deg=sc.sun_elevation_deg)
    km = sum(t.length for t in sc.tracks.values()) / 1000.0
    assert res.total / km < 5.0
