"""The optical railcar estimate on pixels coarser than 1.5 m says it is not validated: in
the JSON, on the CLI, and in the daily run (which skips the metric).

On the independent generator (``bench/bench_altgen_rail_medium.py``, session 33) it reads
about 0 at 3-10 m (scene totals 92-98 % low): an analyst counting a Sentinel-2 or
PlanetScope image must be told, not handed a number that looks like an observation.
VHR counts carry no such caveat.
"""

from __future__ import annotations

import json

import pytest
from shapely.geometry import LineString

from changedet.cli import main
from changedet.objects.railcars import MEDIUM_OPTICAL_CAVEAT, count_railcars
from tests.test_audit_s16 import _synthetic
from tests.test_objects_inputs import _image


@pytest.mark.parametrize("res,caveat", [(10.0, True), (3.0, True), (0.5, False)])
def test_optical_medium_resolution_estimate_carries_the_caveat(res, caveat):
    image, grid = _image(res)
    x0, y0, x1, y1 = grid.bounds
    ym = 0.5 * (y0 + y1)
    res_ = count_railcars(image, {"T1": LineString([(x0 + 3 * res, ym), (x1 - 3 * res, ym)])})
    doc = res_.to_json()
    assert (doc.get("caveat") == MEDIUM_OPTICAL_CAVEAT) is caveat
    assert ("caveat" in doc) is caveat


def test_cli_warns_and_keeps_one_json_object(tmp_path, capsys):
    image, feats = _synthetic(tmp_path, res=10.0, dtype="float32")
    rc = main(["count", "railcars", str(image), "--features", str(feats), "--json"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "not validated" in cap.err and "VHR" in cap.err
    lines = [ln for ln in cap.out.splitlines() if ln.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["caveat"] == MEDIUM_OPTICAL_CAVEAT


def test_a_daily_run_on_a_10m_optical_scene_leaves_the_railcar_series_a_gap(tmp_path):
    """Review RFINAL H1: the daily run stored the 10 m optical estimate (about 0 on the
    independent generator) as the site's railcars value, the series its baselines and alert
    rules read; it now skips the metric with the caveat as its reason."""
    from datetime import date, timedelta

    import changedet.pipeline as pipeline
    from changedet.aoi import load_aoi
    from changedet.metrics import MetricStore
    from tests import test_pipeline_sources as ps

    reg = ps._reduced_registry(tmp_path, [{"name": "simulator", "sensor": "s2", "resolution_m": 10}])
    aoi = load_aoi(ps.AOI, registry=reg)
    assert "railcars" in aoi.metrics
    cfg = pipeline.RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False, write_products=False)
    # The first Sentinel-2 acquisition of the simulated series that is clear enough.
    for offset in range(30):
        r = pipeline.run_day(aoi, date(2023, 8, 1) + timedelta(days=offset), cfg)
        if r.status == "processed":
            break
    assert r.status == "processed", r.summary()
    assert r.skipped.get("railcars") == MEDIUM_OPTICAL_CAVEAT, r.skipped
    assert "railcars" not in r.metrics
    store = MetricStore(cfg.store_location())
    try:
        assert len(store.series(ps.AOI, "railcars")) == 0
    finally:
        store.close()
