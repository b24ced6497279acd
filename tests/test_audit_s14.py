"""Audit of the acquisition and flow paths (session 14): each test failed on the code before it."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.transform import from_origin
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

from changedet.acquire import fetch
from changedet.aoi import load_aoi
from changedet.cube import Cube
from changedet.errors import SourceError
from changedet.grid import GridSpec, aoi_grid
from changedet.sources.local import LocalSource

AOIS = Path(__file__).resolve().parents[1] / "aois"
CRS = "EPSG:32633"
BOUNDS = (465000.0, 5079000.0, 466000.0, 5080000.0)  # 1 km square, 100 x 100 px at 10 m


def _site(tmp_path: Path):
    """An AOI whose site is the middle 700 m of BOUNDS, with a local s2 source."""
    x0, y0, x1, y1 = BOUNDS
    to_ll = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform
    poly = shp_transform(to_ll, box(x0 + 150, y0 + 150, x1 - 150, y1 - 150))
    reg = tmp_path / "aois"
    reg.mkdir()
    (reg / "site.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"role": "site", "id": "site"}, "geometry": mapping(poly)}]}))
    (reg / "site.yaml").write_text(yaml.safe_dump({
        "id": "site", "name": "site", "kind": "depot", "timezone": "UTC", "cadence": "weekly",
        "sources": [{"name": "local", "sensor": "s2", "resolution_m": 10}], "metrics": ["changed_area_m2"]}))
    return load_aoi("site", registry=reg)


def _write(path: Path, when: datetime, red: np.ndarray, clm: np.ndarray) -> None:
    """A 10 m GeoTIFF over BOUNDS with bands B04 (reflectance, NaN = no data) and CLM."""
    with rasterio.open(path, "w", driver="GTiff", height=100, width=100, count=2, dtype="float32", crs=CRS,
                       transform=from_origin(BOUNDS[0], BOUNDS[3], 10.0, 10.0), compress="deflate") as dst:
        dst.write(np.stack([red, clm]).astype("float32"))
        dst.update_tags(TIFFTAG_DATETIME=when.strftime("%Y:%m:%d %H:%M:%S"))
        dst.set_band_description(1, "B04")
        dst.set_band_description(2, "CLM")


def _fetch(site, folder: Path, data: Path):
    return fetch(site, LocalSource(path=str(folder), sensor="s2"), sensor="s2", resolution_m=10.0,
                 start=date(2023, 1, 1), end=date(2023, 12, 31), data_dir=data)


D1 = datetime(2023, 6, 1, 10, 0, tzinfo=timezone.utc)
D2 = datetime(2023, 6, 8, 10, 0, tzinfo=timezone.utc)
CLEAR = np.full((100, 100), 0.12, "float32")


@pytest.mark.parametrize("clm_value", [0.0, np.nan], ids=["mask-says-clear", "mask-no-data"])
def test_local_file_without_data_over_the_site_is_skipped_and_the_fetch_goes_on(tmp_path, clm_value):
    """A file over the site holding only no-data (the no-data edge of a tile) is an acquisition
    without pixels: recorded as skipped, never stored as a clear scene, and the later files are
    fetched. Before: with a cloud mask of 0 it was stored as a 0 % cloud scene of NaNs; with a
    no-data mask the fetch stopped with 'does not cover the AOI grid ... check their CRS'."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _write(imgs / "empty.tif", D1, np.full((100, 100), np.nan), np.full((100, 100), clm_value))
    _write(imgs / "good.tif", D2, CLEAR, np.zeros((100, 100)))
    report = _fetch(site, imgs, tmp_path / "data")
    assert [(o.time[:10], o.status) for o in report.outcomes] == [("2023-06-01", "skipped"), ("2023-06-08", "stored")]
    assert "no data over the site" in report.outcomes[0].reason
    cube = Cube(tmp_path / "data", "site", "s2", aoi_grid(site, 10.0), product="acquired")
    assert [s["time"][:10] for s in cube.scenes()] == ["2023-06-08"]
    assert [s["time"][:10] for s in cube.info()["skipped"]] == ["2023-06-01"]


