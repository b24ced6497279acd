"""Masked windows are refined too: local mode's tie points and the file window path (s47).

s46 refined a whole masked frame's estimate by least squares on the pixels both images
see; the windows of local mode (``estimate_local``) and of ``coregister_files``
(``estimate_window``, the AROSICS task) still read the phase peak alone, and a window
partly under cloud or nodata has the same pull towards zero shift: on real Sentinel-2
texture a third under cloud, 128 px tie points were 0.08-0.09 px RMS (up to 0.12-0.26 px)
off, a 256 px file window 0.04 px RMS (up to 0.06-0.08). Each masked window is now refined the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from changedet import coreg
from test_coreg_masked_s46 import _clouds, _fourier_shift, _frame


@pytest.fixture(scope="module")
def s2_texture(test_data) -> np.ndarray:
    path = test_data("arosics_s2_pair/ref_S2A_20160608T153121_T33UUU_sub.jp2")
    with rasterio.open(path) as f:
        return f.read(1, window=((1600, 2624), (600, 1624))).astype(float)


def _draw(scene, rng, size, reach, max_shift=1.0):
    """A ``size`` + 2 ``reach`` px crop, its copy moved by a known shift of up to
    ``max_shift`` px per axis (+ noise)."""
    n = size + 2 * reach
    r0 = int(rng.integers(0, scene.shape[0] - n))
    c0 = int(rng.integers(0, scene.shape[1] - n))
    big = scene[r0:r0 + n, c0:c0 + n]
    true = rng.uniform(-1, 1, 2) * max_shift
    moved = _fourier_shift(big, true) + rng.normal(0, 0.01 * big.std(), big.shape)
    return big, moved, true


def _cloudy_pair(scene, rng, *, size=384, reach=24, max_shift=1.0):
    """(reference, moving with a third under bright masked cloud, clear mask, true shift)."""
    big, moved, true = _draw(scene, rng, size, reach, max_shift)
    ref, mov = big[reach:-reach, reach:-reach], moved[reach:-reach, reach:-reach]
    clear = _clouds(ref.shape, 0.3, rng)
    return ref, np.where(clear, mov, np.nanmax(ref) * 1.5), clear, true


def _local_tie_errors(ref, mov, clear, true):
    """``coregister(local=True)`` (128 px windows, affine) with ``clear`` as the valid mask:
    the result and the kept tie points' errors (px, larger axis)."""
    valid = xr.DataArray(clear, dims=("y", "x"), coords=_frame(ref).coords)
    _, res = coreg.coregister(_frame(ref), _frame(mov), valid=valid, local=True, window_px=128, warp="affine")
    assert res.applied, res.reason
    tab = np.array(res.tie_point_table)
    kept = tab[:, 5].astype(bool)
    assert kept.sum() >= 8
    # The content moved by `true`: the shift that registers it is -true.
    return res, list(np.maximum(abs(tab[kept, 2] + true[0]), abs(tab[kept, 3] + true[1])))


def test_local_tie_points_under_a_third_of_cloud(s2_texture):
    rng = np.random.default_rng(5)
    errors = []
    for _ in range(2):
        ref, mov, clear, true = _cloudy_pair(s2_texture, rng)
        res, err = _local_tie_errors(ref, mov, clear, true)
        errors += err
        assert max(abs(res.shift_row_px + true[0]), abs(res.shift_col_px + true[1])) < 0.02
    # Phase correlation alone on these draws (checked): 0.078 px RMS, up to 0.12 px (the warp's
    # mean 0.067 and 0.078 px off).
    assert np.sqrt(np.mean(np.square(errors))) < 0.02 and max(errors) < 0.05, errors


def test_estimate_local_refines_only_when_asked_and_only_masked_windows(s2_texture, monkeypatch):
    rng = np.random.default_rng(8)
    big, moved, true = _draw(s2_texture, rng, 256, 16)
    ref, mov = big[16:-16, 16:-16], moved[16:-16, 16:-16].copy()
    mov[:40, :40] = np.nan  # nodata in one corner: only the windows touching it are masked
    calls = []
    real = coreg._refine_masked
    monkeypatch.setattr(coreg, "_refine_masked", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    tp = coreg.estimate_local(ref, mov, window_px=128, step_px=64)
    assert len(calls) == 1  # the corner window alone (9 windows)
    calls.clear()
    plain = coreg.estimate_local(ref, mov, window_px=128, step_px=64, refine_masked=False)
    assert not calls
    corner = (tp.row == tp.row.min()) & (tp.col == tp.col.min())
    assert np.array_equal(tp.shift_row[~corner], plain.shift_row[~corner])
    err = lambda t: max(abs(t.shift_row[corner][0] + true[0]), abs(t.shift_col[corner][0] + true[1]))  # noqa: E731
    assert err(tp) <= err(plain) + 0.002


def _window_pair(scene, rng, fraction, ws=256, f=8, m=22):
    n = ws + 2 * (f + m) + 40
    big, moved, true = _draw(scene, rng, n - 2, 1)
    moved[~_clouds(big.shape, fraction, rng)] = np.nan
    o = 20
    mov = moved[o:o + ws + 2 * (f + m), o:o + ws + 2 * (f + m)]
    ref = big[o + m:o + m + ws + 2 * f, o + m:o + m + ws + 2 * f].copy()
    return ref, mov, true


def test_a_cloudy_file_window_is_refined(s2_texture):
    rng = np.random.default_rng(3)
    errors, plain = [], []
    for _ in range(4):
        ref, mov, true = _window_pair(s2_texture, rng, 0.3)
        est = coreg.estimate_window(ref, mov, filter_margin=8, search_margin=22)
        alone = coreg.estimate_window(ref, mov, filter_margin=8, search_margin=22, refine_min_reliability=2.0)
        assert est["reliability"] >= 0.5 and est["similarity_after"] > est["similarity_before"]
        errors.append(max(abs(est["shift_row"] + true[0]), abs(est["shift_col"] + true[1])))
        plain.append(max(abs(alone["shift_row"] + true[0]), abs(alone["shift_col"] + true[1])))
    assert max(errors) < 0.01, errors
    assert max(plain) > 0.02, plain  # the bias the refinement removes (0.03-0.06 px on these draws)


def test_coregister_files_refines_a_window_with_nodata_clouds(s2_texture, tmp_path):
    rng = np.random.default_rng(21)
    big, moved, true = _draw(s2_texture, rng, 400, 20)
    moved[~_clouds(big.shape, 0.3, rng)] = np.nan  # cloud written as nodata
    paths = []
    for name, arr in (("ref", big), ("mov", moved)):
        p = tmp_path / f"{name}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                           dtype="float32", crs="EPSG:32633", nodata=np.nan,
                           transform=from_origin(500000.0, 5000000.0, 10.0, 10.0)) as dst:
            dst.write(arr.astype("float32"), 1)
        paths.append(p)
    res = coreg.coregister_files(*paths, window_px=256)
    assert res.applied, res.reason
    assert max(abs(res.shift_row_px + true[0]), abs(res.shift_col_px + true[1])) < 0.01
    # x east = columns, y north = minus rows, 10 m pixels
    assert res.shift_x_m == pytest.approx(res.shift_col_px * 10.0)
    assert res.shift_y_m == pytest.approx(-res.shift_row_px * 10.0)
