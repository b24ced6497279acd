"""Co-registration against AROSICS, side by side: accuracy and wall time in one run.

Run:  . .venv/bin/activate && python bench/bench_coreg.py [--repeat N] [--repeat-global N] [--quick]
(``--quick --repeat 3 --repeat-global 15``: about 2 min on a quiet machine.)

Cases (all from real Sentinel-2 data in ../shared/data/arosics_s2_pair):

* ``global synthetic``: 1024 x 1024 crops of the reference scene displaced by known
  sub-pixel shifts with a band-limited Fourier shift (neither tool's resampling), with
  20 % changed pixels, bright cloud blobs and noise. Error = |estimate - truth|.
* ``global real``: the pair itself at AROSICS' two recorded points (512 px windows);
  no truth, the recorded AROSICS figures are printed alongside.
* ``local synthetic``: a 1024 x 1024 crop warped by a smooth non-rigid field (up to
  ~2 px of bending) with the same clutter; tie points every 128 px, 256 px windows for
  both tools. Error = RMS of (kept tie-point shift - true field at the point).
* ``--naip``: the 10-date NAIP stack registered with ``coregister_stack`` (global,
  local, whole-frame network on NIR, windowed network per band) on one colour of a
  72 px checkerboard, and the residual shift between all 45 pairs measured
  independently on the other colour, on NIR and on red (:mod:`bench_naip`,
  :mod:`changedet.coreg_check`: Lucas-Kanade per cell, bootstrap standard errors,
  network adjustment).

Columns: ``ours`` is the full operation (estimate on the whole image, apply, similarity
before/after); ``same-task`` is what AROSICS computes: global = ``coregister_files``,
file in and shift out, one 256 px window at the centre of the overlap read alone from
each file (the whole cost: opening and reading the files, the estimate, its checks and
the similarity before/after on the window), local = the tie-point table only
(``read_raster`` + ``estimate_local``). The speed-ups compare same-task with AROSICS,
by wall time and by CPU time (this machine is shared, so wall time is noisy; CPU time
counts AROSICS' worker processes too). The load average is printed beside every case.

Ours runs in this process and the figure is the best of ``--repeat-global`` calls, so it
is the per-call cost after warm-up: the window match's numba kernels (bit-identical to
its numpy code, see :mod:`changedet.coreg`) are imported and loaded from numba's disk
cache by the first calls, not timed here (about a second once per process; a one-off
``changedet coregister`` call does not load them). ``--kernels numpy`` times the numpy
code instead (same results).

A second table, global mode *compute only*: both tools get their images already in
memory (ours: the two windows ``coregister_files`` reads; AROSICS: ``GeoArray.to_mem()``)
and the clock covers the match (ours: ``estimate_window``: shift, reliability and the
similarity before/after on the window).

A third table: the global cases against an independent estimate on the same window
(:func:`lk_reference`, Lucas-Kanade on 32 px windows; its distance to the truth on the
synthetic cases is printed too). The real pair's only reference is AROSICS' own recorded
output, which favours AROSICS; the independent estimate is a third opinion.

AROSICS runs in its own virtualenv (``.venv-arosics``, see README / shared NOTES.md for
the GDAL recipe) in one long-lived subprocess (:class:`ArosicsRunner`), case by case
right after ours on the same case (interleaved: the machine's load drifts within a
minute, so both sides of a ratio are timed back to back); its wall time is measured
inside that process around the AROSICS calls only (imports and file writing
excluded), ours around the calls above from the same files. If AROSICS cannot be imported the
reason is printed and the comparison falls back to full-image upsampled phase
correlation (``skimage.registration.phase_cross_correlation``, upsample 100).

Writes ``bench/results/coreg.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHANGEDET_TEST_DATA", REPO.parent / "shared" / "data"))
AROSICS_PY = REPO / ".venv-arosics" / "bin" / "python"
RES = 10.0

_AROSICS_RUNNER = r'''
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")


def cpu():
    # This process and its worker processes (COREG_LOCAL forks CPUs workers).
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

import numpy as np
from arosics import COREG, COREG_LOCAL
print("@@READY", flush=True)
# One case per line on stdin, one result line per case on stdout (marked: AROSICS may
# print too), so that the parent can time its own side of each case just before.
for line in sys.stdin:
    c = json.loads(line)
    times, cpus, res = [], [], None
    for _ in range(c["repeat"]):
        t = time.perf_counter()
        t_cpu = cpu()
        try:
            res = run_case(c, t, t_cpu, times, cpus)
        except Exception as exc:  # AROSICS raises when it finds no match; record it as a failure
            times.append(time.perf_counter() - t)
            cpus.append(cpu() - t_cpu)
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    res["wall_s"] = min(times)
    res["cpu_s"] = min(cpus)
    print("@@RESULT " + json.dumps(res), flush=True)
'''

_AROSICS_CASE = r'''
def run_case(c, t, t_cpu, times, cpus):
    if True:
        if c["mode"] == "global":
            ref, tgt = c["ref"], c["tgt"]
            if c.get("mem"):
                # Compute only: both images read into memory before the clock starts.
                from geoarray import GeoArray
                ref, tgt = GeoArray(ref), GeoArray(tgt)
                ref.to_mem()
                tgt.to_mem()
                t, t_cpu = time.perf_counter(), cpu()
            cr = COREG(ref, tgt, ws=(c["ws"], c["ws"]), q=True, nodata=(-9999, -9999),
                       max_shift=c["max_shift"])
            cr.calculate_spatial_shifts()
            times.append(time.perf_counter() - t)
            cpus.append(cpu() - t_cpu)
            res = {"ok": bool(cr.success), "x_m": float(cr.x_shift_map) if cr.success else None,
                   "y_m": float(cr.y_shift_map) if cr.success else None}
        else:
            cl = COREG_LOCAL(c["ref"], c["tgt"], grid_res=c["step"], window_size=(c["ws"], c["ws"]),
                             CPUs=c["cpus"], q=True, nodata=(-9999, -9999), max_shift=c["max_shift"])
            tab = cl.CoRegPoints_table
            times.append(time.perf_counter() - t)
            cpus.append(cpu() - t_cpu)
            good = tab[(tab["OUTLIER"] == False) & (tab["X_SHIFT_M"] != -9999)]  # noqa: E712
            res = {"ok": len(good) > 0, "n_points": int(len(tab)), "n_kept": int(len(good)),
                   "x_im": good["X_IM"].astype(float).tolist(), "y_im": good["Y_IM"].astype(float).tolist(),
                   "x_m": good["X_SHIFT_M"].astype(float).tolist(), "y_m": good["Y_SHIFT_M"].astype(float).tolist()}
    return res
'''


def fourier_shift(img: np.ndarray, shift) -> np.ndarray:
    n0, n1 = img.shape
    pad = np.pad(img, ((n0 // 2, n0 // 2), (n1 // 2, n1 // 2)), mode="symmetric")
    out = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(pad), shift)).real
    return out[n0 // 2 : n0 // 2 + n0, n1 // 2 : n1 // 2 + n1]


def clutter(ref: np.ndarray, mov: np.ndarray, seed: int, change: float = 0.2):
    """Changed rectangles, bright (not NaN: both tools see them) cloud blobs and noise."""
    rng = np.random.default_rng(seed)
    ref, mov = ref.copy(), mov.copy()
    sd, lo, hi = float(ref.std()), float(ref.min()), float(ref.max())
    rows, cols = ref.shape
    changed = np.zeros(ref.shape, bool)
    while changed.mean() < change:
        h, w = rng.integers(10, rows // 6, 2)
        r, c = rng.integers(0, rows - h), rng.integers(0, cols - w)
        changed[r : r + h, c : c + w] = True
        mov[r : r + h, c : c + w] = rng.uniform(lo, hi) + rng.normal(0, 0.05 * sd, (h, w))
    blob = ndimage.gaussian_filter(rng.standard_normal(ref.shape), 20)
    cloud = blob > np.quantile(blob, 0.93)
    mov[cloud] = hi * 1.3
    mov += rng.normal(0, 0.02 * sd, mov.shape)
    ref += rng.normal(0, 0.02 * sd, ref.shape)
    return ref, mov


def write(path: Path, arr: np.ndarray, x0: float, y1: float) -> Path:
    import rasterio
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype="float32", crs="EPSG:32633", transform=Affine(RES, 0, x0, 0, -RES, y1),
                       nodata=-9999) as dst:
        dst.write(np.where(np.isfinite(arr), arr, -9999).astype("float32"), 1)
    return path


def crop_real(which: str, x: float, y: float, half: int, out: Path) -> Path:
    import rioxarray

    name = {"ref": "ref_S2A_20160608T153121_T33UUU_sub.jp2", "tgt": "tgt_S2A_20160529T153631_T33UUU_sub.jp2"}
    da = rioxarray.open_rasterio(DATA / "arosics_s2_pair" / name[which]).squeeze("band", drop=True)
    win = da.sel(x=slice(x - half * RES, x + half * RES), y=slice(y + half * RES, y - half * RES)).load()
    arr = np.where(win.values == 0, np.nan, win.values.astype("float64"))
    return write(out, arr, float(win.x[0]) - RES / 2, float(win.y[0]) + RES / 2)


class ArosicsRunner:
    """AROSICS in its own virtualenv, one long-lived process: ``run(case)`` sends a case
    and returns its result (best of ``case["repeat"]`` calls, wall and CPU measured in
    that process around the AROSICS calls). One process for all cases keeps the
    imports (~2-10 s) out of the loop, so that each case is run on both sides back to
    back: on a shared machine the load changes within a minute, and a ratio of two
    timings taken minutes apart measures the load as much as the tools."""

    def __init__(self, tmp: Path, timeout_s: float = 3600.0):
        self.proc, self.note = None, ""
        if not AROSICS_PY.exists():
            self.note = f"{AROSICS_PY} does not exist (create .venv-arosics with the GDAL recipe in shared NOTES.md)"
            return
        probe = subprocess.run([str(AROSICS_PY), "-c", "import arosics; print(arosics.__version__)"],
                               capture_output=True, text=True, timeout=300)
        if probe.returncode != 0:
            self.note = "import arosics failed: " + probe.stderr.strip().splitlines()[-1]
            return
        runner = tmp / "runner.py"
        head, tail = _AROSICS_RUNNER.split("import numpy as np\nfrom arosics", 1)
        runner.write_text(head + _AROSICS_CASE + "import numpy as np\nfrom arosics" + tail)
        self.stderr = open(tmp / "arosics_stderr.txt", "w+")
        self.proc = subprocess.Popen([str(AROSICS_PY), str(runner)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        # A hung AROSICS must not block the bench: killed after the old one-run limit,
        # its closed output ends _read, and the comparison falls back.
        self.timed_out = False
        self._watchdog = threading.Timer(timeout_s, self._kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        if self._read("@@READY") is None:
            return
        self.note = "arosics " + probe.stdout.strip()

    def _kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.timed_out = True
            proc.kill()

    def _read(self, marker: str) -> str | None:
        for line in self.proc.stdout:
            if line.startswith(marker):
                return line[len(marker):].strip()
        self._gone()
        return None

    def _gone(self) -> None:
        self.stderr.seek(0)
        self.note = ("AROSICS run failed" + (" (killed after the time limit)" if self.timed_out else "") + ": "
                     + self.stderr.read().strip()[-2000:])
        self.proc = None

    def run(self, case: dict) -> dict | None:
        if self.proc is None:
            return None
        try:
            self.proc.stdin.write(json.dumps(case) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):  # the process died after the last case
            self._gone()
            return None
        out = self._read("@@RESULT ")
        return None if out is None else json.loads(out)

    def close(self) -> None:
        if hasattr(self, "_watchdog"):
            self._watchdog.cancel()
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def timed(fn, repeat: int):
    """(result, best wall s, best CPU s) over ``repeat`` runs; CPU counts all threads."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return out, best, best_cpu


