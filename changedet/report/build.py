"""Build the static HTML report from what runs left in a data directory.

Reads the data directory (opening the outbox may re-sync its alert JSON files, nothing else
is written there): cubes (latest image, before/after chips),
``products/<aoi>/<date>/`` (change magnitude COG, detections GeoJSON), the metric store
and the alert outbox. Writes ``<out>/index.html`` plus ``<out>/<aoi_id>/index.html``
with its PNG figures; pages open from disk (no server, no remote URL).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from changedet import __version__
from changedet.errors import ChangedetError, problems_by_file
from changedet.report.html import esc, fmt_num, href, page, rel_href, sparkline, table

__all__ = ["ReportError", "ReportIncomplete", "build_report", "baseline_band"]

#: Change magnitude threshold drawn on heatmaps: the pipeline default
#: (:attr:`changedet.pipeline.RunConfig.change_z`); runs do not record theirs.
DEFAULT_CHANGE_Z = 6.0
#: Side of the before/after chips, metres.
CHIP_M = 160.0
_METRIC_UNITS = {"railcars": "railcars", "containers_teu": "TEU", "ships": "ships", "changed_area_m2": "m²"}


class ReportError(ChangedetError):
    """The report cannot be built (unknown AOI, unreadable data directory, bad period)."""


class ReportIncomplete(ReportError):
    """The report was written for the valid AOIs of the registry, but AOI files are broken.

    Attributes
    ----------
    index : pathlib.Path
        The ``index.html`` written (it lists the broken files too).
    broken : list of str
        Each problem of the broken AOI files, its path first (one file may have several;
        :func:`changedet.errors.problems_by_file` groups them).
    """

    def __init__(self, message: str, index: Path, broken: Sequence[str]) -> None:
        super().__init__(message)
        self.index, self.broken = Path(index), list(broken)


@dataclass
class _MetricView:
    name: str
    series: pd.Series
    baseline: pd.DataFrame
    alert_times: list[pd.Timestamp]


@dataclass
class _AOIView:
    aoi: Any
    status: str
    latest: pd.Timestamp | None
    sensor: str | None
    latest_day: str | None = None   # the run day of the latest image
    metrics: list[_MetricView] = field(default_factory=list)
    alerts: list[Any] = field(default_factory=list)
    open_alerts: int = 0
    notes: list[str] = field(default_factory=list)


# -- time helpers ------------------------------------------------------------------------------
def _ts(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _period(start, end) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    s = _ts(start) if start is not None else None
    # An end *date* includes that whole day.
    e = None
    if end is not None:
        e = _ts(end)
        if isinstance(end, date) and not isinstance(end, datetime):
            e = e + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    if s is not None and e is not None and e < s:
        raise ReportError(f"report end {end} is before its start {start}; swap --start and --end")
    return s, e


def _day_in(day: date, start, end) -> bool:
    """Whether ``day`` lies in the period's days (:func:`_period`'s bounds, by their UTC dates)."""
    return (start is None or day >= start.date()) and (end is None or day <= end.date())


def _day(t) -> str:
    return _ts(t).strftime("%Y-%m-%d")


def _utc_day(t) -> str:
    """The UTC date of a time, labelled (an image's time beside its run's day); an
    unlabelled date in the report is always a run's day."""
    return f"{_day(t)} UTC"


def _run_day(aoi, img: "_Imagery", entry: dict) -> str:
    """The day of the run that stored ``entry`` (the ``--date`` that finds the scene again)."""
    from changedet.pipeline import stored_day

    return stored_day(aoi, img.spec, entry).isoformat()


# -- baseline band -----------------------------------------------------------------------------
def baseline_band(series: pd.Series, *, window_days: float = 90.0, k: float = 4.0, min_history: int = 6,
                  mad_floor: float = 1.0, rel_floor: float = 0.1) -> pd.DataFrame:
    """Normal range of each observation from the ones strictly before it, as the robust-z rule sees it.

    For every time t the window is the observations in ``[t - window_days, t)``; the
    band is ``median ± k · max(1.4826·MAD, mad_floor, rel_floor·|median|)``.

    Parameters
    ----------
    series : pandas.Series
        Metric values on a DatetimeIndex (any order, NaN ignored).
    window_days : float
        Trailing window, days.
    k : float
        Half-width of the band in robust standard deviations.
    min_history : int
        Fewer observations in the window give NaN (no band yet).
    mad_floor, rel_floor : float
        Floors of the scale (metric units, and share of the median).

    Returns
    -------
    pandas.DataFrame
        Columns ``lo``, ``mid``, ``hi`` on the series' (sorted) index.
    """
    from changedet.baselines import MAD_TO_SIGMA

    s = pd.Series(np.asarray(series.values, dtype="float64"), index=pd.DatetimeIndex(series.index)).sort_index()
    s = s[np.isfinite(s.values)]
    times = s.index
    vals = s.values
    lo, mid, hi = (np.full(len(s), np.nan) for _ in range(3))
    win = pd.Timedelta(days=float(window_days))
    for i, t in enumerate(times):
        m = (times < t) & (times >= t - win)
        if m.sum() < max(1, int(min_history)):
            continue
        w = vals[m]
        med = float(np.median(w))
        mad = float(np.median(np.abs(w - med)))
        scale = max(MAD_TO_SIGMA * mad, float(mad_floor), float(rel_floor) * abs(med))
        lo[i], mid[i], hi[i] = med - k * scale, med, med + k * scale
    return pd.DataFrame({"lo": lo, "mid": mid, "hi": hi}, index=times)


