"""Co-registration of an acquisition onto the AOI's reference grid.

Misregistration between two dates shows up as false change along every edge, so each
acquisition is brought onto the reference grid (reprojected if needed) and then shifted
by the sub-pixel translation that best aligns its content with the reference image.

Method (global translation, one match per call):

1. Both images are turned into *gradient vector* images ``gx + i*gy`` (Sobel of a
   Gaussian-smoothed image, sigma 1 px). Gradients are insensitive to the radiometric
   differences between dates (gain, offset, haze); the vector form keeps edge
   orientation, which made it more accurate than the gradient magnitude in our
   measurements (see ``tests/test_coreg.py``). Gradient magnitudes are clipped at their
   90th percentile so that a few very strong edges of *changed* objects (new buildings,
   cloud edges, clear-cuts) cannot dominate the correlation.
2. Invalid pixels (NaN or ``~valid``) are filled with the mean before filtering, the
   filter halo around them is then zeroed, and the valid area is feathered and
   multiplied by a Tukey window, so that neither the image border nor mask edges
   produce a spurious correlation peak.
3. Integer stage: the phase-normalised cross-power surface gives the integer shift
   (optionally restricted to ``max_shift_px``) and the reliability, from the ratio of
   the highest peak to the highest peak elsewhere.
4. Sub-pixel stage: both images are cropped to their common footprint at that integer
   offset (so the common window/mask envelope cannot pull the estimate towards zero
   shift) and the maximum of the *plain* (un-normalised) cross-correlation of the
   gradient images is found by Newton's method on its Fourier series, started at its
   integer maximum (:func:`_newton_peak`; the same objective as
   ``skimage.registration.phase_cross_correlation(normalization=None)`` without the
   upsampling grid). Phase normalisation weights every frequency equally and comes out
   ~2 % short on spline-resampled shifts (``shared/NOTES.md``); the un-normalised
   correlation of smoothed gradients weights the mid frequencies where resampling is
   accurate.

Local mode (:func:`estimate_local`, ``coregister(..., local=True)``): the same two
stages on a grid of windows, all windows batched through one set of FFTs (the surfaces
a few windows at a time, in cache-sized buffers); a window
counts as a tie point when its peak ratio is above noise and its edges are not all
parallel (structure-tensor coherence, the aperture problem); tie points inconsistent
with a robust affine fit of the others are rejected (residual beyond 3 robust standard
deviations, 0.25-1.5 px); an affine + thin-plate-spline field fitted to the survivors
(:func:`fit_warp`) is applied with ``map_coordinates`` (:func:`apply_warp`).

Global mode from files (:func:`coregister_files`, ``changedet coregister --window N``):
AROSICS' task, one window at the centre of the overlap, read alone from each file
(rasterio windowed reads on the shared pixel lattice, the moving one with a margin for
re-cutting at the integer shift), estimated and scored by :func:`estimate_window` with
the same two stages; the similarity after is taken on the moving gradient resampled at
the shift. Files on different lattices go through :func:`coregister` on whole images.
That path is kept lean because it is the one timed against AROSICS: a separable
gradient on the window interior (:func:`_window_gradient`), per-thread work buffers
reused between calls (:func:`_scratch`: re-faulting freed heap pages cost as much CPU
as the arithmetic), in-place FFTs, a raw read with the nodata test done here when the
file has no mask band, and one GDAL environment without directory listing. Once a
process has matched a few windows, the gradient, clip/taper and resampling passes run as
numba loops (:func:`_kernels`) that give the numpy code's results bit for bit.

Stack mode (:func:`coregister_stack`): every date of a (time, band, y, x) cube onto the
reference, one Dask task per date, the result of each written into the cube's
provenance (``Cube.annotate``).

Sign convention: every shift returned here is the translation that moves the MOVING
image's content onto the REFERENCE: ``apply_shift(moving, row, col)`` aligns it. Rows
are positive down and columns positive right; in map units x is positive east and y
positive north (``shift_y_m = -shift_row_px * |yres|`` on north-up grids). This is the
same convention as AROSICS' ``x_shift_map``/``y_shift_map`` (the correction added to
the target's geotransform origin).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import xarray as xr
from scipy import fft as sfft
from scipy import ndimage

from changedet.change import CLASS_BANDS
from changedet.errors import CoregError, GridError
from changedet.grid import GridSpec
from changedet.threads import cpu_budget

__all__ = [
    "CoregResult",
    "MIN_VALID_PIXELS",
    "MIN_VALID_FRACTION",
    "TiePoints",
    "apply_result",
    "apply_shift",
    "apply_warp",
    "coregister",
    "coregister_files",
    "coregister_stack",
    "estimate_window",
    "estimate_local",
    "estimate_shift",
    "fit_warp",
    "provenance_fields",
    "solve_network",
]

#: Fewest valid overlapping pixels for which a shift is estimated at all.
MIN_VALID_PIXELS = 1000
#: Smallest valid fraction of the reference grid for :func:`coregister`.
MIN_VALID_FRACTION = 0.10

# Pre-filter parameters (pixels). Sigma 1 suppresses pixel noise and the high
# frequencies where resampling kernels distort phase; the clip percentile bounds the
# weight of individual strong edges (robustness against changed areas).
_SMOOTH_SIGMA = 1.0
_CLIP_PERCENTILE = 90.0
_FEATHER_SIGMA = 2.0
_TUKEY_ALPHA = 0.25
# Reliability = clip((peak_ratio - _RATIO_NOISE) / (_RATIO_GOOD - _RATIO_NOISE), 0, 1).
# Measured peak ratios (phase surface, highest / highest outside a 5x5 neighbourhood):
# pure noise and unrelated images 1.00-1.16; genuinely shifted pairs 7-32 (synthetic
# with 30 % changed content) and 6.9-14 on the real Sentinel-2 pair; a cloud-covered
# real window 1.07.
_RATIO_NOISE = 1.5
_RATIO_GOOD = 4.0
_PEAK_EXCLUDE = 2  # half-size of the neighbourhood excluded around the main peak
# Threads per FFT: window stacks and whole frames split well over the cores (scipy.fft
# releases the GIL), and a 2-core machine already halves the FFT wall time; but never
# more than the thread budget (a 1-thread Dask worker is one core: changedet.threads).

# Band names (case-insensitive) preferred for the estimate, best first: NIR has the
# strongest field/forest contrast and suffers least from haze; red is next best.
# ``b4``/``b8`` (NAIP's NIR, Landsat's) count only as real band descriptions: ``b<n>`` at
# band position n is also the name every undescribed band gets (changedet.io.band_names),
# and an RGBA file's alpha would then pass for "b4".
_PREFERRED_BANDS = ("nir", "nir08", "b08", "b8", "b8a", "red", "b04", "b4")
# Class bands (cloud mask 0/1, Sentinel-2 scene classification): categories, not
# radiometry. They are resampled with nearest neighbour and never averaged into the
# band mean that is matched (as changedet.sources.local reads them): CLASS_BANDS,
# imported from changedet.change (one definition for every module).


def below_min_reliability(rel: float, min_reliability: float) -> str:
    """Why an estimate is left unapplied: its reliability under the threshold.

    The reliability rounded down (three decimals), the threshold as given, so that
    0.4996 under 0.5 reads "0.499 below min_reliability 0.5", never "0.50 below 0.50".
    """
    shown = math.floor(float(rel) * 1000.0) / 1000.0
    return f"reliability {shown:.3f} below min_reliability {float(min_reliability):g}"


def _is_class_band(name: str) -> bool:
    return str(name).upper() in CLASS_BANDS


def _matchable(names, described=None) -> list[str]:
    """Lower-case band names for the preferred-band choice; "" for an undescribed band's
    generic ``b<n>`` name (``described[i]`` False, or, when unknown, the name is
    ``b<i+1>``), which is no evidence of what the band holds."""
    import re

    out = []
    for i, n in enumerate(names):
        low = str(n).lower()
        generic = re.fullmatch(r"b(\d+)", low) is not None and (
            not described[i] if described is not None else low == f"b{i + 1}")
        out.append("" if generic else low)
    return out


@dataclass(frozen=True)
class CoregResult:
    """Outcome of :func:`coregister`.

    Attributes
    ----------
    shift_row_px, shift_col_px : float
        Shift that moves MOVING onto REFERENCE, in reference pixels (row positive
        down, column positive right).
    shift_x_m, shift_y_m : float
        The same shift in map units of the reference CRS (x positive east, y positive
        north).
    reliability : float
        Confidence in the estimate, 0..1 (below ~0.3 for unrelated images or noise).
    tie_points : int
        Number of windows that supported the estimate (1 for this global match).
    similarity_before, similarity_after : float
        Normalised cross-correlation (-1..1) of the gradient magnitudes of reference
        and moving over their valid overlap, before and after co-registration; *after*
        is measured on the returned image, so it equals *before* when not applied.
    applied : bool
        False when the shift was rejected; the returned image is then unshifted.
    reason : str
        Empty when applied, otherwise why the shift was not applied.
    mode : str
        ``"global"`` (one translation), ``"local"`` (tie-point grid and warp) or
        ``"network"`` (stack mode, one translation per date from all-pairs matches) or
        ``"windows"`` (stack mode, the same network on windows, optionally per band).
    tie_points_total : int
        Windows with enough valid pixels to be measured (local mode; 1 for global).
    residual_rmse_px : float
        Local mode: RMS difference (pixels) between the kept tie-point shifts and the
        fitted warp; NaN for global.
    tie_point_table : tuple of tuple
        Local mode: one ``(row, col, shift_row_px, shift_col_px, reliability, kept)``
        per measured window (row/col of the window centre on the reference grid).
    """

    shift_row_px: float
    shift_col_px: float
    shift_x_m: float
    shift_y_m: float
    reliability: float
    tie_points: int
    similarity_before: float
    similarity_after: float
    applied: bool
    reason: str
    mode: str = "global"
    tie_points_total: int = 1
    residual_rmse_px: float = float("nan")
    tie_point_table: tuple = ()


# -- pre-processing ------------------------------------------------------------------
def _tukey(n: int, alpha: float) -> np.ndarray:
    """``scipy.signal.windows.tukey(n, alpha)`` (symmetric), written out: importing
    ``scipy.signal`` pulls in ``scipy.stats`` and was half of ``changedet coregister``'s
    start-up (4.2 of 8.3 s of import time on the loaded machine)."""
    if n <= 1 or alpha <= 0:
        return np.ones(max(n, 0))
    alpha = min(alpha, 1.0)
    k = np.arange(n, dtype=float)
    width = int(np.floor(alpha * (n - 1) / 2.0))
    w = np.ones(n)
    w[:width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * k[:width + 1] / alpha / (n - 1))))
    w[n - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * k[n - width - 1:] / alpha / (n - 1))))
    return w


@functools.lru_cache(maxsize=32)
def _tukey2d_cached(shape: tuple[int, int]) -> np.ndarray:
    win = np.outer(_tukey(shape[0], _TUKEY_ALPHA), _tukey(shape[1], _TUKEY_ALPHA))
    win = win.astype(np.float32)
    win.flags.writeable = False  # shared between calls
    return win


def _tukey2d(shape: tuple[int, int]) -> np.ndarray:
    """2-D Tukey taper (float32, read-only: it is cached per shape)."""
    return _tukey2d_cached(tuple(int(n) for n in shape))


def _workers(size: int) -> int:
    """FFT threads for an array of ``size`` elements: one below 512 x 512, where thread
    start-up costs more than it saves (and the cores are shared with other work)."""
    return cpu_budget() if size >= 512 * 512 else 1


def _gradient_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(smoothing, derivative) 1-D correlation kernels of Gaussian(sigma) then Sobel.

    The Gaussian is ``ndimage.gaussian_filter``'s (truncated at 4 sigma); composing it
    with Sobel's two arms turns six filter passes into four.
    """
    x = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return np.convolve(g, [1.0, 2.0, 1.0]), np.convolve(g, [-1.0, 0.0, 1.0])


_K_SMOOTH, _K_DIFF = _gradient_kernels(_SMOOTH_SIGMA)
# ndimage.correlate1d sums a kernel that is symmetric (antisymmetric) to within
# DBL_EPSILON in pairs, which its numba replica (_nb_full_gradient_impl) assumes.
_K_PAIRED = bool(np.all(np.abs(_K_SMOOTH - _K_SMOOTH[::-1]) <= np.finfo(float).eps)
                 and np.all(np.abs(_K_DIFF + _K_DIFF[::-1]) <= np.finfo(float).eps))


