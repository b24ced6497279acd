"""Per-pixel robust baselines over a time stack, and anomaly scores against them.

The baseline of a pixel is the median of its history and its spread the MAD (median
absolute deviation) scaled by 1.4826 so that it estimates the standard deviation of
Gaussian noise. Both ignore NaN dates (clouds, nodata), so a partly cloudy history
still gives a baseline from the clear dates.

The reductions are written for numpy arrays with the time axis last and lifted with
``xarray.apply_ufunc(..., dask="parallelized")``: dask inputs stay lazy and are
processed chunk by chunk in space, with the whole time series of a chunk in memory.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from changedet.kernels.change import (
    KernelError,
    _as_dataarray,
    _check_same_grid,
    _finish,
    _float_dtype,
    _unwrap,
)

__all__ = ["MAD_SCALE", "robust_baseline", "zscore", "change_magnitude"]

#: MAD -> standard deviation for Gaussian noise (1 / Phi^-1(3/4)).
MAD_SCALE = 1.4826


def _sorted_median(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Median of the first ``n`` entries along the last axis of NaN-last sorted ``s``."""
    lo = np.maximum((n - 1) // 2, 0)[..., None]
    hi = (n // 2)[..., None]
    hi = np.minimum(hi, s.shape[-1] - 1)
    a = np.take_along_axis(s, lo, axis=-1)[..., 0]
    b = np.take_along_axis(s, hi, axis=-1)[..., 0]
    return np.where(n > 0, 0.5 * (a + b), np.nan).astype(s.dtype, copy=False)


def _median_mad_np(x: np.ndarray, *, dtype: np.dtype):
    """NaN-ignoring median, scaled MAD and valid count along the last axis.

    One sort per statistic instead of ``np.nanmedian``: numpy sorts NaN last, so the
    median of the valid values sits at fixed ranks of the sorted array, and this is
    vectorised over all pixels (``nanmedian`` falls back to a per-pixel loop on small
    time axes).
    """
    x = x.astype(dtype, copy=False)
    n = np.count_nonzero(~np.isnan(x), axis=-1)
    med = _sorted_median(np.sort(x, axis=-1), n)
    dev = np.abs(x - med[..., None])
    mad = (_sorted_median(np.sort(dev, axis=-1), n) * dtype.type(MAD_SCALE)).astype(dtype, copy=False)
    return med, mad, n.astype(np.int32)


def robust_baseline(stack: xr.DataArray, *, dim: str = "time") -> xr.Dataset:
    """Per-pixel median and scaled MAD over ``dim``, ignoring NaN dates.

    Parameters
    ----------
    stack : xarray.DataArray
        Image history, e.g. (time, band, y, x) reflectance, with clouds and nodata as
        NaN. A bare array is taken as (time, band, y, x) (trailing names for fewer axes).
    dim : str, optional
        The dimension to reduce (default ``"time"``). If ``stack`` is dask-backed and
        ``dim`` spans several chunks it is rechunked to one chunk (lazily): each spatial
        chunk's full history must fit in memory, so chunk in space, not in time.

    Returns
    -------
    xarray.Dataset
        With ``dim`` removed and the remaining coords (and ``spatial_ref``) of ``stack``:

        - ``median``: per-pixel median of the valid dates, input units;
        - ``mad``: ``1.4826 * median(|x - median|)`` of the valid dates, input units
          (an estimate of the noise standard deviation; 0 with a single valid date);
        - ``count``: number of valid (non-NaN) dates, int32.

        ``median`` and ``mad`` are NaN where no date is valid. Lazy for dask input.
    """
    st, _ = _as_dataarray(stack, "stack", ("time", "band", "y", "x"))
    if dim not in st.dims:
        raise KernelError(f"stack has dims {st.dims} but no {dim!r}; pass dim= the name of the time dimension")
    if st.sizes[dim] == 0:
        raise KernelError(f"stack has no entries along {dim!r}; a baseline needs at least one date")
    if st.chunks is not None:
        # The median needs every date of a pixel in one block.
        st = st.chunk({dim: -1})
    dtype = _float_dtype(st.dtype)
    med, mad, count = xr.apply_ufunc(
        _median_mad_np,
        st,
        input_core_dims=[[dim]],
        output_core_dims=[[], [], []],
        kwargs={"dtype": dtype},
        dask="parallelized",
        output_dtypes=[dtype, dtype, np.int32],
    )
    return xr.Dataset(
        {
            "median": _finish(med, st, "median"),
            "mad": _finish(mad, st, "mad"),
            "count": _finish(count, st, "count"),
        }
    )


def _zscore_np(image, median, mad, *, mad_floor, dtype):
    # The floor keeps a pixel with a perfectly stable history (MAD 0, e.g. saturated
    # or a single valid date) from turning sensor noise into an infinite z-score.
    scale = np.maximum(mad.astype(dtype, copy=False), dtype.type(mad_floor))
    return ((image.astype(dtype, copy=False) - median) / scale).astype(dtype, copy=False)


def _check_floor(mad_floor) -> float:
    floor = float(mad_floor)
    if not np.isfinite(floor) or floor <= 0:
        raise KernelError(
            f"mad_floor={mad_floor!r} must be a positive number in image units, e.g. the "
            "sensor noise level (about 0.005-0.01 for 0-1 reflectance)"
        )
    return floor


def zscore(image: xr.DataArray, baseline: xr.Dataset, *, mad_floor: float) -> xr.DataArray:
    """Robust z-score ``(image - median) / max(mad, mad_floor)``.

    Parameters
    ----------
    image : xarray.DataArray
        New image on the baseline's grid, e.g. (band, y, x); extra dims such as time
        broadcast. Bands are matched to the baseline by name.
    baseline : xarray.Dataset
        Output of :func:`robust_baseline` (variables ``median`` and ``mad``).
    mad_floor : float
        Lower bound on the spread, in image units (no default because it depends on the
        units: about 0.005-0.01 for 0-1 reflectance, tens for 0-10000 DN). It stops
        pixels with a near-constant history from giving huge scores.

    Returns
    -------
    xarray.DataArray
        Unitless robust z-score (in noise standard deviations), same dims/coords as
        ``image``. NaN where the image or the baseline is NaN. Lazy for dask input.
    """
    floor = _check_floor(mad_floor)
    if not isinstance(baseline, xr.Dataset) or not {"median", "mad"} <= set(baseline.data_vars):
        raise KernelError("baseline must be the Dataset returned by robust_baseline (with 'median' and 'mad')")
    med, mad = baseline["median"], baseline["mad"]
    img, bare = _as_dataarray(image, "image", med.dims)
    med = _check_same_grid(img, med, "image", "baseline")
    mad = _check_same_grid(img, mad, "image", "baseline")
    dtype = _float_dtype(img.dtype, med.dtype)
    out = xr.apply_ufunc(
        _zscore_np,
        img,
        med,
        mad,
        kwargs={"mad_floor": floor, "dtype": dtype},
        dask="parallelized",
        output_dtypes=[dtype],
    )
    # Broadcasting may put baseline-only dims first; keep the image's order.
    out = out.transpose(*img.dims, ...)
    return _unwrap(_finish(out, img, "zscore"), bare)


def change_magnitude(
    image: xr.DataArray, baseline: xr.Dataset, *, dim: str = "band", mad_floor: float
) -> xr.DataArray:
    """Per-pixel root-mean-square of the band z-scores: one change magnitude map.

    Parameters
    ----------
    image : xarray.DataArray
        New image, e.g. (band, y, x), on the baseline's grid.
    baseline : xarray.Dataset
        Output of :func:`robust_baseline`.
    dim : str, optional
        Band dimension averaged over (default ``"band"``). If the image has no such
        dimension the result is ``|z|``.
    mad_floor : float
        See :func:`zscore` (image units).

    Returns
    -------
    xarray.DataArray
        ``sqrt(mean_b z_b**2)``, unitless (noise standard deviations; about 1 for an
        unchanged pixel, 10 for a +10 MAD change in every band), with ``dim`` removed.
        NaN where any band is NaN. Lazy for dask input.
    """
    if not isinstance(baseline, xr.Dataset) or "median" not in baseline:
        raise KernelError("baseline must be the Dataset returned by robust_baseline (with 'median' and 'mad')")
    img, bare = _as_dataarray(image, "image", baseline["median"].dims)
    z = zscore(img, baseline, mad_floor=mad_floor)
    if dim in z.dims:
        # skipna=False: a pixel missing a band is unknown, not a smaller change.
        out = np.sqrt((z**2).mean(dim, skipna=False))
    else:
        out = np.abs(z)
    return _unwrap(_finish(out, img, "change_magnitude"), bare)
