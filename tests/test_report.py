"""The HTML report, built from a real (small) pipeline run and checked in headless Chromium."""

from __future__ import annotations

import re
import shutil
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from changedet.cli import main
from changedet.report import ReportError, baseline_band, build_report

REPO = Path(__file__).resolve().parents[1]
AOI_ID = "tumangang_railyard"
QUIET_ID = "khasan_railyard"
HOSTILE = "<script>alert(1)</script> & \"Tumangang\" 'yard'"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


# -- fixtures ------------------------------------------------------------------------------------
def _registry(root: Path) -> Path:
    """A copy of two shipped AOIs; Tumangang gets a hostile name and a shorter rule history.

    The shorter ``min_history`` lets the real rules fire within five weekly-ish dates
    (the shipped six-observation minimum would need a two-month run).
    """
    reg = root / "aois"
    (reg / "scenarios").mkdir(parents=True)
    for aoi_id in (AOI_ID, QUIET_ID):
        shutil.copy(REPO / "aois" / f"{aoi_id}.geojson", reg)
        shutil.copy(REPO / "aois" / "scenarios" / f"{aoi_id}.yaml", reg / "scenarios")
        shutil.copy(REPO / "aois" / f"{aoi_id}.yaml", reg)
    y = (reg / f"{AOI_ID}.yaml").read_text()
    quoted = "'" + HOSTILE.replace("'", "''") + "'"
    y = re.sub(r"^name: .*$", f"name: {quoted}", y, count=1, flags=re.M)
    # 1 m instead of 0.5 m: four times fewer pixels keeps the fixture fast; railcars stay countable.
    y = y.replace("resolution_m: 0.5", "resolution_m: 1.0").replace("min_history: 6", "min_history: 2")
    (reg / f"{AOI_ID}.yaml").write_text(y)
    return reg


@pytest.fixture(scope="session")
def report_data(tmp_path_factory):
    from changedet.aoi import load_aoi
    from changedet.pipeline import RunConfig, dates_between, run_series

    root = tmp_path_factory.mktemp("report")
    reg = _registry(root)
    aoi = load_aoi(AOI_ID, registry=reg)
    assert aoi.name == HOSTILE
    data = root / "data"
    results = run_series(aoi, dates_between(date(2023, 8, 6), date(2023, 10, 1), 14),
                         RunConfig(data_dir=data, registry=reg))
    alerts = list({a["alert_id"]: a for r in results for a in r.alerts}.values())
    assert alerts, [r.summary() for r in results]
    alert_days = sorted({r.day for r in results if r.alerts})
    # Both railcar rules fire on 1 October; the pipeline wrote an evidence pack for each.
    assert len(alerts) >= 2, alerts
    packs = [data / "evidence" / a["alert_id"] for a in alerts]
    assert all(p.is_dir() for p in packs), packs
    # Without its pack an alert must link to its outbox JSON record instead.
    shutil.rmtree(packs[-1])
    return {"root": root, "registry": reg, "data": data, "alerts": alerts, "alert_days": alert_days}


@pytest.fixture(scope="session")
def built(report_data):
    out = report_data["root"] / "report"
    index = build_report(report_data["data"], out, registry=report_data["registry"])
    return {**report_data, "out": out, "index": index, "page": out / AOI_ID / "index.html"}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("href", "src") and v is not None:
                self.urls.append((tag, v))


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


# -- library ---------------------------------------------------------------------------------
def test_baseline_band_known_answer():
    idx = pd.date_range("2023-01-01", periods=6, freq="7D", tz="UTC")
    s = pd.Series([10.0, 12.0, 11.0, 30.0, 10.0, 11.0], index=idx)
    band = baseline_band(s, window_days=100, k=2.0, min_history=3, mad_floor=0.0, rel_floor=0.0)
    assert band.iloc[:3].isna().all().all()
    # Before the 4th point: 10, 12, 11 -> median 11, MAD 1 -> 11 +- 2 * 1.4826.
    assert band.iloc[3].tolist() == pytest.approx([11 - 2 * 1.4826, 11, 11 + 2 * 1.4826])
    # Before the 6th: 10, 12, 11, 30, 10 -> median 11, MAD 1 (the outlier does not widen it).
    assert band.iloc[5]["hi"] == pytest.approx(11 + 2 * 1.4826)
    # A 14-day window keeps only the two previous points: below min_history.
    assert baseline_band(s, window_days=14, min_history=3).isna().all().all()
    # Floors: a flat history still has a band of k * mad_floor.
    flat = pd.Series(5.0, index=idx)
    assert baseline_band(flat, k=3.0, min_history=2, mad_floor=1.0, rel_floor=0.0)["hi"].iloc[-1] == 8.0


