"""The embedded scene simulator agrees with its own ground truth.

Everything the counters are judged against comes from here, so these tests check that
the truth describes the pixels: objects are drawn inside their truth polygons, the
recorded misregistration is the one applied, shadows follow the recorded sun, cloud
masks cover the clouds, the scenarios produce the stated activity, and the files and
CLI output carry all of it.

Renders are kept small: Sentinel-1/2 scenes (about 60 x 95 px) and the VHR sensor at
1 m for the ports; tumangang_railyard at its native 0.5 m (about 1 s a render) only
where the railcars themselves are under test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio import features
from scipy import ndimage
from shapely.affinity import translate
from shapely.geometry import shape

from changedet.aoi import default_registry, load_aoi
from changedet.coreg import estimate_shift
from changedet.errors import ChangedetError, ScenarioError, SourceError
from changedet.grid import aoi_grid
from changedet.io import read_raster
from changedet.simulate.render import MASK_BAND, SENSORS, conditions, render_scene
from changedet.simulate.scenario import load_scenario, scenario_for
from changedet.simulate.sun import shadow_vector
from changedet.simulate.truth import write_scene
from changedet.sources.simulator import SimulatorSource

REPO = Path(__file__).resolve().parents[1]
ENL = 4.4  # equivalent number of looks of the simulated Sentinel-1 GRD


def _mask(geom, grid) -> np.ndarray:
    """Pixels of ``grid`` whose centre lies in ``geom`` (rasterio, not all_touched)."""
    if geom.is_empty:
        return np.zeros(grid.shape, bool)
    return features.rasterize([(geom, 1)], out_shape=grid.shape, transform=grid.transform, fill=0,
                              dtype="uint8").astype(bool)


def _role(aoi, role: str, crs):
    return [aoi.to_crs(f.geometry, crs) for f in aoi.features_by_role(role)]


@pytest.fixture(scope="module")
def quiet_registry(tmp_path_factory) -> Path:
    """A registry without scenario files: every AOI rendered there is empty (no
    railcars, containers or ships), the static layout (buildings, tracks) unchanged."""
    return tmp_path_factory.mktemp("quiet_registry")


@pytest.fixture(scope="module")
def pairs(quiet_registry):
    """Clear, registration-exact scenes with their objects and the same scene without them."""
    out = {}
    for key, aoi_id, day, res in (("rajin", "rajin_port", date(2023, 7, 5), 1.0),
                                  ("tumangang", "tumangang_railyard", date(2023, 10, 20), None)):
        aoi = load_aoi(aoi_id)
        kw = dict(seed=11, resolution_m=res, clear=True, misregistration=False)
        full = render_scene(aoi, day, "vhr", **kw)
        empty = render_scene(aoi, day, "vhr", registry=quiet_registry, **kw)
        out[key] = (aoi, full, empty)
    return out


# ------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("sensor,res", [("s2", None), ("s1", None), ("vhr", 1.0)])
def test_render_is_deterministic_and_seeded(sensor, res):
    aoi = load_aoi("dunai_port")
    day = date(2023, 8, 3)
    a = render_scene(aoi, day, sensor, seed=12, resolution_m=res)
    b = render_scene(aoi, day, sensor, seed=12, resolution_m=res)
    c = render_scene(aoi, day, sensor, seed=13, resolution_m=res)
    assert a.data.dtype == np.float32
    assert np.array_equal(a.data, b.data)
    assert json.dumps(a.truth, sort_keys=True) == json.dumps(b.truth, sort_keys=True)
    if a.cloud_mask is not None:
        assert np.array_equal(a.cloud_mask, b.cloud_mask)
    assert a.grid.same_as(c.grid)
    assert not np.array_equal(a.data, c.data)
    assert a.truth["applied_shift_px"] != c.truth["applied_shift_px"]
    assert json.dumps(a.truth["objects"]) != json.dumps(c.truth["objects"])


def test_objects_do_not_depend_on_sensor_or_registration():
    """Same (AOI, date, seed): the same objects in VHR, Sentinel-2 and Sentinel-1 scenes,
    registered or not (the docstring's promise; only the pixels differ)."""
    aoi = load_aoi("rajin_port")
    day = date(2023, 7, 5)
    ref = render_scene(aoi, day, "s2", seed=11)
    for sensor, kw in (("s1", {}), ("s2", {"misregistration": False, "clear": True}),
                       ("vhr", {"resolution_m": 2.0})):
        other = render_scene(aoi, day, sensor, seed=11, **kw)
        assert other.truth["objects"] == ref.truth["objects"]
        assert other.truth["counts"] == ref.truth["counts"]


# ----------------------------------------------------------------- objects in the pixels
@pytest.mark.parametrize("key", ["rajin", "tumangang"])
def test_objects_are_drawn_inside_their_truth_polygons(pairs, key):
    aoi, full, empty = pairs[key]
    g = full.grid
    objs = full.truth["objects"]
    assert empty.truth["objects"] == [] and objs
    assert full.truth["applied_shift_px"] == {"row": 0.0, "col": 0.0}
    kinds = {o["kind"] for o in objs}
    if key == "rajin":
        assert kinds == {"railcar", "container", "ship"}
    # Every object changes the colour of the pixels inside its outline (body pixels only:
    # half a pixel in from the edge, so no mixed pixels).
    weakest = {}
    for o in objs:
        m = _mask(shape(o["polygon"]).buffer(-0.5 * g.resolution), g)
        assert m.sum() >= 5, o
        delta = float(np.linalg.norm(full.data[:, m].mean(axis=1) - empty.data[:, m].mean(axis=1)))
        weakest[o["kind"]] = min(weakest.get(o["kind"], np.inf), delta)
        assert delta > 0.01, f"{o['kind']} {o['type']} on {o['feature_id']} invisible: colour change {delta:.4f}"
    print(f"\n{key}: weakest colour change inside a truth polygon by kind: "
          + ", ".join(f"{k} {v:.3f}" for k, v in sorted(weakest.items())))
    # Away from every object and its shadow nothing changes beyond sensor noise.
    near = _mask(shapely.union_all([shape(o["polygon"]) for o in objs]).buffer(30.0), g)
    far_diff = np.abs(full.data - empty.data)[:, ~near]
    assert far_diff.mean() < 0.008 and np.percentile(far_diff, 99.9) < 0.04


def test_object_colours_differ_from_their_background(pairs):
    """Cars vs ballast, containers vs pavement, ships vs water, in the same image."""
    aoi, full, _ = pairs["rajin"]
    g = full.grid
    objs = full.truth["objects"]
    union = shapely.union_all([shape(o["polygon"]) for o in objs]).buffer(8.0)
    water = shapely.union_all(_role(aoi, "water", g.crs)).difference(union).buffer(-5.0)
    ballast = shapely.union_all([t.buffer(2.6).difference(t.buffer(2.0)) for t in _role(aoi, "track", g.crs)]
                                ).difference(union)
    pavement = shapely.union_all([z.buffer(2.5).difference(z) for z in _role(aoi, "stack_zone", g.crs)]
                                 ).difference(union)
    backgrounds = {"ship": water, "railcar": ballast, "container": pavement}
    for kind, bg in backgrounds.items():
        bg_px = full.data[:, _mask(bg, g)]
        assert bg_px.shape[1] > 30, kind
        bg_med = np.median(bg_px, axis=1)
        bg_sd = np.maximum(1.4826 * np.median(np.abs(bg_px - bg_med[:, None]), axis=1), 0.004)
        for o in (o for o in objs if o["kind"] == kind):
            m = _mask(shape(o["polygon"]).buffer(-0.5 * g.resolution), g)
            z = np.abs(full.data[:, m].mean(axis=1) - bg_med) / bg_sd
            assert z.max() > 3.0, f"{kind} {o['type']} looks like its background: {np.round(z, 1)}"
    # Hulls are far brighter than water in the near-infrared (band 3 = NIR).
    ships = [o for o in objs if o["kind"] == "ship"]
    hull = _mask(shapely.union_all([shape(o["polygon"]) for o in ships]).buffer(-2.0), g)
    assert full.data[3, hull].mean() > 3 * np.median(full.data[3, _mask(water, g)])


def test_shadows_fall_where_the_recorded_sun_puts_them(pairs):
    aoi, full, empty = pairs["rajin"]
    g = full.grid
    sun = full.truth["sun"]
    polys, shadow, anti = [], [], []
    for o in full.truth["objects"]:
        p = shape(o["polygon"])
        dx, dy = shadow_vector(o["height_m"], sun["elevation_deg"], sun["azimuth_deg"])
        polys.append(p)
        shadow.append(shapely.convex_hull(shapely.union(p, translate(p, dx, dy))))
        anti.append(shapely.convex_hull(shapely.union(p, translate(p, -dx, -dy))))
    bodies = shapely.union_all(polys).buffer(g.resolution)
    sh = shapely.union_all(shadow)
    in_shadow = _mask(sh.buffer(-g.resolution).difference(bodies), g)
    sunward = _mask(shapely.union_all(anti).buffer(-g.resolution).difference(bodies).difference(
        sh.buffer(g.resolution)), g)
    assert in_shadow.sum() > 100 and sunward.sum() > 100
    ratio = full.data.mean(axis=0) / np.maximum(empty.data.mean(axis=0), 1e-3)
    print(f"\nbrightness vs. empty scene: predicted shadow {np.median(ratio[in_shadow]):.2f}, "
          f"sun side {np.median(ratio[sunward]):.2f}")
    assert np.median(ratio[in_shadow]) < 0.5
    assert abs(np.median(ratio[sunward]) - 1.0) < 0.05


def test_shadows_depend_on_the_date(quiet_registry):
    """Lower sun in December at 42 N: longer shadows."""
    aoi = load_aoi("tumangang_railyard")
    lat = aoi.centroid_lonlat[1]
    assert 41.5 < lat < 43.0
    june = render_scene(aoi, date(2023, 6, 21), "vhr", seed=11, resolution_m=1.0, clear=True,
                        misregistration=False, registry=quiet_registry)
    dec = render_scene(aoi, date(2023, 12, 21), "vhr", seed=11, resolution_m=1.0, clear=True,
                       misregistration=False, registry=quiet_registry)
    el_j, el_d = june.truth["sun"]["elevation_deg"], dec.truth["sun"]["elevation_deg"]
    assert el_d < el_j
    # Noon-ish solar elevations at 42 N: ~71 deg (June) and ~25 deg (December) at noon;
    # the 10:30 overpass is a little lower.
    assert 55 < el_j < 72 and 15 < el_d < 26
    # Morning overpass: the sun is in the south-east.
    for s in (june, dec):
        assert 90 < s.truth["sun"]["azimuth_deg"] < 180

    def dark_fraction(sc):
        b = sc.data.mean(axis=0)
        return float((b < 0.5 * np.median(b)).mean())

    fj, fd = dark_fraction(june), dark_fraction(dec)
    print(f"\nsun elevation June {el_j:.1f}, December {el_d:.1f}; shadowed pixels {fj:.4f} vs {fd:.4f}")
    assert fd > 2.5 * fj


# ------------------------------------------------------------------- misregistration
@pytest.mark.parametrize("sensor,seeds", [pytest.param("vhr", (11, 12), marks=pytest.mark.slow), ("s2", (11, 12, 13))])
def test_recorded_shift_is_the_applied_shift(quiet_registry, sensor, seeds):
    """Co-registration of a misregistered render onto an exact one recovers -applied.

    The reference is rendered with another seed: two renders with the same (AOI, date,
    sensor, seed) share their noise realisation pixel for pixel (the noise generator is
    keyed on the scene, not on the grid), and identical noise pulls any estimator towards
    zero shift. The quiet registry keeps both renders' content identical (no objects
    that move between seeds).
    """
    aoi = load_aoi("tumangang_railyard")
    day = date(2023, 10, 20)
    ref = render_scene(aoi, day, sensor, seed=1, clear=True, misregistration=False, registry=quiet_registry)
    assert ref.truth["applied_shift_px"] == {"row": 0.0, "col": 0.0}
    nir = list(ref.bands).index({"vhr": "NIR", "s2": "B08"}[sensor])
    for seed in seeds:
        mov = render_scene(aoi, day, sensor, seed=seed, clear=True, registry=quiet_registry)
        applied = mov.truth["applied_shift_px"]
        limit = SENSORS[sensor].max_shift_px
        assert abs(applied["row"]) <= limit and abs(applied["col"]) <= limit
        assert max(abs(applied["row"]), abs(applied["col"])) > 0.05
        row, col, rel = estimate_shift(ref.data[nir], mov.data[nir])
        print(f"\n{sensor} seed {seed}: applied ({applied['row']:+.3f}, {applied['col']:+.3f}) px, "
              f"estimated correction ({row:+.3f}, {col:+.3f}), reliability {rel:.2f}")
        assert rel > 0.7
        assert row == pytest.approx(-applied["row"], abs=0.1)
        assert col == pytest.approx(-applied["col"], abs=0.1)


def test_content_appears_displaced_by_the_recorded_shift(pairs):
    """Sign convention: ground at pixel p of the exact grid appears at p + shift."""
    aoi, exact, _ = pairs["rajin"]
    mov = render_scene(aoi, date(2023, 7, 5), "vhr", seed=11, resolution_m=1.0, clear=True)
    assert mov.truth["objects"] == exact.truth["objects"]
    sh = mov.truth["applied_shift_px"]
    assert max(abs(sh["row"]), abs(sh["col"])) > 1.5
    # Compare around the objects (sharp edges); the rest is smooth texture plus noise.
    near = _mask(shapely.union_all([shape(o["polygon"]) for o in mov.truth["objects"]]).buffer(4.0), mov.grid)

    def residual(dr, dc):
        moved = np.stack([ndimage.shift(b, (dr, dc), order=3, mode="nearest") for b in exact.data])
        return float(np.abs(moved - mov.data)[:, near].mean())

    plus, minus = residual(sh["row"], sh["col"]), residual(-sh["row"], -sh["col"])
    none = residual(0.0, 0.0)
    print(f"\napplied ({sh['row']:+.2f}, {sh['col']:+.2f}) px; |exact moved by +shift - render| {plus:.4f}, "
          f"by -shift {minus:.4f}, unmoved {none:.4f}")
    assert plus < 0.5 * none and plus < 0.5 * minus


# --------------------------------------------------------------------------- sensors
def test_sensor_bands_and_resolutions(pairs):
    _, vhr, _ = pairs["tumangang"]
    assert vhr.bands == ("R", "G", "B", "NIR")
    assert vhr.grid.resolution == 0.5 and vhr.truth["resolution_m"] == 0.5
    assert vhr.data.shape == (4,) + vhr.grid.shape
    assert vhr.cloud_mask is not None and vhr.cloud_mask.dtype == bool and vhr.cloud_mask.shape == vhr.grid.shape
    assert np.all(np.isfinite(vhr.data)) and vhr.data.min() >= 0 and vhr.data.max() <= 1.2
    # Vegetation is brighter in NIR than red; the scene has some (greenness > 0 in October).
    assert np.percentile(vhr.data[3] - vhr.data[0], 95) > 0

    aoi = load_aoi("rajin_port")
    s2 = render_scene(aoi, date(2023, 7, 5), "s2", seed=11)
    assert s2.bands == ("B02", "B03", "B04", "B08")
    assert s2.grid.resolution == 10.0
    assert s2.cloud_mask is not None and s2.cloud_mask.shape == s2.grid.shape
    assert s2.truth["epsg"] == aoi.utm_crs().to_epsg()
    assert s2.grid.same_as(aoi_grid(aoi, 10.0))


def test_sentinel1_backscatter_and_speckle():
    aoi = load_aoi("rajin_port")
    s1 = render_scene(aoi, date(2023, 7, 5), "s1", seed=11, misregistration=False)
    assert s1.bands == ("VV", "VH") and s1.cloud_mask is None
    assert s1.grid.resolution == 10.0
    vv, vh = s1.data
    assert np.all(vv > 0) and np.all(vh > 0)
    land = ~_mask(shapely.union_all(_role(aoi, "water", s1.grid.crs)), s1.grid)
    assert np.median(vh[land]) < np.median(vv[land])   # cross-pol is weaker
    # Open water away from berths and the shore: homogeneous, so the spread is speckle.
    berths = shapely.union_all(_role(aoi, "berth", s1.grid.crs))
    water = shapely.union_all(_role(aoi, "water", s1.grid.crs)).difference(berths.buffer(40)).buffer(-20)
    m = _mask(water, s1.grid)
    assert m.sum() > 300
    expected = 1 / math.sqrt(ENL)
    for name, band in (("VV", vv), ("VH", vh)):
        cv = band[m].std() / band[m].mean()
        print(f"\nS1 {name} coefficient of variation over open water {cv:.3f} (speckle alone {expected:.3f})")
        assert abs(cv - expected) < 0.06
    # Speckle is multiplicative and independent between polarisations.
    assert abs(np.corrcoef(np.log(vv[m]), np.log(vh[m]))[0, 1]) < 0.3


def test_unknown_sensor_is_refused():
    aoi = load_aoi("rajin_port")
    with pytest.raises(ChangedetError, match="unknown sensor 'landsat'"):
        render_scene(aoi, date(2023, 7, 5), "landsat")
    with pytest.raises(SourceError, match="landsat"):
        SimulatorSource().search(aoi, date(2023, 7, 1), date(2023, 7, 10), sensor="landsat")


# -------------------------------------------------------------------------- scenario
def _days(start: date, end: date, step: int):
    d = start
    while d <= end:
        yield d
        d += timedelta(days=step)


def test_tumangang_scenario_quiet_then_surge_with_tank_cars():
    sc = scenario_for("tumangang_railyard", default_registry())
    for seed in (0, 11):
        for d in _days(date(2023, 1, 3), date(2023, 8, 31), 4):
            cars = sc.activity(d, seed=seed).railcars
            freight = [c for c in cars if c != "locomotive"]
            assert len(freight) <= 20, (d, seed)
            # Locomotives (0-1) come on top of the freight cars; truth counts include them.
            assert len(cars) <= 21, (d, seed)
    shares = []
    for d in _days(date(2023, 9, 25), date(2024, 6, 30), 2):
        cars = sc.activity(d, seed=0).railcars
        freight = [c for c in cars if c != "locomotive"]
        assert len(freight) >= 70, d
        assert 1 <= cars.count("locomotive") <= 2
        shares.append(freight.count("tank") / len(freight))
    mean = float(np.mean(shares))
    print(f"\ntumangang tank share after 2023-09-25 over {len(shares)} days: mean {mean:.3f}, "
          f"range {min(shares):.2f}-{max(shares):.2f}")
    assert 0.35 <= mean <= 0.55
    assert 0.40 <= mean <= 0.50  # the stated 40-50 % holds on average (days vary by sampling)
    assert np.percentile(shares, 5) > 0.3 and np.percentile(shares, 95) < 0.6


def test_tikhoretsk_containers_pile_up_from_august():
    sc = scenario_for("tikhoretsk_depot", default_registry())
    months = [date(2023, 7, 15), date(2023, 8, 15), date(2023, 9, 15), date(2023, 10, 15), date(2023, 11, 15)]
    means = [np.mean([sc.activity(d, seed=s).container_teu for s in range(5)]) for d in months]
    print("\ntikhoretsk mean TEU Jul-Nov 2023:", [round(float(m)) for m in means])
    assert all(b > a for a, b in zip(means, means[1:]))
    assert 130 <= means[0] <= 150 and means[-1] > 600
    # The rendered truth follows (Sentinel-2 renders are cheap; objects are sensor-independent).
    aoi = load_aoi("tikhoretsk_depot")
    aug = render_scene(aoi, date(2023, 8, 5), "s2", seed=11).truth["counts"]
    nov = render_scene(aoi, date(2023, 11, 25), "s2", seed=11).truth["counts"]
    assert nov["containers_teu"] > 3 * aug["containers_teu"]
    assert nov["containers_teu_unplaced"] == 0


# Ranges stated in aois/scenarios/*.yaml: (railcars incl. locomotives, TEU, ships).
QUIET = {
    "khasan_railyard": ((24, 42), (0, 0), (0, 0)),
    "chongjin_port": ((0, 0), (60, 90), (0, 2)),
    "dunai_port": ((0, 0), (0, 0), (0, 2)),
    "vostochny_port": ((0, 0), (820, 900), (1, 2)),
    "tumangang_khasan_bridge": ((0, 11), (0, 0), (0, 0)),
}


@pytest.mark.parametrize("aoi_id", sorted(QUIET))
def test_quiet_sites_stay_in_range_and_counts_match_objects(aoi_id):
    aoi = load_aoi(aoi_id)
    (r_lo, r_hi), (t_lo, t_hi), (s_lo, s_hi) = QUIET[aoi_id]
    for d in _days(date(2023, 1, 10), date(2023, 12, 20), 50):
        truth = render_scene(aoi, d, "s2", seed=12).truth
        c, objs = truth["counts"], truth["objects"]
        assert r_lo <= c["railcars"] <= r_hi, (d, c)
        # A 40 ft stack adds 2 TEU a tier, so filling can overshoot the target by 1.
        assert t_lo <= c["containers_teu"] <= t_hi + 1, (d, c)
        assert s_lo <= c["ships"] <= s_hi, (d, c)
        assert c["railcars_unplaced"] == c["containers_teu_unplaced"] == c["ships_unplaced"] == 0
        _check_counts(c, objs)


def _check_counts(c, objs):
    kinds = [o["kind"] for o in objs]
    assert set(kinds) <= {"railcar", "container", "ship"}
    assert c["railcars"] == kinds.count("railcar")
    assert c["ships"] == kinds.count("ship")
    assert c["container_stacks"] == kinds.count("container")
    assert c["containers_teu"] == sum(o["teu"] for o in objs if o["kind"] == "container")
    by_type, per_track = {}, {}
    for o in objs:
        if o["kind"] == "railcar":
            by_type[o["type"]] = by_type.get(o["type"], 0) + 1
            per_track[o["feature_id"]] = per_track.get(o["feature_id"], 0) + 1
    assert c["railcars_by_type"] == by_type
    assert c["railcars_per_track"] == per_track
    for o in objs:
        if o["kind"] == "container":
            assert o["teu"] == o["tiers"] * (2 if o["type"] == "40ft" else 1)
            assert o["height_m"] == pytest.approx(o["tiers"] * 2.59, abs=1e-3)


def test_truth_counts_match_objects_on_busy_scenes(pairs):
    for key in ("rajin", "tumangang"):
        aoi, full, _ = pairs[key]
        _check_counts(full.truth["counts"], full.truth["objects"])
    # Objects stand where they belong: railcars on tracks, stacks in zones, ships at berths.
    aoi, full, _ = pairs["rajin"]
    crs = full.grid.crs
    feats = {f.id: aoi.to_crs(f.geometry, crs) for f in aoi.features}
    for o in full.truth["objects"]:
        p, f = shape(o["polygon"]), feats[o["feature_id"]]
        if o["kind"] == "railcar":
            assert p.centroid.distance(f) < 0.01 and p.buffer(-0.1).within(f.buffer(2.0))
        elif o["kind"] == "container":
            assert p.within(f)
        else:
            assert p.centroid.within(f)


# ---------------------------------------------------------------------------- clouds
def test_cloud_mask_matches_cloud_fraction():
    aoi = load_aoi("rajin_port")
    sc = scenario_for("rajin_port", default_registry())
    cloudy = [d for d in _days(date(2023, 5, 1), date(2023, 8, 31), 1)
              if 0.3 < conditions(aoi, d, "s2", seed=11, scenario=sc).cloud_fraction < 0.9][:3]
    assert len(cloudy) == 3
    for d in cloudy:
        scene = render_scene(aoi, d, "s2", seed=11)
        clear = render_scene(aoi, d, "s2", seed=11, clear=True)
        frac = scene.truth["conditions"]["cloud_fraction"]
        m = scene.cloud_mask
        vis = slice(0, 3)
        print(f"\n{d}: cloud fraction {frac:.3f}, mask {m.mean():.3f}; visible reflectance "
              f"cloud {scene.data[vis, m].mean():.3f} vs clear {scene.data[vis, ~m].mean():.3f}")
        assert abs(m.mean() - frac) < 0.15
        assert scene.data[vis, m].mean() > 0.3
        assert scene.data[vis, m].mean() > 2.5 * scene.data[vis, ~m].mean()
        # The same ground seen without the cloud is darker: the brightness is the cloud's.
        assert np.all(scene.data[vis, m].mean(axis=1) > clear.data[vis, m].mean(axis=1) + 0.15)
        assert not clear.cloud_mask.any()


# -------------------------------------------------------------------- files and CLI
def _check_written(paths, scene):
    da = read_raster(paths["image"])
    names = list(scene.bands) + ([MASK_BAND] if scene.cloud_mask is not None else [])
    assert list(da["band"].values) == names
    assert da.shape == (len(names),) + scene.grid.shape
    assert da.rio.crs.to_epsg() == scene.grid.crs.to_epsg()
    assert np.allclose(tuple(da.rio.transform())[:6], tuple(scene.grid.transform)[:6])
    assert np.array_equal(da.values[: len(scene.bands)], scene.data)
    if scene.cloud_mask is not None:
        assert np.array_equal(da.sel(band=MASK_BAND).values.astype(bool), scene.cloud_mask)
    truth = json.loads(Path(paths["truth"]).read_text())
    assert truth == json.loads(json.dumps(scene.truth))
    gj = json.loads(Path(paths["truth_geojson"]).read_text())
    assert gj["type"] == "FeatureCollection"
    assert len(gj["features"]) == len(scene.truth["objects"])
    lon0, lat0 = load_aoi(scene.truth["aoi_id"]).centroid_lonlat
    for f, o in zip(gj["features"], scene.truth["objects"]):
        assert f["properties"]["kind"] == o["kind"] and "polygon" not in f["properties"]
        lon, lat = shape(f["geometry"]).centroid.coords[0]
        assert abs(lon - lon0) < 0.05 and abs(lat - lat0) < 0.05
    return truth


@pytest.mark.parametrize("sensor", ["s2", "s1"])
def test_write_scene_round_trip(tmp_path, sensor):
    aoi = load_aoi("rajin_port")
    scene = render_scene(aoi, date(2023, 7, 5), sensor, seed=11)
    paths = write_scene(scene, tmp_path / "out", stem="scene")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"scene.tif", "scene.truth.json",
                                                               "scene.truth.geojson"}
    _check_written(paths, scene)


