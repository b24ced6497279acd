"""Audit of ``changedet count`` on real imagery (session 16, AUDIT5).

An analyst's first use of ``count ships`` on the sen2ships port scenes (Sentinel Hub EO
Browser delivers one GeoTIFF per band), and the errors of ``count`` on images too coarse
for a counter. Real data comes from the shared data folder (``test_data`` fixture), never
from the repository; derived files are written under ``tmp_path``.
"""

from __future__ import annotations

import json

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_origin

from changedet.cli import main

PORT = "sen2ships_s2_ports/casablanca"
DAY = "2023-04-26"
BANDS = ("B02", "B03", "B04", "B08", "B11")


def _band_file(folder, band):
    return folder / f"{DAY}-00_00_{DAY}-23_59_Sentinel-2_L2A_{band}_(Raw).tiff"


def _features(folder, path, rings):
    """A GeoJSON FeatureCollection in EPSG:4326 from rings in pixel (col, row) of the port's rasters."""
    with rasterio.open(_band_file(folder, "B02")) as src:
        t, crs = src.transform, src.crs.to_wkt()
    tr = pyproj.Transformer.from_crs(crs, 4326, always_xy=True)
    feats = []
    for fid, role, pts in rings:
        ring = [list(tr.transform(*(t * (c, r)))) for c, r in pts]
        feats.append({"type": "Feature", "properties": {"id": fid, "role": role},
                      "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


@pytest.fixture(scope="module")
def casablanca(test_data, tmp_path_factory):
    """The port's band folder, a 5-band stack with named bands built from it, and features
    drawn by hand on the true-colour picture: the outer roads as an anchorage, two berths."""
    folder = test_data(PORT)
    tmp = tmp_path_factory.mktemp("casa")
    stack = tmp / "stack.tif"
    arrays = []
    for b in BANDS:
        with rasterio.open(_band_file(folder, b)) as src:
            arrays.append(src.read(1))
            profile = src.profile
    profile.update(count=len(BANDS), driver="GTiff")
    with rasterio.open(stack, "w", **profile) as dst:
        dst.write(np.stack(arrays))
        for i, b in enumerate(BANDS, 1):
            dst.set_band_description(i, b)
    feats = _features(folder, tmp / "port.geojson", [
        ("water", "water", [(0, 0), (511, 0), (511, 200), (0, 200)]),
        ("inner_basin_w", "berth", [(100, 190), (200, 190), (200, 300), (100, 300)]),
        ("inner_basin_c", "berth", [(200, 170), (320, 150), (320, 290), (200, 290)]),
        ("outer_roads", "anchorage", [(0, 0), (511, 0), (511, 120), (0, 120)]),
    ])
    return {"folder": folder, "stack": stack, "features": feats, "tmp": tmp}


@pytest.fixture(scope="module")
def folder_and_stack(casablanca):
    """Both counts, run once for the module (a capsys-free capture of the CLI's stdout)."""
    import contextlib
    import io

    docs = {}
    for key in ("folder", "stack"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = main(["count", "ships", str(casablanca[key]), "--features", str(casablanca["features"]), "--json",
                       "--out", str(casablanca["tmp"] / f"{key}.geojson")])
        assert rc == 0
        docs[key] = json.loads(out.getvalue())
    return docs


def test_count_reads_a_folder_of_band_files_as_the_stack(folder_and_stack):
    """EO Browser's one-file-per-band download counts as is (it was refused as "not a
    raster"), and exactly as the stack an analyst would otherwise build with named bands."""
    by_folder, by_stack = folder_and_stack["folder"], folder_and_stack["stack"]
    assert by_folder["total"] > 0
    assert by_folder["total"] == by_stack["total"]
    assert by_folder["per_feature"] == by_stack["per_feature"]
    assert by_folder["detections"] == by_stack["detections"]


def test_anchorage_polygons_are_reported_per_feature(folder_and_stack, casablanca):
    """An anchorage drawn by the analyst was silently ignored: its vessels were in the
    total but in no per_feature entry. Now each anchorage has its entry, and its vessels'
    detections name it (in the JSON and in the --out GeoJSON)."""
    doc = folder_and_stack["stack"]
    entry = [pf for pf in doc["per_feature"] if pf["id"] == "outer_roads"]
    assert len(entry) == 1 and entry[0]["role"] == "anchorage"
    named = [d for d in doc["detections"] if d.get("feature_id") == "outer_roads"]
    assert entry[0]["count"] == len(named) >= 1
    assert sum(entry[0]["by_type"].values()) == entry[0]["count"]
    # Each vessel is counted in one feature at most: berths first, then anchorages.
    ids = [d.get("feature_id") for d in doc["detections"] if d.get("feature_id")]
    assert sum(pf["count"] for pf in doc["per_feature"]) == len(ids) <= doc["total"]
    out = json.loads((casablanca["tmp"] / "stack.geojson").read_text())
    assert sum(f["properties"].get("feature_id") == "outer_roads" for f in out["features"]) == len(named)


def test_anchorage_outside_the_image_is_refused(casablanca, capsys):
    feats = json.loads(casablanca["features"].read_text())
    for f in feats["features"]:
        if f["properties"]["role"] == "anchorage":
            f["geometry"]["coordinates"] = [[[x + 1.0, y] for x, y in r] for r in f["geometry"]["coordinates"]]
    path = casablanca["tmp"] / "far_anchorage.geojson"
    path.write_text(json.dumps(feats))
    rc = main(["count", "ships", str(casablanca["stack"]), "--features", str(path), "--json"])
    err = capsys.readouterr().err
    assert rc != 0 and "anchorage 'outer_roads' lies outside the image" in err


def test_empty_feature_collection_says_it_is_empty():
    from changedet.cli.count import FeatureError, _select

    with pytest.raises(FeatureError, match="has no features; draw at least one berth"):
        _select([], "ships", "port.geojson")


def _synthetic(path, *, res, dtype, name="scene.tif"):
    """A 4-band image (B, G, R, NIR) with no date or sun in its tags or name, UTM 52N."""
    rng = np.random.default_rng(0)
    n = 64
    data = rng.integers(20, 200, size=(4, n, n)).astype(dtype)
    if np.issubdtype(np.dtype(dtype), np.floating):
        data /= 1000.0  # surface reflectance 0.02-0.2
    with rasterio.open(path / name, "w", driver="GTiff", width=n, height=n, count=4, dtype=dtype,
                       crs="EPSG:32652", transform=from_origin(500000.0, 3890000.0, res, res)) as dst:
        dst.write(data)
        for i, b in enumerate(("B", "G", "R", "NIR"), 1):
            dst.set_band_description(i, b)
    tr = pyproj.Transformer.from_crs(32652, 4326, always_xy=True)
    ll = lambda c, r: list(tr.transform(500000.0 + c * res, 3890000.0 - r * res))  # noqa: E731
    feats = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "t1", "role": "track"},
         "geometry": {"type": "LineString", "coordinates": [ll(5, 30), ll(60, 30)]}},
        {"type": "Feature", "properties": {"id": "z1", "role": "stack_zone"},
         "geometry": {"type": "Polygon", "coordinates": [[ll(10, 10), ll(50, 10), ll(50, 50), ll(10, 50), ll(10, 10)]]}},
    ]}
    (path / "f.geojson").write_text(json.dumps(feats))
    return path / name, path / "f.geojson"


