"""Fused robust baseline + z-score in one pass over the history (numba, optional).

``baseline_zscore(history, image, mad_floor=...)`` gives exactly (bit for bit, for
finite data with NaN as missing) what ``zscore(image, robust_baseline(history),
mad_floor=...)`` gives, but reads the history once and writes only the z-scores.

How (histories of up to ``MAX_UNROLLED`` dates): a kernel is generated for the number
of dates ``nt`` as straight-line Python and compiled with numba. Per row, tiles of
``_stage(nt)`` pixels (2048 or 4096 for 19 dates: the tile and the next tile fill at
most 60 % of the L2) are first copied date by date into a scratch buffer (L2), each
date's run a cache line further than a multiple of the tile: read in place, the ``nt``
values of a pixel lie a power-of-two plane stride apart (64-256 MiB in a (time, band,
y, x) cube; with numpy's huge pages every date of a pixel falls in the same L1, L2 and
L3 set) and the kernel waited on memory (~100 ns CPU per pixel-band). The copy also counts,
per block of ``_BLOCK`` pixels and in int32 (``_add32``: numba's int64 count halved the
copy's vector lanes), the values the fast paths must not see (``_offpath``: NaN, +-inf
and ``|x| >= 2**127``) and the values with the sign bit set (``_signbit32``).
The compute loop runs over the pixels of a block in chunks of ``_CHUNK`` pixels. Before
each chunk a share of the next tile of every date is software-prefetched (``_prefetch``, an
LLVM intrinsic; every cache line, date after date, so a chunk's lines are consecutive), so
the memory traffic of the next tile's staging overlaps this tile's compute: without it the
staging reads waited on memory between computes (CPU per pixel-band on a memory-resident
19 x 4 x 1024 x 4096 history, 2 threads, old and new kernel in one process, load 5-10:
17.6-20.8 ns before, 13.7-17.1 ns with it). Every second line, counting on the L2's
adjacent-line prefetcher for the rest, still waited on memory (issue strides, 1 thread,
load 3.9-4.9: 11.4-13.3 ns against 9.3-10.5 with every line and the staging copy's own
prefetch only where the compute did not prefetch: /work/notes/s9/K2/ab_landed.txt). A
tile the previous compute did not prefetch (a call's first, one after a narrow tile) is
prefetched by its own staging copy, one date ahead (the hardware prefetcher restarts at
each 4 KiB page). A chunk's lines are two runs of consecutive addresses (the rest of one
date, the start of the next): computing each line's (date, line) from its index made the
prefetch cost as much as the staging copy (session 12: in L2 5.8 -> 5.1 ns per
pixel-band). Where this tile and the next are full tiles of the same call, the next tile
is not staged after the compute but during it, into a second buffer: after each block's
compute, one block's share of every date (prefetched a block earlier) is copied. Staged
a tile at a time, the lines prefetched a tile ahead did not stay in L2 (the dates of a
line share its sets) and the copy waited on L3 and memory (session 12, 2 threads, whole
issue cube under load: wall -14 to -23 %). The staging buffers are aligned to a cache
line. A chunk keeps one pixel's
``nt`` values in scalars, loaded from the one buffer at constant offsets, so LLVM
vectorises it across pixels (8 lanes with AVX2, 16 with AVX-512: ``_CHUNK`` must be a
multiple of the widest vector, or the chunk runs in LLVM's narrow epilogue) with every
comparator of the sorting network (the best known one where listed, 85 comparators for
19 dates; else Batcher's odd-even merge sort) as one min/max pair and no branches (loop
indices are unsigned: no negative-index wraparound code). Per block:

- fast path, blocks of finite values below ``2**127`` in magnitude: sort, median at the
  fixed ranks, and the MAD as a rank of the union of two sorted runs (the deviations of
  the sorted values left of the median decrease, those right of it increase; their signs
  are known, so no ``abs``), ``min`` (a balanced tree) over ``max`` of pairs. Blocks
  with no sign bit set sort the int32 bit patterns (same order, integer min/max issue on
  more vector pipes), the others sort the floats;
- a block with a NaN, infinite or huge date takes the general path: NaN become +inf
  (sorted last; in blocks with no sign bit set by an int32 min on the bit patterns, which
  are then sorted as int32 like the fast path's, else as floats),
  the median is picked per pixel by the count of valid dates with branch-free
  ``max(p, min(s_k, (n - c) * inf))`` terms, the deviations (V-shaped, +inf tail:
  a bitonic sequence) are sorted by a bitonic merger pruned to the ranks the MAD pick
  reads (``prune_network``) and the MAD picked the same way.

How far this is from the memory-bandwidth bound, and where the time goes, is worked out
in ``bench/bench_change.py`` (session 11, AMD Zen 4 with AVX-512: in cache ~6.5 ns per
pixel-band, memory-resident ~6.7-7.9 ns on one core; earlier figures there are for Zen 3;
session 12's changes and figures at its end).

Layout, and a second kernel that reads the dates in place (session 13): the staging
copy is there for date strides that alias (a multiple of 4 KiB: a C-contiguous cube of
power-of-two planes, or a dask block of such chunks). Where the dates lie a few cache
lines off such a multiple they do not share cache sets, and ``_inplace_source``'s
kernel reads them where they lie: per ``_CHUNK`` of pixels it prefetches every date
``_AHEAD`` pixels on, sorts the chunk as int32 bit patterns and checks from the sorted
minimum and maximum whether that was right (``_badsorted``), redoing a chunk that held a
sign bit, NaN, inf or huge value on the staged kernel's other paths (the same
arithmetic, so the same bits). No staging copy, no counting pass over clean data:
issue-shaped history (19 x 4 x 512 x 4096 per date), same process, load 3.2, 1 thread
7.5 -> 3.5-4.5 ns CPU per pixel-band, 2 threads wall 0.095 -> 0.047 s
(/work/notes/s13/KERNEL/ab_pad1.txt). Which kernel runs is decided by the layout
(``_np_block``): a float32 history whose date stride does not alias (``_aliases``: an L1
set model) is read in place with no copy; a C-contiguous aliasing one is staged; any other
(another dtype, a slice, reversed axes) is copied, as it was before, but into
``empty_history``'s layout, which pads each date plane by ``_date_pad`` cache lines.
Dask histories in several time chunks (a cube read from its store has one chunk per
date) are joined per spatial block into that layout where a rechunk joined them before
(``_dates_block``): the same copy, now read in place. Users building a numpy cube get
the fast path with ``empty_history``.

Rows are spread over threads (numba ``nogil`` kernels in a thread pool) for numpy
input; dask input runs the serial kernel per block (whole time axis per block,
chunked in space), so dask's threads give the parallelism. The
generated source is written to a cache folder (``NUMBA_CACHE_DIR`` or
``~/.cache/changedet/kernels``) so numba's on-disk cache spares the compile
(10-30 s for 19 dates on this machine) in later processes. Longer histories use a generic
kernel that sorts row buffers (same results, slower).

numba is optional: without it the numpy path is used and results are identical.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import importlib.util
import inspect
import os
import sys
import threading
from pathlib import Path

import numpy as np
import xarray as xr

from changedet.kernels.baseline import MAD_SCALE, _check_floor, robust_baseline, zscore
from changedet.kernels.change import KernelError, _as_dataarray, _check_same_grid, _finish, _unwrap
from changedet.threads import cpu_budget

__all__ = ["baseline_zscore", "empty_history", "HAVE_NUMBA", "MAX_UNROLLED", "sorting_network", "bitonic_merger",
           "best_network",
           "prune_network"]

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


# Best known (smallest) sorting network for 19 inputs: 85 comparators in 14 layers against
# 98 for the pruned Batcher network (found by B. Dobbelaere's SorterHunter; as listed in
# Morwenn/cpp-sort, sorting_network/sort19.h). 19 history dates is the cube (20
# dates, the newest scored). Checked by the 0-1 principle in the tests.
_BEST = {
    19: ((0, 12), (1, 4), (2, 8), (3, 5), (6, 17), (7, 11), (9, 14), (10, 13), (15, 16),
         (0, 2), (1, 7), (3, 6), (4, 11), (5, 17), (8, 12), (10, 15), (13, 16), (14, 18),
         (3, 10), (4, 14), (5, 15), (6, 13), (7, 9), (11, 17), (16, 18),
         (0, 7), (1, 10), (4, 6), (9, 15), (11, 16), (12, 17), (13, 14),
         (0, 3), (2, 6), (5, 7), (8, 11), (12, 16),
         (1, 8), (2, 9), (3, 4), (6, 15), (7, 13), (10, 11), (12, 18),
         (1, 3), (2, 5), (6, 9), (7, 12), (8, 10), (11, 14), (17, 18),
         (0, 1), (2, 3), (4, 8), (6, 10), (9, 12), (14, 15), (16, 17),
         (1, 2), (5, 8), (6, 7), (9, 11), (10, 13), (14, 16), (15, 17),
         (3, 6), (4, 5), (7, 9), (8, 10), (11, 12), (13, 14), (15, 16),
         (3, 4), (5, 6), (7, 8), (9, 10), (11, 13), (12, 14),
         (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15)),
}


def best_network(n: int) -> np.ndarray:
    """Comparator pairs (i < j) of the smallest sorting network known here for ``n`` inputs.

    A best known network where one is listed (19 inputs: 85 comparators), else
    :func:`sorting_network` (Batcher).
    """
    if n in _BEST:
        return np.asarray(_BEST[n], dtype=np.int64).reshape(-1, 2)
    return sorting_network(n)


def bitonic_merger(n: int) -> np.ndarray:
    """Comparator pairs (i < j) of a bitonic merger that sorts a V-shaped sequence of ``n``.

    Half-cleaners for the next power of two, pruned of comparators touching the padding
    (virtual +inf elements at the end keep the sequence V-shaped and never move).
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    h = size // 2
    while h >= 1:
        for s in range(0, size, 2 * h):
            for i in range(s, s + h):
                if i + h < n:
                    pairs.append((i, i + h))
        h //= 2
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def prune_network(pairs, needed) -> np.ndarray:
    """The comparators of ``pairs`` that any output channel in ``needed`` depends on.

    Back-propagates "needed" from the last comparator to the first: a comparator none of
    whose two outputs is needed is dropped; one that is kept needs both its inputs. The
    kept channels in ``needed`` get the same values as with the whole network.
    """
    need = {int(k) for k in needed}
    keep = []
    for i, j in reversed([(int(a), int(b)) for a, b in pairs]):
        if i in need or j in need:
            keep.append((i, j))
            need |= {i, j}
    return np.asarray(keep[::-1], dtype=np.int64).reshape(-1, 2)


