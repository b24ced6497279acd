"""Sentinel Hub source: the real ``sentinelhub`` client against a local fake of the APIs.

The fake (tests/sh_server.py) serves real Sentinel-2 bands (OSCD, Paris-Bercy), real
aerial imagery as a BYOC collection (NAIP) and simulator Sentinel-1 output, runs each
request's evalscript in Node.js, and injects 429, 500, expired tokens and malformed replies.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject
from shapely.geometry import box

sys.path.insert(0, str(Path(__file__).parent))
from sh_server import FakeSentinelHub, Scene, scene_from_files  # noqa: E402

from changedet.errors import DateError, SourceError  # noqa: E402
from changedet.grid import GridSpec  # noqa: E402
from changedet.sources import sh_evalscripts as es  # noqa: E402
from changedet.sources.sentinelhub import DEPLOYMENTS, SentinelHubSource, SHSettings  # noqa: E402

SECRET = "s3cr3t/Sh+hub=XYZ"
CLIENT = "changedet-test"
S2_BANDS = ("B02", "B03", "B04", "B08")
BERCY = "oscd_sentinel2/images/bercy"
T1 = datetime(2016, 11, 30, 10, 57, 42, tzinfo=timezone.utc)
T2 = datetime(2017, 8, 29, 10, 50, 19, tzinfo=timezone.utc)
S1_DAY = date(2023, 6, 3)
BYOC = "1a2b3c4d-0000-4e5f-8a9b-naip"


def _band_files(folder: Path) -> dict[str, Path]:
    return {b: next(folder.glob(f"*_{b}.tif")) for b in S2_BANDS}


def _scl_for(shape: tuple[int, int]) -> np.ndarray:
    """A scene classification layer: vegetation (4), a cloud (9), its shadow (3), thin cirrus
    (10), snow (11, not cloud) and a no-data strip (0) along the southern edge."""
    scl = np.full(shape, 4.0, dtype="float32")
    scl[60:120, 40:110] = 9
    scl[125:150, 60:130] = 3
    scl[200:230, 200:260] = 10
    scl[240:270, 20:80] = 11
    scl[-25:] = 0
    return scl


@pytest.fixture(scope="module")
def hub(test_data):
    bercy = test_data(BERCY)
    naip = test_data("naip_timeseries_nd/m_4709963_se_14_1_20180716.tif")
    server = FakeSentinelHub(client_id=CLIENT, client_secret=SECRET)
    # Real Sentinel-2 bands (DN / 10000 = reflectance, as the Process API's REFLECTANCE units).
    for folder, when, cloud, sid in (("imgs_1", T1, 12.5, "S2A_MSIL2A_20161130_T31UDQ"),
                                     ("imgs_2", T2, 55.0, "S2B_MSIL2A_20170829_T31UDQ")):
        scene = scene_from_files(_band_files(bercy / folder), scale=1e-4, id=sid, collection="sentinel-2-l2a",
                                 time=when, platform="sentinel-2a" if sid.startswith("S2A") else "sentinel-2b",
                                 cloud_cover=cloud)
        scl = _scl_for(scene.bands["B02"].shape)
        scene.bands["SCL"] = scl
        clm = np.isin(scl, es.SCL_CLOUDY).astype("float32")
        clm[200:230, 200:260] = 0  # s2cloudless misses the cirrus that SCL flags: the two masks differ there
        clm[scl == 0] = 255
        scene.bands["CLM"] = clm
        server.add_scene(scene)
    # Two more catalogue entries (same pixels) so paging and the cloud filter have work to do.
    for i, cloud in enumerate((3.0, 80.0, 29.9)):
        base = server.scenes[0]
        when = datetime(2016, 12, 1 + i * 3, 10, 57, tzinfo=timezone.utc)
        server.add_scene(Scene(id=f"S2A_MSIL2A_{when:%Y%m%d}_T31UDQ", collection="sentinel-2-l2a",
                               time=when, platform="sentinel-2a",
                               crs=base.crs, transform=base.transform, bands=base.bands, cloud_cover=cloud))
    # One pass delivered as two granules (west and east halves), as tiles of one datastrip are.
    base = server.scenes[0]
    half = base.bands["B02"].shape[1] // 2
    for part, cols, cloud in (("W", slice(0, half), 10.0), ("E", slice(half, None), 20.0)):
        shift = base.transform @ Affine.translation(cols.start or 0, 0)
        server.add_scene(Scene(id=f"S2A_MSIL2A_20190505_T31UDQ_{part}", collection="sentinel-2-l2a",
                               time=datetime(2019, 5, 5, 10, 50, 59, tzinfo=timezone.utc) + timedelta(seconds=0 if part == "W" else 3),
                               platform="sentinel-2a", crs=base.crs, transform=shift,
                               bands={k: v[:, cols] for k, v in base.bands.items()}, cloud_cover=cloud))
    # Simulator Sentinel-1 (linear sigma0) over a shipped AOI.
    from changedet.aoi import load_aoi
    from changedet.simulate.render import render_scene

    aoi = load_aoi("tumangang_railyard")
    sim = render_scene(aoi, S1_DAY, "s1", seed=0, resolution_m=10.0)
    server.add_scene(Scene(id="S1A_IW_GRDH_1SDV_20230603", collection="sentinel-1-grd",
                           time=datetime(2023, 6, 3, 21, 40, 12, tzinfo=timezone.utc), platform="sentinel-1a",
                           crs=sim.grid.crs.to_string(), transform=sim.grid.transform,
                           bands={b: sim.data[i].astype("float32") for i, b in enumerate(sim.bands)},
                           extra={"sar:instrument_mode": "IW", "s1:polarization": "DV", "s1:resolution": "HIGH",
                                  "sat:orbit_state": "descending"}))
    # Real aerial imagery (NAIP, 4 bands, 5 m) as a commercial BYOC collection.
    with rasterio.open(naip) as src:
        server.add_scene(Scene(id="naip-20180716", collection=f"byoc-{BYOC}",
                               time=datetime(2018, 7, 16, 17, 0, tzinfo=timezone.utc), platform="naip",
                               crs=src.crs.to_string(), transform=src.transform,
                               bands={b: src.read(i + 1).astype("float32") for i, b in
                                      enumerate(("Red", "Green", "Blue", "NIR"))},
                               cloud_cover=0.0, gsd=5.0))
    server.sim = SimpleNamespace(aoi=aoi, scene=sim)
    with server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, hub):
    """Plain HTTP on loopback; no session, failure or count carried over between tests."""
    from sentinelhub import SentinelHubDownloadClient

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    SentinelHubDownloadClient.clear_cache()
    hub.reset_counts()
    hub._failures.clear()
    yield
    SentinelHubDownloadClient.clear_cache()


@pytest.fixture
def make(hub, tmp_path):
    def factory(**options):
        options.setdefault("cache_dir", tmp_path / "cache")
        options.setdefault("retry_sleep_s", 0.01)
        options.setdefault("download_attempts", 3)
        return SentinelHubSource(SHSettings(CLIENT, SECRET, hub.url, hub.token_url), **options)

    return factory


def _bercy():
    return SimpleNamespace(id="bercy", polygon=box(2.362, 48.818, 2.398, 48.862))


def _bercy_grid(resolution: float = 10.0) -> GridSpec:
    """UTM 31N grid over Bercy reaching past the scene's southern edge (no-data strip and beyond)."""
    tr = pyproj.Transformer.from_crs(4326, 32631, always_xy=True)
    x0, y0 = tr.transform(2.362, 48.818)
    x1, y1 = tr.transform(2.398, 48.862)
    return GridSpec.from_bounds(32631, (x0, y0, x1, y1), resolution)


