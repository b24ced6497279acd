"""Prefect tasks: thin wrappers over ``changedet.pipeline`` (and ``changedet.report``).

Idempotency has two layers. The cube and the outbox make ``run_day`` itself safe to
repeat (a stored scene is skipped, a replayed finding suppressed). On top of that each
AOI-day task is cached on (AOI, scene id, configuration hash): its result is persisted
under ``<data_dir>/prefect-results``, so a re-run of a finished range, or the resume of a
crashed backfill, does not even open the cubes for the days already done. The results
live next to the data they describe, so wiping a data directory also wipes its cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
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


def _acquire_source_slot(name: str):
    from prefect.concurrency.sync import concurrency

    # strict: the flow creates the limit before submitting, so a missing one is a bug.
    return concurrency(name, occupy=1, strict=True)


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
    with _acquire_source_slot(source_limit_name(aoi, cfg)), kernels_on_cluster(on_cluster):
        t_in, c_in = time.perf_counter(), time.process_time()
        result = run_day(aoi, day, cfg)
        work = (time.perf_counter() - t_in, time.process_time() - c_in)
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
