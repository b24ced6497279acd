"""Session 19: a day is the AOI's LOCAL day, not a UTC day.

Sources search whole UTC days. The served daily runs process the local day before their
06:00-local start, so ``search_day`` searches the UTC days a local day overlaps and keeps
the acquisitions whose time falls in it (``scene_day``): the ~10:30-local pass of a site at
UTC+12 (22:40 UTC the day before) is its local day's, an afternoon pass west of UTC (00:10
UTC the day after) too, DST days are 23/25 h, and every acquisition belongs to exactly one
day, so a backfill and the daily runs over the same days store it once.

Search-level checks use tiny header-only GeoTIFFs over the reduced Tumangang railyard of
``tests/test_pipeline_sources.py`` with its timezone rewritten; the runs use that module's
rendered VHR scenes, re-stamped.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import rasterio
import yaml

from changedet.aoi import load_aoi
from changedet.cube import Cube
from changedet.grid import aoi_grid
from changedet.pipeline import RunConfig, find_scene, run_day, scene_day, search_day

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline_sources import AOI, QUIET, RES, _reduced_registry, scenes  # noqa: E402

__all__ = ["scenes"]  # the module-scoped fixture of test_pipeline_sources

UTC = timezone.utc


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _registry(root: Path, tz: str, imgs: Path, pattern: str | None = None) -> Path:
    """The reduced railyard with one local entry on ``imgs`` (file-name ``pattern``), in timezone ``tz``."""
    entry = {"name": "local", "sensor": "vhr", "resolution_m": RES, "path": str(imgs)}
    reg = _reduced_registry(root, [entry | ({"pattern": pattern} if pattern else {})])
    doc = yaml.safe_load((reg / f"{AOI}.yaml").read_text())
    doc["timezone"] = tz
    (reg / f"{AOI}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return reg


def _tiny(path: Path, aoi, when: datetime | None) -> None:
    """A 16x16 GeoTIFF over the AOI's bounds, acquired at ``when`` (TIFF tag; None: no tag)."""
    w, s, e, n = aoi.polygon.bounds
    profile = {"driver": "GTiff", "width": 16, "height": 16, "count": 3, "dtype": "uint8", "crs": "EPSG:4326",
               "transform": rasterio.transform.from_bounds(w - 0.001, s - 0.001, e + 0.001, n + 0.001, 16, 16)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.full((3, 16, 16), 100, "uint8"))
        if when is not None:
            out.update_tags(TIFFTAG_DATETIME=when.astimezone(UTC).strftime("%Y:%m:%d %H:%M:%S"))


def _site(tmp_path: Path, tz: str, files: dict[str, datetime | None], pattern: str | None = None):
    """(aoi, cfg) of the reduced railyard in ``tz`` whose local folder holds ``files`` (name -> UTC time)."""
    imgs = tmp_path / "imgs"
    reg = _registry(tmp_path, tz, imgs, pattern)
    aoi = load_aoi(AOI, registry=reg)
    for name, when in files.items():
        _tiny(imgs / f"{name}.tif", aoi, when)
    return aoi, RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)


def _found(aoi, cfg, day: date) -> list[str]:
    """Stems of the files the run of ``day`` finds (in time order)."""
    from changedet.pipeline import choose_source

    choice = choose_source(aoi, cfg.seed, cfg.registry, cfg.data_dir)
    return [Path(s.properties["path"]).stem for s in search_day(choice.source, choice.spec, aoi, day)]


# -- search: the local day, each acquisition on one day ------------------------------------------------

def test_a_pass_east_of_utc_plus_10_is_found_on_its_local_day_only(tmp_path):
    """Kamchatka (UTC+12): 22:40 UTC on Aug 16 is 10:40 on Aug 17 there."""
    aoi, cfg = _site(tmp_path, "Asia/Kamchatka", {"pass": _utc(2023, 8, 16, 22, 40)})
    assert _found(aoi, cfg, date(2023, 8, 17)) == ["pass"]
    assert _found(aoi, cfg, date(2023, 8, 16)) == []
    assert _found(aoi, cfg, date(2023, 8, 18)) == []
    scene = find_scene(aoi, date(2023, 8, 17), cfg)
    assert scene is not None and scene.time == _utc(2023, 8, 16, 22, 40)
    assert find_scene(aoi, date(2023, 8, 16), cfg) is None


