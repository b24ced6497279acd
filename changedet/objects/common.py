"""Detections and counts shared by the object counters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pyproj
import shapely
import shapely.ops
import xarray as xr
from shapely.geometry import Polygon, box
from shapely.affinity import rotate, translate

from changedet.bands import find_bands
from changedet.change import CLASS_BANDS  # the class (mask) bands, never rescaled
from changedet.errors import ChangedetError
from changedet.grid import GridSpec

@dataclass(frozen=True)
class Detection:
    """One detected object. ``polygon`` is in the image CRS (metres)."""

    kind: str
    type: str
    polygon: Polygon
    score: float
    feature_id: str | None
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CountResult:
    """Counts over an image's features.

    ``total`` is a count of objects (railcars, ships) or an estimate in TEU for
    containers; ``uncertainty`` is one standard deviation of ``total`` where the method
    can state one.
    """

    kind: str
    total: float
    by_type: Mapping[str, float]
    per_feature: tuple[Mapping[str, Any], ...]
    detections: tuple[Detection, ...]
    crs: pyproj.CRS
    uncertainty: float | None = None
    observed_fraction: float = 1.0   # share of the features seen (not cloud, inside the image)
    extras: Mapping[str, Any] = field(default_factory=dict)   # counter-specific totals (e.g. tarped_stacks)

    def to_json(self, *, to_crs: pyproj.CRS | None = None) -> dict[str, Any]:
        """The CLI contract: total, by_type, per_feature, detections (GeoJSON geometries)."""
        transformer = None
        if to_crs is not None and not pyproj.CRS.from_user_input(to_crs).equals(self.crs):
            transformer = pyproj.Transformer.from_crs(self.crs, to_crs, always_xy=True)
        dets = []
        for d in self.detections:
            geom = d.polygon
            if transformer is not None:
                geom = shapely.ops.transform(transformer.transform, geom)
            dets.append({"type": d.type, "polygon": shapely.geometry.mapping(geom), "score": round(d.score, 3),
                         "feature_id": d.feature_id, **{k: v for k, v in d.attrs.items()}})
        out = {"kind": self.kind, "total": _num(self.total), "by_type": {k: _num(v) for k, v in self.by_type.items()},
               "per_feature": [dict(p) for p in self.per_feature], "detections": dets,
               "observed_fraction": round(self.observed_fraction, 4)}
        if self.uncertainty is not None:
            out["uncertainty"] = round(float(self.uncertainty), 2)
        for k, v in self.extras.items():
            out.setdefault(k, v)
        return out


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 2)


# Band-order check: vegetation, the commonest bright cover outside deserts and snow, is
# far brighter in the NIR than in the red (NDVI 0.3-0.9); no common bright material is the
# other way round by as much (red paint, rust and tiles reflect NIR too: NDVI above -0.1).
# Dark pixels (water: NDVI down to -0.5) are left out by keeping the brighter half, and a
# "reversed" pixel must also be red-dominant over green as swapped vegetation is (its NIR
# is 2-6 times its green): a water-dominated harbour puts water in the brighter half, and
# water is greener than red (measured: 55 % of a simulated harbour's bright pixels below
# -0.3 without this test, none with it; real swapped NAIP, Sentinel-2 ports and OSCD
# still flagged, 0.017-0.61). With
# red and NIR swapped (or a NIR-first file read as R, G, B, NIR) vegetation shows up as
# strongly "negative NDVI": measured on 10 NAIP dates, 2 simulated VHR scenes and 6 real
# Sentinel-2 scenes, the share of bright pixels below -0.3 is at most 0.033 in the right
# order (with 0.11-0.75 above +0.3 wherever it is over 0.005) and 0.03-0.75 swapped.
_NDVI_SPLIT = 0.3
_MIN_REVERSED_SHARE = 0.01   # too little reversed vegetation to judge below this
_REVERSED_DOMINANCE = 3.0    # reversed share must exceed the normal share this many times
_RED_OVER_GREEN = 1.5        # a reversed pixel's 'red' over its green, as swapped vegetation


def check_red_nir(pix: np.ndarray, names: list[str], *, assumed: bool) -> None:
    """Raise :class:`~changedet.objects.checks.BandOrderError` when the red and NIR planes
    of ``pix`` (float (4, rows, cols) in B, G, R, NIR order) look swapped.

    Images without enough vegetation to tell (deserts, snow, all-concrete yards) pass.
    """
    from changedet.objects.checks import BandOrderError

    # About a million pixels decide as well as all of them (a full 6000^2 image took 7.7 s
    # and 1.6 GiB more memory).
    step = max(1, int(np.sqrt(pix[0].size / 1e6)))
    pix = pix[:, ::step, ::step]
    green = pix[1].astype("float64", copy=False)
    red, nir = pix[2].astype("float64", copy=False), pix[3].astype("float64", copy=False)
    bright = (red + nir) / 2
    ok = np.isfinite(bright)
    if ok.sum() < 100:
        return
    sel = ok & (bright > np.median(bright[ok]))
    with np.errstate(all="ignore"):
        ndvi = (nir[sel] - red[sel]) / np.maximum(np.abs(nir[sel] + red[sel]), 1e-12)
    if ndvi.size == 0:
        return
    reversed_share = float(((ndvi < -_NDVI_SPLIT) & (red[sel] > _RED_OVER_GREEN * green[sel])).mean())
    normal_share = float((ndvi > _NDVI_SPLIT).mean())
    if reversed_share >= _MIN_REVERSED_SHARE and reversed_share > _REVERSED_DOMINANCE * normal_share:
        how = ("the file's bands are unnamed and were taken as R, G, B, NIR" if assumed
               else f"bands {names} were read by their names")
        raise BandOrderError(
            f"the band order looks wrong: {reversed_share:.1%} of the brighter pixels are much brighter in the "
            f"'red' band than in the 'NIR' band (vegetation is the other way round) and only {normal_share:.1%} "
            f"the normal way; {how}. Give the file band descriptions in its real order (R, G, B, NIR or B02, "
            "B03, B04, B08; Planet 4-band analytic is B, G, R, NIR) and check that red and NIR are not swapped")


def bgrn(image: xr.DataArray, *, check_order: bool = True) -> np.ndarray:
    """Pixels as float32 (4, rows, cols) in blue, green, red, NIR order.

    Raises a clear error when the bands cannot be identified (the counters reason about
    colour, so guessing band order would silently give wrong answers), and a
    :class:`~changedet.objects.checks.BandOrderError` when red and NIR look swapped
    (:func:`check_red_nir`; ``check_order=False`` skips that check).
    """
    if "band" not in image.dims:
        raise ChangedetError("the image needs a 'band' dimension with named bands (e.g. R, G, B, NIR)")
    names = [str(b) for b in image["band"].values]
    if {n.upper() for n in names} & {"VV", "VH", "HH", "HV"}:
        # Renaming radar bands would not make them colour, and four of them (quad-pol)
        # must not pass for unnamed R, G, B, NIR either: say what is not supported.
        raise ChangedetError(
            f"bands {names} are radar backscatter; this counter reads optical colour (blue, green, red, NIR) "
            "and has no radar mode: use an optical image (Sentinel-2, Planet, VHR), or `changedet count ships` "
            "for vessels on radar (`changedet count railcars` has a Sentinel-1 estimate too)"
        )
    found = find_bands(names, ("blue", "green", "red", "nir"))
    if found is not None:
        pix = np.stack([np.asarray(image.isel(band=names.index(c)).values, dtype="float32") for c in found])
        assumed = False
    elif len(names) >= 4:
        # Unnamed 4-band imagery: assume the usual R, G, B, NIR order of VHR products.
        data = np.asarray(image.values[:4], dtype="float32")
        pix = data[[2, 1, 0, 3]]
        assumed = True
    else:
        raise ChangedetError(
            f"cannot identify blue, green, red and NIR among bands {names}; name them R, G, B, NIR or B02, B03, "
            "B04, B08"
        )
    if check_order:
        check_red_nir(pix, names, assumed=assumed)
    return pix


def prepare(image: xr.DataArray, valid: xr.DataArray | None) -> tuple[GridSpec, np.ndarray, np.ndarray]:
    """Grid, BGRN pixels and the mask of usable pixels (finite and, if given, ``valid``)."""
    grid = GridSpec.of(image)
    pix = bgrn(image)
    ok = np.all(np.isfinite(pix), axis=0)
    if valid is not None:
        ok &= np.asarray(valid.values, bool)
    return grid, pix, ok


def oriented_rect(cx: float, cy: float, angle: float, length: float, width: float) -> Polygon:
    rect = box(-length / 2, -width / 2, length / 2, width / 2)
    return translate(rotate(rect, angle, origin=(0, 0), use_radians=True), cx, cy)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges [a, b) of True runs in a 1-D boolean array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]))


def robust_ref(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band median and scaled MAD of (n, band) samples, ignoring NaN rows."""
    s = samples[np.all(np.isfinite(samples), axis=1)]
    if s.shape[0] == 0:
        return np.full(samples.shape[1], np.nan), np.full(samples.shape[1], np.nan)
    med = np.median(s, axis=0)
    mad = 1.4826 * np.median(np.abs(s - med), axis=0)
    return med, mad


