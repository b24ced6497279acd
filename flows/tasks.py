"""Prefect tasks: thin wrappers over ``changedet.pipeline`` (and ``changedet.report``).

Idempotency has two layers. The cube and the outbox make ``run_day`` itself safe to
repeat (a stored scene is skipped, a replayed finding suppressed). On top of that each
AOI-day task is cached on (AOI, scene id, configuration hash): its result is persisted
under ``<data_dir>/prefect-results``, so a re-run of a finished range, or the resume of a
crashed backfill, does not even open the cubes for the days already done. The results
live next to the data they describe, so wiping a data directory also wipes its cache.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from changedet.acquire import unusable_sources_error
from changedet.aoi import load_aoi
from changedet.cube import CubeLocked, CubeRaced, is_url
from changedet.errors import ChangedetError, SourceConfigError, SourceError, StoreError
from changedet.pipeline import RETRY_DELAYS_S, RunConfig, run_day
from changedet.threads import dask_worker_threads, limited as threads_limited

#: Prefix of the global concurrency limit of each imagery source ("changedet-source-simulator").
SOURCE_LIMIT_PREFIX = "changedet-source-"
#: Slots per source when the flow has to create the limit (an operator's value is kept).
DEFAULT_SOURCE_CONCURRENCY = 2


def run_config(data_dir: str, seed: int = 0, registry: str | None = None, store_url: str | None = None) -> RunConfig:
    return RunConfig(data_dir=Path(data_dir), seed=seed, registry=Path(registry) if registry else None,
                     store_url=store_url)


def store_url_for(store_url: str | None) -> str | None:
    """The store URL a flow passes to its tasks: the parameter, else ``$CHANGEDET_STORE_URL``.

    Resolved in the flow (not left to each task's environment) so Dask workers started
    elsewhere, without the variable, still write where the flow was told to.
    """
    url = store_url or os.environ.get("CHANGEDET_STORE_URL") or None
    if url:
        run_config(".", store_url=url).store_root()  # unusable scheme: fail before submitting anything
    return url


def _registry(registry: str | None) -> Path | None:
    return Path(registry) if registry else None


def primary_source(aoi, cfg: RunConfig):
    """The source ``run_day`` will use for ``aoi`` and its spec (name, sensor, resolution)."""
    # pipeline owns the choice of source; reusing it keeps the cache key and the
    # concurrency limit on the very source run_day reads from.
    from changedet.pipeline import primary_source

    return primary_source(aoi, cfg.seed, cfg.registry, cfg.data_dir)


def find_scene(aoi, day: date, cfg: RunConfig):
    """The acquisition ``run_day`` would process for ``aoi`` on ``day``, or None."""
    from changedet.pipeline import find_scene as pipeline_find_scene

    return pipeline_find_scene(aoi, day, cfg)


def _has_reference(aoi, cfg: RunConfig) -> bool:
    """Whether the cube ``run_day`` writes for ``aoi`` has its registration reference yet."""
    from changedet.cube import Cube
    from changedet.grid import aoi_grid

    _, spec = primary_source(aoi, cfg)
    grid = aoi_grid(aoi, float(spec.resolution_m))
    return Cube(cfg.store_root(), aoi.id, spec.sensor, grid, reflectance=spec.sensor != "s1").reference() is not None


def _scene_state(aoi, cfg: RunConfig, scene_id: str) -> str | None:
    """``"stored"`` or ``"new"`` for a real source's scene in the cube ``run_day`` writes; None if skipped for good.

    None (no caching) while the cube holds a permanent skipped record of the scene: an
    ``unreadable`` day is tried again by every run, not answered from the cache, so a
    file or reply that was fixed under the same scene id is processed. Prefect 3 caches
    every returned result of a task (no per-result opt-out), so the day's result of the
    run that recorded the skip is persisted under the ``"new"`` key; once the scene is
    stored the key is ``"stored"``, so that result is never answered again.
    """
    from changedet.cube import Cube, _live_skipped
    from changedet.grid import aoi_grid

    _, spec = primary_source(aoi, cfg)
    cube = Cube(cfg.store_root(), aoi.id, spec.sensor, aoi_grid(aoi, float(spec.resolution_m)),
                reflectance=spec.sensor != "s1")
    # One read of the provenance record for both questions (Cube.skipped() and Cube.has()
    # read it once each: a GET each on an object store, for every AOI-day's cache key).
    doc = cube._read_provenance()
    # (Only permanent records: a cloudy day stays cached, its pixels will not change.)
    if any(s.get("scene_id") == scene_id and s.get("permanent") for s in _live_skipped(doc)):
        return None
    return "stored" if any(s["scene_id"] == scene_id for s in doc["scenes"]) else "new"


def source_limit_name(aoi, cfg: RunConfig) -> str:
    """The global concurrency limit of the source ``run_day`` reads ``aoi`` from.

    An AOI none of whose sources can be used here (credentials missing, no folder) gets
    its first entry's: the flow must not fail for every AOI before any ran (the limit is
    asked for in the flow), and its AOI-day then fails alone with the configuration
    error that names the fix.
    """
    try:
        return SOURCE_LIMIT_PREFIX + primary_source(aoi, cfg)[1].name
    except SourceError:
        return SOURCE_LIMIT_PREFIX + (aoi.sources[0].name if aoi.sources else "none")


def aoi_day_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Cache key of one AOI-day: (AOI, day, scene id, configuration hash).

    The day is part of it: a result names its day (the flow summary, the report), and the
    scene an earlier rule gave to another day (runs searched UTC days before they searched
    the site's local day) must not answer for this one from the cache.

    No scene yet means no key (no caching): a scene published late must be processed
    by the next run, not hidden behind a cached "no scene". Nor does a real source's scene
    recorded skipped for good (:func:`_scene_state`): an ``unreadable`` day is run again.
    """
    cfg = run_config(parameters["data_dir"], parameters.get("seed", 0), parameters.get("registry"),
                     parameters.get("store_url"))
    aoi = load_aoi(parameters["aoi_id"], registry=cfg.registry)
    day = parameters["day"]
    if isinstance(day, str):
        day = date.fromisoformat(day)
    try:
        scene = find_scene(aoi, day, cfg)
    except SourceError:
        # No source usable here, or its catalogue is down: no key (no caching), and the task
        # body meets the same error and reports it (Prefect would log a traceback for it here).
        return None
    if scene is None:
        return None
    # A store apart from data_dir is part of the key: the same AOI-day written to another
    # store is not done there. (Results are persisted under data_dir, so cubes kept in
    # data_dir need no more than that.)
    where = ""
    if cfg.store_url or os.environ.get("CHANGEDET_STORE_URL"):
        where = str(cfg.store_root())
        if not is_url(where):
            where = str(Path(where).resolve())
    # A day run before its cube had a registration reference ended as ``no_reference``
    # (sources without a basemap): once a reference exists the key differs, so the day is
    # processed rather than answered from the cache. (Simulator cubes get theirs on first use.)
    ref = "" if scene.source == "simulator" else ("\nref" if _has_reference(aoi, cfg) else "\nnoref")
    if scene.source != "simulator":
        state = _scene_state(aoi, cfg, scene.id)
        if state is None:
            return None
        ref += f"\n{state}"
    digest = hashlib.sha256(f"{aoi.id}\n{day.isoformat()}\n{scene.id}\n{cfg.hash(aoi)}\n{where}{ref}".encode()).hexdigest()[:32]
    # Keys are file names in the result storage: keep them to [a-z0-9_-].
    return f"changedet-{aoi.id}-{digest}"


