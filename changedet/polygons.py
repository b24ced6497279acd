"""Change polygons: connected components of a change mask as vector features.

A change mask (after thresholding, morphological clean-up and the minimum mapping
unit, see :func:`changedet.kernels.change_mask`) is labelled into connected components
that stay whole across dask chunk edges (:func:`changedet.kernels.label_components`);
every component becomes one polygon with its area in m^2, its pixel count, the mean
and maximum change magnitude inside it, and the AOI features it touches.

Polygons are traced block by block (``rasterio.features.shapes``) with the global
labels, so a component spanning several blocks comes back as pieces that share exact
pixel edges; the pieces of each label are dissolved with shapely. Only the polygons
and per-label sums are gathered, never the raster.

Writers: :func:`write_geojson` (RFC 7946, lon/lat) and :func:`write_geoparquet`
(GeoParquet 1.0, WKB geometry, in the grid CRS), both written to a temporary name
and moved into place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyproj
import xarray as xr
from affine import Affine
from shapely.geometry.base import BaseGeometry

from changedet.errors import ChangedetError, GridError
from changedet.grid import GridSpec

__all__ = ["ChangePolygon", "ChangePolygons", "change_polygons", "write_geojson", "write_geoparquet"]


class PolygonError(ChangedetError):
    """Change polygons could not be built or written (bad mask, labels or output path)."""


@dataclass(frozen=True)
class ChangePolygon:
    """One connected change region.

    Attributes
    ----------
    id : int
        1-based, ordered by the top edge of the region, then its left edge.
    geometry : shapely Polygon or MultiPolygon
        Pixel outlines in the grid CRS (a MultiPolygon only for 8-connected regions
        touching at corners).
    n_pixels : int
    area_m2 : float
        Ground area: geodesic on the CRS ellipsoid for geographic grids; for projected
        grids the planar area times the ground/map area ratio of the region's block
        (Web Mercator: about cos^2(lat)), see :func:`ground_area_factors`; UTM and
        national grids stay planar (:data:`AREAL_SCALE_TOLERANCE`).
    mean_magnitude, max_magnitude : float
        Of the change magnitude inside the region (NaN if no magnitude was given).
    features : tuple of str
        Ids of the AOI features the region intersects.
    """

    id: int
    geometry: BaseGeometry
    n_pixels: int
    area_m2: float
    mean_magnitude: float
    max_magnitude: float
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangePolygons:
    """The polygons of one change map and the CRS of their geometries."""

    polygons: tuple[ChangePolygon, ...]
    crs: pyproj.CRS
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.polygons)

    @property
    def total_area_m2(self) -> float:
        return float(sum(p.area_m2 for p in self.polygons))


def _block_pieces(lab: np.ndarray, mag: np.ndarray | None, transform: Affine):
    """Polygons and per-label sums of one block of global labels."""
    from rasterio.features import shapes

    lab = np.asarray(lab)
    if lab.max(initial=0) > np.iinfo(np.int32).max:
        raise PolygonError("more than 2**31 change regions; raise the threshold or the minimum mapping unit")
    lab32 = lab.astype(np.int32)
    fg = lab32 > 0
    pieces = [(int(v), geom) for geom, v in shapes(lab32, mask=fg, connectivity=4, transform=transform)]
    ids, counts = np.unique(lab32[fg], return_counts=True)
    sums = np.zeros(ids.size)
    maxs = np.full(ids.size, np.nan)
    if mag is not None and ids.size:
        m = np.asarray(mag, dtype="float64")[fg]
        inv = np.searchsorted(ids, lab32[fg])
        fin = np.isfinite(m)
        sums = np.bincount(inv[fin], weights=m[fin], minlength=ids.size)
        maxs = np.full(ids.size, -np.inf)
        np.maximum.at(maxs, inv[fin], m[fin])
        maxs[np.isinf(maxs)] = np.nan
        nfin = np.bincount(inv[fin], minlength=ids.size)
    else:
        nfin = np.zeros(ids.size, dtype=np.int64)
    return pieces, ids, counts, sums, maxs, nfin


#: Departure of a projection's ground/map area ratio from 1 up to which map m^2 are taken
#: as ground m^2 unchanged. Map grids built for measuring (UTM, national grids) keep the
#: linear scale within about +-0.1 % over their zone (UTM: 0.9996 on the central
#: meridian, 1.001 at the zone edge, i.e. areal 0.9992-1.002), far below the pixel-edge
#: uncertainty of any change region (one pixel of rim on a 20 x 20 px region is 20 %);
#: leaving them as they were keeps areas equal to pixels x pixel size, as users and the
#: planar kernel (:func:`changedet.kernels.changed_area_m2`) compute them. Web Mercator
#: (ground/map = cos^2(lat) x the ellipsoid's curvature term: 0.67 at 35 N, 0.25 at 60 N)
#: exceeds it beyond about 3 degrees of latitude, and is then converted to ground area.
AREAL_SCALE_TOLERANCE = 0.0025
#: Side (pixels) of the blocks over which the ground/map area ratio is taken as constant:
#: 256 px of 10 m Web Mercator span 0.02 degrees of latitude, over which cos^2(lat) varies
#: by 0.15 % at 60 N (and by about as much below as above the block's centre).
AREA_BLOCK_PX = 256
#: Points per block side when the block outline is moved to lon/lat for its geodesic area
#: (a straight map edge is a curve on the ellipsoid).
_EDGE_POINTS = 16


def ground_area_factors(grid: GridSpec, block_px: int = AREA_BLOCK_PX) -> np.ndarray | None:
    """Ground m^2 per map m^2 of each ``block_px`` x ``block_px`` block of a projected grid.

    The ground area of a block is the geodesic area, on the CRS's ellipsoid, of its
    outline (densified, moved to the CRS's geographic CRS); the map area is its planar
    area in metres (the CRS's linear unit converted). Web Mercator gives about
    cos^2(lat); UTM 1/k^2 (k = 0.9996-1.001).

    In a normal-aspect cylindrical projection (Web Mercator, Mercator, equidistant or
    equal-area cylindrical: latitude a function of y alone, longitude an affine function
    of x alone, see :func:`_cylindrical`) the blocks of one block row are one outline
    moved along the parallels, and an ellipsoid of revolution gives them one area: only
    the first block of each row (and a narrower last one) is measured, and the factor is
    broadcast along the row. It equals the block-by-block value to within float rounding
    (the block-by-block values themselves differ along a row by up to ~3e-12 relative).

    Parameters
    ----------
    grid : GridSpec
        A projected grid.
    block_px : int
        Block side in pixels; edge blocks are truncated to the grid.

    Returns
    -------
    numpy.ndarray or None
        (ceil(rows / block_px), ceil(cols / block_px)) factors, or None when every block's
        factor is within :data:`AREAL_SCALE_TOLERANCE` of 1 (map m^2 are ground m^2), or
        when the CRS cannot be moved to lon/lat (an engineering CRS: its units are taken
        as ground units).
    """
    crs = pyproj.CRS.from_user_input(grid.crs)
    h, w = grid.shape
    t = grid.transform
    to_m = crs.axis_info[0].unit_conversion_factor or 1.0
    r0 = np.arange(0, h, block_px)
    c0 = np.arange(0, w, block_px)
    r1, c1 = np.minimum(r0 + block_px, h), np.minimum(c0 + block_px, w)
    try:
        tr = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        geod = crs.get_geod() or pyproj.Geod(ellps="WGS84")
    except Exception:  # no geographic CRS to go to: take the units as ground units
        return None
    # None from here: some outline point has no lon/lat (outside the projection's domain).
    # Blocks measured: all, or in a cylindrical grid the first of each block row and the
    # last one when it is narrower (the others are copies of the first, see above).
    cyl = _cylindrical(tr, t, r0, r1, c0, c1)
    if cyl is None:
        return None
    cols = np.unique([0, c0.size - 1]) if cyl else np.arange(c0.size)
    ground = _outline_areas(tr, geod, t, r0, r1, c0[cols], c1[cols])
    if ground is None:
        return None
    if cyl:
        ground = ground[:, np.where(c1 - c0 == c1[0] - c0[0], 0, cols.size - 1)]
    planar = np.outer((r1 - r0) * abs(t.e), (c1 - c0) * abs(t.a)) * to_m * to_m
    f = ground / planar
    if np.all(np.abs(f - 1.0) <= AREAL_SCALE_TOLERANCE):
        return None
    return f


def _outline_points(t: Affine, r0, r1, c0, c1):
    """Map (x, y) of the densified outlines of blocks (rows r0:r1) x (cols c0:c1):
    (n_rows, n_cols, 4 * :data:`_EDGE_POINTS`) each, counter-clockwise in (col, row)."""
    u = np.linspace(0.0, 1.0, _EDGE_POINTS + 1)[:-1]
    uc = np.concatenate([u, np.ones_like(u), 1 - u, np.zeros_like(u)])
    ur = np.concatenate([np.zeros_like(u), u, np.ones_like(u), 1 - u])
    cols = c0[None, :, None] + (c1 - c0)[None, :, None] * uc[None, None, :]
    rows = r0[:, None, None] + (r1 - r0)[:, None, None] * ur[None, None, :]
    cols, rows = np.broadcast_arrays(cols, rows)
    return t.c + t.a * cols, t.f + t.e * rows


def _outline_areas(tr, geod, t: Affine, r0, r1, c0, c1) -> np.ndarray | None:
    """Geodesic area (m^2) of each block outline, or None when some outline point has no
    lon/lat (outside the projection's domain)."""
    ll = _lonlat(tr, *_outline_points(t, r0, r1, c0, c1))
    if ll is None:
        return None
    lon, lat = ll
    # One call per block: pyproj's polygon area takes one ring (Karney's algorithm, in C;
    # it is the cost here, ~1 us per vertex, not this loop).
    ground = np.empty((r0.size, c0.size))
    for i in range(r0.size):
        for j in range(c0.size):
            ground[i, j] = abs(geod.polygon_area_perimeter(lon[i, j], lat[i, j])[0])
    return ground


def _lonlat(tr, x, y) -> tuple[np.ndarray, np.ndarray] | None:
    """(lon, lat) of map points, or None when some point has none (outside the
    projection's domain, or no transformation to lon/lat at all)."""
    try:
        lon, lat = tr.transform(x, y)
    except Exception:  # an engineering CRS: no geographic CRS to go to
        return None
    lon, lat = np.asarray(lon), np.asarray(lat)
    return (lon, lat) if np.isfinite(lon).all() and np.isfinite(lat).all() else None


#: Departure (degrees) up to which :func:`_cylindrical` takes latitudes along a row of
#: block corners as equal and longitude steps as affine: 1e-12 deg is 0.1 um on the
#: ground, an area change of ~1e-12 of a block, the rounding of the transform itself.
_CYLINDRICAL_TOL_DEG = 1e-12


def _cylindrical(tr, t: Affine, r0, r1, c0, c1) -> bool | None:
    """Whether the grid's outline points map to lon/lat as a normal-aspect cylindrical
    projection: latitude depends on the row alone and longitude on the column alone,
    affinely (equal column steps, equal longitude steps). None when a point has no
    lon/lat.

    Checked numerically on every block corner and on the densified outline points of the
    first block row and column (the points the areas are computed from), so no list of
    projection names is needed and a grid crossing the antimeridian (longitudes wrapping)
    simply fails the test and is measured block by block.
    """
    rows = np.concatenate([r0, r1[-1:]]).astype(float)
    cols = np.concatenate([c0, c1[-1:]]).astype(float)
    corners = _lonlat(tr, *np.meshgrid(t.c + t.a * cols, t.f + t.e * rows))
    first_row = _lonlat(tr, *_outline_points(t, r0[:1], r1[:1], c0, c1))
    first_col = _lonlat(tr, *_outline_points(t, r0, r1, c0[:1], c1[:1]))
    if corners is None or first_row is None or first_col is None:
        return None
    (lon, lat), (lon1, lat1), (lon2, lat2) = corners, first_row, first_col
    tol = _CYLINDRICAL_TOL_DEG
    if lat.shape[1] < 2:
        return False
    # Latitude constant along each corner row, longitude constant down each corner column.
    if np.abs(lat - lat[:, :1]).max() > tol or np.abs(lon - lon[:1, :]).max() > tol:
        return False
    # Along the first block row, every block's outline is the first block's moved in
    # longitude: same latitudes, same longitude offsets from the block's own first point.
    full = (c1 - c0) == (c1[0] - c0[0])
    d1 = lon1 - lon1[..., :1]
    if np.abs(lat1[:, full] - lat1[:, :1]).max() > tol or np.abs(d1[:, full] - d1[:, :1]).max() > tol:
        return False
    # Down the first block column, the vertical edges are meridians (one longitude) and
    # the latitudes of their points do not depend on the column (left edge = right edge).
    left, right = slice(3 * _EDGE_POINTS, None), slice(_EDGE_POINTS, 2 * _EDGE_POINTS)
    for edge in (left, right):
        if np.abs(lon2[..., edge] - lon2[..., edge][..., :1]).max() > tol:
            return False
    # The left edge runs upwards (rows 1 - u), the right one downwards (rows u).
    return bool(np.abs(lat2[..., right][..., 1:] - lat2[..., left][..., ::-1][..., :-1]).max() <= tol)


def _area_m2(geom: BaseGeometry, crs: pyproj.CRS, grid: GridSpec | None = None,
             factors: np.ndarray | None = None) -> float:
    if crs.is_geographic:
        geod = crs.get_geod() or pyproj.Geod(ellps="WGS84")
        return float(abs(geod.geometry_area_perimeter(geom)[0]))
    to_m = crs.axis_info[0].unit_conversion_factor or 1.0
    area = float(geom.area * to_m * to_m)
    if factors is None or grid is None or geom.is_empty:
        return area
    # Ground m^2 (Web Mercator: about x cos^2(lat)) with the factor of the block holding
    # the region, as :func:`changedet.change.changed_area_m2` counts its pixels.
    p = geom.representative_point()
    col, row = ~grid.transform * (p.x, p.y)
    i = min(max(int(row // AREA_BLOCK_PX), 0), factors.shape[0] - 1)
    j = min(max(int(col // AREA_BLOCK_PX), 0), factors.shape[1] - 1)
    return area * float(factors[i, j])


def _features_4326(aoi=None, features: Mapping[str, BaseGeometry] | None = None) -> dict[str, BaseGeometry]:
    out: dict[str, BaseGeometry] = {}
    if aoi is not None:
        out.update({f.id: f.geometry for f in aoi.features})
    if features:
        out.update(dict(features))
    return out


def _to_crs(geom: BaseGeometry, src: pyproj.CRS, dst: pyproj.CRS) -> BaseGeometry:
    import shapely

    if src == dst:
        return geom
    tr = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def change_polygons(
    labels: xr.DataArray,
    magnitude: xr.DataArray | None = None,
    *,
    aoi=None,
    features: Mapping[str, BaseGeometry] | None = None,
    connectivity: int = 1,
    properties: Mapping[str, Any] | None = None,
) -> ChangePolygons:
    """Vectorise a change mask (or its labels) into change polygons.

    Parameters
    ----------
    labels : xarray.DataArray
        (y, x) on a georeferenced grid (``spatial_ref``): a boolean change mask, which
        is labelled here with ``connectivity``, or integer labels from
        :func:`changedet.kernels.label_components` (0 = background). numpy or dask.
    magnitude : xarray.DataArray, optional
        (y, x) change magnitude on the same grid, for the mean/max per polygon.
    aoi : changedet.aoi.AOI, optional
        Its features (EPSG:4326) are tested for intersection with each polygon.
    features : mapping of str to shapely geometry, optional
        Extra features (EPSG:4326 lon/lat) to test, by id.
    connectivity : {1, 2}, optional
        Used when ``labels`` is a boolean mask (default 1, edge neighbours).
    properties : mapping, optional
        Collection-level properties carried to the writers (method, threshold, ...).

    Returns
    -------
    ChangePolygons
        One :class:`ChangePolygon` per region, ids in raster order of the regions'
        first pixel, geometries in the grid CRS.
    """
    import dask
    from shapely import union_all

    from changedet.kernels import label_components

    if not isinstance(labels, xr.DataArray) or labels.dims != ("y", "x"):
        raise PolygonError("labels must be a (y, x) DataArray with x/y coordinates and a CRS (spatial_ref)")
    grid = GridSpec.of(labels)
    if labels.dtype == bool:
        labels, _ = label_components(labels, connectivity=connectivity)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise PolygonError(f"labels has dtype {labels.dtype}; pass a boolean mask or integer labels")
    if magnitude is not None:
        if not isinstance(magnitude, xr.DataArray) or magnitude.shape != labels.shape:
            raise GridError(
                f"magnitude must be a DataArray on the labels' grid {labels.shape}; got "
                f"{getattr(magnitude, 'shape', None)}"
            )
    lab = labels.data
    mag = None if magnitude is None else magnitude.data
    if hasattr(lab, "to_delayed"):
        import dask.array as da

        if mag is not None:
            mag = da.asarray(mag).rechunk(lab.chunks)
        rows = np.concatenate([[0], np.cumsum(lab.chunks[0])[:-1]])
        cols = np.concatenate([[0], np.cumsum(lab.chunks[1])[:-1]])
        lb = lab.to_delayed()
        mb = mag.to_delayed() if mag is not None else None
        tasks = []
        for i, r0 in enumerate(rows):
            for j, c0 in enumerate(cols):
                t = grid.transform @ Affine.translation(int(c0), int(r0))
                tasks.append(dask.delayed(_block_pieces)(lb[i, j], None if mb is None else mb[i, j], t))
        parts = dask.compute(*tasks)
    else:
        parts = [_block_pieces(np.asarray(lab), None if mag is None else np.asarray(mag), grid.transform)]

    geoms: dict[int, list] = {}
    stats: dict[int, list] = {}
    from shapely.geometry import shape

    for pieces, ids, counts, sums, maxs, nfin in parts:
        for v, g in pieces:
            geoms.setdefault(v, []).append(shape(g))
        for k in range(ids.size):
            s = stats.setdefault(int(ids[k]), [0, 0.0, -np.inf, 0])
            s[0] += int(counts[k])
            s[1] += float(sums[k])
            if np.isfinite(maxs[k]):
                s[2] = max(s[2], float(maxs[k]))
            s[3] += int(nfin[k])

    factors = ground_area_factors(grid) if not grid.crs.is_geographic else None
    feats = _features_4326(aoi, features)
    feats_native = {k: _to_crs(g, pyproj.CRS.from_epsg(4326), grid.crs) for k, g in feats.items()}
    out = []
    for v, gs in geoms.items():
        geom = gs[0] if len(gs) == 1 else union_all(gs)
        n, ssum, smax, nfin = stats[v]
        touched = tuple(sorted(k for k, g in feats_native.items() if geom.intersects(g)))
        out.append(
            (
                (-geom.bounds[3], geom.bounds[0]),
                geom,
                n,
                ssum / nfin if nfin else float("nan"),
                smax if np.isfinite(smax) else float("nan"),
                touched,
            )
        )
    # Raster order of the first pixel: top edge (largest y for north-up) then left edge.
    out.sort(key=lambda t: t[0])
    polys = tuple(
        ChangePolygon(
            id=i + 1,
            geometry=geom,
            n_pixels=n,
            area_m2=_area_m2(geom, grid.crs, grid, factors),
            mean_magnitude=float(mean),
            max_magnitude=float(mx),
            features=touched,
        )
        for i, (_, geom, n, mean, mx, touched) in enumerate(out)
    )
    return ChangePolygons(polys, grid.crs, dict(properties or {}))


def _num(v: float):
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None


def _records(polys: ChangePolygons) -> Iterable[dict]:
    for p in polys.polygons:
        yield {
            "id": p.id,
            "area_m2": _num(p.area_m2),
            "n_pixels": p.n_pixels,
            "mean_magnitude": _num(p.mean_magnitude),
            "max_magnitude": _num(p.max_magnitude),
            "features": list(p.features),
        }


def _atomic_write(path: Path, write, option: str | None = None) -> Path:
    from changedet.io import OutputPathError, atomic_write

    try:
        return atomic_write(path, write, option=option)
    except OutputPathError as exc:
        # PolygonError, as before, so callers catching it keep working; the message
        # (naming the path, and the CLI flag when given) is atomic_write's.
        raise PolygonError(str(exc)) from None


def write_geojson(polys: ChangePolygons, path: str | Path, *, option: str | None = None) -> Path:
    """Write the polygons as an RFC 7946 GeoJSON FeatureCollection (EPSG:4326 lon/lat).

    Properties per feature: ``id``, ``area_m2``, ``n_pixels``, ``mean_magnitude``,
    ``max_magnitude``, ``features`` (AOI feature ids touched); the collection's
    ``properties`` (method, threshold, ...) are written as a top-level member.
    ``option`` (e.g. ``"--polygons"``) names the path in the error of an unwritable path
    (:class:`PolygonError`; no temporary file is left behind).
    """
    from shapely.geometry import mapping

    wgs = pyproj.CRS.from_epsg(4326)
    doc = {
        "type": "FeatureCollection",
        "properties": {k: (v if not isinstance(v, float) else _num(v)) for k, v in polys.properties.items()},
        "features": [
            {"type": "Feature", "id": r["id"], "properties": r, "geometry": mapping(_to_crs(p.geometry, polys.crs, wgs))}
            for p, r in zip(polys.polygons, _records(polys))
        ],
    }
    return _atomic_write(Path(path), lambda t: t.write_text(json.dumps(doc)), option)


def write_geoparquet(polys: ChangePolygons, path: str | Path, *, option: str | None = None) -> Path:
    """Write the polygons as GeoParquet 1.0 (WKB ``geometry`` column, grid CRS as PROJJSON).

    Needs ``pyarrow``. Columns: ``id``, ``area_m2``, ``n_pixels``, ``mean_magnitude``,
    ``max_magnitude``, ``features`` (list of str), ``geometry``.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the install
        raise PolygonError("GeoParquet output needs pyarrow: pip install 'pyarrow==26.0.1'") from None
    from shapely import to_wkb

    recs = list(_records(polys))
    geoms = [p.geometry for p in polys.polygons]
    table = pa.table(
        {
            "id": pa.array([r["id"] for r in recs], pa.int64()),
            "area_m2": pa.array([r["area_m2"] for r in recs], pa.float64()),
            "n_pixels": pa.array([r["n_pixels"] for r in recs], pa.int64()),
            "mean_magnitude": pa.array([r["mean_magnitude"] for r in recs], pa.float64()),
            "max_magnitude": pa.array([r["max_magnitude"] for r in recs], pa.float64()),
            "features": pa.array([r["features"] for r in recs], pa.list_(pa.string())),
            "geometry": pa.array([bytes(to_wkb(g)) for g in geoms], pa.binary()),
        }
    )
    types = sorted({g.geom_type for g in geoms})
    bbox = list(np.asarray([g.bounds for g in geoms]).reshape(-1, 4).T.tolist()) if geoms else []
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": types,
                "crs": polys.crs.to_json_dict(),
                **({"bbox": [min(bbox[0]), min(bbox[1]), max(bbox[2]), max(bbox[3])]} if geoms else {}),
            }
        },
    }
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    meta[b"changedet"] = json.dumps({k: v for k, v in polys.properties.items()}, default=str).encode()
    table = table.replace_schema_metadata(meta)
    return _atomic_write(Path(path), lambda t: pq.write_table(table, t), option)
