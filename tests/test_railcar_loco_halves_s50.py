"""Railcars, session 50 (issue 6): a long "flat" top is a locomotive only by its uneven halves.

Until session 50 a "flat" top (relief across: a band down its middle) read 16.9 m or
longer (``railcars._MIN_LOCOMOTIVE_BODY_M``) and textured along was typed a locomotive
by its length alone. A locomotive section's roof is textured unevenly: its cab at one
end, the cooling section's radiator fans and exhausts over the other, so its two halves
differ (``railcars._half_asymmetry`` from ``railcars._LOCOMOTIVE_HALF_ASYMMETRY``, the
test of the session 47 "uneven_halves" rule for 15.3-16.9 m bodies). A covered hopper's
hatches or an open wagon's heaps, read that long with a cut misplaced (or two cars run
together), repeat end to end, and a roof sheet is even: on altgen tuning 204-211 such
tops typed locomotives were 62 other cars against 25 locomotives. Now, from 16.9 m:

* textured along, not unevenly: the gondola class (tag unchanged, a weak rule that a
  coupled block's class overrides);
* textured unevenly: a locomotive, as before;
* even along, height read as a bare deck (``tall`` False), or unevenness unread: the
  length rule, as before.

"Unevenly" (``railcars._uneven_roof``): at pixels of 0.75 m or finer, by the fan band
darker than its shoulders over one half (``railcars._band_halves``), also for the
15.3-16.9 m "uneven_halves" rule; coarser, by the halves' brightness as in session 47.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from changedet.objects import railcars as R

sys.path.insert(0, str(Path(__file__).parent))
from test_railcar_loco_s47 import _hopper, _locomotive, _roof  # noqa: E402
from test_railcar_type_s22 import LIT_B  # noqa: E402


@pytest.mark.parametrize("res", [0.3, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("body_m", [17.0, 17.5, 18.5])
def test_a_long_top_with_alike_halves_is_not_a_locomotive(res, body_m):
    # Four hatches evenly spaced (a covered hopper's roof read long): before this
    # session "locomotive" by length.
    n = 72
    hopper = _roof(_hopper(n))
    assert R._look(hopper, 0, n, LIT_B) == "flat"
    assert R._along_texture(hopper, 0, n) >= R._TEXTURED_ALONG
    assert R._half_asymmetry(hopper, 0, n) < R._LOCOMOTIVE_HALF_ASYMMETRY
    for tall in (None, True):
        ctype, rule = R._classify_rule(hopper, 0, n, body_m, LIT_B, tall=tall, resolution_m=res)
        assert ctype == "gondola"
        assert rule == ("long_flat_by_length" if tall is None else "long_flat_height_read")


@pytest.mark.parametrize("res", [0.3, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("body_m", [17.0, 17.5, 18.5])
def test_a_long_top_with_uneven_halves_stays_a_locomotive(res, body_m):
    n = 72
    loco = _roof(_locomotive(n))
    assert R._half_asymmetry(loco, 0, n) >= R._LOCOMOTIVE_HALF_ASYMMETRY
    for tall in (None, True):
        assert R._classify(loco, 0, n, body_m, LIT_B, tall=tall, resolution_m=res) == "locomotive"


def test_the_alike_halves_rule_is_weak_for_the_block_vote():
    # A hopper read long between two coupled hoppers takes their class (it already has it);
    # between two tank cars the tank class: the tag is still a fallback.
    n = 72
    _, rule = R._classify_rule(_roof(_hopper(n)), 0, n, 17.5, LIT_B, tall=None, resolution_m=0.75)
    assert rule in R._WEAK_RULES
    cars = [(0.0, 11.5, "tank", 1.0), (12.5, 30.0, "gondola", 1.0), (31.0, 42.5, "tank", 1.0)]
    typed, changed = R._block_types(cars, [False, rule in R._WEAK_RULES, False])
    assert [c[2] for c in typed] == ["tank", "tank", "tank"] and changed == [False, True, False]


def test_a_long_top_without_walls_keeps_the_length_rule():
    # tall False (lit ground where a wall's shadow would fall): unchanged (session 47 test).
    n = 72
    assert R._classify(_roof(_hopper(n)), 0, n, 17.5, LIT_B, tall=False, resolution_m=0.5) == "locomotive"


def test_unread_halves_keep_the_length_rule(monkeypatch):
    n = 72
    hopper = _roof(_hopper(n))
    monkeypatch.setattr(R, "_half_asymmetry", lambda *a, **k: float("nan"))
    monkeypatch.setattr(R, "_band_halves", lambda *a, **k: float("nan"))
    for res in (0.5, 1.0):
        assert R._classify(hopper, 0, n, 17.5, LIT_B, tall=None, resolution_m=res) == "locomotive"


# The fan band read at 0.3-0.75 m pixels (railcars._band_halves): a locomotive's radiator
# fans are a band narrower than the body down the middle of its cooling section; the
# shoulders beside them stay the roof's colour.
from test_railcar_loco_s47 import _cover  # noqa: E402
from test_railcar_type_s22 import LIT, STEP, _strip  # noqa: E402


def _fan_band_roof(n: int) -> "R.Strip":
    """A 3.2 m wide roof (0.24) with a band 1.0 m wide down its middle a sixth darker (a
    "flat" top) and, over the second half only, three fans 1.4 m across (black, 0.05) in
    the middle: the shoulders stay the roof's colour."""
    body, band, fan = _cover(1.6), _cover(0.5), _cover(0.7)
    u = np.arange(n) * STEP
    length = n * STEP
    on_fan = np.zeros(n, bool)
    for c in np.linspace(0.55 * length, length - 4.0, 3):
        on_fan |= np.abs(u - c) <= 0.7
    roof = 0.24 * body * (1 - band / 6)
    top = np.repeat(roof[:, None], n, axis=1)
    top[:, on_fan] = (roof * (1 - fan) + 0.12 * fan * body)[:, None]
    return _strip(top[None] + ((1 - body)[:, None] * np.ones(n)[None])[None] * LIT[:, None, None])


