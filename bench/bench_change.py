"""Speed of the baseline + z-score pass against the memory-bandwidth bound, and a cube
larger than the workers' memory limit on a dask LocalCluster.

    python bench/bench_change.py            # issue shape: 20 dates x 4 bands x 4096^2 float32 (5.4 GB)
    python bench/bench_change.py --quick    # 20 x 4 x 1024^2, out-of-core cube 2048^2

Figures, all taken in ONE run so that ratios are comparable on a shared machine (the
1-minute load average is printed beside each):

- copy bandwidth: best of 3 copies of a 1 GiB float32 array (bytes read + written per
  second), numpy in 1 thread and split over 2 threads;
- bytes that must move: history and image read once, z written once; bound time =
  bytes / best copy bandwidth;
- fused kernel (``changedet.kernels.baseline_zscore``, numba) on the whole cube with all
  CPUs (wall time, best of 3), and its single-thread CPU time per pixel-band on the
  whole cube, on a clear and a cloudy-date slab and on one staging tile held in L2,
  repeated (staging from L2 + compute) (``time.thread_time``: stays
  meaningful when other processes share the cores, though their memory traffic still
  slows it);
- plain single-threaded numpy of the same arithmetic (``np.nanmedian`` of the history,
  ``np.nanmedian`` of the absolute deviations, z) on a slab of ``--numpy-rows`` rows,
  scaled to the cube; and the library numpy path ``zscore(image, robust_baseline(h))``
  on the same slab, which the fused kernel must equal bit for bit;
- out-of-core: a lazily generated cube larger than the sum of the workers' memory limits
  (2 worker processes x ``--worker-mem``) reduced to a count of |z| > 4 on a LocalCluster.

Roofline (printed at the end of the kernel figures; sessions up to 9 ran on AMD EPYC Zen 3
under KVM, 2 cores, AVX2, no SMT, ~3.0 GHz: see session 11 below for Zen 4): per
pixel-band 84 bytes must move (19 history dates and the image read, z written, float32).
At the 2-thread copy rate (24-33 GB/s idle, it varies between runs) that is a bound of
2.6-3.5 ns of wall time per pixel-band; 60 % of it allows 4.3-5.8 ns wall = **8.7-11.6 ns
of core time per pixel-band** over 2 cores.

Where the kernel's in-cache time goes (one 2048-pixel tile of history in L2, 1 thread, CPU
time, best of interleaved rounds in one process, load 2-6, 2026-12-02 session 9; scripts
and outputs in /work/notes/s9/K/):

- whole kernel: 7.7-8.4 ns per pixel-band (~24 cycles; about 195 per 8-pixel vector). The
  12.25-12.8 ns that earlier runs of this bench printed were mostly page faults, not the
  kernel: the bench calls the kernel once per tile, each call allocates its 157 KiB staging
  buffer, and with glibc's malloc thresholds at their defaults that buffer is mmapped and
  faulted in afresh per call (39 faults per call; 54 ns per pixel-band with the defaults
  forced, 7.7 without: /work/notes/s9/K/faults.py). The bench now raises the thresholds
  for that loop and prints the faults per call (0). Real calls stage many rows per
  allocation and do not pay this;
- the staging copy alone (19 dates of the tile copied into the L2 buffer, with the
  non-finite count): 3.0 ns (2.6 without the count). Each value crosses L2 three times
  (copy, write-back, compute read);
- the compute alone, staged values already in place: 4.95 ns (buffer in L1) to 5.27 ns
  (in L2); of it the 85-comparator network is 3.6-3.8 ns = 170 ``vminps``/``vmaxps`` per 8
  pixels at ~1.85 per cycle, i.e. at the float min/max port limit (2 per cycle). Its 28
  ymm spill stores and 30 reloads per 8 pixels go to the load/store ports and cost little;
- next-tile prefetch and the 8-pixel chunk loop: 0.3-1.5 ns (every second line; every line,
  as now: ~1 ns more, see below) (about 150 scalar instructions
  per chunk in the asm: prefetch addresses, LLVM's alias checks, spilled loop variables).
  Without the prefetch the memory-resident cost rises (256 MiB plane stride, 1 thread:
  11.7 -> 12.9 ns; 2 threads wall +35 %).

So the in-cache cost is ~70-95 % of the 60 % budget (75 % in the bench run of 08:51, load
3.4, 27 GB/s), and the best possible fraction with every memory wait hidden is ~85 %
(24 GB/s) to 63 % (33 GB/s): 60 % is within that upper bound, and what keeps the kernel at
22-27 % is the memory side: it does not hide the memory traffic (memory-resident, 1
thread: 9.5-10.7 ns per pixel-band at a 64 MiB plane stride, 11.7-12.2 at the issue cube's
256 MiB stride, against ~8 in cache). Tried this session, all within the noise of the kernel above or
worse (same-process A/B): sorting the bits of sign-clear blocks with integer min/max
(``vpminsd`` runs the network alone 28 % faster: 2.56 against 3.56 ns) plus an integer MAD
pick and a table of prefetch offsets (in L2 8.0-8.8 against 8.2; memory-resident 10.3-10.9
against 10.7); staging each 256-pixel block into an L1 buffer just before its compute
(memory-resident 12.5 against 10.1 ns, 2-thread wall +30 %; with a one-block-ahead
prefetch equal to the kernel above); compute chunks of 32, 64 and 256 pixels; staging
tiles of 1024 and 4096 pixels.

Memory side, round 2 (session 9, same-process A/B on the issue cube's strides, 19 x 4 x
4096 x 4096 history with huge pages, fresh 512-row regions; scripts and outputs in
/work/notes/s9/K2/): the next-tile prefetch now covers every cache line, not every second
one, and the staging copy prefetches only a tile the previous compute did not (before, it
prefetched every tile a second time). Memory-resident, ns per pixel-band (ab_landed.txt,
4 runs of 5-7 rounds, load 3.9-4.9): 1 thread CPU 11.4-13.3 -> 9.3-10.5; 2 threads, CPU of
both 11.6-13.8 -> 9.4-11.9, wall (median of the rounds) 20.3-26.3 -> 13.8-20.8, 14-32 % less
in each run. This bench's whole cube, 1 thread CPU: 13.20 (08:51, load 3.4) -> 10.44 (09:13,
load 4.1). The one-tile-per-call in-L2 figure rises ~1 ns (7.7-7.9 -> 8.7-8.9: that loop
pays both prefetches on every call). Two threads now cost as much CPU per pixel-band as one,
so what the 2-thread wall loses against half the 1-thread CPU is the other processes' share
of the 2 cores, not memory contention between the threads. Tried and not kept: prefetching
the tile after next (within noise), the staging copy prefetching two dates ahead (worse),
two prefetches per line (worse), compute chunks of 16 (within noise), how rows are split
between the threads (contiguous slabs, slab starts staggered by 1 MiB, two halves: same
CPU, 12.4 ns per pixel-band; ab_split.txt), and a plane stride that is not a multiple of
64 KiB (19 x 4 x 4095 x 4112: 1 thread within noise of 4096 x 4096, so cache-set aliasing
of the dates is not what the memory side costs; alias.txt).

Session 11 (2026-12-02; the machine is now AMD Zen 4, family 25 model 17, under KVM: 2
cores, AVX-512, L1d 32 KiB, L2 1 MiB per core, L3 32 MiB; the figures above are Zen 3's).
Scripts and outputs in /work/notes/s11/K/ (``ab.py``: old and new generated kernels in one
process, interleaved rounds, 1 thread CPU time; memory-resident = 128 fresh rows of a
(19, 4, 4096, 4096) history, the issue's 256 MiB plane stride). On Zen 4 LLVM vectorised
the compute loop 16 lanes wide (zmm) with a 4-lane (xmm) epilogue, and the 8-pixel chunks
never reached the 16-lane body: the kernel ran 4 lanes wide. Changes and what each gave
(ns CPU per pixel-band, best of 5-9 rounds, load 6.5-7.5):

- compute chunks of 32 pixels (two zmm or four ymm iterations): in L2 11.2 -> 7.1-7.5,
  memory-resident 12.4 -> 8.3-8.8, cloudy (general path) 18.3 -> 10.6;
- fast path without ``abs`` (the sorted values' deviations have known signs; blocks with a
  value of magnitude >= 2**127 go to the general path, where the median's sum could
  overflow): in L2 7.5 -> 7.2, memory-resident 8.8 -> 8.6;
- staging tile from the L2 size, 4096 pixels on a 1 MiB L2: memory-resident 8.1 -> 7.6;
- sign-clear blocks sort int32 bit patterns (vpminsd/vpmaxsd): in L2 7.2 -> 6.0,
  memory-resident 7.8 -> 6.8;
- the general path's bitonic merger pruned to the ranks its pick reads (37 -> 30
  comparators for 19 dates): within noise (cloudy 10.7 either way).

All together against the session's starting kernel, one process, 9 rounds, load 7.0
(ab_final2.txt): in L2 11.59 -> 6.54, memory-resident 12.75 -> 6.73 (medians 13.49 -> 7.86),
cloudy in L2 18.70 -> 11.09. Held out (real data not used while tuning, heldout.txt, load
8.6): eo-learn S2 NDVI, 19+1 dates, three windows: clear 13.0-13.2 -> 9.6-9.9, with the
CLM cloud mask as NaN 20.5-20.8 -> 13.9-14.1; NAIP 9+1 dates x 4 bands: 5.5 -> 3.7; all bit
for bit equal to the numpy path. Pruning the 85-comparator sort by back-propagating the
ranks read removes nothing: the MAD (a rank of the union of the runs left and right of the
median) reads every rank (``prune_network``; the median alone would need 61).

Two threads on the memory-resident history (ab2.py, ab2_threads.txt, 9 rounds, load 6.9):
CPU of both threads 13.33 -> 6.99 ns per pixel-band (as with one thread: the threads do not
slow each other), wall 32.0 -> 14.4 (the other processes held most of the 2 cores). This
bench at load 8.5-8.9 (15:16): 1 thread CPU whole cube 10.5 (14.3 at load 4.9 before),
clear slab 6.5 (12.6), cloudy-date slab 11.3 (19.8), in L2 5.7 (11.0); 2-thread wall 1.14 s
against a bound of 0.54 s at the load-collapsed copy rate (10 GB/s): 47 %. Idle, the same
session (16:16, load 1.2-1.3, ``--ooc-size 0``): copy 26.7 / 40.5 GB/s with 1 / 2 threads,
bound 0.139 s, fused kernel 2 threads 0.272 s: **51 % of the bound** (target 60 %); 1 thread
CPU whole cube 7.38 ns, clear slab 6.35, cloudy-date slab 11.10, in L2 5.76, against 6.91 ns
of core time allowed at 60 %. A run at load 3.3 (15:43) read 19 %: the figure follows the
machine's load. The idle copy rate of two threads is far above last session's (29.3 GB/s),
so the bound moved too: what is left is ~15 % of the time, of which the staging copy
(~2.5 ns, below) and the eighth of the cube under a cloudy date (general path, 11 ns).

No staging copy (brief's idea; gen_inplace.py, ab_mem.py): the compute loading every date
in place at base + t x plane (plane a compile-time constant), with the next-tile prefetch,
int network only and no checks (a lower bound for that design), 1 thread, memory-resident,
same process: at the issue's 256 MiB plane stride 34.8 ns against 6.3 staged (6.4 x
slower; 36.5 without the prefetch: ab_inplace.txt): the 19 dates of a pixel share one L1
set (8 ways) and, with huge pages, one L2 set (8 ways), so their lines evict each other
before use. At a stride that spreads them (19 x 4 x 4095 x 4112: plane = 64 KiB - 256 B
modulo 64 KiB) the same in-place kernel took 4.0 against 6.5 staged (ab_inplace_odd.txt):
the staging copy costs ~2.5 ns per pixel-band and is needed only for strides that alias.
Not built here: a kernel per (nt, plane) for non-aliasing strides (with the per-chunk
off-path/sign checks the staging copy now does) would not change the issue's 4096 x 4096
cube.

The bench recomputes the figures (``roofline`` in the JSON) from the copy rate and the
in-L2 cost of the same run; under load the copy rate collapses (3.5-9 GB/s measured at
load 5-6 against 24-33 idle) and the roofline lines then say nothing: read them from an
idle run.

Session 12 (2026-12-02 evening, same Zen 4 machine, loaded by 3-4 other engineers
throughout: load 2.2-6.3, no idle run was possible; scripts, generated variants and
outputs in /work/notes/s12/B/: ``ab.py`` 1 thread CPU time, old and new kernels
alternately in one process, row blocks of a (19, 4, 4096, 4096) history in shuffled
order; ``ab2.py`` the whole issue cube, 2 threads, wall and CPU, with the copy rate of the
same process). Kept:

- the next-tile prefetch addresses as two runs of consecutive lines per chunk (one add per
  line) instead of a (date, line) split of every line number: in L2 5.8-6.1 -> 5.1-5.4 ns
  CPU per pixel-band (medians of 7 rounds, two runs);
- the general path sorts int32 bit patterns too in blocks without a sign bit (a cloud over
  reflectance), NaN clamped to +inf's bits: a NaN date over the tile, in L2, 11.3-11.6 ->
  8.3 (median and q10 of two runs);
- the staging buffer aligned to a cache line (numba's allocation sat 32 bytes off one):
  2-4 % in L2 / L3, memory-resident within noise;
- the next tile staged during the compute into a second buffer, a block's share of every
  date after each block, one block behind its prefetch (the brief's idea; staged a tile
  at a time, the lines prefetched a tile ahead could not all stay in L2, where the dates
  of a line share its sets). Alone against the kernel with the three changes above: 2
  threads, whole cube, load 4.3-4.9, copy 13-15 GB/s (ab2_il_d13.txt): wall median 1.52
  -> 1.16 s, best 1.10 -> 0.94; 1 thread memory-resident clear rows -3 to -15 % in three
  runs, cloudy rows and L3-resident within noise.

All four against the session's starting kernel: 1 thread (ab_final_v11.txt, 96-row
blocks, 20 rounds, load 5.0-5.3, q10 of the rounds): in L2 6.16 -> 5.07, cloudy in L2
11.25 -> 8.41, L3-resident at the issue's stride 6.24 -> 5.71, memory-resident clear rows
10.88 -> 9.42, cloudy rows 16.09 -> 13.10. 2 threads, whole cube (ab2_final_v11.txt, load
4.2-4.3, copy 16-18 GB/s): wall median 1.266 -> 0.897 s, best 0.889 -> 0.805 s, faster
in each of 6 rounds; CPU of both threads median 11.9 -> 8.3 ns per pixel-band. This bench
at load 4.8-5.0 (19:13, copy 23.4 GB/s with 2 threads: the other processes held the
cores): 25 % of the bound (0.924 s against 0.235 s), 1 thread CPU whole cube 8.36, clear
slab 8.03, cloudy-date slab 9.94, in L2 4.76 ns (session 11 idle: 7.38, 6.35, 11.10,
5.76). Whether the idle run reaches 60 % is not measured. Under load the pass was bound by
memory, not by the core: before the second buffer the kernel drew ~10-11 GB/s per core
(as in the idle session-11 run: 1 thread 84 B per 7.38 ns = 11.4 GB/s) where a numpy copy
draws 24-27 GB/s on one core; the software prefetches may be held to the L1's miss
buffers (not proven: no hardware counters in this VM). Tried and not kept: per-block
staging into an L1-sized buffer (worse memory-resident); prefetching only the first 13
of 19 dates during the compute (as good as the second buffer in one 2-thread run at load
4.5, within noise in another at load 6; a fitted fraction); every second line (worse);
prefetch locality 0 or 3 instead of 1 (worse); an OR / max of the bit patterns in place
of the staging copy's counts (within noise); tiles of 2048.

Session 13 (2026-12-03, same Zen 4 machine, load 3-7 throughout; scripts and outputs in
/work/notes/s13/KERNEL/): a second kernel reads the dates in place where their stride
does not alias (``changedet.kernels.fast``: ``_inplace_source``, ``_aliases``), and
changedet lays its own histories out so that they do not (``empty_history``: each date
plane padded by a few cache lines; dask histories in date chunks, as a cube read from
its store, are joined per block into that layout where a rechunk joined them before).
This bench now times both layouts of the same values in alternating rounds:
"contiguous" is the C-contiguous power-of-two cube (the staging kernel, as before),
"changedet" the padded one (in place). At load 4.95-5.34 (copy rate collapsed to 10.9 GB/s,
so the fractions are not idle figures; bench_full2.txt): 2 threads, contiguous 1.188 s
(41 % of the bound), changedet layout 0.618 s (79 %); 1 thread CPU per pixel-band,
contiguous / padded: whole cube 8.41 / 5.06, clear slab 8.69 / 5.42, cloudy-date slab
10.97 / 8.36, in L2 5.81 / 3.47; the two layouts' z bit for bit equal. The contiguous
cube is unchanged (41-51 % idle in earlier sessions): read in place at its 256 MiB date
stride the kernel is 5x slower (ab_issue_alias.txt), so it keeps the staging copy.
Whether the padded cube reaches 60 % idle is not measured (no idle period); under load
it did. Other value kinds, 1 thread, 256 fresh rows (ab_signs1.txt, load 5.5), staged
contiguous / in place padded: NDVI around 0 (mixed signs) 8.66 / 6.49, SAR dB (all
negative) 7.83 / 5.44, reflectance with 10 % NaN 11.47 / 8.83. The out-of-core cube is
now chunked one date per chunk (``--ooc-date-chunk``, as ``Cube.read`` gives; 0 for the
old single chunk): 2048^2 quick run 25.8 s against 24.5 s (load 6-7; other random values:
dask's generator follows the chunks). Each round of the 2-thread timings now also times a
256 MiB copy, and a fraction per round (that round's copy rate) is printed beside the
one from the single copy at the start: under a changing load the latter compares a copy
and a kernel run at different moments (bench_full3.txt, load 5.3-9: 29 % for the padded
cube against 79 % in bench_full2.txt at load 5).

Writes bench/results/bench_change.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAD_FLOOR = 0.005


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _best(f, n=3, clock=time.perf_counter):
    ts = []
    for _ in range(n):
        t = clock()
        f()
        ts.append(clock() - t)
    return min(ts)


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _malloc_keep_heap(keep: bool) -> None:
    """glibc only: serve allocations up to 32 MiB from the heap and keep freed heap memory
    (``keep``), or set both thresholds back to their 128 KiB defaults (which also leaves
    glibc's dynamic raising of them off for the rest of the run). No effect elsewhere."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters, glibc malloc.h
    libc.mallopt(m_mmap_threshold, (32 << 20) if keep else (128 << 10))
    libc.mallopt(m_trim_threshold, (64 << 20) if keep else (128 << 10))


def copy_bandwidth(nbytes: int) -> dict:
    """Bytes read + written per second by a large-array copy, 1 and 2 threads."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    h = a.size // 2

    def copy2():
        # np.copyto releases the GIL on large arrays, so two halves copy in parallel.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: np.copyto(b[s], a[s]), [slice(0, h), slice(h, None)]))

    np.copyto(b, a)
    t1 = _best(lambda: np.copyto(b, a))
    t2 = _best(copy2)
    c1 = _best(lambda: np.copyto(b, a), clock=time.thread_time)
    res = {"array_GB": nbytes / 1e9, "numpy_1thread_GBps": 2 * nbytes / t1 / 1e9,
           "numpy_2threads_GBps": 2 * nbytes / t2 / 1e9, "numpy_1thread_cpu_time_GBps": 2 * nbytes / c1 / 1e9,
           "load": _load()}
    res["best_GBps"] = max(res["numpy_1thread_GBps"], res["numpy_2threads_GBps"])
    return res


def make_cube(T: int, B: int, N: int, seed: int = 0, padded: bool = False) -> np.ndarray:
    """(T, B, N, N) float32 reflectance-like noise, filled one date at a time: C-contiguous
    (dates a power of two apart), or with ``padded`` in changedet's layout
    (``changedet.kernels.fast.empty_history``: a few cache lines between dates)."""
    from changedet.kernels.fast import empty_history

    rng = np.random.default_rng(seed)
    cube = empty_history((T, B, N, N)) if padded else np.empty((T, B, N, N), dtype=np.float32)
    for t in range(T):
        for b in range(B):
            rng.standard_normal((N, N), dtype=np.float32, out=cube[t, b])
            cube[t, b] *= 0.01
            cube[t, b] += 0.2
    cube[3, :, : N // 8] = np.nan  # a cloud over an eighth of one date
    return cube


def nanmedian_pass(hist: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Plain numpy, one thread: nanmedian baseline, nanmedian MAD, z."""
    med = np.nanmedian(hist, axis=0)
    mad = np.nanmedian(np.abs(hist - med), axis=0) * np.float32(1.4826)
    return (img - med) / np.maximum(mad, np.float32(MAD_FLOOR))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 x 4 x 1024^2 cube, out-of-core 2048^2")
    ap.add_argument("--dates", type=int, default=20, help="dates in the cube (history = dates - 1)")
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--size", type=int, default=None, help="side in pixels (default 4096, --quick 1024)")
    ap.add_argument("--numpy-rows", type=int, default=16, help="rows of the single-thread numpy slab")
    ap.add_argument("--ooc-size", type=int, default=None,
                    help="side of the out-of-core cube (default 4096, --quick 2048; 0 = skip)")
    ap.add_argument("--worker-mem", default="1GiB", help="memory limit of each of the 2 workers")
    ap.add_argument("--ooc-date-chunk", type=int, default=1,
                    help="dates per chunk of the out-of-core cube (default 1, as Cube.read gives; 0 = all)")
    ap.add_argument("--layout", choices=("both", "contiguous", "changedet"), default="both",
                    help="cube layouts timed: C-contiguous (power-of-two date stride), changedet's padded "
                         "layout (empty_history), or both interleaved (default; twice the memory)")
    args = ap.parse_args(argv)
    N = args.size or (1024 if args.quick else 4096)
    M = args.ooc_size if args.ooc_size is not None else (2048 if args.quick else 4096)
    T, B = args.dates, args.bands

    import xarray as xr

    from changedet.kernels import baseline_zscore, robust_baseline, zscore
    from changedet.kernels.baseline import MAD_SCALE
    from changedet.kernels.fast import MAX_UNROLLED, _in_place, _padded, _stage, _threads, _unrolled, empty_history

    res: dict = {"shape": [T, B, N, N], "cpus": _threads()}
    t = time.perf_counter()
    contiguous = args.layout in ("both", "contiguous")
    cube = make_cube(T, B, N, padded=not contiguous)
    print(f"cube float32 {T} dates x {B} bands x {N}^2 = {cube.nbytes / 1e9:.2f} GB, made in "
          f"{time.perf_counter() - t:.1f} s (load {_load()})", flush=True)
    hist = xr.DataArray(cube[:-1], dims=("time", "band", "y", "x"))
    new = xr.DataArray(cube[-1], dims=("band", "y", "x"))
    # The same values in changedet's padded layout, timed against the contiguous cube in
    # the same rounds (both read in place: the padded one without the staging copy).
    hist_p = None
    if args.layout == "both":
        cube_p = empty_history(cube.shape)
        np.copyto(cube_p, cube)
        hist_p = xr.DataArray(cube_p[:-1], dims=("time", "band", "y", "x"))
        del cube_p
    layouts = {"contiguous" if contiguous else "changedet": hist}
    if hist_p is not None:
        layouts["changedet"] = hist_p
    res["layouts"] = {k: {"date_stride_bytes": int(v.data.strides[0])} for k, v in layouts.items()}

    bw = copy_bandwidth(min(cube.nbytes // 4, 1 << 30))
    res["copy_bandwidth"] = bw
    moved = hist.nbytes + new.nbytes + new.nbytes  # read history and image, write z
    bound_s = moved / (bw["best_GBps"] * 1e9)

    # Compile (or load from numba's cache) outside the timings.
    t = time.perf_counter()
    baseline_zscore(hist[:, :, :2, :64], new[:, :2, :64], mad_floor=MAD_FLOOR)
    res["compile_or_load_s"] = time.perf_counter() - t
    for hl in layouts.values():
        baseline_zscore(hl[:, :, :2, :64], new[:, :2, :64], mad_floor=MAD_FLOOR)
    load0 = _load()
    # Rounds alternate the layouts: both see the same share of the machine. Each round
    # also times a copy of 256 MiB, 1 and 2 threads: on a shared machine the copy rate
    # moves with the other processes' load, so each round's fraction uses its own rate
    # (a figure less at the mercy of when the one copy at the start ran).
    walls: dict = {k: [] for k in layouts}
    per_round: dict = {k: [] for k in layouts}
    ca = np.ones(64 << 20, dtype=np.float32)
    cb = np.empty_like(ca)
    half = ca.size // 2

    def copy_rate():
        t1 = _best(lambda: np.copyto(cb, ca), n=2)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            def two():
                list(pool.map(lambda sl: np.copyto(cb[sl], ca[sl]), [slice(0, half), slice(half, None)]))
            t2 = _best(two, n=2)
        return 2 * ca.nbytes / min(t1, t2)

    for _ in range(3):
        for k, hl in layouts.items():
            rate = copy_rate()
            t = time.perf_counter()
            baseline_zscore(hl, new, mad_floor=MAD_FLOOR)
            walls[k].append(time.perf_counter() - t)
            per_round[k].append(moved / rate / walls[k][-1])
    del ca, cb
    t_fast = min(walls[next(iter(layouts))])
    load1 = _load()

    # Single-thread CPU time per pixel-band: the whole cube in place (an eighth of its
    # rows under a cloudy date), and slabs without and with the cloud. A slab of the
    # cube is not contiguous, and baseline_zscore would copy it inside the timing: the
    # slabs are copied out first (same power-of-two date stride, not counted).
    t = time.thread_time()
    baseline_zscore(hist, new, mad_floor=MAD_FLOOR, threads=1)
    pb = {"whole cube": (time.thread_time() - t) / new.size * 1e9}
    if hist_p is not None:
        t = time.thread_time()
        baseline_zscore(hist_p, new, mad_floor=MAD_FLOOR, threads=1)
        pb["whole cube, padded"] = (time.thread_time() - t) / new.size * 1e9
    load_pb = _load()
    rows = max(64, N // 16)
    # Slabs copied out contiguous (power-of-two date stride: the staging kernel) and, when
    # changedet's layout is timed, into that layout (read in place).
    padded_too = "changedet" in layouts
    for label, ys in (("clear slab", slice(N // 2, N // 2 + rows)), ("cloudy-date slab", slice(0, min(rows, N // 8)))):
        ns_ = xr.DataArray(np.ascontiguousarray(new.values[:, ys]), dims=new.dims)
        for suffix, copy in (("", np.ascontiguousarray), (", padded", _padded if padded_too else None)):
            if copy is None:
                continue
            hs = xr.DataArray(copy(hist.values[:, :, ys]), dims=hist.dims)
            cpu = _best(lambda: baseline_zscore(hs, ns_, mad_floor=MAD_FLOOR, threads=1), n=3,
                        clock=time.thread_time)
            pb[label + suffix] = cpu / ns_.size * 1e9
            del hs
        del ns_

    # The same kernel with its input in L2 (one staging tile of one row, 2048 or 4096
    # pixels by the L2 size (fast._stage): 19 x 8 or 16 KiB
    # history plus as much staging), computed repeatedly and called directly (xarray's
    # per-call overhead would dominate a row): staging from L2 and the compute, without
    # waiting on memory.
    if T - 1 <= MAX_UNROLLED:
        kern = _unrolled(T - 1)
        w = min(N, _stage(T - 1))
        hc = np.ascontiguousarray(hist.values[:, :1, N // 2:N // 2 + 1, :w])
        nc = np.ascontiguousarray(new.values[:1, N // 2:N // 2 + 1, :w])
        oc = np.empty_like(nc)
        f32 = (np.float32(MAD_FLOOR), np.float32(MAD_SCALE))
        kern(hc, nc, *f32, oc, 0, 1)
        # Each call allocates the kernel's staging buffer (19 dates: 157 or 312 KiB). With glibc's
        # malloc thresholds at their defaults (128 KiB, raised only once the process has
        # freed a larger mmapped block) that buffer is mmapped and page-faulted afresh on
        # every call: 39 faults per call, 54 instead of 7.7 ns per pixel-band here, a cost
        # of this one-tile-per-call loop only (a real call stages many rows per
        # allocation). Raise them for this loop so the figure is the kernel's in-cache
        # cost, and report the faults per call. Best of 7 rounds of 200 calls: one long
        # round also counts the time other processes take this core's caches away.
        _malloc_keep_heap(True)
        reps = 200

        def rounds():
            for _ in range(reps):
                kern(hc, nc, *f32, oc, 0, 1)

        f0 = _minor_faults()
        cpu = _best(rounds, n=7, clock=time.thread_time)
        res["in_L2_page_faults_per_call"] = (_minor_faults() - f0) / (7 * reps)
        _malloc_keep_heap(False)
        pb["history in L2 (staging + compute)"] = cpu / (reps * nc.size) * 1e9
        if padded_too:
            # The in-place kernel on the same tile in changedet's layout: the compute alone.
            kin = _unrolled(T - 1, inplace=True)
            flat, st, sb, sy = _in_place(_padded(hc))
            kin(flat, nc, *f32, oc, 0, 1, st, sb, sy)

            def rounds_in_place():
                for _ in range(reps):
                    kin(flat, nc, *f32, oc, 0, 1, st, sb, sy)

            cpu = _best(rounds_in_place, n=7, clock=time.thread_time)
            pb["history in L2, in place (padded)"] = cpu / (reps * nc.size) * 1e9

    r = args.numpy_rows
    h_s, n_s = hist[:, :, N // 2: N // 2 + r], new[:, N // 2: N // 2 + r]
    loadn = _load()
    out_nm = {}

    def nm():
        out_nm["z"] = nanmedian_pass(h_s.values, n_s.values)

    t_nm = _best(nm, n=2) * N / r
    cpu_nm = _best(nm, n=1, clock=time.thread_time) / n_s.size * 1e9  # ns per pixel-band
    z_lib = zscore(n_s, robust_baseline(h_s), mad_floor=MAD_FLOOR).values
    z_fast = baseline_zscore(h_s, n_s, mad_floor=MAD_FLOOR).values
    identical = bool(np.array_equal(z_lib, z_fast, equal_nan=True))
    if hist_p is not None:
        # The whole cube: the in-place kernel on the padded layout equals the staging
        # kernel on the contiguous one (each equals the numpy path on the slab above).
        res["layouts_equal_whole_cube"] = bool(np.array_equal(
            baseline_zscore(hist, new, mad_floor=MAD_FLOOR).values,
            baseline_zscore(hist_p, new, mad_floor=MAD_FLOOR).values, equal_nan=True))
    nanmed_diff = float(np.nanmax(np.abs(out_nm["z"] - z_fast)))

    px = N * N
    res.update({
        "bytes_moved": moved,
        "bound_s": bound_s,
        # The first layout timed (contiguous unless --layout changedet); every layout below.
        "fused_layout": next(iter(layouts)),
        "fused_s": t_fast,
        "fused_s_by_layout": {k: {"best": min(v), "rounds": v, "fraction_of_bound": bound_s / min(v),
                                  "fraction_of_bound_per_round": per_round[k]}
                              for k, v in walls.items()},
        "fused_load": [load0, load1],
        "fused_Mpix_s": px / t_fast / 1e6,
        "fraction_of_bound": bound_s / t_fast,
        "fused_1thread_cpu_ns_per_pixel_band": pb,
        "bound_ns_per_pixel_band_1thread": moved / (B * px) / bw["numpy_1thread_GBps"],
        # Same ratio on CPU time (time.thread_time of one thread): less disturbed by
        # other processes than wall time on a shared machine.
        "bound_cpu_ns_per_pixel_band_1thread": moved / (B * px) / bw["numpy_1thread_cpu_time_GBps"],
        "fraction_of_bound_1thread_cpu_time": moved / (B * px) / bw["numpy_1thread_cpu_time_GBps"] / pb["whole cube"],
        "fraction_of_bound_1thread_cpu_time_padded": (moved / (B * px) / bw["numpy_1thread_cpu_time_GBps"]
                                                      / pb["whole cube, padded"]) if "whole cube, padded" in pb
        else None,
        "fused_1thread_cpu_load": load_pb,
        "numpy_nanmedian_1thread_cpu_ns_per_pixel_band": cpu_nm,
        "speedup_vs_numpy_1thread_cpu_time": cpu_nm / pb["clear slab"],
        "numpy_nanmedian_1thread_s_scaled": t_nm,
        "numpy_rows_measured": r,
        "numpy_load": loadn,
        "speedup_vs_numpy": t_nm / t_fast,
        "fused_equals_library_numpy": identical,
        "fused_vs_nanmedian_max_abs_diff": nanmed_diff,
    })
    w = 60
    print(f"{'figure':{w}s} {'value':>12s} {'load':>6s}")
    print(f"{'copy bandwidth numpy 1 thread (GB/s)':{w}s} {bw['numpy_1thread_GBps']:12.1f} {bw['load']:6.2f}")
    print(f"{'copy bandwidth numpy 2 threads (GB/s)':{w}s} {bw['numpy_2threads_GBps']:12.1f} {bw['load']:6.2f}")
    print(f"{'bytes that must move (GB)':{w}s} {moved / 1e9:12.2f}")
    print(f"{'bound time (s)':{w}s} {bound_s:12.3f} {bw['load']:6.2f}")
    for k, v in walls.items():
        label = f"fused kernel, {res['cpus']} threads, {k} (s)"
        print(f"{label:{w}s} {min(v):12.3f} {load1:6.2f}")
        label = f"  fraction of bound, {k} (target >= 60 %)"
        print(f"{label:{w}s} {bound_s / min(v):12.0%} {load1:6.2f}")
        label = "  same, copy rate of each round, best / median"
        rr = per_round[k]
        print(f"{label:{w}s} {max(rr):7.0%} / {float(np.median(rr)):3.0%}")
    for label, v in pb.items():
        print(f"{'fused 1 thread CPU ns/px-band, ' + label:{w}s} {v:12.2f} {load_pb:6.2f}")
    if "in_L2_page_faults_per_call" in res:
        print(f"{'  page faults per in-L2 call (should be 0)':{w}s} {res['in_L2_page_faults_per_call']:12.1f}")
    print(f"{'bound ns/pixel-band at 1-thread copy rate':{w}s} {res['bound_ns_per_pixel_band_1thread']:12.2f}")
    print(f"{'same, CPU time of the copy':{w}s} {res['bound_cpu_ns_per_pixel_band_1thread']:12.2f} {bw['load']:6.2f}")
    print(f"{'fraction of bound, 1 thread, CPU time':{w}s} {res['fraction_of_bound_1thread_cpu_time']:12.0%}")
    if res["fraction_of_bound_1thread_cpu_time_padded"] is not None:
        # CPU time against CPU time: the figure that other processes' share of the cores
        # disturbs least (they still share the memory bus).
        print(f"{'same, whole cube in changedet layout':{w}s} {res['fraction_of_bound_1thread_cpu_time_padded']:12.0%}")
    print(f"{'numpy nanmedian 1 thread CPU ns/pixel-band':{w}s} {cpu_nm:12.1f} {loadn:6.2f}")
    print(f"{'speed-up vs numpy, 1 thread each, CPU time':{w}s} {res['speedup_vs_numpy_1thread_cpu_time']:11.0f}x")
    label = f"numpy nanmedian 1 thread (s, {r} rows scaled)"
    print(f"{label:{w}s} {t_nm:12.1f} {loadn:6.2f}")
    print(f"{'speed-up vs numpy (target >= 1.5x)':{w}s} {t_nm / t_fast:11.0f}x {loadn:6.2f}")
    if "history in L2 (staging + compute)" in pb:
        # Roofline: per pixel-band, the bound in wall time with all cores, the core time
        # that 60 % of it allows, and the kernel's in-cache cost (no memory wait) per core.
        cpus = res["cpus"]
        bound_ns = moved / (B * px) / bw["best_GBps"]
        in_cache = pb["history in L2 (staging + compute)"]
        roof = {"bound_wall_ns_per_pixel_band": bound_ns, "cores": cpus,
                "core_ns_allowed_at_60pct": bound_ns / 0.6 * cpus,
                "in_cache_core_ns_per_pixel_band": in_cache,
                "in_cache_share_of_60pct_budget": in_cache / (bound_ns / 0.6 * cpus),
                "max_fraction_memory_fully_hidden": min(1.0, bound_ns * cpus / in_cache),
                "fraction_no_overlap": bound_ns / (in_cache / cpus + bound_ns)}
        roof["60pct_reachable"] = roof["max_fraction_memory_fully_hidden"] >= 0.6
        res["roofline"] = roof
        print(f"{'roofline: bound, wall ns/pixel-band':{w}s} {bound_ns:12.2f} {bw['load']:6.2f}")
        print(f"{'  core ns/pixel-band allowed at 60 %':{w}s} {roof['core_ns_allowed_at_60pct']:12.2f}")
        print(f"{'  in-cache cost, core ns/pixel-band':{w}s} {in_cache:12.2f} {load_pb:6.2f}")
        print(f"{'  in-cache share of the 60 % budget':{w}s} {roof['in_cache_share_of_60pct_budget']:12.0%}")
        print(f"{'  best possible, memory fully hidden':{w}s} {roof['max_fraction_memory_fully_hidden']:12.0%}")
        print(f"{'  with no overlap of memory and compute':{w}s} {roof['fraction_no_overlap']:12.0%}")
        # An upper bound: it assumes every memory wait hidden behind the compute, which the
        # whole-cube figure above shows the kernel does not achieve.
        print(f"{'  60 % within that upper bound':{w}s} {str(roof['60pct_reachable']):>12s}")
        if bw["load"] > 1.5:
            print(f"  (load {bw['load']}: other processes share the memory bus and the copy rate, so the "
                  "roofline lines are not meaningful; read them from an idle run)")
    print(f"fused == library numpy path (bit for bit): {identical}; max |fused - nanmedian pass| = "
          f"{nanmed_diff:.2g}", flush=True)
    if "layouts_equal_whole_cube" in res:
        print(f"whole cube, changedet layout == contiguous (bit for bit): {res['layouts_equal_whole_cube']}")
    # The slabs are views of the cube: drop them too, or the cube stays in memory.
    del cube, hist, new, h_s, n_s, z_lib, z_fast, out_nm, hist_p, layouts

    if M:
        import dask.array as da
        import xarray as xr
        from distributed import Client, LocalCluster

        chunk = 512
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.worker_mem,
                          processes=True, dashboard_address=":0") as cl, Client(cl) as client:
            limit = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
            # Dates in chunks of --ooc-date-chunk (1: as a cube read from its store, whose
            # blocks the kernel joins into its padded layout; 0: all dates in one chunk).
            tc = args.ooc_date_chunk or T - 1
            h = da.random.default_rng(1).standard_normal((T - 1, B, M, M), dtype=np.float32,
                                                          chunks=(tc, B, chunk, chunk)) * 0.01 + 0.2
            n = da.random.default_rng(2).standard_normal((B, M, M), dtype=np.float32,
                                                         chunks=(B, chunk, chunk)) * 0.01 + 0.2
            z = baseline_zscore(xr.DataArray(h, dims=("time", "band", "y", "x")),
                                xr.DataArray(n, dims=("band", "y", "x")), mad_floor=MAD_FLOOR)
            t = time.perf_counter()
            flagged = int((abs(z.data) > 4).sum().compute())
            t_ooc = time.perf_counter() - t
            peak = client.run(lambda dask_worker: dask_worker.monitor.range_query(start=0)["memory"])
        cube_gb = T * B * M * M * 4 / 1e9
        limits_gb = sum(limit.values()) / 1e9
        peak_gb = max(max(v) for v in peak.values()) / 1e9 if peak else float("nan")
        res["out_of_core"] = {"cube_GB": cube_gb, "date_chunk": args.ooc_date_chunk, "worker_limit_GB": max(limit.values()) / 1e9, "workers": 2,
                              "sum_of_limits_GB": limits_gb, "seconds": t_ooc, "flagged": flagged,
                              "chunk": chunk, "peak_worker_rss_GB": peak_gb, "load": _load()}
        print(f"out of core: {cube_gb:.1f} GB cube on 2 workers limited to {max(limit.values()) / 1e9:.2f} GB each "
              f"({limits_gb:.2f} GB together): done in {t_ooc:.1f} s, peak worker RSS {peak_gb:.2f} GB, "
              f"{flagged} values |z| > 4 ({flagged / (B * M * M):.4%}), dates per chunk "
              f"{args.ooc_date_chunk or T - 1} (load {_load()})")

    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_change.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
