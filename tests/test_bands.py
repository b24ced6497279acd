"""One role table for every stage: what each module accepts as red, NIR, ..."""

import numpy as np
import pytest

from changedet.bands import ROLE_NAMES, find_band, find_bands
from changedet.grid import GridSpec


def test_find_band_is_case_insensitive_and_keeps_the_spelling():
    assert find_band(["b02", "b03", "b04", "b08"], "nir") == "b08"
    assert find_band(["Red", "Green", "Blue", "Nir"], "red") == "Red"
    assert find_band(["nir08", "red"], "nir") == "nir08"
    assert find_band(["B02", "B03", "B04"], "nir") is None


def test_b8a_is_the_last_nir_choice():
    assert find_band(["B8A", "B08"], "nir") == "B08"
    assert find_band(["B04", "B8A"], "nir") == "B8A"


def test_find_bands_all_or_none():
    assert find_bands(["B04", "B03", "B02"], ("red", "green", "blue")) == ("B04", "B03", "B02")
    assert find_bands(["B04", "B03"], ("red", "green", "blue")) is None
    with pytest.raises(KeyError):
        find_band(["B04"], "thermal")


def test_every_alias_is_unique_across_roles():
    seen = [a for names in ROLE_NAMES.values() for a in names]
    assert len(seen) == len(set(seen))
    assert all(a == a.upper() for a in seen)


@pytest.mark.parametrize("names", [("blue", "green", "red", "nir"), ("B", "G", "R", "NIR"),
                                   ("b02", "b03", "b04", "b8a")])
def test_stages_agree_on_the_same_bands(names):
    # Spectral index, cloud mask and object detectors all read the same table: an image one
    # understands (here lower-case Sentinel-2 numbers with the 20 m NIR) is understood by all.
    from changedet.cloudmask import _find
    from changedet.kernels.change import spectral_index
    from changedet.objects.common import bgrn
    from changedet.objects.vessels import _band

    rng = np.random.default_rng(0)
    data = rng.uniform(0.05, 0.5, (4, 6, 7)).astype("float32")
    img = GridSpec.from_bounds("EPSG:32633", (500000, 0, 500070, 60), 10.0).attach(data, bands=list(names))
    nd = spectral_index(img, "ndvi")
    np.testing.assert_allclose(nd.values, (data[3] - data[2]) / (data[3] + data[2]), rtol=1e-6)
    assert [_find(img, r) for r in ("blue", "green", "red", "nir")] == list(names)
    np.testing.assert_array_equal(bgrn(img), data)
    np.testing.assert_array_equal(_band(img, "nir"), data[3])


def test_unpadded_numbers_are_not_guessed():
    # b1..b4 is how an undescribed GeoTIFF reads (NAIP order R, G, B, NIR): reading b4 as
    # Sentinel-2 red would colour figures and cloud masks with the wrong bands, silently.
    from changedet.cloudmask import available_method
    from changedet.pipeline import _rgb_bands

    names = ["b1", "b2", "b3", "b4"]
    assert all(find_band(names, r) is None for r in ROLE_NAMES)
    img = GridSpec.from_bounds("EPSG:32633", (500000, 0, 500070, 60), 10.0).attach(
        np.ones((4, 6, 7), "float32"), bands=names)
    assert available_method(img) is None
    assert _rgb_bands(img) is None
