"""Railcars under a thin cloud (or the faint edge of a cloud's shadow): ground and cars
are dimmed alike, so darkness is judged against the light read beside the track.

Synthetic strips with known answers (no simulator): a dimmed stretch of empty track
must stay empty, and dark cars, lit or under the same cloud, must stay occupied.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from changedet.objects import railcars as R
# The ballast, its references and the strip builder of the light tests.
from tests.test_railcar_light import LIT, REFS, SHADOW, STEP, _strip

NAN = np.full(4, np.nan)
LIT_ONLY = {"lit": LIT, "lit_sd": REFS["lit_sd"], "shadow": NAN, "shadow_sd": NAN}
N = 120          # 60 m of track
DIM = slice(40, 70)   # a 15 m stretch under the cloud's faint edge


def _ground(colour: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = 1 + 0.05 * rng.standard_normal((1, 11, N))
    return colour[:, None, None] * tex + 0.002 * rng.standard_normal((4, 11, N))


ACROSS = (np.arange(11) - 5) * STEP


def _occ(vals, refs=REFS, *, thin_cloud=True, own=True):
    # Sun on the +across side; with ``own``, high enough that only a car's own shadow
    # reaches the anti-sun side (the rule that reads a dark anti-sun side as a car is on).
    occ, seen = R._occupancy(_strip(vals), refs, min_contrast=4.0, vhr=True, sun_left=True,
                             anti_shadow_is_own=own, thin_cloud=thin_cloud)
    assert seen.all()
    return occ


SUN_SIDE = ACROSS >= 1.95


@pytest.mark.parametrize("share", [0.4, 0.6])
def test_a_dimmed_stretch_of_empty_track_beside_a_shadow_is_empty(share):
    # The track's sun side lies in a building's shadow; a thin cloud dims a stretch of
    # all of it. The anti-sun side, dimmed, must not read as a car's own shadow, nor the
    # dimmed centre as paint too dark for ballast.
    vals = _ground(LIT, seed=1)
    vals[:, SUN_SIDE, :] = _ground(SHADOW, seed=11)[:, SUN_SIDE, :]
    vals[:, :, DIM] *= share
    assert not _occ(vals).any()
    # Read against full light (no cloud in the scene) the same stretch is taken for a car:
    # the case the light share is for.
    assert _occ(vals, thin_cloud=False)[DIM].mean() > 0.5


def test_a_dimmed_stretch_without_a_shadow_colour_is_empty():
    vals = _ground(LIT, seed=2)
    vals[:, :, DIM] *= 0.6
    assert not _occ(vals, LIT_ONLY).any()
    assert _occ(vals, LIT_ONLY, thin_cloud=False)[DIM].mean() > 0.5
    # A car, not ground-coloured, in the same dimmed stretch is still seen.
    body = np.abs(ACROSS) <= 1.4
    vals[:, body, 44:66] = np.array([0.05, 0.04, 0.09, 0.05])[:, None, None]
    assert _occ(vals, LIT_ONLY)[46:64].mean() > 0.9


@pytest.mark.parametrize("share", [1.0, 0.6])
@pytest.mark.parametrize("sun_side", ["lit", "shadow"])
def test_a_dark_car_is_occupied_in_sun_and_under_a_thin_cloud(share, sun_side):
    vals = _ground(LIT, seed=3)
    if sun_side == "shadow":
        vals[:, SUN_SIDE, :] = _ground(SHADOW, seed=13)[:, SUN_SIDE, :]
    body = np.abs(ACROSS) <= 1.4
    # An open car seen into, in sunlit paint at 30 % of the ballast's brightness, and its
    # own shadow on the anti-sun side; a thin cloud dims all of it by ``share``.
    vals[:, ACROSS <= -1.9, 44:66] = SHADOW[:, None, None]
    vals[:, body, 44:66] = (0.3 * LIT)[:, None, None]
    vals[:, :, DIM] *= share
    occ = _occ(vals)
    assert occ[46:64].mean() > 0.9
    assert not occ[:36].any() and not occ[76:].any()


def test_a_dark_car_in_a_neighbours_shadow_is_occupied():
    # The sun side lies in a neighbour's shadow: that is a change of light, not dimming,
    # so the light share stays full and too-dark paint is still a car.
    vals = _ground(SHADOW, seed=4)
    body = np.abs(ACROSS) <= 1.4
    vals[:, body, 44:66] = (0.45 * LIT)[:, None, None]
    # A neighbour's shadow reaches this track, so a dark anti-sun side is no car's own.
    occ = _occ(vals, own=False)
    assert occ[46:64].mean() > 0.9
    assert not occ[:36].any() and not occ[76:].any()


@pytest.mark.parametrize("share", [1.0, 0.8, 0.6, 0.45, 0.3])
def test_light_share_reads_a_dimmed_shadow_exactly(share):
    vals = _ground(share * SHADOW, seed=5)
    got = np.median(R._light_share(vals[:, SUN_SIDE, :], REFS, 3))
    assert got == pytest.approx(share, abs=0.03)


@pytest.mark.parametrize("colour", [LIT, 0.5 * LIT + 0.5 * SHADOW])
@pytest.mark.parametrize("share", [1.0, 0.6, 0.45, 0.3])
def test_light_share_of_dimmed_lit_ground_errs_towards_full_light(colour, share):
    # Lit ballast dimmed by a cloud is close in colour to ballast half in shadow: the
    # share is never read below the truth (a car is never explained away as dimming),
    # full light where the two readings are within the colour's noise, and a deep
    # dimming is still seen.
    vals = _ground(share * colour, seed=6)
    got = np.median(R._light_share(vals[:, SUN_SIDE, :], REFS, 3))
    assert share - 0.03 <= got <= 1.0
    if share == 1.0:
        assert got == 1.0
    if share <= 0.3:
        assert got < 0.6


def test_light_share_without_a_shadow_colour_is_the_lit_colours_scale():
    for share in (1.0, 0.7, 0.4):
        vals = _ground(share * LIT, seed=7)
        got = np.median(R._light_share(vals[:, SUN_SIDE, :], LIT_ONLY, 3))
        assert got == pytest.approx(share, abs=0.03)


def test_light_share_is_full_where_the_band_is_no_ground():
    vals = np.zeros((4, 11, N)) + np.array([0.30, 0.05, 0.05, 0.30])[:, None, None]  # a painted flank
    assert np.all(R._light_share(vals[:, SUN_SIDE, :], REFS, 3) == 1.0)
    vals = _ground(0.4 * SHADOW, seed=8)
    vals[:, :, :10] = np.nan   # off the image, or under the cloud mask
    with warnings.catch_warnings():   # all-NaN positions are expected (count_railcars silences them)
        warnings.simplefilter("ignore", RuntimeWarning)
        got = R._light_share(vals[:, SUN_SIDE, :], REFS, 3)
    assert np.all(got[:9] == 1.0) and np.median(got[20:]) == pytest.approx(0.4, abs=0.03)
