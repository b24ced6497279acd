"""Session 16: typed load errors from the sources, and two healing gaps of the daily run.

1. Sources say whose a load failure is (``changedet.errors``): ``SceneUnreadable`` (the
   scene's, for good), ``SourceUnavailable`` (may pass), ``SourceConfigError`` (the entry's);
   the daily run dispatches on the type, not on the message's words.
2. A replaced, now readable file supersedes the permanent ``unreadable`` record of the file
   it replaced (it has a new scene id): ``cube info`` no longer lists that day as lost.
3. A run stopped between storing the reference day and saving its reference no longer
   fails every later day: the reference is rebuilt from the stored scene.

Reuses the reduced Tumangang railyard of ``tests/test_pipeline_sources.py`` (simulator
GeoTIFFs in a local folder, and the same pixels served by the fake Sentinel Hub).
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from changedet.cube import Cube
from changedet.errors import SceneUnreadable, SourceConfigError, SourceError, SourceUnavailable
from changedet.grid import aoi_grid
from changedet.pipeline import RunConfig, run_day

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline_sources import (  # noqa: E402
    BYOC, CLIENT, QUIET, RES, SECRET, _aoi_with, _copy_imgs, _local_aoi, scenes, serve_hub)

__all__ = ["scenes"]  # the module-scoped fixture, shared with test_pipeline_sources


def _search_one(aoi, day):
    from changedet.sources.base import source_from_spec

    src = source_from_spec(aoi.sources[0])
    found = src.search(aoi, day, day, max_cloud=100.0)
    assert len(found) == 1, found
    return src, found[0]


# -- 1. typed errors: the local source ---------------------------------------------------------

def test_the_local_source_types_its_load_errors(scenes, tmp_path, monkeypatch):
    """Cut file: SceneUnreadable with the library error as cause; gone or I/O error: SourceUnavailable;
    a bands: list of another length: SourceConfigError('bands')."""
    import changedet.io as cio
    import changedet.sources.local as local_mod

    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, _ = _local_aoi(scenes, tmp_path, path=imgs)
    grid = aoi_grid(aoi, RES)
    src, scene = _search_one(aoi, QUIET[1])
    path = Path(scene.properties["path"])
    good = path.read_bytes()

    path.write_bytes(good[:4096])  # header intact, pixels cut (an interrupted copy)
    with pytest.raises(SceneUnreadable) as info:
        src.load(scene, grid)
    err = info.value
    assert err.reason == "the file is there but cannot be read" and str(path) in str(err)
    # The library's error is kept (LocalSource.load dropped it with `from None` before).
    assert err.__cause__ is not None and not isinstance(err.__cause__, SourceError), err.__cause__
    assert isinstance(err, SourceError)  # callers catching SourceError keep working

    # The same bytes, but the file system fails reading them through: it may pass.
    real_open = open

    def eio_open(file, mode="r", *args, **kwargs):
        if str(file) == str(path) and "b" in mode:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(local_mod, "open", eio_open, raising=False)
    with pytest.raises(SourceUnavailable) as info:
        src.load(scene, grid)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EIO
    monkeypatch.undo()

    # GDAL reporting an OS error (as text only, inside a RasterError): may pass, the cause kept.
    path.write_bytes(good)
    real_read = cio.read_raster

    def eio_read(p, **kwargs):
        if str(p) == str(path):
            try:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            except OSError as inner:
                raise cio._unreadable(Path(p), inner) from None
        return real_read(p, **kwargs)

    monkeypatch.setattr(cio, "read_raster", eio_read)
    with pytest.raises(SourceUnavailable) as info:
        src.load(scene, grid)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EIO
    monkeypatch.undo()

    # The file gone (a share not mounted): may pass.
    path.rename(tmp_path / "aside.tif")
    with pytest.raises(SourceUnavailable, match="gone"):
        src.load(scene, grid)
    (tmp_path / "aside.tif").rename(path)

    # A bands: list one name short: the entry's configuration, named.
    bad = replace(src, bands=["B02", "B03"], _headers={})
    with pytest.raises(SourceConfigError, match="'bands:'") as info:
        bad.load(scene, grid)
    assert info.value.option == "bands"
    assert src.load(scene, grid).sizes["band"] > 0  # the file itself is fine


def test_typed_errors_survive_pickling_and_are_source_errors():
    """Flows send errors between processes: type and attributes must survive."""
    for err in (SceneUnreadable("m", reason="r"), SourceConfigError("m", option="bands"), SourceUnavailable("m")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == "m" and back.__dict__ == err.__dict__
        assert isinstance(back, SourceError)


# -- 1. typed errors: the daily run dispatches on the type ---------------------------------------

def test_the_daily_run_reads_the_type_not_the_words(scenes, tmp_path, monkeypatch):
    """An error's words no longer decide: a SceneUnreadable saying 'Input/output error' is unreadable,
    a SourceUnavailable of a file that is there is failed (retried), a SourceConfigError is failed
    naming the entry; only the first is recorded as skipped."""
    import changedet.pipeline as pipeline
    from changedet.sources.local import LocalSource

    for gone in ("_unreadable", "_misconfigured", "_passing_read_error", "_PASSING_READ_WORDS"):
        assert not hasattr(pipeline, gone), gone
    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, reg = _local_aoi(scenes, tmp_path, path=imgs)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    raised = {}

    def load(self, scene, grid, **kwargs):
        raise raised["error"]

    monkeypatch.setattr(LocalSource, "load", load)
    raised["error"] = SceneUnreadable("x.tif: TIFFReadEncodedTile: Input/output error", reason="the file is broken")
    r = run_day(aoi, QUIET[0], cfg)
    assert r.status == "unreadable" and "the file is broken" in r.note, r.summary()
    assert len(cube.skipped()) == 1 and cube.skipped()[0]["permanent"]

    raised["error"] = SourceUnavailable("x.tif: cannot be read as a raster (not a TIFF)")
    r = run_day(aoi, QUIET[1], cfg)
    assert r.status == "failed" and "may pass" in r.note, r.summary()

    raised["error"] = SourceConfigError("x.tif: has 5 bands but 2 band names were given", option="bands")
    r = run_day(aoi, QUIET[2], cfg)
    assert r.status == "failed" and "its 'bands' setting" in r.note and "local (vhr, 0.5 m)" in r.note, r.summary()
    assert len(cube.skipped()) == 1  # neither of the failed days was recorded


# -- 1. Sentinel Hub: 400 and 404 are the entry's, not the scene's -----------------------------

@pytest.fixture
def strict_hub(scenes, monkeypatch):
    """The fake Sentinel Hub holding one BYOC scene, answering 404 for collections it does not hold."""
    with serve_hub(scenes, monkeypatch, strict_collections=True) as (server, _):
        yield server


def test_sentinelhub_400_and_404_fail_the_day_naming_the_entry(scenes, strict_hub, tmp_path, caplog):
    """A band the collection lacks (the real server's 400 on the evalscript), a process 404 and a wrong
    BYOC id (404 on the catalog): `failed` with the option to fix, nothing recorded as skipped;
    a 503 is failed as passing; no secret in any message."""
    server = strict_hub
    base = {"name": "sentinelhub", "sensor": "vhr", "resolution_m": RES, "collection": f"byoc-{BYOC}",
            "retry_sleep_s": 0.01, "download_attempts": 2}
    caplog.set_level(logging.DEBUG)
    text = ""

    def day(entry, name):
        aoi, reg = _aoi_with(scenes, tmp_path / name, [entry])
        cfg = RunConfig(data_dir=tmp_path / name / "data", registry=reg, evidence=False)
        r = run_day(aoi, QUIET[0], cfg)
        cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
        return r, cube

    # 400: the evalscript asks for a band the BYOC collection does not have.
    have = list(scenes["rendered"][QUIET[0]].bands)
    r, cube = day({**base, "bands": have[:2] + ["NOPE"]}, "bad_band")
    assert server.hits["process"] >= 1
    assert r.status == "failed", r.summary()
    assert "HTTP 400" in r.note and "its 'bands' setting" in r.note and "band NOPE" in r.note, r.note
    assert cube.skipped() == [] and cube.scenes() == []
    text += r.summary()

    # 404 from the process API after the catalog found the scene.
    server.fail("process", "404")
    r, cube = day(base, "process_404")
    assert r.status == "failed" and "HTTP 404" in r.note and "byoc_id" in r.note, r.summary()
    assert cube.skipped() == []
    text += r.summary()

    # A wrong BYOC collection id: the service answers 404 (catalog first).
    r, cube = day({**base, "collection": "byoc-00000000-dead-beef-0000-000000000000"}, "wrong_id")
    assert r.status == "failed" and "HTTP 404" in r.note and "byoc_id" in r.note, r.summary()
    assert r.note.startswith("search failed") and "its 'collection' setting" in r.note, r.note
    text += r.summary()

    # A 503 that outlasts the retries: failed, may pass (the flows retry it).
    server.fail("process", "503", times=10)
    r, cube = day(base, "busy")
    assert r.status == "failed" and "may pass" in r.note, r.summary()
    assert cube.skipped() == []
    text += r.summary() + caplog.text
    assert SECRET not in text


def test_sentinelhub_errors_are_typed_by_status(strict_hub, scenes, tmp_path):
    """The source's own classification, status by status (the class, not the words)."""
    from changedet.sources.sentinelhub import SentinelHubSource

    server = strict_hub
    aoi, _ = _aoi_with(scenes, tmp_path, [{"name": "sentinelhub", "sensor": "vhr", "resolution_m": RES,
                                           "collection": f"byoc-{BYOC}"}])
    src = SentinelHubSource(collection=f"byoc-{BYOC}", retry_sleep_s=0.01, download_attempts=1, cache=False)
    scene = src.search(aoi, QUIET[0], QUIET[0], sensor="vhr")[0]
    grid = aoi_grid(aoi, RES)
    expected = {"400": SourceConfigError, "404": SourceConfigError, "403": SourceConfigError,
                "422": SceneUnreadable, "408": SourceUnavailable, "409": SourceUnavailable,
                "503": SourceUnavailable}
    for status, kind in expected.items():
        server.fail("process", status, times=3)
        with pytest.raises(SourceError) as info:
            src.load(scene, grid, aoi=aoi)
        assert type(info.value) is kind, (status, type(info.value), info.value)
        assert f"HTTP {status}" in str(info.value)
        server._failures["process"].clear()
    assert np.isfinite(src.load(scene, grid, aoi=aoi).values).any()  # the server is fine again


def test_a_stac_asset_error_hides_signed_urls():
    """An asset read error is SourceUnavailable and its message loses every URL's query (SAS tokens)."""
    from changedet.sources.stac import _without_queries

    text = ("RasterioIOError: '/vsicurl/https://acct.blob.core.windows.net/c/B04.tif?st=2026-01-01&se=2026-01-02"
            "&sp=r&sig=AbC%2Fsecret' not recognized; HTTP 403 https://s3.x.com/b.tif?X-Amz-Signature=deadbeef")
    out = _without_queries(text)
    assert "sig=" not in out and "AbC" not in out and "deadbeef" not in out
    assert "https://acct.blob.core.windows.net/c/B04.tif?..." in out and "https://s3.x.com/b.tif?..." in out


# -- 2. a replaced file supersedes its unreadable record ---------------------------------------

def test_a_replaced_file_supersedes_its_unreadable_record(scenes, tmp_path, capsys):
    """Cut file -> unreadable (recorded); file replaced -> processed, and neither the cube's skipped
    records nor `changedet cube info` list the day any more (review PIPE2R #5)."""
    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, reg = _local_aoi(scenes, tmp_path, path=imgs)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    f = imgs / f"tumangang_{QUIET[1]:%Y%m%d}.tif"
    good = f.read_bytes()
    assert run_day(aoi, QUIET[0], cfg).status == "processed"
    f.write_bytes(good[:4096])
    r = run_day(aoi, QUIET[1], cfg)
    assert r.status == "unreadable", r.summary()
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    old_id = r.scene_id
    assert [s["scene_id"] for s in cube.skipped()] == [old_id]
    f.unlink()
    f.write_bytes(good)  # the replacement: a new mtime, so a new scene id
    os.utime(f, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    r2 = run_day(aoi, QUIET[1], cfg)
    assert r2.status == "processed" and r2.scene_id != old_id, r2.summary()
    assert cube.skipped() == []
    assert cube.info()["skipped"] == []
    raw = cube._read_provenance()["skipped"]
    assert raw == [], raw  # dropped from the record itself, not only hidden

    from changedet.cli import main

    main(["cube", "info", aoi.id, "--data-dir", str(cfg.data_dir), "--sensor", "vhr", "--registry", str(reg)])
    out = capsys.readouterr().out
    assert old_id not in out and "cannot be loaded" not in out, out


def test_cube_info_hides_a_record_an_older_cube_kept(tmp_path):
    """A cube written before this change keeps the stale record: `skipped()`/`info()` leave it out,
    while a record of an acquisition still not stored stays."""
    from shapely.geometry import box

    from changedet.grid import GridSpec
    from changedet.sources.base import SceneRecord

    import pyproj
    from affine import Affine

    grid = GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=Affine(1, 0, 500000, 0, -1, 4000008), shape=(8, 8))
    cube = Cube(tmp_path, "a", "vhr", grid)
    t1, t2 = datetime(2023, 8, 24, 2, tzinfo=timezone.utc), datetime(2023, 8, 31, 2, tzinfo=timezone.utc)

    def rec(sid, t, path=None):
        return SceneRecord(id=sid, source="local", aoi_id="a", sensor="vhr", time=t, platform="p", cloud_cover=0.0,
                           footprint=box(0, 0, 1, 1), resolution_m=1.0,
                           properties={"path": path} if path else {})

    data = grid.attach(np.full((2, 8, 8), 0.1, "float32"), bands=["B04", "CLM"])
    cube.append(rec("new-24", t1, "/imgs/site_20230824.tif"), data, extra={"entry": "local vhr 1m path=/imgs"})
    # As the old code left it: a permanent record of the replaced file, written after the store.
    cube.record_skipped(rec("old-24", t1), "cannot be loaded (the file is there but cannot be read): ...",
                        permanent=True, path="/imgs/site_20230824.tif")
    # Of the same time but no record of this acquisition (review PIPE #5): a fetch's cloudy record
    # of another tile (no path, no entry) and a record of another folder (entry) stay listed.
    cube.record_skipped(rec("tile2-24", t1), "83% of the site under cloud")
    cube.record_skipped(rec("other-24", t1), "cloudy: ...", entry="local vhr 1m path=/other")
    cube.record_skipped(rec("cut-31", t2), "cannot be loaded: ...", permanent=True)
    assert [s["scene_id"] for s in cube._read_provenance()["skipped"]] == ["old-24", "tile2-24", "other-24", "cut-31"]
    assert [s["scene_id"] for s in cube.skipped()] == ["tile2-24", "other-24", "cut-31"]
    assert [s["scene_id"] for s in cube.info()["skipped"]] == ["tile2-24", "other-24", "cut-31"]


# -- 3. a crash between storing the reference day and saving its reference --------------------

def _crash_after_the_append(monkeypatch, aoi, day, cfg):
    """Run ``day`` (the reference day) and stop it after its scene was stored, before its reference is in place."""
    def crash(self, *a, **k):
        raise KeyboardInterrupt("killed between cube.append and promote_reference")

    with monkeypatch.context() as m:
        m.setattr(Cube, "promote_reference", crash)
        with pytest.raises(KeyboardInterrupt):
            run_day(aoi, day, cfg)


def test_a_reference_lost_after_its_day_was_stored_is_rebuilt(scenes, tmp_path, monkeypatch):
    """The run stops in Cube.set_reference of the reference day: the next day rebuilds the reference
    from the stored scene (stored unshifted) and is processed in the same frame as an uninterrupted run."""
    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, reg = _local_aoi(scenes, tmp_path, path=imgs)
    grid = aoi_grid(aoi, RES)

    # An uninterrupted run, for comparison.
    ok = RunConfig(data_dir=tmp_path / "ok", registry=reg, evidence=False)
    want = [run_day(aoi, d, ok) for d in QUIET[:2]]
    assert [r.status for r in want] == ["processed", "processed"]
    ref_ok = Cube(ok.data_dir, aoi.id, "vhr", grid).reference()

    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    _crash_after_the_append(monkeypatch, aoi, QUIET[0], cfg)
    cube = Cube(cfg.data_dir, aoi.id, "vhr", grid)
    # As a run before the pending order left it (the reference saved after the append): no pending file.
    Path(cube.pending_reference_of(cube.scenes()[0]["scene_id"])).unlink()
    held = cube.scenes()
    assert len(held) == 1 and cube.reference() is None
    # What the rebuild relies on: the reference day was stored registered onto itself, unshifted.
    assert held[0]["reference_from"] == f"scene {held[0]['scene_id']}"
    assert held[0]["coreg"]["shift_row_px"] == 0.0 and held[0]["coreg"]["shift_col_px"] == 0.0, held[0]["coreg"]

    r = run_day(aoi, QUIET[1], cfg)
    assert r.status == "processed", r.summary()
    assert "rebuilt from scene" in r.note
    ref = cube.reference()
    assert ref is not None and list(ref["band"].values) == list(ref_ok["band"].values)
    a, b = np.asarray(ref.values), np.asarray(ref_ok.values)
    both = np.isfinite(a) & np.isfinite(b)
    assert both.mean() > 0.9 and np.nanmax(np.abs(a - b)[both]) <= 1e-4 + 1e-6  # the cube's quantisation
    assert r.shift_px == pytest.approx(want[1].shift_px, abs=0.02)
    assert r.metrics["railcars"] == want[1].metrics["railcars"]
    assert [e.get("reference_from") for e in cube.scenes()] == [held[0]["reference_from"]] * 2


def test_a_lost_reference_is_not_rebuilt_from_a_moved_scene(scenes, tmp_path, monkeypatch):
    """If the stored first day was moved (not the reference's own pixels) the day still fails with the
    delete-and-rerun message: a rebuilt reference would put later days in another frame."""
    import json

    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, reg = _local_aoi(scenes, tmp_path, path=imgs)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    _crash_after_the_append(monkeypatch, aoi, QUIET[0], cfg)
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    Path(cube.pending_reference_of(cube.scenes()[0]["scene_id"])).unlink()  # as a run before the pending order
    doc = json.loads(Path(cube.provenance_path).read_text())
    doc["scenes"][0]["coreg"]["shift_row_px"] = 0.4
    Path(cube.provenance_path).write_text(json.dumps(doc))
    r = run_day(aoi, QUIET[1], cfg)
    assert r.status == "failed" and "is gone" in r.note and "run the whole range again" in r.note, r.summary()
    assert "vhr_0.5m.zarr" in r.note and "vhr_2m.zarr" in r.note
    assert cube.reference() is None


def test_stac_load_errors_are_typed_and_show_no_signed_query(tmp_path):
    """Through the real odc-stac reader and the 127.0.0.1 STAC server: an asset gone at the item's
    href too, or one that is there but cannot be read, is SourceUnavailable (it may pass), whose
    messages keep the file but not the URL's signature; an asset key the items lack is
    SourceConfigError('assets')."""
    import json
    from dataclasses import replace as dc_replace
    from datetime import date

    pytest.importorskip("odc.stac")
    from stac_server import StacServer

    from changedet.sources.stac import StacSource

    grid = _grid()
    folder, item = _stac_files(tmp_path, grid)
    aoi = _stac_aoi(tmp_path, grid)
    with StacServer([item], folder, page_size=10) as srv:
        src = StacSource(url=srv.url)
        scene = src.search(aoi, date(2023, 8, 17), date(2023, 8, 17))[0]
        assert np.isfinite(src.load(scene, grid).values).any()
        secret = "sig=S3CRETtoken%2Fvalue"
        signed = dict(scene.properties)
        signed["items"] = json.loads(json.dumps(signed["items"]).replace("red.tif", f"gone_red.tif?se=2030&{secret}"))
        # An asset answering 404 is fetched again from the catalogue (session 17): the item's href
        # there (red.tif) loads; an asset gone there too may be replication lag: SourceUnavailable
        # (more in test_pipeline_s17).
        assert np.isfinite(src.load(dc_replace(scene, properties=signed), grid).values).any()
        item["assets"]["red"]["href"] = "also_gone_red.tif"  # the catalogue's href is gone too
        with pytest.raises(SourceUnavailable) as info:
            src.load(dc_replace(scene, properties=signed), grid)
        assert "missing (HTTP 404)" in str(info.value), str(info.value)
        assert "S3CRET" not in str(info.value) and secret not in str(info.value), str(info.value)
        # The library's error holds the signed URL: kept neither as cause nor as context.
        assert info.value.__cause__ is None and info.value.__context__ is None
        item["assets"]["red"]["href"] = "red.tif"
        # A 404 names no URL (review PIPE #8): an asset that is there but no raster makes GDAL quote
        # the whole signed URL ("... not recognized as being in a supported file format").
        (folder / "page.html").write_text("<html><body>Sign in</body></html>")
        signed["items"] = json.loads(json.dumps(scene.properties["items"]).replace(
            "red.tif", f"page.html?se=2030&{secret}"))
        with pytest.raises(SourceUnavailable) as info:
            src.load(dc_replace(scene, properties=signed), grid)
        text = str(info.value)
        assert "page.html?..." in text, text  # the library's message, with the URL it quotes redacted
        assert "S3CRET" not in text and "se=2030" not in text, text
        assert info.value.__cause__ is None and info.value.__suppress_context__
        lacking = dict(scene.properties)
        lacking["items"] = [{**i, "assets": {k: v for k, v in i["assets"].items() if k != "nir"}}
                            for i in lacking["items"]]
        # Other items of the search have 'nir': this scene's items are defective, not the setting.
        assert "nir" in lacking["collection_assets"]
        with pytest.raises(SceneUnreadable, match="lack the assets"):
            src.load(dc_replace(scene, properties=lacking), grid)
        # No item of the search has it: the 'assets' setting is wrong.
        lacking["collection_assets"] = [k for k in lacking["collection_assets"] if k != "nir"]
        with pytest.raises(SourceConfigError, match="lack the assets") as info:
            src.load(dc_replace(scene, properties=lacking), grid)
        assert info.value.option == "assets"


def _stac_files(tmp_path, grid):
    """A folder of one Sentinel-2-like item's COGs (blue, green, red, nir, scl) and its STAC item."""
    from test_sources_stac import _item, _write_cog

    folder = tmp_path / "files"
    folder.mkdir()
    files = {}
    for key in ("blue", "green", "red", "nir"):
        _write_cog(folder / f"{key}.tif", np.full(grid.shape, 1200, "uint16"), grid, "uint16")
        files[key] = f"{key}.tif"
    _write_cog(folder / "scl.tif", np.full(grid.shape, 4, "uint8"), grid, "uint8")
    files["scl"] = "scl.tif"
    return folder, _item("S2A_T_20230817", "2023-08-17T10:50:00Z", grid, files, cloud=1.0, offset=0.0)


def _grid():
    import pyproj
    from affine import Affine

    from changedet.grid import GridSpec

    return GridSpec(pyproj.CRS.from_epsg(32631), Affine(10, 0, 448000, 0, -10, 5412000), (64, 64))


def _stac_aoi(tmp_path, grid):
    from test_sources_stac import make_aoi

    x0, y0, x1, y1 = grid.bounds
    return make_aoi(tmp_path / "aois", "stacsite", (x0 + 100, y0 + 100, x1 - 100, y1 - 100), "EPSG:32631")


# -- review PIPE of 5f17f66 ---------------------------------------------------------------------

def _rgba_file(path, *, day: str | None = None, alpha_is_mask: bool = True, seed: int = 0, count: int = 4):
    """A 4-band 8-bit GeoTIFF without a photometric tag (GDAL labels band 4 alpha), 1024^2 at 0.5 m
    (``count=3``: its first three bands only, no alpha)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=count, dtype="uint8",
                       crs="EPSG:32652", transform=from_origin(500000, 4700000, 0.5, 0.5)) as ds:
        ds.write(rng.integers(1, 255, (3, 1024, 1024)).astype("uint8"), [1, 2, 3])
        band4 = (np.where(rng.random((1024, 1024)) < 0.5, 0, 255) if alpha_is_mask
                 else rng.integers(1, 200, (1024, 1024)))
        if count == 4:
            ds.write(band4.astype("uint8"), 4)
        if day:
            ds.update_tags(TIFFTAG_DATETIME=day)
    return path


class _World:
    from shapely.geometry import box

    polygon = box(-180, -90, 180, 90)
    id = "x"


def test_search_reads_no_pixel_and_a_cut_rgba_file_fails_only_its_load(tmp_path, monkeypatch):
    """Review PIPE #1: header() is metadata only, so an RGBA file cut in its pixels, in a folder without
    'pattern', leaves the search of another date alone and is found for its own date (its load says
    unreadable); bands: is still checked against the data bands in load()."""
    from datetime import date

    import changedet.io as cio
    from changedet.sources.local import LocalSource

    _rgba_file(tmp_path / "a.tif", day="2024:01:05 02:00:00")
    cut = _rgba_file(tmp_path / "b.tif", day="2024:02:07 02:00:00", seed=1)
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.6)])
    reads = []
    real = cio._is_mask_band
    monkeypatch.setattr(cio, "_is_mask_band", lambda src, i: reads.append(i) or real(src, i))
    src = LocalSource(path=str(tmp_path))
    assert [s.properties["path"] for s in src.search(_World(), date(2024, 1, 5), date(2024, 1, 5))] == \
        [str((tmp_path / "a.tif").resolve())]
    (own,) = src.search(_World(), date(2024, 2, 7), date(2024, 2, 7))
    assert reads == []  # no pixel read by either search
    grid = _rgba_grid()
    with pytest.raises(SceneUnreadable):
        src.load(own, grid)

    # The bands: check, now in load(): 3 names (the alpha is a mask) or 4 load, 2 names do not.
    (scene,) = src.search(_World(), date(2024, 1, 5), date(2024, 1, 5))
    for names in (["B02", "B03", "B04"], ["B02", "B03", "B04", "A"]):
        assert list(LocalSource(path=str(tmp_path), bands=names).load(scene, grid)["band"].values) == names[:3]
    with pytest.raises(SourceConfigError) as info:
        LocalSource(path=str(tmp_path), bands=["B02", "B03"]).load(scene, grid)
    assert info.value.option == "bands"
    # Band 4 labelled alpha but holding NIR is data: 3 names do not fit it.
    (tmp_path / "nir").mkdir()
    nir = _rgba_file(tmp_path / "nir" / "n.tif", day="2024:01:05 02:00:00", alpha_is_mask=False)
    (scene,) = LocalSource(path=str(nir.parent)).search(_World(), date(2024, 1, 5), date(2024, 1, 5))
    with pytest.raises(SourceConfigError, match="has 4 bands but 3 band names"):
        LocalSource(path=str(nir.parent), bands=["B02", "B03", "B04"]).load(scene, grid)


def _rgba_grid():
    import pyproj
    from affine import Affine

    from changedet.grid import GridSpec

    return GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=Affine(2, 0, 500100, 0, -2, 4699900), shape=(64, 64))


def test_a_passing_gdal_read_error_of_an_intact_file_is_read_again(tmp_path, monkeypatch, caplog):
    """Review PIPE #3: libtiff's short-read error once on an intact file (a share's passing EIO): the
    read-through succeeds, a second GDAL read too, and the scene loads; a file cut on disk fails both
    reads and stays SceneUnreadable."""
    from datetime import date

    import changedet.io as cio
    from changedet.errors import RasterError
    from changedet.sources.local import LocalSource

    _rgba_file(tmp_path / "site_20240105.tif", count=3)
    cut = _rgba_file(tmp_path / "site_20240106.tif", seed=2, count=3)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    src = LocalSource(path=str(tmp_path), pattern=r"(?P<date>\d{8})")
    (good,) = src.search(_World(), date(2024, 1, 5), date(2024, 1, 5))
    (bad,) = src.search(_World(), date(2024, 1, 6), date(2024, 1, 6))
    with pytest.raises(RasterError) as real_err:
        cio.read_raster(cut)
    real, calls = cio.read_raster, []

    def flaky(path, **kw):  # the share fails the first read only, as a cut file's error
        calls.append(path)
        if len(calls) == 1:
            raise real_err.value
        return real(path, **kw)

    monkeypatch.setattr(cio, "read_raster", flaky)
    with caplog.at_level(logging.WARNING):
        out = src.load(good, _rgba_grid())
    assert len(calls) == 2 and np.isfinite(out.values).any()
    assert "read it the second time" in caplog.text
    calls.clear()
    with pytest.raises(SceneUnreadable):
        src.load(bad, _rgba_grid())
    assert len(calls) == 2  # read twice before it is called the file's own


def test_a_crash_after_the_append_leaves_the_exact_reference(scenes, tmp_path, monkeypatch):
    """Review PIPE #2, first fix: the reference is written pending before its day is stored and promoted
    after; a crash in between leaves it for the next run, which puts the exact reference in place."""
    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, reg = _local_aoi(scenes, tmp_path, path=imgs)
    grid = aoi_grid(aoi, RES)
    ok = RunConfig(data_dir=tmp_path / "ok", registry=reg, evidence=False)
    want = [run_day(aoi, d, ok) for d in QUIET[:2]]
    ok_cube = Cube(ok.data_dir, aoi.id, "vhr", grid)
    assert not list(Path(ok_cube.reference_path).parent.glob("*.pending*"))  # promoted

    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    _crash_after_the_append(monkeypatch, aoi, QUIET[0], cfg)
    cube = Cube(cfg.data_dir, aoi.id, "vhr", grid)
    assert len(cube.scenes()) == 1 and cube.reference() is None
    r = run_day(aoi, QUIET[1], cfg)
    assert r.status == "processed" and "left pending by an interrupted run" in r.note, r.summary()
    a, b = np.asarray(cube.reference().values), np.asarray(ok_cube.reference().values)
    assert np.array_equal(a, b, equal_nan=True)  # the reference itself, not a rebuild
    assert r.shift_px == want[1].shift_px and r.metrics == want[1].metrics

    # A crash before the append stores nothing: its pending file is no reference of anything.
    cfg2 = RunConfig(data_dir=tmp_path / "data2", registry=reg, evidence=False)
    with monkeypatch.context() as m:
        m.setattr(Cube, "append", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            run_day(aoi, QUIET[0], cfg2)
    c2 = Cube(cfg2.data_dir, aoi.id, "vhr", grid)
    assert c2.scenes() == [] and c2.reference() is None
    assert [run_day(aoi, d, cfg2).status for d in QUIET[:2]] == ["processed", "processed"]
    assert np.array_equal(np.asarray(c2.reference().values), b, equal_nan=True)


def _old_cube(tmp_path, cloud_share: float, *, res: float = 0.5, n: int = 400, nodata_rows: int = 0):
    """A cube as a run before the pending order left it after a crash: its reference day stored
    unshifted (CLM buffered by 30 m, as run_day stores it), no reference, no pending file."""
    from datetime import datetime as dt

    import pyproj
    from affine import Affine
    from scipy import ndimage
    from shapely.geometry import box

    from changedet.grid import GridSpec
    from changedet.sources.base import SceneRecord

    grid = GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=Affine(res, 0, 500000, 0, -res, 4000000), shape=(n, n))
    rng = np.random.default_rng(0)
    cloud = np.zeros((n, n), bool)
    while cloud.mean() < cloud_share:  # scattered 3 m puffs
        r, c = rng.integers(0, n - 6, 2)
        cloud[r:r + 6, c:c + 6] = True
    buffered = ndimage.binary_dilation(cloud, np.ones((3, 3), bool), iterations=max(3, round(30 / res)))
    img = rng.uniform(0.05, 0.3, (3, n, n)).astype("float32")
    img[:, :nodata_rows] = np.nan
    data = grid.attach(np.concatenate([img, buffered[None].astype("float32")]), bands=["B02", "B03", "B04", "CLM"])
    sc = SceneRecord(id="ref-day", source="local", aoi_id="a", sensor="vhr",
                     time=dt(2024, 1, 5, 2, tzinfo=timezone.utc), platform="p", cloud_cover=100 * cloud_share, footprint=box(0, 0, 1, 1), resolution_m=res)
    cube = Cube(tmp_path, "a", "vhr", grid)
    cube.append(sc, data, extra={"reference_from": "scene ref-day",
                                 "coreg": {"shift_row_px": 0.0, "shift_col_px": 0.0}})
    return cube, img, np.ones((n, n), bool)


def test_a_rebuilt_reference_of_a_cloudy_day_keeps_its_pixels(tmp_path):
    """Review PIPE #2: the reference day had 4 % cloud in small puffs; its stored CLM is buffered by 30 m
    (nearly the whole site at 0.5 m). The rebuild masks only where the stored bands have no data."""
    import types

    import changedet.pipeline as P

    cube, img, site = _old_cube(tmp_path, 0.04)
    result = P.DayResult("a", QUIET[1], "no_scene")
    ref = P._rebuilt_reference(cube, types.SimpleNamespace(options={}, name="local"), None, site, result)
    assert ref is not None and "rebuilt from scene ref-day" in result.note
    assert np.isfinite(np.asarray(ref.values)).all()
    assert np.nanmax(np.abs(np.asarray(ref.values) - img)) <= 1e-4 + 1e-6  # the cube's quantisation


def test_a_rebuilt_reference_seeing_too_little_of_the_site_is_not_saved(tmp_path):
    """Review PIPE #2: a stored reference day with data over less than REFERENCE_MIN_OBSERVED of the site
    is no reference: nothing is saved and the day fails with the restore-or-delete message."""
    import types

    import changedet.pipeline as P

    cube, _, site = _old_cube(tmp_path, 0.0, n=100, nodata_rows=10)  # 90 % observed
    result = P.DayResult("a", QUIET[1], "no_scene")
    spec = types.SimpleNamespace(options={}, name="local")
    assert P._rebuilt_reference(cube, spec, None, site, result) is None
    assert cube.reference() is None and "observes only 90% of the site" in result.note
    data = cube.read().isel(time=0).drop_vars(["time", "scene_id"])
    assert P._new_reference(cube, data, 0.0, spec, None, site, result, 2.0) is None
    assert result.status == "failed" and "is gone" in result.note and "observes only 90%" in result.note


def test_a_missing_reference_file_during_the_rebuild_fails_the_day(tmp_path):
    """Review PIPE #6: the cube's reference and the entry's reference: file are both gone: the day is
    `failed` with the reason and the restore-or-delete message, nothing raised out of the rebuild."""
    import types

    import changedet.pipeline as P

    cube, img, site = _old_cube(tmp_path, 0.0, n=40)
    doc = cube._read_provenance()
    gone = tmp_path / "basemaps" / "site.tif"
    gone.parent.mkdir()  # the folder is there, the file not (a missing folder may be a share not mounted)
    doc["scenes"][0]["reference_from"] = f"file {gone}"
    cube._write_provenance(doc)
    spec = types.SimpleNamespace(options={"reference": str(gone)}, name="local")
    like = cube.read().isel(time=0).sel(band=["B02", "B03", "B04"])
    result = P.DayResult("a", QUIET[1], "no_scene")
    assert P._rebuilt_reference(cube, spec, like, site, result) is None
    assert "does not exist" in result.note
    data = cube.read().isel(time=0).drop_vars(["time", "scene_id"])
    assert P._new_reference(cube, data, 0.0, spec, None, site, result, 2.0) is None
    assert result.status == "failed" and "is gone" in result.note and "does not exist" in result.note


def test_a_stored_scene_supersedes_only_records_of_its_own_acquisition(tmp_path):
    """Review PIPE #5: another tile of the same day (same source type and time, another file) and another
    day's file at the same path keep their records; the replaced file (same path, same time) and a
    record of the same entry and time go."""
    import pyproj
    from affine import Affine
    from shapely.geometry import box

    from changedet.grid import GridSpec
    from changedet.sources.base import SceneRecord

    grid = GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=Affine(1, 0, 500000, 0, -1, 4000008), shape=(8, 8))
    data = grid.attach(np.full((2, 8, 8), 0.1, "float32"), bands=["B04", "CLM"])
    d5, d6 = datetime(2024, 1, 5, tzinfo=timezone.utc), datetime(2024, 1, 6, 2, tzinfo=timezone.utc)

    def rec(sid, t, path):
        return SceneRecord(id=sid, source="local", aoi_id="a", sensor="vhr", time=t, platform="p", cloud_cover=0.0,
                           footprint=box(0, 0, 1, 1), resolution_m=1.0, properties={"path": path})

    c = Cube(tmp_path / "a", "a", "vhr", grid)
    c.record_skipped(rec("t1", d5, "/imgs/site_20240105_T1.tif"), "83% of the site under cloud")  # fetch: no path
    c.record_skipped(rec("t1b", d5, "/imgs/site_20240105_T1.tif"), "cloudy", entry="local vhr 1m path=/other")
    c.record_skipped(rec("t2-old", d5, "/imgs/site_20240105_T2.tif"), "unreadable", permanent=True,
                     path="/imgs/site_20240105_T2.tif", entry="local vhr 1m path=/imgs")
    c.record_skipped(rec("t2-cloudy", d5, "/imgs/site_20240105_T2.tif"), "cloudy", entry="local vhr 1m path=/imgs")
    c.append(rec("t2-new", d5, "/imgs/site_20240105_T2.tif"), data, extra={"entry": "local vhr 1m path=/imgs"})
    assert [s["scene_id"] for s in c._read_provenance()["skipped"]] == ["t1", "t1b"]

    c = Cube(tmp_path / "b", "a", "vhr", grid)
    c.record_skipped(rec("latest-111", datetime(2024, 1, 5, 2, tzinfo=timezone.utc), "/drop/latest.tif"),
                     "cannot be loaded", permanent=True, path="/drop/latest.tif")
    c.append(rec("latest-222", d6, "/drop/latest.tif"), data)
    assert [s["scene_id"] for s in c._read_provenance()["skipped"]] == ["latest-111"]
    assert [s["scene_id"] for s in c.skipped()] == ["latest-111"]


def test_live_skipped_is_one_lookup_per_record():
    """Review PIPE #7: hiding superseded records of a long series costs set lookups, not pairs of parsed
    times (800 stored x 1000 skipped took 5 s a call)."""
    import time as _time
    from datetime import timedelta

    from changedet.cube import _live_skipped

    t0 = datetime(2020, 1, 1, 2, tzinfo=timezone.utc)
    scenes = [{"scene_id": f"s{i}", "time": (t0 + timedelta(days=i)).isoformat(), "entry": "e",
               "path": f"/p/{i}.tif"} for i in range(800)]
    skipped = [{"scene_id": f"k{i}", "time": scenes[i % 800]["time"], "entry": "e" if i % 2 else "other"}
               for i in range(1000)]
    start = _time.perf_counter()
    live = _live_skipped({"scenes": scenes, "skipped": skipped})
    took = _time.perf_counter() - start
    assert {s["scene_id"] for s in live} == {f"k{i}" for i in range(0, 1000, 2)}
    assert took < 1.0, took


def test_a_broken_header_is_not_read_through_on_every_search(tmp_path, monkeypatch):
    """Review PIPE #4: a file whose header GDAL cannot read is read through (start and end only) once for
    the search that must type it, remembered by (path, size, mtime), and never read through for the
    searches of other dates (with a pattern its header is not even opened)."""
    from datetime import date

    import changedet.sources.local as local_mod
    from changedet.sources.local import LocalSource

    _rgba_file(tmp_path / "site_20240105.tif", count=3)
    big = tmp_path / "site_20240106.tif"
    with open(big, "wb") as fh:  # a corrupt header on a large file
        fh.write(b"II*\x00" + b"\xff" * 4096)
        fh.truncate(40 << 20)
    opened = []
    real_open = open

    def counting_open(file, mode="r", *a, **k):
        if str(file) == str(big) and "b" in mode:
            opened.append(file)
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(local_mod, "open", counting_open, raising=False)
    monkeypatch.setattr(local_mod, "_BROKEN_HEADERS", {})
    read = []
    real_read = local_mod._read_failure
    monkeypatch.setattr(local_mod, "_read_failure",
                        lambda path, *a, **k: read.append((path, k.get("through"))) or real_read(path, *a, **k))
    for pattern in (r"(?P<date>\d{8})", None):
        for _ in range(3):  # daily runs build a new source each day
            src = LocalSource(path=str(tmp_path), pattern=pattern)
            with pytest.raises(SceneUnreadable):
                src.search(_World(), date(2024, 1, 6), date(2024, 1, 6))
    # Typed once (each of the two GDAL failures classified, its read-through bounded to the file's
    # ends: review PIPE2 #2), then remembered.
    assert read == [(big, local_mod._HEADER_READ_THROUGH)] * 2, read
    assert len(opened) == 2
    read.clear()
    for pattern in (r"(?P<date>\d{8})", None):
        found = LocalSource(path=str(tmp_path), pattern=pattern).search(_World(), date(2024, 1, 5), date(2024, 1, 5))
        assert [s.properties["path"] for s in found] == [str((tmp_path / "site_20240105.tif").resolve())]
    assert read == [] and len(opened) == 2
    # A replaced file (another size or mtime) is looked at again.
    big.write_bytes(big.read_bytes()[: 30 << 20])
    with pytest.raises(SceneUnreadable):
        LocalSource(path=str(tmp_path), pattern=None).search(_World(), date(2024, 1, 6), date(2024, 1, 6))
    assert len(read) == 2


# -- review PIPE2 (on d889378) ------------------------------------------------------------------

def _tiny_cube(root, grid=None):
    import pyproj
    from affine import Affine

    from changedet.grid import GridSpec

    grid = grid or GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=Affine(1, 0, 500000, 0, -1, 4000000),
                            shape=(32, 32))
    return grid, Cube(root, "a", "vhr", grid)


def _tiny_scene(sid, day):
    from shapely.geometry import box

    from changedet.sources.base import SceneRecord

    return SceneRecord(id=sid, source="local", aoi_id="a", sensor="vhr",
                       time=datetime(2024, 1, day, 2, tzinfo=timezone.utc), platform="p", cloud_cover=0,
                       footprint=box(0, 0, 1, 1), resolution_m=1)


def test_two_runs_of_a_new_aoi_keep_one_frame(tmp_path):
    """Review PIPE2 #1: two runs that both found no reference each write the pending file of their own
    scene; the first to store promotes its own, the second is refused (nothing stored) instead of
    storing a day in its own frame, and its promote is refused too; a run whose append failed leaves
    its file unpromoted, never promoted by another run."""
    from changedet.errors import CubeError

    grid, a = _tiny_cube(tmp_path / "b")
    b = Cube(tmp_path / "b", "a", "vhr", grid)  # a second process's handle
    img = lambda v: grid.attach(np.full((3, 32, 32), v, "float32"), bands=["B02", "B03", "B04"])  # noqa: E731
    extra = lambda sid: {"reference_from": f"scene {sid}", "coreg": {"shift_row_px": 0, "shift_col_px": 0}}  # noqa

    # (b) both store, interleaved.
    a.set_reference(img(0.1), pending="D1")
    b.set_reference(img(0.2), pending="D2")
    assert a.append(_tiny_scene("D1", 5), img(0.1), extra=extra("D1"), first=True)
    assert a.promote_reference("D1")
    with pytest.raises(CubeError, match="another run stored scene D1.*nothing was stored"):
        b.append(_tiny_scene("D2", 9), img(0.2), extra=extra("D2"), first=True)
    assert not b.promote_reference("D2")
    assert [e["scene_id"] for e in a.scenes()] == ["D1"]
    assert float(np.nanmean(a.reference().values)) == pytest.approx(0.1, abs=1e-4)
    assert not a.promote_reference("D1")  # done: nothing pending any more

    # (a) A writes its file after B, then A's append fails (CubeLocked, killed): B promotes its own.
    grid, c = _tiny_cube(tmp_path / "c")
    c.set_reference(img(0.2), pending="D2")
    c.set_reference(img(0.1), pending="D1")
    assert c.append(_tiny_scene("D2", 9), img(0.2), extra=extra("D2"), first=True)
    assert not c.promote_reference("D1")  # not the stored first scene's
    assert c.promote_reference("D2")
    assert float(np.nanmean(c.reference().values)) == pytest.approx(0.2, abs=1e-4)


def test_a_rebuild_promotes_only_the_first_stored_scenes_pending_file(tmp_path):
    """Review PIPE2 #1: _rebuilt_reference puts in place the pending file of the cube's first stored
    scene only; another scene's (a run that never stored its day) is another frame and stays out."""
    from changedet.pipeline import DayResult, _rebuilt_reference

    grid, cube = _tiny_cube(tmp_path)
    img = lambda v: grid.attach(np.full((3, 32, 32), v, "float32"), bands=["B02", "B03", "B04"])  # noqa: E731
    # Stored moved (shift 0.4 px), so it cannot be rebuilt from pixels either.
    cube.append(_tiny_scene("D1", 5), img(0.1), extra={"reference_from": "scene D1",
                                                         "coreg": {"shift_row_px": 0.4, "shift_col_px": 0}})
    cube.set_reference(img(0.3), pending="D7")  # a run of day 7 that was refused or killed
    site = np.ones((32, 32), bool)
    result = DayResult(aoi_id="a", day=datetime(2024, 1, 9).date(), status="failed")
    assert _rebuilt_reference(cube, None, img(0.0), site, result) is None
    assert cube.reference() is None and Path(cube.pending_reference_of("D7")).exists()

    cube.set_reference(img(0.1), pending="D1")  # the file of the run that stored D1
    got = _rebuilt_reference(cube, None, img(0.0), site, result)
    assert got is not None and float(np.nanmean(got.values)) == pytest.approx(0.1, abs=1e-4)
    assert "left pending by an interrupted run" in result.note


def test_run_day_checks_that_its_reference_was_put_in_place(scenes, tmp_path, monkeypatch):
    """Review PIPE2 #1: a promote that did not happen is not reported as 'became the registration
    reference'; the day says so and the next run puts the reference in place."""
    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, reg = _local_aoi(scenes, tmp_path, path=imgs)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    real = Cube.promote_reference
    with monkeypatch.context() as m:
        m.setattr(Cube, "promote_reference", lambda self, sid: False)
        r = run_day(aoi, QUIET[0], cfg)
    assert r.status == "processed", r.summary()
    assert "became the registration reference" not in r.note and "could not be put in place" in r.note, r.note
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    assert cube.reference() is None
    assert Cube.promote_reference is real
    r2 = run_day(aoi, QUIET[1], cfg)
    assert r2.status == "processed" and "left pending by an interrupted run" in r2.note, r2.summary()


def test_a_second_read_that_meets_the_file_system_is_not_the_files_fault(tmp_path, monkeypatch):
    """Review PIPE2 #2: the second GDAL failure is classified on its own: an EIO there is
    SourceUnavailable (may pass), and nothing is cached, so the next search reads the file again."""
    from datetime import date

    import rasterio

    import changedet.sources.local as local_mod
    from changedet.sources.local import LocalSource, _read_or_type

    f = tmp_path / "site_20240105.tif"
    _rgba_file(f, count=3)
    n = {"k": 0}

    def rd():
        n["k"] += 1
        if n["k"] == 1:
            raise rasterio.errors.RasterioIOError("Read failed. See previous exception for details.")
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with pytest.raises(SourceUnavailable):
        _read_or_type(f, rd, str)
    assert n["k"] == 2

    monkeypatch.setattr(local_mod, "_BROKEN_HEADERS", {})
    real_open = rasterio.open
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise rasterio.errors.RasterioIOError("Read failed. See previous exception for details.")
        if calls["n"] == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(f))
        return real_open(*a, **k)

    monkeypatch.setattr(rasterio, "open", flaky)
    with pytest.raises(SourceUnavailable):
        LocalSource(path=str(tmp_path), pattern=r"(?P<date>\d{8})").header(f)
    assert local_mod._BROKEN_HEADERS == {}
    found = LocalSource(path=str(tmp_path), pattern=r"(?P<date>\d{8})").search(_World(), date(2024, 1, 5),
                                                                                date(2024, 1, 5))
    assert len(found) == 1


