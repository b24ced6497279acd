"""Vessel detection on real Sentinel-2 port scenes (sen2ships), scored per port.

Run: ``python bench/bench_ships.py [--data ../shared/data] [--sweep] [--out bench/results/ships.json]``.

Data: ``sen2ships_s2_ports/<port>/`` (Busan 2022-05-14, 54 vessels; Casablanca
2023-04-26, 15 vessels): B02, B03, B04, B08, B11 GeoTIFFs (EO Browser stretch, EPSG:3857,
10 m in map units, 8.2-8.3 m on the ground) and COCO labels (category "vessel", bounding
box and RLE mask in pixel coordinates of the rasters).

Matching rules, one detection to one label, best pairs first:

``iou``     boxes overlap with IoU >= 0.1 (the rule of tests/test_ships_sen2ships.py; the
            label boxes are drawn loosely around hulls a few pixels wide, so a stricter
            IoU would mostly measure the annotator's margin);
``centre``  the centre of the detection's box lies inside the label box.

Scored sets: vessels at least 3 pixels long (the long side of the label box; the issue's
target set) and all vessels. Labels are also split into ``alongside`` (the label mask
touches land in the detector's own water mask: moored at a quay or a pier) and ``open``.

Parameters: ``k`` = 5 robust spreads for a hull seed (about one false pixel in a few
million on Gaussian water) and ``k_grow`` = 3 for growing the hull (the 0.1 % tail) were
chosen on those grounds, not fitted to these labels. ``min_seed_px`` = 2 (a lone pixel
above ``k`` is sea clutter) was checked on Busan only (1: F1 0.424, 2 and 3: 0.439;
the smaller was kept); Casablanca is held out. ``--sweep`` prints F1 over a small grid
for transparency, with Busan as the tuning port.

Second round (vessels alongside quays, false alarms), chosen on Busan or on principle,
Casablanca held out:

``max_elongation`` = 10   length/beam of hulls stays under ~9; longer thin bodies are piers
                          and quay rims (principle; on Busan it removes one pier, F1 0.439 ->
                          0.442).
``k_swir`` = 4            an open-water detection must stand 4 robust spreads above the water
                          in B11 too: whitecaps, wave crests and foam are bright in the visible
                          and NIR but dark in the SWIR (principle). On Busan 3 / 4 / 5 / off
                          gave F1 0.436 / 0.442 / 0.431 / 0.442; 4 was kept because at equal
                          F1 it halves neither recall nor precision but cuts false alarms by a
                          fifth (34 -> 27, TP 25 -> 23).

``quayside`` = on         hulls moored alongside merge with the quay (their pixels are not
                          water); a line opening of the land parallel to the local shore,
                          with a line longer than any ship (400 m), keeps the straight quay
                          and exposes strips sticking out of it within 50 m (a beam) of the
                          water (principle). A strip is a hull when at least 2 px wide and 5
                          to 10 times longer than wide (merchant hulls: L/B 5-9); on Busan
                          the minimum elongation 4 / 5 / 6 gave F1 0.483 / 0.491 / 0.473.

What the remaining false alarms are (looked at on rendered crops): pier heads, jetties
and pontoons joined to the shore; bright quay rims and crane booms over the water at
container terminals, sometimes merging several moored ships into one body; bridge piers
(Busan, south edge); wave crests and whitecaps on the rough open sea (Casablanca, north
west - mostly removed by the SWIR test) and surf along the outer breakwater. The misses
are vessels moored alongside: at 10 m their pixels are not water (NIR/SWIR bright) and
sit inside the quay's land body in the detector's water mask, so no contrast test
against the water can reach them; the quayside search finds those that stick out of a
straight quay line, not those along curved shores, at quay corners, or several abreast.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage

from changedet.grid import GridSpec
from changedet.io import read_raster
from changedet.objects.vessels import _sea, detect_vessels, ground_metres_per_unit, optical_water

REPO = Path(__file__).resolve().parents[1]
PORTS = {"busan": "2022-05-14", "casablanca": "2023-04-26"}
MATCH_IOU = 0.1
MIN_LEN_PX = 3.0


def load_scene(data: Path, port: str) -> xr.DataArray:
    day = PORTS[port]
    bands = [read_raster(data / "sen2ships_s2_ports" / port /
                         f"{day}-00_00_{day}-23_59_Sentinel-2_L2A_{b}_(Raw).tiff", bands=[b])
             for b in ("B02", "B03", "B04", "B08", "B11")]
    return xr.concat(bands, "band")


def load_labels(data: Path, port: str) -> list[dict]:
    """COCO annotations with the mask decoded (uncompressed RLE, column-major)."""
    doc = json.loads((data / "sen2ships_s2_ports" / port / f"{port}_coco.json").read_text())
    out = []
    for a in doc["annotations"]:
        rows, cols = a["segmentation"]["size"]
        flat = np.zeros(rows * cols, bool)
        pos, on = 0, False
        for n in a["segmentation"]["counts"]:
            if on:
                flat[pos:pos + n] = True
            pos, on = pos + n, not on
        out.append({"bbox": [float(v) for v in a["bbox"]], "mask": flat.reshape((cols, rows)).T})
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def centre_in(det, lab) -> float:
    """1 / (1 + distance between centres) when the detection's centre is inside the label box, else 0."""
    cx, cy = det[0] + det[2] / 2, det[1] + det[3] / 2
    if not (lab[0] <= cx <= lab[0] + lab[2] and lab[1] <= cy <= lab[1] + lab[3]):
        return 0.0
    return 1.0 / (1.0 + float(np.hypot(cx - lab[0] - lab[2] / 2, cy - lab[1] - lab[3] / 2)))


