"""Optional detector plugins: a user-supplied model instead of the classical counters.

changedet ships no model weights and downloads none. A user who has a detector (ONNX,
TorchScript, or any Python object) plugs it in here; its boxes become
:class:`~changedet.objects.common.Detection` objects counted per feature exactly like the
classical counters' output.

The contract (:class:`Detector`): called with pixels ``(band, row, col)`` float32, it
returns :class:`PixelBox` rows ``(row0, col0, row1, col1, score, label)`` in pixel
coordinates of the array it was given (end-exclusive).

Model files follow one convention: input float32 ``(1, band, rows, cols)``; output a
float32 ``(n, 6)`` array ``[row0, col0, row1, col1, score, class_index]``. A model with
another output layout is wrapped in a small Python plugin (``"package.module:factory"``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np
import xarray as xr
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from changedet.errors import ChangedetError
from changedet.grid import GridSpec
from changedet.objects.checks import check_features
from changedet.objects.common import CountResult, Detection


class PluginError(ChangedetError):
    """A detector plugin cannot be loaded or returned something outside the contract."""


class PixelBox(NamedTuple):
    row0: float
    col0: float
    row1: float
    col1: float
    score: float
    label: str


@runtime_checkable
class Detector(Protocol):
    """Anything callable on ``(band, row, col)`` float32 pixels returning :class:`PixelBox` rows."""

    def __call__(self, pixels: np.ndarray) -> Sequence[PixelBox]: ...


def _rows_to_boxes(out: Any, labels: Sequence[str], source: str) -> list[PixelBox]:
    arr = np.asarray(out, dtype="float64")
    if arr.size == 0:
        return []
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise PluginError(f"{source}: the model returned shape {arr.shape}; the convention is (n, 6) rows of "
                          "[row0, col0, row1, col1, score, class_index] - wrap other layouts in a Python plugin")
    boxes = []
    for r0, c0, r1, c1, s, k in arr:
        k = int(k)
        label = labels[k] if 0 <= k < len(labels) else str(k)
        boxes.append(PixelBox(float(r0), float(c0), float(r1), float(c1), float(s), label))
    return boxes


class OnnxDetector:
    """An ONNX model run with onnxruntime on the CPU (see the module's convention)."""

    def __init__(self, path: Path, labels: Sequence[str]):
        try:
            import onnxruntime as ort
        except ImportError:
            raise PluginError(f"{path}: ONNX models need onnxruntime, which is not installed; "
                              "pip install onnxruntime (or use a TorchScript or Python plugin)") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise PluginError(f"{path}: onnxruntime cannot load it ({exc.__class__.__name__}: {exc})") from None
        self.input = self.session.get_inputs()[0].name
        self.labels, self.path = list(labels), path

    def __call__(self, pixels: np.ndarray) -> list[PixelBox]:
        out = self.session.run(None, {self.input: pixels[None].astype("float32")})[0]
        return _rows_to_boxes(out, self.labels, str(self.path))


class TorchScriptDetector:
    """A TorchScript model (``torch.jit.save``) run on the CPU (see the module's convention)."""

    def __init__(self, path: Path, labels: Sequence[str]):
        try:
            import torch
        except ImportError:
            raise PluginError(f"{path}: TorchScript models need PyTorch, which is not installed; "
                              "pip install torch (or export the model to ONNX)") from None
        try:
            self.model = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:
            raise PluginError(f"{path}: torch cannot load it as TorchScript ({exc.__class__.__name__}: {exc}); "
                              "save it with torch.jit.script(model).save(path)") from None
        self.torch, self.labels, self.path = torch, list(labels), path

    def __call__(self, pixels: np.ndarray) -> list[PixelBox]:
        with self.torch.no_grad():
            out = self.model(self.torch.from_numpy(pixels[None].astype("float32")))
        return _rows_to_boxes(out.cpu().numpy(), self.labels, str(self.path))


def load_detector(spec: str | Path, *, labels: Sequence[str] = ("object",), **options: Any) -> Detector:
    """A detector from a model file or a Python entry point.

    Parameters
    ----------
    spec : str or Path
        ``*.onnx`` (onnxruntime), ``*.pt`` / ``*.ts`` (TorchScript), or
        ``"package.module:factory"``: ``factory(**options)`` must return a :class:`Detector`.
    labels : sequence of str
        Names of the model's class indices.
    """
    text = str(spec)
    if ":" in text and not Path(text).exists() and not text.lower().endswith((".onnx", ".pt", ".ts", ".pth")):
        mod_name, _, attr = text.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"plugin {text!r}: cannot import it ({exc}); give 'package.module:factory' "
                              "importable from this Python") from None
        det = factory(**options)
        if not isinstance(det, Detector):
            raise PluginError(f"plugin {text!r}: factory returned {type(det).__name__}, which is not callable "
                              "as detector(pixels) -> boxes")
        return det
    path = Path(text)
    if not path.exists():
        raise PluginError(f"{path}: no such model file; changedet downloads no weights - give the path of "
                          "your own model")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxDetector(path, labels)
    if suffix in (".pt", ".ts", ".pth"):
        return TorchScriptDetector(path, labels)
    raise PluginError(f"{path}: unknown model type {suffix!r}; use .onnx, a TorchScript .pt/.ts, or "
                      "'package.module:factory'")


