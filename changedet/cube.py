"""Per-AOI imagery cube: a Zarr store (time, band, y, x) plus a provenance record.

One store per AOI, sensor and resolution, on one fixed pixel grid, on a local path (the
default) or any fsspec URL (``s3://bucket/changedet``, ``memory://`` in tests).

Appends are

idempotent
    keyed on the scene id, and on the SHA-256 of the pixels (the same acquisition
    delivered under another id by another catalogue is not stored twice);
serialised
    by a lock per store: on a local path an ``flock`` on ``<store>.lock``, which the
    kernel releases when the holder dies. A writer that cannot get it within
    ``lock_timeout`` seconds raises :class:`CubeLocked` (the caller may skip the AOI);
    ``None`` waits for as long as it takes. On a remote store (fsspec URL) the lock is a
    lease object ``<store>.lock`` (owner token plus expiry, renewed by nobody): a writer
    waits while an unexpired lease of another owner exists, then writes its own and
    reads it back. Object stores without conditional writes cannot make this atomic, so
    two writers starting within the read-back delay can both proceed; run one writer
    per AOI there (e.g. a Prefect concurrency limit tagged with the AOI id). Writers in
    one process are always serialised exactly;
crash-safe
    zarr writes every chunk and metadata document atomically (temporary file and
    rename); pixels are written first, then the provenance record is replaced in one operation
    (an atomic rename locally, a single PUT on object stores). Readers only trust time
    steps the provenance lists and the next writer trims any step a crash left behind,
    so a killed run leaves a readable cube and its scene is fetched again next time;
O(scene)
    an append resizes the arrays and writes the new chunks only; nothing already stored
    is read or rewritten, apart from the (small) provenance record.

A store that cannot be used raises :class:`CubeStoreError` naming the store (credentials
cut out of the URL) and the fix: unknown protocol, fsspec backend not installed,
credentials in the URL, permission denied, bucket or folder missing, disk full. One that
does not answer (network, timeout, a 5xx, a stale NFS handle) raises
:class:`CubeStoreUnavailable`, also a :class:`~changedet.errors.StoreError`, which the
flows retry. Pixels of :meth:`Cube.read` are read lazily: a store failing after ``read``
returned fails in the computation, with the backend's own error.
"""

from __future__ import annotations

import contextlib
import functools
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time as _time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from changedet.errors import ChangedetError, CubeError, StoreError
from changedet.grid import GridSpec, with_crs
from changedet.sources.base import CLOUD_BAND, SCL_BAND, SceneRecord

log = logging.getLogger(__name__)

_FORMAT = 1
_FILL_U16 = 65535
_SCALE = 1e-4
#: Lease length of a remote-store lock, seconds: longer than any single append.
REMOTE_LEASE_S = 600.0
#: Pause between writing a remote lease and reading it back (lets a racing writer's PUT land).
_REMOTE_SETTLE_S = 0.2
_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _number(v: Any) -> float | None:
    """JSON-safe number: unknown (NaN) becomes null."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


class CubeLocked(CubeError):
    """Another writer holds the cube's lock longer than this writer was willing to wait."""


class CubeRaced(CubeError):
    """Another run stored a series' first day while this one made its own reference: nothing
    was stored, and a run of the day again registers it onto that run's reference (transient)."""


class CubeStoreError(CubeError):
    """The cube's store cannot be used: unknown protocol, backend not installed, credentials
    in the URL, permission denied, bucket or folder missing, disk full or read-only, an
    invalid request, a configuration error (missing credentials, unknown region or endpoint).
    Retrying will not help. Only these known-permanent cases are plain CubeStoreErrors."""


class CubeStoreUnavailable(CubeStoreError, StoreError):
    """The cube's store did not answer or failed in a way that may pass: network down,
    endpoint unreachable, timeout, a 5xx (s3fs: ``OSError(EREMOTEIO)``), a connection or
    payload cut mid-transfer, and any other store failure not known to be permanent.

    Also a :class:`~changedet.errors.StoreError`, which flows retry as transient: a later
    attempt may succeed. Scenes already stored are kept; one cut off mid-write is not in
    the provenance record, so readers ignore it and the next fetch stores it again."""


#: ``scheme://user:secret@`` up to the *last* ``@`` of the URL: a secret may hold ``/`` or ``@``
#: (about half of AWS secret keys hold a ``/``), so stopping at the first of either leaked it.
_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s'\"]*@")
_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#'\"]*)[?#][^\s'\"]*")
#: storage_options keys whose values are secrets, masked in error text.
_SECRET_OPTION = re.compile(r"(?i)(secret|password|token|key|credential|sas|sig)")


def _strip_credentials(text: str) -> str:
    """``text`` with ``user:password@`` masked as ``***@`` and query strings (signed URLs) cut out of every URL."""
    return _QUERY.sub(r"\1", _CREDENTIALS.sub(r"\1***@", str(text)))


def _remote_errors() -> tuple[type[BaseException], ...]:
    """Network error classes of the fsspec backends that are installed (not OSError subclasses)."""
    found: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError

        found.append(BotoCoreError)
    with contextlib.suppress(ImportError):
        from aiohttp import ClientError

        found.append(ClientError)
    return tuple(found)


#: Backend (botocore) error names that say the store's configuration is wrong: a missing or
#: partial credential, a misspelt region or endpoint, a bad parameter. Retrying cannot help.
_CONFIG_ERROR_NAME = re.compile(r"Credential|Validation|Config|Unknown|Invalid|Unsupported|NoRegion|ProfileNotFound"
                                r"|EndpointResolution|NoAuthToken|MissingParameters|MissingDependency|"
                                r"ServiceNotInRegion|Login|SSO")


def _permanent_backend_error(exc: BaseException) -> bool:
    """Whether a backend (botocore/aiohttp) error that is not an OSError is a configuration error.

    Only the known-permanent cases are listed; every other backend error (a dropped
    connection, a payload cut mid-transfer, a 5xx) is taken as transient, as flows retried
    it before stores had their own error classes.
    """
    status = getattr(exc, "status", None)
    if type(exc).__name__ == "ClientResponseError" or isinstance(status, int):
        # aiohttp: a 4xx answer is final, except 408 (request timeout) and 429 (throttled).
        return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)
    if isinstance(exc, ValueError):  # aiohttp's InvalidURL and friends
        return True
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError

        if isinstance(exc, BotoCoreError):
            return bool(_CONFIG_ERROR_NAME.search(type(exc).__name__))
    return False


