"""NAIP 10-date series: residual shift between every pair of dates after stack registration.

Registration and check use disjoint pixels and, by default, different estimators:

* the frame is cut into a checkerboard of ``CELL`` px squares; registration may use only
  one colour (``--fold 0``: cells with even row+col index), the check only the other;
* registration: phase correlation (:mod:`changedet.coreg`) - either the whole-frame
  network of ``coregister_stack(network=True)`` on NIR, or the windowed per-band network
  of :mod:`changedet.coreg_network` (``--estimator pc``); ``--estimator lk`` matches the
  pairs of that network with the weighted check's estimator instead (12 px Lucas-Kanade
  windows, precision-weighted), on the registration's pixels only - then only the pixels
  are independent, so run it with ``--check weighted,huber`` and read both;
  ``--estimator pc+lk`` solves the pc network, resamples each date by it and refines with
  lk (the reach of pc, the precision of lk);
* check (``--check weighted``, the default): Lucas-Kanade translation of every 12 px
  window tiled inside the held-out 72 px cells, each with its Cramer-Rao covariance,
  pooled per pair by a random-effects biweight mean restarted until it is a fixed point,
  bootstrap over cells (:func:`changedet.coreg_check.stack_residuals` with
  ``pooling="weighted"``); ``--check huber`` is the earlier check (one 64 px window per
  cell, equal-weight Huber mean). Then the network adjustment
  (:func:`changedet.coreg_check.adjust_residuals`) that combines all 45 pair
  measurements into each pair's residual, and the check's own noise floor measured on two
  halves of its pixels (:func:`changedet.coreg_check.split_half`).
* ``--fold both``: the registration on each colour, each checked on the other, and the
  two folds split by :func:`changedet.coreg_check.cross_fit`. The colours' disagreement
  (the translation fitting one colour's content is not the other's) enters the folds
  with opposite signs: their half-difference is that disagreement (what a held-out check
  reads even for a registration exactly right on its own colour; a registration on all
  the pixels carries about half of it), their mean what both share - the registration's
  bias against the check's estimator on the pixels it was given. The row ``<method>/x``
  gives the mean with its bootstrap floor and the folds' chi2/dof; its "floor split"
  column is the floor implied by the half-difference.

Prints per band and method the residual per pair (raw and adjusted) with standard
errors, the max over pairs, and writes JSON to bench/results/bench_naip_fold<F>_<estimator>_<checks>.json
(``<F>`` 0, 1 or both).

Each band and check also prints the per-date residuals (row, col) and the floor the
check would report after a registration exactly as precise as itself (its split-half
variance doubled: what an ``--estimator lk`` registration on the other colour can at best
reach).

Usage: ``python bench/bench_naip.py [--bands b4] [--fold 0|1|both] [--methods before,whole,windows] [--estimator pc+lk]
[--check weighted,huber]``
"""

from __future__ import annotations

import argparse
import glob
import itertools
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
WINDOW = 12  # window of the weighted check (px): 5 x 5 of them tile a cell's interior


def load_stack(offset_px: float = 0.0):
    """The 10 dates on the grid of the first, as a (time, band, y, x) DataArray, edge cropped.

    ``offset_px`` moves that grid by a fraction of a pixel in x and y, so that the first
    date is resampled like the others (with 0 it is copied unresampled, the only date
    with its native sharpness and aliasing).
    """
    import xarray as xr
    from rasterio.enums import Resampling

    from changedet.io import read_raster

    files = sorted(glob.glob(str(DATA / "naip_timeseries_nd" / "*.tif")))
    if len(files) != 10:
        raise SystemExit(f"expected 10 NAIP files under {DATA / 'naip_timeseries_nd'}, found {len(files)}")
    das = [read_raster(f) for f in files]
    ref = das[0]
    if offset_px:
        from affine import Affine

        t = ref.rio.transform()
        ref = ref.assign_coords(x=ref.x + offset_px * t.a, y=ref.y + offset_px * t.e)
        ref = ref.rio.write_transform(t * Affine.translation(offset_px, offset_px))
    stack = xr.concat([d.rio.reproject_match(ref, resampling=Resampling.cubic).assign_coords(x=ref.x, y=ref.y)
                       for d in das], dim="time")
    stack = stack.assign_coords(time=np.arange(len(das)))
    return stack.isel(y=slice(EDGE, -EDGE), x=slice(EDGE, -EDGE)).astype("float64"), [Path(f).stem[-8:] for f in files]


