"""Stack registration by a network of windowed matches, band by band.

Reached from the stack API as ``coregister_stack(stack, reference, network="windows",
per_band=True)`` (:func:`windows_stack` holds the Dask tasks); the array-level pieces
(:func:`pair_shift`, :func:`network_shifts`, :func:`coregister_stack_windows`) work on
stacks already on one grid.

:func:`changedet.coreg.coregister_stack` with ``network=True`` matches every pair of
dates on one band over the whole frame and solves one translation per date. On the
NAIP series two things keep that from 0.1 px:

* **One whole-frame match per pair is pulled by changed content.** The strongest edges
  of a prairie-pothole scene are shorelines, and they move from year to year with the
  water level; the clipped-gradient correlation over the whole frame is a weighted
  average that includes them. Here each pair is matched on a grid of small windows
  (:func:`changedet.coreg.estimate_local` tie points) and the pair's shift is a robust
  (Huber) mean over windows, so moved shorelines and changed fields are outvoted; the
  window-to-window scatter gives each pair a standard error, and the network solve
  weights each pair by it.
* **Bands of one date are not co-registered with each other.** NAIP's visible bands and
  its NIR band come from separate sensors; measured on this series the red-minus-NIR
  offset differs between dates by up to 0.27 +- 0.05 px (rows), consistently for red,
  green and blue. One translation per date therefore cannot align every band, so the
  network is solved for each band separately (``per_band=True``).

The shifts come from :func:`changedet.coreg.solve_network` (robust weighted least
squares over all pairs, the reference included) and are applied with
:func:`changedet.coreg.apply_shift`.

Three pair estimators (``estimator=``):

* ``"pc"``: 64 px phase-correlation windows (:func:`pair_shift`), Huber mean.
  On NAIP's 5 m prairie frames the reliability of most windows between two years is 0
  (5 of 165 windows kept on the 2009-2014 NIR pair, 6 of 51 on half the frame), so a
  pair rests on a handful of windows, and the per-date solution moves by 0.05-0.1 px
  when the dates are resampled and re-measured (estimator noise, not a bias that
  iterating removes).
* ``"lk"``: 12 px Lucas-Kanade windows, each with its Cramer-Rao covariance, pooled by a
  random-effects biweight mean and restarted from the pooled shift until it stops
  (:func:`pair_shift_lk`; the estimator of :mod:`changedet.coreg_check`'s weighted
  check, there run on other pixels). Some 180 reliable windows per NAIP pair on half the
  frame. It refines shifts below about 2 px: remove larger ones first.
* ``"pc+lk"`` (default, :data:`DEFAULT_ESTIMATOR`): both in turn (:func:`network_shifts`):
  the ``"pc"`` network (any shift up to ``max_shift_px``), every date resampled by its
  solution, the ``"lk"`` network on the resampled dates, and the two added. The reach of
  the first, the precision of the second: on a synthetic stack moved by 3-8 px (where
  ``"lk"`` alone finds nothing) it recovers every shift within 0.05 px; on NAIP (fold 0,
  NIR) it gives 0.057 / 0.145 px (12 pairs > 0.1; 0.053 / 0.145 (11) before masked
  pixels were filled ahead of the move, within the check's noise), ``"lk"`` alone
  0.047 / 0.140 (13), both at the check's floor for a registration as precise as
  itself (0.057 / 0.145).
  The price is the ``"lk"`` stage: some 1.5 s CPU per NAIP pair (12 px windows refit
  until the pooled shift stops moving) against 0.12 s for ``"pc"``, 87 s against 8-10 s
  per band of the 10-date series; ``estimator="pc"`` is the cheap choice when 0.1-0.3 px
  is good enough.

What is left on NAIP (``python bench/bench_naip.py --estimator lk --check weighted,huber``;
``--estimator pc+lk`` for the default),
NIR, registered on one colour of a 72 px checkerboard, checked on the other): with
``"lk"`` the weighted check's median / max over the 45 pairs is 0.047 / 0.140 px (fold 0)
and 0.075 / 0.188 px (fold 1), against 0.104 / 0.290 and 0.080 / 0.203 with ``"pc"``;
a registration exactly as precise as the check would show 0.056 / 0.140 and
0.068 / 0.164 (the check's split-half floor, doubled). Half of the pixels give each
date an error of 0.02-0.03 px per component from its content alone, so a registration
from one colour checked on the other cannot show much less. The weighted check then
uses the registration's estimator on other pixels; the 64 px Huber check agrees after
registering on fold 0 (0.094 / 0.222, its floor doubled 0.111 / 0.248), but after
registering on fold 1 it puts every date +0.28 to +0.44 px in rows from 2009 where the
weighted check on the same pixels sees -0.02 to +0.08: the row shift between 2009 and
the other years depends on how an estimator weighs their content.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import ndimage

from changedet.coreg import apply_shift, below_min_reliability, estimate_local, solve_network
from changedet.coreg_check import lk_window_fit, pool_windows, robust_mean
from changedet.errors import CoregError
from changedet.grid import GridSpec

__all__ = ["DEFAULT_ESTIMATOR", "ESTIMATORS", "NetworkShifts", "checkerboard", "coregister_stack_windows",
           "network_shifts", "pair_shift", "pair_shift_lk", "solve_pairs"]

#: Fewest kept tie points (``"lk"``: blocks with a reliable window) for a pair to count in the network.
MIN_TIE_POINTS = 5

#: Pair estimators: ``"pc"`` windowed phase correlation (:func:`pair_shift`), ``"lk"``
#: precision-weighted small-window Lucas-Kanade (:func:`pair_shift_lk`), ``"pc+lk"`` the
#: ``"pc"`` network first, then ``"lk"`` on the dates resampled by it (:func:`network_shifts`).
ESTIMATORS = ("pc", "lk", "pc+lk")

#: Estimator of ``network="windows"`` when none is given.
DEFAULT_ESTIMATOR = "pc+lk"

#: Default window side (pixels) of each estimator (``"pc+lk"``: of its ``"lk"`` stage; its
#: ``"pc"`` stage uses the ``"pc"`` default).
DEFAULT_WINDOW_PX = {"pc": 64, "lk": 12, "pc+lk": 12}


def checkerboard(shape: tuple[int, int], cell_px: int, *, parity: int = 0) -> np.ndarray:
    """Boolean checkerboard of ``cell_px`` squares, cell (0, 0) True when ``parity`` is 0.

    Used to hold out half of the pixels: register on one colour, check on the other.
    """
    r = (np.arange(shape[0]) // cell_px)[:, None]
    c = (np.arange(shape[1]) // cell_px)[None, :]
    return ((r + c + parity) % 2) == 0


def pair_shift(reference: np.ndarray, moving: np.ndarray, *, valid: np.ndarray | None = None,
               window_px: int = 64, max_shift_px: float = 20.0) -> tuple[float, float, float, int]:
    """Translation of ``moving`` onto ``reference`` as a robust mean of windowed matches.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        (rows, cols) one band of two dates on the same grid, NaN where invalid.
    valid : numpy.ndarray of bool, optional
        Pixels the match may use.
    window_px : int
        Window side (pixels); windows are spaced by their side.
    max_shift_px : float
        Largest shift searched (pixels).

    Returns
    -------
    shift_row, shift_col : float
        Huber mean over kept tie points (pixels; :func:`apply_shift` convention).
    stderr : float
        Standard error of the shift per component (pixels), from the tie-point scatter
        (``1.2533 * MAD / sqrt(n)``, the larger component); NaN when fewer than
        :data:`MIN_TIE_POINTS` tie points were kept.
    tie_points : int
        Kept tie points.
    """
    try:
        # Not refined per masked window: the network's pair estimates are pooled over many
        # windows and, by default (estimator "pc+lk"), refined by Lucas-Kanade windows
        # afterwards; "pc" is the cheap estimator (refining 64 px windows under the
        # check's checkerboard mask would cost several times the estimate).
        tp = estimate_local(reference, moving, valid=valid, window_px=window_px, step_px=window_px,
                            max_shift_px=max_shift_px, refine_masked=False)
    except CoregError:
        return math.nan, math.nan, math.nan, 0
    k = tp.kept
    n = int(k.sum())
    if n < MIN_TIE_POINTS:
        return math.nan, math.nan, math.nan, n
    x = np.stack([tp.shift_row[k], tp.shift_col[k]], axis=1)
    mu = robust_mean(x)
    mad = 1.4826 * np.median(np.abs(x - np.median(x, axis=0)), axis=0)
    se = float(1.2533 * mad.max() / math.sqrt(n))
    return float(mu[0]), float(mu[1]), se, n


def pair_shift_lk(reference: np.ndarray, moving: np.ndarray, *, valid: np.ndarray | None = None,
                  window_px: int = 12, block_px: int = 72, max_shift_px: float = 2.0, restarts: int = 6,
                  n_boot: int = 50, seed: int = 0) -> tuple[float, float, float, int]:
    """Translation of ``moving`` onto ``reference`` pooled from many small Lucas-Kanade windows.

    Every ``window_px`` window tiled inside the ``block_px`` blocks of the frame
    (:func:`changedet.coreg_check.lk_window_fit`) gives a translation with its own
    Cramer-Rao covariance; :func:`changedet.coreg_check.pool_windows` pools them by a
    random-effects biweight mean, so windows with strong edges across several
    directions count most and wrong matches on changed content not at all. The windows'
    iteration leans towards its start, so it is restarted from the pooled shift until
    that moves by less than 0.002 px.

    Why not only :func:`pair_shift`: on NAIP's 5 m prairie frames the phase-correlation
    reliability of a 64 px window between two years is mostly 0 (5 of 165 windows kept
    on the 2009-2014 NIR pair), so a pair's shift rests on a handful of windows; here
    some 180 reliable windows of half the frame count, each by its own precision.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        (rows, cols) one band of two dates on the same grid, NaN where invalid.
    valid : numpy.ndarray of bool, optional
        Pixels the match may use; a window is used only when all its pixels (and a 4 px
        margin) are valid.
    window_px : int
        Window side (pixels).
    block_px : int
        Block side (pixels): windows are tiled inside blocks (72 px hold 5 x 5 windows of
        12 px with their margins), and blocks are the units of the bootstrap
        (neighbouring windows share content, hence errors). With a checkerboard
        ``valid`` (:func:`checkerboard`), use its cell side, so that blocks are cells.
    max_shift_px : float
        Largest accepted difference (pixels) of a window's shift from the pooled one;
        larger shifts must be removed first (e.g. by a global match).
    restarts : int
        Most restarts from the pooled shift.
    n_boot : int
        Bootstrap resamples of blocks for the standard error.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    shift_row, shift_col : float
        Pooled shift (pixels; :func:`apply_shift` convention).
    stderr : float
        Bootstrap standard error (pixels), the larger component; NaN (and NaN shifts)
        when fewer than :data:`MIN_TIE_POINTS` blocks hold a reliable window.
    tie_points : int
        Reliable windows pooled.
    """
    nan = math.nan
    start = np.zeros(2)
    fit = None
    for _ in range(restarts + 1):
        try:
            fit = lk_window_fit(reference, moving, cell_px=block_px, window_px=window_px, mask=valid,
                                max_shift_px=max_shift_px, start=start)
        except CoregError:
            return nan, nan, nan, 0
        ok = fit.reliable
        if len(np.unique(fit.cell[ok])) < MIN_TIE_POINTS:
            return nan, nan, nan, int(ok.sum())
        mu, _, _ = pool_windows(fit.shifts[ok], fit.covariance[ok], groups=fit.cell[ok], n_boot=0)
        moved = float(np.abs(mu - start).max())
        start = mu
        if moved < 0.002:
            break
    ok = fit.reliable
    mu, se, _ = pool_windows(fit.shifts[ok], fit.covariance[ok], groups=fit.cell[ok], n_boot=n_boot, seed=seed)
    return float(mu[0]), float(mu[1]), float(np.max(se)), int(ok.sum())


def _match(estimator: str, reference, moving, valid, window_px, max_shift_px):
    """One pair by ``estimator`` (see :data:`ESTIMATORS`)."""
    if estimator == "lk":
        return pair_shift_lk(reference, moving, valid=valid, window_px=window_px)
    return pair_shift(reference, moving, valid=valid, window_px=window_px, max_shift_px=max_shift_px)


def _check_estimator(estimator: str, window_px: int | None) -> int:
    """The window side for ``estimator`` (its default when None); bad values raise CoregError."""
    if estimator not in ESTIMATORS:
        raise CoregError(f"estimator={estimator!r} is not known; use one of {list(ESTIMATORS)}")
    ws = DEFAULT_WINDOW_PX[estimator] if window_px is None else int(window_px)
    low = 16 if estimator == "pc" else 6
    if ws < low:
        raise CoregError(f"window_px={ws} is too small for estimator={estimator!r} (at least {low} px; "
                         f"{'32-128' if estimator == 'pc' else '8-24'} px is the useful range)")
    # The Lucas-Kanade windows tile 72 px blocks (pair_shift_lk): a larger window fits no
    # block, every pair would come back NaN and pc+lk would silently keep its coarse stage.
    if estimator != "pc" and ws > 64:
        raise CoregError(f"window_px={ws} is too large for estimator={estimator!r}: it sets the Lucas-Kanade "
                         "window (8-24 px is the useful range, at most 64); the phase-correlation stage of "
                         "'pc+lk' keeps its 64 px windows. For larger phase-correlation windows use estimator='pc'")
    return ws


def _shift_mask(mask: np.ndarray | None, shift) -> np.ndarray | None:
    """A date's usable-pixel mask moved with its content by ``shift`` (row, col, pixels).

    A pixel stays usable only when every source pixel of its cubic resampling
    (:func:`changedet.coreg.apply_shift`: 4 taps per axis, 3 at a whole-pixel shift,
    whose spline reproduces the source pixel exactly) was usable: a cloud edge moves
    with the cloud, and it takes the kernel's reach with it, about 2 px on one side and
    1 px on the other for a fractional shift; the NaN border of the move is unusable. No
    shift (0 or NaN: a date left unmoved) leaves the mask as it is.
    """
    if mask is None or not np.any(shift) or not np.all(np.isfinite(shift)):
        return mask
    bad = ~np.asarray(mask, bool)
    for axis, s in enumerate(shift):
        if float(s) != math.floor(float(s)):
            # Bilinear taps are floor and floor + 1; the cubic ones reach one further each side.
            bad = ndimage.maximum_filter1d(bad, 3, axis=axis, mode="constant", cval=False)
    return apply_shift((~bad).astype(float), float(shift[0]), float(shift[1]), order=1) > 0.999


def _fill_masked(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with its finite pixels outside ``mask`` replaced by the nearest usable one.

    Done before a date is resampled, so that what is masked (a cloud 10x brighter than
    the ground) cannot reach kept pixels through the cubic spline's prefilter and taps,
    nor windows next to it through a later high-pass: every value of the moved image
    then comes from usable pixels only. A nearest-pixel copy (as
    :func:`changedet.coreg.apply_shift` fills NaN holes), not a constant, so that the
    fill adds no edge of its own. NaN pixels stay NaN (apply_shift handles them).
    """
    from changedet.coreg import _filled

    finite = np.isfinite(image)
    hole = finite & ~np.asarray(mask, bool)
    if not hole.any():
        return image
    out, _, _ = _filled(np.where(hole, np.nan, image))
    out[~finite] = np.nan
    return out


