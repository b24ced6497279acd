"""Review of :func:`changedet.objects.railcars._coupled_block` (session 26): the guards its
first tests left unexercised, on strips sampled as :func:`changedet.objects.strips.sample_strip`
samples them (across offsets from -2.6 m in steps of 0.5 m, so shoulder rows at -1.1 and
1.4 m exist), and two fixes: an unobserved sun-side ground proves nothing, and a band
that replaces a chain's last gap must keep the chain's spacing.

Synthetic strips with known answers (no generator).
"""

from __future__ import annotations

import numpy as np

from changedet.objects import railcars as R
from changedet.objects.railcars import Strip

STEP = 0.5
LIT = np.array([0.12, 0.13, 0.14, 0.16])          # sunlit ballast, B G R NIR
SHADOW = LIT * np.array([0.32, 0.27, 0.24, 0.22])  # the same ballast lit by the sky only
REFS = {"lit": LIT, "lit_sd": np.maximum(0.004 + 0.03 * LIT, 0.0075), "shadow": SHADOW,
        "shadow_sd": 0.003 + 0.03 * SHADOW}
ACROSS = np.arange(-2.6, 2.6 + 1e-9, STEP)        # as sample_strip's grid at VHR
PITCH, GAP = 19.5, 1.2                            # a 60 ft flat wagon and its coupler gap


def _ballast(length_m: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(length_m / STEP)
    tex = 1 + 0.05 * rng.standard_normal((1, ACROSS.size, n))
    return LIT[:, None, None] * tex + 0.002 * rng.standard_normal((4, ACROSS.size, n))


def _uv(vals):
    u = np.arange(vals.shape[2]) * STEP
    return np.broadcast_to(ACROSS[:, None], vals.shape[1:]), np.broadcast_to(u[None, :], vals.shape[1:])


def _run(vals, sun_left=True, found=True):
    n = vals.shape[2]
    x, y = np.meshgrid(np.arange(n) * STEP, ACROSS)
    strip = Strip(vals.astype("float32"), np.arange(n) * STEP, ACROSS, x, y, STEP)
    seen = np.all(np.isfinite(vals[:, np.abs(ACROSS) <= 1.0]), axis=(0, 1))
    # ``found``: another rule found a car on this track (the last 10 m of the strip);
    # blocks are only looked for on such tracks.
    occ = np.zeros(n, bool)
    if found:
        occ[-int(10 / STEP):] = True
    return R._coupled_block(strip, occ, seen, sun_left, REFS)


def _block(vals, start, n_cars, deck=LIT, gap_colour=SHADOW, half_m=1.435, pitch=PITCH):
    a, u = _uv(vals)
    out = vals.copy()
    rng = np.random.default_rng(1)
    body = np.abs(a) <= half_m
    for i in range(n_cars):
        u0 = start + i * pitch
        m = body & (u >= u0) & (u < u0 + pitch - GAP)
        out[:, m] = deck[:, None] * (1 + 0.03 * rng.standard_normal((1, int(m.sum()))))
        if i < n_cars - 1:
            out[:, body & (u >= u0 + pitch - GAP) & (u < u0 + pitch)] = gap_colour[:, None]
    return out


def test_control_a_block_is_found_on_the_sampling_grid():
    assert len(R.runs(_run(_block(_ballast(200), 20.0, 6)))) == 4


def test_two_gaps_are_not_a_block():
    # _MIN_CHAIN_GAPS: two bands a car apart may be chance.
    assert not _run(_block(_ballast(200), 20.0, 3)).any()


def test_bands_down_the_middle_only_are_not_gaps():
    # Roof or four-foot features (drain covers) leave the shoulders as they are.
    assert not _run(_block(_ballast(200), 20.0, 6, half_m=0.9)).any()


def test_a_chain_in_shade_is_not_a_block():
    # A neighbour train's shadow: the whole stretch at shadowed ground's level (dim guard).
    vals = _ballast(200) * (SHADOW / LIT)[:, None, None]
    vals = _block(vals, 20.0, 6, deck=SHADOW * 1.1, gap_colour=SHADOW * 0.6)
    assert not _run(vals).any()


def test_the_end_cars_are_taken_where_the_pitch_ends_at_a_colour_step():
    # Decks brighter than the ballast (a colour step at each end of the block), gaps shaded.
    vals = _block(_ballast(200), 20.0, 6, deck=1.5 * LIT)
    a, u = _uv(vals)
    add = _run(vals)
    along = np.arange(vals.shape[2]) * STEP
    first = (along > 21.0) & (along < 20.0 + PITCH - GAP - 1.0)
    last = (along > 20.0 + 5 * PITCH + 1.0) & (along < 20.0 + 6 * PITCH - GAP - 1.0)
    assert add[first].mean() > 0.9 and add[last].mean() > 0.9


def test_crossing_shadows_with_the_sun_side_unobserved_are_not_gaps():
    # A track along the image's edge: the sun-side ground off the image (NaN) cannot
    # show that the bands cross it, so they are not taken for coupler gaps.
    vals = _ballast(200)
    a, u = _uv(vals)
    for u0 in np.arange(20.0, 180.0, 15.0):
        vals[:, (u >= u0) & (u < u0 + GAP)] *= 0.35
    assert not _run(vals).any()                   # all seen: the sun-side test holds
    vals[:, a >= 1.95] = np.nan
    assert not _run(vals).any()


def test_a_replaced_gap_keeps_the_chain_spacing():
    # Dark bands every 5 m of random strength: the stronger of two bands closer than a car
    # replaces the chain's last gap, and must keep the chain's spacing (within
    # _PITCH_RIVAL_M) as an appended gap must; else cars of 14.5, 19 and 23.5 m follow
    # each other in one "block".
    vals = _ballast(200)
    a, u = _uv(vals)
    rng = np.random.default_rng(5)
    for u0 in np.arange(10.0, 195.0, 5.0):
        vals[:, (np.abs(a) <= 1.8) & (u >= u0) & (u < u0 + 1.0)] *= rng.uniform(0.5, 0.8)
    lengths = [(b - a_) * STEP for a_, b in R.runs(_run(vals))]
    assert not lengths or max(lengths) - min(lengths) <= R._PITCH_RIVAL_M, lengths


def test_dark_patches_on_a_track_where_no_car_was_found_are_not_a_block():
    # Fouled ballast at rail joints every 12.5 m, 40 % darker across the bed: a narrow band
    # darker than both sides, on the shoulders too, at one pitch - a coupler gap's look.
    # On a track where no other rule found a car the rule does not look for blocks.
    vals = _ballast(200)
    a, u = _uv(vals)
    for u0 in np.arange(10.0, 195.0, 12.5):
        vals[:, (np.abs(a) <= 1.6) & (u >= u0) & (u < u0 + 1.5)] *= 0.6
    assert not _run(vals, found=False).any()
    # The same block of decks is found once a car was found elsewhere on the track.
    blk = _block(_ballast(200), 20.0, 6)
    assert not _run(blk, found=False).any()
    assert len(R.runs(_run(blk))) == 4
