"""Stack mode ``coregister_stack(network="windows", per_band=...)``: the windowed pair
network of :mod:`changedet.coreg_network` behind the stack API - per-band shifts
recovered, numpy and dask inputs give the same cube, provenance per band, bad options
refused."""

from __future__ import annotations

import numpy as np
import pytest

from changedet.coreg import apply_shift, coregister_stack, provenance_fields
from changedet.coreg_network import coregister_stack_windows
from changedet.cube import Cube
from changedet.errors import CoregError
from test_coreg import fractal, grid_at, spline_shift
from test_coreg_stack import _scene

N = 256
# Per date: the shift of the whole date, and the extra offset of the second band (as
# NAIP's visible bands sit 0.1-0.3 px from its NIR band, differently on each date).
MOVES = np.array([[0.0, 0.0], [1.3, -0.4], [-2.25, 3.1], [0.6, 0.9]])
EXTRA = np.array([[0.0, 0.0], [0.3, -0.2], [-0.25, 0.15], [0.12, 0.28]])


@pytest.fixture(scope="module")
def band_offset_cube(tmp_path_factory):
    """Four dates, two bands (different textures) shifted by MOVES, the second band by EXTRA more;
    each date also has 15 % of its pixels replaced (change) and noise."""
    grid = grid_at((N, N))
    red, nir = fractal(N, beta=2.3, seed=11), fractal(N, beta=2.3, seed=12)
    ref = grid.attach(np.stack([red, nir]), bands=["red", "nir"])
    cube = Cube(tmp_path_factory.mktemp("cube"), "site", "vhr", grid, reflectance=False)
    rng = np.random.default_rng(8)
    for i, (m, e) in enumerate(zip(MOVES, EXTRA)):
        a, b = spline_shift(red, m), spline_shift(nir, m + e)
        if i:
            for img in (a, b):
                img += rng.normal(0, 10, img.shape)
            # A block of new content in every date but the first (real change).
            r0, c0 = rng.integers(0, N - 100, 2)
            a[r0:r0 + 100, c0:c0 + 100] = 1000.0
            b[r0:r0 + 100, c0:c0 + 100] = 1500.0
        cube.append(_scene(i, "w"), grid.attach(np.stack([a, b]), bands=["red", "nir"]))
    return cube, ref


def test_windows_per_band_recovers_band_offsets_and_records_them(band_offset_cube):
    cube, ref = band_offset_cube
    stack = cube.read()
    assert stack.chunks is not None
    aligned, results = coregister_stack(stack, ref, network="windows", per_band=True, cube=cube)
    assert aligned.dims == ("time", "band", "y", "x") and aligned.sizes["time"] == len(MOVES)
    np.testing.assert_array_equal(aligned["scene_id"].values, [f"w{i}" for i in range(len(MOVES))])
    for i, res in enumerate(results):
        assert set(res) == {"red", "nir"}
        for band, truth in (("red", MOVES[i]), ("nir", MOVES[i] + EXTRA[i])):
            r = res[band]
            assert r.mode == "windows" and r.applied, r.reason
            # The known shift comes back per band, well inside the 0.1 px target.
            assert r.shift_row_px == pytest.approx(-truth[0], abs=0.03), (i, band)
            assert r.shift_col_px == pytest.approx(-truth[1], abs=0.03), (i, band)
            assert r.tie_points >= 4 and r.tie_points_total == len(MOVES)
            assert r.shift_x_m == pytest.approx(r.shift_col_px * 10.0)
            assert r.shift_y_m == pytest.approx(-r.shift_row_px * 10.0)
            if i:
                assert r.similarity_after > r.similarity_before
    # Each band is moved by its own shift (not one shift for the date).
    d = stack.isel(time=2).values
    for k, band in enumerate(("red", "nir")):
        r = results[2][band]
        np.testing.assert_allclose(aligned.isel(time=2, band=k).values,
                                   apply_shift(d[k], r.shift_row_px, r.shift_col_px),
                                   atol=1e-6, equal_nan=True)
    # Provenance: per band, keyed by scene id.
    prov = {s["scene_id"]: s for s in cube.scenes()}
    for i, res in enumerate(results):
        rec = prov[f"w{i}"]["coreg"]
        assert rec["mode"] == "windows" and rec["per_band"] is True and rec["applied"] is True
        assert rec["bands"] == {b: provenance_fields(r) for b, r in res.items()}
        assert rec["estimator"] == "pc+lk"   # the default, recorded with the shifts it gave