def _move(image: np.ndarray, mask: np.ndarray | None, shift) -> tuple[np.ndarray, np.ndarray | None]:
    """One date of the ``"pc+lk"`` fine stage: its image and usable mask moved by ``shift``.

    The mask is on the date's own pixels (a cloud in that date), so it moves with the
    content (:func:`_shift_mask`); masked pixels are filled from usable ones first
    (:func:`_fill_masked`). Without a mask the image is moved as it is. A shift with a
    NaN (a date the coarse stage did not link) gives an all-NaN image, so that its pairs
    give no match (see :func:`_coarse_start`).
    """
    if not np.all(np.isfinite(shift)):
        return np.full(np.shape(image), np.nan), mask
    if mask is None:
        return apply_shift(image, float(shift[0]), float(shift[1])), None
    moved = apply_shift(_fill_masked(image, mask), float(shift[0]), float(shift[1]))
    return moved, _shift_mask(mask, shift)


def _coarse_start(shifts: np.ndarray) -> np.ndarray:
    """(time, 2) per-date start of the ``"lk"`` stage: the ``"pc"`` solution, 0 where it has none.

    A date the phase-correlation network could not link is not refined (its images are
    withheld from the fine stage, and it stays unlinked): from a start that may be
    several pixels off, the Lucas-Kanade windows settle on a wrong but plausible shift
    (a 7 px move comes back as about 0), and a wrong shift is worse than none.
    """
    return np.where(np.isfinite(shifts), shifts, 0.0)


