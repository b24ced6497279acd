"""Track centrelines as users give them: with heights, in parts, or not a line at all.

GeoJSON exports often carry a height per vertex, and a track digitised in pieces is a
MultiLineString (the CLI accepts both). The optical counter read each track's direction
from its first and last vertex as 2-D points: with the sun given it raised ValueError
("too many values to unpack") on 3-D lines and NotImplementedError on multi-part ones
(review RMEDRES L2). Heights play no part in the image's plane and parts that meet end
to end are one centreline; parts that do not join are refused with the fix named.
"""

from __future__ import annotations

import pytest
from shapely.geometry import LineString, MultiLineString, Polygon

from changedet.errors import ChangedetError
from changedet.objects.railcars import count_railcars
from tests.altgen.railyard import make_railyard
from tests.test_objects_inputs import _image

SUN = {"sun_azimuth_deg": 150.0, "sun_elevation_deg": 40.0}


def _reshaped(tracks, how: str):
    out = {}
    for tid, line in tracks.items():
        (xa, ya), (xb, yb) = line.coords
        xm, ym = 0.5 * (xa + xb), 0.5 * (ya + yb)
        out[tid] = (LineString([(xa, ya, 12.0), (xb, yb, 12.5)]) if how == "heights"
                    # two pieces meeting end to end (drawn the same way: the strip's samples
                    # start at the line's start, so a reversed track reads another sample phase)
                    else MultiLineString([[(xa, ya), (xm, ym)], [(xm, ym), (xb, yb)]]))
    return out


@pytest.mark.parametrize("how", ["heights", "parts"])
def test_a_track_with_heights_or_in_joining_parts_counts_as_its_plain_line(how):
    scene = make_railyard(0, gsd_m=0.5, condition="clear")
    sun = {"sun_azimuth_deg": scene.sun_azimuth_deg, "sun_elevation_deg": scene.sun_elevation_deg}
    plain = count_railcars(scene.image, scene.tracks, **sun)
    other = count_railcars(scene.image, _reshaped(scene.tracks, how), **sun)
    assert plain.total >= 20
    assert other.total == plain.total and dict(other.by_type) == dict(plain.by_type)
    assert [p["id"] for p in other.per_feature] == [p["id"] for p in plain.per_feature]
    assert [round(d.polygon.centroid.x, 3) for d in other.detections] == \
        [round(d.polygon.centroid.x, 3) for d in plain.detections]


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
