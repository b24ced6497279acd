"""``changedet simulate``: render one scene and its ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from changedet.cli import parse_date


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="render a simulated scene (GeoTIFF) with its ground truth (JSON, GeoJSON)")
    p.add_argument("--aoi", required=True, help="AOI id (see 'changedet aois list')")
    p.add_argument("--date", required=True, type=parse_date, help="acquisition date YYYY-MM-DD")
    p.add_argument("--sensor", choices=["vhr", "s2", "s1"], default="vhr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=float, default=None, help="pixel size in metres (default: sensor's)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    # As on run/report/aois: an AOI of the user's own folder, with its scenarios/ beside it.
    p.add_argument("--registry", type=Path, default=None, help="AOI folder (default: $CHANGEDET_AOIS or aois/)")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> int:
    from changedet.aoi import load_aoi
    from changedet.simulate.truth import write_scene
    from changedet.simulate.render import render_scene

    aoi = load_aoi(args.aoi, registry=args.registry)
    scene = render_scene(aoi, args.date, args.sensor, seed=args.seed, resolution_m=args.resolution,
                         registry=args.registry)
    paths = write_scene(scene, args.out, stem=f"{aoi.id}_{args.date.isoformat()}_{args.sensor}")
    counts = scene.truth["counts"]
    print(json.dumps({"image": str(paths["image"]), "truth": str(paths["truth"]),
                      "truth_geojson": str(paths["truth_geojson"]), "counts": {
                          k: counts[k] for k in ("railcars", "containers_teu", "ships")},
                      "applied_shift_px": scene.truth["applied_shift_px"],
                      # The counts are what lies on the ground; the weather says how much of it
                      # the image shows (a 78 %-cloud scene counts far less than its truth).
                      "conditions": scene.truth["conditions"]}, indent=1))
    cloud = float(scene.truth["conditions"].get("cloud_fraction", 0.0))
    if cloud >= 0.2:
        print(f"changedet simulate: note: {cloud:.0%} of this scene is under cloud (band CLM); counts in the "
              "image fall short of the truth's counts there. Another --date or --seed gives other weather",
              file=sys.stderr)
    return 0
