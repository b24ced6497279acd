"""Write a simulated scene beside its ground truth (QGIS-ready)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import shapely
import shapely.ops

from changedet.io import write_geotiff
from changedet.simulate.render import MASK_BAND, SimScene


def acquisition_tags(scene: SimScene) -> dict[str, str]:
    """GeoTIFF metadata items that say when the scene was taken and where the sun stood.

    ``TIFFTAG_DATETIME`` is the UTC time (TIFF form ``YYYY:MM:DD HH:MM:SS``) at which the
    simulated morning overpass happens over the scene centre, so a reader that derives the
    sun from the time (``changedet count``) finds the renderer's sun; ``SUN_AZIMUTH`` and
    ``SUN_ELEVATION`` (degrees) state it outright, as VHR product metadata does.
    """
    from datetime import date

    from changedet.sun import solar_time_utc

    day = date.fromisoformat(str(scene.truth["date"]))
    t = scene.grid.transform
    rows, cols = scene.grid.shape
    to_ll = pyproj.Transformer.from_crs(scene.grid.crs, 4326, always_xy=True)
    lon, _ = to_ll.transform(t.c + t.a * cols / 2, t.f + t.e * rows / 2)
    when = solar_time_utc(day, lon)
    sun = scene.truth.get("sun") or {}
    tags = {"TIFFTAG_DATETIME": when.strftime("%Y:%m:%d %H:%M:%S")}
    if "azimuth_deg" in sun and "elevation_deg" in sun:
        tags["SUN_AZIMUTH"] = f"{float(sun['azimuth_deg']):.3f}"
        tags["SUN_ELEVATION"] = f"{float(sun['elevation_deg']):.3f}"
    return tags


def write_scene(scene: SimScene, out_dir: str | Path, *, stem: str) -> dict[str, Path]:
    """Write ``<stem>.tif`` (bands + cloud mask), ``<stem>.truth.json`` (map CRS) and
    ``<stem>.truth.geojson`` (EPSG:4326)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, bands = scene.data, list(scene.bands)
    if scene.cloud_mask is not None:
        data = np.concatenate([data, scene.cloud_mask[None].astype("float32")])
        bands.append(MASK_BAND)
    da = scene.grid.attach(data, bands=bands)
    da.attrs.update(acquisition_tags(scene))
    image = write_geotiff(da, out / f"{stem}.tif")
    truth_path = out / f"{stem}.truth.json"
    truth_path.write_text(json.dumps(scene.truth, indent=1))
    to_ll = pyproj.Transformer.from_crs(scene.grid.crs, 4326, always_xy=True)
    feats = []
    for o in scene.truth["objects"]:
        geom = shapely.ops.transform(to_ll.transform, shapely.geometry.shape(o["polygon"]))
        props = {k: v for k, v in o.items() if k != "polygon"}
        feats.append({"type": "Feature", "geometry": shapely.geometry.mapping(geom), "properties": props})
    gj = out / f"{stem}.truth.geojson"
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return {"image": image, "truth": truth_path, "truth_geojson": gj}
