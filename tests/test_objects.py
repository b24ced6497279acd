"""Object counters measured against the simulator's ground truth.

The scenes here are held out of counter tuning: seeds 11, 12 and 13 on dates picked
from the 2023 season (never the seeds 21/22 of ``bench/bench_slice.py``). Each scene is
put back on the AOI grid with the *recorded* misregistration (so these tests measure
the counters, not co-registration), the cloud mask is passed as ``valid`` and the sun
position comes from the truth. Scenes with more than 2 % cloud are skipped, chosen
cheaply with ``conditions()`` before rendering.

Run with ``pytest -s`` to see the per-scene figures.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import date

import numpy as np
import pytest
import pyproj
import shapely
from scipy import ndimage
from shapely.geometry import shape
from shapely.strtree import STRtree

from changedet.aoi import default_registry, load_aoi
from changedet.objects.common import CountResult
from changedet.objects.containers import count_containers
from changedet.objects.railcars import count_railcars
from changedet.objects.ships import count_ships
from changedet.simulate.render import SimScene, conditions, render_scene
from changedet.simulate.scenario import scenario_for

MAX_CLOUD = 0.02
DATES = (date(2023, 6, 10), date(2023, 8, 3), date(2023, 9, 29), date(2023, 10, 20))
# Container tiers need shadows on open pavement: only dates with the sun above 40 degrees.
CONTAINER_DATES = (date(2023, 6, 10), date(2023, 7, 5), date(2023, 8, 21), date(2023, 9, 2))

RAILCAR_MAPE_MAX = 0.10       # foundation target (a later issue tightens it to 0.05)
RAILCAR_F1_MIN = 0.70         # per-car detection F1 at IoU >= 0.3
CONTAINER_MAPE_MAX = 0.25
SHIP_LENGTH_TOL = 0.10


# ----------------------------------------------------------------------------- helpers
def _clear_scenes(aoi_id: str, seeds, dates, *, sensor: str = "vhr", min_sun: float | None = None):
    """(seed, date) pairs whose drawn conditions are clear enough, without rendering."""
    aoi = load_aoi(aoi_id)
    sc = scenario_for(aoi_id, default_registry())
    out = []
    for seed in seeds:
        for day in dates:
            cond = conditions(aoi, day, sensor, seed=seed, scenario=sc)
            if cond.cloud_fraction > MAX_CLOUD:
                continue
            if min_sun is not None and cond.sun_elevation <= min_sun:
                continue
            out.append((seed, day))
    return out


def _aligned(sc: SimScene):
    """The scene's pixels moved back onto the true grid with its recorded shift."""
    sh = sc.truth["applied_shift_px"]
    # Band by band: a 3-D shift would also spline-filter across the band axis (10x slower).
    data = np.stack([ndimage.shift(b, (-sh["row"], -sh["col"]), order=3, mode="nearest") for b in sc.data])
    image = sc.grid.attach(data, bands=list(sc.bands))
    valid = sc.grid.attach(~sc.cloud_mask) if sc.cloud_mask is not None else None
    return image, valid


def _sun(sc: SimScene) -> dict[str, float]:
    return {"sun_azimuth_deg": sc.truth["sun"]["azimuth_deg"],
            "sun_elevation_deg": sc.truth["sun"]["elevation_deg"]}


def _features(aoi, role: str, crs) -> dict:
    return {f.id: aoi.to_crs(f.geometry, crs) for f in aoi.features_by_role(role)}


def _truth_polygons(sc: SimScene, kind: str) -> list:
    return [shape(o["polygon"]) for o in sc.truth["objects"] if o["kind"] == kind]


