"""Railcars, session 17 (issue 6): cutting runs into cars by the block's own pitch.

Trains are made up of blocks of identical cars. On the independent generator's tuning
scenes the length model merged short cars (20-471 mineral hoppers, 10.87 m over
couplers; 15-1443 tank cars, 12.02 m) and split others, because the DP only knew the
catalogue's pitches (13.1-19.1 m) and each cut was judged alone. The counter now reads
the pitch at which a run's colour repeats (:func:`railcars._run_pitch`) and lets the DP
fit it.
"""

from __future__ import annotations

import numpy as np
import pytest

from changedet.objects import railcars as R
from tests.test_railcars_s15 import _yard

STEP = 0.5


def _block_profile(pitch_m: float, n_cars: int, *, step: float = STEP, seed: int = 0,
                   noise: float = 0.004) -> np.ndarray:
    """Centre colour (4 bands, n) of ``n_cars`` identical hoppers at ``pitch_m``: a dark
    1.1 m coupler gap, then a body with brighter hatches every 2.4 m and darker end bays."""
    rng = np.random.default_rng(seed)
    n = int(round(pitch_m * n_cars / step))
    u = np.arange(n) * step
    pos = np.mod(u, pitch_m)
    body = np.full(n, 0.10)
    body[pos < 1.1] = 0.14                         # ballast in the coupler gap
    bay = (pos >= 1.1) & (pos < 2.3) | (pos > pitch_m - 1.2)
    body[bay] = 0.07                               # sloped end bays, shaded
    hatch = (pos >= 2.3) & (pos <= pitch_m - 1.2) & (np.mod(pos - 2.3, 2.4) < 0.8)
    body[hatch] = 0.13
    colour = np.array([0.9, 1.0, 1.1, 1.4])[:, None] * body[None]
    return colour + noise * rng.standard_normal(colour.shape)


@pytest.mark.parametrize("pitch_m", [10.87, 12.02, 14.72, 17.6])
def test_a_block_of_identical_cars_shows_its_pitch(pitch_m):
    pitch = R._run_pitch(_block_profile(pitch_m, 6), STEP)
    assert pitch.shape == (int(round(pitch_m * 6 / STEP)),)
    assert np.all(np.isfinite(pitch))
    assert np.nanmax(np.abs(pitch - pitch_m)) < 0.3, (pitch_m, np.unique(np.round(pitch, 2)))


def test_no_pitch_where_nothing_repeats():
    rng = np.random.default_rng(1)
    # Ten cars of random lengths 12-19 m, each its own colour: no pitch repeats.
    parts = []
    for _ in range(10):
        n = int(rng.uniform(12, 19) / STEP)
        parts.append(np.full((4, n), rng.uniform(0.05, 0.2)) + 0.004 * rng.standard_normal((4, n)))
    assert np.isnan(R._run_pitch(np.concatenate(parts, axis=1), STEP)).all()
    # Too short a run (under 2.4 shortest pitches): no pitch either.
    assert np.isnan(R._run_pitch(_block_profile(10.87, 2), STEP)).all()
    # A featureless run: none.
    assert np.isnan(R._run_pitch(np.full((4, 300), 0.1), STEP)).all()


def _gap_evidence(pitch_m: float, n_cars: int, strength: float, step: float = STEP) -> np.ndarray:
    """Cut evidence (colour spreads) of a run: ``strength`` at each true coupler gap."""
    n = int(round(pitch_m * n_cars / step))
    ev = np.zeros(n)
    for c in range(1, n_cars):
        ev[int(round(c * pitch_m / step))] = strength
    return ev


def test_the_runs_own_pitch_cuts_a_block_of_short_hoppers():
    # Seven 20-471 mineral hoppers (10.87 m over couplers), their couplers barely showing
    # (evidence 2 spreads). With the catalogue's pitches alone (13.1 m and up) the DP cuts
    # the 76 m run into six cars; with the run's pitch it cuts at the seven cars' gaps.
    pitch_m, n_cars = 10.87, 7
    ev = _gap_evidence(pitch_m, n_cars, 2.0)
    alone = R._best_cuts(ev, STEP)
    assert len(alone) + 1 < n_cars
    own = np.full(ev.size, pitch_m)
    cuts = R._best_cuts(ev, STEP, run_pitch_m=own)
    truth = [int(round(c * pitch_m / STEP)) for c in range(1, n_cars)]
    assert len(cuts) == len(truth)
    assert all(abs(c - t) <= 1 for c, t in zip(cuts, truth)), (cuts, truth)


