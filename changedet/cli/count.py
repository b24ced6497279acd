"""``changedet count``: count railcars, containers (TEU) or ships in one image."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from changedet.errors import ChangedetError

KINDS = ("railcars", "containers", "ships")
MASK_BAND = "CLM"


class FeatureError(ChangedetError):
    """A features file is unreadable or lacks the features the counter needs."""


def add_parser(sub) -> None:
    p = sub.add_parser("count", help="count railcars, containers (TEU) or ships in one image")
    p.add_argument("kind", choices=KINDS, help="what to count")
    p.add_argument("image", type=Path,
                   help="georeferenced raster with named bands (R, G, B, NIR [, CLM]), or a folder of single-band "
                        "files named by band (*_B02*.tif, *_B03*, *_B04*, *_B08* [, *_B11*, *_CLM*]), as Sentinel Hub "
                        "EO Browser and Sentinel-2 products deliver them; bands of other resolutions are resampled "
                        "onto the finest band's grid")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--aoi", help="AOI id (or .yaml path) whose features to use")
    src.add_argument("--features", type=Path,
                     help="GeoJSON FeatureCollection (properties id, role: track for railcars, stack_zone for "
                          "containers, berth [, anchorage, water] for ships); EPSG:4326 unless a 'crs' member says "
                          "otherwise")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object. Its detection polygons are in EPSG:4326 lon/lat when "
                        "the features are (always with --aoi), else in the image's CRS; the object's 'crs' member "
                        "names it (e.g. \"EPSG:4326\", or WKT for a CRS without an authority code)")
    p.add_argument("--out", type=Path, default=None, help="write detections as a GeoJSON FeatureCollection (EPSG:4326)")
    p.add_argument("--sun-azimuth", type=float, default=None,
                   help="solar azimuth, degrees clockwise from north (default: from the file's SUN_AZIMUTH tag, "
                        "else from its acquisition time and centre)")
    p.add_argument("--sun-elevation", type=float, default=None,
                   help="solar elevation, degrees (default: as --sun-azimuth)")
    p.add_argument("--detector", default=None,
                   help="use your own detector instead of the classical counter: a .onnx or TorchScript .pt "
                        "model, or 'package.module:factory' (no weights are shipped or downloaded)")
    p.add_argument("--labels", default="object",
                   help="comma-separated class names of the --detector model's class indices")
    p.add_argument("--min-score", type=float, default=0.5, help="drop --detector boxes scoring below this")
    p.add_argument("--reflectance-scale", type=float, default=None, metavar="S",
                   help="surface reflectance = stored value x S + O (e.g. 0.0001 for Sentinel-2 L2A / Planet SR). "
                        "Default: the file's scale/offset metadata (GDAL scale/offset, BOA_QUANTIFICATION_VALUE / "
                        "BOA_ADD_OFFSET), else 1 for float and 0.0001 for 16-bit values up to 16000; other "
                        "integer images (8-bit display RGB, DNs) need it. The JSON's 'radiometry' says which")
    p.add_argument("--reflectance-offset", type=float, default=None, metavar="O",
                   help="with --reflectance-scale: the O above (e.g. -0.1 for Sentinel-2 baseline 04.00+ "
                        "without BOA_ADD_OFFSET metadata); default 0")
    p.set_defaults(func=cmd_count)


# -- features -------------------------------------------------------------------------------
def _geojson_crs(doc: dict, path: Path):
    import pyproj

    member = doc.get("crs")
    if not member:
        return pyproj.CRS.from_epsg(4326)
    try:
        name = member["properties"]["name"] if isinstance(member, dict) and "properties" in member else member
        crs = pyproj.CRS.from_user_input(name)
    except Exception:
        raise FeatureError(f"{path}: cannot understand its 'crs' member {member!r}; use e.g. "
                           '{"type": "name", "properties": {"name": "EPSG:32652"}} or drop it for EPSG:4326') from None
    # OGC CRS84 is lon/lat like RFC 7946.
    if crs.equals(pyproj.CRS.from_user_input("OGC:CRS84")):
        return pyproj.CRS.from_epsg(4326)
    return crs


def read_features(path: Path) -> tuple[list[dict[str, Any]], Any]:
    """(features as dicts with id, role, geometry (shapely), the CRS of the file)."""
    import shapely.geometry

    path = Path(path)
    if not path.exists():
        raise FeatureError(f"{path}: no such file; check the path")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FeatureError(f"{path}: not valid GeoJSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        raise FeatureError(f"{path}: must be a GeoJSON FeatureCollection of features with properties id and role")
    crs = _geojson_crs(doc, path)
    feats = []
    for i, f in enumerate(doc["features"]):
        props = (f or {}).get("properties") or {}
        try:
            geom = shapely.geometry.shape(f["geometry"])
        except Exception:
            raise FeatureError(f"{path}: feature #{i} has no valid geometry") from None
        fid = props.get("id", f.get("id", f"f{i + 1}"))
        feats.append({"id": str(fid), "role": props.get("role"), "geometry": geom})
    return feats, crs


def _lonlat_range(feats: list[dict]) -> bool:
    """Whether every feature's coordinates fit longitude/latitude (|x| <= 180, |y| <= 90)."""
    import shapely

    x0, y0, x1, y1 = shapely.total_bounds([f["geometry"] for f in feats])
    return -180.0 <= x0 and x1 <= 180.0 and -90.0 <= y0 and y1 <= 90.0


