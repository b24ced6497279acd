"""``changedet serve`` (serve the Prefect deployments) and ``changedet backfill`` (run or submit one).

These commands live with the flows, not in the library: ``changedet`` finds them through
the ``changedet.commands`` entry point (see pyproject.toml), so the library never imports
Prefect. Prefect itself is imported inside the commands, so ``changedet --help`` works
without the ``flows`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path

from changedet.cli import parse_date
from changedet.errors import ChangedetError, DateError


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the Prefect deployments: daily monitoring per AOI timezone, "
                       "backfill and report (needs a Prefect API: PREFECT_API_URL)")
    p.add_argument("--dask-address", default=None,
                   help="Dask scheduler the flows run on, e.g. tcp://dask-scheduler:8786 (default: "
                        "$CHANGEDET_DASK_ADDRESS, else a LocalCluster per flow run)")
    p.add_argument("--aoi", action="append", help="serve only these AOIs (default: the whole registry)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="default data directory of the deployments (default: $CHANGEDET_DATA_DIR)")
    p.add_argument("--registry", type=Path, default=None, help="AOI registry (default: $CHANGEDET_AOIS or aois/)")
    p.add_argument("--cron", default=None, help="daily schedule, evaluated in each AOI's timezone "
                   "(default '0 6 * * *')")
    p.add_argument("--report-cron", default=None, help="report schedule in UTC (default '0 7 * * 1')")
    p.add_argument("--limit", type=int, default=None, help="flow runs executed at once by this process")
    p.set_defaults(func=cmd_serve)

    b = sub.add_parser("backfill", help="backfill a date range with the Prefect flow, here or (--submit) as a "
                       "deployment run with an idempotency key")
    b.add_argument("--aoi", action="append", help="AOI id; repeat for several (default: all)")
    b.add_argument("--start", type=parse_date, required=True, help="first day YYYY-MM-DD")
    b.add_argument("--end", type=parse_date, required=True, help="last day YYYY-MM-DD")
    b.add_argument("--every", type=int, default=None, help="days between runs (default: each AOI's cadence)")
    b.add_argument("--data-dir", type=Path, default=None, help="default: $CHANGEDET_DATA_DIR or ./changedet-data")
    b.add_argument("--registry", type=Path, default=None, help="AOI registry (default: $CHANGEDET_AOIS or aois/)")
    b.add_argument("--seed", type=int, default=0, help="simulator seed")
    b.add_argument("--store-url", default=None, help="cubes and products on a path or fsspec URL such as "
                   "s3://bucket/prefix (default: $CHANGEDET_STORE_URL, else the data directory)")
    b.add_argument("--chunk-size", type=int, default=8,
                   help="log progress every N finished AOI-days (each AOI runs one day at a time, on whichever "
                        "worker is free)")
    b.add_argument("--fail-fast", action="store_true",
                   help="stop every AOI at the first failed AOI-day (days in flight finish and are kept); by default "
                        "only the failed AOI stops and the others finish")
    b.add_argument("--dask-address", default=None, help="Dask scheduler (when running here)")
    b.add_argument("--worker-grace", type=float, default=None, metavar="SECONDS",
                   help="when running here: fail the backfill once the Dask cluster has had no running worker (or "
                        "an unanswering scheduler) this long; workers a nanny restarts within it resume the work "
                        "(default: $CHANGEDET_DASK_WORKER_GRACE_S, else 60)")
    b.add_argument("--stall-limit", type=float, default=None, metavar="SECONDS",
                   help="when running here: give up when no AOI-day ended for this long, 0 for never (default: "
                        "$CHANGEDET_BACKFILL_STALL_S, else 14400)")
    b.add_argument("--submit", action="store_true",
                   help="create a run of the served backfill deployment instead of running here; the same "
                        "backfill submitted again is the same run (resumed if it crashed)")
    b.add_argument("--deployment", default=None, help="deployment to submit to (default backfill/changedet-backfill)")
    b.add_argument("--wait", type=float, default=0, help="with --submit: seconds to wait for the run to finish")
    b.set_defaults(func=cmd_backfill)


def _flows():
    try:
        import prefect  # noqa: F401
    except ImportError:
        raise ChangedetError("this command needs Prefect; install the flows extra: "
                             "pip install -c constraints.txt -e '.[flows]'") from None


def _env(dask_address: str | None, data_dir: Path | None, registry: Path | None) -> None:
    # Served flows run in subprocesses that import flows/ afresh: settings travel as
    # environment variables (the flows' task runner reads CHANGEDET_DASK_ADDRESS at import).
    if dask_address:
        os.environ["CHANGEDET_DASK_ADDRESS"] = dask_address
    if data_dir:
        os.environ["CHANGEDET_DATA_DIR"] = str(Path(data_dir).resolve())
    if registry:
        os.environ["CHANGEDET_AOIS"] = str(Path(registry).resolve())


def cmd_serve(args) -> int:
    _flows()
    _env(args.dask_address, args.data_dir, args.registry)
    from flows.deploy import DAILY_CRON, REPORT_CRON, serve

    if args.limit is not None and args.limit < 1:
        raise ChangedetError(f"--limit {args.limit}: give at least 1 flow run at once")
    serve(aoi_ids=args.aoi, data_dir=os.environ.get("CHANGEDET_DATA_DIR"),
          registry=os.environ.get("CHANGEDET_AOIS"), daily_cron=args.cron or DAILY_CRON,
          report_cron=args.report_cron or REPORT_CRON, limit=args.limit)
    return 0


def cmd_backfill(args) -> int:
    if args.end < args.start:
        raise DateError(f"--end {args.end} is before --start {args.start}; swap them")
    if args.every is not None and args.every < 1:
        raise DateError(f"--every {args.every}: give a number of days >= 1")
    _flows()
    if args.submit and (args.worker_grace is not None or args.stall_limit is not None):
        raise ChangedetError("--worker-grace and --stall-limit apply to a backfill run here; a submitted run reads "
                             "CHANGEDET_DASK_WORKER_GRACE_S and CHANGEDET_BACKFILL_STALL_S from the environment of "
                             "the process that serves the deployment (changedet serve)")
    if not args.submit:  # a submitted run reads the settings where it runs, not here
        from flows.backfill import check_watch_settings

        check_watch_settings(args.worker_grace, args.stall_limit, names=("--worker-grace", "--stall-limit"))
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    registry = str(Path(args.registry).resolve()) if args.registry else None
    if args.submit:
        from flows.deploy import BACKFILL_DEPLOYMENT, submit_backfill

        run, action = submit_backfill(args.aoi, args.start, args.end, args.every,
                                      deployment=args.deployment or BACKFILL_DEPLOYMENT, data_dir=data_dir,
                                      seed=args.seed, registry=registry, chunk_size=args.chunk_size,
                                      wait=args.wait or None, store_url=args.store_url,
                                      fail_fast=args.fail_fast)
        print(f"backfill flow run {run.name} ({run.id}): {action}; state {run.state.name if run.state else '?'}")
        return 0 if not (run.state and run.state.is_final() and not run.state.is_completed()) else 1
    _env(args.dask_address, None, None)
    from flows.backfill import BackfillFailed, backfill

    try:
        out = backfill(args.aoi, args.start, args.end, args.every, data_dir=data_dir, seed=args.seed,
                       registry=registry, chunk_size=args.chunk_size, store_url=args.store_url,
                       fail_fast=args.fail_fast, worker_grace_s=args.worker_grace, stall_limit_s=args.stall_limit)
    except BackfillFailed as exc:  # what did finish, then the one-line summary (exit 2)
        _print_backfill(exc.results)
        raise
    _print_backfill(out)
    return 0


def _print_backfill(out: dict[str, list[dict]]) -> None:
    for aoi_id, results in out.items():
        statuses = {}
        for r in results:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        print(f"{aoi_id}: {len(results)} dates, " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
