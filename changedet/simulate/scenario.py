"""Activity scenarios: what stands where on which date, read from data files.

A scenario file (``aois/scenarios/<aoi_id>.yaml``) lists, per kind of activity,
periods with a count range or a linear ramp. The simulator draws the day's numbers
deterministically from (AOI, date, seed), so every run of the same scene agrees.

Example::

    aoi: tumangang_railyard
    railcars:
      - {from: 2018-01-01, to: 2023-08-31, count: [4, 20],
         mix: {boxcar: 0.4, gondola: 0.3, tank: 0.1, flatcar: 0.2}, locomotives: [0, 1]}
      - {from: 2023-09-25, to: 2030-12-31, count: [70, 86], mix: {tank: 0.45, boxcar: 0.35, gondola: 0.2}}
    containers:
      - {from: 2023-08-01, to: 2023-12-31, teu_from: 300, teu_to: 900, jitter: 0.04}
    ships:
      - {from: 2018-01-01, to: 2030-12-31, count: [0, 1]}
    visits:
      - {from: 2023-07-10, to: 2023-07-24, berth: B1, length_m: 120}
    weather: {clear_prob: 0.75, haze_max: 0.25}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from changedet.errors import ScenarioError
from changedet.simulate.catalogue import FREIGHT_TYPES, RAILCARS


def rng_for(*parts: Any) -> np.random.Generator:
    """A generator seeded from the given parts; stable across processes and Python versions."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class Period:
    start: date
    end: date
    spec: Mapping[str, Any]

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end

    def level(self, day: date, rng: np.random.Generator, *, lo_key: str, ramp: str) -> int:
        """Draw the period's count on ``day``: a uniform range or a jittered linear ramp."""
        if lo_key in self.spec:
            lo, hi = self.spec[lo_key]
            return int(rng.integers(int(lo), int(hi) + 1))
        a, b = float(self.spec[f"{ramp}_from"]), float(self.spec[f"{ramp}_to"])
        span = max((self.end - self.start).days, 1)
        frac = min(max((day - self.start).days / span, 0.0), 1.0)
        jitter = float(self.spec.get("jitter", 0.03))
        value = (a + (b - a) * frac) * (1.0 + rng.normal(0.0, jitter))
        return max(int(round(value)), 0)


@dataclass(frozen=True)
class Visit:
    start: date
    end: date
    berth: str
    length_m: float


@dataclass(frozen=True)
class DayActivity:
    """What the scenario puts on the ground on one day."""

    railcars: tuple[str, ...]          # one entry per car, by type (locomotives included)
    container_teu: int
    tarp_fraction: float
    ships: tuple[tuple[str | None, float], ...]   # (berth id or None for any berth, length m)
    tracks: tuple[str, ...] | None     # restrict railcars to these track ids


@dataclass(frozen=True)
class Scenario:
    aoi_id: str
    railcars: tuple[Period, ...] = ()
    containers: tuple[Period, ...] = ()
    ships: tuple[Period, ...] = ()
    visits: tuple[Visit, ...] = ()
    weather: Mapping[str, float] = field(default_factory=dict)
    source: Path | None = None

    def activity(self, day: date, *, seed: int = 0) -> DayActivity:
        rng = rng_for("activity", self.aoi_id, day.isoformat(), seed)
        cars: list[str] = []
        tracks = None
        p = _active(self.railcars, day)
        if p is not None:
            n = p.level(day, rng, lo_key="count", ramp="count")
            mix = dict(p.spec.get("mix", {t: 1.0 for t in FREIGHT_TYPES}))
            types = list(mix)
            probs = np.array([float(mix[t]) for t in types])
            probs = probs / probs.sum()
            cars = list(rng.choice(types, size=n, p=probs)) if n else []
            lo, hi = p.spec.get("locomotives", [0, 0])
            cars += ["locomotive"] * int(rng.integers(int(lo), int(hi) + 1))
            if "tracks" in p.spec:
                tracks = tuple(str(t) for t in p.spec["tracks"])
        teu, tarp = 0, 0.0
        p = _active(self.containers, day)
        if p is not None:
            teu = p.level(day, rng, lo_key="teu", ramp="teu")
            tarp = float(p.spec.get("tarp_fraction", 0.0))
        ships: list[tuple[str | None, float]] = []
        p = _active(self.ships, day)
        if p is not None:
            n = p.level(day, rng, lo_key="count", ramp="count")
            lo, hi = p.spec.get("length_m", [60, 200])
            ships += [(None, float(rng.uniform(lo, hi))) for _ in range(n)]
        ships += [(v.berth, v.length_m) for v in self.visits if v.start <= day <= v.end]
        return DayActivity(tuple(str(c) for c in cars), teu, tarp, tuple(ships), tracks)


def _active(periods: tuple[Period, ...], day: date) -> Period | None:
    for p in periods:
        if p.covers(day):
            return p
    return None


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ScenarioError(f"{where}: {value!r} is not a date; write it as YYYY-MM-DD") from None


