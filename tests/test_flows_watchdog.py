"""A backfill whose Dask cluster dies fails within a bounded time instead of waiting for ever.

Real components on 127.0.0.1: a ``dask scheduler`` and ``dask worker`` processes started
here, reached by address (as ``changedet serve --dask-address`` does), and Prefect's test
server (the session ``prefect_env``). The AOI-days are real simulator days; the workers
(or the scheduler) are killed with SIGKILL while days are in flight.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.prefect_runs import settled_task_runs

REPO = Path(__file__).resolve().parents[1]
AOIS = ["chongjin_port", "dunai_port"]
START, END = date(2023, 6, 1), date(2023, 6, 15)
DAYS = ["2023-06-01", "2023-06-08", "2023-06-15"]
GRACE_S = 2.0
#: Seconds beyond the grace period the flow may take to give up and end on a loaded
#: 2-core machine (one poll, the API updates, the task runner's shutdown).
SLACK_S = 30.0


def _dask_exe() -> str:
    return str(Path(sys.executable).with_name("dask"))


class Cluster:
    """A ``dask scheduler`` and its ``dask worker`` processes, each in its own session."""

    def __init__(self, root: Path) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            api = str(client.api_url).rstrip("/")
        # The workers report to the test server; nothing else of this process's Dask setup.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "CHANGEDET_DASK"))}
        self.env.update({"PREFECT_API_URL": api, "PYTHONUNBUFFERED": "1"})
        self.root, self.logs = root, root / "logs"
        self.logs.mkdir(parents=True)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        sched_file = root / "scheduler.json"
        self.scheduler = self._start("scheduler", [_dask_exe(), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                                   "--no-dashboard", "--scheduler-file", str(sched_file)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sched_file.exists() and sched_file.stat().st_size:
                try:
                    self.address = json.loads(sched_file.read_text())["address"]
                    break
                except ValueError:   # written as we read it
                    pass
            assert self.scheduler.poll() is None, self.log("scheduler")
            time.sleep(0.1)
        else:
            raise AssertionError("dask scheduler did not start: " + self.log("scheduler"))
        self.workers: list[subprocess.Popen] = []

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(args, env=self.env, cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=open(self.logs / f"{name}.log", "w"), stderr=subprocess.STDOUT)
        self.procs.append((name, p))
        return p

    def add_workers(self, n: int, *, nanny: bool, preload: bool = True) -> None:
        from distributed import Client

        for _ in range(n):
            i = len(self.workers)
            # One thread: an AOI-day computes locally in its task (kernels_on_cluster=False).
            # Preloading the task module imports it while the flow starts, not in the first day.
            self.workers.append(self._start(f"worker{i}", [
                _dask_exe(), "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                "--no-dashboard", "--memory-limit", "2GiB", "--name", f"w{i}",
                *(["--preload", "flows.tasks"] if preload else []), *([] if nanny else ["--no-nanny"])]))
        # Running before the flow starts: a cluster without workers for the (short) grace
        # period of these tests would fail the backfill at once.
        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(len(self.workers), timeout=120)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for _, p in self.procs:
            p.wait(timeout=30)


@pytest.fixture
def cluster(prefect_env, tmp_path):
    from flows.tasks import release_idle_source_slots

    c = Cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.stop()
        _free_source_slots(release_idle_source_slots)


def _free_source_slots(release_idle) -> None:
    """Give back the source slots the killed workers held.

    A real Prefect server revokes a dead process's lease after ``SOURCE_LEASE_S`` (its
    repossessor service); Prefect's test server runs in ephemeral mode without that
    service, so the slots would stay taken for the rest of the session and later flow
    tests on this server would wait for them. Nothing else runs flows now.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.tasks import SOURCE_LIMIT_PREFIX

    release_idle()
    with get_client(sync_client=True) as client:
        for limit in client.read_global_concurrency_limits():
            if limit.name.startswith(SOURCE_LIMIT_PREFIX) and limit.active_slots:
                client.update_global_concurrency_limit(limit.name, GlobalConcurrencyLimitUpdate(active_slots=0))


class _OnProgress(logging.Handler):
    """Calls ``actions[n]()`` once, when the flow logs that ``n`` AOI-days are done."""

    def __init__(self, actions: dict) -> None:
        super().__init__()
        self.actions, self.fired = dict(actions), {}

    def emit(self, record: logging.LogRecord) -> None:
        # No print() here: the flow's log_prints would log it again, into this handler.
        m = re.search(r"backfill: (\d+) of \d+ AOI-days done", record.getMessage())
        if not m:
            return
        for at in sorted(self.actions):
            if int(m.group(1)) >= at and at not in self.fired:
                self.fired[at] = (time.monotonic(), int(m.group(1)))
                self.actions[at]()


