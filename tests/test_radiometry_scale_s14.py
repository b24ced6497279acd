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


# -- s14 MEND3: review findings on the scale sniffing ---------------------------------------

def _meta(dtype, names=("R", "G", "B", "NIR", "CLM"), per=None, **b):
    per = per or {}
    return {"dtype": dtype, "bands": [{"name": n, "scale": 1.0, "offset": 0.0, "quantification": None,
                                       "add_offset": None, **b, **per.get(n, {})} for n in names]}


def test_float_reflectance_with_a_copied_quantification_tag_counts_as_the_clean_file(depot, float_doc, capsys):
    # Exporters copy BOA_QUANTIFICATION_VALUE into float products already in reflectance:
    # dividing by 10000 again gave 0 TEU with exit 0.
    path = _variant(depot["image"], depot["dir"] / "f_tagged.tif", dtype="float32", convert=lambda r: r,
                    tags={"BOA_QUANTIFICATION_VALUE": "10000"})
    doc = _count(capsys, path)
    _same_count(doc, float_doc)
    assert doc["radiometry"]["scale"] == 1.0 and "not applied" in doc["radiometry"]["source"]


def test_metadata_scale_that_gives_implausible_reflectance_is_refused_or_warned():
    from changedet.objects.checks import RadiometryError
    from changedet.objects.common import radiometry

    # A GDAL offset in DN units with scale 1: DN - 1000 is not reflectance.
    meta = _meta("uint16", per={n: {"offset": -1000.0} for n in ("R", "G", "B", "NIR")})
    with pytest.raises(RadiometryError, match="x.tif: .*outside the plausible"):
        radiometry(meta, 3000.0, path="x.tif", skip=("CLM",))
    r = radiometry(meta, 3000.0, path="x.tif", skip=("CLM",), unknown_ok=True)
    assert r["warning"] and "warning" in r["source"] and "GDAL scale/offset" in r["source"]
    # The same metadata on plausible values passes without a warning.
    ok = radiometry(_meta("uint16", quantification=10000.0), 3000.0, path="x.tif", skip=("CLM",))
    assert ok["scale"] == pytest.approx(1e-4) and not ok.get("warning")


def test_float_file_with_an_undeclared_65535_fill_border_counts(depot, float_doc, capsys):
    def collar(r):
        out = r.copy()
        out[:, :30] = 65535.0
        return out

    path = _variant(depot["image"], depot["dir"] / "f_collar.tif", dtype="float32", convert=collar)
    doc = _count(capsys, path)
    _same_count(doc, float_doc)
    assert doc["radiometry"]["scale"] == 1.0


def test_high_percentile_leaves_out_cloud_and_fill():
    from changedet.objects.common import high_percentile

    rng = np.random.default_rng(0)
    v = rng.uniform(300, 3000, (4, 100, 100)).astype("float32")
    cloud = np.zeros((100, 100), bool)
    cloud[:5] = True  # 5 % of the pixels
    v[:, cloud] = 30000.0
    assert high_percentile(v, ~cloud, integer=True) < 3000
    assert high_percentile(v, None, integer=True) == 30000.0
    v[:, cloud] = 65535.0  # saturated / fill, not flagged
    assert high_percentile(v, None, integer=True) < 3000
    assert np.isnan(high_percentile(v[:, :, :0], None, integer=True))  # nothing left: NaN


@pytest.mark.parametrize("flagged", [True, False])
def test_uint16_s2_with_a_little_bright_cloud_is_not_refused(flagged):
    # Sentinel-2 L2A, baseline 04.00 (+1000), with 1 % cloud at reflectance 0.7-1.25.
    from changedet.objects.common import high_percentile, radiometry

    rng = np.random.default_rng(1)
    v = rng.uniform(1300, 4000, (4, 200, 200)).astype("float32")
    cloud = rng.random((200, 200)) < 0.01
    v[:, cloud] = rng.uniform(8000, 13500, (4, int(cloud.sum())))
    high = high_percentile(v, ~cloud if flagged else None, integer=True)
    r = radiometry(_meta("uint16"), high, path="s2.tif", skip=("CLM",))
    assert r["scale"] == pytest.approx(1e-4)