def register(stack, method: str, fold: int, estimator: str = "pc"):
    """Registered stack (numpy) and the applied shifts (time, band, 2) for one method."""
    import xarray as xr

    from changedet.coreg import coregister_stack
    from changedet.coreg_network import checkerboard

    use = checkerboard(stack.shape[-2:], CELL, parity=fold)
    if method == "before":
        return stack.values, np.zeros(stack.shape[:2] + (2,))
    valid = xr.DataArray(np.broadcast_to(use, (stack.sizes["time"],) + use.shape).copy(),
                         dims=("time", "y", "x"), coords={"y": stack.y, "x": stack.x})
    valid = valid.rio.write_crs(stack.rio.crs)
    ref = stack.isel(time=0, drop=True)
    if method in ("whole", "global", "local"):
        # One translation (or warp) per date from NIR, applied to every band.
        kw = {"network": True} if method == "whole" else {"local": method == "local"}
        aligned, results = coregister_stack(stack, ref.sel(band=["b4"]), band="b4", valid=valid, **kw)
        sh = np.array([[r.shift_row_px, r.shift_col_px] if r.applied else [np.nan, np.nan] for r in results])
        return aligned.values, np.repeat(sh[:, None], stack.sizes["band"], axis=1)
    if method == "windows":
        # The windowed network, every band on itself (coregister_stack's per-band mode).
        aligned, results = coregister_stack(stack, ref, network="windows", per_band=True, valid=valid,
                                            estimator=estimator)
        names = [str(b) for b in stack["band"].values]
        sh = np.array([[[r[b].shift_row_px, r[b].shift_col_px] if r[b].applied else [np.nan, np.nan]
                        for b in names] for r in results])
        return aligned.values, sh
    raise SystemExit(f"unknown method {method!r}: use before, whole, windows, global or local")


def measure(arr: np.ndarray, band: int, fold: int, n_boot: int, check: str = "weighted") -> dict:
    from changedet.coreg_check import adjust_residuals, noise_floor, split_half, stack_residuals
    from changedet.coreg_network import checkerboard
    from changedet.errors import CoregError

    held_out = checkerboard(arr.shape[-2:], CELL, parity=1 - fold)
    if check == "weighted":
        opts = {"pooling": "weighted", "window_px": WINDOW}
        res = stack_residuals(arr, band=band, mask=held_out, cell_px=CELL, n_boot=n_boot, **opts)
    else:
        opts = {}
        res = stack_residuals(arr, band=band, mask=held_out, window_px=CELL - 8, step_px=CELL, n_boot=n_boot)
    adj = adjust_residuals(res, arr.shape[0])
    # The check's own noise, two ways: from its bootstrap errors, and measured on two halves
    # of the held-out pixels (includes errors a date's pairs share, which the bootstrap misses).
    floor = noise_floor(adj)
    try:
        half = split_half(arr, band=band, mask=held_out, cell_px=CELL, n_boot=min(n_boot, 50), **opts)
    except CoregError as exc:  # a half with too few reliable windows to link every date
        nan2 = (float("nan"), float("nan"))
        half = {"floor": {"median_px": nan2, "max_px": nan2}, "sigma_date_px": list(nan2),
                "sigma_date_bootstrap_px": list(nan2), "error": str(exc)}
    # What the check reports after a registration exactly as noisy as itself (the same
    # estimator on the other, statistically equivalent, colour: registration = lk): the
    # per-date errors of both add, so the split-half variance doubles.
    both = {"median_px": (float("nan"),) * 2, "max_px": (float("nan"),) * 2}
    if np.all(np.isfinite(half["sigma_date_px"])):
        from changedet.coreg_check import AdjustedResiduals

        n = arr.shape[0]
        cov = np.zeros((2, n, n))
        for c in range(2):
            cov[c, 1:, 1:] = 2.0 * half["sigma_date_px"][c] ** 2 * (np.eye(n - 1) + 1.0)
        pairs = np.array(list(itertools.combinations(range(n), 2)), int)
        both = noise_floor(AdjustedResiduals(pairs, None, None, None, np.zeros((n, 2)), float("nan"), cov))
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
        "floor_bootstrap": floor, "floor_split_half": half["floor"], "floor_check_plus_equal_registration": both,
        "sigma_date_split_half_px": half["sigma_date_px"], "sigma_date_bootstrap_px": half["sigma_date_bootstrap_px"],
        "_adjusted": adj,
    }


