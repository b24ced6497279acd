"""Areas of interest: load, validate and query the monitored sites.

An AOI is a pair of files sharing a stem in the registry directory:

``<id>.geojson``
    A FeatureCollection in lon/lat WGS 84: exactly one ``role: site`` Polygon (the
    site boundary, ``properties.id`` equal to the AOI id) plus the features the
    detectors look at, each with a unique ``properties.id`` and a ``properties.role``
    among ``track`` (LineString, with ``gauge_mm``), ``berth``, ``stack_zone`` and
    ``water`` (Polygons).
``<id>.yaml``
    What to watch and how: kind, timezone, cadence, imagery sources in priority
    order, metrics, alert rules and recipients.

:func:`validate` reports *every* problem it finds, each as an :class:`AOIError`
naming the file (and feature or rule) and saying how to fix it, and never raises for
bad content; :func:`load_aoi` and :func:`list_aois` raise one :class:`AOIError`
listing them all.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyproj
import shapely
import yaml
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import Polygon
from shapely.validation import explain_validity

from changedet.errors import AOIError, GridError, RuleError
from changedet.grid import utm_crs_for

__all__ = [
    "AOI",
    "AlertRule",
    "Feature",
    "SourceSpec",
    "default_registry",
    "list_aois",
    "scan_registry",
    "load_aoi",
    "validate",
    "is_known_metric",
    "parse_cadence",
]

# -- vocabulary ---------------------------------------------------------------------------

KINDS = ("railyard", "container_yard", "port", "depot", "crossing")
#: role -> allowed GeoJSON geometry types. Water may be a MultiPolygon because
#: clipping a river or bay to the site can split it.
ROLE_GEOMETRY: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "track": ("LineString",),
        "berth": ("Polygon",),
        "stack_zone": ("Polygon",),
        "water": ("Polygon", "MultiPolygon"),
    }
)
SITE_ROLE = "site"
SOURCE_NAMES = ("simulator", "sentinelhub", "stac", "local")
SENSORS = ("vhr", "s2", "s1")
METRICS = ("railcars", "containers_teu", "ships", "changed_area_m2")
#: per-type railcar counts, e.g. ``railcars_tank``, are allowed besides METRICS.
_RAILCAR_TYPE_METRIC = re.compile(r"railcars_[a-z0-9]+(?:_[a-z0-9]+)*")
SEVERITIES = ("low", "medium", "high")
#: Rule kinds (``RULE_KINDS``) and the parameters each takes (``RULE_PARAMS``) come from
#: the alert engine, so a kind added there is accepted here without a second list to keep
#: in step. They are read on first use (module ``__getattr__``, :func:`_rule_kinds`): the
#: alert engine imports pandas and scipy.stats, seconds of start-up that every command
#: loading an AOI without rules would otherwise pay.


@lru_cache(maxsize=1)
def _rule_kinds() -> tuple[tuple[str, ...], Mapping[str, tuple[str, ...]]]:
    from changedet import baselines

    params = MappingProxyType({k: (*v, *baselines.LIFECYCLE_PARAMS) for k, v in baselines.RULE_PARAMS.items()})
    return baselines.RULE_KINDS, params


def __getattr__(name: str):
    if name == "RULE_KINDS":
        return _rule_kinds()[0]
    if name == "RULE_PARAMS":
        return _rule_kinds()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazily read names belong in dir() too, for tab completion and introspection.
    return sorted({*globals(), "RULE_KINDS", "RULE_PARAMS"})


#: metric -> feature roles it is measured on; a metric without any such feature
#: would read zero forever and its rules could never fire.
METRIC_NEEDS_ROLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"railcars": ("track",), "containers_teu": ("stack_zone",), "ships": ("berth", "water")}
)

#: Site area bounds (km²): smaller is probably a unit or digit slip, larger would make
#: VHR scenes huge and is no longer "a site".
MIN_SITE_KM2 = 0.01
MAX_SITE_KM2 = 25.0
#: How far (m) a feature may stick out of the site polygon: absorbs the rounding of
#: coordinates to 7 decimals and the curvature of projected straight edges.
WITHIN_TOLERANCE_M = 1.0
#: Track gauges (mm) accepted: narrow (600 mm) to Iberian (1668 mm).
GAUGE_RANGE_MM = (600, 1700)

_YAML_REQUIRED = ("id", "name", "kind", "timezone", "cadence", "sources", "metrics")
_YAML_OPTIONAL = ("approximate", "notes", "rules", "recipients")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_WGS84_CRS_NAMES = {
    "epsg:4326",
    "urn:ogc:def:crs:epsg::4326",
    "urn:ogc:def:crs:ogc:1.3:crs84",
    "urn:ogc:def:crs:ogc::crs84",
    "ogc:crs84",
    "crs84",
}


def is_known_metric(name: str) -> bool:
    """Whether ``name`` is a metric changedet can compute (see :data:`METRICS`)."""
    return isinstance(name, str) and (name in METRICS or _RAILCAR_TYPE_METRIC.fullmatch(name) is not None)


# -- data model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """One mapped feature of a site.

    Attributes
    ----------
    id : str
        Unique within the AOI, e.g. ``"T1"``.
    role : str
        ``"track"`` (LineString), ``"berth"``, ``"stack_zone"`` or ``"water"`` (Polygons).
    geometry : shapely.geometry.base.BaseGeometry
        In EPSG:4326, (lon, lat) order.
    properties : Mapping[str, Any]
        The other GeoJSON properties, read-only (lists become tuples), e.g.
        ``gauge_mm`` (an int, or a tuple of ints for a dual-gauge track) and ``name``.
    """

    id: str
    role: str
    geometry: BaseGeometry
    properties: Mapping[str, Any]

    # Explicit hashes: the generated ones would fail on the MappingProxyType fields, and
    # AOIs are natural cache keys. Each hashes a subset of the fields compared by ==.
    def __hash__(self) -> int:
        return hash((self.id, self.role, self.geometry))


@dataclass(frozen=True)
class SourceSpec:
    """One imagery source of an AOI.

    Attributes
    ----------
    name : str
        ``"simulator"``, ``"sentinelhub"``, ``"stac"`` or ``"local"``.
    sensor : str
        ``"vhr"``, ``"s2"`` or ``"s1"``.
    resolution_m : float
        Pixel size to work at, metres.
    options : Mapping[str, Any]
        Every other key (``collection``, ``path``, ``pattern``...), read-only.
    """

    name: str
    sensor: str
    resolution_m: float
    options: Mapping[str, Any]

    def __hash__(self) -> int:
        return hash((self.name, self.sensor, self.resolution_m))


@dataclass(frozen=True)
class AlertRule:
    """One alert rule on one metric.

    Attributes
    ----------
    id : str
        Unique within the AOI.
    metric : str
        A metric of the AOI, e.g. ``"railcars"``.
    kind : str
        ``"robust_z"``, ``"historical_max"`` or ``"trend"``.
    params : Mapping[str, Any]
        Rule parameters (``window_days``, ``k``, ``min_history``...), read-only.
    severity : str
        ``"low"``, ``"medium"`` or ``"high"``.
    channels : tuple of str
        Channel names, each a key of the AOI's recipients.
    """

    id: str
    metric: str
    kind: str
    params: Mapping[str, Any]
    severity: str
    channels: tuple[str, ...]

    def __hash__(self) -> int:
        return hash((self.id, self.metric, self.kind, self.severity, self.channels))


@dataclass(frozen=True)
class AOI:
    """A monitored site: its geometry (from the GeoJSON) and its watch plan (from the YAML).

    Attributes
    ----------
    id, name, kind : str
        ``kind`` is one of :data:`KINDS`.
    polygon : shapely.geometry.Polygon
        Site boundary, EPSG:4326 (lon, lat).
    features : tuple of Feature
        In file order.
    sources : tuple of SourceSpec
        In priority order.
    cadence_days : int
        Days between observations, parsed from ``cadence``.
    cadence : str
        As written: ``daily``, ``weekly`` or ``"<N>d"``.
    metrics : tuple of str
    rules : tuple of AlertRule
    recipients : Mapping[str, tuple of str]
        Channel name -> addresses.
    timezone : str
        IANA name.
    approximate : bool
        Whether positions are approximate (not surveyed).
    notes : str
    source_path : pathlib.Path or None
        The YAML file the AOI was loaded from.
    """

    id: str
    name: str
    kind: str
    polygon: Polygon
    features: tuple[Feature, ...]
    sources: tuple[SourceSpec, ...]
    cadence_days: int
    cadence: str
    metrics: tuple[str, ...]
    rules: tuple[AlertRule, ...]
    recipients: Mapping[str, tuple[str, ...]]
    timezone: str
    approximate: bool
    notes: str
    source_path: Path | None

    def __hash__(self) -> int:
        return hash((self.id, self.source_path, self.polygon))

    def features_by_role(self, role: str) -> tuple[Feature, ...]:
        """Features with the given role, in file order (empty if none)."""
        return tuple(f for f in self.features if f.role == role)

    def feature(self, feature_id: str) -> Feature:
        """The feature with id ``feature_id``; raises :class:`AOIError` if absent."""
        for f in self.features:
            if f.id == feature_id:
                return f
        known = ", ".join(f.id for f in self.features) or "none"
        raise AOIError(f"AOI {self.id!r} has no feature {feature_id!r}; its features are: {known}")

    @property
    def centroid_lonlat(self) -> tuple[float, float]:
        """(lon, lat) of the site polygon's centroid, degrees."""
        c = self.polygon.centroid
        return (float(c.x), float(c.y))

    def utm_crs(self) -> pyproj.CRS:
        """The UTM CRS of the zone containing the site centroid."""
        return utm_crs_for(*self.centroid_lonlat)

    def to_crs(self, geom: BaseGeometry, crs: Any) -> BaseGeometry:
        """Project a lon/lat (EPSG:4326) geometry to ``crs`` (anything pyproj accepts)."""
        return _project(geom, crs)


