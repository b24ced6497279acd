"""Tests of changedet.cube: appending and reading scenes, idempotency, read filters,
grid/band checks, crash safety, corrupt provenance, concurrent writers and the
registration reference."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyproj
import pytest
import xarray as xr
from shapely.geometry import box

from changedet.cube import Cube, CubeLocked, clear_mask, optical_bands
from changedet.errors import CubeError
from changedet.grid import GridSpec, crs_of
from changedet.sources.base import SceneRecord

CRS = "EPSG:32652"
GRID = GridSpec.from_bounds(CRS, (300000, 4100000, 300064, 4100064), 1.0)  # 64 x 64 at 1 m
BANDS = ["B02", "B03", "B04"]
T0 = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)


def scene(i: int, *, time: datetime | None = None) -> SceneRecord:
    """Synthetic scene ``s<i>`` acquired ``i`` days after T0 (same time of day)."""
    return SceneRecord(
        id=f"s{i}", source="test", aoi_id="site", sensor="vhr",
        time=time if time is not None else T0 + timedelta(days=i),
        platform="synthetic", cloud_cover=float(i), footprint=box(130.0, 42.0, 130.1, 42.1),
        resolution_m=1.0,
    )


def image(i: int, grid: GridSpec = GRID, bands=BANDS) -> xr.DataArray:
    """Reproducible reflectance-like image for scene ``i`` (values in 0..1, some NaN)."""
    rng = np.random.default_rng(i)
    data = rng.uniform(0.0, 1.0, (len(bands),) + grid.shape).astype("float32")
    data[:, i % grid.shape[0], :5] = np.nan
    return grid.attach(data, bands=list(bands))


def make_cube(tmp_path, **kw) -> Cube:
    return Cube(tmp_path, "site", "vhr", GRID, **kw)


def stored_time_steps(cube: Cube) -> int:
    with xr.open_zarr(cube.path, consolidated=False) as ds:
        return ds.sizes["time"]


# -- append and read -------------------------------------------------------------------
def test_paths(tmp_path):
    cube = make_cube(tmp_path)
    assert cube.path == tmp_path / "cubes" / "site" / "vhr_1m.zarr"
    assert cube.provenance_path == tmp_path / "cubes" / "site" / "vhr_1m.provenance.json"
    assert cube.read() is None and cube.scenes() == [] and not cube.has("s1")


def test_append_read_reflectance_quantised(tmp_path):
    cube = make_cube(tmp_path)
    assert cube.append(scene(1), image(1), extra={"note": "first"})
    out = cube.read()
    assert out.dims == ("time", "band", "y", "x")
    assert out.chunks is not None  # lazy
    assert list(out["band"].values) == BANDS
    assert list(out["scene_id"].values) == ["s1"]
    assert crs_of(out) == pyproj.CRS.from_epsg(32652)
    assert GridSpec.of(out) == GRID
    assert out.dtype.kind == "f"
    got, want = out.values[0], image(1).values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, atol=1e-4)  # uint16 x 1e-4 on disk
    (entry,) = cube.scenes()
    assert entry["scene_id"] == "s1" and entry["source"] == "test" and entry["note"] == "first"
    assert entry["index"] == 0 and entry["cloud_cover"] == 1.0
    assert pd.Timestamp(entry["time"]) == pd.Timestamp(T0 + timedelta(days=1))
    with xr.open_zarr(cube.path, consolidated=False) as ds:
        assert ds["data"].encoding["dtype"] == np.dtype("uint16")


def test_reflectance_is_clipped_to_valid_range(tmp_path):
    cube = make_cube(tmp_path)
    data = np.full((1,) + GRID.shape, 0.5, dtype="float32")
    data[0, 0, 0], data[0, 0, 1], data[0, 0, 2] = -0.2, 7.0, np.nan
    cube.append(scene(1), GRID.attach(data, bands=["B02"]))
    got = cube.read().values[0, 0, 0, :3]
    assert got[0] == 0.0 and got[1] == pytest.approx(6.5, abs=1e-4) and np.isnan(got[2])


def test_append_read_float32_exact(tmp_path):
    cube = make_cube(tmp_path, reflectance=False)
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((2,) + GRID.shape) * 20 - 15).astype("float32")  # SAR dB, negative too
    data[1, 5, 5] = np.nan
    cube.append(scene(1), GRID.attach(data, bands=["VV", "VH"]))
    out = cube.read()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.values[0], data)


def test_times_sorted_when_appended_out_of_order(tmp_path):
    cube = make_cube(tmp_path)
    order = [3, 1, 4, 0, 2]
    for i in order:
        assert cube.append(scene(i), image(i))
    out = cube.read()
    assert list(out["scene_id"].values) == ["s0", "s1", "s2", "s3", "s4"]
    expected = [pd.Timestamp(T0 + timedelta(days=i)).tz_convert("UTC").tz_localize(None) for i in range(5)]
    assert list(pd.DatetimeIndex(out["time"].values)) == expected
    for k in range(5):
        np.testing.assert_allclose(out.values[k], image(k).values, atol=1e-4)
    assert [s["scene_id"] for s in cube.scenes()] == ["s0", "s1", "s2", "s3", "s4"]
    # on disk the steps stay in append order; nothing is rewritten
    assert [s["index"] for s in cube.scenes()] == [3, 1, 4, 0, 2]


def test_append_same_scene_twice_is_idempotent(tmp_path):
    cube = make_cube(tmp_path)
    assert cube.append(scene(1), image(1)) is True
    assert cube.append(scene(1), image(2)) is False  # same id: ignored, even with other pixels
    assert Cube(tmp_path, "site", "vhr", GRID).append(scene(1), image(1)) is False
    assert cube.has("s1") and not cube.has("s2")
    assert len(cube.scenes()) == 1
    assert stored_time_steps(cube) == 1
    np.testing.assert_allclose(cube.read().values[0], image(1).values, atol=1e-4)


# -- read filters ----------------------------------------------------------------------
@pytest.fixture
def five(tmp_path) -> Cube:
    cube = make_cube(tmp_path)
    for i in [2, 0, 4, 1, 3]:
        cube.append(scene(i), image(i))
    return cube


def ids(da) -> list[str]:
    return None if da is None else [str(s) for s in da["scene_id"].values]


def test_read_before_is_strict(five):
    assert ids(five.read(before=T0 + timedelta(days=2))) == ["s0", "s1"]
    assert ids(five.read(before=T0 + timedelta(days=2, seconds=1))) == ["s0", "s1", "s2"]
    assert five.read(before=T0) is None


def test_read_before_naive_is_utc_and_other_zones_are_converted(five):
    naive = datetime(2024, 5, 3, 2, 0)  # == T0 + 2 days in UTC
    assert ids(five.read(before=naive)) == ["s0", "s1"]
    seoul = datetime(2024, 5, 3, 11, 0, 1, tzinfo=timezone(timedelta(hours=9)))  # 02:00:01 UTC
    assert ids(five.read(before=seoul)) == ["s0", "s1", "s2"]


def test_read_last_and_exclude(five):
    assert ids(five.read(last=2)) == ["s3", "s4"]
    assert ids(five.read(last=10)) == ["s0", "s1", "s2", "s3", "s4"]
    assert ids(five.read(exclude="s2")) == ["s0", "s1", "s3", "s4"]
    assert ids(five.read(exclude="nope")) == ["s0", "s1", "s2", "s3", "s4"]
    # exclude is applied before last; before before last
    assert ids(five.read(exclude="s4", last=2)) == ["s2", "s3"]
    assert ids(five.read(before=T0 + timedelta(days=4), last=2, exclude="s3")) == ["s1", "s2"]
    # the pixels follow the ids
    out = five.read(before=T0 + timedelta(days=4), last=2)
    np.testing.assert_allclose(out.values[0], image(2).values, atol=1e-4)
    np.testing.assert_allclose(out.values[1], image(3).values, atol=1e-4)


def test_read_last_zero_returns_nothing(five):
    assert five.read(last=0) is None


# -- refused appends -------------------------------------------------------------------
def test_grid_mismatch_is_refused(tmp_path):
    cube = make_cube(tmp_path)
    shifted = GridSpec.from_bounds(CRS, (300001, 4100000, 300065, 4100064), 1.0)
    other_res = GridSpec.from_bounds(CRS, (300000, 4100000, 300064, 4100064), 2.0)
    other_crs = GridSpec.from_bounds("EPSG:32651", (300000, 4100000, 300064, 4100064), 1.0)
    for g in (shifted, other_res, other_crs):
        with pytest.raises(CubeError, match="not on the cube grid") as err:
            cube.append(scene(1), image(1, grid=g))
        assert "reproject_to" in str(err.value)
    assert cube.scenes() == [] and not cube.path.exists()


def test_band_mismatch_is_refused(tmp_path):
    cube = make_cube(tmp_path)
    cube.append(scene(1), image(1))
    for bands in (["B02", "B03", "B08"], ["B03", "B02", "B04"], ["B02", "B03"]):
        with pytest.raises(CubeError, match="has bands") as err:
            cube.append(scene(2), image(2, bands=bands))
        assert "s2" in str(err.value) and str(BANDS) in str(err.value)
    assert [s["scene_id"] for s in cube.scenes()] == ["s1"]
    assert stored_time_steps(cube) == 1


# -- crash safety ----------------------------------------------------------------------
class SimulatedCrash(RuntimeError):
    pass


def crash_on_call(monkeypatch, k: int) -> None:
    """Make the k-th provenance write (counting from 1) die, as a killed process would."""
    real = Cube._write_provenance
    calls = {"n": 0}

    def write(self, doc):
        calls["n"] += 1
        if calls["n"] == k:
            raise SimulatedCrash("killed between the Zarr append and the provenance write")
        return real(self, doc)

    monkeypatch.setattr(Cube, "_write_provenance", write)


def test_crash_before_provenance_write_leaves_no_visible_or_stale_step(tmp_path, monkeypatch):
    cube = make_cube(tmp_path)
    crash_on_call(monkeypatch, 3)
    cube.append(scene(1), image(1))
    cube.append(scene(2), image(2))
    with pytest.raises(SimulatedCrash):
        cube.append(scene(3), image(3))
    monkeypatch.undo()
    assert stored_time_steps(cube) == 3  # the orphan pixels really are on disk

    fresh = Cube(tmp_path, "site", "vhr", GRID)
    assert [s["scene_id"] for s in fresh.scenes()] == ["s1", "s2"]
    assert not fresh.has("s3")
    out = fresh.read()
    assert ids(out) == ["s1", "s2"] and out.sizes["time"] == 2

    assert fresh.append(scene(4), image(4))
    with xr.open_zarr(fresh.path, consolidated=False) as ds:
        assert ds.sizes["time"] == 3
        stored = ds["data"].values
        times = list(pd.DatetimeIndex(ds["time"].values))
    for k, i in enumerate([1, 2, 4]):
        np.testing.assert_allclose(stored[k], image(i).values, atol=1e-4)
        assert times[k] == pd.Timestamp(T0 + timedelta(days=i)).tz_localize(None)
    assert [s["index"] for s in fresh.scenes()] == [0, 1, 2]
    assert ids(fresh.read()) == ["s1", "s2", "s4"]
    # the crashed scene can now be appended for real
    assert fresh.append(scene(3), image(3))
    assert ids(fresh.read()) == ["s1", "s2", "s3", "s4"]
    np.testing.assert_allclose(fresh.read().sel(time=fresh.read()["scene_id"] == "s3").values[0],
                               image(3).values, atol=1e-4)


def test_crash_on_first_append_leaves_empty_cube(tmp_path, monkeypatch):
    cube = make_cube(tmp_path)
    crash_on_call(monkeypatch, 1)
    with pytest.raises(SimulatedCrash):
        cube.append(scene(1), image(1))
    monkeypatch.undo()
    fresh = Cube(tmp_path, "site", "vhr", GRID)
    assert fresh.scenes() == [] and fresh.read() is None
    assert fresh.append(scene(2), image(2))
    assert stored_time_steps(fresh) == 1 and ids(fresh.read()) == ["s2"]


def test_corrupt_provenance_is_reported_and_nothing_deleted(tmp_path):
    cube = make_cube(tmp_path)
    cube.append(scene(1), image(1))
    cube.append(scene(2), image(2))
    cube.provenance_path.write_text('{"format": 1, "scenes": [{"scene_id": "s1", ')
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for call in (cube.scenes, cube.read, lambda: cube.has("s1"), lambda: cube.append(scene(3), image(3))):
        with pytest.raises(CubeError) as err:
            call()
        msg = str(err.value)
        assert str(cube.provenance_path) in msg and "corrupt" in msg
        assert "restore" in msg or "delete" in msg
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert cube.provenance_path.read_text() == '{"format": 1, "scenes": [{"scene_id": "s1", '
    assert stored_time_steps(cube) == 2


# -- concurrent writers ----------------------------------------------------------------
def test_concurrent_threads_store_every_scene_once(tmp_path):
    n_threads, per_thread = 4, 3
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            cube = Cube(tmp_path, "site", "vhr", GRID)  # one instance per writer, as separate runs do
            barrier.wait()
            for k in range(per_thread):
                i = t * per_thread + k
                cube.append(scene(i), image(i))
                cube.append(scene(i), image(i))  # a duplicate racing with the others
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    n = n_threads * per_thread
    cube = make_cube(tmp_path)
    entries = cube.scenes()
    assert sorted(s["scene_id"] for s in entries) == sorted(f"s{i}" for i in range(n))
    assert sorted(s["index"] for s in entries) == list(range(n))
    assert stored_time_steps(cube) == n
    out = cube.read()
    assert ids(out) == [f"s{i}" for i in range(n)]
    for i in range(n):
        np.testing.assert_allclose(out.values[i], image(i).values, atol=1e-4)


def _process_writer(root: str, ids_: list[int]) -> None:
    cube = Cube(root, "site", "vhr", GRID)
    for i in ids_:
        cube.append(scene(i), image(i))


def test_concurrent_processes_store_every_scene_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # no fork after zarr/dask threads started
    procs = [ctx.Process(target=_process_writer, args=(str(tmp_path), [p * 2, p * 2 + 1, 0])) for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    cube = make_cube(tmp_path)
    assert [s["scene_id"] for s in cube.scenes()] == ["s0", "s1", "s2", "s3"]
    assert stored_time_steps(cube) == 4
    out = cube.read()
    for k in range(4):
        np.testing.assert_allclose(out.values[k], image(k).values, atol=1e-4)


# -- reference -------------------------------------------------------------------------
def test_reference_round_trip_and_replacement(tmp_path):
    cube = make_cube(tmp_path)
    assert cube.reference() is None
    ref = image(7)
    cube.set_reference(ref)
    assert cube.reference_path.exists()
    got = cube.reference()
    assert list(got["band"].values) == BANDS
    assert GridSpec.of(got) == GRID
    np.testing.assert_array_equal(got.values, ref.values)
    # the returned array is a copy: changing it does not change the next read
    got[:] = -1.0
    np.testing.assert_array_equal(cube.reference().values, ref.values)
    # a new reference replaces the old one, also for another Cube instance
    cube.set_reference(image(8))
    np.testing.assert_array_equal(Cube(tmp_path, "site", "vhr", GRID).reference().values, image(8).values)


# -- helpers ---------------------------------------------------------------------------
def test_optical_bands_and_clear_mask():
    data = np.full((3,) + GRID.shape, 0.2, dtype="float32")
    data[2] = 0.0
    data[2, 0, :10] = 1.0  # cloud
    data[0, 1, 0] = np.nan  # no data
    da = GRID.attach(data, bands=["B02", "B03", "CLM"])
    assert list(optical_bands(da)["band"].values) == ["B02", "B03"]
    mask = clear_mask(da)
    assert mask.dims == ("y", "x")
    assert not mask.values[0, :10].any() and mask.values[0, 10:].all()
    assert not mask.values[1, 0] and mask.values[1, 1:].all()
    assert int((~mask).sum()) == 11


# -- known problems --------------------------------------------------------------------
def test_scene_times_with_different_times_of_day(tmp_path):
    cube = make_cube(tmp_path)
    t1 = datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    t2 = datetime(2024, 5, 3, 10, 31, 17, 250000, tzinfo=timezone.utc)
    cube.append(scene(1, time=t1), image(1))
    cube.append(scene(2, time=t2), image(2))
    got = list(pd.DatetimeIndex(cube.read()["time"].values))
    assert got == [pd.Timestamp(t1).tz_localize(None), pd.Timestamp(t2).tz_localize(None)]


# -- annotate, skipped record, content hash ---------------------------------------------
def test_annotate_merges_fields_under_the_lock(tmp_path):
    cube = make_cube(tmp_path)
    cube.append(scene(1), image(1), extra={"cloud_fraction": 0.1})
    cube.append(scene(2), image(2))
    shift = {"shift_row_px": 0.25, "shift_col_px": -1.5, "reliability": 0.9}
    cube.annotate("s1", {"coreg": shift, "quality": "good"})
    cube.annotate("s1", {"quality": "checked"})
    e1, e2 = cube.scenes()
    assert e1["coreg"] == shift and e1["quality"] == "checked" and e1["cloud_fraction"] == 0.1
    assert e1["index"] == 0 and e1["scene_id"] == "s1" and "annotated_at" in e1
    assert "coreg" not in e2
    with pytest.raises(CubeError, match="not in the cube"):
        cube.annotate("s9", {"coreg": shift})
    with pytest.raises(CubeError, match="identify the stored slice"):
        cube.annotate("s1", {"index": 5})
    # the pixels are untouched; other Cube instances see the annotation
    np.testing.assert_allclose(cube.read().values[0], image(1).values, atol=1e-4)
    assert Cube(tmp_path, "site", "vhr", GRID).info()["scenes"][0]["coreg"] == shift


def test_annotate_races_with_appends(tmp_path):
    cube = make_cube(tmp_path)
    cube.append(scene(0), image(0))
    errors = []

    def annotate():
        try:
            for k in range(20):
                Cube(tmp_path, "site", "vhr", GRID).annotate("s0", {"k": k})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    th = threading.Thread(target=annotate)
    th.start()
    for i in range(1, 6):
        Cube(tmp_path, "site", "vhr", GRID).append(scene(i), image(i))
    th.join(timeout=60)
    assert not errors
    entries = cube.scenes()
    assert [e["scene_id"] for e in entries] == [f"s{i}" for i in range(6)]  # no append lost
    assert entries[0]["k"] == 19  # no annotation lost


def test_same_pixels_under_another_id_are_not_stored_twice(tmp_path):
    cube = make_cube(tmp_path)
    assert cube.append(scene(1), image(1))
    other = SceneRecord(**{**scene(1).__dict__, "id": "same-acquisition-other-catalogue"})
    assert cube.append(other, image(1)) is False
    assert [s["scene_id"] for s in cube.scenes()] == ["s1"] and stored_time_steps(cube) == 1
    assert len(cube.scenes()[0]["sha256"]) == 64


def test_skipped_scenes_are_recorded_and_cleared_when_stored(tmp_path):
    cube = make_cube(tmp_path)
    cube.record_skipped(scene(1), "80% of the site under cloud", cloud_fraction=0.8)
    cube.record_skipped(scene(1), "75% of the site under cloud", cloud_fraction=0.75)  # replaces
    cube.record_skipped(scene(2), "all cloud")
    assert [(s["scene_id"], s["reason"]) for s in cube.skipped()] == [
        ("s1", "75% of the site under cloud"), ("s2", "all cloud")]
    assert cube.scenes() == [] and cube.read() is None
    cube.append(scene(1), image(1))
    assert [s["scene_id"] for s in cube.skipped()] == ["s2"]
    info = cube.info()
    assert info["n_scenes"] == 1 and info["bands"] == BANDS and info["size_bytes"] > 0
    assert [s["scene_id"] for s in info["skipped"]] == ["s2"]


# -- fsspec stores -----------------------------------------------------------------------
def test_memory_store_behaves_like_a_local_one(tmp_path):
    import fsspec

    root = f"memory://cubes-{uuid.uuid4().hex}"
    cube = Cube(root, "site", "vhr", GRID)
    assert cube.remote and cube.path == f"{root}/cubes/site/vhr_1m.zarr"
    assert cube.read() is None
    for i in [2, 0, 1]:
        assert cube.append(scene(i), image(i))
    assert cube.append(scene(1), image(1)) is False
    out = Cube(root, "site", "vhr", GRID).read()
    assert ids(out) == ["s0", "s1", "s2"]
    for k in range(3):
        np.testing.assert_allclose(out.values[k], image(k).values, atol=1e-4)
    cube.annotate("s2", {"coreg": {"shift_row_px": 1.0, "shift_col_px": 0.0}})
    assert cube.scenes()[2]["coreg"]["shift_row_px"] == 1.0
    cube.set_reference(image(7))
    np.testing.assert_array_equal(cube.reference().values, image(7).values)
    fs = fsspec.filesystem("memory")
    assert fs.exists(cube.provenance_path) and not fs.exists(cube._lock_path)  # lease released
    # threads of one process are serialised exactly on a remote store as well
    errors = []

    def work(t):
        try:
            for i in range(3 + 2 * t, 5 + 2 * t):
                Cube(root, "site", "vhr", GRID).append(scene(i), image(i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    [th.start() for th in threads]
    [th.join(timeout=60) for th in threads]
    assert not errors and ids(cube.read()) == [f"s{i}" for i in range(7)]
    assert sorted(e["index"] for e in cube.scenes()) == list(range(7))


def test_remote_lease_held_by_another_writer_times_out(tmp_path):
    import fsspec

    root = f"memory://cubes-{uuid.uuid4().hex}"
    cube = Cube(root, "site", "vhr", GRID, lock_timeout=0.5)
    fsspec.filesystem("memory").pipe_file(cube._lock_path, json.dumps(
        {"owner": "someone-else", "expires": time.time() + 60}).encode())
    with pytest.raises(CubeLocked, match="being written by another run"):
        cube.append(scene(1), image(1))
    assert cube.scenes() == []
    # an expired lease (its writer died) is taken over
    fsspec.filesystem("memory").pipe_file(cube._lock_path, json.dumps(
        {"owner": "dead", "expires": time.time() - 1}).encode())
    assert cube.append(scene(1), image(1))


# -- a lock held by another process ------------------------------------------------------
HOLD = """
import fcntl, sys, time
fh = open(sys.argv[1], "a")
fcntl.flock(fh, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_writer_waits_or_gives_up_with_a_clear_message(tmp_path):
    cube = make_cube(tmp_path, lock_timeout=0.5)
    cube.append(scene(1), image(1))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cube._lock_path), "3"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(CubeLocked) as err:
            cube.append(scene(2), image(2))
        assert 0.4 < time.monotonic() - t0 < 3.0
        assert "stayed locked for 0.5 s" in str(err.value) and "nothing was changed" in str(err.value)
        assert [s["scene_id"] for s in cube.scenes()] == ["s1"]
        # a patient writer waits for the holder to finish
        patient = Cube(tmp_path, "site", "vhr", GRID, lock_timeout=30)
        assert patient.append(scene(2), image(2))
        assert time.monotonic() - t0 > 2.0
    finally:
        holder.kill()
        holder.wait()
    assert ids(cube.read()) == ["s1", "s2"]