def diagnose(stack, bands: list[int], names: list[str], n_boot: int) -> list[dict]:
    """Where the held-out residual comes from: per-date translations by both estimators on both folds.

    For every band and fold ``f`` (checkerboard colour) two per-date translation sets,
    relative to date 0: ``pc f`` from the registration's estimator (windowed phase
    correlation network, :func:`changedet.coreg_network.network_shifts`) and ``lk f``
    from the check's (Lucas-Kanade + :func:`changedet.coreg_check.adjust_residuals`).
    Comparing them pairwise separates

    * ``pc0-lk1`` / ``pc1-lk0``: what the bench's "after" measures (registration on one
      fold, check on the other);
    * ``lk0-lk1``, ``pc0-pc1``: one estimator on the two folds - the translation that
      fits one half of the pixels against the other half (non-rigid misregistration,
      changed content, noise);
    * ``pc0-lk0``, ``pc1-lk1``: the two estimators on the same pixels (estimator bias:
      they weight windows and edges differently).

    Each comparison is reported as the median and max over pairs of ``|d_j - d_i|``
    (``d`` = difference of the two per-date sets), beside the noise floor of that
    comparison (:func:`changedet.coreg_check.noise_floor` on the summed covariances).
    """
    from changedet.coreg_check import AdjustedResiduals, BandResidual, adjust_residuals, noise_floor, stack_residuals
    from changedet.coreg_network import checkerboard, network_shifts

    arr = stack.values
    n = arr.shape[0]
    rows = []
    print(f"\n{'band':<4} {'comparison':<10} {'median':>7} {'max':>7} | {'floor med':>9} {'floor max':>9} "
          f"{'(95 %)':>7}")
    for b in bands:
        est = {}
        for fold in (0, 1):
            cells = checkerboard(arr.shape[-2:], CELL, parity=fold)
            res = stack_residuals(arr, band=b, mask=cells, window_px=CELL - 8, step_px=CELL, n_boot=n_boot)
            lk = adjust_residuals(res, n)
            est[f"lk{fold}"] = (lk.per_date, lk.covariance)
            sol = network_shifts(None, arr[:, b], valid=cells, estimator="pc")  # windowed phase correlation
            pres = [BandResidual(int(i), int(j), b, float(r), float(c), float(e), float(e), float(np.hypot(r, c)),
                                 float(e), 0, 0, float("nan"))
                    for (i, j), (r, c), e in zip(sol.pairs, sol.pair_shifts, sol.pair_stderr) if np.isfinite(e)]
            pc = adjust_residuals(pres, n)
            # The registration's own (robust) solution; the adjustment only supplies its covariance.
            est[f"pc{fold}"] = (sol.shifts, pc.covariance)
        pairs = np.array(list(itertools.combinations(range(n), 2)))
        for a, c in (("pc0", "lk1"), ("pc1", "lk0"), ("lk0", "lk1"), ("pc0", "pc1"), ("pc0", "lk0"),
                     ("pc1", "lk1")):
            d = est[a][0] - est[c][0]
            mag = np.hypot(*(d[pairs[:, 1]] - d[pairs[:, 0]]).T)
            cov = est[a][1] + est[c][1]
            floor = noise_floor(AdjustedResiduals(pairs, None, None, None, np.zeros((n, 2)), float("nan"), cov))
            row = {"band": names[b], "comparison": f"{a}-{c}", "median_px": float(np.median(mag)),
                   "max_px": float(mag.max()), "floor_median_px": floor["median_px"], "floor_max_px": floor["max_px"],
                   "per_date_diff_px": d.tolist()}
            rows.append(row)
            print(f"{names[b]:<4} {a + '-' + c:<10} {row['median_px']:7.3f} {row['max_px']:7.3f} | "
                  f"{floor['median_px'][0]:9.3f} {floor['max_px'][0]:9.3f} {floor['max_px'][1]:7.3f}", flush=True)
    return rows


