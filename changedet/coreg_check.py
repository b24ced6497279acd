"""Independent check of co-registration: residual shifts between dates of a stack.

A registration cannot be validated with the estimator that produced it (it would agree
with itself), so this module measures what is left with a different implementation,
different bands and a different reliability test:

* estimator: an iterated least-squares (Lucas-Kanade, symmetric Jacobian) translation
  per window on Gaussian high-passed intensities - a differential method, not the
  correlation peak of the clipped gradient vectors :mod:`changedet.coreg` uses;
* bands: two bands other than the one used for the registration (NAIP: red and green,
  the registration uses NIR);
* windows: a grid of square windows, so non-rigid misregistration shows up as spread;
* reliability: a window counts only when the two bands, measured separately, agree
  within ``agree_px`` (seasonal change, water-level change and parallax make single
  windows disagree with themselves across bands); its shift is then the mean of the
  two.

The residual of a pair is the median shift vector over its reliable windows (the
common translation still left), with a bootstrap-free standard error
``1.2533 * MAD / sqrt(n)`` per component; the non-rigid part is the spread over
windows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from changedet.errors import CoregError

__all__ = ["PairResidual", "pairwise_residuals", "window_shifts"]


@dataclass(frozen=True)
class PairResidual:
    """Residual misregistration between two dates, measured independently.

    Attributes
    ----------
    i, j : int
        Date indices in the stack.
    shift_row_px, shift_col_px : float
        Median over reliable windows of the shift (pixels) that moves date ``j`` onto
        date ``i``; NaN when no window was reliable.
    magnitude_px : float
        Length of that vector (pixels).
    stderr_px : float
        Standard error of the magnitude (pixels), from the spread over windows.
    windows : int
        Reliable windows.
    windows_total : int
        Windows with enough valid pixels in both dates.
    window_p90_px : float
        90th percentile over reliable windows of ``|window shift|`` (pixels): the
        non-rigid part plus measurement noise.
    """

    i: int
    j: int
    shift_row_px: float
    shift_col_px: float
    magnitude_px: float
    stderr_px: float
    windows: int
    windows_total: int
    window_p90_px: float


def _highpass(img: np.ndarray, sigma: float) -> np.ndarray:
    fill = np.where(np.isfinite(img), img, np.nanmean(img))
    # Slight smoothing widens the capture range of the differential estimator.
    smooth = ndimage.gaussian_filter(fill, 1.0)
    return smooth - ndimage.gaussian_filter(fill, sigma)


def _lk_window(ref: np.ndarray, mov: np.ndarray, margin: int, iterations: int) -> tuple[np.ndarray, float]:
    """Least-squares (Lucas-Kanade) translation moving ``mov`` onto ``ref``; both padded by ``margin``.

    Returns the shift (row, col) and the smaller eigenvalue ratio of the structure
    tensor (0 = edges in one direction only, 1 = isotropic).
    """
    inner = np.s_[margin:-margin, margin:-margin]
    r = ref[inner]
    gr_r, gr_c = np.gradient(ref)
    d = np.zeros(2)
    lam = 0.0
    coef = ndimage.spline_filter(mov, order=3, mode="nearest")  # once, not per step
    for _ in range(iterations):
        w = ndimage.shift(coef, d, order=3, mode="nearest", prefilter=False)
        gw_r, gw_c = np.gradient(w)
        # Symmetric (ESM) Jacobian: mean gradient of both images converges in fewer steps.
        gy = 0.5 * (gw_r + gr_r)[inner].ravel()
        gx = 0.5 * (gw_c + gr_c)[inner].ravel()
        e = (w[inner] - r).ravel()
        a = np.array([[gy @ gy, gy @ gx], [gy @ gx, gx @ gx]])
        ev = np.linalg.eigvalsh(a)
        lam = float(ev[0] / ev[1]) if ev[1] > 0 else 0.0
        if ev[0] <= 0:
            return np.array([np.nan, np.nan]), 0.0
        # w(x; d + delta) = mov(x - d - delta) ~ w - grad(w) . delta = ref  =>  A delta = G^T e
        delta = np.linalg.solve(a, np.array([gy @ e, gx @ e]))
        d = d + np.clip(delta, -1.0, 1.0)
        if np.abs(delta).max() < 1e-3:
            break
    return d, lam


def window_shifts(ref_bands, mov_bands, *, window_px: int = 128, step_px: int = 128,
                  agree_px: float = 0.2, min_isotropy: float = 0.1, highpass_sigma: float = 4.0,
                  iterations: int = 10):
    """Shift per window measured on each band separately, and which windows are reliable.

    The estimator is an iterated least-squares (Lucas-Kanade) fit of one translation
    per window to the high-passed intensities: a differential method, independent of
    the correlation-peak estimators of :mod:`changedet.coreg` (and of AROSICS).

    Parameters
    ----------
    ref_bands, mov_bands : numpy.ndarray
        (band, rows, cols) float arrays on the same grid, NaN where invalid; at least
        two bands (the reliability test compares them).
    window_px, step_px : int
        Window side and spacing (pixels).
    agree_px : float
        Bands of a window must agree within this (pixels, per component) for it to count.
    min_isotropy : float
        Smallest accepted eigenvalue ratio of the window's structure tensor (windows
        with edges in one direction only fix no shift along them).
    highpass_sigma : float
        Gaussian sigma (pixels) of the low-pass removed before matching (radiometric
        differences between dates).
    iterations : int
        Most Gauss-Newton steps per window.

    Returns
    -------
    shifts : numpy.ndarray
        (windows, 2): mean over bands of the shift (row, col, pixels) that moves the
        moving window onto the reference (``apply_shift`` convention).
    reliable : numpy.ndarray of bool
        (windows,)
    """
    ref = np.asarray(ref_bands, float)
    mov = np.asarray(mov_bands, float)
    if ref.ndim != 3 or ref.shape != mov.shape or ref.shape[0] < 2:
        raise CoregError(f"window_shifts needs two (band>=2, rows, cols) arrays of one shape, got "
                         f"{ref.shape} and {mov.shape}")
    hr = [_highpass(b, highpass_sigma) for b in ref]
    hm = [_highpass(b, highpass_sigma) for b in mov]
    valid = np.all(np.isfinite(ref) & np.isfinite(mov), axis=0)
    rows, cols = valid.shape
    m = 6  # margin: room for the shift and the spline at the window edge
    out, ok = [], []
    for r0 in range(m, rows - window_px - m + 1, step_px):
        for c0 in range(m, cols - window_px - m + 1, step_px):
            sl = np.s_[r0 - m:r0 + window_px + m, c0 - m:c0 + window_px + m]
            if not valid[sl].all():
                continue
            per, iso = [], []
            for a, b in zip(hr, hm):
                # Each band normalised by its own contrast: gains differ between dates.
                sa, sb = a[sl].std(), b[sl].std()
                if sa <= 0 or sb <= 0:
                    per.append((np.nan, np.nan))
                    iso.append(0.0)
                    continue
                d, lam = _lk_window(a[sl] / sa, b[sl] / sb, m, iterations)
                per.append(d)
                iso.append(lam)
            per = np.array(per)
            out.append(per.mean(axis=0))
            ok.append(bool(np.all(np.isfinite(per)) and min(iso) >= min_isotropy
                           and np.all(np.ptp(per, axis=0) <= agree_px) and np.all(np.abs(per) < 3)))
    if not out:
        raise CoregError(f"no {window_px} px window is fully valid in both dates; use a smaller window_px")
    return np.array(out), np.array(ok)


def pairwise_residuals(stack, *, bands=(0, 1), pairs=None, **kwargs) -> list[PairResidual]:
    """Residual shift between every pair of dates of a registered stack, measured independently.

    Parameters
    ----------
    stack : numpy.ndarray or xarray.DataArray
        (time, band, rows, cols) on one grid, NaN where invalid.
    bands : sequence of int
        Band indices used for the measurement (at least two; choose bands the
        registration did not use).
    pairs : iterable of (int, int), optional
        Date pairs; default all.
    **kwargs
        Passed to :func:`window_shifts`.

    Returns
    -------
    list of PairResidual
    """
    arr = np.asarray(getattr(stack, "values", stack), float)
    if arr.ndim != 4:
        raise CoregError(f"stack must be (time, band, rows, cols), got shape {arr.shape}")
    sel = arr[:, list(bands)]
    pairs = list(pairs) if pairs is not None else list(itertools.combinations(range(arr.shape[0]), 2))
    out = []
    for i, j in pairs:
        sh, ok = window_shifts(sel[i], sel[j], **kwargs)
        n = int(ok.sum())
        if n == 0:
            out.append(PairResidual(i, j, math.nan, math.nan, math.nan, math.nan, 0, len(ok), math.nan))
            continue
        good = sh[ok]
        med = np.median(good, axis=0)
        mad = 1.4826 * np.median(np.abs(good - med), axis=0)
        se = 1.2533 * mad / math.sqrt(n)
        mag = float(np.hypot(*med))
        # Standard error of the length: project the component errors on its direction.
        se_mag = float(np.hypot(*se)) if mag == 0 else float(np.hypot(med[0] * se[0], med[1] * se[1]) / mag)
        p90 = float(np.percentile(np.hypot(good[:, 0], good[:, 1]), 90))
        out.append(PairResidual(i, j, float(med[0]), float(med[1]), mag, se_mag, n, len(ok), p90))
    return out