def result_storage(data_dir: str) -> "LocalFileSystem":
    """Where AOI-day results are persisted: next to the data they describe.

    Prefect wants result storage saved server-side (tasks may run in other processes),
    so this saves a ``LocalFileSystem`` block named after the directory. It returns the
    saved block itself, not its slug: a slug makes every task run load the block from
    the API again (one request per AOI-day), the block travels with the task instead.
    """
    from prefect.filesystems import LocalFileSystem

    base = Path(data_dir).resolve() / "prefect-results"
    name = "changedet-results-" + hashlib.sha256(str(base).encode()).hexdigest()[:16]
    block = LocalFileSystem(basepath=str(base))
    block.save(name, overwrite=True)
    return block


def _as_dict(result) -> dict[str, Any]:
    doc = asdict(result)
    doc["day"] = result.day.isoformat()
    return doc


@contextlib.contextmanager
def kernels_on_cluster(enabled: bool) -> Iterator[None]:
    """Let dask computations inside the task run on the task runner's cluster.

    Inside a Dask worker, ``get_dask_client`` connects a client to the same scheduler
    and makes it the default, so the cube reads and kernels of ``run_day`` become tasks
    of the cluster. The calling task seceded from the worker's thread pool first: its
    thread only waits, and it must not hold the thread the kernels need (with as many
    mapped tasks as threads that would deadlock).
    """
    if not enabled:
        # Inside a Dask worker, compute() would otherwise go to the worker's distributed
        # client (graph shipped to the scheduler and back): "local" must mean this process.
        # And no more threads than the worker was given: a worker of one thread is one
        # core's worth of a cluster, and a local pool of every core on the machine would
        # take the cores of the workers next to it.
        import dask

        config: dict[str, Any] = {"scheduler": "threads"}
        nthreads = dask_worker_threads()
        if nthreads:
            config["num_workers"] = nthreads
        # And the same budget for the threads kernels start themselves (whole-frame FFTs
        # of the co-registration, the numba baseline kernel), lifted when the task ends.
        budget = threads_limited(nthreads) if nthreads else contextlib.nullcontext()
        with dask.config.set(config), budget:
            yield
        return
    try:
        from distributed import get_worker, rejoin, secede

        get_worker()
    except (ImportError, ValueError):
        yield  # not on a Dask worker (e.g. the thread-pool runner): compute locally
        return
    from prefect_dask import get_dask_client

    secede()
    try:
        with get_dask_client():
            yield
    finally:
        rejoin()


