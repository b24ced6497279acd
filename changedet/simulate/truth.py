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


def write_scene(scene: SimScene, out_dir: str | Path, *, stem: str) -> dict[str, Path]:
    """Write ``<stem>.tif`` (bands + cloud mask), ``<stem>.truth.json`` (map CRS) and
    ``<stem>.truth.geojson`` (EPSG:4326)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, bands = scene.data, list(scene.bands)
    if scene.cloud_mask is not None:
        data = np.concatenate([data, scene.cloud_mask[None].astype("float32")])
        bands.append(MASK_BAND)
    image = write_geotiff(scene.grid.attach(data, bands=bands), out / f"{stem}.tif")
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