def test_a_restored_header_is_read_again_and_verdicts_expire(tmp_path, monkeypatch):
    """Review PIPE2 #3: a damaged file restored with its size and mtime (cp -p, rsync -a) is read again
    (the cache key holds inode and ctime), and a cached verdict expires after BROKEN_HEADER_TTL_S."""
    import changedet.sources.local as local_mod
    from changedet.sources.local import LocalSource

    monkeypatch.setattr(local_mod, "_BROKEN_HEADERS", {})
    f = tmp_path / "site_20240105.tif"
    _rgba_file(f, count=3)
    good = f.read_bytes()
    st = f.stat()
    damaged = bytearray(good)
    damaged[0:8] = b"\0" * 8
    f.write_bytes(bytes(damaged))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    src = lambda: LocalSource(path=str(tmp_path), pattern=r"(?P<date>\d{8})")  # noqa: E731
    with pytest.raises(SceneUnreadable):
        src().header(f)
    import time as _t

    _t.sleep(0.05)  # past the file system's timestamp tick, as any real restore is
    f.write_bytes(good)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert src().header(f)["count"] == 3

    # Expiry: the same unchanged broken file is looked at again once its verdict is old.
    f.write_bytes(bytes(damaged))
    with pytest.raises(SceneUnreadable):
        src().header(f)
    read = []
    real_read = local_mod._read_failure
    monkeypatch.setattr(local_mod, "_read_failure", lambda *a, **k: read.append(1) or real_read(*a, **k))
    with pytest.raises(SceneUnreadable):
        src().header(f)
    assert read == []  # cached
    now = local_mod._time.monotonic()
    monkeypatch.setattr(local_mod._time, "monotonic", lambda: now + local_mod.BROKEN_HEADER_TTL_S + 1)
    with pytest.raises(SceneUnreadable):
        src().header(f)
    assert read, "an expired verdict was not checked again"


