"""Counter accuracy per condition on held-out simulator scenes (a slice of bench/bench_objects.py).

One scene per condition, from seed 11, picked by its drawn weather and sun before
rendering: hazy, partly cloudy (cloud mask passed as ``valid``; cloud shadows are not in
the mask, the railcar counter finds them and reports those stretches unobserved), low
sun, and misregistered (put on the AOI grid by changedet's own
co-registration against the reference basemap instead of the recorded shift). The full
matrix, with more scenes, per class and per condition, is ``python bench/bench_objects.py``.

Floors are the figures measured here minus a margin (``pytest -s`` prints them); where
they are below the issue's targets (MAPE 5 %, F1 0.9 at IoU 0.5, type accuracy 85 %,
TEU error 10 %) the gap is reported, not hidden: low sun and partial cloud are the
counters' known weak conditions.
"""

from __future__ import annotations

import warnings
from datetime import date

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import shape
from shapely.strtree import STRtree

from changedet.aoi import load_aoi
from changedet.coreg import apply_shift, estimate_shift
from changedet.objects.containers import _mask, count_containers
from changedet.objects.railcars import count_railcars
from changedet.simulate.render import render_scene

# (condition, date) for seed 11 on khasan_railyard / tikhoretsk_depot, chosen with
# bench_objects.pick_scenes([11, 12, 13], 1) - i.e. from the drawn conditions only.
RAILCAR_SCENES = {"hazy": date(2023, 7, 30), "partly_cloudy": date(2023, 8, 4), "low_sun": date(2023, 11, 27),
                  "misregistered": date(2023, 4, 21)}
# condition: (max count APE, min F1 at IoU 0.5, min type accuracy)
# Measured: hazy 0.000 / 1.000 / 0.879; partly cloudy 0.000 / 0.900 / 0.778; low sun 0.179 / 0.901 / 0.969;
# misregistered 0.000 / 1.000 / 0.952 (before the sun-side glow, too-dark paint, shadow-tail and
# gap-ridge cues: hazy 0.000 / 1.000 / 0.97; partly cloudy 0.158 / 0.800 / 0.71; low sun
# 0.231 / 0.870 / 0.70; misregistered 0.043 / 0.978 / 0.955).
RAILCAR_FLOORS = {"hazy": (0.05, 0.95, 0.85), "partly_cloudy": (0.10, 0.85, 0.70),
                  "low_sun": (0.25, 0.85, 0.90), "misregistered": (0.08, 0.90, 0.85)}
CONTAINER_SCENES = {"hazy": date(2023, 4, 1), "low_sun": date(2023, 11, 27)}
# Measured: hazy -0.020; low sun (20 degrees, shadows 7-36 m over 9 m lanes) +0.016, where
# dropping the shadows cut short by the next block gave -0.532.
TEU_MAX_ERROR = {"hazy": 0.10, "low_sun": 0.20}


def _on_grid(sc, aoi, condition, seed):
    if condition == "misregistered":
        ref = render_scene(aoi, date(2023, 6, 1), "vhr", seed=seed, clear=True, misregistration=False)
        dr, dc, _ = estimate_shift(ref.data.mean(axis=0), sc.data.mean(axis=0), max_shift_px=8)
        data = np.asarray(apply_shift(sc.data, dr, dc))
    else:
        sh = sc.truth["applied_shift_px"]
        data = np.stack([ndimage.shift(b, (-sh["row"], -sh["col"]), order=3, mode="nearest") for b in sc.data])
    valid = sc.grid.attach(~sc.cloud_mask) if sc.cloud_mask is not None else None
    return sc.grid.attach(data, bands=list(sc.bands)), valid


def _match(dets, truths, min_iou):
    tree = STRtree(truths) if truths else None
    pairs = []
    for i, d in enumerate(dets):
        for j in (tree.query(d) if tree is not None else []):
            inter = d.intersection(truths[int(j)]).area
            if inter > 0:
                pairs.append((inter / d.union(truths[int(j)]).area, i, int(j)))
    used_d, used_t, out = set(), set(), []
    for iou, i, j in sorted(pairs, reverse=True):
        if iou >= min_iou and i not in used_d and j not in used_t:
            used_d.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("condition", sorted(RAILCAR_SCENES))
