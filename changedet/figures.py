"""Figures an analyst can publish: map PNGs (scene, detections, change heatmap) and time-series plots.

Every map carries a scale bar (metres, from the ``spatial_ref`` CRS), a north arrow
pointing to true north (grid convergence included), the acquisition date, the sensor
and the data attribution. Colour maps are readable by colour-blind people: viridis for
continuous values, the Okabe–Ito palette for categories.

Matplotlib is used through :class:`matplotlib.figure.Figure` objects on the Agg canvas
only; nothing touches ``pyplot`` global state, so figures can be made from threads and
worker processes without leaking memory or interfering with each other.

Map PNGs show the image pixels 1:1 (after an integer reduction to ``max_px`` or an
integer enlargement of small chips); where the map sits in the PNG is written into PNG
text chunks (``changedet:map_box`` = left, top, width, height in PNG pixels and
``changedet:map_bounds`` = xmin, ymin, xmax, ymax in CRS units), so map coordinates can
be located in the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyproj
import xarray as xr

from changedet.bands import find_bands
from changedet.errors import ChangedetError

__all__ = [
    "FigureError",
    "OKABE_ITO",
    "attribution_for",
    "category_colors",
    "nice_scale_length",
    "scene_png",
    "heatmap_png",
    "series_png",
    "series_svg",
    "series_gap_limit",
    "GAP_FACTOR",
    "map_png",
    "select_rgb",
    "stretch_range",
]


class FigureError(ChangedetError):
    """An image or series cannot be drawn (wrong shape, no CRS, geographic CRS, empty data)."""


#: Okabe & Ito (2008) colour-blind-safe palette, black left out: it vanishes on dark imagery.
OKABE_ITO: tuple[str, ...] = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
#: Stable colours for the detection types changedet produces, so a tank car is the same
#: colour on every day's picture; unknown types take the remaining colours in sorted order.
_KNOWN_TYPES = ("tank", "hopper", "boxcar", "flatcar", "gondola", "container", "ship", "railcar")
_ALERT_COLOR = "#D55E00"   # vermillion: alert markers and threshold contours
_BAND_COLOR = "#56B4E9"    # sky blue: baseline band
_LINE_COLOR = "#0072B2"    # blue: the series itself

_HEADER_PX = 44
_FOOTER_PX = 26
_MIN_WIDTH_PX = 480
_DPI = 100

_SENSOR_NAMES = {
    "s2": "Sentinel-2 MSI",
    "s1": "Sentinel-1 SAR",
    "vhr": "VHR optical",
    "simulator": "changedet simulator",
}


# -- small public helpers ---------------------------------------------------------------------
def attribution_for(sensor: str, year: int, *, source: str | None = None) -> str:
    """Attribution line required by the data licence of ``sensor``.

    Parameters
    ----------
    sensor : str
        ``"s1"``/``"s2"`` (or names containing ``sentinel``), ``"simulator"``/``"sim"``,
        ``"vhr"`` or a provider name.
    year : int
        Year of the acquisition (Copernicus asks for the year of the data).
    source : str, optional
        The source the scene came from (``SourceSpec.name``); ``"simulator"`` makes any
        sensor a simulated scene.

    Returns
    -------
    str
        e.g. ``"Contains modified Copernicus Sentinel data 2023"``.
    """
    s = str(sensor).strip().lower()
    if str(source or "").strip().lower() == "simulator":
        return "Simulated scene (changedet)"
    if s in ("simulator", "sim", "simulated") or s.startswith("sim:") or "simulat" in s:
        return "Simulated scene (changedet)"
    if s in ("s1", "s2", "s3", "s5p") or "sentinel" in s or "copernicus" in s:
        return f"Contains modified Copernicus Sentinel data {int(year)}"
    if s in ("landsat", "l8", "l9") or "landsat" in s:
        return f"Landsat imagery courtesy of the U.S. Geological Survey, {int(year)}"
    if s == "vhr":
        # The provider is not known from the sensor code alone; its licence still applies.
        return f"VHR satellite imagery {int(year)} (provider licence applies)"
    return f"Imagery \u00a9 {int(year)} {sensor}"


def category_colors(types: Iterable[str]) -> dict[str, str]:
    """Okabe–Ito colour per category; known detection types keep the same colour everywhere."""
    out: dict[str, str] = {}
    present = sorted(set(map(str, types)))
    for i, t in enumerate(_KNOWN_TYPES):
        if t in present:
            out[t] = OKABE_ITO[i % len(OKABE_ITO)]
    free = [c for c in OKABE_ITO if c not in out.values()] or list(OKABE_ITO)
    for j, t in enumerate(x for x in present if x not in out):
        out[t] = free[j % len(free)]
    return out


def nice_scale_length(width_m: float, *, fraction: float = 0.25) -> float:
    """Longest 1/2/5 × 10^k metres not above ``fraction`` of the map width.

    Parameters
    ----------
    width_m : float
        Width of the map in metres (> 0).
    fraction : float
        Largest share of the width the bar may take.

    Returns
    -------
    float
        Bar length in metres.
    """
    if not (width_m > 0 and math.isfinite(width_m)):
        raise FigureError(f"map width {width_m} m must be a positive finite number")
    target = width_m * fraction
    k = math.floor(math.log10(target))
    best = 10.0 ** k
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10.0 ** k <= target * (1 + 1e-9):
            best = m * 10.0 ** k
    return best


def _scale_label(length_m: float) -> str:
    if length_m >= 1000:
        km = length_m / 1000
        return f"{km:g} km"
    return f"{length_m:g} m"


# -- map geometry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _MapGeom:
    crs: pyproj.CRS
    metres_per_unit: float
    bounds: tuple[float, float, float, float]   # xmin, ymin, xmax, ymax (CRS units)
    step: int                                    # source pixels per shown pixel (reduction)
    zoom: int                                    # PNG pixels per shown pixel (enlargement)


def _crs_of(da: xr.DataArray) -> pyproj.CRS:
    from changedet.grid import crs_of
    from changedet.errors import GridError

    try:
        return crs_of(da)
    except GridError as exc:
        raise FigureError(f"cannot draw a map without a CRS: {exc}") from None


def _metres_per_unit(crs: pyproj.CRS) -> float:
    if crs.is_geographic:
        raise FigureError(
            f"image CRS {crs.name!r} is geographic (degrees); a scale bar needs metres — reproject the image "
            "to a projected CRS first (changedet.grid.utm_crs_for gives the local UTM zone)"
        )
    try:
        f = float(crs.axis_info[0].unit_conversion_factor)
    except (IndexError, TypeError, ValueError):
        f = 1.0
    return f if f > 0 else 1.0


def _plane(image: xr.DataArray) -> tuple[xr.DataArray, bool]:
    """(band?, y, x) with dims checked; True when it has a band axis."""
    if not isinstance(image, xr.DataArray):
        raise FigureError(f"image must be an xarray.DataArray with dims (band, y, x) or (y, x), got {type(image).__name__}")
    dims = tuple(image.dims)
    if dims == ("y", "x"):
        return image, False
    if len(dims) == 3 and dims[1:] == ("y", "x"):
        return image, True
    raise FigureError(f"image dims {dims} are not (band, y, x) or (y, x); transpose or select one time first")


def _reduce(a: np.ndarray, step: int) -> np.ndarray:
    """Block mean over step×step (NaN-aware) on the last two axes."""
    if step == 1:
        return a
    rows, cols = a.shape[-2] // step * step, a.shape[-1] // step * step
    a = np.asarray(a[..., :rows, :cols], dtype="float32")
    finite = np.isfinite(a)
    # step² strided additions of whole planes are 5–10× faster than a reduction over the
    # reshaped (rows, step, cols, step) axes, and much faster than np.nanmean.
    clean = finite.all()
    values = a if clean else np.where(finite, a, 0.0)
    total = np.zeros(a.shape[:-2] + (rows // step, cols // step), dtype="float64")
    count = None if clean else np.zeros(total.shape, dtype="int32")
    for i in range(step):
        for j in range(step):
            total += values[..., i::step, j::step]
            if count is not None:
                count += finite[..., i::step, j::step]
    if count is None:
        return (total / (step * step)).astype("float32")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype("float32")


def _geom(image: xr.DataArray, max_px: int) -> _MapGeom:
    from changedet.grid import GridSpec

    crs = _crs_of(image)
    mpu = _metres_per_unit(crs)
    try:
        grid = GridSpec.of(image)
    except ChangedetError as exc:
        raise FigureError(f"cannot draw the image: {exc}") from None
    if max_px < 16:
        raise FigureError(f"max_px={max_px} is too small; use at least 16")
    rows, cols = grid.shape
    step = max(1, math.ceil(max(rows, cols) / max_px))
    shown_cols = cols // step
    zoom = max(1, math.ceil(_MIN_WIDTH_PX / max(shown_cols, 1))) if shown_cols < _MIN_WIDTH_PX else 1
    zoom = min(zoom, max(1, max_px // max(shown_cols, 1)))
    res = grid.resolution
    x0, y1 = grid.transform.c, grid.transform.f
    xmax = x0 + (cols // step) * step * res
    ymin = y1 - (rows // step) * step * res
    return _MapGeom(crs, mpu, (x0, ymin, xmax, y1), step, zoom)


def _north_angle_deg(crs: pyproj.CRS, x: float, y: float) -> float:
    """Angle of true north from grid up, degrees clockwise (grid convergence)."""
    try:
        to_ll = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        to_xy = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        lon, lat = to_ll.transform(x, y)
        x2, y2 = to_xy.transform(lon, min(lat + 0.01, 89.99))
        ang = math.degrees(math.atan2(x2 - x, y2 - y))
        return ang if math.isfinite(ang) else 0.0
    except Exception:  # a CRS pyproj cannot place on the globe: grid north is all we know
        return 0.0


def stretch_range(rgb: np.ndarray) -> list[tuple[float, float]]:
    """Per-band 2–98 % percentiles (NaN ignored): the display range :func:`scene_png` uses.

    Pass the range of one image as ``value_range`` to another (e.g. before/after chips)
    so that equal reflectance looks equal in both.
    """
    out = []
    for v in np.asarray(rgb, dtype="float32").reshape(np.shape(rgb)[0], -1):
        fin = v[np.isfinite(v)]
        out.append(tuple(float(q) for q in np.percentile(fin, [2, 98])) if fin.size else (np.nan, np.nan))
    return out


def _stretch(rgb: np.ndarray, value_range: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """2–98 % percentile stretch per band to 0..1 (or the given ranges); NaN stays NaN."""
    out = np.empty_like(rgb, dtype="float32")
    for i in range(rgb.shape[0]):
        v = rgb[i]
        fin = v[np.isfinite(v)]
        if fin.size == 0:
            out[i] = np.nan
            continue
        if value_range is not None:
            lo, hi = value_range[min(i, len(value_range) - 1)]
        else:
            lo, hi = np.percentile(fin, [2, 98])
        if hi <= lo:
            lo, hi = float(fin.min()), float(fin.max())
        if hi <= lo:
            hi = lo + 1.0
            # a constant image is drawn mid-grey rather than black
            out[i] = np.where(np.isfinite(v), 0.5, np.nan)
            continue
        out[i] = np.clip((v - lo) / (hi - lo), 0, 1)
    return out


def _when_text(when: date | datetime | str | None) -> str:
    if when is None:
        return ""
    ts = pd.Timestamp(when)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    if isinstance(when, datetime) and (ts.hour or ts.minute):
        return ts.strftime("%Y-%m-%d %H:%M UTC")
    return ts.strftime("%Y-%m-%d")


def _when_year(when) -> int:
    return pd.Timestamp(when).year if when is not None else datetime.now().year


def _new_figure(width_px: int, height_px: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _decorate_map(fig, ax, g: _MapGeom, *, map_w: int, map_h: int, total_h: int, title: str, when, sensor: str,
                  attribution: str) -> None:
    """Header (title, date, sensor), footer (attribution), scale bar and north arrow."""
    from matplotlib.patches import FancyArrow, Rectangle

    top = 1 - 8 / total_h
    fig.text(8 / fig.bbox.width, top, str(title), ha="left", va="top", fontsize=12, fontweight="bold", wrap=False,
             gid="title")
    sensor_name = _SENSOR_NAMES.get(str(sensor).lower(), str(sensor))
    fig.text(8 / fig.bbox.width, top - 20 / total_h, f"{_when_text(when)}  ·  {sensor_name}", ha="left", va="top",
             fontsize=9, color="#333333")
    fig.text(6 / fig.bbox.width, 7 / total_h, str(attribution), ha="left", va="bottom", fontsize=8, color="#333333")

    xmin, ymin, xmax, ymax = g.bounds
    width_m = (xmax - xmin) * g.metres_per_unit
    length_m = nice_scale_length(width_m)
    length_u = length_m / g.metres_per_unit
    # Bar at bottom-left inside the map, on a white box so it reads on any image.
    px = (xmax - xmin) / map_w           # CRS units per PNG pixel
    bx, by = xmin + 12 * px, ymin + 14 * px
    ax.add_patch(Rectangle((bx - 6 * px, by - 8 * px), length_u + 12 * px, 30 * px, facecolor="white",
                           edgecolor="none", alpha=0.85, zorder=20))
    ax.add_patch(Rectangle((bx, by), length_u, 5 * px, facecolor="black", edgecolor="none", zorder=21,
                           gid="scale-bar"))
    ax.text(bx + length_u / 2, by + 7 * px, _scale_label(length_m), ha="center", va="bottom", fontsize=8,
            zorder=22)

    # North arrow at top-right, rotated to true north.
    ang = math.radians(_north_angle_deg(g.crs, (xmin + xmax) / 2, (ymin + ymax) / 2))
    cx, cy = xmax - 22 * px, ymax - 34 * px
    ax.add_patch(Rectangle((cx - 15 * px, cy - 22 * px), 30 * px, 52 * px, facecolor="white", edgecolor="none",
                           alpha=0.85, zorder=20))
    ln = 26 * px
    dx, dy = ln * math.sin(ang), ln * math.cos(ang)
    ax.add_patch(FancyArrow(cx - dx / 2, cy - dy / 2, dx, dy, width=3 * px, head_width=11 * px,
                            head_length=9 * px, length_includes_head=True, color="black", zorder=21,
                            gid="north-arrow"))
    ax.text(cx + dx / 2 + 0 * px, cy + dy / 2 + 2 * px, "N", ha="center", va="bottom", fontsize=9,
            fontweight="bold", zorder=22)


def _map_canvas(g: _MapGeom, shown_shape: tuple[int, int], *, extra_right: int = 0):
    rows, cols = shown_shape
    map_w, map_h = cols * g.zoom, rows * g.zoom
    width = map_w + extra_right
    height = map_h + _HEADER_PX + _FOOTER_PX
    fig = _new_figure(width, height)
    ax = fig.add_axes((0, _FOOTER_PX / height, map_w / width, map_h / height))
    ax.set_axis_off()
    xmin, ymin, xmax, ymax = g.bounds
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("auto")
    return fig, ax, map_w, map_h, width, height


def _save_png(fig, path: Path, g: _MapGeom | None, map_w: int = 0, map_h: int = 0, *, title: str = "",
              attribution: str = "", extra: Mapping[str, str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"Title": str(title), "Software": "changedet"}
    if attribution:
        meta["Copyright"] = str(attribution)
    if g is not None:
        meta["changedet:map_box"] = f"0,{_HEADER_PX},{map_w},{map_h}"
        meta["changedet:map_bounds"] = ",".join(f"{v:.6f}" for v in g.bounds)
        meta["changedet:crs"] = g.crs.to_string()
    meta.update(extra or {})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        # zlib level 3: about 3x faster to write than the default for ~25 % larger files,
        # which matters when every alert renders five pictures.
        fig.savefig(fh, format="png", dpi=_DPI, metadata=meta, pil_kwargs={"compress_level": 3})
    tmp.replace(path)
    return path


def _draw_geometry(ax, geom: Mapping[str, Any] | Any, *, color: str, lw: float, fill_alpha: float,
                   label: str | None, gid: str | None = None, zorder: int = 10):
    import shapely.geometry
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    g = geom if hasattr(geom, "geom_type") else shapely.geometry.shape(geom)
    handle = None
    parts = list(getattr(g, "geoms", [g]))
    for part in parts:
        if part.is_empty:
            continue
        if part.geom_type == "Polygon":
            verts, codes = [], []
            for ring in [part.exterior, *part.interiors]:
                xy = np.asarray(ring.coords)
                verts.extend(xy.tolist())
                codes.extend([MPath.MOVETO] + [MPath.LINETO] * (len(xy) - 2) + [MPath.CLOSEPOLY])
            face = (*_rgb01(color), fill_alpha) if fill_alpha > 0 else "none"
            patch = PathPatch(MPath(verts, codes), facecolor=face, edgecolor=color, linewidth=lw, zorder=zorder,
                              label=label if handle is None else None, gid=gid)
            ax.add_patch(patch)
            handle = handle or patch
        elif part.geom_type in ("LineString", "LinearRing"):
            xy = np.asarray(part.coords)
            (line,) = ax.plot(xy[:, 0], xy[:, 1], color=color, linewidth=lw, zorder=zorder,
                              label=label if handle is None else None, gid=gid)
            handle = handle or line
        elif part.geom_type == "Point":
            (pt,) = ax.plot([part.x], [part.y], "o", color=color, markersize=4, zorder=zorder,
                            label=label if handle is None else None, gid=gid)
            handle = handle or pt
        else:
            for sub in getattr(part, "geoms", []):
                h = _draw_geometry(ax, sub, color=color, lw=lw, fill_alpha=fill_alpha, label=None, zorder=zorder)
                handle = handle or h
    return handle


def _rgb01(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)


# -- maps --------------------------------------------------------------------------------------
def _select_rgb(image: xr.DataArray, has_band: bool, rgb: tuple[str, str, str] | None) -> np.ndarray:
    if not has_band:
        return np.asarray(image.values, dtype="float32")[None]
    if "band" in image.coords:
        names = [str(b) for b in image["band"].values]
    else:
        names = [str(i) for i in range(image.sizes[image.dims[0]])]
    if rgb is not None:
        missing = [b for b in rgb if b not in names]
        if missing:
            raise FigureError(f"rgb bands {missing} are not in the image bands {names}; pass rgb=(r, g, b) from those")
        idx = [names.index(b) for b in rgb]
    elif (found := find_bands(names, ("red", "green", "blue"))) is not None:
        idx = [names.index(b) for b in found]
    else:
        # One band (e.g. SAR backscatter): grey.
        idx = [0]
    return np.asarray(image.isel({image.dims[0]: idx}).values, dtype="float32")


def select_rgb(image: xr.DataArray, rgb: tuple[str, str, str] | None = None) -> np.ndarray:
    """The bands :func:`scene_png` would show, as a float32 ``(3 or 1, rows, cols)`` array."""
    plane, has_band = _plane(image)
    return _select_rgb(plane, has_band, rgb)


def map_png(image: xr.DataArray, path: str | Path, *, title: str, when: date | datetime | None, sensor: str,
            attribution: str, detections: Sequence[Mapping[str, Any]] | None = None,
            features: Sequence[Mapping[str, Any]] | None = None, rgb: tuple[str, str, str] | None = None,
            max_px: int = 1024, value_range: Sequence[tuple[float, float]] | None = None) -> Path:
    """Image with AOI features (outlined by role) and/or detections (coloured by type), legend included.

    Parameters
    ----------
    features : sequence of dict, optional
        ``{"id": str, "role": str, "geometry": GeoJSON dict or shapely geometry}`` in the image CRS.

    Other parameters are those of :func:`scene_png`.
    """
    plane, has_band = _plane(image)
    g = _geom(plane, max_px)
    bands = _select_rgb(plane, has_band, rgb)
    shown = _reduce(bands, g.step)
    shown = _stretch(shown, value_range)
    if shown.shape[0] == 1:
        shown = np.repeat(shown, 3, axis=0)
    # No-data (NaN) pixels are drawn light grey, not black, so they are not read as shadow or water.
    rgba = np.moveaxis(np.nan_to_num(shown, nan=0.85), 0, -1)
    fig, ax, map_w, map_h, width, height = _map_canvas(g, shown.shape[1:])
    ax.imshow(rgba, extent=(g.bounds[0], g.bounds[2], g.bounds[1], g.bounds[3]), interpolation="nearest",
              origin="upper", zorder=1, aspect="auto")
    handles = []
    if features:
        roles = sorted({str(f.get("role", "feature")) for f in features})
        role_colors = {r: c for r, c in zip(roles, ("#FFFFFF", "#56B4E9", "#F0E442", "#CC79A7", "#009E73", "#E69F00"))}
        role_colors.update({"site": "#FFFFFF"} if "site" in role_colors else {})
        seen = set()
        for f in features:
            role = str(f.get("role", "feature"))
            h = _draw_geometry(ax, f["geometry"], color=role_colors[role], lw=1.6 if role != "site" else 2.0,
                               fill_alpha=0.0, label=None if role in seen else role, zorder=8)
            if role not in seen and h is not None:
                handles.append(h)
                seen.add(role)
    if detections:
        colors = category_colors(str(d.get("type", "object")) for d in detections)
        counts: dict[str, int] = {}
        for d in detections:
            counts[str(d.get("type", "object"))] = counts.get(str(d.get("type", "object")), 0) + 1
        seen = set()
        for i, d in enumerate(detections):
            t = str(d.get("type", "object"))
            h = _draw_geometry(ax, d["polygon"], color=colors[t], lw=2.0, fill_alpha=0.25,
                               label=None if t in seen else f"{t} ({counts[t]})", gid=f"detection-{i}", zorder=12)
            if t not in seen and h is not None:
                handles.append(h)
                seen.add(t)
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.85, borderaxespad=0.4)
    _decorate_map(fig, ax, g, map_w=map_w, map_h=map_h, total_h=height, title=title, when=when, sensor=sensor,
                  attribution=attribution)
    return _save_png(fig, path, g, map_w, map_h, title=title, attribution=attribution)


def scene_png(image: xr.DataArray, path: str | Path, *, title: str, when: date | datetime | None, sensor: str,
              attribution: str, detections: Sequence[Mapping[str, Any]] | None = None,
              rgb: tuple[str, str, str] | None = None, max_px: int = 1024,
              features: Sequence[Mapping[str, Any]] | None = None,
              value_range: Sequence[tuple[float, float]] | None = None) -> Path:
    """Write a georeferenced image as a publishable PNG, optionally with detections drawn on it.

    Parameters
    ----------
    image : xarray.DataArray
        ``(band, y, x)`` or ``(y, x)`` with x/y pixel-centre coordinates and the CRS in
        ``spatial_ref``; the CRS must be projected (units converted to metres).
    path : str or pathlib.Path
        PNG to write (parents created; written atomically).
    title : str
        Shown in the header.
    when : date or datetime
        Acquisition date shown in the header.
    sensor : str
        Sensor code (``vhr``, ``s2``, ``s1``) or name, shown in the header.
    attribution : str
        Data attribution shown in the footer (see :func:`attribution_for`).
    detections : list of dict, optional
        ``{"type": str, "polygon": GeoJSON geometry dict in the image CRS, "score": float}``;
        drawn as outlines with a light fill, coloured by type (Okabe–Ito), with a legend
        giving the count per type.
    rgb : tuple of str, optional
        Band names for red, green, blue; default R/G/B (or B04/B03/B02) when present,
        else the first band in grey.
    max_px : int
        Longest side of the map in PNG pixels; larger images are block-averaged by an
        integer factor.
    features : list of dict, optional
        AOI features to outline (see :func:`map_png`).
    value_range : list of (lo, hi), optional
        Display range per shown band (see :func:`stretch_range`); default the image's
        own 2–98 % percentiles.

    Returns
    -------
    pathlib.Path
        The PNG written.

    Raises
    ------
    FigureError
        Wrong dims, no CRS, geographic CRS, unknown band names.
    """
    return map_png(image, path, title=title, when=when, sensor=sensor, attribution=attribution,
                   detections=detections, features=features, rgb=rgb, max_px=max_px, value_range=value_range)


def heatmap_png(magnitude: xr.DataArray, path: str | Path, *, title: str, when: date | datetime | None, sensor: str,
                attribution: str, threshold: float | None = None, max_px: int = 1024,
                label: str = "change magnitude (robust z)") -> Path:
    """Change magnitude as a viridis heatmap with a colour bar and the change threshold contoured.

    Parameters
    ----------
    magnitude : xarray.DataArray
        ``(y, x)`` (or ``(1, y, x)``) magnitude with CRS; NaN (outside the site, cloud)
        is drawn light grey.
    threshold : float, optional
        Pixels above it are outlined in vermillion and the level is marked on the colour bar.
    label : str
        Colour-bar label (quantity and unit).

    Other parameters are those of :func:`scene_png`.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    plane, has_band = _plane(magnitude)
    if has_band:
        if plane.shape[0] != 1:
            raise FigureError(f"magnitude has {plane.shape[0]} bands; pass one (y, x) array")
        plane = plane.isel({plane.dims[0]: 0})
    g = _geom(plane, max_px)
    v = _reduce(np.asarray(plane.values, dtype="float32"), g.step)
    fin = v[np.isfinite(v)]
    vmax = float(np.percentile(fin, 99.5)) if fin.size else 1.0
    if threshold is not None and math.isfinite(threshold):
        vmax = max(vmax, float(threshold) * 1.25)
    vmax = vmax if vmax > 0 else 1.0
    bar_px = 110
    fig, ax, map_w, map_h, width, height = _map_canvas(g, v.shape, extra_right=bar_px)
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    extent = (g.bounds[0], g.bounds[2], g.bounds[1], g.bounds[3])
    im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, norm=Normalize(0.0, vmax), extent=extent,
                   interpolation="nearest", origin="upper", zorder=1, aspect="auto")
    cax = fig.add_axes((map_w / width + 14 / width, (_FOOTER_PX + 10) / height, 14 / width,
                        (map_h - 20) / height))
    cb = fig.colorbar(im, cax=cax, extend="max")
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if threshold is not None and math.isfinite(threshold) and fin.size:
        rows, cols = v.shape
        xs = np.linspace(extent[0], extent[1], cols, endpoint=False) + (extent[1] - extent[0]) / cols / 2
        ys = np.linspace(extent[3], extent[2], rows, endpoint=False) - (extent[3] - extent[2]) / rows / 2
        if np.nanmax(v) > threshold > np.nanmin(v):
            ax.contour(xs, ys, np.nan_to_num(v, nan=0.0), levels=[float(threshold)], colors=[_ALERT_COLOR],
                       linewidths=1.2, zorder=5)
        cb.ax.axhline(float(threshold), color=_ALERT_COLOR, linewidth=2)
        cb.set_label(f"{label}\nthreshold {float(threshold):g} (vermillion)", fontsize=8)
    _decorate_map(fig, ax, g, map_w=map_w, map_h=map_h, total_h=height, title=title, when=when, sensor=sensor,
                  attribution=attribution)
    return _save_png(fig, path, g, map_w, map_h, title=title, attribution=attribution)


