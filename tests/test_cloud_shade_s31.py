"""A sunlit yard right beside a cloud is not the cloud's shadow; a shadow there still is.

Blocks within ``CLOUD_VEIL_M`` of a cloud's mask did not vote in the lit-share test (a
cloud's thin veil adds its own light), so windows beside a cloud had too few voters and
the colour cue decided alone: a packed yard of dark cars and their shadows has the
dimmed ground's colour, and on the independent railyard generator a yard between two
clouds lost 39 of its 41 sunlit cars. Blocks also vote on their 90th-percentile pixel
(lit ballast strips under 2 m between dark cars and their shadows). A veil adds a smooth light that raises all pixels
of a 2 m block alike; it cannot raise the spread between a block's bright and dark
pixels. Veil blocks now vote on that spread, which inside a cloud's shadow stays under
``CLOUD_SHADE_MAX_KEEP`` of the lit level like every other brightness there.
The yard is the independent generator's (a tuning scene); the guard that a shadow
squeezed between clouds stays marked uses ``test_cloud_shade_yards``'s physics (direct
beam plus Rayleigh skylight).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import test_cloud_shade_yards as Y  # noqa: E402

from changedet.objects.cloud_shadow import cloud_shade  # noqa: E402

# Two cloud banks 44 m apart over the northern 100 m of the frame, a yard's strip
# between them: every block of the strip lies within CLOUD_VEIL_M (20 m) of a mask.
GAP = (70.0, 114.0)


def _clouds(yy, xx, r=None):
    return ((xx < GAP[0]) | (xx > GAP[1])) & (yy < 100.0)


def _gap(yy, xx):
    """The strip between the banks, 2 m clear of their masks."""
    return (xx > GAP[0] + 2.0) & (xx < GAP[1] - 2.0) & (yy < 95.0)


def _shade(monkeypatch, between, shadow):
    monkeypatch.setattr(Y, "_in_shadow", shadow)
    monkeypatch.setattr(Y, "_near_cloud", _clouds)
    pix, grid, cloud, truth, model = Y._scene(between, 1)
    shade = cloud_shade(pix, grid, cloud, model=model, sun_azimuth_deg=Y.SUN_AZ, sun_elevation_deg=Y.SUN_EL,
                        object_height_m=4.0, edge_m=0.0)
    n = truth.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] * Y.RES
    return shade, truth, _gap(yy, xx)


@pytest.mark.parametrize("between", [Y.DARK_GRAVEL, Y.GRASS], ids=["dark gravel", "grass"])
def test_shadow_between_clouds_is_still_shade(monkeypatch, between):
    """A strip between two cloud banks, all of it in the banks' shadow (and within 20 m of
    a mask): its veil blocks vote dark and it stays marked."""
    shade, truth, gap = _shade(monkeypatch, between, lambda yy, xx, heavy=False: yy < 100.0)
    print(f"\nshaded strip marked {shade[gap].mean():.2f}")
    assert shade[gap].mean() > 0.95


def test_sunlit_yard_between_two_clouds_is_observed():
    """Altgen tuning scene 6617 (0.3 m, partly cloudy): a packed yard of dark cars in the
    sun between two clouds, within 20 m of either mask. Base: 39 of its 41 sunlit cars
    given up; the one car in a cloud's shadow must stay given up."""
    from tests.altgen.railyard import make_railyard

    from changedet.objects.railcars import count_railcars

    sc = make_railyard(6617, gsd_m=0.3, condition="partly_cloudy")
    res = count_railcars(sc.image, sc.tracks, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                         sun_elevation_deg=sc.sun_elevation_deg)
    runs = {p["id"]: p.get("unobserved_runs_m", []) for p in res.per_feature}

    def given_up(c):
        u = 0.5 * (c.u0_m + c.u1_m)
        return any(a <= u <= b for a, b in runs.get(c.track_id, []))

    cars = [c for c in sc.cars if c.observed]
    lit_lost = sum(given_up(c) for c in cars if not c.in_cloud_shadow)
    shade_lost = sum(given_up(c) for c in cars if c.in_cloud_shadow)
    n_lit, n_shade = sum(not c.in_cloud_shadow for c in cars), sum(c.in_cloud_shadow for c in cars)
    print(f"\nsunlit cars given up {lit_lost}/{n_lit}, shaded cars given up {shade_lost}/{n_shade}")
    assert lit_lost <= 10
    assert shade_lost == n_shade


def _shadow_core_marked(between, seed: int) -> float:
    """Share of the heavy shadow's core (clear of the cloud) that cloud_shade marks, on
    test_cloud_shade_yards' scene with ``between`` the tracks."""
    pix, grid, cloud, truth, model = Y._scene(between, seed, heavy=True)
    shade = cloud_shade(pix, grid, cloud, model=model, sun_azimuth_deg=Y.SUN_AZ, sun_elevation_deg=Y.SUN_EL,
                        object_height_m=4.0, edge_m=0.0)
    n = truth.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] * Y.RES
    return float(shade[(yy > 80) & ~Y._near_cloud(yy, xx, 95.0)].mean())


@pytest.mark.parametrize("seed", [1, 2])
def test_white_cars_in_a_thick_cloud_shadow_do_not_light_it(monkeypatch, seed):
    # Review RCSHADE: a block's brightest pixels vote lit against the scene's sunlit
    # level, and a white roof (albedo 0.7) under skylight alone still reaches it in red.
    # Skylit pixels (bluer than the lit ground) do not vote by their peak: the shadow's
    # core over a yard of half white, half black cars stays marked.
    monkeypatch.setattr(Y, "CAR_TOPS", np.array([[0.65, 0.68, 0.70, 0.72], [0.05, 0.05, 0.05, 0.06]]))
    assert _shadow_core_marked(Y.DARK_GRAVEL, seed) > 0.9


def test_block_quantiles_match_numpy():
    from changedet.objects.cloud_shadow import _block_quantiles

    rng = np.random.default_rng(0)
    x = rng.random((2, 30, 20, 16))
    x[x < 0.1] = np.nan
    x[0, :3] = np.nan
    for q in (10.0, 50.0, 90.0):
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
            ref = np.nanpercentile(x, q, axis=3)
        np.testing.assert_allclose(_block_quantiles(x, q)[0], ref, rtol=0, atol=1e-12, equal_nan=True)
    hi, lo = _block_quantiles(x, 90.0, 10.0)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(hi - lo, np.nanpercentile(x, 90.0, axis=3) - np.nanpercentile(x, 10.0, axis=3),
                                   rtol=0, atol=1e-12, equal_nan=True)


def test_grass_between_tracks_in_a_thinner_cloud_shadow_does_not_light_it(monkeypatch):
    # Review RCSHADE: a shadow that keeps 0.3 of the beam over grass strips between the
    # tracks: the grass reaches the lit level in NIR by its leaves' albedo, not by sun.
    monkeypatch.setattr(Y, "CLOUD_CUT", 0.70)
    assert _shadow_core_marked(Y.GRASS, 1) > 0.9