# -- projection -------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _transformer(dst_wkt: str) -> pyproj.Transformer:
    # Cached because AOIs are projected per scene and per feature; pyproj >= 3.1
    # transformers are safe to share between threads.
    return pyproj.Transformer.from_crs("EPSG:4326", pyproj.CRS.from_wkt(dst_wkt), always_xy=True)


def _project(geom: BaseGeometry, crs: Any) -> BaseGeometry:
    transformer = _transformer(pyproj.CRS.from_user_input(crs).to_wkt())

    def fwd(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fwd)


# -- registry ----------------------------------------------------------------------------------


def default_registry() -> Path:
    """The AOI directory: ``$CHANGEDET_AOIS`` if set, else the repository's ``aois/``."""
    env = os.environ.get("CHANGEDET_AOIS")
    if env:
        return Path(env)
    import changedet

    return Path(changedet.__file__).resolve().parents[1] / "aois"


def load_aoi(id_or_path: str | Path, *, registry: Path | None = None) -> AOI:
    """Load and validate one AOI.

    Parameters
    ----------
    id_or_path : str or Path
        An AOI id, looked up in ``registry``; or the path of its ``.yaml`` or
        ``.geojson`` file (the sibling with the same stem is found automatically).
    registry : Path, optional
        Directory to look ids up in; default :func:`default_registry`.

    Returns
    -------
    AOI

    Raises
    ------
    AOIError
        If the AOI does not exist or is invalid; the message lists every problem.
    """
    yaml_path, geojson_path = _resolve(id_or_path, registry)
    aoi, errors = _load_pair(yaml_path, geojson_path)
    if errors or aoi is None:
        raise _combine(errors, f"AOI {yaml_path.stem!r}")
    return aoi