def _expected(scene: Scene, name: str, grid: GridSpec) -> np.ndarray:
    """The band resampled onto the grid independently of the client (nearest, NaN outside)."""
    out = np.full(grid.shape, np.nan, dtype="float32")
    reproject(scene.bands[name], out, src_transform=scene.transform, src_crs=scene.crs, dst_transform=grid.transform,
              dst_crs=grid.crs.to_wkt(), resampling=Resampling.nearest, src_nodata=np.nan, dst_nodata=np.nan)
    return out


def _record(src, sensor="s2", start=date(2016, 11, 1), end=date(2016, 11, 30), aoi=None):
    records = src.search(aoi or _bercy(), start, end, sensor=sensor)
    assert len(records) == 1
    return records[0]


# -- configuration ---------------------------------------------------------------------------

def test_settings_never_show_the_secret(hub, make):
    settings = SHSettings(CLIENT, SECRET, hub.url, hub.token_url)
    src = make()
    for text in (repr(settings), str(settings), repr(src), str(src), repr(src._config), str(src._config)):
        assert SECRET not in text
    assert CLIENT in repr(settings)


def test_from_env_presets_and_missing_credentials():
    cdse = SHSettings.from_env({"SH_CLIENT_ID": "a", "SH_CLIENT_SECRET": "b", "CHANGEDET_SH_DEPLOYMENT": "cdse"})
    assert (cdse.base_url, cdse.token_url) == DEPLOYMENTS["cdse"]
    assert cdse.base_url == "https://sh.dataspace.copernicus.eu"
    assert cdse.token_url.startswith("https://identity.dataspace.copernicus.eu/auth/realms/CDSE/")
    default = SHSettings.from_env({"SH_CLIENT_ID": "a", "SH_CLIENT_SECRET": "b"})
    assert default.base_url == "https://services.sentinel-hub.com"
    custom = SHSettings.from_env({"SH_CLIENT_ID": "a", "SH_CLIENT_SECRET": "b", "SH_BASE_URL": "http://x/",
                                  "SH_TOKEN_URL": "http://x/token"})
    assert (custom.base_url, custom.token_url) == ("http://x", "http://x/token")
    with pytest.raises(SourceError, match="SH_CLIENT_ID and SH_CLIENT_SECRET"):
        SHSettings.from_env({"SH_CLIENT_ID": "a"})
    with pytest.raises(SourceError, match="not a known deployment"):
        SHSettings.from_env({"SH_CLIENT_ID": "a", "SH_CLIENT_SECRET": "b", "CHANGEDET_SH_DEPLOYMENT": "mars"})


