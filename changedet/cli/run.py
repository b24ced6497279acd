"""``changedet run`` (one AOI, one day or a range) and ``changedet demo`` (the whole slice offline)."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from pathlib import Path

from changedet.cli import default_data_dir, parse_date
from changedet.errors import DateError

DEMO_START, DEMO_END = date(2023, 6, 1), date(2023, 11, 30)


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="process one AOI for one day (or a range): acquire, co-register, count, alert")
    p.add_argument("--aoi", required=True, action="append", help="AOI id; repeat for several")
    p.add_argument("--date", type=parse_date, help="day to process YYYY-MM-DD")
    p.add_argument("--start", type=parse_date, help="first day of a range (with --end)")
    p.add_argument("--end", type=parse_date, help="last day of a range")
    p.add_argument("--every", type=int, default=None, help="days between runs in a range (default: AOI cadence)")
    p.add_argument("--data-dir", type=Path, default=None, help="where cubes, metrics and the outbox live "
                   "(default: $CHANGEDET_DATA_DIR or ./changedet-data)")
    p.add_argument("--store-url", default=None, help="where cubes and products go: a path or an fsspec URL such "
                   "as s3://bucket/prefix (default: $CHANGEDET_STORE_URL, else the data directory); S3 "
                   "credentials and endpoint come from the AWS_* environment variables")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (AOIs whose first usable source is the "
                   "simulator; the others run on their configured imagery)")
    p.add_argument("--registry", type=Path, default=None,
                   help="AOI folder the --aoi ids are read from (default: $CHANGEDET_AOIS or aois/)")
    p.add_argument("--json", action="store_true", help="print one JSON object per day")
    p.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="backfill the 2023 scenario over all AOIs offline and print the alerts")
    d.add_argument("--start", type=parse_date, default=DEMO_START)
    d.add_argument("--end", type=parse_date, default=DEMO_END)
    d.add_argument("--every", type=int, default=7, help="days between acquisitions (default weekly)")
    d.add_argument("--aoi", action="append", help="restrict to these AOIs (default: all)")
    d.add_argument("--data-dir", type=Path, default=Path("changedet-demo"))
    d.add_argument("--workers", type=int, default=2, help="AOIs processed in parallel")
    d.add_argument("--keep", action="store_true", help="keep earlier demo results (default: start afresh)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)


def _config(data_dir: Path | None, seed: int, store_url: str | None = None, registry: Path | None = None):
    from changedet.pipeline import RunConfig

    cfg = RunConfig(data_dir=Path(data_dir or default_data_dir()), seed=seed, store_url=store_url,
                    registry=registry)
    _check_writable(cfg.data_dir)  # metrics, outbox and evidence always live here
    cfg.store_root()  # an unusable store URL fails here, before any work
    return cfg


def _check_writable(data_dir: Path) -> None:
    """Create ``data_dir`` if needed and write a file in it, or say which directory fails and why.

    Asked before any work, so a read-only or mistyped data directory fails in a second
    with its name rather than with a traceback after the first scene was fetched.
    (``os.access`` is not enough: it says yes to root whatever the mount allows.)
    """
    import tempfile

    from changedet.errors import StoreError

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".changedet-write-check-"):
            pass
    except OSError as exc:
        raise StoreError(f"data directory {data_dir} cannot be written ({exc.strerror or exc}); pass a writable "
                         "--data-dir or set CHANGEDET_DATA_DIR") from None


def cmd_run(args) -> int:
    from changedet.aoi import load_aoi
    from changedet.cube import CubeLocked, CubeRaced
    from changedet.errors import SourceConfigError, SourceUnavailable
    from changedet.pipeline import RETRY_DELAYS_S, DayResult, _refuse_future, dates_between, days_up_to_today, run_day

    if args.date and (args.start or args.end):
        raise DateError("give either --date or --start/--end, not both")
    if not args.date and not (args.start and args.end):
        raise DateError("give --date YYYY-MM-DD, or --start and --end for a range")
    if args.every is not None and args.every < 1:
        raise DateError(f"--every {args.every}: give the days between runs as a whole number >= 1 "
                        "(or leave it out to use each AOI's cadence)")
    # Every AOI and date is checked before the data directory is created or any day
    # runs: a typo creates nothing, and a range never stops halfway on a future day.
    plan = []
    for aoi_id in args.aoi:
        aoi = load_aoi(aoi_id, registry=getattr(args, "registry", None))
        if args.date:
            _refuse_future(aoi, args.date)
            days = [args.date]
        else:
            wanted = dates_between(args.start, args.end, args.every or aoi.cadence_days)
            days, today = days_up_to_today(aoi, wanted)
            if len(days) < len(wanted):
                print(f"changedet run: {aoi.id}: range cut at today ({today} at the site): "
                      f"{len(wanted) - len(days)} later day(s) not run, no imagery of them can exist yet",
                      file=sys.stderr, flush=True)
        plan.append((aoi, days))
    cfg = _config(args.data_dir, args.seed, args.store_url, getattr(args, "registry", None))
    failed, unreadable, stopped = [], [], []
    for aoi, days in plan:
        for i, d in enumerate(days):
            stop = ""
            try:
                r = _run_day_typed(run_day, aoi, d, cfg)
            except SourceConfigError as exc:
                # Raised by run_day for a setting it reads itself (max_cloud, reference), or for
                # an AOI none of whose sources can be used here: as a source's configuration
                # error, it is the entry's (the AOI file's) and every later day's.
                r = DayResult(aoi.id, d, "failed", note=str(exc), misconfigured={
                    "aoi_id": aoi.id, "file": str(aoi.source_path) if aoi.source_path else None, "entry": None,
                    "option": exc.option})
            except SourceUnavailable as exc:
                # Raised by run_day for a file it reads itself (a reference: on a share not
                # mounted now), or for an AOI whose local imagery folder is missing or empty
                # (_run_day_typed): passing, but the AOI's later days would need it too.
                r = DayResult(aoi.id, d, "failed", note=str(exc))
                stop = "a file it needs could not be read now (it may pass: run the range again)"
            except (CubeRaced, CubeLocked) as exc:
                # Still there after the retries: another run holds or took this AOI's cube. Its
                # later days would read a history with this day missing, and alerts depend on
                # the order: they are not run (a run of the range again does them).
                r = DayResult(aoi.id, d, "failed", note=f"{type(exc).__name__} after {len(RETRY_DELAYS_S) + 1} "
                              f"tries: {exc}")
                stop = f"the cube stayed busy ({type(exc).__name__}) after {len(RETRY_DELAYS_S)} retries"
            if r.status == "failed":
                failed.append(f"{aoi.id} {d}")
            elif r.status == "unreadable":
                unreadable.append(f"{aoi.id} {d}")
            if args.json:
                print(json.dumps(_as_json(r)))
            else:
                print(r.summary(), flush=True)
            if r.misconfigured:
                # Every later day of the entry fails alike until it is fixed: the AOI stops here
                # (its later days not run, named), the other AOIs go on.
                stop = f"configuration error of {r.config_problem()}"
            if stop:
                rest = days[i + 1:]
                line = (f"{aoi.id} stopped on {d}: {stop}"
                        + (f"; {len(rest)} later day(s) not run ({rest[0]}..{rest[-1]})" if rest else ""))
                stopped.append(line)
                print(f"changedet run: {line}; the other AOIs go on", file=sys.stderr, flush=True)
                break
    if unreadable:
        # Recorded as skipped (the range goes on and re-running will not help): say so
        # where a scheduler's log shows it, without failing the whole run for a bad file.
        print(f"changedet run: warning: {len(unreadable)} day(s) had a scene that cannot be read "
              f"({', '.join(unreadable)}); it is recorded as skipped: replace the file (or fix the "
              "request) and run those days again", file=sys.stderr, flush=True)
    if failed:
        # A scheduler must see that a day's imagery could not be read (nothing of it was
        # stored); running the same command again retries exactly those days.
        print(f"changedet run: {len(failed)} day(s) failed ({', '.join(failed)}); see the reasons above: fix "
              "the configuration they name, or run them again once the source is reachable"
              + (f"; AOIs stopped: {'; '.join(stopped)}" if stopped else ""),
              file=sys.stderr, flush=True)
        return 1
    return 0


#: Sleep between tries (a name of its own, so tests need not wait).
_sleep = time.sleep


def _run_day_typed(run_day, aoi, day: date, cfg):
    """:func:`_run_day_retrying`, with a new AOI none of whose sources can be used here raised as
    what it is (:func:`changedet.acquire.unusable_sources_error`): a configuration error
    (credentials missing: the AOI stops), or a failure that may pass (a local folder missing
    or empty, as on a share not mounted: a passing ``failed`` day, the AOI stops and a run
    of the range again does its days)."""
    from changedet.acquire import unusable_sources_error
    from changedet.errors import SourceError

    try:
        return _run_day_retrying(run_day, aoi, day, cfg)
    except SourceError as exc:
        typed = unusable_sources_error(aoi, exc, seed=cfg.seed, registry=cfg.registry, data_dir=cfg.data_dir)
        if typed is None:
            raise
        raise typed from None


def _run_day_retrying(run_day, aoi, day: date, cfg):
    """``run_day(aoi, day, cfg)``, tried again after a pause when the cube was busy.

    ``CubeLocked`` (another run held the cube's lock) and ``CubeRaced`` (another run stored
    the series' first day meanwhile; nothing was stored, and the next try registers the day
    onto that run's reference) pass: tried again after each of
    :data:`changedet.pipeline.RETRY_DELAYS_S` (s), the flows' policy, each retry said on
    stderr. The last try's error is raised.
    """
    from changedet.cube import CubeLocked, CubeRaced
    from changedet.pipeline import RETRY_DELAYS_S

    tries = len(RETRY_DELAYS_S) + 1
    for attempt, delay in enumerate(RETRY_DELAYS_S, start=1):
        try:
            return run_day(aoi, day, cfg)
        except (CubeRaced, CubeLocked) as exc:
            print(f"changedet run: {aoi.id} {day}: {type(exc).__name__}: {exc}; retrying in {float(delay):g} s "
                  f"(try {attempt + 1} of {tries})", file=sys.stderr, flush=True)
            _sleep(float(delay))
    return run_day(aoi, day, cfg)  # the last try: its error is the one reported


def _as_json(r) -> dict:
    from dataclasses import asdict

    doc = asdict(r)
    doc["day"] = r.day.isoformat()
    return doc


def _demo_worker(aoi_id: str, days: list[date], data_dir: str, seed: int) -> list[dict]:
    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, run_day

    cfg = RunConfig(data_dir=Path(data_dir), seed=seed)
    aoi = load_aoi(aoi_id)
    out = []
    for i, d in enumerate(days, start=1):
        r = run_day(aoi, d, cfg)
        out.append(_as_json(r))
        print(f"  [{aoi_id} {i}/{len(days)}] {r.summary()}", flush=True)
    return out


#: File the demo writes into its data dir: only a folder holding it (or an empty one) is
#: deleted when the demo starts afresh.
DEMO_MARKER = ".changedet-demo"


def cmd_demo(args) -> int:
    import shutil

    from changedet.alerts.outbox import Outbox
    from changedet.aoi import list_aois
    from changedet.errors import ChangedetError
    from changedet.pipeline import dates_between

    aois = [a for a in list_aois() if not args.aoi or a.id in args.aoi]
    days = dates_between(args.start, args.end, args.every)
    data_dir = Path(args.data_dir)
    marker = data_dir / DEMO_MARKER
    if data_dir.exists() and not args.keep:
        if not data_dir.is_dir():
            raise ChangedetError(f"--data-dir {data_dir} is a file; name a folder for the demo")
        # Start afresh only in a folder the demo made (or an empty one): --data-dir may well
        # be the user's real data dir (metrics, outbox, evidence), and that is never wiped.
        if any(data_dir.iterdir()) and not marker.exists():
            raise ChangedetError(
                f"--data-dir {data_dir} holds files the demo did not write (it lacks {DEMO_MARKER}), and the demo "
                "starts afresh by deleting its folder; name another --data-dir (default changedet-demo), add "
                "--keep to add to it, or delete the folder yourself if it is an old demo's")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not args.keep or not any(data_dir.iterdir()):
        marker.write_text("written by `changedet demo`: it deletes this folder when run again without --keep\n")
    total = len(aois) * len(days)
    print(f"changedet demo: {len(aois)} AOIs x {len(days)} dates ({args.start} to {args.end}, every "
          f"{args.every} days) on each AOI's first usable source (the embedded simulator for the shipped "
          f"AOIs) -> {data_dir}/", flush=True)
    t0 = time.time()
    done = 0
    # Largest AOIs first so the pool stays busy to the end.
    order = sorted(aois, key=lambda a: -a.polygon.area / min(s.resolution_m for s in a.sources) ** 2)
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        futures = {pool.submit(_demo_worker, a.id, days, str(data_dir), args.seed): a.id for a in order}
        for fut in as_completed(futures):
            fut.result()
            done += len(days)
            print(f"changedet demo: {futures[fut]} done ({done}/{total} AOI-days, {time.time() - t0:.0f} s)",
                  flush=True)
    outbox = Outbox(data_dir / "outbox")
    alerts = sorted(outbox.list(), key=lambda a: (a.opened_at, a.aoi_id))
    print()
    print(f"Alerts ({len(alerts)}), as an analyst would have received them:")
    for a in alerts:
        print(f"  [{a.severity.upper()}] {a.aoi_id} / {a.rule_id}: opened {a.opened_at.date()} UTC, "
              f"{a.findings} finding(s), status {a.status}; latest:")
        print(f"      {a.message}")
    quiet = [a.id for a in aois if not any(al.aoi_id == a.id for al in alerts)]
    print(f"No alert at: {', '.join(quiet) if quiet else '(none)'}")
    print(f"Finished in {time.time() - t0:.0f} s. Metrics: {data_dir}/metrics.sqlite, alerts: "
          f"{data_dir}/outbox/alerts/*.json, imagery cubes: {data_dir}/cubes/, "
          f"detections and change maps (QGIS): {data_dir}/products/")
    sys.stdout.flush()
    return 0
