"""Small fixes of 2026-12-03 (afternoon) not tied to one module's own test file."""

from __future__ import annotations

import json

import numpy as np
from shapely.geometry import LineString

from changedet.cli import main
from changedet.grid import GridSpec
from changedet.io import write_geotiff

GRID = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 500200.0, 4000200.0), 10.0)


def _tracks(tmp_path):
    x0, y1 = GRID.bounds[0], GRID.bounds[3]
    feats = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32652"}},
             "features": [{"type": "Feature", "properties": {"id": "T1", "role": "track"},
                           "geometry": {"type": "LineString",
                                        "coordinates": list(LineString([(x0 + 5, y1 - 95), (x0 + 195, y1 - 95)]).coords)}}]}
    path = tmp_path / "tracks.geojson"
    path.write_text(json.dumps(feats))
    return path


def test_reflectance_scale_with_a_radar_image_is_refused_not_ignored(tmp_path, capsys):
    rng = np.random.default_rng(0)
    sar = GRID.attach(rng.gamma(4.0, 0.02, (2, 20, 20)).astype("float32"), bands=["VV", "VH"])
    image = write_geotiff(sar, tmp_path / "s1.tif")
    feats = _tracks(tmp_path)
    rc = main(["count", "railcars", str(image), "--features", str(feats), "--json", "--reflectance-scale", "0.0001"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "--reflectance-scale" in err and "radar backscatter (VV, VH)" in err and "drop --reflectance-scale" in err
    # Without the flag the same image counts.
    assert main(["count", "railcars", str(image), "--features", str(feats), "--json"]) == 0


def test_reflectance_offset_with_a_detector_is_refused_not_ignored(tmp_path, capsys):
    rgb = GRID.attach(np.full((3, 20, 20), 0.1, "float32"), bands=["R", "G", "B"])
    image = write_geotiff(rgb, tmp_path / "rgb.tif")
    rc = main(["count", "railcars", str(image), "--features", str(_tracks(tmp_path)), "--json",
               "--detector", "no_such_module:make", "--reflectance-offset", "-0.1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    # Refused before the detector is even loaded, naming the flag and why.
    assert "--reflectance-offset applies only to optical images" in err and "--detector model" in err