def test_an_86ae115_cube_hides_the_record_of_its_replaced_file(tmp_path):
    """Review PIPE2 #4: a cube in 86ae115's format (provenance JSON written here as that code wrote it:
    stored entries without path or format, records without path or entry) hides the permanent record of
    a replaced file by source and time, as 5f17f66 did; a record written after the store stays."""
    import json

    grid, cube = _tiny_cube(tmp_path)
    t1, t2 = "2023-08-24T02:00:00+00:00", "2023-08-31T02:00:00+00:00"
    rec = lambda sid, t, at, reason: {"scene_id": sid, "time": t, "source": "local", "platform": "p",  # noqa: E731
                                      "cloud_cover": 0.0, "reason": reason, "recorded_at": at, "permanent": True}
    doc = {"aoi_id": "a", "sensor": "vhr", "bands": ["B04", "CLM"], "scenes": [
        {"index": 0, "scene_id": "local-site_20230824-new", "time": t1, "source": "local", "platform": "p",
         "cloud_cover": 0.0, "sha256": "0" * 64, "stored_at": "2023-09-02T00:00:00+00:00",
         "reference_from": "scene local-site_20230824-new", "entry": "local vhr 1m path=/imgs"}],
        "skipped": [rec("local-site_20230824-old", t1, "2023-09-01T00:00:00+00:00", "cannot be loaded (corrupt): x"),
                    rec("tile2", t1, "2023-09-03T00:00:00+00:00", "83% of the site under cloud"),
                    rec("cut-31", t2, "2023-09-01T00:00:00+00:00", "cannot be loaded: x")]}
    Path(cube.provenance_path).parent.mkdir(parents=True, exist_ok=True)
    Path(cube.provenance_path).write_text(json.dumps(doc))
    assert [s["scene_id"] for s in cube.skipped()] == ["tile2", "cut-31"]
    assert [s["scene_id"] for s in cube.info()["skipped"]] == ["tile2", "cut-31"]
    # The replaced file stored by the new code (its entry carries "format" and a path) hides the
    # old record all the same (review PIPE3 #3); records of this code are matched by their own
    # path, entry or id only, so another tile's new record of that day stays listed.
    from changedet.cube import _live_skipped

    new = dict(doc["scenes"][0], format=2, path="/imgs/site_20230824.tif")
    assert [s["scene_id"] for s in _live_skipped({"scenes": [new], "skipped": doc["skipped"]})] == [
        "tile2", "cut-31"]
    tile = dict(rec("tile3", t1, "2023-09-01T00:00:00+00:00", "cloudy"), format=2)
    assert [s["scene_id"] for s in _live_skipped({"scenes": [new], "skipped": [tile]})] == ["tile3"]


