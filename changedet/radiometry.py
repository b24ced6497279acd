"""Relative radiometric normalisation of one acquisition onto a reference.

Two dates of the same place differ radiometrically (sun angle, atmosphere, sensor
calibration) even where nothing changed; a per-band linear map ``ref ~ gain * mov +
offset`` removes most of that. The map must be fitted only on pixels that did not
change (pseudo-invariant features, PIFs), otherwise the change itself is "normalised
away".

PIF selection:

* ``"irmad"`` (two or more bands): IR-MAD no-change probability
  (:func:`changedet.kernels.irmad.irmad`) above ``p_nochange``; IR-MAD is itself
  invariant to linear radiometric differences, so it finds unchanged pixels before the
  normalisation is known (Canty & Nielsen 2008).
* ``"robust"`` (any band count): an iteratively trimmed fit per band — fit on all
  valid pixels, drop pixels whose residual exceeds ``k`` robust standard deviations in
  any band, refit — which converges on the majority of unchanged pixels as long as
  changes cover well under half of the image.

Fit: orthogonal (total least squares) regression per band, as Canty & Nielsen use,
because both images carry noise (ordinary least squares would shrink the gain),
refitted once without the pixels it fits worst.

``method="histogram"`` instead maps each band's quantiles onto the reference's
(histogram matching): no linearity assumption, but changed pixels do bend the map.

Reference: M. J. Canty, A. A. Nielsen, "Automatic radiometric normalization of
multitemporal satellite imagery with the iteratively re-weighted MAD transformation",
Remote Sensing of Environment 112(3), 2008.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from changedet.errors import ChangedetError

__all__ = ["NormalisationResult", "RadiometryError", "normalise", "fit_linear"]

_MIN_PIF = 50  # fewest invariant pixels for which a per-band fit is trusted


class RadiometryError(ChangedetError):
    """Inputs to radiometric normalisation are unusable (grids, bands, too few pixels)."""


@dataclass(frozen=True)
class NormalisationResult:
    """Outcome of :func:`normalise`.

    Attributes
    ----------
    method : str
        ``"pif"`` or ``"histogram"``.
    bands : tuple of str
        Band names, in order.
    gain, offset : tuple of float
        Per band, ``normalised = gain * moving + offset`` (``pif``; NaN for histogram).
    n_pif : int
        Pseudo-invariant pixels used for the fit (``pif``); valid pixels (histogram).
    pif_fraction : float
        ``n_pif`` over the valid overlapping pixels.
    rmse : tuple of float
        Per band RMS difference between normalised moving and reference on the PIFs
        (units of the reference).
    selection : str
        How the PIFs were chosen: ``"irmad"``, ``"robust"`` or ``""`` (histogram).
    """

    method: str
    bands: tuple
    gain: tuple
    offset: tuple
    n_pif: int
    pif_fraction: float
    rmse: tuple
    selection: str


def fit_linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Orthogonal-regression line ``y = gain * x + offset`` through paired samples.

    Parameters
    ----------
    x, y : numpy.ndarray
        1-D samples (moving, reference), finite.

    Returns
    -------
    gain, offset : float
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    mx, my = x.mean(), y.mean()
    sxx = float(((x - mx) ** 2).mean())
    syy = float(((y - my) ** 2).mean())
    sxy = float(((x - mx) * (y - my)).mean())
    if sxx <= 0:
        raise RadiometryError("a band of the moving image is constant on the invariant pixels; it cannot be fitted")
    if abs(sxy) < 1e-12 * math.sqrt(sxx * max(syy, 1e-300)):
        gain = 0.0
    else:
        # Major axis of the (x, y) scatter: minimises perpendicular distances.
        gain = (syy - sxx + math.sqrt((syy - sxx) ** 2 + 4 * sxy**2)) / (2 * sxy)
    return float(gain), float(my - gain * mx)


def _as_bands(da, what: str) -> xr.DataArray:
    if not isinstance(da, xr.DataArray):
        raise RadiometryError(f"{what} must be an xarray.DataArray (band, y, x) or (y, x), got {type(da).__name__}")
    if da.ndim == 2:
        da = da.expand_dims(band=["b1"])
    if da.ndim != 3 or da.dims[-2:] != ("y", "x"):
        raise RadiometryError(f"{what} has dims {da.dims}; expected (band, y, x) or (y, x)")
    return da


def _robust_pifs(mov: np.ndarray, ref: np.ndarray, valid: np.ndarray, *, k: float = 2.5,
                 iterations: int = 8) -> np.ndarray:
    """Iteratively trimmed per-band fits: pixels that every band's line explains."""
    keep = valid.copy()
    for _ in range(iterations):
        bad = np.zeros_like(keep)
        for b in range(mov.shape[0]):
            x, y = mov[b][keep], ref[b][keep]
            if x.size < _MIN_PIF:
                return keep
            gain, offset = fit_linear(x, y)
            resid = ref[b] - (gain * mov[b] + offset)
            r = resid[keep]
            sigma = 1.4826 * float(np.median(np.abs(r - np.median(r))))
            if sigma > 0:
                bad |= np.abs(resid - np.median(r)) > k * sigma
        new = valid & ~bad
        if (new == keep).all():
            break
        keep = new
    return keep


