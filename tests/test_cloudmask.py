"""Cloud masking: SCL classes, CLM, s2cloudless on real Sentinel-2 L1C bands (OSCD), its
post-processing against eo-learn's reference masks, and the brightness/whiteness test for
VHR (real clear scenes for false alarms, simulator truth for detection)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.warp import transform_bounds

from changedet.cloudmask import (S2CLOUDLESS_BANDS, available_method, brightness_cloud, cloud_fraction, cloud_mask,
                                 probability_to_mask, scl_cloud, with_cloud_band)
from changedet.errors import SourceError
from changedet.grid import GridSpec

GRID = GridSpec.from_bounds("EPSG:32633", (465000, 5079000, 465400, 5079400), 10.0)  # 40 x 40


def test_scl_classes():
    classes = np.arange(12, dtype="float32")
    da = GridSpec.from_bounds("EPSG:32633", (0, 0, 120, 20), 10.0).attach(np.stack([classes, classes]))
    got = scl_cloud(da).values[0]
    # 0 no data, 1 saturated -> missing; 3 shadow, 8/9 cloud, 10 cirrus -> cloud; the rest clear
    assert np.isnan(got[[0, 1]]).all()
    np.testing.assert_array_equal(got[2:], [0, 1, 0, 0, 0, 0, 1, 1, 1, 0])


def _bands(names, value=0.1):
    return GRID.attach(np.full((len(names),) + GRID.shape, value, "float32"), bands=list(names))


def test_method_order_and_with_cloud_band():
    assert available_method(_bands(["B02", "B03", "B04", "CLM", "SCL"])) == "clm"
    assert available_method(_bands(["B02", "B03", "B04", "SCL"])) == "scl"
    assert available_method(_bands(list(S2CLOUDLESS_BANDS) + ["B03"])) == "s2cloudless"
    assert available_method(_bands(["R", "G", "B", "NIR"])) == "brightness"
    assert available_method(_bands(["VV", "VH"])) is None
    with pytest.raises(SourceError, match="no cloud mask possible.*VV"):
        cloud_mask(_bands(["VV", "VH"]))
    with pytest.raises(SourceError, match="unknown cloud mask method"):
        cloud_mask(_bands(["B02"]), method="magic")
    da = _bands(["B02", "B03", "B04", "SCL"])
    scl = da.sel(band="SCL").values
    scl[:] = 4
    scl[:10, :] = 9
    scl[30:, :5] = 0
    out, used = with_cloud_band(da)
    assert used == "scl" and list(out["band"].values) == ["B02", "B03", "B04", "CLM"]
    assert out.rio.crs.to_epsg() == 32633
    clm = out.sel(band="CLM").values
    assert (clm[:10] == 1).all() and (clm[10:30] == 0).all() and np.isnan(clm[30:, :5]).all()
    assert np.isnan(out.sel(band="B02").values[30:, :5]).all()  # no data stays no data in every band
    assert cloud_fraction(out.sel(band="CLM")) == pytest.approx(400 / (1600 - 50))
    within = np.zeros(GRID.shape, bool)
    within[20:30] = True
    assert cloud_fraction(out.sel(band="CLM"), within=within) == 0.0
    within[:] = False
    within[30:, :5] = True
    assert cloud_fraction(out.sel(band="CLM"), within=within) is None  # nothing observed there


def test_s2cloudless_postprocessing_matches_eolearn_masks(test_data):
    """Our probability -> mask step reproduces eo-learn's s2cloudless masks from the same probabilities."""
    root = test_data("eolearn_testeopatch/TestEOPatch")
    prob = np.load(root / "data" / "CLP.npy")[..., 0]
    ref = np.load(root / "mask" / "CLM_S2C.npy")[..., 0]
    ours = np.stack([probability_to_mask(p) for p in prob])
    assert (ours == ref).mean() > 0.97  # measured 0.981
    frac_err = np.abs(ours.mean(axis=(1, 2)) - ref.mean(axis=(1, 2)))
    assert frac_err.max() < 0.07 and np.median(frac_err) < 0.01  # per-date cloud fraction
    # and it agrees with Sentinel Hub's own CLM on which dates are clear (< 5 %) or overcast (> 95 %)
    clm = np.load(root / "mask" / "CLM.npy")[..., 0]
    clear, overcast = clm.mean(axis=(1, 2)) < 0.05, clm.mean(axis=(1, 2)) > 0.95
    assert clear.sum() >= 10 and overcast.sum() >= 10
    assert (ours.mean(axis=(1, 2))[clear] < 0.15).all() and (ours.mean(axis=(1, 2))[overcast] > 0.85).all()