def test_profile_from_sentinelhub_config(tmp_path, monkeypatch):
    import tomli_w

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_BASE_URL", "SH_TOKEN_URL", "CHANGEDET_SH_DEPLOYMENT"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "sentinelhub").mkdir()
    (tmp_path / "sentinelhub" / "config.toml").write_bytes(tomli_w.dumps({
        "default-profile": {},
        "cdse": {"sh_client_id": "pid", "sh_client_secret": SECRET, "sh_base_url": DEPLOYMENTS["cdse"][0],
                 "sh_token_url": DEPLOYMENTS["cdse"][1]}}).encode())
    settings = SHSettings.from_env(profile="cdse")
    assert (settings.client_id, settings.client_secret, settings.base_url) == ("pid", SECRET, DEPLOYMENTS["cdse"][0])
    with pytest.raises(SourceError, match="profile 'nope' is not in"):
        SHSettings.from_env(profile="nope")


def test_wrong_secret_is_a_clear_error_without_the_secret(hub, make):
    src = SentinelHubSource(SHSettings(CLIENT, "wrong" + SECRET, hub.url, hub.token_url), cache_dir=None)
    with pytest.raises(SourceError) as err:
        src.search(_bercy(), date(2016, 11, 1), date(2016, 11, 30), sensor="s2")
    message = str(err.value)
    assert "SH_CLIENT_SECRET" in message and CLIENT in message and hub.token_url in message
    assert SECRET not in message


