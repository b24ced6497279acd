"""The Sentinel Hub download cache can be measured and pruned (s45).

Every Process API reply a run fetched stayed under ``$CHANGEDET_DATA_DIR/cache/sentinelhub``
for ever: nothing removed an entry. ``changedet cache info|prune`` (module
``changedet.sources.sh_cache``) measure it and remove entries by age or to a size cap, least
recently used first; a load served from the cache marks its entry used. The end-to-end test
runs the real ``sentinelhub`` client against the fake Sentinel Hub on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform_bounds
from shapely.geometry import box

from changedet.cli import main
from changedet.sources.sh_cache import (CacheError, cache_entries, default_cache_dir, parse_age, parse_size,
                                        prune_cache)

DAY = 86400.0
NOW = time.time()  # entries are dated back from the real clock: a hit marks its entry with it


def _entry(root: Path, name: str, *, size: int, age_days: float, response: bool = True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "request.json").write_text("{}")
    files = [d / "request.json"]
    if response:
        (d / "response.tiff").write_bytes(b"\0" * size)
        files.append(d / "response.tiff")
    when = NOW - age_days * DAY
    for f in files + [d]:
        os.utime(f, (when, when))
    return d


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    _entry(root, "old", size=1000, age_days=40)
    _entry(root, "mid", size=2000, age_days=10)
    _entry(root, "new", size=3000, age_days=1)
    _entry(root, "now", size=500, age_days=0.001)  # used 86 s ago: a run may be reading it
    _entry(root, "cut", size=0, age_days=2, response=False)  # a download cut short
    foreign = root / "not_a_cache_entry"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("the user's")
    return root


def _left(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_entries_are_listed_least_recently_used_first_and_foreign_folders_ignored(cache):
    entries = cache_entries(cache)
    assert [e.path.name for e in entries] == ["old", "mid", "cut", "new", "now"]
    assert [e.complete for e in entries] == [True, True, False, True, True]
    assert entries[0].bytes == 1000 + 2 and abs(entries[0].last_used - (NOW - 40 * DAY)) < 1


def test_an_entry_removed_while_listed_is_skipped_not_an_error(cache, monkeypatch):
    # A second prune (or a rewrite) may remove a folder or a file between the listing and the
    # stat; the listing goes on without it.
    # stat's first call (is_dir / is_file in the listing) sees the path; the next one does not.
    real_stat = Path.stat
    seen: set[str] = set()

    def racing_stat(self, *a, **k):
        if (self.name, self.parent.name) in (("mid", "cache"), ("response.tiff", "new")):
            if str(self) in seen:
                raise FileNotFoundError(2, "No such file or directory", str(self))
            seen.add(str(self))
        return real_stat(self, *a, **k)

    monkeypatch.setattr(Path, "stat", racing_stat)
    entries = {e.path.name: e for e in cache_entries(cache)}
    assert set(entries) == {"old", "new", "now", "cut"}
    assert entries["new"].bytes == 2  # its vanished response is not counted; request.json is


def test_prune_by_age_removes_old_and_cut_short_entries_only(cache):
    report = prune_cache(cache, older_than_s=30 * DAY, now=NOW)
    assert _left(cache) == {"mid", "new", "now", "not_a_cache_entry"}
    assert (report.entries, report.removed_entries, report.incomplete_removed) == (5, 2, 1)
    assert report.removed_bytes == 1002 + 2 and report.kept_bytes == report.bytes - report.removed_bytes


def test_prune_to_a_size_removes_least_recently_used_but_never_recent_ones(cache):
    # 5515 bytes in all; a cap of 3600 is met by removing old (+cut, incomplete) and mid.
    report = prune_cache(cache, max_bytes=3600, now=NOW)
    assert _left(cache) == {"new", "now", "not_a_cache_entry"}
    assert report.kept_bytes == 3002 + 502 <= 3600
    # A cap of zero still keeps what was used within the hour (keep_recent_s), and says so.
    report = prune_cache(cache, max_bytes=0, now=NOW)
    assert _left(cache) == {"now", "not_a_cache_entry"} and report.kept_bytes == 502 > 0
    assert (cache / "not_a_cache_entry" / "keep.txt").read_text() == "the user's"


def test_dry_run_removes_nothing(cache):
    before = _left(cache)
    report = prune_cache(cache, older_than_s=0, max_bytes=0, keep_recent_s=0, dry_run=True, now=NOW)
    assert report.removed_entries == 5 and report.dry_run
    assert _left(cache) == before


def test_a_hit_marks_the_entry_used_so_a_size_cap_keeps_it(cache):
    from changedet.sources.sh_cache import mark_used

    mark_used(cache / "old")  # read by a run just now
    report = prune_cache(cache, max_bytes=3600, now=time.time())
    assert _left(cache) == {"old", "now", "not_a_cache_entry"}, report  # mid, then new, went instead


@pytest.mark.parametrize("text, value", [("500", 500), ("500M", 500_000_000), ("2GB", 2_000_000_000),
                                         ("1.5GiB", int(1.5 * 2**30)), ("0", 0), ("10 kB", 10_000)])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text, value", [("30", 30 * DAY), ("30d", 30 * DAY), ("12h", 12 * 3600.0),
                                         ("45m", 2700.0), ("0.5", DAY / 2)])
def test_ages(text, value):
    assert parse_age(text) == value


@pytest.mark.parametrize("bad", ["-1G", "lots", "2 PB", ""])
def test_a_bad_size_names_the_input_and_the_form(bad):
    with pytest.raises(CacheError, match=r"size .*500M"):
        parse_size(bad)


def test_a_bad_age_or_no_criterion_is_refused_and_nothing_removed(cache):
    with pytest.raises(CacheError, match=r"age '3w'.*30d"):
        parse_age("3w")
    before = _left(cache)
    with pytest.raises(CacheError, match="--older-than or --max-size"):
        prune_cache(cache)
    assert _left(cache) == before


def test_a_file_given_as_the_cache_folder_is_an_error(tmp_path):
    f = tmp_path / "cache.tif"
    f.write_bytes(b"x")
    with pytest.raises(CacheError, match="not a folder"):
        cache_entries(f)


def test_the_default_folder_follows_the_data_dir_and_stays_local_for_a_url(monkeypatch, tmp_path):
    monkeypatch.setenv("CHANGEDET_DATA_DIR", str(tmp_path / "d"))
    assert default_cache_dir() == tmp_path / "d" / "cache" / "sentinelhub"
    monkeypatch.setenv("CHANGEDET_DATA_DIR", "s3://bucket/changedet")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "changedet" / "sentinelhub"


def test_cli_info_and_prune(cache, capsys):
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 5 and info["incomplete"] == 1 and info["bytes"] == 1002 + 2002 + 3002 + 502 + 2
    assert main(["cache", "prune", "--cache-dir", str(cache), "--older-than", "5d", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["removed_entries"] == 3 and dry["dry_run"] and len(cache_entries(cache)) == 5
    assert main(["cache", "prune", "--cache-dir", str(cache), "--max-size", "3.6k", "--keep-recent", "0"]) == 0
    out = capsys.readouterr().out
    # cut (incomplete), then old and mid, least recently used: 6510 -> 3504 bytes, under 3600
    assert "removed 3 of 5 entries" in out and "2 entries, 3.5 kB kept" in out, out
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 2
    assert "--older-than or --max-size" in capsys.readouterr().err


# -- end to end: the real sentinelhub client against the fake Sentinel Hub ----------------------

CLIENT, SECRET = "changedet-cache-test", "s45/cache+prune=K"


@pytest.fixture
def hub(monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from sh_server import FakeSentinelHub, Scene, serving  # noqa: E402

    if shutil.which("node") is None:
        pytest.skip("Node.js is needed by the fake Sentinel Hub (it runs the evalscripts)")
    server = FakeSentinelHub(client_id=CLIENT, client_secret=SECRET)
    rng = np.random.default_rng(45)
    bands = {n: rng.uniform(0.02, 0.4, (200, 200)).astype("float32") for n in ("R", "G", "B", "NIR")}
    for d in (1, 2):
        server.add_scene(Scene(id=f"vhr-2024060{d}", collection="byoc-cache-s45",
                               time=datetime(2024, 6, d, 10, 0, tzinfo=timezone.utc), platform="vhr",
                               crs="EPSG:32633", transform=Affine(2.0, 0, 500000.0, 0, -2.0, 5000400.0),
                               bands=bands, cloud_cover=0.0, gsd=2.0))
    with serving(server, monkeypatch):
        yield server


def test_pruned_replies_are_fetched_again_and_used_ones_are_kept(hub, tmp_path, monkeypatch, capsys):
    from changedet.grid import GridSpec
    from changedet.sources.sentinelhub import SentinelHubSource, SHSettings

    monkeypatch.setenv("CHANGEDET_DATA_DIR", str(tmp_path / "data"))
    src = SentinelHubSource(SHSettings(CLIENT, SECRET, hub.url, hub.token_url), collection="byoc-cache-s45",
                            retry_sleep_s=0.01)
    assert src.cache_dir == default_cache_dir()
    grid = GridSpec.from_bounds(32633, (500040.0, 5000040.0, 500360.0, 5000360.0), 4.0)
    site = SimpleNamespace(id="s45", polygon=box(*transform_bounds("EPSG:32633", "EPSG:4326", *grid.bounds)))
    recs = src.search(site, date(2024, 6, 1), date(2024, 6, 2), sensor="vhr")
    assert len(recs) == 2
    first = [src.load(r, grid) for r in recs]
    sent = hub.hits["process"]
    assert sent == 2 and len(cache_entries(src.cache_dir)) == 2
    # Both entries were written a month ago; day 2 is read again now (a re-run), day 1 is not.
    month = time.time() - 30 * DAY
    for e in cache_entries(src.cache_dir):
        for f in [e.path, *e.path.iterdir()]:
            os.utime(f, (month, month))
    again = src.load(recs[1], grid)
    assert hub.hits["process"] == sent  # served from the cache
    np.testing.assert_array_equal(again.values, first[1].values)
    assert main(["cache", "prune", "--older-than", "7d", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["removed_entries"] == 1 and report["kept_entries"] == 1, report
    # The day read again survived (no request); the pruned one is fetched (and paid for) again.
    np.testing.assert_array_equal(src.load(recs[1], grid).values, first[1].values)
    assert hub.hits["process"] == sent
    np.testing.assert_array_equal(src.load(recs[0], grid).values, first[0].values)
    assert hub.hits["process"] == sent + 1
