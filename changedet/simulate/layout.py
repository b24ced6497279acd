"""Where things stand: static buildings and the day's railcars, containers and ships.

Everything is placed in the AOI's projected CRS (metres) from the AOI features and
the scenario's day activity. Placement is deterministic: static things from the AOI
id, moving things from (AOI, date, seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon, box
from shapely.affinity import rotate, translate

from changedet.simulate.catalogue import (
    CONTAINER_20FT, CONTAINER_40FT, CONTAINER_PAINTS, CONTAINER_TIER_M, COUPLER_GAP_M,
    RAILCARS, ROOF_PAINTS, SHIP_HATCH_PAINTS, SHIP_HULL_PAINTS, TARP_PAINTS,
)
from changedet.simulate.scenario import DayActivity, rng_for


@dataclass
class Obj:
    """One rendered object. Angles in radians from the +x (east) axis."""

    kind: str            # railcar | container | ship | building
    type: str            # railcar type, "20ft"/"40ft", "cargo", "building"
    cx: float
    cy: float
    angle: float
    length: float
    width: float
    height: float
    paint: tuple[float, float, float, float]
    feature_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def polygon(self) -> Polygon:
        if self.kind == "ship":
            return ship_outline(self.cx, self.cy, self.angle, self.length, self.width)
        return oriented_box(self.cx, self.cy, self.angle, self.length, self.width)


def oriented_box(cx: float, cy: float, angle: float, length: float, width: float) -> Polygon:
    rect = box(-length / 2, -width / 2, length / 2, width / 2)
    return translate(rotate(rect, angle, origin=(0, 0), use_radians=True), cx, cy)


def ship_outline(cx: float, cy: float, angle: float, length: float, width: float) -> Polygon:
    """A hull seen from above: parallel midbody, pointed bow (+u end), rounded-off stern."""
    h, w = length / 2, width / 2
    bow = 0.16 * length
    pts = [(-h, -w * 0.85), (-h + 0.03 * length, -w), (h - bow, -w), (h, 0.0),
           (h - bow, w), (-h + 0.03 * length, w), (-h, w * 0.85)]
    poly = Polygon(pts)
    return translate(rotate(poly, angle, origin=(0, 0), use_radians=True), cx, cy)


def _axis(poly: Polygon) -> tuple[float, float, float, float, float]:
    """Centre, long-axis angle, length and width of a polygon's minimum rotated rectangle."""
    rect = poly.minimum_rotated_rectangle
    xs, ys = rect.exterior.coords.xy
    p = np.column_stack([xs[:4], ys[:4]])
    e1, e2 = p[1] - p[0], p[2] - p[1]
    l1, l2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    long_edge = e1 if l1 >= l2 else e2
    angle = math.atan2(long_edge[1], long_edge[0])
    c = rect.centroid
    return c.x, c.y, angle, max(l1, l2), min(l1, l2)


# --------------------------------------------------------------------------- railcars
def place_railcars(
    tracks: dict[str, LineString], activity: DayActivity, rng: np.random.Generator
) -> tuple[list[Obj], int]:
    """Couple the day's cars into strings and park them along the tracks.

    Returns the placed cars and the number that did not fit (reported in the truth,
    never silently dropped).
    """
    ids = [str(t) for t in tracks if activity.tracks is None or t in activity.tracks] or [str(t) for t in tracks]
    cars = list(activity.railcars)
    rng.shuffle(cars)
    # Locomotives head strings; put them first so each string can start with one.
    cars.sort(key=lambda t: t != "locomotive")
    free = {t: [(8.0, tracks[t].length - 8.0)] for t in ids}  # usable intervals per track
    placed: list[Obj] = []
    unplaced = 0
    i = 0
    while i < len(cars):
        string = cars[i : i + int(rng.integers(4, 30))]
        i += len(string)
        if not _place_string(string, tracks, free, [ids[j] for j in rng.permutation(len(ids))], rng, placed):
            # The yard is too fragmented for the whole string: park car by car.
            for car in string:
                if not _place_string([car], tracks, free, ids, rng, placed):
                    unplaced += 1
    return placed, unplaced


