"""Count ships at berth (and on open water) in optical imagery.

Water is dark and uniform in the near-infrared; hulls, decks and hatches are not. The
water colour is learnt from the image over the AOI's water polygons away from the
berths; pixels that depart from it and form a blob of ship size are vessels. Foam (the
wake of a vessel under way) departs from the water colour too but stays greener than
NIR (:data:`FOAM_NDWI`), and is left out so a wake does not lengthen its vessel. On a
Sentinel-1 image, detections that the sidelobes of a far brighter vessel explain are
dropped (:func:`drop_sidelobes`). Length,
width and heading come from the blob's minimum rotated rectangle.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

import numpy as np
import shapely
import xarray as xr
from scipy import ndimage
from shapely.geometry import Polygon


from changedet.grid import GridSpec
from changedet.objects.checks import check_features
from changedet.objects.common import CountResult, Detection, prepare
from changedet.objects.containers import _mask, _polygon
from changedet.objects.ground import GroundModel
from changedet.objects.vessels import SAR_RESOLUTION_M, SIDELOBE_MARGIN, SIDELOBE_PEAK

MIN_SHIP_AREA_M2 = 150.0   # a 25 x 6 m coaster
MIN_SHIP_LENGTH_M = 20.0
VHR_MAX_RES_M = 3.0
# NDWI ((green - NIR) / (green + NIR)) above which a bright pixel on the water is foam,
# not hull: decks and paint sit at or below 0, foam and water well above; the margin
# keeps dark hull pixels, whose NDWI is noisy, in the hull.
FOAM_NDWI = 0.15
# Shortest length/beam of a hull outline: harbour tugs are 2.5-3.3 times longer than
# wide (a 32 x 12 m tug: 2.7) and the blurred rim widens the outline by a pixel or two;
# cloud wisps and glint patches are round (about 1).
MIN_ELONGATION = 2.0


def _trim_foam(target: np.ndarray, foam: np.ndarray) -> np.ndarray:
    """``target`` less the foam that lies outside the convex hull of each blob's non-foam part.

    Foam may only trim a hull, never split it: a wake trails outside the hull, while a
    shadow across a deck (bridge, crane, stacked boxes; lit by the bluish sky alone, its
    NDWI is as high as foam's) lies between two parts of it and stays. Only a blob whose
    foam leaves two or more large parts is restored (a bow wave beside a single hull is
    still trimmed: it widened a tug's outline past the length/beam test).
    """
    from skimage.morphology import convex_hull_image

    foam = target & foam
    if not foam.any():
        return target
    core = target & ~foam
    keep = core.copy()
    lab, _ = ndimage.label(target, structure=np.ones((3, 3), bool))
    for i, sl in enumerate(ndimage.find_objects(lab), 1):
        if sl is None:
            continue
        comp = lab[sl] == i
        f = comp & foam[sl]
        if not f.any():
            continue
        # The hull's parts are large; a wake's own non-foam pixels are specks, which
        # must not stretch the hull over the wake.
        # Parts as the 2 x 2 opening below will leave them: a one-pixel rim joining two
        # halves of a hull does not survive it.
        solid = ndimage.binary_opening(comp & core[sl], structure=np.ones((2, 2), bool))
        pieces, npieces = ndimage.label(solid, structure=np.ones((3, 3), bool))
        if npieces == 0:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        big = np.flatnonzero(sizes >= max(4, 0.25 * sizes.max())) + 1
        if big.size < 2:
            continue  # the foam split nothing: a wake or bow wave is trimmed as before
        c = np.isin(pieces, big)
        if c.sum() >= 3:
            keep[sl] |= f & convex_hull_image(c)
    return keep


def count_ships(
    image: xr.DataArray,
    berths: Mapping[str, Polygon],
    *,
    water: Polygon | None = None,
    valid: xr.DataArray | None = None,
    min_contrast: float = 5.0,
) -> CountResult:
    """Count vessels at each berth (and at anchor on ``water`` outside the berths).

    Parameters
    ----------
    image : xarray.DataArray (band, y, x)
        Surface reflectance with named bands and a CRS. At 3 m or finer ships are
        outlined from colour; coarser optical images (to 30 m) go to
        :func:`changedet.objects.vessels.detect_vessels`, and an image with a VV band
        to :func:`changedet.objects.vessels.detect_vessels_sar`.
    berths : mapping of str to Polygon
        Berth polygons in the image CRS, by berth id.
    water : Polygon, optional
        Water in the image CRS; its pixels away from berths teach the water colour and
        vessels found there are reported as at anchor.
    """
    from changedet.objects.vessels import ground_metres_per_unit

    grid = GridSpec.of(image)
    names = {str(b).upper() for b in image["band"].values} if "band" in image.dims else set()
    if "VV" in names:
        from changedet.objects.vessels import detect_vessels_sar

        return drop_sidelobes(detect_vessels_sar(image, water=water, berths=berths))
    # Ground metres per CRS unit: a lon/lat image (pixel "size" 5e-6) is refused here with
    # the counters' CRS check, instead of measuring hull areas in square degrees and
    # finding no ship; Web Mercator units (1/cos(lat) too long) are converted.
    m_per_unit = ground_metres_per_unit(grid)
    if grid.resolution * m_per_unit > VHR_MAX_RES_M:
        # Hulls are a few pixels: colour against a berth-side water model no longer
        # works, a contrast test against the local water (CFAR) does.
        from changedet.objects.vessels import detect_vessels

        return detect_vessels(image, water=water, berths=berths, valid=valid)
    if berths:
        check_features(berths, grid, what="berth")
    grid, pix, ok = prepare(image, valid)
    res = grid.resolution * m_per_unit  # ground metres per pixel
    berth_union = shapely.union_all(list(berths.values())) if berths else Polygon()
    if water is None or water.is_empty:
        water = berth_union
    # 30 m of ground around the berths (geometries are in CRS units).
    open_water = _mask(water.difference(berth_union.buffer(30.0 / m_per_unit)), grid) & ok
    if open_water.sum() < 20:
        open_water = _mask(water, grid) & ok
    model = GroundModel.from_samples(pix[:, open_water].T)
    per_feature, detections = [], []
    seen = []
    if model is None:
        return CountResult("ships", 0, {}, tuple({"id": b, "count": 0, "by_type": {}} for b in berths), (),
                           grid.crs, None, 0.0)
    # Invalid pixels (all bands NaN) get distance NaN, never above the contrast threshold.
    d, _ = model.classify(pix)
    # Vessels float: only water pixels can be hull (the quay beside a berth is not water).
    target = (d > min_contrast) & ok & _mask(water, grid)
    # Foam (a moving vessel's wake, breaking waves) departs from the water colour as much
    # as a deck does, but water still absorbs its near-infrared: it stays greener than
    # NIR, while steel, paint and decks reflect at least as much NIR as green. A wake
    # joined to the hull that makes it would double the vessel's length.
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = (pix[1] - pix[3]) / (pix[1] + pix[3])
    target = _trim_foam(target, ndwi > FOAM_NDWI)
    target = ndimage.binary_opening(target, structure=np.ones((2, 2), bool))
    target = ndimage.binary_fill_holes(target)
    labels, n = ndimage.label(target)
    areas = ndimage.sum(np.ones_like(labels), labels, index=np.arange(1, n + 1)) * res * res
    regions = {"anchorage": _mask(water, grid) & ~_mask(berth_union, grid)} if water is not None else {}
    for bid, poly in list(berths.items()) + [("anchorage", None)]:
        m = _mask(poly, grid) if poly is not None else regions.get("anchorage", np.zeros(grid.shape, bool))
        if m.sum() == 0:
            if poly is not None:
                per_feature.append({"id": bid, "count": 0, "by_type": {}, "observed_fraction": 0.0})
            continue
        seen.append((m & ok).sum() / m.sum())
        count = 0
        for lab in np.unique(labels[m & target]):
            if lab == 0 or areas[lab - 1] < MIN_SHIP_AREA_M2:
                continue
            blob = labels == lab
            # A blob belongs to the region holding most of it (a ship overlaps its berth's edge).
            if (blob & m).sum() < 0.5 * blob.sum():
                continue
            outline = _polygon(blob, grid)
            rect = outline.minimum_rotated_rectangle
            xs, ys = rect.exterior.coords.xy
            e = [(xs[i + 1] - xs[i], ys[i + 1] - ys[i]) for i in range(2)]
            lens = [math.hypot(*v) * m_per_unit for v in e]  # ground metres
            k = int(np.argmax(lens))
            length, width = lens[k], lens[1 - k]
            # Hulls are long and fill their bounding rectangle; cloud wisps and glint
            # patches are neither.
            if length < MIN_SHIP_LENGTH_M or length > 450 or length < MIN_ELONGATION * width \
                    or outline.area < 0.55 * rect.area:
                continue
            heading = (math.degrees(math.atan2(e[k][0], e[k][1]))) % 180.0
            count += 1
            at = "at_berth" if poly is not None else "at_anchor"
            detections.append(Detection("ship", at, outline, float(min(1.0, areas[lab - 1] / 2000.0) * 0.5 + 0.5),
                                        bid if poly is not None else None,
                                        {"length_m": round(length, 1), "width_m": round(width, 1),
                                         "heading_deg": round(heading, 1)}))
        if poly is not None or count:
            per_feature.append({"id": bid, "count": count, "by_type": {("at_berth" if poly is not None
                                                                        else "at_anchor"): count} if count else {},
                                "observed_fraction": round(float(seen[-1]), 4)})
    by_type: dict[str, int] = {}
    for det in detections:
        by_type[det.type] = by_type.get(det.type, 0) + 1
    return CountResult("ships", len(detections), by_type, tuple(per_feature), tuple(detections), grid.crs, None,
                       float(np.mean(seen)) if seen else 0.0)


def drop_sidelobes(result: CountResult) -> CountResult:
    """Drop SAR detections that the sidelobes of a far brighter vessel explain.

    A strong scatterer (a superstructure, a container ship's stacks) spreads its
    impulse response along range and azimuth; on calm water the sidelobes stand many
    times above the sea's backscatter for a hundred metres and more, and a CFAR test
    reports them as small vessels in a cross around the real one. A detection is a
    sidelobe when its peak (``peak_z``, in units of the local water mean) stays under
    the envelope of a brighter detection's sidelobes at its distance, with a speckle
    margin: ``SIDELOBE_MARGIN * SIDELOBE_PEAK * (1.43 * SAR_RESOLUTION_M / d) ** 2`` times
    the bright one's peak. The distance is measured to the bright detection's outline,
    which holds its scatterers, so the test errs on the side of dropping.

    Limit: the envelope is the same in every direction (the sidelobes only run along
    range and azimuth, whose angle to a north-up grid is not in the image), so a small
    boat moored beside a very bright ship (a tug alongside, within about 100 m) whose
    peak is 40 dB weaker is dropped with the sidelobes.
    """
    dets = list(result.detections)
    peaks = [float(d.attrs.get("peak_z", 0.0) or 0.0) for d in dets]
    if not dets or max(peaks) <= 0:
        return result
    first = 1.43 * SAR_RESOLUTION_M
    order = np.argsort(peaks)[::-1]
    keep = np.ones(len(dets), bool)
    for j in range(len(dets)):
        for i in order:
            if peaks[i] <= peaks[j] or i == j:
                continue
            d = max(dets[j].polygon.centroid.distance(dets[i].polygon), first)
            if peaks[j] < SIDELOBE_MARGIN * SIDELOBE_PEAK * (first / d) ** 2 * peaks[i]:
                keep[j] = False
                break
    if keep.all():
        return result
    kept = tuple(d for d, k in zip(dets, keep) if k)
    by_type: dict[str, int] = {}
    for det in kept:
        by_type[det.type] = by_type.get(det.type, 0) + 1
    per_feature = []
    for pf in result.per_feature:
        types: dict[str, int] = {}
        for d in kept:
            if d.feature_id == pf["id"]:
                types[d.type] = types.get(d.type, 0) + 1
        per_feature.append({**pf, "count": sum(types.values()), "by_type": types})
    return replace(result, total=len(kept), by_type=by_type, per_feature=tuple(per_feature), detections=kept,
                   extras={**dict(result.extras), "sidelobes_dropped": int((~keep).sum())})
