"""Network stack registration (all-pairs matches solved by robust least squares) and the
independent residual check of :mod:`changedet.coreg_check`."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from changedet.coreg import apply_shift, coregister_stack, solve_network
from changedet.coreg_check import pairwise_residuals, window_shifts
from changedet.errors import CoregError
from test_coreg import fractal, grid_at, spline_shift


def test_solve_network_recovers_shifts_despite_noise_and_an_outlier():
    rng = np.random.default_rng(3)
    t = rng.uniform(-2, 2, (6, 2))
    pairs = [(-1, j) for j in range(6)] + [(i, j) for i in range(6) for j in range(i + 1, 6)]
    obs = np.array([t[j] - (0 if i < 0 else t[i]) for i, j in pairs]) + rng.normal(0, 0.05, (len(pairs), 2))
    w = np.ones(len(pairs))
    obs[3] += (4.0, -3.0)  # a wrong match of date 3 against the reference
    w[:6] = 0.3            # the reference matches are the weak ones (other season)
    est, support, kept = solve_network(6, pairs, obs, w)
    assert not kept[3] and kept.sum() >= len(pairs) - 2
    assert np.abs(est - t).max() < 0.08
    # Without the date-to-date matches the outlier date would be off by metres.
    direct, _, _ = solve_network(6, pairs[:6], obs[:6], w[:6])
    assert np.abs(direct[3] - t[3]).max() > 2
    # A date tied to nothing of weight > 0 gets no shift rather than a guess.
    w2 = w.copy()
    w2[[k for k, (i, j) in enumerate(pairs) if 5 in (i, j)]] = 0.0
    est2, support2, _ = solve_network(6, pairs, obs, w2)
    assert np.isnan(est2[5]).all() and support2[5] == 0
    assert np.isfinite(est2[:5]).all()


@pytest.fixture(scope="module")
def seasonal_stack():
    """Five dates of one terrain, shifted; contrast drifts from date to date ("seasons")."""
    grid = grid_at((192, 192))
    base = fractal(192, beta=2.3, seed=5)
    other = fractal(192, beta=2.3, seed=6)
    shifts = [(0.0, 0.0), (0.4, -0.7), (-1.3, 0.5), (0.8, 1.6), (-0.6, -1.1)]
    frames = []
    for k, sh in enumerate(shifts):
        # Content drifts away from the reference season step by step.
        img = (1 - 0.12 * k) * base + 0.12 * k * other
        frames.append(spline_shift(img, sh))
    ref = grid.attach(base[None], bands=["nir"])
    stack = xr.concat([grid.attach(f[None], bands=["nir"]) for f in frames], dim="time")
    return stack.assign_coords(time=np.arange(len(shifts))), ref, shifts


def test_network_stack_matches_known_shifts(seasonal_stack):
    stack, ref, shifts = seasonal_stack
    aligned, results = coregister_stack(stack, ref, network=True, scheduler="synchronous")
    assert aligned.dims == ("time", "band", "y", "x")
    for sh, res in zip(shifts, results):
        assert res.mode == "network" and res.applied, res.reason
        assert res.shift_row_px == pytest.approx(-sh[0], abs=0.05)
        assert res.shift_col_px == pytest.approx(-sh[1], abs=0.05)
        assert res.tie_points >= 4 and res.tie_points_total == 5
    # Applied like apply_shift of the same shift.
    np.testing.assert_allclose(aligned.isel(time=3).values,
                               apply_shift(stack.isel(time=3, drop=True), results[3].shift_row_px,
                                           results[3].shift_col_px).values, atol=1e-5, equal_nan=True)
    with pytest.raises(CoregError, match="local"):
        coregister_stack(stack, ref, network=True, local=True)


def test_window_shifts_is_accurate_on_real_naip_and_filters_bad_windows(test_data):
    from changedet.io import read_raster

    img = read_raster(test_data("naip_timeseries_nd/m_4709963_se_14_1_20140720.tif")).values.astype(float)
    a = img[:2, 100:420, 100:420]
    b = apply_shift(a, 0.37, -0.61)
    sh, ok = window_shifts(a, b, window_px=96, step_px=96)
    assert ok.sum() >= 3
    np.testing.assert_allclose(sh[ok], np.broadcast_to([-0.37, 0.61], sh[ok].shape), atol=0.01)
    # Unrelated content: bands disagree, no window counts as reliable.
    c = img[:2, 400:720, 500:820]
    _, ok2 = window_shifts(a, c, window_px=96, step_px=96)
    assert ok2.sum() == 0
    res = pairwise_residuals(np.stack([a, b]), window_px=96, step_px=96)
    assert len(res) == 1 and res[0].magnitude_px == pytest.approx(np.hypot(0.37, 0.61), abs=0.01)


# -- the precision-weighted Lucas-Kanade pair estimator (coreg_network, estimator="lk") --


@pytest.fixture(scope="module")
def naip_pair(test_data):
    """NIR of two real NAIP years (2017, 2018) on one grid, a 360 px crop: real change between them."""
    from changedet.io import read_raster

    a = read_raster(test_data("naip_timeseries_nd/m_4709963_se_14_1_20170827.tif")).values[3].astype(float)
    b = read_raster(test_data("naip_timeseries_nd/m_4709963_se_14_1_20180716.tif")).values[3].astype(float)
    # Both files have the same origin (485902, 5209248): pixel (r, c) is the same place.
    return a[150:510, 200:560], b[150:510, 200:560]


def test_lk_pair_restarts_remove_the_lean_towards_zero(naip_pair):
    from changedet.coreg_network import pair_shift_lk

    a, b = naip_pair
    base = np.array(pair_shift_lk(a, b, n_boot=0)[:2])
    errs = {}
    for restarts in (0, 6):
        e = []
        for s in ((0.45, 0.0), (0.0, -0.45), (-0.45, 0.3)):
            got = np.array(pair_shift_lk(a, apply_shift(b, *s), restarts=restarts, n_boot=0)[:2])
            # Moving b's content by s adds -s to the shift that brings it onto a.
            e.append(got - (base - np.array(s)))
        errs[restarts] = np.abs(e)
    # One start at 0: windows on changed content stop in the minimum nearest 0, so a
    # known shift comes back short; restarting from the pooled shift removes that lean.
    assert errs[6].max() < 0.04, errs[6]
    assert errs[0].max() > 2 * errs[6].max(), errs


def test_lk_pair_is_exact_on_a_shifted_copy_and_reports_its_error(naip_pair):
    from changedet.coreg_network import pair_shift_lk

    a, _ = naip_pair
    rng = np.random.default_rng(2)
    b = apply_shift(a, 0.37, -0.61) + rng.normal(0, 1.0, a.shape)
    r, c, se, n = pair_shift_lk(a, b)
    assert (r, c) == (pytest.approx(-0.37, abs=0.01), pytest.approx(0.61, abs=0.01))
    assert 0 < se < 0.02 and n >= 200
    # A mask that leaves fewer than 5 blocks: no estimate, not a guess.
    few = np.zeros(a.shape, bool)
    few[:72, :144] = True
    assert np.isnan(pair_shift_lk(a, b, valid=few)[:3]).all()


def test_lk_network_recovers_known_shifts_numpy_equals_dask(seasonal_stack):
    from changedet.coreg_network import network_shifts

    stack, ref, shifts = seasonal_stack
    truth = -np.array(shifts)
    sol = network_shifts(ref.values[0], stack.values[:, 0], estimator="lk")
    np.testing.assert_allclose(sol.shifts, truth, atol=0.03)
    assert sol.kept.sum() >= len(sol.kept) - 2
    # Through the stack API, eager on one thread and lazy on the threaded scheduler.
    a_eager, r_eager = coregister_stack(stack, ref, network="windows", per_band=True, estimator="lk",
                                        scheduler="synchronous")
    a_lazy, r_lazy = coregister_stack(stack.chunk({"time": 1}), ref, network="windows", per_band=True,
                                      estimator="lk", scheduler="threads")
    np.testing.assert_array_equal(a_eager.values, a_lazy.values)
    assert r_eager == r_lazy
    got = np.array([[r["nir"].shift_row_px, r["nir"].shift_col_px] for r in r_eager])
    np.testing.assert_allclose(got, sol.shifts, atol=0.02)
    assert all(r["nir"].applied and r["nir"].mode == "windows" for r in r_eager)


def test_lk_estimator_bad_options_are_refused(seasonal_stack):
    from changedet.coreg_network import network_shifts

    stack, ref, _ = seasonal_stack
    with pytest.raises(CoregError, match="estimator='ncc' is not known"):
        coregister_stack(stack, ref, network="windows", per_band=True, estimator="ncc")
    with pytest.raises(CoregError, match="window_px=4 is too small for estimator='lk'"):
        network_shifts(None, stack.values[:, 0], estimator="lk", window_px=4)
    # A window that fits no 72 px block would make every Lucas-Kanade pair NaN, and pc+lk
    # would quietly fall back to its coarse stage: refused instead.
    with pytest.raises(CoregError, match="window_px=128 is too large for estimator='pc\\+lk'"):
        network_shifts(None, stack.values[:, 0], estimator="pc+lk", window_px=128)


# -- the two-stage estimator (estimator="pc+lk"): phase-correlation reach, Lucas-Kanade precision --

#: Several pixels per date, beyond the ~2 px the Lucas-Kanade windows alone can refine.
BIG_SHIFTS = np.array([(0.0, 0.0), (3.4, -5.7), (-7.3, 4.5), (5.8, 7.6), (-4.6, -3.1)])


@pytest.fixture(scope="module")
def big_shift_stack():
    """Five dates shifted by BIG_SHIFTS, content drifting, noise, and a cloud per date masked in ``valid``."""
    n = 256
    grid = grid_at((n, n))
    base, other = fractal(n, beta=2.3, seed=5), fractal(n, beta=2.3, seed=6)
    rng = np.random.default_rng(1)
    frames, valid = [], np.ones((len(BIG_SHIFTS), n, n), bool)
    for k, sh in enumerate(BIG_SHIFTS):
        img = spline_shift((1 - 0.12 * k) * base + 0.12 * k * other, sh) + rng.normal(0, 5, (n, n))
        if k:
            r0, c0 = rng.integers(20, n - 80, 2)
            img[r0:r0 + 40, c0:c0 + 60] = 3000.0  # a cloud, in the date's own pixels
            valid[k, r0:r0 + 40, c0:c0 + 60] = False
        frames.append(img)
    ref = grid.attach(base[None], bands=["nir"])
    stack = xr.concat([grid.attach(f[None], bands=["nir"]) for f in frames], dim="time")
    stack = stack.assign_coords(time=np.arange(len(frames)))
    vda = xr.DataArray(valid, dims=("time", "y", "x"), coords={"y": stack.y, "x": stack.x}).rio.write_crs(
        stack.rio.crs)
    return stack, ref, valid, vda


def test_pc_lk_recovers_shifts_of_several_pixels_numpy_equals_dask(big_shift_stack):
    from changedet.coreg_network import network_shifts, pair_shift_lk

    stack, ref, valid, vda = big_shift_stack
    truth = -BIG_SHIFTS
    imgs = stack.values[:, 0]
    # Lucas-Kanade alone cannot reach 7 px: no reliable window, or a wrong answer.
    alone = np.array(pair_shift_lk(ref.values[0], imgs[2], n_boot=0)[:2])
    assert not np.all(np.abs(alone - truth[2]) < 0.5), alone
    sol = network_shifts(ref.values[0], imgs, valid=valid, estimator="pc+lk")
    np.testing.assert_allclose(sol.shifts, truth, atol=0.05)
    # The coarse stage did the reach; the refinement is what the fine stage added.
    assert np.abs(sol.coarse_shifts - truth).max() < 0.5
    assert sol.kept.sum() >= len(sol.kept) - 2
    # Pair shifts are reported on the input dates: j onto i is truth[j] - truth[i].
    k = [tuple(p) for p in sol.pairs.tolist()].index((1, 3))
    np.testing.assert_allclose(sol.pair_shifts[k], truth[3] - truth[1], atol=0.05)
    # Through the stack API, eager on one thread and lazy on the threaded scheduler.
    a_eager, r_eager = coregister_stack(stack, ref, network="windows", per_band=True, estimator="pc+lk",
                                        valid=vda, scheduler="synchronous")
    a_lazy, r_lazy = coregister_stack(stack.chunk({"time": 1}), ref, network="windows", per_band=True,
                                      estimator="pc+lk", valid=vda.chunk({"time": 1}), scheduler="threads")
    np.testing.assert_array_equal(a_eager.values, a_lazy.values)
    assert r_eager == r_lazy
    got = np.array([[r["nir"].shift_row_px, r["nir"].shift_col_px] for r in r_eager])
    np.testing.assert_allclose(got, truth, atol=0.05)
    np.testing.assert_allclose(got, sol.shifts, atol=0.02)
    assert all(r["nir"].applied and r["nir"].mode == "windows" for r in r_eager)
    # One resampling from the input by the summed shift.
    np.testing.assert_allclose(a_eager.isel(time=2).values,
                               apply_shift(stack.isel(time=2, drop=True), *got[2]).values, atol=1e-5, equal_nan=True)


def test_pc_lk_keeps_coarse_shifts_the_fine_stage_cannot_refine_and_no_guess_without_them():
    from changedet.coreg_network import NetworkShifts, _coarse_start, _combine

    pairs = np.array([(-1, 0), (-1, 1), (-1, 2), (0, 1), (0, 2), (1, 2)])
    coarse_t = np.array([[0.0, 0.0], [3.2, -4.1], [np.nan, np.nan]])
    coarse = NetworkShifts(coarse_t, np.array([3.0, 3.0, 0.0]), pairs, np.zeros((6, 2)), np.full(6, 0.1),
                           np.ones(6, bool))
    start = _coarse_start(coarse.shifts)
    np.testing.assert_array_equal(start[2], [0.0, 0.0])
    fine_obs = np.array([[0.01, 0.0], [0.05, -0.02], [0.4, 0.3], [0.04, -0.02], [0.39, 0.3], [0.35, 0.32]])
    # Date 1 unlinked by the fine stage (NaN): the coarse shift stays. Date 2 unlinked by the
    # coarse stage: a fine shift "from 0" is not trusted (a 7 px move comes back as ~0).
    fine = NetworkShifts(np.array([[0.01, 0.0], [np.nan, np.nan], [0.4, 0.3]]), np.array([3.0, 0.0, 3.0]), pairs,
                         fine_obs, np.full(6, 0.05), np.ones(6, bool))
    got = _combine(coarse, fine, start)
    np.testing.assert_allclose(got.shifts, [[0.01, 0.0], [3.2, -4.1], [np.nan, np.nan]])
    np.testing.assert_array_equal(got.support, [3.0, 3.0, 0.0])
    # Pair (0, 1) on the input dates: fine measurement plus the coarse start of date 1.
    np.testing.assert_allclose(got.pair_shifts[3], fine_obs[3] + [3.2, -4.1])
    np.testing.assert_allclose(got.coarse_shifts, coarse_t)


# -- masks in the fine stage of "pc+lk": masked content stays out, masks move with their date --


def test_fine_stage_move_keeps_masked_content_out_of_kept_pixels():
    """A bright cloud marked in ``valid`` is resampled with its date into the fine stage:
    its cubic ringing once reached 2-4 px into the pixels the moved mask kept (errors
    336 / 90 / 24 / 6 at 1-4 px for a 3000 cloud on sd-20 content)."""
    from changedet.coreg_network import _moved_date

    rng = np.random.default_rng(0)
    clean = rng.normal(0, 20, (60, 60))
    usable = np.ones((60, 60), bool)
    usable[20:40, 20:40] = False
    for shift in ((0.5, 0.5), (-1.25, 3.6), (2.0, 0.0)):
        moved = []
        for cloud in (3000.0, -3000.0):
            img = clean.copy()
            img[~usable] = cloud
            _, imgs, masks, _ = _moved_date((None, {"b": img}, usable, None), ["b"], {"b": shift})
            moved.append((imgs["b"], masks["b"]))
        (img_a, kept), (img_b, kept_b) = moved
        # Nothing of the masked content reaches the moved date, kept pixels or not.
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(kept, kept_b)
        assert np.nanmax(np.abs(img_a)) < 100.0
        # Kept pixels are those whose every cubic tap was usable (4 per axis, from
        # floor(source) - 1; a whole-pixel shift reads its source pixel only) and whose
        # source lies inside the frame (the edge-padded spline reaches outside it) ...
        expect = np.zeros_like(usable)
        for r, c in np.ndindex(usable.shape):
            taps, inside = [], True
            for x, n in ((r - shift[0], usable.shape[0]), (c - shift[1], usable.shape[1])):
                f = int(np.floor(x))
                inside &= f >= 0 and (f if x == f else f + 1) < n
                taps.append(np.clip(np.arange(f, f + 1) if x == f else np.arange(f - 1, f + 3), 0, n - 1))
            expect[r, c] = inside and usable[np.ix_(*taps)].all()
        np.testing.assert_array_equal(kept, expect)
        # ... so they differ from the cloud-free date moved alike only by the fill's
        # faint spline prefilter tail (about 0.1 sd next to the hole, 0 at whole pixels).
        err = np.abs(img_a - apply_shift(clean, *shift))[kept]
        assert err.max() < 2.5, (shift, err.max())


def test_pc_lk_content_under_the_mask_has_no_influence(big_shift_stack):
    from changedet.coreg_network import network_shifts

    stack, ref, valid, _ = big_shift_stack
    imgs = stack.values[:, 0]
    other = imgs.copy()
    other[~valid] = -500.0  # the same clouds, dark instead of bright
    a = network_shifts(ref.values[0], imgs, valid=valid, estimator="pc+lk")
    b = network_shifts(ref.values[0], other, valid=valid, estimator="pc+lk")
    np.testing.assert_array_equal(a.coarse_shifts, b.coarse_shifts)  # the phase correlation never saw them
    # The fine stage did see them (0.003 px) through the move of each date.
    np.testing.assert_array_equal(a.shifts, b.shifts)
    np.testing.assert_allclose(a.shifts, -BIG_SHIFTS, atol=0.05)


def test_pc_lk_two_dimensional_mask_moves_with_each_date_numpy_equals_dask(seasonal_stack):
    """A (rows, cols) ``valid`` holds on every date's own pixels: the numpy path moves it
    into the fine stage with each date, as the stack API's (time, y, x) mask is moved."""
    from changedet.coreg_network import network_shifts

    stack, ref, shifts = seasonal_stack
    usable = np.ones(stack.shape[-2:], bool)
    usable[70:110, 40:150] = False
    cloudy = stack.copy(data=np.where(usable, stack.values, 3000.0))  # at the same pixels of every date
    sol = network_shifts(ref.values[0], cloudy.values[:, 0], valid=usable, estimator="pc+lk")
    # 0.04 px on the last date: its content drifted most from the reference (0.026 px
    # without the mask), and the mask takes 12 % of the frame.
    np.testing.assert_allclose(sol.shifts, -np.array(shifts), atol=0.05)
    vda = xr.DataArray(np.broadcast_to(usable, (len(shifts),) + usable.shape).copy(), dims=("time", "y", "x"),
                       coords={"y": stack.y, "x": stack.x}).rio.write_crs(stack.rio.crs)
    _, res = coregister_stack(cloudy, ref, network="windows", per_band=True, valid=vda, scheduler="synchronous")
    got = np.array([[r["nir"].shift_row_px, r["nir"].shift_col_px] for r in res])
    np.testing.assert_array_equal(got, sol.shifts)


def test_pc_lk_two_dimensional_mask_still_holds_on_the_reference_in_the_fine_stage(big_shift_stack, monkeypatch):
    """The dates move into the fine stage, the reference does not: a (rows, cols) mask
    must still keep the reference's masked pixels out of its pairs after shifts of
    several pixels (the moved mask alone reached 600-1100 of them)."""
    import changedet.coreg_network as cn

    stack, ref, _, _ = big_shift_stack
    usable = np.ones(stack.shape[-2:], bool)
    usable[60:140, 50:200] = False
    seen = []
    match = cn._match

    def spy(estimator, a, b, m, *args):
        if estimator == "lk" and a is not None and a.shape == usable.shape and np.shares_memory(a, ref_img):
            seen.append(m)
        return match(estimator, a, b, m, *args)

    ref_img = np.asarray(ref.values[0], float)
    monkeypatch.setattr(cn, "_match", spy)
    sol = cn.network_shifts(ref_img, stack.values[:, 0], valid=usable, estimator="pc+lk")
    assert len(seen) == len(BIG_SHIFTS)  # one fine reference pair per date
    for m in seen:
        assert not (m & ~usable).any()
    np.testing.assert_allclose(sol.shifts, -BIG_SHIFTS, atol=0.05)
