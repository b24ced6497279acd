"""NAIP 10-date series: residual shift between every pair of dates after stack registration.

Registration and check use disjoint pixels and different estimators:

* the frame is cut into a checkerboard of ``CELL`` px squares; registration may use only
  one colour (``--fold 0``: cells with even row+col index), the check only the other;
* registration: phase correlation (:mod:`changedet.coreg`) - either the whole-frame
  network of ``coregister_stack(network=True)`` on NIR, or the windowed per-band network
  of :mod:`changedet.coreg_network`;
* check: Lucas-Kanade translation per 72 px cell (:func:`changedet.coreg_check.stack_residuals`),
  robust mean over cells, bootstrap standard error; then the network adjustment
  (:func:`changedet.coreg_check.adjust_residuals`) that combines all 45 pair
  measurements into each pair's residual.

Prints per band and method the residual per pair (raw and adjusted) with standard
errors, the max over pairs, and writes JSON to bench/results/bench_naip_fold<F>.json.

Usage: ``python bench/bench_naip.py [--bands b4] [--fold 0] [--methods before,whole,windows]``
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHANGEDET_TEST_DATA", ROOT.parent / "shared" / "data"))
EDGE = 12   # cubic reprojection leaves NaN at the frame edge
CELL = 72   # checkerboard cell = check window (64 px) + its 4 px margins


def load_stack():
    """The 10 dates on the grid of the first, as a (time, band, y, x) DataArray, edge cropped."""
    import xarray as xr
    from rasterio.enums import Resampling

    from changedet.io import read_raster

    files = sorted(glob.glob(str(DATA / "naip_timeseries_nd" / "*.tif")))
    if len(files) != 10:
        raise SystemExit(f"expected 10 NAIP files under {DATA / 'naip_timeseries_nd'}, found {len(files)}")
    das = [read_raster(f) for f in files]
    ref = das[0]
    stack = xr.concat([d.rio.reproject_match(ref, resampling=Resampling.cubic).assign_coords(x=ref.x, y=ref.y)
                       for d in das], dim="time")
    stack = stack.assign_coords(time=np.arange(len(das)))
    return stack.isel(y=slice(EDGE, -EDGE), x=slice(EDGE, -EDGE)).astype("float64"), [Path(f).stem[-8:] for f in files]


def register(stack, method: str, fold: int):
    """Registered stack (numpy) and the applied shifts (time, band, 2) for one method."""
    import xarray as xr

    from changedet.coreg import coregister_stack
    from changedet.coreg_network import checkerboard, coregister_stack_windows

    use = checkerboard(stack.shape[-2:], CELL, parity=fold)
    if method == "before":
        return stack.values, np.zeros(stack.shape[:2] + (2,))
    if method == "whole":
        valid = xr.DataArray(np.broadcast_to(use, (stack.sizes["time"],) + use.shape).copy(),
                             dims=("time", "y", "x"), coords={"y": stack.y, "x": stack.x})
        valid = valid.rio.write_crs(stack.rio.crs)
        aligned, results = coregister_stack(stack, stack.isel(time=0, drop=True).sel(band=["b4"]), band="b4",
                                            network=True, valid=valid, scheduler="synchronous")
        sh = np.array([[r.shift_row_px, r.shift_col_px] if r.applied else [np.nan, np.nan] for r in results])
        return aligned.values, np.repeat(sh[:, None], stack.sizes["band"], axis=1)
    if method == "windows":
        aligned, shifts, _ = coregister_stack_windows(stack, per_band=True, valid=use)
        return aligned.values, shifts
    raise SystemExit(f"unknown method {method!r}: use before, whole or windows")


def measure(arr: np.ndarray, band: int, fold: int, n_boot: int) -> dict:
    from changedet.coreg_check import adjust_residuals, stack_residuals
    from changedet.coreg_network import checkerboard

    held_out = checkerboard(arr.shape[-2:], CELL, parity=1 - fold)
    res = stack_residuals(arr, band=band, mask=held_out, window_px=CELL - 8, step_px=CELL, n_boot=n_boot)
    adj = adjust_residuals(res, arr.shape[0])
    raw = np.array([r.magnitude_px for r in res])
    raw_se = np.array([r.stderr_px for r in res])
    k = int(np.nanargmax(adj.magnitude_px))
    return {
        "pairs": [[int(r.i), int(r.j)] for r in res],
        "raw_px": raw.tolist(), "raw_stderr_px": raw_se.tolist(),
        "raw_row_col_px": [[r.shift_row_px, r.shift_col_px] for r in res],
        "windows": [r.windows for r in res], "windows_total": [r.windows_total for r in res],
        "spread_px": [r.spread_px for r in res],
        "adjusted_px": adj.magnitude_px.tolist(), "adjusted_stderr_px": adj.stderr.max(axis=1).tolist(),
        "adjusted_row_col_px": adj.residual.tolist(), "per_date_px": adj.per_date.tolist(),
        "chi2_dof": adj.chi2_dof,
        "raw_median_px": float(np.nanmedian(raw)), "raw_max_px": float(np.nanmax(raw)),
        "raw_median_stderr_px": float(np.nanmedian(raw_se)),
        "adjusted_median_px": float(np.median(adj.magnitude_px)), "adjusted_max_px": float(adj.magnitude_px[k]),
        "adjusted_max_pair": [int(v) for v in adj.pairs[k]],
        "adjusted_max_stderr_px": float(adj.stderr[k].max()),
        "adjusted_median_stderr_px": float(np.median(adj.stderr.max(axis=1))),
        "pairs_over_0.1px_adjusted": int((adj.magnitude_px > 0.1).sum()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bands", default="b1,b2,b3,b4", help="bands to check (b1..b4 = R,G,B,NIR)")
    ap.add_argument("--methods", default="before,whole,windows", help="before, whole, windows")
    ap.add_argument("--fold", type=int, default=0, choices=(0, 1),
                    help="checkerboard colour used for registration (the other is checked)")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples per pair")
    ap.add_argument("--per-pair", action="store_true", help="print every pair")
    args = ap.parse_args()

    t0 = time.perf_counter()
    stack, dates = load_stack()
    names = [str(b) for b in stack["band"].values]
    bands = [names.index(b) for b in args.bands.split(",")]
    out = {"dates": dates, "cell_px": CELL, "fold": args.fold, "load": os.getloadavg()[0], "runs": []}
    print(f"NAIP {len(dates)} dates {stack.shape[-2:]} px, checkerboard {CELL} px, registration on fold "
          f"{args.fold}, check on fold {1 - args.fold}; load {os.getloadavg()[0]:.1f}")
    print(f"{'method':<8} {'band':<4} {'raw med':>8} {'raw max':>8} {'raw SE':>7} | {'adj med':>8} "
          f"{'adj max':>8} {'(pair)':>8} {'SE':>6} {'>0.1':>5} {'chi2/dof':>8} {'reg CPU s':>9}")
    for method in args.methods.split(","):
        c = time.process_time()
        arr, shifts = register(stack, method, args.fold)
        cpu = time.process_time() - c
        for b in bands:
            m = measure(arr, b, args.fold, args.boot)
            m.update({"method": method, "band": names[b], "register_cpu_s": cpu,
                      "shifts_px": np.where(np.isfinite(shifts[:, b]), shifts[:, b], None).tolist()})
            out["runs"].append(m)
            print(f"{method:<8} {names[b]:<4} {m['raw_median_px']:8.3f} {m['raw_max_px']:8.3f} "
                  f"{m['raw_median_stderr_px']:7.3f} | {m['adjusted_median_px']:8.3f} {m['adjusted_max_px']:8.3f} "
                  f"{str(tuple(m['adjusted_max_pair'])):>8} {m['adjusted_max_stderr_px']:6.3f} "
                  f"{m['pairs_over_0.1px_adjusted']:5d} {m['chi2_dof']:8.2f} {cpu:9.1f}", flush=True)
            if args.per_pair:
                for p, r, rs, a, s, w, wt in zip(m["pairs"], m["raw_px"], m["raw_stderr_px"], m["adjusted_px"],
                                                 m["adjusted_stderr_px"], m["windows"], m["windows_total"]):
                    print(f"    {dates[p[0]]}-{dates[p[1]]}: raw {r:.3f} +- {rs:.3f} ({w}/{wt} windows)  "
                          f"adjusted {a:.3f} +- {s:.3f}")
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    dest = ROOT / "bench" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"bench_naip_fold{args.fold}.json").write_text(json.dumps(out, indent=1))
    print(f"wall {out['wall_s']:.0f} s, CPU {out['cpu_s']:.0f} s; JSON in bench/results/bench_naip_fold{args.fold}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