def _print_run(m: dict, method: str, check: str, band: str, cpu: float, dates: list[str], per_pair: bool,
               fold: int | None) -> None:
    """One fold's row (and per-date / per-pair lines) of the table."""
    label = method if fold is None else f"{method}/{fold}"
    print(f"{label:<8} {check:<8} {band:<4} {m['raw_median_px']:8.3f} {m['raw_max_px']:8.3f} "
          f"{m['raw_median_stderr_px']:7.3f} | {m['adjusted_median_px']:8.3f} {m['adjusted_max_px']:8.3f} "
          f"{str(tuple(m['adjusted_max_pair'])):>8} {m['adjusted_max_stderr_px']:6.3f} "
          f"{m['pairs_over_0.1px_adjusted']:5d} {m['chi2_dof']:8.2f} | "
          f"{m['floor_bootstrap']['median_px'][0]:8.3f}/{m['floor_bootstrap']['max_px'][0]:.3f} "
          f"{m['floor_split_half']['median_px'][0]:9.3f}/{m['floor_split_half']['max_px'][0]:.3f} | "
          f"{cpu:9.1f}", flush=True)
    fb = m["floor_check_plus_equal_registration"]
    print(f"    floor of check + a registration as precise as the check (split-half x2): median "
          f"{fb['median_px'][0]:.3f} (95 % {fb['median_px'][1]:.3f}), max {fb['max_px'][0]:.3f} "
          f"(95 % {fb['max_px'][1]:.3f})")
    print("    per date (row, col) px: " + "  ".join(f"{dates[t][2:4]} {r:+.3f} {c:+.3f}"
                                                  for t, (r, c) in enumerate(m["per_date_px"])), flush=True)
    if per_pair:
        for p, r, rs, a, s, w, wt in zip(m["pairs"], m["raw_px"], m["raw_stderr_px"], m["adjusted_px"],
                                         m["adjusted_stderr_px"], m["windows"], m["windows_total"]):
            print(f"    {dates[p[0]]}-{dates[p[1]]}: raw {r:.3f} +- {rs:.3f} ({w}/{wt} windows)  "
                  f"adjusted {a:.3f} +- {s:.3f}")


def _cross_fit_run(adj0, adj1) -> dict:
    """The two folds' mean and half-difference (:func:`changedet.coreg_check.cross_fit`), JSON-ready."""
    from changedet.coreg_check import cross_fit

    cf = cross_fit([adj0, adj1])
    adj = cf["adjusted"]
    k = int(np.argmax(adj.magnitude_px))
    return {
        "pairs": adj.pairs.tolist(), "adjusted_px": adj.magnitude_px.tolist(),
        "adjusted_stderr_px": adj.stderr.max(axis=1).tolist(), "adjusted_row_col_px": adj.residual.tolist(),
        "per_date_px": adj.per_date.tolist(), "fold_chi2_dof": cf["fold_chi2_dof"],
        "adjusted_median_px": float(np.median(adj.magnitude_px)), "adjusted_max_px": float(adj.magnitude_px[k]),
        "adjusted_max_pair": [int(v) for v in adj.pairs[k]], "adjusted_max_stderr_px": float(adj.stderr[k].max()),
        "adjusted_median_stderr_px": float(np.median(adj.stderr.max(axis=1))),
        "pairs_over_0.1px_adjusted": int((adj.magnitude_px > 0.1).sum()),
        # Pairs over 0.1 px by more than two standard errors (of the larger component).
        "pairs_over_0.1px_2se": int((adj.magnitude_px - 2 * adj.stderr.max(axis=1) > 0.1).sum()),
        "floor_bootstrap": cf["floor"], "floor_fold_diff": cf["floor_fold_diff"],
        "sigma_date_fold_diff_px": cf["sigma_date_fold_diff_px"], "fold_diff_px": cf["fold_diff"].tolist(),
        "fold_diff_max_px": cf["fold_diff_max_px"],
        "fold_diff_pair_px": np.hypot(*(cf["fold_diff"][adj.pairs[:, 1]]
                                        - cf["fold_diff"][adj.pairs[:, 0]]).T).tolist(),
    }