@pytest.mark.parametrize("res", [0.3, 0.5, 0.75])
@pytest.mark.parametrize("body_m", [15.9, 17.5])
def test_a_fan_band_over_one_half_is_a_locomotive(res, body_m, monkeypatch):
    n = 64 if body_m < 17 else 72
    loco = _fan_band_roof(n)
    assert R._band_halves(loco, 0, n) >= R._LOCOMOTIVE_BAND_HALVES
    assert R._uneven_roof(loco, 0, n, None, res) is True
    # This synthetic roof reads "open" (its fans darker than the band's shoulders, like an
    # interior below rims); the rules for a "flat" top are checked with that look given.
    monkeypatch.setattr(R, "_look", lambda *a, **k: "flat")
    for tall in (None, True):
        assert R._classify(loco, 0, n, body_m, LIT_B, tall=tall, resolution_m=res) == "locomotive"


def test_coarser_than_the_band_pixels_the_halves_decide(monkeypatch):
    n = 72
    loco = _fan_band_roof(n)
    monkeypatch.setattr(R, "_band_halves", lambda *a, **k: 0.0)
    assert R._uneven_roof(loco, 0, n, None, 0.5) is False
    coarse = R._half_asymmetry(loco, 0, n) >= R._LOCOMOTIVE_HALF_ASYMMETRY
    assert R._uneven_roof(loco, 0, n, None, 1.0) is coarse
    # A pixel of unknown size is read as a coarse one: by the halves' brightness.
    assert R._uneven_roof(loco, 0, n, None, float("nan")) is coarse


def test_a_hopper_roof_has_no_fan_band():
    n = 72
    assert R._band_halves(_roof(_hopper(n)), 0, n) < R._MIN_BAND_HALVES_UNEVEN


def test_band_halves_is_nan_without_shoulder_samples():
    narrow = _strip(np.full((4, 3, 40), 0.2))   # rows -2.6..-2.1 m only: no middle
    narrow = R.Strip(narrow.values, narrow.along_m, np.array([-2.6, -2.35, -2.1]), narrow.x[:3], narrow.y[:3],
                     narrow.step_m)
    assert np.isnan(R._band_halves(narrow, 0, 40))
