"""Railcar estimate on Sentinel-1 GRD backscatter (VV and/or VH, about 10 m pixels).

Cars are 3 m wide: at 10 m a car fills a third of a pixel across the track, and yard
tracks 4.5-5.5 m apart share pixels, so no pixel says which track a car stands on nor
whether one car or two light it. What radar does give is brightness that adds up:
steel cars (dihedrals with the ground, cylinders, flat roofs) backscatter far more than
ballast, and the backscatter integrated across a track, or across a bundle of tracks
closer than about 1.5 pixels, at a position along it is

    E(s) = b + n(s) * c + speckle

where ``b`` is the empty bed's backscatter integrated over the strip, ``n(s)`` the
number of its tracks holding a car at ``s`` (0, 1, ... up to the number of tracks) and
``c`` one car's backscatter integrated across its width (sigma0 x metres). Blurring
(the sensor's impulse response, resampling) moves backscatter between pixels but
keeps its sum, so the strip's sum stays exact where single pixels do not.

Neither ``b`` nor ``c`` is taken from a table (car backscatter varies by type,
incidence and the track's angle to the orbit by factors of ten): both are learnt from
the scene, as the comb of levels ``b + n c`` that best explains ``E`` along every strip
(:func:`fit_levels`: a hidden Markov chain of ``n`` that moves by at most one car per
position, gamma-distributed speckle, expectation-maximisation). The empty level ``b``
comes from the empty stretches (a yard's ladders, gaps between strings), the car level
``c`` from the steps between levels. Combs of half or twice the car level that explain
the data almost as well are averaged in by their likelihood, which widens the
uncertainty where the scene cannot tell them apart. Where no comb can be learnt (a
near-empty yard, a bed whose texture swings as much as a car), positions above a CFAR
threshold over the empty level are occupied, holding between one car and one per
track. The occupied length is the backscatter above the empty level over ``c``,
summed along, which counts two cars side by side twice and a car's end by the part it
covers.

On a busy bundle no position along it is empty and the comb's empty level lands on
cars (which then read as the bed, and two or three cars' step as one car). Where the
strip can be prolonged past the tracks' ends onto bare ground (the yard's throat), the
empty level is read there instead (:func:`_bed_estimate`; raised to the track's own
bare stretches where it has them, the rails lift a yard's bed), and one car's level is
taken from two physical handles rather than from the comb: at most one car per track
(the bright stretches over the number of tracks) and the car-to-car spread of the
returns (the variance of the excess over its mean); their disagreement widens the
uncertainty. The comb then only says whether cars are present at all. One train
along a bundle holds one car at every position it covers, which those handles read as
several side by side: where the cars' backscatter across the bundle is no wider than
one track's (:func:`_occupied_tracks`, the sensor's blur read from the speckle), one
car's level is the mean excess where a car stands.

Cars = occupied length over a mean car length (:data:`MEAN_PITCH_M`, with its spread
:data:`PITCH_SPREAD`); the uncertainty combines speckle and the fit of ``b`` and ``c``
(a block bootstrap along the strips, refitting both) with the car-length spread.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import shapely
import xarray as xr
from scipy import ndimage, optimize, special, stats
from shapely.geometry import LineString

from changedet.grid import GridSpec
from changedet.objects.checks import BandOrderError, ResolutionError, check_features, check_metric
from changedet.objects.common import CountResult
from changedet.objects.strips import sample_strip

RADAR_BANDS = ("VV", "VH", "HH", "HV")
# Mixed freight: bodies 12-18 m (tank 12, flat 13.4, gondola 13.9, box 15.7, locomotive
# 18) plus a coupler gap of about 1 m: a mean pitch of 15 m, and a yard's mean varies by
# about 12 % with its mix (all tank cars: 13 m; all boxcars: 16.8 m).
MEAN_PITCH_M = 15.0
PITCH_SPREAD = 0.12
CAR_WIDTH_M = 3.0
# Coarsest pixel accepted: Sentinel-1 IW GRD is 10 m (20 x 22 m resolution); a
# reprojected grid is a little coarser.
SAR_MAX_RES_M = 12.0
# Finest pixel accepted: the levels model one position per pixel along the track, a
# car spanning one or two of them (3-10 m: the medium resolution the estimate is for);
# finer radar resolves cars, their layover and multipath, which no model here reads.
SAR_MIN_RES_M = 3.0
# Tracks closer than this many pixels share pixels: their cars are estimated together.
RESOLVED_SPACING_PX = 1.5
# False-alarm probability per position of the occupied/empty decision reported.
CFAR_PFA = 1e-3
# Bootstrap draws for the uncertainty, and the block length (positions) resampled
# together: about two car lengths at 10 m, longer than the speckle's correlation.
N_BOOTSTRAP = 50
# Most changes of occupancy per position along a strip: a string of cars starts or ends
# on one of its tracks at most every few positions (strings are several cars long).
MAX_CHANGE_RATE = 0.2
# Smallest car level accepted, in spreads of the empty level: a car must lift its strip
# clear of the bed's speckle (the premise of the method: steel far brighter than
# ballast); finer combs read the bed's texture as cars.
MIN_CAR_CONTRAST = 3.0
# Fewest empty positions (posterior mass) a fit must find over all strips: two pixels.
MIN_EMPTY_POSITIONS = 2.0
MIN_COMB_POSITIONS = 30
# Fits whose log-likelihoods differ by less than this are tied; the coarser comb wins.
LOGLIK_TIE = 0.1
BLOCK = 6
# The empty bed is read beyond the tracks' ends (the yard's throat and ladder: the same
# ballast, no car stands there), from BEYOND_GAP_M to BEYOND_GAP_M + BEYOND_LENGTH_M
# past each end: a car at the very end spreads over about one resolution cell (20 x 22
# m) and the centrelines may be misregistered by a few metres.
BEYOND_GAP_M = 20.0
BEYOND_LENGTH_M = 40.0
# The bed beyond the ends need not match the bed under the cars exactly: ballast and
# ground sigma0 drift by about 0.6 dB (15 %) over a few hundred metres.
BED_REL_SPREAD = 0.15
# The bed along a yard track may read up to this factor (3 dB) above the ground past its
# ends (the rails' and wires' line returns, cleaner ballast); and the fewest positions
# (50 m of track) that read that low for their level to stand for the yard's bed.
BED_LIFT = 2.0
MIN_BARE_POSITIONS = 5
# Cars are present when the track's mean excess over that bed exceeds this many of its
# standard errors (speckle of the few bed positions and the 15 % drift), or a comb is learnt.
PRESENCE_Z = 3.0
# Spread (natural log) of the car level learnt from one scene when its two estimates
# agree: each rests on an assumption (the brightest stretches full; cars' returns
# varying about as much as their mean) that holds only to tens of per cent.
CAR_LEVEL_LOG_SD = 0.35
# Ground farther than this from every given track (m) measures the speckle's correlation
# between neighbouring pixels (cars, rails and ballast lie within it), over the
# tracks' box widened by SPECKLE_MARGIN_M; the local mean it is divided by spans
# SPECKLE_WINDOW_PX pixels (texture coarser than that is not speckle).
SPECKLE_CLEAR_M = 30.0
SPECKLE_MARGIN_M = 300.0
SPECKLE_WINDOW_PX = 9
# A bundle's cars are taken to stand on one track where their width across it is nearer
# one track's than two tracks' (fewer than 1.5 tracks wide).
ONE_TRACK_WIDTH = 1.5
# Scatter (relative, in variance) of a profile's fitted width over one track, from the
# speckle of a few hundred metres of track.
WIDTH_VAR_SCATTER = 0.15


def radar_bands(image: xr.DataArray) -> list[str]:
    """Names of the radar polarisation bands of ``image`` (VV, VH, HH, HV), in its order."""
    if "band" not in image.dims:
        return []
    return [str(b) for b in image["band"].values if str(b).upper() in RADAR_BANDS]


def to_linear(values: np.ndarray, band: str) -> tuple[np.ndarray, str]:
    """Backscatter as linear power sigma0, and the scale it was given in ("linear" or "dB").

    Ground's sigma0 lies between about -30 and 0 dB: in decibels most pixels are
    negative; as linear power none is (thermal-noise removal may leave a few slightly
    negative), and the median lies between 1e-4 and 1. Anything else (digital numbers,
    amplitudes scaled to hundreds, a mix) is refused rather than guessed.

    Raises
    ------
    BandOrderError
        The scale cannot be told.
    """
    x = np.asarray(values, dtype="float64")
    f = x[np.isfinite(x)]
    if f.size < 10:
        return x, "linear"
    neg = float((f < 0).mean())
    med = float(np.median(f))
    p1, p99 = (float(v) for v in np.percentile(f, [1, 99]))
    if neg > 0.5 and -70.0 < p1 and p99 < 40.0:
        return 10.0 ** (x / 10.0), "dB"
    if neg < 0.02 and 1e-4 <= med <= 1.0 and p99 < 1e3:
        return np.where(x < 0, 0.0, x), "linear"
    raise BandOrderError(
        f"band {band!r}: cannot tell whether the values are linear sigma0 or decibels ({neg:.0%} negative, median "
        f"{med:.4g}, 1st-99th percentile {p1:.4g} to {p99:.4g}); give calibrated sigma0 as linear power (ground "
        "about 0.001-0.3) or in dB (ground about -30 to -5 dB), not digital numbers or amplitudes")


def bundles(tracks: Mapping[str, LineString], max_gap_m: float) -> list[list[str]]:
    """Groups of tracks linked by neighbours closer than ``max_gap_m`` (metres, measured
    from points along each track to the other line), in the order given."""
    ids = list(tracks)
    parent = {t: t for t in ids}

    def root(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for i, a in enumerate(ids):
        pts = [tracks[a].interpolate(f, normalized=True) for f in (0.25, 0.5, 0.75)]
        for b in ids[i + 1:]:
            d = float(np.median([p.distance(tracks[b]) for p in pts]))
            if d < max_gap_m:
                parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for t in ids:
        groups.setdefault(root(t), []).append(t)
    return list(groups.values())


def _signed_offset(axis: LineString, line: LineString) -> float:
    """Median signed distance (m, positive left of ``axis``) of ``line`` from ``axis``."""
    out = []
    for f in np.linspace(0.1, 0.9, 9):
        p = line.interpolate(f, normalized=True)
        s = axis.project(p)
        a0, a1 = axis.interpolate(max(s - 1.0, 0.0)), axis.interpolate(min(s + 1.0, axis.length))
        q = axis.interpolate(s)
        tx, ty = a1.x - a0.x, a1.y - a0.y
        side = tx * (p.y - q.y) - ty * (p.x - q.x)
        out.append(math.copysign(p.distance(q), side))
    return float(np.median(out))


# ------------------------------------------------------------------------------ levels
def fit_levels(series: list[np.ndarray], n_tracks: list[int], *, init: dict | None = None,
               max_iter: int = 200, empty: list[np.ndarray] | None = None) -> dict | None:
    """Fit the levels ``E = b_k + n c`` (n = 0 .. n_tracks[k] cars side by side) to the
    strips' integrated backscatter.

    ``series`` holds one array (positions, channels) per strip: each channel (VV, VH) is
    one independent speckled look of the same cars. Along a strip, ``n`` is a hidden
    Markov chain that stays or moves by one (a string of cars starts or ends on one
    track; :func:`_transitions`); given ``n`` each channel is gamma-distributed with
    mean ``b_k + n c`` and variance ``v0 + n v1``. The empty levels ``b_k`` are per strip
    and channel; ``c``, ``v0``, ``v1`` per channel (one fleet, one sensor); the change
    rate is shared. Expectation-maximisation from several starting car levels; the
    likeliest fit is kept (ties: the coarser comb, fewer cars).

    Returns
    -------
    dict or None
        ``b`` (channels, strips), ``c``, ``v0``, ``v1`` (channels), ``rho``,
        ``posterior`` (per strip, positions x states) and ``loglik``; None when there
        are too few positions or no level stands above the empty one.
    """
    data = [np.atleast_2d(np.asarray(e, dtype="float64").T).T for e in series]
    fin = [np.all(np.isfinite(e), axis=1) for e in data]
    if empty is None:
        empty = [np.zeros(e.shape[0], bool) for e in data]
    known = [np.asarray(z, bool)[f] for z, f in zip(empty, fin)]
    data = [e[f] for e, f in zip(data, fin)]
    # A comb (empty level, car level, their spreads, change rate) fitted to a handful of
    # positions fits speckle: below MIN_COMB_POSITIONS the counter uses the CFAR bounds.
    if sum(e.shape[0] for e in data) < MIN_COMB_POSITIONS:
        return None
    if init is not None:
        return _em(data, n_tracks, init, max_iter, known)
    nch = data[0].shape[1]
    lows = np.full((nch, len(data)), np.nan)
    spreads = np.full((nch, len(data)), np.nan)
    tops = np.zeros(nch)
    for k, e in enumerate(data):
        if e.shape[0] < 3:
            continue
        # The empty bed is the low end of each strip (ladders, gaps between strings).
        for ch in range(nch):
            low = np.sort(e[:, ch])[: max(3, e.shape[0] // 5)]
            if known[k].sum() >= 3:
                low = e[known[k], ch]
            lows[ch, k] = float(np.median(low))
            spreads[ch, k] = float(np.std(low)) + 1e-12
            tops[ch] = max(tops[ch], float(np.max(e[:, ch]) - lows[ch, k]))
    sd0 = np.nanmedian(spreads, axis=1)
    if not np.all(np.isfinite(sd0)) or np.any(tops <= 3 * sd0):
        return None
    b0 = np.where(np.isfinite(lows), lows, 0.0)
    fits = []
    for frac in np.geomspace(max(2 * sd0[0] / tops[0], 0.05), 1.0, 12):
        c0 = frac * tops
        f = _em(data, n_tracks, {"b": b0, "c": c0, "v0": sd0 ** 2, "v1": 0.1 * c0 ** 2, "rho": 0.1,
                                 "v0_floor": 0.25 * sd0 ** 2}, max_iter, known)
        if f is not None:
            fits.append(f)
    if not fits:
        return None
    # The empty level must describe empty positions the strips show (ladders, gaps
    # between strings): a comb whose empty state holds under MIN_EMPTY_POSITIONS
    # positions has put its empty level below the data and counts the bed as cars.
    fits = [f for f in fits if sum(float(r[:, 0].sum()) for r in f["posterior"] if r.size) >= MIN_EMPTY_POSITIONS]
    if not fits:
        return None
    faint = max(fits, key=lambda f: f["loglik"])
    fits = [f for f in fits if np.all(f["c"] > MIN_CAR_CONTRAST * np.sqrt(f["v0"]))]
    # Cars must explain the data better than no cars at all (each strip one gamma law
    # of its own mean and variance) by more than the comb's extra parameters (car
    # level, its variance, the change rate) cost (BIC): speckle's skewed tail alone
    # is fitted by a comb too.
    m = sum(e.shape[0] for e in data)
    null_ll = sum(float(_log_density(e[:, ch], np.array([e[:, ch].mean()]),
                                     np.array([max(e[:, ch].var(), 1e-24)])).sum())
                  for e in data if e.shape[0] for ch in range(nch))
    fits = [f for f in fits if f["loglik"] - null_ll > 1.5 * nch * math.log(max(m, 2))]
    if not fits:
        # No car level stands clear of the bed's speckle: only the empty level (and its
        # spread) of the best comb is kept, for the CFAR fallback of the counter. On a
        # wholly empty track that level lies below the bed (the comb fitted the speckle's
        # tail as cars) and reads a few false cars; the strip's lower half instead reads
        # nothing on a packed yard, where no position is empty (measured on the
        # independent generator, MAPE 0.585 against 0.671).
        return {**faint, "empty_only": True}
    best = max(f["loglik"] for f in fits)
    ok = [f for f in fits if f["loglik"] >= best - LOGLIK_TIE]
    chosen = max(ok, key=lambda f: float(f["c"][0]))
    # Distinct combs (car levels more than 5 % apart) with their posterior weights under
    # a flat prior: where a comb of half or twice the car level explains the data nearly
    # as well, the estimate's uncertainty must say so.
    modes: list[dict] = []
    for f in sorted(fits, key=lambda f: -f["loglik"]):
        if all(abs(float(f["c"][0]) / float(m["c"][0]) - 1.0) > 0.05 for m in modes):
            modes.append(f)
    for m in modes:
        m["weight"] = math.exp(m["loglik"] - best)
    tot = sum(m["weight"] for m in modes)
    for m in modes:
        m["weight"] /= tot
    chosen["modes"] = modes
    return chosen


def _transitions(n_states: int, rho: float) -> np.ndarray:
    """Transition matrix along a strip: stay, or one string more or fewer (a string's
    end on one track), with probability ``rho`` per step split between the two."""
    T = np.zeros((n_states, n_states))
    for i in range(n_states):
        nb = [j for j in (i - 1, i + 1) if 0 <= j < n_states]
        T[i, i] = 1.0 - rho if nb else 1.0
        for j in nb:
            T[i, j] = rho / len(nb)
    return T


def _forward_backward(logp: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior state probabilities (m, s), expected transition counts (s, s) and the
    log-likelihood of emission log-densities ``logp`` (m, s) under ``T``, uniform start."""
    m, ns = logp.shape
    mx = logp.max(axis=1, keepdims=True)
    em = np.exp(logp - mx)
    alpha = np.zeros((m, ns))
    scale = np.zeros(m)
    a = em[0] / ns
    scale[0] = a.sum()
    alpha[0] = a / scale[0]
    for t in range(1, m):
        a = (alpha[t - 1] @ T) * em[t]
        scale[t] = max(a.sum(), 1e-300)
        alpha[t] = a / scale[t]
    beta = np.ones((m, ns))
    xi = np.zeros((ns, ns))
    for t in range(m - 2, -1, -1):
        bb = em[t + 1] * beta[t + 1]
        xi += (alpha[t][:, None] * T * bb[None]) / scale[t + 1]
        beta[t] = (T @ bb) / scale[t + 1]
    gamma = alpha * beta
    gamma /= np.maximum(gamma.sum(axis=1, keepdims=True), 1e-300)
    ll = float(np.log(scale).sum() + mx.sum())
    return gamma, xi, ll


