"""Unsupervised change accuracy on real labelled imagery (floors = measured minus a margin).

OSCD (Daudt et al. 2018), 5 labelled cities, labels 1 = no change / 2 = change, and the
Landsat Taizhou pair with its change / no-change sample masks. Nothing is fitted to the
labels: each method runs with its automatic threshold. Measured on 2026-12-01 with
bench/oscd_eval.py (pooled over the cities): diff + Kittler-Illingworth F1 0.259,
z-score + k*MAD 0.217; Taizhou IR-MAD + chi2 F1 0.871. The full table for every method
is printed by ``python bench/oscd_eval.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from changedet.change import change_score, finish_change, score_masks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import oscd_eval  # noqa: E402


@pytest.fixture(scope="module")
def root(test_data):
    test_data("oscd_sentinel2/README.txt")
    test_data("landsat_taizhou/Taizhou/change.bmp")
    return test_data("oscd_sentinel2/README.txt").parents[1]


def test_oscd_pooled_f1_floor(root):
    pooled = {}
    per_city = {}
    for city in oscd_eval.CITIES:
        before, after, truth = oscd_eval.oscd_city(root, city)
        assert before.shape[0] == len(oscd_eval.OSCD_BANDS)
        assert 0.002 < truth.mean() < 0.1  # labels read as 2 = change, not 0/1
        for method in ("diff", "zscore"):
            mag, extras = change_score(before, after, method)
            res = finish_change(mag, extras, method=method)
            # Nodata is never change, and the mask is a cleaned subset of the threshold.
            assert not np.any(res.mask.values & ~np.isfinite(mag.values))
            s = score_masks(res.mask.values, truth)
            per_city[(city, method)] = s["f1"]
            acc = pooled.setdefault(method, np.zeros(3, int))
            acc += [s["tp"], s["fp"], s["fn"]]
    f1 = {}
    for method, (tp, fp, fn) in pooled.items():
        p, r = tp / (tp + fp), tp / (tp + fn)
        f1[method] = 2 * p * r / (p + r)
    assert f1["diff"] >= 0.22, (f1, per_city)
    assert f1["zscore"] >= 0.18, (f1, per_city)
    # Every city gets some real change right (no city collapses to an empty or full mask).
    assert min(per_city[(c, "zscore")] for c in oscd_eval.CITIES) >= 0.05, per_city


def test_taizhou_irmad_sample_masks(root):
    before, after, truth, valid = oscd_eval.taizhou(root)
    mag, extras = change_score(before, after, "irmad")
    res = finish_change(mag, extras, method="irmad")
    assert res.threshold_method == "chi2" and extras["dof"] == 6
    s = score_masks(res.mask.values, truth, valid)
    assert s["f1"] >= 0.80, s
    assert s["precision"] >= 0.90, s