def _combine(coarse: NetworkShifts, fine: NetworkShifts, start: np.ndarray) -> NetworkShifts:
    """The ``"pc+lk"`` result: the fine solution plus its start, pair shifts on the input dates.

    A date the fine stage cannot link (too few reliable 12 px windows in all its pairs:
    little sharp texture at that scale) keeps the coarse shift and the coarse support, so
    the refinement never loses a date the phase correlation registered; a date the
    coarse stage did not link stays unlinked (NaN).
    """
    pairs = fine.pairs
    s_i = np.where(pairs[:, :1] >= 0, start[np.maximum(pairs[:, 0], 0)], 0.0)
    s_j = start[pairs[:, 1]]
    # A date refined only if some fine pair supports it: a finite fine shift whose pairs
    # all fell beyond the robust cut (support 0) would turn a well-supported coarse
    # shift into an unreliable one.
    refined = (np.all(np.isfinite(fine.shifts), axis=1) & np.all(np.isfinite(coarse.shifts), axis=1)
               & (fine.support >= 1))
    shifts = np.where(refined[:, None], fine.shifts + start, coarse.shifts)
    support = np.where(refined, fine.support, coarse.support)
    # Pair (i, j) was measured on dates moved by start[i] and start[j]: on the input dates
    # the shift of j onto i is the measured one plus start[j] - start[i].
    return NetworkShifts(shifts, support, pairs, fine.pair_shifts + s_j - s_i, fine.pair_stderr, fine.kept,
                         coarse_shifts=coarse.shifts, refined=refined)


