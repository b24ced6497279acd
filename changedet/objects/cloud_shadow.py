"""Cloud shadows from the cloud mask and the sun's position (an Fmask-style match).

A cloud at height ``h`` casts its shadow ``h / tan(elevation)`` metres away from the
sun. Cloud masks (CLM, SCL, brightness tests) often miss the shadows, and a counter
that compares objects with lit ground takes shadowed ground for objects. The cloud
height is unknown, so the cloud mask is slid away from the sun over a range of heights
and the height whose footprint falls on the darkest clear ground is taken (Zhu and
Woodcock 2012, Fmask's shadow matching); the footprint there is the shadow mask.
:func:`cloud_shade` adds a colour cue for shadows of clouds outside the frame: ground
in its shadowed colour throughout a window far wider than any object's shadow, with no
lit surface in it (a sunlit yard darker than its ballast keeps lit roofs and shoulders).
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


#: Share of its red and NIR light a surface keeps at most in a cloud's shadow. Skylight
#: is Rayleigh-scattered (about wavelength^-4): it brings a third or more of the blue on
#: flat ground and 5-15 % of the red and NIR at sun elevations of 30 degrees and more,
#: so a shadow keeps too much blue (up to 0.6 of it in the altgen tuning scenes) to be
#: told from dim lit ground there. In red and NIR a cumulus core leaves 0.1-0.4 and even
#: a thin edge that cuts half the direct beam leaves at most 0.6.
CLOUD_SHADE_MAX_KEEP = 0.6
#: Bands of the (blue, green, red, NIR) stack judged for lit surfaces: red and NIR.
_LIT_BANDS = (2, 3)
#: Upper quantile (%) that stands for a window's brightest surfaces: lit car roofs,
#: ballast shoulders, concrete. High enough to pass over the dark cars and their shadows
#: that fill most of a yard, low enough that a few white roofs do not make it. A window
#: whose lit share is under 100 minus this (%) has no lit tail: the shadow's interior.
#: At 90 the soft edges of our simulator's shadows (dimming ramps over tens of metres)
#: kept too many windows lit: 10 cars counted in the Tumangang test against 7 in view.
LIT_TAIL_PERCENTILE = 80.0
#: Quantile (%) over the scene's 40 m tiles of their tails that gives the sunlit level:
#: the typical tile. A higher one is set by the tiles richest in white or grey cars,
#: and against it sunlit ballast and soil no longer count as lit (a synthetic yard with
#: a quarter of its cars grey-white, 90th-percentile tails: 9-20 % of the sunlit yard
#: marked at 75, none at 50).
#: Scenes more than half in shadow are held up by the learnt lit ground colour instead.
SUNLIT_TILE_QUANTILE = 50.0
#: Width of a cloud's bright thin margin beyond its mask (m), whose blocks vote in the
#: lit-share test on their bright-to-dark spread only: its light is the cloud's, not the
#: sun's on the ground. Opacity fades over tens of metres past a mask's threshold
#: (Fmask buffers its mask by 90 m); in our simulator's Tumangang scene shadowed ballast
#: beside a cloud read 0.10-0.13 within 20 m of the mask, 0.05 beyond (lit 0.13).
CLOUD_VEIL_M = 20.0
#: Share of a window's blocks that must vote for the lit-share test to have a say.
#: Beside a cloud a window's voters lie on its far side only; under a quarter of them
#: cannot speak for the rest (our simulator's Khasan scene: a shadow strip squeezed
#: between a cloud and sunlit ground was judged lit from the sunlit side alone).
MIN_VOTERS = 0.25
#: Percentile (%) of a 2 m block's pixels that stands for its brightest surface in the
#: lit vote (:func:`_lit_share`), and 100 minus it for its darkest: a tenth of the
#: block (a strip of lit ballast or a roof edge 0.2 m wide in a 2 m block) is a surface,
#: not one noisy pixel (in blocks of 4 x 4 pixels or more; of 2 x 2 or 3 x 3 pixels,
#: about the brightest pixel). Results on the tuning scenes were flat from 75 to 97.
BLOCK_PEAK_PERCENTILE = 90.0


#: A pixel whose blue exceeds the lit ground's blue-to-red ratio times its red by this
#: factor is lit mostly by the sky: shade under a clear sky is markedly bluer than the
#: same surface in sun (Rayleigh skylight brings a third or more of the blue, 5-15 % of
#: the red). Blue paint in the sun is left out too, which only returns a block to the
#: vote on its mean.
SKYLIT_BLUE_EXCESS = 1.25
#: NDVI above which a pixel is vegetation (grass, shrubs: 0.4-0.9; ballast, soil, paint,
#: concrete below 0.3) for the peak vote: bright in NIR in shade as in sun.
VEGETATION_NDVI = 0.4


def _block_quantiles(x: np.ndarray, *qs: float) -> list[np.ndarray]:
    """The ``qs``-th percentiles (numpy's linear rule) over the last axis of ``x``, NaN
    left out, NaN where all are, from one sort: vectorised (``np.nanpercentile`` along an
    axis loops in Python, one call per block: 240 s for a 5000 x 5000 image at 0.5 m)."""
    s = np.sort(x, axis=-1)                      # NaN sort last
    n = np.isfinite(x).sum(axis=-1)
    last = np.maximum(n - 1, 0)
    out = []
    for q in qs:
        pos = q / 100.0 * last
        i0 = np.floor(pos).astype(np.intp)
        i1 = np.minimum(i0 + 1, last)
        a = np.take_along_axis(s, i0[..., None], axis=-1)[..., 0]
        b = np.take_along_axis(s, i1[..., None], axis=-1)[..., 0]
        out.append(np.where(n > 0, a + (b - a) * (pos - i0), np.nan))
    return out


def _block_any(mask: np.ndarray, f: int) -> np.ndarray:
    """True for each f x f block of ``mask`` (shape a multiple of f) with any True pixel."""
    return mask.reshape(mask.shape[0] // f, f, mask.shape[1] // f, f).any(axis=(1, 3))


# Tiles whose lit tails fall into two groups this far apart (ratio of their geometric
# means) are sunlit and shaded ground: a shadow keeps at most CLOUD_SHADE_MAX_KEEP of
# the red and NIR, so the groups lie 1/0.6 = 1.7 times apart or more, while sunlit tiles
# of one yard (soil, grass, ballast, cars) spread by a few tens of per cent.
SHADED_TILES_RATIO = 1.6


def _sunlit_level(tails: np.ndarray) -> float:
    """The typical sunlit tile's lit tail (one band) from all tiles' tails: their
    ``SUNLIT_TILE_QUANTILE``-th percentile, or that of the brighter group when the tails
    split into a sunlit and a shaded group (Otsu on their logarithm): with half the frame
    or more under a cloud's shadow the typical tile is shadow, and the learnt lit ground
    colour (grass between the tracks, say) is no floor for red."""
    v = np.log(tails[np.isfinite(tails) & (tails > 0)])
    if v.size >= 4 and np.ptp(v) > 0:
        from skimage.filters import threshold_otsu

        t = float(threshold_otsu(v))
        hi, lo = v[v > t], v[v <= t]
        if hi.size and lo.size and math.exp(hi.mean() - lo.mean()) >= SHADED_TILES_RATIO:
            return float(np.exp(np.percentile(hi, SUNLIT_TILE_QUANTILE)))
    return float(np.percentile(tails, SUNLIT_TILE_QUANTILE)) if tails.size else float("nan")


def _lit_share(small: np.ndarray, w: int, lit_floor: np.ndarray | None = None,
               peak: np.ndarray | None = None, spread: np.ndarray | None = None) -> np.ndarray:
    """Share of each window's blocks that are lit-bright: near nil in a cloud's shadow.

    Parameters
    ----------
    small : ndarray (band, row, col)
        Blue, green, red, NIR reflectance (unitless, 0-1) of blocks of about 2 m; NaN
        where there is no data or the block must not vote (clouds, their thin margin).
    w : int
        Window width (blocks), about 40 m.
    lit_floor : ndarray (band,), optional
        Lit colour of the ground (blue, green, red, NIR reflectance), learnt by the
        counter; the sunlit level is never taken below it.
    peak : ndarray (band, row, col), optional
        Like ``small``, but each block's ``BLOCK_PEAK_PERCENTILE``-th percentile pixel
        instead of its mean: a block votes lit when it or its brightest pixels reach the
        lit level (the level itself stays that of the block means).
    spread : ndarray (band, row, col), optional
        Each block's spread between its bright and dark pixels; where finite and
        ``small`` is not (a cloud's thin veil), the block votes on it instead.

    Returns
    -------
    ndarray (row, col) of float
        For the window centred on each block, the share (0-1) of its voting blocks whose
        mean or ``peak`` (or, for veil blocks, ``spread``: they count as voters too)
        reaches, in red or NIR, ``CLOUD_SHADE_MAX_KEEP`` times the scene's sunlit level in
        that band: the ``SUNLIT_TILE_QUANTILE``-th percentile over w x w tiles of the
        tiles' ``LIT_TAIL_PERCENTILE``-th percentile, at least ``lit_floor``. A cloud's
        shadow dims every surface by the same large fraction, the brightest too; a
        sunlit window darker than the ballast (soil, grass, dark cars) keeps lit roofs
        and shoulders near the scene's level, and vegetation stays bright in NIR.
        Zero for windows with under ``MIN_VOTERS`` of their in-frame blocks voting
        (beside a cloud) and when no block votes.
    """
    fin = np.all(np.isfinite(small), axis=0)
    if not fin.any():
        return np.zeros(fin.shape)
    small = small[list(_LIT_BANDS)]
    nb = small.shape[0]
    # The sunlit level: the tail of each w x w tile, then the typical tile. Tiles at
    # least half observed only (clouds are NaN); a scene smaller than a tile is one sample.
    tr, tc = -(-fin.shape[0] // w), -(-fin.shape[1] // w)
    pad = np.full((nb, tr * w, tc * w), np.nan, small.dtype)
    pad[:, :fin.shape[0], :fin.shape[1]] = np.where(fin[None], small, np.nan)
    tiles = pad.reshape(nb, tr, w, tc, w).transpose(0, 1, 3, 2, 4).reshape(nb, tr * tc, w * w)
    ok = np.isfinite(tiles[0]).mean(axis=1) >= 0.5
    if ok.any():
        level = np.array([_sunlit_level(t) for t in np.nanpercentile(tiles[:, ok], LIT_TAIL_PERCENTILE, axis=2)])
    else:
        level = np.percentile(small[:, fin], LIT_TAIL_PERCENTILE, axis=1)
    if lit_floor is not None:
        # The lit ground colour is a lit surface by definition: the level is not let
        # down to shadowed ground when most tiles lie in shadow.
        level = np.maximum(level, np.asarray(lit_floor, float)[list(_LIT_BANDS)])
    vote = small if peak is None else np.fmax(small, np.asarray(peak)[list(_LIT_BANDS)])
    lit = fin & np.any(vote >= (CLOUD_SHADE_MAX_KEEP * level)[:, None, None], axis=0)
    if spread is not None:
        spread = np.asarray(spread)[list(_LIT_BANDS)]
        fin_v = ~fin & np.all(np.isfinite(spread), axis=0)
        lit |= fin_v & np.any(spread >= (CLOUD_SHADE_MAX_KEEP * level)[:, None, None], axis=0)
        fin = fin | fin_v
    n_lit = ndimage.uniform_filter(lit.astype("float32"), w, mode="constant")
    n_fin = ndimage.uniform_filter(fin.astype("float32"), w, mode="constant")
    # A window with too few voters (beside a cloud) has no say: share 0, and the colour
    # cue decides there alone, as it did before this test: unobserved is the safer
    # error. (Taking the verdict of the nearest window with enough voters instead
    # missed that Khasan strip.) Out of the frame is neither voter nor abstainer.
    n_in = ndimage.uniform_filter(np.ones(fin.shape, "float32"), w, mode="constant")
    return np.where(n_fin >= MIN_VOTERS * n_in, n_lit / np.maximum(n_fin, 1e-6), 0.0)


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
    it) over a whole 40 m window, far wider than any object's shadow, where hardly any
    surface is lit in red or NIR (:func:`_lit_share`; this also catches the shadows of
    clouds outside the frame).

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
        small = _block_any(pad, f)
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
        # Yard ground (gravel, soil, concrete, grass among dark cars and their shadows)
        # spreads wider in colour than one ground colour, and sunlit stretches of it
        # darker than the ballast read as shaded ground. A cloud's shadow dims every
        # surface in it, the brightest included: its windows have (almost) no lit block.
        # The thin margin of a cloud, below the mask's opacity threshold, is bright too:
        # blocks within CLOUD_VEIL_M of the mask do not vote on their brightness (a cloud
        # beside its own or another cloud's shadow otherwise lights the shadow's windows).
        cb = _block_any(cloud[:rows, :cols], f)
        # (distance_transform_edt of an image with no background is not a distance.)
        veil = ndimage.distance_transform_edt(~cb) * grid.resolution * f <= CLOUD_VEIL_M if cb.any() else cb
        voters = np.where(veil[None], np.nan, small)
        peak = spread = None
        if f >= 2:
            # A sunlit yard of dark cars shows lit ballast and soil in strips under 2 m
            # between cars and their cast shadows; the block mean mixes them away, its
            # brightest pixels keep them. A cloud's shadow dims every pixel in it.
            # Inside a cloud's thin veil a block votes on the spread
            # between its bright and dark pixels: the veil adds a smooth light that
            # raises all pixels of 2 m alike and cancels in the spread, while a lit top
            # or shoulder beside its own sharp cast shadow keeps a lit level's worth of
            # spread; in a cloud's shadow the spread is dimmed like all else.
            # A pixel bluer than the lit ground (by SKYLIT_BLUE_EXCESS in blue over red) is
            # lit mostly by the sky (Rayleigh light): a white roof or snow in a cloud's
            # shadow may still reach the lit level, so its peak does not vote (review
            # RCSHADE: half the cars white in a thick shadow, core marked 0.98 -> 0.43).
            lf = np.asarray(model.lit, float)
            with np.errstate(invalid="ignore", divide="ignore"):
                skylit = pix[0, :rows, :cols] > SKYLIT_BLUE_EXCESS * (lf[0] / lf[2]) * pix[2, :rows, :cols]
            red_nir = pix[2:4, :rows, :cols]
            n_px = f * f

            def blocks(a):
                return a.reshape(2, rows // f, f, cols // f, f).transpose(0, 1, 3, 2, 4).reshape(2, rows // f, cols // f, n_px)

            # Vegetation (NDVI above VEGETATION_NDVI) keeps its NIR peak out of the vote:
            # leaves reflect 0.4-0.5 of the NIR, so grass strips between tracks reach the
            # lit level in NIR under a shadow that keeps 0.3 of the beam (review RCSHADE:
            # core marked 0.99 -> 0.25).
            with np.errstate(invalid="ignore", divide="ignore"):
                ndvi = (red_nir[1] - red_nir[0]) / (red_nir[1] + red_nir[0])
            voting = np.where(skylit[None], np.nan, red_nir)
            voting[1] = np.where(ndvi > VEGETATION_NDVI, np.nan, voting[1])
            hi, = _block_quantiles(blocks(voting), BLOCK_PEAK_PERCENTILE)
            peak, spread = np.full_like(small, np.nan), np.full_like(small, np.nan)
            peak[2:4] = hi
            hi, lo = _block_quantiles(blocks(red_nir), BLOCK_PEAK_PERCENTILE, 100 - BLOCK_PEAK_PERCENTILE)
            spread[2:4] = np.where(veil & ~cb, hi - lo, np.nan)
        region &= _lit_share(voters, w, model.lit, peak=peak, spread=spread) < 1 - LIT_TAIL_PERCENTILE / 100
        # The thin shadow edge fades out over tens of metres beyond the window.
        region = ndimage.binary_dilation(region, iterations=max(1, w // 2))
        out[:rows, :cols] |= np.repeat(np.repeat(region, f, axis=0), f, axis=1)
    return out & ~cloud