#: Longest history (dates) handled by the generated, vectorised kernel.
MAX_UNROLLED = 32
# Pixels per block: a block with a non-finite date takes the general path, so small
# blocks keep clouds from spreading the slower path; large ones amortise the check.
_BLOCK = 256
# Largest pixels per staging tile (see _stage).
_STAGE = 4096
# Pixels computed between two rounds of next-tile prefetches, and the trip count of the
# vectorised compute loop: LLVM vectorises it at the host's widest vector width (16
# lanes with AVX-512) and runs what is left in a narrower epilogue. Chunks of 8 (one
# AVX2 ymm vector) ran in the 4-lane xmm epilogue on an AVX-512 CPU (AMD Zen 4: in L2
# 11.2 against 7.1-7.5 ns per pixel-band with 16 or 32, same-process A/B). 32 is two
# zmm or four ymm iterations; on Zen 3 (AVX2) 32 was within noise of 8.
_CHUNK = 32
# Floats between two next-tile prefetches: every 64-byte line. Every second line (32,
# counting on the L2's adjacent-line prefetcher for the other) costs ~0.7 ns less per
# pixel-band in L2 but left the memory-resident cube waiting on memory (issue strides,
# same-process A/B, load 5: 1 thread 11.6-12.1 against 10.0-10.4 ns CPU per pixel-band).
_PF_STEP = 16


