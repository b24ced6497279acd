"""Unsupervised change-detection accuracy on real labelled imagery.

OSCD (Daudt et al. 2018; 5 labelled cities in ../shared/data/oscd_sentinel2, labels
1 = no change, 2 = change) and the Landsat Taizhou pair (sample masks of change and
no-change pixels). Every method runs with its automatic threshold; nothing is fitted to
the labels. Prints per-city and pooled precision / recall / F1 and writes
bench/results/oscd_eval.json.

    python bench/oscd_eval.py [--data ../shared/data] [--methods irmad,cva] [--thresholds default,ki]
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

from changedet.change import METHODS, change_score, finish_change, load_pair, score_masks  # noqa: E402

#: Default threshold per method (changedet.change), to skip duplicate rows.
DEFAULTS = {"diff": "ki", "cva": "ki", "logratio": "ki", "irmad": "chi2", "zscore": "kmad"}
CITIES = ("bercy", "bordeaux", "nantes", "paris", "rennes")
#: Surface bands at 10 m and 20 m; the 60 m bands (B01 aerosol, B09 water vapour, B10
#: cirrus) describe the atmosphere, not the ground, and are left out for every method.
OSCD_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def oscd_city(root: Path, city: str):
    import rasterio

    base = root / "oscd_sentinel2"
    before, after = load_pair(base / "images" / city / "imgs_1", base / "images" / city / "imgs_2", bands=OSCD_BANDS)
    cm = next((base / "train_labels" / city / "cm").glob("*-cm.tif"))
    with rasterio.open(cm) as src:
        lab = src.read(1)
    if lab.shape != before.shape[1:]:
        raise SystemExit(f"{cm}: label shape {lab.shape} != image {before.shape[1:]}")
    return before, after, lab == 2


def taizhou(root: Path):
    """(before, after, truth, valid): truth/valid only on the sampled pixels."""
    from PIL import Image

    from changedet.io import read_raster

    d = root / "landsat_taizhou" / "Taizhou"
    before = read_raster(d / "2000TM")
    after = read_raster(d / "2003TM")
    after = after.assign_coords(band=before["band"].values)
    ch = np.asarray(Image.open(d / "change.bmp").convert("L")) > 127
    un = np.asarray(Image.open(d / "unchanged.bmp").convert("L")) > 127
    return before, after, ch, ch | un


def run(root: Path, methods, thresholds, *, min_area_px: int = 9, verbose: bool = True) -> dict:
    rows = []
    pooled: dict[tuple, list] = {}
    datasets = [(c, lambda c=c: oscd_city(root, c)) for c in CITIES] + [("taizhou", lambda: taizhou(root))]
    for name, load in datasets:
        t0 = time.perf_counter()
        data = load()
        before, after, truth = data[:3]
        valid = data[3] if len(data) > 3 else None
        for m in methods:
            t1 = time.perf_counter()
            mag, extras = change_score(before, after, m)
            mag = mag.compute()
            t_score = time.perf_counter() - t1
            for th in thresholds:
                thr = None if th == "default" else th
                if thr == "chi2" and m != "irmad":
                    continue
                if thr is not None and thr == DEFAULTS.get(m):
                    continue  # already run as the default
                t1 = time.perf_counter()
                res = finish_change(mag, extras, method=m, threshold=thr, min_area_px=min_area_px)
                s = score_masks(res.mask.values, truth, valid)
                row = {"dataset": name, "method": m, "threshold_method": res.threshold_method,
                       "threshold": res.threshold, **s,
                       "seconds": t_score + time.perf_counter() - t1}
                rows.append(row)
                if name != "taizhou":
                    acc = pooled.setdefault((m, res.threshold_method), [0, 0, 0])
                    acc[0] += s["tp"]
                    acc[1] += s["fp"]
                    acc[2] += s["fn"]
        if verbose:
            print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    pooled_rows = []
    for (m, th), (tp, fp, fn) in pooled.items():
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        pooled_rows.append({"method": m, "threshold_method": th, "tp": tp, "fp": fp, "fn": fn,
                            "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0})
    return {"rows": rows, "pooled": pooled_rows, "bands": list(OSCD_BANDS), "min_area_px": min_area_px}


def print_table(out: dict) -> None:
    print(f"{'dataset':9s} {'method':9s} {'thresh':6s} {'value':>10s} {'P':>6s} {'R':>6s} {'F1':>6s}")
    for r in out["rows"]:
        print(f"{r['dataset']:9s} {r['method']:9s} {r['threshold_method']:6s} {r['threshold']:10.4g} "
              f"{r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f}")
    print("\nOSCD pooled over the 5 labelled cities (pixel counts summed):")
    print(f"{'method':9s} {'thresh':6s} {'P':>6s} {'R':>6s} {'F1':>6s}")
    for r in sorted(out["pooled"], key=lambda r: -r["f1"]):
        print(f"{r['method']:9s} {r['threshold_method']:6s} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CHANGEDET_TEST_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--thresholds", default="default,otsu,ki", help="default (per method), otsu, ki, kmad, chi2")
    args = ap.parse_args(argv)
    out = run(args.data, args.methods.split(","), args.thresholds.split(","))
    print_table(out)
    res_dir = REPO / "bench" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "oscd_eval.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
