"""Accuracy matrix of the global shift estimate on textures the code was not tuned on.

Shifts are made with methods independent of :func:`changedet.coreg.apply_shift` (a
cubic spline): a band-limited Fourier shift of a reflect-padded image, and a
high-resolution source displaced by whole pixels then block-averaged (an exact
sub-pixel displacement without any interpolation). Textures: a real Sentinel-2 scene,
a real NAIP scene and a simulator scene; each case has 10-30 % changed pixels, NaN
clouds and noise (``cluttered_pair`` of test_coreg). Target: RMSE <= 0.05 px.
Figures are printed (``-s``).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from scipy import ndimage

from changedet.coreg import estimate_local, estimate_shift
from test_coreg import fractal, spline_shift


def fourier_shift(img: np.ndarray, shift) -> np.ndarray:
    """Band-limited shift; the reflect padding makes the periodic extension continuous."""
    n0, n1 = img.shape
    pad = np.pad(img, ((n0 // 2, n0 // 2), (n1 // 2, n1 // 2)), mode="symmetric")
    out = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(pad), shift)).real
    out = out[n0 // 2 : n0 // 2 + n0, n1 // 2 : n1 // 2 + n1]
    inside = ndimage.shift(np.ones_like(img), shift, order=0, mode="constant", cval=0.0)
    out[inside < 0.5] = np.nan
    return out


def clutter(base: np.ndarray, mov: np.ndarray, rng: np.random.Generator, change: float):
    """Reference and moving with changes, clouds and noise, as ``cluttered_pair`` of test_coreg.

    ``change`` of the moving pixels are replaced by rectangles of other values (new
    objects); ~10 % of moving and ~5 % of reference pixels become NaN clouds; both get
    Gaussian noise of 2 % of the image standard deviation.
    """
    ref, mov = base.copy(), mov.copy()
    sd = float(np.nanstd(base))
    lo, hi = float(np.nanmin(base)), float(np.nanmax(base))
    rows, cols = base.shape
    changed = np.zeros(base.shape, bool)
    while changed.mean() < change:
        h, w = rng.integers(10, rows // 5, 2)
        r, c = rng.integers(0, rows - h), rng.integers(0, cols - w)
        changed[r : r + h, c : c + w] = True
        mov[r : r + h, c : c + w] = rng.uniform(lo, hi) + rng.normal(0, 0.05 * sd, (h, w))
    for img, frac in ((mov, 0.10), (ref, 0.05)):
        blob = ndimage.gaussian_filter(rng.standard_normal(base.shape), 20)
        img[blob > np.quantile(blob, 1 - frac)] = np.nan
    mov += rng.normal(0, 0.02 * sd, base.shape)
    ref += rng.normal(0, 0.02 * sd, base.shape)
    return ref, mov


@pytest.fixture(scope="module")
def s2_full(test_data):
    import rioxarray

    da = rioxarray.open_rasterio(test_data("arosics_s2_pair/ref_S2A_20160608T153121_T33UUU_sub.jp2"))
    return da.isel(band=0).values.astype("float64")


@pytest.fixture(scope="module")
def textures(test_data, s2_full):
    from changedet.aoi import load_aoi
    from changedet.io import read_raster
    from changedet.simulate.render import render_scene

    naip = read_raster(test_data("naip_timeseries_nd/m_4709963_se_14_1_20150926.tif"))
    sim = render_scene(load_aoi("tumangang_railyard"), date(2023, 9, 20), "vhr", resolution_m=1.0,
                       misregistration=False, clear=True)
    nir = sim.data[sim.bands.index("NIR")].astype("float64")
    r0, c0 = (nir.shape[0] - 384) // 2, (nir.shape[1] - 384) // 2
    return {
        "sentinel2": s2_full[400:912, 600:1112],
        "naip": naip.isel(band=3).values.astype("float64")[100:612, 200:712],
        "simulator": nir[max(r0, 0) : max(r0, 0) + 384, max(c0, 0) : max(c0, 0) + 384],
    }


@pytest.mark.parametrize("texture", ["sentinel2", "naip", "simulator"])
def test_fourier_shifted_cluttered_rmse(textures, texture):
    base = textures[texture]
    assert np.isfinite(base).all() and base.std() > 0
    rng = np.random.default_rng(7)
    errs, rels = [], []
    for i in range(8):
        true = rng.uniform(-10, 10, 2)
        mov = fourier_shift(base, true)
        ref, mov = clutter(base, mov, np.random.default_rng(500 + i), rng.uniform(0.1, 0.3))
        row, col, rel = estimate_shift(ref, mov)
        errs.append((row + true[0], col + true[1]))
        rels.append(rel)
    err = np.asarray(errs)
    rmse = float(np.sqrt(np.mean(np.sum(err**2, axis=1))))
    print(f"\n{texture} {base.shape}: 8 Fourier shifts up to 10 px, 10-30 % changed, clouds, noise: "
          f"RMSE {rmse:.4f} px, max |error| {np.abs(err).max():.4f} px, min reliability {min(rels):.2f}")
    assert rmse <= 0.05
    assert min(rels) >= 0.5


def test_block_averaged_exact_subpixel_shifts(s2_full):
    # Shift the 10 m scene by whole pixels, then average 4 x 4 blocks: a displacement of
    # k/4 px at 40 m with no interpolation at all.
    k = 4
    src = s2_full[:2048, :2048]
    rng = np.random.default_rng(11)
    errs = []
    for i in range(6):
        ints = rng.integers(-40, 41, 2)
        big = np.roll(src, tuple(ints), axis=(0, 1))
        ref = src.reshape(512, k, 512, k).mean(axis=(1, 3))
        mov = big.reshape(512, k, 512, k).mean(axis=(1, 3))
        true = ints / k
        # Rolled-in content wraps around: mark it invalid.
        band_r, band_c = int(np.ceil(abs(true[0]))) + 1, int(np.ceil(abs(true[1]))) + 1
        mov[: band_r if true[0] > 0 else 0] = np.nan
        if true[0] < 0:
            mov[-band_r:] = np.nan
        mov[:, : band_c if true[1] > 0 else 0] = np.nan
        if true[1] < 0:
            mov[:, -band_c:] = np.nan
        ref, mov = clutter(ref, mov, np.random.default_rng(900 + i), 0.15)
        row, col, _ = estimate_shift(ref, mov)
        errs.append((row + true[0], col + true[1]))
    err = np.asarray(errs)
    rmse = float(np.sqrt(np.mean(np.sum(err**2, axis=1))))
    print(f"\nblock-averaged S2 (exact k/4 px shifts up to 10 px, 15 % changed): RMSE {rmse:.4f} px, "
          f"max {np.abs(err).max():.4f}")
    assert rmse <= 0.05


def test_local_tie_points_accuracy_and_outlier_rejection():
    # A smooth non-rigid displacement (1.5 px of bending over the frame on top of a
    # shift) applied by resampling at exact coordinates, plus a 200 x 200 px block
    # displaced by 6 px the other way (a moved object): its windows must be rejected.
    n = 768
    base = fractal(n, beta=2.2, seed=31)
    rr, cc = np.indices((n, n), dtype=float)
    dr = 3.2 + 1.5 * np.sin(np.pi * rr / n) + 0.6 * cc / n
    dc = -2.1 + 1.0 * np.cos(np.pi * cc / n) * rr / n
    mov = ndimage.map_coordinates(base, [rr - dr, cc - dc], order=5, mode="reflect")
    mov[260:460, 260:460] = spline_shift(base, (-6.0, 6.0))[260:460, 260:460]
    rng = np.random.default_rng(5)
    mov += rng.normal(0, 0.02 * base.std(), mov.shape)
    tp = estimate_local(base, mov, window_px=128, step_px=64)
    rows, cols = tp.row.astype(int), tp.col.astype(int)
    # The correction at a reference point r is -D(r - d) ~ -D(r) to 0.01 px here.
    er = tp.shift_row + dr[rows, cols]
    ec = tp.shift_col + dc[rows, cols]
    inside_block = (np.abs(tp.row - 360) < 100 - 32) & (np.abs(tp.col - 360) < 100 - 32)
    good = tp.kept & ~inside_block
    rmse = float(np.sqrt(np.mean(er[good] ** 2 + ec[good] ** 2)))
    print(f"\nlocal: {len(tp.row)} tie points, {int(tp.kept.sum())} kept; RMSE of kept {rmse:.4f} px; "
          f"windows inside the moved block kept: {int((tp.kept & inside_block).sum())} of {int(inside_block.sum())}")
    assert rmse <= 0.05
    assert inside_block.sum() >= 4 and not (tp.kept & inside_block).any()
    assert tp.kept.sum() >= 0.7 * (~inside_block).sum()
