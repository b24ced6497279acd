"""Session 13 fixes: cloud-class bands in ``changedet change``, changed-area counting, ground
area factors, local-source band case, ``--out`` through a symlink, BLAS thread limits on
error, ``GridSpec`` type hints, the shared reflect-padding helper of the coreg kernels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from changedet.change import ChangeError, detect_change, load_pair
from changedet.cli import main
from changedet.grid import GridSpec
from changedet.io import write_geotiff

RES = 10.0
GRID = GridSpec.from_bounds("EPSG:32631", (440000.0, 5410000.0, 440000.0 + 80 * RES, 5410000.0 + 64 * RES), RES)
BANDS = ["B02", "B03", "B04", "B08"]
BLOCK = (slice(20, 32), slice(30, 46))  # real change (a new roof)
CLOUD = (slice(40, 56), slice(50, 72))  # a bright cloud on AFTER only


def _scene(seed, change, cloud=False):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:80]
    base = np.stack([1000 + 300 * np.sin(xx / (7 + b)) + 200 * np.cos(yy / (5 + b)) for b in range(4)])
    img = base + rng.normal(0, 15, base.shape)
    if change:
        img[(slice(None),) + BLOCK] += np.array([900, 700, 1200, -300])[:, None, None]
    if cloud:
        img[(slice(None),) + CLOUD] += 4000.0
    return np.clip(img, 0, 65535).astype(np.uint16)


def _with_class(img, kind, values):
    """``img`` (4, y, x) with a class band ``kind`` appended (uint16 file)."""
    return GRID.attach(np.concatenate([img, values[None].astype(np.uint16)]), bands=BANDS + [kind])


@pytest.fixture(scope="module")
def clm_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("clm")
    clear = np.zeros(GRID.shape)
    cloudy = clear.copy()
    cloudy[CLOUD] = 1
    write_geotiff(_with_class(_scene(0, False), "CLM", clear), d / "before.tif", dtype="uint16")
    write_geotiff(_with_class(_scene(1, True, cloud=True), "CLM", cloudy), d / "after.tif", dtype="uint16")
    # The same AFTER without its cloud band.
    write_geotiff(GRID.attach(_scene(1, True, cloud=True), bands=BANDS), d / "after_nomask.tif", dtype="uint16")
    return d


def _block_found(mask):
    truth = np.zeros(GRID.shape, bool)
    truth[BLOCK] = True
    return (mask & truth).sum() / truth.sum()


@pytest.mark.parametrize("method, smooth", [("cva", 1), ("irmad", 1), ("diff", 1), ("irmad", 3), ("zscore", 3)])
def test_clm_band_is_a_mask_not_a_band(clm_pair, method, smooth):
    b, a = load_pair(clm_pair / "before.tif", clm_pair / "after.tif")
    assert [str(v) for v in b["band"].values] == BANDS
    assert [str(v) for v in a["band"].values] == BANDS
    # Cloudy pixels are nodata in both dates; the rest is untouched.
    assert np.isnan(a.values[(slice(None),) + CLOUD]).all() and np.isnan(b.values[(slice(None),) + CLOUD]).all()
    assert np.isfinite(a.values[(slice(None),) + BLOCK]).all()
    res = detect_change(b, a, method=method, smooth=smooth)
    m = np.asarray(res.mask.values)
    assert not m[CLOUD].any()
    assert np.isnan(np.asarray(res.magnitude.values)[CLOUD]).all()
    assert _block_found(m) > 0.8
    # Nor does the cloud's rim flag change (one date's window must not see it).
    rim = np.zeros(GRID.shape, bool)
    rim[CLOUD[0].start - 3:CLOUD[0].stop + 3, CLOUD[1].start - 3:CLOUD[1].stop + 3] = True
    rim[CLOUD] = False
    assert m[rim].mean() < 0.02


def test_clm_on_one_date_masks_both(clm_pair):
    b, a = load_pair(clm_pair / "after.tif", clm_pair / "before.tif")
    assert np.isnan(b.values[(slice(None),) + CLOUD]).all() and np.isnan(a.values[(slice(None),) + CLOUD]).all()
    b, a = load_pair(clm_pair / "before.tif", clm_pair / "after_nomask.tif")
    # No cloud band in AFTER, none of BEFORE's pixels cloudy: nothing masked, no CLM band kept.
    assert [str(v) for v in b["band"].values] == BANDS and np.isfinite(b.values).all()


def test_clm_named_in_bands_is_refused(clm_pair):
    with pytest.raises(ChangeError, match="CLM.*mask"):
        load_pair(clm_pair / "before.tif", clm_pair / "after.tif", bands=["B04", "CLM"])
    # Selecting spectral bands still applies the cloud band.
    b, a = load_pair(clm_pair / "before.tif", clm_pair / "after.tif", bands=["B04", "B08"])
    assert [str(v) for v in a["band"].values] == ["B04", "B08"]
    assert np.isnan(a.values[(slice(None),) + CLOUD]).all()


def test_cli_change_with_clm(clm_pair, tmp_path, capsys):
    out = tmp_path / "c.tif"
    rc = main(["change", str(clm_pair / "before.tif"), str(clm_pair / "after.tif"), "--method", "cva",
               "--out", str(out), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip())
    assert doc["bands"] == BANDS
    assert doc["valid_pixels"] == GRID.shape[0] * GRID.shape[1] - 16 * 22
    with rasterio.open(out) as src:
        change = src.read(2)
    assert np.isnan(change[CLOUD]).all()
    assert doc["changed_area_m2"] == pytest.approx(12 * 16 * 100, rel=0.15)


@pytest.mark.parametrize("scl_bad", [3, 8, 9, 10, 0])
def test_scl_band_masks_cloud_shadow_cirrus_nodata(tmp_path, scl_bad):
    scl_b = np.full(GRID.shape, 4)  # vegetation
    scl_a = np.full(GRID.shape, 5)  # bare soil
    scl_a[CLOUD] = scl_bad
    write_geotiff(_with_class(_scene(0, False), "SCL", scl_b), tmp_path / "b.tif", dtype="uint16")
    write_geotiff(_with_class(_scene(1, True, cloud=True), "scl", scl_a), tmp_path / "a.tif", dtype="uint16")
    b, a = load_pair(tmp_path / "b.tif", tmp_path / "a.tif")
    assert [str(v) for v in a["band"].values] == BANDS
    res = detect_change(b, a, method="cva")
    m = np.asarray(res.mask.values)
    assert not m[CLOUD].any() and np.isnan(np.asarray(res.magnitude.values)[CLOUD]).all()
    assert _block_found(m) > 0.8
    # Clear classes (4 vegetation against 5 bare soil) are not change by themselves.
    assert np.isfinite(np.asarray(res.magnitude.values)[:10]).all()


def test_scl_file_in_a_band_directory(tmp_path):
    """An L2A directory: the 20 m SCL file masks the 10 m bands (nearest neighbour)."""
    for name, img, cloudy in (("d1", _scene(0, False), False), ("d2", _scene(1, True, cloud=True), True)):
        sub = tmp_path / name
        sub.mkdir()
        da = GRID.attach(img, bands=BANDS)
        for band in BANDS:
            write_geotiff(da.sel(band=[band]), sub / f"T31UDQ_20170829T105019_{band}_10m.tif", dtype="uint16")
        coarse = GRID.scaled(20.0)
        scl = np.full(coarse.shape, 4, np.uint16)
        if cloudy:
            scl[20:28, 25:36] = 9  # CLOUD at 20 m
        write_geotiff(coarse.attach(scl[None], bands=["SCL"]), sub / "T31UDQ_20170829T105019_SCL_20m.tif",
                      dtype="uint16")
    b, a = load_pair(tmp_path / "d1", tmp_path / "d2")
    assert [str(v) for v in a["band"].values] == BANDS
    assert np.isnan(a.values[(slice(None),) + CLOUD]).all()
    assert np.isfinite(a.values[:, :40]).all()
    res = detect_change(b, a, method="cva")
    assert not np.asarray(res.mask.values)[CLOUD].any()


def test_clm_of_after_on_another_grid(clm_pair, tmp_path):
    """AFTER in Web Mercator with its CLM: the mask follows it onto BEFORE's grid by nearest
    neighbour (a bilinear 0/1 would leave cloud edges half-masked)."""
    from changedet.io import read_raster

    after = read_raster(clm_pair / "after.tif")
    merc = after.rio.reproject("EPSG:3857", resampling=rasterio.enums.Resampling.nearest)
    write_geotiff(merc, tmp_path / "after_3857.tif")
    b, a = load_pair(clm_pair / "before.tif", tmp_path / "after_3857.tif")
    assert [str(v) for v in a["band"].values] == BANDS
    inner = (slice(CLOUD[0].start + 2, CLOUD[0].stop - 2), slice(CLOUD[1].start + 2, CLOUD[1].stop - 2))
    assert np.isnan(a.values[(slice(None),) + inner]).all() and np.isnan(b.values[(slice(None),) + inner]).all()
    res = detect_change(b, a, method="cva")
    m = np.asarray(res.mask.values)
    assert m[inner].sum() == 0
    assert _block_found(m) > 0.8


# --- changed_area_m2: one counting rule, one pass over a lazy mask ------------------------------

def _count_computes():
    from dask.callbacks import Callback

    class Count(Callback):
        n = 0

        def _start(self, dsk):
            Count.n += 1

    return Count


def _area_grid(crs, n):
    """An n x n pixel grid near 2 E 48 N in lon/lat, Web Mercator (ground factors apply) or UTM."""
    if crs == "EPSG:4326":
        return GridSpec.from_bounds(crs, (2.0, 48.0, 2.0 + n * 1e-4, 48.0 + n * 1e-4), 1e-4)
    x0, y0 = (222000.0, 6100000.0) if crs == "EPSG:3857" else (440000.0, 5410000.0)
    return GridSpec.from_bounds(crs, (x0, y0, x0 + n * 20.0, y0 + n * 20.0), 20.0)


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857", "EPSG:32631"])
def test_changed_area_counts_nan_as_nodata_in_every_crs(crs):
    """A float change layer (1 changed, 0 not, NaN nodata: the CLI's ``change`` band) counts
    its 1s only, whatever the CRS; the geographic path counted NaN as changed."""
    from changedet.change import changed_area_m2

    g = _area_grid(crs, 20)
    flags = np.zeros(g.shape, bool)
    flags[3:9, 4:12] = True
    as_float = np.where(flags, 1.0, 0.0).astype("float32")
    as_float[12:, :] = np.nan  # nodata rows
    ref = changed_area_m2(g.attach(flags))
    assert ref > 0
    assert changed_area_m2(g.attach(as_float)) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857", "EPSG:32631"])
def test_changed_area_computes_a_lazy_mask_once(crs):
    from changedet.change import changed_area_m2

    g = _area_grid(crs, 300)  # more than one 256 px area block
    flags = np.zeros(g.shape, bool)
    flags[30:90, 40:200] = True
    ref = changed_area_m2(g.attach(flags))
    lazy = g.attach(flags).chunk({"y": 64, "x": 64})
    Count = _count_computes()
    with Count():
        got = changed_area_m2(lazy)
    assert got == pytest.approx(ref, rel=1e-12)
    assert Count.n == 1, f"the lazy mask was computed {Count.n} times"


# --- local source: band names in any case ----------------------------------------------------

def _local_scene(tmp_path, bands):
    from types import SimpleNamespace

    from changedet.sources.local import LocalSource

    data = np.stack([np.full(GRID.shape, 1200), np.full(GRID.shape, 3000), np.zeros(GRID.shape)])
    data[2, :10, :10] = 1
    path = tmp_path / "scene_20230105.tif"
    write_geotiff(GRID.attach(data, bands=["x1", "x2", "x3"]), path, dtype="uint16")
    src = LocalSource(path=str(tmp_path), bands=bands)
    scene = SimpleNamespace(properties={"path": str(path)}, id="s", sensor="s2", platform="local", aoi_id="a")
    return src, src.load(scene, GRID)


def test_local_source_bands_are_upper_cased(tmp_path):
    _, upper = _local_scene(tmp_path, ["B04", "B08", "CLM"])
    src, lower = _local_scene(tmp_path, [" b04", "b08", "clm"])
    assert list(src.bands) == ["B04", "B08", "CLM"]
    assert [str(b) for b in lower["band"].values] == ["B04", "B08", "CLM"]
    # clm is the cloud mask: classes kept (0/1), not scaled as reflectance.
    assert float(lower.sel(band="CLM").max()) == 1.0
    np.testing.assert_array_equal(lower.values, upper.values)


@pytest.mark.parametrize("bands, match", [("B04,B08", "list of band names"), (["B04", ""], "list of band names"),
                                          (["B04", "b04"], "B04 more than once")])
def test_local_source_bad_bands(bands, match):
    from changedet.errors import SourceError
    from changedet.sources.local import LocalSource

    with pytest.raises(SourceError, match=match):
        LocalSource(path=".", bands=bands)


# --- --out through a symbolic link -----------------------------------------------------------

def test_atomic_write_goes_through_a_symlink(tmp_path):
    import os

    from changedet.io import atomic_write

    store = tmp_path / "disk2"
    store.mkdir()
    target = store / "result.txt"
    target.write_text("old")
    link = tmp_path / "latest.txt"
    link.symlink_to(os.path.relpath(target, tmp_path))  # relative, as ln -s makes them
    chain = tmp_path / "chain.txt"
    chain.symlink_to(link)
    assert atomic_write(chain, lambda t: t.write_text("new")) == chain
    assert link.is_symlink() and chain.is_symlink()
    assert target.read_text() == "new"
    # No temporary file left beside the link or the target.
    assert sorted(p.name for p in store.iterdir()) == ["result.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.txt", "disk2", "latest.txt"]
    # A dangling link is refused (see test_dangling_out_link_is_refused).


def test_atomic_write_refuses_a_link_loop(tmp_path):
    from changedet.io import OutputPathError, atomic_write

    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OutputPathError, match="--out .*a.tif.*loop"):
        atomic_write(a, lambda t: t.write_text("x"), option="--out")
    assert a.is_symlink() and b.is_symlink()


def test_cli_change_out_symlink(clm_pair, tmp_path, capsys):
    target = tmp_path / "real" / "c.tif"
    target.parent.mkdir()
    target.write_bytes(b"stale")
    link = tmp_path / "c.tif"
    link.symlink_to(target)
    poly_target = tmp_path / "real" / "c.geojson"
    poly_target.write_text("{}")
    poly = tmp_path / "c.geojson"
    poly.symlink_to(poly_target)
    rc = main(["change", str(clm_pair / "before.tif"), str(clm_pair / "after.tif"), "--method", "cva",
               "--out", str(link), "--polygons", str(poly), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip())
    assert doc["out"] == str(link)
    assert link.is_symlink() and poly.is_symlink()
    with rasterio.open(target) as src:
        assert src.descriptions[:2] == ("magnitude", "change")
    assert json.loads(poly_target.read_text())["type"] == "FeatureCollection"


# --- coreg: BLAS thread limits restored whatever a library does ------------------------------

class _FakeBlas:
    user_api = "blas"

    def __init__(self, n, fail=None, fail_on="get"):
        self.n, self.fail, self.fail_on = n, fail, fail_on

    def get_num_threads(self):
        if self.fail is not None and self.fail_on == "get":
            raise self.fail
        return self.n

    def set_num_threads(self, n):
        if self.fail is not None and self.fail_on == "set" and n == 1:
            raise self.fail
        self.n = n


class _FakeController:
    def __init__(self, libs):
        self.lib_controllers = libs


def _fake_blas(monkeypatch, libs):
    import changedet.coreg as coreg

    pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(coreg, "_BLAS_CONTROLLER", _FakeController(libs))
    monkeypatch.setattr(coreg, "_BLAS_USERS", 0)
    monkeypatch.setattr(coreg, "_BLAS_LIMIT", None)
    return coreg


@pytest.mark.parametrize("fail_on", ["get", "set"])
def test_blas_limit_skips_a_failing_library(monkeypatch, fail_on):
    a, bad, c = _FakeBlas(4), _FakeBlas(8, RuntimeError("no such symbol"), fail_on), _FakeBlas(2)
    coreg = _fake_blas(monkeypatch, [a, bad, c])
    with coreg._blas_single_thread():
        assert (a.n, c.n) == (1, 1)
    assert (a.n, bad.n, c.n) == (4, 8, 2)
    assert coreg._BLAS_USERS == 0 and coreg._BLAS_LIMIT is None


def test_blas_limit_restored_when_entry_is_interrupted(monkeypatch):
    a, c = _FakeBlas(4), _FakeBlas(2)
    bad = _FakeBlas(8, KeyboardInterrupt(), "get")
    coreg = _fake_blas(monkeypatch, [a, c, bad])
    with pytest.raises(KeyboardInterrupt):
        with coreg._blas_single_thread():
            pass
    assert (a.n, c.n) == (4, 2)
    assert coreg._BLAS_USERS == 0 and coreg._BLAS_LIMIT is None
    # The next caller limits and restores as usual.
    bad.fail = None
    with coreg._blas_single_thread():
        assert (a.n, c.n, bad.n) == (1, 1, 1)
    assert (a.n, c.n, bad.n) == (4, 2, 8)


def test_blas_limit_restores_the_others_when_one_restore_fails(monkeypatch):
    a, b, c = _FakeBlas(4), _FakeBlas(3), _FakeBlas(2)
    coreg = _fake_blas(monkeypatch, [a, b, c])
    with coreg._blas_single_thread():
        def broken(n):  # the library is unloaded while the limit holds
            raise RuntimeError("gone")

        b.set_num_threads = broken
    assert (a.n, c.n) == (4, 2)
    assert coreg._BLAS_USERS == 0 and coreg._BLAS_LIMIT is None


# --- GridSpec type hints ---------------------------------------------------------------------

def test_grid_type_hints_resolve_at_run_time():
    import typing

    import affine
    import pyproj
    import xarray as xr

    import changedet.grid as grid

    assert typing.get_type_hints(GridSpec) == {"crs": pyproj.CRS, "transform": affine.Affine,
                                               "shape": tuple[int, int]}
    assert typing.get_type_hints(GridSpec.of)["da"] is xr.DataArray
    assert typing.get_type_hints(GridSpec.of)["return"] is GridSpec
    assert typing.get_type_hints(GridSpec.attach)["return"] is xr.DataArray
    assert typing.get_type_hints(grid.with_crs)["da"] is xr.DataArray
    assert typing.get_type_hints(grid.crs_of)["return"] is pyproj.CRS
    for name, f in vars(GridSpec).items():  # every method, including the dataclass's own
        f = getattr(f, "__func__", f)
        if callable(f):
            typing.get_type_hints(f)


def test_grid_import_still_leaves_xarray_unloaded():
    import subprocess
    import sys

    code = "import sys, changedet.grid; print('xarray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- coreg: the reflect padding shared by two numba kernels ----------------------------------

def _reflect_ref(row, h):
    return np.concatenate([row[:h][::-1], row, row[::-1][:h]])


@pytest.mark.parametrize("n, h", [(40, 5), (11, 5), (17, 8), (6, 6), (1, 1), (9, 0)])
def test_reflect_row_helper(n, h):
    import changedet.coreg as coreg

    row = np.random.default_rng(n).normal(size=n)
    line = np.full(n + 2 * h, np.nan)
    coreg._nb_reflect_row_impl(row, line, h)  # the Python function
    np.testing.assert_array_equal(line, _reflect_ref(row, h))
    nb = coreg._nb()
    if nb is not None:
        line[:] = np.nan
        coreg._nb_reflect_row(row, line, h)  # compiled
        np.testing.assert_array_equal(line, _reflect_ref(row, h))


@pytest.mark.parametrize("shape", [(64, 64), (37, 91), (100, 13), (12, 200), (255, 257)])
def test_kernels_with_shared_padding_equal_ndimage_bit_for_bit(shape):
    """Both callers of the shared helper, on random float32 frames of several scales and odd
    shapes: the gradient's four correlate1d passes and the feather's gaussian_filter. (Before
    the merge their outputs were also saved from the old code and compared byte for byte.)"""
    from scipy import ndimage

    import changedet.coreg as coreg

    nb = coreg._nb()
    if nb is None:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(sum(shape))
    for scale in (1e-3, 1.0, 1e3):
        src = (rng.normal(size=shape) * scale).astype(np.float32)
        d1, s1 = np.empty(shape, np.float32), np.empty(shape, np.float32)
        gv = np.empty((shape[0], 2 * shape[1]), np.float32)
        nb.full_gradient(src, coreg._K_SMOOTH, coreg._K_DIFF, d1, s1, gv)
        g = gv.view(np.complex64)
        want_re = coreg._along_rows(ndimage.correlate1d(src, coreg._K_DIFF, axis=1, mode="reflect"),
                                    coreg._K_SMOOTH)
        want_im = coreg._along_rows(ndimage.correlate1d(src, coreg._K_SMOOTH, axis=1, mode="reflect"),
                                    coreg._K_DIFF)
        np.testing.assert_array_equal(g.real, want_re)
        np.testing.assert_array_equal(g.imag, want_im)
        out, tmp = np.empty(shape, np.float32), np.empty(shape, np.float32)
        nb.feather(src, coreg._FEATHER_W, tmp, out)
        np.testing.assert_array_equal(out, ndimage.gaussian_filter(src, coreg._FEATHER_SIGMA))


# --- ground_area_factors: one outline per block row in cylindrical grids ---------------------

def _factors_block_by_block(grid, block_px):
    """The pre-session definition, block by block: geodesic area of each densified outline
    over its planar area (the reference the fast path must equal to float rounding)."""
    import pyproj

    from changedet.polygons import _EDGE_POINTS

    crs = pyproj.CRS.from_user_input(grid.crs)
    t = grid.transform
    to_m = crs.axis_info[0].unit_conversion_factor or 1.0
    tr = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    geod = crs.get_geod()
    h, w = grid.shape
    u = np.linspace(0.0, 1.0, _EDGE_POINTS + 1)[:-1]
    out = np.empty((-(-h // block_px), -(-w // block_px)))
    for i, r0 in enumerate(range(0, h, block_px)):
        r1 = min(r0 + block_px, h)
        for j, c0 in enumerate(range(0, w, block_px)):
            c1 = min(c0 + block_px, w)
            cols = np.concatenate([c0 + (c1 - c0) * u, np.full_like(u, c1), c1 - (c1 - c0) * u, np.full_like(u, c0)])
            rows = np.concatenate([np.full_like(u, r0), r0 + (r1 - r0) * u, np.full_like(u, r1), r1 - (r1 - r0) * u])
            lon, lat = tr.transform(t.c + t.a * cols, t.f + t.e * rows)
            ground = abs(geod.polygon_area_perimeter(lon, lat)[0])
            out[i, j] = ground / ((r1 - r0) * abs(t.e) * (c1 - c0) * abs(t.a) * to_m * to_m)
    return out


GAF_CASES = {
    "web mercator 10 m": ("EPSG:3857", 1113194.9, 6800000.0, 10.0, (64 * 7 + 5, 64 * 9 + 33), True),
    "web mercator 1 km, pole to pole wide": ("EPSG:3857", -20037508.0, 15000000.0, 1000.0, (900, 4000), True),
    "mercator in km": ("+proj=merc +lon_0=100 +k=0.9 +units=km", 100.0, 5000.0, 0.01, (500, 700), True),
    "plate carree": ("EPSG:4087", 1000000.0, 6000000.0, 10.0, (300, 300), True),
    "web mercator across the antimeridian": ("EPSG:3857", 19900000.0, -3000000.0, 30.0, (300, 9000), False),
    "polar stereographic": ("EPSG:3413", -500000.0, -1000000.0, 100.0, (300, 300), False),
    "transverse mercator k=0.5": ("+proj=tmerc +lat_0=0 +lon_0=10 +k=0.5", 100.0, 5000000.0, 10.0, (300, 500), False),
}


@pytest.mark.parametrize("case", sorted(GAF_CASES))
def test_ground_area_factors_equal_block_by_block(case, monkeypatch):
    import pyproj
    from affine import Affine

    import changedet.polygons as P

    crs, x0, y0, res, shape, cylindrical = GAF_CASES[case]
    grid = GridSpec(pyproj.CRS.from_user_input(crs), Affine(res, 0.0, x0, 0.0, -res, y0), shape)
    block = 64
    measured = []
    real = P._outline_areas
    monkeypatch.setattr(P, "_outline_areas", lambda *a: measured.append(a[-1].size) or real(*a))
    got = P.ground_area_factors(grid, block)
    want = _factors_block_by_block(grid, block)
    assert got is not None and got.shape == want.shape
    # Float rounding: the block-by-block values of one row of a cylindrical grid differ by
    # up to ~3e-12 relative among themselves.
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=0)
    n_cols = want.shape[1]
    assert measured == ([2 if shape[1] % block else 1] if cylindrical else [n_cols])


def test_ground_area_factors_none_where_map_is_ground():
    from changedet.polygons import ground_area_factors

    utm = GridSpec.from_bounds("EPSG:32631", (440000.0, 5410000.0, 460000.0, 5430000.0), 10.0)
    assert ground_area_factors(utm) is None
    # Web Mercator at 60 N: about cos^2(60) = 0.25, one value along each block row.
    merc = GridSpec.from_bounds("EPSG:3857", (1000000.0, 8300000.0, 1100000.0, 8400000.0), 10.0)
    f = ground_area_factors(merc)
    assert f.shape == (40, 40) and 0.24 < f.min() < f.max() < 0.26
    assert (f[:, :-1] == f[:, :1]).all()  # the last column is 16 px wide


def test_all_cloudy_pair_is_refused(tmp_path):
    write_geotiff(_with_class(_scene(0, False), "CLM", np.zeros(GRID.shape)), tmp_path / "b.tif", dtype="uint16")
    write_geotiff(_with_class(_scene(1, True), "CLM", np.ones(GRID.shape)), tmp_path / "a.tif", dtype="uint16")
    with pytest.raises(ChangeError, match="every pixel.*clearer dates"):
        load_pair(tmp_path / "b.tif", tmp_path / "a.tif")
    rc = main(["change", str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), "--out", str(tmp_path / "c.tif")])
    assert rc == 2


# --- review of the session-13 fixes (MISC2) ----------------------------------------------------

def _set_nodata(path, value):
    with rasterio.open(path, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as src:
        src.nodata = value


def test_clm_in_a_stack_declaring_nodata_0(tmp_path):
    """A uint16 stack declaring nodata 0 (gdal_merge -a_nodata 0): the nodata applies to every
    band, CLM included, but a clear CLM pixel (0) is clear, not no data."""
    small = np.zeros(GRID.shape)
    small[0:10, 0:20] = 1  # a small cloud on BEFORE
    cloudy = np.zeros(GRID.shape)
    cloudy[CLOUD] = 1
    write_geotiff(_with_class(_scene(0, False), "CLM", small), tmp_path / "b.tif", dtype="uint16")
    write_geotiff(_with_class(_scene(1, True, cloud=True), "CLM", cloudy), tmp_path / "a.tif", dtype="uint16")
    for name in ("b.tif", "a.tif"):
        _set_nodata(tmp_path / name, 0)
    b, a = load_pair(tmp_path / "b.tif", tmp_path / "a.tif")
    expect = (small == 1) | (cloudy == 1)
    assert (np.isnan(b.values[0]) == expect).all() and (np.isnan(a.values[0]) == expect).all()
    res = detect_change(b, a, method="cva")
    assert _block_found(np.asarray(res.mask.values)) > 0.8
    from changedet.change import load_pair_masked

    assert (load_pair_masked(tmp_path / "b.tif", tmp_path / "a.tif")[2] == expect).all()


def test_clm_file_declaring_nodata_0_in_a_band_directory(tmp_path):
    for name, img, cloudy in (("d1", _scene(0, False), False), ("d2", _scene(1, True, cloud=True), True)):
        sub = tmp_path / name
        sub.mkdir()
        da = GRID.attach(img, bands=BANDS)
        for band in BANDS:
            write_geotiff(da.sel(band=[band]), sub / f"S2_{band}.tif", dtype="uint16")
        clm = np.zeros(GRID.shape, np.uint16)
        if cloudy:
            clm[CLOUD] = 1
        write_geotiff(GRID.attach(clm[None], bands=["CLM"]), sub / "S2_CLM.tif", dtype="uint16")
        _set_nodata(sub / "S2_CLM.tif", 0)
    b, a = load_pair(tmp_path / "d1", tmp_path / "d2")
    cloud = np.zeros(GRID.shape, bool)
    cloud[CLOUD] = True
    assert (np.isnan(a.values[0]) == cloud).all() and (np.isnan(b.values[0]) == cloud).all()


def test_clm_fraction_follows_the_cloudmask_rule(tmp_path):
    """CLM >= 0.5 is cloud (cloudmask.cloud_mask's rule): a resampled or averaged CLM of 0.3
    is clear; 255 (no data) and negative values (no CLM code) are left out."""
    clm = np.zeros(GRID.shape, np.float32)
    clm[0:10] = 0.3
    clm[10:20] = 0.5
    clm[20:24] = 0.7
    clm[24:26] = 255
    clm[26:28] = -1
    img = np.concatenate([_scene(0, False).astype(np.float32), clm[None]])
    write_geotiff(GRID.attach(img, bands=BANDS + ["CLM"]), tmp_path / "b.tif")
    write_geotiff(GRID.attach(_scene(1, True), bands=BANDS), tmp_path / "a.tif", dtype="uint16")
    b, a = load_pair(tmp_path / "b.tif", tmp_path / "a.tif")
    nan = np.isnan(b.values[0])
    assert not nan[0:10].any() and not nan[28:].any()
    assert nan[10:28].all()


def test_after_cloud_is_nodata_before_it_is_resampled(tmp_path):
    """AFTER on a grid 3 m (0.3 px) off BEFORE's: bilinear resampling mixes each output pixel
    from two source columns, so a clear pixel by the cloud's edge took 30 % of the cloud."""
    from affine import Affine

    write_geotiff(_with_class(_scene(0, False), "CLM", np.zeros(GRID.shape)), tmp_path / "b.tif", dtype="uint16")
    img = _scene(1, True).astype(np.float64)
    img[(slice(None),) + CLOUD] += 40000.0
    cloudy = np.zeros(GRID.shape)
    cloudy[CLOUD] = 1
    t = GRID.transform
    shifted = GridSpec(GRID.crs, Affine(t.a, 0.0, t.c + 3.0, 0.0, t.e, t.f), GRID.shape)
    write_geotiff(shifted.attach(np.concatenate([img, cloudy[None]]).astype(np.uint16), bands=BANDS + ["CLM"]),
                  tmp_path / "a.tif", dtype="uint16")
    b, a = load_pair(tmp_path / "b.tif", tmp_path / "a.tif")
    clear_max = float(_scene(1, True).max())
    v = a.values
    assert np.isfinite(v).any() and np.nanmax(v) <= clear_max + 1
    # Only the cloud (moved by nearest neighbour) and the strip beyond AFTER's footprint are nodata.
    assert np.isnan(v[0]).sum() <= 16 * 23 + 64


def test_20m_band_cloud_is_nodata_before_it_is_upsampled(tmp_path):
    """A band directory: a 20 m band bilinear-upsampled next to the 10 m ones mixed a quarter
    of a cloud's value into the clear 10 m pixels along the SCL mask's edge."""
    coarse = GRID.scaled(20.0)
    rng = np.random.default_rng(3)
    for name, cloudy in (("d1", False), ("d2", True)):
        sub = tmp_path / name
        sub.mkdir()
        da = GRID.attach(_scene(int(cloudy), False), bands=BANDS)
        for band in BANDS:
            write_geotiff(da.sel(band=[band]), sub / f"T_{band}_10m.tif", dtype="uint16")
        b11 = 1500 + rng.normal(0, 20, coarse.shape)
        scl = np.full(coarse.shape, 4, np.uint16)
        if cloudy:
            b11[20:28, 25:36] += 40000.0
            scl[20:28, 25:36] = 9
        write_geotiff(coarse.attach(b11[None].astype(np.uint16), bands=["B11"]), sub / "T_B11_20m.tif",
                      dtype="uint16")
        write_geotiff(coarse.attach(scl[None], bands=["SCL"]), sub / "T_SCL_20m.tif", dtype="uint16")
    b, a = load_pair(tmp_path / "d1", tmp_path / "d2")
    assert "B11" in [str(x) for x in a["band"].values]
    assert np.nanmax(a.sel(band="B11").values) < 2000
    cloud = np.zeros(GRID.shape, bool)
    cloud[CLOUD] = True
    assert (np.isnan(a.values[0]) == cloud).all()
    # Early-masked pixels are still counted as unobserved, not as missing data.
    from changedet.change import load_pair_masked

    assert (load_pair_masked(tmp_path / "d1", tmp_path / "d2")[2] == cloud).all()


def test_cli_unobserved_pixels_counts_class_masks(clm_pair, tmp_path, capsys):
    args = ["change", str(clm_pair / "before.tif"), str(clm_pair / "after.tif"), "--method", "cva", "--json"]
    assert main(args + ["--out", str(tmp_path / "c.tif")]) == 0
    doc = json.loads(capsys.readouterr().out.strip())
    total = GRID.shape[0] * GRID.shape[1]
    assert doc["unobserved_pixels"] == 16 * 22
    assert doc["valid_pixels"] + doc["unobserved_pixels"] == total
    # A clear CLM: a cloud mask applied that hid nothing.
    assert main(["change", str(clm_pair / "before.tif"), str(clm_pair / "after_nomask.tif"), "--method", "cva",
                 "--json", "--out", str(tmp_path / "d.tif")]) == 0
    assert json.loads(capsys.readouterr().out.strip())["unobserved_pixels"] == 0
    # No class band and no --mask-clouds: no cloud mask, null (as before).
    write_geotiff(GRID.attach(_scene(0, False), bands=BANDS), tmp_path / "b.tif", dtype="uint16")
    assert main(["change", str(tmp_path / "b.tif"), str(clm_pair / "after_nomask.tif"), "--method", "cva",
                 "--json", "--out", str(tmp_path / "e.tif")]) == 0
    assert json.loads(capsys.readouterr().out.strip())["unobserved_pixels"] is None


def test_cli_unobserved_pixels_with_mask_clouds_keeps_class_masked(tmp_path, capsys):
    """With --mask-clouds, the s2cloudless bands are read with the CLM pixels already NaN, so
    s2cloudless did not count them: the JSON said 0 for a 352-pixel CLM cloud."""
    from changedet.cloudmask import S2CLOUDLESS_BANDS

    rng = np.random.default_rng(0)
    names = list(S2CLOUDLESS_BANDS) + ["B03"]
    for name, cloud in (("b.tif", False), ("a.tif", True)):
        img = (1500 + rng.normal(0, 50, (len(names),) + GRID.shape)).astype(np.uint16)
        clm = np.zeros(GRID.shape, np.uint16)
        if cloud:
            clm[CLOUD] = 1
            img[(slice(None),) + CLOUD] = 6000
        write_geotiff(GRID.attach(np.concatenate([img, clm[None]]), bands=names + ["CLM"]), tmp_path / name,
                      dtype="uint16")
    rc = main(["change", str(tmp_path / "b.tif"), str(tmp_path / "a.tif"), "--bands", "B02,B03,B04,B08",
               "--method", "cva", "--mask-clouds", "--out", str(tmp_path / "o.tif"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip())
    assert doc["unobserved_pixels"] >= 16 * 22
    assert doc["valid_pixels"] + doc["unobserved_pixels"] == GRID.shape[0] * GRID.shape[1]


def test_unnamed_count_mismatch_names_the_class_band(tmp_path):
    c = np.zeros(GRID.shape)
    c[CLOUD] = 1
    write_geotiff(_with_class(_scene(0, False), "CLM", c), tmp_path / "b.tif", dtype="uint16")
    unnamed = np.concatenate([_scene(1, True), c[None].astype(np.uint16)])
    write_geotiff(GRID.attach(unnamed, bands=[""] * 5), tmp_path / "a.tif", dtype="uint16")
    with pytest.raises(ChangeError, match=r"cloud-class band CLM taken out.*counts differ.*name its bands"):
        load_pair(tmp_path / "b.tif", tmp_path / "a.tif")


def test_check_output_path_checks_the_link_targets_folder(tmp_path, monkeypatch):
    """The write replaces the target in its own folder: that folder must be writable, not the
    link's (a group-writable file in a folder the user cannot write)."""
    import os

    from changedet.io import OutputPathError, check_output_path

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "c.tif").write_bytes(b"old")
    link = tmp_path / "c.tif"
    link.symlink_to(shared / "c.tif")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(shared)
                        else real_access(p, mode, **kw))
    with pytest.raises(OutputPathError, match=f"--out {link}: the folder {shared} is not writable"):
        check_output_path(link, option="--out")
    assert check_output_path(tmp_path / "plain.tif") == tmp_path / "plain.tif"


def test_write_through_a_link_keeps_the_target_mode(tmp_path):
    import os
    import stat

    from changedet.io import atomic_write

    target = tmp_path / "data" / "x.tif"
    target.parent.mkdir()
    target.write_text("old")
    os.chmod(target, 0o664)
    link = tmp_path / "x.tif"
    link.symlink_to(target)
    atomic_write(link, lambda t: t.write_text("new"))
    assert target.read_text() == "new" and link.is_symlink()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o664
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_dangling_out_link_is_refused(clm_pair, tmp_path, capsys):
    from changedet.io import OutputPathError, atomic_write, check_output_path

    link = tmp_path / "latest.tif"
    link.symlink_to(tmp_path / "mnt" / "usb" / "out.tif")  # a disk that is not mounted
    with pytest.raises(OutputPathError, match="--out .*latest.tif: not writing through dangling symbolic link"):
        check_output_path(link, option="--out")
    with pytest.raises(OutputPathError, match="dangling symbolic link"):
        atomic_write(link, lambda t: t.write_text("x"), option="--out")
    assert not (tmp_path / "mnt").exists() and link.is_symlink()
    rc = main(["change", str(clm_pair / "before.tif"), str(clm_pair / "after.tif"), "--out", str(link)])
    assert rc == 2 and "dangling" in capsys.readouterr().err
    assert not (tmp_path / "mnt").exists()


def test_20m_band_beside_a_10m_clm_is_masked_where_partly_cloudy(tmp_path):
    """A 10 m CLM file and a 20 m band: a 20 m pixel half under the cloud is hidden on the
    20 m grid ("max"), where nearest neighbour kept one child and let the cloud in."""
    coarse = GRID.scaled(20.0)
    rows, cols = slice(41, 55), slice(51, 71)  # odd edges: every edge 20 m pixel half cloudy
    for name, cloudy in (("d1", False), ("d2", True)):
        sub = tmp_path / name
        sub.mkdir()
        da = GRID.attach(_scene(int(cloudy), False), bands=BANDS)
        for band in BANDS:
            write_geotiff(da.sel(band=[band]), sub / f"T_{band}_10m.tif", dtype="uint16")
        b11 = np.full(coarse.shape, 1500.0)
        clm = np.zeros(GRID.shape, np.uint16)
        if cloudy:
            b11[20:28, 25:36] += 40000.0  # every 20 m pixel the cloud touches
            clm[rows, cols] = 1
        write_geotiff(coarse.attach(b11[None].astype(np.uint16), bands=["B11"]), sub / "T_B11_20m.tif",
                      dtype="uint16")
        write_geotiff(GRID.attach(clm[None], bands=["CLM"]), sub / "T_CLM_10m.tif", dtype="uint16")
    b, a = load_pair(tmp_path / "d1", tmp_path / "d2")
    assert np.nanmax(a.sel(band="B11").values) < 2000
    cloud = np.zeros(GRID.shape, bool)
    cloud[rows, cols] = True
    # On the 10 m grid the mask is the CLM's own: only the cloud is left out.
    assert (np.isnan(a.sel(band="B02").values) == cloud).all()


def test_scl_outside_its_classes_is_left_out(tmp_path):
    """SCL read as stored: a fill value that is no SCL class (255, 65535) is not clear ground."""
    scl = np.full(GRID.shape, 4)
    scl[0:8] = 255
    scl[8:12] = 65535
    write_geotiff(_with_class(_scene(0, False), "SCL", scl), tmp_path / "b.tif", dtype="uint16")
    write_geotiff(GRID.attach(_scene(1, True), bands=BANDS), tmp_path / "a.tif", dtype="uint16")
    b, a = load_pair(tmp_path / "b.tif", tmp_path / "a.tif")
    nan = np.isnan(b.values[0])
    assert nan[:12].all() and not nan[12:].any()


def test_read_raster_as_stored_skips_the_file_nodata(tmp_path):
    from changedet.io import read_raster

    clm = np.zeros(GRID.shape)
    clm[CLOUD] = 1
    img = _scene(0, False)
    img[:, :2] = 0  # fill: nodata in the spectral bands
    write_geotiff(_with_class(img, "CLM", clm), tmp_path / "s.tif", dtype="uint16")
    _set_nodata(tmp_path / "s.tif", 0)
    plain = read_raster(tmp_path / "s.tif")
    assert np.isnan(plain.sel(band="CLM").values).sum() == GRID.shape[0] * GRID.shape[1] - 16 * 22
    da = read_raster(tmp_path / "s.tif", as_stored=["clm"])
    assert (da.sel(band="CLM").values == clm).all()
    assert np.isnan(da.sel(band="B02").values[:2]).all() and np.isfinite(da.sel(band="B02").values[2:]).all()