def test_plain_http_token_url_needs_an_explicit_opt_in(hub, make, monkeypatch):
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")
    with pytest.raises(SourceError, match="plain http.*OAUTHLIB_INSECURE_TRANSPORT=1"):
        make().search(_bercy(), date(2016, 11, 1), date(2016, 11, 30), sensor="s2")


def test_secret_absent_from_debug_logs(hub, make, caplog):
    caplog.set_level(logging.DEBUG)
    src = make()
    src.load(_record(src), _bercy_grid(20.0))
    # requests_oauthlib logged the token request body, secret included; the filter blanked it.
    assert "client_secret=***" in caplog.text
    assert SECRET not in caplog.text
    from urllib.parse import quote_plus

    assert quote_plus(SECRET) not in caplog.text


def test_collections_are_bound_to_the_configured_url(hub, make):
    src = make(byoc_id=BYOC)
    for sensor in ("s2", "s1", "vhr"):
        assert src._collection(sensor).service_url == hub.url
    assert src._collection("vhr").api_id == f"byoc-{BYOC}"
    other = SentinelHubSource(SHSettings.deployment("cdse", "a", "b"))
    assert other._collection("s2").service_url == "https://sh.dataspace.copernicus.eu"


# -- catalog ---------------------------------------------------------------------------------

def test_search_filters_cloud_and_pages(hub, make):
    src = make(page_size=2)
    records = src.search(_bercy(), date(2016, 11, 1), date(2017, 12, 31), sensor="s2", max_cloud=30)
    assert [r.id for r in records] == ["S2A_MSIL2A_20161130_T31UDQ", "S2A_MSIL2A_20161201_T31UDQ",
                                       "S2A_MSIL2A_20161207_T31UDQ"]
    assert [r.cloud_cover for r in records] == [12.5, 3.0, 29.9]
    assert hub.hits["catalog"] == 2  # three matches at two per page
    assert "eo:cloud_cover <= 30" in hub.bodies["catalog"][0]["filter"]
    assert hub.bodies["catalog"][1]["next"] == 2
    first = records[0]
    assert first.time == T1 and first.platform == "sentinel-2a" and first.resolution_m == 10.0
    assert first.source == "sentinelhub" and first.sensor == "s2" and first.aoi_id == "bercy"
    assert first.footprint.contains(_bercy().polygon.centroid)
    everything = src.search(_bercy(), date(2016, 11, 1), date(2017, 12, 31), sensor="s2")
    assert len(everything) == 5 and "filter" not in hub.bodies["catalog"][-1]  # the 2019 pass is outside
    assert src.search(_bercy(), date(2015, 1, 1), date(2015, 2, 1), sensor="s2") == []
    with pytest.raises(DateError):
        src.search(_bercy(), date(2017, 1, 1), date(2016, 1, 1), sensor="s2")


def test_granules_of_one_pass_are_one_scene(hub, make):
    records = make().search(_bercy(), date(2019, 5, 1), date(2019, 5, 10), sensor="s2")
    assert len(records) == 1
    rec = records[0]
    assert rec.properties["item_ids"] == ["S2A_MSIL2A_20190505_T31UDQ_E", "S2A_MSIL2A_20190505_T31UDQ_W"]
    assert rec.cloud_cover == 20.0  # the cloudier granule decides
    assert rec.footprint.contains(_bercy().polygon.centroid)
    assert rec.time == datetime(2019, 5, 5, 10, 50, 59, tzinfo=timezone.utc)  # across a minute boundary


