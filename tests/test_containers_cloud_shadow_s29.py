"""Container footprints under a cloud's shadow (issue 6, session 29).

A cloud's shadow cuts the direct beam, not the view: the boxes under it are still there,
lit by the sky, and their paint still differs from the pavement around them. Only their
heights cannot be read there (all the pavement is as dark as a stack's shadow). The
counter used to leave the projected shadow unobserved like the cloud itself, so a
block under it counted no boxes; now footprints are read there, and heights come
from the stacks in the sun. The cloud's thin edge (its own light added to the ground's)
stays unobserved.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from shapely.geometry import box as sbox

from changedet.grid import GridSpec
from changedet.objects.containers import count_containers, observed_mask

CONCRETE = np.array([0.24, 0.26, 0.27, 0.30])
# Share of the light on open flat ground that comes from the sky, per band (B, G, R, NIR).
SKY = np.array([0.30, 0.20, 0.13, 0.08])
# Share of the direct beam a cumulus lets through.
CLOUD_DIRECT = 0.15
PAINTS = np.array([[0.52, 0.40, 0.22, 0.45], [0.08, 0.09, 0.38, 0.48], [0.15, 0.28, 0.10, 0.40],
                   [0.10, 0.28, 0.40, 0.50], [0.30, 0.12, 0.38, 0.46], [0.38, 0.24, 0.15, 0.40]])
BOX_L, BOX_W, GAP_U, GAP_V = 12.19, 2.44, 0.4, 0.35
RES, EL, CLOUD_H = 0.5, 45.0, 250.0
ROWS, BAYS, TIERS = 5, 4, 2
# North edges of the two blocks (m from the image's top): the first under the cloud's
# shadow, the second in the sun.
Y_SHADED, Y_LIT, X0 = 40.0, 120.0, 20.0


def render_blocks(block_tops, height, width, *, paints, sky, in_shadow, cloud=None, seed=0):
    """Blocks of 40 ft boxes (``ROWS`` x ``BAYS``, ``TIERS`` high, north edges at
    ``block_tops`` m from the image's top) on concrete, sun due south at ``EL``.
    ``in_shadow(yy, xx)``: where a cloud's shadow leaves ``CLOUD_DIRECT`` of the direct
    beam; ``cloud(yy, xx)``: the cloud itself (flagged invalid), or None. Rendered at a
    third of ``RES``, averaged, blurred, with noise. Returns (band, row, col) reflectance
    and the valid mask (None without a cloud)."""
    rng = np.random.default_rng(seed)
    f = 3
    fine = RES / f
    nr, nc = int(height / RES) * f, int(width / RES) * f
    yy, xx = (np.mgrid[0:nr, 0:nc] + 0.5) * fine
    alb = np.broadcast_to(CONCRETE[:, None, None], (4, nr, nc)).copy()
    alb *= 1.0 + 0.04 * rng.standard_normal((nr, nc))[None]
    h = np.zeros((nr, nc))
    for y0 in block_tops:
        for r in range(ROWS):
            for k in range(BAYS):
                ya, xa = y0 + r * (BOX_W + GAP_V), X0 + k * (BOX_L + GAP_U)
                m = (yy >= ya) & (yy < ya + BOX_W) & (xx >= xa) & (xx < xa + BOX_L)
                h[m] = TIERS * 2.59
                alb[:, m] = (paints[rng.integers(len(paints))] * rng.uniform(0.85, 1.1))[:, None]
    # Direct beam reaching each pixel: none in a stack's shadow, a little in the cloud's.
    direct = np.ones((nr, nc))
    rise = fine * math.tan(math.radians(EL))
    for k in range(1, int(h.max() / rise) + 2):
        direct[:-k][h[k:] > h[:-k] + k * rise] = 0.0
    direct = np.where(in_shadow(yy, xx), direct * CLOUD_DIRECT, direct)
    pix = alb * ((1 - sky)[:, None, None] * direct[None] + sky[:, None, None])
    valid = None
    if cloud is not None:
        over = cloud(yy, xx)
        pix = np.where(over[None], 0.75, pix)
        valid = ~(over.reshape(nr // f, f, nc // f, f).mean(axis=(1, 3)) > 0.0)
    pix = pix.reshape(4, nr // f, f, nc // f, f).mean(axis=(2, 4))
    pix = ndimage.gaussian_filter(pix, (0, 0.6, 0.6)) + rng.normal(0, 0.002, (4, nr // f, nc // f))
    return pix, valid


def block_zones(named_tops, top, left):
    """Stack zones 3 m round each block (``named_tops``: id -> north edge, m)."""
    x1 = X0 + BAYS * (BOX_L + GAP_U) - GAP_U
    zones = {}
    for zid, y0 in named_tops.items():
        y1 = y0 + ROWS * (BOX_W + GAP_V) - GAP_V
        zones[zid] = sbox(left + X0 - 3.0, top - y1 - 3.0, left + x1 + 3.0, top - y0 + 3.0)
    return zones


def _scene(seed=0):
    """Two blocks; a cloud at ``CLOUD_H`` over the south of the frame (flagged invalid)
    whose shadow falls ``CLOUD_H / tan(EL)`` further north, over the first block."""
    height, width = 350.0, 110.0
    cloud_y = (Y_SHADED - 25.0, Y_SHADED + 45.0)
    shift = CLOUD_H / math.tan(math.radians(EL))
    pix, valid = render_blocks(
        (Y_SHADED, Y_LIT), height, width, paints=PAINTS, sky=SKY, seed=seed,
        in_shadow=lambda yy, xx: (yy >= cloud_y[0]) & (yy < cloud_y[1]) & (xx >= 5.0) & (xx < 100.0),
        cloud=lambda yy, xx: ((yy >= cloud_y[0] + shift) & (yy < cloud_y[1] + shift) & (xx >= 5.0)
                              & (xx < 100.0)))
    top, left = 4600000.0, 500000.0
    grid = GridSpec.from_bounds("EPSG:32633", (left, top - height, left + width, top), RES)
    zones = block_zones({"shaded": Y_SHADED, "lit": Y_LIT}, top, left)
    image = grid.attach(pix.astype("float32"), bands=["B", "G", "R", "NIR"])
    return image, grid.attach(valid), zones


def _count():
    image, valid, zones = _scene()
    res = count_containers(image, zones, valid=valid, sun_azimuth_deg=180.0, sun_elevation_deg=EL)
    by_zone = {pf["id"]: pf for pf in res.per_feature}
    return image, valid, res, by_zone


def test_boxes_under_a_clouds_shadow_are_counted():
    """The block under the cloud's shadow (none of its own shadows readable) has its 40
    ground slots counted, and its height from the block in the sun: 80 TEU, as the one
    in the sun. It counted nothing when the shadow was unobserved."""
    _, _, res, z = _count()
    slots = 2 * ROWS * BAYS
    print({k: (v["count"], v["by_type"]["ground_slots"], v["observed_fraction"]) for k, v in z.items()})
    assert z["shaded"]["observed_fraction"] >= 0.99
    assert abs(z["shaded"]["by_type"]["ground_slots"] - slots) <= 0.15 * slots
    assert abs(z["lit"]["by_type"]["ground_slots"] - slots) <= 0.15 * slots
    assert abs(z["shaded"]["count"] - slots * TIERS) <= 0.25 * slots * TIERS
    shaded = [d for d in res.detections if d.feature_id == "shaded" and d.attrs["ground_slots"] > 5]
    assert shaded and all(abs(d.attrs["tiers"] - TIERS) <= 0.5 for d in shaded)


def test_observed_mask_reads_the_shadow_not_the_cloud():
    """``observed_mask``: the cloud and its thin edge (5 m) are unobserved; its shadow is
    read."""
    image, valid, _, _ = _count()
    obs = observed_mask(image, valid=valid, sun_azimuth_deg=180.0, sun_elevation_deg=EL)
    v = np.asarray(valid.values)
    assert not obs[~v].any()
    rows = slice(int((Y_SHADED - 20.0) / RES), int((Y_SHADED + 40.0) / RES))
    cols = slice(int(10.0 / RES), int(95.0 / RES))
    assert obs[rows, cols].all()
    # Within the thin edge just outside the cloud.
    cloud_rows = np.nonzero(~v.all(axis=1))[0]
    edge = slice(cloud_rows.min() - int(3.0 / RES), cloud_rows.min())
    assert not obs[edge, cols].any()


def test_zones_report_their_share_under_a_clouds_shadow():
    """(Review RSHADE, session 30.) A zone read under a cloud's shadow says so
    (``cloud_shadow_fraction``): its heights are borrowed from stacks in the sun, so the
    flows keep it out of the zone's series as before (their gate takes the share off the
    observed fraction); the zone in the sun reports none."""
    _, _, _, z = _count()
    assert z["shaded"]["cloud_shadow_fraction"] >= 0.9
    assert z["shaded"]["observed_fraction"] - z["shaded"]["cloud_shadow_fraction"] <= 0.1
    assert z["lit"]["cloud_shadow_fraction"] == 0.0
