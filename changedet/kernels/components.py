"""Connected components of a boolean mask that stay whole across dask chunk edges.

Each block is labelled on its own (``scipy.ndimage.label``) with labels offset to be
unique across blocks; then the pixel pairs that touch across every internal block face
(the last row/column of one block against the first of the next, plus diagonals for
8-connectivity) are gathered, merged with union-find, and a lookup table maps every
block label to its component. Only the block faces and one integer per block label
are ever gathered in memory, so the mask itself may be far larger than memory.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from changedet.kernels.change import KernelError, _as_dataarray, _finish, _unwrap

__all__ = ["label_components"]


def _structure(connectivity: int) -> np.ndarray:
    from scipy.ndimage import generate_binary_structure

    return generate_binary_structure(2, 1 if connectivity == 1 else 2)


def _label_np(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    from scipy.ndimage import label

    lab, n = label(np.asarray(mask, dtype=bool), structure=_structure(connectivity))
    return lab.astype(np.int64), int(n)


def _find(parent: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Vectorised root lookup with path halving until every index is a root."""
    while True:
        p = parent[i]
        if np.array_equal(p, i):
            return i
        parent[i] = parent[p]
        i = parent[i]


def _merge(total: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over label pairs -> lookup table (0 stays 0) with consecutive labels."""
    parent = np.arange(total + 1, dtype=np.int64)
    if pairs.size:
        pairs = np.unique(pairs, axis=0)
        # Repeated min-label propagation: converges in O(log) sweeps for chain merges.
        while True:
            ra = _find(parent, pairs[:, 0].copy())
            rb = _find(parent, pairs[:, 1].copy())
            diff = ra != rb
            if not diff.any():
                break
            lo = np.minimum(ra[diff], rb[diff])
            hi = np.maximum(ra[diff], rb[diff])
            np.minimum.at(parent, hi, lo)
        parent = _find(parent, np.arange(total + 1, dtype=np.int64))
    # Consecutive labels in order of the smallest block label of each component.
    _, inverse = np.unique(parent, return_inverse=True)
    return inverse.astype(np.int64)


def _face_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """Label pairs touching across a face: ``a`` and ``b`` are the 1-D lines either side."""
    out = [np.stack([a, b], axis=1)]
    if connectivity == 2:
        out.append(np.stack([a[:-1], b[1:]], axis=1))
        out.append(np.stack([a[1:], b[:-1]], axis=1))
    p = np.concatenate(out)
    return p[(p[:, 0] > 0) & (p[:, 1] > 0)]


def _label_dask(mask, connectivity: int):
    import dask
    import dask.array as da

    mask = mask.astype(bool)
    counts = mask.map_blocks(
        lambda m: np.array([[_label_np(m, connectivity)[1]]], dtype=np.int64),
        chunks=((1,) * mask.numblocks[0], (1,) * mask.numblocks[1]),
        dtype=np.int64,
    ).compute()
    offsets = np.concatenate([[0], np.cumsum(counts.ravel())[:-1]]).reshape(counts.shape)
    total = int(counts.sum())

    def block_labels(m, block_info=None):
        i, j = block_info[0]["chunk-location"]
        lab, _ = _label_np(m, connectivity)
        return np.where(lab > 0, lab + offsets[i, j], 0)

    lab = mask.map_blocks(block_labels, dtype=np.int64)
    # Lines either side of every internal face, gathered in one compute.
    rows = np.cumsum(mask.chunks[0])[:-1]
    cols = np.cumsum(mask.chunks[1])[:-1]
    faces = [(lab[r - 1, :], lab[r, :]) for r in rows] + [(lab[:, c - 1], lab[:, c]) for c in cols]
    faces = dask.compute(*faces) if faces else []
    pairs = [_face_pairs(np.asarray(a), np.asarray(b), connectivity) for a, b in faces]
    pairs = np.concatenate(pairs) if pairs else np.empty((0, 2), np.int64)
    lut = _merge(total, pairs)
    n = int(lut.max()) if lut.size else 0
    return lab.map_blocks(lambda b: lut[b], dtype=np.int64), n


def label_components(mask: xr.DataArray, *, connectivity: int = 1) -> tuple[xr.DataArray, int]:
    """Label the connected components of a 2-D boolean mask.

    Parameters
    ----------
    mask : xarray.DataArray
        (y, x) boolean (or 0/1) mask, numpy- or dask-backed. A bare 2-D array is taken
        as (y, x). NaN is not allowed here (threshold first: NaN is never change).
    connectivity : {1, 2}, optional
        1 = edge neighbours (default), 2 = edges and corners.

    Returns
    -------
    labels : xarray.DataArray
        int64, 0 = background, components numbered 1..n. For numpy input the numbering
        is scipy's (raster order of each component's first pixel); for dask input it is
        consistent but may differ in order. A component crossing chunk edges has one
        label. Lazy for dask input (block labels, one small compute for the counts
        and the faces).
    n : int
        Number of components.
    """
    m, bare = _as_dataarray(mask, "mask", ("y", "x"))
    if m.dims != ("y", "x"):
        raise KernelError(f"mask has dims {m.dims}; label_components needs a 2-D (y, x) mask")
    if int(connectivity) not in (1, 2):
        raise KernelError(f"connectivity={connectivity!r} must be 1 (edges) or 2 (edges and corners)")
    if m.chunks is not None:
        data, n = _label_dask(m.data, int(connectivity))
    else:
        data, n = _label_np(np.asarray(m.data), int(connectivity))
    out = xr.DataArray(data, dims=m.dims, coords=m.coords)
    return _unwrap(_finish(out, m, "label"), bare), n