#: Lease on a source slot (s; the server's minimum): renewed every third of it while
#: held, so the slots of a worker that dies (or of a Dask worker process, which exits
#: without running exit handlers) are free again after at most this long.
SOURCE_LEASE_S = 60.0
#: A process keeps a slot it has finished with this long (s) for its next AOI-day of the
#: same source, then gives it back.
SOURCE_SLOT_IDLE_S = 10.0

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _api_client():
    """One synchronous Prefect API client per process (and API URL), kept open.

    ``prefect.concurrency.sync.concurrency`` opens a new async client for each release,
    starts a renewal thread it joins on exit and emits events: about 0.4 s per
    AOI-day of waiting on a loaded 2-core machine. A kept client makes acquire and
    release one request each.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or ""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = get_client(sync_client=True)
            client.__enter__()
            atexit.register(client.__exit__, None, None, None)
            _clients[url] = client
    return client


@dataclass
class _Lease:
    key: tuple[str, str]   # (API URL, limit name)
    lease_id: str
    client: Any
    renewed: float         # time.monotonic() of the grant or last renewal
    idle_since: float | None = None


class _SourceSlots:
    """The source-slot leases this process holds: in use, or idle and kept for reuse.

    Asking the server for a slot costs one request, but under a backfill the Prefect
    server is busy persisting task runs and events, and the request waited 1.1 s per
    AOI-day on an idle 2-core machine (``bench/bench_flows.py``), half the cost of a
    port's AOI-day. A worker that has just finished an AOI-day of a source is about
    to start another, so it keeps the lease for ``SOURCE_SLOT_IDLE_S`` and hands it to
    its next task of that source: the limit still counts this process's tasks (a kept
    lease is one slot, used by one task at a time), and a slot no task of this
    process wants goes back to the server within seconds. One daemon thread renews
    every held lease and gives back the idle ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[_Lease]] = {}
        self._held: dict[str, _Lease] = {}
        self._thread: threading.Thread | None = None

    def count(self, key: tuple[str, str]) -> int:
        """Leases this process holds (in use or idle) on one limit of one API."""
        with self._lock:
            return sum(1 for x in self._held.values() if x.key == key)

    def take_idle(self, key: tuple[str, str]) -> _Lease | None:
        with self._lock:
            pool = self._idle.get(key)
            while pool:
                lease = pool.pop()
                if time.monotonic() - lease.renewed < SOURCE_LEASE_S:
                    lease.idle_since = None
                    return lease
                # Not renewed in time: the server may have given the slot to someone else.
                self._held.pop(lease.lease_id, None)
        return None

    def add(self, lease: _Lease) -> None:
        with self._lock:
            self._held[lease.lease_id] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._maintain, name="changedet source slots",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.release_idle, 0.0)

    def put_back(self, lease: _Lease) -> None:
        with self._lock:
            if lease.lease_id in self._held:
                lease.idle_since = time.monotonic()
                self._idle.setdefault(lease.key, []).append(lease)

    def drop(self, lease: _Lease) -> None:
        with self._lock:
            self._held.pop(lease.lease_id, None)
            pool = self._idle.get(lease.key, [])
            if lease in pool:
                pool.remove(lease)

    def release_idle(self, older_than_s: float = SOURCE_SLOT_IDLE_S) -> int:
        """Give back the idle leases unused for ``older_than_s`` seconds; how many were."""
        now = time.monotonic()
        with self._lock:
            gone = [x for pool in self._idle.values() for x in pool if now - x.idle_since >= older_than_s]
            for x in gone:
                self._idle[x.key].remove(x)
                del self._held[x.lease_id]
        for x in gone:
            with contextlib.suppress(Exception):  # an expired lease is released already
                x.client.release_concurrency_slots_with_lease(x.lease_id)
        return len(gone)

    def _maintain(self) -> None:
        while True:
            time.sleep(min(SOURCE_SLOT_IDLE_S / 2, SOURCE_LEASE_S / 6))
            self.release_idle()
            with self._lock:
                due = [x for x in self._held.values() if time.monotonic() - x.renewed > SOURCE_LEASE_S / 3]
            for x in due:
                try:
                    x.client.renew_concurrency_lease(x.lease_id, lease_duration=SOURCE_LEASE_S)
                    x.renewed = time.monotonic()
                except Exception as exc:  # noqa: BLE001  (a lost lease only loosens the limit)
                    logging.getLogger(__name__).warning("could not renew a lease on %s: %s", x.key[1],
                                                        type(exc).__name__)
                    # Lost (expired or revoked on the server): never hand it out again; a
                    # task using it finishes, and put_back discards it.
                    self.drop(x)


