"""``changedet cache``: how much the Sentinel Hub download cache holds, and pruning it."""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_parser(sub) -> None:
    from changedet.sources.sh_cache import default_cache_dir

    p = sub.add_parser("cache", help="size of the Sentinel Hub download cache; prune it by age or to a size cap")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    where = "cache folder, where a source entry names its own cache_dir (default: the data directory's)"
    data = ("data directory whose cache/sentinelhub is meant (default $CHANGEDET_DATA_DIR or changedet-data: "
            f"{default_cache_dir()}; ~/.cache/changedet/sentinelhub for a URL)")
    info = csub.add_parser("info", help="entries, size and age of the cache")
    info.add_argument("--cache-dir", type=Path, default=None, help=where)
    info.add_argument("--data-dir", default=None, help=data)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)
    prune = csub.add_parser(
        "prune", help="remove entries no run has used for a while, then the least recently used over a size cap",
        description="Remove cached Sentinel Hub replies: those unused for --older-than, then the least recently "
                    "used until the cache fits --max-size. Entries used within --keep-recent are never removed "
                    "(a run beside the prune may be reading them); a removed reply is fetched (and paid for in "
                    "processing units) again the next time a run needs it.")
    prune.add_argument("--cache-dir", type=Path, default=None, help=where)
    prune.add_argument("--data-dir", default=None, help=data)
    prune.add_argument("--older-than", default=None, metavar="AGE",
                       help="remove entries unused for longer than AGE (30d, 12h, 45m; a bare number is days)")
    prune.add_argument("--max-size", default=None, metavar="SIZE",
                       help="then remove the least recently used until the cache holds at most SIZE (500M, 2G, 1.5GiB)")
    prune.add_argument("--keep-recent", default="1h", metavar="AGE",
                       help="never remove entries used within AGE (default 1h)")
    prune.add_argument("--dry-run", action="store_true", help="remove nothing; report what would go")
    prune.add_argument("--json", action="store_true", help="print one JSON object")
    prune.set_defaults(func=cmd_prune)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def cmd_info(args) -> int:
    from changedet.sources.sh_cache import cache_entries, default_cache_dir

    root = args.cache_dir or default_cache_dir(args.data_dir)
    entries = cache_entries(root)
    now = time.time()
    out = {"cache_dir": str(root), "exists": Path(root).exists(), "entries": len(entries),
           "bytes": sum(e.bytes for e in entries), "incomplete": sum(not e.complete for e in entries),
           "oldest_unused_days": round((now - entries[0].last_used) / 86400, 2) if entries else None,
           "newest_used_days": round((now - entries[-1].last_used) / 86400, 2) if entries else None}
    if args.json:
        print(json.dumps(out))
    elif not out["exists"]:
        print(f"{root}: no cache there (nothing fetched from Sentinel Hub yet, or another cache_dir)")
    else:
        print(f"{root}: {out['entries']} entries, {_size(out['bytes'])}"
              + (f", {out['incomplete']} incomplete" if out["incomplete"] else "")
              + (f"; least recently used {out['oldest_unused_days']:.1f} days ago" if entries else ""))
    return 0


def cmd_prune(args) -> int:
    from changedet.sources.sh_cache import default_cache_dir, parse_age, parse_size, prune_cache

    root = args.cache_dir or default_cache_dir(args.data_dir)
    report = prune_cache(root, older_than_s=None if args.older_than is None else parse_age(args.older_than),
                         max_bytes=None if args.max_size is None else parse_size(args.max_size),
                         keep_recent_s=parse_age(args.keep_recent), dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        verb = "would remove" if report.dry_run else "removed"
        print(f"{root}: {verb} {report.removed_entries} of {report.entries} entries ({_size(report.removed_bytes)} "
              f"of {_size(report.bytes)}; {report.incomplete_removed} incomplete); "
              f"{report.kept_entries} entries, {_size(report.kept_bytes)} kept")
    return 0
