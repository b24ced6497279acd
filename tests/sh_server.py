"""A local fake of the Sentinel Hub APIs on 127.0.0.1, for testing the real ``sentinelhub`` client.

It speaks the API shape the client uses:

* ``POST /oauth/token``: OAuth2 client-credentials grant (form body) → bearer token;
* ``POST /api/v1/catalog/1.0.0/search``: STAC search (``collections``, ``datetime``,
  ``intersects``/``bbox``, a CQL2-text ``filter`` such as ``eo:cloud_cover <= 30``, paging
  by ``limit`` and the ``next`` token of ``context``);
* ``POST /api/v1/process``: renders the requested ``bounds`` (bbox + CRS), ``width`` x
  ``height`` from the served scenes by running the request's **evalscript in Node.js** over
  per-pixel samples, and replies ``image/tiff`` (one output) or ``application/x-tar``
  (``<id>.tif`` per output).

Scenes are real rasters (any CRS) registered with :meth:`FakeSentinelHub.add_scene`;
resampling is nearest, as Sentinel Hub's default. Failures are injected per endpoint with
:meth:`FakeSentinelHub.fail`: ``"429"`` (Retry-After in milliseconds, as Sentinel Hub
sends it), ``"500"``, ``"expire"`` (the presented token is revoked → 401), ``"bad_json"``,
``"no_context"`` and ``"truncate"`` (a reply cut in half). ``hits`` counts requests per
endpoint; ``bodies`` keeps the JSON bodies.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject, transform_bounds
from shapely.geometry import box, mapping, shape

_RUNNER = r"""
// One request per line on stdin (JSON), one reply per line on stdout: a long-lived worker,
// so a tiled load does not pay Node's start-up per tile.
const vm = require('vm');
const readline = require('readline');
function run(req) {
  const ctx = {Math: Math, NaN: NaN, Infinity: Infinity, isNaN: isNaN, JSON: JSON};
  vm.createContext(ctx);
  try { vm.runInContext(req.evalscript, ctx); } catch (e) { return {error: 'evalscript does not parse: ' + e.message}; }
  if (typeof ctx.setup !== 'function' || typeof ctx.evaluatePixel !== 'function') return {error: 'evalscript needs setup() and evaluatePixel()'};
  const setup = ctx.setup();
  const input = Array.isArray(setup.input) ? setup.input : [setup.input];
  const names = (typeof input[0] === 'string') ? input : input[0].bands;
  const outputs = Array.isArray(setup.output) ? setup.output : [setup.output];
  const arrays = {};
  for (const n of names) {
    if (!(n in req.bands)) return {error: 'band ' + n + ' is not available in collection ' + req.collection};
    const buf = Buffer.from(req.bands[n], 'base64');
    arrays[n] = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  }
  const npx = req.width * req.height;
  const out = {};
  for (const o of outputs) out[o.id || 'default'] = new Float32Array(npx * o.bands);
  const sample = {};
  for (let i = 0; i < npx; i++) {
    for (const n of names) sample[n] = arrays[n][i];
    let r = ctx.evaluatePixel(sample);
    if (Array.isArray(r)) { const k = outputs[0].id || 'default'; r = {[k]: r}; }
    for (const o of outputs) {
      const id = o.id || 'default';
      const v = r[id];
      if (!v || v.length !== o.bands) return {error: 'evaluatePixel returned ' + (v ? v.length : 0) + ' values for output ' + id + ', setup says ' + o.bands};
      for (let b = 0; b < o.bands; b++) out[id][i * o.bands + b] = v[b];
    }
  }
  return {outputs: outputs.map(o => ({id: o.id || 'default', bands: o.bands, sampleType: o.sampleType || 'AUTO',
    data: Buffer.from(out[o.id || 'default'].buffer).toString('base64')}))};
}
const rl = readline.createInterface({input: process.stdin, crlfDelay: Infinity});
rl.on('line', (line) => {
  let reply;
  try { reply = run(JSON.parse(line)); } catch (e) { reply = {error: 'runner: ' + e.message}; }
  process.stdout.write(JSON.stringify(reply) + '\n');
});
"""

_CLAUSE = re.compile(r"^\s*([\w:.-]+)\s*(<=|>=|<|>|=)\s*'?([^']*?)'?\s*$")


@dataclass
class Scene:
    """One served acquisition: STAC item fields plus its pixels (band name → 2-D array)."""

    id: str
    collection: str
    time: datetime
    platform: str
    crs: str
    transform: Any
    bands: dict[str, np.ndarray]
    cloud_cover: float | None = None
    gsd: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def footprint(self):
        rows, cols = next(iter(self.bands.values())).shape
        t = self.transform
        b = transform_bounds(self.crs, "EPSG:4326", t.c, t.f + rows * t.e, t.c + cols * t.a, t.f)
        return box(*b)

    def item(self) -> dict:
        props = {"datetime": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"), "platform": self.platform, "gsd": self.gsd,
                 **self.extra}
        if self.cloud_cover is not None:
            props["eo:cloud_cover"] = self.cloud_cover
        return {"type": "Feature", "stac_version": "1.0.0", "id": self.id, "collection": self.collection,
                "geometry": mapping(self.footprint), "bbox": list(self.footprint.bounds), "properties": props,
                "assets": {}, "links": []}


class _NotFound(Exception):
    """A collection the service does not hold (answered HTTP 404)."""


class FakeSentinelHub:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, *, client_id: str = "test-client", client_secret: str = "test-secret",
                 token_lifetime_s: int = 3600, retry_after_ms: int = 150, strict_collections: bool = False) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        #: As the real service: a catalog or process request for a collection it does not
        #: hold (a wrong BYOC id) is answered HTTP 404. Off by default: an unknown
        #: collection then has no scenes (empty search, empty image).
        self.strict_collections = strict_collections
        self.token_lifetime_s, self.retry_after_ms = token_lifetime_s, retry_after_ms
        self.scenes: list[Scene] = []
        self.tokens: dict[str, float] = {}
        self.hits: Counter = Counter()
        self.bodies: dict[str, list] = defaultdict(list)
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._runner: Path | None = None  # the Node.js worker script, written by start()
        self._httpd: ThreadingHTTPServer | None = None
        self._node: subprocess.Popen | None = None
        self._node_lock = threading.Lock()

    # -- control ---------------------------------------------------------------------
    def start(self) -> "FakeSentinelHub":
        server = self
        self._runner = Path(tempfile.mkdtemp(prefix="fake-sh-")) / "runner.js"
        self._runner.write_text(_RUNNER)

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._node is not None:
            self._node.stdin.close()
            self._node.wait(timeout=10)
            self._node = None
        if self._runner is not None:
            shutil.rmtree(self._runner.parent, ignore_errors=True)
            self._runner = None

    def __enter__(self) -> "FakeSentinelHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"

    def fail(self, endpoint: str, kind: str, times: int = 1) -> None:
        """Make the next ``times`` requests to ``endpoint`` (token, catalog, process) fail with ``kind``.

        Kinds: ``429`` (with Retry-After), ``500``, ``expire`` (the token revoked), ``bad_json``
        and ``no_context`` (catalog), ``truncate`` (process), or any other HTTP status as digits
        (``"400"``, ``"404"``, ``"408"``, ``"503"``...), answered with Sentinel Hub's error body.
        """
        with self._lock:
            self._failures[endpoint].extend([kind] * times)

    def next_failure(self, endpoint: str) -> str | None:
        with self._lock:
            queue = self._failures[endpoint]
            return queue.popleft() if queue else None

    def _evaluate(self, payload: dict) -> dict:
        """Run an evalscript over the samples in the Node.js worker (started on first use)."""
        with self._node_lock:
            if self._node is None or self._node.poll() is not None:
                self._node = subprocess.Popen(["node", str(self._runner)], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE)
            self._node.stdin.write(json.dumps(payload).encode() + b"\n")
            self._node.stdin.flush()
            line = self._node.stdout.readline()
        if not line:
            raise RuntimeError("the Node.js evalscript worker exited")
        return json.loads(line)

    def add_scene(self, scene: Scene) -> Scene:
        self.scenes.append(scene)
        return scene

    def reset_counts(self) -> None:
        self.hits.clear()
        self.bodies.clear()

    # -- API logic -------------------------------------------------------------------
    def issue_token(self, form: dict[str, str]) -> tuple[int, dict]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Invalid client credentials"}
        header = base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=")
        claims = {"azp": self.client_id, "exp": int(time.time()) + self.token_lifetime_s, "jti": secrets.token_hex(8)}
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        token = f"{header}.{payload}.sig"
        with self._lock:
            self.tokens[token] = time.time() + self.token_lifetime_s
        return 200, {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer",
                     "scope": ""}

    def authorised(self, header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return None
        token = header[len("Bearer "):]
        with self._lock:
            expiry = self.tokens.get(token)
        return token if expiry is not None and expiry > time.time() else None

    def revoke(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def known(self, collection: str) -> bool:
        """Whether the service holds ``collection`` (always, unless ``strict_collections``)."""
        return not self.strict_collections or any(s.collection == collection for s in self.scenes)

    def search(self, body: dict) -> dict:
        collections = body.get("collections") or []
        if len(collections) != 1:
            raise ValueError("exactly one collection must be given")
        if not self.known(collections[0]):
            raise _NotFound(f"Collection {collections[0]} not found")
        start, end = _interval(body.get("datetime"))
        area = shape(body["intersects"]) if "intersects" in body else box(*body["bbox"]) if "bbox" in body else None
        clauses = [c for c in (body.get("filter") or "").split(" AND ") if c.strip()]
        matched = []
        for scene in sorted(self.scenes, key=lambda s: (s.time, s.id)):
            item = scene.item()
            if scene.collection != collections[0]:
                continue
            if start and not start <= scene.time <= end:
                continue
            if area is not None and not area.intersects(scene.footprint):
                continue
            if all(_clause_ok(c, item["properties"]) for c in clauses):
                matched.append(item)
        limit = int(body.get("limit", 10))
        offset = int(body.get("next") or 0)
        page = matched[offset:offset + limit]
        context = {"limit": limit, "returned": len(page)}
        if offset + limit < len(matched):
            context["next"] = offset + limit
        return {"type": "FeatureCollection", "features": page, "links": [], "context": context}

    def process(self, body: dict) -> tuple[bytes, str]:
        bounds = body["input"]["bounds"]
        crs = "EPSG:" + bounds["properties"]["crs"].rstrip("/").split("/")[-1]
        xmin, ymin, xmax, ymax = bounds["bbox"]
        width, height = int(body["output"]["width"]), int(body["output"]["height"])
        if width > 2500 or height > 2500:
            raise ValueError(f"output size {width}x{height} exceeds the 2500 px limit")
        data = body["input"]["data"][0]
        if not self.known(data["type"]):
            raise _NotFound(f"Collection {data['type']} not found")
        tr = data.get("dataFilter", {}).get("timeRange", {})
        start, end = _parse(tr["from"]), _parse(tr["to"])
        area = box(*transform_bounds(crs, "EPSG:4326", xmin, ymin, xmax, ymax))
        candidates = [s for s in self.scenes if s.collection == data["type"] and start <= s.time <= end
                      and s.footprint.intersects(area)]
        dst = from_bounds(xmin, ymin, xmax, ymax, width, height)
        bands: dict[str, np.ndarray] = {}
        if candidates:
            scene = max(candidates, key=lambda s: s.time)  # mostRecent
            valid = None
            for name, src in scene.bands.items():
                out = np.full((height, width), np.nan, dtype="float32")
                reproject(src.astype("float32"), out, src_transform=scene.transform, src_crs=scene.crs,
                          dst_transform=dst, dst_crs=crs, resampling=Resampling.nearest, src_nodata=np.nan,
                          dst_nodata=np.nan)
                bands[name] = out
                valid = ~np.isnan(out) if valid is None else valid & ~np.isnan(out)
            bands["dataMask"] = valid.astype("float32")
            bands = {k: np.nan_to_num(v, nan=0.0) if k != "dataMask" else v for k, v in bands.items()}
            names = list(scene.bands)
        else:  # Sentinel Hub answers "no data" with an empty image, not an error
            names = _collection_bands(data["type"])
            bands = {n: np.zeros((height, width), "float32") for n in names + ["dataMask"]}
        payload = {"evalscript": body["evalscript"], "width": width, "height": height, "collection": data["type"],
                   "bands": {k: base64.b64encode(np.ascontiguousarray(v, "<f4").tobytes()).decode()
                             for k, v in bands.items()}}
        result = self._evaluate(payload)
        if "error" in result:
            raise ValueError(result["error"])
        files = {}
        for o in result["outputs"]:
            arr = np.frombuffer(base64.b64decode(o["data"]), "<f4").reshape(height, width, o["bands"])
            files[f"{o['id']}.tif"] = _geotiff(arr, o["sampleType"], crs, dst)
        responses = body["output"]["responses"]
        if len(responses) == 1:
            want = responses[0]["identifier"]
            return files[f"{want}.tif"], "image/tiff"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for r in responses:
                content = files[f"{r['identifier']}.tif"]
                info = tarfile.TarInfo(f"{r['identifier']}.tif")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return buf.getvalue(), "application/x-tar"


def _collection_bands(collection: str) -> list[str]:
    if collection == "sentinel-1-grd":
        return ["VV", "VH"]
    if collection == "sentinel-2-l2a":
        return ["B02", "B03", "B04", "B08", "SCL", "CLM"]
    return []


def _geotiff(arr: np.ndarray, sample_type: str, crs: str, transform) -> bytes:
    if sample_type == "FLOAT32":
        data, dtype = arr, "float32"
    elif sample_type == "UINT16":
        data, dtype = np.clip(np.nan_to_num(arr), 0, 65535).round(), "uint16"
    elif sample_type == "UINT8":
        data, dtype = np.clip(np.nan_to_num(arr), 0, 255).round(), "uint8"
    else:  # AUTO: 0..1 stretched to 0..255
        data, dtype = np.clip(np.nan_to_num(arr) * 255, 0, 255).round(), "uint8"
    h, w, b = arr.shape
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=w, height=h, count=b, dtype=dtype, crs=crs, transform=transform,
                      interleave="pixel") as dst:
            dst.write(np.moveaxis(data, -1, 0).astype(dtype))
        return mem.read()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _interval(text: str | None):
    if not text:
        return None, None
    a, b = text.split("/")
    return _parse(a), _parse(b)


def _clause_ok(clause: str, props: dict) -> bool:
    m = _CLAUSE.match(clause)
    if not m:
        raise ValueError(f"cannot parse filter clause {clause!r}")
    key, op, raw = m.groups()
    if key not in props:
        return False
    value = props[key]
    other: Any = raw
    if isinstance(value, (int, float)):
        other = float(raw)
    return {"<=": value <= other, ">=": value >= other, "<": value < other, ">": value > other,
            "=": value == other}[op]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeSentinelHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"error": {"status": status, "reason": self.responses.get(status, ("",))[0],
                                      "message": message}}, headers)

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        path = self.path.split("?")[0]
        endpoint = {"/oauth/token": "token", "/api/v1/catalog/1.0.0/search": "catalog",
                    "/api/v1/process": "process"}.get(path)
        if endpoint is None:
            return self._error(404, f"no such endpoint {path}")
        hub = self.hub
        with hub._lock:
            hub.hits[endpoint] += 1
        failure = hub.next_failure(endpoint)
        if failure == "429":
            return self._error(429, "You have exceeded your rate limit",
                               {"Retry-After": str(hub.retry_after_ms)})
        if failure == "500":
            return self._error(500, "Internal server error")
        if failure is not None and failure.isdigit():
            return self._error(int(failure), f"simulated HTTP {failure}")
        if endpoint == "token":
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            status, obj = hub.issue_token(form)
            return self._json(status, obj)
        token = hub.authorised(self.headers.get("Authorization"))
        if token is None:
            return self._error(401, "Token is not valid or has expired")
        if failure == "expire":
            hub.revoke(token)
            return self._error(401, "Token is expired")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "request body is not JSON")
        hub.bodies[endpoint].append(body)
        if endpoint == "catalog":
            if failure == "bad_json":
                return self._send(200, b'{"type": "FeatureCollection", "features": [', "application/json")
            try:
                reply = hub.search(body)
            except (KeyError, ValueError) as exc:
                return self._error(400, f"invalid search: {exc}")
            except _NotFound as exc:
                return self._error(404, str(exc))
            if failure == "no_context":
                reply.pop("context")
            return self._json(200, reply)
        try:
            content, ctype = hub.process(body)
        except (KeyError, ValueError) as exc:
            return self._error(400, f"invalid process request: {exc}")
        except _NotFound as exc:
            return self._error(404, str(exc))
        if failure == "truncate":
            content = content[: len(content) // 2]
        return self._send(200, content, ctype)


def scene_from_files(paths: dict[str, Path], *, scale: float = 1.0, **kwargs) -> Scene:
    """A :class:`Scene` from single-band rasters on one grid (band name → file), values × ``scale``."""
    bands, crs, transform = {}, None, None
    for name, path in paths.items():
        with rasterio.open(path) as src:
            bands[name] = src.read(1).astype("float32") * scale
            crs, transform = src.crs.to_string(), src.transform
    return Scene(crs=crs, transform=transform, bands=bands, **kwargs)


@contextmanager
def serving(server: "FakeSentinelHub", monkeypatch):
    """Start ``server`` and point the real ``sentinelhub`` client at it for the block.

    Sets the client's credentials (the server's own), its base and token URLs and plain
    HTTP (``OAUTHLIB_INSECURE_TRANSPORT``) through ``monkeypatch``, and drops the client's
    cached sessions before and after, so no token of another test's server is reused.
    """
    from sentinelhub import SentinelHubDownloadClient

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("SH_CLIENT_ID", server.client_id)
    monkeypatch.setenv("SH_CLIENT_SECRET", server.client_secret)
    SentinelHubDownloadClient.clear_cache()
    try:
        with server:
            monkeypatch.setenv("SH_BASE_URL", server.url)
            monkeypatch.setenv("SH_TOKEN_URL", server.token_url)
            yield server
    finally:
        SentinelHubDownloadClient.clear_cache()
