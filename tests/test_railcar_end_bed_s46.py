"""Railcars, session 46 (RFALSE): a bed seen at the ends of two tracks is the yard's bed.

Where no bed is learnt (a high sun leaves no flat deck's shadow beside the track to tell
the bed from a deck, or pixels coarser than ``_BED_MAX_RES_M``), a track bed darker than
the ground beside it (wooden sleepers, fouled ballast, a bed cleared of snow) read as dark
cars wherever the track was empty: at its ends and between cuts of cars (altgen tuning
204-207: 49 of 50 false cars on occupied tracks lay on tracks with no learnt bed; in two
snow yards under a 52-58 degree sun, 14 of them had one colour at the ends of every
track). A yard track's ends are where it is most often empty, and a yard's tracks are
laid alike: a piece at a track's end whose anti-sun ground is lit, matched in colour by
such a piece at another track's end, shows the bed, and every piece of that colour with
its anti-sun ground lit is dropped (:func:`railcars._end_bed_pieces`).
"""

from __future__ import annotations

import numpy as np

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)
N = 300  # 150 m
GROUND = np.array([0.14, 0.15, 0.16, 0.20])
BED = 0.42 * GROUND  # a wooden-sleepered bed, or one cleared of snow
RED = np.array([0.10, 0.05, 0.04, 0.12])  # a box car's paint, darker than the ground
GREY = 0.25 * GROUND  # a dark grey car


def _strip(pieces, *, anti_shaded=(), seed: int = 0) -> Strip:
    """A 150 m track under a sun on its right (negative across): lit ground beside it,
    each (start_m, end_m, colour) of ``pieces`` over |across| <= 1.0 m; the anti-sun
    (left) band 1.95-2.6 m in shadow (0.3 of the light) over each (start_m, end_m) of
    ``anti_shaded``; 2 % noise."""
    rng = np.random.default_rng(seed)
    along = np.arange(N) * STEP
    v = np.broadcast_to(GROUND[:, None, None], (4, ACROSS.size, N)).copy()
    inner = np.abs(ACROSS) <= 1.0
    for a, b, colour in pieces:
        on = (along >= a) & (along < b)
        v[:, inner[:, None] & on[None, :]] = np.asarray(colour)[:, None]
    for a, b in anti_shaded:
        on = (along >= a) & (along < b)
        v[:, (ACROSS >= 1.95)[:, None] & on[None, :]] *= 0.3
    v = (v * (1.0 + 0.02 * rng.standard_normal(v.shape))).astype("float32")
    x, y = np.meshgrid(along, ACROSS)
    return Strip(v, along, ACROSS, x, y, STEP)


def _cars(spans):
    return [(a, b, "boxcar", 1.0, "image") for a, b in spans]


# Bed at both ends (0-14 m, 136-150 m) and in a gap between two cuts (64-80 m); walled
# cars (box cars, their anti-sun band in their own shadow) between.
BED_SPANS = [(0.0, 14.0), (64.0, 80.0), (136.0, 150.0)]
CAR_SPANS = [(15.0, 30.0), (31.0, 46.0), (47.0, 63.0), (81.0, 96.0), (97.0, 112.0), (113.0, 135.0)]


def _yard_track(seed: int, car_colour=RED, shaded=True):
    pieces = [(a, b, BED) for a, b in BED_SPANS] + [(a, b, car_colour) for a, b in CAR_SPANS]
    spans = sorted(BED_SPANS + CAR_SPANS)
    strip = _strip(pieces, anti_shaded=CAR_SPANS if shaded else (), seed=seed)
    return strip, _cars(spans), spans


def _two_tracks(sun_left: bool) -> tuple[dict, set[int]]:
    """The pieces dropped on two yard tracks (red and grey cars) and the bed pieces' indices."""
    s1, c1, spans = _yard_track(1)
    s2, c2, _ = _yard_track(2, car_colour=GREY)
    bare = R._end_bed_pieces({"T1": s1, "T2": s2}, {"T1": c1, "T2": c2}, {"T1": sun_left, "T2": sun_left}, GROUND)
    return bare, {i for i, sp in enumerate(spans) if sp in BED_SPANS}


def test_a_bed_seen_at_two_tracks_ends_drops_its_pieces_and_keeps_the_cars():
    bare, beds = _two_tracks(sun_left=False)
    # Before: no such rule (the function did not exist); every bed piece was a car.
    assert bare == {"T1": beds, "T2": beds}


def test_the_two_ends_of_one_track_alone_do_not_show_the_bed():
    # A unit train of like cars may fill one track end to end: its two end cars match,
    # but no other track's end does (T2 ends in cars of another colour).
    s1, c1, _ = _yard_track(1)
    s2 = _strip([(0.0, 150.0, RED)], anti_shaded=[(0.0, 150.0)], seed=3)
    c2 = _cars([(0.0, 14.0), (15.0, 30.0), (136.0, 150.0)])
    bare = R._end_bed_pieces({"T1": s1, "T2": s2}, {"T1": c1, "T2": c2}, {"T1": False, "T2": False}, GROUND)
    assert bare == {}