def test_no_pitch_read_leaves_the_cuts_as_they_were():
    # Five 14.5 m cars with clear gaps: session 16's DP (no pitch of the run's own) cuts
    # at the four true gaps, 29 samples apart; with no pitch read (None, or NaN
    # everywhere) the cuts must stay exactly those.
    ev = _gap_evidence(14.5, 5, 6.0)
    head = [29, 58, 87, 116]
    assert R._best_cuts(ev, STEP) == head
    assert R._best_cuts(ev, STEP, run_pitch_m=np.full(ev.size, np.nan)) == head
    # And with weak gaps, where the catalogue's lengths decide: no pitch read (NaN) cuts as
    # none passed, into session 16's five cars. (Session 44's block-pitch term picks the
    # mirror image of session 16's cuts, [32, 65, 94, 123] for [28, 57, 87, 120]: both hit
    # one of the six gaps, at an equal length cost but for the repeats.)
    weak = _gap_evidence(10.87, 7, 2.0)
    cuts = R._best_cuts(weak, STEP, run_pitch_m=np.full(weak.size, np.nan))
    assert cuts == R._best_cuts(weak, STEP)
    assert len(cuts) == 4


def _block_yard(colour):
    """Six 14.5 m-pitch boxcars (13.4 m bodies) on the middle track of the s15 test yard."""
    cars = [(15.0 + 14.5 * i, 28.4 + 14.5 * i, 1.6, 4.7, colour, 1.1) for i in range(6)]
    return _yard(50.0, 0.5, cars)


@pytest.mark.parametrize("colour,read", [([0.22, 0.23, 0.24, 0.26], True),     # roof metal
                                         ([0.035, 0.035, 0.04, 0.05], False)])  # black
def test_the_pitch_is_not_read_on_a_run_mostly_darker_than_half_the_lit_ground(monkeypatch, colour, read):
    # A neighbour's train casts its shadow on an empty track with its own pitch: a run
    # mostly darker than half the lit ground (shadow, or black bodies, which the
    # black-car prior already cuts) is cut without a pitch of its own.
    calls = []
    real = R._run_pitch

    def spy(centre, step):
        out = real(centre, step)
        calls.append(out)
        return out
    monkeypatch.setattr(R, "_run_pitch", spy)
    image, tracks = _block_yard(colour)
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=50.0)
    assert bool(calls) is read
    if read:
        assert np.nanmax(np.abs(calls[0] - 14.5)) < 0.5
    assert len([d for d in res.detections if d.feature_id == "T1"]) == 6


def test_a_pitch_array_of_the_wrong_length_is_refused():
    ev = _gap_evidence(14.5, 5, 6.0)
    with pytest.raises(ValueError, match="run_pitch_m"):
        R._best_cuts(ev, STEP, run_pitch_m=np.full(ev.size - 3, 14.5))


# ---- Review RAIL (session 17): repeats inside a car, dense pitch sweep, haze shadows ----

def _ribbed_profile(pitch_m: float, n_cars: int, rib_m: float, *, step: float = STEP,
                    gap: float = -0.05, rib_w: float = 0.8, seed: int = 0) -> np.ndarray:
    """Centre colour (4 bands, n) of ``n_cars`` plain boxcars at ``pitch_m`` whose roofs
    carry a brighter rib every ``rib_m`` (0.8 m wide) from end to end; the coupler gap
    (1.1 m) is ``gap`` (reflectance) off the 0.20 roof."""
    rng = np.random.default_rng(seed)
    n = int(round(pitch_m * n_cars / step))
    u = np.arange(n) * step
    pos = np.mod(u, pitch_m)
    body = np.full(n, 0.20)
    body[np.mod(pos - 1.1, rib_m) < rib_w] = 0.26
    body[pos < 1.1] = 0.20 + gap
    colour = np.array([0.9, 1.0, 1.1, 1.4])[:, None] * body[None]
    return colour + 0.004 * rng.standard_normal(colour.shape)


