"""Container TEU and ship detection on scenes from an independent generator.

Run: ``python bench/bench_altgen_port.py [--yard-seeds 101 102] [--harbour-seeds 201 202 203]
[--out bench/results/altgen_port.json] [--png DIR]``; ``--harbour-seeds`` with no value runs
the yards only (``--yard-seeds`` with none, the ships only).

The scenes come from ``tests/altgen/container_yard.py`` and ``tests/altgen/harbour.py``,
written from the real world without reading changedet's own simulator; the counters
never saw them while being developed. Scoring:

- containers, per zone: TEU error against the TEU the image shows (whole zone without
  cloud; under partial cloud each stack's TEU times the share of its footprint not
  under the thick cloud the counter is told of, ``valid``: a reference that does not
  depend on the counter), ground-slot error, tiers (TEU over ground slots)
  against the truth's, tarped stacks found (a truth tarped stack under a detection
  flagged ``tarped``); 20 ft / 40 ft boxes: the absolute error of the share of TEU in
  20 ft boxes, and the box count error (|20 ft error| + |40 ft error|) over the visible
  boxes (each size's truth times the zone's visible share of TEU); and how often the
  truth lies within one and two reported standard deviations (TEU, 20 ft and 40 ft
  boxes: about 68 % and 95 % if the uncertainty is honest);
- ships, per sensor: detection F1 with one-to-one matching, at IoU >= 0.5 for VHR
  (0.5-1 m) and centre-in-hull (hull grown by one pixel) for Sentinel-1-like SAR at
  10 m; median length error, median heading error, at_berth / at_anchor accuracy.

``--png DIR`` writes crops of the worst zones and the missed / false ships.
``--conditions partly_cloudy`` (say) renders only the yard cases of those conditions;
a case keeps its scene seed (yard seed x 10 + its index in ``YARD_CASES``).

Partial cloud: a cloud's shadow is not unobservable (the boxes are there, lit by the
sky), so the reference counts them. Until session 20 the reference was the TEU on the
pixels the counter itself reads (its ``observed_mask``: the cloud, its thin edge and,
until session 30, its projected shadow left out); that rewarded masking (a counter that masks a hard zone
whole is not scored on it) and is kept as a second column, ``teu_error_counter``
(``visible_teu_counter``). Since session 37 the container counter counts the boxes
under its thin edge by interpolation (it still reads only its ``observed_mask``), so its
count covers more than that mask and this column reads high against earlier sessions'
(partly cloudy, yards 207-212: 13.4 % before, 24.1 % after); compare across sessions on
``teu_error``. Per zone, ``masked_share`` is the share of the visible TEU
the counter leaves unobserved; zones it masks (nearly) whole (``masked_share`` >=
``FULLY_MASKED``) are counted apart with their visible TEU. ``cloud_shadow_share`` is
the share of the visible TEU under a cloud's shadow (the generator's ``cloud_shadow``
at least 0.5; the generator blocks 0.85 of the direct beam where it is 1); a partly cloudy zone is "in cloud
shadow" when that share is at least half, "sunlit" when under ``SUNLIT_MAX``, "part
shadow" between, and the table after the containers table gives the errors by kind.

Tarp flags: each flagged patch (``tarp_patches`` of the stack blocks) is checked on the
truth: right when its centroid lies on a tarped stack's footprint grown by
``TARP_TOL_M``, else on an untarped box or elsewhere; precision is right over flagged,
and the tarped stacks with a patch on them are the patch-level recall.

After the containers table, a breakdown per condition and per condition and GSD of the
signed errors, zone means: TEU, ground slots (against the visible share of the truth's)
and tiers (TEU over slots against the truth's), so that a bias (mean) is told from a
spread (mean absolute) and footprint errors from height errors.

Seeds: yards 101-212 have been used while developing the counter (tuning; 123-128 were
held out in session 14, 129-134 and 135-140 in session 15, 141-146 in session 16,
147-152 in session 17, 153-158 in session 18, 159-164 in session 19, 165-170 in session
20, 171-176 in session 21, 177-182 in session 22, 183-188 in session 23, 189-194 in
session 24, 195-200 in session 25, 201-206 in session 26 (run once, no container
change landed) and 207-212 in session 27 (before and after a cloud-shadow reading, reverted),
each then looked at, the last twelve as summary tables only, and they count as tuning
now); 213-218 were held out from session 28 (run in session 29 before and in session 30
after the cloud-shadow footprints: TEU error 15.0 -> 13.5 %, partly cloudy 21.1 -> 14.5 %)
and count as tuning from session 31; 219-224 are held out from then (run once in
session 31, before any change: TEU error 13.1 %, partly cloudy 26.9 %; no container change
landed; report them separately, summary table only, run them at most once more, and do
not tune on them). They were run that once more in session 35, after the sub-pixel shadow
end (TEU error 13.2 %, partly cloudy 27.1 %; no before run at that code) and count as
tuning since; 225-230 were held out in session 36 (run before: TEU error 13.1 %, partly
cloudy 20.7 %; and after a high-cube tier rounding: 13.4 %, partly cloudy 20.1 %, which was
then reverted, so the code after equals the code before) and count as tuning since; 231-236
were held out in session 37 (run before: TEU error 13.9 %, partly cloudy 24.0 %; after the
thin-edge fill: 13.3 %, partly cloudy 20.5 %, clear / hazy / low sun unchanged) and count as
tuning since; 237-242 were held out in session 38 (run before: TEU error 14.5 %; after the
merged-top split at coarse pixels: 14.0 %, clear 0.8 m 19.8 -> 17.0 %, every other row
unchanged) and count as tuning since; 243-248 were held out in session 39 (run before: TEU
error 15.1 %; after the 0.8 m outline blur and the not-redder shade: 14.7 %, clear 13.1 -> 11.8 %
(0.8 m 17.2 -> 13.3 %), low sun 18.2 -> 18.6 %, partly cloudy 20.0 -> 21.0 %, hazy unchanged) and
count as tuning since; 249-254 were held out in sessions 40-42 (run before in session 40: TEU
error 13.0 %, clear 12.1, hazy 11.9, low sun 15.6, partly cloudy 14.3 %; after session 42's
sub-pixel roof edge: 12.7 %, clear 12.2, hazy 11.1, low sun 15.6, partly cloudy 12.8 %) and count
as tuning since; 255-260 are held out from session 43 (run at most twice, before and after a
container change; summary tables only; run once in session 43, before: TEU error 12.5 %, clear
10.7, hazy 8.6, low sun 10.7, partly cloudy 23.7 %, with no container change landed after it, so
the next session may use that run as its "before" on an unchanged counter and run "after" once).
They were run after in session 44, after an off-frame cloud-shadow zone rule (since reverted on review): identical
(TEU error 12.5 %, partly cloudy 23.7 %: the rule fired on no zone there), and count as tuning since; 261-266 are
held out from session 45 (run at most twice, before and after a container change; summary tables only; run once
in session 45, before: TEU error 13.2 %, clear 10.1, hazy 14.3, low sun 14.0, partly cloudy 20.2 %, with no
container change landed after it, so the next session may use that run as its "before" and run "after" once).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from changedet.grid import GridSpec  # noqa: E402
from changedet.objects.containers import count_containers, observed_mask  # noqa: E402
from changedet.objects.ships import count_ships  # noqa: E402
from changedet.objects.vessels import detect_vessels_sar  # noqa: E402
from changedet.errors import ChangedetError  # noqa: E402
from tests.altgen.container_yard import make_yard, rfeatures_mask, score_yard  # noqa: E402
from tests.altgen.harbour import make_harbour, render_sar, render_vhr, score_ships  # noqa: E402

YARD_CASES = [("clear", 0.5), ("hazy", 0.5), ("low_sun", 0.5), ("partly_cloudy", 0.5), ("clear", 0.3),
              ("clear", 0.8)]
VHR_CASES = [("clear", 1.0), ("hazy", 1.0), ("low_sun", 1.0), ("partly_cloudy", 1.0), ("clear", 0.5)]
SAR_WINDS = ["calm", "moderate", "strong"]
# A zone counts as masked whole by the counter when it leaves this share of the
# visible TEU unobserved; "sunlit" partly cloudy zones have under SUNLIT_MAX of their
# visible TEU in a cloud's shadow (the generator's cloud_shadow >= SHADOW_MIN).
FULLY_MASKED = 0.95
SUNLIT_MAX = 0.05
SHADOW_MIN = 0.5


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _png(img, path: Path, bounds=None) -> None:
    from PIL import Image

    a = np.asarray(img)
    if a.shape[0] >= 3:
        rgb = np.stack([a[2], a[1], a[0]], axis=-1)
        rgb = np.clip(rgb / max(np.nanpercentile(rgb, 99.5), 1e-3) * 255, 0, 255)
    else:
        db = 10 * np.log10(np.maximum(a[0], 1e-6))
        rgb = np.repeat(np.clip((db + 25) / 30 * 255, 0, 255)[..., None], 3, axis=-1)
    if bounds is not None:
        r0, r1, c0, c1 = bounds
        rgb = rgb[r0:r1, c0:c1]
    Image.fromarray(np.nan_to_num(rgb).astype("uint8")).save(path)


def visible_truth(sc, observed: np.ndarray | None) -> dict[str, dict]:
    """Per zone, the TEU the image shows and how much of it the counter reads.

    ``visible_teu``: each stack's TEU times the share of its footprint pixels not under
    the flagged thick cloud (``sc.valid``; the whole TEU without cloud). It does not
    depend on the counter. ``visible_teu_counter``: the same over the pixels the counter
    reads (``observed``, its ``observed_mask``), the reference before session 20.
    ``shadow_teu``: the visible TEU on pixels under a cloud's shadow (``sc.cloud_shadow``
    >= ``SHADOW_MIN``). Also the visible ground slots (20 ft slots, a 40 ft slot counts 2).
    """
    grid = GridSpec.of(sc.image)
    valid = None if sc.valid is None else np.asarray(sc.valid.values, bool)
    shadow = None if getattr(sc, "cloud_shadow", None) is None else np.asarray(sc.cloud_shadow) >= SHADOW_MIN
    out = {z: {"visible_teu": 0.0, "visible_teu_counter": 0.0, "shadow_teu": 0.0, "visible_slots": 0.0}
           for z in sc.zones}
    for s in sc.stacks:
        teu = s.tiers * (1 if s.size == "20" else 2)
        slots = 1 if s.size == "20" else 2
        o = out[s.zone]
        if valid is None:
            o["visible_teu"] += teu
            o["visible_teu_counter"] += teu
            o["visible_slots"] += slots
            continue
        m = rfeatures_mask(s.polygon, grid)
        n = m.sum()
        if n == 0:
            continue
        v = valid[m]
        share = float(v.mean())
        o["visible_teu"] += teu * share
        o["visible_slots"] += slots * share
        if observed is not None:
            o["visible_teu_counter"] += teu * float(observed[m].mean())
        if shadow is not None:
            o["shadow_teu"] += teu * float((v & shadow[m]).mean())
    return out


def _shade_class(row: dict) -> str | None:
    """'in cloud shadow', 'part shadow' or 'sunlit' for a partly cloudy zone (None otherwise)."""
    if row["condition"] != "partly_cloudy":
        return None
    sh = row["cloud_shadow_share"]
    return "in cloud shadow" if sh >= 0.5 else ("sunlit" if sh < SUNLIT_MAX else "part shadow")


def run_yards(seeds, png: Path | None, conditions=None) -> list[dict]:
    out = []
    for seed in seeds:
        for k, (cond, gsd) in enumerate(YARD_CASES):
            if conditions and cond not in conditions:
                continue
            sc = make_yard(seed * 10 + k, gsd=gsd, condition=cond)
            t = _cpu()
            res = count_containers(sc.image, sc.zones, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                                   sun_elevation_deg=sc.sun_elevation_deg)
            cpu = _cpu() - t
            obs = observed_mask(sc.image, valid=sc.valid, sun_azimuth_deg=sc.sun_azimuth_deg,
                                sun_elevation_deg=sc.sun_elevation_deg) if sc.valid is not None else None
            vis = visible_truth(sc, obs)
            for row, pf in zip(score_yard(sc, res, obs), res.per_feature):
                # The reference is the TEU the image shows (not the counter's own mask);
                # the counter-relative score stays as a second column.
                tr = sc.truth[row["zone"]]
                v = vis[row["zone"]]
                est_slots = row["est_ground_slots"]
                row.update(visible_teu_counter=row["visible_teu"], teu_error_counter=row["teu_error"],
                           visible_teu=round(v["visible_teu"], 1),
                           teu_error=abs(row["est_teu"] - v["visible_teu"]) / max(v["visible_teu"], 1.0),
                           visible_slots=round(v["visible_slots"], 1),
                           ground_error=abs(est_slots - v["visible_slots"]) / max(v["visible_slots"], 1.0),
                           masked_share=(max(0.0, 1.0 - v["visible_teu_counter"] / v["visible_teu"])
                                         if v["visible_teu"] >= 1.0 else 0.0),
                           cloud_shadow_share=v["shadow_teu"] / v["visible_teu"] if v["visible_teu"] >= 1.0 else 0.0)
                row["shade_class"] = _shade_class({**row, "condition": cond})
                # Box sizes: the share of TEU in 20 ft boxes (robust to a partly seen zone)
                # and the box counts against the zone's (visible) truth.
                est20, est40 = (float(pf.get("by_type", {}).get(k, 0.0)) for k in ("20ft", "40ft"))
                seen = row["visible_teu"] / max(tr.teu, 1)
                # Reported one-sigma uncertainties against the errors: does the interval
                # cover the truth about as often as it says (68 % within 1 sigma)?
                sd = float(pf.get("uncertainty", 0.0))
                sd20, sd40 = (float(pf.get("by_type_uncertainty", {}).get(k, 0.0)) for k in ("20ft", "40ft"))
                row.update(uncertainty=sd, z_teu=(row["est_teu"] - row["visible_teu"]) / max(sd, 1e-6),
                           z_20ft=(est20 - tr.n20 * seen) / max(sd20, 1e-6),
                           z_40ft=(est40 - tr.n40 * seen) / max(sd40, 1e-6))
                row.update(est_20ft=est20, est_40ft=est40, truth_share_20ft=round(tr.n20 / max(tr.teu, 1), 3),
                           est_share_20ft=round(est20 / row["est_teu"], 3) if row["est_teu"] else None,
                           boxes_error=(abs(est20 - tr.n20 * seen) + abs(est40 - tr.n40 * seen))
                           / max((tr.n20 + tr.n40) * seen, 1.0))
                row.update(_tarp_precision(sc, res, row["zone"]))
                row.update(seed=seed * 10 + k, condition=cond, gsd=gsd, sun_el=round(sc.sun_elevation_deg, 1),
                           sun_az=round(sc.sun_azimuth_deg, 1), cpu_s=round(cpu, 2))
                out.append(row)
                cloud = (f" [counter-rel {row['visible_teu_counter']:6.1f} err {row['teu_error_counter']:5.1%}, masked "
                         f"{row['masked_share']:4.0%}, cloud shadow {row['cloud_shadow_share']:4.0%}]"
                         if cond == "partly_cloudy" else "")
                print(f"  yard {cond:13s} gsd {gsd:.1f} seed {row['seed']:5d} el {row['sun_el']:4.1f} {row['zone']}: "
                      f"TEU truth {row['visible_teu']:6.1f} est {row['est_teu']:6.1f} err {row['teu_error']:5.1%}{cloud} | "
                      f"slots {row['visible_slots']:6.1f}/{row['est_ground_slots']:6.1f} | tiers "
                      f"{row['truth_tiers']:.2f}/{row['est_tiers']} | tarps {row['truth_tarped']}/"
                      f"{row['est_tarped']} found {row['tarped_found']} | 20ft {tr.n20 * seen:5.0f}/{est20:5.0f} "
                      f"40ft {tr.n40 * seen:5.0f}/{est40:5.0f}", flush=True)
                if png is not None and row["teu_error"] > 0.15:
                    _png(sc.image.values, png / f"yard_{row['seed']}_{cond}_{row['zone']}.png")
    return out


# A flagged tarp patch is right when its centroid lies on a tarped stack's footprint,
# grown by this much (m) for the blur and the patch's shape (two stacks under one cover).
TARP_TOL_M = 1.0


def _tarp_precision(sc, res, zid: str) -> dict:
    """Flagged tarp patches of a zone (``tarp_patches`` of its detections) checked on the
    truth: on a tarped stack (right), on an untarped box (paint read as cloth), or on
    neither (pavement, a reach stacker); and the zone's tarped stacks with a patch on them."""
    from shapely.geometry import Point

    pts = [Point(p[0], p[1]) for d in res.detections if d.feature_id == zid for p in d.attrs.get("tarp_patches", [])]
    tarped = [s.polygon.buffer(TARP_TOL_M) for s in sc.stacks if s.tarped]
    boxes = [s.polygon.buffer(TARP_TOL_M) for s in sc.stacks if not s.tarped]
    right = [any(t.contains(q) for t in tarped) for q in pts]
    on_box = [not r and any(b.contains(q) for b in boxes) for q, r in zip(pts, right)]
    hit = sum(1 for s in sc.stacks if s.zone == zid and s.tarped
              and any(s.polygon.buffer(TARP_TOL_M).contains(q) for q in pts))
    return {"tarp_patches": len(pts), "tarp_patches_right": int(sum(right)),
            "tarp_patches_on_boxes": int(sum(on_box)), "tarped_stacks_hit": hit}


