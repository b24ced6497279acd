"""Evidence pack of an alert: what an analyst needs to trust it and to reproduce it.

One folder per alert, ``<data-dir>/evidence/<alert_id>/``, written by the pipeline
when the alert opens and rewritten when it escalates::

    manifest.json               what, where, when, from which scenes (ids and
                                SHA-256 of the pixels), registration, cloud
                                fraction, configuration and code version, and the
                                files below with their SHA-256
    before.tif, after.tif       chips around the site (GeoTIFF, image CRS)
    change_magnitude.tif        change magnitude (RMS of band z-scores)
    detections.geojson          detected objects (EPSG:4326)
    change_polygons.geojson     changed areas above the threshold (EPSG:4326)
    series.csv                  the metric series the rule saw
    before.png, after.png       the chips as pictures
    overlay.png                 after chip with the detections drawn
    heatmap.png                 change magnitude with the threshold
    series.png                  the metric with its baseline band and alerts

The pictures are made by :mod:`changedet.figures`; the data files alone are enough
to check the alert and, with the scene ids, configuration and code version, to
re-run it (``changedet run --aoi AOI --date DATE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj
import shapely
import shapely.geometry
import shapely.ops
import xarray as xr

from changedet.errors import StoreError
from changedet.metrics import iso_utc

__all__ = ["MANIFEST", "IMAGE_ROLES", "build_evidence", "change_polygons", "data_sha256", "load_manifest",
           "evidence_images"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Pictures of a pack, in the order messages show them.
IMAGE_ROLES = ("overlay", "before", "after", "heatmap", "series")
#: Longest side (pixels) of the GeoTIFF chips: a picture of the site, not a copy of
#: the scene (the scene ids and hashes say which scenes to fetch for full detail).
CHIP_MAX_PX = 1024


def data_sha256(da: xr.DataArray | np.ndarray) -> str:
    """SHA-256 of an array's values (float32, C order) and shape: a fingerprint of pixels."""
    values = np.ascontiguousarray(np.asarray(da.values if isinstance(da, xr.DataArray) else da, dtype="float32"))
    h = hashlib.sha256(repr(values.shape).encode())
    h.update(values.tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _crop(da: xr.DataArray, bbox: Sequence[float] | None) -> xr.DataArray:
    if bbox is None:
        return da
    minx, miny, maxx, maxy = bbox
    ys = da["y"].values
    ysl = slice(maxy, miny) if ys.size > 1 and ys[0] > ys[-1] else slice(miny, maxy)
    out = da.sel(x=slice(minx, maxx), y=ysl)
    return out if out.sizes["x"] and out.sizes["y"] else da


def _decimate(da: xr.DataArray, max_px: int) -> xr.DataArray:
    factor = int(math.ceil(max(da.sizes["y"], da.sizes["x"]) / max_px))
    if factor <= 1:
        return da
    out = da.coarsen(y=factor, x=factor, boundary="trim").mean()
    if "spatial_ref" in da.coords:
        out = out.assign_coords(spatial_ref=da["spatial_ref"])
    return out


def _to_wgs84(geom, crs) -> Any:
    if crs is None:
        return geom
    src = pyproj.CRS.from_user_input(crs)
    if src.equals(pyproj.CRS.from_epsg(4326)):
        return geom
    t = pyproj.Transformer.from_crs(src, 4326, always_xy=True)
    return shapely.ops.transform(t.transform, geom)


def change_polygons(mask: xr.DataArray, *, magnitude: xr.DataArray | None = None, crs=None) -> list[dict]:
    """Polygons of the changed pixels as GeoJSON features in EPSG:4326.

    Parameters
    ----------
    mask : xarray.DataArray
        Boolean (y, x) change mask on a regular grid (pixel-centre coordinates).
    magnitude : xarray.DataArray, optional
        Change magnitude on the same grid; adds ``max_magnitude`` per polygon.
    crs : optional
        CRS of the grid (default: the ``spatial_ref`` coordinate).

    Returns
    -------
    list of dict
        GeoJSON features with ``area_m2`` (ground square metres) and
        ``max_magnitude``.
    """
    try:  # the pixel-change module's polygons, when that module exists
        from changedet.polygons import mask_polygons  # type: ignore[attr-defined]
    except ImportError:
        mask_polygons = None
    from rasterio import features as rfeatures

    from changedet.grid import GridSpec

    grid = GridSpec.of(mask)
    crs = crs if crs is not None else grid.crs
    m = np.asarray(mask.values, dtype=bool)
    if mask_polygons is not None:
        geoms = list(mask_polygons(mask))
    else:
        geoms = [shapely.geometry.shape(g) for g, v in
                 rfeatures.shapes(m.astype("uint8"), mask=m, transform=grid.transform) if v == 1]
    import pyproj

    from changedet.polygons import _area_m2, ground_area_factors

    pcrs = pyproj.CRS.from_user_input(crs)
    # Ground m^2, as the change JSON and the pipeline's metric count them (a Web Mercator
    # grid's map m^2 overstate it by 1/cos^2(lat)).
    factors = ground_area_factors(grid) if pcrs.is_projected else None
    out = []
    mag = None if magnitude is None else np.asarray(magnitude.values, dtype="float64")
    for geom in geoms:
        props: dict[str, Any] = {"area_m2": round(_area_m2(geom, pcrs, grid, factors), 1)}
        if mag is not None:
            inside = rfeatures.geometry_mask([geom], out_shape=m.shape, transform=grid.transform, invert=True)
            vals = mag[inside & np.isfinite(mag)]
            if vals.size:
                props["max_magnitude"] = round(float(vals.max()), 2)
        out.append({"type": "Feature", "geometry": shapely.geometry.mapping(_to_wgs84(geom, crs)), "properties": props})
    out.sort(key=lambda f: -f["properties"]["area_m2"])
    return out


def _detections_fc(detections: Sequence[Mapping[str, Any]], crs) -> dict:
    feats = []
    for d in detections:
        geom = shapely.geometry.shape(d["polygon"]) if isinstance(d["polygon"], Mapping) else d["polygon"]
        props = {k: v for k, v in d.items() if k != "polygon"}
        feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(_to_wgs84(geom, crs)),
                      "properties": json.loads(json.dumps(props, default=str))})
    return {"type": "FeatureCollection", "features": feats}


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str, allow_nan=False) + "\n", encoding="utf-8")


