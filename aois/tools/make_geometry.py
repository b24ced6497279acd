"""Regenerate the schematic ``aois/<id>.geojson`` files of the shipped AOIs.

The shipped sites are *schematic*: positions come from public maps, layouts are
plausible but not surveyed. Each layout is drawn in a local metric frame (x east,
y north, metres, origin at the site's reference point), then projected to lon/lat
through the UTM zone of that point (the same zone ``changedet.aoi`` measures in) and
rounded to 7 decimals (about 1 cm).

Run once from the repository root after editing a layout::

    PYTHONPATH=. python aois/tools/make_geometry.py   # or with changedet installed

The YAML side of each AOI is written by hand and is not touched.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyproj
import shapely
from shapely.affinity import rotate
from shapely.geometry import LineString, Polygon, box, mapping

from changedet.grid import utm_crs_for

OUT = Path(__file__).resolve().parents[1]

#: Russian/Soviet standard distance between parallel track centrelines (m).
TRACK_SPACING_M = 5.3
#: Minimum clearance (m) of tracks, berths and stack zones from the site edge, so the
#: simulator always renders them whole with some context around them.
MARGIN_M = 15.0


def oriented_rect(length: float, width: float, angle_deg: float) -> Polygon:
    """Rectangle centred on the origin, its long axis at ``angle_deg`` from east (CCW)."""
    return rotate(box(-length / 2, -width / 2, length / 2, width / 2), angle_deg, origin=(0, 0))


def parallel_tracks(lengths: list[float], angle_deg: float, offset: float = 0.0) -> list[LineString]:
    """Parallel centrelines at the standard spacing, centred across the axis."""
    n = len(lengths)
    lines = []
    for i, length in enumerate(lengths):
        y = offset + (i - (n - 1) / 2) * TRACK_SPACING_M
        lines.append(rotate(LineString([(-length / 2, y), (length / 2, y)]), angle_deg, origin=(0, 0)))
    return lines


def turn(geom, quarter_turns: int):
    """Rotate a port layout drawn with water to the south by multiples of 90 degrees CCW.

    1 quarter turn puts the water on the east, 2 on the north, 3 on the west; multiples
    of 90 degrees keep rectangles axis-aligned, which keeps simulated scenes small.
    """
    return rotate(geom, 90 * quarter_turns, origin=(0, 0))


# -- layouts ----------------------------------------------------------------------------
# Each returns (site polygon, [(properties, geometry), ...]) in the local frame.


def tumangang_railyard():
    # Break-of-gauge yard on a WNW-ESE axis: Soviet-gauge tracks on one side, standard
    # gauge on the other.
    angle = -22.5
    site = oriented_rect(780, 200, angle)
    lines = parallel_tracks([680, 660, 650, 640, 620], angle)
    gauges = [1520, 1520, 1520, 1435, 1435]
    feats = [
        ({"role": "track", "id": f"T{i + 1}", "gauge_mm": g, "name": f"Track {i + 1}"}, line)
        for i, (line, g) in enumerate(zip(lines, gauges))
    ]
    return site, feats


def khasan_railyard():
    angle = 35.0
    site = oriented_rect(620, 180, angle)
    lines = parallel_tracks([520, 510, 500, 480], angle)
    feats = [
        ({"role": "track", "id": f"T{i + 1}", "gauge_mm": 1520, "name": f"Track {i + 1}"}, line)
        for i, line in enumerate(lines)
    ]
    return site, feats


def tumangang_khasan_bridge():
    # One dual-gauge track crossing the Tumen River, which runs across the site at
    # right angles to the bridge and is clipped to the site polygon.
    angle = 45.0
    site = oriented_rect(580, 200, angle)
    (line,) = parallel_tracks([500], angle)
    river = oriented_rect(200, 2000, angle).intersection(site)
    feats = [
        ({"role": "track", "id": "T1", "gauge_mm": [1520, 1435], "name": "Friendship Bridge track"}, line),
        ({"role": "water", "id": "W1", "name": "Tumen River"}, river),
    ]
    return site, feats


def port(width, height, quay_y, berths, stacks, tracks=(), quarter_turns=0, water_name="Harbour basin"):
    """A port drawn with the quay along y = ``quay_y`` and the water to the south.

    ``berths`` are (x0, x1, depth) spans moored along the quay on the water side,
    ``stacks`` (x0, y0, x1, y1) paved rectangles, ``tracks`` (x0, x1, y, gauge) lines.
    """
    site = box(-width / 2, -height / 2, width / 2, height / 2)
    water = box(-width, -height, width, quay_y).intersection(site)
    feats = [({"role": "water", "id": "W1", "name": water_name}, water)]
    for i, (x0, x1, depth) in enumerate(berths):
        feats.append(({"role": "berth", "id": f"B{i + 1}", "name": f"Berth {i + 1}"}, box(x0, quay_y - depth, x1, quay_y)))
    for i, (x0, y0, x1, y1) in enumerate(stacks):
        feats.append(({"role": "stack_zone", "id": f"Z{i + 1}", "name": f"Stack zone {i + 1}"}, box(x0, y0, x1, y1)))
    for i, (x0, x1, y, gauge) in enumerate(tracks):
        feats.append(({"role": "track", "id": f"T{i + 1}", "gauge_mm": gauge, "name": f"Track {i + 1}"}, LineString([(x0, y), (x1, y)])))
    return turn(site, quarter_turns), [(p, turn(g, quarter_turns)) for p, g in feats]


def rajin_port():
    # Russian-gauge link from Khasan runs behind the container stacks.
    return port(
        900, 550, quay_y=-60,
        berths=[(-380, -140, 38), (-120, 120, 38), (140, 380, 38)],
        stacks=[(-300, -10, -180, 50)],
        tracks=[(-150, 230, 120, 1520), (-150, 230, 120 + TRACK_SPACING_M, 1520)],
        water_name="Rajin harbour basin",
    )


def dunai_port():
    return port(
        700, 450, quay_y=-40,
        berths=[(-240, -10, 36), (10, 240, 36)],
        stacks=[],
        quarter_turns=3,
        water_name="Strelok Bay",
    )


def vostochny_port():
    return port(
        900, 550, quay_y=-80,
        berths=[(-280, -20, 40), (20, 280, 40)],
        stacks=[(-200, -40, -50, 40), (50, -40, 200, 40)],
        water_name="Wrangel Bay",
    )


def chongjin_port():
    return port(
        900, 550, quay_y=-50,
        berths=[(-360, -130, 36), (-115, 115, 36), (130, 360, 36)],
        stacks=[(135, 0, 265, 60)],
        water_name="Chongjin harbour basin",
    )


def tikhoretsk_depot():
    site = box(-300, -200, 300, 200)
    feats = [
        ({"role": "stack_zone", "id": f"Z{i + 1}", "name": f"Stack zone {i + 1}"}, box(x0, 0, x0 + 100, 50))
        for i, x0 in enumerate([-200, -50, 100])
    ]
    feats.append(({"role": "track", "id": "T1", "gauge_mm": 1520, "name": "Depot spur"}, LineString([(-175, -40), (175, -40)])))
    return site, feats


#: id -> (name, reference lon, reference lat, layout)
SITES = {
    "tumangang_railyard": ("Tumangang railyard", 130.618461, 42.417307, tumangang_railyard),
    "khasan_railyard": ("Khasan railyard", 130.6434, 42.4309, khasan_railyard),
    "tumangang_khasan_bridge": ("Tumangang-Khasan Friendship Bridge", 130.641489, 42.415397, tumangang_khasan_bridge),
    "rajin_port": ("Rajin port", 130.3040, 42.2437, rajin_port),
    "dunai_port": ("Dunai port", 132.3500, 42.8875, dunai_port),
    "vostochny_port": ("Vostochny port container terminal", 133.0650, 42.7560, vostochny_port),
    "tikhoretsk_depot": ("Tikhoretsk container depot", 40.1010, 45.8747, tikhoretsk_depot),
    "chongjin_port": ("Chongjin port", 129.8150, 41.7600, chongjin_port),
}


def check(aoi_id: str, site: Polygon, feats) -> None:
    """Fail loudly if a layout breaks the rules the simulator relies on."""
    for props, geom in feats:
        assert geom.is_valid and not geom.is_empty, (aoi_id, props["id"])
        if props["role"] == "water":
            assert site.buffer(1e-6).covers(geom), (aoi_id, props["id"])
        else:
            assert site.buffer(-MARGIN_M).covers(geom), f"{aoi_id} {props['id']} closer than {MARGIN_M} m to the edge"
    minx, miny, maxx, maxy = site.bounds
    assert maxx - minx <= 1000 and maxy - miny <= 1000, aoi_id


def to_lonlat(geom, lon0: float, lat0: float):
    crs = utm_crs_for(lon0, lat0)
    fwd = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    inv = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    x0, y0 = fwd.transform(lon0, lat0)

    def project(xy: np.ndarray) -> np.ndarray:
        lon, lat = inv.transform(xy[:, 0] + x0, xy[:, 1] + y0)
        return np.round(np.column_stack([lon, lat]), 7)

    return shapely.transform(geom, project)


def dumps(fc: dict) -> str:
    """Indented JSON with each [lon, lat] pair kept on one line."""
    text = json.dumps(fc, indent=2)
    return re.sub(r"\[\s+(-?[\d.]+),\s+(-?[\d.]+)\s+\]", r"[\1, \2]", text) + "\n"


def main() -> None:
    for aoi_id, (name, lon0, lat0, layout) in SITES.items():
        site, feats = layout()
        check(aoi_id, site, feats)
        features = [
            {"type": "Feature", "properties": {"role": "site", "id": aoi_id, "name": name},
             "geometry": mapping(to_lonlat(site, lon0, lat0))}
        ]
        for props, geom in feats:
            features.append({"type": "Feature", "properties": props, "geometry": mapping(to_lonlat(geom, lon0, lat0))})
        fc = {"type": "FeatureCollection", "features": features}
        path = OUT / f"{aoi_id}.geojson"
        path.write_text(dumps(json.loads(json.dumps(fc))))
        print(f"wrote {path} ({len(features)} features)")


if __name__ == "__main__":
    main()
