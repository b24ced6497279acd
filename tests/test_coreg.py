"""Tests of changedet.coreg: sign convention, accuracy on known shifts, the real
Sentinel-2 pair from AROSICS, unreliable inputs and the DataArray/reprojection paths.

Accuracy figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations


import numpy as np
import pyproj
import pytest
import xarray as xr
from affine import Affine
from scipy import ndimage

from changedet.coreg import CoregResult, apply_shift, coregister, estimate_shift
from changedet.errors import CoregError
from changedet.grid import GridSpec

CRS = "EPSG:32633"
RES = 10.0


# -- helpers --------------------------------------------------------------------------
def fractal(n: int, beta: float = 2.0, seed: int = 0) -> np.ndarray:
    """Gaussian field with a 1/f^beta power spectrum (natural-image-like), mean 1000, sd 200."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(n)
    k = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    k[0, 0] = 1.0
    spec = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) / k ** (beta / 2)
    spec[0, 0] = 0.0
    x = np.fft.ifft2(spec).real
    return (x - x.mean()) / x.std() * 200.0 + 1000.0


def spline_shift(img: np.ndarray, shift) -> np.ndarray:
    """Cubic-spline shift with NaN where the content came from outside the image."""
    out = ndimage.shift(img, shift, order=3, mode="nearest")
    inside = ndimage.shift(np.ones_like(img), shift, order=0, mode="constant", cval=0.0)
    out[inside < 0.5] = np.nan
    return out


