"""Imagery sources behind one interface: ``search`` scene records, ``load`` pixels on a grid.

``get_source(name, **options)`` builds one by the name AOI files use (``simulator``,
``stac``, ``local``, ``sentinelhub``); each is imported on first use, so importing this
package (as the cube does) stays cheap.
"""

from changedet.sources.base import CLOUD_BAND, SCL_BAND, SceneRecord, Source, check_range, get_source

__all__ = ["CLOUD_BAND", "SCL_BAND", "SceneRecord", "SimulatorSource", "Source", "check_range", "get_source"]


def __getattr__(name: str):
    if name == "SimulatorSource":
        from changedet.sources.simulator import SimulatorSource

        return SimulatorSource
    raise AttributeError(f"module 'changedet.sources' has no attribute {name!r}")
