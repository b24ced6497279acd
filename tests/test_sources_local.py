"""Local files as a source, on real imagery: eo-learn's Sentinel-2 cloud-mask series written as
GeoTIFFs (dates in TIFFTAG_DATETIME), the AROSICS JPEG2000 pair (dates in the file name),
other CRSs, and the bad inputs (no CRS, corrupt, truncated, no date, backwards range)."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

from changedet.acquire import fetch, site_mask
from changedet.aoi import load_aoi
from changedet.cube import Cube
from changedet.errors import DateError, SourceError
from changedet.grid import aoi_grid
from changedet.sources import get_source
from changedet.sources.local import LocalSource

EO = "eolearn_testeopatch/TestEOPatch"
N_DATES = 24  # enough clear, partly cloudy and overcast dates; keeps the test fast


def make_aoi(registry: Path, aoi_id: str, bounds, crs) -> object:
    """A site polygon given by projected ``bounds`` in ``crs``, as an AOI in ``registry``."""
    to_ll = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    poly = shp_transform(to_ll, box(*bounds))
    registry.mkdir(parents=True, exist_ok=True)
    (registry / f"{aoi_id}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"role": "site", "id": aoi_id}, "geometry": mapping(poly)}]}))
    (registry / f"{aoi_id}.yaml").write_text(yaml.safe_dump({
        "id": aoi_id, "name": aoi_id, "kind": "depot", "timezone": "UTC", "cadence": "weekly",
        "sources": [{"name": "local", "sensor": "s2", "resolution_m": 10}], "metrics": ["changed_area_m2"]}))
    return load_aoi(aoi_id, registry=registry)


@pytest.fixture(scope="module")
def eopatch(test_data):
    root = test_data(EO)
    bbox = json.loads((root / "bbox.geojson").read_text())
    xs, ys = zip(*bbox["coordinates"][0])
    times = [datetime.fromisoformat(t).replace(tzinfo=timezone.utc)
             for t in json.loads((root / "timestamps.json").read_text())]
    return {
        "ndvi": np.load(root / "data" / "NDVI.npy")[:N_DATES, ..., 0],
        "clm": np.load(root / "mask" / "CLM.npy")[:N_DATES, ..., 0],
        "times": times[:N_DATES], "bounds": (min(xs), min(ys), max(xs), max(ys)), "crs": "EPSG:32633",
    }


def write_series(folder: Path, eo) -> list[Path]:
    """One GeoTIFF per date (NDVI + CLM), date in TIFFTAG_DATETIME, name without a date."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = eo["ndvi"].shape[1:]
    transform = from_origin(eo["bounds"][0], eo["bounds"][3], 10.0, 10.0)
    out = []
    for k, t in enumerate(eo["times"]):
        path = folder / f"scene_{k:02d}.tif"
        with rasterio.open(path, "w", driver="GTiff", height=rows, width=cols, count=2, dtype="float32",
                           crs=eo["crs"], transform=transform) as dst:
            dst.write(np.stack([eo["ndvi"][k], eo["clm"][k].astype("float32")]))
            dst.update_tags(TIFFTAG_DATETIME=t.strftime("%Y:%m:%d %H:%M:%S"))
            dst.set_band_description(1, "NDVI")
            dst.set_band_description(2, "CLM")
        out.append(path)
    return out


@pytest.fixture
def site(tmp_path, eopatch):
    x0, y0, x1, y1 = eopatch["bounds"]
    aoi = make_aoi(tmp_path / "aois", "eo_site", (x0 + 150, y0 + 150, x1 - 150, y1 - 150), eopatch["crs"])
    return aoi


def test_dates_from_tiff_metadata_and_range_filter(tmp_path, eopatch, site):
    write_series(tmp_path / "imgs", eopatch)
    src = LocalSource(path=str(tmp_path / "imgs"), sensor="s2")
    found = src.search(site, date(2015, 1, 1), date(2018, 1, 1))
    assert [s.time for s in found] == eopatch["times"]
    assert all(s.footprint.contains(site.polygon) for s in found)
    assert len({s.id for s in found}) == N_DATES
    # the range is inclusive days, and ids are stable across searches
    t3 = eopatch["times"][3].date()
    again = src.search(site, t3, t3)
    assert [s.id for s in again] == [found[3].id]
    with pytest.raises(DateError, match="before start"):
        src.search(site, date(2016, 1, 2), date(2016, 1, 1))
    # a glob works as well as a folder; a site elsewhere finds nothing
    assert len(LocalSource(path=str(tmp_path / "imgs" / "scene_0*.tif")).search(site, date(2015, 1, 1),
                                                                                 date(2018, 1, 1))) == 10
    far = make_aoi(tmp_path / "aois", "far", (300000, 4100000, 300500, 4100500), "EPSG:32652")
    assert src.search(far, date(2015, 1, 1), date(2018, 1, 1)) == []