def test_search_s1_uses_collection_filters_and_no_cloud(hub, make):
    src = make()
    rec = _record(src, "s1", date(2023, 6, 1), date(2023, 6, 5), aoi=hub.sim.aoi)
    assert rec.cloud_cover == 0.0 and rec.platform == "sentinel-1a"
    sent = hub.bodies["catalog"][0]["filter"]
    assert "sar:instrument_mode='IW'" in sent and "eo:cloud_cover" not in sent


# -- process ---------------------------------------------------------------------------------

def test_s2_load_places_real_pixels_and_scl_clouds(hub, make):
    src = make()
    grid = _bercy_grid()
    da = src.load(_record(src), grid)
    assert list(da["band"].values) == [*S2_BANDS, "CLM"] and da.rio.crs.to_epsg() == 32631
    assert GridSpec.of(da).same_as(grid)
    scene = hub.scenes[0]
    scl = _expected(scene, "SCL", grid)
    valid = np.isfinite(scl) & (scl != 0)
    assert valid.mean() > 0.5 and (~valid).sum() > 100  # the grid reaches the no-data strip and beyond
    for b in S2_BANDS:
        want = _expected(scene, b, grid)
        np.testing.assert_allclose(da.sel(band=b).values[valid], want[valid], rtol=1e-6)
        assert np.isnan(da.sel(band=b).values[~valid]).all()
    clm = da.sel(band="CLM").values
    np.testing.assert_array_equal(clm[valid], np.isin(scl[valid], es.SCL_CLOUDY).astype("float32"))
    assert np.isnan(clm[~valid]).all()
    assert 0.05 < np.nanmean(clm) < 0.5  # the cloud, shadow and cirrus, not the snow


def test_s2_clm_option_reads_the_cloud_mask_band(hub, make):
    src = make(cloud_band="CLM")
    grid = _bercy_grid()
    da = src.load(_record(src), grid)
    scl = _expected(hub.scenes[0], "SCL", grid)
    cirrus = scl == 10
    assert cirrus.sum() > 50
    assert (da.sel(band="CLM").values[cirrus] == 0).all()  # s2cloudless mask, not SCL
    assert '"CLM"' in hub.bodies["process"][0]["evalscript"]


def test_s1_linear_and_db_orthorectified(hub, make):
    sim = hub.sim.scene
    linear = make().load(_record(make(), "s1", date(2023, 6, 1), date(2023, 6, 5), aoi=hub.sim.aoi), sim.grid)
    np.testing.assert_allclose(linear.sel(band=["VV", "VH"]).values, sim.data, rtol=1e-6)
    assert linear.attrs["units"] == "linear power" and linear.name == "sigma0"
    processing = hub.bodies["process"][0]["input"]["data"][0]["processing"]
    assert processing["orthorectify"] is True and processing["backCoeff"] == "SIGMA0_ELLIPSOID"
    src = make(s1_units="db", backscatter="GAMMA0_TERRAIN", cache=False)
    db = src.load(_record(src, "s1", date(2023, 6, 1), date(2023, 6, 5), aoi=hub.sim.aoi), sim.grid)
    positive = sim.data > 0
    np.testing.assert_allclose(db.values[positive], 10 * np.log10(sim.data[positive]), rtol=1e-5, atol=1e-5)
    assert hub.bodies["process"][-1]["input"]["data"][0]["processing"]["backCoeff"] == "GAMMA0_TERRAIN"


def test_byoc_vhr_by_collection_id(hub, make):
    src = make(collection=f"byoc-{BYOC}", bands=("Red", "Green", "Blue", "NIR"), band_names=("R", "G", "B", "NIR"))
    scene = hub.scenes[-1]
    aoi = SimpleNamespace(id="naip", polygon=scene.footprint.buffer(-0.01))
    rec = src.search(aoi, date(2018, 7, 1), date(2018, 7, 31), sensor="vhr", max_cloud=10)[0]
    assert rec.resolution_m == 5.0 and rec.id == "naip-20180716"
    t = scene.transform
    grid = GridSpec.from_bounds("EPSG:26914", (t.c + 500, t.f - 1500, t.c + 1500, t.f - 500), 5.0)
    da = src.load(rec, grid)
    assert list(da["band"].values) == ["R", "G", "B", "NIR"]
    np.testing.assert_array_equal(da.sel(band="NIR").values, _expected(scene, "NIR", grid))
    assert hub.bodies["process"][0]["input"]["data"][0]["type"] == f"byoc-{BYOC}"
    with pytest.raises(SourceError, match="BYOC"):
        make().search(aoi, date(2018, 7, 1), date(2018, 7, 31), sensor="vhr")