@pytest.mark.slow
def test_report_pages_and_figures(built):
    page = built["page"]
    assert built["index"] == built["out"] / "index.html" and built["index"].exists()
    text = page.read_text(encoding="utf-8")
    for name in ("map.png", "latest.png", "before.png", "after.png", "change.png", "series_0.png"):
        with Image.open(page.parent / name) as im:
            im.verify()
        with Image.open(page.parent / name) as im:
            assert im.size[0] >= 300 and im.size[1] >= 200, name
    # Every map PNG says where its data comes from.
    with Image.open(page.parent / "latest.png") as im:
        im.load()
        assert im.text["Copyright"] == "Simulated scene (changedet)"
    # Each alert is a row; the one with an evidence pack links to it, the other to its JSON record.
    links = [(t, u) for t, u in _parse(page).urls if t == "a"]
    evidence = [unquote(u) for t, u in links if "evidence" in u or u.startswith("alerts/")]
    assert len(evidence) == len(built["alerts"])
    last = built["alerts"][-1]["alert_id"]
    targets = {(page.parent / u).resolve() for u in evidence}
    assert all(t.exists() for t in targets), evidence
    # Copied into the report folder, so that it works copied or zipped on its own: the
    # pack's pictures and vectors (not its GeoTIFF chips), the record JSON byte for byte.
    expected = {(page.parent / "evidence" / a["alert_id"]).resolve() for a in built["alerts"][:-1]}
    expected.add((page.parent / "alerts" / f"{last}.json").resolve())
    assert targets == expected
    assert all(t.is_relative_to(page.parent.resolve()) for t in targets)
    record = built["data"] / "outbox" / "alerts" / f"{last}.json"
    assert (page.parent / "alerts" / f"{last}.json").read_bytes() == record.read_bytes()
    for a in built["alerts"][:-1]:
        pack, copy = built["data"] / "evidence" / a["alert_id"], page.parent / "evidence" / a["alert_id"]
        travels = sorted(f.name for f in pack.iterdir() if f.suffix != ".tif")
        assert travels and sorted(f.name for f in copy.iterdir()) == travels
        assert any(n.endswith(".png") for n in travels)
    # Nothing is fetched from anywhere else.
    for tag, url in _parse(page).urls + _parse(built["index"]).urls:
        assert not re.match(r"^(https?:)?//", url), (tag, url)


@pytest.mark.slow
def test_hostile_names_are_escaped(built):
    for path in (built["page"], built["index"]):
        text = path.read_text(encoding="utf-8")
        assert "<script" not in text.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Tumangang&quot; &#x27;yard&#x27;" in text
        assert "script" not in _parse(path).tags


@pytest.mark.slow
def test_index_lists_every_aoi(built):
    text = built["index"].read_text(encoding="utf-8")
    rows = re.findall(r"<tr>(.*?)</tr>", text.split("<tbody>")[1], flags=re.S)
    assert len(rows) == 2
    by_id = {AOI_ID if AOI_ID in r else QUIET_ID: r for r in rows}
    assert "badge alert" in by_id[AOI_ID] and "2023-10-01" in by_id[AOI_ID]
    assert "badge nodata" in by_id[QUIET_ID]
    # A sparkline per metric, with the alerts as dots on the railcars one.
    assert by_id[AOI_ID].count("<svg class=\"spark\"") >= 2
    assert "spark-alert" in by_id[AOI_ID]
    # A site without data still gets its page, with a map of its geometry.
    quiet = built["out"] / QUIET_ID / "index.html"
    assert "map.png" in quiet.read_text(encoding="utf-8")
    with Image.open(quiet.parent / "map.png") as im:
        assert im.size[0] >= 480


