"""Findings of the s11 CLI / bad-input audit (notes/s11/A/REPORT.md #2, #4-#8, #10-#12):
each test fails on the code before the fix."""

from __future__ import annotations

import json

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from shapely.geometry import box, mapping

from changedet.change import ChangeError, changed_area_m2, detect_change, load_image, load_pair
from changedet.cli import main
from changedet.grid import GridSpec
from changedet.io import read_raster, write_geotiff

from tests.test_change_cli import BANDS, GRID, RES, _scene  # noqa: E402,F401  the change CLI tests' synthetic pair


def _write(path, data, *, names=None, nodata=None, dtype=None, grid=GRID):
    data = np.asarray(data)
    dtype = dtype or data.dtype
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=dtype, crs=grid.crs, transform=grid.transform, nodata=nodata) as dst:
        dst.write(data.astype(dtype))
        for i, n in enumerate(names or []):
            dst.set_band_description(i + 1, n)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("s11 pair")
    _write(d / "before.tif", _scene(0, False), names=BANDS)
    _write(d / "after.tif", _scene(1, True), names=BANDS)
    # The same AFTER, its bands named by role (an EO Browser / VHR style export).
    _write(d / "after_rgbn.tif", _scene(1, True), names=["B", "G", "R", "NIR"])
    _write(d / "after_foreign.tif", _scene(1, True), names=["alpha1", "beta2", "gamma3", "delta4"])
    _write(d / "after_unnamed.tif", _scene(1, True))
    return d


def _cli_json(capsys, args):
    rc = main(args)
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 and "--json" in args else None), cap.err


# ------------------------------------------------------------------ #2 ground area, Web Mercator
def _mask_on(grid, rows, cols):
    m = np.zeros(grid.shape, bool)
    m[rows, cols] = True
    return grid.attach(m)


def _geodesic_m2(geom, crs):
    """Ground area of a map polygon: densified, moved to lon/lat, geodesic on WGS84."""
    tr = pyproj.Transformer.from_crs(crs, 4326, always_xy=True)
    g = shapely.segmentize(geom, geom.length / 400)
    ll = shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(ll)[0])


@pytest.mark.parametrize("lat", [35.1, 60.0])
def test_change_area_web_mercator_is_ground_area(lat):
    from changedet.polygons import change_polygons

    x0, y0 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(129.0, lat)
    grid = GridSpec.from_bounds("EPSG:3857", (x0, y0, x0 + 3000 * RES, y0 + 300 * RES), RES)
    mask = _mask_on(grid, slice(100, 150), slice(2000, 2050))
    t = grid.transform
    block = box(t.c + 2000 * RES, t.f - 150 * RES, t.c + 2050 * RES, t.f - 100 * RES)
    truth = _geodesic_m2(block, grid.crs)
    assert truth == pytest.approx(2500 * RES * RES * np.cos(np.radians(lat)) ** 2, rel=0.01)
    assert changed_area_m2(mask) == pytest.approx(truth, rel=1e-3)
    polys = change_polygons(mask)
    assert len(polys) == 1 and polys.polygons[0].area_m2 == pytest.approx(truth, rel=1e-3)


def test_change_area_utm_stays_pixels_times_pixel_area():
    mask = _mask_on(GRID, slice(10, 20), slice(5, 25))
    # UTM's scale (0.9996 on the central meridian) is within the documented tolerance.
    assert changed_area_m2(mask) == 200 * RES * RES


# ------------------------------------------------------------------ #4 IR-MAD, constant band
def test_irmad_constant_band_names_file_and_band(pair, tmp_path, capsys):
    data = _scene(0, False)
    data[0] = 1000  # B02 constant (a fill or saturated band)
    _write(tmp_path / "before_const.tif", data, names=BANDS)
    rc, _, err = _cli_json(capsys, ["change", str(tmp_path / "before_const.tif"), str(pair / "after.tif"),
                                    "--method", "irmad", "--out", str(tmp_path / "o.tif"), "--json"])
    assert rc == 2 and "Traceback" not in err
    assert "before_const.tif" in err and "B02" in err and "--bands" in err


