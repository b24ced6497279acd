"""Imagery sources behind one interface: ``search`` scene records, ``load`` pixels on a grid."""

from changedet.sources.base import SceneRecord, Source, get_source
from changedet.sources.simulator import SimulatorSource

__all__ = ["SceneRecord", "SimulatorSource", "Source", "get_source"]
