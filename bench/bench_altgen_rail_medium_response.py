"""Does the medium-resolution (3-10 m) optical railcar estimate respond to the cars?

Run: ``python bench/bench_altgen_rail_medium_response.py [--first-seed 16] [--seeds 4]
[--gsd 3 5 10] [--conditions clear hazy partly_cloudy low_sun] [--out F.json]``.

A change-detection library needs an estimate that moves when the cars move: a scene-total
MAPE can be low for an estimate that reads track length times a typical occupancy and
ignores the image (review RMED, session 37: a halved yard read x0.8-0.9, empty tracks 5.5
cars at 3 m). This bench renders each scene of ``bench_altgen_rail_medium.py`` (same
seeds: index ``i``, condition ``c`` -> generator seed ``SEED0 + 16 i + c``, rendered at
1 m and coarsened by that bench's :func:`coarsen`) three times, with every random draw
unchanged:

* **full**: the scene as the generator draws it;
* **halved**: every other car (in the generator's drawing order, so alternate cars along
  each string) is painted and then wiped (its albedo, height and normals restored, its
  occluding box, hence its shadow, dropped); the generator's random stream is consumed as
  for the full scene, so tracks, ballast, sun, clouds and noise are identical;
* **emptied**: every car wiped the same way (the same yard with no car).

The generator (``tests/altgen/railyard.py``) is not edited: its ``_render_car`` is wrapped
for the duration of a render (the technique of review RMED's ``x/halve.py``).

Reported per GSD (scene totals, ``result.total``):

* **halved ratio**: the median over scenes of estimate(halved) / estimate(full), beside
  the truth's ratio (about 0.5). A responding estimate reads about the truth's ratio.
* **emptied**: cars read per km of track on the emptied yards (truth 0), and the share
  of emptied scenes whose estimate is within 2 reported uncertainties of 0.
* **per feature** on the full scenes: Pearson r between the estimated and true count per
  row (a track, or a bundle scored once, as ``score_features`` scores them), and the
  slope of the estimated on the true occupancy (count / full-track count at 15 m pitch).
  A slope near 1 means the estimate follows occupancy; near 0 means it reads length.

The truth is every car drawn (observed or not: partly cloudy scenes are reported with the
others but the truth under cloud is not taken out; use ``--conditions clear hazy low_sun``
for a clean read). Held-out indices (200 and above) are refused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import tests.altgen.railyard as RY  # noqa: E402
from bench_altgen_rail_medium import SEED0, coarsen, score_features  # noqa: E402
from tests.altgen.railyard import CONDITIONS  # noqa: E402

# Indices 200-215 of the medium bench are held out (bench_altgen_rail_medium docstring).
HELD_OUT_FIRST = 200
# Mean car pitch (m, body plus coupler gap) used only to express occupancy and empty
# readings per km as a count (the estimators' own pitch is 15 m too).
PITCH_M = 15.0


def render(seed: int, condition: str, mode: str):
    """Render one scene with all cars (``"full"``), every other car wiped (``"halved"``) or
    every car wiped (``"emptied"``), the random stream unchanged.

    Parameters
    ----------
    seed : int
        Generator seed.
    condition : str
        One of :data:`tests.altgen.railyard.CONDITIONS`.
    mode : str
        ``"full"``, ``"halved"`` or ``"emptied"``.

    Returns
    -------
    RailyardScene
        The scene; its ``cars`` hold only the cars left standing.
    """
    if mode not in ("full", "halved", "emptied"):
        raise ValueError(mode)
    orig = RY._render_car
    kept: list[int] = []
    state = {"k": 0}

    def wrapped(ctype, spec, u0, u1, vt, U, V, alb, z, nu, nv, nz, occluders, rng, **kw):
        k = state["k"]
        state["k"] += 1
        wipe = mode == "emptied" or (mode == "halved" and k % 2 == 1)
        sel = RY._car_slice(U, V, u0, u1, vt, spec[1]) if wipe else None
        if sel is None:
            # drawn as usual (a car whose slice misses the grid is drawn too: nothing to wipe)
            kept.append(k)
            return orig(ctype, spec, u0, u1, vt, U, V, alb, z, nu, nv, nz, occluders, rng, **kw)
        n_occ = len(occluders)
        saved = [alb[(slice(None),) + sel].copy(), z[sel].copy(), nu[sel].copy(), nv[sel].copy(), nz[sel].copy()]
        out = orig(ctype, spec, u0, u1, vt, U, V, alb, z, nu, nv, nz, occluders, rng, **kw)   # same draws
        alb[(slice(None),) + sel], z[sel], nu[sel], nv[sel], nz[sel] = saved
        del occluders[n_occ:]   # no box, no shadow
        return out

    RY._render_car = wrapped
    try:
        sc = RY.make_railyard(seed, gsd_m=1.0, condition=condition)
    finally:
        RY._render_car = orig
    # The generator lists its cars in drawing order (one TruthCar per _render_car call).
    cars = tuple(c for k, c in enumerate(sc.cars) if k in set(kept))
    return RY.RailyardScene(sc.image, sc.valid, sc.tracks, sc.true_tracks, cars, sc.sun_azimuth_deg,
                            sc.sun_elevation_deg, sc.gsd_m, sc.condition, sc.params)


def truth_per_track(sc) -> dict[str, int]:
    """Cars standing per track (every car drawn, observed or not)."""
    out = {t: 0 for t in sc.tracks}
    for car in sc.cars:
        out[car.track_id] += 1
    return out


def summarise(rows: list[dict], feats: list[dict], gsds) -> dict:
    """Halved ratio, emptied reading and per-feature response per GSD (see module docstring)."""
    out = {}
    for g in gsds:
        rg = [r for r in rows if r["gsd"] == g]
        ratios = [r["est"]["halved"] / r["est"]["full"] for r in rg
                  if r["est"]["full"] is not None and r["est"]["halved"] is not None and r["est"]["full"] > 0.5]
        truth_ratios = [r["truth"]["halved"] / r["truth"]["full"] for r in rg if r["truth"]["full"]]
        emp = [r for r in rg if r["est"]["emptied"] is not None]
        km = sum(r["track_km"] for r in emp)
        within2 = [abs(r["est"]["emptied"]) <= 2 * (r["unc"]["emptied"] or 0.0) for r in emp]
        fg = [f for f in feats if f["gsd"] == g and f["est"] is not None]
        est = np.array([f["est"] for f in fg], float)
        tru = np.array([f["truth"] for f in fg], float)
        full = np.array([f["full_count"] for f in fg], float)
        r_feat = float(np.corrcoef(est, tru)[0, 1]) if len(fg) > 2 and est.std() > 0 and tru.std() > 0 else None
        ok = full > 0
        slope = (float(np.polyfit(tru[ok] / full[ok], est[ok] / full[ok], 1)[0])
                 if ok.sum() > 2 and (tru[ok] / full[ok]).std() > 0 else None)
        out[g] = {"scenes": len(rg), "halved_ratio_median": float(np.median(ratios)) if ratios else None,
                  "halved_ratio_q25_q75": [float(x) for x in np.percentile(ratios, [25, 75])] if ratios else None,
                  "scenes_with_full_estimate": len(ratios),
                  "truth_ratio_median": float(np.median(truth_ratios)) if truth_ratios else None,
                  "emptied_cars_per_km": (sum(r["est"]["emptied"] for r in emp) / km) if km else None,
                  "emptied_within_2u": float(np.mean(within2)) if within2 else None,
                  "features": len(fg), "feature_r": r_feat, "occupancy_slope": slope}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=16)
    ap.add_argument("--gsd", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "altgen_rail_medium_response.json"))
    args = ap.parse_args(argv)
    if args.first_seed + args.seeds > HELD_OUT_FIRST:
        ap.error(f"indices {HELD_OUT_FIRST} and above are held out")

    from changedet.objects.railcars import count_railcars

    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    cpu0 = time.process_time()
    rows, feats = [], []
    for i in range(args.first_seed, args.first_seed + args.seeds):
        for cond in args.conditions:
            seed = SEED0 + 16 * i + CONDITIONS.index(cond)
            scenes = {m: render(seed, cond, m) for m in ("full", "halved", "emptied")}
            km = sum(t.length for t in scenes["full"].tracks.values()) / 1000.0
            for g in args.gsd:
                row = {"index": i, "seed": seed, "condition": cond, "gsd": g, "track_km": km,
                       "est": {}, "unc": {}, "truth": {}}
                for m, sc in scenes.items():
                    image, valid = coarsen(sc, int(g))
                    res = count_railcars(image, sc.tracks, valid=valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                                         sun_elevation_deg=sc.sun_elevation_deg)
                    tpt = truth_per_track(sc)
                    row["est"][m] = None if res.total is None else float(res.total)
                    row["unc"][m] = None if res.uncertainty is None else float(res.uncertainty)
                    row["truth"][m] = sum(tpt.values())
                    if m == "full":
                        for f in score_features(res, tpt):
                            length = sum(sc.tracks[t].length for t in f["tracks"])
                            feats.append({**f, "gsd": g, "condition": cond, "index": i,
                                          "full_count": length / PITCH_M})
                rows.append(row)
                print(f"i {i:3d} {cond:13s} {g:2d} m truth {row['truth']['full']:3d}/{row['truth']['halved']:3d}/0 "
                      f"est {row['est']['full']:6.1f}/{row['est']['halved']:6.1f}/{row['est']['emptied']:6.1f}",
                      flush=True)
    summary = summarise(rows, feats, args.gsd)
    print(f"\n{'GSD':>4s} {'halved/full':>12s} {'(truth)':>8s} {'empty cars/km':>14s} {'empty in 2u':>11s} "
          f"{'feature r':>9s} {'occ slope':>9s}")
    for g, s in summary.items():
        def f(v, fmt):
            return "-" if v is None else format(v, fmt)
        print(f"{g:3d}m {f(s['halved_ratio_median'], '12.3f')} {f(s['truth_ratio_median'], '8.3f')} "
              f"{f(s['emptied_cars_per_km'], '14.1f')} {f(s['emptied_within_2u'], '11.2f')} "
              f"{f(s['feature_r'], '9.3f')} {f(s['occupancy_slope'], '9.3f')}")
    print(f"CPU {time.process_time() - cpu0:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": {str(k): v for k, v in summary.items()}, "scenes": rows},
                              indent=1, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