def test_uint16_with_clm_flagged_cloud_counts(depot, capsys):
    # Cloud the CLM band flags (here fill-like 30000 values) does not set the scale.
    with rasterio.open(depot["image"]) as src:
        clm = src.read(src.descriptions.index("CLM") + 1)
    rows = clm.shape[0] // 50  # 2 % of the image, top rows

    def cloudy(r):
        out = _x10000()(r)
        out[:rows] = 30000
        return out

    path = _variant(depot["image"], depot["dir"] / "u16_cloud.tif", dtype="uint16", convert=cloudy)
    with rasterio.open(path, "r+") as dst:
        j = dst.descriptions.index("CLM") + 1
        m = dst.read(j)
        m[:rows] = 1
        dst.write(m, j)
    doc = _count(capsys, path)
    assert doc["radiometry"]["scale"] == 1e-4


def test_only_some_bands_stating_a_scale_does_not_stop_railcars():
    from changedet.objects.checks import RadiometryError
    from changedet.objects.common import radiometry

    meta = _meta("uint16", names=("R", "G", "B", "NIR"), per={n: {"scale": 1e-4} for n in ("R", "G", "B")})
    with pytest.raises(RadiometryError, match="only some"):
        radiometry(meta, 3000.0, path="x.tif")
    r = radiometry(meta, 3000.0, path="x.tif", unknown_ok=True)
    assert r["scale"] is None and r["warning"] and r["source"].startswith("unknown: only some")
    # A scene-classification band without a scale is a class band, not a band missing one.
    scl = _meta("uint16", names=("R", "G", "B", "NIR", "SCL"),
                per={n: {"scale": 1e-4} for n in ("R", "G", "B", "NIR")})
    r = radiometry(scl, 3000.0, path="x.tif")
    assert r["scale"] == pytest.approx(1e-4) and "SCL" not in r["bands"]


def test_to_reflectance_in_place_adds_no_copy():
    import xarray as xr

    from changedet.objects.common import to_reflectance

    vals = np.full((2, 3, 3), 2000.0, "float32")
    image = xr.DataArray(vals, dims=("band", "y", "x"), coords={"band": ["R", "CLM"]})
    radio = {"bands": {"R": (1e-4, -0.1)}}
    out = to_reflectance(image, radio, inplace=True)
    assert np.shares_memory(out.values, vals)
    np.testing.assert_allclose(out.sel(band="R").values, 0.1, rtol=1e-6)
    np.testing.assert_array_equal(out.sel(band="CLM").values, 2000.0)
    # Without inplace the caller's array is left alone.
    vals2 = np.full((2, 3, 3), 2000.0, "float32")
    to_reflectance(xr.DataArray(vals2, dims=("band", "y", "x"), coords={"band": ["R", "CLM"]}), radio)
    assert (vals2 == 2000.0).all()


def test_assumed_scale_is_said_on_stderr(depot, capsys):
    path = _variant(depot["image"], depot["dir"] / "u16_warn.tif", dtype="uint16", convert=_x10000())
    rc = main(["count", "containers", str(path), "--aoi", "tikhoretsk_depot", "--json"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning" in err and "assumed" in err and str(path) in err


def test_add_offset_without_quantification_is_used_or_refused():
    from changedet.objects.checks import RadiometryError
    from changedet.objects.common import radiometry

    meta = _meta("uint16", per={n: {"add_offset": -1000.0} for n in ("R", "G", "B", "NIR")})
    r = radiometry(meta, 4000.0, path="x.tif", skip=("CLM",))
    assert r["scale"] == pytest.approx(1e-4) and r["offset"] == pytest.approx(-0.1)
    assert "BOA_ADD_OFFSET -1000" in r["source"] and "no BOA_QUANTIFICATION_VALUE" in r["source"]
    with pytest.raises(RadiometryError, match="x.tif: .*BOA_ADD_OFFSET without BOA_QUANTIFICATION_VALUE"):
        radiometry(meta, 40000.0, path="x.tif", skip=("CLM",))
    r = radiometry(meta, 40000.0, path="x.tif", skip=("CLM",), unknown_ok=True)
    assert r["scale"] is None and r["warning"]
