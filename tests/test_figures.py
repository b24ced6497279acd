"""Publishable figures: maps carry a correct scale bar, north arrow and attribution; colours land where they should."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pyproj
import pytest
from PIL import Image

from changedet import figures as F
from changedet.errors import ChangedetError
from changedet.grid import GridSpec

WHEN = pd.Timestamp("2023-10-05")


def _grid(width_px: int, height_px: int, res: float, crs="EPSG:32652", x0=500000.0, y0=4700000.0) -> GridSpec:
    return GridSpec.from_bounds(crs, (x0, y0, x0 + width_px * res, y0 + height_px * res), res)


def _grey(grid: GridSpec, bands=("R", "G", "B")):
    return grid.attach(np.full((len(bands),) + grid.shape, 0.2, "float32"), bands=list(bands))


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _meta(path) -> dict:
    with Image.open(path) as im:
        im.load()
        return dict(im.text)


def _to_png_px(path, x: float, y: float) -> tuple[int, int]:
    """(row, col) in the PNG of map coordinate (x, y), from the map box written into the PNG."""
    meta = _meta(path)
    left, top, w, h = (int(v) for v in meta["changedet:map_box"].split(","))
    xmin, ymin, xmax, ymax = (float(v) for v in meta["changedet:map_bounds"].split(","))
    col = left + (x - xmin) / (xmax - xmin) * w
    row = top + (ymax - y) / (ymax - ymin) * h
    return int(row), int(col)


def _longest_dark_run(rgb: np.ndarray, rows: slice, cols: slice) -> int:
    dark = (rgb[rows, cols] < 40).all(axis=-1)
    best = 0
    for line in dark:
        run = 0
        for v in line:
            run = run + 1 if v else 0
            best = max(best, run)
    return best


def _near(rgb: np.ndarray, color: str, tol: int = 12) -> np.ndarray:
    target = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(rgb - target) <= tol).all(axis=-1)


# -- helpers -----------------------------------------------------------------------------------
def test_attribution_lines():
    assert F.attribution_for("s2", 2023) == "Contains modified Copernicus Sentinel data 2023"
    assert F.attribution_for("S1", 2021) == "Contains modified Copernicus Sentinel data 2021"
    assert F.attribution_for("sentinel-2-l2a", 2024).endswith("data 2024")
    assert F.attribution_for("simulator", 2023) == "Simulated scene (changedet)"
    assert "2022" in F.attribution_for("Maxar", 2022) and "Maxar" in F.attribution_for("Maxar", 2022)
    assert F.attribution_for("vhr", 2023, source="simulator") == "Simulated scene (changedet)"
    assert F.attribution_for("s2", 2023, source="sentinelhub").startswith("Contains modified Copernicus")
    assert "2023" in F.attribution_for("vhr", 2023) and "vhr" not in F.attribution_for("vhr", 2023).split()[-1]


@pytest.mark.parametrize("width_m, expected", [(500, 100), (1234, 200), (40, 10), (8000, 2000), (2000, 500),
                                               (4.1, 1), (399.9, 50), (400, 100)])
def test_nice_scale_length(width_m, expected):
    assert F.nice_scale_length(width_m) == pytest.approx(expected)


def test_nice_scale_length_rejects_nonsense():
    with pytest.raises(F.FigureError):
        F.nice_scale_length(0)
    with pytest.raises(F.FigureError):
        F.nice_scale_length(float("nan"))


def test_category_colors_are_okabe_ito_and_stable():
    a = F.category_colors(["tank", "hopper"])
    b = F.category_colors(["hopper", "boxcar", "tank", "mystery"])
    assert a["tank"] == b["tank"] and a["hopper"] == b["hopper"]
    assert set(b.values()) <= set(F.OKABE_ITO)
    assert len(set(b.values())) == 4


def test_true_north_follows_grid_convergence():
    # 1.5 degrees east of the zone-52 central meridian (129 E) at 42.4 N the convergence is
    # about 1.5 * sin(42.4) = 1.01 degrees, true north lying west (anticlockwise) of grid north.
    crs = pyproj.CRS.from_epsg(32652)
    x, y = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform(130.5, 42.4)
    assert F._north_angle_deg(crs, x, y) == pytest.approx(-1.01, abs=0.03)
    x, y = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform(129.0, 42.4)
    assert F._north_angle_deg(crs, x, y) == pytest.approx(0.0, abs=1e-3)


# -- maps ----------------------------------------------------------------------------------------
def test_scene_png_size_scale_bar_and_metadata(tmp_path):
    # 1000 x 800 px at 0.5 m: 500 m wide -> a 100 m bar of 200 pixels.
    grid = _grid(1000, 800, 0.5)
    path = F.scene_png(_grey(grid), tmp_path / "s.png", title="Tumangang", when=WHEN, sensor="vhr",
                       attribution=F.attribution_for("simulator", 2023))
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (1000, 800 + F._HEADER_PX + F._FOOTER_PX)
    meta = _meta(path)
    assert meta["Copyright"] == "Simulated scene (changedet)"
    assert meta["changedet:map_box"] == f"0,{F._HEADER_PX},1000,800"
    rgb = _rgb(path)
    top = F._HEADER_PX
    bar = _longest_dark_run(rgb, slice(top + 700, top + 800), slice(0, 400))
    assert abs(bar - 200) <= 2
    # The north arrow is drawn top-right (dark pixels there, on a grey image).
    assert (rgb[top:top + 60, 950:1000] < 40).all(axis=-1).sum() > 30


def test_scale_bar_after_reduction(tmp_path):
    # 3000 px at 0.5 m reduced 3x to 1000 shown pixels of 1.5 m: 1500 m wide -> 200 m bar = 133 px.
    grid = _grid(3000, 300, 0.5)
    path = F.scene_png(_grey(grid), tmp_path / "r.png", title="t", when=WHEN, sensor="s2", attribution="a",
                       max_px=1024)
    rgb = _rgb(path)
    assert rgb.shape[1] == 1000
    bar = _longest_dark_run(rgb, slice(F._HEADER_PX + 50, F._HEADER_PX + 100), slice(0, 400))
    assert abs(bar - 200 / 1.5) <= 2


def test_scale_bar_in_a_feet_crs(tmp_path):
    # EPSG:2263 is in US survey feet: 1000 px of 1 ft = 304.8 m -> a 50 m bar = 164 px.
    grid = _grid(1000, 200, 1.0, crs="EPSG:2263", x0=980000.0, y0=190000.0)
    path = F.scene_png(_grey(grid), tmp_path / "ft.png", title="t", when=WHEN, sensor="vhr", attribution="a")
    bar = _longest_dark_run(_rgb(path), slice(F._HEADER_PX + 120, F._HEADER_PX + 200), slice(0, 400))
    assert abs(bar - 50 / 0.3048006096) <= 2


def test_small_chips_are_enlarged_not_blurred(tmp_path):
    grid = _grid(60, 40, 10.0)
    path = F.scene_png(_grey(grid), tmp_path / "c.png", title="chip", when=WHEN, sensor="s2", attribution="a")
    meta = _meta(path)
    left, top, w, h = (int(v) for v in meta["changedet:map_box"].split(","))
    assert w == 60 * 8 and h == 40 * 8


def test_detections_drawn_in_their_type_colour(tmp_path):
    grid = _grid(1000, 800, 0.5)
    x0, y0 = grid.bounds[0], grid.bounds[1]

    def box(cx, cy, w=40, h=10):
        return {"type": "Polygon", "coordinates": [[(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2),
                                                     (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2),
                                                     (cx - w / 2, cy - h / 2)]]}

    dets = [{"type": "tank", "polygon": box(x0 + 100, y0 + 100), "score": 0.9},
            {"type": "hopper", "polygon": box(x0 + 300, y0 + 250), "score": 0.8}]
    colors = F.category_colors(["tank", "hopper"])
    path = F.scene_png(_grey(grid), tmp_path / "d.png", title="t", when=WHEN, sensor="vhr", attribution="a",
                       detections=dets)
    rgb = _rgb(path)
    for d, (cx, cy) in zip(dets, [(x0 + 100, y0 + 100), (x0 + 300, y0 + 250)]):
        # Left edge of the box: its outline colour must be there...
        r, c = _to_png_px(path, cx - 20, cy)
        assert _near(rgb[r - 3:r + 4, c - 3:c + 4], colors[d["type"]]).any(), d["type"]
        # ...and not the other type's.
        other = [t for t in colors if t != d["type"]][0]
        assert not _near(rgb[r - 3:r + 4, c - 3:c + 4], colors[other]).any()
    # Far from any detection the image stays grey.
    r, c = _to_png_px(path, x0 + 450, y0 + 50)
    patch = rgb[r - 3:r + 4, c - 3:c + 4]
    assert (np.ptp(patch, axis=-1) < 6).all()
    # The legend names both types with their counts: pixels of each colour appear in the top-left corner.
    legend = rgb[F._HEADER_PX:F._HEADER_PX + 60, 0:40]
    assert all(_near(legend, col).any() for col in colors.values())


def test_geographic_crs_is_refused(tmp_path):
    grid = GridSpec.from_bounds("EPSG:4326", (130.0, 42.0, 130.01, 42.01), 0.0001)
    with pytest.raises(F.FigureError, match="geographic"):
        F.scene_png(_grey(grid), tmp_path / "g.png", title="t", when=WHEN, sensor="s2", attribution="a")
    assert issubclass(F.FigureError, ChangedetError)


def test_bad_inputs_are_named(tmp_path):
    grid = _grid(100, 100, 1.0)
    da = _grey(grid)
    with pytest.raises(F.FigureError, match="dims"):
        F.scene_png(da.transpose("y", "x", "band"), tmp_path / "x.png", title="t", when=WHEN, sensor="s2",
                    attribution="a")
    with pytest.raises(F.FigureError, match="CRS"):
        F.scene_png(da.drop_vars("spatial_ref"), tmp_path / "x.png", title="t", when=WHEN, sensor="s2",
                    attribution="a")
    with pytest.raises(F.FigureError, match="NIR"):
        F.scene_png(da, tmp_path / "x.png", title="t", when=WHEN, sensor="s2", attribution="a",
                    rgb=("NIR", "R", "G"))


def test_heatmap_colours_threshold_and_nodata(tmp_path):
    grid = _grid(400, 300, 2.0)
    v = np.zeros(grid.shape, "float32")
    v[100:150, 100:200] = 20.0          # strong change block
    v[:, :50] = np.nan                  # outside the site
    path = F.heatmap_png(grid.attach(v), tmp_path / "h.png", title="change", when=WHEN, sensor="s2",
                         attribution=F.attribution_for("s2", 2023), threshold=6.0)
    rgb = _rgb(path)
    meta = _meta(path)
    assert meta["Copyright"] == "Contains modified Copernicus Sentinel data 2023"
    # 400 shown px enlarged 2x to reach the minimum width, plus the colour-bar margin.
    left, top, w, h = (int(v) for v in meta["changedet:map_box"].split(","))
    assert (w, h) == (800, 600) and rgb.shape[1] > w
    from matplotlib import colormaps

    hi = "#%02x%02x%02x" % tuple(int(round(c * 255)) for c in colormaps["viridis"](1.0)[:3])
    lo = "#%02x%02x%02x" % tuple(int(round(c * 255)) for c in colormaps["viridis"](0.0)[:3])
    xmin, ymax = grid.bounds[0], grid.bounds[3]
    r, c = _to_png_px(path, xmin + 150 * 2 + 1, ymax - 125 * 2 - 1)
    assert _near(rgb[r:r + 1, c:c + 1], hi, tol=20).all()
    r, c = _to_png_px(path, xmin + 300 * 2 + 1, ymax - 250 * 2 - 1)
    assert _near(rgb[r:r + 1, c:c + 1], lo, tol=20).all()
    r, c = _to_png_px(path, xmin + 20 * 2 + 1, ymax - 150 * 2 - 1)
    assert _near(rgb[r:r + 1, c:c + 1], "#d9d9d9", tol=3).all()
    # The threshold contour (vermillion) runs along the block edge.
    r, c = _to_png_px(path, xmin + 100 * 2, ymax - 125 * 2)
    assert _near(rgb[r - 3:r + 4, c - 3:c + 4], "#D55E00", tol=30).any()


# -- series -------------------------------------------------------------------------------------
def _series():
    idx = pd.date_range("2023-06-01", periods=20, freq="7D")
    s = pd.Series(np.r_[np.full(15, 10.0), np.full(5, 70.0)], index=idx)
    b = pd.DataFrame({"lo": 7.0, "mid": 10.0, "hi": 13.0}, index=idx)
    return s, b


def test_series_png_marks_alerts(tmp_path):
    s, b = _series()
    with_alert = F.series_png(s, tmp_path / "a.png", title="railcars", units="railcars", baseline=b,
                              alerts=[s.index[15]])
    without = F.series_png(s, tmp_path / "b.png", title="railcars", units="railcars", baseline=b)
    a, n = _rgb(with_alert), _rgb(without)
    assert a.shape == (320, 800, 3)
    assert _near(a, "#D55E00", tol=10).sum() > 40
    assert _near(n, "#D55E00", tol=10).sum() == 0
    # The baseline band is drawn (sky blue at 30 % on white).
    assert _near(n, "#CCE8F8", tol=12).sum() > 500


def test_series_svg_ids_and_escaping():
    s, b = _series()
    svg = F.series_svg(s, title='<script>alert(1)</script> & "q"', units="cars", baseline=b,
                       alerts=[s.index[15], s.index[17]], id_prefix="m0")
    assert svg.startswith("<svg")
    assert 'id="m0-alert-marker-0"' in svg and 'id="m0-alert-marker-1"' in svg
    assert 'id="m0-baseline-band"' in svg
    # Every id carries the prefix, and references follow (several plots share one page).
    ids = re.findall(r'\bid="([^"]+)"', svg)
    assert ids and all(i.startswith("m0-") for i in ids) and len(ids) == len(set(ids))
    refs = re.findall(r'url\(#([^)]+)\)', svg) + re.findall(r'href="#([^"]+)"', svg)
    assert refs and set(refs) <= set(ids)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    # Only the SVG/XLink namespaces may name a URL; nothing to fetch.
    assert set(re.findall(r"https?://[^\"\s<]+", svg)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    with pytest.raises(F.FigureError):
        F.series_svg(s, title="t", id_prefix='x" onload="1')


def test_series_rejects_untimed_index(tmp_path):
    with pytest.raises(F.FigureError):
        F.series_png(pd.Series([1.0, 2.0], index=["a", "b"]), tmp_path / "x.png", title="t")


def test_no_pyplot_state_is_touched(tmp_path):
    code = (
        "import sys, numpy as np, pandas as pd\n"
        "from changedet.grid import GridSpec\n"
        "from changedet import figures as F\n"
        "g = GridSpec.from_bounds('EPSG:32652', (0, 0, 100, 100), 1.0)\n"
        f"F.heatmap_png(g.attach(np.ones(g.shape, 'float32')), r'{tmp_path}/h.png', title='t', when=None,"
        " sensor='s2', attribution='a', threshold=0.5)\n"
        f"F.series_png(pd.Series([1.0, 2.0], index=pd.date_range('2023-01-01', periods=2)), r'{tmp_path}/s.png',"
        " title='t')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "import matplotlib; assert matplotlib.get_backend().lower() != 'tkagg'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
