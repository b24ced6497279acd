"""Container TEU and ships on scenes from an independent generator (tests/altgen).

The generators were written from the real world without reading changedet's own
simulator; floors here are the figures measured on these seeds (bench/bench_altgen_port.py
uses others) less a margin. Unit tests pin the three fixes to the shadow walks and the
SAR sidelobe filter that the independent scenes called for.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import box

from changedet.grid import GridSpec
from changedet.objects.common import CountResult, Detection
from changedet.objects.containers import _shadow_lengths, count_containers
from changedet.objects.ships import count_ships, drop_sidelobes
from tests.altgen.container_yard import H_HC, H_STD, L20, L40, W, make_yard, score_yard
from tests.altgen.harbour import CLASSES, make_harbour, render_sar, render_vhr, score_ships


# Rendering dominates; the conftest hands files with slow tests out first.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def yards():
    return [make_yard(7003, gsd=0.5, condition="clear", n_zones=2),
            make_yard(7002, gsd=0.5, condition="low_sun", n_zones=2)]


@pytest.fixture(scope="module")
def harbour():
    return make_harbour(7121)


def test_yard_truth_is_self_consistent(yards):
    for sc in yards:
        for zid, tr in sc.truth.items():
            stacks = [s for s in sc.stacks if s.zone == zid]
            assert tr.teu == sum(s.tiers * (1 if s.size == "20" else 2) for s in stacks)
            assert tr.teu == tr.n20 + 2 * tr.n40
            assert tr.ground_teu == sum(1 if s.size == "20" else 2 for s in stacks)
            assert 1.0 <= tr.tiers <= 5.0
            for s in stacks:
                assert sc.zones[zid].contains(s.polygon)
                assert 1 <= s.tiers <= 5
                assert tr.tiers and round(s.height_m, 2) in {round(a * H_STD + (s.tiers - a) * H_HC, 2)
                                                             for a in range(s.tiers + 1)}
                assert math.isclose(s.polygon.area, (L20 if s.size == "20" else L40) * W, rel_tol=1e-6)
        polys = [s.polygon for s in sc.stacks]
        for i, p in enumerate(polys):
            for q in polys[i + 1:]:
                assert p.intersection(q).area < 1e-6
        assert 20 <= sc.sun_elevation_deg <= 65


def test_container_teu_on_independent_yards(yards):
    errors = []
    for sc in yards:
        res = count_containers(sc.image, sc.zones, sun_azimuth_deg=sc.sun_azimuth_deg,
                               sun_elevation_deg=sc.sun_elevation_deg)
        rows = score_yard(sc, res)
        errors += [r["teu_error"] for r in rows]
        # Ground slots are the robust part: within 15 % in every zone.
        assert all(r["ground_error"] <= 0.15 for r in rows), rows
    # Measured on these seeds after the fixes: mean 0.17, max 0.25 (the target,
    # 0.10, is not met on this generator: see bench/bench_altgen_port.py).
    assert np.mean(errors) <= 0.25, errors
    assert np.max(errors) <= 0.35, errors


def test_container_box_sizes_on_independent_yards(yards):
    """20 ft and 40 ft boxes per zone and in total (issue 6: numbers of boxes and TEU)."""
    share_errors = []
    for sc in yards:
        res = count_containers(sc.image, sc.zones, sun_azimuth_deg=sc.sun_azimuth_deg,
                               sun_elevation_deg=sc.sun_elevation_deg)
        doc = res.to_json()
        assert set(doc["by_type"]) >= {"teu", "20ft", "40ft"}
        # TEU = n20 + 2 n40, to the rounding of the reported figures.
        assert abs(doc["by_type"]["20ft"] + 2 * doc["by_type"]["40ft"] - doc["total"]) <= 0.3
        assert res.extras["by_type_uncertainty"]["20ft"] > 0 and res.extras["by_type_uncertainty"]["40ft"] > 0
        for pf in res.per_feature:
            tr, bt = sc.truth[pf["id"]], pf["by_type"]
            assert abs(bt["20ft"] + 2 * bt["40ft"] - pf["count"]) <= 0.3
            assert pf["by_type_uncertainty"]["20ft"] > 0
            share_errors.append(abs(bt["20ft"] / pf["count"] - tr.n20 / tr.teu))
            if tr.n40 == 0:
                # A zone of 20 ft boxes only: the paint changes every 6 m along its rows.
                assert bt["20ft"] / pf["count"] >= 0.9, (pf, tr)
    # Measured on these seeds: 0.15, 0.01, 0.26, 0.06 (mean 0.12); paired 20 ft boxes of
    # one colour read as 40 ft slots, shadow edges across 40 ft tops as 20 ft ends.
    assert np.mean(share_errors) <= 0.2, share_errors


def _walk_scene(mark: str):
    """A 10 x 4 px block (0.5 m pixels) on lit pavement, sun in the south at 45 degrees:
    its shadow runs 8 px north. ``mark``: a painted line 1 px wide across the shadow 3 px
    out, a pavement-coloured box top in the middle of the block, or nothing."""
    rows, cols = 40, 30
    blob = np.zeros((rows, cols), bool)
    blob[25:29, 10:20] = True
    lit = np.ones((rows, cols), bool)
    lit[17:25, 10:20] = False          # the shadow, 8 px
    lit[blob] = False
    if mark == "line":
        lit[21, :] = True              # a white line is as bright as lit asphalt in the shade
    if mark == "hole":
        blob[26:28, 14:16] = False     # a shaded lower top inside the block
        lit[26:28, 14:16] = False
    seen = np.ones((rows, cols), bool)
    return blob, lit, seen


@pytest.mark.parametrize("mark", ["none", "line", "hole"])
def test_shadow_walk_ends_on_lit_pavement_only(mark):
    blob, lit, seen = _walk_scene(mark)
    lengths, censored, r0, c0 = _shadow_lengths(blob, blob, lit, seen, 0.5, 180.0, 45.0)
    # Every walk leaves the block's north edge (none from the hole) and runs the full 8 px.
    assert set(r0.tolist()) == {25}
    assert np.all(lengths == 8) and not censored.any()


def test_shadow_walk_is_not_ended_by_a_container_in_pavement_colour():
    blob, lit, seen = _walk_scene("none")
    other = np.zeros_like(blob)
    other[19:23, 10:20] = True         # a grey box top inside the shadow: lit pavement's colour
    lit2 = lit | other
    lengths, censored, _, _ = _shadow_lengths(blob, blob | other, lit2, seen, 0.5, 180.0, 45.0)
    # The walk stops at the box (censored), never "ends" on it as if on lit ground.
    assert censored.all() and np.all(lengths == 2)


def test_harbour_truth_is_self_consistent(harbour):
    ships = harbour.ships
    for i, s in enumerate(ships):
        lo, hi = CLASSES[s.cls][0]
        assert lo <= s.length_m <= hi
        assert harbour.water.contains(s.polygon)
        rect = s.polygon.minimum_rotated_rectangle
        xs, ys = rect.exterior.coords.xy
        e = [(xs[k + 1] - xs[k], ys[k + 1] - ys[k]) for k in range(2)]
        k = int(np.argmax([math.hypot(*v) for v in e]))
        assert math.isclose(max(math.hypot(*v) for v in e), s.length_m, rel_tol=1e-6)
        head = math.degrees(math.atan2(e[k][0], e[k][1])) % 180.0
        assert min(abs(head - s.heading_deg), 180 - abs(head - s.heading_deg)) < 0.01
        if s.at == "at_berth":
            assert s.polygon.distance(harbour.land) <= 3.0
            assert any(s.polygon.intersects(b) for b in harbour.berths.values())
        else:
            assert s.polygon.distance(harbour.land) > 100.0
        for t in ships[i + 1:]:
            assert not s.polygon.intersects(t.polygon)


def test_ships_vhr_on_independent_harbour(harbour):
    found = truth = 0
    for k, cond in enumerate(["clear", "low_sun"]):
        img, valid, ships, berths, water, _, _ = render_vhr(harbour, 71010 + k, gsd=1.0, condition=cond)
        res = count_ships(img, berths, water=water, valid=valid)
        sc = score_ships(ships, res, rule="iou", min_iou=0.5)
        # Measured: F1 1.0 on both (0.57 and 0.75 before the foam and tug fixes: two tugs
        # missed, one merged with its wake), length within 2 %, heading within 1 degree.
        assert sc["f1"] >= 0.85, sc
        assert sc["length_err_median"] <= 0.05 and sc["heading_err_median_deg"] <= 3.0
        assert sc["state_accuracy"] == 1.0
        found += sc["tp"]
        truth += sc["truth"]
    assert truth >= 4


def test_ships_whole_with_a_shadow_across_the_deck(harbour):
    """A shadow across a deck is lit by the bluish sky alone: its NDWI (0.41 here) is as
    high as foam's. Foam may trim a hull (a wake trails outside it), never split it."""
    from shapely.affinity import rotate

    from tests.altgen.harbour import _burn

    img, valid, ships, berths, water, _, el = render_vhr(harbour, 71010, gsd=1.0, condition="clear")
    grid = GridSpec.of(img)
    sun, sky = math.sin(math.radians(el)), 0.13
    shade = np.array([0.70, 0.72, 0.72, 0.68]) * sky * np.array([1.7, 1.25, 0.9, 0.55]) / (sun + sky)
    out = img.copy(deep=True)
    big = [s for s in ships if s.length_m >= 80]
    assert len(big) >= 2
    for s in big:
        c = s.polygon.centroid
        band = rotate(box(c.x - 60, c.y - 6, c.x + 60, c.y + 6), -s.heading_deg, origin=c).intersection(s.polygon)
        m = _burn([(band, 1)], grid) > 0
        out.values[:, m] = shade[:, None].astype("float32")
    res = count_ships(out, berths, water=water, valid=valid)
    sc = score_ships(ships, res, rule="iou", min_iou=0.5)
    # Measured: F1 1.0, lengths 107 / 261 m for 106 / 262 m (split in two before: F1 0.40).
    assert sc["f1"] == 1.0, sc
    lengths = sorted(d.attrs["length_m"] for d in res.detections)
    for s in big:
        assert min(abs(v - s.length_m) for v in lengths) <= 0.05 * s.length_m