def list_aois(registry: Path | None = None) -> list[AOI]:
    """Load every AOI of ``registry`` (default :func:`default_registry`), sorted by id.

    Raises
    ------
    AOIError
        If any AOI is invalid (the message lists every problem of every file), or the
        registry holds no AOI.
    """
    reg = Path(registry) if registry is not None else default_registry()
    aois, errors = _scan(reg)
    if errors:
        raise _combine(errors, f"AOI registry {reg}")
    return sorted(aois, key=lambda a: a.id)


def scan_registry(registry: Path | None = None) -> tuple[list[AOI], list[AOIError]]:
    """The valid AOIs of ``registry`` (sorted by id) and the problems of the others.

    For whoever must go on with the good AOIs when one file is broken (the daily run,
    ``changedet aois list``): an analyst's typo in one site's YAML must not stop the
    monitoring of every other site. The registry itself missing or empty is one error
    and no AOI.
    """
    reg = Path(registry) if registry is not None else default_registry()
    aois, errors = _scan(reg)
    return sorted(aois, key=lambda a: a.id), errors


def validate(path: Path | None = None) -> list[AOIError]:
    """Every problem of an AOI registry, or of one AOI.

    Parameters
    ----------
    path : Path, optional
        A registry directory (default :func:`default_registry`), or the ``.yaml`` or
        ``.geojson`` file of one AOI (its sibling is checked too).

    Returns
    -------
    list of AOIError
        Empty if everything is valid. Never raises for invalid content.
    """
    p = Path(path) if path is not None else default_registry()
    if p.is_dir():
        return _scan(p)[1]
    if p.suffix in (".yaml", ".geojson"):
        if not p.exists():
            return [AOIError(f"{p}: file does not exist; check the path")]
        return _load_pair(p.with_suffix(".yaml"), p.with_suffix(".geojson"))[1]
    if not p.exists():
        return [AOIError(f"{p}: no such file or directory; pass an AOI directory, .yaml or .geojson")]
    return [AOIError(f"{p}: not an AOI file; pass an AOI directory, or a .yaml or .geojson file")]