def _periods(items: Any, where: str, *, lo_key: str, ramp: str) -> tuple[Period, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ScenarioError(f"{where}: expected a list of periods")
    out = []
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        if not isinstance(item, dict) or "from" not in item or "to" not in item:
            raise ScenarioError(f"{w}: each period needs 'from' and 'to' dates")
        start, end = _date(item["from"], w), _date(item["to"], w)
        if end < start:
            raise ScenarioError(f"{w}: 'to' ({end}) is before 'from' ({start}); swap them")
        has_range = lo_key in item
        has_ramp = f"{ramp}_from" in item and f"{ramp}_to" in item
        if has_range == has_ramp:
            raise ScenarioError(f"{w}: give either '{lo_key}: [lo, hi]' or '{ramp}_from' and '{ramp}_to'")
        def pair_ok(v) -> bool:
            return (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
                    and 0 <= v[0] <= v[1])

        if has_range and not pair_ok(item[lo_key]):
            raise ScenarioError(f"{w}: '{lo_key}' must be [lo, hi] numbers with 0 <= lo <= hi")
        if has_ramp and not all(isinstance(item[f"{ramp}_{k}"], (int, float)) and item[f"{ramp}_{k}"] >= 0
                                for k in ("from", "to")):
            raise ScenarioError(f"{w}: '{ramp}_from' and '{ramp}_to' must be non-negative numbers")
        for key in ("locomotives", "length_m"):
            if key in item and not pair_ok(item[key]):
                raise ScenarioError(f"{w}: '{key}' must be [lo, hi] numbers with 0 <= lo <= hi")
        mix = item.get("mix")
        if mix is not None:
            unknown = set(mix) - set(RAILCARS)
            if unknown:
                raise ScenarioError(f"{w}: unknown railcar types {sorted(unknown)}; use {sorted(RAILCARS)}")
            weights = list(mix.values())
            if not all(isinstance(x, (int, float)) and x >= 0 for x in weights) or sum(weights) <= 0:
                raise ScenarioError(f"{w}: 'mix' weights must be non-negative numbers with a positive sum")
        out.append(Period(start, end, dict(item)))
    return tuple(sorted(out, key=lambda p: p.start))


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; errors name the file and the entry to fix."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML ({exc})") from None
    except ValueError as exc:
        # PyYAML turns date-like scalars into dates and fails on impossible ones (2023-09-31).
        raise ScenarioError(f"{path}: {exc}; check the dates (YYYY-MM-DD, a real calendar day)") from None
    if not isinstance(doc, dict) or "aoi" not in doc:
        raise ScenarioError(f"{path}: a scenario needs a mapping with an 'aoi' key")
    visits = []
    for i, v in enumerate(doc.get("visits") or []):
        w = f"{path}: visits[{i}]"
        if not isinstance(v, dict):
            raise ScenarioError(f"{w}: a visit is a mapping with from, to, berth, length_m")
        try:
            visit = Visit(_date(v["from"], w), _date(v["to"], w), str(v["berth"]), float(v["length_m"]))
        except KeyError as exc:
            raise ScenarioError(f"{w}: missing {exc}; a visit needs from, to, berth, length_m") from None
        except (TypeError, ValueError):
            raise ScenarioError(f"{w}: length_m must be a number of metres") from None
        if visit.end < visit.start:
            raise ScenarioError(f"{w}: 'to' ({visit.end}) is before 'from' ({visit.start}); swap them")
        if not 10.0 <= visit.length_m <= 450.0:
            raise ScenarioError(f"{w}: length_m {visit.length_m} is not a ship length (10-450 m)")
        visits.append(visit)
    if not isinstance(doc.get("weather") or {}, dict):
        raise ScenarioError(f"{path}: 'weather' must be a mapping such as {{clear_prob: 0.8, haze_max: 0.2}}")
    return Scenario(
        aoi_id=str(doc["aoi"]),
        railcars=_periods(doc.get("railcars"), f"{path}: railcars", lo_key="count", ramp="count"),
        containers=_periods(doc.get("containers"), f"{path}: containers", lo_key="teu", ramp="teu"),
        ships=_periods(doc.get("ships"), f"{path}: ships", lo_key="count", ramp="count"),
        visits=tuple(visits),
        weather=dict(doc.get("weather") or {}),
        source=Path(path),
    )


def scenario_for(aoi_id: str, registry: Path) -> Scenario:
    """The scenario of an AOI, or an empty (quiet) one when it has none."""
    path = Path(registry) / "scenarios" / f"{aoi_id}.yaml"
    if path.exists():
        sc = load_scenario(path)
        if sc.aoi_id != aoi_id:
            raise ScenarioError(f"{path}: 'aoi' is {sc.aoi_id!r} but the file is named for {aoi_id!r}")
        return sc
    return Scenario(aoi_id=aoi_id)