@pytest.mark.slow
def test_cli_period_and_errors(built, tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["report", "--aoi", AOI_ID, "--start", "2023-08-01", "--end", "2023-09-10", "--out", str(out),
               "--data-dir", str(built["data"]), "--registry", str(built["registry"])])
    assert rc == 0
    page = (out / AOI_ID / "index.html").read_text(encoding="utf-8")
    # Before the surge: no alert in the period, latest image of the period is not October's.
    assert "class=\"evidence\"" not in page and "2023-10-01" not in page
    assert "2023-08-20" in page or "2023-09-03" in page
    rows = re.findall(r"<tr>(.*?)</tr>", (out / "index.html").read_text().split("<tbody>")[1], flags=re.S)
    assert len(rows) == 1
    capsys.readouterr()
    assert main(["report", "--out", str(tmp_path / "x"), "--data-dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", "--aoi", AOI_ID, "--start", "2023-09-10", "--end", "2023-08-01", "--out",
                 str(tmp_path / "y"), "--data-dir", str(built["data"]), "--registry", str(built["registry"])]) == 2
    assert "swap" in capsys.readouterr().err
    with pytest.raises(ReportError):
        build_report(built["data"], tmp_path / "z", start=date(2023, 9, 2), end=date(2023, 9, 1),
                     registry=built["registry"])


# -- in a real browser -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    # Explicit binary and driver: selenium-manager never runs, nothing is downloaded.
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _load(driver, path: Path) -> list[dict]:
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return driver.get_log("browser")


@pytest.mark.slow
def test_report_in_headless_chromium(built, browser, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException

    logs = _load(browser, built["page"])
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []
    # The hostile name ran nothing and reads literally.
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.execute_script("return document.getElementById('aoi-name').textContent") == HOSTILE
    assert browser.execute_script("return document.getElementsByTagName('script').length") == 0
    assert HOSTILE in browser.title
    # Every image loaded.
    imgs = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(imgs) >= 5
    assert all(ok and w > 0 for _, ok, w in imgs), imgs
    # The railcar series shows the alert markers, as drawn elements with a size.
    series = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.series')).map(f => [f.dataset.metric, "
        "Number(f.dataset.alerts), Array.from(f.querySelectorAll('[id*=\"-alert-marker-\"]'))"
        ".filter(e => { const b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length, "
        "f.querySelectorAll('[id$=\"-baseline-band\"]').length])")
    by_metric = {m: (n, drawn, band) for m, n, drawn, band in series}
    # One marker per day an alert was opened on (the rules here all watch railcars).
    n_marks = len(built["alert_days"])
    assert by_metric["railcars"][0] == n_marks
    assert by_metric["railcars"][1] == n_marks
    assert by_metric["railcars"][2] == 1
    assert by_metric["changed_area_m2"][1] == 0
    # Screenshot of the whole page (the window grown to its height).
    height = browser.execute_script("return document.documentElement.scrollHeight")
    assert height > 2000    # maps, chips, heatmap, series and the table are all laid out
    browser.set_window_size(1280, min(height + 200, 8000))
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    inner = browser.execute_script("return [window.innerHeight * devicePixelRatio, window.innerWidth * devicePixelRatio]")
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert list(rgb.shape[:2]) == [int(v) for v in inner]
    assert rgb.std() > 10    # not a blank page

    logs = _load(browser, built["index"])
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []
    assert browser.execute_script("return document.getElementsByTagName('script').length") == 0
    names = browser.execute_script("return Array.from(document.querySelectorAll('a.aoi-link')).map(a => a.textContent)")
    assert HOSTILE in names
    assert browser.execute_script("return document.querySelectorAll('svg.spark circle.spark-alert').length") >= 1
    # The link to the AOI page works from disk.
    browser.find_element("css selector", f"a.aoi-link[href^='{AOI_ID}']").click()
    assert browser.execute_script("return document.getElementById('aoi-name').textContent") == HOSTILE
