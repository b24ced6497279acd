"""Orchestration benchmarks: daily-run cost against history, backfill scaling, Prefect overhead.

1. Daily-run cost must not grow with history: ``run_day`` on day 365 of a scenario
   against day 10 (target ratio <= 1.2). The history (every ``--every`` days plus days 10
   and 365 themselves) is built once with the library; each measured day is then re-run
   from copies of the data directory as it stood the day before (``--repeats`` samples,
   median), wall and CPU seconds.
2. Backfill throughput: the ``backfill`` flow on the SAME workload (``--backfill-aois`` x
   ``--backfill-dates`` weekly AOI-days) on a Dask LocalCluster of 1 and of 2 worker
   processes (one thread each, kernels local: one AOI-day per process at a time; target
   >= 1.7x; 6 dates by default: the tail, where one worker waits for the other's last
   AOI-day, is a fixed cost a 3-date backfill makes three times the share it is in a
   months-long one). Each cluster is started once and warmed (imports, numba compilation: one
   AOI-day on a scratch directory per worker) before the timed flow run: that is what a
   long-lived cluster (``--dask-address``) or one LocalCluster per flow run serving many
   AOI-days looks like; start and warm-up are reported apart, and the throughput is also
   given with them in the wall. Every task reports its own wall and CPU seconds and its
   start and end, so the table accounts for the flow's wall: time to the first task,
   gaps between tasks on a worker (the task engine's work and scheduling), idle tail
   (waiting for the longest AOI chain), and the order the chains started in; and the
   speed-up the workload allows at most (longest chain; chains placed longest first).
   CPU seconds of every process (the flow process with the Dask scheduler, the Prefect
   server, the workers) are measured per AOI-day, net of their background CPU per second
   (measured on the idle cluster): those survive a loaded machine, where wall-clock
   ratios do not, and give the speed-up 2 idle cores allow (1-worker run bound by its
   worker; 2-worker run by all the run's CPU on 2 cores).
3. Prefect overhead per AOI-day: (1-worker flow wall - the same AOI-days run with
   ``run_series`` in one process without Prefect) / AOI-days, and the re-run of the
   finished backfill (every AOI-day a cache hit: orchestration alone).

Prefect runs in ephemeral mode in a temporary PREFECT_HOME. Prints a table and writes
``bench/results/bench_flows.json``. Report ``uptime`` with the figures: the machine's
other load depresses every wall-clock ratio.

    python bench/bench_flows.py --skip-history   # backfill only (every registry AOI x 6 weekly dates)
    python bench/bench_flows.py                  # both parts
    python bench/bench_flows.py --quick          # sparser history, 2 dates per AOI
    python bench/bench_flows.py --print bench/results/bench_flows.json   # the table again
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def history_cost(aoi_id: str, start: date, every: int, repeats: int, work: Path, *, early_day: int = 10,
                 late_day: int = 365) -> dict:
    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, dates_between, run_day

    aoi = load_aoi(aoi_id)
    early, late = start + timedelta(days=early_day), start + timedelta(days=late_day)
    dates = sorted(set(dates_between(start, late, every)) | {early, late})
    hist = work / "history"
    cfg = RunConfig(data_dir=hist)
    snapshots: dict[date, Path] = {}
    build = []
    t0 = time.perf_counter()
    for d in dates:
        if d in (early, late):
            snapshots[d] = work / f"before-{d}"
            if hist.exists():
                _copy(hist, snapshots[d])
            else:
                snapshots[d].mkdir()
        t, c = time.perf_counter(), time.process_time()
        r = run_day(aoi, d, cfg)
        build.append({"day": (d - start).days, "seconds": time.perf_counter() - t,
                      "cpu_s": time.process_time() - c, "status": r.status})
    build_s = time.perf_counter() - t0

    def sample(d: date) -> tuple[list[float], list[float], str]:
        wall, cpu, status = [], [], ""
        for i in range(repeats):
            where = work / f"run-{d}-{i}"
            _copy(snapshots[d], where)
            t, c = time.perf_counter(), time.process_time()
            r = run_day(aoi, d, RunConfig(data_dir=where))
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            status = r.status
            shutil.rmtree(where)
        return wall, cpu, status

    (w_e, c_e, s_e), (w_l, c_l, s_l) = sample(early), sample(late)
    # The build itself: CPU of processed days early and late in the history (a second,
    # load-independent view of the same question, over many days instead of two).
    done = [b for b in build if b["status"] == "processed"]
    third = max(1, len(done) // 3)
    trend = {"first_third_cpu_s": statistics.median(b["cpu_s"] for b in done[:third]) if done else None,
             "last_third_cpu_s": statistics.median(b["cpu_s"] for b in done[-third:]) if done else None}
    return {"aoi": aoi_id, "start": start.isoformat(), "every_days": every, "history_build_s": build_s,
            "build": build, "early_day": early_day, "late_day": late_day,
            "early_history": sum(1 for b in build if b["day"] < early_day and b["status"] == "processed"),
            "late_history": sum(1 for b in build if b["day"] < late_day and b["status"] == "processed"),
            "early_s": w_e, "late_s": w_l, "early_cpu_s": c_e, "late_cpu_s": c_l,
            "early_status": s_e, "late_status": s_l, "build_trend": trend,
            "ratio": statistics.median(w_l) / statistics.median(w_e),
            "cpu_ratio": statistics.median(c_l) / statistics.median(c_e)}


def _warm(aoi_ids: list[str], day: str, where: str) -> dict:
    """Imports and numba compilation of one worker: one AOI-day per AOI kind on a scratch directory."""
    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, run_day
    import flows.tasks  # noqa: F401  (what the tasks import)

    t = time.perf_counter()
    kinds: set[str] = set()
    for aoi in map(load_aoi, aoi_ids):
        if aoi.kind not in kinds:  # each kind has its own counters to compile
            kinds.add(aoi.kind)
            run_day(aoi, date.fromisoformat(day), RunConfig(data_dir=Path(where) / str(os.getpid())))
    return {"pid": os.getpid(), "s": time.perf_counter() - t}


def _timings(res: dict) -> list[dict]:
    return [{"aoi": a, **r["timing"]} for a, v in res.items() for r in v if "timing" in r]


def _cpu_s(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role's processes."""
    import psutil

    out = {}
    for role, ps in pids.items():
        total = 0.0
        for pid in ps:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        out[role] = total
    return out