def test_containers_on_a_coarse_8bit_image_are_refused_for_resolution_first(tmp_path, capsys):
    """A 5 m 8-bit image (NAIP-like) was first refused for its radiometry, asking for
    --reflectance-scale, and only then for its resolution: the first error must be the one
    no flag can mend. No sun warning precedes it."""
    image, feats = _synthetic(tmp_path, res=5.0, dtype="uint8")
    rc = main(["count", "containers", str(image), "--features", str(feats), "--json"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "too coarse for containers" in err and "1.5 m or finer" in err
    assert "reflectance-scale" not in err and "sun unknown" not in err


def test_railcars_too_coarse_error_comes_without_a_sun_warning(tmp_path, capsys):
    """The resolution error names what is needed and what the medium-resolution estimate
    offers; the "sun unknown ... pass the flags" warning before it sent the analyst after
    the sun for an image that cannot be counted at all."""
    image, feats = _synthetic(tmp_path, res=30.0, dtype="float32")
    rc = main(["count", "railcars", str(image), "--features", str(feats), "--json"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "too coarse for railcars" in err and "1.5 m or finer" in err and "medium-resolution estimate" in err
    assert "sun unknown" not in err


def test_vessel_outline_covers_every_pixel_of_a_diagonal_hull():
    """A hull at 45 degrees to the grid is a staircase of pixels touching at corners: one
    8-connected region, several 4-connected pieces. The outline kept the largest piece."""
    from skimage.measure import label, regionprops

    from changedet.grid import GridSpec
    from changedet.objects.vessels import _outline

    m = np.zeros((20, 20), bool)
    for i in range(2, 14):
        m[i, i:i + 2] = True          # a 2 px wide hull ...
    m[14, 15] = True                  # ... whose bow touches it only at a corner
    rp = regionprops(label(m, connectivity=2))[0]
    grid = GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=from_origin(500000.0, 3890000.0, 10.0, 10.0),
                    shape=m.shape)
    poly = _outline(rp, grid)
    assert poly.is_valid and poly.area == pytest.approx(m.sum() * 100.0)
    x0, y0, x1, y1 = poly.bounds
    assert (x1 - x0, y1 - y0) == (140.0, 130.0)


def test_real_vessel_polygons_span_their_pixel_boxes(folder_and_stack, casablanca):
    """On the real port scene every detection's polygon spans the pixel box the detector
    reports for it (``bbox_px``): the GeoJSON an analyst opens outlines the whole vessel."""
    import shapely
    from shapely.geometry import shape

    with rasterio.open(casablanca["stack"]) as src:
        inv, crs = ~src.transform, src.crs.to_wkt()
    tr = pyproj.Transformer.from_crs(4326, crs, always_xy=True)
    dets = folder_and_stack["stack"]["detections"]
    assert dets
    for d in dets:
        px = shapely.transform(shape(d["polygon"]), lambda xy: np.array([inv * tr.transform(x, y) for x, y in xy]))
        c0, r0, w, h = d["bbox_px"]
        assert px.bounds == pytest.approx((c0, r0, c0 + w, r0 + h), abs=0.01)


NAIP = "naip_timeseries_nd/m_4709963_se_14_1_{}.tif"


def _reordered(src_path, dst_path, order, names=None):
    """A copy of ``src_path`` with its bands in ``order`` (1-based), described as ``names``."""
    with rasterio.open(src_path) as src:
        data = src.read(list(order))
        profile = src.profile
    profile.update(driver="GTiff")
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        profile.pop(key, None)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        for i, n in enumerate(names or (), 1):
            dst.set_band_description(i, n)
    return dst_path


@pytest.mark.parametrize("names", [None, ("R", "G", "B", "NIR")], ids=["unnamed", "misnamed"])
def test_change_refuses_a_date_whose_bands_are_in_the_wrong_order(test_data, tmp_path, capsys, names):
    """NAIP 2019 written NIR, B, G, R (unnamed, or described as R, G, B, NIR) was compared
    band by band with 2018 in R, G, B, NIR: 8.0 km2 of "change" against 0.59 km2, exit 0."""
    before = test_data(NAIP.format("20180716"))
    after = _reordered(test_data(NAIP.format("20190904")), tmp_path / "after.tif", (4, 3, 2, 1), names)
    rc = main(["change", str(before), str(after), "--method", "cva", "--out", str(tmp_path / "c.tif"), "--json"])
    err = capsys.readouterr().err
    assert rc != 0 and str(after) in err and "band order looks wrong" in err
    # The message says how the bands were paired: by position for an unnamed file.
    assert ("bands are unnamed" in err) == (names is None)


def test_change_pairs_named_bands_in_another_order_by_name(test_data, tmp_path, capsys):
    """Bands named in both files are paired by name whatever their order: no refusal, and
    the same change as the pair in the same order."""
    before = _reordered(test_data(NAIP.format("20180716")), tmp_path / "b.tif", (1, 2, 3, 4), ("R", "G", "B", "NIR"))
    after = _reordered(test_data(NAIP.format("20190904")), tmp_path / "a.tif", (4, 3, 2, 1), ("NIR", "B", "G", "R"))
    same = _reordered(test_data(NAIP.format("20190904")), tmp_path / "s.tif", (1, 2, 3, 4), ("R", "G", "B", "NIR"))
    docs = []
    for a in (after, same):
        rc = main(["change", str(before), str(a), "--method", "cva", "--out", str(tmp_path / "c.tif"), "--json"])
        assert rc == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert docs[0]["changed_pixels"] == docs[1]["changed_pixels"] > 0


def test_unnamed_band_stack_error_says_how_to_name_them(casablanca, tmp_path, capsys):
    """``rio stack`` / ``gdalbuildvrt -separate`` of the band files gives unnamed bands
    (b1..b5): the error said to name them but not how."""
    with rasterio.open(casablanca["stack"]) as src:
        data, profile = src.read(), src.profile
    with rasterio.open(tmp_path / "unnamed.tif", "w", **profile) as dst:
        dst.write(data)
    rc = main(["count", "ships", str(tmp_path / "unnamed.tif"), "--features", str(casablanca["features"]), "--json"])
    err = capsys.readouterr().err
    assert rc != 0 and "b1" in err and "--description B02" in err and "folder of single-band files" in err


def test_berths_outside_the_drawn_water_are_still_searched(folder_and_stack, casablanca, tmp_path):
    """The fixture's water polygon covers the outer roads only (rows 0-200), its berths lie
    in the inner basins: the berths were not searched (1 and 2 vessels against 2 and 6
    without any water polygon). A berth is water, searched with or without one."""
    import contextlib
    import io

    feats = json.loads(casablanca["features"].read_text())
    feats["features"] = [f for f in feats["features"] if f["properties"]["role"] != "water"]
    path = tmp_path / "no_water.geojson"
    path.write_text(json.dumps(feats))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["count", "ships", str(casablanca["stack"]), "--features", str(path), "--json"]) == 0
    without = {pf["id"]: pf["count"] for pf in json.loads(out.getvalue())["per_feature"]}
    drawn = {pf["id"]: pf["count"] for pf in folder_and_stack["stack"]["per_feature"]}
    assert without["inner_basin_c"] > 0
    for berth in ("inner_basin_w", "inner_basin_c"):
        assert drawn[berth] == without[berth]


# -- review AUD (AUD2): anchorages at VHR, anchorage geometry, paired band order, folders --
def _vhr_harbour(tmp_path, anchorage):
    """The s11 synthetic 1 m harbour with a second hull at anchor, and features: berth B1,
    water W and ``anchorage`` = (id, shapely geometry) (None: no anchorage), in UTM 52N."""
    from shapely.geometry import box, mapping

    from tests.test_audit_s11 import HARBOUR, _harbour, _write

    img = _harbour("all")
    img[:, 200:214, 40:140] = np.array([0.25, 0.25, 0.25, 0.30])[:, None, None]  # a hull at anchor
    _write(tmp_path / "h.tif", img, names=["B", "G", "R", "NIR"], grid=HARBOUR, dtype="float32")
    feats = [("B1", box(500140.0, 4700150.0, 500290.0, 4700220.0), "berth"),
             ("W", box(500000.0, 4700000.0, 500300.0, 4700300.0), "water")]
    if anchorage is not None:
        feats.append((anchorage[0], anchorage[1], "anchorage"))
    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32652"}},
           "features": [{"type": "Feature", "properties": {"id": k, "role": r}, "geometry": mapping(g)}
                        for k, g, r in feats]}
    (tmp_path / "f.geojson").write_text(json.dumps(doc))
    return ["count", "ships", str(tmp_path / "h.tif"), "--features", str(tmp_path / "f.geojson"), "--json"]


def test_vhr_drawn_anchorage_takes_its_vessels_from_the_counters_own_entry(tmp_path, capsys):
    """At 1 m the counter reports the water outside the berths as its own entry 'anchorage';
    a drawn anchorage counted the same vessel again (sum of per_feature 3, total 2)."""
    from shapely.geometry import box

    assert main(_vhr_harbour(tmp_path, None)) == 0
    plain = json.loads(capsys.readouterr().out)
    assert {pf["id"]: pf["count"] for pf in plain["per_feature"]} == {"B1": 1, "anchorage": 1}
    assert main(_vhr_harbour(tmp_path, ("outer", box(500000.0, 4700000.0, 500160.0, 4700140.0)))) == 0
    doc = json.loads(capsys.readouterr().out)
    counts = {pf["id"]: pf["count"] for pf in doc["per_feature"]}
    assert counts == {"B1": 1, "outer": 1} and doc["total"] == 2
    assert sum(counts.values()) == sum(d["feature_id"] is not None for d in doc["detections"]) <= doc["total"]
    # An anchorage that misses the hull leaves the counter's entry as it was.
    assert main(_vhr_harbour(tmp_path, ("east", box(500200.0, 4700000.0, 500300.0, 4700100.0)))) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {pf["id"]: pf["count"] for pf in doc["per_feature"]} == {"B1": 1, "anchorage": 1, "east": 0}


@pytest.mark.parametrize("fid", ["anchorage", "B1"])
def test_reserved_or_repeated_feature_ids_are_refused(tmp_path, capsys, fid):
    from shapely.geometry import box

    rc = main(_vhr_harbour(tmp_path, (fid, box(500000.0, 4700000.0, 500160.0, 4700140.0))))
    err = capsys.readouterr().err
    assert rc != 0 and repr(fid) in err and ("reserved" if fid == "anchorage" else "more than once") in err


@pytest.mark.parametrize("kind", ["point", "line"])
def test_anchorage_must_be_a_polygon(tmp_path, capsys, kind):
    """A Point anchorage crashed (ZeroDivisionError) after the count; a line reported 0."""
    from shapely.geometry import LineString, Point

    geom = Point(500080, 4700080) if kind == "point" else LineString([(500010, 4700080), (500150, 4700080)])
    rc = main(_vhr_harbour(tmp_path, ("A", geom)))
    err = capsys.readouterr().err
    assert rc == 2 and "anchorage 'A'" in err and "not a polygon" in err and "Traceback" not in err


def test_anchorage_outside_the_image_is_refused_before_the_count(tmp_path, capsys, monkeypatch):
    from shapely.geometry import box

    import changedet.objects.ships as ships

    def boom(*a, **k):
        raise AssertionError("counted before the anchorage was checked")

    monkeypatch.setattr(ships, "count_ships", boom)
    rc = main(_vhr_harbour(tmp_path, ("far", box(600000.0, 4700000.0, 600100.0, 4700100.0))))
    err = capsys.readouterr().err
    assert rc != 0 and "anchorage 'far' lies outside the image" in err


@pytest.mark.parametrize("order", [(4, 1, 2, 3), (4, 3, 2, 1)], ids=["cir", "reversed"])
def test_change_pairs_two_unnamed_dates_in_the_same_order(test_data, tmp_path, capsys, order):
    """Unnamed bands are paired by position: two dates in the same non-RGBN order (colour
    infrared NIR, R, G, B; both reversed) compare like bands and give the RGBN pair's
    change. Each date was judged alone as R, G, B, NIR and refused."""
    docs = []
    for o in (order, (1, 2, 3, 4)):
        b = _reordered(test_data(NAIP.format("20180716")), tmp_path / "b.tif", o)
        a = _reordered(test_data(NAIP.format("20190904")), tmp_path / "a.tif", o)
        rc = main(["change", str(b), str(a), "--method", "cva", "--out", str(tmp_path / "c.tif"), "--json"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        docs.append(json.loads(captured.out))
    assert docs[0]["changed_pixels"] == docs[1]["changed_pixels"] > 0


def test_change_refuses_an_unnamed_date_reversed_against_a_named_one(test_data, tmp_path, capsys):
    before = _reordered(test_data(NAIP.format("20180716")), tmp_path / "b.tif", (1, 2, 3, 4), ("R", "G", "B", "NIR"))
    after = _reordered(test_data(NAIP.format("20190904")), tmp_path / "a.tif", (4, 3, 2, 1))
    rc = main(["change", str(before), str(after), "--method", "cva", "--out", str(tmp_path / "c.tif"), "--json"])
    err = capsys.readouterr().err
    assert rc != 0 and str(after) in err and "band order looks wrong" in err and "paired by position" in err


def _band_folder(folder, names, value=100):
    """Single-band uint16 files ``names`` (10 m, UTM 52N, 16 x 16) in ``folder``."""
    folder.mkdir(exist_ok=True)
    for i, n in enumerate(names):
        with rasterio.open(folder / n, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint16",
                           crs="EPSG:32652", transform=from_origin(500000.0, 3890000.0, 10.0, 10.0)) as dst:
            dst.write(np.full((1, 16, 16), value + i, "uint16"))
    return folder


def test_band_folder_with_two_downloads_is_refused_naming_them(tmp_path, capsys):
    """Two EO Browser downloads in one folder: B02-B04 came from one date and B08 from the
    other (the first date had B8A), without a word."""
    from changedet.change import ChangeError, load_image

    first = "2023-04-26-00_00_2023-04-26-23_59_Sentinel-2_L2A_{}_(Raw).tiff"
    second = "2023-05-06-00_00_2023-05-06-23_59_Sentinel-2_L2A_{}_(Raw).tiff"
    mixed = _band_folder(tmp_path / "mixed", [first.format(b) for b in ("B02", "B03", "B04", "B8A")]
                         + [second.format(b) for b in ("B02", "B03", "B04", "B08")])
    with pytest.raises(ChangeError, match="holds 2 acquisitions") as exc:
        load_image(mixed)
    assert first.format("B02") in str(exc.value) and second.format("B02") in str(exc.value)
    # `change` shares the loader: a date folder is refused the same way.
    one = _band_folder(tmp_path / "one", [second.format(b) for b in ("B02", "B03", "B04", "B08")])
    rc = main(["change", str(mixed), str(one), "--out", str(tmp_path / "c.tif"), "--json"])
    assert rc != 0 and "holds 2 acquisitions" in capsys.readouterr().err
    # One acquisition, whatever else its names carry (resolutions, a class file), loads.
    s2 = _band_folder(tmp_path / "safe", ["T31UDQ_20170829T105019_B02_10m.jp2".replace(".jp2", ".tif"),
                                          "T31UDQ_20170829T105019_B05_20m.tif", "T31UDQ_20170829T105019_SCL_20m.tif"])
    assert [str(b) for b in load_image(s2)["band"].values] == ["B02", "B05"]


def test_band_folder_with_a_band_twice_is_refused_naming_the_files(tmp_path):
    from changedet.change import ChangeError, load_image

    dup = _band_folder(tmp_path / "dup", ["S2_B02.tif", "S2_B03.tif", "S2_B04.tif", "S2_B04 (1).tif"])
    with pytest.raises(ChangeError, match=r"more than one file for the same band \(B04: S2_B04 \(1\)\.tif, S2_B04\.tif"):
        load_image(dup)


def test_anchorage_counts_no_vessel_lying_at_a_berth():
    """A vessel the 10 m detector calls at_berth (alongside a quay nobody drew) is moored:
    an anchorage polygon reaching the quay counted it "at the anchorage" (Busan: 14 of 23)."""
    from shapely.geometry import box

    from changedet.cli.count import per_anchorage
    from changedet.grid import GridSpec
    from changedet.objects.common import CountResult, Detection

    grid = GridSpec.from_bounds("EPSG:32652", (0.0, 0.0, 1000.0, 1000.0), 10.0)
    dets = (Detection("ship", "at_berth", box(100, 100, 200, 120), 0.9, None, {}),
            Detection("ship", "at_anchor", box(400, 400, 500, 420), 0.9, None, {}))
    res = CountResult(kind="ships", total=2, by_type={"at_berth": 1, "at_anchor": 1}, per_feature=(),
                      detections=dets, crs=grid.crs, observed_fraction=1.0)
    out = per_anchorage(res, {"roads": box(0, 0, 1000, 1000)}, grid, roles=True)
    assert out.per_feature == ({"id": "roads", "role": "anchorage", "count": 1, "by_type": {"at_anchor": 1}},)
    assert [d.feature_id for d in out.detections] == [None, "roads"]


def test_vhr_ship_entries_all_say_their_role_and_observed_fraction(tmp_path, capsys):
    """Berth entries had no role, the drawn anchorages no observed_fraction: a consumer
    told the counter's own 'anchorage' entry from a berth only by a missing key."""
    from shapely.geometry import box

    assert main(_vhr_harbour(tmp_path, None)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {pf["id"]: pf["role"] for pf in doc["per_feature"]} == {"B1": "berth", "anchorage": "anchorage"}
    assert main(_vhr_harbour(tmp_path, ("east", box(500200.0, 4700000.0, 500300.0, 4700100.0)))) == 0
    doc = json.loads(capsys.readouterr().out)
    for pf in doc["per_feature"]:
        assert {"id", "role", "count", "by_type", "observed_fraction"} <= set(pf)
    assert [pf["observed_fraction"] for pf in doc["per_feature"] if pf["id"] == "east"] == [1.0]


def test_band_folder_with_two_dates_in_disjoint_bands_is_refused(tmp_path):
    """No band twice, but the visible bands of one date and NIR of another: two images."""
    from changedet.change import ChangeError, load_image

    d = _band_folder(tmp_path / "d", [f"2023-04-26_S2_{b}.tif" for b in ("B02", "B03", "B04")]
                     + ["2023-05-06_S2_B08.tif"])
    with pytest.raises(ChangeError, match="holds 2 acquisitions"):
        load_image(d)


def test_an_anchorage_drawn_partly_outside_the_water_polygon_is_water():
    # The 10 m detector keeps vessels lying mostly in water U berths; an anchorage is water
    # by definition, so its vessels must not be dropped before it is counted.
    from shapely.geometry import box

    from changedet.cli.count import _select

    feats = [{"id": "B1", "role": "berth", "geometry": box(0, 0, 10, 10)},
             {"id": "W", "role": "water", "geometry": box(0, 0, 100, 100)},
             {"id": "roads", "role": "anchorage", "geometry": box(90, 90, 200, 200)}]
    sel = _select(feats, "ships", "port.geojson")
    assert sel["water"].covers(box(90, 90, 200, 200))
    # Without a water feature nothing is drawn as water: the image's own water decides.
    assert _select([feats[0], feats[2]], "ships", "port.geojson")["water"] is None
