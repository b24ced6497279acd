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
        Progress is logged every ``chunk_size`` finished AOI-days. Every AOI has one day
        in flight at a time (its days run in order): each is submitted when the day
        before it has finished, so it runs on whichever worker is free; earlier versions
        submitted up to ``chunk_size`` days per AOI ahead, bound to the worker of the
        AOI's first day. The parameter keeps its name and default so that backfills
        submitted before keep their idempotency keys.
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
    todo = {a: deque(ds) for a, ds in days.items() if ds}
    in_flight: dict[str, object] = {}
    finished: SimpleQueue[str] = SimpleQueue()
    before: dict[str, object] = {}
    out: dict[str, list[dict]] = {a.id: [] for a in aois}
    every = max(chunk_size, 1)

    def submit_next(aoi_id: str) -> None:
        d = todo[aoi_id].popleft()
        # Dask runs the queued AOI-day with the most work left behind it first.
        with dask.annotate(priority=int(round(1000 * priority[(aoi_id, d)]))):
            # The day before has finished: its final State (not its future) is passed, so
            # Prefect records the dependency while Dask gets no dependency edge. An edge
            # would make Dask run the day on the worker holding the day before's result,
            # pinning every AOI to the worker its first day ran on: the chains are then
            # a fixed partition of the workers (one ends idle while another still has a
            # chain to finish), and workers added mid-backfill get nothing to do.
            f = task.submit(aoi_id, d, data_dir, seed, registry, kernels_on_cluster, store_url,
                            wait_for=[before[aoi_id]] if aoi_id in before else None)
        in_flight[aoi_id] = f
        # Woken by completions (no polling): the callback only queues the AOI's name,
        # the flow's own thread submits (task.submit needs the flow run's context).
        f.add_done_callback(lambda _f, a=aoi_id: finished.put(a))

    with workers_see_this_api():
        # Longest chain first in submission too (the scheduler breaks ties by arrival).
        for a in sorted(todo, key=lambda a: -priority[(a, todo[a][0])]):
            submit_next(a)
        done = 0
        while done < total:
            a = finished.get()
            f = in_flight.pop(a)
            # result() raises for a failed day (after its retries): the AOI's later days
            # would read a history with a hole, so the backfill stops there.
            out[a].append(f.result())
            before[a] = f.state
            done += 1
            if todo[a]:
                submit_next(a)
            if done % every == 0 or done == total:
                logger.info("backfill: %d of %d AOI-days done", done, total)
    return out
