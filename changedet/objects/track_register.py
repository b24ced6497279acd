"""Register track centrelines to an image: one sideways shift per scene, read from the tracks.

Track centrelines come from a map (OSM, an AOI drawn on another image) and an image's
georeferencing has its own error: the two disagree by a pixel or two of a VHR image (0.3-3
m), one shift for the whole scene. At 0.75-1 m pixels a 1.5 px offset puts half of a 3 m
car body outside the band read as "the car", and every reading across it (its sun-facing
half, its walls, its width) is made about the wrong line. The shift is estimated once from
all tracks together, before anything is sampled.

The cue is the symmetry of a track about its true centreline: rails 1.52 m apart, sleepers
2.6-2.75 m long and the ballast bed are laid symmetric about it, and so are the bodies of
the cars on it. The one thing that breaks the symmetry in a nadir image is the sun: cast
shadows, and the shaded flank of a tank's barrel, darken the anti-sun side. A window of
track is therefore compared with its mirror image about each candidate centre, in log
brightness (a shadow is a factor on the light), with a darker anti-sun side weighed
lightly (``_SHADOW_SIDE_WEIGHT``) and a brighter one in full. Each window gives a cost per
candidate offset along its own normal; a 2-D shift ``d`` costs every window the cost of
``n . d``, summed over all windows of all tracks, so straight and curved tracks weigh in
alike. Where all tracks are parallel only the common cross-track component is read (the
along-track one shifts nothing the image shows about the tracks).

Kept at zero (refused) where the evidence is weak: too few windows, a single readable track
(nothing to check a platform or road flush along its side against), a cost minimum that is
shallow, an optimum at the edge of the search (then the features are wrong, not
misregistered: the correction must stay small), tracks whose own offsets disagree with
one common shift, or a shift under a tenth of a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import shapely
from scipy import ndimage
from shapely.affinity import translate
from shapely.geometry import LineString

from changedet.grid import GridSpec

# Half-width (m) of the band compared with its mirror image: the ballast bed is about 3.6
# m wide and car bodies 2.9-3.3 m; wider and the yard ground between tracks (not laid to
# any centreline) and the next track's cars weigh in.
_SYMMETRY_RADIUS_M = 1.8
# Across-track sampling (m) of the profiles, and of the offsets tried.
_ACROSS_STEP_M = 0.1
# Length (m) of track averaged into one profile: short enough to keep a car's profile
# apart from the empty bed beside it, long enough to average the sleepers (0.54 m pitch).
_WINDOW_M = 2.0
# Weight of a darker anti-sun side against a brighter one (both squared log ratios):
# shadows only darken, and only on the anti-sun side. Altgen tuning scenes 0-15, error of
# the scene's estimate (median/80th percentile, m; before the refusals below and the
# cost cap): 1.0 -> 0.09/0.21, 0.2 -> 0.06/0.15, 0.0 -> 0.16/0.46 (nothing then ties
# the anti-sun side down).
_SHADOW_SIDE_WEIGHT = 0.2
# The sun is taken as beside the track where the across-track share of its direction is
# at least this (about 12 degrees off the track, as the counter's side rules).
_MIN_SUN_ACROSS = 0.2
# Largest shift (m) applied; beyond it the features are wrong, not misregistered. Parallel
# tracks 4.8 m apart are also symmetric about the midline between them, so the search
# stops short of half the closest spacing (_MAX_SPACING_SHARE).
MAX_SHIFT_M = 3.0
_MAX_SPACING_SHARE = 0.45
# Two stretches of track are side by side (their spacing limits the search) within this
# angle (degrees): tracks of a yard run parallel (concentric on curves) to within about a
# degree, while a crossover or turnout leaves at 5-10 degrees (1:6 to 1:11 frogs); neither
# it nor a track crossing at an angle is a spacing.
_PARALLEL_DEG = 3.0
# A minimum within this (m) of the search limit is refused: it may be the slope of one
# beyond (a lone track over bare ground: tests/test_objects_altgen_rail.py's plain tops,
# a 2.95 m shift found where there is none).
_EDGE_MARGIN_M = 0.3
# Evidence needed: windows read (all tracks together), and the depth of the summed cost's
# minimum below its median over the offsets tried (a share of that median).
_MIN_WINDOWS = 10
_MIN_DEPTH = 0.1
# The tracks' own offsets may stray from the common shift by this much (m, median over
# windows) before the premise of one shift for the scene is rejected (each track mapped
# with its own error, or symmetric features that are not the track). Altgen tuning scenes
# 0-15: median 0.04-0.08 m, 95th percentile 0.1-0.46 m; of the 6 scenes over 0.3 m, 3 had
# estimates off by 0.3-0.4 m. The own simulator's Khasan yard (no misregistration, four
# tracks not all parallel): 0.89 m, where a 0.9 m shift applied took it from 26/26 cars
# found to 25 of 41 detections; the altgen test yard seed 11 (tests/
# test_objects_altgen_rail.py): 0.54 m, a 0.78 m error, 15 -> 5 cars found.
_MAX_DISAGREEMENT_M = 0.3
# Shifts under this share of a pixel are not applied: below what the estimate resolves
# (altgen: median error 0.07-0.08 px), and an unregistered scene should come out as it
# went in, not resampled by a few centimetres.
_MIN_SHIFT_PX = 0.1
# Tracks whose normals spread less than this (smallest eigenvalue of the mean outer
# product of the window normals; 0.03 is about 10 degrees) are taken as parallel.
_MIN_NORMAL_SPREAD = 0.03
# Each window's cost (a share of its own median over the offsets) is capped here before
# the sum: a window speaks for the offsets near its minimum, and one whose mirror holds
# a road edge, a building or a neighbour's car does not outvote the rest far from it.
# Altgen tuning scenes 0-15, error of the scene's estimate at 1 m pixels (median/80th
# percentile/largest, m): no cap 0.11/0.23/1.44 (and 1.93 at 0.75 m), 1.0 0.08/0.21/1.99,
# 0.7 0.08/0.19/0.85, 0.5 0.08/0.18/0.85 with 0.85 at 0.5 m.
_COST_CAP = 0.7


@dataclass(frozen=True)
class TrackShift:
    """The shift that registers a scene's track centrelines to its image.

    Attributes
    ----------
    dx_m, dy_m : float
        Shift (map metres, image CRS) to add to the given centrelines; 0 when refused.
    applied : bool
        Whether the shift is non-zero (the evidence passed).
    reason : str
        Why it was refused, or "" when applied.
    depth : float
        Depth of the cost minimum below the median cost (share of the median; 0-1).
    n_windows : int
        Windows of track read, all tracks together.
    offsets_m : dict of str to float
        Each track's own best cross-track offset (m, positive to the left of its
        direction; NaN where it has too few windows), for diagnostics.
    disagreement_m : float
        Median (over windows) of how far each track's own offset lies from the common
        shift's cross-track part (m); NaN where not computed.
    """

    dx_m: float
    dy_m: float
    applied: bool
    reason: str
    depth: float
    n_windows: int
    offsets_m: Mapping[str, float] = field(default_factory=dict)
    disagreement_m: float = float("nan")

    def apply(self, tracks: Mapping[str, LineString]) -> dict[str, LineString]:
        """``tracks`` moved by the shift (unchanged when refused)."""
        return shift_tracks(tracks, self.dx_m, self.dy_m)


def shift_tracks(tracks: Mapping[str, LineString], dx_m: float, dy_m: float) -> dict[str, LineString]:
    """Every line of ``tracks`` translated by (``dx_m``, ``dy_m``) map metres."""
    if dx_m == 0.0 and dy_m == 0.0:
        return dict(tracks)
    return {tid: translate(line, dx_m, dy_m) for tid, line in tracks.items()}


def _closest_spacing(lines: list[LineString]) -> float:
    """Smallest spacing (m) between two near-parallel stretches of different tracks.

    Read at nine points along each line against every other line, both ways, where the
    other line runs within ``_PARALLEL_DEG`` of it at its closest point: a crossover,
    ladder or a track crossing at an angle limits nothing (where lines meet, the distance
    falls to 0 across a junction that is not a spacing). Infinite when no two tracks run
    side by side.
    """
    if len(lines) < 2:
        return math.inf
    s = np.linspace(0.1, 0.9, 9)
    sin_max = math.sin(math.radians(_PARALLEL_DEG))

    def direction(line, at):
        a = shapely.line_interpolate_point(line, np.clip(at - 1.0, 0, line.length))
        b = shapely.line_interpolate_point(line, np.clip(at + 1.0, 0, line.length))
        d = shapely.get_coordinates(b) - shapely.get_coordinates(a)
        return d / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-12)[:, None]

    pts = [shapely.line_interpolate_point(ln, s * ln.length) for ln in lines]
    dirs = [direction(ln, s * ln.length) for ln in lines]
    best = math.inf
    for a, la in enumerate(lines):
        for b, lb in enumerate(lines):
            if a == b:
                continue
            dist = shapely.distance(pts[a], lb)
            near = dist > 0.5
            if not near.any() or float(dist[near].min()) >= best:
                continue
            tb = direction(lb, shapely.line_locate_point(lb, pts[a]))
            cross = np.abs(dirs[a][:, 0] * tb[:, 1] - dirs[a][:, 1] * tb[:, 0])
            ok = near & (cross <= sin_max)
            if ok.any():
                best = min(best, float(dist[ok].min()))
    return best


def window_costs(pix: np.ndarray, grid: GridSpec, line: LineString, *, search_m: float,
                 sun_azimuth_deg: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror-symmetry cost of each window of a track, for each candidate centre.

    Parameters
    ----------
    pix : ndarray (band, row, col)
        Reflectance (or any positive brightness); NaN where not to be read.
    grid : GridSpec
        The image's grid (metric CRS).
    line : LineString
        Track centreline as given, in the grid's CRS.
    search_m : float
        Largest offset (m) tried on either side of the line.
    sun_azimuth_deg : float, optional
        Solar azimuth (degrees clockwise from north); without it both sides weigh alike.

    Returns
    -------
    offsets : ndarray (n_offsets,)
        Candidate centres (m across, positive to the left of the line's direction), at
        ``_ACROSS_STEP_M``.
    normals : ndarray (n_windows, 2)
        Unit normal (x, y; to the left) of each window read.
    costs : ndarray (n_windows, n_offsets)
        Mean squared log-brightness difference between each side and its mirror, over
        ``_SYMMETRY_RADIUS_M`` and all bands. Windows with any sample off the image or
        masked are left out.
    """
    k = int(math.floor(search_m / _ACROSS_STEP_M + 1e-9))
    j = int(round(_SYMMETRY_RADIUS_M / _ACROSS_STEP_M))
    offsets = np.arange(-k, k + 1) * _ACROSS_STEP_M
    across = np.arange(-(k + j), k + j + 1) * _ACROSS_STEP_M
    length = float(line.length)
    step = min(grid.resolution, 0.5)
    per = max(1, int(round(_WINDOW_M / step)))
    n_win = int(length / step) // per
    empty = (offsets, np.zeros((0, 2)), np.zeros((0, offsets.size)))
    if n_win == 0 or pix.shape[0] == 0:
        return empty
    along = (np.arange(n_win * per) + 0.5) * step

    def at(d):  # points along the line (one GEOS call, not one per point)
        return shapely.get_coordinates(shapely.line_interpolate_point(line, d))

    pts = at(along)
    # Normals from the direction over a metre either way: a curve's, not a vertex's.
    ahead = at(np.minimum(along + 1.0, length))
    behind = at(np.maximum(along - 1.0, 0.0))
    tangent = ahead - behind
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-12)[:, None]
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    x = pts[None, :, 0] + across[:, None] * normal[None, :, 0]
    y = pts[None, :, 1] + across[:, None] * normal[None, :, 1]
    rows, cols = grid.rowcol(x, y)
    vals = np.stack([ndimage.map_coordinates(b, [rows, cols], order=1, mode="constant", cval=np.nan)
                     for b in pix])
    # (band, across, window): window means, then logs (a shadow is a factor on the light).
    prof = vals.reshape(vals.shape[0], across.size, n_win, per).mean(axis=3)
    ok = np.all(np.isfinite(prof), axis=(0, 1)) & np.all(prof > 0, axis=(0, 1))
    if not ok.any():
        return empty
    prof = np.log(prof[:, :, ok])
    wnormal = normal.reshape(n_win, per, 2).mean(axis=1)[ok]
    wnormal /= np.maximum(np.hypot(wnormal[:, 0], wnormal[:, 1]), 1e-12)[:, None]
    # Which side faces the sun, window by window (curves turn): +1 left, -1 right, 0 along.
    sun_side = np.zeros(wnormal.shape[0])
    if sun_azimuth_deg is not None and np.isfinite(sun_azimuth_deg):
        az = math.radians(sun_azimuth_deg)
        s = wnormal @ np.array([math.sin(az), math.cos(az)])
        sun_side = np.where(np.abs(s) >= _MIN_SUN_ACROSS, np.sign(s), 0.0)
    c0 = k + j
    m = np.arange(1, j + 1)
    costs = np.empty((wnormal.shape[0], offsets.size))
    for i, o in enumerate(range(-k, k + 1)):
        left = prof[:, c0 + o + m, :]   # (band, j, window)
        right = prof[:, c0 + o - m, :]
        # anti-sun side minus sun side: negative where a shadow darkens it
        r = np.where(sun_side > 0, right - left, left - right)
        w = np.where((sun_side[None, None] != 0) & (r < 0), _SHADOW_SIDE_WEIGHT, 1.0)
        costs[:, i] = np.mean(w * r ** 2, axis=(0, 1))
    return offsets, wnormal, costs