def test_service_rejection_names_the_request_and_reason(hub, make):
    src = make(collection=f"byoc-{BYOC}", bands=("PAN",), cache=False)
    scene = hub.scenes[-1]
    rec = src.search(SimpleNamespace(id="naip", polygon=scene.footprint.buffer(-0.01)), date(2018, 7, 1),
                     date(2018, 7, 31), sensor="vhr")[0]
    t = scene.transform
    grid = GridSpec.from_bounds("EPSG:26914", (t.c + 500, t.f - 1000, t.c + 1000, t.f - 500), 5.0)
    with pytest.raises(SourceError, match=rf"scene {rec.id}.*HTTP 400.*band PAN is not available"):
        src.load(rec, grid)


def test_large_grid_is_tiled_and_mosaicked(hub, make):
    sim = hub.sim.scene
    src = make(max_px=30, cache=False)
    rec = _record(src, "s1", date(2023, 6, 1), date(2023, 6, 5), aoi=hub.sim.aoi)
    hub.reset_counts()
    tiled = src.load(rec, sim.grid)
    rows, cols = sim.grid.shape
    assert hub.hits["process"] == math.ceil(rows / 30) * math.ceil(cols / 30) >= 6
    assert max(max(b["output"]["width"], b["output"]["height"]) for b in hub.bodies["process"]) <= 30
    # Same CRS and pixel grid as the served raster: every pixel must land exactly in place.
    np.testing.assert_array_equal(tiled.values, sim.data.astype("float32"))


def test_tiled_s2_matches_one_request(hub, make):
    grid = _bercy_grid(20.0)
    whole = make(cache=False).load(_record(make()), grid)
    tiled = make(max_px=100, cache=False).load(_record(make()), grid)
    same = (tiled.values == whole.values) | (np.isnan(tiled.values) & np.isnan(whole.values))
    # Only the server's nearest-neighbour picks along tile seams may differ (GDAL's warper).
    assert same.mean() > 0.99


def test_second_load_is_served_from_the_cache(hub, make, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="changedet.sources.sentinelhub")
    src = make(max_px=128)
    rec, grid = _record(src), _bercy_grid(20.0)
    first = src.load(rec, grid)
    sent = hub.hits["process"]
    assert sent > 1 and "estimated" in caplog.text and "PU" in caplog.text
    from sentinelhub import SentinelHubDownloadClient

    SentinelHubDownloadClient.clear_cache()  # as in a new process: no session either
    requests_so_far = sum(hub.hits.values())
    again = make(max_px=128).load(rec, grid)  # a new source object: only the disk cache is shared
    assert hub.hits["process"] == sent and sum(hub.hits.values()) == requests_so_far  # not even a token
    np.testing.assert_array_equal(again.values, first.values)
    assert "cached, 0 PU" in caplog.text
    assert any((tmp_path / "cache").iterdir())


# -- failures --------------------------------------------------------------------------------