def is_url(root: str | Path) -> bool:
    """Whether ``root`` names an fsspec store (``s3://``, ``memory://``...) rather than a local path."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


def _guarded(what: str):
    """Method decorator: store failures inside become :class:`CubeStoreError` naming ``what``."""
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            with self._store_errors(what):
                return method(self, *args, **kwargs)
        return wrapper
    return decorate


def _process_lock(key: str) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(key, threading.Lock())


class Cube:
    """The imagery cube of one AOI and sensor.

    Parameters
    ----------
    root : path or str
        Data directory or fsspec URL; the store is ``root/cubes/<aoi_id>/<sensor>_<res>m.zarr``.
    aoi_id, sensor : str
    grid : GridSpec
        The AOI's grid for this sensor; a store written on another grid is refused.
    reflectance : bool
        Store as uint16 × 1e-4 (reflectance 0..6.5); otherwise float32 (SAR backscatter).
    lock_timeout : float, optional
        Seconds a writer waits for another writer; ``None`` waits indefinitely.
    storage_options : dict, optional
        Passed to fsspec for URL roots (credentials come from the usual fsspec/boto
        environment and are never stored in the cube).
    """

    def __init__(self, root: str | Path, aoi_id: str, sensor: str, grid: GridSpec, *,
                 reflectance: bool = True, lock_timeout: float | None = None,
                 storage_options: dict[str, Any] | None = None, product: str | None = None) -> None:
        self.aoi_id, self.sensor, self.grid = aoi_id, sensor, grid
        if product is not None and not re.fullmatch(r"[a-z][a-z0-9]*", product):
            raise CubeError(f"cube product name {product!r} must be lower-case letters and digits, e.g. 'acquired'")
        # Several cubes of one sensor and grid can sit side by side: the pipeline's
        # co-registered slices (no product name) and, say, raw acquisitions from
        # ``changedet fetch`` (product "acquired"), so one never masks the other's scenes.
        self.product = product
        # Reflectance (0..6.5) is stored as uint16 x 1e-4, as L2A products do: half the
        # bytes of float32 and well below sensor noise; SAR backscatter stays float32.
        self.reflectance = reflectance
        self.lock_timeout = lock_timeout
        self.storage_options = dict(storage_options or {})
        stem = f"{sensor}_{grid.resolution:g}m" + (f"_{product}" if product else "")
        self._stem = stem
        self.remote = is_url(root)
        if self.remote:
            base = f"{str(root).rstrip('/')}/cubes/{aoi_id}"
            self._base: Any = base
            self._fs = self._filesystem(str(root), base)
            self.path: Any = f"{base}/{stem}.zarr"
            self.provenance_path: Any = f"{base}/{stem}.provenance.json"
            self.reference_path: Any = f"{base}/{stem}.reference.tif"
            self.registration_path: Any = f"{base}/{stem}.registration.tif"
            self._lock_path: Any = f"{base}/{stem}.lock"
        else:
            if isinstance(root, str) and root.startswith("file://"):
                root = root[len("file://"):]
            base_p = Path(root) / "cubes" / aoi_id
            self._base = base_p
            self._fs = None
            self.path = base_p / f"{stem}.zarr"
            self.provenance_path = base_p / f"{stem}.provenance.json"
            self.reference_path = base_p / f"{stem}.reference.tif"
            self.registration_path = base_p / f"{stem}.registration.tif"
            self._lock_path = base_p / f"{stem}.lock"

    # ------------------------------------------------------------------ store errors
    def _filesystem(self, root: str, base: str):
        """The fsspec filesystem of a URL root, or a :class:`CubeStoreError` saying what to fix."""
        import fsspec

        protocol, _, rest = root.partition("://")
        shown = _strip_credentials(root)
        if "@" in rest:
            # s3fs and friends take no credentials from the URL: "s3://key:secret@bucket" failed
            # deep in botocore with a message that printed the secret. Any "@" is refused, not
            # only one before the first "/": a secret may hold "/" or "@" itself, so where the
            # credentials end cannot be told; only the text after the last "@" is shown.
            shown = _strip_credentials(f"{protocol}://{rest.rpartition('@')[2]}")
            raise CubeStoreError(f"cube store {protocol}://***@{shown.partition('://')[2]}: the URL "
                                 f"carries credentials (or an '@', which is read as credentials); give {shown} "
                                 "and put them "
                                 "in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for s3://, "
                                 "GOOGLE_APPLICATION_CREDENTIALS for gs://) or in storage_options")
        try:
            return fsspec.core.url_to_fs(base, **self.storage_options)[0]
        except ImportError as exc:
            raise CubeStoreError(f"cube store {shown}: the fsspec backend for {protocol}:// is not installed "
                                 f"({self._clean(exc)}); install it (s3fs for s3://, gcsfs for gs://, adlfs for "
                                 "az://) or use a local path") from None
        except ValueError as exc:
            if "protocol" not in str(exc).lower():
                raise
            raise CubeStoreError(f"cube store {shown}: unknown storage protocol {protocol}://; use a local path or "
                                 "an fsspec URL such as s3://bucket/prefix, gs://bucket/prefix or file:///path"
                                 ) from None

    def _clean(self, exc: BaseException) -> str:
        """One line of ``exc``'s text without credentials (URLs' or the storage options' secrets)."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        for key, value in self.storage_options.items():
            if isinstance(value, str) and len(value) >= 4 and _SECRET_OPTION.search(str(key)):
                text = text.replace(value, "***")
        return _strip_credentials(text)[:300]

    def _store_name(self) -> str:
        return _strip_credentials(str(self.path))

    @contextlib.contextmanager
    def _store_errors(self, what: str) -> Iterator[None]:
        """Turn the store's own failures (OSError, backend errors) into clear cube errors.

        Errors changedet raises on purpose (:class:`CubeError`, :class:`CubeLocked`) and
        bugs (anything else) pass through unchanged.
        """
        try:
            yield
        except CubeError:
            raise
        except (OSError, ImportError, *_remote_errors()) as exc:
            raise self._store_error(exc, what) from None
        except NotImplementedError as exc:
            if not self.remote:
                raise
            # fsspec's answer when a protocol lacks an operation (http:// cannot write).
            raise CubeStoreError(f"cube store {self._store_name()}: cannot {what}: its protocol does not support "
                                 f"it ({self._clean(exc)}); use a writable store (a local path, s3://, gs://)"
                                 ) from None

    def _store_error(self, exc: BaseException, what: str) -> CubeStoreError:
        import errno

        where = f"cube store {self._store_name()}: cannot {what}"
        text = f"{type(exc).__name__}: {self._clean(exc)}"
        if isinstance(exc, ImportError):
            return CubeStoreError(f"{where}: a package the store needs is missing ({text}); install it")
        if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
            fix = ("check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS) "
                   "and that they may read and write under the prefix") if self.remote else (
                   "give the user running changedet write access to it, or choose another --data-dir")
            return CubeStoreError(f"{where}: permission denied ({text}); {fix}")
        if isinstance(exc, FileNotFoundError):
            fix = ("create the bucket, or fix the store URL (CHANGEDET_STORE_URL)" if self.remote
                   else "create the folder, or fix --data-dir")
            return CubeStoreError(f"{where}: it does not exist ({text}); {fix}")
        code = getattr(exc, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return CubeStoreError(f"{where}: {text}; free space or make it writable, then run again "
                                  "(stored scenes are kept)")
        if isinstance(exc, (NotADirectoryError, IsADirectoryError)) or code in (
                errno.EINVAL, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG):
            return CubeStoreError(f"{where}: the store refused the request as invalid ({text}); check the store "
                                  "URL (CHANGEDET_STORE_URL or --data-dir)")
        if not isinstance(exc, OSError) and _permanent_backend_error(exc):
            return CubeStoreError(f"{where}: the store is not configured right ({text}); check the store URL, "
                                  "region, endpoint and credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                  "GOOGLE_APPLICATION_CREDENTIALS, or storage_options)")
        # Everything else (an S3 500 is OSError(EREMOTEIO), a dropped connection, a payload cut
        # mid-transfer, EIO on a network mount) may pass: flows retry CubeStoreUnavailable.
        check = ("the network, the endpoint and that the service is up" if self.remote
                 else "the disk or network mount it is on")
        return CubeStoreUnavailable(f"{where}: the store did not answer ({text}); check {check}, then run "
                                    "again (stored scenes are kept; one cut off mid-write is not listed and "
                                    "is fetched again)")

    # ------------------------------------------------------------------ storage helpers
    def _exists(self, path) -> bool:
        return self._fs.exists(path) if self.remote else Path(path).exists()

    def _read_text(self, path) -> str | None:
        if self.remote:
            try:
                return self._fs.cat_file(path).decode()
            except FileNotFoundError:
                return None
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None

    def _store(self):
        """What zarr and xarray open: a path, or an fsspec store for URLs."""
        if not self.remote:
            return str(self.path)
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.path, storage_options=self.storage_options or None, read_only=False)

    def _rm_store(self) -> None:
        if self.remote:
            if self._fs.exists(self.path):
                self._fs.rm(self.path, recursive=True)
        elif self.path.exists():
            import shutil

            shutil.rmtree(self.path)

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        key = str(self._lock_path)
        plock = _process_lock(key)
        deadline = None if self.lock_timeout is None else _time.monotonic() + self.lock_timeout
        if not plock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - _time.monotonic())):
            raise self._locked_error()
        try:
            if self.remote:
                with self._remote_lease(deadline):
                    yield
            else:
                with self._flock(deadline):
                    yield
        finally:
            plock.release()

    def _locked_error(self) -> CubeLocked:
        return CubeLocked(f"cube {self.path} is being written by another run and stayed locked for "
                          f"{self.lock_timeout:g} s; this run skipped it. Re-run later (nothing was changed) "
                          "or give a longer --lock-timeout")

    @contextlib.contextmanager
    def _flock(self, deadline: float | None) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as fh:
            if deadline is None:
                fcntl.flock(fh, fcntl.LOCK_EX)
            else:
                while True:
                    try:
                        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if _time.monotonic() >= deadline:
                            raise self._locked_error() from None
                        _time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _remote_lease(self, deadline: float | None) -> Iterator[None]:
        token = uuid.uuid4().hex
        while True:
            held = self._read_text(self._lock_path)
            lease = None
            if held:
                with contextlib.suppress(ValueError, TypeError):
                    lease = json.loads(held)
            if not lease or lease.get("expires", 0) < _time.time():
                self._fs.pipe_file(self._lock_path, json.dumps(
                    {"owner": token, "expires": _time.time() + REMOTE_LEASE_S}).encode())
                _time.sleep(_REMOTE_SETTLE_S)
                with contextlib.suppress(ValueError, TypeError):
                    if json.loads(self._read_text(self._lock_path) or "{}").get("owner") == token:
                        break
            if deadline is not None and _time.monotonic() >= deadline:
                raise self._locked_error()
            _time.sleep(0.1)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError, ValueError):
                if json.loads(self._read_text(self._lock_path) or "{}").get("owner") == token:
                    self._fs.rm_file(self._lock_path)

    # ------------------------------------------------------------------ provenance
    @_guarded("read its provenance record")
    def _read_provenance(self) -> dict[str, Any]:
        text = self._read_text(self.provenance_path)
        if text is None:
            return {"format": _FORMAT, "aoi_id": self.aoi_id, "sensor": self.sensor, "scenes": []}
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CubeError(f"{self.provenance_path}: provenance record is corrupt ({exc}); "
                            "restore it from backup or delete the cube to rebuild it") from None
        return doc

    def _write_provenance(self, doc: dict[str, Any]) -> None:
        payload = _dump_provenance(doc)
        if self.remote:
            # One PUT: object stores replace an object atomically.
            self._fs.pipe_file(self.provenance_path, payload.encode())
            return
        tmp = self.provenance_path.with_name(self.provenance_path.name + ".tmp")
        tmp.write_text(payload)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.provenance_path)

    def scenes(self) -> list[dict[str, Any]]:
        """Provenance entries of stored scenes, sorted by acquisition time."""
        return sorted(self._read_provenance()["scenes"], key=lambda s: pd.Timestamp(s["time"]))

    def skipped(self) -> list[dict[str, Any]]:
        """Scenes a fetch or run decided not to store (too cloudy, unreadable...), with the reason, by time.

        Records a stored scene superseded are left out (:func:`_superseded_in`; cubes written
        before :meth:`append` dropped them still hold them).
        """
        return _live_skipped(self._read_provenance())

    def has(self, scene_id: str) -> bool:
        return any(s["scene_id"] == scene_id for s in self._read_provenance()["scenes"])

    @_guarded("annotate a stored scene")
    def annotate(self, scene_id: str, fields: dict[str, Any]) -> None:
        """Merge ``fields`` (e.g. ``{"coreg": {"shift_row_px": ...}}``) into a stored scene's provenance.

        Top-level keys are replaced; the identity of the slice (``index``, ``scene_id``,
        ``time``, ``sha256``) cannot be changed. Runs under the cube lock.
        """
        protected = {"index", "scene_id", "time", "sha256"} & set(fields)
        if protected:
            raise CubeError(f"cannot annotate {sorted(protected)} of scene {scene_id}: they identify the stored "
                            "slice; annotate other fields only")
        json.dumps(fields, default=str)  # fail before taking the lock if it cannot be stored
        with self._locked():
            doc = self._read_provenance()
            for entry in doc["scenes"]:
                if entry["scene_id"] == scene_id:
                    entry.update(json.loads(json.dumps(fields, default=str)))
                    entry["annotated_at"] = datetime.now(timezone.utc).isoformat()
                    break
            else:
                raise CubeError(f"scene {scene_id!r} is not in the cube {self.path}; "
                                "annotate only scenes listed by Cube.scenes()")
            self._write_provenance(doc)

    @_guarded("record a skipped scene")
    def record_skipped(self, scene: SceneRecord, reason: str, **fields: Any) -> None:
        """Record that ``scene`` was not stored and why (replaces an earlier record of it)."""
        with self._locked():
            doc = self._read_provenance()
            skipped = [s for s in doc.get("skipped", []) if s["scene_id"] != scene.id]
            skipped.append({"scene_id": scene.id, "time": scene.time.isoformat(), "source": scene.source,
                            "platform": scene.platform, "cloud_cover": _number(scene.cloud_cover), "reason": reason,
                            "recorded_at": datetime.now(timezone.utc).isoformat(),
                            # Records from here on are told from older ones (_superseded_in).
                            "format": _ENTRY_FORMAT,
                            **json.loads(json.dumps(fields, default=str))})
            doc["skipped"] = skipped
            self._write_provenance(doc)

    # ------------------------------------------------------------------ writing
    def append(self, scene: SceneRecord, data: xr.DataArray, *, extra: dict[str, Any] | None = None,
               first: bool = False) -> bool:
        """Store one acquisition (already on the cube grid).

        Returns False, storing nothing, if a scene with that id or exactly those pixels
        is already there. With ``first`` (the day whose pixels made the cube's registration
        reference) the scene is stored only as the cube's first: when another run stored a
        scene meanwhile (two runs of a new AOI that both found no reference) it raises
        :class:`CubeError`, storing nothing, rather than keep two days in two frames.
        """
        if not GridSpec.of(data).same_as(self.grid):
            raise CubeError(f"scene {scene.id} is not on the cube grid of {self.aoi_id}/{self.sensor}; "
                            "reproject it with changedet.io.reproject_to(data, cube.grid) first")
        if scene.time.tzinfo is None:
            raise CubeError(f"scene {scene.id} has a time without timezone; give acquisition times in UTC")
        bands = [str(b) for b in data["band"].values]
        values = np.ascontiguousarray(np.asarray(data.values, dtype="float32"))
        digest = hashlib.sha256(values.tobytes()).hexdigest()
        with self._store_errors(f"store scene {scene.id}"):
            return self._append_locked(scene, data, bands, values, digest, extra, first)

    def _append_locked(self, scene: SceneRecord, data: xr.DataArray, bands: list[str], values: np.ndarray,
                       digest: str, extra: dict[str, Any] | None, first: bool = False) -> bool:
        with self._locked():
            doc = self._read_provenance()
            if any(s["scene_id"] == scene.id or s.get("sha256") == digest for s in doc["scenes"]):
                return False
            n = len(doc["scenes"])
            if first and n:
                held = min(doc["scenes"], key=lambda e: int(e.get("index", 0)))["scene_id"]
                raise CubeRaced(f"scene {scene.id} was registered onto a reference made from its own pixels, but "
                                f"another run stored scene {held} in {self.path} meanwhile, with its own reference; "
                                "nothing was stored. Run this day again: it is then registered onto that reference")
            if n and not _same_bands(doc.get("bands") or [], bands):
                held = [str(b) for b in doc.get("bands") or []]
                hint = ""
                if any(b.upper() in ("SCL", "CLM") and b != b.upper() for b in held):
                    # Cubes made before CLM/SCL were read in upper case whatever the file's
                    # case hold a lower-case "scl" or "clm" as a data band.
                    hint = ("; the cube was made when a lower-case scl/clm band was read as data: move the cube "
                            "aside (or use another --data-dir) and fetch again")
                raise CubeError(f"scene {scene.id} has bands {bands} but the cube holds {held}{hint}")
            t = pd.Timestamp(scene.time).tz_convert("UTC").tz_localize(None)
            if n and not self._exists(self.path):
                raise CubeError(f"{self.provenance_path} lists {n} scenes but the pixel store {self.path} is "
                                "missing; restore it, or delete the provenance record to rebuild the cube")
            if n:
                self._append_step(n, values, t)
            else:
                self._create(data, bands, t)
                doc["bands"] = bands
            path = (scene.properties or {}).get("path")
            doc["scenes"].append({
                "index": n, "scene_id": scene.id, "time": scene.time.isoformat(), "source": scene.source,
                "platform": scene.platform, "cloud_cover": _number(scene.cloud_cover), "sha256": digest,
                "stored_at": datetime.now(timezone.utc).isoformat(),
                # The source file, if any: a later record of it is matched by path and time.
                **({"path": str(path)} if path else {}),
                # Entries from here on name their file (``path``) or series (``entry``) when they
                # have one; older entries are matched to records by source and time (_superseded_in).
                "format": _ENTRY_FORMAT,
                **json.loads(json.dumps(extra or {}, default=str)),
            })
            # The acquisition is stored now: its earlier records go, also those of a file that
            # was replaced (a new file gets a new scene id), or `cube info` would list a stored
            # day as lost. Only records of this acquisition (see _superseded_in): they are deleted.
            keys = _supersede_keys([doc["scenes"][-1]])
            doc["skipped"] = [s for s in doc.get("skipped", []) if not _superseded_in(s, keys)]
            self._write_provenance(doc)
        return True

    def _create(self, data: xr.DataArray, bands: list[str], t: pd.Timestamp) -> None:
        # A store with no committed scene holds nothing of value (a crash on the first append).
        self._rm_store()
        values = data.astype("float32")
        if self.reflectance:
            values = values.clip(0.0, 6.5)
        # Variable-length strings have a Zarr v3 specification; fixed-width NumPy ones do not.
        values = values.assign_coords(band=np.array(bands, dtype=object))
        ds = values.expand_dims(time=[t]).to_dataset(name="data")
        ds = ds.drop_vars([c for c in ds.coords if c not in ("time", "band", "y", "x", "spatial_ref")])
        ds["data"].attrs = {}
        enc: dict[str, Any] = {"data": {"chunks": (1, len(bands), min(512, self.grid.shape[0]),
                                                   min(512, self.grid.shape[1]))}}
        if self.reflectance:
            enc["data"].update(dtype="uint16", scale_factor=_SCALE, add_offset=0.0, _FillValue=_FILL_U16)
        # Fixed units: otherwise xarray picks them from the first scene and a later
        # acquisition at another time of day cannot be represented exactly.
        enc["time"] = {"units": "microseconds since 1970-01-01", "dtype": "int64", "chunks": (1024,)}
        ds.attrs = {"aoi_id": self.aoi_id, "sensor": self.sensor, "crs_wkt": self.grid.crs.to_wkt(),
                    "grid_transform": list(self.grid.transform)[:6], "grid_shape": list(self.grid.shape)}
        ds.to_zarr(self._store(), mode="w", encoding=enc, consolidated=False)

    def _encode(self, values: np.ndarray) -> np.ndarray:
        if not self.reflectance:
            return values
        # The same CF encoding xarray applies on the first write: (v - 0) / 1e-4, rounded.
        with np.errstate(invalid="ignore"):
            q = np.round(np.clip(values, 0.0, 6.5) / _SCALE)
        return np.where(np.isnan(values), _FILL_U16, q).astype("uint16")

    def _append_step(self, n: int, values: np.ndarray, t: pd.Timestamp) -> None:
        """Write time step ``n`` directly with zarr: only the new chunks are touched."""
        import zarr

        g = zarr.open_group(self._store(), mode="r+")
        data_arr, time_arr = g["data"], g["time"]
        if tuple(data_arr.shape[1:]) != (values.shape[0],) + tuple(self.grid.shape):
            raise CubeError(f"cube {self.path} holds arrays of shape {data_arr.shape[1:]}, not "
                            f"{(values.shape[0],) + tuple(self.grid.shape)}; it was written with another grid")
        # Time first, then pixels: both are beyond the committed steps until provenance lists them.
        for arr in (time_arr, data_arr):
            if arr.shape[0] != n + 1:
                arr.resize((n + 1,) + arr.shape[1:])
        time_arr[n] = np.int64((t - pd.Timestamp("1970-01-01")) // pd.Timedelta(microseconds=1))
        data_arr[n] = self._encode(values)

    def _trim(self, n: int) -> None:
        """Drop time steps beyond the ``n`` committed ones (left by a crash mid-append)."""
        import zarr

        g = zarr.open_group(self._store(), mode="r+")
        if g["time"].shape[0] > n:
            for name in ("data", "time"):
                arr = g[name]
                arr.resize((n,) + arr.shape[1:])

    # ------------------------------------------------------------------ reading
    @_guarded("read its scenes")
    def read(self, *, before: datetime | None = None, last: int | None = None,
             exclude: str | None = None) -> xr.DataArray | None:
        """Stored acquisitions as a lazy ``DataArray(time, band, y, x)``, sorted by time.

        ``before`` keeps acquisitions strictly earlier; ``last`` the most recent ones;
        ``exclude`` drops one scene id.
        """
        entries = self.scenes()
        if not entries or not self._exists(self.path):
            return None
        if exclude:
            entries = [e for e in entries if e["scene_id"] != exclude]
        if before is not None:
            cut = pd.Timestamp(before)
            cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
            entries = [e for e in entries if pd.Timestamp(e["time"]) < cut]
        if last is not None:
            entries = entries[-last:] if last > 0 else []
        if not entries:
            return None
        ds = xr.open_zarr(self._store() if self.remote else self.path, consolidated=False)
        da = ds["data"].isel(time=[e["index"] for e in entries])
        da = da.assign_coords(scene_id=("time", [e["scene_id"] for e in entries]))
        return with_crs(da.drop_vars("spatial_ref", errors="ignore"), self.grid.crs)

    @_guarded("measure its size")
    def size_bytes(self) -> int:
        """Bytes the pixel store occupies."""
        if self.remote:
            return int(self._fs.du(self.path)) if self._fs.exists(self.path) else 0
        if not self.path.exists():
            return 0
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def info(self) -> dict[str, Any]:
        """A summary for people: dates, sources, cloud, co-registration shifts, skipped scenes, size."""
        doc = self._read_provenance()
        entries = sorted(doc["scenes"], key=lambda s: pd.Timestamp(s["time"]))
        sources: dict[str, int] = {}
        for e in entries:
            sources[e.get("source", "?")] = sources.get(e.get("source", "?"), 0) + 1
        return {
            "aoi_id": self.aoi_id, "sensor": self.sensor, "resolution_m": self.grid.resolution,
            "product": self.product or "aligned",
            "path": str(self.path), "crs": self.grid.crs.to_string(), "shape": list(self.grid.shape),
            "bands": doc.get("bands", []), "n_scenes": len(entries), "sources": sources,
            "size_bytes": self.size_bytes(),
            "scenes": [{"time": e["time"], "scene_id": e["scene_id"], "source": e.get("source"),
                        "cloud_fraction": e.get("cloud_fraction"), "cloud_cover": e.get("cloud_cover"),
                        "cloud_mask": e.get("cloud_mask"), "coreg": e.get("coreg"),
                        # The day of the run that stored it (at the site), where the run recorded it.
                        **({"day": e["day"]} if e.get("day") else {})} for e in entries],
            "skipped": _live_skipped(doc),
        }

    # ------------------------------------------------------------------ reference
    @_guarded("read the registration reference")
    def reference(self) -> xr.DataArray | None:
        """The AOI's registration reference for this sensor, if one was set."""
        if self.remote:
            if not self._fs.exists(self.reference_path):
                return None
            info = self._fs.info(self.reference_path)
            return _read_remote_reference(self.reference_path, str(info.get("mtime", info.get("LastModified", ""))),
                                          int(info.get("size", 0)), self).copy()
        if not self.reference_path.exists():
            return None
        st = self.reference_path.stat()
        return _read_reference(str(self.reference_path), st.st_mtime_ns, st.st_size).copy()

    def pending_reference_of(self, scene_id: str) -> Any:
        """Where the reference made from scene ``scene_id`` waits to be promoted (a path or URL).

        One file per scene: two runs of a new AOI that both found no reference each write
        their own, and only the file of the cube's first stored scene is ever promoted.
        """
        # A scene id may hold any character: a readable part plus a digest of the whole id.
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(scene_id))[:80]
        digest = hashlib.sha1(str(scene_id).encode()).hexdigest()[:10]
        name = f"{self._stem}.reference.pending.{safe}.{digest}.tif"
        return f"{self._base}/{name}" if self.remote else self._base / name

    @_guarded("write the registration reference")
    def set_reference(self, data: xr.DataArray, *, pending: str | None = None) -> None:
        """Save ``data`` as the registration reference.

        With ``pending`` (the id of the scene ``data`` was made from) it is written under
        :meth:`pending_reference_of` and becomes the reference only by
        :meth:`promote_reference` once that scene is the cube's first stored one: a run
        saves the reference made from a day before it stores that day and promotes it
        after, so a crash in between leaves the exact reference on disk (promoted by the
        next run) rather than stored scenes without one.
        """
        from changedet.io import write_geotiff

        if pending is not None and not isinstance(pending, str):
            raise CubeError(f"set_reference(pending={pending!r}): give the id of the scene the reference was "
                            "made from (pending='<scene id>')")
        target = self.pending_reference_of(pending) if pending is not None else self.reference_path
        if not self.remote:
            write_geotiff(data, target)
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                local = write_geotiff(data, Path(tmp) / "reference.tif")
                self._fs.pipe_file(target, local.read_bytes())
        if pending is None:
            # A new reference: a registration window made from another one is stale.
            self._drop_stale_registration(reference_digest(data))

    @_guarded("promote the pending registration reference")
    def promote_reference(self, scene_id: str) -> bool:
        """Make the reference pending for ``scene_id`` (:meth:`set_reference`) the reference.

        Only when ``scene_id`` is the cube's first stored scene (the day the reference was
        made from, so every stored day is in its frame) and its pending file exists; else
        returns False, changing nothing. Checked and renamed under the cube lock, so a run
        storing a scene meanwhile cannot slip between. The rename replaces an existing
        reference file.
        """
        with self._locked():
            scenes = self._read_provenance().get("scenes", [])
            if not scenes or min(scenes, key=lambda e: int(e.get("index", 0)))["scene_id"] != scene_id:
                return False
            pending = self.pending_reference_of(scene_id)
            if self.remote:
                if not self._fs.exists(pending):
                    return False
                self._fs.mv(pending, self.reference_path)
                # (Its digest is not computed here (a download): the window is remade next run.)
                self._drop_stale_registration(None)
                return True
            if not pending.exists():
                return False
            digest = _pixels_digest_of(str(pending))
            os.replace(pending, self.reference_path)  # atomic on one file system
            self._drop_stale_registration(digest)
            return True

    def _drop_stale_registration(self, digest: str | None) -> None:
        """Remove the registration window reference unless it was made from the reference of pixel digest ``digest``.

        The window is a cache of the cube's reference read on a wider window (tag
        ``changedet_reference_digest``); once another reference is set it would register
        days into the old frame. Unreadable or untagged: removed too (it is remade).
        """
        try:
            if self.remote:
                if not self._fs.exists(self.registration_path):
                    return
                import tempfile

                import rasterio

                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp) / "registration.tif"
                    local.write_bytes(self._fs.cat_file(self.registration_path))
                    with rasterio.open(local) as src:
                        tag = src.tags().get("changedet_reference_digest")
                if digest is None or tag != digest:
                    self._fs.rm(self.registration_path)
                return
            if not self.registration_path.exists():
                return
            import rasterio

            try:
                with rasterio.open(self.registration_path) as src:
                    tag = src.tags().get("changedet_reference_digest")
            except rasterio.errors.RasterioError:
                tag = None  # a broken cache file: removed
            if digest is None or tag != digest:
                self.registration_path.unlink(missing_ok=True)
        except OSError as exc:
            # Harmless to leave: a window whose digest is not the reference's is refused and remade.
            log.warning("%s: the stale registration window %s was not removed (%s)", self.aoi_id,
                        self.registration_path, exc)

    @_guarded("read the registration window reference")
    def registration_reference(self) -> tuple[xr.DataArray, dict[str, str]] | None:
        """The reference on the registration window (wider than the grid), with its provenance; None if none.

        An addition to :meth:`reference` (which stays the reference on the cube's grid):
        a small site gives the shift estimate too few pixels, so sources that can read
        the ground around the site register on a wider window of the same lattice. The
        provenance (:data:`REGISTRATION_TAGS`) says which window and which reference it
        was made from; the caller checks both before using it.
        """
        if self.remote:
            if not self._fs.exists(self.registration_path):
                return None
            info = self._fs.info(self.registration_path)
            stamp = str(info.get("mtime", info.get("LastModified", "")))
            da, tags = _read_remote_tagged(self.registration_path, stamp, int(info.get("size", 0)), self)
        else:
            if not self.registration_path.exists():
                return None
            st = self.registration_path.stat()
            da, tags = _read_tagged(str(self.registration_path), st.st_mtime_ns, st.st_size)
        return da.copy(), dict(tags)

    @_guarded("write the registration window reference")
    def set_registration_reference(self, data: xr.DataArray, *, origin: str, window_px: int,
                                   reference_digest: str) -> None:
        """Save ``data`` (on a window around the cube's grid, same pixel size) as the registration window reference.

        Written whole or not at all (a temporary file moved into place; one PUT on a store
        URL), with its provenance in the file's tags: ``origin`` (what the cube's reference
        was made from, ``scene ID`` or ``file PATH``), ``window_px`` (the registration
        window side, pixels), ``reference_digest`` (:func:`reference_digest` of the cube's
        reference on its grid: the window is stale once that reference is another) and the
        window's bounds and the cube grid's bounds (map units).
        """
        from changedet.io import write_geotiff

        if not isinstance(origin, str) or not origin:
            raise CubeError(f"set_registration_reference(origin={origin!r}): give what the reference was made from "
                            "('scene <id>' or 'file <path>')")
        if not isinstance(reference_digest, str) or not reference_digest:
            raise CubeError(f"set_registration_reference(reference_digest={reference_digest!r}): give "
                            "reference_digest(<the cube's reference>) so a later reference makes this window stale")
        out = data.copy()
        win = GridSpec.of(data)
        out.attrs = {**{k: v for k, v in data.attrs.items() if k not in REGISTRATION_TAGS},
                     "changedet_reference_from": origin, "changedet_window_px": str(int(window_px)),
                     "changedet_reference_digest": reference_digest,
                     "changedet_window_bounds": json.dumps([round(v, 6) for v in win.bounds]),
                     "changedet_grid_bounds": json.dumps([round(v, 6) for v in self.grid.bounds])}
        if not self.remote:
            write_geotiff(out, self.registration_path)
            return
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            local = write_geotiff(out, Path(tmp) / "registration.tif")
            self._fs.pipe_file(self.registration_path, local.read_bytes())

    @_guarded("remove a pending registration reference")
    def discard_pending_reference(self, scene_id: str) -> None:
        """Remove the reference pending for ``scene_id``, if any (its day was not stored)."""
        pending = self.pending_reference_of(scene_id)
        if self.remote:
            if self._fs.exists(pending):
                self._fs.rm_file(pending)
        else:
            pending.unlink(missing_ok=True)


