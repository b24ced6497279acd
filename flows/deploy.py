"""Deployments of the flows: served by ``changedet serve``, and backfills submitted as runs.

``build_deployments`` makes one scheduled ``daily_monitor`` deployment per AOI timezone
(cron evaluated in that timezone, the AOIs of that timezone as its parameter), plus
unscheduled ``backfill``, weekly ``report`` and weekly download-cache prune deployments. Every parameter is editable
in the Prefect UI (a custom run, or the deployment's defaults). A broken AOI file of the
registry does not stop ``changedet serve``: the valid AOIs are deployed and the broken files
are named with their problems (:func:`deployable_aois`).
``submit_backfill`` creates a backfill run with an idempotency key made from its
parameters: submitting the same backfill twice gives the same run, and submitting it
again after that run crashed or failed re-schedules it, so it resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import defaultdict
from datetime import date, datetime, timezone
from typing import Any

DAILY_CRON = "0 6 * * *"      # 06:00 local time: the morning's acquisitions are catalogued by then
REPORT_CRON = "0 7 * * 1"     # Mondays 07:00 UTC
PRUNE_CRON = "0 3 * * 0"      # Sundays 03:00 UTC: hours before any timezone's daily run
BACKFILL_DEPLOYMENT = "backfill/changedet-backfill"


def timezone_slug(tz: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", tz.lower()).strip("-")


def deployable_aois(aoi_ids: list[str] | None, registry: str | None = None) -> tuple[list, list[str]]:
    """``(AOIs to deploy, problems of the registry's broken AOI files)`` for ``changedet serve``.

    Over the whole registry (``aoi_ids`` None) one analyst's typo in one site's file must
    not keep every other site unscheduled: the valid AOIs are deployed and each broken
    file's problem (its path first) is returned, and logged as a warning by
    :func:`build_deployments`. AOIs the user named are all wanted, so any of them broken
    refuses, as does a registry with no valid AOI.

    Raises
    ------
    changedet.errors.AOIError
        A named AOI is broken or unknown (every problem listed), or no AOI is valid.
    """
    from changedet.errors import AOIError
    from flows.daily import select_runnable_aois

    aois, broken = select_runnable_aois(aoi_ids, registry)
    if aoi_ids and broken:
        lines = "\n".join(f"  - {b}" for b in broken)
        raise AOIError(f"{len(broken)} of the AOIs named to serve (--aoi) are broken:\n{lines}\nfix them "
                       "(`changedet aois validate` checks) or leave them out of --aoi")
    return aois, broken


def broken_deploy_text(broken: list[str], watcher: str | None = None) -> str:
    """What ``changedet serve`` says about the broken AOI files it did not deploy.

    ``broken`` holds problems (several per file possible); files are counted, each named
    with its problems. ``watcher``: the daily deployment whose runs check those files.
    """
    from changedet.errors import problems_by_file

    files = problems_by_file(broken)
    listed = "; ".join(f"{path}: " + " / ".join(p.split(": ", 1)[-1] for p in problems)
                       for path, problems in files.items())
    watched = (f"; every run of {watcher} fails naming them while they are broken, and runs them once they "
               "parse" if watcher else "")
    return (f"{len(files)} AOI file(s) of the registry are broken and are NOT scheduled: {listed}{watched}; fix "
            "them (`changedet aois validate` checks) and restart `changedet serve` to schedule them at their "
            "own timezone's hour (the other AOIs are served)")


def unscheduled_ids(broken: list[str]) -> list[str]:
    """The AOI ids (file stems) of the broken AOI files in ``broken`` (problems, paths first)."""
    from pathlib import Path

    from changedet.errors import problems_by_file

    return sorted({Path(path).stem for path in problems_by_file(broken)
                   if Path(path).suffix in (".yaml", ".geojson")})


def build_deployments(*, aoi_ids: list[str] | None = None, data_dir: str | None = None,
                      registry: str | None = None, daily_cron: str = DAILY_CRON, report_cron: str = REPORT_CRON,
                      paused: bool = False) -> list:
    """RunnerDeployments for ``prefect.serve`` (see the module docstring).

    The AOIs deployed are those of :func:`deployable_aois`; broken AOI files of the
    registry are logged (warning, logger ``flows.deploy``: stderr under ``changedet
    serve``) naming each file, its problems and the fix, and their ids are given to the
    first daily deployment (parameter ``unscheduled`` of :func:`flows.daily.daily_monitor`),
    whose every run fails naming them while they are broken and runs them once they parse.

    Raises
    ------
    changedet.errors.AOIError
        An AOI named in ``aoi_ids`` is broken or unknown, or no AOI of the registry is valid.
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.backfill import backfill
    from flows.daily import daily_monitor
    from flows.maintenance import prune_download_cache
    from flows.report import report

    aois, broken = deployable_aois(aoi_ids, registry)
    by_tz: dict[str, list[str]] = defaultdict(list)
    for a in aois:
        by_tz[a.timezone].append(a.id)
    # A file broken now has no timezone to be deployed in. Its id goes to the first daily
    # deployment, whose every run fails naming it while broken and runs it once it parses:
    # neither forgotten after this one warning nor left unmonitored once fixed.
    unscheduled = unscheduled_ids(broken)
    first = f"daily-{timezone_slug(min(by_tz))}" if by_tz else None
    if broken:
        logging.getLogger(__name__).warning("changedet serve: %s",
                                            broken_deploy_text(broken, first if unscheduled else None))
    common = {"data_dir": data_dir, "registry": registry}
    # Module entry points: the runner's subprocess imports the flow wherever flows/ is installed.
    kw = {"entrypoint_type": EntrypointType.MODULE_PATH}
    out = []
    for tz, ids in sorted(by_tz.items()):
        name = f"daily-{timezone_slug(tz)}"
        extra = {"unscheduled": unscheduled} if name == first and unscheduled else {}
        out.append(daily_monitor.to_deployment(
            name=name, schedules=[Cron(daily_cron, timezone=tz)], paused=paused,
            parameters={"aoi_ids": sorted(ids), **extra, **common}, tags=["changedet", "daily"],
            description=f"Daily monitoring of {', '.join(sorted(ids))} at {daily_cron!r} {tz}; the day "
                        "processed is the local day before the scheduled start (yesterday's acquisitions).", **kw))
    out.append(backfill.to_deployment(
        name="changedet-backfill", parameters={"aoi_ids": aoi_ids, **common}, tags=["changedet", "backfill"],
        description="Backfill a date range; submit with `changedet backfill --submit` (idempotent).", **kw))
    out.append(report.to_deployment(
        name="changedet-report", schedules=[Cron(report_cron, timezone="UTC")], paused=paused,
        parameters={"aoi_ids": aoi_ids, **common}, tags=["changedet", "report"],
        description="Weekly analyst report.", **kw))
    out.append(prune_download_cache.to_deployment(
        name="changedet-cache-prune", schedules=[Cron(PRUNE_CRON, timezone="UTC")], paused=paused,
        parameters={"data_dir": data_dir}, tags=["changedet", "maintenance"],
        description="Weekly: remove Sentinel Hub replies no run used for 90 days (max_gb caps the cache too).", **kw))
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
