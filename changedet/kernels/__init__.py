"""Pure array kernels for change detection (numpy- or dask-backed xarray in, same out).

- :mod:`~changedet.kernels.change`: pairwise kernels (band difference, normalised
  difference, spectral indices, change-vector magnitude, SAR log-ratio, NaN-aware
  N×N box mean);
- :mod:`~changedet.kernels.baseline`: per-pixel robust baselines over a time stack
  and robust z-scores / change magnitude against them;
- :mod:`~changedet.kernels.threshold`: global thresholds (Otsu, k*MAD), the cleaned
  change mask, and its area in m^2; Kittler-Illingworth and chi-square thresholds;
- :mod:`~changedet.kernels.irmad`: IR-MAD with chi-square no-change probability;
- :mod:`~changedet.kernels.components`: connected components that stay whole across
  dask chunk edges.

Kernels are lazy for dask input (no compute) except the thresholds and the area, which
return Python floats.
"""

from changedet.kernels.baseline import MAD_SCALE, change_magnitude, robust_baseline, zscore
from changedet.kernels.change import (
    SPECTRAL_INDICES,
    KernelError,
    band_diff,
    box_mean,
    cva,
    cva_direction,
    index_change,
    log_ratio,
    normalized_diff,
    spectral_index,
)
from changedet.kernels.components import label_components
from changedet.kernels.fast import baseline_zscore, empty_history
from changedet.kernels.irmad import IRMADResult, irmad
from changedet.kernels.threshold import (
    change_mask,
    changed_area_m2,
    chi2_threshold,
    k_mad,
    kittler_illingworth,
    otsu,
)

__all__ = [
    "IRMADResult",
    "KernelError",
    "MAD_SCALE",
    "SPECTRAL_INDICES",
    "band_diff",
    "box_mean",
    "baseline_zscore",
    "empty_history",
    "change_magnitude",
    "change_mask",
    "changed_area_m2",
    "chi2_threshold",
    "cva",
    "cva_direction",
    "index_change",
    "irmad",
    "kittler_illingworth",
    "label_components",
    "k_mad",
    "log_ratio",
    "normalized_diff",
    "otsu",
    "robust_baseline",
    "spectral_index",
    "zscore",
]
