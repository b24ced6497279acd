"""The check's own noise (changedet.coreg_check.noise_floor, split_half): what a perfect
registration would measure, and an empirical standard error that sees errors a date's
pairs share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from changedet.coreg import apply_shift
from changedet.coreg_check import AdjustedResiduals, noise_floor, split_half
from changedet.errors import CoregError
from test_coreg import fractal

CELL = 40


def test_noise_floor_matches_the_rayleigh_law():
    # Independent per-date errors sigma per component: every pair difference is a 2-D
    # Gaussian of sigma*sqrt(2) per component, whose length has median
    # sigma*sqrt(2)*sqrt(2 ln 2) (Rayleigh); the max over 45 pairs is larger.
    n, sigma = 10, 0.04
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])
    cov = np.zeros((2, n, n))
    cov[:, 1:, 1:] = sigma ** 2 * (np.eye(n - 1) + 1.0)
    adj = AdjustedResiduals(pairs, None, None, None, np.zeros((n, 2)), math.nan, cov)
    f = noise_floor(adj, draws=4000)
    assert f["median_px"][0] == pytest.approx(sigma * math.sqrt(2) * math.sqrt(2 * math.log(2)), rel=0.05)
    assert 2.2 * sigma * math.sqrt(2) < f["max_px"][0] < 3.2 * sigma * math.sqrt(2)
    assert f["max_px"][1] > f["max_px"][0] > f["median_px"][1] > f["median_px"][0]
    with pytest.raises(CoregError, match="covariance"):
        noise_floor(AdjustedResiduals(pairs, None, None, None, np.zeros((n, 2)), math.nan))


def _stack(split_date_px: float):
    """Three dates of one texture with known shifts; date 2 is displaced by +split in
    even CELL-row blocks and -split in odd ones (an error the halves disagree on)."""
    rng = np.random.default_rng(2)
    base = fractal(320, beta=2.0, seed=21)
    truth = np.array([[0.0, 0.0], [0.2, -0.1], [-0.15, 0.25]])
    frames = []
    for k, t in enumerate(truth):
        img = apply_shift(base, *t)
        if k == 2 and split_date_px:
            even = ((np.arange(320) // CELL) % 2 == 0)[:, None]
            img = np.where(even, apply_shift(base, t[0] + split_date_px, t[1]),
                           apply_shift(base, t[0] - split_date_px, t[1]))
        frames.append(img + rng.normal(0, 5, img.shape))
    return np.stack(frames)[:, None], truth


def test_split_half_recovers_translations_and_sees_a_date_specific_error():
    held_out = np.ones((320, 320), bool)
    arr, truth = _stack(0.0)
    clean = split_half(arr, band=0, mask=held_out, cell_px=CELL, n_boot=30)
    # Per date, relative to date 0: the shift moving date j onto date 0 is -truth[j].
    for h in clean["halves"]:
        np.testing.assert_allclose(h, -(truth - truth[0]), atol=0.02)
    assert max(clean["sigma_date_px"]) < 0.02
    # Date 2 sits at +0.3 px on one half and -0.3 px on the other: the halves differ by
    # 0.6 px on date 2, so 2 of the 3 pair differences are 0.6 px and split_half gives
    # sqrt((2 * 0.6^2 / 3) / 8) = 0.173 px; the bootstrap over windows sees far less.
    arr2, _ = _stack(0.3)
    split = split_half(arr2, band=0, mask=held_out, cell_px=CELL, n_boot=30)
    assert split["sigma_date_px"][0] == pytest.approx(math.sqrt(2 * 0.6 ** 2 / 3 / 8), rel=0.1)
    assert split["sigma_date_px"][0] > 2 * split["sigma_date_bootstrap_px"][0]
    assert split["floor"]["max_px"][0] > 0.2
    with pytest.raises(CoregError, match="mask shape"):
        split_half(arr2, band=0, mask=held_out[:10], cell_px=CELL)