@dataclass(frozen=True)
class NetworkShifts:
    """Per-date shifts of one band solved from a network of windowed pair matches.

    Attributes
    ----------
    shifts : numpy.ndarray
        (time, 2) shift (row, col, pixels) moving each date onto the reference; NaN for
        a date no reliable match links to the reference.
    support : numpy.ndarray
        (time,) number of kept pair matches involving each date.
    pairs : numpy.ndarray
        (pairs, 2) ``(i, j)`` matched, ``i = -1`` for the reference.
    pair_shifts : numpy.ndarray
        (pairs, 2) measured shift of ``j`` onto ``i`` (pixels).
    pair_stderr : numpy.ndarray
        (pairs,) its standard error (pixels).
    kept : numpy.ndarray of bool
        (pairs,) matches kept by the robust solve.
    coarse_shifts : numpy.ndarray or None
        ``estimator="pc+lk"`` only: (time, 2) the phase-correlation network's shifts the
        Lucas-Kanade stage started from (pixels; NaN where it linked no date); ``shifts``
        minus these (NaN taken as 0) is the refinement. ``support``, ``pair_stderr`` and
        ``kept`` are the refinement's (``support`` the coarse one for a date only the
        coarse stage linked, whose shift is then the coarse one).
    refined : numpy.ndarray of bool or None
        ``estimator="pc+lk"`` only: (time,) whether a date's shift is the refined one;
        False where the date keeps its coarse shift (or has none), so that its
        ``support`` (the tie points a stack result reports) is the coarse stage's.
    """

    shifts: np.ndarray
    support: np.ndarray
    pairs: np.ndarray
    pair_shifts: np.ndarray
    pair_stderr: np.ndarray
    kept: np.ndarray
    coarse_shifts: np.ndarray | None = None
    refined: np.ndarray | None = None


