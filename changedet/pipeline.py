"""The daily slice for one AOI: acquire, co-register, store, detect change, count, record, alert.

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
from changedet.errors import ChangedetError, CoregError, CubeError, SourceError
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
        Side of the window around the site used to estimate the global shift.
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
    status: str                      # processed | no_scene | cloudy | already_processed
    scene_id: str | None = None
    sensor: str | None = None
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

    def summary(self) -> str:
        head = f"{self.aoi_id} {self.day}"
        if self.status != "processed":
            return f"{head}: {self.status}{(' (' + self.note + ')') if self.note else ''}"
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


def primary_source(aoi, seed: int, registry: Path | None):
    """The source the daily slice runs on, with its spec: the AOI's ``simulator`` entry.

    The daily slice (``changedet run``, the flows) does not yet process imagery from the
    other sources; ``changedet fetch`` acquires theirs into the AOI's ``*_acquired`` cube.
    """
    for spec in aoi.sources:
        if spec.name == "simulator":
            return SimulatorSource(seed=seed, registry=registry), spec
    # Say what is missing: the other sources may be installed and configured, but the daily
    # slice does not read them (an earlier message blamed the installation).
    names = ", ".join(s.name for s in aoi.sources) or "none"
    raise SourceError(
        f"{aoi.id}: the daily run (changedet run, backfill, the daily flow) processes only the scene simulator "
        f"for now, and this AOI has no simulator source (its sources: {names}); fetch real imagery into its cube "
        f"with 'changedet fetch --aoi {aoi.id} --source NAME --start D --end D', or add "
        "'{name: simulator, sensor: vhr, resolution_m: 0.5}' to its sources to run it on simulated scenes"
    )


def run_day(aoi, day: date, cfg: RunConfig) -> DayResult:
    """Process the acquisition of ``aoi`` on ``day`` (if there is one).

    Raises
    ------
    changedet.alerts.config.AlertConfigError
        Before any work, if the AOI's alert rules or the delivery settings in the
        environment are wrong (all problems listed).
    """
    from changedet.alerts.config import check_alerting

    _refuse_future(aoi, day)
    check_alerting([aoi])
    source, spec = primary_source(aoi, cfg.seed, cfg.registry)
    res = float(spec.resolution_m)
    grid = aoi_grid(aoi, res)
    root = cfg.store_root()
    cube = Cube(root, aoi.id, spec.sensor, grid)
    result = DayResult(aoi.id, day, "no_scene", sensor=spec.sensor)
    scenes = source.search(aoi, day, day, sensor=spec.sensor, resolution_m=res)
    if not scenes:
        return result
    scene = scenes[0]
    result.scene_id = scene.id
    now = _now_utc()
    if to_utc(scene.time) > now:
        # Sources search whole UTC days, and today at a site east of UTC starts before
        # the UTC day's acquisitions: a scene stamped after now has not been taken yet
        # (the simulator renders any time). Nothing is stored; a later run of the day gets it.
        result.status = "no_scene"
        result.note = (f"scene {scene.id} is stamped {to_utc(scene.time).isoformat()}, after now "
                       f"({now.isoformat(timespec='seconds')}): not acquired yet, run this day again later")
        return result
    if cube.has(scene.id) and not (cfg.evidence and _packs_pending(cfg, aoi, scene.time)):
        result.status = "already_processed"
        return result
    # (A stored day whose evidence pack an earlier run could not write is processed again
    # to rebuild the pack: every write below is idempotent for a stored scene.)
    reference = _reference(cube, source, aoi, spec.sensor, res)
    data = source.load(scene, grid, aoi=aoi)
    optical = spec.sensor != "s1"
    clear = clear_mask(data) if optical else data.notnull().all("band")
    if optical:
        # Cloud masks miss thin cloud and haze at cloud edges; a buffer (as Fmask and
        # s2cloudless users apply) keeps those pixels out of change and counts.
        from scipy import ndimage

        cloud = ~np.asarray(clear.values, bool)
        grow = max(3, int(round(cfg.cloud_buffer_m / res)))
        if cloud.any():
            cloud = ndimage.binary_dilation(cloud, structure=np.ones((3, 3), bool), iterations=grow)
        clear = clear.copy(data=~cloud)
    site = aoi.to_crs(aoi.polygon, grid.crs)
    site_mask = _rasterize(site, grid)
    cloud_fraction = 1.0 - float(clear.values[site_mask].mean())
    result.cloud_fraction = round(cloud_fraction, 4)
    if cloud_fraction > 0.9:
        result.status, result.note = "cloudy", f"{cloud_fraction:.0%} of the site under cloud"
        return result

    # Co-register onto the AOI reference; the cloud mask moves with the pixels.
    bands = optical_bands(data)
    try:
        reg = _coregister_window(optical_bands(reference), bands, clear, site, window=cfg.coreg_window_px)
    except CoregError as exc:
        # Too little clear overlap to register: the scene cannot be trusted pixel-wise.
        result.status, result.note = "not_registered", str(exc)
        return result
    if not reg.applied:
        # Counting on tracks and zones that may sit metres off would be worse than no count.
        result.status = "not_registered"
        result.note = f"registration unreliable: {reg.reason or f'reliability {reg.reliability:.2f}'}"
        result.reliability = round(reg.reliability, 3)
        return result
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
    provenance = {"scene_id": scene.id, "code_version": __version__, "config_hash": cfg.hash(aoi),
                  "coreg": {"shift_row_px": reg.shift_row_px, "shift_col_px": reg.shift_col_px,
                            "reliability": reg.reliability, "applied": reg.applied}}

    metrics: list[dict[str, Any]] = []
    products = _Products(root, aoi.id, day)
    # What an evidence pack needs if a rule fires on this day.
    ev: dict[str, Any] = {"scene": scene, "sensor": spec.sensor, "after": aligned, "cube": cube, "site": site,
                          # Similarity before/after says how well the shift explains the scene;
                          # the residual is set in local mode only (tie points against the warp).
                          "registration": {**provenance["coreg"], **provenance_fields(reg)},
                          "cloud_fraction": cloud_fraction, "config": cfg.settings(),
                          "config_hash": provenance["config_hash"], "detections": [], "threshold": cfg.change_z,
                          "scene_data": data}

    # Pixel change against the robust per-pixel baseline of earlier aligned dates, on a
    # coarser cube of its own (cheap to read back for every new date).
    factor = max(1, int(round(cfg.change_res_m / res)))
    cgrid = aoi_grid(aoi, res * factor)
    coarse_cube = Cube(root, aoi.id, spec.sensor, cgrid, reflectance=optical)
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
        count("ships", count_ships, aligned, berths, water=shapely.union_all(water) if water else None,
              valid=clear_al)
    for metric, res_ in counts:
        if res_.observed_fraction < cfg.min_observed:
            result.skipped[metric] = f"only {res_.observed_fraction:.0%} of features cloud-free"
            continue
        metrics.append({"metric": metric, "value": float(res_.total)})
        if metric == "railcars":
            for t, n in res_.by_type.items():
                metrics.append({"metric": f"railcars_{t}", "value": float(n)})
        for pf in res_.per_feature:
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
        coarse_cube.append(scene, coarse, extra={"coarsened_from_m": res})
        result.alerts = _evaluate_rules(aoi, scene.time, store, Path(cfg.data_dir) / "outbox",
                                        {m["metric"] for m in metrics},
                                        evidence=(Path(cfg.data_dir) / "evidence", ev) if cfg.evidence else None,
                                        skipped=result.skipped, rebuilt=result.rebuilt)
        result.status = "processed"
        # Stored even when an evidence pack failed (the outbox records the pending pack,
        # and a run of this day rebuilds it): the day's pixels are what the report and
        # every later pack's "before" image need.
        # The reasons counts were skipped ride with the scene, so the report can say why an
        # image has no count (cloud, too coarse, ...) rather than guess.
        cube.append(scene, stored, extra={"coreg": provenance["coreg"], "cloud_fraction": cloud_fraction,
                                          "skipped": {k: v for k, v in result.skipped.items() if k != "evidence"}})
    finally:
        store.close()
    return result


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
                    rebuilt: list[str] | None = None) -> list[dict]:
    """Feed the observation at ``t`` to the AOI's rules; write the evidence packs due.

    Returns the alerts opened or escalated by this observation. With ``evidence``, every
    pack the outbox records as pending for this observation is written: the packs of
    this run's events (recorded pending with them, in one transaction) and those an
    earlier run of the same day could not write, whatever later days did to the alert.
    A pack that fails stays pending; its reason goes to ``skipped["evidence"]``. The ids
    of rebuilt packs (not new alerts) go to ``rebuilt``.
    """
    out = []
    outbox = None
    for rule in aoi.rules:
        if rule.metric not in fresh:
            continue
        life = lifecycle_params(dict(rule.params), rule_id=rule.id)
        params = {k: v for k, v in rule.params.items() if k not in life}
        series = store.series(aoi.id, rule.metric, end=t)
        finding = evaluate(series, rule_id=rule.id, kind=rule.kind, params=params,
                           severity=rule.severity, aoi_id=aoi.id, aoi_name=aoi.name, metric=rule.metric, at=t)
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
        config_hash=ev["config_hash"], code_version=__version__, rgb=_rgb_bands(ev["after"]),
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
    """Run ``run_day`` over days in order (alerts depend on the order)."""
    out = []
    for d in sorted(days):
        r = run_day(aoi, d, cfg)
        out.append(r)
        if progress:
            progress(r)
    return out
