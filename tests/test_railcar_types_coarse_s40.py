"""Railcar typing at coarse (1 m) pixels, session 40 (issue 6).

Two rules: a glowing top whose anti-sun flank keeps as much light as a flat top's is no
barrel at pixels coarser than 0.75 m, whatever its brightness; and a flat top of unread
height, shorter than a boxcar and even end to end, is a flat wagon's deck or container.
"""

import numpy as np

from changedet.objects import railcars as R
from changedet.objects.strips import Strip


# Offsets across (m) at which the counter samples a strip at 1 m pixels (0.5 m steps).
_ACROSS = np.round(np.arange(-2.6, 2.4 + 1e-9, 0.5), 2)


def _strip(profile: list[float], n_along: int = 48, *, across: np.ndarray = _ACROSS) -> Strip:
    """A strip sampled every 0.5 m whose brightness across (reflectance at ``across``, m,
    3 bands) is ``profile``, the same at every sample along."""
    col = np.asarray(profile, dtype="float32")
    values = np.repeat(np.repeat(col[None, :, None], 3, axis=0), n_along, axis=2)
    along = np.arange(n_along) * 0.5
    x = np.repeat(along[None, :], across.size, axis=0)
    y = np.repeat(across[:, None], n_along, axis=1)
    return Strip(values, along, across, x, y, 0.5)


# Sun on the left (positive offsets): lit ground (0.30) from +1.9 m, the body's sun-facing
# half brighter than its other half (a glow of about 1.55), its own shadow (0.05-0.09)
# beyond the anti-sun edge; the anti-sun flank (1 m off the axis) keeps 0.72 of the
# crest's light, as a flat top's does and a barrel's does not, and the top is brighter
# than half the lit ground.
_PALE_FLAT_TOP = [0.05, 0.07, 0.09, 0.165, 0.196, 0.228, 0.271, 0.287, 0.296, 0.3, 0.3]
# The same top with its anti-sun flank at 0.54 of its crest: a barrel's.
_BARREL = [0.05, 0.07, 0.09, 0.115, 0.184, 0.228, 0.271, 0.287, 0.296, 0.3, 0.3]
_CORE = slice(8, 40)
_LIMITS = (R._BARREL_ANTI_FLANK, R._FLAT_ANTI_FLANK)


def test_pale_top_with_lit_anti_flank_is_no_barrel_at_1m():
    strip = _strip(_PALE_FLAT_TOP)
    assert R._FLAT_ANTI_FLANK <= R._anti_flank_share(strip, _CORE, True, None, 1.0, 0.30) < 0.8
    assert R._sun_asymmetry(strip, _CORE, True, None) > 1.3
    kw = dict(sun_left=True, shading=1.6)
    assert R._look(strip, 0, 48, 0.30, resolution_m=1.0, anti_flank=_LIMITS, **kw) == "flat"
    # At 0.75 m and finer a pale barrel's dark walkway can lift the share: unchanged there.
    assert R._look(strip, 0, 48, 0.30, resolution_m=0.75, anti_flank=_LIMITS, **kw) == "cylinder"
    # Where this sun does not part a barrel from a flat top (flat share NaN): unchanged.
    assert R._look(strip, 0, 48, 0.30, resolution_m=1.0, anti_flank=(R._BARREL_ANTI_FLANK, float("nan")),
                   **kw) == "cylinder"


def test_barrel_with_shaded_anti_flank_stays_cylinder_at_1m():
    strip = _strip(_BARREL)
    assert R._anti_flank_share(strip, _CORE, True, None, 1.0, 0.30) < R._BARREL_ANTI_FLANK
    assert R._look(strip, 0, 48, 0.30, resolution_m=1.0, sun_left=True, shading=1.6,
                   anti_flank=_LIMITS) == "cylinder"


def test_even_short_flat_top_of_unread_height_is_a_flat_wagon():
    # Shorter than a boxcar (12 m), relief across ("flat"), height unread, even along,
    # brighter than half the lit ground: a deck with a container on it.
    strip = _strip(_PALE_FLAT_TOP)
    even = 0.5 * R._EVEN_ALONG
    ctype, rule = R._short_top_rule(strip, 0, 48, 12.0, "flat", None, even, 1.0, lit_b=0.30)
    assert (ctype, rule) == ("flatcar", "even_short_flat")
    assert rule not in R._WEAK_RULES
    # Textured along (heaps, hatches) or neither even nor textured: the gondola class.
    textured = R._TEXTURED_ALONG
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, textured, 1.0, lit_b=0.30)[0] == "gondola"
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, 0.03, 1.0, lit_b=0.30)[0] == "gondola"
    # Texture or the lit ground not read (NaN): the length decides as before.
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, float("nan"), 1.0, lit_b=0.30)[0] == "gondola"
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, even, 1.0)[0] == "gondola"
    # A boxcar's length, even: a boxcar as before.
    long_strip = _strip(_PALE_FLAT_TOP, n_along=56)
    assert R._short_top_rule(long_strip, 0, 56, 14.0, "flat", None, even, 1.0, lit_b=0.30)[0] == "boxcar"


def test_even_dark_load_stays_an_open_wagon():
    # Coal levelled end to end (5 % against ballast of 30 %): even as a deck, but darker
    # than half the lit ground: the gondola class as before.
    coal = [0.05, 0.07, 0.09, 0.06, 0.05, 0.05, 0.05, 0.06, 0.2, 0.3, 0.3]
    strip = _strip(coal)
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, 0.005, 1.0, lit_b=0.30)[0] == "gondola"


def test_even_short_flat_rule_only_coarser_than_container_width_pixels():
    # At 0.75 m and finer an ISO container is read by its width: the fallback as before.
    strip = _strip(_PALE_FLAT_TOP)
    assert R._short_top_rule(strip, 0, 48, 12.0, "flat", None, 0.005, 0.75, lit_b=0.30)[0] == "gondola"
