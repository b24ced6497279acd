"""Acquisition: search a source, load each scene on the AOI grid, mask clouds, append to the cube.

:func:`fetch` is what ``changedet fetch`` and the flows call. For each scene the
catalogue returns, in time order:

1. already in the cube (same scene id): left alone;
2. loaded on the AOI's grid for the sensor and resolution;
3. optical scenes get a ``CLM`` cloud band (:mod:`changedet.cloudmask`) and the cloud
   fraction *over the site polygon* is measured; a scene over the limit, or with no
   data over the site, is recorded in the cube's provenance as skipped with the reason
   (``changedet cube info`` lists them), never dropped silently;
4. appended (idempotent, locked, crash-safe; see :mod:`changedet.cube`).

The cloud limit applies to the site, not the catalogue's whole-tile figure: a tile
that is 80 % cloud may be clear over a 1 km² railyard. The catalogue is therefore
searched without a cloud filter and every scene is judged on its own pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np

from changedet.cloudmask import cloud_fraction, with_cloud_band
from changedet.cube import Cube, optical_bands
from changedet.errors import SceneUnreadable, SourceConfigError, SourceError, SourceUnavailable
from changedet.grid import GridSpec, aoi_grid
from changedet.sources.base import CLOUD_BAND, SceneRecord, check_range

log = logging.getLogger(__name__)

#: Percent of the site under cloud above which a scene is skipped, unless the AOI's
#: source entry (``max_cloud``) or the caller says otherwise.
DEFAULT_MAX_CLOUD = 60.0
#: Product name of the cube that ``fetch`` fills (see :class:`changedet.cube.Cube`).
ACQUIRED = "acquired"
#: Scenes in a row that may fail to load before the fetch stops: one bad scene (an item
#: without an asset, a corrupt file) must not block every later date for ever, but a
#: source that fails every scene (credentials, an outage) is stopped, not retried N times.
MAX_FAILURES_IN_A_ROW = 2


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene of a fetch.

    ``status`` is ``stored``, ``already`` (id in the cube), ``duplicate`` (same pixels
    under another id), ``skipped`` (with ``reason``, recorded in the cube) or ``failed``
    (the source could not load it: ``reason`` is the error; nothing is recorded, so the
    next fetch tries it again). ``cloud_fraction`` is over the site, 0..1, None when not
    measured. ``time`` is the acquisition time (ISO 8601 UTC); ``day`` the day at the site
    it belongs to (ISO date, :func:`changedet.pipeline.scene_day`: what ``--start``/``--end``
    and ``changedet run --date`` take), "" when not known.
    """

    scene_id: str
    time: str
    status: str
    reason: str = ""
    cloud_fraction: float | None = None
    cloud_mask: str | None = None
    day: str = ""


@dataclass(frozen=True)
class FetchReport:
    aoi_id: str
    source: str
    sensor: str
    cube_path: str
    outcomes: tuple[SceneOutcome, ...] = field(default_factory=tuple)
    #: Why the fetch stopped before the last scene ("" when it went through every scene).
    stopped: str = ""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("stored", "already", "duplicate", "skipped", "failed")
                 if self.count(s)]
        text = f"{self.aoi_id}/{self.sensor} from {self.source}: " + (", ".join(parts) or "nothing to do")
        return text + (" (stopped early)" if self.stopped else "")


