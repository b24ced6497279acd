"""``changedet report``: build the static HTML report (per-AOI pages and an index)."""

from __future__ import annotations

import sys
from pathlib import Path

from changedet.cli import default_data_dir, parse_date


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="build a static HTML report (maps, detections, change, metrics, alerts)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--aoi", action="append", help="AOI id; repeat for several (default: all AOIs)")
    which.add_argument("--all", action="store_true", help="every AOI of the registry (the default)")
    p.add_argument("--start", type=parse_date, default=None, help="first day shown YYYY-MM-DD (default: first record)")
    p.add_argument("--end", type=parse_date, default=None, help="last day shown YYYY-MM-DD (default: latest)")
    p.add_argument("--out", type=Path, required=True, help="report folder (index.html is written there)")
    p.add_argument("--data-dir", type=Path, default=None, help="where runs wrote cubes, metrics and the outbox "
                   "(default: $CHANGEDET_DATA_DIR or ./changedet-data)")
    p.add_argument("--registry", type=Path, default=None, help="AOI folder (default: $CHANGEDET_AOIS or aois/)")
    p.add_argument("--store-url", default=None, help="where the runs put cubes and products: a path or an fsspec "
                   "URL such as s3://bucket/prefix (default: $CHANGEDET_STORE_URL, else the data directory)")
    p.add_argument("--metrics-url", default=None, help="metric store (default: $CHANGEDET_METRICS_URL, else "
                   "<data-dir>/metrics.sqlite)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    """Build the report; exit 1 (after writing it) when AOI files of the registry are broken."""
    from changedet.report import ReportIncomplete, build_report

    try:
        index = build_report(args.data_dir or default_data_dir(), args.out, aoi_ids=args.aoi, start=args.start,
                             end=args.end, registry=args.registry, store_url=args.store_url,
                             metrics_url=args.metrics_url)
    except ReportIncomplete as exc:
        # The valid AOIs are in the report: say where it is, then what is missing from it.
        print(f"report: {exc.index}")
        print(f"changedet report: {exc}", file=sys.stderr)
        return 1
    print(f"report: {index}")
    if args.aoi and len(args.aoi) == 1:
        print(f"  {args.aoi[0]}: {index.parent / args.aoi[0] / 'index.html'}")
    return 0
