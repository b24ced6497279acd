"""IR-MAD: iteratively reweighted multivariate alteration detection (Nielsen 2007).

MAD finds pairs of linear band combinations ``U = a^T X`` (before) and ``V = b^T Y``
(after) that are maximally correlated (canonical correlation analysis); their
differences ``MAD_i = U_i - V_i`` are uncorrelated change variates, insensitive to any
linear radiometric difference between the dates (gain, offset, haze, a different
sensor calibration). Standardised and squared, their sum is chi-square distributed with
``B`` (number of bands) degrees of freedom for a no-change pixel, so

``p_nochange = 1 - F_chi2(sum_i (MAD_i / sigma_i)^2; B)``

is a per-pixel probability of no change. IR-MAD repeats the CCA with every pixel
weighted by its ``p_nochange``, so that changed pixels stop influencing the statistics
that define "no change"; a few iterations converge. The ``sigma_i`` behind the weights
are re-estimated in every iteration from the pixels below the 99 % chi-square quantile
(consistency-corrected), not taken as the weighted ``sqrt(2 (1 - rho_i))``: on
heavy-tailed no-change (urban scenes) the latter feeds back into ever smaller weights and
the iteration collapses onto a handful of pixels.

Global statistics (weighted sums, means and cross-products of all bands of both
dates) are computed as blockwise partial sums reduced with dask: one pass over the
data per iteration, never more than a block in memory. Numpy input is one block.

Reference: A. A. Nielsen, "The regularized iteratively reweighted MAD method for
change detection in multi- and hyperspectral data", IEEE TIP 16(2), 2007.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from changedet.kernels.change import KernelError, _as_dataarray, _check_same_grid, _finish

__all__ = ["ConstantBandError", "IRMADResult", "irmad"]

#: A band whose variance over the (weighted) valid pixels is below this fraction of its
#: squared mean (plus 1e-12 for a band near 0) has no spread: its standard deviation is
#: then under 3e-5 of its level, below one quantisation step of 12-16 bit data and of
#: reflectance stored to 1e-4, i.e. a fill, saturated or synthetic band. The canonical
#: correlation of such a band is undefined (its covariance block is singular) and the
#: float64 rounding of the variance (about 1e-16 of the squared mean) stays far below.
CONSTANT_BAND_REL_VAR = 1e-9


class ConstantBandError(KernelError):
    """A band of one date has no spread over the valid pixels (IR-MAD cannot use it).

    Attributes
    ----------
    date : {"before", "after"}
    index : int
        0-based index of the first constant band.
    band : str or None
        Its name when known.
    value : float
        Its (weighted) mean, in input units.
    indices, bands : tuple
        Every constant band of that date (0-based indexes; names when known).
    """

    def __init__(self, message: str, *, date: str, index: int, band: str | None = None, value: float = float("nan"),
                 indices: tuple[int, ...] = (), bands: tuple[str, ...] = ()):
        super().__init__(message)
        self.date, self.index, self.band, self.value = date, index, band, value
        self.indices, self.bands = tuple(indices) or (index,), tuple(bands)

    def __reduce__(self):
        # Keyword-only fields: the default pickling (args only) could not rebuild it, and
        # a Dask worker sends its errors pickled.
        return (_rebuild_constant_band_error, (str(self), self.date, self.index, self.band, self.value,
                                               self.indices, self.bands))


def _rebuild_constant_band_error(message, date, index, band, value, indices, bands):
    return ConstantBandError(message, date=date, index=index, band=band, value=value, indices=indices, bands=bands)


@dataclass(frozen=True)
class IRMADResult:
    """IR-MAD output.

    Attributes
    ----------
    mad : xarray.DataArray
        (mad, y, x) MAD variates, in order of *decreasing* variance (MAD1 holds the most
        change), in the units of the standardised canonical variates (no-change
        standard deviation ``sigma_i``). float32. Lazy for dask input.
    chi2 : xarray.DataArray
        (y, x) ``sum_i (MAD_i / sigma_i)^2``, chi-square with ``bands`` degrees of freedom
        under no change. NaN where any band of either date is NaN.
    p_nochange : xarray.DataArray
        (y, x) probability of no change in [0, 1]; NaN where ``chi2`` is NaN.
    rho : numpy.ndarray
        Canonical correlations, ascending (paired with ``mad``).
    sigma : numpy.ndarray
        No-change standard deviation of each MAD variate, estimated from the pixels
        below the 99 % chi-square quantile with a consistency correction (the IR-MAD
        weighted estimate ``sqrt(2 (1 - rho))`` understates it).
    iterations : int
        Reweighting iterations run.
    converged : bool
        Whether the largest change of ``rho`` fell below ``tol``.
    bands : int
        Degrees of freedom of ``chi2``.
    """

    mad: xr.DataArray
    chi2: xr.DataArray
    p_nochange: xr.DataArray
    rho: np.ndarray
    sigma: np.ndarray
    iterations: int
    converged: bool
    bands: int


def _chi2_sf(x: np.ndarray, dof: int) -> np.ndarray:
    from scipy.special import gammaincc

    return gammaincc(0.5 * dof, 0.5 * np.asarray(x, dtype="float64"))


#: OpenBLAS runs a GEMM single-threaded when m * n * k is below 4 * 65536; batches are
#: sized to stay under that. Threaded BLAS inside dask worker threads oversubscribes the
#: cores (measured 60x slower on a busy 2-core machine) and makes the summation order
#: depend on the thread count.
_GEMM_SINGLE = 4 * 65536 - 1


def _cols_times(a: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``a.T @ z`` for a small (k, m) ``a`` and a wide (k, n) ``z``, in single-thread batches."""
    k, m = a.shape
    step = max(_GEMM_SINGLE // max(k * m, 1), 1)
    out = np.empty((m, z.shape[1]))
    at = np.ascontiguousarray(a.T)
    for s in range(0, z.shape[1], step):
        out[:, s : s + step] = at @ z[:, s : s + step]
    return out


def _gram(zw: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``zw @ z.T`` for (k, n) inputs, summed over single-thread batches of pixels."""
    k = z.shape[0]
    step = max(_GEMM_SINGLE // max(k * k, 1), 1)
    out = np.zeros((k, k))
    for s in range(0, z.shape[1], step):
        out += zw[:, s : s + step] @ z[:, s : s + step].T
    return out


def _project(z: np.ndarray, params) -> tuple[np.ndarray, np.ndarray]:
    """MAD variates and chi2 of ``z`` (2B, n) float64 with the given transformation."""
    mean, a, b, sigma = params
    nb = a.shape[0]
    zc = z - mean[:, None]
    mad = _cols_times(a, zc[:nb]) - _cols_times(b, zc[nb:])
    chi2 = np.sum((mad / sigma[:, None]) ** 2, axis=0)
    return mad, chi2


def _block_sums(block: np.ndarray, params, nb: int) -> np.ndarray:
    """Partial weighted sums of one (2B, rows, cols) block: [W, sum w z, sum w z z^T]."""
    z = np.asarray(block, dtype="float64").reshape(block.shape[0], -1)
    ok = np.all(np.isfinite(z), axis=0)
    if not ok.all():
        z = z[:, ok]
    if params is None:
        w = np.ones(z.shape[1])
    else:
        _, chi2 = _project(z, params)
        w = _chi2_sf(chi2, nb)
    k = z.shape[0]
    out = np.empty(1 + k + k * k)
    out[0] = w.sum()
    out[1 : 1 + k] = np.einsum("in,n->i", z, w)
    out[1 + k :] = _gram(z * w, z).ravel()
    return out


def _solve(sums: np.ndarray, nb: int, ridge: float):
    """CCA from the summed statistics -> (mean, a, b, sigma, rho)."""
    from scipy.linalg import eigh

    k = 2 * nb
    wsum = sums[0]
    if not wsum > k:
        raise KernelError(
            f"IR-MAD needs more valid pixels than 2 x bands ({k}); the pair has {wsum:.0f} "
            "(weighted) valid pixels: check nodata / cloud masks"
        )
    mean = sums[1 : 1 + k] / wsum
    cov = sums[1 + k :].reshape(k, k) / wsum - np.outer(mean, mean)
    cov = 0.5 * (cov + cov.T)
    var = np.diag(cov)
    flat = var <= CONSTANT_BAND_REL_VAR * (mean**2 + 1e-12)
    if flat.any():
        j = int(np.flatnonzero(flat)[0])
        date, idx, half = ("before", j, flat[:nb]) if j < nb else ("after", j - nb, flat[nb:])
        raise ConstantBandError(
            f"irmad: {date} band {idx + 1} is constant over the valid pixels ({mean[j]:.6g} everywhere); "
            "drop the band, or use another method (cva, diff)", date=date, index=idx, value=float(mean[j]),
            indices=tuple(int(i) for i in np.flatnonzero(half)))
    sxx, syy, sxy = cov[:nb, :nb], cov[nb:, nb:], cov[:nb, nb:]
    # A tiny ridge (relative to each band's variance) keeps constant or duplicated bands
    # from making the generalised eigenproblem singular (regularised MAD, Nielsen 2007).
    sxx = sxx + ridge * np.diag(np.maximum(np.diag(sxx), 1e-12))
    syy = syy + ridge * np.diag(np.maximum(np.diag(syy), 1e-12))
    try:
        syy_inv = np.linalg.inv(syy)
        lam, a = eigh(sxy @ syy_inv @ sxy.T, sxx)  # ascending rho^2, a^T Sxx a = 1
    except np.linalg.LinAlgError:
        # Bands with spread that are still linearly dependent beyond what the ridge absorbs.
        raise KernelError("irmad: the band covariance of one date is singular (bands that are exact linear "
                          "combinations of others, e.g. duplicated bands); drop the redundant bands or use "
                          "another method (cva, diff)") from None
    rho = np.sqrt(np.clip(lam, 0.0, 1.0))
    b = syy_inv @ sxy.T @ a
    bnorm = np.sqrt(np.einsum("ij,ik,kj->j", b, syy, b))
    b = b / np.where(bnorm > 0, bnorm, 1.0)
    # Sign convention: each U_i correlates positively with the sum of the before bands,
    # so MAD images keep the same sign meaning from run to run.
    s = np.sign(np.sum(sxx @ a, axis=0))
    s[s == 0] = 1.0
    a = a * s
    b = b * s
    sigma = np.sqrt(np.maximum(2.0 * (1.0 - rho), 1e-12))
    return mean, a, b, sigma, rho


def _block_calib(block: np.ndarray, params, nb: int, q: float) -> np.ndarray:
    """Partial sums for the MAD no-change variances: [n, sum mad_i^2] over chi2 < q."""
    z = np.asarray(block, dtype="float64").reshape(block.shape[0], -1)
    ok = np.all(np.isfinite(z), axis=0)
    if not ok.all():
        z = z[:, ok]
    mad, chi2 = _project(z, params)
    keep = chi2 < q
    out = np.empty(1 + nb)
    out[0] = keep.sum()
    out[1:] = np.sum(mad[:, keep] ** 2, axis=1)
    return out


def _reduce(z, params, nb: int, func=None, size: int | None = None, **kw) -> np.ndarray:
    import dask.array as da

    func = func or _block_sums
    if isinstance(z, da.Array):
        k = z.shape[0]
        size = size or 1 + k + k * k
        parts = z.map_blocks(
            lambda blk: func(blk, params, nb, **kw)[:, None, None],
            chunks=((size,), (1,) * z.numblocks[1], (1,) * z.numblocks[2]),
            dtype="float64",
        )
        return np.asarray(parts.sum(axis=(1, 2)).compute())
    return func(z, params, nb, **kw)


def _calibrate(z, params, nb: int, *, alpha: float = 0.01, passes: int = 4):
    """Re-estimate the no-change spread of each MAD variate from the data.

    The IR-MAD weights are smallest for the pixels furthest from no change, so the
    weighted variances understate the spread of real no-change pixels (and the chi2 of
    a no-change pixel comes out too large). Here the variance is taken over the pixels
    with ``chi2 < q`` (q the ``1 - alpha`` chi-square quantile) and divided by the
    expected shrinkage of that truncation for Gaussian no-change,
    ``F_{B+2}(q) / F_B(q)``, so the result is consistent; a few fixed-point passes.
    """
    from scipy.special import gammainc, gammainccinv

    # scipy.special rather than scipy.stats: the latter costs seconds to import.
    q = float(2.0 * gammainccinv(0.5 * nb, alpha))
    shrink = float(gammainc(0.5 * (nb + 2), 0.5 * q) / gammainc(0.5 * nb, 0.5 * q))
    mean, a, b, sigma = params
    for _ in range(passes):
        s = _reduce(z, (mean, a, b, sigma), nb, _block_calib, 1 + nb, q=q)
        if s[0] <= nb:
            break
        new = np.sqrt(np.maximum(s[1:] / s[0] / shrink, 1e-24))
        done = np.max(np.abs(new / sigma - 1.0)) < 1e-3
        sigma = new
        if done:
            break
    return mean, a, b, sigma


def _outputs_np(block: np.ndarray, params, nb: int):
    """(2B, r, c) -> (B + 2, r, c) float32: MAD variates, chi2, p_nochange."""
    shape = block.shape[1:]
    z = np.asarray(block, dtype="float64").reshape(block.shape[0], -1)
    mad, chi2 = _project(z, params)
    p = _chi2_sf(chi2, nb)
    bad = ~np.all(np.isfinite(z), axis=0)
    out = np.concatenate([mad, chi2[None], p[None]], axis=0)
    out[:, bad] = np.nan
    return out.reshape((nb + 2,) + shape).astype("float32")


def irmad(
    before: xr.DataArray,
    after: xr.DataArray,
    *,
    max_iter: int = 30,
    tol: float = 1e-3,
    ridge: float = 1e-6,
) -> IRMADResult:
    """Iteratively reweighted MAD change detection of two multi-band images.

    Parameters
    ----------
    before, after : xarray.DataArray
        (band, y, x) images on the same grid with the same bands (any dtype; uint16 is
        promoted to float64 for the statistics, so nothing overflows). NaN marks nodata.
        Dask-backed inputs stay lazy except for the global statistics (one dask
        reduction per iteration).
    max_iter : int, optional
        Maximum reweighting iterations (default 30; 0 = plain MAD).
    tol : float, optional
        Stop when no canonical correlation changes by more than this (default 1e-3).
    ridge : float, optional
        Relative ridge added to the covariance diagonals (default 1e-6).

    Returns
    -------
    IRMADResult
        MAD variates, chi-square statistic and no-change probability maps (lazy for dask
        input) plus the canonical correlations. Threshold ``chi2`` with
        :func:`changedet.kernels.threshold.chi2_threshold` (``bands`` degrees of freedom).

    Raises
    ------
    KernelError
        If there is no band dimension, fewer than two bands or too few valid pixels.
    ConstantBandError
        A band of either date has no spread over the valid pixels (a KernelError).
    GridError
        If the images are on different grids.
    """
    b, _ = _as_dataarray(before, "before")
    a, _ = _as_dataarray(after, "after")
    for name, arr in (("before", b), ("after", a)):
        if arr.dims[-2:] != ("y", "x") or arr.ndim != 3:
            raise KernelError(f"{name} has dims {arr.dims}; irmad needs (band, y, x)")
    a = _check_same_grid(b, a, "before", "after")
    nb = b.shape[0]
    if nb < 2:
        raise KernelError(f"irmad needs at least 2 bands (got {nb}); use band_diff for a single band")
    if a.shape[0] != nb:
        raise KernelError(f"before has {nb} bands but after has {a.shape[0]}; select the same bands in both")
    if int(max_iter) < 0:
        raise KernelError(f"max_iter={max_iter!r} must be >= 0")

    lazy = b.chunks is not None or a.chunks is not None
    if lazy:
        import dask.array as da

        bd = b.data if b.chunks is not None else da.from_array(b.data, chunks=(nb, -1, -1))
        ad = a.data if a.chunks is not None else da.from_array(a.data, chunks=(nb, -1, -1))
        ad = ad.rechunk((nb,) + bd.chunks[1:])
        z = da.concatenate([bd.rechunk((nb,) + bd.chunks[1:]), ad], axis=0).rechunk({0: -1})
    else:
        z = np.concatenate([np.asarray(b.data), np.asarray(a.data)], axis=0)
    # Statistics passes read only the valid pixels; numpy input is filtered once here.
    zs = z
    if not lazy:
        zs = z.reshape(z.shape[0], -1).astype("float64")
        zs = zs[:, np.all(np.isfinite(zs), axis=0)]

    params = None
    rho_prev = None
    it = 0
    converged = False
    for it in range(int(max_iter) + 1):
        sums = _reduce(zs, params, nb)
        try:
            mean, av, bv, sigma, rho = _solve(sums, nb, float(ridge))
        except ConstantBandError as exc:
            # Name the band as the caller knows it.
            arr = b if exc.date == "before" else a
            names = [str(v) for v in arr["band"].values] if "band" in arr.coords else []
            band = names[exc.index] if exc.index < len(names) else None
            flat = tuple(names[i] for i in exc.indices if i < len(names))
            label = f"band {exc.index + 1}" + (f" ({band!r})" if band else "")
            raise ConstantBandError(
                f"irmad: the {exc.date} image's {label} is constant over the valid pixels ({exc.value:.6g} "
                "everywhere); IR-MAD's canonical correlations are undefined for it: drop the band, or use "
                "another method (cva, diff)", date=exc.date, index=exc.index, band=band, value=exc.value,
                indices=exc.indices, bands=flat) from None
        # The weights of the next pass come from the *calibrated* no-change spread, not
        # from the weighted sqrt(2 (1 - rho)): with heavy-tailed no-change (cities,
        # 20 m bands resampled to 10 m, seasons) the weighted spread understates it,
        # chi2 grows, the weights shrink, the spread shrinks again, and the iteration
        # collapses onto a few thousand pixels (OSCD Bercy: weight sum 142 200 -> 5 400
        # in 11 iterations, median chi2 1 671 for 10 bands). Calibrated, it converges.
        params = _calibrate(zs, (mean, av, bv, sigma), nb, passes=2)
        if rho_prev is not None and np.max(np.abs(rho - rho_prev)) < tol:
            converged = True
            break
        rho_prev = rho

    params = _calibrate(zs, params, nb)
    sigma = params[3]
    if lazy:
        out = z.map_blocks(
            _outputs_np, params, nb, chunks=((nb + 2,),) + z.chunks[1:], dtype="float32"
        )
    else:
        out = _outputs_np(z, params, nb)
    coords = {k: v for k, v in b.coords.items() if k != "band" and "band" not in v.dims}
    full = xr.DataArray(out, dims=("mad", "y", "x"), coords=coords)
    mad = full.isel(mad=slice(0, nb)).assign_coords(mad=[f"MAD{i + 1}" for i in range(nb)])
    chi2 = _finish(full.isel(mad=nb, drop=True), b, "chi2")
    p = _finish(full.isel(mad=nb + 1, drop=True), b, "p_nochange")
    return IRMADResult(
        mad=_finish(mad, b, "mad"),
        chi2=chi2,
        p_nochange=p,
        rho=rho,
        sigma=sigma,
        iterations=it,
        converged=converged,
        bands=nb,
    )