def test_windows_numpy_equals_dask_and_the_library_function(band_offset_cube):
    cube, ref = band_offset_cube
    lazy = cube.read()
    eager = lazy.load()
    assert eager.chunks is None
    a_lazy, r_lazy = coregister_stack(lazy, ref, network="windows", per_band=True)
    a_eager, r_eager = coregister_stack(eager, ref, network="windows", per_band=True, scheduler="synchronous")
    np.testing.assert_array_equal(a_lazy.values, a_eager.values)
    assert r_lazy == r_eager
    # The same solve as coregister_stack_windows (which matches without the reference
    # pairs): both agree to a few hundredths of a pixel on this stack.
    _, shifts, _ = coregister_stack_windows(eager.astype("float64"), per_band=True)
    got = np.array([[[r[b].shift_row_px, r[b].shift_col_px] for b in ("red", "nir")] for r in r_eager])
    np.testing.assert_allclose(got, shifts, atol=0.03)


def test_windows_one_translation_for_all_bands(band_offset_cube):
    cube, ref = band_offset_cube
    stack = cube.read()
    aligned, results = coregister_stack(stack, ref, network="windows", band="nir", scheduler="synchronous")
    for i, r in enumerate(results):
        assert r.mode == "windows" and r.applied, r.reason
        assert r.shift_row_px == pytest.approx(-(MOVES[i] + EXTRA[i])[0], abs=0.03)
        assert r.shift_col_px == pytest.approx(-(MOVES[i] + EXTRA[i])[1], abs=0.03)
    r = results[1]
    np.testing.assert_allclose(aligned.isel(time=1).values,
                               apply_shift(stack.isel(time=1).values, r.shift_row_px, r.shift_col_px),
                               atol=1e-6, equal_nan=True)


def test_windows_marks_an_unlinkable_date_unapplied(band_offset_cube):
    cube, ref = band_offset_cube
    stack = cube.read().load().astype("float64")
    stack[1] = np.nan  # all cloud
    aligned, results = coregister_stack(stack, ref, network="windows", per_band=True, scheduler="synchronous")
    assert not results[1]["red"].applied and "no reliable" in results[1]["red"].reason
    assert np.isnan(aligned.isel(time=1).values).all()
    assert all(r.applied for i in (0, 2, 3) for r in results[i].values())


def test_windows_bad_options_are_refused(band_offset_cube):
    cube, ref = band_offset_cube
    stack = cube.read()
    with pytest.raises(CoregError, match="network='windows'"):
        coregister_stack(stack, ref, per_band=True)
    with pytest.raises(CoregError, match="network='windows'"):
        coregister_stack(stack, ref, network=True, per_band=True)
    with pytest.raises(CoregError, match="not a stack mode"):
        coregister_stack(stack, ref, network="affine")
    with pytest.raises(CoregError, match="local"):
        coregister_stack(stack, ref, network="windows", local=True)
    with pytest.raises(CoregError, match="does not take"):
        coregister_stack(stack, ref, network="windows", warp="affine")
    with pytest.raises(CoregError, match="band= applies only"):
        coregister_stack(stack, ref, network="windows", per_band=True, band="nir")
    with pytest.raises(CoregError, match="2-D reference"):
        coregister_stack(stack, ref.isel(band=1, drop=True), network="windows", per_band=True)
    with pytest.raises(CoregError, match="not in reference bands"):
        coregister_stack(stack, ref.sel(band=["red"]), network="windows", per_band=True)
    with pytest.raises(CoregError, match="band dimension|band names"):
        coregister_stack(stack.isel(band=0, drop=True), ref, network="windows", per_band=True)
    with pytest.raises(CoregError, match="window_px"):
        coregister_stack(stack, ref, network="windows", window_px=4)


# -- the "pc+lk" stack: tie points of dates that keep the coarse shift; no re-upload of dates --


def _fallback_stack():
    """Four dates: 0 and 1 plain, 2 much brighter (a gain change), 3 unrelated content."""
    import xarray as xr

    n = 192
    grid = grid_at((n, n))
    base = fractal(n, beta=2.3, seed=5)
    rng = np.random.default_rng(1)
    frames = []
    for k, sh in enumerate([(0.0, 0.0), (3.4, -5.7), (-2.3, 1.5), (0.0, 0.0)]):
        img = spline_shift(base, sh) + rng.normal(0, 5, (n, n))
        frames.append(img + 5000.0 if k == 2 else rng.normal(0, 100, (n, n)) if k == 3 else img)
    ref = grid.attach(base[None], bands=["nir"])
    stack = xr.concat([grid.attach(f[None], bands=["nir"]) for f in frames], dim="time")
    return stack.assign_coords(time=np.arange(len(frames))), ref


