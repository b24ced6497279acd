"""Render a scene: the day's ground as a sensor sees it, with its ground truth.

Pipeline per acquisition (``render_scene``): static layout (materials, rails,
buildings) + the day's objects (railcars, container stacks, ships) in map
coordinates → rasterised at a finer grid and averaged to the sensor grid (so edges
are mixed pixels as in real imagery) → sun-dependent shadows, seasonal vegetation,
snow, water glint → clouds, cloud shadows and haze → optical blur, sensor noise →
image on a grid displaced by a per-acquisition misregistration. Geometry is vector
until the end, so the displacement recorded in the truth is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely
from affine import Affine
from rasterio import features as rfeatures
from scipy import ndimage
from shapely.affinity import translate
from shapely.geometry import LineString, Polygon

from changedet.errors import ChangedetError
from changedet.grid import GridSpec, aoi_grid
from changedet.simulate import catalogue as cat
from changedet.simulate.layout import (
    Obj, Slot, _axis, container_slots, place_buildings, place_containers, place_railcars, place_ships,
)
from changedet.simulate.scenario import Scenario, rng_for, scenario_for
from changedet.simulate.sun import shadow_vector, sun_position


@dataclass(frozen=True)
class SensorSpec:
    name: str
    resolution_m: float
    bands: tuple[str, ...]
    supersample: int
    max_shift_px: float
    noise: float              # additive noise, reflectance units (or dB-free for SAR)
    blur_px: float
    platform: str


SENSORS: dict[str, SensorSpec] = {
    "vhr": SensorSpec("vhr", 0.5, ("R", "G", "B", "NIR"), 2, 4.0, 0.004, 0.5, "simulated-vhr"),
    "s2": SensorSpec("s2", 10.0, ("B02", "B03", "B04", "B08"), 4, 1.0, 0.003, 0.45, "simulated-sentinel-2"),
    "s1": SensorSpec("s1", 10.0, ("VV", "VH"), 4, 1.5, 0.0, 0.0, "simulated-sentinel-1"),
}
MASK_BAND = "CLM"
_MATERIAL_IDS = {name: i for i, name in enumerate(cat.MATERIALS, start=1)}


@dataclass(frozen=True)
class Static:
    """AOI geometry in its projected CRS and the layout that never changes."""

    crs: pyproj.CRS
    site: Polygon
    tracks: dict[str, LineString]
    gauges: dict[str, tuple[float, ...]]
    zones: dict[str, Polygon]
    berths: dict[str, Polygon]
    water: list[Polygon]
    buildings: list[Obj]
    slots: list[Slot]
    roads: Polygon


@lru_cache(maxsize=32)
def _static(aoi) -> Static:
    crs = aoi.utm_crs()
    site = aoi.to_crs(aoi.polygon, crs)
    tracks, gauges, zones, berths, water = {}, {}, {}, {}, []
    for f in aoi.features:
        geom = aoi.to_crs(f.geometry, crs)
        if f.role == "track":
            tracks[f.id] = geom
            g = f.properties.get("gauge_mm", 1520)
            gauges[f.id] = tuple(float(v) / 1000 for v in (g if isinstance(g, (list, tuple)) else [g]))
        elif f.role == "stack_zone":
            zones[f.id] = geom
        elif f.role == "berth":
            berths[f.id] = geom
        elif f.role == "water":
            water.append(geom)
    keep_out = shapely.union_all(
        [t.buffer(6.0) for t in tracks.values()] + [z.buffer(4.0) for z in zones.values()]
        + [b.buffer(10.0) for b in berths.values()] + [w.buffer(3.0) for w in water]
    ) if (tracks or zones or berths or water) else Polygon()
    axis = _axis(site)[2]
    roads = _access_road(site, keep_out, axis)
    if not roads.is_empty:
        keep_out = shapely.union(keep_out, roads.buffer(3.0))
    grid = aoi_grid(aoi, 1.0)
    buildings = place_buildings(grid.bounds, keep_out, axis, aoi.id)
    return Static(crs, site, tracks, gauges, zones, berths, water, buildings, container_slots(zones, aoi.id),
                  roads)


def _access_road(site: Polygon, keep_out, axis: float):
    """An asphalt access road along the site's long axis, on whichever side has room.

    Sites are reached by road; it is also a long straight stable edge that
    co-registration can lock on to. Returned as a 7 m wide polygon (may be empty).
    """
    cx, cy, angle, length, width = _axis(site)
    ca, sa = math.cos(angle), math.sin(angle)
    for offset in (width / 2 - 10.0, -(width / 2 - 10.0), 0.0):
        ox, oy = cx - offset * sa, cy + offset * ca
        line = LineString([(ox - ca * length / 2, oy - sa * length / 2), (ox + ca * length / 2, oy + sa * length / 2)])
        road = line.intersection(site.buffer(-4.0)).buffer(3.5, cap_style="flat")
        free = road.difference(keep_out) if not keep_out.is_empty else road
        if not road.is_empty and free.area > 0.8 * road.area:
            return free
    return Polygon()


@dataclass(frozen=True)
class Conditions:
    """Per-acquisition imaging conditions, drawn deterministically."""

    sun_elevation: float
    sun_azimuth: float
    cloud_fraction: float
    haze: float
    snow: float
    greenness: float
    shift_row_px: float
    shift_col_px: float


def conditions(aoi, day: date, sensor: str, *, seed: int, scenario: Scenario) -> Conditions:
    spec = SENSORS[sensor]
    lon, lat = aoi.centroid_lonlat
    el, az = sun_position(day, lat)
    rng = rng_for("conditions", aoi.id, day.isoformat(), sensor, seed)
    w = scenario.weather
    clear_prob = float(w.get("clear_prob", 0.8 if sensor == "vhr" else 0.55))
    u = rng.random()
    if sensor == "s1":
        cloud = 0.0
    elif u < clear_prob:
        cloud = float(rng.uniform(0.0, 0.02)) if rng.random() < 0.5 else 0.0
    elif u < clear_prob + (1 - clear_prob) * 0.6:
        cloud = float(rng.uniform(0.05, 0.5))
    else:
        cloud = float(rng.uniform(0.6, 1.0))
    haze = float(rng.uniform(0.0, float(w.get("haze_max", 0.2)))) if sensor != "s1" else 0.0
    doy = day.timetuple().tm_yday
    # Snow lies from December to mid-March north of ~40 degrees, on some dates.
    winter = (doy >= 335 or doy <= 75) and abs(lat) > 40
    snow = float(rng.uniform(0.5, 1.0)) if winter and rng.random() < float(w.get("snow_prob", 0.6)) else 0.0
    greenness = float(np.clip(math.sin(math.pi * (doy - 110) / 190.0), 0.0, 1.0)) if 110 <= doy <= 300 else 0.0
    dr, dc = rng.uniform(-spec.max_shift_px, spec.max_shift_px, size=2)
    return Conditions(el, az, cloud, haze, snow, greenness, float(dr), float(dc))


# ----------------------------------------------------------------------- helpers
def _texture(x: np.ndarray, y: np.ndarray, key: str, *, n: int = 16, min_wl: float = 2.0,
             max_wl: float = 400.0) -> np.ndarray:
    """Map-anchored smooth texture in [-1, 1]: a sum of random plane waves.

    Evaluated at map coordinates, so the same ground shows the same texture in every
    acquisition whatever its grid offset (sensor noise, not texture, differs).
    Separable evaluation (cos(a+b) = cos a cos b - sin a sin b) keeps it O(n (rows+cols)).
    """
    rng = rng_for("texture", key)
    wl = np.exp(rng.uniform(math.log(min_wl), math.log(max_wl), n))
    theta = rng.uniform(0, 2 * math.pi, n)
    phase = rng.uniform(0, 2 * math.pi, n)
    amp = wl / wl.max()
    out = np.zeros((y.size, x.size), dtype="float32")
    for k in range(n):
        kx, ky = 2 * math.pi * math.cos(theta[k]) / wl[k], 2 * math.pi * math.sin(theta[k]) / wl[k]
        a = kx * (x - 500_000.0) + phase[k]
        b = ky * (y - 4_000_000.0)
        out += amp[k] * (np.outer(np.cos(b), np.cos(a)) - np.outer(np.sin(b), np.sin(a))).astype("float32")
    return out / float(amp.sum()) * 2.0


def _fractal(shape: tuple[int, int], rng: np.random.Generator, *, beta: float = 3.2) -> np.ndarray:
    """Periodic fractal noise (clouds), zero mean, unit variance."""
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (beta / 2)
    spectrum[0, 0] = 0
    field = np.fft.irfft2(spectrum, s=shape)
    return ((field - field.mean()) / (field.std() + 1e-12)).astype("float32")


def _block_mean(a: np.ndarray, s: int) -> np.ndarray:
    """Mean over s x s blocks of the last two axes (strided adds beat a reshaped mean here)."""
    a = a.astype("float32", copy=False)
    if s == 1:
        return a
    out = np.zeros(a.shape[:-2] + (a.shape[-2] // s, a.shape[-1] // s), dtype="float32")
    for i in range(s):
        for j in range(s):
            out += a[..., i::s, j::s]
    out *= 1.0 / (s * s)
    return out


def _rasterize(shapes, grid: GridSpec, dtype="int32") -> np.ndarray:
    shapes = [(g, v) for g, v in shapes if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(grid.shape, dtype=dtype)
    return rfeatures.rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0,
                               dtype=dtype, all_touched=False)


def _object_colours(objs: list[Obj], ids: np.ndarray, fine: GridSpec, cond: Conditions,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel colours of the objects: (rows, cols) index of covered pixels and (n, 4) BGRN."""
    rr, cc = np.nonzero(ids)
    if rr.size == 0:
        return (rr, cc), np.zeros((0, 4), dtype="float32")
    k = ids[rr, cc] - 1
    x, y = fine.xy(rr, cc)
    cx = np.array([o.cx for o in objs])[k]
    cy = np.array([o.cy for o in objs])[k]
    ang = np.array([o.angle for o in objs])[k]
    hl = np.array([o.length / 2 for o in objs])[k]
    hw = np.array([o.width / 2 for o in objs])[k]
    ca, sa = np.cos(ang), np.sin(ang)
    du, dv = (x - cx) * ca + (y - cy) * sa, -(x - cx) * sa + (y - cy) * ca
    u, v = du / hl, dv / hw
    paint = np.array([o.paint for o in objs], dtype="float32")[k]
    col = paint.copy()
    types = np.array([o.type for o in objs])[k]
    el, az = math.radians(cond.sun_elevation), math.radians(cond.sun_azimuth)
    # Sun direction projected on each object's across-track axis (for cylinder shading).
    sun_e, sun_n = math.sin(az) * math.cos(el), math.cos(az) * math.cos(el)
    sun_across = -sa * sun_e + ca * sun_n

    def put(mask, values):
        col[mask] = values

    m = types == "building"
    put(m, paint[m] * np.where(v[m] * np.sign(sun_across[m] + 1e-9) > 0, 1.08, 0.9)[:, None])
    m = types == "boxcar"
    ribs = 1.0 + 0.10 * (np.cos(2 * np.pi * du[m] / 0.62) > 0.6)
    edge = np.where((np.abs(v[m]) > 0.88) | (np.abs(u[m]) > 0.985), 0.8, 1.06)
    put(m, paint[m] * (ribs * edge)[:, None])
    m = types == "tank"
    # Lambertian cylinder: surface normal tilts across the car with v = sin(theta).
    s_th = np.clip(v[m], -0.999, 0.999)
    c_th = np.sqrt(1 - s_th**2)
    lam = np.clip(c_th * math.sin(el) + s_th * sun_across[m], 0.0, None)
    spec_ = 0.06 * np.exp(-((s_th - np.clip(sun_across[m] / max(math.cos(el), 1e-3), -0.9, 0.9) * 0.5) / 0.12) ** 2)
    dome = (np.abs(du[m]) < 0.6) & (np.abs(dv[m]) < 0.6)
    shade = 0.35 + 0.75 * lam
    put(m, paint[m] * shade[:, None] + spec_[:, None] + 0.04 * dome[:, None])
    m = types == "gondola"
    if m.any():
        rim = (np.abs(v[m]) > 0.86) | (np.abs(u[m]) > 0.975)
        level = np.array([o.extra.get("load_level", 0.5) for o in objs])[k[m]]
        load = np.where(level[:, None] > 0.2, np.array([0.045, 0.045, 0.05, 0.06], "float32"),
                        paint[m] * 0.55)
        grain = 1 + 0.15 * rng.standard_normal(m.sum()).astype("float32")
        put(m, np.where(rim[:, None], paint[m], load * grain[:, None]))
    m = types == "flatcar"
    if m.any():
        idx = k[m]
        loads = np.array([o.extra.get("load", [o.paint, o.paint]) for o in objs], dtype="float32")[idx]
        forty = np.array([o.extra.get("forty", True) for o in objs])[idx]
        on_box = (np.abs(du[m]) < 6.1) & (np.abs(dv[m]) < 1.22)
        split = (~forty) & (np.abs(du[m]) < 0.15)
        second = (~forty) & (du[m] > 0)
        box_col = np.where(second[:, None], loads[:, 1], loads[:, 0])
        ribs = 1.0 + 0.08 * (np.cos(2 * np.pi * dv[m] / 0.3) > 0.7)
        put(m, np.where((on_box & ~split)[:, None], box_col * ribs[:, None], paint[m]))
    m = types == "locomotive"
    if m.any():
        fans = (np.abs(dv[m]) < 0.7) & (np.mod(du[m] + 9, 2.2) < 1.1) & (np.abs(du[m]) < 5)
        cab = np.abs(u[m]) > 0.8
        put(m, np.where(fans[:, None], 0.04, np.where(cab[:, None], paint[m] * 1.3, paint[m])))
    for size in ("20ft", "40ft"):
        m = types == size
        if m.any():
            tarp = np.array([o.extra.get("tarped", False) for o in objs])[k[m]]
            ribs = 1.0 + 0.07 * (np.cos(2 * np.pi * dv[m] / 0.3) > 0.7)
            folds = 1.0 + 0.05 * np.sin(du[m] * 1.7 + dv[m] * 0.9)
            edge = np.where((np.abs(v[m]) > 0.9) | (np.abs(u[m]) > 0.96), 0.85, 1.0)
            put(m, paint[m] * (np.where(tarp, folds, ribs) * edge)[:, None])
    m = types == "cargo"
    if m.any():
        hatch = np.array([o.extra.get("hatch", o.paint) for o in objs], dtype="float32")[k[m]]
        hatches = (u[m] > -0.55) & (u[m] < 0.62) & (np.abs(v[m]) < 0.72) & (np.mod(du[m], 14.0) > 1.2)
        superstructure = (u[m] < -0.64) & (u[m] > -0.9) & (np.abs(v[m]) < 0.85)
        c = np.where(hatches[:, None], hatch, paint[m] * 1.4)
        put(m, np.where(superstructure[:, None], np.array(cat.SHIP_SUPERSTRUCTURE, "float32"), c))
    return (rr, cc), np.clip(col, 0.0, 1.0)


