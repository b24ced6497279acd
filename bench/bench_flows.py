"""Orchestration benchmarks: daily-run cost against history, backfill scaling, Prefect overhead.

1. Daily-run cost must not grow with history: ``run_day`` on day 365 of a scenario
   against day 10 (target ratio <= 1.2). The history (every ``--every`` days plus days 10
   and 365 themselves) is built once with the library; each measured day is then re-run
   from copies of the data directory as it stood the day before (``--repeats`` samples,
   median), wall and CPU seconds.
2. Backfill throughput: the ``backfill`` flow on the SAME workload (``--backfill-aois`` x
   ``--backfill-dates`` weekly AOI-days) on a Dask LocalCluster of 1 and of 2 worker
   processes (one thread each, kernels local: one AOI-day per process at a time; target
   >= 1.7x). Each cluster is started once and warmed (imports, numba compilation: one
   AOI-day on a scratch directory per worker) before the timed flow run: that is what a
   long-lived cluster (``--dask-address``) or one LocalCluster per flow run serving many
   AOI-days looks like; start and warm-up are reported apart. Every task reports its own
   wall and CPU seconds, so the table shows how much CPU each worker process actually got
   (on a machine shared with other work, two workers cannot run twice as fast however
   well the flow parallelises) and the speed-up the workload allows at most (longest AOI
   chain: days of one AOI run in order).
3. Prefect overhead per AOI-day: (1-worker flow wall - the same AOI-days run with
   ``run_series`` in one process without Prefect) / AOI-days, and the re-run of the
   finished backfill (every AOI-day a cache hit: orchestration alone).

Prefect runs in ephemeral mode in a temporary PREFECT_HOME. Prints a table and writes
``bench/results/bench_flows.json``. Report ``uptime`` with the figures: the machine's
other load depresses every wall-clock ratio.

    python bench/bench_flows.py            # about 5 min on 2 idle cores
    python bench/bench_flows.py --quick    # about 2 min: sparser history, 2 dates per AOI
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


def _warm(aoi_id: str, day: str, where: str) -> dict:
    """Imports and numba compilation of one worker: one AOI-day on a scratch directory."""
    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, run_day
    import flows.tasks  # noqa: F401  (what the tasks import)

    t = time.perf_counter()
    run_day(load_aoi(aoi_id), date.fromisoformat(day), RunConfig(data_dir=Path(where) / str(os.getpid())))
    return {"pid": os.getpid(), "s": time.perf_counter() - t}


def _timings(res: dict) -> list[dict]:
    return [{"aoi": a, **r["timing"]} for a, v in res.items() for r in v if "timing" in r]


def backfill_scaling(aois: list[str], dates: list[date], work: Path) -> dict:
    from distributed import Client, LocalCluster
    from prefect.client.orchestration import get_client
    from prefect_dask import DaskTaskRunner

    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, run_series
    from flows.backfill import backfill
    from flows.tasks import ensure_source_limits
    from flows.cluster import configure_worker_malloc

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

    # The same AOI-days with the library alone, in this (warmed) process.
    _warm(aois[0], warm_day, str(work / "warm-lib"))
    lib = work / "library"
    t, c = time.perf_counter(), time.process_time()
    per_aoi = {}
    for a in aois:
        ta = time.perf_counter()
        run_series(load_aoi(a), dates, RunConfig(data_dir=lib))
        per_aoi[a] = time.perf_counter() - ta
    out["library"] = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "per_aoi_s": per_aoi}

    for workers in (1, 2):
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
        start_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = client.run(_warm, aois[0], warm_day, str(work / f"warm-{workers}w"))
        warm_s = time.perf_counter() - t
        try:
            flow = backfill.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
            data = work / f"backfill-{workers}w"
            t = time.perf_counter()
            res = flow(aois, start, end, every, data_dir=str(data), chunk_size=64, source_concurrency=16,
                       kernels_on_cluster=False)
            wall = time.perf_counter() - t
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
                   "longest_aoi_chain_s": max(chains.values()) if chains else 0.0}
            # Mean number of AOI-days in flight, and the CPU each of them actually got.
            row["concurrency"] = row["sum_task_wall_s"] / wall
            row["cpu_share_per_task"] = row["sum_task_cpu_s"] / max(row["sum_task_wall_s"], 1e-9)
            out[f"{workers}w"] = row
            if workers == 1:
                t = time.perf_counter()
                flow(aois, start, end, every, data_dir=str(data), chunk_size=64, source_concurrency=16,
                     kernels_on_cluster=False)
                out["rerun_cached_s"] = time.perf_counter() - t
        finally:
            client.close()
            cluster.close()
    one, two = out["1w"], out["2w"]
    n = one["aoi_days"]
    out["speedup"] = one["wall_s"] / two["wall_s"]
    # What the workload allows on 2 processes: the work split in two, but no faster than
    # the longest AOI (its days run in order).
    out["speedup_bound"] = one["sum_task_wall_s"] / max(one["sum_task_wall_s"] / 2, one["longest_aoi_chain_s"])
    # Speed-up in CPU terms: AOI-days per CPU-second of the tasks stays put when the
    # flow parallelises; what 2 workers add is the CPU they get at once.
    out["cpu_seconds_per_wall_second"] = {"1w": one["sum_task_cpu_s"] / one["wall_s"],
                                          "2w": two["sum_task_cpu_s"] / two["wall_s"]}
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
    ap.add_argument("--backfill-aois", default="dunai_port,vostochny_port,rajin_port,chongjin_port")
    ap.add_argument("--backfill-start", type=date.fromisoformat, default=date(2023, 7, 6))
    ap.add_argument("--backfill-dates", type=int, default=None, help="weekly dates per AOI (default 4; quick 2)")
    ap.add_argument("--skip-history", action="store_true")
    ap.add_argument("--skip-backfill", action="store_true")
    args = ap.parse_args(argv)
    every = args.every or (28 if args.quick else 14)
    repeats = args.repeats or (2 if args.quick else 3)
    n_dates = args.backfill_dates or (2 if args.quick else 4)

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
            results["backfill"] = backfill_scaling(args.backfill_aois.split(","), dates, work)
        results["uptime_after"] = _uptime()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - t_all

    print(f"\nbench_flows on {results['machine']}{' (--quick)' if args.quick else ''}")
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
    if b:
        one, two = b["1w"], b["2w"]
        print(f"{'backfill workload: AOIs x dates':64s} {len(b['aois']):5d} x {len(b['dates'])}")
        print(f"{'library alone (run_series, one process): wall / CPU s':64s} "
              f"{b['library']['wall_s']:6.1f} / {b['library']['cpu_s']:5.1f}")
        for k, r in (("1 worker", one), ("2 workers", two)):
            print(f"{'cluster of ' + k + ': start / warm-up s (not in the flow wall)':64s} "
                  f"{r['cluster_start_s']:6.1f} / {r['warm_up_s']:5.1f}")
            print(f"{'flow, ' + k + ': wall s / AOI-days per min':64s} {r['wall_s']:6.1f} / {r['per_min']:5.1f}")
            print(f"{'  tasks in flight (mean) / CPU share each task got':64s} "
                  f"{r['concurrency']:6.2f} / {r['cpu_share_per_task']:5.2f}")
            print(f"{'  CPU s: tasks / their run_day calls; task CPU s per wall s':64s} "
                  f"{r['sum_task_cpu_s']:6.1f} / {r['sum_run_day_cpu_s']:5.1f}; {r['sum_task_cpu_s'] / r['wall_s']:5.2f}")
        print(f"{'throughput 2 workers / 1 worker':64s} {b['speedup']:12.2f}  >= 1.7 "
              f"{'OK' if b['speedup'] >= 1.7 else 'MISSED'}")
        print(f"{'  most the workload allows (longest AOI chain)':64s} {b['speedup_bound']:12.2f}")
        print(f"{'Prefect overhead per AOI-day (1-worker flow - library) s':64s} {b['overhead_per_aoi_day_s']:12.2f}")
        print(f"{'  of which outside run_day inside the flow, s':64s} {b['overhead_in_flow_per_aoi_day_s']:12.2f}")
        print(f"{'  ephemeral Prefect server start, paid once, not included, s':64s} "
              f"{b['ephemeral_server_start_s']:12.1f}")
        print(f"{'re-run of the finished backfill (all cached), s per AOI-day':64s} "
              f"{b['cached_rerun_per_aoi_day_s']:12.2f}")
    print(f"after: {results.get('uptime_after')}")
    print(f"bench total {results['total_s']:.0f} s")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_flows.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out / 'bench_flows.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