def test_a_remote_cube_promotes_only_its_first_scenes_pending_reference():
    """Review PIPE2 #1 on an fsspec store (memory://): per-scene pending files, promoted under the
    cube's lease only for the first stored scene, and discarded on request."""
    import uuid

    import pyproj
    from affine import Affine

    from changedet.grid import GridSpec

    grid = GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=Affine(1, 0, 500000, 0, -1, 4000000), shape=(16, 16))
    cube = Cube(f"memory://cubes-{uuid.uuid4().hex}", "a", "vhr", grid)
    img = lambda v: grid.attach(np.full((3, 16, 16), v, "float32"), bands=["B02", "B03", "B04"])  # noqa: E731
    cube.set_reference(img(0.1), pending="D1")
    cube.set_reference(img(0.2), pending="D2")
    assert not cube.promote_reference("D1")  # nothing stored yet
    cube.append(_tiny_scene("D1", 5), img(0.1), extra={"reference_from": "scene D1"}, first=True)
    assert not cube.promote_reference("D2")
    assert cube.promote_reference("D1") and not cube.promote_reference("D1")
    assert float(np.nanmean(cube.reference().values)) == pytest.approx(0.1, abs=1e-4)
    cube.discard_pending_reference("D2")
    assert not cube._fs.exists(cube.pending_reference_of("D2"))