def angle_of(x0: float, y0: float, x1: float, y1: float) -> float:
    return math.atan2(y1 - y0, x1 - x0)


# -- radiometric scale ----------------------------------------------------------------------
# The counters' colour rules hold absolute surface-reflectance constants (containers' dull
# covers 0.08-0.30, the chroma floor 0.005, spread floors "0.003 + 3 %", railcar and ship
# darkness floors): reflectance is what makes a grey tarp grey on any sensor, and a DN or a
# display stretch does not say it. So the image is turned into reflectance 0-1 at the
# boundary, from the file's own scale where it states one.

#: Highest 99.9th percentile a uint16 surface-reflectance product (S2 L2A / Planet SR,
#: reflectance x 10000) holds: the float bound below (glints, snow and cloud tops reach
#: 1-1.3) plus the 1000 the Sentinel-2 processing baseline 04.00 adds. 12000 refused real
#: L2A with 0.5 % unmasked cloud; 14-bit and wider sensor DNs still exceed it.
MAX_REFLECTANCE_X10000 = 16000.0
#: Highest 99.9th percentile of float values that can be reflectance 0-1 (glints, snow and
#: cloud tops reach 1-1.3): a float image above it is in DNs or a scaled product.
MAX_FLOAT_REFLECTANCE = 1.5
_HIGH_PERCENTILE = 99.9
#: Plausible range of the converted 99.9th percentile of surface reflectance 0-1: below
#: 0.02 even water and shadow-only scenes are brighter; above 1.5 is not reflectance. A
#: scale taken from metadata that lands outside it was meant for other values.
PLAUSIBLE_REFLECTANCE = (0.02, 1.5)
#: Saturation / fill values of integer sensors and exporters (16-, 12-, 11- and 8-bit full
#: scale): an undeclared fill collar or saturated pixels at these values say nothing about
#: the scale of the other pixels, so they are kept out of the percentile.
FILL_VALUES = (65535.0, 4095.0, 2047.0, 255.0)


