"""An independent harbour scene generator (not changedet's simulator): VHR optical and
Sentinel-1-like SAR views of one layout.

Designed from the real world: a straight quay with berths along it, ships of real
sizes (tugs 25-35 m, general cargo 80-140 m, bulkers 180-230 m, container ships
150-300 m, tankers 120-250 m; beam from each class's length/beam ratio) moored
alongside (fenders: 1-3 m off the quay face) or at anchor at any heading, some
underway with a foam wake. Decks by class: container bays in carrier colours, hatch
covers, tanker pipe decks, white superstructure; freeboard and superstructure cast
shadows on the water.

VHR optical (0.5-1 m): water with swell, capillary texture and sun glint, quay
concrete with ship-to-shore cranes, PSF, signal-dependent noise, 12-bit quantisation,
residual haze, partial cloud (``valid`` False under thick cloud) and low sun.

SAR (10 m, linear sigma0 in a ``VV`` band): calm water about -22 dB, wind-roughened
water -16 to -11 dB under a smooth wind field, land -8 to -4 dB with bright point
scatterers, hulls -2 to +6 dB with dominant scatterers at +12 to +25 dB whose sidelobes
(Hamming-weighted sinc, about -21 dB) spread along range and azimuth; Gamma speckle of
``looks`` looks over everything.

Truth: hull polygons, length, heading (degrees from north, 0-180), at_berth / at_anchor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr
from rasterio import features as rfeatures
from scipy import ndimage
from shapely.affinity import rotate, translate
from shapely.geometry import Polygon, box

from changedet.grid import GridSpec

CRS = "EPSG:32631"
X0, Y0 = 560000.0, 5700000.0
EXTENT = (0.0, 0.0, 2400.0, 1800.0)          # layout extent (m, local)
VHR_WINDOW = (600.0, 900.0, 1500.0, 1500.0)  # the quay and the anchorage near it
QUAY_Y = 1400.0                              # quay face (local y); land north of it

# class: (length range m, length/beam ratio, freeboard + deck cargo height m)
CLASSES = {
    "tug": ((25, 35), 3.0, 4.0),
    "general_cargo": ((80, 140), 6.0, 8.0),
    "bulker": ((180, 230), 6.5, 10.0),
    "container": ((150, 300), 7.0, 18.0),
    "tanker": ((120, 250), 5.8, 9.0),
}
BOX_COLOURS = np.array([(0.52, 0.40, 0.22, 0.45), (0.12, 0.42, 0.52, 0.58), (0.08, 0.09, 0.38, 0.48),
                        (0.15, 0.28, 0.10, 0.40), (0.62, 0.64, 0.64, 0.62), (0.08, 0.24, 0.52, 0.55),
                        (0.30, 0.30, 0.30, 0.33), (0.09, 0.15, 0.30, 0.42), (0.30, 0.12, 0.38, 0.46)])
WATER = np.array([0.055, 0.065, 0.04, 0.015])
QUAY = np.array([0.22, 0.24, 0.25, 0.28])


@dataclass(frozen=True)
class Ship:
    polygon: Polygon      # hull outline, image CRS
    cls: str
    length_m: float
    beam_m: float
    heading_deg: float    # axis azimuth from north, 0-180
    at: str               # "at_berth" or "at_anchor"
    underway: bool


@dataclass(frozen=True)
class Harbour:
    ships: tuple[Ship, ...]
    berths: dict[str, Polygon]
    water: Polygon
    land: Polygon
    seed: int


def _hull(length, beam):
    """Hull outline about its centre, bow towards +x: parallel body, pointed bow, round stern."""
    bow = 0.14 * length
    half = length / 2
    pts = [(-half + beam * 0.15, -beam / 2), (half - bow, -beam / 2), (half, 0.0), (half - bow, beam / 2),
           (-half + beam * 0.15, beam / 2), (-half, beam * 0.25), (-half, -beam * 0.25)]
    return Polygon(pts)


def make_harbour(seed: int) -> Harbour:
    """The layout: quay, berths, ships at berth and at anchor."""
    rng = np.random.default_rng(seed)
    land = box(EXTENT[0], QUAY_Y, EXTENT[2], EXTENT[3])
    water = box(EXTENT[0], EXTENT[1], EXTENT[2], QUAY_Y)
    ships, berths = [], {}
    x = 150.0
    k = 0
    while x < EXTENT[2] - 250:
        length_b = float(rng.uniform(180, 340))
        bid = f"berth{k + 1}"
        berths[bid] = box(x, QUAY_Y - 70, x + length_b, QUAY_Y)
        if rng.random() < 0.75:
            cls = str(rng.choice(["general_cargo", "bulker", "container", "tanker", "tug"],
                                 p=[0.25, 0.2, 0.3, 0.15, 0.1]))
            lr, ratio, _ = CLASSES[cls]
            length = float(min(rng.uniform(*lr), length_b - 10))
            beam = length / ratio * float(rng.uniform(0.9, 1.1))
            gap = float(rng.uniform(1.0, 3.0))
            cx = x + float(rng.uniform(length / 2 + 3, length_b - length / 2 - 3))
            cy = QUAY_Y - gap - beam / 2
            flip = 180.0 if rng.random() < 0.5 else 0.0
            ships.append(_ship(_hull(length, beam), cls, length, beam, flip, cx, cy, "at_berth", False))
        x += length_b + float(rng.uniform(5, 20))
        k += 1
    # Anchorage and fairway: spaced out, any heading.
    n = int(rng.integers(6, 11))
    tries = 0
    while sum(s.at == "at_anchor" for s in ships) < n and tries < 500:
        tries += 1
        cls = str(rng.choice(list(CLASSES), p=[0.2, 0.25, 0.2, 0.15, 0.2]))
        lr, ratio, _ = CLASSES[cls]
        length = float(rng.uniform(*lr))
        beam = length / ratio * float(rng.uniform(0.9, 1.1))
        ang = float(rng.uniform(0, 360))
        cx, cy = float(rng.uniform(150, EXTENT[2] - 150)), float(rng.uniform(150, QUAY_Y - 200))
        s = _ship(_hull(length, beam), cls, length, beam, ang, cx, cy, "at_anchor", rng.random() < 0.3)
        # Ships swing at anchor on long cables: keep them well apart, and clear of the VHR
        # window's edge (a hull cut by the frame is no fair test).
        if any(s.polygon.distance(o.polygon) < 60 for o in ships):
            continue
        win = box(*VHR_WINDOW)
        if s.polygon.intersects(win.exterior.buffer(30)):
            continue
        ships.append(s)
    return Harbour(tuple(ships), {b: translate(p, X0, Y0) for b, p in berths.items()},
                   translate(water, X0, Y0), translate(land, X0, Y0), seed)


def _ship(hull, cls, length, beam, angle_ccw_from_east, cx, cy, at, underway):
    poly = translate(rotate(hull, angle_ccw_from_east, origin=(0, 0)), cx + X0, cy + Y0)
    heading = (90.0 - angle_ccw_from_east) % 180.0
    return Ship(poly, cls, length, beam, heading, at, underway)


def _burn(shapes, grid, fill=0, dtype="float32"):
    return rfeatures.rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=fill, dtype=dtype)


def _cast(height, res, azimuth, elevation):
    az = math.radians(azimuth)
    tr, tc = -math.cos(az), math.sin(az)
    tan_el = math.tan(math.radians(elevation))
    n = int(math.ceil(float(height.max()) / tan_el / res)) + 1
    rows, cols = height.shape
    hp = np.pad(height, n + 1, mode="edge")
    horizon = np.zeros_like(height)
    for k in range(1, n + 1):
        dr, dc = int(round(k * tr)), int(round(k * tc))
        sl = hp[n + 1 + dr:n + 1 + dr + rows, n + 1 + dc:n + 1 + dc + cols]
        np.maximum(horizon, sl - math.hypot(dr, dc) * res * tan_el, out=horizon)
    return (horizon <= height + 0.05).astype("float32")


def _ship_layers(s: Ship, grid: GridSpec, rng):
    """Albedo (4, r, c) and height (r, c) of one hull, in its bounding window."""
    minx, miny, maxx, maxy = s.polygon.buffer(2).bounds
    c0, r1 = ~grid.transform @ (minx, miny)
    c1, r0 = ~grid.transform @ (maxx, maxy)
    r0, c0 = max(int(r0), 0), max(int(c0), 0)
    r1, c1 = min(int(math.ceil(r1)), grid.shape[0]), min(int(math.ceil(c1)), grid.shape[1])
    if r1 <= r0 or c1 <= c0:
        return None
    sub = GridSpec(grid.crs, grid.transform @ grid.transform.translation(c0, r0), (r1 - r0, c1 - c0))
    m = _burn([(s.polygon, 1)], sub) > 0
    xs, ys = np.meshgrid(sub.x, sub.y)
    cx, cy = s.polygon.centroid.x, s.polygon.centroid.y
    a = math.radians(90.0 - s.heading_deg)   # axis direction (either end)
    along = (xs - cx) * math.cos(a) + (ys - cy) * math.sin(a)
    across = -(xs - cx) * math.sin(a) + (ys - cy) * math.cos(a)
    L, B = s.length_m, s.beam_m
    _, _, h = CLASSES[s.cls]
    # The bow's end of the hull: the vertex farthest along the axis.
    coords = np.array(s.polygon.exterior.coords)
    proj = (coords[:, 0] - cx) * math.cos(a) + (coords[:, 1] - cy) * math.sin(a)
    sgn = 1.0 if proj.max() > -proj.min() else -1.0
    t = sgn * along / (L / 2)   # -1 stern ... +1 bow
    hull_col = np.array(rng.choice([(0.05, 0.05, 0.05, 0.06), (0.10, 0.10, 0.20, 0.20), (0.06, 0.06, 0.22, 0.28),
                                    (0.20, 0.20, 0.20, 0.22)]))
    deck = np.array(rng.choice([(0.15, 0.15, 0.28, 0.30), (0.18, 0.24, 0.18, 0.28), (0.22, 0.22, 0.22, 0.25)]))
    alb = np.zeros((4,) + m.shape, "float32") + deck[:, None, None]
    height = np.where(m, h * 0.6, 0.0).astype("float32")
    rim = np.abs(across) > B / 2 - max(1.0, 0.06 * B)
    alb[:, rim] = hull_col[:, None]
    if s.cls == "container":
        bay = np.floor((t + 1) * L / 2 / 13.0)
        cell = np.floor(across / 2.6)
        code = (bay * 7 + cell * 3).astype(int) % len(BOX_COLOURS)
        cargo = (t > -0.55) & (t < 0.8) & ~rim & (np.abs(across) < B / 2 - 1.5)
        # Empty bays here and there: the hull's deck shows through.
        empty = (np.floor((t + 1) * L / 2 / 13.0).astype(int) * 2654435761 % 97) < 20
        cargo &= ~empty
        alb[:, cargo] = BOX_COLOURS[code[cargo]].T * (0.85 + 0.15 * ((bay[cargo] % 2)))
        height[cargo] = h
    elif s.cls in ("bulker", "general_cargo"):
        hatch = ((((t + 1) * L / 2) % 24.0) < 16.0) & (t > -0.6) & (t < 0.8) & (np.abs(across) < 0.35 * B)
        alb[:, hatch] = np.array(rng.choice([(0.20, 0.30, 0.20, 0.35), (0.10, 0.10, 0.35, 0.40),
                                             (0.30, 0.30, 0.30, 0.33)]))[:, None]
        height[hatch] = h * 0.8
    elif s.cls == "tanker":
        pipe = (np.abs(across) < 1.5) & (t > -0.6) & (t < 0.85)
        alb[:, pipe] = np.array([0.45, 0.45, 0.45, 0.45])[:, None]
        height[pipe] = h * 0.7
    # Superstructure aft (tugs: amidships), white, tall.
    if s.cls == "tug":
        sup = (np.abs(t) < 0.3) & (np.abs(across) < 0.3 * B)
    else:
        sup = (t > -0.9) & (t < -0.75) & (np.abs(across) < 0.45 * B)
    alb[:, sup] = np.array([0.60, 0.62, 0.62, 0.58])[:, None]
    height[sup] = h + 15.0 if s.cls != "tug" else h + 5.0
    alb *= m[None]
    height *= m
    return (slice(r0, r1), slice(c0, c1)), m, alb, height, t, across


def render_vhr(h: Harbour, seed: int, *, gsd: float = 1.0, condition: str = "clear"):
    """(image, valid, truth ships in the frame, berths, water, sun azimuth/elevation)."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = VHR_WINDOW
    grid = GridSpec.from_bounds(CRS, (x0 + X0, y0 + Y0, x1 + X0, y1 + Y0), gsd)
    rows, cols = grid.shape
    elevation = float(rng.uniform(15, 25)) if condition == "low_sun" else float(rng.uniform(30, 65))
    azimuth = float(rng.uniform(110, 250))
    land = _burn([(h.land, 1)], grid) > 0
    xs, ys = grid.x, grid.y
    X, Y = np.meshgrid(xs, ys)
    # Water: swell (long crests), chop, sun glint on facets tilted towards the sun.
    swell_dir = rng.uniform(0, np.pi)
    wl = rng.uniform(40, 120)
    phase = (X * math.cos(swell_dir) + Y * math.sin(swell_dir)) * 2 * np.pi / wl
    wind = float(rng.uniform(0.2, 1.0))
    chop = ndimage.gaussian_filter(rng.standard_normal((rows, cols)), 1.0)
    chop /= chop.std()
    water_t = 1.0 + 0.08 * np.sin(phase) + 0.10 * wind * chop
    alb = (WATER[:, None, None] * water_t[None]).astype("float32")
    glint_p = 0.002 + 0.01 * wind * (1.0 if elevation > 50 else 0.3)
    glint = (rng.random((rows, cols)) < glint_p) & ~land
    glint = ndimage.binary_dilation(glint, iterations=1) & (rng.random((rows, cols)) < 0.5)
    height = np.zeros((rows, cols), "float32")
    # Land: quay apron, a crane rail, STS cranes, yard behind.
    tex = 1.0 + 0.05 * ndimage.gaussian_filter(rng.standard_normal((rows, cols)), 3.0) * 10
    alb = np.where(land[None], QUAY[:, None, None] * np.clip(tex, 0.6, 1.4)[None], alb).astype("float32")
    height[land] = 3.0
    quay_row = int(round((grid.transform.f - (QUAY_Y + Y0)) / gsd))
    for _ in range(int(rng.integers(2, 6))):
        cx = float(rng.uniform(x0 + 50, x1 - 50)) + X0
        c = int((cx - grid.transform.c) / gsd)
        # Legs and sill beam on the quay, boom raised: 25 m wide portal, 60 m tall.
        cr = slice(max(quay_row - int(40 / gsd), 0), quay_row - int(5 / gsd))
        cc = slice(max(c - int(12 / gsd), 0), c + int(12 / gsd))
        sub_h = height[cr, cc]
        frame = np.zeros(sub_h.shape, bool)
        frame[:, :max(1, int(2 / gsd))] = True
        frame[:, -max(1, int(2 / gsd)):] = True
        frame[:max(1, int(3 / gsd)), :] = True
        sub_h[frame] = 50.0
        a_ = alb[:, cr, cc]
        a_[:, frame] = np.array([0.10, 0.35, 0.55, 0.55])[:, None]
    truth = []
    win = box(x0 + X0, y0 + Y0, x1 + X0, y1 + Y0)
    foam = np.zeros((rows, cols), "float32")
    for s in h.ships:
        if not win.contains(s.polygon):
            continue
        truth.append(s)
        lay = _ship_layers(s, grid, rng)
        if lay is None:
            continue
        sl, m, a_s, h_s, t, across = lay
        alb[(slice(None),) + sl] = np.where(m[None], a_s, alb[(slice(None),) + sl])
        height[sl] = np.where(m, h_s, height[sl])
        if s.underway:
            # Foam wake behind the stern: a turbulent strip and a Kelvin V fading away.
            ax = math.radians(90.0 - s.heading_deg)
            coords = np.array(s.polygon.exterior.coords)
            cx_, cy_ = s.polygon.centroid.x, s.polygon.centroid.y
            proj = (coords[:, 0] - cx_) * math.cos(ax) + (coords[:, 1] - cy_) * math.sin(ax)
            sgn = 1.0 if proj.max() > -proj.min() else -1.0
            along = ((X - cx_) * math.cos(ax) + (Y - cy_) * math.sin(ax)) * sgn
            acr = -(X - cx_) * math.sin(ax) + (Y - cy_) * math.cos(ax)
            behind = -(along + s.length_m / 2)
            wake_len = 2.5 * s.length_m
            strip = (behind > 0) & (behind < wake_len) & (np.abs(acr) < s.beam_m * 0.4 * (1 + behind / wake_len))
            vee = (behind > 0) & (behind < wake_len) & (np.abs(np.abs(acr) - behind * 0.34) < 2.0)
            fade = np.clip(1 - behind / wake_len, 0, 1)
            foam = np.maximum(foam, np.where(strip, 0.6 * fade, 0) + np.where(vee, 0.25 * fade, 0))
    foam *= rng.random((rows, cols)) < 0.7
    on_water = ~land & (height == 0)
    alb = np.where(on_water[None], alb * (1 - foam[None]) + np.array([0.35, 0.37, 0.36, 0.2])[:, None, None]
                   * foam[None], alb)
    lit = _cast(height, gsd, azimuth, elevation)
    sun = math.sin(math.radians(elevation))
    haze = float(rng.uniform(0.12, 0.3)) if condition == "hazy" else float(rng.uniform(0.0, 0.05))
    sky = 0.13 + 0.25 * haze
    sky_sp = np.array([1.7, 1.25, 0.9, 0.55])
    irr = (sun * (1 - 0.5 * haze) * lit)[None] + (sky * sky_sp)[:, None, None]
    refl = alb * irr / (sun * (1 - 0.5 * haze) + sky)
    refl = np.where((glint & on_water)[None], np.array([0.5, 0.5, 0.5, 0.45])[:, None, None], refl)
    valid = None
    if condition == "partly_cloudy":
        f = ndimage.gaussian_filter(rng.standard_normal((rows // 8 + 1, cols // 8 + 1)), 6)
        f = ndimage.zoom(f / f.std(), 8, order=1)[:rows, :cols]
        op = np.clip((f - 0.7) / 0.5, 0, 1).astype("float32")
        refl = refl * (1 - op[None]) + np.array([0.75, 0.76, 0.77, 0.72])[:, None, None] * op[None]
        valid = grid.attach(op < 0.4)
    refl = refl * (1 - 0.4 * haze) + (haze * np.array([0.10, 0.075, 0.05, 0.025]))[:, None, None]
    psf = float(rng.uniform(0.5, 0.8))
    img = ndimage.gaussian_filter(refl, (0, psf, psf))
    img = img + rng.standard_normal(img.shape) * (0.003 + 0.01 * img)
    img = np.clip(np.round(img * 4095) / 4095, 0, 1).astype("float32")
    image = grid.attach(img, bands=["B", "G", "R", "NIR"])
    berths = {b: p for b, p in h.berths.items() if p.intersects(win)}
    berths = {b: p.intersection(win) for b, p in berths.items() if p.intersection(win).area > 2000}
    water = h.water.intersection(win)
    return image, valid, tuple(truth), berths, water, azimuth, elevation


def render_sar(h: Harbour, seed: int, *, res: float = 10.0, looks: float = 4.4, wind: str = "moderate"):
    """(sigma0 image with a VV band, truth ships, berths, water). ``wind``: calm, moderate, strong."""
    rng = np.random.default_rng(seed)
    grid = GridSpec.from_bounds(CRS, (EXTENT[0] + X0, EXTENT[1] + Y0, EXTENT[2] + X0, EXTENT[3] + Y0), res)
    rows, cols = grid.shape
    fine = res / 4.0
    fgrid = GridSpec.from_bounds(CRS, grid.bounds, fine)
    land = _burn([(h.land, 1)], fgrid) > 0
    # Water backscatter from the wind: calm -22 dB, moderate about -16, strong about -11,
    # varying smoothly (wind gusts, sheltered water near the quay is calmer).
    base = {"calm": -22.0, "moderate": -16.0, "strong": -11.0}[wind]
    field_ = ndimage.gaussian_filter(rng.standard_normal((rows // 4 + 2, cols // 4 + 2)), 3)
    field_ = ndimage.zoom(field_ / field_.std(), 16, order=1)[:land.shape[0], :land.shape[1]]
    db = base + 2.0 * field_
    db = np.where(land, -6.0 + 2.0 * ndimage.gaussian_filter(rng.standard_normal(land.shape), 4) * 3, db)
    sig = 10 ** (db / 10)
    hull = np.zeros(land.shape, "float32")
    points = []
    for s in h.ships:
        m = _burn([(s.polygon, 1)], fgrid) > 0
        hull_db = rng.uniform(-2, 6, size=m.sum())
        sig[m] = 10 ** (hull_db / 10)
        # Dominant scatterers: superstructure, cranes, container stacks edges.
        n_pts = 1 + int(s.length_m / 80)
        rr, cc = np.nonzero(m)
        for _ in range(n_pts):
            i = int(rng.integers(rr.size))
            points.append((rr[i] / 4.0, cc[i] / 4.0, 10 ** (rng.uniform(12, 25) / 10)))
        hull[m] = 1
    # Bright land points (cranes, buildings): double bounce.
    lr, lc = np.nonzero(land[::4, ::4])
    for i in rng.choice(lr.size, size=min(40, lr.size), replace=False):
        points.append((float(lr[i]), float(lc[i]), 10 ** (rng.uniform(10, 22) / 10)))
    # Area average to the output pixel, then a 20 m resolution cell (the pixel is half of it).
    img = sig.reshape(rows, 4, cols, 4).mean(axis=(1, 3))
    img = ndimage.gaussian_filter(img, 0.6)
    # Point responses: a sinc main lobe two pixels wide (20 m resolution) and sidelobes
    # tapered to -21.5 dB (Hamming-weighted processing), along the azimuth (track) and
    # range axes, turned by the track's angle to the map grid (terrain-corrected
    # products are north-up; the orbit is not), at the scatterer's sub-pixel position.
    track = math.radians(float(rng.choice([-1, 1])) * float(rng.uniform(8, 14)))
    t = np.arange(-14.0, 14.01, 0.25)
    resp = np.sinc(t / 2.0) ** 2
    resp = np.where(np.abs(t) >= 2.0, resp * 0.15, resp) * 0.25   # 4 samples a pixel
    axes = ((math.cos(track), math.sin(track)), (-math.sin(track), math.cos(track)))
    for r, c, amp in points:
        r = r + rng.uniform(-0.5, 0.5)
        c = c + rng.uniform(-0.5, 0.5)
        for ar, ac in axes:
            rr = np.round(r + t * ar).astype(int)
            cc = np.round(c + t * ac).astype(int)
            ok = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
            np.add.at(img, (rr[ok], cc[ok]), amp * resp[ok] * 0.5)
    img = img * rng.gamma(looks, 1.0 / looks, size=img.shape)
    image = grid.attach(img[None].astype("float32"), bands=["VV"])
    return image, tuple(h.ships), dict(h.berths), h.water


def _axis_diff(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def score_ships(truth, result, *, rule: str = "iou", min_iou: float = 0.5, tol_m: float = 0.0) -> dict:
    """Match detections to truth hulls one to one (greedy, best first).

    ``rule``: "iou" (IoU >= ``min_iou``) or "centre" (the detection's centroid inside the
    hull grown by ``tol_m``). Returns counts, precision/recall/F1, median length and
    heading errors of the matches and the share of matches with the right berth/anchor
    state; ``misses`` and ``false`` list what went wrong.
    """
    dets = list(result.detections)
    pairs = []
    for i, s in enumerate(truth):
        for j, d in enumerate(dets):
            if rule == "iou":
                inter = s.polygon.intersection(d.polygon).area
                if inter <= 0:
                    continue
                q = inter / s.polygon.union(d.polygon).area
                if q >= min_iou:
                    pairs.append((q, i, j))
            else:
                if s.polygon.buffer(tol_m).contains(d.polygon.centroid):
                    pairs.append((-d.polygon.centroid.distance(s.polygon.centroid), i, j))
    pairs.sort(reverse=True)
    ti, dj, matches = set(), set(), []
    for q, i, j in pairs:
        if i in ti or j in dj:
            continue
        ti.add(i)
        dj.add(j)
        matches.append((i, j))
    tp = len(matches)
    p = tp / len(dets) if dets else 1.0
    r = tp / len(truth) if truth else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    len_err = [abs(dets[j].attrs.get("length_m", 0) - truth[i].length_m) / truth[i].length_m for i, j in matches]
    head_err = [_axis_diff(dets[j].attrs.get("heading_deg", 0.0), truth[i].heading_deg) for i, j in matches
                if truth[i].length_m >= 2 * truth[i].beam_m]
    state = [dets[j].type == truth[i].at for i, j in matches]
    return {"truth": len(truth), "detected": len(dets), "tp": tp, "precision": p, "recall": r, "f1": f1,
            "length_err_median": float(np.median(len_err)) if len_err else None,
            "heading_err_median_deg": float(np.median(head_err)) if head_err else None,
            "state_accuracy": float(np.mean(state)) if state else None,
            "misses": [(truth[i].cls, round(truth[i].length_m), truth[i].at) for i in range(len(truth)) if i not in ti],
            "false": [(dets[j].type, dets[j].attrs.get("length_m")) for j in range(len(dets)) if j not in dj]}