def _run(flow, handler: logging.Handler | None, **kw):
    logger = logging.getLogger("prefect.flow_runs")
    if handler:
        logger.addHandler(handler)
    try:
        t0 = time.monotonic()
        state = flow(return_state=True, **kw)
        return state, time.monotonic() - t0
    finally:
        if handler:
            logger.removeHandler(handler)


def _cube_days(data: Path, aoi: str) -> set[str]:
    days = set()
    for prov in (data / "cubes" / aoi).glob("*.provenance.json"):
        days |= {s["time"][:10] if "time" in s else s["date"][:10] for s in json.loads(prov.read_text())["scenes"]}
    return days


@pytest.mark.slow
def test_backfill_survives_a_restarted_worker_and_fails_within_the_grace_period_when_all_die(cluster, tmp_path):
    from distributed import Client

    from flows.backfill import BackfillInterrupted, backfill
    from flows.cluster import task_runner

    cluster.add_workers(2, nanny=True)
    data = tmp_path / "data"
    with Client(cluster.address, timeout=30) as client:

        def kill_a_busy_worker():
            # Its nanny starts a new worker process; the scheduler runs the killed day again.
            pids = client.run(os.getpid)   # worker address -> its process (the nanny's child)
            busy = [w for w, keys in client.processing().items() if keys and w in pids] or list(pids)
            os.kill(pids[busy[0]], signal.SIGKILL)
            # A real Prefect server gives back the dead process's source slot when its
            # lease runs out (60 s); the test server never does (see _free_source_slots).
            _free_source_slots(lambda: None)

        def kill_every_worker():   # nannies and workers: nothing brings them back
            for w in cluster.workers:
                os.killpg(w.pid, signal.SIGKILL)

        progress = _OnProgress({1: kill_a_busy_worker, 4: kill_every_worker})
        flow = backfill.with_options(task_runner=task_runner(cluster.address))
        state, _ = _run(flow, progress, aoi_ids=AOIS, start=START, end=END, cadence=7, data_dir=str(data),
                        kernels_on_cluster=False, chunk_size=1, worker_grace_s=GRACE_S)
    assert set(progress.fired) == {1, 4}, (progress.fired, state)
    # 4 of 6 days done means both days in flight when the worker died were done after
    # it (each AOI has 3 days): the restarted worker's day ran again, no failure.
    waited = time.monotonic() - progress.fired[4][0]
    assert state.is_failed(), state
    err = state.result(raise_on_failure=False)
    assert isinstance(err, BackfillInterrupted), err
    # Bounded: the grace period, one look at the cluster and the flow's own shutdown.
    assert GRACE_S <= waited < GRACE_S + SLACK_S, waited
    assert err.address == cluster.address
    msg = state.message
    assert f"the Dask cluster at {cluster.address} has had no worker for" in msg, msg
    assert f"restart the Dask workers (and the scheduler, if it is down) at {cluster.address}" in msg
    assert "then run the same backfill again: the days done are cached and skipped" in msg

    # The days finished before the workers died are kept: returned, stored, recorded.
    done = {a: [r["day"] for r in err.results[a]] for a in AOIS}
    n_done = sum(map(len, done.values()))
    assert n_done >= 4 and f"{n_done} of 6 AOI-days done and kept, {6 - n_done} not done" in msg, msg
    runs = {k: r.state.type.value for k, r in settled_task_runs(
        state.state_details.flow_run_id, expect=[(a, d) for a in AOIS for d in done[a]]).items()}
    for a in AOIS:
        assert done[a] == DAYS[:len(done[a])], done
        assert set(done[a]) <= _cube_days(data, a), (a, done[a])
        assert all(runs[(a, d)] == "COMPLETED" for d in done[a]), runs
    # Every other day is listed as not done, AOI by AOI, from the day it was at.
    assert {x.aoi_id for x in err.failures} == {a for a in AOIS if len(done[a]) < len(DAYS)}
    for x in err.failures:
        assert x.stopped and x.error == "the Dask cluster was lost"
        assert [x.day.isoformat(), *(d.isoformat() for d in x.not_run)] == DAYS[len(done[x.aoi_id]):], x
        assert f"{x.aoi_id} stopped on {x.day}: the Dask cluster was lost" in msg
        # Its day in flight is not left Running in the API (or the UI) for good (a day
        # no worker had started yet has no task run there). A worker killed after its
        # task run reported COMPLETED but before the scheduler took its result leaves a
        # day that is done but never reached the flow: it reads COMPLETED, and then its
        # pixels are stored (the re-run skips it as cached), so nothing is lost or stale.
        in_flight = runs.get((x.aoi_id, x.day.isoformat()), "CRASHED")
        assert in_flight in ("CRASHED", "COMPLETED"), runs
        if in_flight == "COMPLETED":
            assert x.day.isoformat() in _cube_days(data, x.aoi_id), (x, runs)
        assert all((x.aoi_id, d.isoformat()) not in runs for d in x.not_run), runs


