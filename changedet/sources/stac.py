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
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Mapping

import numpy as np
import xarray as xr
from shapely.geometry import mapping, shape
from shapely.ops import unary_union

from changedet.errors import SourceConfigError, SourceError, SourceUnavailable
from changedet.grid import GridSpec
from changedet.sources.base import SCL_BAND, SceneRecord, check_range

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
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
                            "item_ids": [i.id for i in group], "stac_url": self.url},
            ))
        return out

    def load(self, scene: SceneRecord, grid: GridSpec, **_: Any) -> xr.DataArray:
        """The scene's bands (reflectance) and ``SCL`` on ``grid``; NaN where no item has data (all
        NaN when none has data over the grid)."""
        import odc.stac
        import pystac
        from odc.geo.geobox import GeoBox

        items = [pystac.Item.from_dict(d) for d in scene.properties["items"]]
        keys = dict(self.assets)
        if self.scl_asset:
            keys[SCL_BAND] = self.scl_asset
        missing = sorted({k for i in items for k in keys.values() if k not in i.assets})
        if missing:
            raise SourceConfigError(f"scene {scene.id}: items lack the assets {missing}; set the source's 'assets' "
                                    f"to the keys this collection has", option="assets")
        geobox = GeoBox(grid.shape, grid.transform, grid.crs.to_wkt())
        odc.stac.configure_rio(cloud_defaults=True)
        try:
            ds = odc.stac.load(items, bands=list(keys.values()), geobox=geobox, groupby="solar_day",
                               resampling={"*": "bilinear", **({self.scl_asset: "nearest"} if self.scl_asset else {})},
                               fail_on_error=True)
        except Exception as exc:
            # May pass: a 403 of a signed asset URL is often an expired signature, a 5xx or a
            # dropped connection the service's; a file missing for good cannot be told from them.
            # The cause is not kept and URLs lose their query: signed URLs carry tokens.
            raise SourceUnavailable(f"scene {scene.id}: loading its assets failed ({exc.__class__.__name__}: "
                                    f"{_without_queries(str(exc))[:200]}); the files may be missing or corrupt, "
                                    "retry or skip the date") from None
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


_URL_QUERY = re.compile(r"(?i)\b((?:https?|s3|gs|az|abfs|abfss)://[^\s'\"?#]+)[?#][^\s'\"]*")


def _without_queries(text: str) -> str:
    """``text`` with every URL's query and fragment replaced by ``?...`` (SAS, presigned tokens)."""
    return _URL_QUERY.sub(r"\1?...", text)


def _scale_offset(item, key: str) -> tuple[float, float]:
    """Scale and offset from the asset's ``raster:bands`` (default 1e-4 and 0, the L2A digital-number convention)."""
    bands = item.assets[key].extra_fields.get("raster:bands") or []
    if bands:
        return float(bands[0].get("scale", 1e-4)), float(bands[0].get("offset", 0.0))
    return 1e-4, 0.0


__all__ = ["EARTH_SEARCH", "S2_L2A_ASSETS", "StacSource", "solar_day"]
