"""Strips along lines: resample an image in (across, along) coordinates of a centreline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from shapely.geometry import LineString

from changedet.grid import GridSpec


@dataclass(frozen=True)
class Strip:
    """An image resampled along a line.

    Attributes
    ----------
    values : ndarray (band, n_across, n_along)
        Bilinear samples; NaN outside the image.
    along_m : ndarray (n_along,)
        Distance along the line of each column, metres.
    across_m : ndarray (n_across,)
        Signed offset of each row from the line, metres (positive to the left).
    x, y : ndarray (n_across, n_along)
        Map coordinates of the samples.
    """

    values: np.ndarray
    along_m: np.ndarray
    across_m: np.ndarray
    x: np.ndarray
    y: np.ndarray
    step_m: float

    def point(self, along: float, across: float = 0.0) -> tuple[float, float]:
        """Map (x, y) of a strip position, interpolated from the sample grid."""
        i = np.interp(along, self.along_m, np.arange(self.along_m.size))
        j = np.interp(across, self.across_m, np.arange(self.across_m.size))
        x = ndimage.map_coordinates(self.x, [[j], [i]], order=1, mode="nearest")[0]
        y = ndimage.map_coordinates(self.y, [[j], [i]], order=1, mode="nearest")[0]
        return float(x), float(y)


def sample_strip(image: np.ndarray, grid: GridSpec, line: LineString, *, half_width_m: float,
                 step_m: float | None = None) -> Strip:
    """Resample ``image`` (band, row, col) in a strip of ``half_width_m`` around ``line``.

    The line must be in the grid's CRS. Sampling is bilinear at ``step_m`` (default: the
    pixel size) both along and across; normals follow the local direction of the line,
    so curved tracks unroll into straight strips.
    """
    step = float(step_m or grid.resolution)
    length = line.length
    along = np.arange(0.0, length + 1e-9, step)
    pts = np.array([line.interpolate(s).coords[0] for s in along])
    ahead = np.array([line.interpolate(min(s + step, length)).coords[0] for s in along])
    behind = np.array([line.interpolate(max(s - step, 0.0)).coords[0] for s in along])
    tangent = ahead - behind
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-12)[:, None]
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])  # left of the direction of travel
    across = np.arange(-half_width_m, half_width_m + 1e-9, step)
    x = pts[None, :, 0] + across[:, None] * normal[None, :, 0]
    y = pts[None, :, 1] + across[:, None] * normal[None, :, 1]
    rows, cols = grid.rowcol(x, y)
    out = np.empty((image.shape[0],) + x.shape, dtype="float32")
    for b in range(image.shape[0]):
        out[b] = ndimage.map_coordinates(image[b], [rows, cols], order=1, mode="constant", cval=np.nan)
    return Strip(out, along, across, x, y, step)