def _server_pids() -> list[int]:
    """The ephemeral Prefect server: a uvicorn child process of this one."""
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)
            if any("uvicorn" in part for part in (p.cmdline() or []))]


def timeline(tim: list[dict], t0: float, t1: float) -> dict:
    """Where the wall time of a flow run went, from every task's epoch start and end.

    Per worker process: idle before its first task (flow start-up, submission), gaps
    between its tasks (the task engine's work outside the task function: task-run
    creation, cache key, state changes, result persistence; and scheduling), idle after
    its last task (nothing left it could run: the tail of the longest AOI chain).
    Per AOI: when its chain started and ended, and its span.
    """
    wall = t1 - t0
    by_pid: dict[int, list[dict]] = {}
    for x in tim:
        by_pid.setdefault(x["pid"], []).append(x)
    workers = []
    for pid, xs in sorted(by_pid.items()):
        xs.sort(key=lambda x: x["start_epoch_s"])
        gaps = [b["start_epoch_s"] - a["end_epoch_s"] for a, b in zip(xs, xs[1:])]
        workers.append({"pid": pid, "tasks": len(xs), "busy_s": sum(x["task_wall_s"] for x in xs),
                        "idle_before_first_s": xs[0]["start_epoch_s"] - t0, "gaps_between_tasks_s": sum(gaps),
                        "idle_after_last_s": t1 - xs[-1]["end_epoch_s"]})
    chains = {}
    for x in tim:
        c = chains.setdefault(x["aoi"], {"start_s": float("inf"), "end_s": 0.0, "busy_s": 0.0, "days": 0,
                                         "workers": 0, "pids": set()})
        c["pids"].add(x["pid"])
        c["workers"] = len(c["pids"])
        c["start_s"] = min(c["start_s"], x["start_epoch_s"] - t0)
        c["end_s"] = max(c["end_s"], x["end_epoch_s"] - t0)
        c["busy_s"] += x["task_wall_s"]
        c["days"] += 1
    for c in chains.values():
        del c["pids"]
    n_tasks = max(len(tim), 1)
    return {"wall_s": wall, "workers": workers, "chains": chains,
            "chain_start_order": sorted(chains, key=lambda a: chains[a]["start_s"]),
            "first_task_start_s": min(x["start_epoch_s"] for x in tim) - t0,
            "after_last_task_s": t1 - max(x["end_epoch_s"] for x in tim),
            "gap_per_task_s": sum(w["gaps_between_tasks_s"] for w in workers) / max(n_tasks - len(workers), 1),
            "tail_idle_s": sum(w["idle_after_last_s"] for w in workers)}