def naip_stack(mode: str, bands=("b4", "b1"), fold: int = 0, n_boot: int = 100) -> list[dict]:
    """Stack registration of the 10 NAIP dates and the held-out residual between every pair.

    Reuses :mod:`bench_naip` (``python bench/bench_naip.py`` is the full report): the
    registration may use one colour of a 72 px checkerboard (``fold``), the residual is
    measured on the other colour, band by band (NAIP's visible bands are offset from NIR
    differently on each date, so a residual measured on another band than the one
    registered mixes in that offset), by Lucas-Kanade per cell with bootstrap standard
    errors, then adjusted over all 45 pairs (:func:`changedet.coreg_check.adjust_residuals`).
    ``mode``: ``before``, ``global`` / ``local`` / ``whole`` (NIR, applied to every band)
    or ``windows`` (windowed network, every band on itself).
    """
    sys.path.insert(0, str(REPO / "bench"))
    import bench_naip

    stack, _ = bench_naip.load_stack()
    names = [str(b) for b in stack["band"].values]
    t, c = time.perf_counter(), time.process_time()
    arr, _ = bench_naip.register(stack, mode, fold)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    out = []
    for b in bands:
        m = bench_naip.measure(arr, names.index(b), fold, n_boot)
        out.append({"mode": mode, "band": b, "fold": fold, "register_wall_s": wall, "register_cpu_s": cpu,
                    **{k: m[k] for k in ("adjusted_median_px", "adjusted_max_px", "adjusted_median_stderr_px",
                                         "adjusted_max_stderr_px", "pairs_over_0.1px_adjusted", "chi2_dof",
                                         "raw_median_px", "raw_max_px", "floor_bootstrap", "floor_split_half")}})
    return out


