"""``backfill``: process a date range for AOIs; chunked, idempotent and resumable.

Every AOI-day is one cached task (key: AOI, scene id, configuration hash; results
persisted under the data directory), so re-running a finished range does nothing and a
crashed run, started again with the same parameters (or re-scheduled: see
:func:`flows.submit.submit_backfill`), resumes after the last finished AOI-day. Days of
one AOI run in order (alerts depend on the order); AOIs run in parallel on the Dask
cluster, within each source's global concurrency limit.
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger

from changedet.pipeline import dates_between
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
        Dates per AOI submitted at once; the flow waits for a chunk before the next, so
        the number of task runs in flight stays bounded and progress is logged per chunk.
    """
    logger = get_run_logger()
    aois = select_aois(aoi_ids, registry)
    data_dir = data_dir or default_data_dir()
    store_url = store_url_for(store_url)
    cfg = run_config(data_dir, seed, registry, store_url)
    ensure_source_limits({source_limit_name(a, cfg) for a in aois}, source_concurrency)
    task = process_aoi_day.with_options(result_storage=result_storage(data_dir))
    days = {a.id: dates_between(start, end, cadence or a.cadence_days) for a in aois}
    n_chunks = max((len(d) + chunk_size - 1) // chunk_size for d in days.values())
    out: dict[str, list[dict]] = {a.id: [] for a in aois}
    prev: dict[str, object] = {}
    with workers_see_this_api():
        for k in range(n_chunks):
            futures = []
            for a in aois:
                for d in days[a.id][k * chunk_size:(k + 1) * chunk_size]:
                    # Each day waits for the AOI's previous day: its alerts read that history.
                    f = task.submit(a.id, d, data_dir, seed, registry, kernels_on_cluster, store_url,
                                    wait_for=[prev[a.id]] if a.id in prev else None)
                    prev[a.id] = f
                    futures.append((a.id, f))
            for aoi_id, f in futures:
                out[aoi_id].append(f.result())
            done = sum(len(v) for v in out.values())
            logger.info("backfill chunk %d/%d done (%d of %d AOI-days)", k + 1, n_chunks, done,
                        sum(len(v) for v in days.values()))
    return out

