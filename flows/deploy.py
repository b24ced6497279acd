"""Deployments of the flows: served by ``changedet serve``, and backfills submitted as runs.

``build_deployments`` makes one scheduled ``daily_monitor`` deployment per AOI timezone
(cron evaluated in that timezone, the AOIs of that timezone as its parameter), plus
unscheduled ``backfill`` and weekly ``report`` deployments. Every parameter is editable
in the Prefect UI (a custom run, or the deployment's defaults).
``submit_backfill`` creates a backfill run with an idempotency key made from its
parameters: submitting the same backfill twice gives the same run, and submitting it
again after that run crashed or failed re-schedules it, so it resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from datetime import date, datetime, timezone
from typing import Any

DAILY_CRON = "0 6 * * *"      # 06:00 local time: the morning's acquisitions are catalogued by then
REPORT_CRON = "0 7 * * 1"     # Mondays 07:00 UTC
BACKFILL_DEPLOYMENT = "backfill/changedet-backfill"


def timezone_slug(tz: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", tz.lower()).strip("-")


def build_deployments(*, aoi_ids: list[str] | None = None, data_dir: str | None = None,
                      registry: str | None = None, daily_cron: str = DAILY_CRON, report_cron: str = REPORT_CRON,
                      paused: bool = False) -> list:
    """RunnerDeployments for ``prefect.serve`` (see the module docstring)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.backfill import backfill
    from flows.daily import daily_monitor, select_aois
    from flows.report import report

    by_tz: dict[str, list[str]] = defaultdict(list)
    for a in select_aois(aoi_ids, registry):
        by_tz[a.timezone].append(a.id)
    common = {"data_dir": data_dir, "registry": registry}
    # Module entry points: the runner's subprocess imports the flow wherever flows/ is installed.
    kw = {"entrypoint_type": EntrypointType.MODULE_PATH}
    out = []
    for tz, ids in sorted(by_tz.items()):
        out.append(daily_monitor.to_deployment(
            name=f"daily-{timezone_slug(tz)}", schedules=[Cron(daily_cron, timezone=tz)], paused=paused,
            parameters={"aoi_ids": sorted(ids), **common}, tags=["changedet", "daily"],
            description=f"Daily monitoring of {', '.join(sorted(ids))} at {daily_cron!r} {tz}; the day "
                        "processed is the local day of the scheduled start.", **kw))
    out.append(backfill.to_deployment(
        name="changedet-backfill", parameters={"aoi_ids": aoi_ids, **common}, tags=["changedet", "backfill"],
        description="Backfill a date range; submit with `changedet backfill --submit` (idempotent).", **kw))
    out.append(report.to_deployment(
        name="changedet-report", schedules=[Cron(report_cron, timezone="UTC")], paused=paused,
        parameters={"aoi_ids": aoi_ids, **common}, tags=["changedet", "report"],
        description="Weekly analyst report.", **kw))
    return out


def serve(*, aoi_ids: list[str] | None = None, data_dir: str | None = None, registry: str | None = None,
          daily_cron: str = DAILY_CRON, report_cron: str = REPORT_CRON, limit: int | None = None) -> None:
    """Serve the deployments until interrupted; schedules stay active when it stops."""
    import prefect

    deployments = build_deployments(aoi_ids=aoi_ids, data_dir=data_dir, registry=registry,
                                    daily_cron=daily_cron, report_cron=report_cron)
    # pause_on_shutdown=False: restarting the worker (an upgrade, a crash) must not
    # silently switch the daily schedules off.
    prefect.serve(*deployments, pause_on_shutdown=False, limit=limit)


def backfill_parameters(aoi_ids: list[str] | None, start: date, end: date, cadence: int | None = None, *,
                        data_dir: str | None = None, seed: int = 0, registry: str | None = None,
                        chunk_size: int = 8, store_url: str | None = None,
                        fail_fast: bool = False) -> dict[str, Any]:
    doc = {"aoi_ids": sorted(aoi_ids) if aoi_ids else None, "start": start.isoformat(), "end": end.isoformat(),
           "cadence": cadence, "data_dir": data_dir, "seed": seed, "registry": registry, "chunk_size": chunk_size}
    if store_url:  # only when given: keys of backfills submitted without one stay as they were
        doc["store_url"] = store_url
    if fail_fast:  # likewise
        doc["fail_fast"] = True
    return doc


def idempotency_key(deployment: str, parameters: dict[str, Any]) -> str:
    doc = json.dumps({"deployment": deployment, "parameters": parameters}, sort_keys=True, default=str)
    return "changedet-backfill-" + hashlib.sha256(doc.encode()).hexdigest()[:24]


def submit_backfill(aoi_ids: list[str] | None, start: date, end: date, cadence: int | None = None, *,
                    deployment: str = BACKFILL_DEPLOYMENT, data_dir: str | None = None, seed: int = 0,
                    registry: str | None = None, chunk_size: int = 8, wait: float | None = 0,
                    store_url: str | None = None, fail_fast: bool = False):
    """Create (or find, or resume) the deployment run of a backfill.

    Returns
    -------
    (FlowRun, str)
        The run and what happened: ``scheduled`` (new, or the same backfill is
        waiting to start), ``running`` (it is running now), ``done`` (it completed: nothing to do) or
        ``resumed`` (it had crashed, failed or been cancelled and is scheduled again;
        finished AOI-days are cache hits, so it continues where it stopped).
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Scheduled

    params = backfill_parameters(aoi_ids, start, end, cadence, data_dir=data_dir, seed=seed, registry=registry,
                                 chunk_size=chunk_size, store_url=store_url, fail_fast=fail_fast)
    key = idempotency_key(deployment, params)
    run = run_deployment(deployment, parameters=params, idempotency_key=key, timeout=0, as_subflow=False,
                         tags=["changedet", "backfill"])
    state = run.state
    if state is None or state.is_scheduled() or state.is_pending():
        action = "scheduled"
    elif state.is_completed():
        action = "done"
    elif state.is_final():  # crashed, failed, cancelled
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Scheduled(scheduled_time=datetime.now(timezone.utc)), force=True)
            run = client.read_flow_run(run.id)
        action = "resumed"
    else:
        action = "running"
    if wait:
        run = wait_for_run(run.id, timeout=wait)
    return run, action


def wait_for_run(run_id, *, timeout: float, poll: float = 1.0):
    """Poll a flow run until it reaches a final state or ``timeout`` seconds pass."""
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if (run.state and run.state.is_final()) or time.monotonic() > deadline:
                return run
            time.sleep(poll)
