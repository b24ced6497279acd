"""Thresholds for change magnitude maps, the change mask, and its area.

Thresholds (:func:`otsu`, :func:`k_mad`) are global statistics: they return a Python
float and so *do* compute. For dask input they never load the whole array: they run a
few passes of blockwise histograms summed with dask reductions (each pass one
``dask.compute``), and only a bounded number of values is ever gathered in memory.
Numpy and dask inputs give bit-identical results because both run the same numpy
code on the same (float64) values.

:func:`change_mask` is lazy (dask in, dask out) and neighbourhood-aware through
``dask.array.map_overlap``; :func:`changed_area_m2` computes a single count.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from changedet.errors import GridError
from changedet.kernels.baseline import MAD_SCALE
from changedet.kernels.change import KernelError, _as_dataarray, _finish, _unwrap

__all__ = ["otsu", "kittler_illingworth", "chi2_threshold", "k_mad", "change_mask", "changed_area_m2"]

#: Histogram bins per refinement pass of the exact dask quantile search.
_SELECT_BINS = 4096
#: At most this many values are gathered into memory to finish a quantile search.
_EXTRACT_LIMIT = 1_000_000


# ---------------------------------------------------------------------------------------
# Finite values, numpy or dask
# ---------------------------------------------------------------------------------------
def _raw(values):
    """(array, is_dask) for a DataArray, numpy or dask array, or array-like."""
    data = values.data if isinstance(values, xr.DataArray) else values
    try:
        import dask.array as da

        if isinstance(data, da.Array):
            if data.ndim == 0:
                data = data.reshape((1,))
            return data.astype("float64"), True
    except ImportError:  # pragma: no cover - dask is a dependency
        pass
    arr = np.asarray(data, dtype="float64")
    return arr, False


def _finite_np(block: np.ndarray) -> np.ndarray:
    v = np.asarray(block, dtype="float64").ravel()
    return v[np.isfinite(v)]


def _stats_block(block: np.ndarray) -> np.ndarray:
    v = _finite_np(block)
    if v.size == 0:
        out = np.array([0.0, np.inf, -np.inf])
    else:
        out = np.array([float(v.size), v.min(), v.max()])
    return out.reshape((1,) * block.ndim + (3,))


def _hist_np(block: np.ndarray, edges: np.ndarray, closed_last: bool) -> np.ndarray:
    """Counts of finite values in bins ``[e_j, e_j+1)``; the last bin closed if asked.

    Written out (not ``np.histogram``) so that the bin a value falls in is decided by
    exactly the same ``searchsorted`` here and in the extraction step.
    """
    v = _finite_np(block)
    nb = len(edges) - 1
    idx = np.searchsorted(edges, v, side="right") - 1
    if closed_last:
        idx[v == edges[-1]] = nb - 1
    ok = (idx >= 0) & (idx < nb)
    return np.bincount(idx[ok], minlength=nb).astype(np.int64)


def _in_interval_np(block: np.ndarray, lo: float, hi: float) -> np.ndarray:
    v = _finite_np(block)
    return v[(v >= lo) & (v < hi)]


def _global_stats(x, is_dask: bool) -> tuple[int, float, float]:
    """(count, min, max) of the finite values; one pass for dask."""
    if not is_dask:
        s = _stats_block(x).reshape(3)
        return int(s[0]), float(s[1]), float(s[2])
    import dask

    blocks = x.map_blocks(
        _stats_block,
        new_axis=x.ndim,
        chunks=tuple((1,) * len(c) for c in x.chunks) + ((3,),),
        dtype="float64",
    )
    axes = tuple(range(x.ndim))
    n, lo, hi = dask.compute(blocks[..., 0].sum(axis=axes), blocks[..., 1].min(axis=axes), blocks[..., 2].max(axis=axes))
    return int(n), float(lo), float(hi)


def _histograms(x, is_dask: bool, edges_list: list[np.ndarray], closed_last: bool) -> list[np.ndarray]:
    """Histograms of ``x`` for several bin sets in one pass (a dask sum reduction)."""
    sizes = [len(e) - 1 for e in edges_list]

    def f(block):
        c = np.concatenate([_hist_np(block, e, closed_last) for e in edges_list])
        return c.reshape((1,) * np.ndim(block) + (c.size,))

    if is_dask:
        total = x.map_blocks(
            f,
            new_axis=x.ndim,
            chunks=tuple((1,) * len(c) for c in x.chunks) + ((sum(sizes),),),
            dtype=np.int64,
        ).sum(axis=tuple(range(x.ndim)))
        counts = np.asarray(total.compute())
    else:
        counts = f(x).reshape(-1)
    return np.split(counts, np.cumsum(sizes)[:-1])


def _extract(x, is_dask: bool, intervals: list[tuple[float, float]]) -> list[np.ndarray]:
    """Finite values of ``x`` inside each half-open interval (small by construction)."""
    if not is_dask:
        return [_in_interval_np(x, lo, hi) for lo, hi in intervals]
    import dask
    from dask import delayed

    blocks = list(x.to_delayed().ravel())
    parts = dask.compute([[delayed(_in_interval_np)(b, lo, hi) for b in blocks] for lo, hi in intervals])[0]
    return [np.concatenate(p) if p else np.empty(0) for p in parts]


def _select(x, is_dask: bool, ranks: list[int], lo: float, hi: float, n: int) -> dict[int, float]:
    """Exact order statistics (0-based ``ranks``) of the finite values in ``[lo, hi)``.

    Histogram refinement: each pass bins the current interval of every pending rank,
    keeps the bin that holds the rank, and stops once that bin holds at most
    ``_EXTRACT_LIMIT`` values, which are then gathered and sorted. Exact (no
    interpolation) so dask and numpy agree to the bit.
    """
    # state per rank: (lo, hi, values below lo, values in [lo, hi))
    state = {r: (lo, hi, 0, n) for r in set(ranks)}
    out: dict[int, float] = {}
    for _ in range(200):  # float64 intervals collapse long before this
        pending = [r for r in state if r not in out]
        if not pending:
            break
        to_hist, to_extract = [], []
        for r in pending:
            a, b, below, count = state[r]
            if np.nextafter(a, np.inf) >= b:
                out[r] = a  # the interval holds a single float value
            elif count <= _EXTRACT_LIMIT:
                to_extract.append(r)
            else:
                to_hist.append(r)
        if to_extract:
            ivs = sorted({state[r][:2] for r in to_extract})
            vals = dict(zip(ivs, _extract(x, is_dask, ivs)))
            for r in to_extract:
                a, b, below, _ = state[r]
                v = np.sort(vals[(a, b)])
                out[r] = float(v[r - below])
        if to_hist:
            ivs = sorted({state[r][:2] for r in to_hist})
            edges = [np.linspace(a, b, _SELECT_BINS + 1) for a, b in ivs]
            hists = dict(zip(ivs, _histograms(x, is_dask, edges, closed_last=False)))
            edges_of = dict(zip(ivs, edges))
            for r in to_hist:
                a, b, below, _ = state[r]
                counts, e = hists[(a, b)], edges_of[(a, b)]
                cum = np.cumsum(counts)
                j = int(np.searchsorted(cum, r - below, side="right"))
                new = (float(e[j]), float(e[j + 1]), below + (int(cum[j - 1]) if j else 0), int(counts[j]))
                if new[:2] == (a, b):
                    # Cannot narrow further (bins collapsed at float resolution): gather.
                    new = (a, b, below, 0)
                state[r] = new
    return out


def _median_exact(x, is_dask: bool, n: int, lo: float, hi: float) -> float:
    a, b = (n - 1) // 2, n // 2
    if not is_dask:
        v = _finite_np(x)
        p = np.partition(v, [a, b])
        return float(0.5 * (p[a] + p[b]))
    s = _select(x, is_dask, [a, b], lo, float(np.nextafter(hi, np.inf)), n)
    return float(0.5 * (np.float64(s[a]) + np.float64(s[b])))


def _require_values(n: int, what: str) -> None:
    if n == 0:
        raise KernelError(
            f"{what}: the input has no finite values (all NaN / nodata); check the cloud mask "
            "or pick another date before thresholding"
        )


# ---------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------
def k_mad(values, *, k: float = 3.0) -> float:
    """Robust outlier threshold ``median + k * 1.4826 * MAD`` of the finite values.

    Parameters
    ----------
    values : array-like, numpy or dask array, or xarray.DataArray
        e.g. a change magnitude map (unitless z units). NaN and +-inf are ignored.
    k : float, optional
        Number of robust standard deviations above the median (default 3).

    Returns
    -------
    float
        Threshold in the units of ``values``. Exact median and MAD (no histogram
        approximation): for dask input they are found by histogram refinement with dask
        reductions (typically 3-5 passes), gathering at most ``_EXTRACT_LIMIT`` values.

    Raises
    ------
    KernelError
        If there is no finite value.
    """
    x, is_dask = _raw(values)
    n, lo, hi = _global_stats(x, is_dask)
    _require_values(n, "k_mad")
    med = _median_exact(x, is_dask, n, lo, hi)
    if is_dask:
        dev = abs(x - med)
        # Bound on |x - med| computed with the same float operations as dev itself,
        # so the largest deviation lies inside the half-open search interval.
        dmax = max(abs(hi - med), abs(lo - med))
        mad = _median_exact(dev, True, n, 0.0, dmax)
    else:
        dev = np.abs(_finite_np(x) - med)
        mad = _median_exact(dev, False, n, 0.0, 0.0)
    return float(med + float(k) * MAD_SCALE * mad)


def _otsu_from_hist(counts: np.ndarray, edges: np.ndarray) -> float:
    centres = 0.5 * (edges[:-1] + edges[1:])
    c = counts.astype("float64")
    w1 = np.cumsum(c)
    w2 = np.cumsum(c[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = np.cumsum(c * centres) / w1
        m2 = (np.cumsum((c * centres)[::-1]) / w2[::-1])[::-1]
        between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    idx = int(np.nanargmax(between))
    # Every split inside an empty gap of the histogram scores the same; argmax takes
    # the first, which hugs the lower class. Put the threshold mid-gap instead.
    nonempty = np.flatnonzero(counts)
    last_low = nonempty[nonempty <= idx].max()
    first_high = nonempty[nonempty > idx].min()
    return float(0.5 * (edges[last_low + 1] + edges[first_high]))


def otsu(values, *, bins: int = 256) -> float:
    """Otsu threshold of the finite values (maximises between-class variance).

    Parameters
    ----------
    values : array-like, numpy or dask array, or xarray.DataArray
        e.g. a change magnitude map. NaN and +-inf are ignored.
    bins : int, optional
        Histogram bins between the minimum and maximum finite value (default 256); the
        threshold resolution is ``(max - min) / bins``.

    Returns
    -------
    float
        Threshold in the units of ``values``; flag ``values > threshold``. It is placed
        in the middle of the empty histogram gap between the two classes (where the
        classic bin-centre rule would hug the lower class). If all finite values are
        equal, that value is returned. Dask input: two passes (min/max, histogram).

    Raises
    ------
    KernelError
        If there is no finite value.

    Notes
    -----
    Otsu assumes two classes of comparable weight; with very little change (well under
    1 % of pixels) it may split the no-change noise instead. :func:`k_mad` is the safer
    default for sparse change.
    """
    if int(bins) < 2:
        raise KernelError(f"bins={bins!r} must be at least 2")
    x, is_dask = _raw(values)
    n, lo, hi = _global_stats(x, is_dask)
    _require_values(n, "otsu")
    if lo == hi:
        return float(lo)
    edges = np.linspace(lo, hi, int(bins) + 1)
    (counts,) = _histograms(x, is_dask, [edges], closed_last=True)
    return _otsu_from_hist(counts, edges)


def _ki_from_hist(counts: np.ndarray, edges: np.ndarray) -> float:
    """Minimum-error threshold: split minimising the two-Gaussian classification cost J(t)."""
    centres = 0.5 * (edges[:-1] + edges[1:])
    c = counts.astype("float64")
    n = c.sum()
    p1 = np.cumsum(c)
    s1 = np.cumsum(c * centres)
    q1 = np.cumsum(c * centres**2)
    p2, s2, q2 = n - p1, s1[-1] - s1, q1[-1] - q1
    with np.errstate(divide="ignore", invalid="ignore"):
        m1, m2 = s1 / p1, s2 / p2
        v1 = q1 / p1 - m1**2
        v2 = q2 / p2 - m2**2
        # Kittler & Illingworth (1986): J = 1 + 2 (P1 ln s1 + P2 ln s2) - 2 (P1 ln P1 + P2 ln P2)
        w1, w2 = p1 / n, p2 / n
        j = 1 + w1 * np.log(v1) + w2 * np.log(v2) - 2 * (w1 * np.log(w1) + w2 * np.log(w2))
    # A class narrower than one bin has a variance of rounding noise (J -> -inf); a split
    # is only a candidate when each class spans at least two bins' worth of spread.
    width = (edges[1] - edges[0]) ** 2 / 12.0
    ok = np.isfinite(j) & (v1 > width) & (v2 > width) & (p1 > 0) & (p2 > 0)
    if not ok.any():
        return _otsu_from_hist(counts, edges)
    j = np.where(ok, j, np.inf)
    idx = int(np.argmin(j))
    return float(edges[idx + 1])


def kittler_illingworth(values, *, bins: int = 256, log: bool = False) -> float:
    """Kittler–Illingworth minimum-error threshold of the finite values.

    Models the histogram as two Gaussian classes (no change, change) with their own
    means, spreads *and* weights, and picks the split that minimises the Bayes
    classification error under that model. Unlike :func:`otsu` it copes with unequal
    class sizes and spreads, the usual case for change magnitude (a wide no-change peak
    and a small changed tail).

    Parameters
    ----------
    values : array-like, numpy or dask array, or xarray.DataArray
        e.g. a change magnitude map. NaN and +-inf are ignored.
    bins : int, optional
        Histogram bins between the smallest and largest finite value (default 256).
    log : bool, optional
        Threshold ``log1p(values)`` instead (for heavy-tailed non-negative magnitudes);
        the result is transformed back to the units of ``values``.

    Returns
    -------
    float
        Threshold in the units of ``values``; flag ``values > threshold``. If no split
        gives two classes wider than a bin, the Otsu threshold of the same histogram.

    Raises
    ------
    KernelError
        If there is no finite value.
    """
    if int(bins) < 4:
        raise KernelError(f"bins={bins!r} must be at least 4")
    x, is_dask = _raw(values)
    if log:
        import dask.array as dka

        x = (dka.log1p(dka.maximum(x, 0)) if is_dask else np.log1p(np.maximum(x, 0)))
    n, lo, hi = _global_stats(x, is_dask)
    _require_values(n, "kittler_illingworth")
    if lo == hi:
        t = float(lo)
    else:
        edges = np.linspace(lo, hi, int(bins) + 1)
        (counts,) = _histograms(x, is_dask, [edges], closed_last=True)
        t = _ki_from_hist(counts, edges)
    return float(np.expm1(t)) if log else t


def chi2_threshold(dof: int, *, alpha: float = 0.01) -> float:
    """Chi-square threshold for a no-change test statistic (e.g. IR-MAD ``chi2``).

    Parameters
    ----------
    dof : int
        Degrees of freedom (the number of bands for IR-MAD).
    alpha : float, optional
        False-alarm probability per no-change pixel (default 0.01): a pixel is flagged
        when its no-change probability is below ``alpha``.

    Returns
    -------
    float
        The ``1 - alpha`` quantile of chi-square(``dof``), in the units of the statistic.
    """
    from scipy.special import gammainccinv

    if int(dof) < 1:
        raise KernelError(f"dof={dof!r} must be a positive integer (the number of bands)")
    if not 0.0 < float(alpha) < 1.0:
        raise KernelError(f"alpha={alpha!r} must be a probability in (0, 1), e.g. 0.01")
    return float(2.0 * gammainccinv(0.5 * int(dof), float(alpha)))


# ---------------------------------------------------------------------------------------
# Mask and area
# ---------------------------------------------------------------------------------------
def _mask_np(mag: np.ndarray, *, threshold: float, footprint, max_small: int, connectivity: int) -> np.ndarray:
    """Threshold, open and drop small objects, plane by plane over the last two axes."""
    from skimage.morphology import opening, remove_small_objects

    with np.errstate(invalid="ignore"):
        m = np.asarray(mag) > threshold  # NaN compares False: nodata is never change
    out = np.empty(m.shape, dtype=bool)
    for idx in np.ndindex(m.shape[:-2]):
        plane = m[idx]
        if footprint is not None:
            # mode="ignore": the image border neither erodes nor grows objects.
            plane = opening(plane, footprint, mode="ignore")
        if max_small > 0 and plane.any():
            # A boolean plane is labelled by skimage itself: its "only one label" warning is
            # for integer label images only, so none is raised (and none needs silencing,
            # which would not be thread-safe in Dask workers).
            plane = remove_small_objects(np.asarray(plane, dtype=bool), max_size=max_small,
                                         connectivity=connectivity)
        out[idx] = plane
    return out


def change_mask(
    magnitude: xr.DataArray,
    *,
    threshold: float,
    min_area_px: int = 9,
    opening_radius_px: int = 1,
    connectivity: int = 1,
) -> xr.DataArray:
    """Boolean change mask: ``magnitude > threshold``, opened, small objects removed.

    Parameters
    ----------
    magnitude : xarray.DataArray
        Change magnitude with ``y`` and ``x`` dims (any leading dims are processed
        plane by plane), e.g. from :func:`~changedet.kernels.baseline.change_magnitude`.
        A bare 2-D array is taken as (y, x).
    threshold : float
        In the units of ``magnitude``, e.g. from :func:`k_mad` or :func:`otsu`. NaN
        pixels are never flagged.
    min_area_px : int, optional
        Objects with fewer pixels than this (after the opening) are removed; <= 1
        keeps everything. Default 9 (a 3x3 block). Pixel units: convert an area with
        ``ceil(area_m2 / GridSpec.of(da).resolution**2)``.
    opening_radius_px : int, optional
        Radius in pixels of the disk used for the morphological opening that removes
        specks and thin lines (default 1, a 3x3 cross); 0 skips the opening.
    connectivity : {1, 2}, optional
        Pixel connectivity for objects: 1 = edge neighbours (default), 2 = also diagonal.

    Returns
    -------
    xarray.DataArray
        bool, same dims/coords (and ``spatial_ref``) as ``magnitude``. Lazy for dask input.

    Notes
    -----
    Dask input is processed with ``map_overlap`` and depth
    ``2 * opening_radius_px + min_area_px`` pixels. That is exact, not an
    approximation at chunk edges: the opening at a pixel reads ``2 * r`` pixels
    around it, and a connected object with fewer than ``min_area_px`` pixels that
    touches a chunk lies within ``min_area_px - 1`` pixels of it, while any larger
    object has at least ``min_area_px`` pixels connected within that distance. So the
    result equals the numpy result for every chunking. The cost is that chunks smaller
    than the depth are merged by dask, and a large ``min_area_px`` means a wide halo;
    keep ``min_area_px`` well below the chunk size (say < 1/4 of it).
    """
    mag, bare = _as_dataarray(magnitude, "magnitude", ("y", "x"))
    if "y" not in mag.dims or "x" not in mag.dims:
        raise KernelError(f"magnitude has dims {mag.dims}; change_mask needs 'y' and 'x'")
    thr = float(threshold)
    if np.isnan(thr):
        raise KernelError("threshold is NaN; compute it from finite values (k_mad / otsu)")
    r = int(opening_radius_px)
    if r < 0:
        raise KernelError(f"opening_radius_px={opening_radius_px!r} must be >= 0")
    if int(connectivity) not in (1, 2):
        raise KernelError(f"connectivity={connectivity!r} must be 1 (edges) or 2 (edges and corners)")
    min_area = int(min_area_px)
    max_small = max(min_area - 1, 0)  # skimage removes objects of <= max_size pixels

    from skimage.morphology import disk

    kw = {
        "threshold": thr,
        "footprint": disk(r) if r > 0 else None,
        "max_small": max_small,
        "connectivity": int(connectivity),
    }
    depth_px = 2 * r + (min_area if max_small > 0 else 0)

    def lifted(arr):
        try:
            import dask.array as da
        except ImportError:  # pragma: no cover
            da = None
        if da is not None and isinstance(arr, da.Array):
            if depth_px == 0:
                return arr.map_blocks(_mask_np, dtype=bool, **kw)
            depth = {i: 0 for i in range(arr.ndim - 2)}
            depth.update({arr.ndim - 2: depth_px, arr.ndim - 1: depth_px})
            # boundary="none": array edges get no padding, so edge chunks see the true
            # image border exactly as the numpy path does.
            return da.map_overlap(_mask_np, arr, depth=depth, boundary="none", dtype=bool, **kw)
        return _mask_np(arr, **kw)

    out = xr.apply_ufunc(
        lifted,
        mag,
        input_core_dims=[["y", "x"]],
        output_core_dims=[["y", "x"]],
        dask="allowed",
    )
    out = out.transpose(*mag.dims)
    return _unwrap(_finish(out, mag, "change_mask"), bare)


def changed_pixels(mask):
    """Which pixels of a change mask count as changed: the one rule of every area count.

    Parameters
    ----------
    mask : array-like or xarray.DataArray
        Boolean (True = changed), or numeric where non-zero finite values are changed:
        0 is unchanged and NaN nodata, as the ``change`` layer (0/1, NaN) the CLI writes.

    Returns
    -------
    Same type as ``mask`` (numpy, dask or DataArray), boolean.
    """
    if mask.dtype == bool:
        return mask
    # np.isfinite dispatches to dask and xarray, so lazy input stays lazy.
    return (mask != 0) & np.isfinite(mask)


def changed_area_m2(mask: xr.DataArray) -> float:
    """Area flagged in a change mask, in square metres of the map (planar pixel area).

    Parameters
    ----------
    mask : xarray.DataArray
        2-D (y, x) mask with pixel-centre coordinates and a CRS in ``spatial_ref``
        (leading dims of size 1 are allowed). Boolean, or numeric where non-zero finite
        values count as changed.

    Returns
    -------
    float
        ``changed pixels * |dx * dy|`` in m^2, with the pixel size derived from the x/y
        coordinates (:meth:`GridSpec.of`) and converted from the CRS's linear unit to
        metres. Computes the count for dask input. Map area: in Web Mercator it is
        1/cos^2(lat) times the ground area; :func:`changedet.change.changed_area_m2`
        (built on this count) gives ground area in any CRS.

    Raises
    ------
    GridError
        If the array has no CRS, or a geographic CRS (pixel area is not constant in m^2;
        reproject to UTM first, see :func:`changedet.grid.utm_crs_for`).
    KernelError
        If the mask has more than one (y, x) plane.
    """
    from changedet.grid import GridSpec

    if not isinstance(mask, xr.DataArray):
        raise KernelError("changed_area_m2 needs a DataArray with x/y coordinates and a CRS to know the pixel size")
    extra = {d: s for d, s in mask.sizes.items() if d not in ("y", "x")}
    if any(s != 1 for s in extra.values()):
        raise KernelError(
            f"mask has extra dims {extra}; select one (y, x) plane first, e.g. mask.isel(time=0)"
        )
    grid = GridSpec.of(mask)
    if not grid.crs.is_projected:
        raise GridError(
            "changed_area_m2 needs a projected CRS (metres); the mask is in "
            f"{grid.crs.name!r}. Reproject it to UTM (changedet.grid.utm_crs_for) first"
        )
    to_m = grid.crs.axis_info[0].unit_conversion_factor or 1.0
    pixel_m2 = abs(grid.transform.a * grid.transform.e) * to_m * to_m
    count = changed_pixels(mask.data).sum()
    count = count.compute() if hasattr(count, "compute") else count
    return float(int(count) * pixel_m2)