def test_429_and_500_are_retried(hub, make):
    src = make()
    rec = _record(src)
    hub.fail("process", "429", 2)
    hub.fail("process", "500", 1)
    hub.fail("catalog", "500", 1)
    hub.fail("token", "500", 1)
    from sentinelhub import SentinelHubDownloadClient
    from sentinelhub.exceptions import SHRateLimitWarning

    SentinelHubDownloadClient.clear_cache()  # the next call must authenticate again, through a 500
    started = time.monotonic()
    with pytest.warns(SHRateLimitWarning):
        da = src.load(rec, _bercy_grid(20.0))
    assert time.monotonic() - started >= 2 * hub.retry_after_ms / 1000  # Retry-After (ms) was honoured
    assert hub.hits["token"] == 3  # first search, then a 500 and a success
    assert hub.hits["process"] == 4 and np.isfinite(da.values).any()
    assert len(src.search(_bercy(), date(2016, 11, 1), date(2016, 11, 30), sensor="s2")) == 1


def test_persistent_500_names_the_request(hub, make):
    src = make(cache=False)
    rec = _record(src)
    hub.fail("process", "500", 3)
    with pytest.raises(SourceError, match=rf"{rec.id}.*HTTP 500.*retries"):
        src.load(rec, _bercy_grid(20.0))
    assert hub.hits["process"] == 3


def test_rate_limit_that_never_lifts_is_reported(hub, make):
    src = make(cache=False, rate_limit_retries=2)
    rec = _record(src)
    hub.fail("process", "429", 5)
    from sentinelhub.exceptions import SHRateLimitWarning

    with pytest.raises(SourceError, match=rf"{rec.id}.*rate limit"), pytest.warns(SHRateLimitWarning):
        src.load(rec, _bercy_grid(40.0))
    assert hub.hits["process"] == 2


def test_acquisition_missing_from_its_pass_window_is_an_error(hub, make):
    from dataclasses import replace

    src = make(cache=False)
    rec = replace(_record(src), time=T1 + timedelta(days=2))  # no acquisition on 2016-12-02
    with pytest.raises(SourceError, match="returned no data over the AOI grid"):
        src.load(rec, _bercy_grid(40.0))


def test_expired_token_is_refreshed(hub, make):
    src = make(cache=False)
    rec = _record(src)
    assert hub.hits["token"] == 1
    hub.fail("process", "expire")
    da = src.load(rec, _bercy_grid(20.0))
    assert np.isfinite(da.values).any()
    assert hub.hits["token"] == 2 and hub.hits["process"] == 2
    hub.fail("catalog", "expire")
    assert len(src.search(_bercy(), date(2016, 11, 1), date(2016, 11, 30), sensor="s2")) == 1
    assert hub.hits["token"] == 3


def test_malformed_catalog_replies(hub, make):
    src = make()
    hub.fail("catalog", "bad_json")
    with pytest.raises(SourceError, match="catalog search of sentinel-2-l2a.*not valid JSON"):
        src.search(_bercy(), date(2016, 11, 1), date(2016, 11, 30), sensor="s2")
    hub.fail("catalog", "no_context")
    with pytest.raises(SourceError, match="lacks 'context'"):
        src.search(_bercy(), date(2016, 11, 1), date(2016, 11, 30), sensor="s2")


def test_truncated_tiff_is_an_error_and_not_cached(hub, make):
    src = make()
    rec, grid = _record(src), _bercy_grid(20.0)
    hub.fail("process", "truncate")
    with pytest.raises(SourceError, match=rf"process request for scene {rec.id}.*could not be decoded"):
        src.load(rec, grid)
    da = src.load(rec, grid)  # fetched again, not read back from a poisoned cache
    assert hub.hits["process"] == 2 and np.isfinite(da.values).any()


def test_aoi_outside_the_footprint_is_rejected_before_any_request(hub, make):
    src = make()
    rec = _record(src)
    far = GridSpec.from_bounds(32631, (300000, 5000000, 301000, 5001000), 10)
    with pytest.raises(SourceError, match=rf"scene {rec.id} does not cover the AOI grid"):
        src.load(rec, far)
    assert hub.hits["process"] == 0


