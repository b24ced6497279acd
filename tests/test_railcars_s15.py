"""Railcars, session 15 (issue 6): typing on the independent generator.

1. Covered hoppers (the gondola class) were typed boxcars (168 on the tuning scenes):
   where the height is not read, or reads tall for both, only length was left, and a
   19-752 hopper (14.72 m over couplers) is as long as a boxcar. Along the car a
   boxcar's roof is one sheet end to end; a covered hopper's roof carries a row of
   loading hatches and sloped end bays, an open wagon's load lies in heaps, a
   locomotive's roof shows fans and a cab (:func:`railcars._along_texture`).
2. False cars on empty tracks: a track bed unlike the ground beside it (concrete
   sleepers on asphalt, a cleared bed in snow) read as cars end to end. Whatever stands
   on a track shades the ground beside it away from the sun, a bare flat wagon's deck
   least; where the sun's geometry puts that shadow beside the track and the ground
   there is lit, nothing stands there (:func:`railcars._bare_bed`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from scipy import ndimage
from shapely.geometry import LineString

from changedet.grid import GridSpec
from changedet.objects import railcars as R
from changedet.objects.strips import Strip, sample_strip

STEP = 0.5
LIT_B = 0.15          # lit ballast, visible mean


def _roof_strip(length_m: float, *, hatches: int = 0, ribs: bool = False, colour: float = 0.25,
                camber: float = 0.4, step: float = STEP, half: float = 2.5, seed: int = 0) -> tuple[Strip, int, int]:
    """A strip across one car 3.2 m wide on lit ballast: a cambered roof (brightness
    ``colour``, falling by ``camber`` of it to the eaves), with ``hatches`` dark round
    loading hatches 0.8 m across down its centreline, or roof ribs every 1.1 m.
    Returns the strip and the car's first and last sample."""
    rng = np.random.default_rng(seed)
    across = np.arange(-half, half + 1e-9, step)
    pad = 4.0
    n = int(round((length_m + 2 * pad) / step))
    along = np.arange(n) * step
    # Drawn on a grid ten times finer along the track and averaged over each sample's
    # length, as a pixel integrates (point samples would alias 0.12 m ribs).
    fine = 10
    u = (np.arange(n * fine) + 0.5) * step / fine - step / 2 - pad
    aa, uu = np.meshgrid(across, u, indexing="ij")
    body = (np.abs(aa) <= 1.6) & (uu >= 0) & (uu <= length_m)
    roof = colour * (1 - camber * (aa / 1.6) ** 2)
    b = np.where(body, roof, LIT_B)
    if ribs:
        b = np.where(body & (((uu + 0.25) % 1.1) < 0.12), 0.8 * b, b)
    for hu in np.linspace(3.0, length_m - 3.0, hatches) if hatches else []:
        b = np.where(body & (np.hypot(uu - hu, aa) < 0.4), 0.09, b)
    b = b.reshape(across.size, n, fine).mean(axis=2)
    b = b * (1 + 0.01 * rng.standard_normal(b.shape))
    values = np.stack([b, b, b, 1.2 * b]).astype("float32")
    x = np.broadcast_to(along[None], (across.size, n)).copy()
    y = np.broadcast_to(across[:, None], (across.size, n)).copy()
    s0 = int(round(pad / step))
    return Strip(values, along, across, x, y, step), s0, s0 + int(round(length_m / step))


def test_a_boxcar_roof_reads_even_along_and_hatches_textured():
    s, s0, s1 = _roof_strip(14.8, ribs=True)
    assert R._along_texture(s, s0, s1) < R._EVEN_ALONG
    s, s0, s1 = _roof_strip(14.8, hatches=4)
    assert R._along_texture(s, s0, s1) >= R._TEXTURED_ALONG
    # Haze adds the same light to the roof and its hatches: read above it, as without.
    hazy = Strip(s.values + np.float32(0.1), s.along_m, s.across_m, s.x, s.y, s.step_m)
    path = np.full(4, 0.1)
    assert R._along_texture(hazy, s0, s1, path) == pytest.approx(R._along_texture(s, s0, s1), rel=0.05)
    assert np.isnan(R._along_texture(s, s0, s0 + 5))


