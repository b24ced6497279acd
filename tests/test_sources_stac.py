"""STAC source against a local STAC API (tests/stac_server.py) on 127.0.0.1 whose items point
at COGs made from the OSCD Sentinel-2 scenes of Paris-Bercy: paging, solar-day grouping
(two tiles of one overpass make one scene), scale/offset, SCL masking, and errors."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import yaml
from rasterio.warp import Resampling, reproject, transform_bounds
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

from changedet.acquire import fetch, site_mask
from changedet.aoi import load_aoi
from changedet.cube import Cube
from changedet.errors import DateError, SourceError
from changedet.grid import GridSpec, aoi_grid
from changedet.sources import get_source
from changedet.sources.stac import StacSource, solar_day
from stac_server import StacServer

UTM = "EPSG:32631"
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
CITY = "oscd_sentinel2/images/bercy"


def make_aoi(registry: Path, aoi_id: str, bounds, crs):
    to_ll = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    poly = shp_transform(to_ll, box(*bounds))
    registry.mkdir(parents=True, exist_ok=True)
    (registry / f"{aoi_id}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"role": "site", "id": aoi_id}, "geometry": mapping(poly)}]}))
    (registry / f"{aoi_id}.yaml").write_text(yaml.safe_dump({
        "id": aoi_id, "name": aoi_id, "kind": "depot", "timezone": "UTC", "cadence": "weekly",
        "sources": [{"name": "stac", "sensor": "s2", "resolution_m": 10}], "metrics": ["changed_area_m2"]}))
    return load_aoi(aoi_id, registry=registry)


def _write_cog(path: Path, data: np.ndarray, grid: GridSpec, dtype: str) -> None:
    tmp = path.with_suffix(".plain.tif")
    with rasterio.open(tmp, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1, dtype=dtype,
                       crs=grid.crs.to_wkt(), transform=grid.transform, nodata=0) as dst:
        dst.write(data.astype(dtype), 1)
    with rasterio.open(tmp) as src:
        profile = src.profile | {"driver": "COG", "compress": "DEFLATE"}
        profile.pop("tiled", None), profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read())
    tmp.unlink()


def _item(item_id: str, t: str, grid: GridSpec, files: dict[str, str], *, cloud: float, offset: float) -> dict:
    b = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)
    assets = {}
    for key, href in files.items():
        scl = key == "scl"
        assets[key] = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                       "roles": ["data"], "proj:shape": list(grid.shape), "proj:transform": list(grid.transform)[:6],
                       "raster:bands": [{"nodata": 0, "data_type": "uint8" if scl else "uint16",
                                         **({} if scl else {"scale": 0.0001, "offset": offset})}]}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "geometry": mapping(box(*b)), "bbox": list(b),
            "properties": {"datetime": t, "platform": "sentinel-2a", "eo:cloud_cover": cloud, "proj:epsg": 32631},
            "assets": assets, "links": []}


@pytest.fixture(scope="module")
def catalogue(test_data, tmp_path_factory):
    """COGs on a 10 m UTM grid from both Bercy dates; the first date split into two overlapping tiles."""
    city = test_data(CITY)
    out = tmp_path_factory.mktemp("stac")
    with rasterio.open(next((city / "imgs_1").glob("*_B02.tif"))) as src:
        full = GridSpec.from_bounds(UTM, transform_bounds(src.crs, UTM, *src.bounds, densify_pts=21), 10.0)
    dn: dict[int, dict[str, np.ndarray]] = {}
    for k in (1, 2):
        dn[k] = {}
        for band in BANDS:
            with rasterio.open(next((city / f"imgs_{k}").glob(f"*_{band}.tif"))) as src:
                dst = np.zeros(full.shape, "uint16")
                reproject(src.read(1), dst, src_transform=src.transform, src_crs=src.crs, dst_transform=full.transform,
                          dst_crs=full.crs.to_wkt(), resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
                dn[k][band] = dst
    # Scene classification: vegetation (4) everywhere, thick cloud (9), shadow (3) and no data (0) blocks.
    scl = np.full(full.shape, 4, "uint8")
    r0, c0 = full.shape[0] // 2, full.shape[1] // 2
    scl[r0 - 40:r0 - 10, c0 - 30:c0 + 10] = 9
    scl[r0 - 10:r0, c0 - 30:c0 + 10] = 3
    scl[r0 + 20:r0 + 30, c0 - 30:c0 - 20] = 0
    rows, cols = full.shape
    half = cols // 2
    tiles = {"west": (0, half + 20), "east": (half - 20, cols)}  # overlapping by 40 px
    items = []
    for name, (ca, cb) in tiles.items():
        t_grid = GridSpec(full.crs, full.transform * __import__("affine").Affine.translation(ca, 0), (rows, cb - ca))
        files = {}
        for band, key in BANDS.items():
            _write_cog(out / f"d1_{name}_{band}.tif", dn[1][band][:, ca:cb], t_grid, "uint16")
            files[key] = f"d1_{name}_{band}.tif"
        _write_cog(out / f"d1_{name}_scl.tif", scl[:, ca:cb], t_grid, "uint8")
        files["scl"] = f"d1_{name}_scl.tif"
        second = "05" if name == "east" else "00"
        items.append(_item(f"S2A_31UDQ_20161130_{name}", f"2016-11-30T10:57:{second}Z", t_grid, files,
                           cloud=20.0, offset=0.0))
    # Date 2 in processing baseline >= 04.00 form: DN + 1000 with offset -0.1.
    files = {}
    for band, key in BANDS.items():
        shifted = np.where(dn[2][band] > 0, dn[2][band].astype("int32") + 1000, 0)
        _write_cog(out / f"d2_{band}.tif", shifted, full, "uint16")
        files[key] = f"d2_{band}.tif"
    _write_cog(out / "d2_scl.tif", np.full(full.shape, 5, "uint8"), full, "uint8")
    files["scl"] = "d2_scl.tif"
    items.append(_item("S2B_31UDQ_20170829", "2017-08-29T10:50:19Z", full, files, cloud=3.0, offset=-0.1))
    items.append(_item("S2B_31UDQ_20171010", "2017-10-10T10:50:19Z", full, files, cloud=90.0, offset=-0.1))
    return {"items": items, "files": out, "full": full, "dn": dn, "scl": scl, "r0c0": (r0, c0)}


@pytest.fixture
def server(catalogue):
    with StacServer(catalogue["items"], catalogue["files"], page_size=2) as srv:
        yield srv


@pytest.fixture
def site(tmp_path, catalogue):
    """A 1.2 x 1.2 km site across the tile seam and over the cloud block."""
    full = catalogue["full"]
    r0, c0 = catalogue["r0c0"]
    x, y = full.xy(r0, c0)
    return make_aoi(tmp_path / "aois", "bercy", (x - 600, y - 600, x + 600, y + 600), UTM)


def test_search_pages_and_groups_by_solar_day(server, site):
    src = get_source("stac", url=server.url)
    found = src.search(site, date(2016, 1, 1), date(2017, 12, 31))
    assert [s.properties["solar_day"] for s in found] == ["2016-11-30", "2017-08-29", "2017-10-10"]
    assert found[0].properties["item_ids"] == ["S2A_31UDQ_20161130_east", "S2A_31UDQ_20161130_west"]
    assert found[0].time == datetime(2016, 11, 30, 10, 57, tzinfo=timezone.utc)
    assert sum(1 for m, p in server.requests if p.startswith("/search")) >= 2  # 4 items, 2 per page
    # the catalogue cloud filter, the date range, ids stable across searches
    assert [s.id for s in src.search(site, date(2016, 1, 1), date(2017, 12, 31), max_cloud=50)] == \
        [s.id for s in found[:2]]
    assert [s.id for s in src.search(site, date(2017, 8, 29), date(2017, 8, 29))] == [found[1].id]
    with pytest.raises(DateError):
        src.search(site, date(2017, 1, 2), date(2017, 1, 1))
    # solar day: 23:30 UTC at 150 E is the next local day
    assert solar_day(datetime(2020, 1, 1, 23, 30, tzinfo=timezone.utc), 150.0) == date(2020, 1, 2)


def test_load_mosaics_tiles_and_applies_scale_and_offset(server, site, catalogue):
    src = StacSource(url=server.url)
    d1, d2, _ = src.search(site, date(2016, 1, 1), date(2017, 12, 31))
    grid = aoi_grid(site, 10.0)
    full = catalogue["full"]
    # the AOI grid is aligned to the COG grid (both multiples of 10 m in UTM 31N): a pixel copy
    r = int(round((full.transform.f - grid.transform.f) / 10.0))
    c = int(round((grid.transform.c - full.transform.c) / 10.0))
    win = (slice(r, r + grid.shape[0]), slice(c, c + grid.shape[1]))
    a = src.load(d1, grid)
    assert a.dims == ("band", "y", "x") and list(a["band"].values) == ["B02", "B03", "B04", "B08", "SCL"]
    assert GridSpec.of(a).same_as(grid) and a.rio.crs.to_epsg() == 32631
    for band in BANDS:
        want = catalogue["dn"][1][band][win].astype("float32") * np.float32(1e-4)
        want[catalogue["dn"][1][band][win] == 0] = np.nan
        np.testing.assert_allclose(a.sel(band=band).values, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.nan_to_num(a.sel(band="SCL").values), catalogue["scl"][win])
    b = src.load(d2, grid)
    for band in BANDS:  # DN + 1000 with offset -0.1 is the same reflectance
        np.testing.assert_allclose(b.sel(band=band).values, catalogue["dn"][2][band][win] * 1e-4, atol=1e-6)


def test_fetch_masks_scl_clouds_and_skips_cloudy_days(server, site, catalogue, tmp_path):
    grid = aoi_grid(site, 10.0)
    inside = site_mask(site, grid)
    full = catalogue["full"]
    r = int(round((full.transform.f - grid.transform.f) / 10.0))
    c = int(round((grid.transform.c - full.transform.c) / 10.0))
    scl = catalogue["scl"][r:r + grid.shape[0], c:c + grid.shape[1]]
    observed = inside & (scl != 0)
    want_frac = float(np.isin(scl, (3, 9))[observed].mean())
    assert 0.05 < want_frac < 0.5
    src = StacSource(url=server.url)
    data = tmp_path / "data"
    # limit below the site's cloud on 2016-11-30: skipped with the reason, 2017-08-29 stored;
    # the 2017-10-10 item points at the very same files: same pixels, not stored twice
    rep = fetch(site, src, sensor="s2", resolution_m=10.0, start=date(2016, 1, 1), end=date(2017, 12, 31),
                data_dir=data, max_cloud=100 * want_frac / 2)
    assert [o.status for o in rep.outcomes] == ["skipped", "stored", "duplicate"]
    assert "identical pixels" in rep.outcomes[2].reason
    assert rep.outcomes[0].cloud_fraction == pytest.approx(want_frac, abs=1e-3)
    assert rep.outcomes[0].cloud_mask == "scl" and "under cloud" in rep.outcomes[0].reason
    cube = Cube(data, "bercy", "s2", grid, product="acquired")
    [skipped] = cube.skipped()
    assert skipped["scene_id"] == rep.outcomes[0].scene_id and "limit" in skipped["reason"]
    # a higher limit stores it; the CLM band follows SCL and no-data pixels are NaN in every band
    rep2 = fetch(site, src, sensor="s2", resolution_m=10.0, start=date(2016, 11, 30), end=date(2016, 11, 30),
                 data_dir=data, max_cloud=100 * want_frac + 5)
    assert [o.status for o in rep2.outcomes] == ["stored"]
    assert cube.skipped() == []  # stored now
    stack = cube.read()
    assert list(stack["band"].values) == ["B02", "B03", "B04", "B08", "CLM"]
    first = stack.isel(time=0).load()
    clm = first.sel(band="CLM").values
    np.testing.assert_array_equal(clm[scl == 9], 1.0)
    np.testing.assert_array_equal(clm[scl == 3], 1.0)
    np.testing.assert_array_equal(clm[scl == 4], 0.0)
    assert np.isnan(first.sel(band="B04").values[scl == 0]).all()
    assert np.isnan(clm[scl == 0]).all()
    assert cube.scenes()[0]["cloud_fraction"] == pytest.approx(want_frac, abs=1e-3)


def test_errors_are_clear(server, site, tmp_path, catalogue):
    src = StacSource(url=server.url)
    far = make_aoi(tmp_path / "aois", "far", (300000, 4100000, 300500, 4100500), "EPSG:32652")
    with pytest.raises(SourceError, match="has no s2 scene over far"):
        fetch(far, src, sensor="s2", resolution_m=10.0, start=date(2016, 1, 1), end=date(2017, 12, 31),
              data_dir=tmp_path / "data")
    server.fail_next = [500]
    with pytest.raises(SourceError, match="STAC search of sentinel-2-l2a .* failed"):
        src.search(site, date(2016, 1, 1), date(2017, 12, 31))
    with pytest.raises(SourceError, match="cannot open the STAC API at http://127.0.0.1:9/"):
        StacSource(url="http://127.0.0.1:9/").search(site, date(2016, 1, 1), date(2016, 2, 1))
    # an asset href that is gone: the item is fetched again from the catalogue, whose href loads
    scene = src.search(site, date(2017, 8, 29), date(2017, 8, 29))[0]
    broken = dict(scene.properties)
    broken["items"] = json.loads(json.dumps(broken["items"]).replace("d2_B04.tif", "missing_B04.tif"))
    from dataclasses import replace

    from changedet.errors import SourceUnavailable

    assert np.isfinite(src.load(replace(scene, properties=broken), aoi_grid(site, 10.0)).values).any()
    # gone at the catalogue's href too: it may pass (replication lag), the message naming the scene
    # and asset; nothing is stored
    server.items = json.loads(json.dumps(server.items).replace("d2_B04.tif", "missing_B04.tif"))
    with pytest.raises(SourceUnavailable, match=rf"scene {scene.id}: asset '\w+' of item S2B_31UDQ_20170829 "
                                                "was missing \(HTTP 404\)"):
        src.load(replace(scene, properties=broken), aoi_grid(site, 10.0))
    assert not (tmp_path / "data").exists()
