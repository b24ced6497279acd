"""Pairwise change kernels: differences, ratios and spectral indices.

Every kernel is a pure function on :class:`xarray.DataArray` inputs (numpy- or
dask-backed). The per-pixel arithmetic is written for numpy arrays and lifted with
``xarray.apply_ufunc(..., dask="parallelized")``, so a dask input gives a lazy dask
output and nothing is computed here. Outputs keep the x/y pixel-centre coordinates and
the ``spatial_ref`` coordinate (CRS) of the *before* / *image* input.

Missing data is NaN: every kernel returns NaN where any input it reads is NaN (a cloud
in either date must not look like change).

Plain numpy or dask arrays are accepted too; they are given the dimension names
``("band", "y", "x")`` (trailing ones for fewer axes), and the result is returned as
the same kind of bare array.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from changedet.bands import ROLE_NAMES, find_band
from changedet.errors import ChangedetError, GridError

__all__ = [
    "KernelError",
    "band_diff",
    "normalized_diff",
    "spectral_index",
    "cva",
    "cva_direction",
    "index_change",
    "log_ratio",
    "box_mean",
    "SPECTRAL_INDICES",
]


class KernelError(ChangedetError, ValueError):
    """A change kernel was given unusable input (missing band, bad option, wrong dims).

    Subclasses :class:`ValueError` too, so code that guards numeric input with
    ``except ValueError`` keeps working.
    """


# ---------------------------------------------------------------------------------------
# Shared helpers (also used by baseline.py and threshold.py; private on purpose)
# ---------------------------------------------------------------------------------------
_DEFAULT_DIMS = ("time", "band", "y", "x")


def _as_dataarray(obj, name: str, dims: Sequence[str] = _DEFAULT_DIMS[1:]) -> tuple[xr.DataArray, bool]:
    """Return ``(DataArray, was_bare)``; bare arrays get the trailing names of ``dims``."""
    if isinstance(obj, xr.DataArray):
        return obj, False
    if isinstance(obj, xr.Dataset):
        raise KernelError(f"{name} is a Dataset; pass one variable, e.g. ds['{name}']")
    arr = obj if hasattr(obj, "ndim") and hasattr(obj, "dtype") else np.asarray(obj)
    if arr.ndim > len(dims):
        raise KernelError(
            f"{name} is a bare {arr.ndim}-D array; wrap it in an xarray.DataArray with "
            f"named dims (at most {len(dims)}-D bare arrays are understood as {tuple(dims)})"
        )
    return xr.DataArray(arr, dims=tuple(dims)[len(dims) - arr.ndim :]), True


def _float_dtype(*dtypes) -> np.dtype:
    """Smallest float dtype that holds the inputs (float32 stays float32, ints go up)."""
    return np.result_type(*dtypes, np.float32)


def _check_same_grid(ref: xr.DataArray, other: xr.DataArray, ref_name: str, other_name: str) -> xr.DataArray:
    """Check ``other`` is on the grid of ``ref`` and return it with ``ref``'s x/y/band labels.

    xarray arithmetic silently inner-joins mismatched coordinates, which would quietly
    crop one image to the other; a shifted grid is a false change everywhere, so it is
    refused here instead. Coordinates equal within 1e-6 pixel are snapped to ``ref``'s
    so that floating-point noise from a round trip through a file does not matter.
    """
    for dim in ("y", "x"):
        if dim in ref.dims and dim in other.dims:
            a = np.asarray(ref[dim].values, dtype="float64") if dim in ref.coords else None
            b = np.asarray(other[dim].values, dtype="float64") if dim in other.coords else None
            if ref.sizes[dim] != other.sizes[dim]:
                raise GridError(
                    f"{other_name} has {other.sizes[dim]} pixels along {dim} but {ref_name} has "
                    f"{ref.sizes[dim]}; resample {other_name} onto the grid of {ref_name} "
                    "(GridSpec.of) before comparing them"
                )
            if a is not None and b is not None:
                step = abs(a[1] - a[0]) if a.size > 1 else 1.0
                if not np.allclose(a, b, rtol=0.0, atol=1e-6 * step):
                    raise GridError(
                        f"{other_name} and {ref_name} have different {dim} coordinates (grids are "
                        f"offset by up to {np.max(np.abs(a - b)):.6g} CRS units); resample or "
                        "co-register one onto the other's grid first"
                    )
                # Pass plain values: ref[dim] as a DataArray would drag ref's scalar
                # coords (spatial_ref) along and overwrite other's CRS before the check.
                other = other.assign_coords({dim: (dim, ref[dim].values, ref[dim].attrs)})
    if "band" in ref.dims and "band" in other.dims and "band" in ref.coords and "band" in other.coords:
        ra, rb = list(ref["band"].values), list(other["band"].values)
        if ra != rb:
            if sorted(map(str, ra)) != sorted(map(str, rb)):
                raise KernelError(
                    f"{ref_name} has bands {ra} but {other_name} has bands {rb}; "
                    "select the common bands of both first"
                )
            # Same bands in another order: reorder rather than refuse (lazy .sel).
            other = other.sel(band=ref["band"].values)
    if "spatial_ref" in ref.coords and "spatial_ref" in other.coords:
        wa = ref["spatial_ref"].attrs.get("crs_wkt")
        wb = other["spatial_ref"].attrs.get("crs_wkt")
        if wa and wb and wa != wb:
            import pyproj

            if pyproj.CRS.from_wkt(wa) != pyproj.CRS.from_wkt(wb):
                raise GridError(
                    f"{other_name} and {ref_name} have different CRSs; reproject {other_name} "
                    f"onto the grid of {ref_name} first"
                )
    return other


def _finish(out: xr.DataArray, ref: xr.DataArray, name: str | None) -> xr.DataArray:
    """Carry ``ref``'s ``spatial_ref`` (with its CRS attrs) onto ``out`` and name it.

    xarray drops a scalar coordinate when two inputs disagree on it (and may drop coord
    attrs); the CRS is written back from the reference input so it never goes missing.
    """
    if "spatial_ref" in ref.coords:
        out = out.assign_coords(spatial_ref=ref["spatial_ref"])
    out.attrs = {}
    return out.rename(name) if name else out


def _unwrap(out: xr.DataArray, bare: bool):
    return out.data if bare else out


# ---------------------------------------------------------------------------------------
# numpy kernels (pure, blockwise)
# ---------------------------------------------------------------------------------------
def _diff_np(before, after, *, dtype):
    return np.subtract(after, before, dtype=dtype)


def _nd_np(a, b, *, eps, dtype):
    """(a - b) / (a + b); NaN where |a + b| <= eps (the ratio is meaningless there)."""
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / den
    # abs(NaN) <= eps is False, so NaN inputs stay NaN through the division above.
    return np.where(np.abs(den) <= eps, dtype.type(np.nan), out).astype(dtype, copy=False)


def _log_ratio_np(before, after, *, eps, dtype):
    # Clamping to eps (rather than returning -inf / NaN) keeps zero-power speckle
    # pixels finite; np.maximum propagates NaN, so nodata stays NaN.
    b = np.maximum(before.astype(dtype, copy=False), dtype.type(eps))
    a = np.maximum(after.astype(dtype, copy=False), dtype.type(eps))
    return (10.0 * np.log10(a / b)).astype(dtype, copy=False)


def _pairwise(func, before, after, *, name, **kwargs):
    b, bare_b = _as_dataarray(before, "before")
    a, bare_a = _as_dataarray(after, "after")
    a = _check_same_grid(b, a, "before", "after")
    dtype = _float_dtype(b.dtype, a.dtype)
    out = xr.apply_ufunc(
        func,
        b,
        a,
        kwargs={"dtype": dtype, **kwargs},
        dask="parallelized",
        output_dtypes=[dtype],
    )
    return _unwrap(_finish(out, b, name), bare_b and bare_a)


# ---------------------------------------------------------------------------------------
# Public kernels
# ---------------------------------------------------------------------------------------
def band_diff(before: xr.DataArray, after: xr.DataArray) -> xr.DataArray:
    """Per-band difference ``after - before``.

    Parameters
    ----------
    before, after : xarray.DataArray
        Images on the same grid, e.g. (band, y, x) surface reflectance (unitless, 0-1)
        or DN. Bands are matched by name (reordered if needed).

    Returns
    -------
    xarray.DataArray
        ``after - before`` in the input units, float (float32 for float32 input), same
        dims and coords as ``before``; NaN where either input is NaN. Lazy for dask input.

    Raises
    ------
    GridError
        If the images are on different grids or CRSs.
    KernelError
        If their band sets differ.
    """
    return _pairwise(_diff_np, before, after, name="band_diff")


def normalized_diff(before: xr.DataArray, after: xr.DataArray, *, eps: float = 1e-6) -> xr.DataArray:
    """Per-band normalised difference ``(after - before) / (after + before)``.

    Parameters
    ----------
    before, after : xarray.DataArray
        Non-negative images on the same grid (reflectance or power). Bands matched by name.
    eps : float, optional
        Where ``|after + before| <= eps`` (input units) the result is NaN, because the
        ratio of two near-zero values is noise, not change.

    Returns
    -------
    xarray.DataArray
        Unitless, in [-1, 1] for non-negative inputs; positive means the value rose.
        NaN where either input is NaN. Lazy for dask input.
    """
    # a = after, b = before: the sign follows band_diff (positive = increase).
    return _pairwise(lambda b, a, **kw: _nd_np(a, b, **kw), before, after, name="normalized_diff", eps=float(eps))


def log_ratio(before: xr.DataArray, after: xr.DataArray, *, eps: float = 1e-6) -> xr.DataArray:
    """Log-ratio change ``10 * log10(after / before)`` for SAR backscatter in linear power.

    Parameters
    ----------
    before, after : xarray.DataArray
        SAR backscatter (sigma0 / gamma0) in *linear power* units, on the same grid.
        Do not pass dB values: convert them with ``10 ** (db / 10)`` first.
    eps : float, optional
        Floor (linear power) applied to both inputs before the ratio, so zero or slightly
        negative (noise-subtracted) pixels give a finite value instead of +-inf.

    Returns
    -------
    xarray.DataArray
        Change in decibels (dB); +3 dB is a doubling of backscatter. NaN where either
        input is NaN. Lazy for dask input.
    """
    return _pairwise(_log_ratio_np, before, after, name="log_ratio", eps=float(eps))


def cva(before: xr.DataArray, after: xr.DataArray, *, dim: str = "band") -> xr.DataArray:
    """Change-vector analysis magnitude: Euclidean norm of ``after - before`` over ``dim``.

    Parameters
    ----------
    before, after : xarray.DataArray
        Multi-band images on the same grid (e.g. (band, y, x) reflectance).
    dim : str, optional
        Dimension that holds the spectral vector (default ``"band"``). A bare numpy
        array is taken as (band, y, x).

    Returns
    -------
    xarray.DataArray
        ``sqrt(sum_b (after_b - before_b)**2)`` in input units, with ``dim`` removed.
        NaN where any band of either input is NaN (a partly missing vector would
        understate the change). Lazy for dask input.
    """
    b, bare_b = _as_dataarray(before, "before")
    a, bare_a = _as_dataarray(after, "after")
    if dim not in b.dims or dim not in a.dims:
        raise KernelError(
            f"cva needs the spectral dimension {dim!r} in both inputs (before has {b.dims}, "
            f"after has {a.dims}); pass dim= the name of the band dimension"
        )
    diff = _pairwise(_diff_np, b, a, name=None)
    # Reductions over a named dim are lazy in xarray; skipna=False keeps the NaN rule.
    out = np.sqrt((diff**2).sum(dim, skipna=False))
    return _unwrap(_finish(out, b, "cva"), bare_b and bare_a)


def _cva_direction_np(before, after, *, dtype):
    """Angle (degrees) between the change vector (band axis first) and the all-ones diagonal."""
    d = np.subtract(after, before, dtype=dtype)
    n = d.shape[0]
    norm = np.sqrt(np.sum(d * d, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.sum(d, axis=0) / (np.sqrt(dtype.type(n)) * norm)
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).astype(dtype, copy=False)
    # A zero change vector has no direction; NaN inputs are already NaN through the sums.
    return np.where(norm == 0, dtype.type(np.nan), ang)


def cva_direction(before: xr.DataArray, after: xr.DataArray, *, dim: str = "band") -> xr.DataArray:
    """Change-vector analysis direction: angle of ``after - before`` to the diagonal.

    The direction of the change vector tells kinds of change apart when the magnitude
    cannot: a uniform brightening of all bands (e.g. a new bright roof, haze) points
    along the diagonal ``(1, ..., 1)``, a darkening against it, and a change of spectral
    shape (vegetation loss: NIR down, red up) across it. For any number of bands this
    is the spherical angle of C2VA (Bovolo et al. 2012): ``arccos(sum_b d_b /
    (sqrt(B) * |d|))``.

    Parameters
    ----------
    before, after : xarray.DataArray
        Multi-band images on the same grid, e.g. (band, y, x).
    dim : str, optional
        Spectral dimension (default ``"band"``).

    Returns
    -------
    xarray.DataArray
        Degrees in [0, 180]: 0 = all bands rose equally, 180 = all fell equally, 90 =
        no net brightness change. ``dim`` removed. NaN where any band of either input is
        NaN, or where the change vector is exactly zero (no direction). Lazy for dask.
    """
    b, bare_b = _as_dataarray(before, "before")
    a, bare_a = _as_dataarray(after, "after")
    if dim not in b.dims or dim not in a.dims:
        raise KernelError(
            f"cva_direction needs the spectral dimension {dim!r} in both inputs (before has "
            f"{b.dims}, after has {a.dims}); pass dim= the name of the band dimension"
        )
    a = _check_same_grid(b, a, "before", "after")
    dtype = _float_dtype(b.dtype, a.dtype)
    if b.chunks is not None or a.chunks is not None:
        # The whole spectral vector of a pixel must be in one block.
        b, a = b.chunk({dim: -1}), a.chunk({dim: -1})
    out = xr.apply_ufunc(
        lambda x, y, **kw: _cva_direction_np(np.moveaxis(x, -1, 0), np.moveaxis(y, -1, 0), **kw),
        b,
        a,
        input_core_dims=[[dim], [dim]],
        kwargs={"dtype": dtype},
        dask="parallelized",
        output_dtypes=[dtype],
    )
    return _unwrap(_finish(out, b, "cva_direction"), bare_b and bare_a)


# ---------------------------------------------------------------------------------------
# Spectral indices
# ---------------------------------------------------------------------------------------
#: index -> (positive role, negative role): index = (pos - neg) / (pos + neg)
SPECTRAL_INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),  # vegetation (Rouse et al. 1974)
    "ndwi": ("green", "nir"),  # open water (McFeeters 1996)
    "ndbi": ("swir1", "nir"),  # built-up (Zha et al. 2003)
}

def _resolve_band(image: xr.DataArray, role: str, band_map: Mapping[str, str] | None):
    names = [str(v) for v in image["band"].values]
    if band_map and role in band_map:
        wanted = band_map[role]
        if wanted not in names:
            raise KernelError(f"band_map maps {role!r} to {wanted!r}, but the image has bands {names}")
        return wanted
    found = find_band(names, role)
    if found is not None:
        return found
    raise KernelError(
        f"no {role} band among the image bands {names} (looked for {list(ROLE_NAMES[role])}); "
        f"pass band_map={{'{role}': '<band name>'}}"
    )


def spectral_index(
    image: xr.DataArray, index: str, *, band_map: Mapping[str, str] | None = None
) -> xr.DataArray:
    """Normalised-difference spectral index from named bands.

    Parameters
    ----------
    image : xarray.DataArray
        Reflectance image with a ``band`` dimension and band-name coordinate, e.g.
        (band, y, x) or (time, band, y, x).
    index : {"ndvi", "ndwi", "ndbi"}
        ``ndvi = (NIR - Red) / (NIR + Red)``; ``ndwi = (Green - NIR) / (Green + NIR)``
        (McFeeters); ``ndbi = (SWIR1 - NIR) / (SWIR1 + NIR)``.
    band_map : mapping, optional
        Role -> band name overrides, roles ``"red"``, ``"green"``, ``"nir"``, ``"swir1"``.
        Without it, bands are found by :data:`changedet.bands.ROLE_NAMES`: VHR names
        (``R``, ``G``, ``B``, ``NIR``, ``SWIR``), STAC common names and Sentinel-2 names
        (``B02``, ``B03``, ``B04``, ``B08``, ``B11``), case-insensitively.
        VHR sensors usually have no SWIR band, so ``ndbi`` needs Sentinel-2 ``B11``.

    Returns
    -------
    xarray.DataArray
        Unitless index in [-1, 1], with the ``band`` dimension removed and named after
        the index. NaN where either band is NaN or their sum is ~0 (``|sum| <= 1e-6``).
        Lazy for dask input.
    """
    key = str(index).lower()
    if key not in SPECTRAL_INDICES:
        raise KernelError(f"unknown spectral index {index!r}; choose one of {sorted(SPECTRAL_INDICES)}")
    if not isinstance(image, xr.DataArray) or "band" not in image.dims or "band" not in image.coords:
        raise KernelError(
            "spectral_index needs a DataArray with a 'band' dimension and band names as its "
            "coordinate (build it with GridSpec.attach(data, bands=[...]))"
        )
    pos_role, neg_role = SPECTRAL_INDICES[key]
    pos = image.sel(band=_resolve_band(image, pos_role, band_map), drop=True)
    neg = image.sel(band=_resolve_band(image, neg_role, band_map), drop=True)
    dtype = _float_dtype(image.dtype)
    out = xr.apply_ufunc(
        _nd_np, pos, neg, kwargs={"eps": 1e-6, "dtype": dtype}, dask="parallelized", output_dtypes=[dtype]
    )
    return _finish(out, image, key)


def index_change(
    before: xr.DataArray, after: xr.DataArray, index: str, *, band_map: Mapping[str, str] | None = None
) -> xr.DataArray:
    """Change of a spectral index: ``index(after) - index(before)``.

    Parameters
    ----------
    before, after : xarray.DataArray
        Reflectance images with named bands on the same grid, e.g. (band, y, x).
    index : {"ndvi", "ndwi", "ndbi"}
        See :func:`spectral_index`.
    band_map : mapping, optional
        Role -> band name overrides, see :func:`spectral_index`.

    Returns
    -------
    xarray.DataArray
        Unitless, in [-2, 2]: negative NDVI change is vegetation loss, positive NDWI
        change new water, positive NDBI change new built-up surface. ``band`` removed.
        NaN where a band of either date is NaN. Lazy for dask input.
    """
    if not isinstance(before, xr.DataArray) or not isinstance(after, xr.DataArray):
        raise KernelError("index_change needs DataArrays with band names (build them with GridSpec.attach)")
    ib = spectral_index(before, index, band_map=band_map)
    ia = spectral_index(after, index, band_map=band_map)
    ia = _check_same_grid(ib, ia, "before", "after")
    dtype = _float_dtype(ib.dtype, ia.dtype)
    out = xr.apply_ufunc(_diff_np, ib, ia, kwargs={"dtype": dtype}, dask="parallelized", output_dtypes=[dtype])
    return _finish(out, ib, f"{str(index).lower()}_change")


# ---------------------------------------------------------------------------------------
# Spatial context
# ---------------------------------------------------------------------------------------
def _box_mean_np(x, *, size, out_dtype):
    """NaN-aware mean over a ``size`` x ``size`` window of the last two axes.

    Normalised convolution: sum of the valid neighbours / their count, so nodata and the
    image edge neither spread nor bias the mean; NaN stays NaN. The window sum is an
    explicit sum of shifted copies in a fixed order, so a pixel's value does not depend
    on where it sits in the array (numpy and dask blocks agree bit for bit).
    """
    r = size // 2
    x = np.asarray(x, dtype="float64")
    valid = np.isfinite(x)
    pad = [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)]
    xv = np.pad(np.where(valid, x, 0.0), pad)
    vv = np.pad(valid.astype("float64"), pad)
    ny, nx = x.shape[-2:]
    num = np.zeros(x.shape)
    den = np.zeros(x.shape)
    for dy in range(size):
        for dx in range(size):
            num += xv[..., dy : dy + ny, dx : dx + nx]
            den += vv[..., dy : dy + ny, dx : dx + nx]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~valid] = np.nan
    return out.astype(out_dtype, copy=False)


def box_mean(image: xr.DataArray, *, size: int = 3) -> xr.DataArray:
    """Local mean of every band over a ``size`` x ``size`` pixel window (spatial context).

    Averaging both dates before scoring change suppresses pixel noise and the
    sub-pixel misregistration / resampling edges that dominate false alarms at 10 m,
    while an object of a few pixels (a new building block) keeps its contrast.

    Parameters
    ----------
    image : xarray.DataArray
        (..., y, x) image, numpy or dask (dask: ``map_overlap`` with a ``size // 2``
        pixel halo; the result is lazy and identical to the numpy one).
    size : int, optional
        Odd window side in pixels (default 3; 1 returns the image as float).

    Returns
    -------
    xarray.DataArray
        Same dims, coordinates and CRS; float32 for float32 / integer input of up to
        16 bits, float64 for float64. NaN where the input is NaN; a window's NaN
        neighbours and pixels beyond the image edge are left out of its mean.

    Raises
    ------
    KernelError
        If ``size`` is not a positive odd integer or the image has no y/x dims.
    """
    img, bare = _as_dataarray(image, "image")
    if int(size) != size or size < 1 or size % 2 == 0:
        raise KernelError(f"size={size!r} must be a positive odd number of pixels (e.g. 3)")
    size = int(size)
    if img.dims[-2:] != ("y", "x"):
        raise KernelError(f"image has dims {img.dims}; box_mean needs (..., y, x) as the last two")
    dtype = _float_dtype(img.dtype)
    if img.chunks is None:
        data = _box_mean_np(img.data, size=size, out_dtype=dtype)
    else:
        r = size // 2
        depth = {i: 0 for i in range(img.ndim - 2)} | {img.ndim - 2: r, img.ndim - 1: r}
        # A NaN halo beyond the image edge is "no neighbour", exactly like the numpy path.
        data = img.data.map_overlap(
            _box_mean_np, depth=depth, boundary=np.nan, size=size, out_dtype=dtype, dtype=dtype,
            meta=np.array((), dtype=dtype),
        )
    out = img.copy(data=data)
    return _unwrap(_finish(out, img, img.name), bare)