def test_file_beside_the_grid_is_still_refused_as_not_covering(tmp_path):
    """The no-data case above must not hide a file that really lies elsewhere."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _write(imgs / "good.tif", D1, CLEAR, np.zeros((100, 100)))
    src = LocalSource(path=str(imgs), sensor="s2")
    [scene] = src.search(site, date(2023, 1, 1), date(2023, 12, 31))
    grid = aoi_grid(site, 10.0)
    elsewhere = GridSpec(crs=grid.crs, transform=Affine.translation(50_000, 0) @ grid.transform, shape=grid.shape)
    with pytest.raises(SourceError, match="does not cover the AOI"):
        src.load(scene, elsewhere)


def test_unobserved_pixels_do_not_count_as_clear_in_the_site_cloud_fraction(tmp_path):
    """Half the site without reflectance (its mask says 0), the other half under cloud: the
    observed site is all cloud, so the scene is skipped. Before: the no-data half counted as
    clear, 50 % cloud passed the 60 % limit and a fully clouded scene was stored."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    red = CLEAR.copy()
    red[:, :50] = np.nan
    clm = np.zeros((100, 100))
    clm[:, 50:] = 1.0
    _write(imgs / "half.tif", D1, red, clm)
    [outcome] = _fetch(site, imgs, tmp_path / "data").outcomes
    assert outcome.status == "skipped" and outcome.cloud_fraction == 1.0
    assert "all cloud" in outcome.reason


