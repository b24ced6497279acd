"""Which band is which: one table from spectral roles to the band names sources write.

Every module that needs "the red band" or "the NIR band" of an image it did not make
(spectral indices, cloud masks, vessel and object detectors, figures and reports) looks
it up here, so an image one stage understands is understood by all of them.

Names are matched case-insensitively, in the order listed: VHR product names (``R``,
``NIR``), STAC common names (``red``, ``nir08``, ``swir16``), then Sentinel-2 band
numbers (``B04``, ``B08``, with ``B8A``, the 20 m narrow NIR, as the last NIR choice).

Numbered bands are matched only in Sentinel-2's zero-padded spelling (``B04``, ``B08``,
``B8A``). Unpadded numbers are not guessed: ``b1``...``bN`` is what a GeoTIFF without band
descriptions reads as (:func:`changedet.io.band_names`), and NAIP's ``b4`` or Landsat 8's
``B5`` is NIR while Sentinel-2's band 4 is red and band 5 red edge. Name such bands by role
(``R``, ``G``, ``B``, ``NIR``) or pass an explicit mapping where the function takes one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

__all__ = ["ROLE_NAMES", "find_band", "find_bands"]

#: role -> band names tried in order, case-insensitively.
ROLE_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "blue": ("B", "BLUE", "B02"),
    "green": ("G", "GREEN", "B03"),
    "red": ("R", "RED", "B04"),
    "nir": ("NIR", "N", "NIR08", "B08", "B8A"),
    "swir1": ("SWIR1", "SWIR", "SWIR16", "B11"),
})


def find_band(names: Iterable[str], role: str) -> str | None:
    """The band name among ``names`` that plays ``role``, spelled as in ``names``, or None.

    Raises
    ------
    KeyError
        ``role`` is not one of :data:`ROLE_NAMES` (a programming error, not bad input).
    """
    by_upper: dict[str, str] = {}
    for n in names:
        by_upper.setdefault(str(n).upper(), str(n))
    for alias in ROLE_NAMES[role]:
        if alias in by_upper:
            return by_upper[alias]
    return None


def find_bands(names: Iterable[str], roles: Iterable[str]) -> tuple[str, ...] | None:
    """Band names for every role in ``roles`` (in that order), or None if any is missing."""
    names = list(names)
    found = tuple(find_band(names, r) for r in roles)
    return None if any(f is None for f in found) else found  # type: ignore[return-value]