def window_pair(ref_path: str, mov_path: str, ws: int, max_shift: float):
    """The two windows ``coregister_files`` reads (same choice of position), for the
    compute-only timing: (reference box, moving box, filter margin, search margin, m/unit)."""
    import math

    from changedet import coreg as C
    from changedet.io import open_raster

    with open_raster(ref_path) as rs, open_raster(mov_path) as ms:
        ri, mi = C._raster_info(rs, ref_path), C._raster_info(ms, mov_path)
        to_m = C._grid_checks(ri.crs_wkt, tuple(ri.transform))
        rb, mb = C._band_indexes(ri, mi, None)
        off = C._lattice_offset(ri, mi)
        r_a, c_a = max(0, -off[0]), max(0, -off[1])
        r_b, c_b = min(ri.shape[0], mi.shape[0] - off[0]), min(ri.shape[1], mi.shape[1] - off[1])
        w = min(ws, r_b - r_a, c_b - c_a)
        f, m = C._FILTER_MARGIN, int(math.ceil(max_shift)) + 2
        for r0, c0 in C._window_positions((r_a, r_b, c_a, c_b), w):
            a = C._read_box(rs, ri, rb, r0 - f, c0 - f, w + 2 * f, w + 2 * f)
            b = C._read_box(ms, mi, mb, r0 + off[0] - f - m, c0 + off[1] - f - m, w + 2 * (f + m), w + 2 * (f + m))
            if np.isfinite(a).mean() > 0.5 and np.isfinite(b).mean() > 0.5:
                return a, b, f, m, to_m
    raise RuntimeError(f"no usable window in {ref_path}")


