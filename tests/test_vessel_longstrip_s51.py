"""Session 51 (SHIPBIG): a quayside strip too long for one ship is cut where it narrows under a
deck's width.

A hull moored alongside sticks out of the straightened quay line by its whole beam along its
parallel body; the quay's own edge, which the line opening leaves beside it, is a mixed-pixel
rim one pixel wide. A strip too long for one ship (``too_long``: over ``MAX_LENGTH_M`` or
over ``max_elongation`` beams) that holds a hull and the quay edge it runs on into is cut at
its cross-sections narrower than two pixels (``CUT_LONG_STRIPS``, ``cut_long_strips``), and
each run is judged as a quayside strip of its own (``found_as`` ``"quay_cut"``). On the
sen2ships scenes: Busan label 21, a 270 m ship alongside (rows 352-374, cols 600-632), is
found and nothing is lost or added elsewhere (TP 30 -> 31, FP 12, F1 0.625 -> 0.639);
Casablanca unchanged (0.667). The F1 floors are in ``test_ships_sen2ships.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects.vessels import _deck_runs, _vessels_from, detect_vessels
from tests.test_ships_sen2ships import _iou, _labels, _scene, _synthetic

MATCH_IOU = 0.1
DECK = [20, 96, 30, 4]     # [col, row, width, height] of the synthetic hull's deck


def _deck_and_quay_edge(n: int):
    """Land south of row 100; one quayside strip made of a ship's deck alongside (rows 96-99,
    cols 20-49: 300 x 40 m) and the quay's one-pixel edge it runs on into (row 99, cols
    50-109): 900 m long, too long for a ship."""
    dom = np.ones((n, n), bool)
    dom[100:, :] = False
    quay = np.zeros((n, n), bool)
    quay[96:100, 20:50] = True
    quay[99, 50:110] = True
    dom[quay] = False
    return dom, quay


def test_deck_runs_leave_out_one_pixel_cross_sections():
    """A 4-pixel-wide bar followed by a one-pixel line, straight or as a 45-degree staircase
    (1.4 pixels per unit step along it), gives one run: the bar."""
    bar = [(r, c) for r in range(10, 14) for c in range(0, 20)]
    line = [(13, c) for c in range(20, 60)]
    runs = _deck_runs(np.array(bar + line), 2.0)
    assert len(runs) == 1 and len(runs[0]) >= 0.9 * len(bar), [len(r) for r in runs]
    assert runs[0][:, 1].max() <= 21, runs[0][:, 1].max()
    stair = [(i, i) for i in range(40)] + [(i + 1, i) for i in range(40)]   # 4-connected staircase
    assert _deck_runs(np.array(stair), 2.0) == [], "a one-pixel staircase is not a deck"


@pytest.mark.parametrize("cut", [True, False])
def test_a_hull_at_the_start_of_a_too_long_strip_is_found(cut):
    """With the cut the deck is reported (``quay_cut``) and the quay edge is not; without it
    (as before s51) the whole strip is turned down as ``too_long`` and nothing is found.
    Fails before s51 (no ``cut_long_strips``, no ``_deck_runs``: ImportError)."""
    _, grid, _ = _synthetic(heading_deg=0.0)
    dom, quay = _deck_and_quay_edge(grid.shape[0])
    target = np.zeros_like(quay)
    z = np.where(quay, 8.0, 0.0)
    rejected: list = []
    res = _vessels_from(target, dom, z, grid, 1.0, {}, min_length_px=3.0, observed=1.0, max_elongation=10.0,
                        quayside=quay, join_quayside=True, quay_min_fill=0.8, shore_elongation=2.0,
                        part_elongation=3.0, long_min_solidity=0.6, rejected=rejected, cut_long_strips=cut)
    assert ("quayside", "too_long") in {(s, r) for s, r, _ in rejected}, rejected
    if not cut:
        assert res.total == 0, res.to_json()
        return
    assert res.total == 1, res.to_json()
    d = res.detections[0]
    assert d.attrs["found_as"] == "quay_cut"
    assert _iou(d.attrs["bbox_px"], DECK) >= 0.8, d.attrs["bbox_px"]
    assert 270.0 <= d.attrs["length_m"] <= 330.0, d.attrs


def test_cut_finds_busan_ship_21_and_changes_nothing_else(test_data):
    """On Busan the cut finds label 21 (a 270 m ship alongside, whose strip runs on along the
    quay past 400 m) and adds no other detection; on Casablanca it changes nothing."""
    for port, gained in (("busan", {21}), ("casablanca", set())):
        image = _scene(test_data, port)
        labels = _labels(test_data, port)

        def matched(res):
            dets = [d.attrs["bbox_px"] for d in res.detections]
            return {j for j, t in enumerate(labels) if any(_iou(d, t) >= MATCH_IOU for d in dets)}

        on, off = detect_vessels(image), detect_vessels(image, cut_long_strips=False)
        assert matched(off) <= matched(on), (port, sorted(matched(off)), sorted(matched(on)))
        assert matched(on) - matched(off) == gained, (port, sorted(matched(on) - matched(off)))
        new = [d.attrs for d in on.detections if d.attrs["found_as"] == "quay_cut"]
        assert len(new) == len(gained), (port, new)
        assert on.total == off.total + len(gained)
