"""``changedet fetch`` and ``changedet cube info`` end to end: the simulator and local files as
sources, progress, idempotent re-runs, skipped scenes with reasons, a cube locked by another
process, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from shapely.geometry import box, mapping
from shapely.ops import transform as shp_transform

from changedet.aoi import load_aoi
from changedet.cli import main
from changedet.cube import Cube
from changedet.grid import aoi_grid

SIM = ["fetch", "--aoi", "tumangang_railyard", "--source", "simulator", "--sensor", "s2", "--resolution", "10"]


def test_fetch_simulator_then_cube_info(tmp_path, capsys):
    data = str(tmp_path / "data")
    args = SIM + ["--start", "2023-07-01", "--end", "2023-08-10", "--data-dir", data, "--max-cloud", "40"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "tumangang_railyard s2" in err and "scene" in err  # the progress bar, on stderr
    assert out.startswith("tumangang_railyard/s2 from simulator:") and "stored" in out
    aoi = load_aoi("tumangang_railyard")
    cube = Cube(data, aoi.id, "s2", aoi_grid(aoi, 10.0), product="acquired")
    stored, skipped = cube.scenes(), cube.skipped()
    assert len(stored) + len(skipped) == 8  # Sentinel-2 every 5 days
    assert stored and all(s["cloud_fraction"] <= 0.40 and s["cloud_mask"] == "clm" for s in stored)
    assert all(s["cloud_fraction"] > 0.40 for s in skipped)
    for s in skipped:
        assert s["reason"] in out  # each skipped scene is reported with its reason
    # again: nothing new, with --json
    assert main(args + ["--json", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    statuses = {o["scene_id"]: o["status"] for o in doc["outcomes"]}
    assert {sid for sid, st in statuses.items() if st == "already"} == {s["scene_id"] for s in stored}
    assert len(cube.scenes()) == len(stored)
    # a co-registration annotation shows up in cube info
    cube.annotate(stored[0]["scene_id"], {"coreg": {"shift_row_px": 0.31, "shift_col_px": -0.12}})
    assert main(["cube", "info", "tumangang_railyard", "--data-dir", data]) == 0
    out, _ = capsys.readouterr()
    assert f"{len(stored)} scenes" in out and "simulator" in out and "MB" in out and "+0.31,-0.12" in out
    for s in stored:
        assert s["time"][:10] in out
    assert out.count("skipped 2023") == len(skipped)
    assert main(["cube", "info", "tumangang_railyard", "--data-dir", data, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    [c] = info["cubes"]
    assert c["n_scenes"] == len(stored) and c["sources"] == {"simulator": len(stored)}
    assert c["bands"] == ["B02", "B03", "B04", "B08", "CLM"]


def _eolearn_aoi(test_data, registry: Path, images: Path) -> str:
    root = test_data("eolearn_testeopatch/TestEOPatch")
    bbox = json.loads((root / "bbox.geojson").read_text())
    xs, ys = zip(*bbox["coordinates"][0])
    times = json.loads((root / "timestamps.json").read_text())[:4]
    ndvi, clm = np.load(root / "data" / "NDVI.npy")[:4, ..., 0], np.load(root / "mask" / "CLM.npy")[:4, ..., 0]
    images.mkdir(parents=True)
    for k, t in enumerate(times):
        with rasterio.open(images / f"patch_{k}.tif", "w", driver="GTiff", height=ndvi.shape[1], width=ndvi.shape[2],
                           count=2, dtype="float32", crs="EPSG:32633",
                           transform=from_origin(min(xs), max(ys), 10, 10)) as dst:
            dst.write(np.stack([ndvi[k], clm[k].astype("float32")]))
            dst.update_tags(TIFFTAG_DATETIME=datetime.fromisoformat(t).strftime("%Y:%m:%d %H:%M:%S"))
    to_ll = pyproj.Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform
    poly = shp_transform(to_ll, box(min(xs) + 150, min(ys) + 150, max(xs) - 150, max(ys) - 150))
    registry.mkdir(parents=True)
    (registry / "patch.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"role": "site", "id": "patch"}, "geometry": mapping(poly)}]}))
    (registry / "patch.yaml").write_text(yaml.safe_dump({
        "id": "patch", "name": "patch", "kind": "depot", "timezone": "UTC", "cadence": "weekly",
        "sources": [{"name": "local", "sensor": "s2", "resolution_m": 10, "path": str(images),
                     "bands": ["NDVI", "CLM"], "max_cloud": 50}],
        "metrics": ["changed_area_m2"]}))
    return str(registry / "patch.yaml")


def test_fetch_local_files_from_the_aoi_entry(test_data, tmp_path, capsys):
    aoi_path = _eolearn_aoi(test_data, tmp_path / "aois", tmp_path / "imgs")
    data = str(tmp_path / "data")
    args = ["fetch", "--aoi", aoi_path, "--source", "local", "--start", "2015-07-01", "--end", "2015-09-30",
            "--data-dir", data, "--json", "--no-progress"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    # the first four eo-learn dates: clear, overcast, overcast, clear (limit 50 % from the AOI entry)
    assert [o["status"] for o in doc["outcomes"]] == ["stored", "skipped", "skipped", "stored"]
    assert all(o["reason"].startswith("all cloud") for o in doc["outcomes"][1:3])
    assert [o["time"][:10] for o in doc["outcomes"]] == ["2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30"]
    # --max-cloud overrides the entry; an overcast scene then gets stored
    assert main(args[:-2] + ["--no-progress", "--max-cloud", "100"]) == 0
    out = capsys.readouterr().out
    assert "2 stored" in out and "2 already" in out


HOLD = """
import fcntl, sys, time
fh = open(sys.argv[1], "a")
fcntl.flock(fh, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(30)
"""


def test_fetch_skips_a_cube_another_run_is_writing(tmp_path, capsys):
    data = tmp_path / "data"
    aoi = load_aoi("tumangang_railyard")
    cube = Cube(data, aoi.id, "s2", aoi_grid(aoi, 10.0), product="acquired")
    cube._lock_path.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cube._lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(SIM + ["--start", "2023-07-01", "--end", "2023-07-20", "--data-dir", str(data),
                           "--lock-timeout", "0.3", "--no-progress", "--max-cloud", "100"])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    err = capsys.readouterr().err
    assert "being written by another run" in err and "--lock-timeout" in err and "Traceback" not in err
    assert cube.scenes() == [] and not cube.path.exists()


D = ["--start", "2023-07-01", "--end", "2023-07-20"]


@pytest.mark.parametrize("args, message", [
    (["--source", "simulator", "--sensor", "s2", "--resolution", "10", "--start", "2023-07-20", "--end",
      "2023-07-01"], "before start date"),
    (["--source", "stac"] + D, "has no 'stac' source entry"),
    (["--source", "nonsense", "--sensor", "s2", "--resolution", "10"] + D, "unknown source 'nonsense'"),
    (["--source", "simulator", "--sensor", "s2", "--resolution", "10", "--max-cloud", "150"] + D,
     "between 0 and 100"),
])
def test_bad_input_is_one_line_and_stores_nothing(tmp_path, capsys, args, message):
    base = ["fetch", "--aoi", "tumangang_railyard", "--data-dir", str(tmp_path / "d"), "--no-progress"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_cube_info_without_a_cube(tmp_path, capsys):
    assert main(["cube", "info", "tumangang_railyard", "--data-dir", str(tmp_path)]) == 2
    assert "no cube of AOI tumangang_railyard" in capsys.readouterr().err


def test_fetched_scenes_do_not_hide_scenes_from_the_pipeline(tmp_path, capsys):
    # The pipeline keeps co-registered slices in its own cube and skips scene ids it
    # has; raw fetched scenes must land beside it, not in it.
    data = str(tmp_path / "data")
    assert main(SIM + ["--start", "2023-07-01", "--end", "2023-07-12", "--data-dir", data, "--max-cloud", "100",
                       "--no-progress"]) == 0
    capsys.readouterr()
    aoi = load_aoi("tumangang_railyard")
    grid = aoi_grid(aoi, 10.0)
    fetched = Cube(data, aoi.id, "s2", grid, product="acquired")
    aligned = Cube(data, aoi.id, "s2", grid)
    assert fetched.scenes() and fetched.path != aligned.path
    assert not any(aligned.has(s["scene_id"]) for s in fetched.scenes())
    assert main(["cube", "info", "tumangang_railyard", "--data-dir", data, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["product"] for c in doc["cubes"]] == ["acquired"]
    with pytest.raises(Exception, match="product name"):
        Cube(data, aoi.id, "s2", grid, product="../x")