def network_shifts(reference: np.ndarray | None, images: np.ndarray, *, valid: np.ndarray | None = None,
                   window_px: int | None = None, max_shift_px: float = 20.0, floor_px: float = 0.02,
                   estimator: str = DEFAULT_ESTIMATOR, _ref_valid: np.ndarray | None = None) -> NetworkShifts:
    """Solve one translation per date from windowed matches of every pair of dates.

    Parameters
    ----------
    reference : numpy.ndarray or None
        (rows, cols) reference band; None makes date 0 the reference (its shift is 0).
    images : numpy.ndarray
        (time, rows, cols) the same band of every date on the reference grid, NaN where
        invalid.
    valid : numpy.ndarray of bool, optional
        (rows, cols) or (time, rows, cols) pixels the matches may use (e.g. one colour of
        :func:`checkerboard`, cloud-free pixels), on each date's own pixels: a (rows,
        cols) mask holds for every date, and with ``"pc+lk"`` it moves with each date
        into the fine stage, as a (time, rows, cols) one does.
    window_px : int, optional
        Window side of the matches (pixels); default 64 (``"pc"``) or 12 (``"lk"``, and
        the ``"lk"`` stage of ``"pc+lk"``, whose ``"pc"`` stage uses 64).
    max_shift_px : float
        Largest shift searched (pixels; ``"pc"`` and the ``"pc"`` stage of ``"pc+lk"``:
        ``"lk"`` refines shifts below about 2 px, so larger ones must be removed first).
    floor_px : float
        Smallest standard error a pair is credited with (pixels), so that no single pair
        dominates the solve.
    estimator : {"pc+lk", "pc", "lk"}
        Pair estimator (default :data:`DEFAULT_ESTIMATOR`): windowed phase correlation
        (:func:`pair_shift`), precision-weighted Lucas-Kanade windows
        (:func:`pair_shift_lk`), or both in turn: the ``"pc"``
        network (any shift up to ``max_shift_px``), each date resampled by its solution
        (:func:`changedet.coreg.apply_shift`; ``valid``, given on each date's own
        pixels, moves with it, eroded by the cubic kernel's reach, and masked pixels are
        filled from usable ones before the move, so that none of their content reaches
        the fine stage), the ``"lk"`` network on the resampled dates, and its shifts
        added to the ``"pc"`` ones. The coarse stage gives range, the fine one precision.

    Returns
    -------
    NetworkShifts
    """
    window_px = _check_estimator(estimator, window_px)
    imgs = np.asarray(images, float)
    if imgs.ndim != 3:
        raise CoregError(f"images must be (time, rows, cols), got shape {imgs.shape}")
    n = imgs.shape[0]
    vm = None if valid is None else np.asarray(valid, bool)
    if vm is not None and vm.shape not in (imgs.shape, imgs.shape[1:]):
        raise CoregError(f"valid must be (rows, cols) or (time, rows, cols) like the images {imgs.shape}, "
                         f"got {vm.shape}")
    if estimator == "pc+lk":
        coarse = network_shifts(reference, imgs, valid=vm, max_shift_px=max_shift_px, floor_px=floor_px,
                                estimator="pc")
        start = _coarse_start(coarse.shifts)
        # A (rows, cols) mask holds for every date on its own pixels, as a (time, rows,
        # cols) one does: it moves with each date (as in the stack API's Dask path).
        per_date = None if vm is None else np.broadcast_to(vm, imgs.shape)
        moved_pairs = [_move(imgs[t], None if per_date is None else per_date[t], coarse.shifts[t])
                       for t in range(n)]
        moved = np.stack([m for m, _ in moved_pairs])
        vm_moved = None if vm is None else np.stack([k for _, k in moved_pairs])
        # The reference does not move: a (rows, cols) mask still holds on its pixels.
        fine = network_shifts(reference, moved, valid=vm_moved, window_px=window_px, floor_px=floor_px,
                              estimator="lk", _ref_valid=vm if vm is not None and vm.ndim == 2 else None)
        return _combine(coarse, fine, start)

    def mask(i, j):
        if vm is None:
            return None
        if vm.ndim == 2:
            return vm
        return vm[j] & (vm[i] if i >= 0 else (True if _ref_valid is None else _ref_valid))

    ref = None
    ref_pairs = []
    if reference is not None:
        ref = np.asarray(reference, float)
        if ref.shape != imgs.shape[1:]:
            raise CoregError(f"reference {ref.shape} is not on the images' grid {imgs.shape[1:]}")
        ref_pairs = [(-1, j) for j in range(n)]
    # Without a reference, date 0 is it: its pairs (0, j) play the reference matches.
    pairs = ref_pairs + list(itertools.combinations(range(n), 2))
    obs = np.full((len(pairs), 2), np.nan)
    se = np.full(len(pairs), np.nan)
    for k, (i, j) in enumerate(pairs):
        a = ref if i < 0 else imgs[i]
        r, c, s, _ = _match(estimator, a, imgs[j], mask(i, j), window_px, max_shift_px)
        obs[k] = (r, c)
        se[k] = s
    return solve_pairs(n, pairs, obs, se, has_reference=reference is not None, floor_px=floor_px)


def solve_pairs(n: int, pairs, obs: np.ndarray, se: np.ndarray, *, has_reference: bool,
                floor_px: float = 0.02) -> NetworkShifts:
    """Per-date shifts from pair matches weighted by their standard errors.

    Parameters
    ----------
    n : int
        Number of dates.
    pairs : sequence of (int, int)
        ``(i, j)`` matched, ``i = -1`` for the reference; without a reference
        (``has_reference`` False) date 0 is it and ``i >= 0`` everywhere.
    obs : numpy.ndarray
        (pairs, 2) measured shift of ``j`` onto ``i`` (pixels), NaN when not matched.
    se : numpy.ndarray
        (pairs,) standard error of each (pixels); NaN drops the pair.
    has_reference : bool
        Whether ``pairs`` include reference matches (``i = -1``).
    floor_px : float
        Smallest standard error a pair is credited with (pixels), so that no single pair
        dominates the solve.

    Returns
    -------
    NetworkShifts
    """
    pairs = [tuple(int(v) for v in p) for p in pairs]
    obs = np.asarray(obs, float).reshape(-1, 2)
    se = np.asarray(se, float)
    w = np.where(np.isfinite(se), 1.0 / np.maximum(se, floor_px) ** 2, 0.0)
    w = w / w.max() if w.max() > 0 else w
    if not has_reference:
        # Date 0 as the reference: pairs (0, j) become (-1, j); the rest are solved for dates 1..n-1.
        sub = [(-1 if i == 0 else i - 1, j - 1) for i, j in pairs]
        t, _, kept = solve_network(n - 1, sub, obs, w)
        t = np.vstack([[0.0, 0.0], t])
    else:
        t, _, kept = solve_network(n, pairs, obs, w)
    count = np.zeros(n)
    for (i, j), kp in zip(pairs, kept):
        if kp:
            count[j] += 1
            if i >= 0:
                count[i] += 1
    return NetworkShifts(t, count, np.array(pairs, int).reshape(-1, 2), obs, se, np.asarray(kept, bool))