def cluttered_pair(base: np.ndarray, shift, rng: np.random.Generator, change: float):
    """Reference and a moving image displaced by ``shift`` with changes, clouds and noise.

    ``change`` of the pixels of the moving image are replaced by rectangles of other
    values (new objects); ~10 % of moving and ~5 % of reference pixels are NaN clouds;
    both get Gaussian noise of 2 % of the image standard deviation.
    """
    n = base.shape[0]
    sd = float(base.std())
    mov = spline_shift(base, shift)
    ref = base.copy()
    changed = np.zeros(base.shape, bool)
    while changed.mean() < change:
        h, w = rng.integers(10, n // 5, 2)
        r, c = rng.integers(0, n - h), rng.integers(0, n - w)
        changed[r : r + h, c : c + w] = True
        mov[r : r + h, c : c + w] = rng.uniform(base.min(), base.max()) + rng.normal(0, 0.05 * sd, (h, w))
    for img, frac in ((mov, 0.10), (ref, 0.05)):
        blob = ndimage.gaussian_filter(rng.standard_normal(base.shape), 20)
        img[blob > np.quantile(blob, 1 - frac)] = np.nan
    mov += rng.normal(0, 0.02 * sd, base.shape)
    ref += rng.normal(0, 0.02 * sd, base.shape)
    return ref, mov


def grid_at(shape, x0=500000.0, y1=4200000.0, res=RES, crs=CRS) -> GridSpec:
    return GridSpec(pyproj.CRS.from_user_input(crs), Affine(res, 0, x0, 0, -res, y1), shape)


@pytest.fixture(scope="module")
def s2_texture(test_data):
    """512 x 512 crop of the real Sentinel-2 reference scene, fully inside its footprint."""
    import rioxarray

    da = rioxarray.open_rasterio(test_data("arosics_s2_pair/ref_S2A_20160608T153121_T33UUU_sub.jp2"))
    crop = da.isel(band=0, y=slice(1000, 1512), x=slice(1200, 1712)).values.astype("float64")
    assert (crop > 0).all(), "crop must lie inside the image footprint"
    return crop


# -- sign convention ------------------------------------------------------------------
def test_sign_convention_pixels_and_metres():
    ref = fractal(256, beta=2.5, seed=11)
    # moving = reference content displaced by +2.3 rows (down) and -1.7 cols (left)
    mov = spline_shift(ref, (2.3, -1.7))
    row, col, rel = estimate_shift(ref, mov)
    print(f"\nsign test: recovered ({row:+.3f}, {col:+.3f}) for expected (-2.300, +1.700), reliability {rel:.2f}")
    assert row == pytest.approx(-2.3, abs=0.03)
    assert col == pytest.approx(1.7, abs=0.03)
    assert rel > 0.7

    aligned = apply_shift(mov, row, col)
    inner = np.s_[8:-8, 8:-8]
    err = aligned[inner] - ref[inner]
    assert np.isfinite(err).all()
    # What remains is the smoothing of two cubic resamplings (5.6 % of the standard
    # deviation with the exact shift on this texture); misaligned it is ~48 %.
    assert np.sqrt(np.mean(err**2)) < 0.08 * ref.std()
    assert np.sqrt(np.mean((mov[inner] - ref[inner]) ** 2)) > 0.3 * ref.std()

    # DataArray path: metres follow x east / y north on a north-up grid.
    grid = grid_at(ref.shape)
    out, res = coregister(grid.attach(ref), grid.attach(mov))
    assert isinstance(res, CoregResult) and res.applied and res.reason == ""
    assert res.tie_points == 1
    # The moved frame has an uncovered border (NaN), so coregister refines the phase
    # estimate on the pixels both images see (s46): the same shift within a hundredth.
    assert res.shift_row_px == pytest.approx(row, abs=0.01)
    assert res.shift_row_px == pytest.approx(-2.3, abs=0.01)
    assert res.shift_x_m == pytest.approx(res.shift_col_px * RES)
    assert res.shift_y_m == pytest.approx(-res.shift_row_px * RES)
    assert res.shift_x_m == pytest.approx(17.0, abs=0.3)  # content must move east ...
    assert res.shift_y_m == pytest.approx(23.0, abs=0.3)  # ... and north (it sat 2.3 rows south)
    assert res.similarity_after > res.similarity_before
    np.testing.assert_allclose(out.values[inner], apply_shift(mov, res.shift_row_px, res.shift_col_px)[inner],
                               rtol=0, atol=1e-9)


# -- accuracy on known sub-pixel shifts -----------------------------------------------
@pytest.mark.parametrize("texture", ["fractal", "sentinel2"])
def test_known_subpixel_shifts_rmse(texture, request):
    base = fractal(512, seed=3) if texture == "fractal" else request.getfixturevalue("s2_texture")
    rng = np.random.default_rng(2024)
    n_cases = 12  # x 2 textures = 24 cases
    errors, rels = [], []
    for i in range(n_cases):
        true = rng.uniform(-10, 10, 2)
        ref, mov = cluttered_pair(base, true, np.random.default_rng(100 + i), change=rng.uniform(0.1, 0.3))
        row, col, rel = estimate_shift(ref, mov)
        errors.append((row + true[0], col + true[1]))  # the estimate should be -true
        rels.append(rel)
    err = np.asarray(errors)
    rmse = float(np.sqrt(np.mean(np.sum(err**2, axis=1))))
    print(
        f"\n{texture}: {n_cases} cluttered spline shifts, RMSE {rmse:.4f} px (radial), "
        f"max |component error| {np.abs(err).max():.4f} px, min reliability {min(rels):.2f}"
    )
    assert rmse <= 0.05
    assert min(rels) > 0.7


# -- the real Sentinel-2 pair ----------------------------------------------------------
def _s2_window(test_data, which: str, x: float, y: float, half: int) -> xr.DataArray:
    import rioxarray

    name = {"ref": "ref_S2A_20160608T153121_T33UUU_sub.jp2", "tgt": "tgt_S2A_20160529T153631_T33UUU_sub.jp2"}
    da = rioxarray.open_rasterio(test_data(f"arosics_s2_pair/{name[which]}"))
    win = da.sel(x=slice(x - half * RES, x + half * RES), y=slice(y + half * RES, y - half * RES))
    win = win.squeeze("band", drop=True).load()
    return win.where(win != 0)  # 0 = outside the footprint (the files declare no nodata)


# AROSICS (GFZ/arosics tests/test_COREG.py, ws=256) reports x_shift_map / y_shift_map:
# the offset added to the *target's* geotransform origin to put it onto the reference,
# i.e. the translation that moves the target content onto the reference, x east and
# y north. That is exactly CoregResult.shift_x_m / shift_y_m (moving = target), so the
# figures are compared directly, without a sign flip. Verified from the AROSICS source
# (COREG._get_updated_map_info adds x/y_shift_map to the origin) and by the result: the
# opposite sign would miss by ~40 m.
@pytest.mark.parametrize(
    ("x", "y", "expect_x", "expect_y"),
    [(339611.0, 5856426.0, -7.19, -18.90), (353810.0, 5840516.0, -6.56, -16.80)],
)
def test_real_pair_matches_arosics(test_data, x, y, expect_x, expect_y):
    # 256 x 256 reference window centred on the point (at the second point the reference
    # image ends 19 px east of it, so that window is 256 x 147); the target window has a
    # margin and goes through the reprojection (here a pure integer re-gridding) path.
    ref = _s2_window(test_data, "ref", x, y, 128)
    tgt = _s2_window(test_data, "tgt", x, y, 160)
    out, res = coregister(ref, tgt)
    dx, dy = res.shift_x_m - expect_x, res.shift_y_m - expect_y
    print(
        f"\nS2 pair at ({x:.0f}, {y:.0f}), window {ref.shape}: shift X {res.shift_x_m:+.2f} m, "
        f"Y {res.shift_y_m:+.2f} m (AROSICS {expect_x:+.2f}, {expect_y:+.2f}); "
        f"difference {dx:+.2f} / {dy:+.2f} m = {dx / RES:+.3f} / {dy / RES:+.3f} px; reliability "
        f"{res.reliability:.2f}; gradient NCC {res.similarity_before:.3f} -> {res.similarity_after:.3f}"
    )
    assert res.applied
    assert res.reliability > 0.7
    assert abs(dx) <= 2.0 and abs(dy) <= 2.0  # 0.2 px
    assert res.similarity_after > res.similarity_before
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out["x"].values, ref["x"].values)
    assert out.rio.crs == ref.rio.crs


