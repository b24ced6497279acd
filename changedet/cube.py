"""Per-AOI imagery cube: a Zarr store (time, band, y, x) plus a provenance record.

One store per AOI, sensor and resolution, on one fixed pixel grid. Appends are
idempotent (keyed on scene id), serialised by a file lock, and crash-safe: pixels are
appended first, then the provenance record is replaced atomically; a reader only trusts
time steps the provenance lists, and the next writer trims any step a crash left
behind. Nothing already stored is rewritten.
"""

from __future__ import annotations

import contextlib
import functools
import fcntl
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import xarray as xr

from changedet.errors import CubeError
from changedet.grid import GridSpec, with_crs
from changedet.sources.base import CLOUD_BAND, SceneRecord

_FORMAT = 1


class Cube:
    """The imagery cube of one AOI and sensor.

    Parameters
    ----------
    root : path
        Data directory; the store is ``root/cubes/<aoi_id>/<sensor>_<res>m.zarr``.
    aoi_id, sensor : str
    grid : GridSpec
        The AOI's grid for this sensor; a store written on another grid is refused.
    """

    def __init__(self, root: str | Path, aoi_id: str, sensor: str, grid: GridSpec, *,
                 reflectance: bool = True) -> None:
        self.aoi_id, self.sensor, self.grid = aoi_id, sensor, grid
        # Reflectance (0..6.5) is stored as uint16 x 1e-4, as L2A products do: half the
        # bytes of float32 and well below sensor noise; SAR backscatter stays float32.
        self.reflectance = reflectance
        base = Path(root) / "cubes" / aoi_id
        self.path = base / f"{sensor}_{grid.resolution:g}m.zarr"
        self.provenance_path = base / f"{sensor}_{grid.resolution:g}m.provenance.json"
        self.reference_path = base / f"{sensor}_{grid.resolution:g}m.reference.tif"
        self._lock_path = base / f"{sensor}_{grid.resolution:g}m.lock"

    # ------------------------------------------------------------------ bookkeeping
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_provenance(self) -> dict[str, Any]:
        if not self.provenance_path.exists():
            return {"format": _FORMAT, "aoi_id": self.aoi_id, "sensor": self.sensor, "scenes": []}
        try:
            doc = json.loads(self.provenance_path.read_text())
        except json.JSONDecodeError as exc:
            raise CubeError(f"{self.provenance_path}: provenance record is corrupt ({exc}); "
                            "restore it from backup or delete the cube to rebuild it") from None
        return doc

    def _write_provenance(self, doc: dict[str, Any]) -> None:
        tmp = self.provenance_path.with_name(self.provenance_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.provenance_path)

    def scenes(self) -> list[dict[str, Any]]:
        """Provenance entries of stored scenes, sorted by acquisition time."""
        return sorted(self._read_provenance()["scenes"], key=lambda s: pd.Timestamp(s["time"]))

    def has(self, scene_id: str) -> bool:
        return any(s["scene_id"] == scene_id for s in self._read_provenance()["scenes"])

    # ------------------------------------------------------------------ writing
    def append(self, scene: SceneRecord, data: xr.DataArray, *, extra: dict[str, Any] | None = None) -> bool:
        """Store one acquisition (already on the cube grid). Returns False if it was already there."""
        if not GridSpec.of(data).same_as(self.grid):
            raise CubeError(f"scene {scene.id} is not on the cube grid of {self.aoi_id}/{self.sensor}; "
                            "reproject it with changedet.io.reproject_to(data, cube.grid) first")
        with self._locked():
            doc = self._read_provenance()
            if any(s["scene_id"] == scene.id for s in doc["scenes"]):
                return False
            n = len(doc["scenes"])
            bands = [str(b) for b in data["band"].values]
            if n and doc.get("bands") != bands:
                raise CubeError(f"scene {scene.id} has bands {bands} but the cube holds {doc.get('bands')}")
            if scene.time.tzinfo is None:
                raise CubeError(f"scene {scene.id} has a time without timezone; give acquisition times in UTC")
            t = pd.Timestamp(scene.time).tz_convert("UTC").tz_localize(None)
            values = data.astype("float32")
            if self.reflectance:
                values = values.clip(0.0, 6.5)
            # Variable-length strings have a Zarr v3 specification; fixed-width NumPy ones do not.
            values = values.assign_coords(band=np.array(bands, dtype=object))
            ds = values.expand_dims(time=[t]).to_dataset(name="data")
            ds = ds.drop_vars([c for c in ds.coords if c not in ("time", "band", "y", "x", "spatial_ref")])
            ds.attrs = {}
            ds["data"].attrs = {}
            if self.path.exists() and n:
                self._trim(n)
                ds.to_zarr(self.path, mode="a", append_dim="time", consolidated=False)
            else:
                if self.path.exists():
                    import shutil

                    shutil.rmtree(self.path)  # a store with no committed scene holds nothing of value
                enc = {"data": {"chunks": (1, len(bands), min(512, self.grid.shape[0]), min(512, self.grid.shape[1]))}}
                if self.reflectance:
                    enc["data"].update(dtype="uint16", scale_factor=1e-4, add_offset=0.0, _FillValue=65535)
                # Fixed units: otherwise xarray picks them from the first scene and a later
                # acquisition at another time of day cannot be represented exactly.
                enc["time"] = {"units": "microseconds since 1970-01-01", "dtype": "int64"}
                ds.attrs = {"aoi_id": self.aoi_id, "sensor": self.sensor, "crs_wkt": self.grid.crs.to_wkt(),
                            "grid_transform": list(self.grid.transform)[:6], "grid_shape": list(self.grid.shape)}
                ds.to_zarr(self.path, mode="w", encoding=enc, consolidated=False)
                doc["bands"] = bands
            digest = hashlib.sha256(np.ascontiguousarray(data.values, dtype="float32").tobytes()).hexdigest()
            doc["scenes"].append({
                "index": n, "scene_id": scene.id, "time": scene.time.isoformat(), "source": scene.source,
                "platform": scene.platform, "cloud_cover": scene.cloud_cover, "sha256": digest,
                "stored_at": datetime.now(timezone.utc).isoformat(), **(extra or {}),
            })
            self._write_provenance(doc)
        return True

    def _trim(self, n: int) -> None:
        """Drop time steps beyond the ``n`` committed ones (left by a crash mid-append)."""
        import zarr

        g = zarr.open_group(str(self.path), mode="r+")
        if g["time"].shape[0] > n:
            for name in ("data", "time"):
                arr = g[name]
                arr.resize((n,) + arr.shape[1:])

    # ------------------------------------------------------------------ reading
    def read(self, *, before: datetime | None = None, last: int | None = None,
             exclude: str | None = None) -> xr.DataArray | None:
        """Stored acquisitions as a lazy ``DataArray(time, band, y, x)``, sorted by time.

        ``before`` keeps acquisitions strictly earlier; ``last`` the most recent ones;
        ``exclude`` drops one scene id.
        """
        entries = self.scenes()
        if not entries or not self.path.exists():
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
        ds = xr.open_zarr(self.path, consolidated=False)
        da = ds["data"].isel(time=[e["index"] for e in entries])
        da = da.assign_coords(scene_id=("time", [e["scene_id"] for e in entries]))
        return with_crs(da.drop_vars("spatial_ref", errors="ignore"), self.grid.crs)

    # ------------------------------------------------------------------ reference
    def reference(self) -> xr.DataArray | None:
        """The AOI's registration reference for this sensor, if one was set."""
        if not self.reference_path.exists():
            return None
        st = self.reference_path.stat()
        return _read_reference(str(self.reference_path), st.st_mtime_ns, st.st_size).copy()

    def set_reference(self, data: xr.DataArray) -> None:
        from changedet.io import write_geotiff

        write_geotiff(data, self.reference_path)


@functools.lru_cache(maxsize=4)
def _read_reference(path: str, mtime_ns: int, size: int) -> xr.DataArray:
    # Keyed on mtime and size so a replaced reference is re-read.
    from changedet.io import read_raster

    return read_raster(path)


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


__all__ = ["Cube", "clear_mask", "optical_bands"]
