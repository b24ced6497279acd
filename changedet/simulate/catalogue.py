"""Physical catalogue of what the simulator draws: object dimensions, paints, materials.

Reflectances are surface reflectance (0..1) in four bands ordered blue, green, red,
near-infrared, values typical of published spectral libraries (USGS splib07, ECOSTRESS)
rounded; they are meant to be plausible, not exact. Dimensions are real: railcar
lengths over couplers and widths from Russian (GOST) and UIC rolling stock, containers
from ISO 668.
"""

from __future__ import annotations

from dataclasses import dataclass

# Band order used internally for optical rendering.
BGRN = ("blue", "green", "red", "nir")


@dataclass(frozen=True)
class ObjectType:
    """Geometry and look of one kind of object.

    Attributes
    ----------
    length_m, width_m : float
        Footprint seen from above, m. Railcar lengths are the real lengths over couplers
        (see the module docstring); the layout draws each as one footprint and adds a
        coupler gap (:data:`COUPLER_GAP_M`) between cars, so a simulated train is a
        little longer than a real one of the same cars.
    height_m : float
        Top above ground, used for shadows.
    paints : tuple of (b, g, r, nir)
        Candidate colours; one is drawn per object.
    sar_sigma0 : float
        Linear backscatter (VV) of the object's pixels: metal structures are bright.
    """

    name: str
    length_m: float
    width_m: float
    height_m: float
    paints: tuple[tuple[float, float, float, float], ...]
    sar_sigma0: float = 1.0


RAILCARS: dict[str, ObjectType] = {
    "boxcar": ObjectType(
        "boxcar", 15.7, 3.3, 4.7,
        ((0.05, 0.05, 0.12, 0.17), (0.06, 0.09, 0.07, 0.16), (0.10, 0.10, 0.11, 0.14),
         (0.09, 0.07, 0.16, 0.22), (0.16, 0.17, 0.17, 0.20)),
        sar_sigma0=2.0,
    ),
    "tank": ObjectType(
        "tank", 12.0, 3.0, 4.6,
        ((0.030, 0.030, 0.032, 0.040), (0.035, 0.035, 0.036, 0.045), (0.30, 0.31, 0.31, 0.33),
         (0.20, 0.20, 0.21, 0.23)),
        sar_sigma0=2.5,
    ),
    "gondola": ObjectType(
        "gondola", 13.9, 3.1, 3.5,
        ((0.05, 0.05, 0.09, 0.13), (0.07, 0.07, 0.08, 0.10), (0.05, 0.07, 0.06, 0.12)),
        sar_sigma0=1.8,
    ),
    "flatcar": ObjectType(
        "flatcar", 13.4, 3.0, 4.0,
        ((0.09, 0.09, 0.10, 0.12),),
        sar_sigma0=1.5,
    ),
    "locomotive": ObjectType(
        "locomotive", 18.0, 3.2, 5.1,
        ((0.07, 0.12, 0.07, 0.18), (0.08, 0.10, 0.20, 0.25), (0.18, 0.16, 0.10, 0.22),
         (0.09, 0.09, 0.20, 0.24)),
        sar_sigma0=3.0,
    ),
}
FREIGHT_TYPES = ("boxcar", "tank", "gondola", "flatcar")
# Gap between the bodies of two coupled cars (couplers plus buffers), metres.
COUPLER_GAP_M = (0.9, 1.4)

CONTAINER_20FT = (6.06, 2.44)
CONTAINER_40FT = (12.19, 2.44)
CONTAINER_TIER_M = 2.59
CONTAINER_PAINTS = (
    (0.05, 0.05, 0.20, 0.26),  # red
    (0.14, 0.07, 0.04, 0.16),  # blue
    (0.05, 0.10, 0.06, 0.18),  # green
    (0.36, 0.36, 0.35, 0.38),  # white/grey
    (0.05, 0.12, 0.30, 0.34),  # orange
    (0.07, 0.07, 0.10, 0.15),  # brown
    (0.06, 0.20, 0.30, 0.33),  # yellow
    (0.18, 0.12, 0.08, 0.20),  # light blue
)
TARP_PAINTS = ((0.10, 0.13, 0.10, 0.20), (0.16, 0.12, 0.07, 0.16), (0.22, 0.22, 0.21, 0.24))

SHIP_HULL_PAINTS = ((0.05, 0.05, 0.09, 0.10), (0.07, 0.07, 0.07, 0.08), (0.10, 0.07, 0.06, 0.09))
SHIP_HATCH_PAINTS = ((0.05, 0.10, 0.07, 0.14), (0.12, 0.08, 0.05, 0.12), (0.09, 0.09, 0.10, 0.12))
SHIP_SUPERSTRUCTURE = (0.40, 0.41, 0.40, 0.42)

# Background materials: base reflectance and relative texture amplitude.
MATERIALS: dict[str, tuple[tuple[float, float, float, float], float]] = {
    "vegetation": ((0.03, 0.07, 0.04, 0.34), 0.20),
    "soil": ((0.08, 0.11, 0.15, 0.22), 0.15),
    "ground": ((0.10, 0.12, 0.14, 0.18), 0.12),   # compacted dirt and gravel inside sites
    "ballast": ((0.12, 0.13, 0.14, 0.16), 0.08),
    "concrete": ((0.20, 0.22, 0.23, 0.25), 0.06),
    "asphalt": ((0.06, 0.065, 0.07, 0.08), 0.08),
    "water": ((0.05, 0.05, 0.03, 0.01), 0.10),
}
DORMANT_VEGETATION = (0.06, 0.08, 0.10, 0.18)
SNOW = (0.82, 0.83, 0.81, 0.72)
RAIL_STEEL = (0.05, 0.05, 0.05, 0.05)
ROOF_PAINTS = (
    (0.20, 0.21, 0.21, 0.23), (0.07, 0.07, 0.17, 0.22), (0.13, 0.09, 0.06, 0.15),
    (0.25, 0.26, 0.27, 0.29), (0.06, 0.10, 0.07, 0.15),
)

# C-band backscatter (linear sigma0, VV) of background materials; VH is about 1/4 to 1/6.
SAR_MATERIALS = {
    "vegetation": 0.06, "soil": 0.03, "ground": 0.04, "ballast": 0.08,
    "concrete": 0.05, "asphalt": 0.01, "water": 0.004,
}
SAR_VH_RATIO = {"vegetation": 0.25, "water": 0.1}
SAR_DEFAULT_VH_RATIO = 0.15
