"""Session 43: a vessel search that finds no sea says so, in the CLI and in the daily run.

On a clear Sentinel-2 image cut close around a port with no water drawn, the medium-
resolution vessel search finds no water body big enough to be the sea, reports nothing
observed, and the daily run used to record the skip as "only 0% of features cloud-free".
:func:`changedet.objects.vessels.no_sea_reason` gives the real reason and the fix; the
pipeline's skip reason (:func:`changedet.pipeline._unobserved_reason`) uses it.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import numpy as np
import shapely
import xarray as xr

from changedet.aoi import load_aoi
from changedet.objects.vessels import detect_vessels, no_sea_reason
from changedet.pipeline import _unobserved_reason
from changedet.simulate.render import render_scene


def _port(sensor="s2"):
    aoi = load_aoi("vostochny_port")
    sc = render_scene(aoi, date(2023, 7, 5), sensor, seed=0, clear=True, misregistration=False)
    image = sc.grid.attach(np.asarray(sc.data), bands=list(sc.bands))
    crs = sc.grid.crs
    berths = {f.id: aoi.to_crs(f.geometry, crs) for f in aoi.features_by_role("berth")}
    water = shapely.union_all([aoi.to_crs(f.geometry, crs) for f in aoi.features_by_role("water")])
    return image, berths, water


def test_no_sea_over_clear_water_is_named_with_its_fix():
    image, berths, water = _port()
    res = detect_vessels(image, berths=berths)
    assert res.observed_fraction == 0.0          # what the daily run sees: nothing observed
    why = no_sea_reason(image, berths=berths)
    assert why is not None and "no water body" in why and "role 'water'" in why and "km2" in why
    skipped = _unobserved_reason("ships", res, image, berths=berths)
    assert skipped == why and "cloud" not in skipped
    # A search that saw part of the water (cloud over the rest) keeps the cloud reason.
    part = SimpleNamespace(observed_fraction=0.3)
    assert _unobserved_reason("ships", part, image, berths=berths) == "only 30% of features cloud-free"


def test_no_reason_when_the_sea_is_found_or_cloud_is_why():
    image, berths, water = _port()
    # With the site's water drawn the basin is searched and the ships counted.
    assert detect_vessels(image, water=water, berths=berths).observed_fraction > 0.5
    # Cloud over every drawn feature (the land around them clear): cloud is the reason.
    from changedet.objects.vessels import _mask
    from changedet.grid import GridSpec

    drawn = _mask(shapely.union_all([water, *berths.values()]), GridSpec.of(image))
    cloud = xr.DataArray(~drawn, dims=("y", "x"), coords={"y": image.y, "x": image.x})
    assert no_sea_reason(image, valid=cloud, water=water, berths=berths) is None
    # (detect_vessels itself refuses an image whose water is all under cloud; the reason
    # is asked of a count that saw nothing.)
    res = SimpleNamespace(observed_fraction=0.0)
    assert _unobserved_reason("ships", res, image, valid=cloud, berths=berths) == "only 0% of features cloud-free"
    # Other metrics keep the cloud reason.
    assert "cloud-free" in _unobserved_reason("railcars", res, image)


def test_no_reason_for_vhr_images():
    image, berths, water = _port("vhr")
    assert no_sea_reason(image, berths=berths) is None