def high_percentile(values: np.ndarray, clear: np.ndarray | None = None, *, integer: bool) -> float:
    """The 99.9th percentile of the values that tell an image's scale (stored units).

    Parameters
    ----------
    values : ndarray, shape (band, y, x)
        The data bands as stored (class bands left out), any float or integer type.
    clear : ndarray of bool, shape (y, x), optional
        Pixels the cloud mask calls clear; cloud tops (reflectance 1-1.3) and masked
        collars would otherwise set the percentile.
    integer : bool
        The file stores integers: values at a saturation / fill level (:data:`FILL_VALUES`)
        are left out. 65535 is left out of float files too (an undeclared uint16 fill
        carried into a float export).

    Returns
    -------
    float
        The percentile, NaN when no value is left.
    """
    v = np.asarray(values, dtype="float32")
    if clear is not None:
        v = v[:, np.asarray(clear, bool)]
    v = v[np.isfinite(v)]
    v = v[~np.isin(v, np.asarray(FILL_VALUES if integer else FILL_VALUES[:1], "float32"))]
    return float(np.percentile(v, _HIGH_PERCENTILE)) if v.size else float("nan")


def _band_factor(meta: Mapping[str, Any]) -> tuple[float, float, str] | None:
    """(scale, offset, source) the band's metadata states, or None when it states none."""
    if (meta.get("scale", 1.0), meta.get("offset", 0.0)) != (1.0, 0.0):
        return float(meta["scale"]), float(meta["offset"]), "file metadata (GDAL scale/offset)"
    q = meta.get("quantification")
    if q is not None and q > 0:
        add = meta.get("add_offset") or 0.0
        return 1.0 / q, add / q, (f"file metadata (BOA_QUANTIFICATION_VALUE {q:g}"
                                  + (f", BOA_ADD_OFFSET {add:g})" if add else ")"))
    return None


