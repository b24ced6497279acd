"""One rule names the bands of a file, whichever reader opens it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from changedet.errors import RasterError
from changedet.io import band_names, open_raster, read_raster


def _file(tmp_path, descriptions):
    path = tmp_path / "bands.tif"
    n = len(descriptions)
    with rasterio.open(path, "w", driver="GTiff", width=16, height=12, count=n, dtype="float32",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000)) as dst:
        dst.write(np.arange(n * 12 * 16, dtype="float32").reshape(n, 12, 16))
        for i, d in enumerate(descriptions):
            if d:
                dst.set_band_description(i + 1, d)
    return path


def test_band_names_rule():
    assert band_names(["B04", None, "", "nir"]) == ["B04", "b2", "b3", "nir"]
    assert band_names((None, None)) == ["b1", "b2"]
    assert band_names([]) == []


def test_readers_agree_on_band_names(tmp_path):
    from changedet.coreg import _raster_info

    path = _file(tmp_path, ["B8A", None, "red"])
    with open_raster(path) as src:
        rule = band_names(src.descriptions)
        coreg_names = list(_raster_info(src, path).names)
    assert rule == ["B8A", "b2", "red"]
    assert [str(b) for b in read_raster(path)["band"].values] == rule
    assert coreg_names == rule


def test_given_band_names_win_over_descriptions(tmp_path):
    path = _file(tmp_path, ["B8A", None, "red"])
    assert [str(b) for b in read_raster(path, bands=["x", "y", "z"])["band"].values] == ["x", "y", "z"]
    with pytest.raises(RasterError, match="3 bands but 2 band names"):
        read_raster(path, bands=["x", "y"])