def test_ships_sar_on_independent_harbour(harbour):
    # Measured on this harbour: F1 1.0 in strong wind, 0.97 in moderate wind and 0.97 on
    # calm water (a 226 m tanker missed). On calm water (-22 dB) the sidelobe crosses of
    # the bright scatterers merge with the hulls; before they were cut off the merged
    # blobs (detect_vessels_sar's _trim_sidelobes) most vessels were lost (F1 0.19) and
    # moderate wind read 0.8.
    for k, (wind, floor) in enumerate((("strong", 0.9), ("moderate", 0.85), ("calm", 0.85))):
        img, ships, berths, water = render_sar(harbour, 71021 - k, wind=wind)
        res = count_ships(img, berths, water=water)
        sc = score_ships(ships, res, rule="centre", tol_m=10.0)
        assert sc["f1"] >= floor, (wind, sc)
        assert sc["state_accuracy"] >= 0.9


def _det(x, y, peak, size=30.0):
    return Detection("ship", "at_anchor", box(x - size, y - 5, x + size, y + 5), 1.0, None,
                     {"length_m": 2 * size, "peak_z": peak})


def test_drop_sidelobes_keeps_vessels_and_drops_what_a_bright_one_explains():
    grid = GridSpec.from_bounds("EPSG:32631", (0, 0, 1000, 1000), 10.0)
    bright = _det(500, 500, 1.0e5, 100.0)
    lobe = _det(500, 620, 40.0)          # 115 m from the hull: under the envelope (about 175)
    far = _det(500, 950, 40.0)           # 445 m away: the envelope is about 12 there
    vessel = _det(700, 520, 900.0)       # a vessel of its own next to it
    res = CountResult("ships", 4, {"at_anchor": 4}, ({"id": "b1", "count": 0, "by_type": {}},),
                      (bright, lobe, far, vessel), grid.crs)
    out = drop_sidelobes(res)
    assert out.detections == (bright, far, vessel)
    assert out.total == 3 and out.by_type == {"at_anchor": 3}
    assert out.extras["sidelobes_dropped"] == 1


