"""The end-to-end slice on a short scenario: the expected alert appears, quiet sites stay quiet."""

from datetime import date, timedelta

import pytest

from changedet.alerts.outbox import Outbox
from changedet.aoi import load_aoi
from changedet.cube import Cube
from changedet.grid import aoi_grid
from changedet.metrics import MetricStore
from changedet.pipeline import RunConfig, dates_between, run_day, run_series


@pytest.fixture(scope="module")
def surge_run(tmp_path_factory):
    """Tumangang (surge from late September 2023) and Khasan (quiet), weekly Jul-Oct 2023."""
    data = tmp_path_factory.mktemp("slice")
    cfg = RunConfig(data_dir=data)
    days = dates_between(date(2023, 7, 6), date(2023, 10, 19), 7)
    results = {a: run_series(load_aoi(a), days, cfg) for a in ("tumangang_railyard", "khasan_railyard")}
    return cfg, days, results


@pytest.mark.slow
def test_surge_alert_appears_with_figures(surge_run):
    cfg, days, results = surge_run
    alerts = [al for r in results["tumangang_railyard"] for al in r.alerts]
    assert alerts, "the Tumangang surge raised no alert"
    first = min((r for r in results["tumangang_railyard"] if r.alerts), key=lambda r: r.day)
    # The surge starts in September: no alert before, one by early October.
    assert date(2023, 9, 1) <= first.day <= date(2023, 10, 12)
    assert "railcars at Tumangang" in alerts[0]["message"]
    opened = Outbox(cfg.data_dir / "outbox").list(aoi_id="tumangang_railyard")
    assert opened and all(a.metric == "railcars" for a in opened)
    print([(r.day.isoformat(), r.metrics.get("railcars")) for r in results["tumangang_railyard"]])


@pytest.mark.slow
def test_quiet_site_stays_quiet(surge_run):
    cfg, _, results = surge_run
    assert not [al for r in results["khasan_railyard"] for al in r.alerts]
    assert not Outbox(cfg.data_dir / "outbox").list(aoi_id="khasan_railyard")


@pytest.mark.slow
def test_counts_track_the_scenario(surge_run):
    cfg, _, results = surge_run
    store = MetricStore(cfg.data_dir / "metrics.sqlite")
    s = store.series("tumangang_railyard", "railcars")
    before = s[s.index < "2023-08-31"]
    after = s[s.index > "2023-09-28"]
    assert len(before) >= 4 and len(after) >= 2
    assert before.max() <= 26          # scenario: at most 20
    assert after.min() >= 60           # scenario: 70 to 86
    prov = store.provenance("tumangang_railyard", "railcars", s.index[-1])
    assert prov["scene_id"].startswith("sim-vhr-tumangang_railyard")
    assert "config_hash" in prov and "coreg" in prov


@pytest.mark.slow
def test_every_stage_left_its_output(surge_run):
    cfg, days, results = surge_run
    aoi = load_aoi("tumangang_railyard")
    cube = Cube(cfg.data_dir, aoi.id, "vhr", aoi_grid(aoi, 0.5))
    processed = [r for r in results[aoi.id] if r.status == "processed"]
    assert len(cube.scenes()) == len(processed)
    # Co-registration recovered each acquisition's misregistration (simulator: up to 4 px)
    # to within a fraction of a pixel, measured against the simulator's truth.
    from changedet.sources.simulator import SimulatorSource

    src = SimulatorSource()
    errors = []
    for r in processed:
        scene = src.search(aoi, r.day, r.day, sensor="vhr")[0]
        applied = src.truth(scene, aoi)["applied_shift_px"]
        errors.append(max(abs(r.shift_px[0] + applied["row"]), abs(r.shift_px[1] + applied["col"])))
    print("registration errors (px):", [round(e, 2) for e in errors])
    assert max(errors) < 0.35
    assert any(abs(r.shift_px[0]) > 0.5 or abs(r.shift_px[1]) > 0.5 for r in processed)
    assert all(r.reliability > 0.5 for r in processed)
    later = [r for r in processed if "changed_area_m2" in r.metrics]
    assert later, "pixel change never ran"
    assert (cfg.data_dir / "products" / aoi.id).exists()


@pytest.mark.slow
def test_rerunning_a_day_changes_nothing(surge_run):
    cfg, days, results = surge_run
    aoi = load_aoi("tumangang_railyard")
    day = next(r.day for r in results[aoi.id] if r.status == "processed")
    n_alerts = len(Outbox(cfg.data_dir / "outbox").list())
    again = run_day(aoi, day, cfg)
    assert again.status == "already_processed"
    assert len(Outbox(cfg.data_dir / "outbox").list()) == n_alerts


@pytest.mark.slow
def test_cloudy_day_records_no_count(tmp_path):
    """A scene mostly under cloud is reported as such, never as a drop in activity."""
    from changedet.simulate.render import conditions
    from changedet.simulate.scenario import scenario_for
    from changedet.aoi import default_registry

    aoi = load_aoi("dunai_port")
    sc = scenario_for(aoi.id, default_registry())
    day = next(d for d in (date(2023, 6, 1) + timedelta(days=i) for i in range(200))
               if conditions(aoi, d, "vhr", seed=0, scenario=sc).cloud_fraction > 0.95)
    r = run_day(aoi, day, RunConfig(data_dir=tmp_path))
    assert r.status in ("cloudy", "not_registered") or "ships" in r.skipped
    assert "ships" not in r.metrics


