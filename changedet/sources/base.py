"""The source interface every imagery provider implements.

``search(aoi, start, end, *, sensor, max_cloud)`` returns :class:`SceneRecord`s (id,
acquisition time, platform, cloud cover, footprint, resolution); ``load(scene, grid)``
returns ``DataArray(band, y, x)`` (float32, reflectance 0..1 for optical sensors, NaN
where there is no data) on the AOI grid with its CRS in ``spatial_ref``. Optical sources
add a cloud band where the provider has one: ``CLM`` (1 = cloud or shadow, 0 = clear, as
Sentinel Hub's cloud mask) or ``SCL`` (the Sentinel-2 L2A scene classification), which
:mod:`changedet.cloudmask` turns into ``CLM``; so stages downstream never know where the
pixels came from.

Sources by the names AOI files use: ``simulator`` (offline default), ``stac``
(:class:`~changedet.sources.stac.StacSource`), ``local``
(:class:`~changedet.sources.local.LocalSource`) and ``sentinelhub``
(``changedet.sources.sentinelhub.SentinelHubSource``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Mapping, Protocol

import xarray as xr
from shapely.geometry import Polygon

from changedet.errors import DateError, SourceConfigError, SourceError
from changedet.grid import GridSpec

CLOUD_BAND = "CLM"
#: Sentinel-2 L2A scene classification band name, as providers deliver it.
SCL_BAND = "SCL"
SOURCE_CLASSES = {
    "simulator": "changedet.sources.simulator:SimulatorSource",
    "stac": "changedet.sources.stac:StacSource",
    "local": "changedet.sources.local:LocalSource",
    "sentinelhub": "changedet.sources.sentinelhub:SentinelHubSource",
}


@dataclass(frozen=True)
class SceneRecord:
    """One acquisition as a catalogue knows it (no pixels).

    Attributes
    ----------
    id : str
        Unique and stable across searches; the cube de-duplicates on it.
    time : datetime
        Acquisition time, UTC.
    cloud_cover : float
        Percent of the scene (or AOI, where the source knows it) under cloud.
    footprint : Polygon
        In EPSG:4326 (lon, lat).
    properties : mapping
        Source extras, e.g. ``sun_azimuth_deg``, ``sun_elevation_deg``.
    """

    id: str
    source: str
    aoi_id: str
    sensor: str
    time: datetime
    platform: str
    cloud_cover: float
    footprint: Polygon
    resolution_m: float
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def day(self) -> date:
        return self.time.date()


class Source(Protocol):
    """What every imagery source provides."""

    name: str

    def search(self, aoi, start: date, end: date, *, sensor: str, max_cloud: float = 100.0) -> list[SceneRecord]:
        """Scenes over ``aoi`` acquired from ``start`` to ``end`` (inclusive days, UTC) with at
        most ``max_cloud`` percent cloud where the catalogue knows it, sorted by time."""
        ...

    def load(self, scene: SceneRecord, grid: GridSpec) -> xr.DataArray:
        ...


def check_range(start: date, end: date) -> None:
    """Reject inverted ranges with a message that says how to fix them."""
    if not isinstance(start, date) or not isinstance(end, date):
        raise DateError(f"dates must be YYYY-MM-DD dates, got {start!r} and {end!r}")
    if end < start:
        raise DateError(f"end date {end} is before start date {start}; swap them")


def source_class(name: str) -> type:
    """The class behind a source name (imported on demand)."""
    import importlib

    if name not in SOURCE_CLASSES:
        raise SourceConfigError(f"unknown source {name!r}; use one of {sorted(SOURCE_CLASSES)}", option="name")
    module_name, cls_name = SOURCE_CLASSES[name].split(":")
    try:
        return getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise SourceError(
            f"source {name!r} is not available in this installation ({exc}); "
            f"install its extra (pip install 'changedet[{name}]') or use 'simulator' offline"
        ) from None


def source_from_spec(spec, **overrides: Any) -> Source:
    """The source an AOI's :class:`~changedet.aoi.SourceSpec` describes.

    The spec's options (and ``overrides``, which win) go to the source's constructor;
    ``sensor`` and ``resolution_m`` are passed where the constructor takes them, and
    fetch settings (``max_cloud``, ``cloud_mask``) are left out.
    """
    import inspect

    cls = source_class(spec.name)
    params = inspect.signature(cls).parameters
    options = {k: v for k, v in {**dict(spec.options), **overrides}.items() if k not in FETCH_OPTIONS}
    for key, value in (("sensor", spec.sensor), ("resolution_m", spec.resolution_m)):
        if key in params and key not in options:
            options[key] = value
    return get_source(spec.name, **options)


#: Source-entry keys that configure the fetch and the daily run, not the source
#: (``reference``: a registration reference image for the daily run; ``registration_window``:
#: whether the daily run registers a small site on a wider window, see changedet.pipeline).
FETCH_OPTIONS = ("max_cloud", "cloud_mask", "reference", "registration_window")


def get_source(name: str, **options: Any) -> Source:
    """Instantiate a source by the name used in AOI files; ``options`` go to its constructor.

    Sources other than the simulator are imported lazily, so a missing optional
    dependency only matters to the AOIs that use that source.
    """
    cls = source_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise SourceConfigError(f"source {name!r} does not take the options {sorted(options)} ({exc}); "
                                "check the source entry in the AOI file", option="options") from None
