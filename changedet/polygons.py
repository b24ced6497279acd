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
import os
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
        Geodesic area on the CRS ellipsoid for geographic grids, planar otherwise.
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


def _area_m2(geom: BaseGeometry, crs: pyproj.CRS) -> float:
    if crs.is_geographic:
        geod = crs.get_geod() or pyproj.Geod(ellps="WGS84")
        return float(abs(geod.geometry_area_perimeter(geom)[0]))
    to_m = crs.axis_info[0].unit_conversion_factor or 1.0
    return float(geom.area * to_m * to_m)


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
            area_m2=_area_m2(geom, grid.crs),
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


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise PolygonError(f"{path}: cannot be written ({exc.strerror or exc}); check the directory") from None
    return path


def write_geojson(polys: ChangePolygons, path: str | Path) -> Path:
    """Write the polygons as an RFC 7946 GeoJSON FeatureCollection (EPSG:4326 lon/lat).

    Properties per feature: ``id``, ``area_m2``, ``n_pixels``, ``mean_magnitude``,
    ``max_magnitude``, ``features`` (AOI feature ids touched); the collection's
    ``properties`` (method, threshold, ...) are written as a top-level member.
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
    return _atomic_write(Path(path), lambda t: t.write_text(json.dumps(doc)))


def write_geoparquet(polys: ChangePolygons, path: str | Path) -> Path:
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
    return _atomic_write(Path(path), lambda t: pq.write_table(table, t))