def _project(geom, src_crs, dst_crs):
    import numpy as np
    import pyproj
    import shapely

    if pyproj.CRS.from_user_input(src_crs).equals(pyproj.CRS.from_user_input(dst_crs)):
        return geom
    t = pyproj.Transformer.from_crs(src_crs, dst_crs, always_xy=True)

    def fwd(xy):
        x, y = t.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fwd)


def _select(feats: list[dict], kind: str, where: str) -> dict[str, Any]:
    """Geometries by role for ``kind``: {'main': {id: geom}, 'water': geom | None}."""
    import shapely

    def by_role(role, geom_types):
        tagged = [f for f in feats if f["role"] is not None]
        if tagged:
            chosen = [f for f in feats if f["role"] == role]
        else:  # no roles at all: fall back on geometry type
            chosen = [f for f in feats if f["geometry"].geom_type in geom_types]
        return chosen

    if kind == "railcars":
        main = by_role("track", ("LineString", "MultiLineString"))
        need = "track (LineString)"
    elif kind == "containers":
        main = by_role("stack_zone", ("Polygon", "MultiPolygon"))
        need = "stack_zone (Polygon)"
    else:
        main = [f for f in feats if f["role"] == "berth"]
        need = "berth (Polygon)"
    anchorages = [f for f in feats if kind == "ships" and f["role"] == "anchorage"]
    if not feats:
        raise FeatureError(f"{where}: has no features; draw at least one {need} feature with property role "
                           f"{need.split()[0]!r}")
    if not main:
        roles = sorted({str(f["role"]) for f in feats}) or ["none"]
        raise FeatureError(f"{where}: no {need} features to count {kind} on (roles present: {', '.join(roles)}); "
                           f"give features with role {need.split()[0]!r}"
                           + (" (anchorage polygons are reported beside the berths, not instead of them)"
                              if kind == "ships" and anchorages else ""))
    water = None
    if kind == "ships":
        bad = [f"{f['id']!r} ({f['geometry'].geom_type})" for f in anchorages
               if f["geometry"].geom_type not in ("Polygon", "MultiPolygon")]
        if bad:
            # A point or line has no area to hold a vessel: it would divide by zero, or
            # report 0 vessels whatever lies at anchor.
            raise FeatureError(f"{where}: anchorage {', '.join(bad)} is not a polygon; draw each anchorage as a "
                               "Polygon (or MultiPolygon) around the anchored vessels")
        # Every vessel's detection names one feature id, and the VHR counter reports the
        # water outside every berth as its own entry ``anchorage``: an id used twice (or
        # that one) would make two per_feature entries indistinguishable.
        ids = [f["id"] for f in main] + [f["id"] for f in anchorages]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise FeatureError(f"{where}: berth/anchorage id(s) {', '.join(map(repr, twice))} used more than once; "
                               "give each berth and anchorage its own id")
        if RESERVED_ID in ids:
            raise FeatureError(f"{where}: the id {RESERVED_ID!r} is reserved for the counter's entry of the water "
                               "outside every berth; give your berth or anchorage another id (e.g. 'anchorage_north')")
        ws = [f["geometry"] for f in feats if f["role"] == "water"]
        # An anchorage is water by definition: drawn partly outside the water polygon, its
        # vessels would otherwise be dropped by the water selection before it is counted.
        water = shapely.union_all(ws + [f["geometry"] for f in anchorages]) if ws else None
    return {"main": {f["id"]: f["geometry"] for f in main}, "water": water,
            "anchorage": {f["id"]: f["geometry"] for f in anchorages}}