def test_an_afternoon_pass_west_of_utc_is_found_on_its_local_day_only(tmp_path):
    """Anchorage (UTC-8 in summer): 00:10 UTC on Aug 18 is 16:10 on Aug 17 there; 16:10 UTC on Aug 17 is 08:10."""
    aoi, cfg = _site(tmp_path, "America/Anchorage",
                     {"afternoon": _utc(2023, 8, 18, 0, 10), "morning": _utc(2023, 8, 17, 16, 10)})
    assert _found(aoi, cfg, date(2023, 8, 17)) == ["morning", "afternoon"]
    assert _found(aoi, cfg, date(2023, 8, 18)) == []
    assert _found(aoi, cfg, date(2023, 8, 16)) == []


@pytest.mark.parametrize("tz, day, inside, outside", [
    # Anchorage falls back on 2023-11-05 (25 h: 08:00 UTC Nov 5 .. 09:00 UTC Nov 6).
    ("America/Anchorage", date(2023, 11, 5), [_utc(2023, 11, 5, 8, 5), _utc(2023, 11, 6, 8, 30)],
     [_utc(2023, 11, 5, 7, 55), _utc(2023, 11, 6, 9, 5)]),
    # ... and springs forward on 2024-03-10 (23 h: 09:00 UTC Mar 10 .. 08:00 UTC Mar 11).
    ("America/Anchorage", date(2024, 3, 10), [_utc(2024, 3, 10, 9, 5), _utc(2024, 3, 11, 7, 55)],
     [_utc(2024, 3, 10, 8, 55), _utc(2024, 3, 11, 8, 30)]),
    # Santiago springs forward AT midnight (Sep 2 24:00 -> Sep 3 01:00): local midnight does not exist.
    ("America/Santiago", date(2023, 9, 3), [_utc(2023, 9, 3, 4, 30), _utc(2023, 9, 4, 2, 55)],
     [_utc(2023, 9, 3, 3, 30), _utc(2023, 9, 4, 3, 5)]),
])
def test_a_dst_change_day_holds_its_23_or_25_hours(tmp_path, tz, day, inside, outside):
    files = {f"in{i}": t for i, t in enumerate(inside)} | {f"out{i}": t for i, t in enumerate(outside)}
    aoi, cfg = _site(tmp_path, tz, files)
    assert _found(aoi, cfg, day) == ["in0", "in1"]
    # Each acquisition lies on exactly one day of the days around.
    around = {d: _found(aoi, cfg, d) for d in (day - timedelta(days=1), day, day + timedelta(days=1))}
    for name, when in files.items():
        days = [d for d, names in around.items() if name in names]
        assert days == [when.astimezone(ZoneInfo(tz)).date()], (name, when, around)


def test_a_file_dated_without_a_time_of_day_stays_on_its_date(tmp_path):
    """A name with the date only is read as 00:00 UTC: that is the evening before west of UTC, yet the
    file is of the date it names."""
    aoi, cfg = _site(tmp_path, "America/Anchorage", {"yard_20230817": None})
    assert _found(aoi, cfg, date(2023, 8, 17)) == ["yard_20230817"]
    assert _found(aoi, cfg, date(2023, 8, 16)) == []


