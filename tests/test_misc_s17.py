"""Lead's small fixes of session 17: `changedet change` says when AFTER was resampled (it was silent); a plain image with no georeferencing is told to add its corners; the reliability reason never reads equal to its threshold."""

from __future__ import annotations

import json

from changedet.change import load_image, load_pair
from changedet.cli import main
from changedet.io import write_geotiff
from tests.test_change_cli import pair  # noqa: F401  (fixture: a synthetic UTM pair)


def test_json_names_the_resampling_of_after(pair, tmp_path, capsys):  # noqa: F811
    merc = load_image(pair / "after.tif").rio.reproject("EPSG:3857")
    write_geotiff(merc, tmp_path / "after_3857.tif")
    _, a = load_pair(pair / "before.tif", tmp_path / "after_3857.tif")
    assert "EPSG:3857" in a.attrs["history"] and "bilinear" in a.attrs["history"]

    rc = main(["change", str(pair / "before.tif"), str(tmp_path / "after_3857.tif"), "--method", "cva",
               "--out", str(tmp_path / "c.tif"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    note = doc["after_resampled"]
    assert "after_3857.tif" in note and "EPSG:3857" in note and f"{merc.shape[1]} x {merc.shape[2]} px" in note

    rc = main(["change", str(pair / "before.tif"), str(tmp_path / "after_3857.tif"), "--method", "cva",
               "--out", str(tmp_path / "c2.tif")])
    assert rc == 0
    assert "note: " in capsys.readouterr().out


def test_json_says_null_when_after_is_on_befores_grid(pair, tmp_path, capsys):  # noqa: F811
    rc = main(["change", str(pair / "before.tif"), str(pair / "after.tif"), "--method", "cva",
               "--out", str(tmp_path / "c.tif"), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["after_resampled"] is None


def test_plain_jpeg_error_gives_the_corner_fix_and_no_raw_warning(tmp_path, recwarn):
    import numpy as np
    import pytest
    import rasterio

    from changedet.errors import RasterError
    from changedet.io import read_raster

    path = tmp_path / "photo.png"
    with rasterio.open(path, "w", driver="PNG", width=8, height=6, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 6, 8), "uint8"))
    recwarn.clear()  # writing it warned
    with pytest.raises(RasterError) as err:
        read_raster(path)
    msg = str(err.value)
    assert "photo.png" in msg and "-a_ullr" in msg and "-a_srs" in msg
    # The command line prints changedet's error alone, without rasterio's warning beside it.
    from changedet.cli import main

    recwarn.clear()
    assert main(["coregister", str(path), str(path), "--json"]) == 2
    assert not [w for w in recwarn if "NotGeoreferenced" in type(w.message).__name__]

    # A georeferenced grid without a CRS needs only the CRS.
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=6, count=1, dtype="uint8",
                       transform=rasterio.transform.from_origin(500000, 4000000, 10, 10)) as dst:
        dst.write(np.zeros((1, 6, 8), "uint8"))
    with pytest.raises(RasterError, match="has no CRS; georeference it") as err:
        read_raster(path)
    assert "-a_ullr" not in str(err.value)


def test_reliability_reason_never_reads_equal_to_its_threshold():
    from changedet.coreg import below_min_reliability

    assert below_min_reliability(0.4996, 0.5) == "reliability 0.499 below min_reliability 0.5"
    assert below_min_reliability(0.12345, 0.3) == "reliability 0.123 below min_reliability 0.3"
    assert below_min_reliability(0.3332, 0.3333) == "reliability 0.333 below min_reliability 0.3333"


def test_aois_list_shows_the_good_aois_when_one_file_is_broken(tmp_path, capsys):
    import shutil

    from changedet.aoi import default_registry, scan_registry
    from changedet.cli import main

    reg = tmp_path / "aois"
    shutil.copytree(default_registry(), reg)
    good = sorted(p.stem for p in reg.glob("*.yaml"))
    (reg / f"{good[0]}.yaml").write_text("id: [unclosed\n")  # an analyst's typo in one site
    aois, errors = scan_registry(reg)
    assert [a.id for a in aois] == good[1:] and len(errors) == 1 and good[0] in str(errors[0])

    rc = main(["aois", "list", "--registry", str(reg)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert all(g in out for g in good[1:]) and good[0] not in out.split("\n", 1)[1]
    assert f"{good[0]}.yaml" in err and "validate" in err
    rc = main(["aois", "list", "--registry", str(reg), "--json"])
    out, _ = capsys.readouterr()
    assert rc == 1 and sorted(d["id"] for d in json.loads(out)) == good[1:]


def test_report_copies_evidence_never_links_it(tmp_path):
    from changedet.report.build import _take_copy

    src, dst = tmp_path / "a.png", tmp_path / "b.png"
    src.write_bytes(b"evidence")
    _take_copy(src, dst)
    assert dst.read_bytes() == b"evidence" and dst.stat().st_ino != src.stat().st_ino
    dst.write_bytes(b"EDITED")  # an edit in the report folder leaves the evidence alone
    assert src.read_bytes() == b"evidence"