def test_cache_entry_cut_short_is_fetched_again(hub, make, tmp_path):
    src = make()
    rec, grid = _record(src), _bercy_grid(40.0)
    first = src.load(rec, grid)
    (reply,) = (tmp_path / "cache").glob("*/response.tar")
    reply.write_bytes(reply.read_bytes()[:300])  # as if the process died while sentinelhub wrote it
    again = src.load(rec, grid)
    assert hub.hits["process"] == 2
    np.testing.assert_array_equal(again.values, first.values)
    assert len(reply.read_bytes()) > 300  # the cache holds the full reply again


def test_grid_without_epsg_is_rejected(make):
    crs = pyproj.CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=2.5 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m")
    grid = GridSpec.from_bounds(crs, (0, 0, 1000, 1000), 10)
    src = make()
    rec = _record(src)
    with pytest.raises(SourceError, match="no EPSG code"):
        src.load(rec, grid)


# -- processing units ------------------------------------------------------------------------

def test_processing_unit_estimate_known_answers():
    assert es.estimate_pu(512, 512, input_bands=3, float32=False) == pytest.approx(1.0)
    assert es.estimate_pu(1024, 512, input_bands=3, float32=True) == pytest.approx(4.0)
    s2 = es.sentinel2_l2a(S2_BANDS)
    assert s2.input_bands == 5  # four bands + SCL; dataMask is free
    assert es.estimate_pu(512, 512, input_bands=s2.input_bands, float32=s2.float32) == pytest.approx(10 / 3)
    assert es.estimate_pu(512, 512, input_bands=2, float32=True, orthorectify=True) == pytest.approx(8 / 3)
    assert es.estimate_pu(10, 10, input_bands=3, float32=False) == pytest.approx(0.01)  # area floor
    assert es.estimate_pu(10, 10, input_bands=1, float32=False) == pytest.approx(0.005)  # request floor


def test_bad_options_are_rejected(hub):
    settings = SHSettings(CLIENT, SECRET, hub.url, hub.token_url)
    for bad in ({"max_px": 4000}, {"cloud_band": "FMASK"}, {"s1_units": "amplitude"}, {"collection": "landsat"},
                {"page_size": 0}, {"backscatter": "SIGMA1"},
                {"backscatter": "GAMMA0_TERRAIN", "orthorectify": False}):
        with pytest.raises(SourceError):
            SentinelHubSource(settings, **bad)
    with pytest.raises(SourceError, match="unknown Sentinel Hub source option.*colection"):
        SentinelHubSource(settings, colection="sentinel-2-l2a")


def test_scene_time_window_is_one_pass(hub, make):
    src = make()
    rec = _record(src)
    src.load(rec, _bercy_grid(40.0))
    tr = hub.bodies["process"][0]["input"]["data"][0]["dataFilter"]["timeRange"]
    start = datetime.fromisoformat(tr["from"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(tr["to"].replace("Z", "+00:00"))
    assert start < rec.time < end and end - start <= timedelta(hours=1)


def test_aoi_source_entry_builds_a_configured_source(hub, monkeypatch, tmp_path):
    from types import MappingProxyType

    from changedet.aoi import SourceSpec
    from changedet.sources.base import source_from_spec

    monkeypatch.setenv("SH_CLIENT_ID", CLIENT)
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("SH_BASE_URL", hub.url)
    monkeypatch.setenv("SH_TOKEN_URL", hub.token_url)
    monkeypatch.setenv("CHANGEDET_DATA_DIR", str(tmp_path / "data"))
    spec = SourceSpec("sentinelhub", "s2", 10.0, MappingProxyType({"collection": "sentinel-2-l2a", "max_cloud": 30}))
    src = source_from_spec(spec)
    assert isinstance(src, SentinelHubSource) and src.settings.base_url == hub.url
    assert src.cache_dir == tmp_path / "data" / "cache" / "sentinelhub"
    rec = _record(src)
    src.load(rec, _bercy_grid(40.0))
    assert any(src.cache_dir.iterdir())
