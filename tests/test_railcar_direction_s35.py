"""A track's cars do not depend on the end its centreline was drawn from (issue 6).

An analyst draws a centreline from either end. The counter samples its strip from the
line's start (the along-track phase), on an across-track grid that is not symmetric
about the centreline (-2.6 to 2.4 m at 0.5 m), reads the left or right side as the sun's
from the line's direction and cuts runs into cars from one end: in session 34 a reversed
line gave other cars (altgen clear seed 3 at 0.3 m: 71 cars drawn forward, 69 reversed;
seed 2 at 0.5 m: 69 against 61). Each track is now read in a direction fixed by its
geometry (northwards: :func:`changedet.objects.railcars._reads_reversed`), and what is
measured along it (``unobserved_runs_m``) is given along the line as drawn.
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.railcars import count_railcars
from tests.altgen.railyard import make_railyard


def _reversed(tracks):
    return {tid: LineString(list(line.coords)[::-1]) for tid, line in tracks.items()}


def test_a_line_and_its_reverse_are_read_in_one_direction():
    # Every direction of a straight line, a bent one and a closed one.
    lines = [LineString([(0.0, 0.0), (np.cos(a), np.sin(a))]) for a in np.radians(np.arange(0.0, 360.0, 7.5))]
    lines += [LineString([(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)]),
              LineString([(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 0.0)])]
    for line in lines:
        back = LineString(list(line.coords)[::-1])

        def read(drawn):
            return drawn.reverse() if R._reads_reversed(drawn) else drawn

        assert list(read(line).coords) == list(read(back).coords)
        (x0, y0), (x1, y1) = read(line).coords[0], read(line).coords[-1]
        if not line.is_closed:
            # Northwards, or eastwards along an east-west line (as every rule was tuned).
            assert y1 > y0 or (y1 == y0 and x1 > x0)


def test_unobserved_stretches_are_given_along_the_line_as_drawn():
    assert R._along_drawn([(0.0, 10.2), (50.0, 60.3)], 100.0, False) == [[0.0, 10.2], [50.0, 60.3]]
    assert R._along_drawn([(0.0, 10.2), (50.0, 100.3)], 100.0, True) == [[0.0, 50.0], [89.8, 100.0]]


def _same_cars(a, b, gsd_m: float):
    """Every car of ``a`` in ``b`` (same track, same type, centre within a pixel), one to one."""
    left = list(b.detections)
    missing = []
    for d in a.detections:
        c = d.polygon.centroid
        hit = next((k for k, e in enumerate(left) if e.feature_id == d.feature_id and e.type == d.type
                    and e.polygon.centroid.distance(c) <= gsd_m), None)
        if hit is None:
            missing.append((d.feature_id, d.type, round(c.x, 1), round(c.y, 1)))
        else:
            left.pop(hit)
    return missing, [(e.feature_id, e.type) for e in left]


@pytest.mark.slow
@pytest.mark.parametrize("seed,gsd,condition", [(3, 0.3, "clear"), (2, 0.5, "clear"), (1, 0.75, "clear"),
                                                (4, 0.5, "hazy"), (1, 0.75, "partly_cloudy")])
def test_a_reversed_track_gives_the_same_cars(seed, gsd, condition):
    scene = make_railyard(seed, gsd_m=gsd, condition=condition)
    sun = {"sun_azimuth_deg": scene.sun_azimuth_deg, "sun_elevation_deg": scene.sun_elevation_deg}
    forward = count_railcars(scene.image, scene.tracks, valid=scene.valid, **sun)
    back = count_railcars(scene.image, _reversed(scene.tracks), valid=scene.valid, **sun)
    assert forward.total == back.total and dict(forward.by_type) == dict(back.by_type)
    assert _same_cars(forward, back, gsd) == ([], [])
    for p, q in zip(forward.per_feature, back.per_feature):
        assert p["id"] == q["id"] and p["count"] == q["count"] and p["by_type"] == q["by_type"]
        length = scene.tracks[p["id"]].length
        # The same stretches, measured from the other end.
        mirrored = [[length - b, length - a] for a, b in q["unobserved_runs_m"][::-1]]
        assert np.allclose(np.array(p["unobserved_runs_m"]).reshape(-1, 2), np.array(mirrored).reshape(-1, 2),
                           atol=0.15)


def test_detections_are_listed_along_the_drawn_line():
    # A track read the other way round gives its cars from the drawn line's start, in
    # order (review RRDIR M3: the order was untested).
    scene = make_railyard(1, gsd_m=0.75, condition="clear")
    sun = {"sun_azimuth_deg": scene.sun_azimuth_deg, "sun_elevation_deg": scene.sun_elevation_deg}
    for tracks in (scene.tracks, _reversed(scene.tracks)):
        res = count_railcars(scene.image, tracks, valid=scene.valid, **sun)
        for tid, line in tracks.items():
            s = [line.project(d.polygon.centroid) for d in res.detections if d.feature_id == tid]
            assert len(s) >= 2 and np.all(np.diff(s) > 0), (tid, s)


def test_cut_cars_met_from_both_sides_of_one_stretch_do_not_overlap():
    # Two pieces either side of a 5.5 m stretch, 9.5 m and 8.5 m seen, placed at a
    # boxcar's and a gondola's length into it (review RRDIR H1, Tumangang T2 read
    # northwest: they overlapped by 6.1 m): one car's worth of track, the longer seen kept.
    cars = [(100.0, 115.7, "boxcar", 0.93), (109.6, 123.5, "gondola", 0.89)]
    cut = [(False, True, 9.5), (True, False, 8.5)]
    assert R._without_overlapping_cut_cars(cars, cut) == cars[:1]
    assert R._without_overlapping_cut_cars(cars, [(False, True, 8.0), (True, False, 8.5)]) == cars[1:]
    # Room for both with a coupler gap, or not met across a stretch: both kept.
    apart = [(100.0, 115.7, "boxcar", 0.93), (116.8, 130.7, "gondola", 0.89)]
    assert R._without_overlapping_cut_cars(apart, cut) == apart
    assert R._without_overlapping_cut_cars(cars, [(False, False, 15.7), (False, False, 13.9)]) == cars


@pytest.mark.slow
def test_radar_counts_do_not_depend_on_the_drawing():
    # SAR tuning scene 2 (bench_altgen_sar_rail.py): 0.0 cars drawn forward, 4.3 reversed
    # before the radar path was read in the same direction (review RRDIR M2).
    from tests.altgen.railyard_sar import make_sar_railyard

    sc = make_sar_railyard(9002, db=False, psi_deg=None)
    a = count_railcars(sc.image, sc.tracks, valid=None)
    b = count_railcars(sc.image, _reversed(sc.tracks), valid=None)
    assert a.total == b.total and a.uncertainty == b.uncertainty
    assert [(p["id"], p["count"]) for p in a.per_feature] == [(p["id"], p["count"]) for p in b.per_feature]
