"""Railcars on tracks a cloud reaches: the faint-edge reading only near a cloud's shadow.

A cloud's shadow dims the ground and the cars alike over its faint edge, so near it
darkness is judged against the light read beside the track, on the light as recorded
(``thin_cloud``). It was applied to every track with any unobserved sample, the cloud
itself or the image's edge included, over the whole track: cars hundreds of metres from
any shadow were read without the haze removed, and dark cars on dark ground were lost
(altgen partly cloudy: 46 of 56 far detections kept at 0.5 m, 20 of 32 at 1 m, when a
cloud was painted over one end of a clear scene). Now only the track within
``EDGE_DIMMING_M`` of a cloud's shadow (the shade found less the cloud's own thin edge)
is read that way, the rest of the track as in clear sky, merged per position. The
reading near a shadow keeps its guard:
``tests/test_objects_matrix.py::test_railcars_under_cloud_shadow_are_unobserved_not_counted``.
"""

from __future__ import annotations

import numpy as np
import pytest

from scipy import ndimage
from shapely.geometry import LineString

from changedet.grid import GridSpec
from changedet.objects import railcars as R
from changedet.objects.cloud_shadow import cloud_shade
from changedet.objects.strips import sample_strip
from tests.altgen.railyard import make_railyard

CLOUD = np.array([0.75, 0.76, 0.76, 0.74])


def _iou(p, q) -> float:
    return p.intersection(q).area / p.union(q).area


@pytest.mark.slow
@pytest.mark.parametrize("seed, gsd", [(6618, 0.5), (5695, 1.0)])
def test_a_cloud_over_one_end_leaves_cars_far_from_it_as_in_clear_sky(seed, gsd):
    sc = make_railyard(seed, gsd_m=gsd, condition="clear")
    g = GridSpec.of(sc.image)
    kw = dict(sun_azimuth_deg=sc.sun_azimuth_deg, sun_elevation_deg=sc.sun_elevation_deg)
    clear = R.count_railcars(sc.image, sc.tracks, **kw)
    # A 30 m cloud over the start of T1; no shadow of it in the frame.
    p0 = sc.tracks["T1"].interpolate(0.0)
    rr, cc = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
    xs, ys = g.xy(rr, cc)
    cloud = np.hypot(xs - p0.x, ys - p0.y) <= 30.0
    values = sc.image.values.copy()
    values[:, cloud] = CLOUD[:, None]
    image = sc.image.copy(data=values)
    valid = sc.image.isel(band=0).copy(data=~cloud)
    res = R.count_railcars(image, sc.tracks, valid=valid, **kw)
    assert any(p["unobserved_m"] > 0 for p in res.per_feature)

    def far(dets):
        return [d for d in dets if np.hypot(d.polygon.centroid.x - p0.x, d.polygon.centroid.y - p0.y) > 75.0]

    before, after = far(clear.detections), far(res.detections)
    assert len(before) >= 30
    kept = sum(1 for d in before if any(_iou(d.polygon, e.polygon) >= 0.5 for e in after))
    assert kept >= 0.9 * len(before), (kept, len(before))
    assert abs(len(after) - len(before)) <= 0.05 * len(before) + 1


