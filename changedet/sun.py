"""Where the sun stood at an acquisition: solar elevation and azimuth from a date or a time.

Shadow-aware counters (railcars, containers) and cloud-shadow masks need the sun's
direction. Satellite products carry it in their metadata or not at all; when a file gives
only its acquisition time, the position follows from the time and the place (accurate to
about a degree, which is plenty for shadows a few metres long).
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

__all__ = ["MORNING_OVERPASS_H", "equation_of_time_min", "solar_time_utc", "sun_at", "sun_position"]

#: Local solar time (hours) of a sun-synchronous descending-node overpass (Sentinel-2,
#: Landsat and most VHR satellites cross between 10:00 and 11:00).
MORNING_OVERPASS_H = 10.5


def sun_position(day: date, lat: float, *, local_solar_time_h: float = MORNING_OVERPASS_H) -> tuple[float, float]:
    """Solar elevation and azimuth (degrees; azimuth clockwise from north).

    Uses the Cooper declination formula; accurate to about a degree, which is
    plenty for shadow lengths of a few metres.

    Parameters
    ----------
    day : date
        Acquisition date (local).
    lat : float
        Latitude in degrees.
    local_solar_time_h : float
        Apparent local solar time of the acquisition in hours; 10.5 is a
        sun-synchronous descending-node overpass (Sentinel-2, most VHR satellites).

    Returns
    -------
    (float, float)
        Elevation and azimuth in degrees.
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


def equation_of_time_min(day: date) -> float:
    """Apparent minus mean solar time in minutes (Spencer-style approximation, +-0.5 min)."""
    b = 2 * math.pi * (day.timetuple().tm_yday - 81) / 365.0
    return 9.87 * math.sin(2 * b) - 7.53 * math.cos(b) - 1.5 * math.sin(b)


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def sun_at(when: datetime, lat: float, lon: float) -> tuple[float, float]:
    """Solar elevation and azimuth (degrees) at time ``when`` over (``lat``, ``lon``).

    Parameters
    ----------
    when : datetime
        Acquisition time; a naive datetime is taken as UTC (the TIFF ``DateTime`` tag
        carries no zone, and imagery metadata is in UTC).
    lat, lon : float
        Place in degrees (WGS 84).

    Returns
    -------
    (float, float)
        Elevation and azimuth in degrees (azimuth clockwise from north).
    """
    mean_local = _utc(when) + timedelta(hours=lon / 15.0)
    local_day = mean_local.date()
    hours = mean_local.hour + mean_local.minute / 60 + mean_local.second / 3600 + mean_local.microsecond / 3.6e9
    return sun_position(local_day, lat, local_solar_time_h=hours + equation_of_time_min(local_day) / 60.0)


def solar_time_utc(day: date, lon: float, *, local_solar_time_h: float = MORNING_OVERPASS_H) -> datetime:
    """The UTC time at which apparent local solar time over ``lon`` is ``local_solar_time_h`` on ``day``.

    The inverse of :func:`sun_at`'s time handling: ``sun_at(solar_time_utc(d, lon, ...), lat, lon)``
    equals ``sun_position(d, lat, ...)``.
    """
    hours = local_solar_time_h - lon / 15.0 - equation_of_time_min(day) / 60.0
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(hours=hours)