def test_pc_lk_date_keeping_its_coarse_shift_reports_the_coarse_tie_points(monkeypatch):
    import changedet.coreg_network as cn

    stack, ref = _fallback_stack()
    real = cn.pair_shift_lk

    def no_fine_match_on_bright(a, b, **kw):
        # The fine stage finds nothing for date 2 (as on a date with little 12 px texture).
        if any(np.isfinite(x).any() and np.nanmean(x) > 2500 for x in (a, b)):
            return np.nan, np.nan, np.nan, 0
        return real(a, b, **kw)

    monkeypatch.setattr(cn, "pair_shift_lk", no_fine_match_on_bright)
    _, res, sols = cn.windows_stack(stack, ref, per_band=True, estimator="pc+lk", scheduler="synchronous")
    _, coarse = coregister_stack(stack, ref, network="windows", per_band=True, estimator="pc",
                                 scheduler="synchronous")
    fell_back, pc = res[2]["nir"], coarse[2]["nir"]
    assert fell_back.applied and (fell_back.shift_row_px, fell_back.shift_col_px) == (pc.shift_row_px,
                                                                                         pc.shift_col_px)
    # The shift applied is the phase-correlation one, so are its tie points and reliability
    # (the fine stage kept none of date 2's pairs: it reported 0 on an applied shift).
    assert fell_back.tie_points == pc.tie_points >= 2
    assert fell_back.reliability == pc.reliability
    # A refined date reports the fine stage's pairs; date 3 is linked by neither.
    sol = sols["nir"]
    np.testing.assert_array_equal(sol.refined, [True, True, False, False])
    assert [r["nir"].tie_points for r in res] == [int(v) for v in sol.support]
    assert not res[3]["nir"].applied and res[3]["nir"].tie_points == 0


def _graph_bytes(collections) -> int:
    """Pickled size of the task graph of ``collections``: what a distributed client uploads."""
    import cloudpickle
    import dask

    flat, todo = [], list(collections)
    while todo:
        c = todo.pop()
        if isinstance(c, (list, tuple)):
            todo.extend(c)
        elif dask.is_dask_collection(c):
            flat.append(c)
    graph = dask.base.collections_to_expr(flat, optimize_graph=False).__dask_graph__()
    return len(cloudpickle.dumps(dict(graph)))


def test_pc_lk_on_a_distributed_cluster_keeps_dates_on_the_workers(monkeypatch):
    """The dates on the reference grid are persisted once: later stages refer to them by
    key, where they used to travel back to the workers inside every task's arguments."""
    import dask
    import distributed

    from changedet.coreg_network import network_shifts

    stack, ref = _fallback_stack()
    graphs = []
    for name in ("compute", "persist"):
        real = getattr(dask, name)

        def recording(*args, _real=real, _name=name, **kw):
            graphs.append((_name, _graph_bytes(args)))
            return _real(*args, **kw)

        monkeypatch.setattr(dask, name, recording)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster):
        aligned, res = coregister_stack(stack.chunk({"time": 1}), ref, network="windows", per_band=True)
    monkeypatch.undo()
    # The numpy path's shifts, applied as apply_shift does; date 3 (unrelated content) unlinked.
    sol = network_shifts(ref.values[0], stack.values[:, 0], estimator="pc+lk")
    got = np.array([[r["nir"].shift_row_px, r["nir"].shift_col_px] for r in res])
    np.testing.assert_array_equal(got[:3], sol.shifts[:3])
    assert [r["nir"].applied for r in res] == [True, True, True, False] and np.isnan(sol.shifts[3]).all()
    for i in range(3):
        np.testing.assert_array_equal(aligned.isel(time=i).values, apply_shift(stack.isel(time=i).values, *got[i]))
    # First the dates go up once (persist); the coarse pairs, the fine pairs (on the dates
    # moved on the workers) and the application then send keys, not arrays: each graph
    # is well under one date (it was ~12 dates' worth for the fine stage).
    date_bytes = stack.isel(time=0).values.nbytes
    assert all(size < date_bytes / 10 for _, size in graphs[1:]), (graphs, date_bytes)
    assert [g[0] for g in graphs] == ["persist", "compute", "compute", "compute"], graphs
