"""Change polygons: known shapes, areas, AOI features, dask == numpy, GeoJSON / GeoParquet."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pyproj
import pytest
from shapely.geometry import LineString, Point, shape

from changedet.grid import GridSpec
from changedet.polygons import PolygonError, change_polygons, write_geojson, write_geoparquet

RES = 10.0
GRID = GridSpec.from_bounds("EPSG:32633", (500000.0, 4000000.0, 500400.0, 4000300.0), RES)  # 30 x 40


def _mask():
    m = np.zeros(GRID.shape, bool)
    m[2:6, 3:8] = True  # 20 px block
    m[10:25, 30:32] = True  # 30 px vertical bar
    m[20, 5] = True  # single pixel
    return m


def _mag():
    mag = np.ones(GRID.shape, "float32")
    mag[2:6, 3:8] = 5.0
    mag[10:25, 30:32] = np.arange(15, dtype="float32")[:, None] + 10  # mean 17, max 24
    mag[20, 5] = 2.0
    return mag


def test_polygons_known():
    polys = change_polygons(GRID.attach(_mask()), GRID.attach(_mag()), properties={"method": "cva"})
    assert len(polys) == 3
    a, b, c = polys.polygons
    assert (a.id, a.n_pixels, a.area_m2) == (1, 20, 2000.0)
    assert a.mean_magnitude == 5.0 and a.max_magnitude == 5.0
    assert (b.n_pixels, b.area_m2, b.mean_magnitude, b.max_magnitude) == (30, 3000.0, 17.0, 24.0)
    assert (c.n_pixels, c.area_m2) == (1, 100.0)
    # Geometry bounds are the pixel edges of the block (rows 2..5, cols 3..7).
    x0, y1 = GRID.transform.c, GRID.transform.f
    assert a.geometry.bounds == (x0 + 30, y1 - 60, x0 + 80, y1 - 20)
    assert polys.total_area_m2 == 5100.0


@pytest.mark.parametrize("chunks", [(8, 11), (7, 40), (30, 40)])
def test_polygons_dask_equal_numpy(chunks):
    m = GRID.attach(_mask())
    ref = change_polygons(m, GRID.attach(_mag()))
    lazy = change_polygons(m.chunk({"y": chunks[0], "x": chunks[1]}), GRID.attach(_mag()).chunk({"y": 5, "x": 5}))
    assert len(lazy) == len(ref)
    for p, q in zip(ref.polygons, lazy.polygons):
        assert (p.id, p.n_pixels, p.area_m2, p.mean_magnitude, p.max_magnitude) == (
            q.id, q.n_pixels, q.area_m2, q.mean_magnitude, q.max_magnitude)
        # Pieces from different chunks dissolve to one polygon with the same outline.
        assert q.geometry.geom_type == "Polygon"
        assert p.geometry.symmetric_difference(q.geometry).area == 0


def test_polygons_touch_aoi_features():
    to_ll = pyproj.Transformer.from_crs(GRID.crs, "EPSG:4326", always_xy=True)
    x0, y1 = GRID.transform.c, GRID.transform.f
    inside_block = Point(*to_ll.transform(x0 + 50, y1 - 40))
    track = LineString([to_ll.transform(x0 + 305, y1 - 5), to_ll.transform(x0 + 305, y1 - 295)])
    far = Point(*to_ll.transform(x0 + 395, y1 - 5))
    polys = change_polygons(GRID.attach(_mask()), features={"berth1": inside_block.buffer(1e-6), "T1": track,
                                                            "far": far})
    assert polys.polygons[0].features == ("berth1",)
    assert polys.polygons[1].features == ("T1",)
    assert polys.polygons[2].features == ()
    assert np.isnan(polys.polygons[0].mean_magnitude)  # no magnitude given


def test_geographic_area_is_geodesic():
    g = GridSpec.from_bounds("EPSG:4326", (2.0, 48.0, 2.01, 48.01), 0.001)
    m = np.zeros(g.shape, bool)
    m[0:2, 0:3] = True
    (p,) = change_polygons(g.attach(m)).polygons
    # 0.001 deg ~ 111.2 m north, 74.4 m east at 48 N: 6 pixels ~ 6 * 8275 m^2.
    assert p.area_m2 == pytest.approx(6 * 111.2 * 74.4, rel=0.01)


def test_writers_roundtrip(tmp_path):
    import pyarrow.parquet as pq
    from shapely import from_wkb

    polys = change_polygons(GRID.attach(_mask()), GRID.attach(_mag()), properties={"method": "cva", "threshold": 1.5})
    gj = write_geojson(polys, tmp_path / "out" / "change.geojson")
    doc = json.loads(gj.read_text())
    assert doc["type"] == "FeatureCollection" and doc["properties"]["method"] == "cva"
    assert [f["properties"]["n_pixels"] for f in doc["features"]] == [20, 30, 1]
    lon, lat = shape(doc["features"][0]["geometry"]).centroid.coords[0]
    assert 14 < lon < 16 and 35 < lat < 37  # UTM 33N around 500 km E, 4000 km N -> lon 15, lat ~36
    pq_path = write_geoparquet(polys, tmp_path / "change.parquet")
    t = pq.read_table(pq_path)
    geo = json.loads(t.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert pyproj.CRS.from_json_dict(geo["columns"]["geometry"]["crs"]) == GRID.crs
    g0 = from_wkb(t.column("geometry")[0].as_py())
    assert g0.equals(polys.polygons[0].geometry)
    assert t.column("area_m2").to_pylist() == [2000.0, 3000.0, 100.0]
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_labels():
    with pytest.raises(PolygonError, match="DataArray"):
        change_polygons(np.zeros((3, 3), bool))
    with pytest.raises(PolygonError, match="dtype"):
        change_polygons(GRID.attach(np.zeros(GRID.shape, "float32")))


def test_dask_mask_from_lazy_pipeline():
    m = GRID.attach(_mask()).chunk({"y": 8, "x": 8})
    assert isinstance(m.data, da.Array)
    assert [p.n_pixels for p in change_polygons(m).polygons] == [20, 30, 1]
