"""Session 43 (issue 6, railcars at 1 m read too few): a lone container read on a flat
wagon whose bare deck is within the ballast's colour at 1 m pixels is a car.

At 1 m a 13-9004 container wagon's 2.87 m deck, 1.3 m up, blurs into the ballast either
side and only its 6.06 m (20 ft) container is read: a run of 5-7 m, which the splitter
dropped as shorter than any car (altgen tuning 40-43 and 130-133 at 1 m: 152 of 271
missed cars were never occupied, 87 of them flat and container wagons; 36 of the 152,
of all types, showed only a piece of 4-7 m).
"""

import numpy as np
import pytest

import changedet.objects.railcars as R
from changedet.objects.strips import Strip

STEP = 0.5


def _strip(n: int = 120, load=(27.0, 33.0)) -> Strip:
    """A strip (0.5 m along, 0.25 m across) of ballast with one 2.44 m wide container
    top from ``load[0]`` to ``load[1]`` (m along) and its shadow on the anti-sun side."""
    a = np.arange(-2.5, 2.51, 0.25)
    v = np.full((4, a.size, n), 0.15, "float32")
    along = np.arange(n) * STEP
    on = (along >= load[0]) & (along < load[1])
    v[:, :, on] = np.where((np.abs(a) <= 1.22)[None, :, None], 0.5, 0.15)
    # Its shadow on the anti-sun side (negative across; sun 55 degrees up, across the
    # track: 0.7 m sideways per metre of height, 3.7 m high): the evidence it stands up
    # (session 43, ONEM2: see test_railcar_lone_load_shadow_s43.py).
    v[:, (a < -1.22) & (a >= -1.22 - 3.7 * 0.7), :] = np.where(on, 0.06, 0.15)[None, None, :]
    xs = np.broadcast_to(along, (a.size, n)).copy()
    ys = np.broadcast_to(a[:, None], (a.size, n)).copy()
    return Strip(v, along, a, xs, ys, STEP)


def _occ(n=120, runs_m=((27.0, 33.0),)):
    along = np.arange(n) * STEP
    occ = np.zeros(n, bool)
    for a, b in runs_m:
        occ |= (along >= a) & (along < b)
    return occ


def _cars(strip, occ, res):
    seen = np.ones(occ.size, bool)
    return R._split_cars(strip, occ, seen, np.full(4, 0.02), np.full(4, 0.15), resolution_m=res,
                         sun_left=True, shadow_across_m=0.7)


def test_a_lone_container_at_1m_is_a_wagon_centred_on_it():
    cars = _cars(_strip(), _occ(), 1.0)
    assert len(cars) == 1
    a_m, b_m, ctype = cars[0][:3]
    assert ctype == "flatcar"
    assert b_m - a_m == pytest.approx(R.CAR_LENGTHS_M["flatcar"], abs=0.01)
    assert 0.5 * (a_m + b_m) == pytest.approx(30.0, abs=0.5)


def test_not_at_pixels_where_the_deck_is_read():
    # At 0.75 m or finer the bare deck shows its edges and shadow: a lone 6 m run is
    # something else and stays dropped, as before.
    for res in (0.3, 0.5, 0.75):
        assert _cars(_strip(), _occ(), res) == []


def test_no_wagon_where_its_neighbours_leave_no_room():
    # Runs a car long 1.5 m either side of the piece: no 10.5 m body fits between them,
    # the piece is their ends' or nothing's.
    occ = _occ(runs_m=((10.0, 25.5), (27.0, 33.0), (34.5, 50.0)))
    assert R._lone_load(R.runs(occ), 1, np.ones(occ.size, bool), STEP, False) is None
    # Runs shorter than a container or as long as a car are not lone loads.
    for run in ((27.0, 31.5), (27.0, 34.5)):
        occ = _occ(runs_m=(run,))
        assert R._lone_load(R.runs(occ), 0, np.ones(occ.size, bool), STEP, False) is None
    # Nor a run cut by an unobserved stretch (its length is not the load's).
    occ = _occ()
    assert R._lone_load(R.runs(occ), 0, np.ones(occ.size, bool), STEP, True) is None


def test_no_wagon_over_an_unobserved_stretch():
    occ = _occ()
    seen = np.ones(occ.size, bool)
    seen[70:80] = False     # 35-40 m hidden: the wagon's room is not all observed
    assert R._lone_load(R.runs(occ), 0, seen, STEP, False) is None