def radiometry(scaling: Mapping[str, Any], high_value: float, *, path: str, scale: float | None = None,
               offset: float | None = None, skip: tuple[str, ...] = (), unknown_ok: bool = False) -> dict[str, Any]:
    """How to turn an image's stored values into surface reflectance 0-1.

    Parameters
    ----------
    scaling : mapping
        :func:`changedet.io.read_scaling` of the file: its data type and each band's
        GDAL scale/offset and Sentinel-2 quantification items.
    high_value : float
        The 99.9th percentile of the bands scaled (stored units) over clear pixels, fill
        values left out (:func:`high_percentile`): tells reflectance x 10000 from other
        integer scales, float reflectance from float DNs, and checks a metadata scale.
    path : str
        The file, for messages.
    scale, offset : float, optional
        Reflectance = stored x ``scale`` + ``offset`` as the user states it
        (``--reflectance-scale`` / ``--reflectance-offset``); overrides the metadata.
    skip : tuple of str
        Bands left as stored (class bands such as the CLM cloud mask), any case.
    unknown_ok : bool
        When the scale cannot be told, return ``scale``/``offset`` None (values used as
        stored, ``source`` says so) instead of raising: for counters whose outputs do not
        hinge on reflectance (railcars, ships), not for containers (dull covers, tarp flags).

    Returns
    -------
    dict
        ``{"scale", "offset", "source", "bands"}``: ``scale``/``offset`` (a number, or a
        per-band mapping when the bands differ), ``source`` how they were chosen, and
        ``bands`` ({name: (scale, offset)} for every band to scale; empty when unknown);
        ``warning`` True when a metadata scale gives an implausible reflectance or the
        scale is unknown for a reason the caller should print (``unknown_ok`` only).
        A metadata scale on float values already 0-1 is not applied (``source`` says so).

    Raises
    ------
    RadiometryError
        8-bit values, integers above reflectance x 10000, or floats far above 1, with no
        scale in the file's metadata nor given, unless ``unknown_ok``: the message names
        the file and the flags. Bad flags always.
    """
    from changedet.objects.checks import RadiometryError

    skipped = {s.upper() for s in skip} | set(CLASS_BANDS)
    bands = [b for b in scaling["bands"] if str(b["name"]).upper() not in skipped]
    dtype = np.dtype(scaling["dtype"])
    fix = (f"pass --reflectance-scale S [--reflectance-offset O] (reflectance = stored value x S + O, from the "
           f"product's metadata: e.g. 0.0001 for reflectance x 10000 such as Sentinel-2 L2A / Planet SR, 1 for a "
           f"float file already in reflectance whose fill or cloud the file's nodata / CLM band does not mark, with --reflectance-offset -0.1 for "
           f"Sentinel-2 processing baseline 04.00 and later), or count on the surface-reflectance product")
    if offset is not None and scale is None:
        raise RadiometryError(f"{path}: --reflectance-offset needs --reflectance-scale too; {fix}")
    if scale is not None:
        if not (np.isfinite(scale) and scale > 0):
            raise RadiometryError(f"{path}: --reflectance-scale must be a positive number, got {scale!r}")
        off = 0.0 if offset is None else float(offset)
        per = {b["name"]: (float(scale), off) for b in bands}
        return {"scale": float(scale), "offset": off, "source": "--reflectance-scale/--reflectance-offset",
                "bands": per}
    stated = {b["name"]: _band_factor(b) for b in bands}
    floating = np.issubdtype(dtype, np.floating)
    # Exporters copy the product's scale items into a float file already in reflectance:
    # a stated scale is applied to integers, and to floats only when they are not 0-1.
    float_refl = floating and not (np.isfinite(high_value) and high_value > MAX_FLOAT_REFLECTANCE)
    ignored = ""
    if float_refl and any(v is not None for v in stated.values()):
        ignored = (f" ({sorted({v[2] for v in stated.values() if v is not None})[0]} not applied: the float values "
                   f"are already 0-1, 99.9th percentile {high_value:g})")
        stated = {k: None for k in stated}
    # GDAL's SENTINEL2 driver states BOA_ADD_OFFSET per band and the quantification per
    # dataset, so a per-band export can keep only the offset: it is still the file's word.
    lone = {b["name"]: float(b["add_offset"]) for b in bands
            if stated[b["name"]] is None and b.get("add_offset") and not float_refl}
    if lone:
        x10000 = (np.issubdtype(dtype, np.integer) and dtype.itemsize >= 2
                  and (not np.isfinite(high_value) or high_value <= MAX_REFLECTANCE_X10000))
        if not x10000:
            what = (f"bands {sorted(lone)} state BOA_ADD_OFFSET without BOA_QUANTIFICATION_VALUE, and the "
                    f"{dtype.name} values (99.9th percentile {high_value:g}) are not reflectance x 10000")
            if not unknown_ok:
                raise RadiometryError(f"{path}: {what}; {fix}")
            return {"scale": None, "offset": None, "bands": {}, "warning": True,
                    "source": f"unknown: {what}; values used as stored; pass --reflectance-scale/--reflectance-offset"}
        for k, add in lone.items():
            stated[k] = (1e-4, add / 1e4, f"file metadata (BOA_ADD_OFFSET {add:g}; no BOA_QUANTIFICATION_VALUE, "
                                         f"10000 taken from the values' range)")
    if bands and all(v is not None for v in stated.values()):
        per = {k: (v[0], v[1]) for k, v in stated.items()}
        scales, offsets = {v[0] for v in per.values()}, {v[1] for v in per.values()}
        out = {"scale": scales.pop() if len(scales) == 1 else {k: v[0] for k, v in per.items()},
               "offset": offsets.pop() if len(offsets) == 1 else {k: v[1] for k, v in per.items()},
               "source": next(iter(stated.values()))[2], "bands": per}
        return _plausible(out, high_value, path=path, unknown_ok=unknown_ok, fix=fix)
    if any(v is not None for v in stated.values()):
        some = (f"only some of bands {[b['name'] for b in bands]} state a scale in the file's metadata "
                f"({[k for k, v in stated.items() if v is not None]})")
        if not unknown_ok:
            raise RadiometryError(f"{path}: {some}; {fix}")
        return {"scale": None, "offset": None, "bands": {}, "warning": True,
                "source": (f"unknown: {some}; values used as stored, so reflectance-dependent rules (darkness and "
                           "spread floors) may not fit; pass --reflectance-scale/--reflectance-offset")}

    def unknown(what: str) -> dict[str, Any]:
        if not unknown_ok:
            raise RadiometryError(f"{path}: {what}, and the file states no scale (GDAL scale/offset or "
                                  f"BOA_QUANTIFICATION_VALUE); the counters' colour rules (dull covers, tarp flags, "
                                  f"shadow and ground spreads) are in reflectance; {fix}")
        return {"scale": None, "offset": None, "bands": {},
                "source": (f"unknown: {what}; values used as stored, so reflectance-dependent rules (darkness and "
                           "spread floors) may not fit; pass --reflectance-scale/--reflectance-offset")}

    if floating:
        if not float_refl:
            return unknown(f"float values reach {high_value:g} (99.9th percentile of clear pixels, fill values "
                           "left out), not surface reflectance 0-1")
        return {"scale": 1.0, "offset": 0.0, "source": "float values taken as surface reflectance 0-1" + ignored,
                "bands": {b["name"]: (1.0, 0.0) for b in bands}}
    if np.issubdtype(dtype, np.integer) and dtype.itemsize >= 2 and \
            (not np.isfinite(high_value) or high_value <= MAX_REFLECTANCE_X10000):
        return {"scale": 1e-4, "offset": 0.0,
                "source": (f"assumed: {dtype.name} values without scale metadata (99.9th percentile "
                           f"{high_value:g}) taken as reflectance x 10000 (Sentinel-2 L2A / Planet SR); if they "
                           "are sensor DNs or carry the Sentinel-2 baseline 04.00 offset, pass "
                           "--reflectance-scale/--reflectance-offset"),
                "bands": {b["name"]: (1e-4, 0.0) for b in bands}}
    return unknown("8-bit values (0-255) are display brightness, not surface reflectance" if dtype.itemsize == 1
                   else f"{dtype.name} values reach {high_value:g} (99.9th percentile), above reflectance x 10000 "
                        "(99.9th percentile of clear pixels, fill values left out: sensor DNs, or an undeclared "
                        "fill or cloud the file's nodata / CLM band does not mark)")


