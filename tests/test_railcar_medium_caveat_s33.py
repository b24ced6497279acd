"""The optical 3-12 m railcar estimate says it is not validated, in the JSON and on the CLI.

On the independent generator (``bench/bench_altgen_rail_medium.py``, session 33) it reads
about 0 at 3-10 m (scene totals 92-98 % low): an analyst counting a Sentinel-2 or
PlanetScope image must be told, not handed a number that looks like an observation.
VHR counts and the Sentinel-1 estimate carry no such caveat.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.cli import main
from changedet.grid import GridSpec
from changedet.objects.railcars import MEDIUM_OPTICAL_CAVEAT, count_railcars
from tests.test_audit_s16 import _synthetic


def _image(res: float, n: int = 64):
    grid = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 500000.0 + n * res, 4000000.0 + n * res), res)
    data = (0.12 + 0.01 * np.random.default_rng(1).standard_normal((4,) + grid.shape)).astype("float32")
    return grid.attach(data, bands=["R", "G", "B", "NIR"]), grid


@pytest.mark.parametrize("res,caveat", [(10.0, True), (3.0, True), (0.5, False)])
def test_optical_medium_resolution_estimate_carries_the_caveat(res, caveat):
    image, grid = _image(res)
    x0, y0, x1, y1 = grid.bounds
    ym = 0.5 * (y0 + y1)
    res_ = count_railcars(image, {"T1": LineString([(x0 + 3 * res, ym), (x1 - 3 * res, ym)])})
    doc = res_.to_json()
    assert (doc.get("caveat") == MEDIUM_OPTICAL_CAVEAT) is caveat
    assert ("caveat" in doc) is caveat


def test_cli_warns_and_keeps_one_json_object(tmp_path, capsys):
    image, feats = _synthetic(tmp_path, res=10.0, dtype="float32")
    rc = main(["count", "railcars", str(image), "--features", str(feats), "--json"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "not validated" in cap.err and "VHR" in cap.err
    lines = [ln for ln in cap.out.splitlines() if ln.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["caveat"] == MEDIUM_OPTICAL_CAVEAT