@pytest.mark.parametrize("method", ["diff", "cva", "logratio", "zscore"])
@pytest.mark.parametrize("both", [False, True])
def test_other_methods_run_on_a_constant_band(pair, method, both):
    b, a = load_pair(pair / "before.tif", pair / "after.tif")
    b = b.copy(data=np.asarray(b.values).copy())
    b.values[0] = 1000.0
    if both:
        a = a.copy(data=np.asarray(a.values).copy())
        a.values[0] = 1000.0
    res = detect_change(b, a, method=method)
    assert np.isfinite(res.threshold)
    assert int(res.mask.sum()) > 0  # the changed block is still found


# ------------------------------------------------------------------ #5 --out a directory / unwritable
def _pre(path):
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("cmd", ["change", "coregister", "count"])
def test_out_directory_or_uncreatable_is_refused(pair, tmp_path, capsys, cmd):
    outdir = tmp_path / "adir"
    outdir.mkdir()
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    feats = tmp_path / "f.geojson"
    feats.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    for out in (outdir, afile / "sub" / "x.tif"):
        before = _pre(outdir)
        if cmd == "change":
            args = ["change", str(pair / "before.tif"), str(pair / "after.tif"), "--method", "cva"]
        elif cmd == "coregister":
            args = ["coregister", str(pair / "before.tif"), str(pair / "after.tif")]
        else:
            args = ["count", "ships", str(pair / "before.tif"), "--features", str(feats)]
        rc = main(args + ["--out", str(out), "--json"])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert "--out" in err and str(out) in err
        assert _pre(outdir) == before  # no .tmp left beside it
        assert not list(tmp_path.glob(".*.tmp"))
    assert afile.read_text() == "x"


def test_polygons_directory_refused(pair, tmp_path, capsys):
    pdir = tmp_path / "p.geojson"
    pdir.mkdir()
    rc = main(["change", str(pair / "before.tif"), str(pair / "after.tif"), "--method", "cva",
               "--out", str(tmp_path / "o.tif"), "--polygons", str(pdir)])
    err = capsys.readouterr().err
    assert rc == 2 and "--polygons" in err and str(pdir) in err
    assert not (tmp_path / "o.tif").exists()  # refused before the work


