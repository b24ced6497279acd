"""Container counts (issue 6, session 13), on a small synthetic scene built from the
physics (direct beam plus Rayleigh skylight): each flagged tarp is located
(``tarp_patches``), so that its flag can be checked on the ground.
"""

from __future__ import annotations

import math

import numpy as np

from changedet.grid import GridSpec
from changedet.objects.containers import TIER_M, count_containers

RES = 0.5
SIZE_M = 240.0
CONCRETE = np.array([0.24, 0.26, 0.27, 0.30])
# Share of the light on flat ground that comes from the sky, per band (B, G, R, NIR).
SKY = np.array([0.30, 0.20, 0.13, 0.08])
CLOUD_CUT = 0.85           # share of the direct beam a cumulus core removes
PAINTS = np.array([[0.52, 0.40, 0.22, 0.45], [0.08, 0.09, 0.38, 0.48], [0.12, 0.42, 0.52, 0.58],
                   [0.15, 0.28, 0.10, 0.40], [0.62, 0.64, 0.64, 0.62], [0.08, 0.24, 0.52, 0.55]])
TARP = np.array([0.24, 0.25, 0.25, 0.30])
SUN_AZ, SUN_EL = 180.0, 45.0


def _render(blocks, *, cloud_shadow_from_m=None, cloud=True, seed=0):
    """A concrete apron with blocks of 20 ft boxes (rows east-west), sun due south.

    ``blocks``: (north edge y, west edge x, rows, bays, box height m, tarped (row, bay)
    set), in metres from the frame's north-west corner. South of ``cloud_shadow_from_m``
    the ground lies in a cloud's shadow; with ``cloud`` a small cloud (cloud-coloured, False in the valid mask) sits
    in the north-east corner, its own shadow off the frame to the north. Returns the
    image, valid mask, zones and per-zone true TEU.
    """
    rng = np.random.default_rng(seed)
    n = int(SIZE_M / RES)
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * RES
    alb = np.broadcast_to(CONCRETE[:, None, None], (4, n, n)).copy()
    alb *= 1.0 + 0.03 * rng.standard_normal((n, n))[None]
    height = np.zeros((n, n))
    zones, teu = {}, {}
    from shapely.geometry import box as sbox

    for i, (y0, x0, rows, bays, h, tarped) in enumerate(blocks):
        for r in range(rows):
            for b in range(bays):
                ya, xa = y0 + r * (2.44 + 0.35), x0 + b * (6.06 + 0.45)
                m = (yy >= ya) & (yy < ya + 2.44) & (xx >= xa) & (xx < xa + 6.06)
                height[m] = h
                col = TARP if (r, b) in tarped else PAINTS[rng.integers(len(PAINTS))]
                alb[:, m] = col[:, None] * (1.0 + 0.03 * rng.standard_normal(m.sum()))[None]
        y1, x1 = y0 + rows * 2.79 - 0.35, x0 + bays * 6.51 - 0.45
        zid = f"Z{i + 1}"
        # Zone polygon in map coordinates: x east, y north from the frame's top.
        zones[zid] = sbox(500000.0 + x0 - 3.0, 4600000.0 - y1 - 3.0, 500000.0 + x1 + 3.0, 4600000.0 - y0 + 3.0)
        teu[zid] = rows * bays * round(h / TIER_M)
    # Sun due south: ground k pixels north of a box of height h is shaded while k RES < h / tan(el).
    shaded = np.zeros((n, n), bool)
    rise = RES * math.tan(math.radians(SUN_EL))
    for k in range(1, int(height.max() / rise) + 2):
        shaded[:-k] |= height[k:] > height[:-k] + k * rise
    cs = np.zeros((n, n), bool) if cloud_shadow_from_m is None else yy > cloud_shadow_from_m
    direct = (1 - SKY)[:, None, None] * (~shaded)[None] * np.where(cs, 1 - CLOUD_CUT, 1.0)[None]
    pix = alb * (direct + SKY[:, None, None]) + rng.normal(0, 0.003, (4, n, n))
    valid = np.ones((n, n), bool)
    if cloud:
        c = yy ** 2 + (xx - SIZE_M) ** 2 < 15.0 ** 2
        pix[:, c] = np.array([0.75, 0.76, 0.77, 0.72])[:, None]
        valid = ~c
    grid = GridSpec.from_bounds("EPSG:32633", (500000.0, 4600000.0 - SIZE_M, 500000.0 + SIZE_M, 4600000.0), RES)
    image = grid.attach(pix.astype("float32"), bands=["B", "G", "R", "NIR"])
    return image, grid.attach(valid), zones, teu, yy, xx


def test_tarp_patches_locate_the_flags():
    """Two tarped stacks in a block: every flagged patch lies on one of them."""
    tarped = {(2, 1), (1, 4)}
    image, valid, zones, teu, yy, xx = _render([(60.0, 60.0, 5, 6, 2 * TIER_M, tarped)], cloud=False)
    res = count_containers(image, zones, sun_azimuth_deg=SUN_AZ, sun_elevation_deg=SUN_EL)
    patches = [p for d in res.detections for p in d.attrs["tarp_patches"]]
    print(f"\npatches {patches}, tarped_stacks {res.extras['tarped_stacks']}")
    assert len(patches) == res.extras["tarped_stacks"] >= 1
    for x, y, area in patches:
        # Back to the frame's metres (x east, y south of the top).
        fx, fy = x - 500000.0, 4600000.0 - y
        on = [60.0 + b * 6.51 - 1.0 <= fx <= 60.0 + b * 6.51 + 7.06 and 60.0 + r * 2.79 - 1.0 <= fy
              <= 60.0 + r * 2.79 + 3.44 for r, b in tarped]
        assert any(on), (x, y)
        assert 0.5 * 6.06 * 2.44 <= area <= 2 * 6.06 * 2.44
