"""A failed AOI-day in a multi-AOI backfill: the other AOIs finish, the flow ends Failed
with a summary, and running the same backfill again resumes only what is missing.

The bad input is real: the stored registration reference of one AOI is truncated (a
disk or copy error), so that AOI's second day fails to read it. The flows run on a Dask
LocalCluster (threads, two workers) against Prefect's test server.
"""

from __future__ import annotations

import os
import pickle
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.prefect_runs import settled_task_runs

AOIS = ["dunai_port", "chongjin_port", "rajin_port"]
DAYS = ["2023-06-01", "2023-06-08", "2023-06-15"]
START, END = date(2023, 6, 1), date(2023, 6, 15)


def _corrupt_reference_geotiff(tmp_path: Path) -> tuple[Path, Exception]:
    import rioxarray  # noqa: F401  registers .rio

    from changedet.io import read_raster, write_geotiff

    da = xr.DataArray(np.random.default_rng(0).random((2, 64, 64), dtype="float32"), dims=("band", "y", "x"),
                      coords={"band": ["red", "nir"], "y": 500000.5 - np.arange(64), "x": 300000.5 + np.arange(64)})
    da = da.rio.write_crs("EPSG:32652")
    path = write_geotiff(da, tmp_path / "ref.tif")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(Exception) as info:
        read_raster(path)
    return path, info.value


def test_error_with_an_unsendable_cause_reaches_the_flow_as_itself(tmp_path):
    from changedet.errors import RasterError
    from flows.tasks import portable_error, sendable

    _, err = _corrupt_reference_geotiff(tmp_path)
    assert isinstance(err, RasterError)
    # rasterio's error behind it cannot be unpickled once Dask has installed tblib's
    # exception pickling (as a worker does): sent as is, the flow would see an
    # AttributeError ("property 'args' of 'CPLE_AppDefinedError' object has no setter").
    assert not sendable(err)
    with pytest.raises(AttributeError, match="has no setter"):
        pickle.loads(pickle.dumps(err))
    out = portable_error(err)
    assert sendable(out) and isinstance(out, RasterError) and str(out) == str(err)
    back = pickle.loads(pickle.dumps(out))
    assert type(back) is RasterError and "ref.tif" in str(back)


def test_only_transient_errors_are_retried():
    from prefect.states import Failed

    from changedet.cube import CubeLocked
    from changedet.errors import AOIError, CubeError, RasterError, SourceError, StoreError
    from flows.tasks import worth_retrying

    def retried(exc):
        return worth_retrying(None, None, Failed(data=exc))

    assert not retried(RasterError("x.tif: corrupt")) and not retried(CubeError("other grid"))
    assert not retried(AOIError("bad polygon"))
    assert retried(SourceError("503 from provider")) and retried(StoreError("db down"))
    assert retried(CubeLocked("locked")) and retried(OSError("connection reset")) and retried(RuntimeError("?"))


def test_error_text_is_short_and_hides_credentials():
    from prefect.states import Failed

    from flows.backfill import ERROR_CHARS, _error_text

    exc = RuntimeError("GET https://alice:s3cr3t@example.org/x?token=abc123&band=B04 failed\n  twice")
    text = _error_text(Failed(data=exc, message="x"))
    assert text == "RuntimeError: GET https://***@example.org/x?token=***&band=B04 failed twice"
    assert "s3cr3t" not in text and "abc123" not in text
    assert len(_error_text(Failed(data=ValueError("v" * 1000)))) == ERROR_CHARS
    for secret, raw in (("p@ss", "s3://bob:p@ss@minio:9000/bucket"), ("hunter2", '{"password": "hunter2"}'),
                        ("eyJhbGc.x", "Authorization: Bearer eyJhbGc.x"), ("zzz", "api_key: zzz"),
                        ("qq", "pwd=qq")):
        assert secret not in _error_text(Failed(data=RuntimeError(raw))), raw


