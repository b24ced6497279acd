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

While it waits for AOI-days to end, the flow watches the Dask cluster they run on
(:class:`ClusterWatch`): a scheduler it can no longer reach, or a cluster without a single
worker for longer than a grace period (``worker_grace_s``), ends the backfill with
:class:`BackfillInterrupted` naming the scheduler, the days kept and the days not done,
instead of waiting for ever on tasks nothing will run. Workers that a nanny restarts
within the grace period are no failure: their days run again. No single AOI-day has a
time limit (one may legitimately take long); a backfill in which no AOI-day at all ends
for ``stall_limit_s`` (default 4 h) is stopped as the last resort.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import date
from queue import Empty, SimpleQueue
from typing import Callable

import dask
from prefect import flow, get_run_logger

from changedet.errors import ChangedetError
from changedet.pipeline import chain_priorities, dates_between, day_cost, days_up_to_today
from flows.cluster import task_runner, workers_see_this_api
from flows.daily import broken_text, default_data_dir, select_runnable_aois
from flows.tasks import (ensure_source_limits, process_aoi_day, result_storage, run_config, source_limit_name,
                         store_url_for)


class BackfillFailed(ChangedetError):
    """Some AOI-days of a backfill failed, or AOI files of the registry are broken; the message
    names each AOI, day and error, and each broken file and its problem.

    ``results`` holds what did complete (as the flow returns it), ``failures`` one
    :class:`DayFailure` per failed AOI, ``broken`` one problem text (the file's path first)
    per broken AOI file, not run.
    """

    def __init__(self, message: str, results: dict[str, list[dict]], failures: list["DayFailure"],
                 broken: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.results, self.failures, self.broken = results, failures, list(broken)

    def __reduce__(self):  # picklable with its fields (Prefect keeps the flow's exception)
        return type(self), (str(self), self.results, self.failures, self.broken)


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


class BackfillInterrupted(BackfillFailed):
    """The backfill stopped waiting: its Dask cluster is gone, or no AOI-day ended for too long.

    ``address`` is the Dask scheduler's address (None when the tasks did not run on
    Dask), ``reason`` what was seen. ``results`` holds every AOI-day that completed
    before (stored and cached: a re-run skips them); ``failures`` has one
    :class:`DayFailure` per AOI that did not finish: the day it was at and the days
    behind it (``stopped``), or its own error if it had failed before.
    """

    def __init__(self, message: str, results: dict[str, list[dict]], failures: list[DayFailure],
                 address: str | None = None, reason: str = "") -> None:
        super().__init__(message, results, failures)
        self.address, self.reason = address, reason

    def __reduce__(self):
        return type(self), (str(self), self.results, self.failures, self.address, self.reason)


#: Default seconds a backfill's Dask cluster may go without a running worker (or without
#: its scheduler answering) before the backfill fails. A nanny restarting a killed
#: worker takes a few seconds, a worker pod rescheduled by Kubernetes up to a minute.
WORKER_GRACE_S = 60.0
#: Default seconds without any AOI-day ending after which the backfill gives up; a
#: last resort for hangs the cluster checks cannot see (a task stuck in a worker).
STALL_LIMIT_S = 4 * 3600.0
#: Environment variables that set the two when the flow's parameters do not (a served
#: deployment reads them from ``changedet serve``'s environment).
WORKER_GRACE_ENV = "CHANGEDET_DASK_WORKER_GRACE_S"
STALL_LIMIT_ENV = "CHANGEDET_BACKFILL_STALL_S"
#: Seconds one question to the scheduler may take before it counts as not answering.
SCHEDULER_RPC_TIMEOUT_S = 10.0


class _Interrupt(Exception):
    """Raised inside the flow's waiting loop by :class:`ClusterWatch`; becomes :class:`BackfillInterrupted`."""

    def __init__(self, reason: str, address: str | None, cluster_lost: bool) -> None:
        super().__init__(reason)
        self.reason, self.address, self.cluster_lost = reason, address, cluster_lost


def _seconds(value: float | None, env: str, default: float, name: str, *, zero_ok: bool) -> float:
    """A watchdog setting: the parameter, else ``$env``, else ``default`` (0 = off where allowed)."""
    source = name
    if value is None:
        raw = os.environ.get(env)
        if raw in (None, ""):
            return default
        source = f"${env}"
        try:
            value = float(raw)
        except ValueError:
            raise ChangedetError(f"{source}={raw!r} is not a number of seconds; set it to e.g. {default:g}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        least = ">= 0 (0 turns it off)" if zero_ok else "> 0"
        raise ChangedetError(f"{source}={value!r}: give a number of seconds {least}, e.g. {default:g}")
    return float(value)


def check_watch_settings(worker_grace_s: float | None, stall_limit_s: float | None,
                         names: tuple[str, str] = ("worker_grace_s", "stall_limit_s")) -> tuple[float, float]:
    """The backfill's grace period and stall limit (s), from the arguments, the environment or the defaults.

    Raises
    ------
    ChangedetError
        A value that is not a number of seconds, naming the argument or variable.
    """
    return (_seconds(worker_grace_s, WORKER_GRACE_ENV, WORKER_GRACE_S, names[0], zero_ok=False),
            _seconds(stall_limit_s, STALL_LIMIT_ENV, STALL_LIMIT_S, names[1], zero_ok=True))


def _dask_client(futures) -> object | None:
    """The ``distributed.Client`` the futures were submitted through (None if not on Dask)."""
    import distributed

    for f in futures:
        wrapped = getattr(f, "wrapped_future", None)
        if isinstance(wrapped, distributed.Future):
            return wrapped.client
    return None


def _where(client) -> str:
    address = getattr(client.scheduler, "address", None) or "?"
    if getattr(client, "cluster", None) is not None:
        return f"the flow's own Dask {type(client.cluster).__name__} (scheduler {address})"
    return f"the Dask cluster at {address}"


class ClusterWatch:
    """What a backfill checks while it waits for AOI-days to end.

    Every ``poll_s`` seconds without a finished AOI-day, :meth:`check` asks the Dask
    scheduler the futures run on (the flow's own client, so a dead scheduler is seen
    at once) which workers are running. A scheduler the client has lost ends the wait
    at once: Dask has cancelled every future on it. No running worker, or a scheduler
    that does not answer, is tolerated for ``grace_s`` seconds (a nanny restarting a
    killed worker, a pod rescheduled), then ends the wait. Independently, no AOI-day
    ending for ``stall_s`` seconds (0: never) ends it.

    Parameters
    ----------
    grace_s : float
        Seconds without a running worker, or without an answer from the scheduler,
        before the cluster counts as lost (> 0).
    stall_s : float
        Seconds without any AOI-day ending before the backfill gives up (0: no limit).
    log : callable, optional
        ``log(level, message)`` for the watch's warnings (cluster degraded, recovered).
    clock : callable
        Monotonic seconds (tests of the logic may pass their own).
    """

    def __init__(self, grace_s: float, stall_s: float, log: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s, self.stall_s, self._log, self._clock = grace_s, stall_s, log, clock
        # Several looks within the grace period, but no tighter than a few per second.
        self.poll_s = min(5.0, max(0.2, grace_s / 5))
        self.unhealthy_since: float | None = None
        self.last_progress = clock()

    def progressed(self) -> None:
        """An AOI-day ended (any state): the stall clock starts again, and the cluster
        evidently runs, so an earlier look at it that found no worker no longer counts
        (checks happen only while no day ends: a flag left from a blip long ago would
        fail the next blip at once)."""
        self.last_progress = self._clock()
        self.unhealthy_since = None

    def check(self, futures) -> None:
        """Raise :class:`_Interrupt` if the cluster under ``futures`` is lost or the backfill stalled."""
        now = self._clock()
        client = _dask_client(futures)
        if client is not None:
            self._check_cluster(client, now)
        if self.stall_s and now - self.last_progress >= self.stall_s:
            address = getattr(client.scheduler, "address", None) if client is not None else None
            raise _Interrupt(f"no AOI-day ended for {now - self.last_progress:.0f} s (stall limit {self.stall_s:g} s)",
                             address, cluster_lost=False)

    def _check_cluster(self, client, now: float) -> None:
        address = getattr(client.scheduler, "address", None)
        if client.status != "running":
            raise _lost_scheduler(client)
        try:
            # Every worker the scheduler knows, not only those in the "running" state: a
            # worker paused at its memory limit, or retiring, still runs the day it has.
            workers = client.sync(client.scheduler.ncores, callback_timeout=SCHEDULER_RPC_TIMEOUT_S)
            problem, lasting = (None, "") if workers else ("has no worker", "has had no worker")
        except Exception as exc:  # noqa: BLE001  (timeouts, refused connections: all mean no answer)
            problem = f"does not answer ({type(exc).__name__}: {exc})"
            lasting = f"has not answered ({type(exc).__name__}: {exc})"
        if problem is None:
            if self.unhealthy_since is not None and self._log:
                self._log("info", f"backfill: {_where(client)} has {len(workers)} worker(s) again")
            self.unhealthy_since = None
            return
        if self.unhealthy_since is None:
            self.unhealthy_since = now
            if self._log:
                self._log("warning", f"backfill: {_where(client)} {problem}; waiting up to {self.grace_s:g} s "
                                     "for it to recover")
        elif now - self.unhealthy_since >= self.grace_s:
            raise _Interrupt(f"{_where(client)} {lasting} for {now - self.unhealthy_since:.0f} s "
                             f"(grace {self.grace_s:g} s)", address, cluster_lost=True)

    def cluster_gone(self, futures) -> _Interrupt | None:
        """After an AOI-day ended without a Prefect state: is the cluster, not the day, to blame?

        Only a lost scheduler connection answers yes at once (Dask cancels every future
        then); a cluster without workers is not yet lost here (see :meth:`check`).
        """
        client = _dask_client(futures)
        return _lost_scheduler(client) if client is not None and client.status != "running" else None


def _lost_scheduler(client) -> _Interrupt:
    # The client lost its connection to the scheduler ("connecting" while it tries
    # again, "closed" once it gave up): Dask has cancelled every future on it.
    return _Interrupt(f"{_where(client)} lost its scheduler: the connection dropped and Dask cancelled the days "
                      "in flight", getattr(client.scheduler, "address", None), cluster_lost=True)


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


def _final_state(future, watch: ClusterWatch | None = None, in_flight=()):
    """The final Prefect state of a finished AOI-day's future (Crashed if Dask lost it).

    Fetching the state can itself wait: if the worker holding it died, Dask computes the
    day again. That wait is watched like the others (``watch.check``), so a cluster lost
    at that moment raises :class:`_Interrupt` instead of hanging.
    """
    from prefect.states import Crashed, State

    wrapped = getattr(future, "wrapped_future", None)
    error: BaseException | None = None
    if watch is None or not hasattr(wrapped, "result"):
        future.wait()
    else:
        while True:
            try:
                answer = wrapped.result(timeout=watch.poll_s)
            except TimeoutError as exc:
                if wrapped.status == "error":  # the task failed (perhaps with its own TimeoutError)
                    try:
                        error = wrapped.exception()
                    except Exception as exc2:  # noqa: BLE001
                        error = exc2
                    break
                watch.check(in_flight)
                continue
            except Exception as exc:  # noqa: BLE001  (cancelled, KilledWorker, unpicklable answer)
                error = exc
                break
            if isinstance(answer, State) and answer.is_final():
                return answer
            break
    try:
        state = future.state  # final if the worker answered (wait() kept it), else read from the API
    except Exception as exc:  # noqa: BLE001
        return Crashed(message=f"state unknown: {type(exc).__name__}: {exc}")
    if not state.is_final():
        # The Dask future failed without a Prefect state (a worker killed mid-task, an
        # answer that could not be unpickled, the scheduler gone): the API still says Running.
        if watch is not None:
            gone = watch.cluster_gone(in_flight)
            if gone is not None:   # not this day's fault: every day in flight is lost alike
                raise gone
        if error is None:
            try:
                error = future.wrapped_future.exception()
            except Exception as exc:  # noqa: BLE001  (cancelled)
                error = exc
        crashed = Crashed(message=f"the Dask task ended without a Prefect state: {type(error).__name__}: {error}")
        _mark_crashed([future.task_run_id], crashed)
        return crashed
    return state


def _mark_crashed(task_run_ids, state) -> None:
    """Set the task runs' state in the API, which would otherwise say Running (or Pending) for good.

    Runs the API already shows as final are left alone: a worker may have finished and
    reported a day (stored, and cached for a re-run) that this flow never heard back from.
    """
    _set_unfinished({task_run_id: state for task_run_id in task_run_ids})


def _set_unfinished(states: dict[object, object]) -> None:
    """Force each task run's given state in the API, where the API does not show the run as final."""
    if not states:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (TaskRunFilter, TaskRunFilterId, TaskRunFilterState,
                                                    TaskRunFilterStateType)
        from prefect.client.schemas.objects import StateType

        unfinished = TaskRunFilterState(type=TaskRunFilterStateType(
            any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]))
        with get_client(sync_client=True) as client:
            ids = list(states)
            for i in range(0, len(ids), 200):
                runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                    id=TaskRunFilterId(any_=ids[i:i + 200]), state=unfinished), limit=200)
                for run in runs:
                    client.set_task_run_state(run.id, states[run.id], force=True)
    except Exception:  # noqa: BLE001  (the API record only; the flow's own summary reports it)
        pass