# ----------------------------------------------------------------------- render
@dataclass(frozen=True)
class SimScene:
    """A rendered acquisition: pixels (band, row, col) on ``grid`` plus its truth."""

    data: np.ndarray
    bands: tuple[str, ...]
    grid: GridSpec
    truth: dict[str, Any]
    cloud_mask: np.ndarray | None


#: Most pixels of the supersampled render grid: several arrays of this size are held at
#: once (materials, object ids, coverage), so past this a render runs out of memory.
MAX_RENDER_PIXELS = 200_000_000
#: Fewest pixels along each side of a scene: below this there is no site to see.
MIN_SCENE_PIXELS = 8


def _checked_resolution(resolution_m) -> float:
    """``resolution_m`` as a positive finite float (metres), else a ChangedetError."""
    try:
        res = float(resolution_m)
    except (TypeError, ValueError):
        res = math.nan
    if not (math.isfinite(res) and res > 0):
        raise ChangedetError(f"resolution {resolution_m!r} m is not a positive number of metres; give a pixel "
                             "size such as 0.5 (VHR) or 10 (Sentinel-2/-1), or leave it out for the sensor's own")
    return res


def _check_grid_size(aoi, grid: GridSpec, res: float, spec: SensorSpec) -> None:
    """Refuse a resolution whose scene is too small to show the site or too large to render."""
    rows, cols = grid.shape
    fine = rows * cols * spec.supersample ** 2
    aoi_id = aoi.id
    if min(rows, cols) < MIN_SCENE_PIXELS:
        # The coarsest usable size from the grid's extent at the sensor's own pixel size
        # (a huge pixel's grid is snapped out far beyond the site).
        base = aoi_grid(aoi, spec.resolution_m)
        coarsest = min(base.shape) * spec.resolution_m / MIN_SCENE_PIXELS
        raise ChangedetError(
            f"resolution {res:g} m gives AOI {aoi_id} a scene of only {rows} x {cols} pixels; give a finer "
            f"resolution (at most {coarsest:.3g} m here, the sensor's own is {spec.resolution_m:g} m)")
    if fine > MAX_RENDER_PIXELS:
        finest = res * math.sqrt(fine / MAX_RENDER_PIXELS)
        raise ChangedetError(
            f"resolution {res:g} m gives AOI {aoi_id} a scene of {rows} x {cols} pixels, too large to render "
            f"in memory; give a coarser resolution (at least {finest:.3g} m here, the sensor's own is "
            f"{spec.resolution_m:g} m)")


