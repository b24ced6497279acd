"""The medium-resolution railcar bench makes its coarse images the physical way.

``bench/bench_altgen_rail_medium.py`` turns a 1 m render of the independent generator into
a 3-10 m image (optics PSF, then pixel integration). Its figures mean something only if
the coarse image keeps the scene's light (block averaging conserves the mean), sits on a
grid whose pixel centres are the centres of the blocks it averaged, and keeps a coarse
pixel valid only where all its fine pixels were.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from changedet.grid import GridSpec
from tests.altgen.railyard import make_railyard

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_altgen_rail_medium.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_altgen_rail_medium", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("factor", [3, 5, 10])
def test_coarse_image_keeps_the_light_and_the_pixel_centres(factor):
    bench = _bench()
    scene = make_railyard(33001, gsd_m=bench.FINE_GSD_M, condition="partly_cloudy")
    image, valid = bench.coarsen(scene, factor)
    fgrid, cgrid = GridSpec.of(scene.image), GridSpec.of(image)
    assert cgrid.resolution == pytest.approx(factor * fgrid.resolution)
    rows, cols = cgrid.shape
    assert (rows, cols) == (fgrid.shape[0] // factor, fgrid.shape[1] // factor)
    # Pixel centres: the coarse pixel (0, 0) lies at the centre of the fine block it averaged.
    x0, y0 = cgrid.xy(np.array([0]), np.array([0]))
    fx, fy = fgrid.xy(np.array([0, factor - 1]), np.array([0, factor - 1]))
    assert float(x0[0]) == pytest.approx(float(fx.mean())) and float(y0[0]) == pytest.approx(float(fy.mean()))
    # The PSF and the block average move light between pixels but keep its sum (away from the
    # image's border, where the PSF's reflection adds or drops a little; a clear scene, so
    # no NaN spreads).
    clear = make_railyard(33000, gsd_m=bench.FINE_GSD_M, condition="clear")
    cimage, _ = bench.coarsen(clear, factor)
    crows, ccols = GridSpec.of(cimage).shape
    cfine = np.asarray(clear.image.values, np.float64)[:, :crows * factor, :ccols * factor]
    assert np.isfinite(cfine).all()
    inner = (slice(None), slice(2, -2), slice(2, -2))
    coarse = np.asarray(cimage.values, np.float64)
    fine_means = cfine.reshape(cfine.shape[0], crows, factor, ccols, factor).mean(axis=(2, 4))
    assert np.allclose(coarse[inner].mean(axis=(1, 2)), fine_means[inner].mean(axis=(1, 2)), rtol=0.02)
    # Valid only where every fine pixel was.
    fv = np.asarray(scene.valid.values, bool)[:rows * factor, :cols * factor]
    want = fv.reshape(rows, factor, cols, factor).all(axis=(1, 3))
    assert np.array_equal(np.asarray(valid.values, bool), want)
    assert not want.all(), "a partly cloudy scene has a cloud to aggregate"


@pytest.mark.parametrize("factor", [3, 10])
def test_a_point_of_light_is_blurred_and_integrated_not_sampled(factor):
    """Review RFINAL M2: a coarsening that sampled single pixels, or skipped the PSF, passed
    the test above on a smooth yard. A point of light must keep its total (blur and pixel
    integration move light, they do not make or lose it), and the PSF (sigma 0.45 coarse
    pixels) must spread it: the brightest coarse pixel holds under 60 % of it, while no
    blur at all would leave it whole in one pixel."""
    from types import SimpleNamespace

    bench = _bench()
    n = 12 * factor
    grid = GridSpec.from_bounds("EPSG:32652", (500000.0, 4000000.0, 500000.0 + n, 4000000.0 + n), 1.0)
    fine = np.zeros((4, n, n), "float32")
    centre = 6 * factor + factor // 2          # the middle of a coarse pixel
    fine[:, centre, centre] = 1.0
    scene = SimpleNamespace(image=grid.attach(fine, bands=["B", "G", "R", "NIR"]), valid=None)
    image, valid = bench.coarsen(scene, factor)
    coarse = np.asarray(image.values, np.float64)
    assert valid is None
    assert coarse.sum(axis=(1, 2)) * factor ** 2 == pytest.approx(np.ones(4), rel=1e-3)
    share = coarse.max(axis=(1, 2)) / coarse.sum(axis=(1, 2))
    assert np.all(share < 0.6) and np.all(share > 0.2), share