def test_failed_write_leaves_no_temp_and_keeps_existing_file(tmp_path):
    from changedet.io import OutputPathError, atomic_write

    target = tmp_path / "keep.tif"
    target.write_bytes(b"good")

    def half_write(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    # A full disk propagates as it is (the flows retry it); the old file stays whole.
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, half_write, option="--out")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]
    with pytest.raises(OutputPathError, match="cannot be written"):
        write_geotiff(GRID.attach(np.zeros(GRID.shape, "float32")), target / "x.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]


# ------------------------------------------------------------------ #6 band pairing by role
def test_bands_named_differently_pair_by_role(pair, tmp_path):
    b0, a0 = load_pair(pair / "before.tif", pair / "after.tif")
    b1, a1 = load_pair(pair / "before.tif", pair / "after_rgbn.tif")
    assert [str(v) for v in a1["band"].values] == BANDS
    np.testing.assert_array_equal(a1.values, a0.values)  # B02 with B (blue), not with R
    _, a2 = load_pair(pair / "before.tif", pair / "after_rgbn.tif", bands=["B08", "B04"])
    np.testing.assert_array_equal(a2.values, a0.sel(band=["B08", "B04"]).values)


def test_named_bands_that_cannot_be_matched_are_refused(pair):
    with pytest.raises(ChangeError, match="by name, role or stated wavelength"):
        load_pair(pair / "before.tif", pair / "after_foreign.tif")


def test_unnamed_bands_still_pair_by_position(pair):
    _, a0 = load_pair(pair / "before.tif", pair / "after.tif")
    b, a = load_pair(pair / "before.tif", pair / "after_unnamed.tif")
    assert [str(v) for v in a["band"].values] == BANDS
    np.testing.assert_array_equal(a.values, a0.values)


# ------------------------------------------------------------------ #7 undeclared 0 fill
def test_undeclared_zero_fill_is_nodata_in_change_loader(pair, tmp_path):
    data = _scene(1, True)
    data[:, 40:60, 0:30] = 0  # Sentinel-2 fill: 0 in every band, no nodata declared
    data[1, 0:5, 0:5] = 0  # one band at 0 is data (dark water in a stretched blue band)
    _write(tmp_path / "after_fill.tif", data, names=BANDS)
    img = load_image(tmp_path / "after_fill.tif")
    assert np.isnan(img.values[:, 40:60, 0:30]).all()
    assert np.isfinite(img.values[:, 0:5, 0:5]).all()
    # read_raster keeps its semantics for every other caller.
    assert float(read_raster(tmp_path / "after_fill.tif").values[0, 50, 10]) == 0.0
    b, a = load_pair(pair / "before.tif", tmp_path / "after_fill.tif")
    res = detect_change(b, a, method="diff")
    assert not bool(res.mask.values[40:60, 0:30].any())
    assert int(np.isfinite(res.magnitude.values).sum()) == 64 * 80 - 20 * 30


def test_zero_fill_rule_spares_8bit_and_declared_nodata(tmp_path):
    # A true-colour 8-bit export (3 bands: a 4th 8-bit band would be GDAL's alpha).
    data = (_scene(1, False)[:3] // 16).astype(np.uint8)
    data[:, 40:60, 0:30] = 0
    _write(tmp_path / "u8.tif", data, names=BANDS[:3])
    assert np.isfinite(load_image(tmp_path / "u8.tif").values[:, 40:60, 0:30]).all()
    d16 = _scene(1, False)
    d16[:, 40:60, 0:30] = 7
    d16[:, 0:10, 0:10] = 0
    _write(tmp_path / "nd.tif", d16, names=BANDS, nodata=7)
    img = load_image(tmp_path / "nd.tif")
    assert np.isnan(img.values[:, 40:60, 0:30]).all() and (img.values[:, 0:10, 0:10] == 0).all()


# ------------------------------------------------------------------ count: a synthetic harbour
HARBOUR = GridSpec.from_bounds("EPSG:32652", (500000.0, 4700000.0, 500400.0, 4700300.0), 1.0)


def _harbour(valid="all"):
    rng = np.random.default_rng(5)
    h, w = HARBOUR.shape
    img = np.empty((4, h, w), "float32")
    img[:] = np.array([0.06, 0.05, 0.03, 0.02])[:, None, None]  # water: dark, darkest in NIR
    img += rng.normal(0, 0.003, img.shape).astype("float32")
    img[:, :, 300:] = np.array([0.12, 0.13, 0.14, 0.25])[:, None, None]  # land east
    img[:, 100:116, 150:270] = np.array([0.25, 0.25, 0.25, 0.30])[:, None, None]  # a 120 x 16 m hull
    if valid == "none":
        img[:] = np.nan
    elif valid == "half":
        img[:, :, :150] = np.nan
    return img


def _features(path, crs="EPSG:32652"):
    berth = box(500140.0, 4700150.0, 500290.0, 4700220.0)
    water = box(500000.0, 4700000.0, 500300.0, 4700300.0)
    geoms = {"B1": (berth, "berth"), "W": (water, "water")}
    if crs != "EPSG:32652":
        tr = pyproj.Transformer.from_crs("EPSG:32652", crs, always_xy=True)
        geoms = {k: (shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))), r)
                 for k, (g, r) in geoms.items()}
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {"id": k, "role": r}, "geometry": mapping(g)}
                        for k, (g, r) in geoms.items()]}
    if crs != "EPSG:4326":
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def harbour(tmp_path_factory):
    d = tmp_path_factory.mktemp("s11 harbour")
    for v in ("all", "none", "half"):
        _write(d / f"h_{v}.tif", _harbour(v), names=["B", "G", "R", "NIR"], grid=HARBOUR, dtype="float32")
    _features(d / "utm.geojson")
    _features(d / "ll.geojson", "EPSG:4326")
    return d