_slots = _SourceSlots()


def release_idle_source_slots() -> int:
    """Give back at once the source slots this process keeps for reuse (see :class:`_SourceSlots`)."""
    return _slots.release_idle(0.0)


@contextlib.contextmanager
def _acquire_source_slot(name: str) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` for the block.

    Reuses a lease this process kept from its last AOI-day of the source, else asks the
    server, waiting while the limit is full (the server answers 423 with the time to
    wait). The flow creates the limit before submitting, so a missing one fails.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL

    key = (PREFECT_API_URL.value() or "", name)
    lease = _slots.take_idle(key)
    t_wait = time.monotonic()
    warn_at = t_wait + SOURCE_WAIT_WARN_S
    while lease is None:
        if time.monotonic() >= warn_at:
            warn_at = time.monotonic() + SOURCE_WAIT_WARN_S
            _warn_waiting(name, time.monotonic() - t_wait)
        client = _api_client()
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=SOURCE_LEASE_S)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            # Full: wait as told, with jitter so waiting tasks do not retry in lockstep,
            # unless a task of this process gives its slot back meanwhile.
            deadline = time.monotonic() + float(exc.response.headers.get("Retry-After", 1.0)) * random.uniform(1, 1.25)
            while lease is None and time.monotonic() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                lease = _slots.take_idle(key)
            continue
        body = response.json()
        if not body.get("limits"):
            raise RuntimeError(f"global concurrency limit {name!r} does not exist; the changedet flows create it "
                               f"before submitting AOI-days (or create it: prefect gcl create {name} --limit N)")
        lease = _Lease(key, str(body["lease_id"]), client, time.monotonic())
        _slots.add(lease)
    try:
        yield
    finally:
        _slots.put_back(lease)


def _warn_waiting(name: str, waited: float) -> None:
    """Say (in the task's log) that an AOI-day has waited long for a source slot, and why it may."""
    try:
        limit = _api_client().read_global_concurrency_limit_by_name(name)
        state = f" (limit {limit.limit}, {limit.active_slots} held)"
    except Exception:  # noqa: BLE001  (the warning must not fail the task)
        state = ""
    try:
        logger = get_run_logger()
    except Exception:  # noqa: BLE001  (outside a run context)
        logger = logging.getLogger(__name__)
    logger.warning("waited %.0f s for a slot of the global concurrency limit %s%s. If no other changedet flow run "
                   "is using this source, its slots were left held by a run that was killed while the Prefect "
                   "server could not expire them (a server restart forgets in-memory leases): free them with "
                   "'prefect gcl update %s --active-slots 0'", waited, name, state, name)


#: Seconds an AOI-day waits for a source slot before its log says so (and again each time
#: as long again): a slot held by a run that was killed is otherwise an endless silent wait.
SOURCE_WAIT_WARN_S = 300.0


#: Errors a retry cannot cure are not retried: bad input or configuration (a corrupt raster,
#: a malformed AOI or scenario, a cube written with another grid) fails the same way 5 and
#: 30 s later. Of changedet's own errors only these may be passing: an imagery provider or
#: metric store that is down, a cube another run holds locked. Anything else (network
#: errors, a killed process) is retried as before.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (SourceError, StoreError, CubeLocked, CubeRaced)
#: Source errors that are the AOI entry's and never pass (a ``bands:`` list that fits no file,
#: HTTP 400/401/403/404 from the provider, a wrong collection id): not retried.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (SourceConfigError,)


def worth_retrying(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: False for a changedet error that is not transient."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    if isinstance(exc, PERMANENT_ERRORS):
        return False
    return not isinstance(exc, ChangedetError) or isinstance(exc, TRANSIENT_ERRORS)


def sendable(exc: BaseException) -> bool:
    """Whether ``exc`` survives the trip from a Dask worker to the flow (pickling).

    Checked with tblib's exception pickling installed for ``exc`` and its causes, as
    Dask installs it (``distributed.core.error_message``) for every error it reports:
    once installed in a worker, that pickling applies to those exception classes
    whichever way they travel, including inside the Prefect state a task returns.
    """
    import pickle

    chain, e = [], exc
    while e is not None and len(chain) < 32:
        chain.append(e)
        e = e.__cause__ or e.__context__
    try:
        from tblib import pickling_support

        pickling_support.install(*chain)
    except ImportError:  # no Dask here: plain pickling is what will be used
        pass
    try:
        pickle.loads(pickle.dumps(exc))
        return True
    except Exception:  # noqa: BLE001  (any failure means: cannot be sent)
        return False


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` made safe to send from a Dask worker to the flow.

    Dask pickles a task's exception with its whole ``__cause__`` chain. Some library
    exceptions cannot be rebuilt on the other side (rasterio's ``CPLE_AppDefinedError``
    behind a :class:`RasterError` fails with "property 'args' ... has no setter"), and
    the flow then fails with that ``AttributeError`` instead of the error that happened:
    the backfill cannot tell which AOI-day failed or why. So the chain is dropped (the
    caller logs it first); an exception that cannot be sent even then becomes a
    ``RuntimeError`` with its type and text.
    """
    if sendable(exc):
        return exc
    exc.__cause__ = exc.__context__ = None
    exc.__suppress_context__ = True
    return exc if sendable(exc) else RuntimeError(f"{type(exc).__name__}: {exc}")


@task(retries=len(RETRY_DELAYS_S), retry_delay_seconds=list(RETRY_DELAYS_S), retry_condition_fn=worth_retrying,
      cache_key_fn=aoi_day_cache_key, persist_result=True, task_run_name="{aoi_id} {day}")
def process_aoi_day(aoi_id: str, day: date, data_dir: str, seed: int = 0, registry: str | None = None,
                    on_cluster: bool = True, store_url: str | None = None) -> dict[str, Any]:
    """Run the daily slice for one AOI and day; every log line names the AOI and the date.

    Holds one slot of the source's global concurrency limit while it runs, so the
    number of AOI-days hitting one imagery provider at once stays within its quota.
    """
    try:
        return _process_aoi_day(aoi_id, day, data_dir, seed, registry, on_cluster, store_url)
    except Exception as exc:
        if sendable(exc):
            raise
        # The cause is about to be dropped (see portable_error): its traceback goes to the log.
        get_run_logger().error("[%s %s] %s: %s", aoi_id, day, type(exc).__name__, exc, exc_info=exc)
        err = portable_error(exc)
    # Raised outside the except block, or the unsendable exception rides along as __context__.
    err.__context__ = None
    raise err from None


def _process_aoi_day(aoi_id: str, day: date, data_dir: str, seed: int, registry: str | None, on_cluster: bool,
                     store_url: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = run_config(data_dir, seed, registry, store_url)
    aoi = load_aoi(aoi_id, registry=cfg.registry)
    wall0, cpu0, t_start = time.perf_counter(), time.process_time(), time.time()
    limit = source_limit_name(aoi, cfg)
    t_ask = time.perf_counter()
    with _acquire_source_slot(limit):
        t_got = time.perf_counter()
        with kernels_on_cluster(on_cluster):
            t_in, c_in = time.perf_counter(), time.process_time()
            try:
                result = run_day(aoi, day, cfg)
            except SourceError as exc:
                # A new AOI none of whose sources can be used here: missing credentials are the
                # AOI file's configuration (not retried, worth_retrying); a missing local folder
                # may be a share not mounted (SourceUnavailable, retried).
                typed = unusable_sources_error(aoi, exc, seed=cfg.seed, registry=cfg.registry,
                                               data_dir=cfg.data_dir)
                if typed is None:
                    raise
                if isinstance(typed, SourceConfigError):
                    raise SourceConfigError(f"{aoi_id} {day}: {typed}", option=typed.option) from None
                raise type(typed)(f"{aoi_id} {day}: {typed}") from None
            work = (time.perf_counter() - t_in, time.process_time() - c_in)
        t_done = time.perf_counter()
    t_released = time.perf_counter()
    logger.info("[%s %s] %s", aoi_id, day, result.summary().splitlines()[0])
    for alert in result.alerts:
        logger.warning("[%s %s] ALERT %s %s: %s", aoi_id, day, alert["action"], alert["alert_id"], alert["message"])
    if result.status == "failed":
        # The source could not search or load the scene for a reason that may pass (an
        # outage, a share not mounted), or the series needs a person (another source than
        # the one it was made from, its reference deleted): nothing was stored. Raised so the
        # task is retried and, failing, not cached as done: the next run of the day tries
        # again. A scene that is itself broken (a corrupt file, HTTP 4xx) is not "failed" but
        # "unreadable": run_day recorded it as skipped, and the result returns below, so a
        # backfill goes on with the AOI's later days instead of stopping at it on every run
        # (and is not answered from the cache by a later run: aoi_day_cache_key). An I/O or
        # permission error of a share is "failed", not "unreadable": the source raises
        # SourceUnavailable for it (changedet.errors), and run_day dispatches on that type.
        if result.misconfigured:
            # The entry is wrong (bands:, a request or collection id the provider rejects,
            # credentials): every day of it fails alike, so it is not retried
            # (worth_retrying), and the state says which AOI file, entry and setting to fix
            # first (the flows' summaries cut long messages).
            raise SourceConfigError(f"{aoi_id} {day}: configuration error of {result.config_problem()}: fix it and "
                                    f"run the days again; {result.note}", option=result.misconfigured.get("option"))
        raise SourceError(f"{aoi_id} {day}: {result.note}")
    if "evidence" in result.skipped:
        # Transient, so the task is retried and, once its retries are spent, not cached as
        # done: the outbox keeps the pack pending and the next run of this day (a retry, a
        # re-run of the flow or `changedet run` on the same data dir and store) rebuilds it.
        # The day's pixels, metrics and alert are stored already.
        raise StoreError(f"{aoi_id} {day}: evidence {result.skipped['evidence']}")
    doc = _as_dict(result)
    # Where the time went (bench/bench_flows.py sums these): run_day itself, and the task
    # including the concurrency slot. CPU is this process's (all its threads): exact
    # with one task per worker process, an upper bound when tasks share a process. The
    # epoch start/end place the task on the run's timeline (gaps between tasks on one
    # worker are the task engine's own work and scheduling).
    doc["timing"] = {"run_day_wall_s": round(work[0], 4), "run_day_cpu_s": round(work[1], 4),
                     "task_wall_s": round(time.perf_counter() - wall0, 4),
                     "task_cpu_s": round(time.process_time() - cpu0, 4), "pid": os.getpid(),
                     # Waiting on the Prefect server for the source's slot, and to give it back.
                     "slot_acquire_s": round(t_got - t_ask, 4), "slot_release_s": round(t_released - t_done, 4),
                     "start_epoch_s": round(t_start, 4), "end_epoch_s": round(time.time(), 4)}
    return doc


def report_worth_retrying(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn`` of :func:`render_report`: False only for what a second build
    gives alike, an AOI file's problem (``AOIError``, ``ReportIncomplete``); anything else (a data
    directory on a share not mounted for a moment, a store busy) keeps its one retry."""
    from changedet.errors import AOIError
    from changedet.report import ReportIncomplete  # here: the report module is optional for the flows

    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not isinstance(exc, (AOIError, ReportIncomplete))


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=report_worth_retrying, persist_result=False,
      task_run_name="report {out_dir}")
