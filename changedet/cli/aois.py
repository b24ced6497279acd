"""``changedet aois``: list, show and validate the areas of interest.

Each handler takes the parsed ``argparse.Namespace`` and returns an exit code; errors
that stop a command are raised as :class:`~changedet.errors.AOIError` for ``main()``
to print.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from shapely.geometry import mapping

from changedet.aoi import AOI, AlertRule, default_registry, list_aois, load_aoi, scan_registry, validate

#: Role order used in listings: the order a reader scans a site in.
_ROLE_ORDER = ("track", "berth", "stack_zone", "water")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``aois`` command (with ``list``, ``show`` and ``validate``) to ``subparsers``.

    Parameters
    ----------
    subparsers
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``aois`` parser.
    """
    registry = argparse.ArgumentParser(add_help=False)
    registry.add_argument(
        "--registry",
        type=Path,
        default=None,
        metavar="DIR",
        help="AOI directory (default: $CHANGEDET_AOIS or the repository's aois/)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    parser = subparsers.add_parser(
        "aois", help="list, show and validate areas of interest", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="aois_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[registry, as_json], help="one line per AOI")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[registry, as_json], help="everything about one AOI")
    p.add_argument("id", metavar="ID", help="AOI id, or the path of its .yaml or .geojson file")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("validate", help="check AOI files; exit code 1 if any problem")
    p.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=None,
        metavar="PATH",
        help="AOI directory, .yaml or .geojson (default: the registry)",
    )
    p.set_defaults(func=cmd_validate)
    return parser


# -- handlers ---------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    """Print a table (or a JSON list) of every AOI in the registry.

    A broken AOI file does not hide the others: the valid ones are listed, the problems go
    to stderr, and the exit status is 1.
    """
    aois, errors = scan_registry(args.registry)
    if not aois:
        # Nothing to list: the registry missing or empty, or every AOI broken.
        list_aois(args.registry)
    if errors:
        reg = args.registry or default_registry()
        lines = "\n".join(f"  - {e}" for e in errors)
        print(f"changedet aois list: {len(errors)} problem(s) in AOI registry {reg}; the AOIs they belong to are "
              f"not listed (and not run) until fixed (changedet aois validate):\n{lines}", file=sys.stderr)
    if args.json:
        print(json.dumps([_summary(a) for a in aois], indent=2))
        return 1 if errors else 0
    rows = [("ID", "KIND", "NAME", "FEATURES", "SOURCES", "CADENCE")]
    for a in aois:
        rows.append(
            (
                a.id,
                a.kind,
                a.name + (" (approx.)" if a.approximate else ""),
                _role_counts_text(a),
                ", ".join(f"{s.sensor}@{s.resolution_m:g}m" for s in a.sources),
                a.cadence,
            )
        )
    print(_table(rows))
    return 1 if errors else 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print every field of one AOI, its features with sizes and its rules in words."""
    aoi = load_aoi(args.id, registry=args.registry)
    if args.json:
        print(json.dumps(_details(aoi), indent=2))
        return 0
    lon, lat = aoi.centroid_lonlat
    crs = aoi.utm_crs()
    site_km2 = aoi.to_crs(aoi.polygon, crs).area / 1e6
    fields = [
        ("kind", aoi.kind),
        ("position", f"{_lat_text(lat)}, {_lon_text(lon)}" + (" (approximate)" if aoi.approximate else "")),
        ("site area", f"{site_km2:.3f} km² (measured in {crs.name}, EPSG:{crs.to_epsg()})"),
        ("timezone", aoi.timezone),
        ("cadence", f"{aoi.cadence} (every {aoi.cadence_days} day{'s' if aoi.cadence_days != 1 else ''})"),
        ("sources", "; ".join(f"{i}. {_source_text(s)}" for i, s in enumerate(aoi.sources, 1))),
        ("metrics", ", ".join(aoi.metrics)),
        ("notes", aoi.notes or "-"),
        ("file", str(aoi.source_path) if aoi.source_path else "-"),
    ]
    print(f"{aoi.id}: {aoi.name}")
    width = max(len(k) for k, _ in fields) + 1
    for key, value in fields:
        print(f"  {key + ':':<{width}} {value}")
    print("features:")
    rows = [("ROLE", "ID", "SIZE", "DETAILS")]
    for f in aoi.features:
        size = _size_text(aoi, f.geometry)
        details = ", ".join(
            f"gauge {_gauge_text(v)}" if k == "gauge_mm" else f"{k}={v}" for k, v in f.properties.items()
        )
        rows.append((f.role, f.id, size, details))
    print(_table(rows, indent="  "))
    print("rules:")
    if not aoi.rules:
        print("  (none: metrics are recorded but never alerted on)")
    for rule in aoi.rules:
        print(f"  {rule.id} [{rule.severity} -> {', '.join(rule.channels)}]: {describe_rule(rule)}")
    print("recipients:")
    if not aoi.recipients:
        print("  (none)")
    for channel, addresses in aoi.recipients.items():
        print(f"  {channel}: {', '.join(addresses)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the registry (or a given directory or file); 0 if valid, 1 if not."""
    path = args.path if args.path is not None else default_registry()
    errors = validate(path)
    if errors:
        for err in errors:
            print(f"ERROR {err}")
        print(f"FAILED: {len(errors)} problem{'s' if len(errors) != 1 else ''} in {path}")
        return 1
    # Delivery settings are checked as well, so a missing SMTP host or a malformed
    # webhook URL is reported here rather than at the first alert.
    from changedet.alerts.config import alerting_problems

    aois = list_aois(path) if path.is_dir() else [load_aoi(path)]
    problems = alerting_problems(aois)
    if problems:
        for problem in problems:
            print(f"ERROR {problem}")
        print(f"FAILED: {len(problems)} alerting problem{'s' if len(problems) != 1 else ''} in {path}")
        return 1
    n = len({p.stem for p in path.glob("*.yaml")}) if path.is_dir() else 1
    print(f"OK {n} AOI{'s' if n != 1 else ''}")
    return 0


# -- formatting -------------------------------------------------------------------------------------


def describe_rule(rule: AlertRule) -> str:
    """One sentence saying when ``rule`` fires, e.g. for ``aois show``."""
    p = dict(rule.params)
    m = rule.metric
    if rule.kind == "robust_z":
        window = f"its median of the last {p.pop('window_days')} days" if "window_days" in p else "its median"
        k = f"{p.pop('k'):g}" if "k" in p else "k"
        text = f"alert when metric {m} is more than {k} robust standard deviations (median/MAD) away from {window}"
    elif rule.kind == "historical_max":
        factor = p.pop("factor", 1)
        text = f"alert when metric {m} exceeds {factor:g}x its highest value so far"
    elif rule.kind == "trend":
        growth = p.pop("min_rel_growth", None)
        window = f" over {p.pop('window_days')} days" if "window_days" in p else ""
        grows = f"by more than {growth:.0%}" if growth is not None else "steadily"
        text = f"alert when metric {m} grows {grows}{window}"
    elif rule.kind == "seasonal":
        k = f"{p.pop('k'):g}" if "k" in p else "k"
        text = f"alert when metric {m} is more than {k} robust standard deviations above the same weeks of earlier years"
    elif rule.kind in ("ewma", "cusum"):
        what = "exponentially weighted mean (EWMA)" if rule.kind == "ewma" else "cumulative sum (CUSUM)"
        text = f"alert when the {what} of metric {m} shows a sustained shift from its earlier baseline"
    else:  # validated AOIs never get here; kept so a new kind still prints something
        text = f"alert on metric {m} ({rule.kind})"
    if "min_delta" in p:
        text += f", and by at least {p.pop('min_delta'):g}"
    if "min_history" in p:
        text += f"; needs {p.pop('min_history')} past observations first"
    if p:
        text += " (" + ", ".join(f"{k}={v}" for k, v in p.items()) + ")"
    return text


def _role_counts_text(aoi: AOI) -> str:
    counts = Counter(f.role for f in aoi.features)
    return ", ".join(f"{counts[r]} {r}" for r in _ordered_roles(counts)) or "-"


def _ordered_roles(counts: Counter) -> list[str]:
    return [r for r in _ROLE_ORDER if counts[r]] + sorted(r for r in counts if r not in _ROLE_ORDER)


def _size_text(aoi: AOI, geom) -> str:
    """Length of lines, area of polygons, measured in the site's UTM zone."""
    g = aoi.to_crs(geom, aoi.utm_crs())
    if geom.geom_type.endswith("LineString"):
        return f"{g.length:,.0f} m"
    return f"{g.area:,.0f} m²"


def _gauge_text(value) -> str:
    if isinstance(value, (tuple, list)):
        return "/".join(str(v) for v in value) + " mm (dual)"
    return f"{value} mm"


def _source_text(s) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in s.options.items())
    return f"{s.name} {s.sensor} @ {s.resolution_m:g} m" + (f" ({opts})" if opts else "")