def test_count_json_names_the_crs_of_its_polygons(harbour, capsys):
    rc, doc, _ = _cli_json(capsys, ["count", "ships", str(harbour / "h_all.tif"), "--features",
                                    str(harbour / "ll.geojson"), "--json"])
    assert rc == 0 and doc["crs"] == "EPSG:4326" and doc["total"] == 1
    x, y = doc["detections"][0]["polygon"]["coordinates"][0][0]
    assert -180 <= x <= 180 and -90 <= y <= 90
    rc, doc, _ = _cli_json(capsys, ["count", "ships", str(harbour / "h_all.tif"), "--features",
                                    str(harbour / "utm.geojson"), "--json"])
    assert rc == 0 and doc["crs"] == "EPSG:32652"
    x, y = doc["detections"][0]["polygon"]["coordinates"][0][0]
    assert 500000 <= x <= 500400  # coordinates unchanged: the image's CRS, as before


def test_count_nothing_observed_is_refused_partly_observed_is_not(harbour, capsys):
    from changedet.cli.count import read_features
    from changedet.objects.ships import count_ships

    rc, _, err = _cli_json(capsys, ["count", "ships", str(harbour / "h_none.tif"), "--features",
                                    str(harbour / "utm.geojson"), "--json"])
    assert rc == 2 and "h_none.tif" in err and "nothing was observed" in err and "Traceback" not in err
    # The library keeps returning its result (flows record observed_fraction 0).
    feats, _ = read_features(harbour / "utm.geojson")
    res = count_ships(read_raster(harbour / "h_none.tif"), {"B1": feats[0]["geometry"]}, water=feats[1]["geometry"])
    assert res.total == 0 and res.observed_fraction == 0.0
    rc, doc, _ = _cli_json(capsys, ["count", "ships", str(harbour / "h_half.tif"), "--features",
                                    str(harbour / "utm.geojson"), "--json"])
    assert rc == 0 and 0.0 < doc["observed_fraction"] < 1.0


def test_vhr_ships_on_lonlat_image_refused_web_mercator_measured(harbour, tmp_path, capsys):
    from changedet.io import reproject_to
    from changedet.objects.checks import ResolutionError
    from changedet.objects.ships import count_ships

    img = read_raster(harbour / "h_all.tif")
    berth = box(500140.0, 4700150.0, 500290.0, 4700220.0)
    water = box(500000.0, 4700000.0, 500300.0, 4700300.0)
    ref = count_ships(img, {"B1": berth}, water=water)
    assert ref.total == 1
    for epsg in (4326, 3857):
        crs = pyproj.CRS.from_epsg(epsg)
        tr = pyproj.Transformer.from_crs("EPSG:32652", crs, always_xy=True)
        move = (lambda g: shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))))
        x0, y0, x1, y1 = move(box(*HARBOUR.bounds)).bounds
        res = (x1 - x0) / HARBOUR.shape[1]
        grid = GridSpec.from_bounds(crs, (x0, y0, x1, y1), res)
        moved = reproject_to(img, grid, resampling="nearest")
        if epsg == 4326:
            with pytest.raises(ResolutionError, match="geographic"):
                count_ships(moved, {"B1": move(berth)}, water=move(water))
        else:
            got = count_ships(moved, {"B1": move(berth)}, water=move(water))
            assert got.total == 1
            # Lengths in ground metres (the Web Mercator map length is 1/cos(42.4 deg) = 1.35 x longer).
            assert got.detections[0].attrs["length_m"] == pytest.approx(ref.detections[0].attrs["length_m"],
                                                                        rel=0.05)


