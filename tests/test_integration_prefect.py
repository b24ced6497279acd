"""End to end on 127.0.0.1: a real ``prefect server``, ``dask scheduler``, two ``dask worker``s and
``changedet serve``; deployment runs triggered through the API.

One stack serves the module. The AOI is the Tumangang-Khasan bridge (daily cadence, one
track) from a copy of the registry whose rules add a record rule that can fire after
one earlier observation, so two AOI-days are enough to open an alert:

* the daily deployment runs twice, for 2023-08-24 and 2023-10-05, each day derived from
  the run's *scheduled* start (given through the API) in the AOI's timezone; the second
  run opens an alert in the outbox;
* the same two days as a backfill submitted with an idempotency key into another data
  directory; its flow-run process is killed after the first day reached the cube, the
  runner reports the run Crashed, submitting the same backfill again re-schedules the
  same run, and it finishes with exactly the cubes and metric rows of the daily runs
  (the uninterrupted reference);
* the server's scheduler has created the cron runs of the daily deployment at
  06:00 in the AOI's timezone, and stopping ``changedet serve`` leaves them active
  (``pause_on_shutdown=False``);
* last, ``prefect.yaml`` itself is deployed with ``prefect deploy --all`` to a process
  work pool (its pull step pointed at this checkout), a run of its daily deployment is
  triggered through the API and a ``prefect worker --run-once`` executes it on the same
  Dask scheduler.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AOI = "tumangang_khasan_bridge"
DAYS = (date(2023, 8, 24), date(2023, 10, 5))
CADENCE = (DAYS[1] - DAYS[0]).days
RECORD_RULE = """rules:
  - id: railcar_record
    metric: railcars
    kind: historical_max
    params: {min_history: 1, factor: 1.5, min_delta: 3}
    severity: high
    channels: [slack, email]
