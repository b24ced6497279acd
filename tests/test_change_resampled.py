"""`changedet change` says when AFTER was resampled onto BEFORE's grid (it used to do so silently)."""

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