# ------------------------------------------------------------------ #12 the 30 m vessel limit
def test_utm_scaled_30m_passes_and_refusal_reads_consistently():
    from changedet.objects.checks import ResolutionError
    from changedet.objects.vessels import detect_vessels

    rng = np.random.default_rng(3)
    for res, ok in ((30.0, True), (31.0, False), (40.0, False)):
        # On the central meridian of UTM 52N, 30 m of map is 30.012 m of ground.
        grid = GridSpec.from_bounds("EPSG:32652", (500000.0, 4700000.0, 500000.0 + 60 * res, 4700000.0 + 60 * res),
                                    res)
        img = np.empty((4,) + grid.shape, "float32")
        img[:] = np.array([0.06, 0.05, 0.03, 0.02])[:, None, None]
        img[:, :, 40:] = np.array([0.12, 0.13, 0.14, 0.25])[:, None, None]
        img += rng.normal(0, 0.002, img.shape).astype("float32")
        da = grid.attach(img, bands=["B", "G", "R", "NIR"])
        if ok:
            detect_vessels(da)
        else:
            with pytest.raises(ResolutionError) as e:
                detect_vessels(da)
            shown = float(str(e.value).split("the image is ")[1].split(" m")[0])
            assert shown > 30.0  # never "30.0 m per pixel; vessels need 30 m or finer"


# ------------------------------------------------------------------ found on the way: false alpha
def test_nir_labelled_alpha_does_not_mask_the_other_bands(tmp_path):
    # 4-band uint8 without a photometric tag: GDAL labels NIR alpha; read_raster keeps it as
    # data, and its zeros (dark water) must not blank R, G and B.
    data = np.full((4, 20, 30), 60, np.uint8)
    data[:, 5:15, 5:25] += np.arange(20, dtype=np.uint8)[None, None, :]
    data[3, 0:5, 0:5] = 0
    _write(tmp_path / "rgbn8.tif", data, names=["R", "G", "B", "NIR"])
    with rasterio.open(tmp_path / "rgbn8.tif") as src:
        assert src.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    np.testing.assert_array_equal(read_raster(tmp_path / "rgbn8.tif").values, data.astype("float32"))


def test_nir_labelled_alpha_keeps_an_internal_mask_and_hides_all_zero_fill(tmp_path):
    # The same file with a mask of its own (GDAL_TIFF_INTERNAL_MASK, a .msk): that mask still
    # hides its pixels in every band (review); pixels 0 in every band are fill.
    data = np.full((4, 20, 30), 60, np.uint8)
    data[3, 0:5, 0:5] = 0          # dark water: NIR 0 only
    data[:, 15:20, 25:30] = 0      # fill under a transparent pixel: 0 everywhere
    path = _write(tmp_path / "rgbn8m.tif", data, names=["R", "G", "B", "NIR"])
    mask = np.full((20, 30), 255, np.uint8)
    mask[10:12, 10:20] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    v = read_raster(path).values
    assert np.isnan(v[:, 10:12, 10:20]).all()
    assert (v[:3, 0:5, 0:5] == 60).all() and (v[3, 0:5, 0:5] == 0).all()
    # Without a mask of its own, GDAL masks by the alpha-labelled NIR: the raw read keeps
    # dark water and hides only the all-zero fill.
    plain = read_raster(_write(tmp_path / "rgbn8p.tif", data, names=["R", "G", "B", "NIR"])).values
    assert np.isnan(plain[:, 15:20, 25:30]).all()
    assert (plain[:3, 0:5, 0:5] == 60).all() and (plain[3, 0:5, 0:5] == 0).all()


def test_review_mends_names_zero_fill_feet_and_urls(tmp_path):
    from changedet.change import _pair_bands, _zero_fill_to_nan
    from changedet.grid import GridSpec
    from changedet.io import OutputPathError, check_output_path
    from changedet.objects.vessels import ground_metres_per_unit
    from affine import Affine
    import xarray as xr

    # Earth Engine's B2 is ESA's B02.
    assert _pair_bands(["B02", "B03", "B04", "B08"], ["B2", "B3", "B4", "B8"]) == [
        ("B02", "B2"), ("B03", "B3"), ("B04", "B4"), ("B08", "B8")]
    # Zero fill reaches the edge; an all-zero patch inside the image is data.
    v = np.full((2, 20, 20), 500.0, "float32")
    v[:, :, :4] = 0
    v[:, 10:12, 10:12] = 0
    out = _zero_fill_to_nan(xr.DataArray(v, dims=("band", "y", "x"))).values
    assert np.isnan(out[:, :, :4]).all() and (out[:, 10:12, 10:12] == 0).all()
    # A CRS in US feet: 0.3048 ground metres per unit.
    g = GridSpec(crs="EPSG:2263", transform=Affine(1, 0, 1e6, 0, -1, 2e5), shape=(10, 10))
    assert abs(ground_metres_per_unit(g) - 0.3048) < 0.001
    with pytest.raises(OutputPathError, match="is a URL"):
        check_output_path("s3://bucket/x.tif")