def test_real_pair_cloudy_window_not_applied(test_data):
    # AROSICS' "cloudy" test point: the target is under thick cloud there.
    ref = _s2_window(test_data, "ref", 353308.0, 5859404.0, 128)
    tgt = _s2_window(test_data, "tgt", 353308.0, 5859404.0, 160)
    out, res = coregister(ref, tgt)
    print(f"\ncloudy S2 window: reliability {res.reliability:.2f}, applied {res.applied} ({res.reason})")
    assert not res.applied and res.reliability < 0.3 and "reliability" in res.reason
    np.testing.assert_array_equal(np.isnan(out.values), np.isnan(tgt.sel(x=ref.x, y=ref.y).values))


# -- unreliable and invalid inputs ----------------------------------------------------
def test_noise_vs_noise_is_unreliable_and_not_applied():
    rng = np.random.default_rng(7)
    grid = grid_at((256, 256))
    ref = grid.attach(rng.normal(1000, 50, (256, 256)))
    mov = grid.attach(rng.normal(1000, 50, (256, 256)))
    out, res = coregister(ref, mov)
    print(f"\nnoise vs noise: reliability {res.reliability:.2f}")
    assert res.reliability < 0.3
    assert not res.applied and "reliability" in res.reason
    np.testing.assert_array_equal(out.values, mov.values)  # left unshifted
    assert res.similarity_after == res.similarity_before


def test_unrelated_textures_are_unreliable():
    _, _, rel = estimate_shift(fractal(256, seed=1), fractal(256, seed=2))
    assert rel < 0.3


def test_shift_beyond_max_shift_not_applied():
    ref = fractal(256, seed=5)
    grid = grid_at(ref.shape)
    mov = grid.attach(spline_shift(ref, (0.0, 6.4)))
    out, res = coregister(grid.attach(ref), mov, max_shift_px=3.0)
    assert res.reliability > 0.7
    assert res.shift_col_px == pytest.approx(-6.4, abs=0.05)
    assert not res.applied and "max_shift_px" in res.reason
    # estimate_shift restricted to the radius cannot find the true peak: low reliability.
    _, _, rel = estimate_shift(ref, mov.values, max_shift_px=3.0)
    assert rel < 0.3


