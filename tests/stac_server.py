"""A small STAC API on 127.0.0.1 for tests: landing page, conformance, collections, item
search (GET and POST, datetime / bbox / intersects filters, paging with ``next`` links)
and the assets themselves (COG files served with HTTP range requests, as object stores do).

It speaks the STAC API 1.0 item-search shape that pystac-client and odc-stac use against
Earth Search; it is not a general implementation.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from shapely.geometry import box, shape

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


def _parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class StacServer:
    """Serve ``items`` (STAC item dicts whose asset hrefs are file names in ``files``).

    Use as a context manager; ``url`` is the API root. ``page_size`` caps items per page;
    ``requests`` logs (method, path) of every request.
    """

    def __init__(self, items: list[dict], files: Path, *, collection: str = "sentinel-2-l2a", page_size: int = 2):
        self.items, self.files, self.collection, self.page_size = items, Path(files), collection, page_size
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []  # HTTP status codes to answer the next search requests with
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _json(self, doc: Any, status: int = 200) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/geo+json" if "features" in doc else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):
                server.requests.append(("HEAD", self.path))
                self._file(head=True)

            def do_GET(self):
                server.requests.append(("GET", self.path))
                url = urlparse(self.path)
                if url.path.startswith("/files/"):
                    return self._file()
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                return self._route(url.path, q)

            def do_POST(self):
                server.requests.append(("POST", self.path))
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                return self._route(urlparse(self.path).path, body)

            def _route(self, path: str, params: dict) -> None:
                root = server.url
                if path in ("", "/"):
                    return self._json({
                        "type": "Catalog", "id": "test-stac", "stac_version": "1.0.0", "description": "test API",
                        "conformsTo": CONFORMS,
                        "links": [{"rel": "self", "href": root, "type": "application/json"},
                                  {"rel": "root", "href": root, "type": "application/json"},
                                  {"rel": "conformance", "href": f"{root}/conformance"},
                                  {"rel": "data", "href": f"{root}/collections"},
                                  {"rel": "search", "href": f"{root}/search", "method": "GET",
                                   "type": "application/geo+json"},
                                  {"rel": "search", "href": f"{root}/search", "method": "POST",
                                   "type": "application/geo+json"}]})
                if path == "/conformance":
                    return self._json({"conformsTo": CONFORMS})
                if path == "/collections":
                    return self._json({"collections": [server.collection_doc()], "links": []})
                if path == f"/collections/{server.collection}":
                    return self._json(server.collection_doc())
                if path == "/search":
                    if server.fail_next:
                        code = server.fail_next.pop(0)
                        return self._json({"code": "Error", "description": "injected failure"}, status=code)
                    return self._json(server.search(params))
                return self._json({"code": "NotFound", "description": path}, status=404)

            def _file(self, head: bool = False) -> None:
                name = urlparse(self.path).path[len("/files/"):]
                path = server.files / name
                if "/" in name or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                rng = self.headers.get("Range")
                status, start, end = 200, 0, len(data) - 1
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if m:
                    status, start = 206, int(m.group(1))
                    end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                chunk = data[start:end + 1]
                self.send_response(status)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if not head:
                    self.wfile.write(chunk)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "StacServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- behaviour --------------------------------------------------------------------------
    def collection_doc(self) -> dict:
        return {"type": "Collection", "id": self.collection, "stac_version": "1.0.0", "description": "test",
                "license": "proprietary", "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                                     "temporal": {"interval": [[None, None]]}},
                "links": [{"rel": "self", "href": f"{self.url}/collections/{self.collection}"},
                          {"rel": "items", "href": f"{self.url}/collections/{self.collection}/items"}]}

    def published(self, item: dict) -> dict:
        """An item with absolute asset hrefs on this server."""
        doc = json.loads(json.dumps(item))
        for asset in doc["assets"].values():
            asset["href"] = f"{self.url}/files/{asset['href']}"
        doc["links"] = [{"rel": "self", "href": f"{self.url}/collections/{self.collection}/items/{doc['id']}"},
                        {"rel": "collection", "href": f"{self.url}/collections/{self.collection}"}]
        return doc

    def search(self, params: dict) -> dict:
        items = list(self.items)
        cols = params.get("collections")
        if cols:
            cols = cols.split(",") if isinstance(cols, str) else cols
            items = [i for i in items if i["collection"] in cols]
        if params.get("datetime"):
            lo, _, hi = str(params["datetime"]).partition("/")
            lo_t = None if lo in ("", "..") else _parse_dt(lo)
            hi_t = None if hi in ("", "..") else _parse_dt(hi or lo)
            items = [i for i in items if (lo_t is None or _parse_dt(i["properties"]["datetime"]) >= lo_t)
                     and (hi_t is None or _parse_dt(i["properties"]["datetime"]) <= hi_t)]
        geom = None
        if params.get("intersects"):
            g = params["intersects"]
            geom = shape(json.loads(g) if isinstance(g, str) else g)
        elif params.get("bbox"):
            b = params["bbox"]
            geom = box(*([float(v) for v in b.split(",")] if isinstance(b, str) else b))
        if geom is not None:
            items = [i for i in items if shape(i["geometry"]).intersects(geom)]
        limit = min(int(params.get("limit", self.page_size)), self.page_size)
        offset = int(params.get("token", 0) or 0)
        page = items[offset:offset + limit]
        links = []
        if offset + limit < len(items):
            nxt = dict(params)
            nxt["token"] = str(offset + limit)
            if isinstance(params.get("intersects"), dict) or "collections" in params and not isinstance(
                    params.get("collections"), str):
                links.append({"rel": "next", "href": f"{self.url}/search", "method": "POST", "body": nxt,
                              "type": "application/geo+json"})
            else:
                from urllib.parse import urlencode

                links.append({"rel": "next", "href": f"{self.url}/search?{urlencode(nxt)}",
                              "type": "application/geo+json"})
        return {"type": "FeatureCollection", "features": [self.published(i) for i in page],
                "numberMatched": len(items), "numberReturned": len(page), "links": links}