def count_with_detector(
    image: xr.DataArray,
    detector: Detector,
    features: Mapping[str, BaseGeometry],
    *,
    kind: str,
    min_score: float = 0.5,
    bands: Sequence[str] | None = None,
) -> CountResult:
    """Run ``detector`` on ``image`` and count its boxes per feature.

    Parameters
    ----------
    image : xarray.DataArray (band, y, x)
        Pixels handed to the detector (``bands`` selects and orders them).
    features : mapping of str to geometry
        Tracks, zones or berths in the image CRS; a box belongs to the feature it
        overlaps most (boxes overlapping none are dropped).
    kind : str
        What is counted ("railcars", "containers", "ships"); ``CountResult.kind``.
    min_score : float
        Boxes scoring below this are dropped.
    """
    grid = GridSpec.of(image)
    check_features(features, grid, what="feature")
    data = image.sel(band=list(bands)) if bands is not None else image
    pixels = np.nan_to_num(np.asarray(data.values, dtype="float32"))
    boxes = detector(pixels)
    zones = {fid: (g.buffer(1e-9) if g.geom_type.endswith("LineString") else g) for fid, g in features.items()}
    detections, counts = [], {fid: {} for fid in features}
    for b in boxes:
        if not isinstance(b, tuple) or len(b) != 6:
            raise PluginError(f"the detector returned {b!r}; each box must be (row0, col0, row1, col1, score, label)")
        b = PixelBox(*b)
        if b.score < min_score:
            continue
        x0, y0 = grid.xy(b.row0 - 0.5, b.col0 - 0.5)
        x1, y1 = grid.xy(b.row1 - 0.5, b.col1 - 0.5)
        poly = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        # Lines have no area: measure the overlap with a track as the length inside the box.
        overlap = {fid: (g.intersection(poly).area if g.geom_type.endswith("Polygon")
                         else features[fid].intersection(poly).length) for fid, g in zones.items()}
        fid = max(overlap, key=overlap.get) if overlap else None
        if fid is None or overlap[fid] <= 0:
            continue
        counts[fid][b.label] = counts[fid].get(b.label, 0) + 1
        detections.append(Detection(kind, b.label, poly, float(np.clip(b.score, 0, 1)), fid, {"method": "plugin"}))
    by_type: dict[str, int] = {}
    for d in detections:
        by_type[d.type] = by_type.get(d.type, 0) + 1
    per_feature = tuple({"id": fid, "count": sum(c.values()), "by_type": dict(c)} for fid, c in counts.items())
    return CountResult(kind, len(detections), by_type, per_feature, tuple(detections), grid.crs, None, 1.0)


__all__ = ["Detector", "PixelBox", "PluginError", "load_detector", "count_with_detector"]
