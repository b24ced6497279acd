"""``changedet coregister``: estimate (and apply) the shift that puts one raster onto another."""

from __future__ import annotations

import json
import math
from pathlib import Path

from changedet.errors import ChangedetError, CoregError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "coregister",
        help="estimate the translation that moves MOVING onto REFERENCE (and write the aligned image)",
        description="Co-register MOVING onto REFERENCE (any GDAL raster: GeoTIFF, COG, JPEG2000; CRS and "
        "resolution may differ). Shifts are the translation that moves MOVING onto REFERENCE: x positive "
        "east, y positive north, in reference pixels and map units.",
    )
    p.add_argument("reference", type=Path, help="reference raster (its grid is the output grid)")
    p.add_argument("moving", type=Path, help="raster to align onto the reference")
    p.add_argument("--out", type=Path, default=None, help="write the aligned moving image (reference grid) as a COG")
    p.add_argument("--band", default=None,
                   help="band name used for the estimate (default: NIR, else red, else the mean of the bands; "
                        "a CLM or SCL band is never averaged in: it masks clouds in both images)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.add_argument("--min-reliability", type=float, default=0.5,
                   help="shifts with a lower reliability (0..1) are not applied (default 0.5)")
    p.add_argument("--max-shift", type=float, default=20.0,
                   help="shifts longer than this many reference pixels are not applied (default 20)")
    p.add_argument("--local", action="store_true",
                   help="local co-registration: a shift per window on a grid (tie points), outlier rejection and "
                        "a smooth warp fitted to the kept points (for non-rigid distortion)")
    p.add_argument("--window", type=int, default=None,
                   help="matching window side in reference pixels. --local: per tie point (default 256). "
                        "Global: match ONE window of this side at the centre of the overlap, read alone from the "
                        "files (AROSICS' task; much faster on large scenes), instead of the whole images (the default)")
    p.add_argument("--step", type=int, default=None,
                   help="--local: spacing of the tie points in reference pixels (default half the window)")
    p.add_argument("--warp", choices=("smooth", "affine", "translation"), default="smooth",
                   help="--local: model fitted to the kept tie points (default smooth: affine + thin-plate spline)")
    p.set_defaults(func=cmd_coregister)


def _num(v: float) -> float | None:
    v = float(v)
    return round(v, 4) if math.isfinite(v) else None


def result_json(res) -> dict:
    """The CLI JSON contract for a :class:`~changedet.coreg.CoregResult`."""
    return {
        "shift_x_px": _num(res.shift_col_px) if res.shift_col_px else 0.0,
        "shift_y_px": _num(-res.shift_row_px) if res.shift_row_px else 0.0,
        "shift_x_m": _num(res.shift_x_m),
        "shift_y_m": _num(res.shift_y_m),
        "shift_row_px": _num(res.shift_row_px),
        "shift_col_px": _num(res.shift_col_px),
        "reliability": _num(res.reliability),
        "tie_points": int(res.tie_points),
        "similarity_before": _num(res.similarity_before),
        "similarity_after": _num(res.similarity_after),
        "applied": bool(res.applied),
        "reason": res.reason,
        "mode": res.mode,
        "tie_points_total": int(res.tie_points_total),
        "residual_rmse_px": _num(res.residual_rmse_px),
    }


def _clear(da):
    """Clear-sky mask (y, x) of one image from its CLM or SCL band (True = usable), or None."""
    from changedet.cloudmask import available_method, cloud_mask

    method = available_method(da)
    if method not in ("clm", "scl"):
        return None
    mask, _ = cloud_mask(da, method=method)
    # NaN (no data in the class band) is not usable either.
    return mask == 0


def clear_sky(ref, mov):
    """The ``valid`` mask for :func:`changedet.coreg.coregister` on the reference grid: pixels
    clear in every input that carries a ``CLM``/``SCL`` band (None when neither does).

    The moving image's mask is moved onto the reference grid with nearest neighbour
    (classes must not be interpolated)."""
    import numpy as np

    from changedet.grid import GridSpec
    from changedet.io import reproject_to

    ok_ref, ok_mov = _clear(ref), _clear(mov)
    if ok_ref is None and ok_mov is None:
        return None
    grid = GridSpec.of(ref)
    valid = np.ones(grid.shape, bool) if ok_ref is None else np.asarray(ok_ref.values, bool)
    if ok_mov is not None:
        on_ref = reproject_to(ok_mov.astype("float32"), grid, resampling="nearest")
        valid &= np.asarray(on_ref.values) == 1
    return grid.attach(valid)


def cmd_coregister(args) -> int:
    from changedet.coreg import apply_result, coregister, coregister_files
    from changedet.io import check_output_path, read_raster, write_geotiff

    if args.out is not None:
        check_output_path(args.out, option="--out")  # refuse a directory before the work, not after it
    for name in ("window", "step"):
        v = getattr(args, name)
        if v is not None and v < 32:
            raise ChangedetError(f"--{name} {v} is too small; use at least 32 pixels")
    if args.band is not None:
        from changedet.io import band_names, open_raster

        for path in (args.reference, args.moving):
            with open_raster(path) as src:
                names = band_names(src.descriptions)
            if args.band not in names:
                raise CoregError(f"{path}: has no band {args.band!r}; its bands are {', '.join(names)}")
    out_path = None
    if args.window is not None and not args.local:
        # One window read from the files; the whole images are read only to write --out.
        res = coregister_files(args.reference, args.moving, band=args.band, window_px=args.window,
                               min_reliability=args.min_reliability, max_shift_px=args.max_shift)
        if args.out is not None:
            out_path = write_geotiff(apply_result(read_raster(args.reference), read_raster(args.moving), res),
                                     args.out, option="--out")
    else:
        ref = read_raster(args.reference)
        mov = read_raster(args.moving)
        valid = clear_sky(ref, mov)
        aligned, res = coregister(ref, mov, band=args.band, min_reliability=args.min_reliability,
                                  max_shift_px=args.max_shift, local=args.local, window_px=args.window or 256,
                                  step_px=args.step, warp=args.warp, valid=valid)
        if args.out is not None:
            out_path = write_geotiff(aligned, args.out, option="--out")
    doc = result_json(res)
    if out_path is not None:
        doc["out"] = str(out_path)
    if args.json:
        print(json.dumps(doc))
        return 0
    status = "applied" if res.applied else f"NOT applied ({res.reason})"
    print(f"shift moving -> reference: x {doc['shift_x_px']:+.3f} px ({res.shift_x_m:+.2f} m east), "
          f"y {doc['shift_y_px']:+.3f} px ({res.shift_y_m:+.2f} m north)")
    if res.mode == "local":
        print(f"local warp from {res.tie_points} of {res.tie_points_total} tie points (mean shift above), "
              f"tie-point residual {res.residual_rmse_px:.3f} px")
    print(f"reliability {res.reliability:.2f}, tie points {res.tie_points}, gradient similarity "
          f"{res.similarity_before:.3f} -> {res.similarity_after:.3f}; {status}")
    if out_path is not None:
        print(f"aligned image written to {out_path}")
    return 0
