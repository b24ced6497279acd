"""Sentinel-1 railcar estimate (:mod:`changedet.objects.railcars_sar`).

Synthetic yards are drawn here with their own numbers (ground -15 dB, cars 0.8 sigma0
per m^2, 5 looks), not the simulator's materials; the simulator's scenes used are the
held-out seeds 11/12 of ``tests/test_objects.py``.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import LineString

from changedet.errors import ChangedetError
from changedet.grid import GridSpec
from changedet.objects.checks import BandOrderError
from changedet.objects.railcars import count_railcars
from changedet.objects.railcars_sar import bundles, count_railcars_sar, to_linear

RES = 10.0
SUB = 5            # 2 m sub-pixels
X0, Y0 = 500000.0, 4700000.0


def _yard(track_y: list[float], cars: list[tuple[int, float, float]], *, seed: int, shape=(40, 90),
          ground: float = 10 ** -1.5, car_sigma: float = 0.8, looks: float = 5.0):
    """VV/VH sigma0 (linear) of horizontal tracks at ``track_y`` metres below the top,
    cars ``(track index, x0, x1)`` in metres from the left edge, 3 m wide."""
    rows, cols = shape
    fy = (np.arange(rows * SUB) + 0.5) * RES / SUB
    fx = (np.arange(cols * SUB) + 0.5) * RES / SUB
    cover = np.zeros((rows * SUB, cols * SUB), "float32")
    for t, a, b in cars:
        cover[np.ix_(np.abs(fy - track_y[t]) <= 1.5, (fx >= a) & (fx <= b))] = 1.0
    cov = cover.reshape(rows, SUB, cols, SUB).mean(axis=(1, 3))
    rng = np.random.default_rng(seed)
    vv = (ground * (1 - cov) + car_sigma * cov) * rng.gamma(looks, 1 / looks, size=cov.shape)
    vh = (0.2 * ground * (1 - cov) + 0.1 * car_sigma * cov) * rng.gamma(looks, 1 / looks, size=cov.shape)
    grid = GridSpec("EPSG:32652", Affine(RES, 0, X0, 0, -RES, Y0), shape)
    tracks = {f"T{i + 1}": LineString([(X0 + 20.0, Y0 - y), (X0 + cols * RES - 20.0, Y0 - y)])
              for i, y in enumerate(track_y)}
    return grid.attach(np.stack([vv, vh]).astype("float32"), bands=["VV", "VH"]), tracks


def _strings(track: int, starts: list[float], n_cars: list[int], pitch: float = 15.0):
    return [(track, s + k * pitch, s + k * pitch + pitch - 1.0) for s, n in zip(starts, n_cars) for k in range(n)]


def test_resolved_tracks_are_estimated_per_track_within_the_uncertainty():
    # Tracks 50 m apart (5 pixels): resolved, one estimate each.
    cars = _strings(0, [60.0, 500.0], [12, 8]) + _strings(1, [200.0], [15])
    image, tracks = _yard([100.0, 150.0], cars, seed=3)
    res = count_railcars_sar(image, tracks, n_bootstrap=20)
    assert [p["tracks"] for p in res.per_feature] == [["T1"], ["T2"]]
    assert all(p["tracks_resolved"] for p in res.per_feature)
    assert res.detections == ()
    truth = len(cars)
    assert abs(res.total - truth) <= 3 * res.uncertainty, (res.total, res.uncertainty)
    assert abs(res.total - truth) <= 0.25 * truth
    by = {p["id"]: p for p in res.per_feature}
    assert abs(by["T1"]["count"] - 20) < abs(by["T1"]["count"] - 15)   # cars counted on their own track
    assert res.extras["scale"] == {"VV": "linear"}


def test_unresolved_tracks_form_one_bundle_and_side_by_side_cars_count_twice():
    # Five tracks 5 m apart (half a pixel): one bundle. Two strings side by side on T1/T2
    # and one alone on T5.
    cars = _strings(0, [100.0], [14]) + _strings(1, [100.0], [14]) + _strings(4, [450.0], [10])
    image, tracks = _yard([100.0, 105.0, 110.0, 115.0, 120.0], cars, seed=5)
    assert bundles(tracks, 15.0) == [["T1", "T2", "T3", "T4", "T5"]]
    res = count_railcars_sar(image, tracks, n_bootstrap=20)
    (pf,) = res.per_feature
    assert pf["tracks_resolved"] is False and "estimated together" in pf["note"]
    # The JSON contract: "id" is a feature id the caller gave; the bundle names its tracks.
    assert pf["id"] == "T1" and pf["bundle"] == ["T1", "T2", "T3", "T4", "T5"]
    truth = len(cars)
    assert abs(res.total - truth) <= 3 * res.uncertainty, (res.total, res.uncertainty)
    # More than the length any track is occupied: side-by-side cars are not merged.
    assert pf["occupied_m"] > 1.3 * pf["occupied_any_m"]


def test_decibels_are_detected_and_give_the_same_estimate():
    cars = _strings(0, [60.0], [20])
    image, tracks = _yard([100.0, 150.0], cars, seed=7)
    lin = count_railcars_sar(image, tracks, n_bootstrap=0)
    db = image.copy(data=10 * np.log10(np.maximum(image.values, 1e-10)))
    res = count_railcars_sar(db, tracks, n_bootstrap=0)
    assert res.extras["scale"] == {"VV": "dB"}
    assert res.total == pytest.approx(lin.total, abs=0.2)


def test_an_empty_yard_reads_no_cars():
    image, tracks = _yard([100.0, 150.0], [], seed=9)
    res = count_railcars_sar(image, tracks, n_bootstrap=20)
    assert res.total <= max(1.0, 3 * res.uncertainty)


@pytest.mark.xfail(reason="estimator limitation (issue 6, not fixed): on a lone empty track no comb passes the BIC "
                          "test and the CFAR fallback thresholds over the rejected comb's empty level, which lies "
                          "below the bed: 2.0 / 45 / 5.3 false cars on seeds 3 / 4 / 5 (seed 4: a comb fitted to the "
                          "speckle's tail passes BIC). Taking the strip's lower half instead fixes these but reads a "
                          "packed yard as empty (independent generator MAPE 0.585 -> 0.671).", strict=False)
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_single_empty_track_reads_no_cars(seed):
    image, tracks = _yard([100.0, 150.0], [], seed=seed)
    res = count_railcars_sar(image, {"T2": tracks["T2"]}, n_bootstrap=0)
    assert res.total < 1.0, (seed, res.total, res.per_feature)


def test_a_track_mostly_off_the_image_learns_no_car_level_from_a_few_positions():
    # About 10 positions of bare ground are on the image: a comb fitted to them read 3.9 cars.
    image, _ = _yard([100.0, 150.0], [], seed=3)
    track = {"T9": LineString([(X0 + 800.0, Y0 - 100.0), (X0 + 2000.0, Y0 - 100.0)])}
    res = count_railcars_sar(image, track, n_bootstrap=0)
    assert res.total < 1.0, res.total


@pytest.mark.parametrize("values, why", [
    (lambda v: v * 3000.0, "digital numbers"),
    (lambda v: np.where(np.arange(v.size).reshape(v.shape) % 3 == 0, -v, v), "a mix of signs"),
])
def test_ambiguous_scales_are_refused(values, why):
    image, tracks = _yard([100.0], _strings(0, [60.0], [5]), seed=1)
    bad = image.copy(data=values(image.values))
    with pytest.raises(BandOrderError, match="linear sigma0 or decibels"):
        count_railcars_sar(bad, tracks)


def test_to_linear_keeps_slightly_negative_noise_floor_values_as_linear():
    v = np.abs(np.random.default_rng(0).normal(0.05, 0.02, 1000))
    v[:5] = -1e-4   # thermal-noise removal leaves a few below zero
    lin, scale = to_linear(v, "VV")
    assert scale == "linear" and lin.min() == 0.0


def test_count_railcars_dispatches_radar_and_containers_still_refuse_it():
    from changedet.objects.containers import count_containers
    from shapely.geometry import box

    image, tracks = _yard([100.0, 150.0], _strings(0, [60.0], [10]), seed=2)
    res = count_railcars(image, tracks)
    assert res.extras["method"].startswith("sentinel-1") and res.uncertainty is not None
    # Containers have no radar mode at any resolution (VHR radar here, 1 m pixels).
    fine = GridSpec("EPSG:32652", Affine(1.0, 0, X0, 0, -1.0, Y0), (60, 60))
    radar = fine.attach(np.full((2, 60, 60), 0.05, "float32"), bands=["VV", "VH"])
    with pytest.raises(ChangedetError, match="radar"):
        count_containers(radar, {"Z1": box(X0 + 10, Y0 - 50, X0 + 50, Y0 - 10)})
    with pytest.raises(ChangedetError, match="radar .* no radar mode"):
        count_railcars(radar, {"T1": LineString([(X0 + 5, Y0 - 30), (X0 + 55, Y0 - 30)])})


def test_sentinel1_estimate_covers_the_truth_on_held_out_scenes():
    """Simulator scenes never used in development (seeds 11, 12): the first quiet and the
    first busy date of the tumangang yard; all five tracks form one bundle at 10 m."""
    from test_objects import _features
    from changedet.aoi import load_aoi
    from changedet.simulate.render import render_scene
    from scipy import ndimage

    aoi = load_aoi("tumangang_railyard")
    for seed, day in ((11, date(2023, 8, 3)), (12, date(2023, 9, 29))):
        sc = render_scene(aoi, day, "s1", seed=seed)
        sh = sc.truth["applied_shift_px"]
        data = np.stack([ndimage.shift(b, (-sh["row"], -sh["col"]), order=1, mode="nearest") for b in sc.data])
        res = count_railcars(sc.grid.attach(data, bands=list(sc.bands)), _features(aoi, "track", sc.grid.crs))
        truth = sc.truth["counts"]["railcars"]
        print(f"\ns1 railcar estimate (seed {seed}, {day}): {res.total} +- {res.uncertainty:.1f} (truth {truth})")
        assert abs(res.total - truth) <= 3 * res.uncertainty, (seed, day, truth, res.total, res.uncertainty)
        assert res.per_feature[0]["tracks_resolved"] is False


def test_cli_counts_railcars_on_a_radar_geotiff(tmp_path, capsys):
    from changedet.cli import main
    from changedet.io import write_geotiff

    cars = _strings(0, [60.0], [12])
    image, tracks = _yard([100.0, 150.0], cars, seed=4)
    path = write_geotiff(image, tmp_path / "s1.tif")
    feats = {"type": "FeatureCollection",
             "crs": {"type": "name", "properties": {"name": "EPSG:32652"}},
             "features": [{"type": "Feature", "properties": {"id": k, "role": "track"},
                           "geometry": {"type": "LineString", "coordinates": list(v.coords)}}
                          for k, v in tracks.items()]}
    fpath = tmp_path / "tracks.geojson"
    fpath.write_text(json.dumps(feats))
    rc = main(["count", "railcars", str(path), "--features", str(fpath), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(doc) >= {"total", "by_type", "per_feature", "detections", "uncertainty"}
    assert doc["detections"] == [] and "sun" not in doc
    assert abs(doc["total"] - len(cars)) <= 3 * doc["uncertainty"]