@pytest.mark.parametrize("step", [0.5, 0.3])
@pytest.mark.parametrize("pitch_m,rib_m", [(16.8, 2.4), (19.1, 2.4), (14.5, 2.4)])
def test_roof_ribs_are_not_read_as_the_pitch(step, pitch_m, rib_m):
    # Ribs every 2.4 m repeat at 12.0 / 14.4 m too (5 and 6 ribs), among car lengths;
    # session 17's first reader took 12.0 m for 16.8 m boxcars. A reading must be the
    # cars' pitch, or none.
    p = R._run_pitch(_ribbed_profile(pitch_m, 8, rib_m, step=step), step)
    fin = np.isfinite(p)
    assert not fin.any() or np.max(np.abs(p[fin] - pitch_m)) < 0.3, np.unique(np.round(p[fin], 1))


def test_ribbed_boxcars_in_a_yard_are_not_cut_at_the_ribs():
    # Six plain boxcars at 16.8 m with roof ribs every 2.4 m (x1.3 brightness), s15 yard,
    # sun 50 deg, 0.5 m pixels: session 16 counts 7, the first pitch reader 8 (it read
    # 12.0 m); the pitch must not add a car.
    pitch_m, rib_m = 16.8, 2.4
    body = pitch_m - 1.1
    cars = [(6.0 + pitch_m * i, 6.0 + pitch_m * i + body, 1.65, 4.7, [0.16, 0.17, 0.18, 0.24], 1.1)
            for i in range(6)]
    image, tracks = _yard(50.0, 0.5, cars)
    X, Y = np.meshgrid(image.x.values, image.y.values)
    ribs = np.zeros(X.shape, bool)
    for c in cars:
        ribs |= (X >= c[0]) & (X <= c[1]) & (np.abs(Y - 12.0) <= 1.65) & (np.mod(X - c[0], rib_m) < 0.8)
    image = image.copy()
    image.values[:, ribs] *= 1.3
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=50.0)
    assert len([d for d in res.detections if d.feature_id == "T1"]) <= 7


@pytest.mark.parametrize("step", [0.5, 0.3])
def test_a_dense_sweep_of_pitches_is_never_misread(step):
    # The hatched hopper profile above at every pitch 10.6-19.9 m (0.1 m apart): a
    # reading off the true pitch by 0.3 m or more is never allowed (the first reader
    # misread 23 of 94 at 0.5 m steps: 14.2 m as 11.9, 16.8 m as 14.4 ...); where hatch
    # multiples rival the pitch, no reading is the answer, but most pitches are read.
    read = []
    for pitch_m in np.round(np.arange(10.6, 20.0, 0.1), 2):
        p = R._run_pitch(_block_profile(pitch_m, 6, step=step), step)
        fin = np.isfinite(p)
        assert not fin.any() or np.max(np.abs(p[fin] - pitch_m)) < 0.3, (pitch_m, np.unique(np.round(p[fin], 1)))
        read.append(fin.mean())
    assert np.mean(read) > 0.7


@pytest.mark.parametrize("step", [0.5, 0.3])
@pytest.mark.parametrize("pitch_m", [10.87, 12.02, 13.1, 15.0])
def test_catalogue_and_short_pitches_are_read_at_both_steps(step, pitch_m):
    p = R._run_pitch(_block_profile(pitch_m, 6, step=step), step)
    assert np.isfinite(p).all()
    assert np.max(np.abs(p - pitch_m)) < 0.3


def _shadow_train_profile(ratio: float, *, lit: float = 0.15, step: float = STEP) -> np.ndarray:
    """An empty track's centre under the shadow of 8 short hoppers (10.87 m pitch) on the
    next track: lit through each 1.1 m coupler gap, 1.5 m penumbra, shadow ``ratio`` x lit."""
    from scipy import ndimage
    rng = np.random.default_rng(0)
    n = int(8 * 10.87 / step)
    u = np.arange(n) * step
    g = np.where(np.mod(u, 10.87) < 1.1, lit, ratio * lit)
    g = ndimage.gaussian_filter1d(g, 1.5 / step)
    return np.array([0.9, 1.0, 1.1, 1.3])[:, None] * g[None] + 0.003 * rng.standard_normal((4, n))