def test_railcars_per_condition(condition):
    aoi = load_aoi("khasan_railyard")
    sc = render_scene(aoi, RAILCAR_SCENES[condition], "vhr", seed=11)
    image, valid = _on_grid(sc, aoi, condition, 11)
    tracks = {f.id: aoi.to_crs(f.geometry, sc.grid.crs) for f in aoi.features_by_role("track")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = count_railcars(image, tracks, valid=valid, sun_azimuth_deg=sc.truth["sun"]["azimuth_deg"],
                             sun_elevation_deg=sc.truth["sun"]["elevation_deg"])
    truth = [o for o in sc.truth["objects"] if o["kind"] == "railcar"]
    if sc.cloud_mask is not None and sc.cloud_mask.any():
        # Score against the cars the image shows: at most half under the cloud mask, and
        # not centred on a stretch the counter reports unobserved (cloud shadow, the
        # cloud's thin edge); how much it gave up is checked in the cloud-shadow test.
        gaps = {p["id"]: p.get("unobserved_runs_m", []) for p in res.per_feature}
        truth = [o for o in truth if sc.cloud_mask[_mask(shape(o["polygon"]), sc.grid)].mean() <= 0.5
                 and not any(a <= tracks[o["feature_id"]].project(shape(o["polygon"]).centroid) <= b
                             for a, b in gaps.get(o["feature_id"], []))]
    pairs = _match([d.polygon for d in res.detections], [shape(o["polygon"]) for o in truth], 0.5)
    ape = abs(res.total - len(truth)) / max(len(truth), 1)
    f1 = 2 * len(pairs) / max(len(truth) + len(res.detections), 1)
    types = sum(res.detections[i].type == truth[j]["type"] for i, j in pairs) / max(len(pairs), 1)
    print(f"\n{condition}: sun {sc.truth['sun']['elevation_deg']:.0f} deg, haze {sc.truth['conditions']['haze']:.2f}, "
          f"cloud {sc.truth['conditions']['cloud_fraction']:.2f}: truth {len(truth)} counted {res.total} "
          f"APE {ape:.3f} F1@0.5 {f1:.3f} type accuracy {types:.3f}")
    max_ape, min_f1, min_type = RAILCAR_FLOORS[condition]
    assert len(truth) >= 10
    assert ape <= max_ape
    assert f1 >= min_f1
    assert types >= min_type


@pytest.mark.slow
@pytest.mark.parametrize("condition", sorted(CONTAINER_SCENES))
def test_container_teu_per_condition(condition):
    aoi = load_aoi("tikhoretsk_depot")
    sc = render_scene(aoi, CONTAINER_SCENES[condition], "vhr", seed=11)
    image, valid = _on_grid(sc, aoi, condition, 11)
    zones = {f.id: aoi.to_crs(f.geometry, sc.grid.crs) for f in aoi.features_by_role("stack_zone")}
    res = count_containers(image, zones, valid=valid, sun_azimuth_deg=sc.truth["sun"]["azimuth_deg"],
                           sun_elevation_deg=sc.truth["sun"]["elevation_deg"])
    truth = sc.truth["counts"]["containers_teu"]
    err = (res.total - truth) / max(truth, 1)
    print(f"\ncontainers {condition}: truth {truth} TEU, estimate {res.total} +- {res.uncertainty}, error {err:+.3f}")
    assert abs(err) <= TEU_MAX_ERROR[condition]


@pytest.mark.slow
def test_railcars_under_cloud_shadow_are_unobserved_not_counted():
    """Cloud shadows are not in the cloud mask. On this held-out scene (bench seed 31, 27 %
    cloud, sun 63 degrees) shadowed ballast was taken for cars: 45 counted against 11 cars
    in view. Stretches in cloud shadow are now reported unobserved (``unobserved_runs_m``
    per track) and nothing is counted there; cars are scored on the observed stretches.
    The cloud's thin edge (5 m beyond the mask) is unobserved too since it was added,
    which leaves 7 cars in view rather than 10."""
    aoi = load_aoi("tumangang_railyard")
    sc = render_scene(aoi, date(2023, 6, 15), "vhr", seed=31)
    image, valid = _on_grid(sc, aoi, "partly_cloudy", 31)
    tracks = {f.id: aoi.to_crs(f.geometry, sc.grid.crs) for f in aoi.features_by_role("track")}
    res = count_railcars(image, tracks, valid=valid, sun_azimuth_deg=sc.truth["sun"]["azimuth_deg"],
                         sun_elevation_deg=sc.truth["sun"]["elevation_deg"])
    cars = [o for o in sc.truth["objects"] if o["kind"] == "railcar"]
    gaps = {p["id"]: p["unobserved_runs_m"] for p in res.per_feature}
    in_view = []
    for o in cars:
        poly = shape(o["polygon"])
        if sc.cloud_mask[_mask(poly, sc.grid)].mean() > 0.5:
            continue
        s = tracks[o["feature_id"]].project(poly.centroid)
        if not any(a <= s <= b for a, b in gaps[o["feature_id"]]):
            in_view.append(o)
    print(f"\npartly cloudy, cloud shadow: {len(cars)} cars, {len(in_view)} on observed track; counted {res.total}; "
          f"observed fraction {res.observed_fraction:.2f}")
    assert len(in_view) >= 6
    assert abs(res.total - len(in_view)) <= 0.4 * len(in_view)
    assert res.observed_fraction < 0.9
    for p in res.per_feature:
        observed_m = tracks[p["id"]].length - sum(b - a for a, b in p["unobserved_runs_m"])
        assert abs(observed_m / tracks[p["id"]].length - p["observed_fraction"]) < 0.02
        assert p["unobserved_m"] == pytest.approx(sum(b - a for a, b in p["unobserved_runs_m"]), abs=1.0)


def test_water_beside_a_bridge_is_not_taken_for_cloud_shadow():
    """A river is dark and bluish like shadowed ballast. With a small cloud in the frame
    the colour cue of the cloud-shadow search took the river for shade and spread it onto
    the bridge track: 44 % of the track unobserved and no count at all on a hazy day with
    1.4 % cloud (10 cars in truth). Open water (high NDWI) is not ground for that cue."""
    aoi = load_aoi("tumangang_khasan_bridge")
    sc = render_scene(aoi, date(2023, 10, 5), "vhr", seed=0)
    assert sc.cloud_mask is not None and sc.cloud_mask.any()
    image, valid = _on_grid(sc, aoi, "hazy", 0)
    tracks = {f.id: aoi.to_crs(f.geometry, sc.grid.crs) for f in aoi.features_by_role("track")}
    res = count_railcars(image, tracks, valid=valid, sun_azimuth_deg=sc.truth["sun"]["azimuth_deg"],
                         sun_elevation_deg=sc.truth["sun"]["elevation_deg"])
    truth = sc.truth["counts"]["railcars"]
    print(f"\nbridge, river in frame: observed {res.observed_fraction:.2f}, counted {res.total} of {truth}")
    assert res.observed_fraction > 0.9
    assert abs(res.total - truth) <= max(1, 0.1 * truth)