def backfill_scaling(aois: list[str], dates: list[date], work: Path, *, idle_window_s: float = 5.0) -> dict:
    from distributed import Client, LocalCluster
    from prefect.client.orchestration import get_client

    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, run_series
    from flows.backfill import backfill
    from flows.tasks import ensure_source_limits
    from flows.cluster import configure_worker_malloc, task_runner

    configure_worker_malloc()

    start, end = dates[0], dates[-1]
    every = (dates[1] - dates[0]).days if len(dates) > 1 else 7
    warm_day = (start - timedelta(days=7)).isoformat()  # not one of the measured days
    out: dict = {"aois": aois, "dates": [d.isoformat() for d in dates]}
    # The ephemeral Prefect server starts before timing: paid once per process.
    t = time.perf_counter()
    ensure_source_limits({"changedet-source-simulator"}, 16)
    out["ephemeral_server_start_s"] = time.perf_counter() - t
    with get_client(sync_client=True) as client:
        # Worker processes must report to this server, not start ephemeral ones of their own.
        os.environ["PREFECT_API_URL"] = str(client.api_url).rstrip("/")

    # The same AOI-days with the library alone, in this (warmed) process, on one thread
    # as on a 1-thread worker (the flow's tasks limit dask to their worker's threads).
    import dask

    _warm(aois, warm_day, str(work / "warm-lib"))
    lib = work / "library"
    t, c = time.perf_counter(), time.process_time()
    per_aoi = {}
    from changedet.threads import set_cpu_budget

    # One thread for the kernels' own pools too (FFTs, numba), as the flow's tasks
    # set on a 1-thread worker.
    set_cpu_budget(1)
    try:
        with dask.config.set(scheduler="threads", num_workers=1):
            for a in aois:
                ta = time.perf_counter()
                run_series(load_aoi(a), dates, RunConfig(data_dir=lib))
                per_aoi[a] = time.perf_counter() - ta
    finally:
        set_cpu_budget(None)
    out["library"] = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "per_aoi_s": per_aoi}

    for workers in (1, 2):
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
        start_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = client.run(_warm, aois, warm_day, str(work / f"warm-{workers}w"))
        warm_s = time.perf_counter() - t
        pids = {"flow process (with the Dask scheduler)": [os.getpid()], "Prefect server": _server_pids(),
                "workers": sorted(w["pid"] for w in warm.values())}
        # Background CPU (heartbeats, monitors, the server's loop services): paid per
        # second, not per AOI-day; measured on the idle cluster so the per-AOI-day
        # figures below can be net of it (on a loaded machine the wall, and so the
        # background, grows, but the work per AOI-day does not).
        b0, tb = _cpu_s(pids), time.perf_counter()
        time.sleep(idle_window_s)
        b1, tb = _cpu_s(pids), time.perf_counter() - tb
        background = {k: (b1[k] - b0[k]) / tb for k in b0}
        try:
            # The flows' own runner (flows.cluster.task_runner), on this cluster.
            flow = backfill.with_options(task_runner=task_runner(cluster.scheduler_address))
            data = work / f"backfill-{workers}w"
            cpu0 = _cpu_s(pids)
            t, e0 = time.perf_counter(), time.time()
            res = flow(aois, start, end, every, data_dir=str(data), chunk_size=64, source_concurrency=16,
                       kernels_on_cluster=False)
            wall, e1 = time.perf_counter() - t, time.time()
            cpu1 = _cpu_s(pids)
            tim = _timings(res)
            n = sum(len(v) for v in res.values())
            chains: dict[str, float] = {}
            for x in tim:
                chains[x["aoi"]] = chains.get(x["aoi"], 0.0) + x["task_wall_s"]
            row = {"wall_s": wall, "aoi_days": n, "per_min": 60 * n / wall,
                   "statuses": sorted({r["status"] for v in res.values() for r in v}),
                   "cluster_start_s": start_s, "warm_up_s": warm_s, "warm_per_worker": list(warm.values()),
                   "sum_task_wall_s": sum(x["task_wall_s"] for x in tim),
                   "sum_task_cpu_s": sum(x["task_cpu_s"] for x in tim),
                   "sum_run_day_wall_s": sum(x["run_day_wall_s"] for x in tim),
                   "sum_run_day_cpu_s": sum(x["run_day_cpu_s"] for x in tim),
                   "processes": len({x["pid"] for x in tim}),
                   # Where a task's wall outside run_day goes (sums over the AOI-days, s).
                   "task_phases_s": {k: round(sum(x.get(k, 0.0) for x in tim), 3)
                                     for k in ("slot_acquire_s", "slot_release_s")},
                   "longest_aoi_chain_s": max(chains.values()) if chains else 0.0}
            # Mean number of AOI-days in flight, and the CPU each of them actually got.
            row["concurrency"] = row["sum_task_wall_s"] / wall
            row["cpu_share_per_task"] = row["sum_task_cpu_s"] / max(row["sum_task_wall_s"], 1e-9)
            row["cpu_s_by_process"] = {k: cpu1[k] - cpu0[k] for k in cpu0}
            row["cpu_s_per_aoi_day"] = {k: v / n for k, v in row["cpu_s_by_process"].items()}
            row["background_cpu_s_per_s"] = background
            row["net_cpu_s_per_aoi_day"] = {k: max(0.0, row["cpu_s_by_process"][k] - background[k] * wall) / n
                                            for k in background}
            row["timeline"] = timeline(tim, e0, e1)
            out[f"{workers}w"] = row
            if workers == 1:
                t = time.perf_counter()
                flow(aois, start, end, every, data_dir=str(data), chunk_size=64, source_concurrency=16,
                     kernels_on_cluster=False)
                out["rerun_cached_s"] = time.perf_counter() - t
        finally:
            client.close()
            cluster.close()
    return derive(out)