def _next_finished(finished: SimpleQueue, in_flight: dict[str, object], watch: ClusterWatch) -> tuple[str, object]:
    """The next AOI whose day in flight ended, and that day's future; checks the cluster while none does."""
    while True:
        try:
            aoi_id, f = finished.get(timeout=watch.poll_s)
        except Empty:
            watch.check(in_flight.values())
            # A Dask future that ended but whose done-callback never ran would wait for
            # ever: take it from here (the callback, if it comes after all, is ignored).
            for aoi_id, f in in_flight.items():
                wrapped = getattr(f, "wrapped_future", None)
                if wrapped is not None and getattr(wrapped, "status", "pending") in ("finished", "error",
                                                                                     "cancelled"):
                    finished.put((aoi_id, f))
            continue
        if in_flight.get(aoi_id) is f:   # not a late duplicate of a day already taken
            return aoi_id, f


@flow(name="backfill", log_prints=True, task_runner=task_runner())
def backfill(aoi_ids: list[str] | None = None, start: date = date(2023, 6, 1), end: date = date(2023, 11, 30),
             cadence: int | None = None, data_dir: str | None = None, seed: int = 0, registry: str | None = None,
             chunk_size: int = 8, source_concurrency: int | None = None,
             kernels_on_cluster: bool = True, store_url: str | None = None,
             fail_fast: bool = False, worker_grace_s: float | None = None,
             stall_limit_s: float | None = None) -> dict[str, list[dict]]:
    """Process ``start``..``end`` for each AOI, every ``cadence`` days.

    Parameters
    ----------
    aoi_ids : list of str, optional
        AOIs (default: the whole registry).
    start, end : date
        First and last day (inclusive), days at each AOI's site: each is searched as the
        AOI's local day, as the daily runs search it (:func:`changedet.pipeline.search_day`),
        so a backfill and the daily runs over the same days find each acquisition on the
        same one day (the store keys it by scene id: stored once, ``already_processed``
        the second time).
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
    worker_grace_s : float, optional
        Seconds the Dask cluster may have no running worker, or a scheduler that does
        not answer, before the backfill fails (s; default ``$CHANGEDET_DASK_WORKER_GRACE_S``,
        else 60). Workers back within it (a nanny restarting a killed one) resume the
        work. An adaptive cluster that scales from zero workers needs more than its
        scale-up time. A scheduler connection that drops fails the backfill at once.
    stall_limit_s : float, optional
        Seconds without any AOI-day ending before the backfill gives up (s; default
        ``$CHANGEDET_BACKFILL_STALL_S``, else 4 h; 0: no limit). No single AOI-day has a
        time limit.

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
        skips the completed days and resumes each failed AOI at its failed day. Also
        when an AOI file (of the registry, or a named one) is broken: the valid AOIs
        run, and the message names each broken file and its problem (``broken``).
    AOIError
        At once, when a named AOI has no file in the registry, or no selected AOI is valid
        (a broken file among several is reported at the end, the others run).
    BackfillInterrupted
        As soon as the Dask cluster is lost (its scheduler unreachable, or no worker for
        ``worker_grace_s``) or nothing ended for ``stall_limit_s``: the message names the
        scheduler, what was seen, the days kept and the days not done, and what to do.
        Completed days are kept as above.
    """
    logger = get_run_logger()
    watch = ClusterWatch(*check_watch_settings(worker_grace_s, stall_limit_s),
                         log=lambda level, msg: getattr(logger, level)(msg))
    aois, broken = select_runnable_aois(aoi_ids, registry)
    if broken:
        logger.error("backfill: %s", broken_text(broken))
    data_dir = data_dir or default_data_dir()
    store_url = store_url_for(store_url)
    cfg = run_config(data_dir, seed, registry, store_url)
    ensure_source_limits({source_limit_name(a, cfg) for a in aois}, source_concurrency)
    task = process_aoi_day.with_options(result_storage=result_storage(data_dir))
    days = {}
    for a in aois:
        # A range reaching past today runs up to today (run_day refuses later days: an
        # AOI's chain would otherwise fail at its first future day).
        wanted = dates_between(start, end, cadence or a.cadence_days)
        days[a.id], today = days_up_to_today(a, wanted)
        if len(days[a.id]) < len(wanted):
            logger.warning("[%s] range cut at today (%s at the site): %d later day(s) not run", a.id, today,
                           len(wanted) - len(days[a.id]))
    priority = chain_priorities(days, {a.id: day_cost(a, cfg) for a in aois})
    total = sum(len(v) for v in days.values())
    todo = {a: deque(ds) for a, ds in days.items() if ds}
    in_flight: dict[str, object] = {}
    finished: SimpleQueue[tuple[str, object]] = SimpleQueue()
    before: dict[str, object] = {}
    out: dict[str, list[dict]] = {a.id: [] for a in aois}
    days_of: dict[object, date] = {}   # task run id -> its day
    completed: dict[object, object] = {}   # task run id -> the Completed state the flow received
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
        # Woken by completions: the callback only queues the AOI and its future, the
        # flow's own thread submits (task.submit needs the flow run's context). The wait
        # times out every few seconds only to look at the cluster (ClusterWatch).
        f.add_done_callback(lambda _f, a=aoi_id, f=f: finished.put((a, f)))

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
        try:
            while in_flight:
                a, f = _next_finished(finished, in_flight, watch)
                state = _final_state(f, watch, in_flight.values())
                in_flight.pop(a)
                watch.progressed()
                ended += 1
                if state.is_completed():
                    done += 1
                    out[a].append(state.result())
                    before[a] = completed[f.task_run_id] = state
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
        except _Interrupt as why:
            raise _interrupted(why, out, failures, in_flight, days_of, todo, done, total, logger,
                               completed) from None
    if failures or broken:
        # The AOIs that failed first, then those fail_fast stopped.
        order = sorted(failures.values(), key=lambda x: (x.stopped, x.aoi_id))
        message = (f"backfill: {len(failures)} of {len(out)} AOIs did not finish ({done} of {total} AOI-days "
                   f"done and kept); run the same backfill again to resume them: "
                   + "; ".join(x.line() for x in order)) if failures else \
            f"backfill: all {len(out)} AOIs that could run finished ({done} of {total} AOI-days done and kept)"
        if broken:
            message += "; and " + broken_text(broken)
        raise BackfillFailed(message, out, order, broken)
    return out