# -- time series --------------------------------------------------------------------------------
#: A gap longer than this many times the series' typical spacing breaks the line. 2.5 keeps one
#: missed acquisition (2x the spacing, plus a few hours of overpass jitter) joined and breaks at two
#: missed in a row.
GAP_FACTOR = 2.5


def _utc_naive(idx: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx


def series_gap_limit(times: Sequence[Any], *, max_gap_days: float | None = None) -> pd.Timedelta | None:
    """Longest time between two observations that a series plot still joins with a line.

    Parameters
    ----------
    times : sequence of datetime
        Times of the finite observations (any order).
    max_gap_days : float, optional
        Explicit limit, days (e.g. ``2.5 * aoi.cadence_days``). Default :data:`GAP_FACTOR`
        times the typical spacing of the observations, the cadence the data actually has:
        the smaller of the 75th percentile of the steps between consecutive observations
        and 3 x the shortest step of at least 12 h. The 75th percentile (not the median)
        keeps uneven but regular sampling joined (several sensors or orbits: steps of 1,
        1, 4 days); the shortest-step bound finds a gap among few steps, or when gaps
        are a quarter of the steps or more (07-13, 07-20, 10-05: 17.5 d, the 77-day step
        breaks). Steps under 12 h (two scenes of one day) do not set the cadence.

    Returns
    -------
    pandas.Timedelta or None
        The limit; None when fewer than 3 observations give no typical spacing (nothing is broken).

    Raises
    ------
    FigureError
        If ``max_gap_days`` is not a positive finite number.
    """
    if max_gap_days is not None:
        try:
            days = float(max_gap_days)
        except (TypeError, ValueError):
            days = float("nan")
        if not (math.isfinite(days) and days > 0):
            raise FigureError(f"max_gap_days={max_gap_days!r} must be a positive number of days (e.g. 2 x cadence)")
        return pd.Timedelta(days=days)
    t = pd.DatetimeIndex(times).as_unit("ns").sort_values()   # asi8 below is then nanoseconds
    if len(t) < 3:
        return None
    steps = np.diff(t.asi8).astype("float64")
    steps = steps[steps >= pd.Timedelta(hours=12).value]
    if not steps.size:
        return None
    typical = min(float(np.percentile(steps, 75)), 3.0 * float(steps.min()))
    return pd.Timedelta(int(typical * GAP_FACTOR), unit="ns")


def _break_at_gaps(times: pd.DatetimeIndex, *columns: np.ndarray, limit: pd.Timedelta | None):
    """Drop non-finite points and insert a NaN row inside every gap longer than ``limit``.

    Matplotlib does not join across a NaN, so a line (or a band) stops at the last
    observation before a gap and starts again at the first one after it, instead of
    drawing a ramp nobody observed. Returns (times, columns..., gaps as (start, end)).
    """
    ok = np.ones(len(times), dtype=bool)
    for c in columns:
        ok &= np.isfinite(np.asarray(c, dtype="float64"))
    t = pd.DatetimeIndex(times[ok]).as_unit("ns")   # asi8 below is then nanoseconds, like Timedelta.value
    cols = [np.asarray(c, dtype="float64")[ok] for c in columns]
    gaps: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    if limit is None or len(t) < 2:
        return (t, *cols, gaps)
    where = np.nonzero(np.diff(t.asi8) > limit.as_unit("ns").value)[0]
    if not where.size:
        return (t, *cols, gaps)
    gaps = [(t[i], t[i + 1]) for i in where]
    mids = pd.DatetimeIndex([t[i] + (t[i + 1] - t[i]) / 2 for i in where])
    pos = where + 1
    t = pd.DatetimeIndex(np.insert(t.asi8, pos, mids.as_unit("ns").asi8).astype("datetime64[ns]"))
    cols = [np.insert(c, pos, np.nan) for c in cols]
    return (t, *cols, gaps)


def _series_figure(series: pd.Series, *, title: str, units: str, baseline: pd.DataFrame | None,
                   alerts: Sequence[datetime | date | str], width_px: int, height_px: int,
                   max_gap_days: float | None = None):
    import matplotlib.dates as mdates

    if not isinstance(series, pd.Series):
        raise FigureError(f"series must be a pandas.Series indexed by time, got {type(series).__name__}")
    try:
        idx = pd.DatetimeIndex(series.index)
    except (TypeError, ValueError):
        raise FigureError("series index is not made of times; index it by acquisition time") from None
    s = pd.Series(np.asarray(series.values, dtype="float64"), index=_utc_naive(idx)).sort_index()
    obs = s[np.isfinite(s.values)]
    limit = series_gap_limit(obs.index, max_gap_days=max_gap_days)
    fig = _new_figure(width_px, height_px)
    ax = fig.add_axes((70 / width_px, 40 / height_px, 1 - 90 / width_px, 1 - 76 / height_px))
    # Only what is drawn gets a legend entry: a baseline of all-NaN rows (no history yet) is not listed.
    if baseline is not None and len(baseline):
        missing = [c for c in ("lo", "mid", "hi") if c not in baseline.columns]
        if missing:
            raise FigureError(f"baseline lacks columns {missing}; give a DataFrame with lo, mid, hi")
        b = baseline.set_axis(_utc_naive(pd.DatetimeIndex(baseline.index))).sort_index()
        bt, lo, hi, _ = _break_at_gaps(b.index, b["lo"].to_numpy(float), b["hi"].to_numpy(float), limit=limit)
        if np.isfinite(lo).any():
            ax.fill_between(bt, lo, hi, color=_BAND_COLOR, alpha=0.3, linewidth=0,
                            label="normal range (median ± k·MAD)", gid="baseline-band")
            # Whiskers too: a band defined at isolated observations has no area to fill.
            fin = np.isfinite(lo)
            ax.vlines(bt[fin], lo[fin], hi[fin], color=_BAND_COLOR, alpha=0.45, linewidth=5, gid="baseline-range")
        mt, mid, _ = _break_at_gaps(b.index, b["mid"].to_numpy(float), limit=limit)
        if np.isfinite(mid).any():
            ax.plot(mt, mid, color=_BAND_COLOR, linewidth=1.2, linestyle="--", label="baseline median",
                    gid="baseline-mid")
    lt, lv, gaps = _break_at_gaps(obs.index, obs.to_numpy(), limit=limit)
    for j, (g0, g1) in enumerate(gaps):
        days = (g1 - g0) / pd.Timedelta(days=1)
        ax.axvspan(g0, g1, color="#bdbdbd", alpha=0.25, linewidth=0, zorder=0, gid=f"gap-{j}",
                   label=f"no observations (gap > {limit / pd.Timedelta(days=1):.3g} d)" if j == 0 else None)
        ax.text(g0 + (g1 - g0) / 2, 0.02, f"{days:.0f} d\nno data", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7, color="#555555")
    if len(obs):
        # Markers on every observation: an isolated point between two gaps is still seen.
        ax.plot(lt, lv, color=_LINE_COLOR, linewidth=1.6, marker="o", markersize=3.5, label="observed",
                gid="series-line")
    n_alert = 0
    for i, t in enumerate(alerts):
        ts = pd.Timestamp(t)
        ts = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts
        ax.axvline(ts, color=_ALERT_COLOR, linewidth=1.0, linestyle=":", zorder=3)
        # The marker sits on the observation at (or just before) the alert time.
        before = obs[obs.index <= ts]
        if len(before):
            y = float(before.iloc[-1])
        elif len(obs):
            y = float(np.nanmax(obs.values))
        else:  # no observation to sit on: no marker (NaN) for an all-NaN series, 0 for an empty one
            y = float("nan") if len(s) else 0.0
        ax.plot([ts], [y], marker="v", markersize=10, color=_ALERT_COLOR, markeredgecolor="black",
                markeredgewidth=0.6, linestyle="none", zorder=6, gid=f"alert-marker-{i}", clip_on=False,
                label="alert" if n_alert == 0 else None)
        n_alert += 1
    ax.set_title(str(title), fontsize=11, loc="left")
    ax.set_ylabel(str(units) if units else "value", fontsize=9)
    ax.grid(True, color="#e0e0e0", linewidth=0.6)
    # One date alone has no time span: matplotlib would pad it to several years (ticks
    # 2022-2025 around one June day). Show a month around it instead.
    drawn = list(obs.index) + [pd.Timestamp(t).tz_convert("UTC").tz_localize(None) if pd.Timestamp(t).tzinfo
                                is not None else pd.Timestamp(t) for t in alerts]
    if drawn and min(drawn) == max(drawn):
        ax.set_xlim(drawn[0] - pd.Timedelta(days=15), drawn[0] + pd.Timedelta(days=15))
    loc = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.tick_params(labelsize=8)
    if len(obs) == 0:
        ax.text(0.5, 0.5, "no observations", transform=ax.transAxes, ha="center", va="center", color="#666666")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=7, framealpha=0.85)
    return fig


