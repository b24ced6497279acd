"""Session 19 (review of the local-day search): every date a person reruns from is the run's day.

The run of local day D at a site east of ~UTC+10 processes the pass taken 22:40 UTC on D-1.
Its products folder, the evidence pack's ``reproduce`` command, the alert message and the
``cube info`` lines must name D (the day ``changedet run --date`` finds the scene on), and a
broken file whose date-only name ties it to a neighbouring day must not fail D.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import rasterio
import yaml

from changedet.aoi import load_aoi
from changedet.cube import Cube
from changedet.grid import aoi_grid
from changedet.metrics import MetricStore
from changedet.pipeline import RunConfig, find_scene, run_day, scene_day

sys.path.insert(0, str(Path(__file__).parent))
from test_local_day_s19 import _found, _registry, _site, _utc  # noqa: E402
from test_pipeline_sources import AOI, QUIET, RES, scenes  # noqa: E402

__all__ = ["scenes"]  # the module-scoped fixture of test_pipeline_sources

UTC = timezone.utc
KAMCHATKA = "Asia/Kamchatka"


def _kamchatka_run(scenes, tmp_path):
    """One real run of local day D = QUIET[0] at Kamchatka, its file stamped 22:40 UTC on D-1, with a
    rule that fires on it (an earlier value of -100 railcars is in the store): (aoi, cfg, result, D)."""
    d = QUIET[0]
    imgs = tmp_path / "imgs"
    reg = _registry(tmp_path, KAMCHATKA, imgs)
    doc = yaml.safe_load((reg / f"{AOI}.yaml").read_text())
    doc["rules"] = [{"id": "record", "metric": "railcars", "kind": "historical_max", "severity": "high",
                     "channels": ["slack"], "params": {"min_history": 1, "factor": 1.0, "min_delta": 1}}]
    (reg / f"{AOI}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    aoi = load_aoi(AOI, registry=reg)
    imgs.mkdir()
    src = scenes["imgs"] / f"tumangang_{d:%Y%m%d}.tif"
    with rasterio.open(src) as s:
        profile, data, tags, desc = s.profile, s.read(), s.tags(), s.descriptions
    tags["TIFFTAG_DATETIME"] = f"{d - timedelta(days=1):%Y:%m:%d} 22:40:00"
    with rasterio.open(imgs / "kamchatka_pass.tif", "w", **profile) as out:   # no date in the name
        out.write(data)
        out.update_tags(**tags)
        for i, text in enumerate(desc, start=1):
            if text:
                out.set_band_description(i, text)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=True)
    store = MetricStore(cfg.store_location())
    store.record(aoi_id=AOI, metric="railcars", time=datetime.combine(d - timedelta(days=30), time(22, 40), UTC),
                 value=-100.0)
    store.close()
    r = run_day(aoi, d, cfg)
    assert r.status == "processed" and r.alerts, r.summary()
    return aoi, cfg, r, d


def test_the_pack_reproduce_command_the_alert_and_the_report_name_the_runs_day(scenes, tmp_path):
    from changedet.alerts.outbox import Outbox
    from changedet.report import build_report

    aoi, cfg, r, d = _kamchatka_run(scenes, tmp_path)
    utc_date = d - timedelta(days=1)
    # The evidence pack: its reproduce command names D, and the run of D finds the scene again.
    (alert,) = Outbox(cfg.data_dir / "outbox").list()
    manifest = json.loads((cfg.data_dir / "evidence" / alert.id / "manifest.json").read_text())
    assert manifest["reproduce"] == f"changedet run --aoi {AOI} --date {d.isoformat()}", manifest["reproduce"]
    assert manifest["day"] == d.isoformat()
    assert find_scene(aoi, d, cfg).id == r.scene_id
    assert find_scene(aoi, utc_date, cfg) is None   # (what the UTC date of the scene found)
    # The alert message names the run's day too.
    assert f"on {d.isoformat()};" in alert.message, alert.message
    # The stored scene records its run's day.
    (entry,) = Cube(cfg.store_root(), AOI, "vhr", aoi_grid(aoi, RES)).scenes()
    assert entry["day"] == d.isoformat()

    # The report reads folder D even with folder D-1 (the scene's UTC date) present: a decoy there.
    prod = cfg.data_dir / "products" / AOI
    assert (prod / d.isoformat()).is_dir(), list(prod.iterdir())
    decoy = prod / utc_date.isoformat()
    decoy.mkdir()
    (decoy / "railcars.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [130.0, 42.3]},
         "properties": {"type": "decoy"}}]}))
    index = build_report(cfg.data_dir, tmp_path / "report", aoi_ids=[AOI], registry=cfg.registry)
    html = (index.parent / AOI / "index.html").read_text()
    assert "decoy" not in html
    assert f"{d.isoformat()}, scene {r.scene_id}" in html


def _legacy_img(times_days, folders, tz=KAMCHATKA):
    """A fake _Imagery/_Store pair: cube entries (time, recorded day or None), product folders."""
    from changedet.report.build import _Imagery

    entries = [{"scene_id": f"s{i}", "time": t.isoformat(), **({"day": dd} if dd else {})}
               for i, (t, dd) in enumerate(times_days)]
    cube = SimpleNamespace(scenes=lambda: entries)
    img = _Imagery("vhr", "local", cube, entries, SimpleNamespace(name="local"))
    data = SimpleNamespace(product_days=lambda aoi_id: list(folders))
    return SimpleNamespace(id=AOI, timezone=tz), img, data, entries


def test_products_of_stores_written_before_runs_recorded_their_day():
    """Entries without ``day`` were written by runs that named folders by the UTC date (the local-day
    search came with the recorded day); a recorded day is the folder as is; a day without a folder has
    no products, never a neighbouring day's (review PIPE2 3)."""
    from changedet.report.build import _products_dir

    times = [_utc(2023, 8, 15 + i, 22, 40) for i in range(4)]   # local days Aug 16..19
    aoi, img, data, entries = _legacy_img([(t, None) for t in times], ["2023-08-15", "2023-08-16", "2023-08-17",
                                                                       "2023-08-18"])
    assert [_products_dir(data, aoi, img, e) for e in entries] == ["2023-08-15", "2023-08-16", "2023-08-17",
                                                                    "2023-08-18"]
    # The run of UTC Aug 16 wrote no products: its scene has none (Aug 17 is the next scene's).
    aoi, img, data, entries = _legacy_img([(t, None) for t in times], ["2023-08-15", "2023-08-17", "2023-08-18"])
    assert [_products_dir(data, aoi, img, e) for e in entries] == ["2023-08-15", None, "2023-08-17", "2023-08-18"]
    # A recorded day is the folder (none if it has no products: never a neighbour's).
    aoi, img, data, entries = _legacy_img([(times[0], "2023-08-16"), (times[1], "2023-08-17")],
                                          ["2023-08-15", "2023-08-16"])
    assert [_products_dir(data, aoi, img, e) for e in entries] == ["2023-08-16", None]