def site_mask(aoi, grid: GridSpec) -> np.ndarray:
    """Boolean (rows, cols): pixels whose centre falls inside the AOI site polygon."""
    from rasterio.features import rasterize

    site = aoi.to_crs(aoi.polygon, grid.crs)
    return rasterize([(site, 1)], out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8").astype(bool)


def site_cloud(data, scene: SceneRecord, inside: np.ndarray, *, optical: bool, cloud_method: str = "auto"):
    """``(data, method, fraction)``: an acquisition with its ``CLM`` band, and its cloud over the site.

    Optical data gets its cloud mask (``cloud_method``, see :func:`changedet.cloudmask.cloud_mask`)
    with unobserved pixels neither cloud nor clear; ``fraction`` is the cloud share (0..1)
    of the observed site pixels (``inside``), None when the scene observes none of them.
    Radar has no cloud: 0.0 where it has data over the site (``method`` None).
    """
    method = None
    if optical:
        # The scene id names the file or item in the cloud mask's errors (scl_cloud's 'not an SCL band').
        data, method = with_cloud_band(data, method=cloud_method, source=scene.id)
        data = _unobserved_not_clear(data)
        frac = cloud_fraction(data.sel(band=CLOUD_BAND), within=inside)
    else:
        valid = np.isfinite(np.asarray(data.values)).all(axis=0)
        frac = None if not (valid & inside).any() else 0.0
    return data, method, frac


def _unobserved_not_clear(data):
    """``data`` with its ``CLM`` band NaN (no data) where no reflectance band has data and the mask says clear.

    A provider's cloud mask often says 0 (clear) over pixels it has no reflectance for (a
    swath edge, a no-data tile corner): counted as clear, a scene with nothing over the
    site would be stored as a 0 % cloud acquisition. Unobserved is neither cloud nor clear.

    Only a pixel that *every* reflectance band lacks is unobserved: a legitimate 0 in one
    band of an integer product with ``nodata=0`` (NIR over water) is NaN in that band
    alone, and the pixel was seen. A cloud verdict is kept: many products blank the
    reflectance under the cloud they flag, and those pixels were observed as cloud.
    """
    bands = optical_bands(data)
    if bands.sizes.get("band", 0) == 0:  # a mask alone: nothing to judge it by
        return data
    names = [str(b) for b in data["band"].values]
    values = np.array(data.values, copy=True)
    clm = values[names.index(CLOUD_BAND)]
    with np.errstate(invalid="ignore"):
        nodata = bands.isnull().all("band").values & (clm < 0.5)
    if not nodata.any():
        return data
    clm[nodata] = np.nan
    return data.copy(data=values)


class FetchStopped(SourceError):
    """A fetch stopped because ``MAX_FAILURES_IN_A_ROW`` scene loads in a row failed, or one
    failed on a configuration error of the source (``option`` then names the setting).

    ``report`` is the :class:`FetchReport` of the scenes handled until then (its ``stopped``
    holds this message), so a caller can still show what was stored and what failed.
    """

    def __init__(self, message: str, report: "FetchReport", option: str | None = None):
        super().__init__(message)
        self.report = report
        self.option = option


def unusable_sources_error(aoi, exc: BaseException, *, seed: int = 0, registry: Path | None = None,
                           data_dir: str | Path | None = None) -> SourceConfigError | SourceUnavailable | None:
    """What ``exc`` is when no source entry of ``aoi`` can be used here: configuration, or may pass.

    :func:`changedet.pipeline.run_day` raises a plain :class:`SourceError` for an AOI
    without a stored series none of whose source entries can be used on this machine
    (Sentinel Hub credentials missing, a local folder that does not exist or holds no
    images, a source package not installed; :func:`changedet.pipeline.choose_source`).
    This asks ``choose_source`` again (its checks make no network call) to tell the two
    kinds of that case apart:

    - every entry lacks something no wait can bring (credentials or a profile, a package,
      a local entry without ``path``): a :class:`SourceConfigError` (option ``sources``),
      not retried, naming the AOI file, each entry with what it lacks (the variables or
      setting to fix, never a secret's value) and the fix;
    - a local entry's folder is missing or empty, which is also what a share not mounted
      (or an empty mount point) looks like: a :class:`SourceUnavailable`, tried again.

    Whether the data directory exists does not enter: when every entry lacks credentials,
    a package or a path, that is what must be fixed on this machine, and a data directory
    not made yet (a first run, a store folder written only with the first cube) is not a
    share not mounted. (An existing series found in the store whose source cannot be used
    here is a passing ``failed`` day of ``run_day``; this is not asked then.)

    Parameters
    ----------
    aoi : changedet.aoi.AOI
    exc : BaseException
        What ``run_day`` raised; anything but a plain ``SourceError`` gives None.
    seed, registry, data_dir
        As in the run's :class:`changedet.pipeline.RunConfig`.

    Returns
    -------
    SourceConfigError, SourceUnavailable or None
        The error to raise instead of ``exc``; None when ``exc`` is something else
        (a source is usable now).
    """
    if type(exc) is not SourceError:
        return None
    from changedet.pipeline import choose_source  # here: importing the pipeline loads most of changedet

    try:
        choose_source(aoi, seed, registry, data_dir)
    except SourceConfigError:
        return None  # a setting of a usable entry: raised as it is by run_day
    except SourceError:
        pass
    else:
        return None  # a source can be used (now): exc was something else
    where = f"AOI file {aoi.source_path}" if getattr(aoi, "source_path", None) else f"AOI {aoi.id}"
    # Every entry was passed over (choose_source failed): a local entry with a path was for a
    # missing or empty folder, which a remount cures. No wait cures the other reasons.
    waiting = [f"{spec.name} ({spec.options.get('path')})" for spec in aoi.sources
               if spec.name == "local" and spec.options.get("path")]
    if waiting:
        return SourceUnavailable(
            f"{where}: no source entry can be used now; the local folder(s) {', '.join(waiting)} are missing or "
            "empty, as a share not mounted is: tried again later (if the path is wrong, fix the entry's 'path'): "
            f"{exc}")
    # exc names each entry and what it lacks; this adds the file, where to set it and that waiting is no cure.
    return SourceConfigError(
        f"{where}: no source entry can be used on this machine and a retry cannot help (set what an entry lacks "
        "where the AOI runs: the shell of `changedet run`, the environment of the Prefect worker or `changedet "
        f"serve`; or fix the entries in the file; then run the days again): {exc}", option="sources")


def _config_stop(aoi, source, exc: SourceConfigError, scene: SceneRecord, outcomes: list[SceneOutcome],
                 left: int) -> str:
    """Why a fetch stopped at ``scene`` on a configuration error: the AOI file, source, setting and the fix."""
    name = getattr(source, "name", source)
    where = f"the {name} entry" + (f" of {aoi.source_path}" if getattr(aoi, "source_path", None) else "")
    done = sum(1 for o in outcomes if o.status == "stored")
    return (f"stopped at {outcomes[-1].day or scene.time.date().isoformat()} ({scene.id}): a configuration error of {where}"
            + (f", its '{exc.option}' setting" if exc.option else "") + f": {exc}; every scene of it fails alike; "
            f"{done} scene(s) stored before stay stored" + (f", {left} later scene(s) not tried" if left else "")
            + "; fix the setting (in the AOI file or the command's options) and run the fetch again")


def fetch(aoi, source, *, sensor: str, resolution_m: float, start: date, end: date,
          data_dir: str | Path, max_cloud: float = DEFAULT_MAX_CLOUD, cloud_method: str = "auto",
          lock_timeout: float | None = None, storage_options: dict[str, Any] | None = None,
          progress: Callable[[int, int, SceneOutcome], None] | None = None) -> FetchReport:
    """Fetch every acquisition of ``aoi`` from ``start`` to ``end`` into its cube.

    Parameters
    ----------
    aoi : changedet.aoi.AOI
    source : Source
        Anything with ``search`` and ``load`` (:mod:`changedet.sources`).
    sensor : str
        ``vhr``, ``s2`` or ``s1``; ``s1`` gets no cloud mask and float32 storage.
    resolution_m : float
        Pixel size of the AOI grid, metres.
    start, end : date
        Inclusive days at the site (``aoi.timezone``), as the daily runs take them
        (:func:`changedet.pipeline.scene_day`: a pass at 22:40 UTC on D-1 is D's at UTC+12;
        the simulator's scenes are their UTC date's).
    data_dir : path or fsspec URL
        Where cubes live (see :class:`changedet.cube.Cube`).
    max_cloud : float
        Percent of the site under cloud above which a scene is skipped (recorded).
    cloud_method : str
        ``auto`` or a method of :func:`changedet.cloudmask.cloud_mask`.
    lock_timeout : float, optional
        Seconds to wait for another writer of the same cube; then
        :class:`changedet.cube.CubeLocked` is raised and nothing is changed.
    progress : callable, optional
        Called as ``progress(i, n, outcome)`` after each scene (i from 1).

    Raises
    ------
    DateError
        ``end`` before ``start``.
    SourceError
        The search found nothing, or a scene's cloud mask cannot be made (no band it
        could use: a configuration error, which no re-run cures, so it stops the fetch).
    FetchStopped
        (a ``SourceError``) A scene load failed on a configuration error of the source
        (:class:`~changedet.errors.SourceConfigError`: at once, naming the AOI file, the
        setting and the fix), or ``MAX_FAILURES_IN_A_ROW`` scene loads in a row failed, naming
        them and earlier failures; its ``report`` holds the outcomes until then (scenes
        stored before stay stored). A scene the source cannot load is otherwise reported
        as ``failed`` in the returned report, nothing of it is stored or recorded, and the
        fetch goes on with the next scene. Scenes already stored do not break a run of
        failed loads: only a scene that loaded does.
    """
    check_range(start, end)
    if not 0.0 <= float(max_cloud) <= 100.0:
        raise SourceError(f"max_cloud {max_cloud} must be a percentage between 0 and 100")
    grid = aoi_grid(aoi, float(resolution_m))
    optical = sensor != "s1"
    # Raw acquisitions go to their own cube: the pipeline's cube holds co-registered
    # slices and skips scene ids it already has, so sharing one would hide these scenes.
    cube = Cube(data_dir, aoi.id, sensor, grid, reflectance=optical, lock_timeout=lock_timeout,
                storage_options=storage_options, product=ACQUIRED)
    from types import SimpleNamespace

    from changedet.pipeline import _utc_days, scene_day

    spec = SimpleNamespace(name=str(getattr(source, "name", "")))

    def day_of(t) -> date:
        return scene_day(aoi, spec, t)

    first, last = (start, end) if spec.name == "simulator" else (_utc_days(aoi, start)[0], _utc_days(aoi, end)[1])
    kwargs: dict[str, Any] = {"sensor": sensor, "max_cloud": 100.0}
    if getattr(source, "pattern", None):
        # The names give the times: a broken file of a day outside the range is not read.
        kwargs["keep_time"] = lambda t: start <= day_of(t) <= end
    found = _search_range(source, aoi, start, end, first, last, kwargs)
    scenes: list[SceneRecord] = sorted((s for s in found if start <= day_of(s.time) <= end), key=lambda s: s.time)
    if not scenes:
        raise SourceError(f"{getattr(source, 'name', source)} has no {sensor} scene over {aoi.id} from {start} "
                          f"to {end}; widen the dates or check the source settings (collection, path)")
    inside = site_mask(aoi, grid)
    outcomes: list[SceneOutcome] = []
    failed_in_a_row: list[SceneOutcome] = []

    def report(stopped: str = "") -> FetchReport:
        return FetchReport(aoi.id, str(getattr(source, "name", source)), sensor, str(cube.path), tuple(outcomes),
                           stopped)

    for i, scene in enumerate(scenes, start=1):
        if cube.has(scene.id):
            # Nothing was loaded, so this says nothing about the source: it must not reset
            # the count of failed loads (a re-run's missing scenes lie between stored ones).
            outcome = SceneOutcome(scene.id, scene.time.isoformat(), "already", day=day_of(scene.time).isoformat())
        else:
            try:
                data = source.load(scene, grid)
            except SourceError as exc:
                # Only the load is caught: a cloud-mask or configuration error raised later
                # fails every scene alike, so it stops the fetch as it is (a re-run cannot cure it).
                outcome = SceneOutcome(scene.id, scene.time.isoformat(), "failed", str(exc),
                                       day=day_of(scene.time).isoformat())
                if isinstance(exc, SourceConfigError):
                    # The entry is wrong (bands:, a request or collection id the provider
                    # rejects, credentials): every later scene fails alike, so the fetch stops
                    # at this one rather than after MAX_FAILURES_IN_A_ROW loads.
                    outcomes.append(outcome)
                    if progress is not None:
                        progress(i, len(scenes), outcome)
                    message = _config_stop(aoi, source, exc, scene, outcomes, len(scenes) - i)
                    raise FetchStopped(message, report(message), option=exc.option) from None
                failed_in_a_row.append(outcome)
            else:
                failed_in_a_row.clear()
                outcome = _one(cube, scene, data, grid, inside, optical=optical, max_cloud=float(max_cloud),
                               cloud_method=cloud_method, day=day_of(scene.time))
        outcomes.append(outcome)
        if progress is not None:
            progress(i, len(scenes), outcome)
        if len(failed_in_a_row) >= MAX_FAILURES_IN_A_ROW:
            done = sum(1 for o in outcomes if o.status == "stored")
            days = ", ".join(o.day for o in failed_in_a_row)
            reasons = "; ".join(dict.fromkeys(o.reason for o in failed_in_a_row))  # once each, in order
            # Earlier isolated failures are named too: the stop must not hide them.
            earlier = [o.day for o in outcomes if o.status == "failed" and o not in failed_in_a_row]
            message = (f"stopped after {len(failed_in_a_row)} scenes in a row failed to load ({days}): {reasons}; "
                       f"{done} scene(s) stored before stay stored"
                       + (f", earlier failed: {', '.join(earlier)}" if earlier else "")
                       + (f", {len(scenes) - i} later scene(s) not tried" if i < len(scenes) else "")
                       + "; run the fetch again once the cause is fixed")
            raise FetchStopped(message, report(message))
    return report()


def _search_range(source, aoi, start: date, end: date, first: date, last: date,
                  kwargs: dict) -> list[SceneRecord]:
    """:func:`fetch`'s search of the UTC days ``first``..``last`` that the site days
    ``start``..``end`` overlap.

    Without a file-name ``pattern`` a broken file's time is in its unreadable header, so a
    source fails the search of the UTC date its name or folder gives
    (:class:`~changedet.errors.SceneUnreadable`). A broken file dated inside ``start``..``end``
    (UTC) fails the fetch, as it always did. One on a UTC date searched only for the hours
    of the range's first or last site day it holds (the day before ``start`` east of UTC,
    the day after ``end`` west of it) is passed over with a warning naming it: it may be a
    day's outside the range, and unlike a run (which would record ``no_scene``) a fetch
    records nothing for a day without a scene, so the next fetch after the file is repaired
    takes it.
    """
    try:
        return list(source.search(aoi, first, last, **kwargs))
    except SceneUnreadable:
        if "keep_time" in kwargs or (first, last) == (start, end):
            raise
    found = list(source.search(aoi, max(first, start), min(last, end), **kwargs))
    for u, site_day in ((first, start), (last, end)):
        if start <= u <= end:
            continue
        try:
            found += source.search(aoi, u, u, **kwargs)
        except SceneUnreadable as exc:
            log.warning("%s: the search of UTC %s, next to %s, failed (%s); passed over: if the file is a pass of "
                        "%s, fetch that day again once it is repaired", aoi.id, u, site_day, exc, site_day)
    return found


def _one(cube: Cube, scene: SceneRecord, data, grid: GridSpec, inside: np.ndarray, *, optical: bool,
         max_cloud: float, cloud_method: str, day: date) -> SceneOutcome:
    """Judge one loaded scene (``data`` on ``grid``) and store it or record it as skipped,
    with the ``day`` at the site it belongs to (as the daily runs record it)."""
    when = scene.time.isoformat()
    data, method, frac = site_cloud(data, scene, inside, optical=optical, cloud_method=cloud_method)
    if frac is None:
        reason = "no data over the site (outside the scene footprint or all no-data)"
        cube.record_skipped(scene, reason, cloud_mask=method, day=day.isoformat())
        return SceneOutcome(scene.id, when, "skipped", reason, None, method, day.isoformat())
    if optical and frac * 100.0 > max_cloud:
        if frac >= 1.0:
            reason = f"all cloud: every observed pixel of the site is cloud ({method} mask)"
        else:
            reason = f"{frac:.0%} of the site under cloud ({method} mask), over the {max_cloud:g}% limit"
        cube.record_skipped(scene, reason, cloud_fraction=round(frac, 4), cloud_mask=method,
                            max_cloud=max_cloud, day=day.isoformat())
        return SceneOutcome(scene.id, when, "skipped", reason, round(frac, 4), method, day.isoformat())
    extra = {"day": day.isoformat(), "cloud_fraction": round(frac, 4), "cloud_mask": method,
             "resolution_m": grid.resolution,
             "catalogue_cloud_cover": None if math.isnan(scene.cloud_cover) else scene.cloud_cover}
    stored = cube.append(scene, data, extra=extra)
    status = "stored" if stored else ("already" if cube.has(scene.id) else "duplicate")
    reason = "" if stored else ("" if status == "already" else "identical pixels are already stored under another id")
    return SceneOutcome(scene.id, when, status, reason, round(frac, 4), method, day.isoformat())


__all__ = ["DEFAULT_MAX_CLOUD", "MAX_FAILURES_IN_A_ROW", "FetchReport", "FetchStopped", "SceneOutcome", "fetch",
           "site_mask", "unusable_sources_error"]