def render_report(data_dir: str, out_dir: str, aoi_ids: list[str] | None = None, start: date | None = None,
                  end: date | None = None, registry: str | None = None) -> str:
    """Build the analyst report (``changedet.report.build_report``) and return its path.

    A broken AOI file of the registry leaves the report of the other AOIs written (its
    path logged) and fails the task with :class:`changedet.report.ReportIncomplete`,
    naming each broken file; that and an AOI error are not retried (a retry builds the same
    report), any other failure is retried once (:func:`report_worth_retrying`).
    """
    from changedet.report import ReportIncomplete, build_report  # here: the report module is optional

    logger = get_run_logger()
    try:
        path = build_report(Path(data_dir), Path(out_dir), aoi_ids=aoi_ids, start=start, end=end,
                            registry=_registry(registry))
    except ReportIncomplete as exc:
        logger.error("report for the valid AOIs written to %s; %s", exc.index, exc)
        raise
    logger.info("report for %s (%s..%s) written to %s", aoi_ids or "all AOIs", start or "start", end or "now", path)
    return str(path)


def ensure_source_limits(names: set[str], slots: int | None = None) -> None:
    """Create the per-source global concurrency limits that do not exist yet.

    An existing limit is left as it is (operators tune quotas in the Prefect UI,
    Concurrency → Global, or with ``prefect gcl update``), with one exception: on a
    temporary server this process started, slots held beyond this process's own leases
    are freed when no other run on the same database is alive (:func:`_other_live_runs`):
    they were left by a run killed together with its server. While another run lives
    they may be its live slots, so they are left alone and the log says how to free
    them if they are not.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    slots = slots or int(os.environ.get("CHANGEDET_SOURCE_CONCURRENCY", DEFAULT_SOURCE_CONCURRENCY))
    url = PREFECT_API_URL.value() or ""
    # Every run says it is alive (for as long as its process lives) before it looks for others,
    # so of two runs starting together at least one sees the other.
    runs_dir = _hold_run_lock()
    own = _own_temporary_server(url)
    log = logging.getLogger(__name__)
    with get_client(sync_client=True) as client:
        for name in sorted(names):
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                except ObjectAlreadyExists:  # another flow run created it meanwhile
                    pass
                continue
            mine = _slots.count((url, name))
            if not own or limit.active_slots <= mine:
                continue
            others = _other_live_runs(runs_dir)
            if others == 0:
                # A temporary server (``changedet backfill`` without PREFECT_API_URL) keeps its
                # leases in memory: slots counted in the database beyond this process's own
                # leases, with no other run alive on this database, were held by a run killed
                # with its server, and no lease exists any more that could expire them. Left
                # alone, every AOI-day of this run would wait for them for ever.
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=mine))
                log.warning("freed %d slot(s) of %s left held by an earlier run that was killed (no other changedet "
                            "run on this Prefect database is alive)", limit.active_slots - mine, name)
            else:
                who = (f"{others} other changedet run(s) on this Prefect database are alive" if others
                       else "whether another changedet run on this Prefect database is alive cannot be told here")
                log.warning("%d slot(s) of %s are held beyond this run's own and %s, so they are left alone: they may "
                            "be that run's live slots. If no other changedet flow run is using this source, they were "
                            "left by a run that was killed: free them with 'prefect gcl update %s --active-slots 0'",
                            limit.active_slots - mine, name, who, name)


#: This process's run lock per lock folder: (file descriptor, path), held until the process ends.
_run_locks: dict[str, tuple[int, Path]] = {}
_run_locks_guard = threading.Lock()


def _runs_dir() -> Path:
    """``$PREFECT_HOME/changedet-runs/<database key>``: where the runs on one Prefect database say they are alive.

    Keyed by a hash of the server database URL (never the URL: it may hold a password), so
    a test harness or a second database under the same home does not count as the same runs.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    db = settings.server.database.connection_url
    db_url = db.get_secret_value() if hasattr(db, "get_secret_value") else str(db or "")
    key = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    return Path(settings.home).expanduser() / "changedet-runs" / key


