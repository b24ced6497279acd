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

That two-band design cannot judge 0.1 px on NAIP: its bands are not co-registered with
each other (measured on the 10-date series: the red-minus-NIR offset differs between
dates by up to 0.27 +- 0.05 px, the same for red, green and blue, and the pair
misclosures of that offset are consistent with one offset per date, chi2/dof 1.05), so
a residual measured on red mixes the NIR registration's error with the band offsets.
The single-band measurement (:func:`stack_residuals`) measures the registered band
itself, on many non-overlapping windows (optionally only on pixels held out from the
registration), as a Huber mean over windows with a bootstrap standard error;
:func:`adjust_residuals` then combines all pairs into each pair's residual with a
smaller standard error and tests that the pairs close up (one translation per date).

The weighted check (``stack_residuals(..., pooling="weighted", cell_px=...)``) lowers
that check's noise floor on NAIP about 2x (split-half floor, NIR, max over 45 pairs
0.21 -> 0.09 px): many 12 px windows tiled inside the held-out cells
(:func:`lk_window_fit`), each with its Cramer-Rao covariance, pooled by a
random-effects biweight mean (:func:`pool_windows`) with a bootstrap over cells.
Small windows on dissimilar dates include many wrong matches (scatter ~1 px), and a
naive small-window check leans towards 0 (a Huber mean with a fixed +-2 px cut
recovered an injected 0.5 px as 0.33-0.38 px on real date pairs). Here wrong matches
get no weight (biweight), the shift cut is taken from the iteration's start, and the
pair is re-measured from its pooled shift until that is a fixed point: injected shifts
are then recovered within 0.04 px on the worst (June / September) pair
(``tests/test_naip_check_weighted.py``).

One checkerboard fold (register on one colour, check on the other) reads the colours'
disagreement as residual: the translation that fits one colour's content is not the
one that fits the other's, and a registration fit to one colour is checked against the
other. :func:`cross_fit` splits the two folds into that disagreement (their
half-difference, opposite in the two folds) and what they share (their mean: the
registration's bias against the check's estimator on the same pixels). On NAIP NIR
(``bench/bench_naip.py --fold both``) the folds' per-date residuals are nearly opposite:
the pairs over 0.1 px of one fold are the colours' disagreement, not a bias of the
registration (which finds what the weighted check finds on its own pixels, within ~0.02 px;
the 64 px Huber check disagrees with itself across the colours by up to 0.6 px on the
first date, so it cannot judge this).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from changedet.errors import CoregError

__all__ = ["AdjustedResiduals", "BandResidual", "PairResidual", "WindowFit", "adjust_residuals", "cross_fit",
           "lk_window_fit", "lk_window_shifts", "noise_floor", "pairwise_residuals", "pool_windows", "robust_mean",
           "split_half", "stack_residuals", "window_shifts"]


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


def _stack_and_pairs(stack, pairs) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The (time, band, rows, cols) float array of ``stack`` and the date pairs (default all)."""
    arr = np.asarray(getattr(stack, "values", stack), float)
    if arr.ndim != 4:
        raise CoregError(f"stack must be (time, band, rows, cols), got shape {arr.shape}")
    pairs = list(pairs) if pairs is not None else list(itertools.combinations(range(arr.shape[0]), 2))
    return arr, pairs


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
    arr, pairs = _stack_and_pairs(stack, pairs)
    sel = arr[:, list(bands)]
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


# -- single-band measurement with a bootstrap standard error ---------------------------------
#
# The two-band agreement test above assumes every band of a date sits at the same place.
# On NAIP it does not: the visible bands and the NIR band come from separate sensors and
# their offset differs from date to date by 0.1-0.3 px (see docs of ``stack_residuals``),
# so a residual measured on red says nothing about a stack registered on NIR. The
# functions below measure one band at a time - the band that was registered - on many
# small windows, and give the residual as a robust mean over windows with a bootstrap
# standard error, so that a 0.1 px target can be judged.


def _bspline3_weights(f: np.ndarray) -> np.ndarray:
    """Cubic B-spline weights of taps ``floor - 1 .. floor + 2`` at fractional offsets ``f``."""
    return np.stack([(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6,
                     (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6], axis=-1)


def _warp_patches(coef: np.ndarray, d: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``out[w, y, x] = patch_w(y - d_w[0], x - d_w[1])`` for ``y, x`` in ``[lo, hi)``.

    ``coef`` holds each patch's cubic B-spline coefficients (mirror boundary), so this is
    ``scipy.ndimage.shift(order=3)`` with a different sub-pixel shift per patch, done for
    all patches at once (a translation is separable: one 4-tap pass per axis).
    """
    nw, size, _ = coef.shape
    pos = np.arange(lo, hi, dtype=float)
    taps = np.arange(-1, 3)
    w_idx = np.arange(nw)[:, None, None]
    out = coef
    for ax in (0, 1):
        y = pos[None, :] - d[:, ax:ax + 1]
        fl = np.floor(y)
        wt = _bspline3_weights(y - fl)
        idx = np.clip(fl.astype(int)[..., None] + taps, 0, size - 1)
        if ax == 0:
            out = np.einsum("wlt,wltp->wlp", wt, out[w_idx, idx, :])
        else:
            # Advanced indices around a slice come first: (patch, col, tap, row).
            out = np.einsum("wlt,wltr->wrl", wt, out[w_idx, :, idx])
    return out


