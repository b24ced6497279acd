"""The Dask task runner of the flows: a LocalCluster by default, or an existing scheduler.

The scheduler address comes from (first match) the ``address`` argument (``changedet
serve --dask-address``), ``$CHANGEDET_DASK_ADDRESS``, or Dask's own ``scheduler-address``
setting (``$DASK_SCHEDULER_ADDRESS``). Without one, each flow run starts a LocalCluster
sized so that every worker has more threads than the AOI-day tasks mapped onto it: a task
computes its kernels on the same cluster and must find a free thread for them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

#: Threads per LocalCluster worker beyond the mapped tasks it may hold (for their kernels).
SPARE_THREADS = 2

#: malloc settings for LocalCluster workers. Dask's nanny sets MALLOC_TRIM_THRESHOLD_=64 KiB
#: so workers hand freed memory back to the OS; setting it also freezes glibc's mmap
#: threshold at 128 KiB, so every large numpy temporary is a fresh mmap of zeroed pages.
#: Measured on one AOI-day series: run_day used 1.46x the CPU inside a worker than in a
#: plain process (27.2 vs 18.6 s), and 1.11x (20.6 s) with these values, at the price of
#: a worker keeping up to 1 GiB of freed heap.
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(256 << 20)}


#: Dask's housekeeping for LocalClusters started by the flows. Defaults: a statistical
#: profiler sampling every worker thread's stack every 10 ms, event-loop health ticks every
#: 20 ms, system and memory monitors every 0.5 s and 0.1 s. Measured on idle 1-thread
#: workers (2-core machine): 0.053 CPU-s/s per worker and 0.083 for the scheduler's
#: process with the defaults, 0.006 and 0.013 with these: about 0.4 CPU-s per AOI-day of
#: a 2-worker backfill given back to the work. What is lost: the dashboard's profile
#: page (turn it back on with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True), finer
#: dashboard plots, and a worker notices memory growth within 0.5 s instead of 0.1 s.
QUIET_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def configure_worker_malloc() -> None:
    """Make nannies started from this process spawn workers with :data:`WORKER_ENV`.

    glibc reads these variables at the first allocation, so they must be in the
    environment the worker process starts with (Dask's ``pre-spawn-environ``); the
    nanny's ``env=`` argument is applied too late for them. Also applies
    :data:`QUIET_DASK` where the user's Dask configuration does not set those keys (the
    nannies hand this process's configuration to their workers).
    """
    import dask

    dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()})
    user_yaml = list(dask.config.collect_yaml(dask.config.paths))
    dask.config.set({k: v for k, v in QUIET_DASK.items() if not _user_set(k, user_yaml)})


def _user_set(key: str, user_yaml: list[dict]) -> bool:
    """Whether ``key`` comes from the user's Dask YAML or environment, not Dask's defaults."""
    env = "DASK_" + key.replace(".", "__").replace("-", "_").upper()
    return env in os.environ or any(_has(d, key) for d in user_yaml)


def _has(d: dict, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(d, dict):
            return False
        match = next((k for k in d if k.replace("_", "-") == part), None)
        if match is None:
            return False
        d = d[match]
    return True


def dask_address(address: str | None = None) -> str | None:
    if address:
        return address
    env = os.environ.get("CHANGEDET_DASK_ADDRESS")
    if env:
        return env
    import dask

    return dask.config.get("scheduler-address", None) or None


def local_cluster_kwargs(n_workers: int | None = None, mapped_per_worker: int | None = None) -> dict:
    """LocalCluster settings: process workers (the pipeline holds the GIL in places)."""
    n = n_workers or int(os.environ.get("CHANGEDET_DASK_WORKERS", "0")) or min(2, os.cpu_count() or 1)
    per = mapped_per_worker or int(os.environ.get("CHANGEDET_DASK_MAPPED_PER_WORKER", "2"))
    return {"n_workers": n, "threads_per_worker": per + SPARE_THREADS, "processes": True,
            "dashboard_address": ":0"}


def task_runner(address: str | None = None, *, n_workers: int | None = None):
    """A ``DaskTaskRunner`` on ``address`` (see the module docstring) or on a new LocalCluster."""
    from flows.runner import ChangedetDaskTaskRunner

    addr = dask_address(address)
    if addr:
        return ChangedetDaskTaskRunner(address=addr)
    # The runner starts the LocalCluster later, in this process: its nannies read this then.
    configure_worker_malloc()
    return ChangedetDaskTaskRunner(cluster_class="distributed.LocalCluster",
                                   cluster_kwargs=local_cluster_kwargs(n_workers))


@contextlib.contextmanager
def workers_see_this_api() -> Iterator[None]:
    """Make Dask worker processes started in this block report to this process's Prefect API.

    A LocalCluster's workers are new processes: without ``PREFECT_API_URL`` in their
    environment each would start an ephemeral Prefect server of its own (slow, and
    blind to this run's concurrency limits). The variable is restored afterwards so a
    later flow in this process does not point at a server that has gone.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        if os.environ.get("PREFECT_API_URL") == url:
            del os.environ["PREFECT_API_URL"]
