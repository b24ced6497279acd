"""STAC catalogues (Earth Search by default) through pystac-client and odc-stac.

Search goes through ``pystac_client`` (item search, paging followed); items are grouped
by *solar day* (UTC time shifted by the item's longitude, as ``odc.stac`` does), so the
tiles of one overpass make one scene, and loaded with ``odc.stac.load(...,
groupby="solar_day")`` straight onto the AOI grid (the ``GeoBox`` of the
:class:`~changedet.grid.GridSpec`), bilinear for reflectance and nearest for the scene
classification. Digital numbers become reflectance with each asset's ``raster:bands``
scale and offset (Earth Search L2A since processing baseline 04.00: 1e-4 and −0.1),
nodata becomes NaN, and ``SCL`` is returned as is for :mod:`changedet.cloudmask`.

No credentials are needed for Earth Search; ``headers`` are sent as given and never
logged or put in error messages.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping

import numpy as np
import xarray as xr
from shapely.geometry import mapping, shape
from shapely.ops import unary_union

from changedet.errors import SceneUnreadable, SourceConfigError, SourceError, SourceUnavailable
from changedet.grid import GridSpec
from changedet.sources.base import SCL_BAND, SceneRecord, check_range

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
#: Times a scene's items are fetched again from the catalogue (fresh hrefs and signatures)
#: after its assets answered HTTP 403 or 404, before the load gives up for this run.
REFETCH_TRIES = 2
#: Seconds one probe of an asset URL (a one-byte range request) may wait on the socket.
PROBE_TIMEOUT_S = 5.0
#: Probes run at once (threads): the 5 assets of an S2 item fit in one wave.
PROBE_WORKERS = 8
#: Loggers whose records (odc logs each failed read at ERROR with its full URL) lose URL
#: queries while a load runs: a re-fetched item's signature is valid, unlike the expired one.
_LIBRARY_LOGGERS = ("odc", "odc.stac", "odc.loader", "odc.loader._rio", "odc.geo", "rasterio", "rasterio._env",
                    "rasterio._base", "rasterio._io", "rasterio.env", "rasterio._filepath")
#: Output band name -> asset key of Earth Search's sentinel-2-l2a collection.
S2_L2A_ASSETS: Mapping[str, str] = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}


def solar_day(t: datetime, lon: float) -> date:
    """Local solar date of a UTC time at longitude ``lon`` (degrees), as odc-stac groups it."""
    return (t.astimezone(timezone.utc) + timedelta(hours=lon / 15.0)).date()


@dataclass
class StacSource:
    """A STAC API collection as an imagery source.

    Parameters
    ----------
    url : str
        API root (default Earth Search v1).
    collection : str
        Collection id (default ``sentinel-2-l2a``).
    assets : mapping
        Output band name -> asset key; default blue/green/red/nir as B02/B03/B04/B08.
    scl_asset : str, optional
        Asset with the Sentinel-2 scene classification (loaded as band ``SCL``); None for none.
    sensor : str
        Written to the scene records (``s2`` by default).
    headers : mapping, optional
        Extra HTTP headers for the API (e.g. an API key); never logged.
    max_items : int
        Upper bound on items a search may return (a guard against an unbounded query).
    """

    url: str = EARTH_SEARCH
    collection: str = "sentinel-2-l2a"
    assets: Mapping[str, str] = field(default_factory=lambda: dict(S2_L2A_ASSETS))
    scl_asset: str | None = "scl"
    sensor: str = "s2"
    headers: Mapping[str, str] | None = None
    max_items: int = 2000
    resolution_m: float = 10.0
    name: str = "stac"

    def _client(self):
        import pystac_client

        try:
            return pystac_client.Client.open(self.url, headers=dict(self.headers or {}))
        except Exception as exc:  # network, HTTP and JSON errors all land here
            raise SourceError(f"cannot open the STAC API at {self.url} ({exc.__class__.__name__}); "
                              "check the URL and the network") from None

    def search(self, aoi, start: date, end: date, *, sensor: str | None = None,
               max_cloud: float = 100.0, **_: Any) -> list[SceneRecord]:
        """One record per solar day with items over the AOI, cloud filter on ``eo:cloud_cover``."""
        check_range(start, end)
        client = self._client()
        try:
            search = client.search(collections=[self.collection], intersects=mapping(aoi.polygon),
                                   datetime=f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z",
                                   max_items=self.max_items, limit=100)
            items = list(search.items())
        except Exception as exc:
            raise SourceError(f"STAC search of {self.collection} at {self.url} failed ({exc.__class__.__name__}: "
                              f"{_without_queries(str(exc))[:200]}); check the collection id and retry later") from None
        groups: dict[date, list] = defaultdict(list)
        for item in items:
            cc = item.properties.get("eo:cloud_cover")
            if cc is not None and float(cc) > max_cloud:
                continue
            lon = shape(item.geometry).centroid.x if item.geometry else 0.0
            t = item.datetime or datetime.fromisoformat(item.properties["start_datetime"].replace("Z", "+00:00"))
            groups[solar_day(t, lon)].append(item)
        # Asset keys any item of the search has: a key missing from one scene's items but
        # present elsewhere is that scene's defect, not a wrong 'assets' setting (load).
        collection_assets = sorted({k for i in items for k in i.assets})
        out = []
        for day, group in sorted(groups.items()):
            group.sort(key=lambda i: i.id)
            times = [i.datetime for i in group]
            covers = [float(i.properties["eo:cloud_cover"]) for i in group if "eo:cloud_cover" in i.properties]
            platforms = sorted({str(i.properties.get("platform", self.collection)) for i in group})
            tiles = hashlib.sha1("|".join(i.id for i in group).encode()).hexdigest()[:8]
            out.append(SceneRecord(
                id=f"stac-{self.collection}-{day.isoformat()}-{tiles}", source=self.name, aoi_id=aoi.id,
                sensor=self.sensor, time=min(times).astimezone(timezone.utc), platform="+".join(platforms),
                cloud_cover=float(np.mean(covers)) if covers else float("nan"),
                footprint=unary_union([shape(i.geometry) for i in group]), resolution_m=self.resolution_m,
                properties={"items": [i.to_dict(transform_hrefs=False) for i in group], "solar_day": day.isoformat(),
                            "item_ids": [i.id for i in group], "stac_url": self.url,
                            "collection_assets": collection_assets},
            ))
        return out

    def load(self, scene: SceneRecord, grid: GridSpec, **_: Any) -> xr.DataArray:
        """The scene's bands (reflectance) and ``SCL`` on ``grid``; NaN where no item has data (all
        NaN when none has data over the grid).

        Raises
        ------
        SourceConfigError
            (option ``assets``) The items lack an asset key of ``assets``/``scl_asset``
            that no item of the search had either (a wrong setting).
        SceneUnreadable
            The catalogue no longer lists an item (see :meth:`_load_refetched`), or the
            scene's items lack an asset key other items of the search have.
        SourceUnavailable
            Any other load failure: a 5xx, a dropped connection, a catalogue that does not
            answer, or an asset answering HTTP 403/404 even after its item was fetched again
            (fresh href and signature); it may pass.
        """
        import odc.stac
        import pystac
        from odc.geo.geobox import GeoBox

        items = [pystac.Item.from_dict(d) for d in scene.properties["items"]]
        keys = dict(self.assets)
        if self.scl_asset:
            keys[SCL_BAND] = self.scl_asset
        missing = sorted({k for i in items for k in keys.values() if k not in i.assets})
        if missing:
            seen = scene.properties.get("collection_assets")
            if seen is not None and set(missing) <= set(seen):
                # Other items of the search have these keys: the entry is right and this
                # scene's item is defective (the other scenes read), not the setting.
                raise SceneUnreadable(f"scene {scene.id}: its items lack the assets {missing}, which other items of "
                                      f"{self.collection} have; this scene cannot be read (the others are)",
                                      reason=f"items lack the assets {missing}")
            raise SourceConfigError(f"scene {scene.id}: items lack the assets {missing}; set the source's 'assets' "
                                    f"to the keys this collection has", option="assets")
        geobox = GeoBox(grid.shape, grid.transform, grid.crs.to_wkt())
        odc.stac.configure_rio(cloud_defaults=True)
        first = None
        try:
            ds = self._odc_load(items, keys, geobox)
        except Exception as exc:  # noqa: BLE001  (odc, rasterio and HTTP errors alike; judged below)
            # The cause is not kept and URLs lose their query: signed URLs carry tokens.
            first = f"{exc.__class__.__name__}: {_without_queries(str(exc))[:200]}"
        if first is not None:
            # Outside the except block: the library's error (it may quote a signed URL) must
            # not ride along as the context of what is raised.
            ds, items = self._load_refetched(scene, items, keys, geobox, first)
        if ds.sizes.get("time", 0) != 1:
            raise SourceError(f"scene {scene.id}: its items span {ds.sizes.get('time', 0)} solar days, expected 1")
        planes, names = [], []
        for out_name, key in keys.items():
            raw = ds[key].isel(time=0).values
            nodata = ds[key].attrs.get("nodata")
            values = raw.astype("float32")
            invalid = np.zeros(raw.shape, bool) if nodata is None else (raw == nodata)
            if np.issubdtype(raw.dtype, np.floating):
                invalid |= np.isnan(raw)
            if out_name != SCL_BAND:
                scale, offset = _scale_offset(items[0], key)
                values = values * scale + offset
            values[invalid] = np.nan
            planes.append(values)
            names.append(out_name)
        data = np.stack(planes)
        # All NaN (the site in the no-data part of the tiles) is returned as such: fetch
        # records the scene as skipped for "no data over the site" instead of failing on it
        # at every run.
        return grid.attach(data, bands=names, name="reflectance",
                           attrs={"scene_id": scene.id, "sensor": scene.sensor, "platform": scene.platform})


    def _odc_load(self, items: list, keys: Mapping[str, str], geobox):
        import odc.stac

        with _queries_stripped_from_library_logs():
            return odc.stac.load(items, bands=list(keys.values()), geobox=geobox, groupby="solar_day",
                                 resampling={"*": "bilinear",
                                             **({self.scl_asset: "nearest"} if self.scl_asset else {})},
                                 fail_on_error=True)

    def _load_refetched(self, scene: SceneRecord, items: list, keys: Mapping[str, str], geobox, first: str):
        """``(dataset, items)`` of a scene whose assets failed to load, from its items fetched again.

        A 403 of an asset is often an expired signature and a 404 may be a signed URL's
        too. Each asset URL is probed (a one-byte range request, :func:`_first_refused_or_missing`):
        none answering 403 or 404 (a 5xx, a dropped connection, an asset that is there but
        unreadable this time) is :class:`SourceUnavailable` at once. Otherwise the items are
        fetched again from the catalogue (fresh hrefs and signatures, up to
        :data:`REFETCH_TRIES` times) and loaded, which heals an expired signature in the
        same run. A 403 or 404 still met after that is :class:`SourceUnavailable` too: within
        one run it cannot be told from a passing refusal (a rate limiter, a WAF or CDN, an
        asset not yet replicated, a probe lacking the loader's GDAL auth), so the flows retry
        it and a later run may read the scene. Only an item the catalogue no longer lists is
        :class:`SceneUnreadable` (in :meth:`_refetch`). A catalogue that does not answer is
        :class:`SourceUnavailable`. Messages name assets without their URL's query.
        """
        def unavailable(why: str) -> SourceUnavailable:
            return SourceUnavailable(f"scene {scene.id}: loading its assets failed ({first}){why}; it may pass: "
                                     "retry the date later")

        met = _first_refused_or_missing(items, keys)
        if met is None:
            raise unavailable("") from None
        for attempt in range(1, REFETCH_TRIES + 1):
            items = self._refetch(scene, items)
            try:
                return self._odc_load(items, keys, geobox), items
            except Exception as exc:  # noqa: BLE001
                first = f"{exc.__class__.__name__}: {_without_queries(str(exc))[:200]}"
            met = _first_refused_or_missing(items, keys)
            if met is None:
                raise unavailable(f", and again after the items were fetched again (try {attempt})") from None
            if met[3] == 404:
                break  # a fresh href answering 404: a third search would give the same href
        i, k, href, status = met
        what = "refused (HTTP 403)" if status == 403 else "missing (HTTP 404)"
        check = ("check the access to the assets: the signing or token service, rate limits, an auth header "
                 "GDAL needs (GDAL_HTTP_HEADERS)" if status == 403 else
                 "check whether the item's files were withdrawn from the archive (a newly published item's "
                 "files may still be replicating)")
        raise SourceUnavailable(
            f"scene {scene.id}: asset '{k}' of item {i} was {what} at {_without_queries(href)} even after the item "
            f"was fetched again from {self.url} ({attempt} time(s), fresh href and signature); it may pass (retry the "
            f"date later); if it lasts, {check}") from None

    def _refetch(self, scene: SceneRecord, items: list) -> list:
        """The scene's items as the catalogue gives them now (fresh asset hrefs and signatures)."""
        import pystac

        ids = [i.id for i in items]
        times = [i.datetime for i in items if i.datetime is not None] or [scene.time]
        lo, hi = min(times) - timedelta(hours=1), max(times) + timedelta(hours=1)
        client = self._client()
        try:
            # By id, within the items' time: a catalogue that ignores the ids filter returns
            # that hour's items only, and those are matched by id below.
            search = client.search(collections=[self.collection], ids=ids,
                                   datetime=f"{lo.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}/"
                                            f"{hi.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}",
                                   max_items=self.max_items, limit=100)
            found = {i.id: i for i in search.items() if i.id in ids}
        except Exception as exc:  # noqa: BLE001
            raise SourceUnavailable(f"scene {scene.id}: its items could not be fetched again from {self.url} "
                                    f"({exc.__class__.__name__}: {_without_queries(str(exc))[:200]}); it may pass: "
                                    "retry the date later") from None
        lost = [i for i in ids if i not in found]
        if lost:
            raise SceneUnreadable(f"scene {scene.id}: the catalogue {self.url} no longer lists item(s) "
                                  f"{', '.join(lost)} of collection {self.collection}",
                                  reason="its items were withdrawn from the catalogue") from None
        return [pystac.Item.from_dict(found[i].to_dict(transform_hrefs=False)) for i in ids]


def _first_refused_or_missing(items: list, keys: Mapping[str, str]) -> tuple[str, str, str, int] | None:
    """``(item id, asset key, href, 403 or 404)`` of an asset a load reads that is refused or
    missing, or None when no probe answers so.

    The probes run in parallel (:data:`PROBE_WORKERS` threads) and the first 403/404 ends the
    wait. Worst case, when no host answers: ``ceil(assets / PROBE_WORKERS)`` waves of
    :data:`PROBE_TIMEOUT_S` each, 5 s for one S2 item (5 assets), 10 s for a scene of two
    tiles; a load probes at most ``1 + REFETCH_TRIES`` times (15 s and 30 s). The timeout
    bounds each socket wait, so a host trickling bytes can stretch one probe (it reads 1 byte).
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    assets = [(item.id, key, item.assets[key].href) for item in items for key in keys.values()]
    # Read here, not in the probe threads: GDAL options set in this thread are thread-local.
    headers = _loader_headers()
    pool = ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, max(len(assets), 1)))
    try:
        futures = {pool.submit(_http_status, href, headers): (i, k, href) for i, k, href in assets}
        for future in as_completed(futures):
            status = future.result()
            if status in (403, 404):
                return (*futures[future], status)
        return None
    finally:
        # Probes still queued are dropped; running ones end within their timeout.
        pool.shutdown(wait=False, cancel_futures=True)


def _gdal_option(name: str) -> str | None:
    """A GDAL configuration option as the asset loader sees it (set in GDAL, else the environment)."""
    import os

    try:
        from rasterio._env import get_gdal_config

        value = get_gdal_config(name, normalize=False)
    except Exception:  # noqa: BLE001  (no rasterio binding: GDAL reads the environment)
        value = None
    return value if value is not None else os.environ.get(name)


def _loader_headers() -> dict[str, str]:
    """The HTTP headers GDAL sends with every asset request of a load, from its configuration.

    The loads read assets through GDAL (``/vsicurl/``), which adds the headers of
    ``GDAL_HTTP_HEADERS`` (``"Key: value"`` entries separated by commas, values with a
    comma in double quotes, or by CRLF; see :func:`_gdal_header_entries`) and of the
    ``GDAL_HTTP_HEADER_FILE`` (one ``Key: value`` a line), and an ``Authorization`` from
    ``GDAL_HTTP_USERPWD`` (preemptive Basic only when ``GDAL_HTTP_AUTH`` is unset or
    ``BASIC``, as curl does; with ANY, ANYSAFE, DIGEST, NTLM or NEGOTIATE curl sends no
    credentials before the server asks, so neither does the probe) or ``GDAL_HTTP_BEARER``
    (``GDAL_HTTP_AUTH=BEARER``). An explicit Authorization header, in any letter case, wins.
    A probe without them is refused (403) by a protected archive that the load itself can
    read, and that refusal costs the scene a fetch of its items again and a retry. Cookies
    and ``.netrc`` are not read. The values are secrets: never logged, and never sent to
    another host on a redirect (:func:`_http_status`).
    """
    import base64

    headers: dict[str, str] = {}
    spelled: dict[str, str] = {}  # lower-case name -> the key used: header names ignore case

    def add(line: str) -> None:
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key:
            old = spelled.setdefault(key.lower(), key)
            headers[old] = value.strip()  # the later one wins, as in curl's list

    path = _gdal_option("GDAL_HTTP_HEADER_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    add(line)
        except OSError:
            pass  # GDAL fails the load on it; the probe goes without
    text = _gdal_option("GDAL_HTTP_HEADERS")
    if text:
        for entry in _gdal_header_entries(text):
            add(entry)
    if "authorization" in spelled:
        return headers  # an Authorization given explicitly replaces the one curl makes from the options
    auth = (_gdal_option("GDAL_HTTP_AUTH") or "").strip().upper()
    bearer, userpwd = _gdal_option("GDAL_HTTP_BEARER"), _gdal_option("GDAL_HTTP_USERPWD")
    if auth == "BEARER" and bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    elif userpwd and auth in ("", "BASIC"):
        headers["Authorization"] = "Basic " + base64.b64encode(userpwd.encode()).decode()
    return headers


def _gdal_header_entries(text: str) -> list[str]:
    """The header lines of a ``GDAL_HTTP_HEADERS`` value, split as GDAL splits it (cpl_http.cpp).

    CRLF separates the lines when there is one. Otherwise GDAL's compatibility rule: a value
    with a comma and no ``:`` after its first comma is ONE header (``Accept: text/plain,
    application/json``); else a comma list (:func:`_comma_list`).
    """
    if "\r\n" in text:
        return text.split("\r\n")
    comma = text.find(",")
    if comma >= 0 and ":" not in text[comma:]:
        return [text]
    return _comma_list(text)


def _comma_list(text: str) -> list[str]:
    """GDAL's comma-separated list (CSLTokenizeString2 with CSLT_HONOURSTRINGS): a double-quoted
    part keeps its commas and loses its quotes; in it, a backslash before ``"`` or ``\\``
    escapes that character, and any other backslash is kept as it is."""
    entries, current, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\" and i + 1 < len(text) and text[i + 1] in ('"', "\\"):
            current.append(text[i + 1])
            i += 1
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            entries.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    entries.append("".join(current))
    return entries


#: Request headers that carry credentials: dropped when a redirect leaves the first origin.
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")


def _same_origin(a: str, b: str) -> bool:
    """Whether URLs ``a`` and ``b`` have the same scheme, host and port (default ports filled in)."""
    from urllib.parse import urlsplit

    ua, ub = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}

    def port(u):
        try:
            return u.port or default.get(u.scheme.lower())
        except ValueError:  # a malformed port: not the same origin
            return None

    return (ua.scheme.lower() == ub.scheme.lower() and (ua.hostname or "") == (ub.hostname or "")
            and port(ua) is not None and port(ua) == port(ub))


def _credential_safe_opener():
    """A urllib opener that follows redirects like curl without CURLOPT_UNRESTRICTED_AUTH.

    urllib copies every request header to the redirect target whatever its host; libcurl
    (GDAL's loader) sends Authorization and Cookie only to the first URL's host. A protected
    archive often answers an asset URL with a 302 to a CDN or a presigned bucket: the
    password must not go there. Credentials are dropped once a redirect leaves the first
    URL's origin (scheme, host, port), and stay dropped for the rest of the chain.
    """
    import urllib.request

    class _Redirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None:
                first = getattr(req, "_changedet_first_url", req.full_url)
                new._changedet_first_url = first
                if not _same_origin(first, new.full_url) or getattr(req, "_changedet_dropped", False):
                    new._changedet_dropped = True
                    for name in list(new.headers):
                        if name.lower() in _CREDENTIAL_HEADERS:
                            del new.headers[name]
                    for name in list(new.unredirected_hdrs):
                        if name.lower() in _CREDENTIAL_HEADERS:
                            del new.unredirected_hdrs[name]
            return new

    return urllib.request.build_opener(_Redirect)


def _http_status(href: str, headers: Mapping[str, str] | None = None) -> int | None:
    """The HTTP status of a one-byte range request for ``href``; None when not HTTP(S) or no answer.

    A GET, not a HEAD: a presigned S3 URL is signed for GET, and HEAD answers 403 to it.
    ``headers`` (the loader's, :func:`_loader_headers`) go with it, so a protected archive
    answers the probe as it answers the load; redirects are followed, but credentials go
    to the first URL's origin only (:func:`_credential_safe_opener`), as the loader does.
    Nothing of the answer is kept (the URL may carry a signature).
    """
    import urllib.error
    import urllib.request

    if not href.lower().startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(href, headers={**dict(headers or {}), "Range": "bytes=0-0"})
    try:
        with _credential_safe_opener().open(request, timeout=PROBE_TIMEOUT_S) as answer:  # (http(s) only)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except Exception:  # noqa: BLE001  (no answer: timeouts, refused connections, TLS errors)
        return None


_URL_QUERY = re.compile(r"(?i)\b((?:https?|s3|gs|az|abfs|abfss)://[^\s'\"?#]+)[?#][^\s'\"]*")


def _without_queries(text: str) -> str:
    """``text`` with every URL's query and fragment replaced by ``?...`` (SAS, presigned tokens)."""
    return _URL_QUERY.sub(r"\1?...", text)


class _StripQueries(logging.Filter):
    """Rewrites a record's message with :func:`_without_queries` (signed URLs lose their token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001  (a malformed record: leave it to logging's own handling)
            return True
        record.msg, record.args = _without_queries(text), None
        return True


_STRIP = _StripQueries()
_STRIP_LOCK = threading.Lock()
_STRIP_USERS = 0


class _queries_stripped_from_library_logs:
    """While in the block, odc's and rasterio's loggers strip URL queries from their records.

    A logger's filter sees only the records logged on that very logger, so it goes on each
    named logger and on every ``odc.*``/``rasterio.*`` logger that exists. Counted, so that
    loads in parallel threads share one filter and the last one out removes it.
    """

    def _loggers(self):
        names = set(_LIBRARY_LOGGERS) | {n for n in list(logging.root.manager.loggerDict)
                                         if n.split(".")[0] in ("odc", "rasterio")}
        return [logging.getLogger(n) for n in sorted(names)]

    def __enter__(self):
        global _STRIP_USERS
        with _STRIP_LOCK:
            _STRIP_USERS += 1
            for logger in self._loggers():
                if _STRIP not in logger.filters:
                    logger.addFilter(_STRIP)
        return self

    def __exit__(self, *exc) -> None:
        global _STRIP_USERS
        with _STRIP_LOCK:
            _STRIP_USERS -= 1
            if _STRIP_USERS == 0:
                for logger in self._loggers():
                    logger.removeFilter(_STRIP)


def _scale_offset(item, key: str) -> tuple[float, float]:
    """Scale and offset from the asset's ``raster:bands`` (default 1e-4 and 0, the L2A digital-number convention)."""
    bands = item.assets[key].extra_fields.get("raster:bands") or []
    if bands:
        return float(bands[0].get("scale", 1e-4)), float(bands[0].get("offset", 0.0))
    return 1e-4, 0.0


__all__ = ["EARTH_SEARCH", "S2_L2A_ASSETS", "StacSource", "solar_day"]
