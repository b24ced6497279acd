"""Fused robust baseline + z-score in one pass over the history (numba, optional).

``baseline_zscore(history, image, mad_floor=...)`` gives exactly (bit for bit) what
``zscore(image, robust_baseline(history), mad_floor=...)`` gives, but reads the history
once and writes only the z-scores, so it runs near the memory-bandwidth limit instead
of the several full-array sorts and temporaries of the numpy path.

How: for every (band, row) the kernel copies the history row ``(time, x)`` into a small
buffer, sorts each column with a Batcher odd-even merge sorting network applied to whole
rows (each comparator is a vectorised min/max over x, which LLVM turns into SIMD), takes
the NaN-aware median at fixed ranks, and repeats on the absolute deviations for the MAD.
NaN dates are sorted last as +inf and excluded by count, as in the numpy path. Rows are
spread over threads with ``numba.prange``; dask input runs the kernel per block with
``map_blocks`` (whole time axis per block, chunk in space).

numba is optional: without it the numpy path is used and results are identical.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import xarray as xr

from changedet.kernels.baseline import MAD_SCALE, _check_floor, robust_baseline, zscore
from changedet.kernels.change import KernelError, _as_dataarray, _check_same_grid, _finish, _unwrap

__all__ = ["baseline_zscore", "HAVE_NUMBA", "sorting_network"]

# Found, not imported: importing numba costs about a second, paid only on first use.
HAVE_NUMBA = importlib.util.find_spec("numba") is not None


def sorting_network(n: int) -> np.ndarray:
    """Comparator pairs (i < j) of Batcher's odd-even merge sort for ``n`` inputs.

    Built for the next power of two and pruned of comparators touching the padding
    (virtual +inf elements never move, so the pruned network still sorts ``n``).
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


_KERNEL = None


def _build():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba

    @numba.njit(parallel=True, fastmath=False, cache=True)
    def kernel(hist, img, net, floor, scale, out):  # pragma: no cover - compiled
        nt, nb, ny, nx = hist.shape
        half = np.float32(0.5)
        inf = np.float32(np.inf)
        for r in numba.prange(nb * ny):
            b = r // ny
            y = r % ny
            buf = np.empty((nt, nx), dtype=np.float32)
            cnt = np.zeros(nx, dtype=np.int64)
            for t in range(nt):
                src = hist[t, b, y]
                bt = buf[t]
                for x in range(nx):
                    v = src[x]
                    ok = v == v
                    bt[x] = v if ok else inf
                    cnt[x] += ok
            for c in range(net.shape[0]):
                # Row views indexed by a range variable: no negative-index wraparound
                # checks in the inner loop, so LLVM vectorises the min/max over x.
                bi = buf[net[c, 0]]
                bj = buf[net[c, 1]]
                for x in range(nx):
                    u = bi[x]
                    v = bj[x]
                    bi[x] = min(u, v)
                    bj[x] = max(u, v)
            med = np.empty(nx, dtype=np.float32)
            for x in range(nx):
                n = cnt[x]
                if n == 0:
                    med[x] = np.float32(np.nan)
                else:
                    med[x] = half * (buf[(n - 1) // 2, x] + buf[n // 2, x])
            # Deviations of the valid dates; invalid stay +inf (sorted last).
            for t in range(nt):
                bt = buf[t]
                for x in range(nx):
                    v = bt[x]
                    bt[x] = abs(v - med[x]) if v != inf else inf
            for c in range(net.shape[0]):
                # Row views indexed by a range variable: no negative-index wraparound
                # checks in the inner loop, so LLVM vectorises the min/max over x.
                bi = buf[net[c, 0]]
                bj = buf[net[c, 1]]
                for x in range(nx):
                    u = bi[x]
                    v = bj[x]
                    bi[x] = min(u, v)
                    bj[x] = max(u, v)
            for x in range(nx):
                n = cnt[x]
                if n == 0:
                    out[b, y, x] = np.float32(np.nan)
                else:
                    mad = (half * (buf[(n - 1) // 2, x] + buf[n // 2, x])) * scale
                    s = max(mad, floor)
                    out[b, y, x] = (img[b, y, x] - med[x]) / s

    _KERNEL = kernel
    return kernel


def _np_block(hist: np.ndarray, img: np.ndarray, *, floor: float) -> np.ndarray:
    """(time, band, y, x) float32 history and (band, y, x) image -> z float32 (numba)."""
    hist = np.ascontiguousarray(hist, dtype=np.float32)
    img = np.ascontiguousarray(img, dtype=np.float32)
    out = np.empty(img.shape, dtype=np.float32)
    if hist.shape[0] == 0 or img.size == 0:
        out[...] = np.nan
        return out
    # Positions with ``v != inf`` must really be data: a +inf reflectance is nodata too.
    _build()(hist, img, sorting_network(hist.shape[0]), np.float32(floor), np.float32(MAD_SCALE), out)
    return out


def baseline_zscore(
    history: xr.DataArray, image: xr.DataArray, *, mad_floor: float, use_numba: bool | None = None
) -> xr.DataArray:
    """Robust z-score of ``image`` against the per-pixel median / MAD of ``history``.

    Parameters
    ----------
    history : xarray.DataArray
        (time, band, y, x) float32 image history, NaN for clouds / nodata. Dask input
        must have the whole time and band axes in each block (rechunked if not).
    image : xarray.DataArray
        (band, y, x) new image on the same grid and bands.
    mad_floor : float
        Lower bound on the spread, image units (see :func:`changedet.kernels.zscore`).
    use_numba : bool, optional
        Default: numba when installed and the inputs are float32, else the numpy path.

    Returns
    -------
    xarray.DataArray
        (band, y, x) float32 z-scores equal to
        ``zscore(image, robust_baseline(history), mad_floor=mad_floor)``; NaN where the
        image is NaN or no date of the history is valid. Lazy for dask input.
    """
    floor = _check_floor(mad_floor)
    h, _ = _as_dataarray(history, "history", ("time", "band", "y", "x"))
    img, bare = _as_dataarray(image, "image", ("band", "y", "x"))
    if h.dims != ("time", "band", "y", "x") or img.dims != ("band", "y", "x"):
        raise KernelError(
            f"history has dims {h.dims} and image {img.dims}; baseline_zscore needs (time, band, y, x) "
            "and (band, y, x) (transpose first)"
        )
    img = _check_same_grid(h.isel(time=0, drop=True), img, "history", "image")
    fast = HAVE_NUMBA and h.dtype == np.float32 and img.dtype == np.float32 if use_numba is None else use_numba
    if fast and not HAVE_NUMBA:
        raise KernelError("use_numba=True but numba is not installed: pip install 'numba==0.68.1'")
    if not fast:
        return zscore(img, robust_baseline(h), mad_floor=floor)
    if h.chunks is not None or img.chunks is not None:
        import dask.array as da

        hd = h.data if h.chunks is not None else da.from_array(h.data, chunks=(-1, -1) + img.data.chunks[1:]
                                                                if img.chunks is not None else -1)
        hd = hd.rechunk({0: -1, 1: -1})
        idata = da.asarray(img.data).rechunk(hd.chunks[1:])
        data = da.map_blocks(
            lambda hb, ib: _np_block(hb, ib, floor=floor), hd, idata, dtype=np.float32, drop_axis=0,
            chunks=idata.chunks,
        )
    else:
        data = _np_block(np.asarray(h.data), np.asarray(img.data), floor=floor)
    out = img.copy(data=data)
    return _unwrap(_finish(out, img, "zscore"), bare)
