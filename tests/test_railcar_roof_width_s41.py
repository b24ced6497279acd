"""Railcar typing at coarse (1 m) pixels, session 41 (issue 6): an even, not dark, short
"flat" top of unread height is a container on a flat wagon only where it reads narrower
than a roofed body; as wide as a boxcar's roof (3.25-3.3 m) it is a boxcar read short.
"""

import numpy as np

from changedet.objects import railcars as R
from changedet.objects.strips import Strip
from tests.test_railcar_types_coarse_s40 import _strip as _uniform_strip


# Offsets across (m) at which the counter samples a strip at 1 m pixels (0.5 m steps),
# out to 4.1 m so that the ground beyond the top is read on both sides.
_ACROSS = np.round(np.arange(-4.1, 4.1 + 1e-9, 0.5), 2)

# Sun on the positive side; profiles are reflectance at _ACROSS, a top of 0.40 over lit
# ground of 0.30, blurred by a 1 m pixel's spread (Gaussian, sigma 0.45 m).
# A boxcar's roof, 3.3 m wide, 4.8 m tall: its shadow (0.06) reaches 2.4 m past its
# anti-sun edge (sun 0.5 m sideways per metre of height).
_BOXCAR_ROOF = [0.191, 0.098, 0.064, 0.066, 0.114, 0.246, 0.363, 0.397, 0.4, 0.4, 0.395, 0.371,
                0.329, 0.305, 0.3, 0.3, 0.3]
# A 2.44 m ISO container on a 2.87 m dark deck (0.09), 3.94 m tall.
_CONTAINER = [0.295, 0.257, 0.161, 0.083, 0.072, 0.133, 0.272, 0.373, 0.398, 0.392, 0.351, 0.295,
              0.289, 0.298, 0.3, 0.3, 0.3]


def _strip(profile: list[float], n_along: int = 48) -> Strip:
    """A strip sampled every 0.5 m whose brightness across (3 bands) is ``profile``, the
    same at every sample along."""
    return _uniform_strip(profile, n_along, across=_ACROSS)


def test_even_short_top_as_wide_as_a_roof_is_a_boxcar_at_1m():
    strip = _strip(_BOXCAR_ROOF)
    assert R._top_width(strip, 0, 48) >= R._MIN_ROOF_WIDTH_COARSE_M
    assert R._top_dark(strip, 0, 48, 0.30, None) is False
    ctype, rule = R._short_top_rule(strip, 0, 48, 12.0, "flat", None, 0.005, 1.0, lit_b=0.30)
    assert (ctype, rule) == ("boxcar", "even_short_roof")
    assert rule not in R._WEAK_RULES


def test_even_short_top_as_narrow_as_a_container_stays_a_flat_wagon_at_1m():
    strip = _strip(_CONTAINER)
    assert R._top_width(strip, 0, 48) < R._MIN_ROOF_WIDTH_COARSE_M
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, 0.005, 1.0,
                             lit_b=0.30) == ("flatcar", "even_short_flat")


def test_roof_width_rule_leaves_other_cases_as_they_were():
    roof = _strip(_BOXCAR_ROOF)
    # At 0.75 m and finer the even-top fallback does not apply: the gondola class as before.
    assert R._short_top_rule(roof, 0, 48, 12.0, "flat", None, 0.005, 0.75, lit_b=0.30)[0] == "gondola"
    # Textured along (hatches, heaps): the gondola class as before.
    assert R._short_top_rule(roof, 0, 48, 12.0, "flat", None, R._TEXTURED_ALONG, 1.0,
                             lit_b=0.30)[0] == "gondola"
    # Height read tall, or no walls: the height rules decide as before.
    assert R._short_top_rule(roof, 0, 48, 12.0, "flat", False, 0.005, 1.0, lit_b=0.30)[0] == "flatcar"
    # An edge not read (no contrast with the ground beyond): the width is NaN and the
    # container reading stands.
    flat_grey = [0.30] * _ACROSS.size
    flat_grey[6:11] = [0.32, 0.33, 0.33, 0.33, 0.32]
    strip = _strip(flat_grey)
    assert not np.isfinite(R._top_width(strip, 0, 48))
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, 0.005, 1.0,
                             lit_b=0.30) == ("flatcar", "even_short_flat")
