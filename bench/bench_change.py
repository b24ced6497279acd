"""Speed of the baseline + z-score pass against the memory-bandwidth bound, and a cube
larger than a worker's memory limit on a dask LocalCluster.

    python bench/bench_change.py [--dates 20] [--bands 4] [--size 4096] [--ooc-size 8192]

Figures (one run, same process, so ratios are comparable on a noisy machine):

- copy bandwidth: best of 3 large-array copies (numpy single thread, and a numba
  parallel copy), bytes read + written per second;
- bound: bytes the pass must move (history read once, z written once) / copy bandwidth;
- fused numba kernel (changedet.kernels.fast.baseline_zscore) on the whole cube;
- single-threaded numpy implementation of the same arithmetic (the library numpy path,
  ``zscore(image, robust_baseline(history))``) on a row slab, as Mpix/s;
- out-of-core: a lazily generated cube several times a worker's memory limit, reduced
  on a LocalCluster (2 workers x ``--worker-mem``) to a count of |z| > 4.

Writes bench/results/bench_change.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _best(f, n=3):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def copy_bandwidth(nbytes: int) -> dict:
    import numba

    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)

    @numba.njit(parallel=True)
    def pcopy(src, dst):
        for i in numba.prange(src.size):
            dst[i] = src[i]

    pcopy(a[:10], b[:10])
    t1 = _best(lambda: np.copyto(b, a))
    t2 = _best(lambda: pcopy(a, b))
    return {"numpy_1thread_GBps": 2 * nbytes / t1 / 1e9, "numba_parallel_GBps": 2 * nbytes / t2 / 1e9,
            "best_GBps": 2 * nbytes / min(t1, t2) / 1e9}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dates", type=int, default=20)
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--numpy-rows", type=int, default=64, help="rows of the single-thread numpy slab")
    ap.add_argument("--ooc-size", type=int, default=3072, help="side of the out-of-core cube (0 = skip)")
    ap.add_argument("--worker-mem", default="1GiB")
    args = ap.parse_args(argv)

    import xarray as xr

    from changedet.kernels import robust_baseline, zscore
    from changedet.kernels.fast import baseline_zscore

    T, B, N = args.dates, args.bands, args.size
    rng = np.random.default_rng(0)
    print(f"cube float32 {T} dates x {B} bands x {N}^2 = {T * B * N * N * 4 / 1e9:.2f} GB", flush=True)
    cube = np.empty((T, B, N, N), dtype=np.float32)
    for t in range(T):
        cube[t] = rng.standard_normal((B, N, N), dtype=np.float32) * 0.01 + 0.2
    cube[3, :, : N // 8] = np.nan  # a cloud over an eighth of one date
    hist = xr.DataArray(cube[:-1], dims=("time", "band", "y", "x"))
    new = xr.DataArray(cube[-1], dims=("band", "y", "x"))

    bw = copy_bandwidth(min(cube.nbytes // 2, 2 << 30))
    moved = hist.nbytes + new.nbytes + new.nbytes  # read history and image, write z
    bound_s = moved / (bw["best_GBps"] * 1e9)

    baseline_zscore(hist[:, :, :8, :64], new[:, :8, :64], mad_floor=0.005)  # compile
    t_fast = _best(lambda: baseline_zscore(hist, new, mad_floor=0.005), n=3)

    rows = args.numpy_rows
    h_s, n_s = hist[:, :, :rows], new[:, :rows]
    z_np = None

    def np_pass():
        nonlocal z_np
        z_np = zscore(n_s, robust_baseline(h_s), mad_floor=0.005)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t_np = _best(np_pass, n=2)
    z_fast_slab = baseline_zscore(h_s, n_s, mad_floor=0.005)
    identical = bool(np.array_equal(z_np.values, z_fast_slab.values, equal_nan=True))

    px = N * N
    res = {
        "shape": [T, B, N, N],
        "copy_bandwidth": bw,
        "bytes_moved": moved,
        "bound_s": bound_s,
        "fused_s": t_fast,
        "fused_Mpix_s": px / t_fast / 1e6,
        "fraction_of_bound": bound_s / t_fast,
        "numpy_1thread_Mpix_s": rows * N / t_np / 1e6,
        "speedup_vs_numpy": (px / t_fast) / (rows * N / t_np),
        "fused_equals_numpy": identical,
    }
    print(f"copy bandwidth: numpy 1 thread {bw['numpy_1thread_GBps']:.1f} GB/s, numba parallel "
          f"{bw['numba_parallel_GBps']:.1f} GB/s (bound uses {bw['best_GBps']:.1f})")
    print(f"{'pass':38s} {'seconds':>8s} {'Mpix/s':>8s}")
    print(f"{'bandwidth bound (' + format(moved / 1e9, '.2f') + ' GB moved)':38s} {bound_s:8.3f} {px / bound_s / 1e6:8.1f}")
    print(f"{'fused numba baseline+z':38s} {t_fast:8.3f} {res['fused_Mpix_s']:8.1f}")
    print(f"{'numpy single thread (' + str(rows) + ' rows)':38s} {t_np * N / rows:8.3f} {res['numpy_1thread_Mpix_s']:8.1f}")
    print(f"fraction of bound {res['fraction_of_bound']:.0%} (target >= 60 %), speed-up vs numpy "
          f"{res['speedup_vs_numpy']:.1f}x (target >= 1.5x), identical to numpy: {identical}", flush=True)
    # The slabs are views of the cube: drop them too, or the cube stays in memory.
    del cube, hist, new, h_s, n_s, z_np, z_fast_slab

    if args.ooc_size:
        import dask.array as da
        from distributed import Client, LocalCluster

        M = args.ooc_size
        chunk = 512
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.worker_mem,
                          processes=True, dashboard_address=":0") as cl, Client(cl) as client:
            limit = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
            h = da.random.default_rng(1).standard_normal((T - 1, B, M, M), dtype=np.float32,
                                                          chunks=(T - 1, B, chunk, chunk)) * 0.01 + 0.2
            n = da.random.default_rng(2).standard_normal((B, M, M), dtype=np.float32,
                                                         chunks=(B, chunk, chunk)) * 0.01 + 0.2
            z = baseline_zscore(xr.DataArray(h, dims=("time", "band", "y", "x")),
                                xr.DataArray(n, dims=("band", "y", "x")), mad_floor=0.005)
            t = time.perf_counter()
            flagged = int((abs(z.data) > 4).sum().compute())
            t_ooc = time.perf_counter() - t
        cube_gb = (T - 1 + 1) * B * M * M * 4 / 1e9
        res["out_of_core"] = {"cube_GB": cube_gb, "worker_limit_GB": max(limit.values()) / 1e9, "workers": 2,
                              "seconds": t_ooc, "flagged": flagged, "chunk": chunk}
        print(f"out of core: {cube_gb:.1f} GB cube on 2 workers limited to {max(limit.values()) / 1e9:.2f} GB "
              f"each: done in {t_ooc:.1f} s, {flagged} values |z| > 4 ({flagged / (B * M * M):.3%})")

    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_change.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