@pytest.mark.slow
def test_failed_aoi_day_stops_only_its_aoi_and_a_rerun_resumes_it(prefect_env, tmp_path):
    from distributed import LocalCluster

    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, run_day
    from flows.backfill import backfill
    from flows.cluster import task_runner

    data = tmp_path / "data"
    # dunai_port's first day was processed earlier (by the daily flow, say); since then its
    # stored registration reference got truncated. Its first day needs no reference (the
    # scene is in the cube), its second day reads it and fails.
    assert run_day(load_aoi("dunai_port"), START, RunConfig(data_dir=data)).status == "processed"
    ref = data / "cubes" / "dunai_port" / "vhr_1m.reference.tif"
    good = ref.read_bytes()
    ref.write_bytes(good[: len(good) // 3])

    # One cluster for the three runs, reached by address as `changedet serve --dask-address`
    # does: two workers of one thread, so AOI-days also wait in the scheduler's queue.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        _backfill_fail_and_resume(backfill.with_options(task_runner=task_runner(cluster.scheduler_address)),
                                  data, ref, good)


def _backfill_fail_and_resume(flow, data: Path, ref: Path, good: bytes) -> None:
    from flows.backfill import BackfillFailed

    cubes_before = {p: p.read_bytes() for p in (data / "cubes" / "dunai_port").glob("*.json")}
    kw = dict(cadence=7, data_dir=str(data), kernels_on_cluster=False, return_state=True)

    # fail_fast: the first failure stops the whole backfill: nothing is submitted after it,
    # and the days already in flight run to their end and are kept.
    state = flow(AOIS, START, END, fail_fast=True, **kw)
    assert state.is_failed(), state
    err = state.result(raise_on_failure=False)
    assert isinstance(err, BackfillFailed) and "dunai_port failed on 2023-06-08: RasterError" in state.message
    stopped = {x.aoi_id: x for x in err.failures if x.stopped}
    for a in ("chongjin_port", "rajin_port"):
        done = [r["day"] for r in err.results[a]]
        assert done == DAYS[:len(done)]
        if a in stopped:   # reported with the days it did not run
            x = stopped[a]
            assert "fail_fast after dunai_port failed on 2023-06-08" in x.error, x
            assert [x.day.isoformat(), *(d.isoformat() for d in x.not_run)] == DAYS[len(done):]
        else:
            assert done == DAYS
    runs = settled_task_runs(state.state_details.flow_run_id, expect=[("dunai_port", "2023-06-08")] + [
        (a, r["day"]) for a in ("chongjin_port", "rajin_port") for r in err.results[a]])
    assert {r.state.type.value for r in runs.values()} <= {"COMPLETED", "FAILED"}, runs
    assert [k for k, r in runs.items() if r.state.type.value == "FAILED"] == [("dunai_port", "2023-06-08")]
    assert ("dunai_port", "2023-06-15") not in runs
    for a, x in stopped.items():  # a stopped AOI's days were never submitted
        assert all((a, d.isoformat()) not in runs for d in (x.day, *x.not_run)), (a, runs)
    for a in ("chongjin_port", "rajin_port"):  # every day that ran is in the results
        ran = sorted(d for (aoi, d), r in runs.items() if aoi == a and r.state.type.value == "COMPLETED")
        assert ran == [r["day"] for r in err.results[a]], (a, ran)

    # Default: AOIs are independent, so the others run to the end.
    state = flow(AOIS, START, END, **kw)
    assert state.is_failed(), state
    err = state.result(raise_on_failure=False)
    assert isinstance(err, BackfillFailed)
    # The flow run's message (what the UI and `prefect flow-run inspect` show) names the
    # AOI, the day, the error and what was not run.
    assert "1 of 3 AOIs did not finish (7 of 9 AOI-days done and kept)" in state.message
    assert "dunai_port failed on 2023-06-08: RasterError: " in state.message
    assert "vhr_1m.reference.tif: cannot be read as a raster" in state.message
    assert "1 later day(s) not run (2023-06-15..2023-06-15)" in state.message
    [failure] = err.failures
    assert (failure.aoi_id, failure.day, failure.not_run, failure.stopped) == (
        "dunai_port", date(2023, 6, 8), (date(2023, 6, 15),), False)
    # The other AOIs ran every day; the failed one kept its first day.
    assert {a: [r["day"] for r in v] for a, v in err.results.items()} == {
        "dunai_port": DAYS[:1], "chongjin_port": DAYS, "rajin_port": DAYS}
    runs = settled_task_runs(state.state_details.flow_run_id, expect=[
        (a, d) for a in AOIS for d in DAYS if (a, d) != ("dunai_port", "2023-06-15")])
    assert ("dunai_port", "2023-06-15") not in runs        # never submitted
    assert len(runs) == 8
    states = {k: r.state.type.value for k, r in runs.items()}
    assert states.pop(("dunai_port", "2023-06-08")) == "FAILED"
    assert set(states.values()) == {"COMPLETED"}           # nothing left Running or Pending
    # A corrupt file is not retried (it would fail the same way 5 and 30 s later).
    assert runs[("dunai_port", "2023-06-08")].run_count == 1
    # Nothing stored was lost: the failed day wrote nothing.
    assert {p: p.read_bytes() for p in cubes_before} == cubes_before

    # Fixed: the same backfill runs only the two missing days; the rest are cache hits.
    ref.write_bytes(good)
    state = flow(AOIS, START, END, **kw)
    assert state.is_completed(), state
    out = state.result()
    assert {a: [r["day"] for r in v] for a, v in out.items()} == {a: DAYS for a in AOIS}
    assert [r["status"] for r in out["dunai_port"]][1:] == ["processed", "processed"]
    runs = settled_task_runs(state.state_details.flow_run_id, expect=[(a, d) for a in AOIS for d in DAYS])
    ran = sorted(k for k, r in runs.items() if r.state.name == "Completed")
    assert ran == [("dunai_port", "2023-06-08"), ("dunai_port", "2023-06-15")]
    assert sum(r.state.name == "Cached" for r in runs.values()) == 7


def test_fail_fast_parameter_keeps_existing_idempotency_keys():
    from flows.deploy import backfill_parameters, idempotency_key

    plain = backfill_parameters(["rajin_port"], START, END, 7)
    assert backfill_parameters(["rajin_port"], START, END, 7, fail_fast=False) == plain
    strict = backfill_parameters(["rajin_port"], START, END, 7, fail_fast=True)
    assert strict == {**plain, "fail_fast": True}
    assert idempotency_key("d", strict) != idempotency_key("d", plain)