def _print_cross(m: dict, method: str, check: str, band: str, dates: list[str], per_pair: bool, folds) -> None:
    """The ``<method>/x`` row: the folds' mean, its floors and the folds' agreement."""
    print(f"{method + '/x':<8} {check:<8} {band:<4} {'':>8} {'':>8} {'':>7} | {m['adjusted_median_px']:8.3f} "
          f"{m['adjusted_max_px']:8.3f} {str(tuple(m['adjusted_max_pair'])):>8} {m['adjusted_max_stderr_px']:6.3f} "
          f"{m['pairs_over_0.1px_adjusted']:5d} {m['fold_chi2_dof']:8.2f} | "
          f"{m['floor_bootstrap']['median_px'][0]:8.3f}/{m['floor_bootstrap']['max_px'][0]:.3f} "
          f"{m['floor_fold_diff']['median_px'][0]:9.3f}/{m['floor_fold_diff']['max_px'][0]:.3f} |", flush=True)
    print(f"    folds' mean: pairs over 0.1 px by > 2 SE: {m['pairs_over_0.1px_2se']}; folds' half-difference max "
          f"{m['fold_diff_max_px']:.3f} px; bootstrap floor 95 %: median {m['floor_bootstrap']['median_px'][1]:.3f}, "
          f"max {m['floor_bootstrap']['max_px'][1]:.3f}")
    print("    per date (row, col) px: " + "  ".join(f"{dates[t][2:4]} {r:+.3f} {c:+.3f}"
                                                  for t, (r, c) in enumerate(m["per_date_px"])), flush=True)
    if per_pair:
        for k, p in enumerate(m["pairs"]):
            print(f"    {dates[p[0]]}-{dates[p[1]]}: fold 0 {folds[0].magnitude_px[k]:.3f}  fold 1 "
                  f"{folds[1].magnitude_px[k]:.3f}  mean {m['adjusted_px'][k]:.3f} +- "
                  f"{m['adjusted_stderr_px'][k]:.3f}  half-difference {m['fold_diff_pair_px'][k]:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bands", default="b1,b2,b3,b4", help="bands to check (b1..b4 = R,G,B,NIR)")
    ap.add_argument("--methods", default="before,whole,windows",
                    help="before, whole (network, NIR), windows (windowed network per band), global, local (NIR)")
    ap.add_argument("--fold", default="0", choices=("0", "1", "both"),
                    help="checkerboard colour used for registration (the other is checked); both: each colour in "
                         "turn, then the folds' mean and half-difference (coreg_check.cross_fit)")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples per pair")
    ap.add_argument("--check", default="weighted",
                    help="weighted: 12 px windows, Cramer-Rao weights, biweight (default); huber: 64 px windows; "
                         "both: weighted,huber")
    ap.add_argument("--estimator", default="pc+lk", choices=("pc", "lk", "pc+lk"),
                    help="pair estimator of the windows method: pc (64 px phase correlation), lk "
                         "(12 px Lucas-Kanade windows, precision-weighted; the weighted check's estimator on the "
                         "other pixels, so report the huber check beside it) or pc+lk (the pc network, then lk on "
                         "the dates resampled by it; the library's default)")
    ap.add_argument("--per-pair", action="store_true", help="print every pair")
    ap.add_argument("--grid-offset", type=float, default=0.0,
                    help="move the stack grid off the first date's by this fraction of a pixel (x and y)")
    ap.add_argument("--diagnose", action="store_true",
                    help="decompose the residual: both estimators on both folds, against their noise floor")
    args = ap.parse_args()
    checks = args.check.split(",")
    if not set(checks) <= {"weighted", "huber"}:
        raise SystemExit(f"--check {args.check!r}: use weighted, huber or weighted,huber")

    t0 = time.perf_counter()
    stack, dates = load_stack(args.grid_offset)
    names = [str(b) for b in stack["band"].values]
    bands = [names.index(b) for b in args.bands.split(",")]
    out = {"dates": dates, "cell_px": CELL, "check": args.check,
           "fold": args.fold if args.fold == "both" else int(args.fold), "estimator": args.estimator,
           "grid_offset_px": args.grid_offset, "load": os.getloadavg()[0], "runs": []}
    held = "the other fold" if args.fold == "both" else f"fold {1 - int(args.fold)}"
    print(f"NAIP {len(dates)} dates {stack.shape[-2:]} px, checkerboard {CELL} px, registration on fold "
          f"{args.fold} ({args.estimator} pairs), {args.check} check on {held}; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'method':<8} {'check':<8} {'band':<4} {'raw med':>8} {'raw max':>8} {'raw SE':>7} | {'adj med':>8} "
          f"{'adj max':>8} {'(pair)':>8} {'SE':>6} {'>0.1':>5} {'chi2/dof':>8} | {'floor boot med/max':>18} "
          f"{'floor split med/max':>19} | {'reg CPU s':>9}")
    if args.diagnose:
        out["diagnose"] = diagnose(stack, bands, names, args.boot)
        args.methods = ""
    folds = (0, 1) if args.fold == "both" else (int(args.fold),)
    for method in filter(None, args.methods.split(",")):
        # Each band is registered on itself (per band), so registering only the checked
        # bands gives them the same shifts at a fraction of the cost.
        # The NIR-driven methods (whole, global, local) need b4 in the stack.
        subset = method in ("before", "windows")
        per_fold = {}
        for fold in folds:
            c = time.process_time()
            arr, shifts = register(stack.isel(band=bands) if subset else stack, method, fold, args.estimator)
            cpu = time.process_time() - c
            for b, check in itertools.product(range(len(bands)), checks):
                plane = b if subset else bands[b]  # the band's plane in arr and shifts
                m = measure(arr, plane, fold, args.boot, check)
                per_fold[fold, b, check] = m.pop("_adjusted")
                m.update({"method": method, "band": names[bands[b]], "check": check, "fold": fold,
                          "register_cpu_s": cpu,
                          "shifts_px": np.where(np.isfinite(shifts[:, plane]), shifts[:, plane], None).tolist()})
                out["runs"].append(m)
                _print_run(m, method, check, names[bands[b]], cpu, dates, args.per_pair,
                           fold if len(folds) > 1 else None)
        if len(folds) < 2:
            continue
        for b, check in itertools.product(range(len(bands)), checks):
            m = _cross_fit_run(per_fold[0, b, check], per_fold[1, b, check])
            m.update({"method": method, "band": names[bands[b]], "check": check, "fold": "both"})
            out["runs"].append(m)
            _print_cross(m, method, check, names[bands[b]], dates, args.per_pair,
                         [per_fold[f, b, check] for f in (0, 1)])
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    dest = ROOT / "bench" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    name = ("bench_naip_diagnose.json" if args.diagnose
            else f"bench_naip_fold{args.fold}_{args.estimator.replace('+', '')}_{'_'.join(checks)}.json")
    (dest / name).write_text(json.dumps(out, indent=1))
    print(f"wall {out['wall_s']:.0f} s, CPU {out['cpu_s']:.0f} s; JSON in bench/results/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