def _band_params(aoi, metric: str) -> dict[str, Any]:
    from changedet.baselines import validate_params

    for rule in getattr(aoi, "rules", ()):
        if rule.metric == metric and rule.kind == "robust_z":
            p = validate_params("robust_z", dict(rule.params), rule_id=rule.id)
            break
    else:
        p = validate_params("robust_z", {})
    return {k: p[k] for k in ("window_days", "k", "min_history", "mad_floor", "rel_floor")}


# -- imagery -----------------------------------------------------------------------------------
@dataclass
class _Imagery:
    sensor: str
    source: str                  # SourceSpec.name, e.g. "simulator"
    cube: Any
    scenes: list[dict]           # in the period, sorted by time
    spec: Any = None             # the SourceSpec


class _Store:
    """Where runs put cubes and products: a local folder or an fsspec URL (read only here)."""

    def __init__(self, root: str | Path) -> None:
        from changedet.cube import is_url

        self.root = root
        self.remote = is_url(root)
        if self.remote:
            import fsspec

            self.fs, self.base = fsspec.core.url_to_fs(str(root).rstrip("/"))
        else:
            self.fs, self.base = None, str(root)
        self._days: dict[str, list[str]] = {}

    def _join(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def product_days(self, aoi_id: str) -> list[str]:
        """Names of the ``products/<aoi>/<day>`` folders (listed once per AOI: a listing
        on an object store is a request, and every scene of the period asks)."""
        if aoi_id not in self._days:
            self._days[aoi_id] = self._list_days(aoi_id)
        return self._days[aoi_id]

    def _list_days(self, aoi_id: str) -> list[str]:
        folder = self._join("products", aoi_id)
        if not self.remote:
            p = Path(folder)
            return [d.name for d in p.iterdir() if d.is_dir()] if p.is_dir() else []
        try:
            entries = self.fs.ls(folder, detail=True)
        except (FileNotFoundError, OSError):
            return []
        return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]

    def files(self, aoi_id: str, day: str, suffix: str) -> list[str]:
        """Product files of one AOI-day ending in ``suffix``, sorted."""
        folder = self._join("products", aoi_id, day)
        if not self.remote:
            p = Path(folder)
            return sorted(str(f) for f in p.glob(f"*{suffix}")) if p.is_dir() else []
        try:
            return sorted(f for f in self.fs.ls(folder, detail=False) if f.endswith(suffix))
        except (FileNotFoundError, OSError):
            return []

    def read_text(self, path: str) -> str:
        return Path(path).read_text() if not self.remote else self.fs.cat_file(path).decode()

    def read_raster(self, path: str) -> xr.DataArray:
        from changedet.io import read_raster

        if not self.remote:
            return read_raster(path)
        import tempfile

        # GDAL reads local files; a change map is a few MB, so one copy is cheaper than a VSI setup.
        with tempfile.TemporaryDirectory(prefix="changedet-report-") as tmp:
            local = Path(tmp) / Path(path).name
            self.fs.get_file(path, str(local))
            return read_raster(local)


def _imagery(aoi, data: _Store, start, end) -> _Imagery | None:
    """The first source of the AOI with stored scenes (the pipeline's primary source)."""
    from changedet.cube import Cube
    from changedet.grid import aoi_grid

    for spec in aoi.sources:
        grid = aoi_grid(aoi, float(spec.resolution_m))
        cube = Cube(data.root, aoi.id, spec.sensor, grid, reflectance=spec.sensor != "s1")
        exists = data.fs.exists(str(cube.path)) if data.remote else Path(cube.path).exists()
        if not exists:
            continue
        # Scenes by the day of the run that stored them (what their captions show and what
        # `changedet run --date` takes), not their UTC time: at Kamchatka the run of D stores a pass
        # of 22:40 UTC on D-1, which a UTC filter put in D-1's report labelled D (review PIPE2 2).
        from changedet.pipeline import stored_day

        scenes = [s for s in cube.scenes() if _day_in(stored_day(aoi, spec, s), start, end)]
        if scenes:
            return _Imagery(spec.sensor, spec.name, cube, scenes, spec)
    return None


