"""The flows' Dask task runner: prefect-dask's, submitting without Dask's key hashing.

``DaskTaskRunner.submit`` asks Dask for a *pure* task, whose key is a hash of the task
and its arguments: Dask then cloudpickles the Prefect task object (its function, cache
key function, result storage block) and the serialized run context on every submit, to
tokenize them. A Prefect task run's arguments always include a fresh task-run id, so
that key can never match another and the hashing buys nothing. Measured in the
backfill flow's process (``cProfile``, 24 submits): 0.16 s of the 0.70 s each submit
took, on the 2-core machine under load. Here submits are impure (a random key),
which is all the difference.
"""

from __future__ import annotations

from typing import Any, Iterable

from prefect_dask import DaskTaskRunner
from prefect_dask.task_runners import PrefectDaskFuture


class ChangedetDaskTaskRunner(DaskTaskRunner):
    """``DaskTaskRunner`` whose task submissions skip Dask's tokenization (``pure=False``)."""

    def submit(self, task, parameters: dict[str, Any], wait_for: Iterable[Any] | None = None,
               dependencies: dict[str, set] | None = None) -> PrefectDaskFuture:
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        parameters = self._optimize_futures(parameters)
        wait_for = self._optimize_futures(wait_for) if wait_for else None
        future = self.client.submit(task, parameters=parameters, wait_for=wait_for, dependencies=dependencies,
                                    return_type="state", pure=False)
        return PrefectDaskFuture(wrapped_future=future, task_run_id=future.task_run_id)
