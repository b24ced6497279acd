"""``changedet cube info``: what an AOI's cubes hold (dates, sources, clouds, shifts, skipped, size)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from changedet.cli import default_data_dir
from changedet.errors import CubeError

_NAME = re.compile(r"(?P<sensor>[a-z0-9]+)_(?P<res>[0-9.]+)m(?:_(?P<product>[a-z][a-z0-9]*))?\.provenance\.json$")


def add_parser(sub) -> None:
    p = sub.add_parser("cube", help="inspect an AOI's imagery cubes")
    csub = p.add_subparsers(dest="cube_command", metavar="ACTION", required=True)
    info = csub.add_parser("info", help="dates, sources, cloud, co-registration shifts, skipped scenes and size")
    info.add_argument("aoi", help="AOI id (or path to its .yaml)")
    info.add_argument("--data-dir", default=None, help="data directory or fsspec URL (default $CHANGEDET_DATA_DIR "
                      "or changedet-data)")
    info.add_argument("--sensor", default=None, help="only this sensor's cubes")
    info.add_argument("--registry", type=Path, default=None,
                      help="AOI folder the id is read from (default: $CHANGEDET_AOIS or aois/)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)


def find_cubes(data_dir: str, aoi_id: str) -> list[tuple[str, float, str | None]]:
    """(sensor, resolution, product) of every cube of ``aoi_id`` under ``data_dir``."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(f"{str(data_dir).rstrip('/')}/cubes/{aoi_id}")
    if not fs.exists(base):
        return []
    out = []
    for path in fs.ls(base, detail=False):
        m = _NAME.search(str(path))
        if m:
            out.append((m["sensor"], float(m["res"]), m["product"]))
    return sorted(out, key=lambda t: (t[0], t[1], t[2] or ""))


def _fmt_shift(coreg) -> str:
    if not isinstance(coreg, dict):
        return "-"
    bands = coreg.get("bands")
    if isinstance(bands, dict) and bands:
        # Registered per band: show the band that moved most.
        def size(b):
            v = bands[b] if isinstance(bands[b], dict) else {}
            r, c = v.get("shift_row_px"), v.get("shift_col_px")
            return -1.0 if r is None or c is None else float(r) ** 2 + float(c) ** 2
        worst = max(bands, key=size)
        one = _fmt_shift(bands[worst])
        return one if one == "-" else f"{one} ({worst}; {len(bands)} bands)"
    r, c = coreg.get("shift_row_px"), coreg.get("shift_col_px")
    if r is None or c is None:
        return "-"
    return f"{float(r):+.2f},{float(c):+.2f}"


def cmd_info(args) -> int:
    from changedet.aoi import load_aoi
    from changedet.cube import Cube
    from changedet.grid import aoi_grid
    from changedet.pipeline import stored_day

    aoi = load_aoi(args.aoi, registry=getattr(args, "registry", None))
    data_dir = args.data_dir or str(default_data_dir())
    cubes = [(s, r, p) for s, r, p in find_cubes(data_dir, aoi.id) if args.sensor in (None, s)]
    if not cubes:
        raise CubeError(f"no cube of AOI {aoi.id} under {data_dir}; 'changedet run --aoi {aoi.id} ...' (a day it "
                        f"stores) or 'changedet fetch --aoi {aoi.id} ...' make one, or give the right --data-dir")
    infos = [Cube(data_dir, aoi.id, s, aoi_grid(aoi, r), reflectance=s != "s1", product=p).info() for s, r, p in cubes]
    for info in infos:
        # The day of the run that stored or skipped each scene: what `changedet run --date`
        # (or a backfill) must be given to process it again, the AOI's local day, not
        # always the UTC date of its time.
        for s in info["scenes"] + info["skipped"]:
            s["day"] = stored_day(aoi, None, s).isoformat()
    if args.json:
        print(json.dumps({"aoi_id": aoi.id, "cubes": infos}, default=str))
        return 0
    for info in infos:
        times = [s["day"] for s in info["scenes"]]
        span = f"{times[0]} .. {times[-1]}" if times else "empty"
        print(f"{info['aoi_id']} {info['sensor']} {info['resolution_m']:g} m {info['product']}  {info['path']}")
        print(f"  grid {info['shape'][0]} x {info['shape'][1]} px, {info['crs']}; bands {', '.join(info['bands'])}")
        print(f"  {info['n_scenes']} scenes ({span}); sources: "
              + (", ".join(f"{k} {v}" for k, v in info["sources"].items()) or "none")
              + f"; {len(info['skipped'])} skipped; {info['size_bytes'] / 1e6:.1f} MB")
        if info["scenes"]:
            print(f"  {'day':<10}  {'cloud':>6}  {'mask':<11}  {'shift r,c px':<13}  scene")
            for s in info["scenes"]:
                cf = s["cloud_fraction"]
                cloud = "-" if cf is None else f"{100 * float(cf):5.1f}%"
                print(f"  {s['day']:<10}  {cloud:>6}  {str(s['cloud_mask'] or '-'):<11}  "
                      f"{_fmt_shift(s['coreg']):<13}  {s['scene_id']}")
        for s in info["skipped"]:
            print(f"  skipped {s['day']} {s['scene_id']}: {s['reason']}")
    return 0
