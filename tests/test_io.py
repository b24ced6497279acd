"""Tests of changedet.io: reading real GeoTIFF/JPEG2000 files, GeoTIFF/COG round trips,
errors for unusable files, and reprojection onto a UTM grid."""

from __future__ import annotations

import warnings

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from changedet.errors import GridError, RasterError
from changedet.grid import GridSpec, crs_of
from changedet.io import read_raster, reproject_to, write_geotiff

NAIP = "naip_timeseries_nd/m_4709963_se_14_1_20140720.tif"  # the one date with nodata (0) pixels
S2_JP2 = "arosics_s2_pair/ref_S2A_20160608T153121_T33UUU_sub.jp2"
UTM52 = "EPSG:32652"


# -- reading real files ----------------------------------------------------------------
def test_read_naip_geotiff(test_data):
    path = test_data(NAIP)
    da = read_raster(path)
    assert da.dims == ("band", "y", "x")
    assert da.sizes["band"] == 4
    assert list(da["band"].values) == ["b1", "b2", "b3", "b4"]  # no descriptions in the file
    assert da.dtype == np.float32
    assert crs_of(da) == pyproj.CRS.from_epsg(26914)  # NAD83 / UTM 14N
    with rasterio.open(path) as src:
        raw = src.read()
        transform, nodata = src.transform, src.nodata
    assert nodata == 0
    assert da.shape == raw.shape
    assert GridSpec.of(da).same_as(GridSpec(pyproj.CRS.from_epsg(26914), transform, raw.shape[1:]))
    # nodata (0) becomes NaN, everything else is the raw value
    values = da.values
    np.testing.assert_array_equal(np.isnan(values), raw == 0)
    assert int(np.isnan(values).sum()) > 0
    np.testing.assert_array_equal(values[raw != 0], raw[raw != 0].astype("float32"))
    assert not {"transform", "res", "scale_factor", "add_offset", "_FillValue"} & set(da.attrs)


def test_read_band_names_override_and_wrong_count(test_data):
    path = test_data(NAIP)
    da = read_raster(path, bands=["R", "G", "B", "NIR"])
    assert list(da["band"].values) == ["R", "G", "B", "NIR"]
    with pytest.raises(RasterError, match="4 bands but 3 band names") as err:
        read_raster(path, bands=["R", "G", "B"])
    assert str(path) in str(err.value)


def test_read_sentinel2_jpeg2000(test_data):
    path = test_data(S2_JP2)
    da = read_raster(path)
    assert da.sizes["band"] == 1
    assert da.dtype == np.float32
    assert crs_of(da) == pyproj.CRS.from_epsg(32633)
    g = GridSpec.of(da)
    assert g.shape == (3200, 2400)
    assert g.transform == Affine(10.0, 0.0, 330000.0, 0.0, -10.0, 5862000.0)
    # the file declares no nodata value, so nothing is masked (0 stays 0)
    assert not bool(da.isnull().any())
    with rasterio.open(path) as src:
        window = src.read(1, window=((1000, 1010), (500, 520)))
    np.testing.assert_array_equal(da.values[0, 1000:1010, 500:520], window.astype("float32"))


# -- writing ---------------------------------------------------------------------------
def _grid(res=10.0, w=64, h=48):
    return GridSpec.from_bounds(UTM52, (300000, 4100000, 300000 + w * res, 4100000 + h * res), res)


def test_write_read_round_trip_keeps_values_crs_grid_and_band_names(tmp_path):
    g = _grid()
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (3,) + g.shape).astype("float32")
    data[0, 0, 0] = np.nan
    data[2, 10:20, 30:40] = np.nan
    da = g.attach(data, bands=["B02", "B03", "B04"])
    path = write_geotiff(da, tmp_path / "out" / "scene.tif")
    assert path == tmp_path / "out" / "scene.tif"
    assert sorted(p.name for p in path.parent.iterdir()) == ["scene.tif"]  # no temporary left behind

    back = read_raster(path)
    assert list(back["band"].values) == ["B02", "B03", "B04"]
    assert crs_of(back) == pyproj.CRS.from_epsg(32652)
    assert GridSpec.of(back) == g
    np.testing.assert_array_equal(back.values, data)  # NaN positions included


def test_written_file_is_cog(tmp_path):
    g = _grid(res=1.0, w=1024, h=1024)
    path = write_geotiff(g.attach(np.ones(g.shape, dtype="float32"), name="ndvi"), tmp_path / "c.tif")
    with rasterio.open(path) as src:
        assert src.driver == "GTiff"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        prof = src.profile
        assert prof["tiled"] is True
        assert (prof["blockxsize"], prof["blockysize"]) == (512, 512)
        assert src.overviews(1)  # a 1024 px COG gets internal overviews
        assert np.isnan(src.nodata)
        assert src.descriptions == ("ndvi",)  # a 2-D array is written as one band named after it


