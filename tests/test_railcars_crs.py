"""Railcar counting refuses images whose CRS units are not ground metres.

Lengths, car pitches and shadows are measured in pixels times the resolution: in
degrees (EPSG:4326) the 'resolution' passed every test and a half-unit sampling step
asked for gigabytes; in Web Mercator at 42 N every car read 1.35 times too long."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString

from changedet.grid import GridSpec
from changedet.objects.checks import ResolutionError
from changedet.objects.railcars import count_railcars


def _image(crs, x0, y0, res):
    from affine import Affine

    grid = GridSpec(crs=crs, transform=Affine(res, 0, x0, 0, -res, y0), shape=(64, 64))
    data = np.full((4, 64, 64), 0.2, "float32")
    data[3] += 0.1
    return grid.attach(data, bands=["R", "G", "B", "NIR"]), grid


@pytest.mark.parametrize("crs, x0, y0, res", [
    ("EPSG:4326", 130.6, 42.3, 5e-6),          # lon/lat degrees: an EO Browser export
    ("EPSG:3857", 14540000.0, 5200000.0, 0.5),  # Web Mercator near Tumangang (~42 N)
])
def test_non_metric_crs_is_refused_with_the_fix(crs, x0, y0, res):
    image, grid = _image(crs, x0, y0, res)
    (a, b, c, d) = grid.bounds
    track = LineString([(a + (c - a) * 0.1, (b + d) / 2), (a + (c - a) * 0.9, (b + d) / 2)])
    with pytest.raises(ResolutionError, match="Reproject the image to the local UTM zone"):
        count_railcars(image, {"T1": track})


def test_a_nan_sun_angle_is_an_input_error():
    from changedet.errors import ChangedetError

    image, grid = _image("EPSG:32652", 500000.0, 4700000.0, 0.5)
    (a, b, c, d) = grid.bounds
    track = LineString([(a + 2, (b + d) / 2), (c - 2, (b + d) / 2)])
    with pytest.raises(ChangedetError, match="sun_azimuth_deg is nan"):
        count_railcars(image, {"T1": track}, sun_azimuth_deg=float("nan"), sun_elevation_deg=40.0)


def test_radar_bands_are_refused_without_advice_to_rename_them():
    from changedet.errors import ChangedetError

    image, grid = _image("EPSG:32652", 500000.0, 4700000.0, 0.5)
    radar = image.isel(band=[0, 1]).assign_coords(band=["VV", "VH"])
    (a, b, c, d) = grid.bounds
    track = LineString([(a + 2, (b + d) / 2), (c - 2, (b + d) / 2)])
    with pytest.raises(ChangedetError, match="radar .* no radar mode"):
        count_railcars(radar, {"T1": track})
