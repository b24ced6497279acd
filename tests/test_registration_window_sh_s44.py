"""A small site read from Sentinel Hub registers on a registration window too (s44).

Until session 43 only ``local`` entries were read again on a window wider than the site
grid; Sentinel Hub and STAC entries registered on the site grid alone. A site that small
(a 950 x 600 m port at 10 m is 95 x 60 px; a 500 m site at 5 m, 109 px) is then refused
by the reliability gate day after day, so no count is ever made. Here real NAIP
(EPSG:26914, 5 m) is served by a fake Sentinel Hub on 127.0.0.1 to the real ``sentinelhub``
client as a BYOC collection and read at 5 m on a 500 m site: with the window (the default
now) the day registers, and the 2010 file moved by a known offset in its geotransform
registers with the shift of the unmoved file plus that offset; with
``registration_window: false`` the same day is ``not_registered`` on the site grid, as
every such day was before.
"""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
from datetime import date, datetime, time, timezone
from pathlib import Path

import pyproj
import pytest
import rasterio
import yaml

from changedet.aoi import load_aoi
from changedet.errors import AOIError
from changedet.cube import Cube
from changedet.grid import aoi_grid
from changedet.pipeline import RunConfig, reads_registration_window, run_day

NAIP = "naip_timeseries_nd/m_4709963_se_14_1_{}.tif"
REF_DAY, DAY = date(2009, 8, 18), date(2010, 6, 29)
FRAME = (485902.0, 5205631.2, 490569.0, 5209245.0)  # intersection of the NAIP frames (EPSG:26914)
#: Known offset of the moved 2010 file (metres east, metres north): whole pixels of the 5 m
#: files, as the fake resamples nearest-neighbour (as Sentinel Hub by default), which turns a
#: sub-pixel move of the file into none at all.
DX, DY = 10.0, -15.0
RES = 5.0
#: Served around the site only (the fake renders every request from these arrays).
HALF_M = 2200.0
SECRET = "s44/registration+window=Q"
CLIENT = "changedet-regwin-test"
BYOC = "5e6f7a8b-0000-4c1d-9e2f-regwin"


def _ring(size: float = 500.0) -> list[list[float]]:
    cx, cy = (FRAME[0] + FRAME[2]) / 2, (FRAME[1] + FRAME[3]) / 2
    h = size / 2
    tr = pyproj.Transformer.from_crs(26914, 4326, always_xy=True)
    ring = [list(tr.transform(x, y)) for x, y in ((cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h),
                                                   (cx - h, cy + h))]
    return ring + [ring[0]]


def _aoi(tmp: Path, aoi_id: str, **entry_options):
    reg = tmp / f"aois_{aoi_id}"
    reg.mkdir(parents=True, exist_ok=True)
    (reg / f"{aoi_id}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": aoi_id, "role": "site"},
         "geometry": {"type": "Polygon", "coordinates": [_ring()]}}]}))
    entry = {"name": "sentinelhub", "sensor": "vhr", "resolution_m": RES, "collection": f"byoc-{BYOC}",
             "cloud_mask": "none", "retry_sleep_s": 0.01, **entry_options}
    (reg / f"{aoi_id}.yaml").write_text(yaml.safe_dump({
        "id": aoi_id, "name": aoi_id, "kind": "depot", "timezone": "America/Chicago", "cadence": "weekly",
        "sources": [entry], "metrics": ["changed_area_m2"], "rules": [], "recipients": {}}, sort_keys=False))
    return load_aoi(aoi_id, registry=reg), reg


def _read(path: Path, *, dx: float = 0.0, dy: float = 0.0):
    """The NAIP file around the frame centre: ``(bands, transform)``, moved ``dx`` m east, ``dy`` m north."""
    cx, cy = (FRAME[0] + FRAME[2]) / 2, (FRAME[1] + FRAME[3]) / 2
    with rasterio.open(path) as src:
        win = rasterio.windows.from_bounds(cx - HALF_M, cy - HALF_M, cx + HALF_M, cy + HALF_M,
                                           transform=src.transform).round_offsets().round_lengths()
        data = src.read(window=win, boundless=False).astype("float32")
        t = src.window_transform(win)
    names = ["R", "G", "B", "NIR"]  # NAIP's band order, the BYOC names the source asks for by default
    return {n: data[i] for i, n in enumerate(names)}, rasterio.Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f + dy)


@contextmanager
def _hub(test_data, monkeypatch, *, moved: bool):
    sys.path.insert(0, str(Path(__file__).parent))
    from sh_server import FakeSentinelHub, Scene, serving  # noqa: E402

    if shutil.which("node") is None:
        pytest.skip("Node.js is needed by the fake Sentinel Hub (it runs the evalscripts)")
    server = FakeSentinelHub(client_id=CLIENT, client_secret=SECRET)
    for day, (dx, dy) in ((REF_DAY, (0.0, 0.0)), (DAY, (DX, DY) if moved else (0.0, 0.0))):
        bands, transform = _read(test_data(NAIP.format(f"{day:%Y%m%d}")), dx=dx, dy=dy)
        server.add_scene(Scene(id=f"naip-{day:%Y%m%d}", collection=f"byoc-{BYOC}",
                               time=datetime.combine(day, time(17, 0), tzinfo=timezone.utc), platform="naip",
                               crs="EPSG:26914", transform=transform, bands=bands, cloud_cover=0.0, gsd=1.0))
    with serving(server, monkeypatch):
        yield server


