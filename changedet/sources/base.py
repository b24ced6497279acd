"""The source interface every imagery provider implements.

``search(aoi, start, end, *, sensor, max_cloud)`` returns :class:`SceneRecord`s;
``load(scene, grid)`` returns ``DataArray(band, y, x)`` on the AOI grid with its CRS in
``spatial_ref``. Optical sources add a ``CLM`` band (1 = cloud or shadow, 0 = clear, as
Sentinel Hub's cloud mask), so stages downstream never know where pixels came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Mapping, Protocol

import xarray as xr
from shapely.geometry import Polygon

from changedet.errors import DateError, SourceError
from changedet.grid import GridSpec

CLOUD_BAND = "CLM"


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
        ...

    def load(self, scene: SceneRecord, grid: GridSpec) -> xr.DataArray:
        ...


def check_range(start: date, end: date) -> None:
    """Reject inverted ranges with a message that says how to fix them."""
    if not isinstance(start, date) or not isinstance(end, date):
        raise DateError(f"dates must be YYYY-MM-DD dates, got {start!r} and {end!r}")
    if end < start:
        raise DateError(f"end date {end} is before start date {start}; swap them")


def get_source(name: str, **options: Any) -> Source:
    """Instantiate a source by the name used in AOI files."""
    if name == "simulator":
        from changedet.sources.simulator import SimulatorSource

        return SimulatorSource(**options)
    raise SourceError(
        f"source {name!r} is not available in this installation; "
        "use 'simulator' (offline default) or install and configure the source"
    )