def _series_spec(aoi, data: _Store, img: "_Imagery | None"):
    """The source entry the AOI's stored series was made from (the scenes' recorded entry,
    :func:`changedet.pipeline._series_sources`); else the imagery's, else the first listed;
    None for an AOI with no sources.

    It decides which day a value or an alert belongs to (the simulator keeps its UTC date):
    a simulator fallback behind a real first entry of the same sensor and resolution shares
    its cube, so the cube alone does not tell them apart."""
    from changedet.pipeline import _same_entry, _series_sources

    specs = list(getattr(aoi, "sources", None) or [])
    made_from = _series_sources(data.root, aoi.id)
    for spec in specs:
        if any(_same_entry(spec, made) for made in made_from):
            return spec
    if img is not None:
        return img.spec
    return specs[0] if specs else None


def _scene_image(img: _Imagery, entry: dict) -> xr.DataArray:
    from changedet.sources.base import CLOUD_BAND

    da = img.cube.read(before=_ts(entry["time"]) + pd.Timedelta(microseconds=1), last=1)
    if da is None:
        raise ReportError(f"scene {entry['scene_id']} is listed but not readable in {img.cube.path}")
    da = da.isel(time=0).load()
    names = [str(b) for b in da["band"].values]
    if CLOUD_BAND in names:
        # Clouds are shown as they are (an analyst must see why a count is missing).
        da = da.sel(band=[b for b in names if b != CLOUD_BAND])
    return da


def _products_dir(data: _Store, aoi, img: _Imagery, entry: dict) -> str | None:
    """The ``products/<aoi>/<day>`` folder of the stored scene ``entry``, or None if it has none.

    The run of a day writes its products under that day, and the runs' day is the AOI's
    local day (:func:`changedet.pipeline.scene_day`): a scene taken 22:40 UTC on D-1 at
    UTC+12 is in folder D, and folder D-1 holds the day before's. Runs record their day
    with the scene (``day``), which is used as it is. A scene stored before they did was
    written by a run that named its folder by the scene's UTC date (the local-day search
    and the recorded day came together). A scene whose day has no folder (no change map or
    detection yet) has no products: never a neighbouring day's (review PIPE2 3).
    """
    names = set(data.product_days(aoi.id))
    name = str(entry["day"]) if entry.get("day") else _ts(entry["time"]).date().isoformat()
    return name if name in names else None


def _detections(data: _Store, aoi_id: str, prod: str | None, crs) -> list[dict]:
    """Detections of every ``*.geojson`` product (EPSG:4326) projected to ``crs``."""
    import shapely.geometry

    from changedet.aoi import _project

    out: list[dict] = []
    if prod is None:
        return out
    for f in data.files(aoi_id, prod, ".geojson"):
        stem = f.rsplit("/", 1)[-1][: -len(".geojson")]
        try:
            doc = json.loads(data.read_text(f))
        except (OSError, json.JSONDecodeError):
            continue
        for feat in doc.get("features", []):
            props = feat.get("properties") or {}
            try:
                geom = _project(shapely.geometry.shape(feat["geometry"]), crs)
            except Exception:
                continue
            out.append({"type": str(props.get("type", stem)), "polygon": shapely.geometry.mapping(geom),
                        "score": props.get("score")})
    return out


def _features(aoi, crs) -> list[dict]:
    feats = [{"id": aoi.id, "role": "site", "geometry": aoi.to_crs(aoi.polygon, crs)}]
    feats += [{"id": f.id, "role": f.role, "geometry": aoi.to_crs(f.geometry, crs)} for f in aoi.features]
    return feats


def _chip_window(da: xr.DataArray, centre_xy: tuple[float, float]) -> dict[str, slice]:
    from changedet.grid import GridSpec

    g = GridSpec.of(da)
    half = int(round(CHIP_M / g.resolution / 2))
    r, c = g.rowcol(*centre_xy)
    rows, cols = g.shape
    r0 = int(np.clip(round(float(r)) - half, 0, max(0, rows - 2 * half)))
    c0 = int(np.clip(round(float(c)) - half, 0, max(0, cols - 2 * half)))
    return {"y": slice(r0, min(rows, r0 + 2 * half)), "x": slice(c0, min(cols, c0 + 2 * half))}


def _change_centre(mag: xr.DataArray | None, aoi, crs) -> tuple[float, float]:
    """Where change is strongest (smoothed over ~40 m), else the site centre."""
    if mag is not None:
        from scipy import ndimage

        v = np.asarray(mag.squeeze().values, dtype="float32")
        if np.isfinite(v).any() and np.nanmax(v) > 0:
            res = abs(float(mag.x[1] - mag.x[0]))
            size = max(3, int(round(40.0 / res)))
            sm = ndimage.uniform_filter(np.nan_to_num(v, nan=0.0), size=size)
            r, c = np.unravel_index(int(np.argmax(sm)), sm.shape)
            return float(mag.x[c]), float(mag.y[r])
    cen = aoi.to_crs(aoi.polygon, crs).centroid
    return float(cen.x), float(cen.y)


