"""Bad input to the counters fails with a clear error naming the input and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString, Polygon, box

from changedet.errors import ChangedetError
from changedet.grid import GridSpec
from changedet.objects.checks import BandOrderError, FeatureExtentError, ResolutionError
from changedet.objects.common import bgrn
from changedet.objects.containers import count_containers
from changedet.objects.railcars import count_railcars
from changedet.objects.ships import count_ships


def _image(res: float, n: int = 64, bands=("R", "G", "B", "NIR")):
    grid = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 500000.0 + n * res, 4000000.0 + n * res), res)
    rng = np.random.default_rng(1)
    data = (0.12 + 0.01 * rng.standard_normal((len(bands),) + grid.shape)).astype("float32")
    return grid.attach(data, bands=list(bands)), grid


def test_track_outside_the_image():
    image, grid = _image(0.5)
    x0, y0, x1, y1 = grid.bounds
    far = LineString([(x0 + 5000, y0), (x0 + 5100, y0)])
    with pytest.raises(FeatureExtentError, match=r"track 'T9' lies outside the image.*CRS"):
        count_railcars(image, {"T1": LineString([(x0 + 1, y0 + 10), (x1 - 1, y0 + 10)]), "T9": far})


def test_zone_outside_empty_and_missing():
    image, grid = _image(0.5)
    x0, y0, x1, y1 = grid.bounds
    with pytest.raises(FeatureExtentError, match="stack zone 'Z1' lies outside"):
        count_containers(image, {"Z1": box(x0 - 900, y0 - 900, x0 - 800, y0 - 800)})
    with pytest.raises(FeatureExtentError, match="stack zone 'Z2' is empty"):
        count_containers(image, {"Z2": Polygon()})
    with pytest.raises(FeatureExtentError, match="no stack zones given"):
        count_containers(image, {})
    with pytest.raises(FeatureExtentError, match="berth 'B1' lies outside"):
        count_ships(image, {"B1": box(x1 + 10, y1 + 10, x1 + 50, y1 + 50)})


def test_resolution_too_coarse_says_what_is_needed_and_offered():
    image, grid = _image(10.0)
    x0, y0, x1, y1 = grid.bounds
    zone = {"Z": box(x0 + 50, y0 + 50, x0 + 200, y0 + 200)}
    with pytest.raises(ResolutionError, match=r"10 m per pixel, too coarse for containers.*1.5 m or finer"):
        count_containers(image, zone)
    image30, grid30 = _image(30.0)
    x0, y0, x1, y1 = grid30.bounds
    with pytest.raises(ResolutionError, match=r"per-car detection and typing need 1.5 m.*medium-resolution estimate"):
        count_railcars(image30, {"T": LineString([(x0 + 10, y0 + 100), (x1 - 10, y0 + 100)])})


def test_medium_resolution_railcars_report_unresolved_tracks():
    image, grid = _image(10.0)
    x0, y0, x1, y1 = grid.bounds
    tracks = {f"T{i}": LineString([(x0 + 20, y0 + 300 + 5 * i), (x1 - 20, y0 + 300 + 5 * i)]) for i in range(3)}
    res = count_railcars(image, tracks)
    assert res.detections == () and res.uncertainty is not None
    for pf in res.per_feature:
        assert pf["tracks_resolved"] is False and pf["track_spacing_m"] == pytest.approx(5.0)


def test_band_names_and_order():
    image, grid = _image(0.5, bands=("X1", "X2", "X3"))
    with pytest.raises(ChangedetError, match="cannot identify blue, green, red and NIR"):
        bgrn(image)
    assert issubclass(BandOrderError, ChangedetError)
