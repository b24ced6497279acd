"""Railcars, session 39 (issue 6): the uniform bed is learnt where no shadow colour is.

With the sun along the tracks no car shades the ground beside its track, so the shadowed
ground's colour is learnt from no side band (``refs["shadow"]`` NaN; see
:func:`railcars._shadow_from_anti_sun_sides`). That is the very case the uniform-bed test
(:func:`railcars._uniform_bed`) is for, yet it refused to learn a bed without a shadow
colour, which it needs only for the bed in shade. A concrete-sleepered empty track under a
low sun along the yard then read as pale cars end to end (altgen low sun, 0.75 m, tuning
index 152: 15 false cars on one empty track). The lit bed is now learnt without it (the bed
in shade is NaN, unknown). The unit cases (a uniform bed learnt, a string of cars or a dark
uniform stretch not taken for one, each with and without a shadow colour) are parametrised in
test_railcar_uniform_bed_s37.py; this file keeps the scene.
"""

from __future__ import annotations

from changedet.objects import railcars as R


def test_an_empty_concrete_track_under_a_low_sun_along_the_yard_holds_no_cars():
    # The altgen tuning scene (low sun, 0.75 m, index 152, seed 7460): the sun 1 degree
    # off the tracks' axis, 21 degrees up, so no side band of any track is shaded and no
    # shadow colour is learnt. Its empty concrete-sleepered track T3 read as 15 cars end
    # to end; the busy tracks beside it keep their cars.
    from tests.altgen.railyard import make_railyard

    sc = make_railyard(7460, gsd_m=0.75, condition="low_sun")
    res = R.count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                           sun_elevation_deg=sc.sun_elevation_deg)
    est = {p["id"]: p["count"] for p in res.per_feature}
    truth = {t: sum(1 for c in sc.cars if c.track_id == t) for t in sc.tracks}
    assert truth["T3"] == 0 and truth["T2"] == 0
    assert est["T3"] <= 1 and est["T2"] <= 1
    for tid in ("T1", "T4", "T5", "T6"):
        assert abs(est[tid] - truth[tid]) <= 3
