"""Session 43 (issue 6, railcars at 1 m): a lone 5-7 m piece on a track is counted as a
container wagon only where something stands up on it, read from its shadow.

A 20 ft container on a flat wagon's deck tops out about 3.7 m above the ground and casts
its shadow 3.7 / tan(sun elevation) m (times the across-track share) sideways on the
anti-sun side. A patch of ground colour, an oil stain or another object's shadow lying on
the bed casts none. Without this test the lone-load rule added false cars on empty tracks
(altgen 1 m: 9 -> 13 on seeds 20-23 + 220-223; of the lone pieces on empty tracks at 1 m
none showed a darker anti-sun band than the same band beyond the piece's ends).
"""

import numpy as np

import changedet.objects.railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
PER_M = 0.7          # sideways shadow per metre of height (sun about 55 degrees up, across)
LOAD = (27.0, 33.0)  # the piece (m along)


def _strip(n: int = 120, shadow: str = "anti") -> Strip:
    """Ballast (0.15) 0.5 m along, 0.25 m across to +-2.75 m, a 2.44 m wide container top
    (0.5) over ``LOAD``, and a shadow (0.06): ``"anti"`` the container's own on the
    anti-sun side (negative across; the sun on the positive side), ``"across"`` a dark
    band across the whole bed (a mast's or cloud's shadow over the piece), ``"none"``."""
    a = np.arange(-2.75, 2.76, 0.25)
    v = np.full((4, a.size, n), 0.15, "float32")
    along = np.arange(n) * STEP
    on = (along >= LOAD[0]) & (along < LOAD[1])
    if shadow == "anti":
        reach = 1.22 + 3.7 * PER_M
        v[:, (a <= -1.22) & (a >= -reach), :] = np.where(on, 0.06, 0.15)[None, None, :]
    elif shadow == "across":
        # Not an exact tie: the anti-sun half 4 % darker than the sun half (0.0576 vs 0.06),
        # within the scatter of two equally shaded bands; only _LOAD_SIDE_MARGIN rejects it.
        v[:, :, on] = 0.06
        v[:, (a < 0)[:], :] = np.where(on, 0.0576, v[:, a < 0, :])
    v[:, :, on] = np.where((np.abs(a) <= 1.22)[None, :, None], 0.5, v[:, :, on])
    xs = np.broadcast_to(along, (a.size, n)).copy()
    ys = np.broadcast_to(a[:, None], (a.size, n)).copy()
    return Strip(v, along, a, xs, ys, STEP)


def _occ(n: int = 120) -> np.ndarray:
    along = np.arange(n) * STEP
    return (along >= LOAD[0]) & (along < LOAD[1])


def _cars(strip, occ, res=1.0, sun_left=True, per_m=PER_M):
    seen = np.ones(occ.size, bool)
    return R._split_cars(strip, occ, seen, np.full(4, 0.02), np.full(4, 0.15), resolution_m=res,
                         sun_left=sun_left, shadow_across_m=per_m)


def test_a_lone_load_casting_a_shadow_is_a_wagon():
    cars = _cars(_strip(shadow="anti"), _occ())
    assert len(cars) == 1
    a_m, b_m, ctype = cars[0][:3]
    assert ctype == "flatcar"
    assert abs(0.5 * (a_m + b_m) - 30.0) <= 0.5


def test_a_flat_patch_casting_no_shadow_is_not_a_car():
    # The same bright 6 m piece without a shadow beside it: ground colour, not a load.
    assert _cars(_strip(shadow="none"), _occ()) == []


def test_a_dark_band_across_the_whole_bed_is_not_a_load_shadow():
    # Both sides darkened alike (another object's shadow or a change of ground).
    assert _cars(_strip(shadow="across"), _occ()) == []


def test_the_across_band_is_rejected_by_the_side_margin_not_by_a_tie():
    # Without the margin (strict anti ratio < sun ratio) the 4 % darker anti half passes.
    st = _strip(shadow="across")
    a, b = int(LOAD[0] / STEP), int(LOAD[1] / STEP)
    assert not R._load_stands(st, a, b, _occ(), True, PER_M, 0.0, None)
    margin = R._LOAD_SIDE_MARGIN
    try:
        R._LOAD_SIDE_MARGIN = 1.0
        assert R._load_stands(st, a, b, _occ(), True, PER_M, 0.0, None)
    finally:
        R._LOAD_SIDE_MARGIN = margin


def test_no_wagon_at_pixels_coarser_than_a_metre():
    # Unmeasured there, and the anti-sun band is under one pixel (_LONE_LOAD_MAX_RES_M).
    assert _cars(_strip(shadow="anti"), _occ(), res=1.25) == []


def test_no_wagon_without_the_suns_side():
    # The sun along the track (or unknown): no side band to read, no evidence, no car.
    assert _cars(_strip(shadow="anti"), _occ(), sun_left=None) == []
    assert _cars(_strip(shadow="anti"), _occ(), per_m=float("nan")) == []


def test_load_stands_reads_the_anti_sun_side_only():
    st = _strip(shadow="anti")
    a, b = int(LOAD[0] / STEP), int(LOAD[1] / STEP)
    assert R._load_stands(st, a, b, _occ(), True, PER_M, 0.0, None)
    # Read with the sun on the other side, the shadow lies on the sun side: no load.
    assert not R._load_stands(st, a, b, _occ(), False, PER_M, 0.0, None)