# -- kill -9 mid-append ------------------------------------------------------------------
BIG = GridSpec.from_bounds(CRS, (300000, 4100000, 300512, 4100512), 1.0)  # 512 x 512, 4 bands
BIG_BANDS = ["B02", "B03", "B04", "B08"]

WRITER = """
import sys, time
from datetime import datetime, timedelta, timezone
import numpy as np
from shapely.geometry import box
from changedet.cube import Cube
from changedet.grid import GridSpec
from changedet.sources.base import SceneRecord

root, mode, ids_ = sys.argv[1], sys.argv[2], [int(v) for v in sys.argv[3].split(",")]
grid = GridSpec.from_bounds("EPSG:32652", (300000, 4100000, 300512, 4100512), 1.0)
t0 = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)
cube = Cube(root, "site", "vhr", grid)
if mode == "hang-before-commit":
    real = Cube._write_provenance
    def write(self, doc):
        if len(doc["scenes"]) == len(ids_):  # the last scene: pixels are on disk, provenance not yet
            print("pixels-written", flush=True)
            time.sleep(60)
        return real(self, doc)
    Cube._write_provenance = write
for i in ids_:
    rng = np.random.default_rng(i)  # the same pixels as image(i, grid=BIG, bands=BIG_BANDS)
    data = rng.uniform(0.0, 1.0, (4,) + grid.shape).astype("float32")
    data[:, i % grid.shape[0], :5] = np.nan
    rec = SceneRecord(id=f"s{i}", source="test", aoi_id="site", sensor="vhr", time=t0 + timedelta(days=i),
                      platform="synthetic", cloud_cover=float(i), footprint=box(130.0, 42.0, 130.1, 42.1),
                      resolution_m=1.0)
    print(f"begin {i}", flush=True)
    cube.append(rec, grid.attach(data, bands=["B02", "B03", "B04", "B08"]))
    print(f"end {i}", flush=True)
"""