def test_stored_cloud_band_marks_no_data_as_unobserved(tmp_path):
    """The stored CLM is NaN (no data), not 0 (clear), where the scene has no reflectance."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    red = CLEAR.copy()
    red[:, :30] = np.nan
    _write(imgs / "edge.tif", D1, red, np.zeros((100, 100)))
    [outcome] = _fetch(site, imgs, tmp_path / "data").outcomes
    assert outcome.status == "stored" and outcome.cloud_fraction == 0.0
    cube = Cube(tmp_path / "data", "site", "s2", aoi_grid(site, 10.0), product="acquired")
    stored = cube.read().isel(time=0)
    clm = stored.sel(band="CLM").values
    b04 = stored.sel(band="B04").values
    assert np.isnan(clm[np.isnan(b04)]).all() and (clm[~np.isnan(b04)] == 0).all()


def test_run_on_an_aoi_whose_only_source_is_unusable_says_why_not_reinstall(tmp_path, monkeypatch):
    """Before: 'none of its sources ['sentinelhub'] is available in this installation', which sends
    the user to reinstall a source that is installed. The daily run now reads Sentinel Hub too
    (changedet.pipeline.choose_source): without credentials it names what is missing."""
    from changedet.pipeline import RunConfig, run_day

    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_PROFILE"):
        monkeypatch.delenv(var, raising=False)

    reg = tmp_path / "aois"
    reg.mkdir()
    doc = yaml.safe_load((AOIS / "tumangang_railyard.yaml").read_text())
    doc["sources"] = [s for s in doc["sources"] if s["name"] != "simulator"]
    (reg / "tumangang_railyard.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(AOIS / "tumangang_railyard.geojson", reg)
    aoi = load_aoi("tumangang_railyard", registry=reg)
    with pytest.raises(SourceError) as err:
        run_day(aoi, date(2023, 6, 1), RunConfig(data_dir=tmp_path / "data", registry=reg))
    text = str(err.value)
    assert "Sentinel Hub credentials are missing" in text and "sentinelhub (s2, 10 m)" in text, text
    assert "simulator" in text
    assert "installation" not in text


def _truncate_pixels(path: Path) -> None:
    """Overwrite part of a GeoTIFF's compressed pixels: its header still opens, its pixels
    cannot be decoded (a damaged copy)."""
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    blob = bytearray(path.read_bytes())
    blob[offset + 2:offset + size] = b"\xff" * (size - 2)
    path.write_bytes(bytes(blob))
    with rasterio.open(path) as src, pytest.raises(rasterio.errors.RasterioIOError):
        src.read()


def test_one_unreadable_scene_does_not_block_the_later_dates(tmp_path, capsys):
    """A scene the source cannot load is reported as failed and the fetch goes on; the exit
    status is 1 and a re-run (the file repaired) stores it. Before: the fetch stopped at that
    scene, so every later date stayed unfetched on every re-run until the file was removed."""
    from changedet.cli import main

    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    d3 = datetime(2023, 6, 15, 10, 0, tzinfo=timezone.utc)
    for k, (name, when) in enumerate((("a.tif", D1), ("b.tif", D2), ("c.tif", d3))):
        _write(imgs / name, when, CLEAR + 0.01 * k, np.zeros((100, 100)))  # distinct pixels: no duplicates
    good_b = (imgs / "b.tif").read_bytes()
    _truncate_pixels(imgs / "b.tif")
    data = tmp_path / "data"
    argv = ["fetch", "--aoi", str(tmp_path / "aois" / "site.yaml"), "--source", "local", "--path", str(imgs),
            "--start", "2023-06-01", "--end", "2023-06-30", "--data-dir", str(data), "--no-progress"]
    assert main(argv + ["--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(o["time"][:10], o["status"]) for o in doc["outcomes"]] == [
        ("2023-06-01", "stored"), ("2023-06-08", "failed"), ("2023-06-15", "stored")]
    assert "b.tif" in doc["outcomes"][1]["reason"]
    cube = Cube(data, "site", "s2", aoi_grid(site, 10.0), product="acquired")
    assert [s["time"][:10] for s in cube.scenes()] == ["2023-06-01", "2023-06-15"]
    assert cube.info()["skipped"] == []  # a failure is not a skip: nothing recorded, retried next time
    (imgs / "b.tif").write_bytes(good_b)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 stored, 2 already" in out
    assert [s["time"][:10] for s in cube.scenes()] == ["2023-06-01", "2023-06-08", "2023-06-15"]


def test_scenes_failing_in_a_row_stop_the_fetch_naming_them(tmp_path):
    """A source that fails every scene (say a mount gone bad) stops after two in a row, naming
    both days and the error once, instead of trying every scene of the range."""
    from changedet.acquire import MAX_FAILURES_IN_A_ROW

    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    days = [datetime(2023, 6, d, 10, 0, tzinfo=timezone.utc) for d in (1, 8, 15, 22)]
    for k, when in enumerate(days):
        _write(imgs / f"s{k}.tif", when, CLEAR + 0.01 * k, np.zeros((100, 100)))
    for k in (1, 2, 3):
        _truncate_pixels(imgs / f"s{k}.tif")
    assert MAX_FAILURES_IN_A_ROW == 2
    with pytest.raises(SourceError, match=r"stopped after 2 scenes in a row failed to load \(2023-06-08, "
                                          r"2023-06-15\).*s1\.tif.*1 scene\(s\) stored before"):
        _fetch(site, imgs, tmp_path / "data")
    cube = Cube(tmp_path / "data", "site", "s2", aoi_grid(site, 10.0), product="acquired")
    assert [s["time"][:10] for s in cube.scenes()] == ["2023-06-01"]


def _stac_item(item_id: str, when: str, files: dict[str, str]) -> dict:
    from rasterio.warp import transform_bounds

    b = transform_bounds(CRS, "EPSG:4326", *BOUNDS, densify_pts=21)
    assets = {key: {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data"], "proj:shape": [100, 100],
                    "proj:transform": [10.0, 0.0, BOUNDS[0], 0.0, -10.0, BOUNDS[3]],
                    "raster:bands": [{"nodata": 0, "data_type": "uint8" if key == "scl" else "uint16",
                                      **({} if key == "scl" else {"scale": 0.0001, "offset": 0.0})}]}
              for key, href in files.items()}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "sentinel-2-l2a",
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "geometry": mapping(box(*b)), "bbox": list(b),
            "properties": {"datetime": when, "platform": "sentinel-2a", "eo:cloud_cover": 10.0, "proj:epsg": 32633},
            "assets": assets, "links": []}


def _stac_catalogue(root: Path) -> list[dict]:
    """Three days of 10 m COGs over BOUNDS: day 1 no data over the whole tile (DN 0), day 2 an
    item without its red asset, day 3 clear."""
    root.mkdir()
    items = []
    for day, dn, scl in (("2023-06-01", 0, 0), ("2023-06-08", 1200, 4), ("2023-06-15", 1300, 4)):
        files = {}
        for key in ("blue", "green", "red", "nir", "scl"):
            name = f"{day}_{key}.tif"
            value, dtype = (scl, "uint8") if key == "scl" else (dn, "uint16")
            with rasterio.open(root / name, "w", driver="COG", height=100, width=100, count=1, dtype=dtype, crs=CRS,
                               transform=from_origin(BOUNDS[0], BOUNDS[3], 10.0, 10.0), nodata=0) as dst:
                dst.write(np.full((1, 100, 100), value, dtype))
            files[key] = name
        if day == "2023-06-08":
            del files["red"]
        items.append(_stac_item(f"S2A_33TWN_{day.replace('-', '')}", f"{day}T10:00:00Z", files))
    return items


def test_stac_scene_without_data_is_skipped_and_an_item_without_an_asset_fails_alone(tmp_path):
    """Before: a solar day whose tiles hold no data over the AOI raised 'has no data over the AOI
    grid' and stopped the fetch, so the later days were never fetched (on every re-run)."""
    from stac_server import StacServer

    from changedet.sources.stac import StacSource

    site = _site(tmp_path)
    items = _stac_catalogue(tmp_path / "files")
    with StacServer(items, tmp_path / "files") as server:
        report = fetch(site, StacSource(url=server.url), sensor="s2", resolution_m=10.0, start=date(2023, 6, 1),
                       end=date(2023, 6, 30), data_dir=tmp_path / "data")
    got = [(o.time[:10], o.status) for o in report.outcomes]
    assert got == [("2023-06-01", "skipped"), ("2023-06-08", "failed"), ("2023-06-15", "stored")]
    assert "no data over the site" in report.outcomes[0].reason
    assert "lack the assets ['red']" in report.outcomes[1].reason
    assert report.summary().endswith("1 stored, 1 skipped, 1 failed")


