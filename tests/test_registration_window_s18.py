"""The daily run registers a small site on a registration window wider than its grid (REG1, s18).

Real NAIP (5 m, 8-bit, EPSG:26914; ``naip_timeseries_nd``): on a 500 m site the AOI grid is
109 x 109 px, and the shift estimated there was unreliable for every later date (2010-06-29
at the frame centre: reliability 0.27, ``not_registered``). The shift is now estimated on a
768 px window of the same lattice read from the local files around the site, and applied
to the site grid. The known answer: the same 2010 file moved by a known offset in its
geotransform must register with the shift of the unmoved file plus that offset.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import yaml

from changedet.aoi import load_aoi
from changedet.cube import Cube, reference_digest
from changedet.grid import GridSpec, aoi_grid
from changedet.pipeline import RunConfig, _registration_grid, run_day

NAIP = "naip_timeseries_nd/m_4709963_se_14_1_{}.tif"
REF_DAY, DAY = date(2009, 8, 18), date(2010, 6, 29)
#: Intersection of the NAIP frames (EPSG:26914).
FRAME = (485902.0, 5205631.2, 490569.0, 5209245.0)
#: Known offset added to the 2010 file's geotransform (metres east, metres north).
DX, DY = 2.0, -1.5
RES = 5.0


def _site(fx: float, fy: float, size: float = 500.0) -> list[list[float]]:
    cx = FRAME[0] + fx * (FRAME[2] - FRAME[0])
    cy = FRAME[1] + fy * (FRAME[3] - FRAME[1])
    h = size / 2
    tr = pyproj.Transformer.from_crs(26914, 4326, always_xy=True)
    ring = [list(tr.transform(x, y)) for x, y in ((cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h),
                                                   (cx - h, cy + h))]
    return ring + [ring[0]]


def _aoi(tmp: Path, aoi_id: str, ring, folder: Path):
    reg = tmp / f"aois_{aoi_id}"
    reg.mkdir(parents=True, exist_ok=True)
    (reg / f"{aoi_id}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": aoi_id, "role": "site"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    (reg / f"{aoi_id}.yaml").write_text(yaml.safe_dump({
        "id": aoi_id, "name": aoi_id, "kind": "depot", "timezone": "America/Chicago", "cadence": "weekly",
        "sources": [{"name": "local", "sensor": "vhr", "resolution_m": RES, "path": str(folder), "cloud_mask": "none"}],
        "metrics": ["changed_area_m2"], "rules": [], "recipients": {}}, sort_keys=False))
    return load_aoi(aoi_id, registry=reg), reg


def _copy(src: Path, dst: Path, *, dx: float = 0.0, dy: float = 0.0, bounds=None) -> Path:
    """``src`` moved ``dx`` m east and ``dy`` m north in its geotransform, cut to ``bounds`` (EPSG:26914) if given."""
    with rasterio.open(src) as s:
        if bounds is None:
            data, t = s.read(), s.transform
        else:
            win = rasterio.windows.from_bounds(*bounds, transform=s.transform).round_offsets().round_lengths()
            data, t = s.read(window=win), s.window_transform(win)
        profile = {**s.profile, "driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
                   "transform": rasterio.Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f + dy)}
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        profile.pop(key, None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


@pytest.fixture(scope="module")
def folders(test_data, tmp_path_factory):
    """Two local folders of two dates: 2009 and 2010 as published, and 2009 and 2010 moved (DX, DY)."""
    root = tmp_path_factory.mktemp("naip_reg")
    ref, day = test_data(NAIP.format(f"{REF_DAY:%Y%m%d}")), test_data(NAIP.format(f"{DAY:%Y%m%d}"))
    out = {}
    for name, (dx, dy) in {"plain": (0.0, 0.0), "moved": (DX, DY)}.items():
        folder = root / name
        folder.mkdir()
        shutil.copy(ref, folder / ref.name)
        _copy(day, folder / day.name, dx=dx, dy=dy)
        out[name] = folder
    return out


def _run(tmp: Path, aoi_id: str, ring, folder: Path):
    aoi, reg = _aoi(tmp, aoi_id, ring, folder)
    cfg = RunConfig(data_dir=tmp / f"data_{aoi_id}", registry=reg, evidence=False, write_products=False)
    first = run_day(aoi, REF_DAY, cfg)
    assert first.status == "processed" and first.shift_px == (0.0, 0.0), first.summary()
    return aoi, cfg, run_day(aoi, DAY, cfg)


def _coreg_record(cfg, aoi, scene_id):
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    return next(e for e in cube.scenes() if e["scene_id"] == scene_id)["coreg"]


@pytest.mark.parametrize("where", [(0.5, 0.5), (0.1, 0.5)], ids=["centre", "near_west_edge"])
def test_small_naip_site_registers_on_the_wider_window_with_the_known_shift(folders, tmp_path, where):
    """A 500 m site (109 px grid): 2010 was not_registered (reliability 0.27 at the centre);
    now it registers, and the file moved by (DX, DY) m registers with the shift of the unmoved
    file plus exactly that offset. Near the west edge about 40 % of the window lies off the
    files (NaN), and the estimate still holds."""
    ring = _site(*where)
    aoi, cfg, plain = _run(tmp_path, "naip_plain", ring, folders["plain"])
    _, cfg_m, moved = _run(tmp_path, "naip_moved", ring, folders["moved"])
    for r in (plain, moved):
        assert r.status == "processed", r.summary()
        assert r.reliability >= 0.5
    # Moved DX m east and DY m north: the shift back is -DX/RES columns and +DY/RES rows (rows run south).
    d_row = moved.shift_px[0] - plain.shift_px[0]
    d_col = moved.shift_px[1] - plain.shift_px[1]
    assert d_row == pytest.approx(DY / RES, abs=0.05) and d_col == pytest.approx(-DX / RES, abs=0.05), (d_row, d_col)
    # The published 2010 file against 2009 on the whole frame: (-0.22, -0.46) px, reliability 1.0.
    assert plain.shift_px == pytest.approx((-0.22, -0.46), abs=0.15), plain.shift_px
    rec = _coreg_record(cfg, aoi, plain.scene_id)
    assert rec["window"]["on"] == "registration window" and rec["window"]["rows"] >= 768, rec
    # The window reference sits beside the cube's reference, with its provenance.
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    wide, tags = cube.registration_reference()
    assert tags["changedet_reference_from"] == f"scene {_scene_id(cube, REF_DAY)}"
    assert tags["changedet_window_px"] == "768"
    assert GridSpec.of(wide).same_as(_registration_grid(cube.grid, 768))
    assert cube.reference().shape[1:] == cube.grid.shape


def _scene_id(cube: Cube, day: date) -> str:
    return next(e["scene_id"] for e in cube.scenes() if str(e["time"]).startswith(day.isoformat()))


@pytest.mark.parametrize("east_m", [0.0, 100.0], ids=["cut_at_the_site", "window_mostly_off_the_files"])
def test_files_ending_at_the_site_register_on_the_site_grid_as_before(folders, tmp_path, east_m):
    """Files cut to the site grid: the wider window holds nothing more, so the day registers on
    the site grid as before (same image moved by a known offset: the shift is that offset) and
    no window reference is written. With 100 m more to the east the window is tried, but under
    10 % of it has data (no estimate there, CoregError): the site grid is used as before, where
    a day that registered before must not turn not_registered."""
    ring = _site(0.5, 0.5)
    aoi, _ = _aoi(tmp_path, "probe", ring, folders["plain"])
    grid = aoi_grid(aoi, RES)
    bounds = list(pyproj.Transformer.from_crs(grid.crs, 26914, always_xy=True).transform_bounds(*grid.bounds))
    bounds[2] += east_m
    folder = tmp_path / "cut"
    ref = folders["plain"] / Path(NAIP.format(f"{REF_DAY:%Y%m%d}")).name
    _copy(ref, folder / ref.name, bounds=bounds)
    # The 2009 image again, moved, dated 2010: the site alone registers it reliably.
    _copy(ref, folder / Path(NAIP.format(f"{DAY:%Y%m%d}")).name, dx=DX, dy=DY, bounds=bounds)
    aoi, cfg, r = _run(tmp_path, "naip_cut", ring, folder)
    assert r.status == "processed", r.summary()
    assert r.shift_px == pytest.approx((DY / RES, -DX / RES), abs=0.05)
    assert _coreg_record(cfg, aoi, r.scene_id)["window"] == {"on": "site grid", "rows": grid.shape[0],
                                                             "cols": grid.shape[1]}
    if not east_m:
        assert not Cube(cfg.data_dir, aoi.id, "vhr", grid).registration_path.exists()


def test_a_cube_without_window_reference_gets_it_from_its_reference_scene(folders, tmp_path):
    """A cube made before (site-grid reference only) and one whose window file is another image
    (left by a deleted cube, a lost race): the window reference is read again from the stored
    reference scene, checked against the site reference, and the day registers as a new cube does."""
    ring = _site(0.5, 0.5)
    aoi, reg = _aoi(tmp_path, "naip_old", ring, folders["plain"])
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False, write_products=False)
    assert run_day(aoi, REF_DAY, cfg).status == "processed"
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    made, tags = cube.registration_reference()
    data2 = tmp_path / "data2"
    shutil.copytree(cfg.data_dir, data2)  # the same cube after its first day
    cube.registration_path.unlink()  # as an older cube: the reference on the site grid only
    r = run_day(aoi, DAY, cfg)
    assert r.status == "processed" and "registration window reference made from scene" in r.note, r.summary()
    again, tags2 = cube.registration_reference()
    assert tags2 == tags and np.array_equal(again.values, made.values, equal_nan=True)

    # Another image under the right name and origin, made from another reference (its digest):
    # stale, made again, same shift.
    cfg2 = RunConfig(data_dir=data2, registry=reg, evidence=False, write_products=False)
    cube2 = Cube(data2, aoi.id, "vhr", cube.grid)
    wrong = made.copy(data=np.roll(np.asarray(made.values), 7, axis=2))
    assert tags["changedet_reference_digest"] == reference_digest(cube2.reference())
    cube2.set_registration_reference(wrong, origin=tags["changedet_reference_from"], window_px=768,
                                     reference_digest="another reference")
    r2 = run_day(aoi, DAY, cfg2)
    assert r2.status == "processed" and r2.shift_px == r.shift_px, r2.summary()
    fixed, tags3 = cube2.registration_reference()
    assert np.array_equal(fixed.values, made.values, equal_nan=True) and tags3 == tags


def test_registration_grid_keeps_the_lattice_and_is_none_for_big_grids():
    """Grown by whole pixels on each side, so the site grid sits inside at an integer offset."""
    grid = GridSpec.from_bounds(pyproj.CRS.from_epsg(32614), (1000.0, 2000.0, 1545.0, 2300.0), 5.0)  # 60 x 109 px
    wide = _registration_grid(grid, 768)
    assert wide.shape[0] >= 768 and wide.shape[1] >= 768
    assert wide.resolution == grid.resolution and wide.crs == grid.crs
    off_c = (grid.transform.c - wide.transform.c) / 5.0
    off_r = (wide.transform.f - grid.transform.f) / 5.0
    assert off_c == int(off_c) and off_r == int(off_r)
    assert off_r == (wide.shape[0] - grid.shape[0]) // 2 and off_c == (wide.shape[1] - grid.shape[1]) // 2
    big = GridSpec.from_bounds(pyproj.CRS.from_epsg(32614), (0.0, 0.0, 500.0, 500.0), 0.5)  # 1000 x 1000 px
    assert _registration_grid(big, 768) is None


def _run_2010_onto_reference_file(tmp_path, folders, aoi_id, ring, reference):
    """Run the 2010 date alone (its own folder) for an AOI whose entry names ``reference``:
    ``(aoi, cfg, result)``."""
    only_2010 = tmp_path / "only_2010"
    only_2010.mkdir()
    shutil.copy(folders["plain"] / Path(NAIP.format(f"{DAY:%Y%m%d}")).name, only_2010)
    aoi, reg = _aoi(tmp_path, aoi_id, ring, only_2010)
    doc = yaml.safe_load((reg / f"{aoi_id}.yaml").read_text())
    doc["sources"][0]["reference"] = str(reference)
    (reg / f"{aoi_id}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    aoi = load_aoi(aoi_id, registry=reg)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False, write_products=False)
    return aoi, cfg, run_day(aoi, DAY, cfg)


def test_cube_registration_reference_round_trip(tmp_path):
    """Written whole with its provenance tags beside the reference, which it never replaces."""
    grid = GridSpec.from_bounds(pyproj.CRS.from_epsg(32614), (0.0, 0.0, 100.0, 100.0), 5.0)
    cube = Cube(tmp_path, "site", "vhr", grid)
    assert cube.registration_reference() is None
    wide = _registration_grid(grid, 64)
    da = wide.attach(np.arange(2 * 64 * 64, dtype="float32").reshape(2, 64, 64), bands=["R", "NIR"])
    cube.set_registration_reference(da, origin="scene s1", window_px=64, reference_digest="d1")
    back, tags = cube.registration_reference()
    assert np.array_equal(back.values, da.values) and GridSpec.of(back).same_as(wide)
    assert tags["changedet_reference_from"] == "scene s1" and tags["changedet_window_px"] == "64"
    assert json.loads(tags["changedet_window_bounds"]) == pytest.approx(list(wide.bounds))
    assert json.loads(tags["changedet_grid_bounds"]) == pytest.approx(list(grid.bounds))
    assert cube.reference() is None
    assert sorted(p.name for p in (tmp_path / "cubes" / "site").iterdir()) == ["vhr_5m.registration.tif"]
    assert tags["changedet_reference_digest"] == "d1"
    with pytest.raises(Exception, match="origin"):
        cube.set_registration_reference(da, origin="", window_px=64, reference_digest="d1")
    with pytest.raises(Exception, match="reference_digest"):
        cube.set_registration_reference(da, origin="scene s1", window_px=64, reference_digest="")


def test_a_reference_file_is_read_on_the_registration_window_too(folders, tmp_path):
    """With ``reference: FILE`` in the entry the window reference is that file read on the window
    (origin ``file ...`` in its tags), and the 2010 file registers onto it as onto the 2009 scene."""
    ring = _site(0.5, 0.5)
    ref_file = folders["plain"] / Path(NAIP.format(f"{REF_DAY:%Y%m%d}")).name
    aoi, cfg, r = _run_2010_onto_reference_file(tmp_path, folders, "naip_file", ring, ref_file)
    assert r.status == "processed", r.summary()
    assert r.shift_px == pytest.approx((-0.22, -0.46), abs=0.15), r.shift_px
    _, tags = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES)).registration_reference()
    assert tags["changedet_reference_from"] == f"file {ref_file}"


# ---------------------------------------------------------------- REG2 (review REG of REG1's change)


def test_registration_grid_is_a_bounded_block_on_the_lattice_for_long_thin_sites():
    """Review REG 4: a long thin site (a rail corridor) was grown to 768 px across and kept its
    whole length (600 x 40000 px at 0.5 m: a 469 MiB strip read, cloud-masked and stored every
    day). The registration grid is now a 768 x 768 block on the site's lattice, centred across
    the site and along it on the site's centroid (the pixels _coregister_window would cut)."""
    from shapely.geometry import box

    crs = pyproj.CRS.from_epsg(32614)
    grid = GridSpec.from_bounds(crs, (0.0, 0.0, 20000.0, 300.0), 0.5)  # 600 rows x 40000 cols
    assert grid.shape == (600, 40000)
    # The site: the corridor's eastern part (centroid at x = 15000 m, col 30000).
    site = box(10000.0, 0.0, 20000.0, 300.0)
    wide = _registration_grid(grid, 768, site)
    assert wide.shape == (768, 768)
    assert wide.resolution == grid.resolution and wide.crs == grid.crs
    off_c = (wide.transform.c - grid.transform.c) / 0.5
    off_r = (wide.transform.f - grid.transform.f) / 0.5  # rows above the grid
    assert off_c == int(off_c) and off_r == int(off_r)  # same lattice
    assert off_r == (768 - 600) // 2  # centred across
    assert off_c == 30000 - 384  # centred along, on the centroid
    # Clipped to the grid along its length (as _coregister_window clips its cut).
    west = _registration_grid(grid, 768, box(0.0, 0.0, 10.0, 300.0))
    assert west.shape == (768, 768) and west.transform.c == grid.transform.c
    # Tall and thin, no site given: the grid's centre.
    tall = GridSpec.from_bounds(crs, (0.0, 0.0, 50.0, 1000.0), 0.5)  # 2000 x 100 px
    block = _registration_grid(tall, 768)
    assert block.shape == (768, 768)
    assert (tall.transform.f - block.transform.f) / 0.5 == 1000 - 384
    # Never more than max(768, site) on an axis: a compact site gets exactly 768.
    small = GridSpec.from_bounds(crs, (0.0, 0.0, 545.0, 545.0), 5.0)  # 109 x 109 px
    assert _registration_grid(small, 768).shape == (768, 768)


