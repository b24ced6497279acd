"""Imagery an analyst already has: a folder or glob of GeoTIFF / COG / JPEG2000 files.

One file is one acquisition, in any CRS. Its acquisition time comes from a filename
pattern when one is configured, otherwise from the file's metadata (``TIFFTAG_DATETIME``,
the ``IMAGERY`` domain's ``ACQUISITIONDATETIME`` that GDAL reads from DigitalGlobe,
Pleiades and SPOT metadata, ``DATE_ACQUIRED``, ``SENSING_TIME``, ``datetime``...), and
last from a ``YYYYMMDD[THHMMSS]`` run of digits in the name. Pixels are reprojected
onto the AOI grid (bilinear, or the cell average for files more than 1.5 times finer than
the grid; nearest for classification and mask bands).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import math
import os
import re
import threading
import time as _time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr
from shapely.geometry import box

from changedet.errors import (GridError, RasterError, SceneUnreadable, SourceConfigError, SourceError,
                              SourceUnavailable)
from changedet.grid import GridSpec
from changedet.io import alpha_candidates
from changedet.sources.base import CLOUD_BAND, SCL_BAND, SceneRecord, check_range

log = logging.getLogger(__name__)

SUFFIXES = (".tif", ".tiff", ".jp2", ".j2k")
#: Metadata items holding an acquisition time, in the order they are trusted.
DATE_TAGS = (
    ("IMAGERY", "ACQUISITIONDATETIME"),
    ("", "ACQUISITIONDATETIME"),
    ("", "ACQUISITION_DATETIME"),
    ("", "SENSING_TIME"),
    ("", "DATE_ACQUIRED"),
    ("", "ACQUISITION_DATE"),
    ("", "datetime"),
    ("", "DATETIME"),
    ("", "TIFFTAG_DATETIME"),
)
# Years of the Earth-observation era only: an order or tile number such as
# ``order_10020304`` is not the date 1002-03-04.
_NAME_DATE = re.compile(r"(?<!\d)(19[6-9]\d|20\d{2})-?(\d{2})-?(\d{2})(?:[T_ -]?(\d{2}):?(\d{2}):?(\d{2}))?(?!\d)")
_CLASS_BANDS = (CLOUD_BAND, SCL_BAND)


def _parse_time(text: str) -> datetime | None:
    text = str(text).strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)  # TIFF 6.0 form
    if m:
        return datetime(*map(int, m.groups()), tzinfo=timezone.utc)
    try:
        import pandas as pd

        ts = pd.Timestamp(text.replace("Z", "+00:00"))
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


#: Old-format (pre-December 2016) Sentinel-2 product and granule names.
_OLD_S2 = re.compile(r"(?i)^S2[AB]_OPER_")


def _name_time(name: str, pattern: str | None) -> datetime | None:
    if pattern:
        m = re.search(pattern, name)
        if not m:
            return None
        groups = m.groupdict()
        text = groups.get("date") or m.group(0)
        if groups.get("time"):
            text = f"{text}T{groups['time']}"
        digits = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?", text)
        if digits:
            parts = [int(g) for g in digits.groups() if g is not None]
            try:
                return datetime(*parts, tzinfo=timezone.utc)
            except ValueError:
                return None
        return _parse_time(text)
    if _OLD_S2.search(name):
        # Sentinel-2 names before December 2016 (S2A_OPER_...): the first date is when the
        # ground segment processed the product, often months after sensing. Only the
        # product name's validity start (_V<sensing>) is the acquisition; tile and
        # granule names carry none, so they need metadata or a pattern.
        return _name_time(name, r"_V(?P<date>\d{8})T(?P<time>\d{6})")
    # The first run of digits that is a real date: a number before it (an order id, a
    # 20231399 typo) must not hide the date that follows.
    for m in _NAME_DATE.finditer(name):
        try:
            return datetime(*(int(g) for g in m.groups() if g is not None), tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


@dataclass
class LocalSource:
    """Files on disk as an imagery source.

    Parameters
    ----------
    path : str
        A folder (every ``.tif/.tiff/.jp2/.j2k`` in it) or a glob (``/data/vhr/*.tif``, ``**`` allowed).
    pattern : str, optional
        Regular expression on the file name giving the acquisition time: a named group
        ``date`` (``YYYYMMDD`` or ISO) and optionally ``time`` (``HHMMSS``). When given it
        wins over metadata.
    bands : sequence of str, optional
        Band names for the files' bands (otherwise their descriptions, else b1, b2...),
        in any case: they are upper-cased (``b04`` is ``B04``) as the other sources and
        the cloud masks name them. Name cloud masks ``CLM`` and Sentinel-2
        classifications ``SCL``.
    scale : float or "auto"
        Factor from stored values to reflectance; ``auto``: 1/255 for 8-bit files, 1e-4
        for 16-bit ones (the L2A convention), 1 for floating point. Mask bands are not scaled.
    sensor, platform : str
        Written to the scene records.
    resolution_m : float, optional
        Recorded resolution; default the file's pixel size (metres for projected CRSs).
    """

    path: str = "."
    pattern: str | None = None
    bands: Sequence[str] | None = None
    scale: float | str = "auto"
    sensor: str = "vhr"
    platform: str = "local"
    resolution_m: float | None = None
    name: str = "local"
    _headers: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.bands is None:
            return
        if isinstance(self.bands, str) or not all(isinstance(b, str) and b.strip() for b in self.bands):
            raise SourceConfigError(f"local source 'bands' {self.bands!r}: give a list of band names, one per "
                                    "band of the files, e.g. bands: [B02, B03, B04, B08, CLM]", option="bands")
        # Band names are looked up in upper case downstream (CLM, SCL, the s2cloudless
        # B01...B12): a lower-case b04 or clm would be scaled as reflectance or not found.
        names = [b.strip().upper() for b in self.bands]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SourceConfigError(f"local source 'bands' {list(self.bands)!r} names {', '.join(dup)} more than "
                                    "once (band names are case-insensitive); give each band of the files its own "
                                    "name", option="bands")
        self.bands = names

    def files(self) -> list[Path]:
        p = Path(str(self.path)).expanduser()
        if p.is_dir():
            found = [f for f in sorted(p.iterdir()) if f.suffix.lower() in SUFFIXES and f.is_file()]
        else:
            found = [Path(f) for f in sorted(glob.glob(str(p), recursive=True))
                     if Path(f).suffix.lower() in SUFFIXES and Path(f).is_file()]
        return found

    def header(self, path: Path, *, classify: bool = True) -> dict[str, Any]:
        """CRS, footprint, dtype and acquisition time of one file, without reading pixels.

        A header that cannot be read raises :class:`SceneUnreadable` or
        :class:`SourceUnavailable` (:func:`_read_failure`, which reads the start and end of
        the file through to tell them apart). With ``classify=False`` (a file ``search``
        skips whatever the class) it raises :class:`SourceUnavailable` without that read.
        A :class:`SceneUnreadable` header (two GDAL reads and the read-through agreed) is
        remembered for :data:`BROKEN_HEADER_TTL_S` by the file's path, size, mtime, inode and
        ctime (a restore with ``cp -p`` keeps size and mtime, not ctime), so a daily search
        does not read a broken file again and a worker looks again within the hour.
        """
        import rasterio
        from rasterio.warp import transform_bounds

        key = str(path.resolve())
        if key in self._headers:
            return self._headers[key]
        try:
            st = path.stat()
            stamp = (key, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        except OSError:
            stamp = None
        cached = _BROKEN_HEADERS.get(stamp) if stamp else None
        if cached is not None:
            known, at = cached
            if _time.monotonic() - at < BROKEN_HEADER_TTL_S:
                raise SceneUnreadable(str(known), reason=known.reason)
            _BROKEN_HEADERS.pop(stamp, None)

        def read() -> dict[str, Any]:
            with rasterio.open(path) as src:
                if src.crs is None:
                    raise SourceError(f"{path}: has no CRS (unknown coordinate system); georeference it "
                                      "(e.g. gdal_edit.py -a_srs EPSG:xxxx) or move it out of the folder")
                try:
                    bounds4326 = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
                except Exception as exc:
                    raise SourceError(f"{path}: its CRS cannot be transformed to lon/lat ({exc}); "
                                      "fix its georeferencing") from None
                tags = {(dom, k): v for dom in ("", "IMAGERY") for k, v in src.tags(ns=dom or None).items()}
                res = abs(src.transform.a) if src.crs.is_projected else None
                return {"crs": src.crs, "bounds4326": bounds4326, "dtype": src.dtypes[0], "count": src.count,
                        # Bands that may be an alpha mask, from metadata only (search reads every
                        # file's header: no pixel is read here); load() tells mask from NIR.
                        "alpha_labelled": len(alpha_candidates(src)),
                        "descriptions": list(src.descriptions), "tags": tags, "res": res}

        def message(exc: BaseException) -> str:
            return (f"{path}: cannot be read as a raster ({exc.__class__.__name__}: {exc}); check that it is a "
                    "complete GeoTIFF, COG or JPEG2000, or move it out of the folder")

        if not classify:
            try:
                info = read()
            except SourceError:
                raise
            except Exception as exc:  # rasterio raises several types for corrupt files
                raise SourceUnavailable(message(exc)) from exc
        else:
            try:
                # The header is at the start or the end of a TIFF: reading those through is enough
                # to see a file system error, and a multi-GB file is not read whole for its header.
                info = _read_or_type(path, read, message, through=_HEADER_READ_THROUGH)
            except SceneUnreadable as exc:
                if stamp is not None:
                    if len(_BROKEN_HEADERS) >= 4096:
                        _BROKEN_HEADERS.clear()
                    _BROKEN_HEADERS[stamp] = (exc, _time.monotonic())
                raise
        info["time"] = self._time(path, info["tags"])
        self._headers[key] = info
        return info

    def _time(self, path: Path, tags: dict) -> datetime:
        if self.pattern:
            t = _name_time(path.name, self.pattern)
            if t is None:
                raise SourceConfigError(f"{path}: its name does not match the date pattern {self.pattern!r}; "
                                        "fix the pattern (a regex with a named group 'date') or rename the file",
                                        option="pattern")
            return t
        for key in DATE_TAGS:
            if key in tags:
                t = _parse_time(tags[key])
                if t is not None:
                    return t
        t = _name_time(path.name, None)
        if t is None and _OLD_S2.search(path.name):
            raise SourceError(f"{path}: an old-format Sentinel-2 name (S2A_OPER_..., before December 2016) holds the "
                              "processing date, not the sensing date, and the file has no acquisition date in its "
                              "metadata; give the source a 'pattern' with a named group 'date' that matches the "
                              "sensing date in your file names, or set TIFFTAG_DATETIME")
        if t is None:
            raise SourceError(f"{path}: no acquisition date in its metadata (TIFFTAG_DATETIME, ACQUISITIONDATETIME...) "
                              "or name; give the source a 'pattern' with a named group 'date', e.g. "
                              r"'(?P<date>\d{8})'")
        return t

    def _record(self, path: Path, info: dict[str, Any], aoi) -> SceneRecord:
        st = path.stat()
        digest = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
        cc = info["tags"].get(("IMAGERY", "CLOUDCOVER"), info["tags"].get(("", "CLOUDCOVER")))
        try:
            cloud = float(cc)
            cloud = cloud * 100.0 if 0.0 <= cloud <= 1.0 and "." in str(cc) else cloud
        except (TypeError, ValueError):
            cloud = math.nan  # unknown until the cloud mask is computed
        res = float(self.resolution_m or info["res"] or 0.0)
        return SceneRecord(
            id=f"local-{path.stem}-{digest}", source=self.name, aoi_id=aoi.id, sensor=self.sensor,
            time=info["time"], platform=str(info["tags"].get(("IMAGERY", "SATELLITEID"), self.platform)),
            cloud_cover=cloud, footprint=box(*info["bounds4326"]), resolution_m=res,
            properties={"path": str(path.resolve())},
        )

    def search(self, aoi, start: date, end: date, *, sensor: str | None = None,
               max_cloud: float = 100.0, keep_time: Callable[[datetime], bool] | None = None,
               **_: Any) -> list[SceneRecord]:
        """The acquisitions over ``aoi`` on the UTC dates ``start`` to ``end``.

        ``keep_time``: with a ``pattern`` (the time comes from the name alone) a file whose
        name's time it refuses is skipped unread, so a broken file of another day cannot
        fail this search (:func:`changedet.pipeline.search_day` passes the site's local
        day). Without a pattern every file of the dates is read: the header's time wins.
        """
        check_range(start, end)
        files = self.files()
        if not files:
            raise SourceError(f"no GeoTIFF/COG/JPEG2000 files at {self.path!r}; check the source's 'path' "
                              "(a folder or a glob such as /data/vhr/*.tif)")
        out = []
        for f in files:
            named = _name_time(Path(f).name, self.pattern)
            ours = named is None or start <= named.date() <= end
            if self.pattern and (not ours or (named is not None and keep_time is not None
                                              and not keep_time(named))):
                continue  # the pattern gives the time from the name alone: no header to read
            try:
                # Typed only where the failure is raised: a file of another date is skipped either way.
                info = self.header(f, classify=ours)
            except (SceneUnreadable, SourceUnavailable) as exc:
                # A file cut short inside its header (an interrupted copy, a full disk) must not
                # fail every other date's search: it fails only the date its name gives (one
                # whose name gives none may be of any date, so it still fails every search).
                # (No CRS, a name off the pattern: the folder or the entry needs fixing, raised as is.)
                if ours:
                    raise
                log.warning("%s: skipped, its header cannot be read (%s); acquisitions of other dates are "
                            "searched", f, exc)
                continue
            if not (start <= info["time"].date() <= end):
                continue
            rec = self._record(f, info, aoi)
            if not rec.footprint.intersects(aoi.polygon):
                continue
            if not math.isnan(rec.cloud_cover) and rec.cloud_cover > max_cloud:
                continue
            out.append(rec)
        return sorted(out, key=lambda r: r.time)

    def _check_band_count(self, path: Path, info: dict[str, Any]) -> None:
        """Raise :class:`SourceConfigError` when ``bands:`` names neither every band of ``path`` nor its data bands.

        Data bands are those :func:`changedet.io.read_raster` returns: a band GDAL labels
        alpha is a mask only if its pixels say so (a 4-band 8-bit file's NIR is labelled
        alpha too), so this reads a sample of such a band; it runs in ``load``, where the
        file is read anyway, never in ``search``. A file that fails here is typed as a
        failed read (:func:`_read_failure`).
        """
        data_count = info["count"]
        if info.get("alpha_labelled") and len(self.bands) == info["count"] - info["alpha_labelled"]:
            import rasterio

            from changedet.io import data_band_indexes

            def read() -> int:
                with rasterio.open(path) as src:
                    return len(data_band_indexes(src))

            data_count = _read_or_type(path, read, lambda exc: (
                f"{path}: cannot be read as a raster ({exc.__class__.__name__}: {exc}); check that it is a "
                "complete GeoTIFF, COG or JPEG2000"))
        if len(self.bands) not in (info["count"], data_count):
            # Every file of the folder fails alike: the entry needs fixing, not the scene.
            raise SourceConfigError(
                f"{path}: has {data_count} bands but {len(self.bands)} band names were given "
                f"({list(self.bands)}); give one name per band of the files in the entry's 'bands:' option, "
                "or remove it", option="bands")

    def _scale(self, dtype: str) -> float:
        if self.scale != "auto":
            return float(self.scale)
        if self.sensor == "s1":
            return 1.0
        kind = np.dtype(dtype)
        if kind == np.uint8:
            return 1.0 / 255.0
        if kind.kind in "ui":
            return 1e-4
        return 1.0

    def load(self, scene: SceneRecord, grid: GridSpec, **_: Any) -> xr.DataArray:
        """The file's pixels on ``grid``, reflectance bands scaled, masks kept as classes.

        Raises
        ------
        SourceUnavailable
            The file is gone (a share not mounted) or the file system failed to read it
            (an I/O, permission or stale-handle error): a later try may succeed.
        SceneUnreadable
            The file is there and the file system reads it, but it is no raster GDAL can
            read (corrupt, cut short), or it holds no pixel over the grid's extent.
        SourceConfigError
            The entry's ``bands:`` list does not fit the file's bands.
        """
        from changedet.io import read_raster, reproject_to

        path = Path(scene.properties["path"])
        if not path.is_file():
            raise SourceUnavailable(f"{path}: the file of scene {scene.id} is gone (a share not mounted, the file "
                                    "moved or renamed); mount the share or put the file back, then run the day again")
        info = self.header(path)
        if self.bands and len(self.bands) != info["count"]:
            self._check_band_count(path, info)
        # read_raster reads lazily-opened files fully; a truncated file fails here.
        da = _decoded(path, tuple(self.bands or ()), lambda: _read_or_type(
            path, lambda: read_raster(path, bands=list(self.bands) if self.bands else None), str, catch=RasterError))
        names = [str(b) for b in da["band"].values]
        scale = self._scale(info["dtype"])
        classes = [b for b in names if b in _CLASS_BANDS]
        values = [b for b in names if b not in _CLASS_BANDS]
        # A file much finer than the grid (0.5 m imagery on a 10 m grid) is averaged over
        # each grid cell; bilinear would read 4 of its 400 pixels per cell, i.e. noise.
        fine = info["res"] is not None and float(info["res"]) * 1.5 < float(grid.resolution)
        parts = []
        for group, source, resampling in ((values, da.sel(band=values) * scale if values else None,
                                           "average" if fine else "bilinear"),
                                          (classes, da.sel(band=classes) if classes else None, "nearest")):
            if not group:
                continue
            try:
                parts.append(reproject_to(source, grid, resampling=resampling))
            except GridError:
                if not _overlaps(info["bounds4326"], grid):
                    raise SceneUnreadable(f"{path}: does not cover the AOI {scene.aoi_id} grid; pick files over the "
                                          "site or check their CRS", reason="the file does not cover the site") \
                        from None
                # The file reaches the grid but holds only no-data there (the no-data edge of a
                # swath or tile): that is an acquisition without pixels over the site, which
                # fetch records as skipped, not a broken file that should stop the whole fetch.
                parts.append(grid.attach(np.full((len(group),) + grid.shape, np.nan, "float32"), bands=group))
        out = xr.concat(parts, dim="band") if len(parts) > 1 else parts[0]
        out = out.sel(band=names).astype("float32")
        out.attrs = {"scene_id": scene.id, "sensor": scene.sensor, "platform": scene.platform}
        return out


#: OS errors of a file system that may pass (network shares, FUSE, permissions an admin fixes).
_PASSING_ERRNOS = tuple(getattr(errno, name) for name in (
    "EIO", "EACCES", "EPERM", "ESTALE", "ETIMEDOUT", "EAGAIN", "EINTR", "ENOENT", "ENOTCONN", "EHOSTDOWN",
    "EHOSTUNREACH", "ENETDOWN", "ENETUNREACH", "ECONNRESET", "ECONNABORTED", "ECONNREFUSED", "ENODEV", "ENXIO",
    "EBUSY", "ENOLCK", "EREMOTEIO", "ECOMM") if hasattr(errno, name))


#: Bytes read through from each end of a file whose header GDAL cannot read (see LocalSource.header).
_HEADER_READ_THROUGH = 16 << 20

#: Seconds a header found unreadable is not read again (LocalSource.header): long-lived
#: workers look at the file again after this, whatever its stat says.
BROKEN_HEADER_TTL_S = 3600.0

#: SceneUnreadable header errors and when (time.monotonic()) they were found, by
#: (resolved path, size, mtime_ns, inode, ctime_ns), for the process.
_BROKEN_HEADERS: dict[tuple[str, int, int, int, int], tuple[SceneUnreadable, float]] = {}


#: Most bytes of decoded files :func:`_decoded` keeps (all entries together), and how many files.
DECODED_CACHE_BYTES = 512 << 20
DECODED_CACHE_FILES = 2
#: Seconds a decoded file is served again: the daily run reads it twice within a minute.
DECODED_CACHE_TTL_S = 300.0

#: Decoded files (read_raster's DataArray, read-only), when they were read and the thread
#: that read them, by (resolved path, size, mtime_ns, inode, ctime_ns, band names); oldest first.
_DECODED: OrderedDict[tuple, tuple[xr.DataArray, float, int]] = OrderedDict()
_DECODED_LOCK = threading.Lock()


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _decoded(path: Path, bands: tuple[str, ...], read: Callable[[], xr.DataArray]) -> xr.DataArray:
    """``read()``'s decoded file, or the same DataArray from a read of the same file moments ago.

    The daily run loads a scene on the site grid and then, for a small site, on the
    registration window around it: the file was decoded twice. The decoded pixels are kept
    (read-only) for :data:`DECODED_CACHE_TTL_S`, at most :data:`DECODED_CACHE_FILES` files
    and :data:`DECODED_CACHE_BYTES` in all (a larger file is not kept), by the file's path,
    size, mtime, inode and ctime: a file replaced or rewritten is read again. Every load
    resamples from the same decoded values, so its pixels are the same as without the cache.
    """
    before = _stamp(path)
    key = before + (bands,) if before is not None else None
    now = _time.monotonic()
    if key is not None:
        with _DECODED_LOCK:
            for k in [k for k, (_, at, _t) in _DECODED.items() if now - at > DECODED_CACHE_TTL_S]:
                del _DECODED[k]
            hit = _DECODED.get(key)
            if hit is not None:
                _DECODED.move_to_end(key)
                return hit[0]
    da = read()
    size = int(da.nbytes)
    # Kept only when the file did not change while it was read (its stat is the key).
    if key is None or size > DECODED_CACHE_BYTES or _stamp(path) != before:
        return da
    da.values.flags.writeable = False  # shared by later loads: nobody may write into it
    with _DECODED_LOCK:
        _DECODED[key] = (da, now, threading.get_ident())
        _DECODED.move_to_end(key)
        while len(_DECODED) > DECODED_CACHE_FILES or sum(int(d.nbytes) for d, _, _t in _DECODED.values()) \
                > DECODED_CACHE_BYTES:
            _DECODED.popitem(last=False)
    return da


def clear_decoded_cache(*, this_thread: bool = False) -> None:
    """Forget the decoded files kept by :func:`_decoded` (frees their memory now).

    ``this_thread``: only those the calling thread read, and any past
    :data:`DECODED_CACHE_TTL_S` (a day ending on one worker thread must not drop the file
    another thread's day is about to read again).
    """
    with _DECODED_LOCK:
        if not this_thread:
            _DECODED.clear()
            return
        me, now = threading.get_ident(), _time.monotonic()
        for k in [k for k, (_, at, t) in _DECODED.items() if t == me or now - at > DECODED_CACHE_TTL_S]:
            del _DECODED[k]


def _read_or_type(path: Path, read: Callable[[], Any], message: Callable[[BaseException], str], *,
                  catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                  through: int | None = None) -> Any:
    """``read()``'s result; a failure of it raised typed (:func:`_read_failure`).

    A failure that :func:`_read_failure` finds to be the file's own (its bytes read through
    with plain Python, GDAL cannot decode them) is tried once more with a fresh ``read()``
    first: libtiff reports a share's passing EIO as the short read of a cut file, and when
    the share has recovered by the read-through only a second GDAL read tells the two
    apart. The second failure is classified on its own: the error is
    :class:`SceneUnreadable` only when both reads and the read-through say so (a share's
    EIO on the second read is :class:`SourceUnavailable`). changedet's own
    :class:`SourceError` (no CRS, a name off the pattern) passes unchanged.
    """
    try:
        return read()
    except SourceError:
        raise
    except catch as exc:  # rasterio raises several types for corrupt files
        err = _read_failure(path, exc, message(exc), through=through)
        if not isinstance(err, SceneUnreadable):
            raise err  # noqa: B904  (its __cause__ is set: the library error)
    try:
        out = read()
    except SourceError:
        raise
    except catch as exc2:
        err2 = _read_failure(path, exc2, message(exc2), through=through)
        if not isinstance(err2, SceneUnreadable):
            raise err2  # noqa: B904  (the second read met the file system's error: it may pass)
        raise err from err.__cause__  # the same verdict twice on bytes the file system serves: the file's own
    log.warning("%s: GDAL failed to read it once and read it the second time (a passing error of the file "
                "system reported as a short read)", path)
    return out


def _read_failure(path: Path, exc: BaseException, message: str, *, through: int | None = None) -> SourceError:
    """The typed error for a file that could not be read: passing or the file's own, for good.

    ``exc`` is rasterio's error or changedet's :class:`RasterError` around it (whose
    context is rasterio's). May pass (:class:`SourceUnavailable`): the file is gone or
    not readable by this process, an ``OSError`` with an errno or a
    ``Permission``/``Timeout``/``Connection`` error in the chain, GDAL's file-I/O error
    class, or GDAL's text carrying the OS's own message for such an errno (GDAL reports a
    share's EIO as text only: ``os.strerror`` gives the words, in this OS's language).
    Last, the file is read through with plain Python (with ``through``, only its first and
    last ``through`` bytes, where a TIFF's header lives): an ``OSError`` there is the file
    system's too. A file that reads through but that GDAL cannot decode is corrupt or
    cut short: :class:`SceneUnreadable`. The library error is kept as ``__cause__`` (a
    local path carries no secret).
    """
    chain, e = [], exc
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    underlying = next((c for c in chain if not isinstance(c, (RasterError, SourceError))), exc)

    def passing(why: str, cause: BaseException = underlying) -> SourceUnavailable:
        out = SourceUnavailable(f"{message}; {why}: it may pass, run the day again (a share's mount, network "
                                "or permissions)")
        out.__cause__ = cause
        return out

    if not path.is_file():
        return passing("the file is gone")
    if not os.access(path, os.R_OK):
        return passing("this process may not read it")
    words = [os.strerror(n).lower() for n in _PASSING_ERRNOS]
    for c in chain:  # typed first: the exception that carries the errno becomes the cause
        if isinstance(c, (PermissionError, FileNotFoundError, TimeoutError, ConnectionError)) or (
                isinstance(c, OSError) and isinstance(c.errno, int) and c.errno != 0):
            return passing(f"an error of the file system ({c.__class__.__name__})", c)
        if c.__class__.__name__ == "CPLE_FileIOError":
            return passing("GDAL reported a file I/O error", c)
    if any(w in str(c).lower() for c in chain for w in words):
        return passing("the file system reported an error")
    try:
        with open(path, "rb") as fh:
            if through is None or path.stat().st_size <= 2 * through:
                while fh.read(8 << 20):
                    pass
            else:  # a header's failure: where a TIFF's header lives, the start and the end
                fh.read(through)
                fh.seek(-through, os.SEEK_END)
                fh.read(through)
    except OSError as os_exc:
        return passing(f"reading it through failed ({os_exc.__class__.__name__}: {os_exc})", os_exc)
    out = SceneUnreadable(message, reason="the file is there but cannot be read")
    out.__cause__ = underlying
    return out


def _overlaps(bounds4326: tuple[float, float, float, float], grid: GridSpec) -> bool:
    """Whether a file's lon/lat bounds reach the grid's extent (both in degrees, EPSG:4326)."""
    from rasterio.warp import transform_bounds

    gx0, gy0, gx1, gy1 = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)
    fx0, fy0, fx1, fy1 = bounds4326
    return fx0 < gx1 and gx0 < fx1 and fy0 < gy1 and gy0 < fy1


__all__ = ["LocalSource"]
