"""``changedet change``: loading (multi-band files, band-named directories), alignment, CLI JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from changedet.change import ChangeError, changed_area_m2, detect_change, load_image, load_pair
from changedet.cli import main
from changedet.grid import GridSpec
from changedet.io import write_geotiff

RES = 10.0
GRID = GridSpec.from_bounds("EPSG:32631", (440000.0, 5410000.0, 440000.0 + 80 * RES, 5410000.0 + 64 * RES), RES)
BANDS = ["B02", "B03", "B04", "B08"]


def _scene(seed, change):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:80]
    base = np.stack([1000 + 300 * np.sin(xx / (7 + b)) + 200 * np.cos(yy / (5 + b)) for b in range(4)])
    img = base + rng.normal(0, 15, base.shape)
    if change:
        img[:, 20:32, 30:46] += np.array([900, 700, 1200, -300])[:, None, None]
    if change == 2:  # two more regions, one touching the first only at a corner
        img[:, 32:40, 46:52] += np.array([900, 700, 1200, -300])[:, None, None]
        img[:, 50:58, 5:12] += np.array([900, 700, 1200, -300])[:, None, None]
    return np.clip(img, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    before = GRID.attach(_scene(0, False), bands=BANDS)
    after = GRID.attach(_scene(1, True), bands=BANDS)
    write_geotiff(before, d / "before.tif", dtype="uint16")
    write_geotiff(after, d / "after.tif", dtype="uint16")
    # Directory of single-band files as OSCD / EO Browser name them; B11 at 20 m.
    for name, img in (("imgs_1", before), ("imgs_2", after)):
        sub = d / name
        sub.mkdir()
        for b in BANDS:
            write_geotiff(img.sel(band=[b]), sub / f"T31UDQ_20170829T105019_{b}.tif", dtype="uint16")
        coarse = GRID.scaled(20.0)
        swir = coarse.attach(np.full((1,) + coarse.shape, 2000, np.uint16), bands=["B11"])
        write_geotiff(swir, sub / f"S2A_OPER_MSI_L1C_TL_{b}_B11.tif".replace(f"_{b}_", "_X_"), dtype="uint16")
        (sub / "notes.txt").write_text("not a raster")
    return d


def test_load_directory_of_band_files(pair):
    img = load_image(pair / "imgs_1")
    assert [str(b) for b in img["band"].values] == ["B02", "B03", "B04", "B08", "B11"]
    assert img.shape == (5, 64, 80)  # 20 m band resampled onto the 10 m grid
    assert GridSpec.of(img).same_as(GRID)
    assert float(img.sel(band="B11").mean()) == pytest.approx(2000.0)
    sel = load_image(pair / "imgs_1", bands=["b8", "B4"])
    assert [str(b) for b in sel["band"].values] == ["B08", "B04"]
    with pytest.raises(ChangeError, match="B12"):
        load_image(pair / "imgs_1", bands=["B12"])
    with pytest.raises(ChangeError, match="no raster files"):
        load_image(pair)  # holds only multi-band files without band names in their names


def test_after_is_aligned_to_before(pair, tmp_path):
    # AFTER in another CRS (Web Mercator): resampled onto BEFORE's UTM grid.
    after = load_image(pair / "after.tif")
    merc = after.rio.reproject("EPSG:3857")
    write_geotiff(merc, tmp_path / "after_3857.tif")
    b, a = load_pair(pair / "before.tif", tmp_path / "after_3857.tif")
    assert GridSpec.of(a).same_as(GridSpec.of(b))
    res = detect_change(b, a, method="cva")
    m = res.mask.values
    assert m[22:30, 32:44].mean() > 0.9
    assert m[:, :20].mean() < 0.02


@pytest.mark.parametrize("method", ["diff", "cva", "irmad", "logratio", "zscore"])
def test_every_method_finds_the_block(pair, method):
    b, a = load_pair(pair / "before.tif", pair / "after.tif")
    res = detect_change(b, a, method=method)
    truth = np.zeros((64, 80), bool)
    truth[20:32, 30:46] = True
    m = res.mask.values
    tp = (m & truth).sum()
    assert tp / truth.sum() > 0.8, method
    assert tp / max(m.sum(), 1) > 0.8, method


def test_cli_json_and_polygons(pair, tmp_path, capsys):
    out = tmp_path / "change.tif"
    poly = tmp_path / "change.geojson"
    rc = main(["change", str(pair / "imgs_1"), str(pair / "imgs_2"), "--method", "cva", "--bands", "B02,B03,B04,B08",
               "--out", str(out), "--polygons", str(poly), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip())
    assert doc["method"] == "cva" and doc["threshold_method"] == "ki" and doc["threshold"] > 0
    assert doc["polygon_count"] == 1
    assert doc["changed_area_m2"] == pytest.approx(12 * 16 * 100, rel=0.15)
    gj = json.loads(poly.read_text())
    assert len(gj["features"]) == 1 and gj["features"][0]["properties"]["area_m2"] == pytest.approx(
        doc["changed_area_m2"])
    with rasterio.open(out) as src:
        assert src.descriptions == ("magnitude", "change", "direction_deg")
        assert src.crs.to_epsg() == 32631
        change = src.read(2)
    assert np.nansum(change) * 100 == doc["changed_area_m2"]


def test_cli_geoparquet_and_irmad(pair, tmp_path, capsys):
    import pyarrow.parquet as pq

    rc = main(["change", str(pair / "before.tif"), str(pair / "after.tif"), "--method", "irmad",
               "--out", str(tmp_path / "c.tif"), "--polygons", str(tmp_path / "c.parquet"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip())
    assert doc["threshold_method"] == "chi2"
    assert doc["threshold"] == pytest.approx(13.2767, rel=1e-4)  # chi2(4) 99 % quantile
    assert pq.read_table(tmp_path / "c.parquet").num_rows == doc["polygon_count"] >= 1


def test_cli_irmad_kilog(pair, tmp_path, capsys):
    # The best automatic threshold for IR-MAD on OSCD (docs/oscd.md): KI on log1p(chi2).
    from changedet.kernels import kittler_illingworth

    rc = main(["change", str(pair / "before.tif"), str(pair / "after.tif"), "--method", "irmad",
               "--threshold", "kilog", "--smooth", "3", "--out", str(tmp_path / "k.tif"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip())
    assert doc["method"] == "irmad" and doc["threshold_method"] == "kilog" and doc["smooth"] == 3
    with rasterio.open(tmp_path / "k.tif") as src:
        mag = src.read(1)
    assert doc["threshold"] == pytest.approx(kittler_illingworth(mag, log=True), rel=1e-5)
    assert doc["threshold"] != pytest.approx(kittler_illingworth(mag), rel=1e-3)
    # The magnitude is that of the 3x3-averaged images.
    before, after = load_pair(pair / "before.tif", pair / "after.tif")
    ref = detect_change(before, after, method="irmad", threshold="kilog", smooth=3)
    np.testing.assert_allclose(mag, ref.magnitude.values, rtol=1e-5, equal_nan=True)
    rc = main(["change", str(pair / "before.tif"), str(pair / "after.tif"), "--smooth", "2",
               "--out", str(tmp_path / "x.tif")])
    assert rc == 2 and "smooth=2" in capsys.readouterr().err


def test_cli_errors(pair, tmp_path, capsys):
    rc = main(["change", str(pair / "before.tif"), str(pair / "after.tif"), "--method", "cva",
               "--threshold", "chi2", "--out", str(tmp_path / "x.tif")])
    assert rc == 2 and "irmad only" in capsys.readouterr().err
    rc = main(["change", str(pair / "before.tif"), str(tmp_path / "missing.tif"), "--out", str(tmp_path / "x.tif")])
    assert rc == 2 and "missing.tif" in capsys.readouterr().err
    rc = main(["change", str(pair / "before.tif"), str(pair / "after.tif"), "--bands", "B12",
               "--out", str(tmp_path / "x.tif")])
    assert rc == 2 and "B12" in capsys.readouterr().err


def test_geographic_area():
    g = GridSpec.from_bounds("EPSG:4326", (2.0, 48.0, 2.01, 48.01), 0.001)
    m = g.attach(np.ones(g.shape, bool))
    assert changed_area_m2(m) == pytest.approx(1112.0 * 744.0, rel=0.01)


def test_cli_mask_clouds_errors(pair, tmp_path, capsys):
    args = ["change", str(pair / "before.tif"), str(pair / "after.tif"), "--out", str(tmp_path / "x.tif")]
    # The four-band pair lacks the bands s2cloudless needs.
    assert main(args + ["--mask-clouds"]) == 2
    assert "B01" in capsys.readouterr().err
    assert main(args + ["--mask-clouds", "--dates", "2017-11-07"]) == 2
    assert "YYYY-MM-DD,YYYY-MM-DD" in capsys.readouterr().err
    assert main(args + ["--dates", "2016-11-30,2017-11-07"]) == 2
    assert "--mask-clouds" in capsys.readouterr().err


def test_cli_mask_clouds_on_paris(test_data, tmp_path, capsys):
    """A crop of OSCD Paris holding a cumulus of 7 Nov 2017 and its shadow: both were
    change without the mask and are unobserved with it."""
    from changedet.cloudmask import S2CLOUDLESS_BANDS

    base = test_data("oscd_sentinel2/images/paris/imgs_2/T31UDQ_20171107T105229_B02.tif").parents[1]
    bands = sorted(set(S2CLOUDLESS_BANDS) | {"B03"})
    before, after = load_pair(base / "imgs_1", base / "imgs_2", bands=bands)
    crop = {"y": slice(170, 408), "x": slice(80, 320)}
    for name, img in (("b.tif", before), ("a.tif", after)):
        write_geotiff(img.isel(crop), tmp_path / name)
    common = ["change", str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), "--method", "irmad",
              "--bands", "B02,B03,B04,B08", "--smooth", "3", "--threshold", "kilog", "--json"]
    assert main(common + ["--out", str(tmp_path / "plain.tif")]) == 0
    plain = json.loads(capsys.readouterr().out.strip())
    assert main(common + ["--out", str(tmp_path / "m.tif"), "--mask-clouds", "--dates", "2016-11-30,2017-11-07"]) == 0
    masked = json.loads(capsys.readouterr().out.strip())
    assert plain["unobserved_pixels"] is None
    assert 0.03 < masked["unobserved_pixels"] / plain["valid_pixels"] < 0.3, masked
    assert masked["valid_pixels"] == plain["valid_pixels"] - masked["unobserved_pixels"]
    # Most of what the plain run flagged here was the cloud and its shadow.
    assert masked["changed_pixels"] < 0.5 * plain["changed_pixels"], (plain, masked)
    with rasterio.open(tmp_path / "m.tif") as src:
        change = src.read(2)
    assert np.isnan(change).sum() == masked["unobserved_pixels"]
