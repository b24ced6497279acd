"""The one pixel-grid type.

A :class:`GridSpec` is a CRS, an affine transform (upper-left corner convention, as
GDAL and rasterio use) and a shape in rows and columns. DataArrays built from a grid
carry x/y coordinates at pixel *centres* and the CRS in a ``spatial_ref`` coordinate;
the transform is always derived from those coordinates, never stored in ``attrs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyproj
from affine import Affine

from changedet.errors import GridError

# xarray (and pandas under it) is imported where an array is built: the AOI registry
# imports this module for its UTM zone helper and needs neither (about 1 s of start-up).
if TYPE_CHECKING:
    import xarray as xr
else:

    class _LazyXarray:
        """Stands for the ``xarray`` module in the annotations (``xr.DataArray``) so that
        :func:`typing.get_type_hints` resolves them at run time; xarray is imported at
        the first attribute looked up, not when this module is."""

        def __getattr__(self, name: str):
            import xarray

            return getattr(xarray, name)

    xr = _LazyXarray()


def utm_crs_for(lon: float, lat: float) -> pyproj.CRS:
    """Return the WGS 84 / UTM CRS of the zone containing (lon, lat) in degrees."""
    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise GridError(
            f"position lon={lon}, lat={lat} is outside the UTM domain; "
            "check that longitude and latitude are not swapped"
        )
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    return pyproj.CRS.from_epsg(epsg)


@dataclass(frozen=True)
class GridSpec:
    """A georeferenced pixel grid.

    Parameters
    ----------
    crs : pyproj.CRS
        Coordinate reference system of the grid (projected, units of metres expected).
    transform : affine.Affine
        Maps (col, row) of pixel *corners* to map (x, y); north-up grids only.
    shape : tuple of int
        (rows, cols).
    """

    crs: pyproj.CRS
    transform: Affine
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        if self.transform.b != 0 or self.transform.d != 0:
            raise GridError("rotated grids are not supported; reproject to a north-up grid first")
        if self.transform.a <= 0 or self.transform.e >= 0:
            raise GridError("grid transform must have positive x and negative y pixel size (north-up)")
        if self.shape[0] <= 0 or self.shape[1] <= 0:
            raise GridError(f"grid shape {self.shape} is empty")

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_bounds(
        cls, crs: pyproj.CRS | str | int, bounds: Sequence[float], resolution: float
    ) -> "GridSpec":
        """Grid covering ``bounds`` (xmin, ymin, xmax, ymax) with square pixels.

        The bounds are snapped outward to multiples of ``resolution`` so that grids of
        the same CRS and resolution share pixel edges (a half-pixel offset between
        grids would show up as false change everywhere).
        """
        crs = pyproj.CRS.from_user_input(crs)
        xmin, ymin, xmax, ymax = (float(v) for v in bounds)
        if not (xmax > xmin and ymax > ymin):
            raise GridError(f"bounds {tuple(bounds)} are empty or inverted")
        if not resolution > 0:  # also catches NaN
            raise GridError(f"resolution {resolution} must be positive")
        x0 = math.floor(xmin / resolution) * resolution
        y1 = math.ceil(ymax / resolution) * resolution
        cols = int(math.ceil(round((xmax - x0) / resolution, 6)))
        rows = int(math.ceil(round((y1 - ymin) / resolution, 6)))
        return cls(crs, Affine(resolution, 0.0, x0, 0.0, -resolution, y1), (rows, cols))

    @classmethod
    def of(cls, da: xr.DataArray) -> "GridSpec":
        """Derive the grid of a DataArray from its x/y centre coordinates and CRS."""
        if "x" not in da.coords or "y" not in da.coords:
            raise GridError("array has no x/y coordinates; build it with GridSpec.attach()")
        crs = crs_of(da)
        x = np.asarray(da["x"].values, dtype="float64")
        y = np.asarray(da["y"].values, dtype="float64")
        if x.size < 2 or y.size < 2:
            raise GridError("array needs at least 2 pixels along x and y to define a grid")
        dx = (x[-1] - x[0]) / (x.size - 1)
        dy = (y[-1] - y[0]) / (y.size - 1)
        transform = Affine(dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2)
        return cls(crs, transform, (y.size, x.size))

    # -- derived properties -----------------------------------------------------------
    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (metres for projected grids)."""
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        rows, cols = self.shape
        x0, y1 = self.transform.c, self.transform.f
        return (x0, y1 + rows * self.transform.e, x0 + cols * self.transform.a, y1)

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates."""
        return self.transform.c + (np.arange(self.shape[1]) + 0.5) * self.transform.a

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates (decreasing, north-up)."""
        return self.transform.f + (np.arange(self.shape[0]) + 0.5) * self.transform.e

    def rowcol(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) of map points; integer values are pixel centres."""
        col = (np.asarray(x, dtype="float64") - self.transform.c) / self.transform.a - 0.5
        row = (np.asarray(y, dtype="float64") - self.transform.f) / self.transform.e - 0.5
        return row, col

    def xy(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map (x, y) of fractional (row, col) pixel positions (centres at integers)."""
        x = self.transform.c + (np.asarray(col, dtype="float64") + 0.5) * self.transform.a
        y = self.transform.f + (np.asarray(row, dtype="float64") + 0.5) * self.transform.e
        return x, y

    def same_as(self, other: "GridSpec", *, tol: float = 1e-6) -> bool:
        return (
            self.shape == other.shape
            and self.crs == other.crs
            and all(abs(a - b) <= tol * max(1.0, abs(a)) for a, b in zip(self.transform, other.transform))
        )

    def scaled(self, resolution: float) -> "GridSpec":
        """Grid over the same bounds at another resolution (bounds snapped outward)."""
        return GridSpec.from_bounds(self.crs, self.bounds, resolution)

    # -- arrays -----------------------------------------------------------------------
    def attach(
        self,
        data,
        *,
        bands: Sequence[str] | None = None,
        name: str | None = None,
        attrs: dict | None = None,
    ) -> xr.DataArray:
        """Wrap ``data`` of shape (rows, cols) or (band, rows, cols) as a georeferenced DataArray."""
        if data.shape[-2:] != self.shape:
            raise GridError(f"data shape {data.shape[-2:]} does not match grid shape {self.shape}")
        coords = {"y": self.y, "x": self.x}
        dims: tuple[str, ...] = ("y", "x")
        if data.ndim == 3:
            if bands is None or len(bands) != data.shape[0]:
                raise GridError("a 3-D array needs one band name per leading plane")
            coords["band"] = list(bands)
            dims = ("band", "y", "x")
        import xarray as xr

        da = xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=dict(attrs or {}))
        return with_crs(da, self.crs)


