"""``changedet fetch``: acquire an AOI's imagery from a source into its cube, with progress."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from types import MappingProxyType

from changedet.cli import default_data_dir, parse_date
from changedet.errors import SourceError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fetch", help="search a source and store an AOI's scenes in its cube (cloud-masked, idempotent)",
        description="Search SOURCE for scenes over the AOI from START to END, load each on the AOI grid, "
        "mask clouds and append it to the AOI cube. Scenes already stored are left alone; scenes over "
        "the cloud limit are recorded as skipped with the reason (see 'changedet cube info'). A scene the "
        "source cannot load is listed as failed and the fetch goes on (exit status 1; run it again to retry "
        "them); two failed loads in a row stop it, and so does one failed on a configuration error of the source "
        "(a bands: list that fits no file, a request or collection id the provider rejects, credentials; the error "
        "names the setting): the scenes handled until then are still listed, and the exit status is 2.")
    p.add_argument("--aoi", required=True, help="AOI id (or path to its .yaml)")
    p.add_argument("--source", required=True, help="simulator, stac, local or sentinelhub; settings come from "
                   "the AOI's source entry of that name")
    p.add_argument("--start", type=parse_date, required=True,
                   help="first day YYYY-MM-DD at the site (the AOI's timezone, as changedet run takes it)")
    p.add_argument("--end", type=parse_date, required=True, help="last day YYYY-MM-DD at the site, inclusive")
    p.add_argument("--sensor", default=None, help="vhr, s2 or s1 (default: that of the AOI's source entry)")
    p.add_argument("--resolution", type=float, default=None, help="pixel size in metres (default: the entry's)")
    p.add_argument("--data-dir", default=None,
                   help="data directory or fsspec URL (s3://bucket/prefix); default $CHANGEDET_DATA_DIR or "
                   "changedet-data")
    p.add_argument("--max-cloud", type=float, default=None,
                   help="skip scenes with more than this percent of the site under cloud (default: the entry's "
                   "max_cloud, else 60)")
    p.add_argument("--cloud-mask", default=None, choices=("auto", "clm", "scl", "s2cloudless", "brightness", "none"),
                   help="cloud mask method (default auto: CLM, SCL, s2cloudless, brightness, first possible; "
                        "none: cloud-free by make, e.g. aerial orthophotos)")
    p.add_argument("--lock-timeout", type=float, default=60.0,
                   help="seconds to wait for another run writing the same cube, then skip it (default 60)")
    p.add_argument("--path", default=None, help="local source: folder or glob of images (overrides the AOI entry)")
    p.add_argument("--pattern", default=None, help="local source: regex with a named group 'date' on file names")
    p.add_argument("--url", default=None, help="stac source: API root (overrides the AOI entry)")
    p.add_argument("--collection", default=None, help="stac/sentinelhub: collection id (overrides the AOI entry)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fetch)


def _spec(aoi, name: str, sensor: str | None, resolution: float | None):
    import difflib

    from changedet.aoi import SourceSpec
    from changedet.sources.base import SOURCE_CLASSES

    if name not in SOURCE_CLASSES:
        # A typo of the kind, not a missing entry: asking for a 'stak' entry in the YAML misleads.
        close = difflib.get_close_matches(name, list(SOURCE_CLASSES), n=1)
        raise SourceError(f"unknown source {name!r} for --source: the known source kinds are "
                          f"{', '.join(SOURCE_CLASSES)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    for spec in aoi.sources:
        if spec.name == name and (sensor is None or spec.sensor == sensor):
            if resolution is not None:
                spec = SourceSpec(spec.name, spec.sensor, float(resolution), spec.options)
            return spec
    if sensor and resolution:
        return SourceSpec(name, sensor, float(resolution), MappingProxyType({}))
    listed = ", ".join(f"{s.name}/{s.sensor}" for s in aoi.sources) or "none"
    raise SourceError(f"AOI {aoi.id} has no {name!r} source entry{f' for sensor {sensor}' if sensor else ''} "
                      f"(it has: {listed}); add one to its .yaml or give --sensor and --resolution")


def cmd_fetch(args) -> int:
    from changedet.acquire import DEFAULT_MAX_CLOUD, FetchStopped, fetch
    from changedet.aoi import load_aoi
    from changedet.sources.base import source_from_spec

    aoi = load_aoi(args.aoi)
    spec = _spec(aoi, args.source, args.sensor, args.resolution)
    overrides = {k: v for k, v in (("path", args.path), ("pattern", args.pattern), ("url", args.url),
                                   ("collection", args.collection)) if v is not None}
    data_dir = args.data_dir or str(default_data_dir())
    if spec.name == "sentinelhub" and "cache_dir" not in spec.options and "://" not in data_dir:
        # The download cache belongs to the data directory given here; the source alone only
        # knows $CHANGEDET_DATA_DIR, so --data-dir would leave a stray ./changedet-data/cache.
        from changedet.sources.sh_cache import default_cache_dir

        overrides["cache_dir"] = str(default_cache_dir(data_dir))
    source = source_from_spec(spec, **overrides)
    max_cloud = args.max_cloud if args.max_cloud is not None else float(spec.options.get("max_cloud",
                                                                                         DEFAULT_MAX_CLOUD))
    method = args.cloud_mask or spec.options.get("cloud_mask", "auto")

    bar = None
    progress = None
    if not args.no_progress:
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm comes with the sentinelhub extra; a plain counter otherwise
            tqdm = None

        def progress(i, n, outcome):
            nonlocal bar
            if tqdm is None:
                print(f"\r{aoi.id} {spec.sensor}: {i}/{n} scenes, {outcome.day or outcome.time[:10]} {outcome.status}   ",
                      end="\n" if i == n else "", file=sys.stderr, flush=True)
                return
            if bar is None:
                bar = tqdm(total=n, unit="scene", desc=f"{aoi.id} {spec.sensor}", file=sys.stderr,
                           dynamic_ncols=True)
            bar.set_postfix_str(f"{outcome.day or outcome.time[:10]} {outcome.status}", refresh=False)
            bar.update(1)
    try:
        report = fetch(aoi, source, sensor=spec.sensor, resolution_m=spec.resolution_m, start=args.start,
                       end=args.end, data_dir=data_dir, max_cloud=max_cloud, cloud_method=method,
                       lock_timeout=args.lock_timeout, progress=progress)
    except FetchStopped as exc:
        # What was done before the stop is shown (and, with --json, is the document a script
        # reads); the error line and exit status 2 follow from the CLI's error handling.
        if bar is not None:
            bar.close()
            bar = None
        _print_report(exc.report, args.json)
        raise
    finally:
        if bar is not None:
            bar.close()
    _print_report(report, args.json)
    # A scene the source could not load is retried by the next fetch: the exit status says
    # the range is not complete yet (1), as a cron job or a script must see.
    status = 1 if report.count("failed") else 0
    if status and not args.json:
        print(f"{report.count('failed')} scene(s) could not be loaded (listed above); run the same fetch again to "
              "retry them", file=sys.stderr)
    return status


def _print_report(report, as_json: bool) -> None:
    """The report on stdout: one JSON object, or a summary with the scenes that were not stored."""
    if as_json:
        doc = {k: v for k, v in asdict(report).items() if k != "outcomes"}
        doc["outcomes"] = [asdict(o) for o in report.outcomes]
        print(json.dumps(doc), flush=True)
        return
    print(report.summary())
    for o in report.outcomes:
        if o.status in ("skipped", "duplicate", "failed"):
            print(f"  {o.day or o.time[:10]} {o.scene_id}: {o.status}: {o.reason}")
    print(f"cube: {report.cube_path}", flush=True)
