"""The flows keep a count read in a cloud's shadow out of the series (issue 6, session 27).

Containers in a cloud's shadow are counted from the sky light alone (footprint from hue,
heights copied from sunlit blocks): the counter returns the number, and its
``shaded_fraction``, but a zone read mostly there would enter the series as a drop. The
pipeline's ``min_observed`` gate takes that share as not observed
(:func:`changedet.pipeline.cloud_free`), per feature and per site, as it did when the
projected shadow was masked. The gate is the same for every metric, so the test drives it
through the railcar count of the reduced pipeline AOI (as ``test_misc_s15`` does).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from datetime import date
from pathlib import Path

import pytest

import changedet.pipeline as pipeline
from changedet.aoi import load_aoi
from changedet.metrics import MetricStore


def _ps():
    spec = importlib.util.spec_from_file_location("_ps", Path(__file__).with_name("test_pipeline_sources.py"))
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    return ps


def test_cloud_free_takes_the_shaded_share_off():
    assert pipeline.cloud_free(1.0) == 1.0
    assert pipeline.cloud_free(1.0, None) == 1.0
    assert pipeline.cloud_free(0.9, 0.3) == pytest.approx(0.6)


def _run(tmp_path, monkeypatch, *, site_shaded, t2_shaded):
    ps = _ps()
    reg = ps._reduced_registry(tmp_path, [{"name": "simulator", "sensor": "vhr", "resolution_m": 0.5}])
    aoi = load_aoi(ps.AOI, registry=reg)
    real = pipeline.count_railcars

    def shaded(*args, **kwargs):
        res = real(*args, **kwargs)
        per = tuple(dict(pf, observed_fraction=1.0, shaded_fraction=t2_shaded if pf["id"] == "T2" else 0.0)
                    for pf in res.per_feature)
        return dataclasses.replace(res, per_feature=per, observed_fraction=1.0,
                                   extras=dict(res.extras, shaded_fraction=site_shaded))

    monkeypatch.setattr(pipeline, "count_railcars", shaded)
    cfg = pipeline.RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False, write_products=False)
    r = pipeline.run_day(aoi, date(2023, 8, 17), cfg)
    assert r.status == "processed", r.summary()
    store = MetricStore(cfg.store_location())
    try:
        series = {f: store.series(ps.AOI, "railcars", feature_id=f) for f in ("T1", "T2")}
    finally:
        store.close()
    return r, series


def test_a_feature_read_in_a_cloud_shadow_is_not_recorded(tmp_path, monkeypatch):
    r, series = _run(tmp_path, monkeypatch, site_shaded=0.02, t2_shaded=0.5)
    assert r.skipped.get("railcars[T2]") == "only 50% of T2 cloud-free", r.skipped
    assert "railcars" in r.metrics   # 98 % of the site in sunlight: its total is recorded
    assert len(series["T1"]) == 1 and len(series["T2"]) == 0, series


def test_a_site_read_mostly_in_a_cloud_shadow_is_not_recorded(tmp_path, monkeypatch):
    r, series = _run(tmp_path, monkeypatch, site_shaded=0.4, t2_shaded=0.0)
    assert r.skipped.get("railcars") == "only 60% of features cloud-free", r.skipped
    assert "railcars" not in r.metrics
    assert len(series["T1"]) == 0 and len(series["T2"]) == 0, series