def run_ships(seeds, png: Path | None) -> tuple[list[dict], list[dict]]:
    vhr, sar = [], []
    for seed in seeds:
        h = make_harbour(seed)
        for k, (cond, gsd) in enumerate(VHR_CASES):
            img, valid, truth, berths, water, az, el = render_vhr(h, seed * 10 + k, gsd=gsd, condition=cond)
            if valid is not None:
                # Truth is what the image shows: hulls mostly under thick cloud are not counted.
                from tests.altgen.container_yard import rfeatures_mask
                from changedet.grid import GridSpec

                g = GridSpec.of(img)
                v = np.asarray(valid.values)
                truth = tuple(s for s in truth if v[rfeatures_mask(s.polygon, g)].mean() >= 0.5)
            t = _cpu()
            try:
                res = count_ships(img, berths, water=water, valid=valid)
            except ChangedetError as e:
                # A counter that refuses the scene found nothing in it: scored as such.
                print(f"  VHR {cond:13s} gsd {gsd:.1f} harbour {seed}: REFUSED {type(e).__name__}: {e}", flush=True)
                vhr.append({"seed": seed, "condition": cond, "gsd": gsd, "truth": len(truth), "detected": 0,
                            "tp": 0, "f1": 0.0, "refused": f"{type(e).__name__}: {e}"})
                continue
            cpu = _cpu() - t
            sc = score_ships(truth, res, rule="iou", min_iou=0.5)
            sc.update(seed=seed, condition=cond, gsd=gsd, sun_el=round(el, 1), cpu_s=round(cpu, 2))
            vhr.append(sc)
            print(f"  VHR {cond:13s} gsd {gsd:.1f} harbour {seed}: truth {sc['truth']:2d} det {sc['detected']:2d} "
                  f"TP {sc['tp']:2d} F1 {sc['f1']:.2f} len {sc['length_err_median']} head "
                  f"{sc['heading_err_median_deg']} state {sc['state_accuracy']} misses {sc['misses']} "
                  f"false {sc['false'][:6]}", flush=True)
            if png is not None and sc["f1"] < 0.9:
                _png(img.values, png / f"vhr_{seed}_{cond}_{gsd}.png")
        for k, wind in enumerate(SAR_WINDS):
            img, truth, berths, water = render_sar(h, seed * 10 + k, wind=wind)
            t = _cpu()
            res = count_ships(img, berths, water=water)
            cpu = _cpu() - t
            sc = score_ships(truth, res, rule="centre", tol_m=10.0)
            raw = score_ships(truth, detect_vessels_sar(img, water=water, berths=berths), rule="centre", tol_m=10.0)
            sc.update(seed=seed, condition=wind, gsd=10.0, cpu_s=round(cpu, 2), f1_without_sidelobe_filter=raw["f1"],
                      detected_without_sidelobe_filter=raw["detected"])
            sar.append(sc)
            print(f"  SAR {wind:13s} harbour {seed}: truth {sc['truth']:2d} det {sc['detected']:3d} TP {sc['tp']:2d} "
                  f"F1 {sc['f1']:.2f} len {sc['length_err_median']} head {sc['heading_err_median_deg']} "
                  f"state {sc['state_accuracy']} (unfiltered: det {raw['detected']} F1 {raw['f1']:.2f}) misses {sc['misses']}",
                  flush=True)
            if png is not None and sc["f1"] < 0.9:
                _png(img.values, png / f"sar_{seed}_{wind}.png")
    return vhr, sar


