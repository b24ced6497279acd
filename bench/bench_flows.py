"""Orchestration benchmarks: daily-run cost against history, backfill scaling, Prefect overhead.

1. Daily-run cost must not grow with history: ``run_day`` on the acquisition nearest
   day 365 of a scenario against the one nearest day 10 (target ratio <= 1.2). The
   history is built once with the library; each measured day is then re-run from copies
   of the data directory as it stood the day before (``--repeats`` samples, median).
2. Backfill throughput, the ``backfill`` flow on a Dask LocalCluster with 2 worker
   processes against 1 (one thread each, kernels local: one AOI-day per worker at a
   time; target >= 1.7x).
3. Prefect overhead per AOI-day: the 1-worker backfill against the same AOI-days run
   with ``run_series`` directly, and the re-run of the finished backfill (every AOI-day
   a cache hit: what orchestration alone costs).

Prefect runs in ephemeral mode in a temporary PREFECT_HOME. Prints a table and writes
``bench/results/bench_flows.json``.

    python bench/bench_flows.py                 # full (about 15 min on 2 idle cores)
    python bench/bench_flows.py --days 120      # shorter history
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))


def history_cost(aoi_id: str, start: date, days: int, every: int, repeats: int, work: Path) -> dict:
    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, dates_between, run_day

    aoi = load_aoi(aoi_id)
    dates = dates_between(start, start + timedelta(days=days), every)
    # Candidates near day 10 and near the last day; the measured ones are the nearest
    # that the build processed (a cloudy or unregistered day skips most of the work).
    early_c = sorted(dates[1:], key=lambda d: abs((d - start).days - 10))[:4]
    late_c = sorted(dates, key=lambda d: abs((d - start).days - days))[:4]
    hist = work / "history"
    cfg = RunConfig(data_dir=hist)
    snapshots = {}
    build = []
    status = {}
    t0 = time.perf_counter()
    for d in dates:
        if d in early_c or d in late_c:
            snapshots[d] = work / f"before-{d}"
            if hist.exists():
                _copy(hist, snapshots[d])
            else:
                snapshots[d].mkdir()
        t = time.perf_counter()
        r = run_day(aoi, d, cfg)
        status[d] = r.status
        build.append({"day": (d - start).days, "seconds": time.perf_counter() - t, "status": r.status})
    build_s = time.perf_counter() - t0
    early = next((d for d in early_c if status[d] == "processed"), early_c[0])
    late = next((d for d in late_c if status[d] == "processed"), late_c[0])

    statuses = {}

    def sample(d: date) -> list[float]:
        out = []
        for i in range(repeats):
            where = work / f"run-{d}-{i}"
            _copy(snapshots[d], where)
            t = time.perf_counter()
            r = run_day(aoi, d, RunConfig(data_dir=where))
            out.append(time.perf_counter() - t)
            # A cloudy or unregistered day skips most of the work: say so next to the figure.
            statuses[(d - start).days] = r.status
            shutil.rmtree(where)
        return out

    s_early, s_late = sample(early), sample(late)
    return {"aoi": aoi_id, "every_days": every, "history_build_s": build_s, "build": build,
            "early_day": (early - start).days, "late_day": (late - start).days,
            "early_s": s_early, "late_s": s_late,
            "early_history": sum(1 for b in build if b["day"] < (early - start).days),
            "late_history": sum(1 for b in build if b["day"] < (late - start).days),
            "statuses": statuses, "ratio": statistics.median(s_late) / statistics.median(s_early)}


def backfill_scaling(aois: list[str], start: date, end: date, every: int, work: Path) -> dict:
    from prefect_dask import DaskTaskRunner

    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, run_series
    from flows.backfill import backfill

    from flows.tasks import ensure_source_limits

    n_days = None
    out: dict = {}
    # Start the ephemeral Prefect server before timing: its start-up is paid once per
    # process, not per AOI-day.
    t = time.perf_counter()
    ensure_source_limits({"changedet-source-simulator"}, 16)
    out["ephemeral_server_start_s"] = time.perf_counter() - t
    for workers in (1, 2):
        runner = DaskTaskRunner(cluster_class="distributed.LocalCluster",
                                cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                                "dashboard_address": ":0"})
        flow = backfill.with_options(task_runner=runner)
        data = work / f"backfill-{workers}w"
        t = time.perf_counter()
        res = flow(aois, start, end, every, data_dir=str(data), chunk_size=64, source_concurrency=16,
                   kernels_on_cluster=False)
        wall = time.perf_counter() - t
        n_days = sum(len(v) for v in res.values())
        statuses = sorted({r["status"] for v in res.values() for r in v})
        out[f"{workers}w"] = {"wall_s": wall, "aoi_days": n_days, "per_min": 60 * n_days / wall, "statuses": statuses}
        if workers == 1:
            t = time.perf_counter()
            flow(aois, start, end, every, data_dir=str(data), chunk_size=64, source_concurrency=16,
                 kernels_on_cluster=False)
            out["rerun_cached_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lib = work / "library"
    for a in aois:
        aoi = load_aoi(a)
        from changedet.pipeline import dates_between

        run_series(aoi, dates_between(start, end, every), RunConfig(data_dir=lib))
    out["library_s"] = time.perf_counter() - t
    out["speedup"] = out["1w"]["wall_s"] / out["2w"]["wall_s"]
    out["overhead_per_aoi_day_s"] = (out["1w"]["wall_s"] - out["library_s"]) / n_days
    out["cached_rerun_per_aoi_day_s"] = out["rerun_cached_s"] / n_days
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aoi", default="dunai_port", help="AOI of the history benchmark")
    ap.add_argument("--start", type=date.fromisoformat, default=date(2023, 1, 5))
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--every", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backfill-aois", default="dunai_port,vostochny_port,rajin_port,chongjin_port")
    ap.add_argument("--backfill-start", type=date.fromisoformat, default=date(2023, 7, 6))
    ap.add_argument("--backfill-dates", type=int, default=2)
    ap.add_argument("--skip-history", action="store_true")
    ap.add_argument("--skip-backfill", action="store_true")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-flows-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The ephemeral server needs well over the default 30 s to start on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    os.environ.pop("CHANGEDET_DASK_ADDRESS", None)
    results: dict = {"machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()}"}
    try:
        if not args.skip_history:
            results["history"] = history_cost(args.aoi, args.start, args.days, args.every, args.repeats, work)
            print("history:", json.dumps({k: v for k, v in results["history"].items() if k != "build"}), flush=True)
        end = args.backfill_start + timedelta(days=7 * (args.backfill_dates - 1))
        if not args.skip_backfill:
            results["backfill"] = backfill_scaling(args.backfill_aois.split(","), args.backfill_start, end, 7, work)
        results["load_after"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nbench_flows on {results['machine']}")
    print(f"{'figure':58s} {'value':>12s}  target")
    if "history" in results:
        h = results["history"]
        print(f"{'history build: ' + str(len(h['build'])) + ' run_day calls (s)':58s} {h['history_build_s']:12.1f}")
        print(f"{'run_day on day %d (%d earlier dates), median s' % (h['early_day'], h['early_history']):58s} "
              f"{statistics.median(h['early_s']):12.2f}")
        print(f"{'run_day on day %d (%d earlier dates), median s' % (h['late_day'], h['late_history']):58s} "
              f"{statistics.median(h['late_s']):12.2f}")
        print(f"{'status of the measured runs':58s} {h['statuses']}")
        print(f"{'ratio late / early':58s} {h['ratio']:12.2f}  <= 1.2 {'OK' if h['ratio'] <= 1.2 else 'MISSED'}")
    b = results.get("backfill")
    if b:
        print(f"{'backfill, 1 worker: AOI-days / wall s':58s} {b['1w']['aoi_days']:5d} / {b['1w']['wall_s']:5.1f}")
        print(f"{'backfill, 2 workers: AOI-days / wall s':58s} {b['2w']['aoi_days']:5d} / {b['2w']['wall_s']:5.1f}")
        print(f"{'throughput 2 workers / 1 worker':58s} {b['speedup']:12.2f}  >= 1.7 "
              f"{'OK' if b['speedup'] >= 1.7 else 'MISSED'}")
        print(f"{'same AOI-days with run_series (library, no Prefect) s':58s} {b['library_s']:12.1f}")
        print(f"{'Prefect overhead per AOI-day (1-worker flow - library) s':58s} "
              f"{b['overhead_per_aoi_day_s']:12.2f}")
        print(f"{'(ephemeral Prefect server start, paid once, not included) s':58s} "
              f"{b['ephemeral_server_start_s']:12.1f}")
        print(f"{'re-run of the finished backfill (all cached), s per AOI-day':58s} "
              f"{b['cached_rerun_per_aoi_day_s']:12.2f}")
    print(f"load average after: {results['load_after']}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_flows.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out / 'bench_flows.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
