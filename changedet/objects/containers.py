"""Count containers in stack zones: footprints, tiers from shadows, TEU.

Inside each stack zone, pixels whose colour is not ground (lit or shadowed pavement,
learnt from the zone's apron) are container tops. The apron seldom holds enough shadow
to show the colour of shade, which is bluer than lit pavement (lit by the sky alone):
when the sun is known it is measured inside the stacks' own shadows (a zone where none
can be, such as one under a cloud's shadow, takes the shade over lit pavement measured
in the other zones: the sky's share of the light, the same over the image), and a pixel whose
hue (chromaticity) is neither lit pavement's nor shade's is paint even when it is about
as bright as the ground (brown, dark green, pale blue boxes). Their area in 20 ft ground slots
(6.06 x 2.44 m, ISO 668) gives the boxes on the ground; the height of each stack
block comes from the length of the shadow it throws onto open pavement when the sun's
position is known (tiers of 2.59 m), and TEU = ground slots x tiers. Pieces of the colour mask less than 3 m apart are one
block (a row of tops shaded by a taller row splits it). With a low sun most
shadows cross the lane and run into the next block; those walks are lower bounds
(censored), and the median shadow is the Kaplan-Meier estimate over all walks rather
than the median of the ones seen to end, which are the short ones. Heights are measured
stack by stack along a block's anti-sun edge (its notches of about one box closed: a
notch is a lower top in the shade of taller stacks; and only where the walk leaves the
edge at 30 degrees or more, outside the blur of a grazing shadow's side); a stack whose shadows all run into the
next block is at least as tall as its walks, and takes the mean of the block's measured
stacks above that bound (Kaplan-Meier over stacks). The TEU of a block splits into 20 ft
and 40 ft boxes by the share of its row length in runs of one paint about 6 m long
(20 ft boxes) against about 12 m (40 ft boxes, or two 20 ft boxes of one colour).

Under cloud (``valid`` given), pixels under the cloud's thin edge are not read, like the
cloud itself (:func:`observed_mask`), and each zone reports its ``observed_fraction``; but
the boxes under that edge are there and seen by any reader of the image (the cloud mask
passes it as clear), so they are counted at the TEU density of the stacks read within
25 m of it (:func:`_thin_edge_fill`). Under the thick cloud nothing is counted. In the
cloud's projected shadow the boxes are still seen (lit by the sky) and their footprints
counted, but no shadow is measured there nor pavement colour learnt: blocks under it take
the heights of the zone's or image's stacks in the sun.

Tarped stacks are flagged (``tarped`` per stack block, ``tarped_stacks`` per zone and
in total): plain patches of dull cloth colour on a block, and patches of pavement
colour that cast a shadow along their anti-sun edge (a grey cover is told from
concrete by its height, and then counted as containers too). Each block lists its
flagged patches (``tarp_patches``: centroid x, y in the image CRS and area in m^2), so a
flag can be checked on the ground. The flag is conservative: a tarp in a saturated
colour passes for container paint.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

import numpy as np
import xarray as xr
from rasterio import features as rfeatures
from scipy import ndimage
from shapely.geometry import Polygon, shape

from changedet.grid import GridSpec
from changedet.objects.checks import check_features, check_metric, check_resolution
from changedet.nanstats import quiet_nanmean
from changedet.objects.cloud_shadow import cloud_shade
from changedet.objects.common import CountResult, Detection, prepare, robust_ref
from changedet.objects.ground import GroundModel, shadow_spread_floor

SLOT_M2 = 6.06 * 2.44
TIER_M = 2.59
MAX_TIERS = 5
# Gaps between neighbouring boxes in a yard (m): across rows (side by side) and along a
# row (end to end). At 0.5 m pixels they mostly fill in, so a block's footprint is its
# outline, gaps included.
GAP_ACROSS_M = 0.35
GAP_ALONG_M = 0.45
# Pixels a footprint's classified outline adds across a run of boxes (both sides together).
# A pixel on a box's edge holds a fraction f of box, uniform over (0, 1) as the edge falls
# anywhere on the pixel grid; read as box when f exceeds some f*, it moves the outline out
# by (1 - 2 f*) / 2 pixels on average. The box test is 4 noise spreads, so f* depends on
# how far the paint stands from the pavement: paint within 8 spreads of it has f* over a
# half and its outline SHRINKS (by up to about 0.3 px a side with a PSF of sigma 0.4 px),
# while bright paint has f* near 0 and the sensor's PSF (a Gaussian of about half a pixel
# for an imager with an MTF at Nyquist of 0.1-0.3) spreads its light past half a pixel a
# side (up to about 1.1 px; review RYARDW's 1-D check). No single value is right for every
# paint: 0.5 px in all (a quarter a side) is the bench's choice between 0.5 and 1.0 on
# yards 231-242 (1.0 overshot the slots by -2 to -4 %), confirmed on yards 189-194 and
# 201-206 (slots bias +6 to +7 % -> about 0 at 0.8 m) and flat on 213-218. Known limit:
# mid-tone boxes on concrete (tests/test_containers_s15.py at 0.8 m) lose 1-3 more slots
# of 36 (slots -1..-2.5 % -> -2..-8 %); pansharpened products widen outlines more and
# sharpened ones less than assumed. A blur read from each block's paint contrast would
# be the better rule. Only subtracted at pixels coarser than 2 * STACK_GAP_M (see
# _ground_slots). MAX_TOP_M2 allows a whole pixel around a top: a bound, not this mean.
EDGE_BLUR_PX = 0.5


def count_containers(
    image: xr.DataArray,
    zones: Mapping[str, Polygon],
    *,
    valid: xr.DataArray | None = None,
    sun_azimuth_deg: float | None = None,
    sun_elevation_deg: float | None = None,
    min_contrast: float = 4.0,
    min_area_m2: float = 8.0,
) -> CountResult:
    """Estimate containers (TEU) in each stack zone of an optical image.

    Parameters
    ----------
    image : xarray.DataArray (band, y, x)
        Surface reflectance with named bands and a CRS; about 1 m or finer.
    zones : mapping of str to Polygon
        Stack-zone polygons in the image CRS, by zone id.
    valid : xarray.DataArray (y, x) of bool, optional
        False where the image must not be trusted (clouds, nodata).
    sun_azimuth_deg, sun_elevation_deg : float, optional
        Sun position at acquisition (degrees). Needed for tiers; without it every
        stack counts as one tier and the result says so (``tiers_method``).
    min_contrast : float
        Distance from the ground colour, in its own spreads, above which a pixel is a
        container top.
    min_area_m2 : float
        Smallest footprint kept (a 20 ft box is 14.8 m^2).

    Returns
    -------
    CountResult
        ``total`` in TEU with an uncertainty; detections are stack blocks with their
        footprint, ground slots, tiers and boxes (``boxes_20ft``, ``boxes_40ft``,
        ``share_20ft``). ``by_type`` holds ``teu`` and the estimated numbers of
        ``20ft`` and ``40ft`` boxes (TEU = 20ft + 2 x 40ft, to rounding); each zone's
        ``by_type`` adds its ``ground_slots`` (20 ft slots), and ``by_type_uncertainty``
        (one standard deviation of each box count) is given per zone and in ``extras``.
        The split comes from the lengths of single-paint runs along the rows
        (:func:`_box_runs`): two 20 ft boxes of one colour end to end read as a 40 ft box.
        Under cloud each zone's ``count``, ``by_type`` and uncertainties include the
        boxes under the cloud's thin edge (:func:`_thin_edge_fill`), which no detection
        carries: the detections' TEU can sum to less than the zone's count. The zone's
        ``observed_fraction`` is the share actually read (thin edge left out). A fill
        from stacks read in a cloud's shadow under-fills as those do (fewer footprints
        found there).
    """
    grid = GridSpec.of(image)
    check_resolution(grid, "containers")
    check_metric(grid, "container")
    check_features(zones, grid, what="stack zone")
    # ``ok``: pixels whose boxes can be seen (footprints); ``sunlit``: those also in the
    # sun, where pavement colour is learnt and shadows are measured.
    grid, pix, ok, sunlit, thin = _observed(image, valid, sun_azimuth_deg, sun_elevation_deg)
    res = grid.resolution
    px_m2 = res * res
    per_feature, detections = [], []
    total, var, seen_total, area_total = 0.0, 0.0, 0.0, 0.0
    have_sun = sun_azimuth_deg is not None and sun_elevation_deg is not None
    pending = []
    pooled = None
    pooled_pavement = np.empty((0, pix.shape[0]), pix.dtype)
    # Shade over lit pavement, per band, in the zones where shade was measured: the sky's
    # share of the light, the same over the whole image.
    sky_share = []
    # A zone where no shade can be measured (under a cloud's shadow no stack throws one)
    # comes round again after the others (``retry``) and takes their sky share.
    work = [(zid, zone, False) for zid, zone in zones.items()]
    for zid, zone, retry in work:
        inside = _mask(zone, grid)
        apron = _mask(zone.buffer(3.0 * max(res, 1.0)), grid) & ~_mask(zone.buffer(-1.0), grid)
        if not retry:
            area_total += inside.sum()
            seen_total += (inside & ok).sum()
        pavement = pix[:, apron & sunlit].T
        model = _ground_model(pavement)
        if model is None and (inside & ok).any():
            # The zone's own apron is under cloud: the pavement of the other zones' aprons.
            if pooled is None:
                pooled_pavement = pix[:, _aprons(zones, grid) & sunlit].T
                pooled = _ground_model(pooled_pavement) or False
            model = pooled or None
            # The lit pavement's hue is then read from the samples the model was fitted on.
            pavement = pooled_pavement
        if model is None or inside.sum() == 0:
            per_feature.append({"id": zid, "count": 0, "by_type": {"ground_slots": 0.0, "20ft": 0.0, "40ft": 0.0},
                                "by_type_uncertainty": {"20ft": 0.0, "40ft": 0.0}, "observed_fraction": 0.0,
                                "tarped_stacks": 0, "uncertainty": 0.0})
            continue
        # Classify as far as the longest possible shadow reaches (a 5-tier stack throws
        # 36 m at 20 degrees of sun), so that a long shadow is seen to end, not cut off.
        around = _mask(zone.buffer(max(_reach_m(sun_elevation_deg), 20.0) if have_sun else 20.0), grid)
        # Outside ``around`` every band is NaN on purpose: those pixels get distance NaN.
        d, alpha = _classify(model, np.where(around[None], pix, np.nan))
        box = (d > min_contrast) & around & ok
        lit_ground = (d <= min_contrast) & (alpha >= 0.5) & around & sunlit
        box = ndimage.binary_opening(box, structure=np.ones((2, 2), bool))
        box = ndimage.binary_closing(box, structure=np.ones((2, 2), bool))
        walk_box = box
        if have_sun:
            shade = _learn_shade(box & inside, box, lit_ground, around & sunlit, pix, res, sun_azimuth_deg,
                                 sun_elevation_deg)
            if shade is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    share = shade / model.lit
                # A band with no lit pavement light (zero, masked) has no share to lend.
                if np.all(np.isfinite(share)):
                    sky_share.append(share)
            elif not retry:
                work.append((zid, zone, True))
                continue
            elif sky_share:
                shade = np.concatenate(sky_share) * model.lit
            if shade is not None:
                model, d, alpha, off_hue = _reclassify(model, shade, pavement, pix, around)
                box = ((d > min_contrast) | (off_hue > min_contrast)) & around & ok
                # Lit pavement, where shadow walks end, stays as first classified: the
                # hue test adds boxes, it does not say where a shadow ends.
                box = ndimage.binary_opening(box, structure=np.ones((2, 2), bool))
                box = ndimage.binary_closing(box, structure=np.ones((2, 2), bool))
                d = np.where(box, np.inf, d)
                # Outside the zone the hue test also flags other materials (bare soil):
                # walks that end on lit soil would be cut short there.
                walk_box = np.where(inside, box, walk_box)
        ground_dark = (d <= min_contrast) & (alpha < 0.5) & around & sunlit
        tarps = np.zeros_like(box)
        if have_sun:
            cand = (d <= min_contrast) & (alpha >= 0.3) & inside & sunlit & ~box
            tarps = _tarp_tops(cand, ground_dark, box, res, sun_azimuth_deg)
            box |= tarps
        labels, n = _blocks(box & inside, res, min_area_m2)
        blobs = []
        # A pavement pixel's share of shade (1 - lit fraction) reads a walk's end to a
        # fraction of a pixel; not pavement (NaN): no share to read. The same for every block.
        shade_share = np.where(d <= min_contrast, 1.0 - alpha, np.nan) if have_sun else None
        for lab in range(1, n + 1):
            blob = labels == lab
            area = blob.sum() * px_m2
            if area < min_area_m2:
                continue
            lengths = _shadow_lengths(blob, walk_box | blob, lit_ground, around & sunlit, res, sun_azimuth_deg,
                                      sun_elevation_deg, shade_share) if have_sun else _NO_WALKS
            if have_sun:
                # Each walk measured from the roof edge, not from its start pixel's centre.
                lengths = _from_roof_edge(lengths, pix, sun_azimuth_deg, blob, shade_share)
            patches = _tarp_patches((tarps & blob) | _dull_tops(blob, pix, px_m2), grid)
            n_tarps = len(patches)
            stacks = _stack_tiers(blob, pix, lengths, px_m2, _walk_to_tiers(res, sun_azimuth_deg, sun_elevation_deg),
                                  _toward_sun(sun_azimuth_deg, res), azimuth=sun_azimuth_deg,
                                  res=res) if have_sun else None
            blobs.append((blob, area, lengths, patches, stacks, _ground_slots(blob, res), _box_runs(blob, pix, res)))
        pending.append((zid, inside, blobs))
        continue
    # Zones that came round again back in their given order.
    order = {zid: i for i, zid in enumerate(zones)}
    pending.sort(key=lambda z: order[z[0]])
    # Heights: a block's own shadows when enough of them fall on open pavement, else the
    # zone's, else the whole image's (blocks packed tight shade each other, not the ground).
    all_lengths = _pool([b[2] for _, _, bl in pending for b in bl])
    # Box sizes likewise: a block's own runs, else its zone's, else the image's.
    all_runs = np.sum([b[6] for _, _, bl in pending for b in bl] or [(0.0, 0.0, 0)], axis=0)
    tarped_total = 0
    n20_total, n40_total, n20_var, n40_var = 0.0, 0.0, 0.0, 0.0
    for zid, inside, blobs in pending:
        zone_lengths = _pool([b[2] for b in blobs])
        zone_runs = np.sum([b[6] for b in blobs] or [(0.0, 0.0, 0)], axis=0)
        zone_teu, zone_var, zone_slots, zone_tarped = 0.0, 0.0, 0.0, 0
        zone_n20, zone_n40, zone_v20, zone_v40 = 0.0, 0.0, 0.0, 0.0
        block_teu = []
        for blob, area, lengths, patches, stacks, slots, runs in blobs:
            n_tarps = len(patches)
            if not have_sun:
                tiers, tiers_sd, method = 1.0, 0.0, "assumed_one_tier"
            else:
                tiers, tiers_sd, method = _tiers_from(lengths[:2], zone_lengths, all_lengths, res,
                                                      sun_azimuth_deg, sun_elevation_deg)
                est = _block_tiers(stacks, tiers)
                if est is not None:
                    tiers, method = est[0], "shadow_stacks"
                    tiers_sd = min(est[2], 2.0) / math.sqrt(est[1]) + 0.25
            teu = slots * tiers
            # Footprint area is uncertain by about half a pixel along the outline.
            perim = (blob ^ ndimage.binary_erosion(blob)).sum() * res
            slots_sd = perim * res * 0.5 / SLOT_M2
            teu_var = (slots_sd * tiers) ** 2 + (slots * tiers_sd) ** 2
            zone_var += teu_var
            zone_teu += teu
            zone_slots += slots
            share, share_sd = _share_20ft(runs, zone_runs, all_runs, res)
            n20, n40 = float(share * teu), float((1.0 - share) * teu / 2.0)
            # TEU = n20 + 2 n40 exactly; the share's spread moves boxes between the sizes.
            v20 = (share_sd * teu) ** 2 + share ** 2 * teu_var
            v40 = (share_sd * teu / 2.0) ** 2 + (1.0 - share) ** 2 * teu_var / 4.0
            zone_n20, zone_n40, zone_v20, zone_v40 = zone_n20 + n20, zone_n40 + n40, zone_v20 + v20, zone_v40 + v40
            block_teu.append((blob, (teu, slots, n20, n40)))
            detections.append(Detection("container_stack", "stack", _polygon(blob, grid), 1.0, zid,
                                        {"area_m2": round(float(area), 1), "ground_slots": round(float(slots), 1),
                                         "tiers": round(float(tiers), 2), "tiers_method": method,
                                         "teu": round(float(teu), 1), "boxes_20ft": round(float(n20), 1),
                                         "boxes_40ft": round(float(n40), 1), "share_20ft": round(float(share), 3),
                                         "tarped": bool(n_tarps),
                                         "tarped_stacks": int(n_tarps), "tarp_patches": patches}))
            zone_tarped += n_tarps
        # The thin cloud edge the mask passes but the counter leaves unread: the boxes
        # there are seen through the veil by any reader of the image, so they are counted
        # at the density of the stacks read around it (TEU, ground slots and box sizes
        # alike, so TEU = 20ft + 2 x 40ft still holds and the slots carry no tier error).
        (fill, fill_slots, fill_n20, fill_n40), fill_var = _thin_edge_fill(block_teu, inside, ok, thin, res)
        if fill > 0.0 and zone_teu > 0.0:
            # The read part's error (tiers above all) applies to the fill as well: fully
            # correlated, so it scales by k; the fill's own sampling spread adds to it, and
            # splits between the sizes as the filled TEU does (s20 in 20 ft, s40 in 40 ft).
            k = (zone_teu + fill) / zone_teu
            s20, s40 = fill_n20 / fill, fill_n40 / fill
            zone_n20, zone_n40 = zone_n20 + fill_n20, zone_n40 + fill_n40
            zone_v20, zone_v40 = zone_v20 * k * k + s20 ** 2 * fill_var, zone_v40 * k * k + s40 ** 2 * fill_var
            zone_teu, zone_var, zone_slots = zone_teu + fill, zone_var * k * k + fill_var, zone_slots + fill_slots
        total += zone_teu
        var += zone_var
        tarped_total += zone_tarped
        n20_total, n40_total = n20_total + zone_n20, n40_total + zone_n40
        n20_var, n40_var = n20_var + zone_v20, n40_var + zone_v40
        per_feature.append({"id": zid, "count": round(zone_teu, 1),
                            "by_type": {"ground_slots": round(zone_slots, 1), "20ft": round(zone_n20, 1),
                                        "40ft": round(zone_n40, 1)},
                            "by_type_uncertainty": {"20ft": round(math.sqrt(zone_v20), 1),
                                                    "40ft": round(math.sqrt(zone_v40), 1)},
                            "tarped_stacks": int(zone_tarped),
                            "uncertainty": round(math.sqrt(zone_var), 1),
                            "observed_fraction": round(float((inside & ok).sum() / max(inside.sum(), 1)), 4),
                            # Share under a cloud's projected shadow: read for footprints (a
                            # third to a half of the paint found, against four fifths in the
                            # sun), heights borrowed from stacks in the sun.
                            "cloud_shadow_fraction": round(float((inside & ok & ~sunlit).sum()
                                                                 / max(inside.sum(), 1)), 4)})
    observed = seen_total / area_total if area_total else 0.0
    result = CountResult("containers", round(total, 1),
                         {"teu": round(total, 1), "20ft": round(n20_total, 1), "40ft": round(n40_total, 1)},
                         tuple(per_feature), tuple(detections), grid.crs, math.sqrt(var), observed,
                         {"tarped_stacks": int(tarped_total),
                          "by_type_uncertainty": {"20ft": round(math.sqrt(n20_var), 1),
                                                  "40ft": round(math.sqrt(n40_var), 1)}})
    return result


# Shade is pavement lit by the sky alone: its colour is lit pavement's times the sky's
# share of the light in each band. Under a clear sky that share falls steeply with
# wavelength (Rayleigh scattering, about lambda^-4): some 20-30 % in blue, 15 % in green,
# 10-12 % in red and 5-8 % in the near infrared at a sun of 30-60 degrees; haze makes the
# sky brighter and greyer (about 30 % in every band). An apron without shadow samples
# gets both as its possible shade colours until the stacks' own shadows show the real one
# (:func:`_learn_shade`). With grey shade alone, the shadows beside the stacks on a bright
# concrete apron under a clear sky (as dark as the grey shade, but bluer and with almost
# no infrared) read as container tops: the footprint grew by the shadow, no walk was
# left, and every stack counted one tier.
SHADE_GREY = np.array([0.30, 0.30, 0.30, 0.30])
SHADE_CLEAR_SKY = np.array([0.25, 0.16, 0.11, 0.065])


# Least ratio of shade's blue/infrared to lit pavement's (see _sky_lit): 1, skylight is
# never redder than sunlight (a grey hazy sky gives about 1, a clear one 2-4); the
# physical bound, not tuned: do not tune it. Under a grey haze true shade sits at about 1
# and noise decides whether it passes; a rejected shade falls back to the assumed grey
# shade (SHADE_GREY), so the coin toss is harmless. Yard bench, all conditions, mean zone
# |TEU| (session 39): yards 189-194 17.8 -> 15.0 %, 225-230 12.3 -> 11.4 % (tuning),
# 207-212 11.8 -> 10.5 % (check), review's fresh 213-218 11.8 -> 11.5 %.
SHADE_MIN_BLUING = 1.0


def _sky_lit(lit: np.ndarray, shade: np.ndarray) -> bool:
    """Whether ``shade`` (band,) can be ``lit`` (band,) pavement lit by the sky alone.

    Shade is lit by the sky alone, and skylight is never redder than direct sunlight:
    Rayleigh scattering (about lambda^-4) makes a clear sky several times bluer, and haze
    (Mie scattering) greys it at most. So shade on pavement keeps a blue/infrared ratio
    at least that of the same pavement in the sun (``SHADE_MIN_BLUING`` times it). The
    limit: shade also takes light bounced off sunlit surfaces beside it, and in a narrow
    alley between red or brown boxes that light can make it redder than lit pavement; it
    is then rejected and the assumed grey shade is used instead (mild harm).
    A "shade" colour redder than lit pavement is something else: on a very dark asphalt
    apron (yard 1905, clear 0.8 m) the apron's dark samples are mixed box-edge and
    penumbra pixels and the "shade" learnt in walks that never ended is lit asphalt
    itself (blue/infrared 0.81-0.84 of lit's); taken as shade, lit asphalt read as
    shade, no shadow walk ended and the stacks read 5-6 tiers for 2. Without four bands
    (blue first, infrared last) there is no hue to judge: True.

    Parameters
    ----------
    lit, shade : numpy.ndarray
        Colours (band,), surface reflectance.

    Returns
    -------
    bool
    """
    if lit.size != SHADE_CLEAR_SKY.size or shade is None or shade.size != lit.size:
        return True
    lit_hue = float(lit[0]) / max(float(lit[3]), 1e-12)
    shade_hue = float(shade[0]) / max(float(shade[3]), 1e-12)
    # (1 - 1e-9): a shade of exactly the lit hue (grey haze) passes despite rounding.
    return bool(shade_hue >= SHADE_MIN_BLUING * lit_hue * (1.0 - 1e-9))


def _ground_model(samples: np.ndarray) -> GroundModel | None:
    """Ground model of pavement samples; grey shade (30 % of lit) when they hold none,
    or when their dark samples are redder (blue/infrared) than the lit ones
    (:func:`_sky_lit`: not shade)."""
    model = GroundModel.from_samples(samples, assume_shadow=False)
    if model is not None and model.shadow is not None and not _sky_lit(model.lit, model.shadow):
        model = replace(model, shadow=None, shadow_sd=None)
    if model is None or model.shadow is not None:
        return model
    return replace(model, shadow=model.lit * SHADE_GREY[:model.lit.size], shadow_sd=model.lit_sd * 0.5)


def _classify(model: GroundModel, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`GroundModel.classify`, the shade also tried at the clear sky's colour
    (``SHADE_CLEAR_SKY``) when the model's shade was assumed grey: the nearer wins."""
    d, alpha = model.classify(pixels)
    if model.lit.size != SHADE_CLEAR_SKY.size or not np.array_equal(model.shadow, model.lit * SHADE_GREY):
        return d, alpha
    blue = replace(model, shadow=model.lit * SHADE_CLEAR_SKY, shadow_sd=model.lit_sd * 0.5)
    d2, alpha2 = blue.classify(pixels)
    # Sky-lit shade is several times bluer against the infrared than lit pavement (3.8x
    # with the colours above); a black or dark box top (0.04-0.05 in every band) lies
    # near the line from lit pavement to that shade too, and whole dark blocks vanished
    # as shade. Only pixels at least 1.5x bluer than the pavement may match it.
    with np.errstate(divide="ignore", invalid="ignore"):
        hue = pixels[0] / np.maximum(pixels[3], 1e-6 * np.abs(model.lit[3]))
    sky_hue = hue >= 1.5 * float(model.lit[0] / max(float(model.lit[3]), 1e-12))
    nearer = (d2 < d) & sky_hue
    return np.where(nearer, d2, d), np.where(nearer, alpha2, alpha)


def observed_mask(
    image: xr.DataArray,
    *,
    valid: xr.DataArray | None = None,
    sun_azimuth_deg: float | None = None,
    sun_elevation_deg: float | None = None,
) -> np.ndarray:
    """The pixels :func:`count_containers` reads footprints on (row, col): finite,
    ``valid``, and not under a cloud's thin edge.

    A cloud's shadow is read for footprints but not for heights: the boxes under it are
    there, lit by the sky, and their paint still differs from the pavement's; but the
    pavement around them is as dark as a stack's shadow, so no shadow can be measured
    there (heights come from the stacks in the sun).
    """
    return _observed(image, valid, sun_azimuth_deg, sun_elevation_deg)[2]


def _observed(image, valid, azimuth, elevation) -> tuple[GridSpec, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid, pixels, and the masks (row, col of bool) of what is read and what is not.

    Returns the grid, the pixels, the pixels readable for footprints, those also in the
    sun, and the thin cloud edge: pixels the cloud mask passes as clear that are left out
    of both (the cloud's own light added to the ground's).
    """
    grid, pix, ok = prepare(image, valid)
    sunlit = ok
    thin = np.zeros(ok.shape, bool)
    if valid is not None:
        edge, shadow = _cloud_shade(pix, grid, ok, azimuth, elevation)
        # Under the thin edge the cloud's own light is added to the ground's (brighter,
        # greyer: pavement reads as box); in its shadow the ground is only dimmed.
        thin = ok & edge
        ok = ok & ~edge
        sunlit = ok & ~shadow
    return grid, pix, ok, sunlit, thin


#: Reach (m) around a cloud's masked thin edge over which the stacks read stand for the
#: ones under it: about one block of 4-6 rows (10-15 m) and its lane on either side. A
#: yard's stacking density changes from block to block (empty slots, reefer rows,
#: equipment lanes); a cloud's edge falls on the yard regardless of its layout, so the
#: blocks beside it are the best sample of what it hides.
THIN_EDGE_REACH_M = 25.0
#: Relative spread (1 sigma) of the TEU density under the thin edge against the density
#: around it (stacks 0-5 tiers, blocks and lanes 10-25 m wide against an edge 5 m wide).
THIN_EDGE_REL_SD = 0.5
#: Depth (m) of a stack zone's outer strip, from its outline. A yard's stack blocks are
#: set back from the zone's drawn outline by its perimeter or truck lane, fence line or
#: apron margin (a lane is 4-8 m wide), then come the first rows of boxes: the density of
#: boxes changes with the depth into the zone there, and mostly along it (blocks run
#: parallel to the perimeter). When a cloud lies outside the zone its thin edge clips only
#: the outermost metres, and the stacks 25 m inside would over-fill them; so an edge pixel
#: in the strip takes the density read at its own depth (bands of ``ZONE_BAND_M``), those
#: deeper the density read deeper than the strip.
ZONE_BORDER_M = 10.0
#: Width (m) of the depth bands in the outer strip: well under a lane's width and about a
#: row of boxes (2.44 m) less its gap, so a band does not mix lane and stack.
ZONE_BAND_M = 1.0
#: Least read area (m^2) a band's density is taken from: a 20 ft box's footprint; below
#: it the band's density is noise, and the whole strip's (or ring's) is taken instead.
MIN_RING_M2 = 14.8


def _thin_edge_fill(block_teu, inside, ok, thin, res) -> tuple[tuple[float, float, float, float], float]:
    """TEU, ground slots and boxes under the zone's masked thin cloud edge, from the stacks read around it.

    The density (per pixel) is that of the read pixels of the zone within
    ``THIN_EDGE_REACH_M`` of the edge (the ring), stratified by depth into the zone: an
    edge pixel in the zone's outer strip (``ZONE_BORDER_M`` from its outline) takes the
    density of ring pixels in its own ``ZONE_BAND_M`` depth band, one deeper that of ring
    pixels deeper than the strip (see ``ZONE_BORDER_M`` for why). A stratum with less than
    ``MIN_RING_M2`` read falls back to the whole strip, then to the whole ring. A ring in a
    cloud's shadow under-fills as the read part there does (fewer footprints found).

    Parameters
    ----------
    block_teu : list of (ndarray (row, col) of bool, (float, float, float, float))
        Each stack block's footprint and its TEU, ground slots (20 ft slots), 20 ft and
        40 ft boxes.
    inside, ok, thin : ndarray (row, col) of bool
        The zone; the pixels read for footprints; the thin cloud edge the cloud mask
        passes as clear but the counter does not read.
    res : float
        Pixel size (m).

    Returns
    -------
    ((float, float, float, float), float)
        TEU, ground slots, 20 ft and 40 ft boxes added, and the variance of the TEU added
        (TEU^2); zeros without a thin edge in the zone or read pixels within
        ``THIN_EDGE_REACH_M`` of it.
    """
    none = (0.0, 0.0, 0.0, 0.0), 0.0
    if not (inside & thin).any():
        return none
    # Work on the zone's bounding box, one pixel wider so that its outline is inside it:
    # the edge and the ring both lie in the zone, so nothing outside it counts.
    rows, cols = np.nonzero(inside)
    r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, inside.shape[0])
    c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, inside.shape[1])
    win = (slice(r0, r1), slice(c0, c1))
    zone = inside[win]
    edge = zone & thin[win]
    near = zone & ok[win] & (ndimage.distance_transform_edt(~edge) * res <= THIN_EDGE_REACH_M)
    if not near.any():
        return none
    # Depth into the zone (m) from its outline: the window's border rows and columns are
    # outside the zone, except where the zone runs off the image, whose edge is no outline
    # (the distance transform does not take the array's border for background).
    depth = ndimage.distance_transform_edt(zone) * res if not zone.all() else np.full(zone.shape, np.inf)
    strip = depth < ZONE_BORDER_M
    band = np.where(strip, np.floor(depth / ZONE_BAND_M), -1).astype(int)
    blobs = [(blob[win], np.asarray(v, float)) for blob, v in block_teu]
    sizes = [max(int(b.sum()), 1) for b, _ in blobs]
    min_px = MIN_RING_M2 / (res * res)

    def density(ring):
        # Each block's TEU, slots and boxes spread evenly over its footprint: per pixel of the ring.
        tot = sum((v * (b & ring).sum() / n for (b, v), n in zip(blobs, sizes)), np.zeros(4))
        return tot / ring.sum()

    def first_dense(*rings):
        for ring in rings:
            if ring.sum() >= min_px:
                return density(ring)
        return density(near)

    fill = np.zeros(4)
    for b in np.unique(band[edge]):
        n_part = int((edge & (band == b)).sum())
        if b >= 0:
            # In the strip: the read pixels at the same depth, else the whole strip's.
            fill += n_part * first_dense(near & (band == b), near & strip)
        else:
            fill += n_part * first_dense(near & ~strip)
    teu, slots, n20, n40 = (float(x) for x in fill)
    return (teu, slots, n20, n40), (THIN_EDGE_REL_SD * teu) ** 2


def _aprons(zones: Mapping[str, Polygon], grid: GridSpec) -> np.ndarray:
    out = np.zeros(grid.shape, bool)
    for zone in zones.values():
        out |= _mask(zone.buffer(3.0 * max(grid.resolution, 1.0)), grid) & ~_mask(zone.buffer(-1.0), grid)
    return out


def _cloud_shade(pix, grid, ok, azimuth, elevation) -> tuple[np.ndarray, np.ndarray]:
    """(thin edge, shadow) of the clouds ``ok`` leaves out, each (row, col) of bool."""
    cloud = ~ok & np.all(np.isfinite(pix), axis=0)
    none = np.zeros(ok.shape, bool)
    # The veil within a few metres of the cloud mask: without the sun, only it.
    edge = cloud_shade(pix, grid, cloud, model=None)
    # Projection of the cloud mask and its thin edge only: the colour cue (shaded
    # pavement over a whole 40 m window) takes a packed yard, dark between its blocks,
    # for a cloud's shadow.
    shade = cloud_shade(pix, grid, cloud, model=None, sun_azimuth_deg=azimuth, sun_elevation_deg=elevation)
    edge = none if edge is None else edge
    return edge, (none if shade is None else shade & ~edge)


def _tarp_patches(mask: np.ndarray, grid: GridSpec) -> list[list[float]]:
    """The flagged tarp patches of a block (``mask``: its tarp pixels) as [x, y, area]:
    centroid in the image CRS (m) and area (m^2), so that a flag can be checked on the
    ground (one patch is one tarped stack, or adjacent tarped stacks under one cover)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    rc = ndimage.center_of_mass(mask, labels, idx)
    area = ndimage.sum(mask, labels, idx) * grid.resolution ** 2
    out = []
    for (r, c), a in zip(rc, area):
        t = grid.transform
        x, y = t.c + (c + 0.5) * t.a, t.f + (r + 0.5) * t.e
        out.append([round(float(x), 1), round(float(y), 1), round(float(a), 1)])
    return out


# A tarpaulin is dull cloth: grey, olive or tan, not the saturated liveries (red,
# orange, blue, green) of container paint nor the bright white of reefers. Chroma is
# (max - min) / mean of the visible bands. Brightness is the cloth's own surface
# reflectance (mean of the visible bands, 0-1): mid-tone cloth reflects some 8-30 %,
# white and light-grey paint more, black and dark-brown paint less (a ceiling of 35 %
# flagged light-grey boxes of about 33 % in changedet's own simulator). It used to be
# relative to the lit pavement (0.35-1.2 times it), which fits only a concrete yard
# (about 25 %): on asphalt (about 9 %) every grey or tan cover was "too bright", and in
# the independent yards 98 of 446 tarped stacks were missed for that alone.
_TARP_MAX_CHROMA = 0.45
_TARP_REFLECTANCE = (0.08, 0.30)


def _dull_tops(blob: np.ndarray, pix: np.ndarray, px_m2: float) -> np.ndarray:
    """Plain patches of dull colour, at least half a 20 ft slot large, in a stack block.

    Parameters
    ----------
    blob : ndarray (y, x) of bool
        The stack block.
    pix : ndarray (band, y, x)
        Surface reflectance (0-1), bands B, G, R first.
    px_m2 : float
        Area of a pixel (m^2).

    Returns
    -------
    ndarray (y, x) of bool
        The dull patches kept.

    Limits: a tarp in a saturated colour (bright blue) passes for container paint, and
    a grey or dark-grey box (or a dull brown one) for a tarp: colour alone cannot tell
    them, so precision is low where such boxes are common. The brightness gate assumes
    surface reflectance; an image in other units would need it rescaled.
    """
    out = np.zeros_like(blob)
    rows, cols = np.nonzero(blob)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    rgb = pix[:3, r0:r1, c0:c1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = rgb.mean(axis=0)
        chroma = (rgb.max(axis=0) - rgb.min(axis=0)) / np.maximum(mean, 1e-4)
    dull = blob[r0:r1, c0:c1] & (chroma < _TARP_MAX_CHROMA) & (mean > _TARP_REFLECTANCE[0]) \
        & (mean < _TARP_REFLECTANCE[1])
    # Plain cloth: drop dull specks and strips (box edges, seams, shaded rims).
    dull = ndimage.binary_opening(dull, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(dull)
    if n:
        areas = ndimage.sum(dull, labels, index=np.arange(1, n + 1)) * px_m2
        keep = np.concatenate([[False], areas >= 0.5 * SLOT_M2])
        out[r0:r1, c0:c1] = keep[labels]
    return out


# Side of the square opening the candidates for pavement-coloured tops (m): narrower
# than a box (2.44 m) less a blurred pixel on each side. The opening used to be about
# 2.5 m square at 0.5 m pixels (5 x 5), which removed every single grey box or tarp
# one box wide. Never under 2 x 2 pixels: a single pixel is a speck at any resolution.
TARP_OPENING_M = 1.6


def _tarp_tops(cand: np.ndarray, ground_dark: np.ndarray, boxes: np.ndarray, res: float,
               azimuth: float) -> np.ndarray:
    """Stack tops in the colour of pavement: tarpaulins (grey, olive, tan cloth).

    Colour cannot tell a grey tarp from concrete; height can. A patch of ground colour
    (``cand``: lit or half-lit pavement colour, not a container) that throws a shadow
    along its whole anti-sun edge stands above the ground: a covered stack. Open
    pavement between blocks borders the next block or lit pavement on that side, and
    is only shaded on its sun side (by the block before it).
    """
    out = np.zeros_like(cand)
    # Drop specks and thin strips, but keep a single box: the square must fit inside a
    # 2.44 m wide top whose blurred sides are lost to the classification.
    k = max(2, int(TARP_OPENING_M / res))
    cand = ndimage.binary_opening(cand, structure=np.ones((k, k), bool))
    labels, n = ndimage.label(cand)
    if n == 0:
        return out
    dr, dc = _anti_sun_step(azimuth)
    rows, cols = cand.shape
    px_m2 = res * res
    objs = ndimage.find_objects(labels)
    for lab, sl in enumerate(objs, start=1):
        comp = labels[sl] == lab
        area = comp.sum() * px_m2
        # Half a 20 ft box to a row of three 40 ft boxes under one cover.
        if area < 0.5 * SLOT_M2 or area > 6 * 2 * SLOT_M2:
            continue
        rr, cc = np.nonzero(comp)
        rr, cc = rr + sl[0].start, cc + sl[1].start
        nr = np.clip(np.round(rr + 2 * dr).astype(int), 0, rows - 1)
        nc = np.clip(np.round(cc + 2 * dc).astype(int), 0, cols - 1)
        sr = np.clip(np.round(rr - 2 * dr).astype(int), 0, rows - 1)
        sc = np.clip(np.round(cc - 2 * dc).astype(int), 0, cols - 1)
        anti = labels[nr, nc] != lab
        sun = labels[sr, sc] != lab
        if anti.sum() < 4 or sun.sum() < 4:
            continue
        # Anti-sun side: its own shadow, or a neighbouring stack it leans on.
        shade = ground_dark[nr[anti], nc[anti]]
        held = shade | boxes[nr[anti], nc[anti]]
        # Sun side: open to the sun; a lane of pavement is shaded there by the block before it.
        sun_dark = ground_dark[sr[sun], sc[sun]].mean()
        if held.mean() >= 0.7 and shade.mean() >= 0.3 and sun_dark < 0.5:
            out[rr, cc] = True
    return out


# Fewest pixels of certain shade to measure its colour from.
SHADE_MIN_SAMPLES = 30
# Floor of a band's chromaticity spread (its share of the summed reflectance, about
# 0.25): 2 % of it, the relative texture floor of :class:`GroundModel`'s spreads.
CHROMA_FLOOR = 0.005


def _learn_shade(start, box, lit_ground, seen, pix, res, azimuth, elevation) -> np.ndarray | None:
    """(n, band) samples of pavement certainly in shade: inside the shadow walks that
    leave a block's anti-sun edge (``start``) and reach lit pavement within the longest
    possible shadow. The first step (mixed with the box's edge) and the last (the
    penumbra) are left out. None when fewer than ``SHADE_MIN_SAMPLES`` are seen.

    Limit: a box the first classification missed, right behind the edge, is sampled as
    shade; the median and MAD keep that to a minority's effect.
    """
    lengths, censored, r0, c0 = _shadow_lengths(start, box, lit_ground, seen, res, azimuth, elevation)
    ok = ~censored & (lengths >= 3)
    if ok.sum() < 5:
        return None
    dr, dc = _anti_sun_step(azimuth)
    rows, cols = [], []
    for k in range(2, int(lengths[ok].max())):
        m = ok & (lengths > k)
        rows.append(np.round(r0[m] + k * dr).astype(int))
        cols.append(np.round(c0[m] + k * dc).astype(int))
    if not rows:
        return None
    r, c = np.concatenate(rows), np.concatenate(cols)
    s = pix[:, r, c].T
    s = s[np.all(np.isfinite(s), axis=1)]
    return s if s.shape[0] >= SHADE_MIN_SAMPLES else None


# Shade is the same pavement as lit ground under another illuminant (the sky alone): its
# texture, relative to its level, is the lit pavement's. Its spread may exceed that
# relative spread by at most this factor (noise, sky seen more or less). The samples
# (:func:`_learn_shade`) hold mixed pixels and box tops the first pass missed, more of
# them at coarse pixels: in an independent yard at 0.8 m (seed 1175) their MAD came out
# at 70-90 % of the shade's level, and half the box pixels of coloured boxes on concrete
# passed as ground (ground slots 58 of 153). Capped, 146. On the tuning yards (101-128, 84
# clear 0.8 m zones) TEU error 17.6 -> 14.0 %, bias -8.6 -> -3.7 %, slots bias -2.8 -> +3.1 %;
# on 101-122 all zones 15.39 -> 14.68 %, and a cap of 3 gave 14.79 %.
# Limit: the cap narrows the spread, not the colour: with most samples paint, the median
# is greyer and brighter than real shade, which is then judged by hue (darker than the
# shade measured) and may read as box.
SHADE_REL_SPREAD = 2.0


def _shade_spread_cap(model: GroundModel, shadow: np.ndarray) -> np.ndarray:
    """Largest believable spread of shade on the pavement of ``model``.

    Parameters
    ----------
    model : GroundModel
        Ground model with the lit pavement's colour and spread (surface reflectance).
    shadow : ndarray (band,)
        The shade's colour (surface reflectance).

    Returns
    -------
    ndarray (band,)
        ``SHADE_REL_SPREAD`` times lit pavement's relative spread, times ``shadow``
        (surface reflectance).
    """
    rel = model.lit_sd / np.maximum(np.abs(model.lit), 1e-6)
    return SHADE_REL_SPREAD * rel * np.abs(shadow)


def _chroma(p: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return p / np.sum(p, axis=axis, keepdims=True)


def _reclassify(model: GroundModel, shade_samples: np.ndarray, apron_samples: np.ndarray, pix: np.ndarray,
                around: np.ndarray) -> tuple[GroundModel, np.ndarray, np.ndarray, np.ndarray]:
    """Ground model with the shade colour seen in the shadows; for the pixels ``around``
    (row, col): distance to ground and lit fraction as :meth:`GroundModel.classify`, and
    distance in hue (chromaticity) to the lit-shade segment, in spreads.

    Shade is lit by the sky alone, bluer than direct sun: its colour is measured
    (``shade_samples``, :func:`_learn_shade`), not assumed. Ground, lit, shaded or
    mixed, keeps a chromaticity on the segment between those of lit pavement (the
    bright part of ``apron_samples``) and shade, since a mix of two colours has a
    chromaticity between theirs; paint of about the pavement's brightness (brown, dark
    green, pale blue) does not. Pixels darker than the shade measured are judged by hue
    alone (distance 0): deeper shade (less sky seen in a narrow lane, a cloud's shadow
    over a stack's) keeps the hue. Limit: a black or dark-grey box there is ground, and
    the walks of the blocks around it run over it (heights too tall): a yard of black
    boxes under a blue sky counts none.
    """
    shadow, shadow_sd = robust_ref(shade_samples)
    shadow_sd = np.maximum(np.minimum(shadow_sd, _shade_spread_cap(model, shadow)), shadow_spread_floor(shadow))
    model = replace(model, shadow=shadow, shadow_sd=shadow_sd)
    # Pixels outside ``around`` (all bands NaN) come out NaN; FP errors of the chromaticity
    # of black pixels are NaN too (np.errstate is per thread, unlike warnings filters).
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        d, alpha = model.classify(np.where(around[None], pix, np.nan))
        a = apron_samples[np.all(np.isfinite(apron_samples), axis=1)]
        bright = a.mean(axis=1)
        lit_c, lit_c_sd = robust_ref(_chroma(a[bright >= np.percentile(bright, 60)], 1))
        sh_c, sh_c_sd = robust_ref(_chroma(shade_samples, 1))
        lit_c_sd = np.maximum(lit_c_sd, CHROMA_FLOOR)
        sh_c_sd = np.maximum(sh_c_sd, CHROMA_FLOOR)
        c = _chroma(np.where(around[None], pix, np.nan), 0)
        shape = c.shape[1:]
        c = c.reshape(c.shape[0], -1)
        span = (lit_c - sh_c)[:, None]
        t = np.clip(np.nansum((c - sh_c[:, None]) * span, axis=0) / max(float((span ** 2).sum()), 1e-12), 0, 1)
        sd = sh_c_sd[:, None] + t * (lit_c_sd - sh_c_sd)[:, None]
        # The hue of deeper shade is noisier in proportion to its darkness.
        bright = quiet_nanmean(np.where(around[None], pix, np.nan), axis=0)
        deep = (bright < float(shadow.mean())).reshape(-1)
        sd = sd * np.where(deep, float(shadow.mean()) / np.maximum(bright.reshape(-1), 1e-3), 1.0)
        off = np.sqrt(quiet_nanmean(((c - (sh_c[:, None] + t * span)) / sd) ** 2, axis=0)).reshape(shape)
        d = np.where(deep.reshape(shape), 0.0, d)
    return model, d, alpha, off


def _ground_slots(blob: np.ndarray, res: float) -> float:
    """20 ft ground slots of a stack block, counted row by row along its long axis.

    Boxes stand in rows, side by side across the row and end to end along it, with gaps
    (``GAP_ACROSS_M``, ``GAP_ALONG_M``) narrower than a pixel that fill in wholly or in
    part. Area over the box's own 14.8 m^2 then counts the gaps as boxes (+20 % in a
    full block). Instead, the block is turned so its rows run along the columns; at each
    step along the row, every run of block pixels across it holds
    round((run - blur + gap) / (2.44 + gap)) rows, whether the gaps between its rows
    filled in or not; ``blur`` is the outline's mixed pixels read as box
    (``EDGE_BLUR_PX``, only at pixels coarser than ``2 * STACK_GAP_M``; elsewhere
    zero), and the rounding drops what is left of it. Row length, less the same blur per
    row, over the 20 ft pitch along the row (6.06 m + gap, an end gap added per row)
    gives the slots. The long axis of the block is taken as the rows' direction; where it
    is not (a block one or two bays long) the row count still rounds whole boxes.

    Parameters
    ----------
    blob : numpy.ndarray of bool
        The block's footprint (row, column), on the image's grid.
    res : float
        Pixel size (m).

    Returns
    -------
    float
        20 ft ground slots (a 40 ft box covers two).
    """
    rows, cols = np.nonzero(blob)
    if rows.size < 3:
        return float(rows.size * res * res / SLOT_M2)
    # A hole inside a block is a box top in the shade of a taller neighbour (low sun),
    # too dark to tell from pavement by colour.
    crop = ndimage.binary_fill_holes(blob[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    x, y = cols - cols.mean(), -(rows - rows.mean())
    w, v = np.linalg.eigh(np.cov(np.vstack([x, y])))
    angle = math.degrees(math.atan2(v[1, 1], v[0, 1]))
    # Turn the long axis onto the column axis (rotate is counter-clockwise as displayed).
    turned = ndimage.rotate(np.pad(crop, 2).astype("float32"), -angle, order=1, reshape=True) > 0.5
    # A notch of about one box in the block's outline is likewise a shaded top: close
    # with a rectangle a little larger than a box (3 x 7 m), which spans no empty
    # 40 ft slot and no step between rows of different lengths.
    k = (int(round(3.0 / res)) | 1, int(round(7.0 / res)) | 1)
    turned = ndimage.binary_closing(np.pad(turned, ((k[0], k[0]), (k[1], k[1]))),
                                    structure=np.ones(k, bool))[k[0]:-k[0], k[1]:-k[1]]
    t = np.pad(turned, ((1, 1), (0, 0)))
    starts = np.nonzero((t[1:] & ~t[:-1]).T)
    ends = np.nonzero((~t[1:] & t[:-1]).T)
    run_m = (ends[1] - starts[1]) * res
    # Mixed pixels read as box at every pixel size; STACK_GAP_M serves here only as the
    # pixel-size threshold _stack_tiers also uses. At 0.3-0.5 m the widening (0.15-0.25 m
    # at EDGE_BLUR_PX) plus the grid's +-half pixel stays under half a row pitch and the
    # slots there already read -5 to +1.4 %, so subtracting would under-count. At 0.8 m a
    # run across n rows was often half a row pitch (2.79 m) too long and a block of n rows
    # read n + 1 (ground slots +6 to +7 % on yards 189-194, 231-242).
    blur = EDGE_BLUR_PX * res if res > 2.0 * STACK_GAP_M else 0.0
    per_run = np.round((run_m - blur + GAP_ACROSS_M) / (2.44 + GAP_ACROSS_M))
    n_rows = np.bincount(starts[0], weights=per_run, minlength=t.shape[1])
    # A row (or a piece of one) begins wherever the count of rows steps up along the row.
    row_ends = np.maximum(np.diff(n_rows, prepend=0.0), 0.0).sum()
    # The same blur lengthens each row (piece) along: EDGE_BLUR_PX over its two ends.
    # (row_ends <= n_rows.sum(), so the length stays positive while EDGE_BLUR_PX <= 1.)
    length = n_rows.sum() * res - row_ends * blur
    return float((length + row_ends * GAP_ALONG_M) / (6.06 + GAP_ALONG_M))


# Along a row, a box's end shows as a change of paint or a dark gap between boxes. Runs of
# one paint about a 20 ft box long (6.06 m) are 20 ft boxes; runs about a 40 ft slot
# long (12.19 m) are 40 ft boxes, or two 20 ft boxes of one colour (ISO 668 pairs fill
# a 40 ft slot end to end, so the footprint alone cannot tell them: the share of 20 ft
# boxes is biased low by the chance that paired neighbours match).
BOX_EDGE_REL = 0.2           # relative colour change (L1 over mean) that marks a box end
RUN_20FT_M = (4.5, 8.5)      # run lengths read as one 20 ft box (m)
RUN_40FT_M = (10.5, 14.0)    # run lengths read as one 40 ft slot (m)


def _share_20ft(own, zone, everything, res: float) -> tuple[float, float]:
    """Share of a block's TEU in 20 ft boxes, and its standard deviation.

    ``own``, ``zone``, ``everything``: (row length in 20 ft runs, in 40 ft runs, runs)
    from :func:`_box_runs` for the block, its zone and the image; the first with runs
    over about three box widths of rows is used. Each box is crossed by about 2.44 m /
    ``res`` pixel rows, so the independent runs are fewer than the runs read. With none,
    half and half, with the spread of a uniform share (0.29).
    """
    for len20, len40, n in (own, zone, everything):
        n_eff = n * res / 2.44
        if n_eff >= 3.0 and len20 + len40 > 0:
            share = float(len20 / (len20 + len40))
            # Binomial spread over the independent runs, plus a floor for the paired
            # 20 ft boxes of one colour that read as 40 ft slots.
            return share, math.sqrt(share * (1.0 - share) / n_eff + 0.1 ** 2)
    return 0.5, 0.29


def _row_frame(blob: np.ndarray) -> tuple[tuple[slice, slice], float]:
    """The bounding box of a block and the angle (degrees) that turns its long axis onto the columns."""
    rows, cols = np.nonzero(blob)
    x, y = cols - cols.mean(), -(rows - rows.mean())
    v = np.linalg.eigh(np.cov(np.vstack([x, y])))[1]
    sl = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    return sl, math.degrees(math.atan2(v[1, 1], v[0, 1]))


def _box_runs(blob: np.ndarray, pix: np.ndarray, res: float) -> tuple[float, float, int]:
    """Row length (m) read as 20 ft boxes and as 40 ft slots in a stack block, and the runs read.

    The block is turned so its rows run along the columns (as in :func:`_ground_slots`);
    along every pixel row of it, a box end is where the colour two pixels apart (about
    1 m) changes by more than ``BOX_EDGE_REL`` of its brightness, or the block ends.
    Runs between ends are sorted by length into ``RUN_20FT_M`` and ``RUN_40FT_M``; others
    (a shadow's edge across a box top, a logo, blur) are not read.
    """
    if blob.sum() < 9:
        return 0.0, 0.0, 0
    sl, angle = _row_frame(blob)
    crop = np.pad(blob[sl], 2).astype("float32")
    mask = ndimage.rotate(crop, -angle, order=1, reshape=True) > 0.5
    # Half a pixel in from the outline: the block's edge blends box paint with pavement.
    mask = ndimage.binary_erosion(mask)
    bands = np.stack([ndimage.rotate(np.pad(np.nan_to_num(b[sl]), 2).astype("float32"), -angle, order=1,
                                     reshape=True) for b in pix])
    step = max(1, int(round(1.0 / res)))
    a, b = bands[:, :, :-step], bands[:, :, step:]
    rel = np.abs(a - b).sum(axis=0) / np.maximum(0.5 * (a + b).sum(axis=0), 1e-3)
    both = mask[:, :-step] & mask[:, step:]
    # The change between columns c and c + step is placed at their middle.
    edge = np.zeros(mask.shape, bool)
    edge[:, step // 2:step // 2 + rel.shape[1]] = (rel > BOX_EDGE_REL) & both
    len20 = len40 = 0.0
    n = 0
    for r in range(mask.shape[0]):
        m = mask[r]
        if m.sum() * res < RUN_20FT_M[0]:
            continue
        # Box ends: the row's own ends and the middle of every run of changed pixels.
        t = np.concatenate([[False], m, [False]])
        ends = list(np.nonzero(t[1:] != t[:-1])[0])
        e = np.concatenate([[False], edge[r] & m, [False]])
        on, off = np.nonzero(e[1:] & ~e[:-1])[0], np.nonzero(~e[1:] & e[:-1])[0]
        cuts = np.sort(np.concatenate([np.asarray(ends, float), 0.5 * (on + off)]))
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            mid = int(0.5 * (lo + hi))
            if not m[min(mid, m.size - 1)]:
                continue
            length = (hi - lo) * res
            if RUN_20FT_M[0] <= length <= RUN_20FT_M[1]:
                len20 += length
                n += 1
            elif RUN_40FT_M[0] <= length <= RUN_40FT_M[1]:
                len40 += length
                n += 1
    return len20, len40, n


def _mask(poly: Polygon, grid: GridSpec) -> np.ndarray:
    if poly.is_empty:
        return np.zeros(grid.shape, bool)
    return rfeatures.rasterize([(poly, 1)], out_shape=grid.shape, transform=grid.transform, fill=0,
                               dtype="uint8").astype(bool)


_NO_WALKS = (np.array([]), np.array([], bool), np.array([], int), np.array([], int))


def _reach_m(elevation: float) -> float:
    """How far beyond a zone to look for shadows (m): the longest one plus a margin."""
    return min(MAX_TIERS * TIER_M / math.tan(math.radians(max(elevation, 5.0))), 80.0) + 5.0


def _pool(walks: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    if not walks:
        return _NO_WALKS
    return np.concatenate([w[0] for w in walks]), np.concatenate([w[1] for w in walks])


def _anti_sun_step(azimuth: float) -> tuple[float, float]:
    """One pixel's step away from the sun, (row, col): +row is south, +col is east.

    Parameters
    ----------
    azimuth : float
        Sun azimuth (degrees clockwise from north).

    Returns
    -------
    tuple of float
        The unit step (rows, cols) along which shadows fall.
    """
    az = math.radians(azimuth)
    return math.cos(az), -math.sin(az)


def _shadow_lengths(blob, box, lit_ground, seen, res, azimuth, elevation,
                   shade_share=None) -> tuple[np.ndarray, ...]:
    """Shadow walks beyond a block's anti-sun edge: lengths (pixels), censored flags and
    the (row, col) pixel each walk starts from.

    From every pixel on the block's outline (holes filled: a hole is a lower top in the
    shade of the stacks around it) whose next pixel away from the sun is not a
    container, walk away from the sun until lit pavement (``lit_ground``, at least
    ``LIT_RUN_M`` of it in a row, never a container pixel): that walk measures the
    shadow. Specks that are neither (noise, a dark patch of ground) do not end a
    shadow, nor do painted lines in it (as bright as lit asphalt, narrower than a metre).
    A walk cut short first (by another block across a lane, by unobserved pixels:
    cloud, image edge, beyond the classified area ``seen``; or at the longest possible
    shadow) only says the shadow is at least that long: it is censored. Dropping
    censored walks would keep only the short shadows wherever lanes are narrower than
    the shadows (low sun) and bias heights low; they enter the Kaplan-Meier estimate in
    :func:`_tiers_from` instead.

    With ``shade_share`` (rows, cols: each pavement pixel's share of shade, 0 lit to 1
    shaded; NaN where not pavement), a walk seen to end is read to a fraction of a
    pixel from the two pixels across its end (:func:`_sub_pixel_end`). The walk still
    starts at the start pixel's centre: the caller (``count_containers``) moves it to
    the roof edge with :func:`_from_roof_edge`.
    """
    el = math.radians(max(elevation, 5.0))
    dr, dc = _anti_sun_step(azimuth)
    max_len_px = int(math.ceil(MAX_TIERS * TIER_M / math.tan(el) / res)) + 2
    rr, cc = np.nonzero(blob)
    rows, cols = blob.shape
    nr = np.clip(np.round(rr + dr).astype(int), 0, rows - 1)
    nc = np.clip(np.round(cc + dc).astype(int), 0, cols - 1)
    # Walks leave the block's outline only. A hole in a block is a lower top in the
    # shade of taller stacks around it (or a top in pavement colour): a walk across it
    # measures a height difference, or ends on the grey top, not on the ground.
    outline = _filled(blob, res)
    edge = ~box[nr, nc] & ~outline[nr, nc]
    rr, cc = rr[edge], cc[edge]
    rr, cc = _steep(outline, rr, cc, dr, dc, res)
    if rr.size == 0:
        return _NO_WALKS
    r_start, c_start = rr, cc
    length = np.zeros(rr.size)
    alive = np.ones(rr.size, bool)
    ended = np.zeros(rr.size, bool)
    # Lit pixels met so far in a row, not yet a shadow's end (a painted line in the shade).
    pending = np.zeros(rr.size)
    run = _lit_run_px(res)
    for k in range(1, max_len_px + 1):
        r = np.round(rr + k * dr).astype(int)
        c = np.round(cc + k * dc).astype(int)
        inb = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        r, c = np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)
        # A container is never lit pavement, whatever its colour (grey boxes on concrete).
        lit = lit_ground[r, c] & inb & ~box[r, c]
        blocked = ~inb | ~seen[r, c] | box[r, c]
        pending = np.where(alive & lit, pending + 1, pending)
        done = alive & lit & (pending >= run)
        # Cut off after lit pavement began: the shadow ended where it began.
        ended |= done | (alive & ~lit & blocked & (pending > 0))
        alive &= ~done & ~(blocked & ~lit)
        # Shade again after a short lit run: the run was a bright mark inside the shadow.
        shaded = alive & ~lit
        length = np.where(shaded, length + pending + 1, length)
        pending = np.where(shaded, 0, pending)
    ended |= alive & (pending > 0)
    keep = length > 0
    if shade_share is not None:
        length = np.where(ended & keep, _sub_pixel_end(length, rr, cc, dr, dc, shade_share), length)
    return length[keep], ~ended[keep], r_start[keep], c_start[keep]


def _sub_pixel_end(length, rr, cc, dr, dc, shade_share) -> np.ndarray:
    """Walk lengths (pixels) read to a fraction of a pixel at the shadow's end.

    A pixel integrates the light over its area: where the shadow's end crosses it, its
    share of shade (``shade_share``, from its colour between lit pavement and shade) is
    the share of its length in shadow. A walk counts the pixels ``1..n`` before lit
    pavement, a pixel counted when its centre lies in shadow (share over one half);
    with the end at ``s`` pixels from the start pixel's centre, the shares of the last
    shaded pixel ``n`` and the first lit one ``n + 1`` add up to ``s - n + 1/2``, so
    ``n - 1`` plus those two shares is ``s - 1/2`` for any phase of the end within the
    pixel, for walks along a pixel axis: a whole-pixel count, ``n = floor(s)``, is
    ``s - 1/2`` only on average, and off by up to half a pixel (0.25 tiers at 0.8 m
    pixels and a 58 degree sun) each walk. A blur (PSF) spreads the end over the
    neighbours too, about evenly both ways (sd 0.03-0.08 px on an axis). A last pixel
    that is not pavement (a speck, paint) counts whole, as before.

    Limits. On oblique walks the two pixels are read at their rounded centres, up to
    0.7 px off the walk, and consecutive steps are 1 or sqrt 2 px apart: the reading
    keeps an sd of 0.13-0.39 px there (whole pixels 0.35-0.56) and the whole-pixel
    count's direction-dependent mean (-0.17 to +0.09 px). Summing shares read at the
    walk's own points (bilinear, steps ``n - 1 .. n + 2``) is exact in geometry (sd
    0.02-0.12 px) but reads two more pixels, each adding its noise and its level offset
    (below), and did no better on the yard benches. The shares are read against the
    zone's lit-pavement and shade colours, not the local ones: on the bench scenes lit
    pavement next to the ends reads 0.07-0.25 shade and full shade 0.81-1.00, so about
    a third of the quantisation is left and each scene is offset by -0.1 to +0.2 px.
    """
    rows, cols = shade_share.shape
    n = length.astype(int)
    r1 = np.clip(np.round(rr + n * dr).astype(int), 0, rows - 1)
    c1 = np.clip(np.round(cc + n * dc).astype(int), 0, cols - 1)
    r2 = np.clip(np.round(rr + (n + 1) * dr).astype(int), 0, rows - 1)
    c2 = np.clip(np.round(cc + (n + 1) * dc).astype(int), 0, cols - 1)
    last, first = shade_share[r1, c1], shade_share[r2, c2]
    last = np.where(np.isfinite(last), last, 1.0)
    first = np.where(np.isfinite(first), first, 0.0)
    return length - 1.0 + last + first


# Least contrast between a top and its shadow (reflectance, L2 over the bands) for the
# roof edge to be located by its colour: below it a pixel's share is lost in the noise.
# With signal-dependent noise of 1 % + 0.003 reflectance per band, the offset's sd is
# about 0.12 px at a contrast of 0.05 and 0.02-0.04 px at a red or grey-tarp top's contrast
# (s42 review, noise-free 1-D profiles plus that noise); set once, not tuned.
ROOF_EDGE_MIN_CONTRAST = 0.04
# Range of the edge offset (pixels beyond the start pixel's centre). Blocks are classed
# by colour distance, so the start pixel is mostly top (offset >= -1/2) and the first
# walk pixel, not a box, holds a small roof share only (offset <= 1). A wrong reference
# sample can move a walk by no more than this.
ROOF_EDGE_OFFSET_PX = (-0.5, 1.0)


def _roof_edge_offset(length, rr, cc, dr, dc, pix, blob, shade_share) -> np.ndarray:
    """Where the roof edge lies along each walk, in pixels beyond its start pixel's centre.

    A shadow is cast from the roof edge; seen from above (nadir) the edge and the foot of
    the wall coincide, so the shadow is ``h / tan(el)`` long from the roof edge's ground
    position to its end. The walk starts on the block's last pixel, classified by its
    colour distance from pavement, not at half contrast, so the true edge lies off its
    centre by up to about a pixel, more beyond it than before it (widened by a bright
    top's blur, narrowed by a dull one's); the offset read is clipped to
    ``ROOF_EDGE_OFFSET_PX`` (-1/2 to 1 pixel). Each pixel integrates the light over its
    area after the sensor's PSF: the start pixel and the first walk pixel are mixtures
    of the top's colour (read two pixels back towards the sun, on the top) and the
    shadow's (two pixels along the walk; both samples two whole pixels away along the
    walk's major axis, so never the first walk pixel itself), and their roof shares
    ``f0 + f1`` add up to the edge's distance beyond the start pixel's centre plus one
    half, as at the shadow's end (:func:`_sub_pixel_end`). The edge stays at the start pixel's
    centre (offset 0) where a reference sample is not what it is taken for: the top's
    sample is not on the block (a gap, a neighbour's top), or the shadow's is not
    pavement at least half in shade (``shade_share`` under 1/2 or NaN: a lit gap, a
    painted line, another box); where the top is about as dark as its shadow (contrast
    under ``ROOF_EDGE_MIN_CONTRAST``); or where the walk is under three pixels (no
    shadow pixel to read).

    Limits: the first walk pixel is not checked. A lit pixel there (a lit gap at the
    roof edge) is read as roof and shortens the walk by up to half a pixel; the clip
    bounds it. ``f0 + f1 = e + 1/2`` is exact for walks along a pixel axis only: on
    rotated, blurred synthetic edges (8x8 area integration, PSF 0.45-0.75 px, noise-free)
    walks 30-45 degrees off a pixel axis keep a bias of about +0.18 px (within 6 degrees
    of an axis +0.02 px; the start pixel's centre alone: +0.45 to +0.60). Samples taken at
    two steps along the walk instead round, within about 3.6 degrees of a diagonal, to
    the first walk pixel itself (its share then reads 0): that left +0.24 px.

    Parameters
    ----------
    length : numpy.ndarray
        Walk lengths (pixels).
    rr, cc : numpy.ndarray
        Start pixel (row, col) of each walk.
    dr, dc : float
        Unit step away from the sun (row, col).
    pix : numpy.ndarray
        Reflectance (bands, rows, cols).
    blob : numpy.ndarray
        The block the walks start on (bool, rows, cols): the top's sample must lie on it.
    shade_share : numpy.ndarray
        Each pavement pixel's share of shade (0 lit to 1 shaded; NaN where not pavement,
        rows, cols): the shadow's sample must be at least half in shade.

    Returns
    -------
    numpy.ndarray
        Edge offset (pixels) beyond each start pixel's centre: subtract it from the walk.
    """
    _, rows, cols = pix.shape

    # Two whole pixels along the walk's major axis: 2 steps on an axis, 2.83 on a diagonal.
    ref = 2.0 / max(abs(dr), abs(dc))

    def at(k):
        r = np.round(rr + k * dr).astype(int)
        c = np.round(cc + k * dc).astype(int)
        inb = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        return np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1), inb

    rt, ct, in_t = at(-ref)
    r0, c0, _ = at(0)
    r1, c1, _ = at(1)
    rs, cs, in_s = at(ref)
    top, p0, p1, shadow = pix[:, rt, ct], pix[:, r0, c0], pix[:, r1, c1], pix[:, rs, cs]
    with np.errstate(invalid="ignore"):
        refs_ok = in_t & blob[rt, ct] & in_s & (shade_share[rs, cs] >= 0.5)
    v = top - shadow
    norm2 = (v * v).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f0 = np.clip(((p0 - shadow) * v).sum(axis=0) / norm2, 0.0, 1.0)
        f1 = np.clip(((p1 - shadow) * v).sum(axis=0) / norm2, 0.0, 1.0)
    e = np.clip(f0 + f1 - 0.5, *ROOF_EDGE_OFFSET_PX)
    ok = refs_ok & (np.sqrt(norm2) >= ROOF_EDGE_MIN_CONTRAST) & (length >= 3) & np.isfinite(e)
    return np.where(ok, e, 0.0)


def _from_roof_edge(walks: tuple[np.ndarray, ...], pix: np.ndarray, azimuth: float, blob: np.ndarray,
                    shade_share: np.ndarray) -> tuple[np.ndarray, ...]:
    """Shadow walks (:func:`_shadow_lengths`) measured from the roof edge.

    Parameters
    ----------
    walks : tuple of numpy.ndarray
        Lengths (pixels), censored flags, start rows and columns.
    pix : numpy.ndarray
        Reflectance (bands, rows, cols).
    azimuth : float
        Sun azimuth (degrees clockwise from north).
    blob : numpy.ndarray
        The block the walks start on (bool, rows, cols).
    shade_share : numpy.ndarray
        Each pavement pixel's share of shade (rows, cols; NaN where not pavement).

    Returns
    -------
    tuple of numpy.ndarray
        The same walks, each length less the roof edge's offset beyond its start pixel's
        centre (:func:`_roof_edge_offset`), so that ``length + WALK_END_PX`` is the shadow
        from the roof edge to its end (pixels).
    """
    lengths, censored, r0, c0 = walks
    if lengths.size == 0:
        return walks
    off = _roof_edge_offset(lengths, r0, c0, *_anti_sun_step(azimuth), pix, blob, shade_share)
    return lengths - off, censored, r0, c0


# Least sine of the angle between a walk and the block's edge it leaves. The walk ends
# where it crosses the shadow's side, which runs along the edge; that boundary is
# blurred over about a pixel (PSF, mixed pixels), and the walk crosses it at the angle
# theta, so the blur moves the walk's end by about a pixel over sin(theta). With the sun
# nearly along a block's long side (theta under 30 degrees) the shadow there is a sliver
# one or two pixels wide, the whole walk runs inside the blur and ends (or meets the
# blurred edge of the block) anywhere along it: tall stacks read as one tier.
MIN_EDGE_SINE = 0.5
# Scale over which the edge direction is read (m): longer than the step between stacks
# of different row lengths and the gaps between boxes, shorter than a box is wide.
EDGE_SCALE_M = 1.0


def _steep(outline: np.ndarray, rr: np.ndarray, cc: np.ndarray, dr: float, dc: float,
           res: float) -> tuple[np.ndarray, np.ndarray]:
    """The walk starts (rr, cc) whose walk (dr, dc) leaves the block's outline at an angle
    whose sine is at least ``MIN_EDGE_SINE``: the outward normal of the smoothed outline
    there is within 60 degrees of the walk."""
    if rr.size == 0:
        return rr, cc
    sigma = max(EDGE_SCALE_M / res, 1.0)
    pad = int(math.ceil(3 * sigma)) + 1
    r0, c0 = max(int(rr.min()) - pad, 0), max(int(cc.min()) - pad, 0)
    sub = outline[r0:int(rr.max()) + pad + 1, c0:int(cc.max()) + pad + 1].astype("float32")
    smooth = ndimage.gaussian_filter(sub, sigma)
    gr, gc = np.gradient(smooth)
    nr, nc = -gr[rr - r0, cc - c0], -gc[rr - r0, cc - c0]
    norm = np.hypot(nr, nc)
    keep = (nr * dr + nc * dc) >= MIN_EDGE_SINE * np.maximum(norm, 1e-9)
    return rr[keep], cc[keep]


# A shadow ends where lit pavement begins and goes on: painted lane lines and slot
# markings (0.1-0.3 m wide, white or yellow) are as bright in a stack's shadow as lit
# asphalt, and ending the walk on them cut the shadows of a yard's edge blocks at the
# line (tiers too low). One metre of lit pavement is wider than any marking and
# shorter than the lanes' lit strips.
LIT_RUN_M = 1.0


def _lit_run_px(res: float) -> int:
    """Lit pixels in a row that end a shadow walk (at least one)."""
    return max(1, int(math.ceil(LIT_RUN_M / res - 1e-9)))


def _filled(blob: np.ndarray, res: float | None = None) -> np.ndarray:
    """``blob`` with its holes filled, computed over its bounding box; with ``res`` (m),
    also its notches of about one box closed, as :func:`_ground_slots` closes them.

    A notch in a block's outline is mostly a lower stack's top in the shade of the
    taller stacks beside it (or a grey top of pavement colour): the ground-slot count
    takes it for boxes, and a shadow walk into it runs over that top (the height
    difference between the stacks, not a height) and ends on its lit part or at the
    next box. On the independent yards (heights that vary stack by stack) over a quarter
    of the walks were of this kind, all short: tiers biased low.
    """
    out = np.zeros_like(blob)
    rows, cols = np.nonzero(blob)
    if rows.size == 0:
        return out
    if res is not None:
        lab, n = ndimage.label(blob)
        if n > 1:
            # Each block is closed along its own rows: the principal axis of a group of
            # blocks stacked across the rows reads 90 degrees off, and a 7 m side across
            # the lanes filled every lane narrower than 7 m.
            pad = int(math.ceil(math.hypot(3.5, 1.5) / res)) + 1
            for i, sl in enumerate(ndimage.find_objects(lab), 1):
                r0, r1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, blob.shape[0])
                c0, c1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, blob.shape[1])
                out[r0:r1, c0:c1] |= _filled(lab[r0:r1, c0:c1] == i, res)
            return out | blob
    if res is None or rows.size < 3:
        sl = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        out[sl] = ndimage.binary_fill_holes(blob[sl])
        return out
    return _filled_one(blob, res)


# Widest gap between pieces of one stack block (m): a row of lower tops shaded from end
# to end by the taller row on its sun side (2.44 m of box and the gaps beside it) splits
# the block's colour mask in two. Driving lanes between blocks are wider (trucks,
# reach stackers and straddle carriers need 4 m or more).
BLOCK_JOIN_M = 3.0


def _blocks(mask: np.ndarray, res: float, min_area_m2: float = 8.0) -> tuple[np.ndarray, int]:
    """Label the stack blocks of a mask of container pixels: (labels, count).

    With the sun low or the stacks of uneven height, tops in the shade of taller
    neighbours are too dark to tell from pavement by colour, and a shaded row or bay
    splits a block into pieces. Each piece then counted its own rows (a shaded top
    between them counted in neither: ground slots 15-35 % low at 0.3 m pixels or a sun
    under 30 degrees), and its walks started at the shaded top beside it, measuring the
    step between stacks rather than a height. Pieces less than ``BLOCK_JOIN_M`` apart are
    one block; its footprint is their union with the notches of about one box closed
    and holes filled (the 3 x 7 m rectangle along the block's rows of
    :func:`_ground_slots`). Only pieces of at least ``min_area_m2`` join: specks in a
    block's shadow (noise, a dark stain) would have drawn the shadow into the footprint.
    Smaller pieces keep labels of their own.
    """
    pieces, n_pieces = ndimage.label(mask)
    if n_pieces == 0:
        return pieces, 0
    area = ndimage.sum(mask, pieces, index=np.arange(1, n_pieces + 1)) * res * res
    big = np.concatenate([[False], area >= min_area_m2])[pieces]
    r = max(BLOCK_JOIN_M / 2.0 / res, 1.0)
    k = int(math.ceil(r))
    yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
    groups, n = ndimage.label(ndimage.binary_dilation(big, structure=yy ** 2 + xx ** 2 <= r * r))
    small, n_small = ndimage.label(mask & ~big)
    out = np.where(small > 0, small + n, 0).astype(np.int32)
    for i, sl in enumerate(ndimage.find_objects(groups), start=1):
        piece = (groups[sl] == i) & big[sl]
        if not piece.any():
            continue
        whole = _filled_one(piece, res) if piece.sum() >= 3 else piece
        view = out[sl]
        view[whole] = i
    return out, n + n_small


def _filled_one(blob: np.ndarray, res: float) -> np.ndarray:
    """All of ``blob`` (one block, in pieces or not) with holes filled and its notches of
    about one box closed (:func:`_notch_element`), within the frame of ``blob``."""
    rows, cols = np.nonzero(blob)
    out = np.zeros_like(blob)
    se = _notch_element(blob, res)
    pad = se.shape[0] // 2 + 1
    r0, c0 = rows.min(), cols.min()
    crop = np.pad(blob[r0:rows.max() + 1, c0:cols.max() + 1], pad)
    closed = ndimage.binary_fill_holes(ndimage.binary_closing(ndimage.binary_fill_holes(crop), structure=se))
    # Closing adds no pixel outside the block's bounding box beyond the padding; clip to the frame.
    rr, cc = np.nonzero(closed)
    rr, cc = rr + r0 - pad, cc + c0 - pad
    k = (rr >= 0) & (rr < blob.shape[0]) & (cc >= 0) & (cc < blob.shape[1])
    out[rr[k], cc[k]] = True
    return out | blob


def _notch_element(blob: np.ndarray, res: float) -> np.ndarray:
    """The 3 x 7 m rectangle of :func:`_ground_slots`'s closing, its long side along the
    block's rows, as a structuring element on the image grid."""
    angle = math.radians(_row_frame(blob)[1])
    half_u, half_v = 3.5 / res, 1.5 / res
    r = int(math.ceil(math.hypot(half_u, half_v)))
    i, j = np.mgrid[-r:r + 1, -r:r + 1]
    x, y = j.astype(float), -i.astype(float)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    return (np.abs(u) <= half_u) & (np.abs(v) <= half_v)


def _km_median(lengths: np.ndarray, censored: np.ndarray) -> float | None:
    """Kaplan-Meier median of right-censored lengths; None when the censoring hides it."""
    return _km_quantile(lengths, censored, 0.5)


def _km_quantile(lengths: np.ndarray, censored: np.ndarray, q: float) -> float | None:
    """Kaplan-Meier ``q`` quantile of right-censored lengths; None when censoring hides it."""
    surv = 1.0
    events = np.sort(lengths[~censored])
    for t in np.unique(events):
        at_risk = int((lengths >= t).sum())
        surv *= 1.0 - float((events == t).sum()) / max(at_risk, 1)
        if surv <= 1.0 - q + 1e-12:
            return float(t)
    return None


def _walk_to_tiers(res: float, azimuth: float, elevation: float) -> float:
    """Tiers per pixel step of a shadow walk."""
    # A walk advances one pixel size per step in any direction: the step (dr, dc) is a
    # unit vector, rounded to the nearest pixel only when read.
    return res * math.tan(math.radians(max(elevation, 5.0))) / TIER_M


# Half a pixel added back to every walk. A walk read at both ends (count_containers:
# _sub_pixel_end, then _from_roof_edge) is length = s - e - 1/2 pixels, s the shadow's
# end and e the roof edge, both beyond the start pixel's centre: _sub_pixel_end's
# reading is half a pixel short of the end, and + WALK_END_PX restores it, so
# length + WALK_END_PX = s - e, the shadow from the roof edge (no statistics involved).
# A walk whose edge falls back to the start pixel's centre (e = 0: no contrast, a
# reference sample off the top or out of the shade, walks under 3 px) keeps the
# whole-pixel argument: that centre lies within about half a pixel of the true edge, so
# on average the start pixel's own half pixel is missing, and the same + 1/2 restores it.
# Half a pixel is 0.17 tiers at 60 degrees of sun (0.5 m pixels), 0.04 at 20.
WALK_END_PX = 0.5


# Relative colour step between neighbouring pixels above which they lie on different
# boxes: the gaps between boxes (0.35-0.45 m, shaded) and changes of paint.
_STACK_EDGE = 0.2
STACK_QUANTILE = 0.3


def _stack_tops(blob: np.ndarray, pix: np.ndarray, px_m2: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Split a block into the tops of its stacks (labels over the block's bounding box).

    Neighbouring stacks are told apart by the gap between them and by their paint. Every
    block pixel gets the label of the nearest top, so that a walk starting on a mixed
    edge pixel is still attributed to the stack it lies on.
    """
    rows, cols = np.nonzero(blob)
    sl = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    b = blob[sl]
    p = pix[:, sl[0], sl[1]]
    step = np.zeros(b.shape)

    def rel(x, y):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.abs(x - y).sum(axis=0) / np.maximum(0.5 * (x + y).sum(axis=0), 1e-3)

    h, v = rel(p[:, :, :-1], p[:, :, 1:]), rel(p[:, :-1], p[:, 1:])
    step[:, :-1] = np.fmax(step[:, :-1], h)
    step[:, 1:] = np.fmax(step[:, 1:], h)
    step[:-1] = np.fmax(step[:-1], v)
    step[1:] = np.fmax(step[1:], v)
    tops = b & (step < _STACK_EDGE)
    labels, n = ndimage.label(tops)
    if n == 0:
        return np.where(b, 1, 0), sl
    sizes = ndimage.sum(tops, labels, index=np.arange(1, n + 1)) * px_m2
    # Specks (noise, a rib of paint) are not stacks: at least a quarter of a 20 ft top.
    keep = np.concatenate([[0], np.cumsum(sizes >= 0.25 * SLOT_M2) * (sizes >= 0.25 * SLOT_M2)])
    labels = keep[labels]
    if labels.max() == 0:
        return np.where(b, 1, 0), sl
    idx = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    return np.where(b, labels[idx[0], idx[1]], 0), sl


# How far back towards the sun a walk's ray must run over the stack it starts from (m)
# to measure that stack: a ray that leaves past the stack's corner at an oblique sun is
# shaded by the gap or the lower neighbour beside it, and its walk is short.
CORNER_M = 1.0


def _toward_sun(azimuth: float, res: float) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) offsets of the pixels within ``CORNER_M`` back towards the sun."""
    az = math.radians(azimuth)
    k = np.arange(1, max(1, int(math.ceil(CORNER_M / res))) + 1)
    return np.round(-k * math.cos(az)).astype(int), np.round(k * math.sin(az)).astype(int)


def _stack_tiers(blob, pix, walks, px_m2, to_tiers, back=None, azimuth=None,
                 res=None) -> tuple[list, list, list] | None:
    """Mean tiers of a block from the heights of the stacks along its anti-sun edge.

    A shadow walk is attributed to the stack it starts from. It measures that stack's
    height only when nothing behind it (towards the sun) throws a longer shadow: at an
    oblique sun the ray back from a walk near one end of a stack crosses into the next
    stack of the row, and further back into the rows behind. Those taller neighbours
    only ever lengthen a walk, so a stack's height is a low quantile of its own walks
    (Kaplan-Meier, cut-short walks censored), rounded to whole tiers. Stacks inside the
    block cast no shadow on the ground; the edge stacks stand for them (their mean).

    With ``back`` (:func:`_toward_sun`), a walk whose ray back towards the sun leaves
    its stack within ``CORNER_M`` (past the stack's corner) is not attributed to it.

    With ``azimuth`` (degrees) and ``res`` (m, pixel size), where the pixel is too coarse
    to show the gap between stacks (``res > 2 * STACK_GAP_M``), a top larger than any one
    stack's (``MAX_TOP_M2``: several stacks' tops merged where the gaps between them blur
    away) is not read as one stack: its walks are split into pieces
    of the edge at least ``STACK_SIDE_M`` wide (:func:`_edge_pieces`), each a stack's
    height, each weighted by the top's area times its share of the walks.

    Returns the heights (tiers) of the stacks whose shadows were seen to end, their
    areas (pixels), and (lower bound, area) of the stacks whose shadows were all cut
    short; None when there is no walk. :func:`_block_tiers` makes the block's mean.
    """
    lengths, censored, r0, c0 = walks
    if lengths.size == 0:
        return None
    labels, sl = _stack_tops(blob, pix, px_m2)
    seg = labels[r0 - sl[0].start, c0 - sl[1].start]
    if back is not None:
        # Corner walks: the ray back towards the sun leaves the stack within CORNER_M.
        h, w = labels.shape
        for dr, dc in zip(*back):
            rr, cc = r0 - sl[0].start + dr, c0 - sl[1].start + dc
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            same = np.zeros(seg.shape, bool)
            same[inside] = labels[rr[inside], cc[inside]] == seg[inside]
            seg = np.where(same, seg, 0)
    # A stack is at least one box tall: a shadow under half a standard box's height is
    # not a stack's (it ends on a top in pavement colour in the row behind, or on a
    # mixed pixel at the block's edge). Kept, such walks are a stack's low quantile and
    # read a four-tier stack as one.
    seg = np.where((lengths + WALK_END_PX) * to_tiers >= 0.5, seg, 0)
    heights, areas, hidden = [], [], []
    groups = []
    for k in np.unique(seg[seg > 0]):
        m = seg == k
        if m.sum() < 3:
            continue
        area = float((labels == k).sum())
        if (azimuth is not None and res is not None and res > 2.0 * STACK_GAP_M
                and area * px_m2 > MAX_TOP_M2):
            # Only where the pixel is too coarse to show the gap between two stacks
            # (res > 2 * STACK_GAP_M) do whole rows of neighbouring tops blur into one
            # along the edge, so that each piece of the edge stands for the stacks
            # behind it. With finer pixels the gaps still show; a top this large is then
            # mostly tops of one paint joined across rows at different heights, and the
            # edge stack a piece reads is no proxy for the lower or taller tops behind it.
            # The gate is a proxy for "the gaps blurred away" (merged tops occur at
            # 0.3-0.5 m too; any threshold between 0.5 and 0.8 m reads the same on the
            # altgen bench). Several stacks under one top: one stack's height per piece.
            # Known misreads (review RYARD, session 38): a piece's weight (the top's area
            # times its share of the walks) is not bounded by one stack's depth, so a
            # piece starting on no stack can carry half a large label (yard 2065 zone 3:
            # 9.2 -> 80 % TEU error); under a low sun at 0.8 m (never rendered by the
            # bench) a piece has few walks and reads tall (yards 195-200 off-bench:
            # 16.4 -> 17.3 %, tier bias +6.3 -> +9.9 %); the split moves the tier and TEU
            # bias at 0.8 m up by 3-6 points (195-200: tiers -1.5 -> +4.4 %).
            pieces = _edge_pieces(r0[m], c0[m], azimuth, res)
            idx = np.nonzero(m)[0]
            for piece in pieces:
                one = np.zeros_like(m)
                one[idx[piece]] = True
                groups.append((one, area * piece.sum() / m.sum()))
            continue
        groups.append((m, area))
    for m, area in groups:
        q = _km_quantile(lengths[m], censored[m], STACK_QUANTILE)
        if q is None:
            # Less one step: the pixel where the walk met the next block may be half wall.
            hidden.append((max(float(np.max(lengths[m])) - 1.0, 0.0) * to_tiers, area))
            continue
        heights.append(float(np.clip(round((q + WALK_END_PX) * to_tiers), 1, MAX_TIERS)))
        areas.append(area)
    if not heights and not hidden:
        return None
    return heights, areas, hidden


# The largest top one stack shows (m^2): a 40 ft box, 12.19 x 2.44 m (29.7 m^2), with a
# pixel's blur around it at 0.8 m pixels (about 45 m^2 in all; a bound, so a whole pixel
# a side, where EDGE_BLUR_PX takes the mean widening). A top larger than this holds
# several stacks whose gaps (0.2-0.5 m) blurred away.
MAX_TOP_M2 = 45.0
# The gap between neighbouring stacks in a block (m): the placement clearance a crane
# leaves between boxes, about 0.3-0.5 m in RTG/RMG blocks (wider in straddle-carrier
# yards; the 0.35-0.45 m at _STACK_EDGE lies in it). A gap shows as a dark line or a colour
# step above _STACK_EDGE only while it fills about half a pixel after the sensor's blur,
# i.e. at pixels up to about twice the gap; at 0.8 m pixels neighbouring tops merge. The
# lower end (0.3 m) is taken so that 0.6 m pixels still count as showing the gaps: a
# proxy for where the gaps blur away, not a derived limit (see _stack_tiers).
STACK_GAP_M = 0.3
# The narrowest side a stack shows across the sun's direction (m): a box is 2.44 m wide,
# and a 2.44 x 6.06 m (or 12.19 m) rectangle is at least 2.44 m wide seen from any side.
STACK_SIDE_M = 2.44


def _edge_pieces(r0: np.ndarray, c0: np.ndarray, azimuth: float, res: float) -> list[np.ndarray]:
    """Split the walks leaving one top into pieces of the edge, each about one stack wide.

    Walks run away from the sun; their starts are placed along the axis across that
    direction. Sorted along it, the walks are cut into runs whose starts span at least
    ``STACK_SIDE_M`` (their pixels a little more) and of at least three walks (a
    Kaplan-Meier quantile needs a few): a piece spans one stack, or parts of two
    neighbours at most. A run left at the end with fewer walks joins the one before it.

    Parameters
    ----------
    r0, c0 : numpy.ndarray
        Row and column (pixels) where each walk starts.
    azimuth : float
        Sun azimuth (degrees clockwise from north).
    res : float
        Pixel size (m).

    Returns
    -------
    list of numpy.ndarray
        Boolean masks over the walks, one per piece.
    """
    az = math.radians(azimuth)
    # Walks run along (cos az, -sin az) in (row, col); the axis across them is
    # (sin az, cos az).
    pos = (r0 * math.sin(az) + c0 * math.cos(az)) * res
    order = np.argsort(pos, kind="stable")
    pieces, start = [], 0
    for i in range(1, order.size + 1):
        wide = i == order.size or pos[order[i]] - pos[order[start]] >= STACK_SIDE_M
        if wide and i - start >= 3:
            pieces.append(order[start:i])
            start = i
    if start < order.size:
        if pieces:
            pieces[-1] = np.concatenate([pieces[-1], order[start:]])
        else:
            pieces.append(order[start:])
    out = []
    for p in pieces:
        m = np.zeros(order.size, bool)
        m[p] = True
        out.append(m)
    return out


def _block_tiers(stacks, fallback: float) -> tuple[float, int, float] | None:
    """Mean tiers, stacks counted and their spread from a block's edge stacks.

    A stack whose every long walk was cut short (low sun, a lane narrower than its
    shadow) is "hidden": it is at least as tall as its longest walk, a lower bound. Its
    height is the mean of the block's stack heights at or above that bound, weighted by
    the Kaplan-Meier estimate over the block's stacks (:func:`_km_mean_above`): whether a
    shadow crosses the lane depends on the stack's height, but the lane's width does
    not, so the censoring is the non-informative kind Kaplan-Meier allows for. The
    stacks whose shadows ended are the short ones, and their plain mean would be biased
    low. The pooled estimate over all the block's walks (``fallback``) is not used for
    them when the block's measured stacks reach the bound: at an oblique or low sun a
    walk's ray back crosses the stacks behind the edge, the tallest of which casts the
    shadow, so that estimate runs high. Where fewer than ``KM_MIN_STACKS`` measured stacks
    reach the bound (every shadow longer than one tier crosses the lane) it is the only
    estimate left: the stack counts at the bound or at ``fallback``, whichever is higher.

    Limit: the measured stacks' own walks cross the rows behind them too, so with a low
    sun and heights that vary from row to row they also run high (a synthetic yard of
    random heights at 20 degrees: +0.3 to +0.9 tiers); shadows on the ground alone
    cannot tell a short edge stack in front of a tall one from a tall edge stack.
    """
    if stacks is None:
        return None
    heights, areas, hidden = stacks
    if not heights:
        return None
    measured = (np.asarray(heights, float), np.asarray(areas, float))
    censored = (np.asarray([h[0] for h in hidden], float), np.asarray([h[1] for h in hidden], float))
    heights, areas = list(heights), list(areas)
    for low, area in hidden:
        est = _km_mean_above(measured, censored, low)
        heights.append(float(np.clip(max(math.ceil(low), fallback) if est is None else est, 1, MAX_TIERS)))
        areas.append(area)
    mean = float(np.average(heights, weights=areas))
    sd = math.sqrt(float(np.average((np.asarray(heights) - mean) ** 2, weights=areas)))
    return mean, len(heights), sd


# Fewest measured stacks at or above a hidden stack's bound to estimate its height from.
KM_MIN_STACKS = 3


def _km_mean_above(measured, censored, bound: float) -> float | None:
    """Mean height (tiers) of the stacks at least ``bound`` tall, from whole-tier heights
    seen (``measured``: heights, areas) and lower bounds (``censored``: bounds, areas).

    Kaplan-Meier over whole tiers, weighted by area: a stack bounded below by 2.3 tiers
    is at least 3, so it is known to stand above 1 and 2 tiers (in the risk set there)
    and nothing is known of 3 or more. The mass beyond the tallest measured height
    stays there (Efron's rule: nothing taller was seen). None when fewer than
    ``KM_MIN_STACKS`` measured stacks reach the bound.
    """
    h, w = measured
    c, cw = censored
    least = np.maximum(np.ceil(c - 1e-9), 1.0)
    first = max(int(math.ceil(bound - 1e-9)), 1)
    if int((h >= first).sum()) < KM_MIN_STACKS:
        return None
    surv, mass = 1.0, {}
    top = int(h.max())
    for t in range(1, top + 1):
        at_risk = float(w[h >= t].sum() + cw[least > t].sum())
        hazard = 1.0 if t == top else float(w[h == t].sum()) / max(at_risk, 1e-12)
        mass[t] = surv * hazard
        surv *= 1.0 - hazard
    above = {t: m for t, m in mass.items() if t >= first}
    total = sum(above.values())
    if total <= 0.0:
        return None
    return sum(t * m for t, m in above.items()) / total


def _tiers_from(own, zone, everything, res, azimuth, elevation) -> tuple[float, float, str]:
    """Tiers (and their standard error) from the best available set of shadow walks.

    Each set is (lengths, censored). The median shadow comes from the Kaplan-Meier
    estimate, which uses censored walks as lower bounds; a set is used when it has
    enough walks and its median is not hidden by censoring. When no set shows it (every
    long shadow runs into the next block), the longest censored walk is a lower bound.
    """
    to_tiers = _walk_to_tiers(res, azimuth, elevation)
    for (lengths, censored), method in ((own, "shadow_block"), (zone, "shadow_zone"), (everything, "shadow_image")):
        if lengths.size < 5 or (~censored).sum() < 3:
            continue
        med = _km_median(lengths, censored)
        if med is None:
            continue
        tiers = float(np.clip((med + WALK_END_PX) * to_tiers, 1.0, MAX_TIERS))
        spread = float(np.std(lengths) * to_tiers)
        if method != "shadow_block":
            # Borrowed (no walk of its own, e.g. a block under a cloud's shadow): the block
            # is one of the zone's or image's stacks, not their mean, so its height is
            # uncertain by their spread, however many walks were pooled.
            return tiers, min(spread, 2.0) + 0.25, method
        return tiers, min(spread, 2.0) / math.sqrt(max(lengths.size / 10.0, 1.0)) + 0.25, method
    lengths, censored = everything
    if lengths.size and censored.any():
        low = float(np.clip(np.median(lengths[censored]) * to_tiers, 1.0, MAX_TIERS))
        return low, 1.5, "shadow_lower_bound"
    return 1.0, 1.5, "assumed_one_tier"


def _polygon(blob: np.ndarray, grid: GridSpec) -> Polygon:
    shapes = [shape(g) for g, v in rfeatures.shapes(blob.astype("uint8"), mask=blob, transform=grid.transform)]
    if not shapes:
        return Polygon()
    return max(shapes, key=lambda p: p.area).simplify(grid.resolution * 0.5)