"""

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, procs=(), poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{name} exited with {p.returncode} while waiting for {what}")
        try:
            value = check()
        except Exception:  # noqa: BLE001 - not up yet
            value = None
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("stack")
    registry = root / "aois"
    (registry / "scenarios").mkdir(parents=True)
    for suffix in (".yaml", ".geojson"):
        shutil.copy(REPO / "aois" / f"{AOI}{suffix}", registry / f"{AOI}{suffix}")
    shutil.copy(REPO / "aois" / "scenarios" / f"{AOI}.yaml", registry / "scenarios" / f"{AOI}.yaml")
    spec = (registry / f"{AOI}.yaml").read_text()
    assert "rules:\n" in spec
    (registry / f"{AOI}.yaml").write_text(spec.replace("rules:\n", RECORD_RULE, 1))

    port, dport = _free_port(), _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_", "CHANGEDET_"))}
    env.update({
        "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        "PREFECT_LOGGING_LEVEL": "INFO", "CHANGEDET_AOIS": str(registry), "PYTHONUNBUFFERED": "1",
    })
    logs = root / "logs"
    logs.mkdir()
    procs: list[tuple[str, subprocess.Popen]] = []

    def start(name, args):
        p = subprocess.Popen(args, env=env, cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT)
        procs.append((name, p))
        return p

    try:
        start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)])
        scheduler = f"tcp://127.0.0.1:{dport}"
        start("dask-scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(dport),
                                 "--no-dashboard"])
        for i in (1, 2):
            # 4 threads for at most 2 mapped AOI-day tasks (the source limit): the tasks'
            # kernels run on the same workers and need free threads.
            start(f"dask-worker-{i}", [str(BIN / "dask"), "worker", scheduler, "--nthreads", "4", "--no-dashboard",
                                       "--host", "127.0.0.1", "--memory-limit", "4GiB", "--name", f"w{i}"])
        _wait("the Prefect API", lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200,
              120, procs)
        from distributed import Client

        with Client(scheduler, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        data = root / "daily-data"
        serve = start("changedet-serve", [str(BIN / "changedet"), "serve", "--dask-address", scheduler,
                                          "--data-dir", str(data), "--registry", str(registry), "--limit", "4"])
        with temporary_settings({PREFECT_API_URL: api}):
            from prefect.client.orchestration import get_client

            def deployed():
                with get_client(sync_client=True) as c:
                    return c.read_deployment_by_name("daily_monitor/daily-asia-vladivostok") and \
                        c.read_deployment_by_name("backfill/changedet-backfill")

            _wait("changedet serve to register its deployments", deployed, 90, procs)
            yield {"root": root, "data": data, "registry": registry, "serve": serve, "api": api, "procs": procs,
                   "logs": logs, "env": env, "scheduler": scheduler}
    except BaseException:
        for name, _ in procs:
            log = logs / f"{name}.log"
            if log.exists():
                sys.stderr.write(f"---- {name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-30:]) + "\n")
        raise
    finally:
        for _, p in reversed(procs):
            _stop(p)


def _run_state(run_id, timeout, procs):
    from flows.deploy import wait_for_run

    run = wait_for_run(run_id, timeout=timeout)
    dead = [f"{name} (exit {p.returncode})" for name, p in procs if p.poll() is not None]
    assert not dead, f"stack processes died: {dead}"
    assert run.state.is_final(), f"flow run {run.name} still {run.state.name} after {timeout} s"
    return run


def _fine_cube(data: Path) -> Path:
    return data / "cubes" / AOI / "vhr_0.5m.provenance.json"


def _cube_record(data: Path) -> list[dict]:
    out = []
    for prov in sorted((data / "cubes" / AOI).glob("*.provenance.json")):
        for s in json.loads(prov.read_text())["scenes"]:
            out.append({k: v for k, v in s.items() if k != "stored_at"} | {"store": prov.name})
    return out


def _cube_pixels(data: Path) -> dict[str, np.ndarray]:
    import xarray as xr

    return {p.name: xr.open_zarr(p, consolidated=False)["data"].values
            for p in sorted((data / "cubes" / AOI).glob("*.zarr"))}


def _metric_rows(data: Path) -> list[tuple]:
    """Every stored observation with its provenance (not the time it was written)."""
    with sqlite3.connect(data / "metrics.sqlite") as db:
        return sorted(db.execute("SELECT aoi_id, feature_id, metric, time, value, provenance FROM metrics"))


def test_daily_deployment_runs_on_the_scheduled_day_and_alerts(stack):
    from prefect.deployments import run_deployment

    from changedet.alerts.outbox import Outbox

    results = []
    for day in DAYS:
        # Midnight UTC after `day` is 10:00 of the next day in Vladivostok: the run must
        # process the local day before its scheduled start, `day`.
        when = datetime(day.year, day.month, day.day, 0, 0, tzinfo=timezone.utc) + timedelta(days=1)
        run = run_deployment("daily_monitor/daily-asia-vladivostok", parameters={"aoi_ids": [AOI]},
                             scheduled_time=when, timeout=0, as_subflow=False)
        run = _run_state(run.id, 240, stack["procs"])
        assert run.state.is_completed(), f"daily run for {day}: {run.state.name} {run.state.message}"
        results.append(run)
    scenes = json.loads(_fine_cube(stack["data"]).read_text())["scenes"]
    assert [s["time"][:10] for s in scenes] == [d.isoformat() for d in DAYS]
    alerts = Outbox(stack["data"] / "outbox").list(aoi_id=AOI)
    assert [a.rule_id for a in alerts] == ["railcar_record"]
    assert alerts[0].opened_at.date() == DAYS[1]
    files = list((stack["data"] / "outbox" / "alerts").glob("*.json"))
    assert len(files) == 1 and alerts[0].id in files[0].read_text()
    assert len(_metric_rows(stack["data"])) >= 2


def test_backfill_killed_midway_resumes_to_the_uninterrupted_result(stack):
    import psutil

    from flows.deploy import submit_backfill

    data = stack["root"] / "backfill-data"
    kw = dict(data_dir=str(data), chunk_size=1)
    run, action = submit_backfill([AOI], DAYS[0], DAYS[1], CADENCE, **kw)
    assert action == "scheduled"
    again, action = submit_backfill([AOI], DAYS[0], DAYS[1], CADENCE, **kw)
    assert again.id == run.id, "the idempotency key must give the same run"

    # Kill the flow-run process (not the runner) once the first day is in the cube.
    _wait("the first backfill day in the cube",
          lambda: _fine_cube(data).exists() and len(json.loads(_fine_cube(data).read_text())["scenes"]) >= 1,
          240, stack["procs"], poll=0.05)

    def flow_run_processes():
        found = []
        for child in psutil.Process(stack["serve"].pid).children(recursive=True):
            try:
                if child.environ().get("PREFECT__FLOW_RUN_ID") == str(run.id):
                    found.append(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    for proc in _wait("the backfill's flow-run process", flow_run_processes, 30, stack["procs"], poll=0.05):
        proc.kill()
    at_kill = len(json.loads(_fine_cube(data).read_text())["scenes"])
    assert at_kill < len(DAYS), "the backfill finished before it could be killed"
    crashed = _run_state(run.id, 60, stack["procs"])
    assert crashed.state.is_crashed() or crashed.state.is_failed(), crashed.state.name

    resumed, action = submit_backfill([AOI], DAYS[0], DAYS[1], CADENCE, **kw)
    assert (resumed.id, action) == (run.id, "resumed")
    done = _run_state(run.id, 240, stack["procs"])
    assert done.state.is_completed(), f"{done.state.name}: {done.state.message}"
    # Submitting a finished backfill does nothing.
    assert submit_backfill([AOI], DAYS[0], DAYS[1], CADENCE, **kw)[1] == "done"

    # Exactly the cube and the metrics of the uninterrupted (daily) runs.
    reference = stack["data"]
    assert _cube_record(data) == _cube_record(reference)
    pixels, ref_pixels = _cube_pixels(data), _cube_pixels(reference)
    assert pixels.keys() == ref_pixels.keys() and len(pixels) == 2
    for name in pixels:
        np.testing.assert_array_equal(pixels[name], ref_pixels[name], err_msg=name)
    assert _metric_rows(data) == _metric_rows(reference)


def test_served_schedules_run_at_0600_local_and_survive_shutdown(stack):
    """Runs last: the server's scheduler has created the cron runs of each timezone's
    deployment; stopping ``changedet serve`` leaves the schedules active."""
    from zoneinfo import ZoneInfo

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as c:
        dep = c.read_deployment_by_name("daily_monitor/daily-asia-vladivostok")

    def auto_scheduled():
        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
        return [r for r in runs if r.auto_scheduled]

    runs = _wait("the server's scheduler to create the daily runs", auto_scheduled, 120, stack["procs"], poll=1)
    for r in runs:
        local = r.expected_start_time.astimezone(ZoneInfo("Asia/Vladivostok"))
        assert (local.hour, local.minute) == (6, 0), f"{r.name} at {local}"
        assert r.parameters.get("aoi_ids") == [AOI]

    serve = stack["serve"]
    os.killpg(serve.pid, signal.SIGTERM)
    serve.wait(timeout=60)
    with get_client(sync_client=True) as c:
        after = c.read_deployment_by_name("daily_monitor/daily-asia-vladivostok")
        schedules = c.read_deployment_schedules(after.id)
    assert not after.paused and schedules and all(s.active for s in schedules), "shutdown paused the schedules"


def test_prefect_yaml_deploys_to_a_process_pool_and_a_worker_runs_it(stack):
    """Runs after the served deployments are stopped: ``prefect deploy`` re-registers the
    same deployment names against the work pool, as an operator switching to workers would."""
    import yaml
    from prefect.deployments import run_deployment

    # The served deployments share these names: the runner of `changedet serve` must not
    # take the run (it has stopped already when the whole module runs).
    _stop(stack["serve"])
    root, env = stack["root"], {**stack["env"], "CHANGEDET_DASK_ADDRESS": stack["scheduler"]}
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    [step] = doc["pull"]
    # The shipped file pulls into the image's /app; here the code is this checkout.
    step["prefect.deployments.steps.set_working_directory"]["directory"] = str(REPO)
    pool = doc["definitions"]["work_pool"]["name"]
    (root / "prefect.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    def prefect(*args, timeout=180):
        out = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        return out

    prefect("work-pool", "create", pool, "--type", "process", "--overwrite")
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(root / "prefect.yaml"))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        deployed = {d.name: d for d in c.read_deployments()}
    for d in doc["deployments"]:
        assert deployed[d["name"]].work_pool_name == pool, d["name"]

    data = root / "yaml-data"
    run = run_deployment("daily_monitor/daily-asia-vladivostok", as_subflow=False, timeout=0,
                         parameters={"aoi_ids": [AOI], "day": DAYS[0].isoformat(), "data_dir": str(data)})
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--run-once",
                               "--type", "process"], env=env, cwd=REPO, start_new_session=True,
                              stdin=subprocess.DEVNULL, stdout=open(stack["logs"] / "worker.log", "w"),
                              stderr=subprocess.STDOUT)
    try:
        done = _run_state(run.id, 240, [p for p in stack["procs"] if p[0] != "changedet-serve"])
        assert done.state.is_completed(), f"{done.state.name}: {done.state.message}\n" + \
            (stack["logs"] / "worker.log").read_text()[-3000:]
        worker.wait(timeout=60)
    finally:
        _stop(worker)
    assert done.work_pool_name == pool
    # The run did the work: the day is in its cube, identical to the served daily run's.
    assert [s["time"][:10] for s in json.loads(_fine_cube(data).read_text())["scenes"]] == [DAYS[0].isoformat()]
    assert _metric_rows(data), "the run recorded no metric"
    served = [r for r in _cube_record(stack["data"]) if r["time"][:10] == DAYS[0].isoformat()]
    if served:  # the served daily run of the same day (absent when this test runs alone)
        assert _cube_record(data) == served