def test_sentinelhub_download_cache_follows_the_fetch_data_dir(tmp_path, monkeypatch):
    """Before: 'changedet fetch --data-dir D --source sentinelhub' cached replies under
    ./changedet-data/cache (or $CHANGEDET_DATA_DIR), a stray folder beside the data it fetched."""
    import changedet.acquire as acquire
    from changedet.acquire import FetchReport
    from changedet.cli import main

    monkeypatch.delenv("CHANGEDET_DATA_DIR", raising=False)
    monkeypatch.setenv("CHANGEDET_AOIS", str(AOIS))
    monkeypatch.setenv("SH_CLIENT_ID", "audit-client")
    monkeypatch.setenv("SH_CLIENT_SECRET", "audit-secret-value")
    seen = {}

    def fake_fetch(aoi, source, **kw):
        seen["cache_dir"] = source.cache_dir
        return FetchReport(aoi.id, source.name, kw["sensor"], str(kw["data_dir"]))

    monkeypatch.setattr(acquire, "fetch", fake_fetch)
    data = tmp_path / "data"
    assert main(["fetch", "--aoi", "tumangang_railyard", "--source", "sentinelhub", "--start", "2023-06-01",
                 "--end", "2023-06-02", "--data-dir", str(data), "--no-progress"]) == 0
    assert Path(seen["cache_dir"]) == data / "cache" / "sentinelhub"


