"""Input checks shared by the counters: features against the image, resolution, bands.

Each check raises a :class:`~changedet.errors.ChangedetError` subclass whose message
names the bad input and the fix, so a wrong CRS, a zone drawn off the image or an image
too coarse for a method fails loudly instead of counting zero.
"""

from __future__ import annotations

from typing import Mapping

import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from changedet.errors import ChangedetError
from changedet.grid import GridSpec


class FeatureExtentError(ChangedetError):
    """A track, zone or berth is empty, or lies outside the image."""


class ResolutionError(ChangedetError):
    """The image is too coarse (or too fine) for the method asked for."""


class RadiometryError(ChangedetError):
    """An image's values cannot be taken as surface reflectance (0-1) and no scale says how."""


class BandOrderError(ChangedetError):
    """The image's bands cannot be identified, or their values contradict their names."""


# What each VHR method needs, and what is offered instead at medium resolution.
NEEDS = {
    "railcars": (1.5, "per-car detection and typing need 1.5 m or finer (cars are 3 m wide); at 3-10 m "
                      "count_railcars returns the occupied track length and an estimated car count with an "
                      "uncertainty instead"),
    "containers": (1.5, "container footprints and tiers need 1.5 m or finer (a 20 ft box is 2.44 m wide); "
                        "no medium-resolution TEU estimate exists - use VHR imagery for stack zones"),
    "ships": (3.0, "berth-level ship outlines from colour need 3 m or finer; for 3-30 m optical imagery use "
                   "changedet.objects.vessels.detect_vessels, for Sentinel-1 detect_vessels_sar"),
}


def check_resolution(grid: GridSpec, kind: str, *, max_m: float | None = None) -> None:
    """Raise :class:`ResolutionError` when the grid is coarser than ``kind``'s method allows."""
    limit, what = NEEDS[kind]
    limit = max_m if max_m is not None else limit
    if grid.resolution > limit:
        raise ResolutionError(f"the image is {grid.resolution:g} m per pixel, too coarse for {kind}: {what}")


def check_metric(grid: GridSpec, kind: str) -> None:
    """Raise :class:`ResolutionError` unless the grid's CRS units are metres on the ground
    (within 2 %): ``kind``'s counter measures lengths, areas and shadows in pixels times
    the resolution (Web Mercator at 60 degrees N would make every length twice too long)."""
    import pyproj

    from changedet.objects.vessels import ground_metres_per_unit

    fix = ("Reproject the image to the local UTM zone (gdalwarp -t_srs EPSG:326NN / 327NN) and count again")
    if pyproj.CRS.from_user_input(grid.crs).is_geographic:
        # Said here, not by ground_metres_per_unit: its advice (UTM or Web Mercator) suits
        # the ship counter, which scales Web Mercator, but not this one.
        raise ResolutionError(f"the image is in a geographic CRS (degrees): {kind} counting measures in metres. "
                              + fix)
    m = ground_metres_per_unit(grid)
    if abs(m - 1.0) > 0.02:
        raise ResolutionError(
            f"the image's CRS units are {m:.3g} m on the ground here (not metres; e.g. Web Mercator away from "
            f"the equator): {kind} counting measures in metres. " + fix)


def check_features(features: Mapping[str, BaseGeometry], grid: GridSpec, *, what: str,
                   min_inside: float = 0.0) -> None:
    """Every feature must be non-empty and overlap the image.

    ``min_inside`` is the share of each feature's extent (length for lines, area for
    polygons) that must lie on the image; 0 only requires it to touch it.
    """
    if not features:
        raise FeatureExtentError(f"no {what}s given; pass at least one {what} (image CRS)")
    frame = box(*grid.bounds)
    x0, y0, x1, y1 = grid.bounds
    for fid, geom in features.items():
        if geom is None or geom.is_empty or (geom.geom_type.endswith("Polygon") and geom.area <= 0) \
                or (geom.geom_type.endswith("LineString") and geom.length <= 0):
            raise FeatureExtentError(f"{what} {fid!r} is empty (no length or area); fix or drop it in the features")
        inter = geom.intersection(frame)
        measure = (lambda g: g.area) if geom.geom_type.endswith("Polygon") else (lambda g: g.length)
        share = measure(inter) / measure(geom) if not inter.is_empty else 0.0
        if inter.is_empty or share < min_inside:
            gx0, gy0, gx1, gy1 = geom.bounds
            raise FeatureExtentError(
                f"{what} {fid!r} lies outside the image (feature bounds {gx0:.1f}, {gy0:.1f}, {gx1:.1f}, {gy1:.1f}; "
                f"image bounds {x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}, CRS {grid.crs.to_string()}); check that "
                "the features are in the image's CRS (or EPSG:4326 lon/lat for the CLI) and cover this image")


def union(features: Mapping[str, BaseGeometry]) -> BaseGeometry:
    return shapely.union_all(list(features.values()))
