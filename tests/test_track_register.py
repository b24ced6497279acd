"""Registering track centrelines to the image (changedet.objects.track_register, issue 6).

Synthetic yards are drawn here from the track's real cross-section (ballast bed 3.6 m,
sleepers 2.7 m, rails 1.52 m apart, car bodies 3 m wide) with cars' shadows cast to the
anti-sun side, area-averaged onto the pixels; the centrelines handed in are moved by a
known shift, which the estimate must recover (its cross-track part where all tracks are
parallel), and leave at zero where there is nothing to read.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import LineString

from changedet.grid import GridSpec
from changedet.objects import track_register as tr
from changedet.objects.track_register import estimate_track_shift, shift_tracks


def _yard(res, *, angles_deg=(30.0,), n_tracks=3, sun_az=200.0, sun_el=40.0, cars=True, flat=False,
          seed=0, length=160.0):
    """A yard of parallel track groups (one per angle) crossing at the origin region.

    Returns (pix (band, row, col), grid, true centrelines by id)."""
    rng = np.random.default_rng(seed)
    k = 4
    fres = res / k
    half = 110.0
    grid = GridSpec.from_bounds("EPSG:32637", (500000 - half, 6000000 - half, 500000 + half, 6000000 + half), res)
    rows, cols = grid.shape[0] * k, grid.shape[1] * k
    fx = grid.transform.c + (np.arange(cols) + 0.5) * fres
    fy = grid.transform.f - (np.arange(rows) + 0.5) * fres
    X, Y = np.meshgrid(fx - 500000, fy - 6000000)
    alb = 0.12 * (1 + 0.08 * rng.standard_normal((rows, cols)))
    shade = np.ones((rows, cols))
    sun = np.array([math.sin(math.radians(sun_az)), math.cos(math.radians(sun_az))])
    lines = {}
    for g, ang in enumerate(angles_deg):
        a = math.radians(ang)
        t = np.array([math.cos(a), math.sin(a)])
        nrm = np.array([-t[1], t[0]])
        # groups of different angles sit apart (u range split) so they do not overlap
        u0 = -length / 2 if len(angles_deg) == 1 else (-length / 2 if g == 0 else 5.0)
        u1 = length / 2 if len(angles_deg) == 1 else (-5.0 if g == 0 else length / 2)
        U = X * t[0] + Y * t[1]
        V = X * nrm[0] + Y * nrm[1]
        sun_across = float(sun @ nrm)
        per_m = abs(sun_across) / math.tan(math.radians(sun_el))
        for i in range(n_tracks):
            vt = (i - (n_tracks - 1) / 2) * 5.0
            dv = V - vt
            on = (U > u0) & (U < u1)
            if not flat:
                bed = on & (np.abs(dv) < 1.8)
                alb[bed] = 0.17 * (1 + 0.06 * rng.standard_normal(bed.sum()))
                sl = bed & (np.abs(dv) < 1.35) & ((U % 0.55) < 0.26)
                alb[sl] = 0.26
                for rv in (-0.795, 0.795):
                    alb[on & (np.abs(dv - rv) < 0.04)] = 0.35
            if cars and not flat:
                u = u0 + 3.0
                while u + 14.0 < u1 - 3.0:
                    if rng.random() < 0.6:
                        body = (U > u) & (U < u + 14.0) & (np.abs(dv) < 1.5)
                        alb[body] = rng.uniform(0.08, 0.4)
                        h = rng.uniform(1.6, 4.5)
                        # the shadow on the ground beyond the anti-sun edge
                        side = -np.sign(sun_across) if abs(sun_across) >= 0.2 else 0.0
                        if side:
                            sh = (U > u) & (U < u + 14.0) & (side * dv > 1.5) & (side * dv < 1.5 + h * per_m)
                            shade[sh & ~body] = 0.3
                    u += 15.0
            lines[f"G{g}T{i}"] = LineString([tuple((u0 + 1.0) * t + vt * nrm + [500000, 6000000]),
                                              tuple((u1 - 1.0) * t + vt * nrm + [500000, 6000000])])
    fine = alb * shade
    img = fine.reshape(rows // k, k, cols // k, k).mean(axis=(1, 3))
    img = ndimage.gaussian_filter(img, 0.5)
    pix = np.stack([img * f for f in (0.9, 1.0, 1.05, 1.6)])
    pix = pix * (1 + 0.01 * rng.standard_normal(pix.shape)) + 0.002 * rng.standard_normal(pix.shape)
    return np.clip(pix, 1e-4, None).astype("float32"), grid, lines


def _cross(d, line):
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    L = math.hypot(x1 - x0, y1 - y0)
    return d[0] * -(y1 - y0) / L + d[1] * (x1 - x0) / L


def _first_normal(true) -> np.ndarray:
    """Unit normal (x, y; left of its direction) of the first straight track."""
    line = next(iter(true.values()))
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    L = math.hypot(x1 - x0, y1 - y0)
    return np.array([-(y1 - y0) / L, (x1 - x0) / L])


@pytest.mark.parametrize("res", [0.5, 1.0])
@pytest.mark.parametrize("shift", [(0.9, -0.4), (-0.6, 1.1)])
def test_known_shift_recovered_on_parallel_tracks(res, shift):
    pix, grid, true = _yard(res, seed=1)
    given = shift_tracks(true, *shift)
    est = estimate_track_shift(pix, grid, given, sun_azimuth_deg=200.0)
    assert est.applied, est.reason
    line = next(iter(true.values()))
    # registered = given + d, so d undoes the shift across the tracks ...
    # (a third of a pixel: dark cars on light ballast pull it by up to 0.3 px towards
    # their shadows in these yards; altgen tuning scenes: 80th percentile 0.19 m at 1 m)
    assert abs(_cross((est.dx_m, est.dy_m), line) + _cross(shift, line)) < 0.35 * res
    # ... and reads nothing along them (parallel tracks say nothing about it)
    along = np.array(line.coords[-1]) - np.array(line.coords[0])
    along /= np.linalg.norm(along)
    assert abs(est.dx_m * along[0] + est.dy_m * along[1]) < 1e-6


def test_both_components_recovered_where_tracks_cross_at_an_angle():
    pix, grid, true = _yard(0.75, angles_deg=(10.0, 80.0), seed=2)
    shift = (0.7, -0.8)
    est = estimate_track_shift(pix, grid, shift_tracks(true, *shift), sun_azimuth_deg=150.0)
    assert est.applied, est.reason
    assert math.hypot(est.dx_m + shift[0], est.dy_m + shift[1]) < 0.2


def test_unshifted_scene_gets_no_shift():
    for res, seed in ((0.3, 3), (1.0, 4)):
        pix, grid, true = _yard(res, seed=seed)
        est = estimate_track_shift(pix, grid, true, sun_azimuth_deg=200.0)
        assert math.hypot(est.dx_m, est.dy_m) < 0.35 * res


@pytest.mark.parametrize("sun_el", [20.0, 35.0])
def test_shadows_do_not_bias_it(sun_el, monkeypatch):
    # Sun straight across the tracks: every car casts its shadow on one side.
    pix, grid, true = _yard(0.5, sun_az=120.0, sun_el=sun_el, seed=5)
    est = estimate_track_shift(pix, grid, true, sun_azimuth_deg=120.0)
    assert math.hypot(est.dx_m, est.dy_m) < 0.05
    # The same cost with the shadow side weighed in full is pulled off the centre (by
    # 0.09-0.13 m here): the test reads the bias it guards against.
    monkeypatch.setattr(tr, "_SHADOW_SIDE_WEIGHT", 1.0)
    biased = estimate_track_shift(pix, grid, true, sun_azimuth_deg=120.0)
    assert math.hypot(biased.dx_m, biased.dy_m) > math.hypot(est.dx_m, est.dy_m) + 0.05


def test_refused_on_weak_evidence():
    # Tracks drawn over ground with no bed, rails or cars: nothing to read.
    pix, grid, true = _yard(1.0, flat=True, seed=6)
    est = estimate_track_shift(pix, grid, shift_tracks(true, 0.5, 0.5), sun_azimuth_deg=200.0)
    assert not est.applied and (est.dx_m, est.dy_m) == (0.0, 0.0)
    assert est.reason
    # Too little track to read at all.
    short = {"a": LineString([(500000.0, 6000000.0), (500010.0, 6000000.0)])}
    est = estimate_track_shift(pix, grid, short)
    assert not est.applied and "windows" in est.reason


def test_shift_beyond_the_cap_is_refused():
    # Two tracks 5 m apart: the search stops at 0.45 x 5 = 2.25 m; a 2.6 m shift is beyond
    # it, while 1.2 m is found.
    pix, grid, true = _yard(0.5, n_tracks=2, seed=7)
    n = _first_normal(true)
    near = estimate_track_shift(pix, grid, shift_tracks(true, *(-1.2 * n)), sun_azimuth_deg=200.0, max_shift_m=3.0)
    assert near.applied and abs(float(np.dot([near.dx_m, near.dy_m], n)) - 1.2) < 0.15
    far = estimate_track_shift(pix, grid, shift_tracks(true, *(-2.6 * n)), sun_azimuth_deg=200.0, max_shift_m=3.0)
    assert not far.applied and (far.dx_m, far.dy_m) == (0.0, 0.0)
    pix, grid, true = _yard(0.5, n_tracks=1, seed=7)
    n = _first_normal(true)
    far = shift_tracks(true, *(3.6 * n))
    est = estimate_track_shift(pix, grid, far, sun_azimuth_deg=200.0, max_shift_m=3.0)
    assert not est.applied and (est.dx_m, est.dy_m) == (0.0, 0.0)


@pytest.mark.slow
def test_counter_registers_and_reports_in_the_aoi_frame():
    from changedet.objects.railcars import count_railcars
    from tests.altgen.railyard import make_railyard, score

    scene = make_railyard(7, gsd_m=1.0, condition="clear")
    mdx, mdy = scene.params["misregistration_xy_m"]
    res = count_railcars(scene.image, scene.tracks, valid=scene.valid, sun_azimuth_deg=scene.sun_azimuth_deg,
                         sun_elevation_deg=scene.sun_elevation_deg)
    line = next(iter(scene.tracks.values()))
    shifts = {tuple(p["registration_shift_m"]) for p in res.per_feature}
    assert len(shifts) == 1
    d = shifts.pop()
    assert abs(_cross(d, line) + _cross((mdx, mdy), line)) < 0.3
    # Detections lie on the centrelines as given (the AOI's frame, where the scorer
    # puts the truth), not on the moved ones.
    assert score(scene, res)["tp"] > 0
    for det in res.detections:
        c = det.polygon.centroid
        assert scene.tracks[det.feature_id].distance(c) < 0.05


def test_tracks_that_disagree_on_the_shift_are_not_moved():
    # Each centreline off by its own amount (mapped one by one): no one shift fits them.
    pix, grid, true = _yard(0.5, seed=8)
    n = _first_normal(true)
    given = {tid: shift_tracks({tid: ln}, *(o * n))[tid] for (tid, ln), o in zip(true.items(), (1.2, -1.2, 0.0))}
    est = estimate_track_shift(pix, grid, given, sun_azimuth_deg=200.0)
    assert not est.applied and "disagree" in est.reason, est


def test_a_shift_under_a_fraction_of_a_pixel_is_not_applied():
    pix, grid, true = _yard(1.0, cars=False, seed=9)
    est = estimate_track_shift(pix, grid, true, sun_azimuth_deg=200.0)
    assert math.hypot(est.dx_m, est.dy_m) == 0.0 and "pixel" in est.reason, est


def test_a_lone_track_is_not_moved():
    # One track cannot be checked against another: a platform or road flush along one
    # side of it would read as a shift (review R3: 0.2-0.6 m on an unshifted scene).
    pix, grid, true = _yard(0.5, n_tracks=1, seed=3)
    n = _first_normal(true)
    est = estimate_track_shift(pix, grid, shift_tracks(true, *(-1.0 * n)), sun_azimuth_deg=200.0)
    assert not est.applied and (est.dx_m, est.dy_m) == (0.0, 0.0) and "one readable track" in est.reason


@pytest.mark.parametrize("order", ["crossover first", "crossover last"])
def test_spacing_comes_from_tracks_side_by_side_not_from_crossovers(order):
    from shapely.geometry import LineString

    from changedet.objects.track_register import _closest_spacing

    a = LineString([(0, 0), (400, 0)])
    b = LineString([(0, 5), (120, 5)])                 # a short neighbour 5 m away
    cross = LineString([(150, 0), (190, 5)])          # a crossover between them
    square = LineString([(300, -50), (300, 50)])     # a track crossing at right angles
    lines = [cross, square, a, b] if order == "crossover first" else [a, b, square, cross]
    assert _closest_spacing(lines) == pytest.approx(5.0, abs=1e-6)
    assert _closest_spacing([a, square]) == math.inf