# -- per-AOI page ------------------------------------------------------------------------------
def _rel(target: Path, start_dir: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start_dir).resolve())


#: Evidence files left in the data directory when a report takes a copy of a pack: the
#: GeoTIFF chips (several MB each, for QGIS); pictures, GeoJSON, CSV and JSON travel.
_EVIDENCE_LEFT_OUT = (".tif", ".tiff")


def _take_copy(src: Path, dst: Path) -> None:
    """``dst`` a copy of ``src`` (a copy, not a hard link: editing or chmod-ing the report
    must never touch the evidence); an up-to-date ``dst`` is left alone."""
    try:
        st, dt = src.stat(), dst.stat()
        if st.st_size == dt.st_size and st.st_mtime_ns == dt.st_mtime_ns:
            return
    except FileNotFoundError:
        pass
    tmp = dst.with_name(f".{dst.name}.part")
    tmp.unlink(missing_ok=True)
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _evidence_link(data_dir: Path, alert, page_dir: Path) -> tuple[str, str]:
    """(relative link, label) to the alert's evidence, copied into the report.

    The report folder must work on its own (copied, zipped, mailed): the pack's pictures,
    GeoJSON, CSV and JSON are copied to ``<page>/evidence/<alert id>/``, its GeoTIFF chips stay in the data directory. Without a pack, the
    alert's outbox record is copied to ``<page>/alerts/<alert id>.json``.
    """
    ev = data_dir / "evidence" / alert.id
    if ev.is_dir():
        dst = page_dir / "evidence" / alert.id
        dst.mkdir(parents=True, exist_ok=True)
        travels = {f.name: f for f in ev.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in _EVIDENCE_LEFT_OUT}
        for name, f in sorted(travels.items()):
            _take_copy(f, dst / name)
        for old in dst.iterdir():
            if old.is_file() and old.name not in travels:
                old.unlink()  # a file a rebuilt pack no longer has
        idx = dst / "index.html"
        # Without a page of its own the folder itself is linked (browsers list its files).
        return (_rel(idx, page_dir) if idx.exists() else _rel(dst, page_dir) + "/"), "evidence pack"
    record = data_dir / "outbox" / "alerts" / f"{alert.id}.json"
    if not record.exists():
        return _rel(record, page_dir), "alert record (JSON)"
    dst = page_dir / "alerts" / record.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    _take_copy(record, dst)
    return _rel(dst, page_dir), "alert record (JSON)"


#: Metrics counted on the features of each image (changed_area_m2 needs earlier dates instead).
_COUNT_METRICS = ("railcars", "containers_teu", "ships")


def _uncounted(aoi, metrics: list[_MetricView], when: pd.Timestamp) -> list[str]:
    """The AOI's count metrics with no site value recorded at ``when`` (the image's time)."""
    near = pd.Timedelta(minutes=1)
    recorded = {m.name for m in metrics if len(m.series) and (abs(m.series.index - when) <= near).any()}
    return [m for m in _COUNT_METRICS if m in getattr(aoi, "metrics", ()) and m not in recorded]


def _uncounted_note(aoi, metrics: list[_MetricView], when: pd.Timestamp, scene: dict, have_store: bool) -> str:
    """Caption text for the counts with no value at ``when``, each with the reason recorded
    with the scene by the run (``skipped``), if any; empty if every count has a value."""
    if not have_store:
        return "; counts not shown: there is no metrics store (metrics.sqlite) in the data directory"
    uncounted = _uncounted(aoi, metrics, when)
    if not uncounted:
        return ""
    reasons = scene.get("skipped") or {}
    parts = [f"{m} not counted ({reasons[m]})" if reasons.get(m) else f"{m}: no value recorded" for m in uncounted]
    return "; " + "; ".join(parts)