#: Format of scene entries that name their file (``path``) or series (``entry``) when they have one.
_ENTRY_FORMAT = 2


#: Bands found by their exact (upper-case) name: a lower-case "clm"/"scl" in an old cube was
#: stored as a data band, so it is not the same band as a new scene's cloud mask.
_EXACT_BANDS = frozenset({CLOUD_BAND, SCL_BAND})


def select_bands(da: xr.DataArray, names: Sequence[str]) -> xr.DataArray:
    """``da``'s bands ``names``, matched whatever their case, labelled ``names``.

    A cube keeps the band names it was created with (``b02`` from a local file) and
    accepts scenes that spell them otherwise (``B02`` from a catalogue, see
    :meth:`Cube.append`); readers select the cube's history with the new scene's names.

    Parameters
    ----------
    da : xarray.DataArray
        Has a ``band`` dimension (e.g. :meth:`Cube.read`).
    names : sequence of str
        Band names wanted, in this order.

    Raises
    ------
    CubeError
        If a name is missing, or matches only by case and more than one band.
    """
    held = [str(b) for b in da["band"].values]
    exact, by_case = set(held), {}
    for b in held:
        by_case.setdefault(b.upper(), []).append(b)
    picked = []
    for n in (str(x) for x in names):
        if n in exact:
            picked.append(n)
        elif len(by_case.get(n.upper(), [])) == 1:
            picked.append(by_case[n.upper()][0])
        else:
            raise CubeError(f"the cube has no band {n!r} (or several differing only by case); its bands are "
                            f"{held}: give scenes the cube's bands")
    out = da.sel(band=picked)
    return out if picked == list(names) else out.assign_coords(band=[str(x) for x in names])


