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
import shutil
import sys
from dataclasses import replace
from datetime import datetime, time, timezone
from pathlib import Path

import numpy as np
import pytest

from changedet.cube import Cube
from changedet.errors import SceneUnreadable, SourceConfigError, SourceError, SourceUnavailable
from changedet.grid import aoi_grid
from changedet.pipeline import RunConfig, run_day

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline_sources import (  # noqa: E402
    BYOC, CLIENT, QUIET, RES, SECRET, _aoi_with, _copy_imgs, _local_aoi, scenes)

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
    from sh_server import FakeSentinelHub, Scene

    if shutil.which("node") is None:
        pytest.skip("Node.js is needed by the fake Sentinel Hub (it runs the evalscripts)")
    server = FakeSentinelHub(client_id=CLIENT, client_secret=SECRET, strict_collections=True)
    d = QUIET[0]
    sim = scenes["rendered"][d]
    server.add_scene(Scene(id=f"vhr-{d:%Y%m%d}", collection=f"byoc-{BYOC}",
                           time=datetime.combine(d, time(2, 0), tzinfo=timezone.utc), platform="sim-vhr",
                           crs=sim.grid.crs.to_string(), transform=sim.grid.transform,
                           bands={b: sim.data[i].astype("float32") for i, b in enumerate(sim.bands)},
                           cloud_cover=0.0, gsd=RES))
    from sentinelhub import SentinelHubDownloadClient

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT)
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    SentinelHubDownloadClient.clear_cache()
    with server:
        monkeypatch.setenv("SH_BASE_URL", server.url)
        monkeypatch.setenv("SH_TOKEN_URL", server.token_url)
        yield server
    SentinelHubDownloadClient.clear_cache()


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

    def rec(sid, t):
        return SceneRecord(id=sid, source="local", aoi_id="a", sensor="vhr", time=t, platform="p", cloud_cover=0.0,
                           footprint=box(0, 0, 1, 1), resolution_m=1.0)

    data = grid.attach(np.full((2, 8, 8), 0.1, "float32"), bands=["B04", "CLM"])
    cube.append(rec("new-24", t1), data)
    # As the old code left it: a permanent record of the replaced file, written after the store.
    cube.record_skipped(rec("old-24", t1), "cannot be loaded (the file is there but cannot be read): ...",
                        permanent=True)
    cube.record_skipped(rec("cut-31", t2), "cannot be loaded: ...", permanent=True)
    assert [s["scene_id"] for s in cube._read_provenance()["skipped"]] == ["old-24", "cut-31"]
    assert [s["scene_id"] for s in cube.skipped()] == ["cut-31"]
    assert [s["scene_id"] for s in cube.info()["skipped"]] == ["cut-31"]


# -- 3. a crash between storing the reference day and saving its reference --------------------

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
    real = Cube.set_reference

    def crash(self, data):
        raise KeyboardInterrupt("killed between cube.append and set_reference")

    monkeypatch.setattr(Cube, "set_reference", crash)
    with pytest.raises(KeyboardInterrupt):
        run_day(aoi, QUIET[0], cfg)
    monkeypatch.setattr(Cube, "set_reference", real)
    cube = Cube(cfg.data_dir, aoi.id, "vhr", grid)
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
    monkeypatch.setattr(Cube, "set_reference", lambda self, data: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_day(aoi, QUIET[0], cfg)
    monkeypatch.undo()
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    doc = json.loads(Path(cube.provenance_path).read_text())
    doc["scenes"][0]["coreg"]["shift_row_px"] = 0.4
    Path(cube.provenance_path).write_text(json.dumps(doc))
    r = run_day(aoi, QUIET[1], cfg)
    assert r.status == "failed" and "is gone" in r.note and "run the whole range again" in r.note, r.summary()
    assert "vhr_0.5m.zarr" in r.note and "vhr_2m.zarr" in r.note
    assert cube.reference() is None


def test_stac_load_errors_are_typed_and_show_no_signed_query(tmp_path):
    """Through the real odc-stac reader and the 127.0.0.1 STAC server: an asset that cannot be read is
    SourceUnavailable whose message keeps the file but not the URL's signature; an asset key the
    items lack is SourceConfigError('assets')."""
    import json
    from dataclasses import replace as dc_replace
    from datetime import date

    pytest.importorskip("odc.stac")
    from stac_server import StacServer
    from test_sources_stac import _item, _write_cog

    from changedet.sources.stac import StacSource

    grid = _grid()
    folder = tmp_path / "files"
    folder.mkdir()
    files = {}
    for key in ("blue", "green", "red", "nir"):
        _write_cog(folder / f"{key}.tif", np.full(grid.shape, 1200, "uint16"), grid, "uint16")
        files[key] = f"{key}.tif"
    _write_cog(folder / "scl.tif", np.full(grid.shape, 4, "uint8"), grid, "uint8")
    files["scl"] = "scl.tif"
    item = _item("S2A_T_20230817", "2023-08-17T10:50:00Z", grid, files, cloud=1.0, offset=0.0)
    aoi = _stac_aoi(tmp_path, grid)
    with StacServer([item], folder, page_size=10) as srv:
        src = StacSource(url=srv.url)
        scene = src.search(aoi, date(2023, 8, 17), date(2023, 8, 17))[0]
        assert np.isfinite(src.load(scene, grid).values).any()
        secret = "sig=S3CRETtoken%2Fvalue"
        signed = dict(scene.properties)
        signed["items"] = json.loads(json.dumps(signed["items"]).replace("red.tif", f"gone_red.tif?se=2030&{secret}"))
        with pytest.raises(SourceUnavailable) as info:
            src.load(dc_replace(scene, properties=signed), grid)
        assert "S3CRET" not in str(info.value) and secret not in str(info.value), str(info.value)
        assert info.value.__cause__ is None  # the library's error holds the signed URL: not kept
        lacking = dict(scene.properties)
        lacking["items"] = [{**i, "assets": {k: v for k, v in i["assets"].items() if k != "nir"}}
                            for i in lacking["items"]]
        with pytest.raises(SourceConfigError, match="lack the assets") as info:
            src.load(dc_replace(scene, properties=lacking), grid)
        assert info.value.option == "assets"


def _grid():
    import pyproj
    from affine import Affine

    from changedet.grid import GridSpec

    return GridSpec(pyproj.CRS.from_epsg(32631), Affine(10, 0, 448000, 0, -10, 5412000), (64, 64))


def _stac_aoi(tmp_path, grid):
    from test_sources_stac import make_aoi

    x0, y0, x1, y1 = grid.bounds
    return make_aoi(tmp_path / "aois", "stacsite", (x0 + 100, y0 + 100, x1 - 100, y1 - 100), "EPSG:32631")