def test_cli_simulate_writes_scene_and_prints_json(tmp_path, capsys):
    out = tmp_path / "sim"
    proc = subprocess.run(
        [sys.executable, "-m", "changedet", "simulate", "--aoi", "rajin_port", "--date", "2023-07-05",
         "--sensor", "s2", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert set(info) >= {"image", "truth", "truth_geojson", "counts", "applied_shift_px"}
    for key in ("image", "truth", "truth_geojson"):
        assert Path(info[key]).exists() and Path(info[key]).parent == out
    # The CLI renders exactly what the library renders (seed 0 by default).
    scene = render_scene(load_aoi("rajin_port"), date(2023, 7, 5), "s2", seed=0)
    truth = _check_written(info, scene)
    assert info["counts"] == {k: truth["counts"][k] for k in ("railcars", "containers_teu", "ships")}
    assert info["applied_shift_px"] == truth["applied_shift_px"]
    assert info["counts"]["ships"] == 1  # the 2023-07-03..12 visit at B1

    # The refusal goes through the same parser in-process (no second interpreter start-up).
    from changedet.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        main(["simulate", "--aoi", "rajin_port", "--date", "2023-07-05", "--sensor", "landsat", "--out", str(out)])
    assert bad.value.code != 0 and "landsat" in capsys.readouterr().err


# ------------------------------------------------------------------ scenario errors
def _scenario_file(tmp_path, body: str) -> Path:
    path = tmp_path / "scenarios" / "x_site.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("aoi: x_site\n" + body)
    return path


def test_scenario_inverted_period_names_the_file(tmp_path):
    path = _scenario_file(tmp_path, "railcars:\n  - {from: 2023-09-01, to: 2023-08-01, count: [1, 2]}\n")
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    assert str(path) in str(exc.value) and "railcars[0]" in str(exc.value)


@pytest.mark.parametrize("value", ["'next week'", "2023/09/01", "'31.08.2023'"])
def test_scenario_bad_date_names_the_file(tmp_path, value):
    path = _scenario_file(tmp_path, f"containers:\n  - {{from: {value}, to: 2023-10-01, teu: [1, 2]}}\n")
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    assert str(path) in str(exc.value) and "containers[0]" in str(exc.value)


@pytest.mark.parametrize("body", [
    "railcars:\n  - {from: 2023-09-01, count: [1, 2]}\n",                               # no 'to'
    "railcars:\n  - {from: 2023-08-01, to: 2023-09-01, count: [5, 2]}\n",               # lo > hi
    "railcars:\n  - {from: 2023-08-01, to: 2023-09-01, count: [1, 2], count_from: 1, count_to: 3}\n",
    "railcars:\n  - {from: 2023-08-01, to: 2023-09-01, count: [1, 2], mix: {hopper: 1.0}}\n",
    "visits:\n  - {from: 2023-08-01, to: 2023-09-01, berth: B1}\n",                      # no length
    "railcars: {from: 2023-08-01}\n",                                                    # not a list
    "ships: [\n",                                                                        # bad YAML
])
def test_scenario_errors_name_the_file(tmp_path, body):
    path = _scenario_file(tmp_path, body)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    assert str(path) in str(exc.value)


def test_scenario_for_checks_the_aoi_key(tmp_path):
    _scenario_file(tmp_path, "ships:\n  - {from: 2023-01-01, to: 2023-12-31, count: [0, 1]}\n")
    (tmp_path / "scenarios" / "x_site.yaml").rename(tmp_path / "scenarios" / "other_site.yaml")
    with pytest.raises(ScenarioError, match="other_site"):
        scenario_for("other_site", tmp_path)
    assert scenario_for("no_such_site", tmp_path).railcars == ()  # no file: a quiet site


def test_scenario_impossible_calendar_date_names_the_file(tmp_path):
    path = _scenario_file(tmp_path, "railcars:\n  - {from: 2023-09-01, to: 2023-09-31, count: [1, 2]}\n")
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    assert str(path) in str(exc.value)


def test_scenario_inverted_visit_is_refused(tmp_path):
    path = _scenario_file(tmp_path, "visits:\n  - {from: 2023-09-01, to: 2023-08-01, berth: B1, length_m: 100}\n")
    with pytest.raises(ScenarioError, match="swap"):
        load_scenario(path)


@pytest.mark.parametrize("body, fragment", [
    ("visits:\n  - [2023-07-01]\n", "mapping"),
    ("visits:\n  - {from: 2023-07-01, to: 2023-07-05, berth: B1, length_m: long}\n", "length_m"),
    ("railcars:\n  - {from: 2023-07-01, to: 2023-07-05, count: [a, b]}\n", "count"),
    ("railcars:\n  - {from: 2023-07-01, to: 2023-07-05, count: [1, 2], locomotives: [3, 1]}\n", "locomotives"),
    ("railcars:\n  - {from: 2023-07-01, to: 2023-07-05, count: [1, 2], mix: {tank: -1}}\n", "mix"),
    ("containers:\n  - {from: 2023-07-01, to: 2023-07-05, teu_from: x, teu_to: 5}\n", "teu_from"),
    ("weather: [1, 2]\n", "weather"),
])
def test_scenario_malformed_entries_are_refused_with_the_file_named(tmp_path, body, fragment):
    path = _scenario_file(tmp_path, body)
    with pytest.raises(ScenarioError, match=fragment) as exc:
        load_scenario(path)
    assert str(path) in str(exc.value)


def test_tarp_fraction_is_opt_in_and_only_changes_the_covers():
    """``tarp_fraction`` overrides the scenario's share of tarped stacks; left at None the
    scene is the scenario's own, byte for byte, so other tests and the pipeline see no change."""
    aoi = load_aoi("tikhoretsk_depot")
    day = date(2023, 9, 2)
    base = render_scene(aoi, day, "vhr", seed=12, clear=True)
    same = render_scene(aoi, day, "vhr", seed=12, clear=True, tarp_fraction=None)
    assert base.data.tobytes() == same.data.tobytes() and base.truth == same.truth
    none = render_scene(aoi, day, "vhr", seed=12, clear=True, tarp_fraction=0.0)
    full = render_scene(aoi, day, "vhr", seed=12, clear=True, tarp_fraction=1.0)

    def stacks(sc):
        return [o for o in sc.truth["objects"] if o["kind"] == "container"]

    assert stacks(base) and not all(o["tarped"] for o in stacks(base))
    assert not any(o["tarped"] for o in stacks(none))
    assert all(o["tarped"] for o in stacks(full))
    # Same stacks, same places, same TEU: only what covers them differs.
    for a, b in zip(stacks(none), stacks(full)):
        assert a["polygon"] == b["polygon"] and a["teu"] == b["teu"]
    assert len(stacks(none)) == len(stacks(full)) == len(stacks(base))
    assert not np.array_equal(none.data, full.data)
    with pytest.raises(ChangedetError, match="tarp_fraction"):
        render_scene(aoi, day, "vhr", seed=12, tarp_fraction=1.5)
