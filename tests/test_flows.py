"""Prefect flows in ephemeral mode (Prefect's own test harness), deployments and ``prefect.yaml``.

The flows run with their default task runner (a Dask LocalCluster); the end-to-end test
on a real ``prefect server``, ``dask scheduler`` and workers is
tests/test_integration_prefect.py.
"""

import os
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_day_for_uses_the_aoi_timezone():
    from changedet.aoi import load_aoi
    from flows.daily import day_for

    aoi = load_aoi("tumangang_railyard")  # Asia/Pyongyang, UTC+9
    # The local day before the scheduled start: at 06:00 local today holds no acquisition yet.
    assert day_for(aoi, datetime(2023, 10, 4, 21, 0, tzinfo=timezone.utc)) == date(2023, 10, 4)  # 06:00 Oct 5
    assert day_for(aoi, datetime(2023, 10, 4, 14, 0, tzinfo=timezone.utc)) == date(2023, 10, 3)  # 23:00 Oct 4
    moscow = load_aoi("tikhoretsk_depot")  # Europe/Moscow, UTC+3: run by Pyongyang's 06:00 (21:00 UTC)
    assert moscow.timezone == "Europe/Moscow"
    assert day_for(moscow, datetime(2023, 10, 4, 21, 0, tzinfo=timezone.utc)) == date(2023, 10, 4)


def test_cache_key_is_aoi_scene_and_config(tmp_path, monkeypatch):
    from flows.tasks import aoi_day_cache_key

    params = {"aoi_id": "dunai_port", "day": date(2023, 6, 1), "data_dir": str(tmp_path), "seed": 0,
              "registry": None}
    key = aoi_day_cache_key(None, params)
    assert key and key.startswith("changedet-dunai_port-") and key == aoi_day_cache_key(None, dict(params))
    assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    # Another configuration (the seed is part of the config hash) is another key.
    assert aoi_day_cache_key(None, {**params, "seed": 1}) != key
    # The key does not depend on where the data lives (results are stored there anyway).
    assert aoi_day_cache_key(None, {**params, "data_dir": str(tmp_path / "x")}) == key
    import flows.tasks
    from changedet.aoi import load_aoi

    # The day is part of the key: a scene found for another day (the rule that gave scenes to
    # days changed, session 19) is not answered from that day's cached result.
    scene = flows.tasks.find_scene(load_aoi("dunai_port"), date(2023, 6, 1), flows.tasks.run_config(
        str(tmp_path), 0, None, None))
    monkeypatch.setattr(flows.tasks, "find_scene", lambda aoi, day, cfg: scene)
    assert aoi_day_cache_key(None, params) == key
    assert aoi_day_cache_key(None, {**params, "day": date(2023, 6, 2)}) not in (key, None)
    # A day without an acquisition is never cached: a late scene must still be processed.
    # (The simulator's VHR source has a scene every day, so the empty catalogue is simulated.)
    monkeypatch.setattr(flows.tasks, "find_scene", lambda aoi, day, cfg: None)
    assert aoi_day_cache_key(None, params) is None