def _place_string(string, tracks, free, ids, rng, placed) -> bool:
    lengths = [RAILCARS[t].length_m for t in string]
    gaps = rng.uniform(*COUPLER_GAP_M, size=len(string))
    need = float(sum(lengths) + gaps[:-1].sum())
    for t in ids:
        for k, (a, b) in enumerate(free[t]):
            if b - a >= need:
                start = a + rng.uniform(0, min(b - a - need, 60.0))
                _lay(string, lengths, gaps, tracks[t], t, start, placed, rng)
                free[t][k : k + 1] = [
                    iv for iv in ((a, start - 3.0), (start + need + 3.0, b)) if iv[1] - iv[0] > 5
                ]
                return True
    return False


def _lay(string, lengths, gaps, line: LineString, track_id: str, start: float, placed, rng) -> None:
    s = start
    for car, length, gap in zip(string, lengths, gaps):
        mid = s + length / 2
        p0, p1 = line.interpolate(mid - 1.0), line.interpolate(mid + 1.0)
        angle = math.atan2(p1.y - p0.y, p1.x - p0.x)
        c = line.interpolate(mid)
        spec = RAILCARS[car]
        paint = spec.paints[int(rng.integers(len(spec.paints)))]
        extra: dict[str, Any] = {}
        if car == "flatcar":
            extra["load"] = [CONTAINER_PAINTS[int(rng.integers(len(CONTAINER_PAINTS)))] for _ in range(2)]
            extra["forty"] = bool(rng.random() < 0.5)
        if car == "gondola":
            extra["load_level"] = float(rng.uniform(0.0, 1.0))
        placed.append(Obj("railcar", car, c.x, c.y, angle, length, spec.width_m, spec.height_m,
                          paint, track_id, extra))
        s += length + gap


# ------------------------------------------------------------------------- containers
@dataclass(frozen=True)
class Slot:
    zone: str
    cx: float
    cy: float
    angle: float
    size: str       # "20ft" | "40ft"
    tiers: int