def _first_day(tmp: Path, aoi_id: str, folder: Path, **where):
    aoi, reg = _aoi(tmp, aoi_id, _site(0.5, 0.5, **where), folder)
    cfg = RunConfig(data_dir=tmp / f"data_{aoi_id}", registry=reg, evidence=False, write_products=False)
    assert run_day(aoi, REF_DAY, cfg).status == "processed"
    return aoi, cfg, Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))


def test_a_truncated_registration_window_file_is_made_again_not_raised(folders, tmp_path, caplog):
    """Review REG 1: a truncated ``*.registration.tif`` (an interrupted copy or sync) raised
    RasterError on every later day of the AOI. It is a cache: warned, made again, the day runs."""
    aoi, cfg, cube = _first_day(tmp_path, "naip_trunc", folders["plain"])
    whole = cube.registration_path.read_bytes()
    cube.registration_path.write_bytes(whole[: len(whole) // 3])
    with caplog.at_level("WARNING", logger="changedet.pipeline"):
        r = run_day(aoi, DAY, cfg)
    assert r.status == "processed", r.summary()
    assert r.shift_px == pytest.approx((-0.22, -0.46), abs=0.15)
    assert "registration window reference made from scene" in r.note
    assert any("cannot be read" in m and "made again" in m for m in caplog.messages), caplog.messages
    again, tags = cube.registration_reference()  # whole again
    assert tags["changedet_reference_digest"] == reference_digest(cube.reference())


def test_a_new_reference_makes_the_window_stale_and_removes_it(folders, tmp_path):
    """Review REG 3: the window is identified by the digest of the cube's reference, not by its
    pixels (which let a window up to ~0.3 px off pass). Setting another reference removes the
    window; promoting a pending reference removes it unless it was made from that reference."""
    aoi, cfg, cube = _first_day(tmp_path, "naip_new_ref", folders["plain"])
    ref = cube.reference()
    _, tags = cube.registration_reference()
    assert tags["changedet_reference_digest"] == reference_digest(ref)
    # The same reference promoted again (a pending file of the same pixels): the window stays.
    first = cube.scenes()[0]["scene_id"]
    cube.set_reference(ref, pending=first)
    assert cube.promote_reference(first) and cube.registration_path.exists()
    # Another reference promoted: the window is gone.
    other = ref.copy(data=np.asarray(ref.values) + np.float32(1.0))
    cube.set_reference(other, pending=first)
    assert cube.registration_path.exists()  # pending only: still the reference's window
    assert cube.promote_reference(first) and not cube.registration_path.exists()
    # A window of that reference, then another reference set directly: gone too.
    wide, _ = _registration_window_of(cube, ref)
    cube.set_registration_reference(wide, origin="scene x", window_px=768, reference_digest=reference_digest(other))
    cube.set_reference(other)  # the same pixels: kept
    assert cube.registration_path.exists()
    cube.set_reference(ref)
    assert not cube.registration_path.exists()


def _registration_window_of(cube: Cube, ref):
    grid = _registration_grid(cube.grid, 768)
    return grid.attach(np.zeros((ref.sizes["band"], 768, 768), "float32"), bands=[str(b) for b in ref["band"].values]), grid


def test_a_stale_window_shifted_by_a_fraction_of_a_pixel_is_not_used(folders, tmp_path):
    """Review REG 3: a window made from an earlier reference (here the same image 0.2 px off, which
    the old median-difference test accepted) is refused by its digest and made again."""
    from changedet.coreg import apply_shift

    aoi, cfg, cube = _first_day(tmp_path, "naip_subpx", folders["plain"])
    made, tags = cube.registration_reference()
    off = apply_shift(made, 0.2, 0.0)
    cube.set_registration_reference(off, origin=tags["changedet_reference_from"], window_px=768,
                                    reference_digest="the reference before")
    r = run_day(aoi, DAY, cfg)
    assert r.status == "processed" and "registration window reference made from" in r.note, r.summary()
    again, tags2 = cube.registration_reference()
    assert tags2 == tags and np.array_equal(again.values, made.values, equal_nan=True)


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857"])
def test_a_reference_file_in_another_crs_registers_on_the_window(folders, tmp_path, crs):
    """Review REG 2: ``reference: FILE`` is read unscaled (8-bit DN here); in EPSG:4326 / 3857 the
    window and site-grid reads of it differ by resampling (~0.07 DN), 35x the old absolute 2e-3,
    so the window was refused every day (with a false "file changed since?" warning) and the day
    stayed not_registered. The scale-free comparison accepts it."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    src_path = folders["plain"] / Path(NAIP.format(f"{REF_DAY:%Y%m%d}")).name
    dst = tmp_path / f"ref_{crs.replace(':', '_')}.tif"
    with rasterio.open(src_path) as s:
        t, w, h = calculate_default_transform(s.crs, crs, s.width, s.height, *s.bounds)
        prof = {**s.profile, "driver": "GTiff", "crs": crs, "transform": t, "width": w, "height": h}
        for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
            prof.pop(key, None)
        with rasterio.open(dst, "w", **prof) as o:
            for b in range(1, s.count + 1):
                reproject(rasterio.band(s, b), rasterio.band(o, b), resampling=Resampling.bilinear)
    aoi, cfg, r = _run_2010_onto_reference_file(tmp_path, folders, "naip_crs", _site(0.5, 0.5), dst)
    assert r.status == "processed", r.summary()
    assert r.shift_px == pytest.approx((-0.22, -0.46), abs=0.15), r.shift_px
    rec = _coreg_record(cfg, aoi, r.scene_id)
    assert rec["window"]["on"] == "registration window", rec


def test_the_same_file_moved_a_pixel_is_not_the_same_image():
    """The scale-free check still refuses a reference that is not the cube's (1 px off), in DN
    and in reflectance alike."""
    from changedet.pipeline import _same_image

    rng = np.random.default_rng(3)
    grid = GridSpec.from_bounds(pyproj.CRS.from_epsg(32614), (0.0, 0.0, 545.0, 545.0), 5.0)
    wide = _registration_grid(grid, 768)
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=(768, 768)), 2.0)
    field = (field - field.min()) / (field.max() - field.min())
    (r0, c0) = (768 - 109) // 2, (768 - 109) // 2
    for scale in (0.4, 255.0):
        img = (field * scale).astype("float32")[None]
        w = wide.attach(img, bands=["R"])
        site = grid.attach(img[:, r0:r0 + 109, c0:c0 + 109].copy(), bands=["R"])
        assert _same_image(w, wide, site, grid)
        resampled = site.copy(data=np.asarray(site.values) + np.float32(1e-3 * scale))
        assert _same_image(w, wide, resampled, grid)
        moved = grid.attach(img[:, r0 + 1:r0 + 110, c0:c0 + 109].copy(), bands=["R"])
        assert not _same_image(w, wide, moved, grid)


def test_a_shift_refused_on_the_window_says_so_in_the_note_and_skipped_record(folders, tmp_path, monkeypatch):
    """Review REG 7: a window estimate the gate refuses is final (no second try on the site grid);
    the day's note and the scene's skipped record now say it was the registration window."""
    import functools

    import changedet.pipeline as pipeline

    aoi, cfg, cube = _first_day(tmp_path, "naip_gate", folders["plain"])
    monkeypatch.setattr(pipeline, "coregister", functools.partial(pipeline.coregister, min_reliability=0.999))
    r = run_day(aoi, DAY, cfg)
    assert r.status == "not_registered", r.summary()
    assert "registration unreliable" in r.note and "(on the registration window, 768x768 px)" in r.note, r.note
    skipped = [s for s in cube.skipped() if s["scene_id"] == r.scene_id]
    assert skipped and "on the registration window, 768x768 px" in skipped[0]["reason"], skipped


def _with_clm(src: Path, dst: Path, cloud=None) -> Path:
    """``src`` with a CLM band; ``cloud`` (r0, r1, c0, c1 file pixels): bright, flagged, with a flagged shadow."""
    with rasterio.open(src) as s:
        d = s.read()
        prof = {**s.profile, "driver": "GTiff", "count": d.shape[0] + 1, "nodata": None}
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        prof.pop(key, None)
    clm = np.zeros(d.shape[1:], "uint8")
    if cloud is not None:
        r0, r1, c0, c1 = cloud
        d[:, r0:r1, c0:c1] = 250
        d[:, r1:r1 + 40, max(0, c0 - 40):c1 - 40] //= 3  # its shadow, south-west
        clm[r0:r1 + 40, max(0, c0 - 40):c1] = 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **prof) as o:
        o.write(np.concatenate([d, clm[None]]))
        o.descriptions = ("R", "G", "B", "NIR", "CLM")
    return dst


def test_a_flagged_cloud_in_the_window_outside_the_site_is_masked_there(folders, tmp_path, monkeypatch):
    """Review REG 8: files with a CLM band and ``cloud_mask: auto``: a cloud (and its shadow)
    flagged in the window east of the site (the site itself clear) is masked on the wide grid
    (buffered as the day's), kept out of the estimate, and the shift stays the clean one."""
    import changedet.pipeline as pipeline

    ref, day = (folders["plain"] / Path(NAIP.format(f"{d:%Y%m%d}")).name for d in (REF_DAY, DAY))
    shifts, masks = {}, {}
    seen = []
    real = pipeline._coregister_window

    def spy(reference, moving, clear, site, *, window):
        seen.append((GridSpec.of(moving), np.asarray(clear.values, bool).copy()))
        return real(reference, moving, clear, site, window=window)

    monkeypatch.setattr(pipeline, "_coregister_window", spy)
    # Site centre ~ file row 361, col 467; the site spans +-55 px, the window +-384 px.
    for name, cloud in {"clean": None, "cloudy": (0, 722, 560, 934)}.items():
        folder = tmp_path / name
        _with_clm(ref, folder / ref.name)
        _with_clm(day, folder / day.name, cloud)
        aoi, reg = _aoi(tmp_path, f"naip_{name}", _site(0.5, 0.5), folder)
        doc = yaml.safe_load((reg / f"naip_{name}.yaml").read_text())
        doc["sources"][0].update(cloud_mask="auto", bands=["R", "G", "B", "NIR", "CLM"])
        (reg / f"naip_{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        aoi = load_aoi(f"naip_{name}", registry=reg)
        cfg = RunConfig(data_dir=tmp_path / f"data_{name}", registry=reg, evidence=False, write_products=False)
        assert run_day(aoi, REF_DAY, cfg).status == "processed"
        seen.clear()
        r = run_day(aoi, DAY, cfg)
        assert r.status == "processed", r.summary()
        assert _coreg_record(cfg, aoi, r.scene_id)["window"]["on"] == "registration window"
        assert r.cloud_fraction == 0.0  # the site itself is clear
        shifts[name] = r.shift_px
        (wgrid, clear), = seen
        assert wgrid.shape == (768, 768)
        masks[name] = clear
    # The cloud is east of file col 560 (~93 px east of the site centre): the window's eastern
    # part is masked, buffered westwards, the western part and the site clear.
    # (The window's ~45 rows beyond the files are no data, in both.)
    cloudy, clean = masks["cloudy"], masks["clean"]
    assert clean[:, 384 + 93 + 40:].mean() > 0.9
    assert cloudy[:, 384 + 93:].mean() < 0.05
    assert np.array_equal(cloudy[:, :384 + 40], clean[:, :384 + 40])
    assert shifts["cloudy"] == pytest.approx(shifts["clean"], abs=0.15), shifts