def test_backfill_fails_at_once_when_the_scheduler_dies(cluster, tmp_path):
    from distributed import Client

    from flows.backfill import BackfillInterrupted, backfill
    from flows.cluster import task_runner

    cluster.add_workers(1, nanny=False)
    killed: list[float] = []

    def kill_scheduler_when_busy():
        # As soon as a worker runs an AOI-day (no day needs to finish for this).
        with Client(cluster.address, timeout=30) as client:
            deadline = time.monotonic() + 120
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.05)
        os.kill(cluster.scheduler.pid, signal.SIGKILL)
        killed.append(time.monotonic())

    killer = threading.Thread(target=kill_scheduler_when_busy, daemon=True)
    killer.start()
    flow = backfill.with_options(task_runner=task_runner(cluster.address))
    # A grace period far longer than the test: a dropped scheduler connection does not wait for it.
    state, _ = _run(flow, None, aoi_ids=AOIS[:1], start=START, end=END, cadence=7, data_dir=str(tmp_path / "d"),
                    kernels_on_cluster=False, worker_grace_s=600)
    killer.join(timeout=5)
    assert killed, "the scheduler was not killed"
    waited = time.monotonic() - killed[0]
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, BackfillInterrupted), state
    assert waited < SLACK_S, waited
    assert f"the Dask cluster at {cluster.address} lost its scheduler" in state.message, state.message
    assert "restart the Dask workers (and the scheduler, if it is down)" in state.message
    [x] = err.failures
    assert (x.aoi_id, x.day.isoformat(), x.stopped) == (AOIS[0], DAYS[0], True)
    assert [d.isoformat() for d in x.not_run] == DAYS[1:]
    # (Its worker is alive and may still finish that day on its own: the API may say so.)


def test_watch_tolerates_a_worker_its_nanny_restarts_but_not_an_empty_cluster(cluster):
    """The decision itself, on the real scheduler: no worker for a moment is not a failure."""
    from distributed import Client

    from flows.backfill import ClusterWatch, _Interrupt

    cluster.add_workers(1, nanny=True, preload=False)   # runs no AOI-day
    logged: list[tuple[str, str]] = []
    with Client(cluster.address, timeout=30) as client:
        future = client.submit(time.sleep, 3600, pure=False)   # stands in for an AOI-day in flight
        held = SimpleNamespace(wrapped_future=future)   # what the flow holds: a Prefect future wrapping it

        watch = ClusterWatch(grace_s=60, stall_s=0, log=lambda level, m: logged.append((level, m)))
        watch.check([held])
        assert watch.unhealthy_since is None

        # A worker paused at its memory limit still runs the day it holds: no failure.
        from distributed.core import Status

        def set_status(status, dask_worker):
            # The memory monitor would resume a worker paused below its memory limit on
            # its next tick (100 ms), sometimes before the scheduler heard of the pause.
            mm = dask_worker.memory_manager
            if status == Status.paused:
                mm.saved_pause_fraction, mm.memory_pause_fraction = mm.memory_pause_fraction, False
            else:
                mm.memory_pause_fraction = getattr(mm, "saved_pause_fraction", mm.memory_pause_fraction)
            dask_worker.status = status

        client.run(set_status, Status.paused)
        deadline = time.monotonic() + 30
        while client.sync(client.scheduler.ncores_running) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.sync(client.scheduler.ncores_running), "the scheduler never saw the worker paused"
        watch.check([held])
        assert watch.unhealthy_since is None and not logged
        client.run(set_status, Status.running)

        [pid] = client.run(os.getpid).values()    # the worker process, not its nanny
        os.kill(pid, signal.SIGKILL)
        # The nanny starts a new worker process; within the grace period that is no failure.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            watch.check([held])
            if logged and logged[-1][0] == "info":
                break
            time.sleep(0.2)
        # the worker's log (its nanny's lines included) says why, should it not come back
        assert [level for level, _ in logged] == ["warning", "info"], (logged, cluster.log("worker0"))
        assert f"the Dask cluster at {cluster.address} has no worker; waiting up to 60 s" in logged[0][1]
        assert "has 1 worker(s) again" in logged[1][1]
        assert watch.unhealthy_since is None

        # The nanny itself killed too (its whole process group): nothing restarts it.
        os.killpg(cluster.workers[0].pid, signal.SIGKILL)
        strict = ClusterWatch(grace_s=1.0, stall_s=0)
        t0 = time.monotonic()
        with pytest.raises(_Interrupt, match="has had no worker for") as info:
            while time.monotonic() - t0 < 60:
                strict.check([held])
                time.sleep(strict.poll_s)
        assert info.value.cluster_lost and info.value.address == cluster.address
        assert time.monotonic() - t0 < 1.0 + SLACK_S


