"""Session 51 (SHIP51): a water part of a joined body that ran along a pier or quay must be
straight.

When a body grown on the water, joined with the quayside strips it touches, fails ``too_big``
(it ran along a pier or a quay), its parts grown on the water are judged alone as fragments
(``found_as`` ``"water_part"``, at ``part_elongation``). A hull is a rigid straight box, so the
water-side rim it lends such a body runs along one side; the rim of a pier head or of a quay
corner turns with the shore. Such a part must now be straight: the long axes of its two
halves may meet at no more than ``PART_MAX_BEND_DEG`` = 45 degrees (``part_max_bend_deg``;
rejected as ``bent``). On the sen2ships scenes: Busan FP 14 -> 12 (a pier head on the diagonal
pier and a rim turning beside a ship), F1 0.612 -> 0.625; Casablanca unchanged (0.667). The
F1 floors are in ``test_ships_sen2ships.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.errors import ChangedetError
from changedet.objects.vessels import PART_MAX_BEND_DEG, STRIP_RIM_PX, _bend_deg, _vessels_from, detect_vessels
from tests.test_ships_sen2ships import _iou, _labels, _scene, _synthetic

MATCH_IOU = 0.1


def test_bend_of_straight_and_cornered_regions():
    """A straight bar, a one-pixel staircase and a two-pixel diagonal measure (about) 0; a
    one-pixel rim turning a right-angled corner with a short arm a third of the long one
    measures 45 (the limit), with a short arm of 5 on a 14 px one about 56, and a blob at the
    end of a line (a pier head) about 90."""
    bar = np.array([(r, c) for r in (30, 31) for c in range(5, 31)])
    stair = np.array([(i // 3, i) for i in range(30)])
    diag = np.array([(i + d, i) for i in range(20) for d in (0, 1)])
    corner = np.array([(r, 10) for r in range(20, 35)] + [(20, c) for c in range(11, 16)])
    head = np.array([(r, 10) for r in range(20, 40)] + [(r, c) for r in range(14, 20) for c in range(7, 14)])
    for straight in (bar, stair, diag):
        assert _bend_deg(straight) < 5.0, _bend_deg(straight)
    assert abs(_bend_deg(corner) - 45.0) < 1e-6, _bend_deg(corner)
    sharp = np.array([(r, 10) for r in range(20, 34)] + [(20, c) for c in range(11, 16)])
    assert _bend_deg(sharp) > PART_MAX_BEND_DEG + 5.0, _bend_deg(sharp)
    assert _bend_deg(head) > 80.0, _bend_deg(head)


def _pier_and_ship(n: int):
    """Land south of row 100; a pier north from the quay (cols 50-54, rows 80-99) and a ship's
    deck alongside the quay next to it (rows 96-99, cols 20-49), both land-class and one
    quayside strip; the deck's straight water-side rim (rows 93-95, cols 20-46) and the pier's
    rim turning its north-west corner (col 49, rows 79-92, then row 79 across the head, cols
    50-54: a one-pixel L of 14 and 5 pixels), both grown on the water. Deck, pier and rims are
    one joined body 350 x 210 m: ``too_big``."""
    dom = np.ones((n, n), bool)
    dom[100:, :] = False
    quay = np.zeros((n, n), bool)
    quay[96:100, 20:50] = True                          # the ship's deck
    quay[80:100, 50:55] = True                          # the pier
    dom[quay] = False
    target = np.zeros((n, n), bool)
    target[93:96, 20:47] = True                         # the deck's straight water-side rim
    target[79:93, 49] = True                            # the pier's rim down its west side ...
    target[79, 50:55] = True                            # ... and round its head
    return dom, quay, target


@pytest.mark.parametrize("bend", [PART_MAX_BEND_DEG, None])
def test_a_water_part_turning_a_pier_corner_is_not_a_hull(bend):
    """With the test, the ship's straight rim is found (``water_part``) and the rim turning the
    pier's corner is turned down as ``bent``; without it (None, as before s51) both are
    reported. Fails before s51 (no ``part_max_bend_deg``: TypeError)."""
    _, grid, _ = _synthetic(heading_deg=0.0)
    dom, quay, target = _pier_and_ship(grid.shape[0])
    z = np.where(target | quay, 8.0, 0.0)
    rejected: list = []
    res = _vessels_from(target, dom, z, grid, 1.0, {}, min_length_px=3.0, observed=1.0, max_elongation=10.0,
                        quayside=quay, join_quayside=True, quay_min_fill=0.8, shore_elongation=2.0,
                        part_elongation=3.0, long_min_solidity=0.6, rejected=rejected, strip_rim_px=STRIP_RIM_PX,
                        part_max_bend_deg=bend)
    found = sorted((d.attrs["found_as"], d.attrs["bbox_px"]) for d in res.detections)
    assert ("joined", "too_big") in {(s, r) for s, r, _ in rejected}, rejected
    ship = ("water_part", [20, 93, 27, 3])
    pier_rim = ("water_part", [49, 79, 6, 14])
    if bend is None:
        assert found == sorted([ship, pier_rim]), found
    else:
        assert found == [ship], found
        assert ("water", "bent", [49, 79, 6, 14]) in rejected, rejected


def test_part_max_bend_bad_values_are_refused():
    image, _, _ = _synthetic(heading_deg=0.0)
    for bad in (-1.0, 91.0):
        with pytest.raises(ChangedetError, match="part_max_bend_deg"):
            detect_vessels(image, part_max_bend_deg=bad)


def test_bend_removes_busan_pier_rims_and_no_vessel(test_data):
    """On Busan the test removes the two water parts that turn a corner (the pier head on the
    diagonal pier at rows 372-394, cols 489-506, and a rim beside the ship at rows 342-357,
    cols 592-604), both false alarms, and no labelled vessel found without it is lost."""
    image = _scene(test_data, "busan")
    labels = _labels(test_data, "busan")

    def matched(res):
        dets = [d.attrs["bbox_px"] for d in res.detections]
        return {j for j, t in enumerate(labels) if any(_iou(d, t) >= MATCH_IOU for d in dets)}

    # The long-strip cut (s51 SHIPBIG) is off in both runs: the rim beside the ship, kept
    # without the bend test, takes the ship's strip, so with the cut the two runs would also
    # differ by that ship (tests/test_vessel_longstrip_s51.py).
    on = detect_vessels(image, cut_long_strips=False)
    off = detect_vessels(image, part_max_bend_deg=None, cut_long_strips=False)
    assert matched(off) <= matched(on), (sorted(matched(off)), sorted(matched(on)))
    gone = sorted(d.attrs["bbox_px"] for d in off.detections
                  if d.attrs["bbox_px"] not in [e.attrs["bbox_px"] for e in on.detections])
    assert gone == [[489, 372, 17, 22], [592, 342, 12, 15]], gone
    assert on.total == off.total - 2