def normalise(
    moving: xr.DataArray,
    reference: xr.DataArray,
    *,
    method: str = "pif",
    selection: str = "auto",
    valid: xr.DataArray | np.ndarray | None = None,
    p_nochange: float = 0.9,
) -> tuple[xr.DataArray, NormalisationResult]:
    """Normalise ``moving`` radiometrically onto ``reference`` (same grid, same bands).

    Parameters
    ----------
    moving, reference : xarray.DataArray
        (band, y, x) or (y, x) images on the same grid (co-register first) with the
        same bands; NaN marks nodata. Any units (reflectance, DN).
    method : {"pif", "histogram"}
        ``pif``: per-band linear fit on pseudo-invariant pixels; ``histogram``: per-band
        quantile (histogram) matching over the valid pixels.
    selection : {"auto", "irmad", "robust"}
        PIF selection for ``pif``; ``auto`` is IR-MAD with two or more bands, else
        robust.
    valid : boolean array or DataArray (y, x), optional
        Pixels usable in both (e.g. cloud-free); combined with the finite masks.
    p_nochange : float
        IR-MAD no-change probability above which a pixel is invariant.

    Returns
    -------
    normalised : xarray.DataArray
        ``moving`` with each band mapped onto the reference's radiometry (float64,
        coordinates and attrs kept, NaN where ``moving`` is NaN).
    result : NormalisationResult
        Gains, offsets, PIF count and fit residuals.

    Raises
    ------
    RadiometryError
        Different shapes or band names, an unknown method, or fewer than 50
        invariant / valid pixels.
    """
    if method not in ("pif", "histogram"):
        raise RadiometryError(f"method {method!r} is not 'pif' or 'histogram'")
    if selection not in ("auto", "irmad", "robust"):
        raise RadiometryError(f"selection {selection!r} is not 'auto', 'irmad' or 'robust'")
    mov_da = _as_bands(moving, "moving")
    ref_da = _as_bands(reference, "reference")
    if mov_da.shape != ref_da.shape:
        raise RadiometryError(
            f"moving {mov_da.shape} and reference {ref_da.shape} differ in shape (band, y, x); put both on the "
            "same grid with the same bands first (changedet.coreg.coregister)"
        )
    if "band" in mov_da.coords and "band" in ref_da.coords:
        mb = [str(b) for b in mov_da["band"].values]
        rb = [str(b) for b in ref_da["band"].values]
        if mb != rb:
            raise RadiometryError(f"moving bands {mb} differ from reference bands {rb}; select the same bands")
    names = tuple(str(b) for b in (mov_da["band"].values if "band" in mov_da.coords else range(mov_da.shape[0])))
    mov = np.asarray(mov_da.values, dtype="float64")
    ref = np.asarray(ref_da.values, dtype="float64")
    ok = np.isfinite(mov).all(axis=0) & np.isfinite(ref).all(axis=0)
    if valid is not None:
        vm = np.asarray(valid.values if isinstance(valid, xr.DataArray) else valid, dtype=bool)
        if vm.shape != ok.shape:
            raise RadiometryError(f"valid mask shape {vm.shape} does not match the images {ok.shape}")
        ok &= vm
    n_ok = int(ok.sum())
    if n_ok < _MIN_PIF:
        raise RadiometryError(
            f"only {n_ok} valid overlapping pixels (need {_MIN_PIF}); use a less cloudy acquisition or a larger area"
        )
    nb = mov.shape[0]
    out = np.full(mov.shape, np.nan)

    if method == "histogram":
        gains, offsets, rmses = [], [], []
        for b in range(nb):
            src = mov[b][ok]
            qs = np.linspace(0, 1, 1025)
            mq = np.quantile(src, qs)
            rq = np.quantile(ref[b][ok], qs)
            # Ties in the moving quantiles (flat histograms) would make interp ill-defined.
            mq, idx = np.unique(mq, return_index=True)
            band = np.where(np.isfinite(mov[b]), np.interp(mov[b], mq, rq[idx]), np.nan)
            out[b] = band
            gains.append(float("nan"))
            offsets.append(float("nan"))
            rmses.append(float(np.sqrt(np.mean((band[ok] - ref[b][ok]) ** 2))))
        res = NormalisationResult("histogram", names, tuple(gains), tuple(offsets), n_ok, 1.0, tuple(rmses), "")
        return mov_da.copy(data=out).squeeze("band", drop=True) if moving.ndim == 2 else mov_da.copy(data=out), res

    sel = selection if selection != "auto" else ("irmad" if nb >= 2 else "robust")
    if sel == "irmad":
        if nb < 2:
            raise RadiometryError("IR-MAD needs at least 2 bands; use selection='robust' for a single band")
        from changedet.kernels.irmad import irmad

        ref_m = ref_da.copy(data=np.where(ok, ref, np.nan))
        mov_m = mov_da.copy(data=np.where(ok, mov, np.nan))
        p = np.asarray(irmad(ref_m, mov_m).p_nochange.values)
        pif = ok & (np.nan_to_num(p, nan=0.0) > p_nochange)
    else:
        pif = _robust_pifs(mov, ref, ok)
    if int(pif.sum()) < _MIN_PIF:
        raise RadiometryError(
            f"only {int(pif.sum())} pseudo-invariant pixels found with selection={sel!r} (need {_MIN_PIF}); "
            "the images may be almost entirely changed, or try method='histogram'"
        )
    gains, offsets, rmses = [], [], []
    for b in range(nb):
        x, y = mov[b][pif], ref[b][pif]
        gain, offset = fit_linear(x, y)
        # One refit without the worst-fitting PIFs (residual > 3 robust sd).
        r = y - (gain * x + offset)
        sigma = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        if sigma > 0:
            inl = np.abs(r - np.median(r)) <= 3 * sigma
            if inl.sum() >= _MIN_PIF:
                gain, offset = fit_linear(x[inl], y[inl])
        out[b] = gain * mov[b] + offset
        gains.append(gain)
        offsets.append(offset)
        rmses.append(float(np.sqrt(np.mean((out[b][pif] - y) ** 2))))
    res = NormalisationResult("pif", names, tuple(gains), tuple(offsets), int(pif.sum()),
                              float(pif.sum()) / n_ok, tuple(rmses), sel)
    normalised = mov_da.copy(data=out)
    if moving.ndim == 2:
        normalised = normalised.squeeze("band", drop=True)
    return normalised, res
