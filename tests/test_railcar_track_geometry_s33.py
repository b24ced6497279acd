"""Track centrelines as users give them: with heights, in parts, or not a line at all.

GeoJSON exports often carry a height per vertex, and a track digitised in pieces is a
MultiLineString (the CLI accepts both). The optical counter read each track's direction
from its first and last vertex as 2-D points: with the sun given it raised ValueError
("too many values to unpack") on 3-D lines and NotImplementedError on multi-part ones
(review RMEDRES L2). Heights play no part in the image's plane and parts that meet end
to end are one centreline; parts that do not join are refused with the fix named.
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString, MultiLineString, Polygon

from changedet.errors import ChangedetError
from changedet.grid import GridSpec
from changedet.objects.railcars import count_railcars


def _image(res: float, n: int = 200):
    grid = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 500000.0 + n * res, 4000000.0 + n * res), res)
    data = (0.12 + 0.01 * np.random.default_rng(1).standard_normal((4,) + grid.shape)).astype("float32")
    return grid.attach(data, bands=["R", "G", "B", "NIR"]), grid


SUN = {"sun_azimuth_deg": 150.0, "sun_elevation_deg": 40.0}


@pytest.mark.parametrize("res", [0.5, 10.0])
def test_a_track_with_heights_or_in_joining_parts_counts_as_its_plain_line(res):
    image, grid = _image(res, 200 if res < 1 else 60)
    x0, y0, x1, y1 = grid.bounds
    ym = 0.5 * (y0 + y1)
    xa, xm, xb = x0 + 5 * res, 0.5 * (x0 + x1), x1 - 5 * res
    plain = count_railcars(image, {"T": LineString([(xa, ym), (xb, ym)])}, **SUN)
    with_z = count_railcars(image, {"T": LineString([(xa, ym, 12.0), (xb, ym, 12.5)])}, **SUN)
    parts = count_railcars(image, {"T": MultiLineString([[(xa, ym), (xm, ym)], [(xm, ym), (xb, ym)]])}, **SUN)
    assert with_z.total == plain.total and parts.total == plain.total
    assert [p["id"] for p in parts.per_feature] == ["T"]


def test_a_track_in_separate_parts_or_not_a_line_is_refused_with_the_fix():
    image, grid = _image(0.5)
    x0, y0, x1, y1 = grid.bounds
    ym = 0.5 * (y0 + y1)
    apart = MultiLineString([[(x0 + 5, ym), (x0 + 40, ym)], [(x0 + 50, ym), (x1 - 5, ym)]])
    with pytest.raises(ChangedetError, match=r"track 'T' is a MultiLineString.*own track feature"):
        count_railcars(image, {"T": apart}, **SUN)
    area = Polygon([(x0 + 5, ym), (x1 - 5, ym), (x1 - 5, ym + 3), (x0 + 5, ym + 3)])
    with pytest.raises(ChangedetError, match=r"track 'T' is a Polygon.*centreline"):
        count_railcars(image, {"T": area}, **SUN)