def lk_reference(a: np.ndarray, b: np.ndarray, f: int, m: int, start: tuple[float, float]) -> dict:
    """An independent estimate of a global case's shift on the window ``coregister_files``
    matches: Lucas-Kanade (:func:`changedet.coreg_check.lk_window_shifts`: high-passed
    intensities, not gradient phase correlation) on 32 px windows every 16 px, the
    moving window pre-cut at the integer part of ``start`` (row, col px); the median of
    the reliable windows. For the real pair, whose only "truth" is AROSICS' own recorded
    output, it is a third opinion on the same pixels, on the sub-pixel part only: it
    starts from our own shift rounded to whole pixels and searches +-1.5 px around it, so
    it favours ours wherever the whole-pixel part is in doubt."""
    from changedet.coreg_check import lk_window_shifts

    ws = a.shape[0] - 2 * f
    ir, ic = int(round(start[0])), int(round(start[1]))
    if max(abs(ir), abs(ic)) > m:  # the cut would leave the moving window
        return {"row": float("nan"), "col": float("nan"), "windows": 0, "of": 0}
    ref = a[f:f + ws, f:f + ws].astype(float)
    mov = b[f + m - ir:f + m - ir + ws, f + m - ic:f + m - ic + ws].astype(float)
    _, d, ok = lk_window_shifts(ref, mov, window_px=32, step_px=16, max_shift_px=1.5)
    med = np.median(d[ok], axis=0) + [ir, ic] if ok.any() else np.array([np.nan, np.nan])
    return {"row": float(med[0]), "col": float(med[1]), "windows": int(ok.sum()), "of": int(ok.size)}


class _WindowResult:
    """The shift of an ``estimate_window`` result in metres (north-up 10 m grid)."""

    def __init__(self, est: dict, to_m: float):
        self.shift_x_m = est["shift_col"] * RES * to_m
        self.shift_y_m = -est["shift_row"] * RES * to_m


