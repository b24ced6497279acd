"""Files in EPSG:4326 / EPSG:3857 warp onto UTM grids exactly (REG3, s19).

GDAL's approximate transformer (0.125 px) and its per-chunk kernel scale made a pixel's
value depend on the target grid's extent: the same 10 m file in EPSG:4326 read onto a
site grid and onto the 768 px registration window around it (one lattice) landed
0.09 px apart at 40 N, and the window was 0.06-0.10 px off the true positions. The
source bands here are linear ramps of the source pixel position, which bilinear and
cell-average resampling reproduce exactly: the warped value at a target pixel *is* the
source position GDAL sampled there, compared with the exact (PROJ) position of that
pixel's centre.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from changedet.errors import GridError
from changedet.grid import GridSpec, utm_crs_for
from changedet.io import read_raster, reproject_to
from changedet.sources.base import SceneRecord
from changedet.sources.local import LocalSource, clear_decoded_cache

LON, LAT = 15.0, 40.0
#: Largest disagreement (source px) allowed: the issue's budget is 0.05 px for the whole
#: registration; the approximate transformer alone used 0.06-0.10 px of it here.
TOL_PX = 0.005


def _write_ramp(path: Path, crs: str, *, res_m: float, n: int, lon: float = LON, lat: float = LAT) -> Affine:
    """An n x n GeoTIFF in ``crs`` centred on (lon, lat) with ground pixels ~res_m: band 1 = column, band 2 = row."""
    if crs == "EPSG:4326":
        dx, dy, cx, cy = res_m / (111320.0 * np.cos(np.radians(lat))), res_m / 110574.0, lon, lat
    else:
        cx, cy = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
        dx = dy = res_m / np.cos(np.radians(lat))
    tr = Affine(dx, 0, cx - n / 2 * dx, 0, -dy, cy + n / 2 * dy)
    j = np.arange(n, dtype="float64") - n / 2 + 0.5  # centred: float32 keeps ~1e-4 px
    data = np.stack([np.broadcast_to(j[None, :], (n, n)), np.broadcast_to(j[:, None], (n, n))]).astype("float32")
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=2, dtype="float32", crs=crs,
                       transform=tr) as dst:
        dst.write(data)
        dst.update_tags(TIFFTAG_DATETIME="2024:05:01 10:30:00")
    return tr


def _truth(tr: Affine, n: int, crs: str, grid: GridSpec) -> np.ndarray:
    """(col, row) ramp values the exact transform gives at every target pixel centre."""
    gx, gy = np.meshgrid(grid.x, grid.y)
    sx, sy = pyproj.Transformer.from_crs(grid.crs, crs, always_xy=True).transform(gx, gy)
    col = (sx - tr.c) / tr.a - 0.5 - (n / 2 - 0.5)
    row = (sy - tr.f) / tr.e - 0.5 - (n / 2 - 0.5)
    return np.stack([col, row])


def _grids(res: float, site_px: int = 200, window_px: int = 768, lon: float = LON, lat: float = LAT):
    """A site grid and a larger grid of the same lattice around it (as the registration window)."""
    utm = utm_crs_for(lon, lat)
    e, n = pyproj.Transformer.from_crs("EPSG:4326", utm, always_xy=True).transform(lon, lat)
    h = site_px / 2 * res
    site = GridSpec.from_bounds(utm, (e - h, n - h, e + h, n + h), res)
    off = -((window_px - site.shape[0]) // 2)
    window = GridSpec(utm, site.transform @ Affine.translation(off, off), (window_px, window_px))
    return site, window, -off


def _common(site_vals: np.ndarray, window_vals: np.ndarray, site: GridSpec, off: int) -> np.ndarray:
    """|site - window| on the site's pixels (source px, hypot of the two ramps)."""
    w = window_vals[:, off:off + site.shape[0], off:off + site.shape[1]]
    return np.hypot(site_vals[0] - w[0], site_vals[1] - w[1])


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857"])
def test_same_file_on_two_grids_of_one_lattice_agrees(tmp_path, crs):
    tr = _write_ramp(tmp_path / "f.tif", crs, res_m=10.0, n=1000)
    da = read_raster(tmp_path / "f.tif")
    site, window, off = _grids(10.0)
    a = reproject_to(da, site).values
    b = reproject_to(da, window).values
    d = _common(a, b, site, off)
    assert np.isfinite(d).all()
    assert float(d.max()) < TOL_PX  # the old code: 0.09 px
    # and both are where the exact transform puts them
    for vals, grid in ((a, site), (b, window)):
        err = np.hypot(*(vals - _truth(tr, 1000, crs, grid)))
        assert float(np.nanmax(err)) < TOL_PX  # the old code: 0.097 px on the window