def _along_rows(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``correlate1d(img, kernel, axis=0)`` run on the transposed copy: filtering along
    the contiguous axis and transposing twice costs half of a strided axis-0 pass."""
    return ndimage.correlate1d(np.ascontiguousarray(img.T), kernel, axis=1, mode="reflect").T


def _gradient(img: np.ndarray, valid: np.ndarray, dtype=np.float32, *,
              mean64: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Complex gradient ``gx + i*gy`` of ``img`` and the mask of pixels it is valid on.

    Sobel of the Gaussian-smoothed image (sigma :data:`_SMOOTH_SIGMA`, reflected at the
    frame edge), computed with the composed separable kernels. Invalid pixels are filled
    with the mean of the valid ones, summed in ``img``'s precision or, with ``mean64``,
    in double precision (as for a float64 ``img``: a float32 frame then gives the same
    numbers as its float64 copy, without the copy).
    """
    all_valid = bool(valid.all())
    if all_valid:
        filled = np.ascontiguousarray(img, dtype=dtype)
    else:
        vals = img[valid]
        # float32 -> float64 is exact, and the copy is contiguous: the same pairwise sum
        # (so the same mean, bit for bit) as on a float64 frame.
        fill = np.asarray(vals, np.float64).mean() if mean64 else vals.mean()
        filled = np.where(valid, img, fill).astype(dtype, copy=False)
    grad = np.empty(filled.shape, np.complex64 if dtype == np.float32 else np.complex128)
    part = np.float32 if grad.dtype == np.complex64 else np.float64
    nb = _kernels() if _K_PAIRED and filled.dtype == part else None
    if nb is not None and min(filled.shape) > _K_SMOOTH.size // 2:
        # The same four passes in one compiled loop, bit for bit (a sixth of the CPU on
        # a 1024 px frame: no transposes, columns filtered a row at a time). In double
        # precision too (the masked refinement's frames): ndimage sums in double either
        # way, and the kernel stores each pass in the output's precision as it does.
        rows = (np.empty(filled.shape, part), np.empty(filled.shape, part))
        nb.full_gradient(np.ascontiguousarray(filled), _K_SMOOTH, _K_DIFF, *rows, grad.view(part))
    else:
        grad.real = _along_rows(ndimage.correlate1d(filled, _K_DIFF, axis=1, mode="reflect"), _K_SMOOTH)
        grad.imag = _along_rows(ndimage.correlate1d(filled, _K_SMOOTH, axis=1, mode="reflect"), _K_DIFF)
    if all_valid:
        return grad, valid
    # The smoothing + Sobel halo around invalid pixels mixes in the fill value.
    halo = 1 + int(math.ceil(3 * _SMOOTH_SIGMA))
    if nb is not None:  # the same mask (boolean: no rounding), a tenth of the CPU
        bad = np.empty(valid.shape, bool)
        nb.dilate(np.ascontiguousarray(~valid), halo, bad, np.empty(valid.shape, bool))
        return grad, np.logical_not(bad, out=bad)
    good = ~ndimage.binary_dilation(~valid, iterations=halo)
    return grad, good


def _erode_cross(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_erosion(mask, iterations=1, border_value=0)`` (3 x 3 cross): with
    the numba kernels, the complement of the cross dilation of the complement, less the
    outer ring (its neighbour beyond the edge counts as False); the same mask."""
    nb = _kernels()
    if nb is None or min(mask.shape) < 3:
        return ndimage.binary_erosion(mask, iterations=1, border_value=0)
    out = np.empty(mask.shape, bool)
    nb.dilate(np.ascontiguousarray(~mask), 1, out, np.empty(mask.shape, bool))
    np.logical_not(out, out=out)
    out[0], out[-1], out[:, 0], out[:, -1] = False, False, False, False
    return out


def _quantile(values: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of ``values`` (nearest rank, one partial sort: a third of
    ``np.percentile``'s cost; one order statistic further is immaterial for a clip level)."""
    flat = values.ravel()
    k = min(int(q / 100.0 * (flat.size - 1) + 0.5), flat.size - 1)
    return _kth(flat, k)


def _kth(flat: np.ndarray, k: int) -> float:
    """``np.partition(flat, k)[k]`` (``flat`` 1-D)."""
    nb = _kernels()
    if nb is not None and flat.dtype in (np.float32, np.float64) and flat.size >= 1024:
        # The same order statistic (a value of the array: no rounding) by radix selection
        # on the float bits, a quarter of the partial sort's CPU; -1 when a value has its
        # sign bit set (bits then do not order as values): the sort decides.
        kth = nb.kth if flat.dtype == np.float32 else nb.kth64
        v = float(kth(np.ascontiguousarray(flat), k))
        if v >= 0:
            return v
    return float(np.partition(flat, k)[k])


def _median(r: np.ndarray) -> float:
    """``np.median`` of the 1-D float64 array ``r``, bit for bit: the middle order
    statistic, or the mean of the two middle ones (their sum halved) for an even count."""
    n = r.size
    if _kernels() is None or n < 1024 or not np.isfinite(r).all():  # (np.median answers NaN on a NaN)
        return float(np.median(r))
    if n % 2:
        return _kth(r, n // 2)
    return float((np.float64(_kth(r, n // 2 - 1)) + np.float64(_kth(r, n // 2))) / 2.0)


def _prepare(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Windowed, clipped, zero-mean gradient image for correlation (zero where invalid)."""
    return _condition(*_gradient(img, valid))


def _condition(grad: np.ndarray, good: np.ndarray) -> np.ndarray:
    """:func:`_prepare` from a gradient image and the mask where it is clean."""
    all_good = bool(good.all())
    if not all_good and good.sum() < 16:
        return np.zeros(grad.shape, dtype=np.complex64)
    mag = np.abs(grad)
    clip = _quantile(mag if all_good else mag[good], _CLIP_PERCENTILE)
    if clip > 0:
        # Keep orientation, cap the weight of strong (possibly changed) edges.
        np.minimum(np.float32(clip) / np.maximum(mag, np.float32(1e-30)), np.float32(1.0), out=mag)
        grad = grad * mag
    else:
        grad = grad.copy()
    grad -= (grad.mean() if all_good else grad[good].mean()).astype(grad.dtype)
    # Single precision throughout (as the local mode): the correlation needs far less
    # than float32's 7 digits, and it halves the cost of every filter and FFT.
    weight = _tukey2d(grad.shape)
    if not all_good:
        # Feather mask edges so they do not act as a common, unshifted feature.
        weight = ndimage.gaussian_filter(good.astype(np.float32), _FEATHER_SIGMA) * good * weight
    grad = grad.astype(np.complex64, copy=False)
    grad *= weight
    return grad


def _crop_slices(shape: tuple[int, int], shift: tuple[int, int]):
    """Index slices of the reference and moving frames where ``mov`` shifted by ``shift`` overlaps."""
    sl_r = tuple(slice(max(0, k), n + min(0, k)) for n, k in zip(shape, shift))
    sl_m = tuple(slice(max(0, -k), n + min(0, -k)) for n, k in zip(shape, shift))
    return sl_r, sl_m


def _gradient_ncc(ref: np.ndarray, mov: np.ndarray, valid: np.ndarray | None = None, *,
                  cache: dict | None = None) -> float:
    """Normalised cross-correlation of gradient magnitudes over the common valid pixels.

    ``cache`` (a dict) keeps the reference gradient between calls with the same mask.
    """
    v = np.isfinite(ref) & np.isfinite(mov)
    if valid is not None:
        v &= valid
    if v.sum() < 16:
        return float("nan")
    if cache is not None and "mask" in cache and np.array_equal(cache["mask"], v):
        ga, good_a = cache["grad"]
    else:
        ga, good_a = _gradient(ref, v)
        if cache is not None:
            cache.update(mask=v, grad=(ga, good_a))
    gb, good_b = _gradient(mov, v)
    return _ncc(ga, gb, good_a & good_b)


def _ncc(ga: np.ndarray, gb: np.ndarray, good: np.ndarray) -> float:
    """NCC of the magnitudes of two gradient images over ``good`` (NaN below 16 pixels)."""
    if good.sum() < 16:
        return float("nan")
    everywhere = bool(good.all())
    a = np.abs(ga if everywhere else ga[good]).astype(np.float64).ravel()
    b = np.abs(gb if everywhere else gb[good]).astype(np.float64).ravel()
    a -= a.mean()
    b -= b.mean()
    # einsum, not np.dot: BLAS dot products may start threads that spin-wait on a busy machine.
    den = math.sqrt(float(np.einsum("i,i->", a, a)) * float(np.einsum("i,i->", b, b)))
    return float(np.einsum("i,i->", a, b) / den) if den > 0 else float("nan")


# -- estimate ------------------------------------------------------------------------
def estimate_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    upsample_factor: int = 100,
    max_shift_px: float | None = None,
) -> tuple[float, float, float]:
    """Estimate the sub-pixel translation that moves ``moving`` onto ``reference``.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        2-D float arrays of the same shape on the same pixel grid; NaN marks invalid
        pixels.
    valid : numpy.ndarray of bool, optional
        Pixels usable in both images (e.g. cloud-free); combined with the finite masks.
    upsample_factor : int
        Sub-pixel precision is ``1 / upsample_factor`` px.
    max_shift_px : float, optional
        Search only shifts within this radius (pixels) for the integer peak. A stronger
        peak outside the radius still lowers the reliability.

    Returns
    -------
    shift_row, shift_col : float
        Shift in pixels (row positive down, column positive right) such that
        ``apply_shift(moving, shift_row, shift_col)`` aligns ``moving`` with
        ``reference``.
    reliability : float
        0..1, from the ratio of the phase-correlation peak to the next-highest peak:
        below 0.3 for unrelated images or noise, above 0.7 for a clearly matching pair.

    Raises
    ------
    CoregError
        Arrays not 2-D or of different shapes, or fewer than :data:`MIN_VALID_PIXELS`
        valid overlapping pixels.
    """
    # Single precision: the gradients are computed in float32 anyway.
    ref = np.asarray(reference, dtype=np.float32)
    mov = np.asarray(moving, dtype=np.float32)
    if ref.ndim != 2 or mov.ndim != 2:
        raise CoregError(
            f"estimate_shift needs 2-D arrays, got shapes {ref.shape} and {mov.shape}; select one band first"
        )
    if ref.shape != mov.shape:
        raise CoregError(
            f"reference {ref.shape} and moving {mov.shape} differ in shape; put both on the same grid first"
        )
    v = np.isfinite(ref) & np.isfinite(mov)
    if valid is not None:
        vm = np.asarray(valid, dtype=bool)
        if vm.shape != ref.shape:
            raise CoregError(f"valid mask shape {vm.shape} does not match the images {ref.shape}")
        v &= vm
    n_valid = int(v.sum())
    if n_valid < MIN_VALID_PIXELS:
        raise CoregError(
            f"only {n_valid} valid overlapping pixels (need {MIN_VALID_PIXELS}); "
            "use a larger window or an acquisition with less cloud / nodata"
        )
    return _estimate(ref, mov, v, upsample_factor=upsample_factor, max_shift_px=max_shift_px)


def _estimate(ref: np.ndarray, mov: np.ndarray, v: np.ndarray, *, upsample_factor: int = 100,
              max_shift_px: float | None = None, grads: dict | None = None) -> tuple[float, float, float]:
    """:func:`estimate_shift` on checked float32 arrays and their common valid mask ``v``.

    ``grads`` (a dict) receives the frame gradients of both images and their clean mask
    (``ref``, ``mov``, ``good``), from which :func:`coregister` measures the similarity
    before co-registration without filtering the images again.
    """
    # -- integer stage on the phase-normalised surface (sharp peak -> reliability)
    workers = _workers(ref.size)
    ga, good = _gradient(ref, v)
    gb, _ = _gradient(mov, v)  # same mask, same clean area
    if grads is not None:
        grads.update(ref=ga, mov=gb, good=good)
    a = _condition(ga, good)
    b = _condition(gb, good)
    fa = sfft.fft2(a, workers=workers)
    fb = sfft.fft2(b, workers=workers)
    prod = fa * np.conj(fb)
    mag = np.abs(prod)
    if not np.any(mag > 0):
        return 0.0, 0.0, 0.0  # no texture at all: nothing to match
    surface = np.abs(sfft.ifft2(prod / np.maximum(mag, 1e-12 * mag.max()), workers=workers))
    rows, cols = surface.shape
    dr = np.fft.fftfreq(rows, 1.0 / rows)[:, None]  # signed integer shifts per bin
    dc = np.fft.fftfreq(cols, 1.0 / cols)[None, :]
    search = surface
    if max_shift_px is not None:
        search = np.where(np.hypot(dr, dc) <= max_shift_px + 0.5, surface, -np.inf)
    pr, pc = np.unravel_index(int(np.argmax(search)), surface.shape)
    peak = surface[pr, pc]
    idx_r = np.arange(pr - _PEAK_EXCLUDE, pr + _PEAK_EXCLUDE + 1) % rows
    idx_c = np.arange(pc - _PEAK_EXCLUDE, pc + _PEAK_EXCLUDE + 1) % cols
    surface[np.ix_(idx_r, idx_c)] = 0.0  # the main peak is read; what is left are the others
    second = float(surface.max())
    ratio = float(peak / second) if second > 0 else float("inf")
    reliability = float(np.clip((ratio - _RATIO_NOISE) / (_RATIO_GOOD - _RATIO_NOISE), 0.0, 1.0))
    int_shift = (int(dr[pr, 0]), int(dc[0, pc]))

    # -- sub-pixel stage on the common footprint at the integer offset
    sl_r, sl_m = _crop_slices(ref.shape, int_shift)
    vc = v[sl_r] & np.isfinite(mov[sl_m])
    if int_shift == (0, 0):
        # The common footprint is the whole frame: the stage-1 spectra are the ones to refine.
        base, cross = (0.0, 0.0), prod
    else:
        if min(vc.shape) < 8 or vc.sum() < MIN_VALID_PIXELS:
            # Cropping would leave too little: refine on the full frame instead.
            pa_in, pb_in, base = a, b, (0.0, 0.0)
        else:
            base = (float(int_shift[0]), float(int_shift[1]))
            # Filtered again on the crops (reflected at the crop edge): reusing the
            # whole-frame gradients was measured 10 % less accurate on the simulator texture.
            pa_in = _prepare(np.where(v[sl_r], ref[sl_r], np.nan), vc)
            pb_in = _prepare(mov[sl_m], vc)
        w2 = _workers(pa_in.size)
        cross = sfft.fft2(pa_in, workers=w2) * np.conj(sfft.fft2(pb_in, workers=w2))
    # Start from the integer maximum of the plain cross-correlation (as skimage does):
    # on scenes with repeated structure it can sit a pixel or more from the phase peak.
    cc = np.abs(sfft.ifft2(cross, workers=_workers(cross.size)))
    k0 = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=float)
    k0 = np.where(k0 > np.array(cc.shape) // 2, k0 - np.array(cc.shape), k0)
    residual = _newton_peak(cross[None], k0[None])[0]
    residual = np.round(residual * upsample_factor) / upsample_factor
    shift_row = base[0] + float(residual[0])
    shift_col = base[1] + float(residual[1])
    if max(abs(shift_row - int_shift[0]), abs(shift_col - int_shift[1])) > 1.0:
        # The two stages disagree by more than a pixel: the match is ambiguous.
        reliability = min(reliability, 0.25)
    if reliability < 1.0:
        # Periodic scenes (parallel tracks, rows of containers) have strong secondary
        # peaks one period away, which the peak ratio reads as ambiguity. Independent
        # estimates on the four quadrants agreeing on the same shift is evidence too.
        reliability = max(reliability, _quadrant_agreement(ref, mov, v, (shift_row, shift_col)))
    if max_shift_px is not None and np.hypot(shift_row, shift_col) > max_shift_px + 0.5:
        # The search radius excluded the real peak: what was found is not trustworthy.
        reliability = min(reliability, 0.25)
    return shift_row, shift_col, reliability


#: Windows with a smaller share of valid pixels than this are refined (local mode and
#: :func:`estimate_window`).
_REFINE_BELOW_SHARE = 0.99

#: Fewest pixels the masked refinement needs (about a 32 x 32 px patch of clear ground,
#: as :data:`MIN_VALID_PIXELS` for any estimate).
_REFINE_MIN_PIXELS = 1000


def _as_float64(arr: np.ndarray, tag: str) -> np.ndarray:
    """``np.asarray(arr, np.float64)``: ``arr`` itself when it is a float64 array, else
    its values in this thread's ``tag`` work buffer (:func:`_scratch_any`). A fresh
    frame-sized array is page-faulted in again on every call: two float64 copies of a
    316 px frame cost ~330 minor page faults (~0.8 ms of CPU on a loaded machine) per
    masked window, their copy ~0.04 ms."""
    arr = np.asarray(arr)
    if arr.dtype == np.float64:
        return arr
    out = _scratch_any(tag, arr.shape, np.float64)
    np.copyto(out, arr, casting="unsafe")
    return out


def _masked_values(arr: np.ndarray, ok: np.ndarray, tag: str) -> np.ndarray:
    """``arr[ok]``: the values of the 2-D ``arr`` where the boolean ``ok`` is set, in C
    order, contiguous, so that a mean or sum of them is the same bit for bit as of
    boolean indexing's copy. With the compiled kernels they are copied into this
    thread's ``tag`` work buffer (valid until the next call with ``tag``) instead of a
    fresh array, which is page-faulted in again on every call (a float64 frame's
    clean pixels: up to ~200 faults, ~2 us each on a loaded machine); otherwise
    ``arr[ok]`` itself."""
    nb = _kernels()
    if (nb is None or arr.ndim != 2 or ok.shape != arr.shape or ok.dtype != np.bool_
            or arr.dtype not in (np.float32, np.float64)):
        return arr[ok]
    out = _scratch_any(tag, (int(np.count_nonzero(ok)),), arr.dtype)
    # (np.compress into ``out`` would still build a megabyte index array first.)
    nb.masked_copy(arr, ok, out)
    return out


def _refine_masked(ref: np.ndarray, mov: np.ndarray, ref_ok: np.ndarray, mov_ok: np.ndarray,
                   shift: tuple[float, float], *, iterations: int = 8) -> tuple[float, float] | None:
    """Least-squares (Lucas-Kanade) refinement of ``shift`` on the pixels both images see.

    The phase correlation of a masked frame weights both images with the same mask, and
    that common weight pulls the peak towards zero shift. A differential estimate over
    the pixel pairs both clear has no such pull. It works on the same features as the
    phase correlation (the smoothed complex gradient, magnitudes clipped at their 90th
    percentile), with a symmetric Jacobian and Tukey-weighted residuals so that changed
    pixels do not pull; ``mov_ok`` moves with ``mov``.

    Returns the refined (row, col), or None when it does not converge, moves more than
    a pixel from ``shift`` or has too few pixels (the phase estimate is then kept).
    """
    # Double precision whatever the input: float32 and float64 copies of a frame give the
    # same shifts (the hole fill's mean would otherwise round differently).
    ref, mov = _as_float64(ref, "rm.ref64"), _as_float64(mov, "rm.mov64")
    ref_ok = np.logical_and(ref_ok, np.isfinite(ref, out=_scratch_any("rm.rok", ref.shape, bool)),
                            out=_scratch_any("rm.rok", ref.shape, bool))
    mok = np.logical_and(mov_ok, np.isfinite(mov, out=_scratch_any("rm.mok", mov.shape, bool)),
                         out=_scratch_any("rm.mok", mov.shape, bool))
    nb = _kernels()
    if nb is not None and _K_PAIRED:
        out = _refine_masked_box(nb, ref, ref_ok, mov, mok, shift, iterations)
        if out is not NotImplemented:
            return out
    filled = np.where(mok, mov, np.nanmean(np.where(mok, mov, np.nan)))
    # Translations by the separable taps of apply_shift (the interpolant of
    # ndimage.shift(order=3, mode="nearest"), a fifth of its cost); the frame is padded
    # for the shift plus the one pixel the steps may add.
    rows, cols = filled.shape
    pad = max(_SPLINE_PAD, int(math.ceil(np.abs(shift).max())) + 4)
    coef = ndimage.spline_filter(np.pad(filled, pad, mode="edge"), 3, mode="nearest")
    outside = np.pad((~mok).astype(np.float64), pad, mode="constant", constant_values=1.0)

    def translate(arr, d, order):
        return _translate_axis(_translate_axis(arr, d[0], 0, order, pad, rows), d[1], 1, order, pad, cols)

    def clipped(g, use):
        mag = np.abs(g)
        clip = _quantile(mag[use], _CLIP_PERCENTILE)
        return g * np.minimum(1.0, clip / np.maximum(mag, 1e-30)) if clip > 0 else g

    ga, good_a = _gradient(np.where(ref_ok, ref, np.nan), ref_ok, np.float64)
    d = np.array(shift, dtype=float)
    for _ in range(iterations):
        w = translate(coef, d, 3)
        # Every bilinear source clear and inside, as ndimage.shift(order=1, cval=0) > 0.999.
        w_ok = translate(outside, d, 1) < 1e-3
        gb, good_b = _gradient(np.where(w_ok, w, np.nan), w_ok, np.float64)
        use = _erode_cross(good_a & good_b)
        if int(use.sum()) < _REFINE_MIN_PIXELS:
            return None
        a, b = clipped(ga, use), clipped(gb, use)
        ra, rb = np.sqrt(np.mean(np.abs(a[use]) ** 2)), np.sqrt(np.mean(np.abs(b[use]) ** 2))
        if ra <= 0 or rb <= 0:
            return None
        a, b = a / ra, b / rb
        ja_r, ja_c = np.gradient(a)
        jb_r, jb_c = np.gradient(b)
        jr = 0.5 * (ja_r + jb_r)[use]
        jc = 0.5 * (ja_c + jb_c)[use]
        e = (b - a)[use]
        d, done = _lk_step(jr, jc, e, d, shift)
        if done is not None:
            return done
        if d is None:
            return None
    return None


def _lk_step(jr: np.ndarray, jc: np.ndarray, e: np.ndarray, d: np.ndarray, shift: tuple[float, float]):
    """One Gauss-Newton step of :func:`_refine_masked` from the Jacobian (``jr``, ``jc``:
    complex, per used pixel) and residual ``e``: (new shift, None) to go on, (None,
    None) to give up, or (shift, (row, col)) when it has converged. The temporaries are
    this thread's work buffers (the same ufuncs as the expressions in the comments, so
    the same numbers), and each conjugate is taken once."""
    n = e.size

    def buf(name, dtype):
        return _scratch_any("lk." + name, (n,), dtype)

    # Tukey biweight on the residual's size: changed pixels (a ship that left, a new
    # stack) weigh nothing beyond ~4.7 robust spreads.
    r = np.abs(e, out=buf("r", np.float64))
    scale = 1.4826 * _median(r) or 1.0
    u = np.divide(r, 4.685 * scale, out=r)  # r / (4.685 * scale)
    wt = np.multiply(u, u, out=buf("wt", np.float64))  # np.where(u < 1, (1 - u * u) ** 2, 0)
    np.subtract(1.0, wt, out=wt)
    np.square(wt, out=wt)
    np.copyto(wt, 0.0, where=np.logical_not(np.less(u, 1.0, out=buf("near", bool)), out=buf("far", bool)))
    cr = np.conjugate(jr, out=buf("cr", np.complex128))
    cc = np.conjugate(jc, out=buf("cc", np.complex128))
    prod = buf("prod", np.complex128)
    term = buf("term", np.float64)

    def wsum(conj, other):  # np.sum(wt * (conj * other).real)
        np.multiply(conj, other, out=prod)
        return np.sum(np.multiply(wt, prod.real, out=term))

    # Re(conj(jr) jc) and Re(conj(jc) jr) are the same numbers bit for bit: numpy's
    # complex product forms the real part from the same two (exactly commuting) real
    # products, with or without a fused multiply-add; so the matrix's off-diagonal pair
    # is one sum, not two.
    off = wsum(cr, jc)
    A = np.array([[wsum(cr, jr), off], [off, wsum(cc, jc)]])
    if np.linalg.eigvalsh(A)[0] <= 1e-9 * max(A[0, 0] + A[1, 1], 1e-30):
        return None, None
    # w(x; d + delta) = mov(x - d - delta) ~ w - grad(w) . delta = ref  =>  A delta = J^H e
    delta = np.linalg.solve(A, np.array([wsum(cr, e), wsum(cc, e)]))
    d = d + np.clip(delta, -0.5, 0.5)
    if np.hypot(*(d - np.array(shift))) > 1.0:
        return None, None
    # Steps shrink by ~0.6-0.8 an iteration on real pairs (changed pixels, clipping):
    # stopping at 5 thousandths leaves ~0.01-0.02 px, a tenth of the bias removed.
    if np.abs(delta).max() < 5e-3:
        return d, (float(d[0]), float(d[1]))
    return d, None


def _inner(box: tuple, grown: tuple) -> tuple:
    """The slices ``box`` relative to the slices ``grown`` that contain them."""
    return tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))


def _gradient64_box(nb, img: np.ndarray, valid: np.ndarray, fill: float | None, box: tuple, grown: tuple,
                    tag: str) -> np.ndarray:
    """:func:`_gradient` (float64, compiled kernel) of ``img`` on the slices ``box``,
    filtered on the slices ``grown`` (``box`` plus the filter's reach, or up to the
    frame edge: every output in ``box`` then sums the same inputs in the same order as
    on the whole frame). ``fill``: the value of invalid pixels, the mean of the whole
    frame's valid ones (None when all are valid). The result is this thread's ``tag``
    buffer (:func:`_scratch`)."""
    sub = img[grown]
    filled = _scratch_any(tag + ".f", sub.shape, np.float64)
    np.copyto(filled, sub)
    if fill is not None:
        np.copyto(filled, fill, where=np.logical_not(valid[grown], out=_scratch_any(tag + ".nv", sub.shape, bool)))
    grad = _scratch_any(tag + ".g", sub.shape, np.complex128)
    nb.full_gradient(filled, _K_SMOOTH, _K_DIFF, _scratch_any(tag + ".d1", sub.shape, np.float64),
                     _scratch_any(tag + ".s1", sub.shape, np.float64), grad.view(np.float64))
    out = _scratch_any(tag, tuple(b.stop - b.start for b in box), np.complex128)
    np.copyto(out, grad[_inner(box, grown)])  # contiguous: every later pass reads it
    return out


def _good64_box(nb, valid: np.ndarray, box: tuple, grown: tuple, tag: str) -> np.ndarray:
    """:func:`_gradient`'s clean mask (not within the filter halo of an invalid pixel) on
    the slices ``box``, dilated on ``grown`` (at least the halo beyond ``box``), in this
    thread's ``tag`` buffer."""
    sub = valid[grown]
    inv = np.logical_not(sub, out=_scratch_any(tag + ".inv", sub.shape, bool))
    bad = _scratch_any(tag + ".bad", sub.shape, bool)
    nb.dilate(inv, 1 + int(math.ceil(3 * _SMOOTH_SIGMA)), bad, _scratch_any(tag + ".tmp", sub.shape, bool))
    return np.logical_not(bad[_inner(box, grown)], out=_scratch_any(tag, tuple(b.stop - b.start for b in box), bool))


def _refine_masked_box(nb, ref: np.ndarray, ref_ok: np.ndarray, mov: np.ndarray, mok: np.ndarray,
                       shift: tuple[float, float], iterations: int) -> tuple[float, float] | None:
    """:func:`_refine_masked` with the compiled kernels, the same numbers (bit for bit)
    at less than half the CPU: the gradients and every per-pixel array are formed only
    on the bounding box of the reference's clean pixels (outside it no pixel is used;
    where the reference window has nodata, the box is about half the frame), the two
    translations run in one pass (:func:`_translate_pair`), the clipped, normalised
    gradients and their central differences only where they are read
    (:func:`_nb_lk_norm_impl`, :func:`_nb_lk_terms_impl`), and the frames live in this
    thread's work buffers (:func:`_scratch`: fresh megabyte arrays are page-faulted in
    again on every call). The hole fills are still the means over the whole frame, as
    :func:`_gradient` and ``np.nanmean`` take them. NotImplemented when the box is too
    thin for the compiled filter (the caller then runs the numpy code)."""
    rows, cols = ref.shape
    full = (slice(0, rows), slice(0, cols))
    reach = _K_SMOOTH.size // 2  # the composed filter's half-width (px)
    all_a = bool(ref_ok.all())
    good_full = np.ones(ref.shape, bool) if all_a else _good64_box(nb, ref_ok, full, full, "rm.gf")
    rr, cc = np.flatnonzero(good_full.any(axis=1)), np.flatnonzero(good_full.any(axis=0))
    if rr.size == 0:
        return None  # no clean reference pixel: nothing to use
    box = (slice(int(rr[0]), int(rr[-1]) + 1), slice(int(cc[0]), int(cc[-1]) + 1))
    grown = (slice(max(box[0].start - reach, 0), min(box[0].stop + reach, rows)),
             slice(max(box[1].start - reach, 0), min(box[1].stop + reach, cols)))
    if min(g.stop - g.start for g in grown) <= reach:
        return NotImplemented  # too thin for the compiled filter's mirroring: the numpy path
    bshape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
    # The moving frame's hole fill, as np.nanmean sums it (NaN replaced by 0, the whole
    # frame) and divides by the count; then the fill, the edge padding and the prefilter.
    pad = max(_SPLINE_PAD, int(math.ceil(np.abs(shift).max())) + 4)
    invalid = np.logical_not(mok, out=_scratch_any("rm.nmok", mok.shape, bool))
    filled = _scratch_any("rm.filled", mov.shape, np.float64)
    np.copyto(filled, mov)
    np.copyto(filled, 0.0, where=invalid)
    np.copyto(filled, np.float64(np.sum(filled) / np.intp(np.count_nonzero(mok))), where=invalid)
    padded = _scratch_any("rm.padded", (rows + 2 * pad, cols + 2 * pad), np.float64)
    padded[pad:pad + rows, pad:pad + cols] = filled  # np.pad(filled, pad, mode="edge"), in place
    padded[pad:pad + rows, :pad] = filled[:, :1]
    padded[pad:pad + rows, pad + cols:] = filled[:, -1:]
    padded[:pad] = padded[pad]
    padded[pad + rows:] = padded[pad + rows - 1]
    coef = ndimage.spline_filter(padded, 3, output=_scratch_any("rm.coef", padded.shape, np.float64), mode="nearest")
    outside = _scratch_any("rm.outside", padded.shape, np.float64)
    outside.fill(1.0)
    outside[pad:pad + rows, pad:pad + cols] = invalid
    ga = _gradient64_box(nb, ref, ref_ok, None if all_a else _masked_values(ref, ref_ok, "rm.va").mean(), box,
                         grown, "rm.ga")
    good_a = good_full[box]
    # The reference's magnitudes do not change between steps (only the pixels used do).
    mag_a = np.abs(ga, out=_scratch_any("rm.mag_a", bshape, np.float64))
    d = np.array(shift, dtype=float)
    for _ in range(iterations):
        w, w_ok = _translate_pair(nb, coef, outside, d, pad, rows, cols)
        all_b = bool(w_ok.all())
        gb = _gradient64_box(nb, w, w_ok, None if all_b else _masked_values(w, w_ok, "rm.vb").mean(), box,
                             grown, "rm.gb")
        good_ab = good_a & _good64_box(nb, w_ok, box, grown, "rm.gbok") if not all_b else good_a
        use = _erode_cross(good_ab)
        n_use = int(np.count_nonzero(use))
        if n_use < _REFINE_MIN_PIXELS:
            return None
        mag_b = np.abs(gb, out=_scratch_any("rm.mag_b", bshape, np.float64))
        # The used pixels packed (as boolean indexing packs them) and clipped, in two
        # compiled passes instead of six numpy ones.
        au = _scratch_any("rm.au", (n_use,), np.complex128)
        bu = _scratch_any("rm.bu", (n_use,), np.complex128)
        mu_a = _scratch_any("rm.mu_a", (n_use,), np.float64)
        mu_b = _scratch_any("rm.mu_b", (n_use,), np.float64)
        nb.lk_gather(ga.view(np.float64), gb.view(np.float64), mag_a, mag_b, use, au.view(np.float64),
                     bu.view(np.float64), mu_a, mu_b)
        clip_a = _quantile(mu_a, _CLIP_PERCENTILE)
        clip_b = _quantile(mu_b, _CLIP_PERCENTILE)
        if clip_a > 0:
            nb.lk_clip(au.view(np.float64), mu_a, float(clip_a))
        if clip_b > 0:
            nb.lk_clip(bu.view(np.float64), mu_b, float(clip_b))
        ra, rb = np.sqrt(np.mean(np.abs(au) ** 2)), np.sqrt(np.mean(np.abs(bu) ** 2))
        if ra <= 0 or rb <= 0:
            return None
        an, bn = _scratch_any("rm.an", bshape, np.complex128), _scratch_any("rm.bn", bshape, np.complex128)
        # numpy divides a complex array by a real scalar as a product with 1 / scalar.
        nb.lk_norm(ga.view(np.float64), mag_a, float(clip_a), float(1.0 / ra), an.view(np.float64))
        nb.lk_norm(gb.view(np.float64), mag_b, float(clip_b), float(1.0 / rb), bn.view(np.float64))
        jr, jc, e = (_scratch_any(name, (n_use,), np.complex128) for name in ("rm.jr", "rm.jc", "rm.e"))
        nb.lk_terms(an.view(np.float64), bn.view(np.float64), use, jr.view(np.float64), jc.view(np.float64),
                    e.view(np.float64))
        d, done = _lk_step(jr, jc, e, d, shift)
        if done is not None:
            return done
        if d is None:
            return None
    return None


def _translate_taps(shift: float, order: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(start offsets into the padded axis, weights) of :func:`_translate_axis`'s taps,
    zero weights left out as it leaves them out."""
    i0 = math.floor(-shift)
    first, w = _bspline_weights(-shift - i0, order)
    keep = [k for k in range(w.size) if w[k] != 0.0]
    return (np.array([pad + i0 + first + k for k in keep], np.int64), np.ascontiguousarray(w[keep], np.float64))


def _translate_pair(nb, coef: np.ndarray, outside: np.ndarray, d: np.ndarray, pad: int, rows: int,
                    cols: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_refine_masked`'s two translations by ``d`` (row, col px) in one compiled
    pass: the cubic one of the spline coefficients ``coef`` and the mask of outputs whose
    bilinear sources in ``outside`` (1 = invalid or beyond the frame) are all clear
    (weight < 1e-3); bit for bit :func:`_translate_axis` along rows then columns. Both
    are this thread's work buffers (:func:`_scratch`), valid until the next call."""
    cr, wr = _translate_taps(float(d[0]), 3, pad)
    cc, wc = _translate_taps(float(d[1]), 3, pad)
    lr, vr = _translate_taps(float(d[0]), 1, pad)
    lc, vc = _translate_taps(float(d[1]), 1, pad)
    w = _scratch_any("tp.w", (rows, cols), np.float64)
    ok = _scratch_any("tp.ok", (rows, cols), bool)
    nb.translate_pair(coef, cr, wr, cc, wc, outside, lr, vr, lc, vc, np.empty(coef.shape[1]),
                      np.empty(outside.shape[1]), w, ok)
    return w, ok


def _quadrant_agreement(ref: np.ndarray, mov: np.ndarray, v: np.ndarray, shift: tuple[float, float],
                        *, tol_px: float = 0.5) -> float:
    """Share of image quadrants whose own shift estimate agrees with ``shift`` (0 if < 3 usable)."""
    from skimage.registration import phase_cross_correlation

    rows, cols = ref.shape
    if min(rows, cols) < 128:
        return 0.0
    agree, usable = 0, 0
    for r0, r1 in ((0, rows // 2), (rows // 2, rows)):
        for c0, c1 in ((0, cols // 2), (cols // 2, cols)):
            vq = v[r0:r1, c0:c1]
            if vq.sum() < MIN_VALID_PIXELS:
                continue
            usable += 1
            est, _, _ = phase_cross_correlation(_prepare(ref[r0:r1, c0:c1], vq), _prepare(mov[r0:r1, c0:c1], vq),
                                                upsample_factor=10, normalization=None)
            if abs(est[0] - shift[0]) <= tol_px and abs(est[1] - shift[1]) <= tol_px:
                agree += 1
    if usable < 3:
        return 0.0
    # All four agreeing is strong evidence; three of four is fair; fewer is none.
    return {4: 0.9, 3: 0.7}.get(agree, 0.0) if usable == 4 else (0.7 if agree == 3 else 0.0)


# -- apply ---------------------------------------------------------------------------
def _filled(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """(data with NaN holes filled, finite mask, output dtype) of one plane.

    Holes take the nearest valid value: spline prefiltering would spread NaN over the
    whole image, and a constant fill would ring at the hole's edge. float32 planes stay
    float32 (the output precision), anything else becomes float64.
    """
    out_dtype = plane.dtype if plane.dtype == np.float32 else np.dtype(np.float64)
    data = np.array(plane, dtype=out_dtype)
    finite = np.isfinite(data)
    if finite.any() and not finite.all():
        # The nearest valid pixel of every hole lies within the holes' bounding box grown
        # by one pixel (anything beyond projects onto a closer valid pixel on that
        # border), so the distance transform needs only that box.
        rows = np.flatnonzero(~finite.all(axis=1))
        cols = np.flatnonzero(~finite.all(axis=0))
        r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, data.shape[0])
        c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, data.shape[1])
        box = data[r0:r1, c0:c1]
        idx = ndimage.distance_transform_edt(~finite[r0:r1, c0:c1], return_distances=False, return_indices=True)
        box[...] = box[tuple(idx)]
    return data, finite, out_dtype


_SPLINE_PAD = 12  # edge padding before the spline prefilter, as scipy.ndimage for mode="nearest"


def _bspline_weights(t: float, order: int) -> tuple[int, np.ndarray]:
    """(offset of the first tap from floor(x), tap weights) of a B-spline at fraction ``t``."""
    if order == 1:
        return 0, np.array([1.0 - t, t])
    return -1, np.array([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3]) / 6.0


def _translate_axis(arr: np.ndarray, shift: float, axis: int, order: int, pad: int, n: int) -> np.ndarray:
    """Samples of ``arr`` (padded by ``pad`` along ``axis``) at ``i - shift``, i = 0..n-1.

    A translation samples every output at the same fraction of a pixel, so one set of
    tap weights serves the whole axis and each tap is a shifted slice: 4 (cubic) or 2
    (linear) multiply-adds per pixel and axis instead of the 16 per pixel with per-pixel
    coordinates of a general 2-D resampler. The caller pads enough for every tap.
    """
    i0 = math.floor(-shift)
    first, w = _bspline_weights(-shift - i0, order)
    out = None
    for k, wk in enumerate(w):
        if wk == 0.0:
            continue
        a = pad + i0 + first + k
        part = arr[a:a + n] if axis == 0 else arr[:, a:a + n]
        if out is None:
            out = part * arr.dtype.type(wk)
        else:
            out += part * arr.dtype.type(wk)
    return out


def _shift_plane(plane: np.ndarray, shift: tuple[float, float], order: int) -> np.ndarray:
    data, finite, out_dtype = _filled(plane)
    if not finite.any():
        return np.full(data.shape, np.nan, dtype=out_dtype)
    rows, cols = data.shape
    if order not in (1, 3):
        shifted = ndimage.shift(data, shift, order=order, mode="nearest")
        invalid = ndimage.shift((~finite).astype(float), shift, order=1, mode="constant", cval=1.0)
    else:
        # Separable resampling, the same interpolant as ndimage.shift(order, mode="nearest"):
        # the spline prefilter sees the image edge-padded by 12 px as scipy does; beyond
        # that, taps only reach pixels whose source is outside the image (masked below).
        reach = int(math.ceil(max(abs(shift[0]), abs(shift[1])))) + 3
        pad = max(_SPLINE_PAD, reach)
        if order == 3:
            coef = ndimage.spline_filter(np.pad(data, _SPLINE_PAD, mode="edge"), 3, output=data.dtype,
                                         mode="nearest")
            if pad > _SPLINE_PAD:
                coef = np.pad(coef, pad - _SPLINE_PAD, mode="edge")
        else:
            coef = np.pad(data, pad, mode="edge")
        tmp = _translate_axis(coef, shift[0], 0, order, pad, rows)
        shifted = _translate_axis(tmp, shift[1], 1, order, pad, cols)
        # Bilinear weight of invalid or outside (1) source pixels, as
        # ndimage.shift(~finite, order=1, mode="constant", cval=1).
        if finite.all():
            # Only the frame is outside: the weight is 1 - inside_row (x) inside_col, so two
            # 1-D profiles give it.
            inside = [_translate_axis(np.pad(np.ones(n, np.float32), pad), s, 0, 1, pad, n)
                      for n, s in zip(data.shape, shift)]
            invalid = 1.0 - np.outer(inside[0], inside[1])
        else:
            bad = np.pad((~finite).astype(np.float32), pad, mode="constant", constant_values=1.0)
            tmp = _translate_axis(bad, shift[0], 0, 1, pad, rows)
            invalid = _translate_axis(tmp, shift[1], 1, 1, pad, cols)
    # A pixel is valid when every neighbour it interpolates from was valid and inside.
    shifted[invalid > 1e-6] = np.nan
    return shifted.astype(out_dtype, copy=False)


def _apply_ndarray(arr: np.ndarray, shift_row: float, shift_col: float, order: int) -> np.ndarray:
    if arr.ndim < 2:
        raise CoregError(f"apply_shift needs an array of at least 2 dimensions (rows, cols), got {arr.shape}")
    flat = arr.reshape((-1,) + arr.shape[-2:])
    out = np.stack([_shift_plane(p, (shift_row, shift_col), order) for p in flat])
    return out.reshape(arr.shape)


def apply_shift(image, shift_row: float, shift_col: float, *, order: int = 3):
    """Move the content of ``image`` by (``shift_row``, ``shift_col``) pixels.

    Parameters
    ----------
    image : numpy.ndarray or xarray.DataArray
        Array of shape (..., rows, cols), or a DataArray whose last two dims are
        (y, x), e.g. (band, y, x). All leading planes (bands) are shifted identically.
    shift_row, shift_col : float
        Shift in pixels; content at (r, c) ends up at (r + shift_row, c + shift_col).
        Pass the shift from :func:`estimate_shift` to align moving onto reference.
    order : int
        Spline order of the resampling (3 = cubic; 1 = bilinear, 0 = nearest). Orders 1
        and 3 run as two 1-D passes with one set of tap weights per axis (a translation
        samples every pixel at the same fraction), the same values as
        ``scipy.ndimage.shift(order=order, mode="nearest")`` at ~5x less cost; float32
        input is computed in float32.

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        Same kind and shape, float32 for float32 input, else float64. Pixels whose
        source lies outside the image or touches a NaN are NaN. A DataArray keeps its
        coordinates, CRS (``spatial_ref``), name and attrs: the grid does not move, the
        content moves onto it.
    """
    if isinstance(image, xr.DataArray):
        if image.dims[-2:] != ("y", "x"):
            raise CoregError(
                f"DataArray dims {image.dims} must end with ('y', 'x'); transpose it first"
            )
        data = _apply_ndarray(np.asarray(image.values), shift_row, shift_col, order)
        out = image.copy(deep=False, data=data)
        if image.rio.nodata is not None:
            # The output is float with NaN fill; an integer nodata value no longer applies.
            out.rio.write_nodata(np.nan, encoded=False, inplace=True)
        return out
    return _apply_ndarray(np.asarray(image), shift_row, shift_col, order)


# -- coregister ----------------------------------------------------------------------
def _grid(da: xr.DataArray, what: str) -> GridSpec:
    if not isinstance(da, xr.DataArray):
        raise CoregError(
            f"{what} must be an xarray.DataArray with x/y coordinates and a CRS, got {type(da).__name__}"
        )
    if da.ndim not in (2, 3) or da.dims[-2:] != ("y", "x"):
        raise CoregError(f"{what} has dims {da.dims}; expected (y, x) or (band, y, x)")
    try:
        return GridSpec.of(da)
    except GridError as exc:
        raise CoregError(f"{what}: {exc}") from exc


def _as_float_with_nan(da: xr.DataArray) -> xr.DataArray:
    """Float copy with the declared nodata value replaced by NaN."""
    nodata = da.rio.nodata
    values = np.asarray(da.values)
    data = values.astype(np.float32 if values.dtype == np.float32 else np.float64)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        data[values == nodata] = np.nan
    return da.copy(deep=False, data=data).rio.write_nodata(np.nan, encoded=False, inplace=True)


def _bounds_in(grid: GridSpec, crs) -> tuple[float, float, float, float]:
    if grid.crs == crs:
        return grid.bounds
    from pyproj import Transformer

    tr = Transformer.from_crs(grid.crs, crs, always_xy=True)
    return tr.transform_bounds(*grid.bounds, densify_pts=21)


def _same_lattice(a: GridSpec, b: GridSpec, tol: float = 1e-6) -> bool:
    """Same CRS and pixel size, and origins an integer number of pixels apart."""
    ta, tb = a.transform, b.transform
    if a.crs != b.crs or abs(ta.a - tb.a) > tol * abs(tb.a) or abs(ta.e - tb.e) > tol * abs(tb.e):
        return False
    dc = (ta.c - tb.c) / tb.a
    dr = (ta.f - tb.f) / tb.e
    return abs(dc - round(dc)) < 1e-4 and abs(dr - round(dr)) < 1e-4


def _with_reference_coords(da: xr.DataArray, reference: xr.DataArray) -> xr.DataArray:
    """``da`` with the reference's exact x/y coordinates (rebuilt only when they differ:
    rebuilding the indexes costs more than the rest of a small window's registration)."""
    x, y = reference["x"].values, reference["y"].values
    if np.array_equal(da["x"].values, x) and np.array_equal(da["y"].values, y):
        return da
    return da.assign_coords(x=x, y=y)


def _to_reference_grid(moving: xr.DataArray, reference: xr.DataArray, ref_grid: GridSpec) -> xr.DataArray:
    mov_grid = _grid(moving, "moving")
    if mov_grid.same_as(ref_grid):
        return _with_reference_coords(_as_float_with_nan(moving), reference)
    rx0, ry0, rx1, ry1 = ref_grid.bounds
    mx0, my0, mx1, my1 = _bounds_in(mov_grid, ref_grid.crs)
    if mx0 >= rx1 or mx1 <= rx0 or my0 >= ry1 or my1 <= ry0:
        raise CoregError(
            f"moving image bounds {tuple(round(v, 1) for v in (mx0, my0, mx1, my1))} do not overlap the "
            f"reference grid bounds {tuple(round(v, 1) for v in ref_grid.bounds)} "
            f"(in {ref_grid.crs.to_string()}); "
            "check the CRS of both inputs and that the acquisition covers the AOI"
        )
    mov = _as_float_with_nan(moving)
    if _same_lattice(mov_grid, ref_grid):
        # Same CRS and pixel size, origins a whole number of pixels apart: selecting the
        # reference's pixels is exact and much cheaper than a resampling pass.
        tr, tm = ref_grid.transform, mov_grid.transform
        r_off = int(round((tr.f - tm.f) / tm.e))
        c_off = int(round((tr.c - tm.c) / tm.a))
        rows, cols = ref_grid.shape
        if 0 <= r_off and r_off + rows <= mov_grid.shape[0] and 0 <= c_off and c_off + cols <= mov_grid.shape[1]:
            # The reference lies inside: a slice, converted after cutting (a window of a
            # large scene costs only the window; lazy inputs read only the window).
            sub = _as_float_with_nan(moving.isel(y=slice(r_off, r_off + rows), x=slice(c_off, c_off + cols)))
            return _with_reference_coords(sub, reference)
        tol = 1e-3 * ref_grid.resolution
        out = mov.reindex(x=reference["x"].values, y=reference["y"].values, method="nearest", tolerance=tol)
        return out.assign_coords(x=reference["x"].values, y=reference["y"].values)
    from rasterio.enums import Resampling

    # Cubic keeps the edge sharpness the shift estimate relies on; GDAL excludes NaN
    # (nodata) pixels from the kernel.
    template = reference if reference.ndim == 2 else reference.isel(band=0, drop=True)
    out = _by_band_kind(mov, lambda da, cls: da.rio.reproject_match(
        template, resampling=Resampling.nearest if cls else Resampling.cubic, nodata=np.nan))
    # Use the reference's exact coordinates (reprojection recomputes them in float).
    return out.assign_coords(x=reference["x"].values, y=reference["y"].values)


def _by_band_kind(da: xr.DataArray, move) -> xr.DataArray:
    """``move(part, is_class)`` applied to the value bands and to the class bands
    (:data:`CLASS_BANDS`) of ``da`` separately, bands back in their order."""
    names = _band_names(da)
    cls = [n for n in names if _is_class_band(n)]
    if da.ndim != 3 or not cls:
        return move(da, False)
    dim = da.dims[0]
    vals = [n for n in names if not _is_class_band(n)]
    parts = [move(da.sel({dim: vals}), False)] if vals else []
    parts.append(move(da.sel({dim: cls}), True))
    out = xr.concat(parts, dim=dim) if len(parts) > 1 else parts[0]
    out = out.sel({dim: names})
    if "spatial_ref" in parts[0].coords and "spatial_ref" not in out.coords:
        out = out.assign_coords(spatial_ref=parts[0]["spatial_ref"])
    return out


def _shift_bands(da: xr.DataArray, row: float, col: float) -> xr.DataArray:
    """:func:`apply_shift` with cubic for value bands and nearest for class bands."""
    return _by_band_kind(da, lambda part, cls: apply_shift(part, row, col, order=0 if cls else 3))


def _warp_bands(da: xr.DataArray, field_row: np.ndarray, field_col: np.ndarray) -> xr.DataArray:
    """:func:`apply_warp` with cubic for value bands and nearest for class bands."""
    return _by_band_kind(da, lambda part, cls: apply_warp(part, field_row, field_col, order=0 if cls else 3))


def _band_names(da: xr.DataArray) -> list[str]:
    if da.ndim == 2 or "band" not in da.coords:
        return []
    return [str(b) for b in np.atleast_1d(da["band"].values)]


def _select_band(da: xr.DataArray, band: str | None, what: str) -> np.ndarray:
    """The 2-D image used for the estimate: ``band`` (case-insensitive), or the band mean."""
    if da.ndim == 2:
        sel = da
    elif band is not None:
        names = _band_names(da)
        lower = [n.lower() for n in names]
        if str(band).lower() not in lower:
            raise CoregError(f"band {band!r} is not in {what} bands {names}; pass one of them as band= (CLI: --band)")
        sel = da.isel({da.dims[0]: lower.index(str(band).lower())})
    elif da.shape[0] == 1:
        sel = da[0]
    else:
        # Mean of the value bands (class bands are categories, not brightness): averages
        # out band-specific noise, keeps the shared edges.
        names = _band_names(da)
        if names and any(_is_class_band(n) for n in names) and not all(_is_class_band(n) for n in names):
            da = da.isel({da.dims[0]: [i for i, n in enumerate(names) if not _is_class_band(n)]})
        with np.errstate(all="ignore"):
            sel = da.mean(dim=da.dims[0], skipna=True) if da.shape[0] > 1 else da[0]
    data = np.asarray(sel.values, dtype="float64")
    if data.ndim != 2:
        raise CoregError(f"{what} band for matching has shape {data.shape}; it must be 2-D (y, x)")
    return data


def _described(da: xr.DataArray) -> list[bool] | None:
    """Which bands of ``da`` carry a real description, from the ``long_name`` attribute
    :func:`changedet.io.read_raster` sets (None when the DataArray does not say)."""
    ln = da.attrs.get("long_name")
    n = da.shape[0]
    if isinstance(ln, (tuple, list)) and len(ln) == n:
        return [bool(x) for x in ln]
    if isinstance(ln, str) and n == 1:
        return [bool(ln)]
    return None


def _value_band_count(da: xr.DataArray) -> int:
    return sum(not _is_class_band(n) for n in _band_names(da)) or da.shape[0]


def _common_band(reference: xr.DataArray, moving: xr.DataArray, band: str | None) -> str | None:
    """Band used in both images: ``band``, else a preferred band every multi-band input has.

    None means: use the mean of the bands.
    """
    if band is not None:
        return str(band)
    sets = [set(_matchable(_band_names(da), _described(da))) for da in (reference, moving) if da.ndim == 3]
    if not sets:
        return None
    return next((p for p in _PREFERRED_BANDS if all(p in names for names in sets)), None)


def _valid_on_grid(valid: xr.DataArray, reference: xr.DataArray, ref_grid: GridSpec) -> np.ndarray:
    if not isinstance(valid, xr.DataArray) or valid.dims[-2:] != ("y", "x") or valid.ndim != 2:
        raise CoregError("valid must be a 2-D boolean DataArray (y, x) on the reference grid")
    if valid.shape == ref_grid.shape and (
        valid.rio.crs is None or _grid(valid, "valid").same_as(ref_grid, tol=1e-4)
    ):
        return np.asarray(valid.values, dtype=bool)
    if valid.rio.crs is None:
        raise CoregError(
            f"valid mask shape {valid.shape} differs from the reference grid {ref_grid.shape} and it has no CRS "
            "to reproject it; give it the reference grid (GridSpec.attach)"
        )
    from rasterio.enums import Resampling

    template = reference if reference.ndim == 2 else reference.isel(band=0, drop=True)
    m = valid.astype("uint8").rio.write_nodata(255, encoded=False)
    out = m.rio.reproject_match(template, resampling=Resampling.nearest, nodata=255)
    return np.asarray(out.values) == 1


def _metres_per_unit(grid: GridSpec) -> float:
    """Metres per CRS unit of a projected grid; CoregError for angular or unknown units."""
    crs = grid.crs
    axes = crs.axis_info
    unit = axes[0].unit_name if axes else ""
    factor = axes[0].unit_conversion_factor if axes else float("nan")
    if not crs.is_projected or not unit or unit.lower() in ("degree", "radian", "grad", "unknown") \
            or not (factor and math.isfinite(factor)):
        raise CoregError(
            f"reference CRS {crs.name!r} has no units of length (axis unit {unit or 'none'!r}); shifts in "
            "metres and pixel sizes need a projected reference grid, e.g. reproject the reference to its "
            "UTM zone (changedet.grid.utm_crs_for)"
        )
    return float(factor)


def _check_texture(img: np.ndarray, ok: np.ndarray, what: str) -> None:
    vals = img[ok]
    spread = float(np.nanmax(vals) - np.nanmin(vals)) if vals.size else 0.0
    if not spread > 1e-9 * max(1.0, float(np.nanmax(np.abs(vals))) if vals.size else 1.0):
        raise CoregError(
            f"{what} image is constant over the valid overlap (value {float(vals[0]) if vals.size else 'none'}); "
            "there is nothing to match - check the band selection, nodata value and scaling of that input"
        )


def coregister(
    reference: xr.DataArray,
    moving: xr.DataArray,
    *,
    band: str | None = None,
    valid: xr.DataArray | None = None,
    min_reliability: float = 0.5,
    max_shift_px: float = 20.0,
    local: bool = False,
    window_px: int = 256,
    step_px: int | None = None,
    warp: str = "smooth",
    min_tie_points: int = 4,
) -> tuple[xr.DataArray, CoregResult]:
    """Put ``moving`` on the reference grid and remove its misregistration relative to ``reference``.

    Parameters
    ----------
    reference : xarray.DataArray
        (y, x) or (band, y, x) image on the AOI's reference grid, with a projected CRS
        (units of length).
    moving : xarray.DataArray
        (y, x) or (band, y, x) acquisition with a CRS; any grid, CRS or resolution that
        overlaps the reference (reprojected onto it with cubic resampling first).
    band : str, optional
        Band name used for the estimate in both images. Default: a NIR band, else a red
        band if both images have it, else the mean of the bands (then both must have
        the same number of bands).
    valid : xarray.DataArray of bool, optional
        True where pixels are usable (e.g. cloud-free), on the reference grid (or with a
        CRS, then reprojected with nearest neighbour).
    min_reliability : float
        Shifts with a lower reliability (0..1) are not applied.
    max_shift_px : float
        Shifts longer than this (reference pixels) are not applied; in local mode, no
        pixel of the warp may move further.
    local : bool
        Estimate a shift per window on a grid (tie points), reject outliers and apply a
        warp fitted to the survivors (non-rigid distortion) instead of one translation.
    window_px, step_px : int
        Local mode: window side and spacing of the window centres (default half the
        window), in reference pixels.
    warp : {"smooth", "affine", "translation"}
        Local mode: model fitted to the kept tie points (see :func:`fit_warp`).
    min_tie_points : int
        Local mode: fewer kept tie points than this and nothing is applied.

    Returns
    -------
    aligned : xarray.DataArray
        ``moving`` on the reference grid (reference coords and CRS), shifted (warped)
        when ``result.applied``; float, NaN outside the data.
    result : CoregResult
        Shift in pixels and metres (local mode: the mean of the warp over the grid),
        reliability, tie points, similarity and whether it was applied.

    Raises
    ------
    CoregError
        Inputs without CRS/coordinates, a reference CRS without units of length, grids
        that do not overlap, an all-NaN or constant band, different band counts when
        the band mean is used, a band selection that is not 2-D, or fewer than
        :data:`MIN_VALID_PIXELS` / :data:`MIN_VALID_FRACTION` valid overlapping pixels
        (e.g. everything cloudy).

    Notes
    -----
    Global mode: upsampled phase correlation of the clipped gradients; on a frame with
    masked or missing pixels (``valid``, NaN edges) that estimate is refined by least
    squares on the pixels both images see (the common mask pulls the phase peak towards
    zero shift). The similarity before and after is read on the same pixels, with the
    masked pixels moved with the image. Local mode refines every masked tie-point window
    the same way (:func:`estimate_local`).
    """
    ref_grid = _grid(reference, "reference")
    to_m = _metres_per_unit(ref_grid)
    aligned_grid = _to_reference_grid(moving, reference, ref_grid)

    use_band = _common_band(reference, moving, band)
    if use_band is None and reference.ndim == 3 and moving.ndim == 3 \
            and _value_band_count(reference) != _value_band_count(moving):
        raise CoregError(
            f"reference has {reference.shape[0]} bands {_band_names(reference)} and moving has "
            f"{moving.shape[0]} {_band_names(moving)}, and no common band to match on; pass band= naming a band both have "
            "(--band on the command line), or select matching bands first"
        )
    ref_img = _select_band(_as_float_with_nan(reference), use_band, "reference")
    mov_img = _select_band(aligned_grid, use_band, "moving")
    if not np.isfinite(ref_img).any():
        raise CoregError("reference band is all NaN (or nodata); use a reference with valid pixels")
    if not np.isfinite(mov_img).any():
        raise CoregError(
            "moving band is all NaN (or nodata) on the reference grid; the acquisition has no data here"
        )

    # The moving image's usable pixels on the reference grid (reprojected once: the mask
    # also bounds the refinement and moves with the image for the similarity after).
    mov_ok = np.isfinite(mov_img)
    if valid is not None:
        mov_ok &= _valid_on_grid(valid, reference, ref_grid)
    ok = np.isfinite(ref_img) & mov_ok
    n_ok = int(ok.sum())
    frac = n_ok / ok.size
    if n_ok < MIN_VALID_PIXELS or frac < MIN_VALID_FRACTION:
        raise CoregError(
            f"only {n_ok} valid overlapping pixels (cloud-free, not NaN; {frac:.1%} of the reference grid); "
            f"need at least {MIN_VALID_PIXELS} and {MIN_VALID_FRACTION:.0%}. Use an acquisition with more "
            "coverage / less cloud"
        )
    _check_texture(ref_img, ok, "reference")
    _check_texture(mov_img, ok, "moving")

    xres = ref_grid.transform.a * to_m
    yres = abs(ref_grid.transform.e) * to_m
    ncc_cache: dict = {}
    reason = ""
    extra: dict = {}
    if local:
        sim_before = _gradient_ncc(ref_img, mov_img, ok, cache=ncc_cache)
        tp = estimate_local(ref_img, mov_img, valid=np.isfinite(ref_img), moving_valid=mov_ok,
                            window_px=window_px, step_px=step_px,
                            max_shift_px=max_shift_px)
        kept = int(tp.kept.sum())
        table = tuple((float(r), float(c), float(dr), float(dc), float(q), bool(k)) for r, c, dr, dc, q, k in
                      zip(tp.row, tp.col, tp.shift_row, tp.shift_col, tp.reliability, tp.kept))
        extra = {"mode": "local", "tie_points_total": len(tp.row), "tie_point_table": table}
        if kept < min_tie_points:
            rel = float(np.median(tp.reliability[tp.kept])) * kept / min_tie_points if kept else 0.0
            row = float(np.median(tp.shift_row[tp.kept])) if kept else 0.0
            col = float(np.median(tp.shift_col[tp.kept])) if kept else 0.0
            reason = (f"only {kept} of {len(tp.row)} tie points kept (need {min_tie_points}); "
                      "the images do not match reliably")
            field = None
        else:
            field_r, field_c, rmse = fit_warp(tp, ref_img.shape, warp=warp)
            field = (field_r, field_c)
            row, col = float(field_r.mean()), float(field_c.mean())
            # Median window reliability; many windows agreeing on one warp is evidence of
            # its own (as the quadrant agreement of the global mode), whatever their peaks.
            rel = float(np.median(tp.reliability[tp.kept]))
            if kept >= max(6, len(tp.row) // 2):
                rel = max(rel, 0.7)
            extra["residual_rmse_px"] = rmse
            length = float(np.sqrt(field_r**2 + field_c**2).max())
            if rel < min_reliability:
                reason = below_min_reliability(rel, min_reliability)
            elif length > max_shift_px:
                reason = f"warp moves pixels {length:.2f} px, more than max_shift_px {max_shift_px:.2f}"
        extra["tie_points"] = kept
    else:
        # No search restriction here: a confident shift beyond max_shift_px is reported as
        # such rather than replaced by a spurious peak inside the radius.
        grads: dict = {}
        row, col, rel = _estimate(ref_img.astype(np.float32, copy=False), mov_img.astype(np.float32, copy=False),
                                  ok, grads=grads)
        # Similarity before, from the gradients the estimate filtered (same images, same mask).
        sim_before = _ncc(grads["ref"], grads["mov"], grads["good"])
        if rel >= min_reliability and not ok.all():
            # A masked frame (cloud, nodata): the phase peak is pulled towards zero by the
            # common mask; refine on the pixels both images see (_refine_masked).
            refined = _refine_masked(ref_img, mov_img, np.isfinite(ref_img), mov_ok, (row, col))
            if refined is not None:
                row, col = refined
        length = math.hypot(row, col)
        if rel < min_reliability:
            reason = below_min_reliability(rel, min_reliability)
        elif length > max_shift_px:
            reason = f"shift {length:.2f} px exceeds max_shift_px {max_shift_px:.2f}"

    out = aligned_grid
    sim_after = sim_before
    if not reason:
        shifted = _warp_bands(aligned_grid, *field) if local else _shift_bands(aligned_grid, row, col)
        mov_after = _select_band(shifted, use_band, "moving")
        if valid is not None:
            # Masked pixels (cloud) move with the image: resampled, a bright cloud's values
            # spread into the clear pixels beside it, which the mask of the input no longer
            # covers (a 256 px Sentinel-2 window 30 % under cloud read 0.07 -> 0.05 after a
            # correct shift). The similarity is read with the masked pixels as NaN, moved.
            mov_masked = np.where(mov_ok, mov_img, np.nan)
            mov_after = (apply_warp(mov_masked, *field) if local
                         else apply_shift(mov_masked, row, col))
        seen = ok & np.isfinite(mov_after)
        if not np.array_equal(seen, ok):
            # The move leaves a border the moving image no longer covers (one row or column
            # for a sub-pixel shift; more with the gradient's halo). Before and after are
            # compared on the same pixels: on a small frame (a port at 10 m, 60 x 95 px)
            # the border rows alone moved the measure by 0.02, enough to refuse a correct
            # 0.3 px shift as "no improvement".
            sim_before = _gradient_ncc(ref_img, mov_img, seen, cache=ncc_cache)
        sim_after = _gradient_ncc(ref_img, mov_after, seen, cache=ncc_cache)
        if np.isfinite(sim_before) and np.isfinite(sim_after) and sim_after < sim_before - 0.01:
            # A correct shift cannot make the edges agree less; keep the input.
            reason = f"shift did not improve gradient similarity ({sim_before:.3f} -> {sim_after:.3f})"
            sim_after = sim_before
        else:
            out = shifted

    result = CoregResult(
        shift_row_px=float(row),
        shift_col_px=float(col),
        shift_x_m=float(col * xres),
        shift_y_m=float(-row * yres),
        reliability=float(rel),
        tie_points=int(extra.pop("tie_points", 1)),
        similarity_before=float(sim_before),
        similarity_after=float(sim_after),
        applied=not reason,
        reason=reason,
        **extra,
    )
    return out, result


# -- global mode from files: one window read alone ------------------------------------
# AROSICS' global mode matches one window (256 px by default) at the centre of the
# overlap and reads little else; :func:`coregister_files` does the same task: it reads
# only that window from each file (no xarray, no resampling when the grids share a
# lattice), with a margin for the filters and for re-cutting the moving window at the
# integer shift, and estimates, checks and scores the shift on the window alone.
_FILTER_MARGIN = 8      # px: Gaussian (4 px) + Sobel (1 px) support, rounded up
_MIN_WINDOW_VALID = 0.5  # a window needs this share of valid pixels in both images


@dataclass(frozen=True)
class _RasterInfo:
    path: str
    crs_wkt: str
    transform: object
    shape: tuple[int, int]
    nodata: float | None
    names: tuple[str, ...]            # of the data bands (alpha bands left out)
    indexes: tuple[int, ...] = ()     # their 1-based band numbers in the file
    described: tuple[bool, ...] = ()  # whether each has a real description


def _raster_info(src, path) -> _RasterInfo:
    from changedet.io import band_names, data_band_indexes

    keep = data_band_indexes(src)
    names = band_names(src.descriptions)
    return _RasterInfo(str(path), src.crs.to_wkt(), src.transform, (src.height, src.width), src.nodata,
                       tuple(names[i] for i in keep), tuple(i + 1 for i in keep),
                       tuple(bool(src.descriptions[i]) for i in keep))


@functools.lru_cache(maxsize=16)
def _pyproj_crs(crs_wkt: str):
    """The pyproj CRS of a WKT string, cached: files of one area share a few CRSs, and
    each build costs about 0.15 ms (1 % of a 256 px window's whole call)."""
    from pyproj import CRS

    return CRS.from_wkt(crs_wkt)


def _grid_checks(crs_wkt: str, transform: tuple) -> float:
    """Metres per CRS unit of a reference grid (CoregError as :func:`coregister`). The
    CRS is cached by its WKT alone (not with the transform, which differs per scene)."""
    from affine import Affine

    try:
        grid = GridSpec(_pyproj_crs(crs_wkt), Affine(*transform[:6]), (2, 2))
    except GridError as exc:
        raise CoregError(f"reference: {exc}") from exc
    return _metres_per_unit(grid)


@functools.lru_cache(maxsize=64)
def _same_crs(wkt_a: str, wkt_b: str) -> bool:
    """Whether two CRS WKT strings (not textually equal) describe the same CRS."""
    return _pyproj_crs(wkt_a) == _pyproj_crs(wkt_b)


def _band_indexes(ref: _RasterInfo, mov: _RasterInfo, band: str | None) -> tuple[list[int], list[int]]:
    """1-based band indexes read from each file: ``band``, a preferred band both have,
    or all bands (their mean is matched), as :func:`coregister` chooses."""
    if band is not None:
        out = []
        for info in (ref, mov):
            lower = [n.lower() for n in info.names]
            if str(band).lower() not in lower:
                raise CoregError(f"band {band!r} is not in {info.path} bands {list(info.names)}; "
                                 "pass one of them as band= (CLI: --band)")
            out.append([_file_band(info, lower.index(str(band).lower()))])
        return out[0], out[1]
    sets = [_matchable(info.names, info.described or None) for info in (ref, mov)]
    pick = next((p for p in _PREFERRED_BANDS if all(p in names for names in sets)), None)
    if pick is not None:
        return [_file_band(ref, sets[0].index(pick))], [_file_band(mov, sets[1].index(pick))]
    values = [[i for i, n in enumerate(info.names) if not _is_class_band(n)] or list(range(len(info.names)))
              for info in (ref, mov)]
    if len(values[0]) != len(values[1]):
        raise CoregError(
            f"reference has {len(ref.names)} bands {list(ref.names)} and moving has {len(mov.names)} "
            f"{list(mov.names)}, and no common band to match on; pass band= naming a band both have "
            "(--band on the command line), or select matching bands first"
        )
    return [_file_band(ref, i) for i in values[0]], [_file_band(mov, i) for i in values[1]]


def _file_band(info: _RasterInfo, position: int) -> int:
    """1-based file band number of the data band at ``position`` of ``info.names``."""
    return info.indexes[position] if info.indexes else position + 1


def _read_box(src, info: _RasterInfo, bands: list[int], r0: int, c0: int, rows: int, cols: int) -> np.ndarray:
    """float32 (rows, cols) box at (r0, c0) of ``src`` (band mean), NaN outside the file
    and at nodata; only the part inside the file is read (no boundless VRT). A read
    error is a :class:`RasterError` naming this file (both files are open at once)."""
    from changedet.io import reading

    with reading(info.path):
        return _read_box_of(src, info, bands, r0, c0, rows, cols)


def _read_box_of(src, info: _RasterInfo, bands: list[int], r0: int, c0: int, rows: int, cols: int) -> np.ndarray:
    from rasterio.enums import MaskFlags
    from rasterio.windows import Window

    ra, rb = max(r0, 0), min(r0 + rows, info.shape[0])
    ca, cb = max(c0, 0), min(c0 + cols, info.shape[1])
    if ra >= rb or ca >= cb:
        return np.full((rows, cols), np.nan, np.float32)
    window = Window(ca, ra, cb - ca, rb - ra)
    flags = [src.mask_flag_enums[b - 1] for b in bands]
    no_mask_band = all(set(f) <= {MaskFlags.nodata} or set(f) == {MaskFlags.all_valid} for f in flags)
    if (no_mask_band and len(bands) == 1 and src.dtypes[bands[0] - 1] == "float32"
            and (rb - ra, cb - ca) == (rows, cols)):
        # One float32 band, box inside the file (the usual case): read straight into the
        # result (no fill, cast or copy) and test nodata on it: float32 values are the
        # raw values.
        out = np.empty((1, rows, cols), np.float32)
        src.read(bands, window=window, out=out)
        out = out[0]
        nd = src.nodatavals[bands[0] - 1]
        if nd is not None and not np.isnan(nd):
            out[out == np.asarray(nd).astype(np.float32)] = np.nan
        return out
    out = np.full((rows, cols), np.nan, np.float32)
    if no_mask_band:
        # No mask band to read: nodata (or none) is tested on the raw values here; a
        # masked read costs GDAL a mask band and rasterio a masked array on top. Raw
        # values, so float32 rounding cannot merge nodata with a neighbour (as read_raster).
        raw = src.read(bands, window=window)
        data = raw.astype(np.float32)
        # Each band's own nodata (VRT, netCDF and ENVI bands may differ from band 1's).
        for k, b in enumerate(bands):
            nd = src.nodatavals[b - 1]
            if nd is None:
                continue
            if np.isnan(nd):
                data[k][np.isnan(raw[k])] = np.nan
                continue
            if raw.dtype.kind in "iu":
                # An integer nodata outside the data type's range marks nothing (as GDAL).
                lim = np.iinfo(raw.dtype)
                if not (lim.min <= nd <= lim.max and float(nd).is_integer()):
                    continue
            data[k][raw[k] == np.asarray(nd).astype(raw.dtype)] = np.nan
    else:
        # masked: nodata, internal mask and alpha bands, as read_raster.
        raw = src.read(bands, window=window, masked=True)
        data = np.ma.filled(raw.astype(np.float32), np.float32(np.nan))
    out[ra - r0:rb - r0, ca - c0:cb - c0] = data[0] if len(bands) == 1 else np.mean(data, axis=0)
    return out


def _class_band(info: _RasterInfo) -> tuple[str, int] | None:
    """(``"CLM"`` or ``"SCL"``, 1-based file band) of the file's cloud class band, or None."""
    upper = [str(n).upper() for n in info.names]
    for kind in CLASS_BANDS:
        if kind in upper:
            return kind, _file_band(info, upper.index(kind))
    return None


def _mask_cloud(box: np.ndarray, src, info: _RasterInfo, cls: tuple[str, int] | None, r0: int, c0: int) -> None:
    """Set ``box`` (read at (r0, c0)) to NaN where the file's CLM/SCL band says cloud,
    cloud shadow or no data, in place, as :func:`coregister` does with ``valid``: a cloud
    moves with the weather, not with the ground, and would pull the match towards its
    own displacement."""
    if cls is None:
        return
    from changedet.cloudmask import SCL_CLOUD, SCL_NODATA

    kind, idx = cls
    # The class band read alone: no band mean, NaN outside the file and at its nodata.
    v = _read_box(src, info, [idx], r0, c0, box.shape[0], box.shape[1])
    if kind == "CLM":
        bad = ~(v == 0)
    else:
        # Values outside the classes 0-11 (a fill, a foreign class map) are no data, as in
        # cloudmask.scl_cloud; NaN is not a class either.
        bad = np.isin(v, SCL_CLOUD + SCL_NODATA) | ~np.isin(v, np.arange(12))
    box[bad] = np.nan


def _usable_window(win: np.ndarray) -> bool:
    """At least ``_MIN_WINDOW_VALID`` of ``win`` finite, and not constant there."""
    lo, hi = win.min(), win.max()
    if np.isfinite(lo) and np.isfinite(hi):
        # Both extremes finite: no NaN (it would propagate) and no infinity, so every
        # pixel is valid; a fifth of the cost of the masked test below.
        return bool(hi > lo)
    if not np.isfinite(win).mean() >= _MIN_WINDOW_VALID:
        return False
    vals = win[~np.isnan(win)]  # nanmax / nanmin, in one copy instead of two
    return bool(vals.max() > vals.min())


def _lattice_offset(ref: _RasterInfo, mov: _RasterInfo) -> tuple[int, int] | None:
    """(row, col) of the reference's pixel (0, 0) in the moving file when both share a
    pixel lattice (same CRS, pixel size, origins whole pixels apart), else None."""
    tr, tm = ref.transform, mov.transform
    if tr.b or tr.d or tm.b or tm.d:
        return None
    if abs(tr.a - tm.a) > 1e-6 * abs(tm.a) or abs(tr.e - tm.e) > 1e-6 * abs(tm.e):
        return None
    dr, dc = (tr.f - tm.f) / tm.e, (tr.c - tm.c) / tm.a
    if abs(dr - round(dr)) > 1e-4 or abs(dc - round(dc)) > 1e-4:
        return None
    if ref.crs_wkt != mov.crs_wkt and not _same_crs(ref.crs_wkt, mov.crs_wkt):
        return None
    return int(round(dr)), int(round(dc))


def _window_positions(overlap: tuple[int, int, int, int], ws: int) -> list[tuple[int, int]]:
    """Upper-left corners of candidate windows: the centre of the overlap first (as
    AROSICS), then the centres of a 3 x 3 grid over it, nearest first."""
    r_a, r_b, c_a, c_b = overlap
    rows = [r_a + (r_b - r_a - ws) * f for f in (0.5, 0.25, 0.75)]
    cols = [c_a + (c_b - c_a - ws) * f for f in (0.5, 0.25, 0.75)]
    cand = [(int(round(r)), int(round(c))) for r in rows for c in cols]
    cand.sort(key=lambda rc: (rc[0] - rows[0]) ** 2 + (rc[1] - cols[0]) ** 2)
    return list(dict.fromkeys(cand))


def _keys_weights(t: float) -> np.ndarray:
    """Keys cubic-convolution weights (a = -0.5) of the taps at -1, 0, 1, 2 for fraction ``t``."""
    x = np.array([t + 1.0, t, 1.0 - t, 2.0 - t])
    near = x <= 1.0
    return np.where(near, 1.5 * x**3 - 2.5 * x**2 + 1.0, -0.5 * x**3 + 2.5 * x**2 - 4.0 * x + 2.0)


def _keys_resample(g: np.ndarray, good: np.ndarray, shift_row: float, shift_col: float, start: int,
                   ws: int, *, scratch: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``ws`` x ``ws`` block at (start, start) of ``g`` translated by the shift (output
    at p samples p - shift; cubic convolution, two 1-D passes of 4 taps) and the mask of
    outputs whose 4 x 4 source taps are all in ``good``. ``scratch``: the output is a
    work buffer of this thread (:func:`_scratch`), valid until the next such call."""
    i0r, i0c = math.floor(-shift_row), math.floor(-shift_col)
    wr, wc = _keys_weights(-shift_row - i0r), _keys_weights(-shift_col - i0c)
    br, bc = start + i0r - 1, start + i0c - 1
    # Real weights on complex samples: work on the float (re, im) view, where a sample's
    # column offset k is 2 k floats (half the multiplications of complex arithmetic).
    gv = np.ascontiguousarray(g, np.complex64).view(np.float32)

    def buf(name, shape):
        return _scratch(name, shape, np.float32) if scratch else np.empty(shape, np.float32)

    nb = _kernels()
    if nb is not None:
        if br < 0 or bc < 0 or br + ws + 3 > g.shape[0] or bc + ws + 3 > g.shape[1]:
            raise ValueError(f"_keys_resample: a shift of ({shift_row}, {shift_col}) px reaches outside the "
                             f"{g.shape} source from {start}")  # the compiled loop checks no bounds
        out = buf("kr.o", (ws, 2 * ws))
        nb.keys(gv, br, bc, wr.astype(np.float32), wc.astype(np.float32), buf("kr.r", (ws, 2 * (ws + 3))), out)
        return _keys_finish(out, g, good, br, bc, ws)
    rows = np.multiply(gv[br:br + ws, 2 * bc:2 * (bc + ws + 3)], np.float32(wr[0]),
                       out=buf("kr.r", (ws, 2 * (ws + 3))))
    tmp = buf("kr.t", rows.shape)
    for k in range(1, 4):
        np.multiply(gv[br + k:br + k + ws, 2 * bc:2 * (bc + ws + 3)], np.float32(wr[k]), out=tmp)
        rows += tmp
    out = np.multiply(rows[:, 0:2 * ws], np.float32(wc[0]), out=buf("kr.o", (ws, 2 * ws)))
    tmp = tmp[:, 0:2 * ws]
    for k in range(1, 4):
        np.multiply(rows[:, 2 * k:2 * (k + ws)], np.float32(wc[k]), out=tmp)
        out += tmp
    return _keys_finish(out, g, good, br, bc, ws)


def _keys_finish(out: np.ndarray, g: np.ndarray, good: np.ndarray, br: int, bc: int, ws: int):
    """:func:`_keys_resample`'s result from its float output: as complex, and the mask."""
    out = out.view(np.complex64)
    src_ok = good[br:br + ws + 3, bc:bc + ws + 3]
    if src_ok.all():
        return out.astype(g.dtype, copy=False), np.ones((ws, ws), bool)
    ok = good[br:br + ws, bc:bc + ws + 3].copy()
    for k in range(1, 4):
        ok &= good[br + k:br + k + ws, bc:bc + ws + 3]
    mask = ok[:, 0:ws].copy()
    for k in range(1, 4):
        mask &= ok[:, k:k + ws]
    return out.astype(g.dtype, copy=False), mask


# Gaussian half-width (taps) of _K_SMOOTH / _K_DIFF before the Sobel arms are composed in.
_GAUSS_HALF = int(4 * _SMOOTH_SIGMA + 0.5)
_GAUSS_TAPS = np.exp(-0.5 * (np.arange(_GAUSS_HALF + 1) / _SMOOTH_SIGMA) ** 2)
_GAUSS_TAPS = (_GAUSS_TAPS / (2 * _GAUSS_TAPS.sum() - _GAUSS_TAPS[0])).astype(np.float32)
# Per-thread work buffers of the window match, kept between calls up to this many
# elements each (a 512 px window with a 20 px search margin; ~15 buffers of at most
# 4 MB). glibc returns the freed heap to the system after every call and faults it in
# again on the next (~1400 page faults, about half of a 256 px match's CPU). The masked
# refinement keeps its frames here too (46 buffers in all after one, float64 and complex:
# ~37 MB per thread once windows of a 256 px match with their 30 px margin have been
# refined, measured in s50's review), so the table holds up to _SCRATCH_KEYS buffers before
# it starts afresh (64 overflowed on every window with masked pixels and dropped the
# match's buffers too).
_SCRATCH_MAX = 600 * 600
_SCRATCH_KEYS = 128
_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype, *, zero: bool = False) -> np.ndarray:
    """A work buffer of this thread for ``name`` (uninitialised unless ``zero`` on first
    use); reused by the next call with the same name and shape, so it must not outlive
    the call that asked for it."""
    size = math.prod(shape)
    if size > _SCRATCH_MAX:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    key = (name, tuple(shape), np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None:
        if len(bufs) > _SCRATCH_KEYS:  # window sizes changed many times: start afresh
            bufs.clear()
        buf = bufs[key] = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    return buf


def _scratch_any(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """:func:`_scratch` for arrays whose shape changes from call to call (the masked
    refinement's boxes and packed pixels): a contiguous view of a buffer of this thread
    whose size is the largest asked for under ``name`` so far, rounded up to a power of
    two, so that one buffer per name serves every shape (one per shape would soon fill
    the buffer table, whose overflow drops every buffer of the window match too)."""
    size = math.prod(shape)
    if size > _SCRATCH_MAX:
        return np.empty(shape, dtype)
    caps = getattr(_SCRATCH, "caps", None)
    if caps is None:
        caps = _SCRATCH.caps = {}
    key = (name, np.dtype(dtype).str)
    old = caps.get(key, 0)
    if size > old or not old:  # (also a first request for no elements: a buffer to slice)
        # Grown, never shrunk: one buffer per name, however the sizes alternate (a
        # buffer per power of two would add a table entry whenever the count of used
        # pixels crossed one).
        caps[key] = min(max(1 << max(size - 1, 0).bit_length(), 1024), _SCRATCH_MAX)
        bufs = getattr(_SCRATCH, "bufs", None)
        if old and bufs is not None:
            bufs.pop((name, (old,), key[1]), None)
    return _scratch(name, (caps[key],), dtype)[:size].reshape(shape)


def _window_gradient(img: np.ndarray, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_gradient` of a window whose outer ``_GAUSS_HALF + 1`` px are context only.

    When every pixel is finite: the Gaussian along each axis (symmetric taps, pairs of
    array slices) and then the two 3-tap Sobel arms, on the interior where no boundary
    rule is needed. Same filter as :func:`_gradient` (equal to float32 rounding), in
    about a third of its CPU: two 9-tap passes and four 3-tap ones instead of four 11-tap
    passes and two transposes. The outer ring is zero and marked not good; callers
    (:func:`estimate_window`) only use the window inside its filter margin. The result
    lives in this thread's ``tag`` buffers (see :func:`_scratch`). Invalid pixels are
    handled as by :func:`_gradient`: filled with the mean of the valid ones, and the
    filter halo around them (the same 4-step cross dilation) marked not good.
    """
    src = np.asarray(img, np.float32)
    valid = np.isfinite(src)
    all_valid = bool(valid.all())
    if not all_valid:
        if not valid.any():
            return np.zeros(src.shape, np.complex64), np.zeros(src.shape, bool)
        filled = _scratch(tag + ".f", src.shape, np.float32)
        invalid = np.logical_not(valid, out=_scratch(tag + ".nv", src.shape, bool))
        np.copyto(filled, src)
        np.copyto(filled, np.float32(0.0), where=invalid)
        # The mean of the valid pixels summed in double over the zero-filled window: no
        # copy of the valid pixels (their boolean-indexed copy was a third of the cost).
        np.copyto(filled, np.float32(filled.sum(dtype=np.float64) / np.count_nonzero(valid)), where=invalid)
        src = filled
    h = _GAUSS_HALF
    n0, n1 = img.shape
    k = _GAUSS_TAPS
    nb = _kernels()
    if nb is not None:
        grad = _scratch(tag + ".g", src.shape, np.complex64, zero=True)
        nb.gradient(np.ascontiguousarray(src), k, _scratch(tag + ".a", (n0, n1 - 2 * h), np.float32),
                    _scratch(tag + ".s", (n0 - 2 * h, n1 - 2 * h), np.float32), grad.view(np.float32))
        return grad, _window_good(src.shape, valid, all_valid, tag)
    a = np.multiply(src[:, h:n1 - h], k[0], out=_scratch(tag + ".a", (n0, n1 - 2 * h), np.float32))
    tmp = _scratch(tag + ".t", (n0, n1 - 2 * h), np.float32)
    for j in range(1, h + 1):
        np.add(src[:, h - j:n1 - h - j], src[:, h + j:n1 - h + j], out=tmp)
        tmp *= k[j]
        a += tmp
    s = np.multiply(a[h:n0 - h], k[0], out=_scratch(tag + ".s", (n0 - 2 * h, n1 - 2 * h), np.float32))
    tmp = tmp[h:n0 - h]
    for j in range(1, h + 1):
        np.add(a[h - j:n0 - h - j], a[h + j:n0 - h + j], out=tmp)
        tmp *= k[j]
        s += tmp
    m0, m1 = s.shape
    d_col = np.subtract(s[:, 2:], s[:, :-2], out=_scratch(tag + ".d", (m0, m1 - 2), np.float32))
    s_col = np.multiply(s[:, 1:-1], np.float32(2.0), out=_scratch(tag + ".c", (m0, m1 - 2), np.float32))
    s_col += s[:, :-2]
    s_col += s[:, 2:]
    # The ring outside the interior is zeroed once, when the buffer is made, and never written.
    grad = _scratch(tag + ".g", src.shape, np.complex64, zero=True)
    o = h + 1
    inner = (slice(o, n0 - o), slice(o, n1 - o))
    # gx is summed in a contiguous buffer and written into the interleaved complex array
    # once: an add over grad.real (stride 8 bytes) costs about four contiguous ones.
    gx = np.multiply(d_col[1:-1], np.float32(2.0), out=_scratch(tag + ".x", (m0 - 2, m1 - 2), np.float32))
    gx += d_col[:-2]
    gx += d_col[2:]
    grad.real[inner] = gx
    np.subtract(s_col[2:], s_col[:-2], out=grad.imag[inner])
    return grad, _window_good(src.shape, valid, all_valid, tag)


def _window_good(shape: tuple[int, int], valid: np.ndarray, all_valid: bool, tag: str) -> np.ndarray:
    """Where :func:`_window_gradient` is clean: the interior, less the filter halo of
    invalid pixels."""
    o = _GAUSS_HALF + 1
    good = _scratch(tag + ".ok", shape, bool, zero=True)
    good[o:shape[0] - o, o:shape[1] - o] = True
    if not all_valid:
        halo = 1 + int(math.ceil(3 * _SMOOTH_SIGMA))
        nb = _kernels()
        if nb is None:
            good &= ~_dilate_cross(~valid, halo)
        else:  # the same mask (boolean: no rounding), ~a tenth of the CPU
            bad = _scratch(tag + ".bad", shape, bool)
            nb.dilate(np.logical_not(valid, out=_scratch(tag + ".inv", shape, bool)), halo, bad,
                      _scratch(tag + ".bad2", shape, bool))
            good &= ~bad
    return good


# -- numba kernels of the window path -------------------------------------------------
# The window match is a dozen small passes over 256 px windows; as numpy operations each
# pass streams its arrays through memory again. These loops do the same arithmetic in
# the same order (float32, no fast-math, so no reassociation or FMA contraction: results
# equal the numpy code bit for bit) with fewer passes over the data. Importing numba and
# loading the compiled code (cached on disk) costs about a second, which a one-off
# ``changedet coregister`` would pay to save ~3 ms: so the numpy code matches the first
# ``_NUMBA_AFTER`` windows of a process (unless numba is already imported) and the
# kernels the rest. The results are the same either way. ``_USE_NUMBA``: None = that
# rule, True / False = always / never (tests, benchmarks).
_USE_NUMBA: bool | None = None
_NUMBA_AFTER = 3
_WINDOWS_MATCHED = 0


def _nb_gradient_impl(src, k, a, s, gv):  # pragma: no cover - compiled by numba
    """Gaussian rows then columns (taps ``k``, symmetric) and the two Sobel arms of the
    all-finite window ``src``, written into the interior of ``gv`` (the float32 view of
    the complex gradient: real at even, imaginary at odd columns); as the numpy path of
    :func:`_window_gradient` (``a``, ``s``: its row / column pass buffers). Inner loops
    run over 1-D row views: indexing those, LLVM drops the negative-index checks and
    vectorises (2-D indexing ran 5 times slower)."""
    n0, n1 = src.shape
    h = k.shape[0] - 1
    w1 = n1 - 2 * h
    k0 = k[0]
    for i in range(n0):
        ai, si = a[i], src[i]
        for j in range(w1):
            ai[j] = si[h + j] * k0
        for t in range(1, h + 1):
            kt = k[t]
            left, right = si[h - t:h - t + w1], si[h + t:h + t + w1]
            for j in range(w1):
                ai[j] += (left[j] + right[j]) * kt
    m0 = n0 - 2 * h
    for i in range(m0):
        si, mid = s[i], a[h + i]
        for j in range(w1):
            si[j] = mid[j] * k0
        for t in range(1, h + 1):
            kt = k[t]
            left, right = a[h + i - t], a[h + i + t]
            for j in range(w1):
                si[j] += (left[j] + right[j]) * kt
    two = np.float32(2.0)
    o = h + 1
    for i in range(m0 - 2):
        s0, s1, s2 = s[i], s[i + 1], s[i + 2]
        row = gv[o + i, 2 * o:]
        for j in range(w1 - 2):
            gx = (s1[j + 2] - s1[j]) * two
            gx += s0[j + 2] - s0[j]
            gx += s2[j + 2] - s2[j]
            lo = s0[j + 1] * two
            lo += s0[j]
            lo += s0[j + 2]
            hi = s2[j + 1] * two
            hi += s2[j]
            hi += s2[j + 2]
            row[2 * j] = gx
            row[2 * j + 1] = hi - lo


def _nb_keys_impl(gv, br, bc, wr, wc, rows, out):  # pragma: no cover - compiled by numba
    """The two 4-tap passes of :func:`_keys_resample` on the float view ``gv``, in its
    order of operations; ``rows`` (ws, 2 (ws + 3)) and ``out`` (ws, 2 ws) float32."""
    ws = out.shape[0]
    q = rows.shape[1]
    n = 2 * ws
    c0 = 2 * bc
    for i in range(ws):
        ri = rows[i]
        src = gv[br + i, c0:c0 + q]
        for j in range(q):
            ri[j] = src[j] * wr[0]
        for t in range(1, 4):
            wt = wr[t]
            src = gv[br + t + i, c0:c0 + q]
            for j in range(q):
                ri[j] += src[j] * wt
        oi = out[i]
        for j in range(n):
            oi[j] = ri[j] * wc[0]
        for t in range(1, 4):
            wt = wc[t]
            shifted = ri[2 * t:2 * t + n]
            for j in range(n):
                oi[j] += shifted[j] * wt


def _nb_clip_impl(gv, mag, clip, outv):  # pragma: no cover - compiled by numba
    """``out = grad * min(clip / max(mag, 1e-30), 1)`` on float views (complex times
    real: numpy multiplies by ``w + 0j``, which gives the same two products)."""
    rows, cols = mag.shape
    tiny, one = np.float32(1e-30), np.float32(1.0)
    for i in range(rows):
        mi, gi, oi = mag[i], gv[i], outv[i]
        for j in range(cols):
            w = min(clip / max(mi[j], tiny), one)
            oi[2 * j] = gi[2 * j] * w
            oi[2 * j + 1] = gi[2 * j + 1] * w


def _nb_taper_impl(outv, mean_re, mean_im, weight):  # pragma: no cover - compiled by numba
    """``out = (out - mean) * weight`` on the float view of the complex window."""
    rows, cols = weight.shape
    for i in range(rows):
        wi, oi = weight[i], outv[i]
        for j in range(cols):
            oi[2 * j] = (oi[2 * j] - mean_re) * wi[j]
            oi[2 * j + 1] = (oi[2 * j + 1] - mean_im) * wi[j]


def _nb_taper_weighted_impl(outv, mean_re, mean_im, weight, taper):  # pragma: no cover - compiled by numba
    """``out = ((out - mean) * weight) * taper`` on the float view of a complex window,
    rounded after each step as numpy's three in-place passes (:func:`_window_stack`)."""
    rows, cols = weight.shape
    for i in range(rows):
        wi, ti, oi = weight[i], taper[i], outv[i]
        for j in range(cols):
            oi[2 * j] = ((oi[2 * j] - mean_re) * wi[j]) * ti[j]
            oi[2 * j + 1] = ((oi[2 * j + 1] - mean_im) * wi[j]) * ti[j]


def _nb_reflect_row_impl(row, line, h):  # pragma: no cover - compiled by numba
    """``line[h:h + n] = row`` with ``h`` values mirrored beyond each end (ndimage's
    ``reflect``: ``row[h-1] ... row[0] | row | row[n-1] ... row[n-h]``), ``h <= n``."""
    n1 = row.shape[0]
    for j in range(n1):
        line[h + j] = row[j]
    for t in range(h):
        line[h - 1 - t] = row[t]
        line[h + n1 + t] = row[n1 - 1 - t]


# The name the kernels call: the plain function until _nb() compiles the kernels, then its
# compiled form, which numba resolves as a global when it compiles each caller.
_nb_reflect_row = _nb_reflect_row_impl


def _nb_full_gradient_impl(src, ks, kd, d1, s1, gv):  # pragma: no cover - compiled by numba
    """:func:`_gradient`'s four ``ndimage.correlate1d`` passes (reflect), bit for bit:
    along rows (axis 1) with ``kd`` into ``d1`` and with ``ks`` into ``s1``, then along
    columns (axis 0) ``ks`` over ``d1`` (the real part of ``gv``, the float32 view of the
    complex gradient) and ``kd`` over ``s1`` (imaginary). As ndimage: double sums, the
    centre tap first, then the taps in pairs from the outermost in (sums for the
    symmetric kernel, differences for the antisymmetric one, both weighted by the
    left-hand tap), float32 after each pass. Loops over output positions innermost, on
    1-D views, so that LLVM vectorises them."""
    n0, n1 = src.shape
    h = ks.shape[0] // 2
    line = np.empty(n1 + 2 * h)
    acc_d = np.empty(n1)
    acc_s = np.empty(n1)
    kd0, ks0 = kd[h], ks[h]
    for i in range(n0):
        _nb_reflect_row(src[i], line, h)
        mid = line[h:h + n1]
        for j in range(n1):
            acc_d[j] = mid[j] * kd0
            acc_s[j] = mid[j] * ks0
        for t in range(h, 0, -1):
            wd, wsm = kd[h - t], ks[h - t]
            left, right = line[h - t:h - t + n1], line[h + t:h + t + n1]
            for j in range(n1):
                acc_d[j] += (left[j] - right[j]) * wd
            for j in range(n1):
                acc_s[j] += (left[j] + right[j]) * wsm
        di, ssi = d1[i], s1[i]
        for j in range(n1):
            # Stored in the output's precision (float32: rounded as np.float32(acc)).
            di[j] = acc_d[j]
            ssi[j] = acc_s[j]
    for i in range(n0):
        md, ms = d1[i], s1[i]
        for j in range(n1):
            acc_d[j] = np.float64(md[j]) * ks0
            acc_s[j] = np.float64(ms[j]) * kd0
        for t in range(h, 0, -1):
            up, dn = i - t, i + t
            if up < 0:
                up = -up - 1
            if dn >= n0:
                dn = 2 * n0 - dn - 1
            ud, dd, us, ds = d1[up], d1[dn], s1[up], s1[dn]
            wsm, wd = ks[h - t], kd[h - t]
            for j in range(n1):
                acc_d[j] += (np.float64(ud[j]) + np.float64(dd[j])) * wsm
            for j in range(n1):
                acc_s[j] += (np.float64(us[j]) - np.float64(ds[j])) * wd
        row = gv[i]
        for j in range(n1):
            row[2 * j] = acc_d[j]
            row[2 * j + 1] = acc_s[j]


def _nb_rows_sum_impl(src, offs, wts, i, out):  # pragma: no cover - compiled by numba
    """``out`` = the sum over taps ``k`` of row ``offs[k] + i`` of ``src`` times
    ``wts[k]``, in :func:`_translate_axis`'s order (first tap times its weight, then
    each further product added)."""
    n = out.shape[0]
    row, w0 = src[offs[0] + i], wts[0]
    for j in range(n):
        out[j] = row[j] * w0
    for k in range(1, offs.shape[0]):
        row, wk = src[offs[k] + i], wts[k]
        for j in range(n):
            out[j] += row[j] * wk


def _nb_line_sum_impl(line, offs, wts, out):  # pragma: no cover - compiled by numba
    """``out[j]`` = the sum over taps ``k`` of ``line[offs[k] + j]`` times ``wts[k]``, in
    the order of :func:`_nb_rows_sum_impl`."""
    n = out.shape[0]
    seg, w0 = line[offs[0]:offs[0] + n], wts[0]
    for j in range(n):
        out[j] = seg[j] * w0
    for k in range(1, offs.shape[0]):
        seg, wk = line[offs[k]:offs[k] + n], wts[k]
        for j in range(n):
            out[j] += seg[j] * wk


# The names _nb_translate_pair_impl calls (see _nb_reflect_row).
_nb_rows_sum = _nb_rows_sum_impl
_nb_line_sum = _nb_line_sum_impl


def _nb_translate_pair_impl(coef, cr, wr, cc, wc, outside, lr, vr, lc, vc, line, line2, w, ok):  # pragma: no cover
    """:func:`_translate_pair`: ``coef`` translated with the taps (``cr``, ``wr``) along
    rows and (``cc``, ``wc``) along columns into ``w``, and ``ok`` = ``outside``
    translated with the linear taps (``lr``, ``vr``), (``lc``, ``vc``) below 1e-3; one
    output row at a time (``line``, ``line2``: the row pass of each), each sum in
    :func:`_translate_axis`'s order (first tap times its weight, then each further
    product added), double precision."""
    rows, cols = w.shape
    val = np.empty(cols)
    for i in range(rows):
        _nb_rows_sum(coef, cr, wr, i, line)
        _nb_line_sum(line, cc, wc, w[i])
        _nb_rows_sum(outside, lr, vr, i, line2)
        _nb_line_sum(line2, lc, vc, val)
        oki = ok[i]
        for j in range(cols):
            oki[j] = val[j] < 1e-3


def _nb_lk_norm_impl(g, mag, clip, s, out):  # pragma: no cover - compiled by numba
    """The clipped, normalised gradient as numpy forms it in :func:`_refine_masked`:
    ``g * minimum(1, clip / maximum(mag, 1e-30))`` (when ``clip > 0``) times ``s`` =
    1 / rms, per part (``g``, ``out``: float64 views of complex images; a complex times
    a real is the product of each part, and numpy divides by a real scalar as a product
    with its reciprocal)."""
    n0, n1 = mag.shape
    m = np.empty(n1)
    for i in range(n0):
        mi, gi, oi = mag[i], g[i], out[i]
        if clip > 0:
            for j in range(n1):
                q = clip / max(mi[j], 1e-30)
                m[j] = q if q < 1.0 else 1.0
        else:
            m[:] = 1.0
        for j in range(n1):
            oi[2 * j] = (gi[2 * j] * m[j]) * s
            oi[2 * j + 1] = (gi[2 * j + 1] * m[j]) * s


def _nb_lk_gather_impl(ga, gb, mag_a, mag_b, use, au, bu, mu_a, mu_b):  # pragma: no cover - numba
    """``ga[use]``, ``gb[use]``, ``mag_a[use]``, ``mag_b[use]`` (row-major, as boolean
    indexing packs them) in one pass (``ga``, ``gb``, ``au``, ``bu``: float64 views of
    complex arrays)."""
    n0, n1 = use.shape
    k = 0
    for i in range(n0):
        ui, gai, gbi, mai, mbi = use[i], ga[i], gb[i], mag_a[i], mag_b[i]
        for j in range(n1):
            if ui[j]:
                au[2 * k], au[2 * k + 1] = gai[2 * j], gai[2 * j + 1]
                bu[2 * k], bu[2 * k + 1] = gbi[2 * j], gbi[2 * j + 1]
                mu_a[k], mu_b[k] = mai[j], mbi[j]
                k += 1


def _nb_lk_clip_impl(g, mag, clip):  # pragma: no cover - compiled by numba
    """``g *= minimum(1, clip / maximum(mag, 1e-30))`` in place (``g``: the float64 view
    of a 1-D complex array; a complex times a real is the product of each part)."""
    for k in range(mag.shape[0]):
        q = clip / max(mag[k], 1e-30)
        m = q if q < 1.0 else 1.0
        g[2 * k] = g[2 * k] * m
        g[2 * k + 1] = g[2 * k + 1] * m


def _nb_lk_terms_impl(a, b, use, jr, jc, e):  # pragma: no cover - compiled by numba
    """:func:`_refine_masked`'s Jacobian and residual at the pixels ``use`` (row-major, the
    order of a boolean index) of the normalised gradients ``a`` and ``b``
    (:func:`_nb_lk_norm_impl`), bit for bit as numpy's ``0.5 * (gradient(a) +
    gradient(b))`` and ``b - a`` there: central differences halved twice are exact
    scalings, so one product by 0.25. ``use`` is False on the frame's outer ring (an
    eroded mask): no one-sided edge difference is needed. Each row is computed whole
    (vectorised: real and imaginary parts interleave, a column's neighbours are 2 floats
    away) and then packed. ``a``, ``b``, ``jr``, ``jc``, ``e``: float64 views of complex
    arrays."""
    n0, n1 = use.shape
    tr = np.empty(2 * n1)
    tc = np.empty(2 * n1)
    te = np.empty(2 * n1)
    k = 0
    for i in range(1, n0 - 1):
        ui = use[i]
        any_used = False
        for j in range(1, n1 - 1):
            any_used |= ui[j]
        if not any_used:
            continue
        au, ad, ac, bu, bd, bc = a[i - 1], a[i + 1], a[i], b[i - 1], b[i + 1], b[i]
        for q in range(2, 2 * n1 - 2):
            tr[q] = ((ad[q] - au[q]) + (bd[q] - bu[q])) * 0.25
            tc[q] = ((ac[q + 2] - ac[q - 2]) + (bc[q + 2] - bc[q - 2])) * 0.25
            te[q] = bc[q] - ac[q]
        for j in range(1, n1 - 1):
            if ui[j]:
                jr[2 * k], jr[2 * k + 1] = tr[2 * j], tr[2 * j + 1]
                jc[2 * k], jc[2 * k + 1] = tc[2 * j], tc[2 * j + 1]
                e[2 * k], e[2 * k + 1] = te[2 * j], te[2 * j + 1]
                k += 1


def _nb_bucket_impl(hist, k):  # pragma: no cover - compiled by numba
    """The bucket of ``hist`` (counts, in value order) that holds the ``k``-th smallest
    value (0-based), and that value's rank within the bucket."""
    c = 0
    b = 0
    while c + hist[b] <= k:
        c += hist[b]
        b += 1
    return b, k - c


# The name the selection kernels call (see _nb_reflect_row).
_nb_bucket = _nb_bucket_impl


def _nb_masked_copy_impl(arr, ok, out):  # pragma: no cover - compiled by numba
    """``out[:n] = arr[ok]`` (row-major order, as boolean indexing packs them) for a 2-D
    ``arr`` and mask ``ok`` of its shape; ``out`` holds at least their count ``n``."""
    k = 0
    for i in range(arr.shape[0]):
        ai, oi = arr[i], ok[i]
        for j in range(arr.shape[1]):
            if oi[j]:
                out[k] = ai[j]
                k += 1
    return k


def _nb_kth_impl(v, k):  # pragma: no cover - compiled by numba
    """The ``k``-th smallest (0-based) of the float32 values ``v`` (1-D), exactly
    ``np.partition(v, k)[k]``: the bit patterns of values without sign bit order as the
    values (NaN last, as numpy sorts it), so three histogram passes over 11, 11 and 10
    bits find it. -1 when some value has its sign bit set."""
    bits = v.view(np.uint32)
    n = bits.shape[0]
    hist = np.zeros(2048, np.int64)
    for i in range(n):
        x = bits[i]
        if x >= np.uint32(0x80000000):
            return np.float32(-1.0)
        hist[x >> np.uint32(21)] += 1
    b, k = _nb_bucket(hist, k)
    p1 = np.uint32(b)
    hist[:] = 0
    for i in range(n):
        x = bits[i]
        if (x >> np.uint32(21)) == p1:
            hist[(x >> np.uint32(10)) & np.uint32(0x7FF)] += 1
    b, k = _nb_bucket(hist, k)
    p2 = (p1 << np.uint32(11)) | np.uint32(b)
    hist[:1024] = 0
    for i in range(n):
        x = bits[i]
        if (x >> np.uint32(10)) == p2:
            hist[x & np.uint32(0x3FF)] += 1
    b, k = _nb_bucket(hist, k)
    out = np.empty(1, np.uint32)
    out[0] = (p2 << np.uint32(10)) | np.uint32(b)
    return out.view(np.float32)[0]


def _nb_kth64_impl(v, k):  # pragma: no cover - compiled by numba
    """The ``k``-th smallest (0-based) of the float64 values ``v`` (1-D), exactly
    ``np.partition(v, k)[k]`` (as :func:`_nb_kth_impl` for float32: the bit patterns of
    values without sign bit order as the values, NaN last): a histogram of the top 16
    bits over all values, then 16 bits at a time over the few values left in the chosen
    bucket. -1 when some value has its sign bit set."""
    bits = v.view(np.uint64)
    n = bits.shape[0]
    hist = np.zeros(65536, np.int64)
    sign = np.uint64(0x8000000000000000)
    for i in range(n):
        x = bits[i]
        if x >= sign:
            return -1.0
        hist[x >> np.uint64(48)] += 1
    b, k = _nb_bucket(hist, k)
    left = np.empty(hist[b], np.uint64)
    top = np.uint64(b)
    m = 0
    for i in range(n):
        x = bits[i]
        if (x >> np.uint64(48)) == top:
            left[m] = x
            m += 1
    for sh in (32, 16, 0):
        shift = np.uint64(sh)
        hist[:] = 0
        for i in range(m):
            hist[(left[i] >> shift) & np.uint64(0xFFFF)] += 1
        b, k = _nb_bucket(hist, k)
        digit = np.uint64(b)
        kept = 0
        for i in range(m):
            x = left[i]
            if ((x >> shift) & np.uint64(0xFFFF)) == digit:
                left[kept] = x
                kept += 1
        m = kept
    return left[:1].view(np.float64)[0]


def _nb_feather_impl(src, w, tmp, out):  # pragma: no cover - compiled by numba
    """``ndimage.gaussian_filter(src, sigma)`` of a float32 window, bit for bit: axis 0
    then axis 1 (``w``: the weights, odd length, symmetric), each pass summed in double
    precision in ndimage's order (centre tap, then the symmetric pairs from the
    outermost in), edges mirrored (``reflect``), rounded to float32 after each pass;
    ``tmp`` holds the first pass. Loops over output positions are innermost, on 1-D
    row views, so that LLVM vectorises them (a quarter of ndimage's CPU)."""
    n0, n1 = src.shape
    h = w.shape[0] // 2
    acc = np.empty(n1)
    wh = w[h]
    for i in range(n0):
        mid = src[i]
        for j in range(n1):
            acc[j] = np.float64(mid[j]) * wh
        for t in range(h, 0, -1):
            up, dn = i - t, i + t
            if up < 0:
                up = -up - 1
            if dn >= n0:
                dn = 2 * n0 - dn - 1
            ru, rd = src[up], src[dn]
            wt = w[h - t]
            for j in range(n1):
                acc[j] += (np.float64(ru[j]) + np.float64(rd[j])) * wt
        ti = tmp[i]
        for j in range(n1):
            ti[j] = np.float32(acc[j])
    line = np.empty(n1 + 2 * h)
    for i in range(n0):
        _nb_reflect_row(tmp[i], line, h)
        mid = line[h:h + n1]
        for j in range(n1):
            acc[j] = mid[j] * wh
        for t in range(h, 0, -1):
            wt = w[h - t]
            left, right = line[h - t:h - t + n1], line[h + t:h + t + n1]
            for j in range(n1):
                acc[j] += (left[j] + right[j]) * wt
        oi = out[i]
        for j in range(n1):
            oi[j] = np.float32(acc[j])


def _nb_dilate_impl(mask, iterations, out, tmp):  # pragma: no cover - compiled by numba
    """:func:`_dilate_cross` into ``out`` (``tmp``: a second buffer of its shape): each
    iteration ORs every row with its neighbours above and below and with itself moved
    one column either way, vectorised along the row."""
    n0, n1 = mask.shape
    if iterations <= 0:
        for i in range(n0):
            mi, oi = mask[i], out[i]
            for j in range(n1):
                oi[j] = mi[j]
        return
    src = mask
    for it in range(iterations):
        dst = out if (iterations - it) % 2 == 1 else tmp  # the last iteration writes out
        for i in range(n0):
            si, di = src[i], dst[i]
            for j in range(n1):
                di[j] = si[j]
            if i > 0:
                up = src[i - 1]
                for j in range(n1):
                    di[j] |= up[j]
            if i < n0 - 1:
                dn = src[i + 1]
                for j in range(n1):
                    di[j] |= dn[j]
            d_right, s_left = di[1:], si[:n1 - 1]
            for j in range(n1 - 1):
                d_right[j] |= s_left[j]
            d_left, s_right = di[:n1 - 1], si[1:]
            for j in range(n1 - 1):
                d_left[j] |= s_right[j]
        src = dst


@functools.lru_cache(maxsize=1)
def _nb():
    """The compiled kernels (a namespace), or None without numba."""
    # njit_cached: uncached where numba finds no writable cache folder.
    from changedet.kernels.fast import HAVE_NUMBA, njit_cached

    global _nb_reflect_row, _nb_rows_sum, _nb_line_sum, _nb_bucket
    if not HAVE_NUMBA:  # optional at run time: the numpy path gives the same numbers
        return None
    jit = njit_cached(nogil=True, boundscheck=False)
    # Before the kernels that call it are compiled (at their first call): numba needs a
    # compiled function there, not the Python one.
    _nb_reflect_row = jit(_nb_reflect_row_impl)
    _nb_rows_sum, _nb_line_sum = jit(_nb_rows_sum_impl), jit(_nb_line_sum_impl)
    _nb_bucket = jit(_nb_bucket_impl)
    return SimpleNamespace(gradient=jit(_nb_gradient_impl), keys=jit(_nb_keys_impl), clip=jit(_nb_clip_impl),
                           taper=jit(_nb_taper_impl), taper_weighted=jit(_nb_taper_weighted_impl),
                           feather=jit(_nb_feather_impl), dilate=jit(_nb_dilate_impl),
                           full_gradient=jit(_nb_full_gradient_impl), kth=jit(_nb_kth_impl),
                           kth64=jit(_nb_kth64_impl),
                           translate_pair=jit(_nb_translate_pair_impl), lk_norm=jit(_nb_lk_norm_impl),
                           lk_terms=jit(_nb_lk_terms_impl), lk_gather=jit(_nb_lk_gather_impl),
                           lk_clip=jit(_nb_lk_clip_impl), masked_copy=jit(_nb_masked_copy_impl))


def _kernels():
    """The numba kernels when they are to be used now (see ``_USE_NUMBA``), else None."""
    if _USE_NUMBA is None:
        if _WINDOWS_MATCHED <= _NUMBA_AFTER and "numba" not in sys.modules:
            return None
    elif not _USE_NUMBA:
        return None
    return _nb()


def _dilate_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=...)`` (3 x 3 cross, nothing beyond
    the edge) by shifted in-place ORs: a tenth of its CPU on a window."""
    out = mask.copy()
    prev = np.empty_like(out)
    for _ in range(iterations):
        np.copyto(prev, out)
        out[1:] |= prev[:-1]
        out[:-1] |= prev[1:]
        out[:, 1:] |= prev[:, :-1]
        out[:, :-1] |= prev[:, 1:]
    return out


def _window_condition(grad: np.ndarray, good: np.ndarray, mag: np.ndarray, all_good: bool, tag: str,
                      clip: float | None = None, weight: np.ndarray | None = None
                      ) -> tuple[np.ndarray, float, np.ndarray]:
    """:func:`_condition` of a window from its gradient magnitudes ``mag`` (left
    unchanged), into this thread's ``tag`` buffer; returns it, the clip level and the
    taper (``weight``: the taper of an earlier call with the same ``good``, reused: the
    feathering of mask edges is a 2-D Gaussian filter).

    The clip level is the 90th percentile of every other pixel of every other row when
    all pixels are good (a quarter of the partial sort; a bound on edge weight needs no
    more), or ``clip`` when given (the moving window re-cut at the integer shift keeps
    the level of its first cut: the same image, 90 % the same pixels).
    """
    if clip is None:
        clip = _quantile(mag[::2, ::2] if all_good else mag[good], _CLIP_PERCENTILE)
    out = _scratch(tag, grad.shape, np.complex64)
    nb = _kernels()
    # The compiled loops take their sizes from mag and weight and check no bounds.
    if (nb is not None and clip > 0 and grad.dtype == np.complex64 and grad.strides[1] == 8
            and mag.shape == grad.shape and (weight is None or weight.shape == grad.shape)):
        nb.clip(grad.view(np.float32), mag, np.float32(clip), out.view(np.float32))
        mean = out.mean() if all_good else out[good].mean()
        if weight is None:
            weight = _tukey2d(out.shape)
            if not all_good:
                weight = _feather(good, tag) * good * weight
        nb.taper(out.view(np.float32), np.float32(mean.real), np.float32(mean.imag), weight)
        return out, clip, weight
    if clip > 0:
        w = np.maximum(mag, np.float32(1e-30), out=_scratch(tag + ".w", mag.shape, np.float32))
        np.divide(np.float32(clip), w, out=w)
        np.minimum(w, np.float32(1.0), out=w)
        np.multiply(grad, w, out=out)
    else:
        np.copyto(out, grad)
    out -= (out.mean() if all_good else out[good].mean()).astype(out.dtype)
    if weight is None:
        weight = _tukey2d(out.shape)
        if not all_good:
            weight = _feather(good, tag) * good * weight
    out *= weight
    return out, clip, weight


def _feather_weights(sigma: float) -> np.ndarray:
    """``ndimage.gaussian_filter``'s correlation weights for ``sigma`` (truncate 4), as it
    computes them (float64)."""
    lw = int(4.0 * sigma + 0.5)
    x = np.arange(-lw, lw + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return np.ascontiguousarray((phi / phi.sum())[::-1])


_FEATHER_W = _feather_weights(_FEATHER_SIGMA)


def _feather(good: np.ndarray, tag: str) -> np.ndarray:
    """``ndimage.gaussian_filter(good.astype(np.float32), _FEATHER_SIGMA)``: the soft
    edge of a window's mask (float32, in this thread's ``tag`` buffer). The numba
    kernel gives ndimage's numbers bit for bit in a quarter of its CPU (~0.9 -> 0.25 ms
    on a 256 px window with holes)."""
    src = good.astype(np.float32)
    nb = _kernels()
    if nb is None or min(good.shape) <= len(_FEATHER_W) // 2:  # (the kernel mirrors once at an edge)
        return ndimage.gaussian_filter(src, _FEATHER_SIGMA)
    out = _scratch(tag + ".fe", good.shape, np.float32)
    nb.feather(src, _FEATHER_W, _scratch(tag + ".fe1", good.shape, np.float32), out)
    return out


def _ncc_mag(ma: np.ndarray, mb: np.ndarray, good: np.ndarray, all_good: bool) -> float:
    """:func:`_ncc` from gradient magnitudes (float32 sums: a similarity score needs
    three digits, not fifteen)."""
    if not all_good and good.sum() < 16:
        return float("nan")
    if all_good:
        a = np.subtract(ma, np.float32(ma.mean(dtype=np.float64)), out=_scratch("ncc.a", ma.shape, np.float32))
        b = np.subtract(mb, np.float32(mb.mean(dtype=np.float64)), out=_scratch("ncc.b", mb.shape, np.float32))
        a, b = a.ravel(), b.ravel()
    else:
        a, b = _masked_values(ma, good, "ncc.va"), _masked_values(mb, good, "ncc.vb")
        a -= np.float32(a.mean(dtype=np.float64))
        b -= np.float32(b.mean(dtype=np.float64))
    den = math.sqrt(float(np.einsum("i,i->", a, a)) * float(np.einsum("i,i->", b, b)))
    return float(np.einsum("i,i->", a, b) / den) if den > 0 else float("nan")


def _newton_peak_one(cross: np.ndarray, start: np.ndarray, *, iterations: int = 8) -> np.ndarray:
    """:func:`_newton_peak` of one window: the same Newton steps with matrix-vector
    products, BLAS limited to one thread (a threaded gemv spin-waits on a busy machine:
    measured 145 ms instead of 0.5 ms per call)."""
    with _blas_single_thread():
        return _newton_peak_one_impl(cross, start, iterations=iterations)


def _newton_peak_one_impl(cross: np.ndarray, start: np.ndarray, *, iterations: int) -> np.ndarray:
    rows, cols = cross.shape
    a = 2j * np.pi * np.fft.fftfreq(rows)
    b = 2j * np.pi * np.fft.fftfreq(cols)
    b2 = b * b
    s0, s1 = float(start[0]), float(start[1])
    for _ in range(iterations):
        # Three matrix-vector products (single-precision BLAS, ~9 us each on a 256 px
        # window; one (R, C) @ (C, 3) product costs ~96 us), then the row sums in double
        # precision; the 2 x 2 algebra on Python scalars, not on numpy 2-vectors.
        ec = np.exp(b * s1)
        q0 = (cross @ ec.astype(cross.dtype)).astype(complex)
        q1 = (cross @ (b * ec).astype(cross.dtype)).astype(complex)
        q2 = (cross @ (b2 * ec).astype(cross.dtype)).astype(complex)
        er = np.exp(a * s0)
        ar = a * er
        c, cr, crr = complex(er @ q0), complex(ar @ q0), complex((a * ar) @ q0)
        cc, crc, ccc = complex(er @ q1), complex(ar @ q1), complex(er @ q2)
        cj = c.conjugate()
        g0, g1 = 2 * (cj * cr).real, 2 * (cj * cc).real
        h_rr = 2 * (cr.conjugate() * cr + cj * crr).real
        h_cc = 2 * (cc.conjugate() * cc + cj * ccc).real
        h_rc = 2 * (cr.conjugate() * cc + cj * crc).real
        det = h_rr * h_cc - h_rc**2
        if h_rr < 0 and det > 0:
            d0, d1 = -(h_cc * g0 - h_rc * g1) / det, -(h_rr * g1 - h_rc * g0) / det
        else:
            # Outside the concave core of the peak: move uphill by a bounded step.
            gn = max(math.hypot(g0, g1), 1e-300)
            d0, d1 = 0.25 * g0 / gn, 0.25 * g1 / gn
        d0, d1 = min(max(d0, -0.5), 0.5), min(max(d1, -0.5), 0.5)
        s0 += d0
        s1 += d1
        if max(abs(d0), abs(d1)) < 1e-4:
            break
    return np.array([s0, s1])


def _parabolic_offset(surface: np.ndarray, peak: tuple[int, int]) -> np.ndarray:
    """Sub-pixel offset (rows, cols; each within +-0.5) of the vertex of the parabola
    through the integer peak of ``surface`` and its two neighbours along each axis
    (indices wrap, as on a correlation surface); 0 along an axis where the three values
    do not make a maximum.

    A start for the Newton steps on the cross-power spectrum: they converge to the same
    peak (to ~1e-8 px) from the integer maximum or from here, but from here in one or
    two steps fewer (a step is three matrix-vector products over the whole spectrum,
    ~0.1 ms on a 256 px window; measured 3-4 steps -> 2 on the benchmark windows).
    """
    r, c = int(peak[0]), int(peak[1])
    n0, n1 = surface.shape
    out = np.zeros(2)
    for k, (lo, mid, hi) in enumerate(((surface[r - 1, c], surface[r, c], surface[(r + 1) % n0, c]),
                                       (surface[r, c - 1], surface[r, c], surface[r, (c + 1) % n1]))):
        lo, mid, hi = float(lo), float(mid), float(hi)
        den = lo - 2.0 * mid + hi
        if den < 0.0:
            out[k] = min(max(0.5 * (lo - hi) / den, -0.5), 0.5)
    return out


def estimate_window(reference: np.ndarray, moving: np.ndarray, *, filter_margin: int = _FILTER_MARGIN,
                    search_margin: int, max_shift_px: float | None = None,
                    refine_min_reliability: float = 0.5) -> dict:
    """Shift, reliability and similarity of one window pair (the core of
    :func:`coregister_files`).

    Parameters
    ----------
    reference : numpy.ndarray
        (ws + 2 f, ws + 2 f) float image: the reference window with ``f =
        filter_margin`` px of context on every side (NaN = invalid).
    moving : numpy.ndarray
        (ws + 2 (f + m), ...) float image of the moving file on the same pixel lattice,
        centred on the same window, with ``m = search_margin`` extra px on every side so
        that the window can be re-cut at any integer shift up to ``m``.
    filter_margin, search_margin : int
        ``f`` and ``m`` above (pixels).
    max_shift_px : float, optional
        Reported shifts longer than this get their reliability capped at 0.25 only when
        the peak lies beyond the search margin (the re-cut is then impossible).
    refine_min_reliability : float
        A window with masked or missing pixels (NaN: cloud, nodata) whose estimate is
        at least this reliable is refined by least squares on the pixels both windows
        see (the common mask pulls the phase peak towards zero shift; see
        :func:`coregister`).

    Returns
    -------
    dict
        ``shift_row``, ``shift_col`` (pixels, moving onto reference), ``reliability``
        (0..1), ``similarity_before`` and ``similarity_after`` (gradient-magnitude NCC on
        the window before and after shifting the moving window), ``valid_fraction``.
    """
    global _WINDOWS_MATCHED
    _WINDOWS_MATCHED += 1  # (a lost update between threads only delays the switch to numba)
    f, m = int(filter_margin), int(search_margin)
    ref = np.asarray(reference, np.float32)
    mov = np.asarray(moving, np.float32)
    ws = ref.shape[0] - 2 * f
    if ref.shape != (ws + 2 * f, ws + 2 * f) or mov.shape != (ws + 2 * (f + m),) * 2 or ws < 16:
        raise CoregError(f"estimate_window needs a square reference window with {f} px margin and a moving "
                         f"window {2 * m} px larger; got {ref.shape} and {mov.shape}")
    core = slice(f, f + ws)
    # Both gradients in one pass each; the margins are filter context only. Every large
    # array below is a per-thread buffer (_scratch): none of them outlives this call.
    if f > _GAUSS_HALF:
        g_ref, good_ref = _window_gradient(ref, "ew.ref")
        g_mov, good_mov = _window_gradient(mov, "ew.mov")
    else:  # margins too thin for the interior-only filter: reflect at the edge instead
        g_ref, good_ref = _gradient(ref, np.isfinite(ref))
        g_mov, good_mov = _gradient(mov, np.isfinite(mov))
    g_ref, good_ref = g_ref[core, core], good_ref[core, core]

    def mov_cut(dr, dc):
        sl = (slice(f + m - dr, f + m - dr + ws), slice(f + m - dc, f + m - dc + ws))
        return g_mov[sl], good_mov[sl]

    g0, good0 = mov_cut(0, 0)
    good = good_ref & good0
    all_good = bool(good.all())
    # The share of valid pixels, counted once: an exact integer count over the size equals
    # good.mean() bit for bit (a sum of ones is exact in double), at a fifth of the CPU
    # of a boolean mean (which converts every pixel to double; ~40-60 us a call, twice).
    n_good = good.size if all_good else np.count_nonzero(good)
    valid_share = n_good / good.size
    if not all_good and n_good < MIN_VALID_PIXELS:
        raise CoregError(f"only {n_good} valid overlapping pixels in the {ws} px window "
                         f"(need {MIN_VALID_PIXELS}); use a larger window or an acquisition with less cloud")
    # Magnitudes once: for the clip level, the weights and the similarity scores.
    mag_ref = np.abs(g_ref, out=_scratch("ew.mag_ref", (ws, ws), np.float32))
    mag0 = np.abs(g0, out=_scratch("ew.mag_mov", (ws, ws), np.float32))
    sim_before = _ncc_mag(mag_ref, mag0, good, all_good)
    a, _, taper = _window_condition(g_ref, good, mag_ref, all_good, "ew.a")
    b, clip_mov, _ = _window_condition(g0, good, mag0, all_good, "ew.b", weight=taper)
    # In-place transforms: fa and fb live in the buffers of a and b.
    fa = sfft.fft2(a, workers=1, overwrite_x=True)
    prod = sfft.fft2(b, workers=1, overwrite_x=True)
    np.conjugate(prod, out=prod)
    prod *= fa
    mag = np.abs(prod, out=_scratch("ew.mag", (ws, ws), np.float32))
    mag_max = mag.max()
    if not mag_max > 0:
        return dict(shift_row=0.0, shift_col=0.0, reliability=0.0, similarity_before=sim_before,
                    similarity_after=sim_before, valid_fraction=float(valid_share))
    np.maximum(mag, np.float32(1e-12) * mag_max, out=mag)
    # Times the reciprocal: numpy divides complex by real as complex by complex (five
    # times the CPU of the multiply); the two differ by an ulp.
    phase = np.multiply(prod, np.reciprocal(mag, out=mag), out=_scratch("ew.c", (ws, ws), np.complex64))
    surface = np.abs(sfft.ifft2(phase, workers=1, overwrite_x=True), out=mag)
    pr, pc = np.unravel_index(int(np.argmax(surface)), surface.shape)
    peak = float(surface[pr, pc])
    idx = np.arange(-_PEAK_EXCLUDE, _PEAK_EXCLUDE + 1)
    surface[np.ix_((pr + idx) % ws, (pc + idx) % ws)] = 0.0
    second = float(surface.max())
    ratio = peak / second if second > 0 else float("inf")
    reliability = float(np.clip((ratio - _RATIO_NOISE) / (_RATIO_GOOD - _RATIO_NOISE), 0.0, 1.0))
    ir = int(pr - ws if pr > ws // 2 else pr)
    ic = int(pc - ws if pc > ws // 2 else pc)

    base = (0, 0)
    cross = prod
    if (ir, ic) != (0, 0) and max(abs(ir), abs(ic)) <= m:
        # Re-cut the moving window at the integer shift: both windows then hold the same
        # content under the same taper, so the envelope cannot pull the estimate to zero.
        g1, good1 = mov_cut(ir, ic)
        good_s = good_ref & good1
        all_s = bool(good_s.all())
        if all_s or good_s.sum() >= MIN_VALID_PIXELS:
            base = (ir, ic)
            fa_s, taper_s = fa, taper
            if not ((all_s and all_good) or np.array_equal(good_s, good)):
                a1, _, taper_s = _window_condition(g_ref, good_s, mag_ref, all_s, "ew.a1")
                fa_s = sfft.fft2(a1, workers=1, overwrite_x=True)
            mag1 = np.abs(g1, out=_scratch("ew.mag_mov", (ws, ws), np.float32))  # mag0 is used no more
            b1, _, _ = _window_condition(g1, good_s, mag1, all_s, "ew.b1", clip=clip_mov, weight=taper_s)
            cross = sfft.fft2(b1, workers=1, overwrite_x=True)
            np.conjugate(cross, out=cross)
            cross *= fa_s
    cc = _scratch("ew.c", (ws, ws), np.complex64)  # the phase surface is read: reuse its buffers
    np.copyto(cc, cross)
    cc = np.abs(sfft.ifft2(cc, workers=1, overwrite_x=True), out=mag)
    pk = np.unravel_index(int(np.argmax(cc)), cc.shape)
    k0 = np.array(pk, dtype=float)
    k0 = np.where(k0 > ws // 2, k0 - ws, k0)
    fine = _newton_peak_one(cross, k0 + _parabolic_offset(cc, pk))
    row, col = base[0] + float(fine[0]), base[1] + float(fine[1])
    if max(abs(row - ir), abs(col - ic)) > 1.0:
        reliability = min(reliability, 0.25)  # the two stages disagree: ambiguous match
    if base == (0, 0) and max(abs(ir), abs(ic)) > m:
        reliability = min(reliability, 0.25)  # beyond the margin read: not refined
    if reliability < 1.0:
        # Repeated structure lowers the peak ratio; quadrants agreeing is evidence too.
        mv = mov[f + m:f + m + ws, f + m:f + m + ws]
        rv = ref[core, core]
        reliability = max(reliability, _quadrant_agreement(rv, mv, np.isfinite(rv) & np.isfinite(mv),
                                                           (row, col)))
    if max_shift_px is not None and math.hypot(row, col) > max_shift_px + 0.5 and base == (0, 0):
        reliability = min(reliability, 0.25)
    if (valid_share < _REFINE_BELOW_SHARE and reliability >= refine_min_reliability
            and max(abs(row), abs(col)) <= m - 1):
        # The reference window on the moving window's lattice (NaN beyond it), so that
        # the moving content the shift brings in is read from the search margin.
        # Both frames in double precision (as _refine_masked takes them) and their masks,
        # in this thread's work buffers: as fresh frame-sized arrays they were faulted in
        # again on every call (~1.5 ms of CPU for these four under load, 0.07 ms reused).
        ref_pad = _scratch("ew.rpad", mov.shape, np.float64)
        ref_pad.fill(np.nan)
        ref_pad[m:m + ws + 2 * f, m:m + ws + 2 * f] = ref
        mov64 = _as_float64(mov, "ew.mov64")
        refined = _refine_masked(ref_pad, mov64, np.isfinite(ref_pad, out=_scratch("ew.rpok", mov.shape, bool)),
                                 np.isfinite(mov64, out=_scratch("ew.movok", mov.shape, bool)), (row, col))
        if refined is not None:
            row, col = refined
    # Similarity after: the moving gradient resampled at the estimated shift (filtering
    # and translation commute, so this is the gradient of the shifted window, without
    # resampling and filtering the image again).
    sim_after = float("nan")
    if max(abs(row), abs(col)) <= m - 2:
        g_s, good_s = _keys_resample(g_mov, good_mov, row, col, f + m, ws, scratch=True)
        good_a = good_ref & good_s
        mag_s = np.abs(g_s, out=_scratch("ew.mag_mov", (ws, ws), np.float32))
        sim_after = _ncc_mag(mag_ref, mag_s, good_a, bool(good_a.all()))
    return dict(shift_row=row, shift_col=col, reliability=reliability, similarity_before=sim_before,
                similarity_after=sim_after, valid_fraction=float(valid_share))


def coregister_files(
    reference,
    moving,
    *,
    band: str | None = None,
    window_px: int = 256,
    min_reliability: float = 0.5,
    max_shift_px: float = 20.0,
) -> CoregResult:
    """Global shift of the MOVING file onto the REFERENCE file from one window, read alone.

    The same task as AROSICS' global ``COREG``: one ``window_px`` window at the centre
    of the two footprints' overlap (the next of a 3 x 3 grid of positions when fewer
    than half of its pixels are valid in either file) is read from each file with
    rasterio (the moving one with ``max_shift_px`` + 2 px of margin), and the shift,
    its reliability and the similarity before/after are measured on that window with
    the estimator of :func:`coregister`. Files on different pixel lattices (CRS, pixel
    size or a sub-pixel origin offset), and files where no candidate window is usable,
    are registered by :func:`coregister` on the whole images instead (read with
    :func:`changedet.io.read_raster`; same result type).

    Parameters
    ----------
    reference, moving : str or path-like
        GDAL rasters (GeoTIFF, COG, JPEG2000); the reference needs a projected CRS.
    band, min_reliability, max_shift_px
        As :func:`coregister`.
    window_px : int
        Side of the matching window (reference pixels); clipped to the overlap.

    Returns
    -------
    CoregResult
        ``mode="global"``, one tie point. ``applied`` says whether the shift passes the
        reliability, length and similarity checks (nothing is resampled here: apply it
        with :func:`apply_result`).

    Raises
    ------
    CoregError
        A reference CRS without units of length, footprints that do not overlap, no
        common band (different band counts), an unknown ``band``; and the errors of
        :func:`coregister` when the whole images are used.
    RasterError
        A missing, corrupt or ungeoreferenced file.
    """
    from changedet.io import open_raster, read_raster

    if int(window_px) < 32:
        raise CoregError(f"window_px {window_px} is too small; use at least 32 pixels")
    import rasterio

    # One GDAL environment for both files; no directory listing on open (GDAL still
    # probes the few sidecar names it needs, but a folder of many scenes costs nothing);
    # uncompressed GeoTIFFs read through a memory map instead of the block cache (CPU of
    # reading the two windows of a striped 1024 px file: 3.4 -> 1.9 ms; compressed files
    # are not affected). The price: a file truncated while it is read stops the process
    # with SIGBUS instead of an error, so inputs must not be rewritten during the call.
    # A GeoTIFF's CRS is built from its GeoKeys alone (GTIFF_SRS_SOURCE=GEOKEYS): GDAL's
    # default also builds the EPSG code's definition from the PROJ database to compare
    # (~0.27 ms of a ~0.85 ms open); the two differ only for files whose keys contradict
    # their code, where GDAL keeps the keys' parameters either way, and only the units and
    # the sameness of the two files' CRSs are used here.
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="TRUE", GTIFF_VIRTUAL_MEM_IO="YES", GTIFF_SRS_SOURCE="GEOKEYS"), \
            open_raster(reference) as rsrc, open_raster(moving) as msrc:
        ref, mov = _raster_info(rsrc, reference), _raster_info(msrc, moving)
        to_m = _grid_checks(ref.crs_wkt, tuple(ref.transform))
        ref_bands, mov_bands = _band_indexes(ref, mov, band)
        offset = _lattice_offset(ref, mov)
        found = None
        if offset is not None:
            # Overlap of the two footprints in reference pixels.
            r_a, c_a = max(0, -offset[0]), max(0, -offset[1])
            r_b = min(ref.shape[0], mov.shape[0] - offset[0])
            c_b = min(ref.shape[1], mov.shape[1] - offset[1])
            if r_a >= r_b or c_a >= c_b:
                raise CoregError(
                    f"moving image {mov.path} does not overlap the reference grid of {ref.path}; check the "
                    "CRS of both inputs and that the acquisition covers the AOI"
                )
            ws = int(min(window_px, r_b - r_a, c_b - c_a))
            ws -= ws % 2
            f, m = _FILTER_MARGIN, int(math.ceil(max_shift_px)) + 2
            ref_cls, mov_cls = _class_band(ref), _class_band(mov)
            for r0, c0 in (_window_positions((r_a, r_b, c_a, c_b), ws) if ws >= 32 else []):
                a = _read_box(rsrc, ref, ref_bands, r0 - f, c0 - f, ws + 2 * f, ws + 2 * f)
                _mask_cloud(a, rsrc, ref, ref_cls, r0 - f, c0 - f)
                if not _usable_window(a[f:f + ws, f:f + ws]):
                    continue
                b = _read_box(msrc, mov, mov_bands, r0 + offset[0] - f - m, c0 + offset[1] - f - m,
                              ws + 2 * (f + m), ws + 2 * (f + m))
                _mask_cloud(b, msrc, mov, mov_cls, r0 + offset[0] - f - m, c0 + offset[1] - f - m)
                if not _usable_window(b[f + m:f + m + ws, f + m:f + m + ws]):
                    continue
                found = (a, b, f, m)
                break
    est = None
    if found is not None:
        a, b, f, m = found
        try:
            est = estimate_window(a, b, filter_margin=f, search_margin=m, max_shift_px=max_shift_px,
                                  refine_min_reliability=min_reliability)
        except CoregError:
            est = None  # too few clean pixels in a small window: use the whole images
    if est is None:
        # Different lattices, or no usable window: the whole-image path (reprojection,
        # masks and its clear errors for all-cloud / constant / NaN inputs).
        return coregister(read_raster(reference), read_raster(moving), band=band, min_reliability=min_reliability,
                          max_shift_px=max_shift_px)[1]
    row, col, rel = est["shift_row"], est["shift_col"], est["reliability"]
    sim_before, sim_after = est["similarity_before"], est["similarity_after"]
    length = math.hypot(row, col)
    reason = ""
    if rel < min_reliability:
        reason = below_min_reliability(rel, min_reliability)
    elif length > max_shift_px:
        reason = f"shift {length:.2f} px exceeds max_shift_px {max_shift_px:.2f}"
    elif np.isfinite(sim_before) and np.isfinite(sim_after) and sim_after < sim_before - 0.01:
        reason = f"shift did not improve gradient similarity ({sim_before:.3f} -> {sim_after:.3f})"
    if reason:
        sim_after = sim_before
    xres = ref.transform.a * to_m
    yres = abs(ref.transform.e) * to_m
    return CoregResult(shift_row_px=float(row), shift_col_px=float(col), shift_x_m=float(col * xres),
                       shift_y_m=float(-row * yres), reliability=float(rel), tie_points=1,
                       similarity_before=float(sim_before), similarity_after=float(sim_after),
                       applied=not reason, reason=reason)


def apply_result(reference: xr.DataArray, moving: xr.DataArray, result: CoregResult) -> xr.DataArray:
    """``moving`` on the reference grid, shifted by ``result`` when it was applied
    (a global or network result: one translation).

    Raises
    ------
    CoregError
        A local result (its warp is not stored in the result; use :func:`coregister`),
        or grids that do not overlap.
    """
    if result.mode == "local":
        raise CoregError("apply_result applies one translation; a local result's warp is applied by "
                         "coregister(..., local=True)")
    on_grid = _to_reference_grid(moving, reference, _grid(reference, "reference"))
    return _shift_bands(on_grid, result.shift_row_px, result.shift_col_px) if result.applied else on_grid


# -- local (tie-point grid) mode ------------------------------------------------------
# Windows are matched in one batch: gradient images are prepared once for the whole
# frame, every window pair is cut out with fancy indexing, and all FFTs and sub-pixel
# refinements run as stacked array operations. That is what makes a tie-point grid
# cost about as much as a handful of single matches.
_MIN_WINDOW_GOOD = 0.5      # a window needs this share of valid pixels in both images
# Tie points need a peak ratio above 1.75 (reliability 0.1): unrelated windows and noise
# stay below 1.16 (see _RATIO_NOISE). Wrong peaks that pass are caught by consistency:
_LOCAL_MIN_RELIABILITY = 0.1
_MAD_K = 3.0                # outlier threshold in robust standard deviations of the residual,
_MAD_FLOOR_PX = 0.25        # never tighter than this (sub-pixel noise of good points)
_MAD_CAP_PX = 1.5           # and never looser than this (random shifts must not pass)
# Aperture problem: a window whose edges all run one way (a shoreline, a quay, a field
# border) fixes the shift across them but not along them, and its correlation peak
# still looks sharp. Coherence |sum g^2| / sum |g|^2 of the gradient structure tensor
# is 0 for isotropic texture and 1 for parallel edges; above this the window is dropped
# (eigenvalue ratio below ~0.1).
_MAX_COHERENCE = 0.8
# Windows per pass of estimate_local's surfaces: 8 windows of 256 px are 4 MB of work
# buffers (in cache), and the batched transforms still amortise their set-up.
_LOCAL_CHUNK = 8


@dataclass(frozen=True)
class TiePoints:
    """Tie points of a local match, on the reference grid.

    Attributes
    ----------
    row, col : numpy.ndarray
        Window centres (reference pixels).
    shift_row, shift_col : numpy.ndarray
        Shift (pixels) that moves the moving content onto the reference at each point.
    reliability : numpy.ndarray
        0..1 per point (peak ratio of the window's phase correlation).
    kept : numpy.ndarray of bool
        Points that survived the reliability threshold and the outlier rejection.
    """

    row: np.ndarray
    col: np.ndarray
    shift_row: np.ndarray
    shift_col: np.ndarray
    reliability: np.ndarray
    kept: np.ndarray


def _full_gradient(img: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Clipped complex gradient of the whole frame and its feathered weight (0 where
    invalid); the weight is None when every pixel is clean (a weight of ones)."""
    # Single precision: smoothed gradients are far above float32 rounding, and it halves
    # the cost of the filters, every FFT and every product downstream.
    grad, good = _gradient(img, valid, np.float32, mean64=True)
    all_good = bool(good.all())
    if not all_good and good.sum() < 16:
        return np.zeros(img.shape, np.complex64), np.zeros(img.shape, np.float32)
    mag = np.abs(grad)
    clip = _quantile(mag if all_good else mag[good], _CLIP_PERCENTILE)
    nb = _kernels()
    if clip > 0 and nb is not None and grad.flags.c_contiguous:
        # The window path's clip loop in place (element by element: reading and writing
        # the same sample is safe): the numpy lines below in one pass, bit for bit, and
        # without their two frame-sized temporaries.
        gv = grad.view(np.float32)
        nb.clip(gv, mag, np.float32(clip), gv)
    elif clip > 0:
        np.minimum(np.float32(clip) / np.maximum(mag, np.float32(1e-30)), np.float32(1.0), out=mag)
        grad *= mag
    if all_good:
        return grad, None
    weight = ndimage.gaussian_filter(good.astype(np.float32), _FEATHER_SIGMA) * good
    return grad, weight


def _cut(arr: np.ndarray, r0: np.ndarray, c0: np.ndarray, ws: int, out: np.ndarray | None = None) -> np.ndarray:
    """Stack of ``ws`` x ``ws`` windows with upper-left corners (r0, c0); outside -> 0.
    ``out``: a buffer to cut into (its leading part), used when it is C-contiguous, of
    ``arr``'s dtype and large enough; else a new array is made."""
    rows, cols = arr.shape
    inside = (r0 >= 0) & (c0 >= 0) & (r0 + ws <= rows) & (c0 + ws <= cols)
    shape = (len(r0), ws, ws)
    if out is not None and not (out.flags.c_contiguous and out.dtype == arr.dtype and out.size >= math.prod(shape)):
        out = None
    if out is not None:
        out = out.reshape(-1)[:math.prod(shape)].reshape(shape)
        if not inside.all():
            out.fill(0)
    else:
        # Zero-filled only when some window reaches outside the frame.
        out = (np.empty if inside.all() else np.zeros)(shape, dtype=arr.dtype)
    for i, (r, c) in enumerate(zip(r0.tolist(), c0.tolist())):
        # Plain slices (memcpy) are several times faster than fancy indexing here.
        ra, rb = max(r, 0), min(r + ws, rows)
        ca, cb = max(c, 0), min(c + ws, cols)
        if ra < rb and ca < cb:
            out[i, ra - r:rb - r, ca - c:cb - c] = arr[ra:rb, ca:cb]
    return out


def _window_stack(grad, weight, r0, c0, ws, taper, out=None):
    """Zero-mean, feathered and tapered gradient windows, and each window's valid share
    (``out``: a buffer to build the stack in, see :func:`_cut`)."""
    g = _cut(grad, r0, c0, ws, out)
    rows, cols = grad.shape
    # The numba loops fuse the in-place passes below (one pass over the 25 MB stack of
    # 49 windows of 256 px instead of two or three), same arithmetic and the same values;
    # where a feather weight is 0 the loop may give -0 where numpy gives +0 (equal values,
    # and every later step treats them alike).
    nb = _kernels() if g.dtype == np.complex64 and taper.dtype == np.float32 else None
    if weight is None and np.all((r0 >= 0) & (c0 >= 0) & (r0 + ws <= rows) & (c0 + ws <= cols)):
        # Every pixel of every window is clean: plain means, no feathering.
        mean = g.mean(axis=(1, 2), keepdims=True)
        if nb is None:
            g -= mean
            g *= taper
        else:
            for gi, mi in zip(g, mean[:, 0, 0]):
                nb.taper(gi.view(np.float32), np.float32(mi.real), np.float32(mi.imag), taper)
        return g, np.ones(len(r0))
    w = _cut(np.ones(grad.shape, np.float32) if weight is None else weight, r0, c0, ws)
    inside = w > 0
    count = inside.sum(axis=(1, 2))
    mean = (g.sum(axis=(1, 2), where=inside) / np.maximum(count, 1)).astype(g.dtype)
    if nb is None or w.dtype != np.float32:
        g -= mean[:, None, None]
        g *= w
        g *= taper
    else:
        for gi, mi, wi in zip(g, mean, w):
            nb.taper_weighted(gi.view(np.float32), np.float32(mi.real), np.float32(mi.imag), wi, taper)
    return g, count / float(ws * ws)


@contextlib.contextmanager
def _blas_single_thread():
    """Context limiting BLAS to one thread (the Newton steps' small matrix products).

    Multi-threaded OpenBLAS on these thin (R x C) @ (C x 3) products spin-waits for its
    workers: measured 25 ms per product instead of 0.15 ms on a loaded 2-core machine.
    The limit is process-wide (threadpoolctl sets OpenBLAS's global thread count), so
    overlapping callers (windows of a stack in Dask threads) share one limit: the
    first to enter sets it, the last to leave restores the user's setting. (Some
    OpenBLAS builds ignore a limit set from a secondary thread: then the products
    there run threaded, slower but with the same results.)
    """
    global _BLAS_CONTROLLER, _BLAS_LIMIT, _BLAS_USERS
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it BLAS keeps its default threading
        yield
        return
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            if _BLAS_CONTROLLER is None:
                _BLAS_CONTROLLER = ThreadpoolController()
            # Each BLAS library's own get/set calls (~3 us) rather than
            # ThreadpoolController.limit (~15-40 us, a tenth of a window's Newton steps);
            # only the libraries not already single-threaded are set and restored.
            saved = []
            try:
                for lib in _BLAS_CONTROLLER.lib_controllers:
                    if lib.user_api != "blas":
                        continue
                    try:
                        n = lib.get_num_threads()
                        if n is not None and n != 1:
                            lib.set_num_threads(1)
                            saved.append((lib, n))
                    except Exception:
                        # The limit changes speed, never results: a library whose own
                        # thread calls fail keeps its threading, the others are limited.
                        continue
            except BaseException:
                # Interrupted half-way: the libraries already limited get their setting back.
                _restore_blas(saved)
                raise
            _BLAS_LIMIT = saved
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                limit, _BLAS_LIMIT = _BLAS_LIMIT, None
                _restore_blas(limit or [])


def _restore_blas(saved) -> None:
    """Give each (library, threads) of ``saved`` its thread count back; one library's
    failure does not keep the others at one thread."""
    for lib, n in reversed(saved):
        with contextlib.suppress(Exception):
            lib.set_num_threads(n)


_BLAS_CONTROLLER = None
_BLAS_LIMIT = None
_BLAS_USERS = 0
_BLAS_LOCK = threading.Lock()


def _newton_peak(prod: np.ndarray, start: np.ndarray, *, iterations: int = 8) -> np.ndarray:
    with _blas_single_thread():
        return _newton_peak_impl(prod, start, iterations=iterations)


def _newton_peak_impl(prod: np.ndarray, start: np.ndarray, *, iterations: int) -> np.ndarray:
    """Sub-pixel maximum of ``|c(s)|^2`` for each window, by Newton's method.

    ``prod`` is the cross-power spectrum stack (n, R, C); the cross-correlation at a
    fractional shift s is ``c(s) = sum P(f) exp(2 pi i f.s)``. Its derivatives are
    sums of the same kind, and the kernel is separable in rows and columns, so one
    Newton step costs three matrix-vector products per window: exact (no sampling
    grid, unlike the upsampled DFT) and a fraction of the cost of a 100x upsampling.
    Steps are limited to 0.5 px so that a start in the peak's basin stays there.

    Window by window (:func:`_newton_peak_one_impl`), each stopping when its own step
    is below 1e-4 px: three matrix-vector products per step cost about a third of the
    stacked (n, R, C) @ (n, C, 3) product (a small-matrix gemm per window: ~27 against
    ~96 us on 256 px windows), and converged windows take no further steps.
    """
    start = np.asarray(start, dtype=float)
    return np.stack([_newton_peak_one_impl(p, k, iterations=iterations) for p, k in zip(prod, start)]) \
        if len(prod) else np.zeros((0, 2))


def _coherence(win: np.ndarray) -> np.ndarray:
    """Structure-tensor coherence (0 isotropic .. 1 one orientation) of complex gradient windows."""
    out = np.empty(len(win))
    with _blas_single_thread():
        for i, w in enumerate(win):
            # Two BLAS dot products per window (sum |g|^2 and sum g^2): a quarter of the
            # cost of the elementwise squares and reductions over the stack.
            f = w.ravel()
            s = float(np.vdot(f, f).real)
            z = abs(complex(np.dot(f, f)))  # (gx + i gy)^2 = gx^2 - gy^2 + 2i gx gy
            out[i] = z / s if s > 0 else 1.0
    return out


def _window_grid(shape, ws: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Window centres on a regular grid, the outer windows flush with the frame edges."""
    centres = []
    for n in shape:
        if n <= ws:
            centres.append(np.array([n // 2]))
            continue
        k = int(math.ceil((n - ws) / step)) + 1
        centres.append(np.round(np.linspace(ws // 2, n - ws + ws // 2, k)).astype(int))
    rr, cc = np.meshgrid(*centres, indexing="ij")
    return rr.ravel(), cc.ravel()


def estimate_local(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    window_px: int = 256,
    step_px: int | None = None,
    prior_shift: tuple[float, float] = (0.0, 0.0),
    max_shift_px: float = 20.0,
    refine_masked: bool = True,
    moving_valid: np.ndarray | None = None,
) -> TiePoints:
    """Shift and reliability on a grid of windows (tie points), with outlier rejection.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        2-D float arrays on the same grid; NaN marks invalid pixels.
    valid : numpy.ndarray of bool, optional
        Usable pixels (e.g. cloud-free) on that grid, applied to both images.
    window_px : int
        Side of the matching windows (pixels); clipped to the image size.
    step_px : int, optional
        Spacing of the window centres (pixels); default ``window_px // 2``.
    prior_shift : (float, float)
        Expected shift (e.g. the global estimate); the moving windows are cut at its
        integer part so that large shifts stay inside the windows.
    max_shift_px : float
        Tie points whose shift differs from ``prior_shift`` by more are dropped.
    refine_masked : bool
        Refine the shift of every window with masked or missing pixels (clouds, nodata,
        the frame's edge) by least squares on the pixels both images see, as
        :func:`coregister` does for a whole masked frame: the window's phase peak is
        pulled towards zero shift by the common mask (real texture a third under cloud,
        128 px windows: 0.09 px RMS -> under 0.01).
    moving_valid : numpy.ndarray of bool, optional
        Usable pixels of the moving image alone (its clouds, on that grid). The windows'
        phase correlation masks them in both images, as ``valid``; the refinement of a
        masked window moves them with the moving image (the reference keeps its own
        pixels there), as :func:`coregister`'s global mode does. Without it the
        refinement masks ``valid`` and the moving image's NaN in both images, in place.

    Returns
    -------
    TiePoints
        Every window with at least half of its pixels valid in both images; ``kept``
        marks those with reliability >= ``_LOCAL_MIN_RELIABILITY`` (0.1) within
        ``max_shift_px`` of ``prior_shift`` that are consistent with an affine model of
        the others (residual within 3 robust standard deviations, at least 0.25 px,
        at most 1.5 px).

    Raises
    ------
    CoregError
        Arrays of different shapes, or no window with enough valid pixels.
    """
    # float32 frames (read_raster's) stay float32: the gradients are float32 anyway, the
    # hole fill is averaged in double precision (_gradient's mean64), so the numbers are
    # those of a float64 copy, without the copies (2 x 8 MB for 1024 px frames).
    same32 = np.asarray(reference).dtype == np.float32 and np.asarray(moving).dtype == np.float32
    ref = np.asarray(reference, dtype=np.float32 if same32 else np.float64)
    mov = np.asarray(moving, dtype=np.float32 if same32 else np.float64)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise CoregError(
            f"estimate_local needs two 2-D arrays of the same shape, got {ref.shape} and {mov.shape}"
        )
    fixed = None if valid is None else np.asarray(valid, dtype=bool)
    moving = None if moving_valid is None else np.asarray(moving_valid, dtype=bool)
    if moving is not None:
        valid = moving if fixed is None else fixed & moving
    base = np.isfinite(ref) & np.isfinite(mov)
    if valid is not None:
        base &= np.asarray(valid, dtype=bool)
    v_ref = np.isfinite(ref) & (base if valid is None else np.asarray(valid, bool))
    v_mov = np.isfinite(mov) & (np.ones_like(base) if valid is None else np.asarray(valid, bool))
    if moving is None:
        refine_ref, refine_mov = v_ref, v_mov
    else:
        # The moving image's own mask where it is (the refinement moves it with the image);
        # the reference keeps its own pixels.
        refine_ref = np.isfinite(ref) if fixed is None else np.isfinite(ref) & fixed
        refine_mov = np.isfinite(mov) & moving
    if v_ref.sum() < MIN_VALID_PIXELS or v_mov.sum() < MIN_VALID_PIXELS:
        raise CoregError(
            "too few valid pixels for local co-registration; use an acquisition with less cloud / nodata"
        )
    ws = int(min(window_px, *ref.shape))
    ws -= ws % 2
    step = int(step_px or max(ws // 2, 1))
    cr, cc = _window_grid(ref.shape, ws, step)
    g_ref, w_ref = _full_gradient(ref, v_ref)
    g_mov, w_mov = _full_gradient(mov, v_mov)
    taper = _tukey2d((ws, ws)).astype("float32")
    pri = np.round(np.asarray(prior_shift, float)).astype(int)

    r0 = cr - ws // 2
    c0 = cc - ws // 2
    a, fa_good = _window_stack(g_ref, w_ref, r0, c0, ws, taper)
    del g_ref, w_ref  # (freed now, they lower the call's peak memory: less to fault in again)
    # Moving content that lands at r came from r - shift.
    b, fb_good = _window_stack(g_mov, w_mov, r0 - pri[0], c0 - pri[1], ws, taper)
    use = (fa_good >= _MIN_WINDOW_GOOD) & (fb_good >= _MIN_WINDOW_GOOD)
    # A few masked pixels barely pull the peak; refining costs about a window's estimate.
    masked = (fa_good < _REFINE_BELOW_SHARE) | (fb_good < _REFINE_BELOW_SHARE)
    if not use.any():
        raise CoregError(
            f"no {ws} x {ws} px window has {_MIN_WINDOW_GOOD:.0%} valid pixels in both images; "
            "use a smaller window_px or an acquisition with less cloud / nodata"
        )
    if not use.all():  # (indexing copies both stacks, tens of MB, even when it keeps all)
        a, b, cr, cc, r0, c0, masked = a[use], b[use], cr[use], cc[use], r0[use], c0[use], masked[use]
    n = len(cr)

    # Integer stage and reliability on the phase-normalised surface, as estimate_shift.
    # In place where possible: these stacks are tens of MB, and allocating and filling
    # fresh ones costs about as much as the FFTs themselves.
    coherence = np.maximum(_coherence(a), _coherence(b))
    fa = sfft.fft2(a, workers=cpu_budget(), overwrite_x=True)
    prod = sfft.fft2(b, workers=cpu_budget(), overwrite_x=True)
    np.conjugate(prod, out=prod)
    prod *= fa
    # The two surfaces (phase, then plain) are taken a few windows at a time in two small
    # buffers (moduli, inverse transforms in place): every window's numbers are those of
    # the whole stack at once, and the passes run on data in cache instead of on fresh
    # stack-sized arrays (38 MB for 49 windows of 256 px: faulted in and streamed through
    # memory on every call).
    chunk = min(n, _LOCAL_CHUNK)
    mag_buf = np.empty((chunk, ws, ws), np.float32)
    work_buf = np.empty((chunk, ws, ws), prod.dtype)
    pr, pc = np.empty(n, np.intp), np.empty(n, np.intp)
    peak, second = np.empty(n, mag_buf.dtype), np.empty(n, mag_buf.dtype)
    excl = np.arange(-_PEAK_EXCLUDE, _PEAK_EXCLUDE + 1)
    for s in range(0, n, chunk):
        p = prod[s:s + chunk]
        m = len(p)
        mag = np.abs(p, out=mag_buf[:m])
        floor = 1e-12 * mag.max(axis=(1, 2), keepdims=True) + 1e-30
        np.maximum(mag, floor.astype(mag.dtype), out=mag)
        # Times the reciprocal, as estimate_window: numpy divides complex by real as
        # complex by complex (several times the CPU of the multiply); the two differ by an ulp.
        work = np.multiply(p, np.reciprocal(mag, out=mag), out=work_buf[:m])
        work = sfft.ifft2(work, workers=cpu_budget(), overwrite_x=True)
        surf = np.abs(work, out=mag)
        flat = surf.reshape(m, -1)
        pk = flat.argmax(axis=1)
        pr[s:s + m], pc[s:s + m] = np.unravel_index(pk, (ws, ws))
        peak[s:s + m] = flat[np.arange(m), pk]
        er = (pr[s:s + m, None] + excl[None, :]) % ws
        ec = (pc[s:s + m, None] + excl[None, :]) % ws
        surf[np.arange(m)[:, None, None], er[:, :, None], ec[:, None, :]] = 0.0  # peak read: the rest are others
        second[s:s + m] = flat.max(axis=1)
    ratio = np.where(second > 0, peak / np.maximum(second, 1e-300), np.inf)
    rel = np.clip((ratio - _RATIO_NOISE) / (_RATIO_GOOD - _RATIO_NOISE), 0.0, 1.0)
    rel = np.where(coherence > _MAX_COHERENCE, 0.0, rel)
    ishift = np.stack([np.where(pr > ws // 2, pr - ws, pr), np.where(pc > ws // 2, pc - ws, pc)], axis=1)

    # Sub-pixel stage: re-cut the moving windows at the window's own integer offset (so
    # the window envelopes coincide) and refine the plain cross-correlation.
    tot = pri[None, :] + ishift
    moved = np.any(ishift != 0, axis=1)
    if moved.any():
        # When every window moves, the first product is not needed any more: the re-cut
        # stack is built in its buffer (a fresh stack is 25 MB faulted in on every call).
        b2, _ = _window_stack(g_mov, w_mov, r0[moved] - tot[moved, 0], c0[moved] - tot[moved, 1], ws, taper,
                              out=prod if moved.all() else None)
        fb2 = sfft.fft2(b2, workers=cpu_budget(), overwrite_x=True)
        np.conjugate(fb2, out=fb2)
        if moved.all():  # (as a mask, indexing would copy fa and prod: tens of MB)
            fb2 *= fa
            prod = fb2
        else:
            fb2 *= fa[moved]
            prod[moved] = fb2
        del b2, fb2
    del a, fa  # (the first spectra are read: freed before the second surface)
    prod2 = prod
    # Newton starts at the integer maximum of the plain cross-correlation, as in
    # estimate_shift; a start more than a pixel from the phase peak marks an ambiguous window.
    ccs = np.empty(n, np.intp)
    for s in range(0, n, chunk):
        m = len(prod2[s:s + chunk])
        work = work_buf[:m]
        np.copyto(work, prod2[s:s + m])
        work = sfft.ifft2(work, workers=cpu_budget(), overwrite_x=True)
        ccs[s:s + m] = np.abs(work, out=mag_buf[:m]).reshape(m, -1).argmax(axis=1)
    del work_buf, mag_buf
    k0 = np.stack(np.unravel_index(ccs, (ws, ws)), axis=1).astype(float)
    k0 = np.where(k0 > ws // 2, k0 - ws, k0)
    fine = _newton_peak(prod2, k0)
    shift = tot + fine
    if np.any(np.abs(fine) > 1.1):
        rel = np.where(np.abs(fine).max(axis=1) > 1.1, np.minimum(rel, 0.25), rel)

    if refine_masked:
        _refine_windows(ref, mov, refine_ref, refine_mov, r0, c0, ws, shift,
                        masked & (rel >= _LOCAL_MIN_RELIABILITY))
    kept = (rel >= _LOCAL_MIN_RELIABILITY) & (np.hypot(*(shift - np.asarray(prior_shift)).T) <= max_shift_px)
    kept = _reject_outliers(cr.astype(float), cc.astype(float), shift, kept)
    return TiePoints(cr.astype(float), cc.astype(float), shift[:, 0], shift[:, 1], rel, kept)


def _refine_windows(ref, mov, v_ref, v_mov, r0, c0, ws: int, shift: np.ndarray, which: np.ndarray) -> None:
    """:func:`_refine_masked` on the windows ``which`` (in place in ``shift``).

    Each window is refined on its own pixels plus the filter's margin and the shift's
    reach, so that the moving content the shift brings in is read, not made up.
    """
    rows, cols = ref.shape
    for i in np.flatnonzero(which):
        pad = _FILTER_MARGIN + int(math.ceil(np.abs(shift[i]).max()))
        ra, rb = max(int(r0[i]) - pad, 0), min(int(r0[i]) + ws + pad, rows)
        ca, cb = max(int(c0[i]) - pad, 0), min(int(c0[i]) + ws + pad, cols)
        box = (slice(ra, rb), slice(ca, cb))
        refined = _refine_masked(ref[box], mov[box], v_ref[box], v_mov[box], (float(shift[i, 0]), float(shift[i, 1])))
        if refined is not None:
            shift[i] = refined


def _affine_design(row: np.ndarray, col: np.ndarray, scale: float) -> np.ndarray:
    return np.stack([np.ones_like(row), row / scale, col / scale], axis=1)


def _reject_outliers(row, col, shift, kept) -> np.ndarray:
    """Drop tie points inconsistent with a robust affine fit of the others (iterated)."""
    kept = kept.copy()
    scale = max(float(np.ptp(row)), float(np.ptp(col)), 1.0)
    for _ in range(5):
        k = int(kept.sum())
        if k < 3:
            # Too few for a plane: compare with the median only.
            if k:
                res = np.hypot(*(shift - np.median(shift[kept], axis=0)).T)
                kept &= res <= min(_MAD_CAP_PX, max(_MAD_FLOOR_PX, _MAD_K * 1.4826 * float(np.median(res[kept]))))
            return kept
        model = _affine_design(row, col, scale) if k >= 6 else np.ones((len(row), 1))
        coef, *_ = np.linalg.lstsq(model[kept], shift[kept], rcond=None)
        res = np.hypot(*(shift - model @ coef).T)
        mad = 1.4826 * float(np.median(res[kept]))
        new = kept & (res <= min(_MAD_CAP_PX, max(_MAD_FLOOR_PX, _MAD_K * mad)))
        if int(new.sum()) >= 3 and not (new == kept).all():
            kept = new
        else:
            # Either stable, or a rejection that would leave too few to fit: stop.
            return kept if int(new.sum()) < 3 else new
    return kept


def fit_warp(tp: TiePoints, shape: tuple[int, int], *, warp: str = "smooth",
             smoothing: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Dense shift field (pixels) over ``shape`` fitted to the kept tie points.

    Parameters
    ----------
    tp : TiePoints
    shape : (int, int)
        Rows and columns of the reference grid.
    warp : {"smooth", "affine", "translation"}
        ``affine``: least-squares affine field; ``smooth``: the affine field plus a
        thin-plate spline through the residuals (regularised, evaluated on a coarse
        lattice and interpolated bilinearly); ``translation``: the mean shift.
        ``smooth`` falls back to ``affine`` below 10 kept points and ``affine`` to
        ``translation`` below 6.
    smoothing : float, optional
        Thin-plate regularisation; default the number of kept points (the fit then
        follows systematic distortion but not single-window noise).

    Returns
    -------
    field_row, field_col : numpy.ndarray
        Shift per reference pixel, shape ``shape``.
    rmse : float
        RMS residual (pixels) of the kept tie points against the field.
    """
    if warp not in ("smooth", "affine", "translation"):
        raise CoregError(f"warp {warp!r} is not one of 'smooth', 'affine', 'translation'")
    k = tp.kept
    nk = int(k.sum())
    if nk == 0:
        raise CoregError("no tie point survived the reliability and outlier checks; nothing to fit")
    if warp == "smooth" and nk < 10:
        warp = "affine"
    if warp == "affine" and nk < 6:
        warp = "translation"
    rows, cols = shape
    pts = np.stack([tp.row[k], tp.col[k]], axis=1)
    vals = np.stack([tp.shift_row[k], tp.shift_col[k]], axis=1)
    scale = max(float(rows), float(cols))
    if warp == "translation":
        coef = vals.mean(axis=0)
        fit_pts = np.broadcast_to(coef, vals.shape)

        def at(r, c):
            return np.broadcast_to(coef[0], r.shape), np.broadcast_to(coef[1], r.shape)
    else:
        coef, *_ = np.linalg.lstsq(_affine_design(pts[:, 0], pts[:, 1], scale), vals, rcond=None)

        def affine_at(r, c):
            d = _affine_design(r.ravel(), c.ravel(), scale) @ coef
            return d[:, 0].reshape(r.shape), d[:, 1].reshape(r.shape)

        at = affine_at
        fit_pts = _affine_design(pts[:, 0], pts[:, 1], scale) @ coef
        if warp == "smooth":
            from scipy.interpolate import RBFInterpolator

            resid = vals - fit_pts
            rbf = RBFInterpolator(pts / scale, resid, kernel="thin_plate_spline",
                                  smoothing=float(nk if smoothing is None else smoothing) * 1e-3)
            fit_pts = fit_pts + rbf(pts / scale)

            def at(r, c):  # noqa: F811 - the smooth field replaces the affine one
                ar, ac = affine_at(r, c)
                d = rbf(np.stack([r.ravel(), c.ravel()], axis=1) / scale)
                return ar + d[:, 0].reshape(r.shape), ac + d[:, 1].reshape(r.shape)

    # Evaluate on a coarse lattice (every 16 px) and interpolate: the field is smooth at
    # the tie-point spacing, and a thin-plate spline per pixel would cost seconds.
    lat = 16
    lr = np.unique(np.r_[np.arange(0, rows, lat), rows - 1]).astype(float)
    lc = np.unique(np.r_[np.arange(0, cols, lat), cols - 1]).astype(float)
    gr, gc = np.meshgrid(lr, lc, indexing="ij")
    fr, fc = at(gr, gc)
    ir = np.interp(np.arange(rows), lr, np.arange(len(lr)))
    ic = np.interp(np.arange(cols), lc, np.arange(len(lc)))
    coords = np.meshgrid(ir, ic, indexing="ij")
    field_r = ndimage.map_coordinates(np.asarray(fr, float), coords, order=1, mode="nearest")
    field_c = ndimage.map_coordinates(np.asarray(fc, float), coords, order=1, mode="nearest")
    rmse = float(np.sqrt(np.mean(np.sum((vals - fit_pts) ** 2, axis=1))))
    return field_r, field_c, rmse


def _warp_plane(plane: np.ndarray, field_row: np.ndarray, field_col: np.ndarray, order: int) -> np.ndarray:
    data, finite, out_dtype = _filled(plane)
    if not finite.any():
        return np.full(data.shape, np.nan, dtype=out_dtype)
    rr, cc = np.indices(data.shape, dtype="float64")
    # Content at r moves to r + d(r), so the output at r samples the input at r - d(r).
    src = [rr - field_row, cc - field_col]
    out = ndimage.map_coordinates(data, src, order=order, mode="nearest")
    invalid = ndimage.map_coordinates((~finite).astype(float), src, order=1, mode="constant", cval=1.0)
    out[invalid > 1e-6] = np.nan
    return out.astype(out_dtype, copy=False)


def apply_warp(image, field_row: np.ndarray, field_col: np.ndarray, *, order: int = 3):
    """Move the content of ``image`` by a per-pixel shift field (pixels).

    Parameters
    ----------
    image : numpy.ndarray or xarray.DataArray
        (..., rows, cols); a DataArray must end with dims (y, x).
    field_row, field_col : numpy.ndarray
        Shift (rows, cols) per output pixel: the output at (r, c) takes the input at
        (r - field_row, c - field_col). A constant field equals :func:`apply_shift`.
    order : int
        Spline order of the resampling (3 = cubic).

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        As :func:`apply_shift`: same kind and grid, NaN where the source was outside or
        touched NaN.
    """
    fr = np.asarray(field_row, float)
    fc = np.asarray(field_col, float)
    arr = image.values if isinstance(image, xr.DataArray) else np.asarray(image)
    if fr.shape != arr.shape[-2:] or fc.shape != arr.shape[-2:]:
        raise CoregError(f"shift field shape {fr.shape} does not match the image {arr.shape[-2:]}")
    if isinstance(image, xr.DataArray) and image.dims[-2:] != ("y", "x"):
        raise CoregError(f"DataArray dims {image.dims} must end with ('y', 'x'); transpose it first")
    flat = np.asarray(arr).reshape((-1,) + arr.shape[-2:])
    out = np.stack([_warp_plane(p, fr, fc, order) for p in flat]).reshape(arr.shape)
    if isinstance(image, xr.DataArray):
        res = image.copy(data=out)
        if image.rio.nodata is not None:
            res = res.rio.write_nodata(np.nan, encoded=False)
        return res
    return out


# -- stack mode -----------------------------------------------------------------------
def provenance_fields(result: CoregResult) -> dict:
    """The JSON-able record of a registration stored in a cube slice's provenance."""
    def num(v):
        v = float(v)
        return round(v, 4) if math.isfinite(v) else None

    return {
        "mode": result.mode,
        "shift_row_px": num(result.shift_row_px),
        "shift_col_px": num(result.shift_col_px),
        "shift_x_m": num(result.shift_x_m),
        "shift_y_m": num(result.shift_y_m),
        "reliability": num(result.reliability),
        "tie_points": int(result.tie_points),
        "tie_points_total": int(result.tie_points_total),
        "residual_rmse_px": num(result.residual_rmse_px),
        "similarity_before": num(result.similarity_before),
        "similarity_after": num(result.similarity_after),
        "applied": bool(result.applied),
        "reason": result.reason,
    }


def _register_slice(reference, moving, valid, kwargs):
    """coregister one date; a date that cannot be registered is kept unshifted, not fatal."""
    try:
        return coregister(reference, moving, valid=valid, **kwargs)
    except CoregError as exc:
        ref_grid = GridSpec.of(reference)
        try:
            out = _to_reference_grid(moving, reference, ref_grid)
        except CoregError:
            shape = (moving.shape[0],) + ref_grid.shape if moving.ndim == 3 else ref_grid.shape
            out = xr.full_like(reference.isel(band=0, drop=True) if reference.ndim == 3 else reference,
                               np.nan, dtype="float64")
            if moving.ndim == 3:
                out = out.expand_dims(band=moving["band"].values).transpose("band", "y", "x")
            assert out.shape == shape
        nan = float("nan")
        return out, CoregResult(0.0, 0.0, 0.0, 0.0, 0.0, 0, nan, nan, False, f"not registered: {exc}",
                                mode="local" if kwargs.get("local") else "global", tie_points_total=0)


def coregister_stack(
    stack: xr.DataArray,
    reference: xr.DataArray,
    *,
    valid: xr.DataArray | None = None,
    cube=None,
    scheduler: str | None = None,
    network: bool | str = False,
    per_band: bool = False,
    **kwargs,
) -> tuple[xr.DataArray, list]:
    """Register every date of a cube onto the AOI reference, in parallel over time with Dask.

    Parameters
    ----------
    stack : xarray.DataArray
        (time, band, y, x) or (time, y, x) acquisitions with a CRS (numpy or dask backed),
        e.g. :meth:`changedet.cube.Cube.read`. Any grid that overlaps the reference.
    reference : xarray.DataArray
        (band, y, x) or (y, x) AOI reference with a projected CRS; its grid is the
        output grid.
    valid : xarray.DataArray of bool, optional
        (time, y, x) usable pixels (e.g. cloud-free) per date, on the reference grid.
    cube : changedet.cube.Cube, optional
        When given, each date's shift and quality (:func:`provenance_fields`) is merged
        into its provenance entry as ``{"coreg": ...}`` via ``cube.annotate``, keyed on
        the stack's ``scene_id`` coordinate.
    scheduler : str, optional
        Dask scheduler for the per-date tasks (default: the active one, threads if none;
        a ``distributed.Client`` in scope is used automatically).
    network : bool
        Global shifts from a network of matches instead of one match per date: every
        date against the reference *and against every other date*, then the shift of
        each date by robust weighted least squares over all those matches (a date taken
        in another season than the reference is then tied to it through the dates
        between). Results have ``mode="network"``; not combinable with ``local``.
        ``"whole"`` is the same as True. ``"windows"``: the same network, but each
        pair is matched on a grid of small windows and its shift is a robust mean over
        them, weighted in the solve by its standard error
        (:mod:`changedet.coreg_network`); changed content (moved shorelines, new
        fields) is outvoted instead of averaged in. Results have ``mode="windows"``;
        it accepts ``band``, ``min_reliability``, ``max_shift_px``, ``estimator``
        (``"pc+lk"``, the default: 64 px phase-correlation windows, then 12 px
        precision-weighted Lucas-Kanade windows on the moved dates; ``"pc"``: the first
        stage only, about 9x cheaper and 2x less precise on NAIP; ``"lk"``: the second
        only, for shifts under ~2 px) and ``window_px`` (the last stage's window:
        64 px for ``"pc"``, 12 px for the others). There a date's reliability is ``min(1, kept pair matches / 2)``:
        a date tied to the rest by fewer than two consistent pairs is unreliable (the
        pair weights are inverse variances, px^-2, not a 0-1 score).
    per_band : bool
        With ``network="windows"`` only: solve and apply a separate translation for
        every band, each band matched on itself (the stack's bands must all be in the
        reference). For sensors whose bands are not co-registered with each other: on
        the NAIP series the visible bands sit 0.1-0.3 px from NIR, differently on each
        date, so one translation per date cannot align every band. ``results`` then
        holds one dict band name -> CoregResult per date, and the cube provenance
        ``{"coreg": {"mode": "windows", "per_band": True, "applied": ..., "bands":
        {band: provenance_fields(...)}, "estimator": ...}}``. The windowed network's pair
        estimator is ``estimator=`` in ``**kwargs`` (:data:`changedet.coreg_network.ESTIMATORS`;
        default ``"pc+lk"``), recorded in the provenance of every date.
    **kwargs
        Passed to :func:`coregister` (``local``, ``band``, ``min_reliability`` ...).

    Returns
    -------
    aligned : xarray.DataArray
        (time, band, y, x) on the reference grid; dates that could not be registered
        are kept unshifted (their result says why).
    results : list of CoregResult, or of dict
        One per date, in stack order (with ``per_band=True`` a dict band name ->
        CoregResult). A date that raised :class:`CoregError` (e.g. all cloud) gets
        ``applied=False`` with the error as its reason.

    Raises
    ------
    CoregError
        ``stack`` without a time dimension, ``cube`` without scene ids to key on, or a
        ``valid`` mask with another number of dates.
    """
    import dask

    if not isinstance(stack, xr.DataArray) or "time" not in stack.dims or stack.dims[0] != "time":
        raise CoregError("stack must be a DataArray with a leading 'time' dimension, e.g. Cube.read()")
    if "valid" in kwargs:
        raise CoregError("pass the per-date mask as valid= to coregister_stack, with a time dimension")
    if valid is not None and ("time" not in valid.dims or valid.sizes["time"] != stack.sizes["time"]):
        raise CoregError(f"valid must be (time, y, x) with {stack.sizes['time']} dates, got dims {valid.dims}")
    scene_ids = None
    if cube is not None:
        if "scene_id" not in stack.coords:
            raise CoregError("stack has no scene_id coordinate to key the cube provenance on; read it with "
                             "Cube.read() or assign_coords(scene_id=('time', ids))")
        scene_ids = [str(s) for s in np.atleast_1d(stack["scene_id"].values)]
    _metres_per_unit(_grid(reference, "reference"))  # fail once, not once per date
    ref = reference.load() if reference.chunks is not None else reference
    if network not in (False, True, "whole", "windows"):
        raise CoregError(f"network={network!r} is not a stack mode; use False, True (= 'whole') or 'windows'")
    if per_band and network != "windows":
        raise CoregError("per_band=True needs network='windows' (the windowed network solves one "
                         "translation per band); the other modes register all bands together")
    if network == "windows":
        if kwargs.get("local"):
            raise CoregError("network='windows' estimates one translation per date (and band); it cannot "
                             "be combined with local=True")
        from changedet.coreg_network import DEFAULT_ESTIMATOR, windows_stack

        outs, results, _ = windows_stack(stack, ref, valid=valid, per_band=bool(per_band), scheduler=scheduler,
                                         **kwargs)
        return _assemble_stack(outs, stack, results, scene_ids, cube,
                               {"estimator": str(kwargs.get("estimator", DEFAULT_ESTIMATOR))})
    if network:
        if kwargs.get("local"):
            raise CoregError("network=True estimates one translation per date; it cannot be combined with "
                             "local=True (register locally without network, or globally with it)")
        return _network_stack(stack, ref, valid, cube, scheduler, scene_ids, kwargs)

    tasks = []
    for i in range(stack.sizes["time"]):
        # Each task loads only its own date (lazy stacks stay lazy until then).
        mov = dask.delayed(lambda da: da.load())(stack.isel(time=i, drop=True))
        vm = None if valid is None else valid.isel(time=i, drop=True)
        tasks.append(dask.delayed(_register_slice, pure=False)(ref, mov, vm, kwargs))
    done = dask.compute(*tasks, scheduler=scheduler)
    results = [r for _, r in done]
    return _assemble_stack([a for a, _ in done], stack, results, scene_ids, cube)


# -- network (all-pairs) stack mode ---------------------------------------------------
_NET_MIN_RELIABILITY = 0.1   # matches weaker than this are not used at all
_NET_HUBER_PX = 0.25         # residuals beyond this are down-weighted (IRLS, Huber)


def _net_date(reference, moving, valid, use_band, ref_grid):
    """(image on the reference grid, 2-D band for matching, usable mask) of one date, or the error."""
    try:
        on_grid = _to_reference_grid(moving, reference, ref_grid)
        img = _select_band(on_grid, use_band, "moving")
        ok = np.isfinite(img)
        if valid is not None:
            ok &= _valid_on_grid(valid, reference, ref_grid)
        return on_grid, np.where(ok, img, np.nan), None
    except CoregError as exc:
        return None, None, str(exc)


def _net_pair(a, b):
    """estimate_shift of b onto a, or (0, 0, 0) when the pair cannot be matched."""
    if a is None or b is None:
        return 0.0, 0.0, 0.0
    try:
        return estimate_shift(a, b)
    except CoregError:
        return 0.0, 0.0, 0.0


def solve_network(n: int, pairs, shifts, weights, *, iterations: int = 10):
    """Per-date shifts from pairwise matches by robust weighted least squares.

    Parameters
    ----------
    n : int
        Number of dates.
    pairs : sequence of (int, int)
        ``(i, j)``: the match moved date ``j`` onto date ``i``; ``i = -1`` is the
        reference (whose shift is 0 by definition).
    shifts : numpy.ndarray
        (pairs, 2) measured shift (row, col, pixels) of each match: ``t_j - t_i``.
    weights : numpy.ndarray
        (pairs,) weight of each match (its reliability); 0 = unused.
    iterations : int
        Iteratively reweighted least-squares steps (Huber weights, 0.25 px).

    Returns
    -------
    t : numpy.ndarray
        (n, 2) shift (pixels) that moves each date onto the reference; NaN for dates
        not connected to the reference by matches with weight > 0.
    support : numpy.ndarray
        (n,) sum of the final weights of the matches involving each date.
    kept : numpy.ndarray of bool
        (pairs,) matches whose residual stayed within 3 Huber widths.
    """
    pairs = np.asarray(pairs, int).reshape(-1, 2)
    y = np.asarray(shifts, float).reshape(-1, 2)
    w0 = np.asarray(weights, float).copy()
    w0[~np.all(np.isfinite(y), axis=1)] = 0.0
    a = np.zeros((len(pairs), n))
    for k, (i, j) in enumerate(pairs):
        a[k, j] += 1.0
        if i >= 0:
            a[k, i] -= 1.0
    # Dates connected to the reference through matches of positive weight.
    linked = np.zeros(n, bool)
    changed = True
    while changed:
        changed = False
        for k, (i, j) in enumerate(pairs):
            if w0[k] <= 0:
                continue
            ri = True if i < 0 else linked[i]
            if ri and not linked[j]:
                linked[j] = changed = True
            elif linked[j] and i >= 0 and not linked[i]:
                linked[i] = changed = True
    t = np.full((n, 2), np.nan)
    use = (w0 > 0) & np.array([(i < 0 or linked[i]) and linked[j] for i, j in pairs], bool)
    if not linked.any():
        return t, np.zeros(n), np.zeros(len(pairs), bool)
    cols = np.flatnonzero(linked)
    aa = a[use][:, cols]
    yy = y[use]
    w = w0[use].copy()
    sol = np.zeros((len(cols), 2))
    for _ in range(iterations):
        sw = np.sqrt(w)[:, None]
        sol, *_ = np.linalg.lstsq(aa * sw, yy * sw, rcond=None)
        res = np.hypot(*(yy - aa @ sol).T)
        w = w0[use] * np.minimum(1.0, _NET_HUBER_PX / np.maximum(res, 1e-12))
    t[cols] = sol
    res_all = np.full(len(pairs), np.inf)
    res_all[use] = res
    kept = res_all <= 3 * _NET_HUBER_PX
    support = np.zeros(n)
    wf = np.zeros(len(pairs))
    wf[use] = w
    for k, (i, j) in enumerate(pairs):
        if kept[k]:
            support[j] += wf[k]
            if i >= 0:
                support[i] += wf[k]
    return t, support, kept


def _network_stack(stack, ref, valid, cube, scheduler, scene_ids, kwargs):
    import dask

    unknown = set(kwargs) - {"band", "min_reliability", "max_shift_px"}
    if unknown:
        raise CoregError(f"network=True does not take {sorted(unknown)}; it accepts band, min_reliability "
                         "and max_shift_px")
    band = kwargs.get("band")
    min_rel = float(kwargs.get("min_reliability", 0.5))
    max_shift = float(kwargs.get("max_shift_px", 20.0))
    ref_grid = _grid(ref, "reference")
    to_m = _metres_per_unit(ref_grid)
    n = stack.sizes["time"]
    first = stack.isel(time=0, drop=True)
    use_band = _common_band(ref, first, band)
    ref_img = _select_band(_as_float_with_nan(ref), use_band, "reference")

    dates = []
    for i in range(n):
        mov = dask.delayed(lambda da: da.load())(stack.isel(time=i, drop=True))
        vm = None if valid is None else valid.isel(time=i, drop=True)
        dates.append(dask.delayed(_net_date, nout=3)(ref, mov, vm, use_band, ref_grid))
    pairs = [(-1, j) for j in range(n)] + [(i, j) for i in range(n) for j in range(i + 1, n)]
    imgs = [d[1] for d in dates]
    tasks = [dask.delayed(_net_pair, pure=False)(ref_img if i < 0 else imgs[i], imgs[j]) for i, j in pairs]
    done = dask.compute(dates, tasks, scheduler=scheduler)
    date_out, matches = done
    est = np.array([(r, c) for r, c, _ in matches], float)
    wts = np.array([q for _, _, q in matches], float)
    wts = np.where(wts >= _NET_MIN_RELIABILITY, wts, 0.0)
    t, support, kept = solve_network(n, pairs, est, wts)

    xres = ref_grid.transform.a * to_m
    yres = abs(ref_grid.transform.e) * to_m
    results, outs = [], []
    for i, (on_grid, img, err) in enumerate(date_out):
        if on_grid is None:
            shape = (stack.shape[1],) + ref_grid.shape if stack.ndim == 4 else ref_grid.shape
            out = xr.full_like(ref.isel(band=0, drop=True) if ref.ndim == 3 else ref, np.nan, dtype="float64")
            if stack.ndim == 4:
                out = out.expand_dims(band=stack["band"].values).transpose("band", "y", "x")
            assert out.shape == shape
            outs.append(out)
            nan = float("nan")
            results.append(CoregResult(0.0, 0.0, 0.0, 0.0, 0.0, 0, nan, nan, False, f"not registered: {err}",
                                       mode="network", tie_points_total=0))
            continue
        n_obs = int(sum(1 for k, (a, b) in enumerate(pairs) if b == i or a == i))
        n_kept = int(sum(1 for k, (a, b) in enumerate(pairs) if (b == i or a == i) and kept[k] and wts[k] > 0))
        # Two fully reliable, mutually consistent matches make a date's shift certain.
        rel = float(min(1.0, 0.5 * support[i]))
        row, col = (float(t[i, 0]), float(t[i, 1])) if np.all(np.isfinite(t[i])) else (0.0, 0.0)
        reason = ""
        if not np.all(np.isfinite(t[i])):
            reason = "no reliable match links this date to the reference"
        elif rel < min_rel:
            reason = below_min_reliability(rel, min_rel)
        elif math.hypot(row, col) > max_shift:
            reason = f"shift {math.hypot(row, col):.2f} px exceeds max_shift_px {max_shift:.2f}"
        ok = np.isfinite(ref_img) & np.isfinite(img)
        sim_before = _gradient_ncc(ref_img, img, ok) if ok.sum() >= 16 else float("nan")
        sim_after = sim_before
        out = on_grid
        if not reason:
            out = apply_shift(on_grid, row, col)
            moved = _select_band(out, use_band, "moving")
            seen = ok & np.isfinite(moved)
            if ok.sum() >= 16 and not np.array_equal(seen, ok):
                # Before and after on the same pixels (the move uncovers a border): see coregister.
                sim_before = _gradient_ncc(ref_img, img, seen)
            sim_after = _gradient_ncc(ref_img, moved, seen)
        outs.append(out)
        results.append(CoregResult(row, col, col * xres, -row * yres, rel, n_kept, float(sim_before),
                                   float(sim_after), not reason, reason, mode="network",
                                   tie_points_total=n_obs))
    return _assemble_stack(outs, stack, results, scene_ids, cube)


def _assemble_stack(outs, stack, results, scene_ids, cube, method: dict | None = None):
    """The registered dates as one (time, ...) stack with the input's time coordinates;
    each date's registration recorded in the cube's provenance when a cube is given,
    with ``method`` (how the shifts were estimated, e.g. the windowed network's estimator)."""
    aligned = xr.concat([a.drop_vars([c for c in a.coords if c not in a.dims and c != "spatial_ref"])
                         for a in outs], dim="time", coords="minimal", compat="override")
    aligned = aligned.assign_coords(time=stack["time"].values)
    for c in stack.coords:
        if c != "time" and stack[c].dims == ("time",):
            aligned = aligned.assign_coords({c: ("time", stack[c].values)})
    if cube is not None:
        for sid, res in zip(scene_ids, results):
            if isinstance(res, dict):
                # Per band: one record per band, and whether every band was shifted.
                rec = {"mode": "windows", "per_band": True, "applied": all(r.applied for r in res.values()),
                       "bands": {b: provenance_fields(r) for b, r in res.items()}}
            else:
                rec = provenance_fields(res)
            rec.update(method or {})
            cube.annotate(sid, {"coreg": rec})
    return aligned, results
