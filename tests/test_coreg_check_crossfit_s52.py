"""Both checkerboard folds together (changedet.coreg_check.cross_fit): a registration on
each colour checked on the other. Content that fits one colour's translation and not
the other's reads as a residual in either fold alone, with opposite signs; the folds'
mean keeps what both share (the registration's bias against the check's estimator), their
half-difference the colours' disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from changedet.coreg import apply_shift
from changedet.coreg_check import adjust_residuals, cross_fit, stack_residuals
from changedet.coreg_network import checkerboard
from changedet.errors import CoregError
from test_coreg import fractal

CELL = 72
SIZE = 288


def _registered(fold: int, split_px: float, residual: np.ndarray) -> np.ndarray:
    """Three dates as a registration on colour ``fold`` leaves them.

    Date 2's content on colour 0 sits ``+split_px`` (row and col) from its content on
    colour 1 (which sits at ``-split_px``); the registration fits its own colour exactly,
    so on the other colour date 2 is off by ``2 split_px``, towards that colour's side.
    ``residual`` (dates, 2) is what the registration leaves on both colours alike.
    """
    rng = np.random.default_rng(7 + fold)
    base = fractal(SIZE, beta=2.0, seed=21)
    own = checkerboard((SIZE, SIZE), CELL, parity=fold)
    frames = []
    for k, s in enumerate(residual):
        img = apply_shift(base, *s)
        if k == 2 and split_px:
            # Colour 0 sits +2 split relative to colour 1; the registration zeroes its own colour.
            off = 2 * split_px * (1 if fold == 1 else -1)
            img = np.where(own, img, apply_shift(base, s[0] + off, s[1] + off))
        frames.append(img + rng.normal(0, 5, img.shape))
    return np.stack(frames)[:, None]


def _fold(fold: int, split_px: float, residual: np.ndarray):
    arr = _registered(fold, split_px, residual)
    held_out = checkerboard((SIZE, SIZE), CELL, parity=1 - fold)
    res = stack_residuals(arr, band=0, mask=held_out, pooling="weighted", window_px=12, cell_px=CELL, n_boot=20)
    return adjust_residuals(res, arr.shape[0])


def test_cross_fit_separates_the_colours_disagreement_from_a_shared_residual():
    residual = np.array([[0.0, 0.0], [0.05, -0.03], [-0.04, 0.06]])
    folds = [_fold(f, 0.1, residual) for f in (0, 1)]
    # Each fold alone: date 2 off by 2 x 0.1 px per component on its held-out colour,
    # with opposite signs in the two folds.
    for f in folds:
        assert f.magnitude_px.max() > 0.2
    np.testing.assert_allclose(folds[0].per_date[2] - folds[1].per_date[2], [0.4, 0.4], atol=0.03)
    out = cross_fit(folds)
    adj = out["adjusted"]
    # The mean keeps the residual (per date: the shift moving date k onto date 0).
    np.testing.assert_allclose(adj.per_date, -(residual - residual[0]), atol=0.015)
    truth = residual[adj.pairs[:, 1]] - residual[adj.pairs[:, 0]]
    np.testing.assert_allclose(adj.magnitude_px, np.hypot(*truth.T), atol=0.02)
    assert np.all(adj.stderr <= np.minimum(folds[0].stderr, folds[1].stderr) + 1e-12)
    # ... and reports the disagreement it removed.
    assert out["fold_chi2_dof"] > 10
    np.testing.assert_allclose(np.abs(out["fold_diff"][2]), [0.2, 0.2], atol=0.02)
    assert out["fold_diff_max_px"] > 0.25
    assert out["floor_fold_diff"]["max_px"][0] > out["floor"]["max_px"][0]


def test_cross_fit_keeps_a_residual_both_folds_share():
    residual = np.array([[0.0, 0.0], [0.15, 0.0], [0.0, -0.12]])
    out = cross_fit([_fold(f, 0.0, residual) for f in (0, 1)])
    np.testing.assert_allclose(out["adjusted"].per_date, -residual, atol=0.015)
    assert out["fold_diff_max_px"] < 0.03


def test_cross_fit_errors():
    f = _fold(0, 0.0, np.zeros((3, 2)))
    with pytest.raises(CoregError, match="two folds"):
        cross_fit([f])
    with pytest.raises(CoregError, match="covariance"):
        cross_fit([f, f.__class__(f.pairs, f.residual, f.stderr, f.magnitude_px, f.per_date, f.chi2_dof)])


@pytest.fixture(scope="module")
def naip_nir4(test_data):
    """NIR of the 2009, 2010, 2014 and 2020 dates on the 2009 grid (edge cropped), as (time, 1, y, x)."""
    import xarray as xr
    from rasterio.enums import Resampling

    from changedet.io import read_raster

    das = [read_raster(test_data(f"naip_timeseries_nd/m_4709963_se_14_1_{d}.tif")).sel(band=["b4"])
           for d in ("20090818", "20100629", "20140720", "20200831")]
    ref = das[0]
    stack = xr.concat([d.rio.reproject_match(ref, resampling=Resampling.cubic).assign_coords(x=ref.x, y=ref.y)
                       for d in das], dim="time").assign_coords(time=np.arange(len(das)))
    return stack.isel(y=slice(12, -12), x=slice(12, -12)).astype("float64")


@pytest.mark.slow
def test_cross_fit_on_real_naip_registrations(naip_nir4):
    """The stack registration on each colour of the 72 px checkerboard, checked on the other.

    On NAIP the two folds' residuals are nearly opposite: what one fold alone reads is
    the colours' disagreement (the content of one colour fits another translation than
    the other's), while the registration finds what the check's estimator finds on the
    pixels it was given (the folds' mean).
    """
    import xarray as xr

    from changedet.coreg import coregister_stack

    da = naip_nir4
    folds = []
    for fold in (0, 1):
        use = checkerboard(da.shape[-2:], CELL, parity=fold)
        valid = xr.DataArray(np.broadcast_to(use, (da.sizes["time"],) + use.shape).copy(), dims=("time", "y", "x"),
                             coords={"y": da.y, "x": da.x}).rio.write_crs(da.rio.crs)
        aligned, _ = coregister_stack(da, da.isel(time=0, drop=True), network="windows", per_band=True, valid=valid)
        res = stack_residuals(aligned.values, band=0, mask=~use, pooling="weighted", window_px=12, cell_px=CELL,
                              n_boot=50)
        folds.append(adjust_residuals(res, da.sizes["time"]))
    out = cross_fit(folds)
    adj = out["adjusted"]
    single = max(f.magnitude_px.max() for f in folds)
    msg = (f"single fold max {single:.3f} px; cross-fit max {adj.magnitude_px.max():.3f} +- "
           f"{adj.stderr.max():.3f} px; folds' half-difference max {out['fold_diff_max_px']:.3f} px, "
           f"chi2/dof {out['fold_chi2_dof']:.1f}")
    print("\n" + msg)
    # The target, measured on pixels each registration did not use.
    assert adj.magnitude_px.max() < 0.1, msg
    assert np.all(adj.magnitude_px - 2 * adj.stderr.max(axis=1) < 0.1), msg
    # What one fold alone reports is mostly the colours' disagreement, not shared residual.
    assert out["fold_diff_max_px"] > 2 * adj.magnitude_px.max(), msg
    assert out["fold_chi2_dof"] > 3, msg