def series_png(series: pd.Series, path: str | Path, *, title: str, units: str = "",
               baseline: pd.DataFrame | None = None, alerts: Sequence[datetime | date | str] = (),
               width_px: int = 800, height_px: int = 320, max_gap_days: float | None = None) -> Path:
    """Plot a metric's time series with its baseline band and alert markers as a PNG.

    Observations are marked; the line (and the band) is broken at gaps longer than
    :func:`series_gap_limit`, and each gap is shaded grey with its length in days, so a
    jump across weeks without data does not read as a gradual change. The legend lists
    only what is drawn.

    Parameters
    ----------
    series : pandas.Series
        Values indexed by acquisition time (DatetimeIndex; aware times are shown in UTC).
    path : str or pathlib.Path
        PNG to write.
    title : str
        Plot title.
    units : str
        Y-axis label (quantity and unit, e.g. ``"railcars"`` or ``"m²"``).
    baseline : pandas.DataFrame, optional
        Columns ``lo``, ``mid``, ``hi`` indexed by time: the normal range (drawn as a band)
        and its centre.
    alerts : sequence of datetime
        Times at which alerts fired: a vermillion ▼ on the series and a dotted line.
    width_px, height_px : int
        PNG size in pixels.
    max_gap_days : float, optional
        Longest spacing, days, still joined by a line (e.g. ``2 * aoi.cadence_days``);
        default :data:`GAP_FACTOR` x the series' median spacing.
    """
    fig = _series_figure(series, title=title, units=units, baseline=baseline, alerts=alerts, width_px=width_px,
                         height_px=height_px, max_gap_days=max_gap_days)
    return _save_png(fig, path, None, title=title, extra={"changedet:alerts": str(len(alerts))})


