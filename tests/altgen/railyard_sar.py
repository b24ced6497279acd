"""An independent Sentinel-1 IW GRDH railyard scene generator (test and bench use only).

Written from radar physics and the real world, without reading changedet's simulator
(``changedet/simulate``) or its counters (``changedet/objects``), so that the
medium-resolution railcar estimate can be judged on scenes whose look it was not tuned
to. The yard layout, the 1520 mm gauge and the rolling-stock catalogue come from the
optical generator :mod:`tests.altgen.railyard`.

Model, in the order the scene is built
--------------------------------------

Geometry. Work is done in a yard frame: ``u`` metres along the tracks, ``v`` across
(positive to the left). The frame is rotated by a drawn angle into a UTM grid. The
radar flies along a drawn heading (Sentinel-1 is in a near-polar sun-synchronous orbit:
ascending passes head about 342-352 deg, descending 188-198 deg, clockwise from north)
and looks to the right, at an incidence angle drawn over the IW swath (30-46 deg).
``psi`` is the angle between the tracks and the flight (azimuth) direction, folded
into 0-90 deg: at ``psi = 0`` the car sides face the radar broadside.

Scattering (sigma0 in linear power, VV; VH by a ratio per mechanism):

* Distributed ground, rendered on a 0.5 m grid and block-averaged in linear power:
  ballast -12 to -8 dB, yard gravel -13 to -9 dB, grass/soil -15 to -10 dB, asphalt
  -20 to -16 dB (smooth: specular away from the radar). These are the usual C-band
  ranges for rough gravel, vegetated and bare ground and smooth pavement at 30-45 deg
  incidence (Ulaby, Moore & Fung, *Microwave Remote Sensing* vol. III; Ulaby & Dobson,
  *Handbook of Radar Scattering Statistics for Terrain*, 1989). VH/VV: -11 to -5 dB
  (surfaces -11 to -7, vegetation -8 to -5).
* Railcars: a car's mean RCS is written as a sigma0 over its body footprint, in dB:
  an orientation-independent part (underframe, bogies, ladders, open tops, roofs)
  of -3 to +7 dB by type, plus a side-wall/ground *dihedral* whose peak at ``psi = 0``
  brings the body to +3 (low flatcars) to +16 dB (boxcars, locomotives), falling off
  as ``exp(-psi^2 / (2 psi0^2))`` with ``psi0`` 3-9 deg. The fall-off is the
  "cardinal effect" of urban SAR: walls aligned with the flight direction are 10 dB
  and more brighter than the same walls turned by 10-20 deg (Franceschetti, Iodice &
  Riccio, IEEE TGRS 40(8), 2002; Dong, Forster & Ticehurst, IJRS 18(9), 1997). A
  15 x 3.2 m body at +10 dB is 480 m^2 (27 dBsm), at 0 dB 48 m^2 (17 dBsm), in the
  range reported for trucks and small vessels at C band (10-30 dBsm). The exact
  broadside dihedral (8 pi a^2 b^2 / lambda^2, ~70 dBsm for a 15 x 3 m wall) is never
  reached: car sides are ribbed, doored and not perfectly straight, hence the
  degrees-wide lobe. The dihedral only forms where the ground in front of the wall is
  lit: a car on the next track toward the radar (gap 1.6-2 m, height 3.5-5 m) shadows
  that ground, so packed yards show the sensor-side row brightest. End walls give the
  same kind of dihedral around ``psi = 90`` where they face the radar and are not
  screened by the next car. VH/VV: -10 to -6 dB for the diffuse part, -20 to -14 dB
  for dihedrals (double bounce preserves polarisation).
* Rails: a rail/ground line return aligned with the flight direction (narrow lobe,
  psi0 1.5-3 deg), rail joints every 25 m (jointed track) and turnouts at both yard
  throats as bright points; catenary masts (10-20 dBsm, a vertical pole over ground is
  a dihedral at every azimuth) and contact wires; a warehouse with a wall dihedral,
  a metal roof and its shadow; trucks on a road.
* Elevated returns (car roofs, wires, building roofs) are laid over toward the sensor
  by ``h cot(theta)``; the ground behind elevated objects, over ``h tan(theta)``, is in
  radar shadow (only thermal noise). Dihedral returns sit at the wall's foot.

Sensor. Distributed returns are circular complex Gaussian (fully developed speckle),
bright points are phasors of random phase; thermal noise (NESZ -25 to -21 dB, the IW
specification is -22 dB) is added as a distributed target. The complex field on a
2.5 m grid is convolved with the single-look impulse response (intensity FWHM about
5 m ground range x 22 m azimuth, IW SLC), detected, multilooked in range (GRDH: 5
range looks) to about 20 x 22 m resolution and block-averaged in linear power to 10 m
pixels. The look kernel is chosen so that the equivalent number of looks of a
homogeneous area is 4.4, the ESA figure for IW GRDH (Sentinel-1 Product Definition,
S1-RS-MDA-52-7440): speckle is Gamma-like with ENL 4.4 and correlated over about 2
pixels. Optionally the thermal noise is removed (mean NESZ subtracted) and/or the
output is in dB.

Truth: every car (type, track, body span, length over couplers), cars per track and
occupied length per track (the sum of the cars' lengths over couplers, the length an
analyst divides by a mean car length). The centrelines handed to a counter carry a
drawn misregistration of up to 0.5 pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import ndimage, signal
from shapely.geometry import LineString, Polygon

from changedet.grid import GridSpec
from tests.altgen.railyard import COUNTER_CLASS, STOCK

GSD_M = 10.0          # GRDH pixel spacing
CELL_M = 2.5          # speckle / impulse-response grid (4 x 4 cells per pixel)
FINE_M = 0.5          # sub-pixel rendering of distributed scatterers (5 x 5 per cell)
LAMBDA_M = 0.0555     # C band, 5.405 GHz
ENL_GRDH = 4.4        # IW GRDH equivalent number of looks (ESA product definition)

# Distributed sigma0 (VV, dB) ranges and VH/VV ratio ranges (dB) per ground class.
GROUND_SAR = {
    "ballast": ((-12.0, -8.0), (-9.0, -7.0)),
    "gravel": ((-13.0, -9.0), (-10.0, -7.0)),
    "grass": ((-15.0, -10.0), (-8.0, -5.0)),
    "dry_grass": ((-14.0, -11.0), (-9.0, -6.0)),
    "soil": ((-15.0, -10.0), (-11.0, -8.0)),
    "asphalt": ((-20.0, -16.0), (-10.0, -7.0)),
    "roof_metal": ((-14.0, -6.0), (-14.0, -10.0)),
}
BACKGROUNDS = ("grass", "dry_grass", "soil")

# Railcars: (orientation-independent body sigma0 dB, body sigma0 at psi = 0 dB,
# dihedral lobe half-width psi0 deg, wall height above rail m used for the dihedral).
# A car's values are drawn inside the ranges (loading, doors, dirt, design).
CAR_SAR = {
    "tank": ((0.0, 3.0), (10.0, 14.0), (3.0, 6.0)),        # smooth cylinder: narrow lobe
    "boxcar": ((2.0, 5.0), (13.0, 16.0), (5.0, 9.0)),       # tall flat ribbed steel sides
    "gondola": ((3.0, 6.0), (12.0, 15.0), (5.0, 9.0)),      # open top: inner corners at every azimuth
    "hopper": ((2.0, 5.0), (11.0, 14.0), (5.0, 9.0)),
    "flatcar": ((-3.0, 1.0), (3.0, 6.0), (4.0, 8.0)),       # 1.3 m deck: dihedral ~ b^2, ~11 dB weaker
    "container_flat": ((1.0, 4.0), (10.0, 14.0), (5.0, 9.0)),  # loaded: 2.6 m corrugated container sides
    "locomotive": ((4.0, 7.0), (13.0, 16.0), (5.0, 9.0)),
}
VH_DIFFUSE = (-10.0, -6.0)     # VH/VV of multiple-scattering structure (dB)
VH_DIHEDRAL = (-20.0, -14.0)   # VH/VV of a double bounce (dB)

PASSES = {"ascending": (342.0, 352.0), "descending": (188.0, 198.0)}   # heading, deg from north


@dataclass(frozen=True)
class SarCar:
    """One car: body polygon (image CRS, metres), type, track and span along it."""

    polygon: Polygon
    type: str            # generator type (STOCK key)
    counter_type: str    # the counter's class
    track_id: str
    u0_m: float          # body start along the track (m)
    u1_m: float          # body end (m)
    length_m: float      # length over couplers (m): body plus coupler gap
    sigma0_body_db: float  # expected VV body sigma0 in this geometry (dB, before shadowing of the dihedral)
    dihedral_lit: float    # share of the ground in front of its radar-facing side that is lit (nan: no lobe)


@dataclass(frozen=True)
class SarRailyardScene:
    """A rendered Sentinel-1-like scene and its truth."""

    image: xr.DataArray                 # (band VV, VH; y; x) sigma0, linear unless db=True
    tracks: dict[str, LineString]       # centrelines as an AOI would give them (misregistered)
    true_tracks: dict[str, LineString]
    cars: tuple[SarCar, ...]
    truth: dict                         # total_cars, cars_per_track, occupied_length_m, ...
    heading_deg: float                  # flight direction, clockwise from north
    incidence_deg: float
    psi_deg: float                      # angle between tracks and flight direction, 0-90
    gsd_m: float = GSD_M
    params: dict = field(default_factory=dict)


def _db(x):
    return 10.0 * np.log10(x)


def _lin(db):
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 10.0)


def _lobe(angle_deg: float, psi0_deg: float) -> float:
    """Dihedral gain relative to its peak for a wall turned ``angle_deg`` off broadside."""
    return float(math.exp(-0.5 * (angle_deg / psi0_deg) ** 2))


# ---------------------------------------------------------------------------------------
def make_sar_railyard(seed: int, *, n_tracks: int | None = None, yard_length_m: float | None = None,
                      fill: float | None = None, track_angle_deg: float | None = None,
                      psi_deg: float | None = None, orbit: str | None = None,
                      incidence_deg: float | None = None, noise_removed: bool | None = None,
                      db: bool = False, apron_size_m: tuple[float, float] | None = None) -> SarRailyardScene:
    """Draw and render a Sentinel-1 IW GRDH railyard scene.

    Parameters
    ----------
    seed : int
        Seeds every random choice.
    n_tracks : int, optional
        Parallel tracks (2-10 drawn).
    yard_length_m : float, optional
        Length of the track centrelines (m); 300-900 drawn.
    fill : float, optional
        Yard occupancy level in [0, 1] (0: mostly empty tracks, 1: mostly packed); drawn
        uniformly when not given.
    track_angle_deg : float, optional
        Direction of the tracks, degrees anticlockwise from east; drawn when not given.
    psi_deg : float, optional
        Angle between the tracks and the flight direction (deg); sets the track angle
        from the drawn heading (overrides ``track_angle_deg``).
    orbit : {"ascending", "descending"}, optional
        Pass direction; drawn when not given.
    incidence_deg : float, optional
        Incidence angle at the yard (deg); 30-46 drawn (IW swath).
    noise_removed : bool, optional
        Subtract the mean thermal noise (NESZ) as ESA's thermal-noise removal does;
        drawn (even odds) when not given.
    db : bool
        Return sigma0 in dB instead of linear power.
    apron_size_m : (float, float), optional
        Size (along, across the tracks, m) of the gravel apron beside the yard; drawn
        120-260 x 60-120 m when not given. A large apron gives a big homogeneous patch.

    Returns
    -------
    SarRailyardScene
    """
    # Independent streams: the layout and the scattering draws do not shift when an
    # override changes the grid size (the texture and speckle draw per cell).
    # The consists (occupancy), each car's scattering, the textures and the speckle have
    # their own streams, so the same seed with another ``fill`` is the same yard.
    rng, rng_occ, rng_car, rng_tex, rng_spk, rng_ph = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))
    ntr = int(n_tracks if n_tracks is not None else rng.integers(2, 11))
    length = float(yard_length_m if yard_length_m is not None else rng.uniform(300.0, 900.0))
    fill_ = float(fill if fill is not None else rng.uniform(0.0, 1.0))
    orbit_ = orbit or str(rng.choice(list(PASSES)))
    heading = float(rng.uniform(*PASSES[orbit_]))
    theta = float(incidence_deg if incidence_deg is not None else rng.uniform(30.0, 46.0))
    angle_draw = float(rng.uniform(0.0, 180.0))
    nr_draw = bool(rng.random() < 0.5)
    noise_rm = nr_draw if noise_removed is None else bool(noise_removed)
    nesz_db = float(rng.uniform(-25.0, -21.0))
    # Flight (azimuth) direction and look direction (right-looking), unit vectors (east, north).
    hr = math.radians(heading)
    az_en = np.array([math.sin(hr), math.cos(hr)])
    look_en = np.array([math.cos(hr), -math.sin(hr)])     # heading + 90 deg
    if psi_deg is not None:
        # track direction = azimuth direction turned by psi (anticlockwise), as an angle from east
        angle = math.atan2(az_en[1], az_en[0]) + math.radians(float(psi_deg))
    elif track_angle_deg is not None:
        angle = math.radians(float(track_angle_deg))
    else:
        angle = math.radians(angle_draw)
    ca, sa = math.cos(angle), math.sin(angle)
    psi = math.degrees(math.acos(min(1.0, abs(ca * az_en[0] + sa * az_en[1]))))
    # look direction in the yard frame
    Lu = float(look_en[0] * ca + look_en[1] * sa)
    Lv = float(-look_en[0] * sa + look_en[1] * ca)
    tan_t, cot_t = math.tan(math.radians(theta)), 1.0 / math.tan(math.radians(theta))

    # ---- layout (yard frame) ---------------------------------------------------------
    spacing = rng.uniform(4.8, 5.3, size=max(ntr - 1, 0))
    v_tracks = np.concatenate([[0.0], np.cumsum(spacing)])
    side_road = 1 if rng.random() < 0.5 else -1
    v_road = (v_tracks[-1] + 9.0) if side_road > 0 else (v_tracks[0] - 9.0)
    far = -side_road                        # building and apron on the side away from the road
    edge = v_tracks[0] - 8.0 if far < 0 else v_tracks[-1] + 8.0   # first metre beyond the yard on that side
    if apron_size_m is None:
        ap_l, ap_w = float(rng.uniform(120.0, 260.0)), float(rng.uniform(60.0, 120.0))
    else:
        ap_l, ap_w = (float(apron_size_m[0]), float(apron_size_m[1]))
    ap_l = min(ap_l, length + 80.0)
    bu_l, bu_w, bu_h = float(rng.uniform(30.0, 80.0)), float(rng.uniform(12.0, 25.0)), float(rng.uniform(6.0, 12.0))
    # building and apron side by side along the yard, a few metres beyond the last track
    bu0 = float(rng.uniform(0.0, max(length - bu_l, 1.0)))
    # the apron beside the building along the yard where it fits, else beyond the building
    if bu0 + bu_l + 15.0 + ap_l <= length + 40.0:
        ap0, ap_edge = bu0 + bu_l + 15.0, edge
    elif bu0 - 15.0 - ap_l >= -40.0:
        ap0, ap_edge = bu0 - 15.0 - ap_l, edge
    else:
        ap0, ap_edge = float(rng.uniform(-40.0, max(length + 40.0 - ap_l, -39.0))), edge + far * (bu_w + 15.0)
    if far < 0:
        bv = (edge - bu_w, edge)
        av = (ap_edge - ap_w, ap_edge)
    else:
        bv = (edge, edge + bu_w)
        av = (ap_edge, ap_edge + ap_w)
    v_lo = min(v_tracks[0], v_road, bv[0], av[0]) - 40.0
    v_hi = max(v_tracks[-1], v_road, bv[1], av[1]) + 40.0
    u_lo, u_hi = -60.0, length + 60.0

    crs = "EPSG:32637"
    ox, oy = float(rng.uniform(4.0e5, 6.0e5)), float(rng.uniform(6.0e6, 6.3e6))

    def to_xy(u, v):
        u = np.asarray(u, float)
        v = np.asarray(v, float)
        return ox + u * ca - v * sa, oy + u * sa + v * ca

    corners = np.array([to_xy(u, v) for u in (u_lo, u_hi) for v in (v_lo, v_hi)])
    grid = GridSpec.from_bounds(crs, (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(),
                                      corners[:, 1].max()), GSD_M)
    pad = 6                                  # output pixels of margin for the impulse response
    kc = int(round(GSD_M / CELL_M))
    crow, ccol = (grid.shape[0] + 2 * pad) * kc, (grid.shape[1] + 2 * pad) * kc
    cx0 = grid.transform.c - pad * GSD_M     # cell grid upper-left corner
    cy1 = grid.transform.f + pad * GSD_M

    def cell_index(x, y):
        c = np.floor((np.asarray(x) - cx0) / CELL_M).astype(np.int64)
        r = np.floor((cy1 - np.asarray(y)) / CELL_M).astype(np.int64)
        ok = (r >= 0) & (r < crow) & (c >= 0) & (c < ccol)
        return r, c, ok

    # ---- materials -------------------------------------------------------------------
    def draw_mat(name):
        (a, b), (c, d) = GROUND_SAR[name]
        vv = float(rng.uniform(a, b))
        return vv, vv + float(rng.uniform(c, d))

    bg1, bg2 = str(rng.choice(BACKGROUNDS)), str(rng.choice(BACKGROUNDS))
    mats = {"bg1": draw_mat(bg1), "bg2": draw_mat(bg2), "gravel": draw_mat("gravel"),
            "apron": draw_mat("gravel"), "asphalt": draw_mat("asphalt"), "roof": draw_mat("roof_metal")}
    ballast = [draw_mat("ballast") for _ in range(ntr)]

    # Smooth multiplicative texture on the cell grid (sd ~0.3-0.8 dB over 20-60 m):
    # fields are never perfectly homogeneous; kept mild so a gravel lot stays ENL ~4.4.
    def texture(scale_m, sd_db):
        # drawn on the 10 m pixel grid (the scales are 20 m and more) and interpolated to cells
        f = rng_tex.standard_normal((crow // kc, ccol // kc)).astype(np.float32)
        f = ndimage.gaussian_filter(f, scale_m / GSD_M, mode="wrap")
        f /= max(float(f.std()), 1e-6)
        return (sd_db * ndimage.zoom(f, kc, order=1, mode="nearest", grid_mode=True)).astype(np.float32)

    tex_db = texture(float(rng.uniform(20.0, 60.0)), float(rng.uniform(0.2, 0.4)))
    blend = 1.0 / (1.0 + np.exp(-2.5 * texture(80.0, 1.0)))   # which background class, 0-1

    # yard-frame fine raster over [u_lo, u_hi] x [v_lo, v_hi]
    nu_ = int(math.ceil((u_hi - u_lo) / FINE_M))
    nv_ = int(math.ceil((v_hi - v_lo) / FINE_M))
    uf = (u_lo + (np.arange(nu_) + 0.5) * FINE_M).astype(np.float64)
    vf = (v_lo + (np.arange(nv_) + 0.5) * FINE_M).astype(np.float64)
    # class index per (v, u) sample: mostly a function of v
    CLS = ["bg", "gravel", "asphalt", "apron", "roof"] + [f"ballast{i}" for i in range(ntr)]
    cls_v = np.zeros(nv_, np.int16)          # 0: background
    yard_v = (vf > v_tracks[0] - 4.0) & (vf < v_tracks[-1] + 4.0)
    cls_v[yard_v] = 1
    for i, vt in enumerate(v_tracks):
        cls_v[np.abs(vf - vt) < 1.8] = 5 + i
    cls_v[np.abs(vf - v_road) < 3.5] = 2
    cls = np.broadcast_to(cls_v[:, None], (nv_, nu_)).copy()
    apron_v = (vf >= av[0]) & (vf <= av[1])
    apron_u = (uf >= ap0) & (uf <= ap0 + ap_l)
    cls[np.ix_(apron_v, apron_u)] = 3
    bld_v = (vf >= bv[0]) & (vf <= bv[1])
    bld_u = (uf >= bu0) & (uf <= bu0 + bu_l)
    cls[np.ix_(bld_v, bld_u)] = 4
    height = np.zeros((nv_, nu_), np.float32)      # height of what stands there (m)
    height[np.ix_(bld_v, bld_u)] = bu_h

    # ---- rolling stock ---------------------------------------------------------------
    track_ids = [f"T{i + 1}" for i in range(ntr)]
    # fill 0: every track empty; 1: every track packed; between, a mix of empty tracks,
    # scattered cuts of cars, trains with breaks and packed tracks
    w_cls = np.array([(1.0 - fill_) ** 2, 1.2 * fill_ * (1.0 - fill_), 0.8 * fill_ * (1.0 - fill_), fill_ ** 2])
    w_cls /= w_cls.sum()
    cars_raw = []   # type, tid, track index, u0, u1, loc, width, height (wall), spec label
    for ti, (tid, vt) in enumerate(zip(track_ids, v_tracks)):
        occupancy = str(rng_occ.choice(["empty", "sparse", "train", "full"], p=w_cls))
        if occupancy == "empty":
            continue
        u = float(rng_occ.uniform(1.0, 40.0 if occupancy != "full" else 15.0))
        while u < length - 12.0:
            btype = str(rng_occ.choice(["tank", "boxcar", "gondola", "hopper", "flatcar", "container_flat",
                                    "locomotive"], p=[0.22, 0.17, 0.2, 0.13, 0.08, 0.12, 0.08]))
            n_block = 1 if btype == "locomotive" else int(rng_occ.integers(1, 16 if occupancy == "full" else 10))
            if btype == "locomotive" and rng_occ.random() < 0.6:
                n_block = 2
            spec = STOCK[btype][int(rng_occ.integers(len(STOCK[btype])))]
            stop = False
            for _ in range(n_block):
                loc, w, h, label = spec
                gap = float(rng_occ.uniform(0.8, 1.5))
                if u + loc > length - 1.0:
                    stop = True
                    break
                loaded = btype != "container_flat" or rng_occ.random() < 0.85
                wall_h = (h + 2.59) if (btype == "container_flat" and loaded) else h
                cars_raw.append((btype if loaded else "flatcar", btype, tid, ti, u, u + loc - gap, loc, w, wall_h))
                u += loc
            if stop:
                break
            # breaks in the consist: uncoupled cars and cuts stand apart
            if occupancy == "sparse":
                u += float(rng_occ.uniform(10.0, 120.0))
            elif occupancy == "train" and rng_occ.random() < 0.3:
                u += float(rng_occ.uniform(5.0, 60.0))
            elif occupancy == "full" and rng_occ.random() < 0.15:
                u += float(rng_occ.uniform(2.0, 12.0))

    def uv_index(u, v):
        iu = np.floor((np.asarray(u) - u_lo) / FINE_M).astype(np.int64)
        iv = np.floor((np.asarray(v) - v_lo) / FINE_M).astype(np.int64)
        return iv, iu

    for sar_type, btype, tid, ti, u0, u1, loc, w, wall_h in cars_raw:
        vt = v_tracks[ti]
        iv0, iu0 = uv_index(u0, vt - w / 2)
        iv1, iu1 = uv_index(u1, vt + w / 2)
        height[iv0:iv1 + 1, iu0:iu1 + 1] = np.maximum(height[iv0:iv1 + 1, iu0:iu1 + 1], wall_h)

    # ---- radar shadow on the yard raster ----------------------------------------------
    # A ground point is in shadow when the ray toward the sensor (-L, rising cot(theta) per
    # metre) passes under the top of something within h tan(theta).
    hmax = float(height.max()) if height.size else 0.0
    shadow = np.zeros((nv_, nu_), bool)
    nsteps = int(math.ceil(hmax * tan_t / FINE_M))
    for k in range(1, nsteps + 1):
        s = k * FINE_M
        du = int(round(-s * Lu / FINE_M))
        dv = int(round(-s * Lv / FINE_M))
        shifted = _shift(height, dv, du)            # height at p - s L
        shadow |= shifted > (s * cot_t + height)    # ray at p climbs to s cot(theta) above p's own top
    occupied = height > 0.0
    lit_ground = ~occupied & ~shadow

    def lit_fraction(us, vs):
        iv, iu = uv_index(us, vs)
        ok = (iv >= 0) & (iv < nv_) & (iu >= 0) & (iu < nu_)
        out = np.ones(np.shape(us), float)
        out[ok] = lit_ground[iv[ok], iu[ok]]
        return out

    # ---- distributed sigma0 per cell, per polarisation --------------------------------
    vv_tab = np.zeros(len(CLS), np.float32)
    vh_tab = np.zeros(len(CLS), np.float32)
    for name, idx in (("gravel", 1), ("asphalt", 2), ("apron", 3), ("roof", 4)):
        vv_tab[idx], vh_tab[idx] = mats[name]
    for i, m in enumerate(ballast):
        vv_tab[5 + i], vh_tab[5 + i] = m
    # cell of every fine sample, in float32 offsets from the cell grid's corner (small
    # numbers: exact enough, and half the memory traffic of map coordinates)
    uf32, vf32 = uf.astype(np.float32), vf.astype(np.float32)
    xr_ = np.float32(ox - cx0) + uf32[None, :] * np.float32(ca) - vf32[:, None] * np.float32(sa)
    yr_ = np.float32(cy1 - oy) - uf32[None, :] * np.float32(sa) - vf32[:, None] * np.float32(ca)
    c_i = np.floor(xr_ / np.float32(CELL_M)).astype(np.int64)
    r_i = np.floor(yr_ / np.float32(CELL_M)).astype(np.int64)
    ok = (r_i >= 0) & (r_i < crow) & (c_i >= 0) & (c_i < ccol)
    flat = np.where(ok, r_i * ccol + c_i, 0).ravel()
    okf = ok.ravel()
    n_cells = crow * ccol
    counts = np.bincount(flat[okf], minlength=n_cells).astype(np.float64)
    # cells well inside the raster are fully covered (their sample count varies by one or
    # two with the rotation: the mean, not the sum, is their sigma0)
    ccx = cx0 + (np.arange(ccol) + 0.5) * CELL_M
    ccy = cy1 - (np.arange(crow) + 0.5) * CELL_M
    cdx, cdy = ccx[None, :] - ox, ccy[:, None] - oy
    cu, cv = cdx * ca + cdy * sa, -cdx * sa + cdy * ca
    inside_raster = ((cu > u_lo + CELL_M) & (cu < u_hi - CELL_M) & (cv > v_lo + CELL_M)
                     & (cv < v_hi - CELL_M)).ravel()
    # ground under objects does not scatter; the shadowed ground returns nothing; roofs
    # are laid over separately (below), so the building footprint is handled there
    gmask = (lit_ground & (cls != 4)).ravel() & okf
    # background classes blended per cell
    bg_vv = _lin(mats["bg1"][0]) * blend + _lin(mats["bg2"][0]) * (1 - blend)
    bg_vh = _lin(mats["bg1"][1]) * blend + _lin(mats["bg2"][1]) * (1 - blend)
    tex = _lin(tex_db)
    sig = {}
    for pol, tab, bgp in (("VV", vv_tab, bg_vv), ("VH", vh_tab, bg_vh)):
        lin_tab = _lin(tab)
        clsf = cls.ravel()
        val = np.where(clsf == 0, 0.0, lin_tab[clsf])
        # background samples take the per-cell blend
        is_bg = clsf == 0
        val_bg = bgp.ravel()[flat] * is_bg
        val = (val + val_bg) * gmask
        s_sum = np.bincount(flat[okf], weights=val[okf], minlength=n_cells)
        # cells beyond the yard raster are background; partly covered cells are completed
        missing = np.where(inside_raster, 0.0, np.clip(int(round(CELL_M / FINE_M)) ** 2 - counts, 0, None))
        cell_s = (s_sum + missing * bgp.ravel()) / np.maximum(counts + missing, 1.0)
        sig[pol] = (cell_s.reshape(crow, ccol) * tex).astype(np.float64)
    # distributed RCS per cell (m^2), to which elevated diffuse returns are added
    dist = {p: sig[p] * CELL_M ** 2 for p in sig}
    points = {"VV": [], "VH": []}     # (x, y, rcs m^2) deterministic scatterers

    def add_dist(us, vs, rcs_vv, rcs_vh, h_m):
        # diffuse return from height h_m: laid over toward the sensor by h cot(theta)
        us = np.asarray(us, float) - h_m * cot_t * Lu
        vs = np.asarray(vs, float) - h_m * cot_t * Lv
        x, y = to_xy(us, vs)
        r, c, okk = cell_index(x, y)
        for p, val in (("VV", rcs_vv), ("VH", rcs_vh)):
            np.add.at(dist[p], (r[okk], c[okk]), np.broadcast_to(val, np.shape(us))[okk])

    def add_pts(us, vs, rcs_vv, rcs_vh, h_m=0.0):
        us = np.atleast_1d(np.asarray(us, float)) - h_m * cot_t * Lu
        vs = np.atleast_1d(np.asarray(vs, float)) - h_m * cot_t * Lv
        x, y = to_xy(us, vs)
        for p, val in (("VV", rcs_vv), ("VH", rcs_vh)):
            vals = np.broadcast_to(np.asarray(val, float), us.shape)
            points[p].append(np.stack([x, y, vals], axis=1))

    # side of a box facing the radar: outward normal -v faces it when Lv > 0
    near_sign = -1.0 if Lv > 0 else 1.0
    end_sign = -1.0 if Lu > 0 else 1.0
    vh_d = lambda: _lin(rng.uniform(*VH_DIFFUSE))      # noqa: E731
    vh_dh = lambda: _lin(rng.uniform(*VH_DIHEDRAL))    # noqa: E731

    def wall_dihedral(u_a, u_b, v_wall, normal, rcs_peak, lobe, depth_m, vh_ratio):
        """Double bounce of a wall along u at v_wall (normal +-v) or along v (normal +-u)."""
        if rcs_peak <= 0 or lobe <= 1e-4:
            return float("nan")
        n = max(int(math.ceil(abs(u_b - u_a) / CELL_M)), 1)
        t = (np.arange(n) + 0.5) / n
        # the ground in front of the wall, out to depth_m toward the sensor, must be lit
        d = np.linspace(0.3, max(depth_m, 0.4), 6)
        if normal in ("+v", "-v"):
            us = u_a + t * (u_b - u_a)
            sgn = 1.0 if normal == "+v" else -1.0
            fr = lit_fraction(us[:, None] + 0 * d[None], v_wall + sgn * d[None] + 0 * us[:, None]).mean(axis=1)
            vs = np.full(n, v_wall)
        else:
            vs = u_a + t * (u_b - u_a)     # here u_a, u_b span v
            sgn = 1.0 if normal == "+u" else -1.0
            fr = lit_fraction(v_wall + sgn * d[None] + 0 * vs[:, None], vs[:, None] + 0 * d[None]).mean(axis=1)
            us, vs = np.full(n, v_wall), vs
        share = rcs_peak * lobe / n * fr
        add_pts(us, vs, share, share * vh_ratio)
        return float(fr.mean())

    # -- cars
    cars = []
    for sar_type, btype, tid, ti, u0, u1, loc, w, wall_h in cars_raw:
        vt = float(v_tracks[ti])
        (b0, b1), (a0, a1), (p0, p1) = CAR_SAR[sar_type]
        base_db = float(rng_car.uniform(b0, b1))
        peak_db = float(rng_car.uniform(a0, a1))
        psi0 = float(rng_car.uniform(p0, p1))
        area = (u1 - u0) * w
        base = area * _lin(base_db)
        peak = area * max(_lin(peak_db) - _lin(base_db), 0.0)
        # orientation-independent part: 60 % diffuse from the upper body (laid over),
        # 40 % in the two bogies (wheelsets and frames at rail level)
        g = np.mgrid[u0 + 0.5:u1:1.0, vt - w / 2 + 0.5:vt + w / 2:1.0]
        us, vs = g[0].ravel(), g[1].ravel()
        r_vh = _lin(rng_car.uniform(*VH_DIFFUSE))
        add_dist(us, vs, 0.6 * base / us.size, 0.6 * base / us.size * r_vh, 0.7 * wall_h)
        bog = np.array([u0 + 0.14 * (u1 - u0), u1 - 0.14 * (u1 - u0)])
        add_pts(bog, np.full(2, vt), 0.2 * base, 0.2 * base * r_vh)
        # the side facing the radar: dihedral with the ground in front of it
        lit = wall_dihedral(u0, u1, vt + near_sign * w / 2, "+v" if near_sign > 0 else "-v", peak,
                      _lobe(psi, psi0), wall_h * tan_t * abs(Lv), _lin(rng_car.uniform(*VH_DIHEDRAL)))
        # the end facing the radar (screened by a coupled neighbour through the lit-ground test)
        end_u = u0 if end_sign < 0 else u1
        end_peak = w * wall_h * _lin(rng_car.uniform(8.0, 12.0))
        wall_dihedral(vt - w / 2, vt + w / 2, end_u, "+u" if end_sign > 0 else "-u", end_peak,
                      _lobe(90.0 - psi, float(rng_car.uniform(5.0, 10.0))), wall_h * tan_t * abs(Lu),
                      _lin(rng_car.uniform(*VH_DIHEDRAL)))
        poly_uv = [(u0, vt - w / 2), (u1, vt - w / 2), (u1, vt + w / 2), (u0, vt + w / 2)]
        poly = Polygon([tuple(map(float, to_xy(a, b))) for a, b in poly_uv])
        body_db = float(_db(_lin(base_db) + (_lin(peak_db) - _lin(base_db)) * _lobe(psi, psi0)))
        cars.append(SarCar(poly, btype, COUNTER_CLASS[btype], tid, float(u0), float(u1), float(loc), body_db, lit))

    # -- rails, joints, turnouts
    jointed = bool(rng.random() < 0.6)
    for ti, vt in enumerate(v_tracks):
        rail_db = float(rng.uniform(-3.0, 3.0))      # m^2 per metre of rail at psi = 0
        lobe = _lobe(psi, float(rng.uniform(1.5, 3.0)))
        for rv in (-0.7965, 0.7965):
            us = np.arange(u_lo + 20.0, u_hi - 20.0, CELL_M) + CELL_M / 2
            vs = np.full(us.size, vt + rv)
            lit = lit_fraction(us, vs)
            add_pts(us, vs, _lin(rail_db) * CELL_M * lobe * lit, _lin(rail_db) * CELL_M * lobe * lit * vh_dh())
            if jointed:
                uj = np.arange(rng.uniform(0, 25.0) + (12.5 if rv > 0 else 0.0), length, 25.0)
                litj = lit_fraction(uj, np.full(uj.size, vt + rv))
                add_pts(uj, np.full(uj.size, vt + rv), _lin(rng.uniform(-5.0, 3.0, uj.size)) * litj,
                        _lin(rng.uniform(-5.0, 3.0, uj.size)) * litj * vh_d())
        for lo, hi in ((-40.0, -4.0), (length + 4.0, length + 40.0)):
            nt = int(rng.integers(1, 3))
            ut = rng.uniform(lo, hi, nt)
            rc = _lin(rng.uniform(3.0, 12.0, nt))
            add_pts(ut, np.full(nt, vt), rc, rc * vh_d())

    # -- catenary: masts beside the outer tracks, contact wires over every track
    electrified = bool(rng.random() < 0.7)
    if electrified:
        for vm in (v_tracks[0] - 3.1, v_tracks[-1] + 3.1):
            um = np.arange(rng.uniform(0, 30), length, rng.uniform(55, 65))
            rc = _lin(rng.uniform(10.0, 20.0, um.size))
            add_pts(um, np.full(um.size, vm), rc, rc * vh_d())
        wire_db = float(rng.uniform(-8.0, -2.0))
        for vt in v_tracks:
            us = np.arange(0.0, length, CELL_M) + CELL_M / 2
            lobe = _lobe(psi, float(rng.uniform(1.0, 2.5)))
            val = _lin(wire_db) * CELL_M * lobe
            add_pts(us, np.full(us.size, vt), val, val * vh_dh(), h_m=6.0)

    # -- building: metal roof laid over, wall dihedrals on the sides facing the radar
    g = np.mgrid[bu0 + 0.5:bu0 + bu_l:1.0, bv[0] + 0.5:bv[1]:1.0]
    us, vs = g[0].ravel(), g[1].ravel()
    add_dist(us, vs, _lin(mats["roof"][0]), _lin(mats["roof"][1]), bu_h)
    wall_peak = float(rng.uniform(10.0, 16.0))
    wall_base = float(rng.uniform(-4.0, 0.0))
    psi0_b = float(rng.uniform(3.0, 8.0))
    v_wall = bv[0] if near_sign < 0 else bv[1]
    wall_dihedral(bu0, bu0 + bu_l, v_wall, "+v" if near_sign > 0 else "-v", bu_l * bu_h * _lin(wall_peak),
                  _lobe(psi, psi0_b), bu_h * tan_t * abs(Lv), vh_dh())
    u_wall = bu0 if end_sign < 0 else bu0 + bu_l
    wall_dihedral(bv[0], bv[1], u_wall, "+u" if end_sign > 0 else "-u", bu_w * bu_h * _lin(wall_peak),
                  _lobe(90.0 - psi, psi0_b), bu_h * tan_t * abs(Lu), vh_dh())
    # the walls' diffuse part (windows, doors, gutters) and a few roof fixtures
    add_dist(us[:: max(us.size // 40, 1)], vs[:: max(vs.size // 40, 1)],
             bu_l * bu_h * _lin(wall_base) / 40, bu_l * bu_h * _lin(wall_base) / 40 * vh_d(), bu_h / 2)
    nf = int(rng.integers(2, 8))
    rc = _lin(rng.uniform(0.0, 10.0, nf))
    add_pts(rng.uniform(bu0, bu0 + bu_l, nf), rng.uniform(bv[0], bv[1], nf), rc, rc * vh_d(), h_m=bu_h)

    # -- trucks on the road
    nt = int(rng.poisson(length / 250.0))
    if nt:
        rc = _lin(rng.uniform(10.0, 25.0, nt))
        add_pts(rng.uniform(u_lo, u_hi, nt), v_road + rng.uniform(-1.5, 1.5, nt), rc, rc * vh_d(), h_m=1.5)

    # ---- sensor ------------------------------------------------------------------------
    h_psf, w_look = _sensor_kernels(heading)
    nesz_cell = _lin(nesz_db) * CELL_M ** 2
    out = []
    for pol in ("VV", "VH"):
        field_ = (rng_spk.standard_normal((crow, ccol)) + 1j * rng_spk.standard_normal((crow, ccol))) \
            * np.sqrt((dist[pol] + nesz_cell) / 2.0)
        pts = np.concatenate(points[pol]) if points[pol] else np.zeros((0, 3))
        r, c, okk = cell_index(pts[:, 0], pts[:, 1])
        amp = np.sqrt(np.clip(pts[:, 2], 0, None)) * np.exp(2j * np.pi * rng_ph.random(len(pts)))
        np.add.at(field_, (r[okk], c[okk]), amp[okk])
        slc = signal.fftconvolve(field_, h_psf, mode="same")
        inten = signal.fftconvolve(np.abs(slc) ** 2, w_look, mode="same")
        pix = inten.reshape(crow // kc, kc, ccol // kc, kc).sum(axis=(1, 3)) / GSD_M ** 2
        pix = pix[pad:pad + grid.shape[0], pad:pad + grid.shape[1]]
        if noise_rm:
            pix = np.maximum(pix - _lin(nesz_db), _lin(nesz_db) / 100.0)
        out.append(pix)
    data = np.stack(out).astype(np.float32)
    if db:
        data = (10.0 * np.log10(np.maximum(data, 1e-6))).astype(np.float32)
    image = grid.attach(data, bands=["VV", "VH"], name="sigma0",
                        attrs={"units": "dB" if db else "linear", "platform": "sentinel-1-like",
                               "instrument_mode": "IW", "product_type": "GRDH",
                               "orbit_direction": orbit_.upper(), "incidence_angle_deg": theta})

    # ---- truth -------------------------------------------------------------------------
    true_tracks = {tid: LineString([tuple(map(float, to_xy(0.0, vt))), tuple(map(float, to_xy(length, vt)))])
                   for tid, vt in zip(track_ids, v_tracks)}
    mis_px = float(rng.uniform(0.0, 0.5))
    mis_dir = float(rng.uniform(0.0, 2 * math.pi))
    mdx, mdy = mis_px * GSD_M * math.cos(mis_dir), mis_px * GSD_M * math.sin(mis_dir)
    tracks = {tid: LineString([(x + mdx, y + mdy) for x, y in ln.coords]) for tid, ln in true_tracks.items()}
    per_track = {tid: [c for c in cars if c.track_id == tid] for tid in track_ids}
    truth = {
        "total_cars": len(cars),
        "cars_per_track": {tid: len(v) for tid, v in per_track.items()},
        "occupied_length_m": {tid: float(sum(c.length_m for c in v)) for tid, v in per_track.items()},
        "body_length_m": {tid: float(sum(c.u1_m - c.u0_m for c in v)) for tid, v in per_track.items()},
        "runs_m": {tid: _runs(v) for tid, v in per_track.items()},
        "by_type": {t: sum(1 for c in cars if c.counter_type == t) for t in sorted(set(COUNTER_CLASS.values()))},
        "mean_car_length_m": float(np.mean([c.length_m for c in cars])) if cars else None,
    }
    params = {"n_tracks": ntr, "yard_length_m": length, "fill": fill_, "orbit": orbit_,
              "track_angle_deg": math.degrees(angle) % 360.0, "spacing_m": [float(s) for s in spacing],
              "nesz_db": nesz_db, "noise_removed": noise_rm, "electrified": electrified, "jointed": jointed,
              "misregistration_px": mis_px, "misregistration_xy_m": (mdx, mdy),
              "look_uv": (Lu, Lv), "background": (bg1, bg2),
              "apron_uv": (ap0, ap0 + ap_l, av[0], av[1]), "building_uv": (bu0, bu0 + bu_l, bv[0], bv[1], bu_h),
              "road_v": v_road, "v_tracks": [float(v) for v in v_tracks],
              "apron_polygon": Polygon([tuple(map(float, to_xy(a, b))) for a, b in
                                        ((ap0, av[0]), (ap0 + ap_l, av[0]), (ap0 + ap_l, av[1]), (ap0, av[1]))]),
              "sigma0_db": {k: v for k, v in mats.items()}, "ballast_db": ballast}
    return SarRailyardScene(image, tracks, true_tracks, tuple(cars), truth, heading, theta, psi, GSD_M, params)


def _runs(cars: list[SarCar], join_m: float = 2.0) -> list[tuple[float, float]]:
    """Occupied stretches along a track (m): cars closer than ``join_m`` form one run."""
    spans = sorted((c.u0_m, c.u1_m) for c in cars)
    out: list[list[float]] = []
    for a, b in spans:
        if out and a - out[-1][1] <= join_m:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(float(a), float(b)) for a, b in out]


def _shift(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``out[i, j] = a[i + dr, j + dc]`` with zeros beyond the edges."""
    out = np.zeros_like(a)
    rows, cols = a.shape
    r0, r1 = max(0, -dr), min(rows, rows - dr)
    c0, c1 = max(0, -dc), min(cols, cols - dc)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = a[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    return out


# IW SLC impulse response (intensity FWHM, m) and GRDH range multilook. The SLC's
# ground-range resolution is about 5 m and its azimuth resolution about 22 m; GRDH
# averages ~5 range looks to about 20 m. The look kernel's width is set so the ENL of a
# homogeneous area is the product's 4.4 (checked by the tests).
SLC_RANGE_FWHM_M = 5.0
SLC_AZIMUTH_FWHM_M = 22.0
LOOK_RANGE_FWHM_M = 19.2


def _sensor_kernels(heading_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude impulse response (sum |h|^2 = 1) and intensity look kernel (sum 1) on the cell grid.

    Both are Gaussians in radar axes (range across the flight direction, azimuth
    along it) turned by the heading into the north-up grid.
    """
    hr = math.radians(heading_deg)
    half = 12                                # cells: +-30 m
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1] * CELL_M
    east, north = xx, -yy                    # rows increase southward
    az = east * math.sin(hr) + north * math.cos(hr)
    rg = east * math.cos(hr) - north * math.sin(hr)
    # an amplitude Gaussian exp(-x^2 / (4 s^2)) has intensity exp(-x^2 / (2 s^2)), FWHM 2.355 s
    s_r, s_a = SLC_RANGE_FWHM_M / 2.3548, SLC_AZIMUTH_FWHM_M / 2.3548
    h = np.exp(-(rg ** 2) / (4 * s_r ** 2) - (az ** 2) / (4 * s_a ** 2))
    h /= math.sqrt(float((h ** 2).sum()))
    s_l = LOOK_RANGE_FWHM_M / 2.3548
    w = np.exp(-(rg ** 2) / (2 * s_l ** 2) - (az ** 2) / (2 * (CELL_M / 2) ** 2))
    w /= float(w.sum())
    return h.astype(np.complex128), w


def enl_of_kernels(heading_deg: float = 350.0) -> float:
    """Equivalent number of looks of a 10 m pixel over a homogeneous area (analytic).

    For white circular Gaussian input filtered by ``h``, the intensity covariance between
    two cells is ``|rho|^2`` (rho: the normalised autocorrelation of ``h``); a pixel sums
    the look-filtered intensities of its 4 x 4 cells with weights ``W``, so
    ``ENL = (sum W)^2 / sum_jk W_j W_k |rho_jk|^2``.
    """
    h, w = _sensor_kernels(heading_deg)
    rho = signal.fftconvolve(h, np.conj(h[::-1, ::-1]), mode="full")
    rho2 = np.abs(rho) ** 2
    kc = int(round(GSD_M / CELL_M))
    W = signal.fftconvolve(w, np.ones((kc, kc)), mode="full")
    WW = signal.fftconvolve(W, W[::-1, ::-1], mode="full")
    num = float(W.sum()) ** 2
    # sum over lags of WW(lag) * rho2(lag): align centres
    a, b = WW, rho2
    ca_, cb_ = np.array(a.shape) // 2, np.array(b.shape) // 2
    r = min(ca_[0], cb_[0])
    c = min(ca_[1], cb_[1])
    den = float((a[ca_[0] - r:ca_[0] + r + 1, ca_[1] - c:ca_[1] + c + 1]
                 * b[cb_[0] - r:cb_[0] + r + 1, cb_[1] - c:cb_[1] + c + 1]).sum())
    return num / den