def _agg(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _breakdown(yards: list[dict]) -> dict:
    """Signed TEU, slot and tier errors per condition and per condition and GSD (zone means), printed."""
    for r in yards:
        # The visible share of each stack's slots (as the main column scores them).
        slots_truth = r.get("visible_slots", r["truth_ground_teu"])
        r["teu_signed"] = (r["est_teu"] - r["visible_teu"]) / max(r["visible_teu"], 1.0)
        r["slots_signed"] = (r["est_ground_slots"] - slots_truth) / max(slots_truth, 1.0)
        r["tiers_signed"] = ((r["est_tiers"] - r["truth_tiers"]) / r["truth_tiers"]
                             if r["est_tiers"] is not None else None)
    out = {}
    print("\ncontainers breakdown (zone means, signed: + over)   zones  TEU bias  |TEU|   slots bias  |slots|"
          "  tiers bias  |tiers|")
    conds = sorted({r["condition"] for r in yards})
    # Per GSD only for the conditions rendered at more than one.
    keys = [(c, None) for c in conds] + sorted({(r["condition"], r["gsd"]) for r in yards
                                                if len({q["gsd"] for q in yards if q["condition"] == r["condition"]}) > 1})
    for cond, gsd in keys + [("all", None)]:
        rs = [r for r in yards if cond in ("all", r["condition"]) and gsd in (None, r["gsd"])]
        row = {"zones": len(rs)}
        for k in ("teu", "slots", "tiers"):
            v = np.array([r[f"{k}_signed"] for r in rs if r[f"{k}_signed"] is not None], float)
            row[f"{k}_bias"] = float(v.mean()) if v.size else None
            row[f"{k}_abs"] = float(np.abs(v).mean()) if v.size else None
        name = cond if gsd is None else f"{cond} gsd {gsd:.1f}"
        out[name] = row
        f = (lambda v, sign="+": format(v, sign + "8.1%") if v is not None else "     -  ")
        print(f"  {name:48s} {row['zones']:5d}  {f(row['teu_bias'])} {f(row['teu_abs'], '')}   "
              f"{f(row['slots_bias'])} {f(row['slots_abs'], '')}   {f(row['tiers_bias'])} {f(row['tiers_abs'], '')}")
    return out


def _cloud_table(yards: list[dict], summary: dict) -> None:
    """TEU error against the image's TEU and against the counter's own mask, the share of
    the visible TEU the counter masks, and the zones it masks whole, for every condition
    and for partly cloudy zones by their share in a cloud's shadow; printed."""
    print(f"\ncontainers, TEU error two ways   zones  vs image  vs counter's mask  masked share  "
          f"masked whole (zones, visible TEU)  TEU bias")
    groups = [(c, lambda r, c=c: r["condition"] == c) for c in sorted({r["condition"] for r in yards})]
    groups += [(f"partly_cloudy {k}", lambda r, k=k: r.get("shade_class") == k)
               for k in ("sunlit", "part shadow", "in cloud shadow")]
    groups += [("all", lambda r: True)]
    out = {}
    for name, sel in groups:
        rs = [r for r in yards if sel(r)]
        if not rs:
            continue
        whole = [r for r in rs if r["masked_share"] >= FULLY_MASKED and r["visible_teu"] >= 1.0]
        s = {"zones": len(rs), "teu_error_mean": float(np.mean([r["teu_error"] for r in rs])),
             "teu_error_counter_mean": float(np.mean([r["teu_error_counter"] for r in rs])),
             "masked_share_mean": float(np.mean([r["masked_share"] for r in rs])),
             "masked_whole_zones": len(whole), "masked_whole_visible_teu": float(sum(r["visible_teu"] for r in whole)),
             "teu_bias": float(np.mean([(r["est_teu"] - r["visible_teu"]) / max(r["visible_teu"], 1.0) for r in rs]))}
        out[name] = s
        print(f"  {name:30s} {s['zones']:5d}  {s['teu_error_mean']:8.1%}  {s['teu_error_counter_mean']:16.1%}  "
              f"{s['masked_share_mean']:12.1%}  {s['masked_whole_zones']:5d} {s['masked_whole_visible_teu']:8.0f}"
              f"{'':21s}{s['teu_bias']:+8.1%}")
    summary["containers_cloud"] = out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yard-seeds", type=int, nargs="*", default=[101, 102],
                    help="container yard seeds; give the option with no value to skip the yards")
    ap.add_argument("--harbour-seeds", type=int, nargs="*", default=[201, 202, 203],
                    help="harbour seeds (ships); give the option with no value to skip the ships")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/altgen_port.json")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--conditions", nargs="+", default=None,
                    help="yard conditions to render (clear, hazy, low_sun, partly_cloudy); default all")
    args = ap.parse_args()
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.time(), _cpu()
    yards = run_yards(args.yard_seeds, args.png, args.conditions)
    vhr, sar = run_ships(args.harbour_seeds, args.png)
    summary = {"containers": {}, "ships_vhr": {}, "ships_sar": {}}
    print("\ncontainers (per zone)      zones  TEU err mean  max   <=10%   slots err  |tiers err|  tarps found/truth"
          "  |20ft share err|  boxes err  truth within 1 / 2 sigma: TEU  20ft  40ft")
    for cond in sorted({r["condition"] for r in yards}) + (["all"] if yards else []):
        rs = [r for r in yards if cond in ("all", r["condition"])]
        te = [r["teu_error"] for r in rs]
        tiers = [abs(r["est_tiers"] - r["truth_tiers"]) for r in rs if r["est_tiers"] is not None]
        s = {"zones": len(rs), "teu_error_mean": float(np.mean(te)), "teu_error_max": float(np.max(te)),
             "share_within_10pct": float(np.mean([e <= 0.10 for e in te])),
             "ground_error_mean": _agg(rs, "ground_error"), "tiers_abs_error_mean": float(np.mean(tiers)),
             "tarps_truth": int(sum(r["truth_tarped"] for r in rs)),
             "tarps_found": int(sum(r["tarped_found"] for r in rs)),
             "tarps_flagged": int(sum(r["est_tarped"] for r in rs)),
             "share_20ft_abs_error_mean": float(np.mean([abs(r["est_share_20ft"] - r["truth_share_20ft"])
                                                         for r in rs if r["est_share_20ft"] is not None])),
             "boxes_error_mean": float(np.mean([r["boxes_error"] for r in rs])),
             "teu_error_counter_mean": float(np.mean([r["teu_error_counter"] for r in rs]))}
        for k in ("teu", "20ft", "40ft"):
            z = np.abs([r[f"z_{k}"] for r in rs])
            s[f"within_1sd_{k}"], s[f"within_2sd_{k}"] = float(np.mean(z <= 1.0)), float(np.mean(z <= 2.0))
        summary["containers"][cond] = s
        print(f"  {cond:24s} {s['zones']:5d}  {s['teu_error_mean']:11.1%} {s['teu_error_max']:6.1%} "
              f"{s['share_within_10pct']:6.0%}   {s['ground_error_mean']:8.1%}   {s['tiers_abs_error_mean']:9.2f}"
              f"   {s['tarps_found']}/{s['tarps_truth']} (flagged {s['tarps_flagged']})"
              f"   {s['share_20ft_abs_error_mean']:8.2f}   {s['boxes_error_mean']:8.1%}  "
              + "  ".join(f"{s[f'within_1sd_{k}']:3.0%}/{s[f'within_2sd_{k}']:3.0%}" for k in ("teu", "20ft", "40ft")))
    if yards:
        _cloud_table(yards, summary)
    if yards:
        print("\ntarp flags (patches)       zones  flagged  right  on boxes  elsewhere  precision  "
              "tarped stacks with a patch / truth")
        for cond in sorted({r["condition"] for r in yards}) + ["all"]:
            rs = [r for r in yards if cond in ("all", r["condition"])]
            n, ok, box, hit, truth = (sum(r[k] for r in rs) for k in ("tarp_patches", "tarp_patches_right",
                                                                        "tarp_patches_on_boxes", "tarped_stacks_hit",
                                                                        "truth_tarped"))
            prec = ok / n if n else None
            summary["containers"][cond].update(tarp_patches=n, tarp_patches_right=ok, tarp_patches_on_boxes=box,
                                               tarp_precision=prec, tarped_stacks_hit=hit)
            print(f"  {cond:24s} {len(rs):5d}  {n:7d}  {ok:5d}  {box:8d}  {n - ok - box:9d}  "
                  f"{format(prec, '9.0%') if prec is not None else '        -'}  {hit}/{truth}")
    for name, rows, rule in (("ships_vhr", vhr, "IoU>=0.5"), ("ships_sar", sar, "centre in hull+1px")):
        if not rows:
            continue
        print(f"\n{name} ({rule})       scenes truth det  TP   P     R     F1   len err  head err  state acc")
        for cond in sorted({r["condition"] for r in rows}, key=str) + ["all"]:
            rs = [r for r in rows if cond in ("all", r["condition"])]
            t, d, tp = (sum(r[k] for r in rs) for k in ("truth", "detected", "tp"))
            p = tp / d if d else 1.0
            rc = tp / t if t else 1.0
            f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
            s = {"scenes": len(rs), "truth": t, "detected": d, "tp": tp, "precision": p, "recall": rc, "f1": f1,
                 "length_err_median": _agg(rs, "length_err_median"),
                 "heading_err_median_deg": _agg(rs, "heading_err_median_deg"),
                 "state_accuracy": _agg(rs, "state_accuracy")}
            summary[name][cond] = s
            fmt = (lambda v, f: format(v, f) if v is not None else "  -  ")
            print(f"  {cond:24s} {len(rs):4d} {t:5d} {d:4d} {tp:4d} {p:5.2f} {rc:5.2f} {f1:5.2f} "
                  f"{fmt(s['length_err_median'], '7.1%')}  {fmt(s['heading_err_median_deg'], '6.1f')}   "
                  f"{fmt(s['state_accuracy'], '.2f')}")
    if yards:
        summary["containers_breakdown"] = _breakdown(yards)
    wall, cpu = time.time() - t0, _cpu() - c0
    print(f"\nwall {wall:.0f} s, CPU {cpu:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "yards": yards, "vhr": vhr, "sar": sar,
                                    "wall_s": wall, "cpu_s": cpu}, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
