"""Session 17 (SHIP4): how each vessel was found, and the per-item error analysis of the sen2ships bench.

``detect_vessels`` finds a hull in four ways, which are not equally sure (on the sen2ships
scenes, share of detections that match a label: a body on the water judged whole 13 of 18,
joined with its quayside strips 11 of 15, a quayside strip alone 6 of 7, a water part of
a joined body that failed a test and was judged alone 9 of 24). Each detection now names
its way in ``attrs["found_as"]``. ``bench/bench_ships.py`` lists every missed vessel and
every false alarm with its size, contrast, band values, distance to land and cause
(``errors()``, printed with ``--errors``); its cause counts (``gap()``) are counted from
those rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from changedet.io import read_raster
from changedet.objects.vessels import detect_vessels, detect_vessels_sar
from tests.test_ships_sen2ships import _synthetic  # the sen2ships tests' synthetic sea and hull

FOUND_AS = {"water", "joined", "water_part", "quayside"}
CASABLANCA = "sen2ships_s2_ports/casablanca/2023-04-26-00_00_2023-04-26-23_59_Sentinel-2_L2A_{}_(Raw).tiff"


def _casablanca(test_data) -> xr.DataArray:
    return xr.concat([read_raster(test_data(CASABLANCA.format(b)), bands=[b])
                      for b in ("B02", "B03", "B04", "B08", "B11")], "band")


def _inside(a, b) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def test_found_as_names_a_hull_on_open_water_and_one_alongside_a_quay():
    """A hull on open water is a body grown on the water (``water``); a hull lying against a
    straight quay is not water, so it is found as a strip sticking out of the quay line
    (``quayside``). Before, detections carried no ``found_as``."""
    image, grid, _ = _synthetic(heading_deg=30.0)
    free = detect_vessels(image)
    assert [d.attrs["found_as"] for d in free.detections] == ["water"], free.to_json()

    image, grid, _ = _synthetic(heading_deg=0.0)
    data = image.values.copy()
    names = list(image["band"].values)
    n = data.shape[1]
    quay_row = int(n * 0.8)
    hull = np.s_[quay_row - 3:quay_row, 40:65]    # 30 m x 250 m alongside, painted steel
    for b, v in zip(names, (0.12, 0.12, 0.12, 0.25, 0.2)):
        data[names.index(b)][hull] = v
    res = detect_vessels(grid.attach(data, bands=names))
    moored = [d for d in res.detections if d.type == "at_berth"]
    assert len(moored) == 1, res.to_json()
    assert moored[0].attrs["found_as"] == "quayside"
    # The JSON a user reads carries it too.
    assert all(d["found_as"] in FOUND_AS for d in res.to_json()["detections"])


def test_found_as_on_casablanca_matches_the_rejected_diagnostics(test_data):
    """On the real Casablanca scene every detection names one of the four ways; each
    ``water_part`` lies inside a joined candidate that failed a test (listed in
    ``rejected`` as source ``joined``), and each ``joined`` one does not (it passed)."""
    rejected: list = []
    res = detect_vessels(_casablanca(test_data), rejected=rejected)
    kinds = [d.attrs["found_as"] for d in res.detections]
    assert set(kinds) <= FOUND_AS
    assert {"water_part", "joined", "quayside"} <= set(kinds), kinds
    failed_joined = [box for source, _, box in rejected if source == "joined"]
    for d in res.detections:
        inside = any(_inside(d.attrs["bbox_px"], box) for box in failed_joined)
        if d.attrs["found_as"] == "water_part":
            assert inside, d.attrs
        if d.attrs["found_as"] == "joined":
            assert d.attrs["bbox_px"] not in failed_joined, d.attrs


def test_sar_detections_are_found_on_the_water():
    """The radar path has no quayside search: every detection is ``water``."""
    rng = np.random.default_rng(1)
    from changedet.grid import GridSpec

    grid = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 501600.0, 4001600.0), 10.0)
    vv = rng.gamma(4.4, 0.01 / 4.4, grid.shape)
    vv[60:63, 70:85] = 1.0
    res = detect_vessels_sar(grid.attach(vv[None].astype("float32"), bands=["VV"]))
    assert res.total >= 1
    assert {d.attrs["found_as"] for d in res.detections} == {"water"}


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_ships

    return bench_ships


def test_bench_errors_lists_every_miss_and_false_alarm(test_data, bench):
    """``errors()`` has one row per missed vessel >= 3 px and one per false alarm (IoU rule),
    each with what explains it; ``gap()``'s counts are those rows counted, and the
    precision per ``found_as`` adds up to the detections."""
    image = _casablanca(test_data)
    labels = bench.load_labels(test_data("sen2ships_s2_ports/casablanca/casablanca_coco.json").parents[2],
                               "casablanca")
    rejected: list = []
    res = detect_vessels(image, rejected=rejected)
    dets = [d.attrs["bbox_px"] for d in res.detections]
    labs = [lab for lab in labels if max(lab["bbox"][2:]) >= bench.MIN_LEN_PX]
    tp = len(bench.match(dets, [lab["bbox"] for lab in labs], "iou"))
    items = bench.errors(image, labels, res, rejected)
    assert len(items["misses"]) == len(labs) - tp
    assert len(items["false_alarms"]) == len(dets) - tp
    assert sum(v["n"] for v in items["precision_by_found_as"].values()) == len(dets)
    assert sum(v["true"] for v in items["precision_by_found_as"].values()) == tp
    for m in items["misses"]:
        assert m["cause"] and m["long_side_m"] >= bench.MIN_LEN_PX * 8.0
        assert set(m["bands"]) == {"B03", "B08", "B11"} and m["to_land_m"] >= 0.0
        assert m["body_px"] + m["quayside_px"] <= m["n_px"]
    for f in items["false_alarms"]:
        assert f["found_as"] in FOUND_AS and f["kind"] in ("beside_label", "alongside", "open_water")
        assert f["best_label_iou"] < bench.MATCH_IOU or f["kind"] == "beside_label"
    counts = bench.gap(items)
    assert sum(counts["misses"].values()) == len(items["misses"])
    assert sum(counts["false_alarms"].values()) == len(items["false_alarms"])
    # Casablanca today (see bench/bench_ships.py): the six misses are alongside (0 m to land).
    assert all(m["to_land_m"] == 0.0 for m in items["misses"])
