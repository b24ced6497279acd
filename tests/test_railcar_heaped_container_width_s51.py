"""Railcar typing, session 51 (issue 6, helper RTYPE): a top as wide as an ISO container
(2.44 m) and even out to its shoulders is a container on a flat wagon (rule
``container_width``) only where it is not textured along in more than one step. A box is one
sheet end to end, and two boxes of their own colours (or a box beside an empty slot) make one
step; an open wagon's load heaped inside its walls, whose crest reads as narrow as a box,
varies within each half (``_MIN_HEAPED_SHARE``), and the other rules decide it.

The strips are drawn: a top about 2.5 m wide (its edges blurred) over ground of 0.15, sampled
every 0.3 m across and along, whose brightness along the car is given.
"""

import numpy as np

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

_STEP = 0.3
_ACROSS = np.round(np.arange(-4.2, 4.2 + 1e-9, _STEP), 2)
_GROUND = 0.15


def _strip(top_along: np.ndarray) -> Strip:
    """A strip whose top (about 2.5 m wide) has the brightness ``top_along`` per sample
    along (3 bands alike, reflectance), over ground of ``_GROUND``."""
    n = top_along.size
    # Blurred edges: the top's own colour out to 1.0 m, the ground's from 1.5 m (half-way
    # at 1.25 m, a 2.5 m wide read).
    edge = np.clip((np.abs(_ACROSS) - 1.0) / 0.5, 0.0, 1.0)[:, None]
    col = (top_along[None, :] + (_GROUND - top_along[None, :]) * edge).astype("float32")
    values = np.repeat(col[None], 3, axis=0)
    along = np.arange(n) * _STEP
    x = np.repeat(along[None, :], _ACROSS.size, axis=0)
    y = np.repeat(_ACROSS[:, None], n, axis=1)
    return Strip(values, along, _ACROSS, x, y, _STEP)


def _rule(top_along: np.ndarray):
    strip = _strip(top_along)
    return R._classify_rule(strip, 0, top_along.size, top_along.size * _STEP, _GROUND, resolution_m=_STEP)


_N = 42   # 12.6 m: a 13-9004 flat wagon's deck, or an open wagon's body


def test_heaped_top_as_narrow_as_a_box_is_not_a_container():
    # Three heaps along the body, the load's brightness rising and falling by a fifth.
    u = np.arange(_N) / _N
    heaps = 0.25 * (1.0 + 0.2 * np.cos(2 * np.pi * 3 * u))
    strip = _strip(heaps)
    assert R._CONTAINER_WIDTH_M[0] <= R._top_width(strip, 0, _N) <= R._CONTAINER_WIDTH_M[1]
    assert R._along_texture(strip, 0, _N) >= R._TEXTURED_ALONG
    ctype, rule = _rule(heaps)
    assert rule != "container_width"
    assert ctype == "gondola"


def test_two_boxes_of_their_own_colours_stay_a_container_wagon():
    # Two 20 ft boxes, 0.25 and 0.32 bright, meeting at mid-car: one step.
    boxes = np.where(np.arange(_N) < _N // 2, 0.25, 0.32)
    assert R._along_texture(_strip(boxes), 0, _N) >= R._TEXTURED_ALONG
    assert _rule(boxes) == ("flatcar", "container_width")


def test_one_even_box_stays_a_container_wagon():
    assert _rule(np.full(_N, 0.25)) == ("flatcar", "container_width")
