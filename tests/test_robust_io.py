"""open_raster reports a corrupt file as such, and nothing else as a corrupt file."""

from __future__ import annotations

import numpy as np
import pytest

from changedet.coreg import coregister_files
from changedet.errors import RasterError
from changedet.io import open_raster

NAIP = "naip_timeseries_nd/m_4709963_se_14_1_20140720.tif"


def _half(tmp_path, test_data):
    """The real NAIP tile cut in half: its header opens, reading its pixels fails."""
    raw = test_data(NAIP).read_bytes()
    path = tmp_path / "half.tif"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def test_caller_error_in_block_passes_through(test_data):
    path = test_data(NAIP)
    with pytest.raises(KeyError, match="not_a_key"):
        with open_raster(path) as src:
            {}["not_a_key"]  # a bug in the caller's code, not a corrupt file
    with pytest.raises(ZeroDivisionError):
        with open_raster(path) as src:
            src.count / 0


def test_caller_oserror_in_block_is_not_a_corrupt_raster(tmp_path, test_data):
    # The caller's own file handling raises OSError too; only the driver's is the raster's fault.
    missing = tmp_path / "no_such_dir" / "out.txt"
    with pytest.raises(FileNotFoundError):
        with open_raster(test_data(NAIP)):
            missing.write_text("x")


def test_read_error_in_block_is_a_corrupt_raster(tmp_path, test_data):
    path = _half(tmp_path, test_data)
    with pytest.raises(RasterError) as err:
        with open_raster(path) as src:
            src.read()
    msg = str(err.value)
    assert str(path) in msg and "cannot be read as a raster" in msg and "complete GeoTIFF" in msg


def test_good_file_reads_in_block(test_data):
    with open_raster(test_data(NAIP)) as src:
        data = src.read(1, window=((0, 8), (0, 8)))
    assert data.shape == (8, 8) and np.isfinite(data).all()


def test_coregister_files_reports_corrupt_moving_file(tmp_path, test_data):
    # The caller of open_raster that reads windows inside the block keeps its clear error.
    half = _half(tmp_path, test_data)
    with pytest.raises(RasterError) as err:
        coregister_files(test_data(NAIP), half, band="b4", window_px=256)
    assert str(half) in str(err.value) and "cannot be read as a raster" in str(err.value)


def test_coregister_files_names_the_corrupt_reference_not_the_moving_file(tmp_path, test_data):
    # Both files are open at once: a read error of the outer (reference) file must not be
    # blamed on the inner (moving) one.
    half = _half(tmp_path, test_data)
    good = test_data(NAIP)
    with pytest.raises(RasterError) as err:
        coregister_files(half, good, band="b4", window_px=256)
    msg = str(err.value)
    assert msg.startswith(str(half)) and str(good) not in msg and "cannot be read as a raster" in msg