def _same_bands(held: list[Any], new: list[str]) -> bool:
    """Whether a scene's bands are the cube's, in the same order, whatever their case.

    Band names are case-insensitive (``b02`` from a local file is ``B02`` from a
    catalogue); the cube keeps the names it was created with. The class bands
    (``CLM``, ``SCL``) must match exactly, and so must names that are unique only by
    case, where case is all that tells two bands apart.
    """
    held = [str(b) for b in held]
    if held == new:
        return True
    if len(held) != len(new) or any(b != c and _EXACT_BANDS & {b.upper(), c.upper()} for b, c in zip(held, new)):
        return False
    up_held, up_new = [b.upper() for b in held], [b.upper() for b in new]
    if len(set(up_held)) != len(up_held) or len(set(up_new)) != len(up_new):
        return False
    return up_held == up_new


def _supersede_keys(scenes: list[dict[str, Any]], old_records: bool = True) -> tuple[set, set, set, dict]:
    """``(ids, (path, time) pairs, (entry, time) pairs, {(source, time): stored_at})`` of stored
    scene entries, for :func:`_superseded_in`; the last is built only with ``old_records`` (:func:`_old_format`)."""
    ids, paths, entries, legacy = set(), set(), set(), {}
    for e in scenes:
        ids.add(e.get("scene_id"))
        t = _when(e.get("time"))
        if t is None:
            continue
        if e.get("path"):
            paths.add((str(e["path"]), t))
        if e.get("entry"):
            entries.add((str(e["entry"]), t))
        # Every entry, old or new format, for the old-format records (see _superseded_in).
        if old_records:
            at = _when(e.get("stored_at"))
            key = (e.get("source"), t)
            if at is not None:
                legacy[key] = max(at, legacy.get(key, at))
    return ids, paths, entries, legacy


