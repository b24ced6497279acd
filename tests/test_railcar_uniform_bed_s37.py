"""Railcars, session 37 (issue 6): an empty track is learnt from its own uniformity.

The bed's colour was learnt only from centres flanked by lit ground under a sun that makes
any car shade its anti-sun side (:func:`railcars._with_bed`). With the sun along the track
no car shades either side, and nothing was learnt: a concrete-sleepered bed brighter than
the ground beside it read as pale cars end to end (altgen tuning seeds 20-23: 18 and 9+11
false cars on empty tracks, scenes 5355 and 5349). A track bed is one ballast and one
sleeper over its whole length, so its centre is uniform along it; a string of cars changes
its look at every car end (coupler gaps every 12-21 m). A track uniform along most of its
length and brighter than the ground beside it now gives its own bed colour
(:func:`railcars._uniform_bed`; a dark uniform stretch may be a string of dark cars, their
gaps in their own shade). The counter asks for it where no flat deck's shadow can be read
beside the track and the sun would shade a string of cars' coupler gaps along it
(:func:`railcars._gaps_shaded`; see tests/test_railcar_uniform_bed_gate_s37.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import LineString

from changedet.grid import GridSpec

from changedet.objects import railcars as R
from changedet.objects.strips import Strip

STEP = 0.5
ACROSS = np.arange(-2.5, 2.5 + 1e-9, STEP)
N = 400   # 200 m of track
GROUND = np.array([0.14, 0.15, 0.16, 0.20])
SHADOW = 0.3 * GROUND


def _refs(shadow_known: bool = True):
    """The yard's learnt ground colours; without a shadow colour where the sun runs along
    every track (no side band is shaded: ``shadow`` NaN, session 39)."""
    shadow = SHADOW.copy() if shadow_known else np.full(4, np.nan)
    return {"lit": GROUND.copy(), "lit_sd": 0.08 * GROUND, "shadow": shadow, "shadow_sd": 0.08 * shadow}


def _strip(centre: np.ndarray, seed: int = 0, anti_sun: np.ndarray | None = None) -> Strip:
    """``centre`` (band, along) over |across| <= 1.0 m, lit ground elsewhere (no shadow
    beside the track: the sun along it) or ``anti_sun`` (band) on the left side band
    (a sun from the south on a track running east); 2 % noise."""
    rng = np.random.default_rng(seed)
    v = np.broadcast_to(GROUND[:, None, None], (4, ACROSS.size, N)).copy()
    v[:, np.abs(ACROSS) <= 1.0, :] = centre[:, None, :]
    if anti_sun is not None:
        v[:, ACROSS >= 1.95, :] = anti_sun[:, None, None]
    v = (v * (1.0 + 0.02 * rng.standard_normal(v.shape))).astype("float32")
    along = np.arange(N) * STEP
    x, y = np.meshgrid(along, ACROSS)
    return Strip(v, along, ACROSS, x, y, STEP)


def _cars(top: np.ndarray, pitch_m: float = 15.0, gap_m: float = 1.2) -> np.ndarray:
    """A string of cars with tops ``top`` (band) and coupler gaps in the shade of the cars'
    end walls (a 1.2 m gap between bodies 4 m high is in their shadow under any sun lower
    than 73 degrees off the track's axis)."""
    u = np.arange(N) * STEP
    in_gap = (u % pitch_m) < gap_m
    return np.where(in_gap[None, :], SHADOW[:, None], top[:, None])


@pytest.mark.parametrize("shadow_known", [True, False])
def test_a_uniform_empty_concrete_bed_is_learnt_without_a_sun_side(shadow_known):
    # Also where no shadow colour is learnt (the sun along every track: no side band is
    # shaded), the case the test is for; it had refused to learn a bed there (session 39).
    bed = 1.45 * GROUND
    strip = _strip(np.broadcast_to(bed[:, None], (4, N)))
    refs = R._uniform_bed(strip, _refs(shadow_known))
    assert "bed" in refs
    assert np.allclose(refs["bed"], bed, rtol=0.03)
    if shadow_known:
        # In shade the bed keeps the shadowed ground's share of the lit ground's light.
        assert np.allclose(refs["bed_shadow"], 0.3 * bed, rtol=0.03)
    else:
        # The bed in shade is unknown, not guessed.
        assert not np.any(np.isfinite(refs["bed_shadow"]))
    # The sun along the track (no sun side): against the side ground alone the whole
    # empty track is a bright car; against its own bed nothing stands there.
    kw = dict(min_contrast=3.0, vhr=True, sun_left=None)
    assert R._occupancy(strip, _refs(shadow_known), **kw)[0].mean() > 0.9
    assert R._occupancy(strip, refs, **kw)[0].mean() < 0.05


@pytest.mark.parametrize("shadow_known", [True, False])
def test_a_uniform_dark_stretch_is_not_learnt_as_a_bed(shadow_known):
    # As uniform as a wooden-sleepered bed is a string of dark bodies whose coupler gaps
    # lie in their own shade: a dark uniform stretch is not taken for the bed.
    bed = 0.5 * GROUND
    refs = R._uniform_bed(_strip(np.broadcast_to(bed[:, None], (4, N))), _refs(shadow_known))
    assert "bed" not in refs


@pytest.mark.parametrize("shadow_known", [True, False])
def test_a_string_of_cars_is_not_learnt_as_a_bed(shadow_known):
    # Pale roofs with coupler gaps every 15 m: every 30 m window holds a car end (also
    # where no shadow colour is learnt: cars must not be erased as a bed).
    strip = _strip(_cars(1.45 * GROUND))
    refs = R._uniform_bed(strip, _refs(shadow_known))
    assert "bed" not in refs
    occ, _ = R._occupancy(strip, refs, min_contrast=3.0, vhr=True, sun_left=None)
    assert occ.mean() > 0.8


def test_a_track_half_full_of_cars_is_not_learnt_as_a_bed():
    # Pale-roofed cars over 120 of 200 m, a dark bed beyond: under half the windows are
    # uniform.
    centre = _cars(1.45 * GROUND)
    centre[:, 240:] = (0.5 * GROUND)[:, None]
    assert "bed" not in R._uniform_bed(_strip(centre), _refs())


def test_a_short_track_is_left_as_it_is():
    strip = _strip(np.broadcast_to((1.45 * GROUND)[:, None], (4, N)))
    short = Strip(strip.values[:, :, :100], strip.along_m[:100], strip.across_m, strip.x[:, :100],
                  strip.y[:, :100], STEP)
    assert "bed" not in R._uniform_bed(short, _refs())


def test_uniform_pale_bodies_shading_their_anti_sun_side_stay_cars():
    # A uniform string of pale bodies is learnt as the bed (their colour), but where the
    # sun has a side the bed is ground only where the anti-sun side band is lit
    # (_occupancy): a body shades it, so the bodies stay cars (review RRAILF L6: the
    # former dark-body version never learnt a bed, so it did not reach this test).
    pale = np.broadcast_to((1.45 * GROUND)[:, None], (4, N))
    refs = R._uniform_bed(_strip(pale, anti_sun=SHADOW), _refs())
    assert "bed" in refs
    occ, _ = R._occupancy(_strip(pale, anti_sun=SHADOW), refs, min_contrast=3.0, vhr=True, sun_left=False)
    assert occ.mean() > 0.9
    # The same centre with its anti-sun side lit is the empty bed.
    occ, _ = R._occupancy(_strip(pale), refs, min_contrast=3.0, vhr=True, sun_left=False)
    assert occ.mean() < 0.05


def _yard(gsd: float, bed_share: float, seed: int = 0) -> int:
    """Detections on an empty track whose bed (|across| <= 1.8 m) is ``bed_share`` times
    as bright as the ground beside it, under a sun shining along the track (from the
    east, 40 degrees up), at ``gsd`` m pixels (blurred, 3 % noise)."""
    ground = np.array([0.10, 0.13, 0.08, 0.30])   # grass
    ss, w, h = 0.05, 150.0, 15.0
    f = int(round(gsd / ss))
    ys = (np.arange(int(h / ss)) + 0.5) * ss
    xs = (np.arange(int(w / ss)) + 0.5) * ss
    img = np.broadcast_to(ground[:, None, None], (4, ys.size, xs.size)).copy()
    bed = np.array([0.19, 0.20, 0.21, 0.25]) * bed_share / 1.45
    img[:, np.abs(ys - 7.5) <= 1.8, :] = bed[:, None, None]
    img = img.reshape(4, ys.size // f, f, xs.size // f, f).mean(axis=(2, 4))
    img = np.stack([ndimage.gaussian_filter(b, 0.5) for b in img])[:, ::-1, :]
    img = img * (1 + 0.03 * np.random.default_rng(seed).standard_normal(img.shape))
    grid = GridSpec.from_bounds(32633, (0.0, 0.0, w, h), gsd)
    image = grid.attach(img.astype("float32"), bands=["R", "G", "B", "NIR"], name="reflectance")
    tracks = {"T1": LineString([(5.0, 7.5), (145.0, 7.5)])}
    res = R.count_railcars(image, tracks, sun_azimuth_deg=90.0, sun_elevation_deg=40.0)
    return len(res.detections)


def test_an_empty_concrete_bed_with_the_sun_along_the_track_holds_no_cars():
    # Before: the whole bed read as pale cars end to end (10 at 0.5 m, 11 at 0.75 m).
    assert _yard(0.5, 1.45) == 0
    assert _yard(0.75, 1.45) == 0
