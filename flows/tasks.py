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
import threading
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, Iterator

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from changedet.aoi import load_aoi
from changedet.cube import is_url
from changedet.pipeline import RunConfig, run_day

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

    return primary_source(aoi, cfg.seed, cfg.registry)


def find_scene(aoi, day: date, cfg: RunConfig):
    """The acquisition ``run_day`` would process for ``aoi`` on ``day``, or None."""
    source, spec = primary_source(aoi, cfg)
    scenes = source.search(aoi, day, day, sensor=spec.sensor, resolution_m=float(spec.resolution_m))
    return scenes[0] if scenes else None


def source_limit_name(aoi, cfg: RunConfig) -> str:
    return SOURCE_LIMIT_PREFIX + primary_source(aoi, cfg)[1].name


def aoi_day_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Cache key of one AOI-day: (AOI, scene id, configuration hash).

    No scene yet means no key (no caching): a scene published late must be processed
    by the next run, not hidden behind a cached "no scene".
    """
    cfg = run_config(parameters["data_dir"], parameters.get("seed", 0), parameters.get("registry"),
                     parameters.get("store_url"))
    aoi = load_aoi(parameters["aoi_id"], registry=cfg.registry)
    day = parameters["day"]
    if isinstance(day, str):
        day = date.fromisoformat(day)
    scene = find_scene(aoi, day, cfg)
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
    digest = hashlib.sha256(f"{aoi.id}\n{scene.id}\n{cfg.hash(aoi)}\n{where}".encode()).hexdigest()[:32]
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
        import dask

        with dask.config.set(scheduler="threads"):
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


#: Lease on a source slot (s): renewed while the AOI-day runs, so a worker that dies
#: without releasing it frees the slot after at most this long.
SOURCE_LEASE_S = 300.0

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _api_client():
    """One synchronous Prefect API client per process (and API URL), kept open.

    ``prefect.concurrency.sync.concurrency`` opens a new async client for each release,
    starts a renewal thread it joins on exit and emits events: about 0.4 s per
    AOI-day of waiting on a loaded 2-core machine, a fifth of the AOI-day's own work.
    A kept client makes acquire and release one request each.
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


@contextlib.contextmanager
def _acquire_source_slot(name: str, *, lease_s: float = SOURCE_LEASE_S) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` (a lease, renewed).

    Waits while the limit is full (the server answers 423 with the time to wait). The
    flow creates the limit before submitting, so a missing one is a bug and fails.
    """
    import httpx
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder

    client = _api_client()
    holder = None
    ctx = TaskRunContext.get()
    if ctx is not None and ctx.task_run is not None:
        # Shown in the UI next to the limit: which task run holds the slot.
        holder = ConcurrencyLeaseHolder(type="task_run", id=ctx.task_run.id)
    log = get_run_logger() if ctx is not None else logging.getLogger(__name__)
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=lease_s, holder=holder)
            break
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            # Full: wait as told, with jitter so waiting tasks do not retry in lockstep.
            time.sleep(float(exc.response.headers.get("Retry-After", 1.0)) * random.uniform(1.0, 1.25))
    body = response.json()
    if not body.get("limits"):
        raise RuntimeError(f"global concurrency limit {name!r} does not exist; the changedet flows create it "
                           f"before submitting AOI-days (or create it: prefect gcl create {name} --limit N)")
    lease_id = body["lease_id"]
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            try:
                client.renew_concurrency_lease(lease_id, lease_duration=lease_s)
            except Exception as exc:  # noqa: BLE001  (a lost lease only loosens the limit)
                log.warning("could not renew the lease on %s: %s", name, type(exc).__name__)

    renewer = threading.Thread(target=renew, name=f"lease {name}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        client.release_concurrency_slots_with_lease(lease_id)


@task(retries=2, retry_delay_seconds=[5, 30], cache_key_fn=aoi_day_cache_key, persist_result=True,
      task_run_name="{aoi_id} {day}")
def process_aoi_day(aoi_id: str, day: date, data_dir: str, seed: int = 0, registry: str | None = None,
                    on_cluster: bool = True, store_url: str | None = None) -> dict[str, Any]:
    """Run the daily slice for one AOI and day; every log line names the AOI and the date.

    Holds one slot of the source's global concurrency limit while it runs, so the
    number of AOI-days hitting one imagery provider at once stays within its quota.
    """
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
            result = run_day(aoi, day, cfg)
            work = (time.perf_counter() - t_in, time.process_time() - c_in)
        t_done = time.perf_counter()
    t_released = time.perf_counter()
    logger.info("[%s %s] %s", aoi_id, day, result.summary().splitlines()[0])
    for alert in result.alerts:
        logger.warning("[%s %s] ALERT %s %s: %s", aoi_id, day, alert["action"], alert["alert_id"], alert["message"])
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


@task(retries=1, retry_delay_seconds=10, persist_result=False, task_run_name="report {out_dir}")
def render_report(data_dir: str, out_dir: str, aoi_ids: list[str] | None = None, start: date | None = None,
                  end: date | None = None, registry: str | None = None) -> str:
    """Build the analyst report (``changedet.report.build_report``) and return its path."""
    from changedet.report import build_report  # imported here: the report module is optional for the flows

    logger = get_run_logger()
    path = build_report(Path(data_dir), Path(out_dir), aoi_ids=aoi_ids, start=start, end=end,
                        registry=_registry(registry))
    logger.info("report for %s (%s..%s) written to %s", aoi_ids or "all AOIs", start or "start", end or "now", path)
    return str(path)


def ensure_source_limits(names: set[str], slots: int | None = None) -> None:
    """Create the per-source global concurrency limits that do not exist yet.

    An existing limit is left as it is: operators tune quotas in the Prefect UI
    (Concurrency → Global) or with ``prefect gcl update``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    slots = slots or int(os.environ.get("CHANGEDET_SOURCE_CONCURRENCY", DEFAULT_SOURCE_CONCURRENCY))
    with get_client(sync_client=True) as client:
        for name in sorted(names):
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                except ObjectAlreadyExists:  # another flow run created it meanwhile
                    pass