def _superseded_in(record: dict[str, Any], keys: tuple[set, set, set, dict]) -> bool:
    """Whether the skipped ``record`` is of an acquisition a stored scene entry holds (``keys``:
    :func:`_supersede_keys` of those entries).

    The same scene id; or, at the same acquisition time, the same source file (``path``,
    when the record names one: a local file replaced after it was found broken gets a new
    id, its mtime is part of it) or, for a record without a path, the same series entry
    (``entry``, e.g. ``"local vhr 0.5m path=/mnt/a"``). Two tiles of one day, or two
    folders of one source type, are other acquisitions; so is another day's file at the
    same path (a drop folder's ``latest.tif``). A record naming neither is superseded by
    its own id only, except an 86ae115-era record of a broken local file (:func:`_old_format`).
    """
    ids, paths, entries, legacy = keys
    if record.get("scene_id") in ids:
        return True
    t = _when(record.get("time"))
    if t is None:
        return False
    if record.get("path"):
        return (str(record["path"]), t) in paths
    if record.get("entry"):
        return (str(record["entry"]), t) in entries
    if not _old_format(record):
        return False  # e.g. a changedet fetch record (cloud): only its own id
    at = legacy.get((record.get("source"), t))
    if at is None:
        return False
    recorded = _when(record.get("recorded_at"))
    return recorded is None or recorded <= at