def test_task_runner_default_and_address(monkeypatch):
    from prefect_dask import DaskTaskRunner

    from flows.cluster import SPARE_THREADS, dask_address, local_cluster_kwargs, task_runner

    monkeypatch.delenv("CHANGEDET_DASK_ADDRESS", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    runner = task_runner()
    assert isinstance(runner, DaskTaskRunner) and runner.cluster_class is not None
    kw = local_cluster_kwargs(n_workers=2, mapped_per_worker=3)
    assert kw["threads_per_worker"] == 3 + SPARE_THREADS and kw["processes"] is True
    monkeypatch.setenv("CHANGEDET_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    assert dask_address() == "tcp://127.0.0.1:8786"
    assert task_runner().address == "tcp://127.0.0.1:8786"
    assert dask_address("tcp://other:1") == "tcp://other:1"


def test_daily_backfill_and_report_flows(prefect_env, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.backfill import backfill
    from flows.daily import daily_monitor
    from flows.report import report

    data = str(tmp_path / "data")
    results = daily_monitor(aoi_ids=["dunai_port"], day=date(2023, 6, 1), data_dir=data)
    assert [(r["aoi_id"], r["day"], r["status"]) for r in results] == [("dunai_port", "2023-06-01", "processed")]

    # The per-source global concurrency limit was created for the run.
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("changedet-source-simulator")
    assert limit.limit >= 1 and limit.active

    # The backfill's first day is the daily run's day: a cache hit returns the persisted
    # result ("processed"); a miss would have found the scene in the cube ("already_processed").
    out = backfill(["dunai_port"], date(2023, 6, 1), date(2023, 6, 8), cadence=7, data_dir=data, chunk_size=1)
    assert [r["day"] for r in out["dunai_port"]] == ["2023-06-01", "2023-06-08"]
    assert [r["status"] for r in out["dunai_port"]] == ["processed", "processed"]
    assert out["dunai_port"][0] == results[0]
    # Re-running a finished range does nothing new: every day comes from the cache.
    again = backfill(["dunai_port"], date(2023, 6, 1), date(2023, 6, 8), cadence=7, data_dir=data)
    assert again == out
    assert len(list((Path(data) / "prefect-results").iterdir())) == 2

    index = Path(report(data_dir=data, out_dir=str(tmp_path / "report"), aoi_ids=["dunai_port"]))
    assert index.name == "index.html" and index.exists() and "dunai" in index.read_text().lower()


def test_source_slot_limits_concurrent_holders_and_is_released(prefect_env):
    import contextvars
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.tasks import _acquire_source_slot, _slots, release_idle_source_slots

    name = "changedet-source-test-one-slot"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))

        def active() -> int:
            return client.read_global_concurrency_limit_by_name(name).active_slots

        # A process keeps the slot it finished with for its next AOI-day of the source:
        # the second use asks the server nothing and holds the same single slot.
        with _acquire_source_slot(name):
            assert active() == 1
            first = set(_slots._held)
        with _acquire_source_slot(name):
            assert active() == 1 and set(_slots._held) == first
        assert active() == 1   # kept, idle, for SOURCE_SLOT_IDLE_S
        assert release_idle_source_slots() == 1 and active() == 0

        held: list[tuple[float, float]] = []

        def hold() -> None:
            with _acquire_source_slot(name):
                t0 = time.monotonic()
                time.sleep(0.3)
                held.append((t0, time.monotonic()))

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(hold,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(held) == 3
        held.sort()
        # One slot: the holders ran one after another, never two at once (the waiting
        # ones took the slot a finished one kept, or got it from the server).
        assert all(a[1] <= b[0] for a, b in zip(held, held[1:])), held
        release_idle_source_slots()
        assert active() == 0
    with pytest.raises(RuntimeError, match="changedet-source-no-such-limit"):
        with _acquire_source_slot("changedet-source-no-such-limit"):
            pass


def test_backfill_runs_the_ready_day_with_the_most_work_left_first(prefect_env, tmp_path):
    from prefect_dask import DaskTaskRunner

    from flows.backfill import backfill

    # One worker thread: AOI-days run one at a time, in the order the flow and the
    # scheduler give them. vostochny_port has 1.5x the pixels of dunai_port (day_cost).
    runner = DaskTaskRunner(cluster_class="distributed.LocalCluster",
                            cluster_kwargs={"n_workers": 1, "threads_per_worker": 1, "processes": False,
                                            "dashboard_address": ":0"})
    out = backfill.with_options(task_runner=runner)(
        ["dunai_port", "vostochny_port"], date(2023, 7, 6), date(2023, 7, 13), cadence=7,
        data_dir=str(tmp_path / "data"), kernels_on_cluster=False)
    assert {a: [r["day"] for r in v] for a, v in out.items()} == {
        "dunai_port": ["2023-07-06", "2023-07-13"], "vostochny_port": ["2023-07-06", "2023-07-13"]}
    started = sorted(((r["timing"]["start_epoch_s"], a, r["day"]) for a, v in out.items() for r in v))
    # Longest chain first (arrival order would start dunai_port, listed first); then
    # dunai's first day (two days of work behind it: 0.73) before vostochny's last (0.56).
    assert [(a, d) for _, a, d in started] == [("vostochny_port", "2023-07-06"), ("dunai_port", "2023-07-06"),
                                              ("vostochny_port", "2023-07-13"), ("dunai_port", "2023-07-13")]


def test_backfill_days_carry_prefect_lineage_but_no_dask_dependency(prefect_env, tmp_path):
    """A day waits for the AOI's day before in Prefect (the UI shows the edge), not in Dask.

    A Dask dependency would make the scheduler run the day on the worker holding the
    day before's result: every AOI would stay on the worker its first day ran on.
    """
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin
    from flows.backfill import backfill
    from flows.cluster import task_runner
    from tests.prefect_runs import settled_task_runs

    class Deps(SchedulerPlugin):
        def __init__(self):
            self.deps = {}

        def update_graph(self, scheduler, *, keys, **kwargs):
            for k in keys:
                ts = scheduler.tasks.get(k)
                if ts is not None:
                    self.deps[k] = len(ts.dependencies)

    plugin = Deps()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        cluster.scheduler.add_plugin(plugin)
        state = backfill.with_options(task_runner=task_runner(cluster.scheduler_address))(
            ["dunai_port"], date(2023, 7, 6), date(2023, 7, 20), cadence=7, data_dir=str(tmp_path / "data"),
            kernels_on_cluster=False, return_state=True)
    out = state.result()
    assert [r["day"] for r in out["dunai_port"]] == ["2023-07-06", "2023-07-13", "2023-07-20"]
    assert len(plugin.deps) == 3 and set(plugin.deps.values()) == {0}, plugin.deps
    runs = settled_task_runs(state.state_details.flow_run_id, expect=[("dunai_port", d) for d in (
        "2023-07-06", "2023-07-13", "2023-07-20")]).values()
    by_day = {r.name.split()[-1]: r for r in runs}
    assert sorted(by_day) == ["2023-07-06", "2023-07-13", "2023-07-20"]
    waits = {d: {i.id for i in r.task_inputs.get("wait_for", [])} for d, r in by_day.items()}
    assert waits == {"2023-07-06": set(), "2023-07-13": {by_day["2023-07-06"].id},
                     "2023-07-20": {by_day["2023-07-13"].id}}


def test_deployments_per_timezone_with_editable_parameters():
    from prefect.deployments.runner import EntrypointType

    from changedet.aoi import list_aois
    from flows.deploy import build_deployments, timezone_slug

    deps = {d.name: d for d in build_deployments(data_dir="/data")}
    by_tz = {}
    for a in list_aois():
        by_tz.setdefault(a.timezone, []).append(a.id)
    for tz, ids in by_tz.items():
        d = deps[f"daily-{timezone_slug(tz)}"]
        assert d.parameters["aoi_ids"] == sorted(ids) and d.parameters["data_dir"] == "/data"
        [sched] = d.schedules
        assert sched.schedule.cron == "0 6 * * *" and sched.schedule.timezone == tz and sched.active
        assert d.entrypoint == "flows.daily.daily_monitor" and d.entrypoint_type == EntrypointType.MODULE_PATH
        # Every flow parameter is in the schema, so the UI can edit it.
        assert {"aoi_ids", "day", "data_dir", "seed", "registry"} <= set(d._parameter_openapi_schema.properties)
    assert deps["changedet-backfill"].schedules in (None, [])
    assert {"start", "end", "cadence", "chunk_size"} <= set(deps["changedet-backfill"]._parameter_openapi_schema.properties)
    assert deps["changedet-report"].entrypoint == "flows.report.report"


def test_idempotency_key_depends_only_on_the_backfill():
    from flows.deploy import backfill_parameters, idempotency_key

    a = backfill_parameters(["b", "a"], date(2023, 6, 1), date(2023, 7, 1), 7, data_dir="/d")
    b = backfill_parameters(["a", "b"], date(2023, 6, 1), date(2023, 7, 1), 7, data_dir="/d")
    assert idempotency_key("backfill/x", a) == idempotency_key("backfill/x", b)
    assert idempotency_key("backfill/x", a) != idempotency_key("backfill/y", a)
    c = backfill_parameters(["a", "b"], date(2023, 6, 1), date(2023, 7, 2), 7, data_dir="/d")
    assert idempotency_key("backfill/x", a) != idempotency_key("backfill/x", c)


def test_prefect_yaml_deployments_match_the_flows():
    import importlib

    from prefect.client.schemas.schedules import CronSchedule

    from changedet.aoi import list_aois

    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in doc["deployments"]}
    aois = {a.id: a for a in list_aois()}
    daily_ids = []
    for name, d in deployments.items():
        # Module paths: Dask workers must be able to import the flow's module by name.
        module, _, attr = d["entrypoint"].rpartition(".")
        assert ":" not in d["entrypoint"] and module.startswith("flows."), f"{name}: entrypoint {d['entrypoint']}"
        flow = getattr(importlib.import_module(module), attr)
        params = set(flow.parameters.properties)
        assert set(d.get("parameters", {})) <= params, f"{name}: unknown parameters"
        assert d["work_pool"]["name"] == doc["deployments"][0]["work_pool"]["name"]
        for s in d.get("schedules") or []:
            CronSchedule(cron=s["cron"], timezone=s["timezone"])  # raises on a bad cron or timezone
        if flow.name == "daily_monitor":
            tzs = {s["timezone"] for s in d["schedules"]}
            ids = d["parameters"]["aoi_ids"]
            assert tzs == {aois[i].timezone for i in ids}, f"{name}: schedule timezone differs from its AOIs'"
            daily_ids += ids
    assert sorted(daily_ids) == sorted(aois), "every AOI has exactly one daily deployment"
    assert {"backfill", "report"} <= {d["entrypoint"].rsplit(".", 1)[1] for d in deployments.values()}


def test_cli_serve_and_backfill_commands(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    helptext = subprocess.run([sys.executable, "-m", "changedet", "serve", "--help"], capture_output=True,
                              text=True, env=env, cwd=REPO)
    assert helptext.returncode == 0 and "--dask-address" in helptext.stdout
    bad = subprocess.run([sys.executable, "-m", "changedet", "backfill", "--start", "2023-07-01", "--end",
                          "2023-06-01"], capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode == 2 and "swap them" in bad.stderr and "Traceback" not in bad.stderr


def test_store_url_is_resolved_by_the_flow_and_keys_the_cache(tmp_path, monkeypatch):
    from changedet.errors import CubeError
    from flows.tasks import aoi_day_cache_key, store_url_for

    params = {"aoi_id": "dunai_port", "day": date(2023, 6, 1), "data_dir": str(tmp_path), "seed": 0,
              "registry": None}
    monkeypatch.delenv("CHANGEDET_STORE_URL", raising=False)
    assert store_url_for(None) is None
    plain = aoi_day_cache_key(None, params)
    # The flow passes the variable on to its tasks (workers elsewhere need not have it).
    monkeypatch.setenv("CHANGEDET_STORE_URL", "memory://changedet-flows/a")
    assert store_url_for(None) == "memory://changedet-flows/a"
    assert store_url_for("memory://changedet-flows/b") == "memory://changedet-flows/b"
    monkeypatch.delenv("CHANGEDET_STORE_URL")
    # An AOI-day done on one store is not done on another.
    on_a = aoi_day_cache_key(None, {**params, "store_url": "memory://changedet-flows/a"})
    on_b = aoi_day_cache_key(None, {**params, "store_url": "memory://changedet-flows/b"})
    assert len({plain, on_a, on_b}) == 3
    with pytest.raises(CubeError, match="nosuchscheme://.*CHANGEDET_STORE_URL"):
        store_url_for("nosuchscheme://bucket/x")


def test_cache_prune_flow_and_its_deployment(prefect_env, tmp_path):
    """The weekly flow removes cached Sentinel Hub replies unused for longer than its age,
    from the data directory's cache, and keeps the rest (s45)."""
    import time as _time

    from flows.deploy import PRUNE_CRON, build_deployments
    from flows.maintenance import prune_download_cache

    root = tmp_path / "data" / "cache" / "sentinelhub"
    for name, age_days in (("old", 120), ("used", 3)):
        entry = root / name
        entry.mkdir(parents=True)
        (entry / "request.json").write_text("{}")
        (entry / "response.tiff").write_bytes(b"\0" * 100)
        when = _time.time() - age_days * 86400
        for f in (entry / "request.json", entry / "response.tiff", entry):
            os.utime(f, (when, when))
    out = prune_download_cache(data_dir=str(tmp_path / "data"), older_than_days=90)
    assert (out["removed_entries"], out["kept_entries"]) == (1, 1) and not (root / "old").exists()
    assert (root / "used" / "response.tiff").exists()
    deps = {d.name: d for d in build_deployments(data_dir="/data")}
    [sched] = deps["changedet-cache-prune"].schedules
    assert sched.schedule.cron == PRUNE_CRON and deps["changedet-cache-prune"].parameters == {"data_dir": "/data"}
