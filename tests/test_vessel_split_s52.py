"""Session 52 (SHIP52): a stubby body grown on the water alongside is cut at the saddles of its
contrast into hulls abreast.

Boats moored abreast or stern-to (fishing quays, marinas) lie less than a pixel apart at 10 m:
their body grown on the water is too stubby for one hull as a whole (``shore_stubby``), while
each hull is still its own peak of contrast with the mixed pixels of the water between them a
saddle. With ``split_abreast`` (``SPLIT_ABREAST``) such a body - judged whole, or a water part
of a joined body that failed a shape test - is cut by a watershed of the contrast from the
peaks that stand ``k - k_grow`` spreads above their saddle, and each piece is judged by the same
tests (``found_as`` ``"split"``). On the sen2ships scenes: Busan TP 31 -> 32, FP 12 (F1 0.639 ->
0.653; label 46, one boat of a pair abreast at the fishing quay); Casablanca unchanged (0.667).
The F1 floors are in ``test_ships_sen2ships.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label, regionprops

from changedet.errors import ChangedetError
from changedet.objects.vessels import SPLIT_ABREAST, _split_at_saddles, _vessels_from, detect_vessels
from tests.test_ships_sen2ships import _iou, _labels, _scene, _synthetic

MATCH_IOU = 0.1
BUSAN_LABEL_46 = [646, 573, 11, 7]   # one of two boats abreast at the fishing quay


def _region(mask: np.ndarray):
    return regionprops(label(mask, connectivity=2))[0]


def test_split_at_saddles_cuts_two_peaks_and_leaves_one_whole():
    """Two 8 x 2 px hulls (contrast 10) with a one-pixel saddle row between them (6) are cut into
    two pieces, one round each hull; with a saddle only 1 below them, or a single hull, nothing
    is cut."""
    z = np.zeros((40, 40))
    body = np.zeros((40, 40), bool)
    body[10:15, 20:28] = True
    z[10:12, 20:28] = 10.0
    z[12, 20:28] = 6.0
    z[13:15, 20:28] = 10.0
    pieces = _split_at_saddles(_region(body), z, 2.0)
    assert len(pieces) == 2
    rows = sorted(tuple(sorted(set(p.coords[:, 0]))) for p in pieces)
    # The saddle row goes to one side; each hull's rows stay whole in one piece.
    assert {10, 11} <= set(rows[0]) and {13, 14} <= set(rows[1]), rows
    assert sum(p.area for p in pieces) == body.sum()
    assert all(p.bbox[1] == 20 and p.bbox[3] == 28 for p in pieces)   # placed in the image
    shallow = z.copy()
    shallow[12, 20:28] = 9.0
    assert _split_at_saddles(_region(body), shallow, 2.0) == []
    single = np.where(body, 10.0, 0.0)
    assert _split_at_saddles(_region(body), single, 2.0) == []


def _two_boats_abreast(n: int):
    """Land from row 99 south; two boats 8 px long and 2 px wide moored abreast at the quay
    (rows 94-95 and 97-98, cols 20-27) with one row of mixed water pixels (row 96, a saddle
    4 below them) between them. Grown on the water they are one 8 x 5 px body, L/B 1.6:
    ``shore_stubby``."""
    dom = np.ones((n, n), bool)
    dom[99:, :] = False
    target = np.zeros((n, n), bool)
    target[94:99, 20:28] = True
    z = np.zeros((n, n))
    z[94:96, 20:28] = 10.0
    z[96, 20:28] = 6.0
    z[97:99, 20:28] = 10.0
    return dom, target, z


@pytest.mark.parametrize("depth", [2.0, None])
def test_two_boats_abreast_alongside_are_found_apart(depth):
    """With the split (depth 2, the defaults' k - k_grow) both boats are found, each as a piece
    of its own; without it (None, as before s52) the stubby body is turned down as
    ``shore_stubby`` and nothing is found. Fails before s52 (no ``split_depth``: TypeError)."""
    _, grid, _ = _synthetic(heading_deg=0.0)
    dom, target, z = _two_boats_abreast(grid.shape[0])
    rejected: list = []
    res = _vessels_from(target, dom, z, grid, 1.0, {}, min_length_px=3.0, observed=1.0, max_elongation=10.0,
                        shore_elongation=2.0, rejected=rejected, split_depth=depth)
    found = sorted((d.attrs["found_as"], d.attrs["bbox_px"]) for d in res.detections)
    if depth is None:
        assert found == [], found
        assert ("water", "shore_stubby", [20, 94, 8, 5]) in rejected, rejected
    else:
        assert [f for f, _ in found] == ["split", "split"], found
        boxes = sorted(b for _, b in found)
        assert boxes[0][1] == 94 and boxes[1][1] + boxes[1][3] == 99, boxes
        assert all(b[0] == 20 and b[2] == 8 for b in boxes), boxes
        assert ("water", "shore_stubby", [20, 94, 8, 5]) not in rejected, rejected


def test_a_stubby_body_with_one_peak_is_still_turned_down():
    """A stubby body with a single peak of contrast (one stubby boat or a pier head) is not cut:
    it fails ``shore_stubby`` as before."""
    _, grid, _ = _synthetic(heading_deg=0.0)
    dom, target, _ = _two_boats_abreast(grid.shape[0])
    z = np.where(target, 10.0, 0.0)
    rejected: list = []
    res = _vessels_from(target, dom, z, grid, 1.0, {}, min_length_px=3.0, observed=1.0, max_elongation=10.0,
                        shore_elongation=2.0, rejected=rejected, split_depth=2.0)
    assert res.total == 0
    assert ("water", "shore_stubby", [20, 94, 8, 5]) in rejected, rejected


def test_split_abreast_bad_values_are_refused():
    image, _, _ = _synthetic(heading_deg=0.0)
    assert SPLIT_ABREAST is True
    for bad in (2.0, "yes", None):
        with pytest.raises(ChangedetError, match="split_abreast"):
            detect_vessels(image, split_abreast=bad)


def test_split_finds_busan_label_46_and_changes_nothing_else(test_data):
    """On Busan the split adds exactly one detection, a ``split`` piece matching label 46 (one
    of two boats abreast at the fishing quay, rows 573-584, cols 647-656), and every other
    detection is unchanged; on Casablanca nothing changes."""
    for port in ("busan", "casablanca"):
        image = _scene(test_data, port)
        labels = _labels(test_data, port)
        on = detect_vessels(image)
        off = detect_vessels(image, split_abreast=False)
        box = lambda r: sorted(tuple(d.attrs["bbox_px"]) for d in r.detections)
        new = [d for d in on.detections if tuple(d.attrs["bbox_px"]) not in box(off)]
        if port == "casablanca":
            assert box(on) == box(off)
            continue
        assert len(new) == 1 and new[0].attrs["found_as"] == "split", [d.attrs for d in new]
        assert box(off) == sorted(set(box(on)) - {tuple(new[0].attrs["bbox_px"])})
        assert _iou(new[0].attrs["bbox_px"], BUSAN_LABEL_46) >= MATCH_IOU
        assert BUSAN_LABEL_46 in labels
        # No other label matches the new detection.
        assert [t for t in labels if _iou(new[0].attrs["bbox_px"], t) >= MATCH_IOU] == [BUSAN_LABEL_46]