def test_write_integer_dtype_and_overwrite(tmp_path):
    g = _grid()
    path = tmp_path / "q.tif"
    write_geotiff(g.attach(np.zeros((1,) + g.shape), bands=["x"]), path)
    data = np.arange(np.prod(g.shape), dtype="uint16").reshape(g.shape)[None]
    write_geotiff(g.attach(data, bands=["count"]), path, dtype="uint16")
    with rasterio.open(path) as src:
        assert src.dtypes == ("uint16",)
        assert src.nodata is None
    back = read_raster(path)
    np.testing.assert_array_equal(back.values, data.astype("float32"))
    assert list(back["band"].values) == ["count"]


def test_write_plain_tiled_geotiff(tmp_path):
    g = _grid()
    path = write_geotiff(g.attach(np.ones((1,) + g.shape), bands=["a"]), tmp_path / "plain.tif", cog=False)
    with rasterio.open(path) as src:
        assert src.profile["tiled"] is True
    assert GridSpec.of(read_raster(path)) == g


# -- read errors -----------------------------------------------------------------------
def _says_what_to_do(msg: str) -> bool:
    return any(w in msg for w in ("check", "georeference", "first"))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(RasterError) as err:
        read_raster(path)
    assert str(path) in str(err.value) and "no such file" in str(err.value)


def test_truncated_real_geotiff(tmp_path, test_data):
    raw = test_data(NAIP).read_bytes()
    path = tmp_path / "half.tif"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RasterError) as err:
        read_raster(path)
    msg = str(err.value)
    assert str(path) in msg and "complete GeoTIFF" in msg and _says_what_to_do(msg)


@pytest.mark.parametrize("content", [b"\x00garbage" * 500, b"II*\x00\x08\x00\x00\x00" + b"\xff" * 100])
def test_garbage_file(tmp_path, content):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(RasterError) as err:
        read_raster(path)
    assert str(path) in str(err.value) and _says_what_to_do(str(err.value))


def test_tiff_without_crs(tmp_path):
    path = tmp_path / "nocrs.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32") as dst:
            dst.write(np.ones((1, 8, 8), dtype="float32"))
        with pytest.raises(RasterError) as err:
            read_raster(path)
    msg = str(err.value)
    assert str(path) in msg and "no CRS" in msg and "gdal_edit" in msg


# -- reprojection ----------------------------------------------------------------------
def _lonlat_raster(lon0, lat1, dlon, dlat, cols, rows):
    """EPSG:4326 raster whose value is 1000 * (lon - lon0): a known east-west gradient."""
    src = GridSpec(pyproj.CRS.from_epsg(4326), Affine(dlon, 0, lon0, 0, -dlat, lat1), (rows, cols))
    lon = src.x
    values = np.broadcast_to(1000.0 * (lon - lon0), src.shape).astype("float32")
    return src.attach(values[None].copy(), bands=["grad"])


def test_reproject_from_geographic_lands_in_right_place():
    # target: 1 km x 1 km at 10 m in UTM 52N around (130.2 E, 42.2 N)
    to_utm = pyproj.Transformer.from_crs(4326, 32652, always_xy=True)
    cx, cy = to_utm.transform(130.2, 42.2)
    target = GridSpec.from_bounds(UTM52, (cx - 500, cy - 500, cx + 500, cy + 500), 10.0)
    # source covers the target fully, 0.0005 deg (~40 m) pixels
    src = _lonlat_raster(130.18, 42.22, 0.0005, 0.0005, 80, 80)
    out = reproject_to(src, target)
    assert GridSpec.of(out) == target
    assert crs_of(out) == pyproj.CRS.from_epsg(32652)
    assert list(out["band"].values) == ["grad"]
    assert not bool(out.isnull().any())
    # expected value at every target pixel centre
    xx, yy = np.meshgrid(target.x, target.y)
    lon, _ = to_utm.transform(xx, yy, direction="INVERSE")
    expected = 1000.0 * (lon - 130.18)
    # bilinear on a linear ramp is exact up to GDAL's approximate transformer (<= 1/8 source pixel)
    np.testing.assert_allclose(out.values[0], expected, atol=0.5 * 0.25)


def test_reproject_partial_overlap_is_nan_outside_footprint():
    to_utm = pyproj.Transformer.from_crs(4326, 32652, always_xy=True)
    cx, cy = to_utm.transform(130.2, 42.2)
    target = GridSpec.from_bounds(UTM52, (cx - 500, cy - 500, cx + 500, cy + 500), 10.0)
    # source ends at lon 130.2: the eastern half of the target is outside it
    src = _lonlat_raster(130.18, 42.22, 0.0005, 0.0005, 40, 80)
    src_east = 130.18 + 40 * 0.0005
    out = reproject_to(src, target).values[0]
    xx, yy = np.meshgrid(target.x, target.y)
    lon, _ = to_utm.transform(xx, yy, direction="INVERSE")
    margin = 0.0005  # one source pixel either side of the edge may go either way
    assert not np.isnan(out[lon < src_east - margin]).any()
    assert np.isnan(out[lon > src_east + margin]).all()
    assert 0.3 < np.isnan(out).mean() < 0.7


