"""Only the open ground beside a zone confirms a cloud's shadow over it (issue 6, session 27 review).

Session 27 confirms the windows with no sunlit surface over a zone (dark paint with little
NIR, a low sun filling the lanes with the stacks' own shadows) on open ground that no stack
can shade: in a cloud's shadow it is dimmed and bluer, lit by the sky alone. But a container
terminal is built on a quay, and harbour water is dim and bluish as well (red 0.04, NIR
0.015 against a blue of 0.07); so is a shed's shadow or a blue-grey pavement. Ground of
that kind 30 m from a sunlit zone made it read as in a cloud's shadow (-75 % where the base
counted -52 %, -71 % where it counted +15 %). A cloud's shadow, hundreds of metres across,
that covers the blocks covers the ground right beside them too: only that ground confirms.
The scene is the session-27 test's (beam plus Rayleigh sky, sun due south at 25 degrees,
a far cloud in the mask), with the harbour east of the zones.
"""

from __future__ import annotations

import numpy as np

from changedet.objects.containers import count_containers
from tests.test_containers_cloud_shade_s27 import BRIGHT, DARK_LOW_NIR, RES, SUN_AZ, _scene

# Harbour water reflectance (B, G, R, NIR), mildly turbid.
WATER = np.array([0.07, 0.07, 0.045, 0.015])
QUAY_X_M = 175.0            # the water east of this; the zones end at x = 147 m
SPEC = {"DARK": (60.0, 40.0, 7, 8, DARK_LOW_NIR, (3, 5), 1), "DARK2": (100.0, 40.0, 7, 8, DARK_LOW_NIR, (3, 5), 1),
        "CONC": (220.0, 40.0, 6, 8, BRIGHT, (2, 3), 1)}


def _with_harbour(image, valid):
    # Water carries no stack and no stack's shadow: in the sun its pixels are its reflectance.
    pix = np.array(image.values)
    xx = (np.arange(pix.shape[2]) + 0.5) * RES
    water = (xx >= QUAY_X_M)[None, :] & np.asarray(valid.values, bool)
    rng = np.random.default_rng(1)
    pix[:, water] = WATER[:, None] + rng.normal(0, 0.003, (4, int(water.sum())))
    return image.copy(data=pix.astype("float32"))


def test_harbour_water_beside_a_sunlit_dark_yard_does_not_confirm_a_cloud_shadow():
    image, valid, zones, truth = _scene(SPEC, 25.0)
    image = _with_harbour(image, valid)
    with_cloud = count_containers(image, zones, valid=valid, sun_azimuth_deg=SUN_AZ, sun_elevation_deg=25.0)
    without = count_containers(image, zones, sun_azimuth_deg=SUN_AZ, sun_elevation_deg=25.0)
    by = {pf["id"]: pf for pf in with_cloud.per_feature}
    ref = {pf["id"]: pf for pf in without.per_feature}
    print("\n" + ", ".join(f"{z}: {by[z]['count']} (shaded {by[z].get('shaded_fraction', 0.0)}) against "
                           f"{ref[z]['count']} without the cloud mask, truth {truth[z]}" for z in SPEC))
    for zid in SPEC:
        assert by[zid].get("shaded_fraction", 0.0) < 0.05
        assert by[zid]["count"] == ref[zid]["count"]