# -- review PIPE3 (5b7e531) ------------------------------------------------------------------

def test_a_run_that_loses_the_race_for_the_first_day_leaves_no_step_in_the_change_cube(scenes, tmp_path, monkeypatch):
    """At factor > 1 the change cube took the losing run's day in its own frame before the
    aligned cube refused it, and a run of the day again could not replace it."""
    from changedet.cube import CubeRaced

    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    aoi, reg = _local_aoi(scenes, tmp_path, path=imgs)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    assert run_day(aoi, QUIET[0], cfg).status == "processed"  # run A: the reference day
    fine = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    coarse = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, 2.0))
    real_scenes = Cube.scenes
    with monkeypatch.context() as m:
        # Run B decided "no reference, empty cube" before A stored (the race).
        m.setattr(Cube, "reference", lambda self: None)
        m.setattr(Cube, "scenes", lambda self: [] if self.path.name.startswith("vhr_0.5m") else real_scenes(self))
        with pytest.raises(CubeRaced):
            run_day(aoi, QUIET[1], cfg)
    assert len(fine.scenes()) == 1 and len(coarse.scenes()) == 1  # nothing of B's day anywhere
    again = run_day(aoi, QUIET[1], cfg)
    assert again.status == "processed", again.summary()
    assert len(fine.scenes()) == 2 and len(coarse.scenes()) == 2


