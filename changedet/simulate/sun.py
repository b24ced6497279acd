"""Sun position at a satellite's morning overpass, for shadows."""

from __future__ import annotations

import math

# The sun's position is generic (real imagery needs it too); it lives in changedet.sun.
from changedet.sun import sun_position  # noqa: F401  (the old import path keeps working)


def shadow_vector(height_m: float, elevation_deg: float, azimuth_deg: float) -> tuple[float, float]:
    """Map offset (dx east, dy north) in metres of the shadow of a point ``height_m`` high."""
    el = max(elevation_deg, 3.0)
    length = height_m / math.tan(math.radians(el))
    az = math.radians(azimuth_deg)
    # The shadow points away from the sun.
    return -length * math.sin(az), -length * math.cos(az)
