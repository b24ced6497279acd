"""Count railcars along track centrelines.

VHR (about 1 m or finer): each track is unrolled into a strip; positions whose centre
colour departs from the empty track (ballast and rails, lit or in shadow) are
occupied; occupied runs are cut into cars where coupler gaps and colour edges are,
with car lengths kept near real rolling-stock lengths, or near the pitch at which the
run's own look repeats (a block of identical cars), by dynamic programming; each car
is typed from its length and look.

With the sun's position known, light is read as geometry, not as colour alone: a black
tank car is a cylinder, brighter on its sun-facing half (a shadow cast onto the track
darkens that half first); paint with a sunlit spectrum but too dark for ballast under
any mix of sun and skylight is a car even where the whole yard lies in shadow; and a
car's own shadow, which runs along the track when the sun is oblique to it, is trimmed
from the car's end by its known length (or, where it is as dark as the car, allowed to
the end car's length, bounded by the tallest car's shadow). In a near-empty yard the
shadowed ground's colour is learnt on the tracks' anti-sun sides, where cars cast
their shadows. A tank car's barrel is told from an open wagon's load by which half
is the brighter: a lit cylinder's sun-facing half, by a ratio the sun's position
predicts; a load's anti-sun half, the other lying in the shadow of the sun-side wall
(both read above the path radiance haze adds). Cars are found above the darkest light
on the tracks (dark-object subtraction), so that a shadow's share of the lit ground's
light is read as in clear air under haze too; the colours' spreads keep the floors of
the light as recorded, and whether a colour lies outside every mix of the two lights
(a negative weight) is judged on the recorded light only. Whatever stands on a track
shades the ground beside it away from the sun: at 0.5 m pixels or finer, a stretch read
as a car with lit ground where even a bare flat wagon's shadow would fall is a track
bed unlike the ground beside it (concrete sleepers on asphalt, a cleared bed in snow),
not a car; and a shadow beside a lit centre in the narrow band where a bare flat
wagon's deck shades the ground (under a high sun) is a car. Along the car, a boxcar's
roof is one even sheet; a covered hopper's hatches and end bays, an open wagon's heaped
load and a locomotive's fans make the top vary.

A track is read in one direction whatever end its centreline was drawn from (towards
the image grid's north, its CRS's +y, not true north; eastwards on a line exactly along
the grid's x): the strip's samples, the side read as the sun's and the cutting of runs
into cars all follow the reading direction, so a line and its reverse give the same
cars and types, optical and radar alike. What is measured along a track
(``unobserved_runs_m``) is given along the line as drawn, clipped to the line (0 to its
length: a per-feature value at a line's end may differ from session 34's by up to a
step). The counter itself is not mirror-symmetric: a track within a few degrees of the
grid's east-west may be read the other way after a tiny redraw or a change of CRS (grid
convergence: about +1.1 deg in UTM zone 52 and -3.0 deg in zone 53 at Tumangang), and
its count can then move by several cars (review RRDIR M1: up to 8 on an altgen yard).

Typing assumes the 1520 mm-gauge freight fleet (Russia, the CIS, the Baltic states,
Mongolia, Finland's 1524 mm): its car lengths (no boxcar or open wagon of 18 m or
more, tank barrels up to 15.5 m) and its fleet shares (open wagons and hoppers about
60 %, flat wagons 8 %) decide where the look is ambiguous. On 1435 mm networks (North
America's 18-27 m boxcars and gondolas, Europe's) or at an intermodal terminal (mostly
container flats) the counts hold but the types are less reliable. At 0.75 m or finer
a top 2.44 m wide (an ISO container's) is a container flat whatever the fleet.

Under cloud (``valid`` given), stretches of track under a cloud or in a cloud's shadow
(found by :func:`changedet.objects.cloud_shadow.cloud_shade`; cloud masks rarely carry
the shadows) are unobserved: nothing is counted there and no count is extrapolated to
them. A car cut by such a stretch is counted where its centre lies: when the visible
part is at least half the longest car its look allows (half a common car of its look
where the stretch, seen on both sides, is a locomotive's length or more: a car seen at
both ends of it would be 30 m long), with its hidden end placed at its type's length.
The same holds, with or without ``valid``, for a car cut by the image's edge or by
nodata pixels; where an unobserved stretch runs to the strip's end the longest car's
half applies (the convention that counts each car once across tiles), unless the
stretch's first locomotive's length lies on the image's own data (inside the frame,
recorded): it is then this image's mask, which hides the car's other part in every
tile, and counts as one seen on both sides. Nodata must be NaN in the image for this
(a finite pixel only flagged in ``valid`` reads as cloud). Within ``EDGE_DIMMING_M`` (40 m)
of a cloud's shadow, the shadow's faint edge may still dim the ground and the cars alike:
darkness is judged there against the share of light read on the ground beside the track
(modelled as grey dimming, as the simulator draws it; a thin cloud over the ground, which
adds light, is not modelled). Each track reports ``observed_fraction``,
``unobserved_m`` and the unobserved stretches (``unobserved_runs_m``, metres along the
centreline), so a reader can scale or discard a partly seen track.

Medium resolution (coarser than 1.5 m: Sentinel-2, Planet): cars are narrower than a
pixel, so only the occupied track length is measured and the count is estimated as
occupied length over the mean car pitch, with an uncertainty. **Not validated**: on an
independent scene generator (``bench/bench_altgen_rail_medium.py``) it reads about 0 at
3-10 m (scene totals 92-98 % low) and its uncertainty does not cover the truth; every
such result carries ``extras["caveat"]`` (:data:`MEDIUM_OPTICAL_CAVEAT`), which the CLI
prints as a warning and the daily run takes as a reason to skip the metric.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
import shapely
import xarray as xr
from affine import Affine
from scipy import ndimage
from shapely.affinity import translate
from shapely.geometry import LineString

from changedet.errors import ChangedetError
from changedet.grid import GridSpec
from changedet.objects.checks import ResolutionError, check_features, check_metric
from changedet.nanstats import quiet_nanmean, quiet_nanmin, quiet_nanstd
from changedet.objects.cloud_shadow import CLOUD_EDGE_M, cloud_shade
from changedet.objects.common import CountResult, Detection, bgrn, oriented_rect, robust_ref, runs
from changedet.objects.ground import GroundModel, ground_mix, lit_spread_floor, shadow_spread_floor
from changedet.objects.strips import Strip, sample_strip
from changedet.objects.track_register import estimate_track_shift

# Real lengths over the body (m) and the pitch they occupy with a coupler gap.
CAR_LENGTHS_M = {"tank": 12.0, "flatcar": 13.4, "gondola": 13.9, "boxcar": 15.7, "locomotive": 18.0}
CAR_WIDTHS_M = {"tank": 3.0, "flatcar": 3.0, "gondola": 3.1, "boxcar": 3.3, "locomotive": 3.2}
GAP_M = 1.1
MEAN_PITCH_M = 15.0   # mixed freight consist, body plus coupler gap
VHR_MAX_RES_M = 1.5
MEDIUM_MAX_RES_M = 12.0   # Sentinel-2's 10 m pixels, with room for a reprojected grid
# Said with every optical estimate on pixels coarser than VHR_MAX_RES_M (JSON "caveat", a CLI
# warning; the daily run skips the metric): measured on the independent generator
# (bench/bench_altgen_rail_medium.py, session 33) it reads about 0.
MEDIUM_OPTICAL_CAVEAT = ("the optical railcar estimate on pixels coarser than 1.5 m is not validated: on an "
                         "independent scene generator it misses most cars (scene totals 92-98 % low at 3-10 m); "
                         "use VHR imagery (1.5 m or finer), or Sentinel-1 for a medium-resolution estimate")


def count_railcars(
    image: xr.DataArray,
    tracks: Mapping[str, LineString],
    *,
    valid: xr.DataArray | None = None,
    sun_azimuth_deg: float | None = None,
    sun_elevation_deg: float | None = None,
    min_contrast: float = 4.0,
) -> CountResult:
    """Count railcars on each track of an optical image.

    Parameters
    ----------
    image : xarray.DataArray (band, y, x)
        Surface reflectance with named bands (R, G, B, NIR or B02, B03, B04, B08) and a CRS.
        Radar backscatter (bands named VV, VH, HH or HV; 3-12 m pixels) is estimated by
        :func:`changedet.objects.railcars_sar.count_railcars_sar` instead (the sun
        arguments are then unused).
    tracks : mapping of str to LineString
        Track centrelines in the image CRS, by track id.
    valid : xarray.DataArray (y, x) of bool, optional
        False where the image must not be trusted (clouds, nodata). Nodata should be NaN
        in ``image`` too (as :func:`changedet.io.read_raster` and the pipeline give it):
        a finite pixel that is False here is read as this image's cloud, which hides a
        car cut by it in every tile of the image, whereas NaN nodata is taken as a gap
        another image or tile may fill (see the module's notes on cut cars).
    sun_azimuth_deg : float, optional
        Solar azimuth at acquisition (degrees clockwise from north, from the scene
        metadata). Tells which side of each track its cars' shadows fall on. When not
        given, only the occupancy test reads a side from the image (the clearly darker
        side of each track, where there is one) and uses it there; elsewhere the cues
        that need the sun's side (shadow tails, the deck-shadow and bare-bed tests, the
        track registration's shadow weighting) are not used.
    sun_elevation_deg : float, optional
        Solar elevation at acquisition (degrees). With a high sun, a shadow beside a
        track can only be cast by a car on that track, which resolves dark cars.
    min_contrast : float
        Distance from the empty-track colour, in units of its own spread, above which a
        position counts as occupied.

    Returns
    -------
    CountResult
        Per-track counts and types, per-car detections (VHR) or an estimate with an
        uncertainty (medium resolution).
    """
    # All-NaN strips (clouds, image edges) are expected; they are reported as unobserved.
    # Their statistics are NaN without a warning (quiet_nanmean & co.) and floating-point
    # errors on them are ignored per thread (np.errstate; a warnings filter is process-wide).
    for name, v in (("sun_azimuth_deg", sun_azimuth_deg), ("sun_elevation_deg", sun_elevation_deg)):
        if v is not None and not np.isfinite(v):
            raise ChangedetError(f"{name} is {v!r}; give the scene's sun angle in degrees, or None to infer "
                                  "what the image shows")
    from changedet.objects.railcars_sar import count_railcars_sar, radar_bands

    tracks = _centrelines(tracks)
    if radar_bands(image):
        # Sentinel-1 backscatter: the radar estimate (occupied length from integrated
        # backscatter); the sun plays no part. Read in the same direction as the optical
        # counter (see _reads_reversed): its along-track sampling starts at the line's
        # start too (review RRDIR M2: tuning scenes moved by up to 4.3 cars with the
        # drawing). It reports no along-track positions, so nothing is mapped back.
        return count_railcars_sar(image, {tid: _read_way(line) for tid, line in tracks.items()}, valid=valid)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return _count_railcars(image, tracks, valid=valid, sun_azimuth_deg=sun_azimuth_deg,
                               sun_elevation_deg=sun_elevation_deg, min_contrast=min_contrast)


def _reads_reversed(line: LineString) -> bool:
    """Whether ``line`` is read from its last point to its first: every track is read in
    a direction fixed by its geometry, not by the end it was drawn from.

    Towards the image grid's north (the CRS's +y, not true north), eastwards (+x) on a
    line whose ends lie exactly on one grid row: the direction in which every reading and
    threshold of this counter was measured and tuned (the altgen yards of
    ``bench/bench_altgen_rail.py`` draw every track heading north of east-west, in a
    north-up UTM grid of the northern hemisphere, under a sun anywhere in the southern half
    of the sky, so the sun lies on either side of the tracks as read, as before). In the
    southern hemisphere, or in a grid whose +y is not north (polar stereographic), the
    grid-northward reading is not that tuned configuration (already so in session 34).
    The direction is fixed by the grid, not by the sun, so a track is read the same way
    on every date (the pipeline reprojects the tracks into the AOI grid's CRS): a rule
    against the sun would flip with the season and the pass time, a change no car made,
    and measured no better over three tuning slices (session 35, RDIR).
    The rule is discontinuous at east-west: a line within a few degrees of the grid's x
    axis may be read the other way after re-digitising or reprojection to another CRS
    (grid convergence of 1-3 deg), with other cars. After reprojection ``dy`` is hardly
    ever exactly 0, so the eastwards branch is for lines drawn on the grid itself.
    A closed line's ends are one point: its two orientations are compared as vertex
    sequences, so it is read in the orientation whose second vertex sorts first (a loop
    drawn from another start vertex may be read the other way round). A line split into
    parts is read part by part (a curved track's parts may be read in opposite
    directions).
    """
    (x0, y0), (x1, y1) = line.coords[0][:2], line.coords[-1][:2]
    # Exact under reversal: swapping the ends negates dx and dy, so both drawings of a line
    # pick the same direction.
    dx, dy = x1 - x0, y1 - y0
    if dy != 0.0:
        return dy < 0
    if dx != 0.0:
        return dx < 0
    coords = [tuple(c) for c in line.coords]
    return coords[::-1] < coords


def _read_way(line):
    """``line`` in the direction it is read in (see :func:`_reads_reversed`); anything
    that is not a non-empty line is returned as it is (``check_features`` names it)."""
    if not isinstance(line, LineString) or line.is_empty:
        return line
    return line.reverse() if _reads_reversed(line) else line


def _along_drawn(spans: list[tuple[float, float]], length_m: float, flipped: bool) -> list[list[float]]:
    """Stretches ``(start, end)`` in metres along a track as read, in metres along the
    track as drawn (from its first point), rounded to 0.1 m and kept on the line."""
    if flipped:
        spans = [(length_m - b, length_m - a) for a, b in spans[::-1]]
    return [[round(max(a, 0.0), 1), round(min(b, length_m), 1)] for a, b in spans]


def _centrelines(tracks: Mapping[str, LineString]) -> dict[str, LineString]:
    """Each track as one 2-D line: heights dropped (they play no part in the image's plane;
    GeoJSON exports often carry them), parts that meet end to end merged into one
    centreline. Parts that do not join, or a geometry that is not a line, are refused:
    the counter reads a track's direction, sides and ends from one continuous line."""
    out = {}
    for tid, geom in tracks.items():
        if geom is None or geom.is_empty:
            out[tid] = geom   # check_features names it
            continue
        line = shapely.force_2d(geom)
        if line.geom_type == "MultiLineString":
            line = shapely.line_merge(line)
        if line.geom_type == "MultiLineString":
            raise ChangedetError(
                f"track {tid!r} is a MultiLineString of {len(line.geoms)} parts that do not join end to end; a "
                "track is one centreline: give each part as its own track feature (its own id), or join the parts")
        if line.geom_type != "LineString":
            raise ChangedetError(f"track {tid!r} is a {geom.geom_type}; a track is a centreline (LineString) "
                                 "along the rails: draw it as a line")
        out[tid] = line
    return out


def _count_railcars(image, tracks, *, valid, sun_azimuth_deg, sun_elevation_deg, min_contrast) -> CountResult:
    grid = GridSpec.of(image)
    # First: in degrees (EPSG:4326) every pixel size passes the resolution test below,
    # and the strips sampled at half a "metre" were gigabytes.
    check_metric(grid, "railcar")
    if grid.resolution > MEDIUM_MAX_RES_M:
        raise ResolutionError(
            f"the image is {grid.resolution:g} m per pixel, too coarse for railcars: per-car detection and "
            f"typing need {VHR_MAX_RES_M:g} m or finer, and the medium-resolution estimate (occupied track "
            f"length over a mean car pitch of {MEAN_PITCH_M:g} m, with an uncertainty) needs "
            f"{MEDIUM_MAX_RES_M:g} m or finer")
    check_features(tracks, grid, what="track")
    # An analyst draws a centreline from either end; the strip's across-track samples, its
    # along-track phase, the side read as the sun's and the cutting of runs into cars all
    # follow the line's direction, so each track is read in one direction fixed by the
    # geometry (see _reads_reversed) and its along-track results are mapped back to the
    # line as drawn: the same cars, types and stretches whichever end it was drawn from.
    drawn = tracks
    flipped = {tid: _reads_reversed(line) for tid, line in tracks.items()}
    tracks = {tid: line.reverse() if flipped[tid] else line for tid, line in tracks.items()}
    pix = bgrn(image)
    if valid is not None:
        pix = np.where(np.asarray(valid.values, bool)[None], pix, np.nan)
    vhr = grid.resolution <= VHR_MAX_RES_M
    # The centrelines are a map's, the image has its own georeferencing error: at VHR
    # every reading across a car is made about the centreline, so the tracks are moved
    # onto the image first (one shift for the scene, zero when the evidence is weak), and
    # the detections moved back at the end (results are in the AOI's frame, the same
    # for every image of the site).
    shift = estimate_track_shift(pix, grid, tracks, sun_azimuth_deg=sun_azimuth_deg) if vhr else None
    if shift is not None and shift.applied:
        tracks = shift.apply(tracks)
    step = min(grid.resolution, 0.5) if vhr else grid.resolution
    half = 2.6 if vhr else max(2.6, grid.resolution)
    strips = {tid: sample_strip(pix, grid, line, half_width_m=half, step_m=step) for tid, line in tracks.items()}
    if not strips:
        return CountResult("railcars", 0, {}, (), (), grid.crs, None, 0.0)
    # Lit ground on both sides of a centre says the track is empty only where a car's
    # shade would show there: at 3-12 m the side samples lie on the next track over.
    refs = _empty_track_reference(strips, flanked=vhr)
    if not np.all(np.isfinite(refs["shadow"])):
        refs = _shadow_from_anti_sun_sides(strips, tracks, refs, sun_azimuth_deg)
    shade = dimmed = None
    recorded = {}
    if valid is not None:
        cloud = ~np.asarray(valid.values, bool) & np.all(np.isfinite(bgrn(image, check_order=False)), axis=0)
        # Where each centreline lies on the image's own data (inside the frame, every band
        # recorded, under a cloud or not): a stretch hidden there is this image's mask,
        # which no other tile of the image shows otherwise (see _hidden_run_m). Without
        # ``valid`` every unobserved stretch is nodata or off the frame.
        recorded = {tid: _recorded_along(s, pix, cloud, grid) for tid, s in strips.items()}
        # The cloud-shade colour cue judges all the ground in 40 m windows, yard gravel
        # and dirty ballast included, against the ground's colour: it keeps the colour of
        # the mode of all track centres, which spans that ground. The empty track's own
        # colour (centres flanked by lit ground) is tighter, and with it sunlit yard
        # ground darker than clean ballast read as cloud shade (an altgen scene: observed
        # share 0.68 -> 0.42, half its cars given up).
        crefs = _empty_track_reference(strips, flanked=False)
        if not np.all(np.isfinite(crefs["shadow"])):
            crefs = _shadow_from_anti_sun_sides(strips, tracks, crefs, sun_azimuth_deg)
        model = None
        if np.all(np.isfinite(crefs["shadow"])) and np.all(np.isfinite(crefs["lit"])):
            model = GroundModel(crefs["lit"], crefs["lit_sd"], crefs["shadow"], crefs["shadow_sd"])
        shade = cloud_shade(pix, grid, cloud, model=model, sun_azimuth_deg=sun_azimuth_deg,
                            sun_elevation_deg=sun_elevation_deg, object_height_m=_MAX_CAR_HEIGHT_M)
        if shade is not None:
            dimmed = _dimmed_near_tracks(shade, cloud, grid, strips)
    if shade is not None and shade.any():
        # Ground in a cloud's shadow looks like a car's shadow or a dark car over whole
        # stretches: those stretches are unobserved, not empty and not occupied.
        strips = {tid: _masked(s, shade, grid) for tid, s in strips.items()}
        refs = _empty_track_reference(strips, flanked=vhr)
        if not np.all(np.isfinite(refs["shadow"])):
            refs = _shadow_from_anti_sun_sides(strips, tracks, refs, sun_azimuth_deg)
    # The references as first learnt, in the light as recorded: the shadow colour learnt
    # here may not be learnt again above the darkest light (tells whether the image shows
    # shadows, below).
    refs_recorded = refs
    haze = None
    if vhr:
        # Haze adds path radiance, about the same light over every pixel, which lifts a
        # shadow to 70-75 % of the lit ground's brightness (hazy yards: 0.14 against 0.20
        # in blue): every rule below that reads light as a share of the lit ground's (a
        # shadow is 8-65 % of it, a car's shade under 60 %) then misses the cars' shadows,
        # and in a packed hazy yard the empty track's colour was learnt from the cars
        # (0-1 of 34-40 cars found). The path radiance is removed first: the darkest light
        # on the tracks (dark-object subtraction, Chavez 1988), then the references are
        # learnt again from the corrected samples. Colour distances are unchanged by it.
        # Cars are then typed on the light as recorded (as those rules were measured), with
        # the references learnt above the darkest light.
        haze = _dark_object_light(strips)
        if np.any(haze > 0):
            found = {tid: _offset(s, haze) for tid, s in strips.items()}
            refs = _empty_track_reference(found, flanked=vhr)
            if not np.all(np.isfinite(refs["shadow"])):
                refs = _shadow_from_anti_sun_sides(found, tracks, refs, sun_azimuth_deg)
        else:
            haze = None
    refs_above_dark = refs
    if haze is not None:
        # Finding cars above the darkest light: the spreads keep the floors of the light
        # as recorded (see _recorded_spread_floors).
        refs_above_dark = _recorded_spread_floors(refs, haze)
        # The same references in the light as recorded, for the typing rules and the
        # tracks a cloud or its shadow reaches (their spreads as learnt, as measured).
        refs = {**refs, "lit": refs["lit"] + haze, "shadow": refs["shadow"] + haze}
    # The height cue reads the ground beside each track as far out as the lowest walled
    # car's shadow reaches under this sun (see _tall), wider than the counting strip;
    # where the cars of another track stand in that band it is not read (below).
    wide = {}
    if vhr and sun_azimuth_deg is not None and sun_elevation_deg is not None:
        wide = {tid: sample_strip(pix, grid, line, step_m=step, half_width_m=_height_band(
                    _shadow_across(line, sun_azimuth_deg, sun_elevation_deg)))
                for tid, line in tracks.items()}
        if shade is not None and shade.any():
            wide = {tid: _masked(s, shade, grid) for tid, s in wide.items()}
    # For typing, haze's path radiance flattens the ratios of brightness that tell a
    # cylinder from a flat top: it is the darkest light any sample of the tracks shows
    # capped where the shadowed ground would keep too little sky light (see _path_radiance).
    # Only with the sun known: without it no sun-side check vets what the subtraction
    # adds to the relief (more tops passed as barrels, long roofs as locomotives).
    path = None
    if vhr and sun_azimuth_deg is not None and sun_elevation_deg is not None:
        path = _path_radiance(strips, refs["shadow"], refs["lit"])
    # Each track's own bed where its lit flanks show it (see _with_bed), learnt first on
    # every track: a busy track seen empty only between cuts of cars takes one of these
    # where its few empty centres match it. On the light above the darkest light, as the
    # tracks are read outside a cloud's faint edge (below).
    beds = {}
    if vhr and grid.resolution <= _UNIFORM_FLANKED_BED_MAX_RES_M:
        for tid, strip in strips.items():
            sun_left_here = _sun_geometry(tracks[tid], sun_azimuth_deg, sun_elevation_deg)[0]
            if sun_left_here is None:
                continue
            on = strip if haze is None else _offset(strip, haze)
            got = _learnt_bed(on, refs if haze is None else refs_above_dark, resolution_m=grid.resolution,
                              per_m=_local_shadow_across(on, sun_azimuth_deg, sun_elevation_deg),
                              blur_m=max(0.2, 0.5 * grid.resolution), floor_light=haze,
                              sun_left=_steady_sun_side(on, sun_azimuth_deg, sun_left_here))
            if "bed" in got:
                beds[tid] = (got["bed"], got["bed_sd"])
    # Tracks whose sun-side band no car can shade (see _sun_band_unshaded): there a sun
    # band that is not lit ground lies in a cloud's shadow (see _occupancy). Only in an
    # image with a cloud in it (``valid``): a cloud's shadow needs a cloud, and without one
    # the sun band's light is left to the other rules (on altgen clear scenes the sun band
    # of an outer track reads darker than the ground further out: median 0.151 against
    # 0.177 at 5-8 m on seed 8200 at 0.3 m, 0.087 against 0.145 on 8271 at 1 m; applied in
    # every image as a veto of the darkness rules, the sun-band test lost 48 of 1365
    # matched cars on 35 scenes of tuning 200-203).
    clouded = valid is not None and bool(cloud.any())
    sun_band_lit = {tid: vhr and clouded and _sun_band_unshaded(line, [t for o, t in tracks.items() if o != tid],
                                                                sun_azimuth_deg, sun_elevation_deg)
                    for tid, line in tracks.items()}
    per_feature, detections = [], []
    total_obs, total_len = 0.0, 0.0
    est_total, est_var = 0.0, 0.0
    occupancy, read_on, decks = {}, {}, {}
    for tid, strip in strips.items():
        sun_left, own_only = _sun_geometry(tracks[tid], sun_azimuth_deg, sun_elevation_deg)
        # Dimming by a cloud shadow's faint edge is looked for only where the track passes
        # within EDGE_DIMMING_M of a cloud's shadow (see _dimmed_near_tracks): elsewhere
        # dark ground is ground, beside a cloud, the image's edge or nodata too.
        edge = _hidden_along(*dimmed, strip) if dimmed is not None else None
        thin = edge is not None and bool(edge.any())

        def read(thin_cloud: bool):
            # Under the faint edge the light as recorded is read, as the dimming model
            # was measured (above the darkest light, the own simulator's partly cloudy
            # seed 31 counted 17 cars against 7 in view at the unmasked edge of a cloud's
            # shadow).
            lift = None if thin_cloud else haze
            on = strip if lift is None else _offset(strip, lift)
            # The centre of an empty track is judged against its own bed's colour too
            # (see _with_bed): on the light as recorded the path radiance is ``haze``.
            got = (on, refs if lift is None else refs_above_dark)
            # Learnt from lit flanks (_with_bed) only where the track as a whole has a sun
            # side (sun_left): without one, _occupancy has no anti-sun test to keep a car
            # off the bed. Without a sun side a bed may still be learnt from the track's
            # uniformity (_uniform_bed, below), which then rests on uniformity alone.
            per_m = _local_shadow_across(on, sun_azimuth_deg, sun_elevation_deg)
            # The blur at a body's edge is the pixel's (half a pixel, 0.2 m at least, as
            # _occupancy takes it), not the 0.5 m samples' (review RRAILF L1).
            blur_m = max(0.2, 0.5 * grid.resolution)
            if vhr and grid.resolution <= _UNIFORM_FLANKED_BED_MAX_RES_M and sun_left is not None:
                got = (on, _learnt_bed(on, got[1], resolution_m=grid.resolution, per_m=per_m, blur_m=blur_m,
                                     path=haze if lift is None else None, floor_light=lift,
                                     beds_elsewhere=[] if thin_cloud else
                                     [b for t, b in beds.items() if t != tid],
                                     sun_left=_steady_sun_side(on, sun_azimuth_deg, sun_left)))
            if (vhr and "bed" not in got[1]
                    and (sun_left is None or not _deck_shadow_readable(on, per_m, blur_m=blur_m))
                    and _gaps_shaded(on, sun_azimuth_deg, sun_elevation_deg)):
                # A track uniform along most of its length is its own empty bed (see
                # _uniform_bed), but only where uniformity can tell it from a string of
                # cars: where every coupler gap of such a string would lie in the deck
                # ahead's shadow along the track (_gaps_shaded: the sun near the
                # track's axis and under about 52 degrees), so cars break the
                # uniformity at each car end.
                # Under a high sun, or one across the track, a train of pale flat
                # wagons shows its gaps lit and is as uniform as a concrete bed (30 m
                # window ranges 0.07-0.19, review RRAILF H1/H2): it would be erased, so
                # the track stays as before, at any pixel size (at 1 m too, where the
                # anti-sun test cannot rescue such decks). Nor where a flat deck's shadow
                # beside the track is readable: there _with_bed tells decks from the bed
                # by their shadows, which uniformity would undo (review RBRIGHTBED).
                # The bench (altgen) draws suns of 20-65 degrees only; the high-sun
                # cases are covered by tests/test_railcar_uniform_bed_gate_s37.py.
                # With the sun along the track a dark bed may be learnt too, told from a
                # string of dark cars by its colour and by the shadow such a string casts
                # along the track (see _uniform_bed): as long as the tallest car's.
                along_m = None
                if sun_left is None:
                    along, _, tan_el = _sun_on_track(on, sun_azimuth_deg, sun_elevation_deg)
                    along_m = float(np.median(_MAX_CAR_HEIGHT_M * along / tan_el))
                got = (on, _uniform_bed(on, got[1], path=haze if lift is None else None, floor_light=lift,
                                        sun_along_m=along_m))
            deck = np.zeros(strip.values.shape[2], bool)
            occ = _occupancy(*got, decks=deck, sun_band_lit=sun_band_lit[tid],
                             min_contrast=min_contrast, vhr=vhr, sun_left=sun_left,
                             thin_cloud=thin_cloud,
                             dark_light=lift,
                             anti_shadow_is_own=own_only,
                             shadow_tail_m=_shadow_tail(tracks[tid], sun_azimuth_deg) if sun_left is not None
                             else 0.0,
                             shadow_across_m=_shadow_across(tracks[tid], sun_azimuth_deg, sun_elevation_deg),
                             blur_m=max(0.2, 0.5 * grid.resolution))
            return got, occ, deck

        # Each reading with the positions it speaks for (the two merged per position).
        near_on, occupancy[tid], decks[tid] = read(thin)
        read_on[tid] = [(near_on, None)]
        if thin and not edge.all():
            far_on, (occ_far, seen_far), deck_far = read(False)
            occ_near, seen_near = occupancy[tid]
            occupancy[tid] = (np.where(edge, occ_near, occ_far), np.where(edge, seen_near, seen_far))
            decks[tid] = np.where(edge, decks[tid], deck_far)
            read_on[tid] = [(near_on, edge), (far_on, ~edge)]
    seen_empty = {}
    if wide:
        # Another track's cars in the height band are bodies, not ground: their tops and
        # shadows say nothing about this track's cars.
        # Their shadows too: out to the tallest car's on each track's anti-sun side.
        shade_side = {}
        for t, line in tracks.items():
            sl, _ = _sun_geometry(line, sun_azimuth_deg, sun_elevation_deg)
            per_m = _shadow_across(line, sun_azimuth_deg, sun_elevation_deg)
            if sl is not None and np.isfinite(per_m):
                shade_side[t] = (sl, _HALF_BODY_M + _MAX_CAR_HEIGHT_M * abs(per_m) + 0.5)
        # Masked wherever a car may stand: not only where cars were found (a missed dark
        # car in the band reads as this car's shadow, a missed roof as lit ground) but
        # everywhere except the stretches seen empty, their centre the lit ground's colour
        # (review of 20f604f, finding 3). Not within a track's own shadow reach on its
        # anti-sun side: an empty neighbour there lies in this track's cars' shadow, so
        # it is not seen empty, and masking it would blank the very band the height cue
        # reads (review of ca3fedd, finding 1); there only found cars are masked.
        seen_empty = {}
        for t in strips:
            seen_empty[t] = np.zeros(occupancy[t][0].shape, bool)
            for on, where in read_on[t]:
                got = _seen_empty(*on, occupancy[t][0], min_contrast)
                seen_empty[t] = got if where is None else np.where(where, got, seen_empty[t])
        wide = _found_cars_in_own_shadow(
            _without_other_cars(wide, strips, {t: ~e for t, e in seen_empty.items()}, grid, shade_side),
            _without_other_cars(wide, strips, {t: occupancy[t][0] for t in strips}, grid, shade_side),
            shade_side)
    # The bare-bed test (see _bare_bed) speaks only where the image shows the sun's
    # shadows: under diffuse light a car's shadow keeps 0.85-0.9 of the lit ground's light
    # and every car would pass as a bare bed (review of 16264ba, finding 2). Shown: a
    # shadow colour learnt from the image well under the lit ground's, above the path
    # radiance or as recorded (learnt again above the darkest light, a yard of few cars
    # may keep too few shadow samples for it).
    shown = _shadows_shown(refs, path) or _shadows_shown(refs_recorded, None)
    split = {}
    if vhr:
        for tid, strip in strips.items():
            sun_left, _ = _sun_geometry(tracks[tid], sun_azimuth_deg, sun_elevation_deg)
            occ, seen = occupancy[tid]
            split[tid] = _split_cars(strip, occ, seen, refs["lit_sd"], refs["lit"], sun_left=sun_left,
                                     provenance=True, ground_sd=float(quiet_nanmean(refs["shadow_sd"])),
                                     shadow_reach_m=_shadow_reach(tracks[tid], sun_azimuth_deg, sun_elevation_deg),
                                     shadow_across_m=_shadow_across(tracks[tid], sun_azimuth_deg, sun_elevation_deg),
                                     wide=wide.get(tid), blur_m=max(0.2, 0.5 * grid.resolution),
                                     shading=_cylinder_shading(tracks[tid], sun_azimuth_deg, sun_elevation_deg),
                                     flank_glow=_flank_glow(tracks[tid], sun_azimuth_deg, sun_elevation_deg),
                                     anti_flank=_anti_flank_limits(tracks[tid], sun_azimuth_deg, sun_elevation_deg),
                                     path=path, resolution_m=grid.resolution, empty=seen_empty.get(tid),
                                     shadows_shown=shown, shadow=refs["shadow"], recorded=recorded.get(tid))
        # A colour seen at the ends of two tracks, with the anti-sun ground lit beside it,
        # is the yard's bare bed, and so is every piece of that colour and light (see
        # _end_bed_pieces). Tracks whose own bed was learnt (_with_bed) are read by it.
        bare = _end_bed_pieces(
            {tid: s if haze is None else _offset(s, haze) for tid, s in strips.items()},
            split, {tid: _sun_geometry(tracks[tid], sun_azimuth_deg, sun_elevation_deg)[0] for tid in strips},
            (refs if haze is None else refs_above_dark)["lit"],
            skip={tid for tid in strips if any("bed" in got[1] for got, _ in read_on[tid])})
        split = {tid: [c for k, c in enumerate(cars) if k not in bare.get(tid, ())]
                 for tid, cars in split.items()}
        # A car found by its deck's colour alone is a bare flat wagon (see _deck_colour_flat).
        split = {tid: _deck_colour_flat(cars, strips[tid], decks.get(tid)) for tid, cars in split.items()}
    for tid, strip in strips.items():
        sun_left, _ = _sun_geometry(tracks[tid], sun_azimuth_deg, sun_elevation_deg)
        occ, seen = occupancy[tid]
        total_obs += seen.sum() * strip.step_m
        total_len += seen.size * strip.step_m
        if vhr:
            cars = split[tid]
            by_type: dict[str, int] = {}
            # Listed from the drawn line's start.
            for a, b, ctype, score, type_from in (cars[::-1] if flipped[tid] else cars):
                by_type[ctype] = by_type.get(ctype, 0) + 1
                detections.append(_detection(strip, a, b, ctype, score, tid, type_from))
            per_feature.append({"id": tid, "count": len(cars), "by_type": by_type,
                                "observed_fraction": round(float(seen.mean()) if seen.size else 0.0, 4),
                                "unobserved_m": round(float((~seen).sum() * strip.step_m), 1),
                                "unobserved_runs_m": _along_drawn(
                                    [(float(strip.along_m[a]), float(strip.along_m[b - 1] + strip.step_m))
                                     for a, b in runs(~seen)], drawn[tid].length, flipped[tid])})
        else:
            occupied_m = float(occ.sum() * strip.step_m)
            n = occupied_m / MEAN_PITCH_M
            # Pitch varies 13-19 m between car types (~12 %) and each run end is
            # uncertain by about half a pixel.
            var = (0.12 * n) ** 2 + (len(runs(occ)) * strip.step_m / MEAN_PITCH_M) ** 2 * 0.25
            est_total += n
            est_var += var
            # Cars are 3 m wide: on a track whose neighbour is closer than 1.5 pixels,
            # a car covers a fraction of a pixel shared with the neighbour's cars, and
            # low-contrast cars go unseen. The estimate then undercounts (by 15-45 % on the
            # simulator's 5 m-spaced busy yards at 10 m, quiet yards read 0; 92-98 % on an
            # independent generator at 3-10 m, resolved tracks too) beyond the stated
            # uncertainty: see MEDIUM_OPTICAL_CAVEAT.
            others = [tracks[o] for o in tracks if o != tid]
            spacing = min((tracks[tid].interpolate(0.5, normalized=True).distance(o) for o in others),
                          default=float("inf"))
            per_feature.append({"id": tid, "count": round(n, 1), "occupied_m": round(occupied_m, 1),
                                "uncertainty": round(math.sqrt(var), 2), "by_type": {},
                                "track_spacing_m": round(spacing, 1) if math.isfinite(spacing) else None,
                                "tracks_resolved": bool(spacing >= 1.5 * grid.resolution),
                                "observed_fraction": round(float(seen.mean()) if seen.size else 0.0, 4)})
    observed = total_obs / total_len if total_len else 0.0
    if shift is not None:
        moved = [round(shift.dx_m, 2), round(shift.dy_m, 2)]
        per_feature = [{**p, "registration_shift_m": moved, "registration": shift.reason or "applied"}
                       for p in per_feature]
        if shift.applied:
            detections = [dataclasses.replace(d, polygon=translate(d.polygon, -shift.dx_m, -shift.dy_m))
                          for d in detections]
    if vhr:
        by_type_all: dict[str, int] = {}
        for d in detections:
            by_type_all[d.type] = by_type_all.get(d.type, 0) + 1
        return CountResult("railcars", len(detections), by_type_all, tuple(per_feature), tuple(detections),
                           grid.crs, None, observed)
    return CountResult("railcars", round(est_total, 1), {}, tuple(per_feature), (), grid.crs,
                       math.sqrt(est_var), observed, extras={"caveat": MEDIUM_OPTICAL_CAVEAT})


# Reach (m, in the plane) of a cloud shadow's faint edge past the shade found: the
# penumbra of a cloud 1-4 km up is 9-37 m wide (the sun's disc spans 0.53 degrees), and a
# cloud's thinning margin dims the ground over a few tens of metres.
EDGE_DIMMING_M = 40.0
# Margin (m) past CLOUD_EDGE_M by which the cloud's own thin edge is taken off the shade:
# cloud_shade draws that edge on coarse blocks, so it reaches up to a block's diagonal
# past CLOUD_EDGE_M (review RCLOUD: fragments of it at 0.3 m grew into 40 m zones).
_EDGE_RING_SLACK_M = 2.0


def _dimmed_near_tracks(shade: np.ndarray, cloud: np.ndarray, grid: GridSpec,
                        strips: Mapping[str, Strip]) -> tuple[np.ndarray, GridSpec]:
    """Pixels within ``EDGE_DIMMING_M`` of a cloud's shadow, on a window around the
    strips (and that window's grid).

    The shadow is the shade found (``cloud_shade``) less the cloud's own thin edge
    (``CLOUD_EDGE_M`` around the mask): a cloud's veil adds light; only its shadow,
    hundreds of metres away along the anti-sun direction, dims the ground. Only the
    window around the tracks is computed (a yard in a large scene), wide enough that
    every shadow pixel within reach of a track and the cloud within its edge lie in it.
    """
    ring = CLOUD_EDGE_M + max(_EDGE_RING_SLACK_M, grid.resolution)
    pad = (EDGE_DIMMING_M + 2.0 * ring + 2.0) / grid.resolution
    rows, cols = zip(*(grid.rowcol(s.x, s.y) for s in strips.values()))
    r0 = max(int(math.floor(min(float(np.nanmin(r)) for r in rows) - pad)), 0)
    r1 = min(int(math.ceil(max(float(np.nanmax(r)) for r in rows) + pad)) + 1, grid.shape[0])
    c0 = max(int(math.floor(min(float(np.nanmin(c)) for c in cols) - pad)), 0)
    c1 = min(int(math.ceil(max(float(np.nanmax(c)) for c in cols) + pad)) + 1, grid.shape[1])
    if r1 <= r0 or c1 <= c0:
        # No track near the image: nothing to dim (a one-pixel window of nothing).
        return np.zeros((1, 1), bool), GridSpec(grid.crs, grid.transform, (1, 1))
    t = grid.transform
    window = GridSpec(grid.crs, Affine(t.a, 0.0, t.c + c0 * t.a, 0.0, t.e, t.f + r0 * t.e), (r1 - r0, c1 - c0))
    shadow = shade[r0:r1, c0:c1] & ~_near(cloud[r0:r1, c0:c1], window, ring)
    return _near(shadow, window, EDGE_DIMMING_M, block_m=EDGE_DIMMING_M / 8), window


def _near(mask: np.ndarray, grid: GridSpec, dist_m: float, *, block_m: float = 1.0) -> np.ndarray:
    """Pixels within ``dist_m`` of ``mask`` (row, col), on blocks of about ``block_m``
    (exact to within a block's diagonal)."""
    f = max(1, int(block_m // grid.resolution))
    rows, cols = -(-mask.shape[0] // f), -(-mask.shape[1] // f)
    pad = np.zeros((rows * f, cols * f), bool)
    pad[:mask.shape[0], :mask.shape[1]] = mask
    small = pad.reshape(rows, f, cols, f).any(axis=(1, 3))
    if not small.any():
        return np.zeros(mask.shape, bool)
    near = ndimage.distance_transform_edt(~small) * f * grid.resolution <= dist_m
    return np.repeat(np.repeat(near, f, axis=0), f, axis=1)[:mask.shape[0], :mask.shape[1]]


def _hidden_along(mask: np.ndarray, grid: GridSpec, strip: Strip) -> np.ndarray:
    """Positions along ``strip`` where any sample across it falls on ``mask`` (row, col
    of ``grid``; nearest pixel; off the grid: not masked)."""
    r, c = grid.rowcol(strip.x, strip.y)
    r, c = np.rint(r).astype(int), np.rint(c).astype(int)
    inside = (r >= 0) & (r < mask.shape[0]) & (c >= 0) & (c < mask.shape[1])
    hit = np.zeros(r.shape, bool)
    hit[inside] = mask[r[inside], c[inside]]
    return hit.any(axis=0)


def _masked(strip: Strip, mask: np.ndarray, grid: GridSpec) -> Strip:
    """``strip`` with NaN wherever its samples fall on ``mask``."""
    rows, cols = grid.rowcol(strip.x, strip.y)
    hit = ndimage.map_coordinates(mask.astype("float32"), [rows, cols], order=0, mode="constant", cval=0.0) > 0.5
    values = np.where(hit[None], np.nan, strip.values).astype(strip.values.dtype)
    return Strip(values, strip.along_m, strip.across_m, strip.x, strip.y, strip.step_m)


# ----------------------------------------------------------------------------- model
def _zones(strip: Strip) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(strip.across_m)
    centre = a <= 1.0
    side = (a >= 2.0) & (a <= 2.6)
    if not side.any():
        side = a >= a.max() - strip.step_m
    return centre, side


def _empty_track_reference(strips: Mapping[str, Strip], *, flanked: bool = True) -> dict[str, np.ndarray]:
    """Colour of empty track, lit and in shadow, learnt from the image itself.

    Between parallel tracks (2.0-2.6 m off a centreline) lies ballast, never a car body,
    so those samples show the empty-track colour; the brighter ones are lit, the darker
    ones in the shadow of cars or buildings. The centre of an empty track also carries
    the rails, so the reference is refined on centre samples close to the side colour.
    In a busy yard most of that ground is in the cars' shadows: the lit colour is then
    learnt from the bright mode of the samples (:func:`_lit_weighted`). With
    ``flanked``, the centres that refine it are those with lit ground on both sides
    (empty track), unless their colour is a mix of cars and ground (see below);
    without, the mode of all centres near the side colour, as before.
    """
    side_samples, centre_means, side_means = [], [], []
    for s in strips.values():
        centre, side = _zones(s)
        side_samples.append(s.values[:, side, :].reshape(s.values.shape[0], -1).T)
        centre_means.append(quiet_nanmean(s.values[:, centre, :], axis=1).T)
        # Each side's mean colour at every along-track position (n_along, 2, band).
        side_means.append(np.stack([quiet_nanmean(s.values[:, side & (s.across_m * k > 0), :], axis=1).T
                                    for k in (1, -1)], axis=1))
    samples = np.concatenate(side_samples)
    centres = np.concatenate(centre_means)
    flanks = np.concatenate(side_means)
    weighted = _lit_weighted(samples)
    first = GroundModel.from_samples(weighted, assume_shadow=False)
    candidates = [centres]
    if first is not None and flanked:
        # Empty track is lit ground on both sides: any car, even a flat wagon's 1.4 m
        # deck, shades its anti-sun side out to 2 m or more under a sun below 65 degrees.
        # In a busy yard under haze, where cars differ from ballast by two spreads or
        # less, the mode of all centres is the cars'; the centres flanked by lit ground
        # are the empty track.
        flank_d = np.sqrt(np.mean(((flanks - first.lit) / np.maximum(first.lit_sd, 0.02 * np.abs(first.lit))) ** 2,
                                  axis=2))
        lit_flanked = centres[np.all(flank_d < _FLANK_LIT_SPREADS, axis=1)]
        if lit_flanked.shape[0] >= _MIN_FLANKED_CENTRES:
            candidates.append(lit_flanked)
    models = []
    for cand in candidates:
        if weighted is not samples and first is not None:
            # A busy yard: most track centres carry cars, some close to the ground's colour.
            # Only the mode of the centres near the lit ground is empty track.
            cand = _clipped_mode(cand, first.lit, first.lit_sd)
        m = GroundModel.from_samples(weighted, refine_with=cand, assume_shadow=False)
        if m is not None:
            models.append(m)
    # The flanked centres are preferred: the mode of all centres may be a block of
    # identical cars, as tight a cluster as ballast. But where the side band's own lit
    # colour is off (a packed yard at 1 m, where bright cars' blurred edges reach the
    # side band), its flanked centres mix cars with ground: a colour spread well over
    # that of all centres' mode (more than the ~2x that lighting and the rails' share
    # add across a yard) marks that mixture, and the mode is kept.
    model = models[0] if models else None
    if len(models) == 2 and np.mean(models[1].lit_sd) <= _MIXED_SPREAD_RATIO * np.mean(models[0].lit_sd):
        model = models[1]
    if weighted is not samples and model is not None and model.shadow is None:
        # The lit colour was learnt from the bright mode and a subset of the dark one:
        # the shadow colour is learnt from all the samples beside the tracks.
        model = _with_shadow(model, samples)
    nb = side_samples[0].shape[1]
    nan = np.full(nb, np.nan)
    if model is None:
        return {"lit": nan, "lit_sd": nan, "shadow": nan, "shadow_sd": nan}
    return {"lit": model.lit, "lit_sd": model.lit_sd,
            "shadow": nan if model.shadow is None else model.shadow,
            "shadow_sd": nan if model.shadow_sd is None else model.shadow_sd}


def _with_bed(strip: Strip, refs, *, per_m: float | np.ndarray, path: np.ndarray | None = None,
              floor_light: np.ndarray | None = None, blur_m: float | None = None,
              beds_elsewhere: Sequence[tuple[np.ndarray, np.ndarray]] = (),
              sun_left: bool | None = None) -> dict:
    """``refs`` with the colour of this track's own empty bed, where the image shows it.

    Parameters
    ----------
    strip : Strip
        The track's samples (reflectance, on the same basis as ``refs``).
    refs : mapping
        Learnt ground colours per band: ``lit`` and ``lit_sd`` (the ground beside the
        tracks) mark the side bands that are lit ground; ``shadow`` gives the bed's
        colour in shade. Every entry is kept.
    per_m : float or numpy.ndarray
        Metres a shadow falls sideways per metre of height, for the whole track or per
        sample along it (:func:`_local_shadow_across`: a curved track's legs face the sun
        differently); NaN with the sun unknown or along the track.
    path : numpy.ndarray or None
        Per band, the path radiance still in ``strip`` and ``refs`` (reflectance): the
        light a shadowed bed keeps besides its own skylight. None for none.
    floor_light : numpy.ndarray or None
        Per band, the darkest light already subtracted from ``strip`` and ``refs``: the
        spread's floor is taken on the light as recorded (see :func:`_recorded_spread_floors`).
    blur_m : float or None
        Blur at a body's edge (m), as in :func:`_deck_shadow_bands`; None: the samples'.
    beds_elsewhere : sequence of (numpy.ndarray, numpy.ndarray)
        The beds (lit colour and spread per band, reflectance, on the basis of ``strip``)
        learnt on the image's other tracks: one that this track's few empty centres
        match is taken as its bed (see Notes).
    sun_left : bool or None
        Whether the sun lies on the positive ``across_m`` side (see :func:`_sun_geometry`);
        None: unknown (both sides must then be lit, see :func:`_flanked_mask`).

    Returns
    -------
    dict
        ``refs`` with ``bed`` and ``bed_sd`` (lit bed colour and its spread, per band)
        and ``bed_shadow`` (the bed in shade); ``refs`` unchanged where the evidence is
        thin (see Notes).

    Notes
    -----
    The centre 2 m of a track is rails and sleepers as much as ballast: sleepers cover
    40-50 % of it at a 0.6 m pitch, and concrete ones (reflectance ~0.3) make an empty
    centre 1.2-1.5 times as bright as the ground beside the track, creosoted wooden ones
    (~0.05) or fouled ballast a quarter to 0.6 of it. Judged against the ground beside
    the track alone, such an empty centre reads as a bright or a dark car over its
    length. Its own colour is learnt where this track is seen empty (see
    :func:`_flanked_mask`) over ``_MIN_FLANKED_CENTRES`` samples (20 m), per track
    (beds differ between tracks: clean or fouled, concrete or wooden sleepers); else the
    side colour is used alone, as before (a packed track, the sun along the track or
    very high: see :func:`_flanked_mask`). The caller learns it from lit flanks alone at
    pixels of ``_BED_MAX_RES_M`` or finer (see there), up to 1 m only where the track's
    uniformity agrees (:func:`_learnt_bed`). The bed in shade keeps the shadowed
    ground's share of the lit ground's light per band (the same sun and skylight on
    another material).

    A track seen empty over less than those 20 m (a busy track: gaps between cuts of
    cars) takes the bed learnt on another track of the image where its own empty
    centres, over ``_MIN_CORROBORATING_M`` at least and with one contiguous empty
    stretch of ``_MIN_CORROBORATING_RUN_M`` among them (a real gap between cuts, not
    samples scattered over a packed track's car tops), match it: their median within
    ``_CORROBORATING_SPREADS`` of that bed's spread and ``_CORROBORATING_SHARE`` of its
    colour in every band. The other beds are learnt first, each from its own track's
    20 m or more (see ``_count_railcars``). A yard's tracks are
    mostly laid alike (one sleeper type, ballast clean or fouled), and the few centres
    seen empty here are this track's own evidence that its bed is that one; a bed of
    another kind (wooden against concrete sleepers: a quarter against 1.2-1.5 times the
    side ground's light) does not match and is left unlearnt, as before.
    """
    lit = np.asarray(refs["lit"], dtype="float64")
    shadow = np.asarray(refs["shadow"], dtype="float64")
    if not (np.all(np.isfinite(lit)) and np.all(np.isfinite(shadow))):
        return refs
    lit_sd = np.asarray(refs["lit_sd"], dtype="float64")
    every, flanked = _flanked_mask(strip, refs, per_m, blur_m=blur_m, sun_left=sun_left)
    centres = every[flanked]
    mode = _bed_mode(centres, lit_sd)
    if mode is None and centres.shape[0] < _MIN_FLANKED_CENTRES:
        # Too little seen empty to learn from (not a mix _bed_mode refused). Only a real
        # gap between cuts of cars corroborates: one contiguous empty stretch of
        # _MIN_CORROBORATING_RUN_M, not samples scattered over car tops (review RRCOUNT H2).
        mode = _corroborated_bed(centres, beds_elsewhere, strip.step_m,
                                 longest_run_m=_longest_run(flanked) * strip.step_m)
    if mode is None:
        return refs
    return _bed_refs(refs, *mode, path=path, floor_light=floor_light)


def _learnt_bed(strip: Strip, refs, *, resolution_m: float, per_m: float | np.ndarray,
                path: np.ndarray | None = None, floor_light: np.ndarray | None = None,
                blur_m: float | None = None, beds_elsewhere: Sequence[tuple[np.ndarray, np.ndarray]] = (),
                sun_left: bool | None = None) -> dict:
    """``refs`` with this track's own empty bed learnt from lit flanks (:func:`_with_bed`),
    at pixels too coarse for lit flanks alone only where the track's uniformity agrees.

    Parameters
    ----------
    strip : Strip
        The track's samples (reflectance, on the same basis as ``refs``).
    refs : mapping
        Learnt ground colours per band (reflectance), as in :func:`_with_bed`.
    resolution_m : float
        The image's pixel size (m).
    per_m, path, floor_light, blur_m, beds_elsewhere, sun_left
        As in :func:`_with_bed`.

    Returns
    -------
    dict
        ``refs`` with ``bed``, ``bed_sd`` and ``bed_shadow`` (see :func:`_with_bed`), or
        ``refs`` itself.

    Notes
    -----
    At ``_BED_MAX_RES_M`` or finer this is :func:`_with_bed`. Up to
    ``_UNIFORM_FLANKED_BED_MAX_RES_M`` a coarse pixel's blur may carry a bright body's
    light into the side band over the body's own shadow (see ``_BED_MAX_RES_M``), so lit
    flanks alone do not show a track empty: a bed is learnt there only from the track's
    own flanked centres (no other track's bed: a few centres are where the blur errs)
    and only where the track is uniform along most of its length too, with a uniform bed
    (:func:`_uniform_bed`: brighter than the lit ground) of the same colour, within
    ``_CORROBORATING_SPREADS`` of the flanked bed's spread and ``_CORROBORATING_SHARE``
    of its colour in every band (as one track's bed corroborates another's). The two
    witnesses fail on different things: a string of pale cars may be uniform, but any
    car shades its anti-sun band, so its flanks read lit only in stretches where the
    blur errs; a few blurred lit flanks beside cars do not make a track uniform. A
    concrete-sleepered empty track at 1 m (altgen clear seed 8270) shows both and is no
    longer read as a string of cars.
    """
    if resolution_m <= _BED_MAX_RES_M:
        return _with_bed(strip, refs, per_m=per_m, path=path, floor_light=floor_light, blur_m=blur_m,
                         beds_elsewhere=beds_elsewhere, sun_left=sun_left)
    if resolution_m > _UNIFORM_FLANKED_BED_MAX_RES_M:
        return refs
    flanked = _with_bed(strip, refs, per_m=per_m, path=path, floor_light=floor_light, blur_m=blur_m,
                        sun_left=sun_left)
    if "bed" not in flanked:
        return refs
    uniform = _uniform_bed(strip, refs, path=path, floor_light=floor_light)
    if "bed" not in uniform:
        return refs
    if not _same_bed(uniform["bed"], flanked["bed"], flanked["bed_sd"]):
        return refs
    return flanked


def _same_bed(colour: np.ndarray, bed: np.ndarray, bed_sd: np.ndarray) -> bool:
    """Whether ``colour`` (per band, reflectance) is the bed ``bed`` (its spread ``bed_sd``):
    within ``_CORROBORATING_SPREADS`` of its spread (at least 2 % of its colour) and
    ``_CORROBORATING_SHARE`` of its colour in every band."""
    bed = np.asarray(bed, dtype="float64")
    tol = np.minimum(_CORROBORATING_SPREADS * np.maximum(np.asarray(bed_sd, dtype="float64"), 0.02 * np.abs(bed)),
                     _CORROBORATING_SHARE * np.abs(bed))
    return bool(np.all(np.abs(np.asarray(colour, dtype="float64") - bed) <= tol))


# Coarsest pixel (m) at which a track's own bed may be learnt at all (see _learnt_bed):
# from lit flanks corroborated by the track's uniformity above _BED_MAX_RES_M. 1 m is
# the coarsest pixel the altgen bench draws, where it was measured.
_UNIFORM_FLANKED_BED_MAX_RES_M = 1.0


def _longest_run(mask: np.ndarray) -> int:
    """Length (samples) of the longest run of consecutive True values in a 1-D mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean per sample along a track, in order along it.

    Returns
    -------
    int
        The longest run of True samples; 0 for none.
    """
    m = np.concatenate(([False], np.asarray(mask, dtype=bool), [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    if edges.size == 0:
        return 0
    return int(np.max(edges[1::2] - edges[0::2]))


def _corroborated_bed(centres: np.ndarray, beds: Sequence[tuple[np.ndarray, np.ndarray]],
                      step_m: float, *, longest_run_m: float = np.inf) -> tuple[np.ndarray, np.ndarray] | None:
    """The bed of another track that a track's few empty centres match (see :func:`_with_bed`).

    Parameters
    ----------
    centres : numpy.ndarray
        (n, band) centre colours of the stretches of this track seen empty (reflectance).
    beds : sequence of (numpy.ndarray, numpy.ndarray)
        Beds learnt on other tracks: lit colour and spread per band (reflectance).
    step_m : float
        Sample spacing along the track (m).
    longest_run_m : float
        Length (m) of the longest contiguous stretch of this track seen empty (the
        caller's flanked mask, see :func:`_flanked_mask`); infinite: not checked.

    Returns
    -------
    tuple of numpy.ndarray or None
        The matched bed's colour and spread per band (of several, the nearest in
        spreads); None with under ``_MIN_CORROBORATING_M`` of empty centres in all,
        no contiguous stretch of ``_MIN_CORROBORATING_RUN_M``, no bed elsewhere, or
        none matching.
    """
    c = centres[np.all(np.isfinite(centres), axis=1)] if centres.size else centres
    if not beds or c.shape[0] < max(3, int(round(_MIN_CORROBORATING_M / step_m))):
        return None
    if not longest_run_m >= _MIN_CORROBORATING_RUN_M:
        return None
    med = np.median(c, axis=0)
    hits = [(col, sd) for col, sd in beds if _same_bed(med, col, sd)]
    if not hits:
        return None
    # Beds of two tracks both matching (close kinds): the one nearest in spreads.
    return min(hits, key=lambda b: float(np.mean(np.abs(med - b[0]) / np.maximum(b[1], 1e-4))))


# Least total length (m) of a track's flanked centres (samples, not necessarily one
# stretch) that may corroborate a bed learnt on another track (see _with_bed): enough
# for a stable median.
_MIN_CORROBORATING_M = 5.0
# Least length (m) of one contiguous empty stretch among them. Between two cuts of cars
# a real gap is several metres (couplers alone keep car ends ~1 m apart, and yards leave
# gaps of a car length or more), while flanked samples on a packed track's car tops come
# in runs of 0.5-2 m (pale roofs blurred with penumbra at 0.75 m, review RRCOUNT H2: 33
# samples in 21 runs on a track of 18 cars end to end). 3 m is above those runs and
# below the real gaps this rule is for (3.3-6.5 m measured on slices 190 and 120).
_MIN_CORROBORATING_RUN_M = 3.0
# Spreads of the other track's bed, and share of its colour, within which this track's
# empty centres' median must lie in every band to take that bed. The share tells the
# same sleepers on clean ballast from fouled (concrete: about 0.19 against 0.16 in
# reflectance, 17 % apart; wooden: 0.095 against 0.06) where a hazy or cloudy scene's
# spreads are wide.
_CORROBORATING_SPREADS = 3.0
_CORROBORATING_SHARE = 0.15


def _bed_refs(refs, colour: np.ndarray, spread: np.ndarray, *, path: np.ndarray | None = None,
              floor_light: np.ndarray | None = None) -> dict:
    """``refs`` with a track's learnt bed.

    Parameters
    ----------
    refs : mapping
        Learnt ground colours per band (reflectance): ``lit`` and ``shadow`` are used,
        every entry is kept.
    colour, spread : numpy.ndarray
        The bed's lit colour and its spread per band (reflectance), as :func:`_bed_mode`
        gives them.
    path, floor_light : numpy.ndarray or None
        As in :func:`_with_bed` (per band, reflectance).

    Returns
    -------
    dict
        ``refs`` with ``bed`` and ``bed_sd`` (the lit bed and its spread, the spread
        clipped as described in :func:`_with_bed`) and ``bed_shadow`` (the bed in shade),
        per band, reflectance.
    """
    lit = np.asarray(refs["lit"], dtype="float64")
    shadow = np.asarray(refs["shadow"], dtype="float64")
    light = np.zeros_like(colour) if floor_light is None else np.asarray(floor_light, dtype="float64")
    if not float(np.nanmean(light)) >= _HAZE_FLOOR_SHARE * float(np.mean(lit)):
        light = np.zeros_like(colour)
    # A mean over the 2 m centre varies less than one sample of the ground beside the
    # track: a wider spread is the blurred ends of wagons among the flanked centres.
    spread = np.minimum(spread, np.asarray(refs["lit_sd"], dtype="float64"))
    spread = np.maximum(spread, lit_spread_floor(colour + light))
    p = np.zeros_like(colour) if path is None else np.asarray(path, dtype="float64")
    bed_shadow = p + (colour - p) * (shadow - p) / np.maximum(lit - p, 1e-6)
    return {**refs, "bed": colour, "bed_sd": spread, "bed_shadow": bed_shadow}


def _uniform_bed(strip: Strip, refs, *, path: np.ndarray | None = None,
                 floor_light: np.ndarray | None = None, sun_along_m: float | None = None) -> dict:
    """``refs`` with this track's bed learnt from its uniform stretches, where most of the
    track is uniform along its length (an empty track); ``refs`` unchanged otherwise.

    Parameters
    ----------
    strip : Strip
        The track's samples (reflectance, on the same basis as ``refs``).
    refs : mapping
        Learnt ground colours per band (reflectance): ``lit`` and ``lit_sd`` must be
        finite; ``shadow`` may be NaN (unknown: the sun along the tracks), and the bed
        in shade is then NaN too. Every entry is kept.
    path, floor_light : numpy.ndarray or None
        As in :func:`_with_bed` (per band, reflectance).
    sun_along_m : float or None
        Where the sun shines along this track (it has no sun side: :func:`_sun_geometry`
        gives None with the sun known), the length (m) of the tallest car's shadow
        along the track (``_MAX_CAR_HEIGHT_M`` times the sun's along-track share over
        the tangent of its elevation); None otherwise. A bed darker than the lit ground
        may then be learnt too, where it is grey and no car's shadow falls on the track
        (see Notes).

    Returns
    -------
    dict
        ``refs`` with ``bed``, ``bed_sd`` and ``bed_shadow`` (see :func:`_with_bed`), or
        ``refs`` itself.

    Notes
    -----
    A track bed is one ballast and one kind of sleeper over its whole length: its centre
    2 m (sleepers at a 0.6 m pitch, averaged by the pixel and the 1 m smoothing) keeps
    one brightness along the track, broken only where a mast's or a neighbour's shadow
    crosses it. A string of cars changes its look at every car end, every 12-21 m (a
    coupler gap 1.0-1.3 m long showing the bed or a shadow, the end walls, another car's
    paint): in any ``_UNIFORM_WINDOW_M`` window (two car lengths and more) the centre's
    brightness spans more than ``_UNIFORM_RANGE`` of its level (5th to 95th percentile).
    Where over ``_UNIFORM_TRACK_SHARE`` of a track's windows are uniform, the track is
    mostly empty, and the mode of their centre colours (:func:`_bed_mode`) is its bed,
    if brighter than the lit ground beside the track by more than its spread (concrete
    sleepers, clean ballast, snow; a string of dark bodies can be as uniform as a dark
    bed, see the comment in the code). This needs no sun side, so it also holds with the
    sun along the track, where a car shades neither side and :func:`_with_bed` learns
    nothing. A track shorter than two windows is left as it is.

    The counter asks it only where uniformity can tell a bed from cars:

    * where the sun would shade the coupler gaps of a string of cars along the track
      (:func:`_gaps_shaded`: the lowest deck's shadow along it covers a 1 m gap). Under a
      high sun or one across the track a train of pale flat wagons shows lit gaps and is
      as uniform as a concrete bed (review RRAILF H1, H2);
    * and where no flat deck's shadow can be read beside the track
      (:func:`_deck_shadow_readable`), or the sun has no side: where those shadows show,
      they tell decks from the bed (:func:`_with_bed`), which uniformity would undo.

    Even so, pale bodies whose gaps do not read dark (a lit end wall seen off-nadir
    hiding the gap) would be taken for a pale bed.

    With the sun along the track (``sun_along_m``) a dark bed (wooden sleepers, fouled
    ballast) is learnt too where two things say it is no string of dark cars:

    * its colour is the lit ground's dimmed alike in every band (:func:`_grey_bed`):
      ballast, concrete, creosoted timber and steel seen in the ground's own light,
      while the dark bodies that make uniform strings (rusted steel, oxide paint,
      timber decks) lose far more blue than near infrared;
    * no body's shadow falls on the track (:func:`_own_shadow_along`): with the sun
      along the track a shadow on its centre is cast by something standing on the
      track itself or spanning it (a footbridge, a signal gantry: the bed is then left
      unlearnt, as before), not by a mast or a building beside it, and a
      string of cars shades the bed past its end away from the sun over at least a
      coupler gap's length.

    A string of dark grey cars filling the whole track, its gaps blurred away, is
    still taken for the bed.
    """
    lit = np.asarray(refs["lit"], dtype="float64")
    lit_sd = np.asarray(refs["lit_sd"], dtype="float64")
    # The shadowed ground's colour is not needed: uniformity along the track is read on
    # the centre's brightness alone, and with the sun along the tracks (the case this
    # test is for) no car shades the ground beside its track, so no shadow colour is
    # learnt from the side bands (refs["shadow"] NaN; see _shadow_from_anti_sun_sides).
    # The bed in shade is then unknown too (NaN, from _bed_refs) and only the lit bed
    # is read (_occupancy's colour test, as it reads the lit ground without a shadow).
    # Refusing it there left a concrete-sleepered empty track under a low sun along the
    # yard read as 15 cars end to end (altgen low sun 0.75 m, tuning index 152).
    if not (np.all(np.isfinite(lit)) and np.all(np.isfinite(lit_sd))):
        return refs
    step = strip.step_m
    w = int(round(_UNIFORM_WINDOW_M / step))
    n = strip.along_m.size
    if n < 2 * w:
        return refs
    centre, _ = _zones(strip)
    centres = quiet_nanmean(strip.values[:, centre, :], axis=1).T  # (n, band)
    b = _nan_smooth(quiet_nanmean(centres[:, :3], axis=1), int(1.0 / step) | 1)
    uniform = np.zeros(n, bool)
    n_win = n_uniform = 0
    # Windows overlap by three quarters (a 7.5 m stride): every car end lies well inside
    # some window, not only at a window's edge.
    for i in range(0, n - w + 1, max(1, w // 4)):
        x = b[i:i + w]
        ok = np.isfinite(x)
        # A window with over a tenth of its samples unseen (off the image, masked cloud)
        # is not judged: a hole may hide the car end that would break it.
        if ok.mean() < 0.9:
            continue
        x = x[ok]
        level = float(np.median(x))
        n_win += 1
        if level > 0 and (np.percentile(x, 95) - np.percentile(x, 5)) < _UNIFORM_RANGE * level:
            n_uniform += 1
            uniform[i:i + w] = True
    if n_win == 0 or n_uniform <= _UNIFORM_TRACK_SHARE * n_win:
        return refs
    got = centres[uniform & np.all(np.isfinite(centres), axis=1)]
    mode = _bed_mode(got, lit_sd)
    if mode is None:
        return refs
    # Only a bed brighter than the lit ground beside the track (concrete sleepers, clean
    # ballast, snow): between dark bodies (black tank cars, rusty flat decks) the coupler
    # gap lies in their shade and is as dark as they are, so a string of dark cars can be
    # as uniform as a dark bed; between pale bodies the shaded gap breaks the uniformity.
    # (Session 37: uniform strings of dark flat decks and dark cars were learnt as the bed
    # and 7-8 cars lost per track; with this no car was lost on 4 altgen slices, while
    # wooden-sleepered and fouled beds stay unlearnt here.)
    if not float(np.mean(mode[0][:3])) > float(np.mean(lit[:3] + lit_sd[:3])):
        # With the sun along the track a dark bed can still be told from dark bodies by
        # its colour and by the shadows a string of bodies casts along the track (see
        # Notes); with a sun side _with_bed learns it from the lit flanks instead.
        # The ratios and shares below are of light reflected off the ground: a path
        # radiance added over every pixel (``path``, a thin cloud's or haze's) pushes every
        # band ratio toward one and lifts shade toward the bed, so it is taken off first.
        p = np.zeros(mode[0].shape) if path is None else np.asarray(path, dtype="float64")
        p3 = float(np.mean(p[:3]))
        level = float(np.mean(mode[0][:3])) - p3
        if not (sun_along_m is not None and _grey_bed(mode[0] - p, lit - p)
                and not _own_shadow_along(b - p3, level, step, sun_along_m)
                and not _gaps_at_car_spacing(quiet_nanmean(centres[:, :3], axis=1) - p3, level, step)):
            return refs
    return _bed_refs(refs, *mode, path=path, floor_light=floor_light)


def _grey_bed(colour: np.ndarray, lit: np.ndarray) -> bool:
    """Whether ``colour`` is the lit ground ``lit`` dimmed alike in every band.

    Parameters
    ----------
    colour, lit : numpy.ndarray
        A track's candidate bed and the lit ground beside the track, per band
        (reflectance, on the same basis).

    Returns
    -------
    bool
        True where the largest of the per-band ratios ``colour / lit`` is at most
        ``_GREY_BED_RATIO`` times the smallest and the smallest is at least
        ``_GREY_BED_MIN_SHARE`` (all ratios positive).

    Notes
    -----
    Black and dark grey paint (tank cars, weathered roofs: reflectance 0.03-0.06) is grey
    too, and a string of such cars, its coupler gaps in its own shade, is as uniform as a
    bed. Over vegetation it fails the band ratio (grass is dark in the visible, bright in
    the near infrared); black paint (up to ~0.045) over gravel, concrete, soil or snow (0.12
    and brighter in every band) keeps under ``_GREY_BED_MIN_SHARE`` of the ground's light,
    while the empty dark beds measured (creosoted sleepers, fouled ballast) kept 0.49-0.88
    of it. Dark grey paint (0.05-0.06) over gravel of 0.12-0.15 keeps 0.33-0.5, and dark
    paint over dark asphalt (~0.1) more: those strings pass here and are told from a bed
    by their coupler gaps (:func:`_gaps_at_car_spacing`) or their end shadow
    (:func:`_own_shadow_along`) only.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(colour, dtype="float64") / np.asarray(lit, dtype="float64")
    if not (np.all(np.isfinite(ratio)) and np.all(ratio > 0)):
        return False
    return bool(ratio.max() <= _GREY_BED_RATIO * ratio.min() and ratio.min() >= _GREY_BED_MIN_SHARE)


def _own_shadow_along(brightness: np.ndarray, level: float, step_m: float, longest_m: float) -> bool:
    """Whether a body's shadow falls on a track's centre somewhere along it.

    Parameters
    ----------
    brightness : numpy.ndarray
        The centre's brightness along the track (reflectance, smoothed over 1 m; NaN
        where unseen).
    level : float
        The brightness of the track's candidate bed (reflectance).
    step_m : float
        Sample spacing along the track (m).
    longest_m : float
        Length (m) of the tallest car's shadow along the track.

    Returns
    -------
    bool
        True where, over ``_MIN_COUPLER_GAP_M`` or more but no more than ``longest_m``
        and a pixel's blur either side (``_SHADOW_EDGE_BLUR_M`` each), the centre keeps
        under ``_SHADE_SHARE`` of ``level``: a longer shade is no car's (a cloud's).

    Notes
    -----
    Shade keeps the sky's light only, under half the lit ground's in the visible bands
    under a clear sky; an oil stain between the rails darkens under 2 m of the track by
    less (its 1.4 m across is two thirds of the centre). :func:`_gaps_shaded` holds
    where this is asked, so the lowest deck's shadow along the track is a coupler gap
    long or longer.
    """
    lo = max(1, int(round(_MIN_COUPLER_GAP_M / step_m)))
    hi = int(round((longest_m + 2.0 * _SHADOW_EDGE_BLUR_M) / step_m))
    with np.errstate(invalid="ignore"):
        shaded = np.asarray(brightness) < _SHADE_SHARE * level
    return any(lo <= b - a <= hi for a, b in runs(shaded))


def _gaps_at_car_spacing(brightness: np.ndarray, level: float, step_m: float) -> bool:
    """Whether a track's centre dips, briefly, at a car's spacing: the coupler gaps of a
    string of cars.

    Parameters
    ----------
    brightness : numpy.ndarray
        The centre's brightness along the track, unsmoothed (reflectance; NaN where
        unseen).
    level : float
        The brightness of the track's candidate bed (reflectance).
    step_m : float
        Sample spacing along the track (m).

    Returns
    -------
    bool
        True where two dips (under ``_GAP_DIP_SHARE`` of ``level`` after a 0.5 m
        smoothing, each from one sample to ``_MAX_GAP_DIP_M`` long) lie a car's length
        apart (``_CAR_SPACING_M``).

    Notes
    -----
    With the sun along the track a grey car's coupler gap lies in its shade (a quarter to
    a third of the ground's light), no more than half as dark again as a grey top of half
    the ground's light, and a metre long: smoothed over 1 m it no longer reads as a shade
    (:func:`_own_shadow_along`), and the uniformity windows' 5th percentile drops it (a
    metre of 30). A single dip is an oil stain or a crossing as well; two of them a car's
    length apart are a string of cars. (Review of session 51: strings of tops at 0.45-0.7
    of the ground's light with 1 m gaps were learnt as the bed and every car lost.)
    """
    k = max(1, int(round(0.5 / step_m))) | 1
    with np.errstate(invalid="ignore"):
        dip = _nan_smooth(np.asarray(brightness, dtype="float64"), k) < _GAP_DIP_SHARE * level
    hi = int(round(_MAX_GAP_DIP_M / step_m))
    centres = [0.5 * (a + b) * step_m for a, b in runs(dip) if 1 <= b - a <= hi]
    lo_m, hi_m = _CAR_SPACING_M
    return any(lo_m <= c1 - c0 <= hi_m for c0, c1 in zip(centres, centres[1:]))


# A coupler gap read as a dip of a string of grey cars (see _gaps_at_car_spacing): under
# this share of the candidate bed's brightness; no longer than this (m: a gap of 1-1.5 m
# and a pixel's blur either side at 1 m); and the span of car lengths between two gaps (m:
# a 10 m ore wagon to a 25.5 m long flat wagon, each with its gap).
_GAP_DIP_SHARE = 0.8
_MAX_GAP_DIP_M = 3.0
_CAR_SPACING_M = (9.5, 27.0)


# Most the per-band ratios of a dark bed to the lit ground may differ (largest over
# smallest, see _grey_bed): on altgen tuning scenes with the sun along the tracks
# (200-261) empty beds gave 1.02-1.31 (1.3 on snow, whose near infrared is low) and
# uniform strings of dark cars 1.61-2.71.
_GREY_BED_RATIO = 1.45
# Least share of the lit ground's light, in its darkest band, a dark grey bed keeps (see
# _grey_bed): empty beds there kept 0.49-0.88 (smallest band), black paint over grey ground
# keeps under a third; 0.4 lies between, as a physical bound, not a fit.
_GREY_BED_MIN_SHARE = 0.4
# Share of a bed's lit brightness under which its centre reads as shaded (see
# _own_shadow_along).
_SHADE_SHARE = 0.5


# Window (m) over which a track's centre is judged uniform along (see _uniform_bed): two
# of the longer cars (14-21 m), so at least one car end lies inside any window on cars.
_UNIFORM_WINDOW_M = 30.0
# Most a uniform window's centre brightness may span (5th-95th percentile, as a share of
# its median): on empty tracks the median window spans 0.23-0.40 (shadows of masts
# crossing the bed, noise), on tracks of cars 0.45-5 (coupler gaps, end walls, paint;
# altgen tuning seeds 20-23 and 100-103, 0.5-1 m pixels).
_UNIFORM_RANGE = 0.35
# Share of a track's windows that must be uniform for it to count as mostly empty.
_UNIFORM_TRACK_SHARE = 0.5


def _flanked_mask(strip: Strip, refs, per_m: float | np.ndarray, *,
                  blur_m: float | None = None, sun_left: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre colours (n, band) of every sample along a track, and which of them are
    seen empty (n,): lit ground on both
    sides under a sun that makes any car on the track shade its anti-sun side band, or the
    ground just past the lowest deck's edge.

    The lowest body, a flat wagon's deck ``_LOWEST_DECK_M`` up and
    ``_LOWEST_HALF_WIDTH_M`` half-wide, casts its shadow past ``_FLANK_BAND_MID_M`` off
    the axis where ``per_m`` (metres a shadow falls sideways per metre of height) is
    large enough. Under a higher sun it still shades the ground just past its edge: where
    that band is readable (``_MIN_OWN_SHADOW_BAND_M`` wider than a blurred edge, with a
    sample inside it on each side) a centre is flanked only if every sample from the
    deck's edge outwards is lit as well, and mirror samples match (a pale deck's blur is
    symmetric, its shadow is not; ``_FLANK_MIRROR_SHARE``). With the sun along the
    track, very high or unknown a flanked centre may be a car, and none is returned.
    Side bands are lit ground within ``_FLANK_LIT_SPREADS`` of ``refs["lit"]``, or of
    the side's own lit ground where that is darker ground in the sun (see
    :func:`_own_side_lit`). ``blur_m`` (m or None) is the blur at a body's edge, as in
    :func:`_deck_shadow_bands`. With nothing readable both arrays are empty (0 rows).
    The mask keeps the order along the track, so callers can measure contiguous empty
    stretches (see :func:`_corroborated_bed`).

    ``sun_left`` (bool or None) says whether the sun lies on the positive ``across_m``
    side. Where it is known, a sun-side band in shade (under ``_SUN_LIT_SHARE`` of its
    lit level) is no evidence of a car on this track, which shades only its anti-sun
    side: where the lowest deck's shadow reaches the anti-sun band's middle (``casts``)
    and every anti-sun sample from the deck's edge outwards is lit, the anti-sun side
    alone shows the centre empty (an empty track beside a busy one on its sun side).
    None: both sides must be lit, as before.
    """
    lit = np.asarray(refs["lit"], dtype="float64")
    lit_sd = np.asarray(refs["lit_sd"], dtype="float64")
    none = (np.empty((0, lit.size)), np.zeros(0, dtype=bool))
    if not (np.all(np.isfinite(lit)) and np.all(np.isfinite(lit_sd))):
        return none
    # Per sample along (a curved track's legs face the sun differently; review RBED F1).
    per_m = np.broadcast_to(np.asarray(per_m, dtype="float64"), strip.along_m.shape)
    # Under a higher sun the lowest deck's shadow stops short of the side band, but it
    # still covers the ground from the deck's edge out to 1.435 + 1.3 * per_m m (as
    # _own_deck_shadow reads it; the caller learns the bed from lit flanks
    # alone at _BED_MAX_RES_M or finer, up to 1 m only with _learnt_bed's uniformity, and passes the pixel's blur, see _deck_shadow_bands), and
    # every taller body's shadow starts at its own edge (1.66 m at most) and runs
    # further out: where that deck band is at least _MIN_OWN_SHADOW_BAND_M wide past
    # the edge's blur, a centre is seen empty if every sample from the deck's edge
    # outwards, on both sides, is lit (a shadow keeps under 65 % of the light).
    casts, near_read, reach, blur = _deck_shadow_bands(strip, per_m, blur_m=blur_m)
    if not (casts | near_read).any():
        return none
    centre, side = _zones(strip)
    a = strip.across_m
    centres = quiet_nanmean(strip.values[:, centre, :], axis=1).T
    sd = np.maximum(lit_sd, 0.02 * np.abs(lit))
    # Each side's own lit ground (see _own_side_lit): grass, soil or fouled ballast
    # beside this track may be darker than the yard's lit ground.
    halves = (side & (a > 0), side & (a < 0))
    if not all(h.any() for h in halves):
        return none
    flanks = [quiet_nanmean(strip.values[:, h, :], axis=1).T for h in halves]
    own = [_own_side_lit(f, lit, sd, refs.get("shadow", np.full(lit.size, np.nan))) for f in flanks]
    level = [float(np.mean(o[0])) for o in own]
    flanked = np.all(np.isfinite(centres), axis=1) & (casts | near_read)
    if near_read.any():
        k = int(1.0 / strip.step_m) | 1
        inner = np.abs(a) >= _LOWEST_HALF_WIDTH_M + blur / 2
        # Brightness per across sample (rows) along the track, smoothed over 1 m.
        b = np.stack([_nan_smooth(x, k) for x in quiet_nanmean(strip.values, axis=0)])
        # Each side against its own lit ground's level.
        thr = _SUN_LIT_SHARE * np.where(a > 0, level[0], level[1])
        with np.errstate(invalid="ignore"):
            all_lit = np.all(b[inner] > thr[inner, None], axis=0)
        # At 0.5 m the one sample in a 0.4-0.6 m deck band mixes the pale deck's blurred
        # light with its shadow and may read lit (review RBRIGHTBED: whole trains of pale
        # flat decks learnt as the bed). The blur is the same on both sides of the axis,
        # the shadow is not: the sides must match within _FLANK_MIRROR_SHARE at every
        # inner offset, and each side needs a sample inside the band the deck shades.
        band_end = _LOWEST_HALF_WIDTH_M + reach - blur / 2
        for sign in (1.0, -1.0):
            out = sign * a >= _LOWEST_HALF_WIDTH_M + blur / 2
            nearest = float(np.min(sign * a[out])) if out.any() else np.inf
            all_lit &= band_end >= nearest
        offsets = np.unique(np.abs(a[inner]))
        for t in offsets[offsets <= min(-a.min(), a.max()) + 1e-9]:
            # Both sides at the same offset (the across grid, ascending, need not be
            # symmetric about the axis): linear between the two nearest samples. The
            # innermost offset may borrow part of a sample inside the deck's edge (the
            # deck's or bed's light): that only makes the sides less alike, so a pale
            # deck is refused more surely and a very bright bed (over ~2 times the
            # ground) may go unlearnt (review RFINAL).
            pair = []
            for v in (-t, t):
                i = int(np.clip(np.searchsorted(a, v) - 1, 0, a.size - 2))
                w = (v - a[i]) / (a[i + 1] - a[i])
                pair.append((1.0 - w) * b[i] + w * b[i + 1])
            with np.errstate(invalid="ignore"):
                # A missing mirror sample (NaN) does not show the track empty.
                all_lit &= np.minimum(*pair) >= (1.0 - _FLANK_MIRROR_SHARE) * np.maximum(*pair)
        flanked &= casts | all_lit
    side_ok, side_shaded = [], []
    for flank, (side_lit, side_sd), side_level in zip(flanks, own, level):
        d = np.sqrt(np.mean(((flank - side_lit) / side_sd) ** 2, axis=1))
        # And as bright as sunlit ground (as _occupancy reads the sun side): where low sun
        # or coarse pixels widen the yard's lit spread to a third or half of its colour,
        # 1.5 spreads also take in a car's shadow, which keeps under 65 % of the light.
        brightness = np.mean(flank, axis=1)
        lit_flank = brightness > _SUN_LIT_SHARE * side_level
        side_ok.append(np.isfinite(d) & (d < _FLANK_LIT_SPREADS) & lit_flank)
        with np.errstate(invalid="ignore"):
            side_shaded.append(brightness <= _SUN_LIT_SHARE * side_level)
    if sun_left is None:
        return centres, flanked & side_ok[0] & side_ok[1]
    # The sun side (the positive across side where sun_left) in shade says nothing
    # against an empty track: a car on this track shades only its anti-sun side, so
    # shade on the sun side is another body's (a car on the neighbouring track on the
    # sun side, whose shadow falls across the ground between the two tracks). There the
    # anti-sun side alone is the witness, and only where the lowest deck's shadow
    # reaches its band's middle (``casts``: any car would shade it); short of that the
    # deck band is read by the mirror test, which needs both sides lit (see above).
    # Without this, an empty track beside a busy one on its sun side is never seen
    # empty and its bed never learnt (altgen clear 0.75 m seed 8941: 7 of 413 centres
    # flanked, the sun-side band at a median 0.35 of the lit ground's light).
    # With one witness no mirror test can be made, and the band's mean alone passes a
    # flat deck whose shadow covers only the band's inner part (0.5 m pixels, sun 53
    # degrees: the deck shades 2.0-2.4 m, and on snow the half-shaded band reads lit;
    # altgen clear 0.5 m seed 8939, 8 flat wagons lost): every sample from the lowest
    # deck's edge outwards on the anti-sun side must be lit, as the deck-band test reads
    # both sides short of ``casts``.
    sun_i = 0 if sun_left else 1
    anti_i = 1 - sun_i
    one_witness = side_shaded[sun_i] & casts & ~side_ok[sun_i]
    if one_witness.any():
        k = int(1.0 / strip.step_m) | 1
        anti_rows = (a < 0 if sun_left else a > 0) & (np.abs(a) >= _LOWEST_HALF_WIDTH_M + blur / 2)
        if not anti_rows.any():
            one_witness[:] = False
        else:
            b_anti = np.stack([_nan_smooth(x, k) for x in quiet_nanmean(strip.values[:, anti_rows, :], axis=0)])
            with np.errstate(invalid="ignore"):
                one_witness &= np.all(b_anti > _SUN_LIT_SHARE * level[anti_i], axis=0)
    return centres, flanked & side_ok[anti_i] & (side_ok[sun_i] | one_witness)


def _own_side_lit(flank: np.ndarray, lit: np.ndarray, sd: np.ndarray,
                  shadow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lit ground beside one side of a track: its own, where darker than the yard's.

    Parameters
    ----------
    flank : numpy.ndarray
        (n, band) mean colour of the side band at each sample along the track
        (reflectance).
    lit, sd : numpy.ndarray
        Per band, the yard's lit ground colour and the spread used to judge it
        (reflectance).
    shadow : numpy.ndarray
        Per band, the yard's shadowed ground colour (reflectance); NaN: unknown (then
        the yard's lit ground is kept).

    Returns
    -------
    tuple of numpy.ndarray
        Per band, the lit colour and spread this side's band is judged against: the
        yard's, or the side's own (see Notes), its spread no tighter than the yard's
        scaled to its brightness, nor than 2 % of its colour.

    Notes
    -----
    The yard's lit ground is learnt from every track's side bands, and in a yard of
    clean ballast between grass, soil or fouled ballast it is the brightest of them.
    Beside a track whose side band is darker ground (grass 0.10 against ballast 0.15,
    reflectance), lit ground there keeps 0.6-0.75 of the yard's colour and never reads
    as lit, so no stretch of that track is ever seen empty and its bed is never learnt.
    Its own lit ground is the bright mode of the band along the track (the brighter
    40 % of its samples, as :meth:`GroundModel.from_samples` takes lit ground), taken
    where it is darker than the yard's but brighter than any shadow could be
    (``_OWN_LIT_MIN_SHARE`` of the yard's lit brightness: a shadow keeps 8-65 % of the
    light) over at least ``_MIN_FLANKED_CENTRES`` samples, and where it is not the
    yard's ground in part shade: its colour must lie ``_OWN_LIT_MIN_OFF_SPREADS`` off
    the line between the yard's lit and shadowed ground (see the comment in the code). A side mostly in cars'
    shadows has a bright mode in shade and keeps the yard's colour.
    """
    ok = np.all(np.isfinite(flank), axis=1)
    f = flank[ok]
    if f.shape[0] < _MIN_FLANKED_CENTRES:
        return lit, sd
    b = f.mean(axis=1)
    colour, spread = robust_ref(f[b >= np.percentile(b, 60)])
    share = float(np.mean(colour)) / max(float(np.mean(lit)), 1e-6)
    if not _OWN_LIT_MIN_SHARE <= share < 1.0:
        return lit, sd
    # Not the yard's ground in part shade. Any mix of the yard's ground in sun and in
    # shade (penumbra, a blurred body edge at 0.75 m, bright shade on snow, a band half
    # beside cars' shadows) lies ON the line between the yard's lit and shadowed ground,
    # under any sky; other ground in the sun (grass, soil) has its own spectrum and lies
    # OFF it. Where along the line a colour lies cannot tell the two apart (a band half
    # lit is halfway along by construction, review RRCOUNT H1), how far off it can:
    # measured 0.1-0.3 spreads for the blur and penumbra mixes beside packed tracks
    # under a low sun, 1.3-1.5 for dry grass beside clean ballast. Darker ground of the
    # yard's own spectrum (grey fouled ballast) is refused too: colour cannot tell it
    # from shade, and refusing keeps the yard's lit colour, as before.
    sh = np.asarray(shadow, dtype="float64")
    if not np.all(np.isfinite(sh)):
        return lit, sd
    _, nearest = ground_mix(colour[:, None], np.asarray(lit, dtype="float64"), sh)
    off = float(np.sqrt(np.mean(((colour - nearest[:, 0]) / sd) ** 2)))
    if not off >= _OWN_LIT_MIN_OFF_SPREADS:
        return lit, sd
    return colour, np.maximum(np.maximum(spread, 0.02 * np.abs(colour)), sd * share)


# Least share of the yard's lit brightness a side's own lit ground may keep (see
# _own_side_lit): above the 65 % that a shadow keeps under a clear sky (GroundModel's
# limit). Under haze, a low sun or on snow shade keeps more and this floor alone does
# not refuse it (the off-line test below does); it refuses a car's shadow falling on
# ground of another spectrum, which lies off the line but keeps under 65 % of the light.
_OWN_LIT_MIN_SHARE = 0.65
# Least RMS distance (in the yard's lit spreads) of a side's own lit ground from the
# line between the yard's lit and shadowed ground (see _own_side_lit): part shade lies
# on it (0.1-0.3 measured), other ground in the sun off it (1.3-1.5 measured).
_OWN_LIT_MIN_OFF_SPREADS = 0.75


def _deck_shadow_bands(strip: Strip, per_m: float | np.ndarray, *,
                       blur_m: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Where along ``strip`` a flat deck's shadow beside the track can be read.

    Parameters
    ----------
    strip : Strip
        The track's samples.
    per_m : float or numpy.ndarray
        Metres a shadow falls sideways per metre of height (float, or per sample; NaN:
        the sun unknown or along the track).
    blur_m : float or None
        Blur at a body's edge (m): half the pixel, 0.2 m at least (as ``_occupancy``
        takes it). None: half the sample step, 0.2 m at least (the samples are 0.5 m at
        most, so this understates a 0.75-1 m pixel's blur).

    Returns
    -------
    casts : numpy.ndarray of bool
        Per sample, whether the lowest deck's shadow reaches the side band's middle
        (``_FLANK_BAND_MID_M`` off the axis).
    near_read : numpy.ndarray of bool
        Per sample, whether, short of it, the band it shades past the deck's edge is at
        least ``_MIN_OWN_SHADOW_BAND_M`` wider than the blur.
    reach : numpy.ndarray
        Per sample, how far (m) the lowest deck's shadow falls sideways (0 where NaN).
    blur : float
        The blur used (m). See :func:`_flanked_mask`, which reads the flanks there.
    """
    per_m = np.broadcast_to(np.asarray(per_m, dtype="float64"), strip.along_m.shape)
    reach = _LOWEST_DECK_M * np.nan_to_num(per_m)
    casts = np.isfinite(per_m) & (_LOWEST_HALF_WIDTH_M + reach >= _FLANK_BAND_MID_M)
    blur = max(0.2, 0.5 * strip.step_m)
    if blur_m is not None:
        blur = max(blur, float(blur_m))
    near_read = np.isfinite(per_m) & ~casts & (reach - blur >= _MIN_OWN_SHADOW_BAND_M)
    return casts, near_read, reach, blur


def _deck_shadow_readable(strip: Strip, per_m: float | np.ndarray, *, blur_m: float | None = None) -> bool:
    """Whether a flat deck's shadow beside the track can be read anywhere along ``strip``
    under this sun (``per_m``, m per m of height, and ``blur_m``, m, as in
    :func:`_deck_shadow_bands`): where it can, an empty bed is told from a train of low
    decks by lit flanks (:func:`_with_bed`)."""
    casts, near_read, _, _ = _deck_shadow_bands(strip, per_m, blur_m=blur_m)
    return bool((casts | near_read).any())


def _gaps_shaded(strip: Strip, azimuth_deg: float | None, elevation_deg: float | None) -> bool:
    """Whether, were ``strip`` a string of cars, the sun would shade their coupler gaps.

    Parameters
    ----------
    strip : Strip
        The track's samples (its direction per sample is taken over about 10 m).
    azimuth_deg, elevation_deg : float or None
        The sun's azimuth (degrees clockwise from north) and elevation (degrees); None:
        unknown (then False).

    Returns
    -------
    bool
        True where, over most of the track (the median sample), the lowest deck's
        shadow along the track, ``_LOWEST_DECK_M`` times the along-track share of the
        sun's direction over the tangent of its elevation (m), covers the shortest
        coupler gap, ``_MIN_COUPLER_GAP_M``.

    Notes
    -----
    Cars stand 1.0-1.3 m apart (buffers and couplers, ``GAP_M``). A car end casts its
    shadow along the track into the gap behind it: a flat deck 1.3 m up casts
    1.3 * along / tan(elevation) m, any walled car more. Where that shadow covers the
    whole gap, every gap of a string of cars is a dark break a metre long, and the
    string breaks a track's uniformity at each car end (see :func:`_uniform_bed`); an
    empty bed does not. Where it covers only part of the gap, the rest shows the bed,
    as pale as a pale deck on concrete sleepers, and the dark part is narrower than a
    metre: smoothed by the pixel and the 1 m smoothing it no longer breaks the
    uniformity (a synthetic train of pale flat wagons under a 65-degree sun along the
    track, 0.61 m of each 1 m gap shaded, was learnt as the bed at 1 m pixels and
    erased). No allowance is made for the blur: it smears the shaded part as much as
    the lit rest. So the sun must be within about 52 degrees of the horizon with the
    sun exactly along the track, 51 at 20 degrees off the axis, 43 at 45 degrees off;
    under a higher sun, or one across the track, a train of pale flat wagons shows lit
    gaps and is as uniform as a concrete bed (review RRAILF H1, H2).
    """
    if azimuth_deg is None or elevation_deg is None or strip.along_m.size < 2:
        return False
    along, _, tan_el = _sun_on_track(strip, azimuth_deg, elevation_deg)
    return bool(np.median(_LOWEST_DECK_M * along / tan_el) >= _MIN_COUPLER_GAP_M)


# Shortest coupler gap between two cars' bodies (m): buffers and couplers keep car ends
# 1.0-1.3 m apart (GAP_M); flat wagons' decks end at their headstocks.
_MIN_COUPLER_GAP_M = 1.0


def _local_shadow_across(strip: Strip, azimuth_deg: float | None, elevation_deg: float | None) -> np.ndarray:
    """:func:`_shadow_across` per sample along ``strip``, from the track's local direction
    (over about 10 m): NaN where the sun is unknown or shines within about 12 degrees of it."""
    n = strip.along_m.size
    if azimuth_deg is None or elevation_deg is None or n < 2:
        return np.full(n, np.nan)
    _, across, tan_el = _sun_on_track(strip, azimuth_deg, elevation_deg)
    return np.where(across >= 0.2, across / tan_el, np.nan)


def _local_direction(strip: Strip) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample along ``strip`` (at least two), the track's direction over about 10 m on
    its centreline: map offsets ``dx``, ``dy`` (m) and their length (at least 1e-9)."""
    n = strip.along_m.size
    i0 = int(np.argmin(np.abs(strip.across_m)))
    k = max(1, int(round(5.0 / strip.step_m)))
    x, y = strip.x[i0], strip.y[i0]
    lo, hi = np.clip(np.arange(n) - k, 0, n - 1), np.clip(np.arange(n) + k, 0, n - 1)
    dx, dy = x[hi] - x[lo], y[hi] - y[lo]
    return dx, dy, np.maximum(np.hypot(dx, dy), 1e-9)


def _steady_sun_side(strip: Strip, azimuth_deg: float | None, sun_left: bool | None) -> bool | None:
    """``sun_left`` (the sun's side of the track from its chord, see :func:`_sun_geometry`)
    where the sun lies on that side of the track's local direction (over about 10 m) all
    along it, else None.

    :func:`_flanked_mask` lets the anti-sun side alone show a track empty where its sun
    side is shaded; on a curve whose leg turns the sun to its other side (a balloon loop,
    a throat) that side is the one a car on the track shades, and a string of cars would
    be seen empty there (review of session 51). Samples with the sun within about 12
    degrees of the local direction (no side) do not count against it.
    """
    if sun_left is None or azimuth_deg is None or strip.along_m.size < 2:
        return sun_left
    dx, dy, norm = _local_direction(strip)
    az = math.radians(azimuth_deg)
    # The sun's share across the local direction, positive to its left (as _sun_geometry).
    signed = (dx * math.cos(az) - dy * math.sin(az)) / norm
    other = signed < -0.2 if sun_left else signed > 0.2
    return None if bool(np.any(other)) else sun_left


def _sun_on_track(strip: Strip, azimuth_deg: float, elevation_deg: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Per sample along ``strip`` (at least two), the shares of the sun's horizontal
    direction along and across the track's local direction (over about 10 m; absolute
    values, 0-1), and the tangent of the sun's elevation (clipped to 1-89 degrees)."""
    dx, dy, norm = _local_direction(strip)
    az = math.radians(azimuth_deg)
    # The sun's horizontal direction is (sin az, cos az) in (east, north).
    along = np.abs(dx * math.sin(az) + dy * math.cos(az)) / norm
    across = np.abs(dx * math.cos(az) - dy * math.sin(az)) / norm
    return along, across, math.tan(math.radians(min(max(elevation_deg, 1.0), 89.0)))


def _bed_mode(centres: np.ndarray, lit_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Median and spread (per band) of the mode of flanked centre colours (n, band):
    clipped at three spreads around their median until it settles (a penumbra, a stray
    wagon's blurred end); None with under ``_MIN_FLANKED_CENTRES`` left, or with a
    spread over ``_MIXED_SPREAD_RATIO`` times the lit ground's ``lit_sd`` (per band)."""
    bed = centres
    for _ in range(5):
        if bed.shape[0] < _MIN_FLANKED_CENTRES:
            return None
        med, mad = robust_ref(bed)
        close = np.all(np.abs(bed - med) <= 3.0 * np.maximum(mad, 1e-4), axis=1)
        if close.all():
            break
        bed = bed[close]
    if bed.shape[0] < _MIN_FLANKED_CENTRES:
        return None
    colour, spread = robust_ref(bed)
    if np.mean(spread) > _MIXED_SPREAD_RATIO * np.mean(lit_sd):
        # Far wider than the ground's own spread: a mix (beds of two kinds, or bed and
        # a wagon's deck), not one bed.
        return None
    return colour, spread


# Distance (m) off the axis that the lowest car's shadow (see _LOWEST_DECK_M) must reach
# for lit ground in the side band (2.0-2.6 m) to say that no car stands on the track:
# the band's middle, where a shade over its inner half moves the band's mean colour by
# more than the flank test allows.
_FLANK_BAND_MID_M = 2.3
# Most two mirror samples of lit ground beside an empty track may differ, as a share of
# the brighter: texture and wear move ground by about a tenth, a shadow keeps under 65 %
# of the light (see _flanked_mask).
_FLANK_MIRROR_SHARE = 0.25
# Coarsest pixel (m) at which a track's own bed is learnt from lit flanks (_with_bed; the
# uniform bed, _uniform_bed, is gated by the sun instead): the side band starts 0.34 m
# past the widest body (1.66 m half-width); a coarser pixel's blur carries a bright
# body's light into it over the body's own shadow, and lit-looking flanks then lie
# beside cars (altgen, low sun at 1 m: 19-81 flanked centres per track, most on cars).
# At 0.75 m the blur (about half a pixel, 0.4 m) still leaves most of the band's 0.6 m
# outside a body's edge, and the deck-band and mirror tests of _flanked_mask vet the
# rest: learnt there, empty beds under a low sun stopped reading as cars (session 37,
# altgen tuning seeds 100-103: 6 false cars fewer at 0.75 m, none lost); at 1 m lit flanks alone do not
# show a track empty (a bed is learnt there only where its uniformity agrees: _learnt_bed).
_BED_MAX_RES_M = 0.75


def _lit_weighted(samples: np.ndarray) -> np.ndarray:
    """Side samples to learn the ground from, such that lit ground is at least 40 % of them.

    :meth:`GroundModel.from_samples` takes the brighter 40 % as lit. In a busy yard
    most of the ground between tracks lies in the cars' shadows (a 4-5 m high car under
    a 35-60 degree sun shades 3-7 m beside it, more than the 1.7-2 m between the bodies
    on neighbouring tracks), and the brighter 40 % would straddle shadow and sun. Shadow
    takes 8-65 % of the lit brightness (skylight only), so in log brightness the two are
    separate modes: where they are (an Otsu split with the modes at least that far
    apart) and the bright one holds less than 40 %, the bright mode is taken without its
    flanks (sigma-clipped) and only as many dark samples are kept as make it 40 %.
    """
    s = samples[np.all(np.isfinite(samples), axis=1)]
    b = s.mean(axis=1)
    s, b = s[b > 0], b[b > 0]
    if s.shape[0] < 50:
        return samples
    from skimage.filters import threshold_otsu

    lb = np.log(b)
    t = float(threshold_otsu(lb))
    bright, dark = lb > t, lb <= t
    n_b = int(bright.sum())
    if n_b < _MIN_LIT_MODE_SAMPLES or n_b >= 0.4 * s.shape[0]:
        return samples
    ratio = math.exp(float(np.median(lb[dark])) - float(np.median(lb[bright])))
    if not 0.08 < ratio < 0.65:
        return samples
    # The bright mode without the penumbrae and blurred car edges on its flanks: clipped
    # at three spreads around its median, as often as that changes it.
    lit = s[bright]
    for _ in range(5):
        med, sd = robust_ref(lit)
        close = np.all(np.abs(s - med) <= 3.0 * np.maximum(sd, 1e-4), axis=1) & bright
        if close.sum() < _MIN_LIT_MODE_SAMPLES or close.sum() == lit.shape[0]:
            break
        lit = s[close]
    # An even subset of the dark mode (every k-th sample, not the darkest: the shadow
    # colour is learnt from these too).
    d = s[dark]
    keep = np.linspace(0, d.shape[0] - 1, min(d.shape[0], int(1.5 * lit.shape[0]))).astype(int)
    return np.concatenate([lit, d[keep]])


def _clipped_mode(samples: np.ndarray, near: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Samples (n, band) within 2.5 spreads of ``near`` (as :meth:`GroundModel.from_samples`
    selects them), then clipped at three spreads around their median until it settles."""
    s = samples[np.all(np.isfinite(samples), axis=1)]
    s = s[np.sqrt(np.mean(((s - near) / np.maximum(sd, 0.004)) ** 2, axis=1)) < 2.5]
    for _ in range(5):
        if s.shape[0] < 20:
            break
        med, mad = robust_ref(s)
        close = np.all(np.abs(s - med) <= 3.0 * np.maximum(mad, 1e-4), axis=1)
        if close.all():
            break
        s = s[close]
    return s


def _with_shadow(model: GroundModel, samples: np.ndarray) -> GroundModel:
    """``model`` with the shadow colour of ``samples`` at 8-65 % of its lit brightness,
    when there are as many as :meth:`GroundModel.from_samples` requires."""
    s = samples[np.all(np.isfinite(samples), axis=1)]
    ratio = s.mean(axis=1) / max(float(model.lit.mean()), 1e-6)
    dark = s[(ratio < 0.65) & (ratio > 0.08)]
    if dark.shape[0] < max(20, 0.03 * s.shape[0]):
        return model
    shadow, shadow_sd = robust_ref(dark)
    return GroundModel(model.lit, model.lit_sd, shadow, np.maximum(shadow_sd, shadow_spread_floor(shadow)))


# Distance (in spreads of the lit ground colour) within which a track's side band is
# lit ground: a side mean over 0.6 m of band is closer to its colour than one sample.
_FLANK_LIT_SPREADS = 1.5
# Fewest such centres (0.5 m apart) to learn from: 20 m of empty track, more than the
# 20 samples GroundModel refines with.
_MIN_FLANKED_CENTRES = 40
# Spread ratio above which the flanked centres' colour is taken for a mix of cars and
# ground (see _empty_track_reference).
_MIXED_SPREAD_RATIO = 2.5


# Fewest samples (0.5 m apart) of a bright mode to learn lit ground from: the ballast
# beside a few car lengths.
_MIN_LIT_MODE_SAMPLES = 100


# Fewest shadow samples (0.5 m apart) from which a shadow colour is learnt: the shadow
# band beside about one car.
_MIN_SHADOW_SAMPLES = 40


def _shadow_from_anti_sun_sides(strips: Mapping[str, Strip], tracks: Mapping[str, LineString],
                                refs: dict[str, np.ndarray], azimuth_deg: float | None) -> dict[str, np.ndarray]:
    """``refs`` with the shadowed-ground colour learnt from the anti-sun side of the tracks.

    In a near-empty yard under a high sun, shadow is too rare among all the ground
    beside the tracks to be told from dark debris, and without a shadow colour every
    shadow (a car's own, a cloud's) reads as a car. With the sun's azimuth known, the
    ground on a track's anti-sun side is where its cars cast their shadows: dark ground
    there (8-65 % of the lit brightness, as in :class:`GroundModel`) is shadow.
    """
    if azimuth_deg is None or not np.all(np.isfinite(refs["lit"])):
        return refs
    lit_b = float(np.mean(refs["lit"]))
    samples = []
    for tid, s in strips.items():
        sun_left, _ = _sun_geometry(tracks[tid], azimuth_deg, None)
        if sun_left is None:
            continue
        a = s.across_m if sun_left else -s.across_m
        band = (a <= -1.95) & (a >= -2.6)
        v = s.values[:, band, :].reshape(s.values.shape[0], -1).T
        v = v[np.all(np.isfinite(v), axis=1)]
        ratio = v.mean(axis=1) / max(lit_b, 1e-6)
        samples.append(v[(ratio > 0.08) & (ratio < 0.65)])
    dark = np.concatenate(samples) if samples else np.empty((0, refs["lit"].size))
    if dark.shape[0] < _MIN_SHADOW_SAMPLES:
        return refs
    shadow, shadow_sd = robust_ref(dark)
    return {**refs, "shadow": shadow, "shadow_sd": np.maximum(shadow_sd, shadow_spread_floor(shadow))}


# Share of the lit ground's brightness from which a side band is lit ground (ballast and
# yard ground vary by about a quarter).
_SUN_LIT_SHARE = 0.75
# Least length (m) of a stretch whose unshadeable sun band is not lit that is read as a
# cloud's shadow (_occupancy): about half the smallest cloud shadow cloud_shade misses
# (15 m), longer than a mast's or a signal's shadow across the band.
_MIN_CLOUD_SHADE_M = 8.0
# Inner and outer edges (m off the centreline) of the side bands _occupancy reads beside a
# track.
_SIDE_BAND_INNER_M = 1.95
_SIDE_BAND_OUTER_M = 2.6


def _occupancy(strip: Strip, refs, *, min_contrast: float, vhr: bool,
               sun_left: bool | None = None, anti_shadow_is_own: bool = False,
               shadow_tail_m: float = 0.0, thin_cloud: bool = False,
               dark_light: np.ndarray | None = None,
               shadow_across_m: float = float("nan"), blur_m: float = 0.4,
               decks: np.ndarray | None = None, sun_band_lit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Boolean occupied and observed (finite) flags per along-track position.

    Colour alone cannot tell a black tank car from shadowed ballast, nor a grey car
    from lit ballast, so the ground beside the track is read too. Shadows fall away
    from the sun, which gives three rules besides colour:

    * a dark centre with lit ground on the sun side is a dark car (a shadow cast onto
      the track by a neighbour would darken the sun side first);
    * shadow on the anti-sun side with lit ground on the sun side is a car's own
      shadow, whatever the car's colour;
    * a track dark across its whole width lies in a neighbour's shadow: occupied only
      if its centre shows structure (a cylinder's highlight, a gondola's rim), rises
      into the sun, or is lit well above both the shadow and the shaded side bands (a
      body lit by the sky; see ``_BODY_IN_SHADE_LIT_SHARE``).

    The last two rules also fire past a car's end where its own shadow runs along the
    track (sun oblique to the track): ``shadow_tail_m`` (signed, metres along the track
    beyond a car's end on the shadow side, from :func:`_shadow_tail`) bounds the stretch
    at a run's shadow-side end occupied by those rules alone, which is trimmed.

    ``dark_light`` (per band, reflectance) is the darkest light already subtracted from
    ``strip`` and ``refs`` (haze; see :func:`_dark_object_light`); None for none.

    With the sun's side known, the narrow band where a bare flat wagon's deck shades the
    ground (``shadow_across_m``: metres sideways per metre of height, from
    :func:`_shadow_across`; edges blurred over ``blur_m`` metres) in shadow beside a lit
    centre is a car too (:func:`_own_deck_shadow`) where no other rule finds one: it adds
    stretches, it does not lengthen or join the runs the other rules found.

    A lit stretch off every mix of the ground's lit and shadowed colours (a deck of wood
    or rusted steel about as bright as the ballast; :func:`_off_light_mix`), not found by
    another rule and itself at least ``_MIN_DECK_OFF_M`` long, is a bare flat wagon's deck.
    It may touch a run found otherwise (a deck coupled to a tall car): the length test, not
    adjacency, keeps a tall car's blurred end and its coupler gap (a metre or two off that
    mix) from joining two cars. ``decks`` (bool, along), if
    given, is set where such decks were added, for :func:`_deck_colour_flat`. Near a cloud's
    shadow (``thin_cloud``) decks are read too: the shadow's faint edge dims every band
    alike, which keeps bare ground on the ground's light mix.

    ``sun_band_lit`` says that no car can shade the sun-side band (see
    :func:`_sun_band_unshaded`; set by :func:`_count_railcars` only in an image with a
    cloud): stretches of at least ``_MIN_CLOUD_SHADE_M`` where that band is not lit ground
    lie in a cloud's shadow too small for ``cloud_shade`` and are unobserved (neither
    empty nor occupied).
    """
    yard_refs = refs
    shape_off = None
    if vhr:
        # A wide yard lit spread also holds what differs between tracks and between lit
        # and shadowed stretches; a car is told from this track's ballast by the spread
        # the ballast shows at one place (see _local_lit_spread).
        refs = _local_lit_spread(strip, refs, dark_light=dark_light)
    centre, _ = _zones(strip)
    a = strip.across_m
    left = (a >= _SIDE_BAND_INNER_M) & (a <= _SIDE_BAND_OUTER_M)
    right = (a <= -_SIDE_BAND_INNER_M) & (a >= -_SIDE_BAND_OUTER_M)
    c = strip.values[:, centre, :]
    seen = np.all(np.isfinite(c), axis=(0, 1))
    mean = quiet_nanmean(c, axis=1)  # (band, along)

    def dist(x, ref, sd):
        return np.sqrt(quiet_nanmean(((x - ref[:, None]) / sd[:, None]) ** 2, axis=0))

    d_lit = dist(mean, refs["lit"], refs["lit_sd"])
    # The centre is judged against the track's own empty bed too, where it was seen (see
    # _with_bed); the side tests below keep the ground beside the track.
    has_bed = "bed" in refs
    if has_bed:
        d_lit = np.fmin(d_lit, dist(mean, refs["bed"], refs["bed_sd"]))
    occ = d_lit > min_contrast
    # How far the centre is off the empty track's colour in any mix of sun and shade
    # (below), read in the gaps between cars (see _fill_car_gaps). Unknown without a
    # shadowed-ground colour: a gap in a building's shade or under a thin cloud is as far
    # off the lit colour as a faint car (review R of 3b69c29).
    d_off = None
    if thin_cloud and not np.all(np.isfinite(refs["shadow"])) and left.any() and right.any():
        # Without a shadowed-ground colour only the lit one is known: under a thin cloud
        # (or a cloud shadow's faint edge) the ground keeps it at the light share read on
        # the brighter side of the track (a car shades at most one side).
        k = int(1.0 / strip.step_m) | 1
        light = np.fmax(_light_share(strip.values[:, left, :], refs, k),
                        _light_share(strip.values[:, right, :], refs, k))
        d_lit = dist(mean / light, refs["lit"], refs["lit_sd"])
        if has_bed:
            d_lit = np.fmin(d_lit, dist(mean / light, refs["bed"], refs["bed_sd"]))
        occ = d_lit > min_contrast
    if np.all(np.isfinite(refs["shadow"])) and left.any() and right.any():
        # Ground is any mix of lit and shadowed ballast (a shadow edge may cross the
        # centre): measure the distance to the segment between the two references.
        alpha, nearest = ground_mix(mean, refs["lit"], refs["shadow"])
        sd = refs["shadow_sd"][:, None] + alpha * (refs["lit_sd"] - refs["shadow_sd"])[:, None]
        d_ground = np.sqrt(quiet_nanmean(((mean - nearest) / sd) ** 2, axis=0))
        d_off = d_ground
        ground_like = d_ground <= min_contrast
        dark = ground_like & (alpha < 0.5)
        colourful = ~ground_like
        lit_b = float(np.mean(refs["lit"]))
        k = int(1.0 / strip.step_m) | 1
        bl = _nan_smooth(quiet_nanmean(strip.values[:, left, :], axis=(0, 1)), k)
        br = _nan_smooth(quiet_nanmean(strip.values[:, right, :], axis=(0, 1)), k)
        if sun_left is None:
            # Columns seen on both sides only: a NaN median would read as "sun on the right".
            # (Not named ``seen``: that is the observed mask returned below.)
            both = (bl - br)[colourful]
            both = both[np.isfinite(both)]
            diff = float(np.median(both)) if both.size >= 10 else 0.0
            sun_left = None if abs(diff) < 0.1 * lit_b else bool(diff > 0)
        # Light reaching the ground here, as a share of the open sky's, read on the ground
        # beside the track: a thin cloud or the faint edge of a cloud's shadow dims ground
        # and cars alike, which a shadow does not (it shifts the colour towards the
        # shadowed ground's). A car shades at most its anti-sun side, so the sun side
        # tells where it is known, the brighter side otherwise.
        if thin_cloud:
            light_l = _light_share(strip.values[:, left, :], refs, k)
            light_r = _light_share(strip.values[:, right, :], refs, k)
        else:
            light_l = light_r = np.ones(mean.shape[1])
        light = np.fmax(light_l, light_r) if sun_left is None else (light_l if sun_left else light_r)
        if sun_left is None:
            sun_lit = (bl > _SUN_LIT_SHARE * lit_b) | (br > _SUN_LIT_SHARE * lit_b)
            anti_dark = np.zeros_like(sun_lit)
        else:
            sun_b, anti_b = (bl, br) if sun_left else (br, bl)
            sun_lit = sun_b > _SUN_LIT_SHARE * lit_b
            # Only something standing on this track can shade its anti-sun side while
            # its centre stays lit: a shadow cast from the sun side would cover the centre.
            # Under a thin cloud the sun side is dimmed as much: darkness is judged
            # against the light there.
            anti_dark = anti_b < 0.6 * lit_b * light
        on_bed = fits_bed = bed_in_shade = np.zeros(mean.shape[1], bool)
        if has_bed and np.all(np.isfinite(refs["bed_shadow"])):
            # The track's own bed in any mix of sun and shade (see _with_bed) is ground too,
            # where nothing says a car stands there (its anti-sun side lit: a car shades it):
            # where the bed is the nearer ground, or fits at all, its lit share says whether
            # the centre is lit (a wooden-sleepered bed keeps the side ground's spectrum at
            # half its brightness, which the side ground's own mix reads as half in shade).
            d_bed, alpha_bed = _bed_distance(mean, refs)
            fits_bed = d_bed <= np.fmax(d_ground, min_contrast)
            on_bed = fits_bed & ~anti_dark
            # The track's own bed in shade (concrete sleepers and rails brighter than the
            # side ground) is ground in a track-wide shadow too (see body_in_shade below):
            # its colour is known, so only its texture's share of light is allowed.
            bed_in_shade = fits_bed & (alpha_bed < _BED_IN_SHADE_LIT_SHARE)
            d_ground = np.where(on_bed, d_bed, d_ground)
            alpha = np.where(on_bed, alpha_bed, alpha)
            d_off = d_ground
            ground_like = d_ground <= min_contrast
            dark = ground_like & (alpha < 0.5)
            colourful = ~ground_like
        if vhr:
            # A body whose brightness lies within the beds' spread may still differ from
            # every bed in spectral shape (see _off_light_mix). Near a cloud's shadow too
            # (``thin_cloud``): the shadow's faint edge dims every band alike (the dimming
            # model above), which keeps bare ground on that plane, while the cloud's own
            # thin edge, whose light adds to every band, is left unobserved (CLOUD_EDGE_M).
            # Read there, long flat wagons at 1 m beside cloud shadows are found (session
            # 50: altgen partly cloudy tuning 200-203, 1.0 m F1 0.642 -> 0.672).
            shape_off = _off_light_mix(mean, refs["lit"], refs["shadow"], strip.step_m, min_contrast)
            if has_bed and np.all(np.isfinite(refs["bed_shadow"])):
                shape_off &= _off_light_mix(mean, refs["bed"], refs["bed_shadow"], strip.step_m, min_contrast)
        risen = np.zeros(mean.shape[1], bool)
        if sun_left is not None:
            # A lit centre between two shaded sides stands out of a shadow: the track lies in
            # a neighbour's shadow (its sun side too), and only a body tall enough to rise
            # into the sun is lit there. A car's own shadow running past its end leaves the
            # sun side lit, so such a stretch is not a shadow tail.
            shaded_both = anti_dark & (sun_b < 0.6 * lit_b * light)
            # A cast shadow is one band across the track (from the caster outwards), so
            # ground between two shaded side bands is in that shadow too: skylight only,
            # a lit share near 0 (an empty bed: at most its own brightness over the side
            # ground's, see _BODY_IN_SHADE_LIT_SHARE). A centre lit well above the shadow
            # and the side bands is a body (its top sees the whole sky, or rises into the
            # sun), not a mix of lit and shaded ground (the low sun's neighbour shadows,
            # 10-12 m long, hide whole consists this way).
            side_b = 0.5 * (bl + br)
            centre_b = quiet_nanmean(mean, axis=0)
            body_in_shade = (shaded_both & ground_like & (alpha >= _BODY_IN_SHADE_LIT_SHARE)
                             & (centre_b >= _BODY_IN_SHADE_RATIO * side_b) & ~bed_in_shade)
            dark = dark & ~body_in_shade
            risen = ~dark & shaded_both
            # The sun side is also shaded where a neighbour's shadow edge, a mast's or a
            # cloud's falls between the centre and the sun-side band: past a car's end its
            # own shadow then reads the same, and so does dark ground (asphalt, a road
            # crossing) beside an empty track. A body in a track-wide shadow ends on shaded
            # track; a shadow tail ends on lit track. A stretch is risen only if the centre
            # within 1.5 m past its shadow-side end is shaded ground or unobserved (review
            # RRISEN).
            if shadow_tail_m:
                m = max(1, int(round(1.5 / strip.step_m)))
                for ra, rb in runs(risen):
                    past = slice(rb, rb + m) if shadow_tail_m > 0 else slice(max(0, ra - m), ra)
                    if past.start < past.stop and not (dark[past] | ~seen[past]).any():
                        risen[ra:rb] = False
        if sun_left is not None:
            # A sunlit convex body (a tank car's cylinder) is brighter on its sun-facing half;
            # a shadow cast onto the track darkens the sun-facing half first, and shadowed
            # ballast is flat. A dark centre much brighter towards the sun is a car.
            glow = _sun_side_glow(strip, sun_left, float(quiet_nanmean(refs["shadow_sd"])), k)
            dark_car = dark & glow
        else:
            dark_car = np.zeros_like(dark)
        # Ground under any mix of direct sun and skylight is a non-negative mix of its lit
        # and shadowed colours of about its usual brightness (coefficients summing to ~1).
        # A dark car in the sun keeps the spectrum of sunlit paint at a fraction of the
        # ground's brightness: too dark for its colour, whatever the shade around it.
        # Under a thin cloud the ground keeps its colour at a fraction of its brightness:
        # "too dark" is judged against the light reaching the ground beside the track.
        def too_dark_for_ground(lift, scale, max_negative=_MAX_NEGATIVE_MIX):
            return _too_dark(mean, refs["lit"], refs["shadow"], lift, light, scale, max_negative)

        too_dark = too_dark_for_ground(np.zeros(mean.shape[0]), _MIN_GROUND_SCALE)
        if dark_light is None and has_bed:
            # Not too dark for the bed's own colour in sun and shade (a wooden-sleepered
            # or fouled bed is a quarter to 0.6 of the side ground's brightness).
            too_dark &= ~fits_bed | _too_dark_for_bed(mean, refs, np.zeros(mean.shape[0]), light, _MIN_GROUND_SCALE,
                                                      _MAX_NEGATIVE_MIX)
        if dark_light is not None:
            # ``mean`` and ``refs`` are read above the darkest light (haze removed): there
            # a shaded empty track's colour is a few hundredths, and its share of the
            # shadowed ground's colour spreads with noise and with fouled ballast (about
            # half as bright as clean): "too dark" is then under half that colour (at
            # 0.65 an altgen track in a building's shadow read 40 % "too dark", 3 false
            # cars). The light as recorded keeps the rule as it was measured.
            # The weights' signs are judged on the light as recorded with the usual limit:
            # above the darkest light the two references are a few hundredths and nearly
            # parallel, and another track's ballast (fouled, or clean beside fouled) fits
            # them with a weight of -0.5 to -0.7 (altgen: empty tracks read 5-9 false cars).
            # But under haze the light as recorded carries the veil, added to the centre
            # and both references alike, and a dark car's share of it projects onto the
            # bluish skylit colour with a positive weight: sunlit paint on a shaded track
            # (a rust-brown deck, a boxcar) passes as ground there. Above the darkest light
            # its weight stays well under the ballast's: the signs are judged there too,
            # with a limit past the ballast's (_MAX_NEGATIVE_ABOVE_DARK).
            too_dark = too_dark_for_ground(np.zeros(mean.shape[0]), _MIN_SCALE_ABOVE_DARK, _MAX_NEGATIVE_ABOVE_DARK)
            too_dark |= too_dark_for_ground(np.asarray(dark_light, dtype="float64"), _MIN_GROUND_SCALE)
            if has_bed:
                too_dark &= ~on_bed | (
                    _too_dark_for_bed(mean, refs, np.zeros(mean.shape[0]), light, _MIN_SCALE_ABOVE_DARK, np.inf)
                    | _too_dark_for_bed(mean, refs, np.asarray(dark_light, dtype="float64"), light,
                                        _MIN_GROUND_SCALE, _MAX_NEGATIVE_MIX))
        dark_car |= dark & too_dark
        if sun_band_lit and sun_left is not None and _HALF_BODY_M + blur_m < _SIDE_BAND_INNER_M:
            # No car can shade this track's sun-side band (no neighbour within the
            # tallest car's shadow on that side, and a car never shades its own sun
            # side): where that band is not lit ground for _MIN_CLOUD_SHADE_M or more,
            # the track lies in a cloud's shadow (or a building's). Small soft cloud
            # shadows (15-25 m across) are not all found by cloud_shade, whose colour
            # test needs shade over a 40 m window; their ground keeps 0.4-0.6 of the lit
            # ground's brightness, which reads as black paint and as a car's own shadow
            # (own simulator, partly cloudy seed 31: 3 false cars). A dark car there
            # cannot be told from the dimmed ground: the stretch is unobserved, as
            # cloud_shade's are. Only where the band lies clear of a car body's blurred
            # edge (``blur_m``, half a pixel: pixels under 0.9 m): at 1 m a dark body
            # darkens the band itself (altgen partly cloudy tuning 204-207, 1.0 m: MAPE
            # 0.115 -> 0.150 with it).
            with np.errstate(invalid="ignore"):
                band_shaded = (sun_b < _SUN_LIT_SHARE * lit_b * light) & seen
            seen = seen & ~_drop_short(band_shaded, int(round(_MIN_CLOUD_SHADE_M / strip.step_m)))
        texture = quiet_nanmean(quiet_nanstd(c, axis=1), axis=0) / max(float(quiet_nanmean(refs["shadow_sd"])), 1e-4)
        # Structure inside a dark centre is only trusted when the sun side is unknown: with
        # a known sun, the edge of a neighbour's shadow crossing the centre mimics it.
        structured = texture > 4.0 if sun_left is None else np.zeros_like(dark)
        occ = colourful | (dark & (sun_lit | structured)) | dark_car | (anti_dark & (~dark | anti_shadow_is_own))
        centre_lit = ~dark
        solid = colourful | dark_car | risen
    else:
        solid = occ
        centre_lit = quiet_nanmean(mean, axis=0) >= _SHADOW_RATIO * float(quiet_nanmean(refs["lit"]))
    if sun_left is not None and vhr:
        # A bare flat wagon's deck shades only a narrow band beside it (see _own_deck_shadow);
        # only something on this track shades its anti-sun side while its centre stays lit.
        # It adds the cars no other rule sees, not ends to runs the others found: under an
        # oblique sun a tall car's shadow runs along that band past the car's end and
        # across the coupler gaps that split a consist's run, and a run grown by it is cut into
        # cars of other lengths (own simulator: 3 cars typed otherwise).
        # (The deck-shadow test keeps the yard's spread: a narrowed one read fouled or wet
        # ground beside an empty track as a deck's shadow.)
        deck = _own_deck_shadow(strip, yard_refs, sun_left, shadow_across_m, int(1.0 / strip.step_m) | 1,
                                blur_m=blur_m, dark_light=dark_light) & centre_lit & seen
        # "Found by another rule" means a run that survives the closing and the 4 m drop
        # below: a 1 m speck of colour on a deck (a lashed crate, a glint) is dropped there
        # and must not veto the deck it lies on.
        kept = _drop_short(ndimage.binary_closing(occ & seen, structure=np.ones(_closing_k(strip) + 1, bool)),
                           int(4.0 / strip.step_m))
        lab, _ = ndimage.label(deck | kept)
        touched = np.unique(lab[kept & (lab > 0)])
        added = deck & ~np.isin(lab, touched)
        occ = occ | added
        # A deck read by its shadow is the car itself, not a shadow tail past its end: it
        # is not trimmed under an oblique sun (the deck's shadow shifts along the track by
        # 1.3 m times the along reach, about 1 m, not the 4.1 m a tall car's does).
        solid = solid | added
    if shape_off is not None and shape_off.any():
        # Stretches off the ground's light mix (a bare deck of wood or rusted steel) that no
        # other rule found. A tall car's end blurred with the ground, and the coupler gap
        # between two cars, are off that mix too, but for a metre or two: only a stretch
        # at least _MIN_DECK_OFF_M long of its own (small holes closed: at 1 m a deck's
        # samples are off by 2-6 spreads) is a deck. Such a deck may touch a run found
        # otherwise (coupled to a boxcar), which the earlier add-only rule (session 46 v2)
        # refused, and so lost half the decks; a stretch between two found cars shorter
        # than a deck joins nothing (session 46 v1 bridged a boxcar and a flat wagon).
        kept = _drop_short(ndimage.binary_closing(occ & seen, structure=np.ones(_closing_k(strip) + 1, bool)),
                           int(4.0 / strip.step_m))
        new = shape_off & seen & centre_lit & ~kept
        hole = max(1, int(round(_DECK_OFF_HOLE_M / strip.step_m)))
        new = ndimage.binary_closing(new, structure=np.ones(hole + 1, bool)) & seen & ~kept
        new = _drop_short(new, int(round(_MIN_DECK_OFF_M / strip.step_m)))
        occ = occ | new
        solid = solid | new
        if decks is not None:
            decks[:] = new
    occ &= seen
    if vhr:
        # Close sub-metre holes (specular glints, noise) and drop specks shorter than 4 m.
        k = _closing_k(strip)
        occ = ndimage.binary_closing(occ, structure=np.ones(k + 1, bool))
        if shadow_tail_m:
            occ = _trim_tails(occ, occ & ~solid, shadow_tail_m, strip.step_m)
        # Pieces too short to be a car, a hole inside one car apart, are that car: join
        # them before short specks are dropped here and short runs in _split_cars.
        occ = _join_car_pieces(occ, seen, strip.step_m)
        occ = _drop_short(occ, int(4.0 / strip.step_m))
        occ = _fill_car_gaps(occ, seen, d_off, 0.75 * min_contrast, strip.step_m)
        occ = occ | _coupled_block(strip, occ, seen, sun_left, refs)
    else:
        occ = _drop_short(occ, 1)
    return occ & seen, seen


def _off_light_mix(mean: np.ndarray, lit: np.ndarray, shadow: np.ndarray, step_m: float,
                   min_contrast: float) -> np.ndarray:
    """Per along-track sample: whether the centre colour ``mean`` (band, along) lies off
    every non-negative mix of the ground's lit and shadowed colours, at any brightness,
    by more than ``min_contrast`` times the track's local spread.

    Parameters
    ----------
    mean : numpy.ndarray (band, along)
        Mean centre colour per sample (reflectance; NaN unobserved).
    lit, shadow : numpy.ndarray (band,)
        The ground's lit and shadowed colours (reflectance).
    step_m : float
        Along-track sample spacing (m), for the local spread (:func:`_local_spread`).
    min_contrast : float
        Spreads off that plane that make a sample not ground.

    Returns
    -------
    numpy.ndarray of bool
        True where the sample is off the plane; all False where the references or the
        local spread are unknown.

    Notes
    -----
    What differs between the beds of one yard and along one bed (clean or fouled
    ballast, wet patches, sleepers' share of a pixel, the stones' own shading and
    texture) scales the ground's brightness in every band alike (a grey stone is grey
    whether clean or dirty), and a shadow edge mixes the ground's lit and skylit
    colours: the ground's colours span the plane of non-negative multiples of ``lit``
    and ``shadow``. The yard's lit spread holds all that brightness variation (a tenth
    to a half of the lit colour), and a bare flat wagon's deck of about the ballast's
    brightness lies within it (altgen tuning, 1 m: 41 of 51 bare flat wagons unseen on
    seeds 204-207, their decks 2-4 yard spreads off the lit colour). Its spectral shape
    is its own material's (wood, rusted or painted steel: reflectance rising towards the
    red and near infrared), off that plane by several of the track's local spreads (the
    texture and noise at one place, :func:`_local_spread`): missed decks' samples median
    3.5, 90th percentile 6.4, where bare bed keeps 0.3 and 1.3 (altgen tuning 204-211,
    1 m). The residual of the best non-negative two-light fit
    is judged against the local spread, floored at ``_MIN_SHAPE_SPREAD`` (sensor noise).
    Green vegetation (NDVI over ``_MIN_PLANT_NDVI``) is off the plane as well and is not
    flagged; sparse weeds, snow patches or rust-stained ballast that change the bed's
    spectral shape along the track are a known limit (none in the bench scenes).
    """
    n = mean.shape[1]
    lit = np.asarray(lit, dtype="float64")
    shadow = np.asarray(shadow, dtype="float64")
    if not (np.all(np.isfinite(lit)) and np.all(np.isfinite(shadow))):
        return np.zeros(n, bool)
    local = _local_spread(mean, step_m)
    if local is None or not np.all(np.isfinite(local)):
        return np.zeros(n, bool)
    sd = np.maximum(local, _MIN_SHAPE_SPREAD)
    x = np.nan_to_num(np.asarray(mean, dtype="float64"))
    basis = np.stack([lit, shadow], axis=1)  # (band, 2)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)  # (2, along)
    # Non-negative weights only (no light takes away another's): where one weight is
    # negative, the best multiple of the other light alone.
    for j in (0, 1):
        neg = coef[j] < 0
        if neg.any():
            o = basis[:, 1 - j]
            coef[j, neg] = 0.0
            coef[1 - j, neg] = np.maximum(o @ x[:, neg] / max(float(o @ o), 1e-12), 0.0)
    resid = x - basis @ coef
    d = np.sqrt(np.mean((resid / sd[:, None]) ** 2, axis=0))
    # Green vegetation in the bed (a grass-grown siding, weeds) is off the plane too, by
    # its red edge: a centre whose NDVI (third and fourth bands: red, near infrared) is that of
    # living plants is left to the other rules. Bare wood and rusted steel stay well
    # under it (altgen decks 0.20-0.29 above the darkest light).
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (x[3] - x[2]) / (x[3] + x[2])
    green = np.nan_to_num(ndvi) > _MIN_PLANT_NDVI
    return np.all(np.isfinite(mean), axis=0) & (d > min_contrast) & ~green


# Least local spread (reflectance, per band) the spectral-shape test of _off_light_mix
# divides by: twice the quantisation noise of 8-bit reflectance (1/255 / sqrt(12)).
_MIN_SHAPE_SPREAD = 0.002
# NDVI from which a centre is taken for green vegetation, not a car (living plants read
# 0.4-0.9; bare soil, dry grass, wood and rust under about 0.3).
_MIN_PLANT_NDVI = 0.4
# Least length (m) of a stretch off the ground's light mix, found by no other rule, that is
# read as a bare deck (_occupancy). Shorter than the shortest flat wagon's deck (12.6 m on
# a 13.7 m wagon, CAR_LENGTHS_M["flatcar"]) by its two ends blurred into the ground or into
# a coupled car's run (up to 2 m each at 1 m pixels); longer than anything else off that
# mix between or beside found cars: a tall car's end blurred with the ground (a pixel or
# two), a coupler gap (about 1 m) with both cars' blurred ends, a lone 6 m container's
# bare deck end (about 3 m each side).
_MIN_DECK_OFF_M = 8.0
# Holes (m) closed in such a stretch before its length is read: at 1 m a bare deck's
# samples lie 2-6 local spreads off the mix (median 3.5), so under min_contrast on about
# half of them, in holes of one or two pixels.
_DECK_OFF_HOLE_M = 2.0


def _deck_colour_flat(cars: list[tuple], strip: Strip, decks: np.ndarray | None) -> list[tuple]:
    """Cars (start_m, end_m, type, score, type_from) from :func:`_split_cars` whose body
    lies mostly (over half its samples) on a deck read by its colour alone (``decks``, from
    :func:`_occupancy`) typed ``"flatcar"`` (``type_from`` ``"deck_colour"``).

    Such a stretch was found by nothing but its spectral shape: as bright as the ballast
    (not off the lit colour), its anti-sun ground not shaded by a tall body, its
    reflectance rising towards the red and near infrared (wood, rust). That is a low deck
    of another material than the bed: a bare flat wagon's, whatever its length reads (at
    1 m a deck's ends blur, and the length alone typed most such decks as tank or gondola
    cars: session 46, flat wagons found at 1 m typed right 0.15).
    """
    if decks is None or not decks.any():
        return cars
    out = []
    for car in cars:
        a_m, b_m = car[0], car[1]
        inside = (strip.along_m >= a_m) & (strip.along_m < b_m)
        if inside.any() and decks[inside].mean() > 0.5:
            car = (a_m, b_m, "flatcar", car[3], "deck_colour") + tuple(car[5:])
        out.append(car)
    return out


def _bed_distance(mean: np.ndarray, refs) -> tuple[np.ndarray, np.ndarray]:
    """Distance (in spreads) of centre colours ``mean`` (band, along) from any mix of the
    track's bed lit and in shade (``refs["bed"]``, ``refs["bed_shadow"]``; see
    :func:`_with_bed`), and the lit share of the nearest mix."""
    alpha, nearest = ground_mix(mean, refs["bed"], refs["bed_shadow"])
    # The bed's spread in shade: the shadowed ground's, scaled as the colour is.
    shade_sd = refs["bed_sd"] * refs["bed_shadow"] / np.maximum(refs["bed"], 1e-6)
    shade_sd = np.maximum(shade_sd, refs["shadow_sd"])
    sd = shade_sd[:, None] + alpha * (refs["bed_sd"] - shade_sd)[:, None]
    return np.sqrt(quiet_nanmean(((mean - nearest) / sd) ** 2, axis=0)), alpha


def _too_dark(mean: np.ndarray, lit: np.ndarray, shadow: np.ndarray, lift: np.ndarray, light: np.ndarray,
              scale: float, max_negative: float) -> np.ndarray:
    """Centre colours ``mean`` (band, along) too dark for a ground of colour ``lit`` in the
    sun and ``shadow`` in shade (``lift`` added back to all three): the weights of the two
    colours, over the ``light`` reaching the ground, sum under ``scale`` or one is under
    ``-max_negative`` (see :func:`_occupancy`)."""
    basis = np.stack([lit + lift, shadow + lift], axis=1)
    mix = (np.linalg.pinv(basis) @ np.nan_to_num(mean + lift[:, None])) / light
    return (mix.sum(axis=0) < scale) | (mix.min(axis=0) < -max_negative)


def _too_dark_for_bed(mean: np.ndarray, refs, lift: np.ndarray, light: np.ndarray, scale: float,
                      max_negative: float) -> np.ndarray:
    """:func:`_too_dark` against the track's own bed, lit and in shade (``refs["bed"]``,
    ``refs["bed_shadow"]``)."""
    return _too_dark(mean, refs["bed"], refs["bed_shadow"], lift, light, scale, max_negative)


def _join_car_pieces(occ: np.ndarray, seen: np.ndarray, step_m: float) -> np.ndarray:
    """``occ`` with runs shorter than a car joined across short, observed holes.

    Parameters
    ----------
    occ : numpy.ndarray of bool
        Occupied flags per along-track sample.
    seen : numpy.ndarray of bool
        Observed flags per along-track sample (a hole must be observed to be filled).
    step_m : float
        Along-track sample spacing (m).

    Returns
    -------
    numpy.ndarray of bool
        ``occ`` with each observed hole of at most ``_MAX_PIECE_GAP_M`` between two runs
        both ``_MIN_PIECE_M`` long or longer and shorter than ``_MAX_PIECE_M`` filled
        (chains of such pieces become one run).

    Notes
    -----
    No freight car's body is much shorter than 10 m (a short mineral hopper; tank cars
    11-12 m), and the splitter drops runs under 7 m as specks. A car whose top is only
    partly off the ballast's colour (a tank's dome and walkway, a hopper's hatches, a
    gondola's heaped load, a flat wagon's container with the bare deck beside it, a roof
    crossed by a mast's shadow) is read as two or three such pieces with holes of a
    metre or so between them, and was dropped whole: two pieces that short, that close, cannot be
    two cars (each would be a car under 7 m). A piece beside a run a car long is left
    alone: it may be the next car's end as well as this car's.
    """
    occ = np.asarray(occ, bool)
    rs = runs(occ)
    if len(rs) < 2:
        return occ
    out = occ.copy()
    short = int(round(_MAX_PIECE_M / step_m))
    least = int(round(_MIN_PIECE_M / step_m))
    gap = int(round(_MAX_PIECE_GAP_M / step_m))
    for (a0, b0), (a1, b1) in zip(rs[:-1], rs[1:]):
        if (least <= b0 - a0 < short and least <= b1 - a1 < short and a1 - b0 <= gap
                and np.all(seen[b0:a1])):
            out[b0:a1] = True
    return out


def _fill_car_gaps(occ: np.ndarray, seen: np.ndarray, d_off: np.ndarray | None, contrast: float,
                   step_m: float) -> np.ndarray:
    """``occ`` with each car-long gap between two cars filled where its centre is off
    the empty track's colour by ``contrast`` spreads over most of it.

    Parameters
    ----------
    occ : numpy.ndarray of bool
        Occupied flags per along-track sample (short specks already dropped).
    seen : numpy.ndarray of bool
        Observed flags per along-track sample (a gap must be observed throughout).
    d_off : numpy.ndarray or None
        Distance of the centre colour from the empty track's, in its spreads, per sample
        (NaN where unobserved), from any mix of its lit and shadowed colours (a shadow
        across the gap is ground). None where the shadowed colour is unknown: nothing is
        filled, since a gap in shade is then as far off the lit colour as a faint car.
    contrast : float
        Spreads above which a sample of such a gap counts as off the ballast's colour
        (under the occupancy threshold).
    step_m : float
        Along-track sample spacing (m).

    Returns
    -------
    numpy.ndarray of bool
        ``occ`` with the gap filled, less a coupler gap's half at each end, so that the
        car stays a run of its own beside its neighbours.

    Notes
    -----
    Freight cars stand coupled in cuts, their bodies a coupler gap (about 1 m) apart. A
    stretch between two runs each a car long (``_MIN_NEIGHBOUR_RUN_M``), itself as long
    as a car body with its two coupler gaps (``_CAR_GAP_M``), whose centre is off the
    ballast's colour at ``_GAP_OFF_SHARE`` of its samples and at its median, is a car
    whose top is within the yard-wide threshold of ballast (a wooden deck, a grey roof,
    a dark load in shade): the neighbours say a car stands there more often than not,
    and a lower bar of colour is enough to tell which. Gaps elsewhere, at a track's ends
    or beside a speck, keep the threshold.
    """
    occ = np.asarray(occ, bool)
    rs = runs(occ)
    if d_off is None or len(rs) < 2:
        return occ
    out = occ.copy()
    least = int(round(_MIN_NEIGHBOUR_RUN_M / step_m))
    lo, hi = (int(round(x / step_m)) for x in _CAR_GAP_M)
    half = max(1, int(round(0.5 * GAP_M / step_m)))
    d = np.asarray(d_off, dtype="float64")
    for (a0, b0), (a1, b1) in zip(rs[:-1], rs[1:]):
        if b0 - a0 < least or b1 - a1 < least or not lo <= a1 - b0 <= hi or not np.all(seen[b0:a1]):
            continue
        inner = d[b0 + half:a1 - half]
        if inner.size == 0 or not np.all(np.isfinite(inner)):
            continue
        if float(np.median(inner)) > contrast and float(np.mean(inner > contrast)) >= _GAP_OFF_SHARE:
            out[b0 + half:a1 - half] = True
    return out


def _coupled_block(strip: Strip, occ: np.ndarray, seen: np.ndarray, sun_left: bool | None, refs) -> np.ndarray:
    """Car bodies between the coupler gaps of a block of like cars, where colour alone
    saw none.

    Parameters
    ----------
    strip : Strip
        The track's samples (reflectance).
    occ : numpy.ndarray of bool
        Occupied flags per along-track sample (after the other rules).
    seen : numpy.ndarray of bool
        Observed flags per along-track sample.
    sun_left : bool or None
        Whether the sun is on the strip's left; None: unknown or along the track.
    refs : mapping
        Learnt ground colours on the same basis as ``strip``: ``lit`` and ``shadow``
        (reflectance per band; NaN where unknown) set how dark a stretch may be.

    Returns
    -------
    numpy.ndarray of bool
        The samples to add: each stretch between two neighbouring gaps of a chain, less
        half a coupler gap at each end, where the other rules found it mostly empty
        (observed throughout); and a block's end car (see Notes).

    Notes
    -----
    A flat wagon's bare deck (wood, grey steel) or a grey container may lie within the
    empty track's colour spread, but the cars stand coupled a gap of about a metre
    apart, and through that gap the ground under the cars shows, in their shade: a
    narrow band across the track unlike the bodies on both sides (:func:`_gap_evidence`'s
    ridge, ``_NOTCH_SPREADS`` local spreads off both, the spread read as
    :func:`_local_lit_spread` reads it), on the body's middle and its shoulders alike,
    and darker than both; or, where the bodies are off every mix of the empty track's
    lit and shadowed colours and alike on both sides, nearer that ground by
    ``_GROUND_SHOWN_SHARE`` (:func:`~changedet.objects.ground.ground_mix`): a low deck (1.3 m) shades a gap only
    under a low sun along the track, and the lit ballast shows through it, brighter than
    a dark deck. A block of one car type repeats it at one pitch:
    ``_MIN_CHAIN_GAPS`` or more such gaps in a row, each ``_CHAIN_PITCH_M`` from the
    next and the spacings within ``_PITCH_RIVAL_M`` of each other, bound cars. A block's
    end car has a gap on one side only; it is taken where the pitch beyond the last gap
    ends at a colour step as strong (the car's end against the ground).

    Ballast shows no such band (sleepers repeat at 0.55 m, catenary masts at 50-70 m).
    A shadow crossing the track from elsewhere (a mast's) crosses the ground on the sun
    side too, where no car on this track casts one: a band seen there as well is not a
    gap, unless the band is the ground showing between decks, that ground is lit at
    the band and nowhere in the window as dark as a shadow, and the band there is
    weaker than on the axis (there it is the decks' own blurred edges, which reach it at
    0.75-1 m pixels; a band across the whole bed, such as a boarded crossing or a bare
    strip in a grassed bed, is as strong there). Nor is a chain over a stretch
    mostly as dark as shadowed ground (:func:`_pitch_dim_level`): there a neighbour
    train's shadow, lit through its coupler gaps, repeats that train's pitch across the
    track (bright streaks, which run diagonally under an oblique sun and may miss the
    sun-side band).

    Bed features can repeat at a car's pitch: fouled or mud-pumped ballast at the rail
    joints (every 11.9-12.5 m on jointed track) is a dark band across the bed, darker
    than both sides, on the shoulders too and inside the sun-side ground. Blocks are
    therefore only looked for on tracks where another rule found a car (``occ`` not all
    False); such patches on a track that also holds cars are still read as a block (a
    known limit). Nor does the rule ask for the deck's shadow: at 1 m with a low oblique
    sun a 1.3 m deck's shadow does not reach the ground band 1.95-2.6 m off the axis.
    """
    occ = np.asarray(occ, bool)
    n = occ.size
    step = strip.step_m
    add = np.zeros(n, bool)
    if not occ.any():
        # A track where no other rule found a car: dark patches in the bed itself (fouled
        # ballast at rail joints every 12.5 m) repeat at a car's pitch too (review REVIEW1,
        # session 26: 12 phantom cars on 7 empty altgen tracks with such patches painted
        # 40 % darker); a block is only looked for beside cars found otherwise.
        return add
    k = max(1, int(round(_NOTCH_HALF_M / step)))
    if n <= 2 * k + 2:
        return add
    centre, _ = _zones(strip)
    off_axis = np.abs(np.round(strip.across_m, 6))
    shoulders = (off_axis > 1.0) & (off_axis <= _SHOULDER_M)
    if sun_left is None:
        ground_rows = off_axis >= 1.95
    else:
        ground_rows = (strip.across_m if sun_left else -strip.across_m) >= 1.95
    if not ground_rows.any():
        return add
    mid = quiet_nanmean(strip.values[:, centre, :], axis=1)
    spread = _local_spread(mid, step)
    if spread is None:
        return add
    sigma = float(np.linalg.norm(spread))
    if not np.isfinite(sigma) or sigma <= 0:
        return add

    def ridge(x):
        return np.nan_to_num(_band_ridge(x, k)).astype("float64")

    r_mid = ridge(mid)
    # No shoulder rows sampled (a grid with none 1.0-1.45 m off the axis): the middle alone.
    r_sh = ridge(quiet_nanmean(strip.values[:, shoulders, :], axis=1)) if shoulders.any() else r_mid
    ground = quiet_nanmean(strip.values[:, ground_rows, :], axis=1)
    r_gr = ndimage.maximum_filter1d(ridge(ground), 2 * k + 1)
    thr = _NOTCH_SPREADS * sigma
    peak = (r_mid >= ndimage.maximum_filter1d(r_mid, 2 * k + 1)) & (r_mid >= thr)
    peak &= r_sh >= _GAP_SHOULDER_SHARE * r_mid
    crossing = r_gr >= 0.5 * r_mid
    # Darker than the bodies on both sides: the ground seen through the gap lies in the
    # cars' shade (an open wagon's lit end walls make bright bands at its ends instead).
    bright = np.nan_to_num(quiet_nanmean(mid, axis=0))
    darker = np.zeros(n, bool)
    darker[k:-k] = bright[k:-k] < np.minimum(bright[:-2 * k], bright[2 * k:])
    # Or the ground itself: bodies on both sides off every mix of the empty track's lit and
    # shadowed colours (by the band's threshold), the band nearer that ground by the share
    # of it a blurred gap shows. A low deck (a flat wagon's, 1.3 m up) shades a 1 m gap
    # only under a low sun along the track; the lit ballast seen through it is brighter
    # than a dark deck. A lit end wall, or a bright band on ballast, is no nearer the ground.
    lit = np.asarray(refs["lit"], dtype="float64")
    shadow = np.asarray(refs["shadow"], dtype="float64")
    if np.all(np.isfinite(lit)) and np.all(np.isfinite(shadow)):
        colour = np.nan_to_num(mid).astype("float64")
        # Distance (reflectance) to the nearest mix of the empty track's lit and shadowed colours.
        off = np.linalg.norm(colour - ground_mix(colour, lit, shadow)[1], axis=0)
        if "bed" in refs and np.all(np.isfinite(refs["bed_shadow"])):
            # The track's own empty bed is ground too (see _with_bed).
            off = np.fmin(off, np.linalg.norm(colour - ground_mix(colour, refs["bed"], refs["bed_shadow"])[1],
                                              axis=0))
        bodies = np.minimum(off[:-2 * k], off[2 * k:])
        shows = np.zeros(n, bool)
        # Like cars either side (a block): the step across the band is under the band's own
        # contrast, where a block's end (a deck against a bed unlike the yard's) is a step.
        alike = np.linalg.norm(np.nan_to_num(mid[:, 2 * k:] - mid[:, :-2 * k]), axis=0) < r_mid[k:-k]
        shows[k:-k] = (bodies >= thr) & (off[k:-k] <= _GROUND_SHOWN_SHARE * bodies) & alike
        darker |= shows
        # A shadow crossing the track darkens the sun-side ground at the band (a mast's), or
        # lies on both sides of it (a neighbour train's, lit through its gaps). Where that
        # ground is lit at the band and nowhere in the window as dark as a shadow, its band
        # is the deck's own blurred edge (at 0.75-1 m pixels a 1.435 m half-deck reaches
        # the 1.95-2.6 m rows and dims them) giving way to ground at the gap.
        lit_b = float(np.mean(lit))
        gb = np.nan_to_num(quiet_nanmean(ground, axis=0))
        unshaded = ndimage.minimum_filter1d(gb, 2 * k + 1) > _MAX_SHADOW_SHARE * lit_b
        # A deck's blurred edge carries only part of the band's contrast 0.5-1.2 m past the
        # deck; a feature across the whole bed (boarded crossing, bare strip in a grassed or
        # snowed bed) is as strong there as on the axis, and stays a crossing.
        blurred = r_gr < _DECK_BLUR_RIDGE_SHARE * r_mid
        crossing &= ~(shows & unshaded & blurred & (gb > _SUN_LIT_SHARE * lit_b))
    peak &= darker & ~crossing
    peak &= ndimage.minimum_filter1d(seen.astype(np.uint8), 2 * k + 1).astype(bool)
    # The sun-side ground must be seen too: unobserved (off the image, under the cloud
    # mask) it cannot tell a shadow crossing the whole track from a coupler gap.
    ground_seen = np.all(np.isfinite(ground), axis=0)
    peak &= ndimage.minimum_filter1d(ground_seen.astype(np.uint8), 2 * k + 1).astype(bool)
    notches = np.flatnonzero(peak)
    lo, hi = (x / step for x in _CHAIN_PITCH_M)
    rival = _PITCH_RIVAL_M / step
    chains, cur = [], [int(notches[0])] if notches.size else []
    for p in notches[1:]:
        gap = p - cur[-1]
        if gap < lo:
            # Two bands closer than a car: the stronger is the gap (the other a container's
            # end on a deck, or the same gap's flat floor), where the chain's spacing holds.
            # The replacement must keep the chain's spacing as an appended band would.
            if r_mid[p] > r_mid[cur[-1]] and (len(cur) < 2 or (lo <= p - cur[-2] <= hi and (
                    len(cur) < 3 or abs((p - cur[-2]) - (cur[-2] - cur[-3])) <= rival))):
                cur[-1] = int(p)
        elif gap <= hi and (len(cur) < 2 or abs(gap - (cur[-1] - cur[-2])) <= rival):
            cur.append(int(p))
        else:
            chains.append(cur)
            cur = [int(p)]
    if cur:
        chains.append(cur)
    half = max(1, int(round(0.5 * GAP_M / step)))
    dim_level = _pitch_dim_level(np.asarray(refs["lit"], float), np.asarray(refs["shadow"], float))
    # A colour step across the track (a car's end against the ground or another car).
    edge = np.zeros(n)
    edge[k:-k] = np.nan_to_num(np.linalg.norm(mid[:, 2 * k:] - mid[:, :-2 * k], axis=0))

    def body(a, b):
        return (0 <= a < b <= n and seen[a:b].all() and occ[a:b].mean() < 0.5
                and (bright[a:b] < dim_level).mean() < _MAX_PITCH_DIM_SHARE)

    for ch in chains:
        if len(ch) < _MIN_CHAIN_GAPS:
            continue
        for p0, p1 in zip(ch[:-1], ch[1:]):
            if body(p0 + half, p1 - half):
                add[p0 + half:p1 - half] = True
        # The block's end cars have a gap on one side only: each is taken where the
        # block's pitch beyond its last gap ends at a colour step (the car's end).
        for end, pitch in ((ch[0], ch[0] - ch[1]), (ch[-1], ch[-1] - ch[-2])):
            far = end + pitch
            w0, w1 = int(round(far - rival)), int(round(far + rival)) + 1
            if w0 < k or w1 > n - k or edge[w0:w1].max() < thr:
                continue
            a, b = sorted((end + (half if pitch > 0 else -half), far - (half if pitch > 0 else -half)))
            if body(a, b):
                add[a:b] = True
    return add


# Most a coupler gap's band may keep of its bodies' offset from the ground's colour (see
# _coupled_block): a 0.8-1.5 m gap fills a third or more of a 0.75-1 m pixel blurred by
# the optics, the rest being the decks either side.
_GROUND_SHOWN_SHARE = 2.0 / 3.0
# Share of the lit ground's brightness a shadow keeps at most (8-65 %, GroundModel's); the
# ground beside a track is lit above _SUN_LIT_SHARE (as _occupancy's sun-side test reads it).
_MAX_SHADOW_SHARE = 0.65
# Most of a ground-showing band's ridge (share of the axis's) that the sun-side ground
# rows, 0.5-1.2 m past a 1.435 m half-deck, may show and still be the deck's blurred edge
# at 0.75-1 m pixels (0.61-0.66 in altgen 6636); a band across the whole bed shows all of it.
_DECK_BLUR_RIDGE_SHARE = 0.8
# Half-width (m) of the window a coupler gap's band is compared across: past a 1-1.5 m
# gap blurred by a 1 m pixel, on the car bodies either side.
_NOTCH_HALF_M = 1.5
# Local spreads (norm over bands) a coupler gap's band stands off both car bodies.
_NOTCH_SPREADS = 4.0
# Spacing (m) of neighbouring gaps in a block: a car body and its coupler gap, from the
# shortest (a 10-12 m tank or hopper) to the longest 1520 mm flat wagon (19.6 m body,
# 1-1.5 m gap), each gap placed to within a 1 m pixel.
_CHAIN_PITCH_M = (10.5, 22.0)
# Fewest gaps in a row that make a block (two whole cars between them): two bands a car
# apart may be chance, three at one pitch are a train's.
_MIN_CHAIN_GAPS = 3


# Gap lengths (m) that hold one car: the shortest body (about 10 m, less the ends its
# neighbours' blurred runs reach into) to the longest (a 19.6 m flat wagon) with its gaps.
_CAR_GAP_M = (8.0, 21.0)
# A neighbour is a car: a run as long as _split_cars counts.
_MIN_NEIGHBOUR_RUN_M = 7.0
# Share of the gap's samples off the ballast's colour.
_GAP_OFF_SHARE = 0.6


# Runs shorter than this (m) are pieces of a car, not a car (_split_cars drops them).
_MAX_PIECE_M = 7.0
# Shortest piece (m) joined: a car's structure (a dome, a hatch bay, a container) spans
# metres; sub-metre flecks strung along an empty bed are its texture or stains at the
# threshold, and joined they read as cars (tuning: chains of 0.5-2 m flecks, 16 m long).
_MIN_PIECE_M = 2.0
# Widest hole (m) inside one car's run: no wider than a coupler gap (1-1.5 m); blur
# narrows a hole, it never widens one.
_MAX_PIECE_GAP_M = 1.5


def _local_lit_spread(strip: Strip, refs, *, dark_light: np.ndarray | None = None) -> dict:
    """``refs`` with the lit empty-track spread no wider than the local spread of this
    track's centre colour.

    Parameters
    ----------
    strip : Strip
        The track's samples (reflectance; above the darkest light ``dark_light`` where
        haze was removed).
    refs : mapping
        Learnt ground colours per band (reflectance, on the same basis as ``strip``):
        ``lit`` and ``lit_sd`` are read; every entry is kept.
    dark_light : numpy.ndarray or None, keyword-only
        Per band, the darkest light already subtracted from ``strip`` and ``refs``
        (reflectance); None for none.

    Returns
    -------
    dict
        ``refs`` with ``lit_sd`` (reflectance, per band) replaced by the smaller of the
        yard's lit spread and the local one (never under the :class:`GroundModel`
        floor); ``refs`` unchanged where the lit colour is unknown, the yard's spread is
        an ordinary one (under ``_WIDE_SPREAD_SHARE`` of the lit colour) or the track
        holds too few observed samples (20 pairs).

    Notes
    -----
    The yard's lit spread is learnt from all tracks' ground and empty centres together,
    so it also holds what differs between them: clean and fouled beds (fouled ballast
    is about half as bright), and the mix of lit, penumbral and shadowed samples where
    a low sun shades most of the ground between tracks or 0.75-1 m pixels blur car
    edges and shadows into the 0.6 m side band. That spread (a third to a half of the
    lit colour in such yards against a tenth in open ones) hid every car within a few
    hundredths of ballast brightness. The spread that tells a car from ballast at one
    place is the ballast's texture and the sensor's noise there: read as the robust
    spread (scaled MAD over root two) of the centre colour's differences
    ``_LOCAL_LAG_M`` apart along the track, clear of one pixel's blur at 1 m. Over a
    stretch of one kind (ballast, a roof, a load) the difference is texture and noise;
    steps between them (car ends, shadow edges, another bed) are the minority the
    median passes over; slow changes (lighting, bed colour along the track) cancel.
    The spread is only ever narrowed. Its floor is :class:`GroundModel`'s (0.004 + 3 %
    of the lit colour), taken on the light as recorded in haze as
    :func:`_recorded_spread_floors` takes it.
    """
    lit_sd = np.asarray(refs["lit_sd"], dtype="float64")
    lit = np.asarray(refs["lit"], dtype="float64")
    if not (np.all(np.isfinite(lit_sd)) and np.all(np.isfinite(lit))):
        return dict(refs)
    if float(np.median(lit_sd / np.maximum(lit, 1e-6))) < _WIDE_SPREAD_SHARE:
        # An ordinary yard spread (about a tenth of the colour) is what tells a clean or
        # brighter bed, or sleepers, from the yard's lit colour: narrowed, whole empty
        # tracks 25-35 % brighter than it read as trains (review RMISS).
        return dict(refs)
    centre, _ = _zones(strip)
    local = _local_spread(quiet_nanmean(strip.values[:, centre, :], axis=1), strip.step_m)
    if local is None:
        return dict(refs)
    floor = lit_spread_floor(lit)
    if dark_light is not None:
        floor = _recorded_spread_floors({**refs, "lit_sd": floor}, dark_light)["lit_sd"]
    return {**refs, "lit_sd": np.minimum(lit_sd, np.maximum(local, floor))}


def _local_spread(colour: np.ndarray, step_m: float) -> np.ndarray | None:
    """Spread of a track's centre colour at one place (see :func:`_local_lit_spread`).

    Parameters
    ----------
    colour : numpy.ndarray (band, along)
        Mean centre colour per along-track sample (reflectance; NaN unobserved).
    step_m : float
        Along-track sample spacing (m).

    Returns
    -------
    numpy.ndarray (band,) or None
        The robust spread (scaled MAD over root two) of the colour's differences
        ``_LOCAL_LAG_M`` apart, per band (reflectance); None with fewer than
        ``_MIN_LOCAL_PAIRS`` pairs observed in every band.
    """
    lag = max(1, int(round(_LOCAL_LAG_M / step_m)))
    if colour.shape[1] <= lag:
        return None
    d = colour[:, lag:] - colour[:, :-lag]
    d = d[:, np.all(np.isfinite(d), axis=0)]
    if d.shape[1] < _MIN_LOCAL_PAIRS:
        return None
    return 1.4826 * np.median(np.abs(d), axis=1) / math.sqrt(2.0)


# Lag (m) along the track of the colour differences that give the local spread: clear of
# a 1 m pixel's blur (pixel and PSF), short against a car.
_LOCAL_LAG_M = 2.0
# Fewest pairs (observed centre samples that far apart) to read the local spread from.
_MIN_LOCAL_PAIRS = 20
# Yard lit spread (median share of the lit colour over bands) from which it is taken as
# mixing beds and lights and narrowed per track: open yards show about a tenth, yards
# under a low sun or at 0.75-1 m pixels a fifth to a half.
_WIDE_SPREAD_SHARE = 0.2


def _closing_k(strip: Strip) -> int:
    """Samples closed over along the track (0.6 m: sub-metre holes, specular glints)."""
    return max(1, int(round(0.6 / strip.step_m)))


def _own_deck_shadow(strip: Strip, refs, sun_left: bool, per_m: float, k: int, *, blur_m: float = 0.4,
                     dark_light: np.ndarray | None = None) -> np.ndarray:
    """Per along-track sample: whether the ground beside the track on its anti-sun side is
    in shadow where even the lowest car's shadow (a bare flat wagon's deck) falls.

    Parameters
    ----------
    strip : Strip
        The track's samples (reflectance; above the darkest light ``dark_light`` where
        haze was removed).
    refs : mapping
        Learnt ground colours (reflectance per band, on the same basis as ``strip``):
        ``lit``, ``lit_sd`` and, where learnt, ``shadow`` (NaN otherwise).
    sun_left : bool
        Whether the sun is on the strip's left (positive ``across_m``).
    per_m : float
        Metres a shadow falls sideways per metre of height (:func:`_shadow_across`); NaN
        when the sun is unknown or along the track.
    k : int
        Smoothing along the track (samples, odd).
    blur_m : float
        Blur of a shadow's edge (m): half a pixel, 0.2 m at least.
    dark_light : numpy.ndarray or None
        Per band, the darkest light already subtracted from ``strip`` and ``refs``
        (reflectance); None for none.

    Returns
    -------
    numpy.ndarray of bool
        True where every band of the band beside the track has darkened towards the
        ground's shadow colour (see Notes).

    Notes
    -----
    A deck ``_LOWEST_DECK_M`` up and ``_LOWEST_HALF_WIDTH_M`` half-wide (13-401: 1.3 m,
    2.87 m wide) shades the ground from its edge out to ``1.435 + 1.3 * per_m`` m: 1.9 m
    out under a sun 70 degrees high across the track, 2.3 m under one 56 degrees high and
    the whole strip (2.6 m) under one 48 degrees high or lower. The band read is that one,
    each end moved in by half the blur; the 1.95-2.6 m band :func:`_occupancy` reads for
    taller cars' shadows is two thirds lit there, and a ballast-coloured deck went unseen
    (altgen tuning scenes: 315 of 947 flat wagons had no detection over them, most under
    such a sun). A wider body in the band is a car as well.

    The band is judged against the learnt lit ground (``refs["lit"]``), not against its
    own level along this track (a concrete apron or snow beside part of the track set
    that level, and plain ballast then read as shadow along the rest), in the light as
    recorded (above the darkest light a shaded band and lit ballast differ by noise), on
    all four bands: a shadow is lit by the sky alone and darkens near infrared too, which
    weeds (dark in visible light, bright in near infrared) do not. Every band must drop
    ``_DECK_DROP_SD`` lit spreads below the lit ground and, where a shadow colour was
    learnt, be nearer it than the lit colour with the colour a mix of the two (a darker
    ground's own colour, fouled ballast or a puddle, lies off that mix); where none was
    learnt, every band must be under ``_SHADOW_RATIO`` of the lit ground.

    Only something on this track shades its anti-sun side while its centre stays lit (the
    caller's condition): a neighbour's or a mast's shadow reaches the centre first. All
    False where the band is under ``_MIN_OWN_SHADOW_BAND_M`` wide (a high sun or one
    along the track), holds no sample, or the lit colour is unknown.
    """
    n = strip.values.shape[2]
    lit = np.asarray(refs["lit"], dtype="float64")
    if not np.isfinite(per_m) or not np.all(np.isfinite(lit)):
        return np.zeros(n, bool)
    a = strip.across_m if sun_left else -strip.across_m
    lo = _LOWEST_HALF_WIDTH_M + blur_m / 2
    hi = min(_LOWEST_HALF_WIDTH_M + _LOWEST_DECK_M * abs(float(per_m)) - blur_m / 2,
             float(np.abs(strip.across_m).max()))
    band = (a <= -lo) & (a >= -hi)
    if hi - lo < _MIN_OWN_SHADOW_BAND_M or not band.any():
        return np.zeros(n, bool)
    lift = np.zeros(lit.size) if dark_light is None else np.asarray(dark_light, dtype="float64")
    b = quiet_nanmean(strip.values[:, band, :], axis=1)  # (band, along), above the darkest light
    b = np.stack([_nan_smooth(x, k) for x in b]) + lift[:, None]   # as recorded
    lit_rec = lit + lift
    if not np.all(lit_rec > 0):
        return np.zeros(n, bool)
    sd = np.asarray(refs["lit_sd"], dtype="float64")
    with np.errstate(invalid="ignore"):
        ok = np.all(np.isfinite(b), axis=0)
        ok &= np.all(lit_rec[:, None] - b > _DECK_DROP_SD * sd[:, None], axis=0)
        shadow = np.asarray(refs.get("shadow", np.full(lit.size, np.nan)), dtype="float64")
        if np.all(np.isfinite(shadow)) and np.all(shadow < lit):
            # Per band, the share of the way from the lit colour to the shadow colour.
            share = (lit[:, None] + lift[:, None] - b) / (lit - shadow)[:, None]
            ok &= np.all(share > 0.5, axis=0)
            ok &= (share.max(axis=0) - share.min(axis=0)) < _DECK_SHARE_SPREAD
        else:
            ok &= np.all(b < _SHADOW_RATIO * lit_rec[:, None], axis=0)
    return ok


# Lit spreads (refs["lit_sd"], per band) the deck band must drop below the lit ground.
_DECK_DROP_SD = 3.0
# A shadow is a mix of the lit and shadowed ground's colours, the same share in every
# band; a darker ground's own colour is not (fouled ballast 0.55 as bright as clean: shares 0.61-0.75).
_DECK_SHARE_SPREAD = 0.1


# Narrowest band (m) beside the track a deck's shadow must cover to be read.
_MIN_OWN_SHADOW_BAND_M = 0.15


# Ground brightness relative to its learnt colour under the same mix of sun and skylight:
# ballast texture and wear keep it above ~0.75 (measured on empty track, lit and shaded);
# a weight below -0.35 puts a colour outside every mix of the two lights.
_MIN_GROUND_SCALE = 0.65
# The same, for colours read above the darkest light in the scene (haze removed; see
# _occupancy).
_MIN_SCALE_ABOVE_DARK = 0.5
_MAX_NEGATIVE_MIX = 0.35
# The same, for colours read above the darkest light (haze removed): there other tracks'
# ballast (fouled, or clean beside fouled) reaches -0.5 to -0.7, and sunlit paint that
# the veil hides on the light as recorded (a rust-brown deck: -0.8 to -1.9 in altgen hazy
# 1.0 m yards rendered again without haze, where the recorded-light test found them)
# lies past it.
_MAX_NEGATIVE_ABOVE_DARK = 0.75
# A centre between two shaded side bands lies in the same cast shadow when it is ground.
# Its lit share (see ground_mix) is then (f - 1) s / (1 - s) for a bed f times as bright as
# the side ground and a shadow keeping s of the lit light: ballast (f ~ 1) stays near 0,
# texture and wear moving it by about 0.1; concrete sleepers (f 1.2-1.8, altgen empty
# beds 1.4-1.8 in a low sun) reach 0.07-0.23 at their 90th percentile with s 0.2-0.3
# (review RLOWSUN). A body standing in the shadow, its top seeing the whole sky or rising
# into the sun, reads 0.2-0.45 (altgen low sun, grey and dark-grey tanks): 0.3 keeps
# the bright beds out at some cost in dark bodies. The ratio gate (1.3 times the side
# bands) keeps out uniform partial shade (a cloud shadow across the whole track), whose
# share may exceed 0.3 but whose centre is as bright as its sides. Skies that keep more
# than ~0.35 of the light in shadow (haze) bring bright beds near the gate again.
_BODY_IN_SHADE_LIT_SHARE = 0.3
_BODY_IN_SHADE_RATIO = 1.3
# Where the track's own bed was learnt (see _with_bed) a centre on the line from that bed
# in shade to that bed lit is ground when its lit share there stays within the ballast's
# texture and wear (about 0.1): the bed's brightness is already in its colour. A sky-lit
# grey body on a 1.1-1.6 times bed reads 0.15-0.3 on that line (review RFINAL: with the
# ground gate of 0.3 every such body on a bed brighter than the ground was taken for bed).
_BED_IN_SHADE_LIT_SHARE = 0.12
# Across-track bands (m from the centreline) compared for a cylinder's shading: inside a
# 3 m car body, clear of the centreline where both halves meet.
_HALF_BAND_M = (0.25, 1.1)
# The flanks of a barrel (m from the centreline): clear of what its crest carries (a
# dome and manhole platform, a walkway, up to about 0.5 m either side of the axis), bare
# curved plate whose tilt (24-47 degrees for a 1.5 m radius) shades it most.
_FLANK_BAND_M = (0.6, 1.1)
# A Lambertian cylinder lit from the side is 2-3 times brighter on its sun-facing half;
# ground, flat roofs and loads stay within about 30 %.
_GLOW_RATIO = 1.35


def _light_share(band: np.ndarray, refs, k: int) -> np.ndarray:
    """Share of the open sky's light (0.2-1) reaching the ground samples ``band`` (band,
    across, along), smoothed over ``k`` positions.

    Ground under any mix of sun and skylight has a colour between its lit and shadowed
    ones; a thin cloud scales that colour down. The share is the scale that best fits
    the samples' colour as a scaled mix (the largest among fits within one standard
    error of the best: where the lit and shadowed colours differ little, a shadow cannot
    be told from dimming, and full light is assumed). 1 where the samples are no ground
    (a car's flank) or unknown. Without a shadowed colour (NaN in ``refs``) the ground
    is the lit colour, scaled.
    """
    colour = _nan_smooth_2d(quiet_nanmean(band, axis=1), k)   # (band, along)
    lit, sh = refs["lit"][:, None], refs["shadow"][:, None]
    lit_sd, sh_sd = refs["lit_sd"][:, None], refs["shadow_sd"][:, None]
    if not np.all(np.isfinite(sh)):
        # Only the lit colour is known: the ground is that colour, scaled.
        sh, sh_sd = lit, lit_sd
    fits = []
    for a in np.linspace(0.0, 1.0, 11):
        m = sh + a * (lit - sh)
        sd = sh_sd + a * (lit_sd - sh_sd)
        scale = np.nansum(colour * m, axis=0) / max(float((m ** 2).sum()), 1e-12)
        resid = np.sqrt(quiet_nanmean(((colour - scale * m) / (np.maximum(scale, 1e-3) * sd)) ** 2, axis=0))
        fits.append((scale, resid))
    scales = np.stack([f[0] for f in fits])
    resid = np.stack([f[1] for f in fits])
    # Fits within one standard error of the best are as good: the side colour is a mean
    # of about n samples, each off the ground colour by one spread.
    n = max(1, band.shape[1]) * k
    ok = resid <= quiet_nanmin(resid, axis=0) + 1.0 / math.sqrt(n)
    best_s = np.nanmax(np.where(ok, scales, -np.inf), axis=0)
    ground = quiet_nanmin(resid, axis=0) <= _GROUND_FIT
    good = np.isfinite(best_s) & ground & np.all(np.isfinite(colour), axis=0)
    return np.where(good, np.clip(best_s, 0.2, 1.0), 1.0)


# Colour misfit (in spreads of the ground colour) up to which side samples are ground.
_GROUND_FIT = 4.0


def _nan_smooth_2d(x: np.ndarray, k: int) -> np.ndarray:
    """:func:`_nan_smooth` along the last axis of each row of ``x`` (band, along)."""
    return np.stack([_nan_smooth(row, k) for row in x])


def _sun_band_unshaded(line: LineString, others: Sequence[LineString], azimuth_deg: float | None,
                       elevation_deg: float | None) -> bool:
    """Whether no car can shade the ground band on the sun side of ``line``.

    Parameters
    ----------
    line : shapely.geometry.LineString
        The track's centreline (metres, in the image's CRS).
    others : sequence of shapely.geometry.LineString
        The other tracks' centrelines.
    azimuth_deg, elevation_deg : float or None
        The sun's azimuth (degrees clockwise from north) and elevation (degrees).

    Returns
    -------
    bool
        True where the sun shines across the track (a sun side exists) and no other track
        lies on that side within reach of the band's outer edge (2.6 m off the centreline,
        as :func:`_occupancy` reads it): a body's half width (``_HALF_BODY_M``) plus the
        tallest car's shadow sideways (``_MAX_CAR_HEIGHT_M`` times :func:`_shadow_across`)
        and the blur. A car on this track never shades its own sun side. False where the
        sun is unknown or shines along the track.
    """
    per_m = _shadow_across(line, azimuth_deg, elevation_deg)
    sun_left, _ = _sun_geometry(line, azimuth_deg, elevation_deg)
    if not np.isfinite(per_m) or sun_left is None:
        return False
    reach = _SIDE_BAND_OUTER_M + _HALF_BODY_M + _MAX_CAR_HEIGHT_M * abs(per_m) + _SHADOW_EDGE_BLUR_M
    # The whole sun side within reach, following the track's bends (shapely's one-sided
    # buffer: positive to the left of the drawn direction), less a strip along the
    # centreline itself, so that a track meeting this one at a switch on the other side
    # does not count; any neighbour reaching into it, over however short a stretch (a
    # throat, a crossover), may shade the band.
    side = line.buffer(reach if sun_left else -reach, single_sided=True).difference(line.buffer(0.5))
    return not any(other.intersects(side) for other in others)


def _sun_side_glow(strip: Strip, sun_left: bool, ground_sd: float, k: int) -> np.ndarray:
    """Positions where the sun-facing half of the centre is clearly brighter than the
    other half: by ``_GLOW_RATIO`` and by three spreads of the ground colour."""
    a = strip.across_m if sun_left else -strip.across_m
    lo, hi = _HALF_BAND_M
    b = quiet_nanmean(strip.values[:3], axis=0)   # visible brightness (across, along)
    sun_half = _nan_smooth(quiet_nanmean(b[(a >= lo) & (a <= hi)], axis=0), k)
    anti_half = _nan_smooth(quiet_nanmean(b[(a <= -lo) & (a >= -hi)], axis=0), k)
    with np.errstate(invalid="ignore"):
        return (sun_half >= _GLOW_RATIO * anti_half) & (sun_half - anti_half >= 3.0 * ground_sd)


# Tallest common rolling stock (m) and the closest track spacing in yards (m).
_MAX_CAR_HEIGHT_M = 5.0
_MIN_TRACK_SPACING_M = 4.8


def _sun_geometry(line: LineString, azimuth_deg: float | None,
                  elevation_deg: float | None) -> tuple[bool | None, bool]:
    """Which side of the track faces the sun, and whether a neighbour's shadow can reach
    this track's anti-sun side.

    Returns ``(sun_left, anti_shadow_is_own)``; ``sun_left`` is None when unknown or when
    the sun shines along the track (shadows then fall along it, not beside it).
    """
    if azimuth_deg is None:
        return None, False
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    d = np.array([x1 - x0, y1 - y0]) / max(math.hypot(x1 - x0, y1 - y0), 1e-9)
    left = np.array([-d[1], d[0]])
    az = math.radians(azimuth_deg)
    sun = np.array([math.sin(az), math.cos(az)])
    across = float(left @ sun)
    if abs(across) < 0.2:
        return None, False
    own_only = False
    if elevation_deg is not None:
        reach = _MAX_CAR_HEIGHT_M / math.tan(math.radians(max(elevation_deg, 1.0))) * abs(across)
        # The neighbour's body edge is spacing - half width away; our anti-sun side
        # starts 1.95 m past our centre line.
        own_only = reach < _MIN_TRACK_SPACING_M - 1.65 + 1.95
    return across > 0, own_only


# Widest band of the strip read for a car's shadow (m off the centreline): the anti-sun
# side band ends at 2.6 m, the car body's sun-side edge is 1.5 m on the other side.
_SHADOW_BAND_M = 2.6 + 1.5
# Longest shadow tail trimmed (m): beyond it the sun runs nearly along the track and the
# side rules are not used.
_MAX_TAIL_M = 6.0


def _shadow_tail(line: LineString, azimuth_deg: float | None) -> float:
    """How far (m, signed along the track) a car's own shadow reaches past its end at the
    edge of the strip's side bands, whatever the car's height.

    A car's shadow is its footprint swept away from the sun; its boundary leaves the car's
    sun-side corner at the shadow's direction, so across a band ``_SHADOW_BAND_M`` wide it
    runs ``_SHADOW_BAND_M`` times (along over across component) past the car's end: the
    height and the sun's elevation only set how far the shadow reaches sideways.
    """
    if azimuth_deg is None:
        return 0.0
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    d = np.array([x1 - x0, y1 - y0]) / max(math.hypot(x1 - x0, y1 - y0), 1e-9)
    az = math.radians(azimuth_deg)
    away = -np.array([math.sin(az), math.cos(az)])   # shadows point away from the sun
    along, across = float(d @ away), abs(float(d[0] * away[1] - d[1] * away[0]))
    if across < 1e-6:
        return 0.0
    return float(np.clip(_SHADOW_BAND_M * along / across, -_MAX_TAIL_M, _MAX_TAIL_M))


def _shadow_reach(line: LineString, azimuth_deg: float | None, elevation_deg: float | None) -> float:
    """How far (m, signed along the track) the shadow of the tallest car can reach past
    its end on the track itself: its height over the tangent of the sun's elevation,
    times the along-track share of the shadow's direction.

    A dark car casts its shadow onto the track ahead of it, where the shadow looks
    like more of the car (dark, and lit beside it); this bounds how much of a run's
    shadow-side end may be that shadow.
    """
    if azimuth_deg is None or elevation_deg is None:
        return 0.0
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    d = np.array([x1 - x0, y1 - y0]) / max(math.hypot(x1 - x0, y1 - y0), 1e-9)
    az = math.radians(azimuth_deg)
    along = -float(d @ np.array([math.sin(az), math.cos(az)]))
    reach = _MAX_CAR_HEIGHT_M / math.tan(math.radians(max(elevation_deg, 1.0))) * along
    return float(np.clip(reach, -_MAX_TAIL_M, _MAX_TAIL_M))


def _trim_tails(occ: np.ndarray, shade_only: np.ndarray, tail_m: float, step: float) -> np.ndarray:
    """Drop, at each run's shadow-side end (the high end for ``tail_m`` > 0), the samples
    occupied by shadow rules alone, up to ``|tail_m|`` (plus half a metre of blur)."""
    out = occ.copy()
    n_max = int(round((abs(tail_m) + 0.5) / step))
    for a, b in runs(occ):
        idx = range(b - 1, max(a, b - n_max) - 1, -1) if tail_m > 0 else range(a, min(b, a + n_max))
        for i in idx:
            if not shade_only[i]:
                break
            out[i] = False
    return out


def _nan_smooth(x: np.ndarray, k: int) -> np.ndarray:
    """Moving mean over ``k`` samples ignoring NaN (a running sum would carry one NaN to
    every later sample: a cloud gap would blind the rest of the track)."""
    ok = np.isfinite(x)
    num = ndimage.uniform_filter1d(np.where(ok, x, 0.0), k)
    den = ndimage.uniform_filter1d(ok.astype("float64"), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


def _drop_short(mask: np.ndarray, min_len: int) -> np.ndarray:
    out = mask.copy()
    for a, b in runs(mask):
        if b - a < min_len:
            out[a:b] = False
    return out


# ------------------------------------------------------------------------ splitting
# Rows of a strip (m off the track's axis) that are a car body's shoulders: beyond the
# middle metre either side, where roof equipment (fans, exhausts, hatches, domes: 0.8-1.5 m
# across) stands, within the narrowest body (a flat wagon's 2.87 m deck).
_SHOULDER_M = 1.45
# Share of the middle's cut evidence a coupler gap shows on the body's shoulders at least:
# the gap is open across the whole body, but the shoulder rows mix in the body's edges
# and the ground beside it (blur), so they read a weaker step than the middle. (Session
# 24, tuning 0-15: 0.35, 0.5 and 0.7 read alike, F1 0.853-0.854; at 0.5 and 0.7 the
# sun-along-the-tracks scene of tests/test_objects_altgen_rail.py loses a car.)
_GAP_SHOULDER_SHARE = 0.35


def _gap_evidence(mean: np.ndarray, side: np.ndarray, step: float) -> np.ndarray:
    """Evidence of a gap between two cars at each along-track sample (reflectance).

    Parameters
    ----------
    mean : ndarray, shape (bands, n)
        Mean colour of some rows of the track (reflectance) per along-track sample.
    side : ndarray, shape (bands, n)
        Mean colour of the ground beside the track (reflectance) per sample.
    step : float
        Along-track sample spacing (m).

    Returns
    -------
    ndarray, shape (n,)
        The strongest of a colour edge between car ends, a dip towards the ground beside
        the track and a narrow band unlike both sides (counted twice), in reflectance.
    """
    # a colour edge between neighbouring car ends ...
    k = max(1, int(round(1.0 / step)))
    edge = np.zeros(mean.shape[1])
    if mean.shape[1] > 2 * k:
        edge[k:-k] = np.linalg.norm(mean[:, 2 * k:] - mean[:, :-2 * k], axis=0)
    # ... or a coupler gap: the rows briefly look like the ground beside the track.
    d = np.linalg.norm(mean - side, axis=0)
    k2 = max(1, int(round(1.5 / step)))
    around = np.minimum(np.roll(d, k2), np.roll(d, -k2))
    dip = np.clip(around - d, 0, None)
    # ... or any narrow band across the track unlike the bodies on both sides: with a low
    # sun the gap is lit or shaded unlike the ground beside the track, which is itself
    # part lit, part in the cars' shadows.
    ridge = _band_ridge(mean, k2)
    # A narrow band is specific to a gap; a colour step rises over a metre either side of
    # it (blur, car end walls), and a lit gap between two cars shows as two steps.
    return np.maximum(np.maximum(edge, dip), 2.0 * ridge)


def _band_ridge(colour: np.ndarray, k: int) -> np.ndarray:
    """How far a narrow band across the track stands off both sides, per sample.

    ``colour`` (band, n) is a mean colour per along-track sample (reflectance); the
    result (n,) is the smaller of its distances (norm over bands) to the samples ``k``
    before and ``k`` after, 0 within ``k`` of either end (NaN where one of the three is NaN).
    """
    # In the colour's precision (float32 strips stay float32), as the distances are.
    ridge = np.zeros(colour.shape[1], dtype=np.result_type(colour.dtype, np.float16))
    if colour.shape[1] > 2 * k:
        ridge[k:-k] = np.minimum(np.linalg.norm(colour[:, k:-k] - colour[:, :-2 * k], axis=0),
                                 np.linalg.norm(colour[:, k:-k] - colour[:, 2 * k:], axis=0))
    return ridge


def _split_cars(strip: Strip, occ: np.ndarray, seen: np.ndarray, sd: np.ndarray,
                lit: np.ndarray, *, sun_left: bool | None = None, ground_sd: float = float("nan"),
                shadow_reach_m: float = 0.0,
                shadow_across_m: float = float("nan"), wide: Strip | None = None,
                blur_m: float = 0.4, shading: float = float("nan"),
                path: np.ndarray | None = None,
                resolution_m: float = float("nan"),
                empty: np.ndarray | None = None,
                shadows_shown: bool = False,
                shadow: np.ndarray | None = None,
                flank_glow: float = float("nan"),
                anti_flank: tuple[float, float] = (float("nan"), float("nan")),
                recorded: np.ndarray | None = None,
                provenance: bool = False) -> list[tuple]:
    """Cut occupied runs into cars: (start_m, end_m, type, score) per car; with
    ``provenance``, (start_m, end_m, type, score, type_from), ``type_from`` "neighbours"
    where the class is its coupled neighbours' (:func:`_block_types`), else "image".

    A cut is where a gap shows (:func:`_gap_evidence`) on the body's middle and, at least
    ``_GAP_SHOULDER_SHARE`` as strongly, on the mean of its shoulder rows (1.0-1.45 m off
    the axis; the rows sampled there need not be symmetric about it): a coupler gap opens
    across the whole body, while a locomotive's fans or a hopper's hatches change only
    the middle.
    Where the sun shines across the track (``sun_left`` known), black bodies brighter on
    their sun-facing half are cylinders (tank cars) and get the tank car's pitch; other
    black bodies (open cars seen into, black boxcars) get no preference. Without the sun
    side, every black body gets the tank pitch (the commonest black freight car).
    A run's shadow-side end may carry a car's own shadow cast along the track (up to
    ``|shadow_reach_m|``, from :func:`_shadow_reach`; negative: at the run's start),
    which its end car is allowed beyond its pitch (see :func:`_shadow_lead`).
    ``shadow_across_m`` (from :func:`_shadow_across`) is how far sideways a shadow
    falls per metre of height, which tells a flat wagon's deck from a tall car's roof
    in ``wide`` (the same track sampled wider, same along-track samples), with shadow
    edges blurred over ``blur_m`` (see :func:`_tall`). ``resolution_m`` (m per pixel)
    tells whether a top's width is read (:func:`_classify`); ``empty`` flags the
    samples where this track is seen empty (:func:`_seen_empty`; the height cue's
    reference beside an edge track, see :func:`_tall`). With ``shadows_shown`` (the image
    shows the sun's shadows: :func:`_shadows_shown`), a stretch whose anti-sun ground is
    lit where every car's shadow would fall is a bare track bed, not a car
    (:func:`_bare_bed`, at pixels of ``_MAX_BARE_BED_RES_M`` or finer). ``shadow`` (per
    band, reflectance; NaN or None: unknown) is the track's shadowed ground, which sets
    how dark a run may be before its own pitch is no longer read (:func:`_pitch_dim_level`).
    ``flank_glow`` is the sun-half ratio from which a top's flanks alone show a barrel
    (:func:`_flank_glow`; see :func:`_look`), ``anti_flank`` the anti-sun flank shares
    under which a top is a barrel and from which it is none, NaN where this sun does not
    part them (:func:`_anti_flank_limits`; see :func:`_look`). ``recorded`` (n_along
    bool; None: nowhere) is where the centreline lies on the image's own data
    (:func:`_recorded_along`): an unobserved stretch running to the strip's end whose
    first ``_WIDE_STRETCH_M`` lie there is the image's mask, and its length counts (see
    :func:`_hidden_run_m`). Two cars placed into one unobserved stretch from its two sides
    must fit there with a coupler gap between them (:func:`_without_overlapping_cut_cars`).
    A lone car typed only by a fallback rule of :func:`_classify_rule` (``_WEAK_RULES``)
    between two coupled cars of one class takes their class (:func:`_block_types`), after
    the double counts are dropped (a dropped car does not vote).
    At pixels coarser than ``_LONE_LOAD_MIN_RES_M`` a closed run of ``_LONE_LOAD_M``
    (too short for any car) with room for a car beside it is a flat wagon's lone load,
    counted as the wagon (:func:`_lone_load`), where it casts a standing body's shadow
    (:func:`_load_stands`; so only with the sun's side and ``shadow_across_m`` known),
    and only up to ``_LONE_LOAD_MAX_RES_M``.
    """
    step = strip.step_m
    # The anti-sun flank's light is visible light: so is the lit ground it is held against
    # (NIR, bright on vegetation, would read lit grass as shadow).
    lit_visible = float(quiet_nanmean(np.asarray(lit, "float64")[:3]))
    centre, _ = _zones(strip)
    sides = np.abs(strip.across_m) >= 1.95
    mean = np.nan_to_num(quiet_nanmean(strip.values[:, centre, :], axis=1))
    side = np.nan_to_num(quiet_nanmean(strip.values[:, sides, :], axis=1))
    sigma = max(float(quiet_nanmean(sd)), 1e-3)
    # Cut evidence, in units of the empty track's colour spread (see _gap_evidence). A
    # coupler gap runs across the whole body, so its shoulders change with its middle;
    # roof equipment down the middle (a locomotive's fans and exhausts, a hopper's
    # hatches, a tank's dome) leaves the shoulders as they are and is no gap.
    evidence = _gap_evidence(mean, side, step)
    off_axis = np.abs(np.round(strip.across_m, 6))  # -1.0000000000000004 is the 1.0 m row
    shoulders = (off_axis > 1.0) & (off_axis <= _SHOULDER_M)
    if shoulders.any():
        shoulder = np.nan_to_num(quiet_nanmean(strip.values[:, shoulders, :], axis=1))
        evidence = np.minimum(evidence, _gap_evidence(shoulder, side, step) / _GAP_SHOULDER_SHARE)
    evidence = evidence / sigma
    # Black car bodies (well below the empty track's brightness, lit or shaded).
    dark = mean.mean(axis=0) < 0.5 * float(quiet_nanmean(lit))
    dim = dark.copy()
    shaded = mean.mean(axis=0) < _pitch_dim_level(lit, shadow)
    # The ground beside the track on its sun side (both sides where the sun's side is
    # unknown): a car's own shadow never falls there.
    if sun_left is None:
        ground_rows = sides
    else:
        ground_rows = (strip.across_m if sun_left else -strip.across_m) >= 1.95
    ground = np.nan_to_num(quiet_nanmean(strip.values[:, ground_rows, :], axis=1))
    # Black bodies shown to be lit cylinders (brighter on their sun-facing half, which no
    # shadow is): bodies, not a neighbour's shadow (see the run's own pitch below).
    cylinders = np.zeros_like(dark)
    if sun_left is not None and np.isfinite(ground_sd):
        dark &= _sun_side_glow(strip, sun_left, ground_sd, int(1.0 / step) | 1)
        cylinders = dark
    cars = []
    # Per car: whether its class came from a fallback rule (_WEAK_RULES; see _block_types).
    weak = []
    # Per car: (reaches into a stretch at its start, at its end, length seen in m).
    cut_seen = []
    n_all = occ.size
    tol = max(1, int(round(_GAP_EDGE_M / step)))
    all_runs = runs(occ)
    for r_i, (a, b) in enumerate(all_runs):
        run_len = (b - a) * step
        # A run ending at an unobserved stretch (cloud, cloud shadow) is cut there, not
        # at a car's end: the car there reaches into the stretch by an unknown length.
        open_a = bool(a > 0 and not seen[max(0, a - tol):a].all())
        open_b = bool(b < n_all and not seen[b:b + tol].all())
        if run_len < (_MIN_OPEN_RUN_M if (open_a or open_b) else 7.0):
            lone = (_lone_load(all_runs, r_i, seen, step, open_a or open_b)
                    if _LONE_LOAD_MIN_RES_M < resolution_m <= _LONE_LOAD_MAX_RES_M + 1e-9
                    else None)
            # Only where something stands up on the piece: its shadow on the anti-sun
            # side, against the same ground beyond the piece's ends (_load_stands). A
            # stain, a patch of ground colour or another object's shadow casts none.
            if lone is not None and not _load_stands(strip, a, b, occ, sun_left, shadow_across_m,
                                                     shadow_reach_m, path):
                lone = None
            if lone is not None:
                a_m, b_m = lone
                # Counted as the container wagon it most often is; its class a fallback
                # that coupled neighbours of one class override (_block_types).
                cars.append((a_m, b_m, "flatcar", 0.5))
                weak.append(True)
                cut_seen.append((False, False, b_m - a_m))
            continue
        lead, trail = _shadow_lead(dim[a:b], shadow_reach_m, step)
        # Trains are made up of blocks of one car type: a run whose look repeats at one
        # pitch is cut at that pitch where the couplers hardly show (see _run_pitch).
        # Not on a run mostly as dark as shadowed ground or darker (shadow or black
        # bodies): a neighbour's train casts its shadow there with its own pitch, which
        # repeats as well as a train does. Black cylinders brighter on their sun-facing
        # half (``cylinders``, read only with the sun's side known) are bodies, not a
        # shadow: a block of black tank cars is read at its own pitch (long tank cars of
        # 14.8-16.6 m were otherwise cut at the short tank's pitch, into more cars).
        own = (_run_pitch(mean[:, a:b], step)
               if (shaded[a:b] & ~cylinders[a:b]).mean() < _MAX_PITCH_DIM_SHARE else None)
        # Nor where the ground beside the track repeats at that pitch too: shadows of
        # posts or masts, or a neighbour's, cross the track and its bed alike.
        if own is not None and _ground_repeats(ground[:, a:b], own, step):
            own = None
        cuts = _best_cuts(evidence[a:b], step, dark[a:b], lead_m=lead, trail_m=trail,
                          open_start=open_a, open_end=open_b, run_pitch_m=own)
        edges = [a] + [a + c for c in cuts] + [b]
        for s0, s1 in zip(edges[:-1], edges[1:]):
            length = (s1 - s0) * step
            interior = (s0 != a) + (s1 != b)
            body = length - interior * GAP_M / 2
            tall = (_tall(wide, s0, s1, sun_left, shadow_across_m, blur_m=blur_m, path=path,
                          lit_ground=lit, empty=empty)
                    if sun_left is not None and wide is not None else None)
            # A bare deck's short shadow, read on one side (see _low_deck): only the even
            # tops' width rules (even_short_roof, even_dark_roof) listen to it.
            low = (_low_deck(wide, s0, s1, sun_left, shadow_across_m, resolution_m=resolution_m,
                             path=path, lit_ground=lit)
                   if sun_left is not None and wide is not None else None)
            # The same point read against an open wagon's walls, lower than any roof: only
            # the "open" look listens to it (rule open_low_deck). The point and its light are
            # the same; only whether the walls' shadow would cover it differs.
            low_walls = (True if low is True and _low_deck_reads(shadow_across_m, resolution_m, top_m=_LOW_TALL_M,
                                                                  half_m=_OPEN_WAGON_HALF_M) else None)
            ctype, rule = _classify_rule(strip, s0, s1, body, float(quiet_nanmean(lit)), tall=tall,
                                         low=low, low_walls=low_walls, sun_left=sun_left, shading=shading, path=path,
                                         resolution_m=resolution_m, flank_glow=flank_glow,
                                         anti_flank=anti_flank, lit_visible=lit_visible)
            a_m = s0 * step + (GAP_M / 2 if s0 != a else 0)
            b_m = s1 * step - (GAP_M / 2 if s1 != b else 0)
            cut_a, cut_b = open_a and s0 == a, open_b and s1 == b
            if cut_a or cut_b:
                # Cars cut by the unobserved stretch are counted where their centre lies
                # (the convention that counts each car once across tiles or gaps), which
                # the image shows when the visible part is at least half the car: half
                # the longest car type the body's look allows (a plain or flat top may
                # be a boxcar as well as a flatcar).
                # The visible part reaches the unobserved stretch: the samples between
                # the run's end and the stretch are the car blurred into the mask's edge.
                if cut_a:
                    a_m = (a - int(np.argmax(~seen[max(0, a - tol):a][::-1]))) * step
                if cut_b:
                    b_m = (b + int(np.argmax(~seen[b:b + tol]))) * step
                body = b_m - a_m
                shown_m = body
                look = _look(strip, s0, s1, float(quiet_nanmean(lit)), sun_left=sun_left, shading=shading, path=path,
                             flank_glow=flank_glow, resolution_m=resolution_m, anti_flank=anti_flank,
                             lit_visible=lit_visible)
                # The same table as _classify's for the longest bodies: a body cut in two
                # by a narrow stretch must not have both halves counted.
                longest = {"open": "gondola", "plain": "boxcar"}.get(look, "locomotive")
                if ((not cut_a or _hidden_run_m(seen, a, -1, step, recorded) >= _WIDE_STRETCH_M)
                        and (not cut_b or _hidden_run_m(seen, b - 1, 1, step, recorded) >= _WIDE_STRETCH_M)):
                    # A stretch of a locomotive's length or more, seen on both sides (a
                    # car showing 6 m or more at both ends of it would be 30 m long or
                    # more), or running to the strip's end under this image's own mask
                    # over its first locomotive's length (the whole hidden part of any
                    # car cut by it lies there, which no other tile shows): there is no
                    # double count to guard against, and the centre-in-view rule is fair
                    # only at the car's own half length. The longest (a locomotive's
                    # 18 m: a few units per 50-70 car train) dropped most cut tank cars
                    # and open wagons whose centre was in view (a 12 m tank car needs 9
                    # of its 12 m seen, so 1 in 4 was counted where 1 in 2 is due). A
                    # barrel takes a tank car's half; a flat or unread top the gondola
                    # class's 13.9 m, not a common car of that look (flat-topped 1520 mm
                    # stock is 14.7-19.6 m): it counts some long cars whose centre is
                    # hidden (review RPCLOUD: 10 of 35 cars added on 128 altgen partly
                    # cloudy scenes), but a boxcar's half found 16 cut cars with their
                    # centre in view where this finds 29.
                    longest = {"open": "gondola", "plain": "boxcar", "cylinder": "tank"}.get(look, "gondola")
                if body < CAR_LENGTHS_M[longest] / 2:
                    continue
                if look == "plain":
                    # Length cannot tell a boxcar from a flatcar here; a top plain to a
                    # tenth is a roof sheet (a flatcar's deck or load shows its edges).
                    ctype, rule = "boxcar", "roof_sheet"
                full = CAR_LENGTHS_M[ctype]
                if body < full and not (cut_a and cut_b):
                    # The hidden end is placed at the car's length.
                    if cut_a:
                        a_m = b_m - full
                    else:
                        b_m = a_m + full
            if (shadows_shown and sun_left is not None and resolution_m <= _MAX_BARE_BED_RES_M
                    and _bare_bed(strip, s0, s1, sun_left, shadow_across_m, lit, path)):
                # Nothing stands here: no shadow where any car's would fall (a track bed
                # unlike the ground beside it: concrete sleepers on asphalt, ballast in snow).
                continue
            score = float(np.clip(0.5 + 0.5 * min(1.0, body / 11.0), 0, 1))
            cars.append((a_m, b_m, ctype, score))
            weak.append(rule in _WEAK_RULES)
            cut_seen.append((cut_a, cut_b, shown_m if (cut_a or cut_b) else b_m - a_m))
    # Double counts go first: a car dropped as the other half of a cut car must not vote.
    kept = [car[4] for car in _without_overlapping_cut_cars([c + (k,) for k, c in enumerate(cars)], cut_seen)]
    typed, from_neighbours = _block_types([cars[k] for k in kept], [weak[k] for k in kept])
    if not provenance:
        return typed
    return [car + ("neighbours" if f else "image",) for car, f in zip(typed, from_neighbours)]


# A lone load on a flat wagon: an ISO 20 ft container is 6.06 m long, 2.44 m wide and
# 2.6 m high, and the 13-9004 wagon (13.7 m over couplers, 12.6 m deck) carries one or two.
# Where the bare deck is within the ballast's colour (a steel or wooden deck 1.3 m up, its
# shadow within a pixel of it under a high sun) only the container is read: a run of
# 5-7 m, which _split_cars drops as shorter than any car. Runs of this length whose
# flanks leave room for a car are read as a container wagon centred on its load (loads
# sit over the bogies' centre or at the deck's ends; centring misplaces an end load by
# 3.4 m, still within IoU 0.5 of a 12.6 m deck).
_LONE_LOAD_M = (5.0, 7.0)
# Read only at pixels coarser than this (m): at _MAX_WIDTH_RES_M or finer a deck 2.87 m
# wide spans four pixels or more and shows its own edges and shadow, so a bare deck that
# is there is read with its load and a lone 5-7 m run is something else (altgen tuning:
# at 0.3-0.75 m, seeds 40-41, 6 such runs off any car for 5 cars found; at 1 m, seeds
# 40-43 and 130-133, 1 off any car for 22 found). The piece read need not be a container
# (a tank's dome and walkway, a hopper's hatch bay do as well: 10 of those 22); the class
# is a fallback (_WEAK_RULES), which coupled neighbours of one class override.
_LONE_LOAD_MIN_RES_M = 0.75   # the value of _MAX_WIDTH_RES_M (defined below)
# Nor at pixels coarser than this (m): all the evidence is at 1.0 m, and coarser the
# anti-sun band _load_stands reads (1.5-2.6 m off the axis) is under one pixel and a 5-7 m
# run only 4-5 pixels, so the shadow test has nothing to read a standing body from.
_LONE_LOAD_MAX_RES_M = 1.0


def _lone_load(all_runs: list[tuple[int, int]], i: int, seen: np.ndarray, step: float,
               open_end: bool) -> tuple[float, float] | None:
    """Start and end (m along the strip) of a container wagon carrying run ``i`` of
    ``all_runs`` as its one load, or None.

    Parameters
    ----------
    all_runs : list of (int, int)
        Occupied runs (start, end sample indices) of the track, in order.
    i : int
        The run read.
    seen : ndarray of bool
        Observed flags per along-track sample.
    step : float
        Along-track sample spacing (m).
    open_end : bool
        The run ends at an unobserved stretch (its length is not the load's).

    Returns
    -------
    (float, float) or None
        The wagon's body (m), ``CAR_LENGTHS_M["flatcar"]`` long, centred on the run and
        kept a coupler gap's half clear of the runs beside it, where the run is
        ``_LONE_LOAD_M`` long, closed, and that room, observed throughout, holds a body
        at least ``_MIN_SEG_M`` long; else None.
    """
    a, b = all_runs[i]
    length = (b - a) * step
    if open_end or not _LONE_LOAD_M[0] <= length < _LONE_LOAD_M[1]:
        return None
    half = CAR_LENGTHS_M["flatcar"] / 2
    mid = 0.5 * (a + b) * step
    lo = all_runs[i - 1][1] * step + GAP_M / 2 if i > 0 else 0.0
    hi = all_runs[i + 1][0] * step - GAP_M / 2 if i + 1 < len(all_runs) else seen.size * step
    a_m, b_m = max(mid - half, lo), min(mid + half, hi)
    if b_m - a_m < _MIN_SEG_M:
        return None
    i0, i1 = int(a_m / step), int(math.ceil(b_m / step))
    if not seen[max(i0, 0):min(i1, seen.size)].all():
        return None
    return a_m, b_m


# A lone load stands up: an ISO 20 ft container on a flat wagon's deck tops out about
# 3.7 m above the ground beside the track (2.59 m box on a deck 1.1-1.35 m up), a tank's
# dome or a hopper's hatch bay read alone at least as high (their bodies 3.5-4.7 m). Its
# shadow falls _LOAD_TOP_M * shadow_across m sideways from its 1.22 m half-width on the
# anti-sun side, shifted along the track as the sun's along-track share puts it. Read
# from the widest body's edge (_HALF_BODY_M) out to that shadow's end plus the blur
# allowed, within the strip. A patch of ground colour, an oil stain or another object's
# shadow lying on the bed has no height and casts none.
# What is tested is weaker than a container's height: the counter's strip ends at +-2.6 m,
# so for any sun below about 69 degrees the band is clipped to 1.5-2.6 m whatever
# _LOAD_TOP_M is, and the test says only that some shadow reaches 1.5-2.6 m off the axis
# on the anti-sun side over the piece. Known pass-throughs: low objects (a 1 m sleeper
# stack passes half the time at sun 55 degrees and always at 34; 0.5 m ones at low sun;
# 5-7 m long low objects on a running line are rare), and ground darkened on the anti-sun
# side only (an oil patch or stain reaching 1.5 m or more out on that side, another
# object's shadow ending at the piece on that side).
_LOAD_TOP_M = 3.7
_LOAD_HALF_M = 1.22
# The reference: the same band along the track, from _LOAD_REF_GAP_M to _LOAD_REF_GAP_M +
# _LOAD_REF_M beyond each end of the piece and of its shadow (the same ground, no body),
# skipping other occupied runs and a metre round them (their bodies and shadows).
_LOAD_REF_GAP_M = 1.5
_LOAD_REF_M = 5.0
# A standing body's shadow darkens the anti-sun band beside it: at 1 m pixels the band
# (1.5 to at most 2.6 m off the axis in the counter's strip) is one to two pixels, partly
# covered by a 1-2.3 m wide shadow and blurred, so the test is loose: it keeps at most
# _LOAD_SHADOW_RATIO of the light the band has beyond the piece's ends, and it is darkened
# more than the sun-side band at the same offsets is (a dark band across the whole
# track, a cloud's or mast's shadow or a change of ground, darkens both sides alike).
# The two bands are picked by |across| in 1.5..hi from the strip's own offsets, which at
# 1 m are -2.6, -2.1, ..., 2.4 (not symmetric): the negative side's band is read at -2.6,
# -2.1, -1.6 and the positive side's at 1.9, 2.4, so the gate's sensitivity depends on
# the sun's side (the -1.6 sample lies nearer the body, in more of its blur and of its
# shadow); not measured which way, and left as is (not mirrored).
# (altgen tuning 40-43, 130-133, 100-107 at 1 m, of the 51 lone loads counted without
# this test: 24 of the 33 that matched a car kept, 16 of the 18 that did not dropped,
# among them all 5 lying off any car, one of them on an empty track.)
_LOAD_SHADOW_RATIO = 0.9
# And the anti-sun band keeps at most _LOAD_SIDE_MARGIN of the sun-side band's own in/out
# ratio. A shadow lying across the whole bed (or a neighbour car's shadow around a flat
# piece) gives two ratios equal up to blur, pixel phase and noise, and without a margin
# passes about half the time; the margin must exceed that scatter of two equally shaded
# one-pixel bands (probe, 1 m pixels at 40 phases, 0.01 noise: whole-bed shadow kept
# 16-23/40 with none, 0/40 with 0.85; a 3.7 m container with its own shadow kept 40/40
# at sun 55 and 34 deg, 23-25/40 at 73 deg, against 24/40 with none).
_LOAD_SIDE_MARGIN = 0.85
# Least share of samples (in each of the four windows) that must be readable (not NaN).
_LOAD_MIN_READ = 0.5


def _load_stands(strip: Strip, a: int, b: int, occ: np.ndarray, sun_left: bool | None,
                 per_m: float, reach_m: float, path: np.ndarray | None) -> bool:
    """Whether the piece of track between samples ``a`` and ``b`` casts a standing body's
    shadow on its anti-sun side: some shadow 1.5 m or more off the axis over the piece,
    darker than the same band beyond its ends, and clearly darker (``_LOAD_SIDE_MARGIN``)
    than the sun side's band is there. The band is sized for a container's height
    (``_LOAD_TOP_M``), but clipped to the strip (+-2.6 m at 1 m) for any sun below about
    69 degrees, so a low object (0.5-1 m) passes at moderate and low sun, and so does
    ground darkened on the anti-sun side only (see the notes above ``_LOAD_TOP_M``).

    Parameters
    ----------
    strip : Strip
        The track's strip (reflectance, per band, across by along; 0.5 m along).
    a, b : int
        The piece's first and past-last samples along the strip.
    occ : ndarray of bool
        Occupied samples of the track (other runs are kept out of the reference).
    sun_left : bool or None
        Whether the sun lies on the strip's positive ``across_m`` side; None: unknown or
        along the track (no side band to read).
    per_m : float
        Sideways shadow (m per m of height, :func:`_shadow_across`); NaN: unknown.
    reach_m : float
        Along-track reach (m, signed) of the tallest car's shadow
        (:func:`_shadow_reach`, for ``_MAX_CAR_HEIGHT_M``); scaled to ``_LOAD_TOP_M``.
    path : ndarray or None
        Path radiance per band (reflectance), subtracted before ratios are taken.

    Returns
    -------
    bool
        True where the anti-sun band beside the piece (from ``_HALF_BODY_M`` to the load's
        shadow end, plus half a metre of blur, within the strip) keeps at most
        ``_LOAD_SHADOW_RATIO`` of its light beyond the piece's ends, and at most
        ``_LOAD_SIDE_MARGIN`` times what the sun-side band (at the mirrored strip offsets
        with the same ``|across|``, which need not be symmetric) keeps of its own; False
        otherwise, and where it cannot be read (sun side
        or elevation unknown, band outside the strip, windows under ``_LOAD_MIN_READ``
        readable): a lone piece is counted only on evidence that something stands there.
    """
    if sun_left is None or not np.isfinite(per_m):
        return False
    step = strip.step_m
    lo = _HALF_BODY_M
    hi = min(_LOAD_HALF_M + _LOAD_TOP_M * abs(per_m) + 0.5, float(np.abs(strip.across_m).max()))
    if hi - lo < step:
        return False
    anti, sun = _side_bands(strip, lo, hi, sun_left)
    if not anti.any() or not sun.any():
        return False
    n = strip.values.shape[2]
    shift = int(round(_LOAD_TOP_M / _MAX_CAR_HEIGHT_M * reach_m / step))
    i0, i1 = max(0, a + shift + 1), min(n, b + shift - 1)    # the piece's shadow, ends blurred
    if i1 - i0 < 2:
        return False
    busy = np.asarray(occ, bool).copy()
    busy[a:b] = False
    pad = int(round(1.0 / step))
    busy = np.convolve(busy.astype(float), np.ones(2 * pad + 1), "same") > 0
    gap, ref = int(round(_LOAD_REF_GAP_M / step)), int(round(_LOAD_REF_M / step))
    lo_end, hi_end = min(a, a + shift), max(b, b + shift)
    out = np.zeros(n, bool)
    out[max(0, lo_end - gap - ref):max(0, lo_end - gap)] = True
    out[min(n, hi_end + gap):min(n, hi_end + gap + ref)] = True
    out &= ~busy
    v = strip.values[:3]
    if path is not None:
        v = v - np.asarray(path[:3], v.dtype)[:, None, None]
    bright = quiet_nanmean(v, axis=0)    # visible brightness, across by along

    def level(rows: np.ndarray, cols) -> float:
        x = bright[rows][:, cols]
        if x.size == 0 or np.isfinite(x).mean() < _LOAD_MIN_READ:
            return float("nan")
        return float(quiet_nanmean(x))

    inside = slice(i0, i1)
    ai, ao, si, so = level(anti, inside), level(anti, out), level(sun, inside), level(sun, out)
    if not (np.isfinite([ai, ao, si, so]).all() and ao > 0 and so > 0 and si > 0):
        return False
    return bool(ai <= _LOAD_SHADOW_RATIO * ao and ai / ao <= _LOAD_SIDE_MARGIN * si / so)


# Widest gap (m) between two detected bodies read as coupled in one train: coupled bodies
# stand 1.0-1.3 m apart (couplers and buffers, GAP_M), and each end read may be off by
# about half a pixel of blur (up to 0.5 m at 1 m pixels); uncoupled cars stand apart.
_COUPLED_GAP_M = 2.0


# Rules of _classify_rule (tags) that give a class without reading it from the image:
# the commonest car of a length on 1520 mm gauge with the height unread (the shadow band
# out of reach or under another track's cars). "short_plain_by_length": an even sheet
# shorter than a boxcar at pixels coarser than _MAX_FULL_TOP_RES_M, where half a pixel
# (0.25-0.5 m) is as much as the gap between a 2.87 m deck and a 3.1-3.3 m roof;
# "short_flat_by_length", "long_flat_by_length": a top with relief across typed by its
# length and texture along (a cut misplaced by a metre or two moves it across the length
# rules, and hoppers' and locomotives' tops overlap in texture along); "no_look": samples
# not finite. Every other rule reads the class from what the image shows (a measured top
# width at 0.3-0.5 m pixels, an ISO container's 2.44 m width, the joint between two
# containers, an open car seen into, a barrel, a height from the shadow, a roof sheet of
# a boxcar's length) and is never overridden by the neighbours.
_WEAK_RULES = frozenset({"short_plain_by_length", "short_flat_by_length", "long_flat_by_length", "no_look"})


def _block_types(cars: list[tuple], weak: list[bool] | None = None) -> tuple[list[tuple], list[bool]]:
    """``cars`` with a lone car typed unlike both its coupled neighbours, which agree,
    given their class, where its own class came from a fallback rule (``weak``, per car:
    its :func:`_classify_rule` tag in ``_WEAK_RULES``; None: every car).

    Freight trains on 1520 mm gauge run largely as blocks or whole trains of one car type
    (unit trains of tank cars, of open wagons for coal and ore, of hoppers, of container
    flats), so a car between two coupled cars of one class is of that class far more
    often than a single car of another type marshalled into the block. Its own look
    misleads most where the rules of :func:`_classify_rule` fall back on the commonest car
    of a length: a cut misplaced by a metre or two (a boxcar read 12-13 m long, the
    gondola class), a height unread at 0.75-1 m pixels. Only a car with a coupled
    neighbour on both sides (bodies within ``_COUPLED_GAP_M``) is changed, and only where
    the two neighbours agree: a block's end car and a car standing alone keep their own
    class. The neighbours' classes are the ones read before any change, and a car next to
    another such lone car keeps its class: a run alternating between two classes (a mixed
    train, or one whose cuts read every other car wrong) is no block with one odd car in
    it, and says nothing about which read is right.

    A locomotive is never changed, nor does a pair of locomotives make a block: a
    mid-train helper or distributed-power unit, a banker behind a loaded train or a
    locomotive run round on a yard track stands between cars of one class, and is the
    class an analyst reads as a train about to move. A car whose class was read from
    what the image shows (any rule outside ``_WEAK_RULES``) keeps it: mixed trains exist
    (a classification yard's tracks are sorted by destination, not by type), and there a
    car's own read is right where its neighbours' agreement is not evidence.

    Parameters
    ----------
    cars : list of (start_m, end_m, type, score, ...)
        Cars in along-track order (m along the strip); further elements are kept.
    weak : list of bool, optional
        Per car, whether its class came from a fallback rule (``_WEAK_RULES``).

    Returns
    -------
    cars : list of tuple
        The same cars, in the same order and of the same shape, with their classes.
    from_neighbours : list of bool
        Per car, whether its class is its neighbours' (changed here).
    """
    if weak is None:
        weak = [True] * len(cars)
    lone = [0 < k < len(cars) - 1
            and cars[k - 1][2] == cars[k + 1][2] != cars[k][2]
            and cars[k][0] - cars[k - 1][1] <= _COUPLED_GAP_M
            and cars[k + 1][0] - cars[k][1] <= _COUPLED_GAP_M for k in range(len(cars))]
    out, changed = list(cars), [False] * len(cars)
    for k, car in enumerate(cars):
        if (lone[k] and weak[k] and not lone[k - 1] and not lone[k + 1]
                and "locomotive" not in (car[2], cars[k - 1][2])):
            out[k] = car[:2] + (cars[k - 1][2],) + car[3:]
            changed[k] = True
    return out, changed


def _without_overlapping_cut_cars(cars: list[tuple[float, float, str, float]],
                                  cut_seen: list[tuple[bool, bool, float]]) -> list[tuple[float, float, str, float]]:
    """``cars`` without the shorter-seen of two cars placed into one unobserved stretch
    from its two sides that would overlap.

    A car cut by an unobserved stretch is placed at its type's full length into it (see
    :func:`_split_cars`). Two cars met from the stretch's two sides both stand there only
    if their bodies fit with a coupler gap between them: seen lengths ``v1``, ``v2`` (m)
    either side of a stretch ``g`` long need ``v1 + g + v2 >= L1 + L2 + GAP_M``. Where
    they do not, the two pieces are at most one car's worth of track (one car cut in its
    middle, or a stretch of shadowed ground read as two car ends, review RRDIR H1: two
    cars overlapping by 6.1 m): the one seen over the longer length is kept.

    Parameters
    ----------
    cars : list of (start_m, end_m, type, score)
        Cars in along-track order (m along the strip).
    cut_seen : list of (bool, bool, float)
        Per car: whether it reaches into an unobserved stretch at its start and at its
        end, and the length (m) of it that was seen.

    Returns
    -------
    list of (start_m, end_m, type, score)
        ``cars`` in the same order, less the dropped ones.
    """
    keep = [True] * len(cars)
    for i in range(len(cars) - 1):
        j = i + 1
        if not (keep[i] and cut_seen[i][1] and cut_seen[j][0]):
            continue
        if cars[i][1] + GAP_M <= cars[j][0]:
            continue
        # Equal seen lengths: the earlier car is kept (every track is read one way,
        # see _reads_reversed, so the choice does not depend on the drawing).
        keep[i if cut_seen[i][2] < cut_seen[j][2] else j] = False
    return [car for car, k in zip(cars, keep) if k]


# The lowest car standing on a track: a bare flat wagon (13-401: deck 1.3 m above the
# rail, 2.87 m wide). Its shadow reaches the least far out of any car's.
_LOWEST_DECK_M = 1.3
_LOWEST_HALF_WIDTH_M = 1.435
# Car bodies stand on bogies: a shadow begins where the body's underside's does, not at
# the body's edge (review of 16264ba, finding 1). A tank car's barrel has open space
# under it (15-1443: 3.0 m across, its axis about 2.9 m above the rail); its shadow
# begins further out than any deck's or floor's: those are 1.1-1.3 m up, and the highest
# on the narrowest body (1.3 m, 1.435 m half-width) begins 1.3 p - 1.435 out, nearer
# than the barrel's 2.9 p - 1.5 sqrt(1 + p**2) for every p over 0.65 (below, both lie
# inside the widest body).
_TANK_AXIS_M = 2.9
_TANK_RADIUS_M = 1.5
# Least width (m) of the band beside a car that every car's shadow must cover for a lit
# band there to say that nothing stands on the track.
_MIN_BARE_BAND_M = 0.3
# Coarsest pixels (m) the band is read at: it lies 1.8-2.6 m off the centreline, and at
# 0.75-1 m pixels a car's blurred edge (a misregistered track's car more so) fills it
# with the body's light mixed with its shadow's, about the ground's brightness (altgen
# tuning scenes: 2 real cars dropped for each false one at 0.75-1 m).
_MAX_BARE_BED_RES_M = 0.5
# Most a band beside a bare bed may exceed the lit ground's brightness: brighter, it
# holds a car body's edge, not ground.
_MAX_BARE_BAND_GLOW = 1.25


def _shadows_shown(refs, path: np.ndarray | None) -> bool:
    """Whether the image shows the sun's shadows: the shadowed ground's colour learnt from
    it (``refs["shadow"]``, from :func:`_empty_track_reference` or
    :func:`_shadow_from_anti_sun_sides`: measured, never assumed) keeps under
    ``_SHADOW_RATIO`` of the lit ground's brightness (``refs["lit"]``), both read above
    the path radiance ``path`` (haze lifts both alike). Under diffuse light (a thin even
    veil, bright overcast) a shadow keeps 0.85-0.9 of the lit ground's light and is not
    learnt, or learnt above that share: False, as where either colour is unknown.
    """
    shadow, lit = np.asarray(refs["shadow"], "float64"), np.asarray(refs["lit"], "float64")
    if shadow.size < 3 or lit.size < 3 or not (np.all(np.isfinite(shadow[:3])) and np.all(np.isfinite(lit[:3]))):
        return False
    off = np.asarray(path[:3], "float64") if path is not None else np.zeros(3)
    sb, lb = float(np.mean(shadow[:3] - off)), float(np.mean(lit[:3] - off))
    return bool(lb > 0 and sb < _SHADOW_RATIO * lb)


def _bare_band(per_m: float) -> tuple[float, float]:
    """Distances (m, from the centreline, anti-sun side) between which the shadow of every
    car type covers the ground, for a shadow falling ``per_m`` metres sideways per metre
    of height (:func:`_shadow_across`); the band is empty (first >= second) where none is.

    A body of half-width w whose underside is h_lo and top h_hi above the ground shades
    from ``h_lo * p - w`` to ``h_hi * p + w`` out (p = ``|per_m|``). The outer end is the
    lowest car's (a bare flat wagon's deck, ``_LOWEST_DECK_M``, ``_LOWEST_HALF_WIDTH_M``);
    the inner end is the furthest out any car's shadow begins: past the widest body
    (``_WIDEST_HALF_BODY_M``, plus 0.1 m) or a tank barrel of radius r whose axis is H up
    (``_TANK_RADIUS_M``, ``_TANK_AXIS_M``; its shadow, a cylinder's, begins
    ``H * p - r * sqrt(1 + p**2)`` out, beyond a deck's or a floor's at every sun).
    """
    p = abs(float(per_m))
    lo = max(_WIDEST_HALF_BODY_M + 0.1, _TANK_AXIS_M * p - _TANK_RADIUS_M * math.hypot(1.0, p))
    return lo, _LOWEST_HALF_WIDTH_M + _LOWEST_DECK_M * p


def _side_bands(strip: Strip, lo: float, hi: float, sun_left: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``strip`` from ``lo`` to ``hi`` metres off the axis on the anti-sun side and
    on the sun side (bool per across row: ``anti``, ``sun``); ``sun_left`` says whether the
    sun lies on the positive ``across_m`` side."""
    a = strip.across_m if sun_left else -strip.across_m
    return (a <= -lo) & (a >= -hi), (a >= lo) & (a <= hi)


def _bare_bed(strip: Strip, s0: int, s1: int, sun_left: bool, per_m: float,
              lit_ground: np.ndarray, path: np.ndarray | None = None) -> bool:
    """Whether the stretch between samples ``s0`` and ``s1``, read as a car, is a bare
    track bed: lit ground on its anti-sun side where every car's shadow would fall.

    Every car casts a shadow sideways past its anti-sun edge, ``h * per_m`` metres for a
    height of h metres (``per_m`` from :func:`_shadow_across`); cars stand on bogies, so
    a shadow begins where the body's underside's does. Within the band every car type's
    shadow covers (:func:`_bare_band`: out to a bare flat wagon's deck's reach, from the
    furthest out that a deck's, a floor's or a tank barrel's shadow begins) and inside
    the strip, the anti-sun band is compared with the same band on the sun side: where
    the sun band is as bright as lit ground (``lit_ground``, the empty track's lit colour
    as recorded; above the path radiance ``path``) and the anti-sun band is at least
    ``_LIT_BAND_RATIO`` of the sun band and as bright as lit ground too (no shadow darker
    than that; it may be brighter than the sun band, a neighbour's shadow on the sun
    side), over the middle two thirds of the stretch, no body stands there. A track bed
    whose centre differs from the ground beside it (concrete sleepers on asphalt, a
    cleared bed in snow) otherwise reads as cars end to end. False where the sun's
    geometry leaves a band under ``_MIN_BARE_BAND_M`` wide (a high sun or one along the
    track; a low one across it, where a barrel's shadow begins beyond the strip), the
    bands are mostly not seen, or either band is brighter than ``_MAX_BARE_BAND_GLOW``
    times the lit ground (a car body's blurred edge, not ground). The counter reads it
    at pixels of ``_MAX_BARE_BED_RES_M`` or finer only, and only in an image that shows
    the sun's shadows (a car's shadow under diffuse light is too faint to tell).
    """
    if not np.isfinite(per_m) or not np.all(np.isfinite(lit_ground)):
        return False
    lo, reach = _bare_band(per_m)
    hi = min(reach, float(np.abs(strip.across_m).max()))
    if hi - lo < _MIN_BARE_BAND_M:
        return False
    anti, sun = _side_bands(strip, lo, hi, sun_left)
    if not anti.any() or not sun.any():
        return False
    n = s1 - s0
    core = slice(s0 + n // 6, s1 - n // 6) if n >= 6 else slice(s0, s1)
    v = strip.values[:3, :, core]
    off = np.asarray(path[:3], "float64") if path is not None else np.zeros(3)
    v = v - off.astype(v.dtype)[:, None, None]
    b = quiet_nanmean(v, axis=0)
    if np.isfinite(b[anti]).mean() < 0.5 or np.isfinite(b[sun]).mean() < 0.5:
        return False
    dark, lit = quiet_nanmean(b[anti]), quiet_nanmean(b[sun])
    ground = float(np.mean(np.asarray(lit_ground[:3], "float64") - off))
    if not (np.isfinite(dark) and np.isfinite(lit) and ground > 0 and lit > 0):
        return False
    return bool(lit >= _LIT_BAND_SHARE * ground and dark >= _LIT_BAND_RATIO * lit
                and dark >= _LIT_BAND_SHARE * ground
                and max(dark, lit) <= _MAX_BARE_BAND_GLOW * ground)


# How near a track's end (m) a piece must begin or end to show that end's bed (see
# _end_bed_pieces): a cut at the strip's first or last sample lies within a sample or
# two of it.
_END_BED_M = 1.5
# Most a piece's colour may differ from a bed seen at two track ends to be that bed, in
# every band, as the log of their ratio (about 15 %; see _end_bed_pieces): the share
# within which a bed corroborated on another track is matched (_CORROBORATING_SHARE).
_END_BED_SHARE = _CORROBORATING_SHARE


def _end_bed_pieces(strips: Mapping[str, Strip], cars: Mapping[str, Sequence[tuple]],
                    sun_sides: Mapping[str, bool | None], lit: np.ndarray, *,
                    skip: frozenset[str] | set[str] = frozenset()) -> dict[str, set[int]]:
    """Indices (per track) of the pieces read as cars that are the yard's bare bed.

    Parameters
    ----------
    strips : mapping of str to Strip
        Each track's samples (reflectance, on the same basis as ``lit``).
    cars : mapping of str to sequence of tuple
        Each track's cars from :func:`_split_cars` (start and end, m along the strip,
        first).
    sun_sides : mapping of str to bool or None
        Per track, whether the sun lies on the positive ``across_m`` side (None: the
        track has no sun side, and its pieces are neither read nor dropped).
    lit : numpy.ndarray
        Per band, the yard's lit ground colour (reflectance).
    skip : set of str
        Tracks whose own bed was learnt (:func:`_with_bed`): read by it, left alone.

    Returns
    -------
    dict of str to set of int
        Per track, the indices into ``cars[track]`` to drop.

    Notes
    -----
    Where no bed is learnt (a high sun leaves no flat deck's shadow to tell a bed from
    a deck, or pixels coarser than ``_BED_MAX_RES_M``), a bed darker or brighter than
    the ground beside it (wooden or concrete sleepers, fouled ballast, a bed cleared of
    snow) reads as cars wherever the track is empty: between cuts of cars and at the
    track's ends. A yard track's ends are where it is most often empty: cars stand
    clear of the switch's fouling point at one end and short of the buffer stop or the
    next switch at the other, so the line drawn from end to end runs past its last
    cars. A yard's tracks are mostly laid alike (see :func:`_with_bed`), so the bed
    shows one colour at the ends of several tracks, while cars standing at two tracks'
    very ends are of one colour only by chance. A piece beginning or ending within
    ``_END_BED_M`` of its track's end, whose anti-sun ground band (1.95-2.6 m off the
    axis, as :func:`_occupancy` reads it) is lit (``_SUN_LIT_SHARE`` of the lit
    ground's brightness: no shadow there), and whose centre colour matches such a
    piece at another track's end within ``_END_BED_SHARE`` in every band (the log of
    their ratio), shows the bed; every piece of the image whose centre matches that colour as closely, its
    anti-sun band lit as well, is that bed, at the tracks' ends or between cuts of cars.
    Two pieces at the two ends of one track do not show it: a unit train of like cars
    may fill one track end to end. A car whose anti-sun band lies in its own shadow is
    never dropped, whatever its colour. One whose band is lit (a bare flat wagon; a
    walled car under a sun along the track, or one blurred at coarse pixels) and whose
    colour matches the bed is dropped with it: that is this rule's risk.
    """
    lit = np.asarray(lit, dtype="float64")
    if not (np.all(np.isfinite(lit)) and np.all(lit > 0)):
        return {}
    lit_b = float(np.mean(lit))
    pieces = []  # (track, index, centre colour, at the track's end)
    for tid, strip in strips.items():
        sun_left = sun_sides.get(tid)
        if sun_left is None or tid in skip or strip.along_m.size < 2:
            continue
        centre, _ = _zones(strip)
        a = strip.across_m if sun_left else -strip.across_m
        anti = (a <= -1.95) & (a >= -2.6)
        if not anti.any():
            continue
        first, last = float(strip.along_m[0]), float(strip.along_m[-1] + strip.step_m)
        for k, car in enumerate(cars.get(tid, ())):
            s0, s1 = float(car[0]), float(car[1])
            # Its middle only: a blurred neighbour's end or a shadow tail at its ends.
            core = (strip.along_m >= s0 + 1.0) & (strip.along_m <= s1 - 1.0)
            if core.sum() < 2:
                continue
            colour = quiet_nanmean(strip.values[:, centre][:, :, core], axis=(1, 2))
            anti_b = float(quiet_nanmean(strip.values[:, anti][:, :, core]))
            if not (np.all(np.isfinite(colour)) and np.all(colour > 0) and np.isfinite(anti_b)):
                continue
            if anti_b < _SUN_LIT_SHARE * lit_b:
                continue
            at_end = s0 <= first + _END_BED_M or s1 >= last - _END_BED_M
            pieces.append((tid, k, colour, at_end))

    def alike(x: np.ndarray, y: np.ndarray) -> bool:
        return bool(np.all(np.abs(np.log(x / y)) <= _END_BED_SHARE))

    beds = [c for t, _, c, end in pieces
            if end and any(e and u != t and alike(c, d) for u, _, d, e in pieces)]
    bare: dict[str, set[int]] = {}
    for tid, k, colour, _ in pieces:
        if any(alike(colour, b) for b in beds):
            bare.setdefault(tid, set()).add(k)
    return bare


# Unobserved samples within this distance of a run's end (m) cut the run there.
_GAP_EDGE_M = 1.0
# Shortest visible part of a car cut by an unobserved stretch that can hold its centre:
# half the shortest car (a 12 m tank car).
_MIN_OPEN_RUN_M = 6.0


# Unobserved stretch (m) from which a car cut by it is counted on a common car's half length
# for its look, not the longest car's: a locomotive's length, so a car seen at both ends of
# it would be 30 m or more (6 m or more seen on each side). Also the length of a stretch
# running to the strip's end that must lie on the image's own data before it counts as
# this image's mask (_hidden_run_m): a cut car hides at most 14 m of itself (20 m long, 6 m
# seen), so its hidden part lies within that length, with room for the gap tolerance.
_WIDE_STRETCH_M = CAR_LENGTHS_M["locomotive"]


def _hidden_run_m(seen: np.ndarray, i: int, direction: int, step: float,
                  recorded: np.ndarray | None = None) -> float:
    """Length (m) of the unobserved stretch that a run ending at sample ``i`` meets in
    ``direction`` (+1: after it, -1: before it), within ``_GAP_EDGE_M`` of ``i``.

    Zero where the stretch runs to the strip's end, unless its first ``_WIDE_STRETCH_M``
    lie on the image's own data (``recorded``, per along-track sample; None: nowhere),
    so are hidden by this image's mask (a cloud, its shadow), which hides them in every
    tile of the image. Otherwise (off the frame, nodata another image or tile may fill)
    what lies beyond may show the car's other part, and the convention that counts each
    car once across tiles keeps the longest car's half there. A car cut by the stretch
    is at most 20 m long with 6 m or more of it in view, so its hidden part (14 m at
    most) lies within those first metres: nothing past them can show it.
    """
    tol = max(1, int(round(_GAP_EDGE_M / step)))
    j = i + direction
    while 0 <= j < seen.size and seen[j] and abs(j - i) <= tol:
        j += direction
    first = j
    n = 0
    while 0 <= j < seen.size and not seen[j]:
        j += direction
        n += 1
    if not 0 <= j < seen.size:
        near = first + direction * np.arange(min(n, int(math.ceil(_WIDE_STRETCH_M / step - 1e-9))))
        if recorded is None or not np.all(recorded[near]):
            return 0.0
    return n * step


def _recorded_along(strip: Strip, pix: np.ndarray, cloud: np.ndarray, grid: GridSpec) -> np.ndarray:
    """Whether each centreline sample of ``strip`` lies on the image's own data: its
    pixel (the nearest, as :func:`_masked` reads a mask) inside ``grid`` with every band
    of ``pix`` (band, row, col; NaN where nodata or not ``valid``) finite, or on ``cloud``
    (row, col; not ``valid`` but recorded). Only the strip's pixels are read.

    Nodata must be NaN in the image (as :func:`changedet.io.read_raster` reads a file's
    nodata and the pipeline's resampling leaves it): pixels only flagged in ``valid``
    with finite values cannot be told from a cloud and count as recorded.
    """
    k = int(np.argmin(np.abs(strip.across_m)))
    rows, cols = grid.rowcol(strip.x[k], strip.y[k])
    # Integer rows and cols are pixel centres: the nearest pixel is the one within half
    # a pixel (inside the frame as map_coordinates(order=0) rounds; the outer half pixel
    # beyond the border pixels' centres counts as on the image too, which no 18 m test
    # can turn).
    r, c = np.floor(rows + 0.5).astype(int), np.floor(cols + 0.5).astype(int)
    inside = (r >= 0) & (r < cloud.shape[0]) & (c >= 0) & (c < cloud.shape[1])
    r, c = np.where(inside, r, 0), np.where(inside, c, 0)
    return inside & (cloud[r, c] | np.all(np.isfinite(pix[:, r, c]), axis=0))


def _shadow_lead(dim: np.ndarray, reach_m: float, step: float) -> tuple[float, float]:
    """Metres of a run's (start, end) that may be its end car's shadow on the track.

    That shadow is dark and lies on the shadow-side end (``reach_m``'s sign), before
    the first bright sample within ``|reach_m|``. Where the whole reach is dark, shadow
    cannot be told from a black body: none is allowed.
    """
    if reach_m == 0:
        return 0.0, 0.0
    # A metre more for the blur of the shadow's and the body's edges.
    n_max = min(int(round((abs(reach_m) + 1.0) / step)), dim.size)
    if n_max == 0:
        return 0.0, 0.0
    end = dim[:n_max] if reach_m < 0 else dim[::-1][:n_max]
    # The run's first metre may be the blurred edge of the shadow, not yet dark.
    first = np.flatnonzero(end[:max(1, int(round(1.0 / step)))])
    bright = np.flatnonzero(~end[first[0]:]) + first[0] if first.size else np.empty(0, int)
    lead = float(bright[0] * step) if bright.size else 0.0
    return (lead, 0.0) if reach_m < 0 else (0.0, lead)


# A run's own pitch (:func:`_run_pitch`) is read where its look repeats along the run:
# the autocorrelation of the centre's colour at the pitch at least _MIN_PITCH_CORR of its
# variance, over windows of _PITCH_WINDOW_M (m) holding at least _MIN_PITCH_REPEATS
# pitches; pitches are searched over the DP's segment lengths, _MIN_SEG_M to _MAX_SEG_M
# (m), where no multiple of one car pitch is another (2 x 10.5 > 20) - but multiples of
# shorter repeats (roof ribs, hatches, post shadows) are, so rivals are checked (see
# _window_pitch). Before it, the colour's
# mean over _PITCH_DETREND_M is removed: a change of block (another car type, another
# colour) is a step, which correlates at every lag.
_MIN_SEG_M = 10.5
_MAX_SEG_M = 20.0
_MIN_PITCH_CORR = 0.5
_MIN_PITCH_REPEATS = 2.4
_PITCH_WINDOW_M = 50.0
_PITCH_DETREND_M = 15.0
_PITCH_WINDOW_STEP_M = 5.0
# The share of a run counted as shadowed (below _pitch_dim_level) from which its pitch is
# not read.
_MAX_PITCH_DIM_SHARE = 0.5
# Repeats from _MIN_TEXTURE_M (m; roof ribs, hatches) up are compared with the pitch: one
# that correlates within _PITCH_RIVAL_CORR (of the variance) of it, more than
# _PITCH_RIVAL_M (m) from it, leaves the pitch unread (see _window_pitch).
_MIN_TEXTURE_M = 2.0
# How far (share of the way from the shadowed ground's brightness to the lit ground's)
# above shadowed ground a run's sample still counts as shadowed (see _pitch_dim_level).
_PITCH_SHADOW_MARGIN = 0.25
_PITCH_LAG_STEP_M = 0.1
_PITCH_RIVAL_CORR = 0.15
_PITCH_RIVAL_M = 1.5


def _pitch_dim_level(lit: np.ndarray, shadow: np.ndarray | None) -> float:
    """The brightness (band mean, reflectance) below which a run's sample counts as
    shadowed for :func:`_run_pitch`'s guard in :func:`_split_cars`.

    Half the lit ground's brightness, or, where the track's shadowed ground is known and
    brighter than that (haze, thin overcast, path radiance: skylight lights shadows),
    that ground's brightness plus ``_PITCH_SHADOW_MARGIN`` of the way up to the lit
    ground's: a neighbour train's shadow is then not told from a train by a fixed half.

    Parameters
    ----------
    lit : ndarray, shape (bands,)
        The lit empty track's colour (reflectance).
    shadow : ndarray, shape (bands,), or None
        The shadowed empty track's colour (reflectance); NaN or None where unknown.

    Returns
    -------
    float
        The level (reflectance, band mean).
    """
    lit_b = float(quiet_nanmean(np.asarray(lit, float)))
    level = 0.5 * lit_b
    if shadow is not None:
        sh = np.asarray(shadow, float)
        if sh.size and np.all(np.isfinite(sh)):
            sh_b = float(np.mean(sh))
            if sh_b < lit_b:
                level = max(level, sh_b + _PITCH_SHADOW_MARGIN * (lit_b - sh_b))
    return level


def _ground_repeats(ground: np.ndarray, pitch: np.ndarray, step: float) -> bool:
    """Whether the ground beside a run repeats at the run's pitch as well as a train.

    Parameters
    ----------
    ground : ndarray, shape (bands, n)
        Mean colour of the ground beside the track per along-track sample (reflectance).
    pitch : ndarray, shape (n,)
        The run's pitch per sample (m; NaN: none), from :func:`_run_pitch`.
    step : float
        Along-track sample spacing (m).

    Returns
    -------
    bool
        True where the ground's colour (less its mean over ``_PITCH_DETREND_M``)
        correlates at the run's median pitch (within a sample) by ``_MIN_PITCH_CORR`` of
        its variance or more.
    """
    fin = np.isfinite(pitch)
    if not fin.any():
        return False
    g = np.asarray(ground, float)
    n = g.shape[1]
    lag = int(round(float(np.median(pitch[fin])) / step))
    if lag + 1 >= n:
        return False
    k = max(1, int(round(_PITCH_DETREND_M / step)))
    g = g - ndimage.uniform_filter1d(g, k, axis=1, mode="nearest")
    var = float(np.sum(g * g)) / n
    if not np.isfinite(var) or var <= 1e-10:
        return False
    r = max(float(np.sum(g[:, :-q] * g[:, q:])) / (n - q) for q in (lag - 1, lag, lag + 1)) / var
    return r >= _MIN_PITCH_CORR


def _window_pitch(x: np.ndarray, step: float) -> float:
    """The pitch (m) at which one window's detrended colour repeats, or NaN.

    Parameters
    ----------
    x : ndarray, shape (bands, n)
        The centre's colour less its running mean (reflectance), one window of a run.
    step : float
        Along-track sample spacing (m).

    Returns
    -------
    float
        The pitch in metres (see :func:`_run_pitch`), NaN where none repeats.
    """
    n = x.shape[1]
    lo, hi = int(np.floor(_MIN_SEG_M / step)), int(np.ceil(_MAX_SEG_M / step))
    hi = min(hi, int(n / _MIN_PITCH_REPEATS) + 1)
    if hi - lo < 2 or hi + 1 >= n:
        return float("nan")
    var = float(np.sum(x * x)) / n
    # No variation to speak of (below a 1e-5 reflectance spread): nothing repeats.
    if not np.isfinite(var) or var <= 1e-10:
        return float("nan")
    # Lags are read on a grid of at most _PITCH_LAG_STEP_M (the colour interpolated
    # linearly): at a coarse step a pitch between two samples loses much of its
    # correlation, and a texture's multiple that falls on a sample may then outscore it.
    up = max(1, int(np.ceil(step / _PITCH_LAG_STEP_M - 1e-9)))
    fine = step / up
    if up > 1:
        u = np.arange((n - 1) * up + 1) / up
        x = np.stack([np.interp(u, np.arange(n), band) for band in x])
    m = x.shape[1]
    size = 1 << int(np.ceil(np.log2(2 * m)))
    spec = np.fft.rfft(x, size, axis=1)
    acf = np.fft.irfft(np.sum(np.abs(spec) ** 2, axis=0), size)[:m]
    short = max(1, int(np.floor(_MIN_TEXTURE_M / fine)))
    lo_f, hi_f = int(np.floor(_MIN_SEG_M / fine)), min(int(np.ceil(hi * step / fine)), m - 2)
    lags = np.arange(short - 1, hi_f + 2)
    # Unbiased: each lag's products are averaged over the pairs it has.
    r = acf[lags] / (m - lags) / (acf[0] / m)
    peaks = [i for i in range(1, lags.size - 1) if r[i] >= r[i - 1] and r[i] >= r[i + 1]]
    in_range = [i for i in peaks if lags[i] >= lo_f]
    if not in_range:
        return float("nan")
    at = max(in_range, key=lambda i: (r[i], -i))
    best = r[at]
    if best < _MIN_PITCH_CORR:
        return float("nan")
    # Only a car's own repeat is a pitch. Texture inside a car (roof ribs, hatches,
    # corrugations, containers) or shadows across the train (posts, masts) repeat too,
    # and their multiples and beats fall among car lengths: where a repeat shorter than
    # a car, or another lag among car lengths, correlates nearly as well, which one is
    # the cars' is not told by colour alone, and no pitch is read (the catalogue's
    # lengths decide, as without this reading).
    rival = _PITCH_RIVAL_M / fine
    for i in peaks:
        if i != at and abs(lags[i] - lags[at]) > rival and r[i] >= best - _PITCH_RIVAL_CORR:
            return float("nan")
        # A repeat shorter than a car that holds at each of its multiples up to the pitch
        # (a comb of ribs) is texture, and the pitch one of its multiples.
        if lags[i] < lo_f and r[i] >= _MIN_PITCH_CORR:
            k = int(round(lags[at] / lags[i]))
            if k >= 2 and abs(lags[at] - k * lags[i]) * fine <= _PITCH_RIVAL_M / 3:
                near = max(1, int(round(0.2 / fine)))
                if all(r[max(0, j * lags[i] - near - lags[0]):j * lags[i] + near + 1 - lags[0]].max()
                       >= _MIN_PITCH_CORR for j in range(1, k)):
                    return float("nan")
    den = r[at - 1] - 2 * r[at] + r[at + 1]
    off = 0.5 * (r[at - 1] - r[at + 1]) / den if den < 0 else 0.0
    pitch = (lags[at] + float(np.clip(off, -0.5, 0.5))) * fine
    if n * step < _MIN_PITCH_REPEATS * pitch or not _MIN_SEG_M <= pitch <= _MAX_SEG_M:
        return float("nan")
    return float(pitch)


def _run_pitch(centre: np.ndarray, step: float) -> np.ndarray:
    """The pitch (m, car body plus coupler gap) at which an occupied run's look repeats,
    per along-track sample.

    Trains are made up of blocks of identical cars (unit trains, blocks of one type
    between marshalling yards), so along a block the centre's colour repeats car by car:
    end walls, coupler gaps, domes, hatches, loads. The colour (all bands, less its mean
    over ``_PITCH_DETREND_M``) is autocorrelated over windows of ``_PITCH_WINDOW_M``
    (the whole run where shorter), every ``_PITCH_WINDOW_STEP_M``, at lags from
    ``_MIN_SEG_M`` to ``_MAX_SEG_M``; a window's highest local maximum there is its
    pitch, refined between samples by a parabola, where it reaches ``_MIN_PITCH_CORR``
    of the variance and the window holds ``_MIN_PITCH_REPEATS`` pitches, and where no
    rival repeat correlates nearly as well: no other lag from ``_MIN_TEXTURE_M`` up,
    more than ``_PITCH_RIVAL_M`` off, within ``_PITCH_RIVAL_CORR`` of it, and no repeat
    shorter than a car that holds at each of its multiples up to the pitch (roof ribs,
    hatches); lags are read on a grid of
    ``_PITCH_LAG_STEP_M`` (the colour interpolated between samples). Each sample
    takes the pitch of the nearest window centre that has one within half a window;
    mixed cars, too short a run or a featureless one give NaN.

    Parameters
    ----------
    centre : ndarray, shape (bands, n)
        Mean colour across the track's centre per along-track sample (reflectance).
    step : float
        Along-track sample spacing (m).

    Returns
    -------
    ndarray, shape (n,)
        The pitch in metres at each sample, NaN where none repeats.
    """
    x = np.asarray(centre, float)
    n = x.shape[1]
    out = np.full(n, np.nan)
    if n * step < _MIN_PITCH_REPEATS * _MIN_SEG_M:
        return out
    k = max(1, int(round(_PITCH_DETREND_M / step)))
    x = x - ndimage.uniform_filter1d(x, k, axis=1, mode="nearest")
    w = min(n, int(round(_PITCH_WINDOW_M / step)))
    stride = max(1, int(round(_PITCH_WINDOW_STEP_M / step)))
    starts = list(range(0, n - w + 1, stride))
    if starts[-1] != n - w:
        starts.append(n - w)
    centres, pitches = [], []
    for s0 in starts:
        p = _window_pitch(x[:, s0:s0 + w], step)
        if np.isfinite(p):
            centres.append(s0 + w / 2)
            pitches.append(p)
    if not centres:
        return out
    centres, pitches = np.array(centres), np.array(pitches)
    idx = np.arange(n)
    near = np.abs(idx[:, None] - centres[None, :])
    j = np.argmin(near, axis=1)
    ok = near[idx, j] <= w / 2
    out[ok] = pitches[j[ok]]
    return out


def _best_cuts(evidence: np.ndarray, step: float, dark: np.ndarray | None = None, *,
               lead_m: float = 0.0, trail_m: float = 0.0, open_start: bool = False,
               open_end: bool = False, run_pitch_m: np.ndarray | None = None) -> list[int]:
    """Cut positions (indices into the run) that split it into plausible cars.

    Dynamic programming over cut positions: every segment (car body plus a coupler gap)
    must be 10.5-20 m long; segments near a real car pitch are preferred, and cuts on
    strong evidence (gap, colour edge) are rewarded. Where cars are black, couplers
    between them barely show, so a prior decides: black freight cars are
    overwhelmingly tank cars (oil and chemicals), whose pitch is preferred there.
    The first segment may also hold up to ``lead_m`` and the last up to ``trail_m`` of
    a car's own shadow cast along the track: their length is matched to a pitch
    anywhere within that tolerance. With ``open_start`` (``open_end``) the run is cut
    there by an unobserved stretch: its first (last) segment is the visible part of a
    car, of any length from 3 m up to a pitch. ``run_pitch_m`` (one per sample, m, from
    :func:`_run_pitch`; NaN: none) is the pitch at which the run's look repeats there:
    a segment also fits the pitch read at its middle, free of the black-car prior (it is
    measured, not assumed), and a segment mostly of black bodies (``dark``) that pitch
    alone. The catalogue holds the long tank cars' pitches too
    (``_LONG_TANK_PITCHES_M``), under the black-car prior. A segment that repeats the
    previous segment's length (within ``_BLOCK_PITCH_TOL_M``) pays
    ``_BLOCK_PITCH_REPEAT_SHARE`` of the length cost, and one that does not pays
    ``_BLOCK_PITCH_CHANGE_COST`` where the gap between them is weak: trains run in blocks
    of identical cars, so along a block the pitch repeats.
    """
    n = evidence.size
    names = list(CAR_LENGTHS_M)
    pitches = np.array([CAR_LENGTHS_M[t] + GAP_M for t in names] + list(_LONG_TANK_PITCHES_M))
    tank = np.array([t == "tank" for t in names] + [True] * len(_LONG_TANK_PITCHES_M))
    own = np.full(n, np.nan) if run_pitch_m is None else np.asarray(run_pitch_m, float)
    if own.shape != (n,):
        raise ValueError(f"run_pitch_m has shape {own.shape}, the run {n} samples: pass one pitch (m, NaN "
                         f"for none) per sample of the run, as _run_pitch gives")
    # Where a pitch of the run's own is read, a segment's length cost is the lower of the
    # catalogue's and the own pitch's, which like the tank's carries no black-car cost;
    # on a segment mostly of black bodies (``dark``, at least _OWN_PITCH_DARK_SHARE) the
    # own pitch's alone: the cut evidence inside a black barrel is mostly noise (a dome,
    # ladders, the barrel's ends), and with the short tank's pitch beside the measured one
    # at no cost, cuts on that noise split a block of long tank cars into more, shorter
    # ones. On lit bodies the catalogue stays beside it: a pitch read off repeats inside
    # the cars (a locomotive's fans) must not hold the cuts. Elsewhere the catalogue's
    # alone, as before (a scalar, to keep the DP's inner loop).
    has_own = bool(np.isfinite(own).any())
    own_list = own.tolist()   # plain floats: cheap to read per segment in the loop below
    lo, hi = int(10.5 / step), int(20.0 / step)
    lo_open = int(3.0 / step)
    # Too short for two cars; a run cut by an unobserved stretch may hold the visible
    # parts of two cars, 3 m each at least.
    if n * step <= (2 * lo_open * step if (open_start or open_end) else 20.5 + lead_m + trail_m):
        return []
    ext_lead, ext_trail = int(round(lead_m / step)), int(round(trail_m / step))
    dark_cum = np.concatenate([[0.0], np.cumsum(dark if dark is not None else np.zeros(n))])
    # Rewards saturate (one very strong edge must not outweigh the length prior), but
    # smoothly: next to a bright car the cue stays high for a metre either side of a gap,
    # and its peak, where the gap is, must still earn the most.
    ev = 12.0 * (1.0 - np.exp(-np.clip(evidence, 0, None) / 12.0))
    # Trains run in blocks of identical cars (a block of oil tanks, of hoppers), and along
    # a block the pitch (length over couplers) repeats. So the DP's state at a cut is also
    # the length of the segment that ends there (in samples). A segment within
    # _BLOCK_PITCH_TOL_M of the previous segment's length repeats the block's pitch, which
    # the cuts before it have measured: it pays only _BLOCK_PITCH_REPEAT_SHARE of the
    # catalogue's length cost (the first car of a block pays it in full). Any other length
    # pays _BLOCK_PITCH_CHANGE_COST, scaled by how weak the gap evidence at the cut between
    # the two is (exp(-evidence / _BLOCK_PITCH_EVIDENCE)): a clear coupler gap places the
    # cut by itself, and a change of block there costs next to nothing. Where gaps hardly
    # show, cuts that drift along a block (phase slips of half a car, one car read 16 m and
    # the next 11 m, a block of 10.87 m hoppers cut at the catalogue's 13.1 m) cost more
    # than cuts at one repeating pitch. The 10.5-20 m bounds stay: no car is cut into two
    # repeating halves (two halves of even the longest catalogue car, 20 m, are under
    # 10.5 m), and a long car's interior edges (a container joint, a gondola's end walls)
    # give lengths that alternate, not repeat. The run's first segment, and an end segment
    # whose length is not the car's (a shadow cast along the track, a car cut by an
    # unobserved stretch), are free of the term. Known costs (review RBLOCK): where types
    # alternate car by car and the gaps hardly show, cars are cut at one averaged length
    # (the count stays, positions and types suffer); 24.5 m articulated units are cut in
    # two.
    tol = max(1, int(round(_BLOCK_PITCH_TOL_M / step)))
    kmax = hi + ext_lead + ext_trail + 2
    change = (_BLOCK_PITCH_CHANGE_COST
              * np.exp(-np.clip(evidence, 0, None) / _BLOCK_PITCH_EVIDENCE)).tolist()
    inf = float("inf")
    # best[j][L]: least cost of cuts up to j whose last segment is L samples long (L = 0:
    # one whose length says nothing of the pitch); low[j]: the least over all L, at
    # low_at[j]; back[j][L]: (i, how the state at i was chosen: 0 free, 1 a repeat of L,
    # 2 a change of pitch) for the backtrack.
    best: list = [None] * (n + 1)
    low = [inf] * (n + 1)
    low_at = [-1] * (n + 1)
    back: list = [None] * (n + 1)
    best[0] = [0.0] + [inf] * kmax
    low[0], low_at[0] = 0.0, 0
    half_gap = int(round(GAP_M / 2 / step))
    repeat_share = _BLOCK_PITCH_REPEAT_SHARE
    for j in range(1, n + 1):
        i0 = max(0, j - hi - ext_lead - (ext_trail if j == n else 0))
        i1 = j - (lo_open if (open_end and j == n) else lo)
        if open_start and j - lo_open >= 0 and j - lo < 0:
            i1 = 0   # only the visible part of a car cut at the start fits
        if i1 < 0:
            continue
        row = [inf] * (kmax + 1)
        brow = {}
        for i in range(i0, i1 + 1):
            if low[i] == inf:
                continue
            cut_seg = (open_start and i == 0) or (open_end and j == n)
            if (j - i) < lo and not cut_seg:
                continue
            ext = (lead_m if i == 0 else 0.0) + (trail_m if j == n else 0.0)
            if j - i > hi + int(round(ext / step)):
                continue
            seg = (j - i) * step + (GAP_M / 2 if i == 0 else 0) + (GAP_M / 2 if j == n else 0)
            dark_share = (dark_cum[j] - dark_cum[i]) / (j - i)
            type_cost = np.where(tank, 0.0, 3.0 * dark_share)
            # Distance from each pitch to the lengths the car may have: seg less 0-ext of shadow.
            # A car cut by an unobserved stretch may be shorter than any pitch.
            short = 0.0 if cut_seg else np.clip(pitches - seg, 0, None)
            miss = np.clip(seg - ext - pitches, 0, None) + short
            length_cost = float(np.min(miss ** 2 * 0.8 + type_cost))
            if has_own:
                p = own_list[(i + j - 1) // 2]
                if p == p:   # not NaN
                    short_own = 0.0 if cut_seg else max(p - seg, 0.0)
                    miss_own = max(seg - ext - p, 0.0) + short_own
                    own_cost = 0.8 * miss_own * miss_own
                    length_cost = (own_cost if dark_share >= _OWN_PITCH_DARK_SHARE
                                   else min(length_cost, own_cost))
            cut_reward = ev[j] if j < n else 0.0
            # This segment's length in samples (coupler gap included), 0 where it does not
            # tell the pitch (shadow along the track, cut by an unobserved stretch) and for
            # the run's first segment: a locomotive heads most trains, and one longer than
            # the 20 m bound (road units of 21-23 m) would otherwise be cut into two halves
            # that repeat each other (review RBLOCK).
            free = cut_seg or i == 0 or (j == n and trail_m > 0)
            length = 0 if free else min(kmax, (j - i) + (half_gap if i == 0 else 0)
                                        + (half_gap if j == n else 0))
            # From the state at i: anything after a free segment (or at the run's start);
            # a previous segment within tol of this one's length (a repeat: the block's
            # pitch, measured, pays repeat_share of the catalogue's length cost); any
            # other at the cost of a change of pitch.
            prev_row = best[i]
            if i == 0:
                base, how = length_cost, 0
            elif length == 0:
                base, how = low[i] + length_cost, 3
            else:
                base, how = prev_row[0] + length_cost, 0
                other = low[i] + change[i] + length_cost
                if other < base:
                    base, how = other, 2
                rep = min(prev_row[max(1, length - tol):length + tol + 1]) + repeat_share * length_cost
                if rep < base:
                    base, how = rep, 1
            c = base - cut_reward + 0.3
            if c < row[length]:
                row[length] = c
                brow[length] = (i, how)
        best[j] = row
        back[j] = brow
        # Ties go to the longest last segment (the earliest cut), as the DP without the
        # state chose them.
        m = min(row)
        if m < inf:
            k = kmax - row[::-1].index(m)
            low[j], low_at[j] = m, k
    if best[n] is None or low[n] == inf:
        return []
    cuts, j, state = [], n, low_at[n]
    while True:
        i, how = back[j][state]
        if i <= 0:
            break
        cuts.append(i)
        prev_row = best[i]
        if how == 0:
            state = 0
        elif how == 1:
            lo_l = max(1, state - tol)
            window = prev_row[lo_l:state + tol + 1]
            m = min(window)
            state = lo_l + len(window) - 1 - window[::-1].index(m)
        else:
            state = low_at[i]
        j = i
    return sorted(cuts)


# Lengths over couplers (m) of long tank cars: LPG tanks (about 14.8 m) and long
# light-product tanks (about 16.6 m; the altgen generator's catalogue values, not checked
# against a 1520 mm fleet register), besides the common 12.02 m oil tank whose pitch
# CAR_LENGTHS_M gives. A black body is most often a tank car (the
# black-car prior of _best_cuts), and so is a block of long black cylinders: held to the
# short tank's pitch alone, such a block was cut into more, shorter cars straddling the
# real couplers.
_LONG_TANK_PITCHES_M = (14.8, 16.6)
# Least share of a segment's samples that are black bodies (``dark`` in _best_cuts) for
# the run's own pitch to replace the catalogue's in its length cost: most of it.
_OWN_PITCH_DARK_SHARE = 0.5

# A block's pitch (see _best_cuts): segments within _BLOCK_PITCH_TOL_M (m) of the previous
# one's length repeat it (cars of one type differ by millimetres; the cuts' own scatter on
# the sample grid is a sample or so) and pay _BLOCK_PITCH_REPEAT_SHARE of the catalogue's
# length cost; any other length costs _BLOCK_PITCH_CHANGE_COST (the DP's units: 0.8 per
# square metre of length miss, 0.3 per car, up to 12 of cut reward), times
# exp(-evidence / _BLOCK_PITCH_EVIDENCE) at the cut between them (evidence in the empty
# track's colour spreads). Altgen rail tuning, seeds 120-123: a share of 0.25 gained F1
# 0.871 -> 0.877 (merged cars 98 -> 78; 0.875 once the first segment was made free); 1.0
# (the change cost alone) gained nothing, 0.1 less than 0.25 (F1 0.875, MAPE 0.106).
_BLOCK_PITCH_TOL_M = 0.5
_BLOCK_PITCH_CHANGE_COST = 1.0
_BLOCK_PITCH_EVIDENCE = 4.0
_BLOCK_PITCH_REPEAT_SHARE = 0.25


def _sun_across(line: LineString, azimuth_deg: float | None, elevation_deg: float | None) -> float:
    """|sin| of the angle between the track and the sun's azimuth: NaN when the sun is
    unknown or shines within about 12 degrees of the track (no side to speak of)."""
    if azimuth_deg is None or elevation_deg is None:
        return float("nan")
    across = _across_share(line, azimuth_deg)
    return across if across >= 0.2 else float("nan")


def _across_share(line: LineString, azimuth_deg: float) -> float:
    """|sin| of the angle between the track (its first to its last point) and the sun's
    azimuth (degrees clockwise from north)."""
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    d = np.array([x1 - x0, y1 - y0]) / max(math.hypot(x1 - x0, y1 - y0), 1e-9)
    az = math.radians(azimuth_deg)
    return abs(float(d[0] * math.cos(az) - d[1] * math.sin(az)))


def _shadow_across(line: LineString, azimuth_deg: float | None, elevation_deg: float | None) -> float:
    """How far (m) a shadow falls sideways from the track per metre of height above the
    ground: the across-track share of the sun's direction over the tangent of its
    elevation. NaN when the sun is unknown or shines nearly along the track."""
    across = _sun_across(line, azimuth_deg, elevation_deg)
    if not np.isfinite(across):
        return float("nan")
    return across / math.tan(math.radians(min(max(elevation_deg, 1.0), 89.0)))


# Heights above the ground beside the track (m): a flat wagon's deck (1.3-1.4 m above
# the rail, which sits about 0.2 m above the ballast shoulder) is at most _DECK_HEIGHT_M;
# the lowest car with walls or a roof (an open wagon, 3.5 m above the rail) at least
# _LOW_TALL_M. Half a car body's width (m), and the blur allowed at a shadow's edge (m,
# the default; the counter allows half a pixel, 0.2 m at least). The ground is read out to
# at least _HEIGHT_BAND_M off the centreline (neighbour tracks are 4.8 m or more apart, so
# their cars' bodies start 3.2 m or more away), further where the sun puts the band
# further out (_height_band), with other tracks' occupied stretches masked.
_DECK_HEIGHT_M = 1.6
_LOW_TALL_M = 3.4
_HALF_BODY_M = 1.5
_SHADOW_EDGE_BLUR_M = 0.4
_HEIGHT_BAND_M = 3.1
# Widest the height band is read (m off the centreline): a 3.4 m wall's shadow under a
# 20-degree sun across the track ends 10.8 m out; past about 8 m the ground beside a yard
# (roads, sheds) is rarely bare, and a neighbour's cars are masked anyway.
_MAX_HEIGHT_BAND_M = 8.0
# Half-width (m) of the zone around another track's centreline masked where it is
# occupied: half the widest body (1.66 m) plus the blur of its edge, a pixel (bilinear
# sampling and the sensor's spread) and at least 0.34 m (see _other_body_half).
_WIDEST_HALF_BODY_M = 1.66
_MIN_BODY_BLUR_M = 0.34
_OTHER_BODY_HALF_M = _WIDEST_HALF_BODY_M + _MIN_BODY_BLUR_M


def _other_body_half(resolution_m: float) -> float:
    """Half-width (m) masked around another track's centreline where a car may stand:
    half the widest body plus a pixel of blur (``resolution_m``, m), 0.34 m at least."""
    return _WIDEST_HALF_BODY_M + max(_MIN_BODY_BLUR_M, float(resolution_m))
# Least share of a band's samples along a car's core that must be readable (not another
# track's car, not unobserved) on each side for the height cue to speak.
_MIN_BAND_SHARE = 0.3


def _height_band(per_m: float) -> float:
    """Half-width (m) of the strip read for the height cue: out to where the lowest
    walled car's shadow ends (``per_m`` from :func:`_shadow_across`), at least
    ``_HEIGHT_BAND_M`` and at most ``_MAX_HEIGHT_BAND_M``."""
    if not np.isfinite(per_m):
        return _HEIGHT_BAND_M
    return float(np.clip(_HALF_BODY_M + _LOW_TALL_M * per_m, _HEIGHT_BAND_M, _MAX_HEIGHT_BAND_M))


def _seen_empty(strip: Strip, refs, occ: np.ndarray, min_contrast: float) -> np.ndarray:
    """Along-track positions confirmed empty: seen, not occupied, and the centre within
    ``min_contrast`` spreads of the lit empty track's colour (ground in shadow may hide
    a dark car that was missed)."""
    centre, _ = _zones(strip)
    mean = quiet_nanmean(strip.values[:, centre, :], axis=1)
    d = np.sqrt(quiet_nanmean(((mean - refs["lit"][:, None]) / refs["lit_sd"][:, None]) ** 2, axis=0))
    if "bed" in refs:
        # Or within them of the track's own empty bed (see _with_bed).
        d = np.fmin(d, np.sqrt(quiet_nanmean(((mean - refs["bed"][:, None]) / refs["bed_sd"][:, None]) ** 2,
                                             axis=0)))
    return np.isfinite(d) & (d <= min_contrast) & ~np.asarray(occ, bool)


def _without_other_cars(wide: Mapping[str, Strip], strips: Mapping[str, Strip], occ: Mapping[str, np.ndarray],
                        grid: GridSpec, shade_side: Mapping[str, tuple[bool, float]] | None = None
                        ) -> dict[str, Strip]:
    """``wide`` with NaN wherever a sample falls on another track's occupied stretch
    (within :func:`_other_body_half` of its centreline: half the widest body plus a
    pixel of blur) or on the ground its cars shade. ``occ`` flags, per track, where a
    car may stand (the counter passes every stretch not seen empty, so a car it missed
    is masked too; see :func:`_seen_empty`).

    Neighbour tracks are 4.8-5.3 m apart: a band read 3-8 m off a centreline lies on the
    next track, where a car's roof or a dark car's paint would read as this car's
    shadow (or hide it), and beyond it, where that car's own shadow does (under a 24
    degree sun a 4.2 m car on the anti-sun neighbour made a flat wagon read tall).
    ``shade_side`` gives, per track, whether the sun is on its left and how far (m off
    its centreline, on the other side) its tallest car's shadow reaches; without it only
    the bodies are masked. Where the next track is empty, its ballast is ground like any
    other and is read. The zones are painted on a raster of the strips' bounding box
    (the samples and the midpoints between them, each on the pixel it falls in, so an
    oblique track leaves no unpainted pixels between its samples).
    """
    def rowcol(s):
        r, c = grid.rowcol(s.x, s.y)
        return np.asarray(r, "float64"), np.asarray(c, "float64")

    body_half = _other_body_half(grid.resolution)
    placed = {tid: rowcol(w) for tid, w in wide.items()}
    rr = [r[np.isfinite(r)] for r, _ in placed.values()]
    cc = [c[np.isfinite(c)] for _, c in placed.values()]
    if not rr or not sum(x.size for x in rr):
        return dict(wide)
    r0 = max(int(math.floor(min(float(x.min()) for x in rr if x.size))) - 1, 0)
    c0 = max(int(math.floor(min(float(x.min()) for x in cc if x.size))) - 1, 0)
    r1 = min(int(math.ceil(max(float(x.max()) for x in rr if x.size))) + 2, grid.shape[0])
    c1 = min(int(math.ceil(max(float(x.max()) for x in cc if x.size))) + 2, grid.shape[1])
    if r1 <= r0 or c1 <= c0:
        return dict(wide)
    label = np.zeros((r1 - r0, c1 - c0), np.int16 if len(strips) < 2 ** 15 else np.int32)
    index = {tid: k for k, tid in enumerate(strips, start=1)}
    for tid, s in strips.items():
        k = index[tid]
        o = np.asarray(occ[tid], bool)
        if not o.any():
            continue
        # The wide strip reaches the shadow zone; same line and step, so same positions.
        src = wide[tid] if tid in wide and wide[tid].values.shape[2] == o.size else s
        zone = np.abs(src.across_m) <= body_half
        if shade_side is not None and tid in shade_side:
            sun_left, reach = shade_side[tid]
            a = src.across_m if sun_left else -src.across_m
            zone |= (a <= 0) & (a >= -reach)
        if not zone.any():
            continue
        z = zone[:, None] & o[None, :]
        pts = [(src.x[z], src.y[z])]
        # Midpoints between neighbouring samples (across, along, diagonal): points half a
        # step apart land on every pixel the zone covers, however the track runs.
        for sa, sb in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
                       ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                       ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None)))):
            both = z[sa] & z[sb]
            pts.append((0.5 * (src.x[sa] + src.x[sb])[both], 0.5 * (src.y[sa] + src.y[sb])[both]))
        r, c = grid.rowcol(np.concatenate([p[0] for p in pts]), np.concatenate([p[1] for p in pts]))
        r, c = np.asarray(r, "float64") - r0, np.asarray(c, "float64") - c0
        ok = np.isfinite(r) & np.isfinite(c)
        # ``rowcol`` counts from pixel edges: the pixel a point falls in is the floor.
        ri, ci = np.floor(r[ok]).astype(int), np.floor(c[ok]).astype(int)
        inside = (ri >= 0) & (ri < label.shape[0]) & (ci >= 0) & (ci < label.shape[1])
        label[ri[inside], ci[inside]] = k
    if not label.any():
        return dict(wide)
    out = {}
    for tid, w in wide.items():
        k = index.get(tid, -1)
        r, c = placed[tid]
        r = np.clip(np.floor(np.nan_to_num(r, nan=-1.0)).astype(int) - r0, 0, label.shape[0] - 1)
        c = np.clip(np.floor(np.nan_to_num(c, nan=-1.0)).astype(int) - c0, 0, label.shape[1] - 1)
        lab = label[r, c]
        hit = (lab != 0) & (lab != k)
        values = np.where(hit[None], np.nan, w.values).astype(w.values.dtype)
        out[tid] = Strip(values, w.along_m, w.across_m, w.x, w.y, w.step_m)
    return out


def _found_cars_in_own_shadow(unseen: Mapping[str, Strip], found: Mapping[str, Strip],
                              shade_side: Mapping[str, tuple[bool, float]]) -> dict[str, Strip]:
    """Each track's wide strip from ``unseen`` (other tracks masked wherever not seen
    empty), but on its own anti-sun side within its shadow reach (``shade_side``: sun on
    the left, reach in m off the centreline, as for :func:`_without_other_cars`) from
    ``found`` (masked only where cars were found). Tracks without a sun geometry keep
    ``unseen``.

    A neighbour track in this track's cars' shadow reads as shadowed ground, not the lit
    ground's colour, so it is never "seen empty" beside a car; masked as a possible car it
    would blank the band where that car's shadow falls, and the height cue with it.
    """
    out = {}
    for tid, u in unseen.items():
        if tid not in shade_side or tid not in found:
            out[tid] = u
            continue
        sun_left, reach = shade_side[tid]
        a = u.across_m if sun_left else -u.across_m
        zone = (a <= 0) & (a >= -reach)
        values = np.where(zone[None, :, None], found[tid].values, u.values).astype(u.values.dtype)
        out[tid] = Strip(values, u.along_m, u.across_m, u.x, u.y, u.step_m)
    return out


# Reach (m, either side of a car) of the same track's empty stretches whose band is the
# reference for the car's, and the least length of them (m) to read it from: a car's
# length, so the mean is over as much ground as the car's own band.
_EMPTY_REF_REACH_M = 60.0
_MIN_EMPTY_REF_M = 12.0
# Shadowed ground keeps only skylight, a fifth to a half of the sunlit ground's light;
# the same ground lit keeps about all of it. The midpoint between them decides.
_SHADOW_RATIO = 0.6
# A band is lit ground when it keeps this share of the lit ground's brightness (ballast
# and yard ground vary by about a quarter); the anti-sun band is as lit as the sun band
# when within this ratio of it.
_LIT_BAND_SHARE = 0.75
_LIT_BAND_RATIO = 0.85


def _core_brightness(strip: Strip, s0: int, s1: int, path: np.ndarray | None) -> np.ndarray:
    """Visible brightness (reflectance above the path radiance ``path``, per band; None for
    none), mean of the three visible bands, across by along over the middle two thirds of
    the body between samples ``s0`` and ``s1`` (its ends blur into the coupler gaps).

    Haze adds the same path radiance to shadow and sun, so shadow tests read the ratio of
    the light the ground reflects above it (a 0.3 shadow ratio reads 0.6-0.8 in haze).
    """
    n = s1 - s0
    core = slice(s0 + n // 6, s1 - n // 6) if n >= 6 else slice(s0, s1)
    v = strip.values[:3, :, core]
    if path is not None:
        v = v - np.asarray(path[:3], v.dtype)[:, None, None]
    return quiet_nanmean(v, axis=0)


def _visible_above_path(colour: np.ndarray, path: np.ndarray | None) -> float:
    """Mean of the three visible bands of ``colour`` (reflectance) above the path radiance
    ``path`` (per band; None for none)."""
    return float(np.mean(np.asarray(colour[:3], "float64")
                         - (np.asarray(path[:3], "float64") if path is not None else 0.0)))


def _tall(strip: Strip, s0: int, s1: int, sun_left: bool, per_m: float, *,
          blur_m: float = _SHADOW_EDGE_BLUR_M, path: np.ndarray | None = None,
          lit_ground: np.ndarray | None = None, empty: np.ndarray | None = None) -> bool | None:
    """Whether the body between samples ``s0`` and ``s1`` stands at least a wall's height
    (``_LOW_TALL_M``) above the ground, read from the width of its shadow.

    A body of height h casts its shadow ``h * per_m`` metres sideways past its anti-sun
    edge (``per_m`` from :func:`_shadow_across`). Between where a flat wagon's deck
    shadow would end and where the lowest walled car's would, the ground on the anti-sun
    side is lit beside a flat wagon and shadowed beside a tall car; it is compared with
    the same ground, equally far out, on the sun side (same ground, lit), so the
    ground's own colour does not matter. True for a shadow there; False where both
    bands are as bright as lit ground (``lit_ground``, the empty track's lit colour) and
    alike (a lit anti-sun band beside a sun band darkened by a neighbour's shadow says
    nothing); None where the sun's geometry leaves no such band inside the strip, the
    band is mostly not seen or lies on another track's cars (NaN in ``strip``), or
    neither holds. Brightness is read above the path radiance ``path`` (haze).

    3-8 m out the two sides need not be the same ground (an edge track beside a road or
    grass): with ``empty`` (per along-track sample, the same track seen empty, from
    :func:`_seen_empty`) covering at least ``_MIN_EMPTY_REF_M`` within
    ``_EMPTY_REF_REACH_M`` of the car, the anti-sun band there, not the sun band, is the
    lit reference (review of 20f604f, finding 2) where at least ``_MIN_BAND_SHARE`` of
    that band is read and the sun band there, where read, is within ``_LIT_BAND_RATIO``
    of the sun band beside the car (the same ground along the track; else None). The sun
    band beside the car is still required: without it a ground change along the track or
    a dark car missed on the anti-sun neighbour reads as a shadow.
    """
    if not np.isfinite(per_m):
        return None
    lo = _HALF_BODY_M + _DECK_HEIGHT_M * per_m + blur_m
    hi = min(_HALF_BODY_M + _LOW_TALL_M * per_m - blur_m, float(np.abs(strip.across_m).max()))
    anti, sun = _side_bands(strip, lo, hi, sun_left)
    if hi - lo < 0.2 or not anti.any() or not sun.any():
        return None
    b = _core_brightness(strip, s0, s1, path)   # visible brightness (across, along)
    # Both bands, also with an empty stretch's reference: without the sun band beside the
    # car nothing says the reference is this car's ground (grass beside the car, gravel
    # where the track is empty; a dark car missed on the anti-sun neighbour reads as a
    # shadow against a lit reference) (review of the session 19 change, finding 2).
    if np.isfinite(b[anti]).mean() < _MIN_BAND_SHARE or np.isfinite(b[sun]).mean() < _MIN_BAND_SHARE:
        return None   # mostly another track's cars or unobserved
    dark, lit = quiet_nanmean(b[anti]), quiet_nanmean(b[sun])
    if not (np.isfinite(dark) and np.isfinite(lit) and lit > 0):
        return None
    if empty is not None:
        # 3-8 m out the two sides need not be the same ground (an edge track beside a
        # road, grass on one side, gravel on the other): where the same track stands
        # empty nearby (seen, its centre lit ground), the same band there is the
        # reference, the ground without this car's shadow.
        near = np.zeros(strip.values.shape[2], bool)
        reach = int(round(_EMPTY_REF_REACH_M / strip.step_m))
        near[max(0, s0 - reach):s1 + reach] = True
        near &= np.asarray(empty, bool)
        if near.sum() * strip.step_m >= _MIN_EMPTY_REF_M:
            ve = strip.values[:3][:, :, near]
            if path is not None:
                ve = ve - np.asarray(path[:3], ve.dtype)[:, None, None]
            be = quiet_nanmean(ve, axis=0)
            # Read from as much of its band as the car's own (a few samples left between
            # masked cars are a blurred car end as likely as ground).
            if np.isfinite(be[anti]).mean() >= _MIN_BAND_SHARE:
                ref = quiet_nanmean(be[anti])
                if np.isfinite(be[sun]).mean() >= _MIN_BAND_SHARE:
                    # The sun band, unshaded by the car, is the same ground beside the
                    # car and at the empty stretch when as alike as two lit bands
                    # (``_LIT_BAND_RATIO``); else the ground changes along the track and
                    # neither side's band is this car's reference.
                    sun_ref = quiet_nanmean(be[sun])
                    if not (np.isfinite(sun_ref) and sun_ref > 0
                            and min(lit, sun_ref) >= _LIT_BAND_RATIO * max(lit, sun_ref)):
                        return None
                if np.isfinite(ref) and ref > 0:
                    lit = ref
    if dark < _SHADOW_RATIO * lit:
        return True
    if lit_ground is None or not np.all(np.isfinite(lit_ground)):
        return None
    ground = _visible_above_path(lit_ground, path)
    # Both bands lit as open ground is: no tall body's shadow reaches the band. (A lit
    # anti-sun band beside a sun band darkened by a neighbour's shadow says nothing.)
    if ground > 0 and lit >= _LIT_BAND_SHARE * ground and dark >= _LIT_BAND_RATIO * lit:
        return False
    return None


# A bare flat wagon's deck (13-401, 13-4012: 2.87 m wide) stands 1.1-1.35 m above the
# ground beside the track (deck 1.3-1.4 m above the rail, less on worn springs, the rail
# 0.2 m above the ballast shoulder); a roofed body (boxcar, covered hopper: 3.2-3.3 m wide)
# stands at least 4.0 m (4.0-4.7 m). Half-widths (m) of the deck and of the roof, and the
# deck's top and the lowest roof's height (m), for the one-sided shadow test of _low_deck.
_BARE_DECK_HALF_M = 1.44
_BARE_DECK_TOP_M = 1.35
_ROOF_HALF_M = 1.65
_MIN_ROOF_TOP_M = 4.0
# Half-width (m) of an open wagon's body for the same test read against its walls
# (``_LOW_TALL_M`` high): 12-132 and 12-9853 bodies are 3.1-3.2 m wide over the walls;
# the narrower end, so the point is read only where the lowest walls would shadow it.
_OPEN_WAGON_HALF_M = 1.55


def _low_deck_reads(per_m: float, resolution_m: float, *, top_m: float = _MIN_ROOF_TOP_M,
                    half_m: float = _ROOF_HALF_M) -> bool:
    """Whether :func:`_low_deck`'s point (a pixel past a bare deck's shadow on the anti-sun
    side, ``per_m`` metres of shadow sideways per metre of height, pixels of
    ``resolution_m``) lies at least half a pixel (the blur) inside the shadow of the lowest
    body ``top_m`` high and ``half_m`` half-wide (m): only there does its light tell the two."""
    x = _BARE_DECK_HALF_M + _BARE_DECK_TOP_M * per_m + resolution_m
    return bool(half_m + top_m * per_m >= x + 0.5 * resolution_m)


def _low_deck(strip: Strip, s0: int, s1: int, sun_left: bool, per_m: float, *,
              resolution_m: float, path: np.ndarray | None = None,
              lit_ground: np.ndarray | None = None, top_m: float = _MIN_ROOF_TOP_M,
              half_m: float = _ROOF_HALF_M) -> bool | None:
    """Whether the body between samples ``s0`` and ``s1`` is as low as a bare flat wagon's
    deck, read from one point of ground on its anti-sun side (a one-sided shadow test).

    A deck ``_BARE_DECK_TOP_M`` high casts its shadow to ``_BARE_DECK_HALF_M +
    _BARE_DECK_TOP_M * per_m`` m off the centreline; a roof at least ``_MIN_ROOF_TOP_M``
    high casts its own to ``_ROOF_HALF_M + _MIN_ROOF_TOP_M * per_m`` m. The ground one
    pixel past the deck's shadow end is read on the anti-sun side. Unlike :func:`_tall`,
    only that side is read, so the sun side may hold a neighbour's cars. A neighbour's
    shadow, or ground darker than the track's bed, can only make the point read dark,
    never lit, so neither makes a roof read low.

    Parameters
    ----------
    strip : Strip
        The wide height-cue strip (reflectance; another track's cars and their shadows
        NaN), sampled across out to at least the point read.
    s0, s1 : int
        The body's first and past-last samples along the strip.
    sun_left : bool
        Whether the sun lies on the strip's positive ``across_m`` side.
    per_m : float
        Sideways shadow (m per m of height, :func:`_shadow_across`).
    resolution_m : float
        Pixel size (m): the blur allowed past the deck's shadow end.
    path : ndarray or None
        Path radiance per band (reflectance), subtracted from the point and the lit ground.
    lit_ground : ndarray or None
        The empty track's lit colour per band (reflectance).
    top_m, half_m : float
        Height and half-width (m) of the lowest body the test must tell from a deck:
        the point is read only where that body's shadow would cover it. Default the
        lowest roof (``_MIN_ROOF_TOP_M``, ``_ROOF_HALF_M``); an open wagon's walls
        (``_LOW_TALL_M``, ``_OPEN_WAGON_HALF_M``) are lower, so fewer sun geometries speak.

    Returns
    -------
    bool or None
        True where the point keeps at least ``_LIT_BAND_SHARE`` of the lit ground's
        brightness and at most its inverse (lit ground: nothing as tall as a roof
        there); False where it keeps under ``_SHADOW_RATIO`` of it (shadowed). None
        where the sun's geometry puts the point less than half a pixel inside the lowest
        roof's shadow (a lit point would not tell a roof from a deck) or outside the
        strip, where the point is mostly not readable (under ``_MIN_BAND_SHARE`` of it),
        or where the reading lies between the two.
    """
    if (not np.isfinite(per_m) or not np.isfinite(resolution_m) or lit_ground is None
            or not np.all(np.isfinite(lit_ground))):
        return None
    if not _low_deck_reads(per_m, resolution_m, top_m=top_m, half_m=half_m):
        return None
    x = _BARE_DECK_HALF_M + _BARE_DECK_TOP_M * per_m + resolution_m
    a = strip.across_m if sun_left else -strip.across_m
    # The samples across within half a pixel beyond the point (0.5 m apart: one or two).
    point = (a <= -x) & (a >= -(x + 0.5 * resolution_m))
    if not point.any():
        return None
    b = _core_brightness(strip, s0, s1, path)[point]
    if np.isfinite(b).mean() < _MIN_BAND_SHARE:
        return None
    ground = _visible_above_path(lit_ground, path)
    got = quiet_nanmean(b)
    if not (np.isfinite(got) and ground > 0):
        return None
    if got > ground / _LIT_BAND_SHARE:
        # Far brighter than lit ground varies (about a quarter, _LIT_BAND_SHARE): not
        # ground but a body, a pale car of another track the mask missed, or snow, and
        # it says nothing of this car's shadow. (Session 41, altgen 150-153: the one
        # boxcar read low there read 1.67 times the lit ground.)
        return None
    if got >= _LIT_BAND_SHARE * ground:
        return True
    if got < _SHADOW_RATIO * ground:
        return False
    return None


# Between the longest deck of a flat wagon shorter than 14.8 m (13-401: 13.4 m; loaded
# with a container or timber it is as tall as a boxcar) and the shortest boxcar body on
# 1520 mm gauge (11-217: 13.8 m).
_MIN_BOXCAR_BODY_M = 13.6
# Shortest body (m) only 80 ft flat wagons have (13-4012, 13-9004M: 18.5 m).
_MIN_LONG_FLAT_BODY_M = 18.0
# Shortest body (m) typed a locomotive from its length: a shunter's section (TEM2,
# ChME3: 16.9-17.2 m over couplers) with its cut placed well.
_MIN_LOCOMOTIVE_BODY_M = 16.9
# Shortest body (m) typed from length as a long car (boxcar, or locomotive from 16.9 m)
# unless its look is unambiguous: the longest 13-401 deck plus a misplaced cut.
_MIN_LONG_BODY_M = 14.8


def _classify(strip: Strip, s0: int, s1: int, body_m: float, lit_b: float = float("nan"), **kw) -> str:
    """Type of the body between samples ``s0`` and ``s1`` (``body_m`` long, m): the class
    of :func:`_classify_rule`, which documents the rules and the keywords ``kw``."""
    return _classify_rule(strip, s0, s1, body_m, lit_b, **kw)[0]


def _classify_rule(strip: Strip, s0: int, s1: int, body_m: float, lit_b: float = float("nan"), *,
                   tall: bool | None = None, low: bool | None = None, low_walls: bool | None = None,
                   sun_left: bool | None = None,
                   shading: float = float("nan"),
                   path: np.ndarray | None = None, resolution_m: float = float("nan"),
                   flank_glow: float = float("nan"),
                   anti_flank: tuple[float, float] | None = None,
                   lit_visible: float | None = None) -> tuple[str, str]:
    """Type from body length, then from the look of the body across the track, and
    the rule that decided it (a tag: see ``_WEAK_RULES``).

    Locomotives and boxcars are longest (18 and 15.7 m against 12-14 m), but a cut
    misplaced by a metre or two (a coupler hidden in shadow) makes an open car or a
    boxcar look that long, so the look is read at every length and overrides length
    where it is unambiguous: an open car seen into (a gondola) has its interior below
    its rims, or a flat top darker than half the lit ballast (``lit_b``: bulk loads,
    a floor shaded by its walls); a locomotive's roof carries equipment (fans,
    exhausts, a cab), while a boxcar's roof is one plain sheet, within about a tenth of
    its brightness across the car. Among the shorter cars length is not enough (a
    container on a flatcar is 12.2 m, the length of a tank car): a tank is a cylinder,
    whose shading changes by a quarter or more of its brightness across the top
    whatever the sun's position (a Lambertian cylinder seen within +-40 degrees of its
    crest), and with the sun across the track it is brighter on its sun-facing half
    (``sun_left``, ``shading``, ``flank_glow``: see :func:`_look`). A brighter flat top is a deck or a
    container on it: a flatcar, unless its shadow shows a tall body (``tall``, from
    :func:`_tall`): then a plain top at least a boxcar's length is a boxcar's roof
    (shorter: a container on a flat wagon) and a textured one an open wagon's load or a
    covered hopper's hatches (the gondola class). Where the height is not read
    (``tall`` None), a plain sheet stays a flatcar where its width is read (pixels of
    ``_MAX_FULL_TOP_RES_M`` or finer) and a textured top takes the
    commonest car of its length on 1520 mm gauge (an open wagon or hopper below a
    boxcar's length, a boxcar from it), and a plain sheet of a boxcar's length at least
    ``_MIN_FULL_TOP_M`` wide (:func:`_top_width`: a roof over a 3.1-3.3 m body, wider
    than a flat wagon's 2.87 m deck) is a boxcar; a plain top shorter than that as wide,
    tall or of unread height, is the gondola class (a covered hopper's roof, an open
    wagon's even load), and so is a narrower plain top of unread height textured along
    (from ``_TEXTURED_ALONG``: a load's heaps seen inside the walls, a hopper's hatches;
    a bare deck and a single container's roof are even end to end; not one varying by
    one step only, :func:`_stepped_along`; a loaded flat wagon's packages and a container
    wagon with an empty slot or three boxes vary along too and are misread the gondola
    class, a cost the altgen scenes, with bare decks only, do not measure); all three
    width rules only where pixels (``resolution_m``, m) are ``_MAX_FULL_TOP_RES_M`` or
    finer. Coarser, where no width tells a deck from a roof, a plain sheet of unread
    height takes the commonest car of its length too. Lengths only some stock has decide
    first: a cylinder of a boxcar's length or more that is even along (no dome, platform or
    walkway) is a boxcar's cambered roof (up to a locomotive's length, or at any length
    when vetted); otherwise a cylinder is a tank car up to the 15-150's length (vetted by
    its brighter sun-facing half, at any length: a longer body is a barrel with its cut
    misplaced), and a plain or open top of 18 m or more is an 80 ft flat wagon. A plain or textured top as wide as an ISO container
    (2.44 m, :func:`_top_width`; every 1520 mm freight car with a top at full width is
    3.1-3.3 m) and even out to its shoulders (:func:`_shoulder_step`; a locomotive's fan
    band or hood is as narrow but its shoulders differ; at pixels of
    ``_MAX_CONTAINER_SHOULDER_RES_M`` (0.5 m) or finer they step by
    ``_MAX_CONTAINER_SHOULDER_STEP`` at most, a heaped load's falling away) is a
    container on a flat wagon, read where pixels (``resolution_m``) are 0.75 m or finer,
    unless it is textured along (from ``_TEXTURED_ALONG``) in more than one step
    (:func:`_one_step` leaving ``_MIN_HEAPED_SHARE`` or more: a load's heaps, a hopper's
    hatches; session 51), when the rules below decide.
    Along the car (:func:`_along_texture`; even under ``_EVEN_ALONG``, textured from
    ``_TEXTURED_ALONG``), a top not textured along and even out to its shoulders is a
    roof sheet at a locomotive's length: a boxcar's, not a locomotive's (whose fans and
    cab texture it). A "flat" top of a boxcar's length textured
    along (a covered hopper's hatches and sloped end bays, an open wagon's heaps) is the
    gondola class (a 19-752 grain hopper, 14.7 m over couplers, is as long as the shorter
    boxcars: length does not tell them apart), unless its shadow says it has no walls
    (``tall`` False). Between the two: a tall "flat" top stays a boxcar only when even
    (the gondola class from ``_EVEN_ALONG``), an unread-height one is a boxcar unless
    textured (the boxcar up to ``_TEXTURED_ALONG``), and from 14.8 m a "flat" or a plain
    top is a boxcar unless textured (a plain one, even across, textured along is a
    hopper's hatched roof or a load levelled across: the gondola class, unless it varies
    by one step only, :func:`_stepped_along`: a long shadow's edge over a roof; a roof
    textured along by other shade, snow patches, patched panels or roof hatches is
    misread the gondola class: see the comment at that rule).

    A cylinder whose anti-sun flank is as dark as only a barrel's (under ``anti_flank[0]``,
    ``_BARREL_ANTI_FLANK`` where the sun parts it from a roof,
    :func:`_anti_flank_share`, at pixels of ``_CREST_BLUR_RES_M`` or coarser; ``anti_flank``
    and ``lit_visible``: see :func:`_look`) is a tank car at any length, whether or not the
    sun-half ratio vets it and however even along.

    A top read "open" but even end to end (under ``_EVEN_ALONG``) where pixels
    (``resolution_m``) are ``_MAX_FULL_TOP_RES_M`` (0.5 m) or finer, read at least
    ``_MIN_FULL_TOP_M`` wide and ``_MIN_LONG_BODY_M`` or longer, is a dark boxcar roof
    (tag ``"even_dark_roof"``), unless the shadow reads a bare deck (``low`` True or
    ``tall`` False: no roof stands there). Evenness tells a roof only from a heaped load
    (a load tipped from a chute or grab lies in heaps a few metres apart, which vary along
    at that scale). A level load (coal or ore trimmed flat at loading) is as even as a roof
    sheet and is kept out by length alone: open wagon bodies are 12.7-13.5 m (13.9 m over
    couplers), and ``_MIN_LONG_BODY_M`` is the longest of them read with a cut misplaced
    by a metre. A covered hopper is kept out only by the texture of its hatches and sloped
    end bays. So, as with the pale-roof rules above, a level-loaded dark open wagon read
    14.8 m or longer, and a dark covered hopper whose roof spans its ends with hatches the
    roof's colour (19-7017: 15.9 m), are misread boxcars, a cost the altgen scenes (heaped
    loads only, dark hatches on every hopper) do not measure.

    A locomotive section's roof is textured along unevenly (:func:`_uneven_roof`: the
    cab at one end, the cooling fans over the other; at pixels of ``_MAX_BAND_RES_M`` or
    finer the fan band, darker than its shoulders over one half, :func:`_band_halves`;
    coarser the halves' brightness, :func:`_half_asymmetry`): a "flat" top textured along
    (from ``_TEXTURED_ALONG``) read so is a locomotive from
    ``_MIN_LOCOMOTIVE_SECTION_BODY_M`` (a section's body between the coupler gaps, shorter
    than ``_MIN_LOCOMOTIVE_BODY_M``; tag ``"uneven_halves"``; session 47, the fan band
    session 50). From ``_MIN_LOCOMOTIVE_BODY_M`` (session 50) a "flat" top textured
    along but not read so is no locomotive either: the gondola class (a hopper's or open
    wagon's top read long, container boxes); where its height reads no walls (``tall``
    False), it is even along, or the test is not read, the length rule stands. A roof
    with small fans or a light grille differs little between its halves and is missed.
    A cylinder not vetted by its sun-lit half from ``_MIN_LOCOMOTIVE_BODY_M`` (session 50)
    is a tank car read long where it is textured along (from ``_TEXTURED_ALONG``: a
    barrel's dome, manhole platform and walkway; tag ``"cylinder_by_length"``) and its
    crest is not markedly darker than its shoulders (:func:`_crest_relief` from
    ``_MIN_BARREL_CREST``); even along, or dark down the middle (a hood, a fan band), it
    stays a locomotive by length.

    A plain or flat top shorter than ``_MIN_LONG_BODY_M`` that the rules above give the
    gondola class, textured along (from ``_TEXTURED_ALONG``) only by one step near mid-car
    between two even plateaus and narrower than a walled body where its width is read
    (:func:`_container_joint`: two 20 ft containers on a flat wagon), is the flatcar class.
    An even top keeps the rules above: an open wagon's levelled load (trimmed coal, ore,
    stone, sand) is as even along as a roof sheet. Except for a "flat" top of unread
    height shorter than a boxcar (the commonest-car fallback of :func:`_short_top_rule`):
    even along (under ``_EVEN_ALONG``) it is a flat wagon's deck with a container on it
    (the flatcar class; tag ``"even_short_flat"``), not the gondola class, where pixels
    are coarser than ``_MAX_WIDTH_RES_M`` and the top is not dark (coal, ore), unless it is
    read (:func:`_top_width`) at least ``_MIN_ROOF_WIDTH_COARSE_M`` (2.75 m) wide, wider
    than an ISO container reads at 1 m: then it spans a roofed body's full width
    (3.25-3.3 m) and is a boxcar's roof read short (tag ``"even_short_roof"``), except
    where ``low`` is True (:func:`_low_deck`: the ground a pixel past a bare deck's short
    shadow on the anti-sun side is lit, so no roof stands there: a pale bare deck, which
    reads as wide at 1 m, stays a flat wagon).

    A top read "open" whose one-sided shadow test read against an open wagon's walls
    (``low_walls`` True: :func:`_low_deck` with ``top_m`` ``_LOW_TALL_M``, the ground a
    pixel past a bare deck's shadow lit where the lowest walls would shadow it) and whose
    height is not read tall is a flat wagon's dark deck (tag ``"open_low_deck"``); None
    (not read) or False keeps the rules below. ``low`` is the same test against the lowest
    roof (``_MIN_ROOF_TOP_M``), which speaks for more sun geometries.
    """
    look = _look(strip, s0, s1, lit_b, sun_left=sun_left, shading=shading, path=path, flank_glow=flank_glow,
                 resolution_m=resolution_m, anti_flank=anti_flank, lit_visible=lit_visible)
    if body_m >= _MIN_LONG_FLAT_BODY_M and look in ("plain", "open"):
        # No boxcar (11-280: 16.5 m) or open wagon (12.7-13.5 m) of the 1520 mm fleet is
        # this long; 80 ft flat wagons (13-4012, 13-9004M: 18.5 m) are, bare, loaded or
        # carrying containers. A locomotive's roof shows its fans ("flat").
        return "flatcar", "long_flat_wagon"
    if look == "open" and low_walls is True and tall is not True:
        # Read "open" (a top darker than the ground blurred beside it, or than half the lit
        # ballast) but no walls stand there: the ground a pixel past a bare deck's short
        # shadow on the anti-sun side is lit where an open wagon's walls (3.5-3.7 m; the
        # lowest _LOW_TALL_M) would shadow it (_low_deck read against the walls). A dark
        # wooden or steel deck of a flat wagon (1.35 m up) is as dark as a load of coal,
        # and the lit ground on both sides of it reads as an open car's rims; only the
        # height parts them. A neighbour's shadow or dark ground can only darken the
        # point, so neither makes an open wagon read low. Altgen tuning 240-247 (base
        # code, all GSDs): "open" tops read low by the roof's test were 21 flat wagons,
        # 4 container wagons and 3 boxcars against 4 open wagons; the walls' test speaks
        # for fewer sun geometries than the roof's and keeps the lowest open wagons out.
        # Bench slices 200-203, 248-251 and 280-283 (this rule alone against base): flat
        # and container wagons typed right +7, +6 and +9 against open wagons -3, -5 and
        # -3; counts unchanged.
        return "flatcar", "open_low_deck"
    if (look == "open" and resolution_m <= _MAX_FULL_TOP_RES_M and body_m >= _MIN_LONG_BODY_M
            and low is not True and tall is not False
            and _along_texture(strip, s0, s1, path) < _EVEN_ALONG
            and _top_width(strip, s0, s1) >= _MIN_FULL_TOP_M):
        # "Open" (a top darker than its rims or than half the lit ballast) but even end to
        # end at 0.3-0.5 m, as wide as a roofed body (3.1-3.3 m; a flat wagon's deck is
        # 2.87 m) and as long as only long cars read: a dark-painted or weathered boxcar
        # roof, not a heaped load, whose heaps vary along at that scale. A load trimmed
        # level is as even: only length (_MIN_LONG_BODY_M) keeps an open wagon out, and
        # the shadow (low True, tall False) a bare deck. Coarser pixels blur heaps away
        # and no width is read: the rule stands down there. (Session 43, altgen rail
        # 50, 140, 180 and 226 at 0.3-0.5 m: 26 boxcars against 1 flat wagon caught.)
        return "boxcar", "even_dark_roof"
    # A cylinder is vetted by which half is the brighter only with the sun across the
    # track and high enough to shade it (see _look); relief alone is also a shunting
    # locomotive's fans (15-16 m bodies) or a covered hopper's hatches.
    vetted = sun_left is not None and np.isfinite(shading) and shading >= _MIN_SHADING
    # A cylinder whose anti-sun flank is as dark as only a barrel's (anti_flank[0]) is one
    # at any length and however even along: a boxcar's arched roof keeps 0.67-0.81 of its
    # crest's light there (altgen tuning 100-103 and 60-63, boxcars read "cylinder") where
    # the sun stands high enough across the track (see _anti_flank_limits), and that holds
    # with the sun at a slant to the track too, where the sun-half ratio does not vet it
    # (tank cars of 15.1-15.8 m were typed boxcars there).
    n = s1 - s0
    barrel = bool(look == "cylinder" and _anti_flank_share(
        strip, slice(s0 + n // 6, s1 - n // 6) if n >= 6 else slice(s0, s1), sun_left, path,
        resolution_m, lit_b if lit_visible is None else lit_visible) < (
        _BARREL_ANTI_FLANK if anti_flank is None else anti_flank[0]))
    if (look == "cylinder" and not barrel and _MIN_BOXCAR_BODY_M <= body_m
            and (body_m < _MIN_LOCOMOTIVE_BODY_M or vetted)
            and _along_texture(strip, s0, s1, path) < _EVEN_ALONG):
        # Relief across but even end to end over a boxcar's length: a cambered roof
        # sheet seen blurred (0.75-1 m pixels spread its sun-lit half), not a barrel,
        # which carries a dome, manhole platform and walkway at mid-length (session 22,
        # tuning 0-15: tank tops vary along by 0.04 or more in nine in ten, boxcar roofs
        # read "cylinder" under 0.02 in most; see _EVEN_ALONG). Vetted (its sun-lit half
        # the brighter, as a cambered roof's is too) the same holds at any length, since
        # a vetted cylinder is never a locomotive (below). Unvetted from a locomotive's
        # length, relief even along is also a hood or a fan band down the roof: the
        # rules below decide.
        return "boxcar", "even_cylinder_roof"
    if look == "cylinder" and (vetted or barrel or body_m < _MIN_LONG_BODY_M):
        # Barrels run from 11 m (15-1443) to 15.5 m (15-150, LPG cars): a vetted cylinder
        # is a tank car at any of these lengths; unvetted relief only below 14.8 m. A
        # vetted cylinder read longer than any barrel is still one: tank cars are the
        # commonest and among the shortest cars, so a body that long is a barrel with its
        # cut misplaced (a coupler in shadow) or run into its neighbour, while no
        # locomotive carries a barrel (its roof is a cambered sheet with fans; session 23,
        # tuning 0-15: vetted cylinders from 18 m typed locomotives were 43 tank cars and
        # no locomotive).
        return "tank", "barrel"
    # Along the car: a boxcar's roof is one sheet end to end; a covered hopper's carries a
    # row of loading hatches and sloped end bays, an open wagon's load lies in heaps, a
    # locomotive's roof its fans and cab (see _along_texture).
    # The top's brightness along the car is read once per car and shared by the texture
    # and the one-step fits below (_stepped_along, _container_joint).
    along = _along_core(strip, s0, s1, path) if look in ("plain", "flat") else None
    texture = _along_texture(strip, s0, s1, path, along=along) if along is not None else float("nan")
    if look in ("plain", "flat") and resolution_m <= _MAX_WIDTH_RES_M:
        width = _top_width(strip, s0, s1)
        # At pixels of _MAX_CONTAINER_SHOULDER_RES_M or finer the shoulders (0.6-1.0 m
        # out) lie inside a container's 1.22 m half-width, mostly clear of its blurred
        # edge at 0.3 m and partly blurred by it at 0.5 m: they step by
        # _MAX_CONTAINER_SHOULDER_STEP at most (see there); coarser, the edge blurs into
        # them and only a locomotive's fan band is told apart (_MAX_SHOULDER_STEP).
        shoulder_max = (_MAX_CONTAINER_SHOULDER_STEP if resolution_m <= _MAX_CONTAINER_SHOULDER_RES_M
                        else _MAX_SHOULDER_STEP)
        if (_CONTAINER_WIDTH_M[0] <= width <= _CONTAINER_WIDTH_M[1]
                and _shoulder_step(strip, s0, s1) <= shoulder_max
                and not (texture >= _TEXTURED_ALONG
                         and _one_step(strip, s0, s1, path, along=along)[0] >= _MIN_HEAPED_SHARE)):
            # A top 2.44 m wide and even out to its edges is an ISO container's (8 ft),
            # on a flat wagon: every 1520 mm freight car with a top at full width
            # (boxcar, hopper, open wagon) is 3.1-3.3 m wide. A locomotive's roof is
            # not even: a band of fans or a hood narrower than the body down its middle
            # reads about as wide as a container, but its shoulders (0.6-1.0 m out)
            # differ from the middle. Nor is a top textured along (from _TEXTURED_ALONG) in
            # more than one step (_one_step leaving _MIN_HEAPED_SHARE or more of its
            # variation): a box is one sheet end to end and two boxes of their own colours,
            # or a box beside an empty slot, one step, while a load heaped inside an open
            # wagon's walls (its crest read as narrow as a box where it stands clear of the
            # walls) or a covered hopper's hatches vary within each half: the rules below
            # decide those.
            return "flatcar", "container_width"
    # A "flat" top from a boxcar's length on is typed by its length and texture along, not
    # by anything that tells a hopper from a locomotive or a boxcar (the two overlap in
    # texture along, 0.1-0.24), unless its shadow read its height.
    long_flat = "long_flat_by_length" if tall is None else "long_flat_height_read"
    if body_m >= _MIN_LOCOMOTIVE_BODY_M:
        if (look == "flat" and texture < _TEXTURED_ALONG
                and _shoulder_step(strip, s0, s1) <= _MAX_SHOULDER_STEP):
            # Relief across (a cambered roof) but not textured along and even out to its
            # shoulders: a boxcar's roof (11-280, 16.5 m body), not a locomotive's (a band
            # of fans or a hood narrower than the body down its middle; see
            # _shoulder_step). A locomotive's roof is textured along: its fans, exhausts,
            # radiator grilles and cab, each a metre or two long, make it vary by
            # _TEXTURED_ALONG or more (session 30, altgen tuning 100-103: locomotives from
            # 16.9 m read 0.046 and more, median 0.15). A variation between _EVEN_ALONG
            # and _TEXTURED_ALONG says nothing either way (a roof sheet's seams, a
            # neighbour's blurred shade; all 14 such tops there were boxcars),
            # and the commoner car of this length decides, as from 14.8 m below: a
            # locomotive hauls a train of 50-70 cars, so few units in a yard are one.
            return "boxcar", long_flat
        if (look == "flat" and tall is not False and texture >= _TEXTURED_ALONG
                and _uneven_roof(strip, s0, s1, path, resolution_m, along=along) is False):
            # Relief across and textured along, but not as a locomotive's roof is: not the
            # cab at one end and the cooling fans and exhausts over the other (the test of
            # the "uneven_halves" rule below, at any length from here; see _uneven_roof).
            # Hatches or heaps repeated end to end are a covered hopper's or an open
            # wagon's top read this long with a cut misplaced (or two run together), or a
            # container wagon's boxes: the gondola class, the commonest textured car (the
            # tag stays a fallback that a coupled block's class overrides). Altgen tuning
            # 204-211 (session 50, base code): "flat" tops from 16.9 m typed locomotives
            # by length were 62 other cars (22 hoppers, 15 boxcars, 12 container and flat
            # wagons, 7 tank cars, 6 open wagons) against 25 locomotives. A top even along
            # with uneven shoulders (a fan band down the whole roof, review of ca3fedd)
            # and one whose test is not read (None) keep the length rule. At 1 m pixels the
            # halves' brightness alone decides (_uneven_roof), which misses about a third of
            # the locomotives there (_MAX_BAND_RES_M); held-out 286-289 / 290-293 at 1.0 m
            # type 0.655 -> 0.657 / 0.659 -> 0.657 with this rule and the fan band.
            return "gondola", long_flat
        if (look == "cylinder" and _along_texture(strip, s0, s1, path) >= _TEXTURED_ALONG
                and not _crest_relief(strip, s0, s1, path) < _MIN_BARREL_CREST):
            # Relief across not vetted by its sun-lit half (the sun along the track, or too
            # high to shade it) and textured along as a barrel is (its dome, manhole
            # platform and walkway at mid-length; session 22: nine in ten tank tops vary
            # along by _TEXTURED_ALONG or more): a tank car read long, a cut misplaced or
            # run into its neighbour, as a vetted barrel is at any length (above). No
            # length parts the two: 1520 mm tank cars are 12-16 m over couplers but the
            # 8-axle and LPG ones about 21 m, locomotive sections 17-23 m; but tank cars
            # are the commonest cars and a locomotive one or two in a train of 50-70, and
            # a locomotive's cooling section reads "flat" (a fan band down the middle) far
            # more often (RLOCO, altgen tuning 204-211 and 240-247, base code: such tops
            # typed locomotives by length were 17 tank cars, 6 open wagons and hoppers, 4
            # container wagons and 3 boxcars against 2 locomotives; all tank cars among
            # them varied along by 0.097 or more). Relief even along (under
            # _TEXTURED_ALONG: no dome or walkway) keeps the length rule below: a hood or
            # a fan band down the whole roof (session 22), as a boxcar's cambered roof
            # unvetted at this length does too; so does a top whose middle is markedly
            # darker than its shoulders (_crest_relief under _MIN_BARREL_CREST), as a
            # fan band's or a hood's is and a barrel's crest is not. Session 50 (RCYL).
            return "tank", "cylinder_by_length"
        return {"open": ("gondola", "open"), "plain": ("boxcar", "roof_sheet"),
                "flat": ("locomotive", long_flat)}.get(look, ("locomotive", "no_look" if look is None
                                                              else "cylinder_by_length"))
    if body_m >= _MIN_LONG_BODY_M:
        # A top textured along (hatches, heaps) is an open wagon's or a hopper's only
        # where its shadow does not say it has no walls (tall False: lit ground where a
        # wall's shadow would fall); there the length rule stands.
        if look == "open":
            return "gondola", "open"
        if look == "flat" and texture >= _TEXTURED_ALONG and tall is not False:
            if (body_m >= _MIN_LOCOMOTIVE_SECTION_BODY_M
                    and _uneven_roof(strip, s0, s1, path, resolution_m, along=along)):
                # A locomotive section's body (16.9-18.2 m over couplers, 15.8-17.1 m
                # between the coupler gaps) is shorter than _MIN_LOCOMOTIVE_BODY_M, which
                # only a cut misplaced outward reaches; its roof is textured along like a
                # hopper's, but unevenly: the cab at one end, the cooling section's fans
                # (and exhausts) over the other, so its two halves differ by
                # _LOCOMOTIVE_HALF_ASYMMETRY or more, while a hopper's hatches and end bays
                # repeat end to end (session 47, altgen tuning 200-207: typed so 28
                # locomotives against 6 hoppers, 4 container wagons, 1 open wagon and 1
                # tank car, all typed by the gondola class's length rule before; see
                # _half_asymmetry).
                return "locomotive", "uneven_halves"
            return "gondola", long_flat
        if (look == "plain" and texture >= _TEXTURED_ALONG and tall is not False
                and not _stepped_along(strip, s0, s1, path, along=along)):
            # A sheet even across to a tenth but textured along: a covered hopper's roof
            # with its row of loading hatches and sloped end bays, or an open wagon's load
            # levelled across but heaped along; a boxcar's roof is one sheet end to end
            # (see _EVEN_ALONG). Until session 38 only "flat" tops were read along here,
            # since a plain roof sheet varies along where a mast's or a neighbour's shadow
            # crosses it (own simulator: 8 boxcars typed open wagons). Two shadows are
            # now kept from this rule: one crossing the track within _CROSSING_REACH_M
            # of where it crosses the ground beside the car and narrower than about half
            # _CROSSING_WINDOW_M (masked by _along_texture; review of 16264ba, finding 3),
            # and a single long shadow's edge over part of the roof (one step between two
            # even levels, _stepped_along). Known misreads, a boxcar typed the gondola
            # class (review RTYPE, session 38), where the roof varies along otherwise:
            # - the shadow of a horizontal element (a catenary portal's beam, a
            #   footbridge) under a sun slanting to the track falls on the roof
            #   h*cos(dAz)/tan(e) from where it falls on the ground (about 6 m for a
            #   4.7 m roof at 30 degrees elevation, 45 degrees off the track), beyond the
            #   mask; it has two edges, so it is not one step;
            # - a building's or a shed canopy's shadow 5 m or more wide over car and
            #   ground alike (not a dip under the running median; two edges);
            # - snow lying on the roof in metre-scale patches, repainted or rusted
            #   panels;
            # - roof loading hatches on universal boxcars (grain service), if present
            #   (not checked against a source).
            # The cost grows under a low sun: on altgen 20-23, 120-123 and 170-173 the
            # type accuracy under low_sun moved +0.000, +0.000 and -0.006, and 3 of the
            # 7 boxcars lost there were under a low sun (elevation 21-27 degrees).
            # (Session 38, with this rule and rule textured_narrow_top together, final
            # code: altgen tuning and check slices 190, 0, 100, 140 and 60 (4 seeds
            # each), 117 hoppers and open wagons gained against 18 boxcars and 7
            # container wagons lost to the gondola class; on 20, 120 and 170, 69 gained
            # against 7 boxcars and 2 container wagons lost.)
            return "gondola", "textured_plain_top"
        return "boxcar", {"flat": long_flat, "plain": "roof_sheet", None: "no_look"}.get(look, "cylinder_by_length")
    if look == "open":
        return "gondola", "open"
    if look in ("plain", "flat"):
        ctype, rule = _short_top_rule(strip, s0, s1, body_m, look, tall, texture, resolution_m, path,
                                      along=along, lit_b=lit_b, low=low)
        if (ctype == "gondola" and texture >= _TEXTURED_ALONG
                and _container_joint(strip, s0, s1, path, along=along)):
            # Textured along by one step at mid-car between two even plateaus, on a top
            # narrower than a walled body: two 20 ft containers, each one colour, meeting
            # at the middle of a 13-9004 flat wagon (or a box beside an empty slot's
            # deck), not an open wagon's heaps or a hopper's hatches, which vary within
            # each half, nor a single heap's two faces, which span the body's full width
            # (see _container_joint). An even top is not read as a sheet here: an open
            # wagon's levelled load is as even along as a boxcar's roof.
            return "flatcar", "container_joint"
        return ctype, rule
    return ("tank" if body_m < 12.7 else "flatcar"), "no_look"


def _short_top_rule(strip: Strip, s0: int, s1: int, body_m: float, look: str, tall: bool | None, texture: float,
                    resolution_m: float, path: np.ndarray | None = None, *,
                    along: tuple[np.ndarray | None, np.ndarray | None] | None = None,
                    lit_b: float = float("nan"), low: bool | None = None) -> tuple[str, str]:
    """Class of a plain or flat (``look``) top shorter than ``_MIN_LONG_BODY_M`` between
    samples ``s0`` and ``s1``, from its height (``tall``: True walls or a roof, False no
    walls, None unread), length (``body_m``, m), width (:func:`_top_width`, read where the
    pixel size ``resolution_m`` (m) is ``_MAX_FULL_TOP_RES_M`` or finer) and texture along
    (``texture``, no unit, :func:`_along_texture`; NaN: not read): the rules of
    :func:`_classify` for the shorter cars, before the container-joint check
    (:func:`_container_joint`), and the rule that decided it (a tag: see ``_WEAK_RULES``;
    ``"textured_narrow_top"``: a plain top of unread height narrower than a walled body
    but textured along, the gondola class; ``"even_short_flat"``: a flat top of unread
    height shorter than ``_MIN_BOXCAR_BODY_M``, even along and not dark, at pixels coarser
    than ``_MAX_WIDTH_RES_M``: the flatcar class; ``"even_short_roof"``: the same top read at
    least ``_MIN_ROOF_WIDTH_COARSE_M`` wide by :func:`_top_width`, a roofed body's full
    width, unless ``low`` is True: a boxcar). ``low``: whether the body is as low as a bare
    deck by the one-sided shadow test (:func:`_low_deck`; None: not read). ``along``: the
    top's brightness along the car
    as :func:`_along_core` returns it for ``path``, where the caller has read it (else
    read here). ``lit_b``: the lit ballast's brightness (reflectance as recorded; NaN:
    unknown, and no top even along is typed a flat wagon)."""
    if tall:
        if look == "flat":
            # A tall textured top: an open wagon's load or a hopper's hatches, unless
            # it is even along and a boxcar's length (a cambered roof sheet).
            return ("boxcar" if body_m >= _MIN_BOXCAR_BODY_M and texture < _EVEN_ALONG
                    else "gondola"), "height_read"
        if body_m >= _MIN_BOXCAR_BODY_M:
            return "boxcar", "height_read"
        # A tall even top shorter than a boxcar: a container on a flat wagon, unless
        # it spans a walled car's full width (a covered hopper's roof, an even load).
        return ("gondola" if resolution_m <= _MAX_FULL_TOP_RES_M
                and _top_width(strip, s0, s1) >= _MIN_FULL_TOP_M else "flatcar"), "height_read"
    if tall is False:
        # Lit ground where a walled car's shadow would fall: a deck, a flat wagon.
        return "flatcar", "height_read"
    if look == "plain":
        # A sheet even to a tenth across: a deck or a container's roof, not an open
        # wagon's load (heaps, walls) nor a covered hopper's hatches; but a sheet as
        # wide as a walled or roofed body (3.1-3.3 m) is wider than any flat wagon's
        # deck (2.87 m) or container (2.44 m): at a boxcar's length a boxcar's roof,
        # shorter a covered hopper's roof or an open wagon's even load (the gondola
        # class, as for a tall top above). (Session 22: tuning 0-15 plain short tops
        # of unread height at 0.3-0.5 m: 60 open wagons and hoppers, 15 flat wagons
        # read that wide.)
        # Coarser than _MAX_FULL_TOP_RES_M the width no longer tells a 2.87 m deck
        # from a 3.1-3.3 m roof, and a sheet even across is a deck, a container's or
        # a roofed or walled car's roof alike: the commonest car of its length, as
        # for a textured top below (flat wagons are about 8 % of the 1520 mm fleet).
        # (Session 31, altgen tuning 100-103 and 0-3 at 0.75-1 m: such tops were 110
        # hoppers, boxcars and open wagons against 11 flat wagons.)
        if resolution_m > _MAX_FULL_TOP_RES_M:
            return ("boxcar" if body_m >= _MIN_BOXCAR_BODY_M else "gondola"), "short_plain_by_length"
        # An unknown pixel size (NaN) passes neither test and keeps the flatcar class.
        if resolution_m <= _MAX_FULL_TOP_RES_M and _top_width(strip, s0, s1) >= _MIN_FULL_TOP_M:
            return ("boxcar" if body_m >= _MIN_BOXCAR_BODY_M else "gondola"), "top_width"
        if texture >= _TEXTURED_ALONG and not _stepped_along(strip, s0, s1, path, along=along):
            # Narrower than a walled body but textured along: a bare flat wagon's deck
            # (planks or steel plate) and a container's roof are each one even sheet end
            # to end; a load heaped in an open wagon, seen inside its walls (the walls'
            # inner faces and the load's edge read as the top's edge), and a covered
            # hopper's row of hatches vary along by more (see _EVEN_ALONG,
            # _TEXTURED_ALONG). A top varying by one step between two even levels
            # (_stepped_along: two containers of their own colours, a deck half in a long
            # shadow) stays a flat wagon. A loaded flat wagon (timber or steel packages,
            # pipes, machinery, vehicles: a run of packages with gaps) and a container
            # wagon with an empty slot between boxes or three boxes of three colours vary
            # along by more than one step too and are misread the gondola class here:
            # altgen draws only bare decks, so this cost is not measured. (Session 38,
            # altgen tuning 190-193 at 0.3-0.5 m, read before that guard: such tops were
            # 25 open wagons and hoppers against 3 flat wagons and 2 tank cars.)
            return "gondola", "textured_narrow_top"
        return "flatcar", "top_width"
    # A textured flat top of unread height (the sun's geometry puts the shadow band
    # out of reach, or another track's cars stand in it): the commonest car of that
    # length. Open wagons and hoppers are about 60 % of the 1520 mm freight fleet
    # against 8 % for flat wagons; a body of a boxcar's length (11-217: 14.2 m) is a
    # boxcar or a covered hopper more often than a 13-401 flat wagon; one textured
    # along its length (hatches, end bays) is a covered hopper (the gondola class).
    # (Texture unread, NaN: a sample masked, the length decides as before.)
    if body_m >= _MIN_BOXCAR_BODY_M and not texture >= _TEXTURED_ALONG:
        return "boxcar", "short_flat_by_length"
    if (resolution_m > _MAX_WIDTH_RES_M and texture < _EVEN_ALONG
            and _top_dark(strip, s0, s1, lit_b, path) is False):
        # Shorter than a boxcar and even end to end (under _EVEN_ALONG, as a roof sheet
        # is), with relief across: a flat wagon's deck with a container narrower than it
        # (2.44 m on a 2.87 m deck) or a single 40 ft box, each one sheet end to end. An
        # open wagon's load lies in heaps along the car where the loading chute or grab
        # dropped it (a peak every few metres) and a covered hopper carries a row of
        # hatches and sloped end bays: both vary along by more (see _EVEN_ALONG,
        # _TEXTURED_ALONG). Not a top darker than half the lit ground (_top_dark):
        # coal, ore or coke levelled end to end by the loading gauge's planer (and sprayed
        # against dust on 1520 mm lines) is as even as a deck, and darker than most decks,
        # containers and roofs the sun lights (dark-painted boxes and bare steel or wood
        # decks at 5-10 % stay in the gondola class, as before). Known misreads: a pale
        # load (sand, crushed stone, wood chips) trimmed level, and a pale covered hopper
        # whose small hatches blur away at 1 m, are typed flat wagons. Only at pixels
        # coarser than _MAX_WIDTH_RES_M (0.75 m), where no width rule reads an ISO
        # container (_CONTAINER_WIDTH_M) and evenness is the one cue left, and where the
        # rule was measured; finer (or the pixel size unknown, NaN), the width rules have
        # had their say on containers and the fallback stays as it was. (Session 40,
        # altgen tuning 20-23, 50-53, 170-173 and 100-107 at 1.0 m, such tops shorter
        # than _MIN_BOXCAR_BODY_M, all typed the gondola class before: about 40 flat and
        # container wagons, 25 boxcars cut short (wrong either way), 17 open wagons and
        # hoppers (5 of them darker than half the lit ground, with 4 container wagons)
        # and 1 tank car. Review RRAILT1 on fresh slices 70-73 and 150-153 at 1.0 m: type
        # accuracy 0.573 -> 0.583, container wagons +13, open wagons and hoppers -4, tank
        # cars -1; 32 boxcars read too short moved from the gondola class to flatcar, so
        # flatcar precision there fell 0.68 -> 0.48.)
        if _top_width(strip, s0, s1) >= _MIN_ROOF_WIDTH_COARSE_M and low is not True:
            # ... unless the top spans a walled or roofed body's full width. An ISO
            # container is 2.44 m wide and reads 2.5-2.75 m at 1 m pixels
            # (_MIN_ROOF_WIDTH_COARSE_M, the value of _MAX_JOINT_WIDTH_M), while a
            # boxcar's roof (11-217, 11-280, 11-066: 3.25-3.3 m over the body) spans its
            # full width (read 2.75 m or more for 41 of 45 such roofs on the tuning
            # scenes below). A sheet that wide, even end to end and not dark is a
            # boxcar's roof whose body was read short (a cut misplaced at a coupler
            # hidden in shadow), not a container: a covered hopper's roof, as wide,
            # carries a row of loading hatches and sloped end bays (see _EVEN_ALONG),
            # and is misread here where they blur away. A bare flat wagon's deck
            # (2.87 m) lies between the two: a pale, lit deck can read this wide and is
            # then typed a boxcar (altgen's wooden decks, darker than the ballast, read
            # 2.2-2.8 m, 1 of 10 at the gate or over): review RBOXDECK's probe read
            # pale decks (reflectance 0.22-0.55, 1 m pixels, PSF 0.4-0.8 px) at least
            # 2.75 m in 49-97 % of settings, and a real 13-401 deck (13.4 m, shorter
            # than _MIN_BOXCAR_BODY_M) reaches this branch uncut; at 0.75-1 m a deck
            # reads as wide as a roof (see _MAX_FULL_TOP_RES_M). Width cannot tell
            # them apart; height can. So the rule stands down where the one-sided
            # shadow test (_low_deck) reads the body low (low True): the ground a
            # pixel past a 1.35 m deck's shadow on the anti-sun side lit, where a
            # roof's (4.0 m or more) would lie. A neighbour's shadow or darker ground
            # can only darken that point, so they cannot make a roof read low.
            # Where the test cannot speak (low None: sun too near the track's line
            # for a roof's shadow to cover the point, the point on another track's
            # cars or their shadows, a reading between lit and shadowed) the width
            # decides as before: on altgen 150-153 (BOXDECK2's tuning slice) 22 of
            # the 28 tops at the gate read None, 15 of them with the sun along the
            # track (no sun side, so no shadow beside any car) and 7 under a sun
            # nearly so (0.2 m of shadow per m of height); the rule's gain lies
            # there (scenes with the sun 0.02-0.25 across the track), and keeping
            # them flatcar gave 1.0 m type 0.599 against 0.645 (0.593 base, 0.647
            # without the guard). The cost: a pale bare deck is still typed a
            # boxcar where the test cannot speak (BOXDECK2's probe: at p = 0.3 m per
            # m of height, 31-48 of 48 settings; at p >= 0.5, none). On altgen
            # 90-93, 150-153 and 200-203 it kept none of the 4 container and flat
            # wagons the rule took: containers stand as tall as a roof, and the flat
            # wagon stood under a sun nearly along the track. (Session 41, altgen tuning
            # 0-11, 20-23, 50-53, 100-107, 170-173 and 180-183 at 1.0 m, tops that
            # reached this rule: 41 boxcars and 13 hoppers read at least this wide,
            # against 2 container wagons, 1 flat wagon and 1 open wagon; 50 of 52
            # container wagons and 9 of 10 flat wagons with a width read narrower.)
            # NaN (an edge not read): the container reading stands.
            return "boxcar", "even_short_roof"
        return "flatcar", "even_short_flat"
    return "gondola", "short_flat_by_length"


def _top_dark(strip: Strip, s0: int, s1: int, lit_b: float, path: np.ndarray | None) -> bool | None:
    """Whether the top between samples ``s0`` and ``s1`` is darker than half the lit
    ballast ``lit_b`` (reflectance as recorded), both above the path radiance ``path``.

    The top is read within 1.0 m of the centreline over the middle two thirds of the body,
    as :func:`_look` reads it: coal and ore reflect 4-8 %, the ballast 15-30 %.

    Returns
    -------
    bool or None
        None where ``lit_b`` or the top is not finite (unknown).
    """
    if not np.isfinite(lit_b):
        return None
    n = s1 - s0
    core = slice(s0 + n // 6, s1 - n // 6) if n >= 6 else slice(s0, s1)
    top = quiet_nanmean(strip.values[:, np.abs(strip.across_m) <= 1.0, core], axis=(0, 2))
    if not (top.size and np.all(np.isfinite(top))):
        return None
    pm = float(np.mean(path)) if path is not None else 0.0
    return bool(float(np.mean(top - pm)) < 0.5 * (lit_b - pm))


# Brightness variation along the top (standard deviation over mean, above the path
# radiance, smoothed over 1 m, middle two thirds of the body): a boxcar's roof sheet is
# even end to end (altgen tuning scenes: median 0.007-0.011, 90th percentile 0.03-0.06,
# its ribs under a metre apart smoothed out); a covered hopper's hatches and sloped end
# bays, an open wagon's heaped load and a locomotive's fans vary by more (hoppers: median
# 0.06-0.08, quarter below 0.04-0.05). Below _EVEN_ALONG a top is even; from
# _TEXTURED_ALONG it is textured; between, it says nothing.
_EVEN_ALONG = 0.02
_TEXTURED_ALONG = 0.04
# Smoothing along the track (m): ribs and seams under a metre apart are not texture.
_ALONG_SMOOTH_M = 1.0
# A shadow crossing the track (a mast's, a catenary portal's, a lighting tower's) darkens
# the ground beside the car where it crosses the top: beyond this distance from the
# centreline (m; bodies are at most 1.66 m half-wide, the blurred edge included to about
# 1.95 m) the ground on a side darker than _CROSSING_DIP of its median along the car
# marks a crossing shadow, and the top is not read within _CROSSING_REACH_M of it (the
# shadow may cross the track at a slant). Ballast and sleepers smoothed over a metre vary
# by a tenth or less; a shadow keeps a fifth to two thirds of the light. The median is
# taken over _CROSSING_WINDOW_M along the track: a mast's or a portal beam's shadow is
# under a metre wide, and a longer shadow's edge (the car's own, a neighbour's) is a step
# that the median follows, not a dip.
_SIDE_GROUND_M = 1.95
_CROSSING_DIP = 0.8
_CROSSING_REACH_M = 1.5
_CROSSING_WINDOW_M = 5.0


def _along_texture(strip: Strip, s0: int, s1: int, path: np.ndarray | None = None, *,
                   along: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> float:
    """Relative variation (no unit) of the top's visible brightness along the car between
    samples ``s0`` and ``s1``: the standard deviation over the mean of the brightness
    within 1 m of the centreline, above the path radiance ``path`` (haze adds the same
    light everywhere and would flatten it), smoothed over ``_ALONG_SMOOTH_M`` and taken
    over the middle two thirds of the body (its ends are couplers, gaps and the
    neighbour's shade). Where the ground beside the car (beyond ``_SIDE_GROUND_M``, either
    side) dips under ``_CROSSING_DIP`` of its median over ``_CROSSING_WINDOW_M``, a
    shadow crosses the track there (a mast's, a portal's): the top within
    ``_CROSSING_REACH_M`` of it is not read. NaN where fewer than 6 samples are read or
    any on the top is not finite, or the mean is not positive. ``along``: what
    :func:`_along_core` returns for these arguments, where the caller has read it already
    (None: read here).

    A boxcar's roof is one sheet from end to end; a covered hopper's shows its row of
    loading hatches (round or a trough) and sloped end bays, an open wagon's load its
    heaps, a locomotive's roof its fans, exhausts and cab.
    """
    core, _ = _along_core(strip, s0, s1, path) if along is None else along
    if core is None or core.size < 6:
        return float("nan")
    mean = float(core.mean())
    if not mean > 0:
        return float("nan")
    return float(core.std() / mean)


def _along_core(strip: Strip, s0: int, s1: int,
                path: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The top's brightness along the car that :func:`_along_texture` reads: within 1 m of
    the centreline, above the path radiance ``path`` (reflectance units), smoothed over
    ``_ALONG_SMOOTH_M``, over the middle two thirds of the body between samples ``s0``
    and ``s1``, less the samples within ``_CROSSING_REACH_M`` of a shadow crossing the
    track. Returns the brightness and each value's sample index from ``s0``; (None, None)
    where fewer than 6 samples span the body or any on the top is not finite.
    """
    n = s1 - s0
    if n < 6:
        return None, None
    v = strip.values[:3][:, :, s0:s1]
    if path is not None:
        v = v - np.asarray(path[:3], v.dtype)[:, None, None]
    b = quiet_nanmean(v[:, np.abs(strip.across_m) <= 1.0], axis=(0, 1))
    if not np.all(np.isfinite(b)):
        return None, None
    k = max(1, int(round(_ALONG_SMOOTH_M / strip.step_m)))
    smooth = ndimage.uniform_filter1d(b.astype("float64"), k, mode="nearest")
    # A shadow crossing the track darkens the ground beside the car too, at the same
    # place along it; a roof's hatches or heaps do not (review of 16264ba, finding 3).
    crossing = np.zeros(n, bool)
    for side in (strip.across_m >= _SIDE_GROUND_M, strip.across_m <= -_SIDE_GROUND_M):
        if not side.any():
            continue
        g = quiet_nanmean(v[:, side], axis=(0, 1))
        ok = np.isfinite(g)
        if ok.sum() < 6:
            continue
        g = ndimage.uniform_filter1d(np.where(ok, g, np.nanmedian(g)).astype("float64"), k, mode="nearest")
        # Against the ground's median within _CROSSING_WINDOW_M: a narrow shadow dips
        # under it, the edge of a long one (the car's own, a neighbour's) does not.
        med = ndimage.median_filter(g, size=max(3, int(round(_CROSSING_WINDOW_M / strip.step_m))) | 1,
                                    mode="nearest")
        crossing |= ok & (g < _CROSSING_DIP * med)
    if crossing.any():
        crossing = ndimage.binary_dilation(crossing, iterations=max(1, int(round(_CROSSING_REACH_M / strip.step_m))))
    keep = ~crossing[n // 6:n - n // 6]
    return smooth[n // 6:n - n // 6][keep], np.arange(n // 6, n - n // 6)[keep]


# Two 20 ft ISO containers (6.06 m) on a 13-9004 flat wagon (12.6 m body) meet 6.5 m from
# its end, at 0.52 of the body (either end first: 0.48-0.52); a cut misplaced by up to
# 1.5 m moves that by 0.12 of the body. The span is taken about mid-car.
_JOINT_SPAN = (0.38, 0.62)
# Most the along-track brightness may vary about its best two-plateau fit, as a share of
# its variation about its mean, for the top to be read as two even boxes: the step then
# explains nine tenths of its variance (altgen tuning 100-103, flat or plain tops textured
# along, median by GSD: container wagons 0.28-0.41, open wagons' heaps 0.81-0.86, hoppers'
# hatches and end bays 0.44-0.67).
_JOINT_RESIDUAL_SHARE = 0.35
# Least share of its variation the along-track brightness keeps about its best one-step
# fit (:func:`_one_step`) for a top textured along and read as wide as an ISO container
# (rule container_width) to be read as heaped, not as boxes. Session 51 (RTYPE), altgen
# tuning 240-247 at 0.3-0.75 m, tops typed by the container width: open wagons' heaps left
# 0.47-0.91 (10th-90th percentile, each GSD), container wagons 0.18-0.92 (two or three
# boxes of their own colours, an empty slot between boxes: more than one step). Of those
# also textured along from _TEXTURED_ALONG, a share from 0.6 held 23 open wagons and 5
# hoppers against 6 container wagons, 2 boxcars, 1 tank car and 1 locomotive (from 0.5:
# 26 and 5 against 9, 2, 1 and 1). Bench slices 200-203, 248-251 and 280-283 (with
# rule open_low_deck, against base): open wagons typed flatcar 30 -> 18, 48 -> 28 and
# 32 -> 11, container wagons typed right 97 -> 92, 117 -> 114 and 114 -> 112.
_MIN_HEAPED_SHARE = 0.6


def _container_joint(strip: Strip, s0: int, s1: int, path: np.ndarray | None = None, *,
                     along: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> bool:
    """Whether the top between samples ``s0`` and ``s1`` is two even plateaus along the car
    meeting near its middle (``_JOINT_SPAN`` of the body) on a top narrower than a walled
    body: two 20 ft containers of their own colours on a flat wagon, or a box beside an
    empty slot's deck.

    The brightness along the car is read as :func:`_along_texture` reads it
    (:func:`_along_core`: above the path radiance ``path``, smoothed over
    ``_ALONG_SMOOTH_M``, middle two thirds of the body, a shadow crossing the track masked
    out); its best fit by two levels (one step) must leave under ``_JOINT_RESIDUAL_SHARE``
    of its standard deviation. An open wagon's heaps (2-4 along the car) and a covered
    hopper's four hatches and sloped end bays vary within each half and leave more. A
    single conical heap with the sun along the track shows two faces, lit and shaded,
    meeting at mid-car, as one step would; but it spans the walled body's full width
    (3.1-3.3 m), so where the top's width (:func:`_top_width`, m) is read it must be
    under ``_MAX_JOINT_WIDTH_M``. False where the body spans fewer than 12 samples or
    fewer than 5 are read. ``along``: what :func:`_along_core` returns for these
    arguments, where the caller has read it already (None: read here).
    """
    if s1 - s0 < 12:
        return False
    width = _top_width(strip, s0, s1)
    if np.isfinite(width) and width >= _MAX_JOINT_WIDTH_M:
        return False
    share, where = _one_step(strip, s0, s1, path, along=along)
    return share < _JOINT_RESIDUAL_SHARE and _JOINT_SPAN[0] <= where <= _JOINT_SPAN[1]


def _one_step(strip: Strip, s0: int, s1: int, path: np.ndarray | None = None, *,
              along: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> tuple[float, float]:
    """Best fit of the top's brightness along the car between samples ``s0`` and ``s1``
    (as :func:`_along_core` reads it, above the path radiance ``path``) by two levels
    meeting at one step: the residual's standard deviation over that of the brightness
    (no unit; under ``_JOINT_RESIDUAL_SHARE`` the step explains about nine tenths of the
    variance), and where the step lies as a share of the body (0-1, from ``s0``). (NaN,
    NaN) where fewer than 5 samples are read or the brightness does not vary. ``along``:
    what :func:`_along_core` returns for these arguments, where the caller has read it
    already (None: read here).
    """
    core, idx = _along_core(strip, s0, s1, path) if along is None else along
    if core is None or core.size < 5:
        return float("nan"), float("nan")
    m = core.size
    sd = float(core.std())
    if not sd > 0:
        return float("nan"), float("nan")
    # Residual sum of squares of a two-level fit split before each read sample j, two or
    # more samples on either side.
    c1 = np.cumsum(core)
    c2 = np.cumsum(core ** 2)
    j = np.arange(2, m - 1)
    left = c2[j - 1] - c1[j - 1] ** 2 / j
    right = (c2[-1] - c2[j - 1]) - (c1[-1] - c1[j - 1]) ** 2 / (m - j)
    rss = left + right
    best = int(np.argmin(rss))
    residual = float(np.sqrt(max(rss[best], 0.0) / m))
    return residual / sd, float(idx[j[best]] / (s1 - s0))


# Least difference between the mean brightness of a top's two halves along the car, as a
# share of its mean (:func:`_half_asymmetry`), from which a textured roof is read as a
# locomotive's. A diesel locomotive section carries its equipment unevenly along the roof:
# the cab (windscreens, a lower roof) at one end, the cooling section's radiator fans and
# exhausts over the other (2TE10, 2TE116; a shunter's long hood, TEM2, ChME3, its radiator
# at the hood's far end); a covered hopper's loading hatches are evenly spaced between
# sloped end bays at both ends, an open wagon's load lies in heaps along the whole car, a
# boxcar's roof is one sheet. Altgen tuning 200-207, "flat" tops textured along read
# 15.3 m or longer, the same halves read by a diagnostic (within 0.6 m of the centreline,
# the haze not taken off; median by GSD): locomotives 0.26-0.46 at 0.3-0.75 m pixels (0.08
# at 1 m, the fans blurred), hoppers 0.16-0.18 (a quarter above 0.2-0.3), boxcars under
# 0.01. The threshold keeps out three in four hoppers; the rest, and container wagons read
# this long (an empty slot, boxes of two colours), are typed locomotives. It asks for a
# marked difference: fans 0.8-1.2 m across, dark on a 0.25 roof (tests/test_railcars_s15.py's
# roof), make the halves differ by only 0.06-0.13, and such a roof keeps the length rules.
_LOCOMOTIVE_HALF_ASYMMETRY = 0.2
# Shortest body (m) typed a locomotive by its uneven halves: the shortest locomotive
# sections (TEM2, 2TE10: 16.97 m over couplers) less the coupler gap (GAP_M) and a cut
# misplaced by half a metre inward. Longer than the covered hoppers (19-7017: 14.8 m
# body) and open wagons (12.7-13.5 m) read with their cuts placed well.
_MIN_LOCOMOTIVE_SECTION_BODY_M = 15.3


def _half_asymmetry(strip: Strip, s0: int, s1: int, path: np.ndarray | None = None, *,
                    along: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> float:
    """Difference (no unit) between the mean brightness of the two halves of the top along
    the car between samples ``s0`` and ``s1``, over the mean of both: the top read as
    :func:`_along_texture` reads it (:func:`_along_core`: within 1 m of the centreline,
    above the path radiance ``path``, smoothed over ``_ALONG_SMOOTH_M``, the middle two
    thirds of the body, a shadow crossing the track masked out), split at the body's
    middle. A top whose roof equipment is concentrated at one end (a locomotive's cab and
    fans) differs between its halves; evenly spaced hatches, heaps along the car or one
    roof sheet do not (see ``_LOCOMOTIVE_HALF_ASYMMETRY``). NaN where fewer than 6
    samples are read, fewer than 2 in either half, or the mean is not positive.
    ``along``: what :func:`_along_core` returns for these arguments, where the caller has
    read it already (None: read here).
    """
    core, idx = _along_core(strip, s0, s1, path) if along is None else along
    if core is None or core.size < 6:
        return float("nan")
    mean = float(core.mean())
    first = idx < 0.5 * (s1 - s0)
    if not mean > 0 or first.sum() < 2 or (~first).sum() < 2:
        return float("nan")
    return float(abs(core[first].mean() - core[~first].mean()) / mean)


# Least difference between a top's two halves along the car in how much darker its middle
# is than its shoulders (:func:`_band_halves`, as a share of the top's brightness), from
# which a roof is read as a locomotive's. A diesel section's radiator fans and exhausts
# (2TE10, 2TE116: fans 1.2-1.6 m across down the roof's middle; a shunter's hood) are a
# band narrower than the body over its cooling section, at one end, while the cab's roof
# at the other is one sheet out to its shoulders: the middle dips below the shoulders over
# one half only. A container wagon with boxes of two colours or an empty slot changes its
# middle and shoulders together (a box is 2.44 m wide), a covered hopper's hatches and an
# open wagon's heaps repeat in both halves, a roof sheet has none. Altgen tuning 208-211
# and 240-247 (session 50, base code), "flat" tops textured along read 15.3 m or longer
# (the candidates of the "uneven_halves" and length rules), at 0.3-0.75 m pixels: 71 of
# the 72 locomotives read 0.1 or more, against 28 other cars (typed locomotive before:
# 62 locomotives and 66 other cars; by _half_asymmetry from 0.2 alone: 58 and 36).
_LOCOMOTIVE_BAND_HALVES = 0.1
# Least band difference (:func:`_band_halves`) with which halves of unequal brightness
# (_half_asymmetry from _LOCOMOTIVE_HALF_ASYMMETRY) still read as a locomotive's: fans
# dark across most of the roof darken the shoulders too, and the band then differs less,
# but a top whose middle and shoulders change together (boxes of two colours on a
# container wagon, a load heaped higher at one end) differs hardly at all. Same scenes:
# 72 locomotives against 31 other cars with it, 71 against 28 without.
_MIN_BAND_HALVES_UNEVEN = 0.05
# Coarsest pixel (m) at which the middle (within 0.5 m of the centreline) and the
# shoulders (0.75-1.2 m out) are read apart (:func:`_band_halves`); coarser, a fan band
# 1.2-1.6 m across blurs into its shoulders (same scenes at 1 m: 13 of 20 locomotives
# from 0.1 against 29 other cars; by _half_asymmetry from 0.2: 13 against 22), and the
# halves' brightness (_half_asymmetry) decides.
_MAX_BAND_RES_M = 0.75


# Lowest crest reading (:func:`_crest_relief`) of a barrel: its middle less its shoulders
# over the top's brightness. A barrel is convex: its crest faces the sky and, whatever
# the sun's position short of a low sun across the track (which the sun-lit half vets
# instead), is its brightest part; a walkway or dome on it is narrower than the middle
# band read here (within 0.5 m of the axis) and darkens it only in part. A middle markedly
# darker than the shoulders is a band of fans or a hood down a locomotive's roof, or an
# open car's load below its rims. Altgen tuning 204-211 and 240-247 (session 50, base
# code), unvetted "cylinder" tops from 16.9 m typed locomotives by length: all 17 tank
# cars read -0.131 or more, the 2 locomotives -0.117 and -0.317, 5 of 6 open wagons and
# hoppers -0.285 or less; tests/test_railcar_types_s30.py's 2TE10 roof (four fans over
# one half) reads -0.25.
_MIN_BARREL_CREST = -0.2


def _crest_relief(strip: Strip, s0: int, s1: int, path: np.ndarray | None = None) -> float:
    """How much brighter (no unit) the middle of the top between samples ``s0`` and ``s1``
    is than its shoulders, over the top's mean brightness; negative where darker.

    Over the middle two thirds of the body along (the coupler gaps' and ends' shade left
    out), visible bands, above the path radiance ``path`` (reflectance units; None: as
    recorded): the mean within 0.5 m of the centreline less the mean 0.75-1.2 m out
    (inside every 1520 mm body's 1.5-1.65 m half-width), over the mean within 1.2 m.
    NaN where either band has no finite sample or the top's mean is not positive.
    """
    n = s1 - s0
    core = slice(s0 + n // 6, s1 - n // 6) if n >= 6 else slice(s0, s1)
    v = strip.values[:3][:, :, core]
    if path is not None:
        v = v - np.asarray(path[:3], v.dtype)[:, None, None]
    off = np.abs(strip.across_m)
    middle = quiet_nanmean(v[:, off <= 0.5])
    shoulders = quiet_nanmean(v[:, (off >= 0.75) & (off <= 1.2)])
    top = quiet_nanmean(v[:, off <= 1.2])
    if not (np.isfinite(middle) and np.isfinite(shoulders) and top > 0):
        return float("nan")
    return float((middle - shoulders) / top)


def _band_halves(strip: Strip, s0: int, s1: int, path: np.ndarray | None = None) -> float:
    """Difference (no unit) between the two halves of the top between samples ``s0`` and
    ``s1`` in how much darker the middle is than the shoulders, over the top's mean
    brightness.

    Per sample along the car, visible bands, above the path radiance ``path``
    (reflectance units; None: as recorded): the shoulders' mean (0.75-1.2 m from the
    centreline, inside every 1520 mm car body's 1.5-1.65 m half-width) less the middle's
    (within 0.5 m), smoothed over 1 m, a metre off each end (the coupler gaps' and end
    walls' shade); the difference between the means of its two halves, divided by the
    top's mean brightness within 1.2 m. A locomotive's fan band over its cooling section
    makes it large (see ``_LOCOMOTIVE_BAND_HALVES``). NaN where no sample lies in the
    middle or on the shoulders, fewer than 2 samples in either half are read, or the
    top's mean is not positive.
    """
    v = strip.values[:3][:, :, s0:s1]
    if path is not None:
        v = v - np.asarray(path[:3], v.dtype)[:, None, None]
    off = np.abs(strip.across_m)
    middle, shoulders = off <= 0.5, (off >= 0.75) & (off <= 1.2)
    if not middle.any() or not shoulders.any():
        return float("nan")
    dip = (quiet_nanmean(v[:, shoulders], axis=(0, 1)) - quiet_nanmean(v[:, middle], axis=(0, 1))).astype("float64")
    top = quiet_nanmean(v[:, off <= 1.2], axis=(0, 1))
    end = max(1, int(round(1.0 / strip.step_m)))
    if not np.isfinite(dip).any():
        return float("nan")
    dip = ndimage.uniform_filter1d(np.where(np.isfinite(dip), dip, float(np.nanmedian(dip))), end,
                                   mode="nearest")[end:s1 - s0 - end]
    mean = float(quiet_nanmean(top[end:s1 - s0 - end])) if dip.size else float("nan")
    half = dip.size // 2
    if half < 2 or not mean > 0:
        return float("nan")
    return float(abs(dip[:half].mean() - dip[half:].mean()) / mean)


def _uneven_roof(strip: Strip, s0: int, s1: int, path: np.ndarray | None, resolution_m: float, *,
                 along: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> bool | None:
    """Whether the top between samples ``s0`` and ``s1`` is textured along unevenly as a
    locomotive section's roof is (its cab at one end, its cooling fans over the other);
    None where it is not read.

    At pixels (``resolution_m``, m) of ``_MAX_BAND_RES_M`` or finer, by the fan band over
    one half (:func:`_band_halves` from ``_LOCOMOTIVE_BAND_HALVES``), or by halves of
    unequal brightness (:func:`_half_asymmetry` from ``_LOCOMOTIVE_HALF_ASYMMETRY``) with
    the band differing by ``_MIN_BAND_HALVES_UNEVEN`` or more; coarser or of unknown size,
    by the halves' brightness alone. ``path``, ``along``: as for :func:`_half_asymmetry`.
    """
    if not resolution_m <= _MAX_BAND_RES_M:
        halves = _half_asymmetry(strip, s0, s1, path, along=along)
        return None if not np.isfinite(halves) else bool(halves >= _LOCOMOTIVE_HALF_ASYMMETRY)
    band = _band_halves(strip, s0, s1, path)
    if not np.isfinite(band):
        return None
    if band >= _LOCOMOTIVE_BAND_HALVES:
        return True
    # The halves' brightness is read only where the band alone does not decide.
    return bool(band >= _MIN_BAND_HALVES_UNEVEN
                and _half_asymmetry(strip, s0, s1, path, along=along) >= _LOCOMOTIVE_HALF_ASYMMETRY)


def _stepped_along(strip: Strip, s0: int, s1: int, path: np.ndarray | None = None, *,
                   along: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> bool:
    """Whether the top between samples ``s0`` and ``s1`` varies along the car by one step
    between two even levels (:func:`_one_step` under ``_JOINT_RESIDUAL_SHARE``), wherever
    along it: the shape the edge of a long shadow over part of a roof or deck (a
    building's, a taller car's, under a low sun) leaves, or two boxes of their own
    colours. :func:`_along_texture` does not mask such an edge: the ground beside the car
    steps with it rather than dipping under its running median, and only narrow crossing
    shadows dip. This is a test of the shape only: it does not check that the ground
    steps too, and a shadow with two edges on the top (a pulse on the roof alone, a
    building's shadow 5 m or more wide) is not one step. A covered hopper's hatches and
    an open wagon's heaps vary within each part and leave more (see
    ``_JOINT_RESIDUAL_SHARE``)."""
    share, _ = _one_step(strip, s0, s1, path, along=along)
    return bool(share < _JOINT_RESIDUAL_SHARE)


# Width (m) of a top read as an ISO container's (2.44 m) with blur and sampling; car
# bodies of the 1520 mm fleet are 3.0-3.3 m wide. Read at pixels of 0.75 m or finer:
# each edge then moves by half a pixel or more between the two.
_CONTAINER_WIDTH_M = (2.25, 2.6)
_MAX_WIDTH_RES_M = 0.75
# Coarsest pixel (m) at which a top's width (:func:`_top_width`) tells a roof over a
# 3.1-3.3 m body from a flat wagon's 2.87 m deck (:data:`_MIN_FULL_TOP_M`): the two differ
# by 0.2-0.4 m, under half a pixel from 0.75 m. There the read drifts by as much (a 3.3 m
# roof read 3.27, 3.17 and 3.04 m at 0.5, 0.75 and 1.0 m) and a deck-coloured ballast
# shoulder beside a deck widens it, so 0.75-1.0 m decks read as roofs (review of the
# session 19 width rule, finding 1).
_MAX_FULL_TOP_RES_M = 0.5
# Least colour contrast (relative) between a top and the ground beyond it on each side
# for its edge there to be read.
_WIDTH_CONTRAST = 0.15


# Most a top's shoulders (0.6-1.0 m from the centreline) may differ from its middle, as a
# share of the middle-to-ground contrast, for the top to be read as a container's. On the
# own simulator a container's shoulders measured 0.12-0.27, a locomotive's (fan band down
# the roof) 0.79-0.93 (review of ca3fedd).
_MAX_SHOULDER_STEP = 0.5
# Most a container's shoulders may step (:func:`_shoulder_step`) at pixels of
# _MAX_CONTAINER_SHOULDER_RES_M or finer. An ISO container's roof is one sheet out to
# 1.22 m from the centreline, so its shoulders (0.6-1.0 m out) are its roof: the own
# simulator's containers stepped 0.12-0.27 (review of ca3fedd), altgen container wagons
# read by their width at 0.3-0.5 m 0.17-0.18 at the median and 0.23-0.24 at the 90th
# percentile (tuning 20-23 and 50-53). A bulk load heaped inside an open wagon's walls,
# read as narrow as a container where its crest stands clear of the walls, falls away
# towards its flanks (same scenes: open wagons 0.33-0.35 at the median).
# Cost, measured on altgen (64 scenes a slice, session 39): container wagons lost to the
# other rules 1, 1, 1, 4, 2 on slices 20, 50, 120, 170, 140 and 4, 5 on 80, 180, against
# open wagons and hoppers gained 18, 8, 8, 0, 6 and 20, 10 (170 is a net loss of 4).
# The margin over the own simulator's largest container step (0.27) is only 0.03.
# Risks: the step is divided by the middle-to-ground contrast, so a low-contrast
# container (a grey box on grey concrete) reads a larger step, as does a dented,
# snow-patched or two-coloured roof near its shoulders; and a track misregistered
# sideways by more than about 0.2-0.25 m now fails the test (about 0.3 m under
# _MAX_SHOULDER_STEP; see _shoulder_step).
_MAX_CONTAINER_SHOULDER_STEP = 0.3
# Coarsest pixel (m) at which _MAX_CONTAINER_SHOULDER_STEP applies (coarser,
# _MAX_SHOULDER_STEP). At 0.3 m the shoulder samples lie clear of the container's blurred
# edge (1.22 m out) and an ideal centred container steps about 0.01; at 0.5 m the outer
# shoulder sample (1.0 m) lies within a pixel and the blur of that edge and the step is
# already about 0.09 (RRAILT's probe, PSF sigma 0.4 px); at 0.75 m the edge blurs well
# into the shoulders and altgen container wagons stepped 0.23 at the median (tuning
# 20-23 and 50-53), so there the limit would drop containers. Its own constant, not
# _MAX_FULL_TOP_RES_M (the same value, set for reading a full top's width).
_MAX_CONTAINER_SHOULDER_RES_M = 0.5
# Least top width (m, :func:`_top_width`) read as a top at a walled or roofed car's full
# width: the 1520 mm boxcars, hoppers and open wagons are 3.1-3.3 m wide over the body,
# a flat wagon's deck (13-401, 13-9004) 2.87 m and an ISO container 2.44 m. Between the
# deck and the narrowest full-width top (3.1 m), nearer the deck: altgen tuning boxcar
# roofs read 2.97-3.4 m at 0.3-0.75 m pixels (a few 2.5-2.8 m at 1 m), decks 2.7-2.9 m.
_MIN_FULL_TOP_M = 2.95
# Least top width (m, :func:`_top_width`) at which a step at mid-car is not read as two
# containers' joint (:func:`_container_joint`): ISO containers are 2.44 m wide and read
# 2.5-2.75 m at 1 m pixels (altgen tuning 100-103), while an open wagon's load or a
# hopper's roof spans its 3.1-3.3 m body (roofs read 2.63-3.04 m at 1 m there, a blurred
# dark load 2.68-2.84 m; 3.0-3.3 m at 0.3-0.5 m). At 1 m the two overlap by a tenth of a
# metre: the gate drops only the clearly full-width tops (a single heap's two faces, lit
# and shaded, make such a step), and the step's shape decides the rest.
_MAX_JOINT_WIDTH_M = 2.75


# Least top width (m, :func:`_top_width`) at which an even, short, not dark "flat" top of
# unread height at pixels coarser than _MAX_WIDTH_RES_M is read as a roofed body's full
# width, a boxcar's roof read short, not an ISO container (rule even_short_roof in
# _short_top_rule). A container (2.44 m) reads 2.5-2.75 m at 1 m, a boxcar's roof
# (3.25-3.3 m) 2.75 m or more for 41 of 45 roofs read short on BOXDECK's tuning scenes;
# the net gain was flat from 2.7 to 2.8 m (+36, +38, +37 at 2.7, 2.75, 2.8 m). Its own
# constant, not _MAX_JOINT_WIDTH_M's (the same value): there over-reading only leaves the
# step's shape to decide, here it flips the class, so the two are retuned apart (review
# RBOXDECK, H2). A bare deck (2.87 m) reads as wide at 1 m (see _MAX_FULL_TOP_RES_M):
# width alone does not separate it, the one-sided shadow test (_low_deck) guards it.
_MIN_ROOF_WIDTH_COARSE_M = 2.75


def _shoulder_step(strip: Strip, s0: int, s1: int) -> float:
    """Largest colour distance (relative, no unit) between the top's middle and its
    shoulders, between samples ``s0`` and ``s1``.

    The middle is the median colour within 0.6 m of the centreline, the shoulders are the
    samples more than 0.6 m and at most 1.0 m out on either side, and the distance is
    divided by that between the middle and the ground 2.1 m out and more (both sides).
    An ISO container's roof (2.44 m) is even out to 1.2 m, so its shoulders step by a
    small share; a top whose middle is a narrower band (a locomotive's fans or hood)
    steps by most of the contrast. 0 where no sample lies on the shoulders; NaN where
    the profile is not finite.

    The shoulders are taken about the centreline, so a container on a track misregistered
    sideways steps more the further it is shifted. An ideal container roof (pixel box,
    PSF sigma 0.4 px; RRAILT's probe, session 39) shifted by 0, 0.1, 0.2 and 0.3 m
    stepped by 0.09, 0.15, 0.26 and 0.41 at 0.5 m pixels and by 0.01, 0.04, 0.14 and
    0.35 at 0.3 m pixels. At these pixels the old limit alone (``_MAX_SHOULDER_STEP``,
    0.5, still used coarser than ``_MAX_CONTAINER_SHOULDER_RES_M``, not probed there)
    tolerated a shift of about 0.3 m; ``_MAX_CONTAINER_SHOULDER_STEP`` (0.3) tolerates
    only about 0.2-0.25 m, and a container shifted further falls to the other rules (a
    known cost of the stricter limit). About the middle of the top's two read edges
    instead, the simulator's locomotive (edges at the fan band on the sun side, at its
    shadow on the other) stepped by 0.21 only and passed.
    """
    got = _across_profile(strip, s0, s1)
    if got is None:
        return float("nan")
    a, prof, top = got
    beyond = np.median(prof[:, np.abs(a) >= 2.1], axis=1)
    span = float(np.linalg.norm(beyond - top))
    shoulder = (np.abs(a) > 0.6) & (np.abs(a) <= 1.0)
    if not shoulder.any():
        return 0.0
    step = np.linalg.norm(prof[:, shoulder] - top[:, None], axis=0) / max(span, 1e-6)
    return float(step.max())


def _across_profile(strip: Strip, s0: int, s1: int):
    """Mean colour across the track over the middle two thirds of samples ``s0:s1``.

    Returns ``(across_m, profile (band, across), top colour (band,))``, the top being the
    median within 0.6 m of the centreline; None where the profile is not finite.
    """
    a = strip.across_m
    n = s1 - s0
    # The car's ends (couplers, gaps, the neighbour's shade) would blur the profile.
    core = slice(s0 + n // 6, s1 - n // 6) if n >= 6 else slice(s0, s1)
    prof = quiet_nanmean(strip.values[:, :, core], axis=2)   # (band, across)
    if not np.all(np.isfinite(prof)):
        return None
    return a, prof, np.median(prof[:, np.abs(a) <= 0.6], axis=1)


def _top_width(strip: Strip, s0: int, s1: int) -> float:
    """Width (m) of the top between samples ``s0`` and ``s1``: across the track, where the
    colour leaves that of its middle (within 0.6 m of the centreline) half-way towards
    that of the ground beyond it (2.1 m out and more), on each side; NaN where a side's
    contrast is under ``_WIDTH_CONTRAST`` or the samples are not finite.

    Both edges are read, so a sideways misregistration of the track moves the top, not
    its width.
    """
    got = _across_profile(strip, s0, s1)
    if got is None:
        return float("nan")
    a, prof, top = got
    width = 0.0
    for side in (1, -1):
        sel = a * side >= 0
        aa, pp = np.abs(a[sel]), prof[:, sel]
        order = np.argsort(aa)
        aa, pp = aa[order], pp[:, order]
        beyond = np.median(pp[:, aa >= 2.1], axis=1) if np.any(aa >= 2.1) else np.full(top.shape, np.nan)
        span = float(np.linalg.norm(beyond - top))
        if not np.isfinite(span) or span < _WIDTH_CONTRAST * max(float(np.linalg.norm(top)), 1e-6):
            return float("nan")
        d = np.linalg.norm(pp - top[:, None], axis=0) / span
        out = np.flatnonzero((d >= 0.5) & (aa > 0.6))
        if not out.size:
            return float("nan")
        i = int(out[0])
        if i == 0:
            width += float(aa[0])
            continue
        width += float(aa[i - 1] + (0.5 - d[i - 1]) / max(d[i] - d[i - 1], 1e-6) * (aa[i] - aa[i - 1]))
    return width


# Relative brightness change across the top (max - min over mean, within 1 m of the
# centreline): a lit cylinder changes by a quarter or more; a plain roof sheet by about
# a tenth at most (ribs, blur of its edges).
_CYLINDER_RELIEF = 0.25
_PLAIN_RELIEF = 0.12


def _look(strip: Strip, s0: int, s1: int, lit_b: float, *, sun_left: bool | None = None,
          shading: float = float("nan"), path: np.ndarray | None = None,
          flank_glow: float = float("nan"), resolution_m: float = float("nan"),
          anti_flank: tuple[float, float] | None = None,
          lit_visible: float | None = None) -> str | None:
    """How the body between samples ``s0`` and ``s1`` looks across the track:
    ``"open"`` (interior below the rims, a flat top too dark for a roof or deck, or a top
    with relief whose sun-facing half is the darker one: an open car's floor in its
    sun-side wall's shade), ``"cylinder"``, ``"plain"`` (a flat top even to a tenth),
    ``"flat"`` (other flat tops), or None where the samples are not finite.

    A top glows (its sun-facing half the brighter, half-way to the ratio ``shading``
    predicts for a cylinder) over the half bands ``_HALF_BAND_M`` or, failing that, over
    its flanks alone (``_FLANK_BAND_M``) by ``flank_glow`` or more (from
    :func:`_flank_glow`; NaN: not read): a barrel's crest carries a dome, a manhole
    platform or a walkway, as bright or as dark on both sides of the axis, which pulls
    the half ratio towards one (session 25, altgen tuning 0-15 at 0.5 m: tank cars typed
    open wagons with a relief of 1.2-1.8 read a half ratio of 1.1-1.3 against 1.5
    required).

    Where pixels (``resolution_m``, m) are ``_CREST_BLUR_RES_M`` or coarser, the anti-sun
    flank is read too (:func:`_anti_flank_share`): a top with relief whose sun-facing half
    glows is no cylinder when that flank keeps ``_FLAT_ANTI_FLANK`` or more of its crest's
    light (a dark load with the lit ground beside it blurred into that half: session 34,
    altgen tuning 100-103, 66 open wagons typed tank cars at 0.5-1 m), and a top with
    relief that does not glow, or a top too dark for a roof, is one when that flank keeps
    under ``_BARREL_ANTI_FLANK`` (a bright walkway evening the halves, a black barrel's
    relief under ``_MIN_RELIEF_STEP``). Where pixels are coarser than
    ``_ANY_TOP_FLANK_RES_M`` (0.75 m) the first guard holds for a top of any brightness (a
    pale top's glow is the lit ground blurred over its 3 m width too). ``anti_flank``
    holds these two shares for the scene's sun, NaN where it does not part a barrel from
    a roof or a flat top (:func:`_anti_flank_limits`; None: both read whatever the sun),
    and ``lit_visible`` the lit ground's visible brightness the flank's guard holds the
    ground beside it against (None: ``lit_b``)."""
    a = np.abs(strip.across_m)
    n = s1 - s0
    core = slice(s0 + n // 6, s1 - n // 6) if n >= 6 else slice(s0, s1)
    inner = quiet_nanmean(strip.values[:, a <= 0.8, core])
    # The sun-side wall is lit; the other may sit in the wall's own shadow.
    walls = [quiet_nanmean(strip.values[:, (strip.across_m * side >= 1.15) & (strip.across_m * side <= 1.45), core])
             for side in (1, -1)]
    # With the sun across the track, a cylinder is brighter on its sun-facing half by
    # the ratio ``shading`` predicts (:func:`_cylinder_shading`); an open car is
    # darker there, where the sun-side wall shades its floor or load; a flat or gently
    # cambered top is within a few tenths of even. Half-way to the predicted ratio
    # decides (measured above the path radiance ``path``, which haze adds to both).
    if np.isfinite(shading) and shading < _MIN_SHADING:
        shading = float("nan")
    asym = _sun_asymmetry(strip, core, sun_left, path) if sun_left is not None and np.isfinite(shading) else np.nan
    glow_min = 1.0 + 0.5 * (min(shading, _MAX_SEEN_SHADING) - 1.0) if np.isfinite(asym) else np.nan
    glowing = bool(np.isfinite(asym) and asym >= glow_min)
    if np.isfinite(asym) and not glowing and np.isfinite(flank_glow):
        # The flanks alone, against their own threshold: the crest's fittings, symmetric
        # about the axis, are left out.
        flank = _sun_asymmetry(strip, core, sun_left, path, _FLANK_BAND_M)
        glowing = bool(np.isfinite(flank) and flank >= flank_glow)
    if np.isfinite(inner) and np.all(np.isfinite(walls)) and inner < 0.8 * max(walls) and (
            not glowing or inner < 0.8 * min(walls)):
        # A lit cylinder's sun-side flank is brighter than its crest, but never its other
        # flank: an interior darker than both rims is an open car's, whichever half glows.
        return "open"
    top = quiet_nanmean(strip.values[:, a <= 1.0, core], axis=(0, 2))   # brightness per across position
    if not (top.size >= 3 and np.all(np.isfinite(top)) and top.mean() > 0):
        return None
    # Relief is measured above the path radiance too: haze adds the same light to the
    # crest and the flanks and would flatten a black barrel (reflecting 3-5 %) to a sheet.
    net = top - float(np.mean(path)) if path is not None else top
    relief = (net.max() - net.min()) / max(float(net.mean()), 1e-4 * float(top.mean()))
    step_min = _MIN_RELIEF_STEP * (lit_b / _TYPICAL_LIT if np.isfinite(lit_b) and lit_b > 0 else 1.0)
    # A barrel shades its own anti-sun flank; a flat top (a load levelled in a wagon, a
    # roof, a deck) does not, whatever light the ground beside it blurs into its
    # sun-facing half (see _anti_flank_share).
    anti = _anti_flank_share(strip, core, sun_left, path, resolution_m, lit_b if lit_visible is None else lit_visible)
    barrel_max, flat_min = (_BARREL_ANTI_FLANK, _FLAT_ANTI_FLANK) if anti_flank is None else anti_flank
    if relief >= _CYLINDER_RELIEF and net.max() - net.min() >= step_min:
        if not np.isfinite(asym) or glowing:
            if (np.isfinite(asym) and anti >= flat_min and np.isfinite(lit_b)
                    and (resolution_m > _ANY_TOP_FLANK_RES_M or _top_dark(strip, s0, s1, lit_b, path) is True)):
                # A glow without a shaded flank: lit ground blurred into the sun-facing
                # half of a dark top. Only where the sun shines across the track (asym
                # read): with the sun along it a barrel's flanks are lit alike, and as
                # brightly as the ground blurred onto them. At _ANY_TOP_FLANK_RES_M and
                # finer only on a top under half the lit ground's light (coal, ore; review
                # RTYPEM H1): an arched roof or a pale barrel with a dark walkway keeps its
                # far flank light too, and is no flat top (brown boxcar roofs under a 20-35
                # degree sun became flatcars, white tank cars with a dark walkway
                # gondolas); coarser, on any top (the walkway is under half a pixel: see
                # _ANY_TOP_FLANK_RES_M).
                return "flat"
            return "cylinder"
        if asym <= 1.0 / glow_min:
            return "open"
        if anti < barrel_max:
            # Relief with no glow, but a flank as dark as only a barrel's: the crest's
            # walkway or dome (galvanised, 5 times a black barrel's light) made the
            # halves even.
            return "cylinder"
        # Relief evenly spread over both halves: a load's heaps, hatches, containers.
        return "flat"
    if np.isfinite(lit_b) and top.mean() < 0.5 * lit_b:
        if relief >= _CYLINDER_RELIEF and anti < barrel_max:
            # A black barrel (3-5 % reflectance) changes across its top by less than
            # _MIN_RELIEF_STEP in reflectance, but its anti-sun flank is still as dark,
            # against its crest, as only a barrel's; a dark load's is not (the car's
            # shadow on the ground beside it is brighter than coal).
            return "cylinder"
        return "open"
    return "plain" if relief < _PLAIN_RELIEF else "flat"


# Skylight's share of the light on flat ground in the visible bands (a fifth to a third
# under a clear sky; more at low sun), for the shading of a cylinder.
_SKY_SHARE = 0.25
# Highest sun-half over other-half ratio expected to be seen on a cylinder, whatever
# the geometry predicts: under a low sun the model's anti-sun half gets almost no
# direct light, but light reflected from the ground and neighbouring cars, skylight
# (a third of the light at 20-28 degrees) and the sensor's blur across a 1.5 m radius
# (half a pixel to a pixel and a half) fill it to about half the sun half's.
_MAX_SEEN_SHADING = 2.0
# Smallest change in reflectance across a top that is read as relief once the path
# radiance is taken off: about four 8-bit DN (0.7 reflectance full scale), three times
# the shot and read noise of a mean over the top; a black barrel's crest exceeds its
# flanks by 0.02-0.03, a coal load's heaps by less.
_MIN_RELIEF_STEP = 0.01
# Lit ballast's visible reflectance that step is stated against; the step scales with
# the scene's own lit ground, so digital numbers are judged as reflectance is.
_TYPICAL_LIT = 0.18
# Below this predicted sun-half ratio (sun near the zenith or near the track's line) a
# cylinder's glow is within what flat roofs and loads show (about 30 %, _GLOW_RATIO):
# the sun side is no evidence either way.
_MIN_SHADING = 1.3
# Radius (m) of a tank car's barrel (3.0-3.2 m wide bodies).
_BARREL_RADIUS_M = 1.5


def _cylinder_shading(line: LineString, azimuth_deg: float | None, elevation_deg: float | None,
                      band_m: tuple[float, float] = _HALF_BAND_M, radius_m: float = _BARREL_RADIUS_M) -> float:
    """Brightness of a Lambertian cylinder of radius ``radius_m`` (m) lying along the
    track on its sun-facing half over its other half (the bands ``band_m`` off its axis,
    m, seen from above), with ``_SKY_SHARE`` of the light from the sky. NaN when the sun
    is unknown or shines within about 12 degrees of the track (no side to compare)."""
    across = _sun_across(line, azimuth_deg, elevation_deg)
    if not np.isfinite(across):
        return float("nan")
    e = math.radians(min(max(elevation_deg, 1.0), 89.0))
    sn = np.linspace(band_m[0], band_m[1], 18) / radius_m   # sine of the normal's tilt
    up = np.sqrt(1.0 - sn ** 2) * math.sin(e)
    side = sn * math.cos(e) * across
    sun_half = np.mean(np.clip(up + side, 0, None)) / math.sin(e)
    anti_half = np.mean(np.clip(up - side, 0, None)) / math.sin(e)
    return float(((1 - _SKY_SHARE) * sun_half + _SKY_SHARE) / ((1 - _SKY_SHARE) * anti_half + _SKY_SHARE))


# Radius (m) of an arched car roof (boxcars, covered hoppers): rising about 0.3 m from
# the eaves to the ridge over a 3.2-3.3 m body, its flanks tilt 8-15 degrees where a
# barrel's tilt 24-47.
_ROOF_RADIUS_M = 4.4


def _flank_glow(line: LineString, azimuth_deg: float | None, elevation_deg: float | None) -> float:
    """Sun-half over other-half ratio of a top's flanks (``_FLANK_BAND_M``) from which it
    is read as a barrel: half-way between what an arched roof (``_ROOF_RADIUS_M``) and
    a barrel (``_BARREL_RADIUS_M``, at most ``_MAX_SEEN_SHADING``) would show under
    this sun (:func:`_cylinder_shading`); no unit. NaN where the sun is unknown or shines
    within about 12 degrees of the track, or where the roof's ratio reaches the barrel's
    capped one (a sun under about 24 degrees square to the track): nothing parts them.

    Under a low sun an arched roof's flanks differ by up to 1.9 times (25 degrees, the sun
    square to the track), as much as the barrel's capped ratio allows: the threshold
    rises with it, so this reading does not take roofs for barrels there (session 25,
    altgen tuning 16-31 at 0.3 m, mostly under a low sun: 30 more covered hoppers typed
    tank cars with the threshold half-way from one to the barrel's ratio instead). The
    half-band test before it is not so guarded: it already types a 4.4 m arched roof a
    tank car under a sun of 30 degrees or lower.
    """
    barrel = _cylinder_shading(line, azimuth_deg, elevation_deg, band_m=_FLANK_BAND_M)
    roof = _cylinder_shading(line, azimuth_deg, elevation_deg, band_m=_FLANK_BAND_M, radius_m=_ROOF_RADIUS_M)
    if not (np.isfinite(barrel) and np.isfinite(roof)):
        return float("nan")
    top = min(barrel, _MAX_SEEN_SHADING)
    if top <= roof:
        return float("nan")
    return 0.5 * (roof + top)


def _dark_object_light(strips: Mapping[str, Strip]) -> np.ndarray:
    """Per band, the darkest light any sample of the strips shows (reflectance units;
    the 0.1th percentile, so a few noisy or dead pixels do not set it; 0 where a band
    has no finite sample or the percentile is negative).

    Path radiance (haze) plus what the darkest object reflects: on a rail yard a black
    car or wooden sleepers in shadow, a few hundredths at most in clear air.
    """
    v = np.concatenate([s.values.reshape(s.values.shape[0], -1) for s in strips.values()], axis=1)
    out = np.zeros(v.shape[0])
    for b in range(v.shape[0]):
        x = v[b][np.isfinite(v[b])]
        if x.size:
            out[b] = max(float(np.percentile(x, 0.1)), 0.0)
    return out


# Least darkest light, as a share of the lit ground's colour above it (mean over bands),
# for the spreads' floors to be taken on the recorded light: altgen hazy yards about 2-3
# (0.12-0.15 against 0.04-0.07), the own simulator's near-clear tumangang seed 32 0.40
# (0.039 against 0.095). At 1.0 some altgen hazy scenes lost the floors (tuning hazy
# MAPE 0.122 -> 0.126); at 0.5 the tuning hazy figures were those of the floors taken
# everywhere.
_HAZE_FLOOR_SHARE = 0.5


def _recorded_spread_floors(refs, light: np.ndarray) -> dict[str, np.ndarray]:
    """``refs`` (learnt above the darkest light ``light``, per band) with the floors of
    their spreads taken on the light as recorded, as :class:`GroundModel` sets them.

    The floors (0.004 + 3 % of the colour lit, 0.003 + 3 % in shadow) stand for the
    sensor's noise and quantisation and the ground's texture, which grow with the light
    the sensor records, path radiance included: taken on the subtracted colours (a few
    hundredths under haze) they shrank to half, and an empty track's centre (sleepers
    brighter than the ground between tracks) read as a car (altgen hazy 0.3 m yards:
    58 false cars on empty tracks against 36).

    Only in haze: where the darkest light (mean over bands) is at least
    ``_HAZE_FLOOR_SHARE`` of the lit ground's colour above it. In near-clear air the
    darkest light is a dark material's own colour (a few hundredths), the subtraction
    shrank the floors little, and raising them cut a low-contrast flat wagon in two
    (own simulator, tumangang seed 32 misregistered; review of ca3fedd, finding 3).
    There ``refs`` is returned as it is.
    """
    light = np.asarray(light, dtype="float64")
    if not float(np.nanmean(light)) >= _HAZE_FLOOR_SHARE * float(np.nanmean(refs["lit"])):
        return refs
    return {**refs, "lit_sd": np.maximum(refs["lit_sd"], lit_spread_floor(refs["lit"] + light)),
            "shadow_sd": np.maximum(refs["shadow_sd"], shadow_spread_floor(refs["shadow"] + light))}


def _offset(strip: Strip, light: np.ndarray) -> Strip:
    """``strip`` with ``light`` (per band) subtracted from every sample."""
    values = (strip.values - np.asarray(light, strip.values.dtype)[:, None, None]).astype(strip.values.dtype)
    return Strip(values, strip.along_m, strip.across_m, strip.x, strip.y, strip.step_m)


# Least share of the lit ground's light (above the path radiance) that shadowed ground
# keeps from the sky, per band (blue, green, red; then any other band): the diffuse share
# of the irradiance on flat ground in clear air under a high sun, about a fifth in blue,
# a seventh in green and a tenth in red, and more under haze, which scatters the sun's
# light into the sky, or a low sun. Per band, because one share for all (0.1) read a
# clear scene's sky-lit shadow, with no darker object in it, as mostly path radiance in
# blue (review R of 48a585a: shadow read at 0.10 of lit where it is 0.32).
_MIN_SHADOW_SKY_SHARE = (0.2, 0.14, 0.1)
_MIN_SHADOW_SKY_SHARE_OTHER = 0.1


def _sky_share(n_bands: int) -> np.ndarray:
    """``_MIN_SHADOW_SKY_SHARE`` for an image of ``n_bands`` bands (B, G, R first)."""
    share = np.full(n_bands, _MIN_SHADOW_SKY_SHARE_OTHER)
    k = min(n_bands, len(_MIN_SHADOW_SKY_SHARE))
    share[:k] = _MIN_SHADOW_SKY_SHARE[:k]
    return share


def _path_radiance(strips: Mapping[str, Strip], shadow: np.ndarray,
                   lit: np.ndarray | None = None) -> np.ndarray | None:
    """Per band, the darkest light the strips show (0.1th percentile): the path radiance
    haze adds to every pixel, plus the little a black car in shadow reflects; capped
    where the ground's shadow colour ``shadow`` would keep less than
    its share ``_MIN_SHADOW_SKY_SHARE`` of the lit ground's colour ``lit`` above it (both as
    recorded, per band): shadowed ground still reflects the sky's light, so without a
    dark object in the scene (the percentile is then lit ground itself, or in clear air
    sky-lit shadow) the cap holds the estimate under the shadow's own colour. Without
    ``lit`` (or where it is not finite) the cap is half the shadow colour. None where
    the shadow colour is unknown.

    Under haze the shadow colour is mostly path radiance (a shadow 0.12-0.14 in blue
    where the darkest car reads 0.10-0.12, altgen hazy yards): half of it took off only
    about six tenths of the path, and the ratios read above it (a barrel's relief and
    its brighter sun-facing half in :func:`_look`, a shadow's depth in :func:`_tall`, a
    top's texture along the car) were read flattened (tuning 0-15, hazy type accuracy
    0.50 against 0.63 clear).
    """
    shadow = np.asarray(shadow, dtype="float64")
    if not np.all(np.isfinite(shadow)):
        return None
    lit = None if lit is None else np.asarray(lit, dtype="float64")
    if lit is not None and lit.shape == shadow.shape and np.all(np.isfinite(lit)):
        # (shadow - p) >= s * (lit - p)  <=>  p <= (shadow - s * lit) / (1 - s)
        s = _sky_share(shadow.size)
        cap = np.clip((shadow - s * lit) / (1.0 - s), 0.0, None)
    else:
        cap = 0.5 * np.clip(shadow, 0.0, None)
    vals = [s.values.reshape(s.values.shape[0], -1) for s in strips.values()]
    v = np.concatenate(vals, axis=1) if vals else np.empty((4, 0))
    out = np.zeros(v.shape[0])
    for b in range(v.shape[0]):
        x = v[b][np.isfinite(v[b])]
        if x.size:
            out[b] = min(max(float(np.percentile(x, 0.1)), 0.0), float(cap[b]))
    return out


# Offset (m) from the centreline at which a top's anti-sun flank is read: on a 1.5 m
# barrel its plate faces 42 degrees away from the crest, inside every 3.0-3.2 m body and
# clear of the dome, platform and walkway its crest carries (0.5 m either side).
_ANTI_FLANK_M = 1.0
# Share of the crest's visible light (above the path radiance) that the anti-sun flank
# keeps. A barrel's flank, tilted 42 degrees away, gets at most cos(42) = 0.75 of the
# crest's direct light under a sun along the track and less with the sun across it (0.1-
# 0.6 under the scenes' suns), its dark lower half and the car's shadow blurred in; a
# flat top, a roof cambered by a few degrees or a load levelled in an open wagon keeps all
# its light there under a sun high enough across the track (under a low one an arched
# roof's flank is shaded too, and a high one lights a barrel's: _anti_flank_limits reads
# each threshold only where it parts them), less the blur of its edge into the shadow
# beyond (altgen tuning 100-103, tops with relief: tank cars 0.05-0.66 at 0.3-1 m
# pixels, nine in ten under 0.6; every other car 0.62 and more, nine in ten 0.7 and
# more). Under
# _BARREL_ANTI_FLANK a top with relief is a barrel though its halves are even (a bright
# walkway on its crest); from _FLAT_ANTI_FLANK it is not one, though its sun-facing half
# glows (a dark load, the lit ground beside it blurred into that half); between, the
# glow decides.
_BARREL_ANTI_FLANK = 0.6
_FLAT_ANTI_FLANK = 0.7
# Finest pixel (m) at which the anti-sun flank is read: from half a metre the blur (a
# pixel and the PSF) carries the lit ground beside a 3.0-3.2 m body (from 1.5 m out)
# into the sun-facing half band (out to 1.1 m, _HALF_BAND_M), where it passes for a
# barrel's glow, and spreads a walkway (0.5 m wide) on a barrel's crest over both half
# bands, evening them. Finer, both are resolved and the half bands are read as they are
# (at 0.3 m the crest's own fittings, a dark walkway on a white barrel, set the crest's
# light apart from the plate's: altgen tuning 100-103, 5 such tank cars read 0.8-0.9).
_CREST_BLUR_RES_M = 0.5
# Pixel size (m) coarser than which a top whose sun-facing half glows but whose anti-sun
# flank keeps _FLAT_ANTI_FLANK or more of its crest's light is no barrel whatever its
# brightness (not only a top darker than half the lit ground, as finer): a barrel's
# plate 1.0 m off its axis faces 42 degrees away from the crest and, with the sun high
# enough across the track to part the shapes (_anti_flank_limits), gets under 0.6 of the
# crest's light; a pale barrel's dark walkway (0.5 m wide on its crest), which at finer
# pixels darkens the crest sample and lifts that share (review RTYPEM H1), covers at most
# half of a pixel coarser than 0.75 m and is blurred with the bright plate beside it.
# The glow of a pale flat top there is the lit ground beside its sun-facing edge
# blurred over the 3 m body (three pixels). Coarser than 0.75 m no width rule reads a
# roof as a container (_MAX_WIDTH_RES_M), so a cambered roof read "flat" keeps its
# length rules (boxcar). (Session 40, altgen tuning 20-23, 50-53, 170-173 at 1.0 m,
# cylinders whose flank share was read: tank cars 0.68 at most, none from 0.7 in 146;
# 23 of 43 open wagons, hoppers, container wagons, boxcars and locomotives from 0.7;
# review RRAILT1, fresh slices 70-73 and 150-153: no car gained alone, 1 with the
# even-short-flat rule of _short_top_rule: kept for its physics, not its gain.)
# The same limit as _MAX_WIDTH_RES_M, on which the boxcar roofs' safety above rests.
_ANY_TOP_FLANK_RES_M = _MAX_WIDTH_RES_M
# Offset (m) of the ground beside the body on the anti-sun side, checked for the car's
# own shadow: clear of the widest body's edge (1.66 m) by about half a metre.
_ANTI_GROUND_M = 2.1
# Least ratio of the crest's visible light to that of the shadowed ground beside the body
# on the anti-sun side (_ANTI_GROUND_M out, both above the path radiance) for the flank's
# share to tell a shape. At 0.75-1 m pixels the sample 1.0 m out takes a quarter to a
# third of its light from the ground beyond the body's edge (1.5 m out): where that
# ground, its albedo times the sky's share, is about as bright as the crest (a black
# barrel, 3.5 %, beside its shadow on ballast, sand or snow), the share reads the
# ground's albedo against the car's, not the barrel's shading, and a black barrel's
# reads as high as a coal load's (review RTYPE of session 34, H1: 0.71-0.87 under a sun
# of 45-62 degrees at 0.75-1 m, ground 0.2). Half as bright again, the ground's part
# lifts a barrel's share by at most about 0.2, inside the margin to _FLAT_ANTI_FLANK.
_CREST_OVER_SHADOW = 1.5


def _anti_flank_share(strip: Strip, core: slice, sun_left: bool | None, path: np.ndarray | None,
                      resolution_m: float, lit_b: float = float("nan")) -> float:
    """Visible brightness above the path radiance ``path`` on the anti-sun flank
    (``_ANTI_FLANK_M`` off the centreline) over that on the centreline, over the along-track
    samples ``core``; no unit. NaN where the sun's side is unknown (``sun_left`` None), the
    pixels (``resolution_m``, m) are finer than ``_CREST_BLUR_RES_M`` (or NaN), either
    brightness is not finite or the centreline's is not positive, and where the ground
    beside the body on the anti-sun side (``_ANTI_GROUND_M`` out) is lit: at least
    ``_SHADOW_RATIO`` of the lit ballast's visible brightness ``lit_b`` (as recorded;
    NaN: not checked). There the blur carries lit ground onto the flank, not the car's
    own shadow: under a sun of 25 degrees or lower a tank car's shadow falls beyond the
    open space under its barrel, and a black barrel's flank keeps as much light as a flat
    top's (own simulator, test_railcars_s15: barrels under an 18 degree sun).

    Both are interpolated across from the strip's rows, so the reading does not depend on
    where its samples fall about the centreline (``-2.6 + k * step``, not symmetric at
    0.3 and 0.5 m steps; see :func:`_sun_asymmetry`) nor on the side the sun is on.
    """
    if sun_left is None or not resolution_m >= _CREST_BLUR_RES_M:
        return float("nan")
    v = strip.values[:3, :, core]
    if path is not None:
        v = v - np.asarray(path[:3], v.dtype)[:, None, None]
    b = quiet_nanmean(v, axis=(0, 2))
    a = strip.across_m if sun_left else -strip.across_m
    ok = np.isfinite(b)
    if ok.sum() < 2:
        return float("nan")
    order = np.argsort(a[ok])
    aa, bb = a[ok][order], b[ok][order]
    if aa[0] > -_ANTI_FLANK_M or aa[-1] < 0.0:
        return float("nan")
    if aa[0] > -_ANTI_GROUND_M:
        return float("nan")
    ground = float(np.interp(-_ANTI_GROUND_M, aa, bb))
    if np.isfinite(lit_b):
        lit = lit_b - (float(np.mean(np.asarray(path[:3], "float64"))) if path is not None else 0.0)
        if ground >= _SHADOW_RATIO * lit:
            return float("nan")
    crest = float(np.interp(0.0, aa, bb))
    flank = float(np.interp(-_ANTI_FLANK_M, aa, bb))
    if not (crest > 0 and crest >= _CREST_OVER_SHADOW * ground):
        return float("nan")
    return flank / crest


def _anti_flank_limits(line: LineString, azimuth_deg: float | None,
                       elevation_deg: float | None) -> tuple[float, float]:
    """Anti-sun flank shares (:func:`_anti_flank_share`; no unit) under which a top is a
    barrel (``_BARREL_ANTI_FLANK``) and from which it is none (``_FLAT_ANTI_FLANK``), each
    NaN (not read) where this sun does not part the shapes it stands between: a Lambertian
    arched roof (``_ROOF_RADIUS_M``) and a barrel (``_BARREL_RADIUS_M``), ``_ANTI_FLANK_M``
    off the axis, with ``_SKY_SHARE`` of the light from the sky, unblurred.

    Only the sun's elevation in the plane across the track counts (the flanks' normals lie
    in it): tan of it is tan(elevation) over |sin| of the angle between the track and the
    sun's azimuth (NaN azimuth or elevation: both NaN). Under a low sun across the track an
    arched roof's anti-sun flank is shaded too (0.61 of its crest at 25 degrees, 0.51 at
    20: review RTYPE of session 34, H2, boxcar roofs typed tank cars under an 18-22 degree
    sun), so the barrel share is read only where the roof's keeps ``_FLAT_ANTI_FLANK`` or
    more (about 31 degrees or higher across the track). Under a high sun a barrel's anti-sun
    flank is lit too (0.58 at 65 degrees, 0.67 at 75), so the flat share is read only where
    the barrel's keeps under ``_BARREL_ANTI_FLANK`` (up to about 67 degrees).
    """
    if azimuth_deg is None or elevation_deg is None:
        return float("nan"), float("nan")
    cot = _across_share(line, azimuth_deg) / math.tan(math.radians(min(max(elevation_deg, 1.0), 89.0)))

    def share(radius_m: float) -> float:
        sn = _ANTI_FLANK_M / radius_m   # sine of the flank's tilt
        return (1 - _SKY_SHARE) * max(math.sqrt(1.0 - sn ** 2) - sn * cot, 0.0) + _SKY_SHARE

    barrel_max = _BARREL_ANTI_FLANK if share(_ROOF_RADIUS_M) >= _FLAT_ANTI_FLANK else float("nan")
    flat_min = _FLAT_ANTI_FLANK if share(_BARREL_RADIUS_M) < _BARREL_ANTI_FLANK else float("nan")
    return barrel_max, flat_min


def _sun_asymmetry(strip: Strip, core: slice, sun_left: bool, path: np.ndarray | None,
                   band_m: tuple[float, float] = _HALF_BAND_M) -> float:
    """Visible brightness above the path radiance on the sun-facing half of the body
    over that on its other half (bands ``band_m`` off the centreline, m).

    Known limit: the strip's samples across (``-2.6 + k * step``) are not symmetric about
    the centreline at steps of 0.3 and 0.5 m, so the two halves are read at different
    offsets (at 0.5 m the flank band is one sample on the positive side, two on the
    negative), and the result depends on which side the sun is on. A review measured it
    (altgen tuning 48-63, 0.5 m): tank cars typed tank 254/315 with the sun on the left,
    139/156 on the right. Reading both halves at mirrored positions removes the
    dependence but scores lower until the thresholds are set again on such reads."""
    a = strip.across_m if sun_left else -strip.across_m
    lo, hi = band_m
    v = strip.values[:3, :, core]
    if path is not None:
        v = v - np.asarray(path[:3], v.dtype)[:, None, None]
    b = quiet_nanmean(v, axis=(0, 2))
    sun_h = quiet_nanmean(b[(a >= lo) & (a <= hi)])
    anti_h = quiet_nanmean(b[(a <= -lo) & (a >= -hi)])
    if not (np.isfinite(sun_h) and np.isfinite(anti_h)):
        return float("nan")
    return float(sun_h / max(anti_h, 1e-4))


def _detection(strip: Strip, a_m: float, b_m: float, ctype: str, score: float, tid: str,
               type_from: str = "image") -> Detection:
    """The detection of the car from ``a_m`` to ``b_m`` (m along ``strip``) typed ``ctype``.

    ``attrs`` carries ``length_m`` (m) and, where the class is its coupled neighbours'
    (``type_from`` "neighbours", :func:`_block_types`), ``type_from`` = "neighbours" so
    that such a class can be told from one read from the image (absent: read from the
    image). ``score`` is the detection's confidence and does not change with it: the car
    was found as surely either way.
    """
    x0, y0 = strip.point(a_m)
    x1, y1 = strip.point(b_m)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    angle = math.atan2(y1 - y0, x1 - x0)
    length = math.hypot(x1 - x0, y1 - y0)
    attrs = {"length_m": round(length, 2)}
    if type_from == "neighbours":
        attrs["type_from"] = "neighbours"
    return Detection("railcar", ctype, oriented_rect(cx, cy, angle, length, CAR_WIDTHS_M[ctype]), score, tid,
                     attrs)
