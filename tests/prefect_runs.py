"""Reading a flow run's task runs from the Prefect API once the server has recorded them."""

from __future__ import annotations

import time


def settled_task_runs(flow_run_id, *, expect=(), settle_s: float = 60.0) -> dict[tuple[str, ...], object]:
    """The flow run's task runs by their name's words (``(aoi, day)``), once recorded.

    Prefect 3 records task-run states from client events that the server writes in
    batches, so the API can lag the flow's end on a busy machine: seen in CI, a COMPLETED
    day still read PENDING, and a day's run missing altogether while the recorder's SQLite
    write was refused ("database is locked") and queued for retry. Re-read until no run is
    pending or running and every key in ``expect`` is present, or ``settle_s`` passes; then
    the last read is returned and the caller's assertions say what is wrong.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + settle_s
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        got = {tuple(r.name.split()): r for r in runs}
        unsettled = any(r.state is None or r.state.type.value in ("PENDING", "RUNNING", "SCHEDULED") for r in runs)
        if (not unsettled and all(k in got for k in expect)) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)
