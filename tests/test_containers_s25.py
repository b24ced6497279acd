"""Session 25: deep shade beside tall stacks under a clear sky is ground, not box."""

from __future__ import annotations

import numpy as np

from changedet.objects import containers as C

# Lit concrete (B, G, R, NIR surface reflectance) and the shade measured beside a 4-tier
# stack under a clear sky at 55 degrees of sun (independent yard, 0.8 m): 4-7 % of lit,
# bluer than the pavement (the sky's light).
CONCRETE = np.array([0.243, 0.252, 0.253, 0.268])
DEEP_SHADE_RATIO = np.array([0.067, 0.053, 0.045, 0.035])


def _concrete_model():
    rng = np.random.default_rng(3)
    samples = CONCRETE * (1.0 + 0.05 * rng.standard_normal((400, 4)))
    model = C._ground_model(samples)
    assert model is not None
    return model


def test_deep_shade_beside_a_tall_stack_is_ground_black_paint_is_not():
    model = _concrete_model()
    deep = (CONCRETE * DEEP_SHADE_RATIO)[:, None]
    d, alpha = C._classify(model, deep)
    # Ground (not a box top), and in shade (a walk goes on over it).
    assert d[0] <= 4.0 and alpha[0] < 0.5
    # Black paint (3-5 % in every band, a little more in the NIR): darker than the shade
    # of an open lane, but grey, not sky-blue.
    tops = np.array([[0.045, 0.045, 0.045, 0.05], [0.03, 0.03, 0.03, 0.035], [0.02, 0.02, 0.02, 0.024]]).T
    d, _ = C._classify(model, tops)
    assert np.all(d > 4.0)