def _old_format(record: dict[str, Any]) -> bool:
    """Whether ``record`` is an 86ae115-era "cannot be loaded" record of a local file.

    Such a record (permanent, no path, no entry, no format) is matched by source and time,
    as 5f17f66 did, against any scene stored after it was recorded: the replaced file, run
    again with old or new code. Other records naming neither (``changedet fetch``'s cloud
    records of any code, which name no file: another tile of the same datatake shares their
    time) are matched by their own id only.
    """
    return (record.get("source") == "local" and bool(record.get("permanent")) and record.get("format") is None
            and not record.get("path") and not record.get("entry"))


def _when(value: Any) -> pd.Timestamp | None:
    """An acquisition time as a UTC timestamp (None when unreadable), for matching records to scenes."""
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if t is pd.NaT:
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _live_skipped(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The provenance's skipped records, by time, less those a stored scene superseded.

    One set lookup per record (the flows' cache key calls this for every AOI-day).
    """
    skipped = doc.get("skipped", [])
    keys = _supersede_keys(doc.get("scenes", []), old_records=any(_old_format(s) for s in skipped))
    live = [s for s in skipped if not _superseded_in(s, keys)]
    return sorted(live, key=lambda s: pd.Timestamp(s["time"]))


def _dump_provenance(doc: dict[str, Any]) -> str:
    """The provenance record as compact JSON (``changedet cube info`` is the readable view).

    One call into json's C encoder: ``indent`` or per-entry encoding fall back to Python
    code and made an append to a 500-scene cube several times slower.
    """
    return json.dumps(doc, default=str, separators=(",", ":")) + "\n"


@functools.lru_cache(maxsize=4)
def _read_reference(path: str, mtime_ns: int, size: int) -> xr.DataArray:
    # Keyed on mtime and size so a replaced reference is re-read.
    from changedet.io import read_raster

    return read_raster(path)


def _read_remote_reference(path: str, stamp: str, size: int, cube: Cube) -> xr.DataArray:
    import tempfile

    from changedet.io import read_raster

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "reference.tif"
        local.write_bytes(cube._fs.cat_file(path))
        return read_raster(local)


#: Provenance tags of the registration window reference (:meth:`Cube.set_registration_reference`).
REGISTRATION_TAGS = ("changedet_reference_from", "changedet_window_px", "changedet_reference_digest",
                     "changedet_window_bounds", "changedet_grid_bounds")


def reference_digest(data: xr.DataArray) -> str:
    """A digest (sha256 hex) of a reference's pixels: its image bands as float32, NaN canonical.

    Identifies the cube's reference whatever its values' scale or CRS (the stored GeoTIFF is
    float32, so the digest of the array written equals that of the file read back). The
    cloud band, when present, is left out (:func:`optical_bands`).
    """
    bands = optical_bands(data) if "band" in data.dims else data
    values = np.asarray(bands.values, dtype="float32")
    values = np.where(np.isfinite(values), values, np.float32(np.nan))  # one NaN bit pattern
    h = hashlib.sha256(repr(values.shape).encode())
    h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def _pixels_digest_of(path: str) -> str | None:
    """:func:`reference_digest` of a reference file; None when it cannot be read."""
    from changedet.io import read_raster

    try:
        return reference_digest(read_raster(path))
    except (ChangedetError, OSError, ValueError):
        return None


def _tagged(path: str) -> tuple[xr.DataArray, dict[str, str]]:
    import rasterio

    from changedet.io import read_raster

    with rasterio.open(path) as src:
        tags = {k: v for k, v in src.tags().items() if k in REGISTRATION_TAGS}
    return read_raster(path), tags


@functools.lru_cache(maxsize=4)
def _read_tagged(path: str, mtime_ns: int, size: int) -> tuple[xr.DataArray, dict[str, str]]:
    # Keyed on mtime and size so a replaced file is re-read.
    return _tagged(path)


def _read_remote_tagged(path: str, stamp: str, size: int, cube: Cube) -> tuple[xr.DataArray, dict[str, str]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "registration.tif"
        local.write_bytes(cube._fs.cat_file(path))
        return _tagged(str(local))


def optical_bands(da: xr.DataArray) -> xr.DataArray:
    """The reflectance bands of an acquisition, without the cloud mask."""
    if "band" in da.dims and CLOUD_BAND in [str(b) for b in da["band"].values]:
        return da.drop_sel(band=CLOUD_BAND)
    return da


def clear_mask(da: xr.DataArray) -> xr.DataArray:
    """True where pixels are valid and cloud-free."""
    names = [str(b) for b in da["band"].values]
    valid = optical_bands(da).notnull().all("band")
    if CLOUD_BAND in names:
        valid = valid & (da.sel(band=CLOUD_BAND) < 0.5)
    return valid.drop_vars("band", errors="ignore")


__all__ = ["Cube", "CubeLocked", "CubeStoreError", "CubeStoreUnavailable", "clear_mask", "is_url", "optical_bands"]