def test_cube_info_lists_skipped_and_stored_scenes_by_the_runs_day(tmp_path, capsys):
    """A skipped record of a scene taken 22:40 UTC on Aug 16 (Aug 17 at the site): `skipped 2023-08-17`."""
    from shapely.geometry import box

    from changedet.cli.cube import cmd_info
    from changedet.sources.base import SceneRecord

    aoi, cfg = _site(tmp_path, KAMCHATKA, {})
    cube = Cube(cfg.data_dir, AOI, "vhr", aoi_grid(aoi, RES))
    for i, recorded in enumerate(({}, {"day": "2023-08-17"})):   # written before runs recorded it, and since
        rec = SceneRecord(id=f"local-pass{i}", source="local", aoi_id=AOI, sensor="vhr",
                          time=_utc(2023, 8, 16, 22, 40 + i), platform="x", cloud_cover=float("nan"),
                          footprint=box(0, 0, 1, 1), resolution_m=RES)
        cube.record_skipped(rec, "cloudy: 80 % of the site under cloud", **recorded)
    cmd_info(SimpleNamespace(aoi=AOI, registry=cfg.registry, data_dir=str(cfg.data_dir), sensor=None, json=False))
    out = capsys.readouterr().out
    assert out.count("skipped 2023-08-17 local-pass") == 2, out
    assert "skipped 2023-08-16" not in out


