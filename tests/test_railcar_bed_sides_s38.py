"""Railcars, session 38 (issue 6): empty beds beside darker ground, and busy tracks' beds.

Two causes of false cars on the empty stretches of tracks (altgen tuning slice 190-193:
139 detections on no car, about 93 of them on tracks that also carry cars):

* the yard's lit ground is learnt from every track's side bands, and between tracks of
  clean ballast lying in grass or soil it is the ballast's colour: beside a track whose
  side band is the darker ground (0.6-0.75 of it) no flank ever reads lit, so the track
  is never seen empty and its concrete-sleepered bed reads as pale cars
  (:func:`railcars._own_side_lit`);
* a busy track is seen empty over less than the 20 m a bed is learnt from; where its
  few empty centres match the bed learnt on another track of the image, that bed is
  taken (:func:`railcars._corroborated_bed`).
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import LineString

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
ACROSS = np.arange(-2.5, 2.5 + 1e-9, STEP)
EAST = LineString([(0.0, 0.0), (200.0, 0.0)])
N = 300
GROUND = np.array([0.14, 0.15, 0.16, 0.20])   # the yard's lit ground: clean ballast
# Darker ground beside one track: dry grass in the sun, 0.7 of the ballast's light with
# its own spectrum (redder-green, a red edge in NIR), off the line between the yard's lit
# and shadowed ground (review RRCOUNT: a grey-scaled copy of GROUND is the yard's ground
# keeping 68 % of the light, i.e. shade, and must not be taken).
GRASS = 0.7 * GROUND * np.array([0.8, 1.0, 1.15, 1.3])
SHADOW = 0.3 * GROUND
CONCRETE_BED = 1.35 * GROUND
WOODEN_BED = 0.45 * GROUND


def _refs():
    return {"lit": GROUND.copy(), "lit_sd": 0.08 * GROUND, "shadow": SHADOW.copy(), "shadow_sd": 0.08 * SHADOW}


def _strip(centre: np.ndarray, side: np.ndarray, seed: int = 0) -> Strip:
    """A track running east under a sun from the south: ``centre`` (band, along) over
    |across| <= 1.0 m, ``side`` (band, along) elsewhere; 2 % noise."""
    rng = np.random.default_rng(seed)
    v = np.broadcast_to(side[:, None, :], (4, ACROSS.size, N)).copy()
    v[:, np.abs(ACROSS) <= 1.0, :] = centre[:, None, :]
    v = (v * (1.0 + 0.02 * rng.standard_normal(v.shape))).astype("float32")
    along = np.arange(N) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(v, along, ACROSS, x, y, STEP)


def _per_m(elevation: float = 40.0) -> float:
    return R._shadow_across(EAST, 180.0, elevation)


def _const(colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(colour[:, None], (4, N)).copy()


def test_an_empty_bed_between_darker_ground_is_learnt_and_not_read_as_cars():
    strip = _strip(_const(CONCRETE_BED), _const(GRASS))
    refs = R._with_bed(strip, _refs(), per_m=_per_m())
    # Its flanks are lit grass, about 0.75 of the yard's lit ballast: seen empty all along.
    assert "bed" in refs
    assert np.allclose(refs["bed"], CONCRETE_BED, rtol=0.03)
    kw = dict(min_contrast=3.0, vhr=True, sun_left=False, shadow_across_m=_per_m())
    assert R._occupancy(strip, _refs(), **kw)[0].mean() > 0.9
    assert R._occupancy(strip, refs, **kw)[0].mean() < 0.05


def test_a_side_in_the_cars_shadow_keeps_the_yards_lit_ground():
    # Cars along the whole track: the anti-sun side (left, positive across) is in their
    # shadow all along, which is no side's own lit ground (under 65 % of the light).
    side = _const(GROUND)
    strip = _strip(_const(np.array([0.30, 0.10, 0.05, 0.36])), side)
    strip.values[:, ACROSS >= 1.5, :] = (SHADOW[:, None, None] * np.ones((1, 1, N))).astype("float32")
    flank = R.quiet_nanmean(strip.values[:, ACROSS >= 2.0, :], axis=1).T
    lit, sd = R._own_side_lit(flank, GROUND, 0.08 * GROUND, SHADOW)
    assert np.allclose(lit, GROUND)
    assert not R._flanked_mask(strip, _refs(), _per_m())[1].any()


def _busy_track(bed: np.ndarray) -> Strip:
    """Cars over all but 10 m (20 samples) of the track: a car's top in the centre and
    its shadow over the anti-sun side band; lit ground beside the empty 10 m."""
    centre = _const(np.array([0.30, 0.10, 0.05, 0.36]))
    side = _const(GROUND)
    empty = slice(140, 160)
    centre[:, empty] = bed[:, None]
    strip = _strip(centre, side)
    cars = np.ones(N, bool)
    cars[empty] = False
    shaded = (ACROSS >= 1.5)[:, None] & cars[None, :]
    for band in range(4):
        strip.values[band][shaded] = SHADOW[band]
    return strip


def test_a_busy_track_takes_the_bed_its_few_empty_centres_match():
    strip = _busy_track(CONCRETE_BED)
    # 10 m seen empty: too little to learn a bed from (20 m) ...
    assert "bed" not in R._with_bed(strip, _refs(), per_m=_per_m())
    # ... but enough to say it is the concrete bed learnt on another track.
    elsewhere = [(WOODEN_BED, 0.04 * WOODEN_BED), (CONCRETE_BED, 0.04 * CONCRETE_BED)]
    refs = R._with_bed(strip, _refs(), per_m=_per_m(), beds_elsewhere=elsewhere)
    assert "bed" in refs
    assert np.allclose(refs["bed"], CONCRETE_BED)


def test_a_busy_track_does_not_take_a_bed_of_another_kind():
    strip = _busy_track(CONCRETE_BED)
    refs = R._with_bed(strip, _refs(), per_m=_per_m(), beds_elsewhere=[(WOODEN_BED, 0.04 * WOODEN_BED)])
    assert "bed" not in refs


def test_the_yards_ground_in_a_bright_shade_is_not_taken_for_its_own_lit_ground():
    # Snow in a low sun's shade keeps about 0.7 of the lit snow's light, bluer (skylight):
    # as bright as lit grass would be, but a mix of the yard's lit and shadowed ground.
    lit = np.array([0.126, 0.142, 0.152, 0.20])
    shadow = np.array([0.132, 0.099, 0.075, 0.09])
    shade = 0.2 * lit + 0.8 * shadow
    rng = np.random.default_rng(1)
    flank = shade[None, :] * (1.0 + 0.02 * rng.standard_normal((N, 4)))
    got, _ = R._own_side_lit(flank, lit, 0.08 * lit, shadow)
    assert np.allclose(got, lit)
    # Lit grass of the same brightness has its own spectrum: it is taken.
    grass = 0.7 * lit * np.array([0.8, 1.0, 1.15, 1.3])
    flank = grass[None, :] * (1.0 + 0.02 * rng.standard_normal((N, 4)))
    got, _ = R._own_side_lit(flank, lit, 0.08 * lit, shadow)
    assert np.allclose(got, grass, rtol=0.05)


def test_a_busy_track_on_fouled_ballast_does_not_take_the_clean_bed():
    # The same concrete sleepers on fouled ballast: 17 % darker. Under haze or cloud the
    # bed learnt elsewhere may carry a spread wide enough to take it in (3 spreads = 30 %
    # here); the share of its colour still tells them apart.
    strip = _busy_track(0.83 * CONCRETE_BED)
    refs = R._with_bed(strip, _refs(), per_m=_per_m(), beds_elsewhere=[(CONCRETE_BED, 0.1 * CONCRETE_BED)])
    assert "bed" not in refs


# Review RRCOUNT (H1, H2, L3): tracks full of cars keep their cars.

PALE_ROOF = np.array([0.24, 0.25, 0.26, 0.27])  # galvanised / light-grey boxcar roof


def _packed_track(roof: np.ndarray, anti_sun_side: np.ndarray, lit_runs: np.ndarray | None = None) -> Strip:
    """Cars end to end over the whole track: ``roof`` in the centre, the sun side lit
    ground, the anti-sun side band ``anti_sun_side`` (band, along); where ``lit_runs``
    (along) is True that side is lit ground instead (sunlight between two cars)."""
    strip = _strip(_const(roof), _const(GROUND))
    far = ACROSS >= 1.5
    for band in range(4):
        v = np.where(lit_runs[None, :], GROUND[band], anti_sun_side[band][None, :]) if lit_runs is not None \
            else np.broadcast_to(anti_sun_side[band][None, :], (far.sum(), N))
        strip.values[band][far] = np.broadcast_to(v, (far.sum(), N)).astype("float32")
    return strip


def test_a_side_band_of_part_shade_beside_a_packed_track_is_not_its_own_lit_ground():
    # A low sun, 0.75 m pixels: the anti-sun side band beside a packed track blurs lit
    # ballast with the cars' shadow (penumbra). Its colour lies on the yard's lit-shadow
    # line, 70 % of the way to the lit end (nearer lit than shadow, and over 0.65 of the
    # light), but it is the yard's ground in part shade, not another ground in the sun.
    shadow = SHADOW * np.array([0.8, 0.95, 1.1, 0.7])  # skylight: bluer, less NIR
    refs = _refs()
    refs["shadow"] = shadow
    mix = 0.7 * GROUND + 0.3 * shadow
    got, _ = R._own_side_lit(_const(mix).T, GROUND, 0.08 * GROUND, shadow)
    assert np.allclose(got, GROUND)
    # So the pale roofs between a lit and a penumbral side are never seen empty: no bed is
    # learnt from them, and the track keeps its cars.
    strip = _packed_track(PALE_ROOF, _const(mix))
    per_m = _per_m(25.0)
    assert not R._flanked_mask(strip, refs, per_m)[1].any()
    got = R._with_bed(strip, refs, per_m=per_m, beds_elsewhere=[(PALE_ROOF, 0.05 * PALE_ROOF)])
    assert "bed" not in got
    kw = dict(min_contrast=3.0, vhr=True, sun_left=False, shadow_across_m=per_m)
    assert R._occupancy(strip, got, **kw)[0].mean() > 0.9


def test_a_packed_track_with_scattered_lit_gaps_does_not_take_a_matching_bed():
    # 18 cars end to end: sunlight reaches the anti-sun side only in 1.5 m slivers
    # between cars (3 samples every 15 m). The roofs there are between lit flanks and
    # match a concrete bed learnt on another track, over 15 m in all: samples scattered
    # over car tops, not one empty stretch, so no bed is taken and the cars are kept.
    lit_runs = np.zeros(N, bool)
    for start in range(10, N, 30):
        lit_runs[start:start + 3] = True
    strip = _packed_track(CONCRETE_BED, _const(SHADOW), lit_runs)
    every, seen = R._flanked_mask(strip, _refs(), _per_m())
    flanked = every[seen]
    assert 10 <= flanked.shape[0] < R._MIN_FLANKED_CENTRES   # enough in all to corroborate
    got = R._with_bed(strip, _refs(), per_m=_per_m(), beds_elsewhere=[(CONCRETE_BED, 0.04 * CONCRETE_BED)])
    assert "bed" not in got
    kw = dict(min_contrast=3.0, vhr=True, sun_left=False, shadow_across_m=_per_m())
    assert R._occupancy(strip, got, **kw)[0].mean() > 0.9


def test_the_longest_empty_run_is_measured_in_samples_along_the_track():
    assert R._longest_run(np.array([], bool)) == 0
    assert R._longest_run(np.array([0, 1, 1, 0, 1, 1, 1, 0], bool)) == 3
    assert R._longest_run(np.ones(5, bool)) == 5


def test_a_cars_shadow_on_other_ground_is_not_its_own_lit_ground():
    # A car's shadow on grass keeps under 65 % of the light: off the yard's lit-shadow
    # line (grass's own spectrum) but too dark for ground in the sun.
    shaded_grass = 0.45 * GROUND * np.array([0.8, 1.0, 1.15, 1.3])
    got, _ = R._own_side_lit(_const(shaded_grass).T, GROUND, 0.08 * GROUND, SHADOW)
    assert np.allclose(got, GROUND)
    # The same grass in the sun is taken.
    got, _ = R._own_side_lit(_const(GRASS).T, GROUND, 0.08 * GROUND, SHADOW)
    assert np.allclose(got, GRASS, rtol=0.05)