#: ``per_feature`` id of the VHR ship counter's own entry (vessels on the water outside
#: every berth, :func:`changedet.objects.ships.count_ships`); no drawn feature may use it.
RESERVED_ID = "anchorage"

#: Share of a vessel's outline that must lie in an anchorage polygon to be counted there
#: (the rule the ship counters use for a berth: the region holding most of the vessel).
ANCHORAGE_SHARE = 0.5


def per_anchorage(res, anchorages: dict, grid, *, ok=None, roles: bool = False) -> Any:
    """``res`` with one ``per_feature`` entry per anchorage polygon (role ``anchorage``).

    The counters report vessels per berth; a vessel not in a berth polygon (at anchor,
    or alongside a quay nobody drew) was in the total but in no feature. Each vessel
    not already assigned to a berth is counted in the anchorage holding at least
    :data:`ANCHORAGE_SHARE` of its outline, and its detection names that anchorage.
    Entries carry ``role: "anchorage"`` to tell them from the berths. The VHR counter's
    own entry :data:`RESERVED_ID` (every vessel on the water outside the berths) gives up
    the vessels a drawn anchorage takes, and is dropped when none is left: each vessel is
    counted in one entry at most. A vessel the counter calls ``at_berth`` is not counted in
    an anchorage: it lies alongside a quay nobody drew as a berth, moored, not anchored,
    even where the polygon reaches the quay (a ``--detector``'s classes are counted
    whatever they are).

    ``ok`` (bool (rows, cols) on ``grid``: pixels with data and clear) gives each
    anchorage entry the ``observed_fraction`` the VHR counter gives its berths (share of
    the polygon's pixels observed). ``roles`` gives every entry a ``role`` (``berth``, or
    ``anchorage`` for the counter's own entry and the drawn ones), to tell them apart.

    Raises
    ------
    FeatureExtentError
        An anchorage is empty or lies outside the image.
    """
    from dataclasses import replace

    from changedet.objects.checks import check_features

    if not anchorages:
        if roles:
            res = replace(res, per_feature=tuple(dict(pf, role=RESERVED_ID if pf.get("id") == RESERVED_ID else "berth")
                                                 for pf in res.per_feature))
        return res
    check_features(anchorages, grid, what="anchorage")
    dets = list(res.detections)
    entries = []
    for aid, poly in anchorages.items():
        types: dict[str, int] = {}
        for i, d in enumerate(dets):
            if d.feature_id is not None or d.polygon.is_empty or d.type == "at_berth":
                continue
            if d.polygon.intersection(poly).area >= ANCHORAGE_SHARE * d.polygon.area:
                dets[i] = replace(d, feature_id=aid)
                types[d.type] = types.get(d.type, 0) + 1
        entry = {"id": aid, "role": "anchorage", "count": sum(types.values()), "by_type": types}
        if ok is not None:
            from changedet.objects.containers import _mask  # the VHR counter's rasterisation

            m = _mask(poly, grid)
            entry["observed_fraction"] = round(float((m & ok).sum() / m.sum()), 4) if m.any() else 0.0
        entries.append(entry)
    taken: dict[str, int] = {}
    for e in entries:
        for t, n in e["by_type"].items():
            taken[t] = taken.get(t, 0) + n
    kept = []
    for pf in res.per_feature:
        if pf.get("id") == RESERVED_ID and "role" not in pf:
            # The counter's entry held the vessels with no feature id: those a drawn
            # anchorage took are counted there now, not twice.
            by = {t: n - taken.get(t, 0) for t, n in pf.get("by_type", {}).items()}
            by = {t: n for t, n in by.items() if n > 0}
            if not by:
                continue
            pf = dict(pf, count=sum(by.values()), by_type=by)
        if roles and "role" not in pf:
            pf = dict(pf, role=RESERVED_ID if pf.get("id") == RESERVED_ID else "berth")
        kept.append(pf)
    return replace(res, per_feature=tuple(kept) + tuple(entries), detections=tuple(dets))