@pytest.mark.parametrize("tz, other", [("Asia/Pyongyang", date(2023, 8, 18)),
                                       ("America/Anchorage", date(2023, 8, 16))])
def test_a_broken_date_only_file_fails_only_the_date_it_names(tmp_path, tz, other):
    """With a date-only ``pattern``, ``site_YYYYMMDD.tif`` is 00:00 UTC of its date and that date's
    (scene_day): cut inside its header, it fails its date, not the neighbouring local day whose search
    also covers that UTC date (there the name alone tells it is another day's: it is not read)."""
    from changedet.errors import SceneUnreadable

    aoi, cfg = _site(tmp_path, tz, {"site_20230815": None, "site_20230817": None, "site_20230820": None},
                     pattern=r"(?P<date>\d{8})")
    cut = tmp_path / "imgs" / "site_20230817.tif"
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(SceneUnreadable, match="site_20230817"):
        _found(aoi, cfg, date(2023, 8, 17))
    assert _found(aoi, cfg, other) == []


def test_a_broken_file_whose_name_gives_a_time_on_this_day_still_fails_it(tmp_path):
    """Kamchatka: ``pass_20230816T224000`` is 10:40 on Aug 17 there; cut short, it may be Aug 17's only pass."""
    from changedet.errors import SceneUnreadable

    aoi, cfg = _site(tmp_path, KAMCHATKA, {"pass_20230816T224000": None})
    assert scene_day(aoi, aoi.sources[0], _utc(2023, 8, 16, 22, 40)) == date(2023, 8, 17)
    cut = tmp_path / "imgs" / "pass_20230816T224000.tif"
    cut.write_bytes(cut.read_bytes()[:200])
    with pytest.raises(SceneUnreadable, match="pass_20230816T224000"):
        _found(aoi, cfg, date(2023, 8, 17))


def test_without_a_pattern_a_broken_file_named_by_its_utc_date_fails_the_day_its_pass_may_be(tmp_path):
    """Review PIPE2 1: Kamchatka, ``site_20230816.tif`` stamped 22:40 UTC in its header is Aug 17's pass.
    Cut short, Aug 17 must fail (and be run again once repaired), not say no_scene and lose the pass."""
    from changedet.errors import SceneUnreadable

    aoi, cfg = _site(tmp_path, KAMCHATKA, {"site_20230816": _utc(2023, 8, 16, 22, 40)})
    assert _found(aoi, cfg, date(2023, 8, 17)) == ["site_20230816"]
    assert _found(aoi, cfg, date(2023, 8, 16)) == []
    cut = tmp_path / "imgs" / "site_20230816.tif"
    good = cut.read_bytes()
    cut.write_bytes(good[:200])
    with pytest.raises(SceneUnreadable, match="site_20230816"):
        _found(aoi, cfg, date(2023, 8, 17))
    cut.write_bytes(good)
    assert _found(aoi, cfg, date(2023, 8, 17)) == ["site_20230816"]


def test_a_report_of_the_run_day_shows_the_scene_that_run_stored(scenes, tmp_path):
    """Review PIPE2 2: ``--start/--end`` D showed 'No stored imagery' for the Kamchatka pass the run of D
    stored (22:40 UTC on D-1), and a report of D-1 showed it captioned D."""
    from changedet.report import build_report

    aoi, cfg, r, d = _kamchatka_run(scenes, tmp_path)
    shown = {}
    for day in (d, d - timedelta(days=1)):
        index = build_report(cfg.data_dir, tmp_path / f"rep{day}", aoi_ids=[AOI], registry=cfg.registry,
                             start=day, end=day)
        shown[day] = r.scene_id in (index.parent / AOI / "index.html").read_text()
    assert shown == {d: True, d - timedelta(days=1): False}