def coregister_stack_windows(stack: xr.DataArray, reference: xr.DataArray | None = None, *,
                             per_band: bool = True, band: str | None = None, valid=None,
                             window_px: int | None = None, max_shift_px: float = 20.0,
                             estimator: str = DEFAULT_ESTIMATOR):
    """Register a stack on its reference grid by windowed network matches, band by band.

    Parameters
    ----------
    stack : xarray.DataArray
        (time, band, y, x) on the reference grid (e.g. after
        ``rio.reproject_match``), NaN where invalid.
    reference : xarray.DataArray, optional
        (band, y, x) AOI reference with the stack's bands; default: the stack's first
        date.
    per_band : bool
        Solve and apply a separate translation for every band (bands of a date offset
        from each other, as NAIP's are); False uses ``band`` for all bands.
    band : str, optional
        Band name matched when ``per_band`` is False (default: the last band).
    valid : numpy.ndarray of bool, optional
        (y, x) or (time, y, x) pixels the matches may use, on each date's own pixels
        (see :func:`network_shifts`).
    window_px : int, optional
        Window side of the matches (pixels); the estimator's default when None.
    max_shift_px : float
        Largest shift searched (pixels).
    estimator : {"pc+lk", "pc", "lk"}
        Pair estimator (see :func:`network_shifts`; default :data:`DEFAULT_ESTIMATOR`).

    Returns
    -------
    aligned : xarray.DataArray
        The stack with each date (and band) shifted; dates that no reliable match
        links to the reference are left unshifted.
    shifts : numpy.ndarray
        (time, band, 2) applied shift (row, col, pixels); NaN where none was applied.
    solutions : dict
        Band name -> :class:`NetworkShifts`.

    Raises
    ------
    CoregError
        ``stack`` not (time, band, y, x), or not on the reference grid.
    """
    if not isinstance(stack, xr.DataArray) or stack.dims != ("time", "band", "y", "x"):
        raise CoregError("stack must be a (time, band, y, x) DataArray on the reference grid, e.g. Cube.read() "
                         "after rio.reproject_match")
    names = [str(b) for b in stack["band"].values]
    if reference is not None:
        ref_names = [str(b) for b in reference["band"].values]
        if reference.shape[-2:] != stack.shape[-2:] or not GridSpec.of(reference).same_as(GridSpec.of(stack),
                                                                                         tol=1e-4):
            raise CoregError("stack is not on the reference grid; reproject it first (rio.reproject_match)")
    data = stack.values.astype(float)
    bands = names if per_band else [band or names[-1]]
    solutions = {}
    for b in bands:
        if b not in names:
            raise CoregError(f"band {b!r} is not in the stack's bands {names}")
        ref_img = None
        if reference is not None:
            if b not in ref_names:
                raise CoregError(f"band {b!r} is not in the reference bands {ref_names}")
            ref_img = reference.values[ref_names.index(b)].astype(float)
        solutions[b] = network_shifts(ref_img, data[:, names.index(b)], valid=valid, window_px=window_px,
                                      max_shift_px=max_shift_px, estimator=estimator)
    shifts = np.full(data.shape[:2] + (2,), np.nan)
    out = data.copy()
    for t in range(data.shape[0]):
        for k, name in enumerate(names):
            sol = solutions[name] if per_band else solutions[bands[0]]
            sh = sol.shifts[t]
            if not np.all(np.isfinite(sh)):
                continue
            shifts[t, k] = sh
            out[t, k] = apply_shift(data[t, k], float(sh[0]), float(sh[1]))
    aligned = stack.copy(data=out)
    return aligned, shifts, solutions


# -- stack mode: coregister_stack(network="windows") ------------------------------------
#
# The pieces below are the Dask tasks of :func:`changedet.coreg.coregister_stack` with
# ``network="windows"``: one task per date brings it onto the reference grid, one per
# (band, pair) matches it, the per-date solve is a small least-squares problem done on
# the client, and one task per date applies its shifts.

#: Keyword arguments ``coregister_stack(network="windows")`` accepts.
WINDOWS_KWARGS = frozenset({"band", "estimator", "min_reliability", "max_shift_px", "window_px"})


def _date_on_grid(reference, moving, valid, keys, ref_grid):
    """(date on the reference grid, {key: 2-D image}, usable mask or None, error or None)."""
    from changedet.coreg import _select_band, _to_reference_grid, _valid_on_grid

    try:
        on_grid = _to_reference_grid(moving, reference, ref_grid)
        imgs = {k: _select_band(on_grid, k, "moving") for k in keys}
        vm = None if valid is None else _valid_on_grid(valid, reference, ref_grid)
        return on_grid, imgs, vm, None
    except CoregError as exc:
        return None, None, None, str(exc)


