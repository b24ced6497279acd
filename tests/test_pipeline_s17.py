"""Session 17: daily-run defects left open in session 16.

1. A configuration error of a source entry (``SourceConfigError``: a ``bands:`` list that fits
   no file, HTTP 400/401/403/404 from the provider) is not retried by the flows, stops that AOI
   (naming the AOI file, the entry and the setting) in ``changedet run`` while the other AOIs go
   on, and stops ``acquire.fetch`` / ``changedet fetch`` at once.
2. ``changedet run`` retries ``CubeRaced`` and ``CubeLocked`` with the flows' back-off.
3. A series' first day missing from the change cube (its append failed after the aligned
   cube took it) is coarsened from the stored aligned step by the next run.
4. A STAC asset gone for good (404 at the href the catalogue gives again, or 403 after fresh
   signatures) is ``SceneUnreadable``; an expired signature is healed by fetching the item again.
5. The flows' cache key reads a cube's provenance once.

Reuses the reduced Tumangang railyard of ``tests/test_pipeline_sources.py`` (simulator
GeoTIFFs in a local folder) and the 127.0.0.1 STAC server of ``tests/stac_server.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import yaml

from changedet.cube import Cube
from changedet.errors import SceneUnreadable, SourceConfigError, SourceError, SourceUnavailable
from changedet.grid import aoi_grid
from changedet.pipeline import RunConfig, run_day

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline_sources import AOI, QUIET, RES, SURGE, _copy_imgs, _local_aoi, scenes  # noqa: E402

__all__ = ["scenes"]  # the module-scoped fixture, shared with test_pipeline_sources

#: A bands: list that fits none of the scenes' files (they hold more bands).
BAD_BANDS = ["red", "green"]
GOOD = "good_yard"


def _two_aois(scenes, tmp_path, **bad_entry):
    """A registry with the reduced railyard twice: ``AOI`` with ``bad_entry`` in its local entry, and
    ``GOOD`` (the same site under another id) with a correct entry; ``(registry, imgs)``."""
    imgs = _copy_imgs(scenes, tmp_path / "imgs")
    _, reg = _local_aoi(scenes, tmp_path, path=imgs, **bad_entry)
    _copy_aoi(reg, AOI, GOOD, [{"name": "local", "sensor": "vhr", "resolution_m": RES, "path": str(imgs)}])
    return reg, imgs


def _copy_aoi(reg, aoi_id: str, new_id: str, sources: list[dict]) -> None:
    """Write AOI ``new_id`` into registry ``reg``: ``aoi_id``'s site and features with ``sources``."""
    doc = yaml.safe_load((reg / f"{aoi_id}.yaml").read_text())
    doc["id"] = new_id
    doc["sources"] = sources
    (reg / f"{new_id}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    gj = json.loads((reg / f"{aoi_id}.geojson").read_text())
    for f in gj["features"]:
        if f["properties"].get("role") == "site":
            f["properties"]["id"] = new_id
    (reg / f"{new_id}.geojson").write_text(json.dumps(gj))


# -- 1. configuration errors -------------------------------------------------------------------

def test_a_configuration_error_is_not_retried_by_the_flows():
    import pickle

    from prefect.states import Failed

    from flows.tasks import worth_retrying

    def retried(exc):
        return worth_retrying(None, None, Failed(data=exc))

    err = SourceConfigError("tumangang_railyard 2023-08-17: HTTP 400 band NOPE", option="bands")
    assert not retried(err)
    back = pickle.loads(pickle.dumps(err))  # as it travels from a Dask worker
    assert not retried(back) and back.option == "bands"
    # What may pass is still retried.
    assert retried(SourceUnavailable("HTTP 503")) and retried(SourceError("untyped"))


@pytest.fixture
def no_prefect_context(monkeypatch):
    """Run the flows' AOI-day body outside a Prefect run: plain logger, no source slot."""
    import flows.tasks as tasks

    monkeypatch.setattr(tasks, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(tasks, "_acquire_source_slot", lambda name: contextlib.nullcontext())


def test_the_flow_task_fails_a_misconfigured_day_with_a_typed_error_naming_the_setting(scenes, tmp_path,
                                                                                      no_prefect_context):
    from flows.tasks import _process_aoi_day

    reg, _ = _two_aois(scenes, tmp_path, bands=BAD_BANDS)
    with pytest.raises(SourceConfigError) as info:
        _process_aoi_day(AOI, QUIET[0], str(tmp_path / "data"), 0, str(reg), False, None)
    text = str(info.value)
    assert info.value.option == "bands"
    # First (the flows' summaries cut long messages): AOI, its file, the entry and the setting.
    head = text[:300]
    assert head.startswith(f"{AOI} {QUIET[0]}: configuration error of AOI {AOI} ({reg / (AOI + '.yaml')})"), head
    assert "source entry local (vhr, 0.5 m), setting 'bands'" in head, head
    # A passing failure is still the plain (retried) SourceError.
    import changedet.sources.local as local_mod

    def unavailable(self, scene, grid, **kw):
        raise SourceUnavailable("share not mounted")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(local_mod.LocalSource, "load", unavailable)
        with pytest.raises(SourceError) as info:
            _process_aoi_day(GOOD, QUIET[0], str(tmp_path / "data"), 0, str(reg), False, None)
    assert type(info.value) is SourceError and "may pass" in str(info.value)


def test_run_stops_a_misconfigured_aoi_at_its_first_day_and_the_others_go_on(scenes, tmp_path, capsys):
    from changedet.cli import main

    reg, _ = _two_aois(scenes, tmp_path, bands=BAD_BANDS)
    rc = main(["run", "--aoi", AOI, "--aoi", GOOD, "--start", str(QUIET[0]), "--end", str(QUIET[2]),
               "--every", "7", "--registry", str(reg), "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    lines = out.splitlines()
    bad = [x for x in lines if x.startswith(f"{AOI} ")]
    good = [x for x in lines if x.startswith(f"{GOOD} ")]
    assert len(bad) == 1 and ": failed (" in bad[0] and "its 'bands' setting" in bad[0], out
    assert len(good) == 3 and all(": failed" not in x for x in good), out
    assert (f"{AOI} stopped on {QUIET[0]}: configuration error of AOI {AOI} ({reg / (AOI + '.yaml')}), source "
            f"entry local (vhr, 0.5 m), setting 'bands'; 2 later day(s) not run ({QUIET[1]}..{QUIET[2]})") in err, err
    assert "the other AOIs go on" in err and "1 day(s) failed" in err, err


def _run_two_and_see_the_first_stop(reg, tmp_path, capsys):
    """`changedet run --json` of AOI (whose first day fails) and GOOD over two quiet weeks: exit 1, AOI stopped
    after its failed day, GOOD's two days processed; (day docs, stderr)."""
    from changedet.cli import main

    rc = main(["run", "--aoi", AOI, "--aoi", GOOD, "--start", str(QUIET[0]), "--end", str(QUIET[1]),
               "--every", "7", "--registry", str(reg), "--data-dir", str(tmp_path / "data"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    docs = [json.loads(x) for x in out.splitlines()]
    assert [(d["aoi_id"], d["status"]) for d in docs] == [(AOI, "failed"), (GOOD, "processed"), (GOOD, "processed")]
    return docs, err


def test_run_stops_an_aoi_whose_entry_setting_run_day_refuses(scenes, tmp_path, capsys):
    """A setting run_day reads itself (max_cloud) raises SourceConfigError: that AOI stops, the others go on."""
    reg, _ = _two_aois(scenes, tmp_path, max_cloud="few")
    docs, err = _run_two_and_see_the_first_stop(reg, tmp_path, capsys)
    assert docs[0]["misconfigured"]["option"] == "max_cloud" and "max_cloud 'few'" in docs[0]["note"]
    assert f"{AOI} stopped on {QUIET[0]}" in err and "setting 'max_cloud'; 1 later day(s) not run" in err, err


def test_fetch_stops_at_once_on_a_configuration_error(scenes, tmp_path, capsys):
    from changedet.acquire import FetchStopped, fetch
    from changedet.aoi import load_aoi
    from changedet.cli import main
    from changedet.sources.base import source_from_spec

    reg, _ = _two_aois(scenes, tmp_path, bands=BAD_BANDS)
    aoi = load_aoi(AOI, registry=reg)
    source = source_from_spec(aoi.sources[0])
    seen = []
    with pytest.raises(FetchStopped) as info:
        fetch(aoi, source, sensor="vhr", resolution_m=RES, start=QUIET[0], end=QUIET[2], data_dir=tmp_path / "d",
              progress=lambda i, n, o: seen.append((i, n, o.status)))
    stop = info.value
    assert [o.status for o in stop.report.outcomes] == ["failed"] and seen == [(1, 3, "failed")]
    assert stop.option == "bands"
    assert f"a configuration error of the local entry of {reg / (AOI + '.yaml')}, its 'bands' setting" in str(stop)
    assert "2 later scene(s) not tried" in str(stop) and stop.report.stopped == str(stop)

    rc = main(["fetch", "--aoi", str(reg / f"{AOI}.yaml"), "--source", "local", "--start", str(QUIET[0]),
               "--end", str(QUIET[2]), "--data-dir", str(tmp_path / "d2"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2 and "its 'bands' setting" in err and "2 later scene(s) not tried" in err, (out, err)
    assert out.count(": failed:") == 1, out


@pytest.mark.slow
def test_flows_over_several_aois_go_on_past_a_misconfigured_one(scenes, tmp_path, prefect_env):
    """Backfill and daily flow on a thread pool: the misconfigured AOI's day fails once (no retry),
    names the setting; the other AOI's days complete and are returned with the failure."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.backfill import BackfillFailed, backfill
    from flows.daily import daily_monitor

    reg, _ = _two_aois(scenes, tmp_path, bands=BAD_BANDS)
    data = str(tmp_path / "data")
    kw = dict(data_dir=data, registry=str(reg), kernels_on_cluster=False, return_state=True)
    state = backfill_state = backfill.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(
        [AOI, GOOD], QUIET[0], QUIET[1], cadence=7, **kw)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, BackfillFailed), err
    assert [r["status"] for r in err.results[GOOD]] == ["processed", "processed"]
    [failure] = err.failures
    assert failure.aoi_id == AOI and failure.day == QUIET[0] and failure.not_run == (QUIET[1],)
    assert "SourceConfigError" in failure.error and "setting 'bands'" in failure.error, failure.error

    state = daily_monitor.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(
        aoi_ids=[AOI, GOOD], day=QUIET[2], **kw)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    from flows.daily import DailyFailed

    assert isinstance(err, DailyFailed), err
    assert [(r["aoi_id"], r["status"]) for r in err.results] == [(GOOD, "processed")]
    assert [(a, d) for a, d, _ in err.failures] == [(AOI, QUIET[2].isoformat())]
    assert "setting 'bands'" in err.failures[0][2] and "setting 'bands'" in state.message

    # Not retried: each failed day ran once.
    from tests.prefect_runs import settled_task_runs

    runs = [*settled_task_runs(backfill_state.state_details.flow_run_id, expect=[(AOI, QUIET[0].isoformat())]).values(),
            *settled_task_runs(state.state_details.flow_run_id, expect=[(AOI, QUIET[2].isoformat())]).values()]
    failed = [r for r in runs if r.name.split()[0] == AOI and r.state.type.value == "FAILED"]
    assert len(failed) == 2 and all(r.run_count == 1 for r in failed), [(r.name, r.run_count) for r in failed]


# -- 2. changedet run retries a busy cube ------------------------------------------------------

def test_run_retries_a_raced_first_day_and_says_so(scenes, tmp_path, monkeypatch, capsys):
    """Run B of a new AOI lost the race for the first day (CubeRaced, nothing stored): `changedet run`
    tries the day again after the flows' first pause and it is registered onto run A's reference."""
    import changedet.cli.run as cli_run
    import changedet.pipeline as pipeline
    from changedet.cli import main

    reg, _ = _two_aois(scenes, tmp_path)
    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    from changedet.aoi import load_aoi

    aoi = load_aoi(AOI, registry=reg)
    assert run_day(aoi, QUIET[0], cfg).status == "processed"  # run A: the reference day
    real_run_day, real_scenes, calls = pipeline.run_day, Cube.scenes, []

    def raced_once(a, d, c):
        calls.append(d)
        if len(calls) > 1:
            return real_run_day(a, d, c)
        with pytest.MonkeyPatch.context() as m:
            # Run B decided "no reference, empty cube" before A stored (the race).
            m.setattr(Cube, "reference", lambda self: None)
            m.setattr(Cube, "scenes", lambda self: [] if self.path.name.startswith("vhr_0.5m") else real_scenes(self))
            return real_run_day(a, d, c)

    slept = []
    monkeypatch.setattr(pipeline, "run_day", raced_once)
    monkeypatch.setattr(cli_run, "_sleep", slept.append, raising=False)
    rc = main(["run", "--aoi", AOI, "--date", str(QUIET[1]), "--registry", str(reg), "--data-dir",
               str(cfg.data_dir)])
    out, err = capsys.readouterr()
    assert rc == 0, (out, err)
    assert calls == [QUIET[1], QUIET[1]] and slept == [5.0]
    assert f"changedet run: {AOI} {QUIET[1]}: CubeRaced: " in err and "retrying in 5 s (try 2 of 3)" in err, err
    assert f"{AOI} {QUIET[1]}" in out and "railcars=" in out, out
    assert len(Cube(cfg.data_dir, AOI, "vhr", aoi_grid(aoi, RES)).scenes()) == 2


def test_run_gives_up_on_a_cube_locked_for_good_after_the_flows_retries(scenes, tmp_path, monkeypatch, capsys):
    import changedet.cli.run as cli_run
    import changedet.pipeline as pipeline
    from changedet.cli import main
    from changedet.cube import CubeLocked

    reg, _ = _two_aois(scenes, tmp_path)
    real_run_day, tries = pipeline.run_day, []

    def locked(a, d, c):
        if a.id == AOI:
            tries.append(d)
            raise CubeLocked(f"cube {a.id} is being written by another run")
        return real_run_day(a, d, c)

    slept = []
    monkeypatch.setattr(pipeline, "run_day", locked)
    monkeypatch.setattr(cli_run, "_sleep", slept.append, raising=False)
    rc = main(["run", "--aoi", AOI, "--aoi", GOOD, "--start", str(QUIET[0]), "--end", str(QUIET[1]), "--every", "7",
               "--registry", str(reg), "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    assert tries == [QUIET[0]] * 3 and slept == [5.0, 30.0]
    assert err.count("retrying in") == 2
    assert f"{AOI} stopped on {QUIET[0]}: the cube stayed busy (CubeLocked) after 2 retries; 1 later day(s) not run" \
        in err, err
    good = [x for x in out.splitlines() if x.startswith(f"{GOOD} ")]
    assert [x.split()[1] for x in good] == [str(d) for d in QUIET[:2]] and all("railcars=" in x for x in good), out


# -- 3. the first day missing from the change cube heals ---------------------------------------

def test_a_first_day_missing_from_the_change_cube_is_coarsened_from_the_stored_step(scenes, tmp_path, monkeypatch):
    """The change-cube append of the series' first day fails after the aligned cube took it: the next
    run puts the day back (coarsened from the stored aligned step), so later days' baselines hold it."""
    from changedet.aoi import load_aoi
    from changedet.cube import CubeStoreUnavailable

    reg, _ = _two_aois(scenes, tmp_path)
    aoi = load_aoi(AOI, registry=reg)
    days = [*QUIET, SURGE]
    ok = RunConfig(data_dir=tmp_path / "ok", registry=reg, evidence=False)
    want = [run_day(aoi, d, ok) for d in days]
    assert [r.status for r in want] == ["processed"] * 4 and "changed_area_m2" in want[3].metrics

    cfg = RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False)
    fine = Cube(cfg.data_dir, AOI, "vhr", aoi_grid(aoi, RES))
    coarse = Cube(cfg.data_dir, AOI, "vhr", aoi_grid(aoi, 2.0))
    real_append = Cube.append

    def failing(self, scene, data, **kw):
        if self.path.name.startswith("vhr_2m"):
            raise CubeStoreUnavailable(f"store {self.path} did not answer (injected)")
        return real_append(self, scene, data, **kw)

    with monkeypatch.context() as m:
        m.setattr(Cube, "append", failing)
        with pytest.raises(CubeStoreUnavailable):
            run_day(aoi, days[0], cfg)
    assert len(fine.scenes()) == 1 and coarse.scenes() == []  # the day counts as done...

    again = run_day(aoi, days[0], cfg)  # ...and a run of it again puts it back
    assert again.status == "already_processed", again.summary()
    assert f"the change cube lacked stored day(s) {days[0]}" in again.note, again.note
    [healed] = coarse.scenes()
    [made] = Cube(ok.data_dir, AOI, "vhr", aoi_grid(aoi, 2.0)).scenes()[:1]
    assert healed["scene_id"] == made["scene_id"] and healed["time"] == made["time"]
    assert healed["entry"] == made["entry"] and healed["healed_from"] == "the stored aligned step"
    a = np.asarray(coarse.read().isel(time=0).values, "float64")
    b = np.asarray(Cube(ok.data_dir, AOI, "vhr", aoi_grid(aoi, 2.0)).read().isel(time=0).values, "float64")
    both = np.isfinite(a) & np.isfinite(b)
    assert both.mean() > 0.9 and (np.isfinite(a) == np.isfinite(b)).all()
    assert np.nanmax(np.abs(a - b)[both]) <= 2e-4  # the aligned cube's 1e-4 quantisation, then the coarse one's

    got = [run_day(aoi, d, cfg) for d in days[1:]]
    assert [r.status for r in got] == ["processed"] * 3
    assert len(coarse.scenes()) == 4
    # The surge day's baseline holds the first day again: its change is measured as uninterrupted.
    assert got[2].metrics["changed_area_m2"] == pytest.approx(want[3].metrics["changed_area_m2"], rel=0.02, abs=8.0)
    assert got[2].metrics["railcars"] == want[3].metrics["railcars"]
    assert Cube(cfg.data_dir, AOI, "vhr", aoi_grid(aoi, RES)).reference() is not None  # the pending one, promoted


def test_a_change_cube_with_every_stored_day_is_left_alone(tmp_path, monkeypatch):
    """No stored day missing (or one cube at factor 1): nothing is read or written."""
    from changedet.pipeline import _heal_change_cube

    class Fake:
        def __init__(self, ids):
            self.ids, self.reads = ids, 0

        def scenes(self):
            return [{"scene_id": i} for i in self.ids]

        def read(self):
            self.reads += 1
            raise AssertionError("read")

    a, b = Fake(["s1", "s2"]), Fake(["s1", "s2"])
    assert _heal_change_cube(a, b, 4, 0.5) == [] and a.reads == 0
    assert _heal_change_cube(Fake(["s1"]), Fake([]), 1, 2.0) == []


# -- 4. a STAC asset gone for good ---------------------------------------------------------------

class _SignedStac:
    """The test STAC server with signed asset hrefs: every search signs them afresh (``sig=S3CRET<n>``);
    ``expired`` signatures and files in ``forbidden`` answer 403, ``broken`` files 503."""

    def __init__(self, items, folder):
        from stac_server import StacServer

        outer = self
        self.expired, self.forbidden, self.broken, self.signed = set(), set(), set(), 0

        class Server(StacServer):
            def published(self, item):
                doc = super().published(item)
                for asset in doc["assets"].values():
                    asset["href"] += f"?se=2030&sig=S3CRET{outer.signed}"
                return doc

            def search(self, params):
                outer.signed += 1
                return super().search(params)

        self.server = Server(items, folder, page_size=10)
        base = self.server._httpd.RequestHandlerClass

        class Handler(base):
            def _file(self, head=False):
                url = urlparse(self.path)
                name = url.path[len("/files/"):]
                sig = parse_qs(url.query).get("sig", [""])[0]
                code = 403 if (sig in outer.expired or name in outer.forbidden) else 503 if name in outer.broken \
                    else None
                if code is None:
                    return super()._file(head)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server._httpd.RequestHandlerClass = Handler

    def searches(self):
        return sum(1 for method, path in self.server.requests if path.startswith("/search"))


@pytest.fixture
def signed_stac(tmp_path):
    pytest.importorskip("odc.stac")
    from test_pipeline_s16 import _grid, _stac_aoi, _stac_files

    from changedet.sources.stac import StacSource

    grid = _grid()
    folder, item = _stac_files(tmp_path, grid)
    stac = _SignedStac([item], folder)
    with stac.server as srv:
        src = StacSource(url=srv.url)
        scene = src.search(_stac_aoi(tmp_path, grid), date(2023, 8, 17), date(2023, 8, 17))[0]
        yield stac, src, scene, grid, folder


def test_an_expired_signature_is_healed_by_fetching_the_item_again(signed_stac):
    stac, src, scene, grid, _ = signed_stac
    assert "sig=S3CRET1" in str(scene.properties["items"])
    stac.expired.add("S3CRET1")  # the search's signatures have expired since
    data = src.load(scene, grid)
    assert np.isfinite(data.values).any() and stac.searches() == 2


def test_a_stac_asset_missing_even_at_the_fresh_href_may_pass(signed_stac):
    """Review PIPE #1 (s17): a 404 at the href the catalogue gives again may be replication lag or a
    CDN's negative cache: SourceUnavailable (retried), naming the asset and what to check."""
    stac, src, scene, grid, folder = signed_stac
    (folder / "red.tif").unlink()
    with pytest.raises(SourceUnavailable) as info:
        src.load(scene, grid)
    text = str(info.value)
    assert type(info.value) is SourceUnavailable, text
    assert "asset 'red'" in text and "missing (HTTP 404)" in text and "even after the item was fetched again" in text
    assert "withdrawn from the archive" in text, text
    assert "S3CRET" not in text and "se=2030" not in text and "/files/red.tif?..." in text, text
    assert stac.searches() == 2  # one fetch of the item again: a fresh href answering 404 ends it
    # The library's error (it may quote a signed URL) is kept neither as cause nor as context.
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_a_stac_asset_refused_after_fresh_signatures_may_pass(signed_stac):
    """Review PIPE #1 (s17): a 403 after fresh signatures may be a rate limiter, a WAF, a probe
    without the loader's auth: SourceUnavailable (retried), not a permanent skip; and once it
    stops, the same scene record loads (its item is fetched again)."""
    stac, src, scene, grid, _ = signed_stac
    stac.forbidden.add("nir.tif")
    with pytest.raises(SourceUnavailable) as info:
        src.load(scene, grid)
    from changedet.sources.stac import REFETCH_TRIES

    text = str(info.value)
    assert type(info.value) is SourceUnavailable, text
    assert "asset 'nir'" in text and "refused (HTTP 403)" in text and f"({REFETCH_TRIES} time(s)" in text, text
    assert "even after the item was fetched again" in text and "GDAL_HTTP_HEADERS" in text, text
    assert "S3CRET" not in text and info.value.__context__ is None
    assert stac.searches() == 1 + REFETCH_TRIES
    stac.forbidden.clear()  # the refusal passes: the next run reads the scene
    stac.expired.update(f"S3CRET{n}" for n in range(1, stac.signed + 1))
    assert np.isfinite(src.load(scene, grid).values).any()


def test_library_logs_of_a_failing_stac_load_hold_no_signature(signed_stac, caplog):
    """Review PIPE #4 (s17): odc logs each failed read at ERROR with its URL; the re-fetches make
    those URLs freshly (validly) signed, so the records lose their query while odc loads."""
    import logging

    stac, src, scene, grid, _ = signed_stac
    stac.forbidden.add("nir.tif")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceUnavailable):
        src.load(scene, grid)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/files/nir.tif?..." in logged, logged  # odc did log the failed reads (the check is not empty)
    assert "S3CRET" not in logged and "sig=" not in logged, logged
    assert not any("S3CRET" in str(r.args) for r in caplog.records)
    # The filter is on odc's loggers only while a load runs.
    assert not any(f for f in logging.getLogger("odc.loader._rio").filters)


def test_a_stac_asset_answering_5xx_may_pass_without_fetching_the_item_again(signed_stac, monkeypatch):
    """Review PIPE #6 (s17): a load failing on a real 503 (a fresh server: no cached 403) is
    SourceUnavailable at once, naming the 503; GDAL's own retries are cut for the test's time."""
    import odc.loader._rio as rio

    monkeypatch.setitem(rio.GDAL_CLOUD_DEFAULTS, "GDAL_HTTP_MAX_RETRY", "0")
    stac, src, scene, grid, _ = signed_stac
    stac.broken.add("nir.tif")
    with pytest.raises(SourceUnavailable) as info:
        src.load(scene, grid)
    text = str(info.value)
    assert type(info.value) is SourceUnavailable and "503" in text and "it may pass" in text, text
    assert "403" not in text and "S3CRET" not in text, text
    assert stac.searches() == 1  # the service's, not the file's: no re-fetch


def test_a_stac_item_withdrawn_from_the_catalogue_is_unreadable(signed_stac):
    stac, src, scene, grid, folder = signed_stac
    (folder / "blue.tif").unlink()
    stac.server.items.clear()
    with pytest.raises(SceneUnreadable, match="no longer lists item"):
        src.load(scene, grid)


# -- 5. the flows' cache key reads the provenance once ------------------------------------------

def test_the_scene_state_reads_the_provenance_once(scenes, tmp_path, monkeypatch):
    from changedet.aoi import load_aoi
    from flows.tasks import _scene_state, run_config

    reg, _ = _two_aois(scenes, tmp_path)
    cfg = run_config(str(tmp_path / "data"), 0, str(reg))
    aoi = load_aoi(AOI, registry=reg)
    r = run_day(aoi, QUIET[0], RunConfig(data_dir=tmp_path / "data", registry=reg, evidence=False))
    reads = []
    real = Cube._read_provenance

    def counted(self):
        reads.append(self.path)
        return real(self)

    monkeypatch.setattr(Cube, "_read_provenance", counted)
    assert _scene_state(aoi, cfg, r.scene_id) == "stored" and len(reads) == 1
    assert _scene_state(aoi, cfg, "another-scene") == "new" and len(reads) == 2


# -- session 17, PIPE8: a reference: file on a share not mounted may pass ----------------------

def _ref_args():
    import xarray as xr
    from types import SimpleNamespace

    from test_pipeline_s16 import _grid

    grid = _grid()
    like = xr.DataArray(np.zeros((2, *grid.shape), "float32"), dims=("band", "y", "x"),
                        coords={"band": ["red", "nir"]})
    return SimpleNamespace(name="local"), grid, like, np.ones(grid.shape, bool)


def test_a_reference_on_a_share_not_mounted_may_pass_and_a_wrong_one_is_the_entrys(tmp_path, monkeypatch):
    """Review PIPE #3 (s17): a missing folder (mount) or an I/O error reading the file is
    SourceUnavailable (retried); a folder without the file, or a file that reads but is no
    raster, is SourceConfigError('reference')."""
    import errno

    import changedet.io as cio
    from changedet.pipeline import _reference_file

    spec, grid, like, mask = _ref_args()
    with pytest.raises(SourceUnavailable) as info:
        _reference_file(tmp_path / "share_not_mounted" / "ref.tif", spec, grid, like, mask)
    assert type(info.value) is SourceUnavailable and "share_not_mounted is not there" in str(info.value)
    assert "it may pass" in str(info.value)

    with pytest.raises(SourceConfigError) as info:  # the folder is there, the file is not: a wrong path
        _reference_file(tmp_path / "ref.tif", spec, grid, like, mask)
    assert info.value.option == "reference" and "does not exist (its folder" in str(info.value)

    page = tmp_path / "ref_page.tif"
    page.write_text("<html><body>Sign in</body></html>")
    with pytest.raises(SourceConfigError) as info:  # reads, but is no raster: the entry's
        _reference_file(page, spec, grid, like, mask)
    assert info.value.option == "reference"

    def eio(path, **kw):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(cio, "read_raster", eio)
    with pytest.raises(SourceUnavailable) as info:  # the share's I/O error, the file there
        _reference_file(page, spec, grid, like, mask)
    assert type(info.value) is SourceUnavailable and "it may pass" in str(info.value)


def test_run_stops_an_aoi_whose_reference_share_is_not_mounted_and_the_flows_retry_it(scenes, tmp_path, capsys):
    """The unmounted reference is a failed day (exit 1), that AOI stops, the other goes on; not exit 2."""
    from flows.tasks import PERMANENT_ERRORS

    reg, _ = _two_aois(scenes, tmp_path, reference=str(tmp_path / "share_not_mounted" / "ref.tif"))
    docs, err = _run_two_and_see_the_first_stop(reg, tmp_path, capsys)
    assert "share_not_mounted is not there" in docs[0]["note"] and not docs[0]["misconfigured"], docs[0]
    assert f"{AOI} stopped on {QUIET[0]}" in err and "1 later day(s) not run" in err, err
    assert not issubclass(SourceUnavailable, PERMANENT_ERRORS)


# -- session 17, PIPE8: one broken AOI file does not stop the flows' other AOIs ----------------

BROKEN = "broken_site"


def _registry_with_a_broken_file(scenes, tmp_path):
    reg, _ = _two_aois(scenes, tmp_path)
    (reg / f"{BROKEN}.geojson").write_text((reg / f"{GOOD}.geojson").read_text().replace(GOOD, BROKEN))
    (reg / f"{BROKEN}.yaml").write_text("id: [unclosed\n")  # an analyst's typo in one site's YAML
    return reg


def test_the_flows_pick_the_valid_aois_and_name_the_broken_files(scenes, tmp_path):
    from changedet.errors import AOIError
    from flows.daily import select_runnable_aois

    reg = _registry_with_a_broken_file(scenes, tmp_path)
    aois, broken = select_runnable_aois(None, str(reg))
    assert [a.id for a in aois] == sorted([AOI, GOOD]) and len(broken) == 1
    assert str(reg / f"{BROKEN}.yaml") in broken[0], broken
    # Named AOIs (the served deployments name their timezone's): a broken file is reported
    # the same way and the others run; an id with no file at all is an error at once.
    aois, broken = select_runnable_aois([GOOD, BROKEN], str(reg))
    assert [a.id for a in aois] == [GOOD] and len(broken) == 1 and str(reg / f"{BROKEN}.yaml") in broken[0]
    with pytest.raises(AOIError):
        select_runnable_aois([BROKEN], str(reg))
    # Named by its path, a broken file is still a broken file, not an unknown id.
    aois, broken = select_runnable_aois([GOOD, str(reg / f"{BROKEN}.yaml")], str(reg))
    assert [a.id for a in aois] == [GOOD] and len(broken) == 1
    with pytest.raises(AOIError):
        select_runnable_aois([GOOD, "no_such_site"], str(reg))
    # A registry with no valid AOI at all is an error at once, not an empty run.
    (reg / f"{AOI}.yaml").unlink()
    (reg / f"{GOOD}.yaml").unlink()
    with pytest.raises(AOIError):
        select_runnable_aois(None, str(reg))


@pytest.mark.slow
def test_flows_run_the_valid_aois_and_fail_naming_a_broken_aoi_file(scenes, tmp_path, prefect_env):
    """The lead's find (s17): list_aois raised for one broken YAML, so no site ran. Now the
    valid AOIs run, and the flow ends failed naming the broken file and its problem."""
    import pickle

    from prefect.task_runners import ThreadPoolTaskRunner

    from changedet.errors import AOIError
    from flows.backfill import BackfillFailed, backfill
    from flows.daily import DailyFailed, daily_monitor

    reg = _registry_with_a_broken_file(scenes, tmp_path)
    kw = dict(data_dir=str(tmp_path / "data"), registry=str(reg), kernels_on_cluster=False, return_state=True)
    runner = ThreadPoolTaskRunner(max_workers=2)
    state = daily_monitor.with_options(task_runner=runner)(day=QUIET[0], **kw)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, DailyFailed), err
    assert sorted((r["aoi_id"], r["status"]) for r in err.results) == sorted([(AOI, "processed"),
                                                                              (GOOD, "processed")])
    assert err.failures == [] and len(err.broken) == 1 and f"{BROKEN}.yaml" in err.broken[0]
    assert f"{BROKEN}.yaml" in state.message and "were not run" in state.message, state.message
    assert pickle.loads(pickle.dumps(err)).broken == err.broken

    state = backfill.with_options(task_runner=runner)(start=QUIET[0], end=QUIET[1], cadence=7, **kw)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, BackfillFailed), err
    assert {a: [r["status"] for r in rs] for a, rs in err.results.items()} == {
        AOI: ["already_processed", "processed"], GOOD: ["already_processed", "processed"]}
    assert err.failures == [] and f"{BROKEN}.yaml" in str(err) and pickle.loads(pickle.dumps(err)).broken

    # Named AOIs (as the served deployments pass them): the broken one is named, the other runs.
    state = daily_monitor.with_options(task_runner=runner)(aoi_ids=[GOOD, BROKEN], day=QUIET[1], **kw)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, DailyFailed), err
    assert [r["aoi_id"] for r in err.results] == [GOOD] and f"{BROKEN}.yaml" in err.broken[0]
    state = daily_monitor.with_options(task_runner=runner)(aoi_ids=[GOOD, "no_such_site"], day=QUIET[1], **kw)
    assert state.is_failed() and isinstance(state.result(raise_on_failure=False), AOIError)


def test_fetch_names_an_unknown_source_kind_and_the_known_ones(tmp_path, capsys):
    """AUDIT6: --source stak asked to add a 'stak' entry to the AOI's YAML; it is a typo of the kind."""
    from changedet.cli import main

    rc = main(["fetch", "--aoi", "tumangang_railyard", "--source", "stak", "--start", "2023-07-01",
               "--end", "2023-07-02", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "unknown source 'stak'" in err and "did you mean 'stac'?" in err, err
    assert all(k in err for k in ("simulator", "stac", "local", "sentinelhub")) and "add one to its" not in err, err
    assert not (tmp_path / "data").exists()
