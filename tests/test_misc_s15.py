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


def test_a_feature_mostly_under_cloud_is_not_recorded_as_a_drop(tmp_path, monkeypatch):
    """The site can be seen enough (>= min_observed) while one track is half under cloud; its
    count covers only what was seen, so its own series must not get that value."""
    import dataclasses
    import importlib.util
    from datetime import date
    from pathlib import Path

    import changedet.pipeline as pipeline
    from changedet.aoi import load_aoi
    from changedet.metrics import MetricStore

    spec = importlib.util.spec_from_file_location("_ps", Path(__file__).with_name("test_pipeline_sources.py"))
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    reg = ps._reduced_registry(tmp_path, [{"name": "simulator", "sensor": "vhr", "resolution_m": 0.5}])
    aoi = load_aoi(ps.AOI, registry=reg)
    real = pipeline.count_railcars

    def half_seen_t2(*args, **kwargs):
        res = real(*args, **kwargs)
        per = tuple(dict(pf, observed_fraction=0.5) if pf["id"] == "T2" else dict(pf, observed_fraction=1.0)
                    for pf in res.per_feature)
        return dataclasses.replace(res, per_feature=per, observed_fraction=0.97)

    monkeypatch.setattr(pipeline, "count_railcars", half_seen_t2)
    cfg = pipeline.RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False, write_products=False)
    day = date(2023, 8, 17)
    r = pipeline.run_day(aoi, day, cfg)
    assert r.status == "processed", r.summary()
    assert r.skipped.get("railcars[T2]") == "only 50% of T2 cloud-free", r.skipped
    assert "railcars" in r.metrics   # the site total is still recorded
    store = MetricStore(cfg.store_location())
    try:
        t1 = store.series(ps.AOI, "railcars", feature_id="T1")
        t2 = store.series(ps.AOI, "railcars", feature_id="T2")
    finally:
        store.close()
    assert len(t1) == 1 and len(t2) == 0, (t1, t2)


