"""An independent container-yard scene generator (not changedet's simulator).

Designed from the real world, not from ``changedet/simulate``: ISO 668 boxes (20 ft
6.06 x 2.44 m, 40 ft 12.19 x 2.44 m; 2.59 m standard or 2.90 m high-cube) stacked one to
five tiers in blocks of rows x bays, 0.2-0.5 m gaps between boxes, 8-20 m driving
lanes, liveries of the big carriers, roof ribs, dents and dirt, tarped stacks, reach
stackers, asphalt or concrete aprons with slab joints and lane markings.

The scene is rendered on a fine grid (a third of the output pixel) as a height map and
an albedo map; sun shadows are cast by marching the height map towards the sun,
narrow slots between boxes see less sky, the sky light is bluer than the sun's. Then
residual haze (path radiance and lost contrast), a cloud deck with its shadow (cloud
tops at 300-1500 m, the shadow where the geometry puts it: often outside the frame),
area averaging to the output pixel, a Gaussian PSF, signal-dependent noise and 12-bit
quantisation.

Truth per zone: TEU, boxes by size, ground slots (40 ft slots count 2), mean tiers
(TEU over ground TEU), tarped stacks, and every stack's footprint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import ndimage
from shapely.affinity import rotate, translate
from shapely.geometry import Polygon, box

from changedet.grid import GridSpec

L20, L40, W = 6.06, 12.19, 2.44
H_STD, H_HC = 2.59, 2.90
PAIR_GAP = 0.076   # ISO: two 20 ft boxes end to end fill a 40 ft slot

# Roof reflectance (B, G, R, NIR) of common liveries; paint reflects strongly in the NIR.
LIVERIES = {
    "maersk_blue": (0.52, 0.40, 0.22, 0.45),
    "msc_yellow": (0.12, 0.42, 0.52, 0.58),
    "msc_ochre": (0.10, 0.28, 0.40, 0.50),
    "cma_blue": (0.26, 0.12, 0.08, 0.33),
    "cma_red": (0.08, 0.09, 0.38, 0.48),
    "evergreen": (0.15, 0.28, 0.10, 0.40),
    "cosco_blue": (0.38, 0.24, 0.15, 0.40),
    "cosco_white": (0.62, 0.64, 0.64, 0.62),
    "hapag_orange": (0.08, 0.24, 0.52, 0.55),
    "one_magenta": (0.30, 0.12, 0.38, 0.46),
    "rust": (0.09, 0.15, 0.30, 0.42),
    "grey": (0.30, 0.30, 0.30, 0.33),
    "dark_grey": (0.14, 0.14, 0.14, 0.20),
    "white_reefer": (0.70, 0.71, 0.70, 0.68),
    "brown": (0.10, 0.13, 0.20, 0.32),
}
LIVERY_P = np.array([14, 10, 5, 6, 6, 7, 6, 4, 5, 4, 8, 8, 3, 6, 4], float)
TARPS = {"grey_green": (0.16, 0.20, 0.18, 0.30), "tan": (0.20, 0.28, 0.34, 0.40),
         "grey": (0.24, 0.25, 0.25, 0.30), "blue": (0.45, 0.25, 0.10, 0.30)}
PAVEMENT = {"asphalt": (0.085, 0.09, 0.095, 0.12), "concrete": (0.24, 0.26, 0.27, 0.30),
            "old_concrete": (0.17, 0.18, 0.19, 0.23)}
# Sky light is bluer than the direct beam (Rayleigh): relative spectral weight per band.
SKY_SPECTRUM = np.array([1.7, 1.25, 0.9, 0.55])


@dataclass(frozen=True)
class StackTruth:
    polygon: Polygon          # footprint of the stack (one box top), image CRS
    size: str                 # "20" or "40"
    tiers: int
    height_m: float
    zone: str
    tarped: bool


@dataclass(frozen=True)
class ZoneTruth:
    teu: int
    n20: int
    n40: int
    ground_teu: int           # TEU of the bottom tier (a 40 ft slot counts 2)
    tiers: float              # teu / ground_teu
    tarped_stacks: int
    stacks: int


@dataclass(frozen=True)
class YardScene:
    image: xr.DataArray
    valid: xr.DataArray | None
    zones: dict[str, Polygon]
    sun_azimuth_deg: float
    sun_elevation_deg: float
    gsd: float
    condition: str
    truth: dict[str, ZoneTruth]
    stacks: tuple[StackTruth, ...]
    equipment: tuple[Polygon, ...] = field(default=())
    # Partly cloudy only (else None), at output resolution (row, col), 0-1: the cloud's
    # opacity (``valid`` is ``cloud_op < 0.4``) and the share of the direct beam its
    # shadow blocks, over 0.85 (the ground keeps the sky light under a cloud's shadow).
    cloud_op: np.ndarray | None = None
    cloud_shadow: np.ndarray | None = None


def _smooth_noise(rng, shape, sigma_px):
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return f / max(f.std(), 1e-9)


def _cast_shadow(height, res, azimuth, elevation):
    """Lit (1) or shadowed (0) per fine pixel: march towards the sun over the height map."""
    az = math.radians(azimuth)
    # Towards the sun in (row, col): sun in the north (az 0) is at -row.
    tr, tc = -math.cos(az), math.sin(az)
    tan_el = math.tan(math.radians(elevation))
    hmax = float(height.max())
    n = int(math.ceil(hmax / tan_el / res)) + 1
    rows, cols = height.shape
    pad = n + 1
    hp = np.pad(height, pad, mode="edge")
    horizon = np.zeros_like(height)
    for k in range(1, n + 1):
        dr, dc = int(round(k * tr)), int(round(k * tc))
        dist = math.hypot(dr, dc) * res
        sl = hp[pad + dr:pad + dr + rows, pad + dc:pad + dc + cols]
        np.maximum(horizon, sl - dist * tan_el, out=horizon)
    return (horizon <= height + 0.05).astype("float32")


def _sky_view(height, res):
    """Share of the sky seen: the bottom of a narrow slot between stacks sees little."""
    out = np.ones_like(height, dtype="float32")
    for r_m in (0.6, 1.5, 4.0):
        k = max(3, int(round(2 * r_m / res)) | 1)
        around = ndimage.maximum_filter(height, size=k)
        depth = around - height
        # Elevation angle of the surrounding rim as seen from this pixel.
        ang = np.arctan2(depth, r_m)
        out = np.minimum(out, np.cos(ang) ** 2)
    return np.clip(out, 0.15, 1.0)


def make_yard(seed: int, *, gsd: float = 0.5, condition: str = "clear", n_zones: int = 3,
              tiers_sd: float = 0.9) -> YardScene:
    """A container yard seen from above.

    ``condition``: clear, hazy, partly_cloudy or low_sun (sun 20-28 degrees; otherwise
    20-65 degrees). ``tiers_sd``: spread of the stacks' tiers around their block's mean
    (0: every stack of a block equally tall).
    """
    rng = np.random.default_rng(seed)
    fine = gsd / 3.0
    if condition == "low_sun":
        elevation = float(rng.uniform(20, 28))
    else:
        elevation = float(rng.uniform(30, 65))
    azimuth = float(rng.uniform(100, 260)) if rng.random() < 0.8 else float(rng.uniform(0, 360))
    yard_angle = float(rng.uniform(0, 180))
    pave_kind = str(rng.choice(list(PAVEMENT)))
    pave = np.array(PAVEMENT[pave_kind])

    # --- layout in yard coordinates (u along the rows, v across); metres -------------
    zones_local, stacks_local, equipment_local = {}, [], []
    v_cursor = 0.0
    for z in range(n_zones):
        zid = f"zone{z + 1}"
        n_blocks = int(rng.integers(1, 3))
        u0 = float(rng.uniform(0, 15))
        zone_boxes = []
        for b in range(n_blocks):
            n_rows = int(rng.integers(3, 8))
            n_bays = int(rng.integers(3, 9))
            gap_v = float(rng.uniform(0.2, 0.5))
            gap_u = float(rng.uniform(0.3, 0.5))
            pitch_v, pitch_u = W + gap_v, L40 + gap_u
            frac20 = float(rng.choice([0.0, 0.3, 0.6, 1.0]))
            mean_t = float(rng.uniform(1.3, 4.6))
            hc_share = float(rng.uniform(0.2, 0.8))
            for r in range(n_rows):
                for bay in range(n_bays):
                    uu = u0 + bay * pitch_u
                    vv = v_cursor + r * pitch_v
                    def tiers():
                        t = int(np.clip(np.round(rng.normal(mean_t, tiers_sd)), 0, 5))
                        return t
                    kind = "20" if rng.random() < frac20 else "40"
                    tarp = rng.random() < 0.04
                    if kind == "40":
                        t = tiers()
                        if t:
                            stacks_local.append(dict(u=uu, v=vv, L=L40, t=t, zone=zid, tarp=tarp,
                                                     hc=[rng.random() < hc_share for _ in range(t)]))
                    else:
                        for half in range(2):
                            t = tiers()
                            if t:
                                stacks_local.append(dict(u=uu + half * (L20 + PAIR_GAP), v=vv, L=L20, t=t,
                                                         zone=zid, tarp=tarp,
                                                         hc=[rng.random() < 0.2 for _ in range(t)]))
            block = (u0, v_cursor, u0 + n_bays * pitch_u - gap_u, v_cursor + n_rows * pitch_v - gap_v)
            zone_boxes.append(block)
            lane = float(rng.uniform(8, 20))
            # A reach stacker working the lane beside the block (half the time).
            if b < n_blocks - 1 and rng.random() < 0.5:
                equipment_local.append(dict(u=u0 + rng.uniform(0, block[2] - u0 - 12), v=block[3] + lane * 0.3,
                                            L=11.0, Wd=4.5, h=3.6))
            v_cursor = block[3] + lane
        xs0 = min(bx[0] for bx in zone_boxes)
        ys0 = min(bx[1] for bx in zone_boxes)
        xs1 = max(bx[2] for bx in zone_boxes)
        ys1 = max(bx[3] for bx in zone_boxes)
        margin = float(rng.uniform(2.5, 5.0))
        zones_local[zid] = box(xs0 - margin, ys0 - margin, xs1 + margin, ys1 + margin)
        v_cursor += float(rng.uniform(10, 25))

    # Scene extent: layout rotated by the yard angle about the origin, plus a margin
    # wide enough for the longest shadow.
    allz = [rotate(p, yard_angle, origin=(0, 0)) for p in zones_local.values()]
    minx = min(p.bounds[0] for p in allz) - 45
    miny = min(p.bounds[1] for p in allz) - 45
    maxx = max(p.bounds[2] for p in allz) + 45
    maxy = max(p.bounds[3] for p in allz) + 45
    x_off = 400000.0 + 1000 * int(rng.integers(0, 100))
    y_off = 5000000.0 + 1000 * int(rng.integers(0, 100))
    crs = "EPSG:32636"
    out_grid = GridSpec.from_bounds(crs, (minx + x_off, miny + y_off, maxx + x_off, maxy + y_off), gsd)
    rows, cols = out_grid.shape
    frows, fcols = rows * 3, cols * 3
    fx = out_grid.transform.c + (np.arange(fcols) + 0.5) * fine - x_off
    fy = out_grid.transform.f - (np.arange(frows) + 0.5) * fine - y_off
    X, Y = np.meshgrid(fx, fy)
    a = math.radians(yard_angle)
    # Yard coordinates of every fine pixel (inverse rotation).
    U = X * math.cos(a) + Y * math.sin(a)
    V = -X * math.sin(a) + Y * math.cos(a)

    # --- ground ------------------------------------------------------------------
    tex = 1.0 + 0.06 * _smooth_noise(rng, (frows, fcols), 6.0 / fine) + 0.03 * rng.standard_normal((frows, fcols))
    albedo = pave[:, None, None] * tex[None].astype("float32")
    if pave_kind != "asphalt":
        # Slab joints every 5-6 m, sealed dark.
        slab = float(rng.uniform(5, 6))
        joint = (np.abs(((U + 100) % slab) - slab / 2) > slab / 2 - 0.06) | \
                (np.abs(((V + 100) % slab) - slab / 2) > slab / 2 - 0.06)
        albedo = np.where(joint[None], albedo * 0.6, albedo)
    # Patches of repair and oil stains.
    stains = _smooth_noise(rng, (frows, fcols), 2.0 / fine) > 2.2
    albedo = np.where(stains[None], albedo * 0.55, albedo)
    height = np.zeros((frows, fcols), "float32")

    # Lane markings: white lines along the lanes, yellow slot corners at block edges.
    for zid, zp in zones_local.items():
        x0, y0, x1, y1 = zp.bounds
        for yl in (y0 - 1.5, y1 + 1.5):
            m = (np.abs(V - yl) < 0.08) & (U > x0) & (U < x1)
            albedo[:, m] = np.array([0.55, 0.56, 0.55, 0.5])[:, None]
    # --- stacks ----------------------------------------------------------------------
    names = list(LIVERIES)
    p = LIVERY_P / LIVERY_P.sum()
    truth_stacks = []
    for s in stacks_local:
        inside = (U >= s["u"]) & (U < s["u"] + s["L"]) & (V >= s["v"]) & (V < s["v"] + W)
        if not inside.any():
            continue
        h = float(sum(H_HC if hc else H_STD for hc in s["hc"]))
        height[inside] = h
        if s["tarp"]:
            col = np.array(TARPS[str(rng.choice(list(TARPS)))])
            wr = 1.0 + 0.08 * np.sin(2 * np.pi * (U[inside] - s["u"]) / 1.7 + rng.uniform(0, 6))
        else:
            col = np.array(LIVERIES[str(rng.choice(names, p=p))])
            # Weathering: each box a little different; roof ribs every 0.6 m across the box.
            col = col * rng.uniform(0.8, 1.12)
            wr = 1.0 + 0.05 * np.sin(2 * np.pi * (U[inside] - s["u"]) / 0.6)
            wr *= 1.0 + 0.05 * rng.standard_normal(wr.shape)
            # Darker rim (top rails, corner castings).
            du = np.minimum(U[inside] - s["u"], s["u"] + s["L"] - U[inside])
            dv = np.minimum(V[inside] - s["v"], s["v"] + W - V[inside])
            wr = np.where(np.minimum(du, dv) < 0.12, wr * 0.75, wr)
        albedo[:, inside] = (col[:, None] * wr[None]).astype("float32")
        foot = box(s["u"], s["v"], s["u"] + s["L"], s["v"] + W)
        poly = translate(rotate(foot, yard_angle, origin=(0, 0)), x_off, y_off)
        truth_stacks.append(StackTruth(poly, "20" if s["L"] < 10 else "40", s["t"], h, s["zone"], s["tarp"]))
    equipment = []
    for e in equipment_local:
        inside = (U >= e["u"]) & (U < e["u"] + e["L"]) & (V >= e["v"]) & (V < e["v"] + e["Wd"])
        height[inside] = e["h"]
        albedo[:, inside] = np.array([0.10, 0.45, 0.55, 0.55])[:, None] * 0.9
        equipment.append(translate(rotate(box(e["u"], e["v"], e["u"] + e["L"], e["v"] + e["Wd"]),
                                          yard_angle, origin=(0, 0)), x_off, y_off))

    # --- light -----------------------------------------------------------------------
    lit = _cast_shadow(height, fine, azimuth, elevation)
    svf = _sky_view(height, fine)
    haze = float(rng.uniform(0.12, 0.3)) if condition == "hazy" else float(rng.uniform(0.0, 0.06))
    sky = 0.13 + 0.25 * haze
    sun = math.sin(math.radians(elevation)) * (1.0 - 0.5 * haze)
    norm = sun + sky
    irr = (sun * lit)[None] + (sky * SKY_SPECTRUM)[:, None, None] * svf[None]
    refl = albedo * irr / norm

    # Cloud deck for partly cloudy: a smooth field over a domain wide enough to hold
    # the clouds whose shadows fall on the frame.
    cloud_op = np.zeros((frows, fcols), "float32")
    cloud_shadow = np.zeros((frows, fcols), "float32")
    if condition == "partly_cloudy":
        cloud_h = float(rng.uniform(300, 1500))
        off_m = cloud_h / math.tan(math.radians(elevation))
        az = math.radians(azimuth)
        cres = 4.0
        span = (max(frows, fcols) * fine + off_m) * 1.0 + 400
        n = int(span / cres)
        field_ = _smooth_noise(rng, (n, n), 25.0 / cres)
        thr = float(rng.uniform(0.6, 1.1))
        # Frame centre at the field centre; the shadow of a cloud at p falls at p + off
        # away from the sun, so a frame pixel is shaded by the cloud at p - off.
        cy, cx = n // 2, n // 2
        rr = (np.arange(frows) - frows / 2) * fine / cres
        cc = (np.arange(fcols) - fcols / 2) * fine / cres
        R, C = np.meshgrid(rr, cc, indexing="ij")
        op = ndimage.map_coordinates(field_, [cy + R, cx + C], order=1)
        # Away from the sun is +row cos(az), -col sin(az) in (row, col).
        sr = cy + R - off_m * math.cos(az) / cres
        sc = cx + C + off_m * math.sin(az) / cres
        shp = ndimage.map_coordinates(field_, [sr, sc], order=1, mode="nearest")
        cloud_op = np.clip((op - thr) / 0.5, 0, 1).astype("float32")
        cloud_shadow = np.clip((shp - thr) / 0.5, 0, 1).astype("float32")
        # Shadow: the direct beam is blocked.
        irr_s = (sun * lit * (1 - 0.85 * cloud_shadow))[None] + (sky * SKY_SPECTRUM)[:, None, None] * svf[None]
        refl = albedo * irr_s / norm
        cloud_col = np.array([0.75, 0.76, 0.77, 0.72])[:, None, None]
        refl = refl * (1 - cloud_op[None]) + cloud_col * cloud_op[None]
    # Residual haze after atmospheric correction: path radiance, lost contrast.
    path = haze * np.array([0.10, 0.075, 0.05, 0.025])
    refl = refl * (1.0 - 0.4 * haze) + path[:, None, None]

    # --- sensor ------------------------------------------------------------------------
    refl = ndimage.gaussian_filter(refl, (0, 0.5, 0.5))
    img = refl.reshape(4, rows, 3, cols, 3).mean(axis=(2, 4))
    psf = float(rng.uniform(0.45, 0.75))   # output pixels
    img = ndimage.gaussian_filter(img, (0, psf, psf))
    img = img + rng.standard_normal(img.shape) * (0.003 + 0.01 * img)
    img = np.clip(np.round(img * 4095) / 4095, 0, 1).astype("float32")
    image = out_grid.attach(img, bands=["B", "G", "R", "NIR"])
    valid = None
    op_out = shadow_out = None
    if condition == "partly_cloudy":
        # A cloud mask flags the thick cloud; its thin edge passes as clear.
        op_out = cloud_op.reshape(rows, 3, cols, 3).mean(axis=(1, 3))
        valid = out_grid.attach(op_out < 0.4)
        shadow_out = cloud_shadow.reshape(rows, 3, cols, 3).mean(axis=(1, 3))
    zones = {zid: translate(rotate(p_, yard_angle, origin=(0, 0)), x_off, y_off)
             for zid, p_ in zones_local.items()}
    truth = {}
    for zid in zones:
        ss = [s for s in truth_stacks if s.zone == zid]
        n20 = sum(s.tiers for s in ss if s.size == "20")
        n40 = sum(s.tiers for s in ss if s.size == "40")
        ground = sum(1 if s.size == "20" else 2 for s in ss)
        teu = n20 + 2 * n40
        truth[zid] = ZoneTruth(teu, n20, n40, ground, teu / max(ground, 1), sum(s.tarped for s in ss), len(ss))
    return YardScene(image, valid, zones, azimuth, elevation, gsd, condition, truth, tuple(truth_stacks),
                     tuple(equipment), op_out, shadow_out)


def score_yard(scene: YardScene, result, observed: np.ndarray | None = None) -> list[dict]:
    """Per-zone comparison of a :func:`changedet.objects.containers.count_containers` result.

    ``observed`` (row, col) is the mask of pixels the counter reads (its
    ``observed_mask``): under cloud the visible truth is each stack's TEU times the share
    of its footprint there. ``teu_error`` compares the count with that visible TEU;
    ``teu_error_extrapolated`` the count over ``observed_fraction`` with the whole zone.
    """
    grid = GridSpec.of(scene.image)
    dets = [d for d in result.detections]
    rows = []
    for pf in result.per_feature:
        zid = pf["id"]
        tr = scene.truth[zid]
        visible = float(tr.teu)
        if observed is not None:
            visible = 0.0
            for s in scene.stacks:
                if s.zone != zid:
                    continue
                m = rfeatures_mask(s.polygon, grid)
                share = float(observed[m].mean()) if m.any() else 0.0
                visible += s.tiers * (1 if s.size == "20" else 2) * share
        est = float(pf["count"])
        of = float(pf.get("observed_fraction", 1.0))
        slots = float(pf.get("by_type", {}).get("ground_slots", 0.0))
        zdets = [d for d in dets if d.feature_id == zid]
        tarp_hit = sum(1 for s in scene.stacks if s.zone == zid and s.tarped
                       and any(d.attrs.get("tarped") and d.polygon.intersects(s.polygon) for d in zdets))
        rows.append({
            "zone": zid, "truth_teu": tr.teu, "visible_teu": round(visible, 1), "est_teu": est,
            "teu_error": abs(est - visible) / max(visible, 1.0),
            "teu_error_extrapolated": abs(est / max(of, 1e-3) - tr.teu) / max(tr.teu, 1),
            "truth_ground_teu": tr.ground_teu, "est_ground_slots": slots,
            "ground_error": abs(slots - tr.ground_teu * (visible / max(tr.teu, 1))) / max(tr.ground_teu, 1),
            "truth_tiers": round(tr.tiers, 2), "est_tiers": round(est / slots, 2) if slots else None,
            "n20": tr.n20, "n40": tr.n40, "truth_tarped": tr.tarped_stacks,
            "est_tarped": int(pf.get("tarped_stacks", 0)), "tarped_found": tarp_hit,
            "observed_fraction": of,
        })
    return rows


def rfeatures_mask(poly: Polygon, grid: GridSpec) -> np.ndarray:
    from rasterio import features as rf

    return rf.rasterize([(poly, 1)], out_shape=grid.shape, transform=grid.transform, fill=0,
                        dtype="uint8").astype(bool)
