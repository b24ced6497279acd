"""``daily_monitor``: process every (or a selection of) AOI for one day."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from changedet.aoi import load_aoi, scan_registry
from changedet.errors import AOIError, ChangedetError
from flows.cluster import task_runner, workers_see_this_api
from flows.tasks import (ensure_source_limits, process_aoi_day, result_storage, run_config, source_limit_name,
                         store_url_for)


class DailyFailed(ChangedetError):
    """Some AOIs of a daily run failed, or AOI files of the registry are broken; raised once
    every AOI's day has ended.

    The message names each failed AOI, its day and error (a configuration error names the
    AOI file, source entry and setting to fix), and each broken AOI file with its problem;
    ``results`` holds the days that completed (as the flow returns them), ``failures`` one
    ``(aoi_id, day ISO, error)`` per failed AOI, ``broken`` one problem text (starting with
    the file's path) per broken AOI file, not run.
    """

    def __init__(self, message: str, results: list[dict], failures: list[tuple[str, str, str]],
                 broken: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.results, self.failures, self.broken = results, failures, list(broken)

    def __reduce__(self):  # picklable with its fields (Prefect keeps the flow's exception)
        return type(self), (str(self), self.results, self.failures, self.broken)


def default_data_dir() -> str:
    return os.environ.get("CHANGEDET_DATA_DIR", "changedet-data")


def select_runnable_aois(aoi_ids: list[str] | None, registry: str | None = None) -> tuple[list, list[str]]:
    """``(AOIs to run, problems of the broken AOI files not run)``.

    One analyst's typo in one site's file must not stop the monitoring of every other
    site, so the valid AOIs run and each broken file's problem (its path first) is
    returned for the flow to fail with once the others ran. That holds for named
    ``aoi_ids`` too (the served daily deployments name their timezone's AOIs, and a file
    may break after ``changedet serve`` started); an id with no file in the registry
    (a typo in the ids themselves) raises :class:`AOIError` at once. A selection that
    yields no valid AOI at all raises at once.
    """
    from pathlib import Path

    from changedet.aoi import _combine, default_registry

    if aoi_ids:
        reg = Path(registry) if registry else default_registry()
        aois, errors = [], []
        for a in aoi_ids:
            try:
                aois.append(load_aoi(a, registry=reg))
            except AOIError as exc:
                # An id or path with a file behind it is a broken file; nothing there is a typo.
                if not (Path(a).is_file() or (reg / f"{a}.yaml").exists() or (reg / f"{a}.geojson").exists()):
                    raise
                errors.append(exc)
        if not aois:
            raise _combine(errors, "the named AOIs")
        return aois, [str(e) for e in errors]
    aois, errors = scan_registry(Path(registry) if registry else None)
    if not aois:
        raise _combine(errors, "the AOI registry") if errors else AOIError("the AOI registry holds no AOI")
    return aois, [str(e) for e in errors]


def broken_text(broken: list[str]) -> str:
    """The flows' words for the broken AOI files of a run (``""`` when none).

    ``broken`` holds problems, several per file possible: files are counted.
    """
    from changedet.errors import problems_by_file

    if not broken:
        return ""
    return (f"{len(problems_by_file(broken))} AOI file(s) of the registry are broken and were not run (fix them, "
            f"`changedet aois validate` checks): " + "; ".join(broken))


def unscheduled_aois(ids: list[str] | None, registry: str | None, have: set[str]) -> tuple[list, list[str]]:
    """``(AOIs to run, problems)`` of the AOI files ``changedet serve`` found broken and did not schedule.

    Checked on every run of the daily deployment they were given to
    (:func:`flows.deploy.build_deployments`): one still broken is a problem the run fails
    with (named, as a file that breaks later is); one that parses now is run with this
    deployment (and a warning says to restart serve, which schedules it at its own
    timezone's hour). An id whose files left the registry is no longer wanted. Ids in
    ``have`` (run anyway) are skipped.
    """
    from pathlib import Path

    from changedet.aoi import default_registry

    reg = Path(registry) if registry else default_registry()
    aois, problems = [], []
    for aoi_id in ids or []:
        if aoi_id in have or not ((reg / f"{aoi_id}.yaml").exists() or (reg / f"{aoi_id}.geojson").exists()):
            continue
        try:
            aois.append(load_aoi(aoi_id, registry=reg))
        except AOIError as exc:
            problems.append(str(exc))
    return aois, problems


def day_for(aoi, scheduled: datetime | None) -> date:
    """The day a daily run scheduled at ``scheduled`` processes: the local calendar day
    BEFORE the scheduled start, in the AOI's timezone.

    The daily schedule starts at 06:00 local (``flows.deploy.DAILY_CRON``): the day that
    has just begun holds no acquisition yet (sun-synchronous optical passes are ~10:30
    local), while yesterday's are catalogued by then. The day is searched as the AOI's
    local day (:func:`changedet.pipeline.search_day`: the UTC days it overlaps, each
    acquisition kept on the one local day its time falls in), so the ~10:30-local pass of
    a site east of about UTC+10, taken on the UTC day before, is this day's, and a backfill
    over the same days finds each acquisition on the same day.
    Deriving the day from the *scheduled* time (not the wall clock) makes a late or re-run
    schedule process the day it was meant for. An AOI run by another timezone's deployment
    (one fixed after ``changedet serve`` started) gets its own local yesterday too.
    """
    when = scheduled or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(ZoneInfo(aoi.timezone)).date() - timedelta(days=1)


@flow(name="daily_monitor", log_prints=True, task_runner=task_runner())
def daily_monitor(aoi_ids: list[str] | None = None, day: date | None = None, data_dir: str | None = None,
                  seed: int = 0, registry: str | None = None, source_concurrency: int | None = None,
                  kernels_on_cluster: bool = True, store_url: str | None = None,
                  unscheduled: list[str] | None = None) -> list[dict]:
    """Acquire, co-register, count and alert for each AOI on one day.

    Parameters
    ----------
    aoi_ids : list of str, optional
        AOIs to process (default: the whole registry).
    day : date, optional
        Day to process; default: the local day before the flow run's *scheduled* start, in
        each AOI's timezone (:func:`day_for`; a late or re-run schedule processes the day it
        was for).
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
    unscheduled : list of str, optional
        AOI ids whose files ``changedet serve`` found broken when it started (it gives them
        to one daily deployment): each run fails naming those still broken, and runs
        those that parse now (see :func:`unscheduled_aois`).

    Returns
    -------
    list of dict
        One result per AOI (``changedet.pipeline.DayResult`` as a dict).

    Raises
    ------
    DailyFailed
        Once every AOI's day has ended, when any failed or an AOI file (of the registry,
        or a named one) is broken: the message names each failed AOI, its day and
        error, and each broken file and its problem; the other AOIs' days are done and kept.
    AOIError
        At once, when a named AOI has no file in the registry, or no selected AOI is valid
        (a broken file among several is reported at the end, the others run).
    """
    logger = get_run_logger()
    aois, broken = select_runnable_aois(aoi_ids, registry)
    late, still_broken = unscheduled_aois(unscheduled if aoi_ids else None, registry, {a.id for a in aois})
    aois, broken = aois + late, broken + still_broken
    if late:
        logger.warning("daily_monitor: %s broken when `changedet serve` started, valid now: run with this "
                       "deployment; restart `changedet serve` to schedule them at their own timezone's hour",
                       ", ".join(a.id for a in late))
    if broken:
        logger.error("daily_monitor: %s", broken_text(broken))
    scheduled = flow_run.scheduled_start_time if flow_run.id else None
    data_dir = data_dir or default_data_dir()
    store_url = store_url_for(store_url)
    cfg = run_config(data_dir, seed, registry, store_url)
    ensure_source_limits({source_limit_name(a, cfg) for a in aois}, source_concurrency)
    from flows.backfill import _error_text, _final_state  # here: flows.backfill imports this module

    task = process_aoi_day.with_options(result_storage=result_storage(data_dir))
    futures, submitted = [], []
    with workers_see_this_api():
        for a in aois:
            d = day or day_for(a, scheduled)
            logger.info("[%s %s] submitted (scheduled start %s)", a.id, d, scheduled)
            futures.append(task.submit(a.id, d, data_dir, seed, registry, kernels_on_cluster, store_url))
            submitted.append((a, d))
        # Every AOI's day ends before any failure is raised: AOIs are independent, and one
        # AOI's error (a configuration error fails at once, without retries) must not end
        # the flow, and its task runner with the days of the other AOIs still running.
        states = [_final_state(f) for f in futures]
    results, failures = [], []
    for (a, d), state in zip(submitted, states):
        if state.is_completed():
            results.append(state.result())
        else:
            failures.append((a.id, d.isoformat(), _error_text(state)))
    alerts = [al for r in results for al in r["alerts"]]
    logger.info("%d AOIs processed, %d alerts opened or escalated", len(results), len(alerts))
    if failures or broken:
        parts = []
        if failures:
            parts.append(f"{len(failures)} of {len(futures)} AOIs failed (the others completed and are kept): "
                         + "; ".join(f"{a} failed on {d}: {e}" for a, d, e in failures))
        else:
            parts.append(f"all {len(futures)} AOIs that could run completed (kept)")
        if broken:
            parts.append(broken_text(broken))
        message = "daily_monitor: " + "; and ".join(parts)
        logger.error("%s", message)
        raise DailyFailed(message, results, failures, broken)
    return results


if __name__ == "__main__":  # pragma: no cover
    daily_monitor()
