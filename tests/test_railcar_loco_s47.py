"""Railcars, session 47 (issue 6): a locomotive's roof is textured along unevenly.

A diesel locomotive section carries its roof equipment unevenly along the car: the cab
at one end, the cooling section's radiator fans and exhausts over the other (2TE10,
2TE116 sections; the long hood of a TEM2 or ChME3 shunter). A covered hopper's loading
hatches are evenly spaced between sloped end bays at both ends, an open wagon's load lies
in heaps along the whole car, and a boxcar's roof is one sheet. The two halves of a
locomotive's top therefore differ in brightness (``railcars._half_asymmetry`` from
``railcars._LOCOMOTIVE_HALF_ASYMMETRY``); a hopper's do not.

Before this session a "flat" top textured along was typed by length alone: the gondola
class from 14.8 m, a locomotive from 16.9 m (``railcars._MIN_LOCOMOTIVE_BODY_M``, the
length of the shortest section *over couplers*, while the counter's body is measured
between the coupler gaps: a 16.97 m section reads about 15.9 m). Now:

from ``railcars._MIN_LOCOMOTIVE_SECTION_BODY_M`` (15.3 m) an uneven top is a locomotive
("uneven_halves"); a top alike in its halves keeps the length rules.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

sys.path.insert(0, str(Path(__file__).parent))
# 0.25 m samples, ballast B G R NIR, the strip builder of the s22 typing tests.
from test_railcar_type_s22 import ACROSS, LIT, LIT_B, STEP, _strip  # noqa: E402
from test_railcar_type_s22 import _cover as _cover_at  # noqa: E402


def _cover(half_width_m: float) -> np.ndarray:
    """Share of each across sample covered by a band ``half_width_m`` either side."""
    return _cover_at(ACROSS, half_width_m)


def _roof(level: np.ndarray) -> Strip:
    """A 3.2 m wide roof (0.24) with a 1.0 m band down its middle a sixth darker (roof
    equipment, a walkway: a "flat" top, relief across 0.12-0.25) on ballast, its
    brightness scaled along the car by ``level`` (one value per sample)."""
    body = _cover(1.6)
    band = _cover(0.5)
    across = 0.24 * body * (1 - band / 6)
    top = across[None, :, None] * level[None, None, :]
    return _strip(top + (1 - body)[None, :, None] * LIT[:, None, None])


def _dips(n: int, centres_m, radius_m: float, depth: float) -> np.ndarray:
    u = np.arange(n) * STEP
    level = np.ones(n)
    for c in centres_m:
        level[np.abs(u - c) <= radius_m] = 1.0 - depth
    return level


def _locomotive(n: int) -> np.ndarray:
    # Cab at the start (even roof), three black radiator fans 1.4 m across over the
    # second half, 2 m apart.
    body = n * STEP
    return _dips(n, np.linspace(0.55 * body, body - 4.0, 3), 0.7, 0.6)


def _hopper(n: int) -> np.ndarray:
    # Four dark loading hatches evenly spaced along the roof (0.8 m across).
    body = n * STEP
    return _dips(n, np.linspace(3.0, body - 3.0, 4), 0.4, 0.6)


def test_half_asymmetry_reads_a_locomotive_not_a_hopper_or_a_roof_sheet():
    n = 64   # 16 m
    loco, hopper, sheet = _roof(_locomotive(n)), _roof(_hopper(n)), _roof(np.ones(n))
    assert R._half_asymmetry(loco, 0, n) >= R._LOCOMOTIVE_HALF_ASYMMETRY
    assert R._half_asymmetry(hopper, 0, n) < 0.5 * R._LOCOMOTIVE_HALF_ASYMMETRY
    assert R._half_asymmetry(sheet, 0, n) < 0.01
    # Either end first: the reading hardly depends on the direction of the track (the
    # smoothing window of an even number of samples is off centre by half a sample).
    rev = _strip(loco.values[:, :, ::-1].copy())
    assert R._half_asymmetry(rev, 0, n) == pytest.approx(R._half_asymmetry(loco, 0, n), rel=0.1)


@pytest.mark.parametrize("res", [0.3, 0.5, 0.75])
@pytest.mark.parametrize("body_m", [15.5, 15.9, 16.5])
def test_a_locomotive_section_read_at_its_body_length_is_a_locomotive(res, body_m):
    n = 64
    loco = _roof(_locomotive(n))
    assert R._look(loco, 0, n, LIT_B) == "flat"
    assert R._along_texture(loco, 0, n) >= R._TEXTURED_ALONG
    # Before: the gondola class ("long_flat_by_length"), a section's 15.8-17.1 m body
    # being under _MIN_LOCOMOTIVE_BODY_M.
    assert R._classify_rule(loco, 0, n, body_m, LIT_B, tall=None, resolution_m=res) == (
        "locomotive", "uneven_halves")
    assert R._classify_rule(loco, 0, n, body_m, LIT_B, tall=True, resolution_m=res) == (
        "locomotive", "uneven_halves")


@pytest.mark.parametrize("body_m", [15.5, 15.9, 16.5])
def test_a_hopper_of_the_same_length_stays_the_gondola_class(body_m):
    n = 64
    hopper = _roof(_hopper(n))
    assert R._look(hopper, 0, n, LIT_B) == "flat"
    assert R._along_texture(hopper, 0, n) >= R._TEXTURED_ALONG
    assert R._classify_rule(hopper, 0, n, body_m, LIT_B, tall=None, resolution_m=0.5) == (
        "gondola", "long_flat_by_length")


def test_an_uneven_top_shorter_than_any_locomotive_stays_the_gondola_class():
    # 14.9 m: a 19-7017 hopper's body or an open wagon with its cut misplaced; no
    # locomotive section is that short.
    n = 64
    loco = _roof(_locomotive(n))
    assert R._classify(loco, 0, n, 14.9, LIT_B, tall=None, resolution_m=0.5) == "gondola"


@pytest.mark.parametrize("body_m", [17.2, 18.0])
def test_an_uneven_top_read_long_stays_a_locomotive(body_m):
    n = 72
    loco = _roof(_locomotive(n))
    assert R._classify_rule(loco, 0, n, body_m, LIT_B, tall=None, resolution_m=0.5) == (
        "locomotive", "long_flat_by_length")


def test_a_top_without_walls_keeps_the_length_rules():
    # Lit ground where a wall's shadow would fall (tall False): no roof stands there, and
    # the new rule does not apply; from 16.9 m the length rule stands as before.
    n = 64
    loco = _roof(_locomotive(n))
    assert R._classify(loco, 0, n, 15.9, LIT_B, tall=False, resolution_m=0.5) != "locomotive"
    hopper = _roof(_hopper(72))
    assert R._classify(hopper, 0, 72, 17.5, LIT_B, tall=False, resolution_m=0.5) == "locomotive"