def series_svg(series: pd.Series, *, title: str, units: str = "", baseline: pd.DataFrame | None = None,
               alerts: Sequence[datetime | date | str] = (), width_px: int = 800, height_px: int = 320,
               id_prefix: str = "s", max_gap_days: float | None = None) -> str:
    """The figure of :func:`series_png` as an SVG document fragment (``<svg ...>...</svg>``) for inline HTML.

    Alert markers are groups with ids ``{id_prefix}-alert-marker-{i}`` and the baseline
    band ``{id_prefix}-baseline-band``; text is real text (escaped by matplotlib's XML
    writer), so titles with markup stay literal.
    """
    import io

    from matplotlib import rc_context

    import re

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", id_prefix):
        raise FigureError(f"id_prefix {id_prefix!r} must be letters, digits, '-' or '_' starting with a letter")
    # A per-figure salt keeps clip-path ids unique when several SVGs share one page.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": id_prefix}):
        fig = _series_figure(series, title=title, units=units, baseline=baseline, alerts=alerts,
                             width_px=width_px, height_px=height_px, max_gap_days=max_gap_days)
        buf = io.StringIO()
        # No RDF metadata block: inline in a page it would only add foreign URLs.
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg"):], flags=re.S)
    # Every id (and every reference to one) gets the prefix: ids stay unique on a page with several plots.
    text = re.sub(r'\bid="', f'id="{id_prefix}-', text)
    text = text.replace('url(#', f'url(#{id_prefix}-').replace('href="#', f'href="#{id_prefix}-')
    return text