def test_load_reprojects_from_another_crs_onto_the_aoi_grid(tmp_path, eopatch, site):
    """A file in EPSG:4326 lands on the UTM grid with the values of the original pixels."""
    from changedet.io import read_raster, reproject_to, write_geotiff

    [native] = write_series(tmp_path / "native", {**eopatch, "times": eopatch["times"][:1],
                                                  "ndvi": eopatch["ndvi"][:1], "clm": eopatch["clm"][:1]})
    da = read_raster(native)
    from rasterio.crs import CRS

    ll = da.rio.reproject(CRS.from_epsg(4326))
    (tmp_path / "ll").mkdir()
    write_geotiff(ll, tmp_path / "ll" / "S2A_20150711T100008_ll.tif", cog=False)
    src = LocalSource(path=str(tmp_path / "ll"), sensor="s2")
    [scene] = src.search(site, date(2015, 7, 11), date(2015, 7, 11))
    assert scene.time == datetime(2015, 7, 11, 10, 0, 8, tzinfo=timezone.utc)  # from the name
    grid = aoi_grid(site, 10.0)
    got = src.load(scene, grid)
    assert got.dims == ("band", "y", "x") and list(got["band"].values) == ["NDVI", "CLM"]
    assert got.rio.crs.to_epsg() == 32633 and got.shape[1:] == grid.shape
    want = reproject_to(read_raster(native), grid)
    inside = site_mask(site, grid)
    err = np.abs(got.sel(band="NDVI").values - want.sel(band="NDVI").values)[inside]
    assert np.nanmedian(err) < 0.03  # two resamplings of real NDVI, 10 m pixels
    assert set(np.unique(got.sel(band="CLM").values[inside])) <= {0.0, 1.0}  # masks stay classes


def test_jpeg2000_with_date_in_name(test_data, tmp_path):
    jp2 = test_data("arosics_s2_pair/ref_S2A_20160608T153121_T33UUU_sub.jp2")
    aoi = make_aoi(tmp_path / "aois", "uuu", (340000, 5840000, 341000, 5841000), "EPSG:32633")
    src = get_source("local", path=str(jp2.parent / "*.jp2"), sensor="s2", bands=["B04"])
    found = src.search(aoi, date(2016, 5, 1), date(2016, 6, 30))
    assert [s.time for s in found] == [datetime(2016, 5, 29, 15, 36, 31, tzinfo=timezone.utc),
                                      datetime(2016, 6, 8, 15, 31, 21, tzinfo=timezone.utc)]
    grid = aoi_grid(aoi, 10.0)
    da = src.load(found[1], grid)
    assert list(da["band"].values) == ["B04"] and da.shape == (1,) + grid.shape
    with rasterio.open(jp2) as f:
        win = f.window(*grid.bounds)
        raw = f.read(1, window=win).astype("float32") * 1e-4
    np.testing.assert_allclose(da.values[0], raw, atol=1e-6)  # same grid: pixels unchanged, scaled to reflectance
    # a pattern wins over metadata and the default name parser
    pat = LocalSource(path=str(jp2.parent), pattern=r"_(?P<date>\d{8})T(?P<time>\d{6})_", bands=["B04"])
    assert [s.time.date() for s in pat.search(aoi, date(2016, 1, 1), date(2016, 12, 31))] == [
        date(2016, 5, 29), date(2016, 6, 8)]


