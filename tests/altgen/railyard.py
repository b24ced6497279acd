"""An independent very-high-resolution railyard scene generator (test and bench use only).

Built from the real world, not from changedet's simulator (``changedet/simulate`` was
not read while writing this): 1520 mm-gauge rolling stock with its catalogue
dimensions, ballast, sleepers and rails, catenary masts, a road and a building, shadows
cast by every object from its height along the drawn sun, and a sensor with a PSF,
pixel integration, haze, shot and read noise and 8- or 11-bit quantisation. It exists so
that the railcar counter can be scored on scenes whose look it was never tuned to.

Geometry is worked in a yard frame: ``u`` metres along the tracks, ``v`` metres across
(positive to the left of the direction of travel); the frame is rotated by a drawn
angle into a UTM grid. Everything is rendered on a fine grid (``gsd / k``), blurred by
the PSF and block-averaged to the sensor's pixels.

Car truth polygons are the car *bodies* (length over couplers minus the coupler gap to
the next car) at their true place in the image; the ``tracks`` handed to the counter
carry the drawn misregistration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import ndimage
from shapely.geometry import LineString, Polygon

from changedet.grid import GridSpec

# ---------------------------------------------------------------------------------------
# Rolling stock, 1520 mm gauge. Length over couplers (m), body width (m), height above
# rail (m). Sources: Russian freight-car catalogues (model numbers in comments).
# type -> list of (length over couplers, width, height, label)
STOCK = {
    "tank": [(12.02, 3.0, 4.7, "15-1443 oil"), (12.02, 3.0, 4.8, "15-1547"), (16.6, 3.1, 4.9, "15-150 long"),
             (14.8, 3.2, 4.6, "LPG 15-1200")],
    "boxcar": [(15.35, 3.3, 4.7, "11-217 120 m3"), (17.6, 3.3, 5.0, "11-280 158 m3"),
               (16.4, 3.25, 4.8, "11-066")],
    "gondola": [(13.92, 3.2, 3.5, "12-132"), (13.92, 3.2, 3.7, "12-9853")],
    "hopper": [(14.72, 3.2, 4.6, "19-752 cement"), (15.9, 3.2, 4.8, "19-7017 grain"),
               (10.87, 3.1, 4.2, "20-471 mineral")],
    "flatcar": [(14.62, 2.87, 1.35, "13-401"), (19.62, 2.87, 1.3, "13-4012")],
    "container_flat": [(13.72, 2.87, 1.35, "13-9004 short"), (19.62, 2.87, 1.3, "13-9004M")],
    "locomotive": [(16.97, 3.25, 5.1, "2TE10 section"), (18.15, 3.32, 5.1, "2TE116 section"),
                   (16.97, 3.1, 5.0, "TEM2 shunter")],
}

# The counter's classes (issue 6: tank, box, gondola/ore/hopper, flat or container flat,
# locomotive).
COUNTER_CLASS = {"tank": "tank", "boxcar": "boxcar", "gondola": "gondola", "hopper": "gondola",
                 "flatcar": "flatcar", "container_flat": "flatcar", "locomotive": "locomotive"}

# Reflectances (blue, green, red, NIR), typical library values.
MAT = {
    "ballast": (0.14, 0.15, 0.16, 0.20), "ballast_dirty": (0.075, 0.08, 0.085, 0.11),
    "sleeper_concrete": (0.24, 0.26, 0.27, 0.30), "sleeper_wood": (0.05, 0.055, 0.065, 0.10),
    "rail_bright": (0.36, 0.37, 0.38, 0.40), "rail_rusty": (0.06, 0.08, 0.13, 0.20),
    "grass": (0.035, 0.07, 0.045, 0.36), "dry_grass": (0.06, 0.10, 0.13, 0.27),
    "asphalt": (0.07, 0.08, 0.09, 0.11), "gravel": (0.15, 0.17, 0.19, 0.24), "soil": (0.07, 0.10, 0.14, 0.22),
    "snow": (0.86, 0.86, 0.84, 0.66), "old_snow": (0.52, 0.53, 0.52, 0.43),
    "black": (0.035, 0.035, 0.04, 0.05), "dark_grey": (0.09, 0.09, 0.095, 0.11),
    "light_grey": (0.30, 0.30, 0.30, 0.32), "oxide_brown": (0.05, 0.05, 0.11, 0.17),
    "green_paint": (0.05, 0.10, 0.06, 0.10), "blue_paint": (0.20, 0.10, 0.05, 0.16),
    "red_paint": (0.05, 0.05, 0.30, 0.36), "orange_paint": (0.04, 0.15, 0.45, 0.50),
    "white_paint": (0.60, 0.61, 0.60, 0.64), "yellow_paint": (0.05, 0.40, 0.50, 0.55),
    "galvanised": (0.26, 0.27, 0.28, 0.29), "coal": (0.03, 0.03, 0.033, 0.04),
    "iron_ore": (0.05, 0.05, 0.09, 0.14), "scrap": (0.08, 0.08, 0.10, 0.13),
    "crushed_stone": (0.20, 0.21, 0.22, 0.26), "wood_deck": (0.06, 0.08, 0.11, 0.18),
    "roof_metal": (0.22, 0.23, 0.24, 0.26), "roof_dark": (0.08, 0.08, 0.09, 0.12), "cloud": (0.75, 0.76, 0.76, 0.74),
}

GROUNDS = ("grass", "dry_grass", "gravel", "asphalt", "soil", "snow")
CONDITIONS = ("clear", "hazy", "partly_cloudy", "low_sun")


@dataclass(frozen=True)
class TruthCar:
    """One car as it stands: body polygon (image CRS, metres), type, track and visibility."""

    polygon: Polygon
    type: str          # the generator's type (hopper, container_flat ... included)
    counter_type: str  # the counter's class for it
    track_id: str
    u0_m: float        # body start along the track, metres
    u1_m: float
    observed: bool     # at least half the body outside the cloud mask
    in_cloud_shadow: bool


@dataclass(frozen=True)
class RailyardScene:
    """A rendered scene and everything needed to score a counter on it."""

    image: xr.DataArray            # (band R, G, B, NIR; y; x) reflectance, UTM
    valid: xr.DataArray | None     # False under the cloud mask (partly cloudy only)
    tracks: dict[str, LineString]  # centrelines as an AOI would give them (misregistered)
    true_tracks: dict[str, LineString]
    cars: tuple[TruthCar, ...]
    sun_azimuth_deg: float
    sun_elevation_deg: float
    gsd_m: float
    condition: str
    params: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
def make_railyard(seed: int, *, gsd_m: float | None = None, condition: str | None = None,
                  n_tracks: int | None = None, yard_length_m: float | None = None,
                  sun_azimuth_deg: float | None = None, track_angle_deg: float | None = None) -> RailyardScene:
    """Draw and render a railyard scene.

    Parameters
    ----------
    seed : int
        Seeds every random choice.
    gsd_m : float, optional
        Ground sample distance (m); drawn in 0.3-1.0 when not given.
    condition : {"clear", "hazy", "partly_cloudy", "low_sun"}, optional
        Weather and sun class; drawn when not given.
    n_tracks : int, optional
        Parallel tracks (2-6 drawn).
    yard_length_m : float, optional
        Length of the centrelines (m); 160-260 drawn.
    sun_azimuth_deg, track_angle_deg : float, optional
        Override the drawn sun azimuth (degrees clockwise from north) and the tracks'
        direction (degrees anticlockwise from east); every other draw stays the same.
    """
    rng = np.random.default_rng(seed)
    gsd = float(gsd_m if gsd_m is not None else rng.choice([0.3, 0.4, 0.5, 0.6, 0.75, 1.0]))
    cond = condition or str(rng.choice(CONDITIONS))
    if cond not in CONDITIONS:
        raise ValueError(f"condition {cond!r} is not one of {CONDITIONS}")
    ntr = int(n_tracks if n_tracks is not None else rng.integers(2, 7))
    length = float(yard_length_m if yard_length_m is not None else rng.uniform(160, 260))

    # Sun: elevation 35-65 deg (20-28 for low sun), any azimuth south of east-west
    # (northern hemisphere mid-latitudes, morning to evening).
    elev = float(rng.uniform(20, 28) if cond == "low_sun" else rng.uniform(35, 65))
    azim = float(rng.uniform(100, 260))
    if sun_azimuth_deg is not None:
        azim = float(sun_azimuth_deg)
    ground = str(rng.choice(GROUNDS, p=[0.25, 0.15, 0.2, 0.1, 0.15, 0.15]))
    winter = ground == "snow"

    # Yard frame: tracks along u, spaced across v; the frame's angle in the map is any.
    spacing = rng.uniform(4.8, 5.3, size=max(ntr - 1, 0))
    v_tracks = np.concatenate([[0.0], np.cumsum(spacing)])
    angle = float(rng.uniform(0, math.pi))
    if track_angle_deg is not None:
        angle = math.radians(track_angle_deg)
    ca, sa = math.cos(angle), math.sin(angle)
    crs = "EPSG:32637"
    ox, oy = float(rng.uniform(4.0e5, 6.0e5)), float(rng.uniform(6.0e6, 6.3e6))

    def to_xy(u, v):
        u = np.asarray(u, float)
        v = np.asarray(v, float)
        return ox + u * ca - v * sa, oy + u * sa + v * ca

    # Scene extent in the yard frame: room for a road on one side and a building on the other.
    side_road = 1 if rng.random() < 0.5 else -1
    v_lo, v_hi = v_tracks[0] - 14.0, v_tracks[-1] + 14.0
    u_lo, u_hi = -8.0, length + 8.0
    corners = np.array([to_xy(u, v) for u in (u_lo, u_hi) for v in (v_lo, v_hi)])
    grid = GridSpec.from_bounds(crs, (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(),
                                      corners[:, 1].max()), gsd)
    k = 3 if gsd >= 0.5 else 2
    fres = gsd / k
    rows, cols = grid.shape[0] * k, grid.shape[1] * k
    x0, y1 = grid.transform.c, grid.transform.f
    fx = (x0 + (np.arange(cols) + 0.5) * fres).astype(np.float64)
    fy = (y1 - (np.arange(rows) + 0.5) * fres).astype(np.float64)
    dx = fx[None, :] - ox
    dy = fy[:, None] - oy
    U = (dx * ca + dy * sa).astype(np.float32)
    V = (-dx * sa + dy * ca).astype(np.float32)

    alb = np.empty((4, rows, cols), np.float32)
    z = np.zeros((rows, cols), np.float32)
    # cosine of the incidence angle on each surface, relative to flat ground
    sun_dir = np.array([math.cos(math.radians(elev)) * math.sin(math.radians(azim)),
                        math.cos(math.radians(elev)) * math.cos(math.radians(azim)),
                        math.sin(math.radians(elev))])   # east, north, up
    # the sun's horizontal direction in the yard frame
    su = sun_dir[0] * ca + sun_dir[1] * sa
    sv = -sun_dir[0] * sa + sun_dir[1] * ca
    sz = sun_dir[2]
    nu = np.zeros((rows, cols), np.float32)
    nv = np.zeros((rows, cols), np.float32)
    nz = np.ones((rows, cols), np.float32)

    def noise_field(scale_m: float, amp: float) -> np.ndarray:
        # smooth random texture with a correlation length of scale_m
        small = rng.standard_normal((max(rows // 8, 2), max(cols // 8, 2))).astype(np.float32)
        sm = ndimage.gaussian_filter(small, max(scale_m / (fres * 8), 0.5))
        sm /= max(float(sm.std()), 1e-6)
        up = ndimage.zoom(sm, (rows / sm.shape[0], cols / sm.shape[1]), order=1)[:rows, :cols]
        if up.shape != (rows, cols):
            up = np.pad(up, ((0, rows - up.shape[0]), (0, cols - up.shape[1])), mode="edge")
        return amp * up

    # -- ground ----------------------------------------------------------------------
    g1 = np.array(MAT[ground], np.float32)
    g2 = np.array(MAT[str(rng.choice(["soil", "gravel", "dry_grass", "old_snow" if winter else "grass"]))],
                  np.float32)
    blend = 1 / (1 + np.exp(-noise_field(12.0, 2.5)))
    alb[:] = g1[:, None, None] * blend + g2[:, None, None] * (1 - blend)
    alb *= (1 + noise_field(0.8, 0.08) + rng.normal(0, 0.05, (rows, cols)).astype(np.float32))
    # yard ground between and just outside the tracks: dirty gravel
    yard = (V > v_tracks[0] - 4.0) & (V < v_tracks[-1] + 4.0)
    yg = np.array(MAT["old_snow"] if winter else MAT["gravel"], np.float32) * 0.8
    tex = 1 + noise_field(1.5, 0.12) + rng.normal(0, 0.06, (rows, cols)).astype(np.float32)
    alb[:, yard] = (yg[:, None] * tex[yard])
    # road on one side, parallel to the tracks
    v_road = (v_tracks[-1] + 8.5) if side_road > 0 else (v_tracks[0] - 8.5)
    road = np.abs(V - v_road) < 3.0
    alb[:, road] = np.array(MAT["asphalt"], np.float32)[:, None] * tex[road]
    mark = road & (np.abs(V - v_road) < 0.07) & ((U % 9.0) < 3.0)
    alb[:, mark] = np.array(MAT["white_paint"], np.float32)[:, None]
    # per-track ballast, sleepers and rails
    sleeper_mat = "sleeper_wood" if rng.random() < 0.4 else "sleeper_concrete"
    for vt in v_tracks:
        dv = V - vt
        bed = np.abs(dv) < 1.8
        bm = "ballast_dirty" if rng.random() < 0.4 else "ballast"
        b = np.array(MAT[bm], np.float32)
        if winter and rng.random() < 0.5:
            b = 0.5 * b + 0.5 * np.array(MAT["old_snow"], np.float32)
        alb[:, bed] = b[:, None] * tex[bed]
        sl = bed & (np.abs(dv) < 1.375) & (((U + rng.uniform(0, 0.543)) % 0.543) < 0.27)
        alb[:, sl] = np.array(MAT[sleeper_mat], np.float32)[:, None] * tex[sl]
        rail_mat = np.array(MAT["rail_bright" if rng.random() < 0.7 else "rail_rusty"], np.float32)
        for rv in (-0.7965, 0.7965):   # rail centres: 1520 mm gauge + 73 mm head
            d = np.abs(dv - rv)
            cover = np.clip((0.075 / 2 + fres / 2 - d) / fres, 0, 1)   # area share of the 75 mm head
            m = cover > 0
            alb[:, m] = alb[:, m] * (1 - cover[m]) + rail_mat[:, None] * cover[m]
            z[m] = np.maximum(z[m], 0.18)
        # oil stains between the rails: common on yards, dark like a car
        for _ in range(rng.poisson(length / 60)):
            cu = rng.uniform(0, length)
            st = (np.abs(dv) < 0.7) & (np.abs(U - cu) < rng.uniform(0.5, 2.0))
            alb[:, st] *= 0.55

    occluders: list[tuple[float, float, float, float, float, bool]] = []   # u0, u1, v0, v1, top, hollow

    # catenary masts beside the outer tracks, every ~60 m (electrified yards)
    if rng.random() < 0.7:
        for vm in (v_tracks[0] - 3.1, v_tracks[-1] + 3.1):
            for um in np.arange(rng.uniform(0, 30), length, rng.uniform(55, 65)):
                m = (np.abs(U - um) < 0.2) & (np.abs(V - vm) < 0.2)
                alb[:, m] = np.array(MAT["light_grey"], np.float32)[:, None]
                z[m] = 10.0
                occluders.append((um - 0.2, um + 0.2, vm - 0.2, vm + 0.2, 10.0, False))
    # a building on the side away from the road
    bu0 = rng.uniform(0, length - 40)
    bu1 = bu0 + rng.uniform(15, 35)
    bv = (v_tracks[0] - 9.0, v_tracks[0] - 6.0) if side_road > 0 else (v_tracks[-1] + 6.0, v_tracks[-1] + 9.0)
    bh = float(rng.uniform(5, 10))
    bm = (U > bu0) & (U < bu1) & (V > bv[0] - 4.0) & (V < bv[1] + 4.0)
    roof = np.array(MAT[str(rng.choice(["roof_metal", "roof_dark", "oxide_brown"]))], np.float32)
    alb[:, bm] = roof[:, None] * (1 + 0.05 * rng.standard_normal(int(bm.sum())).astype(np.float32))
    z[bm] = bh
    occluders.append((bu0, bu1, bv[0] - 4.0, bv[1] + 4.0, bh, False))

    # -- rolling stock -----------------------------------------------------------------
    cars_uv: list[tuple[str, str, float, float, float, float]] = []   # type, track, u0, u1, vt, width
    track_ids = [f"T{i + 1}" for i in range(ntr)]
    for tid, vt in zip(track_ids, v_tracks):
        u = rng.uniform(1.0, 25.0)
        occupancy = rng.choice(["empty", "sparse", "train", "full"], p=[0.1, 0.2, 0.35, 0.35])
        if occupancy == "empty":
            continue
        while u < length - 12:
            # consists: blocks of same-type cars, a locomotive at a head now and then
            block_type = str(rng.choice(["tank", "boxcar", "gondola", "hopper", "flatcar", "container_flat",
                                         "locomotive"], p=[0.22, 0.17, 0.2, 0.13, 0.08, 0.12, 0.08]))
            n_block = 1 if block_type == "locomotive" else int(rng.integers(1, 12))
            if block_type == "locomotive" and rng.random() < 0.6:
                n_block = 2   # two-section 2TE10/2TE116
            spec = STOCK[block_type][int(rng.integers(len(STOCK[block_type])))]
            for _ in range(n_block):
                loc, w, h, label = spec
                gap = float(rng.uniform(0.8, 1.5))
                body = loc - gap
                if u + body > length - 1.0:
                    break
                cars_uv.append((block_type, tid, u, u + body, float(vt), w))
                _render_car(block_type, spec, u, u + body, float(vt), U, V, alb, z, nu, nv, nz, occluders, rng,
                            winter=winter, fres=fres)
                u += loc
            # breaks in the consist: uncoupled cars stand apart
            if occupancy == "sparse" or rng.random() < 0.25:
                u += float(rng.uniform(3, 40 if occupancy != "full" else 12))

    # -- light ---------------------------------------------------------------------------
    tan_e = math.tan(math.radians(elev))
    shadow = np.zeros((rows, cols), bool)
    for (a0, a1, b0, b1, top, hollow) in occluders:
        reach = top / tan_e
        # pixels whose ray toward the sun can reach this box
        pu0, pu1 = min(a0, a0 - su * reach / max(math.hypot(su, sv), 1e-9)), \
            max(a1, a1 - su * reach / max(math.hypot(su, sv), 1e-9))
        pv0, pv1 = min(b0, b0 - sv * reach / max(math.hypot(su, sv), 1e-9)), \
            max(b1, b1 - sv * reach / max(math.hypot(su, sv), 1e-9))
        sel = _bbox_index(U, V, pu0, pu1, pv0, pv1, to_xy, grid, fres, rows, cols)
        if sel is None:
            continue
        uu, vv, zz = U[sel], V[sel], z[sel]
        hs = math.hypot(su, sv)
        du, dv_ = su / hs, sv / hs
        with np.errstate(divide="ignore", invalid="ignore"):
            tu1 = (a0 - uu) / du if abs(du) > 1e-9 else np.where((uu >= a0) & (uu <= a1), -np.inf, np.inf)
            tu2 = (a1 - uu) / du if abs(du) > 1e-9 else np.where((uu >= a0) & (uu <= a1), np.inf, -np.inf)
            tv1 = (b0 - vv) / dv_ if abs(dv_) > 1e-9 else np.where((vv >= b0) & (vv <= b1), -np.inf, np.inf)
            tv2 = (b1 - vv) / dv_ if abs(dv_) > 1e-9 else np.where((vv >= b0) & (vv <= b1), np.inf, -np.inf)
        t_in = np.maximum(np.minimum(tu1, tu2), np.minimum(tv1, tv2))
        t_out = np.minimum(np.maximum(tu1, tu2), np.maximum(tv1, tv2))
        inside = (uu >= a0) & (uu <= a1) & (vv >= b0) & (vv <= b1)
        limit = (top - zz) / tan_e
        outside_hit = ~inside & (t_in > 0) & (t_in <= t_out) & (t_in < limit)
        hit = outside_hit | (inside & hollow & (t_out < limit))
        sub = shadow[sel]
        sub |= hit
        shadow[sel] = sub

    # Skylight share of the irradiance on flat ground, per band: bluer sky, more of it at low sun.
    sky = np.array([0.30, 0.22, 0.17, 0.12], np.float32) * (1.0 + 0.8 * (35 - min(elev, 35)) / 15)
    sky *= rng.uniform(0.85, 1.15)
    direct = 1.0 - sky
    cos_i = np.clip(nu * su + nv * sv + nz * sz, 0, None) / sz   # relative to flat ground
    # cloud and its shadow (thin edges dim partly)
    cloud_a = np.zeros((grid.shape), np.float32)
    shade_a = np.zeros((grid.shape), np.float32)
    if cond == "partly_cloudy":
        cloud_a, shade_a = _clouds(grid, rng, azim, elev, target=float(rng.uniform(0.12, 0.35)))
    shade_f = ndimage.zoom(shade_a, k, order=1)[:rows, :cols] if shade_a.any() else 0.0
    dir_light = direct[:, None, None] * cos_i[None] * (~shadow)[None] * (1 - shade_f)
    # sky view: ground between high cars sees less sky
    svf = np.where(z < 0.5, 0.85, 1.0).astype(np.float32)
    rad = alb * (dir_light + sky[:, None, None] * svf[None])
    # -- sensor --------------------------------------------------------------------------
    psf = float(rng.uniform(0.4, 0.8))
    rad = ndimage.gaussian_filter(rad, (0, psf * k, psf * k))
    img = rad.reshape(4, grid.shape[0], k, grid.shape[1], k).mean(axis=(2, 4))
    cloud_col = np.array(MAT["cloud"], np.float32)[:, None, None]
    img = img * (1 - cloud_a[None]) + cloud_col * cloud_a[None]
    if cond == "hazy":
        trans, path = float(rng.uniform(0.6, 0.8)), np.array([0.09, 0.07, 0.05, 0.03], np.float32)
        path *= rng.uniform(0.7, 1.3)
    else:
        trans, path = float(rng.uniform(0.93, 1.0)), np.array([0.012, 0.008, 0.005, 0.003], np.float32)
    # the adjacency effect: haze scatters light from around each pixel into it
    img = trans * img + (1 - trans) * 0.5 * ndimage.gaussian_filter(img, (0, 15, 15)) + path[:, None, None]
    bits = 11 if rng.random() < 0.6 else 8
    gain = (2047 / 1.1) if bits == 11 else (255 / 0.7)
    dn = img * gain
    # shot noise (variance proportional to the signal) and read noise of about 1 DN
    dn = dn + rng.standard_normal(dn.shape).astype(np.float32) * np.sqrt(0.004 * dn + 1.0)
    dn = np.clip(np.round(dn), 0, 2 ** bits - 1)
    refl = (dn / gain).astype(np.float32)
    # band order R, G, B, NIR as VHR products deliver
    da = grid.attach(refl[[2, 1, 0, 3]], bands=["R", "G", "B", "NIR"], name="reflectance")

    valid = None
    cloud_mask = cloud_a > 0.15
    if cond == "partly_cloudy":
        valid = grid.attach(~cloud_mask, name="valid")

    # -- truth -----------------------------------------------------------------------------
    true_tracks = {tid: LineString([tuple(map(float, to_xy(0.0, vt))), tuple(map(float, to_xy(length, vt)))])
                   for tid, vt in zip(track_ids, v_tracks)}
    mis_px = float(rng.uniform(0, 1.5))
    mis_dir = float(rng.uniform(0, 2 * math.pi))
    mdx, mdy = mis_px * gsd * math.cos(mis_dir), mis_px * gsd * math.sin(mis_dir)
    tracks = {tid: LineString([(x + mdx, y + mdy) for x, y in ln.coords]) for tid, ln in true_tracks.items()}
    cars = []
    for ctype, tid, u0, u1, vt, w in cars_uv:
        poly_uv = [(u0, vt - w / 2), (u1, vt - w / 2), (u1, vt + w / 2), (u0, vt + w / 2)]
        poly = Polygon([tuple(map(float, to_xy(a, b))) for a, b in poly_uv])
        r, c = grid.rowcol(*to_xy(np.linspace(u0, u1, 25)[:, None] + 0 * np.linspace(-w / 2, w / 2, 5)[None],
                                  vt + np.linspace(-w / 2, w / 2, 5)[None] + 0 * np.linspace(u0, u1, 25)[:, None]))
        ri = np.clip(np.round(r).astype(int), 0, grid.shape[0] - 1)
        ci = np.clip(np.round(c).astype(int), 0, grid.shape[1] - 1)
        seen_share = float((~cloud_mask[ri, ci]).mean())
        in_shade = bool((shade_a[ri, ci] > 0.5).mean() > 0.5)
        cars.append(TruthCar(poly, ctype, COUNTER_CLASS[ctype], tid, float(u0), float(u1), seen_share >= 0.5,
                             in_shade))
    params = {"ground": ground, "angle_deg": math.degrees(angle), "psf_sigma_px": psf, "bits": bits,
              "misregistration_px": mis_px, "misregistration_xy_m": (mdx, mdy), "n_tracks": ntr, "yard_length_m": length,
              "cloud_fraction": float(cloud_mask.mean()), "haze_transmission": trans,
              "sleepers": sleeper_mat, "spacing_m": [float(s) for s in spacing]}
    return RailyardScene(da, valid, tracks, true_tracks, tuple(cars), azim, elev, gsd, cond, params)


def _bbox_index(U, V, u0, u1, v0, v1, to_xy, grid, fres, rows, cols):
    # fine-pixel slice covering a yard-frame box
    xs, ys = to_xy(np.array([u0, u0, u1, u1]), np.array([v0, v1, v0, v1]))
    c0 = int(max(math.floor((xs.min() - grid.transform.c) / fres) - 1, 0))
    c1 = int(min(math.ceil((xs.max() - grid.transform.c) / fres) + 2, cols))
    r0 = int(max(math.floor((grid.transform.f - ys.max()) / fres) - 1, 0))
    r1 = int(min(math.ceil((grid.transform.f - ys.min()) / fres) + 2, rows))
    if c1 <= c0 or r1 <= r0:
        return None
    return (slice(r0, r1), slice(c0, c1))


def _render_car(ctype, spec, u0, u1, vt, U, V, alb, z, nu, nv, nz, occluders, rng, *, winter, fres):
    """Paint one car into the albedo, height and normal layers; register its occluding boxes."""
    loc, w, h, label = spec
    sel = _car_slice(U, V, u0, u1, vt, w)
    if sel is None:
        return
    uu, vv = U[sel], V[sel]
    du = uu - u0
    dv = vv - vt
    length = u1 - u0
    body = (du >= 0) & (du <= length) & (np.abs(dv) <= w / 2)
    a = alb[(slice(None),) + sel]
    zz, nnu, nnv, nnz = z[sel], nu[sel], nv[sel], nz[sel]
    dirt = float(rng.uniform(0.8, 1.2))
    tex = (1 + 0.06 * rng.standard_normal(uu.shape)).astype(np.float32)

    def paint(mask, mat, scale=1.0):
        col = np.array(MAT[mat] if isinstance(mat, str) else mat, np.float32) * scale
        a[:, mask] = col[:, None] * tex[mask] * dirt

    def snow_roof(mask):
        if winter and rng.random() < 0.5:
            cover = mask & (rng.random(uu.shape) < rng.uniform(0.5, 0.95))
            a[:, cover] = np.array(MAT["snow"], np.float32)[:, None] * tex[cover]

    if ctype == "tank":
        r = w / 2
        s = np.clip(dv / r, -0.999, 0.999)
        colour = str(rng.choice(["black", "black", "dark_grey", "light_grey", "white_paint"],
                                p=[0.45, 0.2, 0.15, 0.1, 0.1]))
        paint(body, colour)
        # dished heads at the ends, frame platforms beyond them
        head = 0.7
        plat = 0.6
        cyl = body & (du > plat) & (du < length - plat)
        nnv[cyl] = s[cyl]
        nnz[cyl] = np.sqrt(1 - s[cyl] ** 2)
        nnu[cyl] = 0.0
        e0 = cyl & (du < plat + head)
        e1 = cyl & (du > length - plat - head)
        nnu[e0] = -0.6
        nnu[e1] = 0.6
        ends = body & ~cyl
        paint(ends & (np.abs(dv) < 1.3), "dark_grey", 0.8)
        zz[body] = h
        zz[ends] = 1.3
        # dome and walkway on top
        dome = cyl & (np.hypot(du - length / 2, dv) < 0.55)
        paint(dome, "dark_grey")
        walk = cyl & (np.abs(dv) < 0.25) & (np.abs(du - length / 2) < length * 0.3)
        if rng.random() < 0.6:
            paint(walk, "galvanised", 0.7)
        occluders.append((u0 + plat, u1 - plat, vt - r, vt + r, h, False))
    elif ctype in ("boxcar", "hopper", "locomotive"):
        if ctype == "boxcar":
            colour = str(rng.choice(["oxide_brown", "green_paint", "dark_grey", "light_grey", "blue_paint"],
                                    p=[0.4, 0.2, 0.15, 0.15, 0.1]))
            roof = colour if rng.random() < 0.5 else "galvanised"
        elif ctype == "hopper":
            colour = str(rng.choice(["light_grey", "dark_grey", "green_paint", "oxide_brown", "yellow_paint"],
                                    p=[0.35, 0.2, 0.15, 0.2, 0.1]))
            roof = colour
        else:
            colour = str(rng.choice(["green_paint", "red_paint", "blue_paint", "orange_paint"]))
            roof = str(rng.choice(["light_grey", "dark_grey", colour]))
        paint(body, roof)
        # a slightly curved roof
        nnv[body] = np.clip(dv[body] / (w / 2), -1, 1) * 0.25
        nnz[body] = 1.0
        zz[body] = h
        if ctype == "boxcar":
            ribs = body & (((du + 0.25) % 1.1) < 0.12)
            paint(ribs, roof, 0.8)
        elif ctype == "hopper":
            slope = 2.2 if "cement" in label or "grain" in label else 1.5
            e0 = body & (du < slope)
            e1 = body & (du > length - slope)
            nnu[e0] = -0.8
            nnu[e1] = 0.8
            zz[e0] = h - 1.5
            zz[e1] = h - 1.5
            for hu in np.linspace(3.0, length - 3.0, 4):
                hatch = body & (np.hypot(du - hu, dv) < 0.4)
                paint(hatch, "dark_grey")
        else:
            # cab windscreens slope at the ends, radiator fans on the roof
            cab = 2.4
            e0 = body & (du < 0.6)
            e1 = body & (du > length - 0.6)
            nnu[e0] = -0.9
            nnu[e1] = 0.9
            paint(body & (np.abs(dv) > w / 2 - 0.35), colour)
            for fu in np.linspace(length * 0.55, length - cab - 1.5, 3):
                fan = body & (np.hypot(du - fu, dv) < 0.7)
                paint(fan, "black")
        snow_roof(body & (np.abs(dv) < w / 2 - 0.2))
        occluders.append((u0, u1, vt - w / 2, vt + w / 2, h, False))
    elif ctype == "gondola":
        colour = str(rng.choice(["oxide_brown", "dark_grey", "green_paint", "black"], p=[0.45, 0.25, 0.15, 0.15]))
        cargo = str(rng.choice(["empty", "coal", "iron_ore", "scrap", "crushed_stone"],
                               p=[0.25, 0.3, 0.2, 0.1, 0.15]))
        wall = 0.15
        rim = body & ((np.abs(dv) > w / 2 - wall) | (du < wall) | (du > length - wall))
        inner = body & ~rim
        paint(rim, colour, 1.15)
        zz[rim] = h
        if cargo == "empty":
            paint(inner, colour, 0.7)
            zz[inner] = 1.5
        else:
            paint(inner, cargo)
            # heaps along the car: a loading pattern of mounds
            nheap = int(rng.integers(2, 5))
            pos = (du[inner] / length) * nheap
            phase = pos - np.floor(pos) - 0.5
            hh = h - 0.6 + 0.5 * (0.5 - np.abs(phase)) - 0.6 * (np.abs(dv[inner]) / (w / 2)) ** 2
            zz[inner] = hh
            nnu[inner] = np.sign(phase) * 0.35 * nheap / length * 4
            nnv[inner] = np.clip(dv[inner] / (w / 2), -1, 1) * 0.45
            if cargo == "scrap":
                a[:, inner] *= (0.5 + rng.random(int(inner.sum()))).astype(np.float32)
        if winter and cargo != "empty" and rng.random() < 0.4:
            snow_roof(inner)
        occluders.append((u0, u1, vt - w / 2, vt + w / 2, h, True))
    elif ctype in ("flatcar", "container_flat"):
        paint(body, "wood_deck" if ctype == "flatcar" else "dark_grey")
        zz[body] = h
        occluders.append((u0, u1, vt - w / 2, vt + w / 2, h, False))
        if ctype == "container_flat":
            slots = [6.06] * 3 if length > 16 else [6.06] * 2
            if rng.random() < 0.5:
                slots = [12.19, 6.06] if length > 16 else [12.19]
            cu = 0.4
            for sl in slots:
                if cu + sl > length:
                    break
                if rng.random() < 0.85:
                    colour = str(rng.choice(["red_paint", "blue_paint", "green_paint", "white_paint", "light_grey",
                                             "oxide_brown", "orange_paint", "dark_grey"]))
                    box = body & (du >= cu) & (du <= cu + sl) & (np.abs(dv) <= 1.22)
                    paint(box, colour)
                    corr = box & (((du - cu) % 0.4) < 0.12)
                    paint(corr, colour, 0.85)
                    zz[box] = h + 2.59
                    snow_roof(box)
                    occluders.append((u0 + cu, u0 + cu + sl, vt - 1.22, vt + 1.22, h + 2.59, False))
                cu += sl + 0.05
    alb[(slice(None),) + sel] = a
    z[sel], nu[sel], nv[sel], nz[sel] = zz, nnu, nnv, nnz
    # normals are stored unnormalised; normalise where written
    n = np.sqrt(nu[sel] ** 2 + nv[sel] ** 2 + nz[sel] ** 2)
    nu[sel] /= n
    nv[sel] /= n
    nz[sel] /= n


def _car_slice(U, V, u0, u1, vt, w):
    # rows/cols where the car's yard-frame rectangle lies (U and V are affine in row/col)
    # U = a*col + b*row + c: the corners' fine indices bound the rectangle
    rows, cols = U.shape
    cu = float(U[0, 1] - U[0, 0]) if cols > 1 else 0.0
    ru = float(U[1, 0] - U[0, 0]) if rows > 1 else 0.0
    cv = float(V[0, 1] - V[0, 0]) if cols > 1 else 0.0
    rv = float(V[1, 0] - V[0, 0]) if rows > 1 else 0.0
    det = cu * rv - ru * cv
    pts = []
    for uu in (u0 - 0.5, u1 + 0.5):
        for vv in (vt - w / 2 - 0.5, vt + w / 2 + 0.5):
            du_, dv_ = uu - float(U[0, 0]), vv - float(V[0, 0])
            c = (du_ * rv - ru * dv_) / det
            r = (cu * dv_ - du_ * cv) / det
            pts.append((r, c))
    pts = np.array(pts)
    r0, r1 = int(max(math.floor(pts[:, 0].min()), 0)), int(min(math.ceil(pts[:, 0].max()) + 1, rows))
    c0, c1 = int(max(math.floor(pts[:, 1].min()), 0)), int(min(math.ceil(pts[:, 1].max()) + 1, cols))
    if r1 <= r0 or c1 <= c0:
        return None
    return (slice(r0, r1), slice(c0, c1))


def _clouds(grid: GridSpec, rng, azim: float, elev: float, *, target: float):
    """Cloud opacity and cloud-shadow strength on the sensor grid.

    Clouds are a field of soft blobs over a domain wider than the scene; the shadow is
    the same field displaced by the cloud base height along the anti-sun direction, so a
    shadow in the scene usually belongs to a cloud outside it.
    """
    rows, cols = grid.shape
    res = grid.resolution
    extent = max(rows, cols) * res

    def field(x, y, centres, radii):
        f = np.zeros(x.shape, np.float32)
        for (cx, cy), r in zip(centres, radii):
            f = np.maximum(f, np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r ** 2)).astype(np.float32))
        return f

    yy, xx = np.meshgrid(np.arange(rows) * res, np.arange(cols) * res, indexing="ij")
    n = int(rng.integers(2, 6))
    radii = rng.uniform(0.08, 0.25, n) * extent
    centres = rng.uniform(-0.2, 1.2, (n, 2)) * extent
    f = field(xx, yy, centres, radii)
    # choose the threshold that covers the drawn share of the scene
    thr = float(np.quantile(f, 1 - target))
    thr = max(thr, 0.05)
    soft = 0.15 * thr
    cloud = np.clip((f - thr) / soft + 0.5, 0, 1)
    # A cloud 400-1500 m up casts its shadow 200-4000 m away along the anti-sun
    # direction: the shadows in a scene this small belong to other clouds, so they are
    # drawn as an independent field of the same kind.
    centres2 = rng.uniform(-0.2, 1.2, (n, 2)) * extent
    g = field(xx, yy, centres2, radii)
    sthr = float(np.quantile(g, 1 - target * 0.7))
    shade = np.clip((g - sthr) / soft + 0.5, 0, 1) * float(rng.uniform(0.75, 0.95))
    return cloud.astype(np.float32), shade.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Scoring a counter's result against the truth.
def score(scene: RailyardScene, result) -> dict:
    """Per-track count errors, per-car matches at IoU >= 0.5 and type agreement.

    The truth is the cars the image shows: at least half outside the cloud mask and
    centred on track the counter reports observed (a stretch it gives up on, a cloud's
    shadow say, is reported as ``given_up`` cars, not as misses). Detections matching
    a car mostly under the cloud mask are neither hits nor false alarms.

    IoU is scored in the AOI's frame: a counter places its cars on the centrelines it is
    given, so the truth is moved by the drawn misregistration first (at 0.75-1 m pixels
    a 1.5 px sideways offset alone would push a perfect detection of a 3 m wide body
    below IoU 0.5).
    """
    from shapely.affinity import translate

    mdx, mdy = scene.params.get("misregistration_xy_m", (0.0, 0.0))
    per = {p["id"]: p for p in result.per_feature}
    hidden_runs = {tid: p.get("unobserved_runs_m", []) for tid, p in per.items()}

    def given_up(car: TruthCar) -> bool:
        c = 0.5 * (car.u0_m + car.u1_m)
        return any(a <= c <= b for a, b in hidden_runs.get(car.track_id, []))

    truth = [c for c in scene.cars if c.observed and not given_up(c)]
    n_given_up = sum(1 for c in scene.cars if c.observed and given_up(c))
    hidden = [c for c in scene.cars if not c.observed]
    dets = list(result.detections)
    tpoly = [translate(t.polygon, mdx, mdy) for t in truth]
    hpoly = [translate(h.polygon, mdx, mdy) for h in hidden]
    pairs = []
    for i, t in enumerate(tpoly):
        for j, d in enumerate(dets):
            if not t.intersects(d.polygon):
                continue
            inter = t.intersection(d.polygon).area
            iou = inter / (t.area + d.polygon.area - inter)
            if iou >= 0.5:
                pairs.append((iou, i, j))
    pairs.sort(reverse=True)
    ti, dj, matches = set(), set(), []
    for iou, i, j in pairs:
        if i in ti or j in dj:
            continue
        ti.add(i)
        dj.add(j)
        matches.append((i, j))
    neutral = set()
    for j, d in enumerate(dets):
        if j in dj:
            continue
        for h in hpoly:
            if h.intersects(d.polygon) and h.intersection(d.polygon).area > 0.3 * d.polygon.area:
                neutral.add(j)
                break
    tp = len(matches)
    fp = len(dets) - tp - len(neutral)
    fn = len(truth) - tp
    type_ok = sum(1 for i, j in matches if dets[j].type == truth[i].counter_type)
    tracks = []
    for tid in scene.tracks:
        n_true = sum(1 for c in truth if c.track_id == tid)
        n_est = sum(1 for j, d in enumerate(dets) if d.feature_id == tid and j not in neutral)
        tracks.append({"id": tid, "truth": n_true, "est": n_est,
                       "ape": abs(n_est - n_true) / n_true if n_true else None})
    by_type = {}
    for i, t in enumerate(truth):
        e = by_type.setdefault(t.type, {"n": 0, "found": 0, "type_ok": 0})
        e["n"] += 1
    for i, j in matches:
        e = by_type[truth[i].type]
        e["found"] += 1
        e["type_ok"] += int(dets[j].type == truth[i].counter_type)
    confusion = {}
    for i, j in matches:
        key = f"{truth[i].type}->{dets[j].type}"
        confusion[key] = confusion.get(key, 0) + 1
    return {"tp": tp, "fp": fp, "fn": fn, "type_ok": type_ok, "tracks": tracks, "by_type": by_type,
            "given_up": n_given_up, "n_truth": len(truth), "n_det": len(dets) - len(neutral),
            "confusion": confusion, "matched": [(i, j) for i, j in matches], "truth": truth}