def estimate_track_shift(pix: np.ndarray, grid: GridSpec, tracks: Mapping[str, LineString], *,
                         sun_azimuth_deg: float | None = None, max_shift_m: float = MAX_SHIFT_M) -> TrackShift:
    """Estimate the one shift that registers all ``tracks`` to the image.

    Parameters
    ----------
    pix : ndarray (band, row, col)
        Reflectance (or any positive brightness); NaN where not to be read (clouds).
    grid : GridSpec
        The image's grid (metric CRS).
    tracks : mapping of str to LineString
        Track centrelines as given, in the grid's CRS.
    sun_azimuth_deg : float, optional
        Solar azimuth (degrees clockwise from north): the anti-sun side may be darker
        (shadows) without counting against a candidate centre.
    max_shift_m : float
        Largest shift (m) looked for; also capped at ``_MAX_SPACING_SHARE`` of the
        closest spacing between two tracks side by side (a yard is symmetric about the
        midline between two tracks too), and a minimum within ``_EDGE_MARGIN_M`` of that
        limit is refused.

    Notes
    -----
    Known limits (review R3, session 24): without the sun azimuth both sides weigh alike
    and cast shadows pull the estimate by about 0.1 m at 0.5 m pixels; tracks fanning out
    by under about 10 degrees are searched along their mean normal only; off-nadir roof
    displacement pulls it towards the roofs (0.1-0.3 m for 0.5-1 m of lean).

    Returns
    -------
    TrackShift
        The shift to add to the centrelines (zero, with the reason, when refused).
    """
    # float32 once for all tracks (each band is read once per track)
    pix = np.asarray(pix, dtype="float32")
    usable = {tid: ln for tid, ln in tracks.items() if ln is not None and not ln.is_empty and ln.length > 0}
    gap = _closest_spacing(list(usable.values()))
    search = min(float(max_shift_m), _MAX_SPACING_SHARE * gap) if math.isfinite(gap) else float(max_shift_m)
    if search < 2 * _ACROSS_STEP_M:
        return TrackShift(0.0, 0.0, False, "tracks too close together to search", 0.0, 0)
    offsets, normals, costs, per_track, track_normal, track_n = None, [], [], {}, {}, {}
    for tid, line in usable.items():
        offsets, nrm, c = window_costs(pix, grid, line, search_m=search, sun_azimuth_deg=sun_azimuth_deg)
        med = np.median(c, axis=1) if c.size else np.zeros(0)
        keep = med > 0
        nrm, c = nrm[keep], c[keep] / med[keep, None]
        c = np.minimum(c, _COST_CAP)
        normals.append(nrm)
        costs.append(c)
        per_track[tid] = float(offsets[int(np.argmin(c.mean(axis=0)))]) if c.shape[0] >= 3 else float("nan")
        if c.shape[0] >= 3:
            nm = nrm.mean(axis=0)
            track_normal[tid] = nm / max(float(np.hypot(*nm)), 1e-12)
            track_n[tid] = c.shape[0]
    n = int(sum(c.shape[0] for c in costs))
    if n < _MIN_WINDOWS:
        return TrackShift(0.0, 0.0, False, f"only {n} windows of track readable", 0.0, n, per_track)
    if len(track_normal) < 2:
        # One track cannot be checked against another: a platform, road or verge flush
        # along one side of it reads as a shift of 0.2-0.6 m (review R3, session 24).
        return TrackShift(0.0, 0.0, False, "one readable track: a platform or road beside it cannot be told "
                          "from misregistration", 0.0, n, per_track)
    normals = np.concatenate(normals)
    costs = np.concatenate(costs)
    # Candidate shifts: along the common normal where the tracks are parallel, else a disk.
    cov = normals.T @ normals / n
    evals, evecs = np.linalg.eigh(cov)
    step = _ACROSS_STEP_M
    if evals[0] < _MIN_NORMAL_SPREAD:
        e = evecs[:, 1]
        t = np.arange(-round(search / step), round(search / step) + 1) * step
        cand = t[:, None] * e[None, :]
        shape = (t.size,)
    else:
        g = np.arange(-round(search / step), round(search / step) + 1) * step
        gx, gy = np.meshgrid(g, g, indexing="ij")
        cand = np.column_stack([gx.ravel(), gy.ravel()])
        shape = gx.shape
    total = np.zeros(cand.shape[0])
    for w0 in range(0, n, 1024):  # chunks: candidates x windows grows large on big yards
        proj = cand @ normals[w0:w0 + 1024].T   # (candidate, window): each window's offset under the shift
        for w in range(proj.shape[1]):
            total += np.interp(proj[:, w], offsets, costs[w0 + w], left=np.inf, right=np.inf)
    total /= n
    inside = np.isfinite(total)
    if len(shape) == 2:
        inside &= np.hypot(cand[:, 0], cand[:, 1]) <= search + 1e-9
        total = np.where(inside, total, np.inf)
    best = int(np.argmin(total))
    med = float(np.median(total[inside]))
    depth = float((med - total[best]) / med) if med > 0 else 0.0
    d = cand[best].copy()
    # Sub-step refinement: a parabola through the minimum and its neighbours, per axis.
    idx = np.unravel_index(best, shape)
    tot = total.reshape(shape)
    on_edge = False
    for ax in range(len(shape)):
        i = idx[ax]
        if i == 0 or i == shape[ax] - 1:
            on_edge = True
            continue
        lo = list(idx); hi = list(idx)
        lo[ax] -= 1; hi[ax] += 1
        a, b, c = tot[tuple(lo)], tot[idx], tot[tuple(hi)]
        if not (np.isfinite(a) and np.isfinite(c)):
            on_edge = True
            continue
        den = a - 2 * b + c
        frac = 0.5 * (a - c) / den if den > 0 else 0.0
        if len(shape) == 1:
            d = d + frac * step * evecs[:, 1]
        else:
            d[ax] += frac * step
    # A minimum is known as one only with room to rise on both sides of it: one within
    # _EDGE_MARGIN_M of the search limit may be the slope of one beyond.
    if math.hypot(*d) > search - _EDGE_MARGIN_M:
        on_edge = True
    # One shift for the scene is the premise: where the tracks' own offsets disagree with
    # it (each mapped with its own error, or symmetric features that are not the track),
    # it is not applied.
    resid = [(abs(per_track[t] - float(track_normal[t] @ d)), track_n[t]) for t in track_normal]
    disagree = float("nan")
    if resid:
        r, wt = np.array(resid).T
        order = np.argsort(r)
        disagree = float(r[order][np.searchsorted(np.cumsum(wt[order]), 0.5 * wt.sum())])
    if on_edge:
        return TrackShift(0.0, 0.0, False, f"best shift at the search limit ({search:.1f} m): features, not "
                          "registration, disagree", depth, n, per_track, disagree)
    if depth < _MIN_DEPTH:
        return TrackShift(0.0, 0.0, False, f"weak evidence (cost minimum {depth:.2f} below the median, "
                          f"{_MIN_DEPTH} needed)", depth, n, per_track, disagree)
    if disagree > _MAX_DISAGREEMENT_M:
        return TrackShift(0.0, 0.0, False, f"tracks disagree ({disagree:.2f} m from a common shift, "
                          f"{_MAX_DISAGREEMENT_M} m allowed)", depth, n, per_track, disagree)
    if math.hypot(*d) < _MIN_SHIFT_PX * grid.resolution:
        return TrackShift(0.0, 0.0, False, f"shift {math.hypot(*d):.2f} m is under {_MIN_SHIFT_PX} pixel",
                          depth, n, per_track, disagree)
    return TrackShift(float(d[0]), float(d[1]), True, "", depth, n, per_track, disagree)
