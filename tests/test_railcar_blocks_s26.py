"""Flat wagons whose decks lie within the ballast's colour, found by their coupler gaps.

A block of bare flat wagons (a wooden or grey deck 1.3 m up) may read as empty track by
colour: every rule of the occupancy test passed them by (altgen tuning scenes 0-3:
flatcar detection 0.75, 6-7 wagons in a row unseen on one track). Through the coupler
gap between two decks the ground under the cars shows, in their shade: a narrow band
darker than both decks, repeated at the block's pitch, which ballast does not show
(:func:`changedet.objects.railcars._coupled_block`).

Synthetic strips with known answers (no generator), and one altgen tuning scene.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from changedet.objects import railcars as R

sys.path.insert(0, str(Path(__file__).parent))
from test_railcar_light import STEP, _strip  # noqa: E402  (0.5 m samples)

LIT = np.array([0.12, 0.13, 0.14, 0.16])          # sunlit ballast, B G R NIR
SHADOW = LIT * np.array([0.32, 0.27, 0.24, 0.22])  # the same ballast lit by the sky only
REFS = {"lit": LIT, "lit_sd": 0.3 * LIT, "shadow": SHADOW, "shadow_sd": 0.003 + 0.03 * SHADOW}
PITCH_M, GAP = 19.5, 1.2                           # a 60 ft container flat and its coupler gap


def _found_at_end(n: int) -> np.ndarray:
    """Occupied flags with a car found by another rule in the strip's last 10 m (blocks
    are only looked for on tracks where a car was found)."""
    occ = np.zeros(n, bool)
    occ[-int(10 / STEP):] = True
    return occ


def _ballast(n_along: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    na = int(round(2 * 2.6 / STEP)) + 1
    tex = 1 + 0.05 * rng.standard_normal((1, na, n_along))
    return LIT[:, None, None] * tex + 0.002 * rng.standard_normal((4, na, n_along))


def _across(vals):
    return (np.arange(vals.shape[1]) - vals.shape[1] // 2) * STEP


def _block(vals, start_m: float, n_cars: int, deck=LIT):
    """A block of decks of ``deck``'s colour, each gap showing shaded ground."""
    rng = np.random.default_rng(1)
    out = vals.copy()
    along = np.arange(vals.shape[2]) * STEP
    a = _across(vals)
    body = np.abs(a) <= 1.435
    for i in range(n_cars):
        u0 = start_m + i * PITCH_M
        on = (along >= u0) & (along < u0 + PITCH_M - GAP)
        m = body[:, None] & on[None, :]
        # 3 % texture and 0.002 noise, as the ballast's
        out[:, m] = deck[:, None] * (1 + 0.03 * rng.standard_normal((1, int(m.sum())))) \
            + 0.002 * rng.standard_normal((4, int(m.sum())))
        gap = (along >= u0 + PITCH_M - GAP) & (along < u0 + PITCH_M)
        if i < n_cars - 1:
            out[:, body[:, None] & gap[None, :]] = np.repeat(SHADOW[:, None], int(body.sum() * gap.sum()), 1)
    return out


def test_a_block_of_ballast_coloured_decks_is_found_between_its_gaps():
    n = int(160 / STEP)
    vals = _block(_ballast(n), 20.0, 6)
    occ = np.zeros(n, bool)
    occ[-int(10 / STEP):] = True   # a car found by another rule at the track's far end
    add = R._coupled_block(_strip(vals), occ, np.ones(n, bool), True, REFS)
    along = np.arange(n) * STEP
    for i in range(6):
        u0, u1 = 20.0 + i * PITCH_M, 20.0 + (i + 1) * PITCH_M - GAP
        inside = (along >= u0 + 1.0) & (along < u1 - 1.0)
        # Inner cars between two gaps; the end cars where the pitch ends at a colour step
        # (here none: the deck is ballast's colour, so the end cars stay unclaimed).
        if 0 < i < 5:
            assert add[inside].mean() > 0.9, i
    # Nothing beyond the block.
    assert not add[along < 19.0].any() and not add[along > 20.0 + 6 * PITCH_M + 1.0].any()
    # A track where no other rule found a car: no block is looked for.
    assert not R._coupled_block(_strip(vals), np.zeros(n, bool), np.ones(n, bool), True, REFS).any()
    # The gaps stay unoccupied: each car remains a run of its own.
    assert len(R.runs(add)) == 4


def test_shadows_crossing_the_whole_track_are_not_gaps():
    # Mast or neighbour-train shadows cross the ground beside the track too.
    n = int(160 / STEP)
    vals = _ballast(n)
    along = np.arange(n) * STEP
    for u in np.arange(20.0, 140.0, PITCH_M):
        band = (along >= u) & (along < u + GAP)
        vals[:, :, band] = SHADOW[:, None, None]
    add = R._coupled_block(_strip(vals), _found_at_end(n), np.ones(n, bool), True, REFS)
    assert not add.any()


def test_bright_bands_are_not_gaps():
    # An open wagon's lit end walls (or light through a neighbour's gaps) are bright
    # bands; a gap under the cars is darker than the decks.
    n = int(160 / STEP)
    vals = _ballast(n)
    along = np.arange(n) * STEP
    body = np.abs(_across(vals)) <= 1.435
    for u in np.arange(20.0, 140.0, PITCH_M):
        band = (along >= u) & (along < u + GAP)
        vals[:, body[:, None] & band[None, :]] = np.repeat((1.8 * LIT)[:, None], int(body.sum() * band.sum()), 1)
    add = R._coupled_block(_strip(vals), _found_at_end(n), np.ones(n, bool), True, REFS)
    assert not add.any()


@pytest.mark.slow
def test_altgen_block_of_flat_wagons_under_a_low_sun_is_counted():
    # Tuning scene (bench index 3, low sun, 1 m pixels, asphalt): seven wood-deck flat
    # wagons in a row on T5, none found before (37 of 53 cars matched in the scene).
    from tests.altgen.railyard import make_railyard, score

    scene = make_railyard(5063, gsd_m=1.0, condition="low_sun")
    res = R.count_railcars(scene.image, scene.tracks, valid=scene.valid,
                           sun_azimuth_deg=scene.sun_azimuth_deg, sun_elevation_deg=scene.sun_elevation_deg)
    sc = score(scene, res)
    assert sc["tp"] >= 42
    assert sc["fp"] <= 5
