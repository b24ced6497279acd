"""Stack heights from shadows at an oblique sun, stack by stack.

A shadow walk advances one pixel size per step whatever its direction; an earlier
conversion took a diagonal step for longer than a pixel and made every stack up to 41 %
too tall at a sun in the south-east (azimuth 135 degrees). And at an oblique sun the ray
back from a walk near one end of a stack crosses into the next, taller stack of the row:
heights are measured per stack, from a low quantile of the stack's own walks. A stack
whose every shadow runs into the next block (hidden) is at least as tall as its longest
walk; its height comes from the block's measured stacks at or above that bound
(Kaplan-Meier over stacks), not from the pooled walks, whose rays cross the taller
stacks behind the edge.

Footprints: shade is lit by the sky alone and bluer than lit pavement. Its colour is
measured inside the stacks' own shadows, and paint about as bright as the ground (brown,
pale blue) is told from shade by its hue.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects.containers import (SLOT_M2, _block_tiers, _km_mean_above, _km_quantile, _learn_shade,
                                          _reclassify, _walk_to_tiers, count_containers)
from changedet.objects.ground import GroundModel
from tests.test_objects_shadows import BAY_TIERS, PAVEMENT, _yard

# Shade lit by a blue sky: a larger share of blue than of red and near-infrared.
SKYLIGHT = np.array([0.34, 0.28, 0.24, 0.20], "float32")   # B, G, R, NIR
SHADE = PAVEMENT * SKYLIGHT
BROWN, PALE_BLUE = np.array([0.07, 0.07, 0.10, 0.15], "float32"), np.array([0.18, 0.12, 0.08, 0.20], "float32")


def test_walk_step_is_one_pixel_in_every_direction():
    # 0.5 m pixels, sun at 45 degrees: a step of 0.5 m is 0.5 m of height, 0.193 tiers.
    for az in (180.0, 135.0, 150.0, 90.0):
        assert _walk_to_tiers(0.5, az, 45.0) == pytest.approx(0.5 / 2.59, rel=1e-9)


def test_km_quantile_known_answers():
    lengths = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert _km_quantile(lengths, np.zeros(10, bool), 0.3) == 3.0
    assert _km_quantile(lengths, np.zeros(10, bool), 0.5) == 5.0
    # The long walks cut short: the low quantile is still seen, the median is not.
    cens = lengths > 4
    assert _km_quantile(lengths, cens, 0.3) == 3.0
    assert _km_quantile(lengths, cens, 0.5) is None


@pytest.mark.parametrize("azimuth,elevation", [(150.0, 45.0), (215.0, 60.0), (150.0, 25.0)])
def test_stack_heights_at_an_oblique_sun(azimuth, elevation):
    """Bays of 1-5 tiers (mean 3) in three blocks, sun off the block axes."""
    image, grid, zones, teu, slots = _yard(BAY_TIERS, elevation, azimuth=azimuth)
    mean_tiers = teu / slots
    res = count_containers(image, zones, sun_azimuth_deg=azimuth, sun_elevation_deg=elevation)
    est_slots = sum(d.attrs["ground_slots"] for d in res.detections)
    big = [d for d in res.detections if d.attrs["area_m2"] > 10 * SLOT_M2]
    print(f"\nsun {azimuth}/{elevation} deg: truth {teu} TEU ({mean_tiers:.2f} tiers), estimate {res.total} "
          f"({est_slots:.1f} slots), tiers {[d.attrs['tiers'] for d in big]} {[d.attrs['tiers_method'] for d in big]}")
    assert len(big) == 3
    for d in big:
        assert abs(d.attrs["tiers"] - mean_tiers) <= 0.35, d.attrs
    assert abs(res.total / est_slots - mean_tiers) <= 0.35


def test_shade_is_sampled_inside_shadows_that_end_on_lit_pavement():
    # Sun due south: shadows fall north (towards row 0). A block on rows 20-29 throws
    # 6 px of shade on rows 14-19; a block on rows 40-49 throws a shadow cut short by
    # the first block's south face (censored): none of it is sampled.
    pix = np.broadcast_to(PAVEMENT[:, None, None], (4, 60, 60)).copy()
    box = np.zeros((60, 60), bool)
    box[20:30, 10:50] = box[40:50, 10:50] = True
    pix[:, box] = BROWN[:, None]
    pix[:, 14:20, 10:50] = SHADE[:, None, None]
    pix[:, 30:40, 10:50] = SHADE[:, None, None]
    lit = ~box & (pix.mean(axis=0) > 0.15)
    s = _learn_shade(box, box, lit, np.ones_like(box), pix, 0.5, 180.0, 50.0)
    # 40 walks of 6 steps; the first (edge) and last (penumbra) steps are left out.
    assert s.shape == (40 * 4, 4)
    np.testing.assert_array_equal(s, np.broadcast_to(SHADE, s.shape))
    # Too few walks end on lit pavement: nothing is learnt.
    assert _learn_shade(box & (np.arange(60) < 13)[None, :], box, lit, np.ones_like(box), pix, 0.5, 180.0,
                        50.0) is None


def test_hue_tells_paint_from_shade_and_deep_shade_is_ground():
    rng = np.random.default_rng(0)
    apron = PAVEMENT + rng.normal(0, 0.004, (400, 4)).astype("float32")
    shade = SHADE + rng.normal(0, 0.003, (200, 4)).astype("float32")
    # Without shadows in the apron, shade is assumed grey (30 % of lit).
    model = GroundModel.from_samples(apron)
    np.testing.assert_allclose(model.shadow, 0.3 * model.lit)
    names = ["lit", "shade", "half lit", "deep shade", "brown", "pale blue", "white"]
    px = np.stack([PAVEMENT, SHADE, 0.5 * (PAVEMENT + SHADE), 0.4 * SHADE, BROWN, PALE_BLUE,
                   np.array([0.36, 0.36, 0.35, 0.38], "float32")], axis=1)[:, None, :]
    old_d, _ = model.classify(px)
    new_model, d, alpha, hue = _reclassify(model, shade, apron, px, np.ones(px.shape[1:], bool))
    np.testing.assert_allclose(new_model.shadow, SHADE, atol=0.002)
    ground = (d <= 4) & (hue <= 4)
    assert dict(zip(names, ground[0])) == {"lit": True, "shade": True, "half lit": True, "deep shade": True,
                                           "brown": False, "pale blue": False, "white": False}
    # Against the assumed grey shade, brown passed for half-shaded ground and deep
    # shade for paint; brown's hue is far off the pavement's, by more than twice the
    # threshold.
    assert old_d[0, 4] <= 4 and old_d[0, 3] > 4
    assert hue[0, 4] > 8
    assert alpha[0, 0] == pytest.approx(1.0, abs=0.05) and alpha[0, 1] == pytest.approx(0.0, abs=0.05)


def test_brown_and_pale_blue_yard_under_a_blue_sky():
    """Every box brown or pale blue, shade bluer than grey, 2 tiers at a 65 degree sun.
    Against the assumed grey shade half the boxes were missed (106 of 180 slots, tiers
    1.7-3.7): the footprint is now the boxes and the gaps between them, the slots 180, the
    tiers 2."""
    paints = np.stack([BROWN, PALE_BLUE])
    image, grid, zones, teu, slots = _yard(2, 65.0, paints=paints, skylight=SKYLIGHT)
    res = count_containers(image, zones, sun_azimuth_deg=180.0, sun_elevation_deg=65.0)
    est_slots = sum(d.attrs["ground_slots"] for d in res.detections)
    big = [d for d in res.detections if d.attrs["area_m2"] > 10 * SLOT_M2]
    print(f"\ntruth {teu} TEU ({slots} slots), estimate {res.total} ({est_slots:.1f} slots), "
          f"tiers {[d.attrs['tiers'] for d in big]}")
    # The gaps of 0.35-0.45 m between boxes fill in on 0.5 m pixels (area over a box's
    # 14.8 m^2 gave 213.8 slots); counted row by row along the blocks they are not boxes.
    assert abs(est_slots - slots) <= 0.05 * slots
    assert len(big) == 3
    for d in big:
        assert abs(d.attrs["tiers"] - 2.0) <= 0.35, d.attrs


def _none():
    return np.array([]), np.array([])


def test_km_mean_above_known_answers():
    measured = (np.array([1.0, 2, 3, 3, 4]), np.ones(5))
    # No bounds: the plain mean of the stacks at least 3 tiers tall.
    assert _km_mean_above(measured, _none(), 2.5) == pytest.approx(10 / 3)
    measured = (np.array([1.0, 1, 3, 3, 4]), np.ones(5))
    # Three stacks known to be at least 3 tiers (bound 2.2): they stand in for stacks of
    # 3 and 4 tiers in the measured proportion, 2:1.
    hidden = (np.full(3, 2.2), np.ones(3))
    assert _km_mean_above(measured, hidden, 2.2) == pytest.approx(10 / 3)
    assert _km_mean_above(measured, hidden, 0.5) == pytest.approx((1 + 1 + 6 * 10 / 3) / 8)
    # Areas weigh the stacks: a 4-tier stack twice as large.
    assert _km_mean_above((np.array([1.0, 1, 3, 3, 4]), np.array([1.0, 1, 1, 1, 2])), _none(),
                          2.5) == pytest.approx((3 + 3 + 2 * 4) / 4)
    # Fewer than three measured stacks reach the bound: nothing to say.
    assert _km_mean_above(measured, hidden, 3.5) is None


def test_hidden_stacks_from_the_measured_stacks_not_the_pooled_walks():
    # Five measured edge stacks (1, 1, 3, 3, 4 tiers) and three whose shadows all ran
    # into the next block after 2.2 tiers' worth. The pooled walks say 4.5 tiers (rays
    # crossing taller stacks behind the edge): the hidden stacks take 10/3 instead.
    stacks = ([1.0, 1, 3, 3, 4], [1.0] * 5, [(2.2, 1.0)] * 3)
    mean, n, sd = _block_tiers(stacks, 4.5)
    assert n == 8
    assert mean == pytest.approx((1 + 1 + 3 + 3 + 4 + 3 * 10 / 3) / 8)
    # Bounds above every measured stack but one: the bound or the pooled walks, the higher.
    stacks = ([1.0, 1, 3, 3, 4], [1.0] * 5, [(3.5, 1.0)] * 3)
    assert _block_tiers(stacks, 4.5)[0] == pytest.approx((12 + 3 * 4.5) / 8)
    assert _block_tiers(stacks, 2.0)[0] == pytest.approx((12 + 3 * 4) / 8)
    # No stack measured: the block has no estimate of its own.
    assert _block_tiers(([], [], [(2.0, 1.0)]), 3.0) is None


def test_zone_whose_apron_is_unobserved_uses_the_other_zones_pavement_for_hue():
    """The apron of the yard is masked (NaN): its ground model, and the lit pavement's
    hue of the shade test, come from another zone's apron; it used to fail with an
    IndexError on the empty apron."""
    from shapely.geometry import box

    from changedet.objects.containers import _mask

    image, grid, zones, teu, slots = _yard(2, 65.0, skylight=SKYLIGHT)
    yard = zones["Z1"]
    res = grid.resolution
    ring = _mask(yard.buffer(3.0 * res), grid) & ~_mask(yard.buffer(-1.0), grid)
    v = image.values.copy()
    v[:, ring] = np.nan
    image = image.copy(data=v)
    c, f, height = grid.transform.c, grid.transform.f, grid.shape[0] * res
    pavement_only = box(c + 2, f - height / 2 - 5, c + 10, f - height / 2 + 5)
    r = count_containers(image, {"Z1": yard, "Z2": pavement_only}, sun_azimuth_deg=180.0, sun_elevation_deg=65.0)
    z1, z2 = r.per_feature
    assert z2["count"] == 0
    assert z1["count"] == pytest.approx(teu, rel=0.1)


@pytest.mark.parametrize("box_m, share", [(6.06, 1.0), (12.19, 0.0)])
def test_box_runs_tell_20ft_rows_from_40ft_rows(box_m, share):
    """Rows of boxes, each box a paint of its own with a dark 0.4 m gap: runs along the rows
    are 20 ft or 40 ft long, whichever way the block lies."""
    from changedet.objects.containers import _box_runs, _share_20ft

    res = 0.25
    rng = np.random.default_rng(3)
    paints = np.array([[0.30, 0.10, 0.08], [0.08, 0.12, 0.35], [0.10, 0.28, 0.12], [0.35, 0.33, 0.30]])
    n_rows, n_bays = 5, int(round(48.0 / box_m))
    h, w = int(n_rows * 2.84 / res) + 8, int(n_bays * (box_m + 0.4) / res) + 8
    pix = np.full((3, h, w), 0.2)
    blob = np.zeros((h, w), bool)
    for r in range(n_rows):
        r0 = 4 + int(r * 2.84 / res)
        for b in range(n_bays):
            c0 = 4 + int(b * (box_m + 0.4) / res)
            c1 = c0 + int(box_m / res)
            pix[:, r0:r0 + int(2.44 / res), c0:c1] = paints[(r + b) % 4][:, None, None]
            blob[r0:r0 + int(2.84 / res), c0:c1 + int(0.4 / res)] = True
    pix += rng.normal(0, 0.005, pix.shape)
    for k in (0, 1):   # as drawn, and turned a quarter (rows along the image's columns)
        b_, p_ = (blob, pix) if k == 0 else (blob.T, pix.transpose(0, 2, 1))
        runs = _box_runs(b_, p_, res)
        est, sd = _share_20ft(runs, (0.0, 0.0, 0), (0.0, 0.0, 0), res)
        assert abs(est - share) <= 0.1, (runs, est)
        assert 0.0 < sd < 0.3


def test_containers_refuse_a_crs_whose_units_are_not_ground_metres():
    # Web Mercator at 60 degrees N: one unit is 0.5 m on the ground; the counter measured
    # box lengths and shadows in units (TEU 5x too high on the same yard).
    from shapely.geometry import box as _box

    from changedet.grid import GridSpec
    from changedet.objects.checks import ResolutionError
    from changedet.objects.containers import count_containers

    x0, y0 = 1_113_195.0, 8_399_738.0  # about 10 E, 60 N in EPSG:3857
    grid = GridSpec.from_bounds("EPSG:3857", (x0, y0, x0 + 200, y0 + 200), 1.0)
    img = grid.attach(np.full((4,) + grid.shape, 0.2, np.float32), bands=["B", "G", "R", "NIR"])
    with pytest.raises(ResolutionError, match="UTM"):
        count_containers(img, {"z": _box(x0 + 20, y0 + 20, x0 + 180, y0 + 180)})
