"""One decode per local file per day (REG3, s19).

The daily run loads a scene on the site grid and then, for a small site, on the
registration window around it (same lattice): LocalSource decoded the whole file twice.
The decoded file is now kept, bounded, for the second load; nothing of the pixels changes.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

import changedet.io as cio
import changedet.sources.local as local
from changedet.grid import GridSpec, utm_crs_for
from changedet.sources.base import SceneRecord
from changedet.sources.local import LocalSource, clear_decoded_cache

UTM = utm_crs_for(15.0, 40.0)
ORIGIN = (500000.0, 4400000.0)


def _write(path: Path, seed: int, *, crs=UTM, n: int = 300) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 10000, (4, n, n)).astype("uint16")
    data[:, 145:155, 145:155] = 0  # nodata, inside every site grid below
    if str(crs) == "EPSG:4326":
        tr = Affine(1e-4, 0, 14.99, 0, -1e-4, 40.01)
    else:
        tr = Affine(2.0, 0, ORIGIN[0] + 0.7, 0, -2.0, ORIGIN[1] + 0.3)
    tmp = path.with_name(path.name + ".part")
    with rasterio.open(tmp, "w", driver="GTiff", width=n, height=n, count=4, dtype="uint16", crs=crs,
                       transform=tr, nodata=0) as dst:
        dst.write(data)
    os.replace(tmp, path)  # a new file (new inode), as a sync tool writes one


def _scene(path: Path) -> SceneRecord:
    return SceneRecord(id="s", source="local", aoi_id="a", sensor="vhr",
                       time=datetime(2024, 5, 1, tzinfo=timezone.utc), platform="local", cloud_cover=0.0,
                       footprint=None, resolution_m=2.0, properties={"path": str(path)})


def _grids(crs=UTM):
    if crs == UTM:
        x0, y1 = ORIGIN[0] + 200.0, ORIGIN[1] - 200.0
    else:  # the 4326 file's middle, in UTM 33N
        import pyproj

        x, y = pyproj.Transformer.from_crs(4326, UTM, always_xy=True).transform(15.005, 39.995)
        x0, y1 = round(x) - 100.0, round(y) + 100.0
    site = GridSpec(UTM, Affine(2.0, 0, x0, 0, -2.0, y1), (100, 100))
    window = GridSpec(UTM, site.transform @ Affine.translation(-50, -50), (200, 200))
    return site, window


@pytest.fixture(autouse=True)
def _clean():
    clear_decoded_cache()
    yield
    clear_decoded_cache()


@pytest.fixture
def reads(monkeypatch):
    """How many times the file was decoded (changedet.io.read_raster calls)."""
    calls = []
    real = cio.read_raster

    def counting(path, **kw):
        calls.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(cio, "read_raster", counting)
    return calls


@pytest.mark.parametrize("crs", [UTM, "EPSG:4326"])
def test_second_load_of_the_day_decodes_nothing_and_changes_no_pixel(tmp_path, reads, crs):
    path = tmp_path / "a_20240501.tif"
    _write(path, 1, crs=crs)
    site, window = _grids(crs)
    src = LocalSource(path=str(tmp_path))
    a = src.load(_scene(path), site)
    b = src.load(_scene(path), window)
    assert reads == ["a_20240501.tif"]  # the old code: decoded twice
    clear_decoded_cache()
    fresh_b = LocalSource(path=str(tmp_path)).load(_scene(path), window)
    clear_decoded_cache()
    fresh_a = LocalSource(path=str(tmp_path)).load(_scene(path), site)
    assert np.array_equal(a.values, fresh_a.values, equal_nan=True)
    assert np.array_equal(b.values, fresh_b.values, equal_nan=True)
    assert a.attrs == fresh_a.attrs and list(a["band"].values) == list(fresh_a["band"].values)
    assert np.isfinite(b.values).mean() > 0.9 and np.isnan(a.values).any()  # nodata kept NaN


def test_a_replaced_or_rewritten_file_is_decoded_again(tmp_path, reads):
    path = tmp_path / "a_20240501.tif"
    _write(path, 1)
    site, _ = _grids()
    src = LocalSource(path=str(tmp_path))
    first = src.load(_scene(path), site).values
    _write(path, 2)  # replaced by another file of the same size
    second = src.load(_scene(path), site).values
    assert len(reads) == 2 and not np.array_equal(first, second, equal_nan=True)
    # rewritten in place, same size, mtime put back: the inode's ctime still tells
    with rasterio.open(path, "r+") as ds:
        ds.write(np.full((4, 300, 300), 7, "uint16"))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    third = src.load(_scene(path), site).values
    assert len(reads) == 3 and np.allclose(third[np.isfinite(third)], 7e-4)


def test_memory_is_bounded(tmp_path, reads, monkeypatch):
    site, _ = _grids()
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"a_2024050{i + 1}.tif")
        _write(paths[-1], i)
    src = LocalSource(path=str(tmp_path))
    one = 4 * 300 * 300 * 4  # float32 bytes of one decoded file
    # at most DECODED_CACHE_FILES files: the first is gone after the third
    for p in paths:
        src.load(_scene(p), site)
    assert len(local._DECODED) == local.DECODED_CACHE_FILES == 2
    assert sum(d.nbytes for d, _, _t in local._DECODED.values()) == 2 * one
    src.load(_scene(paths[0]), site)
    assert reads == [p.name for p in paths] + [paths[0].name]
    # a file larger than the byte bound is not kept
    clear_decoded_cache()
    monkeypatch.setattr(local, "DECODED_CACHE_BYTES", one - 1)
    src.load(_scene(paths[1]), site)
    src.load(_scene(paths[1]), site)
    assert reads[-2:] == [paths[1].name] * 2 and not local._DECODED
    # two files under the bound together: the older goes
    monkeypatch.setattr(local, "DECODED_CACHE_BYTES", one + 1)
    src.load(_scene(paths[1]), site)
    src.load(_scene(paths[2]), site)
    assert [k[0] for k in local._DECODED] == [str(paths[2].resolve())]


def test_kept_pixels_are_read_only_and_expire(tmp_path, reads, monkeypatch):
    path = tmp_path / "a_20240501.tif"
    _write(path, 1)
    site, window = _grids()
    src = LocalSource(path=str(tmp_path))
    out = src.load(_scene(path), site)
    out.values[:] = 0  # the caller's result is its own
    (kept, _, _t), = local._DECODED.values()
    assert not kept.values.flags.writeable
    assert np.array_equal(src.load(_scene(path), site).values, LocalSource(path=str(tmp_path)).load(
        _scene(path), site).values, equal_nan=True)
    assert len(reads) == 1
    monkeypatch.setattr(local, "DECODED_CACHE_TTL_S", 0.0)
    src.load(_scene(path), window)
    assert len(reads) == 2


@pytest.mark.parametrize("fails", [False, True])
def test_run_day_frees_the_decoded_files_it_kept(monkeypatch, fails):
    # Review REG 2: nothing cleared the cache, so a worker kept up to 512 MiB of decoded pixels
    # after its last day; run_day now forgets them when the day ends, however it ends.
    import xarray as xr

    from changedet import pipeline
    from changedet.sources import local

    def body(aoi, day, cfg):
        with local._DECODED_LOCK:
            local._DECODED[("f", 1, 2, 3, 4, ("b",))] = (xr.DataArray(np.zeros((4, 4))), time.monotonic(),
                                                        threading.get_ident())
        if fails:
            raise RuntimeError("the day failed")
        return "done"

    monkeypatch.setattr(pipeline, "_run_day", body)
    if fails:
        with pytest.raises(RuntimeError):
            pipeline.run_day(None, None, None)
    else:
        assert pipeline.run_day(None, None, None) == "done"
    assert not local._DECODED


def test_a_day_ending_on_one_thread_keeps_the_file_another_thread_read():
    """run_day frees only its own thread's decoded files (and any expired): another worker
    thread's day reads its file again on its registration window without a second decode."""
    import xarray as xr

    clear_decoded_cache()
    other = ("other", 1, 2, 3, 4, ("b",))
    expired = ("old", 1, 2, 3, 4, ("b",))

    def keep(key, at):
        with local._DECODED_LOCK:
            local._DECODED[key] = (xr.DataArray(np.zeros((4, 4))), at, threading.get_ident())

    t = threading.Thread(target=keep, args=(other, time.monotonic()))
    t.start()
    t.join()
    t = threading.Thread(target=keep, args=(expired, time.monotonic() - 2 * local.DECODED_CACHE_TTL_S))
    t.start()
    t.join()
    keep(("mine", 1, 2, 3, 4, ("b",)), time.monotonic())
    clear_decoded_cache(this_thread=True)
    assert list(local._DECODED) == [other]
    clear_decoded_cache()
    assert not local._DECODED
