"""Detector plugins: the protocol, a pure-Python plugin, a tiny ONNX model, and the error paths."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from shapely.geometry import LineString, box

from changedet.grid import GridSpec
from changedet.objects.plugins import Detector, PixelBox, PluginError, count_with_detector, load_detector

GRID = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 500064.0, 4000064.0), 1.0)


def _image(value: float = 0.1):
    data = np.full((3, 64, 64), value, dtype="float32")
    data[:, 10:14, 20:40] = 0.9
    return GRID.attach(data, bands=["R", "G", "B"])


def _brightest_box(pixels: np.ndarray) -> list[PixelBox]:
    """A 'model' that boxes the pixels brighter than 0.5 (enough to test the plumbing)."""
    rows, cols = np.nonzero(pixels.mean(axis=0) > 0.5)
    if rows.size == 0:
        return []
    return [PixelBox(rows.min(), cols.min(), rows.max() + 1, cols.max() + 1, 0.8, "tank")]


def test_python_plugin_counts_per_feature(tmp_path, monkeypatch):
    (tmp_path / "my_detector.py").write_text(textwrap.dedent("""
        import numpy as np
        from changedet.objects.plugins import PixelBox

        def make(threshold=0.5):
            def detect(pixels):
                rows, cols = np.nonzero(pixels.mean(axis=0) > threshold)
                if rows.size == 0:
                    return []
                return [PixelBox(rows.min(), cols.min(), rows.max() + 1, cols.max() + 1, 0.8, "tank")]
            return detect
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    det = load_detector("my_detector:make", threshold=0.5)
    assert isinstance(det, Detector)
    x0, y1 = GRID.bounds[0], GRID.bounds[3]
    tracks = {"T1": LineString([(x0, y1 - 12), (x0 + 64, y1 - 12)]),     # through rows 10-13
              "T2": LineString([(x0, y1 - 50), (x0 + 64, y1 - 50)])}
    res = count_with_detector(_image(), det, tracks, kind="railcars")
    assert res.total == 1 and res.by_type == {"tank": 1}
    assert res.per_feature == ({"id": "T1", "count": 1, "by_type": {"tank": 1}}, {"id": "T2", "count": 0, "by_type": {}})
    poly = res.detections[0].polygon
    assert poly.equals_exact(box(x0 + 20, y1 - 14, x0 + 40, y1 - 10), 1e-6)
    assert count_with_detector(_image(), det, tracks, kind="railcars", min_score=0.9).total == 0
    sys.modules.pop("my_detector", None)


def test_plain_callable_is_a_detector():
    res = count_with_detector(_image(), _brightest_box, {"Z": box(*GRID.bounds)}, kind="containers")
    assert res.total == 1 and res.kind == "containers"


def _tiny_onnx(path):
    """(1, 3, H, W) -> one fixed box scored by the image maximum: data really flows through."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Reshape", ["m", "shape11"], ["score"]),
        helper.make_node("Concat", ["head", "score", "cls"], ["y"], axis=1),
    ]
    inits = [helper.make_tensor("shape11", TensorProto.INT64, [2], [1, 1]),
             helper.make_tensor("head", TensorProto.FLOAT, [1, 4], [10, 20, 14, 40]),
             helper.make_tensor("cls", TensorProto.FLOAT, [1, 1], [1])]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_tiny_onnx_model(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is optional (pinned 1.32.0 where installed)")
    pytest.importorskip("onnx")
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    det = load_detector(path, labels=["boxcar", "tank"])
    zone = {"Z": box(*GRID.bounds)}
    res = count_with_detector(_image(0.1), det, zone, kind="railcars")
    assert res.total == 1 and res.by_type == {"tank": 1}
    assert res.detections[0].score == pytest.approx(0.9, abs=1e-6)
    dim = _image(0.1)
    dim.values[:] = 0.2   # the score is the image maximum: below min_score now
    assert count_with_detector(dim, det, zone, kind="railcars").total == 0


def test_missing_runtime_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # as if not installed
    with pytest.raises(PluginError, match="need onnxruntime"):
        load_detector(path)
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(PluginError, match="need PyTorch"):
        load_detector(pt)


def test_plugin_error_paths(tmp_path):
    with pytest.raises(PluginError, match="downloads no weights"):
        load_detector(tmp_path / "absent.onnx")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(PluginError, match="unknown model type"):
        load_detector(tmp_path / "m.bin")
    with pytest.raises(PluginError, match="cannot import"):
        load_detector("no_such_module_xyz:make")
    with pytest.raises(PluginError, match=r"\(n, 6\)"):
        from changedet.objects.plugins import _rows_to_boxes
        _rows_to_boxes(np.zeros((2, 5)), ["a"], "m.onnx")
    with pytest.raises(PluginError, match="each box must be"):
        count_with_detector(_image(), lambda p: [(1, 2, 3)], {"Z": box(*GRID.bounds)}, kind="ships")
