"""Boxes in a zone wholly under a cloud's shadow that nobody flagged (issue 6, session 30).

The cloud itself is outside the frame, so ``valid`` says nothing and the counter does
not know of the shadow. Under it no stack throws a shadow of its own (the direct beam is
mostly gone), so the shade colour cannot be measured in the zone, and without it the
hue test that tells dull or dark paint from shaded pavement was never run: a block whose
paint has a fifth of its contrast in the sun counted next to nothing. The shade's colour
over lit pavement is the sky's share of the light, the same over the whole image; the
zone now takes it from the zones where it was measured.
"""

from __future__ import annotations

import numpy as np

from changedet.grid import GridSpec
from changedet.objects.containers import count_containers
from tests.test_containers_cloud_shadow_s29 import BAYS, EL, RES, ROWS, TIERS, block_zones, render_blocks

# Share of the light on open flat ground that comes from the sky, per band (B, G, R, NIR):
# a clear, dry sky (a stack's shadow on concrete at 4-12 % of the sunlit pavement).
SKY = np.array([0.12, 0.08, 0.06, 0.04])
# Paint of about the concrete's brightness, told from it by hue alone: dark green, brown,
# pale blue, maroon.
PAINTS = np.array([[0.10, 0.22, 0.10, 0.30], [0.12, 0.12, 0.20, 0.30], [0.30, 0.25, 0.18, 0.30],
                   [0.12, 0.08, 0.20, 0.30]])
# North edges of the blocks (m from the image's top): the first under the cloud's
# shadow, the other two in the sun.
Y_SHADED, Y_LIT = 40.0, (110.0, 170.0)


def _scene(seed=0):
    """Three blocks of 40 ft boxes on concrete, sun due south at ``EL``; the shadow of a
    cloud outside the frame over the first block (``CLOUD_DIRECT`` of the beam left)."""
    height, width = 230.0, 110.0
    pix, _ = render_blocks((Y_SHADED,) + Y_LIT, height, width, paints=PAINTS, sky=SKY, seed=seed,
                           in_shadow=lambda yy, xx: yy < Y_SHADED + 45.0)
    top, left = 4600000.0, 500000.0
    grid = GridSpec.from_bounds("EPSG:32633", (left, top - height, left + width, top), RES)
    zones = block_zones({"shaded": Y_SHADED, "lit1": Y_LIT[0], "lit2": Y_LIT[1]}, top, left)
    return grid.attach(pix.astype("float32"), bands=["B", "G", "R", "NIR"]), zones


def test_zone_under_an_unflagged_clouds_shadow_takes_the_images_shade():
    """The first pass (distance from the ground's colour) finds almost none of these boxes,
    so no walk measures the shade in the shaded zone, nor in the first sunlit one; the
    second sunlit zone does. The other two now take its sky share: base counted 0 slots in
    both (40 each); now the sunlit one is whole and the shaded one most of its boxes (its
    paint has under a fifth of its contrast in the sun there), its height from the sun."""
    image, zones = _scene()
    res = count_containers(image, zones, sun_azimuth_deg=180.0, sun_elevation_deg=EL)
    z = {pf["id"]: pf for pf in res.per_feature}
    slots = 2 * ROWS * BAYS
    print({k: (v["count"], v["by_type"]["ground_slots"]) for k, v in z.items()})
    for zid in ("lit1", "lit2"):
        assert abs(z[zid]["by_type"]["ground_slots"] - slots) <= 0.15 * slots
        assert abs(z[zid]["count"] - slots * TIERS) <= 0.15 * slots * TIERS
    assert z["shaded"]["by_type"]["ground_slots"] >= 0.6 * slots
    assert abs(z["shaded"]["count"] - slots * TIERS) <= 0.3 * slots * TIERS
    # Zones that came round again are reported in their given order.
    assert [pf["id"] for pf in res.per_feature] == list(zones)