def container_slots(zones: dict[str, Polygon], aoi_id: str) -> list[Slot]:
    """Ground slots of every stack zone in fill order (fixed per AOI)."""
    slots: list[Slot] = []
    for zid, zone in zones.items():
        rng = rng_for("slots", aoi_id, zid)
        cx, cy, angle, length, width = _axis(zone)
        ca, sa = math.cos(angle), math.sin(angle)
        pitch_v = CONTAINER_20FT[1] + 0.35
        lane_every, lane = 6, 9.0
        v = -width / 2 + 3.0
        col = 0
        rows_v = []
        while v + CONTAINER_20FT[1] <= width / 2 - 3.0:
            rows_v.append(v + CONTAINER_20FT[1] / 2)
            col += 1
            v += pitch_v + (lane if col % lane_every == 0 else 0.0)
        zone_slots = []
        for vc in rows_v:
            u = -length / 2 + 3.0
            while True:
                forty = rng.random() < 0.55
                ln = CONTAINER_40FT[0] if forty else CONTAINER_20FT[0]
                if u + ln > length / 2 - 3.0:
                    break
                uc = u + ln / 2
                x, y = cx + uc * ca - vc * sa, cy + uc * sa + vc * ca
                tiers = int(rng.choice([1, 2, 3, 4, 5], p=[0.12, 0.25, 0.3, 0.23, 0.1]))
                if zone.buffer(-0.5).contains(oriented_box(x, y, angle, ln, CONTAINER_20FT[1])):
                    zone_slots.append(Slot(zid, x, y, angle, "40ft" if forty else "20ft", tiers))
                u += ln + 0.45
        # Yards fill block by block, not at random; keep row-major order with a random start.
        if zone_slots:
            k = int(rng.integers(len(zone_slots)))
            zone_slots = zone_slots[k:] + zone_slots[:k]
        slots += zone_slots
    # Interleave zones so growth shows in each of them.
    by_zone: dict[str, list[Slot]] = {}
    for s in slots:
        by_zone.setdefault(s.zone, []).append(s)
    out: list[Slot] = []
    queues = list(by_zone.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def place_containers(slots: list[Slot], activity: DayActivity, rng: np.random.Generator) -> tuple[list[Obj], int]:
    """Fill slots in order until the day's TEU is reached. Returns stacks and TEU not placed."""
    target = activity.container_teu
    objs: list[Obj] = []
    teu = 0
    for s in slots:
        if teu >= target:
            break
        per_box = 2 if s.size == "40ft" else 1
        tiers = max(1, min(s.tiers, int(math.ceil((target - teu) / per_box))))
        ln, wd = CONTAINER_40FT if s.size == "40ft" else CONTAINER_20FT
        tarped = bool(rng.random() < activity.tarp_fraction)
        paint = (TARP_PAINTS[int(rng.integers(len(TARP_PAINTS)))] if tarped
                 else CONTAINER_PAINTS[int(rng.integers(len(CONTAINER_PAINTS)))])
        objs.append(Obj("container", s.size, s.cx, s.cy, s.angle, ln, wd, tiers * CONTAINER_TIER_M,
                        paint, s.zone, {"tiers": tiers, "teu": tiers * per_box, "tarped": tarped}))
        teu += tiers * per_box
    return objs, max(target - teu, 0)


# ------------------------------------------------------------------------------ ships
def place_ships(berths: dict[str, Polygon], activity: DayActivity, rng: np.random.Generator) -> tuple[list[Obj], int]:
    objs: list[Obj] = []
    taken: set[str] = set()
    unplaced = 0
    ordered = sorted(activity.ships, key=lambda s: s[0] is None)  # named visits first
    for berth, length in ordered:
        bid = berth if berth in berths and berth not in taken else None
        if bid is None:
            free = [b for b in berths if b not in taken]
            if not free:
                unplaced += 1
                continue
            bid = free[int(rng.integers(len(free)))]
        taken.add(bid)
        cx, cy, angle, blen, bwid = _axis(berths[bid])
        length = float(min(length, blen - 6.0))
        width = float(np.clip(length / 6.5, 10.0, min(32.0, bwid - 2.0)))
        if rng.random() < 0.5:
            angle += math.pi
        hull = SHIP_HULL_PAINTS[int(rng.integers(len(SHIP_HULL_PAINTS)))]
        hatch = SHIP_HATCH_PAINTS[int(rng.integers(len(SHIP_HATCH_PAINTS)))]
        objs.append(Obj("ship", "cargo", cx, cy, angle, length, width, 12.0, hull, bid,
                        {"hatch": hatch, "heading_deg": (90.0 - math.degrees(angle)) % 360.0}))
    return objs, unplaced


# -------------------------------------------------------------------------- buildings
def place_buildings(bounds: tuple[float, float, float, float], keep_out: Polygon,
                    axis_angle: float, aoi_id: str, n: int = 24) -> list[Obj]:
    """Static buildings (stable features that co-registration locks on to)."""
    rng = rng_for("buildings", aoi_id)
    xmin, ymin, xmax, ymax = bounds
    objs: list[Obj] = []
    occupied = keep_out
    for _ in range(n * 8):
        if len(objs) >= n:
            break
        length, width = rng.uniform(12, 45), rng.uniform(8, 22)
        cx, cy = rng.uniform(xmin + 10, xmax - 10), rng.uniform(ymin + 10, ymax - 10)
        angle = axis_angle + (math.pi / 2 if rng.random() < 0.3 else 0.0)
        poly = oriented_box(cx, cy, angle, length, width)
        if poly.buffer(4.0).intersects(occupied):
            continue
        occupied = shapely.union(occupied, poly.buffer(4.0))
        paint = ROOF_PAINTS[int(rng.integers(len(ROOF_PAINTS)))]
        objs.append(Obj("building", "building", cx, cy, angle, length, width,
                        float(rng.uniform(4, 14)), paint))
    return objs
