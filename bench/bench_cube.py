"""Cube append cost as the cube grows: time per append and peak memory from 10 to 500 scenes.

An append should cost O(scene), not O(cube): both columns should stay flat as the cube
grows. Scenes are reflectance-like (a smooth field plus noise, 4 bands + CLM) on a
``--size`` square grid. Prints a table and writes bench/results/bench_cube.json.

    python bench/bench_cube.py                      # 500 scenes of 512 x 512 px
    python bench/bench_cube.py --scenes 100 --size 256 --root memory://bench
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from shapely.geometry import box

import sys

# This tree's changedet first (a copy of the repo run as a script would import the installed one).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from changedet.cube import Cube
from changedet.grid import GridSpec
from changedet.sources.base import SceneRecord

CHECKPOINTS = (10, 50, 100, 200, 300, 400, 500)


def _rss_mb() -> float:
    """Resident memory now (Linux /proc), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1e3
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=500)
    ap.add_argument("--size", type=int, default=512, help="tile side in pixels")
    ap.add_argument("--root", default=None, help="data dir or fsspec URL (default: a temporary directory)")
    args = ap.parse_args()

    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_cube_")
        root = tmp.name
    grid = GridSpec.from_bounds("EPSG:32652", (300000, 4100000, 300000 + 10 * args.size, 4100000 + 10 * args.size),
                                10.0)
    cube = Cube(root, "bench", "s2", grid)
    bands = ["B02", "B03", "B04", "B08", "CLM"]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:args.size, 0:args.size] / args.size
    base = np.stack([0.05 + 0.1 * (np.sin(6 * xx + k) * np.cos(4 * yy - k) + 1) for k in range(4)]).astype("float32")
    t0 = datetime(2020, 1, 1, 10, 30, tzinfo=timezone.utc)

    checkpoints = sorted({c for c in CHECKPOINTS if c < args.scenes} | {args.scenes})
    rows, window_t, window_peak = [], [], []
    tracemalloc.start()
    for i in range(1, args.scenes + 1):
        data = base + rng.normal(0.0, 0.01, base.shape).astype("float32")
        clm = (rng.random(grid.shape) < 0.02).astype("float32")[None]
        da = grid.attach(np.concatenate([data, clm]), bands=bands)
        scene = SceneRecord(id=f"bench-{i:04d}", source="bench", aoi_id="bench", sensor="s2",
                            time=t0 + timedelta(days=5 * i), platform="bench", cloud_cover=2.0,
                            footprint=box(130, 42, 130.1, 42.1), resolution_m=10.0)
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        start = time.perf_counter()
        assert cube.append(scene, da, extra={"cloud_fraction": 0.02})
        window_t.append(time.perf_counter() - start)
        window_peak.append(tracemalloc.get_traced_memory()[1] - before)
        if i in checkpoints:
            gc.collect()  # "live" is what is still referenced, not garbage awaiting collection
            prov = len(json.dumps(cube._read_provenance()))
            rows.append({"scenes": i, "append_ms_median": 1e3 * statistics.median(window_t),
                         "append_ms_max": 1e3 * max(window_t), "peak_alloc_mb": max(window_peak) / 1e6,
                         "rss_mb": _rss_mb(), "live_traced_mb": tracemalloc.get_traced_memory()[0] / 1e6, "provenance_kb": prov / 1e3,
                         "store_mb": cube.size_bytes() / 1e6, "scene_mb": da.nbytes / 1e6})
            window_t, window_peak = [], []
    tracemalloc.stop()

    print(f"cube append, {args.size} x {args.size} px x {len(bands)} bands (float32 in, uint16 stored), root {root}")
    print(f"{'scenes':>6} {'ms/append (median)':>19} {'max ms':>8} {'peak alloc MB':>14} {'live MB':>8} "
          f"{'RSS MB':>8} {'provenance kB':>14} {'store MB':>9}")
    for r in rows:
        print(f"{r['scenes']:>6} {r['append_ms_median']:>19.1f} {r['append_ms_max']:>8.1f} {r['peak_alloc_mb']:>14.1f} "
              f"{r['live_traced_mb']:>8.1f} {r['rss_mb']:>8.0f} {r['provenance_kb']:>14.1f} {r['store_mb']:>9.1f}")
    print("peak alloc: most Python/NumPy memory allocated during one append (tracemalloc); live: allocated and "
          "still held after it; medians and maxima over the appends since the previous row")
    first, last = rows[0], rows[-1]
    print(f"last/first: time x{last['append_ms_median'] / first['append_ms_median']:.2f}, "
          f"peak alloc x{last['peak_alloc_mb'] / first['peak_alloc_mb']:.2f} "
          f"(scene itself {first['scene_mb']:.1f} MB)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_cube.json").write_text(json.dumps({"size": args.size, "bands": bands, "root": str(root),
                                                     "rows": rows}, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