def render_scene(aoi, day: date, sensor: str, *, seed: int = 0, resolution_m: float | None = None,
                 registry: Path | None = None, clear: bool = False, misregistration: bool = True,
                 tarp_fraction: float | None = None) -> SimScene:
    """Render one acquisition of ``aoi`` on ``day`` by ``sensor`` (vhr | s2 | s1).

    Deterministic for (AOI, date, sensor, seed, resolution). Objects on the ground do
    not depend on the sensor: a VHR and a Sentinel-2 image of the same day show the same
    railcars. ``clear`` removes cloud, haze and snow; ``misregistration=False`` renders
    on the exact grid (a reference basemap). ``tarp_fraction`` (0-1), when given,
    replaces the scenario's share of container stacks covered by tarpaulin (an opt-in
    test scenario; None keeps the scenario's own, and the output is then unchanged).
    ``resolution_m`` is the pixel size in metres (None: the sensor's own).

    Raises
    ------
    ChangedetError
        An unknown sensor; a resolution that is not a positive number of metres, or that
        gives a scene under ``MIN_SCENE_PIXELS`` a side or over ``MAX_RENDER_PIXELS``
        supersampled pixels (the message gives the usable bound).
    """
    if sensor not in SENSORS:
        raise ChangedetError(f"unknown sensor {sensor!r}; use one of {sorted(SENSORS)}")
    if tarp_fraction is not None and not 0.0 <= float(tarp_fraction) <= 1.0:
        raise ChangedetError(f"tarp_fraction must lie in [0, 1], got {tarp_fraction!r}")
    spec = SENSORS[sensor]
    # ``resolution_m or default`` would turn an explicit 0 into the sensor's default.
    res = spec.resolution_m if resolution_m is None else _checked_resolution(resolution_m)
    grid = aoi_grid(aoi, res)
    _check_grid_size(aoi, grid, res, spec)
    if registry is None:
        from changedet.aoi import default_registry
        registry = default_registry()
    scenario = scenario_for(aoi.id, Path(registry))
    static = _static(aoi)
    cond = conditions(aoi, day, sensor, seed=seed, scenario=scenario)
    if clear:
        cond = replace(cond, cloud_fraction=0.0, haze=0.0, snow=0.0)
    if not misregistration:
        cond = replace(cond, shift_row_px=0.0, shift_col_px=0.0)
    act = scenario.activity(day, seed=seed)
    if tarp_fraction is not None:
        act = replace(act, tarp_fraction=float(tarp_fraction))

    # Ground truth objects: independent of the sensor.
    cars, cars_left = place_railcars(static.tracks, act, rng_for("cars", aoi.id, day.isoformat(), seed))
    stacks, teu_left = place_containers(static.slots, act, rng_for("stacks", aoi.id, day.isoformat(), seed))
    ships, ships_left = place_ships(static.berths, act, rng_for("ships", aoi.id, day.isoformat(), seed))
    objs = static.buildings + stacks + cars + ships

    # The acquisition grid is displaced: pixel (r, c) sees the ground of (r - dr, c - dc).
    t = grid.transform
    shifted = GridSpec(grid.crs, Affine(t.a, 0, t.c - cond.shift_col_px * t.a, 0, t.e,
                                        t.f - cond.shift_row_px * t.e), grid.shape)
    s = spec.supersample
    fine = GridSpec(grid.crs, shifted.transform * Affine.scale(1 / s), (grid.shape[0] * s, grid.shape[1] * s))
    rng = rng_for("pixels", aoi.id, day.isoformat(), sensor, seed)

    # Materials (anti-aliased coverage fractions on the output grid).
    mat_shapes = [(static.site, _MATERIAL_IDS["ground"]), (static.roads, _MATERIAL_IDS["asphalt"])]
    mat_shapes += [(z.buffer(3.0), _MATERIAL_IDS["concrete"]) for z in static.zones.values()]
    mat_shapes += [(w, _MATERIAL_IDS["water"]) for w in static.water]
    # Track beds last: where a track crosses water it runs on a bridge deck.
    mat_shapes += [(ln.buffer(3.0, cap_style="flat"), _MATERIAL_IDS["ballast"]) for ln in static.tracks.values()]
    mat_shapes += [(b.buffer(25.0).difference(shapely.union_all(static.water)) if static.water else None,
                    _MATERIAL_IDS["concrete"]) for b in static.berths.values()]
    mat = _rasterize(mat_shapes, fine, dtype="uint8")
    x, y = shifted.x, shifted.y
    ids = _rasterize([(o.polygon, i + 1) for i, o in enumerate(objs)], fine)
    obj_cov = _block_mean((ids > 0).astype("float32"), s)

    if sensor == "s1":
        data = _render_sar(static, objs, mat, ids, obj_cov, s, x, y, aoi.id, rng)
        cloud_mask = None
    else:
        data, cloud_mask = _render_optical(static, objs, mat, ids, obj_cov, s, fine, shifted, x, y,
                                           aoi.id, cond, rng, spec, res)
    truth = _truth(aoi, day, sensor, seed, grid, cond, cars, stacks, ships, cars_left, teu_left,
                   ships_left, act, res)
    return SimScene(data.astype("float32"), spec.bands, grid, truth, cloud_mask)