def test_sar_hull_crossed_by_crane_sidelobes_stays_one_vessel():
    """A 200 x 40 m hull moored along a north-south quay, on calm water, crossed by the row
    sidelobes of three bright cranes on the quay: the blob is too big as it is, and the
    sidelobe trim used to cut the hull itself into 2-5 "vessels"."""
    from scipy import ndimage

    import changedet.objects.vessels as V

    res, n = 10.0, 200
    grid = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 500000.0 + n * res, 4000000.0 + n * res), res)
    first = 1.43 * V.SAR_RESOLUTION_M
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        sig = np.full((n, n), 10 ** (-22 / 10))
        sig[:, 150:] = 10 ** (-6 / 10)  # the quay, to the east
        sig[60:80, 144:148] = 1.0       # the hull, 0 dB
        sig = ndimage.gaussian_filter(sig, 0.6)
        rr, cc = np.mgrid[0:n, 0:n]
        for r, c, db in ((64, 153, 25.0), (70, 153, 25.0), (76, 153, 25.0), (71, 146, 15.0)):
            a = 10 ** (db / 10)
            dr, dc = np.abs(rr - r) * res, np.abs(cc - c) * res
            sig = sig + a * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 0.8 ** 2))
            sig = sig + np.where(dr >= first, V.SIDELOBE_PEAK * a * (first / np.maximum(dr, first)) ** 2, 0) \
                * np.exp(-(cc - c) ** 2 / 0.8)
            sig = sig + np.where(dc >= first, V.SIDELOBE_PEAK * a * (first / np.maximum(dc, first)) ** 2, 0) \
                * np.exp(-(rr - r) ** 2 / 0.8)
        img = grid.attach((sig * rng.gamma(4.4, 1 / 4.4, sig.shape))[None].astype("float32"), bands=["VV"])
        water = box(*grid.bounds).difference(box(grid.x[150] - 5, grid.bounds[1], grid.bounds[2], grid.bounds[3]))
        hull = box(grid.x[144] - 5, grid.y[79] - 5, grid.x[147] + 5, grid.y[60] + 5)
        found = [d for d in V.detect_vessels_sar(img, water=water).detections if d.polygon.intersects(hull)]
        # Measured: one vessel of 215-221 m each seed (2 pieces of 61 and 153 m before).
        assert len(found) == 1, [d.attrs["length_m"] for d in found]
        assert 170 <= found[0].attrs["length_m"] <= 250