def _resolve(id_or_path: str | Path, registry: Path | None) -> tuple[Path, Path]:
    """(yaml, geojson) paths of an AOI given by id or by either file's path."""
    text = str(id_or_path)
    p = Path(id_or_path)
    looks_like_path = isinstance(id_or_path, Path) or p.suffix in (".yaml", ".geojson") or os.sep in text or "/" in text
    if looks_like_path:
        if p.suffix not in (".yaml", ".geojson"):
            raise AOIError(f"{p}: not an AOI file; pass the AOI's .yaml or .geojson file, or its id")
        if not p.exists():
            raise AOIError(f"{p}: file does not exist; check the path")
        return p.with_suffix(".yaml"), p.with_suffix(".geojson")
    reg = Path(registry) if registry is not None else default_registry()
    yaml_path, geojson_path = reg / f"{text}.yaml", reg / f"{text}.geojson"
    if not yaml_path.exists() and not geojson_path.exists():
        known = sorted({q.stem for q in reg.glob("*.yaml")}) if reg.is_dir() else []
        close = difflib.get_close_matches(text, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        listing = ", ".join(known) if known else "none"
        raise AOIError(
            f"no AOI {text!r} in {reg}; {hint}known AOIs: {listing} "
            "(set CHANGEDET_AOIS or pass a registry to look elsewhere)"
        )
    return yaml_path, geojson_path


def _scan(reg: Path) -> tuple[list[AOI], list[AOIError]]:
    """Load every ``<stem>.yaml``/``<stem>.geojson`` pair of a directory (not recursive)."""
    if not reg.is_dir():
        return [], [AOIError(f"{reg}: AOI registry directory does not exist; create it or set CHANGEDET_AOIS")]
    stems = sorted({q.stem for q in reg.glob("*.yaml")} | {q.stem for q in reg.glob("*.geojson")})
    if not stems:
        return [], [AOIError(f"{reg}: no AOIs found; add <id>.yaml and <id>.geojson pairs")]
    aois: list[AOI] = []
    errors: list[AOIError] = []
    for stem in stems:
        aoi, errs = _load_pair(reg / f"{stem}.yaml", reg / f"{stem}.geojson")
        errors.extend(errs)
        if aoi is not None:
            aois.append(aoi)
    return aois, errors


def _combine(errors: list[AOIError], what: str) -> AOIError:
    if len(errors) == 1:
        return errors[0]
    lines = "\n".join(f"  - {e}" for e in errors)
    return AOIError(f"{len(errors)} problems in {what}:\n{lines}")


# -- parsing and validation -------------------------------------------------------------------------


class _Problems:
    """Collects problems of one file, each prefixed with the file path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[AOIError] = []

    def add(self, message: str) -> None:
        self.errors.append(AOIError(f"{self.path}: {message}"))


def _load_pair(yaml_path: Path, geojson_path: Path) -> tuple[AOI | None, list[AOIError]]:
    try:
        return _load_pair_unchecked(yaml_path, geojson_path)
    except Exception as exc:  # noqa: BLE001 - validate() promises never to raise on content
        return None, [AOIError(f"{yaml_path}: unexpected error while checking this AOI ({exc!r}); please report it")]


def _load_pair_unchecked(yaml_path: Path, geojson_path: Path) -> tuple[AOI | None, list[AOIError]]:
    errors: list[AOIError] = []
    if not yaml_path.exists():
        errors.append(AOIError(f"{geojson_path}: sibling {yaml_path.name} is missing; create it next to the GeoJSON (see an existing AOI's .yaml)"))
    if not geojson_path.exists():
        errors.append(AOIError(f"{yaml_path}: sibling {geojson_path.name} is missing; create it next to the YAML with the site polygon and features"))
    if errors:
        return None, errors

    ym = _Problems(yaml_path)
    plan = _parse_yaml(yaml_path, ym)
    gj = _Problems(geojson_path)
    aoi_id = plan.get("id") if isinstance(plan.get("id"), str) else yaml_path.stem
    geo = _parse_geojson(geojson_path, gj, aoi_id=aoi_id, yaml_name=yaml_path.name)

    # Cross-file consistency: metrics need the features they are measured on. Only
    # checked on a clean GeoJSON, where a missing role really means a missing feature.
    if plan.get("metrics") is not None and "features" in geo:
        roles = {f.role for f in geo["features"]}
        for metric in plan["metrics"]:
            base = "railcars" if metric.startswith("railcars") else metric
            need = METRIC_NEEDS_ROLES.get(base)
            if need and not roles.intersection(need):
                ym.add(
                    f"metric {metric!r} needs a feature with role {' or '.join(need)} in {geojson_path.name}; "
                    "add one or remove the metric"
                )

    errors = ym.errors + gj.errors
    if errors:
        return None, errors
    aoi = AOI(
        id=plan["id"],
        name=plan["name"],
        kind=plan["kind"],
        polygon=geo["site"],
        features=tuple(geo["features"]),
        sources=plan["sources"],
        cadence_days=plan["cadence_days"],
        cadence=plan["cadence"],
        metrics=plan["metrics"],
        rules=plan["rules"],
        recipients=plan["recipients"],
        timezone=plan["timezone"],
        approximate=plan["approximate"],
        notes=plan["notes"],
        source_path=yaml_path,
    )
    return aoi, []


# YAML ----------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let SafeLoader report it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates)


def _suggest(value: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _freeze(obj: Any) -> Any:
    """Read-only deep copy: dicts -> MappingProxyType, lists -> tuples."""
    if isinstance(obj, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(_freeze(v) for v in obj)
    return obj


def parse_cadence(value: Any) -> int | None:
    """Days between observations for ``daily``, ``weekly`` or ``"<N>d"`` (1 <= N <= 366); else None."""
    if not isinstance(value, str):
        return None
    if value == "daily":
        return 1
    if value == "weekly":
        return 7
    m = re.fullmatch(r"([0-9]{1,3})d", value)
    if m and 1 <= int(m.group(1)) <= 366:
        return int(m.group(1))
    return None


def _parse_yaml(path: Path, P: _Problems) -> dict[str, Any]:
    """Check the watch plan; returns parsed values (None for any part that is invalid)."""
    out: dict[str, Any] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        P.add(f"cannot read the file ({exc}); check that it is a UTF-8 text file")
        return out
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        P.add(f"{where}invalid YAML: {exc.problem or exc}; fix the syntax there (indentation, colons, quotes, duplicate keys)")
        return out
    except yaml.YAMLError as exc:
        P.add(f"invalid YAML: {exc}; fix the syntax")
        return out
    if doc is None:
        P.add("file is empty; write the AOI's keys (id, name, kind, timezone, cadence, sources, metrics, rules, recipients)")
        return out
    if not isinstance(doc, dict):
        P.add(f"top level is a {type(doc).__name__}, not a mapping; write 'key: value' lines (id, name, kind, ...)")
        return out

    for key in doc:
        if key not in _YAML_REQUIRED and key not in _YAML_OPTIONAL:
            P.add(
                f"unknown key {key!r}{_suggest(key, _YAML_REQUIRED + _YAML_OPTIONAL)}; "
                f"allowed keys: {', '.join(_YAML_REQUIRED + _YAML_OPTIONAL)}"
            )
    for key in _YAML_REQUIRED:
        if key not in doc:
            P.add(f"missing required key {key!r}; add it (required: {', '.join(_YAML_REQUIRED)})")

    # id: must equal the file stem so that ids, file names and the registry agree.
    aoi_id = doc.get("id")
    if "id" in doc:
        if not isinstance(aoi_id, str) or not _ID_RE.fullmatch(aoi_id):
            P.add(f"id {aoi_id!r} is not a valid id; use lowercase letters, digits, '_' and '-' (e.g. {path.stem!r})")
        elif aoi_id != path.stem:
            P.add(f"id {aoi_id!r} does not match the file name {path.name!r}; rename the file to {aoi_id}.yaml or set id: {path.stem}")
        else:
            out["id"] = aoi_id

    if "name" in doc:
        if isinstance(doc["name"], str) and doc["name"].strip():
            out["name"] = doc["name"]
        else:
            P.add("name must be a non-empty string; write e.g. name: Tumangang railyard")
    notes = doc.get("notes", "")
    if isinstance(notes, str):
        out["notes"] = notes.strip()
    else:
        P.add("notes must be a string; quote it")
    approximate = doc.get("approximate", False)
    if isinstance(approximate, bool):
        out["approximate"] = approximate
    else:
        P.add(f"approximate must be true or false, not {approximate!r}")

    if "kind" in doc:
        if doc["kind"] in KINDS:
            out["kind"] = doc["kind"]
        else:
            P.add(f"unknown kind {doc['kind']!r}{_suggest(doc['kind'], KINDS)}; use one of: {', '.join(KINDS)}")

    if "timezone" in doc:
        tz = doc["timezone"]
        try:
            if not isinstance(tz, str):
                raise ValueError
            ZoneInfo(tz)
            out["timezone"] = tz
        except (ZoneInfoNotFoundError, ValueError, OSError):
            P.add(f"unknown timezone {tz!r}; use an IANA name such as Asia/Pyongyang, Asia/Vladivostok or Europe/Moscow")

    if "cadence" in doc:
        days = parse_cadence(doc["cadence"])
        if days is None:
            P.add(f"bad cadence {doc['cadence']!r}; use daily, weekly or \"<N>d\" with N from 1 to 366 (e.g. \"14d\")")
        else:
            out["cadence"], out["cadence_days"] = doc["cadence"], days

    if "sources" in doc:
        out["sources"] = _parse_sources(doc["sources"], P)

    metrics = None
    if "metrics" in doc:
        metrics = _parse_metrics(doc["metrics"], P)
        out["metrics"] = metrics

    recipients = _parse_recipients(doc.get("recipients", {}), P)
    out["recipients"] = recipients
    out["rules"] = _parse_rules(doc.get("rules", []), P, metrics, recipients)
    return out


def _parse_sources(raw: Any, P: _Problems) -> tuple[SourceSpec, ...] | None:
    example = "- {name: simulator, sensor: vhr, resolution_m: 0.5}"
    if not isinstance(raw, list) or not raw:
        P.add(f"sources must be a non-empty list, in priority order; e.g. {example}")
        return None
    specs: list[SourceSpec] = []
    ok = True
    for i, item in enumerate(raw, 1):
        where = f"source #{i}"
        if not isinstance(item, dict):
            P.add(f"{where} is not a mapping; write it as {example}")
            ok = False
            continue
        name, sensor, res = item.get("name"), item.get("sensor"), item.get("resolution_m")
        for key in ("name", "sensor", "resolution_m"):
            if key not in item:
                P.add(f"{where}: missing key {key!r}; e.g. {example}")
                ok = False
        if "name" in item and name not in SOURCE_NAMES:
            P.add(f"{where}: unknown source name {name!r}{_suggest(name, SOURCE_NAMES)}; use one of: {', '.join(SOURCE_NAMES)}")
            ok = False
        if "sensor" in item and sensor not in SENSORS:
            P.add(f"{where}: unknown sensor {sensor!r}{_suggest(sensor, SENSORS)}; use one of: {', '.join(SENSORS)}")
            ok = False
        if "resolution_m" in item and not (_is_number(res) and res > 0):
            P.add(f"{where}: resolution_m must be a positive number of metres, not {res!r}; e.g. resolution_m: 0.5")
            ok = False
        if "registration_window" in item and not isinstance(item["registration_window"], bool):
            P.add(f"{where}: registration_window must be true or false, not {item['registration_window']!r}; "
                  "false registers a small site on its own grid only (see README, daily run)")
            ok = False
        if ok:
            options = {k: v for k, v in item.items() if k not in ("name", "sensor", "resolution_m")}
            specs.append(SourceSpec(name=name, sensor=sensor, resolution_m=float(res), options=_freeze(options)))
    return tuple(specs) if ok else None


def _parse_metrics(raw: Any, P: _Problems) -> tuple[str, ...] | None:
    if not isinstance(raw, list) or not raw:
        P.add("metrics must be a non-empty list; e.g. metrics: [railcars, changed_area_m2]")
        return None
    ok = True
    for m in raw:
        if not is_known_metric(m):
            P.add(
                f"unknown metric {m!r}{_suggest(m, METRICS)}; use {', '.join(METRICS)} "
                "or railcars_<type> (e.g. railcars_tank)"
            )
            ok = False
    dupes = sorted({m for m in raw if isinstance(m, str) and raw.count(m) > 1})
    for m in dupes:
        P.add(f"metric {m!r} is listed more than once; list it once")
        ok = False
    return tuple(raw) if ok else None


def _parse_recipients(raw: Any, P: _Problems) -> Mapping[str, tuple[str, ...]] | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        P.add('recipients must map channel names to address lists; e.g. recipients: {slack: ["#alerts"], email: ["a@example.org"]}')
        return None
    out: dict[str, tuple[str, ...]] = {}
    ok = True
    for channel, addresses in raw.items():
        if isinstance(addresses, str):  # a single address is a common shorthand
            addresses = [addresses]
        if not isinstance(channel, str) or not isinstance(addresses, list) or not addresses or not all(
            isinstance(a, str) and a.strip() for a in addresses
        ):
            P.add(f"recipients.{channel}: must be a non-empty list of addresses (strings); e.g. {channel}: [\"analyst@example.org\"]")
            ok = False
            continue
        out[channel] = tuple(addresses)
    return MappingProxyType(out) if ok else None


def _parse_rules(
    raw: Any, P: _Problems, metrics: tuple[str, ...] | None, recipients: Mapping[str, tuple[str, ...]] | None
) -> tuple[AlertRule, ...] | None:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        P.add("rules must be a list of rules (each with id, metric, kind, params, severity, channels)")
        return None
    rules: list[AlertRule] = []
    ok = True
    seen: dict[str, int] = {}
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            P.add(f"rule #{i} is not a mapping; write it with keys id, metric, kind, params, severity, channels")
            ok = False
            continue
        rid = item.get("id")
        where = f"rule {rid!r}" if isinstance(rid, str) else f"rule #{i}"
        good = True
        for key in ("id", "metric", "kind", "severity", "channels"):
            if key not in item:
                P.add(f"{where}: missing key {key!r}; add it")
                good = False
        extra = set(item) - {"id", "metric", "kind", "params", "severity", "channels"}
        for key in sorted(map(str, extra)):
            P.add(f"{where}: unknown key {key!r}; allowed: id, metric, kind, params, severity, channels (put thresholds under params)")
            good = False
        if "id" in item:
            if not isinstance(rid, str) or not rid:
                P.add(f"{where}: id must be a non-empty string")
                good = False
            elif rid in seen:
                P.add(f"duplicate rule id {rid!r} (rules #{seen[rid]} and #{i}); give each rule a unique id")
                good = False
            else:
                seen[rid] = i
        metric = item.get("metric")
        if "metric" in item:
            if not is_known_metric(metric):
                P.add(f"{where}: unknown metric {metric!r}{_suggest(metric, METRICS)}; use one of: {', '.join(METRICS)} or railcars_<type>")
                good = False
            elif metrics is not None and metric not in metrics:
                P.add(f"{where}: metric {metric!r} is not in metrics; add it to metrics or change the rule's metric")
                good = False
        kind = item.get("kind")
        rule_kinds, rule_params = _rule_kinds()
        if "kind" in item and kind not in rule_kinds:
            P.add(f"{where}: unknown rule kind {kind!r}{_suggest(kind, rule_kinds)}; use one of: {', '.join(rule_kinds)}")
            good = False
        params = item.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            P.add(f"{where}: params must be a mapping; e.g. params: {{window_days: 120, k: 5.0}}")
            good = False
            params = {}
        known = rule_params.get(kind, ()) if isinstance(kind, str) else ()
        for name, value in params.items():
            if name not in known:
                hint = _suggest(name, known)
                if hint:  # an unknown name this close to a known one is a typo, not a new parameter
                    P.add(f"{where}: unknown parameter {name!r}{hint}; {kind} takes {', '.join(known)}")
                    good = False
                continue
        if good and kind in rule_kinds:
            try:
                from changedet.baselines import validate_params

                validate_params(kind, params, rule_id=str(rid))
            except RuleError as exc:
                # The rule engine names the rule itself; ``where`` already does.
                text = str(exc).removeprefix(f"rule {str(rid)!r}: ")
                P.add(f"{where}: {text}")
                good = False
        severity = item.get("severity")
        if "severity" in item and severity not in SEVERITIES:
            P.add(f"{where}: unknown severity {severity!r}; use one of: {', '.join(SEVERITIES)}")
            good = False
        channels = item.get("channels")
        if isinstance(channels, str):
            channels = [channels]
        if "channels" in item:
            if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
                P.add(f"{where}: channels must be a non-empty list of channel names; e.g. channels: [slack, email]")
                good = False
            elif recipients is not None:
                for c in channels:
                    if c not in recipients:
                        have = ", ".join(recipients) or "none"
                        P.add(f"{where}: channel {c!r} is not in recipients (have: {have}); add recipients.{c} or remove it from channels")
                        good = False
        if good:
            rules.append(
                AlertRule(
                    id=rid, metric=metric, kind=kind, params=_freeze(params), severity=severity, channels=tuple(channels)
                )
            )
        ok = ok and good
    return tuple(rules) if ok else None


# GeoJSON -------------------------------------------------------------------------------------------

#: Nesting depth of positions in the "coordinates" of each geometry type.
_COORD_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


def _positions(coords: Any, depth: int) -> list[tuple[float, float]] | None:
    """Flatten GeoJSON coordinates of the given nesting depth; None if malformed."""
    if depth == 0:
        if isinstance(coords, list) and len(coords) in (2, 3) and all(_is_number(v) for v in coords):
            return [(float(coords[0]), float(coords[1]))]
        return None
    if not isinstance(coords, list):
        return None
    out: list[tuple[float, float]] = []
    for part in coords:
        sub = _positions(part, depth - 1)
        if sub is None:
            return None
        out.extend(sub)
    return out


def _crs_problem(member: Any) -> str | None:
    """Why a GeoJSON ``crs`` member is unacceptable, or None if it names lon/lat WGS 84."""
    name = None
    if isinstance(member, dict):
        props = member.get("properties")
        if isinstance(props, dict):
            name = props.get("name")
    if isinstance(name, str) and name.strip().lower() in _WGS84_CRS_NAMES:
        return None
    return (
        f"declares crs {name or member!r}; GeoJSON is lon/lat WGS 84 (EPSG:4326/CRS84) only: "
        "reproject the coordinates to lon/lat and remove the crs member"
    )


def _parse_geojson(path: Path, P: _Problems, *, aoi_id: str, yaml_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        # utf-8-sig: editors on Windows save GeoJSON with a byte-order mark, which RFC 8259
        # lets a parser ignore; refusing it sent users hunting for an invisible character.
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        P.add(f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}; fix the syntax there")
        return out
    except (OSError, UnicodeDecodeError) as exc:
        P.add(f"cannot read the file ({exc}); check that it is a UTF-8 GeoJSON file")
        return out
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        what = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        P.add(f'is a {what!r}, not a FeatureCollection; wrap the features in {{"type": "FeatureCollection", "features": [...]}}')
        return out
    if "crs" in doc and (problem := _crs_problem(doc["crs"])):
        P.add(problem)
        return out
    raw_features = doc.get("features")
    if not isinstance(raw_features, list):
        P.add('has no "features" list; add "features": [...] with the site polygon and the features')
        return out

    site: list[tuple[int, BaseGeometry | None]] = []  # (feature number, geometry)
    features: list[Feature] = []
    geometry_ok = True
    ids_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_features, 1):
        if not isinstance(raw, dict) or raw.get("type") != "Feature":
            P.add(f'feature #{i} is not a GeoJSON Feature; give it "type": "Feature", "properties" and "geometry"')
            geometry_ok = False
            continue
        props = raw.get("properties")
        if not isinstance(props, dict):
            P.add(f'feature #{i} has no "properties" object; add properties with "id" and "role"')
            geometry_ok = False
            continue
        fid = props.get("id")
        role = props.get("role")
        if role == SITE_ROLE:
            where = f"site polygon (feature #{i})"
        else:
            where = f"feature {fid!r}" if isinstance(fid, str) and fid else f"feature #{i}"
        good = True
        if "crs" in raw and (problem := _crs_problem(raw["crs"])):
            P.add(f"{where} {problem}")
            good = False
        if fid is not None and fid != "" and not isinstance(fid, str):
            # A number (a GIS tool's auto-numbering) is not "missing": say what to change.
            P.add(f'{where} has properties.id {fid!r}, a {type(fid).__name__}; write it as a string, e.g. "{fid}"')
            good = False
        elif not isinstance(fid, str) or not fid:
            P.add(f'{where} has no properties.id; add a unique id such as "T1"')
            good = False
        elif role != SITE_ROLE:
            if fid in ids_seen:
                P.add(f"duplicate feature id {fid!r} (features #{ids_seen[fid]} and #{i}); give each feature a unique id")
                good = False
            else:
                ids_seen[fid] = i
        roles = (SITE_ROLE, *ROLE_GEOMETRY)
        if role not in roles:
            P.add(f"{where} has role {role!r}{_suggest(role, roles)}; use one of: {', '.join(roles)}")
            good = False
        geom = _parse_geometry(raw.get("geometry"), where, role, P)
        if geom is None:
            geometry_ok = False
            good = False
        if role == SITE_ROLE:
            site.append((i, geom))
            if isinstance(fid, str) and fid and fid != aoi_id:
                P.add(f"site id {fid!r} does not match id {aoi_id!r} in {yaml_name}; set the site's properties.id to {aoi_id!r}")
            continue
        if role == "track" and not _check_gauge(props.get("gauge_mm"), where, P):
            good = False
        if good:
            extra = {k: v for k, v in props.items() if k not in ("id", "role")}
            features.append(Feature(id=fid, role=role, geometry=geom, properties=_freeze(extra)))

    if not site:
        P.add(f'no site polygon; add a Feature with properties {{"role": "site", "id": "{aoi_id}"}} and the site boundary Polygon')
        return out
    if len(site) > 1:
        numbers = ", ".join(f"#{i}" for i, _ in site)
        P.add(f"{len(site)} site polygons (features {numbers}); keep exactly one feature with role 'site'")
        return out
    site_geom = site[0][1]
    if site_geom is None or not geometry_ok:
        return out  # the geometry problems are reported; placement checks would only add noise

    _check_placement(site_geom, features, P)
    if not P.errors:
        out["site"] = site_geom
        out["features"] = features
    return out


def _check_gauge(gauge: Any, where: str, P: _Problems) -> bool:
    lo, hi = GAUGE_RANGE_MM
    values = gauge if isinstance(gauge, list) else [gauge]
    if gauge is None:
        P.add(f"{where} is a track without gauge_mm; add gauge_mm: 1520 (Russian) or 1435 (standard), or [1520, 1435] for dual gauge")
        return False
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in values) or len(set(values)) != len(values):
        P.add(f"{where} has gauge_mm {gauge!r}; use a whole number of millimetres in {lo}..{hi} (1520 or 1435), or a list of distinct ones for dual gauge")
        return False
    return True


def _parse_geometry(raw: Any, where: str, role: Any, P: _Problems) -> BaseGeometry | None:
    """Shapely geometry of a GeoJSON geometry object, or None after reporting why not."""
    if not isinstance(raw, dict) or "type" not in raw:
        P.add(f'{where} has no geometry; add a "geometry" object with "type" and "coordinates"')
        return None
    gtype = raw.get("type")
    wanted = ("Polygon",) if role == SITE_ROLE else ROLE_GEOMETRY.get(role) if isinstance(role, str) else None
    if wanted is not None and gtype not in wanted:
        P.add(f"{where} is a {gtype} but a {role} must be a {' or '.join(wanted)}; redraw it as a {wanted[0]}")
        return None
    if gtype not in _COORD_DEPTH:
        P.add(f"{where} has unsupported geometry type {gtype!r}; use a LineString or Polygon")
        return None
    positions = _positions(raw.get("coordinates"), _COORD_DEPTH[gtype])
    if not positions:
        P.add(f"{where} has malformed {gtype} coordinates; give nested [lon, lat] number pairs as GeoJSON requires")
        return None
    xs = [x for x, _ in positions]
    ys = [y for _, y in positions]
    if any(abs(y) > 90 for y in ys) or any(abs(x) > 180 for x in xs):
        if all(abs(x) <= 90 for x in xs) and all(abs(y) <= 180 for y in ys):
            P.add(f"{where}: coordinates look like (lat, lon); GeoJSON wants (lon, lat): swap the two numbers of every pair")
        else:
            P.add(f"{where}: coordinates out of range (longitude must be within ±180, latitude within ±90); fix them")
        return None
    try:
        geom = shape(raw)
    except Exception as exc:  # noqa: BLE001 - shapely/GEOS raise several types for bad rings
        P.add(f"{where}: cannot build a {gtype} ({exc}); fix the coordinates (polygon rings need 4+ positions, closed)")
        return None
    if geom.is_empty:
        P.add(f"{where} has an empty geometry; draw it")
        return None
    if not geom.is_valid:
        P.add(f"{where} has an invalid geometry ({explain_validity(geom)}); fix the outline, e.g. a self-intersecting 'bow-tie' needs its vertices reordered")
        return None
    return geom


def _swap_xy(geom: BaseGeometry) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: xy[:, ::-1])


def _check_placement(site: Polygon, features: list[Feature], P: _Problems) -> None:
    """Site size and position, features inside the site, berths on the water."""
    lon, lat = site.centroid.x, site.centroid.y
    try:
        crs = utm_crs_for(lon, lat)
    except GridError as exc:
        P.add(f"site polygon: {exc}")
        return
    site_m = _project(site, crs)
    area_km2 = site_m.area / 1e6
    if area_km2 > MAX_SITE_KM2:
        P.add(f"site polygon is implausibly large ({area_km2:.1f} km² > {MAX_SITE_KM2:g} km²); draw only the site, or check the coordinates")
    elif area_km2 < MIN_SITE_KM2:
        P.add(f"site polygon is implausibly small ({area_km2 * 1e6:.0f} m² < {MIN_SITE_KM2 * 1e6:.0f} m²); check the coordinates (digits, units)")
    allowed = site_m.buffer(WITHIN_TOLERANCE_M)
    projected: dict[str, BaseGeometry] = {}
    for f in features:
        g = _project(f.geometry, crs)
        projected[f.id] = g
        if allowed.covers(g):
            continue
        if site.buffer(1e-5).covers(_swap_xy(f.geometry)):
            P.add(f"feature {f.id!r}: coordinates look like (lat, lon); GeoJSON wants (lon, lat): swap the two numbers of every pair")
            continue
        outside = g.difference(site_m)
        reach = max((site_m.distance(shapely.Point(xy)) for xy in shapely.get_coordinates(outside)), default=0.0)
        P.add(f"feature {f.id!r} lies outside the site polygon (by up to {reach:.0f} m); move it inside or enlarge the site")
    water = [projected[f.id] for f in features if f.role == "water"]
    water_union = shapely.union_all(water).buffer(WITHIN_TOLERANCE_M) if water else None
    for f in features:
        if f.role != "berth":
            continue
        if water_union is None:
            P.add(f"berth {f.id!r} has no water to moor on; add a water polygon (role 'water') that the berth lies in or touches")
        elif not water_union.intersects(projected[f.id]):
            P.add(f"berth {f.id!r} does not touch any water polygon; move it onto the water side of the quay")