def test_the_simulator_keeps_the_day_it_renders(tmp_path):
    """Its scenes are rendered for a day and stamped 01:30 UTC (the evening before in Anchorage): still that day's."""
    from changedet.sources.simulator import SimulatorSource

    reg = _reduced_registry(tmp_path, [{"name": "simulator", "sensor": "vhr", "resolution_m": RES}])
    doc = yaml.safe_load((reg / f"{AOI}.yaml").read_text())
    doc["timezone"] = "America/Anchorage"
    (reg / f"{AOI}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    aoi = load_aoi(AOI, registry=reg)
    src, spec = SimulatorSource(registry=reg), aoi.sources[0]
    found = search_day(src, spec, aoi, date(2023, 8, 17))
    assert [s.id for s in found] == [f"sim-vhr-{AOI}-2023-08-17-s0-{RES:g}m"]
    assert scene_day(aoi, spec, found[0].time) == date(2023, 8, 17)


def test_scene_day_is_the_date_in_the_aoi_timezone(tmp_path):
    aoi, _ = _site(tmp_path, "Asia/Kamchatka", {})
    local = aoi.sources[0]
    assert scene_day(aoi, local, _utc(2023, 8, 16, 22, 40)) == date(2023, 8, 17)
    assert scene_day(aoi, local, "2023-08-16T11:59:59+00:00") == date(2023, 8, 16)   # as a cube stores it
    assert scene_day(aoi, local, "2023-08-16T12:00:00") == date(2023, 8, 17)          # naive: UTC


def test_a_broken_file_fails_its_own_day_not_the_next_one_that_has_an_acquisition(tmp_path):
    """Pyongyang (UTC+9): daily files at 01:30 UTC (10:30 local), Aug 17's cut inside its header. The
    search of Aug 18 also covers UTC Aug 17 (15:00-24:00 is Aug 18 there), yet only Aug 17 fails."""
    from changedet.errors import SceneUnreadable

    days = [date(2023, 8, 16), date(2023, 8, 17), date(2023, 8, 18)]
    aoi, cfg = _site(tmp_path, "Asia/Pyongyang",
                     {f"site_{d:%Y%m%d}": datetime.combine(d, time(1, 30), tzinfo=UTC) for d in days})
    cut = tmp_path / "imgs" / "site_20230817.tif"
    cut.write_bytes(cut.read_bytes()[:200])
    assert _found(aoi, cfg, days[0]) == ["site_20230816"]
    with pytest.raises(SceneUnreadable, match="site_20230817"):
        _found(aoi, cfg, days[1])
    assert _found(aoi, cfg, days[2]) == ["site_20230818"]
    # A day without an acquisition of its own next to it still fails: without a pattern the broken
    # file's time is in its unreadable header, and it may be this day's pass (review PIPE2 1; with a
    # pattern its name decides: test_local_day_s19b).
    (tmp_path / "imgs" / "site_20230818.tif").unlink()
    with pytest.raises(SceneUnreadable, match="site_20230817"):
        _found(aoi, cfg, days[2])


# -- the callers agree --------------------------------------------------------------------------------

def test_a_run_of_today_before_the_pass_says_it_is_not_acquired_yet(tmp_path, monkeypatch):
    """Kamchatka at 01:00 local Aug 17 (13:00 UTC Aug 16): today's 10:40 pass is found, not taken yet."""
    import changedet.pipeline as pipeline
    from changedet.errors import DateError

    aoi, cfg = _site(tmp_path, "Asia/Kamchatka", {"pass": _utc(2023, 8, 16, 22, 40)})
    monkeypatch.setattr(pipeline, "_now_utc", lambda: _utc(2023, 8, 16, 13, 0))
    r = run_day(aoi, date(2023, 8, 17), cfg)
    assert r.status == "no_scene" and "not acquired yet" in r.note, r.summary()
    assert not Cube(cfg.store_root(), aoi.id, "vhr", aoi_grid(aoi, RES)).scenes()
    with pytest.raises(DateError, match="in the future"):
        run_day(aoi, date(2023, 8, 18), cfg)


def test_the_window_reference_is_found_again_on_its_local_day(tmp_path):
    """``_window_reference`` re-finds a stored reference scene by id from its stored time."""
    import changedet.pipeline as pipeline
    from changedet.pipeline import choose_source

    aoi, cfg = _site(tmp_path, "Asia/Kamchatka", {"pass": _utc(2023, 8, 16, 22, 40)})
    choice = choose_source(aoi, cfg.seed, cfg.registry, cfg.data_dir)
    scene = find_scene(aoi, date(2023, 8, 17), cfg)
    grid = aoi_grid(aoi, RES)

    class _Cube:  # the provenance the function reads
        def scenes(self):
            return [{"scene_id": scene.id, "time": scene.time.isoformat()}]

    ref = pipeline._window_reference(_Cube(), choice.source, choice.spec, aoi, scene, grid, f"scene {scene.id}",
                                     made_here=False, moving=None, like=None, optical=False)
    assert ref is not None and ref.shape[-2:] == grid.shape and bool(np.isfinite(ref.values).any())


@pytest.fixture
def no_prefect_context(monkeypatch):
    """Run the flows' AOI-day body outside a Prefect run: plain logger, no source slot."""
    import flows.tasks as tasks

    monkeypatch.setattr(tasks, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(tasks, "_acquire_source_slot", lambda name: contextlib.nullcontext())


def test_a_backfill_and_the_daily_runs_store_each_acquisition_once_on_its_day(scenes, tmp_path, no_prefect_context):
    """Kamchatka: each rendered day's file stamped 22:40 UTC the day before. A backfill of the first two
    days, then the daily runs of the last two (06:00 local the day after): each file is processed by the
    run of its local day, stored once, and found again as already processed."""
    from changedet.pipeline import dates_between, days_up_to_today
    from flows.daily import day_for
    from flows.tasks import _process_aoi_day

    imgs = tmp_path / "imgs"
    reg = _registry(tmp_path, "Asia/Kamchatka", imgs)
    aoi = load_aoi(AOI, registry=reg)
    imgs.mkdir()
    for d in QUIET:
        src = scenes["imgs"] / f"tumangang_{d:%Y%m%d}.tif"
        with rasterio.open(src) as s:
            profile, data, tags, desc = s.profile, s.read(), s.tags(), s.descriptions
        tags["TIFFTAG_DATETIME"] = f"{d - timedelta(days=1):%Y:%m:%d} 22:40:00"
        with rasterio.open(imgs / f"kamchatka_{d:%m%d}.tif", "w", **profile) as out:   # no date in the name
            out.write(data)
            out.update_tags(**tags)
            for i, text in enumerate(desc, start=1):
                if text:
                    out.set_band_description(i, text)
    data_dir = str(tmp_path / "data")
    results = []
    backfill_days, _ = days_up_to_today(aoi, dates_between(QUIET[0], QUIET[1], 1))
    for d in backfill_days:   # as the backfill flow submits them, one per day in order
        results.append(("backfill", _process_aoi_day(AOI, d, data_dir, 0, str(reg), False, None)))
    for d in QUIET[1:]:       # the daily deployment at 06:00 local the day after
        scheduled = datetime.combine(d + timedelta(days=1), time(6), tzinfo=ZoneInfo("Asia/Kamchatka"))
        assert day_for(aoi, scheduled) == d
        results.append(("daily", _process_aoi_day(AOI, day_for(aoi, scheduled), data_dir, 0, str(reg), False, None)))
    by_day: dict[str, list] = {}
    for who, r in results:
        by_day.setdefault(r["day"], []).append((who, r["status"], r["scene_id"]))
    stem = {d.isoformat(): f"local-kamchatka_{d:%m%d}-" for d in QUIET}
    for d in QUIET:
        runs = by_day[d.isoformat()]
        for who, status, scene_id in runs:
            assert scene_id and scene_id.startswith(stem[d.isoformat()]), (d, runs)
        assert [s for _, s, _ in runs][0] == "processed", runs
        assert all(s == "already_processed" for _, s, _ in runs[1:]), runs
    # No day between the rendered weeks finds anything (each file is on one day only).
    cfg = RunConfig(data_dir=Path(data_dir), registry=reg, evidence=False)
    for d in (QUIET[0] - timedelta(days=1), QUIET[0] + timedelta(days=1), QUIET[1] - timedelta(days=1)):
        assert find_scene(aoi, d, cfg) is None, d
    stored = [s["scene_id"] for s in Cube(cfg.store_root(), aoi.id, "vhr", aoi_grid(aoi, RES)).scenes()]
    assert len(stored) == len(set(stored)) == len(QUIET), stored