def window_result(est: dict, to_m: float) -> _WindowResult:
    return _WindowResult(est, to_m)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="timing repeats (best of N); default 2")
    ap.add_argument("--quick", action="store_true", help="2 global synthetic cases instead of 4")
    ap.add_argument("--repeat-global", type=int, default=None,
                    help="timing repeats of the global cases, same-task and compute-only, on both sides (a "
                         "call costs 10-300 ms, so best of more runs is cheap and steadier on a shared "
                         "machine); default --repeat")
    ap.add_argument("--kernels", choices=("numba", "numpy"), default="numba",
                    help="our window match: numba kernels (default) or the numpy code (same results)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs for AROSICS COREG_LOCAL (default 2)")
    ap.add_argument("--naip", action="store_true",
                    help="also register the NAIP 10-date stack and measure pairwise residual shifts (slow)")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    import rioxarray

    from changedet import coreg as coreg_module
    from changedet.coreg import coregister, coregister_files, estimate_window
    from changedet.io import read_raster

    coreg_module._USE_NUMBA = args.kernels == "numba"
    if coreg_module._USE_NUMBA and coreg_module._nb() is None:
        print("numba is not installed: timing the numpy code")
        coreg_module._USE_NUMBA = False
    kernels = "numba" if coreg_module._USE_NUMBA else "numpy"

    tmp = Path(tempfile.mkdtemp(prefix="bench_coreg_"))
    src = rioxarray.open_rasterio(DATA / "arosics_s2_pair" / "ref_S2A_20160608T153121_T33UUU_sub.jp2")
    scene = src.isel(band=0).values.astype("float64")
    x0, y1 = float(src.x[0]) - RES / 2, float(src.y[0]) + RES / 2
    rng = np.random.default_rng(2026)

    cases, truth = [], []
    n_glob = 2 if args.quick else 4
    for i in range(n_glob):
        r0, c0 = 300 + 250 * i, 400 + 300 * (i % 2)
        base = scene[r0 : r0 + 1024, c0 : c0 + 1024]
        true = rng.uniform(-8, 8, 2)  # content displacement (rows, cols)
        ref, mov = clutter(base, fourier_shift(base, true), seed=10 + i)
        ox, oy = x0 + c0 * RES, y1 - r0 * RES
        cases.append({"name": f"global synthetic {i + 1}", "mode": "global", "ws": 256, "max_shift": 20,
                      "ref": str(write(tmp / f"g{i}_ref.tif", ref, ox, oy)),
                      "tgt": str(write(tmp / f"g{i}_mov.tif", mov, ox, oy))})
        # The correction is minus the displacement: x east = -cols, y north = +rows.
        truth.append({"x_m": -true[1] * RES, "y_m": true[0] * RES})
    for j, (x, y, ax, ay) in enumerate([(339611.0, 5856426.0, -7.19, -18.90), (353810.0, 5840516.0, -6.56, -16.80)]):
        cases.append({"name": f"global real point {j + 1}", "mode": "global", "ws": 256, "max_shift": 20,
                      "ref": str(crop_real("ref", x, y, 256, tmp / f"r{j}_ref.tif")),
                      "tgt": str(crop_real("tgt", x, y, 288, tmp / f"r{j}_tgt.tif"))})
        truth.append({"x_m": ax, "y_m": ay, "recorded": True})
    # Local: a smooth warp. Content at r moves to r + D(r).
    n = 1024
    r0, c0 = 500, 700
    base = scene[r0 : r0 + n, c0 : c0 + n]
    rr, cc = np.indices((n, n), dtype=float)
    dr = 1.5 + 1.2 * np.sin(np.pi * rr / n) * cc / n
    dc = -1.0 + 0.8 * np.cos(np.pi * cc / n) * rr / n
    warped = ndimage.map_coordinates(base, [rr - dr, cc - dc], order=5, mode="reflect")
    ref, mov = clutter(base, warped, seed=99)
    ox, oy = x0 + c0 * RES, y1 - r0 * RES
    cases.append({"name": "local synthetic", "mode": "local", "ws": 256, "step": 128, "cpus": args.cpus,
                  "max_shift": 10, "ref": str(write(tmp / "l_ref.tif", ref, ox, oy)),
                  "tgt": str(write(tmp / "l_mov.tif", mov, ox, oy))})
    truth.append({"field": (dr, dc)})
    rep_global = args.repeat_global or args.repeat
    for c in cases:
        # The same number of runs on both sides (the AROSICS runner reads c["repeat"]).
        c["repeat"] = rep_global if c["mode"] == "global" else args.repeat

    # -- ours: the full operation (estimate, apply, similarity) and the part AROSICS does
    # (global: the same 256 px window at the centre; local: the tie-point table only).
    from changedet.coreg import estimate_local

    ours, ours_same, ours_mem, loads, lk_refs = [], [], [], [], []
    aro_runner = ArosicsRunner(tmp)
    aro, aro_mem = [], []
    for c in cases:
        def run(c=c):
            ref_da, mov_da = read_raster(c["ref"]), read_raster(c["tgt"])
            if c["mode"] == "global":
                return coregister(ref_da, mov_da, max_shift_px=c["max_shift"])[1]
            return coregister(ref_da, mov_da, local=True, window_px=c["ws"], step_px=c["step"],
                              max_shift_px=c["max_shift"])[1]

        def run_same(c=c):
            if c["mode"] == "global":
                # File in, shift out: one window read from each file (coregister_files).
                return coregister_files(c["ref"], c["tgt"], window_px=c["ws"], max_shift_px=c["max_shift"])
            ref_da, mov_da = read_raster(c["ref"]), read_raster(c["tgt"])
            return estimate_local(ref_da.values[0], mov_da.values[0], window_px=c["ws"], step_px=c["step"],
                                  max_shift_px=c["max_shift"])
        ours.append(timed(run, args.repeat))
        ours_same.append(timed(run_same, c["repeat"]))
        if c["mode"] == "global":
            # Compute only: the images are in memory before the clock starts (as AROSICS'
            # in-memory GeoArrays below), so file reading does not count on either side.
            a, b, f, m, to_m = window_pair(c["ref"], c["tgt"], c["ws"], c["max_shift"])
            same = ours_same[-1][0]
            lk_refs.append(lk_reference(a, b, f, m, (-same.shift_y_m / (RES * to_m), same.shift_x_m / (RES * to_m))))
            ours_mem.append(timed(lambda a=a, b=b, f=f, m=m, c=c, to_m=to_m: window_result(
                estimate_window(a, b, filter_margin=f, search_margin=m, max_shift_px=c["max_shift"]), to_m),
                c["repeat"]) + (os.getloadavg()[0],))
        loads.append(os.getloadavg()[0])
        # AROSICS on the same case right after ours (same-task, then compute only).
        aro.append(aro_runner.run(c))
        if c["mode"] == "global":
            aro_mem.append(aro_runner.run(dict(c, mem=True)))
    aro_runner.close()
    aro_note = aro_runner.note
    if any(p is None for p in aro + aro_mem):
        aro, aro_mem = None, None
    fallback = None
    if aro is None:
        from skimage.registration import phase_cross_correlation

        fallback = []
        for c in cases:
            def run(c=c):
                a, b = read_raster(c["ref"]).values[0], read_raster(c["tgt"]).values[0]
                if a.shape != b.shape:  # real crops: target has a margin; cut it to the reference
                    m = (b.shape[0] - a.shape[0]) // 2, (b.shape[1] - a.shape[1]) // 2
                    b = b[m[0] : m[0] + a.shape[0], m[1] : m[1] + a.shape[1]]
                a, b = np.nan_to_num(a, nan=np.nanmean(a)), np.nan_to_num(b, nan=np.nanmean(b))
                return phase_cross_correlation(a, b, upsample_factor=100)[0]
            s, wall, cpu = timed(run, args.repeat)
            fallback.append({"ok": True, "x_m": float(s[1]) * RES, "y_m": float(-s[0]) * RES, "wall_s": wall,
                             "cpu_s": cpu})

    other = aro if aro is not None else fallback
    other_name = "AROSICS" if aro is not None else "full-image PCC"
    rows, doc = [], {"peer": other_name, "peer_note": aro_note, "cases": []}
    doc["ours_kernels"] = kernels
    print(f"\npeer: {other_name} ({aro_note}); ours: in-process, best of {rep_global} calls per global case "
          f"after warm-up, window kernels: {kernels}")
    hdr = (f"{'case':<22} {'ours err px':>11} {'same-task':>9} {'peer err px':>11} {'ours s':>7} {'same s':>7} "
           f"{'peer s':>7} {'x wall':>6} {'same cpu':>8} {'peer cpu':>8} {'x cpu':>6}  notes")
    print(hdr)
    print("-" * len(hdr))
    for c, t, (res, wall, cpu), (res_s, wall_s, cpu_s), p, load in zip(cases, truth, ours, ours_same, other, loads):
        entry = {"case": c["name"], "ours_wall_s": wall, "peer_wall_s": p.get("wall_s"), "ours_cpu_s": cpu,
                 "peer_cpu_s": p.get("cpu_s"), "same_task_wall_s": wall_s, "same_task_cpu_s": cpu_s,
                 "load_average_1min": load}
        if c["mode"] == "global":
            e_ours = float(np.hypot(res.shift_x_m - t["x_m"], res.shift_y_m - t["y_m"]) / RES)
            e_peer = (float(np.hypot(p["x_m"] - t["x_m"], p["y_m"] - t["y_m"]) / RES)
                      if p.get("ok") and p.get("x_m") is not None else float("nan"))
            note = ("vs AROSICS recorded figure (no truth)" if t.get("recorded") else "vs truth") + \
                f"; ours ({res.shift_x_m:+.2f}, {res.shift_y_m:+.2f}) m, peer " + \
                (f"({p['x_m']:+.2f}, {p['y_m']:+.2f}) m" if p.get("x_m") is not None else "failed")
            e_same = float(np.hypot(res_s.shift_x_m - t["x_m"], res_s.shift_y_m - t["y_m"]) / RES)
            entry.update(ours_err_px=e_ours, peer_err_px=e_peer, same_task_err_px=e_same,
                         ours_shift_m=[res.shift_x_m, res.shift_y_m],
                         peer_shift_m=[p.get("x_m"), p.get("y_m")], truth_m=[t["x_m"], t["y_m"]])
        else:
            dr, dc = t["field"]
            tab = np.array([q for q in res.tie_point_table if q[5]])
            ri, ci = tab[:, 0].astype(int), tab[:, 1].astype(int)
            e_ours = float(np.sqrt(np.mean((tab[:, 2] + dr[ri, ci]) ** 2 + (tab[:, 3] + dc[ri, ci]) ** 2)))
            k = res_s.kept
            ri2, ci2 = res_s.row[k].astype(int), res_s.col[k].astype(int)
            e_same = float(np.sqrt(np.mean((res_s.shift_row[k] + dr[ri2, ci2]) ** 2
                                           + (res_s.shift_col[k] + dc[ri2, ci2]) ** 2)))
            if aro is not None and p.get("ok"):
                xi = np.clip(np.round(np.array(p["x_im"])).astype(int), 0, n - 1)
                yi = np.clip(np.round(np.array(p["y_im"])).astype(int), 0, n - 1)
                ex = np.array(p["x_m"]) / RES + dc[yi, xi]
                ey = -np.array(p["y_m"]) / RES + dr[yi, xi]
                e_peer = float(np.sqrt(np.mean(ex**2 + ey**2)))
                note = (f"kept points: ours {res.tie_points}/{res.tie_points_total}, "
                        f"AROSICS {p['n_kept']}/{p['n_points']}")
            else:
                e_peer = float("nan")
                note = f"kept points: ours {res.tie_points}/{res.tie_points_total}; peer has no local mode"
            entry.update(ours_err_px=e_ours, peer_err_px=e_peer, same_task_err_px=e_same)
        speed = (p.get("wall_s") or float("nan")) / wall_s
        speed_cpu = (p.get("cpu_s") or float("nan")) / cpu_s
        entry["speedup"] = speed
        entry["speedup_cpu"] = speed_cpu
        # A ratio against a run that found no match times the peer's failing, not a
        # registration: say so beside it rather than let it pass for a like-for-like figure.
        entry["peer_failed"] = aro is not None and not p.get("ok")
        if entry["peer_failed"]:
            note += "; AROSICS FAILED here: its time is the time to fail, the ratio is not like for like"
        rows.append(entry)
        print(f"{c['name']:<22} {entry['ours_err_px']:>11.4f} {entry['same_task_err_px']:>9.4f} "
              f"{entry['peer_err_px']:>11.4f} {wall:>7.2f} {wall_s:>7.3f} "
              f"{p.get('wall_s', float('nan')):>7.3f} {speed:>5.1f}x {cpu_s:>8.4f} "
              f"{p.get('cpu_s', float('nan')):>8.4f} "
              f"{speed_cpu:>5.1f}x  load {load:.1f}; {note}")
        doc["cases"].append(entry)
    if aro_mem is not None:
        # Global mode, compute only (images already in memory on both sides).
        doc["global_compute_only"] = []
        print(f"\nglobal mode, compute only (both tools' images in memory before the clock starts)")
        hdr2 = (f"{'case':<22} {'ours err px':>11} {'peer err px':>11} {'ours s':>7} {'peer s':>7} {'x wall':>6} "
                f"{'ours cpu':>8} {'peer cpu':>8} {'x cpu':>6} {'load':>5}")
        print(hdr2)
        print("-" * len(hdr2))
        gl = [(c, t) for c, t in zip(cases, truth) if c["mode"] == "global"]
        for (c, t), (res_m, wall_m, cpu_m, load_m), p in zip(gl, ours_mem, aro_mem):
            e_o = float(np.hypot(res_m.shift_x_m - t["x_m"], res_m.shift_y_m - t["y_m"]) / RES)
            e_p = (float(np.hypot(p["x_m"] - t["x_m"], p["y_m"] - t["y_m"]) / RES)
                   if p.get("ok") and p.get("x_m") is not None else float("nan"))
            ent = {"case": c["name"], "ours_err_px": e_o, "peer_err_px": e_p, "ours_wall_s": wall_m,
                   "ours_cpu_s": cpu_m, "peer_wall_s": p["wall_s"], "peer_cpu_s": p["cpu_s"],
                   "speedup": p["wall_s"] / wall_m, "speedup_cpu": p["cpu_s"] / cpu_m, "load_average_1min": load_m}
            doc["global_compute_only"].append(ent)
            print(f"{c['name']:<22} {e_o:>11.4f} {e_p:>11.4f} {wall_m:>7.3f} {p['wall_s']:>7.3f} "
                  f"{ent['speedup']:>5.1f}x {cpu_m:>8.4f} {p['cpu_s']:>8.4f} {ent['speedup_cpu']:>5.1f}x "
                  f"{load_m:>5.1f}")
    # Global cases against the independent estimate on the same window (the real pair has
    # no truth: its "error" above is the distance to AROSICS' own recorded output).
    doc["global_vs_independent"] = []
    print("\nglobal mode, distance to an independent estimate on the same 256 px window (Lucas-Kanade, 32 px "
          "windows every 16 px, median; lk_reference): on synthetic cases its own error says how far it can be trusted")
    hdr3 = (f"{'case':<22} {'LK row':>7} {'LK col':>7} {'windows':>8} {'LK-truth':>8} {'ours-LK':>8} "
            f"{'peer-LK':>8} {'recorded-LK':>11}")
    print(hdr3)
    print("-" * len(hdr3))
    gl = [(c, t, e) for c, t, e in zip(cases, truth, rows) if c["mode"] == "global"]
    for (c, t, e), lk, (res_s, _, _), p in zip(gl, lk_refs, [o for o, c in zip(ours_same, cases)
                                                            if c["mode"] == "global"],
                                               [p for p, c in zip(other, cases) if c["mode"] == "global"]):
        def dist(x_m, y_m):
            return float(np.hypot(-y_m / RES - lk["row"], x_m / RES - lk["col"]))
        d_truth = float("nan") if t.get("recorded") else dist(t["x_m"], t["y_m"])
        d_rec = dist(t["x_m"], t["y_m"]) if t.get("recorded") else float("nan")
        d_ours = dist(res_s.shift_x_m, res_s.shift_y_m)
        d_peer = dist(p["x_m"], p["y_m"]) if p.get("ok") and p.get("x_m") is not None else float("nan")
        doc["global_vs_independent"].append({"case": c["name"], "lk": lk, "lk_minus_truth_px": d_truth,
                                             "ours_same_task_minus_lk_px": d_ours, "peer_minus_lk_px": d_peer,
                                             "recorded_minus_lk_px": d_rec})
        print(f"{c['name']:<22} {lk['row']:>+7.3f} {lk['col']:>+7.3f} {lk['windows']:>4}/{lk['of']:<3} {d_truth:>8.4f} "
              f"{d_ours:>8.4f} {d_peer:>8.4f} {d_rec:>11.4f}")
    glob_syn = [e for e in rows if e["case"].startswith("global synthetic")]
    ok_peer = [e["peer_err_px"] for e in glob_syn if np.isfinite(e["peer_err_px"])]
    doc["summary"] = {
        "global_synthetic_rmse_px": {
            "ours": float(np.sqrt(np.mean([e["ours_err_px"] ** 2 for e in glob_syn]))),
            "ours_same_window": float(np.sqrt(np.mean([e["same_task_err_px"] ** 2 for e in glob_syn]))),
            "peer": float(np.sqrt(np.mean(np.square(ok_peer)))) if ok_peer else float("nan"),
            "peer_failed": len(glob_syn) - len(ok_peer),
        },
        "total_wall_s": {"ours": float(sum(e["ours_wall_s"] for e in rows)),
                         "peer": float(sum(e["peer_wall_s"] or 0.0 for e in rows))},
        "total_cpu_s": {"ours": float(sum(e["ours_cpu_s"] for e in rows)),
                        "peer": float(sum(e["peer_cpu_s"] or 0.0 for e in rows))},
        "load_average_1min": os.getloadavg()[0],
    }
    s = doc["summary"]
    print(f"\nglobal synthetic RMSE: ours {s['global_synthetic_rmse_px']['ours']:.4f} px (whole image), "
          f"{s['global_synthetic_rmse_px']['ours_same_window']:.4f} px (same 256 px window), "
          f"{other_name} {s['global_synthetic_rmse_px']['peer']:.4f} px "
          f"({s['global_synthetic_rmse_px']['peer_failed']} failed); total wall ours "
          f"{s['total_wall_s']['ours']:.2f} s, {other_name} {s['total_wall_s']['peer']:.2f} s "
          f"({s['total_wall_s']['peer'] / s['total_wall_s']['ours']:.1f}x); total CPU ours "
          f"{s['total_cpu_s']['ours']:.2f} s, peer {s['total_cpu_s']['peer']:.2f} s; load average "
          f"{s['load_average_1min']:.1f} (the machine is shared: compare ratios from one run)")
    if args.naip:
        doc["naip"] = []
        print(f"\nNAIP stack, registration on checkerboard fold 0, residual on fold 1 (bench_naip.py), "
              f"adjusted over 45 pairs")
        print(f"{'mode':<8} {'band':<4} {'median':>7} {'max':>7} {'SE':>6} {'>0.1 px':>8} {'chi2/dof':>8} "
              f"{'check floor med/max':>19} {'reg wall s':>10} {'reg CPU s':>9}")
        for mode in ("before", "global", "local", "whole", "windows"):
            for r in naip_stack(mode):
                doc["naip"].append(r)
                print(f"{r['mode']:<8} {r['band']:<4} {r['adjusted_median_px']:7.3f} {r['adjusted_max_px']:7.3f} "
                      f"{r['adjusted_median_stderr_px']:6.3f} {r['pairs_over_0.1px_adjusted']:>5}/45 "
                      f"{r['chi2_dof']:8.2f} {r['floor_split_half']['median_px'][0]:9.3f}/"
                      f"{r['floor_split_half']['max_px'][0]:.3f} {r['register_wall_s']:10.1f} "
                      f"{r['register_cpu_s']:9.1f}", flush=True)
    out = REPO / "bench" / "results" / "coreg.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