def _hold_run_lock() -> Path | None:
    """Hold (once per process and database) an exclusive lock on this run's own file in :func:`_runs_dir`.

    The kernel drops the lock when the process ends, however it ends (``kill -9`` too),
    so a file whose lock can be taken belongs to a run that is gone. Returns the folder,
    or None where locks cannot be used (no ``fcntl``, a read-only home): then no slot is
    ever freed automatically.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        folder = _runs_dir()
    except Exception:  # noqa: BLE001  (settings unreadable: behave as if locks were unusable)
        return None
    with _run_locks_guard:
        if str(folder) in _run_locks:
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{os.getpid()}-{os.urandom(4).hex()}.lock"
            # Locked under a name no other run looks at, then renamed (the lock stays on the
            # file): another run must never find it unlocked and remove it as a dead run's.
            tmp = path.with_suffix(".new")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
            os.write(fd, f"{os.getpid()}\n".encode())
            os.replace(tmp, path)
        except OSError as exc:
            logging.getLogger(__name__).debug("no run lock in %s: %s", folder, exc)
            return None
        if not _run_locks:
            atexit.register(_drop_run_locks)
        _run_locks[str(folder)] = (fd, path)
    _other_live_runs(folder)  # removes the files of runs that are gone: one file per run would pile up
    return folder


def _drop_run_locks() -> None:
    """At a normal exit: remove this process's run files (and their folder once empty, such as a test
    database's). A killed run's file stays, and the next run to look removes it."""
    with _run_locks_guard:
        for folder, (fd, path) in list(_run_locks.items()):
            with contextlib.suppress(OSError):
                path.unlink()  # before the lock goes: no other run may find it unlocked and call it dead
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                Path(folder).rmdir()
        _run_locks.clear()


def _other_live_runs(folder: Path | None) -> int | None:
    """How many other runs hold their lock in ``folder``; None when that cannot be told.

    Each other run's lock is tried without waiting: taken, its run is gone (the file is
    removed); refused, the run is alive. Never waits, so a live run never blocks this one.
    """
    if folder is None:
        return None
    import fcntl

    mine = _run_locks.get(str(folder), (None, None))[1]
    alive = 0
    try:
        paths = [p for p in folder.glob("*.lock") if p != mine]
    except OSError:
        return None
    for path in paths:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # removed by another run that found it dead
            continue
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                alive += 1
                continue
            except OSError:
                return None
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            os.close(fd)
    return alive


def _own_temporary_server(api_url: str) -> bool:
    """Whether ``api_url`` is a temporary Prefect server this process started (its leases live
    in its memory only, so only runs in processes alive now can hold one)."""
    # Only looked up, never imported: a process that started a temporary server has loaded
    # this module already, and importing Prefect's server package costs seconds per flow run.
    server = sys.modules.get("prefect.server.api.server")
    if server is None:
        return False
    instances = getattr(getattr(server, "SubprocessASGIServer", None), "_instances", {})
    urls = {getattr(srv, "api_url", None) for srv in list(instances.values()) if getattr(srv, "running", False)}
    if not api_url:
        # No PREFECT_API_URL: Prefect's ephemeral mode, the client talks to the temporary
        # server it started in this process (the one running, if any).
        return bool(urls)
    return api_url.rstrip("/") in {u.rstrip("/") for u in urls if u}
