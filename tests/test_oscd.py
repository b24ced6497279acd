"""Unsupervised change accuracy on real labelled imagery (floors = measured minus a margin).

OSCD (Daudt et al. 2018), 5 labelled cities, labels 1 = no change / 2 = change, and the
Landsat Taizhou pair with its change / no-change sample masks. Nothing is fitted to the
labels: each method runs with its automatic threshold. Measured on 2026-12-01 with
``python bench/oscd_eval.py`` (pooled over the cities, docs/oscd.md): IR-MAD on the four
10 m bands averaged over 3x3 pixels + Kittler-Illingworth on log1p(chi2) F1 0.361, and
0.411 with clouds and cloud shadows masked (the best); on the ten 10/20 m bands,
unsmoothed, diff + KI 0.259, z-score + k*MAD 0.217; Taizhou IR-MAD + chi2 F1 0.845.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from changedet.change import change_score, clouds_and_shadows, finish_change, load_pair, score_masks
from changedet.cloudmask import S2CLOUDLESS_BANDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import oscd_eval  # noqa: E402


def _chi2_median(dof: int) -> float:
    from scipy.special import gammainccinv

    return float(2.0 * gammainccinv(0.5 * dof, 0.5))


@pytest.fixture(scope="module")
def root(test_data):
    test_data("oscd_sentinel2/README.txt")
    test_data("landsat_taizhou/Taizhou/change.bmp")
    return test_data("oscd_sentinel2/README.txt").parents[1]


@pytest.fixture(scope="module")
def cities(root):
    """Per city: (truth, {run: (magnitude, extras)}) for diff and zscore on the 10/20 m
    bands and irmad on the 10 m bands averaged over 3x3 pixels (the best setting);
    Bercy also gets plain irmad on the 10/20 m bands."""
    out = {}
    for city in oscd_eval.CITIES:
        before, after, truth = oscd_eval.oscd_city(root, city)
        assert before.shape[0] == len(oscd_eval.OSCD_BANDS)
        assert 0.002 < truth.mean() < 0.1  # labels read as 2 = change, not 0/1
        scores = {}
        for method in ("diff", "zscore"):
            mag, extras = change_score(before, after, method)
            scores[method] = (mag.compute(), extras)
        b10, a10 = (x.sel(band=list(oscd_eval.OSCD_10M)) for x in (before, after))
        mag, extras = change_score(b10, a10, "irmad", smooth=3)
        scores["irmad10"] = (mag.compute(), extras)
        if city == "bercy":
            mag, extras = change_score(before, after, "irmad")
            scores["irmad"] = (mag.compute(), extras)
        out[city] = (truth, scores)
    return out


def test_irmad_chi2_follows_chi2_on_oscd(cities):
    """A calibrated IR-MAD gives no-change pixels chi2 ~ chi2(bands).

    Before the fix the reweighting collapsed onto a few thousand pixels: on Bercy's ten
    10/20 m bands the median chi2 was 1671 (chi2(10) median 9.34) and the 1 % test flagged
    almost every pixel. The calibration is re-estimated from the data, so it also holds
    after the 3x3 averaging.
    """
    checks = [(city, "irmad10", 0.85, 1.2) for city in cities] + [("bercy", "irmad", 0.8, 1.35)]
    for city, run, lo, hi in checks:
        truth, scores = cities[city]
        mag, extras = scores[run]
        dof = extras["dof"]
        assert dof == (4 if run == "irmad10" else 10)
        med = float(np.nanmedian(mag.values[~truth]))
        # Urban no-change is heavier-tailed than Gaussian; the median stays near chi2(p)'s.
        assert lo * _chi2_median(dof) < med < hi * _chi2_median(dof), (city, run, med, _chi2_median(dof))
        flagged = float(np.nanmean(extras["p_nochange"].values < 0.01))
        assert flagged < 0.3, (city, run, flagged)


def test_oscd_pooled_f1_floor(cities):
    runs = {"diff": ("diff", "diff", None), "zscore": ("zscore", "zscore", None),
            "irmad10_kilog": ("irmad10", "irmad", "kilog")}
    pooled = {}
    per_city = {}
    for city, (truth, scores) in cities.items():
        for name, (key, method, thr) in runs.items():
            mag, extras = scores[key]
            res = finish_change(mag, extras, method=method, threshold=thr)
            # Nodata is never change, and the mask is a cleaned subset of the threshold.
            assert not np.any(res.mask.values & ~np.isfinite(mag.values))
            s = score_masks(res.mask.values, truth)
            per_city[(city, name)] = s["f1"]
            acc = pooled.setdefault(name, np.zeros(3, int))
            acc += [s["tp"], s["fp"], s["fn"]]
    f1 = {}
    for name, (tp, fp, fn) in pooled.items():
        p, r = tp / (tp + fp), tp / (tp + fn)
        f1[name] = 2 * p * r / (p + r)
    assert f1["irmad10_kilog"] >= 0.34, (f1, per_city)
    assert f1["diff"] >= 0.24, (f1, per_city)
    assert f1["zscore"] >= 0.20, (f1, per_city)
    assert f1["irmad10_kilog"] > f1["diff"], f1
    # Every city gets some real change right (no city collapses to an empty or full mask).
    for name in runs:
        assert min(per_city[(c, name)] for c in oscd_eval.CITIES) >= 0.05, per_city


@pytest.fixture(scope="module")
def paris_clouds(root):
    """Paris, the one OSCD pair with clouds (7 Nov 2017: two cumulus and their shadows):
    per date (bands, cloud, shadow). s2cloudless is the slow part (seconds per date)."""
    base = root / "oscd_sentinel2" / "images" / "paris"
    dates = oscd_eval.oscd_dates(root, "paris")
    imgs = load_pair(base / "imgs_1", base / "imgs_2", bands=list(S2CLOUDLESS_BANDS))
    out = []
    for img, day in zip(imgs, dates):
        cloud, shadow = clouds_and_shadows(img, date=day)
        out.append((img, cloud.values, shadow.values))
    return out


def test_paris_clouds_and_shadows_found(paris_clouds):
    (img1, cloud1, shadow1), (img2, cloud2, shadow2) = paris_clouds
    # 30 Nov 2016 is cloud-free but hazy at a low sun: plain s2cloudless (0.4) flags
    # ~9 % of the roofs there, and none of it reaches the seed probability.
    assert (cloud1 | shadow1).mean() < 0.01, (cloud1.mean(), shadow1.mean())
    assert 0.01 < cloud2.mean() < 0.06, cloud2.mean()
    assert 0.005 < shadow2.mean() < 0.05, shadow2.mean()
    assert not (cloud2 & shadow2).any()
    # Shadows are dark and north of their clouds (the sun stands in the south-south-east).
    # NIR, not blue: top-of-atmosphere blue is mostly haze, which the shadow does not dim
    # (median ratios 0.89 blue, 0.64 red, 0.41 NIR).
    nir = img2.sel(band="B08").values
    assert np.median(nir[shadow2]) < 0.6 * np.median(nir[~(cloud2 | shadow2)])
    assert np.nonzero(shadow2)[0].mean() < np.nonzero(cloud2)[0].mean()


def test_cloud_mask_lifts_paris_and_the_pooled_f1(root, cities, paris_clouds):
    """Paris's false alarms were mostly the clouds and their shadows (F1 0.09).

    The bench masks clouds in all five cities (pooled F1 0.411). Here s2cloudless runs on
    Paris only, to keep the test short; the other four cities, where the bench finds no
    cloud seed or at most 0.3 % of the pixels, are scored unmasked (measured 0.409).
    """
    (_, c1, s1), (_, c2, s2) = paris_clouds
    hidden = c1 | s1 | c2 | s2
    before, after, truth = oscd_eval.oscd_city(root, "paris")
    b10, a10 = (x.sel(band=list(oscd_eval.OSCD_10M)) for x in (before, after))
    mag, extras = change_score(b10, a10, "irmad", smooth=3, unobserved=hidden)
    res = finish_change(mag.compute(), extras, method="irmad", threshold="kilog")
    assert not res.mask.values[hidden].any()
    masked = score_masks(res.mask.values, truth)
    plain_mag, plain_extras = cities["paris"][1]["irmad10"]
    plain = score_masks(finish_change(plain_mag, plain_extras, method="irmad", threshold="kilog").mask.values, truth)
    assert masked["f1"] >= 0.28 and plain["f1"] < 0.15, (masked, plain)
    # Change under a cloud or shadow is lost by design (18 of Paris's 458 changed pixels).
    assert masked["recall"] >= 0.5, (masked, plain)
    tp, fp, fn = masked["tp"], masked["fp"], masked["fn"]
    for city in ("bercy", "bordeaux", "nantes", "rennes"):
        t, scores = cities[city]
        m, e = scores["irmad10"]
        s = score_masks(finish_change(m, e, method="irmad", threshold="kilog").mask.values, t)
        tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
    p, r = tp / (tp + fp), tp / (tp + fn)
    f1 = 2 * p * r / (p + r)
    assert f1 >= 0.39, (f1, p, r)


def test_oracle_f1_is_the_best_threshold():
    mag = np.array([0.1, 0.9, 0.8, 0.2, 0.7, np.nan])
    truth = np.array([False, True, True, False, False, True])
    # Best split: flag {0.9, 0.8} -> tp 2, fp 0, fn 0 among the finite pixels.
    assert oscd_eval.oracle_f1(mag, truth) == pytest.approx(1.0)
    assert oscd_eval.oracle_f1(-mag, truth) == pytest.approx(2 * 2 / (5 + 2))  # flag everything
    tied = np.array([1.0, 1.0, 0.0])
    assert oscd_eval.oracle_f1(tied, np.array([True, False, False])) == pytest.approx(2 / 3)


def test_taizhou_irmad_sample_masks(root):
    before, after, truth, valid = oscd_eval.taizhou(root)
    mag, extras = change_score(before, after, "irmad")
    res = finish_change(mag, extras, method="irmad")
    assert res.threshold_method == "chi2" and extras["dof"] == 6
    s = score_masks(res.mask.values, truth, valid)
    assert s["f1"] >= 0.80, s
    assert s["precision"] >= 0.90, s
