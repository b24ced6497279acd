"""``changedet count`` reads the image's radiometric scale at the boundary (s14 SCALE).

The counters' colour rules are in surface reflectance 0-1; the same simulated scene fed as
float reflectance, as uint16 reflectance x 10000 (with and without offset metadata) or as
8-bit display RGB must give the same count, or say why it cannot.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
import rasterio

from changedet.aoi import load_aoi
from changedet.cli import main
from changedet.simulate.render import render_scene
from changedet.simulate.truth import write_scene

DAY = date(2023, 9, 14)


@pytest.fixture(scope="module")
def depot(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    sc = render_scene(load_aoi("tikhoretsk_depot"), DAY, "vhr", clear=True)
    paths = write_scene(sc, out, stem=f"depot_{DAY.isoformat()}")
    return {"image": paths["image"], "dir": out}


def _variant(src_path, dst_path, *, dtype, convert, scales=None, offsets=None, tags=None, band_tags=None):
    """A copy of the float scene with its R, G, B, NIR bands as ``convert(reflectance)`` in
    ``dtype`` (the CLM band as stored), its sun tags kept, and the given metadata."""
    with rasterio.open(src_path) as src:
        arr = src.read()
        profile = {k: v for k, v in src.profile.items() if k in ("count", "height", "width", "crs", "transform")}
        desc, src_tags = src.descriptions, src.tags()
    out = np.zeros(arr.shape, dtype=dtype)
    for i, d in enumerate(desc):
        band = arr[i]
        out[i] = np.nan_to_num(band).astype(dtype) if d == "CLM" else convert(np.nan_to_num(band))
    with rasterio.open(dst_path, "w", driver="GTiff", dtype=dtype, **profile) as dst:
        dst.write(out)
        for i, d in enumerate(desc, start=1):
            dst.set_band_description(i, d)
            if band_tags and d != "CLM":
                dst.update_tags(i, **band_tags)
        dst.update_tags(**{k: v for k, v in src_tags.items() if k.startswith(("SUN_", "TIFFTAG_DATETIME"))},
                        **(tags or {}))
        if scales is not None:
            dst.scales = [1.0 if d == "CLM" else scales for d in desc]
            dst.offsets = [0.0 if d == "CLM" else offsets for d in desc]
    return dst_path


def _count(capsys, path, *extra):
    rc = main(["count", "containers", str(path), "--aoi", "tikhoretsk_depot", "--json", *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


def _x10000(offset=0):
    return lambda r: np.clip(np.round(r * 10000 + offset), 0, 65535).astype("uint16")


@pytest.fixture(scope="module")
def float_doc(depot):
    # A module fixture cannot take capsys: read the CLI's stdout through a pipe of our own.
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["count", "containers", str(depot["image"]), "--aoi", "tikhoretsk_depot", "--json"]) == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def _same_count(doc, ref):
    assert doc["total"] == pytest.approx(ref["total"], rel=0.02)
    assert doc["tarped_stacks"] == ref["tarped_stacks"]


def test_float_reflectance_is_said_and_unchanged(float_doc):
    assert float_doc["radiometry"] == {"scale": 1.0, "offset": 0.0,
                                       "source": "float values taken as surface reflectance 0-1"}
    assert float_doc["tarped_stacks"] > 0  # the scene has tarps to flag, so the comparisons below mean something


def test_uint16_x10000_without_metadata_is_taken_as_reflectance(depot, float_doc, capsys):
    path = _variant(depot["image"], depot["dir"] / "u16.tif", dtype="uint16", convert=_x10000())
    doc = _count(capsys, path)
    _same_count(doc, float_doc)
    assert doc["radiometry"]["scale"] == 1e-4 and doc["radiometry"]["offset"] == 0.0
    assert doc["radiometry"]["source"].startswith("assumed") and "x 10000" in doc["radiometry"]["source"]


def test_uint16_with_sentinel2_offset_tags(depot, float_doc, capsys):
    # Sentinel-2 processing baseline 04.00+: DN = reflectance x 10000 + 1000, stated by the
    # BOA_QUANTIFICATION_VALUE / BOA_ADD_OFFSET items.
    path = _variant(depot["image"], depot["dir"] / "s2.tif", dtype="uint16", convert=_x10000(1000),
                    tags={"BOA_QUANTIFICATION_VALUE": "10000"}, band_tags={"BOA_ADD_OFFSET": "-1000"})
    doc = _count(capsys, path)
    _same_count(doc, float_doc)
    assert doc["radiometry"]["scale"] == pytest.approx(1e-4)
    assert doc["radiometry"]["offset"] == pytest.approx(-0.1)
    assert "BOA_QUANTIFICATION_VALUE" in doc["radiometry"]["source"]


def test_uint16_with_gdal_scale_offset(depot, float_doc, capsys):
    path = _variant(depot["image"], depot["dir"] / "gdal.tif", dtype="uint16", convert=_x10000(1000),
                    scales=1e-4, offsets=-0.1)
    doc = _count(capsys, path)
    _same_count(doc, float_doc)
    assert doc["radiometry"]["offset"] == pytest.approx(-0.1)
    assert "GDAL scale/offset" in doc["radiometry"]["source"]


def test_uint16_offset_given_on_the_command_line(depot, float_doc, capsys):
    path = _variant(depot["image"], depot["dir"] / "s2_bare.tif", dtype="uint16", convert=_x10000(1000))
    doc = _count(capsys, path, "--reflectance-scale", "0.0001", "--reflectance-offset", "-0.1")
    _same_count(doc, float_doc)
    assert doc["radiometry"]["source"] == "--reflectance-scale/--reflectance-offset"


def _stretch8(r):
    # Display RGB: the scene stretched to 0-255 (its 99.9th percentile to 255).
    return np.clip(np.round(r / 0.4 * 255), 0, 255).astype("uint8")


def test_uint8_display_rgb_is_refused_with_the_fix(depot, capsys):
    path = _variant(depot["image"], depot["dir"] / "rgb8.tif", dtype="uint8", convert=_stretch8)
    rc = main(["count", "containers", str(path), "--aoi", "tikhoretsk_depot", "--json"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(path) in err and "8-bit" in err and "--reflectance-scale" in err


def test_uint8_with_a_stated_scale_counts(depot, float_doc, capsys):
    path = _variant(depot["image"], depot["dir"] / "rgb8s.tif", dtype="uint8", convert=_stretch8)
    doc = _count(capsys, path, "--reflectance-scale", str(0.4 / 255))
    assert doc["radiometry"]["scale"] == pytest.approx(0.4 / 255)
    # 8 bits over 0-0.4 quantise reflectance in steps of 0.0016: a looser match.
    assert doc["total"] == pytest.approx(float_doc["total"], rel=0.05)


def test_float_dns_are_refused(depot, capsys):
    path = _variant(depot["image"], depot["dir"] / "f10000.tif", dtype="float32", convert=lambda r: r * 10000)
    rc = main(["count", "containers", str(path), "--aoi", "tikhoretsk_depot", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "not surface reflectance" in err


def test_offset_without_scale_is_refused(depot, capsys):
    rc = main(["count", "containers", str(depot["image"]), "--aoi", "tikhoretsk_depot", "--json",
               "--reflectance-offset", "-0.1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--reflectance-offset needs --reflectance-scale" in err


def test_radiometry_kernel_rules():
    from changedet.objects.checks import RadiometryError
    from changedet.objects.common import radiometry

    def meta(dtype, **b):
        return {"dtype": dtype, "bands": [dict({"name": n, "scale": 1.0, "offset": 0.0, "quantification": None,
                                               "add_offset": None}, **b) for n in ("R", "G", "B", "NIR", "CLM")]}

    r = radiometry(meta("uint16"), 3000.0, path="x.tif", skip=("CLM",))
    assert r["scale"] == 1e-4 and "CLM" not in r["bands"]
    with pytest.raises(RadiometryError, match="x.tif: uint16 values reach 40000"):
        radiometry(meta("uint16"), 40000.0, path="x.tif", skip=("CLM",))
    with pytest.raises(RadiometryError, match="positive"):
        radiometry(meta("uint16"), 3000.0, path="x.tif", scale=0.0)
    r = radiometry(meta("uint16", quantification=10000.0, add_offset=-1000.0), 5000.0, path="x.tif")
    assert r["scale"] == pytest.approx(1e-4) and r["offset"] == pytest.approx(-0.1)


def test_cloud_mask_band_is_not_rescaled():
    # A CLM of 1 (cloud) scaled by 1e-4 would read as clear (< 0.5).
    import xarray as xr

    from changedet.objects.common import radiometry, to_reflectance

    image = xr.DataArray(np.stack([np.full((2, 2), 2000.0, "float32"), np.ones((2, 2), "float32")]),
                         dims=("band", "y", "x"), coords={"band": ["R", "CLM"]})
    meta = {"dtype": "uint16", "bands": [{"name": n, "scale": 1.0, "offset": 0.0, "quantification": None,
                                          "add_offset": None} for n in ("R", "CLM")]}
    out = to_reflectance(image, radiometry(meta, 2000.0, path="x.tif", skip=("CLM",)))
    np.testing.assert_allclose(out.sel(band="R").values, 0.2)
    np.testing.assert_array_equal(out.sel(band="CLM").values, 1.0)


def test_uint8_railcars_count_as_stored_with_a_note(depot, capsys):
    # Railcars have no reflectance-only output: an 8-bit image is counted as before, and
    # the JSON and stderr say the scale is unknown.
    path = _variant(depot["image"], depot["dir"] / "rgb8r.tif", dtype="uint8", convert=_stretch8)
    rc = main(["count", "railcars", str(path), "--aoi", "tikhoretsk_depot", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out.strip().splitlines()[-1])
    assert doc["radiometry"]["scale"] is None and doc["radiometry"]["offset"] is None
    assert doc["radiometry"]["source"].startswith("unknown: 8-bit values")
    assert "--reflectance-scale" in captured.err and str(path) in captured.err
