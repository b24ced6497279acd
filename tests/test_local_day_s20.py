"""The local-day search with a broken file, and a report's metric values of a local day.

Session 19's review: with a time-bearing ``pattern`` a broken file lying on the run day's own
UTC date failed the day even when its name gave it to the neighbouring local day and the day
had a good scene; and ``report --start D --end D`` at a site east of UTC+10 selected its
images by the run's day but its metric values by UTC instants ("railcars: no value recorded").
"""

from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_local_day_s19 import _found, _site, _utc  # noqa: E402
from test_local_day_s19b import KAMCHATKA, _kamchatka_run  # noqa: E402
from test_pipeline_sources import AOI, scenes  # noqa: E402

__all__ = ["scenes"]  # the module-scoped fixture of test_pipeline_sources

PATTERN = r"(?P<date>\d{8})T(?P<time>\d{6})"


def _cut(tmp_path: Path, stem: str) -> None:
    f = tmp_path / "imgs" / f"{stem}.tif"
    f.write_bytes(f.read_bytes()[:200])


@pytest.mark.parametrize("tz, good, bad, bad_day", [
    # Kamchatka (UTC+12): the broken pass of Aug 18 (22:40 UTC on Aug 17) lies on Aug 17's own UTC date.
    (KAMCHATKA, ("k_20230816T224000", _utc(2023, 8, 16, 22, 40)), ("k_20230817T224000", _utc(2023, 8, 17, 22, 40)),
     date(2023, 8, 18)),
    # Los Angeles (UTC-7): 02:00 UTC on Aug 17 is the evening of Aug 16; the good pass shares its UTC date.
    ("America/Los_Angeles", ("k_20230817T183000", _utc(2023, 8, 17, 18, 30)),
     ("k_20230817T020000", _utc(2023, 8, 17, 2, 0)), date(2023, 8, 16)),
])
def test_with_a_pattern_a_broken_file_fails_only_the_local_day_its_name_gives(tmp_path, tz, good, bad, bad_day):
    from changedet.errors import SceneUnreadable

    aoi, cfg = _site(tmp_path, tz, {good[0]: good[1], bad[0]: bad[1]}, pattern=PATTERN)
    assert _found(aoi, cfg, date(2023, 8, 17)) == [good[0]]
    assert _found(aoi, cfg, bad_day) == [bad[0]]
    _cut(tmp_path, bad[0])
    assert _found(aoi, cfg, date(2023, 8, 17)) == [good[0]]
    with pytest.raises(SceneUnreadable, match=bad[0]):
        _found(aoi, cfg, bad_day)


def test_with_a_pattern_a_broken_file_of_the_day_fails_it_whatever_its_utc_date(tmp_path):
    """Kamchatka: the day's second pass (22:40 UTC on its own UTC date is the next day's) stays
    out; its first, taken the UTC day before, broken, fails it although a later file is fine."""
    from changedet.errors import SceneUnreadable

    aoi, cfg = _site(tmp_path, KAMCHATKA, {"k_20230816T224000": None, "k_20230817T030000": None}, pattern=PATTERN)
    assert _found(aoi, cfg, date(2023, 8, 17)) == ["k_20230816T224000", "k_20230817T030000"]
    _cut(tmp_path, "k_20230816T224000")
    with pytest.raises(SceneUnreadable, match="k_20230816T224000"):
        _found(aoi, cfg, date(2023, 8, 17))


def test_without_a_pattern_a_broken_file_on_the_days_own_utc_date_still_fails_it(tmp_path):
    """No pattern: the time is in the unreadable header, so a broken file on the day's own UTC date may
    be the day's pass; the day fails (and is run again once the file is repaired) even with another scene."""
    from changedet.errors import SceneUnreadable

    aoi, cfg = _site(tmp_path, KAMCHATKA, {"a_20230816": _utc(2023, 8, 16, 22, 40),
                                            "b_20230817": _utc(2023, 8, 17, 1, 0)})
    assert _found(aoi, cfg, date(2023, 8, 17)) == ["a_20230816", "b_20230817"]
    _cut(tmp_path, "b_20230817")
    with pytest.raises(SceneUnreadable, match="b_20230817"):
        _found(aoi, cfg, date(2023, 8, 17))


def test_a_report_of_one_local_day_shows_that_days_counts(scenes, tmp_path):
    """Kamchatka run of D (pass 22:40 UTC on D-1): ``--start D --end D`` draws its series and does not
    caption the latest image 'no value recorded'; the period before D shows neither its image nor value."""
    from changedet.report import build_report

    aoi, cfg, r, d = _kamchatka_run(scenes, tmp_path)
    index = build_report(cfg.data_dir, tmp_path / "rep", aoi_ids=[AOI], registry=cfg.registry, start=d, end=d)
    html = (index.parent / AOI / "index.html").read_text()
    caption = re.search(r'id="fig-latest".*?<figcaption>(.*?)</figcaption>', html, re.S).group(1)
    assert r.scene_id in caption
    assert "no value recorded" not in html, caption
    assert 'class="series"' in html
    from datetime import timedelta

    prev = d - timedelta(days=1)
    index = build_report(cfg.data_dir, tmp_path / "rep_prev", aoi_ids=[AOI], registry=cfg.registry,
                         start=prev, end=prev)
    html = (index.parent / AOI / "index.html").read_text()
    assert r.scene_id not in html


def test_fetch_takes_the_sites_local_days_as_the_runs_do(tmp_path):
    """``changedet fetch --start D --end D`` at Kamchatka fetches D's pass (22:40 UTC on D-1), not the
    next day's (22:40 UTC on D), and records the day with what it stores; with a pattern a broken file
    of a day outside the range does not stop it."""
    from changedet.acquire import ACQUIRED, fetch
    from changedet.cube import Cube
    from changedet.errors import SourceError
    from changedet.grid import aoi_grid
    from changedet.sources.local import LocalSource

    aoi, cfg = _site(tmp_path, KAMCHATKA, {"k_20230816T224000": None, "k_20230817T224000": None}, pattern=PATTERN)
    _cut(tmp_path, "k_20230817T224000")   # Aug 18's at the site
    src = LocalSource(path=str(tmp_path / "imgs"), pattern=PATTERN, sensor="vhr")
    spec = aoi.sources[0]
    report = fetch(aoi, src, sensor="vhr", resolution_m=spec.resolution_m, start=date(2023, 8, 17),
                   end=date(2023, 8, 17), data_dir=tmp_path / "data", cloud_method="none")
    assert [o.status for o in report.outcomes] == ["stored"]
    assert report.outcomes[0].time.startswith("2023-08-16T22:40")
    cube = Cube(tmp_path / "data", aoi.id, "vhr", aoi_grid(aoi, float(spec.resolution_m)), product=ACQUIRED)
    assert [s.get("day") for s in cube.scenes()] == ["2023-08-17"]
    assert [s.get("day") for s in cube.info()["scenes"]] == ["2023-08-17"]   # cube info shows the recorded day
    with pytest.raises(SourceError, match="has no vhr scene"):
        fetch(aoi, src, sensor="vhr", resolution_m=spec.resolution_m, start=date(2023, 8, 16),
              end=date(2023, 8, 16), data_dir=tmp_path / "data", cloud_method="none")