# -- sun ------------------------------------------------------------------------------------
#: Metadata items (domain, azimuth key, elevation key) that state the sun's position, in
#: the order trusted: changedet's own writers, then DigitalGlobe/Maxar IMD (GDAL's reader).
SUN_TAGS = (
    ("", "SUN_AZIMUTH", "SUN_ELEVATION"),
    ("", "MEAN_SUN_AZIMUTH", "MEAN_SUN_ELEVATION"),
    ("IMD", "IMAGE_1.meanSunAz", "IMAGE_1.meanSunEl"),
)


def _image_centre_lonlat(image) -> tuple[float, float]:
    import pyproj

    from changedet.grid import GridSpec

    g = GridSpec.of(image)
    t = g.transform
    rows, cols = g.shape
    tr = pyproj.Transformer.from_crs(g.crs, 4326, always_xy=True)
    lon, lat = tr.transform(t.c + t.a * cols / 2, t.f + t.e * rows / 2)
    return float(lon), float(lat)


#: Lowest sun (degrees) an acquisition time in the metadata may put it at; optical
#: imagery is not taken lower, so such a time is not the acquisition's in UTC.
MIN_SUN_ELEVATION_DEG = 5.0


def resolve_sun(path: Path, image, *, azimuth: float | None, elevation: float | None) -> dict[str, Any]:
    """The sun for a shadow-aware count: ``{"azimuth_deg", "elevation_deg", "source"}`` (degrees).

    Order: both flags; the file's sun tags (:data:`SUN_TAGS`); the sun computed at the image
    centre from the acquisition time in the file's tags (``TIFFTAG_DATETIME``,
    ``ACQUISITIONDATETIME``... as :mod:`changedet.sources.local` reads them) or, failing
    that, from a date in the file name at a 10:30 local solar time morning overpass. The
    angles are None (and ``source`` says why) when none of these exists.

    Raises
    ------
    ChangedetError
        Only one of the two flags is given.
    """
    from changedet.io import open_raster
    from changedet.sources.local import DATE_TAGS, _name_time, _parse_time
    from changedet.sun import MORNING_OVERPASS_H, sun_at, sun_position

    if (azimuth is None) != (elevation is None):
        raise ChangedetError("give both --sun-azimuth and --sun-elevation, or neither (the sun is then taken "
                             "from the file's metadata or acquisition time)")
    if azimuth is not None:
        return {"azimuth_deg": float(azimuth), "elevation_deg": float(elevation), "source": "flags"}
    with open_raster(path) as src:
        tags = {(dom, k): v for dom in ("", "IMAGERY", "IMD") for k, v in src.tags(ns=dom or None).items()}
    for dom, akey, ekey in SUN_TAGS:
        try:
            az, el = float(tags[(dom, akey)]), float(tags[(dom, ekey)])
        except (KeyError, ValueError):
            continue
        return {"azimuth_deg": round(az, 3), "elevation_deg": round(el, 3),
                "source": f"file metadata {akey}/{ekey}"}
    lon, lat = _image_centre_lonlat(image)
    skipped = []
    for key in DATE_TAGS:
        when = _parse_time(tags[key]) if key in tags else None
        # A time of exactly 00:00:00 is a date without time of day (the sun is then assumed
        # at the morning overpass, below): no optical satellite images at local midnight.
        if when is not None and (when.hour, when.minute, when.second) != (0, 0, 0):
            el, az = sun_at(when, lat, lon)
            if el < MIN_SUN_ELEVATION_DEG:
                # No optical image is taken with the sun that low: the time is not the
                # acquisition's in UTC (TIFF DateTime is often a local or processing time).
                skipped.append(f"{key[1]} {when.isoformat()} puts the sun at {el:.1f} deg")
                continue
            return {"azimuth_deg": round(az, 3), "elevation_deg": round(el, 3),
                    "source": f"computed from {key[1]} {when.isoformat()} at the image centre "
                              f"({lon:.4f}, {lat:.4f})"}
    day = next((t.date() for t in (_parse_time(tags[k]) for k in DATE_TAGS if k in tags) if t is not None), None)
    origin = "metadata date"
    named = _name_time(Path(path).name, None)
    if skipped and named is not None:
        # The metadata's time was implausible: a date in the file name is likelier the acquisition's.
        day, origin = named.date(), "date in the file name"
    elif day is None:
        day, origin = (named.date() if named is not None else None), "date in the file name"
    if day is not None:
        el, az = sun_position(day, lat, local_solar_time_h=MORNING_OVERPASS_H)
        note = f" ({'; '.join(skipped)}: not used)" if skipped else ""
        return {"azimuth_deg": round(az, 3), "elevation_deg": round(el, 3),
                "source": f"computed from the {origin} {day.isoformat()} at the image centre ({lon:.4f}, "
                          f"{lat:.4f}), assuming a {MORNING_OVERPASS_H:g} h local solar time overpass{note}"}
    return {"azimuth_deg": None, "elevation_deg": None,
            "source": "sun unknown (no --sun-azimuth/--sun-elevation, no sun or acquisition time in the file's "
                      "metadata, no date in its name): shadows are not used, counts may be lower; pass the flags"}


