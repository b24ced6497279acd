"""Sun position at a satellite's morning overpass, for shadows."""

from __future__ import annotations

import math
from datetime import date


def sun_position(day: date, lat: float, *, local_solar_time_h: float = 10.5) -> tuple[float, float]:
    """Solar elevation and azimuth (degrees; azimuth clockwise from north).

    Uses the Cooper declination formula; accurate to about a degree, which is
    plenty for shadow lengths of a few metres.

    Parameters
    ----------
    day : date
        Acquisition date.
    lat : float
        Latitude in degrees.
    local_solar_time_h : float
        Local solar time of the acquisition in hours; 10.5 is a sun-synchronous
        descending-node overpass (Sentinel-2, most VHR satellites).
    """
    doy = day.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    hour_angle = math.radians(15.0 * (local_solar_time_h - 12.0))
    phi = math.radians(lat)
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    el = math.asin(max(-1.0, min(1.0, sin_el)))
    cos_az = (math.sin(decl) - math.sin(el) * math.sin(phi)) / (math.cos(el) * math.cos(phi))
    az = math.acos(max(-1.0, min(1.0, cos_az)))
    if hour_angle > 0:
        az = 2 * math.pi - az
    return math.degrees(el), math.degrees(az)


def shadow_vector(height_m: float, elevation_deg: float, azimuth_deg: float) -> tuple[float, float]:
    """Map offset (dx east, dy north) in metres of the shadow of a point ``height_m`` high."""
    el = max(elevation_deg, 3.0)
    length = height_m / math.tan(math.radians(el))
    az = math.radians(azimuth_deg)
    # The shadow points away from the sun.
    return -length * math.sin(az), -length * math.cos(az)
