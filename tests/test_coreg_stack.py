"""Stack mode: a whole cube registered to the AOI reference, in parallel over time with Dask,
the shift and quality written into the cube's provenance."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import xarray as xr
from shapely.geometry import box

from changedet.coreg import coregister, coregister_stack, provenance_fields
from changedet.cube import Cube
from changedet.sources.base import SceneRecord
from test_coreg import fractal, grid_at, spline_shift

T0 = datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
SHIFTS = [(0.0, 0.0), (1.3, -0.4), (-2.25, 3.1), None, (0.6, 0.9)]  # None: an all-cloud date


def _scene(i: int, prefix: str = "d") -> SceneRecord:
    return SceneRecord(id=f"{prefix}{i}", source="test", aoi_id="site", sensor="vhr", time=T0 + timedelta(days=7 * i),
                       platform="synthetic", cloud_cover=0.0, footprint=box(15.0, 37.9, 15.01, 37.91),
                       resolution_m=10.0)


@pytest.fixture(scope="module")
def cube_stack(tmp_path_factory):
    grid = grid_at((256, 256))
    img = fractal(256, beta=2.3, seed=77)
    ref = grid.attach(np.stack([img, 0.5 * img + 100]), bands=["red", "nir"])
    cube = Cube(tmp_path_factory.mktemp("cube"), "site", "vhr", grid, reflectance=False)
    for i, sh in enumerate(SHIFTS):
        if sh is None:
            data = np.full((2, 256, 256), np.nan)
        else:
            moved = spline_shift(img, sh)
            data = np.stack([moved, 0.5 * moved + 100])
        cube.append(_scene(i), grid.attach(data, bands=["red", "nir"]))
    return cube, ref


def test_stack_registers_every_date_and_records_provenance(cube_stack):
    cube, ref = cube_stack
    stack = cube.read()
    assert stack.chunks is not None  # lazy (dask) stack straight from the cube
    aligned, results = coregister_stack(stack, ref, cube=cube)
    assert aligned.dims == ("time", "band", "y", "x") and aligned.sizes["time"] == len(SHIFTS)
    np.testing.assert_array_equal(aligned["scene_id"].values, [f"d{i}" for i in range(len(SHIFTS))])
    for i, (sh, res) in enumerate(zip(SHIFTS, results)):
        if sh is None:
            assert not res.applied and "not registered" in res.reason and "all NaN" in res.reason
            assert np.isnan(aligned.isel(time=i).values).all()
            continue
        assert res.applied, res.reason
        assert res.shift_row_px == pytest.approx(-sh[0], abs=0.05)
        assert res.shift_col_px == pytest.approx(-sh[1], abs=0.05)
    # Each date equals a plain coregister of that date (the dask path changes nothing).
    one, res2 = coregister(ref, stack.isel(time=2, drop=True).load())
    np.testing.assert_allclose(aligned.isel(time=2).values, one.values, equal_nan=True, atol=1e-5)
    assert res2.shift_row_px == pytest.approx(results[2].shift_row_px, abs=1e-6)
    # Provenance: every date carries its registration record, keyed by scene id.
    prov = {s["scene_id"]: s for s in cube.scenes()}
    for i, res in enumerate(results):
        rec = prov[f"d{i}"]["coreg"]
        assert rec == provenance_fields(res)
        assert set(rec) >= {"shift_row_px", "shift_col_px", "shift_x_m", "shift_y_m", "reliability", "applied"}
    assert prov["d3"]["coreg"]["applied"] is False


def test_stack_local_mode_with_dask_distributed(cube_stack):
    distributed = pytest.importorskip("distributed")
    cube, ref = cube_stack
    stack = cube.read().isel(time=[1, 2])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster):
        aligned, results = coregister_stack(stack, ref, local=True, window_px=128)
    for res, sh in zip(results, SHIFTS[1:3]):
        assert res.mode == "local" and res.applied, res.reason
        assert res.shift_row_px == pytest.approx(-sh[0], abs=0.05)
        assert res.shift_col_px == pytest.approx(-sh[1], abs=0.05)
    assert isinstance(aligned, xr.DataArray) and aligned.sizes["time"] == 2