# -- image ----------------------------------------------------------------------------------
def read_image(path: Path):
    """``(image, metadata file)``: the image to count on and the file whose tags say its
    sun, acquisition time and value scaling.

    A folder is read as :func:`changedet.change.load_image` reads one date for
    ``changedet change``: its single-band files named by band (``*_B04*.tif``), resampled
    onto the finest band's grid, a ``*_CLM*`` / ``*_SCL*`` file masking the others (NaN).
    Its metadata file is the first band file by name: Sentinel Hub and Sentinel-2 band
    files of one acquisition carry the same tags and date in their names.

    Raises
    ------
    ChangedetError
        A folder without band files (the message lists what it needs), or holding more
        than one acquisition or one band twice (the message names the files).
    """
    from changedet.io import read_raster

    path = Path(path)
    if not path.is_dir():
        return read_raster(path), path
    from changedet.change import _RASTER_EXT, _band_of, load_image

    image = load_image(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _RASTER_EXT and _band_of(p.name) is not None)
    return image, files[0]


# -- command --------------------------------------------------------------------------------
def cmd_count(args) -> int:
    import pyproj

    from changedet.grid import crs_of
    from changedet.io import check_output_path

    if args.out is not None:
        check_output_path(args.out, option="--out", suffix=".geojson")  # before the work, not after it
    image, meta = read_image(args.image)
    img_crs = pyproj.CRS.from_user_input(crs_of(image))
    ll = pyproj.CRS.from_epsg(4326)

    if args.aoi:
        from changedet.aoi import load_aoi

        aoi = load_aoi(args.aoi)
        feats = [{"id": f.id, "role": f.role, "geometry": f.geometry} for f in aoi.features]
        feat_crs, where = ll, f"AOI {aoi.id!r}"
    else:
        feats, feat_crs = read_features(args.features)
        where = str(args.features)
        if feats and feat_crs.equals(ll) and not _lonlat_range(feats):
            raise FeatureError(
                f"{args.features}: its coordinates are not longitude/latitude (outside +-180/+-90) and the file has no "
                f"'crs' member saying what they are; add one, e.g. "
                f'{{"type": "name", "properties": {{"name": "{img_crs.to_string()}"}}}} if they are in the '
                "image's CRS, or export the features as EPSG:4326")
    feats = [dict(f, geometry=_project(f["geometry"], feat_crs, img_crs)) for f in feats]
    sel = _select(feats, args.kind, where)
    if sel["anchorage"]:
        # Before minutes of counting, not after them.
        from changedet.grid import GridSpec
        from changedet.objects.checks import check_features

        check_features(sel["anchorage"], GridSpec.of(image), what="anchorage")

    sun = None
    from changedet.objects.railcars_sar import radar_bands

    radar = bool(radar_bands(image))
    # A radar image of railcars needs no sun (the Sentinel-1 estimate reads backscatter).
    if args.kind in ("railcars", "containers") and not getattr(args, "detector", None) \
            and not (radar and args.kind == "railcars"):
        sun = resolve_sun(meta, image, azimuth=args.sun_azimuth, elevation=args.sun_elevation)
    if args.kind == "containers" and not getattr(args, "detector", None):
        # An image too coarse (or not in metres) is refused before its radiometry is
        # judged: asking for --reflectance-scale first only to refuse the image after it
        # was given wastes the analyst's next try (an 8-bit 5 m image met both).
        from changedet.grid import GridSpec
        from changedet.objects.checks import check_metric, check_resolution

        check_resolution(GridSpec.of(image), "containers")
        check_metric(GridSpec.of(image), "container")

    scaled = [f for f, v in (("--reflectance-scale", getattr(args, "reflectance_scale", None)),
                             ("--reflectance-offset", getattr(args, "reflectance_offset", None))) if v is not None]
    if scaled and (getattr(args, "detector", None) or radar):
        # Silently ignoring a scale the user asked for would hide that the values are
        # used as stored: say so and let them drop the flag.
        why = ("a --detector model gets the values as stored (scale its input in the model)"
               if getattr(args, "detector", None) else
               f"{args.image} is radar backscatter ({', '.join(radar_bands(image))}), not reflectance")
        raise ChangedetError(f"{' and '.join(scaled)} {'apply' if len(scaled) > 1 else 'applies'} only to optical images counted by the classical "
                             f"counters; {why}: drop {' and '.join(scaled)}")

    radio = None
    if not getattr(args, "detector", None) and not radar:
        # The counters' colour rules are in surface reflectance: convert at the boundary
        # (a detector plugin gets the values as stored, a radar image is backscatter).
        image, radio = _to_reflectance(args, image, meta)

    valid = None
    names = [str(b) for b in image["band"].values]
    if MASK_BAND in names:
        valid = image.sel(band=MASK_BAND, drop=True) < 0.5
        image = image.sel(band=[b for b in names if b != MASK_BAND])

    if getattr(args, "detector", None):
        from changedet.objects.plugins import count_with_detector, load_detector

        det = load_detector(args.detector, labels=[x.strip() for x in args.labels.split(",") if x.strip()])
        res = count_with_detector(image, det, sel["main"], kind=args.kind, min_score=args.min_score)
    elif args.kind == "railcars":
        from changedet.objects.railcars import count_railcars

        res = count_railcars(image, sel["main"], valid=valid,
                             sun_azimuth_deg=sun["azimuth_deg"] if sun else None,
                             sun_elevation_deg=sun["elevation_deg"] if sun else None)
    elif args.kind == "containers":
        from changedet.objects.containers import count_containers

        res = count_containers(image, sel["main"], valid=valid, sun_azimuth_deg=sun["azimuth_deg"],
                               sun_elevation_deg=sun["elevation_deg"])
    else:
        from changedet.objects.ships import count_ships

        res = count_ships(image, sel["main"], water=sel["water"], valid=valid)
    if args.kind == "ships":
        from changedet.grid import GridSpec

        ok = None
        if any("observed_fraction" in pf for pf in res.per_feature):
            # The VHR counter says how much of each berth it saw: the anchorages say it too.
            import numpy as np

            ok = np.isfinite(np.asarray(image.values)).all(0)
            if valid is not None:
                ok &= np.asarray(valid.values, bool)
        # A --detector's entries keep the plain {id, count, by_type} of the contract.
        res = per_anchorage(res, sel["anchorage"], GridSpec.of(image), ok=ok,
                            roles=not getattr(args, "detector", None))

    if res.observed_fraction <= 0.0:
        # A count of 0 from an image that shows none of the features is no observation; the
        # library still returns it (flows record observed_fraction 0), the CLI refuses it.
        what = {"railcars": "tracks", "containers": "stack zones", "ships": "berths and water"}[args.kind]
        if args.kind == "ships" and not getattr(args, "detector", None) and not radar:
            from changedet.objects.vessels import no_sea_reason

            why = no_sea_reason(image, valid=valid, water=sel["water"], berths=sel["main"])
            if why:
                raise ChangedetError(f"{args.image}: the {what} of {where} are seen (not cloud or nodata), but {why}")
        raise ChangedetError(
            f"{args.image}: nothing was observed over the {what} of {where}: every pixel there is cloud "
            f"({MASK_BAND} band) or nodata, so no {args.kind} count can be made; use a clearer image of the site")
    if sun is not None and sun["azimuth_deg"] is None:
        # Said once the count stands: before an error that refuses the image it is noise.
        print(f"changedet count: warning: {sun['source']}", file=sys.stderr)
    if res.extras.get("caveat"):
        print(f"changedet count: warning: {args.image}: {res.extras['caveat']}", file=sys.stderr)
    out_crs = ll if feat_crs.equals(ll) else img_crs
    doc = res.to_json(to_crs=out_crs)
    # The detection polygons are in out_crs (lon/lat, or the image's CRS for projected
    # features): say which, so callers need not guess from the coordinates.
    doc["crs"] = _crs_name(out_crs)
    if sun is not None:
        doc["sun"] = sun
    if radio is not None:
        doc["radiometry"] = {k: radio[k] for k in ("scale", "offset", "source")}
    if args.out is not None:
        _write_detections(res, args.out)
        doc["out"] = str(args.out)
    if args.json:
        print(json.dumps(doc))
        return 0
    unit = "TEU" if args.kind == "containers" else args.kind
    types = ", ".join(f"{k} {v}" for k, v in doc["by_type"].items()) or "none"
    unc = f" +- {doc['uncertainty']}" if "uncertainty" in doc else ""
    print(f"{args.kind}: {doc['total']}{unc} {unit} (by type: {types}); observed {doc['observed_fraction']:.0%}")
    if sun is not None and sun["azimuth_deg"] is not None:
        print(f"  sun: azimuth {sun['azimuth_deg']:.1f} deg, elevation {sun['elevation_deg']:.1f} deg "
              f"({sun['source']})")
    if radio is not None and radio["source"].startswith(("assumed", "unknown")):
        print(f"  radiometry: {radio['source']}")
    if "tarped_stacks" in doc:
        print(f"  tarped stacks flagged: {doc['tarped_stacks']}")
    for pf in doc["per_feature"]:
        print(f"  {pf.get('id')}: {pf.get('count')}")
    if args.out is not None:
        print(f"{len(doc['detections'])} detections written to {args.out}")
    return 0


