"""``daily_monitor``: process every (or a selection of) AOI for one day."""

from __future__ import annotations

import os
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from changedet.aoi import list_aois, load_aoi
from flows.cluster import task_runner, workers_see_this_api
from flows.tasks import (ensure_source_limits, process_aoi_day, result_storage, run_config, source_limit_name,
                         store_url_for)


def default_data_dir() -> str:
    return os.environ.get("CHANGEDET_DATA_DIR", "changedet-data")


def select_aois(aoi_ids: list[str] | None, registry: str | None = None):
    from pathlib import Path

    reg = Path(registry) if registry else None
    return [load_aoi(a, registry=reg) for a in aoi_ids] if aoi_ids else list_aois(reg)


def day_for(aoi, scheduled: datetime | None) -> date:
    """The local calendar day of a scheduled start in the AOI's timezone.

    Deriving the day from the *scheduled* time (not the wall clock) makes a late or
    re-run schedule process the day it was meant for.
    """
    when = scheduled or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(ZoneInfo(aoi.timezone)).date()


@flow(name="daily_monitor", log_prints=True, task_runner=task_runner())
def daily_monitor(aoi_ids: list[str] | None = None, day: date | None = None, data_dir: str | None = None,
                  seed: int = 0, registry: str | None = None, source_concurrency: int | None = None,
                  kernels_on_cluster: bool = True, store_url: str | None = None) -> list[dict]:
    """Acquire, co-register, count and alert for each AOI on one day.

    Parameters
    ----------
    aoi_ids : list of str, optional
        AOIs to process (default: the whole registry).
    day : date, optional
        Day to process; default: the local day, in each AOI's timezone, of the flow run's
        *scheduled* start (so a late or re-run schedule processes the day it was for).
    data_dir : str, optional
        Cubes, metrics and outbox (default: ``$CHANGEDET_DATA_DIR`` or ``changedet-data``).
    seed : int
        Simulator seed.
    registry : str, optional
        AOI registry directory (default: ``$CHANGEDET_AOIS`` or the shipped ``aois/``).
    source_concurrency : int, optional
        Slots of each source's global concurrency limit when the flow has to create it
        (default ``$CHANGEDET_SOURCE_CONCURRENCY`` or 2); an existing limit is kept.
    kernels_on_cluster : bool
        Run the pipeline's dask computations on the task runner's cluster.
    store_url : str, optional
        Where cubes and products go (a path or fsspec URL such as ``s3://bucket/prefix``;
        default ``$CHANGEDET_STORE_URL``, else ``data_dir``). Metrics, outbox, evidence
        and task results stay under ``data_dir``.
    """
    logger = get_run_logger()
    aois = select_aois(aoi_ids, registry)
    scheduled = flow_run.scheduled_start_time if flow_run.id else None
    data_dir = data_dir or default_data_dir()
    store_url = store_url_for(store_url)
    cfg = run_config(data_dir, seed, registry, store_url)
    ensure_source_limits({source_limit_name(a, cfg) for a in aois}, source_concurrency)
    task = process_aoi_day.with_options(result_storage=result_storage(data_dir))
    futures = []
    with workers_see_this_api():
        for a in aois:
            d = day or day_for(a, scheduled)
            logger.info("[%s %s] submitted (scheduled start %s)", a.id, d, scheduled)
            futures.append(task.submit(a.id, d, data_dir, seed, registry, kernels_on_cluster, store_url))
        results = [f.result() for f in futures]
    alerts = [al for r in results for al in r["alerts"]]
    logger.info("%d AOIs processed, %d alerts opened or escalated", len(results), len(alerts))
    return results


if __name__ == "__main__":  # pragma: no cover
    daily_monitor()
