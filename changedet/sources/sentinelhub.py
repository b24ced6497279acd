"""Sentinel Hub (sentinel-hub.com or the Copernicus Data Space Ecosystem) as an imagery source.

Built on the ``sentinelhub`` client (``SHConfig``, ``SentinelHubCatalog``,
``SentinelHubRequest``, ``DataCollection``): Catalog API search with a cloud-cover filter and
paging, Process API requests with the evalscripts of :mod:`changedet.sources.sh_evalscripts`
for Sentinel-2 L2A, Sentinel-1 GRD and BYOC (commercial VHR) collections.

Configuration (first match wins for each value):

* constructor arguments (``SHSettings``);
* environment: ``SH_CLIENT_ID``, ``SH_CLIENT_SECRET``, ``SH_BASE_URL``, ``SH_TOKEN_URL`` and
  ``CHANGEDET_SH_DEPLOYMENT`` (``sentinel-hub`` or ``cdse``: preset base and token URLs);
* a sentinelhub profile (``profile=`` or ``SH_PROFILE``) from sentinelhub's ``config.toml``;
* the sentinel-hub.com deployment.

Built-in collections carry a fixed service URL, so each is redefined from the configured base
URL (``DataCollection.X.define_from(..., service_url=base_url)``); otherwise CDSE or a test
server would never be reached. Grids wider or taller than ``max_px`` (the Process API's 2500 px
cap) are fetched as tiles of the AOI grid and mosaicked by placement (tiles share the grid's
pixel edges, so nothing is resampled twice). 429 replies are retried after their Retry-After,
5xx with exponential backoff; replies are cached on disk by sentinelhub (``cache_dir``), so a
second identical load sends no request. The client secret never appears in ``repr``, logs or
error messages.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, quote_plus

import numpy as np
import xarray as xr
from shapely.geometry import shape
from shapely.ops import unary_union

from changedet.errors import SceneUnreadable, SourceConfigError, SourceError, SourceUnavailable
from changedet.grid import GridSpec
from changedet.sources import sh_evalscripts as es
from changedet.sources.base import CLOUD_BAND, SceneRecord, check_range
from changedet.sources.sh_cache import default_cache_dir, mark_used

LOGGER = logging.getLogger(__name__)

ENV_CLIENT_ID = "SH_CLIENT_ID"
ENV_CLIENT_SECRET = "SH_CLIENT_SECRET"
ENV_BASE_URL = "SH_BASE_URL"
ENV_TOKEN_URL = "SH_TOKEN_URL"
ENV_DEPLOYMENT = "CHANGEDET_SH_DEPLOYMENT"
ENV_PROFILE = "SH_PROFILE"

#: Known deployments: (base URL, OAuth token URL).
DEPLOYMENTS: Mapping[str, tuple[str, str]] = {
    "sentinel-hub": ("https://services.sentinel-hub.com",
                     "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"),
    "cdse": ("https://sh.dataspace.copernicus.eu",
             "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"),
}
#: Process API output cap, pixels per side.
MAX_PX = 2500
DEFAULT_BANDS = {"s2": ("B02", "B03", "B04", "B08"), "s1": ("VV", "VH"), "vhr": ("R", "G", "B", "NIR")}
DEFAULT_RESOLUTION_M = {"s2": 10.0, "s1": 10.0}
#: Half-width of the Process API time filter around a scene's acquisition time: one orbit
#: pass (a datastrip) spans seconds, the next pass over the same place is > 90 min away.
_PASS_HALF_WIDTH = timedelta(minutes=30)
#: Largest gap between consecutive granules of one pass: Sentinel-2 granules along a
#: datastrip are sensed seconds apart.
_PASS_GAP = timedelta(minutes=2)


# -- secrets ------------------------------------------------------------------------------

class _Redactor(logging.Filter):
    """Replace registered secrets (and OAuth tokens) in log records and messages.

    ``requests_oauthlib`` logs the token request body, client secret included, at DEBUG;
    this filter sits on the loggers that may carry it.
    """

    _TOKEN = re.compile(r"""(access_token['"]?\s*[:=]\s*['"]?)[^'"&,\s}]+""")
    _BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, secret: str) -> None:
        # Log records are filtered against every secret seen; a secret of a few characters
        # would blank ordinary words, and no real client secret is that short.
        if len(secret) >= 6:
            with self._lock:
                self._secrets |= _forms(secret)

    def redact(self, text: str, secret: str | None = None) -> str:
        """``text`` without ``secret`` (default: every registered secret) or OAuth tokens."""
        with self._lock:
            known = _forms(secret) if secret else set(self._secrets)
        for value in sorted(known, key=len, reverse=True):
            text = text.replace(value, "***")
        text = self._TOKEN.sub(r"\1***", text)
        return self._BEARER.sub(r"\1***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _forms(secret: str) -> set[str]:
    """A secret as it may appear: raw or URL-encoded (it travels in a form body)."""
    return {v for v in (secret, quote_plus(secret), quote(secret, safe="")) if v}


_REDACTOR = _Redactor()
for _name in ("requests_oauthlib.oauth2_session", "oauthlib.oauth2.rfc6749.clients.base",
              "sentinelhub.download.session", "sentinelhub.download.sentinelhub_client",
              "sentinelhub.download.handlers", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(_REDACTOR)


@dataclass(frozen=True)
class SHSettings:
    """Credentials and endpoints of one Sentinel Hub deployment.

    ``repr`` shows the client id and URLs, never the secret.
    """

    client_id: str
    client_secret: str = field(repr=False)
    base_url: str = DEPLOYMENTS["sentinel-hub"][0]
    token_url: str = DEPLOYMENTS["sentinel-hub"][1]

    def __post_init__(self) -> None:
        _REDACTOR.register(self.client_secret)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    def __repr__(self) -> str:
        return (f"SHSettings(client_id={self.client_id!r}, client_secret='***', base_url={self.base_url!r}, "
                f"token_url={self.token_url!r})")

    __str__ = __repr__

    @classmethod
    def deployment(cls, name: str, client_id: str, client_secret: str) -> "SHSettings":
        """Settings for a known deployment, ``"sentinel-hub"`` or ``"cdse"``."""
        if name not in DEPLOYMENTS:
            raise SourceConfigError(f"unknown Sentinel Hub deployment {name!r}; use one of {sorted(DEPLOYMENTS)}",
                                    option="deployment")
        base, token = DEPLOYMENTS[name]
        return cls(client_id, client_secret, base, token)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, profile: str | None = None) -> "SHSettings":
        """Settings from the environment, falling back on a sentinelhub profile.

        Raises
        ------
        SourceConfigError
            (a ``SourceError``; option ``credentials``, ``profile`` or ``SH_DEPLOYMENT``) Naming
            the environment variables to set when no client id or secret is found, or the
            profile or deployment that is wrong; never a secret's value.
        """
        env = os.environ if environ is None else environ
        deployment = env.get(ENV_DEPLOYMENT) or None
        if deployment is not None and deployment not in DEPLOYMENTS:
            raise SourceConfigError(f"{ENV_DEPLOYMENT}={deployment!r} is not a known deployment; "
                                    f"use one of {sorted(DEPLOYMENTS)} or set {ENV_BASE_URL} and {ENV_TOKEN_URL}",
                                    option=ENV_DEPLOYMENT)
        base, token = DEPLOYMENTS[deployment or "sentinel-hub"]
        client_id, secret = env.get(ENV_CLIENT_ID, ""), env.get(ENV_CLIENT_SECRET, "")
        profile = profile or env.get(ENV_PROFILE) or None
        if profile is not None:
            from sentinelhub import SHConfig

            try:
                cfg = SHConfig.load(profile=profile)
            except KeyError:
                raise SourceConfigError(f"sentinelhub profile {profile!r} is not in "
                                        f"{SHConfig.get_config_location()}; create it with `sentinelhub.config "
                                        "--profile NAME ...` or unset SH_PROFILE", option="profile") from None
            except Exception as exc:
                raise SourceConfigError(f"cannot read sentinelhub profile {profile!r} from "
                                        f"{SHConfig.get_config_location()} ({exc.__class__.__name__}); fix the file",
                                        option="profile") from None
            client_id = client_id or cfg.sh_client_id
            secret = secret or cfg.sh_client_secret
            if deployment is None:
                base, token = cfg.sh_base_url, cfg.sh_token_url
        base = env.get(ENV_BASE_URL) or base
        token = env.get(ENV_TOKEN_URL) or token
        if not client_id or not secret:
            # Which of the two is missing, never the value of the other (a secret).
            lacking = " and ".join(n for n, v in ((ENV_CLIENT_ID, client_id), (ENV_CLIENT_SECRET, secret)) if not v)
            raise SourceConfigError(
                f"Sentinel Hub credentials are missing ({lacking} not set): set {ENV_CLIENT_ID} and "
                f"{ENV_CLIENT_SECRET} in the environment of the process that fetches (and {ENV_DEPLOYMENT}=cdse or "
                f"{ENV_BASE_URL}/{ENV_TOKEN_URL} for another deployment), or name a sentinelhub profile with "
                "SH_PROFILE", option="credentials")
        return cls(client_id, secret, base, token)


# -- the source ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tile:
    row0: int
    col0: int
    rows: int
    cols: int


def _tiles(shape: tuple[int, int], max_px: int) -> list[_Tile]:
    """Split (rows, cols) into near-equal tiles no larger than ``max_px`` per side."""
    rows, cols = shape
    nr, nc = math.ceil(rows / max_px), math.ceil(cols / max_px)
    hr, wc = math.ceil(rows / nr), math.ceil(cols / nc)
    return [_Tile(r, c, min(hr, rows - r), min(wc, cols - c)) for r in range(0, rows, hr) for c in range(0, cols, wc)]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class SentinelHubSource:
    """Sentinel Hub Catalog and Process APIs behind the changedet source interface.

    Parameters
    ----------
    settings : SHSettings, optional
        Credentials and endpoints; default :meth:`SHSettings.from_env` (with ``profile``).
    profile : str, optional
        sentinelhub profile to read credentials and URLs from.
    collection : str, optional
        ``"sentinel-2-l2a"``, ``"sentinel-1-grd"`` or ``"byoc-<collection id>"``; by default
        the collection follows the sensor (``vhr`` needs ``byoc_id``).
    byoc_id : str, optional
        BYOC collection id for ``vhr`` (commercial imagery ingested into Sentinel Hub).
    bands : sequence of str, optional
        Collection bands to fetch; default per sensor (``B02 B03 B04 B08``, ``VV VH``,
        ``R G B NIR``).
    band_names : sequence of str, optional
        Names to give the fetched bands (default: the same as ``bands``).
    cloud_band : {"SCL", "CLM"}
        Source of the Sentinel-2 ``CLM`` band (1 cloud or shadow, 0 clear, NaN no data):
        the scene classification or Sentinel Hub's s2cloudless mask. (Named apart from the
        fetch-level ``cloud_mask`` setting of AOI files, which chooses the masking method.)
    s1_units : {"linear", "db"}
        Sentinel-1 backscatter as linear power or decibels.
    backscatter : str
        Sentinel-1 coefficient: ``SIGMA0_ELLIPSOID`` (default), ``GAMMA0_ELLIPSOID``, ``BETA0``
        or ``GAMMA0_TERRAIN`` (terrain-flattened).
    orthorectify : bool
        Orthorectify Sentinel-1 with the Copernicus DEM (default True).
    max_px : int
        Largest request side, pixels (the Process API cap is 2500).
    cache_dir : path, optional
        Download cache; default ``$CHANGEDET_DATA_DIR/cache/sentinelhub`` (a local
        ``~/.cache/changedet/sentinelhub`` where the data directory is a URL). ``cache=False``
        disables it. Nothing in a run removes entries: ``changedet cache prune`` does.
    page_size : int
        Catalog results per page (1–100).
    download_attempts, retry_sleep_s : int, float
        5xx/connection retries and the first backoff (multiplied by 3 each attempt).
    rate_limit_retries : int
        How many 429 replies in a row to sit out before giving up.
    max_threads : int
        Tiles downloaded in parallel.
    """

    name = "sentinelhub"

    def __init__(self, settings: SHSettings | None = None, *, profile: str | None = None,
                 collection: str | None = None, byoc_id: str | None = None, bands=None, band_names=None,
                 cloud_band: str = "SCL", s1_units: str = "linear", backscatter: str = "SIGMA0_ELLIPSOID",
                 orthorectify: bool = True, max_px: int = MAX_PX, cache: bool = True,
                 cache_dir: str | Path | None = None, page_size: int = 100, download_attempts: int = 4,
                 retry_sleep_s: float = 5.0, rate_limit_retries: int = 20, max_threads: int = 4,
                 timeout_s: float = 120.0, resolution_m: float | None = None, **unknown: Any) -> None:
        from sentinelhub import SHConfig

        if unknown:
            raise SourceConfigError(f"unknown Sentinel Hub source option(s) {sorted(unknown)}; known: collection, "
                                    "byoc_id, bands, band_names, cloud_band, s1_units, backscatter, orthorectify, "
                                    "max_px, cache, cache_dir, page_size, download_attempts, retry_sleep_s, "
                                    "rate_limit_retries, max_threads, timeout_s, resolution_m, profile",
                                    option="options")

        self.settings = settings if settings is not None else SHSettings.from_env(profile=profile)
        # Wrong entry settings are the AOI file's (SourceConfigError): no retry cures them.
        if cloud_band not in ("SCL", "CLM"):
            raise SourceConfigError(f"cloud_band={cloud_band!r}: use 'SCL' (scene classification) or 'CLM' "
                                    "(s2cloudless)", option="cloud_band")
        if s1_units not in ("linear", "db"):
            raise SourceConfigError(f"s1_units={s1_units!r}: use 'linear' or 'db'", option="s1_units")
        if backscatter not in es.S1_BACKSCATTER:
            raise SourceConfigError(f"backscatter={backscatter!r}: use one of {list(es.S1_BACKSCATTER)}",
                                    option="backscatter")
        if backscatter == "GAMMA0_TERRAIN" and not orthorectify:
            raise SourceConfigError("backscatter='GAMMA0_TERRAIN' (terrain flattening) needs orthorectify=True",
                                    option="orthorectify")
        if not 1 <= int(max_px) <= MAX_PX:
            raise SourceConfigError(f"max_px={max_px}: must be between 1 and the Process API cap {MAX_PX}",
                                    option="max_px")
        if not 1 <= int(page_size) <= 100:
            raise SourceConfigError(f"page_size={page_size}: the Catalog API returns 1 to 100 items per page",
                                    option="page_size")
        if collection is not None and not (collection in ("sentinel-2-l2a", "sentinel-1-grd")
                                           or collection.startswith("byoc-")):
            raise SourceConfigError(f"collection {collection!r} is not supported; use 'sentinel-2-l2a', "
                                    "'sentinel-1-grd' or 'byoc-<collection id>'", option="collection")
        if collection is not None and collection.startswith("byoc-"):
            byoc_id = byoc_id or collection[len("byoc-"):]
        self.collection, self.byoc_id = collection, byoc_id
        self.bands = tuple(bands) if bands is not None else None
        self.band_names = tuple(band_names) if band_names is not None else None
        if self.bands is not None and self.band_names is not None and len(self.bands) != len(self.band_names):
            raise SourceConfigError(f"bands {self.bands} and band_names {self.band_names} differ in length",
                                    option="band_names")
        self.cloud_band, self.s1_units, self.backscatter = cloud_band, s1_units, backscatter
        self.orthorectify, self.max_px, self.page_size = bool(orthorectify), int(max_px), int(page_size)
        self.max_threads, self.resolution_m = int(max_threads), resolution_m
        if cache:
            self.cache_dir: Path | None = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        else:
            self.cache_dir = None
        # use_defaults: never read or write the user's sentinelhub config file behind their back.
        self._config = SHConfig(
            use_defaults=True, sh_client_id=self.settings.client_id, sh_client_secret=self.settings.client_secret,
            sh_base_url=self.settings.base_url, sh_token_url=self.settings.token_url,
            max_download_attempts=int(download_attempts), download_sleep_time=float(retry_sleep_s),
            max_retries=int(rate_limit_retries), download_timeout_seconds=float(timeout_s))
        self._collections: dict[str, Any] = {}

    def __repr__(self) -> str:
        return (f"SentinelHubSource(settings={self.settings!r}, collection={self.collection!r}, "
                f"byoc_id={self.byoc_id!r}, cache_dir={str(self.cache_dir) if self.cache_dir else None!r})")

    # -- collections -------------------------------------------------------------------
    def _collection(self, sensor: str, collection: str | None = None):
        """The sentinelhub DataCollection for a sensor, bound to the configured base URL."""
        from sentinelhub import DataCollection

        collection = collection or self.collection
        if collection is None:
            collection = {"s2": "sentinel-2-l2a", "s1": "sentinel-1-grd"}.get(sensor)
            if collection is None:
                if sensor != "vhr":
                    raise SourceConfigError(f"Sentinel Hub has no sensor {sensor!r}; use 's2', 's1' or 'vhr'",
                                            option="sensor")
                if not self.byoc_id:
                    raise SourceConfigError("sensor 'vhr' on Sentinel Hub reads a BYOC collection: give "
                                            "collection: byoc-<id> (or byoc_id) in the AOI's source options",
                                            option="byoc_id")
                collection = f"byoc-{self.byoc_id}"
        if collection in self._collections:
            return self._collections[collection]
        url = self.settings.base_url
        tag = hashlib.sha1(url.encode()).hexdigest()[:10]
        if collection == "sentinel-2-l2a":
            dc = DataCollection.SENTINEL2_L2A.define_from(f"CHANGEDET_S2L2A_{tag}", service_url=url)
        elif collection == "sentinel-1-grd":
            dc = DataCollection.SENTINEL1_IW.define_from(f"CHANGEDET_S1IW_{tag}", service_url=url)
        else:
            cid = collection[len("byoc-"):]
            safe = re.sub(r"\W", "_", cid)
            dc = DataCollection.define_byoc(cid, name=f"CHANGEDET_BYOC_{safe}_{tag}", service_url=url,
                                            has_cloud_coverage=True)
        self._collections[collection] = dc
        return dc

    def _evalscript(self, sensor: str) -> es.Evalscript:
        bands = self.bands or DEFAULT_BANDS.get(sensor, ())
        if sensor == "s2":
            return es.sentinel2_l2a(bands, cloud_mask=self.cloud_band)
        if sensor == "s1":
            return es.sentinel1_grd(bands, db=self.s1_units == "db")
        return es.byoc(bands)

    # -- errors ------------------------------------------------------------------------
    def _error(self, what: str, exc: BaseException) -> SourceError:
        """A SourceError naming the request and the cause, with every secret redacted.

        Typed by the HTTP status: 400 (the request: an evalscript or band the collection
        rejects), 401/403 (the credentials or the client's rights) and 404 (a collection,
        such as a BYOC id, or an endpoint it does not know) are :class:`SourceConfigError`,
        the same for every scene; 408/409/423/425/429 (the server's state), 5xx and an
        unreachable service are :class:`SourceUnavailable`; any other 4xx is about the
        scene's request, :class:`SceneUnreadable`. The caller raises it ``from None``: the
        library's exception holds the request (its ``Authorization`` header), so it is not
        kept as the cause.
        """
        from sentinelhub.exceptions import DownloadFailedException, OutOfRequestsException

        status = 429 if isinstance(exc, OutOfRequestsException) else _status_of(exc)
        if status in (401, 403):
            hint = (f"Sentinel Hub refused the credentials of client {self.settings.client_id!r} (HTTP {status}); "
                    f"check {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET} and that the client may use {self.settings.base_url}")
        elif status == 429:
            hint = "rate limit still exceeded after the configured retries; lower the request rate or retry later"
        elif status is not None and status >= 500:
            hint = f"the service kept failing (HTTP {status}) after the configured retries; retry later"
        elif isinstance(exc, DownloadFailedException) and status is None:
            hint = f"the service at {self.settings.base_url} could not be reached; check SH_BASE_URL and the network"
        else:
            hint = f"{exc.__class__.__name__}: {exc}"
        if status is not None and status < 500 and status not in (401, 403, 429):
            hint = f"HTTP {status}: {_server_message(exc)}"
        text = self._redact(f"{what} failed: {hint}")
        if status in (401, 403):
            return SourceConfigError(text, option="credentials")
        if status == 400:
            return SourceConfigError(
                f"{text}; Sentinel Hub rejects the request itself, so every scene fails alike: check the entry's "
                "'bands' (names the collection has) and 'band_names'", option="bands")
        if status == 404:
            return SourceConfigError(
                f"{text}; Sentinel Hub does not know the collection (or the endpoint): check the entry's "
                "'collection'/'byoc_id' (the BYOC collection id) and SH_BASE_URL", option="collection")
        if status in _PASSING_4XX or (status is not None and status >= 500) or (
                isinstance(exc, DownloadFailedException) and status is None):
            return SourceUnavailable(text)
        if status is not None and 400 <= status < 500:
            return SceneUnreadable(text, reason=f"Sentinel Hub answered HTTP {status}")
        return SourceError(text)

    def _redact(self, text: str) -> str:
        return _REDACTOR.redact(text, self.settings.client_secret)

    # -- search ------------------------------------------------------------------------
    def search(self, aoi, start: date, end: date, *, sensor: str, max_cloud: float = 100.0) -> list[SceneRecord]:
        """Scenes over the AOI polygon between two days (inclusive), at most ``max_cloud`` % cloud.

        Granules of one pass (same platform, sensed less than two minutes apart) are merged
        into one record whose footprint is their union and whose cloud cover is their maximum.
        """
        from sentinelhub import CRS, Geometry, SentinelHubCatalog

        check_range(start, end)
        if not 0.0 <= float(max_cloud) <= 100.0:
            raise SourceError(f"max_cloud={max_cloud} must be a percentage between 0 and 100")
        dc = self._collection(sensor)
        cloudy = sensor != "s1"
        query = f"eo:cloud_cover <= {float(max_cloud):g}" if cloudy and max_cloud < 100.0 else None
        t0 = datetime.combine(start, time.min, tzinfo=timezone.utc)
        t1 = datetime.combine(end, time(23, 59, 59), tzinfo=timezone.utc)
        what = (f"Sentinel Hub catalog search of {dc.catalog_id} at {self.settings.base_url} "
                f"for AOI {aoi.id!r} {start}..{end}")
        features: list[dict] = []
        self._ensure_session(what)
        for attempt in (1, 2):
            features = []
            try:
                catalog = SentinelHubCatalog(config=self._config)
                iterator = catalog.search(dc, time=(t0, t1), geometry=Geometry(aoi.polygon, CRS.WGS84),
                                          filter=query, limit=self.page_size)
                for feature in iterator:
                    features.append(feature)
                break
            except Exception as exc:
                if attempt == 1 and _status_of(exc) == 401:
                    self._reauthenticate(what)
                    continue
                raise self._catalog_error(what, exc, len(features)) from None
        LOGGER.info("%s: %d catalog items", what, len(features))
        parsed: list[tuple[str, datetime, dict]] = []
        for feature in features:
            try:
                props = feature["properties"]
                when = _utc(datetime.fromisoformat(props["datetime"].replace("Z", "+00:00")))
                platform = str(props.get("platform") or dc.catalog_id)
                shape(feature["geometry"])
            except Exception as exc:
                raise SourceError(f"{what}: item {feature.get('id', '?') if isinstance(feature, dict) else feature!r} "
                                  f"is malformed ({exc.__class__.__name__}: {exc}); the catalog reply is not a "
                                  "STAC item with datetime and geometry") from None
            parsed.append((platform, when, feature))
        # Granules of one pass: same platform, sensed within _PASS_GAP of the previous granule.
        groups: list[tuple[str, list[tuple[dict, datetime]]]] = []
        for platform, when, feature in sorted(parsed, key=lambda p: (p[0], p[1])):
            if groups and groups[-1][0] == platform and when - groups[-1][1][-1][1] <= _PASS_GAP:
                groups[-1][1].append((feature, when))
            else:
                groups.append((platform, [(feature, when)]))
        records = []
        for platform, items in groups:
            items.sort(key=lambda fw: str(fw[0].get("id")))
            props = [f["properties"] for f, _ in items]
            cloud = max(float(p.get("eo:cloud_cover", 0.0)) for p in props) if cloudy else 0.0
            gsd = props[0].get("gsd") or self.resolution_m or DEFAULT_RESOLUTION_M.get(sensor)
            if gsd is None:
                raise SourceError(f"{what}: item {items[0][0].get('id')} has no 'gsd'; give resolution_m "
                                  "in the AOI's source options")
            records.append(SceneRecord(
                id=str(items[0][0]["id"]), source=self.name, aoi_id=aoi.id, sensor=sensor,
                time=min(w for _, w in items), platform=platform, cloud_cover=round(cloud, 2),
                footprint=unary_union([shape(f["geometry"]) for f, _ in items]), resolution_m=float(gsd),
                properties={"collection": dc.catalog_id, "item_ids": [str(f["id"]) for f, _ in items],
                            **{k: props[0][k] for k in ("sat:orbit_state", "sat:relative_orbit") if k in props[0]}},
            ))
        return sorted(records, key=lambda r: (r.time, r.id))

    def _catalog_error(self, what: str, exc: BaseException, got: int) -> SourceError:
        import json

        from sentinelhub.exceptions import MissingDataInRequestException

        page = got // self.page_size + 1
        if isinstance(exc, json.JSONDecodeError):
            return SourceError(f"{what}: page {page} of the reply is not valid JSON ({exc.msg} at char {exc.pos})")
        if isinstance(exc, (KeyError, TypeError, MissingDataInRequestException)):
            return SourceError(f"{what}: page {page} of the reply lacks {exc} "
                               "(expected a FeatureCollection with 'features' and 'context')")
        return self._error(what, exc)

    # -- load --------------------------------------------------------------------------
    def load(self, scene: SceneRecord, grid: GridSpec, *, aoi=None, cache: bool = True) -> xr.DataArray:
        """Fetch the scene on ``grid``: bands, plus ``CLM`` for Sentinel-2 (NaN = no data).

        ``cache=False`` neither reads nor writes the download cache for this load (a reply
        used once, such as the daily run's registration window).
        """
        from sentinelhub import CRS, BBox, MimeType, MosaickingOrder, SentinelHubRequest

        epsg = grid.crs.to_epsg()
        if epsg is None:
            raise SourceConfigError(f"the AOI grid CRS {grid.crs.name!r} has no EPSG code; Sentinel Hub needs an EPSG "
                              "CRS (UTM zones, EPSG:4326, EPSG:3857): rebuild the grid in one", option="crs")
        try:
            sh_crs = CRS(epsg)
        except ValueError:
            raise SourceConfigError(f"EPSG:{epsg} of the AOI grid is not a CRS Sentinel Hub supports; use UTM, "
                                    "EPSG:4326 or EPSG:3857", option="crs") from None
        sensor = scene.sensor
        area = _grid_lonlat(grid)
        if scene.footprint is not None and not scene.footprint.intersects(area):
            raise SourceError(f"scene {scene.id} does not cover the AOI grid (footprint {scene.footprint.bounds}, "
                              f"grid {tuple(round(v, 5) for v in area.bounds)} in lon/lat); search again for "
                              "scenes over this AOI")
        dc = self._collection(sensor, scene.properties.get("collection"))
        script = self._evalscript(sensor)
        when = _utc(scene.time)
        other: dict[str, Any] = {}
        if sensor == "s1":
            processing = {"backCoeff": self.backscatter, "orthorectify": self.orthorectify}
            if self.orthorectify:
                processing["demInstance"] = "COPERNICUS"
            other["processing"] = processing
        inputs = [SentinelHubRequest.input_data(dc, time_interval=(when - _PASS_HALF_WIDTH, when + _PASS_HALF_WIDTH),
                                                mosaicking_order=MosaickingOrder.MOST_RECENT,
                                                other_args=other or None)]
        responses = [SentinelHubRequest.output_response(o.id, MimeType.TIFF) for o in script.outputs]
        tiles = _tiles(grid.shape, self.max_px)
        t = grid.transform
        requests, paths = [], []
        folder = str(self.cache_dir) if self.cache_dir is not None and cache else None
        for tile in tiles:
            x0, y1 = t.c + tile.col0 * t.a, t.f + tile.row0 * t.e
            bbox = BBox((x0, y1 + tile.rows * t.e, x0 + tile.cols * t.a, y1), crs=sh_crs)
            req = SentinelHubRequest(evalscript=script.text, input_data=inputs, responses=responses, bbox=bbox,
                                     size=(tile.cols, tile.rows), data_folder=folder, config=self._config)
            dl = req.download_list[0]
            requests.append(dl)
            paths.append(os.path.join(folder, dl.get_hashed_name()) if folder else None)
        what = (f"Sentinel Hub process request for scene {scene.id} ({dc.api_id}, {len(tiles)} tile"
                f"{'s' if len(tiles) > 1 else ''} of at most {self.max_px} px) at {self.settings.base_url}")
        total, cached = 0.0, []
        for tile, path in zip(tiles, paths):
            pu = es.estimate_pu(tile.cols, tile.rows, input_bands=script.input_bands, float32=script.float32,
                                orthorectify=sensor == "s1" and self.orthorectify)
            hit = path is not None and os.path.isdir(path) and any(n.startswith("response") for n in os.listdir(path))
            if hit:
                mark_used(path)  # `changedet cache prune --max-size` removes the least recently used first
            cached.append(hit)
            total += 0.0 if hit else pu
            LOGGER.info("Sentinel Hub %s %dx%d px at (%d, %d): %s", scene.id, tile.cols, tile.rows, tile.row0,
                        tile.col0, "cached, 0 PU" if hit else f"estimated {pu:.3f} PU")
        LOGGER.info("Sentinel Hub %s: estimated %.3f PU for this load", scene.id, total)
        # Authenticate only when something must be fetched: a fully cached load makes no request at all.
        replies = self._download(requests, what, authenticate=not all(cached))
        names = self.band_names or script.band_names
        out = np.full((len(names) + (1 if sensor == "s2" else 0),) + grid.shape, np.nan, dtype="float32")
        for i, (tile, reply, path) in enumerate(zip(tiles, replies, paths)):
            where = f"{what}: tile at row {tile.row0}, col {tile.col0}"
            try:
                arrays = self._unpack(reply, script, tile)
            except SourceError as exc:
                _drop(path)
                if not cached[i]:
                    # A reply cut short or garbled on the way: another request may get it whole.
                    raise SourceUnavailable(f"{where}: {exc}; it was not cached, retry") from None
                # A cache entry cut short (a crash while sentinelhub wrote it): fetch that tile again.
                LOGGER.warning("%s: cached reply unreadable (%s); fetching it again", where, exc)
                arrays = self._unpack(self._download([requests[i]], what)[0], script, tile, where=where)
            window = (slice(None), slice(tile.row0, tile.row0 + tile.rows), slice(tile.col0, tile.col0 + tile.cols))
            out[window] = arrays
        if np.isnan(out).all():
            raise SceneUnreadable(f"{what}: Sentinel Hub returned no data over the AOI grid (the scene's pixels do not "
                              "reach it or the acquisition was not found in its one-pass time window); search "
                              "again for scenes over this AOI", reason="Sentinel Hub has no pixels of it over the grid")
        band_list = list(names) + ([CLOUD_BAND] if sensor == "s2" else [])
        kind = {"s2": "reflectance", "s1": "sigma0" if self.backscatter.startswith("SIGMA") else "backscatter"}
        attrs = {"scene_id": scene.id, "sensor": sensor, "platform": scene.platform, "source": self.name,
                 "collection": dc.api_id}
        if sensor == "s1":
            attrs.update(units="dB" if self.s1_units == "db" else "linear power", backscatter=self.backscatter,
                         orthorectified=int(self.orthorectify))
        return grid.attach(out, bands=band_list, name=kind.get(sensor, "dn"), attrs=attrs)

    def _download(self, requests: list, what: str, *, authenticate: bool = True) -> list:
        """Run the download requests (cache first); one re-authentication on HTTP 401."""
        from sentinelhub import SentinelHubDownloadClient

        if authenticate:
            self._ensure_session(what)
        for attempt in (1, 2):
            try:
                client = SentinelHubDownloadClient(config=self._config)
                return client.download(requests, max_threads=self.max_threads, decode_data=False)
            except Exception as exc:
                if attempt == 1 and _status_of(exc) == 401:
                    self._reauthenticate(what)
                    continue
                raise self._error(what, exc) from None
        raise AssertionError("unreachable")

    def _unpack(self, reply, script: es.Evalscript, tile: _Tile, *, where: str | None = None) -> np.ndarray:
        """(band, rows, cols) float32 from one reply; cloud band 255 → NaN.

        Raises SourceError (prefixed with ``where`` when given) for undecodable or misshapen replies.
        """
        try:
            decoded = reply.decode()
        except Exception as exc:
            kind = "a tar of TIFFs" if len(script.outputs) > 1 else "a TIFF"
            message = f"the reply could not be decoded as {kind} ({exc.__class__.__name__}: {exc})"
            raise SourceError(f"{where}: {message}" if where else message) from None
        try:
            return self._arrays(decoded, script, tile)
        except SourceError as exc:
            raise SourceError(f"{where}: {exc}" if where else str(exc)) from None

    def _arrays(self, decoded, script: es.Evalscript, tile: _Tile) -> np.ndarray:
        if len(script.outputs) > 1:
            if not isinstance(decoded, dict):
                raise SourceError(f"expected a tar of {[o.id for o in script.outputs]} outputs, got {type(decoded).__name__}")
            parts = []
            for o in script.outputs:
                if f"{o.id}.tif" not in decoded:
                    raise SourceError(f"the tar reply lacks {o.id}.tif (has {sorted(decoded)})")
                parts.append((o, decoded[f"{o.id}.tif"]))
        else:
            parts = [(script.outputs[0], decoded)]
        planes = []
        for o, arr in parts:
            arr = np.asarray(arr)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.shape != (tile.rows, tile.cols, o.bands):
                raise SourceError(f"output {o.id!r} has shape {arr.shape}, expected "
                                  f"{(tile.rows, tile.cols, o.bands)} (rows, cols, bands)")
            arr = np.moveaxis(arr, -1, 0).astype("float32")
            if o.sample_type == "UINT8":
                arr[arr == es.CLM_NODATA] = np.nan
            planes.append(arr)
        data = np.concatenate(planes)
        if len(script.outputs) > 1:
            # A pixel without data has no reflectance either, whatever the float output holds.
            data[:-1, np.isnan(data[-1])] = np.nan
        return data

    def _reauthenticate(self, what: str) -> None:
        """An expired or revoked token: drop the cached sessions and authenticate again, once."""
        from sentinelhub import SentinelHubDownloadClient

        LOGGER.info("%s: token rejected (HTTP 401); authenticating again", what)
        SentinelHubDownloadClient.clear_cache()
        self._ensure_session(what)

    def _ensure_session(self, what: str) -> None:
        """Authenticate now, so bad credentials give one clear error instead of a retry storm."""
        from sentinelhub import SentinelHubDownloadClient

        try:
            SentinelHubDownloadClient(config=self._config).get_session()
        except Exception as exc:
            if exc.__class__.__name__ == "InsecureTransportError":
                raise SourceConfigError(f"{what}: the token URL {self.settings.token_url} is plain http; use https, "
                                  "or set OAUTHLIB_INSECURE_TRANSPORT=1 for a local test server",
                                  option="SH_TOKEN_URL") from None
            status = _status_of(exc)
            if status is None and exc.__class__.__module__.startswith("oauthlib"):
                status = getattr(exc, "status_code", 401)
            if status in (400, 401, 403):
                raise SourceConfigError(self._redact(
                    f"{what}: authentication at {self.settings.token_url} failed for client "
                    f"{self.settings.client_id!r} ({exc.__class__.__name__}); check {ENV_CLIENT_ID} and "
                    f"{ENV_CLIENT_SECRET} (or the sentinelhub profile) and {ENV_TOKEN_URL}"),
                    option="credentials") from None
            # The token service down, unreachable or slow: it may pass.
            raise SourceUnavailable(self._redact(f"{what}: authentication at {self.settings.token_url} failed "
                                                 f"({exc.__class__.__name__}: {exc})")) from None


def _grid_lonlat(grid: GridSpec):
    """The grid's outline in EPSG:4326 (lon, lat), densified so curved edges are respected."""
    import pyproj
    from shapely.geometry import Polygon

    xmin, ymin, xmax, ymax = grid.bounds
    n = 16
    xs = np.concatenate([np.linspace(xmin, xmax, n), np.full(n, xmax), np.linspace(xmax, xmin, n), np.full(n, xmin)])
    ys = np.concatenate([np.full(n, ymin), np.linspace(ymin, ymax, n), np.full(n, ymax), np.linspace(ymax, ymin, n)])
    lon, lat = pyproj.Transformer.from_crs(grid.crs, 4326, always_xy=True).transform(xs, ys)
    return Polygon(zip(lon, lat))


#: 4xx answers about the server's state, not the request: timeout, conflict, locked, too early, rate.
_PASSING_4XX = (408, 409, 423, 425, 429)


def _status_of(exc: BaseException) -> int | None:
    """HTTP status behind a sentinelhub or requests exception, if any."""
    for candidate in (getattr(exc, "request_exception", None), exc, exc.__cause__, exc.__context__):
        response = getattr(candidate, "response", None)
        if response is not None and getattr(response, "status_code", None) is not None:
            return int(response.status_code)
    return None


def _server_message(exc: BaseException) -> str:
    from sentinelhub.decoding import decode_sentinelhub_err_msg

    for candidate in (getattr(exc, "request_exception", None), exc):
        response = getattr(candidate, "response", None)
        if response is not None:
            try:
                return decode_sentinelhub_err_msg(response) or response.reason or "no message"
            except Exception:
                return "no readable message"
    return str(exc)


def _drop(path: str | None) -> None:
    """Remove a cached reply that turned out to be malformed, so the next load fetches it again."""
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
