"""How many threads one library call may use.

Kernels that thread internally (FFTs of whole frames, the numba baseline kernel) default
to every CPU this process may run on. That is right for a user at a laptop and wrong
inside a Dask worker given one thread: that worker is one core's worth of the cluster,
and an FFT spreading over every core takes the cores of the workers beside it (on a
2-core machine two 1-thread workers ran four FFT threads). The orchestration layer,
which knows the worker's size, sets the budget with :func:`set_cpu_budget`; a user or a
container sets it with the ``CHANGEDET_NUM_THREADS`` environment variable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

from changedet.errors import ChangedetError

ENV_VAR = "CHANGEDET_NUM_THREADS"

_budget: int | None = None
_limits: list[int] = []  # budgets of the `limited` blocks now open, in any thread
_lock = threading.Lock()


class ThreadBudgetError(ChangedetError, ValueError):
    """A thread budget that is not a positive integer."""


def _positive(value, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and value != n):
        raise ThreadBudgetError(f"{what}={value!r} is not a positive integer: give the number of threads "
                                "(e.g. 1 for a single-threaded Dask worker)")
    return n


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_budget() -> int:
    """Threads one library call may use.

    The smallest of the CPUs available to the process, ``CHANGEDET_NUM_THREADS`` when
    set, the budget set by :func:`set_cpu_budget` or an open :func:`limited` block,
    and the threads of the Dask worker running the calling task.
    """
    n = available_cpus()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        n = min(n, _positive(env, ENV_VAR))
    if _budget is not None:
        n = min(n, _budget)
    with _lock:
        if _limits:
            n = min(n, min(_limits))
    worker = dask_worker_threads()
    if worker:
        n = min(n, worker)
    return n


def dask_worker_threads() -> int | None:
    """Threads of the Dask worker whose task is calling, or None (not in a worker task)."""
    if "distributed" not in sys.modules:  # never import distributed just to ask
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return int(getattr(getattr(worker, "state", worker), "nthreads", 0) or 0) or None


@contextlib.contextmanager
def limited(threads: int) -> Iterator[None]:
    """Limit library calls to ``threads`` threads while the block runs.

    Process-wide (the thread pools that run a task's kernels do not inherit context
    variables), and nestable across threads: the budget is the smallest of the open
    blocks', and the limit is gone when the last block closes.
    """
    n = _positive(threads, "threads")
    with _lock:
        _limits.append(n)
    try:
        yield
    finally:
        with _lock:
            _limits.remove(n)


def set_cpu_budget(threads: int | None) -> None:
    """Limit every later library call in this process to ``threads`` threads.

    ``None`` lifts the limit. Process-wide on purpose: the thread pools that run a
    task's kernels (dask's local scheduler, scipy.fft) do not inherit context variables.
    """
    global _budget
    _budget = None if threads is None else _positive(threads, "threads")
