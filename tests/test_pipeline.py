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


def test_quiet_site_stays_quiet(surge_run):
    cfg, _, results = surge_run
    assert not [al for r in results["khasan_railyard"] for al in r.alerts]
    assert not Outbox(cfg.data_dir / "outbox").list(aoi_id="khasan_railyard")


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


def test_rerunning_a_day_changes_nothing(surge_run):
    cfg, days, results = surge_run
    aoi = load_aoi("tumangang_railyard")
    day = next(r.day for r in results[aoi.id] if r.status == "processed")
    n_alerts = len(Outbox(cfg.data_dir / "outbox").list())
    again = run_day(aoi, day, cfg)
    assert again.status == "already_processed"
    assert len(Outbox(cfg.data_dir / "outbox").list()) == n_alerts


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