def test_stall_limit_and_settings(monkeypatch):
    from changedet.errors import ChangedetError
    from flows.backfill import (STALL_LIMIT_ENV, WORKER_GRACE_ENV, BackfillInterrupted, ClusterWatch, DayFailure,
                                _Interrupt, _seconds)

    now = [100.0]
    watch = ClusterWatch(grace_s=60, stall_s=30, clock=lambda: now[0])
    # An AOI-day ending shows the cluster runs: a blip seen long before no longer counts.
    watch.unhealthy_since = now[0] - 600
    watch.progressed()
    assert watch.unhealthy_since is None
    now[0] += 29
    watch.check([])            # not on Dask: only the stall limit applies
    watch.progressed()
    now[0] += 29
    watch.check([])            # an AOI-day ended meanwhile: the clock started again
    now[0] += 1
    with pytest.raises(_Interrupt, match=r"no AOI-day ended for 30 s \(stall limit 30 s\)") as info:
        watch.check([])
    assert not info.value.cluster_lost
    assert ClusterWatch(grace_s=60, stall_s=0, clock=lambda: 1e9).check([]) is None   # 0: no limit

    # Prefect keeps the flow's exception: it travels with its fields.
    err = BackfillInterrupted("backfill: lost", {"a": [{"day": "2023-06-01"}]},
                              [DayFailure("a", date(2023, 6, 8), "the Dask cluster was lost", (), True)],
                              "tcp://127.0.0.1:8786", "lost")
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back), back.results, back.failures, back.address, back.reason) == (
        BackfillInterrupted, str(err), err.results, err.failures, err.address, err.reason)

    monkeypatch.delenv(WORKER_GRACE_ENV, raising=False)
    assert _seconds(None, WORKER_GRACE_ENV, 60.0, "worker_grace_s", zero_ok=False) == 60.0
    monkeypatch.setenv(WORKER_GRACE_ENV, "90")
    assert _seconds(None, WORKER_GRACE_ENV, 60.0, "worker_grace_s", zero_ok=False) == 90.0
    assert _seconds(5, WORKER_GRACE_ENV, 60.0, "worker_grace_s", zero_ok=False) == 5.0
    monkeypatch.setenv(WORKER_GRACE_ENV, "soon")
    with pytest.raises(ChangedetError, match=r"\$CHANGEDET_DASK_WORKER_GRACE_S='soon' is not a number of seconds"):
        _seconds(None, WORKER_GRACE_ENV, 60.0, "worker_grace_s", zero_ok=False)
    with pytest.raises(ChangedetError, match=r"worker_grace_s=0: give a number of seconds > 0"):
        _seconds(0, WORKER_GRACE_ENV, 60.0, "worker_grace_s", zero_ok=False)
    assert _seconds(0, STALL_LIMIT_ENV, 3600.0, "stall_limit_s", zero_ok=True) == 0.0
    with pytest.raises(ChangedetError, match=r"stall_limit_s=-1: give a number of seconds >= 0 \(0 turns it off\)"):
        _seconds(-1, STALL_LIMIT_ENV, 3600.0, "stall_limit_s", zero_ok=True)


def test_cli_checks_the_watch_settings_before_running():
    from changedet.cli import build_parser
    from changedet.errors import ChangedetError

    base = ["backfill", "--start", "2023-06-01", "--end", "2023-06-08"]
    args = build_parser("backfill").parse_args(base + ["--worker-grace", "0"])
    with pytest.raises(ChangedetError, match=r"--worker-grace=0.0: give a number of seconds > 0"):
        args.func(args)
    args = build_parser("backfill").parse_args(base + ["--submit", "--stall-limit", "60"])
    with pytest.raises(ChangedetError, match="apply to a backfill run here; a submitted run reads"):
        args.func(args)