@functools.lru_cache(maxsize=1)
def _data_caches() -> dict[int, tuple[int, int]]:
    """{level: (size in bytes, ways)} of cpu0's L1 data cache and L2, from Linux sysfs
    (read once: the kernels ask per call and per dask block); {} where unknown."""
    found = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for d in sorted(base.glob("index*")):
            level = int((d / "level").read_text())
            if level in (1, 2) and (d / "type").read_text().strip() != "Instruction":
                size = (d / "size").read_text().strip().upper()
                size = int(size.rstrip("KM")) * {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                ways = int((d / "ways_of_associativity").read_text())
                found[level] = (size, ways)
    except (OSError, ValueError):
        pass
    return found


def _l2_bytes() -> int:
    """Per-core L2 cache size in bytes; 512 KiB (Zen 3) where unknown."""
    return _data_caches().get(2, (512 << 10, 8))[0]


def _stage(nt: int, l2: int | None = None) -> int:
    """Pixels per staging tile for ``nt`` dates: the largest power of two from 1024 to
    ``_STAGE`` whose two staging buffers (the tile computed and the next, staged during
    that compute: 2 x nt x 4 bytes per pixel) fill at most 60 % of the L2 (``l2`` bytes,
    default this CPU's): the rest is the image and output rows, the prefetch running
    ahead and other traffic.

    Measured (19 dates, same-process A/B, memory-resident, 1 thread): Zen 3, 512 KiB L2:
    1024-2048 best, 4096 spilled L2; Zen 4, 1 MiB L2: 4096 against 2048, 7.6 against 8.1
    ns CPU per pixel-band (best of 7 rounds; medians 7.7 and 8.2).
    """
    l2 = _l2_bytes() if l2 is None else l2
    s = _STAGE
    while s > 1024 and 2 * nt * s * 4 > 0.6 * l2:
        s //= 2
    return s


def _cache_sets() -> tuple[tuple[int, int], tuple[int, int]]:
    """(set span in bytes, ways) of the L1 data cache and of the L2; 32 KiB 8-way and
    512 KiB 8-way (Zen 3) where unknown. The set span (size / ways) is the address
    distance at which two lines fall into the same set."""
    caches = _data_caches()
    spans = {lvl: (size // ways, ways) for lvl, (size, ways) in caches.items() if ways > 0 and size % ways == 0}
    return spans.get(1, (4096, 8)), spans.get(2, (65536, 8))


def _set_load(stride: int, nt: int, window: int, span: int) -> int:
    """Most cache lines that ``nt`` windows of ``window`` bytes, ``stride`` bytes apart,
    put into one set of a cache whose sets repeat every ``span`` bytes."""
    lines = max(1, span // 64)
    run = np.arange(window // 64 + 1)  # +1: a window need not start on a line
    first = (np.arange(nt, dtype=np.int64) * stride) % span // 64
    return int(np.bincount(((first[:, None] + run) % lines).ravel(), minlength=lines).max())


def _aliases(stride: int, nt: int) -> bool:
    """True when ``nt`` dates ``stride`` bytes apart crowd an L1 set as read in place.

    The in-place kernel holds, per date, the lines of about two compute chunks in L1.
    Where more than half the ways of some set would hold them (a stride that is a
    multiple of 4 KiB puts every date's lines into the same set: 19 dates in 8 ways)
    they evict each other before use, and the staging kernel is used. Only the L1 is
    tested: its set is fixed by the address bits below 4 KiB, which paging keeps, and a
    stride that spreads the dates over the L1 sets spreads them over the L2's too.
    Measured (19 dates, 4 x 512 x 4096 per date, 1 thread, same process, load 3.2):
    padded by 3, 35 or 67 lines or 256 bytes short of 4 KiB, 3.5-4.5 ns CPU per
    pixel-band in place; unpadded 4.9 in place and 7.5 staged, and in another run
    (load 4.4) unpadded in place 7.6 against 7.5 staged clear and 14.5 against 9.9 on
    a cloudy date. At the issue cube's 256 MiB stride (19 x 4 x 4096 x 4096, load 5):
    in place 31.7 against 6.9 staged, 2 threads 5.04 against 1.02 s: staging stays for
    these strides.
    """
    (span1, ways1), _ = _cache_sets()
    return _set_load(stride, nt, 2 * _CHUNK * 4, span1) > ways1 // 2


@functools.lru_cache(maxsize=64)
def _date_pad(plane: int, nt: int) -> int:
    """Bytes to add to a date plane of ``plane`` bytes so that ``nt`` dates do not alias.

    The smallest multiple of 64 bytes (a cache line: each date stays 64-byte aligned)
    with the lightest L1 set load (:func:`_set_load`, as :func:`_aliases`) and, among
    those, the lightest L2 load of the windows from the compute to the prefetch
    (``_AHEAD`` pixels a date; exact with huge pages). 35 lines for the issue cube's 19
    dates on this machine (32 KiB and 1 MiB 8-way: 19 disjoint 35-line windows in L2).
    """
    (span1, ways1), (span2, ways2) = _cache_sets()
    best, pad = None, 0
    # Up to 128 lines: far enough to give 19 dates disjoint windows in a 128 KiB L2 span.
    for p in range(0, 128 * 64, 64):
        stride = plane + p
        cost = (_set_load(stride, nt, 2 * _CHUNK * 4, span1), _set_load(stride, nt, (_AHEAD + _CHUNK) * 4, span2))
        if best is None or cost < best:
            best, pad = cost, p
    return pad


def empty_history(shape, *, dtype=np.float32) -> np.ndarray:
    """An uninitialised (time, band, y, x) array laid out for :func:`baseline_zscore`.

    Each date plane is followed by a few unused cache lines (:func:`_date_pad`) so that the
    dates of a pixel are not a power of two apart: the fused kernel then reads them in
    place, without its staging copy (19 dates, 2 threads: about half the wall time).
    The array is a view (``.base`` holds the buffer); everything numpy does with a
    (time, band, y, x) array works on it, and slices along time keep the layout.

    Parameters
    ----------
    shape : tuple of int
        (time, band, y, x) sizes.
    dtype : numpy dtype, optional
        float32 (the only dtype the fused kernel reads in place).

    Returns
    -------
    numpy.ndarray
        Uninitialised, C-ordered within each date, ``(y * x * band + pad) * itemsize``
        bytes between dates.
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) != 4 or min(shape) < 0:
        raise KernelError(f"empty_history shape {shape} must be four non-negative sizes (time, band, y, x)")
    dtype = np.dtype(dtype)
    isz = dtype.itemsize
    if 64 % isz:
        raise KernelError(f"empty_history dtype {dtype} has {isz}-byte items; use float32")
    nt, nb, ny, nx = shape
    plane = nb * ny * nx
    st = plane + (_date_pad(plane * isz, nt) // isz if nt > 1 and plane else 0)
    # One line more than the dates need: the start can be moved onto a cache line.
    buf = np.empty(max(nt * st, 1) + 64 // isz, dtype=dtype)
    a0 = (-buf.ctypes.data % 64) // isz
    return np.lib.stride_tricks.as_strided(buf[a0:], shape=shape, strides=(st * isz, ny * nx * isz, nx * isz, isz))


def _in_place(hist: np.ndarray):
    """``(flat, st, sb, sy)`` for the in-place kernel where ``hist`` (float32) can be read
    where it lies and its date stride does not alias (:func:`_aliases`), else None.

    ``flat`` is a read-only 1-D view from the first element to the last, and the strides
    are in floats (0 along an axis of length 1).
    """
    if hist.dtype != np.float32 or hist.size == 0 or not hist.flags.aligned:
        return None
    el = []
    for n, s in zip(hist.shape, hist.strides):
        if n == 1:
            el.append(0)
        elif s <= 0 or s % 4:
            return None
        else:
            el.append(s // 4)
    st, sb, sy, sx = el
    if hist.shape[3] > 1 and sx != 1:
        return None
    if hist.shape[0] > 1 and _aliases(st * 4, hist.shape[0]):
        return None
    span = 1 + sum((n - 1) * e for n, e in zip(hist.shape, el))
    flat = np.lib.stride_tricks.as_strided(hist, shape=(span,), strides=(4,), writeable=False)
    return flat, st, sb, sy


def _padded(hist: np.ndarray) -> np.ndarray:
    """A float32 copy of ``hist`` in the :func:`empty_history` layout."""
    out = empty_history(hist.shape)
    np.copyto(out, hist, casting="unsafe")
    return out


def _kth_of_two_sorted(a: list[str], b: list[str], r: int) -> str:
    """Expression for the rank-``r`` (0-based) value of the union of sorted runs a, b."""
    k = r + 1
    terms = []
    # i values from a and k - i from b: the k-th value is the smallest of the largest
    # elements over all feasible splits.
    for i in range(max(0, k - len(b)), min(len(a), k) + 1):
        x = a[i - 1] if i > 0 else None
        y = b[k - i - 1] if k - i > 0 else None
        terms.append(y if x is None else x if y is None else f"max({x}, {y})")
    # A balanced tree of min: log depth instead of a serial chain of len(terms).
    while len(terms) > 1:
        terms = [f"min({terms[i]}, {terms[i + 1]})" if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


class _Emit:
    """Source emitters shared by the generated kernels: lines go to ``L``, indented by ``ind``.

    ``net`` sorts ``nt`` values, ``merge`` is the general path's pruned bitonic merger.
    """

    def __init__(self, L: list[str], nt: int, net, merge):
        self.L, self.nt, self.net, self.merge = L, nt, net, merge
        self.lo, self.hi = (nt - 1) // 2, nt // 2

    def exchange(self, ind, p, pairs):
        # min/max lower to one select each (numba), which LLVM turns into vminps/vmaxps.
        for i, j in pairs:
            self.L.extend([f"{ind}u = {p}{i}", f"{ind}v = {p}{j}",
                           f"{ind}{p}{i} = min(u, v)", f"{ind}{p}{j} = max(u, v)"])

    def pick(self, ind, p, var):
        # s_lo and s_hi of the ascending run for a per-pixel count n, without branches:
        # (n - c) * inf is +inf where rank k is within the count and -inf beyond it.
        self.L.append(f"{ind}a = -inf")
        self.L.extend(f"{ind}a = max(a, min({p}{k}, (n - np.float32({2 * k + 0.5})) * inf))"
                      for k in range(self.lo + 1))
        self.L.append(f"{ind}c = -inf")
        self.L.extend(f"{ind}c = max(c, min({p}{k}, (n - np.float32({2 * k - 0.5})) * inf))"
                      for k in range(self.hi + 1))
        self.L.append(f"{ind}{var} = half * (a + c)")

    def general_tail(self, ind, p):
        # Median and MAD of the valid dates of sorted values p0 <= ... (invalid ones +inf, last).
        self.pick(ind, p, "med")
        # No date valid: med is NaN, so is z. Invalid dates give +inf deviations (sorted last).
        self.L.extend(f"{ind}d{t} = abs({p}{t} - med)" for t in range(self.nt))
        self.exchange(ind, "d", self.merge)
        self.pick(ind, "d", "mad")
        self.L.append(f"{ind}o[x] = (im[x] - med) / max(mad * scale, floor)")

    def tail(self, ind, val):
        # Median and MAD of the sorted values val(0) <= ... <= val(self.nt - 1), and z.
        self.L.append(f"{ind}med = half * ({val(self.lo)} + {val(self.hi)})")
        # Sorted, so the deviations' signs are known: med lies in [s_lo, s_hi] (rounding
        # is monotonic), and fl(med - s) == abs(fl(s - med)) (round to nearest is
        # symmetric; both are +0 where s == med): no abs instructions.
        self.L.extend(f"{ind}d{t} = med - {val(t)}" if t <= self.lo else f"{ind}d{t} = {val(t)} - med"
                      for t in range(self.nt))
        left = [f"d{k}" for k in range(self.lo, -1, -1)]  # ascending: deviations left of the median
        right = [f"d{k}" for k in range(self.lo + 1, self.nt)]
        self.L.append(f"{ind}m0 = {_kth_of_two_sorted(left, right, self.lo)}")
        self.L.append(f"{ind}m1 = {_kth_of_two_sorted(left, right, self.hi)}" if self.hi != self.lo
                      else f"{ind}m1 = m0")
        # abs: without abs on the deviations, two zeros of opposite sign give a -0.0
        # MAD, and max(-0.0, +0.0 floor) keeps -0.0: z flips sign (numpy's MAD is +0).
        self.L.append(f"{ind}o[x] = (im[x] - med) / max(abs(half * (m0 + m1)) * scale, floor)")


def _kernel_source(nt: int) -> str:
    """Python source of the straight-line kernel for ``nt`` history dates (see module doc)."""
    net = [tuple(int(v) for v in p) for p in best_network(nt)]
    lo, hi = (nt - 1) // 2, nt // 2
    # The general path's MAD pick reads the sorted deviations up to rank hi only (a count
    # of n valid dates puts the MAD at ranks (n-1)//2 and n//2): 30 of the merger's 37
    # comparators for 19 dates. The fast path reads every rank of the sort (the MAD is
    # a rank of the union of the runs left and right of the median): nothing to prune.
    merge = [tuple(int(v) for v in p) for p in prune_network(bitonic_merger(nt), range(hi + 1))]
    stage = _stage(nt)
    # One staging buffer, date t at t * sd floats: the compute loop addresses every date
    # from one base register with constant offsets (19 base pointers ran out of general
    # registers). The 16-float pad puts each date one cache line further, so the dates
    # of a pixel do not all share a cache set.
    sd = stage + 16
    # Next-tile prefetch: lpt addresses _PF_STEP floats apart per date, npf before each
    # chunk (date-major, so that one chunk's lines are consecutive and hit different sets).
    lpt = stage // _PF_STEP
    lsh = lpt.bit_length() - 1
    # The addresses split a line number j into (date, line) with a shift and a mask.
    assert lpt > 0 and lpt & (lpt - 1) == 0, "stage // _PF_STEP must be a power of two"
    npf = lpt * nt // (stage // _CHUNK)
    # Every chunk prefetches the same number of lines and the tile's chunks cover its lines
    # exactly; a chunk's lines span at most two dates (npf <= lpt: nt <= MAX_UNROLLED).
    assert npf * (stage // _CHUNK) == lpt * nt and npf <= lpt, (nt, stage)
    nbk = stage // _BLOCK  # blocks in a full tile
    ns = nt * sd  # floats of one staging buffer
    L = [
        f'"""Generated by changedet.kernels.fast for {nt} history dates (v8); do not edit."""',
        "import numpy as np",
        "",
        "from changedet.kernels.fast import _add32, _asfloat32, _offpath, _prefetch, _signbit32",
        "",
        "",
        "def kernel(hist, img, floor, scale, out, r0, r1):",
        "    nb, ny, nx = img.shape",
        "    half = np.float32(0.5)",
        "    inf = np.float32(np.inf)",
        "    iinf = np.int32(0x7F800000)",  # +inf's bit pattern
        # Per block of each of the two buffers (block s of buffer k at k * (nbk + 1) + s):
        # counts of off-path values and of values with the sign bit set (-0.0 included).
        f"    flags = np.zeros({2 * (nbk + 1)}, dtype=np.int64)",
        f"    negs = np.zeros({2 * (nbk + 1)}, dtype=np.int64)",
        # Two staging buffers: the tile being computed and the next one, staged during
        # that compute (below). Aligned to a cache line (numba's allocation of this size
        # sat 32 bytes off one, so every 16-lane load and store of the staged values
        # straddled two lines): in L2 / L3 at the plane stride 2-4 % less CPU
        # (same-process A/B, 1 thread, load 4.5-5), memory-resident within noise.
        f"    bufa = np.empty({2 * ns + 16}, dtype=np.float32)",
        "    a0 = ((64 - bufa.ctypes.data % 64) % 64) // 4",
        f"    buf = bufa[a0:a0 + {2 * ns}]",
        # The same values as int32 bit patterns, for the sign-clear paths.
        "    bufi = buf.view(np.int32)",
        # Flat view for the prefetch addresses: a row's successor in the same date plane
        # is the next (band, y) row, so "the next tile" is just further along.
        "    hf = hist.reshape(-1)",
        "    plane = nb * ny * nx",
        # 1 while the tile about to be staged was not prefetched during the previous
        # tile's compute (a call's first tile, a tile after a narrow one): its staging
        # copy then prefetches one date ahead itself.
        "    cpf = 1",
        # The buffer holding the current tile, and 1 when the previous tile's compute
        # staged it there already.
        "    cur = 0",
        "    staged = 0",
        "    for r in range(r0, r1):",
        "        b = r // ny",
        "        y = r - b * ny",
        f"        for x0 in range(0, nx, {stage}):",
        f"            w = min({stage}, nx - x0)",
        f"            nsub = (w + {_BLOCK - 1}) // {_BLOCK}",
        f"            co = cur * {ns}",
        f"            fo = cur * {nbk + 1}",
        "            if staged == 0:",
        "                for t in range(nsub):",
        "                    flags[fo + t] = 0",
        "                    negs[fo + t] = 0",
        # Staging: one date at a time, so each read is a long contiguous run (read in
        # place, the dates of a pixel a power-of-two stride apart, it waited on memory).
        f"                for t in range({nt}):",
        "                    src = hist[t, b, y, x0:x0 + w]",
        f"                    dst = buf[co + t * {sd}:co + t * {sd} + w]",
        # Unless the previous compute prefetched this tile: while date t is copied, the
        # same tile of date t + 1 (after the last date: the next tile of date 0) is
        # prefetched a line at a time, one date ahead: the hardware prefetcher restarts
        # at every 4 KiB page and a tile is 2 pages per date. Done on top of the compute's
        # prefetch it only cost instructions (memory-resident, 256 MiB plane stride:
        # 1 thread 10.2 -> 9.3 ns CPU per pixel-band).
        f"                    pn = (t + 1) * plane + r * nx + x0 if t < {nt - 1} else r * nx + x0 + w",
        "                    for s in range(nsub):",
        f"                        m = min({_BLOCK}, w - s * {_BLOCK})",
        # Views indexed from 0 by a range variable: no negative-index wraparound checks,
        # so LLVM vectorises the copy and the count.
        f"                        sv = src[s * {_BLOCK}:s * {_BLOCK} + m]",
        f"                        dv = dst[s * {_BLOCK}:s * {_BLOCK} + m]",
        "                        for q in range(0, m * cpf, 16):",
        f"                            _prefetch(hf, pn + s * {_BLOCK} + q)",
        # An int32 count keeps the copy 8 lanes wide: numba's int64 count halved the
        # lanes and cost as much as the copy itself (0.21 against 0.12 ns per value).
        "                        bad = np.int32(0)",
        "                        neg = np.int32(0)",
        "                        for i in range(m):",
        "                            v = sv[i]",
        "                            dv[i] = v",
        # NaN, +-inf and |v| >= 2**127 (see _offpath): those blocks take the general path.
        "                            bad = _add32(bad, _offpath(v))",
        "                            neg = _add32(neg, _signbit32(v))",
        "                        flags[fo + s] += bad",
        "                        negs[fo + s] += neg",
        # The next tile: the rest of this row, else the next row's first. It is staged
        # during this tile's compute ("il") when both are full tiles and it lies in this
        # call's rows; else it is staged on its own, after this compute.
        "            xn = x0 + w",
        "            rn = r",
        "            if xn >= nx:",
        "                xn = 0",
        "                rn = r + 1",
        "            pnext = rn * nx + xn",
        f"            il = 1 if w == {stage} and rn < r1 and nx - xn >= {stage} else 0",
        # The tile after the next, whose first block the end of this compute prefetches
        # when the next is staged during it.
        f"            p2 = pnext + {stage} if xn + {stage} < nx else (rn + 1) * nx",
        f"            if p2 + {stage} > plane:",
        "                p2 = pnext",
        # Near the end of the array the tile prefetches itself, which keeps most
        # prefetches inside the array (a narrow last tile or an array smaller than a tile
        # still reaches up to a tile past its end: a prefetch never faults, it only costs
        # a page walk on an unmapped page). A tile narrower than the stage has fewer
        # chunks than prefetch slots and covers the first dates only: the next tile's
        # staging copy then prefetches for itself (cpf).
        f"            cpf = 0 if w == {stage} else 1",
        f"            if pnext + {stage} > plane:",
        "                pnext = r * nx + x0",
        "                cpf = 1",
        f"            no = (1 - cur) * {ns}",
        f"            fn = (1 - cur) * {nbk + 1}",
        # Staged during this compute, the next tile is prefetched one block ahead of its
        # copy: lines from sh on (the first block's lines were prefetched by the previous
        # compute, or are not: a call's first interleaved tile waits for them once).
        f"            sh = {nt * _BLOCK // _PF_STEP} if il else 0",
        "            if il:",
        f"                for t in range({nbk}):",
        "                    flags[fn + t] = 0",
        "                    negs[fn + t] = 0",
        "            for s in range(nsub):",
        f"                i0 = s * {_BLOCK}",
        f"                m = min({_BLOCK}, w - i0)",
        "                im = img[b, y, x0 + i0:x0 + i0 + m]",
        "                o = out[b, y, x0 + i0:x0 + i0 + m]",
        "                cb = buf[co + i0:]",
        "                cbi = bufi[co + i0:]",
    ]

    def head(cond):
        # The compute runs in chunks of _CHUNK pixels; before each, a share of the next
        # tile (all dates) is prefetched, so that its memory traffic overlaps the compute.
        L.extend([
            f"                {cond}:",
            f"                    for c0 in range(0, m, {_CHUNK}):",
            # Lines j0 .. j0 + npf - 1 of the next tile, date-major: the rest of date jd
            # from line jl, then the first lines of date jd + 1 (none when the chunk ends
            # within jd, always so in the last date). Two runs of consecutive addresses,
            # one add each, instead of splitting every line number into (date, line): the
            # prefetch loop cost as much as the staging copy (19 dates, in L2, 1 thread,
            # same-process A/B, load 2.6-3.3: 5.8 -> 5.1 ns CPU per pixel-band).
            f"                        j0 = (i0 + c0) // {_CHUNK} * {npf} + sh",
            # Past the next tile's last line (only when shifted by sh): the first block
            # of the tile after it. The tile's chunks split at a multiple of npf, so a
            # chunk's lines never straddle the two tiles.
            "                        pb = pnext",
            f"                        if j0 >= {lpt * nt}:",
            f"                            j0 -= {lpt * nt}",
            "                            pb = p2",
            f"                        jd = j0 >> {lsh}",
            f"                        jl = j0 & {lpt - 1}",
            f"                        jn = min({npf}, {lpt} - jl)",
            f"                        pa = jd * plane + pb + jl * {_PF_STEP}",
            f"                        for i in range(jn):",
            f"                            _prefetch(hf, pa + i * {_PF_STEP})",
            f"                        pa = (jd + 1) * plane + pb",
            f"                        for i in range({npf} - jn):",
            f"                            _prefetch(hf, pa + i * {_PF_STEP})",
            f"                        for x in range(np.uint64(c0), np.uint64(min(c0 + {_CHUNK}, m))):",
        ])

    # Blocks of finite, sign-clear values (reflectance, radiance, counts: the usual case)
    # sort the bit patterns as int32: IEEE 754 values of sign 0 order as their bits
    # (+0 lowest, equal values equal bits), so the sorted values are bit for bit those of
    # the float network, and vpminsd/vpmaxsd issue on more vector pipes than
    # vminps/vmaxps (AMD Zen 4, same-process A/B, 19 dates, 1 thread: in L2 7.2 -> 6.0,
    # memory-resident 7.8 -> 6.8 ns per pixel-band; the network alone on Zen 3 was 28 %
    # faster). Blocks with a sign bit set (-0.0 included) take the float network below.
    head("if flags[fo + s] == 0 and negs[fo + s] == 0")

    def load(ind):
        # Unsigned offsets: an unsigned index needs no wraparound check.
        L.extend(f"{ind}s{t} = cb[x + np.uint64({t * sd})]" for t in range(nt))

    e = _Emit(L, nt, net, merge)
    exchange, tail, general_tail = e.exchange, e.tail, e.general_tail

    def fast_path(ind, p, val):
        exchange(ind, p, net)
        tail(ind, val)

    ind = " " * 28
    L.extend(f"{ind}s{t} = cbi[x + np.uint64({t * sd})]" for t in range(nt))
    exchange(ind, "s", net)
    # New names: numba would unify an int32 and a float32 s{t} to float64.
    L.extend(f"{ind}f{t} = _asfloat32(s{t})" for t in range(nt))
    tail(ind, lambda t: f"f{t}")
    head("elif flags[fo + s] == 0")
    load(ind)
    fast_path(ind, "s", lambda t: f"s{t}")
    # Blocks with a NaN, infinite or huge value but no sign bit set anywhere (a cloud over
    # reflectance: the usual general-path block) sort the int32 bit patterns too: NaN
    # (positive, so its bits lie above +inf's) becomes +inf by an integer min, and the
    # sorted values are bit for bit those of the float network below, so the rest of
    # the general path is shared (19 dates, a NaN date over the whole tile, in L2, 1
    # thread, same-process A/B, load 3.5-4.3: 11.3-11.7 -> 8.3-8.5 ns CPU per pixel-band).
    head("elif negs[fo + s] == 0")
    L.extend(f"{ind}s{t} = cbi[x + np.uint64({t * sd})]" for t in range(nt))
    L.append(ind + "n = " + " + ".join(f"np.float32(s{t} <= iinf)" for t in range(nt)))
    L += [f"{ind}s{t} = min(iinf, s{t})" for t in range(nt)]
    exchange(ind, "s", net)
    L.extend(f"{ind}f{t} = _asfloat32(s{t})" for t in range(nt))
    general_tail(ind, "f")
    head("else")
    load(ind)
    L.append(ind + "n = " + " + ".join(f"np.float32(s{t} == s{t})" for t in range(nt)))
    # min(inf, nan) is inf: the select keeps its first operand unless the second is smaller.
    L += [f"{ind}s{t} = min(inf, s{t})" for t in range(nt)]
    exchange(ind, "s", net)
    general_tail(ind, "s")
    # After each block's compute, one block's share of the next tile (nt units of a date's
    # _BLOCK pixels, date-major as the prefetch, whose lines were prefetched one block
    # earlier) is copied into the other buffer. Staged a tile at a time between computes,
    # the lines prefetched a tile ahead did not stay in L2 (the dates of a line share its
    # sets) and the copy waited on L3 and memory; interleaved, each line is copied a block
    # after its prefetch (19 dates, issue strides, same-process A/B, load 4.3-4.9: 2
    # threads, whole cube, wall median 1.52 -> 1.16 s, CPU 11.1 -> 8.3 ns per pixel-band;
    # 1 thread memory-resident 3-15 % less, cloudy rows and L3 within noise).
    L.extend([
        "                if il:",
        f"                    for uu in range(s * {nt}, s * {nt} + {nt}):",
        f"                        tu = uu // {nbk}",
        f"                        su = uu - tu * {nbk}",
        f"                        ps = tu * plane + pnext + su * {_BLOCK}",
        f"                        sv = hf[ps:ps + {_BLOCK}]",
        f"                        pd = no + tu * {sd} + su * {_BLOCK}",
        f"                        dv = buf[pd:pd + {_BLOCK}]",
        "                        bad = np.int32(0)",
        "                        neg = np.int32(0)",
        f"                        for i in range({_BLOCK}):",
        "                            v = sv[i]",
        "                            dv[i] = v",
        "                            bad = _add32(bad, _offpath(v))",
        "                            neg = _add32(neg, _signbit32(v))",
        "                        flags[fn + su] += bad",
        "                        negs[fn + su] += neg",
        "            staged = il",
        "            if il:",
        "                cur = 1 - cur",
    ])
    return "\n".join(L) + "\n"


# In-place kernel (date stride that does not alias, see _aliases): pixels between the
# prefetch and the compute, per date. Far enough ahead to cover the memory latency at
# the copy rate (~100 ns x ~20 GB/s = 2 KiB per core in flight); near enough that the
# window of every date (19 x AHEAD x 4 bytes) stays a small share of the L2. 256, 512,
# 1024 and 2048 were within noise of each other (19 dates, padded, same process, load
# 5.4: 1 thread 3.8-4.4 ns CPU per pixel-band, 2 threads 0.080-0.085 s).
_AHEAD = 512


def _inplace_source(nt: int, ahead: int = _AHEAD) -> str:
    """Python source of the in-place kernel for ``nt`` history dates.

    The dates are read where they lie, ``st`` floats apart in the flat buffer ``hf``
    (a runtime argument: one compiled kernel serves every layout), with no staging
    copy. Only for a date stride that does not alias (:func:`_aliases`): at a
    power-of-two stride the ``nt`` lines of a pixel share one cache set and evict each
    other before use. Each ``_CHUNK`` of pixels first prefetches, for every date, the
    lines ``ahead`` pixels further on, then is sorted as int32 bit patterns, the fast
    path for finite, sign-clear values: the sorted minimum and maximum tell whether it
    was (``_badsorted``; no separate check of the values). A chunk where it was not is
    redone on the path its counted values need (those of the staged kernel: float
    fast, int or float general), and the chunks after it are counted before their
    compute until one is clean again (clouds and negative data come in runs).
    """
    net = [tuple(int(v) for v in p) for p in best_network(nt)]
    hi = nt // 2
    merge = [tuple(int(v) for v in p) for p in prune_network(bitonic_merger(nt), range(hi + 1))]
    assert ahead % 16 == 0 and _CHUNK % 16 == 0
    L = [
        f'"""Generated by changedet.kernels.fast for {nt} history dates, read in place (v1); do not edit."""',
        "import numpy as np",
        "",
        "from changedet.kernels.fast import _add32, _asfloat32, _badsorted, _offpath, _prefetch, _signbit32",
        "",
        "",
        "def kernel(hf, img, floor, scale, out, r0, r1, st, sb, sy):",
        "    nb, ny, nx = img.shape",
        "    half = np.float32(0.5)",
        "    inf = np.float32(np.inf)",
        "    iinf = np.int32(0x7F800000)",
        "    hfi = hf.view(np.int32)",
        # Unsigned offsets of the dates: an unsigned index needs no wraparound check.
        "    ust = np.uint64(st)",
    ]
    # z{t}, not d{t}: the emitters name the deviations d{t}.
    L += [f"    z{t} = np.uint64({t}) * ust" for t in range(nt)]
    L += [
        # 1 while the chunks are computed first and checked after (the last chunk was clean).
        "    spec = 1",
        "    for r in range(r0, r1):",
        "        b = r // ny",
        "        y = r - b * ny",
        "        base = b * sb + y * sy",
        "        cb = hf[base:]",
        "        cbi = hfi[base:]",
        "        im = img[b, y]",
        "        o = out[b, y]",
        f"        for c0 in range(0, nx, {_CHUNK}):",
        f"            m = min({_CHUNK}, nx - c0)",
        # Past the row's end this prefetches the next row's start (the next work when
        # rows are contiguous); past the buffer's end a prefetch is dropped, never faults.
        f"            pa = base + c0 + {ahead}",
        f"            for t in range({nt}):",
        f"                for q in range(0, {_CHUNK}, 16):",
        "                    _prefetch(hf, pa + t * st + q)",
        "            if spec:",
        "                bad = np.int32(0)",
        "                for x in range(np.uint64(c0), np.uint64(c0 + m)):",
    ]
    e = _Emit(L, nt, net, merge)
    ind = " " * 20

    def int_fast(ind, flag):
        L.extend(f"{ind}s{t} = cbi[x + z{t}]" for t in range(nt))
        e.exchange(ind, "s", net)
        if flag:
            L.append(f"{ind}bad = _add32(bad, _badsorted(s0, s{nt - 1}))")
        L.extend(f"{ind}f{t} = _asfloat32(s{t})" for t in range(nt))
        e.tail(ind, lambda t: f"f{t}")

    int_fast(ind, True)
    L += [
        "                if bad == 0:",
        "                    continue",
        "                spec = 0",
        # Count what the chunk holds (off-path values, sign bits), then take its path.
        "            off = np.int32(0)",
        "            neg = np.int32(0)",
        "            for x in range(np.uint64(c0), np.uint64(c0 + m)):",
    ]
    L.extend(f"                v{t} = cb[x + z{t}]" for t in range(nt))
    # Sums of int32 intrinsics: numba would widen a + b of int32 to int64.
    for t in range(nt):
        L.append(f"                off = _add32(off, _offpath(v{t}))")
        L.append(f"                neg = _add32(neg, _signbit32(v{t}))")
    ind = " " * 20
    L += ["            if off == 0 and neg == 0:",
          "                spec = 1",
          "                for x in range(np.uint64(c0), np.uint64(c0 + m)):"]
    int_fast(ind, False)
    L += ["            elif off == 0:",
          "                for x in range(np.uint64(c0), np.uint64(c0 + m)):"]
    L.extend(f"{ind}s{t} = cb[x + z{t}]" for t in range(nt))
    e.exchange(ind, "s", net)
    e.tail(ind, lambda t: f"s{t}")
    L += ["            elif neg == 0:",
          "                for x in range(np.uint64(c0), np.uint64(c0 + m)):"]
    L.extend(f"{ind}s{t} = cbi[x + z{t}]" for t in range(nt))
    L.append(ind + "n = " + " + ".join(f"np.float32(s{t} <= iinf)" for t in range(nt)))
    L += [f"{ind}s{t} = min(iinf, s{t})" for t in range(nt)]
    e.exchange(ind, "s", net)
    L.extend(f"{ind}f{t} = _asfloat32(s{t})" for t in range(nt))
    e.general_tail(ind, "f")
    L += ["            else:",
          "                for x in range(np.uint64(c0), np.uint64(c0 + m)):"]
    L.extend(f"{ind}s{t} = cb[x + z{t}]" for t in range(nt))
    L.append(ind + "n = " + " + ".join(f"np.float32(s{t} == s{t})" for t in range(nt)))
    L += [f"{ind}s{t} = min(inf, s{t})" for t in range(nt)]
    e.exchange(ind, "s", net)
    e.general_tail(ind, "s")
    return "\n".join(L) + "\n"


def _make_prefetch():
    """numba intrinsic ``_prefetch(array, i)``: prefetch the line holding flat element i.

    No bounds check and no fault: a prefetch past the array end is dropped by the CPU.
    Locality 1 (``prefetcht2``); t0, t1, t2 and nta measured within noise of each other here.
    """
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            i8p = ir.IntType(8).as_pointer()
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
            # (address, read, locality, data cache)
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 1), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(arr, idx), codegen

    return prefetch


def _make_offpath():
    """numba intrinsic ``_offpath(x)``: int32 1 where float32 x is NaN, +-inf or
    ``|x| >= 2**127``, else 0: the values a block's fast path must not see.

    The exponent's top 7 bits set. Below 2**127 in magnitude the median's sum
    ``s_lo + s_hi`` and every deviation ``s - med`` stay finite, which the fast path's
    sign-known deviations rely on (an overflowed median of +inf gave ``s - med = -inf``
    where numpy's ``abs`` gives +inf). int32 on purpose: numba widens integer arithmetic
    to int64, which halves the vector lanes of the staging copy that counts these.
    """
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def offpath(typingctx, x):
        def codegen(context, builder, sig, args):
            i32 = ir.IntType(32)
            e = builder.and_(builder.bitcast(args[0], i32), ir.Constant(i32, 0x7F800000))
            return builder.zext(builder.icmp_unsigned(">=", e, ir.Constant(i32, 0x7F000000)), i32)

        return types.int32(types.float32), codegen

    return offpath


def _make_asfloat32():
    """numba intrinsic ``_asfloat32(i)``: the float32 whose bits are int32 ``i`` (no instruction)."""
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def asfloat32(typingctx, x):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    return asfloat32


def _make_signbit32():
    """numba intrinsic ``_signbit32(x)``: int32 1 where float32 x has its sign bit set
    (negative, -0.0, NaN of either sign), else 0. int32 like :func:`_make_offpath`."""
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def signbit32(typingctx, x):
        def codegen(context, builder, sig, args):
            i32 = ir.IntType(32)
            return builder.lshr(builder.bitcast(args[0], i32), ir.Constant(i32, 31))

        return types.int32(types.float32), codegen

    return signbit32


def _make_badsorted():
    """numba intrinsic ``_badsorted(lo, hi)``: int32 1 unless the int32 bit patterns
    ``lo <= hi`` (the smallest and largest of sorted dates) bound only finite, sign-clear
    float32 values below ``2**127``: ``lo >= 0`` (no sign bit set, as ``lo`` is the
    smallest) and ``hi < 0x7F000000`` (no NaN, inf or huge value, as ``hi`` is the
    largest). What :func:`_make_offpath` and :func:`_make_signbit32` count, from two values."""
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def badsorted(typingctx, lo, hi):
        def codegen(context, builder, sig, args):
            i32 = ir.IntType(32)
            neg = builder.icmp_signed("<", args[0], ir.Constant(i32, 0))
            off = builder.icmp_signed(">=", args[1], ir.Constant(i32, 0x7F000000))
            return builder.zext(builder.or_(neg, off), i32)

        return types.int32(types.int32, types.int32), codegen

    return badsorted


def _make_add32():
    """numba intrinsic ``_add32(a, b)``: int32 + int32 -> int32 (numba would give int64)."""
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def add32(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return builder.add(args[0], args[1])

        return types.int32(types.int32, types.int32), codegen

    return add32


_PREFETCH_LOCK = threading.Lock()  # not _LOCK: held by _unrolled while a kernel module imports this
_INTRINSICS = {"_prefetch": _make_prefetch, "_offpath": _make_offpath, "_add32": _make_add32,
               "_asfloat32": _make_asfloat32, "_signbit32": _make_signbit32, "_badsorted": _make_badsorted}


def __getattr__(name):
    # The generated kernels import these intrinsics; made on first use so that importing
    # this module does not import numba.
    if name in _INTRINSICS:
        with _PREFETCH_LOCK:
            if name not in globals():
                globals()[name] = _INTRINSICS[name]()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_UNROLLED: dict = {}
_LOCK = threading.Lock()


def _cache_dir() -> Path:
    base = os.environ.get("NUMBA_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "changedet" / "kernels"


def _unrolled(nt: int, inplace: bool = False):
    """The compiled kernel for ``nt`` dates, from numba's disk cache when possible:
    the staging kernel, or with ``inplace`` the one reading the dates in place."""
    with _LOCK:
        if (nt, inplace) in _UNROLLED:
            return _UNROLLED[(nt, inplace)]
        import numba

        src = _inplace_source(nt) if inplace else _kernel_source(nt)
        # numba's disk cache does not see the intrinsics the kernel calls: their code is
        # part of the key, so changing one cannot leave stale machine code behind.
        made = (_make_prefetch, _make_offpath, _make_add32, _make_asfloat32, _make_signbit32,
                _make_badsorted)
        intrinsics = "".join(inspect.getsource(f) for f in made)
        opts = dict(nogil=True, error_model="numpy", fastmath=False)
        import llvmlite

        # The options and the code generator's version change the machine code too.
        key = hashlib.sha256(f"{src}{intrinsics}{numba.__version__}{llvmlite.__version__}{sorted(opts.items())}"
                             .encode()).hexdigest()[:16]
        name = f"bz{nt}{'i' if inplace else ''}_{key}"
        try:
            # numba caches only functions defined in a real file: write the source once.
            path = _cache_dir() / f"{name}.py"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(src)
                os.replace(tmp, path)
            spec = importlib.util.spec_from_file_location(f"changedet_kernels_{name}", path)
            mod = importlib.util.module_from_spec(spec)
            # numba's cached code looks its module up by name when loaded.
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
            fn = njit_cached(**opts)(mod.kernel)
        except OSError:
            # Read-only home: compile from memory each process.
            ns: dict = {}
            exec(compile(src, f"<changedet {name}>", "exec"), ns)
            fn = numba.njit(**opts)(ns["kernel"])
        _UNROLLED[(nt, inplace)] = fn
        return fn


def njit_cached(**opts):
    """``numba.njit(cache=True, **opts)``, or uncached where numba finds no writable cache
    folder (it refuses ``cache=True`` at decoration then: read-only install and home)."""
    import numba

    def decorate(f):
        try:
            return numba.njit(cache=True, **opts)(f)
        except RuntimeError:
            return numba.njit(**opts)(f)

    return decorate


def _threads() -> int:
    return cpu_budget()


_KERNEL = None


def _build():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba

    @njit_cached(parallel=True, fastmath=False)
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


def _np_block(hist: np.ndarray, img: np.ndarray, *, floor: float, threads: int = 1) -> np.ndarray:
    """(time, band, y, x) history and (band, y, x) image -> z float32 (numba).

    Up to ``MAX_UNROLLED`` dates, a float32 history whose date stride does not alias is
    read in place (:func:`_in_place`); a C-contiguous float32 one whose stride aliases
    goes through the staging kernel; any other (another dtype, a slice, another order)
    is copied, as it had to be anyway, into the :func:`empty_history` layout and read in
    place.
    """
    img = np.ascontiguousarray(img, dtype=np.float32)
    out = np.empty(img.shape, dtype=np.float32)
    nt = hist.shape[0]
    if nt == 0 or img.size == 0:
        out[...] = np.nan
        return out
    f32_floor, f32_scale = np.float32(floor), np.float32(MAD_SCALE)
    if nt > MAX_UNROLLED:
        import numba

        hist = np.ascontiguousarray(hist, dtype=np.float32)
        # The prange kernel would start every core's worth of numba threads; the
        # setting is per calling thread, so restore it for the caller's later work.
        before = numba.get_num_threads()
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            _build()(hist, img, sorting_network(nt), f32_floor, f32_scale, out)
        finally:
            numba.set_num_threads(before)
        return out
    place = _in_place(hist)
    if place is None and not (hist.dtype == np.float32 and hist.flags.c_contiguous):
        hist = _padded(hist)
        place = _in_place(hist)
    if place is None:
        hist = np.ascontiguousarray(hist, dtype=np.float32)
        kernel = _unrolled(nt)
        args = (hist,)
        extra = ()
    else:
        kernel = _unrolled(nt, inplace=True)
        args = (place[0],)
        extra = tuple(int(v) for v in place[1:])

    def run(a, b):
        kernel(*args, img, f32_floor, f32_scale, out, a, b, *extra)

    run(0, 0)  # compile or load here, not in the pool
    rows = img.shape[0] * img.shape[1]
    threads = max(1, min(threads, rows))
    if threads == 1:
        run(0, rows)
        return out
    # Several slabs per thread so a thread slowed by a busy core does not hold up the rest.
    edges = np.linspace(0, rows, 4 * threads + 1).astype(np.int64)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]:
            f.result()
    return out


def _dates_block(blocks, img: np.ndarray, *, floor: float) -> np.ndarray:
    """z of one spatial block from its history in time chunks (``blocks``, in date order).

    The chunks are copied into one :func:`empty_history` array (the join a rechunk
    would do, into the layout read in place); past ``MAX_UNROLLED`` dates, whose
    kernel wants a C-contiguous history, into one contiguous array.
    """
    nt = sum(b.shape[0] for b in blocks)
    if nt > MAX_UNROLLED:
        hist = np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks], axis=0)
    else:
        hist = empty_history((nt,) + tuple(blocks[0].shape[1:]))
        t = 0
        for b in blocks:
            np.copyto(hist[t:t + b.shape[0]], b, casting="unsafe")
            t += b.shape[0]
    return _np_block(hist, img, floor=floor)


def baseline_zscore(
    history: xr.DataArray,
    image: xr.DataArray,
    *,
    mad_floor: float,
    use_numba: bool | None = None,
    threads: int | None = None,
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
    threads : int, optional
        Threads for numpy input (default: :func:`changedet.threads.cpu_budget`). Dask input
        runs one single-threaded kernel per block; dask's scheduler sets the threads.

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
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise KernelError(f"threads={threads!r} must be a positive integer (or None for all CPUs)")
    if fast and not HAVE_NUMBA:
        raise KernelError("use_numba=True but numba is not installed: pip install 'numba==0.68.1'")
    if not fast:
        return zscore(img, robust_baseline(h), mad_floor=floor)
    if h.chunks is not None or img.chunks is not None:
        import dask.array as da

        hd = h.data if h.chunks is not None else da.from_array(h.data, chunks=(-1, -1) + img.data.chunks[1:]
                                                                if img.chunks is not None else -1)
        hd = hd.rechunk({1: -1})
        idata = da.asarray(img.data).rechunk(hd.chunks[1:])
        if len(hd.chunks[0]) > 1:
            # Dates in several chunks (a cube read from its store: one chunk per date).
            # Their blocks are joined into one history per spatial block here, where
            # rechunking would have joined them: the same copy, but into the padded
            # layout that the kernel reads in place (_dates_block).
            data = da.blockwise(_dates_block, "byx", hd, "tbyx", idata, "byx", concatenate=False,
                                dtype=np.float32, floor=floor)
        else:
            data = da.map_blocks(
                lambda hb, ib: _np_block(hb, ib, floor=floor), hd, idata, dtype=np.float32, drop_axis=0,
                chunks=idata.chunks,
            )
    else:
        data = _np_block(np.asarray(h.data), np.asarray(img.data), floor=floor,
                         threads=_threads() if threads is None else int(threads))
    out = img.copy(data=data)
    return _unwrap(_finish(out, img, "zscore"), bare)