@pytest.mark.slow
def test_slots_left_by_a_killed_run_are_freed_and_a_long_wait_is_logged(prefect_env, monkeypatch):
    """Found by killing 'changedet backfill' (kill -9) and running it again: the killed run's
    temporary server took its in-memory leases with it, the database kept both slots of
    changedet-source-simulator counted, and the re-run waited for ever without a word after its
    cached days. Now a flow on its own temporary server frees such slots, and any AOI-day that
    waits long for a slot says so in its log with the command that frees them."""
    import logging
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    import flows.tasks as tasks

    name = "changedet-source-audit-leak"
    tasks.release_idle_source_slots()  # earlier tests of this process may have left idle leases
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))  # the leak
        tasks.ensure_source_limits({name})
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0
        with tasks._acquire_source_slot(name):
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 1
        assert tasks.release_idle_source_slots() == 1

        # A full limit (here: held by "someone else") makes the waiting AOI-day say why.
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))
        monkeypatch.setattr(tasks, "SOURCE_WAIT_WARN_S", 0.5)
        warned, got = [], threading.Event()
        monkeypatch.setattr(tasks, "_warn_waiting", lambda n, waited: warned.append((n, waited)))

        def wait_for_slot() -> None:
            with tasks._acquire_source_slot(name):
                got.set()

        waiter = threading.Thread(target=wait_for_slot, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 150  # the server's Retry-After may ask for up to ~40 s
        while not warned and time.monotonic() < deadline:
            time.sleep(0.2)
        assert warned and warned[0][0] == name and not got.is_set()
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
        waiter.join(120)
        assert got.is_set()
        monkeypatch.undo()
        # (Prefect's logging set-up keeps these records from pytest's caplog: listen on the logger.)
        records: list[str] = []
        listener = logging.Handler()
        listener.emit = lambda record: records.append(record.getMessage())
        logging.getLogger("flows.tasks").addHandler(listener)
        try:
            tasks._warn_waiting(name, 612.0)
        finally:
            logging.getLogger("flows.tasks").removeHandler(listener)
        text = " ".join(records)
        assert "waited 612 s" in text and "(limit 1, 1 held)" in text
        assert f"prefect gcl update {name} --active-slots 0" in text
        tasks.release_idle_source_slots()


def test_file_much_finer_than_the_grid_is_averaged_per_cell(tmp_path):
    """A 2 m file on the 10 m grid: each cell is the mean of its 25 fine pixels. Before: bilinear
    read only the few fine pixels next to each cell centre (0.016 off the cell mean everywhere on
    this striped pattern, where the stripes' contrast is 0.2)."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    fine = np.where(np.arange(500) % 2 == 0, 0.1, 0.3).astype("float32")[None, :].repeat(500, axis=0)
    fine = fine + np.linspace(0, 0.1, 500, dtype="float32")[:, None]  # a gentle gradient north-south
    with rasterio.open(imgs / "fine.tif", "w", driver="GTiff", height=500, width=500, count=1, dtype="float32",
                       crs=CRS, transform=from_origin(BOUNDS[0], BOUNDS[3], 2.0, 2.0)) as dst:
        dst.write(fine[None])
        dst.update_tags(TIFFTAG_DATETIME=D1.strftime("%Y:%m:%d %H:%M:%S"))
        dst.set_band_description(1, "B04")
    src = LocalSource(path=str(imgs), sensor="s2")
    [scene] = src.search(site, date(2023, 1, 1), date(2023, 12, 31))
    grid = aoi_grid(site, 10.0)
    got = src.load(scene, grid).sel(band="B04").values
    # the expected cell means, placed by map coordinates (the AOI grid is snapped to 10 m)
    cells = fine.reshape(100, 5, 100, 5).mean(axis=(1, 3))
    r0 = int(round((BOUNDS[3] - grid.transform.f) / 10.0))
    c0 = int(round((grid.transform.c - BOUNDS[0]) / 10.0))
    want = cells[r0:r0 + grid.shape[0], c0:c0 + grid.shape[1]]
    assert want.shape == got.shape
    assert np.nanmax(np.abs(got - want)) < 1e-4


# --- Review of the audit (MEND2): each test below failed on commit e1b381c. ---------------------------------------


def _write_bands(path: Path, when: datetime, bands: dict[str, np.ndarray]) -> None:
    """A float32 10 m GeoTIFF over BOUNDS with the named bands (NaN = no data)."""
    with rasterio.open(path, "w", driver="GTiff", height=100, width=100, count=len(bands), dtype="float32", crs=CRS,
                       transform=from_origin(BOUNDS[0], BOUNDS[3], 10.0, 10.0)) as dst:
        dst.write(np.stack(list(bands.values())).astype("float32"))
        dst.update_tags(TIFFTAG_DATETIME=when.strftime("%Y:%m:%d %H:%M:%S"))
        for k, name in enumerate(bands, start=1):
            dst.set_band_description(k, name)


def test_reflectance_blanked_under_the_cloud_it_flags_counts_as_cloud(tmp_path):
    """A product that blanks (NaN) its reflectance under the cloud its CLM flags: those pixels
    were observed as cloud. Site columns 15-84; cloud on columns 0-79, so 65 of 70 site columns
    are cloud (93 %) and the scene is skipped. Before: every cloud pixel turned 'unobserved', the
    site was measured over its 5 clear columns and the scene was stored as 0 % cloud."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    red = CLEAR.copy()
    red[:, :80] = np.nan
    clm = np.zeros((100, 100))
    clm[:, :80] = 1.0
    _write(imgs / "masked.tif", D1, red, clm)
    [outcome] = _fetch(site, imgs, tmp_path / "data").outcomes
    assert outcome.status == "skipped"
    assert outcome.cloud_fraction == pytest.approx(65 / 70, abs=0.01)


def test_one_band_without_data_does_not_make_the_pixel_unobserved(tmp_path):
    """NIR is no data over water (a legitimate 0 in a product with nodata=0 reads as NaN in that
    band only), red is valid everywhere; cloud on site columns 60-79 of the site's 15-84: 20 of 70
    columns, 29 %, stored. Before: every water pixel was 'unobserved', the site was measured over
    its 25 land columns and the scene was skipped as 80 % cloud."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    nir = np.full((100, 100), 0.3, "float32")
    nir[:, :60] = np.nan
    clm = np.zeros((100, 100))
    clm[:, 60:80] = 1.0
    _write_bands(imgs / "port.tif", D1, {"B04": CLEAR, "B08": nir, "CLM": clm})
    [outcome] = _fetch(site, imgs, tmp_path / "data").outcomes
    assert outcome.status == "stored"
    assert outcome.cloud_fraction == pytest.approx(20 / 70, abs=0.01)
    stored = Cube(tmp_path / "data", "site", "s2", aoi_grid(site, 10.0), product="acquired").read().isel(time=0)
    clm, b04, b08 = (stored.sel(band=b).values for b in ("CLM", "B04", "B08"))
    water = np.isnan(b08) & ~np.isnan(b04)
    assert water.any() and (clm[water] == 0).all()  # water seen clear, not unobserved


class _Flaky(LocalSource):
    """A local source whose loads fail on the given days (or on every day while ``outage``)."""

    def __init__(self, *args, fail_days=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_days = set(fail_days)
        self.outage = False
        self.loads: list[str] = []

    def load(self, scene, grid, **kwargs):
        day = scene.time.date().isoformat()
        self.loads.append(day)
        if self.outage or day in self.fail_days:
            raise SourceError(f"scene {scene.id}: HTTP 503 from the provider")
        return super().load(scene, grid, **kwargs)


def _weekly(imgs: Path, n: int) -> list[str]:
    days = [datetime(2023, 6, 1, 10, tzinfo=timezone.utc) + timedelta(days=7 * k) for k in range(n)]
    for k, when in enumerate(days):
        _write(imgs / f"s{k}.tif", when, CLEAR + 0.01 * k, np.zeros((100, 100)))  # distinct: no duplicates
    return [d.date().isoformat() for d in days]


def test_rerun_during_an_outage_stops_although_stored_scenes_lie_between_the_missing_ones(tmp_path):
    """Run 1 loses every other scene; run 2 meets a total outage. Its missing scenes alternate
    with stored ones, which load nothing and so must not reset the failure count: two failed
    loads stop it. Before: each stored scene reset the count and all 4 missing scenes were tried."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    days = _weekly(imgs, 8)
    src = _Flaky(path=str(imgs), sensor="s2", fail_days=days[1::2])
    kw = dict(sensor="s2", resolution_m=10.0, start=date(2023, 1, 1), end=date(2023, 12, 31), data_dir=tmp_path / "d")
    assert fetch(site, src, **kw).summary() == "site/s2 from local: 4 stored, 4 failed"
    src.outage, src.loads = True, []
    with pytest.raises(SourceError, match=r"stopped after 2 scenes in a row failed to load \(2023-06-08, 2023-06-22\)"):
        fetch(site, src, **kw)
    assert src.loads == days[1:4:2]


def test_a_cloud_mask_configuration_error_stops_the_fetch_and_is_not_listed_as_a_failed_load(tmp_path, capsys):
    """Unnamed bands (no cloud mask possible) are a configuration error no re-run cures: the
    fetch stops with it (exit 2). Before: listed as a failed scene 'to retry' with exit 1."""
    from changedet.cli import main

    _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    with rasterio.open(imgs / "x_20230601.tif", "w", driver="GTiff", height=100, width=100, count=3, dtype="uint16",
                       crs=CRS, transform=from_origin(BOUNDS[0], BOUNDS[3], 10.0, 10.0)) as dst:
        dst.write(np.full((3, 100, 100), 900, "uint16"))
    rc = main(["fetch", "--aoi", str(tmp_path / "aois" / "site.yaml"), "--source", "local", "--path", str(imgs),
               "--start", "2023-06-01", "--end", "2023-06-30", "--data-dir", str(tmp_path / "data"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no cloud mask possible for bands ['b1', 'b2', 'b3']" in err and "retry" not in err


def test_stopped_fetch_names_earlier_failures_and_the_cli_prints_its_report(tmp_path, capsys, monkeypatch):
    """Loads fail on 06-08 (alone), then 06-22 and 06-29 (in a row): the stop names 06-08 too,
    and the CLI prints the report of what was done (also as the --json document) before its
    error line, exit 2. Before: 06-08 was reported nowhere and --json printed nothing."""
    import changedet.sources.base as base
    from changedet.acquire import FetchStopped
    from changedet.cli import main

    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    days = _weekly(imgs, 5)
    fail = (days[1], days[3], days[4])
    with pytest.raises(FetchStopped, match="earlier failed: 2023-06-08") as caught:
        fetch(site, _Flaky(path=str(imgs), sensor="s2", fail_days=fail), sensor="s2", resolution_m=10.0,
              start=date(2023, 1, 1), end=date(2023, 12, 31), data_dir=tmp_path / "d1")
    assert [o.status for o in caught.value.report.outcomes] == ["stored", "failed", "stored", "failed", "failed"]

    monkeypatch.setattr(base, "source_from_spec", lambda spec, **kw: _Flaky(sensor="s2", fail_days=fail, **kw))
    argv = ["fetch", "--aoi", str(tmp_path / "aois" / "site.yaml"), "--source", "local", "--path", str(imgs),
            "--start", "2023-06-01", "--end", "2023-06-30", "--data-dir", str(tmp_path / "d2"), "--no-progress"]
    assert main(argv + ["--json"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [(o["time"][:10], o["status"]) for o in doc["outcomes"]] == [
        (days[0], "stored"), (days[1], "failed"), (days[2], "stored"), (days[3], "failed"), (days[4], "failed")]
    assert doc["stopped"].startswith("stopped after 2 scenes in a row") and "stopped after 2" in err
    assert main(argv) == 2  # the second run: the stored scenes between the failures do not reset the count
    out = capsys.readouterr().out
    assert "2 already, 2 failed (stopped early)" in out and f"{days[1]} " in out and f"{days[3]} " in out


def test_flow_start_does_not_import_the_prefect_server_to_learn_it_runs_none():
    """Checking for a temporary server must not import Prefect's server package (seconds per flow
    run on a real server). Run in a fresh interpreter, where nothing imported it before."""
    import subprocess
    import sys

    code = ("import sys, flows.tasks as t; print(t._own_temporary_server('http://127.0.0.1:4200/api'), "
            "'prefect.server.api.server' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    assert out == ["False", "False"]


def test_run_locks_tell_live_runs_from_killed_ones(tmp_path, monkeypatch):
    """A run's lock file is held as long as its process lives, so a dead run's file can be taken
    (and is removed) while a live run's cannot. Before: no such check existed, and a second run
    on the same database freed the live slots of the first."""
    import subprocess
    import sys

    import flows.tasks as tasks

    monkeypatch.setattr(tasks, "_runs_dir", lambda: tmp_path / "runs")
    monkeypatch.setattr(tasks, "_run_locks", {})
    folder = tasks._hold_run_lock()
    assert folder == tmp_path / "runs" and tasks._other_live_runs(folder) == 0
    (folder / "123-dead.lock").write_text("123\n")  # left by a run killed with kill -9: nobody holds it
    holder = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)")
    live = subprocess.Popen([sys.executable, "-c", holder, str(folder / "456-live.lock")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert live.stdout.readline().strip() == "held"
        assert tasks._other_live_runs(folder) == 1
        assert not (folder / "123-dead.lock").exists() and (folder / "456-live.lock").exists()
    finally:
        live.kill()
        live.wait()
    assert tasks._other_live_runs(folder) == 0  # its lock went with its process
    assert tasks._hold_run_lock() == folder and len(list(folder.glob("*.lock"))) == 1  # once per process
    tasks._drop_run_locks()  # what a normal exit does: no file, no folder left behind
    assert not folder.exists()


@pytest.mark.slow
def test_a_second_run_leaves_the_slots_of_a_live_run_alone(prefect_env):
    """Another run on the same Prefect database is alive (it holds its run lock): the slots
    beyond this process's own may be its live slots, so they stay counted; once that run has
    ended they are freed. Before: a second 'changedet backfill' zeroed the first run's live
    slots (2 holders on a limit of 1) and logged that they were left by a killed run."""
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    import flows.tasks as tasks

    name = "changedet-source-audit-live"
    tasks.release_idle_source_slots()
    folder = tasks._runs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    holder = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(300)")
    other = subprocess.Popen([sys.executable, "-c", holder, str(folder / "99999-otherrun.lock")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))  # its slot
            tasks.ensure_source_limits({name})
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 1
            other.kill()
            other.wait()
            tasks.ensure_source_limits({name})  # that run is gone: its slot was left, not held
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_a_band_named_scl_that_is_not_one_names_the_scene(tmp_path):
    """Reflectance mislabelled SCL: the error names the scene the fetch was on (acquire passes
    the scene id to the cloud mask), and it is not caught as a failed load: the fetch stops."""
    site = _site(tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    scl = np.linspace(0.05, 0.4, 100 * 100, dtype="float32").reshape(100, 100)
    _write_bands(imgs / "mislabelled.tif", D1, {"B04": CLEAR, "SCL": scl})
    [scene] = LocalSource(path=str(imgs), sensor="s2").search(site, date(2023, 1, 1), date(2023, 12, 31))
    with pytest.raises(Exception, match=f"band SCL of {scene.id} is not a Sentinel-2 SCL band"):
        _fetch(site, imgs, tmp_path / "data")
