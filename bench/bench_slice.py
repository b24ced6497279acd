"""Benchmark of the daily slice: time per stage and counting accuracy on held-out scenes.

Run: ``python bench/bench_slice.py [--seeds 21 22] [--out bench/results/slice.json]``.
Prints a table and writes JSON. Accuracy is measured on simulator seeds never used
while developing the counters; registration is done by changedet (not from the truth),
exactly as the pipeline does it.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import shapely

import sys

# This tree's changedet first (a copy of the repo run as a script would import the installed one).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from changedet.aoi import default_registry, load_aoi
from changedet.coreg import apply_shift
from changedet.cube import clear_mask, optical_bands
from changedet.grid import aoi_grid
from changedet.objects.containers import count_containers
from changedet.objects.railcars import count_railcars
from changedet.objects.ships import count_ships
from changedet.pipeline import _coregister_window
from changedet.simulate.render import conditions
from changedet.simulate.scenario import scenario_for
from changedet.sources.simulator import SimulatorSource, to_dataarray


def clear_days(aoi, seed, start, n, step=9):
    sc = scenario_for(aoi.id, default_registry())
    out, d = [], start
    while len(out) < n and d < start + timedelta(days=400):
        if conditions(aoi, d, "vhr", seed=seed, scenario=sc).cloud_fraction == 0.0:
            out.append(d)
        d += timedelta(days=step)
    return out


def run(aoi_id: str, metric: str, seeds: list[int], n: int) -> dict:
    aoi = load_aoi(aoi_id)
    spec = aoi.sources[0]
    grid = aoi_grid(aoi, spec.resolution_m)
    rows, timings = [], {"render": [], "coregister": [], "count": []}
    for seed in seeds:
        src = SimulatorSource(seed=seed)
        ref_scene = src.reference(aoi, sensor="vhr", resolution_m=spec.resolution_m)
        reference = optical_bands(src.load(ref_scene, grid, aoi=aoi))
        for d in clear_days(aoi, seed, date(2023, 6, 3), n):
            scene = src.search(aoi, d, d, sensor="vhr", resolution_m=spec.resolution_m)[0]
            t0 = time.perf_counter()
            sim = src.render(scene, aoi)
            data = to_dataarray(sim, scene, grid)
            t1 = time.perf_counter()
            clear = clear_mask(data)
            site = aoi.to_crs(aoi.polygon, grid.crs)
            reg = _coregister_window(reference, optical_bands(data), clear, site, window=768)
            aligned = apply_shift(optical_bands(data), reg.shift_row_px, reg.shift_col_px)
            t2 = time.perf_counter()
            sun = {k: scene.properties[k] for k in ("sun_azimuth_deg", "sun_elevation_deg")}
            feats = lambda role: {f.id: aoi.to_crs(f.geometry, grid.crs) for f in aoi.features_by_role(role)}
            if metric == "railcars":
                res = count_railcars(aligned, feats("track"), **sun)
                truth = sim.truth["counts"]["railcars"]
            elif metric == "containers_teu":
                res = count_containers(aligned, feats("stack_zone"), **sun)
                truth = sim.truth["counts"]["containers_teu"]
            else:
                water = shapely.union_all([aoi.to_crs(f.geometry, grid.crs) for f in aoi.features_by_role("water")])
                res = count_ships(aligned, feats("berth"), water=water)
                truth = sim.truth["counts"]["ships"]
            t3 = time.perf_counter()
            timings["render"].append(t1 - t0)
            timings["coregister"].append(t2 - t1)
            timings["count"].append(t3 - t2)
            applied = sim.truth["applied_shift_px"]
            rows.append({"seed": seed, "date": d.isoformat(), "truth": truth, "estimate": float(res.total),
                         "sun_elevation_deg": round(sun["sun_elevation_deg"], 1),
                         "registration_error_px": round(max(abs(reg.shift_row_px + applied["row"]),
                                                            abs(reg.shift_col_px + applied["col"])), 3)})
    err = [abs(r["estimate"] - r["truth"]) / max(r["truth"], 1) for r in rows]
    return {"aoi": aoi_id, "metric": metric, "scenes": len(rows),
            "mape": round(float(np.mean(err)), 4) if err else None,
            "max_ape": round(float(np.max(err)), 4) if err else None,
            "registration_rmse_px": round(float(np.sqrt(np.mean([r["registration_error_px"] ** 2 for r in rows]))), 3),
            "median_s": {k: round(float(np.median(v)), 3) for k, v in timings.items()},
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[21, 22])
    ap.add_argument("--scenes", type=int, default=4, help="clear scenes per seed and AOI")
    ap.add_argument("--out", type=Path, default=Path("bench/results/slice.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    cases = [("tumangang_railyard", "railcars"), ("khasan_railyard", "railcars"),
             ("tikhoretsk_depot", "containers_teu"), ("vostochny_port", "ships"), ("dunai_port", "ships")]
    results = [run(a, m, args.seeds, args.scenes) for a, m in cases]
    print(f"{'aoi':<22} {'metric':<15} {'n':>3} {'MAPE':>7} {'maxAPE':>7} {'reg px':>7} "
          f"{'render s':>9} {'coreg s':>8} {'count s':>8}")
    for r in results:
        print(f"{r['aoi']:<22} {r['metric']:<15} {r['scenes']:>3} {r['mape']:>7.3f} {r['max_ape']:>7.3f} "
              f"{r['registration_rmse_px']:>7.3f} {r['median_s']['render']:>9.2f} {r['median_s']['coregister']:>8.2f} "
              f"{r['median_s']['count']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
