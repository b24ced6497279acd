"""The change kernels on a real dask.distributed cluster: a ``dask scheduler`` and two
``dask worker`` processes started here on 127.0.0.1, reached by address, give exactly
the results of the same graph on the local threaded scheduler and match numpy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

from changedet.grid import GridSpec
from changedet.kernels import (
    baseline_zscore,
    change_magnitude,
    change_mask,
    cva,
    irmad,
    k_mad,
    label_components,
    robust_baseline,
    zscore,
)

distributed = pytest.importorskip("distributed")

GRID = GridSpec.from_bounds("EPSG:32633", (500000.0, 4000000.0, 501200.0, 4000960.0), 10.0)  # 96 x 120
BANDS = ["B02", "B03", "B04", "B08"]


def _dask_exe() -> str:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else shutil.which("dask")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask")
    sched_file = tmp / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [
        subprocess.Popen(
            [_dask_exe(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sched_file.exists(), "dask scheduler did not start"
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [_dask_exe(), "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                     "--memory-limit", "1GiB", "--no-dashboard", "--name", f"w{i}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                )
            )
        client = distributed.Client(address, timeout=60)
        client.wait_for_workers(2, timeout=60)
        yield client
        client.close()
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs[::-1]:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _data():
    rng = np.random.default_rng(11)
    stack = rng.normal(0.2, 0.01, size=(9, 4) + GRID.shape).astype("float32")
    stack[2, :, 5:20, 5:20] = np.nan  # a cloud on one date
    new = stack[0] + rng.normal(0, 0.01, stack.shape[1:]).astype("float32")
    new[:, 40:60, 50:90] += 0.2  # spans several chunks
    hist = xr.DataArray(stack, dims=("time", "band", "y", "x"), coords={"band": BANDS, "y": GRID.y, "x": GRID.x})
    return hist, GRID.attach(new, bands=BANDS)


def _pipeline(hist, new):
    """Baseline, z-score magnitude, k*MAD threshold, mask, components, IR-MAD, CVA."""
    base = robust_baseline(hist)
    # persist: the threshold passes and the mask reuse the magnitude held by the workers.
    mag = change_magnitude(new, base, mad_floor=0.005).persist()
    thr = k_mad(mag, k=4.0)
    mask = change_mask(mag, threshold=thr, min_area_px=9)
    lab, n = label_components(mask)
    # A few iterations keep the number of cluster round trips (one per iteration) small.
    im = irmad(hist.isel(time=1).assign_coords(spatial_ref=new.spatial_ref), new, max_iter=4)
    c = cva(hist.isel(time=1).assign_coords(spatial_ref=new.spatial_ref), new)
    return {
        "median": np.asarray(base["median"].values), "mag": np.asarray(mag.values), "thr": thr,
        "mask": np.asarray(mask.values), "lab": np.asarray(lab.compute() if hasattr(lab, "compute") else lab),
        "n": n, "chi2": np.asarray(im.chi2.values), "rho": im.rho, "cva": np.asarray(c.values),
        "z_fused": np.asarray(baseline_zscore(hist, new, mad_floor=0.005).values),
        "z": np.asarray(zscore(new, base, mad_floor=0.005).values),
    }


def test_kernels_on_external_scheduler_match_local_and_numpy(cluster):
    hist, new = _data()
    ref = _pipeline(hist, new)  # numpy
    chunks = {"y": 40, "x": 50}
    h, n = hist.chunk(chunks), new.chunk(chunks)
    with dask.config.set(scheduler="threads"):
        local = _pipeline(h, n)
    # The Client is the default scheduler from here (set by distributed.Client).
    with dask.config.set(scheduler=cluster):
        remote = _pipeline(h, n)
    workers = cluster.scheduler_info()["workers"]
    assert len(workers) == 2
    assert sum(w["metrics"]["task_counts"].get("memory", 0) + 1 for w in workers.values()) > 0
    for key in ("median", "mag", "mask", "lab", "chi2", "cva", "z", "z_fused"):
        np.testing.assert_array_equal(remote[key], local[key], err_msg=key)
    assert remote["thr"] == local["thr"] == ref["thr"]
    assert remote["n"] == local["n"] == ref["n"] >= 1
    np.testing.assert_array_equal(remote["rho"], local["rho"])
    # numpy and dask run the same numpy code blockwise: identical per-pixel results.
    for key in ("median", "mag", "mask", "cva", "z", "z_fused"):
        np.testing.assert_array_equal(remote[key], ref[key], err_msg=key)
    assert np.array_equal(remote["lab"] > 0, ref["lab"] > 0)
    # IR-MAD sums its statistics block by block, so only rounding may differ.
    np.testing.assert_allclose(remote["chi2"], ref["chi2"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(remote["z_fused"], remote["z"])  # fused numba kernel == numpy path
    assert remote["mask"][45, 70] and not remote["mask"][0, 0]
