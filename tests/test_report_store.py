"""The report reads cubes and products where the runs put them (``CHANGEDET_STORE_URL``)."""
from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import fsspec
import pytest

from changedet.report import build_report

REPO = Path(__file__).resolve().parents[1]
AOI_ID = "khasan_railyard"


def _registry(root: Path) -> Path:
    reg = root / "aois"
    (reg / "scenarios").mkdir(parents=True)
    shutil.copy(REPO / "aois" / f"{AOI_ID}.geojson", reg)
    shutil.copy(REPO / "aois" / "scenarios" / f"{AOI_ID}.yaml", reg / "scenarios")
    # 1 m instead of 0.5 m keeps the run short; railcars stay countable.
    y = (REPO / "aois" / f"{AOI_ID}.yaml").read_text().replace("resolution_m: 0.5", "resolution_m: 1.0")
    (reg / f"{AOI_ID}.yaml").write_text(y)
    return reg


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_report_from_a_store_url_shows_what_a_local_report_shows(tmp_path, monkeypatch):
    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, dates_between, run_series

    reg = _registry(tmp_path)
    data = tmp_path / "data"
    # Four processed dates: the last has the three earlier ones a change map needs, and railcars.
    results = run_series(load_aoi(AOI_ID, registry=reg), dates_between(date(2023, 7, 23), date(2023, 8, 20), 7),
                         RunConfig(data_dir=data, registry=reg))
    assert [r.status for r in results].count("processed") >= 4, [r.summary() for r in results]

    local = build_report(data, tmp_path / "local", registry=reg)
    local_pngs = _pngs(local.parent / AOI_ID)
    # The local report has the imagery a store must deliver: map, latest image, change heatmap (change.png).
    assert {"map.png", "latest.png", "change.png"} <= set(local_pngs), sorted(local_pngs)
    # ... and detections from the products folder (drawn on the latest image, counted in its caption).
    assert "no detections" not in (local.parent / AOI_ID / "index.html").read_text()

    # Move cubes and products to an fsspec store; the data directory keeps metrics and outbox only.
    url = f"memory://report-store-{tmp_path.name}"
    fs = fsspec.filesystem("memory")
    for sub in ("cubes", "products"):
        fs.put(str(data / sub), f"{url}/{sub}", recursive=True)
        shutil.rmtree(data / sub)

    # Without the store URL the report has no imagery, only the outline map drawn from the AOI
    # (what users saw before this was fixed) ...
    bare = build_report(data, tmp_path / "bare", registry=reg)
    assert not {"latest.png", "change.png", "before.png"} & set(_pngs(bare.parent / AOI_ID))

    # ... with it, from the environment as the runs read it, the same figures byte for byte.
    monkeypatch.setenv("CHANGEDET_STORE_URL", url)
    remote = build_report(data, tmp_path / "remote", registry=reg)
    assert _pngs(remote.parent / AOI_ID) == local_pngs
    # The footer says when the page was generated (to the minute); the two builds may straddle one.
    def page(report):
        return re.sub(r"Generated [^<]* by changedet", "Generated - by changedet",
                      (report.parent / AOI_ID / "index.html").read_text())

    assert page(remote) == page(local)


def test_report_cli_takes_store_and_metrics_urls(tmp_path, capsys):
    from changedet.cli import main

    # An empty data directory and an empty store: the report says "no data" rather than failing.
    data = tmp_path / "data"
    data.mkdir()
    rc = main(["report", "--aoi", AOI_ID, "--out", str(tmp_path / "out"), "--data-dir", str(data),
               "--store-url", f"memory://empty-{tmp_path.name}",
               "--metrics-url", f"sqlite:///{tmp_path / 'none.sqlite'}"])
    assert rc == 0
    assert not (tmp_path / "none.sqlite").exists()  # a report never creates a metric store
    assert "no data" in (tmp_path / "out" / AOI_ID / "index.html").read_text().lower()
