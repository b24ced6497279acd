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