def _log_density(e: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Log-density (positions, states) of ``e`` under gamma laws of means ``mu`` and
    variances ``var``: a sum of speckled intensities is skewed like a gamma variable
    (a symmetric law would explain a bright tail by an extra car)."""
    mu = np.maximum(mu, 1e-12)
    k = mu ** 2 / var
    theta = var / mu
    x = np.maximum(e, 1e-12)[:, None]
    return ((k - 1)[None] * np.log(x) - x / theta[None] - special.gammaln(k)[None]
            - (k * np.log(theta))[None])


def _em(data, n_tracks, start, max_iter, known=None):
    K, nch = len(data), data[0].shape[1]
    b = np.array(start["b"], dtype="float64").reshape(nch, K).copy()
    c = np.array(start["c"], dtype="float64").reshape(nch).copy()
    v0 = np.array(start["v0"], dtype="float64").reshape(nch).copy()
    v1 = np.array(start["v1"], dtype="float64").reshape(nch).copy()
    floor = np.array(start.get("v0_floor", 1e-6 * np.maximum(c, 1e-12) ** 2), dtype="float64").reshape(nch)
    rho = float(start.get("rho", 0.1))
    ll_old = -np.inf
    resp: list[np.ndarray] = []
    ll = -np.inf
    for _ in range(max_iter):
        resp, ll, stay, moves = [], 0.0, 0.0, 0.0
        for k, e in enumerate(data):
            n = np.arange(n_tracks[k] + 1)
            if e.shape[0] == 0:
                resp.append(np.zeros((0, n.size)))
                continue
            logp = sum(_log_density(e[:, ch], b[ch, k] + n * c[ch], v0[ch] + n * v1[ch]) for ch in range(nch))
            if known is not None and known[k].any():
                logp[known[k], 1:] = -1e30
            g, xi, lk = _forward_backward(logp, _transitions(n.size, rho))
            ll += lk
            resp.append(g)
            stay += float(np.trace(xi))
            moves += float(xi.sum() - np.trace(xi))
        # M-step: change rate; per channel b and c by weighted least squares (b >= 0:
        # backscatter is power) and the variances by moments.
        if stay + moves > 0:
            rho = min(max(moves / (stay + moves), 0.01), MAX_CHANGE_RATE)
        for ch in range(nch):
            A = np.zeros((K + 1, K + 1))
            rhs = np.zeros(K + 1)
            for k, (e, r) in enumerate(zip(data, resp)):
                if e.shape[0] == 0:
                    A[k, k] = 1.0
                    continue
                n = np.arange(r.shape[1])
                w = r / (v0[ch] + n * v1[ch])[None]
                x = e[:, ch][:, None]
                A[k, k] += w.sum()
                A[k, K] += (w * n[None]).sum()
                A[K, k] += (w * n[None]).sum()
                A[K, K] += (w * n[None] ** 2).sum()
                rhs[k] += (w * x).sum()
                rhs[K] += (w * n[None] * x).sum()
            try:
                sol = np.linalg.solve(A, rhs)
            except np.linalg.LinAlgError:
                return None
            bk, ck = sol[:K], float(sol[K])
            if np.any(bk < 0):
                bk = np.maximum(bk, 0.0)
                num = den = 0.0
                for k, (e, r) in enumerate(zip(data, resp)):
                    n = np.arange(r.shape[1])
                    w = r / (v0[ch] + n * v1[ch])[None]
                    num += float((w * n[None] * (e[:, ch][:, None] - bk[k])).sum())
                    den += float((w * n[None] ** 2).sum())
                ck = num / den if den > 0 else 0.0
            if not ck > 0:
                return None
            b[ch], c[ch] = bk, ck
            nn, rr, ww = [], [], []
            for k, (e, r) in enumerate(zip(data, resp)):
                n = np.arange(r.shape[1])
                nn.append(np.broadcast_to(n[None], r.shape).ravel())
                rr.append(((e[:, ch][:, None] - b[ch, k] - n[None] * c[ch]) ** 2).ravel())
                ww.append(r.ravel())
            nn_, rr_, ww_ = np.concatenate(nn).astype("float64"), np.concatenate(rr), np.concatenate(ww)
            X = np.stack([np.ones_like(nn_), nn_], axis=1)
            XtW = X.T * ww_
            try:
                v0n, v1n = np.linalg.solve(XtW @ X + 1e-12 * np.eye(2), XtW @ rr_)
            except np.linalg.LinAlgError:
                return None
            v0[ch], v1[ch] = max(float(v0n), floor[ch]), max(float(v1n), 0.0)
        if abs(ll - ll_old) < 1e-7 * max(abs(ll), 1.0):
            break
        ll_old = ll
    return {"b": b, "c": c, "v0": v0, "v1": v1, "v0_floor": floor, "rho": rho, "loglik": ll, "posterior": resp}


def _occupied_m(e: np.ndarray, fit: dict, k: int, n_max: int, step: float) -> float:
    """Metres of track holding a car along strip ``k``: per position the backscatter above
    the empty level over one car's, each channel weighted by its precision (the square
    of its car level over its per-car variance), clipped to 0 .. ``n_max``, summed."""
    e = np.atleast_2d(np.asarray(e, dtype="float64").T).T
    e = e[np.all(np.isfinite(e), axis=1)]
    c, v1, v0 = fit["c"], fit["v1"], fit["v0"]
    w = c ** 2 / np.maximum(v1 + v0, 1e-30)
    w = w / w.sum()
    n = sum(w[ch] * (e[:, ch] - fit["b"][ch, k]) / c[ch] for ch in range(e.shape[1]))
    return float(np.clip(n, 0.0, n_max).sum() * step)


def _extended(line: LineString, ext_m: float) -> LineString | None:
    """``line`` prolonged by ``ext_m`` metres beyond both ends, or None where it cannot be
    (a multi-part track, or one too short to give a direction).

    Each end's direction is taken from the chord to the point BEYOND_GAP_M (or half the
    track) in from it, not from the last segment: digitised tracks carry repeated or
    sub-metre end vertices whose direction is arbitrary, and a prolongation that is not
    ``ext_m`` long would shift every position along the strip."""
    if line.geom_type != "LineString" or line.length <= 0:
        return None
    pts = np.asarray(line.coords, dtype="float64")[:, :2]
    inner = min(BEYOND_GAP_M, line.length / 2.0)
    a = np.asarray(line.interpolate(inner).coords[0][:2])
    z = np.asarray(line.interpolate(line.length - inner).coords[0][:2])
    d0, d1 = pts[0] - a, pts[-1] - z
    n0, n1 = float(np.hypot(*d0)), float(np.hypot(*d1))
    if min(n0, n1) < 1e-3 * inner:
        return None
    return LineString(np.vstack([pts[0] + ext_m * d0 / n0, pts, pts[-1] + ext_m * d1 / n1]))


def _beyond_bed(e: np.ndarray, along: np.ndarray, length: float) -> np.ndarray:
    """Positions beyond the track's ends that read as empty bed (bool over ``along``).

    An end is used only where its median lies below the track's 75th percentile: an end
    brighter than most of the track holds something (cars on a track the features cut
    short, a building), not bare ballast."""
    span = (along >= 0.0) & (along <= length) & np.isfinite(e)
    out = np.zeros(along.size, bool)
    if span.sum() < 5:
        return out
    top = float(np.percentile(e[span], 75))
    ends = []
    for end in ((along < -BEYOND_GAP_M), (along > length + BEYOND_GAP_M)):
        end = end & np.isfinite(e)
        if end.sum() >= 2 and float(np.median(e[end])) <= top:
            ends.append((float(np.median(e[end])), end))
    # Two ends further apart than the bed's lift (3 dB) are not the same bare ground: cars
    # only add backscatter, so the brighter one holds cars (a track the features cut short
    # or continuing into the next yard); the darker is kept.
    if len(ends) == 2 and max(ends[0][0], ends[1][0]) > BED_LIFT * min(ends[0][0], ends[1][0]):
        ends = [min(ends, key=lambda t: t[0])]
    for _, end in ends:
        out |= end
    return out


def _blur_sigma(plane: np.ndarray, grid: GridSpec, tracks: Mapping[str, LineString]) -> float:
    """Standard deviation (m) of the sensor's intensity impulse response, read from the
    speckle of ``plane`` (first band, linear).

    Fully developed speckle is the impulse response's fingerprint: intensities ``r``
    apart are correlated as ``exp(-r^2 / (4 s^2))`` for a Gaussian intensity response of
    standard deviation ``s`` (Sentinel-1 IW GRDH, 20 x 22 m resolution: ``s`` about 9 m,
    neighbouring 10 m pixels correlated about 0.7; pixels of independent looks: 0). It
    is measured on the ground clear of the tracks, each pixel over its local mean
    (texture coarser than that window is not speckle)."""
    res = grid.resolution
    union = shapely.union_all(list(tracks.values()))
    x0, y0, x1, y1 = union.bounds
    r0, c0 = grid.rowcol(np.array([x0 - SPECKLE_MARGIN_M, x1 + SPECKLE_MARGIN_M]),
                         np.array([y1 + SPECKLE_MARGIN_M, y0 - SPECKLE_MARGIN_M]))
    rows = slice(max(int(math.floor(min(r0))), 0), max(int(math.ceil(max(r0))) + 1, 0))
    cols = slice(max(int(math.floor(min(c0))), 0), max(int(math.ceil(max(c0))) + 1, 0))
    img = np.asarray(plane, dtype="float64")[rows, cols]
    if min(img.shape) < 3:
        return 0.0
    rr, cc = np.meshgrid(np.arange(rows.start, rows.start + img.shape[0]),
                         np.arange(cols.start, cols.start + img.shape[1]), indexing="ij")
    xs, ys = grid.xy(rr, cc)
    ground = ~shapely.contains_xy(union.buffer(SPECKLE_CLEAR_M), xs, ys)
    fin = np.isfinite(img) & (img > 0)
    filled = np.where(fin, img, 0.0)
    mean = ndimage.uniform_filter(filled, SPECKLE_WINDOW_PX) / np.maximum(
        ndimage.uniform_filter(fin.astype("float64"), SPECKLE_WINDOW_PX), 1e-12)
    ratio = np.where(fin & ground, filled / np.maximum(mean, 1e-30) - 1.0, np.nan)
    rhos = []
    for a, b in ((ratio[:-1], ratio[1:]), (ratio[:, :-1], ratio[:, 1:])):
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() >= 50:
            rhos.append(float(np.corrcoef(a[ok], b[ok])[0, 1]))
    rho = float(np.mean(rhos)) if rhos else 0.0
    return math.sqrt(-res ** 2 / (4.0 * math.log(min(rho, 0.95)))) if rho > 0.01 else 0.0


def _profile_width(prof: np.ndarray, across: np.ndarray, mid: float, half: float,
                   res: float) -> tuple[float, float] | None:
    """Centre and standard deviation (m) of a Gaussian over a constant fitted to an
    across-track profile; None where it does not fit (no peak, or wider than the window)."""
    ok = np.isfinite(prof)
    if ok.sum() < 8 or not np.nanmax(prof) > 0:
        return None
    a, p = across[ok], prof[ok]
    top = float(a.max() - a.min()) / 2.0

    def resid(q):
        return q[0] * np.exp(-0.5 * ((a - q[1]) / q[2]) ** 2) + q[3] - p

    try:
        q = optimize.least_squares(resid, [float(p.max()), mid, max(top / 3.0, res), 0.0],
                                   bounds=([0.0, mid - half - res, res / 8.0, -np.inf],
                                           [np.inf, mid + half + res, top, np.inf])).x
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not q[0] > 0 or q[2] >= 0.99 * top:
        return None
    return float(q[1]), float(q[2])


def _occupied_tracks(plane: np.ndarray, grid: GridSpec, st, lines: list[LineString], offs: list[float],
                     hi: np.ndarray, bed: np.ndarray, blur_m: float,
                     others: list[float] = ()) -> tuple[float, float] | None:
    """How many tracks of a bundle hold its cars, from the width of their backscatter
    across it, and the chance that the cars stand on more tracks than one track's width
    allows (the fit's scatter); None where the profile cannot be fitted.

    The excess across the strip (positions ``hi`` along it, the brighter half, less the
    bed ``bed`` beyond the ends), sampled at a quarter pixel, is fitted with a Gaussian
    over a constant. One train along the bundle is as wide as one track, cars on every
    track as wide as the bundle; misregistration shifts the profile but does not widen
    it. The widths of one track and of all are not taken from a formula but measured
    the same way on the bundle drawn with the sensor's blur (``blur_m``, from the
    speckle) on the image's own pixels: the pixel grid and the resampling widen a line
    by an amount that depends on where it falls in its pixels. For ``k`` equally loaded
    neighbours the variance grows as ``k^2 - 1``. ``others``: offsets (m) of other given
    tracks beside the bundle; the profile stops halfway to the nearest on each side (their
    cars are not this bundle's)."""
    res = grid.resolution
    offs_a = np.asarray(offs, dtype="float64")
    if hi.sum() < 3 or bed.sum() < 2 or np.ptp(offs_a) <= 0:
        return None
    half = float(np.ptp(offs_a)) / 2.0
    mid = float(offs_a.max() + offs_a.min()) / 2.0
    # The flanks down to the bed: four blur spreads and two pixels beyond the outer tracks.
    pad = 4.0 * blur_m + 2.0 * res
    lo, hi_m = mid - half - pad, mid + half + pad
    for o in others:
        if offs_a.min() - pad < o < offs_a.min():
            lo = max(lo, (o + offs_a.min()) / 2.0)
        elif offs_a.max() < o < offs_a.max() + pad:
            hi_m = min(hi_m, (o + offs_a.max()) / 2.0)
    across = np.arange(lo, hi_m + 1e-9, res / 4.0)
    nx = (st.x[1] - st.x[0]) / st.step_m
    ny = (st.y[1] - st.y[0]) / st.step_m
    cx, cy = st.x[0] - st.across_m[0] * nx, st.y[0] - st.across_m[0] * ny
    cols = hi | bed
    r, c = grid.rowcol(cx[None, cols] + across[:, None] * nx[None, cols],
                       cy[None, cols] + across[:, None] * ny[None, cols])
    r0 = max(int(math.floor(np.nanmin(r))) - 2, 0)
    c0 = max(int(math.floor(np.nanmin(c))) - 2, 0)
    r1 = min(int(math.ceil(np.nanmax(r))) + 3, plane.shape[0])
    c1 = min(int(math.ceil(np.nanmax(c))) + 3, plane.shape[1])
    if r1 - r0 < 2 or c1 - c0 < 2:
        return None
    hi_c, bed_c = hi[cols], bed[cols]

    def profile(img):
        v = ndimage.map_coordinates(img, [r - r0, c - c0], order=1, mode="constant", cval=np.nan)
        # Samples off the image are NaN; a row of them gives a NaN point, dropped by the fit.
        n_hi, n_bed = np.isfinite(v[:, hi_c]).sum(axis=1), np.isfinite(v[:, bed_c]).sum(axis=1)
        s_hi = np.nansum(v[:, hi_c], axis=1) / np.where(n_hi > 0, n_hi, np.nan)
        return s_hi - np.nansum(v[:, bed_c], axis=1) / np.where(n_bed > 0, n_bed, np.nan)

    seen = _profile_width(profile(np.asarray(plane, dtype="float64")[r0:r1, c0:c1]), across, mid, half, res)
    if seen is None:
        return None
    # Each track drawn as a line of unit backscatter blurred by the sensor, integrated
    # over the image's pixels (4 x 4 points each), then read as the scene was.
    sub = (np.arange(4) + 0.5) / 4.0 - 0.5
    rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    pr = np.broadcast_to(rr[..., None, None] + sub[:, None], rr.shape + (4, 4)).ravel()
    pc = np.broadcast_to(cc[..., None, None] + sub[None, :], rr.shape + (4, 4)).ravel()
    px, py = grid.xy(pr, pc)
    pts = shapely.points(px, py)
    s_line = math.hypot(blur_m, CAR_WIDTH_M / math.sqrt(12.0))
    drawn = []
    for ln in lines:
        dist = shapely.distance(pts, ln)
        drawn.append(np.exp(-0.5 * (dist / s_line) ** 2).reshape(rr.shape + (16,)).mean(axis=-1))
    widths = [_profile_width(profile(img), across, mid, half, res) for img in drawn + [sum(drawn)]]
    if any(w is None for w in widths):
        return None
    # The single-track width where the cars are (the track nearest the profile's centre).
    one = widths[int(np.argmin(np.abs(offs_a - seen[0])))][1]
    full = widths[-1][1]
    n = len(lines)
    # Cars on every track must widen the profile clearly beyond one track's: the fit's
    # width scatters by about 15 % in variance over a few hundred metres of speckle
    # (ENL 4.4), so a bundle whose full width adds less than twice that (two or three
    # tracks 5 m apart under Sentinel-1's 20 x 22 m resolution) cannot tell one track
    # from all, and keeps every track.
    if not full ** 2 >= (1.0 + 2.0 * WIDTH_VAR_SCATTER) * one ** 2:
        return None
    k2 = 1.0 + (n ** 2 - 1) * (seen[1] ** 2 - one ** 2) / (full ** 2 - one ** 2)
    # The chance that the cars stand on more tracks than one track's width allows: the
    # fitted variance scatters by WIDTH_VAR_SCATTER of one track's, which moves k^2 by
    # (n^2 - 1) times that over the bundle's widening.
    sd_k2 = (n ** 2 - 1) * WIDTH_VAR_SCATTER * one ** 2 / (full ** 2 - one ** 2)
    p_more = float(stats.norm.sf((ONE_TRACK_WIDTH ** 2 - k2) / sd_k2))
    return float(min(max(math.sqrt(max(k2, 1.0)), 1.0), n)), p_more


def _car_level(x: np.ndarray, bed_var: float, n_tracks: int,
               one_track: float | None = None) -> tuple[float, float] | None:
    """One car's backscatter per position (sigma0 x metres) from a track's excess ``x``
    over the empty bed, and the spread (natural log) of that estimate.

    Two estimates, each from a physical bound or law, combined in log space:

    * from above the occupancy: no position holds more than one car per track, so
      ``c >= excess / n_tracks``; the 90th percentile of a 3-position (30 m, two cars)
      running mean stands for the bright stretches, which are full on a busy track (one
      bright car or a speckle peak does not set it). Low where a yard is sparse.
    * from the spread of the excess: a car's return comes from a few dominant
      scatterers (bogies, wall-ground corners, open tops) of random phase, and cars differ
      by type and load, so one car's return varies about as much as its mean (a
      coefficient of variation near 1): the excess's variance (less the bed's speckle)
      over its mean is then about ``c``. High where occupancy also varies along.

    Their disagreement widens the spread. None when either is not positive.

    ``one_track``: the cars stand on one track of a bundle (their width across it), and
    a position above the bed by more than this (its CFAR threshold) holds one car."""
    if x.size < 5 or not np.mean(x) > 0:
        return None
    run = np.convolve(x, np.ones(3) / 3.0, mode="same")
    top = float(np.percentile(run, 90))
    if one_track is not None:
        # One train along the bundle: each position where a car stands (above the bed's
        # CFAR threshold) holds one car, so their mean excess is one car's level,
        # whatever the mix of types along the train. The spread handle would see only
        # the car-to-car variation (small in a unit train of identical cars), the bound
        # (over all tracks) a fraction of a car.
        on = x[x > one_track]
        c = float(np.mean(on)) if on.size >= 2 else 0.0
        return (c, CAR_LEVEL_LOG_SD) if c > 0 else None
    c_full = top / n_tracks
    c_disp = (float(np.var(x)) - bed_var) / float(np.mean(x))
    if not (c_full > 0 and c_disp > 0):
        return None
    c = math.sqrt(c_full * c_disp)
    return c, math.hypot(CAR_LEVEL_LOG_SD, 0.5 * abs(math.log(c_disp / c_full)))


def _bed_estimate(e: np.ndarray, bed: np.ndarray, n_tracks: int, step: float,
                  comb: bool, n_occupied: tuple[float, float] | None = None) -> tuple[float, float, float, dict]:
    """Occupied metres, their standard deviation and the length holding at least one car
    along a strip whose empty bed is read beyond its ends (``e``: first channel over the
    track; ``bed``: the positions beyond the ends).

    The occupied length is the excess over the bed summed along, over one car's level
    (:func:`_car_level`), clipped per position to 0 .. ``n_tracks`` cars. Cars are taken
    as present where a comb was learnt (``comb``) or the mean excess stands
    :data:`PRESENCE_Z` standard errors above the bed; else the CFAR bounds over that bed
    are used (:func:`_bounds_from`). ``n_occupied``: how many of the tracks hold the
    cars and the chance that more do (:func:`_occupied_tracks`; None: all), the most cars
    side by side."""
    f = e[np.isfinite(e)]
    b, sdb = float(np.median(bed)), float(np.std(bed))
    if f.size >= 5:
        # The yard's own bed (ballast, the rails' line return, contact wires) may read
        # brighter than the ground past the track ends, by up to BED_LIFT; stretches of
        # the track that low (30 m running mean) are bare bed and give its level where
        # there are enough of them (a gap between strings), brighter ones hold cars.
        run = np.convolve(f, np.ones(3) / 3.0, mode="same")
        bare = f[run <= BED_LIFT * b]
        if bare.size >= MIN_BARE_POSITIONS:
            b = max(b, float(np.median(bare)))
    x = f - b
    # Neighbouring positions share speckle (correlated over about two pixels): the bed's
    # positions count as half as many independent ones.
    sd_b = math.hypot(sdb / math.sqrt(max(bed.size / 2.0, 1.0)), BED_REL_SPREAD * b)
    thr = _cfar_threshold(b, sdb)
    info = {"empty_level": b, "empty_spread": sdb, "threshold": thr}
    # A bundle whose cars' width across it is one track's holds one car at most per
    # position; otherwise every track may hold one (a lone track keeps the two handles).
    one_track = n_occupied is not None and n_occupied[0] < ONE_TRACK_WIDTH
    info["occupied_tracks"] = 1.0 if one_track else float(n_tracks)
    level = _car_level(x, sdb ** 2, n_tracks, thr - b if one_track else None) if f.size >= 5 else None
    if level is None or not (comb or float(np.mean(x)) > PRESENCE_Z * sd_b):
        if f.size < 5:
            info["car_level"] = None
            return 0.0, 0.0, 0.0, info
        # No cars stand clear of the bed, so most of the track is bed too: its lower half
        # (deviations below its median, which no car reaches) measures the speckle's
        # spread over many more positions than the few beyond the ends, whose spread
        # alone sets the CFAR threshold too low as often as not.
        sd = max(sdb, _lower_half(f)[1])
        thr = _cfar_threshold(b, sd)
        occ, sd_occ, any_m = _bounds_from(f, thr, n_tracks, step)
        if level is not None:
            # The mean excess, within the bed's drift, may still be a few cars' worth
            # (a sparse yard): the uncertainty keeps the length it would make, each car
            # at least MIN_CAR_CONTRAST spreads of the bed (a fainter one is not seen).
            c_h = max(level[0], MIN_CAR_CONTRAST * sd)
            sd_occ = math.hypot(sd_occ, max(float(np.mean(x)), 0.0) * f.size * step / c_h)
        info.update(car_level=None, threshold=thr)
        return occ, sd_occ, any_m, info
    c, sig = level
    occ = float(np.clip(x / c, 0.0, n_tracks).sum() * step)
    # The car level's spread scales the whole length; the bed's error shifts every position.
    sd = math.hypot(occ * sig, f.size * step * sd_b / c)
    if one_track:
        # The width fit tells one track from several only to its scatter: where the cars
        # may stand on more tracks, the all-track reading (the two handles) stays within
        # the uncertainty, weighted by that chance.
        alt = _car_level(x, sdb ** 2, n_tracks)
        if alt is not None:
            occ_all = float(np.clip(x / alt[0], 0.0, n_tracks).sum() * step)
            w = n_occupied[1]
            sd = math.hypot(sd, w * max(occ_all - occ, 0.0))
            info["p_more_tracks"] = w
    info.update(car_level=c, car_level_log_sd=sig)
    return occ, sd, float((f > thr).sum() * step), info


# ------------------------------------------------------------------------------ counter
def count_railcars_sar(image: xr.DataArray, tracks: Mapping[str, LineString], *,
                       valid: xr.DataArray | None = None, band: str | list[str] | None = None,
                       n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> CountResult:
    """Estimate railcars per track (or per bundle of unresolved tracks) on Sentinel-1 GRD.

    Parameters
    ----------
    image : xarray.DataArray (band, y, x)
        Calibrated backscatter sigma0 with bands named VV and/or VH (HH, HV), as linear
        power or in dB (told apart from the values and reported as ``scale``), on a
        metric grid of 12 m or finer.
    tracks : mapping of str to LineString
        Track centrelines in the image CRS (metres), by track id.
    valid : xarray.DataArray (y, x) of bool, optional
        False where pixels must not be used (nodata, layover masks).
    band : str, optional
        Band to read; by default VV (co-polarised: the cars' dihedral returns are
        strongest there), else HH, else the cross-polarised band given.
    n_bootstrap : int
        Bootstrap draws for the uncertainty (0: speckle term omitted).
    seed : int
        Seed of the bootstrap's generator (the estimate itself is deterministic).

    Returns
    -------
    CountResult
        ``total`` estimated cars (occupied length over :data:`MEAN_PITCH_M`),
        ``uncertainty`` one standard deviation, no detections; one ``per_feature``
        entry per track or per bundle of tracks closer than 1.5 pixels (``tracks``
        lists them, ``tracks_resolved`` says which), with ``occupied_m`` (metres of
        track holding a car, cars side by side counted once each), ``count`` and its
        ``uncertainty``. ``extras`` state the method: band, scale, the learnt empty and
        car levels, the occupied threshold and the car length used.
    """
    grid = GridSpec.of(image)
    check_metric(grid, "railcar")
    if grid.resolution > SAR_MAX_RES_M:
        raise ResolutionError(
            f"the radar image is {grid.resolution:g} m per pixel, too coarse for railcars: the Sentinel-1 estimate "
            f"(occupied track length over a mean car length of {MEAN_PITCH_M:g} m) needs {SAR_MAX_RES_M:g} m or "
            "finer (Sentinel-1 IW GRD high resolution is 10 m)")
    if grid.resolution < SAR_MIN_RES_M:
        raise ResolutionError(
            f"bands {[str(b) for b in image['band'].values]} are radar backscatter at {grid.resolution:g} m per pixel: "
            f"count_railcars has no radar mode at this resolution (the Sentinel-1 estimate, occupied length over a "
            f"mean car length, is for {SAR_MIN_RES_M:g}-{SAR_MAX_RES_M:g} m pixels; per-car detection and typing "
            "need optical imagery of 1.5 m or finer)")
    check_features(tracks, grid, what="track")
    names = radar_bands(image)
    all_names = [str(b) for b in image["band"].values]
    if band is None:
        # Co-polarised where given (the cars' dihedral returns are strongest there),
        # else the cross-polarised band. Both together are an option (``band=["VV",
        # "VH"]``), not the default: the second look sharpened the likelihood of the
        # wrong comb as often as of the right one on the simulator's yards (its noise
        # model is approximate), giving overconfident counts (|z| up to 4.8 against 1.9).
        use = sorted(names, key=lambda b: ("VV", "HH", "VH", "HV").index(b.upper()))[:1]
    else:
        use = [band] if isinstance(band, str) else list(band)
    if not use or any(b not in all_names for b in use):
        raise BandOrderError(f"no radar band {use or 'VV/VH'} among {all_names}; name the Sentinel-1 bands VV and VH")
    planes, scales = [], {}
    for b in use:
        lin, scales[b] = to_linear(np.asarray(image.sel(band=b).values), b)
        planes.append(lin)
    sig = np.stack(planes).astype("float32")
    if valid is not None:
        sig = np.where(np.asarray(valid.values, bool)[None], sig, np.nan)
    res = grid.resolution
    groups = bundles(tracks, RESOLVED_SPACING_PX * res)
    series, fit_series, known, n_tr, meta = [], [], [], [], []
    blur = None
    for g in groups:
        axis = max((tracks[t] for t in g), key=lambda ln: ln.length)
        offs = [_signed_offset(axis, tracks[t]) for t in g]
        # Every member's cars and one pixel beyond (the impulse response and the
        # interpolation spread a car's backscatter about that far).
        lo, hi = min(offs) - CAR_WIDTH_M / 2 - res, max(offs) + CAR_WIDTH_M / 2 + res
        ext = BEYOND_GAP_M + BEYOND_LENGTH_M
        line = _extended(axis, ext)
        if line is None:
            line, ext = axis, 0.0
        st = sample_strip(sig, grid, line, half_width_m=max(abs(lo), abs(hi)), step_m=res)
        along = st.along_m - ext
        inside = (st.across_m >= lo) & (st.across_m <= hi)
        v = st.values[:, inside, :]                                  # (channel, across, along)
        seen_all = np.all(np.isfinite(v), axis=(0, 1))
        # Backscatter integrated across the strip (sigma0 x metres) per position along it.
        e_all = np.where(seen_all[:, None], np.nansum(v, axis=1).T * st.step_m, np.nan)
        span = (along >= -1e-6) & (along <= axis.length + 1e-6)
        # Past the ends, a position whose band across the strip meets another given track
        # (the same track cut into features at a switch, a staggered neighbour) may hold
        # that track's cars (bodies 3 m wide): it is not bed. A parallel bundle beside the
        # band only spills its blur in, as it does along the tracks.
        others = [tracks[t] for t in tracks if t not in g]
        free = np.ones(along.size, bool)
        if others:
            i0, i1 = np.flatnonzero(inside)[[0, -1]]
            cuts = shapely.linestrings(np.stack([np.stack([st.x[i0], st.y[i0]], -1),
                                                 np.stack([st.x[i1], st.y[i1]], -1)], axis=1))
            free = ~shapely.intersects(cuts, shapely.union_all(others).buffer(CAR_WIDTH_M / 2))
        bed = _beyond_bed(np.where(free, e_all[:, 0], np.nan), along, axis.length)
        # A bundle's cars may stand on only some of its tracks (one train along five
        # tracks): the width of their backscatter across it says on how many.
        n_occ = None
        if len(g) > 1 and bed.sum() >= 3:
            if blur is None:
                blur = _blur_sigma(sig[0], grid, tracks)
            fin = span & np.isfinite(e_all[:, 0])
            bright = fin & (e_all[:, 0] > (np.median(e_all[fin, 0]) if fin.any() else np.inf))
            reach = max(abs(lo), abs(hi)) + 4.0 * blur + 2.0 * res
            beside = [_signed_offset(axis, tracks[t]) for t in tracks
                      if t not in g and tracks[t].distance(axis) < reach]
            n_occ = _occupied_tracks(sig[0], grid, st, [tracks[t] for t in g], offs, bright, bed, blur, beside)
        series.append(e_all[span])
        fit_series.append(e_all[span | bed])
        known.append(bed[span | bed])
        n_tr.append(len(g))
        meta.append({"length_m": axis.length, "seen": seen_all[span], "bed": e_all[bed, 0],
                     "n_occupied": n_occ})
    # The comb is learnt with the positions beyond the ends held empty (where they read as bed).
    fit = fit_levels(fit_series, n_tr, empty=known)
    comb = fit is not None and not fit.get("empty_only")
    # The comb is learnt over all strips at once: it says cars are present on a strip only
    # where its posterior puts at least one car's length (two positions) in a car state
    # there, else an empty track beside a busy bundle would take the bundle's word for it.
    present = [float((1.0 - r[:, 0]).sum()) >= 2.0 for r in fit["posterior"]] if comb else [False] * len(groups)
    # Strips with a bed read beyond their ends are estimated from it (_bed_estimate); the
    # others (ends off the image or not bare) from the comb or the CFAR fallback.
    direct = [m["bed"].size >= 3 for m in meta]
    rest = [k for k in range(len(groups)) if not direct[k]]
    empty_only = fit if fit is not None and fit.get("empty_only") else None
    if empty_only is not None:
        fit = None
    boot = _bootstrap(series, n_tr, fit, res, n_bootstrap, seed) if fit is not None and rest else None
    per_feature, total = [], 0.0
    total_seen, total_len = 0.0, 0.0
    thresholds = None
    bed_info: list[dict] = []
    sd_direct2 = 0.0
    if fit is not None:
        # The occupied/empty decision: the first channel above its empty level's gamma
        # law (mean b, variance v0) at the CFAR false-alarm rate.
        v0 = float(fit["v0"][0])
        thresholds = [float(stats.gamma.isf(CFAR_PFA, max(bk, 1e-12) ** 2 / v0, scale=v0 / max(bk, 1e-12)))
                      for bk in fit["b"][0]]
    for k, (g, e, m) in enumerate(zip(groups, series, meta)):
        seen_frac = float(m["seen"].mean()) if m["seen"].size else 0.0
        total_seen += seen_frac * m["length_m"] * len(g)
        total_len += m["length_m"] * len(g)
        if direct[k]:
            occ, sd_occ, any_m, info = _bed_estimate(e[:, 0], m["bed"], len(g), res, present[k],
                                                     n_occupied=m["n_occupied"])
            bed_info.append(info)
            sd_direct2 += sd_occ ** 2
        elif fit is None:
            # No comb of car levels could be learnt (too few cars, or a bed whose texture
            # swings as much as a car): positions above a CFAR threshold over the empty
            # level hold at least one car and at most one per track. The estimate
            # takes the tracks as independently occupied; the uncertainty spans the bounds.
            # (The empty level here is the lower half's: right where at most half the
            # positions hold cars, as in the quiet yards where no comb is learnt.)
            occ, sd_occ, any_m = _bounds_estimate(e[:, 0], len(g), res, _empty_of(empty_only, k))
        else:
            # Averaged over the combs the data allow (weights from their likelihoods).
            occs = np.array([_occupied_m(e, m, k, len(g), res) for m in fit["modes"]])
            w = np.array([m["weight"] for m in fit["modes"]])
            occ = float((w * occs).sum())
            comb_var = float((w * (occs - occ) ** 2).sum())
            sd_occ = math.sqrt((float(np.var(boot[:, k])) if boot is not None else 0.0) + comb_var)
            first = e[np.isfinite(e[:, 0]), 0]
            any_m = float((first > thresholds[k]).sum() * res)
        n = occ / MEAN_PITCH_M
        var = (sd_occ / MEAN_PITCH_M) ** 2 + (PITCH_SPREAD * n) ** 2
        total += n
        # "id" stays a feature id the caller gave (the JSON contract joins counts
        # back to features); a bundle reports under its first track and names them all.
        entry = {"id": g[0], "count": round(n, 1), "by_type": {}, "occupied_m": round(occ, 1),
                 "uncertainty": round(math.sqrt(var), 2), "tracks": list(g), "tracks_resolved": len(g) == 1,
                 "occupied_any_m": round(any_m, 1), "observed_fraction": round(seen_frac, 4)}
        if len(g) > 1:
            entry["bundle"] = list(g)
            entry["note"] = (f"{len(g)} tracks closer than {RESOLVED_SPACING_PX:g} pixels ({RESOLVED_SPACING_PX * res:g} "
                             "m): estimated together; cars side by side each count, which track holds them is not "
                             "resolved; occupied_any_m is the length where at least one of them holds a car")
        per_feature.append(entry)
    extras: dict = {"method": "sentinel-1 integrated backscatter (levels learnt from the scene)", "bands": use,
                    "scale": scales, "mean_car_length_m": MEAN_PITCH_M, "car_length_spread": PITCH_SPREAD}
    if fit is not None and rest:
        # The comb's levels, where some strip was estimated from them (else the comb only
        # said whether cars are present, and bed_beyond_ends gives the levels used).
        extras.update({
            "car_level": {b: round(float(fit["c"][i]), 4) for i, b in enumerate(use)},
            "empty_levels": {b: [round(float(x), 4) for x in fit["b"][i]] for i, b in enumerate(use)},
            "occupied_threshold": {"band": use[0], "levels": [round(t, 4) for t in thresholds],
                                   "cfar_pfa": CFAR_PFA,
                                   "units": "sigma0 x metres across the strip, per position along it"}})
    observed = total_seen / total_len if total_len else 0.0
    # The bundles share one car level: their bootstrap lengths are summed per draw. The
    # car-length term is shared by the whole yard (one fleet mix): it scales the total.
    sd_speckle = float(boot[:, rest].sum(axis=1).std()) / MEAN_PITCH_M if boot is not None else 0.0
    sd_comb = 0.0
    if rest and fit is None:
        extras["levels"] = ("no car level could be learnt from the scene: occupied length from CFAR detections, "
                            "between one car per detected position and one per track")
        sd_speckle = math.sqrt(sum(_bounds_estimate(series[k][:, 0], len(groups[k]), res, _empty_of(empty_only, k))[1]
                                   ** 2 for k in rest)) / MEAN_PITCH_M
    elif rest:
        tot_m = np.array([sum(_occupied_m(series[k], m, k, len(groups[k]), res) for k in rest)
                          for m in fit["modes"]])
        w = np.array([m["weight"] for m in fit["modes"]])
        sd_comb = math.sqrt(float((w * (tot_m - (w * tot_m).sum()) ** 2).sum())) / MEAN_PITCH_M
        sd_speckle = math.hypot(sd_speckle, sd_comb)
    if bed_info:
        # Strips estimated over the bed beyond their ends: each learnt its own car level.
        sd_speckle = math.hypot(sd_speckle, math.sqrt(sd_direct2) / MEAN_PITCH_M)
        extras["bed_beyond_ends"] = {
            "strips": [groups[k][0] for k in range(len(groups)) if direct[k]],
            "empty_levels": [round(i["empty_level"], 4) for i in bed_info],
            "car_levels": [None if i["car_level"] is None else round(i["car_level"], 4) for i in bed_info],
            "car_level_log_sd": [round(i.get("car_level_log_sd", 0.0), 3) for i in bed_info],
            "occupied_tracks": [round(i["occupied_tracks"], 2) for i in bed_info],
            "units": "sigma0 x metres across the strip, per position along it",
            "note": (f"empty bed read {BEYOND_GAP_M:g}-{BEYOND_GAP_M + BEYOND_LENGTH_M:g} m beyond the track ends; "
                     "car level from the bright stretches (at most one car per track) and the spread of the "
                     "backscatter above the bed; null: no cars stand clear of the bed, CFAR bounds used")}
    sd_total = math.hypot(sd_speckle, PITCH_SPREAD * total)
    extras["uncertainty_terms"] = {"speckle_and_levels": round(sd_speckle, 2), "comb_choice": round(sd_comb, 2),
                                   "car_length": round(PITCH_SPREAD * total, 2)}
    return CountResult("railcars", round(total, 1), {}, tuple(per_feature), (), grid.crs, sd_total, observed,
                       extras)


def _empty_of(fit: dict | None, k: int) -> tuple[float, float] | None:
    """Empty level and its spread of strip ``k`` (first channel) from a fit, if any."""
    if fit is None:
        return None
    return float(fit["b"][0, k]), float(math.sqrt(fit["v0"][0]))


def _bounds_estimate(e: np.ndarray, n_tracks: int, step: float,
                     empty: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Occupied metres, its standard deviation and the length holding at least one car
    along a strip whose car level is unknown (see :func:`count_railcars_sar`).
    ``empty`` is the empty level and its spread where a fit learnt them (its empty
    state, from the strip's empty stretches); else the lower half's are used."""
    f = e[np.isfinite(e)]
    if f.size < 5:
        return 0.0, 0.0, 0.0
    if empty is not None and empty[0] > 0 and empty[1] > 0:
        return _bounds_from(f, _cfar_threshold(*empty), n_tracks, step)
    med, sd = _lower_half(f)
    return _bounds_from(f, _cfar_threshold(med, sd), n_tracks, step)


def _lower_half(f: np.ndarray) -> tuple[float, float]:
    """The empty level of a strip's positions ``f`` from their lower half (cars only raise
    a position): its median, and its spread from the deviations below that median, which
    no car reaches (normal-consistent median absolute deviation)."""
    med = float(np.median(f))
    return med, 1.4826 * float(np.median(med - f[f <= med]))


def _cfar_threshold(level: float, spread: float) -> float:
    """Level exceeded with probability :data:`CFAR_PFA` by an empty position whose
    integrated backscatter has mean ``level`` and standard deviation ``spread``: speckle's
    tail is a gamma law's, heavier than a normal one."""
    k = (level / max(spread, 1e-12)) ** 2 if level > 0 else 1.0
    return float(stats.gamma.isf(CFAR_PFA, k, scale=max(level, 1e-12) / k))


def _bounds_from(f: np.ndarray, thr: float, n_tracks: int, step: float) -> tuple[float, float, float]:
    q = float((f > thr).mean())
    any_m = q * f.size * step
    # Each track occupied with probability p, independently: P(at least one) = q.
    p = 1.0 - (1.0 - min(q, 0.999)) ** (1.0 / n_tracks)
    occ = n_tracks * p * f.size * step
    # Anywhere between every occupied position holding one car and holding n_tracks.
    sd = math.hypot((n_tracks - 1) * any_m / math.sqrt(12.0), math.sqrt(max(q * (1 - q) * f.size, 1.0)) * step)
    return occ, sd, any_m


def _bootstrap(series, n_tr, fit, step, n_draws, seed) -> np.ndarray | None:
    """Occupied metres per strip (n_draws, strips) over block-bootstrap resamples of the
    positions along each strip (blocks of :data:`BLOCK`), the levels refitted on each."""
    if n_draws <= 0:
        return None
    rng = np.random.default_rng(seed)
    out = np.zeros((n_draws, len(series)))
    clean = [e[np.all(np.isfinite(e), axis=1)] for e in series]
    for d in range(n_draws):
        draw = []
        for f in clean:
            m = f.shape[0]
            if m == 0:
                draw.append(f)
                continue
            nb = int(math.ceil(m / BLOCK))
            starts = rng.integers(0, max(m - BLOCK, 0) + 1, size=nb)
            idx = np.minimum((starts[:, None] + np.arange(BLOCK)[None]).ravel()[:m], m - 1)
            draw.append(f[idx])
        refit = fit_levels(draw, n_tr, init=fit, max_iter=20) or fit
        for k, f in enumerate(draw):
            out[d, k] = _occupied_m(f, refit, k, n_tr[k], step)
    return out
