"""Evidence packs: files, hashes, polygons and pictures, on a small synthetic scene with known answers."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import shapely.geometry
import xarray as xr

from changedet.evidence import (
    IMAGE_ROLES,
    build_evidence,
    change_polygons,
    data_sha256,
    evidence_images,
    load_manifest,
)
from changedet.grid import GridSpec

CRS = "EPSG:32652"  # UTM 52N, where the Tumen river sites are
T1 = datetime(2023, 10, 5, 2, 30, tzinfo=timezone.utc)
T0 = datetime(2023, 9, 28, 2, 30, tzinfo=timezone.utc)


def scene(values: np.ndarray, res: float = 2.0) -> xr.DataArray:
    rows, cols = values.shape[-2:]
    grid = GridSpec.from_bounds(CRS, (700000.0, 4700000.0, 700000.0 + cols * res, 4700000.0 + rows * res), res)
    return grid.attach(values.astype("float32"), bands=["B", "G", "R", "NIR"] if values.ndim == 3 else None)


def synthetic():
    """Before/after 60x80 px at 2 m; a 10x20 px bright block appears (400 m² x 2 = 800 m²)."""
    rng = np.random.default_rng(0)
    before = 0.1 + 0.01 * rng.standard_normal((4, 60, 80))
    after = before.copy()
    after[:, 20:30, 30:50] += 0.3
    b, a = scene(before), scene(after)
    mag = np.zeros((60, 80), dtype="float32")
    mag[20:30, 30:50] = 12.0
    magnitude = scene(mag)
    mask = magnitude > 6
    return b, a, magnitude, mask


def test_change_polygons_area_and_place():
    _, a, magnitude, mask = synthetic()
    feats = change_polygons(mask, magnitude=magnitude)
    assert len(feats) == 1
    assert feats[0]["properties"]["area_m2"] == pytest.approx(10 * 20 * 4.0)
    assert feats[0]["properties"]["max_magnitude"] == pytest.approx(12.0)
    lon, lat = shapely.geometry.shape(feats[0]["geometry"]).centroid.coords[0]
    # UTM 52N: easting 700 km is east of the central meridian (129 E); northing 4700 km is near 42.4 N.
    assert 129.0 < lon < 132.5 and 42 < lat < 43


def test_pack_is_complete_and_reproducible(tmp_path):
    b, a, magnitude, mask = synthetic()
    grid = GridSpec.of(a)
    x0, _, _, y1 = grid.bounds
    block = shapely.geometry.box(x0 + 30 * 2.0, y1 - 30 * 2.0, x0 + 50 * 2.0, y1 - 20 * 2.0)
    detections = [{"type": "boxcar", "polygon": shapely.geometry.mapping(block), "score": 0.9, "feature_id": "T1"}]
    series = pd.Series([14.0, 15, 13, 16, 72], index=pd.date_range("2023-09-01", periods=5, freq="7D", tz="UTC"),
                       name="railcars")
    band = pd.DataFrame({"lo": 10.0, "mid": 14.0, "hi": 18.0}, index=series.index)
    alert = {"id": "tum--surge--2023-10-05", "aoi_id": "tumangang_railyard", "aoi_name": "Tumangang railyard",
             "metric": "railcars", "value": 72.0, "message": "72 railcars at Tumangang railyard"}
    scenes = [{"role": "after", "id": "S-after", "time": T1, "sha256": data_sha256(a)},
              {"role": "before", "id": "S-before", "time": T0, "sha256": data_sha256(b)}]
    path = build_evidence(
        tmp_path / "evidence", alert["id"], alert=alert, event="opened", sensor="vhr", when=T1, after=a, before=b,
        before_time=T0, magnitude=magnitude, threshold=6.0, change_mask=mask, detections=detections, series=series,
        baseline=band, registration={"shift_row_px": 0.4, "residual_rmse_px": 0.12, "applied": True},
        cloud_fraction=0.03, scenes=scenes, config={"change_z": 6.0}, config_hash="abc123", code_version="0.1.0",
        rgb=("R", "G", "B"),
    )
    pack = path.parent
    assert pack == tmp_path / "evidence" / alert["id"]
    m = load_manifest(pack)
    assert m["alert_id"] == alert["id"] and m["event"] == "opened"
    assert m["registration"]["residual_rmse_px"] == 0.12 and m["cloud_fraction"] == 0.03
    assert m["config_hash"] == "abc123" and m["code_version"] == "0.1.0" and m["config"] == {"change_z": 6.0}
    assert [s["id"] for s in m["scenes"]] == ["S-after", "S-before"]
    assert m["scenes"][0]["time"] == "2023-10-05T02:30:00.000000Z"
    assert m["change"]["changed_area_m2"] == pytest.approx(800.0) and m["detections"] == 1
    assert m["reproduce"] == "changedet run --aoi tumangang_railyard --date 2023-10-05"
    assert m["image_errors"] == {}, m["image_errors"]
    assert set(m["images"]) == set(IMAGE_ROLES)
    # Every listed file exists with the recorded hash; the hashes change with the pixels.
    import hashlib

    for name, info in m["files"].items():
        assert hashlib.sha256((pack / name).read_bytes()).hexdigest() == info["sha256"], name
    assert data_sha256(a) != data_sha256(b)
    # The chips are the images, cropped nowhere (no bbox) and readable as rasters.
    from changedet.io import read_raster

    chip = read_raster(pack / "after.tif")
    np.testing.assert_allclose(chip.values, a.values, atol=1e-6)
    assert GridSpec.of(chip).same_as(grid)
    dets = json.loads((pack / "detections.geojson").read_text())["features"]
    assert dets[0]["properties"] == {"type": "boxcar", "score": 0.9, "feature_id": "T1"}
    assert pd.read_csv(pack / "series.csv")["value"].tolist() == series.tolist()
    pictures = evidence_images(pack)
    assert list(pictures) == list(IMAGE_ROLES)
    for p in pictures.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Escalation rewrites the pack in place, atomically: nothing of the old one is left over.
    (pack / "stale.txt").write_text("x")
    build_evidence(tmp_path / "evidence", alert["id"], alert=alert, event="escalated", sensor="vhr", when=T1, after=a)
    m2 = load_manifest(pack)
    assert m2["event"] == "escalated" and not (pack / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "evidence").iterdir()) == [alert["id"]]


def test_bbox_crops_the_chips(tmp_path):
    b, a, *_ = synthetic()
    minx, miny, maxx, maxy = GridSpec.of(a).bounds
    bbox = (minx + 20, miny + 20, minx + 60, miny + 50)
    build_evidence(tmp_path, "x", alert={"aoi_id": "x"}, event="opened", sensor="vhr", when=T1, after=a, bbox=bbox)
    from changedet.io import read_raster

    chip = read_raster(tmp_path / "x" / "after.tif")
    assert chip.sizes["x"] == 20 and chip.sizes["y"] == 15


def test_missing_pack_has_no_images(tmp_path):
    assert load_manifest(tmp_path / "nope") is None
    assert evidence_images(tmp_path / "nope") == {}


def test_change_polygon_areas_are_ground_areas_in_web_mercator():
    # A 50 x 50 block of 10 m Web Mercator pixels near 42.3 N covers about cos^2(lat) of
    # its 250 000 map m^2 on the ground; in UTM the map area is the ground area.
    import numpy as np
    from affine import Affine

    from changedet.evidence import change_polygons
    from changedet.grid import GridSpec

    m = np.zeros((100, 100), bool)
    m[20:70, 20:70] = True
    merc = GridSpec(crs="EPSG:3857", transform=Affine(10, 0, 14540000.0, 0, -10, 5200000.0), shape=(100, 100))
    utm = GridSpec(crs="EPSG:32652", transform=Affine(10, 0, 500000.0, 0, -10, 4700000.0), shape=(100, 100))
    a_merc = change_polygons(merc.attach(m))[0]["properties"]["area_m2"]
    assert abs(a_merc - 136_860) < 0.01 * 136_860
    assert change_polygons(utm.attach(m))[0]["properties"]["area_m2"] == 250_000.0
