"""Stack heights from shadows that run into the next block (low sun), and the cloud edge.

A synthetic yard with known heights: blocks of containers separated by lanes narrower
than their shadows, so that every shadow cast into a lane is cut short by the next
block and only the outer block's shadow, on open pavement, is seen to end.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import box

from changedet.grid import GridSpec
from changedet.objects.cloud_shadow import cloud_shade
from changedet.objects.containers import SLOT_M2, TIER_M, _km_median, count_containers, observed_mask

RES = 0.5
PAVEMENT = np.array([0.20, 0.21, 0.22, 0.26], "float32")   # B, G, R, NIR of concrete
PAINTS = np.array([[0.08, 0.10, 0.45, 0.40], [0.40, 0.20, 0.06, 0.30], [0.10, 0.35, 0.12, 0.35],
                   [0.55, 0.55, 0.55, 0.60], [0.05, 0.25, 0.55, 0.45]], "float32")


def test_km_median_known_answers():
    # Nothing censored: the ordinary median.
    assert _km_median(np.array([1.0, 2, 3, 4, 5]), np.zeros(5, bool)) == 3.0
    # Four walks cut short at 4 by the next block: the shadows there are longer than 4,
    # so half the mass lies beyond; the median is the one long shadow seen to end (6),
    # where dropping the censored walks would give 4 (median of 2 and 6).
    lengths = np.array([2.0, 4, 4, 4, 4, 6])
    censored = np.array([False, True, True, True, True, False])
    assert _km_median(lengths, censored) == 6.0
    # Every long shadow censored: the median is hidden.
    assert _km_median(np.array([2.0, 3, 8, 8, 8, 8]), np.array([False, False, True, True, True, True])) is None


BAY_TIERS = (1, 2, 3, 4, 5, 3, 2, 4, 3, 3)   # per bay (column of 6 slots): mean and median 3


def _yard(tiers, elevation: float, *, n_blocks: int = 3, lane_m: float = 9.0, seed: int = 0,
          azimuth: float = 180.0, paints: np.ndarray = PAINTS, skylight=0.3):
    """Blocks of 20 ft slots (6 rows by 10 bays each) stacked north-south, sun due south
    unless ``azimuth`` says otherwise.

    ``tiers`` is one height for every bay or one per bay; box tops take a random row of
    ``paints`` (B, G, R, NIR); shaded pavement is lit pavement times ``skylight`` (one
    factor, or one per band). Returns the image, its grid, the zone, the true TEU and
    ground slots.
    """
    rng = np.random.default_rng(seed)
    block_rows, bays = 6, 10
    bay_tiers = [tiers] * bays if np.isscalar(tiers) else list(tiers)
    block_h = block_rows * 2.44 + (block_rows - 1) * 0.35
    block_w = bays * 6.06 + (bays - 1) * 0.45
    shadow_m = max(bay_tiers) * TIER_M / math.tan(math.radians(elevation))
    apron = shadow_m + 15.0
    height = 2 * apron + n_blocks * block_h + (n_blocks - 1) * lane_m
    width = block_w + 40.0
    grid = GridSpec.from_bounds("EPSG:32637", (400000.0, 5000000.0, 400000.0 + width, 5000000.0 + height), RES)
    ys = grid.transform.f - (np.arange(grid.shape[0]) + 0.5) * RES
    xs = grid.transform.c + (np.arange(grid.shape[1]) + 0.5) * RES
    h = np.zeros(grid.shape, "float32")
    colour = np.zeros((4,) + grid.shape, "float32")
    x0 = grid.transform.c + 20.0
    y_top = grid.transform.f - apron
    teu = slots = 0
    for b in range(n_blocks):
        yb = y_top - b * (block_h + lane_m)
        for r in range(block_rows):
            y1 = yb - r * (2.44 + 0.35)
            for s, t in enumerate(bay_tiers):
                xa = x0 + s * (6.06 + 0.45)
                m = ((ys <= y1) & (ys > y1 - 2.44))[:, None] & ((xs >= xa) & (xs < xa + 6.06))[None, :]
                h[m] = t * TIER_M
                colour[:, m] = paints[rng.integers(len(paints))][:, None]
                slots += 1
                teu += t
    top = h > 0
    zone = box(x0 - 3.0, y_top - n_blocks * block_h - (n_blocks - 1) * lane_m - 3.0, x0 + block_w + 3.0, y_top + 3.0)
    # Sun due south: a ground pixel is shaded when something k pixels south of it stands
    # higher than the sun's ray over that distance.
    shade = np.zeros(grid.shape, bool)
    rise = RES * math.tan(math.radians(elevation))
    if azimuth == 180.0:
        for k in range(1, int(shadow_m / RES) + 2):
            shade[:-k] |= h[k:] > k * rise
    else:
        # Oblique sun: march towards the sun in quarter-pixel steps (row +south, col +east).
        sr, sc = -math.cos(math.radians(azimuth)), math.sin(math.radians(azimuth))
        rr, cc = np.indices(grid.shape)
        for k in np.arange(0.25, shadow_m / RES + 2, 0.25):
            r = np.round(rr + k * sr).astype(int)
            c = np.round(cc + k * sc).astype(int)
            inb = (r >= 0) & (r < grid.shape[0]) & (c >= 0) & (c < grid.shape[1])
            shade |= inb & (h[r.clip(0, grid.shape[0] - 1), c.clip(0, grid.shape[1] - 1)] > k * rise)
    sky = np.broadcast_to(np.asarray(skylight, "float32"), (4,))[:, None, None]
    ground = PAVEMENT[:, None, None] * np.where((shade & ~top)[None], sky, 1.0)
    data = np.where(top[None], colour, ground) + rng.normal(0, 0.004, (4,) + grid.shape).astype("float32")
    image = grid.attach(data[[2, 1, 0, 3]].astype("float32"), bands=["R", "G", "B", "NIR"])
    return image, grid, {"Z1": zone}, teu, slots


@pytest.mark.parametrize("tiers,elevation", [(3, 20.0), (BAY_TIERS, 20.0), (BAY_TIERS, 25.0), (BAY_TIERS, 55.0)])
def test_heights_from_shadows_cut_short_by_the_next_block(tiers, elevation):
    """With a low sun only 1-tier shadows end inside the 9 m lanes; the others run into
    the next block. Dropping those (the old estimate) kept the short ones: 1.0-1.6 tiers
    where the yard stands 3 high on average."""
    image, grid, zones, teu, slots = _yard(tiers, elevation)
    mean_tiers = teu / slots
    res = count_containers(image, zones, sun_azimuth_deg=180.0, sun_elevation_deg=elevation)
    est_slots = sum(d.attrs["ground_slots"] for d in res.detections)
    big = [d for d in res.detections if d.attrs["area_m2"] > 10 * SLOT_M2]
    print(f"\ntiers {tiers}, sun {elevation} deg: truth {teu} TEU ({slots} slots, {mean_tiers:.2f} tiers), "
          f"estimate {res.total} ({est_slots:.1f} slots), tiers {[d.attrs['tiers'] for d in big]} "
          f"{[d.attrs['tiers_method'] for d in big]}")
    assert len(big) == 3
    for d in big:
        assert abs(d.attrs["tiers"] - mean_tiers) <= 0.6, d.attrs
    # TEU per ground slot is the mean height (the footprint's own error, gaps between
    # boxes drawn on whole pixels, is not what this test is about).
    assert abs(res.total / est_slots - mean_tiers) <= 0.5


def test_thin_cloud_edge_and_its_shadow_are_unobserved():
    image, grid, zones, _, _ = _yard(2, 50.0, n_blocks=1)
    cloud = np.zeros(grid.shape, bool)
    cloud[:40, :60] = True
    valid = grid.attach(~cloud)
    seen = observed_mask(image, valid=valid, sun_azimuth_deg=180.0, sun_elevation_deg=50.0)
    # 5 m (10 pixels) beyond the mask are the cloud's thin edge.
    assert not seen[:48, :60].any() and not seen[:40, :68].any()
    assert seen[60:, 80:].all()
    pix = np.asarray(image.values)[[2, 1, 0, 3]]
    edge = cloud_shade(pix, grid, cloud, edge_m=5.0)
    assert edge[45, 30] and edge[20, 65] and not edge[55, 30] and not edge[20, 75]
    assert not cloud_shade(pix, grid, cloud, edge_m=0.0)[45, 30]