def _figure_block(src: str, alt: str, caption: str, *, gid: str) -> str:
    return (f"<figure id=\"{esc(gid)}\"><img class=\"fig\" src=\"{href(src)}\" alt=\"{esc(alt)}\">"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _build_aoi(aoi, data_dir: Path, data: _Store, out_dir: Path, start, end, store, outbox) -> _AOIView:
    from changedet import figures as F
    from changedet.alerts.outbox import ACTIVE
    from changedet.metrics import SITE

    page_dir = out_dir / aoi.id
    page_dir.mkdir(parents=True, exist_ok=True)
    img = _imagery(aoi, data, start, end)
    latest_t = _ts(img.scenes[-1]["time"]) if img else None
    view = _AOIView(aoi, "no data", latest_t, img.sensor if img else None,
                    _run_day(aoi, img, img.scenes[-1]) if img else None)

    from changedet.pipeline import scene_day

    # A value is stamped with its image's time and belongs to the day of the run that
    # counted it, as the images do (a pass at 22:40 UTC on D-1 is D's at UTC+12); so does
    # the alert it opened (``opened_at`` is that value's time, not the wall clock).
    spec = _series_spec(aoi, data, img)

    def value_day(t) -> date:
        return scene_day(aoi, spec, t) if spec is not None else _ts(t).date()

    # Alerts of this AOI in the period (opened by a run of one of its days, or opened
    # before its end and still active).
    alerts = []
    if outbox is not None:
        for a in outbox.list(aoi_id=aoi.id):
            opened = value_day(a.opened_at)
            active = a.status != "resolved"
            if _day_in(opened, start, end) or (active and _day_in(opened, None, end)):
                alerts.append(a)
    view.alerts = alerts
    view.open_alerts = sum(1 for a in alerts if a.status in ACTIVE)

    # Metric series (site level) with their baseline band; the window reaches back before the period.
    if store is not None:
        # The store is read a day past the period's UTC end and the values selected by their day.
        for metric in store.metrics(aoi.id):
            if SITE not in store.features(aoi.id, metric):
                continue
            full = store.series(aoi.id, metric, feature_id=SITE, end=end + pd.Timedelta(days=1)) \
                if end is not None else store.series(aoi.id, metric, feature_id=SITE)
            if full is None or len(full) == 0:
                continue
            full.index = pd.DatetimeIndex(full.index)
            full.index = full.index.tz_localize("UTC") if full.index.tz is None else full.index.tz_convert("UTC")
            days = [value_day(t) for t in full.index]
            upto = [_day_in(d, None, end) for d in days]
            full, days = full[upto], [d for d, u in zip(days, upto) if u]
            if len(full) == 0:
                continue
            band = baseline_band(full, **_band_params(aoi, metric))
            keep = [_day_in(d, start, end) for d in days]
            s = full[keep]
            if len(s) == 0:
                continue
            a_times = sorted({_ts(a.opened_at) for a in alerts if a.metric == metric})
            view.metrics.append(_MetricView(metric, s, band[keep], a_times))

    if view.open_alerts:
        # An open alert is the first thing an analyst must see, even when the period
        # shows no imagery or metric of the site (data elsewhere, or a --start after it).
        view.status = "alert"
    elif view.metrics or img:
        view.status = "ok"

    parts: list[str] = []
    name = aoi.name
    period = f"{_day(start) if start is not None else 'first record'} to {_day(end) if end is not None else 'latest'}"
    parts.append(f"<p><a href=\"../index.html\">&larr; all sites</a></p>")
    parts.append(f"<h1 id=\"aoi-name\">{esc(name)}</h1>")
    parts.append(
        f"<p class=\"meta\">{esc(aoi.id)} · {esc(aoi.kind)} · timezone {esc(aoi.timezone)} · period {esc(period)} · "
        f"status <span class=\"badge {esc(_badge(view.status))}\">{esc(view.status)}</span></p>"
    )
    if getattr(aoi, "notes", None):
        parts.append(f"<p class=\"note\">{esc(aoi.notes)}</p>")

    if img:
        # One unreadable product must not cost the analyst the rest of the page.
        img_parts: list[str] = []
        try:
            latest = img.scenes[-1]
            da = _scene_image(img, latest)
            crs = da.rio.crs
            when = latest_t.to_pydatetime()
            attribution = F.attribution_for(img.sensor, latest_t.year, source=img.source)
            prod = _products_dir(data, aoi, img, latest)
            dets = _detections(data, aoi.id, prod, crs)
            feats = _features(aoi, crs)
            F.map_png(da, page_dir / "map.png", title=f"{name}: site and features", when=when, sensor=img.sensor,
                      attribution=attribution, features=feats)
            img_parts.append("<h2>Site and features</h2>")
            img_parts.append(_figure_block("map.png", f"Map of {name} with its features",
                                       f"Site outline and mapped features ({', '.join(sorted({f['role'] for f in feats}))}) "
                                       f"over the image of {view.latest_day}.", gid="fig-map"))
            F.scene_png(da, page_dir / "latest.png", title=f"{name}: latest image", when=when, sensor=img.sensor,
                        attribution=attribution, detections=dets)
            counts: dict[str, int] = {}
            for d in dets:
                counts[d["type"]] = counts.get(d["type"], 0) + 1
            det_text = ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "no detections"
            # A count skipped (features under cloud, image too coarse) records no value and
            # writes no detections: "no detections" alone read as an observed zero.
            det_text += _uncounted_note(aoi, view.metrics, latest_t, latest, store is not None)
            img_parts.append("<h2>Latest image</h2>")
            img_parts.append(_figure_block("latest.png", f"Latest image of {name} with detections",
                                       f"{view.latest_day}, scene {latest['scene_id']}: {det_text}.", gid="fig-latest"))

            # Change heatmap of the latest date that has one in the period.
            mag, mag_t = None, None
            for entry in reversed(img.scenes):
                t = _ts(entry["time"])
                pdir = _products_dir(data, aoi, img, entry)
                tifs = [f for f in data.files(aoi.id, pdir, ".tif")
                        if f.rsplit("/", 1)[-1] == "change_magnitude.tif"] if pdir is not None else []
                if tifs:
                    mag, mag_t, mag_day = data.read_raster(tifs[0]), t, _run_day(aoi, img, entry)
                    break
            centre = _change_centre(mag, aoi, crs)
            if len(img.scenes) >= 2:
                before = img.scenes[0]
                bda = _scene_image(img, before)
                win = _chip_window(da, centre)
                a_chip, b_chip = da.isel(win), bda.isel(win)
                joint = np.concatenate([F.select_rgb(b_chip), F.select_rgb(a_chip)], axis=-1)
                vr = F.stretch_range(joint)
                bt, b_day = _ts(before["time"]), _run_day(aoi, img, before)
                # Each picture credits the year of its own data (Copernicus asks for it).
                F.scene_png(b_chip, page_dir / "before.png", title="Before", when=bt.to_pydatetime(), sensor=img.sensor,
                            attribution=F.attribution_for(img.sensor, bt.year, source=img.source),
                            value_range=vr, max_px=512)
                F.scene_png(a_chip, page_dir / "after.png", title="After", when=when, sensor=img.sensor,
                            attribution=attribution, value_range=vr, max_px=512)
                img_parts.append("<h2>Before and after</h2>")
                img_parts.append(
                    "<div class=\"pair\">"
                    + _figure_block("before.png", f"Before: {b_day}", f"{b_day} (first image of the period)",
                                    gid="fig-before")
                    + _figure_block("after.png", f"After: {view.latest_day}", f"{view.latest_day} (latest image)",
                                    gid="fig-after")
                    + "</div><p class=\"muted\">Same "
                    + esc(f"{CHIP_M:g} m")
                    + " window in both, centred on the strongest change; both share one brightness stretch.</p>"
                )
            else:
                view.notes.append("Only one image in the period: no before/after comparison.")
            if mag is not None:
                F.heatmap_png(mag, page_dir / "change.png", title=f"{name}: change", when=mag_t.to_pydatetime(),
                              sensor=img.sensor, attribution=F.attribution_for(img.sensor, mag_t.year, source=img.source),
                              threshold=DEFAULT_CHANGE_Z)
                img_parts.append("<h2>Change</h2>")
                img_parts.append(_figure_block("change.png", f"Change magnitude at {name}",
                                           f"Change magnitude on {mag_day} against the per-pixel baseline of earlier "
                                           f"dates; outlined: above {DEFAULT_CHANGE_Z:g} (the default threshold).",
                                           gid="fig-change"))
            else:
                view.notes.append("No change map in the period yet (the per-pixel baseline needs 3 earlier dates).")
        except (ChangedetError, OSError, ValueError) as exc:
            view.notes.append(f"Imagery could not be shown: {exc}")
        parts.extend(img_parts)
    else:
        view.notes.append("No stored imagery for this site in the period.")
    if not any("fig-map" in p_ for p_ in parts):
        parts.append("<h2>Site and features</h2>")
        parts.append(_geometry_map(aoi, page_dir))

    parts.append("<h2>Metrics</h2>")
    if not view.metrics:
        parts.append("<p class=\"muted\">No metric recorded in the period.</p>")
    for i, m in enumerate(_ordered_metrics(view)):
        units = _METRIC_UNITS.get(m.name, "railcars" if m.name.startswith("railcars_") else "")
        title = f"{m.name} (site)"
        svg = F.series_svg(m.series, title=title, units=units, baseline=m.baseline, alerts=m.alert_times,
                           id_prefix=f"m{i}")
        F.series_png(m.series, page_dir / f"series_{i}.png", title=f"{name}: {m.name}", units=units,
                     baseline=m.baseline, alerts=m.alert_times)
        p = _band_params(aoi, m.name)
        parts.append(
            f"<h3>{esc(m.name)}</h3><figure class=\"series\" id=\"series-{i}\" data-metric=\"{esc(m.name)}\" "
            f"data-alerts=\"{len(m.alert_times)}\">{svg}<figcaption>Latest {esc(fmt_num(m.series.iloc[-1]))} "
            f"on {esc(value_day(m.series.index[-1]).isoformat())} (image of {esc(_utc_day(m.series.index[-1]))}). Band: median ± {esc(fmt_num(p['k']))}·MAD of the previous "
            f"{esc(fmt_num(p['window_days']))} days, once {esc(p['min_history'])} observations are in the window; "
            f"▼ alerts. <a href=\"{href(f'series_{i}.png')}\">PNG</a></figcaption></figure>"
        )

    parts.append("<h2>Alerts</h2>")
    rows = []
    for a in sorted(alerts, key=lambda a: _ts(a.opened_at), reverse=True):
        link, label = _evidence_link(data_dir, a, page_dir)
        feature = "site" if a.feature_id == SITE else a.feature_id
        rows.append([
            f"<span class=\"sev-{esc(a.severity)}\">{esc(a.severity)}</span>",
            esc(a.status),
            f"<span title=\"{esc(_ts(a.opened_at).strftime('%Y-%m-%d %H:%M UTC'))}\">{esc(value_day(a.opened_at).isoformat())}</span>",
            esc(a.rule_id),
            esc(a.metric),
            esc(feature),
            esc(fmt_num(a.value)),
            esc(a.message),
            f"<a class=\"evidence\" href=\"{rel_href(link)}\">{esc(label)}</a>",
        ])
    parts.append(table(["severity", "status", "opened", "rule", "metric", "feature", "value", "message", "evidence"],
                       rows, cls="alerts", numeric=(6,)))
    for n in view.notes:
        parts.append(f"<p class=\"muted\">{esc(n)}</p>")
    parts.append(_footer())
    (page_dir / "index.html").write_text(page(f"{name} — changedet report", "\n".join(parts)), encoding="utf-8")
    return view


def _geometry_map(aoi, page_dir: Path) -> str:
    """Site and features on a blank background, for sites without imagery yet."""
    from changedet import figures as F
    from changedet.grid import aoi_grid

    shape = aoi_grid(aoi, 1.0).shape
    res = float(max(1, math.ceil(max(shape) / 800)))
    grid = aoi_grid(aoi, res)
    blank = grid.attach(np.full(grid.shape, np.nan, dtype="float32"))
    F.map_png(blank, page_dir / "map.png", title=f"{aoi.name}: site and features", when=None,
              sensor="no imagery yet", attribution="Geometry: changedet AOI registry",
              features=_features(aoi, grid.crs))
    return _figure_block("map.png", f"Map of {aoi.name} with its features",
                         "Site outline and mapped features (no image stored for the period).", gid="fig-map")


def _main_metrics(view: _AOIView) -> list[_MetricView]:
    """The AOI's declared metrics, plus any other metric an alert or rule is about (e.g. per-type counts)."""
    watched = set(view.aoi.metrics) | {r.metric for r in view.aoi.rules} | {a.metric for a in view.alerts}
    return [m for m in view.metrics if m.name in watched]


def _ordered_metrics(view: _AOIView) -> list[_MetricView]:
    main = _main_metrics(view)
    return main + [m for m in view.metrics if all(m is not x for x in main)]


def _badge(status: str) -> str:
    return {"alert": "alert", "ok": "ok", "no data": "nodata"}.get(status, "stale")


def _footer() -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<p class=\"muted\">Generated {esc(now)} by changedet {esc(__version__)}.</p>"


# -- index -------------------------------------------------------------------------------------
def _index(views: list[_AOIView], out_dir: Path, start, end, broken: Sequence[str] = ()) -> Path:
    rows = []
    for v in views:
        sparks = []
        for m in _main_metrics(v):
            secs = [t.timestamp() for t in m.series.index]
            sparks.append(
                f"<div class=\"spark-row\" data-metric=\"{esc(m.name)}\"><span class=\"spark-name\">{esc(m.name)}</span> "
                + sparkline(secs, list(m.series.values), alert_times=[t.timestamp() for t in m.alert_times],
                            label=f"{m.name} at {v.aoi.name}")
                + f" <span class=\"num\">{esc(fmt_num(m.series.iloc[-1]))}</span></div>"
            )
        rows.append([
            f"<a class=\"aoi-link\" href=\"{href(v.aoi.id, 'index.html')}\">{esc(v.aoi.name)}</a>"
            f"<br><span class=\"muted\">{esc(v.aoi.id)} · {esc(v.aoi.kind)}</span>",
            f"<span class=\"badge {esc(_badge(v.status))}\">{esc(v.status)}</span>",
            esc(v.latest_day) if v.latest_day is not None else "<span class=\"muted\">none</span>",
            "".join(sparks) or "<span class=\"muted\">no metric recorded</span>",
            esc(v.open_alerts),
        ])
    period = f"{_day(start) if start is not None else 'first record'} to {_day(end) if end is not None else 'latest'}"
    body = [
        "<h1>changedet: monitored sites</h1>",
        f"<p class=\"meta\">{len(views)} site(s) · period {esc(period)} · "
        f"{sum(v.open_alerts for v in views)} open alert(s)</p>",
        table(["site", "status", "latest acquisition", "metrics (period; ● alert)", "open alerts"], rows,
              cls="index", numeric=(4,)),
    ]
    if broken:
        # Whoever reads the report must see that sites are missing from it, and why.
        # Files are counted (one file with two typos is one site missing), each with its problems.
        files = problems_by_file(broken)
        body.append(f"<h2 id=\"broken-aois\">Not in this report: {len(files)} broken AOI file(s)</h2>"
                    "<p>Fix them (<code>changedet aois validate</code> checks) and build the report again.</p><ul>"
                    + "".join(f"<li>{esc(path)}<ul>" + "".join(f"<li>{esc(p)}</li>" for p in problems)
                              + "</ul></li>" for path, problems in files.items()) + "</ul>")
    body.append(_footer())
    path = out_dir / "index.html"
    path.write_text(page("changedet report", "\n".join(body)), encoding="utf-8")
    return path


# -- entry point -------------------------------------------------------------------------------
def build_report(data_dir: str | Path, out_dir: str | Path, *, aoi_ids: Sequence[str] | None = None,
                 start: date | datetime | str | None = None, end: date | datetime | str | None = None,
                 registry: str | Path | None = None, store_url: str | None = None,
                 metrics_url: str | None = None) -> Path:
    """Build the static HTML report and return the path of its ``index.html``.

    Parameters
    ----------
    data_dir : path
        Where runs wrote cubes, products, ``metrics.sqlite`` and ``outbox/`` (read only).
    out_dir : path
        Report folder (created): ``index.html`` and ``<aoi_id>/index.html`` with figures.
    aoi_ids : sequence of str, optional
        AOIs to report on; default every AOI of the registry.
    start, end : date or datetime, optional
        Period shown (an end date includes its whole day); default everything.
    registry : path, optional
        AOI registry (default :func:`changedet.aoi.default_registry`).
    store_url : str, optional
        Where the runs put cubes and products, as for ``changedet run``: a local path or an
        fsspec URL (default ``$CHANGEDET_STORE_URL``, else ``data_dir``).
    metrics_url : str, optional
        Metric store, as for ``changedet run`` (default ``$CHANGEDET_METRICS_URL``, else
        ``<data_dir>/metrics.sqlite`` when it exists).

    Returns
    -------
    pathlib.Path
        ``<out_dir>/index.html``.

    Raises
    ------
    ReportError
        Missing data directory or an inverted period.
    ReportIncomplete
        (a ``ReportError``) Over the whole registry, after the report of its valid AOIs was
        written: AOI files of the registry are broken (named in the message, in ``broken``
        and on the index page). One analyst's typo in one site's file does not keep the
        other sites out of the report.
    AOIError
        A named AOI is unknown or invalid, or the registry holds no valid AOI.
    """
    from changedet.alerts.outbox import Outbox
    from changedet.aoi import list_aois, load_aoi, scan_registry
    from changedet.metrics import MetricStore, is_postgres_url, sqlite_path

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise ReportError(f"data directory {data_dir} does not exist; give the --data-dir your runs wrote to")
    s, e = _period(start, end)
    reg = Path(registry) if registry is not None else None
    broken: list[str] = []
    if aoi_ids:
        aois = [load_aoi(i, registry=reg) for i in aoi_ids]
    else:
        aois, problems = scan_registry(reg)
        if not aois:
            list_aois(reg)  # raises: the registry missing or empty, or every file broken (all named)
        broken = [str(problem) for problem in problems]
    out_dir.mkdir(parents=True, exist_ok=True)
    # The same resolution as the runs (RunConfig), so a report sees what `changedet run` wrote.
    from changedet.pipeline import RunConfig

    cfg = RunConfig(data_dir=data_dir, store_url=store_url, metrics_url=metrics_url)
    data = _Store(cfg.store_root())
    where = cfg.store_location()
    # A missing SQLite file means no run wrote metrics; opening it would create one.
    store = MetricStore(where) if is_postgres_url(where) or sqlite_path(where).exists() else None
    outbox = Outbox(data_dir / "outbox") if (data_dir / "outbox" / "outbox.sqlite").exists() else None
    try:
        # Figures of partly empty images compute on NaN; floating-point warnings about it
        # are silenced per thread (np.errstate), not through the process-wide warnings
        # filters, which other threads (a Dask worker, a flow's task runner) share.
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            views = [_build_aoi(a, data_dir, data, out_dir, s, e, store, outbox) for a in aois]
        index = _index(views, out_dir, s, e, broken)
    finally:
        if store is not None:
            store.close()
        if outbox is not None:
            outbox.close()
    if broken:
        lines = "\n".join(f"  - {b}" for b in broken)
        raise ReportIncomplete(f"report {index} written for {len(aois)} AOI(s); {len(problems_by_file(broken))} "
                               "AOI file(s) of the "
                               f"registry are broken and not in it:\n{lines}\nfix them (`changedet aois validate` "
                               "checks) and build the report again", index, broken)
    return index
