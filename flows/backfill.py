"""``backfill``: process a date range for AOIs; chunked, idempotent and resumable.

Every AOI-day is one cached task (key: AOI, scene id, configuration hash; results
persisted under the data directory), so re-running a finished range does nothing and a
crashed run, started again with the same parameters (or re-scheduled: see
:func:`flows.submit.submit_backfill`), resumes after the last finished AOI-day. Days of
one AOI run in order (alerts depend on the order); AOIs run in parallel on the Dask
cluster, within each source's global concurrency limit. The chains with the most work
left go first (``changedet.pipeline.chain_priorities``): a backfill lasts at least its
longest chain, so that one must not start last. A failed AOI-day stops only its own AOI
(its later days are reported as not run); the others finish, then the flow run fails
with a summary (:class:`BackfillFailed`) and a re-run resumes the failed AOIs.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from datetime import date
from queue import SimpleQueue

import dask
from prefect import flow, get_run_logger

from changedet.errors import ChangedetError
from changedet.pipeline import chain_priorities, dates_between, day_cost
from flows.cluster import task_runner, workers_see_this_api
from flows.daily import default_data_dir, select_aois
from flows.tasks import (ensure_source_limits, process_aoi_day, result_storage, run_config, source_limit_name,
                         store_url_for)


class BackfillFailed(ChangedetError):
    """Some AOI-days of a backfill failed; the message names each AOI, day and error.

    ``results`` holds what did complete (as the flow returns it), ``failures`` one
    :class:`DayFailure` per failed AOI.
    """

    def __init__(self, message: str, results: dict[str, list[dict]], failures: list["DayFailure"]) -> None:
        super().__init__(message)
        self.results, self.failures = results, failures

    def __reduce__(self):  # picklable with its fields (Prefect keeps the flow's exception)
        return type(self), (str(self), self.results, self.failures)


@dataclass(frozen=True)
class DayFailure:
    """One AOI's failed day and the days of that AOI left unrun behind it."""

    aoi_id: str
    day: date
    error: str
    not_run: tuple[date, ...] = ()
    stopped: bool = False   # stopped by ``fail_fast`` (another AOI failed), not by its own error

    def line(self) -> str:
        what = "stopped" if self.stopped else "failed"
        later = (f"; {len(self.not_run)} later day(s) not run ({self.not_run[0]}..{self.not_run[-1]})"
                 if self.not_run else "")
        return f"{self.aoi_id} {what} on {self.day}: {self.error}{later}"


#: Longest error text quoted per AOI in the flow's final message (the task run's own log has it all).
ERROR_CHARS = 300
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")   # greedy: a password may hold an '@'
_SECRET_QUERY = re.compile(
    r"(?i)((?:token|key|secret|password|passwd|pwd|signature|sig|credential|auth)[a-z_-]*[\"']?\s*[=:]\s*[\"']?)"
    r"[^&\s\"',}]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def _error_text(state) -> str:
    """The error of a failed AOI-day, short and without credentials.

    Changedet's own errors never carry secrets; anything else (an HTTP client's error
    quoting a URL) may, so user info and secret-looking query values are masked.
    """
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as read_error:  # noqa: BLE001  (the state's message still says what happened)
        exc = read_error if not state.message else None
    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else (state.message or state.name)
    text = _USERINFO.sub("***@", " ".join(text.split()))
    text = _SECRET_QUERY.sub(r"\1***", _BEARER.sub(r"\1 ***", text))
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 3] + "..."


def _final_state(future):
    """The final Prefect state of a finished AOI-day's future (Crashed if Dask lost it)."""
    from prefect.states import Crashed

    future.wait()
    try:
        state = future.state  # final here: set by wait() from the worker's answer
    except Exception as exc:  # noqa: BLE001
        return Crashed(message=f"state unknown: {type(exc).__name__}: {exc}")
    if not state.is_final():
        # The Dask future failed without a Prefect state (a worker killed mid-task, an
        # answer that could not be unpickled): the API still says Running.
        try:
            error = future.wrapped_future.exception()
        except Exception as exc:  # noqa: BLE001  (cancelled)
            error = exc
        crashed = Crashed(message=f"the Dask task ended without a Prefect state: {type(error).__name__}: {error}")
        try:  # the API (and the UI) would say Running for good
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                client.set_task_run_state(future.task_run_id, crashed, force=True)
        except Exception:  # noqa: BLE001  (the flow's own summary still reports it)
            pass
        return crashed
    return state


