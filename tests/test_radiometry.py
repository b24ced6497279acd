"""Relative radiometric normalisation (changedet.radiometry) against known gains and offsets.

The reference is a real NAIP image; the moving image is the same scene under a known
per-band linear radiometric difference, with noise and 20-30 % of the pixels replaced by
other content (change) that the fit must ignore.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from changedet.errors import ChangedetError
from changedet.radiometry import RadiometryError, fit_linear, normalise

GAINS = np.array([0.8, 1.25, 0.9, 1.6])
OFFSETS = np.array([12.0, -20.0, 5.0, -30.0])


@pytest.fixture(scope="module")
def naip(test_data):
    from changedet.io import read_raster

    da = read_raster(test_data("naip_timeseries_nd/m_4709963_se_14_1_20090818.tif"))
    return da.isel(y=slice(0, 400), x=slice(0, 400)).load()


def _changed_pair(ref: xr.DataArray, change: float, seed: int):
    """moving such that ref = GAINS * moving + OFFSETS on unchanged pixels; a change mask."""
    rng = np.random.default_rng(seed)
    v = ref.values.astype("float64")
    nb, rows, cols = v.shape
    mov = (v - OFFSETS[:nb, None, None]) / GAINS[:nb, None, None]
    changed = np.zeros((rows, cols), bool)
    while changed.mean() < change:
        h, w = rng.integers(8, 60, 2)
        r, c = rng.integers(0, rows - h), rng.integers(0, cols - w)
        changed[r:r + h, c:c + w] = True
        # New content: bright roofs / dark water, independent per band.
        mov[:, r:r + h, c:c + w] = rng.uniform(0, 255, (nb, 1, 1)) + rng.normal(0, 3, (nb, h, w))
    mov += rng.normal(0, 1.0, mov.shape)  # sensor noise (about 1 DN)
    return ref.copy(data=mov), changed


@pytest.mark.parametrize("selection", ["irmad", "robust"])
def test_pif_normalisation_recovers_known_gains_with_changes(naip, selection):
    mov, changed = _changed_pair(naip, change=0.25, seed=1)
    out, res = normalise(mov, naip, selection=selection)
    gain_err = np.abs(np.array(res.gain) - GAINS)
    off_err = np.abs(np.array(res.offset) - OFFSETS)
    resid = out.values[:, ~changed] - naip.values[:, ~changed]
    print(f"\n{selection}: gains {np.round(res.gain, 4)} (true {GAINS}), offsets {np.round(res.offset, 2)} "
          f"(true {OFFSETS}); PIFs {res.n_pif} ({res.pif_fraction:.0%}); "
          f"RMS residual on unchanged {np.sqrt(np.mean(resid**2)):.2f} DN")
    assert res.method == "pif" and res.selection == selection
    assert gain_err.max() < 0.02, gain_err
    assert off_err.max() < 2.5, off_err  # DN on a 0-255 scale
    assert np.sqrt(np.mean(resid**2)) < 2.5  # noise is ~1 DN in moving, scaled by the gain
    assert res.n_pif > 5000  # IR-MAD at p > 0.9 is strict (about 7 % here); robust keeps more
    assert out.dims == naip.dims and list(out["band"].values) == list(naip["band"].values)
    # A plain fit over all pixels is pulled off by the changes: the selection matters.
    naive = [fit_linear(mov.values[b].ravel(), naip.values[b].ravel())[0] for b in range(4)]
    assert np.abs(np.array(naive) - GAINS).max() > 5 * gain_err.max()


def test_pif_single_band_uses_robust_selection(naip):
    mov, changed = _changed_pair(naip.isel(band=[3]), change=0.2, seed=2)
    out, res = normalise(mov.isel(band=0, drop=True), naip.isel(band=3, drop=True))
    print(f"\nsingle band: gain {res.gain[0]:.4f} (true 0.8), offset {res.offset[0]:.2f} (true 12)")
    assert res.selection == "robust"
    assert res.gain[0] == pytest.approx(GAINS[0], abs=0.02)
    assert res.offset[0] == pytest.approx(OFFSETS[0], abs=2.5)
    assert out.dims == ("y", "x")


def test_histogram_matching_option(naip):
    mov, _ = _changed_pair(naip, change=0.0, seed=3)
    out, res = normalise(mov, naip, method="histogram")
    assert res.method == "histogram"
    for b in range(4):
        q_out = np.quantile(out.values[b], [0.05, 0.5, 0.95])
        q_ref = np.quantile(naip.values[b], [0.05, 0.5, 0.95])
        np.testing.assert_allclose(q_out, q_ref, atol=2.0)
    # Without change the histogram map is close to the true linear map.
    assert max(res.rmse) < 3.0


def test_nan_and_valid_mask_are_respected(naip):
    mov, _ = _changed_pair(naip, change=0.1, seed=4)
    m = mov.values.copy()
    m[:, :50, :] = np.nan
    mov = mov.copy(data=m)
    valid = np.ones(naip.shape[1:], bool)
    valid[:, :100] = False
    out, res = normalise(mov, naip, valid=valid, selection="robust")
    assert np.isnan(out.values[:, :50, :]).all() and np.isfinite(out.values[:, 60:, :]).all()
    assert res.gain[1] == pytest.approx(GAINS[1], abs=0.03)


def test_bad_inputs_raise_clear_errors(naip):
    with pytest.raises(RadiometryError, match="differ in shape"):
        normalise(naip.isel(band=[0, 1]), naip)
    renamed = naip.assign_coords(band=["r", "g", "b", "n"])
    with pytest.raises(RadiometryError, match="bands"):
        normalise(renamed, naip)
    with pytest.raises(RadiometryError, match="valid overlapping pixels"):
        normalise(naip.where(False), naip)
    with pytest.raises(RadiometryError, match="method"):
        normalise(naip, naip, method="magic")
    with pytest.raises(RadiometryError, match="constant"):
        normalise(naip.isel(band=0, drop=True) * 0 + 7, naip.isel(band=0, drop=True), selection="robust")
    assert issubclass(RadiometryError, ChangedetError)
