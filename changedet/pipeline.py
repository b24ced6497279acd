"""The daily slice for one AOI: acquire, co-register, store, detect change, count, record, alert.

The imagery comes from the AOI's first source entry usable here (:func:`choose_source`):
the simulator, Sentinel Hub, a STAC catalogue or a folder of local files.

``run_day`` is the unit of work the CLI, the demo and the Prefect flows all call; it is
idempotent (a scene already in the cube is not processed twice, a finding already in the
outbox is not re-opened), so re-running a day or a whole range is safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import numbers
import os
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import shapely
import xarray as xr

from changedet import __version__
from changedet.alerts.outbox import Outbox
from changedet.bands import find_bands
from changedet.baselines import evaluate, lifecycle_params
from changedet.coreg import apply_shift, coregister, provenance_fields
from changedet.cube import Cube, clear_mask, is_url, optical_bands, select_bands
from changedet.errors import (ChangedetError, CoregError, CubeError, SceneUnreadable, SourceConfigError, SourceError,
                              SourceUnavailable)
from changedet.grid import GridSpec, aoi_grid
from changedet.io import atomic_write, write_geotiff
from changedet.change import changed_area_m2
from changedet.kernels import baseline_zscore
from changedet.kernels.threshold import change_mask
from changedet.metrics import SITE, MetricStore, to_utc
from changedet.nanstats import quiet_nanmean
from changedet.objects.containers import count_containers
from changedet.objects.railcars import count_railcars
from changedet.objects.ships import count_ships
from changedet.objects.vessels import no_sea_reason
from changedet.sources.base import CLOUD_BAND
from changedet.sources.simulator import SimulatorSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Settings of a run (everything that changes results goes into the config hash).

    Attributes
    ----------
    data_dir : Path
        Cubes, metric store, outbox and products live here.
    seed : int
        Simulator seed.
    baseline_dates : int
        Earlier acquisitions used for the per-pixel change baseline.
    min_observed : float
        Share of a feature that must be cloud-free for a count to be recorded; a count
        over half-hidden tracks would look like a drop in activity.
    change_z : float
        Change magnitude (RMS of band z-scores) above which a pixel changed.
    change_res_m : float
        Pixel size of the change cube: VHR is averaged to this before the per-pixel
        baseline (vehicles and stacks stay visible; the work drops by the square).
    coreg_window_px : int
        Side (pixels) of the window around the site used to estimate the global shift.
        A site grid smaller than this is registered, for entries that
        :func:`reads_registration_window` accepts (local, STAC and Sentinel Hub entries unless they
        say ``registration_window: false``), on a window of this side read around the site
        (same pixel size and lattice; the shift is then applied to the site grid), else on
        the site grid alone. A shift the reliability gate refuses on that window leaves the
        day ``not_registered`` (its note says so); it is not tried again on the site grid.
    metrics_url : str, optional
        Metric store: a SQLite path or URL, or ``postgresql://...``. Default:
        ``$CHANGEDET_METRICS_URL``, else ``<data_dir>/metrics.sqlite``.
    evidence : bool
        Write an evidence pack (``<data_dir>/evidence/<alert_id>/``) when an alert
        opens or escalates.
    store_url : str, optional
        Where cubes and products (change maps, detections) go: a local path or an fsspec
        URL such as ``s3://bucket/prefix``. Default: ``$CHANGEDET_STORE_URL``, else
        ``data_dir``. Credentials come from the environment (``AWS_ACCESS_KEY_ID``...,
        ``AWS_ENDPOINT_URL`` for S3-compatible servers) and are never stored. The metric
        store, the outbox and evidence packs stay under ``data_dir`` (SQLite and the
        senders need a file system).
    """

    data_dir: Path
    seed: int = 0
    registry: Path | None = None
    baseline_dates: int = 6
    min_observed: float = 0.95
    change_z: float = 6.0
    mad_floor: float = 0.01
    change_res_m: float = 2.0
    cloud_buffer_m: float = 30.0
    coreg_window_px: int = 768
    write_products: bool = True
    metrics_url: str | None = None
    evidence: bool = True
    store_url: str | None = None

    def hash(self, aoi) -> str:
        """Hash of the configuration and the AOI definition: provenance of every metric."""
        doc = self.settings()
        h = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode())
        for p in (aoi.source_path, aoi.source_path.with_suffix(".geojson") if aoi.source_path else None):
            if p is not None and Path(p).exists():
                h.update(Path(p).read_bytes())
        return h.hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        """The settings that change results (what :meth:`hash` covers), as JSON."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("data_dir", "registry", "write_products", "metrics_url", "evidence", "store_url")}

    def store_location(self) -> str | Path:
        """Where the metric store is (see ``metrics_url``)."""
        return self.metrics_url or os.environ.get("CHANGEDET_METRICS_URL") or Path(self.data_dir) / "metrics.sqlite"

    def store_root(self) -> str | Path:
        """Where cubes and products are (see ``store_url``): a local path or an fsspec URL."""
        url = self.store_url or os.environ.get("CHANGEDET_STORE_URL")
        if not url:
            return Path(self.data_dir)
        if is_url(url):
            import fsspec

            protocol, rest = url.split("://", 1)
            if "@" in rest.split("/", 1)[0]:
                # s3fs and friends take no credentials from the URL: "s3://key:secret@bucket"
                # failed deep in botocore with a traceback that printed the secret.
                host = rest.split("/", 1)[0].rsplit("@", 1)[1]
                raise CubeError(f"store URL {protocol}://***@{host}/... carries credentials; give "
                                f"{protocol}://{host}/prefix and put them in the environment (AWS_ACCESS_KEY_ID, "
                                "AWS_SECRET_ACCESS_KEY for s3://)")
            try:
                fsspec.get_filesystem_class(protocol)
            except (ImportError, ValueError) as exc:
                # The URL itself is not secret; the exception text may name the missing package.
                raise CubeError(f"store URL scheme {protocol}:// cannot be used here ({exc}); install its "
                                "fsspec backend (s3fs for s3://) or set CHANGEDET_STORE_URL to a local path") from None
            return url.rstrip("/")
        return Path(url[len("file://"):] if url.startswith("file://") else url)


@dataclass
class DayResult:
    """What happened for one AOI on one day (printed by the CLI, returned by flows)."""

    aoi_id: str
    day: date
    #: processed | no_scene | cloudy | already_processed | not_registered | no_data (the scene
    #: holds no pixel over the site) | no_reference (no registration reference yet for a source
    #: without a basemap; nothing stored, a run of the day once one exists processes it) |
    #: failed (the source could not search or load for a reason that may pass, the source
    #: entry is wrong (a ``bands:`` list that fits no file, a request or collection id the
    #: provider rejects), or the series needs a person: another source than the one it was
    #: made from, a reference deleted under stored scenes; ``note`` says why and what to do;
    #: nothing stored) | unreadable (the scene itself cannot be read, as its source says
    #: with :class:`~changedet.errors.SceneUnreadable`: a corrupt file, no pixels for the
    #: acquisition; recorded as skipped in the cube with the reason, the AOI's later days go on).
    status: str
    scene_id: str | None = None
    sensor: str | None = None
    #: Source entry the day ran on (``simulator``, ``sentinelhub``, ``stac``, ``local``).
    source: str | None = None
    #: Which entry was used and why entries listed before it were passed over.
    source_note: str = ""
    shift_px: tuple[float, float] | None = None
    reliability: float | None = None
    cloud_fraction: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    #: Alerts whose evidence pack, missing from an earlier run of this day, was rebuilt
    #: (no new notification: not alerts of this run).
    rebuilt: list[str] = field(default_factory=list)
    #: Set when the day ``failed`` on a configuration error of the source entry
    #: (:class:`~changedet.errors.SourceConfigError`), which every later day of the entry
    #: meets alike: ``{"aoi_id", "file" (the AOI file or None), "entry" (e.g. ``local (vhr,
    #: 0.5 m)``), "option" (the setting to fix, e.g. ``bands``, or None)}``. Callers stop
    #: the AOI's range there instead of failing each later day (and do not retry it).
    misconfigured: dict[str, str | None] | None = None

    def config_problem(self) -> str:
        """``"AOI x (aois/x.yaml), source entry local (vhr, 0.5 m), setting 'bands'"``; "" if none."""
        m = self.misconfigured
        if not m:
            return ""
        return (f"AOI {m['aoi_id']}" + (f" ({m['file']})" if m.get("file") else "")
                + (f", source entry {m['entry']}" if m.get("entry") else "")
                + (f", setting '{m['option']}'" if m.get("option") else ""))

    def summary(self) -> str:
        head = f"{self.aoi_id} {self.day}"
        if self.source_note and (self.source != "simulator" or "passed over" in self.source_note):
            # The simulator's lines stay as they were; any other source says itself.
            head += f" [{self.source_note}]"
        if self.status != "processed":
            return f"{head}: {self.status}{(' (' + self.note + ')') if self.note else ''}"
        if self.note:
            head += f" ({self.note})"
        parts = [f"{k}={_fmt(v)}" for k, v in self.metrics.items() if "_" not in k or k in
                 ("containers_teu", "changed_area_m2")]
        if self.shift_px is not None:
            parts.append(f"shift=({self.shift_px[0]:+.2f},{self.shift_px[1]:+.2f})px")
        parts += [f"{k}: {v}" for k, v in self.skipped.items()]
        text = f"{head}: " + " ".join(parts)
        for a in self.alerts:
            text += f"\n    ALERT {a['action']}: {a['message']}"
        for alert_id in self.rebuilt:
            text += f"\n    evidence pack of alert {alert_id} rebuilt (no new notification)"
        return text


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


#: Site cloud fraction (0..1, over observed pixels) at most which an acquisition of a source
#: without a basemap becomes the AOI's registration reference. Every later date is shifted
#: onto it, so cloud in it would be structure that moves with the weather: at 5 % a
#: railyard or quay keeps nearly all its edges, and a clear VHR or Sentinel-2 scene turns
#: up within a few weeks at most sites (the co-registration masks the cloudy pixels anyway).
REFERENCE_MAX_CLOUD = 0.05
#: Share of the site (0..1) a scene must observe (pixels with data in every band) to become
#: the registration reference, and a ``reference: FILE`` must cover after reprojection. A
#: swath-edge scene seeing 8 % of the site judged "0 % cloud" would otherwise become the
#: frame every later full scene fails to overlap (``not_registered`` for good).
REFERENCE_MIN_OBSERVED = 0.95
#: Pauses (s) before each new try of an AOI-day that failed in a way that passes (another run
#: holding the cube's lock, or storing the series' first day meanwhile: ``CubeLocked``,
#: ``CubeRaced``): the flows' task retries and ``changedet run`` use the same policy.
RETRY_DELAYS_S: tuple[float, ...] = (5.0, 30.0)
#: Site cloud limit (percent) of a simulator entry without ``max_cloud``: the limit the
#: daily slice has always applied to it (fraction of the site not clear after the cloud
#: buffer), kept so the shipped AOIs behave as before.
SIMULATOR_MAX_CLOUD = 90.0


@dataclass(frozen=True)
class SourceChoice:
    """The source the daily slice of an AOI runs on, and why the ones listed before it were not.

    Attributes
    ----------
    source : object
        The source instance (``search`` and ``load``).
    spec : changedet.aoi.SourceSpec
        Its entry in the AOI file (sensor, resolution in metres, options).
    passed_over : tuple of str
        One line per higher-priority entry that cannot be used here, with the reason
        (never a secret: the reasons name environment variables, paths and packages).
    """

    source: Any
    spec: Any
    passed_over: tuple[str, ...] = ()

    def note(self) -> str:
        """``"local (vhr, 0.5 m)"``, plus the entries passed over and why."""
        text = _entry(self.spec)
        if self.passed_over:
            text += "; passed over: " + "; ".join(self.passed_over)
        return text


def _entry(spec) -> str:
    return f"{spec.name} ({spec.sensor}, {spec.resolution_m:g} m)"


def _unusable(spec) -> str | None:
    """Why the AOI source entry ``spec`` cannot be used on this machine now, or None.

    Decided without network calls: Sentinel Hub needs credentials in the environment or a
    sentinelhub profile (as :meth:`SHSettings.from_env` reads them), a local source needs
    image files at its path, STAC and Sentinel Hub need their packages installed. Whether
    a catalogue answers is learnt by searching it (a failure then is the day's ``failed``).
    """
    from changedet.sources.base import source_class

    if spec.name == "simulator":
        return None
    try:
        source_class(spec.name)
    except SourceError as exc:
        return str(exc)
    if spec.name == "sentinelhub":
        from changedet.sources.sentinelhub import SHSettings

        try:
            SHSettings.from_env(profile=spec.options.get("profile"))
        except SourceError as exc:
            return str(exc)
    elif spec.name == "local":
        path = spec.options.get("path")
        if not path:
            return "no 'path' given; add path: /folder/of/images (or a glob such as /data/vhr/*.tif) to the entry"
        from changedet.sources.local import LocalSource

        p = Path(str(path)).expanduser()
        if not any(ch in str(path) for ch in "*?[") and not p.exists():
            return f"folder {str(path)!r} does not exist; create it or fix the entry's 'path'"
        if not LocalSource(path=str(path)).files():
            return f"no GeoTIFF/COG/JPEG2000 files at {str(path)!r}; put the images there or fix the entry's 'path'"
    return None


def _build(spec, seed: int, registry: Path | None, data_dir: Path | str | None):
    """The source instance of an AOI entry that :func:`_unusable` accepted."""
    from changedet.sources.base import source_from_spec

    if spec.name == "simulator":
        return SimulatorSource(seed=seed, registry=registry)
    overrides: dict[str, Any] = {}
    if spec.name == "sentinelhub" and "cache_dir" not in spec.options and data_dir is not None \
            and not is_url(data_dir):
        from changedet.sources.sh_cache import default_cache_dir

        # As `changedet fetch` does: replies are cached next to the data they fed, not in
        # a ./changedet-data of whatever directory the worker started in.
        overrides["cache_dir"] = str(default_cache_dir(data_dir))
    return source_from_spec(spec, **overrides)


def choose_source(aoi, seed: int = 0, registry: Path | None = None,
                  data_dir: Path | str | None = None) -> SourceChoice:
    """The source the daily slice of ``aoi`` runs on: its first source entry usable here.

    Entries are tried in the AOI file's priority order; one that cannot be used here
    (Sentinel Hub without credentials, a local folder that does not exist or holds no
    images, a source whose package is not installed) is passed over with its reason, see
    :func:`_unusable`. The simulator is always usable, so the shipped AOIs (simulator
    first) run on it as before. The choice does not depend on the day: a day without a
    scene from the chosen source is ``no_scene``, never filled from another sensor
    (counts from 0.5 m VHR and 10 m estimates in one metric series would fire false alerts).

    Parameters
    ----------
    aoi : changedet.aoi.AOI
    seed : int
        Simulator seed.
    registry : Path, optional
        AOI registry (for the simulator's scenarios).
    data_dir : path, optional
        Data directory; Sentinel Hub replies are cached under ``<data_dir>/cache/sentinelhub``.

    Raises
    ------
    SourceError
        No entry is usable: each is named with its reason and the fix.
    """
    passed = []
    for spec in aoi.sources:
        reason = _unusable(spec)
        if reason is None:
            return SourceChoice(_build(spec, seed, registry, data_dir), spec, tuple(passed))
        passed.append(f"{_entry(spec)}: {reason}")
    listed = "; ".join(passed) or "none listed"
    raise SourceError(
        f"{aoi.id}: none of its imagery sources can be used here ({listed}); fix one of them, or add "
        "'{name: simulator, sensor: vhr, resolution_m: 0.5}' to its sources to run it on simulated scenes")


def primary_source(aoi, seed: int, registry: Path | None, data_dir: Path | str | None = None):
    """The source the daily slice runs on, with its spec (see :func:`choose_source`)."""
    choice = choose_source(aoi, seed, registry, data_dir)
    return choice.source, choice.spec


def scene_day(aoi, spec, when) -> date:
    """The day whose run processes an acquisition of ``spec``'s source stamped ``when``.

    The AOI's local calendar day (``aoi.timezone``, DST days 23 or 25 h): the served daily
    runs process local days, and a site at UTC+12 takes its ~10:30-local pass on the UTC day
    before. Each instant has exactly one local date, so every acquisition belongs to one day
    of the daily runs and backfills alike (they key the store by scene id).

    Two exceptions keep a date its own day: a time of exactly 00:00:00 UTC is a date without
    a time of day (a file named or tagged with the date only, which the local source reads
    as midnight UTC), whose local date west of UTC would be the evening before the named
    date; and the simulator's scenes, rendered for a day and stamped with a nominal 01:30
    UTC, stay on the day they were rendered for (their ids, weather and truth are that day's;
    for the shipped AOIs, UTC+3..+10, the two rules agree).

    Parameters
    ----------
    aoi : changedet.aoi.AOI
    spec : changedet.aoi.SourceSpec
        The source entry (its ``name`` tells the simulator).
    when : datetime, str or numpy.datetime64
        The acquisition time (naive values are UTC), as a scene record or cube stores it.

    Returns
    -------
    date
        The day (at the site) whose :func:`search_day` returns the acquisition.
    """
    from zoneinfo import ZoneInfo

    t = to_utc(when)
    if spec.name == "simulator" or (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0):
        return t.date()
    return t.astimezone(ZoneInfo(aoi.timezone)).date()


def stored_day(aoi, spec, entry: dict) -> date:
    """The day whose run stored (or skipped) the cube entry ``entry``.

    The ``day`` the run recorded with it; an entry written before runs recorded it gets
    :func:`scene_day` of its time (the rule of the local-day search; the UTC date that runs
    before it used is the same day for the simulator, date-only files and every
    acquisition whose local and UTC dates agree).

    Parameters
    ----------
    aoi : changedet.aoi.AOI
    spec : changedet.aoi.SourceSpec or None
        The entry's source (None: read from the entry's ``source``, which only tells the
        simulator apart, all :func:`scene_day` asks).
    entry : dict
        A scene or skipped record of :meth:`changedet.cube.Cube.scenes` or ``info()``.

    Returns
    -------
    date
    """
    recorded = entry.get("day")
    if recorded:
        try:
            return date.fromisoformat(str(recorded))
        except ValueError:
            pass  # (hand-edited: the rule below is the run's)
    if spec is None:
        from types import SimpleNamespace

        spec = SimpleNamespace(name=str(entry.get("source") or ""))
    return scene_day(aoi, spec, entry["time"])


def _utc_days(aoi, day: date) -> tuple[date, date]:
    """First and last UTC day that the local day ``day`` of ``aoi`` overlaps (a superset).

    Local midnight is mapped with both folds (a DST change at midnight makes it missing or
    repeated): the span covers every instant whose local date is ``day``, and always the UTC
    day ``day`` itself (where a date-only stamp lies, see :func:`scene_day`).
    """
    from datetime import time, timezone
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(aoi.timezone)

    def utc(d: date, fold: int) -> datetime:
        return datetime.combine(d, time.min, tzinfo=tz).replace(fold=fold).astimezone(timezone.utc)

    first = min(utc(day, f) for f in (0, 1)).date()
    last = (max(utc(day + timedelta(days=1), f) for f in (0, 1)) - timedelta(microseconds=1)).date()
    return min(first, day), max(last, day)


def search_day(source, spec, aoi, day: date) -> list:
    """The acquisitions of ``aoi`` by ``source`` on its local day ``day``, in time order.

    Sources search whole UTC days: the UTC days the local day overlaps (one for a site on
    UTC, two elsewhere) are searched and the acquisitions :func:`scene_day` gives to ``day``
    kept, so each belongs to exactly one day. Searching more than the local day also keeps
    a pass that crosses UTC midnight whole (the STAC and Sentinel Hub sources group the
    granules of a pass into one record, and the id depends on the group). The simulator
    renders any day and is searched on the UTC day ``day`` as before (see :func:`scene_day`).

    No catalogue cloud filter: the day is judged on the site's own pixels (as
    :func:`changedet.acquire.fetch` does; a tile 80 % cloud may be clear over the site).
    """
    if isinstance(day, datetime):
        day = day.date()   # (a datetime never equals the date of scene_day)
    kwargs: dict[str, Any] = {"sensor": spec.sensor}
    if spec.name == "simulator":
        # Only the simulator renders at any resolution; the others deliver what they have.
        kwargs["resolution_m"] = float(spec.resolution_m)
        return sorted(source.search(aoi, day, day, **kwargs), key=lambda s: s.time)
    kwargs["max_cloud"] = 100.0
    if getattr(source, "pattern", None):
        # The name gives the time: files of other local days are not read, so a broken one
        # fails only its own day (and one of this day fails it, whatever its UTC date).
        kwargs["keep_time"] = lambda t: scene_day(aoi, spec, t) == day
    first, last = _utc_days(aoi, day)
    try:
        found = source.search(aoi, first, last, **kwargs)
    except SceneUnreadable:
        if first == last or "keep_time" in kwargs:
            raise
        found = _search_each_utc_day(source, spec, aoi, day, first, last, kwargs)
    return sorted((s for s in found if scene_day(aoi, spec, s.time) == day), key=lambda s: s.time)


def _search_each_utc_day(source, spec, aoi, day: date, first: date, last: date, kwargs: dict) -> list:
    """:func:`search_day`'s search again, one UTC day at a time, after a broken file failed it.

    A source fails the search of the UTC date a broken file's name gives
    (:class:`~changedet.errors.SceneUnreadable`: an interrupted copy must not pass for "no
    acquisition"); without a ``pattern`` the file's time is in its unreadable header, so it
    may be any day's whose search covers that date. The UTC day ``day`` fails the day as it
    always did; a neighbouring UTC day, searched only for the hours of ``day`` it holds,
    fails it only when ``day`` has no acquisition of its own (the broken file may be its
    only pass, taken the UTC day before east of UTC: recording ``no_scene`` would lose it
    once the file is repaired). (A failure that may pass,
    :class:`~changedet.errors.SourceUnavailable`, fails the day as it is: a later run
    searches again.)
    """
    found, broken = [], None
    u = first
    while u <= last:
        try:
            found += source.search(aoi, u, u, **kwargs)
        except SceneUnreadable as exc:
            if u == day:
                raise
            broken = exc
        u += timedelta(days=1)
    if broken is not None:
        if not any(scene_day(aoi, spec, s.time) == day for s in found):
            raise broken
        log.warning("%s %s: the search of the UTC day next to it failed (%s); the day's own acquisitions are "
                    "processed", aoi.id, day, broken)
    return found


def find_scene(aoi, day: date, cfg: "RunConfig"):
    """The acquisition :func:`run_day` would process for ``aoi`` on ``day``, or None."""
    choice = choose_source(aoi, cfg.seed, cfg.registry, cfg.data_dir)
    scenes = search_day(choice.source, choice.spec, aoi, day)
    return scenes[0] if scenes else None


def _unobserved_reason(metric: str, res, image, *, valid=None, water=None, berths=None) -> str:
    """Why a count too little observed to record was skipped (the day's ``skipped`` entry).

    Cloud is the usual reason. A vessel search on a medium-resolution image that found no
    sea over clear water reads as wholly unobserved too (no water body big enough, or none
    drawn as the site's water: :func:`changedet.objects.vessels.no_sea_reason`); blaming a
    cloud that is not there would send the analyst to the wrong fix. A search that saw
    part of the water was stopped by cloud, so only a count that saw nothing is asked.
    """
    why = (no_sea_reason(image, valid=valid, water=water, berths=berths)
           if metric == "ships" and res.observed_fraction <= 0.0 else None)
    return why or f"only {res.observed_fraction:.0%} of features cloud-free"


def run_day(aoi, day: date, cfg: RunConfig) -> DayResult:
    """Process the acquisition of ``aoi`` on ``day`` (if there is one).

    The day runs on the AOI's first usable source (:func:`choose_source`). For sources
    other than the simulator the scene is taken from the ``acquired`` cube when
    ``changedet fetch`` stored it there, else loaded; it is cloud-masked and judged over
    the site as ``changedet fetch`` does (:func:`_judge`: ``no_data``, ``cloudy``), and
    registered onto the cube's reference, made from the entry's ``reference`` image or
    the first acquisition at most :data:`REFERENCE_MAX_CLOUD` cloudy that observes
    :data:`REFERENCE_MIN_OBSERVED` of the site (``no_reference`` until then; the reference
    is saved once its day is stored; a run stopped between the two gets it rebuilt,
    :func:`_rebuilt_reference`). A site grid smaller than ``cfg.coreg_window_px`` of a
    local, STAC or Sentinel Hub source (:func:`reads_registration_window`) is registered
    on a window of that side around the site
    (:func:`_registration_window`; the shift is applied to the site grid); a shift the
    gate refuses there makes the day ``not_registered`` with "(on the registration
    window, RxC px)" in its note and skipped record, without a second try on the site
    grid (only a window with too little data for any estimate falls back). A scene the
    source cannot search or load makes the day ``failed`` with the reason, nothing
    stored, unless the source says the scene itself is broken
    (:class:`~changedet.errors.SceneUnreadable`: a corrupt file, no pixels):
    ``unreadable``, recorded as skipped in the cube (:func:`_load_failed`). The series is
    pinned to the source its cubes were made from: another source (the simulator
    included) is ``failed``, nothing stored. The simulator keeps its basemap reference and
    its historical 90 % limit on the buffered cloud fraction.

    A configuration error of the entry (:class:`~changedet.errors.SourceConfigError` from
    the source's search or load: a ``bands:`` list that fits no file, a request or
    collection id the provider rejects) is ``failed`` with ``result.misconfigured`` naming
    the AOI file, the entry and the setting: every later day of the entry fails alike, so
    callers stop the AOI there. A stored day the change cube lacks (a run stopped between
    a series' first day's two appends) is put back first (:func:`_heal_change_cube`).

    Raises
    ------
    SourceError
        No source of the AOI can be used here.
    SourceConfigError
        A setting of the source entry run_day reads itself is wrong: a ``max_cloud`` that
        is no percentage (option ``max_cloud``), a ``reference`` file that is missing,
        unreadable or covers too little of the site (option ``reference``); or one the
        source rejects when it is made (a local ``bands:`` list naming a band twice, an
        option the source does not take), for a new AOI and a stored series alike.
    changedet.alerts.config.AlertConfigError
        Before any work, if the AOI's alert rules or the delivery settings in the
        environment are wrong (all problems listed).
    """
    from changedet.sources.local import clear_decoded_cache

    try:
        return _run_day(aoi, day, cfg)
    finally:
        # The local source keeps a decoded file for the day's second read (the registration
        # window); a worker holding it after the day would keep up to its 512 MiB (review REG 2).
        # Only this thread's: days running on other threads of the worker keep theirs.
        clear_decoded_cache(this_thread=True)


def _run_day(aoi, day: date, cfg: RunConfig) -> DayResult:
    """The body of :func:`run_day`."""
    from changedet.alerts.config import check_alerting

    _refuse_future(aoi, day)
    check_alerting([aoi])
    root = cfg.store_root()
    made_from = _series_sources(root, aoi.id)
    try:
        choice = choose_source(aoi, cfg.seed, cfg.registry, cfg.data_dir)
    except SourceConfigError:
        # A setting the source itself rejects (a band named twice, an unknown option): every
        # day fails alike, whether or not a series exists; not an outage of the source.
        raise
    except SourceError as exc:
        if not made_from:
            raise
        # The series exists: its source being unusable here today (a share not mounted,
        # credentials gone) is an outage of that source, not a configuration error.
        return DayResult(aoi.id, day, "failed", note=f"{exc}; the stored series of {aoi.id} was made from "
                         f"{_names(made_from)}: restore its path or credentials and run this day again")
    source, spec = choice.source, choice.spec
    if made_from and not all(_same_entry(spec, made) for made in made_from):
        # One series, one source entry: another sensor's (or the simulator's) pixels, or another
        # folder or collection of the same source type, registered onto this reference and
        # counted into the same metric series would read as real change.
        return DayResult(aoi.id, day, "failed", sensor=spec.sensor, source=spec.name, source_note=choice.note(),
                         note=(f"the stored series of {aoi.id} was made from {_names(made_from)} "
                               f"({', '.join(sorted(set(made_from.values())))}), but the source usable here now "
                               f"is {_entry_id(spec)}; sources are not mixed in one series, nothing stored: restore "
                               f"{_names(made_from)} (its path or credentials, see the passed-over reasons) and run "
                               f"this day again, or run {spec.name} with a new data dir (--data-dir)"))
    simulated = spec.name == "simulator"
    res = float(spec.resolution_m)
    grid = aoi_grid(aoi, res)
    optical = spec.sensor != "s1"
    # (Simulator cubes keep the settings they were created with.)
    cube = Cube(root, aoi.id, spec.sensor, grid) if simulated else Cube(root, aoi.id, spec.sensor, grid,
                                                                        reflectance=optical)
    result = DayResult(aoi.id, day, "no_scene", sensor=spec.sensor, source=spec.name, source_note=choice.note())
    try:
        scenes = search_day(source, spec, aoi, day)
    except SourceError as exc:
        if simulated:
            raise  # the simulator's errors are configuration errors, as they always were
        # A catalogue that is down or refuses the credentials: the day is not lost, a
        # later run of it searches again (nothing was stored).
        result.status, result.note = "failed", f"search failed: {exc}"
        if isinstance(exc, SourceConfigError):
            result.note += "; " + _config_failure(aoi, spec, exc, result)
        return result
    if not scenes:
        return result
    scene = scenes[0]
    result.scene_id = scene.id
    now = _now_utc()
    if to_utc(scene.time) > now:
        # A run of today (at the site) can find a scene stamped later today: it has not been
        # taken yet (the simulator renders any day, at a nominal 01:30 UTC). Nothing is
        # stored; a later run of the day gets it.
        result.status = "no_scene"
        result.note = (f"scene {scene.id} is stamped {to_utc(scene.time).isoformat()}, after now "
                       f"({now.isoformat(timespec='seconds')}): not acquired yet, run this day again later")
        return result
    # Pixel change runs on a coarser cube of its own (see below); a stored day it lacks (a run
    # stopped between the aligned and the change-cube append of a series' first day) is put
    # back before this day is judged done or reads its baseline.
    factor = max(1, int(round(cfg.change_res_m / res)))
    cgrid = aoi_grid(aoi, res * factor)
    coarse_cube = Cube(root, aoi.id, spec.sensor, cgrid, reflectance=optical)
    healed = _heal_change_cube(cube, coarse_cube, factor, res, day_of=lambda e: stored_day(aoi, spec, e))
    if healed:
        result.note = _joined(result.note, f"the change cube lacked stored day(s) {', '.join(healed)} (a run "
                              "stopped between its two appends): coarsened from the stored aligned step(s)")
    if cube.has(scene.id) and not (cfg.evidence and _packs_pending(cfg, aoi, scene.time)):
        result.status = "already_processed"
        return result
    # (A stored day whose evidence pack an earlier run could not write is processed again
    # to rebuild the pack: every write below is idempotent for a stored scene.)
    site = aoi.to_crs(aoi.polygon, grid.crs)
    site_mask = _rasterize(site, grid)
    if simulated:
        reference = _reference(cube, source, aoi, spec.sensor, res)
    try:
        data = _acquired(root, aoi, spec, grid, scene) if not simulated else None
        if data is None:
            data = source.load(scene, grid, aoi=aoi)
    except SourceError as exc:
        if simulated:
            raise
        _load_failed(cube, spec, scene, exc, result, aoi=aoi)
        return result
    delivered = data  # as the source gave it: what the evidence pack hashes
    new_reference, origin = None, None
    if not simulated:
        data, observed_cloud = _judge(data, scene, spec, site_mask, result)
        if data is None:
            return _rejected(cube, spec, scene, result)
        reference, origin = cube.reference(), None
        if reference is None:
            # A run that stopped between storing the reference day and saving its reference.
            reference = _rebuilt_reference(cube, spec, optical_bands(data), site_mask, result)
        if reference is None:
            cres = res * max(1, int(round(cfg.change_res_m / res)))
            made = _new_reference(cube, data, observed_cloud, spec, scene, site_mask, result, cres)
            if made is None:
                return _rejected(cube, spec, scene, result)
            reference, origin = new_reference = made
        else:
            origin = _reference_origin(cube)
            _check_reference_entry(spec, origin, cube, result)
    clear = clear_mask(data) if optical else data.notnull().all("band")
    if optical:
        clear = _buffered(clear, cfg.cloud_buffer_m, res)
    if simulated:
        cloud_fraction = 1.0 - float(clear.values[site_mask].mean())
        result.cloud_fraction = round(cloud_fraction, 4)
        limit = _max_cloud(spec, SIMULATOR_MAX_CLOUD, aoi.id) / 100.0
        if cloud_fraction > limit:
            result.status, result.note = "cloudy", f"{cloud_fraction:.0%} of the site under cloud"
            return result
    else:
        cloud_fraction = observed_cloud

    # Co-register onto the AOI reference; the cloud mask moves with the pixels.
    bands = optical_bands(data)
    # A small site gives the estimate too few pixels (NAIP at 5 m: a 500 m site left all 9
    # later dates not registered): where the source can read the ground around the site,
    # the shift is estimated on a registration window of the same lattice and applied here.
    wide, window_note = None, None
    if not simulated and reads_registration_window(spec):
        reg_grid = _registration_grid(grid, cfg.coreg_window_px, site)
        if reg_grid is not None:
            try:
                wide, window_note = _registration_window(
                    cube, source, spec, aoi, scene, site, grid, reg_grid, optical_bands(reference), origin,
                    made_here=new_reference is not None, optical=optical, site_data=data, cfg=cfg)
            except SourceUnavailable as exc:
                # A passing outage of the window read (a 5xx, 429, a dropped connection) is the
                # day's, as on the site load: failed, retried, not a site-grid fallback.
                _load_failed(cube, spec, scene, exc, result, aoi=aoi)
                result.note = (result.note or "") + " (on the registration window)"
                return result
    window = {"on": "site grid", "rows": grid.shape[0], "cols": grid.shape[1]}
    reg = None
    if wide is not None:
        try:
            reg = _coregister_window(*wide, site, window=cfg.coreg_window_px)
            wgrid = GridSpec.of(wide[1])
            window = {"on": "registration window", "rows": wgrid.shape[0], "cols": wgrid.shape[1],
                      "bounds": [round(v, 3) for v in wgrid.bounds]}
        except CoregError as exc:
            # No estimate at all there (a window mostly off the files: under 10 % valid), which
            # is no verdict on the shift: the site grid is tried as before.
            log.info("%s %s: not registered on the registration window (%s); the site grid is used", aoi.id, day, exc)
            window_note = None
    try:
        if reg is None:
            reg = _coregister_window(optical_bands(reference), bands, clear, site, window=cfg.coreg_window_px)
    except CoregError as exc:
        # Too little clear overlap to register: the scene cannot be trusted pixel-wise.
        result.status, result.note = "not_registered", str(exc)
        return result if simulated else _rejected(cube, spec, scene, result)
    if not reg.applied:
        # Counting on tracks and zones that may sit metres off would be worse than no count.
        result.status = "not_registered"
        result.note = f"registration unreliable: {reg.reason or f'reliability {reg.reliability:.2f}'}"
        if window["on"] == "registration window":
            # Refused on the wider window is final (no second try on the site grid, which
            # would give the gate two chances); say so, as the skipped record keeps the note.
            result.note += f" (on the registration window, {window['rows']}x{window['cols']} px)"
        result.reliability = round(reg.reliability, 3)
        return result if simulated else _rejected(cube, spec, scene, result)
    aligned = apply_shift(bands, reg.shift_row_px, reg.shift_col_px)
    # Pixels near a cloud edge after resampling count as cloudy (NaN compares False).
    moved = apply_shift(clear.astype("float32"), reg.shift_row_px, reg.shift_col_px, order=1) > 0.99
    clear_al = xr.DataArray(np.asarray(moved.values, bool) & np.asarray(aligned.notnull().all("band").values),
                            dims=("y", "x"), coords={"y": aligned.y, "x": aligned.x})
    result.shift_px = (round(reg.shift_row_px, 3), round(reg.shift_col_px, 3))
    result.reliability = round(reg.reliability, 3)
    stored = aligned
    if optical:
        mask_band = (~clear_al).astype("float32").expand_dims(band=[CLOUD_BAND])
        stored = xr.concat([aligned, mask_band.assign_coords(spatial_ref=aligned.spatial_ref)], dim="band")
    provenance = {"scene_id": scene.id, "source": spec.name, "code_version": __version__, "config_hash": cfg.hash(aoi),
                  "coreg": {"shift_row_px": reg.shift_row_px, "shift_col_px": reg.shift_col_px,
                            "reliability": reg.reliability, "applied": reg.applied}}
    if not simulated:
        # Which pixels the shift was estimated on (the site grid, or the wider window and its bounds).
        provenance["coreg"]["window"] = window
    if window_note:
        result.note = _joined(result.note, window_note)
    if data.attrs.get("reused"):
        provenance["pixels_from"] = f"{data.attrs['reused']} cube"  # as `changedet fetch` stored them

    metrics: list[dict[str, Any]] = []
    products = _Products(root, aoi.id, day)
    # What an evidence pack needs if a rule fires on this day.
    ev: dict[str, Any] = {"scene": scene, "day": day, "sensor": spec.sensor, "after": aligned, "cube": cube,
                          "site": site,
                          # Similarity before/after says how well the shift explains the scene;
                          # the residual is set in local mode only (tie points against the warp).
                          "registration": {**provenance["coreg"], **provenance_fields(reg)},
                          "cloud_fraction": cloud_fraction, "config": cfg.settings(),
                          "config_hash": provenance["config_hash"], "detections": [], "threshold": cfg.change_z,
                          "scene_data": delivered}

    # Pixel change against the robust per-pixel baseline of earlier aligned dates, on a
    # coarser cube of its own (cheap to read back for every new date).
    coarse = _coarsen(stored, factor, cgrid)
    history = coarse_cube.read(before=scene.time, last=cfg.baseline_dates)
    if history is not None and history.sizes["time"] >= 3:
        value_bands = [str(b) for b in aligned["band"].values]
        history = history.load()  # one read of the stored chunks, values and cloud band together
        # The cube may spell the bands otherwise (b02 vs B02): it accepts either case.
        hist = select_bands(history, value_bands)
        if optical:
            hist = hist.where(history.sel(band=CLOUD_BAND) < 0.5)
        new = coarse.sel(band=value_bands)
        if optical:
            new = new.where(coarse.sel(band=CLOUD_BAND) < 0.5)
        mag = _change_magnitude(hist, new, mad_floor=cfg.mad_floor)
        csite = _rasterize(site, cgrid)
        mag = mag.where(xr.DataArray(csite, dims=("y", "x"), coords={"y": mag.y, "x": mag.x}))
        min_px = max(2, int(round(10.0 / (cgrid.resolution ** 2))))
        mask = change_mask(mag.fillna(0.0), threshold=cfg.change_z, min_area_px=min_px)
        area = changed_area_m2(mask)
        metrics.append({"metric": "changed_area_m2", "value": round(float(area), 1)})
        ev["magnitude"], ev["mask"] = mag, mask
        if cfg.write_products:
            with products.local("change_magnitude.tif") as path:
                write_geotiff(mag.expand_dims(band=["change_magnitude"]), path)
    else:
        result.skipped["changed_area_m2"] = "baseline needs 3 earlier dates"

    # Object counts on the AOI's features.
    sun = {k: scene.properties.get(k) for k in ("sun_azimuth_deg", "sun_elevation_deg")}
    counts = []

    def count(metric: str, func, *args, **kwargs) -> None:
        # A counter that cannot work on this image (too coarse, features off the
        # scene) skips its metric with the reason; the other metrics still count.
        try:
            counts.append((metric, func(*args, **kwargs)))
        except ChangedetError as exc:
            result.skipped[metric] = str(exc)

    if "railcars" in aoi.metrics and aoi.features_by_role("track") and optical:
        tracks = {f.id: aoi.to_crs(f.geometry, grid.crs) for f in aoi.features_by_role("track")}
        count("railcars", count_railcars, aligned, tracks, valid=clear_al, **sun)
    if "containers_teu" in aoi.metrics and aoi.features_by_role("stack_zone") and optical:
        zones = {f.id: aoi.to_crs(f.geometry, grid.crs) for f in aoi.features_by_role("stack_zone")}
        count("containers_teu", count_containers, aligned, zones, valid=clear_al, **sun)
    if "ships" in aoi.metrics and optical:
        berths = {f.id: aoi.to_crs(f.geometry, grid.crs) for f in aoi.features_by_role("berth")}
        water = [aoi.to_crs(f.geometry, grid.crs) for f in aoi.features_by_role("water")]
        ship_water = shapely.union_all(water) if water else None
        count("ships", count_ships, aligned, berths, water=ship_water, valid=clear_al)
    for metric, res_ in counts:
        if res_.extras.get("caveat"):
            # An estimate its own counter calls unvalidated (railcars on 3-12 m optical
            # imagery read about 0 on an independent generator) would enter the series the
            # baselines and alert rules read: a gap, with the reason, not a false low.
            result.skipped[metric] = str(res_.extras["caveat"])
            continue
        if res_.observed_fraction < cfg.min_observed:
            result.skipped[metric] = _unobserved_reason(
                metric, res_, aligned, valid=clear_al,
                **({"water": ship_water, "berths": berths} if metric == "ships" else {}))
            continue
        metrics.append({"metric": metric, "value": float(res_.total)})
        if metric == "railcars":
            for t, n in res_.by_type.items():
                metrics.append({"metric": f"railcars_{t}", "value": float(n)})
        for pf in res_.per_feature:
            # The site may be seen enough while one feature is half under cloud: its count
            # covers only what was seen (nothing is extrapolated under the cloud; a
            # container zone counts the cloud's thin edge, which the mask passes as clear,
            # by interpolation from the stacks around it, while ``observed_fraction``
            # stays the share actually read), so recorded it would read as a drop in that
            # track's or zone's series.
            seen = pf.get("observed_fraction")
            # Under a cloud's shadow a zone is seen but not measured like one in the sun
            # (fewer boxes found, heights borrowed): a series keeps to zones in the sun.
            if seen is not None:
                seen = float(seen) - float(pf.get("cloud_shadow_fraction", 0.0))
            if seen is not None and float(seen) < cfg.min_observed:
                where = "cloud-free and out of cloud shadow" if pf.get("cloud_shadow_fraction") else "cloud-free"
                result.skipped[f"{metric}[{pf['id']}]"] = f"only {float(seen):.0%} of {pf['id']} {where}"
                continue
            metrics.append({"metric": metric, "value": float(pf["count"]), "feature_id": pf["id"]})
        if cfg.write_products and res_.detections:
            with products.local(f"{metric}.geojson") as path:
                _write_detections(res_, path)
        ev["detections"] += [{"metric": metric, **d} for d in res_.to_json()["detections"]]

    store = MetricStore(cfg.store_location())
    try:
        store.record_many([{"aoi_id": aoi.id, "time": scene.time, "provenance": provenance,
                            "feature_id": m.get("feature_id", SITE), **{k: m[k] for k in ("metric", "value")}}
                           for m in metrics])
        result.metrics = {m["metric"]: m["value"] for m in metrics if "feature_id" not in m}
        # The full-resolution cube marks the day done (``cube.has`` above), so it is
        # written last, after the alert rules: a run that fails or is interrupted before
        # it leaves the day to be redone by the next run (metrics are upserts, appends of
        # a stored scene and replayed findings change nothing) instead of skipping it as
        # done with its alert never evaluated. The coarse cube is read only for dates
        # strictly before the one processed, so appending it first cannot feed a day's
        # own pixels into its baseline.
        coarse_extra = {"coarsened_from_m": res, **({} if simulated else {"entry": _entry_id(spec)})}
        if factor > 1 and new_reference is None:
            coarse_cube.append(scene, coarse, extra=coarse_extra)
        # (At factor 1, a source at 2 m or coarser, the change cube is the aligned cube's own
        # store: appended there first it marked the day done before the rules ran, and the
        # append below, a no-op then, lost the day's registration and cloud record.)
        result.alerts = _evaluate_rules(aoi, scene.time, store, Path(cfg.data_dir) / "outbox",
                                        {m["metric"] for m in metrics},
                                        evidence=(Path(cfg.data_dir) / "evidence", ev) if cfg.evidence else None,
                                        skipped=result.skipped, rebuilt=result.rebuilt, spec=spec)
        result.status = "processed"
        # Stored even when an evidence pack failed (the outbox records the pending pack,
        # and a run of this day rebuilds it): the day's pixels are what the report and
        # every later pack's "before" image need.
        # The reasons counts were skipped ride with the scene, so the report can say why an
        # image has no count (cloud, too coarse, ...) rather than guess.
        # The day of the run (the products folder and what `changedet run --date` must be
        # given to find the scene again): recorded, not re-derived, so the report and every
        # date a person may rerun from follow the rule this run used (see stored_day).
        extra = {"day": day.isoformat(), "coreg": provenance["coreg"], "cloud_fraction": cloud_fraction,
                 "skipped": {k: v for k, v in result.skipped.items() if k != "evidence"}}
        if not simulated:
            extra["reference_from"] = origin
            # The entry, not only its type, pins the series (see _series_sources).
            extra["entry"] = _entry_id(spec)
        if new_reference is not None:
            # Saved under this scene's pending name before its day is stored and promoted only
            # once it is the cube's first stored scene: a day that ended otherwise (not
            # registered, a crash before the append) leaves no reference that no stored scene
            # was registered with, a crash after the append leaves the exact reference for the
            # next run to promote (_rebuilt_reference), and a second run of a new AOI that also
            # found no reference neither promotes this file nor stores its day (append first=).
            cube.set_reference(new_reference[0], pending=scene.id)
        # (At factor 1 through the change cube's handle: the store was always created by it.)
        try:
            (cube if factor > 1 else coarse_cube).append(scene, stored, extra=extra,
                                                          first=new_reference is not None)
        except CubeError:  # refused before storing anything (first=, bands, lock): its reference is no one's
            if new_reference is not None:
                with contextlib.suppress(Exception):  # the append's error is the one to report
                    cube.discard_pending_reference(scene.id)
            raise
        if factor > 1 and new_reference is not None:
            # A series' first day goes into the change cube only once the aligned cube took
            # it: a run that lost the race for the first day (append first= refused above)
            # must leave no step in the change cube registered onto its own reference, which
            # a run of the day again would not replace (an append of a stored id is a no-op).
            # A failure between the two (a store error, a crash) leaves this date out of the
            # change cube, never a date in another frame; the next run of any day of the AOI
            # puts it back from the stored aligned step (_heal_change_cube).
            coarse_cube.append(scene, coarse, extra=coarse_extra)
        if new_reference is not None:
            if cube.promote_reference(scene.id):
                result.note = _joined(result.note, f"{new_reference[1]} became the registration reference")
            elif cube.reference() is not None and _reference_origin(cube) == new_reference[1]:
                # Another run promoted it meanwhile (_rebuilt_reference of this same scene's file).
                result.note = _joined(result.note, f"{new_reference[1]} became the registration reference")
            else:
                log.warning("%s: the reference made from %s was stored with its day but could not be put in "
                            "place (%s)", aoi.id, scene.id, cube.reference_path)
                result.note = _joined(result.note, f"the reference made from {new_reference[1]} could not be put "
                                      f"in place ({cube.reference_path}); the next run restores it")
        if origin is not None and origin.startswith("scene "):
            # Limit, said on every such day: the frame is an acquisition, not an orthophoto.
            result.note = _joined(result.note, f"counts carry the geolocation error of reference {origin[6:]} "
                                  "(not orthorectified; see 'reference: FILE')")
    finally:
        store.close()
    return result


def _heal_change_cube(cube: Cube, coarse_cube: Cube, factor: int, res: float, *,
                      day_of: Callable[[dict], date] | None = None) -> list[str]:
    """Append to the change cube every day the aligned cube holds and it lacks; their days.

    The days are those of the runs that stored them (``day_of`` of the aligned entry, e.g.
    :func:`stored_day`; the acquisition's UTC date without it).

    ``run_day`` stores a series' first day in the aligned cube first and in the change cube
    (``coarse_cube``, ``factor`` times coarser) second, so that a run that lost the race for
    the first day leaves nothing in either. A failure between the two appends (a store
    error, a crash) leaves the day stored, so every later run finds it done, and the change
    history without it. Such a day is coarsened here from its stored aligned step (values
    and ``CLM`` band as stored: reflectance quantised to the cube's 1e-4 steps, which the
    block mean of ``factor``² pixels averages further) and appended with the aligned entry's
    identity (scene id, time, source, file path, entry). Nothing is done at factor 1 (one
    cube) or when nothing is missing: the cost is reading the two provenance records.

    Raises
    ------
    CubeError
        The stored step cannot be read or the change cube not written (a store error);
        the day is then not done and a later run tries again.
    """
    if factor == 1:
        return []
    held = cube.scenes()
    if not held:
        return []
    have = {e["scene_id"] for e in coarse_cube.scenes()}
    missing = [e for e in held if e["scene_id"] not in have]
    if not missing:
        return []
    from changedet.sources.base import SceneRecord

    stack = cube.read()
    if stack is None:
        return []
    ids = [str(v) for v in stack["scene_id"].values]
    done = []
    for entry in missing:
        step = stack.isel(time=ids.index(entry["scene_id"])).load()
        step = step.drop_vars([c for c in ("time", "scene_id") if c in step.coords]).astype("float32")
        when = datetime.fromisoformat(str(entry["time"]))
        cover = entry.get("cloud_cover")
        record = SceneRecord(
            id=str(entry["scene_id"]), source=str(entry.get("source") or ""), aoi_id=cube.aoi_id,
            sensor=cube.sensor, time=when, platform=str(entry.get("platform") or ""),
            cloud_cover=float("nan") if cover is None else float(cover),
            footprint=shapely.Polygon(),  # (not stored: the cube keeps no footprint)
            resolution_m=float(res), properties={"path": entry["path"]} if entry.get("path") else {})
        extra = {"coarsened_from_m": res, "healed_from": "the stored aligned step",
                 **({"entry": entry["entry"]} if entry.get("entry") else {}),
                 **({"day": entry["day"]} if entry.get("day") else {})}
        coarse_cube.append(record, _coarsen(step, factor, coarse_cube.grid), extra=extra)
        log.warning("%s: scene %s was stored in %s but missing from the change cube %s (a run stopped between "
                    "the two appends); coarsened from the stored aligned step and appended", cube.aoi_id,
                    entry["scene_id"], cube.path, coarse_cube.path)
        done.append((day_of(entry) if day_of is not None else when.date()).isoformat())
    return done


def _rejected(cube: Cube, spec, scene, result: DayResult) -> DayResult:
    """``result``, its scene (of a real source) recorded as skipped with the day's status and reason.

    So ``changedet cube info`` and the report can say why a judged scene is not stored
    (``cloudy``, ``no_data``, ``no_reference``, ``not_registered``); a later run that
    stores it drops the record (``Cube.append``). ``failed`` days are not recorded: the
    series needs a person, not this scene. A record that cannot be written only warns.
    """
    if result.status == "failed":
        return result
    try:
        # With the entry: a record without a file path is superseded by a stored scene of the
        # same entry and time (Cube.append), never by another entry's.
        cube.record_skipped(scene, f"{result.status}: {result.note}", permanent=False, status=result.status,
                            cloud_fraction=result.cloud_fraction, entry=_entry_id(spec),
                            day=result.day.isoformat())
    except CubeError as exc:
        log.warning("%s %s: the %s scene %s was not recorded as skipped (%s)", result.aoi_id, result.day,
                    result.status, scene.id, exc)
    return result


def _acquired(root, aoi, spec, grid, scene) -> xr.DataArray | None:
    """``scene`` as ``changedet fetch`` stored it in the AOI's ``acquired`` cube, or None.

    Reused instead of downloading it again when that cube (same sensor and grid) holds
    the scene id; its ``CLM`` band is the mask fetch made. A cube that cannot be read is
    not fatal: the scene is loaded from the source instead.
    """
    from changedet.acquire import ACQUIRED

    try:
        acq = Cube(root, aoi.id, spec.sensor, grid, reflectance=spec.sensor != "s1", product=ACQUIRED)
        if not acq.has(scene.id):
            return None
        stack = acq.read()
        ids = [str(v) for v in stack["scene_id"].values]
        da = stack.isel(time=ids.index(scene.id)).load()
    except (CubeError, ValueError, OSError) as exc:
        log.warning("%s: scene %s not read from the acquired cube (%s); loading it from %s",
                    aoi.id, scene.id, exc, spec.name)
        return None
    da = da.drop_vars([c for c in ("time", "scene_id") if c in da.coords]).astype("float32")
    da.attrs = {"scene_id": scene.id, "sensor": scene.sensor, "platform": scene.platform, "reused": ACQUIRED}
    return da


def _max_cloud(spec, default: float, aoi_id: str) -> float:
    """The entry's ``max_cloud`` (percent of the site under cloud), else ``default``."""
    limit = spec.options.get("max_cloud", default)
    if isinstance(limit, bool) or not isinstance(limit, numbers.Real) or not 0.0 <= float(limit) <= 100.0:
        raise SourceConfigError(f"{aoi_id}: max_cloud {limit!r} of the {spec.name} source must be a percentage "
                                "between 0 and 100 (e.g. max_cloud: 40); fix the source entry in the AOI file",
                                option="max_cloud")
    return float(limit)


def _judge(data: xr.DataArray, scene, spec, site_mask: np.ndarray, result: DayResult):
    """Cloud-mask a scene of a real source and judge it over the site, as ``changedet fetch`` does.

    Returns ``(data with its CLM band, site cloud fraction 0..1)``, or ``(None, None)`` with
    ``result`` set to ``no_data`` (no pixel over the site) or ``cloudy`` (over the entry's
    ``max_cloud``, default :data:`changedet.acquire.DEFAULT_MAX_CLOUD`, or all cloud).
    """
    from changedet.acquire import DEFAULT_MAX_CLOUD, site_cloud

    limit = _max_cloud(spec, DEFAULT_MAX_CLOUD, result.aoi_id)
    # The provider's CLM or SCL, else s2cloudless, else the brightness test (cloudmask), as fetch judges.
    data, method, frac = site_cloud(data, scene, site_mask, optical=spec.sensor != "s1",
                                    cloud_method=str(spec.options.get("cloud_mask", "auto")))
    if frac is None:
        result.status = "no_data"
        result.note = f"scene {scene.id} has no data over the site (outside its footprint or all no-data)"
        return None, None
    result.cloud_fraction = round(frac, 4)
    if frac >= 1.0 or frac * 100.0 > float(limit):
        result.status = "cloudy"
        result.note = (f"all cloud over the site ({method} mask)" if frac >= 1.0 else
                       f"{frac:.0%} of the site under cloud ({method} mask), over the {float(limit):g}% limit")
        if method == "brightness":
            # Its reflectance thresholds read bright fields and 8-bit stretched DN as cloud.
            result.note += ("; if this imagery is cloud-free by make (aerial, orthophoto), set cloud_mask: none "
                            "in the source entry")
        return None, None
    return data, frac


def _series_sources(root, aoi_id: str) -> dict[str, str]:
    """Source entries of the scenes already in the AOI's pipeline cubes under ``root``: {entry: cube file}.

    The entry is the scene's recorded ``entry`` identity (:func:`_entry_id`), or only its
    source type for scenes stored before entries were recorded (and the simulator's).
    Every pipeline cube of the AOI counts (all sensors and resolutions, not the
    ``*_acquired`` cubes of ``changedet fetch``): they feed one metric series. Empty for a
    new data dir, or a store that cannot be listed (then nothing is pinned, as before).
    """
    import re

    pattern = re.compile(r"[a-z0-9]+_[0-9.]+m\.provenance\.json")
    try:
        if is_url(root):
            import fsspec

            fs, base = fsspec.core.url_to_fs(f"{str(root).rstrip('/')}/cubes/{aoi_id}")
            files = [(f, lambda f=f: fs.cat_file(f)) for f in fs.glob(f"{base}/*.provenance.json")]
        else:
            files = [(str(f), f.read_bytes) for f in sorted((Path(root) / "cubes" / aoi_id).glob("*.provenance.json"))]
        found: dict[str, str] = {}
        for name, read in files:
            if not pattern.fullmatch(name.rsplit("/", 1)[-1]):
                continue
            for entry in json.loads(read()).get("scenes", []):
                key = entry.get("entry") or entry.get("source")
                if key:
                    found.setdefault(str(key), name.rsplit("/", 1)[-1].replace(".provenance.json", ""))
        return found
    except Exception as exc:  # noqa: BLE001  (a store that cannot be listed: s3fs, botocore... errors)
        # The cube itself will say what is wrong with the store when the day opens it.
        log.warning("%s: the sources of its stored cubes could not be read (%s: %s); the source is not pinned",
                    aoi_id, type(exc).__name__, exc)
        return {}


def _names(made_from: dict[str, str]) -> str:
    return " and ".join(sorted(made_from))


#: Entry options that say where a source's scenes come from (a folder, a collection, a catalogue).
_WHERE_OPTIONS = ("path", "collection", "byoc_id", "url", "catalog", "catalog_url")


def _entry_id(spec) -> str:
    """Identity of an AOI source entry, ``"local vhr 0.5m path=/mnt/a"``: what one series is made from.

    Name, sensor, resolution (m) and where its scenes come from (:data:`_WHERE_OPTIONS`,
    as written in the AOI file): two entries of one source type, such as two local
    folders, are two sources.
    """
    parts = [spec.name, spec.sensor, f"{float(spec.resolution_m):g}m"]
    parts += [f"{key}={spec.options[key]}" for key in _WHERE_OPTIONS if spec.options.get(key)]
    return " ".join(parts)


def _same_entry(spec, made: str) -> bool:
    """Whether the stored series key ``made`` (:func:`_series_sources`) is the entry ``spec``.

    A key without an identity (a bare source type: scenes stored before identities were
    recorded, the simulator's) is compared by type only.
    """
    return made == _entry_id(spec) if " " in made else made == spec.name


def _config_failure(aoi, spec, exc: SourceConfigError, result: DayResult) -> str:
    """Record on ``result`` (``misconfigured``) that its day failed on a configuration error of
    ``spec``; returns the note's text naming the AOI file, the entry and the setting to fix."""
    path = getattr(aoi, "source_path", None) if aoi is not None else None
    result.misconfigured = {"aoi_id": result.aoi_id, "file": str(path) if path else None, "entry": _entry(spec),
                            "option": exc.option}
    return (f"a configuration error of the {_entry(spec)} entry" + (f" of {path}" if path else "")
            + (f", its '{exc.option}' setting" if exc.option else "")
            + " (every day of it fails alike): fix it and run the days again")


def _load_failed(cube: Cube, spec, scene, exc: SourceError, result: DayResult, aoi=None) -> None:
    """Set ``result`` for a scene of a real source that could not be loaded, by the error's type.

    The source says whose the failure is (:mod:`changedet.errors`):
    :class:`SceneUnreadable` (the scene's, for good: a corrupt file, no pixels for the
    acquisition) is ``unreadable``, recorded as skipped (``permanent``) so a backfill
    goes on with the AOI's later days; :class:`SourceConfigError` (the entry's: a
    ``bands:`` list that fits no file, a request or collection id the provider rejects)
    is ``failed`` naming the entry, nothing recorded, since every day of the entry fails
    alike until it is fixed (``result.misconfigured`` says so; ``aoi`` gives the AOI file
    its note names); anything else (:class:`SourceUnavailable`, or an untyped
    :class:`SourceError`) may pass: ``failed``, nothing stored, a later run tries again.
    """
    if isinstance(exc, SceneUnreadable):
        # A retry reads the same broken bytes: recorded as skipped (as `changedet fetch`
        # does) and the day ends, so a backfill goes on with the AOI's later days.
        # (With the file's path: a replaced file, a new scene id, supersedes the record once stored.)
        path = scene.properties.get("path")
        cube.record_skipped(scene, f"cannot be loaded ({exc.reason}): {exc}", permanent=True,
                            entry=_entry_id(spec), day=result.day.isoformat(),
                            **({"path": str(path)} if path else {}))
        result.status = "unreadable"
        result.note = (f"scene {scene.id} cannot be loaded ({exc.reason}): {exc}; recorded as skipped in "
                       f"{cube.provenance_path}; replace or fix the scene and run this day again")
        return
    result.status = "failed"
    if isinstance(exc, SourceConfigError):
        result.note = f"scene {scene.id} could not be loaded: {exc}; " + _config_failure(aoi, spec, exc, result)
        return
    # Nothing is stored or recorded: a later run of the day tries the scene again.
    result.note = f"scene {scene.id} could not be loaded: {exc}"
    if isinstance(exc, SourceUnavailable):
        result.note += "; it may pass: run this day again later"


def _joined(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def _observed_share(data: xr.DataArray, site_mask: np.ndarray) -> float:
    """Share (0..1) of the site's pixels with data in every image band."""
    n = int(site_mask.sum())
    if n == 0:
        return 0.0
    valid = np.isfinite(np.asarray(optical_bands(data).values)).all(axis=0)
    return float((valid & site_mask).sum()) / n


def _new_reference(cube: Cube, data: xr.DataArray, frac: float, spec, scene, site_mask: np.ndarray,
                   result: DayResult, coarse_res: float) -> tuple[xr.DataArray, str] | None:
    """The registration reference of a source without a basemap, made on first need: ``(image, origin)``.

    The entry's ``reference`` file when it names one (it must cover
    :data:`REFERENCE_MIN_OBSERVED` of the site), else this acquisition if it observes at
    least :data:`REFERENCE_MIN_OBSERVED` of the site and at most
    :data:`REFERENCE_MAX_CLOUD` of it is cloud (cloud and no-data pixels NaN, so
    co-registration ignores them; this day then registers with zero shift). The caller
    stores it (``Cube.set_reference``) only once this day is stored. With neither,
    ``result`` becomes ``no_reference`` and None is returned: nothing is stored, so running
    the day again once a reference exists processes it. A cube that already holds scenes
    gets no new reference (they are aligned to the one that was deleted): ``failed``.

    Raises
    ------
    SourceError
        The ``reference`` file is missing, unreadable, has other bands or covers too little of the site.
    """
    held = cube.scenes()
    if held:
        stem = Path(str(cube.path)).name.replace(".zarr", "")
        coarse = f"{cube.sensor}_{coarse_res:g}m"
        files = f"{stem}.zarr, {stem}.provenance.json, {stem}.registration.tif" + (
            f", {coarse}.zarr and {coarse}.provenance.json" if coarse != stem else "")
        result.status = "failed"
        # (Joined: _rebuilt_reference may have said why the reference could not be rebuilt.)
        result.note = _joined(result.note, (
            f"the cube {cube.path} holds {len(held)} scene(s) but its registration reference "
            f"{cube.reference_path} is gone; a new reference would put every later day in another "
            f"frame than the stored ones: restore that file, or delete {files} in "
            f"{Path(str(cube.path)).parent} and run the whole range again"))
        return None
    bands = optical_bands(data)
    if spec.options.get("reference"):
        path = spec.options["reference"]
        return _reference_file(path, spec, cube.grid, bands, site_mask), _file_origin(path)
    observed = _observed_share(data, site_mask)
    why = None
    if frac > REFERENCE_MAX_CLOUD:
        why = f"is {frac:.0%} cloud over the site (a reference needs at most {REFERENCE_MAX_CLOUD:.0%})"
    elif observed < REFERENCE_MIN_OBSERVED:
        why = (f"observes only {observed:.0%} of the site (a reference needs at least "
               f"{REFERENCE_MIN_OBSERVED:.0%}; a swath or tile edge)")
    if why is not None:
        result.status = "no_reference"
        result.note = (f"no registration reference yet for {cube.sensor} at {cube.grid.resolution:g} m, and scene "
                       f"{scene.id} {why}; nothing stored: run this day again once a clear acquisition "
                       "has been processed (it becomes the reference), or name a reference image with "
                       "'reference: FILE' in the source entry")
        return None
    valid = clear_mask(data) if CLOUD_BAND in [str(b) for b in data["band"].values] else bands.notnull().all("band")
    return bands.where(valid), f"scene {scene.id}"


#: Largest shift (pixels) of a stored reference day that still counts as stored unshifted.
#: The day registers onto itself: the estimate is 0 up to the estimator's rounding.
REBUILD_MAX_SHIFT_PX = 1e-3


def _rebuilt_reference(cube: Cube, spec, like: xr.DataArray, site_mask: np.ndarray,
                       result: DayResult) -> xr.DataArray | None:
    """The registration reference restored after a run stopped between storing its day and saving it.

    ``run_day`` writes a new reference under its scene's pending name, stores the reference
    day's scene, then promotes that file (``Cube.promote_reference``). A crash after the
    append leaves stored scenes, no reference and the pending file: the file of the first
    stored scene is promoted, the exact reference (a pending file of another scene, a run
    that stored nothing, never is). Cubes written before that order (the reference saved after the
    append) hold no pending file; their reference is rebuilt when every stored scene
    names the same origin (``reference_from``) and that is (a) ``scene X`` with ``X`` the
    first scene stored, registered with a zero shift (it was registered onto itself, so
    its stored pixels are the reference's, on the cube grid, quantised to the cube's
    1e-4 reflectance steps): its optical bands, NaN only where they are NaN (the stored
    cloud band is buffered by up to 30 m, and masking by it could leave a day of scattered
    small clouds with no pixel; the day had at most :data:`REFERENCE_MAX_CLOUD` cloud, and
    co-registration masks the moving image by its own clear mask), accepted only if it
    observes :data:`REFERENCE_MIN_OBSERVED` of the site as a new reference must; or (b)
    ``file P`` with ``P`` the entry's ``reference``, that file read again. The reference is
    saved at once and the day's note says so. Otherwise None, with the reason in
    ``result.note`` when there is one: the caller fails the day (:func:`_new_reference`),
    as a reference rebuilt from anything else would put later days in another frame. A
    reference file that is gone or unreadable is such a reason, never raised.
    """
    held = cube.scenes()
    if not held:
        return None
    first = min(held, key=lambda e: int(e.get("index", 0)))
    origin = first.get("reference_from")
    if not origin or any(e.get("reference_from") != origin for e in held):
        return None
    # Only the file written for the first stored scene (set_reference pending=): the run
    # that made it may have stopped after its append; a file of another scene is another frame.
    if cube.promote_reference(str(first["scene_id"])):
        log.warning("%s: registration reference %s was pending under %d stored scene(s) (a run stopped after "
                    "storing its day); promoted", cube.aoi_id, cube.reference_path, len(held))
        result.note = _joined(result.note, f"the registration reference of {origin}, left pending by an "
                              "interrupted run, was put in place")
        return cube.reference()
    if origin == f"scene {first['scene_id']}":
        shift = first.get("coreg") or {}
        try:
            moved = max(abs(float(shift["shift_row_px"])), abs(float(shift["shift_col_px"])))
        except (KeyError, TypeError, ValueError):
            return None
        if not moved <= REBUILD_MAX_SHIFT_PX:
            return None  # its stored pixels were moved: they are not the reference's
        stack = cube.read()
        if stack is None:
            return None
        ids = [str(v) for v in stack["scene_id"].values]
        stored = stack.isel(time=ids.index(first["scene_id"])).load()
        stored = stored.drop_vars([c for c in ("time", "scene_id") if c in stored.coords])
        reference = optical_bands(stored).astype("float32")
        observed = _observed_share(reference, site_mask)
        if observed < REFERENCE_MIN_OBSERVED:
            result.note = _joined(result.note, (
                f"the stored reference day {first['scene_id']} observes only {observed:.0%} of the site, under "
                f"the {REFERENCE_MIN_OBSERVED:.0%} a reference needs, so the lost reference is not rebuilt "
                "from it"))
            return None
    elif spec.options.get("reference") and origin == _file_origin(spec.options["reference"]):
        try:
            reference = _reference_file(spec.options["reference"], spec, cube.grid, like, site_mask)
        except SourceError as exc:
            log.warning("%s: the lost registration reference cannot be read again from the entry's file: %s",
                        cube.aoi_id, exc)
            result.note = _joined(result.note, f"the lost reference cannot be rebuilt: {exc}")
            return None
    else:
        return None
    cube.set_reference(reference)
    log.warning("%s: registration reference %s was missing under %d stored scene(s) (a run stopped after storing "
                "its day); rebuilt from %s", cube.aoi_id, cube.reference_path, len(held), origin)
    result.note = _joined(result.note, f"the registration reference, missing after an interrupted run, was "
                          f"rebuilt from {origin}")
    return cube.reference()


def _file_origin(path) -> str:
    return f"file {Path(str(path)).expanduser()}"


def _reference_origin(cube: Cube) -> str | None:
    """What the cube's stored reference was made from (``file ...``/``scene ...``), as its scenes record it."""
    for entry in reversed(cube.scenes()):
        if entry.get("reference_from"):
            return str(entry["reference_from"])
    return None


def _check_reference_entry(spec, origin: str | None, cube: Cube, result: DayResult) -> None:
    """Say (warning and day note) when the entry's ``reference`` is not the stored reference."""
    wanted = spec.options.get("reference")
    if not wanted or origin is None or origin == _file_origin(wanted):
        return
    text = (f"the entry's reference {str(wanted)!r} is not used: the cube keeps the reference it was made with "
            f"({origin}); to change it delete the AOI's {cube.sensor} cubes (with their reference.tif and "
            f"registration.tif files) and run the whole range again")
    log.warning("%s: %s", cube.aoi_id, text)
    result.note = _joined(result.note, text)


def _reference_file(path, spec, grid: GridSpec, like: xr.DataArray, site_mask: np.ndarray) -> xr.DataArray:
    """An AOI-named reference image on ``grid``, its bands named as the scenes' ``like``.

    Only its geometry matters (co-registration matches gradients, whatever the gain and
    offset), so its values are not scaled to reflectance. It must have data over
    :data:`REFERENCE_MIN_OBSERVED` of the site (``site_mask``) after reprojection.

    Raises
    ------
    SourceUnavailable
        The file's folder is not there or not readable (a share not mounted), or reading
        the file met an error of the file system (EIO, a timeout, permissions): it may
        pass, as for the scenes on that share (the flows retry it).
    SourceConfigError
        (option ``reference``) The folder is there but holds no such file, or the file
        reads but does not fit: not a raster GDAL decodes, other bands, no cover of the
        site, a CRS that cannot be put on the grid.
    """
    from changedet.errors import GridError, RasterError
    from changedet.io import read_raster, reproject_to
    from changedet.sources.local import _read_failure

    p = Path(str(path)).expanduser()
    fix = "fix the entry's 'reference' (a GeoTIFF over the site with the scenes' bands) or remove it"

    def _bad_reference(message: str) -> SourceConfigError:
        return SourceConfigError(message, option="reference")

    if not p.is_file():
        folder = p.parent
        if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
            # Same verdict as the local source's for its scenes: a share not mounted now
            # is not a wrong entry.
            raise SourceUnavailable(
                f"registration reference {str(path)!r} of the {spec.name} source: its folder {folder} is not there "
                "or not readable (a share not mounted?); it may pass: run the day again once it is mounted, or "
                f"{fix}")
        what = "is not a file" if p.exists() else f"does not exist (its folder {folder} does)"
        raise _bad_reference(f"registration reference {str(path)!r} of the {spec.name} source {what}; {fix}")
    try:
        da = read_raster(p)
    except (RasterError, OSError) as exc:
        # The local source's judge: an error of the file system (errno, GDAL's file-I/O
        # class, a read-through failing) may pass; bytes that read but GDAL cannot
        # decode are the file's own.
        err = _read_failure(p, exc, f"registration reference of the {spec.name} source: {exc}")
        if isinstance(err, SourceUnavailable):
            raise err from err.__cause__
        raise _bad_reference(f"registration reference: {exc}; {fix}") from None
    names = [str(b) for b in da["band"].values if str(b).upper() not in ("CLM", "SCL")]
    want = [str(b) for b in like["band"].values]
    if len(names) != len(want):
        raise _bad_reference(f"registration reference {str(path)!r} has {len(names)} image bands, the {spec.name} "
                             f"scenes {len(want)} ({', '.join(want)}); {fix}")
    da = da.sel(band=names).assign_coords(band=want)
    try:
        out = reproject_to(da, grid)
    except GridError:
        raise _bad_reference(f"registration reference {str(path)!r} does not cover the AOI grid; {fix}") from None
    cover = _observed_share(out, site_mask)
    if cover < REFERENCE_MIN_OBSERVED:
        raise _bad_reference(f"registration reference {str(path)!r} covers only {cover:.0%} of the site "
                             f"after reprojection (it needs at least "
                             f"{REFERENCE_MIN_OBSERVED:.0%}: every later day is registered onto it); {fix}")
    return out


def _packs_pending(cfg: RunConfig, aoi, t: datetime) -> bool:
    """Whether the outbox under ``cfg.data_dir`` records a pack of ``aoi`` at ``t`` not written."""
    outbox_dir = Path(cfg.data_dir) / "outbox"
    if not (outbox_dir / "outbox.sqlite").exists():
        return False
    with Outbox(outbox_dir) as outbox:
        return bool(outbox.pending_packs(aoi.id, t))


def _now_utc() -> datetime:
    """The wall clock in UTC (one place, so tests can freeze it)."""
    from datetime import timezone

    return datetime.now(timezone.utc)


def today_at(aoi) -> date:
    """Today's date in the AOI's timezone (a site at UTC+9 starts its day nine hours before UTC)."""
    from zoneinfo import ZoneInfo

    return _now_utc().astimezone(ZoneInfo(aoi.timezone)).date()


def days_up_to_today(aoi, days: list[date]) -> tuple[list[date], date]:
    """``days`` cut at today at the site, and that today (see :func:`today_at`).

    A range that reaches past today is run up to today rather than refused halfway:
    the later days have no imagery yet (callers say how many were cut).
    """
    today = today_at(aoi)
    return [d for d in days if (d.date() if isinstance(d, datetime) else d) <= today], today


def _refuse_future(aoi, day: date) -> None:
    """Refuse a day after today at the site: no imagery of it can exist yet.

    Today is taken in the AOI's timezone (a site at UTC+9 starts its day nine hours
    before UTC). The offline simulator would otherwise render any date, and a run of a
    future day looked like a real observation with nothing to say why.
    """
    from changedet.errors import DateError

    if not isinstance(day, date):
        raise DateError(f"day must be a datetime.date, not {type(day).__name__}; e.g. date(2023, 10, 5)")
    today = today_at(aoi)
    if (day.date() if isinstance(day, datetime) else day) > today:
        raise DateError(f"{day.isoformat()} is in the future at {aoi.id} (today there is {today.isoformat()}); "
                        "no imagery of it can exist yet: give a date up to today")


def _sha(da: xr.DataArray) -> str:
    from changedet.evidence import data_sha256

    return data_sha256(da)


def _evaluate_rules(aoi, t: datetime, store: MetricStore, outbox_dir: Path, fresh: set[str],
                    evidence: tuple[Path, dict] | None = None, skipped: dict[str, str] | None = None,
                    rebuilt: list[str] | None = None, spec=None) -> list[dict]:
    """Feed the observation at ``t`` to the AOI's rules; write the evidence packs due.

    Returns the alerts opened or escalated by this observation. With ``evidence``, every
    pack the outbox records as pending for this observation is written: the packs of
    this run's events (recorded pending with them, in one transaction) and those an
    earlier run of the same day could not write, whatever later days did to the alert.
    A pack that fails stays pending; its reason goes to ``skipped["evidence"]``. The ids
    of rebuilt packs (not new alerts) go to ``rebuilt``. With ``spec`` (the series' source
    entry), the dates of alert messages are the runs' days (:func:`scene_day`), the
    ``--date`` that reproduces each observation; without it, UTC dates.
    """
    day_of = (lambda when: scene_day(aoi, spec, when)) if spec is not None else None
    out = []
    outbox = None
    for rule in aoi.rules:
        if rule.metric not in fresh:
            continue
        life = lifecycle_params(dict(rule.params), rule_id=rule.id)
        params = {k: v for k, v in rule.params.items() if k not in life}
        series = store.series(aoi.id, rule.metric, end=t)
        finding = evaluate(series, rule_id=rule.id, kind=rule.kind, params=params,
                           severity=rule.severity, aoi_id=aoi.id, aoi_name=aoi.name, metric=rule.metric, at=t,
                           day_of=day_of)
        if finding is None or finding.time != series.index[-1]:
            # A quiet observation: an alert of this rule with no finding for quiet_days resolves.
            if outbox is None and (outbox_dir / "outbox.sqlite").exists():
                outbox = Outbox(outbox_dir)
            if outbox is not None:
                outbox.resolve_quiet(aoi_id=aoi.id, rule_id=rule.id, feature_id=SITE, time=t,
                                     quiet_days=life["quiet_days"])
            continue
        outbox = outbox or Outbox(outbox_dir)
        alert, action = outbox.open_or_update(finding, cooldown_days=life["cooldown_days"],
                                              escalate_ratio=life["escalate_ratio"], pack=evidence is not None)
        if action in ("opened", "escalated"):
            out.append({"action": action, "alert_id": alert.id, "rule_id": rule.id, "severity": alert.severity,
                        "message": finding.message, "value": finding.value})
    if evidence is None:
        return out
    if outbox is None and (outbox_dir / "outbox.sqlite").exists():
        outbox = Outbox(outbox_dir)
    if outbox is None:
        return out
    entries = {a["alert_id"]: a for a in out}
    rules = {r.id: r for r in aoi.rules}
    for alert, event in outbox.pending_packs(aoi.id, t):
        entry = entries.get(alert.id)
        try:
            rule = rules.get(alert.rule_id)
            if rule is None:
                raise ChangedetError(f"rule {alert.rule_id!r} of alert {alert.id} is no longer in the AOI file; "
                                     "put it back to rebuild the pack")
            path = _write_evidence(evidence[0], evidence[1], alert, event,
                                   store.series(aoi.id, rule.metric, end=t), rule)
        except (ChangedetError, OSError, ValueError) as exc:
            # The alert is stored and will be delivered; the pack stays pending in the
            # outbox, and running this day again rebuilds it. Say so rather than fail
            # the run (the day's pixels and metrics are good).
            log.error("evidence pack of alert %s could not be written: %s", alert.id, exc)
            outbox.pack_failed(alert.id, t, str(exc))
            if entry is not None:
                entry["evidence_error"] = str(exc)
            if skipped is not None:
                skipped["evidence"] = (f"pack of alert {alert.id} not written ({exc}); "
                                       "run this day again to rebuild it")
            continue
        outbox.pack_written(alert.id, t)
        if entry is not None:
            entry["evidence"] = str(path)
        else:
            log.info("evidence pack of alert %s (%s) rebuilt", alert.id, event)
            if rebuilt is not None:
                rebuilt.append(alert.id)
    return out


def _write_evidence(root: Path, ev: dict, alert, action: str, series, rule) -> Path:
    """Evidence pack of an alert that just opened or escalated (see changedet.evidence)."""
    from changedet.evidence import build_evidence

    scene, cube = ev["scene"], ev["cube"]
    before = before_time = None
    # The scene as the source delivered it (before co-registration): what a re-run must get again.
    scenes = [{"role": "after", "id": scene.id, "time": scene.time, "sha256": _sha(ev["scene_data"])}]
    prev = cube.read(before=scene.time, last=1)
    if prev is not None and prev.sizes.get("time", 0):
        prev = prev.isel(time=-1).load()
        before = select_bands(prev, [str(b) for b in ev["after"]["band"].values])
        before_time = to_utc(prev["time"].values)
        prev_id = str(prev["scene_id"].item()) if "scene_id" in prev.coords else None
        scenes.append({"role": "before", "id": prev_id, "time": before_time, "sha256": _sha(before)})
    ref = cube.reference()
    if ref is not None:
        scenes.append({"role": "registration_reference", "id": f"{alert.aoi_id}-reference", "sha256": _sha(ref)})
    minx, miny, maxx, maxy = ev["site"].bounds
    margin = 0.05 * max(maxx - minx, maxy - miny)
    band = _baseline_band(series, rule)
    return build_evidence(
        root, alert.id, alert=alert.to_dict(), event=action, sensor=ev["sensor"], when=scene.time,
        after=ev["after"], before=before, before_time=before_time, magnitude=ev.get("magnitude"),
        threshold=ev["threshold"], change_mask=ev.get("mask"), detections=ev["detections"], series=series,
        baseline=band, bbox=(minx - margin, miny - margin, maxx + margin, maxy + margin),
        registration=ev["registration"], cloud_fraction=ev["cloud_fraction"], scenes=scenes, config=ev["config"],
        source=getattr(scene, "source", None),
        config_hash=ev["config_hash"], code_version=__version__, rgb=_rgb_bands(ev["after"]), day=ev.get("day"),
    )


def _rgb_bands(da: xr.DataArray) -> list[str] | None:
    found = find_bands([str(b) for b in da["band"].values], ("red", "green", "blue"))
    return None if found is None else list(found)


def _baseline_band(series, rule):
    """Rolling median and +-3 scaled MAD of the window before each point (for the plot)."""
    import pandas as pd

    days = float(dict(rule.params).get("window_days", 90))
    if len(series) < 3:
        return None
    lo, mid, hi = [], [], []
    for i, t in enumerate(series.index):
        past = series.iloc[:i]
        past = past[past.index >= t - pd.Timedelta(days=days)]
        if len(past) < 3:
            lo.append(np.nan), mid.append(np.nan), hi.append(np.nan)
            continue
        med = float(past.median())
        mad = float((past - med).abs().median())
        scale = max(1.4826 * mad, 1.0)
        lo.append(med - 3 * scale), mid.append(med), hi.append(med + 3 * scale)
    return pd.DataFrame({"lo": lo, "mid": mid, "hi": hi}, index=series.index)


def _reference(cube: Cube, source, aoi, sensor: str, res: float) -> xr.DataArray:
    """The AOI's registration reference, created on first use from the source's basemap."""
    ref = cube.reference()
    if ref is not None:
        return ref
    ref_scene = source.reference(aoi, sensor=sensor, resolution_m=res)
    data = source.load(ref_scene, cube.grid, aoi=aoi)
    cube.set_reference(optical_bands(data))
    return cube.reference()


def _coregister_window(reference: xr.DataArray, moving: xr.DataArray, clear: xr.DataArray, site,
                       *, window: int):
    """Global shift estimated on a window around the site centre (AROSICS-style), so the
    cost does not grow with the AOI; the shift is then applied to the whole image."""
    rows, cols = moving.sizes["y"], moving.sizes["x"]
    grid = GridSpec.of(moving)
    r, c = grid.rowcol(site.centroid.x, site.centroid.y)
    h, w = min(window, rows), min(window, cols)
    r0 = int(np.clip(round(float(r)) - h // 2, 0, rows - h))
    c0 = int(np.clip(round(float(c)) - w // 2, 0, cols - w))
    win = {"y": slice(r0, r0 + h), "x": slice(c0, c0 + w)}
    _, reg = coregister(reference.isel(win), moving.isel(win), valid=clear.isel(win))
    return reg


#: Sources whose scenes the daily run reads again on a registration window wider than the
#: site grid when the grid is smaller than ``coreg_window_px``. Every source that can read
#: ground around the site: a local file at the cost of a local read, STAC COGs by a few more
#: range requests, Sentinel Hub by one more Process API request per processed day (a 768 px
#: window of Sentinel-2 L2A, four float32 bands and the cloud band, is 7.5 processing units,
#: 6 for four-band BYOC or Sentinel-1, against 0.07 for the site grid of a 950 x 600 m port
#: at 10 m, 95 x 60 px: about 100 times more), once more when the window reference is made.
#: Without it a site that small at 10 m is refused by the reliability gate day after day (too
#: few pixels for a trustworthy shift), so no count is ever made. Any entry, local ones
#: included, opts out with ``registration_window: false``; the simulator renders the site
#: grid only.
WIDE_REGISTRATION_SOURCES = ("local", "sentinelhub", "stac")


def reads_registration_window(spec) -> bool:
    """Whether the daily run registers the AOI source entry ``spec`` on a registration window.

    The entry's ``registration_window`` option (true or false) decides; without it, whether
    its source is one of :data:`WIDE_REGISTRATION_SOURCES`. Only site grids smaller than
    ``coreg_window_px`` are concerned (:func:`_registration_grid`).
    """
    choice = spec.options.get("registration_window")
    if choice is not None:
        return bool(choice)
    return spec.name in WIDE_REGISTRATION_SOURCES


#: Most a registration window reference newly read from the cube's reference origin may
#: differ from the cube's reference where they overlap to count as the same image: median
#: absolute difference as a fraction of the reference's spread (2nd to 98th percentile),
#: so reflectance, 8-bit and 16-bit files are judged alike. The same file read in another
#: CRS differs by resampling only (NAIP in EPSG:4326: 0.07 DN of a ~200 DN spread, 3e-4);
#: the same image 1 px off differs by ~0.02 and another acquisition by ~0.1.
REGISTRATION_MATCH = 5e-3


def _buffered(clear: xr.DataArray, buffer_m: float, res: float) -> xr.DataArray:
    """``clear`` with every cloud grown by ``buffer_m`` metres (at least 3 pixels of ``res`` m).

    Cloud masks miss thin cloud and haze at cloud edges; a buffer (as Fmask and
    s2cloudless users apply) keeps those pixels out of change, counts and registration.
    """
    from scipy import ndimage

    cloud = ~np.asarray(clear.values, bool)
    grow = max(3, int(round(buffer_m / res)))
    if cloud.any():
        cloud = ndimage.binary_dilation(cloud, structure=np.ones((3, 3), bool), iterations=grow)
    return clear.copy(data=~cloud)


def _registration_grid(grid: GridSpec, window: int, site=None) -> GridSpec | None:
    """The registration window of a site grid smaller than ``window`` pixels on a side: a block on its lattice.

    Same CRS, pixel size and lattice as ``grid`` (integer offset), so a shift (pixels)
    estimated on it applies to ``grid`` unchanged. Along an axis where ``grid`` is
    shorter than ``window`` the block is ``window`` pixels, ``grid`` centred in it; along
    an axis where it is longer the block is the ``window`` pixels of ``grid`` around the
    site's centroid (``site``, in the grid's CRS; the grid's centre if None) that
    :func:`_coregister_window` would cut, so a long thin site reads ``window`` x
    ``window`` pixels, never the whole strip. None when ``grid`` is ``window`` pixels or
    more on both axes (the window is then cut from the grid itself).

    A file in another CRS (geographic, web-mercator) reads the same on this block and on
    ``grid`` within 0.001 px: :func:`changedet.io.reproject_to` transforms every pixel
    centre exactly, with one kernel scale per grid (GDAL's approximate transformer had put
    the two reads up to 0.09 px apart at 10 m).
    """
    from affine import Affine

    window = int(window)
    rows, cols = grid.shape
    if rows >= window and cols >= window:
        return None
    if site is not None:
        r, c = grid.rowcol(site.centroid.x, site.centroid.y)
    else:
        r, c = rows / 2.0, cols / 2.0

    def axis(n: int, centre: float) -> int:
        if n < window:
            return -((window - n) // 2)  # grid centred; the odd pixel goes after it
        return int(np.clip(round(float(centre)) - window // 2, 0, n - window))  # as _coregister_window

    r0, c0 = axis(rows, r), axis(cols, c)
    return GridSpec(grid.crs, grid.transform @ Affine.translation(c0, r0), (window, window))


def _overlap(outer: GridSpec, grid: GridSpec) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """``((rows, cols) of outer, (rows, cols) of grid)``: where two grids of one lattice overlap."""
    r0 = int(round((grid.transform.f - outer.transform.f) / outer.transform.e))
    c0 = int(round((grid.transform.c - outer.transform.c) / outer.transform.a))
    ra, rb = max(0, r0), min(outer.shape[0], r0 + grid.shape[0])
    ca, cb = max(0, c0), min(outer.shape[1], c0 + grid.shape[1])
    return (slice(ra, rb), slice(ca, cb)), (slice(ra - r0, rb - r0), slice(ca - c0, cb - c0))


def _window_clear_pixels(clear: np.ndarray, grid: GridSpec, site, window: int) -> int:
    """Clear pixels in the window :func:`_coregister_window` cuts from ``grid`` around the site."""
    rows, cols = grid.shape
    r, c = grid.rowcol(site.centroid.x, site.centroid.y)
    h, w = min(window, rows), min(window, cols)
    r0 = int(np.clip(round(float(r)) - h // 2, 0, rows - h))
    c0 = int(np.clip(round(float(c)) - w // 2, 0, cols - w))
    return int(np.asarray(clear, bool)[r0:r0 + h, c0:c0 + w].sum())


def _clear_on(data: xr.DataArray, scene, spec, site_mask: np.ndarray, *, optical: bool,
              cfg: RunConfig) -> tuple[xr.DataArray, xr.DataArray]:
    """``(scene with its CLM band, clear mask buffered as the daily run's)`` of a scene loaded on a
    registration window (radar: no CLM, clear where every band has data)."""
    from changedet.acquire import site_cloud

    if optical:
        data, _, _ = site_cloud(data, scene, site_mask, optical=True,
                                cloud_method=str(spec.options.get("cloud_mask", "auto")))
        clear = _buffered(clear_mask(data), cfg.cloud_buffer_m, float(spec.resolution_m))
    else:
        clear = data.notnull().all("band")
    return data, clear


def _registration_window(cube: Cube, source, spec, aoi, scene, site, grid: GridSpec, reg_grid: GridSpec,
                         reference: xr.DataArray, origin: str | None, *, made_here: bool, optical: bool,
                         site_data: xr.DataArray, cfg: RunConfig):
    """``((reference, image, clear) on reg_grid, note or None)``, or ``(None, None)``: then register on the site grid.

    The scene is read again on ``reg_grid`` (:func:`_registration_grid`). The reference
    on it is the cube's registration window reference (:meth:`Cube.registration_reference`)
    when it was made from the cube's reference (``origin``) on this window; else it is made
    from that origin, read on ``reg_grid``: this scene when it is the new reference
    (``made_here``), the entry's ``reference`` file, or the stored reference scene found
    again by the source (older cubes get theirs on their next run). A window reference is
    identified by the digest of the cube's ``reference`` (:func:`~changedet.cube.reference_digest`,
    in its tags): a window made from another reference is stale and made again. A window
    newly made is used only when, where it overlaps the site grid, it is the cube's
    ``reference`` (:func:`_same_image`): a reference file changed since would register
    the day into another frame. A window file that cannot be read is a cache: it is
    treated as absent (warning) and made again. The site grid is used as before when the
    window cannot be made that way, or when it holds no more clear pixels than the site
    grid (a site at the edge of its files; counted before the cloud buffer, which also
    erodes the data from the files' edges).
    """
    from changedet.cube import reference_digest

    try:
        # Not kept in a download cache: the day's window is read once (the reference's window
        # is stored beside the cube), and a Sentinel Hub window reply is ~10 MB a day.
        moving = source.load(scene, reg_grid, aoi=aoi, **({"cache": False} if spec.name == "sentinelhub" else {}))
        wide_mask = _rasterize(site, reg_grid)
        moving, clear = _clear_on(moving, scene, spec, wide_mask, optical=optical, cfg=cfg)
        bands = optical_bands(moving)
    except SourceUnavailable:
        raise  # it may pass: the day fails and is run again (run_day)
    except ChangedetError as exc:
        log.info("%s: scene %s not read on the registration window (%s); registered on the site grid",
                 aoi.id, scene.id, exc)
        return None, None
    window = int(cfg.coreg_window_px)
    seen_wide = _window_clear_pixels(_unbuffered(moving, optical), reg_grid, site, window)
    if seen_wide <= _window_clear_pixels(_unbuffered(site_data, optical), grid, site, window):
        return None, None  # the files end at the site: the window adds nothing
    if not origin:
        return None, None
    names = [str(b) for b in reference["band"].values]
    digest = reference_digest(reference)
    try:
        stored = cube.registration_reference()
    except (ChangedetError, OSError, ValueError) as exc:
        # A derived cache (an interrupted copy or sync, a disk fault): made again below and
        # written over atomically, rather than failing every later day of the AOI.
        log.warning("%s: the registration window reference %s cannot be read (%s); it is made again",
                    aoi.id, cube.registration_path, exc)
        stored = None
    if stored is not None:
        da, tags = stored
        # Made from this very reference (its digest), on this window: a file left by a
        # deleted cube, by another reference or by an older version of this code is not.
        if tags.get("changedet_reference_digest") == digest and tags.get("changedet_reference_from") == origin \
                and GridSpec.of(da).same_as(reg_grid) and da.sizes.get("band") == len(names):
            return (da.assign_coords(band=names), bands, clear), None
    ref = _window_reference(cube, source, spec, aoi, scene, reg_grid, origin, made_here=made_here,
                            moving=moving, like=reference, optical=optical)
    if ref is None:
        return None, None
    ref = ref.assign_coords(band=names)
    if not _same_image(ref, reg_grid, reference, grid):
        log.warning("%s: the registration window read from %s is not the cube's reference on the site grid (the "
                    "file changed since?); registered on the site grid", aoi.id, origin)
        return None, None
    note = f"registration window reference made from {origin} ({reg_grid.shape[0]}x{reg_grid.shape[1]} px)"
    try:
        cube.set_registration_reference(ref, origin=origin, window_px=window, reference_digest=digest)
    except ChangedetError as exc:  # used this run; the next run makes it again
        log.warning("%s: registration window reference not saved (%s)", aoi.id, exc)
        note += ", not saved: " + str(exc)
    return (ref, bands, clear), note


def _unbuffered(data: xr.DataArray, optical: bool) -> np.ndarray:
    """Pixels with data in every band and, where there is a CLM band, not cloud (no buffer)."""
    return np.asarray((clear_mask(data) if optical else data.notnull().all("band")).values, bool)


def _reference_pixels(data: xr.DataArray, optical: bool) -> xr.DataArray:
    """A scene's image bands as a reference: NaN where cloudy or without data (as :func:`_new_reference`)."""
    if optical and CLOUD_BAND in [str(b) for b in data["band"].values]:
        return optical_bands(data).where(clear_mask(data))
    return optical_bands(data).where(optical_bands(data).notnull().all("band"))


def _same_image(wide: xr.DataArray, reg_grid: GridSpec, reference: xr.DataArray, grid: GridSpec) -> bool:
    """Whether ``wide`` (on ``reg_grid``) is ``reference`` (on ``grid``, same lattice) where they overlap.

    Median absolute difference over the pixels both have, at most :data:`REGISTRATION_MATCH`
    of the reference's spread (2nd to 98th percentile there): independent of the values'
    scale (reflectance, 8-bit or 16-bit DN). The pixels both have must be at least half of
    the reference's in the overlap, and the overlap not empty.
    """
    (wr, wc), (gr, gc) = _overlap(reg_grid, grid)
    va = np.asarray(wide.isel(y=wr, x=wc).values, "float32")
    vb = np.asarray(reference.isel(y=gr, x=gc).values, "float32")
    if va.shape != vb.shape or va.size == 0:
        return False
    both = np.isfinite(va) & np.isfinite(vb)
    if not both.any() or both.sum() < 0.5 * np.isfinite(vb).sum():
        return False
    lo, hi = np.percentile(vb[both], [2, 98])
    spread = float(hi - lo)
    diff = float(np.median(np.abs(va[both] - vb[both])))
    if spread <= 0:  # a flat reference: only the same values match
        return diff == 0.0
    return diff <= REGISTRATION_MATCH * spread


def _window_reference(cube: Cube, source, spec, aoi, scene, reg_grid: GridSpec, origin: str, *, made_here: bool,
                      moving: xr.DataArray, like: xr.DataArray, optical: bool) -> xr.DataArray | None:
    """The cube's reference (made from ``origin``) read again on ``reg_grid``, or None when it cannot be."""
    if made_here and origin == f"scene {scene.id}":
        # As _new_reference: cloud and no-data NaN (not the buffer: the day had <= 5 % cloud).
        return _reference_pixels(moving, optical)
    try:
        if origin.startswith("file ") and spec.options.get("reference") \
                and origin == _file_origin(spec.options["reference"]):
            return _reference_file(spec.options["reference"], spec, reg_grid, like,
                                   _rasterize(aoi.to_crs(aoi.polygon, reg_grid.crs), reg_grid))
        if origin.startswith("scene "):
            wanted = origin[len("scene "):]
            held = [e for e in cube.scenes() if str(e.get("scene_id")) == wanted]
            if not held:
                return None
            # The day its run found it on (the local-day rule of search_day), not its UTC date.
            found = [s for s in search_day(source, spec, aoi, scene_day(aoi, spec, held[0]["time"]))
                     if s.id == wanted]
            if not found:
                return None  # the file is gone or changed (a new id): the site grid it is
            raw = source.load(found[0], reg_grid, aoi=aoi)
            if optical:
                from changedet.acquire import site_cloud

                raw, _, _ = site_cloud(raw, found[0], _rasterize(aoi.to_crs(aoi.polygon, reg_grid.crs), reg_grid),
                                       optical=True, cloud_method=str(spec.options.get("cloud_mask", "auto")))
            return _reference_pixels(raw, optical)
    except SourceUnavailable:
        raise  # it may pass: the day fails and is run again, as on the window's own read
    except (ChangedetError, OSError, ValueError) as exc:
        log.info("%s: the reference %s could not be read on the registration window (%s)", aoi.id, origin, exc)
    return None


def _change_magnitude(history: xr.DataArray, image: xr.DataArray, *, mad_floor: float) -> xr.DataArray:
    """``change_magnitude(image, robust_baseline(history))`` through the fused kernel.

    The same values (the fused kernel is bit-identical to the numpy median/MAD path),
    without sorting the history twice in numpy: that sort was the one cost of a daily
    run that grew with the history (0.3 s CPU of 2.3 s at 6 baseline dates).
    One thread: a daily run is one task among many on a worker.
    """
    # float32: the cube decodes to float64, but reflectance carries ~1e-4 of precision, and
    # the fused kernel is float32 only (the float64 numpy path costs 10x more).
    z = baseline_zscore(history.transpose("time", "band", "y", "x").astype("float32"),
                        image.transpose("band", "y", "x").astype("float32"), mad_floor=mad_floor, threads=1)
    # As change_magnitude: a pixel missing a band is unknown, not a smaller change.
    return np.sqrt((z**2).mean("band", skipna=False))


def _coarsen(da: xr.DataArray, factor: int, grid) -> xr.DataArray:
    """Block-average onto the coarse grid (which shares the fine grid's origin)."""
    if factor == 1:
        return da
    rows, cols = grid.shape
    v = np.asarray(da.values, dtype="float32")
    pad_r, pad_c = rows * factor - v.shape[1], cols * factor - v.shape[2]
    v = np.pad(v, ((0, 0), (0, max(pad_r, 0)), (0, max(pad_c, 0))), constant_values=np.nan)[:, :rows * factor,
                                                                                           :cols * factor]
    out = quiet_nanmean(v.reshape(v.shape[0], rows, factor, cols, factor), axis=(2, 4))  # all-NaN block: NaN
    return grid.attach(out.astype("float32"), bands=[str(b) for b in da["band"].values])


def _rasterize(geom, grid) -> np.ndarray:
    from rasterio import features as rfeatures

    return rfeatures.rasterize([(geom, 1)], out_shape=grid.shape, transform=grid.transform, fill=0,
                               dtype="uint8").astype(bool)


class _Products:
    """The products folder of one AOI-day: ``<root>/products/<aoi>/<day>/``, local or on a store URL."""

    def __init__(self, root: str | Path, aoi_id: str, day: date) -> None:
        self.remote = is_url(root)
        self.base = (f"{root}/products/{aoi_id}/{day.isoformat()}" if self.remote
                     else Path(root) / "products" / aoi_id / day.isoformat())

    @contextlib.contextmanager
    def local(self, name: str) -> Iterator[Path]:
        """A local path to write ``name`` to; on a store URL it is uploaded (one PUT) afterwards."""
        if not self.remote:
            yield self.base / name
            return
        import tempfile

        import fsspec

        with tempfile.TemporaryDirectory(prefix="changedet-product-") as tmp:
            path = Path(tmp) / name
            yield path
            fs, target = fsspec.core.url_to_fs(f"{self.base}/{name}")
            fs.put_file(str(path), target)


def _write_detections(res, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = res.to_json(to_crs="EPSG:4326")
    fc = {"type": "FeatureCollection",
          "features": [{"type": "Feature", "geometry": d.pop("polygon"), "properties": d} for d in doc["detections"]]}
    # Never a half-written file, nor a stray temporary one, where a reader looks.
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(fc)))


def dates_between(start: date, end: date, every_days: int) -> list[date]:
    """Days ``start``, ``start + every_days``, ... up to ``end`` (included).

    Raises
    ------
    DateError
        If ``end`` is before ``start`` or ``every_days`` is not a whole number >= 1
        (a step of 0 or less gave no day at all, silently).
    """
    from changedet.errors import DateError

    if end < start:
        raise DateError(f"end date {end} is before start date {start}; swap them")
    if isinstance(every_days, bool) or not isinstance(every_days, numbers.Integral) or every_days < 1:
        raise DateError(f"days between runs must be a whole number >= 1, not {every_days!r}; e.g. --every 7")
    every_days = int(every_days)  # numpy integers are welcome; timedelta takes only int
    n = (end - start).days // every_days
    return [start + timedelta(days=every_days * i) for i in range(n + 1)]


def day_cost(aoi, cfg: RunConfig) -> float:
    """Relative cost of one ``run_day`` of ``aoi``, for scheduling: megapixels of its grid.

    Every stage of the daily slice (load, cloud mask, co-registration, resampling,
    counting) is linear in the pixels of the AOI grid at the primary source's
    resolution, so their number ranks AOIs by cost without running anything.

    Returns
    -------
    float
        Pixels of the grid, in millions (a 1 m grid of 1 km x 1 km is 1.0).
    """
    _, spec = primary_source(aoi, cfg.seed, cfg.registry)
    rows, cols = aoi_grid(aoi, float(spec.resolution_m)).shape
    return rows * cols / 1e6


def chain_priorities(days: dict[str, list[date]], cost: dict[str, float]) -> dict[tuple[str, date], float]:
    """Scheduling priority of every AOI-day: the work left in its AOI's chain from it on.

    Days of one AOI run in order, so a backfill is a set of chains and can finish no
    sooner than its longest. Running first the ready day with the most work left behind
    it (critical path first, LPT over chains) starts the longest chains at once and
    fills the other workers with the short ones.

    Parameters
    ----------
    days : dict of str to list of date
        Days to run per AOI.
    cost : dict of str to float
        Relative cost of one day per AOI (e.g. :func:`day_cost`); same unit for all.

    Returns
    -------
    dict of (str, date) to float
        Remaining chain cost from each AOI-day (included) to the AOI's last day.
    """
    out = {}
    for aoi_id, ds in days.items():
        ordered = sorted(ds)
        for i, d in enumerate(ordered):
            out[(aoi_id, d)] = cost[aoi_id] * (len(ordered) - i)
    return out


def run_series(aoi, days: Iterable[date], cfg: RunConfig, *,
               progress: Callable[[DayResult], None] | None = None) -> list[DayResult]:
    """Run ``run_day`` over days in order (alerts depend on the order).

    Days that end ``no_reference`` (a source without a basemap, before its first clear
    acquisition) are not run again here: that would feed the alert rules out of order.
    Running the range again processes them, the days done being ``already_processed``.
    """
    out = []
    for d in sorted(days):
        r = run_day(aoi, d, cfg)
        out.append(r)
        if progress:
            progress(r)
    return out