def test_small_grid_gets_the_same_kernel_as_a_large_one(tmp_path):
    """A grid under GDAL's 256 px chunk (a 64 x 400 strip) is warped as exactly as a large one."""
    tr = _write_ramp(tmp_path / "f.tif", "EPSG:4326", res_m=10.0, n=1000, lat=60.0, lon=17.8)
    utm = utm_crs_for(17.8, 60.0)
    e, n = pyproj.Transformer.from_crs("EPSG:4326", utm, always_xy=True).transform(17.8, 60.0)
    grid = GridSpec.from_bounds(utm, (e - 320, n - 2000, e + 320, n + 2000), 10.0)
    out = reproject_to(read_raster(tmp_path / "f.tif"), grid).values
    err = np.hypot(*(out - _truth(tr, 1000, "EPSG:4326", grid)))
    assert float(np.nanmax(err)) < TOL_PX


def test_average_resampling_of_a_finer_file_does_not_depend_on_the_grid_extent(tmp_path):
    """0.6 m in EPSG:4326 averaged onto 2 m UTM grids (LocalSource's path for fine files).

    GDAL's cell average counts whole source pixels, so it sits up to ~0.013 target px off
    a ramp's centre value wherever the grid lies; what must not happen is that the error
    changes with the grid's extent (the old code: mean 0.007 px on 200 px, 0.013 on 500 px).
    """
    tr = _write_ramp(tmp_path / "f.tif", "EPSG:4326", res_m=0.6, n=1500, lat=60.0, lon=17.8)
    site, window, off = _grids(2.0, site_px=100, window_px=300, lon=17.8, lat=60.0)
    da = read_raster(tmp_path / "f.tif")
    a = reproject_to(da, site, resampling="average").values
    b = reproject_to(da, window, resampling="average").values
    assert float(_common(a, b, site, off).max()) * 0.6 / 2.0 < 0.001  # target px (a source px is 0.3 of one)
    for vals, grid in ((a, site), (b, window)):
        err = np.hypot(*(vals - _truth(tr, 1500, "EPSG:4326", grid))) * 0.6 / 2.0
        assert float(np.nanmax(err)) < 0.02


def test_local_source_reads_site_and_window_alike(tmp_path):
    """The daily run's two reads of a 4326 file (site grid, registration window) agree."""
    clear_decoded_cache()
    _write_ramp(tmp_path / "s_20240501.tif", "EPSG:4326", res_m=10.0, n=1000)
    src = LocalSource(path=str(tmp_path), bands=["C", "R"], scale=1.0)
    path = tmp_path / "s_20240501.tif"
    scene = SceneRecord(id="x", source="local", aoi_id="a", sensor="vhr",
                        time=datetime(2024, 5, 1, tzinfo=timezone.utc), platform="local", cloud_cover=0.0,
                        footprint=None, resolution_m=10.0, properties={"path": str(path)})
    site, window, off = _grids(10.0)
    a = src.load(scene, site).values
    b = src.load(scene, window).values
    assert float(_common(a, b, site, off).max()) < TOL_PX
    clear_decoded_cache()