def test_the_thin_reading_is_merged_per_position(monkeypatch):
    # A cloud's shadow (given) over the start of T1: within EDGE_DIMMING_M of it the
    # track is read as under the faint edge, beyond it as in clear sky. _occupancy is
    # stubbed to report which reading it was asked for; the merged occupancy reaches
    # _split_cars.
    sc = make_railyard(6618, gsd_m=0.5, condition="clear")
    g = GridSpec.of(sc.image)
    rr, cc = np.meshgrid(np.arange(g.shape[0]), np.arange(g.shape[1]), indexing="ij")
    xs, ys = g.xy(rr, cc)
    p0 = sc.tracks["T1"].interpolate(0.0)
    far = sc.tracks["T1"].interpolate(1.0, normalized=True)
    shadow = np.hypot(xs - p0.x, ys - p0.y) <= 20.0
    cloud = np.hypot(xs - far.x, ys - far.y) <= 3.0   # a cloud must be in the mask for shade to be sought
    monkeypatch.setattr(R, "cloud_shade", lambda pix, grid, cl, **kw: shadow & ~cl)

    def occupancy(strip, refs, *, thin_cloud=False, **kw):
        n = strip.along_m.size
        return np.full(n, bool(thin_cloud)), np.ones(n, bool)

    got = {}
    real_split = R._split_cars

    def split(strip, occ, seen, *a, **kw):
        got[len(got)] = (strip, occ.copy())
        return real_split(strip, occ, seen, *a, **kw)

    monkeypatch.setattr(R, "_occupancy", occupancy)
    monkeypatch.setattr(R, "_split_cars", split)
    R.count_railcars(sc.image, sc.tracks, valid=sc.image.isel(band=0).copy(data=~cloud),
                     sun_azimuth_deg=sc.sun_azimuth_deg, sun_elevation_deg=sc.sun_elevation_deg)
    ids = list(sc.tracks)
    for k, (strip, occ) in got.items():
        pts = np.column_stack([strip.x[strip.across_m.size // 2], strip.y[strip.across_m.size // 2]])
        d = np.hypot(pts[:, 0] - p0.x, pts[:, 1] - p0.y) - 20.0   # centreline to the shadow's edge
        # Within the zone (less the strip's half width and a 5 m block's diagonal) and beyond it.
        assert occ[d <= R.EDGE_DIMMING_M - 2.6 - 7.1].all(), ids[k]
        assert not occ[d >= R.EDGE_DIMMING_M + 2.6 + 7.1].any(), ids[k]
    assert any(occ.any() and not occ.all() for _, occ in got.values())


def test_the_clouds_own_edge_is_not_its_shadow_at_fine_pixels():
    # cloud_shade draws the cloud's thin edge on coarse blocks: at 0.3 m fragments of it
    # lay past CLOUD_EDGE_M and each grew into a 40 m dimmed zone (review RCLOUD). A
    # ragged cloud with no sun and no ground model has an edge and no shadow: nothing
    # near the track beside it may be dimmed.
    res = 0.3
    g = GridSpec.from_bounds("EPSG:32652", (0.0, 0.0, 150.0, 150.0), res)
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.normal(size=g.shape), 20 / res)
    cloud = noise > np.percentile(noise, 80)
    shade = cloud_shade(np.full((4,) + g.shape, 0.2), g, cloud)
    assert shade.any()
    line = LineString([(10.0, 75.0), (140.0, 75.0)])
    strip = sample_strip(np.zeros((1,) + g.shape), g, line, half_width_m=2.6, step_m=0.5)
    dimmed, window = R._dimmed_near_tracks(shade, cloud, g, {"T": strip})
    assert not R._hidden_along(dimmed, window, strip).any()
    # A real shadow patch beside the track is: the zone reaches the track.
    xs, ys = g.xy(*np.indices(g.shape))
    patch = (np.hypot(xs - 75.0, ys - 100.0) <= 8.0) & ~R._near(cloud, g, 10.0)
    assert patch.any()
    dimmed, window = R._dimmed_near_tracks(shade | patch, cloud, g, {"T": strip})
    assert R._hidden_along(dimmed, window, strip).any()


def test_near_marks_pixels_within_the_distance():
    g = GridSpec.from_bounds("EPSG:32652", (0.0, 0.0, 100.0, 100.0), 0.5)
    mask = np.zeros(g.shape, bool)
    mask[100, 100] = True   # the pixel centred at (50.25, 49.75)
    xs, ys = g.xy(*np.indices(g.shape))
    d = np.hypot(xs - 50.25, ys - 49.75)
    for block in (1.0, 5.0):
        near = R._near(mask, g, 20.0, block_m=block)
        slack = 1.5 * block
        assert near[d <= 20.0 - slack].all()
        assert not near[d > 20.0 + slack].any()
    assert not R._near(np.zeros(g.shape, bool), g, 20.0).any()


def test_hidden_along_reads_the_mask_under_each_position():
    g = GridSpec.from_bounds("EPSG:32652", (0.0, 0.0, 100.0, 20.0), 0.5)
    line = LineString([(5.0, 10.0), (95.0, 10.0)])
    mask = np.zeros(g.shape, bool)
    xs, ys = g.xy(*np.indices(g.shape))
    mask[(xs >= 40.0) & (xs <= 50.0) & (ys >= 11.5)] = True   # beside the centreline, within the strip
    strip = sample_strip(np.zeros((1,) + g.shape), g, line, half_width_m=2.6, step_m=0.5)
    hit = R._hidden_along(mask, g, strip)
    u = strip.along_m + 5.0
    assert hit[(u >= 40.5) & (u <= 49.5)].all()
    assert not hit[(u < 39.0) | (u > 51.0)].any()
