"""Sentinel Hub evalscripts (V3) and the processing-unit estimate for the requests that use them.

Each builder returns an :class:`Evalscript`: the JavaScript text plus what the client needs
to decode the reply (output identifiers, band counts, sample types) and to estimate the
request's processing units. No-data pixels (``dataMask == 0``) come back as NaN in FLOAT32
outputs and as 255 in the UINT8 cloud band, following Sentinel Hub's own CLM convention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: Sentinel-2 L2A scene classification classes counted as cloud or shadow: 3 cloud shadow,
#: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus (ESA L2A product
#: definition). Snow (11) is not cloud: treating it as cloud would blank whole winters.
SCL_CLOUDY = (3, 8, 9, 10)
#: Classes without usable reflectance: 0 no data, 1 saturated or defective.
SCL_NODATA = (0, 1)
CLM_NODATA = 255
S1_BACKSCATTER = ("SIGMA0_ELLIPSOID", "GAMMA0_ELLIPSOID", "BETA0", "GAMMA0_TERRAIN")


@dataclass(frozen=True)
class Output:
    """One ``output`` of an evalscript: identifier, number of bands, sample type."""

    id: str
    bands: int
    sample_type: str  # "FLOAT32" or "UINT8"


@dataclass(frozen=True)
class Evalscript:
    """An evalscript and the facts about it the client needs.

    Attributes
    ----------
    text : str
        The JavaScript sent to the Process API.
    outputs : tuple of Output
        In reply order; more than one means the reply is a tar of ``<id>.tif`` files.
    band_names : tuple of str
        Names of the bands of the first output, in order.
    input_bands : int
        Collection bands read, ``dataMask`` excluded (the processing-unit rule).
    """

    text: str
    outputs: tuple[Output, ...]
    band_names: tuple[str, ...]
    input_bands: int

    @property
    def float32(self) -> bool:
        return any(o.sample_type == "FLOAT32" for o in self.outputs)


def _js(values) -> str:
    return json.dumps(list(values))


def sentinel2_l2a(bands: tuple[str, ...], *, cloud_mask: str = "SCL") -> Evalscript:
    """Reflectance bands (0–1, float32) plus a 0/1 cloud band (255 no data) from SCL or CLM.

    Parameters
    ----------
    bands : tuple of str
        Sentinel-2 band names, e.g. ``("B02", "B03", "B04", "B08")``.
    cloud_mask : {"SCL", "CLM"}
        ``"SCL"``: cloud = scene classes 3, 8, 9, 10; classes 0 and 1 (no data, saturated)
        are no data. ``"CLM"``: Sentinel Hub's s2cloudless mask.
    """
    if cloud_mask not in ("SCL", "CLM"):
        raise ValueError(f"cloud_mask must be 'SCL' or 'CLM', got {cloud_mask!r}")
    nan = _js(["__NAN__"] * len(bands)).replace('"__NAN__"', "NaN")
    values = "[" + ", ".join(f"s.{b}" for b in bands) + "]"
    if cloud_mask == "SCL":
        cloud = (f"({_js(SCL_NODATA)}.indexOf(s.SCL) >= 0 ? {CLM_NODATA} : "
                 f"{_js(SCL_CLOUDY)}.indexOf(s.SCL) >= 0 ? 1 : 0)")
    else:
        cloud = f"(s.CLM === {CLM_NODATA} ? {CLM_NODATA} : s.CLM)"
    text = f"""//VERSION=3
function setup() {{
  return {{
    input: [{{bands: {_js([*bands, cloud_mask, "dataMask"])}}}],
    output: [
      {{id: "bands", bands: {len(bands)}, sampleType: "FLOAT32"}},
      {{id: "clm", bands: 1, sampleType: "UINT8"}}
    ]
  }};
}}
function evaluatePixel(s) {{
  if (s.dataMask === 0) {{
    return {{bands: {nan}, clm: [{CLM_NODATA}]}};
  }}
  return {{bands: {values}, clm: [{cloud}]}};
}}
"""
    return Evalscript(text, (Output("bands", len(bands), "FLOAT32"), Output("clm", 1, "UINT8")),
                      tuple(bands), len(bands) + 1)


def sentinel1_grd(polarizations: tuple[str, ...] = ("VV", "VH"), *, db: bool = False) -> Evalscript:
    """Backscatter coefficient per polarization, linear power or dB (10·log10), float32.

    Orthorectification and the backscatter coefficient are request options (``processing``),
    not part of the script.
    """
    nan = "[" + ", ".join("NaN" for _ in polarizations) + "]"
    if db:
        values = "[" + ", ".join(f"toDb(s.{p})" for p in polarizations) + "]"
    else:
        values = "[" + ", ".join(f"s.{p}" for p in polarizations) + "]"
    text = f"""//VERSION=3
function setup() {{
  return {{
    input: [{{bands: {_js([*polarizations, "dataMask"])}}}],
    output: {{id: "default", bands: {len(polarizations)}, sampleType: "FLOAT32"}}
  }};
}}
function toDb(x) {{
  return x > 0 ? 10 * Math.log(x) / Math.LN10 : NaN;
}}
function evaluatePixel(s) {{
  if (s.dataMask === 0) {{
    return {nan};
  }}
  return {values};
}}
"""
    return Evalscript(text, (Output("default", len(polarizations), "FLOAT32"),), tuple(polarizations),
                      len(polarizations))


def byoc(bands: tuple[str, ...]) -> Evalscript:
    """Bands of a BYOC collection (e.g. purchased VHR) as float32 in the collection's units."""
    nan = "[" + ", ".join("NaN" for _ in bands) + "]"
    values = "[" + ", ".join(f"s[{json.dumps(b)}]" for b in bands) + "]"
    text = f"""//VERSION=3
function setup() {{
  return {{
    input: [{{bands: {_js([*bands, "dataMask"])}}}],
    output: {{id: "default", bands: {len(bands)}, sampleType: "FLOAT32"}}
  }};
}}
function evaluatePixel(s) {{
  if (s.dataMask === 0) {{
    return {nan};
  }}
  return {values};
}}
"""
    return Evalscript(text, (Output("default", len(bands), "FLOAT32"),), tuple(bands), len(bands))


def estimate_pu(width: int, height: int, *, input_bands: int, float32: bool, samples: int = 1,
                orthorectify: bool = False) -> float:
    """Processing units a Process API request costs, by Sentinel Hub's published rules.

    From "Processing Unit definition"
    (https://docs.sentinel-hub.com/api/latest/api/overview/processing-unit/): one PU is a
    512 × 512 px output of 3 input bands, one data sample per pixel, at most 16 bits per
    pixel, without orthorectification. Multiplication factors: output area / (512 × 512)
    (at least 0.01); input bands / 3 (``dataMask`` not counted); ×2 for 32-bit float
    output; × the number of data samples per pixel; ×2 for Sentinel-1 orthorectification.
    A request costs at least 0.005 PU.

    Parameters
    ----------
    width, height : int
        Output size, pixels.
    input_bands : int
        Collection bands the evalscript reads, ``dataMask`` excluded.
    float32 : bool
        Whether any output is 32-bit float.
    samples : int
        Data samples per pixel (1 for ``SIMPLE`` mosaicking).
    orthorectify : bool
        Sentinel-1 orthorectification requested.

    Returns
    -------
    float
        Estimated processing units.
    """
    area = max(width * height / (512.0 * 512.0), 0.01)
    pu = area * (input_bands / 3.0) * (2.0 if float32 else 1.0) * samples * (2.0 if orthorectify else 1.0)
    return max(pu, 0.005)