@pytest.mark.parametrize("ratio", [0.35, 0.55, 0.65])
def test_a_hazy_shadow_train_counts_as_shadowed_ground(ratio):
    # In haze or thin overcast skylight lights shadows to over half the lit ground: a
    # fixed half no longer tells a neighbour train's shadow (which repeats at that train's
    # pitch) from a train; the track's own shadowed ground does.
    lit = np.array([0.9, 1.0, 1.1, 1.3]) * 0.15
    prof = _shadow_train_profile(ratio)
    level = R._pitch_dim_level(lit, ratio * lit)
    assert (prof.mean(axis=0) < level).mean() >= R._MAX_PITCH_DIM_SHARE
    # Without a learnt shadow: half the lit ground, as before.
    assert R._pitch_dim_level(lit, None) == pytest.approx(0.5 * lit.mean())
    assert R._pitch_dim_level(lit, np.full(4, np.nan)) == pytest.approx(0.5 * lit.mean())


def test_a_lit_car_body_is_not_taken_for_hazy_shadow():
    # Grey roofs at 0.8 x the lit ground stay above the level with a shadow at 0.65 x.
    lit = np.array([0.9, 1.0, 1.1, 1.3]) * 0.15
    assert 0.8 * lit.mean() > R._pitch_dim_level(lit, 0.65 * lit)


def test_the_counter_guards_the_pitch_with_the_tracks_shadow_level(monkeypatch):
    # _split_cars takes the guard's level from _pitch_dim_level with the learnt shadowed
    # ground: with that level raised above the lit roofs, a lit block's pitch is not read.
    seen, calls = [], []
    real_level, real_pitch = R._pitch_dim_level, R._run_pitch

    def level(lit, shadow):
        seen.append(shadow)
        return real_level(lit, shadow)
    monkeypatch.setattr(R, "_pitch_dim_level", level)
    monkeypatch.setattr(R, "_run_pitch", lambda c, s: calls.append(1) or real_pitch(c, s))
    image, tracks = _block_yard([0.22, 0.23, 0.24, 0.26])
    R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=50.0)
    assert calls and seen and seen[0] is not None and np.all(np.isfinite(seen[0]))
    calls.clear()
    monkeypatch.setattr(R, "_pitch_dim_level", lambda lit, shadow: 10.0 * float(np.mean(lit)))
    R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=50.0)
    assert not calls


def test_post_shadows_across_the_yard_are_not_read_as_the_pitch(monkeypatch):
    # Lamp-post shadows (0.6 m wide, x0.8) every 11 m cross a train of eight plain 16.8 m
    # boxcars and the ground beside it; their repeat outscores the cars' weak gaps, so
    # the first reader took 11 m for the pitch (T1: 9 cars; truth 8). The sun-side ground
    # repeats at 11 m as well, which a train's own look never makes it do.
    pitches = []
    real = R._best_cuts

    def spy(*args, **kw):
        if kw.get("run_pitch_m") is not None:
            pitches.append(np.asarray(kw["run_pitch_m"]))
        return real(*args, **kw)
    monkeypatch.setattr(R, "_best_cuts", spy)
    cars = [(6.0 + 16.8 * i, 6.0 + 16.8 * i + 15.7, 1.65, 4.7, [0.16, 0.17, 0.18, 0.24], 1.1)
            for i in range(8)]
    image, tracks = _yard(50.0, 0.5, cars)
    X = np.meshgrid(image.x.values, image.y.values)[0]
    image = image.copy()
    image.values[:, np.mod(X - 3.0, 11.0) < 0.6] *= 0.8
    R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=50.0)
    for p in pitches:
        assert not np.any(np.abs(p[np.isfinite(p)] - 11.0) < 0.5)


def test_the_ground_beside_a_run_repeating_at_its_pitch_is_told():
    rng = np.random.default_rng(3)
    n = 400                                              # 200 m at 0.5 m
    u = np.arange(n) * STEP
    pitch = np.full(n, 11.0)
    bed = 0.15 + 0.003 * rng.standard_normal((4, n))     # plain ballast: nothing repeats
    assert not R._ground_repeats(bed, pitch, STEP)
    posts = bed * np.where(np.mod(u, 11.0) < 0.6, 0.8, 1.0)[None]
    assert R._ground_repeats(posts, pitch, STEP)
    # At another pitch than the ground's, or with no pitch read: not told.
    assert not R._ground_repeats(posts, np.full(n, 14.5), STEP)
    assert not R._ground_repeats(posts, np.full(n, np.nan), STEP)