def _days(tmp: Path, aoi_id: str, **entry_options):
    aoi, reg = _aoi(tmp, aoi_id, **entry_options)
    cfg = RunConfig(data_dir=tmp / f"data_{aoi_id}", registry=reg, evidence=False, write_products=False)
    first = run_day(aoi, REF_DAY, cfg)
    assert first.status == "processed" and first.shift_px == (0.0, 0.0), first.summary()
    return aoi, cfg, run_day(aoi, DAY, cfg)


def test_a_small_sentinelhub_site_registers_on_the_window_with_the_known_shift(test_data, tmp_path, monkeypatch):
    with _hub(test_data, monkeypatch, moved=False) as server:
        aoi, cfg, plain = _days(tmp_path, "sh_plain")
        window_requests = sum(1 for b in server.bodies["process"]
                              if b["output"]["width"] == 768 and b["output"]["height"] == 768)
        text = plain.summary() + json.dumps(plain.__dict__, default=str)
    with _hub(test_data, monkeypatch, moved=True):
        _, _, moved = _days(tmp_path, "sh_moved")
    for r in (plain, moved):
        assert r.status == "processed" and r.source == "sentinelhub", r.summary()
        assert r.reliability >= 0.5
    grid = aoi_grid(aoi, RES)
    assert max(grid.shape) < 768  # the site grid alone is what the gate refused (test below)
    rec = next(e for e in Cube(cfg.data_dir, aoi.id, "vhr", grid).scenes() if e["scene_id"] == plain.scene_id)
    assert rec["coreg"]["window"]["on"] == "registration window", rec["coreg"]
    # Read from the API on the window: the reference day's window (the new reference) and the later day's.
    assert window_requests >= 2, window_requests
    # The day's window reply is not kept in the download cache (~10 MB a day on Sentinel Hub).
    cached = [json.loads(p.read_text()) for p in (cfg.data_dir / "cache" / "sentinelhub").rglob("request.json")]
    assert cached and not any(json.dumps(c).count('"width": 768') for c in cached), len(cached)
    # Moved DX m east and DY m north: the shift back is -DX/RES columns and +DY/RES rows.
    d_row = moved.shift_px[0] - plain.shift_px[0]
    d_col = moved.shift_px[1] - plain.shift_px[1]
    assert d_row == pytest.approx(DY / RES, abs=0.1) and d_col == pytest.approx(-DX / RES, abs=0.1), (d_row, d_col)
    assert SECRET not in text


def test_registration_window_false_keeps_the_site_grid(test_data, tmp_path, monkeypatch):
    """Opting out: the same day on the site grid alone is refused, as every such day was before."""
    with _hub(test_data, monkeypatch, moved=False) as server:
        _, _, r = _days(tmp_path, "sh_site_only", registration_window=False)
        assert not any(b["output"]["width"] == 768 for b in server.bodies["process"])
    assert r.status == "not_registered", r.summary()
    assert "registration window" not in (r.note or "")


def test_the_option_is_validated_and_decides(tmp_path):
    aoi, _ = _aoi(tmp_path, "opt_default")
    assert reads_registration_window(aoi.sources[0])
    aoi, _ = _aoi(tmp_path, "opt_off", registration_window=False)
    assert not reads_registration_window(aoi.sources[0])
    with pytest.raises(AOIError, match="registration_window must be true or false, not 'no'"):
        _aoi(tmp_path, "opt_bad", registration_window="no")


def test_a_passing_outage_on_the_window_request_fails_the_day(test_data, tmp_path, monkeypatch):
    """A 503 on the window request (review RREGWIN): the day is ``failed`` and run again later,
    nothing recorded; before, the site grid alone was tried and the day stayed ``not_registered``
    for good, its note blaming the imagery."""
    from changedet.errors import SourceUnavailable
    from changedet.sources.sentinelhub import SentinelHubSource

    real = SentinelHubSource.load

    def flaky(self, scene, grid, **kw):
        if grid.shape == (768, 768) and "2010" in scene.id:
            raise SourceUnavailable(f"Sentinel Hub process request for scene {scene.id}: HTTP 503; it may pass")
        return real(self, scene, grid, **kw)

    monkeypatch.setattr(SentinelHubSource, "load", flaky)
    with _hub(test_data, monkeypatch, moved=False):
        aoi, cfg, r = _days(tmp_path, "sh_flaky")
    assert r.status == "failed" and "(on the registration window)" in r.note, r.summary()
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, RES))
    assert cube.skipped() == [] and [e["scene_id"] for e in cube.scenes()] == [f"naip-{REF_DAY:%Y%m%d}"]
