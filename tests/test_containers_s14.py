"""Container tarp flags (issue 6, session 14), on small synthetic scenes built from the
physics (direct beam plus Rayleigh skylight): a cloth cover is told by its own surface
reflectance, not by its brightness relative to the pavement, so a grey tarp on dark
asphalt is flagged as on concrete.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import box as sbox

from changedet.grid import GridSpec
from changedet.objects.containers import TIER_M, count_containers

RES = 0.5
SIZE_M = 120.0
# Pavement reflectance (B, G, R, NIR).
CONCRETE = np.array([0.24, 0.26, 0.27, 0.30])
ASPHALT = np.array([0.085, 0.09, 0.095, 0.12])
# Share of the light on flat ground that comes from the sky, per band (B, G, R, NIR).
SKY = np.array([0.30, 0.20, 0.13, 0.08])
# Saturated liveries (blue, red, yellow, green, orange): never read as cloth.
PAINTS = np.array([[0.52, 0.40, 0.22, 0.45], [0.08, 0.09, 0.38, 0.48], [0.12, 0.42, 0.52, 0.58],
                   [0.15, 0.28, 0.10, 0.40], [0.08, 0.24, 0.52, 0.55]])
GREY_TARP = np.array([0.24, 0.25, 0.25, 0.30])
WHITE_REEFER = np.array([0.70, 0.71, 0.70, 0.68])
SUN_AZ, SUN_EL = 180.0, 45.0
Y0, X0 = 40.0, 30.0          # block's north-west corner, m from the frame's


def _render(ground, special, colour, *, rows=5, bays=6, tiers=2, seed=0):
    """A block of 20 ft boxes (rows east-west) on ``ground``, sun due south; the boxes at
    (row, bay) in ``special`` wear ``colour``, the others saturated paint."""
    rng = np.random.default_rng(seed)
    n = int(SIZE_M / RES)
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * RES
    alb = np.broadcast_to(ground[:, None, None], (4, n, n)).copy()
    alb *= 1.0 + 0.03 * rng.standard_normal((n, n))[None]
    height = np.zeros((n, n))
    h = tiers * TIER_M
    for r in range(rows):
        for b in range(bays):
            ya, xa = Y0 + r * (2.44 + 0.35), X0 + b * (6.06 + 0.45)
            m = (yy >= ya) & (yy < ya + 2.44) & (xx >= xa) & (xx < xa + 6.06)
            height[m] = h
            col = colour if (r, b) in special else PAINTS[rng.integers(len(PAINTS))]
            alb[:, m] = col[:, None] * (1.0 + 0.03 * rng.standard_normal(m.sum()))[None]
    # Sun due south: ground k pixels north of a box of height h is shaded while k RES < h / tan(el).
    shaded = np.zeros((n, n), bool)
    rise = RES * math.tan(math.radians(SUN_EL))
    for k in range(1, int(height.max() / rise) + 2):
        shaded[:-k] |= height[k:] > height[:-k] + k * rise
    direct = (1 - SKY)[:, None, None] * (~shaded)[None]
    pix = alb * (direct + SKY[:, None, None]) + rng.normal(0, 0.003, (4, n, n))
    grid = GridSpec.from_bounds("EPSG:32633", (500000.0, 4600000.0 - SIZE_M, 500000.0 + SIZE_M, 4600000.0), RES)
    y1, x1 = Y0 + rows * 2.79 - 0.35, X0 + bays * 6.51 - 0.45
    zones = {"Z1": sbox(500000.0 + X0 - 3.0, 4600000.0 - y1 - 3.0, 500000.0 + x1 + 3.0, 4600000.0 - Y0 + 3.0)}
    return grid.attach(pix.astype("float32"), bands=["B", "G", "R", "NIR"]), zones


def _on(patches, special):
    """For each flagged patch, whether it lies on one of the ``special`` boxes (1 m slack)."""
    out = []
    for x, y, _ in patches:
        fx, fy = x - 500000.0, 4600000.0 - y
        out.append(any(X0 + b * 6.51 - 1.0 <= fx <= X0 + b * 6.51 + 7.06
                       and Y0 + r * 2.79 - 1.0 <= fy <= Y0 + r * 2.79 + 3.44 for r, b in special))
    return out


@pytest.mark.parametrize("ground", [ASPHALT, CONCRETE], ids=["asphalt", "concrete"])
def test_grey_tarp_flagged_on_any_pavement(ground):
    """A grey cover on two stacks is flagged on dark asphalt as on concrete, and only there.

    The old gate (0.35-1.2 times the lit pavement's brightness) passed it on concrete
    but not on asphalt, where grey cloth is 2.7 times as bright as the ground.
    """
    tarped = {(2, 1), (1, 4)}
    image, zones = _render(ground, tarped, GREY_TARP)
    res = count_containers(image, zones, sun_azimuth_deg=SUN_AZ, sun_elevation_deg=SUN_EL)
    patches = [p for d in res.detections for p in d.attrs["tarp_patches"]]
    on = _on(patches, tarped)
    print(f"\npatches {patches}")
    assert len(on) >= 2 and all(on)
    # Both covered stacks carry a patch.
    hit = {rb for rb in tarped if _on(patches, {rb}).count(True)}
    assert hit == tarped


def test_white_reefers_on_asphalt_not_flagged():
    """White reefers are brighter than cloth: not flagged, however dark the pavement."""
    image, zones = _render(ASPHALT, {(2, 1), (1, 4), (3, 3)}, WHITE_REEFER)
    res = count_containers(image, zones, sun_azimuth_deg=SUN_AZ, sun_elevation_deg=SUN_EL)
    assert res.extras["tarped_stacks"] == 0