def derive(out: dict) -> dict:
    """The ratios and bounds of the table, from the measured figures (also for ``--print``)."""
    one, two = out["1w"], out["2w"]
    n = one["aoi_days"]
    out["speedup"] = one["wall_s"] / two["wall_s"]
    # What the workload allows on 2 processes: the work split in two, but no faster than
    # the longest AOI (its days run in order).
    out["speedup_bound"] = one["sum_task_wall_s"] / max(one["sum_task_wall_s"] / 2, one["longest_aoi_chain_s"])
    # The same, but for whole chains placed longest first on 2 workers (the flow's order).
    chains = sorted((c["busy_s"] for c in one["timeline"]["chains"].values()), reverse=True)
    loads = [0.0, 0.0]
    for c in chains:
        loads[loads.index(min(loads))] += c
    out["speedup_bound_lpt"] = sum(chains) / max(loads)
    # Throughput counting the fixed costs a flow run with its own LocalCluster pays
    # (cluster start and warm-up), against a long-lived warm cluster (flow wall only).
    for k in ("1w", "2w"):
        r = out[k]
        r["per_min_with_fixed_costs"] = 60 * r["aoi_days"] / (r["wall_s"] + r["cluster_start_s"] + r["warm_up_s"])
    out["speedup_with_fixed_costs"] = two["per_min_with_fixed_costs"] / one["per_min_with_fixed_costs"]
    # Load-robust view: CPU seconds per AOI-day of each process. The flow process and
    # the server are mostly background (CPU per second, which a loaded machine's longer
    # wall inflates): net of it they show their work per AOI-day. Workers are taken
    # gross (their tasks plus the task engine around them). On 2 idle cores the
    # 1-worker run is bound by its worker (flow and server have the other core):
    # wall1 >= n * w1; the 2-worker run by all the run's CPU on 2 cores less the
    # background: wall2 >= n * all2 / (2 - bg2). An estimate, not a measurement: the
    # lead's idle run measures the ratio itself.
    w1 = one["cpu_s_per_aoi_day"]["workers"]
    net2 = two["net_cpu_s_per_aoi_day"]
    all2 = two["cpu_s_per_aoi_day"]["workers"] + sum(v for k, v in net2.items() if k != "workers")
    bg2 = sum(v for k, v in two["background_cpu_s_per_s"].items() if k != "workers")
    out["speedup_from_cpu_2_cores"] = min(w1 * (2 - bg2) / all2, out["speedup_bound_lpt"])
    out["overhead_per_aoi_day_s"] = (one["wall_s"] - out["library"]["wall_s"]) / n
    out["overhead_in_flow_per_aoi_day_s"] = (one["wall_s"] - one["sum_run_day_wall_s"]) / n
    out["cached_rerun_per_aoi_day_s"] = out["rerun_cached_s"] / n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sparser history (every 28 days), 2 repeats, "
                    "2 dates per backfill AOI")
    ap.add_argument("--aoi", default="dunai_port", help="AOI of the history benchmark")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2023, 6, 1),
                    help="day 0 of the scenario (default: days 10 and 365 fall in early summer, when the "
                         "simulated sites are mostly clear)")
    ap.add_argument("--every", type=int, default=None, help="days between history dates (default 14; quick 28)")
    ap.add_argument("--repeats", type=int, default=None, help="samples per measured day (default 3; quick 2)")
    ap.add_argument("--backfill-aois", default="all",
                    help="comma-separated AOI ids, or 'all' (default: every AOI of the registry, ports and "
                         "railyards: a backfill over the registry, with chains of unequal cost)")
    ap.add_argument("--backfill-start", type=date.fromisoformat, default=date(2023, 7, 6))
    ap.add_argument("--backfill-dates", type=int, default=None, help="weekly dates per AOI (default 6; quick 2)")
    ap.add_argument("--skip-history", action="store_true")
    ap.add_argument("--skip-backfill", action="store_true")
    ap.add_argument("--print", metavar="JSON", help="print the table of a results file and exit")
    args = ap.parse_args(argv)
    if args.print:
        print_table(json.loads(Path(args.print).read_text()))
        return 0
    every = args.every or (28 if args.quick else 14)
    repeats = args.repeats or (2 if args.quick else 3)
    n_dates = args.backfill_dates or (2 if args.quick else 6)

    work = Path(tempfile.mkdtemp(prefix="bench-flows-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The ephemeral server needs well over the default 30 s to start on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    for var in ("CHANGEDET_DASK_ADDRESS", "CHANGEDET_STORE_URL", "PREFECT_API_URL"):
        os.environ.pop(var, None)
    results: dict = {"machine": f"{os.cpu_count()} CPUs", "uptime_before": _uptime(), "quick": args.quick}
    t_all = time.perf_counter()
    try:
        if not args.skip_history:
            results["history"] = history_cost(args.aoi, args.start, every, repeats, work)
            print("history:", json.dumps({k: v for k, v in results["history"].items() if k != "build"}), flush=True)
        if not args.skip_backfill:
            dates = [args.backfill_start + timedelta(days=7 * i) for i in range(n_dates)]
            if args.backfill_aois == "all":
                from changedet.aoi import list_aois

                aoi_ids = [a.id for a in list_aois()]
            else:
                aoi_ids = args.backfill_aois.split(",")
            results["backfill"] = backfill_scaling(aoi_ids, dates, work)
        results["uptime_after"] = _uptime()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - t_all
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_flows.json").write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    print(f"wrote {out / 'bench_flows.json'}")
    return 0


def print_table(results: dict) -> None:
    """The table of figures (also: ``python bench/bench_flows.py --print bench/results/bench_flows.json``)."""
    print(f"\nbench_flows on {results['machine']}{' (--quick)' if results['quick'] else ''}")
    print(f"before: {results['uptime_before']}")
    print(f"{'figure':64s} {'value':>12s}  target")
    if "history" in results:
        h = results["history"]
        print(f"{'history build: ' + str(len(h['build'])) + ' run_day calls, every %d days (s)' % h['every_days']:64s} "
              f"{h['history_build_s']:12.1f}")
        for which in ("early", "late"):
            label = (f"run_day on day {h[which + '_day']} ({h[which + '_history']} earlier dates, "
                     f"{h[which + '_status']}), median wall / CPU s")
            print(f"{label:64s} {statistics.median(h[which + '_s']):6.2f} / {statistics.median(h[which + '_cpu_s']):4.2f}")
        comparable = h["early_status"] == h["late_status"] == "processed"
        verdict = ("OK" if h["ratio"] <= 1.2 else "MISSED") if comparable else \
            "NOT COMPARABLE (a measured day was not fully processed: cloud or registration)"
        print(f"{'ratio day %d / day %d, wall (CPU)' % (h['late_day'], h['early_day']):64s} "
              f"{h['ratio']:5.2f} ({h['cpu_ratio']:4.2f})  <= 1.2 {verdict}")
        tr = h["build_trend"]
        if tr["first_third_cpu_s"]:
            print(f"{'history build, processed days: median CPU s first / last third':64s} "
                  f"{tr['first_third_cpu_s']:6.2f} / {tr['last_third_cpu_s']:4.2f}")
    b = results.get("backfill")
    if b and "net_cpu_s_per_aoi_day" in b["1w"]:
        b = derive(b)
    if b:
        one, two = b["1w"], b["2w"]
        print(f"{'backfill workload: AOIs x dates':64s} {len(b['aois']):5d} x {len(b['dates'])}")
        print(f"{'library alone (run_series, one process, dask on 1 thread): wall / CPU s':64s} "
              f"{b['library']['wall_s']:6.1f} / {b['library']['cpu_s']:5.1f}")
        for k, r in (("1 worker", one), ("2 workers", two)):
            print(f"{'cluster of ' + k + ': start / warm-up s (not in the flow wall)':64s} "
                  f"{r['cluster_start_s']:6.1f} / {r['warm_up_s']:5.1f}")
            print(f"{'flow, ' + k + ': wall s / AOI-days per min':64s} {r['wall_s']:6.1f} / {r['per_min']:5.1f}")
            print(f"{'  tasks in flight (mean) / CPU share each task got':64s} "
                  f"{r['concurrency']:6.2f} / {r['cpu_share_per_task']:5.2f}")
            print(f"{'  CPU s: tasks / their run_day calls; task CPU s per wall s':64s} "
                  f"{r['sum_task_cpu_s']:6.1f} / {r['sum_run_day_cpu_s']:5.1f}; {r['sum_task_cpu_s'] / r['wall_s']:5.2f}")
        for k, r in (("1 worker", one), ("2 workers", two)):
            tl = r["timeline"]
            print(f"{'  ' + k + ' wall: to 1st task / gaps per task / tail idle / after last, s':64s} "
                  f"{tl['first_task_start_s']:5.1f} / {tl['gap_per_task_s']:4.2f} / {tl['tail_idle_s']:4.1f} / "
                  f"{tl['after_last_task_s']:4.1f}")
            print(f"{'  ' + k + ' chains started in order':64s} {', '.join(tl['chain_start_order'])}")
            if k == "2 workers" and all("workers" in c for c in tl["chains"].values()):
                # 1 for every chain would mean each AOI stayed on the worker of its first day.
                spread = sum(c["workers"] > 1 for c in tl["chains"].values())
                print(f"{'  2 workers: AOI chains whose days ran on both workers':64s} {spread:6d} of {len(tl['chains'])}")
        print(f"{'CPU s per AOI-day: gross / net of background (background CPU s per s)':64s} "
              f"{'1 worker':>20s} {'2 workers':>22s}")
        for role in one["cpu_s_per_aoi_day"]:
            cells = [f"{r['cpu_s_per_aoi_day'][role]:5.2f} / {r['net_cpu_s_per_aoi_day'][role]:4.2f} "
                     f"({r['background_cpu_s_per_s'][role]:5.3f})" for r in (one, two)]
            print(f"{'  ' + role:64s} {cells[0]:>20s} {cells[1]:>22s}")
        for k, r in (("1 worker", one), ("2 workers", two)):
            n = r["aoi_days"]
            print(f"{'  ' + k + ': workers inside tasks / in run_day':64s} {r['sum_task_cpu_s'] / n:5.2f} / "
                  f"{r['sum_run_day_cpu_s'] / n:4.2f}")
        print(f"{'  library alone (run_day in one process)':64s} {b['library']['cpu_s'] / one['aoi_days']:5.2f}")
        verdict = "OK" if b["speedup"] >= 1.7 else "MISSED"
        if b["speedup"] > 1.05 * b["speedup_bound_lpt"]:
            # More than the chains allow: the 1-worker run got less CPU than the 2-worker run.
            verdict = "NOT COMPARABLE (above the workload's bound: the machine's load changed between the runs)"
        print(f"{'throughput 2 workers / 1 worker, warm cluster (flow wall)':64s} {b['speedup']:12.2f}  >= 1.7 "
              f"{verdict}")
        print(f"{'  with cluster start + warm-up in the wall':64s} {b['speedup_with_fixed_costs']:12.2f}")
        print(f"{'  estimate for 2 idle cores from the CPU s per AOI-day':64s} "
              f"{b['speedup_from_cpu_2_cores']:12.2f}")
        print(f"{'  most the workload allows (longest chain / chains LPT on 2)':64s} "
              f"{b['speedup_bound']:5.2f} / {b['speedup_bound_lpt']:4.2f}")
        print(f"{'Prefect overhead per AOI-day (1-worker flow - library) s':64s} {b['overhead_per_aoi_day_s']:12.2f}")
        print(f"{'  of which outside run_day inside the flow, s':64s} {b['overhead_in_flow_per_aoi_day_s']:12.2f}")
        for k, r in (("1 worker", one), ("2 workers", two)):
            ph = r.get("task_phases_s")
            if ph:
                print(f"{'  ' + k + ': waiting for the source slot / to release it, s per AOI-day':64s} "
                      f"{ph['slot_acquire_s'] / r['aoi_days']:6.2f} / {ph['slot_release_s'] / r['aoi_days']:4.2f}")
        print(f"{'  ephemeral Prefect server start, paid once, not included, s':64s} "
              f"{b['ephemeral_server_start_s']:12.1f}")
        print(f"{'re-run of the finished backfill (all cached), s per AOI-day':64s} "
              f"{b['cached_rerun_per_aoi_day_s']:12.2f}")
    print(f"after: {results.get('uptime_after')}")
    print(f"bench total {results['total_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