@pytest.mark.parametrize("body_m", [13.8, 14.8, 15.9])
def test_a_covered_hopper_of_a_boxcars_length_is_the_gondola_class(body_m):
    # Height unread (tall None) or tall: length alone called both boxcars.
    hopper, s0, s1 = _roof_strip(body_m, hatches=4)
    box, b0, b1 = _roof_strip(body_m, ribs=True)
    # Both roofs are cambered ("flat" across): across the car nothing tells them apart.
    assert R._look(hopper, s0, s1, LIT_B) == "flat"
    assert R._look(box, b0, b1, LIT_B) == "flat"
    for tall in (None, True):
        assert R._classify(hopper, s0, s1, body_m, LIT_B, tall=tall) == "gondola"
        assert R._classify(box, b0, b1, body_m, LIT_B, tall=tall) == "boxcar"


def test_a_long_roof_even_along_is_a_boxcar_not_a_locomotive():
    # 11-280 boxcar: 16.5-17 m body, a cambered roof ("flat" across) even end to end.
    box, s0, s1 = _roof_strip(17.0, ribs=True)
    assert R._look(box, s0, s1, LIT_B) == "flat"
    assert R._classify(box, s0, s1, 17.0, LIT_B) == "boxcar"
    # A locomotive's roof of the same length carries its fans: textured along.
    loco, l0, l1 = _roof_strip(17.0, hatches=3)
    assert R._classify(loco, l0, l1, 17.0, LIT_B) == "locomotive"



def test_a_plain_roof_partly_in_shadow_stays_a_boxcar():
    # A roof even across ("plain") that varies along only where a shadow (a neighbour's,
    # a mast's, under a low sun) crosses part of it: not hatches. Own simulator: 8
    # boxcars were typed open wagons while plain tops were read along too.
    box, s0, s1 = _roof_strip(16.4, ribs=True, camber=0.1)
    v = box.values.copy()
    v[:, :, (s0 + s1) // 2:s1] *= 0.5
    box = Strip(v, box.along_m, box.across_m, box.x, box.y, box.step_m)
    assert R._look(box, s0, s1, LIT_B) == "plain"
    assert R._along_texture(box, s0, s1) >= R._TEXTURED_ALONG
    assert R._classify(box, s0, s1, 16.4, LIT_B) == "boxcar"



def test_an_unread_texture_leaves_the_length_rule():
    # A sample of the top masked (cloud, nodata): the texture is not read (NaN) and a
    # flat top of unread height and a boxcar's length stays a boxcar, as before.
    box, s0, s1 = _roof_strip(14.0, ribs=True)
    v = box.values.copy()
    v[:, np.abs(box.across_m) <= 1.0, s0 + 3] = np.nan
    box = Strip(v, box.along_m, box.across_m, box.x, box.y, box.step_m)
    assert np.isnan(R._along_texture(box, s0, s1))
    assert R._classify(box, s0, s1, 14.0, LIT_B) == "boxcar"


# ------------------------------------------------------- empty track beds unlike the ground
def _bed_yard(elevation_deg: float = 40.0, azimuth_deg: float = 180.0, gsd: float = 0.3, seed: int = 3,
              cars: bool = True):
    """Three east-west tracks 5 m apart on asphalt, their beds (ballast with concrete
    sleepers, 2.8 m wide) twice as bright as the asphalt; on the middle track a bare flat
    wagon (13.4 m deck 2.87 m wide, 1.3 m up) and a boxcar (14.2 m roof 3.3 m wide,
    4.9 m up), each shading the ground away from the sun by its height."""
    rng = np.random.default_rng(seed)
    grid = GridSpec.from_bounds("EPSG:32652", (0.0, 0.0, 120.0, 24.0), gsd)
    ys, xs = np.meshgrid(grid.y, grid.x, indexing="ij")
    asphalt = np.array([0.08, 0.085, 0.09, 0.11])
    bed = np.array([0.19, 0.2, 0.21, 0.24])
    sky = np.array([0.30, 0.34, 0.40, 0.26])
    refl = asphalt[:, None, None] * (1 + 0.03 * rng.standard_normal((1,) + grid.shape))
    centres = (7.0, 12.0, 17.0)
    for yc in centres:
        tex = 1 + 0.05 * rng.standard_normal(grid.shape)   # sleepers and stones below a pixel
        refl = np.where((np.abs(ys - yc) <= 1.4)[None], bed[:, None, None] * tex[None], refl)
    # the sun due south at azimuth 180: shadows fall north (+y)
    az = math.radians(azimuth_deg)
    per_m = 1 / math.tan(math.radians(elevation_deg))
    sx, sy = -math.sin(az) * per_m, -math.cos(az) * per_m   # shadow offset per metre of height

    def stand(x0, x1, half, h, colour):
        nonlocal refl
        body = (xs >= x0) & (xs <= x1) & (np.abs(ys - 12.0) <= half)
        sh = np.zeros(grid.shape, bool)
        for f in np.linspace(0, 1, 12):
            sh |= (xs - sx * h * f >= x0) & (xs - sx * h * f <= x1) & (np.abs(ys - sy * h * f - 12.0) <= half)
        refl = np.where((sh & ~body)[None], refl * sky[:, None, None], refl)
        noise = 1 + 0.01 * rng.standard_normal((4,) + grid.shape)
        refl = np.where(body[None], np.asarray(colour)[:, None, None] * noise, refl)

    if cars:
        stand(20.0, 33.4, 1.435, 1.3, [0.06, 0.08, 0.11, 0.18])      # wooden deck
        stand(50.0, 64.2, 1.65, 4.9, [0.05, 0.05, 0.11, 0.17])       # oxide-brown boxcar
    refl = np.stack([ndimage.gaussian_filter(b, 0.6) for b in refl])
    image = grid.attach(refl.astype("float32"), bands=["R", "G", "B", "NIR"])
    tracks = {f"T{i}": LineString([(0.5, yc), (119.5, yc)]) for i, yc in enumerate(centres)}
    return image, tracks



@pytest.mark.parametrize("elevation_deg", [35.0, 45.0])
def test_an_empty_bed_unlike_the_ground_beside_it_is_not_cars(elevation_deg):
    # Concrete sleepers on asphalt: every empty track's centre differs from the ground
    # beside it. No shadow falls beside it where even a flat wagon's deck would shade
    # the ground: nothing stands there. The flat wagon and the boxcar are still found.
    image, tracks = _bed_yard(elevation_deg)
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=elevation_deg)
    per = {p["id"]: p["count"] for p in res.per_feature}
    assert per["T0"] == 0, per
    assert per["T1"] == 2, (per, [(d.type, d.attrs) for d in res.detections])
    # North of the cars (x < 70 m) the third track lies in their shadows, another matter;
    # beyond them it is open.
    assert not [d for d in res.detections if d.feature_id == "T2" and d.polygon.centroid.x > 70.0]
    image, tracks = _bed_yard(elevation_deg, cars=False)
    res = R.count_railcars(image, tracks, sun_azimuth_deg=180.0, sun_elevation_deg=elevation_deg)
    assert res.total == 0, {p["id"]: p["count"] for p in res.per_feature}