def _lk_patches(ref: np.ndarray, mov: np.ndarray, margin: int, iterations: int, start=None):
    """Lucas-Kanade translation per patch, all patches at once.

    ``ref`` and ``mov`` are (patches, P, P) with ``P = window + 2 * margin``. Returns the
    shift (row, col) moving each ``mov`` patch onto its ``ref`` patch, the structure
    tensor's eigenvalue ratio (isotropy), the zero-mean correlation of the aligned
    windows, whether the iteration converged, and the shift's covariance (residual
    variance of the aligned window times the inverse structure tensor). ``start`` (2,) is where every
    patch's iteration begins (default 0).
    """
    from scipy.ndimage import spline_filter1d

    nw, size, _ = ref.shape
    m = margin
    coef = spline_filter1d(spline_filter1d(mov, 3, axis=1, mode="mirror"), 3, axis=2, mode="mirror")
    inner = np.s_[:, m:size - m, m:size - m]
    gr_r, gr_c = np.gradient(ref[:, m - 1:size - m + 1, m - 1:size - m + 1], axis=(1, 2))
    gr_r, gr_c = gr_r[:, 1:-1, 1:-1], gr_c[:, 1:-1, 1:-1]
    r = ref[inner]
    d = np.zeros((nw, 2)) if start is None else np.tile(np.asarray(start, float), (nw, 1))
    lam = np.zeros(nw)
    active = np.ones(nw, bool)
    for _ in range(iterations):
        ix = np.flatnonzero(active)
        if ix.size == 0:
            break
        w = _warp_patches(coef[ix], d[ix], m - 1, size - m + 1)
        gw_r, gw_c = np.gradient(w, axis=(1, 2))
        # Symmetric (ESM) Jacobian: the mean gradient of both images converges in fewer steps.
        gy = 0.5 * (gw_r[:, 1:-1, 1:-1] + gr_r[ix])
        gx = 0.5 * (gw_c[:, 1:-1, 1:-1] + gr_c[ix])
        e = w[:, 1:-1, 1:-1] - r[ix]
        a11 = np.einsum("wij,wij->w", gy, gy)
        a12 = np.einsum("wij,wij->w", gy, gx)
        a22 = np.einsum("wij,wij->w", gx, gx)
        b1 = np.einsum("wij,wij->w", gy, e)
        b2 = np.einsum("wij,wij->w", gx, e)
        det = a11 * a22 - a12**2
        half = 0.5 * (a11 + a22)
        disc = np.sqrt(np.maximum(half**2 - det, 0.0))
        with np.errstate(all="ignore"):
            lam[ix] = np.where(half + disc > 0, (half - disc) / (half + disc), 0.0)
            # w(x; d + delta) = mov(x - d - delta) ~ w - grad . delta = ref  =>  A delta = G^T e
            delta = np.stack([(a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det], axis=1)
        bad = ~np.all(np.isfinite(delta), axis=1)
        delta[bad] = 0.0
        lam[ix[bad]] = 0.0
        delta = np.clip(delta, -1.0, 1.0)
        d[ix] += delta
        active[ix] = ~bad & (np.abs(delta).max(axis=1) >= 1e-3)
    converged = ~active
    wm = _warp_patches(coef, d, m - 1, size - m + 1)
    w = wm[:, 1:-1, 1:-1]
    a0 = r - r.mean(axis=(1, 2), keepdims=True)
    b0 = w - w.mean(axis=(1, 2), keepdims=True)
    with np.errstate(all="ignore"):
        ncc = np.einsum("wij,wij->w", a0, b0) / np.sqrt(np.einsum("wij,wij->w", a0, a0)
                                                         * np.einsum("wij,wij->w", b0, b0))
    # Covariance of the shift at the solution: s^2 A^-1 (least squares, residual variance
    # s^2 of the aligned windows), the Cramer-Rao bound of a translation for white noise.
    gw_r, gw_c = np.gradient(wm, axis=(1, 2))
    gy = 0.5 * (gw_r[:, 1:-1, 1:-1] + gr_r)
    gx = 0.5 * (gw_c[:, 1:-1, 1:-1] + gr_c)
    a11 = np.einsum("wij,wij->w", gy, gy)
    a12 = np.einsum("wij,wij->w", gy, gx)
    a22 = np.einsum("wij,wij->w", gx, gx)
    e = w - r
    s2 = np.einsum("wij,wij->w", e, e) / max(e[0].size - 2, 1)
    with np.errstate(all="ignore"):
        det = a11 * a22 - a12**2
        cov = (s2 / det)[:, None, None] * np.stack([np.stack([a22, -a12], -1), np.stack([-a12, a11], -1)], 1)
    cov[~np.all(np.isfinite(cov), axis=(1, 2))] = np.inf
    return d, lam, np.nan_to_num(ncc), converged, cov


def _valid(ref: np.ndarray, mov: np.ndarray, mask) -> np.ndarray:
    """Pixels finite in both dates and inside ``mask`` (when given, of the images' shape)."""
    ok = np.isfinite(ref) & np.isfinite(mov)
    if mask is not None:
        mk = np.asarray(mask, bool)
        if mk.shape != ok.shape:
            raise CoregError(f"mask shape {mk.shape} does not match the images {ok.shape}")
        ok &= mk
    return ok


def lk_window_shifts(reference, moving, *, window_px: int = 64, step_px: int | None = None, mask=None,
                     highpass_sigma: float = 4.0, iterations: int = 10, min_isotropy: float = 0.1,
                     min_ncc: float = 0.5, max_shift_px: float = 2.0):
    """Translation per window between two images of one band, by Lucas-Kanade.

    A differential estimator (iterated least squares on Gaussian high-passed
    intensities, cubic B-spline warps), independent of the phase-correlation peak that
    :mod:`changedet.coreg` registers with.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        (rows, cols) one band of two dates on the same grid, NaN where invalid.
    window_px, step_px : int
        Window side and spacing (pixels); ``step_px`` defaults to ``window_px``
        (windows do not overlap, so their errors are independent).
    mask : numpy.ndarray of bool, optional
        (rows, cols) pixels a window may use (e.g. the cells held out from the
        registration); a window is measured only when all its pixels are valid and in
        the mask.
    highpass_sigma : float
        Gaussian sigma (pixels) of the low-pass removed first (radiometric differences
        between dates).
    iterations : int
        Most Gauss-Newton steps per window.
    min_isotropy : float
        Smallest accepted eigenvalue ratio of a window's structure tensor (a window with
        edges in one direction fixes no shift along them).
    min_ncc : float
        Smallest accepted correlation of the aligned high-passed windows (a window whose
        content changed between the dates - crops, water - is not measured).
    max_shift_px : float
        Windows with a larger shift in either component are not accepted (pixels).

    Returns
    -------
    centres : numpy.ndarray
        (windows, 2) window centres (row, col, pixels).
    shifts : numpy.ndarray
        (windows, 2) shift (row, col, pixels) moving ``moving`` onto ``reference``
        (the :func:`changedet.coreg.apply_shift` convention).
    reliable : numpy.ndarray of bool
        (windows,) windows that pass every test above.
    """
    ref = np.asarray(reference, float)
    mov = np.asarray(moving, float)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise CoregError(f"lk_window_shifts needs two 2-D arrays of one shape, got {ref.shape} and {mov.shape}")
    hr = _highpass(ref, highpass_sigma)
    hm = _highpass(mov, highpass_sigma)
    ok = _valid(ref, mov, mask)
    pr, pm, centres = _patches(hr, hm, ok, window_px, step_px or window_px)
    if not centres.size:
        raise CoregError(f"no {window_px} px window is fully valid in both dates; use a smaller window_px")
    d, lam, ncc, conv, _ = _lk_patches(pr, pm, _MARGIN, iterations)
    reliable = conv & (lam >= min_isotropy) & (ncc >= min_ncc) & np.all(np.abs(d) <= max_shift_px, axis=1)
    return centres, d, reliable


_MARGIN = 4  # room around a window for the shift and the spline taps (pixels)


@dataclass(frozen=True)
class WindowFit:
    """Lucas-Kanade translations of many small windows, each with its own covariance.

    Attributes
    ----------
    centres : numpy.ndarray
        (windows, 2) window centres (row, col, pixels).
    shifts : numpy.ndarray
        (windows, 2) shift (row, col, pixels) moving ``moving`` onto ``reference``.
    covariance : numpy.ndarray
        (windows, 2, 2) covariance of each shift (pixels^2): the residual variance of
        the aligned window times the inverse structure tensor (its Cramer-Rao bound for
        white noise; a window with edges in one direction only is precise across them
        and not along them). Infinite for a flat window.
    ncc : numpy.ndarray
        (windows,) zero-mean correlation of the aligned high-passed windows.
    reliable : numpy.ndarray of bool
        (windows,) converged, similar after alignment (``ncc >= min_ncc``), not
        degenerate, shift within ``max_shift_px``.
    cell : numpy.ndarray of int
        (windows,) index of the ``cell_px`` block holding each window: windows of one
        block share content (a changed field, a moved shoreline), so their errors are
        resampled together.
    """

    centres: np.ndarray
    shifts: np.ndarray
    covariance: np.ndarray
    ncc: np.ndarray
    reliable: np.ndarray
    cell: np.ndarray


def lk_window_fit(reference, moving, *, cell_px: int, window_px: int = 16, mask=None, highpass_sigma: float = 4.0,
                  iterations: int = 10, min_ncc: float = 0.5, min_isotropy: float = 0.01,
                  max_shift_px: float = 2.0, start=(0.0, 0.0)) -> WindowFit:
    """Translation and its covariance for every small window tiled inside ``cell_px`` blocks.

    The windows (``window_px`` plus a 4 px margin each side) tile the interior of each
    ``cell_px`` block of the frame, so that a checkerboard of such blocks (one colour
    held out from the registration) is used without touching the other colour.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        (rows, cols) one band of two dates on one grid, NaN where invalid.
    cell_px : int
        Block side (pixels); windows never cross a block boundary.
    window_px : int
        Window side (pixels), without its margin.
    mask : numpy.ndarray of bool, optional
        (rows, cols) pixels a window (margin included) may use.
    highpass_sigma : float
        Gaussian sigma (pixels) of the low-pass removed first.
    iterations : int
        Most Gauss-Newton steps per window.
    min_ncc : float
        Smallest accepted correlation of the aligned windows (changed content).
    min_isotropy : float
        Smallest accepted eigenvalue ratio of the structure tensor; low, because the
        covariance already gives an edge-only window weight only across its edge.
    max_shift_px : float
        Largest accepted shift component away from ``start`` (pixels).
    start : (float, float)
        Shift (row, col, pixels) every window's iteration starts from. On a window whose
        content differs between the dates the cost has several minima and the iteration
        stops in the one nearest its start, so the result leans towards ``start``;
        :func:`stack_residuals` therefore restarts from the pooled shift until it stops
        moving.

    Returns
    -------
    WindowFit
    """
    ref = np.asarray(reference, float)
    mov = np.asarray(moving, float)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise CoregError(f"lk_window_fit needs two 2-D arrays of one shape, got {ref.shape} and {mov.shape}")
    m = _MARGIN
    size = window_px + 2 * m
    k = (cell_px - 2 * m) // window_px
    if k < 1:
        raise CoregError(f"cell_px={cell_px} holds no {window_px} px window with its {m} px margins; "
                         f"use cell_px >= {size}")
    ok = _valid(ref, mov, mask)
    rows, cols = ok.shape
    off = (cell_px - 2 * m - k * window_px) // 2 + np.arange(k) * window_px
    cr, cc_ = np.meshgrid(np.arange(0, rows, cell_px), np.arange(0, cols, cell_px), indexing="ij")
    ncol = -(-cols // cell_px)
    rr = (cr.ravel()[:, None, None] + off[None, :, None] + 0 * off[None, None, :]).ravel()
    cc = (cc_.ravel()[:, None, None] + 0 * off[None, :, None] + off[None, None, :]).ravel()
    inside = (rr + size <= rows) & (cc + size <= cols)
    rr, cc = rr[inside], cc[inside]
    integ = np.pad(np.cumsum(np.cumsum(ok, 0), 1), ((1, 0), (1, 0)))
    count = integ[rr + size, cc + size] - integ[rr, cc + size] - integ[rr + size, cc] + integ[rr, cc]
    keep = count == size * size
    rr, cc = rr[keep], cc[keep]
    if not rr.size:
        raise CoregError(f"no {window_px} px window is fully valid in both dates and in the mask")
    pr, pm, centres = _cut(_highpass(ref, highpass_sigma), _highpass(mov, highpass_sigma), rr, cc, size)
    d, lam, ncc, conv, cov = _lk_patches(pr, pm, m, iterations, start)
    finite = np.all(np.isfinite(cov), axis=(1, 2))
    # Measured from the start, so that the cut moves with the shift being measured (a
    # fixed cut would truncate the scatter of windows unevenly and pull the pooled
    # shift towards 0).
    reliable = (conv & finite & (lam >= min_isotropy) & (ncc >= min_ncc)
                & np.all(np.abs(d - np.asarray(start, float)) <= max_shift_px, axis=1))
    return WindowFit(centres, d, cov, ncc, reliable, (rr // cell_px) * ncol + cc // cell_px)


def _cut(hr, hm, rr, cc, size):
    """Patches of ``size`` px at origins ``rr, cc``, each scaled by its own contrast (gains
    differ between dates and places); a flat or invalid patch becomes zeros."""
    pr = np.stack([hr[r:r + size, c:c + size] for r, c in zip(rr, cc)])
    pm = np.stack([hm[r:r + size, c:c + size] for r, c in zip(rr, cc)])
    with np.errstate(all="ignore"):
        pr = pr / pr.std(axis=(1, 2), keepdims=True)
        pm = pm / pm.std(axis=(1, 2), keepdims=True)
    flat = ~(np.isfinite(pr).all(axis=(1, 2)) & np.isfinite(pm).all(axis=(1, 2)))
    pr[flat] = 0.0
    pm[flat] = 0.0
    centres = np.stack([rr + size / 2 - 0.5, cc + size / 2 - 0.5], axis=1).astype(float)
    return pr, pm, centres


_CHI2_2_MEDIAN = 2.0 * math.log(2.0)  # median of a chi-square with 2 degrees of freedom


def _pool(d, cov, tau2, counts, c, iterations):
    """Biweight generalised least-squares mean of ``d`` for each row of ``counts``.

    ``counts`` (draws, windows) multiplies each window (a bootstrap resample); the
    weight of window ``w`` is ``h_w (C_w + tau2 I)^-1`` with ``h_w`` the Tukey biweight
    of its Mahalanobis distance to the current mean, starting from the median.
    """
    v = cov + tau2 * np.eye(2)
    wmat = np.linalg.inv(v)
    mu = np.broadcast_to(np.median(d, axis=0), (counts.shape[0], 2)).copy()
    for _ in range(iterations):
        r = d[None] - mu[:, None]
        m2 = np.einsum("bwi,wij,bwj->bw", r, wmat, r)
        # Tukey's biweight: a window far from the mean (a wrong match on changed or
        # repetitive content) gets no weight at all, where Huber's would still pull.
        u2 = m2 / c**2
        h = counts * np.where(u2 < 1.0, (1.0 - u2) ** 2, 0.0)
        lhs = np.einsum("bw,wij->bij", h, wmat)
        rhs = np.einsum("bw,wij,wj->bi", h, wmat, d)
        new = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        if np.abs(new - mu).max() < 1e-6:
            return new
        mu = new
    return mu


def pool_windows(shifts, covariance, *, groups=None, n_boot: int = 200, seed: int = 0, c: float = 4.685,
                 iterations: int = 30):
    """One translation from many windows: robust, precision-weighted, with a cluster bootstrap error.

    A random-effects model: each window measures the common translation plus its own
    error, of covariance ``C_w`` (its Cramer-Rao bound, :class:`WindowFit`) plus
    ``tau^2 I`` for what the bound does not see (content that changed or moved between
    the dates, relief and shadows). ``tau^2`` is set so that the median squared
    Mahalanobis distance of the windows to the mean is that of a chi-square with 2
    degrees of freedom; the mean is the biweight-weighted generalised least-squares
    estimate, so windows with strong, unchanged edges count most and wrong matches not
    at all.

    Parameters
    ----------
    shifts : numpy.ndarray
        (windows, 2) shifts (pixels).
    covariance : numpy.ndarray
        (windows, 2, 2) their covariances (pixels^2).
    groups : numpy.ndarray of int, optional
        (windows,) cluster of each window; the bootstrap resamples whole clusters
        (neighbouring windows share errors). Default: each window its own cluster.
    n_boot : int
        Bootstrap resamples (fewer than 2: no standard error, NaN).
    seed : int
        Seed of the bootstrap.
    c : float
        Biweight cut-off on the Mahalanobis distance (4.685: 95 % efficiency for
        Gaussian errors).
    iterations : int
        Most reweighting steps.

    Returns
    -------
    mean : numpy.ndarray
        (2,) translation (pixels).
    stderr : numpy.ndarray
        (2,) bootstrap standard error (pixels).
    tau_px : float
        Extra per-window error ``tau`` (pixels).
    """
    d = np.asarray(shifts, float)
    cov = np.asarray(covariance, float)
    if d.ndim != 2 or d.shape[1] != 2 or cov.shape != (len(d), 2, 2) or len(d) < 2:
        raise CoregError(f"pool_windows needs (n>=2, 2) shifts and (n, 2, 2) covariances, got {d.shape} and "
                         f"{cov.shape}")
    one = np.ones((1, len(d)))
    mu = _pool(d, cov, 0.0, one, c, iterations)[0]
    tau2 = 0.0
    for _ in range(5):
        r = d - mu

        def med_m2(t2):
            return float(np.median(np.einsum("wi,wij,wj->w", r, np.linalg.inv(cov + t2 * np.eye(2)), r)))

        if med_m2(0.0) <= _CHI2_2_MEDIAN:
            tau2 = 0.0
        else:
            lo, hi = 0.0, max(float(np.median(np.sum(r**2, axis=1))), 1e-12)
            while med_m2(hi) > _CHI2_2_MEDIAN:
                hi *= 4.0
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if med_m2(mid) > _CHI2_2_MEDIAN else (lo, mid)
            tau2 = hi
        new = _pool(d, cov, tau2, one, c, iterations)[0]
        if np.abs(new - mu).max() < 1e-6:
            mu = new
            break
        mu = new
    if n_boot < 2:
        return mu, np.full(2, np.nan), math.sqrt(tau2)
    g = np.arange(len(d)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    ng = int(g.max()) + 1
    rng = np.random.default_rng(seed)
    # Resample clusters; a window's multiplicity is its cluster's.
    pick = rng.integers(0, ng, (n_boot, ng))
    cnt = np.zeros((n_boot, ng))
    np.add.at(cnt, (np.arange(n_boot)[:, None], pick), 1.0)
    boot = _pool(d, cov, tau2, cnt[:, g], c, iterations)
    return mu, boot.std(axis=0, ddof=1), math.sqrt(tau2)


def _patches(hr, hm, ok, window_px, step_px):
    """Windows (plus margin) fully inside ``ok``, each scaled by its own contrast."""
    m = _MARGIN
    rows, cols = ok.shape
    size = window_px + 2 * m
    r0 = np.arange(0, rows - size + 1, step_px)
    c0 = np.arange(0, cols - size + 1, step_px)
    # Valid pixel count per window from an integral image: one pass, not one per window.
    integ = np.pad(np.cumsum(np.cumsum(ok, 0), 1), ((1, 0), (1, 0)))
    rr, cc = np.meshgrid(r0, c0, indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    count = integ[rr + size, cc + size] - integ[rr, cc + size] - integ[rr + size, cc] + integ[rr, cc]
    keep = count == size * size
    rr, cc = rr[keep], cc[keep]
    if not rr.size:
        return np.zeros((0, size, size)), np.zeros((0, size, size)), np.zeros((0, 2))
    return _cut(hr, hm, rr, cc, size)


def robust_mean(x, *, c: float = 1.345, iterations: int = 30) -> np.ndarray:
    """Huber M-estimate of location per column, scale from the MAD.

    Parameters
    ----------
    x : numpy.ndarray
        (samples, components).
    c : float
        Huber threshold in robust standard deviations (1.345: 95 % efficiency for
        Gaussian noise).

    Returns
    -------
    numpy.ndarray
        (components,) location.
    """
    x = np.asarray(x, float)
    mu = np.median(x, axis=0)
    scale = 1.4826 * np.median(np.abs(x - mu), axis=0)
    scale = np.where(scale > 0, scale, 1e-9)
    for _ in range(iterations):
        r = np.abs(x - mu) / scale
        w = np.minimum(1.0, c / np.maximum(r, 1e-12))
        new = (w * x).sum(axis=0) / w.sum(axis=0)
        if np.all(np.abs(new - mu) < 1e-6):
            return new
        mu = new
    return mu


def _bootstrap_stderr(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(x), (n_boot, len(x)))
    return np.std([robust_mean(x[i]) for i in idx], axis=0, ddof=1)


@dataclass(frozen=True)
class BandResidual:
    """Residual translation between two dates of one band, with its standard error.

    Attributes
    ----------
    i, j : int
        Date indices in the stack.
    band : int
        Band index measured.
    shift_row_px, shift_col_px : float
        Robust (Huber) mean over reliable windows of the shift (pixels) that moves date
        ``j`` onto date ``i``; NaN when fewer than 5 windows were reliable.
    stderr_row_px, stderr_col_px : float
        Bootstrap standard errors of those means (pixels), resampling windows.
    magnitude_px : float
        Length of the mean shift vector (pixels).
    stderr_px : float
        Standard error of the length (pixels): the component errors projected on its
        direction (their root-sum-square when the length is 0).
    windows, windows_total : int
        Reliable windows and windows measured.
    spread_px : float
        Median over reliable windows of ``|window shift - mean|`` (pixels): the
        measurement noise of one window plus any non-rigid misregistration.
    """

    i: int
    j: int
    band: int
    shift_row_px: float
    shift_col_px: float
    stderr_row_px: float
    stderr_col_px: float
    magnitude_px: float
    stderr_px: float
    windows: int
    windows_total: int
    spread_px: float


def stack_residuals(stack, *, band: int, pairs=None, mask=None, window_px: int = 64, n_boot: int = 200,
                    seed: int = 0, min_windows: int = 5, pooling: str = "huber", cell_px: int | None = None,
                    **kwargs) -> list[BandResidual]:
    """Residual translation between pairs of dates of one band of a registered stack.

    Measure the band that was registered: when bands of one date are offset from each
    other (NAIP's visible and NIR sensors are), a residual measured on another band
    mixes the registration error with that date's band-to-band offset.

    Parameters
    ----------
    stack : numpy.ndarray or xarray.DataArray
        (time, band, rows, cols) on one grid, NaN where invalid.
    band : int
        Band index measured.
    pairs : iterable of (int, int), optional
        Date pairs; default all.
    mask : numpy.ndarray of bool, optional
        (rows, cols) pixels the measurement may use, e.g. those held out from the
        registration.
    window_px : int
        Window side (pixels); windows do not overlap.
    n_boot : int
        Bootstrap resamples for the standard errors.
    seed : int
        Seed of the bootstrap.
    min_windows : int
        Fewest reliable windows for a measurement; fewer give NaN.
    pooling : {"huber", "weighted"}
        ``"huber"``: :func:`lk_window_shifts` windows of ``window_px`` (64 px suits),
        equal-weight Huber mean, window bootstrap. ``"weighted"``: small windows
        (``window_px`` 12-24 px) tiled in ``cell_px`` blocks by :func:`lk_window_fit`,
        pooled by :func:`pool_windows` (each window weighted by its Cramer-Rao
        covariance plus a random-effects term, Huber-robust), bootstrap over blocks.
    cell_px : int, optional
        Block side (pixels) for ``pooling="weighted"`` (required there): windows stay
        inside blocks, and blocks are the bootstrap's resampling unit.
    **kwargs
        Passed to :func:`lk_window_shifts` (or :func:`lk_window_fit`).

    Returns
    -------
    list of BandResidual
    """
    arr, pairs = _stack_and_pairs(stack, pairs)
    if not 0 <= band < arr.shape[1]:
        raise CoregError(f"band {band} is not in the stack's {arr.shape[1]} bands; pass 0..{arr.shape[1] - 1}")
    if pooling not in ("huber", "weighted"):
        raise CoregError(f"pooling={pooling!r} is not known; use 'huber' or 'weighted'")
    if pooling == "weighted":
        if cell_px is None:
            raise CoregError("pooling='weighted' needs cell_px (the block side the windows are tiled in)")
        return _stack_residuals_weighted(arr, pairs, band=band, mask=mask, window_px=window_px, cell_px=cell_px,
                                         n_boot=n_boot, seed=seed, min_windows=min_windows, **kwargs)
    rng = np.random.default_rng(seed)
    out = []
    nan = math.nan
    for i, j in pairs:
        try:
            _, sh, ok = lk_window_shifts(arr[i, band], arr[j, band], window_px=window_px, mask=mask, **kwargs)
        except CoregError:
            out.append(BandResidual(i, j, band, nan, nan, nan, nan, nan, nan, 0, 0, nan))
            continue
        good = sh[ok]
        if len(good) < min_windows:
            out.append(BandResidual(i, j, band, nan, nan, nan, nan, nan, nan, len(good), len(ok), nan))
            continue
        mu = robust_mean(good)
        se = _bootstrap_stderr(good, n_boot, rng)
        mag = float(np.hypot(*mu))
        se_mag = float(np.hypot(*se)) if mag == 0 else float(np.hypot(mu[0] * se[0], mu[1] * se[1]) / mag)
        spread = float(np.median(np.hypot(*(good - mu).T)))
        out.append(BandResidual(i, j, band, float(mu[0]), float(mu[1]), float(se[0]), float(se[1]), mag, se_mag,
                                len(good), len(ok), spread))
    return out


def _stack_residuals_weighted(arr, pairs, *, band, mask, window_px, cell_px, n_boot, seed, min_windows,
                              restarts: int = 6, **kwargs) -> list[BandResidual]:
    out = []
    nan = math.nan
    for k, (i, j) in enumerate(pairs):
        start = np.zeros(2)
        fit = None
        # Each window's iteration leans towards where it starts (see lk_window_fit), so
        # restart from the pooled shift until it is a fixed point: the lean then vanishes.
        for _ in range(restarts + 1):
            try:
                fit = lk_window_fit(arr[i, band], arr[j, band], cell_px=cell_px, window_px=window_px, mask=mask,
                                    start=start, **kwargs)
            except CoregError:
                fit = None
                break
            ok = fit.reliable
            # Clusters, not windows, are the independent unit: count them.
            if len(np.unique(fit.cell[ok])) < min_windows:
                break
            mu, se, _ = pool_windows(fit.shifts[ok], fit.covariance[ok], groups=fit.cell[ok], n_boot=0)
            moved = np.abs(mu - start).max()
            start = mu
            if moved < 0.002:
                break
        if fit is None:
            out.append(BandResidual(i, j, band, nan, nan, nan, nan, nan, nan, 0, 0, nan))
            continue
        ok = fit.reliable
        if len(np.unique(fit.cell[ok])) < min_windows:
            out.append(BandResidual(i, j, band, nan, nan, nan, nan, nan, nan, int(ok.sum()), len(ok), nan))
            continue
        mu, se, _ = pool_windows(fit.shifts[ok], fit.covariance[ok], groups=fit.cell[ok], n_boot=n_boot,
                                 seed=seed + k)
        mag = float(np.hypot(*mu))
        se_mag = float(np.hypot(*se)) if mag == 0 else float(np.hypot(mu[0] * se[0], mu[1] * se[1]) / mag)
        spread = float(np.median(np.hypot(*(fit.shifts[ok] - mu).T)))
        out.append(BandResidual(i, j, band, float(mu[0]), float(mu[1]), float(se[0]), float(se[1]), mag, se_mag,
                                int(ok.sum()), len(ok), spread))
    return out


@dataclass(frozen=True)
class AdjustedResiduals:
    """Pair residuals made consistent with one residual translation per date.

    If what is left after registration is a translation per date (``e_j``), every pair
    measures ``e_j - e_i``; solving for ``e`` by weighted least squares over all pairs
    gives each pair's residual from all measurements (each date takes part in
    ``n - 1`` pairs), with a smaller standard error than the pair's own. ``chi2_dof``
    tests the premise: about 1 when the pairs close up within their standard errors.

    Attributes
    ----------
    pairs : numpy.ndarray
        (pairs, 2) date indices ``(i, j)``.
    residual : numpy.ndarray
        (pairs, 2) adjusted residual ``e_j - e_i`` (row, col, pixels).
    stderr : numpy.ndarray
        (pairs, 2) its standard error (pixels).
    magnitude_px : numpy.ndarray
        (pairs,) length of the adjusted residual (pixels).
    per_date : numpy.ndarray
        (time, 2) residual translation per date, date 0 fixed at 0 (pixels).
    chi2_dof : float
        Sum of squared normalised misclosures over its degrees of freedom.
    covariance : numpy.ndarray
        (2, time, time) covariance of ``per_date`` per component (row, col; pixels^2),
        date 0 fixed; :func:`noise_floor` draws from it.
    """

    pairs: np.ndarray
    residual: np.ndarray
    stderr: np.ndarray
    magnitude_px: np.ndarray
    per_date: np.ndarray
    chi2_dof: float
    covariance: np.ndarray | None = None


def adjust_residuals(results: list[BandResidual], n_dates: int) -> AdjustedResiduals:
    """Network adjustment of measured pair residuals (see :class:`AdjustedResiduals`).

    Parameters
    ----------
    results : list of BandResidual
        Pair measurements of one band (NaN ones are left out); they must link every
        date to date 0.
    n_dates : int
        Number of dates.

    Returns
    -------
    AdjustedResiduals
        For every pair ``(i, j)`` with ``i < j``.

    Raises
    ------
    CoregError
        When the measured pairs do not link every date.
    """
    use = [r for r in results if np.isfinite(r.shift_row_px) and np.isfinite(r.stderr_row_px)]
    a = np.zeros((len(use), n_dates))
    y = np.zeros((len(use), 2))
    se = np.zeros((len(use), 2))
    for k, r in enumerate(use):
        a[k, r.j] += 1.0
        a[k, r.i] -= 1.0
        y[k] = (r.shift_row_px, r.shift_col_px)
        se[k] = (max(r.stderr_row_px, 1e-3), max(r.stderr_col_px, 1e-3))
    a = a[:, 1:]  # date 0 fixed: the residuals are relative
    per_date = np.zeros((n_dates, 2))
    covs = []
    misfit = 0.0
    for c in range(2):
        w = 1.0 / se[:, c] ** 2
        normal = (a * w[:, None]).T @ a
        if np.linalg.matrix_rank(normal) < n_dates - 1:
            raise CoregError(f"the {len(use)} measured pairs do not link all {n_dates} dates; measure more pairs "
                             "or lower min_windows")
        cov = np.linalg.inv(normal)
        e = cov @ ((a * w[:, None]).T @ y[:, c])
        per_date[1:, c] = e
        misfit += float(np.sum(w * (y[:, c] - a @ e) ** 2))
        full = np.zeros((n_dates, n_dates))
        full[1:, 1:] = cov
        covs.append(full)
    dof = max(2 * (len(use) - (n_dates - 1)), 1)
    pairs = np.array(list(itertools.combinations(range(n_dates), 2)), int)
    res = per_date[pairs[:, 1]] - per_date[pairs[:, 0]]
    err = np.stack([np.sqrt(cv[pairs[:, 0], pairs[:, 0]] + cv[pairs[:, 1], pairs[:, 1]]
                            - 2 * cv[pairs[:, 0], pairs[:, 1]]) for cv in covs], axis=1)
    return AdjustedResiduals(pairs, res, err, np.hypot(res[:, 0], res[:, 1]), per_date, misfit / dof,
                             np.stack(covs))


def noise_floor(adjusted: AdjustedResiduals, *, draws: int = 4000, seed: int = 0) -> dict:
    """What the check reports for a perfect registration: its own noise, by Monte Carlo.

    The adjusted pair residuals are differences of per-date estimates with covariance
    ``adjusted.covariance``; with no misregistration at all they are that noise alone.
    The median and the maximum over pairs of its length are then not 0 - the maximum
    over 45 correlated pairs of a 2-D Gaussian length is ~2.5-3 standard errors - so a
    measured residual should be compared with these figures, not with 0.

    Parameters
    ----------
    adjusted : AdjustedResiduals
        From :func:`adjust_residuals`.
    draws : int
        Monte Carlo draws.
    seed : int
        Seed of the draws.

    Returns
    -------
    dict
        ``median_px`` and ``max_px``: (mean, 95th percentile) over draws of the median
        and of the maximum over pairs of the residual length (pixels), for a perfect
        registration measured with this check's errors.
    """
    if adjusted.covariance is None:
        raise CoregError("adjusted residuals without a covariance; compute them with adjust_residuals")
    rng = np.random.default_rng(seed)
    n = adjusted.per_date.shape[0]
    e = np.zeros((draws, n, 2))
    for c in range(2):
        cov = adjusted.covariance[c][1:, 1:]
        # eigh, not cholesky: a zero covariance (a noiseless component) is valid.
        e[:, 1:, c] = rng.multivariate_normal(np.zeros(n - 1), cov, size=draws, method="eigh")
    p = adjusted.pairs
    mag = np.hypot(*(e[:, p[:, 1]] - e[:, p[:, 0]]).transpose(2, 0, 1))
    med, mx = np.median(mag, axis=1), mag.max(axis=1)
    return {"median_px": (float(med.mean()), float(np.percentile(med, 95))),
            "max_px": (float(mx.mean()), float(np.percentile(mx, 95)))}


def split_half(stack, *, band: int, mask, cell_px: int, window_px: int | None = None, n_boot: int = 50,
               seed: int = 0, draws: int = 4000, pooling: str = "huber", **kwargs) -> dict:
    """The check's error measured, not modelled: the same check on two halves of its pixels.

    The bootstrap standard errors of :func:`stack_residuals` treat windows as
    independent, and :func:`adjust_residuals` treats pairs as independent. An error
    that belongs to a date - its content measured on these particular windows gives its
    translation a bias that all its pairs share - passes both unseen (the pairs still
    close up). Here the held-out pixels are split into two interleaved halves (rows of
    ``cell_px`` blocks, alternately), the per-date residuals are solved on each half,
    and the spread of their difference gives an empirical standard error of the
    per-date residual measured on all the pixels, date-specific errors included.

    Parameters
    ----------
    stack : numpy.ndarray or xarray.DataArray
        (time, band, rows, cols) on one grid, NaN where invalid.
    band : int
        Band index measured.
    mask : numpy.ndarray of bool
        (rows, cols) pixels the check may use (those held out from the registration).
    cell_px : int
        Block height (pixels) of the split; windows are ``cell_px - 8`` wide and spaced
        by ``cell_px`` unless ``window_px`` is given.
    window_px : int, optional
        Window side (pixels).
    n_boot : int
        Bootstrap resamples per pair (only needed for the adjustment weights).
    seed : int
        Seed of the bootstrap and of the Monte Carlo.
    draws : int
        Monte Carlo draws of the noise floor.
    pooling : {"huber", "weighted"}
        The check measured (:func:`stack_residuals`); with ``"weighted"`` the windows
        are ``window_px`` (default 16) tiled in the ``cell_px`` blocks.
    **kwargs
        Passed to :func:`stack_residuals`.

    Returns
    -------
    dict
        ``sigma_date_px`` (row, col): empirical standard error of one date's residual
        on all the check's pixels (pixels); ``sigma_date_bootstrap_px`` (row, col): the
        same from the bootstrap and adjustment (for comparison); ``floor``: the
        :func:`noise_floor` of the pair residuals with the empirical errors (median and
        max over pairs, mean and 95th percentile); ``halves``: the two per-date
        residual sets (time, 2).

    Raises
    ------
    CoregError
        When a half does not link every date (too few reliable windows).
    """
    arr, _ = _stack_and_pairs(stack, None)
    mk = np.asarray(mask, bool)
    n = arr.shape[0]
    if mk.shape != arr.shape[-2:]:
        raise CoregError(f"mask shape {mk.shape} does not match the stack's grid {arr.shape[-2:]}")
    rows = (np.arange(arr.shape[-2]) // cell_px) % 2
    if pooling == "weighted":
        opts = {"window_px": int(window_px or 16), "cell_px": cell_px, "pooling": pooling}
    else:
        opts = {"window_px": int(window_px or cell_px - 8), "step_px": cell_px}
    halves, boot = [], []
    for h in (0, 1):
        part = mk & (rows == h)[:, None]
        adj = adjust_residuals(stack_residuals(arr, band=band, mask=part, n_boot=n_boot, seed=seed, **opts,
                                               **kwargs), n)
        halves.append(adj.per_date)
        # Bootstrap variance of one date relative to date 0, mean over dates, per component.
        boot.append(np.array([np.mean(np.diag(c)[1:]) for c in adj.covariance]))
    d = halves[0] - halves[1]
    pairs = np.array(list(itertools.combinations(range(n), 2)), int)
    dd = d[pairs[:, 1]] - d[pairs[:, 0]]
    # Per date and half, independent errors of variance s_h^2: a pair difference of the
    # halves' difference has variance 4 s_h^2, and all the pixels halve it: s^2 = s_h^2 / 2.
    sigma = np.sqrt(np.mean(dd ** 2, axis=0) / 8.0)
    cov = np.zeros((2, n, n))
    for c in range(2):
        # Relative to date 0: every date carries date 0's error too.
        cov[c, 1:, 1:] = sigma[c] ** 2 * (np.eye(n - 1) + 1.0)
    floor = noise_floor(AdjustedResiduals(pairs, None, None, None, np.zeros((n, 2)), math.nan, cov),
                        draws=draws, seed=seed)
    # All the pixels: half the variance of one half's bootstrap figure.
    sigma_boot = np.sqrt(0.5 * np.mean(boot, axis=0) / 2.0)
    return {"sigma_date_px": sigma.tolist(), "sigma_date_bootstrap_px": sigma_boot.tolist(), "floor": floor,
            "halves": [h.tolist() for h in halves]}


def cross_fit(folds: list[AdjustedResiduals], *, draws: int = 4000, seed: int = 0) -> dict:
    """Split a checkerboard check into what both folds share and what the colours disagree on.

    Fold ``f`` registers on colour ``f`` and is checked on the other colour ``g``. For a
    translation-equivariant check its per-date residual is

    ``e_f = s + (T_f - C_f) + (C_f - C_g)``

    with ``T_f`` the registration's and ``C_f`` the check's translation estimate on
    colour ``f``'s pixels and ``s`` any residual common to both. ``C_0 - C_1`` is the
    colours' disagreement: the translation that fits one colour's content is not the
    one that fits the other's (content sampling, changed fields, relief, distortion at
    the scale of the cells), and it enters the two folds with opposite signs. So

    * the folds' mean ``(e_0 + e_1) / 2 = s + mean_f (T_f - C_f)`` is the bias of the
      registration against the check's (different) estimator on the same pixels, plus
      what both share: it is small when the registration finds what an independent
      estimator finds in the pixels it was given. It is *not* a held-out measurement:
      the colours' content error cancels in it instead of being measured;
    * the folds' half-difference ``(e_0 - e_1) / 2`` is ``C_0 - C_1`` plus the
      estimators' disagreement: the content error a held-out check reads (a
      registration fit to one colour is checked against the other). A registration on
      all the pixels fits both colours' content, so its own content error is about
      half of this (if the colours' errors are independent and equal).

    Parameters
    ----------
    folds : list of AdjustedResiduals
        The two folds (:func:`adjust_residuals` of each fold's check), same dates,
        each with its covariance.
    draws, seed : int
        Monte Carlo draws and seed of the noise floor (:func:`noise_floor`).

    Returns
    -------
    dict
        ``adjusted``: an :class:`AdjustedResiduals` of the mean over folds (residual,
        standard error from the checks' bootstrap covariances, per-date residual and
        covariance; its ``chi2_dof`` is the folds' agreement); ``floor``: its
        :func:`noise_floor`; ``fold_chi2_dof``: chi-square per degree of freedom of the
        folds against each other (about 1 when they differ by their bootstrap errors
        alone);
        ``fold_diff``: (time, 2) half the folds' per-date difference (pixels);
        ``fold_diff_max_px``: max over pairs of that difference's length (pixels);
        ``sigma_date_fold_diff_px`` (row, col) and ``floor_fold_diff``: the per-date
        standard error (pixels) and :func:`noise_floor` implied by the spread of that
        difference (what a held-out check of a registration exactly right for its own
        colour would read).

    Raises
    ------
    CoregError
        With other than two folds, folds of different dates, or folds without a
        covariance.
    """
    if len(folds) != 2:
        raise CoregError(f"cross_fit needs the two folds of a checkerboard, got {len(folds)}")
    if any(f.covariance is None for f in folds):
        raise CoregError("a fold without a covariance; compute each fold with adjust_residuals")
    n = folds[0].per_date.shape[0]
    if any(f.per_date.shape != (n, 2) for f in folds):
        raise CoregError(f"folds of different dates: {[f.per_date.shape[0] for f in folds]}")
    k = len(folds)
    per_date = np.mean([f.per_date for f in folds], axis=0)
    # Folds use disjoint pixels for both registration and check: independent errors.
    cov = np.sum([f.covariance for f in folds], axis=0) / k**2
    pairs = np.array(list(itertools.combinations(range(n), 2)), int)
    res = per_date[pairs[:, 1]] - per_date[pairs[:, 0]]
    err = np.stack([np.sqrt(cv[pairs[:, 0], pairs[:, 0]] + cv[pairs[:, 1], pairs[:, 1]]
                            - 2 * cv[pairs[:, 0], pairs[:, 1]]) for cv in cov], axis=1)
    # Agreement of the folds: chi-square of each fold against their precision-weighted
    # mean (n - 1 degrees of freedom per component). The estimate itself is
    # the plain mean: only equal weights cancel the colours' disagreement.
    chi2 = 0.0
    for c in range(2):
        inv = [np.linalg.inv(f.covariance[c][1:, 1:]) for f in folds]
        gls = np.linalg.solve(np.sum(inv, axis=0), np.sum([w @ f.per_date[1:, c] for w, f in zip(inv, folds)], axis=0))
        chi2 += float(sum((f.per_date[1:, c] - gls) @ w @ (f.per_date[1:, c] - gls) for w, f in zip(inv, folds)))
    dof = 2 * (k - 1) * (n - 1)
    adjusted = AdjustedResiduals(pairs, res, err, np.hypot(res[:, 0], res[:, 1]), per_date, chi2 / max(dof, 1), cov)
    diff = 0.5 * (folds[0].per_date - folds[1].per_date)
    dd = diff[pairs[:, 1]] - diff[pairs[:, 0]]
    # Spread of the half-difference over pairs: per-date errors, date-specific ones
    # included (the bootstrap covariance has only the check's window sampling).
    sigma = np.sqrt(np.mean(dd**2, axis=0) / 2.0)
    cov_d = np.zeros((2, n, n))
    for c in range(2):
        cov_d[c, 1:, 1:] = sigma[c] ** 2 * (np.eye(n - 1) + 1.0)
    floor_d = noise_floor(AdjustedResiduals(pairs, None, None, None, np.zeros((n, 2)), math.nan, cov_d),
                          draws=draws, seed=seed)
    return {"adjusted": adjusted, "floor": noise_floor(adjusted, draws=draws, seed=seed),
            "floor_fold_diff": floor_d, "sigma_date_fold_diff_px": sigma.tolist(),
            "fold_chi2_dof": chi2 / max(dof, 1), "fold_diff": diff,
            "fold_diff_max_px": float(np.hypot(dd[:, 0], dd[:, 1]).max())}