def _writer(root, mode: str, ids_: list[int]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), mode, ",".join(map(str, ids_))],
                            stdout=subprocess.PIPE, text=True)


def _consistent(root) -> list[str]:
    """The cube is readable and every listed scene holds exactly its own pixels."""
    cube = Cube(root, "site", "vhr", BIG)
    out = cube.read()
    if out is None:
        return []
    got = ids(out)
    values = out.values
    for k, sid in enumerate(got):
        want = image(int(sid[1:]), grid=BIG, bands=BIG_BANDS).values
        np.testing.assert_allclose(values[k], want, atol=1e-4)
    return got


def test_kill_9_mid_append_leaves_a_readable_cube_and_the_scene_is_fetched_again(tmp_path):
    # 1. killed after the pixels are written, before the provenance commit (deterministic)
    proc = _writer(tmp_path, "hang-before-commit", [0, 1, 2])
    try:
        for line in proc.stdout:
            if line.strip() == "pixels-written":
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with xr.open_zarr(Cube(tmp_path, "site", "vhr", BIG).path, consolidated=False) as ds:
        assert ds.sizes["time"] == 3  # the orphan step is on disk
    assert _consistent(tmp_path) == ["s0", "s1"]  # ... but not visible
    assert not Cube(tmp_path, "site", "vhr", BIG).has("s2")  # so the next fetch loads s2 again

    # 2. killed at arbitrary moments inside appends (timing from a measured append)
    rng = np.random.default_rng(0)
    for round_ in range(2):
        proc = _writer(tmp_path, "plain", [3 + round_, 2])
        try:
            assert proc.stdout.readline().startswith("begin")
            time.sleep(float(rng.uniform(0.0, 0.3)))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        listed = _consistent(tmp_path)
        assert listed[:2] == ["s0", "s1"] and len(listed) == len(set(listed))

    # 3. the next complete run stores what is missing, each scene exactly once
    proc = _writer(tmp_path, "plain", [0, 1, 2, 3, 4, 5])
    assert proc.wait(timeout=300) == 0
    assert _consistent(tmp_path) == [f"s{i}" for i in range(6)]
    cube = Cube(tmp_path, "site", "vhr", BIG)
    assert sorted(e["index"] for e in cube.scenes()) == list(range(6))
    with xr.open_zarr(cube.path, consolidated=False) as ds:
        assert ds.sizes["time"] == 6
