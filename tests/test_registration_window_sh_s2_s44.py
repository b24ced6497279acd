"""Review RREGWIN (s44): Sentinel-2 L2A from the fake Sentinel Hub (SCL-derived CLM) on the window.

Bercy's two OSCD dates reprojected to a 10 m UTM grid (~400 px: the 768 px window runs past the
coverage, where the fake answers zeros with dataMask 0), a cloud (SCL 9) in the window's corner
on the reference day, the 2017 scene moved 20 m east, 10 m south. The window reference is made
again from the reference scene found by ``search_day`` (cached window deleted).
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.warp import Resampling, reproject, transform_bounds
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

sys.path.insert(0, str(Path(__file__).parent))

from changedet.aoi import load_aoi  # noqa: E402
from changedet.cube import Cube  # noqa: E402
from changedet.grid import GridSpec, aoi_grid  # noqa: E402
from changedet.pipeline import RunConfig, run_day  # noqa: E402

UTM = "EPSG:32631"
CITY = "oscd_sentinel2/images/bercy"
T1 = datetime(2016, 11, 30, 10, 57, 42, tzinfo=timezone.utc)
T2 = datetime(2017, 8, 29, 10, 50, 19, tzinfo=timezone.utc)
RES, DX, DY = 10.0, 20.0, -10.0
SECRET, CLIENT = "s44/regwin+s2=Q", "changedet-regwin-s2"


def _scenes(test_data, moved: bool):
    from sh_server import Scene
    from changedet.sources import sh_evalscripts as es

    city = test_data(CITY)
    with rasterio.open(next((city / "imgs_1").glob("*_B02.tif"))) as src:
        full = GridSpec.from_bounds(UTM, transform_bounds(src.crs, UTM, *src.bounds, densify_pts=21), RES)
    out = []
    for k, when in ((1, T1), (2, T2)):
        bands = {}
        for b in ("B02", "B03", "B04", "B08"):
            with rasterio.open(next((city / f"imgs_{k}").glob(f"*_{b}.tif"))) as src:
                dst = np.full(full.shape, np.nan, "float32")
                reproject(src.read(1).astype("float32") * 1e-4, dst, src_transform=src.transform, src_crs=src.crs,
                          dst_transform=full.transform, dst_crs=UTM, resampling=Resampling.bilinear,
                          src_nodata=0, dst_nodata=np.nan)
                bands[b] = dst
        scl = np.full(full.shape, 4.0, "float32")
        if k == 1:
            scl[10:60, 10:80] = 9
        bands["SCL"] = scl
        clm = np.isin(scl, es.SCL_CLOUDY).astype("float32")
        bands["CLM"] = clm
        t = full.transform
        if k == 2 and moved:
            t = Affine(t.a, t.b, t.c + DX, t.d, t.e, t.f + DY)
        out.append(Scene(id=f"S2_MSIL2A_{when:%Y%m%d}_T31UDQ", collection="sentinel-2-l2a", time=when,
                         platform="sentinel-2a", crs=UTM, transform=t, bands=bands, cloud_cover=2.0))
    return out, full


def _run(test_data, tmp: Path, monkeypatch, aoi_id: str, *, moved: bool, drop_window: bool):
    from sh_server import FakeSentinelHub, serving

    if shutil.which("node") is None:
        pytest.skip("node needed")
    scenes, full = _scenes(test_data, moved)
    server = FakeSentinelHub(client_id=CLIENT, client_secret=SECRET)
    for s in scenes:
        server.add_scene(s)
    r0, c0 = full.shape[0] // 2, full.shape[1] // 2
    x, y = full.xy(r0, c0)
    to_ll = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform
    poly = shp_transform(to_ll, box(x - 250, y - 250, x + 250, y + 250))
    reg = tmp / f"aois_{aoi_id}"
    reg.mkdir(parents=True)
    (reg / f"{aoi_id}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"role": "site", "id": aoi_id}, "geometry": mapping(poly)}]}))
    (reg / f"{aoi_id}.yaml").write_text(yaml.safe_dump({
        "id": aoi_id, "name": aoi_id, "kind": "depot", "timezone": "UTC", "cadence": "weekly",
        "sources": [{"name": "sentinelhub", "sensor": "s2", "resolution_m": RES, "retry_sleep_s": 0.01}],
        "metrics": ["changed_area_m2"], "rules": [], "recipients": {}}, sort_keys=False))
    aoi = load_aoi(aoi_id, registry=reg)
    cfg = RunConfig(data_dir=tmp / f"data_{aoi_id}", registry=reg, evidence=False, write_products=False)
    with serving(server, monkeypatch):
        first = run_day(aoi, T1.date(), cfg)
        assert first.status == "processed", first.summary()
        cube = Cube(cfg.data_dir, aoi.id, "s2", aoi_grid(aoi, RES))
        if drop_window:
            Path(cube.registration_path).unlink()
        second = run_day(aoi, T2.date(), cfg)
        n768 = sum(1 for b in server.bodies["process"] if b["output"]["width"] == 768)
    rec = {e["scene_id"]: e for e in cube.scenes()}
    return second, rec, cube, n768


def test_sentinel2_l2a_from_sentinel_hub_registers_on_the_window(test_data, tmp_path, monkeypatch):
    plain, rec, cube, n = _run(test_data, tmp_path, monkeypatch, "s2_plain", moved=False, drop_window=False)
    assert plain.status == "processed", plain.summary()
    assert rec[plain.scene_id]["coreg"]["window"]["on"] == "registration window"
    da, _ = cube.registration_reference()
    assert np.isnan(da.values[:, 10:20, :]).any()  # SCL cloud / no coverage NaN in the window reference
    moved, rec_m, _, n_m = _run(test_data, tmp_path, monkeypatch, "s2_moved", moved=True, drop_window=True)
    assert moved.status == "processed", moved.summary()
    assert "registration window reference made from scene" in (moved.note or "")
    # 3: day 1's window, the reference scene read again on the window (the day's window reply is
    # not kept in the download cache, ~10 MB a day), day 2's window.
    assert n_m == 3
    d_row, d_col = moved.shift_px[0] - plain.shift_px[0], moved.shift_px[1] - plain.shift_px[1]
    assert d_row == pytest.approx(DY / RES, abs=0.15) and d_col == pytest.approx(-DX / RES, abs=0.15), (d_row, d_col)