def _background(mat: np.ndarray, s: int, x, y, aoi_id: str, cond: Conditions, rng) -> np.ndarray:
    """Background reflectance (4, rows, cols) from material coverage and map-anchored textures."""
    tex = _texture(x, y, f"{aoi_id}/tex", min_wl=3.0, max_wl=80.0)
    veg_mix = np.clip(0.5 + 0.9 * _texture(x, y, f"{aoi_id}/veg", min_wl=20, max_wl=600), 0, 1)
    g = cond.greenness
    veg = np.array(cat.DORMANT_VEGETATION) * (1 - g) + np.array(cat.MATERIALS["vegetation"][0]) * g
    bg = np.zeros((4,) + (mat.shape[0] // s, mat.shape[1] // s), dtype="float32")
    for name, mid in [("land", 0)] + list(_MATERIAL_IDS.items()):
        cov = _block_mean((mat == mid).astype("float32"), s)
        if not cov.any():
            continue
        if name == "land":
            soil = np.array(cat.MATERIALS["soil"][0], "float32")[:, None, None]
            refl = veg.astype("float32")[:, None, None] * veg_mix + soil * (1 - veg_mix)
            refl = refl * (1 + 0.15 * tex)
        else:
            base, amp = cat.MATERIALS[name]
            refl = np.array(base, "float32")[:, None, None] * (1 + amp * tex)
            if name == "water":
                glint = np.clip(_texture(x, y, f"{aoi_id}/glint/{rng.integers(1 << 30)}", min_wl=2, max_wl=30), 0, 1)
                refl = refl + 0.04 * float(rng.uniform(0, 1)) * glint ** 3
        if cond.snow and name != "water":
            snow = np.array(cat.SNOW, "float32")[:, None, None]
            refl = refl * (1 - cond.snow) + snow * cond.snow
        bg += cov * refl
    return bg


def _render_optical(static, objs, mat, ids, obj_cov, s, fine, shifted, x, y, aoi_id, cond, rng, spec, res):
    bg = _background(mat, s, x, y, aoi_id, cond, rng)
    if res <= 2.0:
        _draw_rails(bg, static, shifted, res)
    # Shadows: each object's footprint swept along the shadow vector, on the ground only.
    shadow_shapes = []
    for o in objs:
        dx, dy = shadow_vector(o.height, cond.sun_elevation, cond.sun_azimuth)
        p = o.polygon
        shadow_shapes.append((shapely.convex_hull(shapely.union(p, translate(p, dx, dy))), 1))
    shadow = _rasterize(shadow_shapes, fine, dtype="uint8") > 0
    shadow_ground = _block_mean((shadow & (ids == 0)).astype("float32"), s)
    ground = np.clip(1.0 - obj_cov, 0.0, 1.0)
    shade_factor = np.array([0.32, 0.27, 0.24, 0.22], "float32")[:, None, None]
    img = bg * (ground - shadow_ground + shadow_ground * shade_factor)
    (rr, cc), colours = _object_colours(objs, ids, fine, cond, rng)
    if rr.size:
        for b in range(4):
            acc = np.zeros(fine.shape, dtype="float32")
            acc[rr, cc] = colours[:, b]
            img[b] += _block_mean(acc, s)
    # Clouds, their shadows and haze.
    rows, cols = img.shape[1:]
    cloud_mask = np.zeros((rows, cols), dtype=bool)
    if cond.cloud_fraction > 0:
        field = _fractal((max(rows, 64), max(cols, 64)), rng)[:rows, :cols]
        thr = np.quantile(field, 1 - cond.cloud_fraction)
        opacity = np.clip((field - thr) / 0.6, 0, 1)
        dx, dy = shadow_vector(1500.0, cond.sun_elevation, cond.sun_azimuth)
        sh = np.roll(opacity, (int(round(-dy / res)) % rows, int(round(dx / res)) % cols), axis=(0, 1))
        img = img * (1 - 0.7 * sh * (1 - opacity))
        cloud = np.array([0.55, 0.56, 0.57, 0.60], "float32")[:, None, None] * (0.85 + 0.15 * field.clip(-1, 2))
        img = img * (1 - opacity) + cloud * opacity
        cloud_mask = opacity > 0.25
    if cond.haze:
        path = np.array([0.14, 0.12, 0.10, 0.06], "float32")[:, None, None]
        img = img * (1 - cond.haze) + path * cond.haze
    if spec.blur_px:
        img = ndimage.gaussian_filter(img, sigma=(0, spec.blur_px, spec.blur_px), mode="nearest")
    img = img + rng.normal(0.0, spec.noise, size=img.shape).astype("float32") * (1 + 2 * img)
    img = np.clip(np.round(img * 10000) / 10000, 0, 1.2)
    order = {"vhr": [2, 1, 0, 3], "s2": [0, 1, 2, 3]}[spec.name]
    return img[order], cloud_mask


def _draw_rails(bg: np.ndarray, static: Static, grid: GridSpec, res: float) -> None:
    """Darken pixels crossed by the rails (a 7 cm steel head, so a fraction of a pixel)."""
    width = 0.075
    steel = np.array(cat.RAIL_STEEL, "float32")[:, None]
    for tid, line in static.tracks.items():
        near = _rasterize([(line.buffer(1.5), 1)], grid, dtype="uint8")
        rr, cc = np.nonzero(near)
        if rr.size == 0:
            continue
        x, y = grid.xy(rr, cc)
        dist = _distance_to_polyline(x, y, np.asarray(line.coords))
        cover = np.zeros(rr.size, dtype="float32")
        for gauge in static.gauges[tid]:
            d = np.abs(dist - (gauge / 2 + width / 2))
            cover = np.maximum(cover, np.clip(1 - d / (0.7 * res), 0, 1) * min(1.0, 2.2 * width / res))
        bg[:, rr, cc] = bg[:, rr, cc] * (1 - cover) + steel * cover


def _distance_to_polyline(x: np.ndarray, y: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Unsigned distance (m) from points to a polyline, vectorised over points."""
    best = np.full(x.shape, np.inf)
    for (x0, y0), (x1, y1) in zip(coords[:-1], coords[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        best = np.minimum(best, np.hypot(x - x0 - t * dx, y - y0 - t * dy))
    return best


def _render_sar(static, objs, mat, ids, obj_cov, s, x, y, aoi_id, rng) -> np.ndarray:
    """C-band VV/VH backscatter (linear power) with multiplicative speckle."""
    tex = _texture(x, y, f"{aoi_id}/sar", min_wl=20, max_wl=300)
    vv = np.zeros(obj_cov.shape, dtype="float32")
    vh = np.zeros(obj_cov.shape, dtype="float32")
    names = {0: "vegetation", **{v: k for k, v in _MATERIAL_IDS.items()}}
    for mid, name in names.items():
        cov = _block_mean((mat == mid).astype("float32"), s)
        if not cov.any():
            continue
        sigma = cat.SAR_MATERIALS[name] * (1 + 0.3 * tex)
        if name == "water":
            sigma = sigma * float(rng.uniform(0.5, 2.5))  # wind roughening
        vv += cov * sigma
        vh += cov * sigma * cat.SAR_VH_RATIO.get(name, cat.SAR_DEFAULT_VH_RATIO)
    ground = np.clip(1.0 - obj_cov, 0.0, 1.0)
    vv *= ground
    vh *= ground
    sig = np.array([{"building": 0.8, "cargo": 4.0}.get(o.type, cat.RAILCARS[o.type].sar_sigma0
                    if o.type in cat.RAILCARS else 2.2) for o in objs] + [0.0], dtype="float32")
    acc = sig[ids - 1] * (ids > 0)
    obj_sigma = _block_mean(acc, s)
    vv += obj_sigma
    vh += obj_sigma * 0.2
    enl = 4.4  # equivalent number of looks of Sentinel-1 IW GRD high resolution
    vv *= rng.gamma(enl, 1 / enl, size=vv.shape)
    vh *= rng.gamma(enl, 1 / enl, size=vh.shape)
    return np.stack([vv, vh])


def _truth(aoi, day, sensor, seed, grid, cond, cars, stacks, ships, cars_left, teu_left, ships_left,
           act, res) -> dict[str, Any]:
    objects = []
    for o in cars + stacks + ships:
        rec = {"kind": o.kind, "type": o.type, "feature_id": o.feature_id,
               "polygon": shapely.geometry.mapping(o.polygon), "length_m": round(o.length, 3),
               "width_m": round(o.width, 3), "height_m": round(o.height, 3)}
        if o.kind == "container":
            rec.update(tiers=o.extra["tiers"], teu=o.extra["teu"], tarped=o.extra["tarped"])
        if o.kind == "ship":
            rec.update(heading_deg=round(o.extra["heading_deg"], 2))
        objects.append(rec)
    by_type: dict[str, int] = {}
    per_track: dict[str, int] = {}
    for o in cars:
        by_type[o.type] = by_type.get(o.type, 0) + 1
        per_track[o.feature_id] = per_track.get(o.feature_id, 0) + 1
    return {
        "aoi_id": aoi.id, "date": day.isoformat(), "sensor": sensor, "seed": seed,
        "resolution_m": res, "crs": grid.crs.to_wkt(), "epsg": grid.crs.to_epsg(),
        "transform": list(grid.transform)[:6],
        "shape": list(grid.shape),
        # The displacement applied to this acquisition: ground at pixel p appears at p + shift.
        # The shift that moves this image back onto the reference grid is its negative.
        "applied_shift_px": {"row": cond.shift_row_px, "col": cond.shift_col_px},
        "sun": {"elevation_deg": round(cond.sun_elevation, 3), "azimuth_deg": round(cond.sun_azimuth, 3)},
        "conditions": {"cloud_fraction": round(cond.cloud_fraction, 4), "haze": round(cond.haze, 4),
                       "snow": round(cond.snow, 4), "greenness": round(cond.greenness, 4)},
        "counts": {
            "railcars": len(cars), "railcars_by_type": by_type, "railcars_per_track": per_track,
            "railcars_unplaced": cars_left,
            "containers_teu": int(sum(o.extra["teu"] for o in stacks)),
            "container_stacks": len(stacks), "containers_teu_unplaced": teu_left,
            "ships": len(ships), "ships_unplaced": ships_left,
        },
        "objects": objects,
    }
