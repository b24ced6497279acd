"""Bad input to co-registration gets a clear CoregError naming the input and the fix."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
from affine import Affine

from changedet.coreg import coregister, coregister_stack
from changedet.errors import ChangedetError, CoregError
from changedet.grid import GridSpec
from test_coreg import fractal, grid_at, spline_shift


@pytest.fixture(scope="module")
def pair():
    grid = grid_at((256, 256))
    img = fractal(256, seed=41)
    return grid, grid.attach(img), grid.attach(spline_shift(img, (0.7, -1.2)))


@pytest.mark.parametrize("local", [False, True])
def test_no_overlap(pair, local):
    grid, ref, _ = pair
    far = grid_at((256, 256), x0=900000.0).attach(fractal(256, seed=2))
    with pytest.raises(CoregError, match="do not overlap.*check the CRS"):
        coregister(ref, far, local=local)


@pytest.mark.parametrize("local", [False, True])
def test_all_cloud(pair, local):
    grid, ref, mov = pair
    cloud = grid.attach(np.zeros(grid.shape, bool))  # nothing usable
    with pytest.raises(CoregError, match="0 valid overlapping pixels.*less cloud"):
        coregister(ref, mov, valid=cloud, local=local)


@pytest.mark.parametrize("which", ["reference", "moving"])
def test_constant_image(pair, which):
    grid, ref, mov = pair
    flat = grid.attach(np.full(grid.shape, 1234.0))
    args = (flat, mov) if which == "reference" else (ref, flat)
    with pytest.raises(CoregError, match=f"{which} image is constant.*nothing to match"):
        coregister(*args)


def test_nans_everywhere(pair):
    grid, ref, _ = pair
    with pytest.raises(CoregError, match="moving band is all NaN"):
        coregister(ref, grid.attach(np.full(grid.shape, np.nan)), local=True)
    with pytest.raises(CoregError, match="reference band is all NaN"):
        coregister(grid.attach(np.full(grid.shape, np.nan)), ref)


def test_mismatched_band_counts(pair):
    grid, ref, mov = pair
    r3 = grid.attach(np.stack([ref.values] * 3), bands=["b1", "b2", "b3"])
    m4 = grid.attach(np.stack([mov.values] * 4), bands=["b1", "b2", "b3", "b4"])
    with pytest.raises(CoregError, match="3 bands .* 4 .*pass band="):
        coregister(r3, m4)
    # Naming a band both have resolves it.
    _, res = coregister(r3, m4, band="b2")
    assert res.applied and res.shift_row_px == pytest.approx(-0.7, abs=0.05)


def test_crs_without_linear_units(pair):
    _, _, mov = pair
    geo = GridSpec(pyproj.CRS.from_epsg(4326), Affine(0.0001, 0, 15.0, 0, -0.0001, 37.9), (256, 256))
    ref = geo.attach(fractal(256, seed=41))
    with pytest.raises(CoregError, match="no units of length.*reproject the reference"):
        coregister(ref, mov)
    with pytest.raises(CoregError, match="no units of length"):
        coregister_stack(mov.expand_dims(time=[0]), ref)
    assert issubclass(CoregError, ChangedetError)


def test_stack_input_checks(pair):
    _, ref, mov = pair
    with pytest.raises(CoregError, match="leading 'time' dimension"):
        coregister_stack(mov, ref)
    with pytest.raises(CoregError, match="scene_id"):
        coregister_stack(mov.expand_dims(time=[0]), ref, cube=object())