def _clean_json(doc: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, so the manifest is strict JSON."""
    if isinstance(doc, Mapping):
        return {str(k): _clean_json(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_clean_json(v) for v in doc]
    if isinstance(doc, (np.floating, float)):
        v = float(doc)
        return v if math.isfinite(v) else None
    if isinstance(doc, np.integer):
        return int(doc)
    if isinstance(doc, (np.bool_,)):
        return bool(doc)
    if isinstance(doc, (datetime, pd.Timestamp, np.datetime64)):
        return iso_utc(doc)
    return doc


def build_evidence(
    root: str | Path,
    alert_id: str,
    *,
    alert: Mapping[str, Any],
    event: str,
    sensor: str,
    when: datetime,
    after: xr.DataArray,
    before: xr.DataArray | None = None,
    before_time: datetime | None = None,
    magnitude: xr.DataArray | None = None,
    threshold: float | None = None,
    change_mask: xr.DataArray | None = None,
    detections: Sequence[Mapping[str, Any]] = (),
    series: pd.Series | None = None,
    baseline: pd.DataFrame | None = None,
    bbox: Sequence[float] | None = None,
    registration: Mapping[str, Any] | None = None,
    cloud_fraction: float | None = None,
    scenes: Sequence[Mapping[str, Any]] = (),
    source: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_hash: str | None = None,
    code_version: str | None = None,
    rgb: Sequence[str] | None = None,
    day: date | None = None,
) -> Path:
    """Write (or rewrite) the evidence pack of one alert; return its manifest path.

    Parameters
    ----------
    root : path
        Folder of all packs (``<data-dir>/evidence``); the pack is ``root/alert_id``.
    alert_id : str
        Outbox alert id (file-name safe).
    alert : mapping
        The alert as JSON (:meth:`changedet.alerts.Alert.to_dict`).
    event : str
        ``opened`` or ``escalated``.
    sensor : str
        Sensor name for captions and attribution.
    when : datetime
        Acquisition time of ``after``.
    after, before : xarray.DataArray
        Co-registered images (band, y, x) in the AOI grid (reflectance); ``before``
        is the previous acquisition (optional).
    magnitude, change_mask : xarray.DataArray, optional
        Change magnitude (y, x) and the thresholded mask on the change grid.
    threshold : float, optional
        Threshold that made the mask (shown on the heatmap).
    detections : sequence of mapping
        Objects with ``type`` and ``polygon`` (GeoJSON or shapely, image CRS) and any
        other properties (score, feature_id).
    series, baseline : optional
        Metric series seen by the rule, and a (lo, mid, hi) baseline band on its index.
    bbox : (minx, miny, maxx, maxy), optional
        Chip extent in the image CRS (default: the whole image).
    registration, cloud_fraction, scenes, config, config_hash, code_version
        Provenance copied into the manifest. ``scenes``: one mapping per scene used
        (``id``, ``role``, ``time``, ``sha256``).
    rgb : sequence of str, optional
        Band names for red, green, blue in pictures.
    source : str, optional
        Name of the imagery source (e.g. ``"simulator"``), for the pictures' attribution.
    day : date, optional
        The day whose run processed ``after`` (the AOI's local day, see
        :func:`changedet.pipeline.scene_day`): the ``--date`` of the manifest's
        ``reproduce`` command, which finds the scene only on that day. Default: the UTC
        date of ``when`` (the day of a pack built outside a run).

    Returns
    -------
    pathlib.Path
        The manifest.

    Raises
    ------
    StoreError
        If the pack cannot be written. A picture that fails is logged and left out
        (the data files and manifest are what the evidence stands on).
    """
    root = Path(root)
    final = root / alert_id
    run_day = day if day is not None else pd.Timestamp(when).date()
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Not mkdtemp: its 0700 mode stays on the pack after the rename, and a web server
        # publishing the data directory (CHANGEDET_PUBLIC_BASE_URL, whose picture links Slack
        # messages carry) or the analysts' group could not open it. 0777 less the umask.
        work = root / f".{alert_id[:40]}-{uuid.uuid4().hex[:12]}"
        work.mkdir(mode=0o777)
    except OSError as exc:
        raise StoreError(f"cannot create evidence folder under {root}: {exc}") from None
    try:
        from changedet.io import write_geotiff
        from changedet.grid import GridSpec

        crs = GridSpec.of(after).crs
        files: dict[str, str] = {}
        after_c = _decimate(_crop(after, bbox), CHIP_MAX_PX)
        write_geotiff(after_c, work / "after.tif")
        files["after.tif"] = "after_chip"
        before_c = None
        if before is not None:
            before_c = _decimate(_crop(before, bbox), CHIP_MAX_PX)
            write_geotiff(before_c, work / "before.tif")
            files["before.tif"] = "before_chip"
        polygons: list[dict] = []
        if magnitude is not None:
            write_geotiff(magnitude.expand_dims(band=["change_magnitude"]) if "band" not in magnitude.dims else magnitude,
                          work / "change_magnitude.tif")
            files["change_magnitude.tif"] = "change_magnitude"
        if change_mask is not None:
            polygons = change_polygons(change_mask, magnitude=magnitude)
            _write_json(work / "change_polygons.geojson", {"type": "FeatureCollection", "features": polygons})
            files["change_polygons.geojson"] = "change_polygons"
        _write_json(work / "detections.geojson", _detections_fc(detections, crs))
        files["detections.geojson"] = "detections"
        if series is not None:
            series.rename("value").to_csv(work / "series.csv", index_label="time")
            files["series.csv"] = "series"

        images, image_errors = _pictures(
            work, alert=alert, sensor=sensor, when=when, after=after_c, before=before_c, before_time=before_time,
            magnitude=magnitude, threshold=threshold, detections=detections, series=series, baseline=baseline,
            rgb=rgb, source=source,
        )
        for role, name in images.items():
            files[name] = role

        manifest = _clean_json({
            "format": "changedet-evidence/1",
            "alert_id": alert_id,
            "event": event,
            "created_at": datetime.now(timezone.utc),
            "alert": dict(alert),
            "aoi_id": alert.get("aoi_id"),
            "aoi_name": alert.get("aoi_name"),
            "sensor": sensor,
            "acquired": when,
            "before_acquired": before_time,
            "scenes": [dict(s) for s in scenes],
            "registration": dict(registration or {}),
            "cloud_fraction": cloud_fraction,
            "change": {"threshold": threshold, "polygons": len(polygons),
                       "changed_area_m2": round(sum(f["properties"]["area_m2"] for f in polygons), 1)},
            "detections": len(detections),
            "config": dict(config or {}),
            "config_hash": config_hash,
            "code_version": code_version,
            "day": run_day.isoformat(),
            "reproduce": f"changedet run --aoi {alert.get('aoi_id')} --date {run_day.isoformat()}",
            "images": images,
            "image_errors": image_errors,
            "files": {name: {"role": role, "sha256": _file_sha256(work / name), "bytes": (work / name).stat().st_size}
                      for name, role in sorted(files.items())},
        })
        _write_json(work / MANIFEST, manifest)
        # Swap the finished pack in: readers see the old pack or the new one, never half.
        old = None
        if final.exists():
            old = root / f".old-{alert_id[:40]}-{work.name}"
            final.rename(old)
        work.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, (OSError, ValueError)):
            raise StoreError(f"cannot write evidence pack {final}: {exc}") from None
        raise
    return final / MANIFEST


def _pictures(work: Path, *, alert, sensor, when, after, before, before_time, magnitude, threshold, detections,
              series, baseline, rgb, source=None) -> tuple[dict[str, str], dict[str, str]]:
    """Render the pictures with changedet.figures; {role: file} and {role: error}."""
    try:
        from changedet import figures
    except ImportError as exc:
        return {}, {"all": f"changedet.figures is not available: {exc}"}
    images: dict[str, str] = {}
    errors: dict[str, str] = {}
    year = pd.Timestamp(when).year
    where = alert.get("aoi_name") or alert.get("aoi_id") or ""
    dets = [{"type": d.get("type", "object"), "polygon": d["polygon"] if isinstance(d["polygon"], Mapping)
             else shapely.geometry.mapping(d["polygon"])} for d in detections]

    def attempt(role: str, name: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, work / name, **kwargs)
            images[role] = name
        except Exception as exc:  # noqa: BLE001 - a picture must not cost the evidence
            errors[role] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("evidence picture %s of %s failed: %s", role, alert.get("id"), errors[role])

    try:
        attribution = figures.attribution_for(sensor, year, source=source)
    except Exception:  # noqa: BLE001
        attribution = ""
    common = dict(sensor=sensor, attribution=attribution)
    if rgb is not None:
        common["rgb"] = tuple(rgb)
    try:
        # One stretch for before and after, so that a brightness change is a real one.
        common["value_range"] = figures.stretch_range(figures.select_rgb(after, common.get("rgb")))
    except Exception:  # noqa: BLE001 - fall back to each picture's own stretch
        pass
    attempt("overlay", "overlay.png", figures.scene_png, after, title=f"{where}: detections", when=when,
            detections=dets, **common)
    attempt("after", "after.png", figures.scene_png, after, title=f"{where}: after", when=when, **common)
    if before is not None:
        attempt("before", "before.png", figures.scene_png, before, title=f"{where}: before", when=before_time or when,
                **common)
    if magnitude is not None:
        hm = magnitude.squeeze("band", drop=True) if "band" in magnitude.dims else magnitude
        attempt("heatmap", "heatmap.png", figures.heatmap_png, hm, title=f"{where}: change magnitude", when=when,
                sensor=sensor, attribution=attribution, threshold=threshold)
    if series is not None and len(series):
        alerts = [pd.Timestamp(when)]
        attempt("series", "series.png", figures.series_png, series,
                title=f"{where}: {alert.get('metric', series.name)}", units=str(alert.get("metric") or ""),
                baseline=baseline, alerts=alerts)
    return images, errors


def load_manifest(pack: str | Path) -> dict | None:
    """The manifest of an evidence pack folder, or None if there is none (or it is unreadable)."""
    path = Path(pack) / MANIFEST
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def evidence_images(pack: str | Path) -> dict[str, Path]:
    """{role: path} of the pictures of a pack that exist, in :data:`IMAGE_ROLES` order."""
    manifest = load_manifest(pack)
    if not manifest:
        return {}
    images = manifest.get("images") or {}
    out = {}
    for role in IMAGE_ROLES:
        name = images.get(role)
        if isinstance(name, str) and "/" not in name and (Path(pack) / name).is_file():
            out[role] = Path(pack) / name
    return out