def test_run_and_cube_info_read_aois_from_registry(tmp_path, capsys):
    """``report`` and ``aois`` took --registry, ``run`` and ``cube info`` only $CHANGEDET_AOIS."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "my_port.yaml").write_text((repo / "aois" / "rajin_port.yaml").read_text()
                                      .replace("id: rajin_port", "id: my_port"))
    (reg / "my_port.geojson").write_text((repo / "aois" / "rajin_port.geojson").read_text()
                                         .replace('"id": "rajin_port"', '"id": "my_port"'))
    assert not (repo / "aois" / "my_port.yaml").exists()
    # A day in the future is refused after the AOI is loaded and before anything runs or is created.
    rc = main(["run", "--aoi", "my_port", "--registry", str(reg), "--date", "2099-01-01",
               "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and "is in the future at my_port" in err, err
    assert not (tmp_path / "d").exists()
    rc = main(["cube", "info", "my_port", "--registry", str(reg), "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and "no cube of AOI my_port" in err and "changedet run --aoi my_port" in err, err
    shutil.rmtree(reg)


def test_old_sentinel2_names_give_the_sensing_date_or_are_refused(tmp_path):
    """``S2A_OPER_...`` names (before December 2016) start with the processing date: a 2015
    scene processed in 2016 was stored as 2016."""
    from datetime import date, datetime, timezone

    import pytest

    from changedet.errors import SourceError
    from changedet.sources.local import LocalSource, _name_time

    prd = "S2A_OPER_PRD_MSIL1C_PDMC_20160706T155721_R094_V20150821T105906_20150821T105906.tif"
    assert _name_time(prd, None) == datetime(2015, 8, 21, 10, 59, 6, tzinfo=timezone.utc)
    tile = "S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_A000849_T30UWU_B02.tif"
    assert _name_time(tile, None) is None
    new = "S2A_MSIL2A_20170829T105019_N0205_R051_T31UDQ_20170829T140419.tif"
    assert _name_time(new, None) == datetime(2017, 8, 29, 10, 50, 19, tzinfo=timezone.utc)

    folder = tmp_path / "imgs"
    folder.mkdir()
    write_geotiff(GRID.attach(np.full((1, 20, 20), 0.1, "float32"), bands=["B02"]), folder / tile)
    src = LocalSource(path=str(folder))
    with pytest.raises(SourceError, match="processing date, not the sensing date"):
        src.search(None, date(2015, 1, 1), date(2017, 1, 1))


def test_cloud_mask_none_calls_observed_pixels_clear():
    """Aerial orthophotos (NAIP) are cloud-free by make; their bright fields, display-stretched to
    8 bits, passed the brightness test as cloud (every NAIP date 'cloudy')."""
    from changedet.cloudmask import cloud_mask, with_cloud_band

    data = np.full((4, 20, 20), 200 / 255, "float32")    # a bright, grey, unvegetated field
    data[3] = 150 / 255
    data[:, :2, :] = np.nan                                # no data along the top
    da = GRID.attach(data, bands=["R", "G", "B", "NIR"])
    bright, used = cloud_mask(da)
    assert used == "brightness" and np.nanmean(bright.values) > 0.9
    mask, used = cloud_mask(da, method="none")
    assert used == "none"
    assert np.isnan(mask.values[:2]).all() and (mask.values[2:] == 0).all()
    out, _ = with_cloud_band(da, method="none")
    assert [str(b) for b in out.band.values] == ["R", "G", "B", "NIR", "CLM"]


def test_no_cloud_mask_possible_names_the_scene_and_the_options():
    import pytest

    from changedet.cloudmask import cloud_mask
    from changedet.errors import SourceError

    da = GRID.attach(np.full((1, 20, 20), 0.2, "float32"), bands=["b1"])
    with pytest.raises(SourceError) as err:
        cloud_mask(da, source="scene-42")
    text = str(err.value)
    assert "scene-42" in text and "[R, G, B, NIR]" in text and "cloud_mask: none" in text
    assert (cloud_mask(da, method="none")[0].values == 0).all()


def test_report_credits_each_picture_with_the_year_of_its_own_data(tmp_path, monkeypatch):
    """Copernicus asks for the year of the data: the 'before' picture of 2022 said 2023 (the latest's)."""
    import shutil
    from datetime import datetime, timezone
    from pathlib import Path

    import yaml
    from shapely.geometry import box

    import changedet.figures as F
    from changedet.aoi import load_aoi
    from changedet.cube import Cube
    from changedet.grid import aoi_grid
    from changedet.report.build import build_report
    from changedet.sources.base import SceneRecord

    repo = Path(__file__).resolve().parents[1]
    reg = tmp_path / "aois"
    reg.mkdir()
    shutil.copy(repo / "aois" / "rajin_port.geojson", reg)
    doc = yaml.safe_load((repo / "aois" / "rajin_port.yaml").read_text())
    doc["sources"] = [{"name": "local", "sensor": "s2", "resolution_m": 10, "path": str(tmp_path)}]
    (reg / "rajin_port.yaml").write_text(yaml.safe_dump(doc))
    aoi = load_aoi("rajin_port", registry=reg)
    grid = aoi_grid(aoi, 10.0)
    cube = Cube(tmp_path / "data", aoi.id, "s2", grid, reflectance=True)
    rng = np.random.default_rng(0)
    for t in (datetime(2022, 12, 20, 2, tzinfo=timezone.utc), datetime(2023, 1, 9, 2, tzinfo=timezone.utc)):
        data = rng.uniform(0.02, 0.3, (5, *grid.shape)).astype("float32")
        data[4] = 0.0
        cube.append(SceneRecord(f"local-{t:%Y%m%d}", "local", aoi.id, "s2", t, "sentinel-2a", 0.0, box(*grid.bounds),
                                10.0, {}), grid.attach(data, bands=["B02", "B03", "B04", "B08", "CLM"]))
    seen = []
    real = F.scene_png

    def spy(image, path, **kw):
        seen.append((Path(path).name, kw["when"].year, kw["attribution"]))
        return real(image, path, **kw)

    monkeypatch.setattr(F, "scene_png", spy)
    build_report(tmp_path / "data", tmp_path / "out", registry=reg)
    pictures = {name: (year, text) for name, year, text in seen}
    assert pictures["before.png"] == (2022, "Contains modified Copernicus Sentinel data 2022"), seen
    assert pictures["after.png"] == (2023, "Contains modified Copernicus Sentinel data 2023"), seen