def _plausible(radio: dict[str, Any], high_value: float, *, path: str, unknown_ok: bool, fix: str) -> dict[str, Any]:
    """``radio`` (a scale taken from the file's metadata) if it turns the 99.9th percentile
    ``high_value`` into a plausible reflectance (:data:`PLAUSIBLE_REFLECTANCE`); else raise,
    or with ``unknown_ok`` keep it with a warning in ``source`` (and ``warning`` True)."""
    from changedet.objects.checks import RadiometryError

    if not np.isfinite(high_value):
        return radio
    conv = [high_value * s + o for s, o in radio["bands"].values()]
    lo, hi = PLAUSIBLE_REFLECTANCE
    if all(lo <= c <= hi for c in conv):
        return radio
    what = (f"{radio['source']} turns the 99.9th percentile {high_value:g} into reflectance "
            f"{min(conv):.4g}-{max(conv):.4g}, outside the plausible {lo:g}-{hi:g}: the metadata does not fit "
            "these values")
    if not unknown_ok:
        raise RadiometryError(f"{path}: {what}; {fix}")
    return dict(radio, source=f"{radio['source']}; warning: {what}", warning=True)


def to_reflectance(image: xr.DataArray, radio: Mapping[str, Any], *, inplace: bool = False) -> xr.DataArray:
    """``image`` with each band of ``radio["bands"]`` (from :func:`radiometry`) as stored x
    scale + offset (float32); other bands (class bands) unchanged.

    With ``inplace`` and a float32 ``image`` (such as :func:`changedet.io.read_raster`
    returns, a private array), the bands are scaled in ``image`` itself: a copy would add
    the whole image to peak memory (+1.5x on large VHR mosaics)."""
    names = [str(b) for b in image["band"].values]
    if all(radio["bands"].get(n, (1.0, 0.0)) == (1.0, 0.0) for n in names):
        return image  # float reflectance as read: no copy of a large image
    out = image if inplace and image.dtype == np.float32 else image.astype("float32", copy=True)
    vals = out.values
    for j, n in enumerate(names):
        if n in radio["bands"]:
            s, o = radio["bands"][n]
            if (s, o) != (1.0, 0.0):
                vals[j] *= np.float32(s)
                vals[j] += np.float32(o)
    return out