def match(dets: list, labs: list, rule: str) -> set[int]:
    """Indices of the labels matched one to one, best pairs first."""
    f, thr = (iou, MATCH_IOU) if rule == "iou" else (centre_in, 1e-12)
    pairs = sorted(((f(d, t), i, j) for i, d in enumerate(dets) for j, t in enumerate(labs)), reverse=True)
    used_d, used_t = set(), set()
    for v, i, j in pairs:
        if v < thr or i in used_d or j in used_t:
            continue
        used_d.add(i)
        used_t.add(j)
    return used_t


def figures(n_det: int, n_lab: int, tp: int) -> dict:
    p, r = tp / max(n_det, 1), tp / max(n_lab, 1)
    return {"labels": n_lab, "detections": n_det, "tp": tp, "fp": n_det - tp, "fn": n_lab - tp,
            "precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / max(p + r, 1e-9), 3)}


def score_port(image: xr.DataArray, labels: list[dict], **kw) -> dict:
    t0 = time.perf_counter()
    res = detect_vessels(image, **kw)
    seconds = time.perf_counter() - t0
    dets = [d.attrs["bbox_px"] for d in res.detections]
    grid = GridSpec.of(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        water = optical_water(image)
    _, dom = _sea(water, grid.resolution * ground_metres_per_unit(grid))
    land = ndimage.binary_dilation(~dom, iterations=1)
    out = {"seconds": round(seconds, 2), "by_type": dict(res.by_type)}
    for subset, keep in (("min3px", lambda lab: max(lab["bbox"][2:]) >= MIN_LEN_PX), ("all", lambda lab: True)):
        labs = [lab for lab in labels if keep(lab)]
        boxes = [lab["bbox"] for lab in labs]
        # Detections shorter than the subset's minimum are not held against it.
        ds = dets if subset == "all" else [d for d in dets if max(d[2:]) >= MIN_LEN_PX]
        for rule in ("iou", "centre"):
            hit = match(ds, boxes, rule)
            row = figures(len(ds), len(labs), len(hit))
            along = [j for j, lab in enumerate(labs) if land[lab["mask"]].any()]
            row["recall_alongside"] = round(sum(j in hit for j in along) / max(len(along), 1), 3)
            row["recall_open"] = round(sum(j in hit for j in range(len(labs)) if j not in along)
                                       / max(len(labs) - len(along), 1), 3)
            row["n_alongside"] = len(along)
            out[f"{subset}/{rule}"] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("CHANGEDET_TEST_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ships.json")
    ap.add_argument("--sweep", action="store_true", help="also print F1 over a (k, k_grow) grid and k_swir")
    args = ap.parse_args(argv)

    scenes = {p: (load_scene(args.data, p), load_labels(args.data, p)) for p in PORTS}
    results = {p: score_port(im, labs) for p, (im, labs) in scenes.items()}

    head = (f"{'port':11s} {'set/rule':13s} {'labels':>6s} {'dets':>5s} {'TP':>4s} {'FP':>4s} {'FN':>4s} "
            f"{'prec':>5s} {'rec':>5s} {'F1':>5s} {'rec_along':>9s} {'rec_open':>8s}")
    print("Sentinel-2 vessel detection on sen2ships (detect_vessels defaults: k=5, k_grow=3, min_seed_px=2, "
          "max_elongation=10, k_swir=4, quayside=on)")
    print(head)
    print("-" * len(head))
    for p, r in results.items():
        for key in ("min3px/iou", "min3px/centre", "all/iou", "all/centre"):
            f = r[key]
            print(f"{p:11s} {key:13s} {f['labels']:6d} {f['detections']:5d} {f['tp']:4d} {f['fp']:4d} {f['fn']:4d} "
                  f"{f['precision']:5.2f} {f['recall']:5.2f} {f['f1']:5.2f} "
                  f"{f['recall_alongside']:9.2f} {f['recall_open']:8.2f}")
        print(f"{'':11s} {r['min3px/iou']['n_alongside']} of {r['min3px/iou']['labels']} labels alongside a quay; "
              f"detector {r['seconds']:.2f} s; {r['by_type']}")
    print("Target (issue 6): F1 >= 0.7 for vessels >= 3 px long, per port.")

    sweep = []
    if args.sweep:
        print("\nSweep (F1, >= 3 px, IoU rule) - Busan = tuning port, Casablanca = held out:")
        grid = [(k, kg, 2, 4.0) for k in (4.0, 5.0, 6.0) for kg in (2.0, 3.0, k)] + [(5.0, 3.0, 1, 4.0),
                                                                                  (5.0, 3.0, 3, 4.0)]
        grid += [(5.0, 3.0, 2, ks) for ks in (None, 3.0, 5.0)]
        rows = [(k, kg, ms, ks, True) for k, kg, ms, ks in grid] + [(5.0, 3.0, 2, 4.0, False)]
        print(f"{'k':>4s} {'k_grow':>6s} {'seed_px':>7s} {'k_swir':>6s} {'quay':>5s} {'busan':>6s} {'casablanca':>10s}")
        for k, kg, ms, ks, qs in rows:
            row = {"k": k, "k_grow": kg, "min_seed_px": ms, "k_swir": ks, "quayside": qs}
            for p, (im, labs) in scenes.items():
                row[p] = score_port(im, labs, k=k, k_grow=kg, min_seed_px=ms, k_swir=ks,
                                    quayside=qs)["min3px/iou"]["f1"]
            sweep.append(row)
            print(f"{k:4.1f} {kg:6.1f} {ms:7d} {str(ks):>6s} {str(qs):>5s} {row['busan']:6.3f} "
                  f"{row['casablanca']:10.3f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"match_iou": MATCH_IOU, "min_length_px": MIN_LEN_PX, "ports": results,
                                    "sweep": sweep, "target_f1": 0.7}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