@flow(name="backfill", log_prints=True, task_runner=task_runner())
def backfill(aoi_ids: list[str] | None = None, start: date = date(2023, 6, 1), end: date = date(2023, 11, 30),
             cadence: int | None = None, data_dir: str | None = None, seed: int = 0, registry: str | None = None,
             chunk_size: int = 8, source_concurrency: int | None = None,
             kernels_on_cluster: bool = True, store_url: str | None = None,
             fail_fast: bool = False) -> dict[str, list[dict]]:
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
    fail_fast : bool
        Stop the whole backfill at the first failed AOI-day: no AOI-day is submitted
        after it. Each other AOI has at most one day in flight; it runs to its end and
        is kept (interrupting it mid-write would only waste it, and cancelling a day
        the scheduler may be starting at that moment leaves Prefect and Dask
        disagreeing). Default: AOIs are independent, so a failed day stops only its own
        AOI (its later days depend on its history and are not run) and every other AOI
        runs to the end.

    Returns
    -------
    dict
        AOI id -> the results of its days, in date order.

    Raises
    ------
    BackfillFailed
        After every AOI that could run has finished, when any AOI-day failed: the flow
        run ends Failed, its message naming each failed AOI, the day, the error and the
        days not run. Everything that completed is stored and cached; running the same
        backfill again (``changedet backfill --submit`` re-schedules the failed run)
        skips the completed days and resumes each failed AOI at its failed day.
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
    days_of: dict[object, date] = {}   # task run id -> its day
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
        days_of[f.task_run_id] = d
        # Woken by completions (no polling): the callback only queues the AOI's name,
        # the flow's own thread submits (task.submit needs the flow run's context).
        f.add_done_callback(lambda _f, a=aoi_id: finished.put(a))

    failures: dict[str, DayFailure] = {}
    ended = done = 0   # AOI-days that ended (any state), that completed

    def fail(aoi_id: str, day: date, error: str, stopped: bool = False) -> None:
        not_run = tuple(d for d in todo[aoi_id] if d != day)
        todo[aoi_id].clear()
        failures[aoi_id] = DayFailure(aoi_id, day, error, not_run, stopped)
        log = logger.warning if stopped else logger.error
        log("backfill: %s", failures[aoi_id].line())

    with workers_see_this_api():
        # Longest chain first in submission too (the scheduler breaks ties by arrival).
        for a in sorted(todo, key=lambda a: -priority[(a, todo[a][0])]):
            submit_next(a)
        while in_flight:
            a = finished.get()
            f = in_flight.pop(a)
            state = _final_state(f)
            ended += 1
            if state.is_completed():
                done += 1
                out[a].append(state.result())
                before[a] = state
                if todo[a] and not (fail_fast and failures):
                    submit_next(a)
                elif todo[a]:
                    fail(a, todo[a][0], "not started: fail_fast after " + _first(failures), stopped=True)
            else:
                # The AOI's later days would read a history with a hole: they are not run.
                # Other AOIs are independent and go on (with fail_fast, each stops when
                # its day in flight ends, above).
                fail(a, days_of[f.task_run_id], _error_text(state))
            if ended % every == 0 or not in_flight:
                logger.info("backfill: %d of %d AOI-days done", done, total)
    if failures:
        head = (f"backfill: {len(failures)} of {len(out)} AOIs did not finish ({done} of {total} AOI-days "
                f"done and kept); run the same backfill again to resume them")
        # The AOIs that failed first, then those fail_fast stopped.
        order = sorted(failures.values(), key=lambda x: (x.stopped, x.aoi_id))
        raise BackfillFailed(head + ": " + "; ".join(x.line() for x in order), out, order)
    return out


def _first(failures: dict[str, DayFailure]) -> str:
    x = next(x for x in failures.values() if not x.stopped)
    return f"{x.aoi_id} failed on {x.day}"
