"""Cloud masks for optical acquisitions, whatever the provider gave.

In order of preference:

``CLM``
    a provider cloud mask (Sentinel Hub's, or one already computed): used as is.
``SCL``
    the Sentinel-2 L2A scene classification: cloud shadow (3), cloud medium (8) and
    high (9) probability and thin cirrus (10) are cloud; no data (0) and saturated or
    defective (1) are missing, and so is any value that is no class (not an integer
    0-11: a fill such as 255, a corrupt or foreign class map).
``s2cloudless``
    Sentinel Hub's LightGBM pixel classifier (the ``s2cloudless`` package, weights
    shipped in its wheel) when the ten bands it needs (B01 B02 B04 B05 B08 B8A B09 B10
    B11 B12, top-of-atmosphere reflectance) are present.
``brightness``
    for VHR and other visible/NIR imagery: the Fmask "basic" cloud test reduced to the
    bands such sensors have (Zhu & Woodcock 2012): bright (mean visible reflectance
    > 0.3), white (whiteness < 0.7), hazy (HOT = blue − 0.5 red − 0.08 > 0) and not
    vegetation (NDVI < 0.8). Bright white roofs and concrete can pass it too, so a VHR
    cloud fraction is an upper bound.

Every function takes and returns ``DataArray(band, y, x)`` / ``(y, x)`` on the same grid.
The mask convention is the cube's ``CLM`` band: 1 cloud or shadow, 0 clear, NaN no data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from changedet.bands import find_band
from changedet.errors import RasterError, SourceError
from changedet.sources.base import CLOUD_BAND, SCL_BAND


class NotSCLBandError(RasterError):
    """A band named ``SCL`` holds no Sentinel-2 scene classes (e.g. reflectance named SCL).

    A :class:`~changedet.errors.RasterError`, not a :class:`~changedet.errors.SourceError`:
    the data will not change on a retry, so flows do not retry it (``flows/tasks.py``
    retries only SourceError, StoreError and CubeLocked among changedet's errors).
    """

#: SCL classes that hide the ground: cloud shadow, cloud medium/high probability, thin cirrus.
SCL_CLOUD = (3, 8, 9, 10)
#: SCL classes without a usable observation: no data, saturated or defective.
SCL_NODATA = (0, 1)
S2CLOUDLESS_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
#: s2cloudless post-processing at 10 m, as its authors use it there: probability > 0.4
#: after a 4 px disk average, then a 2 px disk dilation.
S2CLOUDLESS_PARAMS = {"threshold": 0.4, "average_over": 4, "dilation_size": 2}
METHODS = ("auto", "clm", "scl", "s2cloudless", "brightness", "none")


def _names(da: xr.DataArray) -> list[str]:
    return [str(b) for b in da["band"].values]


def _find(da: xr.DataArray, role: str) -> str | None:
    return find_band(_names(da), role)


def available_method(da: xr.DataArray) -> str | None:
    """The best masking method the bands of ``da`` allow, or None."""
    names = set(_names(da))
    if CLOUD_BAND in names:
        return "clm"
    if SCL_BAND in names:
        return "scl"
    if set(S2CLOUDLESS_BANDS) <= names:
        return "s2cloudless"
    if all(_find(da, r) for r in ("blue", "green", "red")):
        return "brightness"
    return None


def scl_cloud(scl: xr.DataArray, *, source: str | None = None) -> xr.DataArray:
    """Cloud mask from a Sentinel-2 scene classification layer (1 cloud, 0 clear, NaN no data).

    Parameters
    ----------
    scl : xarray.DataArray
        SCL classes (integers 0-11, any dtype; NaN no data).
    source : str, optional
        What the band came from (a file or scene id), for error messages (default:
        ``scl.attrs["source"]``, else the ``scene_id`` that sources set).

    Returns
    -------
    xarray.DataArray
        float32 mask on the same grid: 1 cloud, 0 clear, NaN where the class is no
        data or saturated (0, 1), NaN, or no SCL class at all (not an integer 0-11:
        a fill such as 255 or 65535, or a corrupt or foreign class map). A value that
        is no class says nothing about the ground, so it is not observed, never clear.

    Raises
    ------
    NotSCLBandError
        If no pixel holds an observed class (1-11) while the band holds several
        different values that are no class: it is not an SCL band (e.g. reflectance
        named SCL). A band that is one fill value throughout is all no data instead.
    """
    v = np.asarray(scl.values, dtype="float32")  # exact for any integer class code up to 2**24
    with np.errstate(invalid="ignore"):
        is_class = (v == np.round(v)) & (v >= 0) & (v <= 11)
    foreign = ~is_class & ~np.isnan(v)
    if foreign.any() and not (is_class & (v >= 1)).any() and np.unique(v[foreign]).size > 1:
        where = _source_name(scl, source)
        sample = ", ".join(f"{x:g}" for x in np.unique(v[foreign])[:5])
        raise NotSCLBandError(f"band {SCL_BAND} of {where} is not a Sentinel-2 SCL band: no pixel holds an "
                              f"observed scene class 1-11 (values such as {sample}); give the L2A scene "
                              "classification layer as SCL, or a cloud mask as CLM, or choose another cloud mask "
                              "method")
    out = np.isin(v, SCL_CLOUD).astype("float32")
    out[np.isin(v, SCL_NODATA) | ~is_class] = np.nan
    return scl.copy(data=out)


def _source_name(da: xr.DataArray, source: str | None) -> str:
    """What ``da`` came from, for error messages: ``source``, else its attrs, else "the image"."""
    # Sources set "scene_id" (local, STAC, simulator); "source" is set by callers that know a file.
    return str(source or da.attrs.get("source") or da.attrs.get("scene_id") or "the image")


def s2cloudless_probability(da: xr.DataArray) -> xr.DataArray:
    """s2cloudless cloud probability (0..1) of one acquisition with the ten bands it needs."""
    missing = [b for b in S2CLOUDLESS_BANDS if b not in _names(da)]
    if missing:
        raise SourceError(f"s2cloudless needs bands {list(S2CLOUDLESS_BANDS)}; missing {missing}")
    from s2cloudless import S2PixelCloudDetector

    stack = np.stack([np.asarray(da.sel(band=b).values, dtype="float32") for b in S2CLOUDLESS_BANDS], axis=-1)
    nodata = np.isnan(stack).any(axis=-1)
    detector = S2PixelCloudDetector(all_bands=False, **S2CLOUDLESS_PARAMS)
    prob = detector.get_cloud_probability_maps(np.nan_to_num(stack, nan=0.0)[None])[0]
    prob[nodata] = np.nan
    return da.isel(band=0, drop=True).copy(data=prob.astype("float32"))


def probability_to_mask(prob: np.ndarray, *, threshold: float | None = None,
                        average_over: int | None = None, dilation_size: int | None = None) -> np.ndarray:
    """s2cloudless's own post-processing (disk average, threshold, disk dilation) of ``(y, x)`` probabilities.

    Defaults are :data:`S2CLOUDLESS_PARAMS`. Returns uint8 (1 cloud); NaN probabilities count as clear
    here and are masked as missing by the caller.
    """
    from s2cloudless import S2PixelCloudDetector

    params = dict(S2CLOUDLESS_PARAMS)
    params.update({k: v for k, v in (("threshold", threshold), ("average_over", average_over),
                                     ("dilation_size", dilation_size)) if v is not None})
    detector = S2PixelCloudDetector(all_bands=False, **params)
    p = np.nan_to_num(np.asarray(prob, dtype="float32"), nan=0.0)
    return detector.get_mask_from_prob(p[None])[0].astype("uint8")


def brightness_cloud(da: xr.DataArray, *, min_brightness: float = 0.3, max_whiteness: float = 0.7,
                     max_ndvi: float = 0.8) -> xr.DataArray:
    """Bright, white, hazy, non-vegetated pixels: the Fmask basic test on visible (and NIR) bands.

    ``da`` holds reflectance (0..1). Thresholds are Fmask's (Zhu & Woodcock 2012),
    except brightness, which stands in for its SWIR test absent from VHR sensors.
    """
    roles = {r: _find(da, r) for r in ("blue", "green", "red", "nir")}
    if not all(roles[r] for r in ("blue", "green", "red")):
        raise SourceError(f"brightness cloud test needs blue, green and red bands; got {_names(da)}")
    b, g, r = (np.asarray(da.sel(band=roles[k]).values, dtype="float32") for k in ("blue", "green", "red"))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (b + g + r) / 3.0
        white = (np.abs(b - mean) + np.abs(g - mean) + np.abs(r - mean)) / mean
        cloud = (mean > min_brightness) & (white < max_whiteness) & (b - 0.5 * r - 0.08 > 0)
        if roles["nir"]:
            n = np.asarray(da.sel(band=roles["nir"]).values, dtype="float32")
            cloud &= (n - r) / (n + r) < max_ndvi
    # Single bright pixels are glints and white cars, not clouds.
    from scipy import ndimage

    cloud = ndimage.binary_opening(cloud, structure=np.ones((3, 3), bool))
    out = cloud.astype("float32")
    out[np.isnan(mean)] = np.nan
    return da.isel(band=0, drop=True).copy(data=out)


def cloud_mask(da: xr.DataArray, *, method: str = "auto", source: str | None = None) -> tuple[xr.DataArray, str]:
    """Cloud mask ``(y, x)`` of one acquisition (1 cloud, 0 clear, NaN no data) and the method used.

    ``method="auto"`` takes the first of CLM, SCL, s2cloudless, brightness the bands allow.
    ``method="none"`` calls every observed pixel clear: for imagery that is cloud-free by
    make (aerial orthophotos such as NAIP, a provider's cloud-free mosaic) or has no
    visible bands to test, where the brightness test would take bright fields, roofs and
    display-stretched 8-bit values for cloud.
    ``source`` names the acquisition (file or scene id) in errors; default: ``da``'s
    ``attrs["source"]`` or ``attrs["scene_id"]``.
    """
    if method not in METHODS:
        raise SourceError(f"unknown cloud mask method {method!r}; use one of {list(METHODS)}")
    chosen = available_method(da) if method == "auto" else method
    if chosen is None:
        raise SourceError(f"no cloud mask possible for bands {_names(da)} of {_source_name(da, source)}: need CLM, "
                          "SCL, the s2cloudless bands or blue/green/red; name the bands in the source options "
                          "(e.g. bands: [B02, B03, B04, B08], or [R, G, B, NIR] for 4-band VHR), or set "
                          "cloud_mask: none for imagery that is cloud-free by make")
    if chosen == "none":
        valid = np.isfinite(np.asarray(da.values, dtype="float32")).all(axis=0)
        out = np.where(valid, 0.0, np.nan).astype("float32")
        mask = da.isel(band=0, drop=True).copy(data=out)
    elif chosen == "clm":
        m = da.sel(band=CLOUD_BAND, drop=True).astype("float32")
        mask = m.copy(data=np.where(np.isnan(m.values), np.nan, (m.values >= 0.5)).astype("float32"))
    elif chosen == "scl":
        mask = scl_cloud(da.sel(band=SCL_BAND, drop=True), source=_source_name(da, source))
    elif chosen == "s2cloudless":
        prob = s2cloudless_probability(da)
        out = probability_to_mask(prob.values).astype("float32")
        out[np.isnan(prob.values)] = np.nan
        mask = prob.copy(data=out)
    else:
        mask = brightness_cloud(da)
    return mask.rename(CLOUD_BAND), chosen


def with_cloud_band(da: xr.DataArray, *, method: str = "auto", drop: Sequence[str] = (SCL_BAND,),
                    source: str | None = None) -> tuple[xr.DataArray, str]:
    """``da`` with its cloud mask as the ``CLM`` band (last), provider classification bands dropped.

    Pixels without data in the mask are NaN in every band, so they never count as clear.
    ``source`` names the acquisition (file or scene id) in errors, as in :func:`cloud_mask`.
    """
    mask, used = cloud_mask(da, method=method, source=source)
    keep = [b for b in _names(da) if b not in set(drop) | {CLOUD_BAND}]
    bands = da.sel(band=keep).astype("float32")
    bands = bands.where(~np.isnan(mask.values)[None])
    clm = mask.expand_dims(band=[CLOUD_BAND]).transpose("band", "y", "x")
    out = xr.concat([bands, clm.assign_coords({c: bands.coords[c] for c in ("spatial_ref",) if c in bands.coords})],
                    dim="band")
    out.attrs = dict(da.attrs)
    return out, used


def cloud_fraction(mask: xr.DataArray | np.ndarray, *, within: np.ndarray | None = None) -> float | None:
    """Fraction (0..1) of observed pixels that are cloud, inside ``within`` (bool, same shape) if given.

    None when no pixel there has data.
    """
    m = np.asarray(getattr(mask, "values", mask), dtype="float32")
    sel = ~np.isnan(m)
    if within is not None:
        sel &= np.asarray(within, bool)
    if not sel.any():
        return None
    return float((m[sel] >= 0.5).mean())


__all__ = ["METHODS", "NotSCLBandError", "S2CLOUDLESS_BANDS", "S2CLOUDLESS_PARAMS", "SCL_CLOUD", "SCL_NODATA",
           "available_method", "brightness_cloud", "cloud_fraction", "cloud_mask", "probability_to_mask",
           "s2cloudless_probability", "scl_cloud", "with_cloud_band"]
