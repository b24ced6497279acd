"""AUDIT6 (s17): a new user's first hour with the README, defects found and fixed.

Each test fails on the code before the fix: simulate's --resolution (0 taken as the
default, tiny or huge sizes a traceback), simulate's JSON silent on the weather,
``change`` refusing the README's --json example without --out, alert JSON mirrors
written 0600, a one-date series plotted over four years, and the "days are kept"
hint on commands that keep no days.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from changedet.cli import main

SIM = ["simulate", "--aoi", "tumangang_railyard", "--date", "2023-10-05"]


@pytest.mark.parametrize("resolution", ["0", "-1", "nan"])
def test_simulate_refuses_a_resolution_that_is_not_positive(resolution, tmp_path, capsys):
    # Before: "0" was falsy and silently became the sensor's 0.5 m (exit 0, a file written).
    rc = main(SIM + [f"--resolution={resolution}", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not a positive number of metres" in err and "0.5" in err
    assert not list(tmp_path.iterdir())


def test_simulate_refuses_a_resolution_too_fine_to_render(tmp_path, capsys):
    # Before: numpy's MemoryError (1.59 TiB) as a traceback.
    rc = main(SIM + ["--resolution", "0.001", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "too large to render" in err and "coarser resolution" in err and "tumangang_railyard" in err


def test_simulate_refuses_a_resolution_coarser_than_the_site(tmp_path, capsys):
    # Before: OverflowError from the acquisition time of a 1 x 1 pixel scene.
    rc = main(SIM + ["--resolution", "1e9", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "only 1 x 1 pixels" in err and "finer resolution" in err
    # The coarsest usable size comes from the site's extent (about 500 m / 8 px), not from
    # the huge pixel's snapped grid.
    coarsest = float(err.split("at most ")[1].split(" m")[0])
    assert 20 < coarsest < 200


def test_simulate_says_how_cloudy_the_scene_is(tmp_path, capsys):
    # The README's example date is 78 % cloud at tikhoretsk_depot: the counter then finds
    # ~0 of the 508 TEU in the truth. The JSON (and a note) say so; before, nothing did.
    rc = main(["simulate", "--aoi", "tikhoretsk_depot", "--date", "2023-10-05", "--sensor", "s2",
               "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out)
    truth = json.loads((tmp_path / "tikhoretsk_depot_2023-10-05_s2.truth.json").read_text())
    assert doc["conditions"] == truth["conditions"]
    assert doc["conditions"]["cloud_fraction"] > 0.2  # 0.44 on this Sentinel-2 render (0.78 at VHR)
    assert "under cloud" in err


def test_change_json_without_out_prints_the_figures(tmp_path, capsys):
    # README: `changedet change BEFORE AFTER --method irmad ... --json` has no --out;
    # before, argparse refused it ("the following arguments are required: --out").
    from tests.test_change_cli import BANDS, GRID, _scene
    from changedet.io import write_geotiff

    write_geotiff(GRID.attach(_scene(0, False), bands=BANDS), tmp_path / "before.tif", dtype="uint16")
    write_geotiff(GRID.attach(_scene(1, True), bands=BANDS), tmp_path / "after.tif", dtype="uint16")
    rc = main(["change", str(tmp_path / "before.tif"), str(tmp_path / "after.tif"), "--method", "cva", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["out"] is None and doc["changed_pixels"] > 0 and doc["polygon_count"] >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.tif", "before.tif"]
    # The text form says the map was not written and how to write it.
    assert main(["change", str(tmp_path / "before.tif"), str(tmp_path / "after.tif"), "--method", "cva"]) == 0
    assert "not written (add --out" in capsys.readouterr().out


def test_alert_json_files_are_readable_by_the_group_and_web_server(tmp_path):
    # mkstemp's 0600 stayed on every data/outbox/alerts/*.json; every other output
    # (outbox.sqlite, evidence, products) is 0666 less the umask.
    from tests.test_outbox import finding
    from changedet.alerts import Outbox

    old = os.umask(0o022)
    try:
        with Outbox(tmp_path / "outbox", clock=lambda: datetime(2023, 10, 6, tzinfo=timezone.utc)) as box:
            alert, _ = box.open_or_update(finding(72))
            path = box.alerts_dir / f"{alert.id}.json"
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
            box.ack(alert.id)  # rewritten: still 0644, no temporary file left
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
            assert [p.name for p in box.alerts_dir.iterdir()] == [path.name]
    finally:
        os.umask(old)


def test_a_one_date_series_is_plotted_over_a_month_not_years():
    # A site's first observation: matplotlib padded one date to 2022-2025.
    import matplotlib.dates as mdates

    from changedet.figures import _series_figure

    s = pd.Series([5596.0], index=[pd.Timestamp("2023-06-22T01:30")])
    fig = _series_figure(s, title="one", units="m²", baseline=None, alerts=[], width_px=800, height_px=320)
    lo, hi = fig.axes[0].get_xlim()
    assert hi - lo <= 31
    assert mdates.num2date(lo).date() <= datetime(2023, 6, 22).date() <= mdates.num2date(hi).date()
    # Two dates keep matplotlib's own limits around them.
    s2 = pd.Series([1.0, 2.0], index=pd.to_datetime(["2023-06-01", "2023-11-30"]))
    fig2 = _series_figure(s2, title="two", units="", baseline=None, alerts=[], width_px=800, height_px=320)
    lo2, hi2 = fig2.axes[0].get_xlim()
    assert hi2 - lo2 >= 182
    assert np.isfinite([lo, hi, lo2, hi2]).all()


def test_simulate_path_error_does_not_speak_of_kept_days(tmp_path, capsys):
    # "days a run finished are kept" is for run/fetch/demo/backfill; simulate keeps no days.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc = main(SIM + ["--sensor", "s2", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "a_file" in err and "writable" in err
    assert "days a run finished" not in err


def test_simulate_takes_a_registry_like_run_and_report(tmp_path, capsys):
    # run/report/aois take --registry; simulate did not (argparse refused it), so an AOI in
    # the user's own folder could only be simulated through $CHANGEDET_AOIS.
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "aois"
    reg = tmp_path / "mine"
    reg.mkdir()
    (reg / "my_yard.yaml").write_text(
        (src / "tumangang_railyard.yaml").read_text().replace("id: tumangang_railyard", "id: my_yard"))
    (reg / "my_yard.geojson").write_text(
        (src / "tumangang_railyard.geojson").read_text().replace('"id": "tumangang_railyard"', '"id": "my_yard"'))
    rc = main(["simulate", "--aoi", "my_yard", "--registry", str(reg), "--date", "2023-10-05", "--sensor", "s2",
               "--out", str(tmp_path / "out")])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert Path(doc["image"]).name == "my_yard_2023-10-05_s2.tif"


def test_alerts_take_data_dir_after_the_action_too(tmp_path, capsys):
    # `changedet alerts list --data-dir data/` (the order run, report and fetch use) was
    # "unrecognized arguments: --data-dir"; before the action it still works.
    from tests.test_outbox import finding
    from changedet.alerts import Outbox

    data = tmp_path / "data"
    with Outbox(data / "outbox") as box:
        alert, _ = box.open_or_update(finding(72))
    for argv in (["alerts", "list", "--data-dir", str(data)], ["alerts", "--data-dir", str(data), "list"],
                 ["alerts", "--data-dir", str(tmp_path / "elsewhere"), "list", "--data-dir", str(data)]):
        assert main(argv) == 0
        assert alert.id in capsys.readouterr().out
    assert main(["alerts", "show", alert.id, "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == alert.id
    assert main(["alerts", "ack", "--data-dir", str(data), alert.id]) == 0
    capsys.readouterr()
    assert main(["alerts", "list", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "acknowledged"


def test_evidence_pack_folder_is_readable_by_the_group_and_web_server(tmp_path):
    # mkdtemp's 0700 stayed on data/evidence/<alert_id>/ after the rename: a web server
    # serving the data dir (CHANGEDET_PUBLIC_BASE_URL, linked from Slack) could not open it.
    from tests.test_evidence import T1, synthetic
    from changedet.evidence import build_evidence

    _, a, *_ = synthetic()
    old = os.umask(0o022)
    try:
        for event in ("opened", "escalated"):  # first write, then the in-place rewrite
            path = build_evidence(tmp_path / "evidence", "x", alert={"aoi_id": "x"}, event=event, sensor="vhr",
                                  when=T1, after=a)
            pack = tmp_path / "evidence" / "x"
            assert path.parent == pack
            assert stat.S_IMODE(pack.stat().st_mode) == 0o755
            assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in pack.iterdir())
        assert [p.name for p in (tmp_path / "evidence").iterdir()] == ["x"]
    finally:
        os.umask(old)