def _record_completed(completed: dict[object, object]) -> None:
    """Make the API say Completed for the days this flow received as completed.

    A task run's states reach the API as events its worker sends in the background: a
    worker killed just after a day completed may never send the last one, and the API
    would say Running for good although the flow has the result (and the result store
    the cache entry a re-run uses). Only runs the API does not show as final are set.
    """
    _set_unfinished(completed)


def _interrupted(why: _Interrupt, out: dict[str, list[dict]], failures: dict[str, DayFailure],
                 in_flight: dict[str, object], days_of: dict[object, date], todo: dict[str, deque], done: int,
                 total: int, logger, completed: dict[object, object]) -> BackfillInterrupted:
    """The error that ends a backfill whose cluster was lost (or that stalled), with what to do."""
    from prefect.states import Crashed

    what = "the Dask cluster was lost" if why.cluster_lost else "stalled"
    for a, f in sorted(in_flight.items()):
        failures[a] = DayFailure(a, days_of[f.task_run_id], what, tuple(todo[a]), stopped=True)
        todo[a].clear()
    # Days in flight will never report back to this flow: the API says so, and the
    # scheduler (if it is still there) drops them, so workers coming back later do not
    # run days nobody waits for (a re-run submits them again).
    _mark_crashed([f.task_run_id for f in in_flight.values()],
                  Crashed(message=f"the backfill stopped waiting: {why.reason}"))
    _record_completed(completed)
    client = _dask_client(in_flight.values())
    if client is not None and client.status == "running":
        try:
            client.cancel([f.wrapped_future for f in in_flight.values()], reason="backfill interrupted")
        except Exception:  # noqa: BLE001  (the scheduler is going away: nothing left to drop)
            pass
    if not why.cluster_lost:
        todo_next = ("find the AOI-day that hangs (Dask dashboard, worker logs), then run the same backfill again; "
                     f"if AOI-days legitimately take this long, raise stall_limit_s (${STALL_LIMIT_ENV})")
    elif why.address and client is not None and getattr(client, "cluster", None) is not None:
        todo_next = "run the same backfill again (it starts a new local cluster)"
    else:
        todo_next = (f"restart the Dask workers (and the scheduler, if it is down) at {why.address or '?'}, "
                     "then run the same backfill again")
    order = sorted(failures.values(), key=lambda x: (x.stopped, x.aoi_id))
    message = (f"backfill: {why.reason}; {done} of {total} AOI-days done and kept, {total - done} not done; "
               f"{todo_next}: the days done are cached and skipped. AOIs not finished: "
               + "; ".join(x.line() for x in order))
    logger.error("%s", message)
    return BackfillInterrupted(message, out, order, why.address, why.reason)


def _first(failures: dict[str, DayFailure]) -> str:
    x = next(x for x in failures.values() if not x.stopped)
    return f"{x.aoi_id} failed on {x.day}"
