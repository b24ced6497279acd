"""Stack zones under the shadow of a cloud outside the frame (issue 6, session 44).

The counter finds a cloud's shadow by sliding the cloud mask away from the sun
(:func:`changedet.objects.cloud_shadow.cloud_shadow_mask`); the shadow of a cloud outside
the frame (or one the slide misses) was read as sunlit ground: the shadowed apron was
learnt as lit pavement, the stacks threw no readable shadow, and a whole zone counted a
fifth of its boxes at one or two tiers. A zone whose whole surround keeps under
``ZONE_SHADE_MAX_KEEP`` of the red and NIR of the brightest zone surround (a cloud's shadow
dims every surface, the brightest too; a stack's own shadow darkens only the anti-sun side)
is now read as under a cloud's shadow: footprints read, heights from the stacks in the sun.
"""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import box as sbox

from changedet.grid import GridSpec
from changedet.objects import containers as C
from tests.test_containers_cloud_shadow_s29 import (BAYS, EL, PAINTS, RES, ROWS, SKY, TIERS, block_zones,
                                                    render_blocks)

Y_SHADED, Y_LIT = 60.0, 140.0
HEIGHT, WIDTH = 220.0, 110.0
TOP, LEFT = 4600000.0, 500000.0


def _scene(seed=0, shadow=True):
    """Two blocks; the first under the shadow of a cloud outside the frame (sun due south:
    shadows fall north; the cloud that casts it lies south of the frame). A small cloud at
    the frame's north edge is flagged (``valid`` given), its shadow falls outside the frame."""
    pix, valid = render_blocks(
        (Y_SHADED, Y_LIT), HEIGHT, WIDTH, paints=PAINTS, sky=SKY, seed=seed,
        in_shadow=lambda yy, xx: (shadow & (yy >= Y_SHADED - 40.0) & (yy < Y_SHADED + 50.0)) | (xx < -1),
        cloud=lambda yy, xx: (yy < 12.0) & (xx >= 40.0) & (xx < 60.0))
    grid = GridSpec.from_bounds("EPSG:32633", (LEFT, TOP - HEIGHT, LEFT + WIDTH, TOP), RES)
    zones = block_zones({"shaded": Y_SHADED, "lit": Y_LIT}, TOP, LEFT)
    image = grid.attach(pix.astype("float32"), bands=["B", "G", "R", "NIR"])
    return image, grid.attach(valid), zones, grid


def _count(shadow=True):
    image, valid, zones, _ = _scene(shadow=shadow)
    res = C.count_containers(image, zones, valid=valid, sun_azimuth_deg=180.0, sun_elevation_deg=EL)
    return res, {pf["id"]: pf for pf in res.per_feature}


def test_zone_under_an_off_frame_clouds_shadow_is_found():
    """The shaded zone and its surround are marked; the zone in the sun (its stacks' own
    shadows on its north apron) is not."""
    image, valid, zones, grid = _scene()
    _, pix, ok = C.prepare(image, valid)
    m = C._zones_in_cloud_shadow(pix, zones, grid, ok)
    shaded, lit = C._mask(zones["shaded"], grid), C._mask(zones["lit"], grid)
    assert m[shaded].all()
    assert not m[lit].any()


def test_no_zone_marked_without_a_cloud_shadow_or_with_one_zone():
    """Both zones in the sun: none marked (the stacks' own shadows darken one side of each
    surround only). One zone alone: nothing to compare with, none marked."""
    image, valid, zones, grid = _scene(shadow=False)
    _, pix, ok = C.prepare(image, valid)
    assert not C._zones_in_cloud_shadow(pix, zones, grid, ok).any()
    image, valid, zones, grid = _scene()
    _, pix, ok = C.prepare(image, valid)
    assert not C._zones_in_cloud_shadow(pix, {"shaded": zones["shaded"]}, grid, ok).any()


def test_boxes_under_an_off_frame_clouds_shadow_are_counted():
    """The zone under the shadow reports it (``cloud_shadow_fraction``), counts its 40
    ground slots and takes its height from the block in the sun (80 TEU). Before, it read
    as sunlit: no shadow share and a height from shadows it could not throw."""
    _, z = _count()
    slots = 2 * ROWS * BAYS
    assert z["shaded"]["cloud_shadow_fraction"] >= 0.9
    assert z["lit"]["cloud_shadow_fraction"] == 0.0
    assert abs(z["shaded"]["by_type"]["ground_slots"] - slots) <= 0.15 * slots
    assert abs(z["shaded"]["count"] - slots * TIERS) <= 0.25 * slots * TIERS
    assert abs(z["lit"]["count"] - slots * TIERS) <= 0.25 * slots * TIERS


def test_a_dim_zone_on_an_image_without_cloud_is_not_read_as_cloud_shadow():
    """The same dim zone where the cloud mask flags nothing (a clear day; the dim surround is
    then darker pavement, asphalt beside concrete, as likely as a cloud's shadow): the zone is
    read as sunlit, as before the rule."""
    image, valid, zones, grid = _scene()
    clear = grid.attach(np.ones(grid.shape, bool))
    res = C.count_containers(image, zones, valid=clear, sun_azimuth_deg=180.0, sun_elevation_deg=EL)
    z = {pf["id"]: pf for pf in res.per_feature}
    assert z["shaded"]["cloud_shadow_fraction"] == 0.0
    _, pix, _ = C.prepare(image, valid)
    assert C._cloud_flagged(pix, valid.values) and not C._cloud_flagged(pix, clear)
