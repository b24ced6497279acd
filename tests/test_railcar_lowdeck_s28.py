"""Flat wagons whose coupler gaps show lit ballast, found as a block (session 28).

A bare flat wagon's deck is 1.3 m up: it shades the 0.8-1.5 m coupler gap beside it only
under a low sun along the track, so through the gap the lit ballast shows, brighter than
a dark wooden deck. :func:`changedet.objects.railcars._coupled_block` took only bands
darker than both bodies as gaps (the ground in tall cars' shade), and a block of wood-deck
wagons within the yard's colour spread went unseen (altgen tuning scene 6636, clear,
0.75 m: 1 of 10 wagons on track T5 found). A band is now a gap too where the bodies on
both sides are off every mix of the empty track's lit and shadowed colours and the band
lies nearer that ground by the share a blurred gap shows of it; and such a band is not
vetoed by a band in the sun-side ground where that ground stays lit (the decks' own
blurred edges at 0.75-1 m pixels, not a crossing shadow).

Synthetic strips with known answers (no generator), and the altgen tuning scene.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.railcars import Strip

STEP = 0.5
LIT = np.array([0.106, 0.123, 0.133, 0.170])       # sunlit ballast, B G R NIR
SHADOW = LIT * np.array([0.17, 0.17, 0.17, 0.15])  # the same ballast lit by the sky only
DECK = np.array([0.038, 0.060, 0.090, 0.150])      # a sunlit wooden deck
# A wide yard spread (dry grass beside the yard), as in the scene that showed the miss.
REFS = {"lit": LIT, "lit_sd": np.array([0.025, 0.024, 0.023, 0.013]), "shadow": SHADOW,
        "shadow_sd": 0.003 + 0.03 * SHADOW}
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)         # as sample_strip's grid at VHR
PITCH, GAP = 14.6, 1.1                             # a 13-401 flat wagon and its coupler gap


def _ballast(length_m: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(length_m / STEP)
    tex = 1 + 0.05 * rng.standard_normal((1, ACROSS.size, n))
    return LIT[:, None, None] * tex + 0.002 * rng.standard_normal((4, ACROSS.size, n))


def _block(vals, start, n_cars, deck=DECK, gap_colour=None, half_m=1.435):
    """Decks of ``deck``'s colour; each gap between two of them ``gap_colour`` (None: the
    ballast as it lies, lit)."""
    u = np.arange(vals.shape[2]) * STEP
    out = vals.copy()
    rng = np.random.default_rng(1)
    body = (np.abs(ACROSS) <= half_m)[:, None]
    for i in range(n_cars):
        u0 = start + i * PITCH
        m = body & ((u >= u0) & (u < u0 + PITCH - GAP))[None, :]
        out[:, m] = deck[:, None] * (1 + 0.03 * rng.standard_normal((1, int(m.sum()))))
        if gap_colour is not None and i < n_cars - 1:
            g = body & ((u >= u0 + PITCH - GAP) & (u < u0 + PITCH))[None, :]
            out[:, g] = gap_colour[:, None]
    return out


def _run(vals, sun_left=False):
    n = vals.shape[2]
    x, y = np.meshgrid(np.arange(n) * STEP, ACROSS)
    strip = Strip(vals.astype("float32"), np.arange(n) * STEP, ACROSS, x, y, STEP)
    seen = np.all(np.isfinite(vals[:, np.abs(ACROSS) <= 1.0]), axis=(0, 1))
    occ = np.zeros(n, bool)
    occ[-int(10 / STEP):] = True   # a car found by another rule (blocks are looked for beside one)
    return R._coupled_block(strip, occ, seen, sun_left, REFS)


def test_wood_decks_with_lit_ballast_in_their_gaps_are_a_block():
    add = _run(_block(_ballast(160), 20.0, 6))
    u = np.arange(add.size) * STEP
    # The four inner wagons (a gap each side); the gaps stay unclaimed.
    assert len(R.runs(add)) >= 4
    for i in range(1, 5):
        u0, u1 = 20.0 + i * PITCH, 20.0 + (i + 1) * PITCH - GAP
        assert add[(u >= u0 + 1.0) & (u < u1 - 1.0)].mean() > 0.9, i
    assert not add[u < 19.0].any() and not add[u > 20.0 + 6 * PITCH + 1.0].any()


def test_bright_bands_of_the_decks_own_colour_are_not_gaps():
    # Brighter than the decks, but the decks' colour (a lit end wall, a glint): no nearer
    # the ground's colour, so no gap.
    assert not _run(_block(_ballast(160), 20.0, 6, gap_colour=1.6 * DECK)).any()


def test_ground_coloured_bands_on_ballast_are_not_gaps():
    # Bands of lit ballast on ballast: the "bodies" are the ground itself.
    vals = _block(_ballast(160), 20.0, 6, deck=LIT, gap_colour=1.3 * LIT)
    assert not _run(vals).any()


def _blurred_into_sun_side(vals, blocked, share=0.55, sun_left=False):
    """The decks' light blurred into the sun-side ground rows (1.95-2.6 m) along ``blocked``
    (the samples the decks cover), as 0.75-1 m pixels blur a 1.435 m half-deck."""
    out = vals.copy()
    a = ACROSS if sun_left else -ACROSS
    rows = (a >= 1.95)[:, None] & blocked[None, :]
    out[:, rows] = (1 - share) * out[:, rows] + share * DECK[:, None]
    return out


def _deck_samples(n, start, n_cars):
    u = np.arange(n) * STEP
    on = np.zeros(n, bool)
    for i in range(n_cars):
        on |= (u >= start + i * PITCH) & (u < start + (i + 1) * PITCH - GAP)
    return on


def test_decks_blurred_into_lit_sun_side_ground_are_still_a_block():
    # At 0.75-1 m pixels the sun-side ground band holds some of each deck and none at the
    # gaps: a band there too, yet that ground stays lit throughout (no shadow crosses).
    vals = _block(_ballast(160), 20.0, 6)
    vals = _blurred_into_sun_side(vals, _deck_samples(vals.shape[2], 20.0, 6))
    add = _run(vals)
    u = np.arange(add.size) * STEP
    for i in range(1, 5):
        u0, u1 = 20.0 + i * PITCH, 20.0 + (i + 1) * PITCH - GAP
        assert add[(u >= u0 + 1.0) & (u < u1 - 1.0)].mean() > 0.9, i


def test_shadows_across_the_decks_and_the_sun_side_ground_are_not_gaps():
    # A mast's (or a neighbour's) shadow band crossing the track at each gap darkens the
    # sun-side ground there too: a crossing shadow, not the ground under a gap.
    vals = _block(_ballast(160), 20.0, 6, gap_colour=SHADOW)
    u = np.arange(vals.shape[2]) * STEP
    for i in range(5):
        band = (u >= 20.0 + (i + 1) * PITCH - GAP) & (u < 20.0 + (i + 1) * PITCH)
        vals[:, :, band] = SHADOW[:, None, None]
    assert not _run(vals).any()


@pytest.mark.slow
def test_altgen_block_of_wood_deck_wagons_is_counted():
    # Tuning scene (clear, 0.75 m, dry grass): ten wood-deck flat wagons on T5, one found
    # before; their decks lie within the yard's lit spread (inflated by the dry grass).
    from tests.altgen.railyard import make_railyard, score

    scene = make_railyard(6636, gsd_m=0.75, condition="clear")
    res = R.count_railcars(scene.image, scene.tracks, valid=scene.valid,
                           sun_azimuth_deg=scene.sun_azimuth_deg, sun_elevation_deg=scene.sun_elevation_deg)
    t5 = [d for d in res.detections if d.feature_id == "T5"]
    assert 6 <= len(t5) <= 10
    sc = score(scene, res)
    assert sc["tp"] >= 36 and sc["fp"] <= 2