def test_a_car_of_the_beds_colour_in_its_own_shadow_is_kept():
    # T2's cars are the bed's colour, but each shades its anti-sun band: a body stands
    # there. Only T2's (and T1's) bed pieces go.
    s1, c1, spans = _yard_track(1)
    s2, c2, _ = _yard_track(2, car_colour=BED, shaded=True)
    bare = R._end_bed_pieces({"T1": s1, "T2": s2}, {"T1": c1, "T2": c2}, {"T1": False, "T2": False}, GROUND)
    beds = {i for i, sp in enumerate(spans) if sp in BED_SPANS}
    assert bare == {"T1": beds, "T2": beds}


def test_end_pieces_with_their_anti_sun_ground_shaded_are_cars():
    # Dark cars at the ends of both tracks, each with its own shadow beside it: not bed.
    pieces = [(0.0, 14.0, GREY), (15.0, 30.0, RED), (136.0, 150.0, GREY)]
    shaded = [(0.0, 14.0), (15.0, 30.0), (136.0, 150.0)]
    strips = {t: _strip(pieces, anti_shaded=shaded, seed=k) for k, t in enumerate(("T1", "T2"))}
    cars = {t: _cars([(0.0, 14.0), (15.0, 30.0), (136.0, 150.0)]) for t in strips}
    assert R._end_bed_pieces(strips, cars, {"T1": False, "T2": False}, GROUND) == {}


def test_no_sun_side_or_a_learnt_bed_leaves_the_track_alone():
    s1, c1, _ = _yard_track(1)
    s2, c2, _ = _yard_track(2, car_colour=GREY)
    strips, cars = {"T1": s1, "T2": s2}, {"T1": c1, "T2": c2}
    assert R._end_bed_pieces(strips, cars, {"T1": None, "T2": None}, GROUND) == {}
    # T2 read by its own learnt bed: T1's ends alone do not show a yard bed.
    assert R._end_bed_pieces(strips, cars, {"T1": False, "T2": False}, GROUND, skip={"T2"}) == {}


def test_the_anti_sun_side_follows_the_sun():
    # The same yard with the sun on the left: the shaded band (left) is now the sun side,
    # the lit right band the anti-sun one, so the cars read as lit on their anti-sun side
    # and the bed's colour alone decides: bed pieces still go, cars of other colours stay.
    bare, beds = _two_tracks(sun_left=True)
    assert bare == {"T1": beds, "T2": beds}


def _yard(gsd: float, elevation: float, azimuth: float, seed: int = 4) -> dict[str, int]:
    """Three tracks running east 8 m apart on a dark bed (|across| <= 1.3 m, 0.42 of the
    ground: wooden sleepers), each with six box cars (15 m, 1.2 m gaps; red, black or
    pale grey; 4 m tall, their shadows 0.35 of the light on the north side) from 18 m
    to 114 m of its 146 m, empty at both ends (18 m and 32 m), under a sun at ``azimuth`` and
    ``elevation``, at ``gsd`` m pixels (drawn at 0.05 m, averaged, Gaussian PSF of 0.4 px,
    3 % noise). Returns the detections per track."""
    from shapely.geometry import LineString

    from tests.test_railcar_uniform_bed_gate_s37 import _to_image

    ground = np.array([0.20, 0.21, 0.22, 0.26])
    ss, w, h = 0.05, 150.0, 30.0
    f = int(round(gsd / ss))
    ys = (np.arange(int(h / ss)) + 0.5) * ss
    xs = (np.arange(int(w / ss)) + 0.5) * ss
    img = np.broadcast_to(ground[:, None, None], (4, ys.size, xs.size)).copy()
    reach = 4.0 / np.tan(np.radians(elevation))
    colours = [np.array([0.10, 0.05, 0.04, 0.12]), np.array([0.06, 0.06, 0.07, 0.09]), 1.3 * ground]
    tracks = {}
    for t, y0 in enumerate((7.0, 15.0, 23.0)):
        img[:, np.abs(ys - y0) <= 1.3, :] = (0.42 * ground)[:, None, None]
        x = 20.0
        for k in range(6):
            body = (xs >= x) & (xs < x + 15.0)
            north = (ys - y0 >= 1.5) & (ys - y0 <= 1.5 + reach)
            img[:, north[:, None] & body[None, :]] *= 0.35
            img[:, (np.abs(ys - y0) <= 1.5)[:, None] & body[None, :]] = colours[(k + t) % 3][:, None]
            x += 16.2
        tracks[f"T{t + 1}"] = LineString([(2.0, y0), (148.0, y0)])
    image = _to_image(img, f, w, h, gsd, seed)
    res = R.count_railcars(image, tracks, sun_azimuth_deg=azimuth, sun_elevation_deg=elevation)
    return {t: sum(1 for d in res.detections if d.feature_id == t) for t in tracks}


def test_a_dark_bed_at_every_tracks_ends_holds_no_cars_in_a_whole_count():
    # Under a 58 degree sun from the south-east no bed is learnt on these tracks, and
    # before this rule each read 9 cars: its six and three pieces of bare bed, one over
    # the 18 m empty at its west end and two over the 32 m at its east end. Now the bed
    # seen at the tracks' ends is dropped there.
    assert _yard(0.5, 58.0, 135.0) == {"T1": 6, "T2": 6, "T3": 6}

