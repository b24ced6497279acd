"""NaN statistics that do not warn on all-NaN slices.

Empty slices (pixels under cloud or off the image, strips with no valid sample, coarse
blocks of nodata) are NaN by design in changedet's counters and resamplers. numpy's
nan-reductions warn on them, and silencing that with ``warnings.catch_warnings`` is not
thread-safe: it swaps the process-wide filter list, and these functions run in Dask
worker threads. These compute numpy's ``nanmean``, ``nanstd`` and ``nanmin`` with the
same operations in the same order (bit-identical results, checked against numpy in
``tests/test_robust_threads.py``) and simply do not warn.
"""

from __future__ import annotations

import numpy as np


def _nan_to(a, val):
    """numpy's ``_replace_nan``: a copy of float ``a`` with NaN set to ``val``, and the NaN mask."""
    a = np.asanyarray(a)
    if not issubclass(a.dtype.type, np.inexact):
        return a, None
    mask = np.isnan(a)
    a = np.array(a, subok=True, copy=True)
    np.copyto(a, val, where=mask)
    return a, mask


def _divide(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        if isinstance(a, np.ndarray):
            return np.divide(a, b, out=a, casting="unsafe")
        return a.dtype.type(a / b)


def quiet_nanmean(a, axis=None):
    """``np.nanmean(a, axis=axis)``, bit for bit, NaN for an all-NaN slice without a warning."""
    arr, mask = _nan_to(a, 0)
    if mask is None:
        return np.mean(arr, axis=axis)
    cnt = np.sum(~mask, axis=axis, dtype=np.intp)
    return _divide(np.sum(arr, axis=axis), cnt)


def quiet_nanstd(a, axis=None):
    """``np.nanstd(a, axis=axis)`` (ddof 0), bit for bit, NaN for an all-NaN slice without a warning."""
    arr, mask = _nan_to(a, 0)
    if mask is None:
        return np.std(arr, axis=axis)
    cnt = np.sum(~mask, axis=axis, dtype=np.intp, keepdims=True)
    avg = _divide(np.sum(arr, axis=axis, keepdims=True), cnt)
    np.subtract(arr, avg, out=arr, casting="unsafe")
    np.copyto(arr, 0, where=mask)
    sqr = np.multiply(arr, arr, out=arr)
    var = np.sum(sqr, axis=axis)
    if np.ndim(var) < cnt.ndim:
        cnt = cnt.squeeze(axis)
    var = _divide(var, cnt)
    bad = cnt <= 0
    if np.any(bad):
        if isinstance(var, np.ndarray):
            np.copyto(var, np.nan, where=bad)
        else:
            var = var.dtype.type(np.nan)
    if isinstance(var, np.ndarray):
        return np.sqrt(var, out=var)
    return var.dtype.type(np.sqrt(var))


def quiet_nanmin(a, axis=None):
    """``np.nanmin(a, axis=axis)`` of an ndarray, bit for bit, NaN for an all-NaN slice without a warning."""
    return np.fmin.reduce(np.asarray(a), axis=axis)