def test_fetch_masks_clouds_and_records_skipped_scenes(tmp_path, eopatch, site):
    """Stored dates are exactly those whose site cloud fraction (from the real masks) is within the limit."""
    write_series(tmp_path / "imgs", eopatch)
    grid = aoi_grid(site, 10.0)
    inside = site_mask(site, grid)
    x0, y1 = eopatch["bounds"][0], eopatch["bounds"][3]
    r0, c0 = int(round((y1 - grid.bounds[3]) / 10)), int(round((grid.bounds[0] - x0) / 10))
    window = eopatch["clm"][:, r0:r0 + grid.shape[0], c0:c0 + grid.shape[1]]
    truth = [float(window[k][inside].mean()) for k in range(N_DATES)]
    limit = 30.0
    seen = []
    report = fetch(site, LocalSource(path=str(tmp_path / "imgs"), sensor="s2"), sensor="s2", resolution_m=10.0,
                   start=date(2015, 1, 1), end=date(2017, 12, 31), data_dir=tmp_path / "data", max_cloud=limit,
                   progress=lambda i, n, o: seen.append((i, n, o.status)))
    assert [s[0] for s in seen] == list(range(1, N_DATES + 1)) and seen[-1][1] == N_DATES
    statuses = [o.status for o in report.outcomes]
    expected = ["stored" if f * 100 <= limit else "skipped" for f in truth]
    assert statuses == expected
    assert 3 <= expected.count("skipped") <= N_DATES - 3  # the real series has both
    for o, f in zip(report.outcomes, truth):
        assert o.cloud_fraction == pytest.approx(f, abs=1e-3) and o.cloud_mask == "clm"
    cube = Cube(tmp_path / "data", "eo_site", "s2", grid, product="acquired")
    assert len(cube.scenes()) == expected.count("stored")
    skipped = cube.skipped()
    assert len(skipped) == expected.count("skipped")
    assert all("limit" in s["reason"] or "all cloud" in s["reason"] for s in skipped)
    overcast = [s for s, f in zip(report.outcomes, truth) if f == 1.0]
    assert overcast and all(o.reason.startswith("all cloud") for o in overcast)
    stored = cube.read()
    assert list(stored["band"].values) == ["NDVI", "CLM"]
    # a second fetch stores nothing new
    again = fetch(site, LocalSource(path=str(tmp_path / "imgs"), sensor="s2"), sensor="s2", resolution_m=10.0,
                  start=date(2015, 1, 1), end=date(2017, 12, 31), data_dir=tmp_path / "data", max_cloud=limit)
    assert again.count("stored") == 0 and again.count("already") == expected.count("stored")
    assert len(Cube(tmp_path / "data", "eo_site", "s2", grid, product="acquired").scenes()) == expected.count("stored")


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_bad_files_give_clear_errors_and_store_nothing(tmp_path, eopatch, site):
    paths = write_series(tmp_path / "imgs", {**eopatch, "times": eopatch["times"][:2],
                                             "ndvi": eopatch["ndvi"][:2], "clm": eopatch["clm"][:2]})
    data = tmp_path / "data"

    def run(folder):
        return fetch(site, LocalSource(path=str(folder), sensor="s2"), sensor="s2", resolution_m=10.0,
                     start=date(2015, 1, 1), end=date(2017, 12, 31), data_dir=data)

    # no CRS
    nocrs = tmp_path / "nocrs"
    nocrs.mkdir()
    with rasterio.open(nocrs / "x_20150711.tif", "w", driver="GTiff", height=8, width=8, count=1,
                       dtype="uint16") as dst:
        dst.write(np.ones((1, 8, 8), "uint16"))
    with pytest.raises(SourceError, match="has no CRS") as err:
        run(nocrs)
    assert "x_20150711.tif" in str(err.value)
    # corrupt (not a raster at all)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scene_20150711.tif").write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(SourceError, match="cannot be read as a raster"):
        run(bad)
    # truncated: header fine, pixels cut off
    cut = tmp_path / "cut"
    cut.mkdir()
    blob = paths[0].read_bytes()
    (cut / "scene_00.tif").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SourceError, match="scene_00.tif"):
        run(cut)
    # no date anywhere
    nodate = tmp_path / "nodate"
    nodate.mkdir()
    with rasterio.open(nodate / "image.tif", "w", driver="GTiff", height=8, width=8, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(*eopatch["bounds"][::3], 10, 10)) as dst:
        dst.write(np.ones((1, 8, 8), "uint16"))
    with pytest.raises(SourceError, match="no acquisition date.*pattern"):
        run(nodate)
    # empty folder, and a search that finds nothing
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no GeoTIFF"):
        run(tmp_path / "empty")
    with pytest.raises(SourceError, match="has no s2 scene over eo_site"):
        fetch(site, LocalSource(path=str(tmp_path / "imgs")), sensor="s2", resolution_m=10.0,
              start=date(2020, 1, 1), end=date(2020, 2, 1), data_dir=data)
    with pytest.raises(DateError):
        fetch(site, LocalSource(path=str(tmp_path / "imgs")), sensor="s2", resolution_m=10.0,
              start=date(2020, 2, 1), end=date(2020, 1, 1), data_dir=data)
    assert _listing(data) == []  # nothing stored, not even a lock file


@pytest.mark.parametrize("name, expected", [
    ("S2A_20160529T153631_B04.tif", datetime(2016, 5, 29, 15, 36, 31, tzinfo=timezone.utc)),
    ("order_10020304.tif", None),                       # an order number, not the year 1002
    ("order_10020304_2024-05-12.tif", datetime(2024, 5, 12, tzinfo=timezone.utc)),
    ("tile_20231399_20240512.tif", datetime(2024, 5, 12, tzinfo=timezone.utc)),  # month 13: not a date
    ("vhr_1985-07-04.tif", datetime(1985, 7, 4, tzinfo=timezone.utc)),
])
def test_date_from_file_name(name, expected):
    from changedet.sources.local import _name_time

    assert _name_time(name, None) == expected
