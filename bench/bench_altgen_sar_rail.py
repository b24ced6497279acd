"""Sentinel-1 railcar estimate on scenes from an independent SAR generator (not changedet's simulator).

Run: ``python bench/bench_altgen_sar_rail.py [--seeds 12] [--first-seed 0] [--units mixed|linear|db]
[--out bench/results/altgen_sar_rail.json]``.

Scenes come from ``tests/altgen/railyard_sar.py``: Sentinel-1 IW GRDH-like VV/VH sigma0 at
10 m, written from radar physics (ground and car sigma0, dihedral "cardinal effect",
layover, shadow, speckle with ENL 4.4, thermal noise) without reading
``changedet/simulate`` or ``changedet/objects``. Scene ``i`` uses generator seed
``9000 + i``; every draw (2-10 tracks 4.8-5.3 m apart, 300-900 m long, occupancy from
empty to packed, any angle to the flight direction, ascending or descending, incidence
30-46 deg) comes from that seed, except that every fourth scene (index 3, 7, ...) is
turned to within 10 deg of the flight direction (angle drawn from the seed): random
yards fall there only 11 % of the time, and that is where car sides give the strong
dihedral ("cardinal effect") return, so both regimes are scored. ``--units mixed`` hands odd scenes over in dB and even
ones in linear power (the estimator must tell which).

The counter is called exactly as ``count_railcars(image, tracks, valid=None)``. Scored
per scene: truth total vs ``result.total``, the absolute percentage error (MAPE over
scenes with at least one car), signed bias, and whether the truth lies within 1 and 2
reported uncertainties (``result.uncertainty``; a Gaussian 1-sigma would cover 68 % and
95 %). Where ``per_feature`` rows carry counts (per track, or per bundle of tracks
named by a list of track ids in the row), they are scored against the summed truth of
their tracks, and any ``*occupied*`` length in metres against the truth occupied length
(sum of the cars' lengths over couplers). If the counter refuses radar input, the
error is printed and the bench exits 0.

Seeds: indices 0-59 were used to develop the estimate in session 29 (chosen on 0-39,
confirmed on 40-59); 100-123 were held out then (run twice: before, MAPE 0.607, truth
within 1u / 2u 12 / 25 %; after, 0.352, 71 / 92 %) and count as tuning now. Next held-out
set: 124-147 (``--first-seed 124 --seeds 24``); report it separately, summary only.
Session 30 tuned on 0-59 (one-track regime; confirmed on 60-123) and ran 124-147 twice
(before and after: identical, MAPE 0.304, 1u / 2u 75 / 92 %: no scene there takes the
regime); 124-147 count as tuning from session 31, the next held-out set is 148-171.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.altgen.railyard_sar import make_sar_railyard  # noqa: E402

SEED0 = 9000


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _feature_truth(pf: dict, scene) -> tuple[list[str], float, float] | None:
    """Tracks a per-feature row covers, and their truth cars and occupied length (m)."""
    ids = set(scene.tracks)
    members = None
    for key, val in pf.items():
        if key != "id" and isinstance(val, (list, tuple)) and val and all(isinstance(x, str) and x in ids for x in val):
            members = list(val)
            break
    if members is None:
        if pf.get("id") in ids:
            members = [pf["id"]]
        else:
            return None
    cars = sum(scene.truth["cars_per_track"][t] for t in members)
    occ = sum(scene.truth["occupied_length_m"][t] for t in members)
    return members, float(cars), float(occ)


def _pick(pf: dict, words: tuple[str, ...]):
    """The first numeric field whose name holds one of ``words``."""
    for key, val in pf.items():
        if any(w in key.lower() for w in words):
            f = _num(val)
            if f is not None:
                return key, f
    return None, None


def _score_features(res, scene) -> list[dict]:
    rows, seen = [], set()
    for pf in getattr(res, "per_feature", ()) or ():
        if not isinstance(pf, dict):
            continue
        t = _feature_truth(pf, scene)
        if t is None:
            continue
        members, n_true, occ_true = t
        if frozenset(members) in seen:   # a bundle repeated on each of its tracks' rows is scored once
            continue
        seen.add(frozenset(members))
        est = _num(pf.get("count"))
        _, unc = _pick(pf, ("uncertainty", "sigma", "std"))
        okey, occ = _pick(pf, ("occupied",))
        rows.append({"id": pf.get("id"), "tracks": members, "truth": n_true, "est": est, "uncertainty": unc,
                     "occupied_true_m": occ_true, "occupied_est_m": occ, "occupied_key": okey})
    return rows


def _group(rows: list[dict]) -> dict:
    pos = [r for r in rows if r["truth"] > 0 and r["est"] is not None]
    ape = [abs(r["est"] - r["truth"]) / r["truth"] for r in pos]
    spe = [(r["est"] - r["truth"]) / r["truth"] for r in pos]
    zs = [r["z"] for r in rows if r.get("z") is not None]
    empty = [r for r in rows if r["truth"] == 0 and r["est"] is not None]
    return {"scenes": len(rows), "cars": int(sum(r["truth"] for r in rows)),
            "mape": float(np.mean(ape)) if ape else None, "median_ape": float(np.median(ape)) if ape else None,
            "bias": float(np.mean(spe)) if spe else None,
            "within_1u": float(np.mean([abs(z) <= 1 for z in zs])) if zs else None,
            "within_2u": float(np.mean([abs(z) <= 2 for z in zs])) if zs else None,
            "empty_scenes_abs_err": [r["est"] for r in empty]}


def _fmt(v, spec):
    return format(v, spec) if v is not None else "-".rjust(len(format(0.0, spec)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=12, help="number of scenes")
    ap.add_argument("--first-seed", type=int, default=0, help="index of the first scene (seed 9000 + index)")
    ap.add_argument("--units", choices=("mixed", "linear", "db"), default="mixed",
                    help="sigma0 handed over in linear power, dB, or alternating (odd scenes dB)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "altgen_sar_rail.json"))
    args = ap.parse_args(argv)

    from changedet.objects.railcars import count_railcars

    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; CPU times are process_time")
    rows, feats = [], []
    t_render = t_count = 0.0
    cpu0 = time.process_time()
    for i in range(args.first_seed, args.first_seed + args.seeds):
        seed = SEED0 + i
        db = args.units == "db" or (args.units == "mixed" and i % 2 == 1)
        t0 = time.process_time()
        psi = float(np.random.default_rng(seed + 10 ** 6).uniform(0.0, 10.0)) if i % 4 == 3 else None
        sc = make_sar_railyard(seed, db=db, psi_deg=psi)
        t1 = time.process_time()
        try:
            res = count_railcars(sc.image, sc.tracks, valid=None)
            err = None
        except Exception as exc:   # noqa: BLE001  a refusal or a crash is reported, not raised
            res, err = None, f"{type(exc).__name__}: {exc}"
        t2 = time.process_time()
        t_render += t1 - t0
        t_count += t2 - t1
        truth = sc.truth["total_cars"]
        head = (f"seed {seed} {'dB ' if db else 'lin'} psi {sc.psi_deg:4.1f} inc {sc.incidence_deg:4.1f} "
                f"{sc.params['orbit'][:4]} tracks {sc.params['n_tracks']:2d} x {sc.params['yard_length_m']:4.0f} m "
                f"fill {sc.params['fill']:.2f} truth {truth:4d}")
        if err is not None:
            print(f"{head}  ERROR {err}", flush=True)
            if any(w in err.lower() for w in ("radar", "backscatter")):   # a refusal, not a crash
                print("\nThe counter does not take radar bands (yet): nothing to score.")
                return 0
            rows.append({"seed": seed, "truth": truth, "est": None, "uncertainty": None, "z": None, "error": err})
            continue
        est = _num(getattr(res, "total", None))
        unc = _num(getattr(res, "uncertainty", None))
        if est is None:
            z = None
        elif unc is not None and unc > 0:
            z = (est - truth) / unc
        else:
            z = 0.0 if est == truth else math.inf
        fr = _score_features(res, sc)
        occ_true = sum(sc.truth["occupied_length_m"].values())
        occ_est = sum(f["occupied_est_m"] for f in fr if f["occupied_est_m"] is not None) \
            if any(f["occupied_est_m"] is not None for f in fr) else None
        row = {"seed": seed, "db": db, "psi_deg": sc.psi_deg, "incidence_deg": sc.incidence_deg,
               "orbit": sc.params["orbit"], "n_tracks": sc.params["n_tracks"], "yard_length_m": sc.params["yard_length_m"],
               "fill": sc.params["fill"], "truth": truth, "est": est, "uncertainty": unc, "z": z,
               "occupied_true_m": occ_true, "occupied_est_m": occ_est, "per_feature": fr, "error": None,
               "count_cpu_s": round(t2 - t1, 3)}
        rows.append(row)
        feats.extend(fr)
        pe = f"{100 * (est - truth) / truth:+6.1f} %" if (est is not None and truth) else "   -    "
        cov = "-" if z is None else ("1u" if abs(z) <= 1 else "2u" if abs(z) <= 2 else "out")
        occ = f" occupied {occ_est:6.0f}/{occ_true:6.0f} m" if occ_est is not None else f" occupied -/{occ_true:6.0f} m"
        print(f"{head} est {_fmt(est, '7.1f')} +- {_fmt(unc, '5.1f')} {pe} [{cov:>3s}]{occ} "
              f"({t2 - t1:.2f} s)", flush=True)

    ok = [r for r in rows if r["error"] is None]
    groups = {"all": _group(ok),
              "psi < 10 (aligned)": _group([r for r in ok if r["psi_deg"] < 10]),
              "psi 10-30": _group([r for r in ok if 10 <= r["psi_deg"] < 30]),
              "psi >= 30": _group([r for r in ok if r["psi_deg"] >= 30]),
              "truth < 50 cars": _group([r for r in ok if r["truth"] < 50]),
              "truth >= 50 cars": _group([r for r in ok if r["truth"] >= 50]),
              "linear input": _group([r for r in ok if not r["db"]]),
              "dB input": _group([r for r in ok if r["db"]])}
    print(f"\n{'group':20s} {'scenes':>6s} {'cars':>6s} {'MAPE':>6s} {'medAPE':>6s} {'bias':>6s} {'in 1u':>6s} {'in 2u':>6s}")
    for name, g in groups.items():
        if not g["scenes"]:
            continue
        print(f"{name:20s} {g['scenes']:6d} {g['cars']:6d} {_fmt(g['mape'], '6.3f')} {_fmt(g['median_ape'], '6.3f')} "
              f"{_fmt(g['bias'], '+6.3f')} {_fmt(g['within_1u'], '6.2f')} {_fmt(g['within_2u'], '6.2f')}")
        if g["empty_scenes_abs_err"]:
            print(f"{'':20s} estimates on scenes with no car: {g['empty_scenes_abs_err']}")
    if feats:
        for f in feats:
            f["z"] = None if f["est"] is None else (
                (f["est"] - f["truth"]) / f["uncertainty"] if f["uncertainty"] else (0.0 if f["est"] == f["truth"] else math.inf))
        fg = _group(feats)
        print(f"{'per feature':20s} {fg['scenes']:6d} {fg['cars']:6d} {_fmt(fg['mape'], '6.3f')} "
              f"{_fmt(fg['median_ape'], '6.3f')} {_fmt(fg['bias'], '+6.3f')} {_fmt(fg['within_1u'], '6.2f')} "
              f"{_fmt(fg['within_2u'], '6.2f')}   (rows: tracks or bundles)")
        occ = [(f["occupied_est_m"], f["occupied_true_m"]) for f in feats
               if f["occupied_est_m"] is not None and f["occupied_true_m"] > 0]
        if occ:
            print(f"occupied length per feature: MAPE {np.mean([abs(a - b) / b for a, b in occ]):.3f}, "
                  f"bias {np.mean([(a - b) / b for a, b in occ]):+.3f} over {len(occ)} occupied features")
    else:
        groups["per_feature"] = None
        print("per-feature rows: none matched a track id (or a list of track ids)")
    errors = [f"seed {r['seed']}: {r['error']}" for r in rows if r["error"]]
    print(f"counter errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = time.process_time() - cpu0
    print(f"CPU: render {t_render:.1f} s, count {t_count:.1f} s, total {cpu:.1f} s; peak RSS {ru.ru_maxrss / 1024:.0f} MiB; "
          f"load average at end {os.getloadavg()[0]:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"groups": groups, "scenes": rows, "cpu_s": {"render": t_render, "count": t_count, "total": cpu}},
                              indent=1, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