def test_a_bare_bed_is_judged_only_where_the_lowest_cars_shadow_reaches_the_band():
    image, tracks = _bed_yard(45.0, cars=False)
    grid = GridSpec.of(image)
    pix = np.asarray(image.values, "float64")[[2, 1, 0, 3]]   # B G R NIR, as bgrn orders them
    strip = sample_strip(pix, grid, tracks["T1"], half_width_m=2.6, step_m=0.3)
    lit = np.array([0.08, 0.085, 0.09, 0.11])[[2, 1, 0, 3]]
    n = strip.values.shape[2]
    per_m = R._shadow_across(tracks["T1"], 180.0, 45.0)
    sun_left, _ = R._sun_geometry(tracks["T1"], 180.0, 45.0)
    assert sun_left is False   # the sun due south of a track drawn eastwards
    assert R._bare_bed(strip, 30, n - 30, sun_left, per_m, lit)
    # Sun high or along the track: a flat wagon's shadow stays under its deck.
    assert not R._bare_bed(strip, 30, n - 30, sun_left, 0.15, lit)
    assert not R._bare_bed(strip, 30, n - 30, sun_left, float("nan"), lit)
    # The same bed with a car's shadow beside it on the anti-sun side (north).
    shaded = strip.values.copy()
    shaded[:, strip.across_m >= 1.7, :] *= 0.35
    s2 = Strip(shaded, strip.along_m, strip.across_m, strip.x, strip.y, strip.step_m)
    assert not R._bare_bed(s2, 30, n - 30, sun_left, per_m, lit)
    # Bands brighter than lit ground hold a car body's blurred edge (coarse pixels, a
    # misregistered track), not ground.
    bright = strip.values.copy()
    bright[:, np.abs(strip.across_m) >= 1.7, :] *= 1.5
    s3 = Strip(bright, strip.along_m, strip.across_m, strip.x, strip.y, strip.step_m)
    assert not R._bare_bed(s3, 30, n - 30, sun_left, per_m, lit)