def test_the_refused_first_day_is_retried_by_the_flows():
    from changedet.cube import CubeError, CubeRaced
    from flows.tasks import TRANSIENT_ERRORS

    assert issubclass(CubeRaced, CubeError) and issubclass(CubeRaced, TRANSIENT_ERRORS)


def test_an_old_record_is_superseded_by_a_scene_the_new_code_stores(tmp_path):
    """An 86ae115 record (no path, no entry) of a file replaced after the upgrade: the new
    code stores the replacement with a path and the format marker; the record must go."""
    import json

    import pyproj
    from affine import Affine
    from shapely.geometry import box

    from changedet.grid import GridSpec
    from changedet.sources.base import SceneRecord

    grid = GridSpec(crs=pyproj.CRS.from_epsg(32652), transform=Affine(1, 0, 500000, 0, -1, 4000000), shape=(16, 16))
    cube = Cube(tmp_path, "a", "vhr", grid)

    def img(v):
        return grid.attach(np.full((3, 16, 16), v, "float32"), bands=["B02", "B03", "B04"])

    t0, t1 = datetime(2023, 8, 17, 2, tzinfo=timezone.utc), datetime(2023, 8, 24, 2, tzinfo=timezone.utc)
    cube.append(SceneRecord(id="local-site_20230817-a", source="local", aoi_id="a", sensor="vhr", time=t0,
                            platform="p", cloud_cover=0, footprint=box(0, 0, 1, 1), resolution_m=1),
                img(0.1), extra={"reference_from": "scene x"})
    doc = json.loads(Path(cube.provenance_path).read_text())
    for e in doc["scenes"]:  # as 86ae115 wrote entries: no path, no format
        e.pop("path", None)
        e.pop("format", None)
    doc["skipped"] = [{"scene_id": "local-site_20230824-old", "time": t1.isoformat(), "source": "local",
                       "platform": "p", "cloud_cover": 0.0, "reason": "cannot be loaded (corrupt): x",
                       "recorded_at": "2023-09-01T00:00:00+00:00", "permanent": True}]
    Path(cube.provenance_path).write_text(json.dumps(doc))
    assert [s["scene_id"] for s in cube.skipped()] == ["local-site_20230824-old"]
    new = SceneRecord(id="local-site_20230824-new", source="local", aoi_id="a", sensor="vhr", time=t1, platform="p",
                      cloud_cover=0, footprint=box(0, 0, 1, 1), resolution_m=1,
                      properties={"path": "/imgs/site_20230824.tif"})
    assert cube.append(new, img(0.2), extra={"reference_from": "scene x", "entry": "local vhr 1m path=/imgs"})
    assert cube.skipped() == [] and cube.info()["skipped"] == []