def test_regression_audit_mends(tmp_path):
    from changedet.change import _pair_bands
    from changedet.io import atomic_write, check_output_path

    # ENVI descriptions carrying each scene's id pair by their stated wavelengths.
    nb = [f"Resize (ETM+ Meta (Band {i}):L71119038_03820000317_MTL.txt) ({w} Micrometers)"
          for i, w in enumerate(("0.482500", "0.565000", "0.660000"), 1)]
    na = [f"Resize (TM Meta (Band {i}):L71119038_03820030206_MTL.txt) ({w} Micrometers)"
          for i, w in enumerate(("0.485000", "0.560000", "0.660000"), 1)]
    assert _pair_bands(nb, na) == list(zip(nb, na))
    # A name close to the 255-byte limit still writes (its temporary name is cut).
    long = tmp_path / ("m" * 240 + ".json")
    atomic_write(long, lambda tmp: tmp.write_text("{}"))
    assert long.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [long.name]
    # Checking an output path makes no folders (a run failing later leaves none).
    check_output_path(tmp_path / "res" / "sub" / "mag.tif")
    assert not (tmp_path / "res").exists()


def test_change_cli_on_the_taizhou_landsat_pair(test_data, tmp_path, capsys):
    # The ENVI pair names its bands with each scene's id: paired by wavelength, not refused.
    import json

    from changedet.cli import main as cli_main

    d = test_data("landsat_taizhou/Taizhou")
    rc = cli_main(["change", str(d / "2000TM"), str(d / "2003TM"), "--method", "cva",
                   "--out", str(tmp_path / "tz.tif"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(doc["bands"]) == 6 and doc["changed_pixels"] > 0


def test_final_review_mends(tmp_path):
    import errno

    import xarray as xr

    from changedet.change import _pair_bands
    from changedet.errors import ChangedetError
    from changedet.io import atomic_write
    from changedet.objects.common import bgrn

    # Band numbers pair only within one band set: Landsat B2 is green, Sentinel-2 B02 blue.
    assert _pair_bands(["B1", "B2", "B3", "B4"], ["B02", "B03", "B04", "B08"]) == []
    # Quad-pol radar is refused, not read as unnamed R, G, B, NIR.
    quad = xr.DataArray(np.ones((4, 8, 8), "float32"), dims=("band", "y", "x"),
                        coords={"band": ["HH", "HV", "VH", "VV"]})
    with pytest.raises(ChangedetError, match="radar"):
        bgrn(quad)

    # A full disk is not the output path's fault: it propagates as OSError (the flows
    # retry it), and no temporary file is left.
    def full(tmp):
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "x.json", full)
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_constant_band_error_pickles_and_stale_temporaries_go(tmp_path):
    import os
    import pickle
    import time

    from changedet.io import atomic_write
    from changedet.kernels.irmad import ConstantBandError

    e = pickle.loads(pickle.dumps(ConstantBandError("flat", date="before", index=1, band="B03", value=1000.0)))
    assert (str(e), e.date, e.index, e.band, e.indices) == ("flat", "before", 1, "B03", (1,))
    stale = tmp_path / ".x.json.0123456789ab.tmp"
    fresh = tmp_path / ".x.json.ba9876543210.tmp"
    stale.write_text("old")
    fresh.write_text("writing")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    atomic_write(tmp_path / "x.json", lambda tmp: tmp.write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "x.json"]