def _to_reflectance(args, image, meta: Path | None = None):
    """(``image`` in surface reflectance 0-1, the ``radiometry`` of
    :func:`changedet.objects.common.radiometry`); the CLM band is left as stored."""
    import numpy as np

    from changedet.io import read_scaling
    from changedet.objects.common import CLASS_BANDS, high_percentile, radiometry, to_reflectance

    names = [str(b) for b in image["band"].values]
    data = [j for j, n in enumerate(names) if n.upper() not in CLASS_BANDS]
    scaling = read_scaling(meta if meta is not None else args.image)
    # About a million values tell the scale as well as all of them (strided before the
    # band selection copies, not after). Only pixels the CLM band calls clear count: cloud
    # tops and masked collars are not the scale of the ground.
    step = max(1, int(np.sqrt(image.sizes["y"] * image.sizes["x"] / 2.5e5)))
    sub = image.values[:, ::step, ::step]
    clear = None
    if MASK_BAND in names:
        clear = ~(sub[names.index(MASK_BAND)] >= 0.5)  # NaN CLM (nodata) counts as clear: finite check below
    high = high_percentile(sub[data], clear, integer=np.issubdtype(np.dtype(scaling["dtype"]), np.integer))
    radio = radiometry(scaling, high, path=str(args.image),
                       scale=getattr(args, "reflectance_scale", None),
                       offset=getattr(args, "reflectance_offset", None), skip=(MASK_BAND,),
                       unknown_ok=args.kind != "containers")
    # An assumed scale is said on stderr too: the JSON's source alone goes unread in scripts.
    if radio["scale"] is None or radio.get("warning") or radio["source"].startswith("assumed"):
        print(f"changedet count: warning: {args.image}: radiometry {radio['source']}", file=sys.stderr)
    return to_reflectance(image, radio, inplace=True), radio


def _crs_name(crs) -> str:
    """``AUTHORITY:CODE`` of ``crs`` (e.g. ``EPSG:4326``), or its WKT when it has no code."""
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()


def _write_detections(res, path: Path) -> None:
    from changedet.io import atomic_write

    doc = res.to_json(to_crs="EPSG:4326")
    feats = [{"type": "Feature", "geometry": d["polygon"],
              "properties": {k: v for k, v in d.items() if k != "polygon"}} for d in doc["detections"]]
    text = json.dumps({"type": "FeatureCollection", "features": feats})
    atomic_write(Path(path), lambda t: t.write_text(text), option="--out")