def test_a_cloud_record_of_another_tile_written_before_the_format_marker_is_kept(tmp_path):
    """Review FINAL #1: `changedet fetch` records name no file, and before 905b330 none carried a
    format marker: another scene of their source and time (the next tile of a datatake) must not
    delete them; only an 86ae115-era permanent record of a local file is matched by time."""
    import json

    grid, cube = _tiny_cube(tmp_path)
    t1 = "2023-08-24T02:00:00+00:00"
    doc = {"aoi_id": "a", "sensor": "vhr", "bands": ["B04", "CLM"], "scenes": [],
           "skipped": [{"scene_id": "S2A_52SDG_20230824_0_L2A", "time": t1, "source": "sentinelhub",
                        "platform": "sentinel-2a", "cloud_cover": 0.8, "reason": "83% of the site under cloud",
                        "recorded_at": "2023-09-01T00:00:00+00:00"}]}
    Path(cube.provenance_path).parent.mkdir(parents=True, exist_ok=True)
    Path(cube.provenance_path).write_text(json.dumps(doc))
    from changedet.cube import _live_skipped

    stored = {"index": 0, "scene_id": "S2A_52SDH_20230824_0_L2A", "time": t1, "source": "sentinelhub",
              "stored_at": "2023-09-02T00:00:00+00:00", "format": 2}
    assert [s["scene_id"] for s in _live_skipped({"scenes": [stored], "skipped": doc["skipped"]})] == [
        "S2A_52SDG_20230824_0_L2A"]