def test_all_nan_raises():
    grid = grid_at((128, 128))
    ref = grid.attach(fractal(128))
    with pytest.raises(CoregError, match="all NaN"):
        coregister(ref, grid.attach(np.full((128, 128), np.nan)))
    with pytest.raises(CoregError, match="valid overlapping pixels"):
        estimate_shift(ref.values, np.full((128, 128), np.nan))


def test_too_little_valid_overlap_raises():
    grid = grid_at((256, 256))
    ref = fractal(256)
    mov = ref.copy()
    mov[:, 20:] = np.nan  # 7.8 % of the grid left
    with pytest.raises(CoregError, match="valid overlapping pixels"):
        coregister(grid.attach(ref), grid.attach(mov))


def test_grids_that_do_not_overlap_raise():
    ref = grid_at((128, 128)).attach(fractal(128))
    far = grid_at((128, 128), x0=600000.0).attach(fractal(128))
    with pytest.raises(CoregError, match="do not overlap"):
        coregister(ref, far)
    # also across CRSs: a geographic grid on the other side of the globe
    geo = GridSpec(
        pyproj.CRS.from_epsg(4326), Affine(0.001, 0, -120.0, 0, -0.001, -30.0), (128, 128)
    ).attach(fractal(128))
    with pytest.raises(CoregError, match="do not overlap"):
        coregister(ref, geo)


def test_bad_shapes_and_bands_raise():
    with pytest.raises(CoregError, match="2-D"):
        estimate_shift(np.zeros((2, 64, 64)), np.zeros((2, 64, 64)))
    with pytest.raises(CoregError, match="shape"):
        estimate_shift(np.zeros((64, 64)), np.zeros((64, 65)))
    grid = grid_at((128, 128))
    ref = grid.attach(np.stack([fractal(128)] * 2), bands=["red", "green"])
    with pytest.raises(CoregError, match="band 'swir'"):
        coregister(ref, ref, band="swir")
    with pytest.raises(CoregError, match="CRS"):
        coregister(ref, xr.DataArray(fractal(128), dims=("y", "x"), coords={"y": grid.y, "x": grid.x}))


# -- DataArray and reprojection paths --------------------------------------------------
def test_apply_shift_dataarray_keeps_grid_and_shifts_bands_identically():
    grid = grid_at((128, 160))
    img = fractal(160, seed=4)[:128]
    da = grid.attach(np.stack([img, 2 * img + 5]), bands=["red", "nir"], name="refl", attrs={"units": "DN"})
    out = apply_shift(da, 1.25, -3.5)
    assert isinstance(out, xr.DataArray)
    assert out.dims == da.dims and out.name == "refl" and out.attrs["units"] == "DN"
    for c in ("x", "y", "band"):
        np.testing.assert_array_equal(out[c].values, da[c].values)
    assert out.rio.crs == da.rio.crs and "spatial_ref" in out.coords
    assert GridSpec.of(out).same_as(grid)
    np.testing.assert_allclose(out.values[1], 2 * out.values[0] + 5, equal_nan=True)
    np.testing.assert_array_equal(out.values, apply_shift(da.values, 1.25, -3.5))
    # content moved down 1.25 rows and left 3.5 cols: NaN where it came from outside
    assert np.isnan(out.values[:, 0, :]).all() and np.isnan(out.values[:, :, -3:]).all()
    assert np.isfinite(out.values[:, 3:-1, 1:-5]).all()
    # a NaN hole stays a (slightly grown) hole and does not spread
    holed = da.values.copy()
    holed[:, 60:64, 80:84] = np.nan
    h = apply_shift(holed, 0.5, 0.5)
    assert np.isnan(h[:, 61:64, 81:84]).all() and np.isfinite(h[:, 40:55, 40:75]).all()
    assert np.isnan(h).sum() < 2 * (128 + 160) + 2 * 25
    # zero shift is the identity
    np.testing.assert_allclose(apply_shift(img, 0.0, 0.0), img)


