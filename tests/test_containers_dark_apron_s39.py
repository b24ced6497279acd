"""Session 39 (YARDD): on a very dark asphalt apron the pavement's dark samples are not shade.

Skylight is never redder than sunlight, so shade keeps at least the lit pavement's
blue/infrared ratio (``containers._sky_lit``). Yard 1905 (clear, 0.8 m): the apron's
dark samples (mixed box-edge and penumbra pixels, redder than the asphalt) were taken
as its shade colour, lit asphalt then read as shade, no shadow walk ended and the
stacks read 5-6 tiers for 2.
"""
import numpy as np

from changedet.objects import containers as C


def _dark_apron(rng, dark_colour, n_marks):
    """Apron samples (n, 4 bands, reflectance): lit dark asphalt, ``n_marks`` brighter
    marks and mixed pixels (they lift the lit colour, the brighter 40 %, above the
    asphalt's, as on yard 1905: 0.125 for asphalt at 0.095), and a dark cluster."""
    asphalt = rng.normal([0.095, 0.092, 0.091, 0.106], 0.006, size=(1200, 4))
    marks = rng.normal([0.16, 0.16, 0.155, 0.17], 0.01, size=(n_marks, 4))
    dark = rng.normal(dark_colour, 0.005, size=(300, 4))
    return np.vstack([asphalt, marks, dark])


def test_red_dark_samples_are_not_shade_and_lit_asphalt_stays_lit():
    rng = np.random.default_rng(0)
    # Dark samples redder than the asphalt (blue/infrared 0.8 against 0.9): mixed pixels.
    # The base took them as shade: lit asphalt then read alpha 0.43 (shade).
    model = C._ground_model(_dark_apron(rng, [0.060, 0.059, 0.062, 0.075], 380))
    assert model is not None
    # Not that colour: the assumed sky-lit shade (grey, 30 % of lit) instead.
    np.testing.assert_allclose(model.shadow, model.lit * C.SHADE_GREY)
    # Lit asphalt in the sun is lit ground, where a shadow walk ends.
    asphalt = np.array([0.095, 0.092, 0.091, 0.106])[:, None]
    d, alpha = C._classify(model, asphalt)
    assert alpha[0] >= 0.5
    # Real shade on it (the sky's share, bluer) is shade.
    d, alpha = C._classify(model, np.array([0.022, 0.016, 0.013, 0.011])[:, None])
    assert alpha[0] < 0.5


def test_blue_dark_samples_stay_shade():
    rng = np.random.default_rng(1)
    # Dark samples bluer than the asphalt: sky-lit shade, kept as measured.
    shade = [0.045, 0.035, 0.030, 0.025]
    model = C._ground_model(_dark_apron(rng, shade, 300))
    np.testing.assert_allclose(model.shadow, shade, atol=0.004)


def test_sky_lit_rule():
    lit = np.array([0.10, 0.10, 0.10, 0.11])
    assert C._sky_lit(lit, lit * C.SHADE_CLEAR_SKY)
    assert C._sky_lit(lit, lit * C.SHADE_GREY)  # haze: grey, the same hue
    assert not C._sky_lit(lit, np.array([0.06, 0.06, 0.065, 0.08]))
    # No hue to judge with fewer bands.
    assert C._sky_lit(lit[:3], lit[:3] * 0.5)