def _lat_text(lat: float) -> str:
    return f"{abs(lat):.5f} {'N' if lat >= 0 else 'S'}"


def _lon_text(lon: float) -> str:
    return f"{abs(lon):.5f} {'E' if lon >= 0 else 'W'}"


def _table(rows: list[tuple[str, ...]], indent: str = "") -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _summary(aoi: AOI) -> dict[str, Any]:
    counts = Counter(f.role for f in aoi.features)
    return {
        "id": aoi.id,
        "name": aoi.name,
        "kind": aoi.kind,
        "approximate": aoi.approximate,
        "features": {r: counts[r] for r in _ordered_roles(counts)},
        "sources": [
            {"name": s.name, "sensor": s.sensor, "resolution_m": s.resolution_m, **_jsonable(s.options)}
            for s in aoi.sources
        ],
        "cadence": aoi.cadence,
        "cadence_days": aoi.cadence_days,
        "metrics": list(aoi.metrics),
    }


def _details(aoi: AOI) -> dict[str, Any]:
    crs = aoi.utm_crs()
    lon, lat = aoi.centroid_lonlat
    out = _summary(aoi)
    out.update(
        {
            "centroid_lonlat": [lon, lat],
            "utm_epsg": crs.to_epsg(),
            "site_area_m2": aoi.to_crs(aoi.polygon, crs).area,
            "polygon": mapping(aoi.polygon),
            "timezone": aoi.timezone,
            "notes": aoi.notes,
            "source_path": str(aoi.source_path) if aoi.source_path else None,
            "features": [_feature_json(aoi, f, crs) for f in aoi.features],
            "rules": [
                {
                    "id": r.id,
                    "metric": r.metric,
                    "kind": r.kind,
                    "params": _jsonable(r.params),
                    "severity": r.severity,
                    "channels": list(r.channels),
                    "description": describe_rule(r),
                }
                for r in aoi.rules
            ],
            "recipients": _jsonable(aoi.recipients),
        }
    )
    return _jsonable(out)


def _feature_json(aoi: AOI, f, crs) -> dict[str, Any]:
    g = aoi.to_crs(f.geometry, crs)
    size = {"length_m": g.length} if f.geometry.geom_type.endswith("LineString") else {"area_m2": g.area}
    return {"id": f.id, "role": f.role, **size, "properties": _jsonable(f.properties), "geometry": mapping(f.geometry)}