def test_reprojection_path_other_resolution_and_fractional_origin():
    # A continuous scene f(x, y) given on a 10 m lattice; the reference samples it on
    # that lattice, the moving image on an 8 m grid whose origin is offset by a
    # fraction of a pixel, with the content displaced by (+12 m east, -7 m north).
    scene = fractal(400, beta=2.5, seed=21)
    lattice = grid_at(scene.shape)
    ref_rows, ref_cols = slice(72, 328), slice(72, 328)
    ref_grid = GridSpec(
        lattice.crs, lattice.transform @ Affine.translation(ref_cols.start, ref_rows.start), (256, 256)
    )
    ref = ref_grid.attach(scene[ref_rows, ref_cols])

    disp_x, disp_y = 12.0, -7.0
    x0 = lattice.transform.c + 40 * RES + 3.3  # 0.33 reference pixel off the lattice
    y1 = lattice.transform.f - 40 * RES - 2.1
    mov_grid = GridSpec(lattice.crs, Affine(8.0, 0, x0, 0, -8.0, y1), (400, 400))
    xx, yy = np.meshgrid(mov_grid.x - disp_x, mov_grid.y - disp_y)
    r, c = lattice.rowcol(xx, yy)
    mov = mov_grid.attach(ndimage.map_coordinates(scene, [r, c], order=3, mode="nearest"))

    out, res = coregister(ref, mov)
    print(
        f"\nreprojection path: shift X {res.shift_x_m:+.2f} m, Y {res.shift_y_m:+.2f} m "
        f"(expected {-disp_x:+.2f}, {-disp_y:+.2f}), reliability {res.reliability:.2f}"
    )
    assert res.applied
    assert res.shift_x_m == pytest.approx(-disp_x, abs=1.0)  # 0.1 px
    assert res.shift_y_m == pytest.approx(-disp_y, abs=1.0)
    assert GridSpec.of(out).same_as(ref_grid)
    assert out.rio.crs == ref.rio.crs
    inner = np.s_[10:-10, 10:-10]
    resid = out.values[inner] - ref.values[inner]
    assert np.sqrt(np.nanmean(resid**2)) < 0.1 * ref.values.std()


def test_band_selection_prefers_nir_and_mean_default():
    grid = grid_at((256, 256))
    rng = np.random.default_rng(3)
    img = fractal(256, seed=8)
    shifted = spline_shift(img, (1.4, -0.6))
    noise = lambda: rng.normal(1000, 200, (256, 256))  # noqa: E731
    ref = grid.attach(np.stack([noise(), img]), bands=["blue", "nir"])
    mov = grid.attach(np.stack([noise(), shifted]), bands=["blue", "nir"])
    out, res = coregister(ref, mov)
    assert res.applied and res.shift_row_px == pytest.approx(-1.4, abs=0.05)
    assert out.dims == ("band", "y", "x") and list(out["band"].values) == ["blue", "nir"]
    # the blue band alone is noise: unreliable
    _, res_blue = coregister(ref, mov, band="blue")
    assert not res_blue.applied
    # without a preferred band name the mean of the bands is used
    ref2 = grid.attach(np.stack([img, img * 0.5]), bands=["b1", "b2"])
    mov2 = grid.attach(np.stack([shifted, shifted * 0.5]), bands=["b1", "b2"])
    _, res2 = coregister(ref2, mov2)
    assert res2.applied and res2.shift_col_px == pytest.approx(0.6, abs=0.05)


def test_valid_mask_excludes_changed_area():
    grid = grid_at((256, 256))
    img = fractal(256, seed=12)
    mov = spline_shift(img, (-0.8, 2.2))
    mov[:, :128] = img[:, :128]  # left half unshifted (e.g. a different object layer)
    valid = grid.attach(np.zeros((256, 256), bool))
    valid[:, 140:] = True
    _, res = coregister(grid.attach(img), grid.attach(mov), valid=valid)
    assert res.shift_row_px == pytest.approx(0.8, abs=0.05)
    assert res.shift_col_px == pytest.approx(-2.2, abs=0.05)
