"""Railcars under haze: paint outside every mix of sun and skylight, read above the veil.

Haze adds path radiance, a bluish veil over every pixel. A rust-brown deck or a boxcar in
the sun keeps a sunlit spectrum (little blue, much near infrared) at a fraction of the
ground's brightness; where its track lies in shade (no lit ground beside it) only that
spectrum tells it from shadowed ballast: no mix of the lit and the skylit ground's
colours with non-negative weights makes it. On the light as recorded under haze the veil,
added to the car and to both ground colours alike, projects onto the bluish skylit colour
with a positive weight and hides the negative one (same yards rendered clear and hazy,
altgen 1.0 m: 12 cars of one yard found clear, lost hazy). Above the darkest light
(the veil removed) the deck still shows a weight under -0.75; other tracks' fouled
ballast reaches -0.5 to -0.7 there and stays ground (:data:`_MAX_NEGATIVE_ABOVE_DARK`).

Synthetic strips with known answers (no generator).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from changedet.objects import railcars as R

sys.path.insert(0, str(Path(__file__).parent))
from test_railcar_light import STEP, _strip  # noqa: E402  (0.5 m samples)

VEIL = np.array([0.12, 0.10, 0.08, 0.067])           # darkest light: path radiance, blue-heavy (B G R NIR)
LIT = np.array([0.09, 0.10, 0.11, 0.13])             # sunlit ballast above it
SKY = np.array([0.021, 0.024, 0.026, 0.034])         # the same ballast lit by the sky only, above it
DECK = np.array([0.012, 0.017, 0.023, 0.039])        # rust-brown deck in the sun, above it
# Spreads with the floors taken on the light as recorded (see _recorded_spread_floors).
REFS = {"lit": LIT, "lit_sd": 0.004 + 0.03 * (LIT + VEIL), "shadow": SKY, "shadow_sd": 0.003 + 0.03 * (SKY + VEIL)}


def _shaded_track(centre: np.ndarray | None, n: int = 200, a: int = 80, b: int = 140, seed: int = 0) -> np.ndarray:
    """A track in a neighbour's shadow (skylit ground everywhere, 5 % texture) with
    ``centre`` over the car's body (|across| <= 1.5 m) from sample ``a`` to ``b``."""
    rng = np.random.default_rng(seed)
    na = int(round(2 * 2.6 / STEP)) + 1
    across = (np.arange(na) - na // 2) * STEP
    vals = SKY[:, None, None] * (1 + 0.05 * rng.standard_normal((1, na, n))) + 0.001 * rng.standard_normal((4, na, n))
    if centre is not None:
        body = np.abs(across) <= 1.5
        vals[:, body, a:b] = centre[:, None, None] * (1 + 0.03 * rng.standard_normal((1, int(body.sum()), b - a)))
    return vals


def _occ(vals: np.ndarray) -> np.ndarray:
    occ, _ = R._occupancy(_strip(vals), REFS, min_contrast=4.0, vhr=True, sun_left=True, dark_light=VEIL,
                          shadow_across_m=0.8, blur_m=0.4)
    return occ


def _weights(colour: np.ndarray, lift: np.ndarray) -> np.ndarray:
    basis = np.stack([LIT + lift, SKY + lift], axis=1)
    return np.linalg.pinv(basis) @ (colour + lift)


def test_the_veil_hides_the_decks_negative_weight_on_the_recorded_light():
    # The premise: above the veil the deck is outside every mix of the two lights, on the
    # light as recorded it is not (and not too dark either).
    above = _weights(DECK, np.zeros(4))
    recorded = _weights(DECK, VEIL)
    assert above.min() < -R._MAX_NEGATIVE_ABOVE_DARK and above.sum() > R._MIN_SCALE_ABOVE_DARK
    assert recorded.min() > -R._MAX_NEGATIVE_MIX and recorded.sum() > R._MIN_GROUND_SCALE


def test_a_sunlit_deck_on_a_shaded_track_under_haze_is_a_car():
    occ = _occ(_shaded_track(DECK))
    assert occ[85:135].mean() > 0.9
    assert not occ[:70].any() and not occ[150:].any()


def test_fouled_ballast_off_the_mix_by_less_stays_ground():
    # Ballast of another kind (fouled, or clean beside fouled): a weight of -0.6 above the
    # darkest light, as bright as the skylit ground or more: not a car.
    fouled = -0.6 * LIT + 2.6 * SKY
    assert np.all(fouled > 0)
    w = _weights(fouled, np.zeros(4))
    assert -0.7 < w.min() < -0.5
    assert not _occ(_shaded_track(fouled)).any()


def test_an_empty_shaded_track_under_haze_is_empty():
    assert not _occ(_shaded_track(None)).any()