def _pair_task(a, b, key, window_px, max_shift_px, estimator="pc"):
    """The pair match of date ``b`` onto ``a`` (date tuples of :func:`_date_on_grid`, or of
    :func:`_moved_date`, whose usable masks are per key)."""
    if a[3] is not None or b[3] is not None:
        return math.nan, math.nan, math.nan, 0
    ma, mb = (None if d[2] is None else d[2][key] if isinstance(d[2], dict) else d[2] for d in (a, b))
    m = None if ma is None and mb is None else (True if ma is None else ma) & (True if mb is None else mb)
    return _match(estimator, a[1][key], b[1][key], m, window_px, max_shift_px)


def _moved_date(date, keys, start):
    """A date tuple of :func:`_date_on_grid` with each key's image and its usable mask
    moved by ``start[key]`` (row, col, pixels; :func:`_move`): the input of the
    ``"pc+lk"`` fine stage. A key the coarse stage did not link (``start[key]`` NaN) gets
    an all-NaN image, so that its pairs give no match (see :func:`_coarse_start`)."""
    if date[3] is not None:
        return date
    moved = {k: _move(date[1][k], date[2], start[k]) for k in keys}
    masks = None if date[2] is None else {k: moved[k][1] for k in keys}
    return None, {k: moved[k][0] for k in keys}, masks, None


def _date_error(date):
    """The error of a date tuple of :func:`_date_on_grid` (None when it is on the grid)."""
    return date[3]


def _reference_date(reference, keys):
    """The reference as a date tuple of :func:`_date_on_grid` (floats, band planes, no mask, no error)."""
    from changedet.coreg import _as_float_with_nan, _select_band

    ref_f = _as_float_with_nan(reference)
    return ref_f, {k: _select_band(ref_f, k, "reference") for k in keys}, None, None


def _apply_date(date, ref_imgs, keys, shifts, band_index):
    """Shift one date, band by band (``band_index``: the band plane of each key, None =
    all bands by the one shift); returns (image, {key: (similarity before, after)})."""
    from changedet.coreg import _gradient_ncc, _select_band

    on_grid, imgs = date[0], date[1]
    out = on_grid
    if band_index is None:
        sh = shifts[keys[0]]
        if sh is not None:
            out = apply_shift(on_grid, *sh)
    else:
        data = np.array(on_grid.values)  # float32 stays float32, as apply_shift keeps it
        for k in keys:
            if shifts[k] is not None:
                data[band_index[k]] = apply_shift(data[band_index[k]], *shifts[k])
        out = on_grid.copy(data=data)
    sims = {}
    for k in keys:
        ok = np.isfinite(ref_imgs[k]) & np.isfinite(imgs[k])
        before = _gradient_ncc(ref_imgs[k], imgs[k], ok) if ok.sum() >= 16 else math.nan
        after = before
        if shifts[k] is not None:
            after = _gradient_ncc(ref_imgs[k], _select_band(out, k, "moving"), ok)
        sims[k] = (float(before), float(after))
    return out, sims


