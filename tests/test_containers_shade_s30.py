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

import math

import numpy as np
from scipy import ndimage
from shapely.geometry import box as sbox

from changedet.grid import GridSpec
from changedet.objects.containers import count_containers

CONCRETE = np.array([0.24, 0.26, 0.27, 0.30])
# Share of the light on open flat ground that comes from the sky, per band (B, G, R, NIR):
# a clear, dry sky (a stack's shadow on concrete at 4-12 % of the sunlit pavement).
SKY = np.array([0.12, 0.08, 0.06, 0.04])
# Share of the direct beam a cumulus lets through.
CLOUD_DIRECT = 0.15
# Paint of about the concrete's brightness, told from it by hue alone: dark green, brown,
# pale blue, maroon.
PAINTS = np.array([[0.10, 0.22, 0.10, 0.30], [0.12, 0.12, 0.20, 0.30], [0.30, 0.25, 0.18, 0.30],
                   [0.12, 0.08, 0.20, 0.30]])
BOX_L, BOX_W, GAP_U, GAP_V = 12.19, 2.44, 0.4, 0.35
RES, EL = 0.5, 45.0
ROWS, BAYS, TIERS = 5, 4, 2
# North edges of the blocks (m from the image's top): the first under the cloud's
# shadow, the other two in the sun.
Y_SHADED, Y_LIT, X0 = 40.0, (110.0, 170.0), 20.0


def _scene(seed=0):
    """Three blocks of 40 ft boxes on concrete, sun due south at ``EL``; the shadow of a
    cloud outside the frame over the first block (``CLOUD_DIRECT`` of the beam left).
    Rendered at a third of ``RES``, averaged, blurred, with noise."""
    rng = np.random.default_rng(seed)
    f = 3
    fine = RES / f
    height, width = 230.0, 110.0
    nr, nc = int(height / RES) * f, int(width / RES) * f
    yy, xx = (np.mgrid[0:nr, 0:nc] + 0.5) * fine
    alb = np.broadcast_to(CONCRETE[:, None, None], (4, nr, nc)).copy()
    alb *= 1.0 + 0.04 * rng.standard_normal((nr, nc))[None]
    h = np.zeros((nr, nc))
    for y0 in (Y_SHADED,) + Y_LIT:
        for r in range(ROWS):
            for k in range(BAYS):
                ya, xa = y0 + r * (BOX_W + GAP_V), X0 + k * (BOX_L + GAP_U)
                m = (yy >= ya) & (yy < ya + BOX_W) & (xx >= xa) & (xx < xa + BOX_L)
                h[m] = TIERS * 2.59
                alb[:, m] = (PAINTS[rng.integers(len(PAINTS))] * rng.uniform(0.85, 1.1))[:, None]
    direct = np.ones((nr, nc))
    rise = fine * math.tan(math.radians(EL))
    for k in range(1, int(h.max() / rise) + 2):
        direct[:-k][h[k:] > h[:-k] + k * rise] = 0.0
    in_shadow = (yy < Y_SHADED + 45.0)
    direct = np.where(in_shadow, direct * CLOUD_DIRECT, direct)
    pix = alb * ((1 - SKY)[:, None, None] * direct[None] + SKY[:, None, None])
    pix = pix.reshape(4, nr // f, f, nc // f, f).mean(axis=(2, 4))
    pix = ndimage.gaussian_filter(pix, (0, 0.6, 0.6)) + rng.normal(0, 0.002, (4, nr // f, nc // f))
    top, left = 4600000.0, 500000.0
    grid = GridSpec.from_bounds("EPSG:32633", (left, top - height, left + width, top), RES)
    x1 = X0 + BAYS * (BOX_L + GAP_U) - GAP_U
    zones = {}
    for zid, y0 in (("shaded", Y_SHADED), ("lit1", Y_LIT[0]), ("lit2", Y_LIT[1])):
        y1 = y0 + ROWS * (BOX_W + GAP_V) - GAP_V
        zones[zid] = sbox(left + X0 - 3.0, top - y1 - 3.0, left + x1 + 3.0, top - y0 + 3.0)
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
