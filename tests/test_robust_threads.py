"""Counters and kernels that run in Dask worker threads leave the warnings filters alone.

``warnings.catch_warnings`` swaps the process-wide filter list; two threads entering and
leaving it interleaved can drop or permanently keep each other's filters (and let a
warning through meanwhile). The library avoids the warnings at their source instead; the
NaN statistics that replace numpy's nan-reductions must give numpy's results bit for bit.
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import numpy as np
import pyproj
import pytest
from affine import Affine
from scipy import ndimage

from changedet.grid import GridSpec
from changedet.nanstats import quiet_nanmean, quiet_nanmin, quiet_nanstd
from changedet.objects.cloud_shadow import cloud_shade, cloud_shadow_mask
from changedet.objects.ground import GroundModel

N_THREADS = 6


def _run_in_threads(fn, n_calls: int):
    """Call ``fn(i)`` from N_THREADS threads released together; (results, warnings caught)."""
    start = threading.Barrier(N_THREADS)

    def worker(k):
        start.wait()
        return [fn(i) for i in range(k, n_calls, N_THREADS)]

    with warnings.catch_warnings(record=True) as caught:  # main thread only, around all of it
        warnings.simplefilter("always")
        before = list(warnings.filters)
        with ThreadPoolExecutor(N_THREADS) as pool:
            results = [r for chunk in pool.map(worker, range(N_THREADS)) for r in chunk]
        after = list(warnings.filters)
    assert after == before, "a thread changed the process-wide warnings filters"
    return results, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def _scene(seed: int):
    """A 10 m grid with a cloud, its shadow north-west of it (sun in the south-east) and an
    all-NaN (off-image) strip: empty blocks and pixels without any band."""
    rng = np.random.default_rng(seed)
    rows = cols = 100
    grid = GridSpec(pyproj.CRS.from_epsg(32652), Affine(10.0, 0, 600000.0, 0, -10.0, 4700000.0), (rows, cols))
    pix = (0.12 + 0.01 * rng.standard_normal((4, rows, cols))).astype("float32")
    cloud = np.zeros((rows, cols), bool)
    cloud[60:80, 60:80] = True
    pix[:, 30:50, 30:50] *= 0.4
    pix[:, :, 90:] = np.nan
    return grid, pix, cloud


def test_cloud_shadow_in_threads_keeps_filters_and_warns_nothing():
    scenes = [_scene(s) for s in range(3)]
    model = GroundModel(np.full(4, 0.12), np.full(4, 0.01), np.full(4, 0.04), np.full(4, 0.005))

    def call(i):
        grid, pix, cloud = scenes[i % 3]
        bright = quiet_nanmean(pix[:3], axis=0)
        m = cloud_shadow_mask(bright, cloud, grid, sun_azimuth_deg=135.0, sun_elevation_deg=40.0)
        shade = cloud_shade(pix, grid, cloud, model=model, sun_azimuth_deg=135.0, sun_elevation_deg=40.0,
                            edge_m=0.0)
        return m, shade

    results, runtime_warnings = _run_in_threads(call, 36)
    assert not runtime_warnings, [str(w.message) for w in runtime_warnings]
    # Threads change nothing in the results, and the shadow is found (the code ran through).
    for i, (m, shade) in enumerate(results[:6]):
        m1, shade1 = call(i)
        np.testing.assert_array_equal(m, m1)
        np.testing.assert_array_equal(shade, shade1)
    assert all(m[30:50, 30:50].all() and not m[:, 90:].any() for m, _ in results)


def test_change_mask_in_threads_keeps_filters():
    import xarray as xr

    from changedet.kernels.threshold import change_mask

    rng = np.random.default_rng(1)
    mag = rng.random((2, 64, 64))
    mag[0, 10:20, 10:20] = 5.0
    mag[1, 5, 5] = 5.0  # one small object: dropped
    da = xr.DataArray(mag, dims=("time", "y", "x"))
    results, runtime_warnings = _run_in_threads(lambda i: change_mask(da, threshold=0.97).values, 60)
    assert not runtime_warnings
    want = change_mask(da, threshold=0.97).values
    assert want[0, 11:19, 11:19].all() and not want[1, 5, 5]  # the opening rounds the corners
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_railcar_count_in_threads_matches_and_warns_nothing():
    """A partly cloudy scene (all-NaN strips under the cloud) counted from several threads."""
    from changedet.aoi import load_aoi
    from changedet.objects.railcars import count_railcars
    from changedet.simulate.render import render_scene

    aoi = load_aoi("khasan_railyard")
    sc = render_scene(aoi, date(2023, 8, 4), "vhr", seed=11)
    assert sc.cloud_mask is not None and sc.cloud_mask.any()
    sh = sc.truth["applied_shift_px"]
    data = np.stack([ndimage.shift(b, (-sh["row"], -sh["col"]), order=3, mode="nearest") for b in sc.data])
    image = sc.grid.attach(data, bands=list(sc.bands))
    valid = sc.grid.attach(~sc.cloud_mask)
    tracks = {f.id: aoi.to_crs(f.geometry, sc.grid.crs) for f in aoi.features_by_role("track")}
    sun = dict(sun_azimuth_deg=sc.truth["sun"]["azimuth_deg"], sun_elevation_deg=sc.truth["sun"]["elevation_deg"])
    want = count_railcars(image, tracks, valid=valid, **sun).to_json()
    results, runtime_warnings = _run_in_threads(
        lambda i: count_railcars(image, tracks, valid=valid, **sun).to_json(), 3)
    assert not runtime_warnings, [str(w.message) for w in runtime_warnings]
    assert all(r == want for r in results)


# -- the quiet NaN statistics are numpy's, bit for bit --------------------------------
def _arrays():
    rng = np.random.default_rng(7)
    for dtype in ("float32", "float64"):
        a = rng.standard_normal((5, 7, 9)).astype(dtype) * 10
        a[rng.random(a.shape) < 0.3] = np.nan
        a[:, 2, :] = np.nan  # empty slices along axes 0 and 2
        a[1, :, 4] = np.nan
        yield a
        yield a.transpose(2, 0, 1)  # a non-contiguous view
        yield a[:, ::2, 1:]


@pytest.mark.parametrize("axis", [None, 0, 1, 2, (0, 1), (1, 2), (0, 2)])
def test_quiet_nan_statistics_equal_numpy(axis):
    for a in _arrays():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = (np.nanmean(a, axis=axis), np.nanstd(a, axis=axis), np.nanmin(a, axis=axis))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails the test
            got = (quiet_nanmean(a, axis=axis), quiet_nanstd(a, axis=axis), quiet_nanmin(a, axis=axis))
        for w, g in zip(want, got):
            assert np.asarray(g).dtype == np.asarray(w).dtype and np.shape(g) == np.shape(w)
            assert np.asarray(g).tobytes() == np.asarray(w).tobytes()  # bit for bit, NaN included


def test_quiet_nan_statistics_of_all_nan_are_nan():
    a = np.full((3, 4), np.nan, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(quiet_nanmean(a)) and np.isnan(quiet_nanstd(a)) and np.isnan(quiet_nanmin(a))
        assert np.isnan(quiet_nanmean(a, axis=0)).all() and np.isnan(quiet_nanstd(a, axis=1)).all()


def _classify_with_numpy(model, pixels):
    """GroundModel.classify as it was written with np.nanmean (the reference)."""
    shape = pixels.shape[1:]
    p = pixels.reshape(pixels.shape[0], -1)
    lit, sh = model.lit[:, None], model.shadow[:, None]
    span = lit - sh
    alpha = np.clip(np.nansum((p - sh) * span, axis=0) / max(float((span ** 2).sum()), 1e-9), 0, 1)
    sd = model.shadow_sd[:, None] + alpha * (model.lit_sd - model.shadow_sd)[:, None]
    d = np.sqrt(np.nanmean(((p - (sh + alpha * span)) / sd) ** 2, axis=0))
    return d.reshape(shape), alpha.reshape(shape)


def test_ground_classify_is_quiet_and_equals_numpy():
    rng = np.random.default_rng(3)
    model = GroundModel(np.array([0.10, 0.12, 0.14]), np.full(3, 0.01), np.array([0.03, 0.04, 0.05]),
                        np.full(3, 0.004))
    for dtype in ("float32", "float64"):
        pix = (0.1 + 0.05 * rng.standard_normal((3, 20, 30))).astype(dtype)
        pix[:, :5] = np.nan  # pixels without any band
        pix[1, 10:12] = np.nan  # pixels missing one band
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want_d, want_a = _classify_with_numpy(model, pix)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got_d, got_a = model.classify(pix)
            all_nan = model.classify(np.full((3, 4, 4), np.nan, dtype=dtype))
        for w, g in ((want_d, got_d), (want_a, got_a)):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert g.tobytes() == w.tobytes()
        assert np.isnan(all_nan[0]).all() and (all_nan[1] == 0).all()


def test_library_never_uses_catch_warnings():
    # catch_warnings swaps the process-wide filter list: not in code that runs in threads.
    import ast
    from pathlib import Path

    import changedet

    root = Path(changedet.__file__).parent
    hits = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "catch_warnings":
                hits.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not hits, hits