def windows_stack(stack: xr.DataArray, reference: xr.DataArray, *, valid=None, per_band: bool = True,
                  scheduler=None, **kwargs):
    """Stack registration by the windowed pair network; see :func:`changedet.coreg.coregister_stack`.

    Called by ``coregister_stack(network="windows", per_band=...)`` after its input
    checks. Returns ``(aligned, results, solutions)``: ``results`` has one entry per
    date, a :class:`~changedet.coreg.CoregResult` (``per_band=False``) or a dict band
    name -> CoregResult (``per_band=True``); ``solutions`` maps each matched key (band
    name, or None for the band mean) to its :class:`NetworkShifts`.
    """
    import dask

    from changedet.coreg import (CoregResult, _as_float_with_nan, _common_band, _grid, _metres_per_unit,
                                 _select_band)

    unknown = set(kwargs) - WINDOWS_KWARGS
    if unknown:
        raise CoregError(f"network='windows' does not take {sorted(unknown)}; it accepts "
                         f"{sorted(WINDOWS_KWARGS)}")
    min_rel = float(kwargs.get("min_reliability", 0.5))
    max_shift = float(kwargs.get("max_shift_px", 20.0))
    estimator = str(kwargs.get("estimator", DEFAULT_ESTIMATOR))
    window_px = _check_estimator(estimator, kwargs.get("window_px"))
    coarse_est, coarse_ws = ("pc", DEFAULT_WINDOW_PX["pc"]) if estimator == "pc+lk" else (estimator, window_px)
    ref_grid = _grid(reference, "reference")
    to_m = _metres_per_unit(ref_grid)
    n = stack.sizes["time"]
    ref_f = _as_float_with_nan(reference)
    if per_band:
        if stack.ndim != 4 or "band" not in stack.coords:
            raise CoregError("per_band=True needs a (time, band, y, x) stack with band names; use "
                             "per_band=False for a single-band stack")
        if kwargs.get("band") is not None:
            raise CoregError("per_band=True registers every band on itself; band= applies only with "
                             "per_band=False")
        keys = [str(b) for b in stack["band"].values]
        if reference.ndim != 3:
            raise CoregError(f"per_band=True needs a reference with the stack's bands {keys}; got a 2-D "
                             "reference (use per_band=False, or give it the bands)")
        band_index = {k: i for i, k in enumerate(keys)}
    else:
        keys = [_common_band(reference, stack.isel(time=0, drop=True), kwargs.get("band"))]
        band_index = None
    for k in keys:  # a missing band fails here, before any task runs
        _select_band(ref_f, k, "reference")
    # The reference and every date on its grid are persisted once and then passed to the
    # later stages as graph keys: with a distributed client they stay on the workers,
    # where literal arrays in a task would be uploaded again with every stage (and the
    # reference with every pair).
    ref_d = dask.delayed(reference, traverse=False)
    # Built where it runs from the one uploaded reference (a literal tuple would upload
    # the reference twice more: as floats and as its band planes).
    ref_date_d = dask.delayed(_reference_date, pure=False)(ref_d, keys)
    dates = []
    for i in range(n):
        mov = dask.delayed(lambda da: da.load())(stack.isel(time=i, drop=True))
        vm = None if valid is None else valid.isel(time=i, drop=True)
        dates.append(dask.delayed(_date_on_grid, pure=False)(ref_d, mov, vm, keys, ref_grid))
    ref_date_d, *dates = dask.persist(ref_date_d, *dates, scheduler=scheduler)
    pairs = [(-1, j) for j in range(n)] + list(itertools.combinations(range(n), 2))
    tasks = [dask.delayed(_pair_task, pure=False)(ref_date_d if i < 0 else dates[i], dates[j], k, coarse_ws,
                                                   max_shift, coarse_est)
             for k in keys for i, j in pairs]
    errors, matches = dask.compute([dask.delayed(_date_error)(d) for d in dates], tasks, scheduler=scheduler)
    matches = np.array(matches, float).reshape(len(keys), len(pairs), 4)
    solutions = {k: solve_pairs(n, pairs, matches[kk, :, :2], matches[kk, :, 2], has_reference=True)
                 for kk, k in enumerate(keys)}
    if estimator == "pc+lk":
        # Fine stage: every date moved by its coarse shifts (per key), then the "lk" network on them.
        starts = {k: _coarse_start(solutions[k].shifts) for k in keys}
        moved = [dask.delayed(_moved_date, pure=False)(dates[i], keys,
                                                       {k: tuple(solutions[k].shifts[i]) for k in keys})
                 for i in range(n)]
        fine_tasks = [dask.delayed(_pair_task, pure=False)(ref_date_d if i < 0 else moved[i], moved[j], k,
                                                            window_px, max_shift, "lk")
                      for k in keys for i, j in pairs]
        fine = np.array(dask.compute(*fine_tasks, scheduler=scheduler), float).reshape(len(keys), len(pairs), 4)
        solutions = {k: _combine(solutions[k], solve_pairs(n, pairs, fine[kk, :, :2], fine[kk, :, 2],
                                                           has_reference=True), starts[k])
                     for kk, k in enumerate(keys)}

    shifts, reasons, rels = [], [], []
    for kk, k in enumerate(keys):
        sol = solutions[k]
        for i in range(n):
            t = sol.shifts[i]
            rel = float(min(1.0, 0.5 * sol.support[i]))
            reason = ""
            if errors[i] is not None:
                reason = f"not registered: {errors[i]}"
            elif not np.all(np.isfinite(t)):
                reason = "no reliable windowed match links this date to the reference"
            elif rel < min_rel:
                reason = below_min_reliability(rel, min_rel)
            elif math.hypot(*t) > max_shift:
                reason = f"shift {math.hypot(*t):.2f} px exceeds max_shift_px {max_shift:.2f}"
            if kk == 0:
                shifts.append({})
                reasons.append({})
                rels.append({})
            shifts[i][k] = None if reason else (float(t[0]), float(t[1]))
            reasons[i][k] = reason
            rels[i][k] = rel

    ok_dates = [i for i in range(n) if errors[i] is None]
    applied = dask.compute(*[dask.delayed(_apply_date, pure=False)(dates[i], ref_date_d[1], keys, shifts[i],
                                                                   band_index) for i in ok_dates],
                           scheduler=scheduler)
    by_date = dict(zip(ok_dates, applied))
    xres = ref_grid.transform.a * to_m
    yres = abs(ref_grid.transform.e) * to_m
    outs, results = [], []
    for i in range(n):
        if i not in by_date:
            template = reference.isel(band=0, drop=True) if reference.ndim == 3 else reference
            out = xr.full_like(template, np.nan, dtype="float64")
            if stack.ndim == 4:
                out = out.expand_dims(band=stack["band"].values).transpose("band", "y", "x")
            outs.append(out)
        else:
            outs.append(by_date[i][0])
        per = {}
        for kk, k in enumerate(keys):
            sol = solutions[k]
            involved = [p for p, (a, b) in enumerate(pairs) if i in (a, b)]
            # The kept pairs of the stage whose shift is applied (support: a date the
            # fine stage could not refine keeps the coarse shift and the coarse count).
            n_kept = int(sol.support[i])
            sh = shifts[i][k]
            row, col = sh if sh is not None else (0.0, 0.0)
            before, after = by_date[i][1][k] if i in by_date else (math.nan, math.nan)
            per[k] = CoregResult(row, col, col * xres, -row * yres, rels[i][k], n_kept, before, after,
                                 sh is not None, reasons[i][k], mode="windows", tie_points_total=len(involved))
        results.append(per if per_band else per[keys[0]])
    return outs, results, solutions
