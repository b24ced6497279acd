"""Cloud shadows from the cloud mask and the sun's position (an Fmask-style match).

A cloud at height ``h`` casts its shadow ``h / tan(elevation)`` metres away from the
sun. Cloud masks (CLM, SCL, brightness tests) often miss the shadows, and a counter
that compares objects with lit ground takes shadowed ground for objects. The cloud
height is unknown, so the cloud mask is slid away from the sun over a range of heights
and the height whose footprint falls on the darkest clear ground is taken (Zhu and
Woodcock 2012, Fmask's shadow matching); the footprint there is the shadow mask.
:func:`cloud_shade` adds a colour cue for shadows of clouds outside the frame: ground
in its shadowed colour throughout a window far wider than any object's shadow.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from changedet.grid import GridSpec
from changedet.nanstats import quiet_nanmean
from changedet.objects.ground import GroundModel

# Cloud-base heights searched (m): low cumulus to mid-level cloud.
MIN_CLOUD_HEIGHT_M = 200.0
MAX_CLOUD_HEIGHT_M = 6000.0
# Working resolution of the search (m): shadows are hundreds of metres across.
SEARCH_RES_M = 4.0


def cloud_shadow_mask(
    brightness: np.ndarray,
    cloud: np.ndarray,
    grid: GridSpec,
    *,
    sun_azimuth_deg: float,
    sun_elevation_deg: float,
    max_ratio: float = 0.8,
    margin_m: float = 12.0,
) -> np.ndarray:
    """Pixels in the shadow of the masked clouds.

    Parameters
    ----------
    brightness : ndarray (row, col)
        Mean visible reflectance; NaN where there is no data.
    cloud : ndarray (row, col) of bool
        Cloud pixels (the cloud mask, e.g. ``~valid`` where data are finite).
    grid : GridSpec
        Grid of both arrays (metres).
    sun_azimuth_deg, sun_elevation_deg : float
        Sun position at acquisition (degrees clockwise from north; degrees above the horizon).
    max_ratio : float
        The matched footprint counts as shadow only when the median brightness of the
        clear ground under it is below this share of the clear scene's median (cloud
        shadows keep 20-60 % of the light, so 0.8 leaves room for thin cloud).
    margin_m : float
        Growth of the matched footprint (m): a cloud's thin edge, below the cloud
        mask's threshold, still dims the ground.

    Returns
    -------
    ndarray (row, col) of bool
        True in the shadow of a cloud; all False when no cloud, no clear ground or no
        darker footprint is found.
    """
    cloud = np.asarray(cloud, bool)
    out = np.zeros(cloud.shape, bool)
    if not cloud.any() or sun_elevation_deg <= 0:
        return out
    res = grid.resolution
    f = max(1, int(round(SEARCH_RES_M / res)))
    rows, cols = (cloud.shape[0] // f) * f, (cloud.shape[1] // f) * f
    if rows == 0 or cols == 0:
        return out
    # All-NaN blocks (under cloud, off the image) are NaN by design.
    b = quiet_nanmean(brightness[:rows, :cols].reshape(rows // f, f, cols // f, f), axis=(1, 3))
    c = cloud[:rows, :cols].reshape(rows // f, f, cols // f, f).mean(axis=(1, 3)) > 0.5
    clear = np.isfinite(b) & ~c
    if clear.sum() < 100:
        return out
    ref = float(np.median(b[clear]))
    az, el = math.radians(sun_azimuth_deg), math.radians(max(sun_elevation_deg, 3.0))
    # Away from the sun in (row, col): +row is south, +col is east.
    drow, dcol = math.cos(az), -math.sin(az)
    step = res * f
    best, best_k = np.inf, None
    lo = int(MIN_CLOUD_HEIGHT_M / math.tan(el) / step)
    hi = int(math.ceil(MAX_CLOUD_HEIGHT_M / math.tan(el) / step))
    n_min = max(25, int(0.1 * c.sum()))
    for k in range(max(lo, 1), hi + 1):
        sh = _shift(c, k * drow, k * dcol)
        under = sh & clear
        if under.sum() < n_min:
            continue
        ratio = float(np.median(b[under])) / max(ref, 1e-6)
        if ratio < best:
            best, best_k = ratio, k
    if best_k is None or best > max_ratio:
        return out
    grow = int(math.ceil(margin_m / step))
    small = ndimage.binary_dilation(_shift(c, best_k * drow, best_k * dcol), iterations=grow) if grow else \
        _shift(c, best_k * drow, best_k * dcol)
    full = np.repeat(np.repeat(small, f, axis=0), f, axis=1)
    out[:rows, :cols] = full
    if rows < cloud.shape[0]:
        out[rows:, :cols] = full[-1:, :]
    if cols < cloud.shape[1]:
        out[:, cols:] = out[:, cols - 1:cols]
    return out & ~cloud


def _shift(mask: np.ndarray, dr: float, dc: float) -> np.ndarray:
    """``mask`` moved by (dr, dc) pixels (rounded), filled with False (no wrap-around)."""
    r, c = int(round(dr)), int(round(dc))
    out = np.zeros_like(mask)
    rows, cols = mask.shape
    if abs(r) >= rows or abs(c) >= cols:
        return out
    src = mask[max(0, -r):rows - max(0, r), max(0, -c):cols - max(0, c)]
    out[max(0, r):max(0, r) + src.shape[0], max(0, c):max(0, c) + src.shape[1]] = src
    return out


# Cloud shadows are hundreds of metres across; a car's, stack's or building's shadow is
# a few metres wide. Ground shaded throughout a window this wide is under a cloud.
CLOUD_SHADE_WINDOW_M = 40.0
#: Margin around masked clouds left unobserved (m). A cloud mask is a threshold on
#: opacity: the thin edge beyond it still veils the ground (brighter, flatter colours)
#: and casts a faint shadow. Fmask grows its cloud mask by 3 pixels of 30 m for the same
#: reason; the veil measured beside simulated and real masks fades within a few metres.
CLOUD_EDGE_M = 5.0
#: NDWI above which a pixel is open water, not shadowed ground (McFeeters NDWI, G and NIR).
WATER_NDWI = 0.3


def cloud_shade(
    pix: np.ndarray,
    grid: GridSpec,
    cloud: np.ndarray,
    *,
    model: GroundModel | None = None,
    sun_azimuth_deg: float | None = None,
    sun_elevation_deg: float | None = None,
    object_height_m: float = 5.0,
    edge_m: float = CLOUD_EDGE_M,
) -> np.ndarray | None:
    """Pixels in the shadow of a cloud or under its thin edge, or None when the cloud
    mask marks no cloud.

    Two cues, either suffices: the cloud mask slid away from the sun to the height that
    puts it on the darkest ground (:func:`cloud_shadow_mask`; clouds in the frame, sun
    known), and ground in the shadowed-ground colour of ``model`` (or dimmed towards
    it) over a whole 40 m window, far wider than any object's shadow (this also catches
    the shadows of clouds outside the frame).

    Parameters
    ----------
    pix : ndarray (4, row, col)
        Blue, green, red, NIR reflectance; NaN where there is no data.
    grid : GridSpec
        Grid of ``pix`` (metres).
    cloud : ndarray (row, col) of bool
        Cloud pixels.
    model : GroundModel, optional
        Lit and shadowed colour of the ground the counter works on; without it (or
        without its shadow colour) only the projection cue is used.
    sun_azimuth_deg, sun_elevation_deg : float, optional
        Sun position (degrees); without them only the colour cue is used.
    object_height_m : float
        Height of the tallest objects counted (m). The colour cue is skipped when their
        shadows reach beyond a fifth of the window (a low sun over a packed yard shades
        all the ground between objects, as a cloud would).
    edge_m : float
        Width of the thin cloud edge beyond the mask (m), unobserved too; 0 for none.
    """
    cloud = np.asarray(cloud, bool)
    if not cloud.any():
        return None
    bright = quiet_nanmean(pix[:3], axis=0)  # a pixel with no valid band is NaN by design
    out = np.zeros(cloud.shape, bool)
    if edge_m > 0:
        r = edge_m / grid.resolution
        # Distance to the nearest cloud pixel, on a grid coarse enough to stay cheap.
        f = max(1, int(r // 8))
        rows, cols = -(-cloud.shape[0] // f), -(-cloud.shape[1] // f)
        pad = np.zeros((rows * f, cols * f), bool)
        pad[:cloud.shape[0], :cloud.shape[1]] = cloud
        small = pad.reshape(rows, f, cols, f).any(axis=(1, 3))
        near = ndimage.distance_transform_edt(~small) * f <= r
        out |= np.repeat(np.repeat(near, f, axis=0), f, axis=1)[:cloud.shape[0], :cloud.shape[1]]
    if sun_azimuth_deg is not None and sun_elevation_deg is not None:
        out |= cloud_shadow_mask(bright, cloud, grid, sun_azimuth_deg=sun_azimuth_deg,
                                 sun_elevation_deg=sun_elevation_deg)
    colour_cue = model is not None and model.shadow is not None
    if colour_cue and sun_elevation_deg is not None:
        reach = object_height_m / math.tan(math.radians(max(sun_elevation_deg, 1.0)))
        colour_cue = reach <= CLOUD_SHADE_WINDOW_M / 5
    if colour_cue:
        f = max(1, int(round(2.0 / grid.resolution)))
        rows, cols = (cloud.shape[0] // f) * f, (cloud.shape[1] // f) * f
        with np.errstate(invalid="ignore"):
            small = quiet_nanmean(pix[:, :rows, :cols].reshape(pix.shape[0], rows // f, f, cols // f, f),
                                  axis=(2, 4))
        d, alpha = model.classify(small)
        with np.errstate(invalid="ignore", divide="ignore"):
            ndwi = (small[1] - small[3]) / (small[1] + small[3])
        # Open water has the colour of shadowed ground (dark, bluish) but a far higher
        # NDWI (0.3-0.6 against about 0.1 for shade on ballast or concrete): a river under
        # a bridge must not read as a cloud shadow that then spreads onto the track.
        ground = (d <= 4.0) & np.all(np.isfinite(small), axis=0) & ~(ndwi > WATER_NDWI)
        # A cloud's thin edge dims the ground by 10-40 %, its core by more.
        shaded = ground & (alpha < 0.8)
        w = max(3, int(round(CLOUD_SHADE_WINDOW_M / (grid.resolution * f))))
        g = ndimage.uniform_filter(ground.astype("float32"), w, mode="constant")
        sh = ndimage.uniform_filter(shaded.astype("float32"), w, mode="constant")
        region = (g > 0.15) & (sh > 0.7 * g)
        # The thin shadow edge fades out over tens of metres beyond the window.
        region = ndimage.binary_dilation(region, iterations=max(1, w // 2))
        out[:rows, :cols] |= np.repeat(np.repeat(region, f, axis=0), f, axis=1)
    return out & ~cloud
