"""``backfill``: process a date range for AOIs; chunked, idempotent and resumable.

Every AOI-day is one cached task (key: AOI, scene id, configuration hash; results
persisted under the data directory), so re-running a finished range does nothing and a
crashed run, started again with the same parameters (or re-scheduled: see
:func:`flows.submit.submit_backfill`), resumes after the last finished AOI-day. Days of
one AOI run in order (alerts depend on the order); AOIs run in parallel on the Dask
cluster, within each source's global concurrency limit. The chains with the most work
left go first (``changedet.pipeline.chain_priorities``): a backfill lasts at least its
longest chain, so that one must not start last.
"""

from __future__ import annotations

from collections import deque
from datetime import date
from queue import SimpleQueue

import dask
from prefect import flow, get_run_logger

from changedet.pipeline import chain_priorities, dates_between, day_cost
from flows.cluster import task_runner, workers_see_this_api
from flows.daily import default_data_dir, select_aois
from flows.tasks import (ensure_source_limits, process_aoi_day, result_storage, run_config, source_limit_name,
                         store_url_for)


@flow(name="backfill", log_prints=True, task_runner=task_runner())
def backfill(aoi_ids: list[str] | None = None, start: date = date(2023, 6, 1), end: date = date(2023, 11, 30),
             cadence: int | None = None, data_dir: str | None = None, seed: int = 0, registry: str | None = None,
             chunk_size: int = 8, source_concurrency: int | None = None,
             kernels_on_cluster: bool = True, store_url: str | None = None) -> dict[str, list[dict]]:
    """Process ``start``..``end`` for each AOI, every ``cadence`` days.

    Parameters
    ----------
    aoi_ids : list of str, optional
        AOIs (default: the whole registry).
    start, end : date
        First and last day (inclusive).
    cadence : int, optional
        Days between runs; default: each AOI's own cadence.
    data_dir, seed, registry, source_concurrency, kernels_on_cluster, store_url
        As for ``daily_monitor``.
    chunk_size : int
        Days per AOI in flight at once (submitted, not yet finished): each finished day
        lets the flow submit that AOI's next, so the task runs in flight stay bounded
        without the flow ever waiting for a whole batch. Progress is logged every
        ``chunk_size`` finished AOI-days.
    """
    logger = get_run_logger()
    aois = select_aois(aoi_ids, registry)
    data_dir = data_dir or default_data_dir()
    store_url = store_url_for(store_url)
    cfg = run_config(data_dir, seed, registry, store_url)
    ensure_source_limits({source_limit_name(a, cfg) for a in aois}, source_concurrency)
    task = process_aoi_day.with_options(result_storage=result_storage(data_dir))
    days = {a.id: dates_between(start, end, cadence or a.cadence_days) for a in aois}
    priority = chain_priorities(days, {a.id: day_cost(a, cfg) for a in aois})
    total = sum(len(v) for v in days.values())
    # Longest chain first in submission too (the scheduler breaks ties by arrival).
    order = sorted((a for a in days if days[a]), key=lambda a: -priority[(a, days[a][0])])
    todo = {a: deque(days[a]) for a in order}
    in_flight: dict[str, deque] = {a: deque() for a in order}
    finished: SimpleQueue[str] = SimpleQueue()
    prev: dict[str, object] = {}
    out: dict[str, list[dict]] = {a.id: [] for a in aois}

    def submit_next(aoi_id: str) -> None:
        d = todo[aoi_id].popleft()
        # Dask runs the ready AOI-day with the most work left behind it first.
        with dask.annotate(priority=int(round(1000 * priority[(aoi_id, d)]))):
            # Each day waits for the AOI's previous day: its alerts read that history.
            f = task.submit(aoi_id, d, data_dir, seed, registry, kernels_on_cluster, store_url,
                            wait_for=[prev[aoi_id]] if aoi_id in prev else None)
        prev[aoi_id] = f
        in_flight[aoi_id].append(f)
        # Woken by completions (no polling): the callback only queues the AOI's name,
        # the flow's own thread submits (task.submit needs the flow run's context).
        f.add_done_callback(lambda _f, a=aoi_id: finished.put(a))

    with workers_see_this_api():
        for a in order:
            for _ in range(min(max(chunk_size, 1), len(todo[a]))):
                submit_next(a)
        done = 0
        while done < total:
            a = finished.get()
            # Days of one AOI finish in order; result() raises for a failed day.
            out[a].append(in_flight[a].popleft().result())
            done += 1
            if todo[a]:
                submit_next(a)
            if done % max(chunk_size, 1) == 0 or done == total:
                logger.info("backfill: %d of %d AOI-days done", done, total)
    return out

