"""``changedet coregister`` and ``changedet count`` (CLI wrappers over coreg and objects)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyproj
import pytest
import shapely
import shapely.geometry

from changedet.aoi import load_aoi
from changedet.cli import coregister as coregister_cli
from changedet.cli import count as count_cli
from changedet.errors import ChangedetError
from changedet.simulate.render import render_scene
from changedet.simulate.truth import write_scene

REPO = Path(__file__).resolve().parents[1]
PORT_DAY = date(2023, 7, 5)
RAIL_DAY = date(2023, 9, 20)   # 56 railcars in the yard on this date (seed 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    coregister_cli.add_parser(sub)
    count_cli.add_parser(sub)
    return p


def _run(argv: list[str], capsys) -> tuple[int, str]:
    args = _parser().parse_args([str(a) for a in argv])
    capsys.readouterr()
    rc = args.func(args)
    return rc, capsys.readouterr().out


def _run_json(argv, capsys) -> dict:
    rc, out = _run([*argv, "--json"], capsys)
    assert rc == 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one JSON object, got: {out!r}"
    return json.loads(lines[0])


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def port_pair(tmp_path_factory):
    """dunai_port at 1 m: a misregistered acquisition and a clear reference on the exact grid."""
    out = tmp_path_factory.mktemp("port")
    aoi = load_aoi("dunai_port")
    mov = render_scene(aoi, PORT_DAY, "vhr", resolution_m=1.0, misregistration=True, clear=True)
    ref = render_scene(aoi, PORT_DAY, "vhr", resolution_m=1.0, misregistration=False, clear=True)
    mov_paths = write_scene(mov, out, stem="moving")
    ref_paths = write_scene(ref, out, stem="reference")
    return {"moving": mov_paths["image"], "reference": ref_paths["image"], "mov_truth": mov.truth,
            "ref_truth": ref.truth, "dir": out}


@pytest.fixture(scope="module")
def railyard(tmp_path_factory):
    out = tmp_path_factory.mktemp("rail")
    aoi = load_aoi("tumangang_railyard")
    sc = render_scene(aoi, RAIL_DAY, "vhr", misregistration=False, clear=True)
    paths = write_scene(sc, out, stem="rail")
    return {"image": paths["image"], "truth": sc.truth, "crs": sc.grid.crs, "dir": out}


# ----------------------------------------------------------------------- coregister
def test_coregister_json_recovers_simulated_shift(port_pair, capsys, tmp_path):
    aligned = tmp_path / "aligned.tif"
    doc = _run_json(["coregister", port_pair["reference"], port_pair["moving"], "--out", aligned], capsys)
    for key in ("shift_x_px", "shift_y_px", "shift_x_m", "shift_y_m", "reliability", "tie_points",
                "similarity_before", "similarity_after", "applied", "reason"):
        assert key in doc, key
    applied = port_pair["mov_truth"]["applied_shift_px"]
    # The correction is minus the applied displacement; y is north = -row.
    exp_x, exp_y = -applied["col"], applied["row"]
    print(f"\nCLI shift x {doc['shift_x_px']:+.3f} y {doc['shift_y_px']:+.3f} px; expected {exp_x:+.3f} "
          f"{exp_y:+.3f}; reliability {doc['reliability']}, applied {doc['applied']} ({doc['reason']})")
    assert abs(doc["shift_x_px"] - exp_x) <= 0.3
    assert abs(doc["shift_y_px"] - exp_y) <= 0.3
    assert doc["shift_x_m"] == pytest.approx(doc["shift_x_px"] * 1.0, abs=1e-3)  # 1 m pixels
    assert doc["shift_y_m"] == pytest.approx(doc["shift_y_px"] * 1.0, abs=1e-3)
    assert isinstance(doc["applied"], bool) and isinstance(doc["tie_points"], int)
    assert (doc["reason"] == "") == doc["applied"]

    # --out: the aligned moving image on the reference grid.
    from changedet.io import read_raster

    ref, out = read_raster(port_pair["reference"]), read_raster(aligned)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out["x"].values, ref["x"].values)
    np.testing.assert_allclose(out["y"].values, ref["y"].values)
    assert out.rio.crs == ref.rio.crs
    assert list(out["band"].values) == list(ref["band"].values)


def test_coregister_human_summary(port_pair, capsys):
    rc, out = _run(["coregister", port_pair["reference"], port_pair["moving"]], capsys)
    assert rc == 0
    assert "shift" in out and "reliability" in out and "px" in out
    assert not out.lstrip().startswith("{")


def test_coregister_local_json(test_data, capsys, tmp_path):
    # The real Sentinel-2 pair, a 512 px reference window: AROSICS reports x/y_shift_map
    # -7.19 / -18.90 m at its centre (README.txt of the pair).
    x, y = 339611.0, 5856426.0
    ref = _s2_crop(test_data("arosics_s2_pair/ref_S2A_20160608T153121_T33UUU_sub.jp2"), tmp_path / "ref.tif", x, y, 256)
    tgt = _s2_crop(test_data("arosics_s2_pair/tgt_S2A_20160529T153631_T33UUU_sub.jp2"), tmp_path / "tgt.tif", x, y, 288)
    aligned = tmp_path / "aligned_local.tif"
    doc = _run_json(["coregister", ref, tgt, "--local", "--window", "256", "--step", "128", "--out", aligned], capsys)
    print(f"\nCLI --local S2: {doc}")
    assert doc["mode"] == "local" and doc["applied"] is True
    kept = doc["tie_points"]
    assert isinstance(kept, int) and 4 <= kept <= doc["tie_points_total"]
    # The mean of the warp over the window; the warp is near-rigid here.
    assert abs(doc["shift_x_m"] - (-7.19)) <= 2.0 and abs(doc["shift_y_m"] - (-18.90)) <= 2.0
    assert doc["shift_x_px"] == pytest.approx(doc["shift_x_m"] / 10.0, abs=1e-3)
    assert doc["similarity_after"] > doc["similarity_before"]
    assert aligned.exists()
    with pytest.raises(ChangedetError, match="--window 8 is too small"):
        _run(["coregister", ref, tgt, "--local", "--window", "8"], capsys)


def test_coregister_missing_file_names_it(port_pair, capsys, tmp_path):
    missing = tmp_path / "nope.tif"
    with pytest.raises(ChangedetError, match="nope.tif"):
        _run(["coregister", port_pair["reference"], missing], capsys)
    with pytest.raises(ChangedetError, match="has no band 'XYZ'"):
        _run(["coregister", port_pair["reference"], port_pair["moving"], "--band", "XYZ"], capsys)


def _s2_crop(src: Path, dst: Path, x: float, y: float, half: int) -> Path:
    import rioxarray

    from changedet.io import write_geotiff

    da = rioxarray.open_rasterio(src)
    res = float(abs(da.rio.resolution()[0]))
    win = da.sel(x=slice(x - half * res, x + half * res), y=slice(y + half * res, y - half * res)).load()
    win = win.where(win != 0)  # 0 = outside the footprint (the files declare no nodata)
    return write_geotiff(win, dst, cog=False)


def test_coregister_real_s2_pair(test_data, tmp_path, capsys):
    # AROSICS reports x/y_shift_map = -7.19 / -18.90 m at this point (README.txt of the pair).
    x, y = 339611.0, 5856426.0
    ref = _s2_crop(test_data("arosics_s2_pair/ref_S2A_20160608T153121_T33UUU_sub.jp2"), tmp_path / "ref.tif", x, y, 128)
    tgt = _s2_crop(test_data("arosics_s2_pair/tgt_S2A_20160529T153631_T33UUU_sub.jp2"), tmp_path / "tgt.tif", x, y, 160)
    doc = _run_json(["coregister", ref, tgt, "--out", tmp_path / "aligned.tif"], capsys)
    print(f"\nS2 pair: {doc}")
    assert abs(doc["shift_x_m"] - (-7.19)) <= 2.0
    assert abs(doc["shift_y_m"] - (-18.90)) <= 2.0
    assert doc["shift_x_px"] == pytest.approx(doc["shift_x_m"] / 10.0, abs=1e-3)
    assert doc["shift_y_px"] == pytest.approx(doc["shift_y_m"] / 10.0, abs=1e-3)
    assert doc["applied"] is True
    assert (tmp_path / "aligned.tif").exists()


# ---------------------------------------------------------------------------- count
def _sun(truth) -> list[str]:
    return ["--sun-azimuth", str(truth["sun"]["azimuth_deg"]), "--sun-elevation", str(truth["sun"]["elevation_deg"])]


def _check_contract(doc: dict) -> None:
    assert set(doc) >= {"total", "by_type", "per_feature", "detections"}
    for pf in doc["per_feature"]:
        assert {"id", "count", "by_type"} <= set(pf)
    for d in doc["detections"]:
        assert {"type", "polygon", "score"} <= set(d)
        assert shapely.geometry.shape(d["polygon"]).is_valid


def test_count_railcars_with_aoi(railyard, capsys, tmp_path):
    out = tmp_path / "dets.geojson"
    doc = _run_json(["count", "railcars", railyard["image"], "--aoi", "tumangang_railyard", "--out", out,
                     *_sun(railyard["truth"])], capsys)
    _check_contract(doc)
    truth = railyard["truth"]["counts"]["railcars"]
    print(f"\nrailcars: truth {truth}, counted {doc['total']}")
    assert truth > 20
    assert abs(doc["total"] - truth) <= 0.10 * truth
    assert {p["id"] for p in doc["per_feature"]} == {f.id for f in load_aoi("tumangang_railyard").features_by_role("track")}
    # --aoi features are lon/lat, so the detections come back in EPSG:4326.
    aoi = load_aoi("tumangang_railyard")
    site = aoi.polygon.buffer(0.01)
    assert all(site.contains(shapely.geometry.shape(d["polygon"])) for d in doc["detections"])
    gj = json.loads(out.read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == len(doc["detections"])
    assert all(site.contains(shapely.geometry.shape(f["geometry"])) for f in gj["features"])


def _features_file(path: Path, aoi_id: str, crs, *, roles: set[str] | None = None, crs_member: bool = True) -> Path:
    aoi = load_aoi(aoi_id)
    feats = [{"type": "Feature", "properties": {"id": f.id, "role": f.role},
              "geometry": shapely.geometry.mapping(aoi.to_crs(f.geometry, crs))}
             for f in aoi.features if roles is None or f.role in roles]
    doc = {"type": "FeatureCollection", "features": feats}
    if crs_member:
        doc["crs"] = {"type": "name", "properties": {"name": f"EPSG:{crs.to_epsg()}"}}
    path.write_text(json.dumps(doc))
    return path


def test_count_railcars_features_in_image_crs_match_aoi(railyard, capsys, tmp_path):
    feats = _features_file(tmp_path / "tracks.geojson", "tumangang_railyard", railyard["crs"])
    by_file = _run_json(["count", "railcars", railyard["image"], "--features", feats, *_sun(railyard["truth"])], capsys)
    by_aoi = _run_json(["count", "railcars", railyard["image"], "--aoi", "tumangang_railyard",
                        *_sun(railyard["truth"])], capsys)
    _check_contract(by_file)
    assert by_file["total"] == by_aoi["total"]
    assert by_file["by_type"] == by_aoi["by_type"]
    assert by_file["per_feature"] == by_aoi["per_feature"]
    # Features in the image CRS: detections stay in the image CRS (metres, UTM-sized numbers).
    x, y = shapely.geometry.shape(by_file["detections"][0]["polygon"]).centroid.coords[0]
    assert abs(x) > 1000 and abs(y) > 1000


def test_count_ships_equals_truth(port_pair, capsys):
    doc = _run_json(["count", "ships", port_pair["reference"], "--aoi", "dunai_port"], capsys)
    _check_contract(doc)
    assert doc["total"] == port_pair["ref_truth"]["counts"]["ships"]
    rc, out = _run(["count", "ships", port_pair["reference"], "--aoi", "dunai_port"], capsys)
    assert rc == 0 and "ships" in out and not out.lstrip().startswith("{")


def test_count_errors(railyard, port_pair, capsys, tmp_path):
    import rasterio

    # Features without a track.
    berths = _features_file(tmp_path / "berths.geojson", "dunai_port", pyproj.CRS.from_epsg(4326),
                            roles={"berth", "water"}, crs_member=False)
    with pytest.raises(ChangedetError, match="no track"):
        _run(["count", "railcars", railyard["image"], "--features", berths], capsys)
    with pytest.raises(ChangedetError, match="stack_zone"):
        _run(["count", "containers", port_pair["reference"], "--aoi", "dunai_port"], capsys)
    with pytest.raises(ChangedetError, match="missing.geojson"):
        _run(["count", "railcars", railyard["image"], "--features", tmp_path / "missing.geojson"], capsys)
    # An image without CRS.
    bare = tmp_path / "nocrs.tif"
    with rasterio.open(bare, "w", driver="GTiff", width=64, height=64, count=4, dtype="float32") as dst:
        dst.write(np.ones((4, 64, 64), "float32"))
    with pytest.raises(ChangedetError, match="nocrs.tif.*no CRS"):
        _run(["count", "railcars", bare, "--aoi", "tumangang_railyard"], capsys)


# ----------------------------------------------------------------------- end to end
# One real ``python -m changedet`` per command proves it is registered and reachable from
# the console; the other cases go through ``changedet.cli.main`` in-process (the same
# parser, dispatch and one-line error handling, without an interpreter start-up each).
def _cli(*argv, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "changedet", *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120, **kw)


def _main(capsys, *argv) -> tuple[int, str, str]:
    from changedet.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.slow
def test_end_to_end_coregister(port_pair, capsys):
    r = _cli("coregister", port_pair["reference"], port_pair["moving"], "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    applied = port_pair["mov_truth"]["applied_shift_px"]
    assert abs(doc["shift_x_px"] + applied["col"]) <= 0.3 and abs(doc["shift_y_px"] - applied["row"]) <= 0.3
    rc, _, err = _main(capsys, "coregister", port_pair["reference"], port_pair["dir"] / "missing.tif")
    assert rc == 2 and "missing.tif" in err and "Traceback" not in err
    rc, out, err = _main(capsys, "coregister", port_pair["reference"], port_pair["moving"], "--local", "--window",
                         "128", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "local" and doc["tie_points"] <= doc["tie_points_total"]


def test_end_to_end_count(port_pair, capsys):
    r = _cli("count", "ships", port_pair["reference"], "--aoi", "dunai_port", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == port_pair["ref_truth"]["counts"]["ships"]
    rc, _, err = _main(capsys, "count", "containers", port_pair["reference"], "--aoi", "dunai_port")
    assert rc == 2 and "stack_zone" in err and "Traceback" not in err
