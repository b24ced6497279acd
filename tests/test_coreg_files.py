"""``coregister_files``: the global shift from one window read alone from each file.

The fast file path must give what the whole-image estimator gives (known sub-pixel
shifts, the real Sentinel-2 pair at AROSICS' recorded points), choose a usable window
when the centre is nodata, fall back to the whole-image path for files on different
pixel lattices, and keep :func:`coregister`'s errors and its CLI JSON contract.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

from changedet import coreg
from changedet.cli import main as cli_main
from changedet.coreg import apply_result, coregister, coregister_files, estimate_window
from changedet.errors import CoregError, RasterError
from changedet.io import read_raster
from test_coreg import fractal

RES = 10.0
CRS = "EPSG:32633"


def _write(path, arr, x0=500000.0, y1=4200000.0, *, crs=CRS, res=RES, nodata=-9999.0, descriptions=None):
    arr = np.atleast_3d(arr) if arr.ndim == 2 else arr
    if arr.ndim == 3 and arr.shape[-1] == 1 and arr.shape[0] != 1:
        arr = np.moveaxis(arr, -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype="float32", crs=crs, transform=Affine(res, 0, x0, 0, -res, y1), nodata=nodata) as dst:
        dst.write(np.where(np.isfinite(arr), arr, nodata).astype("float32"))
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
    return str(path)


def _fourier_shift(img, shift):
    """Band-limited translation (content at p moves to p + shift), symmetric padding."""
    n0, n1 = img.shape
    pad = np.pad(img, ((n0 // 2, n0 // 2), (n1 // 2, n1 // 2)), mode="symmetric")
    out = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(pad), shift)).real
    return out[n0 // 2:n0 // 2 + n0, n1 // 2:n1 // 2 + n1]


@pytest.fixture(scope="module")
def scene():
    return fractal(512, seed=7)


@pytest.mark.parametrize("shift", [(2.3, -1.6), (-7.45, 5.8), (0.2, 0.35), (11.6, -9.3)])
def test_known_shift_from_files(tmp_path, scene, shift):
    rng = np.random.default_rng(3)
    ref = scene + rng.normal(0, 4, scene.shape)
    mov = _fourier_shift(scene, shift) + rng.normal(0, 4, scene.shape)
    a, b = _write(tmp_path / "ref.tif", ref), _write(tmp_path / "mov.tif", mov)
    res = coregister_files(a, b)
    # Content displaced by +shift is moved back by -shift: rows down, x east = cols.
    assert res.applied, res.reason
    assert res.mode == "global" and res.tie_points == 1
    assert abs(res.shift_row_px + shift[0]) < 0.05 and abs(res.shift_col_px + shift[1]) < 0.05
    assert res.shift_x_m == pytest.approx(res.shift_col_px * RES)
    assert res.shift_y_m == pytest.approx(-res.shift_row_px * RES)
    assert res.reliability > 0.7
    assert res.similarity_after > res.similarity_before
    # The whole-image estimator agrees (the window is a quarter of the image).
    whole = coregister(read_raster(a), read_raster(b))[1]
    assert abs(whole.shift_row_px - res.shift_row_px) < 0.05 and abs(whole.shift_col_px - res.shift_col_px) < 0.05


def test_moving_file_on_another_extent_of_the_same_lattice(tmp_path, scene):
    # The moving file starts 37 rows and 21 columns later and is smaller: its window is
    # found through the integer lattice offset, not by resampling.
    shift = (-3.3, 4.7)
    mov_full = _fourier_shift(scene, shift)
    a = _write(tmp_path / "ref.tif", scene[:400, :400])
    b = _write(tmp_path / "mov.tif", mov_full[37:480, 21:500], x0=500000.0 + 21 * RES, y1=4200000.0 - 37 * RES)
    res = coregister_files(a, b)
    assert res.applied
    assert abs(res.shift_row_px + shift[0]) < 0.05 and abs(res.shift_col_px + shift[1]) < 0.05


def test_nodata_centre_moves_the_window(tmp_path, scene):
    shift = (1.4, 2.2)
    ref = scene.copy()
    ref[150:370, 150:370] = np.nan  # the centre window is mostly nodata
    a, b = _write(tmp_path / "ref.tif", ref), _write(tmp_path / "mov.tif", _fourier_shift(scene, shift))
    res = coregister_files(a, b, window_px=128)
    assert res.applied
    assert abs(res.shift_row_px + shift[0]) < 0.05 and abs(res.shift_col_px + shift[1]) < 0.05


def test_other_lattice_falls_back_to_whole_images(tmp_path, scene):
    # Half a pixel off the reference lattice: the moving image must be resampled, which
    # coregister does on the whole images; coregister_files returns exactly its result.
    a = _write(tmp_path / "ref.tif", scene[:256, :256])
    b = _write(tmp_path / "mov.tif", scene[:256, :256], x0=500000.0 + RES / 2)
    res = coregister_files(a, b)
    assert res == coregister(read_raster(a), read_raster(b))[1]
    assert abs(res.shift_col_px + 0.5) < 0.1  # the moving content lies half a pixel east


def test_unrelated_images_are_not_applied(tmp_path, scene):
    other = fractal(512, seed=99)
    res = coregister_files(_write(tmp_path / "ref.tif", scene), _write(tmp_path / "mov.tif", other))
    assert not res.applied
    assert res.similarity_after == res.similarity_before


def test_errors(tmp_path, scene):
    a = _write(tmp_path / "ref.tif", scene)
    far = _write(tmp_path / "far.tif", scene, x0=900000.0)
    with pytest.raises(CoregError, match="does not overlap"):
        coregister_files(a, far)
    geo = _write(tmp_path / "geo.tif", scene, x0=10.0, y1=50.0, crs="EPSG:4326", res=0.0001)
    with pytest.raises(CoregError, match="units of length"):
        coregister_files(geo, geo)
    three = _write(tmp_path / "three.tif", np.stack([scene] * 3))
    with pytest.raises(CoregError, match="no common band"):
        coregister_files(a, three)
    with pytest.raises(CoregError, match="'nir' is not in"):
        coregister_files(a, a, band="nir")
    with pytest.raises(RasterError, match="missing.tif"):
        coregister_files(a, tmp_path / "missing.tif")
    with pytest.raises(CoregError, match="at least 32"):
        coregister_files(a, a, window_px=8)
    with pytest.raises(CoregError, match="margin"):
        estimate_window(np.zeros((40, 40)), np.zeros((40, 40)), search_margin=4)


def test_preferred_band_is_read(tmp_path, scene):
    # Multi-band files: the NIR band both have is matched, whatever its position.
    shift = (0.7, -2.4)
    noise = np.random.default_rng(1).normal(0, 200, scene.shape)
    ref = np.stack([noise, scene])
    mov = np.stack([_fourier_shift(scene, shift), noise[::-1]])
    a = _write(tmp_path / "ref.tif", ref, descriptions=["red", "nir"])
    b = _write(tmp_path / "mov.tif", mov, descriptions=["nir", "red"])
    res = coregister_files(a, b)
    assert res.applied
    assert abs(res.shift_row_px + shift[0]) < 0.05 and abs(res.shift_col_px + shift[1]) < 0.05


@pytest.mark.parametrize(
    ("x", "y", "expect_x", "expect_y"),
    [(339611.0, 5856426.0, -7.19, -18.90), (353810.0, 5840516.0, -6.56, -16.80)],
)
def test_real_pair_files_match_arosics(test_data, tmp_path, x, y, expect_x, expect_y):
    # Windows of the real Sentinel-2 pair around AROSICS' recorded points, written as
    # GeoTIFFs (0 = outside the footprint becomes nodata); within 0.2 px of its figures.
    paths = {}
    for which, name, half in (("ref", "ref_S2A_20160608T153121_T33UUU_sub.jp2", 128),
                              ("tgt", "tgt_S2A_20160529T153631_T33UUU_sub.jp2", 160)):
        with rasterio.open(test_data(f"arosics_s2_pair/{name}")) as src:
            r, c = src.index(x, y)
            r0, c0 = max(r - half, 0), max(c - half, 0)
            win = Window(c0, r0, min(c + half, src.width) - c0, min(r + half, src.height) - r0)
            arr = src.read(1, window=win).astype("float32")
            x0, y1 = src.window_transform(win).c, src.window_transform(win).f
        paths[which] = _write(tmp_path / f"{which}.tif", np.where(arr == 0, np.nan, arr), x0, y1)
    res = coregister_files(paths["ref"], paths["tgt"])
    print(f"\nfiles path at ({x:.0f}, {y:.0f}): {res.shift_x_m:+.2f} / {res.shift_y_m:+.2f} m "
          f"(AROSICS {expect_x:+.2f} / {expect_y:+.2f}), reliability {res.reliability:.2f}")
    assert res.applied
    assert abs(res.shift_x_m - expect_x) <= 2.0 and abs(res.shift_y_m - expect_y) <= 2.0


def test_cli_window_json_contract_and_out(tmp_path, scene, capsys):
    shift = (2.6, -3.1)
    a = _write(tmp_path / "ref.tif", scene)
    b = _write(tmp_path / "mov.tif", _fourier_shift(scene, shift))
    out = tmp_path / "aligned.tif"
    assert cli_main(["coregister", a, b, "--window", "256", "--json", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("shift_x_px", "shift_y_px", "shift_x_m", "shift_y_m", "reliability", "tie_points",
                "similarity_before", "similarity_after"):
        assert key in doc
    res = coregister_files(a, b)
    assert doc["shift_x_px"] == pytest.approx(res.shift_col_px, abs=1e-4)
    assert doc["shift_y_px"] == pytest.approx(-res.shift_row_px, abs=1e-4)
    assert doc["applied"] and doc["mode"] == "global" and doc["tie_points"] == 1
    aligned = read_raster(out)
    expect = apply_result(read_raster(a), read_raster(b), res)
    np.testing.assert_allclose(aligned.values, expect.values, rtol=1e-6, equal_nan=True)


# -- the helpers the fast paths were built from ------------------------------------------
def test_composed_gradient_equals_gaussian_then_sobel(scene):
    img = scene[:200, :180].astype(np.float32)
    grad, _ = coreg._gradient(img, np.ones(img.shape, bool))
    smooth = ndimage.gaussian_filter(img.astype(np.float64), 1.0)
    ref = ndimage.sobel(smooth, axis=1) + 1j * ndimage.sobel(smooth, axis=0)
    # Interior: exactly the same filter; the frame edge differs only by where the
    # reflection is applied (once for the composed kernel, twice for two passes).
    inner = np.s_[6:-6, 6:-6]
    assert np.abs(grad[inner] - ref[inner]).max() < 1e-4 * np.abs(ref).max()


def test_coherence_and_keys_resample():
    rng = np.random.default_rng(5)
    win = (rng.standard_normal((3, 32, 32)) + 1j * rng.standard_normal((3, 32, 32))).astype(np.complex64)
    win[2] = win[2].real  # one orientation only: coherence 1
    s = np.sum(np.abs(win) ** 2, axis=(1, 2))
    z = np.abs(np.sum(win.astype(np.complex128) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(coreg._coherence(win), z / s, rtol=1e-5)
    assert coreg._coherence(win)[2] == pytest.approx(1.0, abs=1e-6)
    # Cubic convolution reproduces a linear ramp exactly at any fraction.
    rr, cc = np.indices((40, 40), dtype=np.float32)
    g = (2 * rr + 3j * cc).astype(np.complex64)
    out, ok = coreg._keys_resample(g, np.ones(g.shape, bool), 1.3, -2.6, 8, 20)
    er, ec = np.indices((20, 20)) + 8
    np.testing.assert_allclose(out, 2 * (er - 1.3) + 3j * (ec + 2.6), atol=1e-3)
    assert ok.all()


def test_read_raster_opens_the_file_once(tmp_path, scene, monkeypatch):
    path = _write(tmp_path / "one.tif", scene[:64, :64])
    calls = []
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    da = read_raster(path)
    assert len(calls) == 1
    assert da.shape == (1, 64, 64) and da.dtype == np.float32


@pytest.mark.parametrize("kind", ["CLM", "SCL", "SCL255"])
def test_window_ignores_what_the_class_band_calls_cloud(tmp_path, scene, kind):
    """A cloud sits at the same place in both files (weather, not ground): its texture
    pulls an unmasked match towards zero shift. With the CLM / SCL band of each file
    marking it, the one-window path masks it as the whole-image path does. ``SCL255``:
    SCL values outside the classes 0-11 (a fill, a foreign class map) are no data, not
    clear, as in :func:`changedet.cloudmask.scl_cloud`."""
    rng = np.random.default_rng(5)
    shift = (3.4, -2.7)
    ref = scene + rng.normal(0, 2, scene.shape)
    mov = _fourier_shift(scene, shift) + rng.normal(0, 2, scene.shape)
    cloud = np.zeros(scene.shape, bool)
    cloud[120:400, 100:330] = True  # most of the central 256 px window
    haze = 6 * fractal(512, seed=99)  # strong texture of its own, identical in both
    ref, mov = np.where(cloud, haze, ref), np.where(cloud, haze, mov)
    cloud_val, clear_val = {"CLM": (1, 0), "SCL": (9, 4), "SCL255": (255, 4)}[kind]
    cls = np.where(cloud, cloud_val, clear_val).astype("float32")
    names = ["B04", kind[:3]]
    a = _write(tmp_path / "ref.tif", np.stack([ref, cls]), descriptions=names)
    b = _write(tmp_path / "mov.tif", np.stack([mov, cls]), descriptions=names)
    res = coregister_files(a, b, window_px=256)
    assert res.applied, res.reason
    assert abs(res.shift_row_px + shift[0]) < 0.1 and abs(res.shift_col_px + shift[1]) < 0.1
    # The same files without the class band: the cloud's texture wins (the test can fail).
    a2 = _write(tmp_path / "ref2.tif", ref, descriptions=["B04"])
    b2 = _write(tmp_path / "mov2.tif", mov, descriptions=["B04"])
    blind = coregister_files(a2, b2, window_px=256)
    assert abs(blind.shift_row_px + shift[0]) > 0.5 or abs(blind.shift_col_px + shift[1]) > 0.5 or not blind.applied