def test_reproject_from_another_utm_zone():
    # a site at 126.5 E lies in zone 52 but may come as zone-51 imagery
    to51 = pyproj.Transformer.from_crs(32652, 32651, always_xy=True)
    to52 = pyproj.Transformer.from_crs(4326, 32652, always_xy=True)
    cx, cy = to52.transform(126.5, 37.5)
    target = GridSpec.from_bounds(UTM52, (cx - 400, cy - 400, cx + 400, cy + 400), 10.0)
    sx, sy = to51.transform(cx, cy)
    src_grid = GridSpec.from_bounds("EPSG:32651", (sx - 1000, sy - 1000, sx + 1000, sy + 1000), 20.0)
    e0 = src_grid.bounds[0]
    # value = easting in zone-51 source pixels from the west edge (centres at i + 0.5)
    ramp = np.broadcast_to((src_grid.x - e0) / 20.0, src_grid.shape).astype("float32")
    out = reproject_to(src_grid.attach(ramp), target)
    assert GridSpec.of(out) == target
    xx, yy = np.meshgrid(target.x, target.y)
    e51, _ = to51.transform(xx, yy)
    np.testing.assert_allclose(out.values, (e51 - e0) / 20.0, atol=0.05)


def test_reproject_constant_same_crs_subgrid():
    big = _grid(res=10.0, w=64, h=48)
    fine = GridSpec.from_bounds(UTM52, (300100, 4100100, 300300, 4100300), 5.0)
    out = reproject_to(big.attach(np.full(big.shape, 0.25, dtype="float32")), fine)
    assert out.shape == fine.shape
    np.testing.assert_allclose(out.values, 0.25)


def test_reproject_non_overlapping_raises():
    src = _grid()
    far = GridSpec.from_bounds(UTM52, (500000, 4500000, 500640, 4500480), 10.0)
    with pytest.raises(GridError, match="does not overlap"):
        reproject_to(src.attach(np.ones(src.shape, dtype="float32")), far)


def test_reproject_without_crs_raises():
    src = _grid()
    da = src.attach(np.ones(src.shape, dtype="float32")).drop_vars("spatial_ref")
    with pytest.raises(GridError, match="no CRS"):
        reproject_to(da, src)


def test_reproject_integer_input_nan_outside_and_non_overlap():
    src = _grid()
    da = src.attach(np.full(src.shape, 7, dtype="uint16"))
    half = GridSpec.from_bounds(UTM52, (300320, 4100000, 300960, 4100480), 10.0)
    out = reproject_to(da, half)
    assert np.isnan(out.values[:, 40:]).all() and (out.values[:, :30] == 7).all()
    far = GridSpec.from_bounds(UTM52, (500000, 4500000, 500640, 4500480), 10.0)
    with pytest.raises(GridError):
        reproject_to(da, far)


@pytest.mark.parametrize("kind", ["nodata", "mask"])
def test_read_raster_masks_like_rioxarray(tmp_path, kind):
    import rasterio
    import rioxarray
    from rasterio.transform import from_origin

    from changedet.io import read_raster

    rng = np.random.default_rng(3)
    data = rng.integers(1, 5000, (2, 20, 30)).astype("uint16")
    data[:, 2:5, 3:9] = 0
    path = tmp_path / f"{kind}.tif"
    profile = dict(driver="GTiff", width=30, height=20, count=2, dtype="uint16", crs="EPSG:32652",
                   transform=from_origin(500000.0, 4200000.0, 10.0, 10.0))
    if kind == "nodata":
        profile["nodata"] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if kind == "mask":  # an internal mask band instead of a nodata value
            dst.write_mask(np.where(data[0] == 0, 0, 255).astype("uint8"))
    got = read_raster(path)
    want = rioxarray.open_rasterio(path, masked=True)
    np.testing.assert_array_equal(got.values, want.values.astype("float32"))
    assert np.isnan(got.values[:, 2:5, 3:9]).all() and not np.isnan(got.values[:, 10:, 10:]).any()
    np.testing.assert_allclose(got.x.values, want.x.values)
    np.testing.assert_allclose(got.y.values, want.y.values)
    assert got.rio.crs == want.rio.crs


def test_class_band_names_are_read_in_upper_case(tmp_path):
    """A GDAL export may describe the classification band as ``scl``: it is still the
    SCL band the cloud mask uses, not a data band averaged into the others."""
    import rasterio
    from affine import Affine

    from changedet.cloudmask import cloud_mask

    data = np.stack([np.full((8, 8), 0.2, "float32"), np.full((8, 8), 0.3, "float32"),
                     np.where(np.arange(64).reshape(8, 8) < 16, 9, 4).astype("float32")])
    path = tmp_path / "scl.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="float32",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4200000)) as dst:
        dst.write(data)
        for i, d in enumerate(["B04", "B08", " scl"]):
            dst.set_band_description(i + 1, d)
    da = read_raster(path)
    assert list(da["band"].values) == ["B04", "B08", "SCL"]
    mask, method = cloud_mask(da)
    assert method == "scl" and int(np.nansum(mask.values)) == 16