def _oscd(test_data, city: str, k: int, size: int = 80) -> xr.DataArray:
    """All s2cloudless bands of an OSCD scene as TOA reflectance on a ``size`` px UTM crop."""
    from changedet.io import read_raster, reproject_to

    folder = test_data(f"oscd_sentinel2/images/{city}/imgs_{k}")
    with rasterio.open(next(folder.glob("*_B02.tif"))) as src:
        full = GridSpec.from_bounds("EPSG:32630" if city == "rennes" else "EPSG:32631",
                                    transform_bounds(src.crs, "EPSG:32630" if city == "rennes" else "EPSG:32631",
                                                     *src.bounds), 10.0)
    r0, c0 = full.shape[0] // 2 - size // 2, full.shape[1] // 2 - size // 2
    x0, y1 = full.xy(r0 - 0.5, c0 - 0.5)
    grid = GridSpec.from_bounds(full.crs, (x0, y1 - size * 10, x0 + size * 10, y1), 10.0)
    names = sorted(set(S2CLOUDLESS_BANDS) | {"B03"})
    planes = [reproject_to(read_raster(next(folder.glob(f"*_{b}.tif")), bands=[b]), grid) for b in names]
    return xr.concat(planes, dim="band") * 1e-4


def test_s2cloudless_on_real_clear_scene_and_on_thick_cloud(test_data):
    da = _oscd(test_data, "rennes", 2)
    mask, used = cloud_mask(da)
    assert used == "s2cloudless" and mask.shape == da.shape[1:]
    assert cloud_fraction(mask) < 0.05  # a clear summer scene (rennes 2: 0.0 over the whole image)
    # a thick cloud: bright and flat in all bands, cold cirrus band low, put into the same scene
    cloudy = da.copy()
    values = {"B01": 0.55, "B02": 0.52, "B03": 0.50, "B04": 0.50, "B05": 0.51, "B08": 0.52, "B8A": 0.52,
              "B09": 0.30, "B10": 0.04, "B11": 0.35, "B12": 0.25}
    for b, v in values.items():
        cloudy.loc[{"band": b}] = cloudy.sel(band=b).copy(data=np.where(
            np.arange(80)[:, None] < 40, v, cloudy.sel(band=b).values))
    m2, _ = cloud_mask(cloudy)
    assert m2.values[:36].mean() > 0.95 and m2.values[48:].mean() < 0.05


def test_brightness_test_false_alarms_on_real_clear_cities(test_data):
    for city, k in (("paris", 2), ("bercy", 2)):
        da = _oscd(test_data, city, k, size=120).sel(band=["B02", "B03", "B04", "B08"])
        mask, used = cloud_mask(da)
        assert used == "brightness"
        assert cloud_fraction(mask) < 0.02, city  # measured <= 0.5 % over whole scenes


def test_brightness_test_finds_simulated_clouds():
    """Against the simulator's cloud truth (thresholds are Fmask's, not fitted to the simulator)."""
    from changedet.aoi import load_aoi
    from changedet.sources.simulator import SimulatorSource

    aoi = load_aoi("tikhoretsk_depot")
    src = SimulatorSource()
    scenes = [s for s in src.search(aoi, date(2023, 6, 1), date(2023, 6, 30), sensor="vhr", resolution_m=2.0)
              if 20 < s.cloud_cover < 80][:2]
    assert scenes
    for s in scenes:
        sim = src.render(s, aoi)
        da = sim.grid.attach(sim.data, bands=list(sim.bands))
        pred = brightness_cloud(da).values > 0.5
        truth = sim.cloud_mask > 0.5
        recall = (pred & truth).sum() / truth.sum()
        precision = (pred & truth).sum() / max(1, pred.sum())
        assert recall > 0.7 and precision > 0.95, (s.id, recall, precision)  # measured 0.78-0.88 and 1.0