def test_same_crs_warp_is_unchanged():
    """A file already in the grid's UTM CRS is resampled through rioxarray's reproject_match as before."""
    from rasterio.enums import Resampling

    utm = utm_crs_for(LON, LAT)
    rng = np.random.default_rng(3)
    data = rng.random((2, 120, 130)).astype("float32")
    data[0, 5:9, 7:12] = np.nan
    src_grid = GridSpec(utm, Affine(0.6, 0, 500000.3, 0, -0.6, 4400000.7), (120, 130))
    grid = GridSpec.from_bounds(utm, (500010, 4399940, 500060, 4399990), 0.5)
    da = src_grid.attach(data, bands=["a", "b"])
    template = grid.attach(np.zeros(grid.shape, dtype="float32"))
    for rs in ("bilinear", "average", "nearest"):
        out = reproject_to(da, grid, resampling=rs).values
        want = da.rio.write_nodata(np.nan, encoded=False).rio.reproject_match(
            template, resampling=getattr(Resampling, rs)).values
        assert np.array_equal(out, want, equal_nan=True), rs


def test_cross_crs_output_keeps_bands_attrs_and_grid(tmp_path):
    _write_ramp(tmp_path / "f.tif", "EPSG:4326", res_m=10.0, n=300)
    da = read_raster(tmp_path / "f.tif", bands=["C", "R"])
    site, _, _ = _grids(10.0, site_px=100)
    out = reproject_to(da, site)
    assert out.dims == ("band", "y", "x") and list(out["band"].values) == ["C", "R"]
    assert GridSpec.of(out).same_as(site) and out.dtype == np.float32 and np.isnan(out.attrs["_FillValue"])
    assert np.allclose(out.x.values, site.x) and np.allclose(out.y.values, site.y)
    # an integer input (a class band) comes out float32 with NaN outside, as the same-CRS path gives it
    cls = (da.sel(band=["C"]) + 1000).astype("int16")
    ints = reproject_to(cls, site, resampling="nearest")
    assert ints.dtype == np.float32 and np.array_equal(
        ints.values, reproject_to(cls.astype("float32"), site, resampling="nearest").values)
    one = reproject_to(da.sel(band="C"), site)
    assert one.dims == ("y", "x") and np.array_equal(one.values, out.sel(band="C").values, equal_nan=True)


def test_cross_crs_grid_off_the_file_is_a_clear_error(tmp_path):
    _write_ramp(tmp_path / "f.tif", "EPSG:4326", res_m=10.0, n=300)
    da = read_raster(tmp_path / "f.tif")
    site, _, _ = _grids(10.0, lat=LAT + 1.0)  # 110 km north of the file
    with pytest.raises(GridError, match="does not overlap"):
        reproject_to(da, site)


def _geographic(lon0: float, lat0: float, n: int = 600, step: float = 1e-4):
    """A smooth pattern on an EPSG:4326 lattice whose first column is centred at ``lon0``."""
    from changedet.grid import with_crs

    import xarray as xr

    lons = lon0 + step * np.arange(n)
    lats = lat0 - step * np.arange(n)
    vals = np.sin(lons[None, :] * 900.0) + np.cos(lats[:, None] * 700.0)
    da = xr.DataArray(vals[None].astype("float32"), dims=("band", "y", "x"),
                      coords={"band": ["b"], "y": lats, "x": lons})
    return with_crs(da, pyproj.CRS.from_epsg(4326))


@pytest.mark.parametrize("lon0, site_lon, lat", [
    (179.97, 179.998, -17.0),    # a tile gdalwarp wrote across the antimeridian (179.97..180.03)
    (179.97, -179.995, -17.0),   # the same tile, a site east of 180 (UTM zone 1)
    (259.97, -99.99, 40.0),      # a product in the 0..360 longitude convention
])
def test_geographic_file_past_180_degrees_is_read_whole(lon0, site_lon, lat):
    # Review REG 1: the exact warp's crop window (bounds in -180..180) and its WarpedVRT lost
    # every pixel past 180 (NaN columns, or 'does not overlap' for a site east of 180).
    src = _geographic(lon0, lat + 0.03)
    crs = utm_crs_for(site_lon, lat)
    x, y = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform(site_lon, lat + 0.003)
    grid = GridSpec.from_bounds(crs, (x - 1000.0, y - 1000.0, x + 1000.0, y + 1000.0), 10.0)
    out = reproject_to(src, grid)
    assert not np.isnan(out.values).any()
