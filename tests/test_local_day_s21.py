"""Session 21 (review LD of the local-day work): alerts, fetch and its messages go by the site's day.

- A report of one day lists the alert that day's value opened (``opened_at`` is that value's
  UTC time: at Anchorage 00:10 UTC on D+1 is D's afternoon; at Kamchatka 22:40 UTC on D-1
  is D's morning), and not on the neighbouring day's page.
- ``changedet fetch`` without a file-name pattern searches the UTC days its site days overlap;
  a broken file on the UTC date just outside the range no longer stops it when the range's
  edge day has its own scene (it still does when that file may be the day's only pass).
- Fetch outcomes carry the site day; the CLI prints it.
- ``run_day`` frees only its own thread's decoded files.
- A report reads the days of values and alerts by the source the series was made from.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_local_day_s19 import _registry, _site, _utc  # noqa: E402
from test_local_day_s19b import KAMCHATKA, _kamchatka_run  # noqa: E402
from test_local_day_s20 import PATTERN  # noqa: E402
from test_pipeline_sources import AOI, scenes  # noqa: E402

__all__ = ["scenes"]

UTC = timezone.utc


def _page(data_dir, out, reg, day):
    from changedet.report import build_report

    index = build_report(data_dir, out, aoi_ids=[AOI], registry=reg, start=day, end=day)
    html = (index.parent / AOI / "index.html").read_text()
    status = re.search(r'status <span class="badge [^"]*">([^<]*)<', html).group(1)
    return html, status


def test_a_one_day_report_west_of_utc_lists_the_alert_its_value_opened(tmp_path):
    from changedet.alerts.outbox import Outbox
    from changedet.baselines import Finding
    from changedet.metrics import MetricStore
    from changedet.pipeline import RunConfig

    reg = _registry(tmp_path, "America/Anchorage", tmp_path / "imgs")
    data = tmp_path / "data"
    data.mkdir()
    cfg = RunConfig(data_dir=data, registry=reg)
    t = datetime(2023, 8, 18, 0, 10, tzinfo=UTC)   # 16:10 on Aug 17 at Anchorage
    store = MetricStore(cfg.store_location())
    store.record(aoi_id=AOI, metric="railcars", time=t, value=250.0)
    store.close()
    alert, _ = Outbox(data / "outbox").open_or_update(Finding(
        aoi_id=AOI, aoi_name="x", rule_id="r", metric="railcars", feature_id="__site__", time=t, value=250.0,
        severity="high", kind="historical_max", figures={"sign": 1}, message="250 railcars"))
    html, status = _page(data, tmp_path / "r17", reg, date(2023, 8, 17))
    assert alert.id in html and status == "alert"
    assert 'data-alerts="1"' in html                      # the value carries its alert's marker
    assert ">2023-08-17</span>" in html                  # opened: the day, the UTC time in its title
    assert "Latest 250 on 2023-08-17 (image of 2023-08-18 UTC)" in html
    html, status = _page(data, tmp_path / "r16", reg, date(2023, 8, 16))
    assert alert.id not in html and status != "alert"   # not opened yet on Aug 16
    # Open alerts opened before a period stay listed; opened after it, not.
    html, status = _page(data, tmp_path / "r18", reg, date(2023, 8, 18))
    assert alert.id in html and status == "alert"


def test_a_one_day_report_east_of_utc_lists_the_alert_of_its_own_run(scenes, tmp_path):
    from changedet.alerts.outbox import Outbox

    aoi, cfg, r, d = _kamchatka_run(scenes, tmp_path)
    (alert,) = Outbox(cfg.data_dir / "outbox").list()
    assert alert.opened_at.date() == d - timedelta(days=1)   # 22:40 UTC the day before
    html, status = _page(cfg.data_dir, tmp_path / "open_d", cfg.registry, d)
    assert alert.id in html and status == "alert"
    html, status = _page(cfg.data_dir, tmp_path / "open_prev", cfg.registry, d - timedelta(days=1))
    assert alert.id not in html and status != "alert"        # the run of D-1 had not opened it
    Outbox(cfg.data_dir / "outbox").resolve(alert.id)
    html, _ = _page(cfg.data_dir, tmp_path / "resolved_d", cfg.registry, d)
    assert alert.id in html and 'data-alerts="1"' in html    # resolved: still D's, with its marker
    html, _ = _page(cfg.data_dir, tmp_path / "resolved_prev", cfg.registry, d - timedelta(days=1))
    assert alert.id not in html


def _kamchatka_broken_before(tmp_path, keep_good: bool):
    """Kamchatka, no pattern: a broken ``a_20230816`` (its header would say 01:00 UTC Aug 16, the
    site's Aug 16) and, if ``keep_good``, a good ``b_20230817`` (01:00 UTC Aug 17: Aug 17 there)."""
    files = {"a_20230816": _utc(2023, 8, 16, 1, 0)}
    if keep_good:
        files["b_20230817"] = _utc(2023, 8, 17, 1, 0)
    aoi, cfg = _site(tmp_path, KAMCHATKA, files)
    f = tmp_path / "imgs" / "a_20230816.tif"
    f.write_bytes(f.read_bytes()[:200])
    return aoi


def test_fetch_without_a_pattern_passes_over_a_broken_file_of_the_day_before_the_range(tmp_path, caplog):
    from changedet.acquire import fetch
    from changedet.sources.local import LocalSource

    aoi = _kamchatka_broken_before(tmp_path, keep_good=True)
    src = LocalSource(path=str(tmp_path / "imgs"), sensor="vhr")
    with caplog.at_level(logging.WARNING, logger="changedet.acquire"):
        report = fetch(aoi, src, sensor="vhr", resolution_m=aoi.sources[0].resolution_m, start=date(2023, 8, 17),
                       end=date(2023, 8, 17), data_dir=tmp_path / "data", cloud_method="none")
    assert [("b_20230817" in o.scene_id, o.status, o.day) for o in report.outcomes] == \
        [(True, "stored", "2023-08-17")], report.outcomes
    assert any(r.name == "changedet.acquire" and "a_20230816" in r.getMessage() for r in caplog.records)


def test_fetch_without_a_pattern_passes_over_a_broken_edge_file_when_the_edge_day_has_no_scene(tmp_path, caplog):
    """Review LD2: a multi-day fetch whose first day has no scene stored nothing (the broken file
    may be a pass of the day before the range; a fetch records nothing for a day without a scene,
    so passing it over loses nothing). A broken file dated inside the range still fails it."""
    from changedet.acquire import fetch
    from changedet.errors import SceneUnreadable
    from changedet.sources.local import LocalSource

    aoi = _kamchatka_broken_before(tmp_path, keep_good=False)
    from test_local_day_s19 import _tiny

    _tiny(tmp_path / "imgs" / "g_20230818.tif", aoi, _utc(2023, 8, 18, 1, 0))
    src = LocalSource(path=str(tmp_path / "imgs"), sensor="vhr")
    kw = dict(sensor="vhr", resolution_m=aoi.sources[0].resolution_m, data_dir=tmp_path / "data", cloud_method="none")
    with caplog.at_level(logging.WARNING, logger="changedet.acquire"):
        report = fetch(aoi, src, start=date(2023, 8, 17), end=date(2023, 8, 20), **kw)
    assert [(o.status, o.day) for o in report.outcomes] == [("stored", "2023-08-18")]
    assert any(r.name == "changedet.acquire" and "a_20230816" in r.getMessage() for r in caplog.records)
    with pytest.raises(SceneUnreadable, match="a_20230816"):
        fetch(aoi, src, start=date(2023, 8, 16), end=date(2023, 8, 20), **kw)


def test_fetch_outcomes_and_the_cli_name_the_sites_day(tmp_path, capsys):
    """Kamchatka: the passes of 22:40 UTC on Aug 16 and 17 are the site's Aug 17 and 18 (the second,
    the same pixels, is a duplicate): the JSON, the progress bar and the listed lines say so."""
    from changedet.cli import main

    aoi, cfg = _site(tmp_path, KAMCHATKA, {"k_20230816T224000": None, "k_20230817T224000": None}, pattern=PATTERN)
    args = ["fetch", "--aoi", str(cfg.registry / f"{AOI}.yaml"), "--source", "local", "--start", "2023-08-17",
            "--end", "2023-08-18", "--data-dir", str(tmp_path / "data"), "--cloud-mask", "none"]
    rc = main(args + ["--no-progress", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = _json_doc(out)
    assert [(o["time"][:16], o["day"], o["status"]) for o in doc["outcomes"]] == [
        ("2023-08-16T22:40", "2023-08-17", "stored"), ("2023-08-17T22:40", "2023-08-18", "duplicate")]
    rc = main(args + ["--data-dir", str(tmp_path / "data2")])
    captured = capsys.readouterr()
    assert rc == 0
    listed = [line for line in captured.out.splitlines() if "duplicate:" in line]
    assert len(listed) == 1 and listed[0].strip().startswith("2023-08-18 "), captured.out
    assert "2023-08-18 duplicate" in captured.err and "2023-08-17 duplicate" not in captured.err, captured.err


def _json_doc(out: str) -> dict:
    import json

    start = out.index("{")
    return json.loads(out[start:])


def test_run_day_frees_its_own_threads_decoded_files_not_another_threads(monkeypatch):
    import xarray as xr

    from changedet import pipeline
    from changedet.sources import local

    local.clear_decoded_cache()
    other = ("other-thread", 1, 2, 3, 4, ("b",))

    def keep():
        with local._DECODED_LOCK:
            local._DECODED[other] = (xr.DataArray(np.zeros((4, 4))), time.monotonic(), threading.get_ident())

    t = threading.Thread(target=keep)
    t.start()
    t.join()

    def body(aoi, day, cfg):
        with local._DECODED_LOCK:
            local._DECODED[("mine", 1, 2, 3, 4, ("b",))] = (xr.DataArray(np.zeros((4, 4))), time.monotonic(),
                                                           threading.get_ident())
        return "done"

    monkeypatch.setattr(pipeline, "_run_day", body)
    try:
        assert pipeline.run_day(None, None, None) == "done"
        assert list(local._DECODED) == [other]
    finally:
        local.clear_decoded_cache()


def test_a_report_reads_days_by_the_source_its_series_was_made_from(tmp_path):
    """Anchorage, a real (local) first entry and the simulator behind it that the values came
    from: the simulator's 01:30 UTC value of Aug 17 is Aug 17's (its rendered day), not Aug 16's."""
    from changedet.metrics import MetricStore
    from changedet.pipeline import RunConfig

    reg = _registry(tmp_path, "America/Anchorage", tmp_path / "imgs")
    doc = yaml.safe_load((reg / f"{AOI}.yaml").read_text())
    res = doc["sources"][0]["resolution_m"]
    doc["sources"].append({"name": "simulator", "sensor": "vhr", "resolution_m": res})
    (reg / f"{AOI}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    data = tmp_path / "data"
    data.mkdir()
    # The series was made from the simulator (the scenes' recorded source; none in the
    # report's period). Local and simulator entries share the vhr 0.5 m cube.
    cubes = data / "cubes" / AOI
    cubes.mkdir(parents=True)
    (cubes / f"vhr_{float(res):g}m.provenance.json").write_text(json.dumps(
        {"scenes": [{"scene_id": "sim-20230701", "source": "simulator", "time": "2023-07-01T01:30:00+00:00"}]}))
    cfg = RunConfig(data_dir=data, registry=reg)
    store = MetricStore(cfg.store_location())
    store.record(aoi_id=AOI, metric="railcars", time=datetime(2023, 8, 17, 1, 30, tzinfo=UTC), value=7.0)
    store.close()
    html, _ = _page(data, tmp_path / "r", reg, date(2023, 8, 17))
    assert "Latest 7 on 2023-08-17" in html
