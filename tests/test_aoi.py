"""AOI loading, validation, the shipped registry and the ``aois`` CLI handlers."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import shapely
import yaml

from changedet.aoi import (
    AOI,
    default_registry,
    list_aois,
    load_aoi,
    parse_cadence,
    validate,
)
from changedet.errors import AOIError

SHIPPED = {
    "tumangang_railyard",
    "khasan_railyard",
    "tumangang_khasan_bridge",
    "rajin_port",
    "dunai_port",
    "vostochny_port",
    "tikhoretsk_depot",
    "chongjin_port",
}
#: id -> minimum length (m) of each track, from the site briefs.
MIN_TRACK_M = {
    "tumangang_railyard": 600,
    "khasan_railyard": 450,
    "tumangang_khasan_bridge": 450,
    "rajin_port": 300,
    "tikhoretsk_depot": 300,
}
#: id -> expected feature count per role.
ROLE_COUNTS = {
    "tumangang_railyard": {"track": 5},
    "khasan_railyard": {"track": 4},
    "tumangang_khasan_bridge": {"track": 1, "water": 1},
    "rajin_port": {"water": 1, "berth": 3, "stack_zone": 1, "track": 2},
    "dunai_port": {"water": 1, "berth": 2},
    "vostochny_port": {"water": 1, "berth": 2, "stack_zone": 2},
    "tikhoretsk_depot": {"stack_zone": 3, "track": 1},
    "chongjin_port": {"water": 1, "berth": 3, "stack_zone": 1},
}


def _sides(geom_m) -> tuple[float, float]:
    """(long, short) sides of the minimum rotated rectangle of a projected geometry."""
    ring = shapely.get_coordinates(geom_m.minimum_rotated_rectangle)
    a = shapely.LineString(ring[:2]).length
    b = shapely.LineString(ring[1:3]).length
    return max(a, b), min(a, b)


# -- the shipped registry ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, AOI]:
    return {a.id: a for a in list_aois(Path(__file__).resolve().parents[1] / "aois")}


def test_registry_validates(aoi_dir, monkeypatch):
    monkeypatch.delenv("CHANGEDET_AOIS", raising=False)
    assert default_registry().resolve() == aoi_dir.resolve()
    assert validate() == []
    assert validate(aoi_dir) == []


def test_every_shipped_aoi_loads_and_ids_match_file_names(aoi_dir, shipped):
    assert set(shipped) == SHIPPED
    assert {p.stem for p in aoi_dir.glob("*.yaml")} == SHIPPED
    assert {p.stem for p in aoi_dir.glob("*.geojson")} == SHIPPED
    for aoi_id in SHIPPED:
        aoi = load_aoi(aoi_id, registry=aoi_dir)
        assert aoi.id == aoi_id
        assert aoi.source_path == aoi_dir / f"{aoi_id}.yaml"
        assert validate(aoi_dir / f"{aoi_id}.geojson") == []


def test_shipped_features_per_role(shipped):
    for aoi_id, counts in ROLE_COUNTS.items():
        aoi = shipped[aoi_id]
        got = {r: len(aoi.features_by_role(r)) for r in ("track", "berth", "stack_zone", "water")}
        assert {r: n for r, n in got.items() if n} == counts, aoi_id
        assert len({f.id for f in aoi.features}) == len(aoi.features)


def test_shipped_tracks_have_gauge_and_length(shipped):
    for aoi in shipped.values():
        crs = aoi.utm_crs()
        for t in aoi.features_by_role("track"):
            assert t.geometry.geom_type == "LineString"
            gauge = t.properties["gauge_mm"]
            gauges = gauge if isinstance(gauge, tuple) else (gauge,)
            assert set(gauges) <= {1520, 1435}, (aoi.id, t.id)
            assert aoi.to_crs(t.geometry, crs).length >= MIN_TRACK_M[aoi.id], (aoi.id, t.id)
    tum = shipped["tumangang_railyard"]
    assert [t.properties["gauge_mm"] for t in tum.features_by_role("track")] == [1520, 1520, 1520, 1435, 1435]
    assert shipped["tumangang_khasan_bridge"].feature("T1").properties["gauge_mm"] == (1520, 1435)
    assert all(t.properties["gauge_mm"] == 1520 for t in shipped["khasan_railyard"].features_by_role("track"))


def test_shipped_parallel_tracks_are_5_3_m_apart(shipped):
    for aoi_id in ("tumangang_railyard", "khasan_railyard", "rajin_port"):
        aoi = shipped[aoi_id]
        crs = aoi.utm_crs()
        lines = [aoi.to_crs(t.geometry, crs) for t in aoi.features_by_role("track")]
        for a, b in zip(lines, lines[1:]):
            # distance between the two lines' midpoints, measured across the tracks
            mid = a.interpolate(0.5, normalized=True)
            assert b.distance(mid) == pytest.approx(5.3, abs=0.05), aoi_id


def test_shipped_features_inside_site_with_margin(shipped):
    for aoi in shipped.values():
        crs = aoi.utm_crs()
        site = aoi.to_crs(aoi.polygon, crs)
        long_side, short_side = _sides(site)
        assert long_side <= 1000 and short_side <= 600, aoi.id  # small scenes simulate fast
        for f in aoi.features:
            g = aoi.to_crs(f.geometry, crs)
            if f.role == "water":  # clipped to the site by design
                assert site.buffer(1.0).covers(g), (aoi.id, f.id)
            else:
                assert site.buffer(-14.9).covers(g), (aoi.id, f.id)


def test_shipped_berths_and_stacks_are_plausible(shipped):
    for aoi in shipped.values():
        crs = aoi.utm_crs()
        water = shapely.union_all([aoi.to_crs(w.geometry, crs) for w in aoi.features_by_role("water")])
        for b in aoi.features_by_role("berth"):
            g = aoi.to_crs(b.geometry, crs)
            long_side, short_side = _sides(g)
            assert 219 <= long_side <= 261 and 34.5 <= short_side <= 40.5, (aoi.id, b.id)
            assert water.buffer(1.0).covers(g), (aoi.id, b.id)  # the ship moors on water
        for z in aoi.features_by_role("stack_zone"):  # paved land, never on the water
            assert not aoi.to_crs(z.geometry, crs).intersects(water.buffer(-1.0)), (aoi.id, z.id)
    expected = {"vostochny_port": (150, 80), "tikhoretsk_depot": (100, 50), "rajin_port": (120, 60)}
    for aoi_id, size in expected.items():
        aoi = shipped[aoi_id]
        for z in aoi.features_by_role("stack_zone"):
            assert _sides(aoi.to_crs(z.geometry, aoi.utm_crs())) == pytest.approx(size, abs=1), (aoi_id, z.id)


def test_bridge_track_crosses_the_river(shipped):
    aoi = shipped["tumangang_khasan_bridge"]
    crs = aoi.utm_crs()
    track = aoi.to_crs(aoi.feature("T1").geometry, crs)
    river = aoi.to_crs(aoi.feature("W1").geometry, crs)
    assert track.intersection(river).length == pytest.approx(200, abs=2)
    assert aoi.cadence_days == 1 and aoi.kind == "crossing"


def test_shipped_plans(shipped):
    tz = {a.id: a.timezone for a in shipped.values()}
    assert tz["tumangang_railyard"] == tz["rajin_port"] == tz["chongjin_port"] == "Asia/Pyongyang"
    assert tz["tikhoretsk_depot"] == "Europe/Moscow"
    assert tz["khasan_railyard"] == tz["dunai_port"] == tz["vostochny_port"] == "Asia/Vladivostok"
    for aoi in shipped.values():
        assert aoi.approximate and aoi.notes
        assert aoi.sources[0].name == "simulator" and aoi.sources[0].sensor == "vhr"
        assert aoi.cadence == ("daily" if aoi.id == "tumangang_khasan_bridge" else "weekly")
        assert set(aoi.recipients) == {"slack", "email"}
        for rule in aoi.rules:
            assert rule.metric in aoi.metrics and set(rule.channels) <= set(aoi.recipients)
    tum = shipped["tumangang_railyard"]
    assert tum.sources[0].resolution_m == 0.5
    assert tum.sources[1].options["collection"] == "sentinel-2-l2a"
    assert [r.kind for r in tum.rules] == ["robust_z", "historical_max"]
    assert dict(tum.rules[0].params) == {"window_days": 120, "k": 5.0, "min_history": 6, "min_delta": 10}
    assert shipped["rajin_port"].sources[0].resolution_m == 1.0
    assert {(r.metric, r.kind) for r in shipped["vostochny_port"].rules} == {("containers_teu", "trend"), ("ships", "robust_z")}
    tik = {r.metric: r for r in shipped["tikhoretsk_depot"].rules}
    assert tik["containers_teu"].kind == "trend" and tik["containers_teu"].severity == "high"


def test_aoi_geometry_helpers(shipped):
    aoi = shipped["tumangang_railyard"]
    lon, lat = aoi.centroid_lonlat
    assert lon == pytest.approx(130.618461, abs=1e-3) and lat == pytest.approx(42.417307, abs=1e-3)
    assert aoi.utm_crs().to_epsg() == 32652
    assert shipped["tikhoretsk_depot"].utm_crs().to_epsg() == 32637
    site_m = aoi.to_crs(aoi.polygon, "EPSG:32652")
    assert 0.01e6 < site_m.area < 1e6
    assert aoi.features_by_role("berth") == ()
    with pytest.raises(AOIError, match="no feature 'X9'"):
        aoi.feature("X9")


def test_aoi_is_immutable(shipped):
    aoi = shipped["tumangang_railyard"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        aoi.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        aoi.recipients["sms"] = ("x",)  # type: ignore[index]
    with pytest.raises(TypeError):
        aoi.features[0].properties["gauge_mm"] = 1435  # type: ignore[index]
    assert isinstance(aoi.features, tuple) and isinstance(aoi.rules[0].channels, tuple)
    # usable as cache keys despite the read-only mapping fields
    assert len({aoi, aoi, *aoi.features, *aoi.sources, *aoi.rules}) == 1 + 5 + 2 + 2
    assert load_aoi(aoi.source_path) == aoi and hash(load_aoi(aoi.source_path)) == hash(aoi)


def test_parse_cadence():
    assert parse_cadence("daily") == 1
    assert parse_cadence("weekly") == 7
    assert parse_cadence("14d") == 14
    assert parse_cadence("366d") == 366
    for bad in ("0d", "367d", "2w", "7", 7, None, "Weekly"):
        assert parse_cadence(bad) is None


# -- loading by id or path ------------------------------------------------------------------------


def test_load_by_path_finds_the_sibling(aoi_dir):
    by_geojson = load_aoi(aoi_dir / "rajin_port.geojson")
    by_yaml = load_aoi(str(aoi_dir / "rajin_port.yaml"))
    assert by_geojson.id == by_yaml.id == "rajin_port"
    assert by_geojson.source_path == aoi_dir / "rajin_port.yaml"


def test_unknown_id_lists_known_ones(aoi_dir):
    with pytest.raises(AOIError, match=r"no AOI 'rajin_prot'.*did you mean 'rajin_port'"):
        load_aoi("rajin_prot", registry=aoi_dir)


def test_registry_from_environment(tmp_path, aoi_dir, monkeypatch):
    for ext in ("yaml", "geojson"):
        shutil.copy(aoi_dir / f"dunai_port.{ext}", tmp_path / f"dunai_port.{ext}")
    monkeypatch.setenv("CHANGEDET_AOIS", str(tmp_path))
    assert default_registry() == tmp_path
    assert [a.id for a in list_aois()] == ["dunai_port"]
    assert load_aoi("dunai_port").source_path == tmp_path / "dunai_port.yaml"


def test_list_aois_raises_on_any_invalid_aoi(tmp_path, aoi_dir):
    for stem in ("dunai_port", "rajin_port"):
        for ext in ("yaml", "geojson"):
            shutil.copy(aoi_dir / f"{stem}.{ext}", tmp_path / f"{stem}.{ext}")
    (tmp_path / "rajin_port.yaml").write_text((aoi_dir / "rajin_port.yaml").read_text().replace("kind: port", "kind: harbour"))
    with pytest.raises(AOIError, match="rajin_port.yaml: unknown kind 'harbour'"):
        list_aois(tmp_path)


def test_empty_registry_is_an_error(tmp_path):
    errors = validate(tmp_path)
    assert len(errors) == 1 and "no AOIs found" in str(errors[0])
    with pytest.raises(AOIError):
        list_aois(tmp_path)


def test_several_problems_are_all_reported(tmp_path, aoi_dir):
    doc = yaml.safe_load((aoi_dir / "tumangang_railyard.yaml").read_text())
    doc["kind"] = "rail"
    doc["timezone"] = "Mars/Olympus"
    doc["cadence"] = "hourly"
    shutil.copy(aoi_dir / "tumangang_railyard.geojson", tmp_path)
    (tmp_path / "tumangang_railyard.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    errors = validate(tmp_path)
    assert len(errors) == 3
    with pytest.raises(AOIError, match=r"3 problems in AOI 'tumangang_railyard'"):
        load_aoi("tumangang_railyard", registry=tmp_path)


# -- bad inputs -------------------------------------------------------------------------------------


def _site(fc):
    return next(f for f in fc["features"] if f["properties"]["role"] == "site")


def _feat(fc, fid):
    return next(f for f in fc["features"] if f["properties"]["role"] != "site" and f["properties"]["id"] == fid)


def _swap(coords):
    if isinstance(coords[0], (int, float)):
        return [coords[1], coords[0]]
    return [_swap(c) for c in coords]


def _scale_site(factor):
    def mutate(doc, fc):
        g = _site(fc)["geometry"]
        ring = g["coordinates"][0]
        cx = sum(p[0] for p in ring[:-1]) / 4
        cy = sum(p[1] for p in ring[:-1]) / 4
        g["coordinates"] = [[[cx + (x - cx) * factor, cy + (y - cy) * factor] for x, y in ring]]

    return mutate


def _bow_tie(doc, fc):
    ring = _site(fc)["geometry"]["coordinates"][0]
    _site(fc)["geometry"]["coordinates"] = [[ring[0], ring[2], ring[1], ring[3], ring[0]]]


def _swap_all(doc, fc):
    for f in fc["features"]:
        f["geometry"]["coordinates"] = _swap(f["geometry"]["coordinates"])


def _track_polygon(doc, fc):
    (a, b) = _feat(fc, "T1")["geometry"]["coordinates"]
    _feat(fc, "T1")["geometry"] = {"type": "Polygon", "coordinates": [[a, b, [b[0], b[1] + 1e-4], a]]}


def _shift(fid, dlon):
    def mutate(doc, fc):
        g = _feat(fc, fid)["geometry"]
        g["coordinates"] = [[x + dlon, y] for x, y in g["coordinates"]]

    return mutate


def _berth_on_land(doc, fc):
    _feat(fc, "B1")["geometry"]["coordinates"] = _feat(fc, "Z1")["geometry"]["coordinates"]


# (name, base AOI, mutate(doc, fc), raw yaml text or None, raw geojson text or None, fragments)
BAD = [
    ("yaml syntax", "tumangang_railyard", None, "id: tumangang_railyard\nname: [unclosed\nkind: railyard\n", None,
     ["tumangang_railyard.yaml: line 3", "invalid YAML", "fix the syntax there"]),
    ("duplicate yaml key", "tumangang_railyard", None,
     "id: tumangang_railyard\nkind: railyard\nkind: port\n", None, ["tumangang_railyard.yaml: line 3", "duplicate key 'kind'"]),
    ("yaml not a mapping", "tumangang_railyard", None, "- id\n- name\n", None,
     ["tumangang_railyard.yaml: top level is a list, not a mapping"]),
    ("empty yaml", "tumangang_railyard", None, "# nothing yet\n", None, ["tumangang_railyard.yaml: file is empty"]),
    ("missing key", "tumangang_railyard", lambda d, f: d.pop("timezone"), None, None,
     ["tumangang_railyard.yaml: missing required key 'timezone'; add it"]),
    ("unknown top-level key", "tumangang_railyard", lambda d, f: d.update(cadance="weekly"), None, None,
     ["unknown key 'cadance' (did you mean 'cadence'?)"]),
    ("unknown kind", "tumangang_railyard", lambda d, f: d.update(kind="railway"), None, None,
     ["tumangang_railyard.yaml: unknown kind 'railway' (did you mean 'railyard'?); use one of: railyard"]),
    ("yaml id vs file name", "tumangang_railyard", lambda d, f: d.update(id="tumangang"), None, None,
     ["id 'tumangang' does not match the file name 'tumangang_railyard.yaml'; rename the file"]),
    ("unknown source", "tumangang_railyard", lambda d, f: d["sources"][0].update(name="planet"), None, None,
     ["tumangang_railyard.yaml: source #1: unknown source name 'planet'", "use one of: simulator, sentinelhub, stac, local"]),
    ("unknown sensor", "tumangang_railyard", lambda d, f: d["sources"][1].update(sensor="s3"), None, None,
     ["source #2: unknown sensor 's3'", "use one of: vhr, s2, s1"]),
    ("zero resolution", "tumangang_railyard", lambda d, f: d["sources"][0].update(resolution_m=0), None, None,
     ["source #1: resolution_m must be a positive number of metres, not 0"]),
    ("negative resolution", "tumangang_railyard", lambda d, f: d["sources"][0].update(resolution_m=-0.5), None, None,
     ["resolution_m must be a positive number"]),
    ("duplicate rule id", "tumangang_railyard", lambda d, f: d["rules"][1].update(id="railcar_surge"), None, None,
     ["tumangang_railyard.yaml: duplicate rule id 'railcar_surge'", "give each rule a unique id"]),
    ("channel not in recipients", "tumangang_railyard", lambda d, f: d["rules"][0].update(channels=["slack", "sms"]), None, None,
     ["rule 'railcar_surge': channel 'sms' is not in recipients", "add recipients.sms or remove it from channels"]),
    ("unknown rule kind", "tumangang_railyard", lambda d, f: d["rules"][0].update(kind="zscore"), None, None,
     ["rule 'railcar_surge': unknown rule kind 'zscore'", "use one of: robust_z, historical_max, trend"]),
    ("param typo", "tumangang_railyard", lambda d, f: d["rules"][0]["params"].update(windw_days=3), None, None,
     ["unknown parameter 'windw_days' (did you mean 'window_days'?)"]),
    ("unknown metric", "tumangang_railyard", lambda d, f: d.update(metrics=["railcars", "trains"]), None, None,
     ["tumangang_railyard.yaml: unknown metric 'trains'", "or railcars_<type>"]),
    ("rule metric not monitored", "tumangang_railyard", lambda d, f: d.update(metrics=["changed_area_m2"]), None, None,
     ["rule 'railcar_surge': metric 'railcars' is not in metrics; add it to metrics"]),
    ("metric without its features", "dunai_port", lambda d, f: d["metrics"].append("railcars"), None, None,
     ["dunai_port.yaml: metric 'railcars' needs a feature with role track in dunai_port.geojson"]),
    ("bad cadence", "tumangang_railyard", lambda d, f: d.update(cadence="fortnightly"), None, None,
     ["tumangang_railyard.yaml: bad cadence 'fortnightly'", 'use daily, weekly or "<N>d"']),
    ("cadence out of range", "tumangang_railyard", lambda d, f: d.update(cadence="400d"), None, None,
     ["bad cadence '400d'"]),
    ("unknown timezone", "tumangang_railyard", lambda d, f: d.update(timezone="Asia/Pyongyan"), None, None,
     ["tumangang_railyard.yaml: unknown timezone 'Asia/Pyongyan'", "use an IANA name"]),
    ("invalid json", "tumangang_railyard", None, None, '{"type": "FeatureCollection", "features": [}\n',
     ["tumangang_railyard.geojson: line 1", "invalid JSON", "fix the syntax there"]),
    ("not a feature collection", "tumangang_railyard", lambda d, f: f.update(type="Feature"), None, None,
     ["tumangang_railyard.geojson: is a 'Feature', not a FeatureCollection; wrap the features"]),
    ("projected crs member", "tumangang_railyard",
     lambda d, f: f.update(crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}}), None, None,
     ["tumangang_railyard.geojson: declares crs 'urn:ogc:def:crs:EPSG::3857'", "EPSG:4326/CRS84", "reproject"]),
    ("feature crs member", "tumangang_railyard",
     lambda d, f: _feat(f, "T2").update(crs={"type": "name", "properties": {"name": "EPSG:32652"}}), None, None,
     ["tumangang_railyard.geojson: feature 'T2' declares crs 'EPSG:32652'"]),
    ("bow-tie site", "tumangang_railyard", _bow_tie, None, None,
     ["tumangang_railyard.geojson: site polygon (feature #1) has an invalid geometry (Self-intersection", "bow-tie"]),
    ("lat/lon swapped", "tumangang_railyard", _swap_all, None, None,
     ["tumangang_railyard.geojson: site polygon (feature #1): coordinates look like (lat, lon); GeoJSON wants (lon, lat)",
      "feature 'T1': coordinates look like (lat, lon)"]),
    ("one feature swapped (in range)", "tikhoretsk_depot", lambda d, f: _feat(f, "Z2")["geometry"].update(
        coordinates=_swap(_feat(f, "Z2")["geometry"]["coordinates"])), None, None,
     ["tikhoretsk_depot.geojson: feature 'Z2': coordinates look like (lat, lon); GeoJSON wants (lon, lat)"]),
    ("feature outside site", "tumangang_railyard", _shift("T4", 0.01), None, None,
     ["tumangang_railyard.geojson: feature 'T4' lies outside the site polygon (by up to", "move it inside or enlarge the site"]),
    ("track as polygon", "tumangang_railyard", _track_polygon, None, None,
     ["tumangang_railyard.geojson: feature 'T1' is a Polygon but a track must be a LineString"]),
    ("duplicate feature id", "tumangang_railyard", lambda d, f: _feat(f, "T2")["properties"].update(id="T1"), None, None,
     ["tumangang_railyard.geojson: duplicate feature id 'T1'", "give each feature a unique id"]),
    ("no site", "tumangang_railyard", lambda d, f: f["features"].remove(_site(f)), None, None,
     ["tumangang_railyard.geojson: no site polygon; add a Feature with properties"]),
    ("two sites", "tumangang_railyard", lambda d, f: f["features"].append(copy.deepcopy(_site(f))), None, None,
     ["tumangang_railyard.geojson: 2 site polygons (features #1, #7)", "keep exactly one"]),
    ("site id mismatch", "tumangang_railyard", lambda d, f: _site(f)["properties"].update(id="tumangang"), None, None,
     ["tumangang_railyard.geojson: site id 'tumangang' does not match id 'tumangang_railyard' in tumangang_railyard.yaml"]),
    ("track without gauge", "tumangang_railyard", lambda d, f: _feat(f, "T3")["properties"].pop("gauge_mm"), None, None,
     ["feature 'T3' is a track without gauge_mm; add gauge_mm: 1520"]),
    ("bad gauge", "tumangang_railyard", lambda d, f: _feat(f, "T3")["properties"].update(gauge_mm="wide"), None, None,
     ["feature 'T3' has gauge_mm 'wide'"]),
    ("unknown role", "tumangang_railyard", lambda d, f: _feat(f, "T3")["properties"].update(role="tracks"), None, None,
     ["feature 'T3' has role 'tracks' (did you mean 'track'?)"]),
    ("site too large", "tumangang_railyard", _scale_site(20), None, None,
     ["tumangang_railyard.geojson: site polygon is implausibly large", "draw only the site"]),
    ("site too small", "tumangang_railyard", _scale_site(0.1), None, None,
     ["tumangang_railyard.geojson: site polygon is implausibly small", "check the coordinates"]),
    ("berth on land", "rajin_port", _berth_on_land, None, None,
     ["rajin_port.geojson: berth 'B1' does not touch any water polygon; move it onto the water side"]),
]


def _write_case(tmp_path: Path, aoi_dir: Path, base: str, mutate, raw_yaml, raw_geojson) -> Path:
    doc = yaml.safe_load((aoi_dir / f"{base}.yaml").read_text())
    fc = json.loads((aoi_dir / f"{base}.geojson").read_text())
    if mutate is not None:
        mutate(doc, fc)
    (tmp_path / f"{base}.yaml").write_text(raw_yaml if raw_yaml is not None else yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / f"{base}.geojson").write_text(raw_geojson if raw_geojson is not None else json.dumps(fc, indent=1))
    return tmp_path / f"{base}.yaml"


@pytest.mark.parametrize("name, base, mutate, raw_yaml, raw_geojson, fragments", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_rejected(tmp_path, aoi_dir, name, base, mutate, raw_yaml, raw_geojson, fragments):
    path = _write_case(tmp_path, aoi_dir, base, mutate, raw_yaml, raw_geojson)
    errors = validate(path)
    assert errors, f"{name} was accepted"
    assert all(isinstance(e, AOIError) for e in errors)
    text = "\n".join(str(e) for e in errors)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    # validate() on the directory finds the same problems; load_aoi raises them
    assert [str(e) for e in validate(tmp_path)] == [str(e) for e in errors]
    with pytest.raises(AOIError) as info:
        load_aoi(path)
    assert fragments[0] in str(info.value)


@pytest.mark.parametrize("missing", ["yaml", "geojson"])
def test_missing_sibling(tmp_path, aoi_dir, missing):
    present = "geojson" if missing == "yaml" else "yaml"
    shutil.copy(aoi_dir / f"dunai_port.{present}", tmp_path)
    errors = validate(tmp_path / f"dunai_port.{present}")
    assert len(errors) == 1
    assert f"dunai_port.{present}: sibling dunai_port.{missing} is missing; create it next to the" in str(errors[0])
    assert [str(e) for e in validate(tmp_path)] == [str(e) for e in errors]


def test_crs84_member_is_accepted(tmp_path, aoi_dir):
    def add_crs(doc, fc):
        fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}

    path = _write_case(tmp_path, aoi_dir, "rajin_port", add_crs, None, None)
    assert validate(path) == []


@pytest.mark.parametrize(
    "geojson",
    [
        "42",
        '{"type": "FeatureCollection", "features": 5}',
        '{"type": "FeatureCollection", "features": [1, {"type": "Feature"}]}',
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"role": "site", "id": "x"}, "geometry": null}]}',
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"role": "site", "id": "x"},'
        ' "geometry": {"type": "Polygon", "coordinates": [[["a", "b"]]]}}]}',
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"role": "site", "id": "x"},'
        ' "geometry": {"type": "Polygon", "coordinates": [[[1, 2], [3, 4]]]}}]}',
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"role": ["site"], "id": {}},'
        ' "geometry": {"type": "GeometryCollection", "geometries": []}}]}',
    ],
)
@pytest.mark.parametrize("yaml_text", ["", "id: x\nkind: [port]\nsources: 3\nrules: [{kind: [1]}, 7]\nrecipients: [a]\n"])
def test_validate_never_raises_on_garbage(tmp_path, geojson, yaml_text):
    (tmp_path / "x.yaml").write_text(yaml_text)
    (tmp_path / "x.geojson").write_text(geojson)
    errors = validate(tmp_path / "x.yaml")
    assert errors and all(isinstance(e, AOIError) for e in errors)
    assert not any("unexpected error" in str(e) for e in errors), errors


# -- CLI handlers -------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    from changedet.cli.aois import add_parser

    parser = argparse.ArgumentParser(prog="changedet")
    add_parser(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return args.func(args)

    return run


def test_cli_list(cli, capsys, aoi_dir):
    assert cli("aois", "list", "--registry", str(aoi_dir)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ID", "KIND", "NAME", "FEATURES", "SOURCES", "CADENCE"]
    for aoi_id in SHIPPED:
        assert aoi_id in out
    assert "5 track" in out and "vhr@0.5m" in out and "3 berth, 1 stack_zone, 1 water" in out

    assert cli("aois", "list", "--json", "--registry", str(aoi_dir)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == sorted(SHIPPED)
    rajin = next(r for r in rows if r["id"] == "rajin_port")
    assert rajin["features"] == {"track": 2, "berth": 3, "stack_zone": 1, "water": 1}
    assert rajin["sources"][0] == {"name": "simulator", "sensor": "vhr", "resolution_m": 1.0}


def test_cli_show(cli, capsys, aoi_dir):
    assert cli("aois", "show", "tumangang_khasan_bridge", "--registry", str(aoi_dir)) == 0
    out = capsys.readouterr().out
    assert "Tumangang-Khasan Friendship Bridge" in out
    assert "Asia/Vladivostok" in out and "daily (every 1 day)" in out
    assert "gauge 1520/1435 mm (dual)" in out and "500 m" in out
    assert "W1" in out and "m²" in out
    assert "railcar_surge [high -> slack, email]: alert when metric railcars is more than 5 robust" in out

    assert cli("aois", "show", str(aoi_dir / "rajin_port.geojson"), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == "rajin_port" and data["utm_epsg"] == 32652
    tracks = [f for f in data["features"] if f["role"] == "track"]
    assert all(f["length_m"] >= 300 and f["properties"]["gauge_mm"] == 1520 for f in tracks)
    assert data["rules"][0]["params"] == {"window_days": 120, "k": 4.0, "min_history": 6, "min_delta": 2}
    assert data["recipients"] == {"slack": ["#changedet-alerts"], "email": ["analyst@example.org"]}


def test_cli_show_unknown_id_raises(cli, aoi_dir):
    with pytest.raises(AOIError, match="no AOI 'nowhere'"):
        cli("aois", "show", "nowhere", "--registry", str(aoi_dir))


def test_cli_validate(cli, capsys, tmp_path, aoi_dir, monkeypatch):
    monkeypatch.setenv("CHANGEDET_AOIS", str(aoi_dir))
    assert cli("aois", "validate") == 0
    assert capsys.readouterr().out.strip() == "OK 8 AOIs"
    assert cli("aois", "validate", str(aoi_dir / "khasan_railyard.yaml")) == 0
    assert capsys.readouterr().out.strip() == "OK 1 AOI"

    _write_case(tmp_path, aoi_dir, "khasan_railyard", lambda d, f: d.update(cadence="often", timezone="Nowhere"), None, None)
    assert cli("aois", "validate", str(tmp_path)) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("ERROR ") for line in lines[:2])
    assert "bad cadence 'often'" in "".join(lines) and "unknown timezone 'Nowhere'" in "".join(lines)
    assert lines[-1] == f"FAILED: 2 problems in {tmp_path}"