def _match(dets: list, truths: list, min_iou: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by decreasing IoU: (detection, truth, iou) pairs."""
    if not dets or not truths:
        return []
    tree = STRtree(truths)
    pairs = []
    for i, d in enumerate(dets):
        for j in tree.query(d):
            t = truths[int(j)]
            inter = d.intersection(t).area
            if inter > 0:
                pairs.append((inter / d.union(t).area, i, int(j)))
    pairs.sort(reverse=True)
    used_d, used_t, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < min_iou or i in used_d or j in used_t:
            continue
        used_d.add(i)
        used_t.add(j)
        out.append((i, j, iou))
    return out


def _ape(estimate: float, truth: float) -> float:
    return abs(estimate - truth) / max(truth, 1)


# --------------------------------------------------------------------------- railcars
RAILCAR_CASES = [(aoi_id, seed, day) for aoi_id in ("tumangang_railyard", "khasan_railyard")
                 for seed, day in _clear_scenes(aoi_id, (11, 12), DATES)]


@pytest.fixture(scope="module")
def railcar_runs():
    """Count railcars on every held-out clear scene: one row per scene."""
    rows = []
    for aoi_id, seed, day in RAILCAR_CASES:
        aoi = load_aoi(aoi_id)
        sc = render_scene(aoi, day, "vhr", seed=seed)
        image, valid = _aligned(sc)
        tracks = _features(aoi, "track", sc.grid.crs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = count_railcars(image, tracks, valid=valid, **_sun(sc))
        truth = _truth_polygons(sc, "railcar")
        assert len(truth) == sc.truth["counts"]["railcars"]
        tp = len(_match([d.polygon for d in res.detections], truth, 0.3))
        rows.append({"aoi": aoi_id, "seed": seed, "date": day.isoformat(), "truth": len(truth),
                     "estimate": res.total, "tp": tp, "n_det": len(res.detections),
                     "sun_el": sc.truth["sun"]["elevation_deg"], "result": res})
    return rows


@pytest.mark.slow
def test_railcar_count_error_on_held_out_scenes(railcar_runs):
    assert len(railcar_runs) >= 6, "too few clear held-out scenes"
    print("\nrailcars (VHR 0.5 m), held-out scenes")
    print(f"{'aoi':<20} {'seed':>4} {'date':<10} {'sun':>5} {'truth':>5} {'est':>5} {'APE':>6}")
    apes = []
    for r in railcar_runs:
        ape = _ape(r["estimate"], r["truth"])
        apes.append(ape)
        print(f"{r['aoi']:<20} {r['seed']:>4} {r['date']:<10} {r['sun_el']:>5.1f} {r['truth']:>5} "
              f"{r['estimate']:>5} {ape:>6.3f}")
    mape = float(np.mean(apes))
    by_aoi = {a: float(np.mean([x for x, r in zip(apes, railcar_runs) if r["aoi"] == a]))
              for a in sorted({r["aoi"] for r in railcar_runs})}
    print(f"railcar MAPE {mape:.3f} over {len(apes)} scenes; max APE {max(apes):.3f}; by AOI "
          + ", ".join(f"{a} {v:.3f}" for a, v in by_aoi.items()))
    assert mape <= RAILCAR_MAPE_MAX


@pytest.mark.slow
def test_railcar_detections_match_truth_polygons(railcar_runs):
    tp = sum(r["tp"] for r in railcar_runs)
    n_det = sum(r["n_det"] for r in railcar_runs)
    n_truth = sum(r["truth"] for r in railcar_runs)
    precision, recall = tp / max(n_det, 1), tp / max(n_truth, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    per_scene = [2 * r["tp"] / max(r["n_det"] + r["truth"], 1) for r in railcar_runs]
    print(f"\nrailcar detection at IoU>=0.3: precision {precision:.3f} recall {recall:.3f} F1 {f1:.3f}; "
          f"per-scene F1 min {min(per_scene):.3f} median {float(np.median(per_scene)):.3f}")
    assert f1 >= RAILCAR_F1_MIN
    assert min(per_scene) >= 0.5


def test_count_result_json_contract(railcar_runs):
    busy = max(railcar_runs, key=lambda r: r["truth"])
    res: CountResult = busy["result"]
    out = res.to_json()
    json.dumps(out)  # serialisable as is
    for key in ("total", "by_type", "per_feature", "detections"):
        assert key in out
    assert out["total"] == len(res.detections) > 0
    assert sum(out["by_type"].values()) == out["total"]
    assert {p["id"] for p in out["per_feature"]} == {f.id for f in load_aoi(busy["aoi"]).features_by_role("track")}
    for p in out["per_feature"]:
        assert {"id", "count", "by_type"} <= set(p)
        assert sum(p["by_type"].values()) == p["count"]
    assert sum(p["count"] for p in out["per_feature"]) == out["total"]
    for d in out["detections"]:
        assert {"type", "polygon", "score"} <= set(d)
        assert d["polygon"]["type"] == "Polygon"
        assert 0.0 <= d["score"] <= 1.0
        assert shape(d["polygon"]).is_valid
    # Map units (UTM metres) by default ...
    x, y = out["detections"][0]["polygon"]["coordinates"][0][0]
    assert abs(x) > 1000 and abs(y) > 1000
    # ... lon/lat (in that order) on request.
    ll = res.to_json(to_crs="EPSG:4326")
    json.dumps(ll)
    lon0, lat0 = load_aoi(busy["aoi"]).centroid_lonlat
    for d in ll["detections"]:
        for lon, lat in d["polygon"]["coordinates"][0]:
            assert abs(lon - lon0) < 0.05 and abs(lat - lat0) < 0.05
    assert ll["total"] == out["total"]


# ------------------------------------------------------------------------- containers
CONTAINER_CASES = _clear_scenes("tikhoretsk_depot", (11, 12), CONTAINER_DATES, min_sun=40.0)


@pytest.mark.slow
def test_container_teu_error_on_held_out_scenes():
    assert len(CONTAINER_CASES) >= 5, "too few clear high-sun held-out scenes"
    aoi = load_aoi("tikhoretsk_depot")
    print("\ncontainers (tikhoretsk_depot, VHR 0.5 m), held-out scenes")
    print(f"{'seed':>4} {'date':<10} {'sun':>5} {'truth':>6} {'est':>7} {'+-1sd':>6} {'err':>7}")
    errs = []
    for seed, day in CONTAINER_CASES:
        sc = render_scene(aoi, day, "vhr", seed=seed)
        image, valid = _aligned(sc)
        res = count_containers(image, _features(aoi, "stack_zone", sc.grid.crs), valid=valid, **_sun(sc))
        truth = sc.truth["counts"]["containers_teu"]
        assert truth == sum(o["teu"] for o in sc.truth["objects"] if o["kind"] == "container")
        err = (res.total - truth) / max(truth, 1)
        errs.append(err)
        print(f"{seed:>4} {day.isoformat():<10} {sc.truth['sun']['elevation_deg']:>5.1f} {truth:>6} "
              f"{res.total:>7.1f} {res.uncertainty:>6.1f} {err:>+7.3f}")
        assert res.uncertainty is not None and res.uncertainty > 0
        assert res.kind == "containers" and res.by_type["teu"] == res.total
    mape = float(np.mean(np.abs(errs)))
    print(f"container TEU MAPE {mape:.3f} over {len(errs)} scenes; mean signed error {np.mean(errs):+.3f}; "
          f"max APE {np.max(np.abs(errs)):.3f}")
    assert mape <= CONTAINER_MAPE_MAX


# ------------------------------------------------------------------------------ ships
SHIP_CASES = [(aoi_id, seed, day) for aoi_id in ("vostochny_port", "dunai_port")
              for seed, day in _clear_scenes(aoi_id, (11, 13), DATES)]


@pytest.mark.slow
def test_ship_counts_and_lengths_on_clear_scenes():
    assert len(SHIP_CASES) >= 6
    print("\nships (VHR at 1.0 m), held-out scenes")
    rel_errs = []
    for aoi_id, seed, day in SHIP_CASES:
        aoi = load_aoi(aoi_id)
        sc = render_scene(aoi, day, "vhr", seed=seed, resolution_m=1.0)
        image, valid = _aligned(sc)
        crs = sc.grid.crs
        water = shapely.union_all(list(_features(aoi, "water", crs).values()))
        res = count_ships(image, _features(aoi, "berth", crs), water=water, valid=valid)
        truth = [o for o in sc.truth["objects"] if o["kind"] == "ship"]
        assert len(truth) == sc.truth["counts"]["ships"]
        pairs = _match([d.polygon for d in res.detections], [shape(o["polygon"]) for o in truth], 0.3)
        lengths = []
        for i, j, _ in pairs:
            det, tru = res.detections[i], truth[j]
            rel = (det.attrs["length_m"] - tru["length_m"]) / tru["length_m"]
            rel_errs.append(rel)
            lengths.append(f"{det.feature_id}:{tru['length_m']:.0f}->{det.attrs['length_m']:.0f} m")
            assert det.feature_id == tru["feature_id"], "ship reported at the wrong berth"
        print(f"{aoi_id:<15} {seed:>3} {day.isoformat()} truth {len(truth)} counted {res.total} "
              + " ".join(lengths))
        assert res.total == len(truth)
        assert len(pairs) == len(truth), "every truth ship is matched by one detection"
    print(f"ship length error: mean {np.mean(rel_errs):+.3f}, max abs {np.max(np.abs(rel_errs)):.3f} "
          f"over {len(rel_errs)} ships")
    assert np.max(np.abs(rel_errs)) <= SHIP_LENGTH_TOL


# ------------------------------------------------------------------ medium resolution
def test_medium_resolution_railcar_estimate_has_uncertainty():
    aoi = load_aoi("tumangang_railyard")
    busy = _clear_scenes("tumangang_railyard", (11, 12), (date(2023, 9, 29), date(2023, 10, 20)), sensor="s2")[0]
    quiet = _clear_scenes("tumangang_railyard", (11, 12), (date(2023, 6, 10), date(2023, 8, 3)), sensor="s2")[0]
    results = {}
    for label, (seed, day) in (("busy", busy), ("quiet", quiet)):
        sc = render_scene(aoi, day, "s2", seed=seed)
        assert sc.grid.resolution == 10.0
        image, valid = _aligned(sc)
        res = count_railcars(image, _features(aoi, "track", sc.grid.crs), valid=valid, **_sun(sc))
        truth = sc.truth["counts"]["railcars"]
        results[label] = res
        z = (res.total - truth) / res.uncertainty if res.uncertainty else float("-inf" if res.total < truth else 0)
        print(f"\ns2 railcar estimate ({label}, seed {seed}, {day}): {res.total} +- {res.uncertainty:.1f} "
              f"(truth {truth}, error {(res.total - truth) / max(truth, 1):+.2f}, z {z:+.1f})")
        assert isinstance(res.total, float)
        assert res.uncertainty is not None and math.isfinite(res.uncertainty) and res.uncertainty >= 0
        assert res.detections == ()   # no per-car outlines at 10 m
        assert res.observed_fraction > 0.9
        assert "uncertainty" in res.to_json()
        assert all(p["tracks_resolved"] is False for p in res.per_feature)   # 5 m spacing at 10 m
    assert results["busy"].total > results["quiet"].total
    assert results["busy"].uncertainty > 0


@pytest.mark.xfail(reason="counter limitation (issue 6, not fixed): at 10 m the yard's 5 m track spacing is not "
                          "resolved and a 3 m car fills a third of a pixel shared with its neighbours' cars; the busy "
                          "yard is undercounted by 15-45 % and quiet yards (6-16 cars) read 0 +- 0, far outside the "
                          "stated uncertainty. The result flags it per track (tracks_resolved: false). At 3 m "
                          "(measured 2026-12-01, clear scenes, seeds 11/12) the errors are -38 % to +64 % (z -3 to +5): "
                          "neighbouring tracks' cars fall inside each 3 m strip.", strict=False)
def test_medium_resolution_uncertainty_covers_the_truth():
    aoi = load_aoi("tumangang_railyard")
    for seed, day in _clear_scenes("tumangang_railyard", (11, 12), DATES, sensor="s2"):
        sc = render_scene(aoi, day, "s2", seed=seed)
        image, valid = _aligned(sc)
        res = count_railcars(image, _features(aoi, "track", sc.grid.crs), valid=valid, **_sun(sc))
        truth = sc.truth["counts"]["railcars"]
        assert abs(res.total - truth) <= 3 * max(res.uncertainty, 1.0), (seed, day, truth, res.total)


# ----------------------------------------------------------------------- tarped stacks
TARP_DAY, TARP_SEED = date(2023, 10, 20), 12   # 46 of 137 stacks tarped at tarp_fraction 0.3


@pytest.fixture(scope="module")
def tarp_scenes():
    """The same depot day with 30 % of its stacks tarped and with none (opt-in simulator option)."""
    aoi = load_aoi("tikhoretsk_depot")
    out = {}
    for frac in (0.3, 0.0):
        sc = render_scene(aoi, TARP_DAY, "vhr", seed=TARP_SEED, tarp_fraction=frac, clear=True, misregistration=False)
        res = count_containers(sc.grid.attach(sc.data, bands=list(sc.bands)), _features(aoi, "stack_zone", sc.grid.crs),
                               **_sun(sc))
        out[frac] = (sc, res)
    return out


def test_tarped_stacks_are_flagged_and_only_where_tarps_are(tarp_scenes):
    sc, res = tarp_scenes[0.3]
    tarps = [shape(o["polygon"]) for o in sc.truth["objects"] if o["kind"] == "container" and o["tarped"]]
    flagged = [d for d in res.detections if d.attrs["tarped"]]
    print(f"\ntarps: truth {len(tarps)} tarped stacks; flagged {res.extras['tarped_stacks']} in {len(flagged)} of "
          f"{len(res.detections)} blocks")
    assert len(tarps) >= 30
    # Conservative flag (measured 8 of 46: tarps in saturated colours pass for paint) ...
    assert res.extras["tarped_stacks"] >= 4
    # ... but every flagged block holds a tarped stack.
    union = shapely.union_all(tarps)
    assert flagged and all(d.polygon.intersects(union) for d in flagged)
    assert sum(d.attrs["tarped_stacks"] for d in res.detections) == res.extras["tarped_stacks"]
    assert sum(p["tarped_stacks"] for p in res.per_feature) == res.extras["tarped_stacks"]
    doc = res.to_json()
    assert doc["tarped_stacks"] == res.extras["tarped_stacks"] and doc["by_type"]["teu"] == res.total
    assert set(doc["by_type"]) == {"teu", "20ft", "40ft"}
    assert abs(doc["by_type"]["20ft"] + 2 * doc["by_type"]["40ft"] - res.total) <= 0.2
    assert all(isinstance(d["tarped"], bool) for d in doc["detections"])
    # Nothing is flagged on the same day without tarps, and the TEU is the same as without the option.
    sc0, res0 = tarp_scenes[0.0]
    assert res0.extras["tarped_stacks"] == 0 and not any(d.attrs["tarped"] for d in res0.detections)


def test_grey_tarps_are_counted_as_containers(tarp_scenes):
    """A grey cover is pavement-coloured; its shadow shows it stands above the ground.
    Before, covered stacks were taken for pavement (TEU 247 against 570)."""
    sc, res = tarp_scenes[0.3]
    truth = sc.truth["counts"]["containers_teu"]
    err = (res.total - truth) / truth
    print(f"\nTEU with 30 % tarped: truth {truth}, estimate {res.total} ({err:+.3f})")
    assert err > -0.45


def test_count_containers_cli_reports_tarped_stacks(tarp_scenes, tmp_path, capsys):
    import argparse

    from changedet.cli import count as count_cli
    from changedet.simulate.truth import write_scene

    sc, res = tarp_scenes[0.3]
    paths = write_scene(sc, tmp_path, stem="depot")
    p = argparse.ArgumentParser()
    count_cli.add_parser(p.add_subparsers())
    args = p.parse_args(["count", "containers", str(paths["image"]), "--aoi", "tikhoretsk_depot", "--json",
                         "--sun-azimuth", str(sc.truth["sun"]["azimuth_deg"]),
                         "--sun-elevation", str(sc.truth["sun"]["elevation_deg"])])
    capsys.readouterr()
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"total", "by_type", "per_feature", "detections"} <= set(doc)
    assert doc["tarped_stacks"] == res.extras["tarped_stacks"] > 0
    assert sum(d["tarped"] for d in doc["detections"]) >= 1


# ------------------------------------------------------------------------ cloud shadow
def test_cloud_shadow_mask_finds_the_shadow_of_the_masked_cloud():
    from changedet.grid import GridSpec
    from changedet.objects.cloud_shadow import cloud_shadow_mask
    from changedet.simulate.sun import shadow_vector
    from rasterio.transform import from_origin

    res, n = 1.0, 900
    grid = GridSpec(pyproj.CRS.from_epsg(32652), from_origin(500000.0, 4700000.0, res, res), (n, n))
    rng = np.random.default_rng(0)
    bright = (0.2 + 0.02 * rng.standard_normal((n, n))).astype("float32")
    rr, cc = np.mgrid[:n, :n]
    cloud = (rr - 300) ** 2 + (cc - 450) ** 2 < 90 ** 2
    az, el, h = 150.0, 50.0, 300.0   # shadow ~250 m to the north-north-west of the cloud
    dx, dy = shadow_vector(h, el, az)
    shadow = (rr - 300 + dy / res) ** 2 + (cc - 450 - dx / res) ** 2 < 90 ** 2
    bright[shadow & ~cloud] *= 0.4
    bright[cloud] = 0.6
    m = cloud_shadow_mask(bright, cloud, grid, sun_azimuth_deg=az, sun_elevation_deg=el)
    truth = shadow & ~cloud
    iou = (m & truth).sum() / (m | truth).sum()
    print(f"\ncloud shadow IoU {iou:.3f}")
    assert iou > 0.7
    assert not (m & cloud).any()
    # No darker footprint anywhere: no shadow (a cloud over even ground, or a wrong sun).
    flat = np.full((n, n), 0.2, "float32")
    flat[cloud] = 0.6
    assert not cloud_shadow_mask(flat, cloud, grid, sun_azimuth_deg=az, sun_elevation_deg=el).any()