def with_crs(da: xr.DataArray, crs) -> xr.DataArray:
    """Return ``da`` with ``crs`` written to its ``spatial_ref`` coordinate (CF convention)."""
    import rioxarray  # noqa: F401  registers the .rio accessor

    return da.rio.write_crs(pyproj.CRS.from_user_input(crs).to_wkt())


def crs_of(da: xr.DataArray) -> pyproj.CRS:
    """CRS of a DataArray from its ``spatial_ref`` coordinate."""
    import rioxarray  # noqa: F401

    crs = da.rio.crs
    if crs is None:
        raise GridError(
            "array has no CRS; write one to its spatial_ref coordinate (rio.write_crs) "
            "or load it with changedet.io.read_raster"
        )
    return pyproj.CRS.from_user_input(crs.to_wkt())


def aoi_grid(aoi, resolution_m: float, *, margin_m: float = 20.0) -> GridSpec:
    """The AOI's fixed pixel grid for a sensor resolution.

    The site polygon is projected to its UTM zone, buffered by ``margin_m`` (so
    co-registration and neighbourhood kernels have context at the edges) and snapped
    to multiples of the resolution; every acquisition of that AOI and resolution lands
    on exactly this grid.
    """
    crs = aoi.utm_crs()
    poly = aoi.to_crs(aoi.polygon, crs)
    xmin, ymin, xmax, ymax = poly.bounds
    return GridSpec.from_bounds(
        crs, (xmin - margin_m, ymin - margin_m, xmax + margin_m, ymax + margin_m), resolution_m
    )