def test_aoi_without_an_available_source_is_refused_not_simulated(tmp_path):
    """A site that only lists real sources must not be silently fed simulated pixels."""
    from dataclasses import replace

    from changedet.errors import SourceError

    aoi = load_aoi("rajin_port")
    real_only = replace(aoi, sources=tuple(s for s in aoi.sources if s.name != "simulator"))
    with pytest.raises(SourceError, match="simulator"):
        run_day(real_only, date(2023, 7, 6), RunConfig(data_dir=tmp_path))


@pytest.mark.slow
def test_each_alert_has_an_evidence_pack(surge_run):
    """Opened alerts leave a pack with the scenes, hashes, registration and config to reproduce them."""
    import json

    cfg, _, results = surge_run
    entries = [al for r in results["tumangang_railyard"] for al in r.alerts]
    assert entries and all("evidence_error" not in al for al in entries), entries
    latest = {al["alert_id"]: al for al in entries}  # an escalation rewrites the opening's pack
    for al in latest.values():
        pack = cfg.data_dir / "evidence" / al["alert_id"]
        manifest = json.loads((pack / "manifest.json").read_text())
        assert manifest["alert_id"] == al["alert_id"] and manifest["event"] == al["action"]
        roles = {s["role"]: s for s in manifest["scenes"]}
        assert roles["after"]["id"].startswith("sim-vhr-tumangang_railyard") and len(roles["after"]["sha256"]) == 64
        assert roles["before"]["id"].startswith("sim-vhr-tumangang_railyard")
        assert roles["before"]["time"] < roles["after"]["time"]
        assert manifest["registration"]["applied"] is True
        assert manifest["registration"]["mode"] == "global" and manifest["registration"]["similarity_after"] is not None
        assert 0 <= manifest["cloud_fraction"] <= 1
        assert manifest["config_hash"] and manifest["code_version"]
        assert manifest["config"]["change_z"] == cfg.change_z
        for name in ("before.tif", "after.tif", "detections.geojson", "change_polygons.geojson", "series.csv"):
            assert name in manifest["files"], name
            assert (pack / name).stat().st_size == manifest["files"][name]["bytes"]
        dets = json.loads((pack / "detections.geojson").read_text())["features"]
        # The pack's railcar detections are the count the alert is about.
        n_rail = sum(1 for d in dets if d["properties"]["metric"] == "railcars")
        assert n_rail == al["value"]
        lon, lat = dets[0]["geometry"]["coordinates"][0][0]
        assert 129 < lon < 132 and 41 < lat < 44


def test_rule_lifecycle_settings_escalate_resolve_and_cool_down(tmp_path):
    """Per-rule lifecycle parameters from the AOI file drive the outbox: re-notify on growth,
    resolve when quiet, no re-opening during the cooldown."""
    from dataclasses import replace
    from datetime import datetime, timezone

    from changedet.aoi import AlertRule
    from changedet.pipeline import _evaluate_rules

    rule = AlertRule(id="surge", metric="railcars", kind="robust_z", severity="high", channels=("slack",),
                     params={"window_days": 120, "k": 5.0, "min_history": 6, "min_delta": 10,
                             "escalate_ratio": 1.5, "quiet_days": 21, "cooldown_days": 28})
    aoi = replace(load_aoi("tumangang_railyard"), rules=(rule,))
    values = [14, 12, 15, 13, 16, 14, 12, 15,   # history
              40,                               # opens
              50,                               # grows by 1.25x: below escalate_ratio, no notification
              65,                               # 65 >= 1.5 * 40: escalates
              14, 13, 15, 14,                   # quiet for 4 weeks: resolved after 21 days
              45,                               # within 28 days of the resolution: suppressed
              14, 15, 13, 14, 16,
              48]                               # after the cooldown: a new alert
    store = MetricStore(tmp_path / "m.sqlite")
    actions = []
    for i, v in enumerate(values):
        t = datetime(2023, 6, 1, tzinfo=timezone.utc) + timedelta(days=7 * i)
        store.record(aoi_id=aoi.id, metric="railcars", time=t, value=v)
        out = _evaluate_rules(aoi, t, store, tmp_path / "outbox", {"railcars"})
        actions.append(out[0]["action"] if out else None)
    assert actions[8] == "opened" and actions[9] is None and actions[10] == "escalated"
    assert actions[11:] == [None] * (len(values) - 12) + ["opened"]
    alerts = Outbox(tmp_path / "outbox").list()
    assert [a.status for a in alerts] == ["resolved", "open"]
    first = alerts[0]
    assert first.peak_value == 65 and first.notified_value == 65
    # Resolved on the observation 21+ days after its last finding (observation time, not wall clock).
    assert (first.resolved_at - first.last_time).days >= 21
